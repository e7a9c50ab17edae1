//! Prometheus metrics, all prefixed `skygate_`, served as text at
//! `GET /metrics` on the admin listener.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttfb: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub in_flight: IntGauge,
    pub tokens: IntCounterVec,
    pub access_log_dropped: prometheus::IntCounter,
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
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(ttfb.clone()))?;
    registry.register(Box::new(upstream_errors.clone()))?;
    registry.register(Box::new(in_flight.clone()))?;
    registry.register(Box::new(tokens.clone()))?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        duration,
        ttfb,
        upstream_errors,
        in_flight,
        tokens,
        access_log_dropped,
    })
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

/// The Prometheus text exposition.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(m) = get() {
        if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
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
        let text = String::from_utf8(super::render()).unwrap();
        assert!(
            text.contains("skygate_requests_total{backend=\"a\",route=\"chat\",status=\"200\"} 1"),
            "{text}"
        );
    }
}
