//! The operator status page (`GET /admin/ui`) in a real browser: Debian's
//! chromium driven by playwright-core (tests/browser/admin-ui.mjs) against
//! a running demo. It logs in (a wrong token first), sees the three clouds,
//! drains and undrains a backend and sets a route's weights through the
//! page, and checks each change in the admin API itself. scripts/test.sh
//! installs chromium and the npm package when they are missing.

use crate::harness::*;
use std::process::Command;

#[test]
fn the_status_page_shows_the_clouds_and_drains_through_the_admin_api() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/browser/admin-ui.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run the suite with scripts/test.sh (it runs `npm ci` in tests/browser)"
    );
    let demo = Demo::start(&[]);
    // Served without the token (it holds no data), with a strict CSP.
    let page = call(demo.admin, "GET", "/admin/ui", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    assert!(page.text().contains("/admin/ui/app.js"));
    // Every data call still needs it.
    assert_eq!(
        call(demo.admin, "GET", "/admin/backends", &[], b"").status,
        401
    );

    let out = Command::new("node")
        .arg(&script)
        .env("ADMIN_URL", format!("http://{}", demo.admin))
        .env("ADMIN_TOKEN", "skygate-demo-admin")
        .env("EXPECT_CLOUDS", "aws,azure,gcp")
        .output()
        .expect("node runs (scripts/test.sh installs nodejs)");
    let text = output_text(&out);
    assert!(
        out.status.success() && text.contains("PASS admin-ui"),
        "{text}"
    );
}
