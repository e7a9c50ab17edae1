//! Rate limits and quotas, end to end: local limits exact under concurrency,
//! OpenAI-shaped 429s with honest `x-ratelimit-*` and `retry-after`, token
//! reservations settled with the backend's real usage (streamed and not),
//! and limits shared by gateway replicas through a real `redis-server` (and
//! a real three-node Redis Cluster), through Redis outages.

use crate::harness::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OTHER_KEY: &str = "sk-test-other-key";

/// Two callers (`tester`, tenant acme; `other`, tenant acme), one backend,
/// route `chat` (model `m`), and `limits`.
fn config(sim: &Sim, extra: &str) -> String {
    format!(
        "auth:\n  api_keys:\n    - {{ key: {CLIENT_KEY}, principal: tester, tenant: acme }}\n    - {{ key: {OTHER_KEY}, principal: other, tenant: acme }}\nbackends:\n  s: {{ kind: openai, url: \"{}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n{extra}",
        sim.url
    )
}

fn chat_as(addr: std::net::SocketAddr, key: &str, body: &Value) -> Resp {
    call(
        addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// Waits (up to 10 s) for the gateway's `skygate_redis_up` to read `v`.
fn redis_becomes(gw: &Gateway, v: f64) -> bool {
    eventually(Duration::from_secs(10), || {
        gw.metric("skygate_redis_up") == Some(v)
    })
}

fn hi() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

fn num(r: &Resp, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
        .parse()
        .unwrap()
}

#[test]
fn five_a_minute_then_an_openai_shaped_429_with_honest_headers() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(
        &sim,
        "limits:\n  - { name: five, match: { routes: [chat] }, requests_per_minute: 5 }\n",
    ));
    for left in (0..5).rev() {
        let r = gw.chat("m");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(num(&r, "x-ratelimit-limit-requests"), 5);
        assert_eq!(num(&r, "x-ratelimit-remaining-requests"), left);
        let reset = r.header("x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s'), "{reset}");
        // No token limit here: no token headers.
        assert!(r.header("x-ratelimit-limit-tokens").is_none());
    }
    let r = gw.chat("m");
    r.assert_error(429, "rate_limit_exceeded");
    let e = r.json();
    assert_eq!(e["error"]["type"], "requests");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`five`"),
        "{e}"
    );
    // One more passes every 12 s.
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((11..=12).contains(&after), "{after}");
    // The same to the millisecond (the OpenAI SDKs read it first); a
    // refusal the SDK may retry is not marked otherwise.
    let after_ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(after_ms > 10_000 && after_ms <= after * 1000, "{after_ms}");
    assert_eq!(r.header("x-should-retry"), None);
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 0);
    // A reload keeps what each caller has used.
    assert_eq!(gw.admin("POST", "/admin/reload", "").status, 200);
    gw.chat("m").assert_error(429, "rate_limit_exceeded");
    // Counted per principal: another key still passes.
    assert_eq!(chat_as(gw.addr, OTHER_KEY, &hi()).status, 200);
    // The refused request never reached the backend.
    assert_eq!(sim.stats()["requests"].as_u64(), Some(6));
    let m = gw.admin("GET", "/metrics", "").text();
    assert_eq!(
        metric(
            &m,
            "skygate_ratelimit_decisions_total{outcome=\"limited_requests\"}"
        ),
        Some(2.0)
    );
}

#[test]
fn a_local_limit_is_exact_under_concurrency() {
    let sim = Sim::start("s", &[]);
    let gw = Arc::new(Gateway::start(&config(
        &sim,
        "limits:\n  - { name: forty, per: global, requests_per_hour: 40, concurrency: 64 }\n",
    )));
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            let gw = gw.clone();
            std::thread::spawn(move || (0..12).map(|_| gw.chat("m").status).collect::<Vec<_>>())
        })
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (40, 56), "{statuses:?}");
}

#[test]
fn health_checks_never_count() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&format!(
        "{}limits:\n  - {{ name: three, per: global, requests_per_minute: 3 }}\n",
        config(&sim, "").replace(
            "url: \"",
            "health_check: { interval: 100ms, timeout: 1s }, url: \""
        )
    ));
    // Many probes go by...
    assert!(eventually(Duration::from_secs(5), || sim.stats()
        ["requests"]
        .as_u64()
        .unwrap_or(0)
        >= 10));
    // ...and the whole limit is still there.
    for left in (0..3).rev() {
        let r = gw.chat("m");
        assert_eq!(r.status, 200);
        assert_eq!(num(&r, "x-ratelimit-remaining-requests"), left);
    }
    assert_eq!(gw.chat("m").status, 429);
}

#[test]
fn tokens_are_reserved_then_settled_with_the_real_usage() {
    // The sim answers 16 completion tokens; its prompt tokens are the
    // body's bytes ÷ 4. A day's limit refills too slowly to blur the count.
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(
        &sim,
        "limits:\n  - { name: tenant-daily, per: tenant, tokens_per_day: 100000 }\n",
    ));
    let body = json!({"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "tell me something"}]});
    let len = body.to_string().len() as u64;
    let reserved = len.div_ceil(4) + 1000;
    let r = gw.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(num(&r, "x-ratelimit-limit-tokens"), 100_000);
    assert_eq!(num(&r, "x-ratelimit-remaining-tokens"), 100_000 - reserved);
    let usage = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(usage, len / 4 + 16);
    // Settled: the next caller of the tenant sees only the real usage gone.
    let close = |got: u64, want: u64| got.abs_diff(want) <= 2;
    let settled = |r: &Resp, reserved_now: u64, used: u64| {
        let left = num(r, "x-ratelimit-remaining-tokens");
        assert!(
            close(left, 100_000 - used - reserved_now),
            "{left} vs {}",
            100_000 - used - reserved_now
        );
    };
    let r2 = chat_as(gw.addr, OTHER_KEY, &body);
    settled(&r2, reserved, usage);
    let used = usage + r2.json()["usage"]["total_tokens"].as_u64().unwrap();

    // Streamed, without asking for usage: the gateway asks the backend for
    // it, settles with it, and leaves the usage chunk out of the stream.
    let mut s = body.clone();
    s["stream"] = json!(true);
    let r3 = gw.post("/v1/chat/completions", &s);
    assert_eq!(r3.status, 200);
    let events = sse_data(&r3.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "the client did not ask for usage: {events:?}"
    );
    assert_eq!(
        events.len(),
        1 + 16 + 2,
        "the role chunk, 16 tokens, the finish chunk, [DONE]: {events:?}"
    );
    // The backend was asked for usage: the body it got is longer by
    // `"stream_options":{"include_usage":true}`.
    let sent = sim.requests().last().unwrap()["body_bytes"]
        .as_u64()
        .unwrap();
    let stream_len = s.to_string().len() as u64;
    assert_eq!(
        sent,
        stream_len + r#","stream_options":{"include_usage":true}"#.len() as u64
    );
    let r4 = chat_as(gw.addr, OTHER_KEY, &body);
    let left = num(&r4, "x-ratelimit-remaining-tokens");
    let stream_used = sent / 4 + 16;
    assert!(
        close(left, 100_000 - reserved - used - stream_used),
        "{left}"
    );

    // A `stream_options` that is not an object would keep the usage away:
    // refused, as OpenAI does.
    for bad in [json!(5), json!("x"), json!([])] {
        let mut b = s.clone();
        b["stream_options"] = bad;
        gw.post("/v1/chat/completions", &b)
            .assert_error(400, "invalid_request");
    }
    // `null` is "not set".
    let mut b = s.clone();
    b["stream_options"] = Value::Null;
    assert_eq!(gw.post("/v1/chat/completions", &b).status, 200);

    // Streamed, asking for usage: the client gets its usage chunk.
    s["stream_options"] = json!({"include_usage": true});
    let r5 = gw.post("/v1/chat/completions", &s);
    let events = sse_data(&r5.body);
    assert!(
        events.iter().any(|e| e.contains("\"usage\":{")),
        "{events:?}"
    );
}

#[test]
fn a_token_limit_refuses_what_it_cannot_cover() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(
        &sim,
        "limits:\n  - { name: small, per: principal, tokens_per_day: 2000 }\n",
    ));
    let big =
        json!({"model": "m", "max_tokens": 1500, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.post("/v1/chat/completions", &big).status, 200);
    // About 1950 were reserved and ~35 used: 1500 more fit now...
    assert_eq!(gw.post("/v1/chat/completions", &big).status, 200);
    // ...the settle of each brought back what it did not use; a request
    // for more than is left is refused as OpenAI does, type `tokens`.
    let huge =
        json!({"model": "m", "max_tokens": 1990, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", &huge);
    r.assert_error(429, "rate_limit_exceeded");
    assert_eq!(r.json()["error"]["type"], "tokens");
    assert!(r.header("retry-after").is_some());
    assert!(num(&r, "x-ratelimit-remaining-tokens") < 1990);
    // Absurd asks are charged as the whole limit, never wrap to small ones.
    for absurd in [
        json!({"model": "m", "max_tokens": u64::MAX, "messages": []}),
        json!({"model": "m", "max_tokens": 10, "n": 4_000_000_000u64, "messages": []}),
        json!({"model": "m", "max_completion_tokens": 1e300, "max_tokens": 1990, "messages": []}),
    ] {
        let r = gw.post("/v1/chat/completions", &absurd);
        r.assert_error(429, "rate_limit_exceeded");
        assert_eq!(r.json()["error"]["type"], "tokens", "{absurd}");
    }
}

/// Three gateways on one Redis, each sent as much as it takes: together
/// they admit the limit, not three times it.
#[test]
fn three_replicas_share_one_limit_through_redis() {
    let redis = RedisServer::start();
    let sim = Sim::start("s", &["--concurrency", "256"]);
    let limit = 100;
    let cfg = config(
        &sim,
        &format!(
            "state: {{ redis: \"{}\", replicas: 3 }}\nlimits:\n  - {{ name: shared, per: principal, requests_per_hour: {limit} }}\n",
            redis.url
        ),
    );
    let gws: Vec<Arc<Gateway>> = (0..3).map(|_| Arc::new(Gateway::start(&cfg))).collect();
    for g in &gws {
        assert!(redis_becomes(g, 1.0), "redis never up");
    }
    let statuses: Vec<u16> = gws
        .iter()
        .flat_map(|g| {
            (0..4).map(move |_| {
                let g = g.clone();
                std::thread::spawn(move || (0..30).map(|_| g.chat("m").status).collect::<Vec<_>>())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        ok as f64 <= limit as f64 * 1.02 && ok >= limit - 2,
        "{ok} admitted of {} with a shared limit of {limit}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    // A stray write to a counter's key (another type, an absurd value)
    // neither breaks the limit nor locks the caller out: the key is
    // counted from full and rewritten, with a TTL.
    for (i, stray) in [
        &[
            "HSET",
            "skygate:rl:{shared:requests_per_hour:other}",
            "a",
            "b",
        ][..],
        &[
            "SET",
            "skygate:rl:{shared:requests_per_hour:other}",
            "99999999999999999999",
        ][..],
    ]
    .into_iter()
    .enumerate()
    {
        redis.cli(&["DEL", "skygate:rl:{shared:requests_per_hour:other}"]);
        redis.cli(stray);
        let r = chat_as(gws[0].addr, OTHER_KEY, &hi());
        assert_eq!(r.status, 200, "stray {i}: {}", r.text());
        assert_eq!(num(&r, "x-ratelimit-remaining-requests"), limit as u64 - 1);
        let ttl: i64 = redis
            .cli(&["PTTL", "skygate:rl:{shared:requests_per_hour:other}"])
            .trim()
            .parse()
            .unwrap();
        assert!(ttl > 0, "stray {i}: {ttl}");
    }
    // The counter is one Redis key, namespaced, hash-tagged, with a TTL.
    let keys = redis.cli(&["KEYS", "skygate:rl:*"]);
    assert!(
        keys.contains("skygate:rl:{shared:requests_per_hour:tester}"),
        "{keys}"
    );
    let ttl: i64 = redis
        .cli(&["PTTL", "skygate:rl:{shared:requests_per_hour:tester}"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000 + 1000, "{ttl}");
}

/// Redis killed under load: a `fail_open` limit goes on locally at
/// limit ÷ replicas, a `fail_closed` one answers 503; no request hangs.
/// Redis back: sharing resumes.
#[test]
fn redis_outage_follows_each_limits_policy_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let sim = Sim::start("s", &["--concurrency", "256"]);
    let cfg = config(
        &sim,
        &format!(
            "state: {{ redis: \"{}\", replicas: 2, timeout: 200ms }}\nlimits:\n  - {{ name: open, match: {{ principals: [tester] }}, requests_per_hour: 100000, on_redis_failure: fail_open }}\n  - {{ name: closed, match: {{ principals: [other] }}, requests_per_hour: 100000, on_redis_failure: fail_closed }}\n",
            redis.url
        ),
    );
    let gw = Arc::new(Gateway::start(&cfg));
    assert!(redis_becomes(&gw, 1.0));
    // Load from both callers while Redis dies.
    let stop = Arc::new(AtomicBool::new(false));
    let load_of = |key: &'static str| {
        let gw = gw.clone();
        load(2, stop.clone(), move || {
            let t = Instant::now();
            let s = chat_as(gw.addr, key, &hi()).status;
            (s, t.elapsed())
        })
    };
    let (open, closed) = (load_of(CLIENT_KEY), load_of(OTHER_KEY));
    std::thread::sleep(Duration::from_millis(300));
    redis.kill();
    assert!(redis_becomes(&gw, 0.0), "redis down not noticed");
    std::thread::sleep(Duration::from_millis(500));
    // While down: fail_open serves, fail_closed refuses with a 503.
    assert_eq!(chat_as(gw.addr, CLIENT_KEY, &hi()).status, 200);
    let r = chat_as(gw.addr, OTHER_KEY, &hi());
    r.assert_error(503, "rate_limit_unavailable");
    assert!(r.header("retry-after").is_some());
    stop.store(true, Ordering::Release);
    let (open, closed) = (open.join().unwrap(), closed.join().unwrap());
    for (s, took) in open.iter().chain(&closed) {
        assert!(
            *took < Duration::from_secs(2),
            "a request hung for {took:?} (status {s})"
        );
    }
    assert!(
        open.iter().all(|(s, _)| *s == 200),
        "fail_open never refuses under its share"
    );
    assert!(closed.iter().any(|(s, _)| *s == 503));
    let m = gw.admin("GET", "/metrics", "").text();
    assert!(
        metric(
            &m,
            "skygate_ratelimit_decisions_total{outcome=\"fail_open\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &m,
            "skygate_ratelimit_decisions_total{outcome=\"fail_closed\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(metric(&m, "skygate_redis_down_total").unwrap() >= 1.0);
    assert!(
        gw.proc.stderr().contains("redis went away"),
        "{}",
        gw.proc.stderr()
    );

    // Back: the connection is remade, counting goes to Redis again.
    redis.restart();
    assert!(redis_becomes(&gw, 1.0), "redis back not noticed");
    assert_eq!(chat_as(gw.addr, OTHER_KEY, &hi()).status, 200);
    let r = chat_as(gw.addr, CLIENT_KEY, &hi());
    assert_eq!(r.status, 200);
    // A fresh Redis: its count started again from the requests since.
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 99_999);
    assert!(gw.proc.stderr().contains("redis is up"));
}

/// A local share while Redis is down is `limit ÷ replicas`.
#[test]
fn fail_open_limits_locally_at_a_replicas_share() {
    let mut redis = RedisServer::start();
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(
        &sim,
        &format!(
            "state: {{ redis: \"{}\", replicas: 4 }}\nlimits:\n  - {{ name: twenty, requests_per_hour: 20 }}\n",
            redis.url
        ),
    ));
    assert!(redis_becomes(&gw, 1.0));
    redis.kill();
    assert!(redis_becomes(&gw, 0.0));
    let ok = (0..10).filter(|_| gw.chat("m").status == 200).count();
    assert_eq!(ok, 5, "20 ÷ 4 replicas");
    // A share that does not divide: 5 an hour on 3 replicas is a burst of
    // 2 on each (rounded up, refilled at 5 ÷ 3 an hour), not 1.
    let gw = Gateway::start(&config(
        &sim,
        &format!(
            "state: {{ redis: \"{}\", replicas: 3 }}\nlimits:\n  - {{ name: five, requests_per_hour: 5 }}\n",
            redis.url
        ),
    ));
    assert!(redis_becomes(&gw, 0.0));
    let ok = (0..10).filter(|_| gw.chat("m").status == 200).count();
    assert_eq!(ok, 2, "5 ÷ 3 replicas, rounded up");
}

/// The same limit on a three-node Redis Cluster, shared by two gateways.
#[test]
fn limits_run_on_a_redis_cluster() {
    let nodes = redis_cluster();
    let sim = Sim::start("s", &[]);
    let seeds: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url)).collect();
    let cfg = config(
        &sim,
        &format!(
            "state: {{ redis_cluster: [{}] }}\nlimits:\n  - {{ name: clustered, per: principal, requests_per_hour: 30, tokens_per_day: 1000000, concurrency: 8 }}\n",
            seeds.join(", ")
        ),
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    for g in [&a, &b] {
        assert!(redis_becomes(g, 1.0), "{}", g.proc.stderr());
    }
    let mut ok = 0;
    for i in 0..40 {
        let g = if i % 2 == 0 { &a } else { &b };
        let r = g.chat("m");
        assert!(r.status == 200 || r.status == 429, "{}", r.text());
        ok += usize::from(r.status == 200);
    }
    assert_eq!(ok, 30);
    // Both principals' keys live where their hash tag puts them.
    let r = chat_as(a.addr, OTHER_KEY, &hi());
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 29);
}

/// `skygate demo --redis URL`: two demo processes on one Redis share the
/// limited key's 5 requests a minute.
#[test]
fn demo_processes_share_the_limited_key_through_redis() {
    let redis = RedisServer::start();
    let demo = |redis: &str| {
        let d = Demo::start(&["--redis", redis]);
        assert!(
            eventually(Duration::from_secs(10), || d.metric("skygate_redis_up")
                == Some(1.0)),
            "demo not up on redis: {}",
            d.proc.stderr()
        );
        let addr = d.addr;
        (addr, d)
    };
    let (a, _pa) = demo(&redis.url);
    let (b, _pb) = demo(&redis.url);
    let ask = |addr| {
        chat_as(
            addr,
            "sk-skygate-demo-limited",
            &json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    for (i, addr) in [a, b, a, b, a].into_iter().enumerate() {
        let r = ask(addr);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 4 - i as u64);
    }
    ask(b).assert_error(429, "rate_limit_exceeded");
    ask(a).assert_error(429, "rate_limit_exceeded");
    // A bad URL is a config error, said before anything starts.
    let out = std::process::Command::new(bin())
        .args(["demo", "--redis", "localhost:6379"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("is not a Redis URL"),
        "{}",
        output_text(&out)
    );
}

/// A request that ends while Redis does not answer cannot free its
/// in-flight slot then; the release waits and goes when Redis is back, so
/// the caller is not locked out for the slot's 15-minute lease.
#[test]
fn slots_held_through_a_redis_stall_are_freed_when_it_is_back() {
    let redis = RedisServer::start();
    let sim = Sim::start("s", &["--token-delay-ms", "40"]);
    let gw = Arc::new(Gateway::start(&config(
        &sim,
        &format!(
            "state: {{ redis: \"{}\" }}\nlimits:\n  - {{ name: one-at-a-time, concurrency: 1 }}\n",
            redis.url
        ),
    )));
    assert!(redis_becomes(&gw, 1.0));
    let streaming = {
        let gw = gw.clone();
        std::thread::spawn(move || {
            let mut s = hi();
            s["stream"] = json!(true);
            gw.post("/v1/chat/completions", &s)
        })
    };
    // The slot is taken: a second request waits its turn.
    std::thread::sleep(Duration::from_millis(200));
    let r = gw.chat("m");
    r.assert_error(429, "rate_limit_exceeded");
    assert!(r.text().contains("concurrency limit"), "{}", r.text());
    // Redis freezes while the stream ends: its slot cannot be freed now.
    redis.pause();
    assert_eq!(streaming.join().unwrap().status, 200);
    assert!(redis_becomes(&gw, 0.0), "a frozen redis is not noticed");
    // Frozen, its port still accepts: it is not taken for up again (one
    // "went away", not a flapping series).
    std::thread::sleep(Duration::from_millis(2500));
    let downs = |gw: &Gateway| gw.metric("skygate_redis_down_total").unwrap();
    assert_eq!(downs(&gw), 1.0, "{}", gw.proc.stderr());
    assert_eq!(gw.proc.stderr().matches("redis went away").count(), 1);
    redis.resume();
    assert!(redis_becomes(&gw, 1.0));
    // The queued release went out on reconnect.
    assert!(
        eventually(Duration::from_secs(3), || gw.chat("m").status == 200),
        "the slot stayed taken"
    );
    assert!(eventually(Duration::from_secs(3), || redis
        .cli(&["ZCARD", "skygate:rl:{one-at-a-time:concurrency:tester}"])
        .trim()
        == "0"));
}

const THIRD_KEY: &str = "sk-test-third-key";

/// Partitions and matches through the binary: a per-model counter, a
/// per-address counter, and a group's shared counter, each apart.
#[test]
fn partitions_and_matches_keep_counters_apart() {
    let sim = Sim::start("s", &[]);
    let cfg = config(
        &sim,
        "limits:
  - { name: per-model, match: { principals: [other] }, per: model, requests_per_hour: 1 }
  - { name: by-address, match: { principals: [tester] }, per: client_ip, requests_per_hour: 2 }
  - { name: research, match: { groups: [research] }, per: global, requests_per_hour: 1 }
",
    )
    .replace("models: [m]", "models: [m, n]")
    .replace(
        "principal: other, tenant: acme }",
        &format!("principal: other, tenant: acme }}\n    - {{ key: {THIRD_KEY}, principal: third, groups: [research] }}"),
    );
    let gw = Gateway::start(&cfg);
    let model = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]});
    // One per model for `other`.
    assert_eq!(chat_as(gw.addr, OTHER_KEY, &model("m")).status, 200);
    chat_as(gw.addr, OTHER_KEY, &model("m")).assert_error(429, "rate_limit_exceeded");
    assert_eq!(chat_as(gw.addr, OTHER_KEY, &model("n")).status, 200);
    chat_as(gw.addr, OTHER_KEY, &model("n")).assert_error(429, "rate_limit_exceeded");
    // Two from this address for `tester`, whatever the model.
    assert_eq!(chat_as(gw.addr, CLIENT_KEY, &model("m")).status, 200);
    assert_eq!(chat_as(gw.addr, CLIENT_KEY, &model("n")).status, 200);
    let r = chat_as(gw.addr, CLIENT_KEY, &model("m"));
    r.assert_error(429, "rate_limit_exceeded");
    assert!(r.text().contains("`by-address`"), "{}", r.text());
    // The research group shares one.
    assert_eq!(chat_as(gw.addr, THIRD_KEY, &model("m")).status, 200);
    let r = chat_as(gw.addr, THIRD_KEY, &model("n"));
    r.assert_error(429, "rate_limit_exceeded");
    assert!(r.text().contains("`research`"), "{}", r.text());
}

/// A local in-flight limit: a second request waits its turn; a client that
/// vanishes mid-stream frees its slot.
#[test]
fn a_local_concurrency_limit_frees_slots_however_requests_end() {
    use std::io::{Read, Write};
    let sim = Sim::start("s", &["--token-delay-ms", "50"]);
    let gw = Arc::new(Gateway::start(&config(
        &sim,
        "limits:\n  - { name: one-at-a-time, concurrency: 1 }\n",
    )));
    let mut s = hi();
    s["stream"] = json!(true);
    let streaming = {
        let (gw, s) = (gw.clone(), s.clone());
        std::thread::spawn(move || gw.post("/v1/chat/completions", &s))
    };
    std::thread::sleep(Duration::from_millis(200));
    let r = gw.chat("m");
    r.assert_error(429, "rate_limit_exceeded");
    assert!(r.text().contains("concurrency limit"), "{}", r.text());
    assert_eq!(streaming.join().unwrap().status, 200);
    assert_eq!(gw.chat("m").status, 200);
    // A client that reads the first bytes of a stream and goes away.
    let body = s.to_string();
    let mut c = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 64];
    assert!(c.read(&mut first).unwrap() > 0);
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || gw.chat("m").status == 200),
        "the vanished client's slot stayed taken"
    );
}

/// Redis down when the gateway starts: it gets ready (after one try), and
/// each limit follows its policy at once.
#[test]
fn redis_down_at_start_each_limit_follows_its_policy() {
    let sim = Sim::start("s", &[]);
    let dead = free_addr();
    let gw = Gateway::start(&config(
        &sim,
        &format!(
            "state: {{ redis: \"redis://{dead}\" }}\nlimits:\n  - {{ name: open, match: {{ principals: [tester] }}, requests_per_hour: 100 }}\n  - {{ name: closed, match: {{ principals: [other] }}, requests_per_hour: 100, on_redis_failure: fail_closed }}\n"
        ),
    ));
    assert_eq!(gw.metric("skygate_redis_up"), Some(0.0));
    assert_eq!(gw.chat("m").status, 200);
    let r = chat_as(gw.addr, OTHER_KEY, &hi());
    r.assert_error(503, "rate_limit_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        gw.proc.stderr().contains("is not reachable"),
        "{}",
        gw.proc.stderr()
    );
}

/// A stream the backend cuts half-way is charged what was sent: the input
/// estimate and one token per event.
#[test]
fn a_cut_stream_settles_what_was_produced() {
    let sim = Sim::start("s", &["--cut-rate", "1.0"]);
    let gw = Gateway::start(&config(
        &sim,
        "limits:\n  - { name: daily, per: principal, tokens_per_day: 100000 }\n",
    ));
    let mut s = json!({"model": "m", "stream": true, "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", &s);
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    let sent = events
        .iter()
        .filter(|e| e.contains("chat.completion.chunk"))
        .count() as u64;
    assert!(
        sent > 0 && r.text().contains("event: error"),
        "{}",
        r.text()
    );
    let input = (s.to_string().len() as u64).div_ceil(4);
    s["max_tokens"] = json!(0);
    s["stream"] = json!(false);
    let next = gw.post("/v1/chat/completions", &s);
    let reserved = (s.to_string().len() as u64).div_ceil(4);
    let left = num(&next, "x-ratelimit-remaining-tokens");
    let want = 100_000 - input - sent - reserved;
    assert!(left.abs_diff(want) <= 2, "{left} vs {want}");
}
