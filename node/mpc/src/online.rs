//! Online signing with re-randomized presignatures (Groth–Shoup, eprint 2021/1330, "On the
//! Security of ECDSA with Additive Key Derivation and Presignatures").
//!
//! A presignature `(Γ, k̃ᵢ, χ̃ᵢ)` with `Σk̃ᵢ = γ⁻¹` and `Σχ̃ᵢ = x·γ⁻¹` (where `Γ = γ·G` and `x` is
//! the key) would, used as is, fix the nonce before the message and the HD path are known, which
//! is what the attacks on presignatures with raw hashes and late HD paths exploit. Here every
//! signing re-randomizes it with a scalar `ρ` that nobody can predict when the presignature is made:
//!
//! * `ρ` = a nonzero scalar from a domain-separated SHA-256 hash (wide reduction) of the key id,
//!   the presignature id, `Γ`, the derivation path, the sighash, the signer set and the 32-byte
//!   entropy every signer put in its vote;
//! * `δ` = the additive HD shift of the path, so the child key is `x + δ`;
//! * `Γ′ = ρ·Γ`, `r = x(Γ′)`, `k̃ᵢ′ = k̃ᵢ·ρ⁻¹`, `χ̃ᵢ′ = (χ̃ᵢ + δ·k̃ᵢ)·ρ⁻¹`,
//!   `σᵢ = k̃ᵢ′·m + r·χ̃ᵢ′`;
//! * then `Σσᵢ = (m + r·(x + δ))·(γρ)⁻¹`, an ECDSA signature under the child key with nonce `γρ`;
//! * each partial is checked against the public commitments `Δ̃ᵢ = k̃ᵢ·Γ`, `S̃ᵢ = χ̃ᵢ·Γ` as
//!   `σᵢ·Γ′ = m·Δ̃ᵢ + r·(S̃ᵢ + δ·Δ̃ᵢ)`, which names a signer whose partial is wrong;
//! * the sum is normalized to low S and verified against the child key before it is returned.
//!
//! The message `m` is a [`NodeComputedSighash`]: this node computed it from a transaction it
//! parsed and validated. Nothing in this crate signs a hash handed in by a client.

use std::collections::BTreeMap;
use std::fmt;

use cggmp24::generic_ec::coords::AlwaysHasAffineX as _;
use cggmp24::generic_ec::{NonZero, Point, Scalar};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Curve;
use crate::codec::{hex_array, hex_scalar};
use crate::hd::DerivationPath;
use crate::keys::{DeriveError, PublicKeyInfo};
use crate::presign::{PresignaturePublic, SecretPresignature};
use crate::session::{KeyId, PartyIndex, PresignatureId, SignerSet, put};

const RHO_DOMAIN: &[u8] = b"strongroom/mpc/rerandomize/v1";
const RHO_EXPAND_DOMAIN: &[u8] = b"strongroom/mpc/rerandomize/v1/expand";

/// A 32-byte sighash (BIP-143 or legacy) that **this node computed itself** from a transaction it
/// parsed and validated. Never build one from bytes a client or a peer sent: signing a hash whose
/// preimage the node has not seen lets an attacker forge signatures with presignatures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodeComputedSighash([u8; 32]);

impl NodeComputedSighash {
    /// Wraps a sighash the node computed from the validated transaction (see the type's docs).
    pub const fn from_node_computed(sighash: [u8; 32]) -> Self {
        Self(sighash)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn scalar(&self) -> Scalar<Curve> {
        Scalar::from_be_bytes_mod_order(self.0)
    }
}

impl fmt::Debug for NodeComputedSighash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeComputedSighash({})", hex::encode(self.0))
    }
}

/// The 32 bytes of fresh randomness a signer put in its vote for a signing request.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignerEntropy(#[serde(with = "hex_array")] [u8; 32]);

impl SignerEntropy {
    /// Wraps 32 bytes from a vote.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Draws fresh entropy for this node's vote.
    pub fn random(rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng)) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SignerEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerEntropy({})", hex::encode(self.0))
    }
}

/// One signer's partial signature `σᵢ`. Public. It names no sender: the receiver knows the sender
/// from the authenticated connection it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSignature {
    #[serde(with = "hex_scalar")]
    sigma: Scalar<Curve>,
}

impl PartialSignature {
    /// The 32-byte big-endian `σᵢ`.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.sigma.to_be_bytes());
        out
    }

    /// Parses a 32-byte big-endian `σᵢ` (must be below the group order).
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        Scalar::from_be_bytes(bytes)
            .ok()
            .map(|sigma| Self { sigma })
    }
}

/// A final ECDSA signature, low-S normalized, verified against the child key: usable as a Bitcoin
/// ECDSA signature (append the sighash type byte to the DER form for a PSBT `partial_sigs` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcdsaSignature {
    /// `r`, 32 bytes big-endian.
    #[serde(with = "hex_array")]
    pub r: [u8; 32],
    /// `s`, 32 bytes big-endian, at most half the group order.
    #[serde(with = "hex_array")]
    pub s: [u8; 32],
}

impl EcdsaSignature {
    pub(crate) fn from_cggmp(sig: &cggmp24::Signature<Curve>) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&sig.r.to_be_bytes());
        s.copy_from_slice(&sig.s.to_be_bytes());
        Self { r, s }
    }

    /// The 64-byte compact form `r || s`.
    pub fn to_compact(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let (r, s) = out.split_at_mut(32);
        r.copy_from_slice(&self.r);
        s.copy_from_slice(&self.s);
        out
    }

    /// The strict DER encoding (BIP-66), without a sighash type byte.
    pub fn to_der(&self) -> Vec<u8> {
        let r = der_integer(&self.r);
        let s = der_integer(&self.s);
        let mut out = Vec::with_capacity(2 + r.len() + s.len());
        out.push(0x30);
        // At most 2 × 35 bytes, so the length fits the short form.
        out.push(u8::try_from(r.len() + s.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&r);
        out.extend_from_slice(&s);
        out
    }
}

fn der_integer(bytes: &[u8; 32]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(31);
    let digits = bytes.get(first..).unwrap_or_default();
    let pad = digits.first().is_some_and(|b| b & 0x80 != 0);
    let mut out = Vec::with_capacity(35);
    out.push(0x02);
    out.push(u8::try_from(digits.len() + usize::from(pad)).unwrap_or(u8::MAX));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// Why a signing could not be prepared or a partial could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum OnlineSignError {
    /// Caller misuse: the presignature belongs to another key.
    #[error(
        "presignature {presignature} is of key {presignature_key}, the request is for key {key}"
    )]
    WrongKey {
        /// The presignature.
        presignature: PresignatureId,
        /// Its key.
        presignature_key: KeyId,
        /// The key of the request.
        key: KeyId,
    },
    /// Caller misuse: the presignature does not have `threshold` signers.
    #[error("presignature has {signers} signers, the key needs {threshold}")]
    WrongSignerCount {
        /// Signers of the presignature.
        signers: usize,
        /// The key's threshold.
        threshold: u16,
    },
    /// Caller misuse: the entropies do not come from exactly the signer set.
    #[error("entropy is required from exactly the signers {expected:?}, got it from {got:?}")]
    EntropyMismatch {
        /// The signer set.
        expected: Vec<PartyIndex>,
        /// Who the entropies are from.
        got: Vec<PartyIndex>,
    },
    /// Caller misuse: the secret piece is not a piece of the presignature this signing uses.
    #[error("the secret presignature does not belong to presignature {expected}")]
    PieceMismatch {
        /// The presignature this signing uses.
        expected: PresignatureId,
    },
    /// Caller misuse: the key's public data is invalid or the path derives no key.
    #[error(transparent)]
    Derive(#[from] DeriveError),
    /// The re-randomized nonce point has x-coordinate zero modulo the order (probability about
    /// 2⁻²⁵⁶): the presignature is unusable. Not a fault of anyone.
    #[error("the re-randomized nonce is degenerate; use another presignature")]
    DegenerateNonce,
    /// Bug, or a corrupted stored presignature: our own partial fails its commitment check. The
    /// partial is withheld.
    #[error("bug or corrupted presignature: our own partial fails its commitment check")]
    OwnPartialInvalid,
}

/// Why a partial signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartialCheckError {
    /// Caller misuse: the named party is not a signer of this presignature.
    #[error("party {0} is not a signer of this presignature")]
    NotASigner(PartyIndex),
    /// Peer misbehaved: the signer's partial does not match its presignature commitments.
    #[error("signer {signer} sent an invalid partial signature")]
    Invalid {
        /// The cheating signer (party index).
        signer: PartyIndex,
    },
}

/// Why partial signatures could not be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CombineError {
    /// Caller misuse: a signer's partial is missing.
    #[error("the partial signature of signer {0} is missing")]
    Missing(PartyIndex),
    /// Caller misuse: a partial is from a party outside the signer set.
    #[error("party {0} is not a signer of this presignature")]
    NotASigner(PartyIndex),
    /// Peer misbehaved: these signers' partials fail their commitment check.
    #[error("signer(s) {culprits:?} sent invalid partial signatures")]
    CheatingSigners {
        /// The cheating signers (party indices).
        culprits: Vec<PartyIndex>,
    },
    /// The partials sum to zero (probability about 2⁻²⁵⁶); not a fault of anyone.
    #[error("the partial signatures sum to zero")]
    ZeroSignature,
    /// Bug: every partial passed its check, yet the signature does not verify under the child key.
    #[error("bug: combined signature does not verify under the child key")]
    InvalidSignature,
}

/// One signing with one presignature, prepared from public data only: the same on every signer
/// and on the combiner.
pub struct OnlineSigning {
    key_id: KeyId,
    presignature: PresignaturePublic,
    path: DerivationPath,
    m: Scalar<Curve>,
    delta: Scalar<Curve>,
    rho_inv: Scalar<Curve>,
    gamma_prime: NonZero<Point<Curve>>,
    r: NonZero<Scalar<Curve>>,
    child_public_key: NonZero<Point<Curve>>,
}

impl fmt::Debug for OnlineSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnlineSigning")
            .field("key_id", &self.key_id)
            .field("presignature", &self.presignature.id())
            .field("path", &self.path)
            .field("nonce_point", &hex::encode(self.nonce_point()))
            .finish_non_exhaustive()
    }
}

impl OnlineSigning {
    /// Prepares the signing of `sighash` at `path` of `key` with presignature `presignature`, given
    /// the entropy from each signer's vote (keyed by party index; exactly the signer set).
    pub fn new(
        key: &PublicKeyInfo,
        presignature: &PresignaturePublic,
        path: &DerivationPath,
        sighash: &NodeComputedSighash,
        entropy: &BTreeMap<PartyIndex, SignerEntropy>,
    ) -> Result<Self, OnlineSignError> {
        if presignature.key_id() != key.key_id {
            return Err(OnlineSignError::WrongKey {
                presignature: presignature.id(),
                presignature_key: presignature.key_id(),
                key: key.key_id,
            });
        }
        let signers = presignature.signers();
        if signers.len() != usize::from(key.threshold) {
            return Err(OnlineSignError::WrongSignerCount {
                signers: signers.len(),
                threshold: key.threshold,
            });
        }
        let ordered: Option<Vec<&SignerEntropy>> =
            signers.parties().iter().map(|p| entropy.get(p)).collect();
        let ordered = match ordered {
            Some(list) if entropy.len() == signers.len() => list,
            _ => {
                return Err(OnlineSignError::EntropyMismatch {
                    expected: signers.parties().to_vec(),
                    got: entropy.keys().copied().collect(),
                });
            }
        };
        let child = key.derive(path)?;
        let gamma = presignature.gamma_point();
        let rho = rerandomizer(
            key.key_id,
            presignature.id(),
            &gamma,
            path,
            sighash,
            signers,
            &ordered,
        );
        let gamma_prime =
            NonZero::from_point(gamma * rho).ok_or(OnlineSignError::DegenerateNonce)?;
        let r = NonZero::from_scalar(gamma_prime.x().to_scalar())
            .ok_or(OnlineSignError::DegenerateNonce)?;
        Ok(Self {
            key_id: key.key_id,
            presignature: presignature.clone(),
            path: path.clone(),
            m: sighash.scalar(),
            delta: child.shift,
            rho_inv: rho.invert().into_inner(),
            gamma_prime,
            r,
            child_public_key: child.public_key,
        })
    }

    /// The re-randomized nonce point `Γ′`, compressed. Distinct for every signing.
    pub fn nonce_point(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(&self.gamma_prime.to_bytes(true));
        out
    }

    /// The child public key the signature will verify under, compressed.
    pub fn child_public_key(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(&self.child_public_key.to_bytes(true));
        out
    }

    /// The presignature this signing uses.
    pub fn presignature_id(&self) -> PresignatureId {
        self.presignature.id()
    }

    /// Issues this signer's partial signature, consuming its piece of the presignature.
    ///
    /// The node must have marked the presignature consumed, durably, before it releases the
    /// returned partial. The partial is checked against our own commitment before it is returned.
    pub fn issue_partial(
        &self,
        piece: SecretPresignature,
    ) -> Result<PartialSignature, OnlineSignError> {
        if piece.id != self.presignature.id()
            || piece.key_id != self.key_id
            || piece.signers != *self.presignature.signers()
            || piece.inner.Gamma.into_inner() != self.presignature.gamma_point()
        {
            return Err(OnlineSignError::PieceMismatch {
                expected: self.presignature.id(),
            });
        }
        let tilde_k: &Scalar<Curve> = piece.inner.tilde_k.as_ref();
        let tilde_chi: &Scalar<Curve> = piece.inner.tilde_chi.as_ref();
        let k_prime = Zeroizing::new(tilde_k * self.rho_inv);
        let chi_prime = Zeroizing::new((tilde_chi + self.delta * tilde_k) * self.rho_inv);
        let sigma = *k_prime * self.m + self.r * *chi_prime;
        let partial = PartialSignature { sigma };
        self.verify_partial(piece.holder, &partial)
            .map_err(|_| OnlineSignError::OwnPartialInvalid)?;
        Ok(partial)
    }

    /// Checks one signer's partial against its commitments:
    /// `σᵢ·Γ′ = m·Δ̃ᵢ + r·(S̃ᵢ + δ·Δ̃ᵢ)`.
    pub fn verify_partial(
        &self,
        signer: PartyIndex,
        partial: &PartialSignature,
    ) -> Result<(), PartialCheckError> {
        let commitment = self
            .presignature
            .signers()
            .position_of(signer)
            .and_then(|pos| self.presignature.commitments().get(usize::from(pos)))
            .ok_or(PartialCheckError::NotASigner(signer))?;
        let lhs = self.gamma_prime * partial.sigma;
        let rhs = commitment.tilde_delta * self.m
            + (commitment.tilde_s + commitment.tilde_delta * self.delta) * self.r;
        if lhs == rhs {
            Ok(())
        } else {
            Err(PartialCheckError::Invalid { signer })
        }
    }

    /// Checks every partial (keyed by the party index of its authenticated sender), sums them,
    /// normalizes to low S and verifies the signature under the child key.
    pub fn combine(
        &self,
        partials: &BTreeMap<PartyIndex, PartialSignature>,
    ) -> Result<EcdsaSignature, CombineError> {
        let signers = self.presignature.signers();
        if let Some(outsider) = partials.keys().find(|p| signers.position_of(**p).is_none()) {
            return Err(CombineError::NotASigner(*outsider));
        }
        let mut culprits = Vec::new();
        let mut sum = Scalar::<Curve>::zero();
        for signer in signers.parties() {
            let partial = partials.get(signer).ok_or(CombineError::Missing(*signer))?;
            if self.verify_partial(*signer, partial).is_err() {
                culprits.push(*signer);
            }
            sum += partial.sigma;
        }
        if !culprits.is_empty() {
            return Err(CombineError::CheatingSigners { culprits });
        }
        let s = NonZero::from_scalar(sum).ok_or(CombineError::ZeroSignature)?;
        let signature = cggmp24::Signature::from_raw_parts(self.r, s).normalize_s();
        signature
            .verify(
                &self.child_public_key.into_inner(),
                &cggmp24::PrehashedDataToSign::from_scalar(self.m),
            )
            .map_err(|_| CombineError::InvalidSignature)?;
        Ok(EcdsaSignature::from_cggmp(&signature))
    }
}

/// `ρ`: a nonzero scalar from SHA-256 over the length-prefixed transcript, expanded to 512 bits
/// and reduced modulo the order (bias below 2⁻²⁵⁶); a zero result (probability 2⁻²⁵⁶) moves on to
/// the next counter value.
fn rerandomizer(
    key_id: KeyId,
    presignature_id: PresignatureId,
    gamma: &Point<Curve>,
    path: &DerivationPath,
    sighash: &NodeComputedSighash,
    signers: &SignerSet,
    entropy: &[&SignerEntropy],
) -> NonZero<Scalar<Curve>> {
    let mut h = Sha256::new();
    put(&mut h, RHO_DOMAIN);
    put(&mut h, key_id.as_bytes());
    put(&mut h, presignature_id.as_bytes());
    put(&mut h, &gamma.to_bytes(true));
    let path_bytes: Vec<u8> = path
        .indices()
        .iter()
        .flat_map(|i| i.to_be_bytes())
        .collect();
    put(&mut h, &path_bytes);
    put(&mut h, sighash.as_bytes());
    let signer_bytes: Vec<u8> = signers
        .parties()
        .iter()
        .flat_map(|p| p.to_be_bytes())
        .collect();
    put(&mut h, &signer_bytes);
    let entropy_bytes: Vec<u8> = entropy.iter().flat_map(|e| *e.as_bytes()).collect();
    put(&mut h, &entropy_bytes);
    let transcript = h.finalize();

    let mut counter: u32 = 0;
    loop {
        let mut wide = [0u8; 64];
        for (half, block) in wide.chunks_exact_mut(32).zip(0u8..) {
            let mut x = Sha256::new();
            put(&mut x, RHO_EXPAND_DOMAIN);
            put(&mut x, &transcript);
            put(&mut x, &counter.to_be_bytes());
            put(&mut x, &[block]);
            half.copy_from_slice(&x.finalize());
        }
        if let Some(rho) = NonZero::from_scalar(Scalar::from_be_bytes_mod_order(wide)) {
            return rho;
        }
        counter = counter.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_encoding_is_minimal() {
        let mut r = [0u8; 32];
        r[31] = 1;
        let mut s = [0u8; 32];
        s[0] = 0x80;
        let sig = EcdsaSignature { r, s };
        let der = sig.to_der();
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
    }
}
