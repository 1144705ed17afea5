//! Secrets sealed by a PKCS#11 token, the token-held identity key, and a rustls signer that
//! signs inside the token.
//!
//! # Contract
//!
//! - [`Token::provision`] creates, on a token, a non-extractable AES-256 key-encryption key
//!   (KEK, label `strongroom-kek-v1`) and a non-extractable P-256 identity key pair
//!   (`strongroom-identity`). [`Token::open`] only finds them.
//! - [`Token::seal`] encrypts a payload with a fresh 256-bit data key (AES-256-GCM in
//!   software) and has the token encrypt the data key under the current KEK (`CKM_AES_GCM`).
//!   The blob header names the cluster, node, object kind, object id and a caller-chosen
//!   generation; all of it is authenticated. [`Token::unseal`] refuses a blob presented as
//!   another object, node or cluster, from an unknown format version, suite or KEK, or altered
//!   in any byte, and never returns data in that case.
//! - KEKs rotate ([`Token::rotate_kek`]); old versions keep opening old blobs until they are
//!   re-sealed ([`Token::reseal`]) and the old version is retired ([`Token::retire_kek`]).
//! - Monotonic counters live in the token ([`Token::counter_increment`]), outside any disk an
//!   attacker could roll back.
//! - The identity key signs inside the token: TLS handshakes through
//!   [`rustls::sign::SigningKey`], certificates and requests through [`rcgen::SigningKey`].
//!
//! # Threat assumptions
//!
//! The token protects secrets at rest: a copy of the disk without the token (and its PIN)
//! opens nothing. Anyone who can use the token with its PIN can unseal; the PIN is the
//! boundary. Authenticated encryption does not stop rollback: an attacker who can write the
//! disk can put back an older blob of the same object, so callers compare the generation of
//! every unsealed blob with a counter kept in the token.
//!
//! SoftHSM 2.6.1 is fragile under concurrent use: every [`Token`] keeps one session for the
//! life of the process and serialises its calls on it, object creation is serialised across
//! all tokens of a module, and a token should be used by one process at a time.
//!
//! # What zeroization cannot promise
//!
//! Unsealed payloads ([`SecretBytes`]), data keys and PINs are wiped when dropped. Copies
//! the compiler or allocator made earlier (moves, reallocations), ring's expanded AES key
//! schedule, buffers inside the PKCS#11 module, and pages swapped to disk are beyond reach;
//! run with swap off or encrypted, and core dumps disabled.

mod audit_key;
mod blob;
mod config;
mod error;
mod identity;
mod module;
mod seal;
mod secret;
mod token;

pub use audit_key::AUDIT_KEY_LABEL;
pub use blob::{
    BlobError, DATA_KEY_LEN, FORMAT_VERSION, Header, MAGIC, MAX_KEK_LABEL_LEN, MAX_NAME_LEN,
    MAX_OBJECT_ID_LEN, MAX_PAYLOAD_LEN, NONCE_LEN, ObjectKind, ProtectedKey, SealedBlob, Suite,
    TAG_LEN, WRAP_AAD_DOMAIN,
};
pub use config::{PinSource, TokenConfig};
pub use error::{Error, SealError, UnsealError};
pub use identity::{EcdsaSignature, IDENTITY_LABEL, IdentityKey, IdentityPublicKey};
pub use seal::{ObjectRef, Unsealed};
pub use secret::SecretBytes;
pub use token::{
    COUNTER_LABEL_PREFIX, KEK_LABEL_PREFIX, KekAttributes, ProvisionReport, Token, TokenInfo,
    TokenStatus, kek_label,
};
