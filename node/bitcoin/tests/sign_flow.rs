//! The whole path: intake, analysis, sighashes, signing with a software key, finalization,
//! and libbitcoinconsensus on the result.
// Test helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;

use bitcoin::bip32::DerivationPath;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::secp256k1::SecretKey;
use bitcoin::{EcdsaSighashType, PublicKey};
use common::*;
use strongroom_bitcoin::{InputOwner, IntakeOptions, SignError, intake_base64, intake_bytes};

fn path(s: &str) -> DerivationPath {
    DerivationPath::from_str(s).unwrap()
}

#[test]
fn two_inputs_at_different_paths_with_change_sign_and_pass_consensus() {
    let key = DevKey::new();
    let psbt = two_input_psbt(&key);
    let request =
        intake_base64(&b64(&psbt), &key.cluster, KEY_ID, &IntakeOptions::default()).unwrap();

    let analysis = request.analysis();
    assert_eq!(analysis.key_id, KEY_ID);
    assert_eq!(analysis.txid, psbt.unsigned_tx.compute_txid());
    assert_eq!(analysis.input_count(), 2);
    assert!(analysis.all_inputs_ours());
    assert_eq!(analysis.total_in_sat, 105_000);
    assert_eq!(analysis.total_out_sat, 104_000);
    assert_eq!(analysis.fee_sat, 1_000);
    assert_eq!(analysis.spend_sat(), 80_000);
    let out0 = &analysis.outputs[0];
    assert_eq!(
        (out0.address.as_str(), out0.amount_sat, out0.is_change),
        (DENIED, 80_000, false)
    );
    assert_eq!(out0.change_path, None);
    let out1 = &analysis.outputs[1];
    assert!(out1.is_change);
    assert_eq!(out1.change_path, Some(path("m/1/8")));
    assert_eq!(
        out1.address,
        key.cluster.address_at(&path("m/1/8")).unwrap().to_string()
    );
    match &analysis.inputs[1].owner {
        InputOwner::Ours {
            path: p,
            public_key,
            sighash_type,
        } => {
            assert_eq!(p, &path("m/1/7"));
            assert_eq!(public_key, &key.public("m/1/7"));
            assert_eq!(*sighash_type, EcdsaSighashType::All);
        }
        other => panic!("input 1 should be ours: {other:?}"),
    }

    let to_sign = request.inputs_to_sign();
    assert_eq!(to_sign.len(), 2);
    assert_eq!(
        (to_sign[0].input_index, &to_sign[0].path),
        (0, &path("m/0/3"))
    );
    assert_eq!(
        (to_sign[1].input_index, &to_sign[1].path),
        (1, &path("m/1/7"))
    );
    assert_ne!(to_sign[0].sighash, to_sign[1].sighash);

    let signed = request.apply_signatures(&key.sign(&request)).unwrap();
    let tx = signed
        .transaction()
        .expect("every input is ours: finalized")
        .clone();
    assert_eq!(tx.compute_txid(), analysis.txid);
    verify_consensus(&tx, &psbt);

    // The estimate is an upper bound within one vbyte per signature of the real size.
    let actual = tx.vsize() as u64;
    assert!(
        actual <= analysis.vsize && analysis.vsize <= actual + 2,
        "{actual} vs {}",
        analysis.vsize
    );
    assert_eq!(analysis.vsize, 209);

    // The verifier does check: a signature moved to the other input fails.
    let mut swapped = tx.clone();
    let first = swapped.input[0].witness.clone();
    swapped.input[0].witness = swapped.input[1].witness.clone();
    swapped.input[1].witness = first;
    let spent = |o: &bitcoin::OutPoint| {
        let index = psbt
            .unsigned_tx
            .input
            .iter()
            .position(|i| i.previous_output == *o)?;
        psbt.inputs[index].witness_utxo.clone()
    };
    assert!(swapped.verify(spent).is_err());

    let hex = signed.transaction_hex().unwrap();
    assert_eq!(hex, bitcoin::consensus::encode::serialize_hex(&tx));
    let finalized = Psbt::from_str(&signed.to_base64()).unwrap();
    for input in &finalized.inputs {
        assert!(input.final_script_witness.is_some());
        assert!(input.partial_sigs.is_empty() && input.bip32_derivation.is_empty());
        assert!(input.witness_utxo.is_some());
    }
    assert_eq!(finalized.extract_tx_unchecked_fee_rate(), tx);
}

#[test]
fn foreign_input_awaiting_its_signer_gets_partial_sigs_only() {
    let key = DevKey::new();
    let foreign = SecretKey::from_slice(&[0x33; 32]).unwrap();
    let mut psbt = two_input_psbt(&key);
    add_foreign_input(&mut psbt, &foreign, &key.secp, 10_000);
    let request =
        intake_base64(&b64(&psbt), &key.cluster, KEY_ID, &IntakeOptions::default()).unwrap();
    let analysis = request.analysis();
    assert_eq!(
        analysis.inputs[2].owner,
        InputOwner::Foreign { finalized: false }
    );
    assert_eq!(analysis.fee_sat, 11_000);
    assert_eq!(request.inputs_to_sign().len(), 2);

    let signed = request.apply_signatures(&key.sign(&request)).unwrap();
    assert!(signed.transaction().is_none() && signed.transaction_hex().is_none());
    let out = Psbt::from_str(&signed.to_base64()).unwrap();
    for (index, p) in [(0, "m/0/3"), (1, "m/1/7")] {
        let sig = out.inputs[index].partial_sigs[&PublicKey::from(key.public(p))];
        assert_eq!(sig.sighash_type, EcdsaSighashType::All);
        let der_plus_type = sig.to_vec();
        assert_eq!(*der_plus_type.last().unwrap(), 0x01);
        assert!(out.inputs[index].final_script_witness.is_none());
    }
    assert!(out.inputs[2].partial_sigs.is_empty());

    // The foreign wallet signs its input later; all three then pass consensus.
    let mut later = out.clone();
    finalize_foreign(&mut later, 2, &foreign, &key.secp);
    for index in 0..2 {
        let (pk, sig) = later.inputs[index].partial_sigs.pop_first().unwrap();
        later.inputs[index].final_script_witness = Some(bitcoin::Witness::p2wpkh(&sig, &pk.inner));
    }
    verify_consensus(&later.extract_tx_unchecked_fee_rate(), &psbt);
}

#[test]
fn already_finalized_foreign_input_lets_the_node_finalize() {
    let key = DevKey::new();
    let foreign = SecretKey::from_slice(&[0x44; 32]).unwrap();
    let mut psbt = two_input_psbt(&key);
    add_foreign_input(&mut psbt, &foreign, &key.secp, 10_000);
    finalize_foreign(&mut psbt, 2, &foreign, &key.secp);
    let request =
        intake_base64(&b64(&psbt), &key.cluster, KEY_ID, &IntakeOptions::default()).unwrap();
    assert_eq!(
        request.analysis().inputs[2].owner,
        InputOwner::Foreign { finalized: true }
    );
    let signed = request.apply_signatures(&key.sign(&request)).unwrap();
    let tx = signed.transaction().unwrap();
    verify_consensus(tx, &psbt);
    let actual = tx.vsize() as u64;
    let estimate = request.analysis().vsize;
    assert!(
        actual <= estimate && estimate <= actual + 2,
        "{actual} vs {estimate}"
    );
}

#[test]
fn signatures_are_checked_before_insertion() {
    let key = DevKey::new();
    let request = intake_base64(
        &b64(&two_input_psbt(&key)),
        &key.cluster,
        KEY_ID,
        &IntakeOptions::default(),
    )
    .unwrap();
    let good = key.sign(&request);

    // Signed by the wrong child key.
    let t = &request.inputs_to_sign()[1];
    let wrong = key.secp.sign_ecdsa(&t.message(), &key.secret("m/1/8"));
    let err = request
        .apply_signatures(&[good[0], (1, wrong)])
        .unwrap_err();
    assert_eq!(
        err,
        SignError::Invalid {
            input: 1,
            path: "1/7".into()
        }
    );
    assert!(err.to_string().starts_with("input 1: "), "{err}");

    // Over another message (the other input's sighash).
    let swapped = key
        .secp
        .sign_ecdsa(&request.inputs_to_sign()[0].message(), &key.secret("m/1/7"));
    assert!(matches!(
        request.apply_signatures(&[good[0], (1, swapped)]),
        Err(SignError::Invalid { input: 1, .. })
    ));

    // High-S form of a valid signature.
    let mut compact = good[0].1.serialize_compact();
    let s = bitcoin::secp256k1::SecretKey::from_slice(&compact[32..])
        .unwrap()
        .negate();
    compact[32..].copy_from_slice(&s.secret_bytes());
    let high = bitcoin::secp256k1::ecdsa::Signature::from_compact(&compact).unwrap();
    assert_eq!(
        request.apply_signatures(&[(0, high), good[1]]),
        Err(SignError::HighS { input: 0 })
    );

    assert_eq!(
        request.apply_signatures(&good[..1]),
        Err(SignError::Missing { input: 1 })
    );
    assert_eq!(
        request.apply_signatures(&[good[0], good[1], good[1]]),
        Err(SignError::Duplicate { input: 1 })
    );
    assert_eq!(
        request.apply_signatures(&[good[0], good[1], (5, good[1].1)]),
        Err(SignError::NotOurInput { input: 5 })
    );
    assert!(request.apply_signatures(&[good[1], good[0]]).is_ok());
}

#[test]
fn other_sighash_types_only_when_allowed() {
    let key = DevKey::new();
    let mut psbt = two_input_psbt(&key);
    psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::Single));
    let text = b64(&psbt);
    let err = intake_base64(&text, &key.cluster, KEY_ID, &IntakeOptions::default()).unwrap_err();
    assert_eq!(err.input(), Some(0));
    assert!(
        err.to_string().contains("SIGHASH_SINGLE is not allowed"),
        "{err}"
    );

    let options = IntakeOptions {
        extra_sighash_types: vec![EcdsaSighashType::Single],
        ..IntakeOptions::default()
    };
    let request = intake_base64(&text, &key.cluster, KEY_ID, &options).unwrap();
    assert_eq!(
        request.inputs_to_sign()[0].sighash_type,
        EcdsaSighashType::Single
    );
    let signed = request.apply_signatures(&key.sign(&request)).unwrap();
    let tx = signed.transaction().unwrap();
    assert_eq!(*tx.input[0].witness.nth(0).unwrap().last().unwrap(), 0x03);
    verify_consensus(tx, &psbt);
}

#[test]
fn binary_and_base64_intake_agree() {
    let key = DevKey::new();
    let psbt = two_input_psbt(&key);
    let options = IntakeOptions::default();
    let a = intake_base64(
        &format!("  {}\n", b64(&psbt)),
        &key.cluster,
        KEY_ID,
        &options,
    )
    .unwrap();
    let b = intake_bytes(&psbt.serialize(), &key.cluster, KEY_ID, &options).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.analysis(), b.analysis());
    assert_eq!(a.raw_psbt(), psbt.serialize().as_slice());
    let json = serde_json::to_value(a.analysis()).unwrap();
    assert_eq!(json["outputs"][1]["change_path"], "1/8");
    assert_eq!(json["inputs"][0]["owner"], "ours");
    assert_eq!(json["fee_sat"], 1000);
}
