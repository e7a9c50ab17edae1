//! Raw serde types: exactly what the YAML file says, before any validation.
//!
//! Every struct denies unknown fields. Durations and sizes stay strings here and
//! are parsed by the loader, so their errors carry a field path like the rest.
//! Each section's raw type lives beside its checks in `crate::section`; they
//! are re-exported here.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A scalar kept as text (`30s`, `8MiB`, or a bare number that validation
/// then rejects with a message saying which unit to add).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
        }
        match Scalar::deserialize(d) {
            Ok(Scalar::S(s)) => Ok(Text(s)),
            Ok(Scalar::I(i)) => Ok(Text(i.to_string())),
            Ok(Scalar::F(f)) => Ok(Text(f.to_string())),
            Err(_) => Err(serde::de::Error::custom(
                "expected a value like `30s` or `8MiB`",
            )),
        }
    }
}

impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "number"],
            "description": "A duration (`250ms`, `30s`, `5m`, `1h`) or a size (`512KiB`, `8MiB`), as the field says; sizes may be bare bytes; durations need their unit."
        })
    }
}

/// The whole file. Filled section by section by the loader so that one bad
/// section does not hide the errors of the others.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// Names of every backend in the file, including those whose entry failed
    /// to parse (so routes naming them are not reported as unknown too).
    pub backend_names: Vec<String>,
    /// Names of every route in the file, likewise.
    pub route_names: Vec<String>,
    pub listen: Option<String>,
    pub server: Option<RawServer>,
    pub admin: Option<RawAdmin>,
    pub auth: Option<RawAuth>,
    pub backends: BTreeMap<String, RawBackend>,
    pub routes: BTreeMap<String, RawRoute>,
    pub policy: Option<RawPolicy>,
    pub state: Option<RawState>,
    /// `None` where an entry failed to parse (already reported).
    pub limits: Vec<Option<RawRateLimit>>,
    pub cache: Option<RawCache>,
    pub telemetry: Option<RawTelemetry>,
    /// Top-level sections given but not read (their errors are reported):
    /// what depends on them says nothing more.
    pub unread: Vec<&'static str>,
}

/// The top-level keys the file may have (documented in config/README.md).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "server",
    "admin",
    "auth",
    "backends",
    "routes",
    "policy",
    "state",
    "limits",
    "cache",
    "telemetry",
];

pub use crate::section::admin::RawAdmin;
pub use crate::section::auth::{RawApiKey, RawAuth};
pub use crate::section::backend::{
    RawBackend, RawBreaker, RawHealthCheck, RawLimits, RawPool, RawTimeouts, RawTls,
};
pub use crate::section::cache::{RawCache, RawRouteCache};
pub use crate::section::limits::{RawLimitMatch, RawRateLimit, RawState};
pub use crate::section::policy::RawPolicy;
pub use crate::section::route::{RawBudget, RawMatch, RawRetries, RawRoute, RawTarget};
pub use crate::section::server::{RawServer, RawServerTimeouts};
pub use crate::section::telemetry::{RawOtlp, RawTelemetry};
pub use crate::section::tls::{RawMtls, RawMtlsPrincipal, RawTlsListener};
