//! HTTPS backends: the gateway verifies the backend's certificate (against a
//! per-backend CA from `tls.ca_file`, else the system's roots) and its name,
//! and pools TLS connections. Certificates are generated here, per test.

use crate::harness::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use std::path::PathBuf;

pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) ca_cert: rcgen::Certificate,
    pub(crate) ca_key: KeyPair,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = TempDir::new();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Skygate Test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = dir.path.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca,
            ca_cert,
            ca_key,
        }
    }

    /// A leaf certificate for `names`, signed by the CA: (cert, key) files.
    pub(crate) fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.path.join(format!("{file}.pem")),
            self.dir.path.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn tls_sim(name: &str, cert: &(PathBuf, PathBuf), extra: &[&str]) -> Sim {
    let mut flags = vec![
        "--tls-cert",
        cert.0.to_str().unwrap(),
        "--tls-key",
        cert.1.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    Sim::start(name, &flags)
}

#[test]
fn https_backend_verified_against_its_ca() {
    let pki = Pki::new();
    let leaf = pki.leaf("ip", &["127.0.0.1"]);
    let good = tls_sim("good", &leaf, &["--tokens", "5", "--token-delay-ms", "20"]);
    let h1 = tls_sim("h1", &leaf, &["--http1-only"]);
    let wrong_name = tls_sim("wrong-name", &pki.leaf("other", &["backend.example"]), &[]);
    let gw = Gateway::start(&format!(
        r#"{auth}
backends:
  good:       {{ kind: openai, url: "https://{g}/v1", tls: {{ ca_file: "{ca}" }} }}
  system:     {{ kind: openai, url: "https://{g}/v1" }}
  wrong-name: {{ kind: openai, url: "https://{w}/v1", tls: {{ ca_file: "{ca}" }} }}
  h1:         {{ kind: openai, url: "https://{h}/v1", tls: {{ ca_file: "{ca}" }} }}
routes:
  chat:   {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: good }} ] }}
  sys:    {{ match: {{ path: /v1/chat/completions, models: [sys] }}, targets: [ {{ backend: system }} ] }}
  wrong:  {{ match: {{ path: /v1/chat/completions, models: [wrong] }}, targets: [ {{ backend: wrong-name }} ] }}
  h1:     {{ match: {{ path: /v1/chat/completions, models: [h1] }}, targets: [ {{ backend: h1 }} ] }}
"#,
        auth = auth_section(),
        g = good.addr,
        w = wrong_name.addr,
        h = h1.addr,
        ca = pki.ca.display()
    ));

    for _ in 0..5 {
        let r = gw.chat("m");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    let stats = good.stats();
    assert_eq!(stats["requests"], 6);
    assert!(
        // One per request would be 7 (6 + this stats call); Pingora's h2
        // pool may open another connection or two while the machine is
        // loaded (a full parallel test run once saw more than 3).
        stats["connections"].as_u64().unwrap() <= 4,
        "TLS connections are pooled: {stats}"
    );
    // Over TLS the gateway offers HTTP/2 by ALPN: a backend that takes it
    // gets HTTP/2, one that offers only HTTP/1.1 gets HTTP/1.1.
    let versions: Vec<_> = good
        .requests()
        .iter()
        .map(|r| r["version"].clone())
        .collect();
    assert!(versions.iter().all(|v| v == "HTTP/2"), "{versions:?}");
    let r = gw.chat("h1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h1.requests().last().unwrap()["version"], "HTTP/1.1");

    // An unknown CA, or a certificate for another name, never gets the
    // request. `system` points at the same address as `good`, whose verified
    // connections sit in the pool: they must not be reused by a backend that
    // trusts other roots.
    gw.post("/v1/chat/completions", &json!({"model": "sys"}))
        .assert_error(502, "backend_unreachable");
    gw.post("/v1/chat/completions", &json!({"model": "wrong"}))
        .assert_error(502, "backend_unreachable");
    assert_eq!(good.stats()["requests"], 6);
    assert_eq!(wrong_name.stats()["requests"], 0);

    // An HTTP/2 stream cut midway still ends with an error event.
    good.set(json!({"cut_rate": 1.0}));
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let last: serde_json::Value = serde_json::from_str(sse_data(&r.body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "backend_error", "{}", r.text());
    good.set(json!({"cut_rate": 0.0}));
    assert_eq!(gw.chat("m").status, 200);
}

#[test]
fn a_bad_ca_file_is_a_config_error() {
    let dir = TempDir::new();
    let ca = dir.path.join("not-a-cert.pem");
    std::fs::write(&ca, "hello").unwrap();
    let path = dir.path.join("c.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  b:\n    kind: openai\n    url: http://127.0.0.1:3/v1\n    tls: { ca_file: not-a-cert.pem }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: b } ] }\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(":7: backends.b.tls.ca_file: set for an http:// backend"),
        "{text}"
    );
    assert!(
        text.contains(":7: backends.b.tls.ca_file: `not-a-cert.pem`: holds no PEM certificate"),
        "{text}"
    );
}
