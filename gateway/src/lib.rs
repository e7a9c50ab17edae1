//! Skygate, the gateway: CLI, Pingora bootstrap, a request's story, the
//! runtime snapshot, the admin API and telemetry.

pub mod access_log;
pub mod admin;
mod admin_ui;
pub mod budget;
pub mod demo;
mod edge;
mod forward;
pub mod health;
pub mod identity;
pub mod keys;
pub mod log_sink;
pub mod metrics;
pub mod observe;
pub mod policy_check;
pub mod prewarm;
pub mod proxy;
pub mod reload;
pub mod replicas;
pub mod request;
mod respond;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod tls;

use arc_swap::ArcSwap;
use pingora_http::RequestHeader;
use reload::Source;
use runtime::Snapshot;
use skygate_backends::routing::state::Registry;
use skygate_backends::Upstream;
use skygate_config::Config;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// What every request shares: the current snapshot, the run-time state of
/// backends and routes, the upstream client, and the in-flight count that
/// graceful shutdown waits on.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    /// Breakers, latency, in-flight, health, drain, budgets, weight
    /// overrides: by name, outliving any one snapshot.
    pub registry: Registry,
    pub upstream: Upstream,
    pub in_flight: AtomicI64,
    pub draining: AtomicBool,
    /// Set when a drain's `grace_period` is over with requests still in
    /// flight: a body still coming ends at its next chunk (a stream with
    /// an `event: error`), so the request is logged before the exit.
    pub cutoff: AtomicBool,
    /// Set once the proxy listener was seen accepting (see `/readyz`).
    pub proxy_listening: AtomicBool,
    /// Where reloads read the config from.
    source: Source,
    /// Serialises reloads and admin changes, so each sees the snapshot the
    /// other left.
    admin_lock: Mutex<()>,
    /// Bumped on every swap: background work (health checks) restarts on it.
    pub generation: tokio::sync::watch::Sender<u64>,
    /// Bytes of request bodies held in memory, server-wide (`budget.rs`).
    pub budget: budget::BodyBudget,
    /// Rate-limit counters (in memory) and the Redis connection: outlive
    /// every snapshot, so a reload keeps what each caller has used.
    pub shared: skygate_plugins::Shared,
    /// Admin changes shared with the other replicas through Redis.
    pub replicas: replicas::Replicas,
}

impl State {
    pub fn new(config: Config, source: Source) -> Self {
        let registry = Registry::new();
        let budget =
            budget::BodyBudget::new(config.server.body_budget, config.server.body_budget_wait);
        let shared = skygate_plugins::Shared::default();
        shared.redis.configure(redis_config(&config));
        let snapshot = Snapshot::build(config, &registry, &shared);
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            upstream: Upstream::new(256),
            in_flight: AtomicI64::new(0),
            draining: AtomicBool::new(false),
            cutoff: AtomicBool::new(false),
            proxy_listening: AtomicBool::new(false),
            source,
            admin_lock: Mutex::new(()),
            generation: tokio::sync::watch::Sender::new(0),
            budget,
            shared,
            replicas: replicas::Replicas::default(),
        }
    }

    /// The current snapshot; a request holds on to the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Runs `f` with reloads and other admin changes held off.
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.admin_lock.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// A request starts: counted for graceful shutdown and the gauge until
    /// the [`InFlight`] is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Some(m) = metrics::get() {
            m.in_flight.inc();
        }
        InFlight(self.clone())
    }
}

/// A request counted in flight (graceful shutdown waits for none to be
/// left; `skygate_requests_in_flight`). Uncounted when dropped, so a
/// request that ends any way is never left counted: a panic in a
/// dependency unwinds its task and drops its context, and with it this.
pub(crate) struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(m) = metrics::get() {
            m.in_flight.dec();
        }
    }
}

/// Where `config` puts Redis (`state.redis`), for the shared connection.
pub fn redis_config(config: &Config) -> Option<skygate_state::redis::RedisConfig> {
    config
        .state
        .redis
        .as_ref()
        .map(|r| skygate_state::redis::RedisConfig {
            nodes: r.nodes.clone(),
            cluster: r.cluster,
            timeout: r.timeout,
            prefix: r.prefix.clone(),
        })
}

/// The client's `x-request-id` when it is well formed (1–128 of
/// `[A-Za-z0-9._:-]`), else a new random one.
pub fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get("x-request-id") {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
        {
            // All ASCII, checked above.
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    // 32 hex digits, by hand (`format!` ran a formatter for them).
    let n = rand::random::<u128>();
    (0..32)
        .rev()
        .map(|i| char::from(b"0123456789abcdef"[((n >> (i * 4)) & 0xf) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_panics_is_not_left_in_flight() {
        let config = skygate_config::load_str(
            "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2, token: a-long-enough-admin-token }\nbackends: { s: { kind: openai, url: \"http://127.0.0.1:9/v1\" } }\nroutes: { chat: { match: { path: /v1/chat/completions, models: [m] }, targets: [ { backend: s } ] } }\n",
            "t.yaml",
            &|_| None,
        )
        .unwrap();
        let source = reload::Source::File {
            path: "t.yaml".into(),
            listen: None,
            admin_listen: None,
        };
        let state = std::sync::Arc::new(State::new(config, source));
        let held = state.enter();
        assert_eq!(state.in_flight.load(Ordering::Acquire), 1);
        let s = state.clone();
        // A request's context dropped while its task unwinds.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _request = s.enter();
            assert_eq!(s.in_flight.load(Ordering::Acquire), 2);
            panic!("a bug in a dependency");
        }));
        assert!(unwound.is_err());
        assert_eq!(state.in_flight.load(Ordering::Acquire), 1);
        drop(held);
        assert_eq!(state.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn request_id_keeps_well_formed_values_only() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "abc-123.x:y_z").unwrap();
        assert_eq!(request_id(&req), "abc-123.x:y_z");
        req.insert_header("x-request-id", "bad id with spaces")
            .unwrap();
        let id = request_id(&req);
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(request_id(&req), id);
    }
}
