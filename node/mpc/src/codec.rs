//! Versioned CBOR envelopes for secrets handed to the sealing layer.
//!
//! Every sealed object starts with a format name and a version; decoding checks both before it
//! touches the body, so an object of another kind or an unknown version is refused with a clear
//! error instead of a confusing field mismatch.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Why sealed bytes could not be decoded. The caller handed in bytes this version does not read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Caller misuse: the bytes are not CBOR, or the body does not match the format.
    #[error("sealed {expected} is malformed: {detail}")]
    Malformed {
        /// The format that was expected.
        expected: &'static str,
        /// What the decoder reported.
        detail: String,
    },
    /// Caller misuse: the bytes hold another kind of object.
    #[error("sealed object is a `{found}`, expected `{expected}`")]
    WrongFormat {
        /// The format that was expected.
        expected: &'static str,
        /// The format named in the bytes.
        found: String,
    },
    /// Caller misuse: the bytes were written by a newer (or unknown) version of this format.
    #[error("sealed {format} has version {found}; this build reads version {supported} only")]
    UnsupportedVersion {
        /// The format.
        format: &'static str,
        /// The version named in the bytes.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The body decoded but its content is inconsistent (for example a key share that fails
    /// cggmp24's validation).
    #[error("sealed {format} is invalid: {detail}")]
    Invalid {
        /// The format.
        format: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Why a secret could not be encoded. Encoding an in-memory value cannot fail unless a type's
/// serializer is broken, so this is a bug.
#[derive(Debug, thiserror::Error)]
#[error("bug: encoding a {format} failed: {detail}")]
pub struct EncodeError {
    format: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    format: &'a str,
    version: u32,
    body: &'a T,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Envelope<T> {
    body: T,
}

pub(crate) fn encode<T: Serialize>(
    format: &'static str,
    version: u32,
    body: &T,
) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    // Reserve generously so the buffer rarely reallocates (each reallocation would leave an
    // unwiped copy of the secret behind in freed memory).
    let mut out = Zeroizing::new(Vec::with_capacity(64 * 1024));
    ciborium::into_writer(
        &EnvelopeRef {
            format,
            version,
            body,
        },
        &mut *out,
    )
    .map_err(|err| EncodeError {
        format,
        detail: err.to_string(),
    })?;
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(
    format: &'static str,
    version: u32,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let header: Header = ciborium::from_reader(bytes).map_err(|err| DecodeError::Malformed {
        expected: format,
        detail: err.to_string(),
    })?;
    if header.format != format {
        return Err(DecodeError::WrongFormat {
            expected: format,
            found: header.format,
        });
    }
    if header.version != version {
        return Err(DecodeError::UnsupportedVersion {
            format,
            found: header.version,
            supported: version,
        });
    }
    let envelope: Envelope<T> =
        ciborium::from_reader(bytes).map_err(|err| DecodeError::Malformed {
            expected: format,
            detail: err.to_string(),
        })?;
    Ok(envelope.body)
}

/// Serde helpers for fixed-size byte arrays as lowercase hex strings.
pub(crate) mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

/// Serde helpers for curve points as hex of their compressed encoding.
pub(crate) mod hex_point {
    use crate::Curve;
    use cggmp24::generic_ec::Point;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(
        point: &Point<Curve>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(point.to_bytes(true)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Point<Curve>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(D::Error::custom)?;
        Point::from_bytes(bytes).map_err(|_| D::Error::custom("not a secp256k1 point"))
    }
}

/// Serde helpers for scalars as hex of their 32-byte big-endian encoding (must be below the
/// group order).
pub(crate) mod hex_scalar {
    use crate::Curve;
    use cggmp24::generic_ec::Scalar;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(
        scalar: &Scalar<Curve>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(scalar.to_be_bytes()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Scalar<Curve>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(D::Error::custom)?;
        Scalar::from_be_bytes(bytes).map_err(|_| D::Error::custom("scalar is not below the order"))
    }
}
