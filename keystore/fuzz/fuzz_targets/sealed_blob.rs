//! The sealed-blob parser on arbitrary input: it never panics, and whatever it accepts
//! re-encodes to exactly the bytes it parsed (the format is canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use strongroom_keystore::{FORMAT_VERSION, MAGIC, SealedBlob, Suite};

fn check(data: &[u8]) {
    if let Ok(blob) = SealedBlob::parse(data) {
        let encoded = blob.header.encode().expect("a parsed header re-encodes");
        assert_eq!(encoded, blob.header_bytes, "parse and encode disagree");
        assert_eq!(blob.header_bytes.len() + blob.payload.len(), data.len());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Also behind a valid prefix, so short runs reach the fields past magic, version and suite.
    let mut prefixed = MAGIC.to_vec();
    prefixed.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    prefixed.push(Suite::TokenAesGcmA256Gcm.code());
    prefixed.extend_from_slice(data);
    check(&prefixed);
});
