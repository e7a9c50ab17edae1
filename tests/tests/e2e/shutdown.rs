//! SIGTERM: stop accepting, let in-flight requests finish, exit promptly.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn sigterm_finishes_in_flight_streams_then_exits() {
    let sim = Sim::start("s", &["--tokens", "10", "--token-delay-ms", "150"]);
    let mut gw = Gateway::start(&format!(
        r#"{auth}
backends:
  s: {{ kind: openai, url: "{url}/v1" }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}
"#,
        auth = auth_section(),
        url = sim.url
    ));
    let addr = gw.addr;
    let client = std::thread::spawn(move || {
        call(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
            json!({"model": "m", "stream": true, "messages": []})
                .to_string()
                .as_bytes(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    gw.proc.signal("TERM");
    let sent = Instant::now();

    // New connections are refused once the listener has stopped.
    let mut refused = false;
    while sent.elapsed() < Duration::from_secs(1) {
        if std::net::TcpStream::connect(addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "the proxy listener still accepts after SIGTERM");

    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(
        sse_data(&r.body).last().map(String::as_str),
        Some("[DONE]"),
        "the in-flight stream finished whole"
    );

    let status = gw
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("exits within a few seconds of SIGTERM");
    assert!(status.success());
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "took {:?}",
        sent.elapsed()
    );
    assert!(
        gw.access_log(1).iter().any(|l| l["stream"] == true),
        "the access log was flushed before exit"
    );
}
