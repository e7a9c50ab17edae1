//! deploy/: the kustomizations render (`kubectl kustomize`) and every
//! document is valid against the Kubernetes schemas, offline; manifests,
//! the ConfigMaps' configs (`skygate validate`), the Dockerfile, the systemd
//! unit and the `skygate run` CLI agree; the Grafana dashboard queries only
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
        "deploy checks passed",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}
