//! The retry budget of one route (as linkerd and Finagle do it): over a
//! sliding window, retries may add at most `ratio` of the route's requests,
//! plus `min_per_second` so that a quiet route can still retry. During a
//! total outage this caps what retries add to the load: clients get fast
//! failures instead of every request hitting every backend.

use super::breaker::Window;
use skygate_config::RetryBudget;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Budget {
    /// (requests, retries) over the window.
    window: Window,
}

impl Budget {
    pub fn new(now: Instant, cfg: &RetryBudget) -> Self {
        Self {
            window: Window::new(now, cfg.window),
        }
    }

    /// A request arrived (its first attempt).
    pub fn deposit(&mut self, now: Instant) {
        self.window.add(now, 1, 0);
    }

    /// Whether a retry would be granted now (takes nothing).
    pub fn has_room(&mut self, now: Instant, cfg: &RetryBudget) -> bool {
        let (requests, retries) = self.window.sums(now);
        let floor = f64::from(cfg.min_per_second) * cfg.window.as_secs_f64();
        (retries as f64) < floor + cfg.ratio * requests as f64
    }

    /// Takes one retry from the budget, if there is room.
    pub fn try_withdraw(&mut self, now: Instant, cfg: &RetryBudget) -> bool {
        let ok = self.has_room(now, cfg);
        if ok {
            self.window.add(now, 0, 1);
        }
        ok
    }

    /// Takes a changed config (a reload).
    pub fn reconfigure(&mut self, now: Instant, cfg: &RetryBudget) {
        *self = Self::new(now, cfg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_capped_at_the_ratio_plus_the_floor() {
        let cfg = RetryBudget {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 1,
        };
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &cfg);
        for _ in 0..100 {
            b.deposit(t0);
        }
        // 0.2 * 100 + 1/s * 10 s = 30 retries, then none.
        let granted = (0..100).filter(|_| b.try_withdraw(t0, &cfg)).count();
        assert_eq!(granted, 30);
        // The window slides: old requests and retries age out.
        let later = t0 + Duration::from_secs(11);
        for _ in 0..10 {
            b.deposit(later);
        }
        let granted = (0..100).filter(|_| b.try_withdraw(later, &cfg)).count();
        assert_eq!(granted, 12);
    }

    #[test]
    fn a_quiet_route_still_gets_the_floor() {
        let cfg = RetryBudget {
            ratio: 0.0,
            window: Duration::from_secs(1),
            min_per_second: 2,
        };
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &cfg);
        assert!(b.try_withdraw(t0, &cfg));
        assert!(b.try_withdraw(t0, &cfg));
        assert!(!b.try_withdraw(t0, &cfg));
    }
}
