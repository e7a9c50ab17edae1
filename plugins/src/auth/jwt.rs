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

use super::jwks::{Jwks, Key};
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

/// A verified token: who it proves, until when, and the key that verified
/// it (a hit counts only while the issuer's current set still holds that
/// very key, so a key removed from the JWKS ends its tokens too).
struct Hit {
    principal: Arc<Principal>,
    until: u64,
    issuer: usize,
    kid: Option<String>,
    key: Arc<Key>,
}

/// SHA-256 of a verified token → what it proved.
type Verified = HashMap<[u8; 32], Hit>;

pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    max_token_bytes: usize,
    cache: Mutex<Verified>,
}

/// jsonwebtoken's name for an allowed algorithm.
pub fn alg(a: JwtAlg) -> Algorithm {
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

/// Whether a bearer credential is shaped like a JWT (three base64url parts,
/// the first a JSON object), as opposed to an API key.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    if token.iter().filter(|b| **b == b'.').count() != 2 {
        return false;
    }
    let head = token.split(|b| *b == b'.').next().unwrap_or_default();
    // `{"` and `{ ` (any JSON object) encode to `ey...`.
    head.starts_with(b"ey")
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .is_ok_and(|h| h.first() == Some(&b'{'))
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
                    jwks: Jwks::shared(cfg),
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
        if let Some(hit) = self.lock().get(&hash) {
            let key_held = self
                .issuers
                .get(hit.issuer)
                .and_then(|i| i.jwks.current().find(hit.kid.as_deref()))
                .is_some_and(|k| Arc::ptr_eq(&k, &hit.key));
            if hit.until > now && key_held {
                return Ok(hit.principal.clone());
            }
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refuse("malformed token, or an algorithm Skygate never accepts"))?;
        let (raw_header, iss) = unverified(token);
        // RFC 7515 §4.1.11: extensions we do not understand (b64=false, ...)
        // must not be ignored.
        if raw_header.is_some_and(|h| h.get("crit").is_some()) {
            return Err(refuse(
                "the token has critical header extensions Skygate does not support",
            ));
        }
        let iss = iss.ok_or_else(|| refuse("the token has no `iss`"))?;
        let (issuer_index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.cfg.issuer == iss)
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
        // jsonwebtoken checks `nbf` only when it reads as a whole number of
        // seconds: a string, `1e20` or a negative one would pass unchecked.
        match data.claims.get("nbf") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => match n.as_f64().filter(|f| f.is_finite()) {
                Some(nbf) if nbf > (now.saturating_add(issuer.cfg.leeway.as_secs())) as f64 => {
                    return Err(refuse("the token is not valid yet (nbf)"));
                }
                Some(_) => {}
                None => return Err(refuse("the token's `nbf` claim is not a number")),
            },
            Some(_) => return Err(refuse("the token's `nbf` claim is not a number")),
        }
        let principal = Arc::new(principal(&data.claims, issuer)?);
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        // Cached until `exp`, and never longer than the JWKS TTL.
        let until = (exp.max(0.0) as u64).min(now.saturating_add(issuer.cfg.jwks_ttl.as_secs()));
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, h| h.until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            hash,
            Hit {
                principal: principal.clone(),
                until,
                issuer: issuer_index,
                kid: header.kid.clone(),
                key,
            },
        );
        Ok(principal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verified> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The header as JSON, and `iss` from the payload, before verification
/// (only to refuse what we do not support and to choose the issuer whose
/// keys will verify it).
fn unverified(token: &str) -> (Option<Value>, Option<String>) {
    let mut parts = token.split('.');
    let decode = |p: Option<&str>| {
        p.and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
    };
    let header = decode(parts.next()).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    let iss = decode(parts.next())
        .and_then(|b| serde_json::from_slice::<Iss>(&b).ok())
        .map(|i| i.iss);
    (header, iss)
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
    // A mapped claim of another shape than documented is refused, not
    // dropped: dropped, a tenant or group claim an IdP sends as an array
    // (`"tenant": ["acme"]`, as some multivalued mappers do) would make the
    // caller tenant-less or group-less, and a `forbid` written for its
    // tenant or group would silently stop applying.
    let odd = |claim: &str, want: &str| {
        refuse(format!(
            "the token's `{claim}` claim must be {want}: ask the identity provider to send it so"
        ))
    };
    let tenant = match map.tenant.as_ref().map(|c| (c, claims.get(c))) {
        None | Some((_, None | Some(Value::Null))) => None,
        Some((_, Some(Value::String(s)))) => Some(s.clone()),
        Some((c, Some(_))) => return Err(odd(c, "a string")),
    };
    let groups = match map.groups.as_ref().map(|c| (c, claims.get(c))) {
        None | Some((_, None | Some(Value::Null))) => Vec::new(),
        Some((_, Some(Value::String(s)))) => vec![s.clone()],
        Some((c, Some(Value::Array(a)))) => a
            .iter()
            .map(|g| g.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| odd(c, "a string or a list of strings"))?,
        Some((c, Some(_))) => return Err(odd(c, "a string or a list of strings")),
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
            None | Some(Value::Null) => {}
            Some(_) => return Err(odd(name, "a string, a number or a boolean")),
        }
    }
    Ok(Principal {
        id,
        issuer: Some(issuer.cfg.issuer.clone()),
        tenant,
        groups,
        attributes,
    })
}
