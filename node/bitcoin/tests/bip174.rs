//! BIP-174 test vectors: the spec's valid example, and its invalid cases rebuilt byte by byte
//! from their descriptions. Intake must refuse each invalid one as malformed.
// Test helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bitcoin::base64::Engine as _;
use bitcoin::base64::engine::general_purpose::STANDARD;
use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use bitcoin::hex::FromHex;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid};
use common::*;
use strongroom_bitcoin::{IntakeError, IntakeOptions, intake_base64, intake_bytes};

/// "PSBT with one P2PKH input. Outputs are empty."
const VALID_P2PKH: &str = "cHNidP8BAHUCAAAAASaBcTce3/KF6Tet7qSze3gADAVmy7OtZGQXE8pCFxv2AAAAAAD+////AtPf9QUAAAAAGXapFNDFmQPFusKGh2DpD9UhpGZap2UgiKwA4fUFAAAAABepFDVF5uM7gyxHBQ8k0+65PJwDlIvHh7MuEwAAAQD9pQEBAAAAAAECiaPHHqtNIOA3G7ukzGmPopXJRjr6Ljl/hTPMti+VZ+UBAAAAFxYAFL4Y0VKpsBIDna89p95PUzSe7LmF/////4b4qkOnHf8USIk6UwpyN+9rRgi7st0tAXHmOuxqSJC0AQAAABcWABT+Pp7xp0XpdNkCxDVZQ6vLNL1TU/////8CAMLrCwAAAAAZdqkUhc/xCX/Z4Ai7NK9wnGIZeziXikiIrHL++E4sAAAAF6kUM5cluiHv1irHU6m80GfWx6ajnQWHAkcwRAIgJxK+IuAnDzlPVoMR3HyppolwuAJf3TskAinwf4pfOiQCIAGLONfc0xTnNMkna9b7QPZzMlvEuqFEyADS8vAtsnZcASED0uFWdJQbrUqZY3LLh+GFbTZSYG2YVi/jnF6efkE/IQUCSDBFAiEA0SuFLYXc2WHS9fSrZgZU327tzHlMDDPOXMMJ/7X85Y0CIGczio4OFyXBl/saiK9Z9R5E5CVbIBZ8hoQDHAXR8lkqASECI7cr7vCWXRC+B3jv7NYfysb3mk6haTkzgHNEZPhPKrMAAAAAAAAA";

#[test]
fn valid_example_parses_and_is_not_ours() {
    let bytes = STANDARD.decode(VALID_P2PKH).unwrap();
    let psbt = bitcoin::psbt::Psbt::deserialize(&bytes).unwrap();
    assert_eq!((psbt.inputs.len(), psbt.outputs.len()), (1, 2));
    let prev = psbt.inputs[0].non_witness_utxo.as_ref().unwrap();
    assert_eq!(
        prev.compute_txid(),
        psbt.unsigned_tx.input[0].previous_output.txid
    );
    assert_eq!(psbt.serialize(), bytes);

    let key = DevKey::new();
    // Its outputs are mainnet-agnostic scripts with address forms; the input is not ours.
    let err =
        intake_base64(VALID_P2PKH, &key.cluster, KEY_ID, &IntakeOptions::default()).unwrap_err();
    assert!(matches!(err, IntakeError::NoInputOfOurs { .. }), "{err}");
}

fn compact(n: usize) -> Vec<u8> {
    serialize(&bitcoin::VarInt(n as u64))
}

fn pair(key: &[u8], value: &[u8]) -> Vec<u8> {
    [
        compact(key.len()),
        key.to_vec(),
        compact(value.len()),
        value.to_vec(),
    ]
    .concat()
}

fn unsigned_tx() -> Transaction {
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([3; 32]),
                vout: 0,
            },
            sequence: Sequence::MAX,
            ..TxIn::default()
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::all_zeros()),
            },
            TxOut {
                value: Amount::from_sat(2_000),
                script_pubkey: ScriptBuf::new_p2sh(&bitcoin::ScriptHash::all_zeros()),
            },
        ],
    }
}

const MAGIC: &[u8] = b"psbt\xff";
const END: &[u8] = &[0];
const PUBKEY: &str = "03b1341ccba7683b6af4f1238cd6e97e7167d569fac47f1e48d47541844355bd46";

/// A PSBT from its global pairs and one map each for the input and the two outputs.
fn psbt(global: &[Vec<u8>], input: &[Vec<u8>], outputs: &[&[Vec<u8>]]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for map in std::iter::once(global)
        .chain([input])
        .chain(outputs.iter().copied())
    {
        out.extend(map.concat());
        out.extend_from_slice(END);
    }
    out
}

fn global_tx() -> Vec<u8> {
    pair(&[0x00], &serialize(&unsigned_tx()))
}

fn assert_malformed(case: &str, bytes: &[u8]) {
    let key = DevKey::new();
    let options = IntakeOptions::default();
    match intake_bytes(bytes, &key.cluster, KEY_ID, &options) {
        Err(IntakeError::Malformed(_)) => {}
        other => panic!("{case}: expected a malformed-PSBT error, got {other:?}"),
    }
    // The same through base64.
    let text = STANDARD.encode(bytes);
    assert!(matches!(
        intake_base64(&text, &key.cluster, KEY_ID, &options),
        Err(IntakeError::Malformed(_))
    ));
}

#[test]
fn the_builder_makes_a_valid_psbt() {
    let bytes = psbt(&[global_tx()], &[], &[&[], &[]]);
    let parsed = bitcoin::psbt::Psbt::deserialize(&bytes).unwrap();
    assert_eq!(parsed.unsigned_tx, unsigned_tx());
}

#[test]
fn invalid_network_transaction_not_psbt() {
    assert_malformed("network transaction", &serialize(&unsigned_tx()));
}

#[test]
fn invalid_missing_outputs() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(global_tx());
    bytes.extend_from_slice(END);
    bytes.extend_from_slice(END); // the input map, then no output maps
    assert_malformed("missing outputs", &bytes);
}

#[test]
fn invalid_filled_script_sig_in_unsigned_tx() {
    let mut tx = unsigned_tx();
    tx.input[0].script_sig = ScriptBuf::from_bytes(vec![0x51]);
    assert_malformed(
        "filled scriptSig",
        &psbt(&[pair(&[0x00], &serialize(&tx))], &[], &[&[], &[]]),
    );
}

#[test]
fn invalid_unsigned_tx_in_witness_serialization() {
    let tx = serialize(&unsigned_tx());
    // version, marker 0x00 and flag 0x01, inputs and outputs, one empty witness, locktime.
    let body = &tx[4..tx.len() - 4];
    let witness_form = [&tx[..4], &[0x00, 0x01], body, &[0x00], &tx[tx.len() - 4..]].concat();
    assert_malformed(
        "witness serialization",
        &psbt(&[pair(&[0x00], &witness_form)], &[], &[&[], &[]]),
    );
}

#[test]
fn invalid_no_unsigned_tx() {
    assert_malformed("no unsigned tx", &psbt(&[], &[], &[&[], &[]]));
}

#[test]
fn invalid_duplicate_keys_in_input() {
    let utxo = serialize(&TxOut {
        value: Amount::from_sat(5_000),
        script_pubkey: ScriptBuf::new(),
    });
    let input = [pair(&[0x01], &utxo), pair(&[0x01], &utxo)];
    assert_malformed("duplicate keys", &psbt(&[global_tx()], &input, &[&[], &[]]));
}

#[test]
fn invalid_global_transaction_typed_key() {
    let bad = pair(&[0x00, 0x01], &serialize(&unsigned_tx()));
    assert_malformed(
        "global tx key with key data",
        &psbt(&[bad], &[], &[&[], &[]]),
    );
}

#[test]
fn invalid_input_witness_utxo_typed_key() {
    let utxo = serialize(&TxOut {
        value: Amount::from_sat(5_000),
        script_pubkey: ScriptBuf::new(),
    });
    let input = [pair(&[0x01, 0x00], &utxo)];
    assert_malformed(
        "witness utxo key with key data",
        &psbt(&[global_tx()], &input, &[&[], &[]]),
    );
}

#[test]
fn invalid_pubkey_length_for_partial_signature() {
    let pubkey = Vec::<u8>::from_hex(PUBKEY).unwrap();
    let key = [&[0x02u8][..], &pubkey[..32]].concat();
    let sig = Vec::<u8>::from_hex("3044022074018ad4180097b873323c0015720b3684cc8123891048e7dbcd9b55ad679c99022073d369b740e3eb53dcefa33823c8070514ca55a7dd9544f157c167913261118c01").unwrap();
    assert_malformed(
        "partial sig with a 32-byte key",
        &psbt(&[global_tx()], &[pair(&key, &sig)], &[&[], &[]]),
    );
}

#[test]
fn invalid_redeem_script_typed_key() {
    let input = [pair(&[0x04, 0x00], &[0x51])];
    assert_malformed(
        "redeem script key with key data",
        &psbt(&[global_tx()], &input, &[&[], &[]]),
    );
}

#[test]
fn invalid_final_script_sig_typed_key() {
    let input = [pair(&[0x07, 0x00], &[0x00])];
    assert_malformed(
        "final scriptSig key with key data",
        &psbt(&[global_tx()], &input, &[&[], &[]]),
    );
}

#[test]
fn invalid_pubkey_in_output_bip32_derivation() {
    let pubkey = Vec::<u8>::from_hex(PUBKEY).unwrap();
    let key = [&[0x02u8][..], &pubkey[..32]].concat();
    let value = [
        [0xd9, 0x0c, 0x6a, 0x4f].to_vec(),
        0u32.to_le_bytes().to_vec(),
    ]
    .concat();
    let output = [pair(&key, &value)];
    assert_malformed(
        "output bip32 with a 32-byte key",
        &psbt(&[global_tx()], &[], &[&output, &[]]),
    );
}
