//! `skygate keys`: minting client API keys.

use rand::RngCore;

/// A new API key: `prefix` and 32 random bytes from the OS (256 bits), in
/// URL-safe base64 without padding (43 characters).
pub fn mint(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(prefix.len() + 43);
    out.push_str(prefix);
    let mut bits = 0u32;
    let mut n = 0;
    for b in raw {
        bits = bits << 8 | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[(bits >> n & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(ALPHABET[(bits << (6 - n) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_long_random_and_url_safe() {
        let a = super::mint("sk-test-");
        let b = super::mint("sk-test-");
        assert_ne!(a, b);
        assert_eq!(a.len(), "sk-test-".len() + 43);
        assert!(a["sk-test-".len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
