//! Routing by path and by model; embeddings; function routes; /v1/models.

use crate::harness::*;
use serde_json::json;

fn two_model_gateway(a: &Sim, b: &Sim) -> Gateway {
    Gateway::start(&format!(
        r#"{auth}
backends:
  alpha: {{ kind: openai, url: "{a}/v1" }}
  beta:  {{ kind: openai, url: "{b}/v1" }}
  fn:    {{ kind: http_function, url: "{b}/functions/score" }}
routes:
  chat-a: {{ match: {{ path: /v1/chat/completions, models: [model-a] }}, targets: [ {{ backend: alpha }} ] }}
  chat-b: {{ match: {{ path: /v1/chat/completions, models: [model-b] }}, targets: [ {{ backend: beta }} ] }}
  embed:  {{ match: {{ path: /v1/embeddings, models: [embed-b] }}, targets: [ {{ backend: beta }} ] }}
  score:  {{ match: {{ path_prefix: /v1/functions/score }}, targets: [ {{ backend: fn }} ] }}
"#,
        auth = auth_section(),
        a = a.url,
        b = b.url
    ))
}

#[test]
fn routes_by_model_to_the_right_backend() {
    let (a, b) = (Sim::start("sim-a", &[]), Sim::start("sim-b", &[]));
    let gw = two_model_gateway(&a, &b);
    for (model, backend, sim) in [("model-a", "alpha", &a), ("model-b", "beta", &b)] {
        let r = gw.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-skygate-backend"), Some(backend));
        assert_eq!(
            r.header("x-skygate-cache"),
            Some("bypass"),
            "no cache is configured"
        );
        assert!(r.header("x-request-id").is_some_and(|id| id.len() == 32));
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], model);
        let got = sim.requests();
        assert_eq!(got.last().unwrap()["model"], model);
        assert_eq!(got.last().unwrap()["path"], "/v1/chat/completions");
    }
    assert_eq!(a.requests().len(), 1, "model-b must not reach sim-a");
}

#[test]
fn embeddings_and_models_list() {
    let (a, b) = (Sim::start("sim-a", &[]), Sim::start("sim-b", &[]));
    let gw = two_model_gateway(&a, &b);
    let r = gw.post(
        "/v1/embeddings",
        &json!({"model": "embed-b", "input": ["one", "two"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["data"][0]["embedding"].as_array().unwrap().len() > 1);
    assert_eq!(b.requests().last().unwrap()["path"], "/v1/embeddings");

    let r = gw.call(
        "GET",
        "/v1/models",
        &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
        b"",
    );
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["embed-b", "model-a", "model-b"]);

    // One model (the SDKs' `models.retrieve`), its name percent-decoded.
    let get = |path: &str| {
        gw.call(
            "GET",
            path,
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
            b"",
        )
    };
    for path in ["/v1/models/model-a", "/v1/models/model%2Da"] {
        let r = get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["id"], "model-a");
        assert_eq!(r.json()["object"], "model");
    }
    get("/v1/models/nope").assert_error(404, "model_not_found");
    get("/v1/models/%FF").assert_error(404, "model_not_found");
    gw.call(
        "DELETE",
        "/v1/models/model-a",
        &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
        b"",
    )
    .assert_error(405, "method_not_allowed");
}

#[test]
fn function_route_passes_body_path_and_query() {
    let (a, b) = (Sim::start("sim-a", &[]), Sim::start("sim-b", &[]));
    let gw = two_model_gateway(&a, &b);
    let body: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let r = gw.call(
        "PUT",
        "/v1/functions/score/images/7?threshold=0.5",
        &[
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ("content-type", "application/octet-stream"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-skygate-backend"), Some("fn"));
    let v = r.json();
    assert_eq!(v["bytes"], 300_000);
    let seen = b.requests();
    let last = seen.last().unwrap();
    assert_eq!(last["method"], "PUT");
    assert_eq!(last["path"], "/functions/score/images/7?threshold=0.5");
    assert_eq!(last["body_bytes"], 300_000);
}

#[test]
fn weights_split_traffic() {
    let (a, b) = (Sim::start("sim-a", &[]), Sim::start("sim-b", &[]));
    let gw = Gateway::start(&format!(
        r#"{auth}
backends:
  alpha: {{ kind: openai, url: "{a}/v1" }}
  beta:  {{ kind: openai, url: "{b}/v1" }}
routes:
  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: alpha, weight: 3 }}, {{ backend: beta, weight: 1 }} ] }}
"#,
        auth = auth_section(),
        a = a.url,
        b = b.url
    ));
    for _ in 0..200 {
        assert_eq!(gw.chat("m").status, 200);
    }
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert_eq!(na + nb, 200);
    // 3:1 → expect 150:50; far outside binomial noise either way.
    assert!((120..=180).contains(&na), "alpha got {na}, beta {nb}");
}
