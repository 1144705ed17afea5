//! Session descriptors and the cggmp `ExecutionId` derived from them.
//!
//! Every protocol run is described by a [`SessionDescriptor`]: what it is ([`ProtocolKind`]), the
//! 32-byte [`SessionId`] its initiator chose, the key it belongs to and the ordered list of
//! participants. All parties derive the same [`ExecutionIdBytes`] from it, and cggmp24 hashes that
//! into every Fiat–Shamir challenge, so messages of one session are worthless in any other. The
//! derivation is domain-separated by kind, so two sessions of different kinds never share an id
//! even if an initiator reused a session id.
//!
//! Refusing a session id seen before is the node's job (it keeps the used ids durably); the
//! descriptor only makes the binding.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::hex_array;

/// Party index: a node's position in the member list fixed at key generation.
pub type PartyIndex = u16;

/// The protocols a session can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolKind {
    /// Auxiliary info generation (Paillier keys, ring-Pedersen parameters): once per cluster.
    AuxInfo,
    /// Threshold key generation (t-of-n, HD enabled).
    Keygen,
    /// Presignature generation for one ordered signer set.
    Presign,
    /// Online signing with a re-randomized presignature (partials exchanged by the node).
    Sign,
    /// Full interactive signing, used when no presignature is available.
    InteractiveSign,
}

impl ProtocolKind {
    fn tag(self) -> u8 {
        match self {
            ProtocolKind::AuxInfo => 1,
            ProtocolKind::Keygen => 2,
            ProtocolKind::Presign => 3,
            ProtocolKind::Sign => 4,
            ProtocolKind::InteractiveSign => 5,
        }
    }

    fn needs_key(self) -> bool {
        !matches!(self, ProtocolKind::AuxInfo)
    }
}

impl fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolKind::AuxInfo => "aux_info",
            ProtocolKind::Keygen => "keygen",
            ProtocolKind::Presign => "presign",
            ProtocolKind::Sign => "sign",
            ProtocolKind::InteractiveSign => "interactive_sign",
        })
    }
}

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(with = "hex_array")] [u8; 32]);

        impl $name {
            /// Wraps 32 bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// Draws a fresh random id.
            pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// The 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = hex::FromHexError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text, &mut bytes)?;
                Ok(Self(bytes))
            }
        }
    };
}

id32!(
    /// The 32-byte id of one protocol session, chosen by its initiator. A node refuses an id it
    /// has seen before.
    SessionId
);

id32!(
    /// The id of a cluster key, fixed when its key generation is requested.
    KeyId
);

id32!(
    /// The id of a presignature: the session id of the presign session that produced it. Every
    /// signer of the set stores its own piece under the same id.
    PresignatureId
);

/// Why a descriptor or signer set was refused. Always caller misuse (or a peer proposing a
/// malformed session, when the descriptor came from the network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The party count is below 2.
    #[error("a session needs at least 2 parties, got {0}")]
    TooFewParties(u16),
    /// The threshold is not within `2..=n`.
    #[error("threshold {threshold} is not within 2..={n}")]
    InvalidThreshold {
        /// The requested threshold.
        threshold: u16,
        /// The party count.
        n: u16,
    },
    /// A participant appears twice.
    #[error("party {0} appears twice in the signer set")]
    DuplicateParty(PartyIndex),
    /// The signer set is empty.
    #[error("the signer set is empty")]
    EmptySignerSet,
    /// The descriptor's kind does not fit the operation it was handed to.
    #[error("expected a {expected} session, got a {found} session")]
    WrongKind {
        /// The kind the operation runs.
        expected: ProtocolKind,
        /// The kind in the descriptor.
        found: ProtocolKind,
    },
    /// The kind needs a key id and none was given, or the kind takes none and one was given.
    #[error("a {0} session has a key id where it must not, or lacks one where it must")]
    KeyIdMismatch(ProtocolKind),
    /// The participant list does not fit the kind.
    #[error("participants do not fit a {0} session")]
    InvalidParticipants(ProtocolKind),
}

/// An ordered set of signers, as party indices fixed at key generation. A presignature belongs to
/// exactly one such set, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<PartyIndex>", into = "Vec<PartyIndex>")]
pub struct SignerSet(Vec<PartyIndex>);

impl SignerSet {
    /// Builds a signer set; the order given is the order of the session. Indices must be distinct.
    pub fn new(signers: Vec<PartyIndex>) -> Result<Self, SessionError> {
        if signers.is_empty() {
            return Err(SessionError::EmptySignerSet);
        }
        for (pos, party) in signers.iter().enumerate() {
            if signers.iter().skip(pos + 1).any(|other| other == party) {
                return Err(SessionError::DuplicateParty(*party));
            }
        }
        Ok(Self(signers))
    }

    /// The party indices, in session order.
    pub fn parties(&self) -> &[PartyIndex] {
        &self.0
    }

    /// How many signers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a signer set is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The position (session-local index) of a party in this set.
    pub fn position_of(&self, party: PartyIndex) -> Option<u16> {
        self.0
            .iter()
            .position(|p| *p == party)
            .and_then(|pos| u16::try_from(pos).ok())
    }
}

impl TryFrom<Vec<PartyIndex>> for SignerSet {
    type Error = SessionError;

    fn try_from(signers: Vec<PartyIndex>) -> Result<Self, Self::Error> {
        Self::new(signers)
    }
}

impl From<SignerSet> for Vec<PartyIndex> {
    fn from(set: SignerSet) -> Self {
        set.0
    }
}

/// The bytes of a cggmp `ExecutionId`, derived from a [`SessionDescriptor`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecutionIdBytes([u8; 32]);

impl ExecutionIdBytes {
    /// The cggmp24 execution id borrowing these bytes.
    pub fn execution_id(&self) -> cggmp24::ExecutionId<'_> {
        cggmp24::ExecutionId::new(&self.0)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ExecutionIdBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionIdBytes({})", hex::encode(self.0))
    }
}

/// Everything that identifies one protocol run. The initiator sends it to the participants; each
/// checks it against its own state (known key, own membership, unused session id) before joining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawDescriptor", into = "RawDescriptor")]
pub struct SessionDescriptor {
    kind: ProtocolKind,
    session_id: SessionId,
    key_id: Option<KeyId>,
    threshold: Option<u16>,
    participants: SignerSet,
}

#[derive(Serialize, Deserialize)]
struct RawDescriptor {
    kind: ProtocolKind,
    session_id: SessionId,
    key_id: Option<KeyId>,
    threshold: Option<u16>,
    participants: Vec<PartyIndex>,
}

impl TryFrom<RawDescriptor> for SessionDescriptor {
    type Error = SessionError;

    fn try_from(raw: RawDescriptor) -> Result<Self, Self::Error> {
        let participants = SignerSet::new(raw.participants)?;
        let descriptor = SessionDescriptor {
            kind: raw.kind,
            session_id: raw.session_id,
            key_id: raw.key_id,
            threshold: raw.threshold,
            participants,
        };
        descriptor.validate()?;
        Ok(descriptor)
    }
}

impl From<SessionDescriptor> for RawDescriptor {
    fn from(d: SessionDescriptor) -> Self {
        RawDescriptor {
            kind: d.kind,
            session_id: d.session_id,
            key_id: d.key_id,
            threshold: d.threshold,
            participants: d.participants.into(),
        }
    }
}

const EXECUTION_ID_DOMAIN: &[u8] = b"strongroom/mpc/execution-id/v1";

impl SessionDescriptor {
    /// Aux info generation among all `n` members of the cluster.
    pub fn aux_info(session_id: SessionId, n: u16) -> Result<Self, SessionError> {
        let d = Self {
            kind: ProtocolKind::AuxInfo,
            session_id,
            key_id: None,
            threshold: None,
            participants: all_parties(n)?,
        };
        d.validate()?;
        Ok(d)
    }

    /// Threshold key generation of key `key_id` among all `n` members, `threshold` of whom sign.
    pub fn keygen(
        session_id: SessionId,
        key_id: KeyId,
        n: u16,
        threshold: u16,
    ) -> Result<Self, SessionError> {
        let d = Self {
            kind: ProtocolKind::Keygen,
            session_id,
            key_id: Some(key_id),
            threshold: Some(threshold),
            participants: all_parties(n)?,
        };
        d.validate()?;
        Ok(d)
    }

    /// A session among an ordered signer set of key `key_id`: presign, sign or interactive sign.
    pub fn signing(
        kind: ProtocolKind,
        session_id: SessionId,
        key_id: KeyId,
        signers: SignerSet,
    ) -> Result<Self, SessionError> {
        let d = Self {
            kind,
            session_id,
            key_id: Some(key_id),
            threshold: None,
            participants: signers,
        };
        d.validate()?;
        Ok(d)
    }

    fn validate(&self) -> Result<(), SessionError> {
        if self.kind.needs_key() != self.key_id.is_some() {
            return Err(SessionError::KeyIdMismatch(self.kind));
        }
        match self.kind {
            ProtocolKind::AuxInfo | ProtocolKind::Keygen => {
                let n = u16::try_from(self.participants.len())
                    .map_err(|_| SessionError::InvalidParticipants(self.kind))?;
                if n < 2 {
                    return Err(SessionError::TooFewParties(n));
                }
                if self.participants.parties().iter().copied().ne(0..n) {
                    return Err(SessionError::InvalidParticipants(self.kind));
                }
                match (self.kind, self.threshold) {
                    (ProtocolKind::AuxInfo, None) => Ok(()),
                    (ProtocolKind::Keygen, Some(t)) if (2..=n).contains(&t) => Ok(()),
                    (ProtocolKind::Keygen, Some(t)) => {
                        Err(SessionError::InvalidThreshold { threshold: t, n })
                    }
                    _ => Err(SessionError::InvalidParticipants(self.kind)),
                }
            }
            ProtocolKind::Presign | ProtocolKind::Sign | ProtocolKind::InteractiveSign => {
                if self.threshold.is_some() {
                    return Err(SessionError::InvalidParticipants(self.kind));
                }
                if self.participants.len() < 2 {
                    return Err(SessionError::TooFewParties(
                        u16::try_from(self.participants.len()).unwrap_or(u16::MAX),
                    ));
                }
                Ok(())
            }
        }
    }

    /// What the session runs.
    pub fn kind(&self) -> ProtocolKind {
        self.kind
    }

    /// The initiator's session id.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The key the session belongs to (absent for aux info, which serves every key).
    pub fn key_id(&self) -> Option<KeyId> {
        self.key_id
    }

    /// The threshold, for key generation.
    pub fn threshold(&self) -> Option<u16> {
        self.threshold
    }

    /// The ordered participants (all members for aux info and keygen, the signers otherwise).
    pub fn participants(&self) -> &SignerSet {
        &self.participants
    }

    /// Checks that this descriptor runs `expected`.
    pub fn expect_kind(&self, expected: ProtocolKind) -> Result<(), SessionError> {
        if self.kind == expected {
            Ok(())
        } else {
            Err(SessionError::WrongKind {
                expected,
                found: self.kind,
            })
        }
    }

    /// The execution id every participant feeds to cggmp24: SHA-256 over a domain tag, the kind,
    /// the session id, the key id, the threshold and the ordered participants, each field
    /// length-prefixed so that no two descriptors encode alike.
    pub fn execution_id(&self) -> ExecutionIdBytes {
        let mut h = Sha256::new();
        put(&mut h, EXECUTION_ID_DOMAIN);
        put(&mut h, &[self.kind.tag()]);
        put(&mut h, self.session_id.as_bytes());
        match &self.key_id {
            Some(key) => put(&mut h, key.as_bytes()),
            None => put(&mut h, &[]),
        }
        match self.threshold {
            Some(t) => put(&mut h, &t.to_be_bytes()),
            None => put(&mut h, &[]),
        }
        let parties: Vec<u8> = self
            .participants
            .parties()
            .iter()
            .flat_map(|p| p.to_be_bytes())
            .collect();
        put(&mut h, &parties);
        ExecutionIdBytes(h.finalize().into())
    }
}

fn all_parties(n: u16) -> Result<SignerSet, SessionError> {
    if n < 2 {
        return Err(SessionError::TooFewParties(n));
    }
    SignerSet::new((0..n).collect())
}

/// Feeds one length-prefixed field into a hash.
pub(crate) fn put(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_never_share_an_execution_id() {
        let sid = SessionId::from_bytes([7; 32]);
        let key = KeyId::from_bytes([9; 32]);
        let signers = SignerSet::new(vec![0, 2]).unwrap();
        let mut ids = vec![
            SessionDescriptor::aux_info(sid, 3).unwrap().execution_id(),
            SessionDescriptor::keygen(sid, key, 3, 2)
                .unwrap()
                .execution_id(),
        ];
        for kind in [
            ProtocolKind::Presign,
            ProtocolKind::Sign,
            ProtocolKind::InteractiveSign,
        ] {
            ids.push(
                SessionDescriptor::signing(kind, sid, key, signers.clone())
                    .unwrap()
                    .execution_id(),
            );
        }
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn signer_order_and_key_are_bound() {
        let sid = SessionId::from_bytes([1; 32]);
        let key = KeyId::from_bytes([2; 32]);
        let a = SessionDescriptor::signing(
            ProtocolKind::Presign,
            sid,
            key,
            SignerSet::new(vec![0, 1]).unwrap(),
        )
        .unwrap();
        let b = SessionDescriptor::signing(
            ProtocolKind::Presign,
            sid,
            key,
            SignerSet::new(vec![1, 0]).unwrap(),
        )
        .unwrap();
        let c = SessionDescriptor::signing(
            ProtocolKind::Presign,
            sid,
            KeyId::from_bytes([3; 32]),
            SignerSet::new(vec![0, 1]).unwrap(),
        )
        .unwrap();
        assert_ne!(a.execution_id(), b.execution_id());
        assert_ne!(a.execution_id(), c.execution_id());
    }

    #[test]
    fn malformed_descriptors_are_refused() {
        let sid = SessionId::from_bytes([1; 32]);
        let key = KeyId::from_bytes([2; 32]);
        assert_eq!(
            SessionDescriptor::keygen(sid, key, 3, 4),
            Err(SessionError::InvalidThreshold { threshold: 4, n: 3 })
        );
        assert_eq!(
            SessionDescriptor::aux_info(sid, 1),
            Err(SessionError::TooFewParties(1))
        );
        assert_eq!(
            SignerSet::new(vec![1, 1]),
            Err(SessionError::DuplicateParty(1))
        );
        let json = r#"{"kind":"aux_info","session_id":"0101010101010101010101010101010101010101010101010101010101010101","key_id":null,"threshold":null,"participants":[0,2]}"#;
        assert!(serde_json::from_str::<SessionDescriptor>(json).is_err());
    }

    #[test]
    fn descriptor_round_trips() {
        let d = SessionDescriptor::keygen(
            SessionId::from_bytes([4; 32]),
            KeyId::from_bytes([5; 32]),
            5,
            3,
        )
        .unwrap();
        let json = serde_json::to_string(&d).unwrap();
        let back: SessionDescriptor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.execution_id(), d.execution_id());
    }
}
