//! Active health: the probe verdicts of one backend turned into a status
//! (pure logic, tested without a clock), and the probe itself, run in the
//! background by the gateway (`probe`).

use skygate_config::HealthCheck;

/// A backend's health as active checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet (or no health check): takes traffic.
    Unknown,
    Healthy,
    /// Failed `unhealthy_threshold` probes in a row: no traffic until it
    /// passes `healthy_threshold` in a row.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    pub fn takes_traffic(self) -> bool {
        self != Self::Unhealthy
    }
}

/// Streaks of probe results.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    status: Health,
    ok_streak: u32,
    fail_streak: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self {
            status: Health::Unknown,
            ok_streak: 0,
            fail_streak: 0,
        }
    }
}

impl HealthTracker {
    pub fn status(&self) -> Health {
        self.status
    }

    /// Records a probe result; returns the new status when it changed.
    pub fn observe(&mut self, ok: bool, cfg: &HealthCheck) -> Option<Health> {
        if ok {
            self.ok_streak = self.ok_streak.saturating_add(1);
            self.fail_streak = 0;
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.ok_streak = 0;
        }
        let next = match self.status {
            Health::Unknown | Health::Healthy if self.fail_streak >= cfg.unhealthy_threshold => {
                Health::Unhealthy
            }
            Health::Unknown if ok => Health::Healthy,
            Health::Unhealthy if self.ok_streak >= cfg.healthy_threshold => Health::Healthy,
            s => s,
        };
        (next != self.status).then(|| {
            self.status = next;
            next
        })
    }

    /// Health checks were switched off for this backend (a reload).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// One active probe of `b`: re-resolves its host (a changed address swaps
/// the peer used by new requests), then sends the check's request on a
/// fresh connection (probes never reuse pooled connections, so they test
/// connect and TLS too) and compares the status. Never counted as traffic:
/// not in the breaker, the latency estimate or the request metrics.
pub async fn probe(
    connector: &pingora_core::connectors::http::Connector,
    b: &crate::BackendRt,
    hc: &HealthCheck,
) -> Result<(), String> {
    use crate::upstream::peer_at;
    let host = (b.config.url.host.as_str(), b.config.url.port);
    let addrs: Vec<std::net::SocketAddr> =
        tokio::time::timeout(hc.timeout, tokio::net::lookup_host(host))
            .await
            .map_err(|_| "name resolution timed out".to_string())?
            .map_err(|e| format!("cannot resolve `{}`: {e}", b.config.url.host))?
            .collect();
    let current = b.peer.load_full().as_ref().as_ref().map(|r| r.addr).ok();
    // Round-robin DNS answers in another order each time: move only when
    // the address in use is no longer among the answers.
    if !current.is_some_and(|c| addrs.contains(&c)) {
        let resolved = *addrs
            .first()
            .ok_or_else(|| format!("`{}` resolves to no address", b.config.url.host))?;
        let next = peer_at(&b.config, resolved)?;
        log::info!(
            "backend `{}`: `{}` now resolves to {resolved}",
            b.config.name,
            b.config.url.host
        );
        b.peer.store(std::sync::Arc::new(Ok(next)));
    }
    let slot = b.peer.load_full();
    let peer = match slot.as_ref() {
        Ok(r) => &r.peer,
        Err(e) => return Err(e.clone()),
    };
    let req = crate::adapter::probe_request(&b.config, &hc.method, &hc.path)
        .map_err(|e| e.message.to_string())?;
    let exchange = async {
        let (mut session, _) = connector
            .get_http_session(peer)
            .await
            .map_err(|e| format!("connect: {}", e.etype().as_str()))?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| format!("send: {}", e.etype().as_str()))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| format!("send: {}", e.etype().as_str()))?;
        session
            .read_response_header()
            .await
            .map_err(|e| format!("response: {}", e.etype().as_str()))?;
        session
            .response_header()
            .map(|h| h.status.as_u16())
            .ok_or_else(|| "no response header".to_string())
        // The session is dropped (closed), never pooled.
    };
    let status = tokio::time::timeout(hc.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", hc.timeout))??;
    if hc.expect_status.contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "status {status}, expected {}",
            hc.expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_in_both_directions() {
        let cfg = HealthCheck {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            ..HealthCheck::defaults()
        };
        let mut h = HealthTracker::default();
        assert!(h.status().takes_traffic());
        assert_eq!(h.observe(true, &cfg), Some(Health::Healthy));
        assert_eq!(h.observe(false, &cfg), None);
        assert_eq!(h.observe(false, &cfg), None);
        assert_eq!(h.observe(false, &cfg), Some(Health::Unhealthy));
        assert!(!h.status().takes_traffic());
        assert_eq!(h.observe(true, &cfg), None);
        assert_eq!(h.observe(false, &cfg), None, "a failure breaks the streak");
        assert_eq!(h.observe(true, &cfg), None);
        assert_eq!(h.observe(true, &cfg), Some(Health::Healthy));
    }

    #[test]
    fn unknown_goes_unhealthy_after_the_threshold() {
        let cfg = HealthCheck::defaults();
        let mut h = HealthTracker::default();
        for _ in 1..cfg.unhealthy_threshold {
            assert_eq!(h.observe(false, &cfg), None);
        }
        assert_eq!(h.observe(false, &cfg), Some(Health::Unhealthy));
    }
}
