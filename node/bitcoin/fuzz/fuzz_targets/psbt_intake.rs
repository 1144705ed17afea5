//! Arbitrary bytes, arbitrary text as base64, and byte edits of a valid PSBT of the key,
//! through PSBT intake, analysis and signature checking. Intake must refuse or accept, never
//! panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strongroom_bitcoin::bitcoin::hashes::Hash;
use strongroom_bitcoin::bitcoin::psbt::Psbt;
use strongroom_bitcoin::bitcoin::secp256k1::ecdsa::Signature;
use strongroom_bitcoin::bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Transaction, TxIn, TxOut, Txid, absolute, transaction,
};
use strongroom_bitcoin::{Chain, ClusterKey, IntakeOptions, intake_base64, intake_bytes};

/// The public key is the secp256k1 generator: a valid point, like any cluster key.
const PUBLIC_KEY: [u8; 33] = [
    0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b,
    0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17,
    0x98,
];

fn key() -> Option<ClusterKey> {
    ClusterKey::new(Network::Regtest, &PUBLIC_KEY, [7; 32]).ok()
}

/// A valid PSBT of the key: inputs at m/0/3 and m/1/7, an external output and change at m/1/8.
fn fixture(key: &ClusterKey) -> Option<Vec<u8>> {
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: Vec::new(),
        output: vec![
            TxOut {
                value: Amount::from_sat(80_000),
                script_pubkey: ScriptBuf::new_p2wpkh(&Hash::all_zeros()),
            },
            TxOut {
                value: Amount::from_sat(24_000),
                script_pubkey: key
                    .script_at(&ClusterKey::path(Chain::Change, 8).ok()?)
                    .ok()?,
            },
        ],
    };
    for n in 1..=2u8 {
        let previous_output = OutPoint {
            txid: Txid::from_byte_array([n; 32]),
            vout: 0,
        };
        tx.input.push(TxIn {
            previous_output,
            ..TxIn::default()
        });
    }
    let mut psbt = Psbt::from_unsigned_tx(tx).ok()?;
    let fingerprint = key.fingerprint();
    let paths = [(Chain::Receive, 3, 60_000), (Chain::Change, 7, 45_000)];
    for (input, (chain, index, value)) in psbt.inputs.iter_mut().zip(paths) {
        let path = ClusterKey::path(chain, index).ok()?;
        let public_key = key.derive(&path).ok()?;
        input.witness_utxo = Some(TxOut {
            value: Amount::from_sat(value),
            script_pubkey: key.script_at(&path).ok()?,
        });
        input
            .bip32_derivation
            .insert(public_key.0, (fingerprint, path));
    }
    let change = ClusterKey::path(Chain::Change, 8).ok()?;
    let change_key = key.derive(&change).ok()?;
    psbt.outputs
        .get_mut(1)?
        .bip32_derivation
        .insert(change_key.0, (fingerprint, change));
    Some(psbt.serialize())
}

fn exercise(request: &strongroom_bitcoin::SignRequest, data: &[u8]) {
    let analysis = request.analysis();
    let _ = analysis.spend_sat();
    let _ = request.digest().to_string();
    for input in request.inputs_to_sign() {
        let _ = input.message();
    }
    // Arbitrary signatures must be refused cleanly.
    let signatures: Vec<(usize, Signature)> = data
        .chunks_exact(65)
        .filter_map(|c| {
            Some((
                usize::from(c[0] % 4),
                Signature::from_compact(&c[1..]).ok()?,
            ))
        })
        .collect();
    let _ = request.apply_signatures(&signatures);
}

static FIXTURE: OnceLock<Option<(ClusterKey, Vec<u8>)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((key, valid)) =
        FIXTURE.get_or_init(|| key().and_then(|k| Some((k.clone(), fixture(&k)?))))
    else {
        return;
    };
    let options = IntakeOptions::default();
    if let Ok(request) = intake_bytes(data, key, "fuzz", &options) {
        exercise(&request, data);
    }
    // Arbitrary maps after the magic bytes.
    let mut prefixed = b"psbt\xff".to_vec();
    prefixed.extend_from_slice(data);
    if let Ok(request) = intake_bytes(&prefixed, key, "fuzz", &options) {
        exercise(&request, data);
    }
    // Edits of the valid PSBT: each 3-byte chunk sets one byte (2-byte position, value).
    let mut edited = valid.clone();
    for chunk in data.chunks_exact(3) {
        let position = usize::from(u16::from_le_bytes([chunk[0], chunk[1]])) % edited.len();
        edited[position] = chunk[2];
    }
    if data.len() % 3 == 1 {
        edited.truncate(usize::from(data[0]) * 2);
    }
    if let Ok(request) = intake_bytes(&edited, key, "fuzz", &options) {
        exercise(&request, data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(request) = intake_base64(text, key, "fuzz", &options) {
            exercise(&request, data);
        }
    }
});
