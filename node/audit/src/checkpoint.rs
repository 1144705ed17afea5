//! Checkpoints: the node's signature over the head of its log.
//!
//! A hash chain alone shows that entries were not changed after later ones were written, but
//! anyone can recompute a whole chain. A checkpoint binds the chain to the node: every N
//! entries or T seconds ([`CheckpointSchedule`]) the node signs its cluster id, its node id,
//! the sequence number of its newest entry, that entry's hash and the time, with its
//! token-held identity key. Since each entry's hash covers the one before, a valid checkpoint
//! at seq S vouches for every entry up to S.
//!
//! # Canonical message (version 1)
//!
//! ```text
//! "strongroom/audit-checkpoint/v1" 0x00   domain-separation prefix (31 bytes, not length-prefixed)
//! then every field as  u32 BE length || bytes, in this order:
//!   1 cluster_id     UTF-8
//!   2 node_id        UTF-8
//!   3 seq            u64 BE (8 bytes)
//!   4 head_hash      32 bytes (the hash of entry `seq`)
//!   5 time_unix_ms   u64 BE (8 bytes)
//! ```
//!
//! The signature is ECDSA P-256 over SHA-256 of the message, in the fixed 64-byte `r || s`
//! form (32 bytes each, big-endian), as the keystore's `IdentityKey::sign` produces it; the
//! prefix keeps it from being valid for a vote or any other message the key signs.

use std::time::Duration;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use strongroom_transport::Subject;
use strongroom_transport::pki::{IdentityError, identity_of, public_key_of};

use crate::encoding::Encoder;
use crate::entry::FormatError;
use crate::hexser::{hex32, hex64};

/// Domain-separation prefix of the canonical checkpoint message.
pub const CHECKPOINT_DOMAIN: &[u8] = b"strongroom/audit-checkpoint/v1\0";

/// Length of a checkpoint signature: `r || s`, 32 bytes each.
pub const SIGNATURE_LEN: usize = 64;

/// Signs with the node's identity key: ECDSA P-256 over SHA-256 of the message, returning the
/// 64-byte `r || s` form.
///
/// In production this is the node's token-held `strongroom_keystore::IdentityKey`; any
/// closure `Fn(&[u8]) -> Result<[u8; 64], String>` is a signer, so the node wraps its key in
/// one: `|msg| key.sign(msg).map(|s| s.to_bytes()).map_err(|e| e.to_string())`.
pub trait CheckpointSigner {
    /// Signs `message` (the signer hashes it with SHA-256).
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], String>;
}

impl<F> CheckpointSigner for F
where
    F: Fn(&[u8]) -> Result<[u8; 64], String>,
{
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], String> {
        self(message)
    }
}

/// A signed statement by a node: "the entry at `seq` of my audit log has hash `head_hash`".
/// Byte arrays serialize as lowercase hex; this is also the JSON of one line of a bundle's
/// `checkpoints.jsonl` (unknown members are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The node's cluster.
    pub cluster_id: String,
    /// The signing node.
    pub node_id: String,
    /// Sequence number of the newest entry covered.
    pub seq: u64,
    /// The hash of that entry.
    #[serde(with = "hex32")]
    pub head_hash: [u8; 32],
    /// When the node signed, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// ECDSA P-256 `r || s` over [`Checkpoint::message`].
    #[serde(with = "hex64")]
    pub signature: [u8; 64],
}

/// Signing or verifying a checkpoint failed. Unless stated otherwise the checkpoint (or
/// whoever produced or altered it) is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A field does not fit its length prefix (caller bug).
    #[error("checkpoint: {0}")]
    Format(#[from] FormatError),
    /// The signer (the node's token) failed.
    #[error("node '{node}' could not sign its audit checkpoint: {reason}")]
    Signer {
        /// The signing node.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificate is unreadable or names no strongroom identity.
    #[error("the node certificate is unusable: {0}")]
    Certificate(#[from] IdentityError),
    /// The certificate is not a node certificate.
    #[error("the certificate names {0}, not a node")]
    NotANode(String),
    /// The checkpoint names another cluster or node than the certificate.
    #[error(
        "the checkpoint is for node '{checkpoint_node}' of cluster '{checkpoint_cluster}', \
         the certificate names node '{cert_node}' of cluster '{cert_cluster}'"
    )]
    IdentityMismatch {
        /// The cluster the checkpoint claims.
        checkpoint_cluster: String,
        /// The node the checkpoint claims.
        checkpoint_node: String,
        /// The cluster the certificate names.
        cert_cluster: String,
        /// The node the certificate names.
        cert_node: String,
    },
    /// The certificate's key is not an ECDSA P-256 key.
    #[error("the certificate's key is not an ECDSA P-256 key: {0}")]
    UnsupportedKey(String),
    /// The signature bytes are not a valid `r || s` pair.
    #[error("the signature is malformed: {0}")]
    MalformedSignature(String),
    /// The signature does not verify under the certificate's key: the checkpoint was altered,
    /// forged, or signed by another key.
    #[error("the signature does not verify under the node certificate's key")]
    BadSignature,
}

impl Checkpoint {
    /// Signs a checkpoint of entry `seq` (whose hash is `head_hash`) with `signer`.
    pub fn sign<S: CheckpointSigner + ?Sized>(
        cluster_id: &str,
        node_id: &str,
        seq: u64,
        head_hash: [u8; 32],
        time_unix_ms: u64,
        signer: &S,
    ) -> Result<Checkpoint, CheckpointError> {
        let mut checkpoint = Checkpoint {
            cluster_id: cluster_id.to_owned(),
            node_id: node_id.to_owned(),
            seq,
            head_hash,
            time_unix_ms,
            signature: [0; 64],
        };
        let message = checkpoint.message()?;
        checkpoint.signature = signer
            .sign(&message)
            .map_err(|reason| CheckpointError::Signer {
                node: node_id.to_owned(),
                reason,
            })?;
        Ok(checkpoint)
    }

    /// The canonical message the signature covers (see the [module docs](self)).
    pub fn message(&self) -> Result<Vec<u8>, FormatError> {
        let mut enc = Encoder::new(CHECKPOINT_DOMAIN);
        enc.field("cluster_id", self.cluster_id.as_bytes())?;
        enc.field("node_id", self.node_id.as_bytes())?;
        enc.field("seq", &self.seq.to_be_bytes())?;
        enc.field("head_hash", &self.head_hash)?;
        enc.field("time_unix_ms", &self.time_unix_ms.to_be_bytes())?;
        Ok(enc.finish())
    }

    /// Checks that `certificate` (DER) names this checkpoint's node of this checkpoint's
    /// cluster and that its P-256 key verifies the signature.
    ///
    /// The certificate's chain to the cluster CA and its validity period are NOT checked here:
    /// a verifier checks the chain once for all checkpoints (as `verify_bundle` does).
    pub fn verify(&self, certificate: &CertificateDer<'_>) -> Result<(), CheckpointError> {
        let identity = identity_of(certificate)?;
        let cert_node = match &identity.subject {
            Subject::Node(n) => n.as_str(),
            Subject::Client(_) => return Err(CheckpointError::NotANode(identity.uri())),
        };
        if identity.cluster.as_str() != self.cluster_id || cert_node != self.node_id {
            return Err(CheckpointError::IdentityMismatch {
                checkpoint_cluster: self.cluster_id.clone(),
                checkpoint_node: self.node_id.clone(),
                cert_cluster: identity.cluster.to_string(),
                cert_node: cert_node.to_owned(),
            });
        }
        let spki = public_key_of(certificate)?;
        let key = VerifyingKey::from_public_key_der(&spki)
            .map_err(|e| CheckpointError::UnsupportedKey(e.to_string()))?;
        let signature = Signature::from_slice(&self.signature)
            .map_err(|e| CheckpointError::MalformedSignature(e.to_string()))?;
        key.verify(&self.message()?, &signature)
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// When the node signs a checkpoint: after `every_entries` new entries or `every` time,
/// whichever comes first, and only when there is something new to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSchedule {
    /// New entries that make a checkpoint due (at least 1).
    pub every_entries: u64,
    /// Time after the last checkpoint that makes one due for any new entry.
    pub every: Duration,
}

impl Default for CheckpointSchedule {
    /// Every 1000 entries or 60 seconds.
    fn default() -> Self {
        CheckpointSchedule {
            every_entries: 1000,
            every: Duration::from_secs(60),
        }
    }
}

impl CheckpointSchedule {
    /// The seq to sign a checkpoint for now, if one is due. `head_seq` is the newest entry's
    /// seq (`None` for an empty log), `last` the newest checkpoint's seq and time.
    pub fn due(
        &self,
        head_seq: Option<u64>,
        last: Option<(u64, u64)>,
        now_unix_ms: u64,
    ) -> Option<u64> {
        let head = head_seq?;
        let Some((last_seq, last_time)) = last else {
            // Nothing was ever signed: sign the head at once.
            return Some(head);
        };
        if head <= last_seq {
            return None;
        }
        let new_entries = head - last_seq;
        let every_ms = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        let elapsed = now_unix_ms.saturating_sub(last_time);
        (new_entries >= self.every_entries.max(1) || elapsed >= every_ms).then_some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_entries_and_time() {
        let s = CheckpointSchedule {
            every_entries: 10,
            every: Duration::from_secs(5),
        };
        assert_eq!(s.due(None, None, 0), None);
        assert_eq!(s.due(Some(0), None, 0), Some(0));
        assert_eq!(s.due(Some(3), Some((3, 0)), 1_000_000), None, "nothing new");
        assert_eq!(s.due(Some(12), Some((3, 1000)), 2000), None);
        assert_eq!(s.due(Some(13), Some((3, 1000)), 2000), Some(13), "10 new");
        assert_eq!(s.due(Some(4), Some((3, 1000)), 5999), None);
        assert_eq!(s.due(Some(4), Some((3, 1000)), 6000), Some(4), "5 s later");
    }

    /// Pins the message: a change here invalidates every checkpoint already signed.
    #[test]
    fn message_snapshot() {
        let c = Checkpoint {
            cluster_id: "vault".into(),
            node_id: "node-1".into(),
            seq: 7,
            head_hash: [0xaa; 32],
            time_unix_ms: 1_700_000_000_000,
            signature: [0; 64],
        };
        let mut expected = b"strongroom/audit-checkpoint/v1\0".to_vec();
        for field in [
            &b"vault"[..],
            b"node-1",
            &7u64.to_be_bytes()[..],
            &[0xaa; 32],
            &1_700_000_000_000u64.to_be_bytes()[..],
        ] {
            expected.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
            expected.extend_from_slice(field);
        }
        assert_eq!(c.message().unwrap(), expected);
    }
}
