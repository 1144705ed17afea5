//! The node's audit key: an HMAC-SHA256 key that turns sensitive values into fingerprints.
//!
//! A sensitive value (a PSBT, a memo, a client's network address) never enters the log in
//! clear. The entry carries `HMAC-SHA256(audit key, message)` instead, where
//!
//! ```text
//! message = "strongroom/audit-hmac/v1" 0x00 || u32 BE length || label || value
//! ```
//!
//! and `label` is the name the value is recorded under. Whoever holds the key (the node,
//! through its token) can answer "does this log mention this PSBT?" by computing the same HMAC;
//! whoever reads only the log learns nothing about the value, even a guessable one such as an
//! IP address, because guessing needs the key. The label keeps a value recorded under one name
//! from matching the same bytes recorded under another.

use std::fmt;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::{Zeroize as _, Zeroizing};

/// Domain-separation prefix of every HMAC input.
pub const HMAC_DOMAIN: &[u8] = b"strongroom/audit-hmac/v1\0";

/// The HMAC key could not be used. The key's holder (in production the node's token) is at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit HMAC key failed: {0}")]
pub struct AuditKeyError(pub String);

/// A key that computes HMAC-SHA256. In production it lives in the node's token and never
/// leaves it; [`SoftwareAuditKey`] holds one in memory for tests and tools.
pub trait AuditKey {
    /// `HMAC-SHA256(key, message)`.
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], AuditKeyError>;

    /// The fingerprint of a sensitive `value` recorded under `label` (see the
    /// [module docs](self) for the exact input).
    fn hmac(&self, label: &str, value: &[u8]) -> Result<[u8; 32], AuditKeyError> {
        self.mac(&hmac_input(label, value)?)
    }
}

/// The exact bytes [`AuditKey::hmac`] authenticates. The input is wiped on drop: it holds the
/// sensitive value.
pub fn hmac_input(label: &str, value: &[u8]) -> Result<Zeroizing<Vec<u8>>, AuditKeyError> {
    let len = u32::try_from(label.len())
        .map_err(|_| AuditKeyError(format!("label of {} bytes is too long", label.len())))?;
    let mut input = Zeroizing::new(Vec::with_capacity(
        HMAC_DOMAIN.len() + 4 + label.len() + value.len(),
    ));
    input.extend_from_slice(HMAC_DOMAIN);
    input.extend_from_slice(&len.to_be_bytes());
    input.extend_from_slice(label.as_bytes());
    input.extend_from_slice(value);
    Ok(input)
}

/// An audit key held in process memory: for tests and offline tools, never for a node in
/// production (whose key stays in its token). Wiped on drop; prints as `<redacted>`.
pub struct SoftwareAuditKey {
    key: Zeroizing<[u8; 32]>,
}

impl SoftwareAuditKey {
    /// A key from 32 secret bytes; `bytes` is wiped.
    pub fn new(mut bytes: [u8; 32]) -> Self {
        let key = Zeroizing::new(bytes);
        bytes.zeroize();
        SoftwareAuditKey { key }
    }
}

impl fmt::Debug for SoftwareAuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SoftwareAuditKey(<redacted>)")
    }
}

impl AuditKey for SoftwareAuditKey {
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], AuditKeyError> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.key.as_slice())
            .map_err(|e| AuditKeyError(e.to_string()))?;
        mac.update(message);
        Ok(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_through_the_raw_mac() {
        // RFC 4231 test case 2: key "Jefe" (zero-padded to 32 bytes changes nothing for HMAC,
        // whose key block is 64 bytes).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = SoftwareAuditKey::new(key)
            .mac(b"what do ya want for nothing?")
            .unwrap();
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn labels_separate_equal_values() {
        let key = SoftwareAuditKey::new([7; 32]);
        let a = key.hmac("memo", b"payroll").unwrap();
        assert_eq!(a, key.hmac("memo", b"payroll").unwrap());
        assert_ne!(a, key.hmac("psbt", b"payroll").unwrap());
        assert_ne!(
            a,
            SoftwareAuditKey::new([8; 32])
                .hmac("memo", b"payroll")
                .unwrap()
        );
        // The label's length is part of the input: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(key.hmac("ab", b"c").unwrap(), key.hmac("a", b"bc").unwrap());
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let text = format!("{:?}", SoftwareAuditKey::new([0xab; 32]));
        assert_eq!(text, "SoftwareAuditKey(<redacted>)");
    }
}
