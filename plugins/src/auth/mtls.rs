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
    /// The subject, RFC 4514 (`CN=app,O=corp`; empty when an attribute is
    /// not a string).
    pub subject: String,
}

impl ClientCert {
    /// The names of a DER certificate (`None`: it does not parse).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut out = ClientCert {
            subject: rfc4514(cert.subject()).unwrap_or_default(),
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

    /// The name `how` picks. A URI identity needs exactly one URI SAN (as
    /// SPIFFE requires): with several, the holder could not be told apart
    /// from any of them.
    pub fn identity(&self, how: MtlsIdentity) -> Option<&str> {
        match how {
            MtlsIdentity::Uri => match self.uris.as_slice() {
                [one] => Some(one.as_str()),
                _ => None,
            },
            MtlsIdentity::Dns => self.dns.first().map(String::as_str),
            MtlsIdentity::Subject => (!self.subject.is_empty()).then_some(self.subject.as_str()),
        }
    }
}

/// A distinguished name as RFC 4514 writes it: the last RDN first, `,`
/// between RDNs, `+` within one, special characters escaped, so no two
/// names read the same. `None` when an attribute is not a string (such a
/// name identifies no one, rather than all such names one).
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    use x509_parser::oid_registry as oids;
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type();
            let key = [
                (&oids::OID_X509_COMMON_NAME, "CN"),
                (&oids::OID_X509_ORGANIZATION_NAME, "O"),
                (&oids::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
                (&oids::OID_X509_COUNTRY_NAME, "C"),
                (&oids::OID_X509_LOCALITY_NAME, "L"),
                (&oids::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
                (&oids::OID_DOMAIN_COMPONENT, "DC"),
                (&oids::OID_X509_STREET_ADDRESS, "STREET"),
            ]
            .iter()
            .find(|(o, _)| *o == oid)
            .map_or_else(|| oid.to_id_string(), |(_, k)| (*k).to_string());
            let value = atv.as_str().ok()?;
            parts.push(format!("{key}={}", escape(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 4514 section 2.4 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

/// Turns certificates into principals.
pub struct MtlsAuth {
    identity: MtlsIdentity,
    principals: BTreeMap<String, Arc<Principal>>,
    /// Identities not in `principals`, made once each (bounded), so a
    /// caller is the same `Arc` request after request (caches key on it).
    seen: std::sync::Mutex<BTreeMap<String, Arc<Principal>>>,
}

impl MtlsAuth {
    pub fn new(m: &Mtls) -> Self {
        Self {
            identity: m.identity,
            principals: m.principals.clone(),
            seen: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The caller a certificate names: a configured principal (with its
    /// tenant and groups), or one with the bare id.
    pub fn principal(&self, cert: &ClientCert) -> Result<Arc<Principal>, String> {
        let Some(id) = cert.identity(self.identity) else {
            return Err(format!(
                "the client certificate has no {} to identify the caller by",
                match self.identity {
                    MtlsIdentity::Uri => "single URI SAN (SPIFFE ID)",
                    MtlsIdentity::Dns => "DNS SAN",
                    MtlsIdentity::Subject => "subject",
                }
            ));
        };
        if let Some(p) = self.principals.get(id) {
            return Ok(p.clone());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = seen.get(id) {
            return Ok(p.clone());
        }
        let p = Arc::new(Principal {
            id: id.to_owned(),
            ..Default::default()
        });
        if seen.len() >= 4096 {
            seen.clear();
        }
        seen.insert(id.to_owned(), p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_escapes_so_names_do_not_collide() {
        assert_eq!(escape("app, O=corp"), "app\\, O=corp");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape("plain"), "plain");
        let one = ClientCert {
            uris: vec!["spiffe://a".into()],
            ..Default::default()
        };
        assert_eq!(one.identity(MtlsIdentity::Uri), Some("spiffe://a"));
        let two = ClientCert {
            uris: vec!["spiffe://a".into(), "spiffe://b".into()],
            ..Default::default()
        };
        assert_eq!(two.identity(MtlsIdentity::Uri), None, "ambiguous: no one");
    }
}
