//! API-key authentication: `Authorization: Bearer <key>` (what the OpenAI SDKs
//! send) or `api-key: <key>` / `x-api-key: <key>`. Keys are compared in
//! constant time; a missing or unknown key is a 401 in OpenAI's shape.

use crate::{AuthMethod, Decision, Identity, Plugin, RequestCtx};
use async_trait::async_trait;
use pingora_http::RequestHeader;
use skygate_config::{bearer_token, ApiError, ApiKey, ErrorKind, Secret};

pub struct ApiKeys {
    keys: Vec<(Secret, String)>,
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| (k.key.clone(), k.principal.clone()))
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
        // Every key is compared, so the time taken does not tell which matched.
        let mut found: Option<&str> = None;
        for (key, principal) in &self.keys {
            if key.ct_eq(presented) {
                found = Some(principal);
            }
        }
        match found {
            Some(principal) => {
                ctx.identity = Some(Identity {
                    principal: principal.to_string(),
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
            key: Secret::new("sk-good-key"),
            principal: "app".into(),
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
        assert_eq!(ctx.identity.unwrap().principal, "app");
        let (d, _) = run(Some(("api-key", "sk-good-key"))).await;
        assert!(matches!(d, Decision::Continue));
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
            assert_eq!(ctx.identity.unwrap().principal, "app");
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
        let (d, _) = run(Some(("authorization", "Bearer sk-bad-key"))).await;
        assert!(matches!(d, Decision::Respond(ref e) if e.status() == 401));
    }
}
