//! The edge against hostile and slow clients, over raw sockets where it is
//! about framing or timing: malformed chunked bodies close the connection
//! (no request smuggling), header/body/keep-alive timeouts, the server-wide
//! body budget, dot-segments in function paths, bounded echoes of client
//! values, the Bearer scheme in any case, `content-encoding` to functions.

use crate::harness::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "/v1/functions/anomaly-score";

/// A function route (`PREFIX` → `{sim}/functions/anomaly`) and the chat
/// route of `one_backend`, behind `server`.
fn gateway(sim: &Sim, server: &str) -> Gateway {
    Gateway::start(&format!(
        r#"server: {{ threads: 2, grace_period: 5s{server} }}
{auth}backends:
  s: {{ kind: openai, url: "{url}/v1" }}
  f: {{ kind: http_function, url: "{url}/functions/anomaly" }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}
  anomaly: {{ match: {{ path_prefix: {PREFIX} }}, targets: [ {{ backend: f }} ] }}
"#,
        auth = auth_section(),
        url = sim.url
    ))
}

fn bearer() -> String {
    format!("authorization: Bearer {CLIENT_KEY}\r\n")
}

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The gateway closed it (FIN).
    Eof,
    /// The gateway reset it.
    Reset,
    /// Still open when the wait ended.
    Open,
}

/// Everything the gateway sends until it closes the connection, waiting at
/// most `limit`.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, End) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let Some(left) = limit.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
            return (out, End::Open);
        };
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, End::Open)
            }
            Err(_) => return (out, End::Reset),
        }
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.json()["error"]["code"], code);
    }
}

/// The complete responses at the start of `buf` (all with `content-length`
/// bodies, as the gateway's own answers are); 1xx responses are skipped.
fn answers(mut buf: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(len)) = r.parse(buf) else {
            return out;
        };
        let status = r.code.unwrap_or(0);
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let body_len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        if buf.len() < len + body_len {
            return out;
        }
        if status >= 200 {
            out.push(Answer {
                status,
                headers,
                body: buf[len..len + body_len].to_vec(),
            });
        }
        buf = &buf[len + body_len..];
    }
}

/// Reads until one whole response is in, leaving the connection open.
fn next_answer(s: &mut TcpStream) -> Answer {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(a) = answers(&got).into_iter().next() {
            return a;
        }
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response");
        got.extend_from_slice(&buf[..n]);
    }
}

/// One answer, `connection: close`, then the connection closed.
fn assert_one_answer_then_close(s: &mut TcpStream, what: &str) -> Answer {
    let (bytes, end) = read_to_close(s, Duration::from_secs(10));
    let all = answers(&bytes);
    assert_eq!(
        all.len(),
        1,
        "{what}: exactly one response, got: {}",
        String::from_utf8_lossy(&bytes)
    );
    let a = all.into_iter().next().unwrap();
    assert_eq!(a.header("connection"), Some("close"), "{what}");
    assert_eq!(end, End::Eof, "{what}: the gateway closes the connection");
    a
}

fn sim_paths(sim: &Sim) -> Vec<String> {
    sim.requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn malformed_chunked_bodies_close_the_connection() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    // Blank lines (which a request parser skips) push the hidden request past
    // Pingora's first 4 KiB read: it is still in the socket after the bad chunk.
    let smuggled = format!(
        "{}GET {PREFIX}/SMUGGLED HTTP/1.1\r\nhost: x\r\n{}\r\n",
        "\r\n".repeat(4096),
        bearer()
    );
    for (name, body) in [
        ("non-hex size", "zz\r\n".to_string()),
        (
            "overflowing size",
            "ffffffffffffffff0\r\nx\r\n\r\n".to_string(),
        ),
        ("signed size", "+5\r\nhello\r\n0\r\n\r\n".to_string()),
        ("no CRLF after data", "5\r\nhelloXX0\r\n\r\n".to_string()),
    ] {
        let mut s = connect(&gw);
        let req = format!(
            "POST {PREFIX} HTTP/1.1\r\nhost: x\r\n{}transfer-encoding: chunked\r\n\r\n{body}{smuggled}",
            bearer()
        );
        // One send: the hidden request follows the bad chunk in the same segment.
        s.write_all(req.as_bytes()).unwrap();
        let a = assert_one_answer_then_close(&mut s, name);
        a.assert_error(400, "invalid_request");
    }
    // The OpenAI path reads bodies the same way.
    let mut s = connect(&gw);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{}transfer-encoding: chunked\r\n\r\nzz\r\n{smuggled}",
        bearer()
    );
    s.write_all(req.as_bytes()).unwrap();
    assert_one_answer_then_close(&mut s, "chat").assert_error(400, "invalid_request");

    assert!(
        !sim_paths(&sim).iter().any(|p| p.contains("SMUGGLED")),
        "the backend must never see the hidden request: {:?}",
        sim_paths(&sim)
    );
    // A well-formed chunked body still works, and keeps the connection.
    let mut s = connect(&gw);
    let req = format!(
        "POST {PREFIX}/ok HTTP/1.1\r\nhost: x\r\n{}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        bearer()
    );
    s.write_all(req.as_bytes()).unwrap();
    let a = next_answer(&mut s);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("keep-alive"));
    assert_eq!(sim.requests().last().unwrap()["body_bytes"], 5);
}

const SLOW: &str = ", timeouts: { header_read: 1s, body_read: 500ms, keepalive: 1s }";

/// Sends `bytes` one at a time, `gap` apart, until the gateway closes the
/// connection; returns when it did, measured from `start`.
fn trickle_until_closed(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> Option<Duration> {
    let start = Instant::now();
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).is_err() {
            return Some(start.elapsed());
        }
        let (got, end) = read_to_close(s, gap);
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        if end != End::Open {
            return Some(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return None;
        }
    }
    None
}

#[test]
fn a_trickled_header_is_cut_off() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, SLOW);
    // A header that never ends, one byte every 100 ms.
    let endless = b"GET /v1/models HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut s = connect(&gw);
    let took = trickle_until_closed(&mut s, endless, Duration::from_millis(100))
        .expect("the gateway must close a connection whose header never ends");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "closed after {took:?}; header_read is 1s"
    );

    // The same on a kept-alive connection: the next header must be in
    // within keepalive (1 s) of the previous response.
    let mut s = connect(&gw);
    let req = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\n{}\r\n", bearer());
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(next_answer(&mut s).status, 200);
    let took = trickle_until_closed(&mut s, endless, Duration::from_millis(100))
        .expect("a kept-alive connection is cut off too");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

/// The admin listener has the proxy's header deadlines and caps on its
/// connections: trickled headers and piles of idle connections cannot hold
/// it (and the process's descriptors) for ever, and one client address
/// cannot take every place (the orchestrator's probes need theirs).
#[test]
fn the_admin_listener_cuts_off_slow_and_surplus_clients() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, SLOW);
    let admin = || {
        let s = TcpStream::connect(gw.admin).unwrap();
        s.set_nodelay(true).unwrap();
        s
    };
    let endless = b"GET /admin/routes HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    // Closed within header_read (1 s); cut off by trickle_until_closed's
    // own 10 s bound otherwise.
    trickle_until_closed(&mut admin(), endless, Duration::from_millis(100))
        .expect("the admin listener must close a connection whose header never ends");

    // One address past its share (32: `server::ADMIN_CONNECTIONS`): new
    // connections from it are closed at once, while another address (a
    // probe) still gets in. A gateway with the usual 10 s header_read, so
    // the held ones stay.
    let gw = gateway(&sim, "");
    let admin = || {
        let s = TcpStream::connect(gw.admin).unwrap();
        s.set_nodelay(true).unwrap();
        s
    };
    let mut held: Vec<TcpStream> = (0..32).map(|_| admin()).collect();
    // The listener takes them in on its own time: more are held until it
    // has counted enough to close one at once.
    let refused = (0..64).any(|_| {
        let mut extra = admin();
        let (_, end) = read_to_close(&mut extra, Duration::from_millis(500));
        if end == End::Open {
            held.push(extra);
            false
        } else {
            true
        }
    });
    assert!(refused, "{} connections from one address held", held.len());
    let probe = from_other_address(gw.admin);
    let r = raw_get(probe, "/healthz");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(held);
    let auth = format!("Bearer {}", gw.admin_token);
    assert!(eventually(Duration::from_secs(3), || try_call(
        gw.admin,
        "GET",
        "/admin/routes",
        &[("authorization", &auth)],
        b""
    )
    .is_ok_and(|r| r.status == 200)));
    // The token once, not twice (a proxy in front may read another one).
    let r = call(
        gw.admin,
        "GET",
        "/admin/routes",
        &[("authorization", &auth), ("authorization", "Bearer x")],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_admin_token");
}

/// A connection to `to` from 127.0.0.2 (any 127/8 address is this host's).
fn from_other_address(to: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// `GET path` on `s` (connection: close), the whole answer as text.
fn raw_get(mut s: TcpStream, path: &str) -> String {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5));
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn idle_keepalive_connections_are_closed() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, SLOW);
    let req = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\n{}\r\n", bearer());
    let mut s = connect(&gw);
    // Requests 600 ms apart: each within keep-alive, and the connection
    // outlives header_read (the timer restarts with each response).
    for _ in 0..3 {
        s.write_all(req.as_bytes()).unwrap();
        let a = next_answer(&mut s);
        assert_eq!(a.status, 200);
        assert_eq!(a.header("connection"), Some("keep-alive"));
        let (got, end) = read_to_close(&mut s, Duration::from_millis(600));
        assert_eq!((got.len(), end), (0, End::Open));
    }
    // Then idle past keep-alive (1 s): closed.
    let start = Instant::now();
    let (got, end) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(got.is_empty());
    assert_eq!(end, End::Eof);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // A connection that never sends anything is held no longer than a header.
    let mut idle = connect(&gw);
    let (_, end) = read_to_close(&mut idle, Duration::from_secs(5));
    assert_eq!(end, End::Eof);
}

#[test]
fn a_stalled_body_is_408_and_closed() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, SLOW);
    // Declares 1 MiB, sends a little, stalls.
    let mut s = connect(&gw);
    let head = format!(
        "POST {PREFIX} HTTP/1.1\r\nhost: x\r\n{}content-length: {}\r\n\r\n",
        bearer(),
        1 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'x'; 1000]).unwrap();
    let start = Instant::now();
    let a = assert_one_answer_then_close(&mut s, "stalled");
    a.assert_error(408, "request_timeout");
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Trickled with pauses shorter than body_read: slow, but alive. The
    // whole body takes longer than body_read; no pause does.
    let mut s = connect(&gw);
    let head = format!(
        "POST {PREFIX}/slow HTTP/1.1\r\nhost: x\r\n{}content-length: 50\r\n\r\n",
        bearer()
    );
    s.write_all(head.as_bytes()).unwrap();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(250));
        s.write_all(&[b'y'; 10]).unwrap();
    }
    assert_eq!(next_answer(&mut s).status, 200);
    // Then a pause longer than body_read, mid-body: 408.
    let head = format!(
        "POST {PREFIX}/slow HTTP/1.1\r\nhost: x\r\n{}content-length: 50\r\n\r\n",
        bearer()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'y'; 10]).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    s.write_all(&[b'y'; 10]).unwrap();
    assert_one_answer_then_close(&mut s, "paused").assert_error(408, "request_timeout");
    assert_eq!(
        sim_paths(&sim),
        vec!["/functions/anomaly/slow".to_string()],
        "only the whole body reached the backend"
    );
}

/// Sends a request header for a body of `len` bytes with
/// `expect: 100-continue`. `Ok` when the gateway said go on (the body's
/// bytes are then reserved); else its answer, read to the close.
fn expect_continue(s: &mut TcpStream, path: &str, len: usize) -> Result<(), (Vec<u8>, End)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{}content-length: {len}\r\nexpect: 100-continue\r\n\r\n",
        bearer()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut first = vec![0u8; CONTINUE.len()];
    s.read_exact(&mut first).unwrap();
    if first == CONTINUE {
        return Ok(());
    }
    let (rest, end) = read_to_close(s, Duration::from_secs(10));
    first.extend_from_slice(&rest);
    Err((first, end))
}

#[test]
fn the_body_budget_bounds_buffered_bodies() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, ", body_budget: 1MiB, body_budget_wait: 2s");
    const KIB: usize = 1024;
    let post = |path: &str, body: &[u8]| {
        gw.call(
            "POST",
            &format!("{PREFIX}/{path}"),
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
            body,
        )
    };

    // Four slow clients declare 800 KiB each and send 1 KiB: each holds
    // 64 KiB of the budget, not what it declared (reserved whole, the
    // first would have held 800 KiB and the others waited, and a few such
    // clients could starve everyone's bodies).
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut c = connect(&gw);
            expect_continue(&mut c, &format!("{PREFIX}/slow{i}"), 800 * KIB).unwrap();
            c.write_all(&[b'x'; KIB]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = post("mid", &vec![b'm'; 500 * KIB]);
    assert_eq!(r.status, 200, "room beside the slow clients: {}", r.text());
    slow.clear();
    std::thread::sleep(Duration::from_millis(300));

    // A holds 800 KiB of the 1 MiB budget (it sent 700 KiB of them) while
    // it sends slowly.
    let mut a = connect(&gw);
    expect_continue(&mut a, &format!("{PREFIX}/a"), 800 * KIB).unwrap();
    a.write_all(&vec![b'a'; 700 * KIB]).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // B declares 600 KiB: it may start, but runs out of room as its body
    // comes, and none comes within body_budget_wait → 503.
    let declared = std::thread::spawn({
        let addr = gw.addr;
        move || {
            let mut b = TcpStream::connect(addr).unwrap();
            expect_continue(&mut b, &format!("{PREFIX}/b"), 600 * KIB).expect("64 KiB fit: go on");
            let _ = b.write_all(&vec![b'b'; 600 * KIB]);
            read_to_close(&mut b, Duration::from_secs(10))
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile a small body fits and passes.
    let start = Instant::now();
    let small = post("small", &[b's'; KIB]);
    assert_eq!(small.status, 200, "{}", small.text());
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "the small body did not queue behind the large one"
    );
    // C, chunked, concurrent with B: reserves as its chunk arrives, runs
    // out of room → 503 too.
    let chunked = std::thread::spawn({
        let addr = gw.addr;
        move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let head = format!(
                "POST {PREFIX}/c HTTP/1.1\r\nhost: x\r\n{}transfer-encoding: chunked\r\n\r\n{:x}\r\n",
                bearer(),
                600 * KIB
            );
            c.write_all(head.as_bytes()).unwrap();
            let _ = c.write_all(&vec![b'c'; 600 * KIB]);
            let _ = c.write_all(b"\r\n0\r\n\r\n");
            read_to_close(&mut c, Duration::from_secs(10))
        }
    });

    for (what, (bytes, end)) in [
        ("declared", declared.join().unwrap()),
        ("chunked", chunked.join().unwrap()),
    ] {
        let all = answers(&bytes);
        assert_eq!(all.len(), 1, "{what}: {}", String::from_utf8_lossy(&bytes));
        all[0].assert_error(503, "overloaded");
        assert!(all[0].header("retry-after").is_some(), "{what}");
        assert_eq!(all[0].header("connection"), Some("close"), "{what}");
        assert_ne!(end, End::Open, "{what}: the connection is closed");
    }

    // Larger than the whole budget (but within max_body): refused at once,
    // without waiting for room that can never come.
    let start = Instant::now();
    let mut d = connect(&gw);
    let (bytes, _) = expect_continue(&mut d, &format!("{PREFIX}/d"), 2 << 20).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(1500));
    let all = answers(&bytes);
    assert_eq!(all.len(), 1);
    all[0].assert_error(503, "overloaded");

    // A finishes: served, and its bytes go back to the budget.
    a.write_all(&vec![b'a'; 100 * KIB]).unwrap();
    let done = next_answer(&mut a);
    assert_eq!(done.status, 200);
    drop(a);
    let r = post("after", &vec![b'e'; 1000 * KIB]);
    assert_eq!(r.status, 200, "the budget is free again: {}", r.text());
    let paths = sim_paths(&sim);
    assert_eq!(
        paths,
        [
            "/functions/anomaly/mid",
            "/functions/anomaly/small",
            "/functions/anomaly/a",
            "/functions/anomaly/after"
        ],
        "refused bodies never reach the backend"
    );
}

#[test]
fn dot_segments_cannot_leave_the_function_prefix() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    let auth = format!("Bearer {CLIENT_KEY}");
    let h = [("authorization", auth.as_str())];
    for suffix in [
        "/../../x",
        "/..",
        "/a/../../x",
        "/%2e%2e/x",
        "/%2E%2e/x",
        "/.%2e/x",
        "/%2e./x",
        "/a/./%2e%2e/%2e%2e/x",
        "/..%2f..%2fx",
        "/..%2F",
        "/a/b%2f..",
        "/..%5c..%5cx",
        "/..;/x",
        "/a/..;jsessionid=1/..;/x",
    ] {
        // The harness writes the path as is (curl would resolve it first).
        gw.call("POST", &format!("{PREFIX}{suffix}"), &h, b"{}")
            .assert_error(400, "invalid_request");
    }
    assert!(sim.requests().is_empty(), "{:?}", sim_paths(&sim));

    // Dot-segments that stay under the prefix are resolved before the
    // backend sees the path; other segments pass as written.
    for (suffix, upstream) in [
        ("/a/./b/../c?q=1", "/functions/anomaly/a/c?q=1"),
        ("/a/./../c", "/functions/anomaly/c"),
        ("/a/%2e/b/%2E%2E/", "/functions/anomaly/a/"),
        ("/x%2fy/..", "/functions/anomaly/"),
        ("/v1.2/file.txt", "/functions/anomaly/v1.2/file.txt"),
        ("/a%20b/%41", "/functions/anomaly/a%20b/%41"),
    ] {
        let r = gw.call("POST", &format!("{PREFIX}{suffix}"), &h, b"{}");
        assert_eq!(r.status, 200, "{suffix}: {}", r.text());
        assert_eq!(sim.requests().last().unwrap()["path"], upstream, "{suffix}");
    }
}

/// A route nested under another's prefix cannot be reached through the
/// outer route (its policy, auth and limits) by a path that resolves into
/// it: `.`/`..` segments or an escaped letter.
#[test]
fn a_nested_route_is_not_reached_through_its_parent() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&format!(
        r#"{auth}backends:
  f: {{ kind: http_function, url: "{url}/svc" }}
  g: {{ kind: http_function, url: "{url}/svc/admin" }}
routes:
  public: {{ match: {{ path_prefix: /v1/functions/svc }}, targets: [ {{ backend: f }} ] }}
  private: {{ match: {{ path_prefix: /v1/functions/svc/admin }}, targets: [ {{ backend: g }} ], limits: {{ requests_per_minute: 1 }} }}
"#,
        auth = auth_section(),
        url = sim.url,
    ));
    let auth = format!("Bearer {CLIENT_KEY}");
    let h = [("authorization", auth.as_str())];
    // As written, the inner route answers for itself: its limit, one a
    // minute, holds.
    let r = gw.call("POST", "/v1/functions/svc/admin/secret", &h, b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    gw.call("POST", "/v1/functions/svc/admin/secret", &h, b"{}")
        .assert_error(429, "rate_limit_exceeded");
    assert_eq!(sim.requests().len(), 1);
    for path in [
        "/v1/functions/svc/x/../admin/secret",
        "/v1/functions/svc/./admin/secret",
        "/v1/functions/svc/%61dmin/secret",
        "/v1/functions/svc/%2e/admin/secret",
        // What frameworks read loosely: `//`, `;parameters`, letter case.
        "/v1/functions/svc//admin/secret",
        "/v1/functions/svc/admin;x/secret",
        "/v1/functions/svc/ADMIN/secret",
    ] {
        gw.call("POST", path, &h, b"{}")
            .assert_error(400, "invalid_request");
    }
    assert_eq!(sim.requests().len(), 1, "{:?}", sim_paths(&sim));
    // What resolves within the outer route still goes through.
    for (path, upstream) in [
        ("/v1/functions/svc/a/../b", "/svc/b"),
        ("/v1/functions/svc/%61", "/svc/%61"),
        ("/v1/functions/svc/Other//x/", "/svc/Other//x/"),
    ] {
        let r = gw.call("POST", path, &h, b"{}");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(sim.requests().last().unwrap()["path"], upstream, "{path}");
    }
}

#[test]
fn client_values_are_not_echoed_whole() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    let model = "m".repeat(1 << 20);
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": model, "messages": []}),
    );
    r.assert_error(404, "model_not_found");
    assert!(r.body.len() < 1024, "a {} byte answer", r.body.len());
    assert!(r.text().contains("…(truncated)"));

    // (Pingora takes paths up to the `http` crate's 64 KiB URI limit.)
    let path = format!("/v1/{}", "p".repeat(32 * 1024));
    let auth = format!("Bearer {CLIENT_KEY}");
    let r = gw.call("POST", &path, &[("authorization", &auth)], b"{}");
    r.assert_error(404, "not_found");
    assert!(r.body.len() < 1024, "a {} byte answer", r.body.len());
    // A model asked for by path (`GET /v1/models/{model}`), as long.
    let path = format!("/v1/models/{}", "q".repeat(32 * 1024));
    let r = gw.call("GET", &path, &[("authorization", &auth)], b"");
    r.assert_error(404, "model_not_found");
    assert!(r.body.len() < 1024, "a {} byte answer", r.body.len());
    assert!(r.text().contains("…(truncated)"));

    gw.access_log(3);
    let out = gw.proc.stdout();
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("not_found")).collect();
    assert_eq!(lines.len(), 3, "{out:.2000}");
    for l in lines {
        assert!(l.len() < 2048, "a {} byte access-log line", l.len());
        assert!(l.contains("…(truncated)"));
    }
}

#[test]
fn bearer_scheme_in_any_case() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    for scheme in ["BEARER", "bearer", "BeArEr"] {
        let auth = format!("{scheme} {CLIENT_KEY}");
        let r = gw.call(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json!({"model": "m", "messages": []}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
}

#[test]
fn content_encoding_reaches_functions() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    let auth = format!("Bearer {CLIENT_KEY}");
    // A gzip member (of "hi\n"): the gateway passes it on untouched.
    let gz: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0xc8, 0xe4, 0x02, 0x00,
        0x7a, 0x7a, 0x6f, 0xed, 0x03, 0x00, 0x00, 0x00,
    ];
    let r = gw.call(
        "POST",
        PREFIX,
        &[
            ("authorization", &auth),
            ("content-type", "text/plain"),
            ("content-encoding", "gzip"),
        ],
        gz,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = sim.requests();
    let last = seen.last().unwrap();
    assert_eq!(last["body_bytes"], gz.len());
    assert!(
        last["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "content-encoding" && h[1] == "gzip"),
        "{last}"
    );
}

/// The response head as written: Skygate's headers set straight in the
/// header map (no case map), so names go out lower case, the few Pingora
/// knows title case, each once; the same for the gateway's own answers.
#[test]
fn response_header_names_as_written() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    let body = json!({"model": "m", "messages": []}).to_string();
    let titled = [
        "Content-Type",
        "Content-Length",
        "Date",
        "Server",
        "Connection",
        "Transfer-Encoding",
    ];
    for (auth, status, backend) in [(bearer(), 200, true), (String::new(), 401, false)] {
        let mut s = connect(&gw);
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (bytes, _) = read_to_close(&mut s, Duration::from_secs(10));
        let text = String::from_utf8_lossy(&bytes);
        let head = &text[..text.find("\r\n\r\n").expect("a whole head")];
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        let names: Vec<&str> = head
            .lines()
            .skip(1)
            .map(|l| l.split(':').next().unwrap())
            .collect();
        for n in &names {
            assert!(
                titled.contains(n) || *n == n.to_ascii_lowercase(),
                "`{n}` in\n{head}"
            );
            let same = names.iter().filter(|m| m.eq_ignore_ascii_case(n)).count();
            assert_eq!(same, 1, "`{n}` more than once in\n{head}");
        }
        assert!(names.contains(&"x-request-id"), "{head}");
        assert!(head.contains("\r\nx-skygate-cache: bypass"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: application/json"),
            "{head}"
        );
        assert_eq!(head.contains("\r\nx-skygate-backend: s"), backend, "{head}");
        let attempts = if backend { "1" } else { "0" };
        assert!(
            head.contains(&format!("\r\nx-skygate-attempts: {attempts}")),
            "{head}"
        );
    }
}

/// A backend over a raw socket that writes a mixed-case header and its own
/// reason phrase: the name reaches the client lower case, the phrase as
/// sent, and the limits' `x-ratelimit-*` are there, each header once.
#[test]
fn a_backends_header_names_and_reason_phrase() {
    let addr = raw_backend(|| {
        let body = r#"{"id":"c-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        format!(
            "HTTP/1.1 200 Very OK\r\nContent-Type: application/json\r\nX-Backend-Thing: Yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let gw = Gateway::start(&format!(
        r#"{auth}backends:
  raw: {{ kind: openai, url: "http://{addr}/v1" }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: raw }} ] }}
limits:
  - {{ name: rpm, requests_per_minute: 1000 }}
  - {{ name: tpm, tokens_per_minute: 100000 }}
"#,
        auth = auth_section()
    ));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut s = connect(&gw);
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        bearer(),
        body.len()
    )
    .unwrap();
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&bytes);
    let head = &text[..text.find("\r\n\r\n").expect("a whole head")];
    assert!(head.starts_with("HTTP/1.1 200 Very OK\r\n"), "{head}");
    assert!(head.contains("\r\nx-backend-thing: Yes\r\n"), "{head}");
    assert!(head.contains("\r\nx-skygate-backend: raw"), "{head}");
    for name in [
        "x-ratelimit-limit-requests: 1000",
        "x-ratelimit-remaining-requests: 999",
        "x-ratelimit-reset-requests: ",
        "x-ratelimit-limit-tokens: 100000",
        "x-ratelimit-remaining-tokens: ",
        "x-ratelimit-reset-tokens: ",
    ] {
        assert_eq!(
            head.matches(&format!("\r\n{name}")).count(),
            1,
            "{name} in\n{head}"
        );
    }
    let lower = head.to_ascii_lowercase();
    for name in [
        "x-request-id:",
        "x-skygate-cache:",
        "content-type:",
        "x-backend-thing:",
    ] {
        assert_eq!(
            lower.matches(&format!("\r\n{name}")).count(),
            1,
            "{name} in\n{head}"
        );
    }
}

/// Per backend connection: requests on it, and whether it was closed.
type Conns = Arc<Mutex<Vec<(u32, bool)>>>;

/// A backend over a raw socket that keeps every connection open and
/// answers each request on it (`Connection: close` on each answer when
/// `close` is set, without closing): per connection, how many requests
/// came, and whether the gateway closed it.
fn keeping_backend(close: bool) -> (std::net::SocketAddr, Conns) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns: Conns = Arc::default();
    let seen = conns.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let seen = seen.clone();
            let i = {
                let mut v = seen.lock().unwrap();
                v.push((0, false));
                v.len() - 1
            };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    let n = c.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        seen.lock().unwrap()[i].1 = true;
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if got.len() < end + 4 + len {
                        continue;
                    }
                    got.drain(..end + 4 + len);
                    seen.lock().unwrap()[i].0 += 1;
                    let body = r#"{"id":"c-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
                        body.len(),
                        if close { "connection: close\r\n" } else { "" }
                    );
                    if c.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// An HTTP/1.1 backend connection goes back to the pool when kept alive,
/// and is closed by the gateway (never reused) when the backend's answer
/// says `Connection: close`, even if the backend leaves it open.
#[test]
fn backend_connections_pooled_or_closed_as_the_backend_says() {
    for close in [false, true] {
        let (addr, conns) = keeping_backend(close);
        let gw = Gateway::start(&format!(
            r#"{auth}backends:
  raw: {{ kind: openai, url: "http://{addr}/v1" }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: raw }} ] }}
"#,
            auth = auth_section()
        ));
        for _ in 0..3 {
            let r = gw.chat("m");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        if close {
            // Each request on a new connection, and each one closed by the
            // gateway once its answer was read.
            assert!(
                eventually(Duration::from_secs(5), || {
                    let v = conns.lock().unwrap();
                    v.len() == 3 && v.iter().all(|&(n, closed)| n == 1 && closed)
                }),
                "{:?}",
                conns.lock().unwrap()
            );
        } else {
            let v = conns.lock().unwrap();
            assert_eq!(*v, vec![(3, false)], "one kept-alive connection, reused");
        }
    }
}

/// Over a raw socket, as a client that writes its own header: an HTTP/1.1
/// request without exactly one Host, or with two Authorization headers
/// (which one is the caller?), is a 400 and reaches no backend.
#[test]
fn no_host_two_hosts_or_two_authorizations_are_refused() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let auth = format!("authorization: Bearer {CLIENT_KEY}\r\n");
    for (what, headers) in [
        ("no host", auth.clone()),
        ("two hosts", format!("host: a\r\nhost: b\r\n{auth}")),
        (
            "two authorizations",
            format!("host: a\r\n{auth}authorization: Bearer sk-someone-else\r\n"),
        ),
    ] {
        let mut s = connect(&gw);
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\n{headers}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let a = next_answer(&mut s);
        if what == "two hosts" {
            // Pingora's parser refuses it first, with its own bare 400.
            assert_eq!(a.status, 400, "{what}");
            continue;
        }
        a.assert_error(400, "invalid_request");
        assert!(a.header("x-request-id").is_some(), "{what}");
    }
    // One Host and one Authorization: answered.
    let mut s = connect(&gw);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\n{auth}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(next_answer(&mut s).status, 200);
    assert_eq!(
        sim_paths(&sim).len(),
        1,
        "only the good request reached the backend"
    );
}

/// A transfer coding before `chunked` (`gzip, chunked`) would reach the
/// backend still applied and unannounced: refused, 501, and no backend
/// call; `chunked` alone (any case) is taken.
#[test]
fn a_transfer_coding_other_than_chunked_is_refused() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for (te, status) in [
        ("gzip, chunked", 501),
        ("deflate\r\ntransfer-encoding: chunked", 501),
        ("Chunked", 200),
    ] {
        let mut s = connect(&gw);
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {CLIENT_KEY}\r\ntransfer-encoding: {te}\r\n\r\n{chunked}"
        );
        s.write_all(req.as_bytes()).unwrap();
        let a = next_answer(&mut s);
        if status == 501 {
            a.assert_error(501, "not_implemented");
            assert_eq!(a.header("x-should-retry"), Some("false"), "{te}");
        } else {
            assert_eq!(a.status, 200, "{te}");
        }
    }
    assert_eq!(
        sim_paths(&sim).len(),
        1,
        "only `chunked` reached the backend"
    );
}

/// What a backend answers that a client must not get as it is: a status
/// HTTP does not define is a 502; a 204 loses the length it claimed (a
/// client trusting it would wait for bytes that never come); hop-by-hop
/// headers (`connection` and what it names, `keep-alive`, `upgrade`,
/// `proxy-authenticate`, `trailer`) stay on the backend's hop.
#[test]
fn a_backends_answer_is_cleaned_for_the_client() {
    let answer = Arc::new(Mutex::new(String::new()));
    let a = answer.clone();
    let addr = raw_backend(move || a.lock().unwrap().clone().into_bytes());
    let g = Gateway::start(&one_backend(&format!("http://{addr}"), ""));
    let ask = |head: &str, body: &str| {
        *answer.lock().unwrap() = format!("{head}\r\nconnection: close\r\n\r\n{body}");
        g.post(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
    };
    let r = ask("HTTP/1.1 999 Odd\r\ncontent-length: 2", "{}");
    r.assert_error(502, "backend_error");

    let r = ask("HTTP/1.1 204 No Content\r\ncontent-length: 12", "");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), None);
    assert!(r.body.is_empty());

    let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    let r = ask(
        &format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: x-backend-secret\r\nx-backend-secret: 1\r\nkeep-alive: timeout=5\r\nupgrade: h2c\r\nproxy-authenticate: Basic\r\ntrailer: x-t\r\nx-kept: yes",
            body.len()
        ),
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "hi");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for h in [
        "x-backend-secret",
        "keep-alive",
        "upgrade",
        "proxy-authenticate",
        "trailer",
    ] {
        assert_eq!(r.header(h), None, "{h}");
    }
}

/// An OpenAI-compatible backend that refuses the gateway's own key (401 or
/// 403) is a 502 `backend_auth_failed` for the client, whose key was fine,
/// without the backend's text about its key; the next target is tried.
#[test]
fn a_backend_refusing_the_gateways_key_is_a_502() {
    let refusing = |status: u16| {
        raw_backend(move || {
            let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-****LEAK","type":"invalid_request_error","code":"invalid_api_key"}}"#;
            format!(
                "HTTP/1.1 {status} No\r\nContent-Type: application/json\r\nWWW-Authenticate: Bearer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
    };
    let (a, b) = (refusing(401), refusing(403));
    let sim = Sim::start("ok", &[]);
    let gw = Gateway::start(&format!(
        r#"{auth}backends:
  a: {{ kind: openai, url: "http://{a}/v1" }}
  b: {{ kind: openai, url: "http://{b}/v1" }}
  ok: {{ kind: openai, url: "{ok}/v1" }}
routes:
  only: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: a }} ], fallback: [ b ] }}
  then: {{ match: {{ path: /v1/chat/completions, models: [n] }}, targets: [ {{ backend: a }} ], fallback: [ ok ] }}
"#,
        auth = auth_section(),
        ok = sim.url,
    ));
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    );
    r.assert_error(502, "backend_auth_failed");
    assert!(r.header("www-authenticate").is_none());
    assert!(!r.text().contains("LEAK"), "{}", r.text());
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "n", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("ok"));
    let log = gw.access_log(2);
    let outcomes: Vec<&serde_json::Value> = log.iter().map(|l| &l["tries"]).collect();
    assert_eq!(outcomes[0][0]["outcome"], "auth_failed", "{log:?}");
    assert_eq!(outcomes[0][1]["outcome"], "auth_failed", "{log:?}");
    assert_eq!(outcomes[1][0]["outcome"], "auth_failed", "{log:?}");
}

/// What Pingora's proxy framework answered before the gateway read its
/// requests itself (`proxy.rs`): a header that does not parse gets a bare
/// 400, and `CONNECT` (a tunnel, framed otherwise) a 405; either closes the
/// connection, and neither reaches a backend.
#[test]
fn a_malformed_header_or_a_connect_is_refused_and_closed() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim, "");
    for (what, req, status) in [
        (
            "a header line without a colon",
            "GET /v1/models HTTP/1.1\r\nhost: a\r\nno colon here\r\n\r\n".to_string(),
            400,
        ),
        (
            "CONNECT",
            format!(
                "CONNECT 127.0.0.1:1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n{}\r\n",
                bearer()
            ),
            405,
        ),
    ] {
        let mut s = connect(&gw);
        s.write_all(req.as_bytes()).unwrap();
        let a = assert_one_answer_then_close(&mut s, what);
        assert_eq!(a.status, status, "{what}");
    }
    assert!(sim_paths(&sim).is_empty(), "no backend call");
    // The gateway still answers.
    let mut s = connect(&gw);
    s.write_all(format!("GET /v1/models HTTP/1.1\r\nhost: a\r\n{}\r\n", bearer()).as_bytes())
        .unwrap();
    assert_eq!(next_answer(&mut s).status, 200);
}
