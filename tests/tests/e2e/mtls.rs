//! mTLS: the TLS listener verifies client certificates against
//! `auth.mtls.ca`; the caller is the certificate's SPIFFE ID (a
//! `Skygate::Service` to policies, with `context.mtls`); routes can require
//! it. No certificate → 401 on such a route; another CA's or an expired
//! certificate → no handshake. Certificates are generated per test.

use crate::harness::*;
use crate::tls::Pki;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const SPIFFE: &str = "spiffe://corp/ns/team/sa/app";

/// A client certificate: DER chain and key.
struct ClientCert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A client certificate from `ca` naming `uri` (and/or `dns`), valid
/// `from..until` (years).
fn client_cert(ca: &Pki, uri: Option<&str>, dns: Option<&str>, years: (i32, i32)) -> ClientCert {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "app");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "corp");
    if let Some(u) = uri {
        params
            .subject_alt_names
            .push(SanType::URI(u.try_into().unwrap()));
    }
    if let Some(d) = dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(d.try_into().unwrap()));
    }
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.ca_cert, &ca.ca_key).unwrap();
    ClientCert {
        der: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// One request over TLS to the gateway, with `cert` as the client
/// certificate; `Err`: the handshake (or the connection) failed.
fn tls_call(
    addr: SocketAddr,
    server_ca: &Pki,
    cert: Option<&ClientCert>,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> std::io::Result<Resp> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.ca_cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(vec![c.der.clone()], c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let body = body.to_string();
    let mut head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())?;
    tls.write_all(body.as_bytes())?;
    read_response(&mut tls)
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

struct Setup {
    gw: Gateway,
    /// The config after `listen` and `admin`, as given to the gateway.
    body: String,
    tls: SocketAddr,
    server_ca: Pki,
    clients: Pki,
    _sim: Sim,
}

fn setup() -> Setup {
    setup_with("")
}

/// `mtls_extra`: more lines of `auth.mtls` (4-space indented).
fn setup_with(mtls_extra: &str) -> Setup {
    let sim = Sim::start("mtls", &[]);
    let server_ca = Pki::new();
    let (cert, key) = server_ca.leaf("gateway", &["localhost"]);
    let clients = Pki::new();
    let tls = free_addr();
    let policies = clients.dir.path.join("p.cedar");
    std::fs::write(
        &policies,
        r#"
@id("services")
permit (principal in Skygate::Group::"services", action in Skygate::Action::"call", resource)
when { context.mtls };
@id("keys-chat")
permit (principal is Skygate::ApiKey, action in Skygate::Action::"call", resource == Skygate::Model::"m");
@id("admin")
permit (principal == Skygate::AdminToken::"admin", action == Skygate::Action::"admin", resource);
"#,
    )
    .unwrap();
    let body = format!(
        "server: {{ threads: 2, grace_period: 5s, tls: {{ listen: \"{tls}\", cert: \"{}\", key: \"{}\" }} }}\n\
         auth:\n  api_keys:\n    - {{ key: {CLIENT_KEY}, principal: tester }}\n  mtls:\n    ca: [ \"{}\" ]\n{mtls_extra}    principals:\n      \"{SPIFFE}\": {{ tenant: team, groups: [services] }}\n\
         backends:\n  s: {{ kind: openai, url: \"{}/v1\" }}\n\
         routes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n  svc: {{ match: {{ path: /v1/chat/completions, models: [svc] }}, targets: [ {{ backend: s }} ], auth: [mtls] }}\n\
         policy:\n  files: [ \"{}\" ]\n  audit_log: off\n",
        cert.display(),
        key.display(),
        clients.ca.display(),
        sim.url,
        policies.display()
    );
    let gw = Gateway::start(&body);
    Setup {
        gw,
        body,
        tls,
        server_ca,
        clients,
        _sim: sim,
    }
}

#[test]
fn a_spiffe_certificate_is_the_caller_and_routes_can_require_it() {
    let s = setup();
    let good = client_cert(&s.clients, Some(SPIFFE), None, (2020, 2100));
    // The service, by its certificate: permitted as a member of `services`
    // with `context.mtls`.
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("svc")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("m")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // No certificate on the TLS listener: the mTLS route answers 401.
    let r = tls_call(s.tls, &s.server_ca, None, &[], &chat("svc")).unwrap();
    r.assert_error(401, "invalid_api_key");
    assert!(r.header("www-authenticate").is_some());
    assert!(r.text().contains("client certificate"), "{}", r.text());
    // An API key works over TLS where keys are accepted...
    let bearer = format!("Bearer {CLIENT_KEY}");
    let r = tls_call(
        s.tls,
        &s.server_ca,
        None,
        &[("authorization", &bearer)],
        &chat("m"),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // ...but not on the route that requires a certificate, on either listener.
    let r = tls_call(
        s.tls,
        &s.server_ca,
        None,
        &[("authorization", &bearer)],
        &chat("svc"),
    )
    .unwrap();
    r.assert_error(401, "invalid_api_key");
    let r = s.gw.call(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        chat("svc").to_string().as_bytes(),
    );
    r.assert_error(401, "invalid_api_key");
    // A key and a certificate on a certificate-only route: the certificate.
    let r = tls_call(
        s.tls,
        &s.server_ca,
        Some(&good),
        &[("authorization", &bearer)],
        &chat("svc"),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // A certificate with no SPIFFE ID names no one: 401, not a guess.
    let dns_only = client_cert(&s.clients, None, Some("app.corp"), (2020, 2100));
    let r = tls_call(s.tls, &s.server_ca, Some(&dns_only), &[], &chat("svc")).unwrap();
    r.assert_error(401, "invalid_api_key");
    assert!(r.text().contains("URI SAN"), "{}", r.text());
    // A certificate of the same CA but an unknown SPIFFE ID: a service
    // without groups, which the policy does not permit.
    let stranger = client_cert(
        &s.clients,
        Some("spiffe://corp/ns/other/sa/x"),
        None,
        (2020, 2100),
    );
    let r = tls_call(s.tls, &s.server_ca, Some(&stranger), &[], &chat("svc")).unwrap();
    r.assert_error(403, "forbidden");
}

#[test]
fn certificates_of_another_ca_or_expired_get_no_handshake() {
    let s = setup();
    let other_ca = Pki::new();
    let foreign = client_cert(&other_ca, Some(SPIFFE), None, (2020, 2100));
    let expired = client_cert(&s.clients, Some(SPIFFE), None, (2015, 2020));
    let not_yet = client_cert(&s.clients, Some(SPIFFE), None, (2090, 2100));
    for (what, cert) in [
        ("another CA", &foreign),
        ("expired", &expired),
        ("not yet valid", &not_yet),
    ] {
        let r = tls_call(s.tls, &s.server_ca, Some(cert), &[], &chat("svc"));
        assert!(r.is_err(), "{what}: got {:?}", r.map(|r| r.status));
    }
    // The gateway is unharmed, and a good certificate still works.
    let good = client_cert(&s.clients, Some(SPIFFE), None, (2020, 2100));
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("svc")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.gw.chat("m").status,
        200,
        "the plain listener still answers"
    );
}

#[test]
fn a_required_certificate_is_checked_at_the_handshake() {
    let s = setup_with("    required: true\n");
    let r = tls_call(s.tls, &s.server_ca, None, &[], &chat("svc"));
    assert!(
        r.is_err(),
        "no certificate, no handshake: {:?}",
        r.map(|r| r.status)
    );
    let good = client_cert(&s.clients, Some(SPIFFE), None, (2020, 2100));
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("svc")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_reload_changes_the_client_cas_for_new_handshakes() {
    let s = setup();
    let good = client_cert(&s.clients, Some(SPIFFE), None, (2020, 2100));
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("svc")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // The CA is replaced (a compromised one dropped): its certificates are
    // refused from the next handshake on, without a restart.
    let new_ca = Pki::new();
    s.gw.rewrite_config(&s.body.replace(
        &s.clients.ca.display().to_string(),
        &new_ca.ca.display().to_string(),
    ));
    let r = s.gw.admin("POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("auth.mtls changed"), "{}", r.text());
    assert!(
        !r.text().contains("needs_restart\":[\"auth"),
        "{}",
        r.text()
    );
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("svc"));
    assert!(
        r.is_err(),
        "the dropped CA's certificate: {:?}",
        r.map(|r| r.status)
    );
    let renewed = client_cert(&new_ca, Some(SPIFFE), None, (2020, 2100));
    let r = tls_call(s.tls, &s.server_ca, Some(&renewed), &[], &chat("svc")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn policy_check_knows_certificate_callers() {
    let s = setup();
    let c = s.gw.config_path.to_str().unwrap();
    let check = |args: &[&str]| {
        let mut all = vec!["policy", "check", "--config", c];
        all.extend_from_slice(args);
        let out = std::process::Command::new(bin())
            .args(&all)
            .output()
            .unwrap();
        (out.status.success(), output_text(&out))
    };
    // The configured identity's groups come from `auth.mtls.principals`,
    // and a service caller always has `context.mtls`, as in the gateway.
    let (ok, text) = check(&[
        "--type",
        "service",
        "--principal",
        SPIFFE,
        "--action",
        "invoke",
        "--model",
        "svc",
        "--expect",
        "allow",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("by services ("), "{text}");
    let (ok, text) = check(&[
        "--type",
        "service",
        "--principal",
        "spiffe://corp/ns/other/sa/x",
        "--action",
        "invoke",
        "--model",
        "svc",
        "--expect",
        "deny",
    ]);
    assert!(ok, "{text}");
    // A route is asked about its model, as the gateway asks.
    let (ok, text) = check(&[
        "--type",
        "service",
        "--principal",
        SPIFFE,
        "--action",
        "invoke",
        "--resource",
        "route:svc",
    ]);
    assert!(!ok && text.contains("add --model"), "{text}");
}

#[test]
fn hostile_bytes_on_the_tls_port_harm_nothing() {
    use std::io::Read;
    let s = setup();
    // Plain HTTP to the TLS port, garbage, half a ClientHello then gone,
    // and a peer that connects and says nothing: none gets an answer, none
    // harms the next caller.
    let half_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for bytes in [
        &b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        half_hello,
    ] {
        let mut sock = TcpStream::connect(s.tls).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = sock.write_all(bytes);
        let mut buf = [0u8; 256];
        let n = sock.read(&mut buf).unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("HTTP/1.1 200"),
            "no HTTP answer to non-TLS bytes"
        );
    }
    let silent = TcpStream::connect(s.tls).unwrap();
    let good = client_cert(&s.clients, Some(SPIFFE), None, (2020, 2100));
    let r = tls_call(s.tls, &s.server_ca, Some(&good), &[], &chat("svc")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(silent);
    assert_eq!(s.gw.chat("m").status, 200, "the plain listener too");
}

#[test]
fn a_key_that_does_not_go_with_its_certificate_is_a_config_error() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("gateway", &["localhost"]);
    let (_, other_key) = pki.leaf("other", &["localhost"]);
    let config = pki.dir.path.join("skygate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nserver:\n  tls: {{ listen: 127.0.0.1:3, cert: \"{}\", key: \"{}\" }}\nbackends:\n  a: {{ kind: openai, url: http://127.0.0.1:4/v1 }}\nroutes:\n  r: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {{ backend: a }} ] }}\n",
            cert.display(),
            other_key.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("skygate.yaml:4: server.tls.key: the key does not go with the certificate"),
        "{text}"
    );
}
