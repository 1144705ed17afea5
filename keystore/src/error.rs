//! Errors. Each message names the cause and, where an operator can act, the fix.

use std::path::PathBuf;

use crate::blob::{BlobError, ObjectKind};
use crate::config::PinSource;

/// Errors of token access: loading the module, logging in, provisioning, rotation, counters
/// and the identity key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PKCS#11 module file does not exist.
    #[error(
        "PKCS#11 module {} not found: {hint}, or point the PKCS#11 module setting \
         (--pkcs11-module / STRONGROOM_PKCS11_MODULE) at your HSM's module",
        path.display()
    )]
    ModuleMissing {
        /// The configured module path.
        path: PathBuf,
        /// What to install.
        hint: String,
    },
    /// The module file exists but could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {}: {source} (is it a PKCS#11 library for this machine?)", path.display())]
    ModuleLoad {
        /// The configured module path.
        path: PathBuf,
        /// What the loader reported.
        #[source]
        source: cryptoki::error::Error,
    },
    /// The PIN could not be read from where the configuration says it is.
    #[error("cannot read the token PIN from {pin}: {reason}")]
    PinUnavailable {
        /// Where the PIN was to come from.
        pin: PinSource,
        /// Why it could not be read.
        reason: String,
    },
    /// No token with the configured label is present.
    #[error(
        "no token labelled '{label}' in PKCS#11 module {}; tokens present: {}. Set the token \
         label (--token-label / STRONGROOM_TOKEN_LABEL) to one of them, or initialise the token",
        module.display(),
        if present.is_empty() { "none".to_owned() } else { present.join(", ") }
    )]
    TokenNotFound {
        /// The configured label.
        label: String,
        /// The module searched.
        module: PathBuf,
        /// Labels of the initialised tokens that are present.
        present: Vec<String>,
    },
    /// More than one token carries the configured label.
    #[error("{count} tokens are labelled '{label}': give each token a unique label")]
    TokenAmbiguous {
        /// The configured label.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },
    /// The token rejected the PIN.
    #[error(
        "cannot log in to token '{token}': PIN incorrect (PIN read from {pin}; correct it there)"
    )]
    PinIncorrect {
        /// Token label.
        token: String,
        /// Where the PIN came from.
        pin: PinSource,
    },
    /// The token's user PIN is locked.
    #[error(
        "cannot log in to token '{token}': the user PIN is locked; unlock it with the token's security officer PIN"
    )]
    PinLocked {
        /// Token label.
        token: String,
    },
    /// The token does not offer a mechanism strongroom needs.
    #[error(
        "token '{token}' does not support mechanism {mechanism}, which strongroom needs; use a token that does"
    )]
    MechanismMissing {
        /// Token label.
        token: String,
        /// The mechanism's PKCS#11 name.
        mechanism: String,
    },
    /// The token has not been provisioned (a KEK or the identity key is missing).
    #[error("token '{token}' has no {missing}: run `strongroom keystore init` to provision it")]
    NotProvisioned {
        /// Token label.
        token: String,
        /// What is missing.
        missing: &'static str,
    },
    /// A label and id that must name exactly one object name several.
    #[error(
        "token '{token}' holds {count} objects labelled '{label}' with the same id; remove the duplicates"
    )]
    DuplicateObject {
        /// Token label.
        token: String,
        /// Object label.
        label: String,
        /// How many objects matched.
        count: usize,
    },
    /// The token answered an HMAC of the wrong length.
    #[error("token '{token}' answered an HMAC-SHA256 of {len} bytes, not 32")]
    BadHmacLength {
        /// Token label.
        token: String,
        /// The length it answered.
        len: usize,
    },
    /// A KEK version that the token does not hold was named.
    #[error("token '{token}' holds no KEK version {version}")]
    UnknownKek {
        /// Token label.
        token: String,
        /// The requested version.
        version: u32,
    },
    /// The KEK version counter is at its maximum.
    #[error("token '{token}' has used every KEK version number; provision a new token")]
    KekVersionsExhausted {
        /// Token label.
        token: String,
    },
    /// The current KEK cannot be retired.
    #[error("KEK version {version} is the current one and cannot be retired; rotate first")]
    RetireCurrentKek {
        /// The requested version.
        version: u32,
    },
    /// A counter name outside `[a-z0-9._-]{1,64}`.
    #[error(
        "invalid counter name '{name}': use 1 to 64 characters from a-z, 0-9, '.', '_' and '-'"
    )]
    CounterName {
        /// The rejected name.
        name: String,
    },
    /// A counter reached `u64::MAX`.
    #[error("counter '{name}' cannot be incremented past {}", u64::MAX)]
    CounterOverflow {
        /// Counter name.
        name: String,
    },
    /// A counter object holds something other than an 8-byte value.
    #[error("counter '{name}' on token '{token}' is corrupt (its value is not 8 bytes)")]
    CounterCorrupt {
        /// Token label.
        token: String,
        /// Counter name.
        name: String,
    },
    /// The identity public key read from the token is not an uncompressed P-256 point.
    #[error("identity public key on token '{token}' is not an uncompressed P-256 point")]
    BadPublicKey {
        /// Token label.
        token: String,
    },
    /// The token returned a signature of the wrong length.
    #[error("token '{token}' returned a malformed ECDSA signature")]
    BadSignature {
        /// Token label.
        token: String,
    },
    /// Software cryptography failed where it cannot fail for valid input: a bug.
    #[error("{operation} failed unexpectedly; please report this as a bug")]
    Crypto {
        /// What was being done.
        operation: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// A thread panicked while it held the token session; the session state is unknown.
    #[error("a thread panicked while using token '{token}'; restart the process")]
    Poisoned {
        /// Token label.
        token: String,
    },
    /// A PKCS#11 call failed.
    #[error("token '{token}': {operation} failed: {source}")]
    Pkcs11 {
        /// Token label.
        token: String,
        /// What was being done.
        operation: &'static str,
        /// The PKCS#11 error.
        #[source]
        source: cryptoki::error::Error,
    },
}

/// Errors of [`crate::Token::seal`]. A seal error never leaves a partial blob behind.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A header field given by the caller is outside the format's limits.
    #[error("cannot seal: {0}")]
    InvalidField(#[source] BlobError),
    /// The plaintext is larger than a blob may carry.
    #[error("cannot seal {len} bytes: a sealed blob carries at most {max} bytes")]
    PayloadTooLarge {
        /// Plaintext length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token failed.
    #[error(transparent)]
    Token(#[from] Error),
}

/// Errors of [`crate::Token::unseal`] and [`crate::Token::reseal`]. None of them returns data.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// The blob is not well-formed (truncated, bad magic, unknown version, suite or kind).
    #[error(transparent)]
    Malformed(#[from] BlobError),
    /// The blob belongs to another cluster.
    #[error("sealed blob belongs to cluster '{found}', expected '{expected}'")]
    WrongCluster {
        /// The cluster asked for.
        expected: String,
        /// The cluster in the blob.
        found: String,
    },
    /// The blob was sealed by (and for) another node.
    #[error("sealed blob belongs to node '{found}', expected '{expected}'")]
    WrongNode {
        /// The node asked for.
        expected: String,
        /// The node in the blob.
        found: String,
    },
    /// The blob holds another kind of object.
    #[error("sealed blob holds a {found}, expected a {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: ObjectKind,
        /// The kind in the blob.
        found: ObjectKind,
    },
    /// The blob holds another object of the expected kind.
    #[error("sealed blob holds object {found}, expected {expected} (ids in hex)")]
    WrongObject {
        /// The object id asked for, in hex.
        expected: String,
        /// The object id in the blob, in hex.
        found: String,
    },
    /// The KEK named by the blob is not on this token.
    #[error(
        "sealed blob is protected by KEK '{label}' (version {version}), which token '{token}' \
         does not hold: the KEK was retired before this blob was re-sealed, or the blob comes \
         from another token"
    )]
    UnknownKek {
        /// Token label.
        token: String,
        /// KEK label in the blob.
        label: String,
        /// KEK version in the blob.
        version: u32,
    },
    /// The token refused to decrypt the data key: the header was altered, or the blob was
    /// sealed under a different key with the same label.
    #[error(
        "sealed blob failed authentication: the token rejected its data key (header altered or foreign blob)"
    )]
    DataKeyRejected,
    /// The payload failed authentication: the payload or the header was altered.
    #[error("sealed blob failed authentication: payload altered")]
    PayloadRejected,
    /// The token failed for a reason unrelated to the blob.
    #[error(transparent)]
    Token(#[from] Error),
    /// Re-sealing under the current KEK failed.
    #[error("cannot re-seal: {0}")]
    Reseal(#[source] SealError),
}
