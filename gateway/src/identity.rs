//! The caller's identity for backends: a short-lived JWT signed by Skygate
//! (`auth.identity_token`), sent to backends that ask for it
//! (`backends.NAME.identity`) with the backend as its audience, so a backend
//! can verify who called instead of trusting a plain header. Its public key
//! set is served on the admin listener at `GET /identity/jwks.json`.
//!
//! Signing costs tens of microseconds, so each (caller, backend) token is
//! cached and re-signed once three quarters of its lifetime have passed.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use skygate_config::{IdentityAlg, IdentityToken, Principal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const CACHE_MAX: usize = 10_000;

struct Entry {
    /// Held so the pointer in the key cannot be reused by another principal.
    principal: Arc<Principal>,
    value: HeaderValue,
    refresh_at: u64,
}

pub struct IdentitySigner {
    key: EncodingKey,
    alg: Algorithm,
    cfg: IdentityToken,
    /// `GET /identity/jwks.json`.
    pub jwks: Bytes,
    cache: Mutex<HashMap<(usize, skygate_config::AuthMethod, usize), Entry>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl IdentitySigner {
    /// The signer for a validated config (the key was checked at load).
    pub fn new(cfg: &IdentityToken) -> Result<Self, String> {
        use ring::signature::{
            EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        };
        let pem = cfg.key_pem.expose().as_bytes();
        let der =
            skygate_config::pem_der(cfg.key_pem.expose()).ok_or("the identity key is not PEM")?;
        let (key, alg, jwk) = match cfg.algorithm {
            IdentityAlg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &ring::rand::SystemRandom::new(),
                )
                .map_err(|_| "the identity key is not a P-256 key")?;
                let point = pair.public_key().as_ref();
                let (x, y) = (point.get(1..33), point.get(33..65));
                let (Some(x), Some(y)) = (x, y) else {
                    return Err("unexpected P-256 public key".into());
                };
                let jwk =
                    serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)});
                (
                    EncodingKey::from_ec_pem(pem).map_err(|e| e.to_string())?,
                    Algorithm::ES256,
                    jwk,
                )
            }
            IdentityAlg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|_| "the identity key is not an Ed25519 key")?;
                let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
                (
                    EncodingKey::from_ed_pem(pem).map_err(|e| e.to_string())?,
                    Algorithm::EdDSA,
                    jwk,
                )
            }
        };
        let mut jwk = jwk;
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), cfg.kid.clone().into());
            o.insert("use".into(), "sig".into());
            o.insert(
                "alg".into(),
                match alg {
                    Algorithm::EdDSA => "EdDSA",
                    _ => "ES256",
                }
                .into(),
            );
        }
        Ok(Self {
            key,
            alg,
            cfg: cfg.clone(),
            jwks: Bytes::from(serde_json::json!({ "keys": [jwk] }).to_string()),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The header carrying the token.
    pub fn header(&self) -> &HeaderName {
        &self.cfg.header
    }

    /// A token saying `principal` calls the backend at index `backend`
    /// (audience `audience`), from the cache while it is fresh.
    pub fn token(
        &self,
        principal: &Arc<Principal>,
        method: skygate_config::AuthMethod,
        backend: usize,
        audience: &str,
    ) -> Option<HeaderValue> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let key = (Arc::as_ptr(principal) as usize, method, backend);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.get(&key) {
            if Arc::ptr_eq(&e.principal, principal) && now < e.refresh_at {
                return Some(e.value.clone());
            }
        }
        let ttl = self.cfg.ttl.as_secs();
        let claims = serde_json::json!({
            "iss": self.cfg.issuer,
            "aud": audience,
            "sub": principal.id,
            // How the caller proved it: an API key's `app`, a token's `app`
            // and a certificate's `app` are three callers.
            "auth": method.as_str(),
            "idp": principal.issuer,
            "tenant": principal.tenant,
            "groups": principal.groups,
            "iat": now,
            "exp": now + ttl,
        });
        let mut header = Header::new(self.alg);
        header.kid = Some(self.cfg.kid.clone());
        let token = match jsonwebtoken::encode(&header, &claims, &self.key) {
            Ok(t) => t,
            Err(e) => {
                log::error!("signing an identity token failed: {e}");
                return None;
            }
        };
        let value = HeaderValue::from_maybe_shared(Bytes::from(token)).ok()?;
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            key,
            Entry {
                principal: principal.clone(),
                value: value.clone(),
                refresh_at: now + ttl * 3 / 4,
            },
        );
        Some(value)
    }
}
