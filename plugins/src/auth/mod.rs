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
pub mod mtls;

use crate::{Decision, Identity, Plugin, RequestCtx};
use api_key::ApiKeys;
use async_trait::async_trait;
use jwt::{looks_like_jwt, JwtVerifier};
use mtls::MtlsAuth;
use pingora_http::RequestHeader;
use skygate_config::{bearer_token, ApiError, AuthMethod, Config, ErrorKind};

/// Checks of the auth config that need the JWT machinery (run by `validate`,
/// `run` and reloads after the config itself loaded): every JWKS file holds
/// a key that can verify the issuer's algorithms. Errors as (field path,
/// message).
pub fn check(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, issuer) in config.auth.jwt.iter().enumerate() {
        let skygate_config::JwksSource::File(path) = &issuer.jwks else {
            continue;
        };
        let algs: Vec<_> = issuer.algorithms.iter().map(|a| jwt::alg(*a)).collect();
        let result = jwks::read_file(path).and_then(|t| jwks::KeySet::parse(&t, &issuer.issuer));
        let why = match result {
            Ok(set) if set.usable(&algs) > 0 => continue,
            Ok(_) => format!(
                "`{}` holds no key that can verify {} tokens (keys of other algorithms, encryption keys and symmetric keys are skipped)",
                path.display(),
                issuer.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join("/")
            ),
            Err(e) => format!("`{}`: {e}", path.display()),
        };
        out.push((format!("auth.jwt[{i}].jwks.file"), why));
    }
    out
}

pub struct Authenticate {
    api_keys: Option<ApiKeys>,
    jwt: Option<JwtVerifier>,
    mtls: Option<MtlsAuth>,
    /// Each route's accepted methods, by route index (`None`: any).
    routes: Vec<Option<Vec<AuthMethod>>>,
}

impl Authenticate {
    /// The plugin, when any method is configured.
    pub fn from_config(config: &Config) -> Option<Self> {
        let a = &config.auth;
        if a.api_keys.is_empty() && a.jwt.is_empty() && a.mtls.is_none() {
            return None;
        }
        Some(Self {
            api_keys: (!a.api_keys.is_empty()).then(|| ApiKeys::new(&a.api_keys)),
            jwt: (!a.jwt.is_empty()).then(|| JwtVerifier::new(&a.jwt)),
            mtls: a.mtls.as_ref().map(MtlsAuth::new),
            routes: config.routes.iter().map(|r| r.auth.clone()).collect(),
        })
    }

    fn expected(&self) -> &'static str {
        match (self.api_keys.is_some(), self.jwt.is_some()) {
            (true, true) => "an API key or a token",
            (false, true) => "a token",
            (true, false) => "an API key",
            (false, false) => "a client certificate",
        }
    }

    /// The caller its client certificate names, when mTLS is on and the
    /// connection has one.
    fn by_certificate(&self, ctx: &RequestCtx) -> Option<Result<Identity, String>> {
        let (m, cert) = (self.mtls.as_ref()?, ctx.client_cert.as_ref()?);
        Some(m.principal(cert).map(|principal| Identity {
            principal,
            method: AuthMethod::Mtls,
        }))
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
        // A Bearer credential first; else an `api-key` / `x-api-key` (an
        // `Authorization` of another scheme, e.g. Basic for a proxy, does
        // not hide them).
        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        let (credential, bearer) = match bearer {
            Some(t) => (Some(t), true),
            None => (
                req.headers
                    .get("api-key")
                    .or_else(|| req.headers.get("x-api-key"))
                    .map(|v| v.as_bytes()),
                false,
            ),
        };
        let Some(credential) = credential else {
            // No header credential: the connection's client certificate.
            return match self.by_certificate(ctx) {
                Some(Ok(id)) => {
                    ctx.identity = Some(id);
                    Decision::Continue
                }
                Some(Err(why)) => refuse(why),
                None if self.api_keys.is_none() && self.jwt.is_none() => refuse(
                    "missing credentials: this gateway accepts client certificates (mTLS) on its TLS listener",
                ),
                None => refuse(format!(
                    "missing credentials: send {} as `Authorization: Bearer ...`{}",
                    self.expected(),
                    if self.mtls.is_some() {
                        ", or a client certificate on the TLS listener"
                    } else {
                        ""
                    }
                )),
            };
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

    async fn on_request(&self, _req: crate::Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        let (Some(route), Some(id)) = (ctx.route, ctx.identity.as_ref()) else {
            return Decision::Continue;
        };
        match self.routes.get(route) {
            Some(Some(allowed)) if !allowed.contains(&id.method) => {
                // A route for certificates only, called with a header
                // credential on a connection that has one: the certificate.
                if allowed.contains(&AuthMethod::Mtls) {
                    match self.by_certificate(ctx) {
                        Some(Ok(cert_id)) => {
                            ctx.identity = Some(cert_id);
                            return Decision::Continue;
                        }
                        Some(Err(why)) => return refuse(why),
                        None => {}
                    }
                }
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
    async fn another_authorization_scheme_does_not_hide_an_api_key_header() {
        let p = plugin();
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("authorization", "Basic dXNlcjpwYXNz")
            .unwrap();
        req.insert_header("x-api-key", "sk-good-key").unwrap();
        let mut ctx = RequestCtx::new();
        assert!(matches!(
            p.on_headers(&mut req, &mut ctx).await,
            Decision::Continue
        ));
    }

    #[test]
    fn jwt_shape() {
        use jwt::looks_like_jwt;
        assert!(looks_like_jwt(b"eyJhbGciOiJSUzI1NiJ9.e30.sig"));
        // `{ "alg": ...` (a space) is a JSON object too.
        assert!(looks_like_jwt(b"eyAiYWxnIjoiUlMyNTYifQ.e30.sig"));
        assert!(!looks_like_jwt(b"sk-skygate-abc"));
        assert!(!looks_like_jwt(b"eyJhbGciOiJSUzI1NiJ9.e30"));
        assert!(!looks_like_jwt(b"eyX.y.z"));
    }

    #[tokio::test]
    async fn a_route_can_refuse_a_method() {
        let p = plugin();
        let req = RequestHeader::build("POST", b"/", None).unwrap();
        let (_, mut ctx) = run(Some(("authorization", "Bearer sk-good-key"))).await;
        ctx.route = Some(0); // route `r`: jwt only
        assert!(
            matches!(p.on_request(crate::Incoming::header_only(&req), &mut ctx)
                .await, Decision::Respond(ref e) if e.status() == 401 && e.message.contains("use jwt"))
        );
        ctx.route = Some(1); // route `s`: any
        assert!(matches!(
            p.on_request(crate::Incoming::header_only(&req), &mut ctx)
                .await,
            Decision::Continue
        ));
    }
}
