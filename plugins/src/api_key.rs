//! API-key authentication: `Authorization: Bearer <key>` (what the OpenAI SDKs
//! send; the scheme in any case), `api-key: <key>` (Azure's SDK) or
//! `x-api-key: <key>` (Anthropic's). Keys are held as SHA-256: the presented
//! key is hashed and looked up by its hash, and the match is confirmed with
//! a constant-time compare, so the time taken depends only on the hash of
//! what was presented, never on how close it came to a real key. A missing
//! or unknown key is a 401 in OpenAI's shape.

use crate::{AuthMethod, Decision, Identity, Plugin, RequestCtx};
use async_trait::async_trait;
use pingora_http::RequestHeader;
use skygate_config::{bearer_token, sha256, ApiError, ApiKey, ErrorKind, Principal};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Arc<Principal>, BuildHasherDefault<DigestHasher>>,
}

/// The map's keys are SHA-256 digests, already uniform: their first eight
/// bytes are the hash (no SipHash over 32 bytes per request).
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    // The slice's length prefix carries nothing.
    fn write_usize(&mut self, _: usize) {}
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> Self {
        Self {
            by_hash: keys
                .iter()
                .map(|k| (k.sha256, k.principal.clone()))
                .collect(),
        }
    }

    fn presented(req: &RequestHeader) -> Option<&[u8]> {
        if let Some(v) = req.headers.get(http::header::AUTHORIZATION) {
            // The scheme is case-insensitive: `BEARER` and `BeArEr` are Bearer too.
            return bearer_token(v.as_bytes());
        }
        req.headers
            .get("api-key")
            .or_else(|| req.headers.get("x-api-key"))
            .map(|v| v.as_bytes())
    }

    /// The principal of a presented key.
    pub fn lookup(&self, presented: &[u8]) -> Option<&Arc<Principal>> {
        let hash = sha256(presented);
        let (stored, principal) = self.by_hash.get_key_value(&hash)?;
        // The map compared hashes; confirm in constant time all the same.
        let same = stored
            .iter()
            .zip(&hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then_some(principal)
    }
}

#[async_trait]
impl Plugin for ApiKeys {
    fn name(&self) -> &'static str {
        "api_key"
    }

    async fn on_headers(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Decision {
        let Some(presented) = Self::presented(req) else {
            return Decision::Respond(ApiError::new(
                ErrorKind::Unauthenticated,
                "missing API key: send `Authorization: Bearer <key>`",
            ));
        };
        match self.lookup(presented) {
            Some(principal) => {
                ctx.identity = Some(Identity {
                    principal: principal.clone(),
                    method: AuthMethod::ApiKey,
                });
                Decision::Continue
            }
            None => Decision::Respond(ApiError::new(ErrorKind::Unauthenticated, "invalid API key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> ApiKeys {
        ApiKeys::new(&[ApiKey {
            sha256: sha256(b"sk-good-key"),
            principal: Arc::new(Principal {
                id: "app".into(),
                tenant: Some("acme".into()),
                ..Principal::default()
            }),
        }])
    }

    async fn run(header: Option<(&str, &str)>) -> (Decision, RequestCtx) {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        if let Some((k, v)) = header {
            req.insert_header(k.to_string(), v).unwrap();
        }
        let mut ctx = RequestCtx::new();
        let d = plugin().on_headers(&mut req, &mut ctx).await;
        (d, ctx)
    }

    #[tokio::test]
    async fn accepts_bearer_and_api_key_header() {
        let (d, ctx) = run(Some(("authorization", "Bearer sk-good-key"))).await;
        assert!(matches!(d, Decision::Continue));
        let id = ctx.identity.unwrap();
        assert_eq!(id.principal.id, "app");
        assert_eq!(id.principal.tenant.as_deref(), Some("acme"));
        for h in ["api-key", "x-api-key"] {
            let (d, _) = run(Some((h, "sk-good-key"))).await;
            assert!(matches!(d, Decision::Continue), "{h}");
        }
    }

    #[tokio::test]
    async fn bearer_scheme_is_case_insensitive() {
        for v in [
            "bearer sk-good-key",
            "BEARER sk-good-key",
            "BeArEr  sk-good-key",
        ] {
            let (d, ctx) = run(Some(("authorization", v))).await;
            assert!(matches!(d, Decision::Continue), "{v}");
            assert_eq!(ctx.identity.unwrap().principal.id, "app");
        }
        for v in ["Basic sk-good-key", "Bearersk-good-key", "sk-good-key"] {
            let (d, _) = run(Some(("authorization", v))).await;
            assert!(
                matches!(d, Decision::Respond(ref e) if e.status() == 401),
                "{v}"
            );
        }
    }

    #[tokio::test]
    async fn rejects_missing_and_wrong() {
        let (d, ctx) = run(None).await;
        assert!(
            matches!(d, Decision::Respond(ref e) if e.status() == 401 && e.message.contains("missing"))
        );
        assert!(ctx.identity.is_none());
        for wrong in [
            "Bearer sk-bad-key",
            "Bearer sk-good-ke",
            "Bearer sk-good-keyy",
        ] {
            let (d, _) = run(Some(("authorization", wrong))).await;
            assert!(
                matches!(d, Decision::Respond(ref e) if e.status() == 401),
                "{wrong}"
            );
        }
    }
}
