//! `auth:`: how clients prove who they are (API keys today).

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::runtime::{ApiKey, Auth};
use crate::Secret;
use serde::Deserialize;

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

impl Cx<'_> {
    pub(crate) fn auth(&mut self, a: RawAuth) -> Auth {
        let mut api_keys: Vec<ApiKey> = Vec::new();
        for (i, k) in a.api_keys.into_iter().enumerate() {
            let p = [key("auth"), key("api_keys"), Seg::Index(i)];
            if k.key.len() < 8 {
                self.err(
                    &path_of(&p, &[key("key")]),
                    "too short: an API key needs at least 8 characters",
                );
                continue;
            }
            if k.principal.is_empty() {
                self.err(&path_of(&p, &[key("principal")]), "must not be empty");
                continue;
            }
            if api_keys.iter().any(|o| o.key.expose() == k.key) {
                self.err(&path_of(&p, &[key("key")]), "the same key is listed twice");
                continue;
            }
            api_keys.push(ApiKey {
                key: Secret::new(k.key),
                principal: k.principal,
            });
        }
        Auth { api_keys }
    }
}
