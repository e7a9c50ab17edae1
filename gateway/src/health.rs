//! Active health checks, as a Pingora background service: one task per
//! backend with a `health_check`, probing every `interval` on connections of
//! its own (never the request pool), restarted whenever a reload swaps the
//! snapshot. Probes are not traffic: they feed only the health status.

use crate::runtime::Snapshot;
use crate::State;
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use skygate_backends::routing::health::probe;
use skygate_backends::BackendRt;
use std::sync::Arc;

pub struct HealthChecks {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, shutdown: ShutdownWatch) {
        let connector = Arc::new(Connector::new(None));
        per_backend(&self.state, shutdown, |_, _, b| {
            b.config
                .health_check
                .is_some()
                .then(|| tokio::spawn(check_loop(b.clone(), connector.clone())))
        })
        .await
    }
}

/// Runs one task per backend (those `spawn` starts one for) and restarts
/// them all whenever a reload swaps the snapshot, until shutdown.
pub(crate) async fn per_backend(
    state: &State,
    mut shutdown: ShutdownWatch,
    spawn: impl Fn(&Snapshot, usize, &Arc<BackendRt>) -> Option<tokio::task::JoinHandle<()>>,
) {
    let mut generation = state.generation.subscribe();
    loop {
        let snap = state.snapshot();
        let tasks: Vec<_> = snap
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| spawn(&snap, i, b))
            .collect();
        drop(snap);
        let stop = tokio::select! {
            r = generation.changed() => r.is_err(),
            _ = shutdown.changed() => true,
        };
        for t in &tasks {
            t.abort();
        }
        if stop {
            return;
        }
    }
}

async fn check_loop(b: Arc<BackendRt>, connector: Arc<Connector>) {
    let Some(hc) = b.config.health_check.clone() else {
        return;
    };
    loop {
        // Probes stay `interval` apart even when reloads restart this task.
        let wait = b.state.probe_due_in(std::time::Instant::now(), hc.interval);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            continue;
        }
        let result = probe(&connector, &b, &hc).await;
        if let Err(why) = &result {
            log::debug!("backend `{}`: health check failed: {why}", b.config.name);
        }
        b.state.observe_probe(result.is_ok(), &hc);
        if let Some(m) = crate::metrics::get() {
            let verdict = if result.is_ok() { "ok" } else { "failed" };
            m.health_checks
                .with_label_values(&[&b.config.name, verdict])
                .inc();
        }
    }
}
