//! Serde helpers: byte arrays as lowercase hex strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serializer};

/// `[u8; 32]` as 64 lowercase hex digits.
pub(crate) mod hex32 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        parse32(&text).map_err(serde::de::Error::custom)
    }
}

/// `[u8; 64]` as 128 lowercase hex digits.
pub(crate) mod hex64 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 64];
        decode_lower(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// `BTreeMap<String, [u8; 32]>` as an object of hex strings.
pub(crate) mod hex32_map {
    use serde::ser::SerializeMap as _;

    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        map: &BTreeMap<String, [u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_entry(k, &hex::encode(v))?;
        }
        m.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, [u8; 32]>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                parse32(&v)
                    .map(|b| (k.clone(), b))
                    .map_err(|e| serde::de::Error::custom(format!("hmacs.{k}: {e}")))
            })
            .collect()
    }
}

/// Parses exactly 64 lowercase hex digits.
pub(crate) fn parse32(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    decode_lower(text, &mut out)?;
    Ok(out)
}

/// Lowercase only, so that every value has exactly one spelling.
fn decode_lower(text: &str, out: &mut [u8]) -> Result<(), String> {
    if text.len() != out.len() * 2 {
        return Err(format!(
            "expected {} hex digits, found {} characters",
            out.len() * 2,
            text.len()
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("hex digits must be lowercase".into());
    }
    hex::decode_to_slice(text, out).map_err(|e| e.to_string())
}
