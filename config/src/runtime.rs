//! Validated runtime types: what the gateway runs on. Everything validation can
//! settle is settled here (parsed addresses, durations, indexes instead of names),
//! so the hot path never re-checks it.

use crate::Secret;
use std::net::SocketAddr;
use std::time::Duration;

/// A validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub server: Server,
    pub admin: Admin,
    pub auth: Auth,
    /// Backends, in name order; routes refer to them by index.
    pub backends: Vec<Backend>,
    /// Routes, in name order.
    pub routes: Vec<Route>,
    /// Cedar policies; `None`: no authorization beyond authentication.
    pub policy: Option<Policy>,
    /// Where shared run-time state (rate limits) lives.
    pub state: StateConf,
    /// Rate limits and quotas: entries of `limits:`, then the routes' own.
    pub limits: Vec<RateLimit>,
    /// The response cache's tiers (each route says whether it caches).
    pub cache: CacheConf,
    /// Traces over OTLP.
    pub telemetry: Telemetry,
    /// Things that work but should not be so in production (e.g. a
    /// plaintext API key): `validate` prints them, `run` logs them.
    pub warnings: Vec<crate::ConfigError>,
}

/// A file read at load, with its path (for error positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: std::path::PathBuf,
    pub text: String,
}

/// Authorization by Cedar policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub files: Vec<PolicyFile>,
    /// `files` as written (resolved against the config's folder; may hold
    /// a `*`), to notice a policy file added or removed.
    pub patterns: Vec<std::path::PathBuf>,
    /// `None`: Skygate's built-in schema.
    pub schema: Option<PolicyFile>,
    pub mode: PolicyMode,
    pub audit_log: AuditLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    /// A denial is a 403.
    Enforce,
    /// A denial is logged and counted, and the request goes on.
    Shadow,
}

/// Where decisions are written, one JSON line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditLog {
    Stderr,
    Off,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// The HTTPS listener, when there is one.
    pub tls: Option<TlsListener>,
    pub threads: usize,
    pub grace_period: Duration,
    /// After SIGTERM: keep serving, with `/readyz` failing, this long before
    /// the listeners close, so load balancers stop sending first.
    pub drain_delay: Duration,
    pub access_log: AccessLog,
    pub timeouts: ServerTimeouts,
    /// Most bytes of request bodies held in memory at once, server-wide.
    pub body_budget: usize,
    /// How long a request waits for room in `body_budget` before a 503.
    pub body_budget_wait: Duration,
}

/// Downstream (client-side) timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// A new connection's first request header, complete.
    pub header_read: Duration,
    /// The longest pause between two pieces of a request body (408 after it).
    pub body_read: Duration,
    /// Kept alive: from a response to the next request's complete header.
    pub keepalive: Duration,
    /// The longest wait for a client to take response bytes (a client that
    /// stops reading is cut off, freeing the upstream side too).
    pub write: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            write: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `None` leaves the admin API (except health) closed: every call gets 401.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Auth {
    pub api_keys: Vec<ApiKey>,
    /// Peers whose `x-forwarded-*` / `forwarded` headers are believed (a
    /// load balancer in front of Skygate); from anyone else they are
    /// stripped.
    pub trusted_proxies: Vec<Cidr>,
    /// Headers only a trusted hop may set (e.g. an auth proxy's
    /// `x-authenticated-user`): stripped from every client request.
    pub identity_headers: Vec<http::HeaderName>,
    /// Trusted JWT issuers.
    pub jwt: Vec<JwtIssuer>,
    /// How Skygate signs the caller's identity for backends that ask for it.
    pub identity_token: Option<IdentityToken>,
    /// Client certificates: the CAs they must chain to, and whom they name.
    pub mtls: Option<Mtls>,
}

/// The HTTPS listener (`server.tls`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    pub listen: std::net::SocketAddr,
    /// The certificate chain, DER, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// The private key's PEM (checked at load; never logged).
    pub key_pem: crate::Secret,
}

/// Client certificates (`auth.mtls`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mtls {
    /// DER certificates of the CAs a client certificate must chain to.
    pub roots: Vec<Vec<u8>>,
    /// No certificate, no handshake.
    pub required: bool,
    pub identity: MtlsIdentity,
    /// Known identities' tenant, groups and attributes.
    pub principals: std::collections::BTreeMap<String, std::sync::Arc<Principal>>,
}

/// Which name of a client certificate identifies the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsIdentity {
    /// The first URI SAN (a SPIFFE ID such as `spiffe://corp/ns/team/sa/app`).
    Uri,
    /// The first DNS SAN.
    Dns,
    /// The subject's distinguished name (RFC 4514, e.g. `CN=app,O=corp`).
    Subject,
}

/// Signing the caller's identity into a short-lived JWT for backends.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityToken {
    /// The signing key, PKCS#8 PEM (read and checked at load; never logged).
    pub key_pem: crate::Secret,
    pub algorithm: IdentityAlg,
    pub issuer: String,
    pub kid: String,
    pub ttl: Duration,
    /// The header the token goes in.
    pub header: http::HeaderName,
}

/// Identity-token algorithms: fast to sign (each is signed per backend and
/// caller, then cached until shortly before it expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityAlg {
    ES256,
    EdDSA,
}

/// How a client may prove who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    /// A client certificate on the TLS listener.
    Mtls,
}

impl AuthMethod {
    pub const ALLOWED: &'static str = "api_key, jwt, mtls";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "api_key" => Some(Self::ApiKey),
            "jwt" => Some(Self::Jwt),
            "mtls" => Some(Self::Mtls),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Jwt => "jwt",
            Self::Mtls => "mtls",
        }
    }
}

/// A JWT signing algorithm Skygate accepts: asymmetric only, so a public
/// key can never be used as an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlg {
    pub const ALLOWED: &'static str =
        "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file (read again on reload, and on an unknown `kid`).
    File(std::path::PathBuf),
    /// An HTTPS URL (`http://` only for loopback).
    Url(String),
}

/// Which claims become the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    /// The principal's id (default `sub`).
    pub subject: String,
    pub tenant: Option<String>,
    /// A string array (or one string) of groups.
    pub groups: Option<String>,
    /// Claims copied into the principal's attributes (string values).
    pub attributes: Vec<String>,
}

/// A trusted JWT issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIssuer {
    /// `iss` must equal this.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<JwtAlg>,
    pub jwks: JwksSource,
    /// A URL JWKS is fetched again after this long.
    pub jwks_ttl: Duration,
    /// An unknown `kid` triggers at most one refresh per this long.
    pub jwks_min_refresh: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub claims: ClaimMap,
}

/// An IP network, `10.0.0.0/8` or `2001:db8::/32` (a bare address is /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not an IP network: use e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8");
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        // An IPv4-mapped IPv6 range (::ffff:10.0.0.0/104) is an IPv4 range.
        if let (std::net::IpAddr::V6(v6), true) = (addr, prefix >= 96) {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Ok(Self {
                    addr: v4.into(),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let bits = |a: IpAddr| -> (u128, u8) {
            match a.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let (net, net_len) = bits(self.addr);
        let (ip, ip_len) = bits(ip);
        if net_len != ip_len {
            return false;
        }
        let prefix = u32::from(self.prefix);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix.min(128))
        };
        net & mask == ip & mask
    }
}

/// A client API key, as stored: its SHA-256 (a plaintext key in the file is
/// hashed at load and never kept), and who it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub sha256: [u8; 32],
    pub principal: std::sync::Arc<Principal>,
}

/// Who is calling: an identity with the attributes policy decisions use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// The principal's id (`principal:` in the config, a JWT `sub`, ...).
    pub id: String,
    /// The JWT issuer that vouched for it (`None`: an API key of this
    /// config). Two issuers' `alice` are two principals.
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    pub groups: Vec<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// What a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Any OpenAI-compatible server.
    OpenAi,
    /// A generic serverless function endpoint: bodies pass through.
    HttpFunction,
    /// AWS Lambda's Invoke API (SigV4 service `lambda`).
    AwsLambda,
    /// A Lambda function URL (`auth: none | iam`).
    AwsLambdaUrl,
    /// Amazon Bedrock's Converse API (SigV4 service `bedrock`).
    Bedrock,
    /// A SageMaker (serverless) inference endpoint (SigV4 service `sagemaker`).
    Sagemaker,
    /// Azure OpenAI: deployment paths or the v1 API; `api-key` or Entra ID.
    AzureOpenai,
    /// Azure Functions HTTP triggers, with a function key.
    AzureFunctions,
    /// Apache OpenWhisk / IBM Cloud Functions actions.
    Openwhisk,
    /// Google Cloud Run services and Cloud Functions (2nd gen), with
    /// Google-signed ID tokens.
    GcpCloudRun,
}

impl BackendKind {
    pub const ALLOWED: &'static str = "openai, http_function, aws_lambda, aws_lambda_url, bedrock, sagemaker, azure_openai, azure_functions, openwhisk, gcp_cloud_run";

    pub const ALL: [Self; 10] = [
        Self::OpenAi,
        Self::HttpFunction,
        Self::AwsLambda,
        Self::AwsLambdaUrl,
        Self::Bedrock,
        Self::Sagemaker,
        Self::AzureOpenai,
        Self::AzureFunctions,
        Self::Openwhisk,
        Self::GcpCloudRun,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::HttpFunction => "http_function",
            Self::AwsLambda => "aws_lambda",
            Self::AwsLambdaUrl => "aws_lambda_url",
            Self::Bedrock => "bedrock",
            Self::Sagemaker => "sagemaker",
            Self::AzureOpenai => "azure_openai",
            Self::AzureFunctions => "azure_functions",
            Self::Openwhisk => "openwhisk",
            Self::GcpCloudRun => "gcp_cloud_run",
        }
    }

    /// Whether a backend of this kind can serve a route of `op`.
    pub fn serves(self, op: Operation) -> bool {
        match self {
            Self::OpenAi | Self::AzureOpenai => {
                matches!(op, Operation::ChatCompletions | Operation::Embeddings)
            }
            Self::HttpFunction | Self::AzureFunctions => op == Operation::Function,
            // Functions answer whatever their event asks; a function URL, an
            // endpoint's container or an action may speak OpenAI or not.
            Self::AwsLambda
            | Self::AwsLambdaUrl
            | Self::Sagemaker
            | Self::Openwhisk
            | Self::GcpCloudRun => true,
            // Converse is chat only.
            Self::Bedrock => op == Operation::ChatCompletions,
        }
    }

    /// The kinds signed with AWS SigV4 (they take `region` and AWS credentials).
    pub fn is_aws(self) -> bool {
        matches!(
            self,
            Self::AwsLambda | Self::AwsLambdaUrl | Self::Bedrock | Self::Sagemaker
        )
    }
}

/// AWS credentials written in the config (usually as `${ENV}`); without
/// them, an AWS backend uses the standard chain.
#[derive(Clone, PartialEq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What an AWS backend signs with.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConf {
    /// The signing region (`region:`).
    pub region: String,
    /// From the config; `None`: the process's credential chain.
    pub keys: Option<AwsKeys>,
}

/// How a Lambda function's event and answer are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaPayload {
    /// The client's body is the event; the function's payload is the answer.
    Raw,
    /// API Gateway / function URL event format 2.0 in, `{statusCode,
    /// headers, body, isBase64Encoded}` out.
    HttpEvent,
}

/// `aws_lambda` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaConf {
    /// A function name, or its (partial or full) ARN.
    pub function: String,
    /// A version or alias (`?Qualifier=`).
    pub qualifier: Option<String>,
    pub payload: LambdaPayload,
    /// Streamed chat requests use InvokeWithResponseStream (the function
    /// must be configured for response streaming).
    pub response_stream: bool,
    /// Ask for the log tail (`X-Amz-Log-Type: Tail`) to see cold starts.
    pub log_tail: bool,
}

/// What a kind needs beyond its URL and credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum Platform {
    /// `openai`, `http_function`.
    Plain,
    Lambda(LambdaConf),
    /// `aws_lambda_url`: SigV4-signed (`auth: iam`) or not (`auth: none`).
    LambdaUrl {
        iam: bool,
    },
    /// `bedrock`: the model id every call names (e.g. `amazon.nova-micro-v1:0`).
    Bedrock {
        model_id: String,
    },
    Sagemaker(SagemakerConf),
    AzureOpenai(AzureOpenaiConf),
    /// `azure_functions`: the function key goes in `code=` instead of
    /// `x-functions-key` when `key_in_query`.
    AzureFunctions {
        key_in_query: bool,
    },
    Openwhisk(OpenwhiskConf),
    GcpCloudRun(CloudRunConf),
}

/// `gcp_cloud_run` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudRunConf {
    /// The ID token's audience: by default the endpoint's origin (the
    /// service URL Cloud Run checks).
    pub audience: String,
    /// A service-account key file (read when a token is fetched, so it can
    /// be replaced); `None`: `GOOGLE_APPLICATION_CREDENTIALS`, else the
    /// metadata server.
    pub credentials_file: Option<std::path::PathBuf>,
}

/// `sagemaker` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SagemakerConf {
    pub endpoint_name: String,
    /// `X-Amzn-SageMaker-Target-Variant`.
    pub target_variant: Option<String>,
    /// Streamed requests use InvokeEndpointWithResponseStream.
    pub response_stream: bool,
}

/// `azure_openai` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureOpenaiConf {
    /// `?api-version=` of deployment paths.
    pub api_version: String,
    /// Model name → deployment; a model not listed is its own deployment.
    pub deployments: std::collections::BTreeMap<String, String>,
    /// The v1 API (`/openai/v1/...`, the deployment in the body's `model`)
    /// instead of deployment paths.
    pub v1: bool,
    /// Microsoft Entra ID bearer tokens instead of `api-key`.
    pub entra: bool,
}

/// `openwhisk` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenwhiskConf {
    pub namespace: String,
    /// `action` or `package/action`.
    pub action: String,
    /// A web action (`/api/v1/web/...`): raw HTTP, no basic auth.
    pub web: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    pub kind: BackendKind,
    pub url: Endpoint,
    pub api_key: Option<Secret>,
    /// Header the key goes in; `authorization` sends `Bearer <key>`.
    pub api_key_header: http::HeaderName,
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub timeouts: Timeouts,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// DER certificates of the CAs this backend's TLS certificate must chain
    /// to; `None` uses the system's roots.
    pub tls_ca: Option<Vec<Vec<u8>>>,
    pub breaker: BreakerConfig,
    pub limits: BackendLimits,
    /// Active health check; `None` leaves health to the breaker alone.
    pub health_check: Option<HealthCheck>,
    /// Send the caller's identity as a signed JWT (`auth.identity_token`),
    /// with this audience.
    pub identity_audience: Option<String>,
    /// The data classification of what this backend may receive (for
    /// policies, e.g. `public`, `internal`, `restricted`).
    pub classification: Option<String>,
    /// The gateway may add `stream_options` to chat streams it sends here
    /// (`backends.NAME.stream_usage`, default true).
    pub stream_usage: bool,
    /// The AWS kinds' region and credentials.
    pub aws: Option<AwsConf>,
    /// Kind-specific settings.
    pub platform: Platform,
    /// Prewarm pings and the warmth model.
    pub prewarm: Prewarm,
}

/// How a backend is kept warm (`backends.NAME.prewarm`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prewarm {
    pub mode: PrewarmMode,
    /// The platform's idle timeout: an instance idle this long is
    /// reclaimed. `None` (the default for kinds that do not scale to zero)
    /// keeps no warmth model: the backend is never taken for cold.
    pub idle_timeout: Option<Duration>,
    /// A cold start's expected length (refined by what is observed).
    pub cold_start: Duration,
    /// `fixed`: time between ping rounds (default: 90% of `idle_timeout`).
    pub interval: Duration,
    /// `fixed`: instances warmed by each round; `adaptive`: the most it
    /// keeps warm at once.
    pub concurrency: u32,
    /// How long each ping should hold its instance (sent as
    /// `x-skygate-prewarm-hold-ms`), so that k concurrent pings reach k
    /// instances.
    pub hold: Duration,
    /// Requests one instance serves at once (1 on Lambda).
    pub instance_concurrency: u32,
    /// Instances kept warm at all times (within the schedule).
    pub min_warm: u32,
    /// `adaptive`: pings worth spending to avoid one cold start.
    pub pings_per_cold_start: f64,
    /// When pings may be sent; `None`: always.
    pub schedule: Option<Schedule>,
    /// Most pings a day (in the schedule's time zone, else UTC); `None`: no cap.
    pub daily_budget: Option<u32>,
    /// A response header that says whether the answer cold-started (e.g.
    /// the simulator's `x-sim-cold-start: true`).
    pub cold_header: Option<http::HeaderName>,
    /// The ping's own request, for kinds that take one (`http_function`,
    /// `openai`): a path and a body; `None` sends the kind's minimal call.
    pub ping_path: Option<String>,
    pub ping_body: Option<String>,
}

impl Default for Prewarm {
    /// Off, with no warmth model.
    fn default() -> Self {
        Self {
            mode: PrewarmMode::Off,
            idle_timeout: None,
            cold_start: Duration::from_secs(10),
            interval: Duration::from_secs(540),
            concurrency: 1,
            hold: Duration::from_millis(75),
            instance_concurrency: 1,
            min_warm: 0,
            pings_per_cold_start: 20.0,
            schedule: None,
            daily_budget: None,
            cold_header: None,
            ping_path: None,
            ping_body: None,
        }
    }
}

impl Prewarm {
    /// Whether the backend has a warmth model (a known idle timeout).
    pub fn tracked(&self) -> bool {
        self.idle_timeout.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrewarmMode {
    Off,
    Fixed,
    Adaptive,
}

impl PrewarmMode {
    pub const ALL: [Self; 3] = [Self::Off, Self::Fixed, Self::Adaptive];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Fixed => "fixed",
            Self::Adaptive => "adaptive",
        }
    }
}

/// Windows of the week in one time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// As written (`UTC`, `Europe/Berlin`, `+02:00`).
    pub timezone_name: String,
    pub timezone: jiff::tz::TimeZone,
    pub windows: Vec<Window>,
}

/// Days (bit 0 = Monday) and minutes of the day `[from, to)`; `to` below
/// `from` runs past midnight into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: u8,
    pub from_min: u16,
    pub to_min: u16,
}

impl Schedule {
    /// Windows in UTC.
    pub fn utc(windows: Vec<Window>) -> Self {
        Self {
            timezone_name: "UTC".into(),
            timezone: jiff::tz::TimeZone::UTC,
            windows,
        }
    }

    /// Whether `unix_ms` falls inside a window.
    pub fn contains(&self, unix_ms: u64) -> bool {
        let (dow, minute) = self.local(unix_ms);
        self.windows.iter().any(|w| w.contains(dow, minute))
    }

    /// When the state (inside or outside) next changes after `unix_ms`, to
    /// the minute; `None` if never (a week passes unchanged).
    pub fn next_change(&self, unix_ms: u64) -> Option<u64> {
        let inside = self.contains(unix_ms);
        let start = unix_ms - unix_ms % 60_000 + 60_000;
        (0..7 * 24 * 60)
            .map(|m| start + m * 60_000)
            .find(|&t| self.contains(t) != inside)
    }

    /// Day of week (0 = Monday) and minute of the day, in the zone.
    fn local(&self, unix_ms: u64) -> (u8, u16) {
        let ts = jiff::Timestamp::from_millisecond(unix_ms as i64).unwrap_or_default();
        let dt = self.timezone.to_datetime(ts);
        let dow = dt.weekday().to_monday_zero_offset() as u8;
        (dow, dt.hour() as u16 * 60 + dt.minute() as u16)
    }

    /// The local day number of `unix_ms` (for daily budgets).
    pub fn day(&self, unix_ms: u64) -> i64 {
        let ts = jiff::Timestamp::from_millisecond(unix_ms as i64).unwrap_or_default();
        let d = self.timezone.to_datetime(ts).date();
        i64::from(d.year()) * 1000 + i64::from(d.day_of_year())
    }
}

impl Window {
    fn contains(&self, dow: u8, minute: u16) -> bool {
        let today = self.days & (1 << dow) != 0;
        if self.from_min < self.to_min {
            return today && minute >= self.from_min && minute < self.to_min;
        }
        // Past midnight: the evening part belongs to `days`, the morning
        // part to the day after.
        let yesterday = self.days & (1 << ((dow + 6) % 7)) != 0;
        (today && minute >= self.from_min) || (yesterday && minute < self.to_min)
    }
}

/// When a backend's circuit opens, how long it stays open, and how long a
/// 429 keeps it aside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// Opens after this many failures in a row (0: never on this rule).
    pub consecutive_failures: u32,
    /// Opens when failures / requests over `window` reach this (0: never on
    /// this rule), once `min_requests` were seen in the window.
    pub failure_ratio: f64,
    pub window: Duration,
    pub min_requests: u32,
    /// Open → half-open after this long.
    pub cooldown: Duration,
    /// Trial requests let through at once while half-open.
    pub half_open_trials: u32,
    /// A backend's `Retry-After` on a 429 is honoured up to this long.
    pub max_throttle: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests: 20,
            cooldown: Duration::from_secs(10),
            half_open_trials: 1,
            max_throttle: Duration::from_secs(60),
        }
    }
}

/// The bulkhead: a cap on one backend's concurrent requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendLimits {
    /// 0: no cap.
    pub max_in_flight: u32,
    /// When every candidate is full, wait this long for a free slot before
    /// answering 503 `overloaded` (0: answer at once).
    pub queue_timeout: Duration,
}

/// An active health probe, run in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub method: http::Method,
    /// Absolute path on the backend's host (with the base path when it
    /// defaults: `{url}/models` for `openai`).
    pub path: String,
    pub expect_status: Vec<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a backend unhealthy.
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    /// The defaults of every field but `path`.
    pub fn defaults() -> Self {
        Self {
            method: http::Method::GET,
            path: String::new(),
            expect_status: vec![200],
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (may be empty).
    pub base_path: String,
}

impl Endpoint {
    /// `host:port`, as an `Host` header value or connect address.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            // By hand: built per request for the `host` header.
            let mut s = String::with_capacity(self.host.len() + 6);
            s.push_str(&self.host);
            s.push(':');
            crate::push_num(&mut s, u64::from(self.port));
            s
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// The API operation a route serves, settled from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Embeddings,
    /// A generic serverless function: any body, no model required.
    Function,
}

impl Operation {
    /// The operation of a client path, when it is one of the OpenAI API's.
    pub fn of_openai_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/embeddings" => Some(Self::Embeddings),
            _ => None,
        }
    }

    /// Path of the operation under an OpenAI-compatible base URL.
    pub fn upstream_suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Embeddings => "/embeddings",
            Self::Function => "",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Embeddings => "embeddings",
            Self::Function => "function",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub operation: Operation,
    /// Models this route serves (LLM routes); empty for function routes.
    pub models: Vec<String>,
    /// Each backend at most once; `fallback` entries come last, each in a
    /// priority group of its own.
    pub targets: Vec<Target>,
    pub max_body: usize,
    pub strategy: Strategy,
    pub retries: Retries,
    /// The authentication methods this route accepts; `None`: any configured.
    pub auth: Option<Vec<AuthMethod>>,
    /// Output tokens a token limit reserves when the request sets no
    /// `max_tokens` (settled to the real usage afterwards).
    pub output_tokens_estimate: u64,
    /// Response caching; `None`: off.
    pub cache: Option<RouteCache>,
    /// Hedging: when the chosen target is likely cold, a warm target of the
    /// route also gets the request after this delay; the first answer wins.
    pub hedge_after: Option<Duration>,
    /// When no target can take the request now but one will (throttled,
    /// scaling, circuit open with a known end), hold it this long, this many
    /// at once, instead of failing; `None`: fail at once.
    pub hold: Option<Hold>,
}

/// A route's bounded queue for requests that wait for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub timeout: Duration,
    pub max_queued: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Index into [`Config::backends`].
    pub backend: usize,
    pub weight: u32,
    /// Group: lower first; a group is used only when no target of every
    /// earlier group is available.
    pub priority: u32,
}

/// How a target is chosen within a priority group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// At random, by weight.
    Weighted,
    /// The fewest requests in flight per unit of weight.
    LeastInflight,
    /// Power of two choices over a peak-EWMA of time to first byte.
    Latency,
}

impl Strategy {
    pub const ALLOWED: &'static str = "weighted, least_inflight, latency";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "weighted" => Some(Self::Weighted),
            "least_inflight" => Some(Self::LeastInflight),
            "latency" => Some(Self::Latency),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weighted => "weighted",
            Self::LeastInflight => "least_inflight",
            Self::Latency => "latency",
        }
    }
}

/// Retries of a failed attempt on another target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retries {
    /// Attempts in all, the first included (1: no retries).
    pub max_attempts: u32,
    /// Backoff before retry n is random in [0, min(max_backoff, backoff * 2^(n-1))].
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub on: RetryOn,
    pub budget: RetryBudget,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            on: RetryOn::ALL,
            budget: RetryBudget::default(),
        }
    }
}

/// Which failures (before the first byte went to the client) are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    pub connect: bool,
    pub timeout: bool,
    pub server_error: bool,
    pub throttled: bool,
}

impl RetryOn {
    pub const ALL: Self = Self {
        connect: true,
        timeout: true,
        server_error: true,
        throttled: true,
    };
    pub const NONE: Self = Self {
        connect: false,
        timeout: false,
        server_error: false,
        throttled: false,
    };
}

/// Retries may add at most `ratio` of the route's requests over `window`,
/// plus `min_per_second` so that a quiet route can still retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub window: Duration,
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 10,
        }
    }
}

/// Most weight one target may have (in the config and at run time).
pub const MAX_WEIGHT: u32 = 10_000;

/// Default bound on a request body: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

/// `telemetry:`: traces.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// `None`: no spans are made.
    pub otlp: Option<Otlp>,
    /// The share of new traces recorded (parent-based for continued ones).
    pub sampling_ratio: f64,
    /// Continue a client's `traceparent`.
    pub continue_client_trace: bool,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// `http://host:port`, no trailing slash.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Bound on one export.
    pub timeout: Duration,
    /// Sent with every export (names lowercase).
    pub headers: Vec<(String, Secret)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// HTTP/protobuf, `POST {endpoint}/v1/traces`.
    Http,
    Grpc,
}

/// `cache:`: the response cache's tiers, shared by every route that caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConf {
    /// Bound on the in-memory tier, in bytes (entries and their keys).
    pub memory: u64,
    /// Entries are kept in the `state` Redis too, shared by every replica.
    pub redis: bool,
    /// Entries larger than this are compressed (zstd) in Redis.
    pub compress_above: u64,
    /// How long identical misses wait for the first one's answer.
    pub wait: Duration,
}

impl Default for CacheConf {
    fn default() -> Self {
        Self {
            memory: 128 << 20,
            redis: false,
            compress_above: 1024,
            wait: Duration::from_secs(30),
        }
    }
}

/// `routes.NAME.cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    pub ttl: Duration,
    /// Larger answers are not stored.
    pub max_entry_bytes: usize,
    pub scope: CacheScope,
    /// Hits count against request limits (tokens are never charged).
    pub charge_hits: bool,
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_entry_bytes: 1 << 20,
            scope: CacheScope::Tenant,
            charge_hits: true,
        }
    }
}

/// Who shares a route's cache entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Callers of one tenant (a caller without a tenant: only itself).
    Tenant,
    /// Each caller alone.
    Principal,
    /// Every caller of the route.
    Global,
}

impl CacheScope {
    pub const ALLOWED: &'static str = "tenant, principal, global";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Self::Tenant),
            "principal" => Some(Self::Principal),
            "global" => Some(Self::Global),
            _ => None,
        }
    }
}

/// `state:`: where shared run-time state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConf {
    /// `None`: everything in memory.
    pub redis: Option<RedisState>,
    /// Gateway replicas sharing the limits (`fail_open`'s local share).
    pub replicas: u32,
}

impl Default for StateConf {
    fn default() -> Self {
        Self {
            redis: None,
            replicas: 1,
        }
    }
}

/// A Redis node or cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisState {
    pub nodes: Vec<String>,
    pub cluster: bool,
    pub timeout: std::time::Duration,
    pub prefix: String,
}

/// One rate limit or quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub name: String,
    pub matcher: LimitMatch,
    /// What one counter is kept per; empty never (default `[principal]`).
    pub per: Vec<Per>,
    /// Each unit is a limit of its own; all must pass.
    pub rates: Vec<(RateUnit, u64)>,
    /// Requests in flight at once, per partition.
    pub concurrency: Option<u32>,
    pub store: LimitStore,
    pub on_failure: FailurePolicy,
}

/// Which requests a limit applies to (an empty list matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitMatch {
    /// Indices into [`Config::routes`].
    pub routes: Vec<usize>,
    pub models: Vec<String>,
    pub principals: Vec<String>,
    pub tenants: Vec<String>,
    pub groups: Vec<String>,
}

/// A dimension a limit keeps separate counters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The authenticated caller (the client's address when there is none).
    Principal,
    Tenant,
    Route,
    Model,
    ClientIp,
    /// One counter for everyone the limit matches.
    Global,
}

impl Per {
    pub const ALLOWED: &'static str = "principal (or key), tenant, route, model, client_ip, global";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "principal" | "key" => Self::Principal,
            "tenant" => Self::Tenant,
            "route" => Self::Route,
            "model" => Self::Model,
            "client_ip" => Self::ClientIp,
            "global" => Self::Global,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Tenant => "tenant",
            Self::Route => "route",
            Self::Model => "model",
            Self::ClientIp => "client_ip",
            Self::Global => "global",
        }
    }
}

/// A limit's unit and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    RequestsPerSecond,
    RequestsPerMinute,
    RequestsPerHour,
    TokensPerMinute,
    TokensPerDay,
}

impl RateUnit {
    pub fn period(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            Self::RequestsPerSecond => 1,
            Self::RequestsPerMinute | Self::TokensPerMinute => 60,
            Self::RequestsPerHour => 3600,
            Self::TokensPerDay => 86_400,
        })
    }

    pub fn tokens(self) -> bool {
        matches!(self, Self::TokensPerMinute | Self::TokensPerDay)
    }

    /// As written in the config (and in keys, metrics and errors).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestsPerSecond => "requests_per_second",
            Self::RequestsPerMinute => "requests_per_minute",
            Self::RequestsPerHour => "requests_per_hour",
            Self::TokensPerMinute => "tokens_per_minute",
            Self::TokensPerDay => "tokens_per_day",
        }
    }
}

/// Where a limit's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStore {
    Local,
    /// Shared by every replica through `state.redis`.
    Redis,
}

/// What a Redis-backed limit does while Redis is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Limit locally, at `limit ÷ state.replicas`.
    Open,
    /// Refuse (503).
    Closed,
}
