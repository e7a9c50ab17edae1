//! Response caching, end to end: miss then hit (with `age`), canonical keys,
//! `no-cache` / `no-store`, errors and partial streams never stored,
//! tenants kept apart, one backend call for a hundred identical misses,
//! streams cached and replayed both ways, hits shared by two replicas
//! through a real `redis-server` (and Redis killed mid-test), purges, hits
//! against request limits, and the demo.
//!
//! The simulator gives every answer a fresh random `id`, so an answer with
//! the `id` of an earlier one came from the cache.

use crate::harness::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const ACME2: &str = "sk-test-acme-two";
const BETA: &str = "sk-test-beta-key";

/// Three callers: `tester` and `acme2` (tenant acme), `beta` (tenant
/// beta); route `chat` (model `m`) caching with `cache`; `extra` after.
fn config(sim: &Sim, cache: &str, extra: &str) -> String {
    format!(
        "auth:\n  api_keys:\n    - {{ key: {CLIENT_KEY}, principal: tester, tenant: acme }}\n    - {{ key: {ACME2}, principal: acme2, tenant: acme }}\n    - {{ key: {BETA}, principal: beta, tenant: beta }}\nbackends:\n  s: {{ kind: openai, url: \"{}/v1\" }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n    targets: [ {{ backend: s }} ]\n    cache: {cache}\n{extra}",
        sim.url
    )
}

fn ask(addr: std::net::SocketAddr, key: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    let auth = format!("Bearer {key}");
    let mut h = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    h.extend_from_slice(headers);
    call(addr, "POST", "/v1/chat/completions", &h, body.as_bytes())
}

fn hello(text: &str) -> String {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]}).to_string()
}

fn cache_of(r: &Resp) -> &str {
    r.header("x-skygate-cache").unwrap_or("(none)")
}

fn id(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn sim_requests(sim: &Sim) -> u64 {
    sim.stats()["requests"].as_u64().unwrap()
}

/// The content and `[DONE]` of an SSE answer (every event is JSON but the last).
fn stream_content(r: &Resp) -> (String, Vec<Value>) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        r.headers
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("each event is JSON"))
        .collect();
    let mut content = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        for choice in c["choices"].as_array().unwrap() {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    (content, chunks)
}

#[test]
fn miss_then_hit_canonical_keys_and_cache_control() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(&sim, "{ ttl: 1m }", ""));
    let body = hello("what is a cold start?");
    let first = ask(gw.addr, CLIENT_KEY, &body, &[]);
    assert_eq!(cache_of(&first), "miss");
    let original = id(&first);
    let hit = ask(gw.addr, CLIENT_KEY, &body, &[]);
    assert_eq!(cache_of(&hit), "hit");
    assert_eq!(id(&hit), original);
    assert_eq!(hit.header("age"), Some("0"));
    assert_eq!(hit.header("x-skygate-attempts"), Some("0"));
    assert_eq!(hit.body, first.body, "the stored answer, byte for byte");
    assert_eq!(sim_requests(&sim), 1);
    // Key order, whitespace, escapes and fields that do not change the
    // answer (`user`, `metadata`, `stream_options`) still hit.
    let respelled = r#"{ "messages" : [ { "content": "what is a cold start\u003f", "role": "user" } ],
        "user": "someone-else", "metadata": {"trace": "1"}, "model": "m" }"#;
    let r = ask(gw.addr, CLIENT_KEY, respelled, &[]);
    assert_eq!((cache_of(&r), id(&r)), ("hit", original.clone()));
    // A different question misses.
    let other = ask(gw.addr, CLIENT_KEY, &hello("and a warm one?"), &[]);
    assert_eq!(cache_of(&other), "miss");
    assert_eq!(sim_requests(&sim), 2);

    // no-cache: asks the backend and refreshes the entry.
    let fresh = ask(gw.addr, CLIENT_KEY, &body, &[("cache-control", "no-cache")]);
    assert_eq!(cache_of(&fresh), "bypass");
    let refreshed = id(&fresh);
    assert_ne!(refreshed, original);
    let r = ask(gw.addr, CLIENT_KEY, &body, &[]);
    assert_eq!((cache_of(&r), id(&r)), ("hit", refreshed.clone()));
    // no-store: asks the backend and keeps nothing.
    let unstored = ask(gw.addr, CLIENT_KEY, &body, &[("cache-control", "no-store")]);
    assert_eq!(cache_of(&unstored), "bypass");
    assert_ne!(id(&unstored), refreshed);
    let r = ask(gw.addr, CLIENT_KEY, &body, &[]);
    assert_eq!((cache_of(&r), id(&r)), ("hit", refreshed));
    assert_eq!(sim_requests(&sim), 4);

    // Errors are never stored.
    sim.set(json!({"error_rate": 1.0}));
    let failing = hello("this one fails first");
    let r = ask(gw.addr, CLIENT_KEY, &failing, &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    sim.set(json!({"error_rate": 0.0}));
    let r = ask(gw.addr, CLIENT_KEY, &failing, &[]);
    assert_eq!((r.status, cache_of(&r)), (200, "miss"));

    // Metrics by route, and the access log.
    // (Counted once each request is done, just after its answer.)
    let counted =
        |name: &str, v: f64| eventually(Duration::from_secs(5), || gw.metric(name) == Some(v));
    assert!(counted(
        "skygate_cache_lookups_total{result=\"hit\",route=\"chat\"}",
        4.0
    ));
    assert!(counted(
        "skygate_cache_lookups_total{result=\"miss\",route=\"chat\"}",
        4.0
    ));
    assert!(counted(
        "skygate_cache_lookups_total{result=\"bypass\",route=\"chat\"}",
        2.0
    ));
    assert!(counted("skygate_cache_entries", 3.0));
    assert!(gw.metric("skygate_cache_bytes").unwrap() > 0.0);
    let log = gw.access_log(10);
    let hit_line = log
        .iter()
        .find(|l| l["cache"] == "hit")
        .expect("a hit logged");
    let total = first.json()["usage"]["total_tokens"].clone();
    assert_eq!(hit_line["cached_tokens"], total, "{hit_line}");
    assert_eq!(hit_line["attempts"], 0);
    assert!(hit_line["prompt_tokens"].is_null(), "a hit used no tokens");

    // RFC 9111 request directives: max-age (an older entry is refreshed),
    // only-if-cached (504 on a miss), and HTTP/1.0's Pragma.
    let aged = hello("how old is this?");
    let first = id(&ask(gw.addr, CLIENT_KEY, &aged, &[]));
    std::thread::sleep(Duration::from_millis(1100));
    let r = ask(
        gw.addr,
        CLIENT_KEY,
        &aged,
        &[("cache-control", "max-age=60")],
    );
    assert_eq!(
        (cache_of(&r), id(&r), r.header("age")),
        ("hit", first.clone(), Some("1"))
    );
    let r = ask(
        gw.addr,
        CLIENT_KEY,
        &aged,
        &[("cache-control", "max-age=0")],
    );
    assert_eq!(cache_of(&r), "miss");
    let refreshed = id(&r);
    assert_ne!(refreshed, first);
    assert_eq!(id(&ask(gw.addr, CLIENT_KEY, &aged, &[])), refreshed);
    let r = ask(gw.addr, CLIENT_KEY, &aged, &[("pragma", "no-cache")]);
    assert_eq!(cache_of(&r), "bypass");
    let r = ask(
        gw.addr,
        CLIENT_KEY,
        &aged,
        &[("cache-control", "only-if-cached")],
    );
    assert_eq!(cache_of(&r), "hit");
    let before = sim_requests(&sim);
    let r = ask(
        gw.addr,
        CLIENT_KEY,
        &hello("never asked"),
        &[("cache-control", "only-if-cached")],
    );
    r.assert_error(504, "not_cached");
    assert_eq!(
        r.header("x-should-retry"),
        Some("false"),
        "the SDKs retry a 504 unless told that it cannot help"
    );
    assert_eq!(
        sim_requests(&sim),
        before,
        "only-if-cached never asks a backend"
    );
}

#[test]
fn ttl_and_max_entry_bytes() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(&sim, "{ ttl: 1s }", ""));
    let body = hello("short-lived");
    assert_eq!(cache_of(&ask(gw.addr, CLIENT_KEY, &body, &[])), "miss");
    assert_eq!(cache_of(&ask(gw.addr, CLIENT_KEY, &body, &[])), "hit");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(cache_of(&ask(gw.addr, CLIENT_KEY, &body, &[])), "miss");
    // An answer larger than max_entry_bytes is not stored.
    let small = Gateway::start(&config(&sim, "{ ttl: 1m, max_entry_bytes: 100 }", ""));
    for _ in 0..2 {
        assert_eq!(cache_of(&ask(small.addr, CLIENT_KEY, &body, &[])), "miss");
    }
}

#[test]
fn tenants_never_share_and_purges_pick_what_they_name() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(
        &sim,
        "{ ttl: 1m }",
        "  shared:\n    match: { path: /v1/embeddings, models: [e] }\n    targets: [ { backend: s } ]\n    cache: { ttl: 1m, scope: global }\n",
    ));
    let body = hello("tenant data");
    let a = id(&ask(gw.addr, CLIENT_KEY, &body, &[]));
    // Same tenant, another caller: shared.
    let r = ask(gw.addr, ACME2, &body, &[]);
    assert_eq!((cache_of(&r), id(&r)), ("hit", a.clone()));
    // Another tenant: its own entry.
    let r = ask(gw.addr, BETA, &body, &[]);
    assert_eq!(cache_of(&r), "miss");
    let b = id(&r);
    assert_ne!(a, b);
    assert_eq!(id(&ask(gw.addr, BETA, &body, &[])), b);
    // A `global` route shares across tenants.
    let emb = json!({"model": "e", "input": "hello"}).to_string();
    let embed = |key: &str| {
        call(
            gw.addr,
            "POST",
            "/v1/embeddings",
            &[
                ("authorization", &format!("Bearer {key}")),
                ("content-type", "application/json"),
            ],
            emb.as_bytes(),
        )
    };
    assert_eq!(cache_of(&embed(CLIENT_KEY)), "miss");
    assert_eq!(cache_of(&embed(BETA)), "hit");

    // Purge one tenant: the other keeps its entry.
    let r = gw.admin("DELETE", "/admin/cache?tenant=acme", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"]["memory"], 1, "{}", r.text());
    assert_eq!(r.json()["shared"], "local", "no state.redis: this replica");
    assert_eq!(cache_of(&ask(gw.addr, CLIENT_KEY, &body, &[])), "miss");
    assert_eq!(cache_of(&ask(gw.addr, BETA, &body, &[])), "hit");
    // Purge one route.
    let r = gw.admin("DELETE", "/admin/cache?route=shared", "");
    assert_eq!(r.json()["deleted"]["memory"], 1, "{}", r.text());
    assert_eq!(cache_of(&embed(BETA)), "miss");
    assert_eq!(cache_of(&ask(gw.addr, BETA, &body, &[])), "hit");
    // Everything.
    let r = gw.admin("DELETE", "/admin/cache", "");
    assert_eq!(r.json()["deleted"]["memory"], 3, "{}", r.text());
    assert_eq!(cache_of(&ask(gw.addr, BETA, &body, &[])), "miss");
    // Bad purges are refused, clearly.
    let r = gw.admin("DELETE", "/admin/cache?route=nope", "");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let r = gw.admin("DELETE", "/admin/cache?colour=red", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("`route` and/or `tenant`"), "{}", r.text());
    // The admin API wants its token.
    let r = gw.admin("DELETE", "/admin/cache?tenant=a&tenant=b", "");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = gw.admin("DELETE", "/admin/cache?tenant=%ZZ", "");
    assert!(r.text().contains("percent-encoded"), "{}", r.text());
    let r = call(gw.admin, "DELETE", "/admin/cache", &[], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn a_hundred_identical_misses_make_one_backend_call() {
    let sim = Sim::start("s", &["--latency-ms", "300"]);
    let gw = Gateway::start(&config(&sim, "{ ttl: 1m }", ""));
    let body = hello("everyone asks this at once");
    let addr = gw.addr;
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || ask(addr, CLIENT_KEY, &body, &[]))
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(sim_requests(&sim), 1, "one backend call for all of them");
    let ids: std::collections::HashSet<String> = answers.iter().map(id).collect();
    assert_eq!(ids.len(), 1, "every caller got the one answer");
    let misses = answers.iter().filter(|r| cache_of(r) == "miss").count();
    assert_eq!(misses, 1);
    let waits = gw.metric("skygate_cache_events_total{event=\"wait\",route=\"chat\"}");
    assert!(waits.unwrap() >= 1.0, "{waits:?}");
}

#[test]
fn a_failed_leader_lets_the_waiters_ask_themselves() {
    // The first call fails (500, not stored): those waiting on it go to
    // the backend themselves instead of failing or waiting forever.
    let sim = Sim::start("s", &["--latency-ms", "300", "--error-rate", "1"]);
    let gw = Gateway::start(&config(
        &sim,
        "{ ttl: 1m }",
        "    retries: { max_attempts: 1 }\n",
    ));
    let body = hello("the first one fails");
    let addr = gw.addr;
    let leader = {
        let body = body.clone();
        std::thread::spawn(move || ask(addr, CLIENT_KEY, &body, &[]))
    };
    std::thread::sleep(Duration::from_millis(100));
    sim.set(json!({"error_rate": 0.0}));
    let waiter = ask(addr, CLIENT_KEY, &body, &[]);
    assert_eq!(leader.join().unwrap().status, 500);
    assert_eq!((waiter.status, cache_of(&waiter)), (200, "miss"));
    assert_eq!(sim_requests(&sim), 2);
    assert_eq!(cache_of(&ask(addr, CLIENT_KEY, &body, &[])), "hit");
}

/// Replicas on one Redis coalesce identical misses too: the first to miss
/// leads for all (a marker in the answer's place), the other waits for
/// its answer in Redis. A lead that ends without an answer lets the other
/// lead or ask at once, and a dead leader's marker holds it up only for
/// the marker's short life, not `cache.wait`.
#[test]
fn identical_misses_on_two_replicas_make_one_backend_call() {
    let mut redis = RedisServer::start();
    let sim = Sim::start("s", &["--latency-ms", "400", "--token-delay-ms", "60"]);
    let extra = format!(
        "    retries: {{ max_attempts: 1 }}
  small:
    match: {{ path: /v1/chat/completions, models: [tiny] }}
    targets: [ {{ backend: s }} ]
    retries: {{ max_attempts: 1 }}
    cache: {{ ttl: 1m, max_entry_bytes: 16 }}
state: {{ redis: {}, key_prefix: lead }}
",
        redis.url
    );
    let a = Gateway::start(&config(&sim, "{ ttl: 1m }", &extra));
    let b = Gateway::start(&config(&sim, "{ ttl: 1m }", &extra));
    for g in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), || g
            .metric("skygate_redis_up")
            == Some(1.0)));
    }
    // `a` asks, and leads (its marker in Redis) before `b` asks.
    let both = |first: &str, second: &str| {
        let (addr, body) = (a.addr, first.to_string());
        let first = std::thread::spawn(move || ask(addr, CLIENT_KEY, &body, &[]));
        std::thread::sleep(Duration::from_millis(150));
        let started = std::time::Instant::now();
        let second = ask(b.addr, CLIENT_KEY, second, &[]);
        (first.join().unwrap(), second, started.elapsed())
    };
    let metric = |g: &Gateway, event: &str, route: &str| {
        g.metric(&format!(
            "skygate_cache_events_total{{event=\"{event}\",route=\"{route}\"}}"
        ))
    };
    let keys = || -> std::collections::BTreeSet<String> {
        redis
            .cli(&["--raw", "KEYS", "lead:cache:chat:*"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };

    let q = hello("asked on two replicas at once");
    let (first, second, _) = both(&q, &q);
    assert_eq!(sim_requests(&sim), 1, "one backend call for both replicas");
    assert_eq!((cache_of(&first), cache_of(&second)), ("miss", "hit"));
    assert_eq!(id(&first), id(&second));
    assert_eq!(metric(&b, "wait", "chat"), Some(1.0));
    assert_eq!(metric(&b, "redis_hit", "chat"), Some(1.0));
    let stored = keys();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let key = stored.iter().next().cloned().unwrap_or_default();
    assert!(
        redis.cli(&["--raw", "GET", &key]).starts_with("SGC1"),
        "the answer replaced the marker"
    );

    // The leader's stream is cut halfway (nothing stored): its marker goes,
    // and the waiting replica leads in turn, well before `wait` (30 s).
    sim.set(json!({"cut_rate": 1.0}));
    let streamed = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "the leader's stream is cut"}]})
    .to_string();
    let sim2 = &sim;
    let unset = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            sim2.set(json!({"cut_rate": 0.0}));
        });
        both(&streamed, &hello("the leader's stream is cut"))
    });
    let (_, second, took) = unset;
    assert_eq!((second.status, cache_of(&second)), (200, "miss"));
    // Not waiting out the marker's 3 s life (then its own 0.4 s call).
    let not_expired = Duration::from_millis(2_800);
    assert!(took < not_expired, "waited {took:?}");
    assert_eq!(sim_requests(&sim), 3);
    assert_eq!(metric(&b, "wait", "chat"), Some(2.0));

    // The leader's answer will not be stored (larger than the route's
    // bound): it tells the waiting replica to ask at once.
    let tiny = json!({"model": "tiny", "messages": [{"role": "user", "content": "too large"}]})
        .to_string();
    let (first, second, took) = both(&tiny, &tiny);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(cache_of(&second), "miss");
    assert!(took < not_expired, "waited {took:?}");
    assert_eq!(metric(&b, "wait", "small"), Some(1.0));
    assert_eq!(sim_requests(&sim), 5);

    // A leader that died left its marker: `only-if-cached` is a 504 (the
    // marker is no answer, nor a bad value), and a miss waits out what is
    // left of the marker's life, then leads.
    let dead = hello("its leader died");
    let before = keys();
    assert_eq!(cache_of(&ask(a.addr, CLIENT_KEY, &dead, &[])), "miss");
    assert!(eventually(Duration::from_secs(5), || keys().len() == before.len() + 1));
    let key = keys()
        .difference(&before)
        .next()
        .cloned()
        .unwrap_or_default();
    redis.cli(&["SET", &key, "SGL1deadbeefdeadbeef", "PX", "2000"]);
    let r = ask(
        b.addr,
        CLIENT_KEY,
        &dead,
        &[("cache-control", "only-if-cached")],
    );
    assert_eq!(r.status, 504, "{}", r.text());
    let started = std::time::Instant::now();
    let r = ask(b.addr, CLIENT_KEY, &dead, &[]);
    assert_eq!((r.status, cache_of(&r)), (200, "miss"));
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(10)).contains(&started.elapsed()),
        "waited {:?} for a 2 s marker",
        started.elapsed()
    );
    assert_eq!(sim_requests(&sim), 7);
    assert_eq!(
        b.metric("skygate_cache_redis_failures_total{kind=\"bad_value\"}"),
        Some(0.0)
    );

    // Redis dies while `b` waits on `a`'s lead: `b` stops waiting and asks
    // the backend itself; both answer.
    let q = hello("redis dies while b waits");
    let (first, second, took) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(250));
            redis.kill();
        });
        both(&q, &q)
    });
    assert_eq!((first.status, cache_of(&first)), (200, "miss"));
    assert_eq!((second.status, cache_of(&second)), (200, "miss"));
    assert!(took < not_expired, "waited {took:?}");
    assert_eq!(sim_requests(&sim), 9);
    assert!(
        b.metric("skygate_cache_redis_failures_total{kind=\"read\"}")
            .is_some_and(|n| n >= 1.0),
        "the failed look is counted"
    );
}

#[test]
fn streams_are_stored_whole_and_replayed_both_ways() {
    let sim = Sim::start("s", &["--token-delay-ms", "2"]);
    let gw = Gateway::start(&config(&sim, "{ ttl: 1m }", ""));
    let streamed = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "stream me"}]})
    .to_string();
    let first = ask(gw.addr, CLIENT_KEY, &streamed, &[]);
    assert_eq!(cache_of(&first), "miss");
    let (content, chunks) = stream_content(&first);
    assert!(!content.is_empty());
    // The gateway asked for the usage (to store it) but the client did not.
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(Value::is_null)));
    let id0 = chunks[0]["id"].clone();
    // Replayed as a stream: same content, same id, valid SSE.
    let again = ask(gw.addr, CLIENT_KEY, &streamed, &[]);
    assert_eq!(cache_of(&again), "hit");
    let (replayed, chunks) = stream_content(&again);
    assert_eq!(replayed, content);
    assert!(chunks.iter().all(|c| c["id"] == id0));
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    // With the usage chunk, when asked.
    let with_usage =
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "stream me"}]})
        .to_string();
    let r = ask(gw.addr, CLIENT_KEY, &with_usage, &[]);
    let (_, chunks) = stream_content(&r);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 16, "{chunks:?}");
    // As JSON to a request without `stream`.
    let plain = ask(gw.addr, CLIENT_KEY, &hello("stream me"), &[]);
    assert_eq!(cache_of(&plain), "hit");
    let v = plain.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], id0);
    assert_eq!(v["choices"][0]["message"]["content"], content.as_str());
    assert_eq!(&v["usage"], usage, "the stream's usage was kept");
    assert_eq!(sim_requests(&sim), 1);

    // A non-stream answer served to a stream request as SSE.
    let json_first = ask(gw.addr, CLIENT_KEY, &hello("json first"), &[]);
    let text = json_first.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let as_stream = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "json first"}]})
    .to_string();
    let r = ask(gw.addr, CLIENT_KEY, &as_stream, &[]);
    assert_eq!(cache_of(&r), "hit");
    assert_eq!(stream_content(&r).0, text);
    assert_eq!(sim_requests(&sim), 2);

    // A stream cut half-way is never stored.
    sim.set(json!({"cut_rate": 1.0}));
    let cut = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "cut me"}]})
    .to_string();
    let r = ask(gw.addr, CLIENT_KEY, &cut, &[]);
    assert_eq!(cache_of(&r), "miss");
    sim.set(json!({"cut_rate": 0.0}));
    let r = ask(gw.addr, CLIENT_KEY, &cut, &[]);
    assert_eq!(cache_of(&r), "miss", "the cut stream was not kept");
    stream_content(&r);
    assert_eq!(cache_of(&ask(gw.addr, CLIENT_KEY, &cut, &[])), "hit");
}

#[test]
fn hits_count_against_request_limits_unless_free() {
    let sim = Sim::start("s", &[]);
    let limits =
        "limits:\n  - { name: three, match: { routes: [chat] }, requests_per_minute: 3 }\n";
    let gw = Gateway::start(&config(&sim, "{ ttl: 1m }", limits));
    let body = hello("limited");
    for _ in 0..3 {
        assert_eq!(ask(gw.addr, CLIENT_KEY, &body, &[]).status, 200);
    }
    ask(gw.addr, CLIENT_KEY, &body, &[]).assert_error(429, "rate_limit_exceeded");
    let free = Gateway::start(&config(&sim, "{ ttl: 1m, charge_hits: false }", limits));
    for _ in 0..6 {
        let r = ask(free.addr, CLIENT_KEY, &body, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A hit costs no tokens, so a token limit never refuses one: the first
    // answer takes most of 100 tokens a minute; its repeats still pass,
    // while a new question is refused.
    let tokens = "limits:\n  - { name: tpm, match: { routes: [chat] }, tokens_per_minute: 100 }\n";
    let gw = Gateway::start(&config(&sim, "{ ttl: 1m }", tokens));
    assert_eq!(cache_of(&ask(gw.addr, CLIENT_KEY, &body, &[])), "miss");
    for _ in 0..3 {
        let r = ask(gw.addr, CLIENT_KEY, &body, &[]);
        assert_eq!((r.status, cache_of(&r)), (200, "hit"), "{}", r.text());
    }
    let r = ask(gw.addr, CLIENT_KEY, &hello("a new question"), &[]);
    r.assert_error(429, "rate_limit_exceeded");
}

/// Two replicas on one Redis: a hit made by one is found by the other; a
/// value that does not decode is a miss; with Redis killed both keep
/// answering from memory.
#[test]
fn replicas_share_hits_through_redis_and_survive_it() {
    let mut redis = RedisServer::start();
    let sim = Sim::start("s", &[]);
    let state = format!("state: {{ redis: {}, key_prefix: sgtest }}\n", redis.url);
    let a = Gateway::start(&config(&sim, "{ ttl: 1m }", &state));
    let b = Gateway::start(&config(&sim, "{ ttl: 1m }", &state));
    let body = hello("shared between replicas");
    let first = ask(a.addr, CLIENT_KEY, &body, &[]);
    assert_eq!(cache_of(&first), "miss");
    let keys = |r: &RedisServer| r.cli(&["--raw", "KEYS", "sgtest:cache:*"]);
    // `redis-cli --raw` prints an empty line for no keys.
    let count = |r: &RedisServer| keys(r).lines().filter(|l| !l.is_empty()).count();
    assert!(
        eventually(Duration::from_secs(5), || keys(&redis)
            .contains("sgtest:cache:chat:acme:")),
        "the entry reaches Redis: {}",
        keys(&redis)
    );
    let r = ask(b.addr, CLIENT_KEY, &body, &[]);
    assert_eq!((cache_of(&r), id(&r)), ("hit", id(&first)));
    assert_eq!(r.body, first.body);
    assert_eq!(sim_requests(&sim), 1);
    assert_eq!(
        b.metric("skygate_cache_events_total{event=\"redis_hit\",route=\"chat\"}"),
        Some(1.0)
    );

    // A value that does not decode is a miss (and counted), never an error.
    let junk = hello("junk in redis");
    assert_eq!(cache_of(&ask(a.addr, CLIENT_KEY, &junk, &[])), "miss");
    assert!(eventually(Duration::from_secs(5), || count(&redis) == 2));
    // Overwrite the values with junk: b has only the first question in
    // memory, so it looks the second up in Redis.
    for k in keys(&redis).lines().filter(|k| !k.is_empty()) {
        redis.cli(&["SET", k, "SGC1 not really"]);
    }
    let r = ask(b.addr, CLIENT_KEY, &junk, &[]);
    assert_eq!((r.status, cache_of(&r)), (200, "miss"));
    assert_eq!(
        b.metric("skygate_cache_redis_failures_total{kind=\"bad_value\"}"),
        Some(1.0)
    );

    // b stored its own answer again (in the background).
    let junk_values = |r: &RedisServer| {
        keys(r)
            .lines()
            .filter(|k| r.cli(&["GET", k]).contains("not really"))
            .count()
    };
    assert!(eventually(Duration::from_secs(5), || junk_values(&redis) == 1));

    // A purge reaches Redis.
    let r = a.admin("DELETE", "/admin/cache?route=chat", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["deleted"]["redis"].as_u64().unwrap() >= 1,
        "{}",
        r.text()
    );
    assert!(
        eventually(Duration::from_secs(5), || keys(&redis).trim().is_empty()),
        "{}",
        keys(&redis)
    );

    // Redis killed: both replicas answer, from memory once they have it.
    redis.kill();
    let down = hello("while redis is down");
    for gw in [&a, &b] {
        let r = ask(gw.addr, CLIENT_KEY, &down, &[]);
        assert_eq!((r.status, cache_of(&r)), (200, "miss"), "{}", r.text());
        let r = ask(gw.addr, CLIENT_KEY, &down, &[]);
        assert_eq!((r.status, cache_of(&r)), (200, "hit"));
    }
    assert!(eventually(Duration::from_secs(10), || {
        a.metric("skygate_redis_up") == Some(0.0)
    }));
    let failures = a
        .metric("skygate_cache_redis_failures_total{kind=\"read\"}")
        .unwrap()
        + a.metric("skygate_cache_redis_failures_total{kind=\"write_dropped\"}")
            .unwrap();
    assert!(failures >= 1.0, "the outage is in the metrics");
    // The purge says Redis' entries could not be reached.
    let r = a.admin("DELETE", "/admin/cache", "");
    assert_eq!(r.status, 503, "{}", r.text());
    // Redis back: sharing resumes.
    redis.restart();
    assert!(eventually(Duration::from_secs(10), || {
        a.metric("skygate_redis_up") == Some(1.0) && b.metric("skygate_redis_up") == Some(1.0)
    }));
    // A replica that has just reconnected may still be settling what it
    // missed (and take a Redis value for a miss meanwhile): a new question
    // each round, until one answer stored by A is B's hit.
    let mut round = 0;
    let shared = eventually(Duration::from_secs(10), || {
        round += 1;
        let back = hello(&format!("redis is back, round {round}"));
        let first = ask(a.addr, CLIENT_KEY, &back, &[]);
        if !eventually(Duration::from_secs(5), || count(&redis) >= round) {
            return false;
        }
        let r = ask(b.addr, CLIENT_KEY, &back, &[]);
        (cache_of(&r), id(&r)) == ("hit", id(&first))
    });
    assert!(
        shared,
        "after {round} rounds, B never read A's answer from Redis"
    );
}

#[test]
fn the_demo_caches_chat_per_tenant() {
    let d = Demo::start(&[]);
    let body =
        json!({"model": "demo-chat", "messages": [{"role": "user", "content": "demo question"}]})
            .to_string();
    let r = ask(d.addr, "sk-skygate-demo", &body, &[]);
    assert_eq!(cache_of(&r), "miss");
    let first = id(&r);
    let r = ask(d.addr, "sk-skygate-demo", &body, &[]);
    assert_eq!((cache_of(&r), id(&r)), ("hit", first.clone()));
    // A demo JWT of tenant acme: its own entry.
    let token = Command::new(bin())
        .args(["demo-token", "--sub", "carol", "--tenant", "acme"])
        .output()
        .unwrap();
    assert!(token.status.success(), "{}", output_text(&token));
    let token = String::from_utf8(token.stdout).unwrap();
    let r = ask(d.addr, token.trim(), &body, &[]);
    assert_eq!((r.status, cache_of(&r)), (200, "miss"), "{}", r.text());
    assert_ne!(id(&r), first);
}

/// On a Redis Cluster: a hit shared by two replicas, and a purge that
/// reaches every primary.
#[test]
fn replicas_share_hits_on_a_redis_cluster() {
    let nodes = redis_cluster();
    let sim = Sim::start("s", &[]);
    let seeds: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url)).collect();
    let state = format!("state: {{ redis_cluster: [{}] }}\n", seeds.join(", "));
    let a = Gateway::start(&config(&sim, "{ ttl: 1m }", &state));
    let b = Gateway::start(&config(&sim, "{ ttl: 1m }", &state));
    for g in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), || g
            .metric("skygate_redis_up")
            == Some(1.0)));
    }
    let entries = || -> usize {
        nodes
            .iter()
            .map(|n| {
                n.cli(&["--raw", "KEYS", "skygate:cache:*"])
                    .lines()
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .sum()
    };
    // Enough questions that their keys land on more than one primary.
    let firsts: Vec<String> = (0..12)
        .map(|i| id(&ask(a.addr, CLIENT_KEY, &hello(&format!("q{i}")), &[])))
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || entries() == 12),
        "{}",
        entries()
    );
    let holding = nodes
        .iter()
        .filter(|n| {
            !n.cli(&["--raw", "KEYS", "skygate:cache:*"])
                .trim()
                .is_empty()
        })
        .count();
    assert!(holding >= 2, "keys spread over the primaries");
    for (i, first) in firsts.iter().enumerate() {
        let r = ask(b.addr, CLIENT_KEY, &hello(&format!("q{i}")), &[]);
        assert_eq!((cache_of(&r), &id(&r)), ("hit", first));
    }
    let r = b.admin("DELETE", "/admin/cache?tenant=acme", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"]["redis"], 12, "{}", r.text());
    assert_eq!(entries(), 0);
}

/// The leader of a stream miss vanishes mid-stream (raw socket, closed
/// after the first bytes): the identical requests waiting on it still get
/// whole answers (one of them leads in its place), the backend is asked
/// once more for all of them, and the cut stream is never what the cache
/// serves.
#[test]
fn a_leader_that_vanishes_mid_stream_hands_the_lead_on() {
    use std::io::{Read, Write};
    let sim = Sim::start("s", &["--token-delay-ms", "30"]);
    let gw = Gateway::start(&config(&sim, "{ ttl: 1m }", ""));
    let body = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "who leads now?"}]})
    .to_string();
    let mut leader = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        leader,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 64];
    assert!(
        leader.read(&mut first).unwrap() > 0,
        "the leader's stream began"
    );
    let addr = gw.addr;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || ask(addr, CLIENT_KEY, &body, &[]))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    drop(leader);
    let answers: Vec<Resp> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    let whole = stream_content(&answers[0]).0;
    assert!(!whole.is_empty());
    for r in &answers {
        assert_eq!(
            stream_content(r).0,
            whole,
            "every waiter got the whole answer"
        );
    }
    let calls = sim_requests(&sim);
    assert_eq!(
        calls, 2,
        "the vanished leader's call, and one for all waiters"
    );
    // What the cache now serves is the whole answer, never the cut one.
    let r = ask(gw.addr, CLIENT_KEY, &body, &[]);
    assert_eq!(cache_of(&r), "hit");
    assert_eq!(stream_content(&r).0, whole);
}

/// A backend's `Cache-Control` decides what is kept and for how long, less
/// the `Age` its answer already has: `no-store`, `private` and `max-age=0`
/// are never kept; `max-age=10` with `Age: 7` lives three seconds, not ten.
#[test]
fn the_backends_cache_control_and_age_bound_what_is_kept() {
    let head = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let h = head.clone();
    let backend = raw_backend(move || {
        let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n{body}",
            body.len(),
            h.lock().unwrap()
        )
        .into_bytes()
    });
    let g = Gateway::start(&format!(
        "{auth}backends:\n  s: {{ kind: openai, url: \"http://{backend}/v1\" }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n    targets: [ {{ backend: s }} ]\n    cache: {{ ttl: 1m }}\n",
        auth = auth_section()
    ));
    let twice = |text: &str, headers: &str| {
        *head.lock().unwrap() = headers.to_string();
        let first = ask(g.addr, CLIENT_KEY, &hello(text), &[]);
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(cache_of(&first), "miss", "{headers}");
        cache_of(&ask(g.addr, CLIENT_KEY, &hello(text), &[])).to_string()
    };
    for (n, headers) in [
        "cache-control: no-store\r\n",
        "cache-control: private, max-age=60\r\n",
        "cache-control: max-age=0\r\n",
        "cache-control: max-age=60\r\nage: 60\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            twice(&format!("not kept {n}"), headers),
            "miss",
            "{headers}"
        );
    }
    assert_eq!(twice("kept", "cache-control: public\r\n"), "hit");
    assert_eq!(
        twice("aged", "cache-control: max-age=10\r\nage: 7\r\n"),
        "hit"
    );
    std::thread::sleep(Duration::from_millis(3500));
    let r = ask(g.addr, CLIENT_KEY, &hello("aged"), &[]);
    assert_eq!(cache_of(&r), "miss", "three seconds to live, not ten");
    let r = ask(g.addr, CLIENT_KEY, &hello("kept"), &[]);
    assert_eq!(cache_of(&r), "hit", "the route's ttl for the rest");
}

/// A raw backend's 200 with a JSON `body`, closing its connection.
fn json_200(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A whole chat answer `answer-{n}` saying `content`, with 11 tokens.
fn chat_answer(n: usize, content: &str) -> String {
    format!(
        r#"{{"id":"answer-{n}","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}}}"#
    )
}

/// A gateway whose route `chat` (model `m`) caches for a minute, in front
/// of a raw backend; `global` goes first in its config.
fn raw_backend_gateway(backend: std::net::SocketAddr, global: &str) -> Gateway {
    Gateway::start(&format!(
        "{global}{auth}backends:\n  s: {{ kind: openai, url: \"http://{backend}/v1\" }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n    targets: [ {{ backend: s }} ]\n    cache: {{ ttl: 1m }}\n",
        auth = auth_section()
    ))
}

/// With memory alone, a JSON answer is stored before it is checked and
/// checked at its first use: a 200 that carries an `error` is never served
/// from the cache (the next identical request asks the backend, and its
/// whole answer is the one kept), and is counted as `unservable`;
/// a hit's tokens are those the gateway read off the stored answer.
#[test]
fn an_error_in_a_200_is_never_served_from_the_cache() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let backend = raw_backend(move || {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            json_200(
                r#"{"error":{"message":"over quota","type":"quota"},"choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#,
            )
        } else {
            json_200(&chat_answer(n, "hi"))
        }
    });
    let g = raw_backend_gateway(backend, "");
    let first = ask(g.addr, CLIENT_KEY, &hello("quota"), &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.json()["error"].is_object(), "{}", first.text());
    assert_eq!(cache_of(&first), "miss");
    let second = ask(g.addr, CLIENT_KEY, &hello("quota"), &[]);
    assert_eq!(cache_of(&second), "miss", "{}", second.text());
    assert_eq!(id(&second), "answer-1");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    let third = ask(g.addr, CLIENT_KEY, &hello("quota"), &[]);
    assert_eq!(cache_of(&third), "hit");
    assert_eq!(id(&third), "answer-1");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Counted as each request's log is written, just after its answer.
    let events = |event: &str| {
        g.metric(&format!(
            "skygate_cache_events_total{{event=\"{event}\",route=\"chat\"}}"
        ))
    };
    let expected = [("unservable", 1.0), ("store", 2.0), ("cached_tokens", 11.0)];
    assert!(
        eventually(Duration::from_secs(5), || expected
            .iter()
            .all(|&(e, n)| events(e) == Some(n))),
        "{:?}",
        expected.map(|(e, _)| (e, events(e)))
    );
}

/// Once the in-memory tier is full (memory alone), a request new to it is
/// answered without storing its answer (`not_admitted`); from its second
/// sight on it is stored, as before the tier filled.
#[test]
fn a_full_memory_tier_stores_a_request_from_its_second_sight() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let backend = raw_backend(move || {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // About 4 KiB an answer: some 230 fill the 1 MiB tier.
        json_200(&chat_answer(n, &"x".repeat(4 << 10)))
    });
    let g = raw_backend_gateway(backend, "cache: { memory: 1MiB }\n");
    let events = |event: &str| {
        g.metric(&format!(
            "skygate_cache_events_total{{event=\"{event}\",route=\"chat\"}}"
        ))
        .unwrap_or(0.0)
    };
    // Fill the tier (to 63/64 of its bound): every miss stores while it
    // has room. Each store is counted once its answer is sent, so wait for
    // it before looking at the tier's size.
    let mut n = 0.0;
    while g.metric("skygate_cache_bytes").unwrap_or(0.0) < 63.0 / 64.0 * 1048576.0 {
        assert!(
            n < 400.0,
            "the tier should be full after {n} answers of 4 KiB"
        );
        let r = ask(g.addr, CLIENT_KEY, &hello(&format!("fill {n}")), &[]);
        assert_eq!((r.status, cache_of(&r)), (200, "miss"));
        n += 1.0;
        assert!(
            eventually(Duration::from_secs(5), || events("store") == n),
            "answer {n} stored"
        );
    }
    assert_eq!(events("not_admitted"), 0.0);
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    let first = ask(g.addr, CLIENT_KEY, &hello("new to a full tier"), &[]);
    assert_eq!((first.status, cache_of(&first)), (200, "miss"));
    assert!(
        eventually(Duration::from_secs(5), || events("not_admitted") == 1.0),
        "not_admitted: {}",
        events("not_admitted")
    );
    assert_eq!(events("store"), n, "the first sight is not stored");
    let second = ask(g.addr, CLIENT_KEY, &hello("new to a full tier"), &[]);
    assert_eq!((second.status, cache_of(&second)), (200, "miss"));
    assert!(
        eventually(Duration::from_secs(5), || events("store") == n + 1.0),
        "the second sight is stored"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before + 2);
    assert_eq!(events("not_admitted"), 1.0);
}
