//! An issuer's signing keys (JWKS): loaded from a file or fetched over
//! HTTPS, swapped in whole, refreshed in the background: when the TTL has
//! passed, and when a token names an unknown `kid`, at most once per
//! `jwks_min_refresh` (single flight: a storm of random `kid`s causes one
//! fetch, and requests with known keys never wait).

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
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
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut out = KeySet {
            fetched: Some(Instant::now()),
            ..KeySet::default()
        };
        for jwk in &set.keys {
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

impl Jwks {
    /// Loads a file source now; a URL source starts empty and is fetched
    /// by the first request that needs it.
    pub fn new(cfg: &JwtIssuer) -> Arc<Self> {
        let keys = match &cfg.jwks {
            JwksSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| KeySet::parse(&t, &cfg.issuer))
                .unwrap_or_else(|e| {
                    log::warn!("JWKS of `{}`: {e}", cfg.issuer);
                    KeySet::default()
                }),
            JwksSource::Url(_) => KeySet::default(),
        };
        Arc::new(Self {
            issuer: cfg.issuer.clone(),
            source: cfg.jwks.clone(),
            ttl: cfg.jwks_ttl,
            min_refresh: cfg.jwks_min_refresh,
            keys: ArcSwap::from_pointee(keys),
            last_refresh: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            done: watch::Sender::new(0),
        })
    }

    /// The key for `kid`. An unknown `kid` sets off a refresh (at most one
    /// per `min_refresh`) and waits for it, briefly; a stale set is
    /// refreshed in the background while it keeps serving.
    pub async fn key(self: &Arc<Self>, kid: Option<&str>) -> Option<Arc<Key>> {
        let set = self.keys.load();
        let stale = set.fetched.is_none_or(|t| t.elapsed() >= self.ttl);
        if let Some(k) = set.find(kid) {
            if stale && matches!(self.source, JwksSource::Url(_)) {
                self.refresh();
            }
            return Some(k);
        }
        drop(set);
        let mut done = self.done.subscribe();
        if !self.refresh() && !self.refreshing.load(Ordering::Acquire) {
            // Refreshed a moment ago and not in flight: the kid is unknown.
            return None;
        }
        let _ = tokio::time::timeout(REFRESH_WAIT, done.changed()).await;
        self.keys.load().find(kid)
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
        let me = self.clone();
        tokio::spawn(async move {
            let result = match &me.source {
                JwksSource::File(path) => std::fs::read_to_string(path).map_err(|e| e.to_string()),
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
            me.refreshing.store(false, Ordering::Release);
            me.done.send_modify(|g| *g += 1);
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
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
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
