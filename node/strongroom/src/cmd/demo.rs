//! `strongroom dev demo`: one PSBT through the dev cluster, from key to signed transaction.
//!
//! It uses a ready key of the cluster (the one named `demo` first), or generates `demo`; builds
//! a regtest PSBT spending a made-up output of that key ([`demo_psbt`]); submits it; follows
//! the request until it is signed; checks the signature on the input itself; and prints the
//! signed transaction. The output spent does not exist on any chain, so the transaction can
//! never be broadcast: it shows the signing path, nothing more.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use strongroom_bitcoin::bitcoin::absolute::LockTime;
use strongroom_bitcoin::bitcoin::bip32::{DerivationPath, Xpub};
use strongroom_bitcoin::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use strongroom_bitcoin::bitcoin::hashes::Hash;
use strongroom_bitcoin::bitcoin::secp256k1::{Message, Secp256k1};
use strongroom_bitcoin::bitcoin::sighash::SighashCache;
use strongroom_bitcoin::bitcoin::transaction::Version;
use strongroom_bitcoin::bitcoin::{
    self, Amount, CompressedPublicKey, Network, OutPoint, Psbt, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
};
use strongroom_bitcoin::{Chain, ClusterKey};
use strongroom_client::ApiClient;

use crate::cmd::keys::{get_key, list_keys, post_key, text, wait_until_ready};
use crate::cmd::sign::{
    group_digits, outcome, render_request, render_summary, short, submit, wait_for,
};
use crate::output::Output;

/// Satoshis the demo sends by default.
pub(crate) const DEFAULT_AMOUNT_SAT: u64 = 50_000;
/// The made-up output the demo spends.
pub(crate) const FUNDING_SAT: u64 = 200_000;
/// The fee the demo pays.
pub(crate) const FEE_SAT: u64 = 1_000;
/// The smallest P2WPKH output Bitcoin Core relays (its dust limit).
const DUST_SAT: u64 = 294;
/// The key the demo generates when the cluster has no ready key.
const KEY_NAME: &str = "demo";
/// How long key generation may take (the first key also waits for the cluster's aux info).
const KEY_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the request may take from submission until it is signed.
const SIGN_TIMEOUT: Duration = Duration::from_secs(600);
/// The memo of the demo's requests.
const MEMO: &str = "strongroom dev demo";

/// Refuses an amount the demo's one 200,000 sat input cannot pay with its fee and change.
pub(crate) fn check_amount(amount_sat: u64) -> anyhow::Result<()> {
    let max = FUNDING_SAT - FEE_SAT - DUST_SAT;
    if !(DUST_SAT..=max).contains(&amount_sat) {
        bail!(
            "--amount must be between {} and {} sat: the demo spends one {} sat output, pays a \
             {} sat fee and keeps at least {} sat of change",
            DUST_SAT,
            group_digits(max),
            group_digits(FUNDING_SAT),
            group_digits(FEE_SAT),
            DUST_SAT
        );
    }
    Ok(())
}

/// Runs the demo against the cluster `api` reaches; a key it generates is `threshold`-of-n.
pub(crate) async fn run(
    api: &ApiClient,
    out: &Output,
    threshold: u16,
    amount_sat: u64,
) -> anyhow::Result<()> {
    check_amount(amount_sat)?;
    let started = Instant::now();
    let (key, generated) = demo_key(api, out, threshold).await?;
    let key_id = text(&key["key_id"]);
    let name = text(&key["name"]);
    let cluster_key = cluster_key_of(&key)?;
    if cluster_key.network() != Network::Regtest {
        bail!(
            "key '{name}' ({key_id}) is on {}: the demo spends a made-up output, which only \
             makes sense on regtest (the dev cluster's network)",
            cluster_key.network()
        );
    }

    let mut txid = [0u8; 32];
    OsRng.fill_bytes(&mut txid);
    let psbt = demo_psbt(&cluster_key, amount_sat, Txid::from_byte_array(txid))?;
    out.progress(&format!(
        "submitting a PSBT: {} sat to {} and {} sat of change, from a made-up {} sat output of \
         key '{name}'",
        group_digits(amount_sat),
        receive_address(&cluster_key, 1)?,
        group_digits(change_of(amount_sat)),
        group_digits(FUNDING_SAT)
    ));
    let submit_started = Instant::now();
    let submitted = submit(api, &key_id, &psbt.to_string(), Some(MEMO)).await?;
    out.progress(&format!(
        "sign request {} submitted to {}; waiting until it is signed",
        submitted.request_id, submitted.node
    ));
    let mut request = wait_for(
        api,
        out,
        submitted.index,
        &submitted.request_id,
        SIGN_TIMEOUT,
    )
    .await?;
    let signing_time = submit_started.elapsed();
    if request["state"] != "signed" {
        out.report(request.clone(), || render_request(&request));
        return outcome(&request);
    }
    let tx = signed_transaction(&request)?;
    check_signed(&tx, &psbt, &cluster_key).with_context(|| {
        format!(
            "the cluster answered sign request {} with a transaction that does not check",
            submitted.request_id
        )
    })?;
    let tx_hex = serialize_hex(&tx);
    request["tx_hex"] = json!(tx_hex);
    let summary = if request["summary"].is_object() {
        request["summary"].clone()
    } else {
        local_summary(&psbt, &cluster_key)
    };
    out.report(request.clone(), || {
        let mut s = format!(
            "signed: sign request {} with key '{name}' ({}), {:.1} s after submitting \
             ({:.1} s in all{})\n",
            submitted.request_id,
            short(&key_id),
            signing_time.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            if generated { ", key generation included" } else { "" },
        );
        s.push_str(&render_summary(&summary));
        let _ = writeln!(
            s,
            "the signature on input 0 verifies under the key at m/0/0 (checked here)"
        );
        let _ = writeln!(
            s,
            "signed transaction (regtest; its input is made up, so no node would accept it):\n{tx_hex}"
        );
        s
    });
    Ok(())
}

/// The key the demo signs with, in full (xpub included), and whether the demo generated it: a
/// ready key named `demo`, else any ready key, else `demo` once it is ready (generated now if
/// the cluster has none).
async fn demo_key(api: &ApiClient, out: &Output, threshold: u16) -> anyhow::Result<(Value, bool)> {
    let keys = list_keys(api).await?;
    let ready = |k: &&Value| k["state"] == "ready";
    let named = |k: &&Value| k["name"] == KEY_NAME;
    if let Some(key) = keys
        .iter()
        .filter(ready)
        .find(named)
        .or_else(|| keys.iter().find(ready))
    {
        let key_id = text(&key["key_id"]);
        out.progress(&format!(
            "using key '{}' ({})",
            text(&key["name"]),
            short(&key_id)
        ));
        return Ok((get_key(api, None, &key_id).await?, false));
    }
    let pending = keys
        .iter()
        .find(|k| k["name"] == KEY_NAME && k["state"] != "failed");
    let (key_id, index) = match pending {
        Some(key) => {
            let key_id = text(&key["key_id"]);
            out.progress(&format!(
                "key '{KEY_NAME}' ({}) is being generated; waiting until it is ready",
                short(&key_id)
            ));
            (key_id, None)
        }
        None => {
            let created = post_key(api, KEY_NAME, threshold).await?;
            out.progress(&format!(
                "generating key '{KEY_NAME}' ({threshold}-of-n, {}) through {}: the first key \
                 also waits for the cluster's aux info, which can take a few minutes",
                short(&created.key_id),
                created.node
            ));
            (created.key_id, created.index)
        }
    };
    let key = wait_until_ready(api, out, index, KEY_NAME, &key_id, KEY_TIMEOUT).await?;
    Ok((key, true))
}

/// The cluster key of a key object of the API (`xpub`, `fingerprint`, `network`), checked:
/// a depth-0 xpub whose fingerprint is the one the API states.
pub(crate) fn cluster_key_of(key: &Value) -> anyhow::Result<ClusterKey> {
    let key_id = text(&key["key_id"]);
    let xpub_text = key["xpub"]
        .as_str()
        .with_context(|| format!("key {key_id} has no xpub (state {})", text(&key["state"])))?;
    let xpub = Xpub::from_str(xpub_text)
        .with_context(|| format!("key {key_id}: xpub '{xpub_text}' does not parse"))?;
    let network_name = key["network"]
        .as_str()
        .with_context(|| format!("key {key_id} names no network"))?;
    let network = Network::from_str(network_name)
        .with_context(|| format!("key {key_id}: unknown network '{network_name}'"))?;
    let cluster_key = ClusterKey::new(
        network,
        &xpub.public_key.serialize(),
        xpub.chain_code.to_bytes(),
    )
    .with_context(|| format!("key {key_id}: xpub '{xpub_text}' is not a usable key"))?;
    if *cluster_key.xpub() != xpub {
        bail!(
            "key {key_id}: xpub '{xpub_text}' is not the depth-0 {network} key the node derives from"
        );
    }
    if let Some(fingerprint) = key["fingerprint"].as_str() {
        if fingerprint != cluster_key.fingerprint().to_string() {
            bail!(
                "key {key_id}: fingerprint {fingerprint} does not belong to xpub '{xpub_text}' \
                 (its fingerprint is {})",
                cluster_key.fingerprint()
            );
        }
    }
    Ok(cluster_key)
}

/// The change the demo keeps: the funding output less the amount and the fee.
fn change_of(amount_sat: u64) -> u64 {
    FUNDING_SAT
        .saturating_sub(amount_sat)
        .saturating_sub(FEE_SAT)
}

fn receive_address(key: &ClusterKey, index: u32) -> anyhow::Result<bitcoin::Address> {
    Ok(key.address(Chain::Receive, index)?)
}

/// The P2WPKH key and script at `m/chain/index`.
fn own_output(
    key: &ClusterKey,
    chain: Chain,
    index: u32,
) -> anyhow::Result<(DerivationPath, CompressedPublicKey, ScriptBuf)> {
    let path = ClusterKey::path(chain, index)?;
    let public_key = key.derive(&path)?;
    let script = ScriptBuf::new_p2wpkh(&public_key.wpubkey_hash());
    Ok((path, public_key, script))
}

/// The demo's PSBT: it spends output 0 of `funding_txid`, taken to pay [`FUNDING_SAT`] to the
/// key's first receive address (`m/0/0`), and pays `amount_sat` to the receive address
/// `m/0/1` (which counts as leaving the key: it carries no derivation) and the rest, less
/// [`FEE_SAT`], to the change address `m/1/0`.
///
/// It carries what the node's intake needs to sign and to recognise change: the spent output
/// (`witness_utxo`), the input's key with its path on the key's fingerprint, the change
/// output's key with its path, and the key's xpub among the global xpubs, which says the
/// network.
pub(crate) fn demo_psbt(
    key: &ClusterKey,
    amount_sat: u64,
    funding_txid: Txid,
) -> anyhow::Result<Psbt> {
    check_amount(amount_sat)?;
    let fingerprint = key.fingerprint();
    let (spent_path, spent_key, spent_script) = own_output(key, Chain::Receive, 0)?;
    let destination = receive_address(key, 1)?.script_pubkey();
    let (change_path, change_key, change_script) = own_output(key, Chain::Change, 0)?;
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(funding_txid, 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(amount_sat),
                script_pubkey: destination,
            },
            TxOut {
                value: Amount::from_sat(change_of(amount_sat)),
                script_pubkey: change_script,
            },
        ],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).context("cannot make a PSBT of the transaction")?;
    psbt.xpub
        .insert(*key.xpub(), (fingerprint, DerivationPath::master()));
    let input = &mut psbt.inputs[0];
    input.witness_utxo = Some(TxOut {
        value: Amount::from_sat(FUNDING_SAT),
        script_pubkey: spent_script,
    });
    input
        .bip32_derivation
        .insert(spent_key.0, (fingerprint, spent_path));
    psbt.outputs[1]
        .bip32_derivation
        .insert(change_key.0, (fingerprint, change_path));
    Ok(psbt)
}

/// The signed transaction of a signed request: its `tx_hex`, else extracted from its
/// finalized `psbt`.
fn signed_transaction(request: &Value) -> anyhow::Result<Transaction> {
    if let Some(hex) = request["tx_hex"].as_str() {
        return deserialize_hex(hex).context("the signed request's tx_hex is no transaction");
    }
    let psbt_text = request["psbt"]
        .as_str()
        .context("the signed request carries neither tx_hex nor a signed PSBT")?;
    let psbt = Psbt::from_str(psbt_text).context("the signed request's PSBT does not parse")?;
    Ok(psbt.extract_tx_unchecked_fee_rate())
}

/// Checks that `tx` is the demo's transaction, `unsigned`, with a valid signature of the key
/// at `m/0/0` over its BIP-143 sighash on input 0.
fn check_signed(tx: &Transaction, unsigned: &Psbt, key: &ClusterKey) -> anyhow::Result<()> {
    if tx.compute_txid() != unsigned.unsigned_tx.compute_txid() {
        bail!(
            "its txid {} is not the txid {} of the PSBT submitted",
            tx.compute_txid(),
            unsigned.unsigned_tx.compute_txid()
        );
    }
    let (_, spent_key, spent_script) = own_output(key, Chain::Receive, 0)?;
    let witness = &tx.input[0].witness;
    let (Some(signature), Some(public_key), 2) = (witness.nth(0), witness.nth(1), witness.len())
    else {
        bail!(
            "input 0 has a witness of {} items, not a P2WPKH signature and key",
            witness.len()
        );
    };
    let signature = bitcoin::ecdsa::Signature::from_slice(signature)
        .context("input 0: the witness holds no ECDSA signature")?;
    let public_key = CompressedPublicKey::from_slice(public_key)
        .context("input 0: the witness holds no compressed public key")?;
    if public_key != spent_key {
        bail!("input 0: the witness key {public_key} is not the key at m/0/0 ({spent_key})");
    }
    let sighash = SighashCache::new(tx)
        .p2wpkh_signature_hash(
            0,
            &spent_script,
            Amount::from_sat(FUNDING_SAT),
            signature.sighash_type,
        )
        .context("input 0: cannot compute the sighash")?;
    Secp256k1::verification_only()
        .verify_ecdsa(
            &Message::from_digest(sighash.to_byte_array()),
            &signature.signature,
            &public_key.0,
        )
        .context("input 0: the signature does not verify")?;
    Ok(())
}

/// The summary `sign status` shows, computed here from the demo's PSBT (for a node that sends
/// none).
fn local_summary(psbt: &Psbt, key: &ClusterKey) -> Value {
    let tx = &psbt.unsigned_tx;
    let network = key.network();
    let outputs: Vec<Value> = tx
        .output
        .iter()
        .zip(&psbt.outputs)
        .map(|(out, meta)| {
            let address = bitcoin::Address::from_script(&out.script_pubkey, network)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| out.script_pubkey.to_hex_string());
            json!({
                "address": address,
                "amount_sat": out.value.to_sat(),
                "is_change": !meta.bip32_derivation.is_empty(),
            })
        })
        .collect();
    let total_in: u64 = psbt
        .inputs
        .iter()
        .filter_map(|i| i.witness_utxo.as_ref())
        .map(|u| u.value.to_sat())
        .sum();
    let total_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    json!({
        "txid": tx.compute_txid().to_string(),
        "inputs": tx.input.iter().zip(&psbt.inputs).map(|(txin, meta)| json!({
            "previous_output": txin.previous_output.to_string(),
            "amount_sat": meta.witness_utxo.as_ref().map(|u| u.value.to_sat()),
            "ours": !meta.bip32_derivation.is_empty(),
            "path": meta.bip32_derivation.values().next().map(|(_, path)| path.to_string()),
        })).collect::<Vec<_>>(),
        "outputs": outputs,
        "fee_sat": total_in.saturating_sub(total_out),
        "total_in_sat": total_in,
    })
}

#[cfg(test)]
mod tests {
    use strongroom_bitcoin::bitcoin::bip32::Xpriv;
    use strongroom_bitcoin::bitcoin::ecdsa;
    use strongroom_bitcoin::bitcoin::sighash::EcdsaSighashType;
    use strongroom_bitcoin::{IntakeOptions, intake_base64};

    use super::*;

    /// A software master key standing in for the cluster key, and the cluster key.
    fn test_key() -> (Xpriv, ClusterKey) {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let xpriv = Xpriv::new_master(Network::Regtest, &seed).unwrap();
        let xpub = Xpub::from_priv(&Secp256k1::new(), &xpriv);
        let key = ClusterKey::new(
            Network::Regtest,
            &xpub.public_key.serialize(),
            xpub.chain_code.to_bytes(),
        )
        .unwrap();
        (xpriv, key)
    }

    fn api_key(key: &ClusterKey) -> Value {
        json!({
            "key_id": "ab".repeat(32), "name": "demo", "state": "ready", "network": "regtest",
            "xpub": key.xpub_string(), "fingerprint": key.fingerprint().to_string(),
        })
    }

    #[test]
    fn the_node_intake_accepts_the_demo_psbt() {
        let (_, key) = test_key();
        let txid = Txid::from_byte_array([7; 32]);
        let psbt = demo_psbt(&key, DEFAULT_AMOUNT_SAT, txid).unwrap();
        let request =
            intake_base64(&psbt.to_string(), &key, "key-1", &IntakeOptions::default()).unwrap();
        let a = request.analysis();
        assert_eq!(a.network, Network::Regtest);
        assert_eq!(a.total_in_sat, FUNDING_SAT);
        assert_eq!(a.fee_sat, FEE_SAT);
        assert_eq!(a.total_out_sat + a.fee_sat, a.total_in_sat);
        assert_eq!(a.inputs.len(), 1);
        assert!(a.inputs[0].is_ours());
        assert_eq!(a.inputs[0].previous_output, OutPoint::new(txid, 0));
        // The amount to m/0/1 leaves the key; the rest comes back as change to m/1/0.
        assert_eq!(a.outputs.len(), 2);
        assert_eq!(a.outputs[0].amount_sat, DEFAULT_AMOUNT_SAT);
        assert!(!a.outputs[0].is_change);
        assert_eq!(
            a.outputs[0].address,
            key.address(Chain::Receive, 1).unwrap().to_string()
        );
        assert_eq!(
            a.outputs[1].amount_sat,
            FUNDING_SAT - DEFAULT_AMOUNT_SAT - FEE_SAT
        );
        assert!(a.outputs[1].is_change);
        assert_eq!(
            a.outputs[1].change_path,
            Some(ClusterKey::path(Chain::Change, 0).unwrap())
        );
        assert_eq!(a.spend_sat(), DEFAULT_AMOUNT_SAT);
        // One signature, by the key at m/0/0.
        let to_sign = request.inputs_to_sign();
        assert_eq!(to_sign.len(), 1);
        assert_eq!(
            to_sign[0].path,
            ClusterKey::path(Chain::Receive, 0).unwrap()
        );
        assert_eq!(
            to_sign[0].public_key,
            key.derive_at(Chain::Receive, 0).unwrap()
        );
        // The fee rate stays far below the dev policy's cap.
        assert!(a.fee_rate_sat_per_vb < 1000.0);
    }

    #[test]
    fn amounts_add_up_at_the_edges_and_beyond_them_are_refused() {
        let (_, key) = test_key();
        let txid = Txid::from_byte_array([1; 32]);
        for amount in [DUST_SAT, 1_000, FUNDING_SAT - FEE_SAT - DUST_SAT] {
            let psbt = demo_psbt(&key, amount, txid).unwrap();
            let outs: Vec<u64> = psbt
                .unsigned_tx
                .output
                .iter()
                .map(|o| o.value.to_sat())
                .collect();
            assert_eq!(outs[0], amount);
            assert_eq!(outs.iter().sum::<u64>() + FEE_SAT, FUNDING_SAT);
            assert!(outs[1] >= DUST_SAT);
            intake_base64(&psbt.to_string(), &key, "k", &IntakeOptions::default()).unwrap();
        }
        for amount in [
            0,
            DUST_SAT - 1,
            FUNDING_SAT - FEE_SAT - DUST_SAT + 1,
            FUNDING_SAT,
        ] {
            let err = demo_psbt(&key, amount, txid).unwrap_err().to_string();
            assert!(err.contains("--amount must be between 294 and"), "{err}");
        }
    }

    #[test]
    fn the_psbt_names_the_key_and_the_network() {
        let (_, key) = test_key();
        let psbt = demo_psbt(&key, 10_000, Txid::from_byte_array([2; 32])).unwrap();
        assert_eq!(
            psbt.xpub.get(key.xpub()),
            Some(&(key.fingerprint(), DerivationPath::master()))
        );
        // The destination carries no derivation, so it counts as leaving the key.
        assert!(psbt.outputs[0].bip32_derivation.is_empty());
        assert_eq!(psbt.outputs[1].bip32_derivation.len(), 1);
        let summary = local_summary(&psbt, &key);
        assert_eq!(summary["fee_sat"], FEE_SAT);
        assert_eq!(summary["outputs"][1]["is_change"], true);
        assert_eq!(summary["outputs"][0]["amount_sat"], 10_000);
    }

    #[test]
    fn the_key_comes_from_the_api_object_checked() {
        let (_, key) = test_key();
        let v = api_key(&key);
        assert_eq!(cluster_key_of(&v).unwrap(), key);
        let mut wrong_fp = v.clone();
        wrong_fp["fingerprint"] = json!("00000000");
        let err = cluster_key_of(&wrong_fp).unwrap_err().to_string();
        assert!(err.contains("does not belong to xpub"), "{err}");
        let mut no_xpub = v.clone();
        no_xpub["xpub"] = Value::Null;
        assert!(cluster_key_of(&no_xpub).is_err());
        // A child xpub is not the depth-0 key the node derives from.
        let (xpriv, _) = test_key();
        let secp = Secp256k1::new();
        let child = Xpub::from_priv(
            &secp,
            &xpriv
                .derive_priv(&secp, &DerivationPath::from_str("m/0").unwrap())
                .unwrap(),
        );
        let mut deep = v;
        deep["xpub"] = json!(child.to_string());
        deep["fingerprint"] = Value::Null;
        let err = cluster_key_of(&deep).unwrap_err().to_string();
        assert!(err.contains("depth-0"), "{err}");
    }

    /// Signs input 0 of the demo PSBT with the software key, as the cluster would.
    fn sign_like_the_cluster(xpriv: &Xpriv, psbt: &Psbt) -> Transaction {
        let secp = Secp256k1::new();
        let path = ClusterKey::path(Chain::Receive, 0).unwrap();
        let child = xpriv.derive_priv(&secp, &path).unwrap();
        let public_key = CompressedPublicKey(child.private_key.public_key(&secp));
        let mut tx = psbt.unsigned_tx.clone();
        let script = ScriptBuf::new_p2wpkh(&public_key.wpubkey_hash());
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(
                0,
                &script,
                Amount::from_sat(FUNDING_SAT),
                EcdsaSighashType::All,
            )
            .unwrap();
        let signature = ecdsa::Signature::sighash_all(secp.sign_ecdsa(
            &Message::from_digest(sighash.to_byte_array()),
            &child.private_key,
        ));
        tx.input[0].witness = Witness::p2wpkh(&signature, &public_key.0);
        tx
    }

    #[test]
    fn signed_transactions_are_checked() {
        let (xpriv, key) = test_key();
        let psbt = demo_psbt(&key, 20_000, Txid::from_byte_array([3; 32])).unwrap();
        let tx = sign_like_the_cluster(&xpriv, &psbt);
        check_signed(&tx, &psbt, &key).unwrap();
        let request = json!({"state": "signed", "tx_hex": serialize_hex(&tx)});
        assert_eq!(signed_transaction(&request).unwrap(), tx);

        // Another transaction, a missing witness, a signature by another key: refused.
        let other = demo_psbt(&key, 30_000, Txid::from_byte_array([3; 32])).unwrap();
        let err = check_signed(&tx, &other, &key).unwrap_err().to_string();
        assert!(err.contains("is not the txid"), "{err}");
        let mut bare = tx.clone();
        bare.input[0].witness = Witness::new();
        assert!(check_signed(&bare, &psbt, &key).is_err());
        let (stranger, _) = test_key();
        let forged = sign_like_the_cluster(&stranger, &psbt);
        let err = check_signed(&forged, &psbt, &key).unwrap_err().to_string();
        assert!(err.contains("is not the key at m/0/0"), "{err}");
        let mut tampered = tx.clone();
        let mut items: Vec<Vec<u8>> = tampered.input[0]
            .witness
            .iter()
            .map(<[u8]>::to_vec)
            .collect();
        let sig_len = items[0].len();
        items[0][sig_len - 2] ^= 1;
        tampered.input[0].witness = Witness::from_slice(&items);
        assert!(check_signed(&tampered, &psbt, &key).is_err());
    }

    #[test]
    fn a_finalized_psbt_stands_in_for_tx_hex() {
        let (xpriv, key) = test_key();
        let mut psbt = demo_psbt(&key, 20_000, Txid::from_byte_array([4; 32])).unwrap();
        let tx = sign_like_the_cluster(&xpriv, &psbt);
        psbt.inputs[0].final_script_witness = Some(tx.input[0].witness.clone());
        let request = json!({"state": "signed", "tx_hex": null, "psbt": psbt.to_string()});
        assert_eq!(signed_transaction(&request).unwrap(), tx);
        assert!(signed_transaction(&json!({"state": "signed"})).is_err());
    }
}
