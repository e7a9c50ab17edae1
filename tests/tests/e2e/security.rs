//! The client's credentials never reach a backend, the backend's never reach
//! the client, client-set internal headers are stripped, and planted secrets
//! never appear in any log.

use crate::harness::*;
use serde_json::json;

const BACKEND_CANARY: &str = "sk-backend-canary-7f3a9c";
const CLIENT_CANARY: &str = "sk-client-canary-0d1e2f";

#[test]
fn credentials_stay_on_their_side() {
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start_with_env(
        &format!(
            r#"{auth}
backends:
  s: {{ kind: openai, url: "{url}/v1", api_key: "${{BACKEND_KEY}}" }}
  az: {{ kind: openai, url: "{url}/v1", api_key: "${{BACKEND_KEY}}", api_key_header: api-key }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}
  chat-az: {{ match: {{ path: /v1/chat/completions, models: [az] }}, targets: [ {{ backend: az }} ] }}
"#,
            auth = auth_section(),
            url = sim.url
        ),
        &[("BACKEND_KEY", BACKEND_CANARY)],
    );
    let client_auth = format!("Bearer {CLIENT_KEY}");
    let r = gw.call(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &client_auth),
            ("cookie", "session=secret-cookie"),
            ("x-api-key", CLIENT_CANARY),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-skygate-backend", "spoofed"),
            ("x-skygate-principal", "admin"),
            ("content-type", "application/json"),
        ],
        json!({"model": "m", "messages": []}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-skygate-backend"),
        Some("s"),
        "the client cannot spoof internal headers"
    );
    let sent = sim.requests();
    let headers = sent.last().unwrap()["headers"].as_array().unwrap().clone();
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(
        get("authorization").as_deref(),
        Some(format!("Bearer {BACKEND_CANARY}").as_str())
    );
    for h in &headers {
        let (k, v) = (h[0].as_str().unwrap(), h[1].as_str().unwrap());
        assert!(
            !v.contains(CLIENT_KEY) && !v.contains(CLIENT_CANARY),
            "client credential leaked upstream in {k}"
        );
        assert!(
            !k.starts_with("x-skygate-")
                && (!k.starts_with("x-forwarded-") || k == "x-forwarded-for")
                && k != "cookie",
            "{k} must be stripped"
        );
    }
    // x-forwarded-for is the gateway's own: the socket's address, never the
    // client's claim (no trusted proxies are configured).
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    // The backend key never comes back to the client.
    assert!(!r.headers.iter().any(|(_, v)| v.contains(BACKEND_CANARY)));
    assert!(!r.text().contains(BACKEND_CANARY));

    // Azure-style key header.
    let r = gw.chat("az");
    assert_eq!(r.status, 200);
    let sent = sim.requests();
    let headers = sent.last().unwrap()["headers"].as_array().unwrap().clone();
    assert!(headers
        .iter()
        .any(|h| h[0] == "api-key" && h[1] == BACKEND_CANARY));
    assert!(!headers.iter().any(|h| h[0] == "authorization"));

    // Failures too: a wrong client key, a 404.
    gw.call(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {CLIENT_CANARY}"))],
        b"{}",
    )
    .assert_error(401, "invalid_api_key");
    gw.post("/v1/chat/completions", &json!({"model": "nope"}))
        .assert_error(404, "model_not_found");

    gw.access_log(4);
    let logs = format!("{}\n{}", gw.proc.stdout(), gw.proc.stderr());
    for canary in [
        BACKEND_CANARY,
        CLIENT_CANARY,
        CLIENT_KEY,
        gw.admin_token.as_str(),
    ] {
        assert!(
            !logs.contains(canary),
            "secret {canary} found in logs:\n{logs}"
        );
    }
}

#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let sim = Sim::start("s", &[]);
    let body = |trusted: &str| {
        format!(
            "{auth}  trusted_proxies: [{trusted}]\n  identity_headers: [x-authenticated-user]\nbackends:\n  s: {{ kind: openai, url: \"{url}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
            auth = auth_section(),
            url = sim.url
        )
    };
    let send = |gw: &Gateway| {
        let auth = format!("Bearer {CLIENT_KEY}");
        let r = gw.call(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
                ("x-real-ip", "6.6.6.6"),
                ("x-authenticated-user", "root"),
                ("content-type", "application/json"),
            ],
            json!({"model": "m", "messages": []}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let sent = sim.requests();
        let headers = sent.last().unwrap()["headers"].as_array().unwrap().clone();
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h[0] == name)
                .map(|h| h[1].as_str().unwrap().to_string())
        };
        assert_eq!(get("x-authenticated-user"), None);
        assert_eq!(get("x-real-ip"), None);
        get("x-forwarded-for")
    };

    // The test client connects from 127.0.0.1. Trusted: its chain is kept,
    // and the client is the right-most untrusted address.
    let gw = Gateway::start(&body("127.0.0.0/8"));
    assert_eq!(
        send(&gw).as_deref(),
        Some("6.6.6.6, 203.0.113.9, 127.0.0.1")
    );
    assert_eq!(gw.access_log(1)[0]["client_ip"], "203.0.113.9");
    drop(gw);

    // Not trusted: the claim is dropped; the client is the socket's peer.
    let gw = Gateway::start(&body("10.0.0.0/8"));
    assert_eq!(send(&gw).as_deref(), Some("127.0.0.1"));
    assert_eq!(gw.access_log(1)[0]["client_ip"], "127.0.0.1");
}
