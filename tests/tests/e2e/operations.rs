//! docs/operations.md, step by step, on config/examples/multi-cloud.yaml
//! (with the simulators on free ports instead of 9101-9103).

use crate::harness::*;
use std::time::Duration;

fn example(urls: &[String; 3]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let text = std::fs::read_to_string(root.join("config/examples/multi-cloud.yaml")).unwrap();
    // The harness supplies `listen` and `admin` (free ports, its own token).
    let mut body = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("listen:") || line.starts_with("admin:") {
            skipping = line.starts_with("admin:");
            continue;
        }
        if skipping && line.starts_with("  ") {
            continue;
        }
        skipping = false;
        body.push_str(line);
        body.push('\n');
    }
    for (port, url) in ["9101", "9102", "9103"].iter().zip(urls) {
        body = body.replace(&format!("http://127.0.0.1:{port}"), url);
    }
    body
}

fn chat(gw: &Gateway) -> (u16, String, String) {
    let r = gw.post(
        "/v1/chat/completions",
        &serde_json::json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}),
    );
    (
        r.status,
        r.header("x-skygate-backend").unwrap_or("").to_string(),
        r.header("x-skygate-attempts").unwrap_or("").to_string(),
    )
}

#[test]
fn the_walkthrough_works() {
    let mut sims = [
        Sim::start("aws-us-east-1", &[]),
        Sim::start("azure-eastus", &[]),
        Sim::start("gcp-us-central1", &[]),
    ];
    let urls = [
        sims[0].url.clone(),
        sims[1].url.clone(),
        sims[2].url.clone(),
    ];
    // The example's client key is the demo's.
    let body = example(&urls).replace("sk-skygate-demo", CLIENT_KEY);
    let gw = Gateway::start(&body);

    // 1-2. Traffic spreads; the state is readable.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let (status, backend, _) = chat(&gw);
        assert_eq!(status, 200);
        seen.insert(backend);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let routes = gw.admin("GET", "/admin/routes", "").json();
    assert_eq!(routes["routes"][0]["targets"].as_array().unwrap().len(), 3);

    // 3. All traffic to AWS.
    let r = gw.admin(
        "PUT",
        "/admin/routes/chat/weights",
        r#"{"aws-us-east-1": 100, "azure-eastus": 0, "gcp-us-central1": 0}"#,
    );
    assert_eq!(r.status, 200);
    for _ in 0..10 {
        assert_eq!(chat(&gw).1, "aws-us-east-1");
    }
    // ...and AWS dies: weight 0 is not a drain, the others take over.
    let aws = std::mem::replace(&mut sims[0], Sim::start("spare", &[]));
    drop(aws);
    for _ in 0..10 {
        let (status, backend, _) = chat(&gw);
        assert_eq!(status, 200);
        assert_ne!(backend, "aws-us-east-1");
    }
    assert_eq!(
        gw.backend_status("aws-us-east-1")["breaker"]["state"],
        "open"
    );
    gw.admin("DELETE", "/admin/routes/chat/weights", "");

    // 4. Drain a region: with AWS down, GCP serves everything.
    gw.admin("POST", "/admin/backends/azure-eastus/drain", "");
    for _ in 0..10 {
        let (status, backend, _) = chat(&gw);
        assert_eq!((status, backend.as_str()), (200, "gcp-us-central1"));
    }
    // 5. Health checks see AWS gone too.
    assert!(eventually(Duration::from_secs(10), || {
        gw.backend_status("aws-us-east-1")["health"] == "unhealthy"
    }));

    // 6. Reload a changed file; then a broken one is refused.
    gw.rewrite_config(&body.replace("max_attempts: 3", "max_attempts: 2"));
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["changes"],
        serde_json::json!(["route `chat` changed: retries"])
    );
    assert_eq!(
        gw.backend_status("azure-eastus")["drained"],
        true,
        "drain survives a reload"
    );
    gw.rewrite_config(&format!("{body}  broken: yes\n"));
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 400);
    assert_eq!(chat(&gw).0, 200);
}
