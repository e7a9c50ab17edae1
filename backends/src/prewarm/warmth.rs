//! The warmth model: the instances a backend's platform is estimated to
//! keep, seen from outside. Every request (user or ping) is placed on an
//! estimated instance the way a platform places it (an idle warm one if any,
//! else a new one that cold-starts); an instance idle for the platform's
//! idle timeout is reclaimed. What the platform reports (Lambda's `Init
//! Duration`, a cold-start header, a latency outlier) corrects the estimate.

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instance {
    id: u64,
    busy: u32,
    /// When its cold start ends (in the past for a warm instance).
    ready_at: Millis,
    /// When it was last released (or created).
    last_used: Millis,
}

/// The estimated instances of one backend.
#[derive(Debug, Default, Clone)]
pub struct Warmth {
    instances: Vec<Instance>,
    next_id: u64,
    /// Requests one instance serves at once.
    concurrency: u32,
}

/// Where a request was placed: the instance, and whether the model expects
/// it to pay a cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub id: u64,
    pub cold: bool,
}

impl Warmth {
    pub fn new(concurrency: u32) -> Self {
        Self {
            concurrency: concurrency.max(1),
            ..Self::default()
        }
    }

    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    pub fn set_concurrency(&mut self, c: u32) {
        self.concurrency = c.max(1);
    }

    /// Forgets the instances the platform has reclaimed by `now`.
    fn reclaim(&mut self, now: Millis, idle: Millis) {
        self.instances
            .retain(|i| i.busy > 0 || i.ready_at > now || now < i.last_used + idle);
    }

    /// Places one request arriving at `now`; `cold_start` is the expected
    /// cold start of a new instance.
    pub fn place(&mut self, now: Millis, idle: Millis, cold_start: Millis) -> Placed {
        self.reclaim(now, idle);
        let conc = self.concurrency;
        if let Some(i) = self
            .instances
            .iter_mut()
            .filter(|i| i.busy < conc)
            .min_by_key(|i| (i.ready_at > now, i.ready_at))
        {
            i.busy += 1;
            return Placed {
                id: i.id,
                cold: i.ready_at > now,
            };
        }
        let id = self.next_id;
        self.next_id += 1;
        self.instances.push(Instance {
            id,
            busy: 1,
            ready_at: now + cold_start,
            last_used: now,
        });
        Placed { id, cold: true }
    }

    /// A request on instance `id` ended at `now`. Whatever the model
    /// expected, the instance is warm once it answered (a cold start the
    /// platform reported on an instance taken for warm means it had been
    /// reclaimed and started anew; it is warm now either way).
    pub fn release(&mut self, id: u64, now: Millis) {
        if let Some(i) = self.instances.iter_mut().find(|i| i.id == id) {
            i.busy = i.busy.saturating_sub(1);
            i.last_used = now;
            i.ready_at = i.ready_at.min(now);
        }
    }

    /// A request on instance `id` was abandoned at `now` (cancelled, failed
    /// before an answer, a ping that got none): it frees its place, and
    /// teaches nothing about the instance's readiness.
    /// With `forget` (a ping that got no answer), an instance that was
    /// starting for it alone is not assumed to exist.
    pub fn abandon(&mut self, id: u64, now: Millis, forget: bool) {
        let Some(k) = self.instances.iter().position(|i| i.id == id) else {
            return;
        };
        let i = &mut self.instances[k];
        i.busy = i.busy.saturating_sub(1);
        if i.ready_at <= now {
            i.last_used = i.last_used.max(now);
        } else if forget && i.busy == 0 {
            self.instances.swap_remove(k);
        }
    }

    /// A placement that never went out (a ping not sent): its place is
    /// freed and nothing else changes (a warm instance is not taken for
    /// used; one that was starting for it alone was never started).
    pub fn unplace(&mut self, id: u64, now: Millis) {
        let Some(k) = self.instances.iter().position(|i| i.id == id) else {
            return;
        };
        let i = &mut self.instances[k];
        i.busy = i.busy.saturating_sub(1);
        if i.ready_at > now && i.busy == 0 {
            self.instances.swap_remove(k);
        }
    }

    /// Requests on the instances now.
    pub fn requests(&self) -> u32 {
        self.instances.iter().map(|i| i.busy).sum()
    }

    /// Instances warm at `now` (ready, not reclaimed), busy or idle.
    pub fn warm(&self, now: Millis, idle: Millis) -> u32 {
        self.instances
            .iter()
            .filter(|i| i.ready_at <= now && (i.busy > 0 || now < i.last_used + idle))
            .count() as u32
    }

    /// Whether an instance is still cold-starting.
    pub fn starting(&self, now: Millis) -> bool {
        self.instances.iter().any(|i| i.ready_at > now)
    }

    /// Instances with a request on them.
    pub fn busy(&self) -> u32 {
        self.instances.iter().filter(|i| i.busy > 0).count() as u32
    }

    /// Whether a request arriving at `now` would find a warm instance with
    /// room.
    pub fn has_idle_warm(&self, now: Millis, idle: Millis) -> bool {
        self.instances.iter().any(|i| {
            i.busy < self.concurrency
                && i.ready_at <= now
                && (i.busy > 0 || now < i.last_used + idle)
        })
    }

    /// When each instance goes cold if nothing uses it, soonest first (a
    /// busy instance: `idle` after now at the earliest).
    pub fn cold_at(&self, now: Millis, idle: Millis) -> Vec<Millis> {
        let mut v: Vec<Millis> = self
            .instances
            .iter()
            .filter(|i| i.busy > 0 || now < i.last_used + idle)
            .map(|i| {
                if i.busy > 0 {
                    now + idle
                } else {
                    i.last_used + idle
                }
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// When the `k`-th longest-lived instance goes cold (`None`: fewer than
    /// `k` are warm or starting).
    pub fn kth_cold_at(&self, k: u32, now: Millis, idle: Millis) -> Option<Millis> {
        if k == 0 {
            return Some(Millis::MAX);
        }
        let v = self.cold_at(now, idle);
        let n = v.len();
        (n >= k as usize).then(|| v[n - k as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 600_000;
    const D: Millis = 8_000;

    #[test]
    fn first_is_cold_then_warm_until_idle_timeout() {
        let mut w = Warmth::new(1);
        let p = w.place(0, T, D);
        assert!(p.cold);
        w.release(p.id, D + 300);
        assert_eq!(w.warm(D + 300, T), 1);
        let q = w.place(D + 300 + T - 1, T, D);
        assert_eq!(
            q,
            Placed {
                id: p.id,
                cold: false
            }
        );
        w.release(q.id, D + T);
        assert_eq!(w.warm(D + 2 * T - 1, T), 1);
        assert_eq!(w.warm(D + 2 * T, T), 0);
        assert!(w.place(D + 2 * T, T, D).cold);
    }

    #[test]
    fn concurrent_requests_take_one_instance_each() {
        let mut w = Warmth::new(1);
        let a = w.place(0, T, D);
        let b = w.place(0, T, D);
        assert_ne!(a.id, b.id);
        assert_eq!(w.busy(), 2);
        w.release(a.id, 10);
        w.release(b.id, 20);
        assert_eq!(w.cold_at(30, T), vec![10 + T, 20 + T]);
        assert_eq!(w.kth_cold_at(2, 30, T), Some(10 + T));
        assert_eq!(w.kth_cold_at(3, 30, T), None);
    }

    #[test]
    fn an_instance_still_starting_takes_no_second_request() {
        let mut w = Warmth::new(1);
        let a = w.place(0, T, D);
        assert!(w.starting(1));
        assert!(!w.has_idle_warm(1, T));
        let b = w.place(1, T, D);
        assert_ne!(a.id, b.id);
        assert!(b.cold);
        w.release(a.id, D);
        assert!(w.has_idle_warm(D, T));
        assert!(w.starting(D), "the second is still starting");
        w.release(b.id, D + 1);
        assert!(!w.starting(D + 1));
        assert_eq!(w.warm(D + 1, T), 2);
    }
}
