//! Every refusal of the intake, each naming the input, output or field at fault.
// Test helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, EcdsaSighashType, Network, ScriptBuf, TxIn, TxOut, WScriptHash};
use common::*;
use strongroom_bitcoin::{ClusterKey, IntakeError, IntakeOptions, intake_base64, intake_bytes};

fn intake(key: &DevKey, psbt: &Psbt) -> Result<strongroom_bitcoin::SignRequest, IntakeError> {
    intake_base64(&b64(psbt), &key.cluster, KEY_ID, &IntakeOptions::default())
}

fn refused(key: &DevKey, edit: impl FnOnce(&mut Psbt)) -> IntakeError {
    let mut psbt = two_input_psbt(key);
    edit(&mut psbt);
    intake(key, &psbt).expect_err("the PSBT should be refused")
}

fn assert_names_input(err: &IntakeError, index: usize) {
    assert_eq!(err.input(), Some(index), "{err}");
    assert!(
        err.to_string().starts_with(&format!("input {index}: ")),
        "{err}"
    );
}

#[test]
fn another_network_via_global_xpub() {
    let key = DevKey::new();
    let main = Xpriv::new_master(Network::Bitcoin, &[1; 32]).unwrap();
    let main_xpub = Xpub::from_priv(&key.secp, &main);
    let err = refused(&key, |psbt| {
        psbt.xpub.insert(
            main_xpub,
            (main.fingerprint(&key.secp), DerivationPath::master()),
        );
    });
    assert!(matches!(
        err,
        IntakeError::WrongNetworkXpub {
            network: Network::Regtest,
            ..
        }
    ));
    assert!(err.to_string().contains("encoded for mainnet"), "{err}");
    assert!(err.to_string().contains(&main_xpub.to_string()), "{err}");

    // The cluster's own tpub as a global xpub is fine on regtest …
    let mut psbt = two_input_psbt(&key);
    psbt.xpub
        .insert(key.xpub, (key.fingerprint(), DerivationPath::master()));
    assert!(intake(&key, &psbt).is_ok());
    // … but not for a node configured for mainnet.
    let mainnet = ClusterKey::new(
        Network::Bitcoin,
        &key.xpub.public_key.serialize(),
        key.xpub.chain_code.to_bytes(),
    )
    .unwrap();
    let err = intake_base64(&b64(&psbt), &mainnet, KEY_ID, &IntakeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("configured for bitcoin"), "{err}");
}

#[test]
fn no_input_of_ours() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| {
        for input in &mut psbt.inputs {
            input.bip32_derivation.clear();
        }
    });
    assert_eq!(
        err,
        IntakeError::NoInputOfOurs {
            fingerprint: key.fingerprint()
        }
    );
    assert!(err.to_string().contains(&key.fingerprint().to_string()));

    // Another wallet's fingerprint on the inputs is not ours either.
    let other = DevKey {
        xpriv: Xpriv::new_master(NETWORK, &[9; 32]).unwrap(),
        ..DevKey::new()
    };
    let err = refused(&key, |psbt| {
        for input in &mut psbt.inputs {
            let entry = input.bip32_derivation.values_mut().next().unwrap();
            entry.0 = other.fingerprint();
        }
    });
    assert!(matches!(err, IntakeError::NoInputOfOurs { .. }));
}

#[test]
fn hardened_path() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| {
        let entry = psbt.inputs[1].bip32_derivation.values_mut().next().unwrap();
        entry.1 = DerivationPath::from_str("m/84h/1h/0h/1/7").unwrap();
    });
    assert_names_input(&err, 1);
    assert!(matches!(err, IntakeError::HardenedPath { .. }));
    assert!(
        err.to_string().contains("84'/1'/0'/1/7") && err.to_string().contains("hardened"),
        "{err}"
    );
}

#[test]
fn missing_witness_utxo_and_missing_amount() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| psbt.inputs[0].witness_utxo = None);
    assert_names_input(&err, 0);
    assert_eq!(err, IntakeError::MissingWitnessUtxo { input: 0 });
    assert!(err.to_string().contains("witness_utxo"));

    // A foreign input without any UTXO has no known amount.
    let foreign = SecretKey::from_slice(&[0x33; 32]).unwrap();
    let err = refused(&key, |psbt| {
        add_foreign_input(psbt, &foreign, &key.secp, 1_000);
        psbt.inputs[2].witness_utxo = None;
    });
    assert_names_input(&err, 2);
    assert_eq!(err, IntakeError::MissingUtxo { input: 2 });
}

#[test]
fn non_witness_utxo_must_match() {
    let key = DevKey::new();
    let foreign = SecretKey::from_slice(&[0x33; 32]).unwrap();
    let prev = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn::default()],
        output: vec![TxOut {
            value: Amount::from_sat(7_000),
            script_pubkey: ScriptBuf::new_op_return([1u8]),
        }],
    };
    // Does not hash to the spent txid.
    let err = refused(&key, |psbt| {
        add_foreign_input(psbt, &foreign, &key.secp, 1_000);
        psbt.inputs[2].witness_utxo = None;
        psbt.inputs[2].non_witness_utxo = Some(prev.clone());
    });
    assert_names_input(&err, 2);
    assert!(
        err.to_string().contains("non_witness_utxo is transaction"),
        "{err}"
    );

    // Hashes correctly, and gives the amount; but disagreeing with witness_utxo is refused.
    let mut psbt = two_input_psbt(&key);
    add_foreign_input(&mut psbt, &foreign, &key.secp, 1_000);
    psbt.unsigned_tx.input[2].previous_output = bitcoin::OutPoint {
        txid: prev.compute_txid(),
        vout: 0,
    };
    psbt.inputs[2].non_witness_utxo = Some(prev.clone());
    let err = intake(&key, &psbt).unwrap_err();
    assert_names_input(&err, 2);
    assert!(
        err.to_string().contains("disagrees with witness_utxo"),
        "{err}"
    );
    psbt.inputs[2].witness_utxo = None;
    // The foreign output is an OP_RETURN, whose size is unknown: finalize it first.
    let err = intake(&key, &psbt).unwrap_err();
    assert!(
        matches!(
            err,
            IntakeError::UnknownInputSize {
                input: 2,
                kind: "non-standard"
            }
        ),
        "{err}"
    );
    psbt.inputs[2].final_script_sig = Some(ScriptBuf::new());
    let request = intake(&key, &psbt).unwrap();
    assert_eq!(request.analysis().inputs[2].amount_sat, 7_000);

    psbt.unsigned_tx.input[2].previous_output.vout = 4;
    let err = intake(&key, &psbt).unwrap_err();
    assert!(
        err.to_string()
            .contains("has 1 outputs, but the input spends output 4"),
        "{err}"
    );
}

#[test]
fn amounts_that_do_not_add_up() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| {
        psbt.unsigned_tx.output[0].value = Amount::from_sat(90_000)
    });
    assert_eq!(
        err,
        IntakeError::NegativeFee {
            total_in: 105_000,
            total_out: 114_000
        }
    );
    assert!(err.to_string().contains("negative fee"));

    let err = refused(&key, |psbt| psbt.unsigned_tx.output[0].value = Amount::MAX);
    assert_eq!(
        err,
        IntakeError::AmountTooLarge {
            field: "output 0".into()
        }
    );

    let err = refused(&key, |psbt| {
        for input in &mut psbt.inputs {
            input.witness_utxo.as_mut().unwrap().value = Amount::from_int_btc(15_000_000);
        }
    });
    assert_eq!(
        err,
        IntakeError::AmountTooLarge {
            field: "total of inputs".into()
        }
    );

    let err = refused(&key, |psbt| {
        psbt.unsigned_tx.output[0].value = Amount::from_int_btc(20_000_000);
        psbt.unsigned_tx.output[1].value = Amount::from_int_btc(20_000_000);
    });
    assert_eq!(
        err,
        IntakeError::AmountTooLarge {
            field: "total of outputs".into()
        }
    );

    let err = refused(&key, |psbt| {
        psbt.inputs[1].witness_utxo.as_mut().unwrap().value = Amount::from_sat(u64::MAX)
    });
    assert_eq!(
        err,
        IntakeError::AmountTooLarge {
            field: "input 1".into()
        }
    );
}

#[test]
fn wrong_public_key_for_path() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| {
        let entry = psbt.inputs[0].bip32_derivation.values_mut().next().unwrap();
        entry.1 = DerivationPath::from_str("m/0/4").unwrap();
    });
    assert_names_input(&err, 0);
    assert!(matches!(err, IntakeError::WrongPublicKey { .. }));
    assert!(
        err.to_string().contains(&key.public("m/0/4").to_string()),
        "{err}"
    );

    // Right key and path, but the spent script is not that key's P2WPKH.
    let err = refused(&key, |psbt| {
        psbt.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey =
            ScriptBuf::new_p2pkh(&key.public("m/1/7").pubkey_hash());
    });
    assert_names_input(&err, 1);
    assert!(matches!(err, IntakeError::NotOwnScript { .. }));

    // Two derivations claiming our fingerprint on one input.
    let err = refused(&key, |psbt| {
        psbt.inputs[0].bip32_derivation.insert(
            key.public("m/0/9").0,
            (
                key.fingerprint(),
                DerivationPath::from_str("m/0/9").unwrap(),
            ),
        );
    });
    assert_eq!(
        err,
        IntakeError::SeveralOwnDerivations { input: 0, count: 2 }
    );

    // A change output whose derivation lies about the key.
    let err = refused(&key, |psbt| {
        let entry = psbt.outputs[1]
            .bip32_derivation
            .values_mut()
            .next()
            .unwrap();
        entry.1 = DerivationPath::from_str("m/1/9").unwrap();
    });
    assert_eq!(err.output(), Some(1));
    assert!(err.to_string().starts_with("output 1: "), "{err}");
}

#[test]
fn change_needs_own_branch_and_script() {
    let key = DevKey::new();
    // Derivation on our key but at m/5/8: derivable, not one of our descriptors.
    let mut psbt = two_input_psbt(&key);
    psbt.unsigned_tx.output[1].script_pubkey = key.script("m/5/8");
    psbt.outputs[1].bip32_derivation.clear();
    psbt.outputs[1].bip32_derivation.insert(
        key.public("m/5/8").0,
        (
            key.fingerprint(),
            DerivationPath::from_str("m/5/8").unwrap(),
        ),
    );
    let analysis = intake(&key, &psbt).unwrap().analysis().clone();
    assert!(!analysis.outputs[1].is_change);
    assert_eq!(analysis.spend_sat(), 104_000);

    // Our own receive branch counts as change; without a derivation it does not.
    let mut psbt = two_input_psbt(&key);
    psbt.unsigned_tx.output[0].script_pubkey = key.script("m/0/0");
    let analysis = intake(&key, &psbt).unwrap().analysis().clone();
    assert!(!analysis.outputs[0].is_change);
    psbt.outputs[0].bip32_derivation.insert(
        key.public("m/0/0").0,
        (
            key.fingerprint(),
            DerivationPath::from_str("m/0/0").unwrap(),
        ),
    );
    let analysis = intake(&key, &psbt).unwrap().analysis().clone();
    assert!(analysis.outputs[0].is_change);
    assert_eq!(analysis.spend_sat(), 0);
}

#[test]
fn sighash_refusals() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| {
        psbt.inputs[1].sighash_type = Some(PsbtSighashType::from_u32(0x42))
    });
    assert_eq!(
        err,
        IntakeError::NonStandardSighash {
            input: 1,
            value: 0x42
        }
    );
    let err = refused(&key, |psbt| {
        psbt.inputs[1].sighash_type = Some(EcdsaSighashType::NonePlusAnyoneCanPay.into())
    });
    assert_names_input(&err, 1);

    // SIGHASH_SINGLE on input 2 with two outputs would commit to no output.
    let mut psbt = two_input_psbt(&key);
    psbt.unsigned_tx.output.truncate(1);
    psbt.outputs.truncate(1);
    psbt.unsigned_tx.output[0].value = Amount::from_sat(100_000);
    psbt.inputs[1].sighash_type = Some(EcdsaSighashType::Single.into());
    let options = IntakeOptions {
        extra_sighash_types: vec![EcdsaSighashType::Single],
        ..IntakeOptions::default()
    };
    let err = intake_base64(&b64(&psbt), &key.cluster, KEY_ID, &options).unwrap_err();
    assert_eq!(
        err,
        IntakeError::SingleWithoutOutput {
            input: 1,
            sighash_type: EcdsaSighashType::Single
        }
    );
}

#[test]
fn malformed_oversized_and_trailing() {
    let key = DevKey::new();
    let options = IntakeOptions::default();
    let err = intake_base64("cHNidP8B!!!", &key.cluster, KEY_ID, &options).unwrap_err();
    assert!(matches!(err, IntakeError::Base64(_)));
    assert!(
        err.to_string().starts_with("psbt: not valid base64"),
        "{err}"
    );
    // Valid base64, not a PSBT.
    let err = intake_base64("aGVsbG8gd29ybGQ=", &key.cluster, KEY_ID, &options).unwrap_err();
    assert!(matches!(err, IntakeError::Malformed(_)), "{err}");
    let err = intake_bytes(&[], &key.cluster, KEY_ID, &options).unwrap_err();
    assert!(matches!(err, IntakeError::Malformed(_)), "{err}");

    let psbt = two_input_psbt(&key);
    let mut bytes = psbt.serialize();
    bytes.push(0);
    let err = intake_bytes(&bytes, &key.cluster, KEY_ID, &options).unwrap_err();
    assert_eq!(err, IntakeError::TrailingBytes(1));

    let small = IntakeOptions {
        max_psbt_bytes: 100,
        ..IntakeOptions::default()
    };
    let err = intake_bytes(&psbt.serialize(), &key.cluster, KEY_ID, &small).unwrap_err();
    assert!(
        matches!(err, IntakeError::Oversized { limit: 100, .. }),
        "{err}"
    );
    let err = intake_base64(&b64(&psbt), &key.cluster, KEY_ID, &small).unwrap_err();
    assert!(
        matches!(err, IntakeError::Oversized { limit: 100, .. }),
        "{err}"
    );
    // The base64 bound refuses before decoding: a huge string is not decoded at all.
    let huge = "A".repeat(10 * 1024 * 1024);
    let err = intake_base64(&huge, &key.cluster, KEY_ID, &options).unwrap_err();
    assert!(matches!(err, IntakeError::Oversized { .. }), "{err}");
    // Exactly at the limit is fine.
    let exact = IntakeOptions {
        max_psbt_bytes: psbt.serialize().len(),
        ..IntakeOptions::default()
    };
    assert!(intake_base64(&b64(&psbt), &key.cluster, KEY_ID, &exact).is_ok());
}

#[test]
fn structural_refusals() {
    let key = DevKey::new();
    let err = refused(&key, |psbt| {
        psbt.unsigned_tx.input[1].previous_output = psbt.unsigned_tx.input[0].previous_output;
    });
    assert_names_input(&err, 1);
    assert!(matches!(err, IntakeError::DuplicateInput { first: 0, .. }));

    let err = refused(&key, |psbt| {
        psbt.unsigned_tx.output[0].script_pubkey = ScriptBuf::new_op_return([0u8; 4]);
    });
    assert_eq!(err.output(), Some(0));
    assert!(
        err.to_string().contains("has no address on regtest"),
        "{err}"
    );

    let err = refused(&key, |psbt| {
        psbt.unsigned_tx.output.clear();
        psbt.outputs.clear();
    });
    assert_eq!(err, IntakeError::NoOutputs);

    // A foreign P2WSH input that is not finalized has no size estimate.
    let err = refused(&key, |psbt| {
        psbt.unsigned_tx.input.push(TxIn {
            previous_output: outpoint(7),
            ..TxIn::default()
        });
        psbt.inputs.push(bitcoin::psbt::Input {
            witness_utxo: Some(TxOut {
                value: Amount::from_sat(5_000),
                script_pubkey: ScriptBuf::new_p2wsh(&WScriptHash::all_zeros()),
            }),
            ..Default::default()
        });
    });
    assert_eq!(
        err,
        IntakeError::UnknownInputSize {
            input: 2,
            kind: "P2WSH"
        }
    );
}
