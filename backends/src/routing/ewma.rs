//! Peak-EWMA of a backend's time to first byte, as linkerd and Finagle use
//! for latency-aware balancing: a sample above the estimate replaces it at
//! once (peaks count fully); below it, the estimate decays toward the
//! sample with time constant `DECAY`. Read at `now`, the estimate also
//! decays toward zero while no samples arrive, so a backend that was slow
//! once gets tried again later.

use std::time::{Duration, Instant};

/// The time constant of the decay (linkerd's default).
pub const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default)]
pub struct PeakEwma {
    /// Nanoseconds.
    estimate: f64,
    at: Option<Instant>,
}

impl PeakEwma {
    fn decayed(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.estimate * (-dt / DECAY.as_secs_f64()).exp()
            }
        }
    }

    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let s = sample.as_nanos() as f64;
        self.estimate = match self.at {
            None => s,
            Some(at) if s < self.estimate => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let w = (-dt / DECAY.as_secs_f64()).exp();
                self.estimate * w + s * (1.0 - w)
            }
            Some(_) => s,
        };
        self.at = Some(now);
    }

    /// The estimate at `now`, in nanoseconds (0 before any sample).
    pub fn estimate(&self, now: Instant) -> f64 {
        self.decayed(now)
    }

    /// Whether any sample was seen.
    pub fn measured(&self) -> bool {
        self.at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_count_at_once_and_decay_slowly() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        assert_eq!(e.estimate(t0), 0.0);
        e.observe(Duration::from_millis(10), t0);
        e.observe(Duration::from_millis(200), t0);
        assert_eq!(e.estimate(t0), 200e6, "a peak replaces the estimate");
        // A fast sample right after barely moves it...
        e.observe(Duration::from_millis(10), t0 + Duration::from_millis(1));
        assert!(e.estimate(t0 + Duration::from_millis(1)) > 190e6);
        // ...a steady stream of them over a few time constants brings it down.
        for i in 1..=300 {
            e.observe(
                Duration::from_millis(10),
                t0 + Duration::from_millis(100 * i),
            );
        }
        let t = t0 + Duration::from_secs(30);
        assert!(e.estimate(t) < 30e6, "{}", e.estimate(t));
    }

    #[test]
    fn unsampled_estimate_decays_toward_zero() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        e.observe(Duration::from_secs(1), t0);
        let later = e.estimate(t0 + Duration::from_secs(30));
        assert!(later < 0.06e9, "{later}");
    }
}
