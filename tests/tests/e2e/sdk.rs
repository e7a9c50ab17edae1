//! `skygate demo` driven by the official `openai` Python SDK: chat, streamed
//! chat, embeddings, models, errors raised as the SDK's exception types, and
//! a demo JWT contractor under the demo's policies (403 on embeddings).
//!
//! The Python comes from `SKYGATE_TEST_PYTHON` (the test script points it at a
//! venv with `openai` installed), else `python3`. A missing SDK fails the
//! test: it never passes without running.

use crate::harness::*;
use std::process::Command;

#[test]
fn demo_works_with_the_openai_python_sdk() {
    let python = std::env::var("SKYGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import openai"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "`{python}` cannot import openai: run the suite with scripts/test.sh, which installs it in a venv"
    );
    let d = Demo::start(&[]);
    let (listen, demo) = (d.addr, &d.proc);
    assert!(
        demo.stderr().contains("sk-skygate-demo"),
        "the demo prints what to try"
    );
    let token = Command::new(bin())
        .args([
            "demo-token",
            "--sub",
            "bob",
            "--tenant",
            "acme",
            "--group",
            "contractors",
        ])
        .output()
        .unwrap();
    assert!(token.status.success(), "{}", output_text(&token));
    let token = String::from_utf8(token.stdout).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_demo.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("http://{listen}/v1"))
        .arg(token.trim())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{text}\n--- gateway stderr:\n{}",
        demo.stderr()
    );
    assert!(text.contains("openai sdk: ok"));
    // Every decision went to the audit log (stderr in the demo), the
    // contractor's embeddings call as a deny.
    // (Audit lines are written in bursts: wait for it.)
    let denied = |stderr: &str| {
        stderr.lines().any(|l| {
            l.contains("\"principal\":\"Skygate::User::\\\"skygate-demo|bob\\\"\"")
                && l.contains("\"action\":\"embed\"")
                && l.contains("\"decision\":\"deny\"")
        })
    };
    assert!(
        eventually(std::time::Duration::from_secs(5), || denied(&demo.stderr())),
        "{}",
        demo.stderr()
    );
}
