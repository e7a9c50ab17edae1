//! What every cloud credential source shares: it is walked only once a
//! backend needs it, renewed in the background before its credentials
//! expire, retried with backoff when renewal fails, and a failure is
//! logged once until it heals.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How long to wait after `failures` failures in a row (1 s doubling, at most 30 s).
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30))
}

/// When credentials fetched at `fetched` and expiring at `expires` are
/// renewed: five minutes before they expire, or halfway through a shorter life.
pub fn renew_time(fetched: SystemTime, expires: SystemTime) -> SystemTime {
    let life = expires.duration_since(fetched).unwrap_or_default();
    expires - (life / 2).min(Duration::from_secs(300))
}

pub struct Renewal {
    what: &'static str,
    wanted: AtomicBool,
    wake: tokio::sync::Notify,
    renew_at: Mutex<Option<SystemTime>>,
    warned: AtomicBool,
}

impl Renewal {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            wanted: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            renew_at: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    /// Marks the source as needed; `true` the first time (the caller then
    /// reads what needs no network at once).
    pub fn want(&self) -> bool {
        let first = !self.wanted.swap(true, Ordering::AcqRel);
        if first {
            self.wake.notify_one();
        }
        first
    }

    /// Wakes the renewal loop (a new credential to fetch).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// New credentials arrived; renew them at `at` (`None`: long-lived).
    pub fn renewed(&self, at: Option<SystemTime>) {
        self.warned.store(false, Ordering::Relaxed);
        if let Ok(mut r) = self.renew_at.lock() {
            *r = at;
        }
    }

    /// When the current credentials are due for renewal.
    pub fn renew_at(&self) -> Option<SystemTime> {
        self.renew_at.lock().ok().and_then(|r| *r)
    }

    /// Runs `refresh` (which answers how long until the next look) until
    /// the process ends, once the source is wanted.
    pub async fn maintain<F, Fut>(&self, mut refresh: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Duration, String>>,
    {
        let mut failures = 0u32;
        loop {
            if !self.wanted.load(Ordering::Acquire) {
                self.wake.notified().await;
                continue;
            }
            let wait = match refresh().await {
                Ok(next) => {
                    failures = 0;
                    next
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures);
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        log::warn!("{}: {why}; trying again in {wait:?}", self.what);
                    }
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_time_and_backoff() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_time(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(3300)
        );
        assert_eq!(
            renew_time(t0, t0 + Duration::from_secs(4)),
            t0 + Duration::from_secs(2)
        );
        assert_eq!(renew_time(t0, t0), t0);
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
