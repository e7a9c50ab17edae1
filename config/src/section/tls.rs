//! `server.tls:` (an HTTPS listener beside `listen`) and `auth.mtls:` (client
//! certificates verified against configured CAs, and the identity taken from
//! them). Certificates and keys are read and checked at load.

use crate::load::{key, path_of, read_ca_file, Cx};
use crate::locate::Seg;
use crate::runtime::{Mtls, MtlsIdentity, Principal, TlsListener};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTlsListener {
    /// `IP:PORT` of the HTTPS listener.
    pub listen: String,
    /// PEM certificate chain (leaf first).
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    /// PEM files of the CAs client certificates must chain to.
    pub ca: Vec<String>,
    /// Refuse the TLS handshake without a client certificate (default false:
    /// a certificate is verified when sent; routes decide whether they need one).
    pub required: Option<bool>,
    /// Which name of the certificate is the caller: `uri` (a SPIFFE ID,
    /// default), `dns` or `subject`.
    pub identity: Option<String>,
    /// Tenant, groups and attributes of known identities.
    #[serde(default)]
    pub principals: BTreeMap<String, RawMtlsPrincipal>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMtlsPrincipal {
    pub tenant: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Cx<'_> {
    pub(crate) fn tls(&mut self, r: RawTlsListener) -> Option<TlsListener> {
        let p = [key("server"), key("tls")];
        let listen = self.addr(&r.listen, &path_of(&p, &[key("listen")]));
        let cert_path = self.base.join(&r.cert);
        let cert_chain = match read_ca_file(&cert_path) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(
                    &path_of(&p, &[key("cert")]),
                    format!("`{}`: {e}", cert_path.display()),
                );
                None
            }
        };
        let key_path = self.base.join(&r.key);
        let key_pem = match std::fs::read(&key_path) {
            Err(e) => Err(format!("cannot read it: {e}")),
            Ok(pem) => match rustls_pemfile::private_key(&mut pem.as_slice()) {
                Ok(Some(_)) => String::from_utf8(pem).map_err(|_| "not UTF-8 PEM".to_string()),
                Ok(None) => Err("holds no PEM private key (-----BEGIN PRIVATE KEY-----)".into()),
                Err(e) => Err(format!("not a PEM key file: {e}")),
            },
        };
        let key_pem = match key_pem {
            Ok(k) => Some(crate::Secret::new(k)),
            Err(e) => {
                self.err(
                    &path_of(&p, &[key("key")]),
                    format!("`{}`: {e}", key_path.display()),
                );
                None
            }
        };
        Some(TlsListener {
            listen: listen?,
            cert_chain: cert_chain?,
            key_pem: key_pem?,
        })
    }

    pub(crate) fn mtls(&mut self, r: RawMtls) -> Option<Mtls> {
        let p = [key("auth"), key("mtls")];
        let before = self.error_count();
        let mut roots = Vec::new();
        for (i, f) in r.ca.iter().enumerate() {
            let path = self.base.join(f);
            match read_ca_file(&path) {
                Ok(c) => roots.extend(c),
                Err(e) => self.err(
                    &path_of(&p, &[key("ca"), Seg::Index(i)]),
                    format!("`{}`: {e}", path.display()),
                ),
            }
        }
        if r.ca.is_empty() {
            self.err(
                &path_of(&p, &[key("ca")]),
                "list the CA files client certificates must chain to (at least one)",
            );
        }
        let identity = match r.identity.as_deref() {
            None | Some("uri") => MtlsIdentity::Uri,
            Some("dns") => MtlsIdentity::Dns,
            Some("subject") => MtlsIdentity::Subject,
            Some(o) => {
                self.err(
                    &path_of(&p, &[key("identity")]),
                    format!("`{o}` is not allowed: use uri (SPIFFE IDs), dns or subject"),
                );
                MtlsIdentity::Uri
            }
        };
        let mut principals = BTreeMap::new();
        for (id, m) in r.principals {
            if m.tenant.as_deref() == Some("") {
                self.err(
                    &path_of(&p, &[key("principals"), key(&id), key("tenant")]),
                    "must not be empty (leave it out instead)",
                );
                continue;
            }
            let principal = Principal {
                id: id.clone(),
                issuer: None,
                tenant: m.tenant,
                groups: m.groups,
                attributes: m.attributes,
            };
            principals.insert(id, Arc::new(principal));
        }
        (self.error_count() == before).then_some(Mtls {
            roots,
            required: r.required.unwrap_or(false),
            identity,
            principals,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use crate::MtlsIdentity;

    const BASE: &str = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n";

    fn dir_with(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "skygate-tls-test-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    }

    // Shapes only: the loader checks PEM framing and base64, not the math
    // (the gateway checks that the key goes with the certificate at start).
    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUUyk=\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgE=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tls_listener_and_client_certificates() {
        let dir = dir_with(&[("c.pem", CERT), ("k.pem", KEY), ("ca.pem", CERT)]);
        let y = format!("{BASE}server:\n  tls: {{ listen: 127.0.0.1:3, cert: c.pem, key: k.pem }}\nauth:\n  mtls:\n    ca: [ca.pem]\n    identity: dns\n    principals:\n      app.corp: {{ tenant: t, groups: [svc] }}\n");
        let c = crate::load_str_in(&y, "s.yaml", &|_| None, &dir).unwrap();
        let t = c.server.tls.as_ref().unwrap();
        assert_eq!(t.listen.port(), 3);
        assert_eq!(t.cert_chain.len(), 1);
        assert!(
            !format!("{c:?}").contains("MIGHAgEA"),
            "the key is never printed"
        );
        let m = c.auth.mtls.as_ref().unwrap();
        assert_eq!(m.identity, MtlsIdentity::Dns);
        assert!(!m.required);
        assert_eq!(m.principals["app.corp"].groups, ["svc"]);

        // Each mistake named at its field.
        let y = format!("{BASE}server:\n  tls: {{ listen: nowhere, cert: missing.pem, key: c.pem }}\nauth:\n  mtls: {{ ca: [], identity: email }}\n");
        let errs = crate::load_str_in(&y, "s.yaml", &|_| None, &dir)
            .unwrap_err()
            .to_string();
        for needle in [
            "server.tls.listen: `nowhere` is not an address",
            "server.tls.cert: ",
            "missing.pem",
            "server.tls.key: ",
            "holds no PEM private key",
            "auth.mtls.ca: list the CA files",
            "auth.mtls.identity: `email` is not allowed",
        ] {
            assert!(errs.contains(needle), "missing {needle}: {errs}");
        }
        // mTLS needs the TLS listener; a route may require it only when on.
        let errs = crate::load_str_in(
            &format!("{BASE}auth:\n  mtls: {{ ca: [ca.pem] }}\n"),
            "s.yaml",
            &|_| None,
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("auth.mtls: client certificates need the TLS listener"),
            "{errs}"
        );
        let errs = load_str(
            &BASE.replace(
                "targets: [ { backend: a } ] }",
                "targets: [ { backend: a } ], auth: [mtls] }",
            ),
            "s.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("`mtls` is not configured: add `auth.mtls`"),
            "{errs}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
