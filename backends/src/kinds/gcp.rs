//! `gcp_cloud_run`: Cloud Run services and Cloud Functions (2nd gen) that
//! require authentication, called with a Google-signed ID token whose
//! audience is the service URL.
//!
//! ID tokens come from, in google-auth's order:
//! 1. a service-account key file (the backend's `credentials_file`, else
//!    `GOOGLE_APPLICATION_CREDENTIALS`): a JWT assertion signed with the
//!    key (RS256) is exchanged at the key's `token_uri` for an ID token
//!    (`target_audience`);
//! 2. the metadata server (Cloud Run, GKE, GCE):
//!    `/computeMetadata/v1/instance/service-accounts/default/identity?audience=...`
//!    (`GCE_METADATA_HOST` overrides `metadata.google.internal`).
//!
//! Tokens are cached per key file and audience and renewed in the
//! background five minutes before they expire; requests never fetch.

use super::renew::{renew_time, Renewal};
use super::{
    http_request, insert_bearer, map_http_failure, no_credentials, path_segment, MapErrors,
};
use crate::adapter::{Call, Prepared};
use crate::fetch::Fetcher;
use base64::Engine;
use bytes::Bytes;
use skygate_config::{ApiError, Backend, CloudRunConf};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A metadata server set by the process itself (`skygate demo` points the
/// gateway at its simulated Google); wins over `GCE_METADATA_HOST` and
/// `GOOGLE_APPLICATION_CREDENTIALS` (a developer's real key never goes to
/// the demo's backends).
static METADATA_HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Uses `host` (`host:port`) as the metadata server, for this process.
pub fn use_metadata_server(host: String) {
    let _ = METADATA_HOST.set(host);
}

type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where a token comes from and what it is for.
type Key = (Option<PathBuf>, String);

/// An ID token and when it expires.
pub struct IdToken {
    pub value: String,
    pub expires: SystemTime,
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdToken")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The process's Google ID-token source.
pub struct GcpChain {
    wanted: Mutex<BTreeSet<Key>>,
    tokens: Mutex<HashMap<Key, (Arc<IdToken>, SystemTime)>>,
    renewal: Renewal,
    env: Env,
    fetcher: Fetcher,
}

impl std::fmt::Debug for GcpChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpChain").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A service-account key file's fields Skygate uses.
#[derive(serde::Deserialize)]
struct ServiceAccount {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl GcpChain {
    pub fn from_process() -> Self {
        Self::new(Box::new(|k| std::env::var(k).ok()))
    }

    pub fn new(env: Env) -> Self {
        Self {
            wanted: Mutex::new(BTreeSet::new()),
            tokens: Mutex::new(HashMap::new()),
            renewal: Renewal::new("Google ID token"),
            env,
            fetcher: Fetcher::default(),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// Registers a token to keep fresh.
    pub fn want(&self, file: Option<PathBuf>, audience: &str) {
        let new = lock(&self.wanted).insert((file, audience.to_string()));
        if !self.renewal.want() && new {
            self.renewal.wake();
        }
    }

    /// The current token for `file` and `audience`, unless it has expired.
    pub fn get(&self, file: Option<&PathBuf>, audience: &str) -> Option<Arc<IdToken>> {
        let key = (file.cloned(), audience.to_string());
        lock(&self.tokens)
            .get(&key)
            .map(|(t, _)| t.clone())
            .filter(|t| t.expires > SystemTime::now())
    }

    pub async fn maintain(&self) {
        self.renewal.maintain(|| self.refresh()).await;
    }

    /// Fetches every wanted token that is missing or due; the time until
    /// the next one is due.
    async fn refresh(&self) -> Result<Duration, String> {
        let now = SystemTime::now();
        let wanted: Vec<Key> = lock(&self.wanted).iter().cloned().collect();
        let mut next = Duration::from_secs(60);
        let mut failure = None;
        for key in wanted {
            let due = lock(&self.tokens).get(&key).map(|(_, at)| *at);
            if let Some(at) = due.filter(|at| *at > now) {
                next = next.min(at.duration_since(now).unwrap_or_default());
                continue;
            }
            match self.fetch(&key).await {
                Ok(token) => {
                    let at = renew_time(now, token.expires);
                    next = next.min(at.duration_since(now).unwrap_or(Duration::from_secs(5)));
                    lock(&self.tokens).insert(key, (Arc::new(token), at));
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                self.renewal.renewed(None);
                Ok(next.max(Duration::from_millis(100)))
            }
        }
    }

    async fn fetch(&self, (file, audience): &Key) -> Result<IdToken, String> {
        // A metadata server the process chose (the demo's) wins over the
        // environment's key file: only a backend's own file comes first.
        let from_env = || {
            if METADATA_HOST.get().is_some() {
                return None;
            }
            self.var("GOOGLE_APPLICATION_CREDENTIALS")
                .map(PathBuf::from)
        };
        let file = file.clone().or_else(from_env);
        match file {
            Some(f) => self.minted_with_key(&f, audience).await,
            None => self.minted_by_metadata(audience).await,
        }
    }

    async fn minted_with_key(
        &self,
        path: &std::path::Path,
        audience: &str,
    ) -> Result<IdToken, String> {
        let text = std::fs::read(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
        let sa: ServiceAccount = serde_json::from_slice(&text)
            .map_err(|e| format!("`{}` is not a key file: {e}", path.display()))?;
        if sa.kind != "service_account" {
            return Err(format!(
                "`{}` holds `{}` credentials: only a service account's key can mint ID tokens",
                path.display(),
                sa.kind
            ));
        }
        let (Some(email), Some(pem), Some(token_uri)) =
            (sa.client_email, sa.private_key, sa.token_uri)
        else {
            return Err(format!(
                "`{}` lacks client_email, private_key or token_uri",
                path.display()
            ));
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| format!("`{}`: the private key: {e}", path.display()))?;
        let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        head.kid = sa.private_key_id;
        let iat = super::unix_now();
        let claims = serde_json::json!({
            "iss": email, "sub": email, "aud": token_uri,
            "iat": iat, "exp": iat + 3600, "target_audience": audience,
        });
        let assertion = jsonwebtoken::encode(&head, &claims, &key)
            .map_err(|e| format!("signing the token request: {e}"))?;
        let form = format!(
            "grant_type={}&assertion={assertion}",
            path_segment("urn:ietf:params:oauth:grant-type:jwt-bearer")
        );
        let r = self
            .fetcher
            .send(
                "POST",
                &token_uri,
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(form),
                FETCH_TIMEOUT,
            )
            .await
            .map_err(|e| format!("the token endpoint: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if r.status != 200 {
            let why = v
                .get("error_description")
                .or_else(|| v.get("error"))
                .and_then(|e| e.as_str())
                .unwrap_or("no reason given");
            return Err(format!(
                "the token endpoint refused: status {}: {}",
                r.status,
                skygate_config::clip(why)
            ));
        }
        let token = v
            .get("id_token")
            .and_then(|t| t.as_str())
            .ok_or("the token endpoint answered without an id_token")?;
        id_token(token)
    }

    async fn minted_by_metadata(&self, audience: &str) -> Result<IdToken, String> {
        let host = METADATA_HOST
            .get()
            .cloned()
            .or_else(|| self.var("GCE_METADATA_HOST"))
            .unwrap_or_else(|| "metadata.google.internal".into());
        let url = format!(
            "http://{host}/computeMetadata/v1/instance/service-accounts/default/identity?audience={}&format=full",
            path_segment(audience)
        );
        let r = self
            .fetcher
            .send(
                "GET",
                &url,
                &[("metadata-flavor", "Google")],
                Bytes::new(),
                Duration::from_secs(3),
            )
            .await
            .map_err(|e| format!("no key file, and the metadata server: {e}"))?;
        if r.status != 200 {
            return Err(format!("the metadata server: status {}", r.status));
        }
        id_token(String::from_utf8_lossy(&r.body).trim())
    }
}

/// A JWT as an ID token: its expiry read from its payload (the gateway
/// does not verify it: the platform does).
fn id_token(jwt: &str) -> Result<IdToken, String> {
    let payload = jwt.split('.').nth(1).ok_or("the ID token is not a JWT")?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the ID token's payload is not base64url")?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| "the ID token's payload is not JSON")?;
    let exp = v
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or("the ID token has no `exp`")?;
    if jwt.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("the ID token is not header text".into());
    }
    Ok(IdToken {
        value: jwt.to_string(),
        expires: SystemTime::UNIX_EPOCH + Duration::from_secs(exp),
    })
}

/// `gcp_cloud_run`: like `aws_lambda_url`, plain HTTP to the service, with
/// `Authorization: Bearer <ID token>`.
#[derive(Debug)]
pub struct CloudRunAdapter {
    pub conf: CloudRunConf,
    pub chain: Arc<GcpChain>,
}

impl CloudRunAdapter {
    pub fn new(conf: &CloudRunConf, chain: &Arc<GcpChain>) -> Self {
        chain.want(conf.credentials_file.clone(), &conf.audience);
        Self {
            conf: conf.clone(),
            chain: chain.clone(),
        }
    }

    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let mut h = http_request(backend, call)?;
        let token = self
            .chain
            .get(self.conf.credentials_file.as_ref(), &self.conf.audience)
            .ok_or_else(|| no_credentials(&backend.name, "Google ID token"))?;
        insert_bearer(&mut h, &token.value)?;
        Ok(Prepared {
            header: h,
            body: call.body.clone(),
            reply: Some(Box::new(MapErrors::new(
                &backend.name,
                call,
                |b, h, body| map_http_failure(b, "Cloud Run", h, body),
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_token_expiry_is_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"aud":"https://svc","exp":1700000000}"#);
        let t = id_token(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")).unwrap();
        assert_eq!(
            t.expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert!(!format!("{t:?}").contains(&payload));
        assert!(id_token("nope").is_err());
        assert!(id_token("a.b.c").is_err());
    }
}
