//! Control messages between nodes, carried as transport requests (JSON).
//!
//! The leader invites peers to protocol sessions (aux info, presigning), the node that accepts a
//! key-generation request invites every member, and a signing coordinator asks signers to
//! reserve a presignature and to issue their partial signatures. The sender of every message is
//! the peer authenticated by the transport; a message never carries a secret: partial
//! signatures are useless without the other signers' and are checked against public
//! commitments.

use serde::{Deserialize, Serialize};

use crate::votes::SignedVote;

/// What a signer signs: a raw digest (dev mode only) or one input of a stored signing request,
/// whose sighash every signer computes itself from its own copy of the PSBT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignTarget {
    /// A 32-byte digest handed in by a dev client (refused outside dev mode).
    Digest {
        /// Derivation path, e.g. `0/17`.
        path: String,
        /// The digest, hex.
        digest: String,
    },
    /// Input `input_index` of the signing request the message names.
    Input {
        /// The input.
        input_index: u32,
    },
}

impl SignTarget {
    /// The id under which a presignature is reserved and consumed for this target: the
    /// request id for a digest, `<request id>/<input>` for an input of a signing request.
    pub fn reservation_id(&self, request_id: &str) -> String {
        match self {
            SignTarget::Digest { .. } => request_id.to_owned(),
            SignTarget::Input { input_index } => format!("{request_id}/{input_index}"),
        }
    }
}

/// A request from a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// What this node has: primes, aux info, keys, pools.
    Status,
    /// Join aux info generation `session_id` among every member.
    AuxInfo {
        /// Session id, hex.
        session_id: String,
    },
    /// Join key generation among every member.
    Keygen {
        /// Session id, hex.
        session_id: String,
        /// Key id, hex.
        key_id: String,
        /// Operator-chosen name.
        name: String,
        /// Signers needed.
        threshold: u16,
        /// The aux info every member uses.
        aux_id: String,
    },
    /// Join presigning for a key among an ordered signer set.
    Presign {
        /// Session id, hex (becomes the presignature id).
        session_id: String,
        /// Key id.
        key_id: String,
        /// Party indices of the signers, ascending.
        signers: Vec<u16>,
    },
    /// Reserve a presignature of a pool for a signing request: the one named, or (for the
    /// first signer) the oldest available one.
    Reserve {
        /// The signing request.
        request_id: String,
        /// Key id.
        key_id: String,
        /// Party indices of the signers.
        signers: Vec<u16>,
        /// The presignature chosen by the first signer, if any.
        presig_id: Option<String>,
        /// What will be signed (the signer checks its own vote before it reserves anything
        /// for a signing request).
        target: SignTarget,
    },
    /// Issue this signer's partial signature.
    Partial {
        /// The signing request.
        request_id: String,
        /// Key id.
        key_id: String,
        /// The reserved presignature.
        presig_id: String,
        /// What to sign.
        target: SignTarget,
        /// Every signer's entropy as (party index, hex). A list, not a map: JSON object keys
        /// are strings and do not read back as integers inside a tagged enum.
        entropy: Vec<(u16, String)>,
    },
    /// A signing attempt with this presignature failed before every signer issued its partial:
    /// discard it (a reservation is never handed back to the pool).
    Discard {
        /// The reservation id ([`SignTarget::reservation_id`]).
        request_id: String,
        /// The presignature.
        presig_id: String,
    },
    /// Join interactive signing (no presignature).
    InteractiveSign {
        /// Session id, hex.
        session_id: String,
        /// The signing request.
        request_id: String,
        /// Key id.
        key_id: String,
        /// Party indices of the signers.
        signers: Vec<u16>,
        /// What to sign.
        target: SignTarget,
    },
    /// A signing request was submitted: check the PSBT, store the request, evaluate it against
    /// this node's policy and answer with this node's signed vote.
    Propose {
        /// The request id (derived from the request digest).
        request_id: String,
        /// Key id.
        key_id: String,
        /// The PSBT, base64, exactly as the client handed it in.
        psbt: String,
        /// The client's memo.
        memo: Option<String>,
        /// The submitting client's name (its roles come from this node's configuration).
        submitter: String,
    },
    /// Put a request submitted to the sender to the vote: the receiver (the cluster's
    /// sequencer, normally the leader) proposes each key's requests one after the other, so
    /// every node evaluates them in the same order. Every node still checks the PSBT itself.
    Sequence {
        /// The request id (derived from the request digest).
        request_id: String,
        /// Key id.
        key_id: String,
        /// The PSBT, base64, exactly as the client handed it in.
        psbt: String,
        /// The client's memo.
        memo: Option<String>,
        /// The submitting client's name.
        submitter: String,
    },
    /// Every vote collected for a request: verify each against its voter's certificate, store
    /// it, and settle this node's view of the request.
    Votes {
        /// The request.
        request_id: String,
        /// The signed votes.
        votes: Vec<SignedVote>,
    },
    /// An approver approved a request: verify the approval against this node's policy, store
    /// it, and answer with this node's (possibly new) vote.
    Approve {
        /// The request.
        request_id: String,
        /// Approver name.
        approver: String,
        /// Ed25519 signature over the request digest, hex.
        signature: String,
    },
    /// Coordinate the signing of an approved request (sent to a node that voted to allow).
    SignApproved {
        /// The request.
        request_id: String,
    },
    /// A request was signed: these signatures (by input) complete it.
    Finished {
        /// The request.
        request_id: String,
        /// (input index, compact `r || s` hex).
        signatures: Vec<(u32, String)>,
    },
    /// The request's submitter or an admin cancelled it on the sending node: this node never
    /// signs it afterwards.
    Cancel {
        /// The request.
        request_id: String,
        /// The client that cancelled it.
        by: String,
    },
    /// A request failed for good.
    Failed {
        /// The request.
        request_id: String,
        /// Why.
        error: String,
    },
    /// Send this node's attestation evidence, bound to the connection this request arrived on
    /// (answered even before the asking peer is admitted; see [`crate::admission`]).
    Attestation,
}

impl Request {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::AuxInfo { .. } => "aux_info",
            Request::Keygen { .. } => "keygen",
            Request::Presign { .. } => "presign",
            Request::Reserve { .. } => "reserve",
            Request::Partial { .. } => "partial",
            Request::Discard { .. } => "discard",
            Request::InteractiveSign { .. } => "interactive_sign",
            Request::Propose { .. } => "propose",
            Request::Sequence { .. } => "sequence",
            Request::Votes { .. } => "votes",
            Request::Approve { .. } => "approve",
            Request::SignApproved { .. } => "sign_approved",
            Request::Finished { .. } => "finished",
            Request::Cancel { .. } => "cancel",
            Request::Failed { .. } => "failed",
            Request::Attestation => "attestation",
        }
    }
}

/// A node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Status`].
    Status(NodeStatus),
    /// The session completed.
    Done,
    /// Key generation completed: the public key and chain code, hex.
    KeyReady {
        /// Compressed public key, hex.
        public_key: String,
        /// Chain code, hex.
        chain_code: String,
    },
    /// A presignature is reserved.
    Reserved {
        /// The presignature.
        presig_id: String,
        /// This signer's entropy, hex.
        entropy: String,
        /// SHA-256 of the presignature's public data, hex (all signers must agree).
        public_digest: String,
        /// The public data (first signer only), hex.
        public_data: Option<String>,
    },
    /// This signer's partial signature, hex.
    Partial {
        /// The partial.
        partial: String,
    },
    /// This node's signed vote on a request.
    Vote(SignedVote),
    /// An interactive signature, hex r and s.
    Signature {
        /// r.
        r: String,
        /// s.
        s: String,
    },
    /// Answer to [`Request::Attestation`]: the encoded, signed evidence
    /// (`strongroom_attest::Evidence::to_bytes`), hex.
    Evidence {
        /// The evidence, hex.
        evidence: String,
    },
    /// The request failed.
    Error(RemoteError),
}

/// Why a peer refused or failed a request.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct RemoteError {
    /// Stable short kind, e.g. `not-ready`, `unknown-key`, `presignature-unavailable`.
    pub kind: String,
    /// What happened.
    pub detail: String,
    /// Node ids a protocol blamed, if any.
    #[serde(default)]
    pub culprits: Vec<String>,
}

impl RemoteError {
    /// An error of `kind`.
    pub fn new(kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            detail: detail.into(),
            culprits: Vec::new(),
        }
    }
}

/// What a node reports about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Primes are ready for aux info (or aux info exists).
    pub primes_ready: bool,
    /// The node's current aux info id.
    pub aux_id: Option<String>,
    /// Keys and their states.
    pub keys: Vec<KeyStatus>,
    /// Presignature pools this node holds a piece of.
    pub pools: Vec<PoolStatus>,
}

/// A key as one node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyStatus {
    /// Key id.
    pub key_id: String,
    /// `generating`, `ready` or `failed`.
    pub state: String,
}

/// One pool on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Key id.
    pub key_id: String,
    /// Canonical signer set (node ids joined by commas).
    pub signer_set: String,
    /// Available.
    pub available: i64,
    /// Reserved.
    pub reserved: i64,
    /// Consumed.
    pub consumed: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
        let bytes = serde_json::to_vec(value).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn every_request_and_reply_survives_json() {
        let requests = vec![
            Request::Status,
            Request::AuxInfo {
                session_id: "00".into(),
            },
            Request::Keygen {
                session_id: "00".into(),
                key_id: "11".into(),
                name: "treasury".into(),
                threshold: 2,
                aux_id: "22".into(),
            },
            Request::Presign {
                session_id: "00".into(),
                key_id: "11".into(),
                signers: vec![0, 2],
            },
            Request::Reserve {
                request_id: "r".into(),
                key_id: "11".into(),
                signers: vec![1, 2],
                presig_id: Some("33".into()),
                target: SignTarget::Input { input_index: 1 },
            },
            Request::Partial {
                request_id: "r".into(),
                key_id: "11".into(),
                presig_id: "33".into(),
                target: SignTarget::Digest {
                    path: "0/1".into(),
                    digest: "44".into(),
                },
                entropy: vec![(0, "aa".into()), (2, "bb".into())],
            },
            Request::Discard {
                request_id: "r".into(),
                presig_id: "33".into(),
            },
            Request::InteractiveSign {
                session_id: "00".into(),
                request_id: "r".into(),
                key_id: "11".into(),
                signers: vec![0, 1],
                target: SignTarget::Input { input_index: 0 },
            },
            Request::Propose {
                request_id: "r".into(),
                key_id: "k".into(),
                psbt: "cHNidP8=".into(),
                memo: Some("rent".into()),
                submitter: "wallet".into(),
            },
            Request::Sequence {
                request_id: "r".into(),
                key_id: "k".into(),
                psbt: "cHNidP8=".into(),
                memo: None,
                submitter: "wallet".into(),
            },
            Request::Votes {
                request_id: "r".into(),
                votes: vec![],
            },
            Request::Approve {
                request_id: "r".into(),
                approver: "alice".into(),
                signature: "00".into(),
            },
            Request::SignApproved {
                request_id: "r".into(),
            },
            Request::Finished {
                request_id: "r".into(),
                signatures: vec![(0, "ab".into())],
            },
            Request::Cancel {
                request_id: "r".into(),
                by: "wallet".into(),
            },
            Request::Failed {
                request_id: "r".into(),
                error: "x".into(),
            },
            Request::Attestation,
        ];
        for r in &requests {
            let back = round_trip(r);
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
        let replies = vec![
            Reply::Status(NodeStatus {
                primes_ready: true,
                aux_id: Some("a".into()),
                keys: vec![KeyStatus {
                    key_id: "k".into(),
                    state: "ready".into(),
                }],
                pools: vec![PoolStatus {
                    key_id: "k".into(),
                    signer_set: "node-1,node-2".into(),
                    available: 3,
                    reserved: 1,
                    consumed: 9,
                }],
            }),
            Reply::Done,
            Reply::KeyReady {
                public_key: "02".into(),
                chain_code: "03".into(),
            },
            Reply::Reserved {
                presig_id: "p".into(),
                entropy: "e".into(),
                public_digest: "d".into(),
                public_data: None,
            },
            Reply::Partial {
                partial: "ff".into(),
            },
            Reply::Signature {
                r: "1".into(),
                s: "2".into(),
            },
            Reply::Evidence {
                evidence: "5352".into(),
            },
            Reply::Error(RemoteError {
                kind: "protocol-failed".into(),
                detail: "x".into(),
                culprits: vec!["node-3".into()],
            }),
        ];
        for r in &replies {
            let back = round_trip(r);
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
    }
}
