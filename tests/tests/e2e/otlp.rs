//! Traces over OTLP (`telemetry.otlp`) into a real OTLP receiver started by
//! the test: HTTP/protobuf (`POST /v1/traces`) and gRPC
//! (`TraceService/Export` over HTTP/2), decoded with `opentelemetry-proto`.
//! Span names, parentage, GenAI and Skygate attributes, W3C `traceparent`
//! continued from the client and sent to backends, parent-based sampling;
//! and a dead or black-holed collector costs no request and no memory.

use crate::harness::*;
use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One exported span with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    protocol: &'static str,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<serde_json::Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(json!(s)),
                AnyValue::IntValue(i) => Some(json!(i)),
                AnyValue::BoolValue(b) => Some(json!(b)),
                AnyValue::DoubleValue(d) => Some(json!(d)),
                _ => None,
            })
    }
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP receiver on two free ports: HTTP/protobuf and gRPC.
struct Collector {
    http: SocketAddr,
    grpc: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (http, grpc) = rt.block_on(async {
            let h = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let g = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (h, g)
        });
        let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
        let store = got.clone();
        rt.spawn(async move {
            while let Ok((s, _)) = http.accept().await {
                tokio::spawn(serve_http(s, store.clone()));
            }
        });
        let store = got.clone();
        rt.spawn(async move {
            while let Ok((s, _)) = grpc.accept().await {
                tokio::spawn(serve_grpc(s, store.clone()));
            }
        });
        Collector {
            http: http_addr,
            grpc: grpc_addr,
            got,
            _rt: rt,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for `n` spans of `trace` (hex).
    fn trace(&self, trace: &str, n: usize) -> Vec<Got> {
        let of = || -> Vec<Got> {
            self.spans()
                .into_iter()
                .filter(|g| g.trace_id() == trace)
                .collect()
        };
        eventually(Duration::from_secs(10), || of().len() >= n);
        of()
    }
}

fn keep(store: &Mutex<Vec<Got>>, req: ExportTraceServiceRequest, protocol: &'static str) {
    let mut got = store.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                got.push(Got {
                    service: service.clone(),
                    protocol,
                    span,
                });
            }
        }
    }
}

/// HTTP/1.1, keep-alive: `POST /v1/traces` with a protobuf body.
async fn serve_http(mut s: tokio::net::TcpStream, store: Arc<Mutex<Vec<Got>>>) {
    let mut buf = BytesMut::new();
    loop {
        let (path, len, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                break (req.path.unwrap_or("").to_string(), len, n);
            }
            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        while buf.len() < head_len + len {
            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
        let body = buf.split_to(head_len + len).split_off(head_len);
        let status = if path == "/v1/traces" {
            match ExportTraceServiceRequest::decode(body.freeze()) {
                Ok(req) => {
                    keep(&store, req, "http");
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            }
        } else {
            "404 Not Found"
        };
        let out = ExportTraceServiceResponse::default().encode_to_vec();
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            out.len()
        );
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// gRPC over HTTP/2: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
async fn serve_grpc(s: tokio::net::TcpStream, store: Arc<Mutex<Vec<Got>>>) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let store = store.clone();
        tokio::spawn(async move {
            let path = req.uri().path().to_string();
            let mut body = req.into_body();
            let mut buf = BytesMut::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            // One message: a compressed flag, a big-endian length, the bytes.
            let ok = path == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                && buf.len() >= 5
                && buf[0] == 0;
            if ok {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if let Ok(req) =
                    ExportTraceServiceRequest::decode(&buf[5..5 + len.min(buf.len() - 5)])
                {
                    keep(&store, req, "grpc");
                }
            }
            let resp = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else {
                return;
            };
            let out = ExportTraceServiceResponse::default().encode_to_vec();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(out.len() as u32).to_be_bytes());
            framed.extend_from_slice(&out);
            let _ = send.send_data(Bytes::from(framed), false);
            let mut trailers = http::HeaderMap::new();
            trailers.insert(
                "grpc-status",
                http::HeaderValue::from_static(if ok { "0" } else { "12" }),
            );
            let _ = send.send_trailers(trailers);
        });
    }
}

fn config(telemetry: &str, a: &Sim, b: &Sim) -> String {
    format!(
        "{auth}{telemetry}\nbackends:\n  a: {{ kind: openai, url: \"{}/v1\", cloud: aws, region: us-east-1 }}\n  b: {{ kind: openai, url: \"{}/v1\", cloud: gcp, region: us-central1 }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n    targets: [ {{ backend: a }}, {{ backend: b, priority: 1 }} ]\n",
        a.url,
        b.url,
        auth = auth_section()
    )
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn ask(g: &Gateway, traceparent: Option<&str>) -> Resp {
    let mut headers = vec![
        ("authorization".to_string(), format!("Bearer {CLIENT_KEY}")),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some(tp) = traceparent {
        headers.push(("traceparent".to_string(), tp.to_string()));
    }
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    g.call(
        "POST",
        "/v1/chat/completions",
        &h,
        body.to_string().as_bytes(),
    )
}

/// The `traceparent` a backend received, from the simulator's log.
fn traceparents(sim: &Sim) -> Vec<String> {
    sim.requests()
        .iter()
        .filter_map(|r| {
            r["headers"]
                .as_array()?
                .iter()
                .find(|h| h[0] == "traceparent")?[1]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn spans_reach_an_otlp_collector_over_http_with_genai_attributes() {
    let collector = Collector::start();
    let a = Sim::start("a", &["--error-rate", "1"]);
    let b = Sim::start("b", &[]);
    let telemetry = format!(
        "telemetry: {{ otlp: {{ endpoint: \"http://{}\" }} }}",
        collector.http
    );
    let g = Gateway::start(&config(&telemetry, &a, &b));

    let r = ask(&g, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")));
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = collector.trace(CLIENT_TRACE, 3);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|s| s.service == "skygate" && s.protocol == "http"));

    // The request's server span continues the client's trace.
    let server = spans
        .iter()
        .find(|s| s.parent_id() == CLIENT_SPAN)
        .expect("a child of the client's span");
    assert_eq!(server.span.name, "chat m");
    assert_eq!(server.span.kind, 2, "SERVER");
    for (k, v) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.request.model", json!("m")),
        ("gen_ai.provider.name", json!("openai")),
        ("skygate.route", json!("chat")),
        ("skygate.backend", json!("b")),
        ("cloud.provider", json!("gcp")),
        ("cloud.region", json!("us-central1")),
        ("skygate.attempts", json!(2)),
        ("skygate.cache", json!("bypass")),
        ("http.response.status_code", json!(200)),
    ] {
        assert_eq!(server.attr(k), Some(v), "server span `{k}`: {server:#?}");
    }
    assert!(server
        .attr("gen_ai.usage.input_tokens")
        .is_some_and(|v| v.as_i64() > Some(0)));
    assert!(server
        .attr("gen_ai.usage.output_tokens")
        .is_some_and(|v| v.as_i64() > Some(0)));
    assert!(
        server.attr("gen_ai.response.model").is_some(),
        "{server:#?}"
    );

    // Two attempts, children of the server span: a's 500, then b.
    let mut attempts: Vec<&Got> = spans
        .iter()
        .filter(|s| s.parent_id() == server.span_id())
        .collect();
    attempts.sort_by_key(|s| s.attr("skygate.attempt").and_then(|v| v.as_i64()));
    assert_eq!(attempts.len(), 2);
    let (first, second) = (attempts[0], attempts[1]);
    assert!(
        attempts
            .iter()
            .all(|s| s.span.kind == 3 && s.span.name == "chat m"),
        "CLIENT spans"
    );
    assert_eq!(first.attr("skygate.backend"), Some(json!("a")));
    assert_eq!(first.attr("error.type"), Some(json!("5xx")));
    assert_eq!(first.attr("http.response.status_code"), Some(json!(500)));
    assert_eq!(first.span.status.as_ref().map(|s| s.code), Some(2), "ERROR");
    assert_eq!(second.attr("skygate.backend"), Some(json!("b")));
    assert_eq!(second.attr("server.address"), Some(json!("127.0.0.1")));
    assert_eq!(second.attr("skygate.outcome"), Some(json!("ok")));
    assert!(second.attr("error.type").is_none());
    assert!(first.span.start_time_unix_nano <= second.span.start_time_unix_nano);
    assert!(server.span.start_time_unix_nano <= first.span.start_time_unix_nano);
    assert!(second.span.end_time_unix_nano <= server.span.end_time_unix_nano);

    // Each backend got its attempt's span as the parent.
    assert_eq!(
        traceparents(&a),
        vec![format!("00-{CLIENT_TRACE}-{}-01", first.span_id())]
    );
    assert_eq!(
        traceparents(&b),
        vec![format!("00-{CLIENT_TRACE}-{}-01", second.span_id())]
    );
    assert!(g.metric("skygate_trace_spans_total{result=\"exported\"}") >= Some(3.0));
}

#[test]
fn grpc_export_samples_by_parent_then_ratio_and_can_ignore_the_client() {
    let collector = Collector::start();
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let telemetry = format!(
        "telemetry: {{ otlp: {{ endpoint: \"http://{}\", protocol: grpc, headers: {{ x-collector-token: t0ken }} }}, sampling_ratio: 0 }}",
        collector.grpc
    );
    let g = Gateway::start(&config(&telemetry, &a, &b));
    // The client's sampled flag wins over a ratio of 0.
    assert_eq!(
        ask(&g, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).status,
        200
    );
    let spans = collector.trace(CLIENT_TRACE, 2);
    assert_eq!(spans.len(), 2);
    assert!(spans
        .iter()
        .all(|s| s.protocol == "grpc" && s.service == "skygate"));
    // Unsampled (the client's flag 00, or a new trace at ratio 0): nothing
    // exported, but the context still goes on, flagged unsampled.
    let unsampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        ask(&g, Some(&format!("00-{unsampled}-{CLIENT_SPAN}-00"))).status,
        200
    );
    assert_eq!(ask(&g, None).status, 200);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(collector.spans().len(), 2, "{:#?}", collector.spans());
    let sent = traceparents(&a);
    assert_eq!(sent.len(), 3);
    assert!(sent[1].starts_with(&format!("00-{unsampled}-")) && sent[1].ends_with("-00"));
    assert!(
        !sent[2].contains(unsampled) && sent[2].ends_with("-00"),
        "{}",
        sent[2]
    );

    // Switched off: a new trace for every request, the client's ignored.
    let telemetry = format!(
        "telemetry: {{ otlp: {{ endpoint: \"http://{}\", protocol: grpc }}, continue_client_trace: false }}",
        collector.grpc
    );
    let g2 = Gateway::start(&config(&telemetry, &a, &b));
    assert_eq!(
        ask(&g2, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).status,
        200
    );
    assert!(eventually(Duration::from_secs(10), || collector
        .spans()
        .len()
        >= 4));
    let fresh: Vec<Got> = collector.spans().into_iter().skip(2).collect();
    assert!(
        fresh.iter().all(|s| s.trace_id() != CLIENT_TRACE),
        "{fresh:#?}"
    );
    let server = fresh.iter().find(|s| s.span.kind == 2).unwrap();
    assert!(server.span.parent_span_id.is_empty(), "a root span");
}

/// The `tracestate` a backend received, one entry per request (empty
/// when none).
fn tracestates(sim: &Sim) -> Vec<String> {
    sim.requests()
        .iter()
        .map(|r| {
            r["headers"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h[0] == "tracestate"))
                .and_then(|h| h[1].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn ask_with_state(g: &Gateway, traceparent: &str, tracestate: &str) -> Resp {
    let auth = format!("Bearer {CLIENT_KEY}");
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    g.call(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("traceparent", traceparent),
            ("tracestate", tracestate),
        ],
        body.to_string().as_bytes(),
    )
}

/// Without telemetry, a client's valid trace context passes through
/// unchanged; an invalid `traceparent` (and its `tracestate`) does not.
#[test]
fn without_telemetry_the_clients_traceparent_passes_through() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let g = Gateway::start(&config("", &a, &b));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(ask_with_state(&g, &tp, "vendor=abc").status, 200);
    assert_eq!(
        ask_with_state(&g, "00-not-a-trace-01", "vendor=abc").status,
        200
    );
    assert_eq!(traceparents(&a), vec![tp]);
    assert_eq!(
        tracestates(&a),
        vec!["vendor=abc".to_string(), String::new()]
    );
}

/// A trace the gateway starts (the client's ignored) carries none of the
/// client's `tracestate`; a continued one does.
#[test]
fn tracestate_goes_only_with_the_clients_continued_trace() {
    let collector = Collector::start();
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let on = format!(
        "telemetry: {{ otlp: {{ endpoint: \"http://{}\" }} }}",
        collector.http
    );
    let g = Gateway::start(&config(&on, &a, &b));
    assert_eq!(ask_with_state(&g, &tp, "vendor=abc").status, 200);
    let off = format!(
        "telemetry: {{ otlp: {{ endpoint: \"http://{}\" }}, continue_client_trace: false }}",
        collector.http
    );
    let g2 = Gateway::start(&config(&off, &a, &b));
    assert_eq!(ask_with_state(&g2, &tp, "vendor=abc").status, 200);
    assert_eq!(
        tracestates(&a),
        vec!["vendor=abc".to_string(), String::new()]
    );
    let sent = traceparents(&a);
    assert!(
        sent[0].contains(CLIENT_TRACE) && !sent[1].contains(CLIENT_TRACE),
        "{sent:?}"
    );
}

/// A continued trace's `tracestate` goes on up to 512 bytes (W3C's bound
/// for one that is forwarded); a longer one does not go at all, with
/// tracing on or off.
#[test]
fn a_tracestate_over_512_bytes_is_not_passed_on() {
    let collector = Collector::start();
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let at_bound = format!("v={}", "x".repeat(510));
    let over = format!("v={}", "x".repeat(511));
    assert_eq!((at_bound.len(), over.len()), (512, 513));
    let on = format!(
        "telemetry: {{ otlp: {{ endpoint: \"http://{}\" }} }}",
        collector.http
    );
    let traced = Gateway::start(&config(&on, &a, &b));
    let plain = Gateway::start(&config("", &a, &b));
    for g in [&traced, &plain] {
        assert_eq!(ask_with_state(g, &tp, &at_bound).status, 200);
        assert_eq!(ask_with_state(g, &tp, &over).status, 200);
    }
    assert_eq!(
        tracestates(&a),
        vec![at_bound.clone(), String::new(), at_bound, String::new()]
    );
}

/// RSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

/// A collector that accepts connections and never answers: exports time
/// out, the queue fills and drops (counted); requests all succeed and a
/// second wave of them adds no memory.
#[test]
fn a_dead_collector_costs_no_request_and_no_memory() {
    // Accepts, reads, never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().flatten() {
            held.push(s);
        }
    });
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let telemetry =
        format!("telemetry: {{ otlp: {{ endpoint: \"http://{hole_addr}\", timeout: 1s }} }}");
    let g = Arc::new(Gateway::start(&config(&telemetry, &a, &b)));
    let wave = |g: &Arc<Gateway>, n: usize| {
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g2, done2, stop2) = (g.clone(), done.clone(), stop.clone());
        let h = load(8, stop.clone(), move || {
            let r = ask(&g2, None);
            if done2.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 >= n {
                stop2.store(true, std::sync::atomic::Ordering::Release);
            }
            r.status
        });
        let statuses = h.join().unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "a request failed");
        statuses.len()
    };
    // Past the queue's bound (two spans a request): it fills, then drops.
    wave(&g, 6_000);
    let after_first = rss_kib(g.proc.pid());
    let dropped = |g: &Gateway| {
        g.metric("skygate_trace_spans_total{result=\"dropped\"}")
            .unwrap_or(0.0)
    };
    assert!(
        dropped(&g) > 0.0,
        "the queue is bounded: {:?}",
        g.metric("skygate_trace_spans_total{result=\"failed\"}")
    );
    wave(&g, 6_000);
    let after_second = rss_kib(g.proc.pid());
    assert!(
        after_second < after_first + 8 * 1024,
        "RSS grew from {after_first} KiB to {after_second} KiB over a second wave"
    );
    assert!(eventually(Duration::from_secs(10), || g
        .metric("skygate_trace_spans_total{result=\"failed\"}")
        > Some(0.0)));
    assert!(
        g.metric("skygate_trace_spans_total{result=\"exported\"}")
            .unwrap_or(0.0)
            == 0.0
    );
}

/// A request still in flight at SIGTERM ends during the grace period: its
/// spans are exported before the process exits, not left in the queue for
/// a batch that never comes.
#[test]
fn spans_of_requests_ending_at_shutdown_are_exported_before_exit() {
    let collector = Collector::start();
    let (a, b) = (
        Sim::start("a", &["--latency-ms", "700"]),
        Sim::start("b", &[]),
    );
    let telemetry = format!(
        "server: {{ threads: 2, grace_period: 5s }}\ntelemetry: {{ otlp: {{ endpoint: \"http://{}\" }} }}",
        collector.http
    );
    let mut g = Gateway::start(&config(&telemetry, &a, &b));
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let addr = g.addr;
    let client = std::thread::spawn(move || {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        call(
            addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &format!("Bearer {CLIENT_KEY}")),
                ("traceparent", &format!("00-{trace}-{CLIENT_SPAN}-01")),
            ],
            body.to_string().as_bytes(),
        )
    });
    assert!(eventually(Duration::from_secs(10), || a.stats()
        ["requests"]
        == 1));
    g.proc.signal("TERM");
    let r = client.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let status = g
        .proc
        .wait_exit(Duration::from_secs(8))
        .expect("exits after SIGTERM");
    assert!(status.success());
    // Already there when the process is gone: no waiting here.
    let spans: Vec<Got> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id() == trace)
        .collect();
    assert_eq!(spans.len(), 2, "the request's and its attempt's span");
}
