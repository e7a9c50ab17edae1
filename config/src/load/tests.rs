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

/// A number beyond 64 bits stops the YAML reader itself; the error still
/// names the field and says what is wrong.
#[test]
fn a_number_too_large_names_its_field() {
    let y = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nlimits:\n  - { name: big, tokens_per_minute: 99999999999999999999 }\n";
    let errs = load_str(y, "s.yaml", &env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, Some(4));
    assert_eq!(errs[0].path, "limits[0].tokens_per_minute");
    assert_eq!(
        errs[0].message,
        "`99999999999999999999` is too large a number: the largest is 18446744073709551615"
    );
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

#[test]
fn listeners_that_would_share_connections_are_errors() {
    // Pingora keeps one socket per address: the proxy and the admin API
    // would share it; overlapping addresses fail to bind (after 30 s of
    // Pingora's retries).
    let base = "backends: { a: { kind: openai, url: http://a/v1 } }\nroutes: { r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] } }\n";
    let y = format!("listen: 127.0.0.1:8080\nadmin: {{ listen: 127.0.0.1:8080 }}\n{base}");
    let errs = load_str(&y, "l.yaml", &env).unwrap_err().to_string();
    assert!(
        errs.contains("l.yaml:2: admin.listen: `127.0.0.1:8080` takes the connections of `listen: 127.0.0.1:8080`"),
        "{errs}"
    );
    let y = format!("listen: 0.0.0.0:8080\nadmin: {{ listen: 127.0.0.1:8080 }}\n{base}");
    assert!(load_str(&y, "l.yaml", &env).is_err());
    let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    let clash = crate::listener_clash(&[
        ("listen", addr("127.0.0.1:8080")),
        ("admin.listen", addr("127.0.0.1:9090")),
        ("server.tls.listen", addr("[::]:9090")),
    ]);
    assert_eq!(
        clash,
        Some((
            "server.tls.listen",
            "`[::]:9090` takes the connections of `admin.listen: 127.0.0.1:9090`: give each listener its own port".to_string()
        ))
    );
    // Another port, or another address on the same port, is fine.
    let y = format!("listen: 127.0.0.1:8080\nadmin: {{ listen: 127.0.0.2:8080 }}\n{base}");
    assert!(load_str(&y, "l.yaml", &env).is_ok());
    let y = format!("listen: 0.0.0.0:0\nadmin: {{ listen: 127.0.0.1:0 }}\n{base}");
    assert!(load_str(&y, "l.yaml", &env).is_ok());
    // Port 0 twice on one address is one socket too.
    let y = format!("listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n{base}");
    assert!(load_str(&y, "l.yaml", &env).is_err());
}

/// A section that failed to read, or a part of it that did (a CA file that
/// cannot be read), has its own error: what depends on it says nothing more.
#[test]
fn no_follow_on_errors_from_what_failed_already() {
    let base = "backends: { a: { kind: openai, url: http://a/v1, identity: true } }\nroutes: { r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ], auth: [mtls] } }\n";
    // admin with a misspelt field; auth.mtls and auth.identity_token with
    // files that do not exist; server.tls with files that do not exist.
    let y = format!("listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2, tokn: abcdefghij }}\nserver: {{ tls: {{ listen: 127.0.0.1:3, cert: /nope/c.pem, key: /nope/k.pem }} }}\nauth:\n  mtls: {{ ca: [/nope/ca.pem], identity: dns }}\n  identity_token: {{ key_file: /nope/key.pem, algorithm: ES256 }}\n{base}");
    let errs = load_str(&y, "f.yaml", &env).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for e in &text {
        assert!(!e.contains("admin: missing"), "{e}");
        assert!(!e.contains("not configured"), "{e}");
        assert!(!e.contains("need the TLS listener"), "{e}");
    }
    assert!(
        text.iter()
            .any(|e| e.contains("admin") && e.contains("tokn")),
        "{text:?}"
    );
    // Still said when the part is not there at all.
    let y = format!("listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\n{base}");
    let errs = load_str(&y, "f.yaml", &env).unwrap_err().to_string();
    assert!(
        errs.contains("routes.r.auth: `mtls` is not configured"),
        "{errs}"
    );
    assert!(
        errs.contains("backends.a.identity: set, but `auth.identity_token`"),
        "{errs}"
    );
    let errs = load_str("listen: 127.0.0.1:1\nroutes: {}\n", "f.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(errs.contains("admin: missing"), "{errs}");
}

/// Every error of an entry is reported, not only its first, in the file's
/// order; what is left of an entry after its bad fields is checked on.
#[test]
fn every_error_of_an_entry_is_reported() {
    let y = r#"listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
server:
  threads: -2
  grace_period: 25h
backends:
  a:
    kind: openai
    url: http://a/v1
    timeout: 3s
    breaker: { consecutive_failure: 3 }
routes:
  r:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: a, weigth: 3 } ]
    max_attempts: "three"
"#;
    let errs = load_str(y, "t.yaml", &env).unwrap_err().0;
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(4), "server.threads"),
            (Some(5), "server.grace_period"),
            (Some(10), "backends.a.timeout"),
            (Some(11), "backends.a.breaker.consecutive_failure"),
            (Some(15), "routes.r.targets[0].weigth"),
            (Some(16), "routes.r.max_attempts"),
        ],
        "{errs:?}"
    );
    // A required field of the wrong type: its error, not a `missing field`
    // of the taking out.
    let y = "listen: 127.0.0.1:1\nadmin: { listen: 9090, token: abcdefghij }\nroutes: {}\n";
    let errs = load_str(y, "t.yaml", &env).unwrap_err().to_string();
    assert!(
        errs.contains("admin.listen: invalid type: integer `9090`, expected a string"),
        "{errs}"
    );
    assert!(!errs.contains("missing field"), "{errs}");
    assert!(!errs.contains("admin: missing"), "{errs}");
}

/// A field taken out for its error is not then reported missing, nor are
/// the parts that depend on it.
#[test]
fn a_field_of_the_wrong_type_is_one_error() {
    let y = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nauth:\n  mtls: [1]\nbackends:\n  a: { kind: openai, url: [x] }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ], auth: [mtls] }\n";
    let errs = load_str(y, "w.yaml", &env).unwrap_err().0;
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["auth.mtls", "backends.a.url"], "{errs:?}");
    // A section that is not a mapping at all: its error, and nothing about
    // what depends on it.
    let y = "listen: 127.0.0.1:1\nadmin: [1]\nauth: [1]\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ], auth: [jwt] }\n";
    let errs = load_str(y, "w.yaml", &env).unwrap_err().0;
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["admin", "auth"], "{errs:?}");
}

/// serde's messages in the file's terms, not Rust's.
#[test]
fn type_errors_speak_yaml() {
    let y = "listen: 127.0.0.1:1\nadmin: [1]\nserver: { threads: -2 }\nbackends:\n  a: { kind: openai, url: http://a/v1, identity: 7 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ], retries: { max_attempts: three } }\n";
    let errs = load_str(y, "m.yaml", &env).unwrap_err().to_string();
    for want in [
        "admin: invalid type: sequence, expected a mapping (`key: value`)",
        "server.threads: invalid value: integer `-2`, expected a whole number of 0 or more",
        "backends.a.identity: not one of the forms this field takes (see config/README.md)",
    ] {
        assert!(errs.contains(want), "{want}\n{errs}");
    }
    assert!(!errs.contains("Raw"), "{errs}");
    assert!(!errs.contains("usize"), "{errs}");
}

/// An open gateway or a closed admin API is the file's choice: `validate`
/// says so (a warning, not an error).
#[test]
fn no_auth_and_no_admin_token_are_warned_about() {
    let text = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  b: { kind: openai, url: http://127.0.0.1:3/v1 }\nroutes:\n  r: { match: { path: /v1/chat/completions, models: [m] }, targets: [ { backend: b } ] }\n";
    let c = load_str(text, "o.yaml", &env).unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter().any(|w| w.contains(
            "auth: no API keys, JWT issuers or client certificates: every route is open to anyone"
        )),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("o.yaml:2: admin: no `token`: the admin API is closed")),
        "{w:?}"
    );
    let closed = text.replace(
        "admin: { listen: 127.0.0.1:2 }",
        "admin: { listen: 127.0.0.1:2, token: admin-token-1 }\nauth: { api_keys: [ { key_sha256: 0000000000000000000000000000000000000000000000000000000000000000, principal: p } ] }",
    );
    let c = load_str(&closed, "o.yaml", &env).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// A key given twice is reported at its second entry, naming the first.
#[test]
fn a_duplicate_key_is_reported_where_it_is() {
    let nested = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://x/v1 }\n  # a comment\n  b: { kind: openai, url: http://x/v1 }\n  a: { kind: openai, url: http://y/v1 }\n";
    let e = load_str(nested, "d.yaml", &env).unwrap_err().to_string();
    assert!(
        e.contains("d.yaml:7: not valid YAML: backends: duplicate entry with key \"a\" (first at line 4): keep one"),
        "{e}"
    );
    let top = "listen: 127.0.0.1:1\nroutes: {}\nadmin: { listen: 127.0.0.1:2 }\nroutes: {}\n";
    let e = load_str(top, "d.yaml", &env).unwrap_err().to_string();
    assert!(
        e.contains(
            "d.yaml:4: not valid YAML: duplicate entry with key \"routes\" (first at line 2)"
        ),
        "{e}"
    );
}
