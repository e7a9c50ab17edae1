//! The serverless platform model: instances that cold-start after idling,
//! per-instance concurrency, a cap on instances, scale-up delay, throttling,
//! and injectable faults. Pure logic over an injected clock reading, so it is
//! tested in virtual time.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How one simulated backend behaves. Every field can be changed at run time
/// through `POST /_sim/config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// Cold-start delay D of a new instance, in ms.
    pub cold_start_ms: u64,
    /// Idle time T after which an instance is reclaimed (next request is cold), in ms.
    pub idle_timeout_ms: u64,
    /// Requests one instance serves at once.
    pub concurrency: u32,
    /// Most instances at once; beyond their capacity requests get 429.
    pub max_instances: u32,
    /// Extra delay before a new instance starts its cold start, in ms.
    pub scale_up_delay_ms: u64,
    /// Processing time of a non-streamed answer, in ms.
    pub latency_ms: u64,
    /// Tokens in a completion (a request's `max_tokens` may lower it).
    pub tokens: u32,
    /// Delay between streamed tokens, in ms.
    pub token_delay_ms: u64,
    /// Embedding vector length.
    pub embedding_dim: u32,
    /// Probability of answering 500.
    pub error_rate: f64,
    /// Probability of never answering.
    pub hang_rate: f64,
    /// Probability of cutting the connection halfway through a stream.
    pub cut_rate: f64,
    /// Probability of answering 429 (as a throttling platform does), with
    /// `retry-after: retry_after_s`.
    pub throttle_rate: f64,
    /// The `retry-after` (seconds) of those 429s.
    pub retry_after_s: u64,
    /// Platform modes: answer every call with this platform error (an AWS
    /// exception name such as `ModelNotReadyException`, or `function` for a
    /// Lambda function error).
    pub fail_with: Option<String>,
    /// Platform modes: the AWS access keys (id → secret) whose SigV4
    /// signatures are accepted, besides keys STS issued.
    pub aws_keys: std::collections::BTreeMap<String, String>,
    /// How long keys issued by the simulated STS (and Entra ID tokens)
    /// stay valid, in seconds.
    pub sts_lifetime_s: u64,
    /// Keys the Azure and OpenWhisk platforms accept: an Azure `api-key`, a
    /// function key, an Entra client secret, an OpenWhisk `uuid:key`.
    pub platform_keys: std::collections::BTreeSet<String>,
    /// `aws-lambda-url`: `iam` (SigV4 required) or `none`.
    pub url_auth: String,
    /// `gcp-cloud-run`: the service-account key file whose token requests
    /// the simulated Google accepts.
    pub gcp_sa_key: Option<std::path::PathBuf>,
    /// `gcp-cloud-run`: the audience the service accepts (default: its URL).
    pub gcp_audience: Option<String>,
    /// Platform event streams: hold the connection open this long after the
    /// last event before ending the response (as a slow platform may).
    pub linger_ms: u64,
}

/// The key the simulated Azure and OpenWhisk platforms accept by default.
pub const SIM_PLATFORM_KEY: &str = "sim-platform-key";
/// The simulated OpenWhisk namespace's default `uuid:key`.
pub const SIM_OPENWHISK_KEY: &str = "sim-uuid:sim-platform-key";

/// The simulator's default AWS key pair (simulator only: never a real key).
pub const SIM_ACCESS_KEY_ID: &str = "AKIDSKYGATESIM";
pub const SIM_SECRET_ACCESS_KEY: &str = "skygate-sim-secret-access-key";

impl SimSettings {
    /// The first of the probabilities that is not between 0 and 1.
    pub fn bad_probability(&self) -> Option<&'static str> {
        [
            ("error_rate", self.error_rate),
            ("hang_rate", self.hang_rate),
            ("cut_rate", self.cut_rate),
            ("throttle_rate", self.throttle_rate),
        ]
        .into_iter()
        .find(|(_, p)| !(0.0..=1.0).contains(p))
        .map(|(name, _)| name)
    }
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            cold_start_ms: 0,
            idle_timeout_ms: 60_000,
            concurrency: 64,
            max_instances: 16,
            scale_up_delay_ms: 0,
            latency_ms: 0,
            tokens: 16,
            token_delay_ms: 0,
            embedding_dim: 8,
            error_rate: 0.0,
            hang_rate: 0.0,
            cut_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_s: 1,
            fail_with: None,
            aws_keys: [(
                SIM_ACCESS_KEY_ID.to_string(),
                SIM_SECRET_ACCESS_KEY.to_string(),
            )]
            .into_iter()
            .collect(),
            sts_lifetime_s: 3600,
            platform_keys: [SIM_PLATFORM_KEY.to_string(), SIM_OPENWHISK_KEY.to_string()]
                .into_iter()
                .collect(),
            url_auth: "iam".into(),
            gcp_sa_key: None,
            gcp_audience: None,
            linger_ms: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Instance {
    id: u64,
    busy: u32,
    ready_at: Instant,
    last_used: Instant,
}

/// A placement decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Runs on instance `id`; `wait` until it is ready; `cold` if this request
    /// paid (part of) a cold start.
    Run { id: u64, wait: Duration, cold: bool },
    /// Every instance is at capacity and no more may start.
    Throttled,
}

/// The instance pool of one simulated backend.
#[derive(Debug, Default)]
pub struct Pool {
    instances: Vec<Instance>,
    next_id: u64,
}

impl Pool {
    /// Places a request arriving at `now`.
    pub fn place(&mut self, s: &SimSettings, now: Instant) -> Placement {
        let idle = Duration::from_millis(s.idle_timeout_ms);
        // Reclaim instances idle for longer than T (scale to zero).
        self.instances
            .retain(|i| i.busy > 0 || i.ready_at > now || now.duration_since(i.last_used) < idle);
        let conc = s.concurrency.max(1);
        // Prefer a ready instance with room, then one still starting.
        let best = self
            .instances
            .iter_mut()
            .filter(|i| i.busy < conc)
            .min_by_key(|i| (i.ready_at > now, i.ready_at));
        if let Some(i) = best {
            i.busy += 1;
            let wait = i.ready_at.saturating_duration_since(now);
            return Placement::Run {
                id: i.id,
                wait,
                cold: !wait.is_zero(),
            };
        }
        if self.instances.len() as u32 >= s.max_instances {
            return Placement::Throttled;
        }
        let id = self.next_id;
        self.next_id += 1;
        let wait = Duration::from_millis(s.scale_up_delay_ms + s.cold_start_ms);
        self.instances.push(Instance {
            id,
            busy: 1,
            ready_at: now + wait,
            last_used: now,
        });
        Placement::Run {
            id,
            wait,
            cold: true,
        }
    }

    /// A request on instance `id` finished at `now`.
    pub fn release(&mut self, id: u64, now: Instant) {
        if let Some(i) = self.instances.iter_mut().find(|i| i.id == id) {
            i.busy = i.busy.saturating_sub(1);
            i.last_used = now;
        }
    }

    pub fn instances(&self) -> usize {
        self.instances.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SimSettings {
        SimSettings {
            cold_start_ms: 500,
            idle_timeout_ms: 10_000,
            concurrency: 2,
            max_instances: 2,
            ..SimSettings::default()
        }
    }

    fn run(p: Placement) -> (u64, Duration, bool) {
        match p {
            Placement::Run { id, wait, cold } => (id, wait, cold),
            Placement::Throttled => panic!("throttled"),
        }
    }

    #[test]
    fn first_request_is_cold_then_warm() {
        let s = settings();
        let t0 = Instant::now();
        let mut pool = Pool::default();
        let (id, wait, cold) = run(pool.place(&s, t0));
        assert!(cold);
        assert_eq!(wait, Duration::from_millis(500));
        pool.release(id, t0 + wait);
        let (id2, wait2, cold2) = run(pool.place(&s, t0 + Duration::from_secs(1)));
        assert_eq!((id2, wait2, cold2), (id, Duration::ZERO, false));
    }

    #[test]
    fn idles_out_after_t() {
        let s = settings();
        let t0 = Instant::now();
        let mut pool = Pool::default();
        let (id, wait, _) = run(pool.place(&s, t0));
        pool.release(id, t0 + wait);
        let later = t0 + wait + Duration::from_millis(10_001);
        let (id2, _, cold) = run(pool.place(&s, later));
        assert!(cold);
        assert_ne!(id, id2);
        assert_eq!(pool.instances(), 1);
    }

    #[test]
    fn scales_out_then_throttles() {
        let s = settings();
        let t0 = Instant::now();
        let mut pool = Pool::default();
        let a = run(pool.place(&s, t0));
        let b = run(pool.place(&s, t0));
        assert_eq!(a.0, b.0, "second request shares the starting instance");
        let c = run(pool.place(&s, t0));
        assert_ne!(c.0, a.0, "third request needs a new instance");
        run(pool.place(&s, t0));
        assert_eq!(pool.place(&s, t0), Placement::Throttled);
        pool.release(a.0, t0 + Duration::from_secs(1));
        assert!(matches!(
            pool.place(&s, t0 + Duration::from_secs(1)),
            Placement::Run { cold: false, .. }
        ));
    }

    #[test]
    fn scale_up_delay_adds_to_cold_start() {
        let s = SimSettings {
            scale_up_delay_ms: 200,
            ..settings()
        };
        let mut pool = Pool::default();
        let (_, wait, _) = run(pool.place(&s, Instant::now()));
        assert_eq!(wait, Duration::from_millis(700));
    }
}
