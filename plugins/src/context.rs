//! The one typed request context (Pingora's `CTX`): everything the pipeline
//! learns about a request lives here, not in header round-trips.

use std::sync::Arc;
use std::time::Instant;

use skygate_config::AuthMethod;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Shared with the config (no copy per request).
    pub principal: Arc<skygate_config::Principal>,
    pub method: AuthMethod,
}

/// Where the response came from, for `x-skygate-cache`: `bypass` when the
/// route does not cache or the request said `no-cache`/`no-store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheStatus {
    #[default]
    Bypass,
    Hit,
    Miss,
}

impl CacheStatus {
    /// As `x-skygate-cache` and the access log say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// One upstream attempt, as the access log lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Try {
    pub backend: Arc<str>,
    /// `ok`, or why it failed: `connect`, `timeout`, `5xx`, `429`, `error`.
    pub outcome: &'static str,
    /// The backend's status, when it answered.
    pub status: Option<u16>,
    /// From the attempt's start to its response header (or failure).
    pub ms: f64,
    /// When the attempt started (its span's start).
    pub started: Instant,
    /// The attempt's span id (its `traceparent` to the backend); 0 when
    /// the request is not traced.
    pub span: u64,
}

/// A request's place in a trace (`telemetry.otlp` set): W3C trace context,
/// continued from the client's `traceparent` or started here.
#[derive(Debug, Clone)]
pub struct TraceCtx {
    pub trace_id: u128,
    /// The request's own (server) span.
    pub span: u64,
    /// The client's span, when the trace was continued; 0 otherwise.
    pub parent: u64,
    /// Recorded and exported (parent-based ratio sampling); unsampled
    /// requests still pass their context on.
    pub sampled: bool,
    /// The wall clock when the request started (span times).
    pub start_wall: std::time::SystemTime,
}

/// Per-request state, created by `new_ctx` and filled phase by phase.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: String,
    pub start: Instant,
    /// The downstream socket's peer address.
    pub peer: Option<std::net::IpAddr>,
    /// The client's address: the peer, or from a trusted proxy's
    /// `x-forwarded-for` (hygiene plugin).
    pub client_ip: Option<std::net::IpAddr>,
    /// The verified client certificate of the connection (TLS listener
    /// with `auth.mtls`).
    pub client_cert: Option<Arc<crate::auth::mtls::ClientCert>>,
    /// `x-forwarded-for` as it goes to backends (hygiene plugin).
    pub forwarded_for: Option<http::HeaderValue>,
    /// Set once an auth plugin accepted the caller.
    pub identity: Option<Identity>,
    /// Index of the matched route in the request's snapshot.
    pub route: Option<usize>,
    pub route_name: Option<String>,
    /// `model` from the JSON body, when there is one.
    pub model: Option<String>,
    /// `stream: true` in the body.
    pub stream: bool,
    /// `max_completion_tokens` (or `max_tokens`) from the body.
    pub max_tokens: Option<u64>,
    /// `n` from the body: choices asked for (1 by default).
    pub choices: u64,
    /// `GET /v1/models`: answered by the gateway, filtered by policy.
    pub list_models: bool,
    /// The models the caller may see (policy); `None`: all.
    pub visible_models: Option<Vec<String>>,
    /// Backends (config indices) policy keeps this request away from.
    pub forbidden_backends: Vec<usize>,
    pub request_bytes: usize,
    /// The backend of the current (last) attempt.
    pub backend: Option<Arc<str>>,
    /// Upstream attempts made (`x-skygate-attempts`).
    pub attempts: u32,
    /// The failed attempts' backends and outcomes, in order.
    pub tries: Vec<Try>,
    /// The attempt whose response went to the client (kept apart from
    /// `tries` so a request answered at once allocates nothing for it).
    pub served: Option<Try>,
    pub status: u16,
    pub first_byte: Option<Instant>,
    pub response_bytes: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cache: CacheStatus,
    /// Error code of a failure, for the access log.
    pub error: Option<&'static str>,
    /// What the rate limits charged and report (rate-limit plugin); settled
    /// on completion.
    pub limits: Option<Box<crate::ratelimit::Held>>,
    /// A token limit needs this stream's usage: the gateway asks the
    /// backend for `stream_options.include_usage`.
    pub want_stream_usage: bool,
    /// The client did not ask for the usage chunk: it is left out of the
    /// client's stream.
    pub strip_usage_chunk: bool,
    /// SSE `data:` events of the response (a cut stream settles by them).
    pub stream_events: u64,
    /// The backend's platform reported a cold start for this request.
    pub cold_start: bool,
    /// W3C trace context, when traces are on.
    pub trace: Option<TraceCtx>,
    /// The model the backend said answered (`model` in its answer), kept
    /// for a recorded trace only.
    pub response_model: Option<String>,
    /// A miss of the cache's in-memory tier, for its step after the rate
    /// limits.
    pub cache_lookup: Option<Box<crate::cache::Lookup>>,
    /// The attempt in flight: its start and span (for the log and the
    /// trace when the request ends before it does: the client left).
    pub attempt_in_flight: Option<(Instant, u64)>,
    /// A cache miss's answer, captured to be stored (cache plugin).
    pub cache_fill: Option<Box<crate::cache::Fill>>,
    /// A cache hit: the tokens of the answer it served.
    pub cached_tokens: Option<u64>,
    /// A cache hit on a route whose hits do not count against request
    /// limits: the rate-limit plugin gives the request back.
    pub cache_hit_free: bool,
    /// A whole answer found before the plugins after it ran (a cache hit
    /// found before the rate limits): sent once they all let it through.
    pub pending_answer: Option<crate::LocalResponse>,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            request_id: String::new(),
            start: Instant::now(),
            peer: None,
            client_ip: None,
            forwarded_for: None,
            client_cert: None,
            identity: None,
            route: None,
            route_name: None,
            model: None,
            stream: false,
            max_tokens: None,
            choices: 1,
            list_models: false,
            visible_models: None,
            forbidden_backends: Vec::new(),
            request_bytes: 0,
            backend: None,
            attempts: 0,
            tries: Vec::new(),
            served: None,
            status: 0,
            first_byte: None,
            response_bytes: 0,
            prompt_tokens: None,
            completion_tokens: None,
            cache: CacheStatus::Bypass,
            error: None,
            limits: None,
            want_stream_usage: false,
            strip_usage_chunk: false,
            stream_events: 0,
            cold_start: false,
            trace: None,
            response_model: None,
            cache_lookup: None,
            attempt_in_flight: None,
            cache_fill: None,
            cached_tokens: None,
            cache_hit_free: false,
            pending_answer: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
