//! mTLS: the caller named by its client certificate. rustls has verified the
//! chain against `auth.mtls.ca` during the handshake (and refused expired
//! certificates and those of other CAs); the handshake callback reads the
//! leaf's names once per connection into a [`ClientCert`], which every
//! request of the connection carries in its context.

use skygate_config::{Mtls, MtlsIdentity, Principal};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A verified client certificate's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// URI SANs (SPIFFE IDs), in certificate order.
    pub uris: Vec<String>,
    /// DNS SANs, in certificate order.
    pub dns: Vec<String>,
    /// The subject, RFC 4514 (`CN=app, O=corp`).
    pub subject: String,
}

impl ClientCert {
    /// The names of a DER certificate (`None`: it does not parse).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut out = ClientCert {
            subject: cert.subject().to_string(),
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => out.uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// The name `how` picks.
    pub fn identity(&self, how: MtlsIdentity) -> Option<&str> {
        match how {
            MtlsIdentity::Uri => self.uris.first().map(String::as_str),
            MtlsIdentity::Dns => self.dns.first().map(String::as_str),
            MtlsIdentity::Subject => (!self.subject.is_empty()).then_some(self.subject.as_str()),
        }
    }
}

/// Turns certificates into principals.
pub struct MtlsAuth {
    identity: MtlsIdentity,
    principals: BTreeMap<String, Arc<Principal>>,
}

impl MtlsAuth {
    pub fn new(m: &Mtls) -> Self {
        Self {
            identity: m.identity,
            principals: m.principals.clone(),
        }
    }

    /// The caller a certificate names: a configured principal (with its
    /// tenant and groups), or one with the bare id.
    pub fn principal(&self, cert: &ClientCert) -> Result<Arc<Principal>, String> {
        let Some(id) = cert.identity(self.identity) else {
            return Err(format!(
                "the client certificate has no {} to identify the caller by",
                match self.identity {
                    MtlsIdentity::Uri => "URI SAN (SPIFFE ID)",
                    MtlsIdentity::Dns => "DNS SAN",
                    MtlsIdentity::Subject => "subject",
                }
            ));
        };
        Ok(self.principals.get(id).cloned().unwrap_or_else(|| {
            Arc::new(Principal {
                id: id.to_owned(),
                ..Default::default()
            })
        }))
    }
}
