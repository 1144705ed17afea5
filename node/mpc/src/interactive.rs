//! Full interactive signing: the fallback when no presignature is available.
//!
//! cggmp24's signing protocol with the derivation path set through the builder, so the HD shift
//! is applied before any nonce exists. Message type: in cggmp24 0.7.0-alpha.3 interactive signing
//! accepts either `DataToSign` (built by hashing the message bytes once with a `Digest`) or
//! `PrehashedDataToSign` (a scalar). A Bitcoin sighash is a double SHA-256 over a preimage only
//! the bitcoin layer builds, so this crate passes `PrehashedDataToSign`, built from a
//! [`NodeComputedSighash`]. cggmp24 documents that this is safe in interactive signing: the
//! message is fixed before the nonce is generated, so the attack on presignatures with raw hashes
//! does not apply. The signature is verified under the child key before it is returned.

use cggmp24::progress::Tracer;
use cggmp24::round_based::Mpc;
use rand_core::{CryptoRng, RngCore};

use crate::hd::DerivationPath;
use crate::keys::{DeriveError, SecretKeyShare};
use crate::msg;
use crate::online::{EcdsaSignature, NodeComputedSighash};
use crate::presign::{PresignError, check_signing_session, map_signing_error};
use crate::session::{ProtocolKind, SessionDescriptor};

/// Why interactive signing failed.
#[derive(Debug, thiserror::Error)]
pub enum InteractiveSignError {
    /// The session could not start or the protocol failed; the variant names who was at fault
    /// (caller misuse, a misbehaving signer with its index, the transport, or a bug).
    #[error(transparent)]
    Protocol(#[from] PresignError),
    /// Caller misuse: the key's public data is invalid or the path derives no key.
    #[error(transparent)]
    Derive(#[from] DeriveError),
    /// Bug: cggmp24 refused a path this crate had already checked to be non-hardened.
    #[error("bug: cggmp24 refused derivation path {0}")]
    PathRefused(DerivationPath),
    /// Bug: the protocol returned a signature that does not verify under the child key.
    #[error("bug: the signature does not verify under the child key")]
    InvalidSignature,
}

/// Runs interactive signing of `sighash` at `path` as the holder of `share`, among the session's
/// ordered signers (exactly `threshold` of them). Reliable broadcast is enforced.
pub async fn run_interactive_sign<M>(
    session: &SessionDescriptor,
    share: &SecretKeyShare,
    path: &DerivationPath,
    sighash: &NodeComputedSighash,
    rng: &mut (impl RngCore + CryptoRng),
    party: M,
    tracer: Option<&mut dyn Tracer>,
) -> Result<EcdsaSignature, InteractiveSignError>
where
    M: Mpc<ProtocolMessage = msg::SigningMsg>,
{
    let position = check_signing_session(session, ProtocolKind::InteractiveSign, share)?;
    let child = share.public_info().derive(path)?;
    let signers = session.participants();
    let eid = session.execution_id();
    let mut builder = cggmp24::signing(
        eid.execution_id(),
        position,
        signers.parties(),
        share.inner(),
    )
    .set_derivation_path(path.indices().iter().copied())
    .map_err(|_| InteractiveSignError::PathRefused(path.clone()))?
    .enforce_reliable_broadcast(true);
    if let Some(tracer) = tracer {
        builder = builder.set_progress_tracer(tracer);
    }
    let data = cggmp24::PrehashedDataToSign::from_scalar(sighash.scalar());
    let signature = builder
        .sign(rng, party, &data)
        .await
        .map_err(|err| map_signing_error(&err, signers))?
        .normalize_s();
    signature
        .verify(&child.public_key.into_inner(), &data)
        .map_err(|_| InteractiveSignError::InvalidSignature)?;
    Ok(EcdsaSignature::from_cggmp(&signature))
}
