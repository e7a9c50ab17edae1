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
        format!("{f}:5: backends.a.kind: `lambda` is not a backend kind (did you mean `aws_lambda`?): use one of openai, http_function"),
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
    assert!(text.contains(":3: routez: unknown field `routez` (did you mean `routes`?), expected one of `listen`, `server`, `admin`, `auth`, `backends`, `routes`"), "{text}");
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

/// The README's `bad.yaml` gives the README's output, line for line.
#[test]
fn the_readme_validate_example_is_true() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = |open: &str| -> String {
        let at = readme
            .find(open)
            .unwrap_or_else(|| panic!("no `{open}` block"))
            + open.len();
        readme[at..][..readme[at..].find("```").unwrap()].to_string()
    };
    let config = block("```yaml bad.yaml\n");
    let shown = block("```\n$ skygate validate --config bad.yaml\n");
    let dir = TempDir::new();
    std::fs::write(dir.path.join("bad.yaml"), config).unwrap();
    let out = Command::new(bin())
        .current_dir(&dir.path)
        .env("SKYGATE_ADMIN_TOKEN", "change-me-admin-token")
        .args(["validate", "--config", "bad.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(output_text(&out).trim(), shown.trim());
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

/// Runs tests/schema/check_configs.py on these files against `schema`.
fn schema_check(schema: &std::path::Path, files: &[std::path::PathBuf]) -> (bool, String) {
    let python = std::env::var("SKYGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/check_configs.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(schema)
        .args(files)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        !text.contains("ModuleNotFoundError"),
        "`{python}` lacks jsonschema or yaml: run the suite with scripts/test.sh\n{text}"
    );
    (out.status.success(), text)
}

/// `skygate schema` is the committed `config/skygate.schema.json`, and every
/// example config (the examples, the demo's, the Kubernetes one, and each
/// whole config shown in the docs) follows it; a config with a misspelt
/// kind, a wrong type and an unknown field does not.
#[test]
fn every_example_config_follows_the_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(bin()).arg("schema").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/skygate.schema.json")).unwrap(),
    )
    .unwrap();
    assert!(
        printed == committed,
        "config/skygate.schema.json is stale: regenerate it with `skygate schema > config/skygate.schema.json`"
    );
    let schema = root.join("config/skygate.schema.json");

    let mut files: Vec<std::path::PathBuf> = vec![
        root.join("config/demo.yaml"),
        root.join("README.md"),
        root.join("config/README.md"),
    ];
    for dir in ["config/examples", "docs"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "md") {
                files.push(p);
            }
        }
    }
    // The Kubernetes manifests' configs (base and overlays).
    let mut dirs = vec![root.join("deploy/kubernetes")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n == "skygate.yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let (ok, text) = schema_check(&schema, &files);
    assert!(ok, "{text}");
    for needle in [
        "reference.yaml",
        "demo.yaml",
        "base/skygate.yaml",
        "production/skygate.yaml",
    ] {
        assert!(
            text.contains(&format!("{needle}\n")),
            "`{needle}` was not checked:\n{text}"
        );
    }

    let dir = TempDir::new();
    let bad = dir.path.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: 127.0.0.1:8080\nbackends:\n  a: { kind: lamda, url: http://x, limits: { max_in_flight: many }, colour: blue }\n",
    )
    .unwrap();
    let (ok, text) = schema_check(&schema, &[bad]);
    assert!(!ok, "{text}");
    for needle in [
        "backends.a.kind",
        "'lamda' is not one of",
        "backends.a.limits: {'max_in_flight': 'many'}",
        "'colour' was unexpected",
        "(top): 'admin' is a required property",
        "(top): 'routes' is a required property",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}
