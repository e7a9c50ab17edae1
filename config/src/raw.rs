//! Raw serde types: exactly what the YAML file says, before any validation.
//!
//! Every struct denies unknown fields. Durations and sizes stay strings here and
//! are parsed in [`crate::load`], so their errors carry a field path like the rest.

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

/// The whole file. Filled section by section by the loader so that one bad
/// section does not hide the errors of the others.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// Names of every backend in the file, including those whose entry failed
    /// to parse (so routes naming them are not reported as unknown too).
    pub backend_names: Vec<String>,
    pub listen: Option<String>,
    pub server: Option<RawServer>,
    pub admin: Option<RawAdmin>,
    pub auth: Option<RawAuth>,
    pub backends: BTreeMap<String, RawBackend>,
    pub routes: BTreeMap<String, RawRoute>,
}

/// The top-level keys the file may have (documented in config/README.md).
pub const TOP_LEVEL_KEYS: &[&str] = &["listen", "server", "admin", "auth", "backends", "routes"];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads of the proxy listener (default: one per CPU).
    pub threads: Option<usize>,
    /// How long in-flight requests may run on after SIGTERM (default 5s).
    pub grace_period: Option<Text>,
    /// After SIGTERM, how long to keep serving with /readyz failing before
    /// the listeners close (default 0s).
    pub drain_delay: Option<Text>,
    /// Access log destination: `stdout` (default) or `off`.
    pub access_log: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub key: String,
    pub principal: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub kind: String,
    pub url: String,
    pub api_key: Option<String>,
    pub api_key_header: Option<String>,
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub timeouts: Option<RawTimeouts>,
    pub pool: Option<RawPool>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file of the CAs that sign this backend's certificate (instead of
    /// the system's roots). Relative paths start at the config file's folder.
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Text>,
    pub first_byte: Option<Text>,
    pub idle: Option<Text>,
    pub total: Option<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub idle_timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub targets: Vec<RawTarget>,
    pub max_body: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub backend: String,
    pub weight: Option<u32>,
}
