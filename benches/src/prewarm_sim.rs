//! The prewarm benchmark's world, in virtual time: arrival traces of six
//! shapes, and a run of one policy (the gateway's own [`Planner`]) against
//! the simulator's platform model ([`Pool`]) over them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skygate_backends::prewarm::{Millis, Planner, Ticket};
use skygate_backends::sim::model::{Placement, Pool, SimSettings};
use skygate_config::{Prewarm, PrewarmMode};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

pub const MINUTE: Millis = 60_000;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;
/// Monday 2026-01-05 00:00 UTC: the traces start on a Monday.
pub const EPOCH: Millis = 1_767_571_200_000;

/// The platform: idle timeout T, cold start D, service time, one request
/// per instance (as on Lambda), and a cap on instances (beyond it, 429s).
#[derive(Debug, Clone, Copy)]
pub struct World {
    pub idle: Millis,
    pub cold_start: Millis,
    pub service: Millis,
    pub hold: Millis,
    pub max_instances: u32,
    pub days: u64,
    pub learn_days: u64,
}

impl Default for World {
    fn default() -> Self {
        Self {
            idle: 600_000,
            cold_start: 8_000,
            service: 300,
            hold: 75,
            max_instances: 1000,
            days: 14,
            learn_days: 7,
        }
    }
}

pub const SHAPES: [&str; 6] = [
    "timer-60m",
    "timer-15m",
    "bursty",
    "business-hours",
    "rare",
    "steady",
];

/// Arrival times (ms after [`EPOCH`]) of `shape` over `days` (none for a
/// shape not in [`SHAPES`]).
pub fn trace(shape: &str, days: u64, seed: u64) -> Vec<Millis> {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = days * DAY;
    let exp = |rng: &mut StdRng, mean: f64| -> f64 { -mean * (1.0 - rng.gen::<f64>()).ln() };
    let mut v: Vec<Millis> = Vec::new();
    match shape {
        "timer-60m" | "timer-15m" => {
            let period = if shape == "timer-60m" {
                HOUR
            } else {
                15 * MINUTE
            };
            let mut k = 1;
            while k * period < end {
                let jitter = rng.gen_range(-30_000i64..=30_000);
                v.push(((k * period) as i64 + jitter).max(0) as Millis);
                k += 1;
            }
        }
        "bursty" => {
            let mut t = 0.0;
            loop {
                // Lognormal gap: median 40 min, sigma 1 (Box-Muller).
                let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                t += 40.0 * MINUTE as f64 * z.exp();
                if t >= end as f64 {
                    break;
                }
                let at = t as Millis;
                let n = rng.gen_range(1..=6);
                v.extend(std::iter::repeat_n(at, n));
                let more = rng.gen_range(0..=25);
                let mut f = t;
                for _ in 0..more {
                    f += exp(&mut rng, 500.0);
                    v.push(f as Millis);
                }
                t = f;
            }
        }
        "business-hours" => {
            // Thinning from the peak rate, 0.5/min.
            let mut t = 0.0;
            loop {
                t += exp(&mut rng, 2.0 * MINUTE as f64);
                if t >= end as f64 {
                    break;
                }
                let ms = t as Millis;
                let (dow, hour) = ((ms / DAY) % 7, (ms % DAY) / HOUR);
                let rate = if dow < 5 && (9..17).contains(&hour) {
                    0.5
                } else {
                    0.01
                };
                if rng.gen::<f64>() < rate / 0.5 {
                    v.push(ms);
                }
            }
        }
        "rare" | "steady" => {
            let mean = if shape == "rare" {
                6.0 * HOUR as f64
            } else {
                MINUTE as f64 / 6.0
            };
            let mut t = 0.0;
            loop {
                t += exp(&mut rng, mean);
                if t >= end as f64 {
                    break;
                }
                v.push(t as Millis);
            }
        }
        _ => {}
    }
    v.sort_unstable();
    v
}

/// A policy under test.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub conf: Prewarm,
}

/// The base prewarm settings of the benchmark's backend.
pub fn base_conf(w: &World) -> Prewarm {
    Prewarm {
        idle_timeout: Some(Duration::from_millis(w.idle)),
        cold_start: Duration::from_millis(w.cold_start),
        interval: Duration::from_secs(540),
        hold: Duration::from_millis(w.hold),
        ..Prewarm::default()
    }
}

/// `off`, `fixed-k1`, `fixed-k4` (9 min), `adaptive`.
pub fn policies(w: &World) -> Vec<Policy> {
    let base = base_conf(w);
    vec![
        Policy {
            name: "off".into(),
            conf: base.clone(),
        },
        Policy {
            name: "fixed-k1".into(),
            conf: Prewarm {
                mode: PrewarmMode::Fixed,
                ..base.clone()
            },
        },
        Policy {
            name: "fixed-k4".into(),
            conf: Prewarm {
                mode: PrewarmMode::Fixed,
                concurrency: 4,
                ..base.clone()
            },
        },
        Policy {
            name: "adaptive".into(),
            conf: Prewarm {
                mode: PrewarmMode::Adaptive,
                concurrency: 8,
                ..base
            },
        },
    ]
}

/// What one run scored (over the days after `learn_days`).
#[derive(Debug, Clone, Default)]
pub struct Score {
    pub requests: u64,
    pub cold: u64,
    pub throttled: u64,
    /// User 429s while a ping held an instance (pings may have caused them).
    pub throttled_by_pings: u64,
    pub pings: u64,
    pub ping_ms: u64,
    pub alive_ms: u64,
    pub latencies: Vec<Millis>,
    pub days: f64,
    /// Scored pings by the planner's reason.
    pub by_why: std::collections::BTreeMap<&'static str, u64>,
    /// Scored cold user requests by the number of warm instances the model
    /// saw and the planner's target at their arrival.
    pub cold_by_target: std::collections::BTreeMap<u32, u64>,
}

impl Score {
    pub fn cold_pct(&self) -> f64 {
        100.0 * self.cold as f64 / self.requests.max(1) as f64
    }
    pub fn pings_per_day(&self) -> f64 {
        self.pings as f64 / self.days
    }
    pub fn ping_s_per_day(&self) -> f64 {
        self.ping_ms as f64 / 1000.0 / self.days
    }
    pub fn alive_h_per_day(&self) -> f64 {
        self.alive_ms as f64 / HOUR as f64 / self.days
    }
    pub fn p99_ms(&self) -> Millis {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        if v.is_empty() {
            return 0;
        }
        v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
    }
    /// Pings per user request that arrived after at least an idle timeout
    /// of quiet (an "arrival" of a timer).
    pub fn pings_per_request(&self) -> f64 {
        self.pings as f64 / self.requests.max(1) as f64
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A user request arrives (index into the trace).
    Arrive(usize),
    /// A user request or ping ends: (pool instance, ticket index).
    Done(u64, usize),
    /// The planner asked to be asked again (generation).
    Plan(u64),
}

/// Runs `policy` over `arrivals` against the platform model, in virtual
/// time.
pub fn run(w: &World, policy: &Policy, arrivals: &[Millis]) -> Score {
    let settings = SimSettings {
        cold_start_ms: w.cold_start,
        idle_timeout_ms: w.idle,
        concurrency: 1,
        max_instances: w.max_instances,
        ..SimSettings::default()
    };
    let base = Instant::now();
    let at = |t: Millis| base + Duration::from_millis(t);
    let score_from = w.learn_days * DAY;
    let horizon = w.days * DAY;
    let mut pool = Pool::default();
    let mut planner = Planner::new(&policy.conf, EPOCH);
    let mut q: BinaryHeap<Reverse<(Millis, Ev)>> = BinaryHeap::new();
    for (i, &t) in arrivals.iter().enumerate() {
        q.push(Reverse((t, Ev::Arrive(i))));
    }
    // Open requests: (ticket, is user, cold, started).
    let mut open: Vec<Option<(Ticket, bool, bool, Millis)>> = Vec::new();
    // Instance id -> (created, last release).
    let mut life: HashMap<u64, (Millis, Millis)> = HashMap::new();
    let mut gen = 0u64;
    let mut s = Score {
        days: (w.days - w.learn_days) as f64,
        ..Score::default()
    };
    q.push(Reverse((0, Ev::Plan(0))));
    while let Some(Reverse((t, ev))) = q.pop() {
        if t >= horizon {
            break;
        }
        let scored = t >= score_from;
        let mut replan = false;
        match ev {
            Ev::Arrive(_) => {
                let ticket = planner.user_start(EPOCH + t);
                match pool.place(&settings, at(t)) {
                    Placement::Run { id, wait, cold } => {
                        let wait = wait.as_millis() as Millis;
                        life.entry(id).or_insert((t, t));
                        open.push(Some((ticket, true, cold, t)));
                        q.push(Reverse((
                            t + wait + w.service,
                            Ev::Done(id, open.len() - 1),
                        )));
                        if scored {
                            s.requests += 1;
                            s.cold += u64::from(cold);
                            s.latencies.push(wait + w.service);
                            if cold {
                                let target = planner.view(EPOCH + t).target;
                                *s.cold_by_target.entry(target).or_default() += 1;
                            }
                        }
                    }
                    Placement::Throttled => {
                        planner.user_end(ticket, None, EPOCH + t, Some(false));
                        if scored {
                            s.requests += 1;
                            s.throttled += 1;
                            let pinging = open.iter().flatten().any(|(_, user, _, _)| !user);
                            s.throttled_by_pings += u64::from(pinging);
                        }
                    }
                }
            }
            Ev::Done(id, k) => {
                pool.release(id, at(t));
                if let Some(e) = life.get_mut(&id) {
                    e.1 = t;
                }
                if let Some((ticket, user, cold, _)) = open[k].take() {
                    if user {
                        planner.user_end(ticket, None, EPOCH + t, Some(cold));
                    } else {
                        planner.ping_end(ticket, EPOCH + t, true, Some(cold));
                    }
                }
                replan = true;
            }
            Ev::Plan(g) => {
                if g != gen {
                    continue;
                }
                let plan = planner.plan(EPOCH + t);
                if plan.pings > 0 && scored && std::env::var_os("PREWARM_TRACE").is_some() {
                    let v = planner.view(EPOCH + t);
                    eprintln!(
                        "t={:.1}min pings={} why={:?} view={:?}",
                        (t % DAY) as f64 / 60000.0,
                        plan.pings,
                        plan.why,
                        v
                    );
                }
                for _ in 0..plan.pings {
                    let ticket = planner.ping_start(EPOCH + t);
                    match pool.place(&settings, at(t)) {
                        Placement::Run { id, wait, cold } => {
                            let wait = wait.as_millis() as Millis;
                            life.entry(id).or_insert((t, t));
                            open.push(Some((ticket, false, cold, t)));
                            q.push(Reverse((t + wait + w.hold, Ev::Done(id, open.len() - 1))));
                            if scored {
                                s.pings += 1;
                                s.ping_ms += wait + w.hold;
                                *s.by_why.entry(plan.why.as_str()).or_default() += 1;
                            }
                        }
                        Placement::Throttled => planner.ping_end(ticket, EPOCH + t, false, None),
                    }
                }
                gen += 1;
                let next = plan.next.saturating_sub(EPOCH).max(t + 1);
                q.push(Reverse((next, Ev::Plan(gen))));
                continue;
            }
        }
        if replan {
            gen += 1;
            q.push(Reverse((t, Ev::Plan(gen))));
        }
    }
    // Instance-alive time inside the scored days.
    for (created, last) in life.values() {
        let end = (last + w.idle).min(horizon);
        let start = (*created).max(score_from);
        s.alive_ms += end.saturating_sub(start);
    }
    s
}
