//! AWS credentials: the standard chain, kept fresh in the background.
//!
//! In the SDKs' order, the first that answers wins:
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`;
//! 2. a web identity token (EKS, IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` and
//!    `AWS_ROLE_ARN`, exchanged at STS (`AssumeRoleWithWebIdentity`;
//!    `AWS_ENDPOINT_URL_STS` overrides the regional endpoint);
//! 3. the shared credentials file: `AWS_SHARED_CREDENTIALS_FILE` or
//!    `~/.aws/credentials`, profile `AWS_PROFILE` or `default` (re-read when
//!    it changes);
//! 4. container credentials (ECS, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`;
//! 5. the instance metadata service, IMDSv2 (`AWS_EC2_METADATA_DISABLED`,
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
//!
//! Requests read the current credentials (one atomic load); they never
//! fetch. Temporary credentials are refreshed five minutes (or half their
//! lifetime) before they expire; a failed refresh keeps the old ones while
//! they are valid and is retried with backoff. Secrets never reach a log.

use super::super::fetch::Fetcher;
use super::renew::{renew_time, Renewal};
use crate::sign::sigv4::{parse_iso8601, Credentials};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Credentials and where they came from.
#[derive(Debug)]
pub struct Held {
    pub creds: Credentials,
    /// `None`: long-lived keys.
    pub expires: Option<SystemTime>,
    pub source: &'static str,
}

impl Held {
    fn renew_at(&self, fetched: SystemTime) -> Option<SystemTime> {
        Some(renew_time(fetched, self.expires?))
    }
}

type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What tells a changed file: its modification time and length (a file
/// truncated and rewritten within one mtime tick still changes length).
type Fingerprint = Option<(SystemTime, u64)>;

const ENVIRONMENT: &str = "the environment";
const SHARED_FILE: &str = "the shared credentials file";

/// How long credentials from a network source without a readable
/// expiration are kept before they are fetched again.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(900);

/// The process's AWS credential chain.
pub struct AwsChain {
    current: ArcSwapOption<Held>,
    renewal: Renewal,
    env: Env,
    fetcher: Fetcher,
    /// The shared file's fingerprint (modification time, length) when it
    /// was last looked at; `None` inside: it was absent.
    file_seen: Mutex<Option<Fingerprint>>,
}

impl std::fmt::Debug for AwsChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsChain")
            .field("source", &self.current.load().as_ref().map(|h| h.source))
            .finish_non_exhaustive()
    }
}

/// How often the shared file is checked for a change.
const FILE_POLL: Duration = Duration::from_secs(2);
/// Endpoint calls (STS, metadata) give up after this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl AwsChain {
    /// A chain reading the process's environment.
    pub fn from_process() -> Self {
        Self::new(Box::new(|k| std::env::var(k).ok()))
    }

    pub fn new(env: Env) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            renewal: Renewal::new("AWS credentials"),
            env,
            fetcher: Fetcher::default(),
            file_seen: Mutex::new(None),
        }
    }

    /// The current credentials, unless they have expired.
    pub fn get(&self) -> Option<Arc<Held>> {
        let held = self.current.load_full()?;
        match held.expires {
            Some(t) if t <= SystemTime::now() => None,
            _ => Some(held),
        }
    }

    /// Marks the chain as needed (a backend signs with it). The sources that
    /// need no network (environment, shared file) are read at once, so the
    /// first request finds credentials; the rest follow in the background.
    pub fn want(&self) {
        if self.renewal.want() {
            if let Some(held) = self.local() {
                self.store(held);
            }
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    fn store(&self, held: Held) {
        let old = self.current.load();
        let changed = old.as_ref().is_none_or(|o| o.source != held.source);
        if changed {
            log::info!("AWS credentials from {}", held.source);
        }
        self.renewal.renewed(held.renew_at(SystemTime::now()));
        self.current.store(Some(Arc::new(held)));
    }

    /// The environment, else the shared file.
    fn local(&self) -> Option<Held> {
        if let Some(creds) = Credentials::from_env(|k| self.var(k)) {
            return Some(Held {
                creds,
                expires: None,
                source: ENVIRONMENT,
            });
        }
        if self.var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
            return None;
        }
        self.shared_file()
    }

    fn shared_file_path(&self) -> Option<PathBuf> {
        self.var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                self.var("HOME")
                    .map(|h| PathBuf::from(h).join(".aws/credentials"))
            })
    }

    fn fingerprint(&self) -> Fingerprint {
        let m = std::fs::metadata(self.shared_file_path()?).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// The shared file's credentials; the file's fingerprint is noted
    /// whatever it holds, so a half-written file is read again once it
    /// changes.
    fn shared_file(&self) -> Option<Held> {
        let seen = self.fingerprint();
        if let Ok(mut s) = self.file_seen.lock() {
            *s = Some(seen);
        }
        let text = std::fs::read_to_string(self.shared_file_path()?).ok()?;
        let profile = self.var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        Some(Held {
            creds: parse_credentials_file(&text, &profile)?,
            expires: None,
            source: SHARED_FILE,
        })
    }

    /// Whether the shared file changed (appeared, went, was rewritten)
    /// since it was last looked at, when the chain reads it at all (the
    /// environment and a web identity come before it).
    fn file_changed(&self) -> bool {
        let before_it = Credentials::from_env(|k| self.var(k)).is_some()
            || self.var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some();
        if before_it {
            return false;
        }
        let now = self.fingerprint();
        self.file_seen
            .lock()
            .map_or(true, |seen| *seen != Some(now))
    }

    /// Keeps the credentials fresh until the process ends.
    pub async fn maintain(&self) {
        self.renewal.maintain(|| self.refresh()).await;
    }

    /// Walks the chain once (skipping what is still fresh); the time until
    /// the next look.
    pub async fn refresh(&self) -> Result<Duration, String> {
        let now = SystemTime::now();
        // A changed shared file is looked at whatever answered before (a
        // rotation, or a file that was half written when last read).
        if let (Some(held), false) = (self.current.load_full(), self.file_changed()) {
            match self.renewal.renew_at() {
                Some(at) if at > now => {
                    let left = at.duration_since(now).unwrap_or_default();
                    return Ok(left.clamp(Duration::from_millis(100), FILE_POLL));
                }
                Some(_) => {}
                None if held.source == ENVIRONMENT => return Ok(Duration::from_secs(300)),
                None => return Ok(FILE_POLL),
            }
        }
        if let Some(held) = self.local() {
            let poll = if held.source == ENVIRONMENT {
                Duration::from_secs(300)
            } else {
                FILE_POLL
            };
            self.store(held);
            return Ok(poll);
        }
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|h| h.source == SHARED_FILE)
        {
            // The file changed but holds no usable keys (half written, or the
            // profile is gone): keep the last keys and look again soon,
            // rather than switch identity to a network source.
            if self.fingerprint().is_some() {
                return Ok(FILE_POLL);
            }
        }
        let held = if let Some(token_file) = self.var("AWS_WEB_IDENTITY_TOKEN_FILE") {
            self.web_identity(&token_file).await?
        } else if let Some(uri) = self.container_uri() {
            self.container(&uri).await?
        } else if self
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err("none found in the environment, a web identity, the shared file or a container, and the instance metadata service is disabled".into());
        } else {
            self.imds().await.map_err(|e| {
                format!("none found in the environment, a web identity, the shared file or a container; the instance metadata service: {e}")
            })?
        };
        let mut held = held;
        held.expires = held.expires.or(Some(now + UNKNOWN_LIFETIME));
        // Credentials that are due at once (already near or past expiry, a
        // skewed clock) are fetched again after a short pause, not at once.
        let next = held
            .renew_at(now)
            .and_then(|at| at.duration_since(now).ok())
            .unwrap_or(Duration::from_secs(5))
            .clamp(Duration::from_millis(100), FILE_POLL);
        self.store(held);
        Ok(next)
    }

    async fn web_identity(&self, token_file: &str) -> Result<Held, String> {
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| format!("the web identity token file `{token_file}`: {e}"))?;
        let role = self
            .var("AWS_ROLE_ARN")
            .ok_or("AWS_WEB_IDENTITY_TOKEN_FILE is set without AWS_ROLE_ARN")?;
        let session = self
            .var("AWS_ROLE_SESSION_NAME")
            .unwrap_or_else(|| format!("skygate-{}", super::unix_now()));
        let endpoint = self
            .var("AWS_ENDPOINT_URL_STS")
            .or_else(|| self.var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| {
                match self
                    .var("AWS_REGION")
                    .or_else(|| self.var("AWS_DEFAULT_REGION"))
                {
                    Some(r) => format!("https://sts.{r}.amazonaws.com"),
                    None => "https://sts.amazonaws.com".into(),
                }
            });
        let body = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
            form(&role),
            form(&session),
            form(token.trim())
        );
        let url = format!("{}/", endpoint.trim_end_matches('/'));
        let r = self
            .fetcher
            .send(
                "POST",
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(body),
                FETCH_TIMEOUT,
            )
            .await
            .map_err(|e| format!("STS AssumeRoleWithWebIdentity: {e}"))?;
        let text = String::from_utf8_lossy(&r.body);
        if r.status != 200 {
            let why = xml_text(&text, "Message").unwrap_or_else(|| format!("status {}", r.status));
            return Err(format!("STS AssumeRoleWithWebIdentity refused: {why}"));
        }
        let (creds, expires) = parse_sts(&text).ok_or("STS answered without credentials")?;
        Ok(Held {
            creds,
            expires,
            source: "a web identity (STS)",
        })
    }

    fn container_uri(&self) -> Option<String> {
        self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
            self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                .map(|r| format!("http://169.254.170.2{r}"))
        })
    }

    async fn container(&self, uri: &str) -> Result<Held, String> {
        let token = match self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(f) => std::fs::read_to_string(&f)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| format!("the container token file `{f}`: {e}"))?,
            None => self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        let mut headers = vec![("accept", "application/json")];
        if let Some(t) = &token {
            headers.push(("authorization", t.as_str()));
        }
        let r = self
            .fetcher
            .send("GET", uri, &headers, Bytes::new(), FETCH_TIMEOUT)
            .await
            .map_err(|e| format!("container credentials: {e}"))?;
        if r.status != 200 {
            return Err(format!("container credentials: status {}", r.status));
        }
        let (creds, expires) = parse_json_credentials(&r.body)
            .ok_or("container credentials: no keys in the answer")?;
        Ok(Held {
            creds,
            expires,
            source: "container credentials",
        })
    }

    async fn imds(&self) -> Result<Held, String> {
        let base = self
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into());
        let base = base.trim_end_matches('/');
        let timeout = Duration::from_secs(1);
        let token = self
            .fetcher
            .send(
                "PUT",
                &format!("{base}/latest/api/token"),
                &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
                Bytes::new(),
                timeout,
            )
            .await?;
        if token.status != 200 {
            return Err(format!("token: status {}", token.status));
        }
        let token = String::from_utf8_lossy(&token.body).trim().to_string();
        let h = [("x-aws-ec2-metadata-token", token.as_str())];
        let list = format!("{base}/latest/meta-data/iam/security-credentials/");
        let role = self
            .fetcher
            .send("GET", &list, &h, Bytes::new(), timeout)
            .await?;
        if role.status != 200 {
            return Err(format!("no instance role (status {})", role.status));
        }
        let role = String::from_utf8_lossy(&role.body)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if role.is_empty() || role.contains('/') {
            return Err("no instance role".into());
        }
        let r = self
            .fetcher
            .send("GET", &format!("{list}{role}"), &h, Bytes::new(), timeout)
            .await?;
        if r.status != 200 {
            return Err(format!("role `{role}`: status {}", r.status));
        }
        let (creds, expires) =
            parse_json_credentials(&r.body).ok_or("the role's answer has no keys")?;
        Ok(Held {
            creds,
            expires,
            source: "the instance metadata service",
        })
    }
}

/// Signs one backend's requests: its config's keys, else the chain's.
#[derive(Debug)]
pub struct AwsSigner {
    keys: Option<Credentials>,
    chain: Arc<AwsChain>,
    region: String,
    service: &'static str,
}

impl AwsSigner {
    pub fn new(
        conf: &skygate_config::AwsConf,
        chain: &Arc<AwsChain>,
        service: &'static str,
    ) -> Self {
        let keys = conf.keys.as_ref().map(|k| Credentials {
            access_key_id: k.access_key_id.clone(),
            secret_access_key: k.secret_access_key.expose().to_string(),
            session_token: k.session_token.as_ref().map(|t| t.expose().to_string()),
        });
        if keys.is_none() {
            chain.want();
        }
        Self {
            keys,
            chain: chain.clone(),
            region: conf.region.clone(),
            service,
        }
    }

    /// Adds `x-amz-date`, `x-amz-security-token` and `authorization` to a
    /// request that is otherwise complete (host, path, query, the headers
    /// to sign). With `content_sha`, also `x-amz-content-sha256`.
    pub fn sign(
        &self,
        backend: &str,
        h: &mut pingora_http::RequestHeader,
        body: &[u8],
        content_sha: bool,
    ) -> Result<(), skygate_config::ApiError> {
        use crate::sign::sigv4;
        let held;
        let creds = match &self.keys {
            Some(k) => k,
            None => {
                held = self.chain.get().ok_or_else(|| {
                    super::no_credentials(
                        backend,
                        "AWS credentials (none in its config, and the standard chain found none)",
                    )
                })?;
                &held.creds
            }
        };
        let bad = |e: Box<pingora_error::Error>| {
            skygate_config::ApiError::new(
                skygate_config::ErrorKind::Internal,
                format!("signing a request to `{backend}`: {e}"),
            )
        };
        if content_sha {
            h.insert_header("x-amz-content-sha256", sigv4::payload_hash(body))
                .map_err(bad)?;
        }
        let names = [
            "content-type",
            "x-amz-content-sha256",
            "x-amz-invocation-type",
            "x-amz-log-type",
            "accept",
        ];
        let signed: Vec<(&str, &str)> = names
            .iter()
            .filter_map(|n| {
                h.headers
                    .get(*n)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| (*n, v))
            })
            .collect();
        let host = h
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let req = sigv4::Request {
            method: h.method.as_str(),
            host,
            path: h.uri.path(),
            query: h.uri.query(),
            headers: &signed,
            body,
        };
        let scope = sigv4::Scope {
            region: &self.region,
            service: self.service,
            time: SystemTime::now(),
        };
        let added = sigv4::sign(&req, creds, scope);
        for (k, v) in added {
            let mut v = http::HeaderValue::from_str(&v).map_err(|_| {
                skygate_config::ApiError::new(
                    skygate_config::ErrorKind::Internal,
                    format!("backend `{backend}`: the AWS credentials are not valid header text"),
                )
            })?;
            v.set_sensitive(true);
            h.insert_header(k, v).map_err(bad)?;
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` of one value (RFC 3986 unreserved
/// characters as they are, the rest `%XX`).
fn form(v: &str) -> String {
    super::path_segment(v)
}

/// A profile's keys in an AWS shared credentials file (INI).
pub fn parse_credentials_file(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_profile =
                name == profile || name.strip_prefix("profile ").map(str::trim) == Some(profile);
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    Some(Credentials {
        access_key_id: id.filter(|v| !v.is_empty())?,
        secret_access_key: secret.filter(|v| !v.is_empty())?,
        session_token: token.filter(|v| !v.is_empty()),
    })
}

/// The text of the first `<tag>` element, entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(
        xml[start..start + len]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The credentials in an STS `AssumeRole*` answer.
pub fn parse_sts(xml: &str) -> Option<(Credentials, Option<SystemTime>)> {
    let start = xml.find("<Credentials>")?;
    let block = &xml[start..];
    let creds = Credentials {
        access_key_id: xml_text(block, "AccessKeyId")?,
        secret_access_key: xml_text(block, "SecretAccessKey")?,
        session_token: xml_text(block, "SessionToken"),
    };
    let expires = xml_text(block, "Expiration").and_then(|t| parse_iso8601(&t));
    Some((creds, expires))
}

/// The credentials in a metadata or container endpoint's JSON answer.
fn parse_json_credentials(body: &[u8]) -> Option<(Credentials, Option<SystemTime>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let creds = Credentials {
        access_key_id: s("AccessKeyId").filter(|x| !x.is_empty())?,
        secret_access_key: s("SecretAccessKey").filter(|x| !x.is_empty())?,
        session_token: s("Token").filter(|x| !x.is_empty()),
    };
    Some((creds, s("Expiration").and_then(|t| parse_iso8601(&t))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_profiles() {
        let text = "# keys\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1\n\n[profile ci]\naws_access_key_id=AKIA2\naws_secret_access_key = s2\naws_session_token = t2\n[empty]\n";
        let d = parse_credentials_file(text, "default").unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str()),
            ("AKIA1", "s1")
        );
        assert_eq!(d.session_token, None);
        let ci = parse_credentials_file(text, "ci").unwrap();
        assert_eq!(ci.session_token.as_deref(), Some("t2"));
        assert!(parse_credentials_file(text, "empty").is_none());
        assert!(parse_credentials_file(text, "nope").is_none());
    }

    #[test]
    fn sts_answer() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>se/cr+et</SecretAccessKey><SessionToken>to&amp;ken</SessionToken><Expiration>2015-08-30T12:36:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let (c, exp) = parse_sts(xml).unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(c.secret_access_key, "se/cr+et");
        assert_eq!(c.session_token.as_deref(), Some("to&ken"));
        assert_eq!(exp, parse_iso8601("2015-08-30T12:36:00Z"));
        assert!(parse_sts("<Error><Message>no</Message></Error>").is_none());
    }

    #[test]
    fn environment_first_and_never_logged() {
        let chain = AwsChain::new(Box::new(|k| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIAENV".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("very-secret".into()),
            "AWS_SHARED_CREDENTIALS_FILE" => Some("/nonexistent".into()),
            _ => None,
        }));
        assert!(chain.get().is_none());
        chain.want();
        let held = chain.get().unwrap();
        assert_eq!(held.source, "the environment");
        assert!(!format!("{held:?} {chain:?}").contains("very-secret"));
    }

    #[test]
    fn shared_file_is_read_at_once() {
        let dir = std::env::temp_dir().join(format!("skygate-aws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id=AKIAF\naws_secret_access_key=sf\n",
        )
        .unwrap();
        let path = file.to_string_lossy().to_string();
        let chain = AwsChain::new(Box::new(move |k| {
            (k == "AWS_SHARED_CREDENTIALS_FILE").then(|| path.clone())
        }));
        chain.want();
        assert_eq!(chain.get().unwrap().creds.access_key_id, "AKIAF");
        assert!(!chain.file_changed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_credentials_a_call_is_a_retryable_503() {
        let chain = Arc::new(AwsChain::new(Box::new(|k| {
            (k == "AWS_SHARED_CREDENTIALS_FILE").then(|| "/nonexistent".into())
        })));
        let conf = skygate_config::AwsConf {
            region: "us-east-1".into(),
            keys: None,
        };
        let signer = AwsSigner::new(&conf, &chain, "bedrock");
        let mut h = pingora_http::RequestHeader::build("POST", b"/model/m/converse", None).unwrap();
        let e = signer.sign("br", &mut h, b"{}", false).unwrap_err();
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry, Some(skygate_config::Retry::Connect));
        assert!(
            e.message.contains("backend `br` has no AWS credentials"),
            "{e:?}"
        );
        assert!(h.headers.get("authorization").is_none());
    }
}
