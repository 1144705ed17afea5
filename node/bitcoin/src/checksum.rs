//! The output-descriptor checksum of BIP-380.

/// Characters a descriptor may contain, in the order that gives each its checksum symbol.
const INPUT_CHARSET: &[u8] = b"0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";

/// The alphabet of the eight checksum characters.
const CHECKSUM_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// Generators of the BCH code the checksum is built on.
const GENERATOR: [u64; 5] = [
    0xf5dee51989,
    0xa9fdca3312,
    0x1bab10e32d,
    0x3706b1677a,
    0x644d626ffd,
];

/// A descriptor contained a character outside the BIP-380 character set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "descriptor character {character:?} at position {position} is outside the BIP-380 character set"
)]
pub struct ChecksumError {
    /// The character that has no checksum symbol.
    pub character: char,
    /// Its position (in characters) in the descriptor.
    pub position: usize,
}

fn polymod(chk: u64, value: u64) -> u64 {
    let top = chk >> 35;
    let mut chk = ((chk & 0x7_ffff_ffff) << 5) ^ value;
    for (i, generator) in GENERATOR.iter().enumerate() {
        if (top >> i) & 1 == 1 {
            chk ^= generator;
        }
    }
    chk
}

/// Computes the eight-character BIP-380 checksum of a descriptor (given without `#checksum`).
pub fn descriptor_checksum(descriptor: &str) -> Result<String, ChecksumError> {
    let mut chk = 1u64;
    let mut groups = [0u64; 3];
    let mut group_len = 0usize;
    for (position, character) in descriptor.chars().enumerate() {
        let value = u8::try_from(character)
            .ok()
            .and_then(|byte| INPUT_CHARSET.iter().position(|&c| c == byte))
            .ok_or(ChecksumError {
                character,
                position,
            })? as u64;
        chk = polymod(chk, value & 31);
        if let Some(slot) = groups.get_mut(group_len) {
            *slot = value >> 5;
        }
        group_len += 1;
        if group_len == 3 {
            chk = polymod(chk, groups[0] * 9 + groups[1] * 3 + groups[2]);
            group_len = 0;
        }
    }
    match group_len {
        1 => chk = polymod(chk, groups[0]),
        2 => chk = polymod(chk, groups[0] * 3 + groups[1]),
        _ => {}
    }
    for _ in 0..8 {
        chk = polymod(chk, 0);
    }
    chk ^= 1;
    Ok((0..8)
        .map(|i| {
            // The shift leaves five bits, so the index is always below 32.
            let symbol = ((chk >> (5 * (7 - i))) & 31) as usize;
            char::from(CHECKSUM_CHARSET[symbol])
        })
        .collect())
}

/// Appends `#checksum` to a descriptor.
pub fn with_checksum(descriptor: &str) -> Result<String, ChecksumError> {
    Ok(format!("{descriptor}#{}", descriptor_checksum(descriptor)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip380_vector() {
        assert_eq!(
            with_checksum("raw(deadbeef)").unwrap(),
            "raw(deadbeef)#89f8spxm"
        );
    }

    #[test]
    fn charset_has_every_printable_ascii_character_once() {
        assert_eq!(INPUT_CHARSET.len(), 95);
        for byte in 0x20u8..0x7f {
            assert_eq!(
                INPUT_CHARSET.iter().filter(|&&c| c == byte).count(),
                1,
                "{byte}"
            );
        }
    }

    #[test]
    fn refuses_characters_outside_the_set() {
        let err = descriptor_checksum("raw(dé)").unwrap_err();
        assert_eq!(
            err,
            ChecksumError {
                character: 'é',
                position: 5
            }
        );
        assert!(descriptor_checksum("raw(\n)").is_err());
    }
}
