//! The router over real backend state, in virtual time.

use super::state::{Outcome, Registry, WeightOverride};
use super::*;
use rand::SeedableRng;
use skygate_config::load_str;

fn setup(
    routes: &str,
    backend_extra: &str,
) -> (skygate_config::Config, Registry, Vec<Arc<BackendRt>>) {
    let y = format!(
        "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nbackends:\n  a: {{ kind: openai, url: http://127.0.0.1:10/v1{backend_extra} }}\n  b: {{ kind: openai, url: http://127.0.0.1:11/v1{backend_extra} }}\n  c: {{ kind: openai, url: http://127.0.0.1:12/v1{backend_extra} }}\nroutes:\n  r:\n    match: {{ path: /v1/embeddings, models: [e] }}\n{routes}"
    );
    let config = load_str(&y, "t.yaml", &|_| None).unwrap();
    let registry = Registry::new();
    let now = Instant::now();
    let backends = config
        .backends
        .iter()
        .map(|b| Arc::new(BackendRt::build(b, &registry, now)))
        .collect();
    (config, registry, backends)
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(42)
}

fn name(backends: &[Arc<BackendRt>], c: &Chosen<'_>) -> String {
    backends[c.backend].config.name.clone()
}

#[test]
fn weight_zero_is_a_last_resort_not_a_drain() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a, weight: 1 }, { backend: b, weight: 0 }, { backend: c, priority: 1 } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let now = Instant::now();
    for _ in 0..20 {
        let c = pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap();
        assert_eq!(name(&backends, &c), "a");
    }
    // a down: the next group's positive weight first, then b.
    backends[0].state.set_drained(true);
    assert_eq!(
        name(
            &backends,
            &pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap()
        ),
        "c"
    );
    backends[2].state.set_drained(true);
    assert_eq!(
        name(
            &backends,
            &pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap()
        ),
        "b"
    );
    backends[1].state.set_drained(true);
    assert!(pick(route, &rs, &backends, &[], None, now, &mut rng).is_err());
    // A retry after a failure on a goes to another backend, weight 0 or not,
    // before a again.
    for b in &backends {
        b.state.set_drained(false);
    }
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a, weight: 1 }, { backend: b, weight: 0 } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, now);
    for _ in 0..10 {
        assert_eq!(
            name(
                &backends,
                &pick(route, &rs, &backends, &[0], None, now, &mut rng).unwrap()
            ),
            "b"
        );
    }
}

#[test]
fn weighted_follows_weights() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a, weight: 80 }, { backend: b, weight: 20 }, { backend: c, weight: 0 } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut counts = [0u32; 3];
    let mut rng = rng();
    for _ in 0..10_000 {
        let c = pick(route, &rs, &backends, &[], None, Instant::now(), &mut rng).unwrap();
        counts[c.backend] += 1;
    }
    assert_eq!(counts[2], 0);
    assert!((7_600..8_400).contains(&counts[0]), "{counts:?}");
}

#[test]
fn next_priority_group_only_when_the_first_is_unavailable() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a }, { backend: b, priority: 1 } ]\n    fallback: [ c ]\n",
        ", breaker: { consecutive_failures: 2, cooldown: 10s }",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let t0 = Instant::now();
    let mut rng = rng();
    for _ in 0..50 {
        let c = pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap();
        assert_eq!(name(&backends, &c), "a");
    }
    // Two failures open a's breaker: b takes over, then c when b opens too.
    for _ in 0..2 {
        let c = pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap();
        c.attempt.finish(
            Outcome::Failure {
                elapsed: Duration::ZERO,
            },
            t0,
        );
    }
    let c = pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap();
    assert_eq!(name(&backends, &c), "b");
    drop(c);
    backends[1].state.set_drained(true);
    let c = pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap();
    assert_eq!(name(&backends, &c), "c", "fallback is the last group");
    drop(c);
    backends[2].state.set_drained(true);
    // Nothing left: a comes back after its cooldown.
    match pick(route, &rs, &backends, &[], None, t0, &mut rng) {
        Err(NoTarget::Unavailable { retry_after, why }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(10)));
            assert_eq!(why.describe(), "circuit open, drained");
        }
        other => panic!("{:?}", other.map(|c| c.backend)),
    }
    // After the cooldown a is half-open: one trial, and it closes on success.
    let t1 = t0 + Duration::from_secs(10);
    let c = pick(route, &rs, &backends, &[], None, t1, &mut rng).unwrap();
    assert_eq!(name(&backends, &c), "a");
    assert!(c.attempt.is_trial());
    assert!(
        pick(route, &rs, &backends, &[], None, t1, &mut rng).is_err(),
        "one trial at a time"
    );
    c.attempt.finish(
        Outcome::Success {
            ttfb: Duration::from_millis(5),
        },
        t1,
    );
    let c = pick(route, &rs, &backends, &[], None, t1, &mut rng).unwrap();
    assert!(!c.attempt.is_trial());
}

#[test]
fn retries_prefer_untried_targets_in_priority_order() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a }, { backend: b }, { backend: c, priority: 1 } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let now = Instant::now();
    for _ in 0..20 {
        let c = pick(route, &rs, &backends, &[0], None, now, &mut rng).unwrap();
        assert_eq!(name(&backends, &c), "b", "same group first");
        let c = pick(route, &rs, &backends, &[0, 1], None, now, &mut rng).unwrap();
        assert_eq!(name(&backends, &c), "c", "then the next group");
        let c = pick(route, &rs, &backends, &[0, 1, 2], None, now, &mut rng).unwrap();
        assert_ne!(name(&backends, &c), "c", "then the first group again");
    }
}

#[test]
fn bulkhead_spills_over_then_reports_full() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a, weight: 100 }, { backend: b, weight: 1 } ]\n",
        ", limits: { max_in_flight: 1, queue_timeout: 40ms }",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let now = Instant::now();
    let first = pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap();
    let second = pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap();
    assert_ne!(first.backend, second.backend);
    match pick(route, &rs, &backends, &[], None, now, &mut rng) {
        Err(NoTarget::Full { queue_timeout }) => {
            assert_eq!(queue_timeout, Duration::from_millis(40))
        }
        other => panic!("{:?}", other.map(|c| c.backend)),
    }
    drop(first);
    assert!(pick(route, &rs, &backends, &[], None, now, &mut rng).is_ok());
}

#[test]
fn least_inflight_and_latency_strategies() {
    let (config, reg, backends) = setup(
        "    strategy: least_inflight\n    targets: [ { backend: a }, { backend: b } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let now = Instant::now();
    let held: Vec<_> = (0..4)
        .map(|_| pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap())
        .collect();
    let on_a = held.iter().filter(|c| c.backend == 0).count();
    assert_eq!(on_a, 2, "least in-flight alternates");

    let (config, reg, backends) = setup(
        "    strategy: latency\n    targets: [ { backend: a }, { backend: b }, { backend: c } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let t0 = Instant::now();
    // Teach it: a is slow, b and c fast.
    for (i, ms) in [(0usize, 400u64), (1, 5), (2, 5)] {
        let b = &backends[i];
        let a = b.state.try_acquire(t0, &b.config).unwrap();
        a.finish(
            Outcome::Success {
                ttfb: Duration::from_millis(ms),
            },
            t0,
        );
    }
    let mut counts = [0u32; 3];
    for _ in 0..3_000 {
        counts[pick(route, &rs, &backends, &[], None, t0, &mut rng)
            .unwrap()
            .backend] += 1;
    }
    // a wins only when drawn against itself, which P2C never does: 0.
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!(counts[1] > 1_200 && counts[2] > 1_200, "{counts:?}");
}

#[test]
fn overrides_unhealthy_and_the_allowed_set() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a }, { backend: b }, { backend: c } ]\n",
        ", health_check: { unhealthy_threshold: 1 }",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let now = Instant::now();
    rs.set_overrides(Some(WeightOverride {
        by_backend: vec![("a".into(), 0), ("b".into(), 5), ("c".into(), 0)],
    }));
    for _ in 0..20 {
        assert_eq!(
            name(
                &backends,
                &pick(route, &rs, &backends, &[], None, now, &mut rng).unwrap()
            ),
            "b"
        );
    }
    rs.set_overrides(None);
    let hc = backends[1].config.health_check.clone().unwrap();
    backends[1].state.observe_probe(false, &hc);
    let only_c = |i: usize| backends[i].config.name != "a";
    for _ in 0..20 {
        let c = pick(route, &rs, &backends, &[], Some(&only_c), now, &mut rng).unwrap();
        assert_eq!(name(&backends, &c), "c", "b is unhealthy, a not allowed");
    }
    backends[2].state.observe_probe(false, &hc);
    let result = pick(route, &rs, &backends, &[], Some(&only_c), now, &mut rng);
    match result {
        Err(NoTarget::Unavailable {
            retry_after: None,
            why,
        }) => {
            assert_eq!(why.describe(), "unhealthy")
        }
        other => panic!("{:?}", other.map(|c| c.backend)),
    };
}

#[test]
fn latency_does_not_pour_a_burst_onto_an_unmeasured_backend() {
    let (config, reg, backends) = setup(
        "    strategy: latency\n    targets: [ { backend: a }, { backend: b } ]\n",
        "",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let t0 = Instant::now();
    let a = &backends[0];
    a.state.try_acquire(t0, &a.config).unwrap().finish(
        Outcome::Success {
            ttfb: Duration::from_millis(5),
        },
        t0,
    );
    let held: Vec<_> = (0..50)
        .map(|_| pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap())
        .collect();
    let on_b = held.iter().filter(|c| c.backend == 1).count();
    assert!((1..=3).contains(&on_b), "b (unmeasured) took {on_b} of 50");
}

#[test]
fn a_trial_answered_frees_the_half_open_slot_before_its_body_ends() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a } ]\n",
        ", breaker: { consecutive_failures: 1, cooldown: 1s }",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let t0 = Instant::now();
    let c = pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap();
    c.attempt.finish(
        Outcome::Failure {
            elapsed: Duration::ZERO,
        },
        t0,
    );
    let t1 = t0 + Duration::from_secs(1);
    let mut trial = pick(route, &rs, &backends, &[], None, t1, &mut rng).unwrap();
    assert!(trial.attempt.is_trial());
    assert!(pick(route, &rs, &backends, &[], None, t1, &mut rng).is_err());
    // The header is in: closed at once, though the body still streams.
    trial.attempt.answered(Duration::from_millis(3), t1);
    let other = pick(route, &rs, &backends, &[], None, t1, &mut rng).unwrap();
    assert!(!other.attempt.is_trial());
    assert_eq!(
        backends[0].state.in_flight(),
        2,
        "both hold their bulkhead slot"
    );
    // A cut mid-body still counts against the backend.
    trial.attempt.finish(
        Outcome::Failure {
            elapsed: Duration::ZERO,
        },
        t1,
    );
    drop(other);
    assert_eq!(backends[0].state.in_flight(), 0);
    assert!(
        pick(route, &rs, &backends, &[], None, t1, &mut rng).is_err(),
        "opened again"
    );
}

#[test]
fn an_unfinished_trial_frees_its_slot_when_dropped() {
    let (config, reg, backends) = setup(
        "    targets: [ { backend: a } ]\n",
        ", breaker: { consecutive_failures: 1, cooldown: 1s }",
    );
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let t0 = Instant::now();
    pick(route, &rs, &backends, &[], None, t0, &mut rng)
        .unwrap()
        .attempt
        .finish(
            Outcome::Failure {
                elapsed: Duration::ZERO,
            },
            t0,
        );
    let t1 = t0 + Duration::from_secs(1);
    let trial = pick(route, &rs, &backends, &[], None, t1, &mut rng).unwrap();
    drop(trial); // the client went away
    let again = pick(route, &rs, &backends, &[], None, t1, &mut rng).unwrap();
    assert!(
        again.attempt.is_trial(),
        "the slot is free for another trial"
    );
}

#[test]
fn throttled_backend_is_skipped_for_its_retry_after() {
    let (config, reg, backends) = setup("    targets: [ { backend: a }, { backend: b } ]\n", "");
    let route = &config.routes[0];
    let rs = reg.route(route, Instant::now());
    let mut rng = rng();
    let t0 = Instant::now();
    let b = &backends[0];
    b.state
        .try_acquire(t0, &b.config)
        .unwrap()
        .finish(Outcome::Throttled(Some(Duration::from_secs(2))), t0);
    for _ in 0..20 {
        assert_eq!(
            name(
                &backends,
                &pick(route, &rs, &backends, &[], None, t0, &mut rng).unwrap()
            ),
            "b"
        );
    }
    let t2 = t0 + Duration::from_secs(2);
    let seen_a = (0..50).any(|_| {
        pick(route, &rs, &backends, &[], None, t2, &mut rng)
            .unwrap()
            .backend
            == 0
    });
    assert!(seen_a);
}

#[test]
fn probes_stay_an_interval_apart_across_restarts() {
    let (_config, _reg, backends) = setup("    targets: [ { backend: a } ]\n", "");
    let s = &backends[0].state;
    let t0 = Instant::now();
    let every = Duration::from_secs(5);
    assert_eq!(s.probe_due_in(t0, every), Duration::ZERO);
    // A restarted checker (a reload) one second later waits the rest.
    assert_eq!(
        s.probe_due_in(t0 + Duration::from_secs(1), every),
        Duration::from_secs(4)
    );
    assert_eq!(s.probe_due_in(t0 + every, every), Duration::ZERO);
}
