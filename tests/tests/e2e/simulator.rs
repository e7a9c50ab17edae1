//! The simulated serverless backend, seen through the gateway: cold starts
//! after idle time, throttling beyond capacity, faults injected at run time,
//! and upstream connections reused from the gateway's pool.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn gateway(sim: &Sim) -> Gateway {
    Gateway::start(&one_backend(&sim.url, ""))
}

fn chat(gw: &Gateway) -> (Resp, Duration) {
    let start = Instant::now();
    let r = gw.chat("m");
    (r, start.elapsed())
}

#[test]
fn cold_start_then_warm_then_cold_again_after_idle() {
    let sim = Sim::start("s", &["--cold-start-ms", "400", "--idle-timeout-ms", "800"]);
    let gw = gateway(&sim);
    let (r, took) = chat(&gw);
    assert_eq!(r.header("x-sim-cold-start"), Some("true"));
    assert!(
        took >= Duration::from_millis(400),
        "a cold start costs its delay: {took:?}"
    );
    let (r, _) = chat(&gw);
    assert_eq!(r.header("x-sim-cold-start"), Some("false"));
    std::thread::sleep(Duration::from_millis(1000));
    let (r, took) = chat(&gw);
    assert_eq!(
        r.header("x-sim-cold-start"),
        Some("true"),
        "idle past T reclaims the instance"
    );
    assert!(took >= Duration::from_millis(400));
    assert_eq!(sim.stats()["cold_starts"], 2);
}

#[test]
fn throttles_beyond_capacity_and_the_429_reaches_the_client() {
    let sim = Sim::start(
        "s",
        &[
            "--concurrency",
            "1",
            "--max-instances",
            "1",
            "--latency-ms",
            "600",
        ],
    );
    let gw = gateway(&sim);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || {
        call(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
            br#"{"model":"m"}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    let (r, _) = chat(&gw);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(sim.stats()["throttled"], 1);
}

#[test]
fn faults_injected_while_running() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    assert_eq!(chat(&gw).0.status, 200);
    sim.set(json!({"error_rate": 1.0}));
    let (r, _) = chat(&gw);
    assert_eq!(r.status, 500, "the backend's own error passes through");
    assert_eq!(r.header("x-skygate-backend"), Some("s"));
    // A 5xx is retried; with one target, on it again (3 attempts by default).
    assert_eq!(r.header("x-skygate-attempts"), Some("3"));
    sim.set(json!({"error_rate": 0.0}));
    assert_eq!(chat(&gw).0.status, 200);
    assert_eq!(sim.stats()["errors"], 3);
}

#[test]
fn upstream_connections_are_pooled() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    for _ in 0..30 {
        assert_eq!(chat(&gw).0.status, 200);
    }
    let stats = sim.stats();
    assert_eq!(stats["requests"], 30);
    // Without pooling every request would open its own connection.
    let conns = stats["connections"].as_u64().unwrap();
    // The connection is pooled before the client sees the end of each
    // response, so every sequential request finds it there. (The stats call
    // above is a connection to the simulator too.)
    assert_eq!(
        conns - 1,
        1,
        "{conns} connections for 30 sequential requests and one stats call"
    );
}
