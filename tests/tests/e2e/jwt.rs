//! JWT bearer tokens, and the attacks on them: each case a test. Tokens
//! are minted here with jsonwebtoken (RS256 from the test-only keys in
//! tests/fixtures/jwt, ES256 from keys made at run time); the gateway
//! reads its JWKS from a file or from a small HTTP server in this process.

use crate::harness::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISS: &str = "https://idp.test";

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jwt");
    std::fs::read(dir.join(name)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ES256 key made now: (signing key, its public JWK).
fn ec_key(kid: &str) -> (EncodingKey, Value) {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

fn rsa(name: &str) -> (EncodingKey, Value) {
    let key = EncodingKey::from_rsa_der(&fixture(&format!("rsa-{name}.der")));
    let jwk: Value = serde_json::from_slice(&fixture(&format!("rsa-{name}.jwk.json"))).unwrap();
    (key, jwk)
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "skygate", "sub": "alice", "tenant": "acme",
        "groups": ["contractors"], "email": "alice@acme.test", "exp": now() + 300, "iat": now()})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).unwrap()
}

/// A token from raw parts (for headers jsonwebtoken would not write).
fn raw(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

struct Setup {
    gw: Gateway,
    _sim: Sim,
    _dir: TempDir,
    rsa_a: EncodingKey,
    ec: EncodingKey,
}

/// A gateway trusting ISS with keys test-a (RS256) and ec-1 (ES256) from a
/// JWKS file, and one API key; route `chat` accepts any method, route
/// `jwt-only` only tokens.
fn setup() -> Setup {
    let sim = Sim::start("s", &[]);
    let dir = TempDir::new();
    let (rsa_a, jwk_a) = rsa("a");
    let (ec, jwk_ec) = ec_key("ec-1");
    let jwks = dir.path.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk_a, jwk_ec]}).to_string()).unwrap();
    let gw = Gateway::start(&format!(
        "{auth}  jwt:\n    - issuer: \"{ISS}\"\n      audiences: [skygate]\n      algorithms: [RS256, ES256]\n      jwks: {{ file: \"{jwks}\" }}\n      jwks_min_refresh: 1s\n      leeway: 5s\n      max_token_bytes: 2KiB\n      claims: {{ tenant: tenant, groups: groups, attributes: [email] }}\nbackends:\n  s: {{ kind: openai, url: \"{url}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n  jwt-only: {{ match: {{ path: /v1/chat/completions, models: [j] }}, targets: [ {{ backend: s }} ], auth: [jwt] }}\n",
        auth = auth_section(),
        jwks = jwks.display(),
        url = sim.url
    ));
    Setup {
        gw,
        _sim: sim,
        _dir: dir,
        rsa_a,
        ec,
    }
}

fn chat_with(gw: &Gateway, token: &str, model: &str) -> Resp {
    gw.call(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        json!({"model": model, "messages": []})
            .to_string()
            .as_bytes(),
    )
}

/// `claims` signed RS256 by test-a, the setup's usual key.
fn signed(s: &Setup, claims: &Value) -> String {
    sign(Algorithm::RS256, Some("test-a"), &s.rsa_a, claims)
}

fn refused(s: &Setup, token: &str, why: &str) {
    let r = chat_with(&s.gw, token, "m");
    r.assert_error(401, "invalid_api_key");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"skygate\"")
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(why), "expected `{why}` in `{msg}`");
}

#[test]
fn valid_tokens_name_the_principal() {
    let s = setup();
    let r = chat_with(
        &s.gw,
        &sign(Algorithm::RS256, Some("test-a"), &s.rsa_a, &claims()),
        "m",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat_with(
        &s.gw,
        &sign(Algorithm::ES256, Some("ec-1"), &s.ec, &claims()),
        "m",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let line = s.gw.access_log(2).pop().unwrap();
    assert_eq!(line["principal"], "alice");
    assert_eq!(line["tenant"], "acme");
    // `aud` may be a list naming us among others.
    let mut c = claims();
    c["aud"] = json!(["other", "skygate"]);
    assert_eq!(chat_with(&s.gw, &signed(&s, &c), "m").status, 200);
    // A route for tokens only refuses API keys, and takes tokens.
    let key_on_jwt_route = s.gw.post(
        "/v1/chat/completions",
        &json!({"model": "j", "messages": []}),
    );
    key_on_jwt_route.assert_error(401, "invalid_api_key");
    assert!(key_on_jwt_route.text().contains("use jwt"));
    let token = sign(Algorithm::RS256, Some("test-a"), &s.rsa_a, &claims());
    assert_eq!(chat_with(&s.gw, &token, "j").status, 200);
    // The same token again (from the verified-token cache).
    assert_eq!(chat_with(&s.gw, &token, "j").status, 200);
}

#[test]
fn alg_none_in_every_casing() {
    let s = setup();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = raw(
            &json!({"alg": alg, "typ": "JWT", "kid": "test-a"}),
            &claims(),
            b"",
        );
        refused(&s, &t, "malformed token");
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key() {
    let s = setup();
    let secret = EncodingKey::from_secret(&fixture("rsa-a.pub.pem"));
    refused(
        &s,
        &sign(Algorithm::HS256, Some("test-a"), &secret, &claims()),
        "algorithm is not allowed",
    );
}

#[test]
fn unknown_kid() {
    let s = setup();
    refused(
        &s,
        &sign(Algorithm::RS256, Some("nobody"), &s.rsa_a, &claims()),
        "kid) is unknown",
    );
}

#[test]
fn kid_with_path_traversal() {
    let s = setup();
    refused(
        &s,
        &sign(
            Algorithm::RS256,
            Some("../../../../etc/passwd"),
            &s.rsa_a,
            &claims(),
        ),
        "kid) is unknown",
    );
}

#[test]
fn jku_x5u_and_embedded_jwk_headers_are_ignored() {
    let s = setup();
    // Signed by the attacker's key, which every header points at.
    let (evil, evil_jwk) = rsa("b");
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("test-a".into());
    h.jku = Some("http://127.0.0.1:1/evil-jwks.json".into());
    h.x5u = Some("http://127.0.0.1:1/evil.pem".into());
    h.jwk = Some(serde_json::from_value(evil_jwk).unwrap());
    let t = encode(&h, &claims(), &evil).unwrap();
    refused(&s, &t, "signature does not verify");
}

#[test]
fn another_key_under_our_kid() {
    let s = setup();
    let (evil, _) = rsa("b");
    refused(
        &s,
        &sign(Algorithm::RS256, Some("test-a"), &evil, &claims()),
        "signature does not verify",
    );
}

#[test]
fn tampered_payload() {
    let s = setup();
    let t = sign(Algorithm::RS256, Some("test-a"), &s.rsa_a, &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    refused(&s, &forged, "signature does not verify");
}

#[test]
fn stripped_or_empty_signature() {
    let s = setup();
    let t = sign(Algorithm::RS256, Some("test-a"), &s.rsa_a, &claims());
    let head_and_body = t.rsplit_once('.').unwrap().0;
    refused(&s, &format!("{head_and_body}."), "does not verify");
    // Two parts are not a JWT: tried (and refused) as an API key.
    refused(&s, head_and_body, "invalid API key");
}

#[test]
fn es256_with_r_and_s_zero() {
    let s = setup();
    let t = raw(
        &json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}),
        &claims(),
        &[0u8; 64],
    );
    refused(&s, &t, "does not verify");
}

#[test]
fn expired() {
    let s = setup();
    let mut c = claims();
    c["exp"] = json!(now() - 60);
    refused(&s, &signed(&s, &c), "expired");
}

#[test]
fn nbf_beyond_the_leeway() {
    let s = setup();
    let mut c = claims();
    c["nbf"] = json!(now() + 120);
    refused(&s, &signed(&s, &c), "not valid yet");
    // Within the leeway (5 s): accepted.
    c["nbf"] = json!(now() + 2);
    assert_eq!(chat_with(&s.gw, &signed(&s, &c), "m").status, 200);
}

#[test]
fn nbf_that_is_not_a_number() {
    let s = setup();
    let mut c = claims();
    c["nbf"] = json!("x");
    refused(&s, &signed(&s, &c), "`nbf` claim is not a number");
    // Far in the future as a float (jsonwebtoken skips what is not a whole
    // number of seconds): not valid yet.
    c["nbf"] = json!(1e20);
    refused(&s, &signed(&s, &c), "not valid yet");
    // null: as absent.
    c["nbf"] = Value::Null;
    let r = chat_with(&s.gw, &signed(&s, &c), "m");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A mapped claim of an unexpected shape is a 401, never dropped: dropped,
/// `"tenant": ["acme"]` would make the caller tenant-less and slip past a
/// `forbid` written for its tenant.
#[test]
fn mapped_claims_of_another_shape_are_refused() {
    let s = setup();
    let cases = [
        ("tenant", json!(["acme"]), "`tenant` claim must be a string"),
        ("tenant", json!(7), "`tenant` claim must be a string"),
        (
            "groups",
            json!({"contractors": true}),
            "`groups` claim must be a string or a list of strings",
        ),
        (
            "groups",
            json!([["contractors"]]),
            "`groups` claim must be a string or a list of strings",
        ),
        (
            "email",
            json!(["a@acme.test"]),
            "`email` claim must be a string, a number or a boolean",
        ),
    ];
    for (claim, value, why) in cases {
        let mut c = claims();
        c[claim] = value;
        refused(&s, &signed(&s, &c), why);
    }
    // Absent or null: no tenant, no groups (as before); a single group as
    // a string: that group.
    for (claim, value) in [
        ("tenant", Value::Null),
        ("groups", Value::Null),
        ("groups", json!("contractors")),
    ] {
        let mut c = claims();
        c[claim] = value;
        let r = chat_with(&s.gw, &signed(&s, &c), "m");
        assert_eq!(r.status, 200, "{claim}: {}", r.text());
    }
}

#[test]
fn missing_exp() {
    let s = setup();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    refused(&s, &signed(&s, &c), "lacks a required claim");
}

#[test]
fn wrong_issuer() {
    let s = setup();
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    refused(&s, &signed(&s, &c), "issuer is not trusted");
}

#[test]
fn wrong_audience_and_a_list_without_us() {
    let s = setup();
    let mut c = claims();
    c["aud"] = json!("someone-else");
    refused(&s, &signed(&s, &c), "not for this audience");
    c["aud"] = json!(["a", "b"]);
    refused(&s, &signed(&s, &c), "not for this audience");
    c.as_object_mut().unwrap().remove("aud");
    refused(&s, &signed(&s, &c), "lacks a required claim");
}

#[test]
fn oversized_token() {
    let s = setup();
    let mut c = claims();
    c["padding"] = json!("x".repeat(4096));
    refused(&s, &signed(&s, &c), "too large");
}

/// A JWKS endpoint in this process: serves whatever `keys` holds, counts hits.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(keys: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(keys));
        let hits = Arc::new(AtomicUsize::new(0));
        let (k, h) = (keys.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                h.fetch_add(1, Ordering::SeqCst);
                let body = k.lock().unwrap().to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, keys, hits }
    }
}

fn url_gateway(server: &JwksServer, sim: &Sim) -> Gateway {
    Gateway::start(&format!(
        "auth:\n  jwt:\n    - {{ issuer: \"{ISS}\", audiences: [skygate], algorithms: [RS256], jwks: {{ url: \"{u}\" }}, jwks_min_refresh: 1s }}\nbackends:\n  s: {{ kind: openai, url: \"{url}/v1\" }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
        u = server.url,
        url = sim.url
    ))
}

#[test]
fn jwks_rotation_drops_the_old_kid_and_takes_the_new() {
    let (a, jwk_a) = rsa("a");
    let (b, jwk_b) = rsa("b");
    let server = JwksServer::start(json!({"keys": [jwk_a]}));
    let sim = Sim::start("s", &[]);
    let gw = url_gateway(&server, &sim);
    // The first token fetches the keys (the request waits for it).
    assert_eq!(
        chat_with(
            &gw,
            &sign(Algorithm::RS256, Some("test-a"), &a, &claims()),
            "m"
        )
        .status,
        200
    );
    // Rotation at the IdP: b in, a out.
    *server.keys.lock().unwrap() = json!({"keys": [jwk_b]});
    std::thread::sleep(Duration::from_millis(1100));
    let with_b = sign(Algorithm::RS256, Some("test-b"), &b, &claims());
    assert_eq!(
        chat_with(&gw, &with_b, "m").status,
        200,
        "a new kid sets off a refresh"
    );
    let mut c = claims();
    c["jti"] = json!("fresh"); // not the cached token
    chat_with(&gw, &sign(Algorithm::RS256, Some("test-a"), &a, &c), "m")
        .assert_error(401, "invalid_api_key");
}

#[test]
fn a_removed_key_ends_its_cached_tokens_too() {
    let (a, jwk_a) = rsa("a");
    let (_, jwk_b) = rsa("b");
    let server = JwksServer::start(json!({"keys": [jwk_a]}));
    let sim = Sim::start("s", &[]);
    let gw = url_gateway(&server, &sim);
    let token = sign(Algorithm::RS256, Some("test-a"), &a, &claims());
    assert_eq!(chat_with(&gw, &token, "m").status, 200);
    assert_eq!(chat_with(&gw, &token, "m").status, 200, "cached");
    // Key a is revoked at the IdP; an unknown kid makes the gateway refresh.
    *server.keys.lock().unwrap() = json!({"keys": [jwk_b]});
    std::thread::sleep(Duration::from_millis(1100));
    let (b, _) = rsa("b");
    assert_eq!(
        chat_with(
            &gw,
            &sign(Algorithm::RS256, Some("test-b"), &b, &claims()),
            "m"
        )
        .status,
        200
    );
    // The token verified with a before is refused now, cache or not.
    chat_with(&gw, &token, "m").assert_error(401, "invalid_api_key");
}

#[test]
fn critical_header_extensions_are_refused() {
    let s = setup();
    // jsonwebtoken cannot write `crit`: sign the header we need by hand.
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "test-a", "crit": ["urn:example:x"], "urn:example:x": 1});
    let payload = claims();
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let sig =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &s.rsa_a, Algorithm::RS256).unwrap();
    let token = format!("{signing_input}.{sig}");
    refused(&s, &token, "critical header extensions");
}

#[test]
fn trusting_the_demo_issuer_outside_the_demo_is_refused() {
    let dir = TempDir::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let path = dir.path.join("g.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nauth:\n  jwt:\n    - {{ issuer: skygate-demo, audiences: [skygate], algorithms: [RS256], jwks: {{ file: \"{}\" }} }}\nbackends:\n  a: {{ kind: openai, url: http://127.0.0.1:3/v1 }}\nroutes:\n  r: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {{ backend: a }} ] }}\n",
            root.join("config/demo/jwks.json").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("auth.jwt[0].jwks.file: trusts the demo issuer's key, which is public"),
        "{text}"
    );

    // A JWKS with no key for the issuer's algorithms is an error too.
    let jwks = dir.path.join("es-only.json");
    let (_, ec) = ec_key("ec-1");
    std::fs::write(&jwks, json!({"keys": [ec]}).to_string()).unwrap();
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nauth:\n  jwt:\n    - {{ issuer: x, audiences: [skygate], algorithms: [RS256], jwks: {{ file: \"{}\" }} }}\nbackends:\n  a: {{ kind: openai, url: http://127.0.0.1:3/v1 }}\nroutes:\n  r: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {{ backend: a }} ] }}\n",
            jwks.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("holds no key that can verify RS256 tokens"),
        "{text}"
    );
}

#[test]
fn a_storm_of_unknown_kids_does_not_flood_the_jwks_endpoint() {
    let (a, jwk_a) = rsa("a");
    let server = JwksServer::start(json!({"keys": [jwk_a]}));
    let sim = Sim::start("s", &[]);
    let gw = url_gateway(&server, &sim);
    assert_eq!(
        chat_with(
            &gw,
            &sign(Algorithm::RS256, Some("test-a"), &a, &claims()),
            "m"
        )
        .status,
        200
    );
    let before = server.hits.load(Ordering::SeqCst);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (gw, a) = (&gw, &a);
            scope.spawn(move || {
                for i in 0..25 {
                    let kid = format!("random-{t}-{i}");
                    let r = chat_with(gw, &sign(Algorithm::RS256, Some(&kid), a, &claims()), "m");
                    assert_eq!(r.status, 401);
                }
            });
        }
    });
    let fetched = server.hits.load(Ordering::SeqCst) - before;
    // 100 unknown kids within about a second: at most one refresh per
    // second (jwks_min_refresh), so a handful at most.
    assert!(fetched <= 3, "{fetched} JWKS fetches for 100 unknown kids");
    // Known keys were never blocked.
    assert_eq!(
        chat_with(
            &gw,
            &sign(Algorithm::RS256, Some("test-a"), &a, &claims()),
            "m"
        )
        .status,
        200
    );
}
