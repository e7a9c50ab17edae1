//! JWT bearer tokens from trusted issuers.
//!
//! A token is checked in this order, and refused (401) at the first failure:
//! its size; its header (an unknown algorithm, `none` in any casing
//! included, fails to parse); its `iss` against the configured issuers; its
//! `alg` against that issuer's allow-list (asymmetric only, so a public key
//! can never be an HMAC secret); its `kid` against the issuer's JWKS (an
//! unknown one sets off one refresh); the key's own `alg` and `use`; the
//! signature; `exp`, `nbf`, `iss`, `aud` (all but `nbf` required) with the
//! issuer's leeway. Header fields that point at other keys (`jku`, `x5u`,
//! an embedded `jwk`) are never read. A verified token is cached by its
//! SHA-256 until it expires, so a repeated token costs no signature check.

use super::jwks::Jwks;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use skygate_config::{ApiError, ErrorKind, JwtAlg, JwtIssuer, Principal};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Verified tokens kept at most (then the expired ones go, then all).
const CACHE_MAX: usize = 10_000;

struct Issuer {
    cfg: JwtIssuer,
    algorithms: Vec<Algorithm>,
    jwks: Arc<Jwks>,
}

/// SHA-256 of a verified token → (principal, `exp`).
type Verified = HashMap<[u8; 32], (Arc<Principal>, u64)>;

pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    max_token_bytes: usize,
    cache: Mutex<Verified>,
}

fn alg(a: JwtAlg) -> Algorithm {
    match a {
        JwtAlg::RS256 => Algorithm::RS256,
        JwtAlg::RS384 => Algorithm::RS384,
        JwtAlg::RS512 => Algorithm::RS512,
        JwtAlg::PS256 => Algorithm::PS256,
        JwtAlg::PS384 => Algorithm::PS384,
        JwtAlg::PS512 => Algorithm::PS512,
        JwtAlg::ES256 => Algorithm::ES256,
        JwtAlg::ES384 => Algorithm::ES384,
        JwtAlg::EdDSA => Algorithm::EdDSA,
    }
}

fn refuse(why: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorKind::Unauthenticated, why)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a bearer credential is shaped like a JWT (three base64url
/// parts), as opposed to an API key.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ") && token.iter().filter(|b| **b == b'.').count() == 2
}

impl JwtVerifier {
    pub fn new(issuers: &[JwtIssuer]) -> Self {
        Self {
            max_token_bytes: issuers
                .iter()
                .map(|i| i.max_token_bytes)
                .max()
                .unwrap_or(8 << 10),
            issuers: issuers
                .iter()
                .map(|cfg| Issuer {
                    algorithms: cfg.algorithms.iter().map(|a| alg(*a)).collect(),
                    jwks: Jwks::new(cfg),
                    cfg: cfg.clone(),
                })
                .collect(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal a token proves, or why not.
    pub async fn verify(&self, token: &[u8]) -> Result<Arc<Principal>, ApiError> {
        if token.len() > self.max_token_bytes {
            return Err(refuse("the token is too large"));
        }
        let token = std::str::from_utf8(token).map_err(|_| refuse("malformed token"))?;
        let hash = skygate_config::sha256(token.as_bytes());
        let now = now_secs();
        if let Some((p, exp)) = self.lock().get(&hash) {
            if *exp > now {
                return Ok(p.clone());
            }
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refuse("malformed token, or an algorithm Skygate never accepts"))?;
        let iss = unverified_iss(token).ok_or_else(|| refuse("the token has no `iss`"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.cfg.issuer == iss)
            .ok_or_else(|| refuse("the token's issuer is not trusted"))?;
        if token.len() > issuer.cfg.max_token_bytes {
            return Err(refuse("the token is too large"));
        }
        if !issuer.algorithms.contains(&header.alg) {
            return Err(refuse(
                "the token's algorithm is not allowed for its issuer",
            ));
        }
        let key = issuer
            .jwks
            .key(header.kid.as_deref())
            .await
            .ok_or_else(|| refuse("the token's key (kid) is unknown"))?;
        if key.alg.is_some_and(|a| a != header.alg) {
            return Err(refuse("the token's algorithm does not match its key"));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[issuer.cfg.issuer.as_str()]);
        v.set_audience(&issuer.cfg.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = issuer.cfg.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            refuse(match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet (nbf)",
                K::InvalidAudience => "the token is not for this audience",
                K::InvalidIssuer => "the token's issuer is not trusted",
                K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud)",
                K::InvalidSignature => "the token's signature does not verify",
                _ => "the token does not verify",
            })
        })?;
        let principal = Arc::new(principal(&data.claims, issuer)?);
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or(now);
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, e)| *e > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(hash, (principal.clone(), exp));
        Ok(principal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verified> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `iss` from the payload, before verification (only to choose the issuer
/// whose keys will verify it).
fn unverified_iss(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}

/// The principal from verified claims, as the issuer's claim map says.
fn principal(claims: &Value, issuer: &Issuer) -> Result<Principal, ApiError> {
    let map = &issuer.cfg.claims;
    let id = claims
        .get(&map.subject)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refuse(format!("the token has no `{}` claim", map.subject)))?
        .to_string();
    let tenant = map
        .tenant
        .as_ref()
        .and_then(|c| claims.get(c))
        .and_then(Value::as_str)
        .map(str::to_string);
    let groups = match map.groups.as_ref().and_then(|c| claims.get(c)) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut attributes = BTreeMap::new();
    for name in &map.attributes {
        match claims.get(name) {
            Some(Value::String(s)) => {
                attributes.insert(name.clone(), s.clone());
            }
            Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                attributes.insert(name.clone(), v.to_string());
            }
            _ => {}
        }
    }
    Ok(Principal {
        id,
        tenant,
        groups,
        attributes,
    })
}
