//! Every failure a client can see is OpenAI-shaped JSON with the right
//! status: 400, 401, 404, 405, 413 (bodies.rs), 502, 504.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn gateway_for(url: &str, timeouts: &str) -> Gateway {
    Gateway::start(&one_backend(url, &format!("timeouts: {{ {timeouts} }}")))
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {CLIENT_KEY}"))
}

#[test]
fn client_errors() {
    let sim = Sim::start("s", &[]);
    let gw = gateway_for(&sim.url, "connect: 1s");
    let (k, v) = auth();
    let h = [(k, v.as_str()), ("content-type", "application/json")];
    gw.call("POST", "/v1/chat/completions", &h, b"{not json")
        .assert_error(400, "invalid_json");
    let r = gw.call("POST", "/v1/chat/completions", &h, br#"{"messages":[]}"#);
    r.assert_error(400, "missing_model");
    // The field at fault, as OpenAI's `param` (the SDKs' `e.param`).
    assert_eq!(r.json()["error"]["param"], "model");
    let r = gw.call(
        "POST",
        "/v1/chat/completions",
        &h,
        br#"{"model":"m","max_tokens":"50000"}"#,
    );
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    let r = gw.call("POST", "/v1/nothing-here", &h, b"{}");
    assert_eq!(r.json()["error"]["param"], serde_json::Value::Null);
    gw.call(
        "POST",
        "/v1/chat/completions",
        &h,
        br#"{"model":"gpt-nope"}"#,
    )
    .assert_error(404, "model_not_found");
    gw.call("POST", "/v1/nothing-here", &h, b"{}")
        .assert_error(404, "not_found");
    // A 405 says which methods the path takes (RFC 9110 asks for `Allow`).
    for (method, path, allow) in [
        ("GET", "/v1/chat/completions", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/models/m", "GET"),
    ] {
        let r = gw.call(method, path, &h, b"");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        r.assert_error(405, "method_not_allowed");
    }
    gw.call(
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        br#"{"model":"m"}"#,
    )
    .assert_error(401, "invalid_api_key");
    gw.call(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-wrong-key-000")],
        br#"{"model":"m"}"#,
    )
    .assert_error(401, "invalid_api_key");
    assert!(
        sim.requests().is_empty(),
        "no client error reaches the backend"
    );
}

#[test]
fn backend_down_is_502() {
    let nothing = free_addr();
    let gw = gateway_for(&format!("http://{nothing}"), "connect: 1s");
    let r = gw.chat("m");
    r.assert_error(502, "backend_unreachable");
    // The gateway stays up and keeps answering.
    assert_eq!(gw.admin_get("/healthz", None).status, 200);
    gw.post("/v1/chat/completions", &json!({"model": "m"}))
        .assert_error(502, "backend_unreachable");
}

#[test]
fn backend_timeout_is_504() {
    let sim = Sim::start("s", &["--hang-rate", "1"]);
    let gw = gateway_for(&sim.url, "first_byte: 400ms");
    let start = Instant::now();
    let r = gw.chat("m");
    r.assert_error(504, "backend_timeout");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    // Healed backend: the next request succeeds.
    sim.set(json!({"hang_rate": 0.0}));
    assert_eq!(gw.chat("m").status, 200);
}

#[test]
fn request_id_is_kept_when_well_formed_else_generated() {
    let sim = Sim::start("s", &[]);
    let gw = gateway_for(&sim.url, "connect: 1s");
    let (k, v) = auth();
    let r = gw.call(
        "POST",
        "/v1/chat/completions",
        &[(k, &v), ("x-request-id", "trace-abc.123")],
        br#"{"model":"m"}"#,
    );
    assert_eq!(r.header("x-request-id"), Some("trace-abc.123"));
    let sent = sim.requests();
    let hdrs = sent.last().unwrap()["headers"].as_array().unwrap().clone();
    assert!(
        hdrs.iter()
            .any(|h| h[0] == "x-request-id" && h[1] == "trace-abc.123"),
        "backend sees the same id"
    );
    let r = gw.call(
        "POST",
        "/v1/chat/completions",
        &[(k, &v), ("x-request-id", "bad id\twith junk")],
        br#"{"model":"m"}"#,
    );
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 32);
    // Errors carry one too.
    let r = gw.call("POST", "/v1/chat/completions", &[(k, &v)], b"{");
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn connect_timeout_is_504() {
    // A listener that never accepts, its queue filled: the kernel drops
    // further SYNs, so a connect hangs, as to a black-holed address.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        assert!(held.len() < 10_000, "the accept queue never filled");
    }
    let gw = gateway_for(&format!("http://{addr}"), "connect: 300ms");
    let start = Instant::now();
    gw.chat("m").assert_error(504, "backend_timeout");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    drop(listener);
}
