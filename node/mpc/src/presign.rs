//! Presignature generation for one ordered signer set.
//!
//! Exactly `t` signers take part (cggmp24 signs t-of-t after mapping the shares with Lagrange
//! coefficients), so a presignature belongs to that ordered set. No derivation path is fixed here:
//! the path, the message and fresh entropy from every signer enter at signing time through the
//! re-randomization in [`crate::online`].

use std::fmt;

use cggmp24::generic_ec::{NonZero, Point};
use cggmp24::progress::Tracer;
use cggmp24::round_based::Mpc;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::blame::{Fault, classify, to_party_indices};
use crate::codec::{self, DecodeError, EncodeError, hex_point};
use crate::keys::SecretKeyShare;
use crate::session::{
    KeyId, PartyIndex, PresignatureId, ProtocolKind, SessionDescriptor, SessionError, SignerSet,
};
use crate::{Curve, msg};

const PRESIG_FORMAT: &str = "strongroom-presignature";
const PRESIG_VERSION: u32 = 1;

/// One signer's piece of a presignature: `Γ` and its secret `k̃ᵢ`, `χ̃ᵢ`.
///
/// **Single use.** Issuing a partial signature consumes it (by value); the node must mark it
/// consumed durably before it releases the partial, because the encoded form can be copied. Two
/// partials from one presignature leak the key. The secret scalars are wiped on drop. Never
/// printed.
pub struct SecretPresignature {
    pub(crate) id: PresignatureId,
    pub(crate) key_id: KeyId,
    pub(crate) signers: SignerSet,
    pub(crate) holder: PartyIndex,
    pub(crate) inner: cggmp24::Presignature<Curve>,
}

impl fmt::Debug for SecretPresignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretPresignature")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("signers", &self.signers)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SealedPresigRef<'a> {
    id: PresignatureId,
    key_id: KeyId,
    signers: &'a SignerSet,
    holder: PartyIndex,
    presignature: &'a cggmp24::Presignature<Curve>,
}

#[derive(Deserialize)]
struct SealedPresig {
    id: PresignatureId,
    key_id: KeyId,
    signers: SignerSet,
    holder: PartyIndex,
    presignature: cggmp24::Presignature<Curve>,
}

impl SecretPresignature {
    /// The presignature's id (shared by every signer's piece).
    pub fn id(&self) -> PresignatureId {
        self.id
    }

    /// The key it belongs to.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The ordered signer set it belongs to.
    pub fn signers(&self) -> &SignerSet {
        &self.signers
    }

    /// The party holding this piece.
    pub fn holder(&self) -> PartyIndex {
        self.holder
    }

    /// Encodes the piece for sealing (versioned CBOR). The buffer is wiped on drop. Whoever holds
    /// the bytes can issue a partial: keep the consumed state next to them.
    pub fn to_sealable_bytes(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        codec::encode(
            PRESIG_FORMAT,
            PRESIG_VERSION,
            &SealedPresigRef {
                id: self.id,
                key_id: self.key_id,
                signers: &self.signers,
                holder: self.holder,
                presignature: &self.inner,
            },
        )
    }

    /// Decodes a piece produced by [`SecretPresignature::to_sealable_bytes`].
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let sealed: SealedPresig = codec::decode(PRESIG_FORMAT, PRESIG_VERSION, bytes)?;
        if sealed.signers.position_of(sealed.holder).is_none() {
            return Err(DecodeError::Invalid {
                format: PRESIG_FORMAT,
                detail: format!("holder {} is not in the signer set", sealed.holder),
            });
        }
        Ok(Self {
            id: sealed.id,
            key_id: sealed.key_id,
            signers: sealed.signers,
            holder: sealed.holder,
            inner: sealed.presignature,
        })
    }
}

/// One signer's public commitments `(Δ̃ⱼ, S̃ⱼ)` = `(k̃ⱼ·Γ, χ̃ⱼ·Γ)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerCommitment {
    /// `Δ̃ⱼ`, compressed.
    #[serde(with = "hex_point")]
    pub(crate) tilde_delta: Point<Curve>,
    /// `S̃ⱼ`, compressed.
    #[serde(with = "hex_point")]
    pub(crate) tilde_s: Point<Curve>,
}

/// The public side of a presignature: `Γ` and every signer's commitments, the same on every
/// signer. Used to check each partial signature and name a cheating signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPublic")]
pub struct PresignaturePublic {
    id: PresignatureId,
    key_id: KeyId,
    signers: SignerSet,
    #[serde(with = "hex_point")]
    gamma: Point<Curve>,
    commitments: Vec<SignerCommitment>,
}

#[derive(Deserialize)]
struct RawPublic {
    id: PresignatureId,
    key_id: KeyId,
    signers: SignerSet,
    #[serde(with = "hex_point")]
    gamma: Point<Curve>,
    commitments: Vec<SignerCommitment>,
}

impl TryFrom<RawPublic> for PresignaturePublic {
    type Error = String;

    fn try_from(raw: RawPublic) -> Result<Self, Self::Error> {
        if raw.gamma.is_zero() {
            return Err("Γ is the point at infinity".into());
        }
        if raw.commitments.len() != raw.signers.len() {
            return Err(format!(
                "{} commitments for {} signers",
                raw.commitments.len(),
                raw.signers.len()
            ));
        }
        Ok(Self {
            id: raw.id,
            key_id: raw.key_id,
            signers: raw.signers,
            gamma: raw.gamma,
            commitments: raw.commitments,
        })
    }
}

impl PresignaturePublic {
    /// The presignature's id.
    pub fn id(&self) -> PresignatureId {
        self.id
    }

    /// The key it belongs to.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The ordered signer set.
    pub fn signers(&self) -> &SignerSet {
        &self.signers
    }

    /// `Γ`, compressed (the nonce point before re-randomization).
    pub fn gamma(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(&self.gamma.to_bytes(true));
        out
    }

    pub(crate) fn gamma_point(&self) -> Point<Curve> {
        self.gamma
    }

    pub(crate) fn commitments(&self) -> &[SignerCommitment] {
        &self.commitments
    }
}

/// Why presignature generation failed.
#[derive(Debug, thiserror::Error)]
pub enum PresignError {
    /// Caller misuse: the descriptor is not a presign session.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Caller misuse: the session names another key than the share's.
    #[error("the session is for key {session}, the share is of key {share}")]
    WrongKey {
        /// Key named by the session.
        session: KeyId,
        /// Key of the share.
        share: KeyId,
    },
    /// Caller misuse: the signer set does not have exactly `threshold` members.
    #[error("a presignature needs exactly {threshold} signers, the session has {signers}")]
    WrongSignerCount {
        /// The key's threshold.
        threshold: u16,
        /// Signers in the session.
        signers: usize,
    },
    /// Caller misuse: a signer index is not a key holder.
    #[error("signer {signer} is not a holder of this {n}-party key")]
    UnknownSigner {
        /// The offending index.
        signer: PartyIndex,
        /// Key holders.
        n: u16,
    },
    /// Caller misuse: this party is not in the signer set.
    #[error("party {0} is not in the signer set of this session")]
    NotASigner(PartyIndex),
    /// A peer misbehaved: the listed parties were blamed by cggmp24 (empty when it named none).
    /// Only this presignature is lost.
    #[error("presigning aborted by misbehaving signer(s) {culprits:?}: {detail}")]
    PeerMisbehaved {
        /// Party indices of the blamed signers.
        culprits: Vec<PartyIndex>,
        /// cggmp24's account of the failure.
        detail: String,
    },
    /// The transport failed, or a peer's message could not be routed (wrong round, duplicate).
    #[error("presigning failed in message delivery: {0}")]
    Transport(String),
    /// Bug in cggmp24 or in this crate (the arguments were checked beforehand).
    #[error("bug: presigning failed: {0}")]
    Bug(String),
}

/// The result of presigning on one signer.
#[derive(Debug)]
pub struct GeneratedPresignature {
    /// This signer's secret piece.
    pub secret: SecretPresignature,
    /// The public data (the same on every signer).
    pub public: PresignaturePublic,
}

/// Checks a signing-kind session against a key share; returns this party's position in the set.
pub(crate) fn check_signing_session(
    session: &SessionDescriptor,
    kind: ProtocolKind,
    share: &SecretKeyShare,
) -> Result<u16, PresignError> {
    session.expect_kind(kind)?;
    let key_id = session.key_id().ok_or(SessionError::KeyIdMismatch(kind))?;
    if key_id != share.key_id() {
        return Err(PresignError::WrongKey {
            session: key_id,
            share: share.key_id(),
        });
    }
    let signers = session.participants();
    if signers.len() != usize::from(share.threshold()) {
        return Err(PresignError::WrongSignerCount {
            threshold: share.threshold(),
            signers: signers.len(),
        });
    }
    if let Some(signer) = signers.parties().iter().find(|s| **s >= share.n()) {
        return Err(PresignError::UnknownSigner {
            signer: *signer,
            n: share.n(),
        });
    }
    signers
        .position_of(share.index())
        .ok_or(PresignError::NotASigner(share.index()))
}

pub(crate) fn map_signing_error(err: &cggmp24::SigningError, signers: &SignerSet) -> PresignError {
    let (fault, detail) = classify(err);
    match fault {
        Fault::Peers(local) => PresignError::PeerMisbehaved {
            culprits: to_party_indices(&local, signers.parties()),
            detail,
        },
        Fault::Transport => PresignError::Transport(detail),
        Fault::Caller | Fault::Bug => PresignError::Bug(detail),
    }
}

/// Runs presignature generation as the holder of `share`, among the session's ordered signers.
///
/// The presignature id is the session id. Reliable broadcast is enforced.
pub async fn run_presign<M>(
    session: &SessionDescriptor,
    share: &SecretKeyShare,
    rng: &mut (impl RngCore + CryptoRng),
    party: M,
    tracer: Option<&mut dyn Tracer>,
) -> Result<GeneratedPresignature, PresignError>
where
    M: Mpc<ProtocolMessage = msg::SigningMsg>,
{
    let position = check_signing_session(session, ProtocolKind::Presign, share)?;
    let signers = session.participants();
    let eid = session.execution_id();
    let mut builder = cggmp24::signing(
        eid.execution_id(),
        position,
        signers.parties(),
        share.inner(),
    )
    .enforce_reliable_broadcast(true);
    if let Some(tracer) = tracer {
        builder = builder.set_progress_tracer(tracer);
    }
    let (presig, public) = builder
        .generate_presignature(rng, party)
        .await
        .map_err(|err| map_signing_error(&err, signers))?;
    let id = PresignatureId::from_bytes(*session.session_id().as_bytes());
    let gamma: NonZero<Point<Curve>> = public.Gamma;
    let public = PresignaturePublic {
        id,
        key_id: share.key_id(),
        signers: signers.clone(),
        gamma: gamma.into_inner(),
        commitments: public
            .commitments
            .into_iter()
            .map(|c| SignerCommitment {
                tilde_delta: c.tilde_Delta,
                tilde_s: c.tilde_S,
            })
            .collect(),
    };
    let secret = SecretPresignature {
        id,
        key_id: share.key_id(),
        signers: signers.clone(),
        holder: share.index(),
        inner: presig,
    };
    Ok(GeneratedPresignature { secret, public })
}
