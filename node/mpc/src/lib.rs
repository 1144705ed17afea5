//! Threshold-ECDSA protocol sessions over cggmp24: messages in, messages out; no network, no database.
//!
//! # What is here
//!
//! * [`session`]: protocol kinds, session ids chosen by initiators, and the cggmp `ExecutionId`
//!   derived from them;
//! * [`primes`]: safe-prime pregeneration with progress, and the dev-only prime fixture;
//! * [`keys`]: aux info generation (once per cluster), threshold key generation with HD on, the
//!   secret aux info and key share, and the public key info the bitcoin layer builds the xpub from;
//! * [`presign`]: presignature generation for an ordered signer set of exactly `t` parties;
//! * [`online`]: re-randomized online signing with sign-time HD derivation, partial checks that
//!   name a cheating signer, and verified, low-S combination;
//! * [`interactive`]: full interactive signing, the fallback when no presignature is available;
//! * [`bench`](mod@bench): the bare library in one process, for throughput and latency comparisons.
//!
//! # How a transport plugs in
//!
//! Every protocol is an `async fn` generic over round-based's [`Mpc`]: the caller passes
//! `MpcParty::connected(delivery)`, where `delivery` is a ([`Stream`] of [`Incoming`], [`Sink`] of
//! [`Outgoing`]) pair carrying the message type of that protocol ([`msg`]). The transport routes
//! frames by session id, fills each `Incoming` with the **session-local index of the authenticated
//! peer** it arrived from (never a field of the payload) and whether it came as broadcast or
//! point-to-point, and serializes messages with serde_json or CBOR (cggmp types do not survive
//! bincode). Tests drive the same functions through round-based's simulation. The protocols are
//! CPU-heavy: run them on blocking threads.
//!
//! [`Stream`]: futures::Stream
//! [`Sink`]: futures::Sink
//!
//! # Contract and threat assumptions
//!
//! * All protocol messages must be authenticated and point-to-point messages encrypted (mTLS);
//!   reliable broadcast is enforced by cggmp's extra echo round, which stays on.
//! * Every session has a fresh session id; the node refuses ids it has seen. The execution id
//!   binds kind, session id, key id, threshold and the ordered participants.
//! * **Never reuse a presignature.** Issuing a partial consumes the secret piece by value, but its
//!   sealed bytes can be copied: the node marks it consumed durably before releasing the partial.
//! * The message signed is always a sighash the node computed itself from a transaction it
//!   validated ([`online::NodeComputedSighash`]).
//! * Up to `t − 1` signers may be malicious: a wrong partial is detected and its signer named;
//!   protocol aborts report the parties cggmp24 blamed.
//! * cggmp24 does not run in constant time (its authors consider timing attacks out of scope).
//!
//! # Zeroization
//!
//! Secret scalars (key share, presignature pieces, intermediate `k̃ᵢ′`, `χ̃ᵢ′`) are wiped on drop,
//! and sealed encodings are returned in wiped buffers. Not wiped: the Paillier primes and other
//! `rug`/GMP integers in primes, aux info and key shares (GMP offers no way to clear limbs, and
//! cggmp24 stores them as plain integers), copies the compiler makes of `Copy` scalars on the
//! stack, and buffers the serializers allocate internally while decoding.

pub mod bench;
mod blame;
mod codec;
pub mod hd;
pub mod interactive;
pub mod keys;
pub mod online;
pub mod presign;
pub mod primes;
pub mod session;

pub use codec::{DecodeError, EncodeError};
pub use round_based::{
    Delivery, Incoming, MessageDestination, MessageType, Mpc, MpcParty, Outgoing,
};

/// The curve: secp256k1.
pub type Curve = cggmp24::supported_curves::Secp256k1;
/// The cggmp24 security level: 128 bits (1536-bit safe primes, 3072-bit Paillier moduli).
pub type SecurityLevel = cggmp24::security_level::SecurityLevel128;
/// The hash function of the protocols: SHA-256.
pub type ProtocolDigest = sha2::Sha256;

/// The message type of each protocol, as the transport carries them.
pub mod msg {
    use super::{Curve, ProtocolDigest, SecurityLevel};

    /// Aux info generation.
    pub type AuxInfoMsg = cggmp24::key_refresh::msg::Msg<ProtocolDigest, SecurityLevel>;
    /// Threshold key generation.
    pub type KeygenMsg = cggmp24::keygen::ThresholdMsg<Curve, SecurityLevel, ProtocolDigest>;
    /// Presigning and interactive signing.
    pub type SigningMsg = cggmp24::signing::msg::Msg<Curve, ProtocolDigest>;
}
