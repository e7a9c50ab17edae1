//! deploy/: the kustomizations render (`kubectl kustomize`) and every
//! document is valid against the Kubernetes schemas, offline; manifests,
//! the ConfigMaps' configs (`skygate validate`), the Dockerfile, the systemd
//! unit and the `skygate run` CLI agree; a NetworkPolicy cuts no client off
//! the proxy port and keeps the admin port from everyone (its checks
//! refuse seven bad policies); the Grafana dashboard queries only
//! metrics Skygate exports. All in scripts/check-deploy.sh.

use crate::harness::*;
use std::process::Command;

#[test]
fn the_deploy_manifests_render_and_validate_offline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/check-deploy.sh"))
        .env("SKYGATE_BIN", bin())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    for needle in [
        "ok   base:",
        "ok   overlays/production:",
        "skygate validate: skygate.yaml: ok",
        "skygate-dashboard.json",
        "ok   NetworkPolicy checks: the shipped shape and a split pair taken, 7 bad policies refused",
        "deploy checks passed",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}
