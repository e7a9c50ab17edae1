//! Traces over OTLP (`telemetry.otlp`): one server span per request and one
//! client span per upstream attempt, named and attributed by the
//! OpenTelemetry GenAI semantic conventions, plus Skygate's own attributes.
//!
//! - Trace context is W3C: a client's `traceparent` is continued (unless
//!   `telemetry.continue_client_trace: false`) and each attempt sends its
//!   own span as the backend's parent. Sampling is parent-based: a client's
//!   sampled flag decides; a trace started here is kept when its trace id
//!   falls under `sampling_ratio` (as OpenTelemetry's `TraceIdRatioBased`).
//! - Off the request path: a finished request's spans are built once, at
//!   its end, and handed to a bounded queue with `try_send`. A full queue
//!   drops them and counts (`skygate_trace_spans_total{result}`); the
//!   request never waits. A background service batches them (512, or every
//!   second) to `opentelemetry-otlp`'s exporter, gRPC or HTTP/protobuf; an
//!   export that fails drops its batch and counts.

use crate::runtime::Snapshot;
use http::HeaderValue;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use pingora_http::RequestHeader;
use skygate_config::{Operation, Otlp, OtlpProtocol, Telemetry};
use skygate_plugins::{RequestCtx, TraceCtx, Try};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Spans waiting for export at most; beyond, new spans are dropped.
pub const QUEUE: usize = 8192;
/// Spans per export.
const BATCH: usize = 512;
/// A batch goes out at least this often.
const FLUSH: Duration = Duration::from_secs(1);

/// What happened to spans, for `skygate_trace_spans_total{result}`.
pub struct SpanCounts {
    pub exported: AtomicU64,
    /// The queue was full: the exporter falls behind or the collector is slow.
    pub dropped: AtomicU64,
    /// Their export failed (collector down, refused, timed out).
    pub failed: AtomicU64,
}

pub static COUNTS: SpanCounts = SpanCounts {
    exported: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

/// The exit's request for a last export ([`flush_at_exit`]): asked by a
/// notify, answered on the channel it leaves here.
struct Final {
    ask: tokio::sync::Notify,
    done: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
}

static FINAL: Final = Final {
    ask: tokio::sync::Notify::const_new(),
    done: Mutex::new(None),
};

/// At exit, after the last request ended: exports every span still queued
/// and waits for it, at most `wait` (the exporter's runtime still runs;
/// the process exits right after). Without an exporter, returns at once.
pub fn flush_at_exit(wait: Duration) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    *FINAL.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    FINAL.ask.notify_one();
    if rx.recv_timeout(wait).is_err() {
        log::warn!(
            "traces: the last spans were not exported within {wait:?}; exiting without them"
        );
    }
}

/// Whether the exporter task runs (set by it).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Queue {
    tx: mpsc::Sender<SpanData>,
    rx: Mutex<Option<mpsc::Receiver<SpanData>>>,
}

fn queue() -> &'static Queue {
    static Q: OnceLock<Queue> = OnceLock::new();
    Q.get_or_init(|| {
        let (tx, rx) = mpsc::channel(QUEUE);
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    })
}

fn random_nonzero_u64() -> u64 {
    loop {
        let v = rand::random::<u64>();
        if v != 0 {
            return v;
        }
    }
}

/// A request's trace context, when traces are on: continued from the
/// client's `traceparent` or started here.
pub fn start(t: &Telemetry, req: &RequestHeader) -> Option<TraceCtx> {
    t.otlp.as_ref()?;
    let parent = if t.continue_client_trace {
        req.headers
            .get("traceparent")
            .and_then(|v| parse_traceparent(v.as_bytes()))
    } else {
        None
    };
    let (trace_id, parent, sampled) = match parent {
        Some((trace_id, span, sampled)) => (trace_id, span, sampled),
        None => {
            let trace_id = loop {
                let v = rand::random::<u128>();
                if v != 0 {
                    break v;
                }
            };
            (trace_id, 0, ratio_sampled(trace_id, t.sampling_ratio))
        }
    };
    Some(TraceCtx {
        trace_id,
        span: random_nonzero_u64(),
        parent,
        sampled,
        start_wall: SystemTime::now(),
    })
}

/// OpenTelemetry's `TraceIdRatioBased`: the trace id's low 63 bits under
/// the ratio's share, so every replica (and SDK) decides the same way.
fn ratio_sampled(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

/// `00-{trace}-{span}-{flags}`: version 00 only as written; a later
/// version is read by its first four fields (W3C's forward compatibility).
/// All-zero ids are invalid.
fn parse_traceparent(v: &[u8]) -> Option<(u128, u64, bool)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let extra = parts.next();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || (version == "00" && extra.is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok()?;
    let span = u64::from_str_radix(span, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace != 0 && span != 0).then_some((trace, span, flags & 1 == 1))
}

/// A new span id for an upstream attempt; 0 when the request is untraced.
pub fn attempt_span(ctx: &RequestCtx) -> u64 {
    if ctx.trace.is_some() {
        random_nonzero_u64()
    } else {
        0
    }
}

/// The `traceparent` an attempt sends: the trace, the attempt's span (the
/// request's own when `span` is 0), the sampled flag.
pub fn traceparent(t: &TraceCtx, span: u64) -> HeaderValue {
    let span = if span == 0 { t.span } else { span };
    let v = format!(
        "00-{:032x}-{:016x}-{:02x}",
        t.trace_id,
        span,
        u8::from(t.sampled)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The longest `tracestate` passed on (W3C's own bound for one that is
/// forwarded: 32 entries of a few bytes, about 512).
const TRACESTATE_MAX: usize = 512;

/// What an attempt sends as trace context. Traces on: its own span, and
/// the client's `tracestate` only with the client's trace continued.
/// Traces off: the client's context as sent, when its `traceparent` is
/// valid and `continue_client_trace` allows it. Nothing otherwise.
pub fn upstream_context(
    ctx: &RequestCtx,
    t: &Telemetry,
    req: &RequestHeader,
    span: u64,
) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let client_state = || {
        req.headers
            .get("tracestate")
            .filter(|v| v.len() <= TRACESTATE_MAX)
            .cloned()
    };
    match &ctx.trace {
        Some(trace) => (
            Some(traceparent(trace, span)),
            if trace.parent != 0 {
                client_state()
            } else {
                None
            },
        ),
        None if t.continue_client_trace => match req.headers.get("traceparent") {
            Some(tp) if parse_traceparent(tp.as_bytes()).is_some() => {
                (Some(tp.clone()), client_state())
            }
            _ => (None, None),
        },
        None => (None, None),
    }
}

/// The GenAI `gen_ai.provider.name` of a backend kind, where the
/// conventions name one; Skygate's kind otherwise.
fn provider(kind: skygate_config::BackendKind) -> &'static str {
    use skygate_config::BackendKind as K;
    match kind {
        K::OpenAi => "openai",
        K::Bedrock => "aws.bedrock",
        K::AzureOpenai => "azure.ai.openai",
        K::Sagemaker => "aws.sagemaker",
        K::GcpCloudRun => "gcp.cloud_run",
        K::AwsLambda | K::AwsLambdaUrl => "aws.lambda",
        K::AzureFunctions => "azure.functions",
        K::Openwhisk => "openwhisk",
        K::HttpFunction => "http_function",
    }
}

/// `gen_ai.operation.name` of an operation (function routes have none).
fn operation_name(op: Operation) -> Option<&'static str> {
    match op {
        Operation::ChatCompletions => Some("chat"),
        Operation::Embeddings => Some("embeddings"),
        Operation::Function => None,
    }
}

fn kv(k: &'static str, v: impl Into<Value>) -> KeyValue {
    KeyValue::new(k, v)
}

/// Builds a finished request's spans (when sampled) and queues them; never
/// waits. Called once, at the request's end.
pub fn finish(ctx: &RequestCtx, snap: Option<&Snapshot>, method: &str, path: &str) {
    let Some(t) = ctx.trace.as_ref().filter(|t| t.sampled) else {
        return;
    };
    let end = Instant::now();
    let wall = |i: Instant| t.start_wall + i.saturating_duration_since(ctx.start);
    let route = ctx.route.zip(snap).map(|(r, s)| &s.config.routes[r]);
    let operation = route.and_then(|r| operation_name(r.operation));
    let model = ctx.model.as_deref();
    let name: Cow<'static, str> = match (operation, model) {
        (Some(op), Some(m)) => format!("{op} {}", skygate_config::clip(m)).into(),
        (Some(op), None) => op.into(),
        _ => format!("{method} {}", route.map_or(path, |r| r.name.as_str())).into(),
    };
    let trace_id = TraceId::from_bytes(t.trace_id.to_be_bytes());
    let flags = TraceFlags::SAMPLED;
    let scope = scope();

    let mut attrs = Vec::with_capacity(24);
    attrs.push(kv("http.request.method", method.to_string()));
    attrs.push(kv("url.path", skygate_config::clip(path).to_string()));
    attrs.push(kv("http.response.status_code", i64::from(ctx.status)));
    attrs.push(kv("skygate.request_id", ctx.request_id.clone()));
    if let Some(op) = operation {
        attrs.push(kv("gen_ai.operation.name", op));
    }
    if let Some(m) = model {
        attrs.push(kv(
            "gen_ai.request.model",
            skygate_config::clip(m).to_string(),
        ));
    }
    if let Some(m) = &ctx.response_model {
        attrs.push(kv(
            "gen_ai.response.model",
            skygate_config::clip(m).to_string(),
        ));
    }
    if let Some(n) = ctx.prompt_tokens {
        attrs.push(kv("gen_ai.usage.input_tokens", n as i64));
    }
    if let Some(n) = ctx.completion_tokens {
        attrs.push(kv("gen_ai.usage.output_tokens", n as i64));
    }
    if let Some(r) = route {
        attrs.push(kv("skygate.route", r.name.clone()));
    }
    let served = ctx.served.as_ref();
    if let Some(b) = ctx.backend.as_deref() {
        attrs.push(kv("skygate.backend", b.to_string()));
        if let Some(be) = snap.and_then(|s| s.backend(b)) {
            attrs.push(kv("gen_ai.provider.name", provider(be.config.kind)));
            if let Some(c) = &be.config.cloud {
                attrs.push(kv("cloud.provider", c.clone()));
            }
            if let Some(r) = &be.config.region {
                attrs.push(kv("cloud.region", r.clone()));
            }
        }
    }
    attrs.push(kv("skygate.attempts", i64::from(ctx.attempts)));
    attrs.push(kv("skygate.cache", ctx.cache.as_str()));
    attrs.push(kv("skygate.stream", ctx.stream));
    attrs.push(kv("skygate.cold_start", ctx.cold_start));
    if let Some(id) = &ctx.identity {
        attrs.push(kv(
            "skygate.principal",
            skygate_config::clip(&id.principal.id).to_string(),
        ));
        if let Some(tenant) = &id.principal.tenant {
            attrs.push(kv(
                "skygate.tenant",
                skygate_config::clip(tenant).to_string(),
            ));
        }
    }
    let failed = ctx.status >= 500 || ctx.status == 0;
    let error_type = ctx
        .error
        .map(str::to_string)
        .or_else(|| (ctx.status >= 400).then(|| ctx.status.to_string()));
    if let Some(e) = &error_type {
        attrs.push(kv("error.type", e.clone()));
    }
    let status = if failed {
        Status::error(error_type.unwrap_or_else(|| "error".into()))
    } else {
        Status::Unset
    };
    let server = SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from_bytes(t.span.to_be_bytes()),
            flags,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::from_bytes(t.parent.to_be_bytes()),
        parent_span_is_remote: t.parent != 0,
        span_kind: SpanKind::Server,
        name: name.clone(),
        start_time: t.start_wall,
        end_time: wall(end),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    let q = &queue().tx;
    let push = |s: SpanData| {
        if q.try_send(s).is_err() {
            COUNTS.dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    push(server);

    // One client span per attempt, in order; the served one lasts until
    // the response ended.
    let tries = ctx.tries.iter().chain(served);
    for (i, a) in tries.enumerate() {
        if a.span == 0 {
            continue;
        }
        let is_served = served.is_some_and(|s| std::ptr::eq(s, a));
        let a_end = if is_served {
            end
        } else {
            a.started + Duration::from_secs_f64(a.ms / 1000.0)
        };
        push(attempt_span_data(
            a,
            i,
            is_served,
            AttemptSpan {
                trace_id,
                parent: t.span,
                name: name.clone(),
                start: wall(a.started),
                end: wall(a_end),
                operation,
                model,
                snap,
                scope: scope.clone(),
            },
        ));
    }
}

struct AttemptSpan<'a> {
    trace_id: TraceId,
    parent: u64,
    name: Cow<'static, str>,
    start: SystemTime,
    end: SystemTime,
    operation: Option<&'static str>,
    model: Option<&'a str>,
    snap: Option<&'a Snapshot>,
    scope: InstrumentationScope,
}

fn attempt_span_data(a: &Try, index: usize, served: bool, s: AttemptSpan<'_>) -> SpanData {
    let mut attrs = Vec::with_capacity(14);
    if let Some(op) = s.operation {
        attrs.push(kv("gen_ai.operation.name", op));
    }
    if let Some(m) = s.model {
        attrs.push(kv(
            "gen_ai.request.model",
            skygate_config::clip(m).to_string(),
        ));
    }
    attrs.push(kv("skygate.backend", a.backend.to_string()));
    attrs.push(kv("skygate.attempt", index as i64 + 1));
    attrs.push(kv("skygate.outcome", a.outcome));
    attrs.push(kv("skygate.time_to_first_byte_ms", a.ms));
    if let Some(code) = a.status {
        attrs.push(kv("http.response.status_code", i64::from(code)));
    }
    if let Some(be) = s.snap.and_then(|snap| snap.backend(&a.backend)) {
        attrs.push(kv("gen_ai.provider.name", provider(be.config.kind)));
        attrs.push(kv("server.address", be.config.url.host.clone()));
        attrs.push(kv("server.port", i64::from(be.config.url.port)));
        if let Some(c) = &be.config.cloud {
            attrs.push(kv("cloud.provider", c.clone()));
        }
        if let Some(r) = &be.config.region {
            attrs.push(kv("cloud.region", r.clone()));
        }
    }
    let failed = !served && !matches!(a.outcome, "ok" | "hedged");
    if failed {
        attrs.push(kv("error.type", a.outcome));
    }
    SpanData {
        span_context: SpanContext::new(
            s.trace_id,
            SpanId::from_bytes(a.span.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::from_bytes(s.parent.to_be_bytes()),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: s.name,
        start_time: s.start,
        end_time: s.end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::error(a.outcome)
        } else {
            Status::Unset
        },
        instrumentation_scope: s.scope,
    }
}

fn scope() -> InstrumentationScope {
    static S: OnceLock<InstrumentationScope> = OnceLock::new();
    S.get_or_init(|| {
        InstrumentationScope::builder("skygate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    })
    .clone()
}

/// Exports queued spans, off the request path, as long as the process
/// runs; the exporter is rebuilt when a reload changes `telemetry.otlp`.
pub struct Exporter {
    pub state: std::sync::Arc<crate::State>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Exporter {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let rx = queue().rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = rx else { return };
        let mut current: Option<(Otlp, opentelemetry_otlp::SpanExporter)> = None;
        // A config whose exporter could not be built: not tried again
        // (nor warned about) until the config changes.
        let mut failed: Option<Otlp> = None;
        let mut shutting_down = false;
        let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
        let mut last_error_log: Option<Instant> = None;
        EXPORTING.store(true, Ordering::Relaxed);
        loop {
            let deadline = tokio::time::sleep(FLUSH);
            tokio::pin!(deadline);
            let mut closing = false;
            // The exit asked for a last export: everything queued goes now,
            // in as many batches as it takes.
            let mut last = false;
            while batch.len() < BATCH {
                tokio::select! {
                    s = rx.recv() => match s {
                        Some(s) => batch.push(s),
                        None => { closing = true; break }
                    },
                    () = &mut deadline => break,
                    // Requests finish during the grace period: their
                    // spans still go, until the process exits.
                    _ = shutdown.changed(), if !shutting_down => { shutting_down = true; break }
                    () = FINAL.ask.notified() => { last = true; break }
                }
            }
            if last {
                while let Ok(s) = rx.try_recv() {
                    batch.push(s);
                }
            }
            let want = self.state.snapshot().config.telemetry.otlp.clone();
            if current.as_ref().map(|(o, _)| o) != want.as_ref() && failed != want {
                current = want.and_then(|o| match build(&o) {
                    Ok(e) => {
                        log::info!("traces: exporting to {} over {:?}", o.endpoint, o.protocol);
                        failed = None;
                        Some((o, e))
                    }
                    Err(e) => {
                        log::warn!("traces: cannot build the OTLP exporter: {e}; spans are dropped until the config changes");
                        failed = Some(o);
                        None
                    }
                });
            }
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(BATCH));
                let n = batch.len() as u64;
                let spans = std::mem::replace(&mut batch, rest);
                let result = match &current {
                    Some((o, exporter)) => {
                        let timeout = o.timeout + Duration::from_secs(1);
                        match tokio::time::timeout(timeout, exporter.export(spans)).await {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err("timed out".to_string()),
                        }
                    }
                    // Traces turned off by a reload: what was queued goes.
                    None => Err("no exporter".to_string()),
                };
                match result {
                    Ok(()) => {
                        COUNTS.exported.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        COUNTS.failed.fetch_add(n, Ordering::Relaxed);
                        // One line a minute at most: a dead collector must
                        // not flood the log.
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            log::warn!("traces: export of {n} spans failed ({e}); dropped");
                            last_error_log = Some(Instant::now());
                        }
                    }
                }
            }
            if last {
                if let Some(done) = FINAL.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = done.try_send(());
                }
            }
            if closing {
                return;
            }
        }
    }
}

/// The OTLP exporter for `o`: gRPC, or HTTP/protobuf to `{endpoint}/v1/traces`.
fn build(o: &Otlp) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let mut exporter = match o.protocol {
        OtlpProtocol::Grpc => {
            let mut meta = tonic::metadata::MetadataMap::new();
            for (k, v) in &o.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                    .map_err(|e| format!("header `{k}`: {e}"))?;
                let value = v
                    .expose()
                    .parse()
                    .map_err(|_| format!("header `{k}`: not a valid value"))?;
                meta.insert(key, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(o.endpoint.clone())
                .with_timeout(o.timeout)
                .with_metadata(meta)
                .build()
        }
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", o.endpoint))
            .with_timeout(o.timeout)
            .with_headers(
                o.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string()))
                    .collect(),
            )
            .build(),
    }
    .map_err(|e| e.to_string())?;
    exporter.set_resource(&resource());
    Ok(exporter)
}

/// `service.name: skygate`, its version and this process's instance id.
fn resource() -> opentelemetry_sdk::Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "skygate"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(
                "service.instance.id",
                format!("{host}:{}", std::process::id()),
            ),
        ])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true))
        );
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(parse_traceparent(unsampled).map(|p| p.2), Some(false));
        // A later version: its first four fields count, extras are allowed.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_written_traceparent_reads_back() {
        let t = TraceCtx {
            trace_id: 0xabc,
            span: 0x1234,
            parent: 0,
            sampled: true,
            start_wall: SystemTime::now(),
        };
        let v = traceparent(&t, 0x99);
        assert_eq!(
            v.to_str().ok(),
            Some("00-00000000000000000000000000000abc-0000000000000099-01")
        );
        assert_eq!(parse_traceparent(v.as_bytes()), Some((0xabc, 0x99, true)));
    }

    #[test]
    fn ratio_sampling_keeps_about_its_share() {
        let kept = (0..20_000u128)
            .filter(|i| {
                ratio_sampled(
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                    0.25,
                )
            })
            .count();
        assert!((4_500..5_500).contains(&kept), "{kept}");
        assert!(ratio_sampled(1, 1.0) && !ratio_sampled(1, 0.0));
    }
}
