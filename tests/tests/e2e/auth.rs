//! API keys as SHA-256 with principals; `skygate keys`; revocation by
//! reload; the plaintext-key warning.

use crate::harness::*;
use std::io::Write;
use std::process::{Command, Stdio};

/// `skygate keys new`: (key, key_sha256).
fn mint() -> (String, String) {
    let out = Command::new(bin()).args(["keys", "new"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (field("key:"), field("key_sha256:"))
}

fn config(sim: &Sim, hash: &str) -> String {
    format!(
        "auth:\n  api_keys:\n    - {{ key_sha256: {hash}, principal: checkout-app, tenant: acme, groups: [payments] }}\nbackends:\n  s: {{ kind: openai, url: \"{url}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
        url = sim.url
    )
}

#[test]
fn hashed_keys_authenticate_and_a_reload_revokes_them() {
    let (key, hash) = mint();
    assert!(key.starts_with("sk-skygate-") && key.len() > 40, "{key}");
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&config(&sim, &hash));
    let chat = |auth: &str| {
        gw.call(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            br#"{"model":"m","messages":[]}"#,
        )
    };
    assert_eq!(chat(&format!("Bearer {key}")).status, 200);
    for header in ["api-key", "x-api-key"] {
        let r = gw.call(
            "POST",
            "/v1/chat/completions",
            &[(header, &key), ("content-type", "application/json")],
            br#"{"model":"m","messages":[]}"#,
        );
        assert_eq!(r.status, 200, "{header}");
    }
    let line = gw.access_log(1).remove(0);
    assert_eq!(line["principal"], "checkout-app");
    assert_eq!(line["tenant"], "acme");

    // Wrong, near-miss and missing keys: 401 with WWW-Authenticate.
    for auth in [
        format!("Bearer {}", &key[..key.len() - 1]),
        format!("Bearer {key}x"),
        format!("Bearer {hash}"),
        "Bearer ".to_string(),
    ] {
        let r = chat(&auth);
        r.assert_error(401, "invalid_api_key");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"skygate\"")
        );
    }

    // Revoked: the key is removed from the file and the config reloaded.
    let (other_key, other_hash) = mint();
    gw.rewrite_config(&config(&sim, &other_hash));
    assert_eq!(gw.admin("POST", "/admin/reload", "").status, 200);
    chat(&format!("Bearer {key}")).assert_error(401, "invalid_api_key");
    assert_eq!(chat(&format!("Bearer {other_key}")).status, 200);
    // Neither key ever appears in a log.
    let logs = format!("{}{}", gw.proc.stdout(), gw.proc.stderr());
    assert!(!logs.contains(&key) && !logs.contains(&other_key));
}

#[test]
fn keys_hash_reads_the_key_from_stdin() {
    let mut child = Command::new(bin())
        .args(["keys", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-reference-app-key\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "419fc66819bdb65f89c5cbb436b07c894a6f403a818c440638ab8b6574adc55e"
    );
    let out = Command::new(bin())
        .args(["keys", "hash", "sk-reference-app-key"])
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("419fc668"));
}

#[test]
fn validate_warns_about_plaintext_keys() {
    let dir = TempDir::new();
    let path = dir.path.join("plain.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nauth:\n  api_keys:\n    - { key: sk-plaintext-key, principal: app }\nbackends:\n  a: { kind: openai, url: http://127.0.0.1:3/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "a warning is not an error: {text}");
    assert!(
        text.contains(&format!(
            "warning: {}:5: auth.api_keys[0].key: a plaintext API key in the config",
            path.display()
        )),
        "{text}"
    );
    assert!(!text.contains("sk-plaintext-key"));
}

#[test]
fn backends_get_the_callers_identity_as_a_signed_token() {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let dir = TempDir::new();
    let key = dir.path.join("identity.pem");
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    std::fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let sim = Sim::start("s", &[]);
    let gw = Gateway::start(&format!(
        "{auth}  identity_token: {{ key_file: \"{key}\", algorithm: ES256, issuer: skygate-test, ttl: 60s }}\nbackends:\n  signed: {{ kind: openai, url: \"{url}/v1\", identity: true }}\n  plain: {{ kind: openai, url: \"{url}/v1\" }}\nroutes:\n  a: {{ match: {{ path: /v1/chat/completions, models: [a] }}, targets: [ {{ backend: signed }} ] }}\n  b: {{ match: {{ path: /v1/chat/completions, models: [b] }}, targets: [ {{ backend: plain }} ] }}\n",
        auth = auth_section(),
        key = key.display(),
        url = sim.url
    ));
    let sent_identity = |model: &str| {
        let r = gw.call(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &format!("Bearer {CLIENT_KEY}")),
                ("x-skygate-identity", "forged-by-the-client"),
                ("content-type", "application/json"),
            ],
            format!(r#"{{"model":"{model}","messages":[]}}"#).as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let sent = sim.requests();
        let headers = sent.last().unwrap()["headers"].as_array().unwrap().clone();
        headers
            .iter()
            .find(|h| h[0] == "x-skygate-identity")
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    let token = sent_identity("a").expect("the signed backend gets a token");
    assert_ne!(token, "forged-by-the-client");
    assert_eq!(
        sent_identity("a").as_deref(),
        Some(token.as_str()),
        "cached"
    );
    assert_eq!(sent_identity("b"), None, "only backends that ask");

    // It verifies against the public keys the admin listener serves (open).
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&gw.admin_get("/identity/jwks.json", None).body).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["signed"]);
    v.set_issuer(&["skygate-test"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "tester");
    assert_eq!(
        claims["auth"], "api_key",
        "how the caller proved it: {claims}"
    );
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 60);
}
