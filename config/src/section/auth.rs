//! `auth:`: how clients prove who they are (API keys today).
//!
//! Keys are stored as SHA-256 (`key_sha256`, what production configs should
//! hold; `skygate keys new` mints one and prints its hash). A plaintext
//! `key` is still accepted, for demos and tests, hashed at load, and
//! reported as a warning.

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::raw::Text;
use crate::runtime::{
    ApiKey, Auth, Cidr, ClaimMap, IdentityAlg, IdentityToken, JwksSource, JwtAlg, JwtIssuer,
    Principal,
};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    /// Networks of proxies whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Headers stripped from every client request.
    #[serde(default)]
    pub identity_headers: Vec<String>,
    /// Trusted JWT issuers.
    #[serde(default)]
    pub jwt: Vec<RawJwtIssuer>,
    /// Signing the caller's identity for backends.
    pub identity_token: Option<RawIdentityToken>,
    /// Client certificates (on `server.tls`).
    pub mtls: Option<crate::section::tls::RawMtls>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityToken {
    pub key_file: String,
    pub algorithm: String,
    pub issuer: Option<String>,
    pub kid: Option<String>,
    pub ttl: Option<Text>,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks: RawJwks,
    pub jwks_ttl: Option<Text>,
    pub jwks_min_refresh: Option<Text>,
    pub leeway: Option<Text>,
    pub max_token_bytes: Option<Text>,
    #[serde(default)]
    pub claims: RawClaims,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub file: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClaims {
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub groups: Option<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// The key itself (demos and tests; a warning in production).
    pub key: Option<String>,
    /// The key's SHA-256, 64 hex digits.
    pub key_sha256: Option<String>,
    /// The principal's id.
    pub principal: String,
    pub tenant: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Cx<'_> {
    pub(crate) fn auth(&mut self, a: RawAuth) -> Auth {
        let mut api_keys: Vec<ApiKey> = Vec::new();
        for (i, k) in a.api_keys.into_iter().enumerate() {
            let p = [key("auth"), key("api_keys"), Seg::Index(i)];
            let sha256 = match (&k.key, &k.key_sha256) {
                (Some(plain), None) => {
                    if plain.len() < 8 {
                        self.err(
                            &path_of(&p, &[key("key")]),
                            "too short: an API key needs at least 8 characters",
                        );
                        continue;
                    }
                    self.warn(
                        &path_of(&p, &[key("key")]),
                        "a plaintext API key in the config: store its SHA-256 as `key_sha256` instead (`skygate keys hash`)",
                    );
                    crate::sha256(plain.as_bytes())
                }
                (None, Some(hex)) => match crate::parse_sha256_hex(hex) {
                    Some(h) => h,
                    None => {
                        self.err(
                            &path_of(&p, &[key("key_sha256")]),
                            "not a SHA-256: use the 64 hex digits `skygate keys hash` prints",
                        );
                        continue;
                    }
                },
                _ => {
                    self.err(
                        &p,
                        "give exactly one of `key_sha256` (production) or `key` (demos, tests)",
                    );
                    continue;
                }
            };
            if k.principal.is_empty() {
                self.err(&path_of(&p, &[key("principal")]), "must not be empty");
                continue;
            }
            if k.tenant.as_deref() == Some("") {
                self.err(
                    &path_of(&p, &[key("tenant")]),
                    "must not be empty (leave it out instead)",
                );
                continue;
            }
            if api_keys.iter().any(|o| o.sha256 == sha256) {
                self.err(&p, "the same key is listed twice");
                continue;
            }
            api_keys.push(ApiKey {
                sha256,
                principal: Arc::new(Principal {
                    id: k.principal,
                    issuer: None,
                    tenant: k.tenant,
                    groups: k.groups,
                    attributes: k.attributes,
                }),
            });
        }
        let mut trusted_proxies = Vec::new();
        for (i, net) in a.trusted_proxies.iter().enumerate() {
            match Cidr::parse(net) {
                Ok(c) => trusted_proxies.push(c),
                Err(msg) => self.err(&[key("auth"), key("trusted_proxies"), Seg::Index(i)], msg),
            }
        }
        let mut identity_headers = Vec::new();
        for (i, h) in a.identity_headers.iter().enumerate() {
            match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => identity_headers.push(name),
                Err(_) => self.err(
                    &[key("auth"), key("identity_headers"), Seg::Index(i)],
                    format!("`{h}` is not a header name"),
                ),
            }
        }
        let mut jwt = Vec::new();
        for (i, raw) in a.jwt.into_iter().enumerate() {
            let p = [key("auth"), key("jwt"), Seg::Index(i)];
            if let Some(issuer) = self.jwt_issuer(raw, &p) {
                if jwt.iter().any(|o: &JwtIssuer| o.issuer == issuer.issuer) {
                    self.err(
                        &path_of(&p, &[key("issuer")]),
                        "the same issuer is listed twice",
                    );
                    continue;
                }
                jwt.push(issuer);
            }
        }
        let identity_token = a
            .identity_token
            .and_then(|t| self.identity_token(t, &[key("auth"), key("identity_token")]));
        let mtls = a.mtls.and_then(|m| self.mtls(m));
        Auth {
            mtls,
            api_keys,
            trusted_proxies,
            identity_headers,
            jwt,
            identity_token,
        }
    }

    fn identity_token(&mut self, r: RawIdentityToken, p: &[Seg]) -> Option<IdentityToken> {
        let at = |k: &str| path_of(p, &[key(k)]);
        let algorithm = match r.algorithm.as_str() {
            "ES256" => IdentityAlg::ES256,
            "EdDSA" => IdentityAlg::EdDSA,
            other => {
                self.err(
                    &at("algorithm"),
                    format!("`{other}` is not allowed: use ES256 or EdDSA (fast to sign)"),
                );
                return None;
            }
        };
        let pem = match std::fs::read_to_string(self.base.join(&r.key_file)) {
            Ok(t) => t,
            Err(e) => {
                self.err(
                    &at("key_file"),
                    format!("`{}`: cannot read it: {e}", r.key_file),
                );
                return None;
            }
        };
        if let Err(why) = check_signing_key(&pem, algorithm) {
            self.err(&at("key_file"), format!("`{}`: {why}", r.key_file));
            return None;
        }
        let header = match http::HeaderName::from_bytes(
            r.header
                .as_deref()
                .unwrap_or("x-skygate-identity")
                .as_bytes(),
        ) {
            Ok(h) => h,
            Err(_) => {
                self.err(&at("header"), "not a header name");
                return None;
            }
        };
        let ttl = self.duration(r.ttl.as_ref(), Duration::from_secs(60), &at("ttl"));
        if ttl < Duration::from_secs(10) || ttl > Duration::from_secs(3600) {
            self.err(&at("ttl"), "must be between 10s and 1h (short-lived: the token is re-signed as it nears expiry)");
        }
        Some(IdentityToken {
            key_pem: crate::Secret::new(pem),
            algorithm,
            issuer: r.issuer.unwrap_or_else(|| "skygate".into()),
            kid: r.kid.unwrap_or_else(|| "skygate-identity-1".into()),
            ttl,
            header,
        })
    }

    fn jwt_issuer(&mut self, r: RawJwtIssuer, p: &[Seg]) -> Option<JwtIssuer> {
        let at = |k: &str| path_of(p, &[key(k)]);
        let before = self.error_count();
        if r.issuer.is_empty() {
            self.err(&at("issuer"), "must not be empty");
        } else if r.issuer.contains('|') {
            // A user's policy entity id is `issuer|sub`: a `|` in the issuer
            // would let one issuer's subjects pass for another's.
            self.err(
                &at("issuer"),
                "must not contain `|` (it separates issuer and subject in a user's id)",
            );
        }
        if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
            self.err(
                &at("audiences"),
                "list the audiences a token must name (at least one)",
            );
        }
        let mut algorithms = Vec::new();
        for (i, a) in r.algorithms.iter().enumerate() {
            match JwtAlg::parse(a) {
                Some(alg) => algorithms.push(alg),
                None => self.err(
                    &path_of(p, &[key("algorithms"), Seg::Index(i)]),
                    format!(
                        "`{a}` is not allowed: use {} (never `none`, never HMAC: a public key must not work as a secret)",
                        JwtAlg::ALLOWED
                    ),
                ),
            }
        }
        if r.algorithms.is_empty() {
            self.err(
                &at("algorithms"),
                format!(
                    "list the algorithms the issuer signs with: {}",
                    JwtAlg::ALLOWED
                ),
            );
        }
        let jwks = match (r.jwks.file, r.jwks.url) {
            (Some(f), None) => {
                let path = self.base.join(&f);
                match read_small(&path).and_then(|t| check_jwks(&t)) {
                    Ok(()) => Some(JwksSource::File(path)),
                    Err(why) => {
                        self.err(
                            &path_of(p, &[key("jwks"), key("file")]),
                            format!("`{f}`: {why}"),
                        );
                        None
                    }
                }
            }
            (None, Some(u)) => match check_jwks_url(&u) {
                Ok(()) => Some(JwksSource::Url(u)),
                Err(why) => {
                    self.err(&path_of(p, &[key("jwks"), key("url")]), why);
                    None
                }
            },
            _ => {
                self.err(&at("jwks"), "give exactly one of `file` or `url`");
                None
            }
        };
        let jwks_ttl = self.duration(
            r.jwks_ttl.as_ref(),
            Duration::from_secs(600),
            &at("jwks_ttl"),
        );
        let jwks_min_refresh = self.duration(
            r.jwks_min_refresh.as_ref(),
            Duration::from_secs(30),
            &at("jwks_min_refresh"),
        );
        if jwks_min_refresh < Duration::from_secs(1) {
            self.err(&at("jwks_min_refresh"), "must be at least 1s: it is what keeps a storm of unknown kids from flooding the issuer");
        }
        let leeway = self.duration_from(
            r.leeway.as_ref(),
            Duration::from_secs(60),
            &at("leeway"),
            true,
        );
        if leeway > Duration::from_secs(600) {
            self.err(
                &at("leeway"),
                "at most 10m: a leeway is for clock skew, not for extending tokens",
            );
        }
        let max_token_bytes = match r.max_token_bytes.as_ref().map(|t| crate::parse_size(&t.0)) {
            None => 8 << 10,
            Some(Ok(n)) if (256..=1 << 20).contains(&n) => n,
            Some(Ok(_)) => {
                self.err(&at("max_token_bytes"), "must be between 256 and 1MiB");
                8 << 10
            }
            Some(Err(msg)) => {
                self.err(&at("max_token_bytes"), msg);
                8 << 10
            }
        };
        let claims = ClaimMap {
            subject: r.claims.subject.unwrap_or_else(|| "sub".into()),
            tenant: r.claims.tenant,
            groups: r.claims.groups,
            attributes: r.claims.attributes,
        };
        if self.error_count() > before {
            return None;
        }
        Some(JwtIssuer {
            issuer: r.issuer,
            audiences: r.audiences,
            algorithms,
            jwks: jwks?,
            jwks_ttl,
            jwks_min_refresh,
            leeway,
            max_token_bytes,
            claims,
        })
    }
}

/// A PKCS#8 PEM private key for `alg`.
fn check_signing_key(pem: &str, alg: IdentityAlg) -> Result<(), String> {
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let der = crate::pem_der(pem).ok_or("not a PEM file")?;
    let ok = match alg {
        IdentityAlg::ES256 => EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &ring::rand::SystemRandom::new(),
        )
        .is_ok(),
        IdentityAlg::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a PKCS#8 {} private key",
            match alg {
                IdentityAlg::ES256 => "P-256 (ES256)",
                IdentityAlg::EdDSA => "Ed25519 (EdDSA)",
            }
        ))
    }
}

/// A JWKS document: `{"keys": [...]}`, each key with a `kty` (whether its
/// keys are usable for the issuer's algorithms is checked where they are
/// parsed, by `skygate validate` and `run`).
fn check_jwks(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("not a JWKS: it needs a `keys` array")?;
    if keys
        .iter()
        .any(|k| k.get("kty").and_then(|t| t.as_str()).is_none())
    {
        return Err("every key needs a `kty`".into());
    }
    Ok(())
}

/// A file of at most 1 MiB (a FIFO or a device must not hang `validate`).
fn read_small(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    f.take((1 << 20) + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() > 1 << 20 {
        return Err("larger than 1 MiB".into());
    }
    Ok(text)
}

/// HTTPS, or HTTP to a loopback address (tests, a local sidecar).
fn check_jwks_url(u: &str) -> Result<(), String> {
    let uri: http::Uri = u.parse().map_err(|_| format!("`{u}` is not a URL"))?;
    let host = uri.host().unwrap_or("");
    // An address, not a name: `localhost` resolves through hosts and DNS.
    let loopback = host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(
            "a JWKS URL must be https (http only to a loopback address): keys fetched in the clear could be replaced"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    const BASE: &str = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n";

    #[test]
    fn hashed_and_plaintext_keys_with_principals() {
        let hash = crate::to_hex(&crate::sha256(b"sk-hashed-key-1"));
        let y = format!("{BASE}auth:\n  api_keys:\n    - {{ key_sha256: {hash}, principal: svc, tenant: acme, groups: [a, b], attributes: {{ team: pay }} }}\n    - {{ key: sk-plain-key-2, principal: demo }}\n");
        let c = load_str(&y, "k.yaml", &|_| None).unwrap();
        let k = &c.auth.api_keys;
        assert_eq!(k[0].sha256, crate::sha256(b"sk-hashed-key-1"));
        assert_eq!(k[0].principal.tenant.as_deref(), Some("acme"));
        assert_eq!(k[0].principal.groups, ["a", "b"]);
        assert_eq!(k[0].principal.attributes["team"], "pay");
        assert_eq!(k[1].sha256, crate::sha256(b"sk-plain-key-2"));
        // The plaintext key works, with a warning that names it.
        let w: Vec<String> = c
            .warnings
            .iter()
            .filter(|w| w.path != "admin")
            .map(ToString::to_string)
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        let w = &w[0];
        assert!(
            w.contains("k.yaml:10: auth.api_keys[1].key: a plaintext API key"),
            "{w}"
        );
        // And is not kept anywhere.
        assert!(!format!("{c:?}").contains("sk-plain-key-2"));
    }

    #[test]
    fn trusted_proxies_and_identity_headers() {
        let y = format!("{BASE}auth:\n  trusted_proxies: [10.0.0.0/8, 192.168.1.7, \"fd00::/8\"]\n  identity_headers: [X-Authenticated-User]\n");
        let c = load_str(&y, "t.yaml", &|_| None).unwrap();
        let t = &c.auth.trusted_proxies;
        assert!(t[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!t[0].contains("11.0.0.1".parse().unwrap()));
        assert!(
            t[0].contains("::ffff:10.9.9.9".parse().unwrap()),
            "IPv4-mapped"
        );
        assert!(t[1].contains("192.168.1.7".parse().unwrap()));
        assert!(!t[1].contains("192.168.1.8".parse().unwrap()));
        assert!(t[2].contains("fd12::1".parse().unwrap()));
        let mapped = crate::Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains("10.200.1.1".parse().unwrap()));
        assert!(!t[2].contains("10.0.0.1".parse().unwrap()));
        assert_eq!(c.auth.identity_headers[0], "x-authenticated-user");
        let errs = load_str(
            &format!("{BASE}auth:\n  trusted_proxies: [10.0.0.0/33, nope]\n  identity_headers: [\"bad header\"]\n"),
            "t.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("auth.trusted_proxies[0]: `10.0.0.0/33` is not an IP network"),
            "{errs}"
        );
        assert!(
            errs.contains("auth.trusted_proxies[1]: `nope` is not an IP network"),
            "{errs}"
        );
        assert!(
            errs.contains("auth.identity_headers[0]: `bad header` is not a header name"),
            "{errs}"
        );
    }

    #[test]
    fn bad_keys_are_errors() {
        let y = format!("{BASE}auth:\n  api_keys:\n    - {{ key_sha256: nothex, principal: a }}\n    - {{ key: short, principal: b }}\n    - {{ principal: c }}\n    - {{ key: sk-same-key-1, principal: d }}\n    - {{ key: sk-same-key-1, principal: e }}\n");
        let errs = load_str(&y, "k.yaml", &|_| None).unwrap_err().to_string();
        for needle in [
            "auth.api_keys[0].key_sha256: not a SHA-256",
            "auth.api_keys[1].key: too short",
            "auth.api_keys[2]: give exactly one of `key_sha256`",
            "auth.api_keys[4]: the same key is listed twice",
        ] {
            assert!(errs.contains(needle), "missing {needle}: {errs}");
        }
    }

    #[test]
    fn an_issuer_with_a_bar_is_an_error() {
        // A user's policy id is `issuer|sub`; `a|b` + `c` would read as `a` + `b|c`.
        let y = format!("{BASE}auth:\n  jwt:\n    - {{ issuer: \"https://idp|x\", audiences: [s], algorithms: [RS256], jwks: {{ url: \"https://idp/jwks\" }} }}\n");
        let errs = load_str(&y, "j.yaml", &|_| None).unwrap_err().to_string();
        assert!(
            errs.contains("auth.jwt[0].issuer: must not contain `|`"),
            "{errs}"
        );
    }
}
