//! The server's TLS configuration: TLS 1.3 only, ring, client certificates from the cluster CA.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

/// The node's TLS identity and the CA its clients must chain to.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The node's certificate first, then any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key; for an appliance it lives in the token and signs there.
    pub key: Arc<dyn SigningKey>,
    /// The cluster CA certificate(s) client certificates must chain to (more than one while a
    /// CA is being rotated).
    pub cluster_ca: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_chain", &self.cert_chain.len())
            .field("key", &self.key.algorithm())
            .field("cluster_ca", &self.cluster_ca.len())
            .finish()
    }
}

/// The TLS material cannot make a server configuration; the node's configuration is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// No server certificate was given.
    #[error("the server certificate chain is empty: configure the node certificate")]
    NoCertificate,
    /// A cluster CA certificate was rejected as a trust anchor.
    #[error("cluster CA certificate cannot be used as a trust anchor: {0}")]
    BadCa(#[source] rustls::Error),
    /// No cluster CA certificate was given, or the verifier rejected the set.
    #[error("cannot verify client certificates: {0} (configure the cluster CA certificate)")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The server certificate does not match the key.
    #[error("the node certificate does not match the node key: {0}")]
    KeyMismatch(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(#[source] rustls::Error),
}

/// Builds the server configuration.
///
/// Presenting a certificate is optional at the TLS layer so that a client without one gets an
/// HTTP 401 problem detail rather than an opaque handshake failure; a certificate that is
/// presented must chain to the cluster CA and allow client authentication, or the handshake
/// fails.
pub(crate) fn server_config(tls: &TlsMaterial) -> Result<ServerConfig, TlsSetupError> {
    if tls.cert_chain.is_empty() {
        return Err(TlsSetupError::NoCertificate);
    }
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in &tls.cluster_ca {
        roots.add(ca.clone()).map_err(TlsSetupError::BadCa)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsSetupError::Verifier)?;
    let certified = CertifiedKey::new(tls.cert_chain.clone(), tls.key.clone());
    match certified.keys_match() {
        Ok(()) => {}
        // A token-held key may not expose its public key; the handshake proves the pair.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(TlsSetupError::KeyMismatch(e)),
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
