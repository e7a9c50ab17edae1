//! SSE streaming: chunks arrive as the backend sends them; usage in the last
//! chunk; a stream that fails after its first byte ends with an error event.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

fn gateway(sim: &Sim, timeouts: &str) -> Gateway {
    Gateway::start(&one_backend(
        &sim.url,
        &format!("timeouts: {{ {timeouts} }}"),
    ))
}

fn stream_request(include_usage: bool) -> serde_json::Value {
    json!({"model": "m", "stream": true, "stream_options": {"include_usage": include_usage}, "messages": [{"role": "user", "content": "hi"}]})
}

#[test]
fn events_arrive_incrementally() {
    let sim = Sim::start("s", &["--tokens", "5", "--token-delay-ms", "300"]);
    let gw = gateway(&sim, "idle: 5s");
    let r = gw.post("/v1/chat/completions", &stream_request(false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.header("x-skygate-backend"), Some("s"));
    assert!(r.complete);
    let token_chunks: Vec<_> = r
        .chunks
        .iter()
        .filter(|(_, c)| String::from_utf8_lossy(c).contains("\"content\":\""))
        .collect();
    assert!(token_chunks.len() >= 2, "{:?}", r.text());
    // Tokens leave the backend 300 ms apart. Had the gateway buffered the
    // stream, they would arrive together; passed through, the first token
    // arrives long before the last one is even produced.
    let first = token_chunks
        .iter()
        .find(|(_, c)| String::from_utf8_lossy(c).contains("serverless"))
        .unwrap()
        .0;
    let last = token_chunks.last().unwrap().0;
    assert!(
        last.duration_since(first) >= Duration::from_millis(900),
        "spread {:?}",
        last.duration_since(first)
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn usage_arrives_in_the_last_chunk_and_is_logged() {
    let sim = Sim::start("s", &["--tokens", "7"]);
    let gw = gateway(&sim, "idle: 5s");
    let r = gw.post("/v1/chat/completions", &stream_request(true));
    assert_eq!(r.status, 200);
    let data = sse_data(&r.body);
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 7);
    let log = gw.access_log(1);
    let line = log
        .iter()
        .find(|l| l["stream"] == true)
        .expect("access log line");
    assert_eq!(line["completion_tokens"], 7);
    assert!(line["ttfb_ms"].as_f64().is_some());

    // A client that did not ask for usage (no limit, no cache here): the
    // gateway asks the backend anyway, counts the tokens, and leaves the
    // usage chunk out of the client's stream.
    let tokens = || {
        gw.metric("skygate_tokens_total{kind=\"completion\",route=\"chat\"}")
            .unwrap_or(0.0)
    };
    let before = tokens();
    for body in [
        stream_request(false),
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let r = gw.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200);
        let data = sse_data(&r.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        assert!(
            !data.iter().any(|d| d.contains("\"usage\":{")),
            "a usage chunk nobody asked for: {data:?}"
        );
    }
    let log = gw.access_log(3);
    for line in &log[1..] {
        assert_eq!(line["completion_tokens"], 7, "{line}");
        assert!(line["prompt_tokens"].as_u64().is_some(), "{line}");
    }
    assert!(eventually(Duration::from_secs(3), || tokens() == before + 14.0));
    for q in sim.requests() {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD
            .decode(q["body_b64"].as_str().unwrap())
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true, "{body}");
    }
}

/// A backend that refuses `stream_options` (`stream_usage: false`) gets
/// streams without it, the client's own included: the stream works, with
/// no usage.
#[test]
fn a_backend_without_stream_usage_gets_no_stream_options() {
    let sim = Sim::start("s", &["--tokens", "3"]);
    let gw = Gateway::start(&one_backend(&sim.url, "stream_usage: false"));
    for body in [stream_request(true), stream_request(false)] {
        let r = gw.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let data = sse_data(&r.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        assert!(!data.iter().any(|d| d.contains("\"usage\":{")), "{data:?}");
    }
    for q in sim.requests() {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD
            .decode(q["body_b64"].as_str().unwrap())
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body.get("stream_options").is_none(), "{body}");
        assert_eq!(body["stream"], true, "{body}");
    }
}

#[test]
fn cut_mid_stream_ends_with_an_error_event() {
    let sim = Sim::start("s", &["--tokens", "10", "--cut-rate", "1"]);
    let gw = gateway(&sim, "idle: 5s");
    let r = gw.post("/v1/chat/completions", &stream_request(false));
    assert_eq!(r.status, 200);
    assert!(
        r.complete,
        "the client must see a clean end, not a dropped connection"
    );
    let text = r.text();
    assert!(text.contains("event: error"), "{text}");
    let last: serde_json::Value = serde_json::from_str(sse_data(&r.body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "backend_error");
    assert!(!text.contains("[DONE]"));
}

#[test]
fn idle_backend_mid_stream_times_out_with_an_error_event() {
    let sim = Sim::start("s", &["--tokens", "3", "--token-delay-ms", "2000"]);
    let gw = gateway(&sim, "idle: 300ms");
    let start = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &stream_request(false));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(r.status, 200);
    let last: serde_json::Value = serde_json::from_str(sse_data(&r.body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "backend_timeout");
}

#[test]
fn total_timeout_caps_a_slow_stream() {
    // Each token comes within the idle timeout, but the whole stream would
    // take 2 s: the total timeout (700 ms) ends it with an error event.
    let sim = Sim::start("s", &["--tokens", "10", "--token-delay-ms", "200"]);
    let gw = gateway(&sim, "idle: 1s, total: 700ms");
    let start = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &stream_request(false));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1800),
        "took {took:?}"
    );
    let last: serde_json::Value = serde_json::from_str(sse_data(&r.body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "backend_timeout");
    assert!(
        last["error"]["message"].as_str().unwrap().contains("total"),
        "{last}"
    );
}

/// A raw connection that has sent a stream request.
fn stream_over_raw_socket(gw: &Gateway) -> std::net::TcpStream {
    use std::io::Write;
    let body = stream_request(false).to_string();
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// The stream's access-log line, within `within`.
fn stream_line(gw: &Gateway, within: Duration) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        if let Some(l) = gw.access_log(1).into_iter().find(|l| l["stream"] == true) {
            return l;
        }
        assert!(start.elapsed() < within, "no access-log line");
    }
}

/// A client that stops reading is cut off after `server.timeouts.write`,
/// and the access log says why.
#[test]
fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    // More events than the socket buffers between gateway and client hold.
    let sim = Sim::start("s", &["--tokens", "400000"]);
    let gw = Gateway::start(&format!(
        "server: {{ threads: 2, grace_period: 5s, timeouts: {{ write: 1s }} }}\n{}",
        one_backend(&sim.url, "timeouts: { idle: 30s, total: 60s }")
    ));
    let s = stream_over_raw_socket(&gw); // never read
    let line = stream_line(&gw, Duration::from_secs(30));
    assert_eq!(line["status"], 200);
    assert_eq!(line["error"], "client_write_timeout");
    drop(s);
}

#[test]
fn client_gone_mid_stream_is_logged() {
    use std::io::Read;
    let sim = Sim::start("s", &["--tokens", "40", "--token-delay-ms", "50"]);
    let gw = gateway(&sim, "idle: 5s");
    let mut s = stream_over_raw_socket(&gw);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("serverless") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let start = std::time::Instant::now();
    let line = stream_line(&gw, Duration::from_secs(5));
    assert_eq!(line["status"], 200);
    assert_eq!(line["error"], "client_closed");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the gateway noticed late: {:?}",
        start.elapsed()
    );
}

/// A client that gives up before its answer's first byte (an SDK's
/// timeout) is noticed while the backend still works on it: the upstream
/// call is dropped, the access log says `client_closed` with nginx's 499
/// long before the backend would have answered, and the backend's breaker
/// is not charged for it.
#[test]
fn a_client_that_leaves_before_the_first_byte_is_noticed() {
    let sim = Sim::start("s", &["--latency-ms", "4000"]);
    // One judged failure would open this breaker.
    let gw = Gateway::start(&one_backend(
        &sim.url,
        "timeouts: { first_byte: 10s, total: 30s }, breaker: { consecutive_failures: 1 }",
    ));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
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
    let start = std::time::Instant::now();
    while sim.stats()["requests"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "no request");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    let left = std::time::Instant::now();
    let line = gw
        .access_log(1)
        .into_iter()
        .next()
        .expect("an access-log line");
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["error"], "client_closed", "{line}");
    assert_eq!(line["tries"][0]["outcome"], "client_closed", "{line}");
    assert_eq!(line["tries"][0]["backend"], "s", "{line}");
    assert!(
        left.elapsed() < Duration::from_millis(2500),
        "noticed only after {:?} (the backend answers at 4 s)",
        left.elapsed()
    );
    let status = gw.backend_status("s");
    assert_eq!(status["breaker"]["state"], "closed", "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
}
