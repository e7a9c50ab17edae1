//! Failure isolation, against simulated clouds in real processes: retries
//! to another cloud, circuit breakers, 429 throttling, bulkheads, the retry
//! budget, health checks, latency-aware routing, and a backend killed
//! under load.

use crate::harness::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Three simulated clouds.
fn clouds(flags: &[&[&str]; 3]) -> [Sim; 3] {
    [
        Sim::start("aws", flags[0]),
        Sim::start("azure", flags[1]),
        Sim::start("gcp", flags[2]),
    ]
}

/// A gateway with backends `aws`, `azure`, `gcp` (each with `extra` inside
/// its mapping) and route `chat` (model `m`) with `route` inside its mapping.
fn gateway(sims: &[Sim; 3], extra: &str, route: &str) -> Gateway {
    Gateway::start(&config(sims, extra, route))
}

fn config(sims: &[Sim; 3], extra: &str, route: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "{auth}backends:\n  aws: {{ kind: openai, url: \"{a}/v1\"{extra} }}\n  azure: {{ kind: openai, url: \"{b}/v1\"{extra} }}\n  gcp: {{ kind: openai, url: \"{c}/v1\"{extra} }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n{route}",
        auth = auth_section(),
        a = sims[0].url,
        b = sims[1].url,
        c = sims[2].url,
    )
}

const EQUAL: &str = "    targets: [ { backend: aws }, { backend: azure }, { backend: gcp } ]\n";

fn served(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .count()
}

fn attempts(r: &Resp) -> u32 {
    r.header("x-skygate-attempts").unwrap().parse().unwrap()
}

#[test]
fn a_failing_cloud_costs_clients_nothing_and_its_breaker_opens() {
    let sims = clouds(&[&["--error-rate", "1.0"], &[], &[]]);
    let gw = gateway(&sims, "", EQUAL);
    let mut retried = 0;
    for _ in 0..60 {
        let r = gw.chat("m");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(r.header("x-skygate-backend"), Some("aws"));
        if attempts(&r) > 1 {
            retried += 1;
        }
    }
    assert!(retried >= 1, "aws was never picked first?");
    // Five failures in a row open aws's breaker (cool-down 10s): aws saw
    // exactly those five, then no more.
    assert_eq!(served(&sims[0]), 5);
    let aws = gw.backend_status("aws");
    assert_eq!(aws["breaker"]["state"], "open", "{aws}");
    assert_eq!(aws["available"], false);
    assert_eq!(gw.backend_status("azure")["breaker"]["state"], "closed");
    // The access log names each attempt's backend and outcome.
    let lines = gw.access_log(60);
    let retried_line = lines
        .iter()
        .find(|l| l["attempts"] == 2)
        .expect("a retried request in the access log");
    let tries = retried_line["tries"].as_array().unwrap();
    assert_eq!(tries[0]["backend"], "aws");
    assert_eq!(tries[0]["outcome"], "5xx");
    assert_eq!(tries[0]["status"], 500);
    assert_eq!(tries[1]["outcome"], "ok");
    let metrics = gw.admin("GET", "/metrics", "").text();
    assert!(
        metrics.contains(r#"skygate_backend_breaker_state{backend="aws"} 2"#),
        "{metrics}"
    );
    // The transition is logged once, not per request.
    let log = gw.proc.stderr();
    assert_eq!(
        log.matches("backend `aws`: circuit breaker opened").count(),
        1,
        "{log}"
    );
    assert!(metrics.contains(r#"skygate_backend_breaker_opens_total{backend="aws"} 1"#));
    assert!(
        metrics.contains(r#"skygate_upstream_errors_total{backend="aws",code="http_5xx"} 5"#),
        "{metrics}"
    );
}

#[test]
fn a_hanging_cloud_fails_over_after_the_first_byte_timeout() {
    let sims = clouds(&[&["--hang-rate", "1.0"], &[], &[]]);
    let gw = gateway(
        &sims,
        "timeouts: { first_byte: 400ms }",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n",
    );
    let start = Instant::now();
    let r = gw.chat("m");
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("azure"));
    assert_eq!(attempts(&r), 2);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let line = gw.access_log(1).pop().unwrap();
    assert_eq!(line["tries"][0]["outcome"], "timeout");
    assert_eq!(line["tries"][0]["backend"], "aws");
}

#[test]
fn breaker_opens_half_opens_and_closes() {
    let sims = clouds(&[&["--error-rate", "1.0"], &[], &[]]);
    let gw = gateway(
        &sims,
        "breaker: { consecutive_failures: 3, cooldown: 1s }",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n",
    );
    for _ in 0..3 {
        let r = gw.chat("m");
        assert_eq!(r.status, 200);
        assert_eq!(attempts(&r), 2, "aws fails, azure answers");
    }
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "open");
    // A reload (same file) keeps the breaker's state.
    assert_eq!(gw.admin("POST", "/admin/reload", "").status, 200);
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "open");
    // Open: aws is skipped without an attempt.
    let r = gw.chat("m");
    assert_eq!(
        (attempts(&r), r.header("x-skygate-backend")),
        (1, Some("azure"))
    );
    assert_eq!(served(&sims[0]), 3);
    // Heal aws; after the cool-down one trial goes through and closes it.
    sims[0].set(json!({"error_rate": 0.0}));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "half_open");
    let r = gw.chat("m");
    assert_eq!(
        (attempts(&r), r.header("x-skygate-backend")),
        (1, Some("aws"))
    );
    // (The outcome is recorded once the response is written.)
    assert!(eventually(Duration::from_secs(2), || {
        gw.backend_status("aws")["breaker"]["state"] == "closed"
    }));
    // A failed trial opens it again.
    sims[0].set(json!({"error_rate": 1.0}));
    for _ in 0..3 {
        assert_eq!(gw.chat("m").status, 200);
    }
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "open");
    std::thread::sleep(Duration::from_millis(1100));
    let r = gw.chat("m");
    assert_eq!(r.status, 200);
    assert_eq!(attempts(&r), 2, "the trial failed, azure answered");
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "open");
    // Opened three times: 3 failures, 3 failures after closing, the trial.
    assert_eq!(gw.backend_status("aws")["breaker"]["opens"], 3);
}

#[test]
fn a_trial_that_answers_closes_the_breaker_before_its_stream_ends() {
    let sims = clouds(&[&["--error-rate", "1.0"], &[], &[]]);
    let gw = Arc::new(gateway(
        &sims,
        "breaker: { consecutive_failures: 1, cooldown: 500ms }",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n",
    ));
    assert_eq!(attempts(&gw.chat("m")), 2, "aws fails once: open");
    sims[0].set(json!({"error_rate": 0.0, "token_delay_ms": 100, "tokens": 20}));
    std::thread::sleep(Duration::from_millis(600));
    // The trial: a two-second stream from aws.
    let g = gw.clone();
    let trial = std::thread::spawn(move || {
        g.post(
            "/v1/chat/completions",
            &json!({"model": "m", "stream": true, "messages": []}),
        )
    });
    assert!(eventually(Duration::from_secs(2), || {
        gw.backend_status("aws")["in_flight"] == 1
    }));
    // Its header is in: aws is closed again and takes the next requests,
    // long before the trial's body ends.
    assert!(eventually(Duration::from_secs(1), || {
        gw.backend_status("aws")["breaker"]["state"] == "closed"
    }));
    let r = gw.chat("m");
    assert_eq!(
        (r.status, r.header("x-skygate-backend")),
        (200, Some("aws"))
    );
    let t = trial.join().unwrap();
    assert_eq!(t.header("x-skygate-backend"), Some("aws"));
    assert!(sse_data(&t.body).last().is_some_and(|d| d == "[DONE]"));
}

#[test]
fn a_429_storm_honours_retry_after() {
    let sims = clouds(&[
        &["--throttle-rate", "1.0", "--retry-after-s", "2"],
        &[],
        &[],
    ]);
    let gw = gateway(
        &sims,
        "",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n",
    );
    let r = gw.chat("m");
    assert_eq!(r.status, 200);
    assert_eq!(attempts(&r), 2);
    assert!(
        gw.backend_status("aws")["throttled_for_ms"]
            .as_u64()
            .unwrap()
            > 1000
    );
    // For the next two seconds aws is set aside: no attempt goes there.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let r = gw.chat("m");
        assert_eq!((r.status, attempts(&r)), (200, 1));
        assert_eq!(r.header("x-skygate-backend"), Some("azure"));
    }
    assert_eq!(
        served(&sims[0]),
        1,
        "one 429, then nothing during Retry-After"
    );
    // Throttling is not a failure: the breaker stays closed.
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "closed");
    sims[0].set(json!({"throttle_rate": 0.0}));
    assert!(eventually(Duration::from_secs(3), || {
        gw.chat("m").header("x-skygate-backend") == Some("aws")
    }));

    // With nowhere else to go, the backend's 429 and its Retry-After reach
    // the client as they are.
    let only = Sim::start("only", &["--throttle-rate", "1.0", "--retry-after-s", "7"]);
    let gw = Gateway::start(&one_backend(&only.url, ""));
    let r = gw.chat("m");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(attempts(&r), 1, "the only target is throttled: no retry");
}

fn burst(gw: &Gateway, n: usize) -> Vec<Resp> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(|| gw.chat("m"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn the_bulkhead_holds_under_a_burst() {
    let sim = Sim::start("slow", &["--latency-ms", "400"]);
    let body = |limits: &str| {
        format!(
            "{auth}backends:\n  s: {{ kind: openai, url: \"{url}/v1\", limits: {{ {limits} }} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
            auth = auth_section(),
            url = sim.url
        )
    };
    // No queue: what does not fit is refused at once with 503 overloaded.
    let gw = Gateway::start(&body("max_in_flight: 2"));
    let rs = burst(&gw, 8);
    let ok = rs.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Resp> = rs.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + refused.len(), 8);
    assert!((2..=4).contains(&ok), "{ok} answered");
    refused[0].assert_error(503, "overloaded");
    assert!(refused[0].header("retry-after").is_some());
    assert!(sim.stats()["peak_in_flight"].as_u64().unwrap() <= 2);
    drop(gw);

    // With a queue: the burst waits its turn, never more than 2 at once.
    let gw = Gateway::start(&body("max_in_flight: 2, queue_timeout: 5s"));
    let rs = burst(&gw, 8);
    assert!(
        rs.iter().all(|r| r.status == 200),
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(sim.stats()["peak_in_flight"].as_u64().unwrap() <= 2);
}

#[test]
fn the_retry_budget_caps_amplification_in_a_total_outage() {
    let sims = clouds(&[
        &["--error-rate", "1.0"],
        &["--error-rate", "1.0"],
        &["--error-rate", "1.0"],
    ]);
    // Breakers off, so only the budget limits retries: at most 20% of
    // requests plus 1/s over 10s.
    let gw = gateway(
        &sims,
        "breaker: { enabled: false }",
        &format!("{EQUAL}    retries: {{ max_attempts: 3, backoff: 0ms, max_backoff: 0ms, budget: {{ ratio: 0.2, window: 10s, min_per_second: 1 }} }}\n"),
    );
    for _ in 0..100 {
        let r = gw.chat("m");
        assert_eq!(r.status, 500, "the last failure reaches the client");
    }
    let seen: usize = sims.iter().map(served).sum();
    // Without a budget: 300. With it: 100 + 20 + 10.
    assert!((100..=130).contains(&seen), "backends saw {seen}");
    let m = gw.admin("GET", "/metrics", "").text();
    assert!(
        m.contains("skygate_retry_budget_exhausted_total{route=\"chat\"}"),
        "{m}"
    );

    // With breakers on (the default), the outage turns into fast 503s.
    let gw = gateway(&sims, "", EQUAL);
    let before: usize = sims.iter().map(served).sum();
    let mut unavailable = 0;
    for _ in 0..50 {
        let r = gw.chat("m");
        if r.status == 503 {
            r.assert_error(503, "unavailable");
            assert!(r.header("retry-after").is_some());
            unavailable += 1;
        }
    }
    let after: usize = sims.iter().map(served).sum();
    assert!(unavailable >= 40, "{unavailable}");
    assert!(
        after - before <= 20,
        "three breakers × 5 failures (+ retries): {}",
        after - before
    );
}

#[test]
fn a_backend_killed_under_load_costs_clients_nothing() {
    let mut sims = clouds(&[&[], &[], &[]]);
    let gw = Arc::new(gateway(&sims, "timeouts: { connect: 500ms }", EQUAL));
    let stop = Arc::new(AtomicBool::new(false));
    let g = gw.clone();
    let running = load(4, stop.clone(), move || {
        let r = g.chat("m");
        (r.status, r.text())
    });
    std::thread::sleep(Duration::from_millis(600));
    // SIGKILL: connections reset mid-request, pooled ones go stale, new
    // ones are refused.
    let aws = std::mem::replace(&mut sims[0], Sim::start("spare", &[]));
    let served_before_kill = served(&aws);
    drop(aws);
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Release);
    let results = running.join().unwrap();
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(results.len() > 50, "{} requests", results.len());
    assert!(served_before_kill > 5, "aws took traffic before the kill");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
}

#[test]
fn latency_aware_routing_prefers_the_faster_cloud() {
    let sims = clouds(&[&["--latency-ms", "120"], &[], &[]]);
    let gw = gateway(
        &sims,
        "",
        "    strategy: latency\n    targets: [ { backend: aws }, { backend: azure } ]\n",
    );
    let mut by: std::collections::HashMap<String, usize> = Default::default();
    for _ in 0..60 {
        let r = gw.chat("m");
        assert_eq!(r.status, 200);
        *by.entry(r.header("x-skygate-backend").unwrap().to_string())
            .or_default() += 1;
    }
    // aws is tried until it has been measured once, then loses every
    // power-of-two comparison while its estimate stays above azure's.
    let fast = by.get("azure").copied().unwrap_or(0);
    assert!(fast >= 55, "{by:?}");
}

#[test]
fn health_checks_take_an_unhealthy_backend_out_and_back() {
    let sims = clouds(&[&[], &[], &[]]);
    let gw = gateway(
        &sims,
        "health_check: { interval: 150ms, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 2 }",
        EQUAL,
    );
    assert!(eventually(Duration::from_secs(5), || gw
        .backend_status("aws")["health"]
        == "healthy"));
    // Probes ask GET /v1/models, with the backend's own credentials only.
    let probe = sims[0]
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/v1/models")
        .expect("a probe");
    assert_eq!(probe["method"], "GET");
    sims[0].set(json!({"error_rate": 1.0}));
    assert!(eventually(Duration::from_secs(5), || gw
        .backend_status("aws")["health"]
        == "unhealthy"));
    let before = served(&sims[0]);
    for _ in 0..30 {
        let r = gw.chat("m");
        assert_eq!(
            (r.status, attempts(&r)),
            (200, 1),
            "no attempt on an unhealthy backend"
        );
    }
    assert_eq!(served(&sims[0]), before);
    // Probes are not traffic: the breaker saw none of them.
    assert_eq!(
        gw.backend_status("aws")["breaker"]["consecutive_failures"],
        0
    );
    sims[0].set(json!({"error_rate": 0.0}));
    assert!(eventually(Duration::from_secs(5), || gw
        .backend_status("aws")["health"]
        == "healthy"));
    assert!(eventually(Duration::from_secs(5), || {
        gw.chat("m").header("x-skygate-backend") == Some("aws")
    }));
    let m = gw.admin("GET", "/metrics", "").text();
    assert!(
        m.contains(r#"skygate_health_checks_total{backend="aws",result="failed"}"#),
        "{m}"
    );
}

#[test]
fn retries_only_what_the_route_allows() {
    let sims = clouds(&[&["--error-rate", "1.0"], &[], &[]]);
    // Retries on connect errors only: a 500 goes back as it is.
    let gw = gateway(
        &sims,
        "",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n    retries: { on: [connect] }\n",
    );
    let r = gw.chat("m");
    assert_eq!((r.status, attempts(&r)), (500, 1));
    // No retries at all.
    let gw = gateway(
        &sims,
        "",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n    retries: { max_attempts: 1 }\n",
    );
    let r = gw.chat("m");
    assert_eq!((r.status, attempts(&r)), (500, 1));
    // Local answers carry the header too.
    let r = gw.post("/v1/chat/completions", &json!({"model": "nope"}));
    assert_eq!(r.header("x-skygate-attempts"), Some("0"));
}

#[test]
fn streams_fail_over_before_the_first_byte_only() {
    let sims = clouds(&[&["--error-rate", "1.0"], &["--token-delay-ms", "5"], &[]]);
    let gw = gateway(
        &sims,
        "",
        "    targets: [ { backend: aws }, { backend: azure, priority: 1 } ]\n",
    );
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(attempts(&r), 2);
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // A cut after the first byte is not retried: the stream ends with an
    // error event, and the cut counts against the backend.
    sims[1].set(json!({"cut_rate": 1.0, "tokens": 8}));
    sims[0].set(json!({"error_rate": 0.0}));
    let gw = gateway(
        &sims,
        "",
        "    targets: [ { backend: azure }, { backend: aws, priority: 1 } ]\n",
    );
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    assert_eq!((r.status, attempts(&r)), (200, 1));
    assert!(r.text().contains("event: error"), "{}", r.text());
    // (Recorded once the stream has ended, a moment after the client saw it.)
    assert!(eventually(Duration::from_secs(2), || {
        gw.backend_status("azure")["breaker"]["consecutive_failures"] == 1
    }));
}
