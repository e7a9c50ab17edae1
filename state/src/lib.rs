//! Skygate's shared run-time state, used by plugins and backends alike
//! without either depending on the other: the clock, the GCRA arithmetic,
//! the in-memory store, and the Redis connection with its scripts. Redis is
//! optional: with no `state.redis` everything is local.

pub mod clock;
pub mod gcra;
pub mod local;
pub mod redis;

pub use gcra::{Rate, Verdict};
pub use local::{Ask, Local};
pub use redis::{MarkOp, Redis, RedisError};

/// A stable 64-bit hash of a key's parts (FNV-1a, then a final mix): the
/// local store's key. Parts are separated so `("ab","c")` ≠ `("a","bc")`.
pub fn key_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer: every bit of the input reaches every bit.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_parts_are_separated() {
        use super::key_hash;
        assert_ne!(key_hash(&["ab", "c"]), key_hash(&["a", "bc"]));
        assert_eq!(key_hash(&["x", "y"]), key_hash(&["x", "y"]));
    }
}
