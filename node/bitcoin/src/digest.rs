//! The request digest: what votes and approvals sign.

use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::{Hash, HashEngine, sha256};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{Network, Txid};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::intake::InputToSign;

/// Domain tag of the request digest.
pub const DIGEST_DOMAIN: &[u8] = b"strongroom/sign-request-digest";
/// Version of the digest encoding.
pub const DIGEST_VERSION: u8 = 1;

/// SHA-256 digest binding a sign request: PSBT, key id, and every input and path signed.
///
/// It is SHA-256 over this encoding (integers big-endian, every variable-length field
/// prefixed by its length, so no two requests share an encoding):
///
/// ```text
/// "strongroom/sign-request-digest"   30-byte domain tag, preceded by its length (u8)
/// version                            u8, currently 1
/// network                            u8 length + Bitcoin Core name ("main", "regtest", …)
/// key id                             u64 length + UTF-8 bytes
/// txid                               32 bytes, internal byte order
/// psbt                               u64 length + the PSBT bytes exactly as received
/// count                              u32, number of inputs to sign
/// per input to sign, ascending:      u32 input index, u32 sighash type,
///                                    u8 path depth + u32 per step (BIP-32 child number,
///                                    hardened bit included), 32-byte BIP-143 sighash
/// ```
///
/// The full PSBT bytes are covered, not only the txid: the txid does not commit to the spent
/// amounts or the derivation paths, both of which change the signature. Covering the bytes as
/// received (not a re-serialization) means the same submitted PSBT always gives the same
/// digest, and any change to it gives another. The txid, paths and sighashes are also in the
/// PSBT; repeating them costs nothing and makes what is signed explicit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestDigest([u8; 32]);

impl RequestDigest {
    /// The digest bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Wraps digest bytes (as stored or received in a vote).
    pub fn from_bytes(bytes: [u8; 32]) -> RequestDigest {
        RequestDigest(bytes)
    }
}

impl fmt::Display for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_hex())
    }
}

impl fmt::Debug for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestDigest({self})")
    }
}

/// A request digest in text was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request digest: expected 64 hex digits ({0})")]
pub struct ParseDigestError(String);

impl FromStr for RequestDigest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <[u8; 32]>::from_hex(s)
            .map(RequestDigest)
            .map_err(|e| ParseDigestError(e.to_string()))
    }
}

impl Serialize for RequestDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The bytes the digest is taken over.
pub(crate) fn preimage(
    network: Network,
    key_id: &str,
    txid: &Txid,
    psbt: &[u8],
    to_sign: &[InputToSign],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(psbt.len() + 128 + to_sign.len() * 64);
    // Input counts and indices are bounded by the PSBT size limit, far below 2^32.
    let u32_len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.push(DIGEST_DOMAIN.len() as u8);
    out.extend_from_slice(DIGEST_DOMAIN);
    out.push(DIGEST_VERSION);
    let network = network.to_core_arg().as_bytes();
    out.push(network.len() as u8);
    out.extend_from_slice(network);
    out.extend_from_slice(&(key_id.len() as u64).to_be_bytes());
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(txid.as_byte_array());
    out.extend_from_slice(&(psbt.len() as u64).to_be_bytes());
    out.extend_from_slice(psbt);
    out.extend_from_slice(&u32_len(to_sign.len()));
    for input in to_sign {
        out.extend_from_slice(&u32_len(input.input_index));
        out.extend_from_slice(&input.sighash_type.to_u32().to_be_bytes());
        // Paths are at most 255 steps deep (checked at derivation).
        out.push(u8::try_from(input.path.len()).unwrap_or(u8::MAX));
        for step in &input.path {
            out.extend_from_slice(&u32::from(*step).to_be_bytes());
        }
        out.extend_from_slice(input.sighash.as_byte_array());
    }
    out
}

/// SHA-256 of [`preimage`].
pub(crate) fn request_digest(
    network: Network,
    key_id: &str,
    txid: &Txid,
    psbt: &[u8],
    to_sign: &[InputToSign],
) -> RequestDigest {
    let mut engine = sha256::Hash::engine();
    engine.input(&preimage(network, key_id, txid, psbt, to_sign));
    RequestDigest(sha256::Hash::from_engine(engine).to_byte_array())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hex::DisplayHex;
    use bitcoin::sighash::{EcdsaSighashType, SegwitV0Sighash};
    use std::str::FromStr;

    #[test]
    fn preimage_layout_is_pinned() {
        let to_sign = [InputToSign {
            input_index: 1,
            path: "m/0/5".parse().unwrap(),
            public_key: bitcoin::CompressedPublicKey::from_str(
                "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            )
            .unwrap(),
            sighash_type: EcdsaSighashType::All,
            sighash: SegwitV0Sighash::from_byte_array([0x22; 32]),
        }];
        let txid = Txid::from_byte_array([0x11; 32]);
        let bytes = preimage(Network::Regtest, "k", &txid, b"PSBT", &to_sign);
        let expected = [
            "1e",
            &b"strongroom/sign-request-digest".to_lower_hex_string(),
            "01",
            "07",
            &b"regtest".to_lower_hex_string(),
            "0000000000000001",
            "6b",
            &"11".repeat(32),
            "0000000000000004",
            "50534254",
            "00000001",
            "00000001",
            "00000001",
            "02",
            "00000000",
            "00000005",
            &"22".repeat(32),
        ]
        .concat();
        assert_eq!(bytes.to_lower_hex_string(), expected);
        assert_eq!(
            request_digest(Network::Regtest, "k", &txid, b"PSBT", &to_sign).to_string(),
            sha256::Hash::hash(&bytes).to_string()
        );
    }
}
