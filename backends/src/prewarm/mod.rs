//! Prewarm pings and the warmth model: pure policy over an injected clock
//! (Unix time in ms), so every mode is tested, and benchmarked over weeks
//! of traffic, in virtual time.
//!
//! A [`Planner`] per backend hears every user request and ping start and
//! end, estimates the platform's warm instances ([`warmth`]), learns the
//! backend's traffic ([`learn`]), and answers [`Planner::plan`]: how many
//! pings to send now, and when to ask again.
//!
//! - `fixed`: a round every `interval` warms `concurrency` instances,
//!   skipped when traffic already keeps them warm until the next round.
//! - `adaptive`: at the moment the k-th warm instance would go cold, it
//!   keeps it only if the chance that a burst arrives in the time a ping
//!   buys, times the chance that the burst needs k instances, is worth a
//!   ping (`pings_per_cold_start`). The chance comes from the idle gaps
//!   seen (conditioned on the time already idle) and from the hours of the
//!   week that traffic keeps busy; an instance let go is pinged again, cold,
//!   just before the next likely arrival. Inside active hours it keeps the
//!   90th percentile of burst sizes warm.

pub mod learn;
pub mod warmth;

use learn::Learner;
use skygate_config::{Prewarm, PrewarmMode};
use warmth::Warmth;

/// Unix time in milliseconds: the policy's only clock.
pub type Millis = u64;

/// Never (a plan with nothing to wait for).
pub const NEVER: Millis = Millis::MAX;

/// Lambda-warmer's hold, the default.
pub const DEFAULT_HOLD_MS: u64 = 75;

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Concurrent pings to send now.
    pub pings: u32,
    /// Ask again then (sooner if traffic or an operator changes things).
    pub next: Millis,
    pub why: Why,
}

/// Why pings are (or are not) sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Idle,
    StartUp,
    OnDemand,
    Round,
    Refresh,
    BeforeArrival,
    MinWarm,
    OutsideSchedule,
    BudgetSpent,
    Traffic,
    /// A router passed the backend over as cold.
    ColdRoute,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::StartUp => "start_up",
            Self::OnDemand => "on_demand",
            Self::Round => "round",
            Self::Refresh => "refresh",
            Self::BeforeArrival => "before_arrival",
            Self::MinWarm => "min_warm",
            Self::OutsideSchedule => "outside_schedule",
            Self::BudgetSpent => "budget_spent",
            Self::Traffic => "traffic",
            Self::ColdRoute => "cold_route",
        }
    }
}

/// A request's place in the model, for its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    instance: u64,
    started: Millis,
    user: bool,
    /// The planner that issued it (a reload may replace the planner while
    /// requests are in flight; their tickets are then ignored).
    epoch: u64,
    /// The model expected a cold start.
    pub expected_cold: bool,
}

/// The warmth state, for `/admin/backends` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub mode: PrewarmMode,
    pub warm_instances: u32,
    /// When each warm instance goes cold if unused, soonest first.
    pub cold_at: Vec<Millis>,
    /// Instances the policy wants warm now.
    pub target: u32,
    pub pings_sent: u64,
    /// Pings that paid a cold start themselves.
    pub pings_cold: u64,
    pub pings_failed: u64,
    /// Pings left to another replica that held the lease.
    pub peer_pings: u64,
    /// Pings that could not be sent (no credentials yet, say), and rounds
    /// in a row now of which none could be.
    pub pings_unsent: u64,
    pub unsent_rounds: u32,
    pub pings_today: u32,
    /// Cold starts of user requests seen (reported or inferred).
    pub user_cold_starts: u64,
    pub user_requests: u64,
    /// Estimated cold-start length and warm latency, ms.
    pub cold_start_ms: u64,
    pub warm_latency_ms: Option<u64>,
    pub next_plan_at: Millis,
    pub last_why: Why,
    /// When the last pings went out, and why.
    pub last_ping: Option<(Millis, Why)>,
    pub gaps_learned: usize,
}

/// Settings in the policy's units.
#[derive(Debug, Clone, PartialEq)]
struct Params {
    mode: PrewarmMode,
    idle: Millis,
    interval: Millis,
    concurrency: u32,
    min_warm: u32,
    threshold: f64,
    budget: Option<u32>,
    schedule: Option<skygate_config::Schedule>,
}

impl Params {
    fn of(c: &Prewarm) -> Self {
        let ms = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX / 4)) as u64;
        Self {
            mode: c.mode,
            idle: c.idle_timeout.map_or(0, ms).max(1_000),
            interval: ms(c.interval).max(1_000),
            concurrency: c.concurrency.max(1),
            min_warm: c.min_warm,
            threshold: 1.0 / c.pings_per_cold_start.max(1e-3),
            budget: c.daily_budget,
            schedule: c.schedule.clone(),
        }
    }

    /// The margin kept before an instance's modelled expiry (the platform's
    /// idle timeout is not exact).
    fn margin(&self) -> Millis {
        (self.idle / 10).clamp(50, 120_000)
    }

    fn day(&self, now: Millis) -> i64 {
        match &self.schedule {
            Some(s) => s.day(now),
            None => (now / 86_400_000) as i64,
        }
    }
}

/// One backend's prewarm policy and warmth model.
#[derive(Debug, Clone)]
pub struct Planner {
    epoch: u64,
    p: Params,
    warmth: Warmth,
    learn: Learner,
    /// Fixed mode: the next round.
    round_at: Millis,
    /// Pings asked for (start-up, reload, an operator, cold-aware routing).
    demand: Option<(u32, Why)>,
    day: i64,
    today: u32,
    /// Estimated cold start and warm latency (EWMA), ms.
    cold_ms: f64,
    warm_ms: Option<f64>,
    pings_sent: u64,
    pings_cold: u64,
    pings_failed: u64,
    peer_pings: u64,
    pings_unsent: u64,
    unsent_rounds: u32,
    user_cold: u64,
    users: u64,
    next: Millis,
    why: Why,
    target: u32,
    /// When the last pings went out, and why.
    last_ping: Option<(Millis, Why)>,
}

impl Planner {
    /// A planner for `conf`, created at `now`; a prewarming mode asks for a
    /// start-up round.
    pub fn new(conf: &Prewarm, now: Millis) -> Self {
        static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let p = Params::of(conf);
        let mut s = Self {
            epoch: EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            warmth: Warmth::new(conf.instance_concurrency),
            learn: Learner::default(),
            round_at: now,
            demand: None,
            day: p.day(now),
            today: 0,
            cold_ms: conf.cold_start.as_millis() as f64,
            warm_ms: None,
            pings_sent: 0,
            pings_cold: 0,
            pings_failed: 0,
            peer_pings: 0,
            pings_unsent: 0,
            unsent_rounds: 0,
            user_cold: 0,
            users: 0,
            next: now,
            why: Why::Idle,
            target: 0,
            last_ping: None,
            p,
        };
        s.start_up();
        s
    }

    fn start_up(&mut self) {
        let k = match self.p.mode {
            PrewarmMode::Off => 0,
            PrewarmMode::Fixed => self.p.concurrency.max(self.p.min_warm),
            PrewarmMode::Adaptive => self
                .learn
                .burst_p90()
                .max(self.p.min_warm)
                .min(self.p.concurrency),
        };
        if k > 0 {
            self.demand = Some((k, Why::StartUp));
        }
    }

    /// A reload changed the backend's prewarm settings: what was learned
    /// stays; a prewarming mode warms up again.
    pub fn reconfigure(&mut self, conf: &Prewarm, now: Millis) {
        let p = Params::of(conf);
        if p == self.p && self.cold_ms == conf.cold_start.as_millis() as f64 {
            return;
        }
        self.warmth.set_concurrency(conf.instance_concurrency);
        self.cold_ms = conf.cold_start.as_millis() as f64;
        self.p = p;
        self.round_at = now;
        self.start_up();
    }

    pub fn mode(&self) -> PrewarmMode {
        self.p.mode
    }

    fn cold_start(&self) -> Millis {
        self.cold_ms.max(0.0) as Millis
    }

    /// The idle time after which an arrival starts a new burst: a cold
    /// start, at least 1 s for a 10-minute idle timeout (scaled with it), at
    /// most a tenth of the idle timeout.
    fn quiet(&self) -> Millis {
        self.cold_start()
            .max(self.p.idle / 600)
            .min(self.p.idle / 10)
            .max(1)
    }

    /// A user request starts.
    pub fn user_start(&mut self, now: Millis) -> Ticket {
        self.users += 1;
        self.learn.start(now, self.quiet(), self.p.idle);
        let placed = self.warmth.place(now, self.p.idle, self.cold_start());
        Ticket {
            instance: placed.id,
            started: now,
            user: true,
            epoch: self.epoch,
            expected_cold: placed.cold,
        }
    }

    /// A request or ping ended without an answer (cancelled, failed,
    /// dropped): it frees its place in the model and teaches nothing about
    /// warmth or latency.
    ///
    /// `cancelled`: the request was sent and then given up (a hedge won):
    /// the platform goes on with the instance it started. Otherwise (it
    /// failed, or got no answer) no instance is assumed to have started
    /// for it.
    /// Returns whether a ping was counted failed (its metric follows).
    pub fn abandon(&mut self, t: Ticket, now: Millis, cancelled: bool) -> bool {
        if t.epoch != self.epoch {
            return false;
        }
        let ping = !t.user;
        if ping {
            self.pings_failed += 1;
        } else {
            self.learn.end(now, self.p.idle);
        }
        self.warmth.abandon(t.instance, now, !cancelled);
        ping
    }

    /// A user request ended at `now` (its first byte at `first_byte`);
    /// `cold`: what the platform said (else a latency outlier decides).
    /// Returns whether it is taken for a cold start.
    pub fn user_end(
        &mut self,
        t: Ticket,
        first_byte: Option<Millis>,
        now: Millis,
        cold: Option<bool>,
    ) -> bool {
        if t.epoch != self.epoch {
            return false;
        }
        self.learn.end(now, self.p.idle);
        let cold = self.observe(t, first_byte.unwrap_or(now), now, cold);
        if cold {
            self.user_cold += 1;
        }
        cold
    }

    /// A ping starts.
    pub fn ping_start(&mut self, now: Millis) -> Ticket {
        self.pings_sent += 1;
        self.today += 1;
        let placed = self.warmth.place(now, self.p.idle, self.cold_start());
        Ticket {
            instance: placed.id,
            started: now,
            user: false,
            epoch: self.epoch,
            expected_cold: placed.cold,
        }
    }

    /// A ping that was never sent (its backend has no credentials yet, say):
    /// its place and its count are given back, and it is counted as
    /// unsent; `false` when the ticket is from before a reload.
    pub fn ping_unsent(&mut self, t: Ticket, now: Millis) -> bool {
        if t.epoch != self.epoch {
            return false;
        }
        self.pings_sent = self.pings_sent.saturating_sub(1);
        self.today = self.today.saturating_sub(1);
        self.warmth.unplace(t.instance, now);
        self.pings_unsent += 1;
        true
    }

    /// A round of pings ended, `sent` of them sent and `unsent` not:
    /// returns how many rounds in a row now sent none (a round with one
    /// sent, whatever its answer, ends the run).
    pub fn round_end(&mut self, sent: u32, unsent: u32) -> u32 {
        if sent > 0 {
            self.unsent_rounds = 0;
        } else if unsent > 0 {
            self.unsent_rounds = self.unsent_rounds.saturating_add(1);
        }
        self.unsent_rounds
    }

    /// Another replica took this due time's lease and pinged `k` instances:
    /// they are taken for warm, without counting as this replica's pings.
    pub fn peer_pinged(&mut self, k: u32, now: Millis) {
        let placed: Vec<_> = (0..k)
            .map(|_| self.warmth.place(now, self.p.idle, 0))
            .collect();
        for p in placed {
            self.warmth.release(p.id, now);
        }
        self.peer_pings += u64::from(k);
    }

    /// A ping ended (`ok`: the platform answered it; a failed one is
    /// abandoned).
    pub fn ping_end(&mut self, t: Ticket, now: Millis, ok: bool, cold: Option<bool>) {
        if t.epoch != self.epoch {
            return;
        }
        if !ok {
            let _ = self.abandon(t, now, false);
            return;
        }
        if self.observe(t, now, now, cold) {
            self.pings_cold += 1;
        }
    }

    /// Settles an ended request in the model, inferring a cold start from
    /// its latency when the platform said nothing, and learns the warm
    /// latency and the cold-start length.
    fn observe(&mut self, t: Ticket, answered: Millis, now: Millis, cold: Option<bool>) -> bool {
        let took = answered.saturating_sub(t.started) as f64;
        let cold = cold.unwrap_or_else(|| match self.warm_ms {
            Some(w) => took > (4.0 * w).max(w + self.cold_ms / 2.0),
            None => t.expected_cold && took >= self.cold_ms / 2.0,
        });
        if cold {
            let extra = took - self.warm_ms.unwrap_or(0.0);
            if extra > 0.0 {
                self.cold_ms = 0.8 * self.cold_ms + 0.2 * extra;
            }
        } else {
            self.warm_ms = Some(self.warm_ms.map_or(took, |w| 0.9 * w + 0.1 * took));
        }
        self.warmth.release(t.instance, now);
        cold
    }

    /// Asks for `k` pings at the next plan (an operator, or a router that
    /// passed this backend over as cold).
    pub fn want(&mut self, k: u32, why: Why, now: Millis) {
        let k = k.max(1);
        // A router's ask while an instance is already starting is moot.
        if why == Why::ColdRoute && (self.warmth.starting(now) || self.demand.is_some()) {
            return;
        }
        self.demand = Some(match self.demand {
            // An operator's ask keeps its standing (not held to the
            // schedule or budget) whatever else is pending.
            Some((n, w)) if why == Why::OnDemand || w == Why::OnDemand => (n.max(k), Why::OnDemand),
            Some((n, w)) if n >= k => (n, w),
            _ => (k, why),
        });
        self.next = now;
    }

    /// User requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.learn.in_flight()
    }

    /// Whether a request arriving now would likely cold-start: no warm
    /// instance with room in the model.
    pub fn likely_cold(&self, now: Millis) -> bool {
        !self.warmth.has_idle_warm(now, self.p.idle)
    }

    /// When the planner wants to be asked again.
    pub fn next_at(&self) -> Millis {
        self.next
    }

    /// What to do at `now`.
    pub fn plan(&mut self, now: Millis) -> Plan {
        let plan = self.decide(now);
        self.next = plan.next.max(now + 1);
        self.why = plan.why;
        if plan.pings > 0 {
            self.last_ping = Some((now, plan.why));
        }
        Plan {
            next: self.next,
            ..plan
        }
    }

    fn decide(&mut self, now: Millis) -> Plan {
        let day = self.p.day(now);
        if day != self.day {
            self.day = day;
            self.today = 0;
        }
        let wait = |next: Millis, why| Plan {
            pings: 0,
            next,
            why,
        };
        // An operator's ask goes first: not held to the schedule or budget.
        // A router's (it passed the backend over as cold) is held to the
        // budget only: in every mode, a backend routed around gets warm
        // again, so the route's split comes back.
        match self.demand {
            Some((k, Why::OnDemand)) => {
                self.demand = None;
                return Plan {
                    pings: self.pings_for(k).max(1),
                    next: now + 1_000,
                    why: Why::OnDemand,
                };
            }
            Some((k, Why::ColdRoute)) if self.p.budget.is_none_or(|b| self.today < b) => {
                self.demand = None;
                return Plan {
                    pings: self.pings_for(k),
                    next: now + 1_000,
                    why: Why::ColdRoute,
                };
            }
            _ => {}
        }
        if self.p.mode == PrewarmMode::Off {
            self.demand = None;
            return wait(NEVER, Why::Idle);
        }
        if let Some(s) = &self.p.schedule {
            if !s.contains(now) {
                self.demand = None;
                let next = s.next_change(now).unwrap_or(now + 3_600_000);
                return wait(next, Why::OutsideSchedule);
            }
        }
        if self.p.budget.is_some_and(|b| self.today >= b) {
            self.demand = None;
            // The day may end at any hour in the schedule's zone.
            let next_hour = (now / 3_600_000 + 1) * 3_600_000;
            return wait(next_hour, Why::BudgetSpent);
        }
        let room = self.p.budget.map_or(u32::MAX, |b| b - self.today);
        if let Some((k, why)) = self.demand.take() {
            let k = k.min(self.p.concurrency.max(self.p.min_warm));
            return Plan {
                pings: self.pings_for(k).min(room),
                next: now + 1_000,
                why,
            };
        }
        let margin = self.p.margin();
        let plan = match self.p.mode {
            PrewarmMode::Off => wait(NEVER, Why::Idle),
            PrewarmMode::Fixed => self.fixed(now, margin),
            PrewarmMode::Adaptive => self.adaptive(now, margin),
        };
        Plan {
            pings: plan.pings.min(room),
            ..plan
        }
    }

    /// Concurrent pings that leave `instances` instances warm: a platform
    /// packs up to `instance_concurrency` requests on one, so beyond the
    /// first each instance takes that many more (requests already in flight
    /// count).
    fn pings_for(&self, instances: u32) -> u32 {
        if instances == 0 {
            return 0;
        }
        let c = self.warmth.concurrency();
        ((instances - 1).saturating_mul(c).saturating_add(1)).saturating_sub(self.warmth.requests())
    }

    fn fixed(&mut self, now: Millis, margin: Millis) -> Plan {
        let k = self.p.concurrency.max(self.p.min_warm);
        self.target = k;
        if now < self.round_at {
            return Plan {
                pings: 0,
                next: self.round_at,
                why: Why::Round,
            };
        }
        // Rounds fall on wall-clock multiples of the interval, the same
        // times on every replica (their lease is the round's).
        self.round_at = (now / self.p.interval + 1) * self.p.interval;
        // Skipped when traffic keeps k instances warm past the next round.
        let kept = self
            .warmth
            .kth_cold_at(k, now, self.p.idle)
            .is_some_and(|t| t >= self.round_at + margin / 4);
        let pings = if kept { 0 } else { self.pings_for(k) };
        Plan {
            pings,
            next: self.round_at,
            why: if pings > 0 { Why::Round } else { Why::Traffic },
        }
    }

    /// How many instances are worth keeping warm over `(now, now + span]`,
    /// `a` ms after the last user request ended; and whether `min_warm`
    /// alone asks for them.
    ///
    /// Inside an active hour: the 90th percentile of burst sizes. Else the
    /// i-th instance is kept while the chance of a burst in the span times
    /// the cold starts it would save is worth a ping: the first saves every
    /// request that arrives before a new instance could be ready, each
    /// further one saves the burst's i-th simultaneous request.
    fn target(&self, now: Millis, a: Millis, span: Millis) -> (u32, bool) {
        let cap = self.p.concurrency;
        let min = self.p.min_warm;
        let active = self
            .learn
            .active_within(now, now + span + self.cold_start())
            .is_some();
        let k = if active {
            self.learn.burst_p90()
        } else {
            let m = self.learn.arrival_chance(a, a, a + span);
            let first = self.learn.early_mean()
                - (1.0 - self.learn.burst_at_least(1)).max(0.0)
                - (2..=cap)
                    .map(|i| self.learn.burst_at_least(i))
                    .sum::<f64>()
                    .min(self.learn.early_mean() - 1.0);
            let saves = |i: u32| {
                if i == 1 {
                    first.max(1.0)
                } else {
                    self.learn.burst_at_least(i)
                }
            };
            let mut k = 0;
            while k < cap.saturating_mul(self.warmth.concurrency())
                && m * saves(k + 1) >= self.p.threshold
            {
                k += 1;
            }
            k
        };
        // Requests at once → instances.
        let k = k.div_ceil(self.warmth.concurrency()).min(cap);
        (k.max(min), k < min)
    }

    fn adaptive(&mut self, now: Millis, margin: Millis) -> Plan {
        let idle = self.p.idle;
        let step = (idle / 2).max(1_000);
        if self.learn.in_flight() > 0 {
            // Traffic is keeping instances warm; look again after it.
            self.target = self.warmth.busy();
            return Plan {
                pings: 0,
                next: now + margin,
                why: Why::Traffic,
            };
        }
        let a = self.learn.last_end().map_or(0, |e| now.saturating_sub(e));
        let (k, for_min) = self.target(now, a, idle);
        self.target = k;
        if k > 0 {
            match self.warmth.kth_cold_at(k, now, idle) {
                Some(t) if t > now + margin => {
                    return Plan {
                        pings: 0,
                        next: (t - margin).min(now + step),
                        why: Why::Idle,
                    }
                }
                cold_at => {
                    let refresh = cold_at.is_some();
                    // A cold ping waits for the last moment that still
                    // finishes a cold start before the next likely arrival.
                    if !refresh && !for_min {
                        let ready = self.arrival_wake(now, a);
                        if ready > now + 1_000 {
                            return Plan {
                                pings: 0,
                                next: ready.min(now + step),
                                why: Why::Idle,
                            };
                        }
                    }
                    return Plan {
                        pings: self.pings_for(k),
                        next: now + margin,
                        why: if for_min {
                            Why::MinWarm
                        } else if refresh {
                            Why::Refresh
                        } else {
                            Why::BeforeArrival
                        },
                    };
                }
            }
        }
        // Nothing worth keeping now: look again just before the next likely
        // arrival (early enough to finish a cold start), or when an active
        // hour comes, or in half an idle timeout.
        let mut next = (now + step).min(self.arrival_wake(now, a));
        if let Some(t) = self.warmth.kth_cold_at(1, now, idle) {
            if t > now + margin {
                next = next.min(t - margin);
            }
        }
        Plan {
            pings: 0,
            next: next.max(now + 1_000),
            why: Why::Idle,
        }
    }

    /// The last moment a cold ping still has an instance ready for the next
    /// likely arrival: a cold start and a margin before the gap by which 2%
    /// of the longer gaps seen had ended, or before the next active hour.
    fn arrival_wake(&self, now: Millis, a: Millis) -> Millis {
        let lead = self.cold_start() + self.p.margin();
        let mut at = NEVER;
        if let (Some(e), Some(g)) = (self.learn.last_end(), self.learn.gap_quantile(a, 0.02)) {
            at = at.min((e + g).saturating_sub(lead));
        }
        if let Some(h) = self.learn.next_active(now) {
            at = at.min(h.saturating_sub(lead));
        }
        at
    }

    /// The warmth state at `now`.
    pub fn view(&self, now: Millis) -> View {
        let cold_at = self.warmth.cold_at(now, self.p.idle);
        View {
            mode: self.p.mode,
            warm_instances: self.warmth.warm(now, self.p.idle),
            cold_at,
            target: self.target,
            pings_sent: self.pings_sent,
            pings_cold: self.pings_cold,
            pings_failed: self.pings_failed,
            peer_pings: self.peer_pings,
            pings_unsent: self.pings_unsent,
            unsent_rounds: self.unsent_rounds,
            pings_today: self.today,
            user_cold_starts: self.user_cold,
            user_requests: self.users,
            cold_start_ms: self.cold_start(),
            warm_latency_ms: self.warm_ms.map(|w| w as u64),
            next_plan_at: self.next,
            last_why: self.why,
            last_ping: self.last_ping,
            gaps_learned: self.learn.gaps_seen(),
        }
    }
}

#[cfg(test)]
mod tests;
