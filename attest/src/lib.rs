//! Attestation evidence of what a node runs, and its verification against a firmware profile.
//!
//! A node proves to each peer, after the mTLS handshake, what it runs: the SHA-256 of its
//! own binary, the firmware profile it runs under, the identity of its PKCS#11 token, its
//! node and cluster ids, the time, and the TLS exporter value of the connection, optionally
//! with a TPM quote over the boot PCRs. It signs these [`Claims`] with its token identity
//! key ([`Evidence::sign`]); the peer checks them with [`verify`] against its own
//! [`FirmwareProfile`] and admits the node to protocol sessions only when they pass.
//!
//! # Contract
//!
//! - **Pure.** No network, no token, no clock: the caller supplies the signer, the
//!   exporter value, the peer certificate's key and node id, and the time. The only I/O is
//!   reading files ([`file_sha256`], [`own_binary_sha256`], [`FirmwareProfile::load`]).
//! - **Channel-bound.** Evidence carries the exporter value of the connection it is sent
//!   over; a verifier compares it with its own exporter value, so evidence replayed on
//!   another connection is refused. Evidence is also refused when stale.
//! - **Signed by the certificate's key.** The signature is checked against the key of the
//!   peer's TLS certificate, which lives in the peer's token, and the node id against the
//!   certificate's: a node cannot present another node's evidence.
//! - **Versioned encoding.** The signed bytes start with a magic and a version; unknown
//!   versions are refused (the layout is documented on [`Evidence`]).
//! - **Named refusals.** Every mismatch is its own [`VerifyError`] variant naming the field
//!   ([`VerifyError::field`]) and both values, ready to be logged and audited.
//! - **Fail closed.** A profile with fields not yet filled in accepts nothing; the
//!   dangerous dev option to accept any binary loads only in a `dev` profile.
//!
//! # Threat assumptions
//!
//! Evidence is only as good as the key that signs it. A node whose token is in an
//! attacker's hands can sign any claims; the binary digest then only proves what an honest
//! node runs. The TPM quote, signed by an attestation key the profile enrolled, is what
//! speaks for the boot chain independently of the node's software. The quote check does
//! not validate the attestation key's endorsement-key certificate chain, the TPM clock, or
//! the event log: the enrolled key and the expected PCR values stand in for them.

mod check;
mod digest;
mod error;
mod evidence;
mod pattern;
mod profile;
mod tpm;
mod verify;

pub use check::{check_mechanisms, check_own_token, self_check};
pub use digest::{ParseDigestError, Sha256Digest, file_sha256, own_binary_sha256, profile_line};
pub use error::{
    DecodeError, DigestError, EncodeError, ProfileError, SelfCheckError, SignError, TokenMismatch,
    TpmError, VerifyError,
};
pub use evidence::{
    CHANNEL_BINDING_LEN, Claims, EVIDENCE_MAGIC, EVIDENCE_VERSION, EXPORTER_LABEL, Evidence,
    EvidenceSigner, MAX_BYTES_LEN, MAX_PCRS, MAX_TEXT_LEN, PcrValue, TokenIdentity, TpmQuote,
};
pub use profile::{
    BinaryPolicy, FirmwareProfile, Freshness, MAX_PCR_INDEX, PROFILE_VERSION, ProfileMode,
    TokenPattern, TpmPolicy,
};
pub use tpm::{QuoteInfo, parse_quote, parse_signature, verify_quote};
pub use verify::{VerifiedEvidence, VerifyContext, verify, verify_evidence};
