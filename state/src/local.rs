//! The in-memory store: GCRA state and in-flight counts per key, in shards
//! behind short mutexes. Keys are 64-bit hashes of the limit's name and its
//! partition (no allocation per check). Memory is bounded: a key whose TAT
//! has passed is a full bucket, indistinguishable from an absent one, so it
//! is swept away; when a shard is still at its cap after a sweep, the keys
//! closest to full go first.

use crate::gcra::{self, Rate, Verdict};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

const SHARDS: usize = 16;

/// A key: the hash of a limit's name and partition ([`crate::key_hash`]).
pub type Key = u64;

/// Keys are already well-mixed hashes: the map uses them as they are.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<Key, V, BuildHasherDefault<Identity>>;

struct Shard {
    tats: Map<u64>,
    in_flight: Map<u32>,
    /// Sweep expired keys when `tats` reaches this size.
    sweep_at: usize,
}

/// GCRA state and in-flight counts, bounded to `max_keys` keys of each.
pub struct Local {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

/// One GCRA check of a request: which key, at what rate, for what cost.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub key: Key,
    pub rate: Rate,
    pub cost: u64,
}

impl Local {
    /// A store holding at most about `max_keys` keys (at least 1024).
    pub fn new(max_keys: usize) -> Self {
        let per_shard = (max_keys / SHARDS).max(64);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: Map::default(),
                    in_flight: Map::default(),
                    sweep_at: per_shard.min(1024),
                })
            })
            .collect();
        Self { shards, per_shard }
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, Shard> {
        let s = &self.shards[(key >> 32) as usize % SHARDS];
        // A panic while holding a shard leaves plain numbers: still usable.
        s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks and consumes one ask at `now` (microseconds on
    /// [`crate::clock`]).
    pub fn check(&self, ask: &Ask, now: u64) -> Verdict {
        let mut s = self.shard(ask.key);
        let tat = s.tats.get(&ask.key).copied().unwrap_or(0);
        let (v, new) = gcra::check(tat, now, ask.rate, ask.cost);
        if v.allowed && new > now {
            s.insert(ask.key, new, now, self.per_shard);
        }
        v
    }

    /// Checks every ask; all pass or none is charged.
    pub fn check_all(&self, asks: &[Ask], now: u64, out: &mut Vec<Verdict>) -> bool {
        let start = out.len();
        let mut all = true;
        for a in asks {
            let v = self.check(a, now);
            all &= v.allowed;
            out.push(v);
        }
        if !all {
            for (a, v) in asks.iter().zip(&out[start..]) {
                if v.allowed {
                    self.adjust(a.key, a.rate, -(a.cost.min(a.rate.amount) as i64), now);
                }
            }
        }
        all
    }

    /// Moves a key by `delta` units (a settle: refund or debt), unchecked.
    pub fn adjust(&self, key: Key, rate: Rate, delta: i64, now: u64) {
        if delta == 0 {
            return;
        }
        let mut s = self.shard(key);
        let tat = s.tats.get(&key).copied().unwrap_or(0);
        let new = gcra::adjust(tat, now, rate, delta);
        if new > now {
            s.insert(key, new, now, self.per_shard);
        } else {
            s.tats.remove(&key);
        }
    }

    /// The key's state now, without charging it.
    pub fn peek(&self, key: Key, rate: Rate, now: u64) -> Verdict {
        let tat = self.shard(key).tats.get(&key).copied().unwrap_or(0);
        gcra::peek(tat, now, rate)
    }

    /// Takes an in-flight slot when fewer than `limit` are taken; returns
    /// the slots left, or `None` when full.
    pub fn acquire(&self, key: Key, limit: u32) -> Option<u32> {
        let mut s = self.shard(key);
        let per_shard = self.per_shard;
        if s.in_flight.len() >= per_shard && !s.in_flight.contains_key(&key) {
            // Every slot of this shard is a request in flight: refuse rather
            // than forget one (forgetting would admit past the limit).
            return None;
        }
        let n = s.in_flight.entry(key).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                s.in_flight.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(limit - *n)
    }

    /// Gives back a slot [`Local::acquire`] took.
    pub fn release(&self, key: Key) {
        let mut s = self.shard(key);
        if let Some(n) = s.in_flight.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.in_flight.remove(&key);
            }
        }
    }

    /// Keys held (GCRA state, in-flight counts), for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(t, f), s| {
            let s = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (t + s.tats.len(), f + s.in_flight.len())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

impl Shard {
    fn insert(&mut self, key: Key, tat: u64, now: u64, cap: usize) {
        if self.tats.len() >= self.sweep_at && !self.tats.contains_key(&key) {
            self.sweep(now, cap);
        }
        self.tats.insert(key, tat);
    }

    /// Drops full buckets; at the cap, also the half of the keys closest to
    /// full. Runs when the map doubles, so its cost is spread thin.
    fn sweep(&mut self, now: u64, cap: usize) {
        self.tats.retain(|_, &mut t| t > now);
        if self.tats.len() >= cap {
            let mut tats: Vec<u64> = self.tats.values().copied().collect();
            let mid = tats.len() / 2;
            let (_, &mut median, _) = tats.select_nth_unstable(mid);
            self.tats.retain(|_, &mut t| t > median);
        }
        self.sweep_at = (self.tats.len() * 2).clamp(1024.min(cap), cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(amount: u64) -> Rate {
        Rate {
            amount,
            period_us: 60_000_000,
        }
    }

    #[test]
    fn all_or_nothing() {
        let l = Local::new(1 << 16);
        let now = 1_000_000;
        let a = Ask {
            key: 1,
            rate: rate(10),
            cost: 1,
        };
        let b = Ask {
            key: 2,
            rate: rate(1),
            cost: 1,
        };
        let mut out = Vec::new();
        assert!(l.check_all(&[a, b], now, &mut out));
        out.clear();
        assert!(!l.check_all(&[a, b], now, &mut out));
        assert!(out[0].allowed && !out[1].allowed);
        // The denied request charged nothing to `a`.
        assert_eq!(l.peek(1, rate(10), now).remaining, 9);
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_go() {
        let l = Local::new(4096);
        let r = rate(10);
        let now = 1_000_000;
        for k in 0..200_000u64 {
            let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            l.check(
                &Ask {
                    key,
                    rate: r,
                    cost: 1,
                },
                now,
            );
        }
        let (tats, _) = l.len();
        assert!(tats <= 4096 + SHARDS, "{tats} keys held");
        // A minute later every bucket is full again: the next sweep drops them.
        let later = now + 61_000_000;
        for k in 0..20_000u64 {
            let key = (k + 1_000_000).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            l.check(
                &Ask {
                    key,
                    rate: r,
                    cost: 1,
                },
                later,
            );
        }
        let (tats, _) = l.len();
        assert!(tats <= 4096 + SHARDS);
    }

    #[test]
    fn in_flight_slots() {
        let l = Local::new(1024);
        assert_eq!(l.acquire(7, 2), Some(1));
        assert_eq!(l.acquire(7, 2), Some(0));
        assert_eq!(l.acquire(7, 2), None);
        l.release(7);
        assert_eq!(l.acquire(7, 2), Some(0));
        l.release(7);
        l.release(7);
        l.release(7);
        assert!(l.is_empty());
        assert_eq!(l.acquire(8, 0), None);
        assert!(l.is_empty());
    }
}
