//! The HTTPS listener (`server.tls`) and, with `auth.mtls`, client
//! certificates: rustls verifies them against the configured CAs during the
//! handshake (no certificate, another CA's or an expired one: no
//! handshake, or, when certificates are optional, no identity), and the
//! handshake callback reads the leaf's names once per connection into a
//! [`ClientCert`] that Pingora keeps in the connection's TLS digest.

use async_trait::async_trait;
use pingora_core::listeners::{TlsAccept, TlsAcceptCallbacks};
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::{
    sign, CertificateDer, ClientCertVerified, ClientCertVerifier, CryptoProvider,
    DigitallySignedStruct, RootCertStore, RusTlsError, SignatureScheme, UnixTime,
    WebPkiClientVerifier,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::DistinguishedName;
use skygate_config::Config;
use skygate_plugins::auth::mtls::ClientCert;
use std::any::Any;
use std::sync::Arc;

struct Callbacks;

#[async_trait]
impl TlsAccept for Callbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // Only a certificate rustls verified gets here (the verifier runs
        // first); one that does not parse names no one.
        let cert = ClientCert::from_der(tls.peer_certificate_der()?)?;
        // An `Arc` inside: each request of the connection takes a clone.
        Some(Arc::new(Arc::new(cert)))
    }
}

/// What only building them can tell about the TLS listener and client
/// certificates (run by `validate`, `run` and reloads): (field path, why).
pub fn check(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(t) = &config.server.tls {
        if let Err(e) = certified_key(t) {
            out.push(("server.tls.key".to_string(), e));
        }
    }
    if let Err(e) = client_verifier(config) {
        out.push(("auth.mtls.ca".to_string(), e));
    }
    out
}

/// The listener's certificate with its key, checked to go together.
fn certified_key(t: &skygate_config::TlsListener) -> Result<sign::CertifiedKey, String> {
    pingora_core::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let chain: Vec<CertificateDer<'static>> = t
        .cert_chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = rustls_pemfile::private_key(&mut t.key_pem.expose().as_bytes())
        .ok()
        .flatten()
        .ok_or("holds no PEM private key")?;
    sign::CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("the key does not go with the certificate: {e}"))
}

/// The TLS settings of the HTTPS listener, or why they cannot be built.
pub fn settings(
    config: &Config,
) -> Result<Option<pingora_core::listeners::tls::TlsSettings>, String> {
    let Some(t) = &config.server.tls else {
        return Ok(None);
    };
    let certified = certified_key(t).map_err(|e| format!("server.tls: {e}"))?;
    let callbacks: TlsAcceptCallbacks = Box::new(Callbacks);
    let mut settings = pingora_core::listeners::tls::TlsSettings::with_callbacks(callbacks)
        .map_err(|e| format!("server.tls: {e}"))?;
    settings.set_cert_resolver(Arc::new(sign::SingleCertAndKey::from(certified)));
    // HTTP/1.1 only, as the plain listener.
    settings.set_alpn(pingora_core::protocols::ALPN::H1);
    // Always the swappable verifier: a reload can add, change or remove
    // the client CAs without a restart (and a removed CA is distrusted at
    // once, for new handshakes).
    CLIENT_AUTH.set(client_verifier(config).map_err(|e| format!("auth.mtls.ca: {e}"))?);
    settings.set_client_cert_verifier(CLIENT_AUTH.clone());
    Ok(Some(settings))
}

/// The verifier of `auth.mtls` (`None`: no client certificates asked for).
pub fn client_verifier(config: &Config) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let Some(m) = &config.auth.mtls else {
        return Ok(None);
    };
    pingora_core::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or("no TLS crypto provider")?
        .clone();
    let mut roots = RootCertStore::empty();
    for der in &m.roots {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if m.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map(|v| Some(v as Arc<dyn ClientCertVerifier>))
        .map_err(|e| format!("cannot verify client certificates: {e}"))
}

/// Installs the client-certificate verifier a reload built.
pub fn set_client_verifier(v: Option<Arc<dyn ClientCertVerifier>>) {
    CLIENT_AUTH.set(v);
}

/// The TLS listener's client-certificate verifier, swapped by reloads.
static CLIENT_AUTH: std::sync::LazyLock<Arc<Swappable>> =
    std::sync::LazyLock::new(|| Arc::new(Swappable::default()));

#[derive(Debug, Default)]
struct Swappable(std::sync::RwLock<Option<Arc<dyn ClientCertVerifier>>>);

impl Swappable {
    fn set(&self, v: Option<Arc<dyn ClientCertVerifier>>) {
        match self.0.write() {
            Ok(mut g) => *g = v,
            Err(p) => *p.into_inner() = v,
        }
    }

    fn get(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn no_client_auth() -> RusTlsError {
    RusTlsError::General("client certificates are not configured".into())
}

impl ClientCertVerifier for Swappable {
    fn offer_client_auth(&self) -> bool {
        self.get().is_some_and(|v| v.offer_client_auth())
    }

    fn client_auth_mandatory(&self) -> bool {
        self.get().is_some_and(|v| v.client_auth_mandatory())
    }

    // No CA hints: they would have to borrow from a verifier a reload may
    // replace. Clients send the certificate they are configured with.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RusTlsError> {
        self.get()
            .ok_or_else(no_client_auth)?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        self.get()
            .ok_or_else(no_client_auth)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        self.get()
            .ok_or_else(no_client_auth)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().map_or_else(
            || {
                CryptoProvider::get_default()
                    .map(|p| p.signature_verification_algorithms.supported_schemes())
                    .unwrap_or_default()
            },
            |v| v.supported_verify_schemes(),
        )
    }
}
