//! The circuit breaker of one backend, as pure logic over an injected clock
//! reading (`now`), so it is tested in virtual time.
//!
//! Closed → Open after `consecutive_failures` failures in a row, or when the
//! failure ratio over the sliding `window` reaches `failure_ratio` (once
//! `min_requests` were seen). Open → HalfOpen after `cooldown`; HalfOpen lets
//! `half_open_trials` requests through at once; the first success closes it,
//! a failure opens it again. Separately, a 429 sets the backend aside
//! ("throttled") for its `Retry-After`, capped at `max_throttle`: that is
//! the backend asking for less traffic, not a sign it is broken.

use skygate_config::BreakerConfig;
use std::time::{Duration, Instant};

/// The breaker's state, as the admin API and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 half-open, 2 open (the metric's value).
    pub fn level(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// Why a backend takes no request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Open until this instant.
    Open(Instant),
    /// Half-open, and every trial slot is taken.
    TrialsBusy,
    /// Throttled (429) until this instant.
    Throttled(Instant),
}

/// A change worth logging once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened {
        after_failures: u32,
    },
    HalfOpened,
    Closed,
    /// A 429 set the backend aside for this long.
    Throttled(Duration),
}

/// What one attempt's outcome tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// 429, with the backend's `Retry-After` if it sent one.
    Throttled(Option<Duration>),
    /// Nothing learned (the client went away first).
    Unknown,
}

/// How long a 429 without `Retry-After` sets a backend aside.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);

const BUCKETS: usize = 10;

/// Counts over a sliding window of `BUCKETS` time buckets.
#[derive(Debug, Clone)]
pub struct Window {
    origin: Instant,
    bucket: Duration,
    /// Index (since `origin`) of the newest bucket.
    head: u64,
    counts: [(u32, u32); BUCKETS],
}

impl Window {
    pub fn new(now: Instant, span: Duration) -> Self {
        Self {
            origin: now,
            bucket: (span / BUCKETS as u32).max(Duration::from_millis(1)),
            head: 0,
            counts: [(0, 0); BUCKETS],
        }
    }

    fn advance(&mut self, now: Instant) {
        let idx = (now.saturating_duration_since(self.origin).as_nanos()
            / self.bucket.as_nanos().max(1)) as u64;
        if idx <= self.head {
            return;
        }
        let gap = (idx - self.head).min(BUCKETS as u64);
        for k in 1..=gap {
            self.counts[((self.head + k) % BUCKETS as u64) as usize] = (0, 0);
        }
        self.head = idx;
    }

    /// Adds one to the first (`a`) or second (`b`) count of the current bucket.
    pub fn add(&mut self, now: Instant, a: u32, b: u32) {
        self.advance(now);
        let c = &mut self.counts[(self.head % BUCKETS as u64) as usize];
        c.0 = c.0.saturating_add(a);
        c.1 = c.1.saturating_add(b);
    }

    /// Both sums over the window.
    pub fn sums(&mut self, now: Instant) -> (u64, u64) {
        self.advance(now);
        self.counts
            .iter()
            .fold((0, 0), |(a, b), c| (a + u64::from(c.0), b + u64::from(c.1)))
    }

    pub fn clear(&mut self) {
        self.counts = [(0, 0); BUCKETS];
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { trials: u32 },
}

/// One backend's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    consecutive: u32,
    /// (requests, failures) over the window.
    window: Window,
    throttled_until: Option<Instant>,
    opens: u64,
}

impl Breaker {
    pub fn new(now: Instant, cfg: &BreakerConfig) -> Self {
        Self {
            state: State::Closed,
            consecutive: 0,
            window: Window::new(now, cfg.window),
            throttled_until: None,
            opens: 0,
        }
    }

    /// Whether a request could be admitted now (no side effects; an open
    /// breaker whose cooldown has passed counts as admitting).
    pub fn check(&self, now: Instant, cfg: &BreakerConfig) -> Result<(), Refusal> {
        if let Some(t) = self.throttled_until.filter(|t| *t > now) {
            return Err(Refusal::Throttled(t));
        }
        if !cfg.enabled {
            return Ok(());
        }
        match self.state {
            State::Closed => Ok(()),
            State::Open { until } if now < until => Err(Refusal::Open(until)),
            State::Open { .. } => Ok(()),
            State::HalfOpen { trials } if trials < cfg.half_open_trials => Ok(()),
            State::HalfOpen { .. } => Err(Refusal::TrialsBusy),
        }
    }

    /// Admits a request: `Ok(true)` when it is a half-open trial.
    pub fn admit(
        &mut self,
        now: Instant,
        cfg: &BreakerConfig,
    ) -> Result<(bool, Option<Transition>), Refusal> {
        self.check(now, cfg)?;
        if !cfg.enabled {
            return Ok((false, None));
        }
        let mut transition = None;
        if let State::Open { .. } = self.state {
            self.state = State::HalfOpen { trials: 0 };
            transition = Some(Transition::HalfOpened);
        }
        match &mut self.state {
            State::HalfOpen { trials } => {
                *trials += 1;
                Ok((true, transition))
            }
            _ => Ok((false, transition)),
        }
    }

    /// Records an attempt's outcome; `trial` as returned by [`Breaker::admit`].
    pub fn record(
        &mut self,
        verdict: Verdict,
        trial: bool,
        now: Instant,
        cfg: &BreakerConfig,
    ) -> Option<Transition> {
        if trial {
            if let State::HalfOpen { trials } = &mut self.state {
                *trials = trials.saturating_sub(1);
            }
        }
        match verdict {
            Verdict::Unknown => None,
            Verdict::Throttled(after) => {
                let d = after.unwrap_or(DEFAULT_THROTTLE).min(cfg.max_throttle);
                if d.is_zero() {
                    // `Retry-After: 0`: retry elsewhere now, set nothing aside.
                    return None;
                }
                let until = now.checked_add(d)?;
                let was = self.throttled_until.is_some_and(|t| t > now);
                if self.throttled_until.is_none_or(|t| t < until) {
                    self.throttled_until = Some(until);
                }
                (!was).then_some(Transition::Throttled(d))
            }
            Verdict::Success => {
                self.consecutive = 0;
                self.window.add(now, 1, 0);
                match self.state {
                    State::HalfOpen { .. } if cfg.enabled => {
                        self.state = State::Closed;
                        self.window.clear();
                        Some(Transition::Closed)
                    }
                    _ => None,
                }
            }
            Verdict::Failure => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.window.add(now, 1, 1);
                if !cfg.enabled {
                    return None;
                }
                match self.state {
                    State::HalfOpen { .. } => Some(self.open(now, cfg)),
                    State::Open { .. } => None,
                    State::Closed => {
                        let by_streak = cfg.consecutive_failures > 0
                            && self.consecutive >= cfg.consecutive_failures;
                        let (total, failed) = self.window.sums(now);
                        let by_ratio = cfg.failure_ratio > 0.0
                            && total >= u64::from(cfg.min_requests)
                            && failed as f64 >= cfg.failure_ratio * total as f64;
                        (by_streak || by_ratio).then(|| self.open(now, cfg))
                    }
                }
            }
        }
    }

    fn open(&mut self, now: Instant, cfg: &BreakerConfig) -> Transition {
        let until = now.checked_add(cfg.cooldown).unwrap_or(now);
        self.state = State::Open { until };
        self.opens += 1;
        Transition::Opened {
            after_failures: self.consecutive,
        }
    }

    /// The state as seen at `now` (an open breaker past its cooldown shows as
    /// half-open: the next request is a trial).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Until when a 429 sets the backend aside, if it does at `now`.
    pub fn throttled_until(&self, now: Instant) -> Option<Instant> {
        self.throttled_until.filter(|t| *t > now)
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// How many times it opened.
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Takes a changed config (a reload): the window's span may differ.
    pub fn reconfigure(&mut self, now: Instant, cfg: &BreakerConfig) {
        if self.window.bucket * BUCKETS as u32 != cfg.window {
            self.window = Window::new(now, cfg.window);
        }
        if !cfg.enabled {
            self.state = State::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            half_open_trials: 1,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let c = cfg();
        let t0 = Instant::now();
        let mut b = Breaker::new(t0, &c);
        assert_eq!(b.record(Verdict::Failure, false, t0, &c), None);
        assert_eq!(b.record(Verdict::Failure, false, t0, &c), None);
        assert_eq!(
            b.record(Verdict::Failure, false, t0, &c),
            Some(Transition::Opened { after_failures: 3 })
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.check(t1, &c), Err(Refusal::Open(t0 + c.cooldown)));
        assert_eq!(b.state(t1), BreakerState::Open);
        // Cool-down over: one trial at a time.
        let t2 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t2, &c), Ok((true, Some(Transition::HalfOpened))));
        assert_eq!(b.check(t2, &c), Err(Refusal::TrialsBusy));
        assert_eq!(
            b.record(Verdict::Success, true, t2, &c),
            Some(Transition::Closed)
        );
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.admit(t2, &c), Ok((false, None)));
        assert_eq!(b.opens(), 1);
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cooldown() {
        let c = cfg();
        let t0 = Instant::now();
        let mut b = Breaker::new(t0, &c);
        for _ in 0..3 {
            b.record(Verdict::Failure, false, t0, &c);
        }
        let t1 = t0 + c.cooldown;
        let (trial, _) = b.admit(t1, &c).unwrap();
        assert!(trial);
        assert!(matches!(
            b.record(Verdict::Failure, true, t1, &c),
            Some(Transition::Opened { .. })
        ));
        assert_eq!(b.check(t1, &c), Err(Refusal::Open(t1 + c.cooldown)));
        assert_eq!(b.opens(), 2);
    }

    #[test]
    fn an_abandoned_trial_frees_its_slot() {
        let c = cfg();
        let t0 = Instant::now();
        let mut b = Breaker::new(t0, &c);
        for _ in 0..3 {
            b.record(Verdict::Failure, false, t0, &c);
        }
        let t1 = t0 + c.cooldown;
        assert!(b.admit(t1, &c).unwrap().0);
        assert_eq!(b.record(Verdict::Unknown, true, t1, &c), None);
        assert!(b.admit(t1, &c).unwrap().0, "the slot is free again");
    }

    #[test]
    fn opens_on_failure_ratio_over_the_window_only() {
        let c = BreakerConfig {
            consecutive_failures: 0,
            ..cfg()
        };
        let t0 = Instant::now();
        let mut b = Breaker::new(t0, &c);
        // 4 failures in 9 requests: below min_requests, and never 3 in a row matters not.
        for i in 0..9 {
            let v = if i % 2 == 0 {
                Verdict::Success
            } else {
                Verdict::Failure
            };
            assert_eq!(b.record(v, false, t0, &c), None);
        }
        // 10th request, a failure: 5/10 = 0.5 → open.
        assert!(matches!(
            b.record(Verdict::Failure, false, t0, &c),
            Some(Transition::Opened { .. })
        ));
        // Old outcomes slide out of the window.
        let mut b = Breaker::new(t0, &c);
        for _ in 0..9 {
            b.record(Verdict::Failure, false, t0, &c);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.record(Verdict::Failure, false, later, &c), None);
    }

    #[test]
    fn throttle_honours_retry_after_up_to_the_cap() {
        let c = cfg();
        let t0 = Instant::now();
        let mut b = Breaker::new(t0, &c);
        assert_eq!(
            b.record(
                Verdict::Throttled(Some(Duration::from_secs(3))),
                false,
                t0,
                &c
            ),
            Some(Transition::Throttled(Duration::from_secs(3)))
        );
        assert_eq!(
            b.check(t0 + Duration::from_secs(2), &c),
            Err(Refusal::Throttled(t0 + Duration::from_secs(3)))
        );
        assert_eq!(b.check(t0 + Duration::from_secs(3), &c), Ok(()));
        // Without Retry-After: one second. A huge one: capped.
        b.record(
            Verdict::Throttled(None),
            false,
            t0 + Duration::from_secs(3),
            &c,
        );
        assert!(b.check(t0 + Duration::from_millis(3_900), &c).is_err());
        b.record(
            Verdict::Throttled(Some(Duration::from_secs(86_400))),
            false,
            t0,
            &c,
        );
        assert_eq!(b.throttled_until(t0), Some(t0 + c.max_throttle));
        // `Retry-After: 0` sets nothing aside (and logs nothing).
        let mut z = Breaker::new(t0, &c);
        assert_eq!(
            z.record(Verdict::Throttled(Some(Duration::ZERO)), false, t0, &c),
            None
        );
        assert_eq!(z.check(t0, &c), Ok(()));
        // Throttling is not failure.
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn disabled_never_opens() {
        let c = BreakerConfig {
            enabled: false,
            ..cfg()
        };
        let t0 = Instant::now();
        let mut b = Breaker::new(t0, &c);
        for _ in 0..100 {
            assert_eq!(b.record(Verdict::Failure, false, t0, &c), None);
        }
        assert_eq!(b.check(t0, &c), Ok(()));
    }
}
