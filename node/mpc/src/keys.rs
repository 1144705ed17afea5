//! Aux info generation, threshold key generation and the secret objects they produce.
//!
//! Aux info (each party's Paillier key and ring-Pedersen parameters) is generated once per
//! cluster by all `n` members and serves every key. Key generation is cggmp24's threshold DKG,
//! t-of-n, with HD derivation enabled (a chain code is generated jointly); its output is completed
//! with the aux info into a [`SecretKeyShare`].

use std::fmt;

use cggmp24::generic_ec::Point;
use cggmp24::hd_wallet::ExtendedPublicKey;
use cggmp24::key_share::AnyKeyShare as _;
use cggmp24::progress::Tracer;
use cggmp24::round_based::Mpc;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::blame::{Fault, classify};
use crate::codec::{self, DecodeError, EncodeError, hex_array};
use crate::hd::{self, DerivationPath};
use crate::primes::{Primes, PrimesError, PrimesOrigin, PrimesPolicy};
use crate::session::{KeyId, PartyIndex, ProtocolKind, SessionDescriptor, SessionError};
use crate::{Curve, SecurityLevel, msg};

const AUX_FORMAT: &str = "strongroom-aux-info";
const AUX_VERSION: u32 = 1;
const SHARE_FORMAT: &str = "strongroom-key-share";
const SHARE_VERSION: u32 = 1;

/// One party's aux info. Secret: it holds the party's Paillier primes, which are `rug` integers
/// and cannot be wiped from memory (see the crate docs). Never printed.
pub struct SecretAuxInfo {
    index: PartyIndex,
    primes_origin: PrimesOrigin,
    inner: cggmp24::key_share::AuxInfo<SecurityLevel>,
}

impl fmt::Debug for SecretAuxInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretAuxInfo")
            .field("index", &self.index)
            .field("n", &self.n())
            .field("primes_origin", &self.primes_origin)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SealedAux {
    index: PartyIndex,
    primes_origin: PrimesOrigin,
    aux: cggmp24::key_share::AuxInfo<SecurityLevel>,
}

impl SecretAuxInfo {
    /// This party's index.
    pub fn index(&self) -> PartyIndex {
        self.index
    }

    /// The number of parties the aux info was generated for.
    pub fn n(&self) -> u16 {
        u16::try_from(self.inner.N.len()).unwrap_or(u16::MAX)
    }

    /// The origin of the primes this party used.
    pub fn primes_origin(&self) -> PrimesOrigin {
        self.primes_origin
    }

    /// Checks the origin of this party's primes against the node's policy (a node outside dev
    /// mode refuses aux info built from fixture primes, also when it loads it from storage).
    pub fn check(&self, policy: PrimesPolicy) -> Result<(), PrimesError> {
        match (self.primes_origin, policy) {
            (PrimesOrigin::DangerousDevFixture { index }, PrimesPolicy::ProductionOnly) => {
                Err(PrimesError::DevFixtureRefused { index })
            }
            _ => Ok(()),
        }
    }

    /// Encodes the aux info for sealing (versioned CBOR). The buffer is wiped on drop.
    pub fn to_sealable_bytes(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        codec::encode(
            AUX_FORMAT,
            AUX_VERSION,
            &SealedAuxRef {
                index: self.index,
                primes_origin: self.primes_origin,
                aux: &self.inner,
            },
        )
    }

    /// Decodes aux info produced by [`SecretAuxInfo::to_sealable_bytes`]; cggmp24 re-validates it.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let sealed: SealedAux = codec::decode(AUX_FORMAT, AUX_VERSION, bytes)?;
        Ok(Self {
            index: sealed.index,
            primes_origin: sealed.primes_origin,
            inner: sealed.aux,
        })
    }
}

#[derive(Serialize)]
struct SealedAuxRef<'a> {
    index: PartyIndex,
    primes_origin: PrimesOrigin,
    aux: &'a cggmp24::key_share::AuxInfo<SecurityLevel>,
}

/// Why aux info generation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuxInfoError {
    /// Caller misuse: the descriptor is not an aux info session.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Caller misuse: this party's index is not among the participants.
    #[error("party {0} is not a participant of this aux info session")]
    NotAParticipant(PartyIndex),
    /// Caller misuse (configuration): the primes are refused by the node's policy.
    #[error(transparent)]
    Primes(#[from] PrimesError),
    /// A peer misbehaved: the listed parties were blamed by cggmp24 (empty when it named none).
    #[error("aux info generation aborted by misbehaving peer(s) {culprits:?}: {detail}")]
    PeerMisbehaved {
        /// Party indices of the blamed peers.
        culprits: Vec<PartyIndex>,
        /// cggmp24's account of the failure.
        detail: String,
    },
    /// The transport failed, or a peer's message could not be routed (wrong round, duplicate).
    #[error("aux info generation failed in message delivery: {0}")]
    Transport(String),
    /// Bug in cggmp24 or in this crate.
    #[error("bug: aux info generation failed: {0}")]
    Bug(String),
}

/// Runs aux info generation as party `my_index` of the `n` members named by `session`.
///
/// `party` is the round-based connection for this session (the transport's adapter in a node, a
/// simulation in tests). `policy` decides whether fixture primes are acceptable. Reliable
/// broadcast is enforced (an extra echo round), because point-to-point links do not give it.
pub async fn run_aux_info<M>(
    session: &SessionDescriptor,
    my_index: PartyIndex,
    primes: Primes,
    policy: PrimesPolicy,
    rng: &mut (impl RngCore + CryptoRng),
    party: M,
    tracer: Option<&mut dyn Tracer>,
) -> Result<SecretAuxInfo, AuxInfoError>
where
    M: Mpc<ProtocolMessage = msg::AuxInfoMsg>,
{
    session.expect_kind(ProtocolKind::AuxInfo)?;
    primes.check(policy)?;
    let parties = session.participants().parties();
    let n = u16::try_from(parties.len()).map_err(|_| AuxInfoError::NotAParticipant(my_index))?;
    if my_index >= n {
        return Err(AuxInfoError::NotAParticipant(my_index));
    }
    let primes_origin = primes.origin();
    let eid = session.execution_id();
    let mut builder =
        cggmp24::aux_info_gen(eid.execution_id(), my_index, n, primes.into_pregenerated())
            .enforce_reliable_broadcast(true);
    if let Some(tracer) = tracer {
        builder = builder.set_progress_tracer(tracer);
    }
    let inner = builder.start(rng, party).await.map_err(|err| {
        let (fault, detail) = classify(&err);
        match fault {
            // Aux info runs among all members, so session-local indices are party indices.
            Fault::Peers(culprits) => AuxInfoError::PeerMisbehaved { culprits, detail },
            Fault::Transport => AuxInfoError::Transport(detail),
            Fault::Caller | Fault::Bug => AuxInfoError::Bug(detail),
        }
    })?;
    Ok(SecretAuxInfo {
        index: my_index,
        primes_origin,
        inner,
    })
}

/// A party's share of a cluster key, completed with its aux info: what presigning and signing
/// need. Secret; never printed. The share scalar is wiped on drop; the Paillier primes of the
/// aux info are `rug` integers and are not.
pub struct SecretKeyShare {
    key_id: KeyId,
    inner: cggmp24::KeyShare<Curve, SecurityLevel>,
}

impl fmt::Debug for SecretKeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeyShare")
            .field("key_id", &self.key_id)
            .field("index", &self.index())
            .field("threshold", &self.threshold())
            .field("n", &self.n())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SealedShare {
    key_id: KeyId,
    share: cggmp24::KeyShare<Curve, SecurityLevel>,
}

#[derive(Serialize)]
struct SealedShareRef<'a> {
    key_id: KeyId,
    share: &'a cggmp24::KeyShare<Curve, SecurityLevel>,
}

/// Why a key share could not be assembled from its parts.
#[derive(Debug, thiserror::Error)]
pub enum KeyShareError {
    /// Caller misuse: the aux info belongs to another party or another cluster size.
    #[error("the key share and aux info do not fit together: {0}")]
    Inconsistent(String),
    /// Caller misuse (configuration): the key was generated without HD derivation.
    #[error("the key share has no chain code; keys of this appliance are generated with HD on")]
    NoChainCode,
}

impl SecretKeyShare {
    /// Completes a key generation output with this party's aux info (cggmp24's
    /// `KeyShare::from_parts`, which checks that they fit together).
    pub fn from_parts(
        key_id: KeyId,
        core: cggmp24::IncompleteKeyShare<Curve>,
        aux: &SecretAuxInfo,
    ) -> Result<Self, KeyShareError> {
        if core.chain_code.is_none() {
            return Err(KeyShareError::NoChainCode);
        }
        let inner = cggmp24::KeyShare::from_parts((core, aux.inner.clone()))
            .map_err(|err| KeyShareError::Inconsistent(err.error().to_string()))?;
        Ok(Self { key_id, inner })
    }

    /// The key this share belongs to.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// This party's index.
    pub fn index(&self) -> PartyIndex {
        self.inner.core.i
    }

    /// The number of signers needed.
    pub fn threshold(&self) -> u16 {
        self.inner.min_signers()
    }

    /// The number of key holders.
    pub fn n(&self) -> u16 {
        self.inner.n()
    }

    /// The public side of the key.
    pub fn public_info(&self) -> PublicKeyInfo {
        let point: Point<Curve> = self.inner.core.shared_public_key.into_inner();
        let mut public_key = [0u8; 33];
        public_key.copy_from_slice(&point.to_bytes(true));
        PublicKeyInfo {
            key_id: self.key_id,
            threshold: self.threshold(),
            n: self.n(),
            public_key,
            // `from_parts` and deserialization refuse shares without a chain code.
            chain_code: self.inner.core.chain_code.unwrap_or_default(),
        }
    }

    pub(crate) fn inner(&self) -> &cggmp24::KeyShare<Curve, SecurityLevel> {
        &self.inner
    }

    /// Encodes the share for sealing (versioned CBOR). The buffer is wiped on drop.
    pub fn to_sealable_bytes(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        codec::encode(
            SHARE_FORMAT,
            SHARE_VERSION,
            &SealedShareRef {
                key_id: self.key_id,
                share: &self.inner,
            },
        )
    }

    /// Decodes a share produced by [`SecretKeyShare::to_sealable_bytes`]; cggmp24 re-validates it.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let sealed: SealedShare = codec::decode(SHARE_FORMAT, SHARE_VERSION, bytes)?;
        if sealed.share.core.chain_code.is_none() {
            return Err(DecodeError::Invalid {
                format: SHARE_FORMAT,
                detail: "the key share has no chain code".into(),
            });
        }
        Ok(Self {
            key_id: sealed.key_id,
            inner: sealed.share,
        })
    }
}

/// The public side of a cluster key: enough for the bitcoin layer to build the xpub (depth 0,
/// parent fingerprint and child number zero) and the master fingerprint
/// (HASH160 of `public_key`, first four bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// The key's id.
    pub key_id: KeyId,
    /// Signers needed.
    pub threshold: u16,
    /// Key holders.
    pub n: u16,
    /// The shared public key, compressed SEC1 (33 bytes).
    #[serde(with = "hex_array")]
    pub public_key: [u8; 33],
    /// The BIP-32 chain code generated jointly at key generation.
    #[serde(with = "hex_array")]
    pub chain_code: [u8; 32],
}

/// Why a child key could not be derived.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    /// Caller misuse: `public_key` is not a valid compressed secp256k1 point.
    #[error("the key's public key is not a valid secp256k1 point")]
    InvalidPublicKey,
    /// The derived child is the point at infinity (probability about 2⁻²⁵⁶): use another path.
    #[error("path {0} derives the point at infinity; use another index")]
    InfiniteChild(DerivationPath),
}

impl PublicKeyInfo {
    pub(crate) fn extended_public_key(&self) -> Result<ExtendedPublicKey<Curve>, DeriveError> {
        let public_key = Point::<Curve>::from_bytes(self.public_key)
            .map_err(|_| DeriveError::InvalidPublicKey)?;
        if public_key.is_zero() {
            return Err(DeriveError::InvalidPublicKey);
        }
        Ok(ExtendedPublicKey {
            public_key,
            chain_code: self.chain_code,
        })
    }

    pub(crate) fn derive(&self, path: &DerivationPath) -> Result<hd::Derived, DeriveError> {
        hd::derive(&self.extended_public_key()?, path)
            .ok_or_else(|| DeriveError::InfiniteChild(path.clone()))
    }

    /// The compressed public key of the child at `path`.
    pub fn child_public_key(&self, path: &DerivationPath) -> Result<[u8; 33], DeriveError> {
        let derived = self.derive(path)?;
        let mut out = [0u8; 33];
        out.copy_from_slice(&derived.public_key.to_bytes(true));
        Ok(out)
    }
}

/// Why key generation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// Caller misuse: the descriptor is not a key generation session.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Caller misuse: the aux info was generated for another cluster size than the session's.
    #[error("aux info is for {aux_n} parties, the session has {session_n}")]
    AuxInfoMismatch {
        /// Parties of the aux info.
        aux_n: u16,
        /// Parties of the session.
        session_n: u16,
    },
    /// A peer misbehaved: the listed parties were blamed by cggmp24 (empty when it named none).
    #[error("key generation aborted by misbehaving peer(s) {culprits:?}: {detail}")]
    PeerMisbehaved {
        /// Party indices of the blamed peers.
        culprits: Vec<PartyIndex>,
        /// cggmp24's account of the failure.
        detail: String,
    },
    /// The transport failed, or a peer's message could not be routed (wrong round, duplicate).
    #[error("key generation failed in message delivery: {0}")]
    Transport(String),
    /// The output did not fit the aux info; the aux info was checked beforehand, so a bug.
    #[error("bug: key generation output does not fit the aux info: {0}")]
    Assemble(#[from] KeyShareError),
    /// Bug in cggmp24 or in this crate.
    #[error("bug: key generation failed: {0}")]
    Bug(String),
}

/// The result of key generation on one party.
#[derive(Debug)]
pub struct GeneratedKey {
    /// This party's secret share, completed with its aux info.
    pub share: SecretKeyShare,
    /// The public side of the key (the same on every party).
    pub public: PublicKeyInfo,
}

/// Runs threshold key generation (HD enabled) as the party that owns `aux`.
///
/// The session names the key id, `n` and the threshold. Reliable broadcast is enforced.
pub async fn run_keygen<M>(
    session: &SessionDescriptor,
    aux: &SecretAuxInfo,
    rng: &mut (impl RngCore + CryptoRng),
    party: M,
    tracer: Option<&mut dyn Tracer>,
) -> Result<GeneratedKey, KeygenError>
where
    M: Mpc<ProtocolMessage = msg::KeygenMsg>,
{
    session.expect_kind(ProtocolKind::Keygen)?;
    let (Some(key_id), Some(threshold)) = (session.key_id(), session.threshold()) else {
        return Err(SessionError::KeyIdMismatch(ProtocolKind::Keygen).into());
    };
    let session_n = u16::try_from(session.participants().len()).unwrap_or(u16::MAX);
    if aux.n() != session_n || aux.index() >= session_n {
        return Err(KeygenError::AuxInfoMismatch {
            aux_n: aux.n(),
            session_n,
        });
    }
    let eid = session.execution_id();
    let mut builder = cggmp24::keygen::<Curve>(eid.execution_id(), aux.index(), session_n)
        .set_threshold(threshold)
        .set_security_level::<SecurityLevel>()
        .enforce_reliable_broadcast(true)
        .hd_wallet(true);
    if let Some(tracer) = tracer {
        builder = builder.set_progress_tracer(tracer);
    }
    let core = builder.start(rng, party).await.map_err(|err| {
        let (fault, detail) = classify(&err);
        match fault {
            Fault::Peers(culprits) => KeygenError::PeerMisbehaved { culprits, detail },
            Fault::Transport => KeygenError::Transport(detail),
            Fault::Caller | Fault::Bug => KeygenError::Bug(detail),
        }
    })?;
    let share = SecretKeyShare::from_parts(key_id, core, aux)?;
    let public = share.public_info();
    Ok(GeneratedKey { share, public })
}
