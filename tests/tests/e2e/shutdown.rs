//! SIGTERM: stop accepting, let in-flight requests finish, exit promptly.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A chat request that asks to keep its connection: the answer's
/// `connection` header.
fn keep_alive_chat(gw: &Gateway) -> Option<String> {
    use std::io::Write;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("connection").map(str::to_string)
}

/// A request (a stream or not) on its own thread, returned once the backend has it
/// (a fixed sleep races with a loaded machine).
fn in_flight(gw: &Gateway, sim: &Sim, stream: bool) -> std::thread::JoinHandle<Resp> {
    let addr = gw.addr;
    let client = std::thread::spawn(move || {
        call(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
            json!({"model": "m", "stream": stream, "messages": []})
                .to_string()
                .as_bytes(),
        )
    });
    let start = Instant::now();
    while sim.stats()["requests"] != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the request never reached the backend"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    client
}

#[test]
fn sigterm_finishes_in_flight_streams_then_exits() {
    let sim = Sim::start("s", &["--tokens", "10", "--token-delay-ms", "150"]);
    let mut gw = Gateway::start(&one_backend(&sim.url, ""));
    let addr = gw.addr;
    let client = in_flight(&gw, &sim, true);
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

/// A stream still running when `grace_period` ends is not cut silently: it
/// ends with an `event: error` (`unavailable`, ask again), its access-log
/// line says `shutdown`, and the gateway exits about a second later at most.
#[test]
fn a_stream_past_the_grace_period_ends_with_an_error_event() {
    let sim = Sim::start("s", &["--tokens", "60", "--token-delay-ms", "100"]);
    let mut gw = Gateway::start(&format!(
        "server: {{ grace_period: 1s, drain_delay: 0s }}\n{}",
        one_backend(&sim.url, "")
    ));
    let client = in_flight(&gw, &sim, true);
    gw.proc.signal("TERM");
    let sent = Instant::now();
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert!(
        events.len() > 3,
        "some of the stream came first: {events:?}"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "unavailable", "{last}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("event: error"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("exits soon after its grace period");
    assert!(status.success());
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "took {:?}",
        sent.elapsed()
    );
    let log = gw.access_log(1);
    assert!(
        log.iter()
            .any(|l| l["stream"] == true && l["error"] == "shutdown"),
        "{log:?}"
    );
}

#[test]
fn drain_delay_fails_readiness_while_still_serving() {
    let sim = Sim::start("s", &[]);
    let mut gw = Gateway::start(&format!(
        "server: {{ threads: 1, grace_period: 5s, drain_delay: 3s }}\n{}",
        one_backend(&sim.url, "")
    ));
    assert_eq!(gw.admin_get("/readyz", None).status, 200);
    assert_ne!(keep_alive_chat(&gw).as_deref(), Some("close"));
    gw.proc.signal("TERM");
    let sent = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // Load balancers see the failing check while traffic is still served.
    let ready = gw.admin_get("/readyz", None);
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "draining");
    assert_eq!(gw.admin_get("/healthz", None).status, 200);
    // Served, each connection ending after its answer: a client reconnects
    // (through its load balancer, elsewhere) rather than find its
    // kept-alive connection closed under a request when the listener stops.
    assert_eq!(keep_alive_chat(&gw).as_deref(), Some("close"));
    assert!(
        sent.elapsed() < Duration::from_millis(2800),
        "checks took too long to mean anything"
    );
    // After the delay the listeners close and the idle process exits.
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the drain delay");
    assert!(status.success());
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "exited before the drain delay: {:?}",
        sent.elapsed()
    );
}

/// A stdout and a stderr nobody reads (a log shipper that hung: the pipes
/// are full and the log writers are stuck in `write`) neither slow requests
/// nor keep the process from exiting on SIGTERM: the exit waits a bounded
/// time for the logs, then goes without the lines that could not be
/// written. (`RUST_LOG=debug` fills stderr's pipe within a few requests.)
#[test]
fn a_blocked_stdout_and_stderr_do_not_hold_up_requests_or_the_exit() {
    let sim = Sim::start("s", &[]);
    let dir = TempDir::new();
    let (addr, admin) = (free_addr(), free_addr());
    let config = dir.path.join("skygate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\nadmin: {{ listen: {admin}, token: t-blocked-stdout }}\nserver: {{ threads: 2, grace_period: 5s, access_log: stdout }}\n{}",
            one_backend(&sim.url, "")
        ),
    )
    .unwrap();
    // stdout and stderr are pipes this test holds and never reads.
    let mut child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _unread = (child.stdout.take(), child.stderr.take());
    let ready = Instant::now();
    while try_call(admin, "GET", "/readyz", &[], b"").map_or(true, |r| r.status != 200) {
        assert!(ready.elapsed() < Duration::from_secs(20), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Far more log than a pipe holds (64 KiB: a few hundred lines); each
    // request still answers.
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let auth = format!("Bearer {CLIENT_KEY}");
    for i in 0..1500 {
        let r = call(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &auth)],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "request {i}");
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let sent = Instant::now();
    let exited = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if sent.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let status =
        exited.expect("exits within 10 s of SIGTERM although stdout and stderr are blocked");
    assert!(status.success(), "{status:?}");
}

/// A request still waiting for its backend's answer when `grace_period`
/// ends gets a 503 it may retry elsewhere (not a dropped connection), its
/// access-log line says `shutdown`, and the attempt is in its tries.
#[test]
fn a_request_still_waiting_when_the_grace_period_ends_gets_a_503() {
    let sim = Sim::start("s", &["--latency-ms", "20000"]);
    let mut gw = Gateway::start(&format!(
        "server: {{ grace_period: 1s, drain_delay: 0s }}\n{}",
        one_backend(&sim.url, "timeouts: { first_byte: 60s, total: 60s }")
    ));
    let client = in_flight(&gw, &sim, false);
    gw.proc.signal("TERM");
    let sent = Instant::now();
    let r = client.join().unwrap();
    r.assert_error(503, "unavailable");
    assert!(r.header("retry-after").is_some());
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(6))
        .expect("exits soon after its grace period");
    assert!(status.success());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
    let log = gw.access_log(1);
    let line = log.first().expect("the request's line");
    assert_eq!(line["status"], 503, "{line}");
    assert_eq!(line["error"], "shutdown", "{line}");
    assert_eq!(line["tries"][0]["outcome"], "shutdown", "{line}");
}

/// At shutdown a kept-alive connection waiting for its next request is
/// closed at once, while a stream in flight runs on to its end.
#[test]
fn an_idle_connection_is_closed_at_shutdown() {
    use std::io::{Read, Write};
    let sim = Sim::start("s", &["--tokens", "10", "--token-delay-ms", "300"]);
    let mut gw = Gateway::start(&one_backend(&sim.url, ""));
    let mut idle = std::net::TcpStream::connect(gw.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        idle,
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut idle).unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"), "kept alive");
    let client = in_flight(&gw, &sim, true);
    gw.proc.signal("TERM");
    let sent = Instant::now();
    let mut buf = [0u8; 64];
    let closed = match idle.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the idle connection is closed");
    assert!(
        !client.is_finished(),
        "closed while the stream still ran ({:?} after SIGTERM)",
        sent.elapsed()
    );
    let r = client.join().unwrap();
    assert!(r.complete && r.status == 200);
    assert!(gw.proc.wait_exit(Duration::from_secs(5)).is_some());
}
