//! Approvals: Ed25519 signatures by the policy's approvers over a request digest.

use ed25519_dalek::Signature;

use crate::error::ApprovalError;
use crate::model::Policy;

/// An approval whose signature has been verified against the approver's key in a policy.
///
/// Only [`verify_approval`] builds one, so holding a `VerifiedApproval` proves the check ran.
/// It remembers the key it was verified with and the digest it covers: [`crate::evaluate`]
/// counts it only for that digest and only while the policy still lists that key under that
/// name. It is deliberately not deserializable; store the approver name and signature and
/// verify again after loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedApproval {
    approver: String,
    public_key: [u8; 32],
    digest: [u8; 32],
    signature: [u8; 64],
}

impl VerifiedApproval {
    /// The approver's name.
    pub fn approver(&self) -> &str {
        &self.approver
    }

    /// The approver's public key the signature was verified with.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The request digest the signature covers.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The signature itself, to store or forward to peers (who verify it themselves).
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

/// Verifies that `signature` is `approver`'s Ed25519 signature over the 32-byte request
/// `digest`, with the key `policy` lists for that approver.
///
/// The message signed is exactly the 32 digest bytes. Verification is strict (RFC 8032 with
/// canonical encodings, small-order keys and signature points refused), so one approval has
/// exactly one valid signature encoding.
pub fn verify_approval(
    policy: &Policy,
    approver: &str,
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<VerifiedApproval, ApprovalError> {
    let Some(entry) = policy.approver(approver) else {
        return Err(ApprovalError::UnknownApprover {
            policy: policy.id().to_owned(),
            approver: approver.to_owned(),
        });
    };
    let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
        return Err(ApprovalError::MalformedSignature {
            approver: approver.to_owned(),
            len: signature.len(),
        });
    };
    let parsed = Signature::from_bytes(&bytes);
    entry
        .public_key()
        .verify_strict(digest, &parsed)
        .map_err(|_| ApprovalError::BadSignature {
            approver: approver.to_owned(),
            policy: policy.id().to_owned(),
        })?;
    Ok(VerifiedApproval {
        approver: approver.to_owned(),
        public_key: entry.public_key().to_bytes(),
        digest: *digest,
        signature: bytes,
    })
}
