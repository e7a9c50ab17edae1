//! Prewarm pings and cold-aware routing, against `skygate sim` platforms
//! that cold-start for real (in milliseconds): fixed rounds, an operator's
//! ask, the warmth state, pings kept out of the request pipeline, cold-aware
//! routing, and two replicas that share one ping per due time through Redis.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The prewarm pings a sim received, as it recorded them.
fn pings(sim: &Sim) -> Vec<Value> {
    sim.requests()
        .into_iter()
        .filter(|r| {
            r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[0] == "x-skygate-prewarm" && h[1] == "1")
        })
        .collect()
}

fn ping_count(sim: &Sim) -> u64 {
    sim.stats()["prewarm_pings"].as_u64().unwrap()
}

fn chat_body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

/// One platform that cold-starts in `cold` ms, reclaims instances idle for
/// `idle` ms and runs one request per instance (as Lambda does).
fn platform(name: &str, cold: u64, idle: u64) -> Sim {
    Sim::start(
        name,
        &[
            "--cold-start-ms",
            &cold.to_string(),
            "--idle-timeout-ms",
            &idle.to_string(),
            "--concurrency",
            "1",
        ],
    )
}

#[test]
fn fixed_rounds_warm_k_instances_with_marked_pings_outside_limits_and_cache() {
    let sim = platform("fn", 300, 3_000);
    let gw = Gateway::start(&format!(
        "{auth}backends:\n  s: {{ kind: openai, url: \"{}/v1\", prewarm: {{ mode: fixed, idle_timeout: 3s, interval: 1s, concurrency: 2, hold: 20ms, cold_header: x-sim-cold-start }} }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n    targets: [ {{ backend: s }} ]\n    cache: {{ ttl: 1m }}\nlimits:\n  - {{ name: two, per: principal, requests_per_hour: 2 }}\n",
        sim.url,
        auth = auth_section()
    ));
    // A start-up round, then a round a second: two instances each time.
    assert!(
        eventually(Duration::from_secs(10), || ping_count(&sim) >= 8),
        "{}",
        sim.stats()
    );
    let seen = pings(&sim);
    assert!(seen.len() >= 8);
    for p in &seen {
        assert_eq!(p["path"], "/v1/chat/completions", "{p}");
        let hold = p["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "x-skygate-prewarm-hold-ms")
            .map(|h| h[1].clone());
        assert_eq!(hold, Some(json!("20")), "{p}");
        // The backend's own key would go here; the client's never does.
        assert!(!p.to_string().contains(CLIENT_KEY), "{p}");
    }
    let stats = sim.stats();
    assert_eq!(stats["instances"], 2, "{stats}");
    // The warmth state says so.
    let warm = &gw.backend_status("s")["warm"];
    assert_eq!(warm["mode"], "fixed", "{warm}");
    assert_eq!(warm["warm_instances"], 2, "{warm}");
    assert!(
        warm["next_cold_at"].as_str().unwrap().ends_with('Z'),
        "{warm}"
    );
    assert!(warm["pings"]["sent"].as_u64().unwrap() >= 8, "{warm}");
    // Pings were not counted against the client's limit (two an hour): its
    // first request passes, and finds a warm instance (once the last round's
    // pings let go of theirs: a ping holds its instance 20 ms).
    std::thread::sleep(Duration::from_millis(200));
    let r = gw.post("/v1/chat/completions", &chat_body());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sim-cold-start"), Some("false"));
    assert_eq!(r.header("x-skygate-cache"), Some("miss"));
    let r = gw.post("/v1/chat/completions", &chat_body());
    assert_eq!(r.status, 200, "{}", r.text());
    // The second is a cache hit (pings never filled the cache, or this
    // would have been a hit the first time) and still within the limit.
    assert_eq!(r.header("x-skygate-cache"), Some("hit"));
    let other = json!({"model": "m", "messages": [{"role": "user", "content": "other"}]});
    gw.post("/v1/chat/completions", &other)
        .assert_error(429, "rate_limit_exceeded");
    let metrics = gw.admin("GET", "/metrics", "").text();
    let ok = metric(
        &metrics,
        "skygate_prewarm_pings_total{backend=\"s\",result=\"ok\"}",
    );
    assert!(ok.unwrap() >= 8.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "skygate_backend_warm_instances{backend=\"s\"}"),
        Some(2.0)
    );
}

#[test]
fn an_operator_prewarms_now_and_bad_asks_get_clear_errors() {
    let sim = platform("fn", 200, 60_000);
    let plain = Sim::start("plain", &[]);
    let gw = Gateway::start(&format!(
        "{auth}backends:\n  s: {{ kind: openai, url: \"{}/v1\", prewarm: {{ mode: off, idle_timeout: 1m, cold_start: 200ms }} }}\n  p: {{ kind: openai, url: \"{}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }}, {{ backend: p, weight: 0 }} ] }}\n",
        sim.url,
        plain.url,
        auth = auth_section()
    ));
    // Mode off: no pings by itself, but the warmth model is there.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ping_count(&sim), 0);
    assert_eq!(gw.backend_status("s")["warm"]["warm_instances"], 0);
    assert_eq!(gw.backend_status("p")["warm"], Value::Null);
    let r = gw.admin("POST", "/admin/backends/s/prewarm?instances=3", "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["pings"], 3);
    assert!(eventually(Duration::from_secs(5), || {
        gw.backend_status("s")["warm"]["pings"]["cold"] == 3
    }));
    assert_eq!(gw.backend_status("s")["warm"]["warm_instances"], 3);
    assert_eq!(ping_count(&sim), 3);
    assert_eq!(sim.stats()["prewarm_cold"], 3);
    assert_eq!(sim.stats()["instances"], 3);
    let warm = &gw.backend_status("s")["warm"];
    assert_eq!(warm["pings"]["cold"], 3, "{warm}");
    // The platform's cold starts were read from the pings' latency.
    assert!(warm["cold_start_ms"].as_u64().unwrap() >= 100, "{warm}");

    let err = |path: &str, status: u16, code: &str, needle: &str| {
        let r = gw.admin("POST", path, "");
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    };
    err(
        "/admin/backends/s/prewarm?instances=0",
        400,
        "invalid_request",
        "`instances` must be 1 to 256",
    );
    err(
        "/admin/backends/s/prewarm?k=2",
        400,
        "invalid_request",
        "unknown parameter `k=2`",
    );
    err(
        "/admin/backends/nope/prewarm",
        404,
        "not_found",
        "no backend `nope`: backends are [p, s]",
    );
    err(
        "/admin/backends/p/prewarm",
        400,
        "invalid_request",
        "has no warmth model: set `prewarm.idle_timeout`",
    );
    let r = gw.admin("GET", "/admin/backends/s/prewarm", "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn cold_aware_routing_sends_requests_to_the_warm_target_and_pings_the_cold_one() {
    // `cold` cold-starts in 4 s and reclaims idle instances after 2 s;
    // `warm` cold-starts in 1.5 s. `cold` is warm again, for the model
    // and for real, once the ping the first request below sets off has
    // answered, a cold start later; so the six requests must all be sent
    // within `cold`'s cold start: 4 s leaves room on a loaded machine
    // (1.5 s did not, once in CI).
    let cold = platform("cold", 4_000, 2_000);
    let warm = platform("warm", 1_500, 120_000);
    let gw = Gateway::start(&format!(
        "{auth}backends:\n  cold: {{ kind: openai, url: \"{}/v1\", prewarm: {{ idle_timeout: 2s, mode: adaptive, cold_start: 4s, cold_header: x-sim-cold-start }} }}\n  warm: {{ kind: openai, url: \"{}/v1\", prewarm: {{ idle_timeout: 2m, mode: adaptive, cold_start: 1500ms, cold_header: x-sim-cold-start }} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: cold }}, {{ backend: warm }} ] }}\n",
        cold.url,
        warm.url,
        auth = auth_section()
    ));
    // Both are warmed at start; `cold` goes cold 2 s later (adaptive,
    // with no traffic learned, does not keep it). Its start-up ping must
    // have ended first: before it, `cold` also reads as cold, and would be
    // warm a moment later. So must any ping: an instance busy with one
    // reads as cold too, until its answer. `warm_until` empty: no instance
    // is warm, starting or busy.
    let woke_then_cooled = |name: &str| {
        let w = gw.backend_status(name)["warm"].clone();
        w["pings"]["cold"].as_u64().unwrap_or(0) >= 1
            && w["likely_cold"] == true
            && w["warm_until"].as_array().is_some_and(Vec::is_empty)
    };
    assert!(eventually(Duration::from_secs(20), || {
        woke_then_cooled("cold") && gw.backend_status("warm")["warm"]["likely_cold"] == false
    }));
    let before = cold.stats()["requests"].as_u64().unwrap();
    // Every request goes to the warm cloud at once, with no cold start...
    // (`warm` has one instance in the model, taken while a request is on
    // it: each request must free it before its client has the answer, or
    // the next one would find both cold and might go to `cold`.)
    for _ in 0..6 {
        let r = gw.post("/v1/chat/completions", &chat_body());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-skygate-backend"), Some("warm"));
        assert_eq!(r.header("x-sim-cold-start"), Some("false"));
    }
    // ...while the cold one is pinged awake: once, not once a request, and
    // no user request reached it.
    assert!(eventually(Duration::from_secs(5), || {
        cold.stats()["requests"].as_u64().unwrap() > before
    }));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cold.stats()["requests"].as_u64().unwrap(), before + 1);
    assert_eq!(pings(&cold).len() as u64, before + 1, "all of them pings");
    let reason = gw.backend_status("cold")["warm"]["last_ping_reason"].clone();
    assert_eq!(reason, "cold_route");
    // Once it is warm, it takes its share again.
    assert!(eventually(Duration::from_secs(10), || {
        gw.backend_status("cold")["warm"]["likely_cold"] == false
    }));
    let mut to_cold = 0;
    for _ in 0..20 {
        let r = gw.post("/v1/chat/completions", &chat_body());
        assert_eq!(r.status, 200);
        if r.header("x-skygate-backend") == Some("cold") {
            to_cold += 1;
        }
    }
    assert!(to_cold > 0, "the warmed cloud never got its share back");
}

/// With prewarm off, the warmth model is kept but the router ignores it
/// (nothing would warm a backend it passed over) and nothing is pinged.
#[test]
fn without_prewarm_the_router_keeps_the_split_and_pings_nothing() {
    let a = platform("a", 300, 1_000);
    let b = platform("b", 300, 1_000);
    let gw = Gateway::start(&format!(
        "{auth}backends:\n  a: {{ kind: openai, url: \"{}/v1\", prewarm: {{ idle_timeout: 1s }} }}\n  b: {{ kind: openai, url: \"{}/v1\", prewarm: {{ mode: off, idle_timeout: 1s }} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: b }} ] }}\n",
        a.url,
        b.url,
        auth = auth_section()
    ));
    for _ in 0..3 {
        assert_eq!(gw.post("/v1/chat/completions", &chat_body()).status, 200);
    }
    assert_eq!(ping_count(&b), 0);
    assert_eq!(gw.backend_status("b")["warm"]["mode"], "off");
    assert_eq!(gw.backend_status("b")["warm"]["user_requests"], 3);
    // `prewarm:` without a mode means adaptive.
    assert_eq!(gw.backend_status("a")["warm"]["mode"], "adaptive");
}

#[test]
fn two_replicas_with_redis_send_one_ping_per_due_time() {
    let redis = RedisServer::start();
    let sim = platform("fn", 50, 1_200);
    let body = format!(
        "{auth}state: {{ redis: \"{}\", key_prefix: pw }}\nbackends:\n  s: {{ kind: openai, url: \"{}/v1\", prewarm: {{ mode: fixed, idle_timeout: 1200ms, interval: 1s, concurrency: 1, hold: 10ms }} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
        redis.url,
        sim.url,
        auth = auth_section()
    );
    let a = Gateway::start(&body);
    let b = Gateway::start(&body);
    for g in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), || {
            g.metric("skygate_redis_up") == Some(1.0)
        }));
    }
    let start = ping_count(&sim);
    std::thread::sleep(Duration::from_millis(5_200));
    let sent = ping_count(&sim) - start;
    // Five or six rounds in 5.2 s: one ping each, not one per replica.
    assert!((4..=7).contains(&sent), "{sent} pings in 5.2 s");
    let peer = |g: &Gateway| {
        g.backend_status("s")["warm"]["pings"]["left_to_peer"]
            .as_u64()
            .unwrap()
    };
    assert!(peer(&a) + peer(&b) >= 3, "{} {}", peer(&a), peer(&b));

    // Redis killed: each replica pings alone; nothing stops, nothing fails.
    let mut redis = redis;
    redis.kill();
    let start = ping_count(&sim);
    std::thread::sleep(Duration::from_millis(3_200));
    let alone = ping_count(&sim) - start;
    assert!(alone >= 3, "{alone} pings in 3.2 s without Redis");
    for g in [&a, &b] {
        assert_eq!(g.post("/v1/chat/completions", &chat_body()).status, 200);
    }
}

/// A route whose primary cold-starts in 1.5 s (instances reclaimed after
/// 1 s) and whose fallback is warm; `route` goes inside the route mapping.
fn primary_and_fallback(route: &str) -> (Sim, Sim, Gateway) {
    primary_and(platform("warm", 0, 120_000), route)
}

/// [`primary_and_fallback`] with this `warm` fallback.
fn primary_and(warm: Sim, route: &str) -> (Sim, Sim, Gateway) {
    primary_cold_for(1_500, warm, route)
}

/// [`primary_and`] with a primary that cold-starts in `cold_ms`.
fn primary_cold_for(cold_ms: u64, warm: Sim, route: &str) -> (Sim, Sim, Gateway) {
    let cold = platform("cold", cold_ms, 1_000);
    let gw = Gateway::start(&format!(
        "{auth}backends:\n  cold: {{ kind: openai, url: \"{}/v1\", prewarm: {{ mode: adaptive, idle_timeout: 1s, cold_start: 1500ms, cold_header: x-sim-cold-start }} }}\n  warm: {{ kind: openai, url: \"{}/v1\", prewarm: {{ mode: adaptive, idle_timeout: 2m, cold_header: x-sim-cold-start }} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: cold }} ], fallback: [ warm ]{route} }}\n",
        cold.url,
        warm.url,
        auth = auth_section()
    ));
    // The start-up pings warm both; the primary goes cold a second later.
    assert!(eventually(Duration::from_secs(10), || {
        gw.backend_status("cold")["warm"]["pings"]["sent"] == 1
            && gw.backend_status("cold")["warm"]["likely_cold"] == true
            && gw.backend_status("warm")["warm"]["likely_cold"] == false
    }));
    (cold, warm, gw)
}

#[test]
fn a_client_that_leaves_during_a_hedge_has_both_attempts_logged() {
    // The fallback is warm but slow: the hedge is still racing the cold
    // primary when the client goes.
    let slow = Sim::start(
        "warm",
        &["--latency-ms", "3000", "--idle-timeout-ms", "120000"],
    );
    // A long cold start: the client is gone well before the primary could
    // answer, however slowly this machine runs the test.
    let (cold, warm, gw) = primary_cold_for(6_000, slow, ", hedge: { after: 200ms }");
    let asked = |sim: &Sim| {
        sim.requests()
            .iter()
            .filter(|q| {
                q["path"] == "/v1/chat/completions" && !q.to_string().contains("x-skygate-prewarm")
            })
            .count()
    };
    let body = chat_body().to_string();
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(3), || asked(&warm) == 1
        && asked(&cold) == 1));
    drop(s);
    let line = gw
        .access_log(1)
        .into_iter()
        .next()
        .expect("an access-log line");
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["attempts"], 2, "{line}");
    let tries: Vec<(&str, &str)> = line["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["backend"].as_str().unwrap(),
                t["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tries,
        [("cold", "client_closed"), ("warm", "client_closed")],
        "{line}"
    );
}

#[test]
fn a_hedge_sends_a_cold_primarys_request_to_a_warm_target_after_the_delay() {
    let (cold, _warm, gw) = primary_and_fallback(", hedge: { after: 200ms }");
    let t = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat_body());
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    // The warm fallback answered, well before the primary's cold start.
    assert_eq!(r.header("x-skygate-backend"), Some("warm"));
    assert_eq!(r.header("x-skygate-attempts"), Some("2"));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1_400),
        "{took:?}"
    );
    // The primary did get it (and is warming up).
    assert!(eventually(Duration::from_secs(3), || cold
        .requests()
        .iter()
        .any(
            |q| q["path"] == "/v1/chat/completions" && !q.to_string().contains("x-skygate-prewarm")
        )));
    let log = gw.access_log(1);
    let line = log.last().unwrap();
    assert_eq!(line["tries"][0]["backend"], "cold", "{line}");
    assert_eq!(line["tries"][0]["outcome"], "hedged", "{line}");

    // Without a hedge, or with no attempt left for one (a hedge is an
    // attempt), the request waits out the primary's cold start.
    for route in [
        "",
        ", hedge: { after: 200ms }, retries: { max_attempts: 1 }",
    ] {
        let (_cold, warm, gw) = primary_and_fallback(route);
        let t = std::time::Instant::now();
        let r = gw.post("/v1/chat/completions", &chat_body());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-skygate-backend"), Some("cold"), "{route}");
        assert_eq!(r.header("x-skygate-attempts"), Some("1"), "{route}");
        assert!(
            t.elapsed() >= Duration::from_millis(1_400),
            "{:?}",
            t.elapsed()
        );
        let asked = warm
            .requests()
            .iter()
            .filter(|q| {
                q["path"] == "/v1/chat/completions" && !q.to_string().contains("x-skygate-prewarm")
            })
            .count();
        assert_eq!(asked, 0, "{route}: the fallback was asked");
    }
}

/// One backend that answers every request 429 with `Retry-After: 1`.
fn throttled(route: &str) -> (Sim, Gateway) {
    let sim = Sim::start("s", &[]);
    sim.set(json!({"throttle_rate": 1.0, "retry_after_s": 1}));
    let gw = Gateway::start(&format!(
        "{auth}backends:\n  s: {{ kind: openai, url: \"{}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ], retries: {{ max_attempts: 3, on: [429] }}{route} }}\n",
        sim.url,
        auth = auth_section()
    ));
    (sim, gw)
}

#[test]
fn the_hold_queue_waits_for_a_scaling_backend_within_its_deadline_and_bound() {
    // Without a hold: the 429 goes to the client at once.
    let (_sim, gw) = throttled("");
    let t = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat_body());
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // With one: held until the backend's Retry-After, then served.
    let (sim, gw) = throttled(", hold: { timeout: 5s, max_queued: 1 }");
    let gw = std::sync::Arc::new(gw);
    let g = gw.clone();
    let first = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        (g.post("/v1/chat/completions", &chat_body()), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(400));
    // The queue holds one: a second request meanwhile is refused at once.
    let t = std::time::Instant::now();
    let second = gw.post("/v1/chat/completions", &chat_body());
    assert_eq!(second.status, 503, "{}", second.text());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    sim.set(json!({"throttle_rate": 0.0}));
    let (r, took) = first.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-attempts"), Some("2"));
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // A request that finds the backend already set aside is held from its
    // first pick, and served once it is back.
    let (sim, gw) = throttled(", hold: { timeout: 5s, max_queued: 5 }");
    let gw = std::sync::Arc::new(gw);
    let g = gw.clone();
    let first = std::thread::spawn(move || g.post("/v1/chat/completions", &chat_body()));
    std::thread::sleep(Duration::from_millis(300));
    let g = gw.clone();
    let second = std::thread::spawn(move || g.post("/v1/chat/completions", &chat_body()));
    std::thread::sleep(Duration::from_millis(300));
    sim.set(json!({"throttle_rate": 0.0}));
    for r in [first.join().unwrap(), second.join().unwrap()] {
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // The deadline holds: a backend back only after it fails the request
    // at the deadline's edge, not later.
    let (_sim, gw) = throttled(", hold: { timeout: 1500ms }");
    let t = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat_body());
    assert_eq!(r.status, 429, "{}", r.text());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1_500),
        "{took:?}"
    );
    assert_eq!(r.header("x-skygate-attempts"), Some("2"));
}

#[test]
fn a_reload_that_turns_prewarm_on_warms_the_backend_at_once() {
    let sim = platform("fn", 100, 60_000);
    let body = |prewarm: &str| {
        format!(
            "{auth}backends:\n  s: {{ kind: openai, url: \"{}/v1\", prewarm: {prewarm} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
            sim.url,
            auth = auth_section()
        )
    };
    let gw = Gateway::start(&body("{ mode: off, idle_timeout: 1m }"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ping_count(&sim), 0);
    gw.rewrite_config(&body(
        "{ mode: fixed, idle_timeout: 1m, interval: 50s, concurrency: 2 }",
    ));
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(eventually(Duration::from_secs(5), || {
        gw.backend_status("s")["warm"]["warm_instances"] == 2
    }));
    let warm = &gw.backend_status("s")["warm"];
    assert_eq!(warm["mode"], "fixed", "{warm}");
    assert_eq!(warm["last_ping_reason"], "start_up", "{warm}");
    let sent = ping_count(&sim);
    assert!(sent >= 2, "{sent}");
    // A reload that changes nothing of it sends nothing.
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ping_count(&sim), sent);
}

/// A backend whose pings can never be sent (a Cloud Run service whose ID
/// token cannot be had: no key file, a metadata server that is not there)
/// is not kept warm, and says so: the pings are counted `unsent` (not
/// failures of the backend, which is never reached), the rounds of them in
/// a row in its status, and the third such round logs a warning naming
/// why, once.
#[test]
fn pings_that_cannot_be_sent_are_counted_and_said() {
    let run = Sim::start("run", &["--platform", "gcp-cloud-run"]);
    let nowhere = free_addr().to_string();
    let g = Gateway::start_with_env(
        &format!(
            "{auth}backends:\n  run: {{ kind: gcp_cloud_run, endpoint: \"{}/v1\", prewarm: {{ mode: fixed, idle_timeout: 3s, interval: 1s, concurrency: 2, hold: 10ms }} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: run }} ] }}\n",
            run.url,
            auth = auth_section()
        ),
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", ""),
            ("GCE_METADATA_HOST", &nowhere),
        ],
    );
    const SAID: &str = "prewarm pings in a row could not be sent";
    let rounds = || {
        g.backend_status("run")["warm"]["pings"]["unsent_rounds"]
            .as_u64()
            .unwrap_or(0)
    };
    // Rounds back off after each that fell short: about 0, 2, 6 and 14 s.
    assert!(
        eventually(Duration::from_secs(12), || rounds() >= 3),
        "{}",
        g.backend_status("run")
    );
    assert!(
        eventually(Duration::from_secs(2), || g.proc.stderr().contains(SAID)),
        "{}",
        g.proc.stderr()
    );
    let stderr = g.proc.stderr();
    let line = stderr.lines().find(|l| l.contains(SAID)).unwrap();
    assert!(
        line.contains("backend `run`: 3 rounds of prewarm pings")
            && line.contains("no Google ID token")
            && line.contains("not being kept warm"),
        "{line}"
    );
    // Two pings a round, and the first two rounds said nothing.
    let pings = &g.backend_status("run")["warm"]["pings"];
    assert!(pings["unsent"].as_u64().unwrap() >= 6, "{pings}");
    assert_eq!((&pings["sent"], &pings["failed"]), (&json!(0), &json!(0)));
    assert!(
        g.metric("skygate_prewarm_pings_total{backend=\"run\",result=\"unsent\"}")
            .unwrap_or(0.0)
            >= 6.0
    );
    assert_eq!(
        g.metric("skygate_prewarm_pings_total{backend=\"run\",result=\"failed\"}"),
        None
    );
    // A fourth round says nothing more.
    assert!(
        eventually(Duration::from_secs(12), || rounds() >= 4),
        "{}",
        g.backend_status("run")
    );
    assert_eq!(
        g.proc.stderr().matches(SAID).count(),
        1,
        "said once while it goes on: {}",
        g.proc.stderr()
    );
    // The service itself was never reached.
    assert!(run
        .requests()
        .iter()
        .all(|r| !r["path"].as_str().unwrap_or("").starts_with("/v1")));
}
