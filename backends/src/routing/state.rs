//! Run-time state that outlives a config snapshot: per backend (breaker,
//! latency estimate, in-flight count, health, drain) and per route (retry
//! budget, run-time weight overrides), kept in a [`Registry`] by name, so a
//! reload keeps it for the backends and routes that still exist.

use super::breaker::{Breaker, BreakerState, Refusal, Transition, Verdict};
use super::budget::Budget;
use super::ewma::PeakEwma;
use super::health::{Health, HealthTracker};
use crate::prewarm::{Millis, Planner, Ticket, View, Why};
use arc_swap::ArcSwapOption;
use skygate_config::{Backend, HealthCheck, Route};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few field updates that cannot panic
    // half-way, so a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes requests waiting for a bulkhead slot (`queue_timeout`).
#[derive(Default)]
pub struct Signal {
    notify: Notify,
    waiters: AtomicUsize,
}

impl Signal {
    fn freed(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Registers a waiter *before* the caller looks for a slot, so a slot
    /// freed in between still wakes it.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        Waiter {
            signal: self,
            notified,
        }
    }
}

/// One request waiting for a slot.
pub struct Waiter<'a> {
    signal: &'a Signal,
    notified: Pin<Box<Notified<'a>>>,
}

impl Waiter<'_> {
    /// Waits until a slot is freed somewhere, or `deadline`.
    pub async fn wait(mut self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline.into(), self.notified.as_mut()).await;
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.signal.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Inner {
    breaker: Breaker,
    ewma: PeakEwma,
    health: HealthTracker,
}

/// Why a backend cannot take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Its bulkhead (`limits.max_in_flight`) is full.
    Full,
    /// Its host name did not resolve.
    Unresolved,
    /// Drained by an operator.
    Drained,
    /// Failing active health checks.
    Unhealthy,
    /// Breaker open, or half-open with every trial slot taken.
    Open(Option<Instant>),
    /// A 429 set it aside until then.
    Throttled(Instant),
}

impl Unavailable {
    /// The reason, as error messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "at its concurrency limit",
            Self::Unresolved => "address not resolved",
            Self::Drained => "drained",
            Self::Unhealthy => "unhealthy",
            Self::Open(_) => "circuit open",
            Self::Throttled(_) => "throttled (429)",
        }
    }

    /// When it may be available again, if known.
    pub fn until(self) -> Option<Instant> {
        match self {
            Self::Open(t) => t,
            Self::Throttled(t) => Some(t),
            _ => None,
        }
    }
}

/// A failed attempt is counted as at least this slow in the latency
/// estimate, so a backend that fails fast never looks fast.
pub const FAILURE_LATENCY_FLOOR: Duration = Duration::from_millis(250);

/// The run-time state of one backend.
pub struct BackendState {
    name: String,
    in_flight: AtomicU32,
    drained: AtomicBool,
    inner: Mutex<Inner>,
    signal: Arc<Signal>,
    probes_failed: AtomicU64,
    /// When the last active probe started (probes restart on every reload;
    /// this keeps them `interval` apart across restarts).
    last_probe: Mutex<Option<Instant>>,
    /// Cold starts the platform reported (Lambda's `Init Duration`).
    cold_starts: AtomicU64,
    /// When the last one was seen.
    last_cold_start: Mutex<Option<std::time::SystemTime>>,
    /// The warmth model and prewarm policy, for backends with a known idle
    /// timeout (`tracked`).
    planner: Mutex<Option<Planner>>,
    tracked: AtomicBool,
    /// Prewarm is on (`fixed` or `adaptive`): the router may pass the
    /// backend over while it is likely cold, and ping it.
    prewarmed: AtomicBool,
    /// Wakes the backend's prewarm task (an operator's ask, a reload, a
    /// router that passed it over as cold, traffic that changed the plan).
    prewarm_wake: Notify,
}

fn prewarmed(cfg: &Backend) -> bool {
    cfg.prewarm.tracked() && cfg.prewarm.mode != skygate_config::PrewarmMode::Off
}

/// Unix time in ms, the prewarm planner's clock.
pub fn unix_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// What an attempt's outcome was, for the breaker and the latency estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response header arrived after `ttfb` (any status but 5xx and 429).
    Success { ttfb: Duration },
    /// Connect error, timeout, 5xx, or a failure mid-response.
    Failure { elapsed: Duration },
    /// 429, with the backend's `Retry-After`.
    Throttled(Option<Duration>),
}

impl BackendState {
    fn new(name: &str, now: Instant, cfg: &Backend, signal: Arc<Signal>) -> Self {
        Self {
            name: name.to_string(),
            in_flight: AtomicU32::new(0),
            drained: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                breaker: Breaker::new(now, &cfg.breaker),
                ewma: PeakEwma::default(),
                health: HealthTracker::default(),
            }),
            signal,
            probes_failed: AtomicU64::new(0),
            last_probe: Mutex::new(None),
            cold_starts: AtomicU64::new(0),
            last_cold_start: Mutex::new(None),
            planner: Mutex::new(
                cfg.prewarm
                    .tracked()
                    .then(|| Planner::new(&cfg.prewarm, unix_ms())),
            ),
            tracked: AtomicBool::new(cfg.prewarm.tracked()),
            prewarmed: AtomicBool::new(prewarmed(cfg)),
            prewarm_wake: Notify::new(),
        }
    }

    /// Whether the backend has a warmth model.
    pub fn tracked(&self) -> bool {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Runs `f` on the planner, if the backend has one.
    pub fn with_planner<R>(&self, f: impl FnOnce(&mut Planner) -> R) -> Option<R> {
        if !self.tracked() {
            return None;
        }
        lock(&self.planner).as_mut().map(f)
    }

    /// Whether a request now would likely cold-start (no warm instance with
    /// room in the model); `false` for backends without a model.
    pub fn likely_cold(&self, now: Millis) -> bool {
        self.with_planner(|p| p.likely_cold(now)).unwrap_or(false)
    }

    /// Whether the router routes around this backend while it is cold (and
    /// pings it): only with prewarm on, so that a backend passed over gets
    /// warm again and the route's split comes back.
    pub fn cold_aware(&self) -> bool {
        self.prewarmed.load(Ordering::Relaxed)
    }

    /// Asks the prewarm task for `k` pings now.
    pub fn want_pings(&self, k: u32, why: Why) -> bool {
        let asked = self.with_planner(|p| p.want(k, why, unix_ms())).is_some();
        if asked {
            self.prewarm_wake.notify_one();
        }
        asked
    }

    /// Wakes the prewarm task to plan again.
    pub fn wake_prewarm(&self) {
        self.prewarm_wake.notify_one();
    }

    /// Waits until the prewarm task is woken.
    pub async fn prewarm_woken(&self) {
        self.prewarm_wake.notified().await
    }

    /// The warmth state, for backends with a model.
    pub fn warmth(&self, now: Millis) -> Option<View> {
        self.with_planner(|p| p.view(now))
    }

    /// Records a cold start the platform reported.
    pub fn record_cold_start(&self, at: std::time::SystemTime) {
        self.cold_starts.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_cold_start) = Some(at);
    }

    /// Cold starts reported so far, and when the last one was.
    pub fn cold_starts(&self) -> (u64, Option<std::time::SystemTime>) {
        (
            self.cold_starts.load(Ordering::Relaxed),
            *lock(&self.last_cold_start),
        )
    }

    /// How long to wait before the next probe so that probes stay
    /// `interval` apart; records `now` as the probe's start when it is 0.
    pub fn probe_due_in(&self, now: Instant, interval: Duration) -> Duration {
        let mut last = lock(&self.last_probe);
        let wait = last.map_or(Duration::ZERO, |t| {
            interval.saturating_sub(now.saturating_duration_since(t))
        });
        if wait.is_zero() {
            *last = Some(now);
        }
        wait
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Drains (no new requests; in-flight ones finish) or undrains; returns
    /// the previous setting.
    pub fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Ordering::AcqRel)
    }

    pub fn health(&self) -> Health {
        lock(&self.inner).health.status()
    }

    /// The latency estimate at `now`, nanoseconds, or `None` before the
    /// first sample.
    pub fn latency(&self, now: Instant) -> Option<f64> {
        let inner = lock(&self.inner);
        inner.ewma.measured().then(|| inner.ewma.estimate(now))
    }

    /// The lock-free part of [`BackendState::check`]: drain and bulkhead.
    /// The router filters with it and leaves the breaker and health to
    /// [`BackendState::try_acquire`], so a pick locks one backend, once.
    pub fn quick_check(&self, cfg: &Backend) -> Result<(), Unavailable> {
        if self.drained() {
            return Err(Unavailable::Drained);
        }
        let max = cfg.limits.max_in_flight;
        if max > 0 && self.in_flight() >= max {
            return Err(Unavailable::Full);
        }
        Ok(())
    }

    /// Whether a request could go here now (no side effects).
    pub fn check(&self, now: Instant, cfg: &Backend) -> Result<(), Unavailable> {
        if self.drained() {
            return Err(Unavailable::Drained);
        }
        let max = cfg.limits.max_in_flight;
        if max > 0 && self.in_flight() >= max {
            return Err(Unavailable::Full);
        }
        let inner = lock(&self.inner);
        if !inner.health.status().takes_traffic() {
            return Err(Unavailable::Unhealthy);
        }
        inner.breaker.check(now, &cfg.breaker).map_err(refusal)
    }

    /// Takes a slot for one attempt: the bulkhead, and a trial slot when the
    /// breaker is half-open.
    pub fn try_acquire<'a>(
        &'a self,
        now: Instant,
        cfg: &'a Backend,
    ) -> Result<Attempt<'a>, Unavailable> {
        if self.drained() {
            return Err(Unavailable::Drained);
        }
        let max = cfg.limits.max_in_flight;
        let took = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            });
        if took.is_err() {
            return Err(Unavailable::Full);
        }
        let admitted = {
            let mut inner = lock(&self.inner);
            if inner.health.status().takes_traffic() {
                inner.breaker.admit(now, &cfg.breaker).map_err(refusal)
            } else {
                Err(Unavailable::Unhealthy)
            }
        };
        match admitted {
            Ok((trial, transition)) => {
                if let Some(t) = transition {
                    self.log(t);
                }
                let warm = self
                    .with_planner(|p| p.user_start(unix_ms()))
                    .map(|ticket| {
                        Box::new(WarmTicket {
                            ticket,
                            first_byte: None,
                            cold: None,
                            failed: false,
                        })
                    });
                Ok(Attempt {
                    state: self,
                    cfg,
                    trial,
                    judged: false,
                    warm,
                })
            }
            Err(why) => {
                self.release();
                Err(why)
            }
        }
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.signal.freed();
    }

    fn log(&self, t: Transition) {
        match t {
            Transition::Opened { after_failures } => log::warn!(
                "backend `{}`: circuit breaker opened ({after_failures} failures in a row at the time)",
                self.name
            ),
            Transition::HalfOpened => log::info!(
                "backend `{}`: circuit breaker half-open, sending a trial request",
                self.name
            ),
            Transition::Closed => {
                log::info!("backend `{}`: circuit breaker closed", self.name)
            }
            Transition::Throttled(d) => log::info!(
                "backend `{}`: throttled (429); set aside for {d:?}",
                self.name
            ),
        }
    }

    /// Records an active probe's verdict.
    pub fn observe_probe(&self, ok: bool, cfg: &HealthCheck) {
        if !ok {
            self.probes_failed.fetch_add(1, Ordering::Relaxed);
        }
        let changed = lock(&self.inner).health.observe(ok, cfg);
        match changed {
            Some(Health::Unhealthy) => log::warn!(
                "backend `{}`: unhealthy ({} failed health checks in a row); no traffic until it recovers",
                self.name,
                cfg.unhealthy_threshold
            ),
            Some(h) => log::info!("backend `{}`: {}", self.name, h.as_str()),
            None => {}
        }
    }

    /// Health checks failed so far.
    pub fn probes_failed(&self) -> u64 {
        self.probes_failed.load(Ordering::Relaxed)
    }

    /// A snapshot of everything, for the admin API and metrics.
    pub fn status(&self, now: Instant) -> BackendStatus {
        let inner = lock(&self.inner);
        BackendStatus {
            breaker: inner.breaker.state(now),
            consecutive_failures: inner.breaker.consecutive_failures(),
            breaker_opens: inner.breaker.opens(),
            throttled_for: inner
                .breaker
                .throttled_until(now)
                .map(|t| t.saturating_duration_since(now)),
            health: inner.health.status(),
            latency: inner
                .ewma
                .measured()
                .then(|| Duration::from_nanos(inner.ewma.estimate(now) as u64)),
            in_flight: self.in_flight(),
            drained: self.drained(),
        }
    }

    fn reconfigure(&self, now: Instant, old: &Backend, cfg: &Backend) {
        {
            let mut planner = lock(&self.planner);
            let moved = old.url != cfg.url || old.kind != cfg.kind;
            match (planner.as_mut(), cfg.prewarm.tracked()) {
                (Some(p), true) if !moved => p.reconfigure(&cfg.prewarm, unix_ms()),
                (_, true) => *planner = Some(Planner::new(&cfg.prewarm, unix_ms())),
                (_, false) => *planner = None,
            }
            self.tracked.store(cfg.prewarm.tracked(), Ordering::Relaxed);
            self.prewarmed.store(prewarmed(cfg), Ordering::Relaxed);
            // Not woken here: the gateway restarts the backend's prewarm task
            // with the new snapshot, which plans at once.
        }
        let mut inner = lock(&self.inner);
        if old.url != cfg.url || old.kind != cfg.kind {
            // Another endpoint: what was learned about the old one is moot.
            inner.breaker = Breaker::new(now, &cfg.breaker);
            inner.ewma = PeakEwma::default();
            inner.health.reset();
            return;
        }
        inner.breaker.reconfigure(now, &cfg.breaker);
        if cfg.health_check.is_none() {
            inner.health.reset();
        }
    }
}

fn refusal(r: Refusal) -> Unavailable {
    match r {
        Refusal::Open(t) => Unavailable::Open(Some(t)),
        Refusal::TrialsBusy => Unavailable::Open(None),
        Refusal::Throttled(t) => Unavailable::Throttled(t),
    }
}

/// A backend's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub breaker_opens: u64,
    pub throttled_for: Option<Duration>,
    pub health: Health,
    /// Peak-EWMA time to first byte, once measured.
    pub latency: Option<Duration>,
    pub in_flight: u32,
    pub drained: bool,
}

/// One attempt's hold on a backend: its bulkhead slot (and trial slot),
/// released when dropped. [`Attempt::answered`] and [`Attempt::finish`] tell
/// the breaker and the latency estimate how it went; dropped unjudged (the
/// client went away), it teaches them nothing but frees its trial slot.
pub struct Attempt<'a> {
    state: &'a BackendState,
    cfg: &'a Backend,
    trial: bool,
    /// The breaker and the latency estimate have heard how it went.
    judged: bool,
    /// Its place in the warmth model, its first byte, and what the
    /// platform said about a cold start.
    warm: Option<Box<WarmTicket>>,
}

struct WarmTicket {
    ticket: Ticket,
    first_byte: Option<Millis>,
    cold: Option<bool>,
    /// It failed (5xx, 429, connect, timeout): not merely cancelled.
    failed: bool,
}

impl Attempt<'_> {
    /// Tells the breaker and the latency estimate how the attempt went, and
    /// releases its slot. After [`Attempt::answered`], only a failure (a
    /// response cut mid-body) is news.
    pub fn finish(mut self, outcome: Outcome, now: Instant) {
        if self.judged {
            if let Outcome::Failure { .. } = outcome {
                let t = lock(&self.state.inner).breaker.record(
                    Verdict::Failure,
                    false,
                    now,
                    &self.cfg.breaker,
                );
                if let Some(t) = t {
                    self.state.log(t);
                }
            }
            return;
        }
        self.judge(outcome, now);
    }

    /// A usable response header arrived after `ttfb`: the backend works.
    /// Judged now, not when the body ends, so a half-open breaker's trial
    /// slot is free again at once (a long stream, or a client that reads
    /// slowly, must not keep a recovered backend half-open). The bulkhead
    /// slot stays taken until the attempt is finished or dropped.
    pub fn answered(&mut self, ttfb: Duration, now: Instant) {
        if let Some(w) = self.warm.as_mut() {
            w.first_byte = Some(unix_ms());
        }
        if !self.judged {
            self.judge(Outcome::Success { ttfb }, now);
        }
    }

    fn judge(&mut self, outcome: Outcome, now: Instant) {
        self.judged = true;
        if let (Some(w), false) = (
            self.warm.as_mut(),
            matches!(outcome, Outcome::Success { .. }),
        ) {
            w.failed = true;
        }
        let verdict = match outcome {
            Outcome::Success { .. } => Verdict::Success,
            Outcome::Failure { .. } => Verdict::Failure,
            Outcome::Throttled(after) => Verdict::Throttled(after),
        };
        let transition = {
            let mut inner = lock(&self.state.inner);
            match outcome {
                Outcome::Success { ttfb } => inner.ewma.observe(ttfb, now),
                Outcome::Failure { elapsed } => {
                    inner.ewma.observe(elapsed.max(FAILURE_LATENCY_FLOOR), now)
                }
                Outcome::Throttled(_) => {}
            }
            inner
                .breaker
                .record(verdict, self.trial, now, &self.cfg.breaker)
        };
        self.trial = false;
        if let Some(t) = transition {
            self.state.log(t);
        }
    }

    /// Whether the warmth model expected this attempt to pay a cold start
    /// (as placed, before it went out).
    pub fn expected_cold(&self) -> bool {
        self.warm.as_ref().is_some_and(|w| w.ticket.expected_cold)
    }

    /// What the platform said about a cold start of this attempt (Lambda's
    /// log tail, the backend's `prewarm.cold_header`).
    pub fn report_cold(&mut self, cold: bool) {
        if let Some(w) = self.warm.as_mut() {
            w.cold = Some(cold || w.cold == Some(true));
        }
    }

    /// Whether this attempt is a half-open breaker's trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.warm.take() {
            let replan = self
                .state
                .with_planner(|p| {
                    // Without an answer (failed, cancelled by a hedge, the
                    // client gone before the header) it teaches nothing.
                    if w.first_byte.is_some() {
                        p.user_end(w.ticket, w.first_byte, unix_ms(), w.cold);
                    } else {
                        let _ = p.abandon(w.ticket, unix_ms(), !w.failed);
                    }
                    p.mode() != skygate_config::PrewarmMode::Off && p.in_flight() == 0
                })
                .unwrap_or(false);
            if replan {
                self.state.prewarm_wake.notify_one();
            }
        }
        if !self.judged && self.trial {
            lock(&self.state.inner).breaker.record(
                Verdict::Unknown,
                true,
                Instant::now(),
                &self.cfg.breaker,
            );
        }
        self.state.release();
    }
}

/// Run-time weights of a route, set through the admin API, by backend name
/// (so they mean the same in every snapshot, and a reload can keep them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightOverride {
    /// Backend name → weight, for every target of the route.
    pub by_backend: Vec<(String, u32)>,
}

impl WeightOverride {
    /// The weight set for `backend`, if any.
    pub fn weight_of(&self, backend: &str) -> Option<u32> {
        self.by_backend
            .iter()
            .find(|(n, _)| n == backend)
            .map(|(_, w)| *w)
    }
}

/// The run-time state of one route.
pub struct RouteState {
    name: String,
    budget: Mutex<Budget>,
    overrides: ArcSwapOption<WeightOverride>,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    /// Requests in the hold queue now, and those turned away because it
    /// was full.
    held: AtomicU32,
    hold_refused: AtomicU64,
}

/// A place in a route's hold queue, given back when dropped.
pub struct HoldSlot<'a> {
    route: &'a RouteState,
}

impl Drop for HoldSlot<'_> {
    fn drop(&mut self) {
        self.route.held.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RouteState {
    /// Takes a place in the hold queue, if fewer than `max` are held.
    pub fn try_hold(&self, max: u32) -> Option<HoldSlot<'_>> {
        let took = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match took {
            Ok(_) => Some(HoldSlot { route: self }),
            Err(_) => {
                self.hold_refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Requests held now; requests turned away by a full queue so far.
    pub fn held(&self) -> (u32, u64) {
        (
            self.held.load(Ordering::Acquire),
            self.hold_refused.load(Ordering::Relaxed),
        )
    }

    fn new(cfg: &Route, now: Instant) -> Self {
        Self {
            name: cfg.name.clone(),
            budget: Mutex::new(Budget::new(now, &cfg.retries.budget)),
            overrides: ArcSwapOption::empty(),
            retries: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            held: AtomicU32::new(0),
            hold_refused: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A request arrived on this route.
    pub fn deposit(&self, now: Instant) {
        lock(&self.budget).deposit(now);
    }

    /// Whether the budget has room for a retry now (takes nothing; a
    /// refusal is counted).
    pub fn retry_allowed(&self, now: Instant, cfg: &Route) -> bool {
        let ok = lock(&self.budget).has_room(now, &cfg.retries.budget);
        if !ok {
            self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Takes a retry from the budget; counts a refusal.
    pub fn try_retry(&self, now: Instant, cfg: &Route) -> bool {
        let ok = lock(&self.budget).try_withdraw(now, &cfg.retries.budget);
        if ok {
            self.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Retries granted so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused by the budget so far.
    pub fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.load(Ordering::Relaxed)
    }

    /// The run-time weights, if an operator set any.
    pub fn overrides(&self) -> Option<Arc<WeightOverride>> {
        self.overrides.load_full()
    }

    pub fn set_overrides(&self, o: Option<WeightOverride>) {
        self.overrides.store(o.map(Arc::new));
    }

    /// Borrow-only access for the hot path.
    pub(crate) fn overrides_guard(&self) -> arc_swap::Guard<Option<Arc<WeightOverride>>> {
        self.overrides.load()
    }

    fn reconfigure(&self, now: Instant, old: Option<&Route>, cfg: &Route) {
        if old.is_none_or(|o| o.retries.budget != cfg.retries.budget) {
            lock(&self.budget).reconfigure(now, &cfg.retries.budget);
        }
    }
}

/// Every backend's and route's run-time state, by name.
pub struct Registry {
    /// Each backend's state, with the config it was last built for.
    backends: Mutex<HashMap<String, (Arc<BackendState>, Backend)>>,
    routes: Mutex<HashMap<String, (Arc<RouteState>, Route)>>,
    signal: Arc<Signal>,
    /// The process's cloud credential chains, for backends without keys of
    /// their own (kept fresh by a background service).
    clouds: crate::adapter::Clouds,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            backends: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            signal: Arc::new(Signal::default()),
            clouds: crate::adapter::Clouds::from_process(),
        }
    }

    /// The process's cloud credential chains.
    pub fn clouds(&self) -> &crate::adapter::Clouds {
        &self.clouds
    }

    /// The state of backend `cfg.name`, created if new, else adjusted to a
    /// changed config (breaker window, health checks switched off).
    pub fn backend(&self, cfg: &Backend, now: Instant) -> Arc<BackendState> {
        let mut map = lock(&self.backends);
        if let Some((s, old)) = map.get_mut(&cfg.name) {
            s.reconfigure(now, old, cfg);
            *old = cfg.clone();
            return s.clone();
        }
        let s = Arc::new(BackendState::new(&cfg.name, now, cfg, self.signal.clone()));
        map.insert(cfg.name.clone(), (s.clone(), cfg.clone()));
        s
    }

    /// The state of route `cfg.name`, created if new.
    pub fn route(&self, cfg: &Route, now: Instant) -> Arc<RouteState> {
        let mut map = lock(&self.routes);
        if let Some((s, old)) = map.get_mut(&cfg.name) {
            s.reconfigure(now, Some(old), cfg);
            *old = cfg.clone();
            return s.clone();
        }
        let s = Arc::new(RouteState::new(cfg, now));
        map.insert(cfg.name.clone(), (s.clone(), cfg.clone()));
        s
    }

    /// Forgets backends and routes that are no longer configured.
    pub fn retain(&self, backends: &HashSet<&str>, routes: &HashSet<&str>) {
        lock(&self.backends).retain(|k, _| backends.contains(k.as_str()));
        lock(&self.routes).retain(|k, _| routes.contains(k.as_str()));
    }

    /// Every backend's state, by name.
    pub fn backends(&self) -> Vec<Arc<BackendState>> {
        let mut v: Vec<_> = lock(&self.backends)
            .values()
            .map(|(s, _)| s.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every route's state, by name.
    pub fn routes(&self) -> Vec<Arc<RouteState>> {
        let mut v: Vec<_> = lock(&self.routes)
            .values()
            .map(|(s, _)| s.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Wakes requests waiting for a bulkhead slot.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }
}
