//! The admin API: traffic shifting at run time, drain, reload (file and
//! SIGHUP) under load, and the admin token.

use crate::harness::*;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn two(a: &Sim, b: &Sim, weights: (u32, u32)) -> String {
    format!(
        "{auth}backends:\n  aws: {{ kind: openai, url: \"{a}/v1\", cloud: aws, region: us-east-1 }}\n  azure: {{ kind: openai, url: \"{b}/v1\", cloud: azure, region: eastus }}\nroutes:\n  chat:\n    match: {{ path: /v1/chat/completions, models: [m] }}\n    targets: [ {{ backend: aws, weight: {wa} }}, {{ backend: azure, weight: {wb} }} ]\n",
        auth = auth_section(),
        a = a.url,
        b = b.url,
        wa = weights.0,
        wb = weights.1,
    )
}

/// A steady load of chats; returns the statuses and backends when stopped.
fn steady(
    gw: &Arc<Gateway>,
    threads: usize,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<(u16, String)>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let g = gw.clone();
    let h = load(threads, stop.clone(), move || {
        let r = g.chat("m");
        (
            r.status,
            r.header("x-skygate-backend").unwrap_or("").to_string(),
        )
    });
    (stop, h)
}

fn backends_of(gw: &Gateway, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = gw.chat("m");
            assert_eq!(r.status, 200, "{}", r.text());
            r.header("x-skygate-backend").unwrap().to_string()
        })
        .collect()
}

#[test]
fn weights_shift_at_once_with_zero_errors() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let gw = Arc::new(Gateway::start(&two(&a, &b, (1, 1))));
    let (stop, running) = steady(&gw, 3);

    let r = gw.admin(
        "PUT",
        "/admin/routes/chat/weights",
        r#"{"aws": 100, "azure": 0}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["weights_overridden"], true);
    assert_eq!(v["targets"][0]["weight"], 1, "the configured weight");
    assert_eq!(v["targets"][0]["effective_weight"], 100);
    assert_eq!(v["targets"][1]["effective_weight"], 0);
    assert!(backends_of(&gw, 30).iter().all(|b| b == "aws"));

    // Only azure named: aws keeps its current weight (100) unless set.
    let r = gw.admin(
        "PUT",
        "/admin/routes/chat/weights",
        r#"{"azure": 100, "aws": 0}"#,
    );
    assert_eq!(r.status, 200);
    assert!(backends_of(&gw, 30).iter().all(|b| b == "azure"));

    // Back to the configured weights.
    let r = gw.admin("DELETE", "/admin/routes/chat/weights", "");
    assert_eq!(r.json()["weights_overridden"], false);
    let seen = backends_of(&gw, 40);
    assert!(seen.iter().any(|b| b == "aws") && seen.iter().any(|b| b == "azure"));

    stop.store(true, Ordering::Release);
    let results = running.join().unwrap();
    assert!(results.len() > 20);
    assert!(
        results.iter().all(|(s, _)| *s == 200),
        "a request failed during the shifts"
    );

    // The change is logged with what changed.
    assert!(
        gw.proc
            .stderr()
            .contains("route `chat` weights set at run time: aws 1 → 100, azure 1 → 0"),
        "{}",
        gw.proc.stderr()
    );
}

#[test]
fn weight_changes_are_validated() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let gw = Gateway::start(&two(&a, &b, (1, 1)));
    let put = |path: &str, body: &str| gw.admin("PUT", path, body);
    let err = |r: Resp, status: u16, code: &str, needle: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    };
    err(
        put("/admin/routes/nope/weights", r#"{"aws": 1}"#),
        404,
        "not_found",
        "no route `nope`: routes are [chat]",
    );
    err(
        put("/admin/routes/chat/weights", r#"{"gcp": 1}"#),
        400,
        "invalid_request",
        "`gcp` is not a target of route `chat`: its targets are [aws, azure]",
    );
    err(
        put("/admin/routes/chat/weights", r#"{"aws": 0, "azure": 0}"#),
        400,
        "invalid_request",
        "at least one target must keep a positive weight",
    );
    err(
        put("/admin/routes/chat/weights", r#"{"aws": 1, "aws": 99}"#),
        400,
        "invalid_request",
        "`aws` is given twice",
    );
    err(
        put("/admin/routes/chat/weights", r#"{"aws": -1}"#),
        400,
        "invalid_request",
        "integer from 0 to 10000",
    );
    err(
        put("/admin/routes/chat/weights", r#"{"aws": 10001}"#),
        400,
        "invalid_request",
        "integer from 0 to 10000",
    );
    err(
        put("/admin/routes/chat/weights", "{nope"),
        400,
        "invalid_json",
        "not valid JSON",
    );
    err(
        put("/admin/routes/chat/weights", "[1]"),
        400,
        "invalid_request",
        "JSON object",
    );
    err(
        put("/admin/routes/chat/weights", "{}"),
        400,
        "invalid_request",
        "no weights given",
    );
    err(
        gw.admin("GET", "/admin/routes/chat/weights", ""),
        405,
        "method_not_allowed",
        "GET",
    );
    err(
        gw.admin("POST", "/admin/backends/nope/drain", ""),
        404,
        "not_found",
        "no backend `nope`: backends are [aws, azure]",
    );
    err(
        gw.admin("GET", "/admin/nothing", ""),
        404,
        "not_found",
        "no admin endpoint",
    );
    // Nothing changed.
    let routes = gw.admin("GET", "/admin/routes", "").json();
    assert_eq!(routes["routes"][0]["weights_overridden"], false);
}

#[test]
fn admin_calls_without_the_token_are_refused() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let gw = Gateway::start(&two(&a, &b, (1, 1)));
    let calls = [
        ("GET", "/admin/routes", ""),
        ("GET", "/admin/backends", ""),
        ("PUT", "/admin/routes/chat/weights", r#"{"aws": 0}"#),
        ("DELETE", "/admin/routes/chat/weights", ""),
        ("POST", "/admin/backends/aws/drain", ""),
        ("POST", "/admin/reload", ""),
        ("GET", "/metrics", ""),
    ];
    for (method, path, body) in calls {
        for auth in [None, Some("Bearer wrong-token-123"), Some("Basic abc")] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let r = call(gw.admin, method, path, &headers, body.as_bytes());
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(r.json()["error"]["code"], "invalid_admin_token");
            assert!(r
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")));
        }
    }
    // Nothing happened, and the scheme is case-insensitive.
    let lower = format!("bearer {}", gw.admin_token);
    let r = call(
        gw.admin,
        "GET",
        "/admin/backends",
        &[("authorization", &lower)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["backends"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["drained"] == false));
}

#[test]
fn drain_and_undrain_a_region() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let gw = Gateway::start(&two(&a, &b, (1, 1)));
    let r = gw.admin("POST", "/admin/backends/aws/drain", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["drained"], true);
    assert!(backends_of(&gw, 30).iter().all(|b| b == "azure"));
    let v = gw.backend_status("aws");
    assert_eq!(
        (v["cloud"].as_str(), v["region"].as_str()),
        (Some("aws"), Some("us-east-1"))
    );
    assert_eq!(v["available"], false);
    assert_eq!(v["routes"]["chat"]["weight"], 1);
    let r = gw.admin("POST", "/admin/backends/aws/undrain", "");
    assert_eq!(r.json()["drained"], false);
    assert!(backends_of(&gw, 40).iter().any(|b| b == "aws"));
    // Draining the last backend leaves nothing: a fast 503, not a hang.
    gw.admin("POST", "/admin/backends/aws/drain", "");
    gw.admin("POST", "/admin/backends/azure/drain", "");
    let r = gw.chat("m");
    r.assert_error(503, "unavailable");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("(drained)"));
    assert_eq!(r.header("x-skygate-attempts"), Some("0"));
    assert!(gw.proc.stderr().contains("backend `aws` drained"));
}

#[test]
fn reload_under_load_loses_no_request() {
    let (a, b, c) = (
        Sim::start("a", &[]),
        Sim::start("b", &[]),
        Sim::start("c", &[]),
    );
    let gw = Arc::new(Gateway::start(&two(&a, &b, (1, 0))));
    // A run-time override, then a drain: both survive a reload that keeps
    // the route's targets.
    gw.admin(
        "PUT",
        "/admin/routes/chat/weights",
        r#"{"aws": 0, "azure": 5}"#,
    );
    let (stop, running) = steady(&gw, 3);
    std::thread::sleep(Duration::from_millis(200));

    // Valid: a timeout changes and a new backend appears.
    let mut next = two(&a, &b, (1, 0));
    next = next
        .replace(
            "region: eastus }",
            "region: eastus, timeouts: { connect: 2s } }\n  gcp: { kind: openai, url: \"GCP/v1\" }",
        )
        .replace("GCP", &c.url);
    gw.rewrite_config(&next);
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let changes: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes.contains(&"backend `azure` changed: timeouts"),
        "{changes:?}"
    );
    assert!(changes.contains(&"backend `gcp` added"), "{changes:?}");
    assert!(
        changes.contains(&"route `chat`: run-time weights still override the file: aws = 0, azure = 5 (DELETE /admin/routes/chat/weights to use the file's)"),
        "{changes:?}"
    );
    assert_eq!(
        gw.admin("GET", "/admin/routes", "").json()["routes"][0]["weights_overridden"],
        true
    );
    assert!(
        backends_of(&gw, 10).iter().all(|b| b == "azure"),
        "the override survived"
    );

    // Invalid: refused with every error, the running config unchanged.
    gw.rewrite_config("backends:\n  aws: { kind: lambda, url: nope }\nroutes: {}\n");
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "invalid_config");
    let errors: Vec<&str> = v["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("backends.aws.kind: `lambda` is not a backend kind")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("backends.aws.url")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("routes: missing")),
        "{errors:?}"
    );
    assert_eq!(gw.chat("m").status, 200);
    assert!(gw.backend_status("gcp")["name"] == "gcp");

    // SIGHUP with a broken file: refused, nothing changes.
    gw.rewrite_config("routes: { broken: yes }\n");
    gw.proc.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || {
        gw.proc
            .stderr()
            .contains("reload refused; still running the previous config")
    }));
    assert_eq!(
        gw.admin("GET", "/admin/backends", "").json()["backends"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // SIGHUP: the same reload. azure is no longer a target, so its
    // run-time weight goes; aws's (0) stays, so gcp takes the traffic.
    let mut third = two(&a, &c, (1, 1));
    third = third.replace("azure", "gcp");
    gw.rewrite_config(&third);
    gw.proc.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || {
        gw.admin("GET", "/admin/backends", "").json()["backends"]
            .as_array()
            .unwrap()
            .len()
            == 2
    }));
    assert!(backends_of(&gw, 10).iter().all(|b| b == "gcp"));
    let route = gw.admin("GET", "/admin/routes", "").json()["routes"][0].clone();
    assert_eq!(route["weights_overridden"], true);
    assert_eq!(route["targets"][0]["effective_weight"], 0, "{route}");
    assert_eq!(route["targets"][1]["effective_weight"], 1, "{route}");

    stop.store(true, Ordering::Release);
    let results = running.join().unwrap();
    assert!(results.len() > 30, "{}", results.len());
    assert!(
        results.iter().all(|(s, _)| *s == 200),
        "a request failed during the reloads: {:?}",
        results.iter().find(|(s, _)| *s != 200)
    );
    let log = gw.proc.stderr();
    assert!(log.contains("reload: backend `gcp` added"), "{log}");
    assert!(
        log.contains("run-time weight of `azure` dropped (no longer a target)"),
        "{log}"
    );
    assert!(
        log.contains("reload refused") || log.contains("admin: reload refused"),
        "{log}"
    );
}

#[test]
fn a_partial_override_leaves_the_rest_to_the_file() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let gw = Gateway::start(&two(&a, &b, (1, 1)));
    let r = gw.admin("PUT", "/admin/routes/chat/weights", r#"{"azure": 7}"#);
    assert_eq!(r.json()["targets"][1]["effective_weight"], 7);
    // The file moves aws to 0: that applies, azure's override stays.
    gw.rewrite_config(&two(&a, &b, (0, 1)));
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let changes = r.json()["changes"].to_string();
    assert!(
        changes.contains("route `chat` changed: targets"),
        "{changes}"
    );
    assert!(
        changes.contains("run-time weights still override the file: azure = 7"),
        "{changes}"
    );
    let route = gw.admin("GET", "/admin/routes", "").json()["routes"][0].clone();
    assert_eq!(route["targets"][0]["effective_weight"], 0, "{route}");
    assert_eq!(route["targets"][1]["effective_weight"], 7, "{route}");
    assert!(backends_of(&gw, 20).iter().all(|b| b == "azure"));
    // DELETE hands control back to the file.
    gw.admin("DELETE", "/admin/routes/chat/weights", "");
    let route = gw.admin("GET", "/admin/routes", "").json()["routes"][0].clone();
    assert_eq!(route["targets"][1]["effective_weight"], 1, "{route}");
}

#[test]
fn reload_says_truly_what_takes_effect() {
    let (a, b) = (Sim::start("a", &[]), Sim::start("b", &[]));
    let body = two(&a, &b, (1, 1));
    let gw = Gateway::start(&format!(
        "server: {{ threads: 2, grace_period: 5s }}\n{body}"
    ));
    gw.rewrite_config(&format!(
        "server: {{ threads: 1, grace_period: 9s, timeouts: {{ header_read: 3s }} }}\n{body}"
    ));
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["needs_restart"],
        json!(["server.threads", "server.grace_period"]),
        "{v}"
    );
    assert!(
        v["changes"]
            .to_string()
            .contains("server.timeouts changed (for new connections)"),
        "{v}"
    );
    // The same file again: nothing new, and the running values were kept,
    // so the restart-only fields are still reported (they still differ).
    let v = gw.admin("POST", "/admin/reload", "").json();
    assert_eq!(v["changes"], json!([]), "{v}");
    assert_eq!(
        v["needs_restart"],
        json!(["server.threads", "server.grace_period"])
    );
    // A breaker's state survives a reload.
    a.set(json!({"error_rate": 1.0}));
    let broke = format!(
        "server: {{ threads: 1, grace_period: 9s, timeouts: {{ header_read: 3s }} }}\n{}",
        body.replace(
            "region: us-east-1 }",
            "region: us-east-1, breaker: { consecutive_failures: 1, cooldown: 30s } }"
        )
    );
    gw.rewrite_config(&broke);
    assert_eq!(gw.admin("POST", "/admin/reload", "").status, 200);
    assert!(eventually(Duration::from_secs(5), || {
        gw.chat("m");
        gw.backend_status("aws")["breaker"]["state"] == "open"
    }));
    assert_eq!(gw.admin("POST", "/admin/reload", "").status, 200);
    assert_eq!(gw.backend_status("aws")["breaker"]["state"], "open");
}

#[test]
fn run_flags_override_the_file_and_reload_keeps_them() {
    let sim = Sim::start("s", &[]);
    let dir = TempDir::new();
    let path = dir.path.join("g.yaml");
    let (listen, admin) = (free_addr(), free_addr());
    let token = "flags-admin-token";
    // The file's own addresses are never used: the flags win.
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2, token: {token} }}\n{}",
            one_backend(&sim.url, "")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config"]).arg(&path).args([
        "--listen",
        &listen.to_string(),
        "--admin-listen",
        &admin.to_string(),
    ]);
    let proc = Proc::spawn_cmd(cmd);
    assert!(
        eventually(Duration::from_secs(20), || try_call(
            admin,
            "GET",
            "/readyz",
            &[],
            b""
        )
        .is_ok_and(|r| r.status == 200)),
        "{}",
        proc.stderr()
    );
    let chat = || {
        call(
            listen,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
            json!({"model": "m", "messages": []}).to_string().as_bytes(),
        )
    };
    assert_eq!(chat().status, 200);
    let auth = format!("Bearer {token}");
    let r = call(
        admin,
        "POST",
        "/admin/reload",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(v["needs_restart"], json!([]), "the flags still apply: {v}");
    assert_eq!(chat().status, 200);
}

/// With no `admin.token`, no token opens the admin API, and its 401 says so
/// rather than asking for a token.
#[test]
fn without_an_admin_token_the_401_says_the_api_is_closed() {
    let sim = Sim::start("s", &[]);
    let body = format!(
        "backends:\n  s: {{ kind: openai, url: \"{}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
        sim.url
    );
    let gw = Gateway::start(&body);
    let r = gw.admin_get("/metrics", Some("wrong-token"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_admin_token");
    assert!(
        r.text().contains("send `Authorization: Bearer"),
        "{}",
        r.text()
    );
    // The file without the token, reloaded: now no token works.
    let head = std::fs::read_to_string(&gw.config_path).unwrap();
    let closed = head.replace(&format!(", token: {} }}", gw.admin_token), " }");
    assert_ne!(closed, head);
    std::fs::write(&gw.config_path, closed).unwrap();
    assert_eq!(gw.admin("POST", "/admin/reload", "").status, 200);
    let r = gw.admin_get("/metrics", Some(&gw.admin_token));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_admin_token");
    assert!(
        r.text()
            .contains("the admin API is closed: no `admin.token`"),
        "{}",
        r.text()
    );
}
