//! Routing: which backend gets an attempt, and the run-time state behind
//! that choice.
//!
//! A route's targets are grouped by `priority`; a group is used only when no
//! target of an earlier group is available. Within a group the route's
//! strategy picks: `weighted` (random by weight), `least_inflight`, or
//! `latency` (power of two choices over a peak-EWMA of time to first byte).
//! A target is available when its backend resolved, is not drained, is not
//! unhealthy, its breaker admits, it is not throttled by a 429, its
//! bulkhead has room, and the caller's allowed-set (policy: data residency)
//! contains it. A retry prefers targets not tried yet, in priority order,
//! before trying one again. A target weighted 0 takes no traffic while any
//! target with a positive weight is available, but remains a last resort
//! (an operator who shifted all traffic to one cloud still gets failover
//! when it goes down); draining is how a backend is taken out entirely.
//!
//! - [`breaker`]: the circuit breaker and 429 throttling (pure, virtual time)
//! - [`budget`]: the retry budget per route (pure, virtual time)
//! - [`ewma`]: the peak-EWMA latency estimate (pure, virtual time)
//! - [`health`]: active health verdicts → status, and the probe
//! - [`state`]: per-backend and per-route state kept across reloads
//! - [`retry`]: backoff and `Retry-After`

pub mod breaker;
pub mod budget;
pub mod ewma;
pub mod health;
pub mod retry;
pub mod state;

use crate::backend::BackendRt;
use rand::Rng;
use skygate_config::{Backend, Route, Strategy};
use state::{Attempt, RouteState, Unavailable};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A chosen target, holding its slot until dropped.
pub struct Chosen<'a> {
    /// Index of the backend in the snapshot.
    pub backend: usize,
    pub attempt: Attempt<'a>,
}

/// Why no target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTarget {
    /// Some target would be available but for its full bulkhead; waiting up
    /// to `queue_timeout` for a slot may help.
    Full { queue_timeout: Duration },
    /// Every target is unresolved, open, throttled, drained, unhealthy or
    /// not allowed; `retry_after` when one is known to come back.
    Unavailable {
        retry_after: Option<Duration>,
        why: Reasons,
    },
}

/// The reasons targets were passed over, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reasons(u8);

impl Reasons {
    fn bit(why: Unavailable) -> u8 {
        match why {
            Unavailable::Open(_) => 1,
            Unavailable::Throttled(_) => 2,
            Unavailable::Unhealthy => 4,
            Unavailable::Drained => 8,
            Unavailable::Unresolved => 16,
            Unavailable::Full => 32,
        }
    }

    fn add(&mut self, why: Unavailable) {
        self.0 |= Self::bit(why);
    }

    /// E.g. `circuit open, drained`.
    pub fn describe(self) -> String {
        const NAMES: [(u8, &str); 6] = [
            (1, "circuit open"),
            (2, "throttled (429)"),
            (4, "unhealthy"),
            (8, "drained"),
            (16, "address not resolved"),
            (32, "at its concurrency limit"),
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            "none may serve this request".to_string()
        } else {
            names.join(", ")
        }
    }
}

/// The latency strategy's cost per in-flight request of a backend with no
/// latency sample yet (10 s, in ns).
const UNMEASURED_PENALTY_NS: f64 = 10e9;

/// Narrows the targets a request may use (policy: data residency,
/// classification), by backend index.
pub type Allowed<'a> = &'a (dyn Fn(usize) -> bool + Sync);

/// Picks a target for one attempt of a request on `route`, skipping the
/// backends in `tried` while any other target is available.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the one decision
pub fn pick<'a>(
    route: &Route,
    state: &RouteState,
    backends: &'a [Arc<BackendRt>],
    tried: &[usize],
    allowed: Option<Allowed<'_>>,
    now: Instant,
    rng: &mut impl Rng,
) -> Result<Chosen<'a>, NoTarget> {
    let overrides = state.overrides_guard();
    let mut full: Option<Duration> = None;
    let mut soonest: Option<Instant> = None;
    let mut why = Reasons::default();
    // Inline for up to 8 targets a group: no allocation per request.
    let mut cands: smallvec::SmallVec<[(usize, u32); 8]> = smallvec::SmallVec::new();
    // Passes, in order: targets not tried yet with a positive weight, then
    // untried ones weighted 0 (a last resort), then the tried ones again: a
    // retry goes to another backend whenever there is one.
    // Cold-aware: while a prewarmed target's warmth model says a request
    // would cold-start, a first pass takes only the warm targets of each
    // priority group (a group with only cold ones ends the pass: warmth
    // never jumps a priority; hedging does that), and the cold ones get
    // pinged.
    let now_ms = route
        .targets
        .iter()
        .any(|t| backends[t.backend].state.cold_aware())
        .then(crate::routing::state::unix_ms);
    let cold =
        |b: &BackendRt| now_ms.is_some_and(|ms| b.state.cold_aware() && b.state.likely_cold(ms));
    let any_cold = now_ms.is_some()
        && route
            .targets
            .iter()
            .any(|t| !tried.contains(&t.backend) && cold(&backends[t.backend]));
    const PASSES: [(bool, bool, bool); 5] = [
        (true, false, true),
        (true, false, false),
        (true, true, false),
        (false, false, false),
        (false, true, false),
    ];
    'passes: for (fresh_only, spare, warm_only) in PASSES {
        if (!fresh_only && tried.is_empty()) || (warm_only && !any_cold) {
            continue;
        }
        let mut start = 0;
        while start < route.targets.len() {
            let prio = route.targets[start].priority;
            let end = route.targets[start..]
                .iter()
                .position(|t| t.priority != prio)
                .map_or(route.targets.len(), |n| start + n);
            cands.clear();
            let mut skipped_cold = false;
            for t in &route.targets[start..end] {
                let b = &backends[t.backend];
                let w = effective_weight(overrides.as_deref(), b, t);
                // A spare (weight 0) counts with weight 1 in the last passes.
                let w = match (w, spare) {
                    (0, true) => 1,
                    (0, false) | (_, true) => continue,
                    (w, false) => w,
                };
                if fresh_only && tried.contains(&t.backend) {
                    continue;
                }
                if warm_only && cold(b) {
                    skipped_cold = true;
                    continue;
                }
                if allowed.is_some_and(|f| !f(t.backend)) {
                    continue;
                }
                if b.peer.load().is_err() {
                    why.add(Unavailable::Unresolved);
                    continue;
                }
                match b.state.quick_check(&b.config) {
                    Ok(()) => cands.push((t.backend, w)),
                    Err(u) => note(u, &b.config, &mut full, &mut soonest, &mut why),
                }
            }
            while !cands.is_empty() {
                let k = choose(route.strategy, &cands, backends, now, rng);
                let (bi, _) = cands.swap_remove(k);
                let b = &backends[bi];
                match b.state.try_acquire(now, &b.config) {
                    Ok(attempt) => {
                        if warm_only {
                            ping_cold(route, backends, bi, now_ms);
                        }
                        return Ok(Chosen {
                            backend: bi,
                            attempt,
                        });
                    }
                    Err(u) => note(u, &b.config, &mut full, &mut soonest, &mut why),
                }
            }
            if skipped_cold {
                // Only cold targets left in this group: the next pass picks
                // among them (the group's priority stands).
                continue 'passes;
            }
            start = end;
        }
    }
    Err(match full {
        Some(queue_timeout) => NoTarget::Full { queue_timeout },
        None => NoTarget::Unavailable {
            retry_after: soonest.map(|t| t.saturating_duration_since(now)),
            why,
        },
    })
}

/// A target's weight now: an operator's run-time override, else the config's.
fn effective_weight(
    overrides: Option<&state::WeightOverride>,
    b: &BackendRt,
    t: &skygate_config::Target,
) -> u32 {
    overrides
        .and_then(|o| o.weight_of(&b.config.name))
        .unwrap_or(t.weight)
}

/// Asks for a ping of every target of the chosen one's group passed over
/// as cold.
fn ping_cold(route: &Route, backends: &[Arc<BackendRt>], chosen: usize, now_ms: Option<u64>) {
    let Some(ms) = now_ms else { return };
    let prio = route
        .targets
        .iter()
        .find(|t| t.backend == chosen)
        .map(|t| t.priority);
    for t in &route.targets {
        let b = &backends[t.backend];
        if t.backend != chosen
            && Some(t.priority) == prio
            && b.state.cold_aware()
            && b.state.likely_cold(ms)
        {
            b.state.want_pings(1, crate::prewarm::Why::ColdRoute);
        }
    }
}

/// A warm target for a hedge: not tried, allowed, weighted above 0,
/// available, and not likely cold, in the route's priority order (any
/// group).
pub fn pick_warm<'a>(
    route: &Route,
    state: &RouteState,
    backends: &'a [Arc<BackendRt>],
    tried: &[usize],
    allowed: Option<Allowed<'_>>,
    now: Instant,
) -> Option<Chosen<'a>> {
    let ms = crate::routing::state::unix_ms();
    let overrides = state.overrides_guard();
    for t in &route.targets {
        let b = &backends[t.backend];
        let weight = effective_weight(overrides.as_deref(), b, t);
        // A target weighted 0 is a last resort, not a hedge.
        if weight == 0
            || tried.contains(&t.backend)
            || allowed.is_some_and(|f| !f(t.backend))
            || b.peer.load().is_err()
            || b.state.likely_cold(ms)
            || b.state.quick_check(&b.config).is_err()
        {
            continue;
        }
        if let Ok(attempt) = b.state.try_acquire(now, &b.config) {
            return Some(Chosen {
                backend: t.backend,
                attempt,
            });
        }
    }
    None
}

fn note(
    u: Unavailable,
    b: &Backend,
    full: &mut Option<Duration>,
    soonest: &mut Option<Instant>,
    why: &mut Reasons,
) {
    why.add(u);
    match u {
        Unavailable::Full => {
            *full = Some(full.unwrap_or_default().max(b.limits.queue_timeout));
        }
        other => {
            if let Some(t) = other.until() {
                *soonest = Some(soonest.map_or(t, |s| s.min(t)));
            }
        }
    }
}

/// Index into `cands` (backend, effective weight > 0) by `strategy`.
fn choose(
    strategy: Strategy,
    cands: &[(usize, u32)],
    backends: &[Arc<BackendRt>],
    now: Instant,
    rng: &mut impl Rng,
) -> usize {
    if cands.len() == 1 {
        return 0;
    }
    match strategy {
        Strategy::Weighted => {
            let total: u64 = cands.iter().map(|c| u64::from(c.1)).sum();
            let mut x = rng.gen_range(0..total.max(1));
            for (k, c) in cands.iter().enumerate() {
                let w = u64::from(c.1);
                if x < w {
                    return k;
                }
                x -= w;
            }
            cands.len() - 1
        }
        Strategy::LeastInflight => {
            // Lowest (in-flight + 1) / weight; ties broken at random.
            let load = |k: usize| {
                let (b, w) = cands[k];
                (u64::from(backends[b].state.in_flight()) + 1, u64::from(w))
            };
            let mut best = 0;
            let mut ties = 1u32;
            for k in 1..cands.len() {
                let (ln, lw) = load(k);
                let (bn, bw) = load(best);
                match (ln * bw).cmp(&(bn * lw)) {
                    std::cmp::Ordering::Less => {
                        best = k;
                        ties = 1;
                    }
                    std::cmp::Ordering::Equal => {
                        ties += 1;
                        if rng.gen_range(0..ties) == 0 {
                            best = k;
                        }
                    }
                    std::cmp::Ordering::Greater => {}
                }
            }
            best
        }
        Strategy::Latency => {
            // Power of two choices: two distinct candidates at random, the
            // one with the lower peak-EWMA × (in-flight + 1) / weight wins.
            let a = rng.gen_range(0..cands.len());
            let mut b = rng.gen_range(0..cands.len() - 1);
            if b >= a {
                b += 1;
            }
            let cost = |k: usize| {
                let (bi, w) = cands[k];
                let s = &backends[bi].state;
                let in_flight = f64::from(s.in_flight());
                match s.latency(now) {
                    Some(ewma) => ewma * (in_flight + 1.0) / f64::from(w),
                    // Not measured yet: free while idle (so it gets tried),
                    // a heavy penalty per request in flight (so a burst
                    // does not all land on it before its first answer), as
                    // Finagle does.
                    None => UNMEASURED_PENALTY_NS * in_flight / f64::from(w),
                }
            };
            let (ca, cb) = (cost(a), cost(b));
            if ca < cb || (ca == cb && rng.gen_bool(0.5)) {
                a
            } else {
                b
            }
        }
    }
}

#[cfg(test)]
mod tests;
