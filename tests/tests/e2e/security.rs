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
            !k.starts_with("x-skygate-") && !k.starts_with("x-forwarded-") && k != "cookie",
            "{k} must be stripped"
        );
    }
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
