//! Many replicas on one Redis (`state.redis`): one shared rate limit, one
//! shared cache entry and its purge, one prewarm ping per due time, and
//! admin changes (weights, drain) made on one replica seen by all,
//! surviving a replica's restart and a Redis outage.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a change may take to reach the others in a test: pub/sub
/// takes milliseconds; the bound is loose for a loaded 2-core machine but
/// under the 5 s re-read, so only pub/sub can meet it.
const PROPAGATE: Duration = Duration::from_secs(3);

fn config(redis: &str, a: &Sim, b: &Sim, prefix: &str) -> String {
    format!(
        "{auth}state: {{ redis: \"{redis}\", key_prefix: {prefix} }}
backends:
  a: {{ kind: openai, url: \"{a}/v1\", prewarm: {{ mode: fixed, idle_timeout: 1200ms, interval: 1s, concurrency: 1, hold: 10ms }} }}
  b: {{ kind: openai, url: \"{b}/v1\" }}
routes:
  chat:
    match: {{ path: /v1/chat/completions, models: [m] }}
    targets: [ {{ backend: a, weight: 50 }}, {{ backend: b, weight: 50 }} ]
    limits: {{ requests_per_minute: 6, per: principal }}
  emb:
    match: {{ path: /v1/embeddings, models: [e] }}
    targets: [ {{ backend: b }} ]
    cache: {{ ttl: 1m }}
  emb2:
    match: {{ path: /v1/embeddings, models: [e2] }}
    targets: [ {{ backend: b }} ]
    cache: {{ ttl: 1m }}
",
        auth = auth_section(),
        a = a.url,
        b = b.url,
    )
}

fn effective(g: &Gateway, route: &str, backend: &str) -> Option<u64> {
    let v = g.admin("GET", "/admin/routes", "").json();
    v["routes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == route)?["targets"]
        .as_array()?
        .iter()
        .find(|t| t["backend"] == backend)?["effective_weight"]
        .as_u64()
}

fn drained(g: &Gateway, backend: &str) -> bool {
    g.backend_status(backend)["drained"] == json!(true)
}

fn ping_count(sim: &Sim) -> u64 {
    sim.stats()["prewarm_pings"].as_u64().unwrap()
}

fn embeddings_asked(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/embeddings"))
        })
        .count()
}

/// Waits until `f` holds on every replica, and says how long that took.
fn on_all(gs: &[&Gateway], limit: Duration, f: impl Fn(&Gateway) -> bool) -> Option<Duration> {
    let start = Instant::now();
    eventually(limit, || gs.iter().all(|g| f(g))).then(|| start.elapsed())
}

#[test]
fn three_replicas_share_limits_cache_pings_and_admin_changes() {
    let redis = RedisServer::start();
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let body = config(&redis.url, &a, &b, "three");
    let g1 = Gateway::start(&body);
    let g2 = Gateway::start(&body);
    let mut g3 = Gateway::start(&body);
    for g in [&g1, &g2, &g3] {
        assert!(eventually(Duration::from_secs(10), || g
            .metric("skygate_redis_up")
            == Some(1.0)));
    }

    // One limit of 6 a minute for the caller, whichever replica answers.
    let ask = |g: &Gateway, i: usize| {
        g.post(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": format!("q{i}")}]}),
        )
    };
    let gs = [&g1, &g2, &g3];
    for i in 0..6 {
        let r = ask(gs[i % 3], i);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for (i, g) in gs.iter().enumerate() {
        ask(g, 10 + i).assert_error(429, "rate_limit_exceeded");
    }

    // One cache entry: filled by one replica, a hit on the other two.
    let emb = json!({"model": "e", "input": "shared by three"});
    let first = g1.post("/v1/embeddings", &emb);
    assert_eq!(first.header("x-skygate-cache"), Some("miss"));
    // Written in the background: once it is in Redis, the others hit it.
    assert!(eventually(Duration::from_secs(5), || redis
        .cli(&["--raw", "KEYS", "three:cache:emb:*"])
        .contains("three:cache:emb:")));
    for g in [&g2, &g3] {
        let r = g.post("/v1/embeddings", &emb);
        assert_eq!(r.header("x-skygate-cache"), Some("hit"));
        assert_eq!(r.body, first.body);
    }
    assert_eq!(
        embeddings_asked(&b),
        1,
        "the backend answered once: {:?}",
        b.requests()
    );

    // A purge on one replica empties the others' memory too (their hits
    // from Redis put the entry there), within a second. The Redis value is
    // moved out of the sweep's way and back, as if a miss read it before
    // the sweep got to it: it is not served (answered before the purge).
    let entries = |g: &Gateway| g.metric("skygate_cache_entries").unwrap_or(-1.0);
    for g in [&g2, &g3] {
        assert_eq!(entries(g), 1.0, "a hit from Redis is kept in memory");
    }
    let key = redis.cli(&["--raw", "KEYS", "three:cache:emb:*"]);
    let key = key.trim();
    assert_eq!(redis.cli(&["RENAME", key, "three:aside"]).trim(), "OK");
    let r = g1.admin("DELETE", "/admin/cache?route=emb", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["shared"].clone(), v["deleted"]["redis"].clone()),
        (json!("redis"), json!(0)),
        "{v}"
    );
    let took = on_all(&[&g2, &g3], PROPAGATE, |g| entries(g) == 0.0)
        .expect("the purge did not reach the other replicas' memory");
    eprintln!("a purge reached the other two replicas in {took:?}");
    for g in [&g2, &g3] {
        assert_eq!(
            g.metric(r#"skygate_cache_evictions_total{cause="invalidated"}"#),
            Some(1.0)
        );
    }
    assert_eq!(redis.cli(&["RENAME", "three:aside", key]).trim(), "OK");
    let r = g3.post("/v1/embeddings", &emb);
    assert_eq!(r.header("x-skygate-cache"), Some("miss"));
    assert_eq!(embeddings_asked(&b), 2);

    // One prewarm ping per due time (a round a second), not one per replica.
    let start = ping_count(&a);
    std::thread::sleep(Duration::from_millis(4_200));
    let sent = ping_count(&a) - start;
    assert!(
        (3..=6).contains(&sent),
        "{sent} pings in 4.2 s from three replicas"
    );

    // A weight change on one replica reaches the others within a second.
    let r = g1.admin("PUT", "/admin/routes/chat/weights", r#"{"a": 0, "b": 100}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["shared"], "redis");
    let took = on_all(&gs, PROPAGATE, |g| effective(g, "chat", "a") == Some(0));
    let took = took.expect("the weight change did not reach every replica by pub/sub");
    eprintln!("a weight change reached all three replicas in {took:?}");

    // A drain likewise; a restarted replica comes up with both.
    let r = g2.admin("POST", "/admin/backends/a/drain", "");
    assert_eq!(
        (r.status, r.json()["shared"].clone()),
        (200, json!("redis"))
    );
    assert!(on_all(&gs, PROPAGATE, |g| drained(g, "a")).is_some());
    g3.proc.signal("KILL");
    let _ = g3.proc.wait_exit(Duration::from_secs(5));
    g3 = Gateway::start(&body);
    assert!(drained(&g3, "a"), "ready before it read the shared drain");
    assert_eq!(effective(&g3, "chat", "a"), Some(0));
    assert_eq!(effective(&g3, "chat", "b"), Some(100));

    // Undone on the restarted one: back everywhere.
    assert_eq!(
        g3.admin("POST", "/admin/backends/a/undrain", "").status,
        200
    );
    assert_eq!(
        g3.admin("DELETE", "/admin/routes/chat/weights", "").status,
        200
    );
    let gs = [&g1, &g2, &g3];
    assert!(on_all(&gs, PROPAGATE, |g| !drained(g, "a")
        && effective(g, "chat", "a") == Some(50))
    .is_some());
    drop(redis);
}

/// Redis down: a change (and a cache purge) stays on its replica
/// (`shared: pending`) and reaches the others when Redis returns, even
/// empty (no persistence): every replica writes back what the new Redis
/// lacks.
#[test]
fn admin_changes_wait_out_a_redis_outage_and_outlive_an_empty_restart() {
    let mut redis = RedisServer::start();
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let body = config(&redis.url, &a, &b, "outage");
    let g1 = Gateway::start(&body);
    let g2 = Gateway::start(&body);
    for g in [&g1, &g2] {
        assert!(eventually(Duration::from_secs(10), || g
            .metric("skygate_redis_up")
            == Some(1.0)));
    }
    let r = g1.admin("PUT", "/admin/routes/chat/weights", r#"{"a": 10}"#);
    assert_eq!(r.json()["shared"], "redis");
    assert!(on_all(&[&g2], PROPAGATE, |g| effective(g, "chat", "a") == Some(10)).is_some());

    // Answers in g2's memory: one of the route purged below, one of
    // another route, which stays.
    for model in ["e", "e2"] {
        let emb = json!({"model": model, "input": "purged while redis is down"});
        assert_eq!(
            g2.post("/v1/embeddings", &emb).header("x-skygate-cache"),
            Some("miss")
        );
    }
    let entries = |g: &Gateway| g.metric("skygate_cache_entries").unwrap_or(-1.0);
    // Stored as the answers end, which may be after the client has them.
    assert!(
        eventually(Duration::from_secs(2), || entries(&g2) == 2.0),
        "{}",
        entries(&g2)
    );

    redis.kill();
    // A purge while Redis is down: this replica's memory now (Redis'
    // entries cannot go: 503), the others' when Redis returns.
    let r = g1.admin("DELETE", "/admin/cache?route=emb", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["shared"], "pending", "{}", r.text());
    assert_eq!(r.json()["error"]["deleted"]["memory"], 0, "{}", r.text());
    let r = g2.admin("POST", "/admin/backends/b/drain", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["shared"], "pending");
    assert!(drained(&g2, "b"), "applied here at once");
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(!drained(&g1, "b"), "the other replica cannot know yet");
    // Requests keep flowing meanwhile.
    let r = g1.chat("m");
    assert_eq!(r.status, 200, "{}", r.text());

    // Back, empty: the pending drain and the earlier weights both return.
    redis.restart();
    let back = |g: &Gateway| drained(g, "b") && effective(g, "chat", "a") == Some(10);
    assert!(
        on_all(&[&g1, &g2], Duration::from_secs(15), back).is_some(),
        "g1: drained {} weight {:?}; g2: drained {} weight {:?}; redis has {}",
        drained(&g1, "b"),
        effective(&g1, "chat", "a"),
        drained(&g2, "b"),
        effective(&g2, "chat", "a"),
        redis.cli(&["HGETALL", "outage:admin"])
    );
    let fields: Value = json!(redis.cli(&["HGETALL", "outage:admin"]));
    let text = fields.as_str().unwrap();
    assert!(
        text.contains("backend:b:drained") && text.contains("route:chat:weights"),
        "{text}"
    );
    // The purge made while Redis was down reached g2's memory: that
    // route's entry, not the other's.
    assert!(
        on_all(&[&g2], PROPAGATE, |g| entries(g) == 1.0).is_some(),
        "g2 still holds {} entries; redis has {}",
        entries(&g2),
        redis.cli(&["HGETALL", "outage:admin"])
    );
}
