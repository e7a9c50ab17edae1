//! Retry timing: exponential backoff with full jitter, and the backend's
//! `Retry-After` (seconds or an HTTP date).

use rand::Rng;
use skygate_config::Retries;
use std::time::{Duration, SystemTime};

/// The pause before retry `n` (1 for the first retry): random in
/// `[0, min(max_backoff, backoff * 2^(n-1))]` ("full jitter").
pub fn backoff(cfg: &Retries, n: u32, rng: &mut impl Rng) -> Duration {
    let exp = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    let cap = cfg.backoff.saturating_mul(exp).min(cfg.max_backoff);
    if cap.is_zero() {
        return cap;
    }
    Duration::from_nanos(rng.gen_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64))
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past is zero; anything unparseable is `None`.
pub fn parse_retry_after(v: &[u8], now: SystemTime) -> Option<Duration> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_then_caps_and_is_jittered() {
        let cfg = Retries {
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..Retries::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for n in 1..40 {
            let cap = Duration::from_millis(10 * (1u64 << (n - 1).min(20))).min(cfg.max_backoff);
            let samples: Vec<Duration> = (0..200).map(|_| backoff(&cfg, n, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "n={n}");
            assert!(samples.iter().any(|d| *d < cap / 2), "jittered, n={n}");
        }
        let off = Retries {
            backoff: Duration::ZERO,
            ..cfg
        };
        assert_eq!(backoff(&off, 3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(b"7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(b"soon", now), None);
        assert_eq!(parse_retry_after(b"-1", now), None);
    }
}
