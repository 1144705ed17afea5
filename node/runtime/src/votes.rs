//! Signed policy votes (design brief §7).
//!
//! A node that has evaluated a signing request against its policy casts a [`Vote`]: the cluster,
//! the request and its digest, the hash of the policy it evaluated, its decision with reasons,
//! fresh entropy, its node id and the time. It signs the vote with its token-held identity key
//! ([`SignedVote::sign`], ECDSA P-256 over SHA-256), sends it to every peer, and each peer checks
//! it with [`SignedVote::verify`] against the sender's node certificate before storing it.
//!
//! # Canonical encoding (version 1)
//!
//! The signature covers [`Vote::canonical_bytes`], never JSON (JSON has no canonical form):
//!
//! ```text
//! "strongroom/vote/v1" 0x00          domain-separation prefix (19 bytes, not length-prefixed)
//! then every field as  u32 BE length || bytes, in this order:
//!   1 cluster_id       UTF-8
//!   2 request_id       UTF-8
//!   3 request_digest   32 bytes
//!   4 policy_hash      32 bytes
//!   5 decision         1 byte: 0x00 allow | 0x01 deny | 0x02 needs_approvals
//!   6 reasons          u32 BE count, then each reason as u32 BE length || UTF-8
//!   7 entropy          32 bytes
//!   8 node_id          UTF-8
//!   9 time_unix_ms     u64 BE (8 bytes)
//! ```
//!
//! Every field, and every reason inside field 6, carries its own length, so no two distinct
//! votes encode to the same bytes (`["ab", "c"]` and `["a", "bc"]` differ), and the prefix keeps
//! a vote signature from being valid for any other message the identity key signs.
//!
//! # Signatures
//!
//! A signature is the fixed 64-byte `r || s` form (32 bytes each, big-endian) that
//! [`strongroom_keystore::IdentityKey::sign`] produces ([`strongroom_keystore::EcdsaSignature::to_bytes`]).

use std::fmt;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use strongroom_transport::Subject;
use strongroom_transport::pki::{IdentityError, identity_of, public_key_of};

/// Domain-separation prefix of the canonical vote encoding.
pub const VOTE_DOMAIN: &[u8] = b"strongroom/vote/v1\0";

/// Length of a vote signature: `r || s`, 32 bytes each.
pub const SIGNATURE_LEN: usize = 64;

/// What a node decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteDecision {
    /// Sign.
    Allow,
    /// Do not sign.
    Deny,
    /// Sign once enough approvers have approved.
    NeedsApprovals,
}

impl VoteDecision {
    /// The byte that stands for the decision in the canonical encoding.
    pub fn code(self) -> u8 {
        match self {
            VoteDecision::Allow => 0,
            VoteDecision::Deny => 1,
            VoteDecision::NeedsApprovals => 2,
        }
    }

    /// The decision a stored name names.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Allow, Self::Deny, Self::NeedsApprovals]
            .into_iter()
            .find(|d| d.as_str() == name)
    }

    /// The decision's name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            VoteDecision::Allow => "allow",
            VoteDecision::Deny => "deny",
            VoteDecision::NeedsApprovals => "needs_approvals",
        }
    }
}

impl fmt::Display for VoteDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node's vote on one signing request. Byte arrays serialize as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The cluster the vote belongs to.
    pub cluster_id: String,
    /// The signing request voted on.
    pub request_id: String,
    /// The request digest (`strongroom_bitcoin::RequestDigest`): covers the PSBT, the key id and
    /// every derivation path.
    #[serde(with = "hex32")]
    pub request_digest: [u8; 32],
    /// The hash of the policy the node evaluated (`strongroom_policies::Policy::hash`).
    #[serde(with = "hex32")]
    pub policy_hash: [u8; 32],
    /// The decision.
    pub decision: VoteDecision,
    /// Why, in the policy engine's words; order matters.
    pub reasons: Vec<String>,
    /// Fresh random bytes from the voting node.
    #[serde(with = "hex32")]
    pub entropy: [u8; 32],
    /// The voting node.
    pub node_id: String,
    /// When the node voted, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
}

impl Vote {
    /// The canonical encoding the signature covers (see the [module docs](self)).
    ///
    /// Fails only if a field or a reason is longer than `u32::MAX` bytes.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, VoteError> {
        let mut enc = Encoder {
            out: VOTE_DOMAIN.to_vec(),
            node: &self.node_id,
        };
        enc.field("cluster_id", self.cluster_id.as_bytes())?;
        enc.field("request_id", self.request_id.as_bytes())?;
        enc.field("request_digest", &self.request_digest)?;
        enc.field("policy_hash", &self.policy_hash)?;
        enc.field("decision", &[self.decision.code()])?;
        let mut reasons = Encoder {
            out: Vec::new(),
            node: &self.node_id,
        };
        reasons.out.extend_from_slice(
            &reasons
                .len_u32("reasons", self.reasons.len())?
                .to_be_bytes(),
        );
        for reason in &self.reasons {
            reasons.field("reasons", reason.as_bytes())?;
        }
        enc.field("reasons", &reasons.out)?;
        enc.field("entropy", &self.entropy)?;
        enc.field("node_id", self.node_id.as_bytes())?;
        enc.field("time_unix_ms", &self.time_unix_ms.to_be_bytes())?;
        Ok(enc.out)
    }
}

/// Appends length-prefixed fields.
struct Encoder<'a> {
    out: Vec<u8>,
    node: &'a str,
}

impl Encoder<'_> {
    fn len_u32(&self, field: &'static str, len: usize) -> Result<u32, VoteError> {
        u32::try_from(len).map_err(|_| VoteError::TooLong {
            node: self.node.to_owned(),
            field,
            len,
        })
    }

    fn field(&mut self, name: &'static str, bytes: &[u8]) -> Result<(), VoteError> {
        let len = self.len_u32(name, bytes.len())?;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Something that signs with ECDSA P-256 over SHA-256 and returns the 64-byte `r || s` form.
///
/// In production this is the node's token-held [`strongroom_keystore::IdentityKey`].
pub trait VoteSigner {
    /// Signs `msg` (the signer hashes it with SHA-256); returns `r || s`, or why it failed.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String>;
}

impl VoteSigner for strongroom_keystore::IdentityKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        strongroom_keystore::IdentityKey::sign(self, msg)
            .map(|sig| sig.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// What a receiving node expects of a vote: the request it is collecting votes for, and the
/// certificate of the peer the vote came from.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// This node's cluster.
    pub cluster_id: &'a str,
    /// The request votes are being collected for.
    pub request_id: &'a str,
    /// That request's digest, as this node computed it.
    pub request_digest: [u8; 32],
    /// The voter's node certificate (DER), as presented in the transport's mTLS handshake.
    pub certificate: &'a CertificateDer<'a>,
}

/// A vote with its signature. The vote inside is unauthenticated until [`SignedVote::verify`]
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    vote: Vote,
    #[serde(with = "hex_bytes")]
    signature: Vec<u8>,
}

impl SignedVote {
    /// Signs `vote`'s canonical encoding with `signer` (the node's identity key).
    pub fn sign<S: VoteSigner + ?Sized>(vote: Vote, signer: &S) -> Result<SignedVote, VoteError> {
        let message = vote.canonical_bytes()?;
        let signature = signer.sign(&message).map_err(|reason| VoteError::Signer {
            node: vote.node_id.clone(),
            reason,
        })?;
        if signature.len() != SIGNATURE_LEN {
            return Err(VoteError::Signer {
                node: vote.node_id.clone(),
                reason: format!(
                    "the signer returned {} bytes, expected the {SIGNATURE_LEN}-byte r || s form",
                    signature.len()
                ),
            });
        }
        Ok(SignedVote { vote, signature })
    }

    /// Reassembles a signed vote from its parts (e.g. read back from the database); nothing is
    /// checked until [`SignedVote::verify`].
    pub fn from_parts(vote: Vote, signature: Vec<u8>) -> SignedVote {
        SignedVote { vote, signature }
    }

    /// The vote, NOT verified: for logging and storage only.
    pub fn unverified_vote(&self) -> &Vote {
        &self.vote
    }

    /// The signature, `r || s`.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Splits into the (unverified) vote and the signature.
    pub fn into_parts(self) -> (Vote, Vec<u8>) {
        (self.vote, self.signature)
    }

    /// Verifies the vote and returns it.
    ///
    /// Checks, in order: the certificate names `spiffe://<expected cluster>/node/<vote.node_id>`;
    /// its P-256 public key verifies the signature over [`Vote::canonical_bytes`]; the vote's
    /// cluster id, request id and request digest equal the expected ones.
    ///
    /// The certificate's chain to the cluster CA, its validity period and key usages are NOT
    /// checked here: the transport's mTLS handshake (`strongroom_transport::verify`) did that
    /// for the peer the vote came from, and `expected.certificate` must be the certificate
    /// that handshake accepted (or one stored after it).
    pub fn verify(&self, expected: &Expected<'_>) -> Result<&Vote, VoteError> {
        let vote = &self.vote;
        let node = || vote.node_id.clone();

        let identity =
            identity_of(expected.certificate).map_err(|source| VoteError::Certificate {
                node: node(),
                source,
            })?;
        if identity.cluster.as_str() != expected.cluster_id {
            return Err(VoteError::CertificateCluster {
                node: node(),
                expected: expected.cluster_id.to_owned(),
                found: identity.cluster.to_string(),
            });
        }
        let cert_node = match &identity.subject {
            Subject::Node(n) => n.as_str(),
            Subject::Client(_) => {
                return Err(VoteError::NotANodeCertificate {
                    node: node(),
                    identity: identity.uri(),
                });
            }
        };
        if cert_node != vote.node_id {
            return Err(VoteError::NodeMismatch {
                claimed: node(),
                certificate: cert_node.to_owned(),
            });
        }

        let spki =
            public_key_of(expected.certificate).map_err(|source| VoteError::Certificate {
                node: node(),
                source,
            })?;
        let key =
            VerifyingKey::from_public_key_der(&spki).map_err(|e| VoteError::UnsupportedKey {
                node: node(),
                reason: e.to_string(),
            })?;
        if self.signature.len() != SIGNATURE_LEN {
            return Err(VoteError::MalformedSignature {
                node: node(),
                reason: format!(
                    "{} bytes, expected {SIGNATURE_LEN} (r || s)",
                    self.signature.len()
                ),
            });
        }
        let signature =
            Signature::from_slice(&self.signature).map_err(|e| VoteError::MalformedSignature {
                node: node(),
                reason: e.to_string(),
            })?;
        let message = vote.canonical_bytes()?;
        key.verify(&message, &signature)
            .map_err(|_| VoteError::BadSignature { node: node() })?;

        if vote.cluster_id != expected.cluster_id {
            return Err(VoteError::ClusterMismatch {
                node: node(),
                expected: expected.cluster_id.to_owned(),
                found: vote.cluster_id.clone(),
            });
        }
        if vote.request_id != expected.request_id {
            return Err(VoteError::RequestMismatch {
                node: node(),
                expected: expected.request_id.to_owned(),
                found: vote.request_id.clone(),
            });
        }
        if vote.request_digest != expected.request_digest {
            return Err(VoteError::DigestMismatch {
                node: node(),
                request: vote.request_id.clone(),
                expected: expected.request_digest,
                found: vote.request_digest,
            });
        }
        Ok(vote)
    }
}

/// Signing or verifying a vote failed. `node` is the node id the vote claims (authenticated
/// only for the variants after [`VoteError::BadSignature`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// A field is too long for its `u32` length prefix (caller bug).
    #[error("vote from node '{node}': field {field} is {len} bytes, longer than a u32 length")]
    TooLong {
        /// The voting node.
        node: String,
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The signer (the node's token) failed or returned something other than `r || s`.
    #[error("node '{node}' could not sign its vote: {reason}")]
    Signer {
        /// The voting node.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// The voter's certificate is unreadable or names no strongroom identity.
    #[error("vote from node '{node}': the voter's certificate is unusable: {source}")]
    Certificate {
        /// The node the vote claims.
        node: String,
        /// Why the certificate is unusable.
        source: IdentityError,
    },
    /// The voter's certificate belongs to another cluster.
    #[error(
        "vote from node '{node}': the voter's certificate is for cluster '{found}', expected cluster '{expected}'"
    )]
    CertificateCluster {
        /// The node the vote claims.
        node: String,
        /// This node's cluster.
        expected: String,
        /// The cluster the certificate names.
        found: String,
    },
    /// The voter's certificate is not a node certificate (e.g. an API client's).
    #[error("vote from node '{node}': the voter's certificate names {identity}, not a node")]
    NotANodeCertificate {
        /// The node the vote claims.
        node: String,
        /// The identity URI the certificate names.
        identity: String,
    },
    /// The vote claims one node, the certificate names another.
    #[error(
        "vote claims to be from node '{claimed}' but the certificate it came with is node '{certificate}'"
    )]
    NodeMismatch {
        /// The node the vote claims.
        claimed: String,
        /// The node the certificate names.
        certificate: String,
    },
    /// The certificate's key is not an ECDSA P-256 key.
    #[error("vote from node '{node}': the certificate's key is not ECDSA P-256: {reason}")]
    UnsupportedKey {
        /// The node the vote claims.
        node: String,
        /// Why the key was refused.
        reason: String,
    },
    /// The signature is not a 64-byte `r || s` P-256 signature.
    #[error("vote from node '{node}': malformed signature: {reason}")]
    MalformedSignature {
        /// The node the vote claims.
        node: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not verify under node `node`'s certificate key: the vote was altered
    /// or signed by another key.
    #[error(
        "vote from node '{node}': the signature does not verify with node '{node}''s certificate key (vote altered or signed by another key)"
    )]
    BadSignature {
        /// The node the vote claims (and the certificate names).
        node: String,
    },
    /// The vote is for another cluster.
    #[error("vote from node '{node}' is for cluster '{found}', expected cluster '{expected}'")]
    ClusterMismatch {
        /// The voting node.
        node: String,
        /// This node's cluster.
        expected: String,
        /// The cluster the vote names.
        found: String,
    },
    /// The vote is for another request.
    #[error("vote from node '{node}' is for request '{found}', expected request '{expected}'")]
    RequestMismatch {
        /// The voting node.
        node: String,
        /// The request votes are collected for.
        expected: String,
        /// The request the vote names.
        found: String,
    },
    /// The vote is for the same request id but different request contents.
    #[error(
        "vote from node '{node}' on request '{request}' has request digest {}, expected {}",
        hex::encode(.found),
        hex::encode(.expected)
    )]
    DigestMismatch {
        /// The voting node.
        node: String,
        /// The request.
        request: String,
        /// The digest this node computed.
        expected: [u8; 32],
        /// The digest the vote names.
        found: [u8; 32],
    },
}

/// Serde for `[u8; 32]` as lowercase hex.
mod hex32 {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|e| D::Error::custom(format!("expected 64 hex digits: {e}")))?;
        Ok(out)
    }
}

/// Serde for byte strings as lowercase hex.
mod hex_bytes {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text).map_err(|e| D::Error::custom(format!("expected hex: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::DecodePrivateKey as _;
    use rustls::SignatureScheme;
    use strongroom_transport::pki::{ClusterCa, SoftwareKey, Validity};
    use strongroom_transport::{ClientName, ClusterId, NodeId, Subject};

    use super::*;

    const CLUSTER: &str = "vault";
    const REQUEST: &str = "req-42";
    const DIGEST: [u8; 32] = [0xd1; 32];

    /// Signs through rustls/ring (the software key's own signer), converting DER to `r || s`.
    impl VoteSigner for SoftwareKey {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
            let key = self.rustls_signing_key().map_err(|e| e.to_string())?;
            let signer = key
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .ok_or("no P-256 scheme")?;
            let der = signer.sign(msg).map_err(|e| e.to_string())?;
            let sig = Signature::from_der(&der).map_err(|e| e.to_string())?;
            Ok(sig.to_bytes().to_vec())
        }
    }

    /// Signs with the RustCrypto implementation (independent of ring).
    impl VoteSigner for SigningKey {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
            use p256::ecdsa::signature::Signer as _;
            let sig: Signature = self.try_sign(msg).map_err(|e| e.to_string())?;
            Ok(sig.to_bytes().to_vec())
        }
    }

    struct Node {
        key: SoftwareKey,
        cert: CertificateDer<'static>,
    }

    fn ca(cluster: &str) -> ClusterCa {
        ClusterCa::generate(
            &ClusterId::new(cluster).unwrap(),
            Validity::days_from_now(30),
        )
        .unwrap()
    }

    fn node(ca: &ClusterCa, id: &str) -> Node {
        let key = SoftwareKey::generate().unwrap();
        let cert = ca
            .issue(
                Subject::Node(NodeId::new(id).unwrap()),
                key.rcgen_key(),
                Validity::days_from_now(1),
            )
            .unwrap()
            .der;
        Node { key, cert }
    }

    fn vote(node_id: &str) -> Vote {
        Vote {
            cluster_id: CLUSTER.to_owned(),
            request_id: REQUEST.to_owned(),
            request_digest: DIGEST,
            policy_hash: [0x70; 32],
            decision: VoteDecision::Allow,
            reasons: vec!["rule 'small-spends' allowed".to_owned(), "ab".to_owned()],
            entropy: [0xe0; 32],
            node_id: node_id.to_owned(),
            time_unix_ms: 1_700_000_000_123,
        }
    }

    fn expected<'a>(cert: &'a CertificateDer<'a>) -> Expected<'a> {
        Expected {
            cluster_id: CLUSTER,
            request_id: REQUEST,
            request_digest: DIGEST,
            certificate: cert,
        }
    }

    #[test]
    fn round_trip_verifies_with_both_signers() {
        let ca = ca(CLUSTER);
        let n1 = node(&ca, "node-1");
        let signed = SignedVote::sign(vote("node-1"), &n1.key).unwrap();
        assert_eq!(signed.signature().len(), SIGNATURE_LEN);
        assert_eq!(signed.verify(&expected(&n1.cert)).unwrap(), &vote("node-1"));

        let p256_key = SigningKey::from_pkcs8_der(&n1.key.rcgen_key().serialize_der()).unwrap();
        let signed = SignedVote::sign(vote("node-1"), &p256_key).unwrap();
        assert_eq!(signed.verify(&expected(&n1.cert)).unwrap(), &vote("node-1"));

        // Survives serialization (hex byte arrays) and still verifies.
        let json = serde_json::to_string(&signed).unwrap();
        assert!(json.contains(&hex::encode(DIGEST)));
        assert!(json.contains("\"decision\":\"allow\""));
        let back: SignedVote = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
        back.verify(&expected(&n1.cert)).unwrap();
    }

    #[test]
    fn canonical_encoding_layout() {
        let v = vote("node-1");
        let bytes = v.canonical_bytes().unwrap();
        assert!(bytes.starts_with(VOTE_DOMAIN));
        let rest = &bytes[VOTE_DOMAIN.len()..];
        assert_eq!(&rest[..4], &5u32.to_be_bytes());
        assert_eq!(&rest[4..9], b"vault");
        assert!(
            bytes.ends_with(&[&8u32.to_be_bytes()[..], &v.time_unix_ms.to_be_bytes()].concat())
        );
        // Deterministic.
        assert_eq!(bytes, v.canonical_bytes().unwrap());
    }

    #[test]
    fn every_field_is_signed() {
        let ca = ca(CLUSTER);
        let n1 = node(&ca, "node-1");
        let signed = SignedVote::sign(vote("node-1"), &n1.key).unwrap();
        let (original, signature) = signed.into_parts();

        type Tamper = fn(&mut Vote);
        let tamperings: [(&str, Tamper); 11] = [
            ("decision", |v| v.decision = VoteDecision::Deny),
            ("reasons", |v| v.reasons[1] = "abc".to_owned()),
            ("reasons moved", |v| v.reasons.swap(0, 1)),
            ("reasons dropped", |v| v.reasons.truncate(1)),
            ("entropy", |v| v.entropy[31] ^= 1),
            ("digest", |v| v.request_digest[0] ^= 1),
            ("policy hash", |v| v.policy_hash[7] ^= 1),
            ("request id", |v| v.request_id = "req-43".to_owned()),
            ("cluster id", |v| v.cluster_id = "vaulx".to_owned()),
            ("node id", |v| v.node_id = "node-2".to_owned()),
            ("time", |v| v.time_unix_ms += 1),
        ];
        for (what, tamper) in tamperings {
            let mut v = original.clone();
            tamper(&mut v);
            let forged = SignedVote::from_parts(v.clone(), signature.clone());
            let err = forged.verify(&expected(&n1.cert)).unwrap_err();
            if what == "node id" {
                // Caught by the certificate check before the signature.
                assert!(
                    matches!(err, VoteError::NodeMismatch { .. }),
                    "{what}: {err}"
                );
                // And node-2's certificate does not verify node-1's signature.
                let n2 = node(&ca, "node-2");
                let err = forged.verify(&expected(&n2.cert)).unwrap_err();
                assert_eq!(
                    err,
                    VoteError::BadSignature {
                        node: "node-2".into()
                    }
                );
                continue;
            }
            assert!(
                matches!(err, VoteError::BadSignature { .. }),
                "{what}: {err}"
            );

            // Even when the receiver expects exactly what the tampered vote says, the
            // signature check refuses it: the signature covers the field.
            let exp = Expected {
                cluster_id: CLUSTER,
                request_id: &v.request_id,
                request_digest: v.request_digest,
                certificate: &n1.cert,
            };
            let err = forged.verify(&exp).unwrap_err();
            assert!(
                matches!(err, VoteError::BadSignature { .. }),
                "{what}: {err}"
            );
        }
        // A flipped signature bit fails too.
        let mut bad = signature.clone();
        bad[40] ^= 1;
        let err = SignedVote::from_parts(original.clone(), bad)
            .verify(&expected(&n1.cert))
            .unwrap_err();
        assert!(matches!(err, VoteError::BadSignature { .. }), "{err}");
        let err = SignedVote::from_parts(original, signature[..63].to_vec())
            .verify(&expected(&n1.cert))
            .unwrap_err();
        assert!(matches!(err, VoteError::MalformedSignature { .. }), "{err}");
    }

    #[test]
    fn authentic_vote_for_another_request_names_what_differs() {
        let ca = ca(CLUSTER);
        let n1 = node(&ca, "node-1");
        let signed = SignedVote::sign(vote("node-1"), &n1.key).unwrap();

        let exp = Expected {
            request_id: "req-7",
            ..expected(&n1.cert)
        };
        let err = signed.verify(&exp).unwrap_err();
        assert!(matches!(err, VoteError::RequestMismatch { .. }));
        let msg = err.to_string();
        assert!(msg.contains("node-1") && msg.contains("req-42") && msg.contains("req-7"));

        let exp = Expected {
            request_digest: [0xd2; 32],
            ..expected(&n1.cert)
        };
        let err = signed.verify(&exp).unwrap_err();
        assert!(matches!(err, VoteError::DigestMismatch { .. }));
        let msg = err.to_string();
        assert!(msg.contains("node-1") && msg.contains(&hex::encode([0xd2; 32])));
        assert!(msg.contains(&hex::encode(DIGEST)));
    }

    #[test]
    fn vote_signed_by_another_node_fails_naming_both() {
        let ca = ca(CLUSTER);
        let n1 = node(&ca, "node-1");
        let n2 = node(&ca, "node-2");

        // node-2 signs a vote claiming to be node-1 and sends it over its own connection.
        let forged = SignedVote::sign(vote("node-1"), &n2.key).unwrap();
        let err = forged.verify(&expected(&n2.cert)).unwrap_err();
        assert_eq!(
            err,
            VoteError::NodeMismatch {
                claimed: "node-1".into(),
                certificate: "node-2".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("node-1") && msg.contains("node-2"), "{msg}");

        // Checked against node-1's certificate, node-2's signature does not verify.
        let err = forged.verify(&expected(&n1.cert)).unwrap_err();
        assert_eq!(
            err,
            VoteError::BadSignature {
                node: "node-1".into()
            }
        );
    }

    #[test]
    fn certificate_of_another_cluster_fails() {
        let other = ca("other");
        let foreign = node(&other, "node-1");
        let signed = SignedVote::sign(vote("node-1"), &foreign.key).unwrap();
        let err = signed.verify(&expected(&foreign.cert)).unwrap_err();
        assert_eq!(
            err,
            VoteError::CertificateCluster {
                node: "node-1".into(),
                expected: CLUSTER.into(),
                found: "other".into()
            }
        );
        assert!(err.to_string().contains("other"));
    }

    #[test]
    fn client_certificate_fails() {
        let ca = ca(CLUSTER);
        let key = SoftwareKey::generate().unwrap();
        let cert = ca
            .issue(
                Subject::Client(ClientName::new("node-1").unwrap()),
                key.rcgen_key(),
                Validity::days_from_now(1),
            )
            .unwrap()
            .der;
        let signed = SignedVote::sign(vote("node-1"), &key).unwrap();
        let err = signed.verify(&expected(&cert)).unwrap_err();
        assert!(
            matches!(err, VoteError::NotANodeCertificate { .. }),
            "{err}"
        );

        let garbage = CertificateDer::from(vec![0x30, 0x00]);
        let err = signed.verify(&expected(&garbage)).unwrap_err();
        assert!(matches!(err, VoteError::Certificate { .. }), "{err}");
    }

    #[test]
    fn reasons_encoding_is_unambiguous() {
        let mut a = vote("node-1");
        a.reasons = vec!["ab".into(), "c".into()];
        let mut b = a.clone();
        b.reasons = vec!["a".into(), "bc".into()];
        assert_ne!(a.canonical_bytes().unwrap(), b.canonical_bytes().unwrap());

        let mut c = a.clone();
        c.reasons = vec!["abc".into()];
        let mut d = a.clone();
        d.reasons = vec!["abc".into(), String::new()];
        let all = [&a, &b, &c, &d].map(|v| v.canonical_bytes().unwrap());
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "{i} vs {j}");
            }
        }

        // And a signature over one does not verify the other.
        let ca = ca(CLUSTER);
        let n1 = node(&ca, "node-1");
        let (_, sig) = SignedVote::sign(a, &n1.key).unwrap().into_parts();
        let err = SignedVote::from_parts(b, sig)
            .verify(&expected(&n1.cert))
            .unwrap_err();
        assert!(matches!(err, VoteError::BadSignature { .. }));
    }

    #[test]
    fn signer_output_must_be_r_s() {
        struct Der;
        impl VoteSigner for Der {
            fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
                Ok(vec![0x30; 70])
            }
        }
        let err = SignedVote::sign(vote("node-1"), &Der).unwrap_err();
        assert!(matches!(err, VoteError::Signer { .. }), "{err}");
    }
}
