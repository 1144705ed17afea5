//! The native P2WPKH example of BIP-143, run through the whole intake and signing path.
//!
//! The example's P2WPKH key stands in for a cluster key (at the master path `m`), its P2PK
//! input is a foreign input already finalized with the example's own scriptSig.
// Test helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bitcoin::bip32::DerivationPath;
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::hex::FromHex;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, Network, ScriptBuf, Transaction, TxOut};
use strongroom_bitcoin::{ClusterKey, IntakeOptions, intake_bytes};

const UNSIGNED_TX: &str = "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac11000000";
const P2PK_SCRIPT: &str = "2103c9f4836b9a4f77fc0d81f7bcb01b7f1b35916864b9476c241ce9fc198bd25432ac";
const P2PK_SCRIPT_SIG: &str = "4830450221008b9d1dc26ba6a9cb62127b02742fa9d754cd3bebf337f7a55d114c8e5cdd30be022040529b194ba3f9281a99f2b1c0a19c0489bc22ede944ccf4ecbab4cc618ef3ed01";
const P2WPKH_SCRIPT: &str = "00141d0f172a0ecb48aee1be1f2687d2963ae33f71a1";
const P2WPKH_PRIVKEY: &str = "619c335025c7f4012e556c2a58b2506e30b8511b53ade95ea316fd8c3286feb9";
const P2WPKH_PUBKEY: &str = "025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357";
const SIGHASH: &str = "c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670";
const SIGNED_TX: &str = "01000000000102fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f00000000494830450221008b9d1dc26ba6a9cb62127b02742fa9d754cd3bebf337f7a55d114c8e5cdd30be022040529b194ba3f9281a99f2b1c0a19c0489bc22ede944ccf4ecbab4cc618ef3ed01eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac000247304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a954c4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee0121025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee635711000000";

fn script(hex: &str) -> ScriptBuf {
    ScriptBuf::from_hex(hex).unwrap()
}

#[test]
fn native_p2wpkh_example() {
    let secp = Secp256k1::new();
    let pubkey: [u8; 33] = <[u8; 33]>::from_hex(P2WPKH_PUBKEY).unwrap();
    let key = ClusterKey::new(Network::Bitcoin, &pubkey, [0x11; 32]).unwrap();
    assert_eq!(
        bitcoin::ScriptBuf::new_p2wpkh(&key.public_key().wpubkey_hash()),
        script(P2WPKH_SCRIPT)
    );

    let tx: Transaction = deserialize_hex(UNSIGNED_TX).unwrap();
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(625_000_000),
        script_pubkey: script(P2PK_SCRIPT),
    });
    psbt.inputs[0].final_script_sig = Some(script(P2PK_SCRIPT_SIG));
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: Amount::from_sat(600_000_000),
        script_pubkey: script(P2WPKH_SCRIPT),
    });
    psbt.inputs[1].bip32_derivation.insert(
        key.public_key().0,
        (key.fingerprint(), DerivationPath::master()),
    );

    let request =
        intake_bytes(&psbt.serialize(), &key, "bip143", &IntakeOptions::default()).unwrap();
    let [to_sign] = request.inputs_to_sign() else {
        panic!("one input of ours")
    };
    assert_eq!(to_sign.input_index, 1);
    assert_eq!(to_sign.sighash.to_string(), SIGHASH);
    assert_eq!(request.analysis().total_in_sat, 1_225_000_000);
    assert_eq!(
        request.analysis().fee_sat,
        1_225_000_000 - 112_340_000 - 223_450_000
    );

    let sk = SecretKey::from_slice(&<[u8; 32]>::from_hex(P2WPKH_PRIVKEY).unwrap()).unwrap();
    let signature = secp.sign_ecdsa(&to_sign.message(), &sk);
    let signed = request.apply_signatures(&[(1, signature)]).unwrap();
    // RFC 6979 signing reproduces the example's signature, so the whole transaction matches.
    assert_eq!(signed.transaction_hex().unwrap(), SIGNED_TX);
    let tx = signed.transaction().unwrap();
    assert_eq!(serialize_hex(tx), SIGNED_TX);
    let estimate = request.analysis().vsize;
    assert!(tx.vsize() as u64 <= estimate && estimate <= tx.vsize() as u64 + 1);
    common::verify_consensus(tx, &psbt);
}
