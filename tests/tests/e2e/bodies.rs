//! Request bodies up to the route's limit are routed by model and reach the
//! backend whole (past Pingora's 64 KiB retry buffer); one byte more is a 413.

use crate::harness::*;

fn gateway(sim: &Sim) -> Gateway {
    Gateway::start(&format!(
        r#"{auth}
backends:
  s: {{ kind: openai, url: "{url}/v1" }}
routes:
  chat:  {{ match: {{ path: /v1/chat/completions, models: [big] }}, targets: [ {{ backend: s }} ] }}
  small: {{ match: {{ path: /v1/chat/completions, models: [small] }}, targets: [ {{ backend: s }} ], max_body: 1KiB }}
"#,
        auth = auth_section(),
        url = sim.url
    ))
}

/// A chat request of exactly `len` bytes for `model`.
fn body_of(model: &str, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    let mut b = head.into_bytes();
    b.resize(len - tail.len(), b'x');
    b.extend_from_slice(tail.as_bytes());
    assert_eq!(b.len(), len);
    b
}

fn post(gw: &Gateway, body: &[u8]) -> Resp {
    gw.call(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ("content-type", "application/json"),
        ],
        body,
    )
}

#[test]
fn one_and_eight_mib_bodies_are_routed_and_delivered() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    for len in [1 << 20, 8 << 20] {
        let r = post(&gw, &body_of("big", len));
        assert_eq!(r.status, 200, "{len}: {}", r.text());
        let seen = sim.requests();
        let last = seen.last().unwrap();
        assert_eq!(
            last["body_bytes"], len,
            "the backend must get the whole body"
        );
        assert_eq!(last["model"], "big");
    }
}

#[test]
fn one_byte_over_the_limit_is_413() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    post(&gw, &body_of("big", (8 << 20) + 1)).assert_error(413, "request_too_large");
    // A route's own, smaller limit applies once the model picks the route.
    post(&gw, &body_of("small", 2048)).assert_error(413, "request_too_large");
    assert_eq!(post(&gw, &body_of("small", 1024)).status, 200);
    assert_eq!(
        sim.requests().len(),
        1,
        "rejected bodies never reach the backend"
    );
}

#[test]
fn chunked_request_body_over_the_limit_is_413() {
    use std::io::Write;
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    // No content-length: the limit is enforced while reading.
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..9 {
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = s.write_all(&chunk);
        let _ = s.write_all(b"\r\n");
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request_too_large"));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    use std::io::{Read, Write};
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    let body = body_of("big", 200_000);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The body is held back until the gateway says go on.
    let mut first = [0u8; 25];
    s.read_exact(&mut first)
        .expect("a 100 Continue before the body is sent");
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    s.write_all(&body).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert_eq!(sim.requests().last().unwrap()["body_bytes"], 200_000);
}
