//! The doorkeeper of a full in-memory tier: which keys were asked for
//! recently, so that a full tier stores an answer only from its key's
//! second sight on.
//!
//! moka admits a new entry into a full tier (one it does not fit in) only
//! when its key's count in moka's frequency sketch beats the summed counts
//! of the entries it would evict (TinyLFU, `admit` in moka's
//! `base_cache.rs`; the sketch counts every lookup, hit or miss, not
//! inserts). A key looked up once, by the miss now storing its answer,
//! does not beat an entry looked up once before: moka refuses it, after
//! the answer's capture, the entry and the insert have been paid for.
//! Traffic of one-off prompts on a full tier paid all of that for entries
//! thrown away. So once the tier is full a miss whose key the doorkeeper
//! has not seen is not captured or stored, and the key is marked seen;
//! from its second sight on it is stored, and moka's admission decides as
//! before (by then its count is two). What this loses: first sights moka
//! would have taken (by its sketch's noise and aging, or its counting of
//! a freshly filled tier's first reads as none).
//!
//! Two generations of a Bloom filter (two bits a key, both from the
//! key's digest): a key is seen when its bits are set in either; marks go
//! into the current one, and once it holds `per_gen` new keys the older
//! one is cleared and becomes current. A key is remembered for between
//! one and two generations of new keys. `per_gen` is the tier's byte
//! bound over 1 KiB (about its entries), from 4096 to 2^22, with 16 to 32
//! bits a key (16 rounded up to a power of two): 1.4 % or fewer false
//! sightings from a full generation, which only store an answer that moka
//! then judges. Its memory (two generations: 0.4 to 0.8 % of the bound,
//! at most 16 MiB) is outside `cache.memory`, and is allocated at the
//! tier's first fill: a tier that never fills costs none. A rotation
//! clears the older generation on the request that fills the current one
//! (256 KiB at the default bound, once every 131 072 new keys; 8 MiB at
//! most): a bump of tens of microseconds, rarer than a moka table growth,
//! and not worth a background task. Lock-free and
//! approximate: racing marks and a rotation can forget a key or store an
//! answer twice, never serve a wrong one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

pub struct Doorkeeper {
    per_gen: usize,
    /// Made at the tier's first fill: a tier that never fills costs none.
    gens: OnceLock<[Box<[AtomicU64]>; 2]>,
    current: AtomicUsize,
    /// New keys marked in the current generation.
    added: AtomicUsize,
}

/// Bits a key gets in a generation.
const BITS_PER_KEY: usize = 16;

impl Doorkeeper {
    /// For an in-memory tier bounded to `memory` bytes.
    pub fn new(memory: u64) -> Self {
        let per_gen = usize::try_from(memory / 1024)
            .unwrap_or(usize::MAX)
            .clamp(4096, 1 << 22);
        Self {
            per_gen,
            gens: OnceLock::new(),
            current: AtomicUsize::new(0),
            added: AtomicUsize::new(0),
        }
    }

    /// Whether `key` was seen within the last generation or two; it is
    /// seen from now on either way.
    pub fn seen(&self, key: u128) -> bool {
        let gens = self.gens.get_or_init(|| {
            let words = (self.per_gen * BITS_PER_KEY).next_power_of_two() / 64;
            let gen = || {
                std::iter::repeat_with(|| AtomicU64::new(0))
                    .take(words)
                    .collect::<Box<[AtomicU64]>>()
            };
            [gen(), gen()]
        });
        let words = gens[0].len();
        // The key is a digest: any bits of it are as good as a hash.
        let bit = |h: u64| {
            let i = (h as usize) & (words * 64 - 1);
            (i / 64, 1u64 << (i % 64))
        };
        let (a, b) = (bit(key as u64), bit((key >> 64) as u64));
        let has =
            |g: &[AtomicU64]| g[a.0].load(Relaxed) & a.1 != 0 && g[b.0].load(Relaxed) & b.1 != 0;
        let cur = self.current.load(Relaxed) & 1;
        if has(&gens[cur]) {
            return true;
        }
        let before = has(&gens[cur ^ 1]);
        gens[cur][a.0].fetch_or(a.1, Relaxed);
        gens[cur][b.0].fetch_or(b.1, Relaxed);
        if !before && self.added.fetch_add(1, Relaxed) + 1 == self.per_gen {
            // The older generation goes: cleared, it takes the new marks.
            for w in gens[cur ^ 1].iter() {
                w.store(0, Relaxed);
            }
            self.current.store(cur ^ 1, Relaxed);
            self.added.store(0, Relaxed);
        }
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys as the cache makes them: digests, so spread over all bits.
    fn key(i: u64) -> u128 {
        // splitmix64's finalizer.
        let h = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (u128::from(h(i)) << 64) | u128::from(h(!i))
    }

    #[test]
    fn a_key_is_seen_at_its_second_sight_and_forgotten_after_two_generations() {
        let d = Doorkeeper::new(1 << 20); // the smallest: 4096 keys a generation
        assert_eq!(d.per_gen, 4096);
        assert!(!d.seen(key(1)), "a first sight");
        assert!(d.seen(key(1)), "a second sight");
        assert!(d.seen(key(1)));
        // One generation of other keys later it is still known (in the
        // older generation), and marked again in the current one.
        for i in 100..100 + 4096 {
            d.seen(key(i));
        }
        assert!(d.seen(key(1)), "known for a generation at least");
        // Two generations of new keys without it: forgotten.
        for i in 10_000..10_000 + 2 * 4096 {
            d.seen(key(i));
        }
        assert!(!d.seen(key(1)), "forgotten after two generations");
    }

    #[test]
    fn few_keys_are_seen_that_were_not() {
        let d = Doorkeeper::new(1 << 20);
        for i in 0..4000 {
            d.seen(key(i));
        }
        let false_sightings = (1_000_000..1_010_000).filter(|&i| d.seen(key(i))).count();
        // About 2 %: the first generation nearly full, the second filling
        // with these keys (which rotate it once).
        assert!(false_sightings < 300, "{false_sightings} of 10000");
        assert!(false_sightings > 0, "a Bloom filter this full has some");
    }
}
