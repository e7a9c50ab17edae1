//! Authentication: who is calling. Several methods may be on at once; the
//! credential's shape says which applies:
//! - `Authorization: Bearer <token>` with a JWT-shaped token (three
//!   base64url parts) → a configured JWT issuer;
//! - `Authorization: Bearer <key>` (the scheme in any case), `api-key:`
//!   (Azure's SDK) or `x-api-key:` (Anthropic's) → an API key.
//!
//! No credential or a bad one is a 401 in OpenAI's shape, with
//! `WWW-Authenticate: Bearer`. Once the route is known, a route that names
//! its accepted methods (`routes.NAME.auth`) refuses the others (401).

pub mod api_key;
pub mod jwks;
pub mod jwt;

use crate::{Decision, Identity, Plugin, RequestCtx};
use api_key::ApiKeys;
use async_trait::async_trait;
use jwt::{looks_like_jwt, JwtVerifier};
use pingora_http::RequestHeader;
use skygate_config::{bearer_token, ApiError, AuthMethod, Config, ErrorKind};

pub struct Authenticate {
    api_keys: Option<ApiKeys>,
    jwt: Option<JwtVerifier>,
    /// Each route's accepted methods, by route index (`None`: any).
    routes: Vec<Option<Vec<AuthMethod>>>,
}

impl Authenticate {
    /// The plugin, when any method is configured.
    pub fn from_config(config: &Config) -> Option<Self> {
        let a = &config.auth;
        if a.api_keys.is_empty() && a.jwt.is_empty() {
            return None;
        }
        Some(Self {
            api_keys: (!a.api_keys.is_empty()).then(|| ApiKeys::new(&a.api_keys)),
            jwt: (!a.jwt.is_empty()).then(|| JwtVerifier::new(&a.jwt)),
            routes: config.routes.iter().map(|r| r.auth.clone()).collect(),
        })
    }

    fn expected(&self) -> &'static str {
        match (self.api_keys.is_some(), self.jwt.is_some()) {
            (true, true) => "an API key or a token",
            (false, true) => "a token",
            _ => "an API key",
        }
    }
}

fn refuse(why: impl Into<std::borrow::Cow<'static, str>>) -> Decision {
    Decision::Respond(ApiError::new(ErrorKind::Unauthenticated, why))
}

#[async_trait]
impl Plugin for Authenticate {
    fn name(&self) -> &'static str {
        "authenticate"
    }

    async fn on_headers(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Decision {
        let (credential, bearer) = match req.headers.get(http::header::AUTHORIZATION) {
            Some(v) => (bearer_token(v.as_bytes()), true),
            None => (
                req.headers
                    .get("api-key")
                    .or_else(|| req.headers.get("x-api-key"))
                    .map(|v| v.as_bytes()),
                false,
            ),
        };
        let Some(credential) = credential else {
            return refuse(format!(
                "missing credentials: send {} as `Authorization: Bearer ...`",
                self.expected()
            ));
        };
        if bearer && looks_like_jwt(credential) {
            if let Some(jwt) = &self.jwt {
                return match jwt.verify(credential).await {
                    Ok(principal) => {
                        ctx.identity = Some(Identity {
                            principal,
                            method: AuthMethod::Jwt,
                        });
                        Decision::Continue
                    }
                    Err(e) => Decision::Respond(e),
                };
            }
        }
        match self.api_keys.as_ref().and_then(|k| k.lookup(credential)) {
            Some(principal) => {
                ctx.identity = Some(Identity {
                    principal: principal.clone(),
                    method: AuthMethod::ApiKey,
                });
                Decision::Continue
            }
            None if self.api_keys.is_some() => refuse("invalid API key"),
            None => refuse("invalid credentials: this gateway accepts tokens (JWT) only"),
        }
    }

    async fn on_request(&self, _req: &RequestHeader, ctx: &mut RequestCtx) -> Decision {
        let (Some(route), Some(id)) = (ctx.route, ctx.identity.as_ref()) else {
            return Decision::Continue;
        };
        match self.routes.get(route) {
            Some(Some(allowed)) if !allowed.contains(&id.method) => {
                let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                refuse(format!(
                    "this route does not accept {} credentials: use {}",
                    id.method.as_str(),
                    names.join(" or ")
                ))
            }
            _ => Decision::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_config::load_str;

    fn plugin() -> Authenticate {
        let hash = skygate_config::to_hex(&skygate_config::sha256(b"sk-good-key"));
        let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo/jwks.json");
        let y = format!("listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nauth:\n  api_keys:\n    - {{ key_sha256: {hash}, principal: app, tenant: acme }}\n  jwt:\n    - {{ issuer: t, audiences: [skygate], algorithms: [RS256], jwks: {{ file: \"{jwks}\" }} }}\nbackends:\n  a: {{ kind: openai, url: http://a/v1 }}\nroutes:\n  r: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {{ backend: a }} ], auth: [jwt] }}\n  s: {{ match: {{ path: /v1/chat/completions, models: [c] }}, targets: [ {{ backend: a }} ] }}\n");
        Authenticate::from_config(&load_str(&y, "t.yaml", &|_| None).unwrap()).unwrap()
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
    async fn accepts_bearer_and_api_key_headers() {
        let (d, ctx) = run(Some(("authorization", "Bearer sk-good-key"))).await;
        assert!(matches!(d, Decision::Continue));
        let id = ctx.identity.unwrap();
        assert_eq!(id.principal.id, "app");
        assert_eq!(id.principal.tenant.as_deref(), Some("acme"));
        assert_eq!(id.method, AuthMethod::ApiKey);
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

    #[tokio::test]
    async fn a_route_can_refuse_a_method() {
        let p = plugin();
        let req = RequestHeader::build("POST", b"/", None).unwrap();
        let (_, mut ctx) = run(Some(("authorization", "Bearer sk-good-key"))).await;
        ctx.route = Some(0); // route `r`: jwt only
        assert!(
            matches!(p.on_request(&req, &mut ctx).await, Decision::Respond(ref e) if e.status() == 401 && e.message.contains("use jwt"))
        );
        ctx.route = Some(1); // route `s`: any
        assert!(matches!(
            p.on_request(&req, &mut ctx).await,
            Decision::Continue
        ));
    }
}
