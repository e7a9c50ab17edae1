use super::engine::{Action, Engine, Facts, Kind};
use super::Authorize;
use crate::{Decision, Identity, Plugin, RequestCtx};
use skygate_config::{AuthMethod, Config, Policy, PolicyFile, PolicyMode, Principal};
use std::path::PathBuf;
use std::sync::Arc;

const CONFIG: &str = r#"
listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
auth:
  api_keys:
    - { key: key-00000001, principal: app, tenant: t1, groups: [eng] }
backends:
  aws: { kind: openai, url: http://a/v1, cloud: aws, region: us-east-1 }
  gcp: { kind: openai, url: http://g/v1, cloud: gcp, region: europe-west4, classification: restricted }
  fn: { kind: http_function, url: http://f }
routes:
  chat: { match: { path: /v1/chat/completions, models: [m1, m2] }, targets: [ { backend: aws }, { backend: gcp } ] }
  emb: { match: { path: /v1/embeddings, models: [e1] }, targets: [ { backend: aws } ] }
  func: { match: { path_prefix: /v1/functions/f }, targets: [ { backend: fn } ] }
"#;

fn config() -> Config {
    skygate_config::load_str(CONFIG, "t.yaml", &|_| None).unwrap()
}

fn policy(texts: &[(&str, &str)]) -> Policy {
    Policy {
        files: texts
            .iter()
            .map(|(p, t)| PolicyFile {
                path: PathBuf::from(p),
                text: t.to_string(),
            })
            .collect(),
        patterns: Vec::new(),
        schema: None,
        mode: PolicyMode::Enforce,
        audit_log: skygate_config::AuditLog::Off,
    }
}

fn engine(text: &str) -> Engine {
    Engine::new(&policy(&[("p.cedar", text)]), &config()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(text: &str) -> String {
    match Engine::new(&policy(&[("dir/p.cedar", text)]), &config()) {
        Ok(_) => panic!("loaded: {text}"),
        Err(e) => e.join("\n"),
    }
}

fn principal(id: &str, tenant: Option<&str>, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        issuer: None,
        tenant: tenant.map(Into::into),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: Default::default(),
    }
}

fn facts() -> Facts {
    Facts {
        client_ip: Some("10.1.2.3".parse().unwrap()),
        mtls: false,
        route: "chat".into(),
        stream: false,
        request_bytes: 100,
        estimated_tokens: 25,
        hour: 10,
        weekday: 2,
    }
}

fn call(
    e: &Engine,
    p: &Principal,
    kind: Kind,
    action: Action,
    route: usize,
    model: Option<&str>,
    f: &Facts,
) -> super::engine::Verdict {
    let who = e.subject(p, kind).unwrap();
    e.call(&who, action, route, model, &e.context(f).unwrap())
}

#[test]
fn deny_by_default_permit_and_forbid_wins() {
    let app = principal("app", Some("t1"), &["eng"]);
    let e = engine("");
    let v = call(
        &e,
        &app,
        Kind::ApiKey,
        Action::Invoke,
        0,
        Some("m1"),
        &facts(),
    );
    assert!(!v.allow && v.policies.is_empty(), "{v:?}");

    let e = engine(
        r#"
@id("eng-calls")
permit (principal in Skygate::Group::"eng", action in Skygate::Action::"call", resource);
forbid (principal, action == Skygate::Action::"embed", resource == Skygate::Model::"e1")
when { context.hour < 8 };
"#,
    );
    let v = call(
        &e,
        &app,
        Kind::ApiKey,
        Action::Invoke,
        0,
        Some("m1"),
        &facts(),
    );
    assert!(v.allow);
    assert_eq!(v.policies, ["eng-calls"]);
    let mut night = facts();
    night.hour = 3;
    let v = call(&e, &app, Kind::ApiKey, Action::Embed, 1, Some("e1"), &night);
    assert!(!v.allow);
    // Unnamed policies are named by file and line.
    assert_eq!(v.policies, ["p.cedar:4"]);
    assert_eq!(e.location("p.cedar:4"), Some("p.cedar:4:1"));
    assert!(
        call(
            &e,
            &app,
            Kind::ApiKey,
            Action::Embed,
            1,
            Some("e1"),
            &facts()
        )
        .allow
    );
    let stranger = principal("x", None, &[]);
    assert!(
        !call(
            &e,
            &stranger,
            Kind::ApiKey,
            Action::Invoke,
            0,
            Some("m1"),
            &facts()
        )
        .allow
    );
}

#[test]
fn principals_by_kind_tenant_tags_and_context() {
    let e = engine(
        r#"
permit (principal == Skygate::User::"idp|alice", action == Skygate::Action::"stream", resource in Skygate::Route::"chat")
when { principal.issuer == "idp" && principal.hasTag("dept") && principal.getTag("dept") == "ml" };
permit (principal in Skygate::Tenant::"t1", action == Skygate::Action::"invoke", resource == Skygate::Route::"func")
when { context.client_ip.isInRange(ip("10.0.0.0/8")) && context.request_bytes < 1000 };
"#,
    );
    let mut alice = principal("alice", None, &[]);
    alice.issuer = Some("idp".into());
    alice.attributes.insert("dept".into(), "ml".into());
    assert!(
        call(
            &e,
            &alice,
            Kind::User,
            Action::Stream,
            0,
            Some("m2"),
            &facts()
        )
        .allow
    );
    // The same id as an API key is another principal.
    assert!(
        !call(
            &e,
            &alice,
            Kind::ApiKey,
            Action::Stream,
            0,
            Some("m2"),
            &facts()
        )
        .allow
    );
    // Another issuer's alice is another user.
    let mut other = alice.clone();
    other.issuer = Some("evil".into());
    assert!(
        !call(
            &e,
            &other,
            Kind::User,
            Action::Stream,
            0,
            Some("m2"),
            &facts()
        )
        .allow
    );
    alice.attributes.insert("dept".into(), "sales".into());
    assert!(
        !call(
            &e,
            &alice,
            Kind::User,
            Action::Stream,
            0,
            Some("m2"),
            &facts()
        )
        .allow
    );

    let app = principal("app", Some("t1"), &[]);
    assert!(call(&e, &app, Kind::ApiKey, Action::Invoke, 2, None, &facts()).allow);
    let mut f = facts();
    f.client_ip = Some("192.168.0.1".parse().unwrap());
    assert!(!call(&e, &app, Kind::ApiKey, Action::Invoke, 2, None, &f).allow);
    let mut f = facts();
    f.request_bytes = 5000;
    assert!(!call(&e, &app, Kind::ApiKey, Action::Invoke, 2, None, &f).allow);
}

#[test]
fn backends_are_narrowed_only_by_forbids() {
    let app = principal("app", Some("t1"), &[]);
    let e = engine("permit (principal, action, resource);");
    assert!(!e.checks_backends());
    let e = engine(
        r#"
permit (principal, action in Skygate::Action::"call", resource);
@id("eu-data-stays-in-eu")
forbid (principal in Skygate::Tenant::"t1", action == Skygate::Action::"use_backend", resource)
unless { resource.region like "europe-*" };
"#,
    );
    assert!(e.checks_backends());
    let who = e.subject(&app, Kind::ApiKey).unwrap();
    let cx = e.context(&facts()).unwrap();
    // Backends are in name order: aws, fn, gcp.
    let v = e
        .backend_forbidden(&who, 0, &cx)
        .expect("aws is forbidden for t1");
    assert_eq!(v.policies, ["eu-data-stays-in-eu"]);
    assert!(
        e.backend_forbidden(&who, 2, &cx).is_none(),
        "gcp is in europe"
    );
    let other = e
        .subject(&principal("b", Some("t2"), &[]), Kind::ApiKey)
        .unwrap();
    assert!(e.backend_forbidden(&other, 0, &cx).is_none());
}

#[test]
fn a_forbid_that_fails_to_evaluate_denies() {
    let e = engine(
        r#"
permit (principal, action, resource);
@id("overflow")
forbid (principal, action in Skygate::Action::"call", resource)
when { context.request_bytes * 9223372036854775807 > 0 };
"#,
    );
    let app = principal("app", None, &[]);
    let mut f = facts();
    f.request_bytes = 0;
    assert!(call(&e, &app, Kind::ApiKey, Action::Invoke, 0, Some("m1"), &f).allow);
    f.request_bytes = 2;
    let v = call(&e, &app, Kind::ApiKey, Action::Invoke, 0, Some("m1"), &f);
    assert!(!v.allow, "{v:?}");
    assert!(v.errors.iter().any(|e| e.contains("overflow")), "{v:?}");
}

#[test]
fn load_errors_name_file_line_and_policy() {
    let e = errors("permit (principal, action, resource)\n");
    assert!(e.starts_with("dir/p.cedar:"), "{e}");
    let e = errors(
        "permit (principal, action, resource);\n@id(\"bad-attr\")\npermit (principal, action == Skygate::Action::\"invoke\", resource)\n  when { resource.nope == 1 };\n",
    );
    assert!(
        e.contains("dir/p.cedar:4:") && e.contains("policy `bad-attr`"),
        "{e}"
    );
    let e = errors("permit (principal == Skygate::Nobody::\"x\", action, resource);");
    assert!(e.contains("dir/p.cedar:1:") && e.contains("Nobody"), "{e}");
    let e = errors("@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);");
    assert!(
        e.contains("dir/p.cedar:2:1: policy id `a` is already used at dir/p.cedar:1:1"),
        "{e}"
    );
    let e = errors("permit (principal == ?principal, action, resource);");
    assert!(e.contains("templates"), "{e}");
    // A custom schema must keep Skygate's types and actions.
    let mut p = policy(&[("p.cedar", "permit (principal, action, resource);")]);
    p.schema = Some(PolicyFile {
        path: "s.cedarschema".into(),
        text: "namespace Skygate { entity Tenant; }".into(),
    });
    let e = Engine::new(&p, &config()).err().unwrap().join("\n");
    assert!(
        e.contains("s.cedarschema: the schema lacks entity type Skygate::ApiKey"),
        "{e}"
    );
    p.schema = Some(PolicyFile {
        path: "s.cedarschema".into(),
        text: format!(
            "{}\nnamespace Corp {{ entity Team; }}",
            super::engine::SCHEMA
        ),
    });
    assert!(Engine::new(&p, &config()).is_ok());
}

#[test]
fn ids_across_files_and_admin() {
    let p = policy(&[
        ("a.cedar", "permit (principal, action == Skygate::Action::\"invoke\", resource);"),
        (
            "b.cedar",
            "\n\npermit (principal == Skygate::AdminToken::\"admin\", action == Skygate::Action::\"admin\", resource)\nwhen { !resource.write };",
        ),
    ]);
    let e = Engine::new(&p, &config()).unwrap();
    assert_eq!(e.len(), 2);
    assert!(e.can_permit_admin());
    let v = e.admin("routes", false, None, (10, 2));
    assert!(v.allow);
    assert_eq!(v.policies, ["b.cedar:3"]);
    assert!(!e.admin("reload", true, None, (10, 2)).allow);
    assert!(
        !engine("permit (principal, action == Skygate::Action::\"invoke\", resource);")
            .can_permit_admin()
    );
}

fn ctx_for(
    p: Principal,
    method: AuthMethod,
    route: Option<usize>,
    model: Option<&str>,
) -> RequestCtx {
    let mut ctx = RequestCtx::new();
    ctx.identity = Some(Identity {
        principal: Arc::new(p),
        method,
    });
    ctx.route = route;
    ctx.route_name = route.map(|r| ["chat", "emb", "func"][r].to_string());
    ctx.model = model.map(Into::into);
    ctx
}

fn plugin(text: &str, mode: PolicyMode) -> Authorize {
    let mut c = config();
    let mut p = policy(&[("p.cedar", text)]);
    p.mode = mode;
    c.policy = Some(p);
    Authorize::from_config(&c).unwrap().unwrap()
}

#[tokio::test]
async fn the_plugin_enforces_shadows_lists_and_narrows() {
    let req = pingora_http::RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    let text = r#"
permit (principal, action in Skygate::Action::"call", resource == Skygate::Model::"m1");
forbid (principal, action == Skygate::Action::"use_backend", resource) when { resource.classification == "restricted" };
"#;
    let p = plugin(text, PolicyMode::Enforce);
    let app = principal("app", Some("t1"), &[]);

    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m1"));
    assert!(matches!(
        p.on_request(crate::Incoming::header_only(&req), &mut ctx)
            .await,
        Decision::Continue
    ));
    assert_eq!(
        ctx.forbidden_backends,
        [2],
        "gcp (backends in name order) is restricted"
    );

    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m2"));
    match p
        .on_request(crate::Incoming::header_only(&req), &mut ctx)
        .await
    {
        Decision::Respond(e) => {
            assert_eq!(e.status(), 403);
            assert!(
                e.message.contains("not allowed to invoke model `m2`"),
                "{}",
                e.message
            );
        }
        Decision::Continue | Decision::Answer(_) => panic!("m2 is not permitted"),
    }

    // Every target forbidden: a 403 that says so.
    let p2 = plugin(
        "permit (principal, action, resource);\nforbid (principal, action == Skygate::Action::\"use_backend\", resource);",
        PolicyMode::Enforce,
    );
    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m1"));
    match p2
        .on_request(crate::Incoming::header_only(&req), &mut ctx)
        .await
    {
        Decision::Respond(e) => assert!(
            e.message.contains("none of the backends of route `chat`"),
            "{}",
            e.message
        ),
        Decision::Continue | Decision::Answer(_) => panic!("no backend is allowed"),
    }

    // Shadow: the same denial lets the request through, untouched.
    let shadow = plugin(text, PolicyMode::Shadow);
    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m2"));
    assert!(matches!(
        shadow
            .on_request(crate::Incoming::header_only(&req), &mut ctx)
            .await,
        Decision::Continue
    ));
    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m1"));
    assert!(matches!(
        shadow
            .on_request(crate::Incoming::header_only(&req), &mut ctx)
            .await,
        Decision::Continue
    ));
    assert!(ctx.forbidden_backends.is_empty(), "shadow never narrows");

    // The model list: only what the caller may call.
    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, None, None);
    ctx.list_models = true;
    assert!(matches!(
        p.on_request(crate::Incoming::header_only(&req), &mut ctx)
            .await,
        Decision::Continue
    ));
    assert_eq!(ctx.visible_models, Some(vec!["m1".to_string()]));

    // No identity: nothing to permit.
    let mut ctx = RequestCtx::new();
    ctx.route = Some(0);
    assert!(
        matches!(p.on_request(crate::Incoming::header_only(&req), &mut ctx).await, Decision::Respond(e) if e.status() == 403)
    );
}

#[test]
fn config_check_needs_authentication_and_warns_about_admin() {
    let mut c = skygate_config::load_str(
        "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n",
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    c.policy = Some(policy(&[(
        "p.cedar",
        "permit (principal, action, resource) when { resource.nope };",
    )]));
    let (errors, _) = super::check(&c);
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "policy.files" && m.contains("p.cedar:1:")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "policy" && m.contains("auth.api_keys")),
        "{errors:?}"
    );
    let mut c = config();
    c.policy = Some(policy(&[(
        "p.cedar",
        "permit (principal, action == Skygate::Action::\"invoke\", resource);",
    )]));
    let (errors, warnings) = super::check(&c);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        warnings[0].1.contains("admin API will answer 403"),
        "{warnings:?}"
    );
}

#[test]
fn the_shipped_policies_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files = vec![root.join("demo.cedar")];
    files.extend(skygate_config::expand_files(&root.join("examples/*.cedar")).unwrap());
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let p = policy(&[(path.to_str().unwrap(), &text)]);
        let e = Engine::new(&p, &config()).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(!e.is_empty(), "{}", path.display());
    }
    // The schema file is the one built in.
    assert_eq!(
        std::fs::read_to_string(root.join("skygate.cedarschema")).unwrap(),
        super::engine::SCHEMA
    );
}

#[test]
fn a_forbid_on_an_action_group_narrows_backends() {
    // A custom schema that puts use_backend in a group of its own: a forbid
    // written against the group must still keep calls off the backend.
    let schema = super::engine::SCHEMA.replace(
        "action use_backend appliesTo",
        "action placement;\n  action use_backend in [placement] appliesTo",
    );
    assert_ne!(schema, super::engine::SCHEMA);
    let mut p = policy(&[(
        "p.cedar",
        "permit (principal, action in Skygate::Action::\"call\", resource);\n@id(\"no-aws\")\nforbid (principal, action in Skygate::Action::\"placement\", resource) when { resource.cloud == \"aws\" };",
    )]);
    p.schema = Some(PolicyFile {
        path: "s.cedarschema".into(),
        text: schema,
    });
    let e = Engine::new(&p, &config()).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        e.checks_backends(),
        "the group forbid applies to use_backend"
    );
    let who = e
        .subject(&principal("app", Some("t1"), &[]), Kind::ApiKey)
        .unwrap();
    let cx = e.context(&facts()).unwrap();
    let c = e.decide_call(&who, Action::Invoke, 0, Some("m1"), &cx);
    assert!(c.verdict.allow);
    let denied: Vec<usize> = c.denied.iter().map(|(b, _)| *b).collect();
    assert_eq!(denied, [0], "aws (first in name order) is forbidden");
    assert_eq!(c.denied[0].1.policies, ["no-aws"]);
    // The embeddings route has only aws: nothing left, so denied.
    let c = e.decide_call(&who, Action::Embed, 1, Some("e1"), &cx);
    assert!(!c.verdict.allow && c.no_backend, "{c:?}");
}

#[test]
fn unnamed_policies_on_one_line_get_distinct_ids() {
    let e = engine(
        "permit (principal, action == Skygate::Action::\"invoke\", resource); permit (principal, action == Skygate::Action::\"embed\", resource);",
    );
    assert_eq!(e.len(), 2);
    let app = principal("app", None, &[]);
    let v = call(
        &e,
        &app,
        Kind::ApiKey,
        Action::Invoke,
        0,
        Some("m1"),
        &facts(),
    );
    let w = call(
        &e,
        &app,
        Kind::ApiKey,
        Action::Embed,
        1,
        Some("e1"),
        &facts(),
    );
    assert!(v.allow && w.allow);
    assert_eq!(v.policies, ["p.cedar:1"]);
    assert_eq!(w.policies, ["p.cedar:1:68"]);
}

#[tokio::test]
async fn an_absurd_max_tokens_does_not_wrap_past_a_token_limit() {
    let req = pingora_http::RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    let p = plugin(
        "permit (principal, action in Skygate::Action::\"call\", resource) when { context.estimated_tokens <= 1000 };",
        PolicyMode::Enforce,
    );
    let app = principal("app", Some("t1"), &[]);
    let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m1"));
    ctx.request_bytes = 400;
    ctx.max_tokens = Some(500);
    assert!(matches!(
        p.on_request(crate::Incoming::header_only(&req), &mut ctx)
            .await,
        Decision::Continue
    ));
    for huge in [u64::MAX, u64::MAX - 50, i64::MAX as u64 + 1] {
        let mut ctx = ctx_for(app.clone(), AuthMethod::ApiKey, Some(0), Some("m1"));
        ctx.request_bytes = 400;
        ctx.max_tokens = Some(huge);
        assert!(
            matches!(p.on_request(crate::Incoming::header_only(&req), &mut ctx).await, Decision::Respond(e) if e.status() == 403),
            "max_tokens {huge} got through"
        );
    }
}

#[tokio::test]
async fn a_policy_that_fails_to_load_fails_closed() {
    // Config checks catch this before a config is taken; should a bad set
    // get past them, every call and the admin API are denied.
    let mut c = config();
    c.policy = Some(policy(&[(
        "p.cedar",
        "permit (principal, action, resource",
    )]));
    let chain = crate::Chain::from_config(&c, &Default::default());
    assert!(chain.policy_failed());
    assert!(chain.policy().is_none());
    let req = pingora_http::RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    let mut ctx = ctx_for(
        principal("app", Some("t1"), &[]),
        AuthMethod::ApiKey,
        Some(0),
        Some("m1"),
    );
    let d = chain
        .on_request(crate::Incoming::header_only(&req), &mut ctx)
        .await;
    assert!(matches!(d, Decision::Respond(e) if e.status() == 403));
    c.policy = Some(policy(&[(
        "p.cedar",
        "permit (principal, action, resource);",
    )]));
    assert!(!crate::Chain::from_config(&c, &Default::default()).policy_failed());
}

/// Slicing hands Cedar only the policies whose scope can match; every
/// decision, reason and error must be what the whole set gives.
#[test]
fn slicing_decides_as_the_whole_set() {
    let text = r#"
@id("any") permit (principal, action == Skygate::Action::"invoke", resource == Skygate::Model::"m1");
@id("eq-key") permit (principal == Skygate::ApiKey::"app", action in Skygate::Action::"call", resource);
@id("in-group") permit (principal in Skygate::Group::"eng", action in [Skygate::Action::"stream", Skygate::Action::"embed"], resource in Skygate::Route::"emb");
@id("in-tenant") permit (principal in Skygate::Tenant::"t2", action, resource in Skygate::Route::"chat") when { context.hour < 18 };
@id("is-user") permit (principal is Skygate::User, action == Skygate::Action::"invoke", resource is Skygate::Route);
@id("is-in") permit (principal is Skygate::User in Skygate::Group::"ops", action in Skygate::Action::"call", resource is Skygate::Model in Skygate::Route::"chat");
@id("err") forbid (principal in Skygate::Group::"risky", action, resource) when { context.request_bytes * 9223372036854775807 > 1 };
@id("night") forbid (principal is Skygate::ApiKey, action in Skygate::Action::"call", resource) when { context.hour > 22 };
@id("res-eq") forbid (principal, action == Skygate::Action::"use_backend", resource == Skygate::Backend::"gcp") when { principal has tenant && principal.tenant == "t1" };
@id("res-any") forbid (principal in Skygate::Tenant::"t2", action == Skygate::Action::"use_backend", resource) unless { resource.cloud == "gcp" };
@id("admin-ro") permit (principal == Skygate::AdminToken::"admin", action == Skygate::Action::"admin", resource == Skygate::AdminApi::"routes");
@id("admin-any") permit (principal, action == Skygate::Action::"admin", resource) when { !resource.write };
@id("admin-no") forbid (principal, action, resource is Skygate::AdminApi) when { context.hour == 3 };
"#;
    let sliced = engine(text);
    let whole = engine(text).unsliced();
    let mut user = principal("app", None, &["ops"]);
    user.issuer = Some("idp".into());
    let who = [
        (principal("app", Some("t1"), &["eng"]), Kind::ApiKey),
        (principal("other", Some("t2"), &["risky"]), Kind::ApiKey),
        (principal("x", None, &[]), Kind::ApiKey),
        (user, Kind::User),
        (principal("svc", Some("t2"), &["eng", "ops"]), Kind::Service),
    ];
    let calls: [(usize, Option<&str>); 6] = [
        (0, Some("m1")),
        (0, Some("m2")),
        (0, None),
        (1, Some("e1")),
        (1, None),
        (2, None),
    ];
    let sorted = |mut v: super::engine::Verdict| {
        v.policies.sort();
        v.errors.sort();
        v
    };
    let mut decisions = 0;
    let mut allowed = 0;
    for (p, kind) in &who {
        let a = sliced.subject(p, *kind).unwrap();
        let b = whole.subject(p, *kind).unwrap();
        for hour in [3, 10, 20, 23] {
            for bytes in [0, 5] {
                let mut f = facts();
                f.hour = hour;
                f.request_bytes = bytes;
                let cx = sliced.context(&f).unwrap();
                for action in [Action::Invoke, Action::Stream, Action::Embed] {
                    for &(route, model) in &calls {
                        let x = sorted(sliced.call(&a, action, route, model, &cx));
                        let y = sorted(whole.call(&b, action, route, model, &cx));
                        assert_eq!(x, y, "{p:?} {action:?} {route} {model:?} {hour}h");
                        decisions += 1;
                        allowed += usize::from(x.allow);
                    }
                }
                for backend in 0..3 {
                    let x = sliced.backend_forbidden(&a, backend, &cx).map(sorted);
                    let y = whole.backend_forbidden(&b, backend, &cx).map(sorted);
                    assert_eq!(x, y, "{p:?} backend {backend}");
                    decisions += 1;
                }
                for part in ["routes", "backends", "reload"] {
                    for write in [false, true] {
                        let x = sorted(sliced.admin(part, write, None, (hour, 2)));
                        let y = sorted(whole.admin(part, write, None, (hour, 2)));
                        assert_eq!(x, y, "admin {part} {write} {hour}h");
                    }
                }
            }
        }
    }
    // Not a vacuous comparison: both outcomes, and errors, occur.
    assert!(
        decisions > 500 && allowed > 20 && allowed < decisions / 2,
        "{allowed}/{decisions}"
    );
}

/// A call verdict with its policy and error lists sorted (Cedar gives
/// them in no set order).
fn same_order(mut c: super::engine::CallVerdict) -> super::engine::CallVerdict {
    let sort = |v: &mut super::engine::Verdict| {
        v.policies.sort();
        v.errors.sort();
    };
    sort(&mut c.verdict);
    for (_, v) in &mut c.denied {
        sort(v);
    }
    c
}

/// The decision cache answers every call exactly as a fresh decision
/// would, across principals, calls and contexts (body sizes and hours on
/// and off the policies' thresholds, addresses in and out of a range), and
/// it does hit: a varying body size alone does not make each call a miss.
#[test]
fn cached_decisions_are_the_fresh_ones() {
    let text = r#"
@id("tenant") permit (principal in Skygate::Tenant::"t1", action in Skygate::Action::"call", resource in Skygate::Route::"chat") when { context.request_bytes < 1000 };
@id("office") permit (principal in Skygate::Group::"ops", action, resource) when { context.client_ip.isInRange(ip("10.0.0.0/8")) && context.hour >= 9 && context.hour < 18 };
@id("big") forbid (principal, action in Skygate::Action::"call", resource) when { context.estimated_tokens > 400 };
@id("err") forbid (principal in Skygate::Group::"risky", action, resource) when { context.request_bytes * 9223372036854775807 > 1 };
@id("res") forbid (principal in Skygate::Tenant::"t2", action == Skygate::Action::"use_backend", resource) unless { resource.cloud == "gcp" };
@id("emb") permit (principal, action == Skygate::Action::"embed", resource) when { context.stream == false };
"#;
    let e = engine(text);
    let who = [
        (principal("app", Some("t1"), &["eng"]), Kind::ApiKey),
        (
            principal("other", Some("t2"), &["risky", "ops"]),
            Kind::ApiKey,
        ),
        (principal("x", None, &["ops"]), Kind::Service),
    ];
    let calls: [(Action, usize, Option<&str>); 5] = [
        (Action::Invoke, 0, Some("m1")),
        (Action::Stream, 0, Some("m2")),
        (Action::Invoke, 0, Some("unlisted")),
        (Action::Embed, 1, Some("e1")),
        (Action::Invoke, 2, None),
    ];
    let (mut asked, mut allowed, mut errors) = (0, 0, 0);
    for round in 0..2 {
        for (p, kind) in &who {
            let subject = e.subject(p, *kind).unwrap();
            for bytes in [0, 1, 500, 999, 1000, 1001, 1600, 5000] {
                for hour in [8, 9, 17, 18] {
                    for ip in ["10.1.2.3", "192.168.0.1"] {
                        let mut f = facts();
                        f.request_bytes = bytes;
                        f.estimated_tokens = bytes / 4;
                        f.hour = hour;
                        f.client_ip = Some(ip.parse().unwrap());
                        let cx = e.context(&f).unwrap();
                        for &(action, route, model) in &calls {
                            let fresh =
                                same_order(e.decide_call(&subject, action, route, model, &cx));
                            let cached = e.authorize(p, *kind, action, route, model, &f).unwrap();
                            assert_eq!(
                                same_order(cached.call.clone()), fresh,
                                "round {round}: {p:?} {action:?} {model:?} {bytes} bytes {hour}h {ip}"
                            );
                            assert_eq!(cached.principal, subject.uid().to_string());
                            asked += 1;
                            allowed += usize::from(fresh.verdict.allow);
                            errors += usize::from(!fresh.verdict.errors.is_empty());
                        }
                    }
                }
            }
        }
    }
    // Not vacuous: both outcomes and evaluation errors occur.
    assert!(
        allowed > 50 && allowed < asked / 2 && errors > 0,
        "{allowed}/{asked}, {errors} errors"
    );
    // Hits: the second round, entirely (`err` multiplies the size, so this
    // set keys it exactly and the first round misses).
    let (hits, misses) = e.decision_cache();
    assert_eq!(hits + misses, asked as u64);
    assert!(hits >= asked as u64 / 2, "{hits} hits, {misses} misses");
}

/// Body sizes only compared with numbers share a decision: a varying body
/// does not make every call a miss.
#[test]
fn the_cache_keys_compared_sizes_by_threshold() {
    let e = engine(
        r#"@id("t") permit (principal in Skygate::Tenant::"t1", action in Skygate::Action::"call", resource) when { context.request_bytes < 100000 && context.hour != 25 };"#,
    );
    let p = principal("app", Some("t1"), &[]);
    for bytes in 1..=1000u64 {
        let mut f = facts();
        f.request_bytes = bytes * 37;
        f.estimated_tokens = bytes;
        f.hour = (bytes % 24) as u8;
        f.client_ip = Some(std::net::IpAddr::from([
            10,
            0,
            (bytes / 256) as u8,
            bytes as u8,
        ]));
        let d = e
            .authorize(&p, Kind::ApiKey, Action::Invoke, 0, Some("m1"), &f)
            .unwrap();
        assert!(d.call.verdict.allow);
    }
    let mut f = facts();
    f.request_bytes = 100_000;
    let d = e
        .authorize(&p, Kind::ApiKey, Action::Invoke, 0, Some("m1"), &f)
        .unwrap();
    assert!(!d.call.verdict.allow, "at the threshold: denied");
    assert_eq!(e.decision_cache(), (999, 2));
}
