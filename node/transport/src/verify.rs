//! Peer authentication: the rustls certificate verifiers both ends of every node-to-node
//! connection run.
//!
//! A peer is accepted only if its certificate chains to the cluster CA (the only trust anchor),
//! is valid now, names this cluster, names the role `node`, names a node other than this one
//! that is listed in this node's membership, and carries the extended key usage for its side of
//! the handshake. When this node dials, the server must additionally be the very node it meant
//! to dial (the node id is the TLS server name). Every refusal is logged with the presented
//! identity and the reason, and published as a [`TransportEvent::HandshakeRefused`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::events::{Events, TransportEvent};
use crate::ids::{ClusterId, NodeId, Role, SpiffeId, Subject};
use crate::pki::{IdentityError, identity_of};

/// Which side of the handshake checked the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A peer dialed this node; its client certificate was checked.
    Inbound,
    /// This node dialed a peer; the server certificate was checked.
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

/// Why a peer's certificate was refused. The presenter of the certificate is at fault in
/// every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    /// The peer presented no certificate.
    #[error("no certificate presented")]
    NoCertificate,
    /// The certificate is not parseable.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate does not chain to this cluster's CA (another CA issued it).
    #[error("certificate not issued by this cluster's CA")]
    UnknownIssuer,
    /// The certificate's validity period has ended.
    #[error("certificate expired at {not_after_unix} (unix seconds)")]
    Expired {
        /// End of validity, unix seconds.
        not_after_unix: u64,
    },
    /// The certificate's validity period has not begun.
    #[error("certificate not valid before {not_before_unix} (unix seconds)")]
    NotYetValid {
        /// Start of validity, unix seconds.
        not_before_unix: u64,
    },
    /// The certificate lacks the extended key usage for its side of the handshake.
    #[error("certificate not valid for {needed}")]
    WrongKeyUsage {
        /// The usage that was needed.
        needed: &'static str,
    },
    /// Any other chain validation failure (bad signature, bad extension, ...).
    #[error("certificate chain invalid: {0}")]
    InvalidChain(String),
    /// The certificate names no usable strongroom identity.
    #[error("no usable identity: {0}")]
    NoIdentity(IdentityError),
    /// The certificate was issued for another cluster.
    #[error("certificate is for cluster '{found}', this is cluster '{expected}'")]
    WrongCluster {
        /// This node's cluster.
        expected: ClusterId,
        /// The cluster the certificate names.
        found: ClusterId,
    },
    /// The certificate is a client certificate (or any non-node role) presented as a node.
    #[error("a {role} certificate cannot join as a node")]
    NotANode {
        /// The role the certificate names.
        role: Role,
    },
    /// The certificate names this very node.
    #[error("certificate names this node itself")]
    OwnIdentity,
    /// The node is not listed in this node's membership configuration.
    #[error("node '{node}' is not a member of this cluster's configuration")]
    NotAMember {
        /// The node the certificate names.
        node: NodeId,
    },
    /// This node dialed one node and another answered.
    #[error("dialed node '{expected}' but '{found}' answered")]
    UnexpectedPeer {
        /// The node that was dialed.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
}

impl RefusalReason {
    /// Stable short name, for counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RefusalReason::NoCertificate => "refused.no_certificate",
            RefusalReason::Malformed(_) => "refused.malformed",
            RefusalReason::UnknownIssuer => "refused.unknown_issuer",
            RefusalReason::Expired { .. } => "refused.expired",
            RefusalReason::NotYetValid { .. } => "refused.not_yet_valid",
            RefusalReason::WrongKeyUsage { .. } => "refused.wrong_key_usage",
            RefusalReason::InvalidChain(_) => "refused.invalid_chain",
            RefusalReason::NoIdentity(_) => "refused.no_identity",
            RefusalReason::WrongCluster { .. } => "refused.wrong_cluster",
            RefusalReason::NotANode { .. } => "refused.not_a_node",
            RefusalReason::OwnIdentity => "refused.own_identity",
            RefusalReason::NotAMember { .. } => "refused.not_a_member",
            RefusalReason::UnexpectedPeer { .. } => "refused.unexpected_peer",
        }
    }
}

/// One refused handshake.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Which side of the handshake this node was on.
    pub direction: Direction,
    /// The identity the certificate claims, if it could be read at all (unverified).
    pub presented: Option<SpiffeId>,
    /// Why it was refused.
    pub reason: RefusalReason,
    /// When.
    pub at: SystemTime,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.presented {
            Some(id) => write!(
                f,
                "{} handshake from {id} refused: {}",
                self.direction, self.reason
            ),
            None => write!(f, "{} handshake refused: {}", self.direction, self.reason),
        }
    }
}

/// Verifies peer certificates against the cluster CA and this node's membership. Used as both
/// the rustls client-certificate verifier (inbound) and server-certificate verifier (outbound).
pub struct PeerVerifier {
    cluster: ClusterId,
    own: NodeId,
    members: BTreeSet<NodeId>,
    anchors: Vec<TrustAnchor<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
    events: Arc<Events>,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("cluster", &self.cluster)
            .field("own", &self.own)
            .field("members", &self.members)
            .finish()
    }
}

/// The CA certificate cannot serve as a trust anchor (operator: wrong CA file).
#[derive(Debug, thiserror::Error)]
#[error("the cluster CA certificate cannot be used as a trust anchor: {0}")]
pub struct BadTrustAnchor(String);

impl PeerVerifier {
    /// A verifier for node `own` of `cluster`, trusting only `ca`, accepting the nodes in
    /// `members` (this node's own id, if listed, is ignored).
    pub fn new(
        cluster: ClusterId,
        own: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        ca: &CertificateDer<'_>,
        events: Arc<Events>,
    ) -> Result<Self, BadTrustAnchor> {
        let anchor = webpki::anchor_from_trusted_cert(ca)
            .map_err(|e| BadTrustAnchor(e.to_string()))?
            .to_owned();
        let members = members.into_iter().filter(|m| *m != own).collect();
        Ok(Self {
            cluster,
            own,
            members,
            anchors: vec![anchor],
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            events,
        })
    }

    /// Checks a presented chain; returns the peer's node id. `expected` is the node this
    /// node dialed (outbound only).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        direction: Direction,
        expected: Option<&NodeId>,
    ) -> Result<NodeId, Box<Refusal>> {
        let presented = identity_of(end_entity).ok();
        self.check_inner(end_entity, intermediates, now, direction, expected, presented.as_ref())
            .map_err(|reason| {
                let refusal = Refusal { direction, presented, reason, at: SystemTime::now() };
                tracing::warn!(
                    direction = %refusal.direction,
                    presented = %refusal.presented.as_ref().map_or_else(|| "<unreadable>".to_owned(), |p| p.uri()),
                    reason = %refusal.reason,
                    "refused peer certificate"
                );
                self.events.publish(TransportEvent::HandshakeRefused(refusal.clone()));
                Box::new(refusal)
            })
    }

    fn check_inner(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        direction: Direction,
        expected: Option<&NodeId>,
        presented: Option<&SpiffeId>,
    ) -> Result<NodeId, RefusalReason> {
        let id = self.check_chain(end_entity, intermediates, now, direction, presented)?;
        let node = match id.subject {
            Subject::Node(node) => node,
            Subject::Client(_) => return Err(RefusalReason::NotANode { role: Role::Client }),
        };
        if node == self.own {
            return Err(RefusalReason::OwnIdentity);
        }
        if !self.members.contains(&node) {
            return Err(RefusalReason::NotAMember { node });
        }
        if let Some(expected) = expected {
            if *expected != node {
                return Err(RefusalReason::UnexpectedPeer {
                    expected: expected.clone(),
                    found: node,
                });
            }
        }
        Ok(node)
    }

    /// Chain to the CA, validity, key usage for `direction`, and this cluster's id.
    fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        direction: Direction,
        presented: Option<&SpiffeId>,
    ) -> Result<SpiffeId, RefusalReason> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| RefusalReason::Malformed(e.to_string()))?;
        let (usage, needed) = match direction {
            Direction::Inbound => (webpki::KeyUsage::client_auth(), "TLS client authentication"),
            Direction::Outbound => (webpki::KeyUsage::server_auth(), "TLS server authentication"),
        };
        let chain = cert.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        );
        if let Err(e) = chain {
            return Err(match e {
                // A CA with this CA's name but another key yields a signature mismatch: either
                // way the certificate was not issued by this cluster's CA.
                webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                    RefusalReason::UnknownIssuer
                }
                webpki::Error::CertExpired { not_after, .. } => RefusalReason::Expired {
                    not_after_unix: not_after.as_secs(),
                },
                webpki::Error::CertNotValidYet { not_before, .. } => RefusalReason::NotYetValid {
                    not_before_unix: not_before.as_secs(),
                },
                webpki::Error::RequiredEkuNotFoundContext(_) => {
                    // A client certificate offered by a server is refused for its role, which
                    // says more than the missing key usage.
                    match presented.map(|p| p.subject.role()) {
                        Some(Role::Client) => RefusalReason::NotANode { role: Role::Client },
                        _ => RefusalReason::WrongKeyUsage { needed },
                    }
                }
                other => RefusalReason::InvalidChain(other.to_string()),
            });
        }
        // The identity is only trusted now that the chain is.
        let id = identity_of(end_entity).map_err(RefusalReason::NoIdentity)?;
        if id.cluster != self.cluster {
            return Err(RefusalReason::WrongCluster {
                expected: self.cluster.clone(),
                found: id.cluster,
            });
        }
        Ok(id)
    }

    /// The checks a peer will run on this node's own certificate, minus membership: used at
    /// start-up so a node with an unusable certificate refuses to start instead of being
    /// refused by every peer.
    pub(crate) fn check_own(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, RefusalReason> {
        let presented = identity_of(end_entity).ok();
        self.check_chain(
            end_entity,
            intermediates,
            now,
            Direction::Inbound,
            presented.as_ref(),
        )?;
        self.check_chain(
            end_entity,
            intermediates,
            now,
            Direction::Outbound,
            presented.as_ref(),
        )
    }

    fn to_rustls(reason: RefusalReason) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
    }
}

/// A node certificate that cannot serve its node; the certificate's issuer or installer is at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum NodeCertError {
    /// No certificate was given.
    #[error("no node certificate")]
    NoCertificate,
    /// The certificate carries no usable identity.
    #[error("the node certificate: {0}")]
    BadCertificate(#[from] IdentityError),
    /// Peers would refuse the certificate.
    #[error("peers would refuse the node certificate: {0}")]
    Refused(RefusalReason),
    /// The certificate names another node or cluster.
    #[error("the certificate is for {found}, expected {expected}")]
    IdentityMismatch {
        /// The identity this node has.
        expected: SpiffeId,
        /// The identity the certificate names.
        found: SpiffeId,
    },
    /// The certificate is for another key than this node's.
    #[error("the certificate's public key is not this node's key")]
    KeyMismatch,
    /// The CA certificate is unusable.
    #[error(transparent)]
    TrustAnchor(#[from] BadTrustAnchor),
}

/// Checks that `chain` is a certificate peers will accept from node `node` of `cluster`:
/// issued by `ca` for this very identity, valid now for both ends of a handshake, and, when
/// `key_spki` is given, for that public key (DER SubjectPublicKeyInfo). Returns the end of its
/// validity.
pub fn check_node_certificate(
    ca: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    cluster: &ClusterId,
    node: &NodeId,
    key_spki: Option<&[u8]>,
) -> Result<SystemTime, NodeCertError> {
    let (leaf, intermediates) = chain.split_first().ok_or(NodeCertError::NoCertificate)?;
    let found = identity_of(leaf)?;
    let expected = SpiffeId::node(cluster.clone(), node.clone());
    if found != expected {
        return Err(NodeCertError::IdentityMismatch { expected, found });
    }
    if let Some(spki) = key_spki {
        if spki != crate::pki::public_key_of(leaf)?.as_slice() {
            return Err(NodeCertError::KeyMismatch);
        }
    }
    let verifier = PeerVerifier::new(
        cluster.clone(),
        node.clone(),
        [],
        ca,
        Arc::new(Events::new()),
    )?;
    verifier
        .check_own(leaf, intermediates, UnixTime::now())
        .map_err(NodeCertError::Refused)?;
    Ok(crate::pki::not_after_of(leaf)?)
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // This node always dials a peer by its node id, so the server name names the peer.
        let expected = match server_name {
            ServerName::DnsName(name) => NodeId::new(name.as_ref()).ok(),
            _ => None,
        };
        let Some(expected) = expected else {
            return Err(rustls::Error::General(format!(
                "dialed a server name that is not a node id: {server_name:?}"
            )));
        };
        self.check(
            end_entity,
            intermediates,
            now,
            Direction::Outbound,
            Some(&expected),
        )
        .map(|_| ServerCertVerified::assertion())
        .map_err(|r| Self::to_rustls(r.reason))
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

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now, Direction::Inbound, None)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|r| Self::to_rustls(r.reason))
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
    use super::*;
    use std::time::Duration;

    use crate::ids::ClientName;
    use crate::pki::{ClusterCa, SoftwareKey, Validity};

    struct Fixture {
        ca: ClusterCa,
        verifier: PeerVerifier,
        events: Arc<Events>,
    }

    fn fixture() -> Fixture {
        let cluster = ClusterId::new("vault").unwrap();
        let ca = ClusterCa::generate(&cluster, Validity::days_from_now(10)).unwrap();
        let events = Arc::new(Events::new());
        let members = ["node-1", "node-2", "node-3"].map(|n| NodeId::new(n).unwrap());
        let verifier = PeerVerifier::new(
            cluster,
            NodeId::new("node-1").unwrap(),
            members,
            ca.cert_der(),
            events.clone(),
        )
        .unwrap();
        Fixture {
            ca,
            verifier,
            events,
        }
    }

    fn node_cert(ca: &ClusterCa, node: &str, validity: Validity) -> CertificateDer<'static> {
        let key = SoftwareKey::generate().unwrap();
        ca.issue(
            Subject::Node(NodeId::new(node).unwrap()),
            key.rcgen_key(),
            validity,
        )
        .unwrap()
        .der
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn accepts_member_node() {
        let f = fixture();
        let cert = node_cert(&f.ca, "node-2", Validity::days_from_now(1));
        let node = f
            .verifier
            .check(&cert, &[], now(), Direction::Inbound, None)
            .unwrap();
        assert_eq!(node.as_str(), "node-2");
        let node = f
            .verifier
            .check(
                &cert,
                &[],
                now(),
                Direction::Outbound,
                Some(&NodeId::new("node-2").unwrap()),
            )
            .unwrap();
        assert_eq!(node.as_str(), "node-2");
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let f = fixture();
        let mut rx = f.events.subscribe();
        let reason = |cert: &CertificateDer<'_>, dir, expected: Option<&str>| {
            let expected = expected.map(|e| NodeId::new(e).unwrap());
            f.verifier
                .check(cert, &[], now(), dir, expected.as_ref())
                .unwrap_err()
                .reason
        };

        let foreign_ca = ClusterCa::generate(
            &ClusterId::new("vault").unwrap(),
            Validity::days_from_now(1),
        )
        .unwrap();
        let foreign = node_cert(&foreign_ca, "node-2", Validity::days_from_now(1));
        assert_eq!(
            reason(&foreign, Direction::Inbound, None),
            RefusalReason::UnknownIssuer
        );
        // A foreign CA with another name: no issuer match at all.
        let named_ca = ClusterCa::generate(
            &ClusterId::new("elsewhere").unwrap(),
            Validity::days_from_now(1),
        )
        .unwrap();
        let foreign = node_cert(&named_ca, "node-2", Validity::days_from_now(1));
        assert_eq!(
            reason(&foreign, Direction::Outbound, Some("node-2")),
            RefusalReason::UnknownIssuer
        );

        let other_cluster_ca = ClusterCa::generate(
            &ClusterId::new("other").unwrap(),
            Validity::days_from_now(1),
        )
        .unwrap();
        // A verifier of cluster "vault" that (mis)trusts the CA of cluster "other": the chain
        // is fine, the cluster id is not.
        let v2 = PeerVerifier::new(
            ClusterId::new("vault").unwrap(),
            NodeId::new("node-1").unwrap(),
            [NodeId::new("node-2").unwrap()],
            other_cluster_ca.cert_der(),
            f.events.clone(),
        )
        .unwrap();
        let other = node_cert(&other_cluster_ca, "node-2", Validity::days_from_now(1));
        assert!(matches!(
            v2.check(&other, &[], now(), Direction::Inbound, None)
                .unwrap_err()
                .reason,
            RefusalReason::WrongCluster { .. }
        ));

        let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
        let expired = node_cert(
            &f.ca,
            "node-2",
            Validity {
                not_before: past,
                not_after: past + Duration::from_secs(86_400),
            },
        );
        assert!(matches!(
            reason(&expired, Direction::Inbound, None),
            RefusalReason::Expired { .. }
        ));

        let stranger = node_cert(&f.ca, "node-9", Validity::days_from_now(1));
        assert!(matches!(
            reason(&stranger, Direction::Inbound, None),
            RefusalReason::NotAMember { .. }
        ));

        let own = node_cert(&f.ca, "node-1", Validity::days_from_now(1));
        assert_eq!(
            reason(&own, Direction::Inbound, None),
            RefusalReason::OwnIdentity
        );

        let key = SoftwareKey::generate().unwrap();
        let client =
            f.ca.issue(
                Subject::Client(ClientName::new("alice").unwrap()),
                key.rcgen_key(),
                Validity::days_from_now(1),
            )
            .unwrap()
            .der;
        assert_eq!(
            reason(&client, Direction::Inbound, None),
            RefusalReason::NotANode { role: Role::Client }
        );
        assert_eq!(
            reason(&client, Direction::Outbound, Some("node-2")),
            RefusalReason::NotANode { role: Role::Client }
        );

        let n3 = node_cert(&f.ca, "node-3", Validity::days_from_now(1));
        assert!(matches!(
            reason(&n3, Direction::Outbound, Some("node-2")),
            RefusalReason::UnexpectedPeer { .. }
        ));

        assert_eq!(
            reason(
                &CertificateDer::from(vec![1u8, 2, 3]),
                Direction::Inbound,
                None
            )
            .kind(),
            "refused.malformed"
        );

        // Every refusal was published with the presented identity when readable.
        let mut seen = Vec::new();
        while let Ok(TransportEvent::HandshakeRefused(r)) = rx.try_recv() {
            seen.push((r.reason.kind(), r.presented.map(|p| p.uri())));
        }
        assert_eq!(
            seen,
            vec![
                (
                    "refused.unknown_issuer",
                    Some("spiffe://vault/node/node-2".to_owned())
                ),
                (
                    "refused.unknown_issuer",
                    Some("spiffe://elsewhere/node/node-2".to_owned())
                ),
                (
                    "refused.wrong_cluster",
                    Some("spiffe://other/node/node-2".to_owned())
                ),
                (
                    "refused.expired",
                    Some("spiffe://vault/node/node-2".to_owned())
                ),
                (
                    "refused.not_a_member",
                    Some("spiffe://vault/node/node-9".to_owned())
                ),
                (
                    "refused.own_identity",
                    Some("spiffe://vault/node/node-1".to_owned())
                ),
                (
                    "refused.not_a_node",
                    Some("spiffe://vault/client/alice".to_owned())
                ),
                (
                    "refused.not_a_node",
                    Some("spiffe://vault/client/alice".to_owned())
                ),
                (
                    "refused.unexpected_peer",
                    Some("spiffe://vault/node/node-3".to_owned())
                ),
                ("refused.malformed", None),
            ]
        );
        assert_eq!(f.events.count("refused.not_a_node"), 2);
    }
}
