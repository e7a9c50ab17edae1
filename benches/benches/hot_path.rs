//! Criterion micro-benches of the request path: body peek (model + stream),
//! route lookup, the plugin chain (hygiene + API key), and error rendering.
//!
//!     cargo bench -p skygate-benches --bench hot_path

// A benchmark: unwraps stop it with the reason, which is what a bench should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use skygate::runtime::{RouteTable, Snapshot};
use skygate_backends::routing::{pick, state::Registry};
use skygate_plugins::{Chain, RequestCtx};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

const CONFIG: &str = r#"
listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
auth:
  api_keys:
    - { key: sk-bench-key-0001, principal: a }
    - { key: sk-bench-key-0002, principal: b }
    - { key: sk-bench-key-0003, principal: c }
backends:
  a: { kind: openai, url: http://127.0.0.1:3/v1 }
  b: { kind: openai, url: http://127.0.0.1:5/v1, limits: { max_in_flight: 64 } }
  c: { kind: openai, url: http://127.0.0.1:6/v1 }
  d: { kind: openai, url: http://127.0.0.1:7/v1 }
  f: { kind: http_function, url: http://127.0.0.1:4/fn }
routes:
  chat:  { match: { path: /v1/chat/completions, models: [m1, m2, m3] }, targets: [ { backend: a } ] }
  three: { match: { path: /v1/chat/completions, models: [w3] }, targets: [ { backend: a, weight: 50 }, { backend: b, weight: 30 }, { backend: c, weight: 20 } ], fallback: [ d ] }
  lat:   { match: { path: /v1/chat/completions, models: [l3] }, strategy: latency, targets: [ { backend: a }, { backend: b }, { backend: c } ] }
  least: { match: { path: /v1/chat/completions, models: [i3] }, strategy: least_inflight, targets: [ { backend: a }, { backend: b }, { backend: c } ] }
  embed: { match: { path: /v1/embeddings, models: [e1] }, targets: [ { backend: a } ] }
  fn:    { match: { path_prefix: /v1/functions/score }, targets: [ { backend: f } ] }
"#;

/// Runs a future that never waits (the chain's plugins are all synchronous today).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("bench futures complete at once"),
    }
}

fn chat_body(content_len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "m2",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "x".repeat(content_len)}
        ],
        "temperature": 0.2,
        "stream": true
    }))
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let config = skygate_config::load_str(CONFIG, "bench.yaml", &|_| None).unwrap();
    let registry = Registry::new();
    let snap = Snapshot::build(config.clone(), &registry);
    let table = RouteTable::new(&config.routes);
    let chain = Chain::from_config(&config);

    let small = chat_body(800);
    let big = chat_body(1 << 20);
    c.bench_function("peek_model/1KiB", |b| {
        b.iter(|| skygate::request::peek(black_box(&small)).unwrap())
    });
    c.bench_function("peek_model/1MiB", |b| {
        b.iter(|| skygate::request::peek(black_box(&big)).unwrap())
    });
    c.bench_function("route_lookup/exact", |b| {
        b.iter(|| table.lookup(black_box("/v1/chat/completions")))
    });
    c.bench_function("route_lookup/prefix", |b| {
        b.iter(|| table.lookup(black_box("/v1/functions/score/img/1")))
    });

    let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    req.insert_header("authorization", "Bearer sk-bench-key-0002")
        .unwrap();
    req.insert_header("content-type", "application/json")
        .unwrap();
    req.insert_header("user-agent", "OpenAI/Python 1.54.0")
        .unwrap();
    req.insert_header("x-stainless-lang", "python").unwrap();
    c.bench_function("chain/on_headers(hygiene+api_key)", |b| {
        b.iter(|| {
            let mut r = req.clone();
            let mut ctx = RequestCtx::new();
            ready(chain.on_headers(&mut r, &mut ctx))
        })
    });
    c.bench_function("request_id/generate", |b| {
        b.iter(|| skygate::request_id(black_box(&req)))
    });
    let e = skygate_config::ApiError::new(
        skygate_config::ErrorKind::ModelNotFound,
        "the model `x` does not exist",
    );
    c.bench_function("api_error/body", |b| b.iter(|| black_box(&e).body()));

    // A routing decision: pick a target (breaker, bulkhead, health, weights)
    // and take its slot; dropping the choice releases it.
    let mut rng = rand::thread_rng();
    for (name, model) in [
        ("route_pick/one_target", "m1"),
        ("route_pick/weighted_3", "w3"),
        ("route_pick/latency_p2c_3", "l3"),
        ("route_pick/least_inflight_3", "i3"),
    ] {
        let (ri, route) = snap
            .route(match model {
                "m1" => "chat",
                "w3" => "three",
                "l3" => "lat",
                _ => "least",
            })
            .unwrap();
        let rs = &snap.route_states[ri];
        c.bench_function(name, |b| {
            b.iter(|| {
                let chosen = pick(
                    route,
                    rs,
                    &snap.backends,
                    &[],
                    None,
                    Instant::now(),
                    &mut rng,
                )
                .unwrap();
                black_box(chosen.backend)
            })
        });
    }
    let (ri, route) = snap.route("three").unwrap();
    let rs = &snap.route_states[ri];
    c.bench_function("route_pick/retry_after_one_failed", |b| {
        b.iter(|| {
            let chosen = pick(
                route,
                rs,
                &snap.backends,
                &[0],
                None,
                Instant::now(),
                &mut rng,
            )
            .unwrap();
            black_box(chosen.backend)
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
