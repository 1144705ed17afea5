//! The server-certificate check: a node of this cluster, whatever its address.
//!
//! Node certificates name their holder only in a SPIFFE URI (they may carry no DNS or IP
//! name), so the usual host-name check cannot apply. Instead a server is accepted only if, in
//! this order:
//!
//! 1. its chain verifies up to a cluster CA certificate (the only trust anchors) with the ring
//!    provider's signature algorithms, it is valid now, and it allows TLS server
//!    authentication: exactly the chain check of rustls' `WebPkiServerVerifier`, without the
//!    name check;
//! 2. only then is its identity read: exactly one `spiffe://` URI naming this cluster and the
//!    role `node`.
//!
//! The handshake signatures are verified with the same ring algorithms.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use strongroom_transport::pki::{IdentityError, identity_of};
use strongroom_transport::{ClusterId, NodeId, Role, SpiffeId, Subject};

/// Why a server certificate whose chain may be fine is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ServerRefusal {
    /// The verified certificate names no usable identity.
    #[error("the certificate names no strongroom identity: {0}")]
    NoIdentity(IdentityError),
    /// The verified certificate belongs to another cluster.
    #[error("the certificate is for cluster '{found}', this client talks to cluster '{expected}'")]
    WrongCluster {
        /// This client's cluster.
        expected: ClusterId,
        /// The cluster the certificate names.
        found: ClusterId,
    },
    /// The certificate names a client, not a node.
    #[error("the server presented {presented}, a {role} certificate, not a node's")]
    NotANode {
        /// The identity it names.
        presented: String,
        /// Its role.
        role: Role,
    },
}

/// Accepts any node of one cluster whose certificate the cluster CA issued.
#[derive(Debug)]
pub(crate) struct NodeVerifier {
    roots: Arc<RootCertStore>,
    cluster: ClusterId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl NodeVerifier {
    /// Trusts `roots` (the cluster CA certificates) for nodes of `cluster`.
    pub(crate) fn new(roots: Arc<RootCertStore>, cluster: ClusterId) -> Self {
        Self {
            roots,
            cluster,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The full check of a presented chain; returns the node it names.
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<NodeId, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if let Err(e) = verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        ) {
            // A client certificate offered by a server fails on its key usage; saying what it
            // is helps more than naming the missing usage. It is refused either way.
            if let rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
            ) = e
            {
                if let Ok(
                    id @ SpiffeId {
                        subject: Subject::Client(_),
                        ..
                    },
                ) = identity_of(end_entity)
                {
                    return Err(refused(ServerRefusal::NotANode {
                        presented: id.uri(),
                        role: Role::Client,
                    }));
                }
            }
            return Err(e);
        }
        // The identity can be trusted only now that the chain is.
        let id = identity_of(end_entity).map_err(|e| refused(ServerRefusal::NoIdentity(e)))?;
        if id.cluster != self.cluster {
            return Err(refused(ServerRefusal::WrongCluster {
                expected: self.cluster.clone(),
                found: id.cluster,
            }));
        }
        match id.subject {
            Subject::Node(node) => Ok(node),
            Subject::Client(_) => Err(refused(ServerRefusal::NotANode {
                presented: id.uri(),
                role: Role::Client,
            })),
        }
    }
}

fn refused(reason: ServerRefusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

/// A readable reason for a refused server certificate.
pub(crate) fn describe_refusal(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => {
            "it is not issued by the cluster CA (is the URL a node of this cluster, and the CA \
             file this cluster's?)"
                .to_owned()
        }
        CertificateError::BadSignature => {
            "its signature does not verify against the cluster CA (issued by another CA of the \
             same name?)"
                .to_owned()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!("it is not valid for TLS server authentication ({e})")
        }
        CertificateError::Other(other) => other.to_string(),
        other => other.to_string(),
    }
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name is deliberately not checked: nodes are named by their SPIFFE id,
        // which `check` verifies, not by the address they are reached at.
        self.check(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use strongroom_transport::pki::{ClusterCa, SoftwareKey, Validity};
    use strongroom_transport::{ClientName, ClusterId, NodeId};

    use super::*;

    fn cluster() -> ClusterId {
        ClusterId::new("c1").unwrap()
    }

    fn verifier(ca: &ClusterCa) -> NodeVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        NodeVerifier::new(Arc::new(roots), cluster())
    }

    fn issue(ca: &ClusterCa, subject: Subject, validity: Validity) -> CertificateDer<'static> {
        let key = SoftwareKey::generate().unwrap();
        ca.issue(subject, key.rcgen_key(), validity).unwrap().der
    }

    fn node(name: &str) -> Subject {
        Subject::Node(NodeId::new(name).unwrap())
    }

    fn reason(err: rustls::Error) -> CertificateError {
        match err {
            rustls::Error::InvalidCertificate(e) => e,
            other => panic!("not a certificate error: {other:?}"),
        }
    }

    #[test]
    fn accepts_a_node_of_the_cluster_and_names_it() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(2)).unwrap();
        let cert = issue(&ca, node("n2"), Validity::days_from_now(1));
        let found = verifier(&ca).check(&cert, &[], UnixTime::now()).unwrap();
        assert_eq!(found.as_str(), "n2");
    }

    #[test]
    fn refuses_everything_else() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(2)).unwrap();
        let v = verifier(&ca);
        let now = UnixTime::now();

        let other_ca = ClusterCa::generate(&cluster(), Validity::days_from_now(2)).unwrap();
        let foreign = issue(&other_ca, node("n1"), Validity::days_from_now(1));
        let e = reason(v.check(&foreign, &[], now).unwrap_err());
        assert!(
            matches!(
                e,
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ),
            "{e:?}"
        );

        let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
        let expired = issue(
            &ca,
            node("n1"),
            Validity {
                not_before: past,
                not_after: past + Duration::from_secs(86_400),
            },
        );
        let e = reason(v.check(&expired, &[], now).unwrap_err());
        assert!(
            matches!(
                e,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            "{e:?}"
        );

        let client = issue(
            &ca,
            Subject::Client(ClientName::new("alice").unwrap()),
            Validity::days_from_now(1),
        );
        let e = reason(v.check(&client, &[], now).unwrap_err());
        let text = describe_refusal(&e);
        assert!(
            text.contains("spiffe://c1/client/alice") && text.contains("not a node"),
            "{text}"
        );

        // The CA certificate itself is no node either.
        assert!(v.check(ca.cert_der(), &[], now).is_err());
        assert!(
            v.check(&CertificateDer::from(vec![1u8, 2, 3]), &[], now)
                .is_err()
        );
    }

    #[test]
    fn another_cluster_is_refused_even_under_a_trusted_ca() {
        // A client of cluster "c2" that (mis)trusts the CA of cluster "c1".
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(2)).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let v = NodeVerifier::new(Arc::new(roots), ClusterId::new("c2").unwrap());
        let cert = issue(&ca, node("n1"), Validity::days_from_now(1));
        let e = reason(v.check(&cert, &[], UnixTime::now()).unwrap_err());
        let text = describe_refusal(&e);
        assert!(text.contains("cluster 'c1'"), "{text}");
    }
}
