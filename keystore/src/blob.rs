//! The sealed-blob format: a pure encoder and parser, with no token access.
//!
//! ```text
//! blob    = header || payload
//! header  = magic "SRSB" (4)
//!           format version        u16
//!           suite                 u8
//!           KEK label             u8 length || UTF-8
//!           KEK version           u32
//!           protected data key    u8 IV length || IV || u8 length || ciphertext+tag
//!           payload nonce         12
//!           cluster id            u8 length || UTF-8
//!           node id               u8 length || UTF-8
//!           object kind           u16
//!           object id             u8 length || bytes
//!           generation            u64
//! payload = AES-256-GCM(data key, payload nonce, aad = header) ciphertext || tag
//! ```
//!
//! Integers are big-endian. Every length has a hard limit, checked before anything is
//! allocated. The data key is encrypted by the token under the KEK with associated data
//! [`WRAP_AAD_DOMAIN`] || header-without-the-protected-key, so the key itself is bound to the
//! object it protects, and the payload is bound to the whole header.

use std::fmt;

/// First bytes of every sealed blob.
pub const MAGIC: [u8; 4] = *b"SRSB";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Domain separator prefixed to the associated data of the data-key encryption.
pub const WRAP_AAD_DOMAIN: &[u8] = b"strongroom sealed-blob data-key wrap v1\0";
/// Length of the per-blob data key.
pub const DATA_KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce (payload nonce and data-key IV).
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Longest KEK label.
pub const MAX_KEK_LABEL_LEN: usize = 64;
/// Longest cluster id and node id.
pub const MAX_NAME_LEN: usize = 64;
/// Longest object id.
pub const MAX_OBJECT_ID_LEN: usize = 255;
/// Largest plaintext a blob may carry (64 MiB).
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024 * 1024;

/// The cryptographic suite of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// Data key encrypted in the token with `CKM_AES_GCM` under an AES-256 KEK (12-byte IV,
    /// 128-bit tag); payload encrypted in software with AES-256-GCM.
    TokenAesGcmA256Gcm,
}

impl Suite {
    /// The stable wire code.
    pub const fn code(self) -> u8 {
        match self {
            Suite::TokenAesGcmA256Gcm => 1,
        }
    }

    /// The suite for a wire code, if this build knows it.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Suite::TokenAesGcmA256Gcm),
            _ => None,
        }
    }
}

/// What a sealed object is. The codes are stable: they are part of the blob format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A threshold key share.
    KeyShare,
    /// Auxiliary information (Paillier keys and ring-Pedersen parameters) of the cluster.
    AuxInfo,
    /// One presignature.
    Presignature,
    /// Pregenerated safe primes waiting to become aux info.
    Primes,
    /// A batch of presignatures sealed together.
    PresignatureBatch,
    /// Node configuration secrets (credentials for local services).
    NodeSecret,
    /// Opaque application data with no more specific kind (the keystore demo seals these).
    Opaque,
}

impl ObjectKind {
    /// Every kind, in code order.
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::KeyShare,
        ObjectKind::AuxInfo,
        ObjectKind::Presignature,
        ObjectKind::Primes,
        ObjectKind::PresignatureBatch,
        ObjectKind::NodeSecret,
        ObjectKind::Opaque,
    ];

    /// The stable wire code.
    pub const fn code(self) -> u16 {
        match self {
            ObjectKind::KeyShare => 1,
            ObjectKind::AuxInfo => 2,
            ObjectKind::Presignature => 3,
            ObjectKind::Primes => 4,
            ObjectKind::PresignatureBatch => 5,
            ObjectKind::NodeSecret => 6,
            ObjectKind::Opaque => 7,
        }
    }

    /// The kind for a wire code, if this build knows it.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(ObjectKind::KeyShare),
            2 => Some(ObjectKind::AuxInfo),
            3 => Some(ObjectKind::Presignature),
            4 => Some(ObjectKind::Primes),
            5 => Some(ObjectKind::PresignatureBatch),
            6 => Some(ObjectKind::NodeSecret),
            7 => Some(ObjectKind::Opaque),
            _ => None,
        }
    }

    /// A short lower-case name for logs and command output.
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::KeyShare => "key-share",
            ObjectKind::AuxInfo => "aux-info",
            ObjectKind::Presignature => "presignature",
            ObjectKind::Primes => "primes",
            ObjectKind::PresignatureBatch => "presignature-batch",
            ObjectKind::NodeSecret => "node-secret",
            ObjectKind::Opaque => "opaque",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The data key as protected by the token: the IV the token used and ciphertext || tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedKey {
    /// The AES-GCM IV of the data-key encryption (read back from the token).
    pub iv: [u8; NONCE_LEN],
    /// Encrypted data key followed by its tag.
    pub ciphertext: Vec<u8>,
}

/// The header of a sealed blob. Nothing in it is secret; all of it is authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u16,
    /// Cryptographic suite.
    pub suite: Suite,
    /// Label of the KEK that protects the data key.
    pub kek_label: String,
    /// Version of that KEK.
    pub kek_version: u32,
    /// The protected data key.
    pub protected_key: ProtectedKey,
    /// Nonce of the payload encryption.
    pub payload_nonce: [u8; NONCE_LEN],
    /// Cluster the object belongs to.
    pub cluster_id: String,
    /// Node that sealed the object (and the only one that can open it).
    pub node_id: String,
    /// What the object is.
    pub kind: ObjectKind,
    /// Which object it is.
    pub object_id: Vec<u8>,
    /// Generation counter chosen by the caller, for rollback checks.
    pub generation: u64,
}

/// Why a byte string is not a well-formed sealed blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The blob ends before the named field is complete.
    #[error("sealed blob is truncated (ends inside {field})")]
    Truncated {
        /// The field being read when the input ran out.
        field: &'static str,
    },
    /// The first four bytes are not the sealed-blob magic.
    #[error("not a strongroom sealed blob (bad magic)")]
    BadMagic,
    /// The blob was written by a format version this build does not read.
    #[error("sealed blob format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// The blob uses a cryptographic suite this build does not know.
    #[error("sealed blob suite {0} is not supported")]
    UnsupportedSuite(u8),
    /// The object kind code is unknown to this build.
    #[error("sealed blob has unknown object kind code {0}")]
    UnknownKind(u16),
    /// A length field is outside the limits of the format.
    #[error("sealed blob field {field} has length {len}, outside {min}..={max}")]
    BadLength {
        /// The field.
        field: &'static str,
        /// The length found.
        len: usize,
        /// Smallest allowed length.
        min: usize,
        /// Largest allowed length.
        max: usize,
    },
    /// A text field is not valid UTF-8 or contains control characters.
    #[error("sealed blob field {field} is not printable UTF-8")]
    BadText {
        /// The field.
        field: &'static str,
    },
}

/// A parsed, not yet authenticated, sealed blob borrowing from its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob<'a> {
    /// The decoded header.
    pub header: Header,
    /// The exact header bytes (the payload's associated data).
    pub header_bytes: &'a [u8],
    /// Payload ciphertext followed by its tag.
    pub payload: &'a [u8],
}

impl<'a> SealedBlob<'a> {
    /// Parses a blob without touching a token. Checks structure and limits only: nothing is
    /// authenticated until the blob is unsealed.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BlobError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(BlobError::BadMagic);
        }
        let format_version = r.u16("format version")?;
        if format_version != FORMAT_VERSION {
            return Err(BlobError::UnsupportedVersion(format_version));
        }
        let suite_code = r.u8("suite")?;
        let suite = Suite::from_code(suite_code).ok_or(BlobError::UnsupportedSuite(suite_code))?;
        let kek_label = r.text("KEK label", 1, MAX_KEK_LABEL_LEN)?;
        let kek_version = r.u32("KEK version")?;
        let iv = r.array::<NONCE_LEN>("data-key IV length", "data-key IV")?;
        let key_ct = r.bytes_u8(
            "protected data key",
            DATA_KEY_LEN + TAG_LEN,
            DATA_KEY_LEN + TAG_LEN,
        )?;
        let payload_nonce: [u8; NONCE_LEN] = fixed(r.take(NONCE_LEN, "payload nonce")?);
        let cluster_id = r.text("cluster id", 1, MAX_NAME_LEN)?;
        let node_id = r.text("node id", 1, MAX_NAME_LEN)?;
        let kind_code = r.u16("object kind")?;
        let kind = ObjectKind::from_code(kind_code).ok_or(BlobError::UnknownKind(kind_code))?;
        let object_id = r.bytes_u8("object id", 1, MAX_OBJECT_ID_LEN)?;
        let generation = r.u64("generation")?;
        let (header_bytes, payload) = bytes.split_at(r.pos);
        if payload.len() < TAG_LEN || payload.len() > MAX_PAYLOAD_LEN + TAG_LEN {
            return Err(if payload.len() < TAG_LEN {
                BlobError::Truncated { field: "payload" }
            } else {
                BlobError::BadLength {
                    field: "payload",
                    len: payload.len(),
                    min: TAG_LEN,
                    max: MAX_PAYLOAD_LEN + TAG_LEN,
                }
            });
        }
        Ok(SealedBlob {
            header: Header {
                format_version,
                suite,
                kek_label,
                kek_version,
                protected_key: ProtectedKey {
                    iv,
                    ciphertext: key_ct.to_vec(),
                },
                payload_nonce,
                cluster_id,
                node_id,
                kind,
                object_id: object_id.to_vec(),
                generation,
            },
            header_bytes,
            payload,
        })
    }
}

impl Header {
    /// Checks that every field is within the limits of the format, so that encoding is
    /// lossless and the result parses.
    pub fn validate(&self) -> Result<(), BlobError> {
        if self.format_version != FORMAT_VERSION {
            return Err(BlobError::UnsupportedVersion(self.format_version));
        }
        check_text("KEK label", &self.kek_label, 1, MAX_KEK_LABEL_LEN)?;
        check_len(
            "protected data key",
            self.protected_key.ciphertext.len(),
            DATA_KEY_LEN + TAG_LEN,
            DATA_KEY_LEN + TAG_LEN,
        )?;
        check_text("cluster id", &self.cluster_id, 1, MAX_NAME_LEN)?;
        check_text("node id", &self.node_id, 1, MAX_NAME_LEN)?;
        check_len("object id", self.object_id.len(), 1, MAX_OBJECT_ID_LEN)?;
        Ok(())
    }

    /// The header bytes: the associated data of the payload encryption.
    pub fn encode(&self) -> Result<Vec<u8>, BlobError> {
        self.validate()?;
        Ok(self.encode_fields(true))
    }

    /// The associated data of the data-key encryption: a domain separator and the header
    /// without the protected-key field (which does not exist yet when the key is encrypted).
    pub fn wrap_aad(&self) -> Result<Vec<u8>, BlobError> {
        check_text("KEK label", &self.kek_label, 1, MAX_KEK_LABEL_LEN)?;
        check_text("cluster id", &self.cluster_id, 1, MAX_NAME_LEN)?;
        check_text("node id", &self.node_id, 1, MAX_NAME_LEN)?;
        check_len("object id", self.object_id.len(), 1, MAX_OBJECT_ID_LEN)?;
        let mut out = WRAP_AAD_DOMAIN.to_vec();
        out.extend_from_slice(&self.encode_fields(false));
        Ok(out)
    }

    // Lengths were checked by the callers, so each fits its one-byte prefix.
    fn encode_fields(&self, with_protected_key: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.push(self.suite.code());
        put_u8_len(&mut out, self.kek_label.as_bytes());
        out.extend_from_slice(&self.kek_version.to_be_bytes());
        if with_protected_key {
            put_u8_len(&mut out, &self.protected_key.iv);
            put_u8_len(&mut out, &self.protected_key.ciphertext);
        }
        out.extend_from_slice(&self.payload_nonce);
        put_u8_len(&mut out, self.cluster_id.as_bytes());
        put_u8_len(&mut out, self.node_id.as_bytes());
        out.extend_from_slice(&self.kind.code().to_be_bytes());
        put_u8_len(&mut out, &self.object_id);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out
    }
}

/// Checks a cluster id, node id or KEK label against the format's rules.
pub(crate) fn check_text(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), BlobError> {
    check_len(field, s.len(), min, max)?;
    if s.chars().any(char::is_control) {
        return Err(BlobError::BadText { field });
    }
    Ok(())
}

fn check_len(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), BlobError> {
    if len < min || len > max {
        return Err(BlobError::BadLength {
            field,
            len,
            min,
            max,
        });
    }
    Ok(())
}

fn put_u8_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

// Only called on slices that `Reader::take` cut to exactly `N` bytes.
fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BlobError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let out = rest.get(..n).ok_or(BlobError::Truncated { field })?;
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, BlobError> {
        Ok(u8::from_be_bytes(fixed(self.take(1, field)?)))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, BlobError> {
        Ok(u16::from_be_bytes(fixed(self.take(2, field)?)))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, BlobError> {
        Ok(u32::from_be_bytes(fixed(self.take(4, field)?)))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, BlobError> {
        Ok(u64::from_be_bytes(fixed(self.take(8, field)?)))
    }

    fn bytes_u8(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<&'a [u8], BlobError> {
        let len = usize::from(self.u8(field)?);
        check_len(field, len, min, max)?;
        self.take(len, field)
    }

    fn array<const N: usize>(
        &mut self,
        len_field: &'static str,
        field: &'static str,
    ) -> Result<[u8; N], BlobError> {
        let len = usize::from(self.u8(len_field)?);
        check_len(field, len, N, N)?;
        Ok(fixed(self.take(N, field)?))
    }

    fn text(&mut self, field: &'static str, min: usize, max: usize) -> Result<String, BlobError> {
        let raw = self.bytes_u8(field, min, max)?;
        let s = std::str::from_utf8(raw).map_err(|_| BlobError::BadText { field })?;
        check_text(field, s, min, max)?;
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            suite: Suite::TokenAesGcmA256Gcm,
            kek_label: "strongroom-kek-v1".into(),
            kek_version: 1,
            protected_key: ProtectedKey {
                iv: [7; NONCE_LEN],
                ciphertext: vec![9; DATA_KEY_LEN + TAG_LEN],
            },
            payload_nonce: [3; NONCE_LEN],
            cluster_id: "c1".into(),
            node_id: "n1".into(),
            kind: ObjectKind::KeyShare,
            object_id: b"key-1".to_vec(),
            generation: 42,
        }
    }

    #[test]
    fn round_trip() {
        let h = header();
        let mut blob = h.encode().unwrap();
        let header_len = blob.len();
        blob.extend_from_slice(&[0xAA; 20]);
        let parsed = SealedBlob::parse(&blob).unwrap();
        assert_eq!(parsed.header, h);
        assert_eq!(parsed.header_bytes.len(), header_len);
        assert_eq!(parsed.payload, &[0xAA; 20]);
    }

    /// Pins the bytes of the format: a change here is a format change and needs a new version.
    #[test]
    fn snapshot() {
        let bytes = header().encode().unwrap();
        let expected = concat!(
            "53525342", // magic
            "0001",     // version
            "01",       // suite
            "11",
            "7374726f6e67726f6f6d2d6b656b2d7631", // KEK label
            "00000001",                           // KEK version
            "0c",
            "070707070707070707070707", // data-key IV
            "30",
            "090909090909090909090909090909090909090909090909", // protected key..
            "090909090909090909090909090909090909090909090909", // ..continued
            "030303030303030303030303",                         // payload nonce
            "02",
            "6331", // cluster id
            "02",
            "6e31", // node id
            "0001", // kind
            "05",
            "6b65792d31",       // object id
            "000000000000002a", // generation
        );
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        let aad = header().wrap_aad().unwrap();
        assert!(aad.starts_with(WRAP_AAD_DOMAIN));
        assert_eq!(aad.len(), WRAP_AAD_DOMAIN.len() + bytes.len() - 2 - 12 - 48);
    }

    #[test]
    fn every_truncation_fails() {
        let mut blob = header().encode().unwrap();
        blob.extend_from_slice(&[0; TAG_LEN]);
        assert!(SealedBlob::parse(&blob).is_ok());
        for len in 0..blob.len() {
            assert!(
                SealedBlob::parse(&blob[..len]).is_err(),
                "prefix {len} parsed"
            );
        }
    }

    #[test]
    fn rejects_unknown_codes_and_limits() {
        let mut blob = header().encode().unwrap();
        blob.extend_from_slice(&[0; TAG_LEN]);
        let mut b = blob.clone();
        b[5] = 2;
        assert_eq!(SealedBlob::parse(&b), Err(BlobError::UnsupportedVersion(2)));
        let mut b = blob.clone();
        b[6] = 9;
        assert_eq!(SealedBlob::parse(&b), Err(BlobError::UnsupportedSuite(9)));
        let mut b = blob.clone();
        b[0] = b'X';
        assert_eq!(SealedBlob::parse(&b), Err(BlobError::BadMagic));
        let mut h = header();
        h.node_id = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(h.encode(), Err(BlobError::BadLength { .. })));
        h.node_id = "a\nb".into();
        assert_eq!(h.encode(), Err(BlobError::BadText { field: "node id" }));
        for kind in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ObjectKind::from_code(0), None);
    }
}
