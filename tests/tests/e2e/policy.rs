//! Cedar policies end to end: permit, forbid and the default deny; shadow
//! mode; the audit log; `/v1/models` per caller; data residency narrowing
//! the router; the admin API under policy; reload when a policy file
//! changes (and refusal of a bad one); `skygate policy check` and
//! `skygate validate` on policy errors.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CONTRACTOR_KEY: &str = "sk-test-contractor-key";
const EU_KEY: &str = "sk-test-eu-tenant-key";

const ADMIN: &str = r#"
@id("admin-token")
permit (principal == Skygate::AdminToken::"admin", action == Skygate::Action::"admin", resource);
"#;

const POLICIES: &str = r#"
@id("eng-calls")
permit (principal in Skygate::Group::"eng", action in Skygate::Action::"call", resource);

@id("contractors-chat")
permit (
  principal in Skygate::Group::"contractors",
  action in [Skygate::Action::"invoke", Skygate::Action::"stream"],
  resource == Skygate::Model::"m"
);

@id("eu-tenant-calls")
permit (principal in Skygate::Tenant::"eu", action in Skygate::Action::"call", resource);

@id("eu-stays-in-eu")
forbid (principal in Skygate::Tenant::"eu", action == Skygate::Action::"use_backend", resource)
unless { resource.region like "europe-*" };
"#;

struct Setup {
    gw: Gateway,
    aws: Sim,
    gcp: Sim,
    dir: TempDir,
}

impl Setup {
    fn policy_path(&self) -> PathBuf {
        self.dir.path.join("main.cedar")
    }

    fn audit(&self) -> Vec<Value> {
        read_audit(&self.dir.path.join("audit.jsonl"))
    }

    /// Audit lines, waiting until one matches `f`.
    fn audit_line(&self, f: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        eventually(Duration::from_secs(5), || {
            found = self.audit().into_iter().find(|l| f(l));
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no such audit line in {:?}", self.audit()))
    }
}

fn read_audit(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line `{l}`: {e}")))
        .collect()
}

fn body(dir: &Path, mode: &str, aws: &str, gcp: &str) -> String {
    format!(
        "auth:\n  api_keys:\n    - {{ key: {CLIENT_KEY}, principal: tester, tenant: t1, groups: [eng] }}\n    - {{ key: {CONTRACTOR_KEY}, principal: contractor, tenant: t1, groups: [contractors] }}\n    - {{ key: {EU_KEY}, principal: eu-app, tenant: eu }}\nbackends:\n  aws: {{ kind: openai, url: \"{aws}/v1\", cloud: aws, region: us-east-1 }}\n  gcp: {{ kind: openai, url: \"{gcp}/v1\", cloud: gcp, region: europe-west4 }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m, m2] }}, targets: [ {{ backend: aws }}, {{ backend: gcp }} ] }}\n  emb: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {{ backend: aws }} ] }}\npolicy:\n  files: [ \"{dir}/*.cedar\" ]\n  mode: {mode}\n  audit_log: \"{dir}/audit.jsonl\"\n",
        dir = dir.display()
    )
}

fn setup_with(policies: &str, mode: &str) -> Setup {
    let aws = Sim::start("aws", &[]);
    let gcp = Sim::start("gcp", &[]);
    let dir = TempDir::new();
    std::fs::write(dir.path.join("main.cedar"), policies).unwrap();
    std::fs::write(dir.path.join("admin.cedar"), ADMIN).unwrap();
    let gw = Gateway::start(&body(&dir.path, mode, &aws.url, &gcp.url));
    Setup { gw, aws, gcp, dir }
}

fn setup() -> Setup {
    setup_with(POLICIES, "enforce")
}

fn send(gw: &Gateway, key: &str, path: &str, body: &Value) -> Resp {
    gw.call(
        "POST",
        path,
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

fn chat(gw: &Gateway, key: &str, model: &str) -> Resp {
    send(
        gw,
        key,
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
    )
}

fn embed(gw: &Gateway, key: &str) -> Resp {
    send(
        gw,
        key,
        "/v1/embeddings",
        &json!({"model": "e", "input": "x"}),
    )
}

fn metric(gw: &Gateway, name: &str) -> u64 {
    gw.metric(name).unwrap_or(0.0) as u64
}

#[test]
fn permit_forbid_and_the_default_deny() {
    let s = setup();
    assert_eq!(chat(&s.gw, CLIENT_KEY, "m2").status, 200);
    assert_eq!(embed(&s.gw, CLIENT_KEY).status, 200);
    assert_eq!(chat(&s.gw, CONTRACTOR_KEY, "m").status, 200);
    let streamed = send(
        &s.gw,
        CONTRACTOR_KEY,
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    assert_eq!(streamed.status, 200);
    // Not permitted: an OpenAI-shaped 403 that names no policy.
    let r = chat(&s.gw, CONTRACTOR_KEY, "m2");
    r.assert_error(403, "forbidden");
    assert_eq!(r.json()["error"]["type"], "permission_error");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("not allowed to invoke model `m2`"), "{msg}");
    assert!(
        !msg.contains("contractors-chat") && !msg.contains("cedar"),
        "{msg}"
    );
    embed(&s.gw, CONTRACTOR_KEY).assert_error(403, "forbidden");
    // A denied request never reaches a backend.
    let reached = |sim: &Sim| {
        sim.requests()
            .iter()
            .filter(|r| r["model"] == "m2" || r["model"] == "e")
            .count()
    };
    assert_eq!(
        reached(&s.aws) + reached(&s.gcp),
        2,
        "only the engineer's m2 and e calls"
    );

    // Every decision is audited: who, what, the deciding policies; no key.
    let allow = s.audit_line(|l| {
        l["principal"] == "Skygate::ApiKey::\"contractor\"" && l["decision"] == "allow"
    });
    assert_eq!(allow["action"], "invoke");
    assert_eq!(allow["resource"], "Skygate::Model::\"m\"");
    assert_eq!(allow["policies"], json!(["contractors-chat"]));
    assert_eq!(allow["mode"], "enforce");
    assert!(allow["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let deny = s.audit_line(|l| l["action"] == "embed" && l["decision"] == "deny");
    assert_eq!(deny["principal"], "Skygate::ApiKey::\"contractor\"");
    assert_eq!(deny["policies"], json!([]));
    // A canary in a body, denied and allowed, shows in no log.
    for (key, model) in [(CONTRACTOR_KEY, "m2"), (CLIENT_KEY, "m")] {
        send(
            &s.gw,
            key,
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "body-canary-5e1d"}]}),
        );
    }
    s.audit_line(|l| l["resource"] == "Skygate::Model::\"m2\"" && l["decision"] == "deny");
    let text = format!(
        "{}\n{}\n{}",
        std::fs::read_to_string(s.dir.path.join("audit.jsonl")).unwrap(),
        s.gw.proc.stdout(),
        s.gw.proc.stderr()
    );
    for secret in [
        CLIENT_KEY,
        CONTRACTOR_KEY,
        EU_KEY,
        "body-canary-5e1d",
        s.gw.admin_token.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in a log: {text}");
    }
    assert!(metric(&s.gw, "skygate_policy_decisions_total{decision=\"deny\"}") >= 2);
    assert!(metric(&s.gw, "skygate_policy_decisions_total{decision=\"allow\"}") >= 4);
}

#[test]
fn models_are_listed_per_caller() {
    let s = setup();
    let ids = |key: &str| -> Vec<String> {
        let r = s.gw.call(
            "GET",
            "/v1/models",
            &[("authorization", &format!("Bearer {key}"))],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(CLIENT_KEY), ["e", "m", "m2"]);
    assert_eq!(ids(CONTRACTOR_KEY), ["m"]);
    s.audit_line(|l| l["action"] == "list_models" && l["visible_models"] == 1);
    // One model: only one the caller may call.
    let get = |key: &str, model: &str| {
        s.gw.call(
            "GET",
            &format!("/v1/models/{model}"),
            &[("authorization", &format!("Bearer {key}"))],
            b"",
        )
    };
    assert_eq!(get(CONTRACTOR_KEY, "m").status, 200);
    get(CONTRACTOR_KEY, "e").assert_error(404, "model_not_found");
    assert_eq!(get(CLIENT_KEY, "e").status, 200);
    // Each audited as the one model it asked about, not as the list.
    let contractor = "Skygate::ApiKey::\"contractor\"";
    s.audit_line(|l| {
        l["action"] == "get_model"
            && l["principal"] == contractor
            && l["resource"] == "Skygate::Model::\"m\""
            && l["decision"] == "allow"
            && l["visible_models"] == 1
    });
    s.audit_line(|l| {
        l["action"] == "get_model"
            && l["principal"] == contractor
            && l["resource"] == "Skygate::Model::\"e\""
            && l["decision"] == "deny"
            && l["visible_models"] == 0
    });
    // A model no route serves: not found, no policy decision.
    get(CONTRACTOR_KEY, "nope").assert_error(404, "model_not_found");
    s.audit_line(|l| {
        l["action"] == "get_model"
            && l["resource"] == "Skygate::Model::\"nope\""
            && l["decision"] == "not_found"
    });
}

#[test]
fn data_residency_narrows_the_router() {
    let s = setup();
    for _ in 0..8 {
        let r = chat(&s.gw, EU_KEY, "m");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-skygate-backend"), Some("gcp"));
    }
    assert!(
        s.aws.requests().is_empty(),
        "tenant eu never reaches us-east-1"
    );
    let line = s.audit_line(|l| l["principal"] == "Skygate::ApiKey::\"eu-app\"");
    assert_eq!(
        line["backends_denied"],
        json!([{"backend": "aws", "policies": ["eu-stays-in-eu"]}])
    );
    // The same question eight times: decided once, answered from the
    // decision cache after, and still audited each time in full.
    assert!(eventually(Duration::from_secs(5), || {
        s.audit()
            .iter()
            .filter(|l| l["principal"] == "Skygate::ApiKey::\"eu-app\"")
            .filter(|l| l["backends_denied"] == line["backends_denied"])
            .count()
            == 8
    }));
    assert!(metric(&s.gw, "skygate_policy_cache_total{result=\"hit\"}") >= 7);
    // Others still use both clouds.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(
            chat(&s.gw, CLIENT_KEY, "m")
                .header("x-skygate-backend")
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // With its only allowed backend drained, tenant eu gets a 503, not us-east-1.
    assert_eq!(
        s.gw.admin("POST", "/admin/backends/gcp/drain", "").status,
        200
    );
    chat(&s.gw, EU_KEY, "m").assert_error(503, "unavailable");
    assert_eq!(chat(&s.gw, CLIENT_KEY, "m").status, 200);
    // The embeddings route has only us-east-1: a 403 that says why.
    let r = embed(&s.gw, EU_KEY);
    r.assert_error(403, "forbidden");
    assert!(
        r.text().contains("none of the backends of route `emb`"),
        "{}",
        r.text()
    );
    assert!(metric(&s.gw, "skygate_policy_backends_denied_total") >= 9);
}

#[test]
fn shadow_mode_lets_denials_through_and_counts_them() {
    let s = setup_with(POLICIES, "shadow");
    assert_eq!(chat(&s.gw, CONTRACTOR_KEY, "m2").status, 200);
    let line = s.audit_line(|l| l["decision"] == "deny");
    assert_eq!(line["mode"], "shadow");
    assert_eq!(line["resource"], "Skygate::Model::\"m2\"");
    assert_eq!(
        metric(
            &s.gw,
            "skygate_policy_decisions_total{decision=\"shadow_deny\"}"
        ),
        1
    );
    assert_eq!(
        metric(&s.gw, "skygate_policy_decisions_total{decision=\"deny\"}"),
        0
    );
    // Shadow never narrows the router either: tenant eu may still land on aws.
    for _ in 0..30 {
        assert_eq!(chat(&s.gw, EU_KEY, "m").status, 200);
    }
    assert!(!s.aws.requests().is_empty());
}

#[test]
fn the_admin_api_is_under_policy() {
    let read_only = r#"
@id("admin-reads")
permit (principal == Skygate::AdminToken::"admin", action == Skygate::Action::"admin", resource)
when { !resource.write };
"#;
    let aws = Sim::start("aws", &[]);
    let gcp = Sim::start("gcp", &[]);
    let dir = TempDir::new();
    std::fs::write(
        dir.path.join("main.cedar"),
        format!("{POLICIES}{read_only}"),
    )
    .unwrap();
    let gw = Gateway::start(&body(&dir.path, "enforce", &aws.url, &gcp.url));
    assert_eq!(gw.admin("GET", "/admin/routes", "").status, 200);
    let r = gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden");
    // The answer's request id is the audit line's.
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(
        gw.admin("POST", "/admin/backends/aws/drain", "").status,
        403
    );
    // A wrong token is still a 401 before any policy.
    assert_eq!(gw.admin_get("/admin/routes", Some("nope")).status, 401);
    // Audit lines are written in bursts: wait for it.
    let found = eventually(Duration::from_secs(5), || {
        read_audit(&dir.path.join("audit.jsonl")).iter().any(|l| {
            l["action"] == "admin"
                && l["resource"] == "Skygate::AdminApi::\"reload\""
                && l["decision"] == "deny"
                && l["request_id"] == id.as_str()
        })
    });
    assert!(found, "{:?}", read_audit(&dir.path.join("audit.jsonl")));
}

#[test]
fn a_policy_file_change_reloads_and_a_bad_one_is_refused() {
    let s = setup();
    chat(&s.gw, CONTRACTOR_KEY, "m2").assert_error(403, "forbidden");
    // Contractors may now call everything: picked up without a signal.
    std::fs::write(
        s.policy_path(),
        format!("{POLICIES}\n@id(\"contractors-all\")\npermit (principal in Skygate::Group::\"contractors\", action in Skygate::Action::\"call\", resource);\n"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || chat(
            &s.gw,
            CONTRACTOR_KEY,
            "m2"
        )
        .status
            == 200),
        "the new policy is in force: {}",
        s.gw.proc.stderr()
    );
    // A new file in the folder counts too.
    std::fs::write(
        s.dir.path.join("zz-lockdown.cedar"),
        "@id(\"no-m2\")\nforbid (principal, action, resource == Skygate::Model::\"m2\");\n",
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || chat(
        &s.gw, CLIENT_KEY, "m2"
    )
    .status
        == 403));
    // A broken file is refused with its position; the last good set stays.
    std::fs::write(
        s.dir.path.join("zz-lockdown.cedar"),
        "permit (principal, action, resource) when { resource.nope };\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || s
            .gw
            .proc
            .stderr()
            .contains("zz-lockdown.cedar:1:")),
        "{}",
        s.gw.proc.stderr()
    );
    assert_eq!(
        chat(&s.gw, CLIENT_KEY, "m2").status,
        403,
        "the last good set is in force"
    );
    assert_eq!(chat(&s.gw, CONTRACTOR_KEY, "m").status, 200);
    let r = s.gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("zz-lockdown.cedar:1:"), "{}", r.text());
}

fn skygate(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

#[test]
fn policy_check_decides_offline_like_the_gateway() {
    let dir = TempDir::new();
    std::fs::write(dir.path.join("main.cedar"), POLICIES).unwrap();
    std::fs::write(dir.path.join("admin.cedar"), ADMIN).unwrap();
    let config = dir.path.join("skygate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2, token: tok-tok-tok }}\n{}",
            body(
                &dir.path,
                "enforce",
                "http://127.0.0.1:3",
                "http://127.0.0.1:4"
            )
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    // `skygate policy check --config FILE` with `args`.
    let check = |args: &[&str]| {
        let mut all = vec!["policy", "check", "--config", c];
        all.extend_from_slice(args);
        skygate(&all)
    };
    let out = check(&[
        "--api-key",
        CONTRACTOR_KEY,
        "--action",
        "embed",
        "--model",
        "e",
        "--expect",
        "deny",
    ]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("request: deny (as expected)") && text.contains("deny by default"),
        "{text}"
    );
    let out = check(&[
        "--principal",
        "contractor",
        "--action",
        "invoke",
        "--model",
        "m",
        "--expect",
        "deny",
    ]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("request: allow (EXPECTED deny)") && text.contains("by contractors-chat ("),
        "{text}"
    );
    assert!(
        text.contains("main.cedar:5:1"),
        "the policy's position: {text}"
    );
    let out = check(&[
        "--principal",
        "eu-app",
        "--action",
        "use_backend",
        "--backend",
        "aws",
    ]);
    assert!(
        output_text(&out).contains("request: deny")
            && output_text(&out).contains("by eu-stays-in-eu"),
        "{}",
        output_text(&out)
    );
    // A principal the config does not have (a typo, say) is still judged,
    // with only what the case gives, and the output says so.
    let out = check(&[
        "--principal",
        "contarctor",
        "--action",
        "invoke",
        "--model",
        "m",
    ]);
    let text = output_text(&out);
    assert!(
        text.contains("request: deny")
            && text.contains(
                "warning: principal `contarctor` has no key in the config's auth.api_keys"
            ),
        "{text}"
    );
    assert!(!output_text(&check(&[
        "--principal",
        "contractor",
        "--action",
        "invoke",
        "--model",
        "m",
    ]))
    .contains("warning"));

    let cases = dir.path.join("cases.json");
    std::fs::write(
        &cases,
        json!([
            {"name": "engineers embed", "principal": {"id": "tester"}, "action": "embed", "model": "e", "expect": "allow"},
            {"name": "a JWT contractor chats", "principal": {"type": "user", "id": "bob", "issuer": "idp", "groups": ["contractors"]}, "action": "stream", "model": "m", "expect": "allow"},
            {"name": "eu stays off aws", "principal": {"id": "eu-app"}, "action": "use_backend", "backend": "aws", "expect": "deny"},
            {"name": "admin from anywhere", "principal": {}, "action": "admin", "admin_api": "reload", "write": true, "context": {"client_ip": "192.0.2.1"}, "expect": "allow"},
            {"name": "contractors embed", "principal": {"id": "contractor"}, "action": "embed", "model": "e", "expect": "allow"},
            {"name": "eu embeds, but only aws serves it", "principal": {"id": "eu-app"}, "action": "embed", "model": "e", "expect": "deny"}
        ])
        .to_string(),
    )
    .unwrap();
    let out = skygate(&[
        "policy",
        "check",
        "--config",
        c,
        "--cases",
        cases.to_str().unwrap(),
    ]);
    let text = output_text(&out);
    // 1: a case not met (2 would be an error: no answer).
    assert_eq!(out.status.code(), Some(1), "one case fails: {text}");
    for ok in [
        "engineers embed: allow (as expected)",
        "a JWT contractor chats: allow (as expected)",
        "eu stays off aws: deny (as expected)",
        "admin from anywhere: allow (as expected)",
    ] {
        assert!(text.contains(ok), "{ok}: {text}");
    }
    assert!(
        text.contains("contractors embed: deny (EXPECTED allow)"),
        "{text}"
    );
    // As the gateway: permitted, but every target forbidden is a denial.
    assert!(
        text.contains("eu embeds, but only aws serves it: deny (as expected)")
            && text.contains("forbidden on every backend of route `emb`: aws (eu-stays-in-eu)"),
        "{text}"
    );
    // A question the gateway never asks is an error, not an answer.
    for (action, model, why) in [
        ("stream", "e", "a call to route `emb` is never `stream`"),
        ("embed", "m", "a call to route `chat` is never `embed`"),
    ] {
        let out = skygate(&[
            "policy",
            "check",
            "--config",
            c,
            "--principal",
            "tester",
            "--action",
            action,
            "--model",
            model,
        ]);
        let text = output_text(&out);
        assert!(out.status.code() == Some(2) && text.contains(why), "{text}");
    }
    // The resource in one flag, Cedar's way or short.
    for resource in ["Skygate::Model::\"e\"", "model:e"] {
        let out = skygate(&[
            "policy",
            "check",
            "--config",
            c,
            "--principal",
            "contractor",
            "--action",
            "embed",
            "--resource",
            resource,
            "--expect",
            "deny",
        ]);
        assert!(out.status.success(), "{resource}: {}", output_text(&out));
    }
    let out = skygate(&[
        "policy",
        "check",
        "--config",
        c,
        "--principal",
        "eu-app",
        "--action",
        "use_backend",
        "--resource",
        "Skygate::Backend::\"gcp\"",
        "--expect",
        "allow",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = skygate(&[
        "policy",
        "check",
        "--config",
        c,
        "--principal",
        "x",
        "--action",
        "invoke",
        "--resource",
        "Skygate::Tenant::\"t1\"",
    ]);
    assert!(
        !out.status.success() && output_text(&out).contains("not a resource type"),
        "{}",
        output_text(&out)
    );
    // Malformed resources are errors, never a decision.
    for resource in [
        "",
        "model",
        "Skygate::Model::\"unterminated",
        "Skygate::Model",
        "model:",
    ] {
        let out = skygate(&[
            "policy",
            "check",
            "--config",
            c,
            "--principal",
            "x",
            "--action",
            "invoke",
            "--resource",
            resource,
        ]);
        let text = output_text(&out);
        assert!(
            out.status.code() == Some(2) && !text.contains(": allow") && !text.contains(": deny"),
            "{resource:?}: {text}"
        );
    }
    let out = skygate(&[
        "policy",
        "check",
        "--config",
        c,
        "--principal",
        "tester",
        "--action",
        "embed",
        "--route",
        "emb",
        "--model",
        "m",
    ]);
    assert!(
        output_text(&out).contains("route `emb` does not serve model `m`"),
        "{}",
        output_text(&out)
    );

    // A bad policy: `validate` names the file, line, column and policy.
    std::fs::write(
        dir.path.join("main.cedar"),
        format!("{POLICIES}\n@id(\"typo\")\npermit (principal, action == Skygate::Action::\"invoke\", resource)\nwhen {{ resource.rout == \"chat\" }};\n"),
    )
    .unwrap();
    let out = skygate(&["validate", "--config", c]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("policy.files") && text.contains("main.cedar:21:") && text.contains("`typo`"),
        "{text}"
    );
    let out = skygate(&[
        "policy",
        "check",
        "--config",
        c,
        "--principal",
        "x",
        "--action",
        "invoke",
        "--model",
        "m",
    ]);
    assert!(
        !out.status.success() && output_text(&out).contains("main.cedar:21:"),
        "{}",
        output_text(&out)
    );
}

/// `policy check --demo` answers from the demo's own config and policies
/// (policies/demo.cedar), as the README shows; an admin API part that does
/// not exist is an error (exit 2), not a decision.
#[test]
fn policy_check_runs_on_the_demos_policies() {
    let demo = |args: &[&str]| {
        let mut all = vec!["policy", "check", "--demo"];
        all.extend_from_slice(args);
        skygate(&all)
    };
    // The README's line.
    let out = demo(&[
        "--type",
        "user",
        "--principal",
        "bob",
        "--group",
        "contractors",
        "--action",
        "embed",
        "--model",
        "demo-embed",
        "--expect",
        "deny",
    ]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("request: deny (as expected)"), "{text}");
    let out = demo(&[
        "--type",
        "user",
        "--principal",
        "bob",
        "--group",
        "contractors",
        "--action",
        "invoke",
        "--model",
        "demo-chat",
        "--expect",
        "deny",
    ]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("request: allow (EXPECTED deny)") && text.contains("contractors-chat-only"),
        "{text}"
    );
    let out = demo(&["--action", "admin", "--admin-api", "relaod"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "admin API part `relaod`: use one of routes, backends, reload, metrics, cache"
        ),
        "{text}"
    );
    let out = demo(&["--action", "admin", "--admin-api", "cache", "--write"]);
    assert!(out.status.success(), "{}", output_text(&out));
}
