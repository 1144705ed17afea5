//! The request digest: pinned bytes for a fixed PSBT, and what changes it.
// Test helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bitcoin::base64::Engine as _;
use bitcoin::base64::engine::general_purpose::STANDARD;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::psbt::Psbt;
use common::*;
use strongroom_bitcoin::{IntakeOptions, RequestDigest, SignRequest, intake_base64};

fn request(key: &DevKey, psbt: &Psbt, key_id: &str) -> SignRequest {
    intake_base64(&b64(psbt), &key.cluster, key_id, &IntakeOptions::default()).unwrap()
}

/// The encoding written out again, independently of the crate, from its documentation.
fn expected_preimage(request: &SignRequest, key_id: &str) -> Vec<u8> {
    let mut out = vec![30u8];
    out.extend_from_slice(b"strongroom/sign-request-digest");
    out.push(1);
    out.push(7);
    out.extend_from_slice(b"regtest");
    out.extend_from_slice(&(key_id.len() as u64).to_be_bytes());
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(request.analysis().txid.as_byte_array());
    let raw = request.raw_psbt();
    out.extend_from_slice(&(raw.len() as u64).to_be_bytes());
    out.extend_from_slice(raw);
    out.extend_from_slice(&(request.inputs_to_sign().len() as u32).to_be_bytes());
    for t in request.inputs_to_sign() {
        out.extend_from_slice(&(t.input_index as u32).to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        out.push(t.path.len() as u8);
        for step in &t.path {
            out.extend_from_slice(&u32::from(*step).to_be_bytes());
        }
        out.extend_from_slice(t.sighash.as_byte_array());
    }
    out
}

#[test]
fn snapshot_of_the_fixture_psbt() {
    let key = DevKey::new();
    let psbt = two_input_psbt(&key);
    // The fixture is deterministic: pin it, so that the digest below pins the encoding.
    let psbt_sha = sha256::Hash::hash(&psbt.serialize());
    assert_eq!(psbt_sha.to_string(), PSBT_SHA256);
    let request = request(&key, &psbt, KEY_ID);
    let expected = sha256::Hash::hash(&expected_preimage(&request, KEY_ID));
    assert_eq!(request.digest().to_bytes(), expected.to_byte_array());
    assert_eq!(request.digest().to_string(), DIGEST);
    assert_eq!(STANDARD.decode(b64(&psbt)).unwrap(), request.raw_psbt());
}

const PSBT_SHA256: &str = "55be57103e627974ebeade2abdce6b9cc4fec62be763eec5029b5dc8b2f887eb";
const DIGEST: &str = "3d957af90ef3727b28838eeb873d3eded38ef32ea4a23beb859614e2a4844d2a";

#[test]
fn digest_changes_with_everything_that_changes_a_signature() {
    let key = DevKey::new();
    let psbt = two_input_psbt(&key);
    let base = request(&key, &psbt, KEY_ID).digest();
    assert_eq!(base, request(&key, &psbt, KEY_ID).digest());
    assert_ne!(base, request(&key, &psbt, "key-0002").digest());

    // The amount of a spent output: same txid, different sighash.
    let mut amount = psbt.clone();
    amount.inputs[0].witness_utxo.as_mut().unwrap().value += bitcoin::Amount::from_sat(1);
    let other = request(&key, &amount, KEY_ID);
    assert_eq!(other.analysis().txid, psbt.unsigned_tx.compute_txid());
    assert_ne!(base, other.digest());

    // Any other byte of the PSBT, even one that changes no signature.
    let mut unknown = psbt.clone();
    unknown.unknown.insert(
        bitcoin::psbt::raw::Key {
            type_value: 0xf0,
            key: vec![1],
        },
        vec![2],
    );
    assert_ne!(base, request(&key, &unknown, KEY_ID).digest());
}

#[test]
fn digest_text_round_trip() {
    let key = DevKey::new();
    let digest = request(&key, &two_input_psbt(&key), KEY_ID).digest();
    let text = digest.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<RequestDigest>().unwrap(), digest);
    let json = serde_json::to_string(&digest).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(
        serde_json::from_str::<RequestDigest>(&json).unwrap(),
        digest
    );
    assert!("zz".parse::<RequestDigest>().is_err());
    assert_eq!(RequestDigest::from_bytes(digest.to_bytes()), digest);
}
