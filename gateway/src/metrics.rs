//! Prometheus metrics, all prefixed `skygate_`, served as text at
//! `GET /metrics` on the admin listener.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Instant;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttfb: HistogramVec,
    pub upstream_errors: IntCounterVec,
    /// Cold starts backends' platforms reported (Lambda's `Init Duration`).
    pub cold_starts: IntCounterVec,
    pub prewarm_pings: IntCounterVec,
    warm_instances: IntGaugeVec,
    warm_target: IntGaugeVec,
    next_cold_seconds: IntGaugeVec,
    pub in_flight: IntGauge,
    pub tokens: IntCounterVec,
    pub access_log_dropped: prometheus::IntCounter,
    pub health_checks: IntCounterVec,
    // Read from the run-time state at each scrape (see `render`).
    breaker_state: IntGaugeVec,
    breaker_opens: IntCounterVec,
    backend_healthy: IntGaugeVec,
    backend_in_flight: IntGaugeVec,
    backend_throttled: IntGaugeVec,
    backend_drained: IntGaugeVec,
    retries: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    policy_decisions: IntCounterVec,
    policy_backends_denied: prometheus::IntCounter,
    policy_cache: IntCounterVec,
    audit_log_dropped: prometheus::IntCounter,
    log_dropped: prometheus::IntCounter,
    ratelimit: IntCounterVec,
    redis_up: IntGauge,
    redis_down: prometheus::IntCounter,
    redis_errors: prometheus::IntCounter,
    cache_lookups: IntCounterVec,
    cache_route: IntCounterVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    cache_memory_limit: IntGauge,
    cache_evictions: IntCounterVec,
    cache_redis_failures: IntCounterVec,
    trace_spans: IntCounterVec,
}

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "skygate_requests_total",
            "Requests answered, by route, backend and status",
        ),
        &["route", "backend", "status"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "skygate_request_duration_seconds",
            "Time from request to the last response byte",
        )
        .buckets(BUCKETS.to_vec()),
        &["route"],
    )?;
    let ttfb = HistogramVec::new(
        HistogramOpts::new(
            "skygate_time_to_first_byte_seconds",
            "Time from request to the backend's response header",
        )
        .buckets(BUCKETS.to_vec()),
        &["route", "backend"],
    )?;
    let upstream_errors = IntCounterVec::new(
        Opts::new(
            "skygate_upstream_errors_total",
            "Failed backend attempts, by backend and error code",
        ),
        &["backend", "code"],
    )?;
    let cold_starts = IntCounterVec::new(
        Opts::new(
            "skygate_backend_cold_starts_total",
            "Cold starts reported by backends' platforms (Lambda's log tail), by backend",
        ),
        &["backend"],
    )?;
    let prewarm_pings = IntCounterVec::new(
        Opts::new(
            "skygate_prewarm_pings_total",
            "Prewarm pings, by backend and result (ok, failed, peer: left to the replica holding the lease, unsent: could not be sent, as with no credentials yet)",
        ),
        &["backend", "result"],
    )?;
    let in_flight = IntGauge::new("skygate_requests_in_flight", "Requests being served now")?;
    let tokens = IntCounterVec::new(
        Opts::new(
            "skygate_tokens_total",
            "Tokens reported by backends, by route and kind (prompt, completion)",
        ),
        &["route", "kind"],
    )?;
    let access_log_dropped = prometheus::IntCounter::new(
        "skygate_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind",
    )?;
    let health_checks = IntCounterVec::new(
        Opts::new(
            "skygate_health_checks_total",
            "Active health checks, by backend and result (ok, failed)",
        ),
        &["backend", "result"],
    )?;
    let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["backend"]);
    let breaker_state = gauge(
        "skygate_backend_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open",
    )?;
    let breaker_opens = IntCounterVec::new(
        Opts::new(
            "skygate_backend_breaker_opens_total",
            "Times the backend's circuit breaker opened",
        ),
        &["backend"],
    )?;
    let backend_healthy = gauge(
        "skygate_backend_healthy",
        "Active health: 1 healthy, 0 unhealthy, -1 unknown or unchecked",
    )?;
    let backend_in_flight = gauge(
        "skygate_backend_in_flight",
        "Requests in flight to the backend",
    )?;
    let backend_throttled = gauge(
        "skygate_backend_throttled",
        "1 while a 429 sets the backend aside",
    )?;
    let backend_drained = gauge("skygate_backend_drained", "1 while drained by an operator")?;
    let warm_instances = gauge(
        "skygate_backend_warm_instances",
        "Instances the warmth model holds warm (backends with a known idle timeout)",
    )?;
    let warm_target = gauge(
        "skygate_backend_warm_target",
        "Instances the prewarm policy wants warm now",
    )?;
    let next_cold_seconds = gauge(
        "skygate_backend_next_cold_seconds",
        "Seconds until the warmth model's next warm instance goes cold (-1: none warm)",
    )?;
    let retries = IntCounterVec::new(
        Opts::new(
            "skygate_retries_total",
            "Retries on another target, by route",
        ),
        &["route"],
    )?;
    let retry_budget_exhausted = IntCounterVec::new(
        Opts::new(
            "skygate_retry_budget_exhausted_total",
            "Retries refused by the route's retry budget",
        ),
        &["route"],
    )?;
    let policy_decisions = IntCounterVec::new(
        Opts::new(
            "skygate_policy_decisions_total",
            "Policy decisions: allow, deny, shadow_deny (a denial let through in shadow mode)",
        ),
        &["decision"],
    )?;
    let policy_backends_denied = prometheus::IntCounter::new(
        "skygate_policy_backends_denied_total",
        "Backends a forbid policy took out of a request's choice",
    )?;
    let policy_cache = IntCounterVec::new(
        Opts::new(
            "skygate_policy_cache_total",
            "Call decisions answered by the policy decision cache (hit) or made by Cedar (miss)",
        ),
        &["result"],
    )?;
    let log_dropped = prometheus::IntCounter::new(
        "skygate_log_dropped_total",
        "Skygate's own log lines dropped because stderr took no more",
    )?;
    let audit_log_dropped = prometheus::IntCounter::new(
        "skygate_audit_log_dropped_total",
        "Audit log lines dropped because the writer fell behind",
    )?;
    let ratelimit = IntCounterVec::new(
        Opts::new(
            "skygate_ratelimit_decisions_total",
            "Requests some rate limit applied to, by outcome: allowed, limited_requests, limited_tokens, limited_concurrency, fail_open (decided locally while Redis was down), fail_closed (503 while Redis was down)",
        ),
        &["outcome"],
    )?;
    let redis_up = IntGauge::new(
        "skygate_redis_up",
        "1 while the shared Redis (state.redis) is connected",
    )?;
    let redis_down = prometheus::IntCounter::new(
        "skygate_redis_down_total",
        "Times the shared Redis went away (or could not be reached at start)",
    )?;
    let redis_errors = prometheus::IntCounter::new(
        "skygate_redis_errors_total",
        "Redis calls that failed or timed out",
    )?;
    let cache_lookups = IntCounterVec::new(
        Opts::new(
            "skygate_cache_lookups_total",
            "Requests to caching routes, by route and result, as x-skygate-cache said: hit, miss, bypass (no-cache, no-store, or refused before an answer)",
        ),
        &["route", "result"],
    )?;
    let cache_route = IntCounterVec::new(
        Opts::new(
            "skygate_cache_events_total",
            "Cache events by route: redis_hit (a hit found in Redis), wait (a miss that waited for an identical one, on this replica or another), store (an answer stored), unservable (an answer stored unchecked, with memory alone, that was not a whole one: found at its first use, never served), not_admitted (a miss whose answer was not stored: the in-memory tier was full and the key was new to it; its next miss is stored), cached_tokens (tokens of answers served from the cache)",
        ),
        &["route", "event"],
    )?;
    let cache_bytes = IntGauge::new(
        "skygate_cache_bytes",
        "Bytes held by the in-memory cache tier (entries and their overhead)",
    )?;
    let cache_entries = IntGauge::new(
        "skygate_cache_entries",
        "Entries in the in-memory cache tier",
    )?;
    let cache_memory_limit = IntGauge::new(
        "skygate_cache_memory_limit_bytes",
        "The in-memory cache tier's bound (cache.memory)",
    )?;
    let cache_evictions = IntCounterVec::new(
        Opts::new(
            "skygate_cache_evictions_total",
            "Entries leaving the in-memory tier, by cause: size (the bound), expired, invalidated (DELETE /admin/cache, on this replica or shared by another)",
        ),
        &["cause"],
    )?;
    let cache_redis_failures = IntCounterVec::new(
        Opts::new(
            "skygate_cache_redis_failures_total",
            "Cache work Redis could not do, by kind: read (failed or timed out: a miss), bad_value (did not decode: a miss), write_dropped (Redis down or the write queue full)",
        ),
        &["kind"],
    )?;
    for c in [
        &cache_lookups,
        &cache_route,
        &cache_evictions,
        &cache_redis_failures,
    ] {
        registry.register(Box::new(c.clone()))?;
    }
    for g in [&cache_bytes, &cache_entries, &cache_memory_limit] {
        registry.register(Box::new(g.clone()))?;
    }
    registry.register(Box::new(ratelimit.clone()))?;
    registry.register(Box::new(redis_up.clone()))?;
    registry.register(Box::new(redis_down.clone()))?;
    registry.register(Box::new(redis_errors.clone()))?;
    registry.register(Box::new(policy_decisions.clone()))?;
    registry.register(Box::new(policy_backends_denied.clone()))?;
    registry.register(Box::new(policy_cache.clone()))?;
    registry.register(Box::new(log_dropped.clone()))?;
    registry.register(Box::new(audit_log_dropped.clone()))?;
    registry.register(Box::new(health_checks.clone()))?;
    registry.register(Box::new(breaker_state.clone()))?;
    registry.register(Box::new(breaker_opens.clone()))?;
    registry.register(Box::new(backend_healthy.clone()))?;
    registry.register(Box::new(backend_in_flight.clone()))?;
    registry.register(Box::new(backend_throttled.clone()))?;
    registry.register(Box::new(backend_drained.clone()))?;
    registry.register(Box::new(retries.clone()))?;
    registry.register(Box::new(retry_budget_exhausted.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(ttfb.clone()))?;
    registry.register(Box::new(upstream_errors.clone()))?;
    registry.register(Box::new(cold_starts.clone()))?;
    registry.register(Box::new(prewarm_pings.clone()))?;
    registry.register(Box::new(warm_instances.clone()))?;
    registry.register(Box::new(warm_target.clone()))?;
    registry.register(Box::new(next_cold_seconds.clone()))?;
    registry.register(Box::new(in_flight.clone()))?;
    registry.register(Box::new(tokens.clone()))?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    let trace_spans = IntCounterVec::new(
        Opts::new(
            "skygate_trace_spans_total",
            "Trace spans, by result: exported, dropped (the export queue was full), failed (their export failed)",
        ),
        &["result"],
    )?;
    registry.register(Box::new(trace_spans.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        duration,
        ttfb,
        upstream_errors,
        cold_starts,
        prewarm_pings,
        warm_instances,
        warm_target,
        next_cold_seconds,
        in_flight,
        tokens,
        access_log_dropped,
        ratelimit,
        redis_up,
        redis_down,
        redis_errors,
        health_checks,
        breaker_state,
        breaker_opens,
        backend_healthy,
        backend_in_flight,
        backend_throttled,
        backend_drained,
        retries,
        retry_budget_exhausted,
        policy_decisions,
        policy_backends_denied,
        policy_cache,
        audit_log_dropped,
        log_dropped,
        cache_lookups,
        cache_route,
        cache_bytes,
        cache_entries,
        cache_memory_limit,
        cache_evictions,
        cache_redis_failures,
        trace_spans,
    })
}

/// Statuses whose request counters a route keeps at hand; others are
/// looked up by label.
const STATUSES: [u16; 14] = [
    200, 201, 400, 401, 403, 404, 408, 413, 429, 499, 500, 502, 503, 504,
];

/// One route's metric handles, resolved on first use and kept with the
/// snapshot, so recording a request hashes no label values (the
/// `*_with_label_values` lookups cost more than the increments).
pub struct RouteMetrics {
    route: String,
    duration: OnceLock<Histogram>,
    prompt: OnceLock<IntCounter>,
    completion: OnceLock<IntCounter>,
    /// By backend index in the snapshot.
    backends: Vec<BackendMetrics>,
}

struct BackendMetrics {
    name: std::sync::Arc<str>,
    ttfb: OnceLock<Histogram>,
    statuses: [OnceLock<IntCounter>; STATUSES.len()],
}

impl RouteMetrics {
    /// Handles for `route` served by `backends` (the snapshot's, in order).
    pub fn new(route: &str, backends: &[std::sync::Arc<str>]) -> Self {
        Self {
            route: route.to_string(),
            duration: OnceLock::new(),
            prompt: OnceLock::new(),
            completion: OnceLock::new(),
            backends: backends
                .iter()
                .map(|name| BackendMetrics {
                    name: name.clone(),
                    ttfb: OnceLock::new(),
                    statuses: std::array::from_fn(|_| OnceLock::new()),
                })
                .collect(),
        }
    }

    fn backend(&self, name: &str) -> Option<&BackendMetrics> {
        self.backends.iter().find(|b| &*b.name == name)
    }
}

/// Records a finished request's counters and histograms: through the
/// route's resolved handles when there is a route, by label otherwise.
pub fn record_request(
    route: Option<&RouteMetrics>,
    backend: &str,
    status: u16,
    elapsed: f64,
    ttfb: Option<f64>,
    tokens: (Option<u64>, Option<u64>),
) {
    let Some(m) = get() else { return };
    let Some(r) = route else {
        let status = status.to_string();
        m.requests.with_label_values(&["", backend, &status]).inc();
        m.duration.with_label_values(&[""]).observe(elapsed);
        return;
    };
    let b = r.backend(backend);
    let slot = STATUSES.iter().position(|s| *s == status);
    match (b, slot) {
        (Some(b), Some(i)) => b.statuses[i]
            .get_or_init(|| {
                m.requests
                    .with_label_values(&[&r.route, backend, &status.to_string()])
            })
            .inc(),
        _ => m
            .requests
            .with_label_values(&[&r.route, backend, &status.to_string()])
            .inc(),
    }
    r.duration
        .get_or_init(|| m.duration.with_label_values(&[&r.route]))
        .observe(elapsed);
    if let Some(t) = ttfb {
        match b {
            Some(b) => b
                .ttfb
                .get_or_init(|| m.ttfb.with_label_values(&[&r.route, backend]))
                .observe(t),
            None => m.ttfb.with_label_values(&[&r.route, backend]).observe(t),
        }
    }
    if let Some(p) = tokens.0 {
        r.prompt
            .get_or_init(|| m.tokens.with_label_values(&[&r.route, "prompt"]))
            .inc_by(p);
    }
    if let Some(c) = tokens.1 {
        r.completion
            .get_or_init(|| m.tokens.with_label_values(&[&r.route, "completion"]))
            .inc_by(c);
    }
}

static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();

/// The process's metrics; `None` only if registration failed, which the
/// fixed, distinct names above rule out (checked by a test).
pub fn get() -> Option<&'static Metrics> {
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(e) => {
                log::error!("metrics disabled: {e}");
                None
            }
        })
        .as_ref()
}

/// Sets the gauges and counters that mirror run-time state (breakers,
/// health, in-flight, retries) from the registry, for one scrape. Backends
/// and routes removed by a reload disappear from the output.
fn mirror(
    m: &Metrics,
    registry: &skygate_backends::routing::state::Registry,
    cache: &skygate_plugins::cache::Store,
) {
    use skygate_backends::routing::health::Health;
    let now = Instant::now();
    for v in [
        &m.breaker_state,
        &m.backend_healthy,
        &m.backend_in_flight,
        &m.backend_throttled,
        &m.backend_drained,
        &m.warm_instances,
        &m.warm_target,
        &m.next_cold_seconds,
    ] {
        v.reset();
    }
    let now_ms = skygate_backends::routing::state::unix_ms();
    m.breaker_opens.reset();
    m.retries.reset();
    m.retry_budget_exhausted.reset();
    for b in registry.backends() {
        let s = b.status(now);
        let l = [b.name()];
        // At 0 from the start, so a rate over it has a series to read.
        m.cold_starts.with_label_values(&l);
        m.breaker_state.with_label_values(&l).set(s.breaker.level());
        m.breaker_opens
            .with_label_values(&l)
            .inc_by(s.breaker_opens);
        m.backend_healthy.with_label_values(&l).set(match s.health {
            Health::Healthy => 1,
            Health::Unhealthy => 0,
            Health::Unknown => -1,
        });
        m.backend_in_flight
            .with_label_values(&l)
            .set(i64::from(s.in_flight));
        m.backend_throttled
            .with_label_values(&l)
            .set(i64::from(s.throttled_for.is_some()));
        m.backend_drained
            .with_label_values(&l)
            .set(i64::from(s.drained));
        if let Some(w) = b.warmth(now_ms) {
            m.warm_instances
                .with_label_values(&l)
                .set(i64::from(w.warm_instances));
            m.warm_target.with_label_values(&l).set(i64::from(w.target));
            m.next_cold_seconds.with_label_values(&l).set(
                w.cold_at
                    .first()
                    .map_or(-1, |t| (t.saturating_sub(now_ms) / 1000) as i64),
            );
        }
    }
    {
        use skygate_plugins::policy::{audit, COUNTERS};
        use std::sync::atomic::Ordering::Relaxed;
        m.policy_decisions.reset();
        let d = &m.policy_decisions;
        d.with_label_values(&["allow"])
            .inc_by(COUNTERS.allow.load(Relaxed));
        d.with_label_values(&["deny"])
            .inc_by(COUNTERS.deny.load(Relaxed));
        d.with_label_values(&["shadow_deny"])
            .inc_by(COUNTERS.shadow_deny.load(Relaxed));
        m.policy_backends_denied.reset();
        m.policy_backends_denied
            .inc_by(COUNTERS.backend_deny.load(Relaxed));
        m.policy_cache.reset();
        for (result, n) in [("hit", &COUNTERS.cache_hit), ("miss", &COUNTERS.cache_miss)] {
            m.policy_cache
                .with_label_values(&[result])
                .inc_by(n.load(Relaxed));
        }
        let t = &crate::telemetry::COUNTS;
        m.trace_spans.reset();
        for (result, n) in [
            ("exported", &t.exported),
            ("dropped", &t.dropped),
            ("failed", &t.failed),
        ] {
            m.trace_spans
                .with_label_values(&[result])
                .inc_by(n.load(Relaxed));
        }
        m.audit_log_dropped.reset();
        m.audit_log_dropped.inc_by(audit::DROPPED.load(Relaxed));
        m.log_dropped.reset();
        m.log_dropped.inc_by(crate::log_sink::DROPPED.load(Relaxed));
    }
    {
        use skygate_plugins::ratelimit::COUNTERS as C;
        use skygate_state::redis::COUNTERS as R;
        use std::sync::atomic::Ordering::Relaxed;
        m.ratelimit.reset();
        for (outcome, n) in [
            ("allowed", &C.allowed),
            ("limited_requests", &C.limited_requests),
            ("limited_tokens", &C.limited_tokens),
            ("limited_concurrency", &C.limited_concurrency),
            ("fail_open", &C.fail_open),
            ("fail_closed", &C.fail_closed),
        ] {
            m.ratelimit
                .with_label_values(&[outcome])
                .inc_by(n.load(Relaxed));
        }
        m.redis_up.set(i64::from(R.up.load(Relaxed)));
        m.redis_down.reset();
        m.redis_down.inc_by(R.down_events.load(Relaxed));
        m.redis_errors.reset();
        m.redis_errors.inc_by(R.errors.load(Relaxed));
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        m.cache_lookups.reset();
        m.cache_route.reset();
        for (route, c) in cache.all_route_counters() {
            for (result, n) in [
                ("hit", &c.hits),
                ("miss", &c.misses),
                ("bypass", &c.bypasses),
            ] {
                m.cache_lookups
                    .with_label_values(&[route.as_str(), result])
                    .inc_by(n.load(Relaxed));
            }
            for (event, n) in [
                ("redis_hit", &c.redis_hits),
                ("wait", &c.waits),
                ("store", &c.stores),
                ("unservable", &c.unservable),
                ("not_admitted", &c.not_admitted),
                ("cached_tokens", &c.tokens),
            ] {
                m.cache_route
                    .with_label_values(&[route.as_str(), event])
                    .inc_by(n.load(Relaxed));
            }
        }
        let (bytes, entries) = cache.usage();
        m.cache_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        m.cache_memory_limit
            .set(i64::try_from(cache.conf().memory).unwrap_or(i64::MAX));
        let k = &cache.counters;
        m.cache_evictions.reset();
        for (cause, n) in [
            ("size", &k.evicted_size),
            ("expired", &k.expired),
            ("invalidated", &k.invalidated),
        ] {
            m.cache_evictions
                .with_label_values(&[cause])
                .inc_by(n.load(Relaxed));
        }
        m.cache_redis_failures.reset();
        for (kind, n) in [
            ("read", &k.redis_errors),
            ("bad_value", &k.redis_bad_values),
            (
                "write_dropped",
                &skygate_state::redis::COUNTERS.puts_dropped,
            ),
        ] {
            m.cache_redis_failures
                .with_label_values(&[kind])
                .inc_by(n.load(Relaxed));
        }
    }
    for r in registry.routes() {
        m.retries.with_label_values(&[r.name()]).inc_by(r.retries());
        m.retry_budget_exhausted
            .with_label_values(&[r.name()])
            .inc_by(r.budget_exhausted());
    }
}

/// The Prometheus text exposition, with the run-time state of `registry`.
/// `redis`: the config has a Redis; without one the `skygate_redis_*`
/// families are left out (`skygate_redis_up 0` would read as an outage).
pub fn render(
    registry: &skygate_backends::routing::state::Registry,
    cache: &skygate_plugins::cache::Store,
    redis: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(m) = get() {
        mirror(m, registry, cache);
        let mut families = m.registry.gather();
        if !redis {
            families.retain(|f| !f.get_name().starts_with("skygate_redis_"));
        }
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("encoding metrics: {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn registers_and_renders() {
        let m = super::get().expect("metrics build");
        m.requests.with_label_values(&["chat", "a", "200"]).inc();
        let render = |redis| {
            String::from_utf8(super::render(
                &skygate_backends::routing::state::Registry::new(),
                &skygate_plugins::cache::Store::new(&skygate_config::CacheConf::default()),
                redis,
            ))
            .unwrap()
        };
        let text = render(false);
        assert!(
            text.contains("skygate_requests_total{backend=\"a\",route=\"chat\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(!text.contains("skygate_redis_up"), "{text}");
        assert!(render(true).contains("skygate_redis_up 0"));
    }
}
