//! Health, readiness, Prometheus metrics behind the admin token, and one JSON
//! access-log line per request.

use crate::harness::*;
use serde_json::json;

fn gateway(sim: &Sim) -> Gateway {
    Gateway::start(&format!(
        r#"{auth}
backends:
  s: {{ kind: openai, url: "{url}/v1" }}
  down: {{ kind: openai, url: "http://{nothing}/v1", timeouts: {{ connect: 1s }} }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}
  broken: {{ match: {{ path: /v1/chat/completions, models: [broken] }}, targets: [ {{ backend: down }} ] }}
"#,
        auth = auth_section(),
        url = sim.url,
        nothing = free_addr()
    ))
}

#[test]
fn health_and_metrics() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    assert_eq!(gw.admin_get("/healthz", None).status, 200);
    assert_eq!(gw.admin_get("/readyz", None).json()["status"], "ready");
    assert_eq!(gw.admin_get("/metrics", None).status, 401);
    assert_eq!(
        gw.admin_get("/metrics", Some("wrong-token-123")).status,
        401
    );

    for _ in 0..3 {
        assert_eq!(gw.chat("m").status, 200);
    }
    // A connect error is retried (the route has one target, so on it
    // again): three attempts, each counted.
    let r = gw.post("/v1/chat/completions", &json!({"model": "broken"}));
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-skygate-attempts"), Some("3"));

    // Metrics are recorded once a response has gone out, so the last
    // request's may land a moment after the client has its answer.
    let needles = [
        r#"skygate_requests_total{backend="s",route="chat",status="200"} 3"#,
        r#"skygate_requests_total{backend="down",route="broken",status="502"} 1"#,
        r#"skygate_upstream_errors_total{backend="down",code="backend_unreachable"} 3"#,
        r#"skygate_request_duration_seconds_count{route="chat"} 3"#,
        r#"skygate_time_to_first_byte_seconds_count{backend="s",route="chat"} 3"#,
        r#"skygate_tokens_total{kind="completion",route="chat"} 48"#,
        "skygate_requests_in_flight 0",
        // Before any cold start: a series to read a rate from.
        r#"skygate_backend_cold_starts_total{backend="s"} 0"#,
    ];
    let start = std::time::Instant::now();
    loop {
        let r = gw.admin_get("/metrics", Some(&gw.admin_token));
        assert_eq!(r.status, 200);
        let text = r.text();
        let missing: Vec<&str> = needles
            .iter()
            .copied()
            .filter(|n| !text.contains(n))
            .collect();
        if missing.is_empty() {
            // No Redis configured: no Redis series to read as an outage.
            assert!(!text.contains("skygate_redis_"), "{text}");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "missing {missing:?} in:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn one_access_log_line_per_request() {
    let sim = Sim::start("s", &[]);
    let gw = gateway(&sim);
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
    );
    assert_eq!(r.status, 200);
    let bad_resp = gw.post("/v1/chat/completions", &json!({"model": "zzz"}));
    bad_resp.assert_error(404, "model_not_found");
    // Lines are written once each response is out, so their order is not
    // the requests' order: find each by its request id.
    let lines = gw.access_log(2);
    let of = |resp: &Resp| -> Vec<&serde_json::Value> {
        let id = resp.header("x-request-id").unwrap();
        lines.iter().filter(|l| l["request_id"] == id).collect()
    };
    let (oks, bads) = (of(&r), of(&bad_resp));
    assert_eq!(
        (oks.len(), bads.len()),
        (1, 1),
        "one line per request: {lines:?}"
    );
    let ok = oks[0];
    assert_eq!(ok["principal"], "tester");
    assert!(
        ok["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ok}"
    );
    assert_eq!(ok["route"], "chat");
    assert_eq!(ok["model"], "m");
    assert_eq!(ok["backend"], "s");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["completion_tokens"], 16);
    assert!(ok["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(ok["latency_ms"].as_f64().unwrap() >= ok["ttfb_ms"].as_f64().unwrap());
    assert_eq!(
        ok["response_bytes"].as_u64().unwrap() as usize,
        r.body.len()
    );
    assert!(ok["request_bytes"].as_u64().unwrap() > 0);
    let bad = bads[0];
    assert_eq!(bad["status"], 404);
    assert_eq!(bad["error"], "model_not_found");
    assert_eq!(bad["backend"], serde_json::Value::Null);
}
