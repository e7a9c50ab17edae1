//! A simulated serverless model backend: OpenAI-compatible chat (plain and
//! streamed), embeddings and a generic function endpoint, on a modelled
//! serverless platform (cold starts, concurrency, instance cap, throttling,
//! faults). Used by `skygate sim`, the demo, the tests and the benchmarks.
//!
//! Ground truth for tests is in response headers (`x-sim-cold-start`,
//! `x-sim-instance`); Skygate itself must never depend on them.
//!
//! Control endpoints (the tests use them while it runs):
//! - `GET /_sim/config`, `POST /_sim/config` (a JSON object with any
//!   [`SimSettings`] fields) to change behaviour and faults at run time;
//! - `GET /_sim/stats`: connections accepted, requests, cold starts,
//!   throttled, errors, instances;
//! - `GET /_sim/requests`: the last requests received (method, path, headers,
//!   body size, model), `DELETE /_sim/requests` to clear them.

mod h2s;
mod http1;
pub mod model;
pub mod platforms;
mod shape;
pub mod workloads;

use bytes::BytesMut;
use http1::{Sink, H1};
use model::{Placement, Pool, SimSettings};
pub use platforms::Platform;
use serde_json::json;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

const RECENT: usize = 256;

/// `skygate sim` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Name reported in responses and headers.
    #[arg(long, default_value = "sim")]
    pub name: String,
    /// Cold-start delay of a new instance, ms.
    #[arg(long, default_value_t = 0)]
    pub cold_start_ms: u64,
    /// Idle time after which an instance is reclaimed, ms.
    #[arg(long, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Concurrent requests per instance.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Maximum instances; beyond their capacity requests get 429.
    #[arg(long, default_value_t = 16)]
    pub max_instances: u32,
    /// Delay before a new instance starts, ms.
    #[arg(long, default_value_t = 0)]
    pub scale_up_delay_ms: u64,
    /// Processing time of a non-streamed answer, ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Tokens per completion.
    #[arg(long, default_value_t = 16)]
    pub tokens: u32,
    /// Delay between streamed tokens, ms.
    #[arg(long, default_value_t = 0)]
    pub token_delay_ms: u64,
    /// Probability of a 500.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub error_rate: f64,
    /// Probability of never answering.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub hang_rate: f64,
    /// Probability of cutting a stream halfway.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub cut_rate: f64,
    /// Probability of a 429 with `retry-after: --retry-after-s`.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub throttle_rate: f64,
    /// Seconds in the `retry-after` of --throttle-rate 429s.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key); the
    /// port still answers plain HTTP too, for the control endpoints.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With TLS: offer only HTTP/1.1 by ALPN (default: HTTP/2 and HTTP/1.1).
    #[arg(long)]
    pub http1_only: bool,
    /// The API it speaks: the OpenAI API, or a platform's own (checking
    /// its auth and answering in its format).
    #[arg(long, value_enum, default_value = "openai")]
    pub platform: Platform,
    /// AWS platforms: the access key whose SigV4 signatures are accepted
    /// (with --aws-secret-access-key; default: the simulator's own pair).
    #[arg(long, requires = "aws_secret_access_key")]
    pub aws_access_key_id: Option<String>,
    #[arg(long, requires = "aws_access_key_id")]
    pub aws_secret_access_key: Option<String>,
    /// Keys issued by the simulated STS (and Entra ID tokens) expire after
    /// this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub sts_lifetime_s: u64,
    /// Azure and OpenWhisk platforms: a key to accept (repeatable; default
    /// `sim-platform-key` and, for OpenWhisk, `sim-uuid:sim-platform-key`).
    #[arg(long = "platform-key")]
    pub platform_keys: Vec<String>,
    /// `aws-lambda-url`: the function URL's auth type, `iam` or `none`.
    #[arg(long, default_value = "iam")]
    pub url_auth: String,
    /// `gcp-cloud-run`: a service-account key file whose signed token
    /// requests the simulated Google token endpoint (`POST /token`) accepts.
    #[arg(long)]
    pub gcp_sa_key: Option<PathBuf>,
    /// `gcp-cloud-run`: the ID-token audience the service accepts (default:
    /// its own URL, `http://{listen address}`).
    #[arg(long)]
    pub gcp_audience: Option<String>,
}

impl SimArgs {
    pub fn settings(&self) -> SimSettings {
        SimSettings {
            cold_start_ms: self.cold_start_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            concurrency: self.concurrency,
            max_instances: self.max_instances,
            scale_up_delay_ms: self.scale_up_delay_ms,
            latency_ms: self.latency_ms,
            tokens: self.tokens,
            token_delay_ms: self.token_delay_ms,
            error_rate: self.error_rate,
            hang_rate: self.hang_rate,
            cut_rate: self.cut_rate,
            throttle_rate: self.throttle_rate,
            retry_after_s: self.retry_after_s,
            aws_keys: match (&self.aws_access_key_id, &self.aws_secret_access_key) {
                (Some(id), Some(secret)) => [(id.clone(), secret.clone())].into_iter().collect(),
                _ => SimSettings::default().aws_keys,
            },
            sts_lifetime_s: self.sts_lifetime_s,
            platform_keys: if self.platform_keys.is_empty() {
                SimSettings::default().platform_keys
            } else {
                self.platform_keys.iter().cloned().collect()
            },
            url_auth: self.url_auth.clone(),
            gcp_sa_key: self.gcp_sa_key.clone(),
            gcp_audience: self.gcp_audience.clone(),
            ..SimSettings::default()
        }
    }
}

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    cold_starts: AtomicU64,
    /// Requests being answered now, and the most at once so far.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
    /// Platform calls refused for their credentials.
    auth_failures: AtomicU64,
    /// Keys issued by the simulated STS.
    sts_calls: AtomicU64,
    /// Prewarm pings (`x-skygate-prewarm`), and those that cold-started.
    prewarm_pings: AtomicU64,
    prewarm_cold: AtomicU64,
}

/// One simulated backend.
pub struct Sim {
    name: String,
    settings: Mutex<SimSettings>,
    pool: Mutex<Pool>,
    stats: Stats,
    recent: Mutex<VecDeque<serde_json::Value>>,
    tls: Option<TlsAcceptor>,
    platform: Platform,
    /// Keys the simulated STS issued: id → (secret, valid until).
    issued: Mutex<std::collections::HashMap<String, (String, SystemTime)>>,
    /// The simulated Google's ID-token signing key (made at start).
    gcp: Option<platforms::GcpSim>,
    /// `http://{listen address}`, once serving: a Cloud Run service's URL.
    self_url: std::sync::OnceLock<String>,
}

/// A prewarm ping's hold (`x-skygate-prewarm-hold-ms`, at most 60 s), if
/// the request is one.
fn prewarm_hold(req: &http1::Request) -> Option<Duration> {
    let header = |n: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    header("x-skygate-prewarm")?;
    let ms = header("x-skygate-prewarm-hold-ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(75);
    Some(Duration::from_millis(ms.min(60_000)))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (every critical section is a few field updates), so poison is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    pub fn new(name: impl Into<String>, settings: SimSettings) -> Arc<Self> {
        Self::build(name.into(), settings, None)
    }

    /// A simulator that serves HTTPS (HTTP/1.1 over TLS).
    pub fn with_tls(name: impl Into<String>, settings: SimSettings, tls: TlsAcceptor) -> Arc<Self> {
        Self::build(name.into(), settings, Some(tls))
    }

    fn build(name: String, settings: SimSettings, tls: Option<TlsAcceptor>) -> Arc<Self> {
        Arc::new(Self {
            name,
            settings: Mutex::new(settings),
            pool: Mutex::new(Pool::default()),
            stats: Stats::default(),
            recent: Mutex::new(VecDeque::new()),
            tls,
            platform: Platform::Openai,
            issued: Mutex::new(std::collections::HashMap::new()),
            gcp: platforms::GcpSim::generate(),
            self_url: std::sync::OnceLock::new(),
        })
    }

    /// The same simulator speaking `platform`.
    pub fn on_platform(self: Arc<Self>, platform: Platform) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut sim) => {
                sim.platform = platform;
                Arc::new(sim)
            }
            Err(shared) => shared,
        }
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            let _ = self.self_url.set(format!("http://{addr}"));
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let sim = self.clone();
                    match self.tls.clone() {
                        None => {
                            tokio::spawn(async move { sim.connection(stream).await });
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                // A TLS handshake starts with 0x16; anything else is
                                // plain HTTP (control endpoints, curl) on the same port.
                                let mut first = [0u8; 1];
                                if !matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16)
                                {
                                    return sim.connection(stream).await;
                                }
                                match acceptor.accept(stream).await {
                                    Ok(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                                        sim.h2_connection(tls).await
                                    }
                                    Ok(tls) => sim.connection(tls).await,
                                    Err(e) => {
                                        log::debug!("sim {}: TLS handshake failed: {e}", sim.name)
                                    }
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    log::warn!("sim {}: accept failed: {e}", self.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(self: Arc<Self>, mut stream: S) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        while let Ok(Some(req)) = http1::read_request(&mut stream, &mut buf).await {
            let close = req.close;
            match self.handle(&mut H1(&mut stream), req).await {
                Ok(true) if !close => continue,
                _ => return,
            }
        }
    }

    /// Answers one request; `Ok(false)` when the connection must close.
    async fn handle<K: Sink>(&self, stream: &mut K, req: http1::Request) -> std::io::Result<bool> {
        if let Some(ctl) = req.path.strip_prefix("/_sim/") {
            let (status, body) = self.control(&req.method, ctl, &req.body);
            stream
                .full(
                    status,
                    &[("content-type", "application/json".into())],
                    body.to_string().as_bytes(),
                )
                .await?;
            return Ok(true);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let json: Option<serde_json::Value> = serde_json::from_slice(&req.body).ok();
        self.record(&req, json.as_ref());
        let settings = lock(&self.settings).clone();
        if req.method == "POST"
            && req.path == "/"
            && memchr::memmem::find(&req.body, b"Action=AssumeRoleWithWebIdentity").is_some()
        {
            let a = self.sts(&req, &settings);
            stream.full(a.status, &a.headers, &a.body).await?;
            return Ok(true);
        }
        if let Some(a) = self.gcp_identity(&req, &settings) {
            stream.full(a.status, &a.headers, &a.body).await?;
            return Ok(true);
        }
        if req.method == "POST" && req.path.ends_with("/oauth2/v2.0/token") {
            let a = self.entra_token(&req, &settings);
            stream.full(a.status, &a.headers, &a.body).await?;
            return Ok(true);
        }
        if let Some(a) = self.check_auth(&req, &settings) {
            stream.full(a.status, &a.headers, &a.body).await?;
            return Ok(true);
        }
        let placement = lock(&self.pool).place(&settings, Instant::now());
        let Placement::Run { id, wait, cold } = placement else {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            let a = self.throttled(&settings);
            stream.full(a.status, &a.headers, &a.body).await?;
            return Ok(true);
        };
        if cold {
            self.stats.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Some(hold) = prewarm_hold(&req) {
            // A prewarm ping holds its instance a moment (so concurrent pings
            // reach distinct instances), then is answered like any request
            // of the platform's (as a real platform would).
            self.stats.prewarm_pings.fetch_add(1, Ordering::Relaxed);
            if cold {
                self.stats.prewarm_cold.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(hold).await;
        }
        let now_in = self.stats.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.stats
            .peak_in_flight
            .fetch_max(now_in, Ordering::AcqRel);
        let result = self.answer(stream, &req, json, &settings, id, cold).await;
        self.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
        lock(&self.pool).release(id, Instant::now());
        result
    }

    async fn answer<K: Sink>(
        &self,
        stream: &mut K,
        req: &http1::Request,
        json: Option<serde_json::Value>,
        s: &SimSettings,
        instance: u64,
        cold: bool,
    ) -> std::io::Result<bool> {
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("x-sim-backend", self.name.clone()),
            ("x-sim-instance", format!("{}-{instance}", self.name)),
            ("x-sim-cold-start", cold.to_string()),
        ];
        if rand::random::<f64>() < s.hang_rate {
            // Never answer; the connection stays open until the client gives up.
            std::future::pending::<()>().await;
        }
        if !self.platform.answers_openai() {
            if rand::random::<f64>() < s.throttle_rate {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                let a = self.throttled(s);
                stream.full(a.status, &a.headers, &a.body).await?;
                return Ok(true);
            }
            return self.platform_answer(stream, req, s, instance, cold).await;
        }
        if self.platform == Platform::AzureOpenai && rand::random::<f64>() < s.throttle_rate {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            let a = self.throttled(s);
            stream.full(a.status, &a.headers, &a.body).await?;
            return Ok(true);
        }
        if rand::random::<f64>() < s.error_rate {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let body = json!({"error": {"message": "simulated backend failure", "type": "server_error", "code": "internal"}});
            stream
                .full(500, &headers, body.to_string().as_bytes())
                .await?;
            return Ok(true);
        }
        if rand::random::<f64>() < s.throttle_rate {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            let body = json!({"error": {"message": "simulated throttling", "type": "rate_limit_error", "code": "throttled"}});
            let mut h = headers.clone();
            h.push(("retry-after", s.retry_after_s.to_string()));
            stream.full(429, &h, body.to_string().as_bytes()).await?;
            return Ok(true);
        }
        let path = req.path.split('?').next().unwrap_or("");
        let (status, body) = match (req.method.as_str(), path) {
            ("POST", p) if p.ends_with("/chat/completions") => {
                let Some(body) = json.as_ref() else {
                    return self.bad_request(stream, &headers, "body is not JSON").await;
                };
                let stream_mode = body
                    .get("stream")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let n = body
                    .get("max_tokens")
                    .or_else(|| body.get("max_completion_tokens"))
                    .and_then(|v| v.as_u64())
                    .map_or(s.tokens, |m| (m as u32).min(s.tokens));
                let model = body
                    .get("model")
                    .and_then(|v| v.as_str())
                    .unwrap_or("sim")
                    .to_string();
                let c = Completion {
                    model: &model,
                    tokens: n,
                    prompt_tokens: (req.body.len() / 4).max(1) as u64,
                    include_usage: body
                        .pointer("/stream_options/include_usage")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false),
                    shape: shape::Shape::of(body),
                };
                if stream_mode {
                    return self.stream_chat(stream, headers, s, &c).await;
                }
                if s.latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(s.latency_ms)).await;
                }
                (200, chat_response(&self.name, &c))
            }
            ("POST", p) if p.ends_with("/embeddings") => {
                let Some(body) = json.as_ref() else {
                    return self.bad_request(stream, &headers, "body is not JSON").await;
                };
                if s.latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(s.latency_ms)).await;
                }
                (200, embeddings_response(body, s.embedding_dim))
            }
            ("GET", p) if p.ends_with("/models") => (
                200,
                json!({"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": self.name}]}),
            ),
            (_, p) => {
                // The generic function endpoint: anything else is a function call.
                if s.latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(s.latency_ms)).await;
                }
                match workloads::answer(p, &req.body) {
                    Some(Ok(v)) => (200, v),
                    Some(Err(why)) => {
                        return self.bad_request(stream, &headers, &why).await;
                    }
                    None => {
                        let score = req
                            .body
                            .iter()
                            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64))
                            % 1000;
                        (
                            200,
                            json!({"backend": self.name, "path": p, "bytes": req.body.len(), "score": score as f64 / 1000.0}),
                        )
                    }
                }
            }
        };
        stream
            .full(status, &headers, body.to_string().as_bytes())
            .await?;
        Ok(true)
    }

    async fn bad_request<K: Sink>(
        &self,
        stream: &mut K,
        headers: &[(&str, String)],
        msg: &str,
    ) -> std::io::Result<bool> {
        let body = json!({"error": {"message": msg, "type": "invalid_request_error", "code": "bad_request"}});
        stream
            .full(400, headers, body.to_string().as_bytes())
            .await?;
        Ok(true)
    }

    async fn stream_chat<K: Sink>(
        &self,
        stream: &mut K,
        mut headers: Vec<(&str, String)>,
        s: &SimSettings,
        c: &Completion<'_>,
    ) -> std::io::Result<bool> {
        headers.retain(|(k, _)| *k != "content-type");
        headers.push(("content-type", "text/event-stream".into()));
        headers.push(("cache-control", "no-cache".into()));
        stream.stream_head(200, &headers).await?;
        let cut_at = (rand::random::<f64>() < s.cut_rate).then_some(c.tokens / 2);
        // The events as the function platforms stream them too: the first
        // delta, one piece per token, then the finish (with usage and
        // `[DONE]`); a delay before each token piece.
        let pieces = platforms::sse_chunks(c, &format!("chatcmpl-{}", rand::random::<u32>()));
        let last = pieces.len().saturating_sub(1);
        for piece in &pieces {
            let at = piece.index as usize;
            if at > 0 && at < last {
                if s.token_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(s.token_delay_ms)).await;
                }
                if cut_at == Some(piece.index - 1) {
                    // Drop the connection mid-stream, with no terminating chunk.
                    return Ok(false);
                }
            }
            stream.chunk(piece.text.as_bytes()).await?;
        }
        stream.end().await?;
        Ok(true)
    }

    fn record(&self, req: &http1::Request, json: Option<&serde_json::Value>) {
        let entry = json!({
            "method": req.method,
            "path": req.path,
            "headers": req.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "body_bytes": req.body.len(),
            // Small bodies whole (tests check what a platform received).
            "body_b64": (req.body.len() <= 8192).then(|| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(&req.body)
            }),
            "version": req.version,
            "model": json.and_then(|j| j.get("model")).cloned(),
        });
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    fn control(&self, method: &str, what: &str, body: &[u8]) -> (u16, serde_json::Value) {
        match (method, what) {
            ("GET", "config") => (200, json!(*lock(&self.settings))),
            ("POST", "config") => {
                let current = serde_json::to_value(&*lock(&self.settings)).unwrap_or_default();
                let patch: serde_json::Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return (400, json!({"error": e.to_string()})),
                };
                let mut merged = current;
                if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
                    for (k, v) in p {
                        m.insert(k.clone(), v.clone());
                    }
                }
                match serde_json::from_value::<SimSettings>(merged) {
                    Ok(s) if s.bad_probability().is_some() => (
                        400,
                        json!({"error": format!(
                            "`{}` is a probability: between 0 and 1",
                            s.bad_probability().unwrap_or_default()
                        )}),
                    ),
                    Ok(s) => {
                        *lock(&self.settings) = s.clone();
                        (200, json!(s))
                    }
                    Err(e) => (400, json!({"error": e.to_string()})),
                }
            }
            ("GET", "stats") => (
                200,
                json!({
                    "name": self.name,
                    "connections": self.stats.connections.load(Ordering::Relaxed),
                    "requests": self.stats.requests.load(Ordering::Relaxed),
                    "cold_starts": self.stats.cold_starts.load(Ordering::Relaxed),
                    "throttled": self.stats.throttled.load(Ordering::Relaxed),
                    "errors": self.stats.errors.load(Ordering::Relaxed),
                    "platform": self.platform.as_str(),
                    "auth_failures": self.stats.auth_failures.load(Ordering::Relaxed),
                    "sts_calls": self.stats.sts_calls.load(Ordering::Relaxed),
                    "prewarm_pings": self.stats.prewarm_pings.load(Ordering::Relaxed),
                    "prewarm_cold": self.stats.prewarm_cold.load(Ordering::Relaxed),
                    "in_flight": self.stats.in_flight.load(Ordering::Relaxed),
                    "peak_in_flight": self.stats.peak_in_flight.load(Ordering::Relaxed),
                    "instances": lock(&self.pool).instances(),
                }),
            ),
            ("GET", "requests") => (
                200,
                json!(lock(&self.recent).iter().cloned().collect::<Vec<_>>()),
            ),
            ("DELETE", "requests") => {
                lock(&self.recent).clear();
                (200, json!({"cleared": true}))
            }
            _ => (404, json!({"error": "unknown control endpoint"})),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token(i: u32) -> String {
    const WORDS: [&str; 8] = [
        "serverless ",
        "models ",
        "warm ",
        "up ",
        "behind ",
        "one ",
        "gateway ",
        "today ",
    ];
    WORDS[i as usize % WORDS.len()].to_string()
}

/// What one chat completion produces.
struct Completion<'a> {
    model: &'a str,
    tokens: u32,
    prompt_tokens: u64,
    /// Streams: send a usage chunk before `[DONE]`.
    include_usage: bool,
    /// `n`, a tool call, JSON content: what the request asks of the form.
    shape: shape::Shape,
}

impl Completion<'_> {
    /// Completion tokens over all choices.
    pub(crate) fn completion_tokens(&self) -> u64 {
        u64::from(self.tokens) * u64::from(self.shape.choices.max(1))
    }
}

fn chat_response(name: &str, c: &Completion<'_>) -> serde_json::Value {
    let (model, n, prompt_tokens) = (c.model, c.tokens, c.prompt_tokens);
    let content: String = (0..n).map(token).collect();
    let choices: Vec<serde_json::Value> = (0..c.shape.choices.max(1))
        .map(|i| {
            let call_id = format!("call_{}", rand::random::<u32>());
            json!({"index": i, "message": c.shape.message(content.trim_end(), &call_id),
                "finish_reason": c.shape.finish_reason()})
        })
        .collect();
    let completion = c.completion_tokens();
    json!({
        "id": format!("chatcmpl-{}", rand::random::<u32>()),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "system_fingerprint": name,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion},
    })
}

fn embeddings_response(body: &serde_json::Value, dim: u32) -> serde_json::Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        _ => vec![String::new()],
    };
    let model = body.get("model").and_then(|v| v.as_str()).unwrap_or("sim");
    // As OpenAI: `base64` is the vector's little-endian f32s, encoded (the
    // Node SDK asks for it by default and decodes whatever comes back).
    let base64 = body.get("encoding_format").and_then(|v| v.as_str()) == Some("base64");
    let tokens: usize = inputs.iter().map(|s| s.len() / 4 + 1).sum();
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut h = s.bytes().fold(1469598103934665603u64, |a, b| {
                (a ^ b as u64).wrapping_mul(1099511628211)
            });
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    h = h
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((h >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect();
            if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                return json!({"object": "embedding", "index": i, "embedding": text});
            }
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// Binds `addr` and serves `sim` on it in the current tokio runtime; returns the bound address.
pub async fn spawn(sim: Arc<Sim>, addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(sim.serve(listener));
    Ok(local)
}

/// A TLS acceptor for a PEM certificate chain and key; ALPN offers HTTP/2
/// (when `h2`) and HTTP/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path, h2: bool) -> std::io::Result<TlsAcceptor> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let cert_pem = std::fs::read(cert)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    let key_pem = std::fs::read(key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())?
        .ok_or_else(|| bad("--tls-key", &"no private key in the file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("--tls-cert/--tls-key", &e))?;
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// `skygate sim`: runs one simulator until the process is stopped.
pub fn run_cli(args: &SimArgs) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key, !args.http1_only)?),
        _ => None,
    };
    rt.block_on(async {
        let sim = match tls {
            Some(acceptor) => Sim::with_tls(args.name.clone(), args.settings(), acceptor),
            None => Sim::new(args.name.clone(), args.settings()),
        }
        .on_platform(args.platform);
        let listener = TcpListener::bind(&args.listen).await?;
        let local = listener.local_addr()?;
        println!(
            "skygate sim `{}` ({}) listening on {local}",
            args.name,
            args.platform.as_str()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = sim.serve(listener) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

/// A command-line probability: a number between 0 and 1.
fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "`{s}` is not a probability: use a number between 0 and 1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_between_0_and_1() {
        let sim = Sim::new("s", SimSettings::default());
        let (status, body) = sim.control("POST", "config", br#"{"error_rate":5}"#);
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("`error_rate` is a probability"));
        assert_eq!(lock(&sim.settings).error_rate, 0.0, "unchanged");
        let (status, _) = sim.control("POST", "config", br#"{"cut_rate":0.5}"#);
        assert_eq!(status, 200);
        assert!(probability("2").is_err());
        assert!(probability("-0.1").is_err());
        assert!(probability("NaN").is_err());
        assert_eq!(probability("0.25"), Ok(0.25));
    }

    /// `encoding_format: base64` is the same vector as floats, its
    /// little-endian f32s base64-encoded, as OpenAI answers it.
    #[test]
    fn embeddings_in_base64_are_the_floats_encoded() {
        use base64::Engine;
        let floats = embeddings_response(&json!({"model": "e", "input": ["a", "b"]}), 8);
        let b64 = embeddings_response(
            &json!({"model": "e", "input": ["a", "b"], "encoding_format": "base64"}),
            8,
        );
        for i in 0..2 {
            let text = b64["data"][i]["embedding"].as_str().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            let decoded: Vec<f64> = bytes
                .chunks(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect();
            let want: Vec<f64> = floats["data"][i]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(decoded.len(), 8);
            for (d, w) in decoded.iter().zip(&want) {
                assert!((d - w).abs() < 1e-6, "{d} {w}");
            }
        }
    }
}
