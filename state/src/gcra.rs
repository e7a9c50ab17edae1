//! GCRA (the generic cell rate algorithm) with a cost per request: one
//! number per key, the theoretical arrival time (TAT). A limit of `L` per
//! period `P` lets `L` through at once, then one every `P / L`; a request of
//! cost `c` moves the TAT by `c × P / L`. The same arithmetic runs in
//! [`crate::local`] and, as a Lua script, in Redis, so a replica that falls
//! back to local limiting behaves as the shared limit did.
//!
//! Costs are whole units (a request, a token). Reserving tokens and settling
//! them later is an [`adjust`]: a refund moves the TAT back (never before
//! now: a bucket is never more than full), a debt moves it forward without
//! any check (the next requests wait it off).

/// A limit of `amount` units per `period_us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub amount: u64,
    pub period_us: u64,
}

impl Rate {
    /// Microseconds `cost` units take up: `cost × period ÷ amount`, rounded
    /// up (at least 1 for a cost above 0). Computed whole, not per unit, so a
    /// large token cost is exact even where one token is under 1 µs.
    pub fn cost_us(self, cost: u64) -> u64 {
        if cost == 0 {
            return 0;
        }
        let amount = u128::from(self.amount.max(1));
        let us = (u128::from(cost) * u128::from(self.period_us)).div_ceil(amount);
        u64::try_from(us).unwrap_or(u64::MAX).max(1)
    }

    /// Microseconds `units` give back, rounded down (a refund never gives
    /// back more than was charged).
    pub fn refund_us(self, units: u64) -> u64 {
        let amount = u128::from(self.amount.max(1));
        let us = u128::from(units) * u128::from(self.period_us) / amount;
        u64::try_from(us).unwrap_or(u64::MAX)
    }

    /// Whole units that fit in `us` microseconds.
    pub fn units_in(self, us: u64) -> u64 {
        let n = u128::from(us) * u128::from(self.amount) / u128::from(self.period_us.max(1));
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// This rate shared by `n` (`fail_open`'s local share): a burst of
    /// `amount ÷ n` rounded up, over a period stretched to keep the rate
    /// exactly `amount ÷ n` per period. Rounding the amount down instead
    /// let 5 a minute on 3 replicas through as 3 (1 each), and 1 a minute
    /// as 3 (at least 1 each).
    pub fn share(self, n: u32) -> Rate {
        let n = u128::from(n.max(1));
        let amount = u128::from(self.amount.max(1));
        let each = amount.div_ceil(n);
        let period = u128::from(self.period_us) * each * n / amount;
        Rate {
            amount: u64::try_from(each).unwrap_or(u64::MAX),
            period_us: u64::try_from(period).unwrap_or(u64::MAX).max(1),
        }
    }
}

/// The answer for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Units that would pass now, after this request (if it passed).
    pub remaining: u64,
    /// Microseconds until the key is back to a full `amount`.
    pub reset_us: u64,
    /// When denied: microseconds until this request's cost would pass.
    pub retry_after_us: u64,
}

/// Checks and (when allowed) consumes `cost` units at `now`. Returns the
/// verdict and the TAT to store (unchanged when denied). A cost larger than
/// the whole `amount` is charged as `amount`: it passes when the key is full,
/// instead of never.
pub fn check(tat: u64, now: u64, rate: Rate, cost: u64) -> (Verdict, u64) {
    let tolerance = rate.period_us;
    let cost = cost.min(rate.amount);
    let base = tat.max(now);
    let new = base.saturating_add(rate.cost_us(cost));
    let used_after = new - now;
    if used_after > tolerance {
        let used = base - now;
        return (
            Verdict {
                allowed: false,
                remaining: rate.units_in(tolerance.saturating_sub(used)),
                reset_us: used,
                retry_after_us: used_after - tolerance,
            },
            tat,
        );
    }
    (
        Verdict {
            allowed: true,
            remaining: rate.units_in(tolerance - used_after),
            reset_us: used_after,
            retry_after_us: 0,
        },
        new,
    )
}

/// The key's state after `delta` units more (a debt) or fewer (a refund),
/// unchecked; a refund stops at a full key, a debt at one more period's
/// worth (so one absurd usage report cannot lock a key for years).
pub fn adjust(tat: u64, now: u64, rate: Rate, delta: i64) -> u64 {
    let base = tat.max(now);
    if delta >= 0 {
        let cap = now.saturating_add(rate.period_us.saturating_mul(2));
        base.saturating_add(rate.cost_us(delta.unsigned_abs()))
            .min(cap.max(base))
    } else {
        base.saturating_sub(rate.refund_us(delta.unsigned_abs()))
            .max(now)
    }
}

/// What [`check`] would say of a request of cost 0: the key's state for the
/// `x-ratelimit-*` headers.
pub fn peek(tat: u64, now: u64, rate: Rate) -> Verdict {
    check(tat, now, rate, 0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000;

    #[test]
    fn burst_then_steady() {
        let r = Rate {
            amount: 5,
            period_us: MIN,
        };
        let mut tat = 0;
        let now = 1_000_000_000;
        for left in (0..5).rev() {
            let (v, t) = check(tat, now, r, 1);
            assert!(v.allowed);
            assert_eq!(v.remaining, left);
            tat = t;
        }
        let (v, t) = check(tat, now, r, 1);
        assert!(!v.allowed);
        assert_eq!(t, tat, "a denial changes nothing");
        assert_eq!(v.retry_after_us, 12_000_000);
        assert_eq!(v.reset_us, MIN);
        // One emission interval later, exactly one more passes.
        let (v, t) = check(tat, now + 12_000_000, r, 1);
        assert!(v.allowed && v.remaining == 0);
        assert!(!check(t, now + 12_000_000, r, 1).0.allowed);
    }

    #[test]
    fn costs_refunds_and_debts() {
        let r = Rate {
            amount: 1000,
            period_us: MIN,
        };
        let now = 5 * MIN;
        let (v, tat) = check(0, now, r, 600);
        assert!(v.allowed && v.remaining == 400);
        assert!(!check(tat, now, r, 500).0.allowed);
        // Settled at 100: 500 come back.
        let tat = adjust(tat, now, r, -500);
        assert_eq!(peek(tat, now, r).remaining, 900);
        // A refund never makes a key more than full.
        assert_eq!(adjust(tat, now, r, -1_000_000), now);
        // A debt is capped at one period past a full charge.
        assert_eq!(adjust(now, now, r, i64::MAX), now + 2 * MIN);
        // A debt past the limit: nothing passes until it is paid off.
        let tat = adjust(tat, now, r, 1500);
        let v = check(tat, now, r, 1).0;
        assert!(!v.allowed && v.remaining == 0);
        assert_eq!(v.retry_after_us, 600 * 60_000 + 60_000);
        // A cost above the whole amount passes on a full key.
        assert!(check(0, now, r, 10_000).0.allowed);
        assert!(!check(now + 1, now, r, 10_000).0.allowed);
    }

    #[test]
    fn shares_and_absurd_values() {
        let r = Rate {
            amount: 10,
            period_us: MIN,
        };
        // 10 a minute on 3 replicas: 4 at once, at 10 ÷ 3 a minute.
        assert_eq!(
            r.share(3),
            Rate {
                amount: 4,
                period_us: MIN * 12 / 10
            }
        );
        // 10 a minute on 100: 1 each, one per 10 minutes.
        assert_eq!(
            r.share(100),
            Rate {
                amount: 1,
                period_us: MIN * 10
            }
        );
        assert_eq!(r.share(1), r);
        assert_eq!(r.share(0), r);
        // Over an hour, three replicas at their share pass what the limit
        // does (10 a minute: 600), give or take each one's first burst.
        let share = r.share(3);
        let mut passed = 0;
        for replica in 0..3 {
            let mut tat = 0;
            for s in 0..3600u64 {
                let now = s * 1_000_000 + replica;
                let (v, t) = check(tat, now, share, 1);
                if v.allowed {
                    passed += 1;
                    tat = t;
                }
            }
        }
        assert!((600..=612).contains(&passed), "{passed}");
        let huge = Rate {
            amount: u64::MAX,
            period_us: 1,
        };
        assert_eq!(huge.cost_us(1), 1);
        // A big token limit is exact: 7M a minute is not 7.5M.
        let tpm = Rate {
            amount: 7_000_000,
            period_us: MIN,
        };
        let (v, t) = check(0, 0, tpm, 7_000_000);
        assert!(v.allowed && v.remaining == 0);
        assert!(!check(t, 0, tpm, 1).0.allowed);
        assert!(check(t, MIN / 7 + 1, tpm, 1_000_000).0.allowed);
        let (v, _) = check(u64::MAX - 5, u64::MAX - 10, huge, u64::MAX);
        assert!(!v.allowed);
        assert_eq!(adjust(u64::MAX, 0, huge, i64::MAX), u64::MAX);
    }
}
