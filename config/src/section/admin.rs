//! `admin:`: the admin listener and its bearer token.

use crate::load::{key, Cx};
use crate::runtime::Admin;
use crate::Secret;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub token: Option<String>,
}

impl Cx<'_> {
    /// `unread`: the section was given, but not read (its error is out).
    pub(crate) fn admin(&mut self, a: Option<RawAdmin>, unread: bool) -> Option<Admin> {
        let Some(a) = a else {
            if unread {
                return None;
            }
            self.err(
                &[key("admin")],
                "missing: `admin: { listen: 127.0.0.1:9090, token: ${SKYGATE_ADMIN_TOKEN} }`",
            );
            return None;
        };
        let listen = self.addr(&a.listen, &[key("admin"), key("listen")]);
        let token = a.token.map(Secret::new);
        if token.is_none() {
            self.warn(
                &[key("admin")],
                "no `token`: the admin API is closed (every request but /healthz, /readyz and /identity/jwks.json is a 401)",
            );
        }
        if token.as_ref().is_some_and(|t| t.expose().len() < 8) {
            self.err(
                &[key("admin"), key("token")],
                "too short: an admin token needs at least 8 characters",
            );
        }
        listen.map(|listen| Admin { listen, token })
    }
}
