//! `skygate validate`: exit 0, or non-zero with every error (file, line,
//! field path, what is wrong, what is allowed). `skygate run` refuses a bad
//! config the same way.

use crate::harness::*;
use std::process::Command;

const BAD: &str = r#"listen: 127.0.0.1:notaport
admin: { listen: 127.0.0.1:9999 }
backends:
  a:
    kind: lambda
    url: http://127.0.0.1:1/v1
    timeouts: { connect: 5 }
  b:
    kind: openai
    url: ftp://example.com
    api_key: ${SKYGATE_TEST_SURELY_UNSET}
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m] }
    targets:
      - backend: nope
    max_body: 8 parsecs
"#;

fn validate(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let text = output_text(&out);
    (out.status.success(), text)
}

#[test]
fn validate_reports_every_error_with_location() {
    let dir = TempDir::new();
    let path = dir.path.join("bad.yaml");
    std::fs::write(&path, BAD).unwrap();
    let (ok, text) = validate(&path);
    assert!(!ok, "{text}");
    let f = path.display().to_string();
    for needle in [
        format!("{f}:1: listen: `127.0.0.1:notaport` is not an address"),
        format!("{f}:5: backends.a.kind: `lambda` is not a backend kind: use one of openai, http_function"),
        format!("{f}:7: backends.a.timeouts.connect: `5` is not a duration"),
        format!("{f}:10: backends.b.url: `ftp://example.com` is not a usable URL: the scheme must be http or https"),
        format!("{f}:11: backends.b.api_key: environment variable `SKYGATE_TEST_SURELY_UNSET` is not set"),
        format!("{f}:16: routes.chat.targets[0].backend: unknown backend `nope`"),
        format!("{f}:17: routes.chat.max_body: `8 parsecs` is not a size"),
    ] {
        assert!(text.contains(&needle), "missing `{needle}` in:\n{text}");
    }
    assert!(text.contains("error(s) in the config"));
}

#[test]
fn unknown_fields_name_what_is_allowed() {
    let dir = TempDir::new();
    let path = dir.path.join("typo.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nroutez: {}\n",
    )
    .unwrap();
    let (ok, text) = validate(&path);
    assert!(!ok);
    assert!(text.contains(":3: routez: unknown field `routez`, expected one of: listen, server, admin, auth, backends, routes"), "{text}");
}

#[test]
fn the_readme_validate_command_is_true() {
    // The README's command, as written: `NAME=value ... \` then
    // `skygate validate --config config/examples/reference.yaml`.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("SKYGATE_ADMIN_TOKEN="))
        .expect("the README's validate command");
    let mut cmd = Command::new(bin());
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap());
    for assignment in line.trim_end_matches('\\').split_whitespace() {
        let (k, v) = assignment.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let out = cmd
        .current_dir(root)
        .args(["validate", "--config", "config/examples/reference.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    // The multi-cloud example needs only the admin token.
    let out = Command::new(bin())
        .current_dir(root)
        .env("SKYGATE_ADMIN_TOKEN", "change-me-admin-token")
        .args(["validate", "--config", "config/examples/multi-cloud.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn run_refuses_a_bad_config() {
    let dir = TempDir::new();
    let path = dir.path.join("bad.yaml");
    std::fs::write(&path, BAD).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backends.a.kind"));
}
