//! Prewarm pings, as a Pingora background service: one task per backend
//! with a warmth model, restarted whenever a reload swaps the snapshot. Each
//! task asks the backend's planner what to do, sends the pings it wants
//! (concurrently, so k pings reach k instances), and sleeps until the
//! planner's next time or a wake-up (traffic, an operator, a router that
//! passed the backend over as cold, a reload).
//!
//! A ping is the backend kind's own minimal call, made by its adapter (so
//! it is signed and addressed like a user request), marked
//! `x-skygate-prewarm: 1` with `x-skygate-prewarm-hold-ms`. It goes to
//! that backend only, outside the request pipeline: never rate limited,
//! cached, retried or routed elsewhere. With Redis, replicas take a lease
//! (`SET NX PX`) per backend and due time, so one replica pings.

use crate::State;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use skygate_backends::prewarm::{Plan, Why};
use skygate_backends::routing::state::unix_ms;
use skygate_backends::{Adapter, BackendRt, Call};
use skygate_config::{Operation, PrewarmMode};
use std::sync::Arc;
use std::time::Duration;

pub struct Prewarmer {
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for Prewarmer {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::health::per_backend(&self.state, shutdown, |snap, i, b| {
            if !b.state.tracked() {
                return None;
            }
            // A model kind's ping asks for a model a route serves from it
            // (Azure OpenAI maps it to its deployment).
            let model = snap
                .config
                .routes
                .iter()
                .find(|r| r.targets.iter().any(|t| t.backend == i) && !r.models.is_empty())
                .map(|r| r.models[0].clone());
            Some(tokio::spawn(backend_loop(
                self.state.clone(),
                b.clone(),
                model,
            )))
        })
        .await
    }
}

/// The most pings in one round (a platform packing many requests per
/// instance takes many pings per instance).
const MAX_ROUND: u32 = 1_000;

async fn backend_loop(state: Arc<State>, b: Arc<BackendRt>, model: Option<String>) {
    // The lease this replica holds now (its own later pings need no other).
    let mut held: Option<(String, u64)> = None;
    // Rounds in a row that failed or fell short: each doubles the pause
    // before the next (1 s, 2 s, ... at most a minute).
    let mut short_rounds = 0u32;
    loop {
        let now = unix_ms();
        let Some(plan) = b.state.with_planner(|p| p.plan(now)) else {
            return;
        };
        // Pings never take more than the backend's `max_in_flight` leaves.
        let max = b.config.limits.max_in_flight;
        let pings = if max > 0 {
            plan.pings.min(max.saturating_sub(b.state.in_flight()))
        } else {
            plan.pings
        }
        .min(MAX_ROUND);
        if pings > 0 {
            let ok = if lease(&state, &b, &plan, now, &mut held).await {
                send_pings(&state, &b, pings, model.as_deref()).await
            } else {
                b.state.with_planner(|p| p.peer_pinged(pings, unix_ms()));
                count(&b, "peer", u64::from(pings));
                pings
            };
            short_rounds = if ok < plan.pings {
                short_rounds.saturating_add(1)
            } else {
                0
            };
            // At most a round a second; after rounds that failed or fell
            // short, longer (then plan again at once).
            let pause = Duration::from_secs(1 << short_rounds.min(6)).min(Duration::from_secs(60));
            tokio::time::sleep(pause).await;
            continue;
        }
        let wait = Duration::from_millis(plan.next.saturating_sub(now).min(3_600_000));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = b.state.prewarm_woken() => {}
        }
    }
}

/// With Redis, one replica pings per backend and due time: the first to
/// take the lease. An operator's ask, a router's (a local decision on a
/// request this replica is serving), and a gateway without Redis (or with
/// Redis down) ping without one.
async fn lease(
    state: &State,
    b: &BackendRt,
    plan: &Plan,
    now: u64,
    held: &mut Option<(String, u64)>,
) -> bool {
    let redis = &state.shared.redis;
    if matches!(plan.why, Why::OnDemand | Why::ColdRoute) || !redis.is_configured() {
        return true;
    }
    let p = &b.config.prewarm;
    let idle = p.idle_timeout.unwrap_or(Duration::from_secs(600));
    // Fixed rounds fall on the same wall-clock times on every replica: the
    // lease is the round's. Adaptive pings share slots a tenth of the idle
    // timeout long.
    let every = match p.mode {
        PrewarmMode::Fixed => p.interval,
        _ => idle / 10,
    }
    .as_millis()
    .max(1) as u64;
    let slot = now / every;
    if held.as_ref().is_some_and(|(_, s)| *s == slot) {
        return true;
    }
    let key = format!("{}:prewarm:{}:{slot}", redis.prefix(), b.config.name);
    let ttl = Duration::from_millis(every).max(Duration::from_secs(1));
    match redis.lease(&key, &owner(), ttl).await {
        Ok(true) => {
            *held = Some((key, slot));
            true
        }
        // Ours already (taken before a reload restarted this task)?
        Ok(false) => {
            let mine = redis
                .get(&key)
                .await
                .is_ok_and(|v| v.as_deref() == Some(owner().as_bytes()));
            if mine {
                *held = Some((key, slot));
            }
            mine
        }
        Err(e) => {
            log::debug!(
                "backend `{}`: prewarm lease not taken ({e}); pinging alone",
                b.config.name
            );
            true
        }
    }
}

/// This process, as a lease's owner.
fn owner() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER
        .get_or_init(|| format!("{}-{:016x}", std::process::id(), rand::random::<u64>()))
        .clone()
}

/// How a ping went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pinged {
    Answered,
    Failed,
    /// Never sent (its adapter could not build it).
    Unsent,
}

/// Sends `k` pings at once and tells the planner how each went; returns
/// how many were answered.
async fn send_pings(state: &State, b: &BackendRt, k: u32, model: Option<&str>) -> u32 {
    // Why the last ping of the round could not be sent, for the warning.
    let last_unsent = &std::sync::Mutex::new(None::<String>);
    let pings = (0..k).map(|_| async {
        let Some(ticket) = b.state.with_planner(|p| p.ping_start(unix_ms())) else {
            return Pinged::Failed;
        };
        // A reload aborts this task: the guard gives the ping's place back.
        let mut guard = Abandon {
            b,
            ticket: Some(ticket),
        };
        let (ok, cold) = match ping(state, b, model).await {
            Ok(answer) => answer,
            Err(why) => {
                // Never sent: not a ping, and not a failure of the backend;
                // counted apart (and said, when whole rounds go unsent).
                log::debug!("backend `{}`: prewarm ping not sent: {why}", b.config.name);
                if let Some(ticket) = guard.ticket.take() {
                    let counted = b.state.with_planner(|p| p.ping_unsent(ticket, unix_ms()));
                    if counted == Some(true) {
                        count(b, "unsent", 1);
                    }
                }
                *last_unsent.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                return Pinged::Unsent;
            }
        };
        if let Some(ticket) = guard.ticket.take() {
            b.state
                .with_planner(|p| p.ping_end(ticket, unix_ms(), ok, cold));
        }
        count(b, if ok { "ok" } else { "failed" }, 1);
        if ok {
            Pinged::Answered
        } else {
            Pinged::Failed
        }
    });
    let pinged = futures_util::future::join_all(pings).await;
    let n = |what| pinged.iter().filter(|&&p| p == what).count() as u32;
    let unsent = n(Pinged::Unsent);
    let rounds = b
        .state
        .with_planner(|p| p.round_end(k - unsent, unsent))
        .unwrap_or(0);
    if rounds == UNSENT_WARN {
        let why = last_unsent.lock().unwrap_or_else(|p| p.into_inner()).take();
        log::warn!(
            "backend `{}`: {rounds} rounds of prewarm pings in a row could not be sent ({}); it is not being kept warm",
            b.config.name,
            why.as_deref().unwrap_or("?")
        );
    }
    n(Pinged::Answered)
}

/// Rounds in a row of which no ping could be sent before a warning (the
/// first after a start may lack credentials: a Cloud Run ID token is
/// minted in the background).
const UNSENT_WARN: u32 = 3;

/// Abandons a ping's ticket unless it was settled.
struct Abandon<'a> {
    b: &'a BackendRt,
    ticket: Option<skygate_backends::prewarm::Ticket>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            // Counted failed in the backend's status: in the metric too.
            let counted = self
                .b
                .state
                .with_planner(|p| p.abandon(t, unix_ms(), false));
            if counted == Some(true) {
                count(self.b, "failed", 1);
            }
        }
    }
}

/// The body of a ping: the backend's `ping.body`, else a function event
/// that says what it is, or a one-token chat for model kinds (of a model a
/// route serves from the backend).
fn ping_body(b: &BackendRt, op: Operation, model: Option<&str>) -> Bytes {
    if let Some(body) = &b.config.prewarm.ping_body {
        return Bytes::from(body.clone());
    }
    let hold = b.config.prewarm.hold.as_millis();
    match op {
        Operation::Function => {
            Bytes::from(format!("{{\"skygate_prewarm\":true,\"hold_ms\":{hold}}}"))
        }
        _ => Bytes::from(
            serde_json::json!({
                "model": model.unwrap_or("skygate-prewarm"),
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            })
            .to_string(),
        ),
    }
}

/// One ping: whether the backend answered (any status below 500 but 429),
/// and whether it said the ping cold-started; `Err` (why) when it could
/// not be sent (no credentials yet for its backend, a request that does
/// not build), which says nothing of the backend.
async fn ping(
    state: &State,
    b: &BackendRt,
    model: Option<&str>,
) -> Result<(bool, Option<bool>), String> {
    let op = if b.config.kind.serves(Operation::Function) {
        Operation::Function
    } else {
        Operation::ChatCompletions
    };
    let body = ping_body(b, op, model);
    let mut client =
        pingora_http::RequestHeader::build("POST", b"/", Some(2)).map_err(|e| e.to_string())?;
    let _ = client.insert_header(http::header::CONTENT_TYPE, "application/json");
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request_id = format!("prewarm-{}-{n}", std::process::id());
    let path_suffix = b.config.prewarm.ping_path.clone().unwrap_or_default();
    let call = Call {
        operation: op,
        method: &http::Method::POST,
        path_suffix: &path_suffix,
        client: &client,
        request_id: &request_id,
        body: &body,
        forwarded_for: None,
        identity: None,
        stream: false,
        model,
        traceparent: None,
        tracestate: None,
    };
    let hold = b.config.prewarm.hold.as_millis().to_string();
    let prepare = || {
        let mut p = b.adapter.prepare(&b.config, &call)?;
        p.header
            .insert_header("x-skygate-prewarm", "1")
            .map_err(|e| {
                skygate_config::ApiError::new(skygate_config::ErrorKind::Internal, e.to_string())
            })?;
        p.header
            .insert_header("x-skygate-prewarm-hold-ms", hold.as_str())
            .map_err(|e| {
                skygate_config::ApiError::new(skygate_config::ErrorKind::Internal, e.to_string())
            })?;
        Ok(p)
    };
    let slot = b.peer.load_full();
    let Ok(resolved) = slot.as_ref() else {
        // Its address does not resolve: the backend cannot be reached.
        return Ok((false, None));
    };
    let mut resp = match state
        .upstream
        .send(&b.config, &resolved.peer, prepare)
        .await
    {
        Ok(r) => r,
        Err(e) if e.kind.fault() != skygate_config::Fault::Upstream => {
            return Err(e.to_string());
        }
        Err(e) => {
            log::debug!("backend `{}`: prewarm ping failed: {e}", b.config.name);
            return Ok((false, None));
        }
    };
    let status = resp.header().map_or(0, |h| h.status.as_u16());
    let header_says = b.config.prewarm.cold_header.as_ref().and_then(|name| {
        resp.header()
            .and_then(|h| h.headers.get(name))
            .map(|v| matches!(v.as_bytes(), b"true" | b"1" | b"yes"))
    });
    // Read it to its end (bounded by the kind's answer limits), so the
    // platform's report of a cold start (Lambda's log tail) is seen.
    let mut ended = false;
    for _ in 0..4096 {
        match resp.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    let reported = resp.cold_start().then_some(true);
    if ended {
        let h2 = state
            .upstream
            .release(&mut resp, &resolved.peer, b.config.pool_idle_timeout);
        if let Some(h2) = h2 {
            h2.await;
        }
    }
    let lambda_tail =
        matches!(&b.config.platform, skygate_config::Platform::Lambda(l) if l.log_tail);
    let cold = reported.or(header_says).or(lambda_tail.then_some(false));
    let ok = status != 0 && status != 429 && status < 500;
    if !ok {
        log::debug!(
            "backend `{}`: prewarm ping answered {status}",
            b.config.name
        );
    }
    Ok((ok, cold))
}

fn count(b: &BackendRt, result: &str, n: u64) {
    if let Some(m) = crate::metrics::get() {
        m.prewarm_pings
            .with_label_values(&[&b.name, result])
            .inc_by(n);
    }
}
