//! Whole-file loader tests: a good file, every error at once, syntax errors,
//! cross-section checks.
use crate::load_str;
use crate::runtime::*;
use std::time::Duration;

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("sk-from-env-123".into()),
        "ADMIN" => Some("admin-token-1".into()),
        _ => None,
    }
}

const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090, token: "${ADMIN}" }
auth:
  api_keys:
    - { key: "${KEY}", principal: app }
backends:
  a:
    kind: openai
    url: http://127.0.0.1:9001/v1
    api_key: ${KEY}
    timeouts: { connect: 250ms, first_byte: 2s }
  f:
    kind: http_function
    url: https://fn.example.com/score
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m1, m2] }
    targets: [ { backend: a, weight: 3 } ]
    max_body: 1MiB
  score:
    match: { path_prefix: /fn/score/ }
    targets: [ { backend: f } ]
"#;

#[test]
fn loads_a_good_file() {
    let c = load_str(GOOD, "good.yaml", &env).unwrap();
    assert_eq!(c.listen.port(), 8080);
    assert_eq!(c.admin.token.as_ref().unwrap().expose(), "admin-token-1");
    assert_eq!(c.auth.api_keys[0].sha256, crate::sha256(b"sk-from-env-123"));
    let a = &c.backends[0];
    assert_eq!(a.url.base_path, "/v1");
    assert_eq!(a.timeouts.connect, Duration::from_millis(250));
    assert_eq!(a.timeouts.idle, Timeouts::default().idle);
    assert!(c.backends[1].url.tls);
    let chat = &c.routes[0];
    assert_eq!(chat.operation, Operation::ChatCompletions);
    assert_eq!(chat.max_body, 1 << 20);
    assert_eq!(
        chat.targets[0],
        Target {
            backend: 0,
            weight: 3,
            priority: 0
        }
    );
    assert_eq!(c.routes[1].path, PathMatch::Prefix("/fn/score".into()));
    assert_eq!(c.routes[1].max_body, DEFAULT_MAX_BODY);
}

#[test]
fn secrets_do_not_print() {
    let c = load_str(GOOD, "good.yaml", &env).unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("sk-from-env-123"), "{dump}");
    assert!(!dump.contains("admin-token-1"));
}

#[test]
fn reports_every_error_with_file_line_and_path() {
    let bad = r#"
listen: nowhere
admin: { listen: 127.0.0.1:9090 }
backends:
  a:
    kind: grpc
    url: http://x/v1
    timeouts: { connect: 5 }
  b:
    kind: openai
    url: http://x/v1
    colour: blue
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m] }
    targets:
      - backend: missing
"#;
    let errs = load_str(bad, "bad.yaml", &env).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("bad.yaml:2: listen: `nowhere` is not an address"),
        "{text:#?}"
    );
    assert!(has("bad.yaml:6: backends.a.kind: `grpc` is not a backend kind: use one of openai, http_function"), "{text:#?}");
    assert!(
        has("bad.yaml:8: backends.a.timeouts.connect: `5` is not a duration"),
        "{text:#?}"
    );
    assert!(
        has("bad.yaml:12: backends.b.colour: unknown field `colour`, expected one of"),
        "{text:#?}"
    );
    assert!(
        has("bad.yaml:17: routes.chat.targets[0].backend: unknown backend `missing`"),
        "{text:#?}"
    );
    assert_eq!(errs.len(), 5, "{text:#?}");
}

#[test]
fn syntax_error_has_a_line() {
    let errs = load_str("listen: [\n  a\nb: : :\n", "s.yaml", &env)
        .unwrap_err()
        .0;
    assert_eq!(errs.len(), 1);
    assert!(errs[0].line.is_some());
    assert!(errs[0].message.starts_with("not valid YAML"));
}

#[test]
fn kind_mismatch_and_overlap_are_errors() {
    let y = r#"
listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
backends:
  f: { kind: http_function, url: http://f/x }
  a: { kind: openai, url: http://a/v1 }
routes:
  r1:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: f } ]
  r2:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: a } ]
"#;
    let errs = load_str(y, "k.yaml", &env).unwrap_err().to_string();
    assert!(
        errs.contains("routes.r1.targets[0].backend: backend `f` is of kind http_function"),
        "{errs}"
    );
    assert!(
        errs.contains("claims the same requests as route `r1` for model `m`"),
        "{errs}"
    );
}
