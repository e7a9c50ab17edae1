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
    sign, CertificateDer, CryptoProvider, RootCertStore, WebPkiClientVerifier,
};
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

/// The TLS settings of the HTTPS listener, or why they cannot be built.
pub fn settings(
    config: &Config,
) -> Result<Option<pingora_core::listeners::tls::TlsSettings>, String> {
    let Some(t) = &config.server.tls else {
        return Ok(None);
    };
    pingora_core::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or("server.tls: no TLS crypto provider")?
        .clone();
    let chain: Vec<CertificateDer<'static>> = t
        .cert_chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = rustls_pemfile::private_key(&mut t.key_pem.expose().as_bytes())
        .ok()
        .flatten()
        .ok_or("server.tls.key: holds no PEM private key")?;
    let certified = sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("server.tls: the key does not go with the certificate: {e}"))?;
    let callbacks: TlsAcceptCallbacks = Box::new(Callbacks);
    let mut settings = pingora_core::listeners::tls::TlsSettings::with_callbacks(callbacks)
        .map_err(|e| format!("server.tls: {e}"))?;
    settings.set_cert_resolver(Arc::new(sign::SingleCertAndKey::from(certified)));
    // HTTP/1.1 only, as the plain listener.
    settings.set_alpn(pingora_core::protocols::ALPN::H1);
    if let Some(m) = &config.auth.mtls {
        let mut roots = RootCertStore::empty();
        for der in &m.roots {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("auth.mtls.ca: a CA certificate is not usable: {e}"))?;
        }
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = if m.required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let verifier = builder
            .build()
            .map_err(|e| format!("auth.mtls: cannot verify client certificates: {e}"))?;
        settings.set_client_cert_verifier(verifier);
    }
    Ok(Some(settings))
}
