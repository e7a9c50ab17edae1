//! Criterion micro-benches of the request path: body peek (model + stream),
//! route lookup, the plugin chain (hygiene + API key, + Cedar policy), a
//! 50-policy Cedar decision, routing picks, and error rendering.
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
    let snap = Snapshot::build(config.clone(), &registry, &Default::default());
    let table = RouteTable::new(&config.routes);
    let chain = Chain::from_config(&config, &Default::default());

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

    // A finished request's metrics: through the route's resolved handles
    // (as now), and by label as before (four `with_label_values`).
    let names: Vec<std::sync::Arc<str>> = vec!["sim".into(), "sim2".into()];
    let rm = skygate::metrics::RouteMetrics::new("chat", &names);
    c.bench_function("metrics/record(resolved handles)", |b| {
        b.iter(|| {
            skygate::metrics::record_request(
                Some(black_box(&rm)),
                "sim",
                200,
                0.0012,
                Some(0.0008),
                (Some(12), Some(16)),
            )
        })
    });
    if let Some(m) = skygate::metrics::get() {
        c.bench_function("metrics/record(by label, before)", |b| {
            b.iter(|| {
                let (route, backend) = (black_box("chat"), black_box("sim"));
                let status = 200u16.to_string();
                m.requests
                    .with_label_values(&[route, backend, &status])
                    .inc();
                m.duration.with_label_values(&[route]).observe(0.0012);
                m.ttfb.with_label_values(&[route, backend]).observe(0.0008);
                m.tokens.with_label_values(&[route, "prompt"]).inc_by(12);
                m.tokens
                    .with_label_values(&[route, "completion"])
                    .inc_by(16);
            })
        });
    }
    // One access-log line, built (not written).
    let mut ctx = RequestCtx::new();
    ctx.request_id = "b5a7c1e0d3f24a6b9c8d7e6f5a4b3c2d".into();
    ctx.route_name = Some("chat".into());
    ctx.model = Some("bench".into());
    ctx.backend = Some("sim".into());
    ctx.status = 200;
    ctx.attempts = 1;
    ctx.served = Some(skygate_plugins::Try {
        backend: "sim".into(),
        outcome: "ok",
        status: Some(200),
        ms: 0.8,
        started: Instant::now(),
        span: 0,
    });
    c.bench_function("access_log/line", |b| {
        b.iter(|| {
            skygate::observe::line(
                black_box(&ctx),
                1_700_000_000_000,
                "POST",
                "/v1/chat/completions",
                Some("127.0.0.1:50000"),
                std::time::Duration::from_micros(1200),
                Some(std::time::Duration::from_micros(800)),
            )
        })
    });

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

/// 50 policies as a security team might write them: 40 tenant allow-lists,
/// 5 group grants, 4 forbids that never apply, one residency forbid.
/// Auth + policy: the chain with a 50-policy set, and the Cedar engine alone.
fn policy_benches(c: &mut Criterion) {
    use skygate_plugins::policy::engine::{Action, Engine, Facts, Kind};
    let mut config = skygate_config::load_str(CONFIG, "bench.yaml", &|_| None).unwrap();
    let policy = skygate_config::Policy {
        files: vec![skygate_config::PolicyFile {
            path: "bench.cedar".into(),
            text: skygate_benches::fifty_policies(),
        }],
        patterns: Vec::new(),
        schema: None,
        mode: skygate_config::PolicyMode::Enforce,
        audit_log: skygate_config::AuditLog::Off,
    };
    config.policy = Some(policy.clone());
    let engine = Engine::new(&policy, &config).unwrap();
    assert_eq!(engine.len(), 50);
    let principal = skygate_config::Principal {
        id: "a".into(),
        tenant: Some("t7".into()),
        groups: vec!["g1".into()],
        ..Default::default()
    };
    let facts = Facts {
        client_ip: Some("10.1.2.3".parse().unwrap()),
        mtls: false,
        route: "chat".into(),
        stream: false,
        request_bytes: 1200,
        estimated_tokens: 300,
        hour: 10,
        weekday: 2,
    };
    let chat = config.routes.iter().position(|r| r.name == "chat").unwrap();
    let who = engine.subject(&principal, Kind::ApiKey).unwrap();
    let cx = engine.context(&facts).unwrap();
    assert!(
        engine
            .call(&who, Action::Invoke, chat, Some("m2"), &cx)
            .allow
    );
    c.bench_function("policy/cedar_50/decide", |b| {
        b.iter(|| {
            black_box(
                engine
                    .call(&who, Action::Invoke, chat, Some("m2"), &cx)
                    .allow,
            )
        })
    });
    c.bench_function("policy/cedar_50/subject+context+decide", |b| {
        b.iter(|| {
            let who = engine.subject(black_box(&principal), Kind::ApiKey).unwrap();
            let cx = engine.context(black_box(&facts)).unwrap();
            black_box(
                engine
                    .call(&who, Action::Invoke, chat, Some("m2"), &cx)
                    .allow,
            )
        })
    });
    c.bench_function("policy/cedar_50/use_backend", |b| {
        b.iter(|| black_box(engine.backend_forbidden(&who, 0, &cx).is_none()))
    });
    // The floor: one permit, the smallest decision Cedar makes.
    let one = skygate_config::Policy {
        files: vec![skygate_config::PolicyFile {
            path: "one.cedar".into(),
            text: "permit (principal, action, resource);".into(),
        }],
        ..policy.clone()
    };
    let engine_1 = Engine::new(&one, &config).unwrap();
    let who_1 = engine_1.subject(&principal, Kind::ApiKey).unwrap();
    c.bench_function("policy/cedar_1/decide", |b| {
        b.iter(|| {
            black_box(
                engine_1
                    .call(&who_1, Action::Invoke, chat, Some("m2"), &cx)
                    .allow,
            )
        })
    });

    // The whole chain: hygiene + API key (on_headers), then the policy
    // (on_request), as a request sees them.
    let chain = Chain::from_config(&config, &Default::default());
    let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    req.insert_header("authorization", "Bearer sk-bench-key-0001")
        .unwrap();
    req.insert_header("content-type", "application/json")
        .unwrap();
    let keyed = {
        // The bench key's principal, with a tenant and group the set permits.
        let mut c2 = config.clone();
        let k = &mut c2.auth.api_keys[0];
        k.principal = std::sync::Arc::new(principal.clone());
        c2
    };
    let chain_keyed = Chain::from_config(&keyed, &Default::default());
    // One request through both phases, as the pipeline runs them.
    let through = |chain: &Chain, req: &RequestHeader| {
        let mut r = req.clone();
        let mut ctx = RequestCtx::new();
        ctx.client_ip = Some("10.1.2.3".parse().unwrap());
        let d = ready(chain.on_headers(&mut r, &mut ctx));
        assert!(matches!(d, skygate_plugins::Decision::Continue));
        ctx.route = Some(chat);
        ctx.route_name = Some("chat".into());
        ctx.model = Some("m2".into());
        ctx.request_bytes = 1200;
        ready(chain.on_request(
            skygate_plugins::Incoming {
                header: &r,
                body: b"",
            },
            &mut ctx,
        ))
    };
    let run = |chain: &Chain| through(chain, &req);
    assert!(matches!(
        run(&chain_keyed),
        skygate_plugins::Decision::Continue
    ));
    assert!(
        matches!(run(&chain), skygate_plugins::Decision::Respond(_)),
        "principal a has no tenant there"
    );
    c.bench_function("chain/auth+policy_50(permit)", |b| {
        b.iter(|| run(&chain_keyed))
    });
    let plain = Chain::from_config(
        &skygate_config::load_str(CONFIG, "bench.yaml", &|_| None).unwrap(),
        &Default::default(),
    );
    c.bench_function("chain/auth_only(same request)", |b| b.iter(|| run(&plain)));

    // A JWT from the demo issuer instead of the API key: verified once,
    // then from the cache of verified tokens, as a repeated token is.
    let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo/jwks.json");
    let with_jwt = CONFIG.replace(
        "auth:\n",
        &format!("auth:\n  jwt:\n    - {{ issuer: skygate-demo, audiences: [skygate], algorithms: [RS256], jwks: {{ file: \"{jwks}\" }}, claims: {{ subject: sub, tenant: tenant, groups: groups }} }}\n"),
    );
    let mut jwt_config = skygate_config::load_str(&with_jwt, "bench.yaml", &|_| None).unwrap();
    let jwt_plain = Chain::from_config(&jwt_config, &Default::default());
    jwt_config.policy = Some(policy.clone());
    let jwt_policy = Chain::from_config(&jwt_config, &Default::default());
    let token = skygate::demo::demo_token(
        "alice",
        "t7",
        &["g1".to_string()],
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let mut jwt_req = req.clone();
    jwt_req
        .insert_header("authorization", format!("Bearer {token}"))
        .unwrap();
    let run_jwt = |chain: &Chain| through(chain, &jwt_req);
    assert!(matches!(
        run_jwt(&jwt_policy),
        skygate_plugins::Decision::Continue
    ));
    c.bench_function("chain/jwt_cached+policy_50(permit)", |b| {
        b.iter(|| run_jwt(&jwt_policy))
    });
    c.bench_function("chain/jwt_cached_only(same request)", |b| {
        b.iter(|| run_jwt(&jwt_plain))
    });
}

/// Local rate limits: the check of one request against two limits (a
/// request rate and a token rate, the token one settled afterwards), over
/// 10 000 principals, against the same request with no limit configured.
fn ratelimit_benches(c: &mut Criterion) {
    let limited = format!(
        "{CONFIG}limits:\n  - {{ name: rpm, requests_per_minute: 1000000000 }}\n  - {{ name: tpm, tokens_per_minute: 1000000000000 }}\n"
    );
    let config = skygate_config::load_str(&limited, "bench.yaml", &|_| None).unwrap();
    let limits =
        skygate_plugins::ratelimit::RateLimits::from_config(&config, &Default::default()).unwrap();
    let principals: Vec<std::sync::Arc<skygate_config::Principal>> = (0..10_000)
        .map(|i| {
            std::sync::Arc::new(skygate_config::Principal {
                id: format!("user-{i}"),
                issuer: None,
                tenant: None,
                groups: vec![],
                attributes: Default::default(),
            })
        })
        .collect();
    let req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    let body = chat_body(800);
    let mut i = 0usize;
    let mut one = |settle: bool| {
        use skygate_plugins::Plugin;
        i = (i + 1) % principals.len();
        let mut ctx = RequestCtx::new();
        ctx.route = Some(0);
        ctx.model = Some("m2".into());
        ctx.max_tokens = Some(256);
        ctx.identity = Some(skygate_plugins::Identity {
            principal: principals[i].clone(),
            method: skygate_plugins::AuthMethod::ApiKey,
        });
        let incoming = skygate_plugins::Incoming {
            header: &req,
            body: &body,
        };
        let d = ready(limits.on_request(incoming, &mut ctx));
        debug_assert!(matches!(d, skygate_plugins::Decision::Continue));
        if settle {
            ctx.status = 200;
            ctx.first_byte = Some(Instant::now());
            ctx.prompt_tokens = Some(200);
            ctx.completion_tokens = Some(100);
            limits.on_complete(&mut ctx);
        }
        ctx
    };
    c.bench_function("ratelimit/local_2_limits(check)", |b| b.iter(|| one(false)));
    c.bench_function("ratelimit/local_2_limits(check+settle)", |b| {
        b.iter(|| one(true))
    });
    // The same context building, no limit: the baseline to subtract.
    let plain = skygate_config::load_str(CONFIG, "bench.yaml", &|_| None).unwrap();
    assert!(
        skygate_plugins::ratelimit::RateLimits::from_config(&plain, &Default::default()).is_none()
    );
    c.bench_function("ratelimit/none(context only)", |b| {
        b.iter(|| {
            let mut ctx = RequestCtx::new();
            ctx.route = Some(0);
            ctx.model = Some("m2".into());
            ctx.identity = Some(skygate_plugins::Identity {
                principal: principals[1].clone(),
                method: skygate_plugins::AuthMethod::ApiKey,
            });
            ctx
        })
    });
}

/// The cache plugin on a hit (key + lookup + answer built), as JSON and
/// replayed as SSE, and on a miss (key + lookup + leading the flight).
fn cache_benches(c: &mut Criterion) {
    use skygate_plugins::{Decision, Incoming, Plugin};
    let cached = CONFIG.replace(
        "targets: [ { backend: a } ] }\n  three",
        "targets: [ { backend: a } ], cache: { ttl: 1h } }\n  three",
    );
    let config = skygate_config::load_str(&cached, "bench.yaml", &|_| None).unwrap();
    let shared = skygate_plugins::Shared::default();
    let cache =
        std::sync::Arc::new(skygate_plugins::cache::Cache::from_config(&config, &shared).unwrap());
    let fill_step = skygate_plugins::cache::CacheFill(cache.clone());
    let principal = std::sync::Arc::new(skygate_config::Principal {
        id: "a".into(),
        issuer: None,
        tenant: Some("acme".into()),
        groups: vec![],
        attributes: Default::default(),
    });
    let req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    let ctx_for = |stream: bool| {
        let mut ctx = RequestCtx::new();
        ctx.route = Some(0);
        ctx.model = Some("m2".into());
        ctx.stream = stream;
        ctx.identity = Some(skygate_plugins::Identity {
            principal: principal.clone(),
            method: skygate_plugins::AuthMethod::ApiKey,
        });
        ctx
    };
    let body = chat_body(800);
    // Store one answer the way a miss does.
    let mut ctx = ctx_for(true);
    let incoming = Incoming {
        header: &req,
        body: &body,
    };
    let d = ready(cache.on_request(incoming, &mut ctx));
    assert!(matches!(d, Decision::Continue));
    let d = ready(fill_step.on_request(incoming, &mut ctx));
    assert!(matches!(d, Decision::Continue));
    let mut h = pingora_http::ResponseHeader::build(200, None).unwrap();
    h.insert_header("content-type", "application/json").unwrap();
    let fill = ctx.cache_fill.as_mut().unwrap();
    fill.response_header(&h);
    fill.push(br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m2","choices":[{"index":0,"message":{"role":"assistant","content":"serverless models warm up behind one gateway today serverless models warm up behind one gateway today"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":16,"total_tokens":30}}"#);
    fill.complete();
    ctx.status = 200;
    cache.on_complete(&mut ctx);
    for (name, stream) in [("cache/hit(json)", false), ("cache/hit(sse replay)", true)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let mut ctx = ctx_for(stream);
                let d = ready(cache.on_request(
                    Incoming {
                        header: &req,
                        body: &body,
                    },
                    &mut ctx,
                ));
                assert!(matches!(d, Decision::Continue) && ctx.pending_answer.is_some());
                ctx
            })
        });
    }
    let mut i = 0u64;
    c.bench_function("cache/miss(key+lookup+lead)", |b| {
        b.iter(|| {
            i += 1;
            let other = chat_body(801 + (i % 1000) as usize);
            let mut ctx = ctx_for(false);
            let incoming = Incoming {
                header: &req,
                body: &other,
            };
            let d = ready(cache.on_request(incoming, &mut ctx));
            assert!(matches!(d, Decision::Continue));
            let d = ready(fill_step.on_request(incoming, &mut ctx));
            assert!(matches!(d, Decision::Continue) && ctx.cache_fill.is_some());
            ctx
        })
    });
}

/// The platform kinds' own cost per request: building the platform's
/// request (translation, SigV4) and reading its answer, against the
/// OpenAI kind's plain rewrite in the same run.
fn platform_benches(c: &mut Criterion) {
    use bytes::{Bytes, BytesMut};
    use skygate_backends::adapter::Clouds;
    use skygate_backends::kinds::bedrock::{BedrockReply, RequestFacts};
    use skygate_backends::kinds::eventstream::encode_event;
    use skygate_backends::kinds::Reply;
    use skygate_backends::{Adapter, BackendAdapter, Call};
    let keys = "credentials: { access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY }";
    let yaml = format!(
        "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nbackends:\n  oa: {{ kind: openai, url: \"http://127.0.0.1:9/v1\", api_key: k }}\n  br: {{ kind: bedrock, region: us-east-1, model_id: \"amazon.nova-micro-v1:0\", {keys} }}\n  lam: {{ kind: aws_lambda, region: us-east-1, function: chat, {keys} }}\nroutes:\n  r: {{ match: {{ path: /v1/chat/completions, models: [m2] }}, targets: [ {{ backend: oa }}, {{ backend: br }} ] }}\n  f: {{ match: {{ path_prefix: /f }}, targets: [ {{ backend: lam }} ] }}\n"
    );
    let config = skygate_config::load_str(&yaml, "bench.yaml", &|_| None).unwrap();
    let clouds = Clouds::from_process();
    let body = Bytes::from(chat_body(800));
    let mut client = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    client
        .insert_header("content-type", "application/json")
        .unwrap();
    for (name, backend) in [
        ("platform/prepare openai (baseline)", "oa"),
        ("platform/prepare bedrock (translate+sigv4)", "br"),
        ("platform/prepare lambda (sigv4)", "lam"),
    ] {
        let b = config.backends.iter().find(|b| b.name == backend).unwrap();
        let adapter = BackendAdapter::build(b, &clouds);
        c.bench_function(name, |bench| {
            bench.iter(|| {
                let call = Call {
                    operation: skygate_config::Operation::ChatCompletions,
                    method: &http_post(),
                    path_suffix: "",
                    client: &client,
                    request_id: "r1",
                    body: &body,
                    forwarded_for: None,
                    identity: None,
                    stream: false,
                    model: Some("m2"),
                    traceparent: None,
                    tracestate: None,
                };
                black_box(adapter.prepare(b, &call).unwrap())
            })
        });
    }
    let facts = |stream| RequestFacts {
        model: "m2".into(),
        stream,
        include_usage: true,
    };
    let ok = pingora_http::ResponseHeader::build(200, None).unwrap();
    let answer = Bytes::from_static(br#"{"output":{"message":{"role":"assistant","content":[{"text":"serverless models warm up behind one gateway today serverless models warm up behind one gateway today"}]}},"stopReason":"end_turn","usage":{"inputTokens":210,"outputTokens":16,"totalTokens":226},"metrics":{"latencyMs":120}}"#);
    c.bench_function("platform/bedrock answer -> chat.completion", |bench| {
        bench.iter(|| {
            let mut r = BedrockReply::new("br", facts(false));
            black_box(r.whole(&ok, answer.clone()).unwrap())
        })
    });
    let delta = encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"serverless "}}"#,
    );
    c.bench_function("platform/bedrock stream event -> sse chunk", |bench| {
        let mut r = BedrockReply::new("br", facts(true));
        let mut out = BytesMut::with_capacity(512);
        bench.iter(|| {
            out.clear();
            r.chunk(&delta, &mut out).unwrap();
            black_box(out.len())
        })
    });
}

fn http_post() -> http::Method {
    http::Method::POST
}

criterion_group!(
    hot_path,
    benches,
    policy_benches,
    ratelimit_benches,
    cache_benches,
    platform_benches
);
criterion_main!(hot_path);
