//! PSBTs for cluster tests, built with the `bitcoin` crate alone from a key's xpub, and the
//! request helpers around them (submit, wait for a state, check a signed transaction with
//! libbitcoinconsensus).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, OutPoint, Psbt, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness, absolute::LockTime, transaction::Version,
};
use rand::RngCore;
use serde_json::{Value, json};
use strongroom_client::ApiClient;

use crate::support::eventually;

impl Key {
    /// The key `key_id` as node `node` shows it (xpub and fingerprint from the API).
    pub async fn fetch(api: &ApiClient, node: usize, key_id: &str) -> Key {
        let r = api
            .get_at(node, &format!("/v1/keys/{key_id}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        Key {
            id: key_id.to_owned(),
            xpub: Xpub::from_str(r.body["xpub"].as_str().unwrap()).unwrap(),
            fingerprint: Fingerprint::from_str(r.body["fingerprint"].as_str().unwrap()).unwrap(),
        }
    }
}

/// The key as the test sees it: xpub and fingerprint from the API, children derived here.
pub struct Key {
    /// Key id.
    pub id: String,
    /// The key's xpub.
    pub xpub: Xpub,
    /// Its master fingerprint.
    pub fingerprint: Fingerprint,
}

impl Key {
    /// The public key and path of child `chain/index`.
    pub fn child(&self, chain: u32, index: u32) -> (CompressedPublicKey, DerivationPath) {
        let secp = Secp256k1::verification_only();
        let path = DerivationPath::from(vec![
            ChildNumber::from_normal_idx(chain).unwrap(),
            ChildNumber::from_normal_idx(index).unwrap(),
        ]);
        let child = self.xpub.derive_pub(&secp, &path).unwrap();
        (CompressedPublicKey(child.public_key), path)
    }

    /// The regtest P2WPKH address of child `chain/index`.
    pub fn address(&self, chain: u32, index: u32) -> Address {
        Address::p2wpkh(&self.child(chain, index).0, Network::Regtest)
    }
}

/// A random txid (for made-up UTXOs).
pub fn random_txid() -> Txid {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Txid::from_byte_array(bytes)
}

/// A regtest address of a random key that is not ours.
pub fn foreign_address() -> Address {
    let secp = Secp256k1::new();
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&seed).unwrap();
    let pk = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &sk);
    Address::p2wpkh(&CompressedPublicKey(pk), Network::Regtest)
}

/// An output: to an address, or change back to the key at `1/index`.
pub enum Out {
    /// To an address, in satoshis.
    To(Address, u64),
    /// Change to the key at `1/index`, in satoshis.
    Change(u32, u64),
}

/// A PSBT spending made-up UTXOs of the key at `0/index` (amounts given).
pub fn build_psbt(
    key: &Key,
    inputs: &[(u32, u64)],
    outputs: &[Out],
) -> (Psbt, HashMap<OutPoint, TxOut>) {
    let mut spent = HashMap::new();
    let tx_inputs: Vec<TxIn> = inputs
        .iter()
        .map(|_| TxIn {
            previous_output: OutPoint {
                txid: random_txid(),
                vout: 1,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        })
        .collect();
    let tx_outputs: Vec<TxOut> = outputs
        .iter()
        .map(|o| match o {
            Out::To(a, v) => TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: a.script_pubkey(),
            },
            Out::Change(i, v) => TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: key.address(1, *i).script_pubkey(),
            },
        })
        .collect();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: tx_inputs,
        output: tx_outputs,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    for (n, (index, amount)) in inputs.iter().enumerate() {
        let (pk, path) = key.child(0, *index);
        let utxo = TxOut {
            value: Amount::from_sat(*amount),
            script_pubkey: ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()),
        };
        spent.insert(tx.input[n].previous_output, utxo.clone());
        psbt.inputs[n].witness_utxo = Some(utxo);
        psbt.inputs[n]
            .bip32_derivation
            .insert(pk.0, (key.fingerprint, path));
    }
    for (n, o) in outputs.iter().enumerate() {
        if let Out::Change(i, _) = o {
            let (pk, path) = key.child(1, *i);
            psbt.outputs[n]
                .bip32_derivation
                .insert(pk.0, (key.fingerprint, path));
        }
    }
    psbt.xpub
        .insert(key.xpub, (key.fingerprint, DerivationPath::master()));
    (psbt, spent)
}

/// Submits `psbt` for `key` to node `node`: (status, body).
pub async fn submit(api: &ApiClient, node: usize, key: &Key, psbt: &Psbt) -> (u16, Value) {
    let r = api
        .post_at(
            node,
            "/v1/sign-requests",
            &json!({"key_id": key.id, "psbt": psbt.to_string(), "memo": "test"}),
        )
        .await
        .unwrap();
    (r.status, r.body)
}

/// Waits (long polls) until request `id` is in one of `states` on node `node`.
pub async fn wait_state(api: &ApiClient, node: usize, id: &str, states: &[&str]) -> Value {
    let start = Instant::now();
    loop {
        let r = api
            .get_at(node, &format!("/v1/sign-requests/{id}?wait_secs=5"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let state = r.body["state"].as_str().unwrap().to_owned();
        if states.contains(&state.as_str()) {
            return r.body;
        }
        assert!(
            !["signed", "rejected", "failed"].contains(&state.as_str()),
            "request {id} ended {state}, expected one of {states:?}: {}",
            r.body
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "request {id} still {state}: {}",
            r.body
        );
    }
}

/// The signed transaction of a request, checked with libbitcoinconsensus for every input.
pub fn check_signed(body: &Value, spent: &HashMap<OutPoint, TxOut>) -> Transaction {
    let hex_tx = body["tx_hex"]
        .as_str()
        .unwrap_or_else(|| panic!("no tx_hex: {body}"));
    let tx: Transaction = bitcoin::consensus::deserialize(&hex::decode(hex_tx).unwrap()).unwrap();
    tx.verify(|op| spent.get(op).cloned())
        .unwrap_or_else(|e| panic!("libbitcoinconsensus refuses the transaction: {e:?}"));
    for input in &tx.input {
        assert_eq!(input.witness.len(), 2, "P2WPKH witness");
    }
    // The signed PSBT carries the same transaction.
    let signed = Psbt::from_str(body["psbt"].as_str().unwrap()).unwrap();
    assert_eq!(signed.extract_tx_unchecked_fee_rate(), tx);
    tx
}

/// Waits until every pool each of the `nodes` nodes holds has `at_least` presignatures.
pub async fn wait_pools(api: &ApiClient, nodes: usize, at_least: i64) {
    for node in 0..nodes {
        eventually("full pools", Duration::from_secs(300), || {
            let api = api.clone();
            async move {
                let r = api.get_at(node, "/v1/presignatures").await.ok()?;
                let pools = r.body["pools"].as_array()?;
                let ok = !pools.is_empty()
                    && pools
                        .iter()
                        .filter(|p| p["held_by_this_node"] == true)
                        .all(|p| p["available"].as_i64().unwrap_or(0) >= at_least);
                ok.then_some(r.body)
            }
        })
        .await;
    }
}
