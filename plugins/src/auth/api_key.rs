//! API keys. Keys are held as SHA-256: the presented key is hashed and
//! looked up by its hash, and the match is confirmed with a constant-time
//! compare, so the time taken depends only on the hash of what was
//! presented, never on how close it came to a real key.

use skygate_config::{sha256, ApiKey, Principal};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Arc<Principal>, BuildHasherDefault<DigestHasher>>,
}

/// The map's keys are SHA-256 digests, already uniform: their first eight
/// bytes are the hash (no SipHash over 32 bytes per request).
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    // The slice's length prefix carries nothing.
    fn write_usize(&mut self, _: usize) {}
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> Self {
        Self {
            by_hash: keys
                .iter()
                .map(|k| (k.sha256, k.principal.clone()))
                .collect(),
        }
    }

    /// The principal of a presented key.
    pub fn lookup(&self, presented: &[u8]) -> Option<&Arc<Principal>> {
        let hash = sha256(presented);
        let (stored, principal) = self.by_hash.get_key_value(&hash)?;
        // The map compared hashes; confirm in constant time all the same.
        let same = stored
            .iter()
            .zip(&hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then_some(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_principal_of_a_key_and_nothing_else() {
        let keys = ApiKeys::new(&[ApiKey {
            sha256: sha256(b"sk-good-key"),
            principal: Arc::new(Principal {
                id: "app".into(),
                ..Principal::default()
            }),
        }]);
        assert_eq!(keys.lookup(b"sk-good-key").unwrap().id, "app");
        for wrong in [&b"sk-good-ke"[..], b"sk-good-keyy", b"", b"SK-GOOD-KEY"] {
            assert!(keys.lookup(wrong).is_none());
        }
    }
}
