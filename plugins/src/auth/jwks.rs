//! An issuer's signing keys (JWKS): loaded from a file or fetched over
//! HTTPS, swapped in whole, refreshed in the background: when the TTL has
//! passed, and when a token names an unknown `kid`, at most once per
//! `jwks_min_refresh` (single flight: a storm of random `kid`s causes one
//! fetch, and requests with known keys never wait). Key sets are kept
//! across reloads, so a reload does not make requests wait for a fetch.

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use skygate_config::{JwksSource, JwtIssuer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long a request with an unknown `kid` waits for the refresh it set off.
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// One usable verification key.
pub struct Key {
    pub decoding: DecodingKey,
    /// The JWK's own `alg`, when it names one: a token must match it.
    pub alg: Option<Algorithm>,
}

/// The keys of one issuer at one moment.
#[derive(Default)]
pub struct KeySet {
    pub by_kid: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`: used only for tokens without one, and only
    /// when there is exactly one.
    pub unnamed: Vec<Arc<Key>>,
    pub fetched: Option<Instant>,
}

impl KeySet {
    /// Parses a JWKS document. Keys Skygate must never use are skipped:
    /// symmetric (`oct`) keys, keys whose `use` is not `sig`, and keys
    /// that do not parse.
    pub fn parse(text: &str, issuer: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut out = KeySet {
            fetched: Some(Instant::now()),
            ..KeySet::default()
        };
        // Each key on its own: one key jsonwebtoken cannot represent (ES512,
        // an encryption key, X25519, ...) must not take the others with it.
        let jwks: Vec<Jwk> = doc
            .keys
            .into_iter()
            .filter_map(|v| {
                serde_json::from_value::<Jwk>(v)
                    .inspect_err(|e| log::debug!("JWKS of `{issuer}`: skipping a key: {e}"))
                    .ok()
            })
            .collect();
        for jwk in &jwks {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                log::warn!("JWKS of `{issuer}`: skipping a symmetric (oct) key");
                continue;
            }
            if let Some(u) = &jwk.common.public_key_use {
                if *u != PublicKeyUse::Signature {
                    continue;
                }
            }
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(a) => match key_alg(a) {
                    Some(a) => Some(a),
                    None => {
                        log::warn!("JWKS of `{issuer}`: skipping a key for {a:?}");
                        continue;
                    }
                },
            };
            let decoding = match DecodingKey::from_jwk(jwk) {
                Ok(k) => k,
                Err(e) => {
                    log::warn!("JWKS of `{issuer}`: skipping a key: {e}");
                    continue;
                }
            };
            let key = Arc::new(Key { decoding, alg });
            match &jwk.common.key_id {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), key);
                }
                None => out.unnamed.push(key),
            }
        }
        Ok(out)
    }

    /// How many keys could verify a token in one of `algs` (a key without
    /// its own `alg` could verify any).
    pub fn usable(&self, algs: &[Algorithm]) -> usize {
        self.by_kid
            .values()
            .chain(&self.unnamed)
            .filter(|k| k.alg.is_none_or(|a| algs.contains(&a)))
            .count()
    }

    /// The key for a token's `kid` (or, without one, the only unnamed key).
    pub fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(k) => self.by_kid.get(k).cloned(),
            None if self.unnamed.len() == 1 => self.unnamed.first().cloned(),
            None => None,
        }
    }
}

fn key_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// An issuer's keys, and their refresh.
pub struct Jwks {
    issuer: String,
    source: JwksSource,
    ttl: Duration,
    min_refresh: Duration,
    keys: ArcSwap<KeySet>,
    /// When the last refresh started.
    last_refresh: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    /// Bumped when a refresh ends (with or without new keys).
    done: watch::Sender<u64>,
}

/// Reads a JWKS file, at most 1 MiB (a FIFO or a device must not hang or
/// fill memory).
pub fn read_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    f.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() > MAX_JWKS_BYTES {
        return Err("larger than 1 MiB".into());
    }
    Ok(text)
}

/// Every issuer's `Jwks`, kept across reloads (by issuer and source), so a
/// reload neither drops fetched keys nor makes requests wait for a fetch.
static SHARED: Mutex<Vec<Arc<Jwks>>> = Mutex::new(Vec::new());

/// Resets the single-flight flag and wakes the waiters however a refresh
/// ends (a panic or an abort included).
struct RefreshDone(Arc<Jwks>);

impl Drop for RefreshDone {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
        self.0.done.send_modify(|g| *g += 1);
    }
}

impl Jwks {
    /// The issuer's key set: the one already running (a file source is read
    /// again: its file may have changed), or a new one. A file is read now;
    /// a URL is fetched in the background when there is a runtime (else by
    /// the first request that needs it).
    pub fn shared(cfg: &JwtIssuer) -> Arc<Self> {
        let mut all = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = all.iter().find(|j| {
            j.issuer == cfg.issuer
                && j.source == cfg.jwks
                && j.ttl == cfg.jwks_ttl
                && j.min_refresh == cfg.jwks_min_refresh
        }) {
            if let JwksSource::File(path) = &j.source {
                j.load_file(path);
            }
            return j.clone();
        }
        let j = Arc::new(Self {
            issuer: cfg.issuer.clone(),
            source: cfg.jwks.clone(),
            ttl: cfg.jwks_ttl,
            min_refresh: cfg.jwks_min_refresh,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_refresh: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            done: watch::Sender::new(0),
        });
        match &j.source {
            JwksSource::File(path) => j.load_file(path),
            JwksSource::Url(_) => {
                if tokio::runtime::Handle::try_current().is_ok() {
                    j.refresh();
                }
            }
        }
        // Issuers gone from the config are forgotten with their last user.
        all.retain(|o| Arc::strong_count(o) > 1);
        all.push(j.clone());
        j
    }

    fn load_file(&self, path: &std::path::Path) {
        match read_file(path).and_then(|t| KeySet::parse(&t, &self.issuer)) {
            Ok(set) => self.keys.store(Arc::new(set)),
            Err(e) => log::warn!("JWKS of `{}`: {e}; keeping the keys it had", self.issuer),
        }
    }

    /// The key for `kid`. An unknown `kid` sets off a refresh (at most one
    /// per `min_refresh`) and waits for it, briefly; a stale URL set is
    /// refreshed in the background while it keeps serving.
    pub async fn key(self: &Arc<Self>, kid: Option<&str>) -> Option<Arc<Key>> {
        {
            let set = self.keys.load();
            if let Some(k) = set.find(kid) {
                let stale = set.fetched.is_none_or(|t| t.elapsed() >= self.ttl);
                if stale && matches!(self.source, JwksSource::Url(_)) {
                    self.refresh();
                }
                return Some(k);
            }
        }
        let mut done = self.done.subscribe();
        // A refresh may have ended between the look-up and the subscription.
        if let Some(k) = self.keys.load().find(kid) {
            return Some(k);
        }
        if !self.refresh() && !self.refreshing.load(Ordering::Acquire) {
            // Refreshed a moment ago and not in flight: the kid is unknown.
            return None;
        }
        let _ = tokio::time::timeout(REFRESH_WAIT, done.changed()).await;
        self.keys.load().find(kid)
    }

    /// The current key set (to check a cached verification still holds).
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Starts a refresh unless one started within `min_refresh` (or is in
    /// flight); whether it started one.
    fn refresh(self: &Arc<Self>) -> bool {
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.min_refresh)
                || self.refreshing.swap(true, Ordering::AcqRel)
            {
                return false;
            }
            *last = Some(Instant::now());
        }
        let guard = RefreshDone(self.clone());
        tokio::spawn(async move {
            let me = guard.0.clone();
            let result = match &me.source {
                JwksSource::File(path) => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || read_file(&path))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
                JwksSource::Url(url) => fetch(url).await,
            };
            match result.and_then(|t| KeySet::parse(&t, &me.issuer)) {
                Ok(set) => {
                    log::info!(
                        "JWKS of `{}` refreshed: {} key(s)",
                        me.issuer,
                        set.by_kid.len() + set.unnamed.len()
                    );
                    me.keys.store(Arc::new(set));
                }
                Err(e) => log::warn!(
                    "JWKS of `{}`: refresh failed, keeping the old keys: {e}",
                    me.issuer
                ),
            }
            drop(guard);
        });
        true
    }
}

/// GETs a JWKS document (HTTPS verified against the system's roots, or
/// HTTP to loopback), at most 1 MiB, within 5 seconds.
async fn fetch(url: &str) -> Result<String, String> {
    use pingora_core::connectors::http::Connector;
    use pingora_core::upstreams::peer::HttpPeer;
    use std::sync::OnceLock;
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "the JWKS URL does not parse".to_string())?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let exchange = async {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{host}` resolves to no address"))?;
        let peer = HttpPeer::new(addr, tls, host.clone());
        let connector = CONNECTOR.get_or_init(|| Connector::new(None));
        let (mut s, _) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("connect: {}", e.etype().as_str()))?;
        let mut req = pingora_http::RequestHeader::build("GET", path.as_bytes(), Some(3))
            .map_err(|e| e.to_string())?;
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        req.insert_header(http::header::HOST, authority)
            .map_err(|e| e.to_string())?;
        req.insert_header(http::header::ACCEPT, "application/json")
            .map_err(|e| e.to_string())?;
        s.write_request_header(Box::new(req))
            .await
            .map_err(|e| format!("send: {}", e.etype().as_str()))?;
        s.finish_request_body()
            .await
            .map_err(|e| format!("send: {}", e.etype().as_str()))?;
        s.read_response_header()
            .await
            .map_err(|e| format!("response: {}", e.etype().as_str()))?;
        let status = s.response_header().map_or(0, |h| h.status.as_u16());
        if status != 200 {
            return Err(format!("status {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = s
            .read_response_body()
            .await
            .map_err(|e| format!("body: {}", e.etype().as_str()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("larger than 1 MiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| "not UTF-8".to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unusable_key_does_not_poison_the_set() {
        let good = r#"{"kty":"RSA","kid":"good","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
        for extra in [
            r#"{"kty":"EC","crv":"P-521","kid":"p521","use":"sig","alg":"ES512","x":"AQ","y":"AQ"}"#,
            r#"{"kty":"OKP","crv":"X25519","kid":"enc","use":"enc","x":"AQ"}"#,
            r#"{"kty":"RSA","kid":"enc2","use":"enc","alg":"RSA-OAEP-512","n":"AQ","e":"AQAB"}"#,
            r#"{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}"#,
        ] {
            let doc = format!(r#"{{"keys":[{good},{extra}]}}"#);
            let set = KeySet::parse(&doc, "t").unwrap();
            assert!(set.by_kid.contains_key("good"), "{extra}");
            assert_eq!(set.by_kid.len(), 1, "{extra}");
            assert_eq!(set.usable(&[Algorithm::RS256]), 1);
            assert_eq!(set.usable(&[Algorithm::ES256]), 0);
        }
    }
}
