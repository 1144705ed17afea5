//! Test fixtures: a software master key standing in for the cluster key, and PSBTs built
//! independently of the crate under test with the `bitcoin` crate alone.
// Shared by several test crates, each using a different part.
#![allow(dead_code, unreachable_pub)]
// Test fixtures: a failure here is a broken test, reported by the panic.
#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use bitcoin::absolute::LockTime;
use bitcoin::bip32::{DerivationPath, Fingerprint, Xpriv, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{All, Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
};
use strongroom_bitcoin::{ClusterKey, InputToSign, SignRequest};

pub const NETWORK: Network = Network::Regtest;
pub const DENIED: &str = "bcrt1qsfyza8dnx9dhudwpg5pxq5q4k9e7kug3ys8qcf";
pub const KEY_ID: &str = "key-0001";

pub struct DevKey {
    pub secp: Secp256k1<All>,
    pub xpriv: Xpriv,
    pub xpub: Xpub,
    pub cluster: ClusterKey,
}

impl DevKey {
    pub fn new() -> DevKey {
        let secp = Secp256k1::new();
        let xpriv = Xpriv::new_master(NETWORK, &[0x5a; 32]).unwrap();
        let xpub = Xpub::from_priv(&secp, &xpriv);
        let cluster = ClusterKey::new(
            NETWORK,
            &xpub.public_key.serialize(),
            xpub.chain_code.to_bytes(),
        )
        .unwrap();
        DevKey {
            secp,
            xpriv,
            xpub,
            cluster,
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.xpriv.fingerprint(&self.secp)
    }

    pub fn secret(&self, path: &str) -> SecretKey {
        let path = DerivationPath::from_str(path).unwrap();
        self.xpriv
            .derive_priv(&self.secp, &path)
            .unwrap()
            .private_key
    }

    pub fn public(&self, path: &str) -> CompressedPublicKey {
        CompressedPublicKey(self.secret(path).public_key(&self.secp))
    }

    pub fn script(&self, path: &str) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.public(path).wpubkey_hash())
    }

    /// Signs every input the request asks for, with the software key.
    pub fn sign(
        &self,
        request: &SignRequest,
    ) -> Vec<(usize, bitcoin::secp256k1::ecdsa::Signature)> {
        request
            .inputs_to_sign()
            .iter()
            .map(|t: &InputToSign| {
                let sk = self.secret(&t.path.to_string());
                (t.input_index, self.secp.sign_ecdsa(&t.message(), &sk))
            })
            .collect()
    }
}

pub fn outpoint(n: u8) -> OutPoint {
    OutPoint {
        txid: Txid::from_byte_array([n; 32]),
        vout: u32::from(n),
    }
}

pub fn external_script() -> ScriptBuf {
    Address::from_str(DENIED)
        .unwrap()
        .require_network(NETWORK)
        .unwrap()
        .script_pubkey()
}

/// Inputs of ours at m/0/3 (60,000 sat) and m/1/7 (45,000 sat); outputs: 80,000 sat to an
/// external address, 24,000 sat change to m/1/8. Fee 1,000 sat.
pub fn two_input_psbt(key: &DevKey) -> Psbt {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![
            TxIn {
                previous_output: outpoint(1),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            },
            TxIn {
                previous_output: outpoint(2),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            },
        ],
        output: vec![
            TxOut {
                value: Amount::from_sat(80_000),
                script_pubkey: external_script(),
            },
            TxOut {
                value: Amount::from_sat(24_000),
                script_pubkey: key.script("m/1/8"),
            },
        ],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    let fp = key.fingerprint();
    for (input, (path, value)) in psbt
        .inputs
        .iter_mut()
        .zip([("m/0/3", 60_000), ("m/1/7", 45_000)])
    {
        input.witness_utxo = Some(TxOut {
            value: Amount::from_sat(value),
            script_pubkey: key.script(path),
        });
        input.bip32_derivation.insert(
            key.public(path).0,
            (fp, DerivationPath::from_str(path).unwrap()),
        );
    }
    psbt.outputs[1].bip32_derivation.insert(
        key.public("m/1/8").0,
        (fp, DerivationPath::from_str("m/1/8").unwrap()),
    );
    psbt
}

/// A P2WPKH input of another wallet's key, with its witness_utxo.
pub fn add_foreign_input(psbt: &mut Psbt, foreign: &SecretKey, secp: &Secp256k1<All>, value: u64) {
    let pk = CompressedPublicKey(foreign.public_key(secp));
    psbt.unsigned_tx.input.push(TxIn {
        previous_output: outpoint(9),
        ..TxIn::default()
    });
    psbt.inputs.push(bitcoin::psbt::Input {
        witness_utxo: Some(TxOut {
            value: Amount::from_sat(value),
            script_pubkey: ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()),
        }),
        ..Default::default()
    });
}

/// Finalizes a foreign P2WPKH input by signing it with its own key (as its wallet would).
pub fn finalize_foreign(psbt: &mut Psbt, index: usize, foreign: &SecretKey, secp: &Secp256k1<All>) {
    let utxo = psbt.inputs[index].witness_utxo.clone().unwrap();
    let sighash = bitcoin::sighash::SighashCache::new(&psbt.unsigned_tx)
        .p2wpkh_signature_hash(
            index,
            &utxo.script_pubkey,
            utxo.value,
            bitcoin::EcdsaSighashType::All,
        )
        .unwrap();
    let msg = bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array());
    let sig = bitcoin::ecdsa::Signature::sighash_all(secp.sign_ecdsa(&msg, foreign));
    psbt.inputs[index].final_script_witness =
        Some(Witness::p2wpkh(&sig, &foreign.public_key(secp)));
}

pub fn b64(psbt: &Psbt) -> String {
    psbt.to_string()
}

/// libbitcoinconsensus verification of every input of `tx` against the PSBT's UTXOs.
pub fn verify_consensus(tx: &Transaction, psbt: &Psbt) {
    let spent: Vec<(OutPoint, TxOut)> = psbt
        .unsigned_tx
        .input
        .iter()
        .zip(&psbt.inputs)
        .map(|(txin, input)| (txin.previous_output, input.witness_utxo.clone().unwrap()))
        .collect();
    tx.verify(|outpoint| {
        spent
            .iter()
            .find(|(o, _)| o == outpoint)
            .map(|(_, txout)| txout.clone())
    })
    .unwrap();
}
