use super::*;
use crate::Identity;
use pingora_http::RequestHeader;
use skygate_config::{AuthMethod, Principal};

fn limits(yaml: &str) -> RateLimits {
    let text = format!(
        "
listen: 127.0.0.1:8080
admin: {{ listen: 127.0.0.1:9090, token: long-enough-token }}
backends:
  b: {{ kind: openai, url: http://127.0.0.1:1/v1 }}
routes:
  chat:
    match: {{ path: /v1/chat/completions, models: [m, n] }}
    targets: [ {{ backend: b }} ]
{yaml}"
    );
    let config = skygate_config::load_str(&text, "t.yaml", &|_| None).unwrap();
    RateLimits::from_config(&config, &Shared::default()).unwrap()
}

fn ctx(who: &str, tenant: Option<&str>, model: &str) -> RequestCtx {
    let mut c = RequestCtx::new();
    c.route = Some(0);
    c.model = Some(model.into());
    c.identity = Some(Identity {
        principal: Arc::new(Principal {
            id: who.into(),
            issuer: None,
            tenant: tenant.map(String::from),
            groups: vec![],
            attributes: Default::default(),
        }),
        method: AuthMethod::ApiKey,
    });
    c
}

async fn ask(l: &RateLimits, c: &mut RequestCtx, body: &[u8]) -> Result<(), ApiError> {
    let header = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    match l
        .on_request(
            Incoming {
                header: &header,
                body,
            },
            c,
        )
        .await
    {
        Decision::Continue => Ok(()),
        Decision::Respond(e) => Err(e),
        Decision::Answer(_) => panic!("a limit never answers"),
    }
}

#[tokio::test]
async fn five_a_minute_then_429_with_headers() {
    let l = limits("limits: [ { name: five, requests_per_minute: 5 } ]");
    for left in (0..5).rev() {
        let mut c = ctx("alice", None, "m");
        ask(&l, &mut c, b"{}").await.unwrap();
        let r = c.limits.as_ref().unwrap().requests.unwrap();
        assert_eq!((r.limit, r.remaining), (5, left));
        let mut h = http::HeaderMap::new();
        l.on_response_header(&mut h, &c);
        assert_eq!(
            h["x-ratelimit-remaining-requests"],
            left.to_string().as_str()
        );
        assert_eq!(h["x-ratelimit-limit-requests"], "5");
        assert!(h.get("x-ratelimit-limit-tokens").is_none());
    }
    let mut c = ctx("alice", None, "m");
    let e = ask(&l, &mut c, b"{}").await.unwrap_err();
    assert_eq!(e.status(), 429);
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(e.kind.error_type(), "requests");
    assert!(e.message.contains("`five`"), "{}", e.message);
    // One more passes every 12 s: that is the wait.
    let wait = e.retry_after.unwrap().as_secs_f64();
    assert!((11.0..=12.0).contains(&wait), "{wait}");
    // The refusal still says where the caller stands.
    let r = c.limits.as_ref().unwrap().requests.unwrap();
    assert_eq!(r.remaining, 0);
    // Another principal has a counter of its own.
    ask(&l, &mut ctx("bob", None, "m"), b"{}").await.unwrap();
}

#[tokio::test]
async fn a_refused_request_is_charged_nothing() {
    let l = limits(
        "limits:
  - { name: three, requests_per_minute: 3 }
  - { name: one-on-m, match: { models: [m] }, requests_per_minute: 1 }",
    );
    ask(&l, &mut ctx("a", None, "m"), b"{}").await.unwrap();
    assert!(ask(&l, &mut ctx("a", None, "m"), b"{}").await.is_err());
    // `three` was not charged for the refused request: two are left.
    let mut c = ctx("a", None, "n");
    ask(&l, &mut c, b"{}").await.unwrap();
    assert_eq!(c.limits.as_ref().unwrap().requests.unwrap().remaining, 1);
}

#[tokio::test]
async fn tokens_reserve_then_settle_refunds_and_debts() {
    let l = limits("limits: [ { name: tpm, per: tenant, tokens_per_minute: 10000 } ]");
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#;
    let input = (body.len() as u64).div_ceil(4);
    let mut c = ctx("a", Some("acme"), "m");
    c.max_tokens = Some(500);
    ask(&l, &mut c, body).await.unwrap();
    let t = c.limits.as_ref().unwrap().tokens.unwrap();
    assert_eq!(t.remaining, 10000 - input - 500);
    // `n` choices reserve n times the output (here on another tenant).
    let mut n3 = ctx("a", Some("other"), "m");
    n3.max_tokens = Some(500);
    n3.choices = 3;
    ask(&l, &mut n3, body).await.unwrap();
    let t3 = n3.limits.as_ref().unwrap().tokens.unwrap();
    assert_eq!(t3.remaining, 10000 - input - 1500);
    // The backend used 30: 470 + the input estimate's excess come back.
    c.status = 200;
    c.first_byte = Some(std::time::Instant::now());
    c.prompt_tokens = Some(10);
    c.completion_tokens = Some(20);
    l.on_complete(&mut c);
    // Another caller of the same tenant sees the settled count.
    let mut c2 = ctx("b", Some("acme"), "m");
    c2.max_tokens = Some(0);
    ask(&l, &mut c2, b"").await.unwrap();
    // (Tokens refill as time passes: a slow machine may see a few more.)
    let left = c2.limits.as_ref().unwrap().tokens.unwrap().remaining;
    assert!((10000 - 30..10000 - 20).contains(&left), "{left}");
    // A debt: used far more than reserved.
    c2.status = 200;
    c2.first_byte = Some(std::time::Instant::now());
    c2.prompt_tokens = Some(9000);
    c2.completion_tokens = Some(2000);
    l.on_complete(&mut c2);
    let mut c3 = ctx("c", Some("acme"), "m");
    c3.max_tokens = Some(1);
    let e = ask(&l, &mut c3, b"{}").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TokensLimited);
    assert_eq!(e.kind.error_type(), "tokens");
    // A caller without a tenant is not under a per-tenant limit.
    let mut c4 = ctx("d", None, "m");
    ask(&l, &mut c4, b"{}").await.unwrap();
    assert!(c4.limits.is_none());
}

#[tokio::test]
async fn failed_and_cut_requests_settle_what_was_produced() {
    let l = limits("limits: [ { name: tpm, tokens_per_minute: 10000 } ]");
    // An error answer with no usage: everything comes back.
    let mut c = ctx("a", None, "m");
    c.max_tokens = Some(1000);
    ask(&l, &mut c, b"").await.unwrap();
    c.status = 502;
    l.on_complete(&mut c);
    // A stream cut after 7 events: 7 tokens stay charged.
    let mut c = ctx("a", None, "m");
    c.max_tokens = Some(1000);
    c.stream = true;
    ask(&l, &mut c, b"").await.unwrap();
    assert!(c.want_stream_usage);
    assert_eq!(c.limits.as_ref().unwrap().tokens.unwrap().remaining, 9000);
    c.status = 200;
    c.attempts = 1;
    c.first_byte = Some(std::time::Instant::now());
    c.stream_events = 7;
    c.error = Some("backend_error");
    l.on_complete(&mut c);
    let mut c = ctx("a", None, "m");
    c.max_tokens = Some(0);
    ask(&l, &mut c, b"").await.unwrap();
    let left = c.limits.as_ref().unwrap().tokens.unwrap().remaining;
    assert!((10000 - 7..10000).contains(&left), "{left}");

    // A whole stream without usage keeps its reservation; a local answer
    // (no backend asked) gives it all back.
    let mut c = ctx("b", None, "m");
    c.max_tokens = Some(100);
    c.stream = true;
    ask(&l, &mut c, b"").await.unwrap();
    c.status = 200;
    c.attempts = 1;
    c.first_byte = Some(std::time::Instant::now());
    l.on_complete(&mut c);
    let mut c = ctx("b", None, "m");
    c.max_tokens = Some(100);
    ask(&l, &mut c, b"").await.unwrap();
    let left = c.limits.as_ref().unwrap().tokens.unwrap().remaining;
    assert!((10000 - 200..10000 - 190).contains(&left), "{left}");
    c.status = 200;
    c.first_byte = Some(std::time::Instant::now());
    l.on_complete(&mut c);
    let mut c = ctx("b", None, "m");
    c.max_tokens = Some(0);
    ask(&l, &mut c, b"").await.unwrap();
    let left = c.limits.as_ref().unwrap().tokens.unwrap().remaining;
    assert!((10000 - 100..10000 - 90).contains(&left), "{left}");
}

#[tokio::test]
async fn concurrency_slots_free_when_the_request_ends() {
    let l = limits("limits: [ { name: one-at-a-time, concurrency: 1 } ]");
    let mut first = ctx("a", None, "m");
    ask(&l, &mut first, b"").await.unwrap();
    let e = ask(&l, &mut ctx("a", None, "m"), b"").await.unwrap_err();
    assert!(e.message.contains("concurrency limit"), "{}", e.message);
    l.on_complete(&mut first);
    ask(&l, &mut ctx("a", None, "m"), b"").await.unwrap();
    // A request dropped without completing frees its slot too.
    let mut c = ctx("b", None, "m");
    ask(&l, &mut c, b"").await.unwrap();
    drop(c);
    ask(&l, &mut ctx("b", None, "m"), b"").await.unwrap();
}

#[test]
fn reset_reads_like_openai() {
    for (us, s) in [
        (0, "0ms"),
        (400, "1ms"),
        (250_000, "250ms"),
        (12_000_000, "12s"),
        (12_000_001, "13s"),
        (360_000_000, "6m0s"),
        (3_723_000_000, "1h2m3s"),
    ] {
        assert_eq!(format_reset(Duration::from_micros(us)), s);
    }
}
