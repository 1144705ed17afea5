//! PSBT intake: parse, validate, recognise our inputs and change, compute sighashes, analyse.

use std::collections::BTreeMap;

use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{self, Psbt};
use bitcoin::secp256k1;
use bitcoin::sighash::{EcdsaSighashType, SegwitV0Sighash, SighashCache};
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, NetworkKind, OutPoint, Script, ScriptBuf,
    Transaction, TxOut, Txid,
};
use serde::{Deserialize, Serialize};

use crate::digest::{self, RequestDigest};
use crate::keys::{Chain, ClusterKey, KeyError, MAX_PATH_DEPTH};
use crate::size::{self, InputSize};

/// Default limit on the decoded size of a PSBT: 1 MiB.
pub const DEFAULT_MAX_PSBT_BYTES: usize = 1 << 20;

/// How strict the intake is; the caller (configuration and policy) decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeOptions {
    /// Largest PSBT accepted, in decoded bytes.
    pub max_psbt_bytes: usize,
    /// Sighash types our inputs may ask for besides `SIGHASH_ALL`, which is always allowed.
    pub extra_sighash_types: Vec<EcdsaSighashType>,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        IntakeOptions {
            max_psbt_bytes: DEFAULT_MAX_PSBT_BYTES,
            extra_sighash_types: Vec::new(),
        }
    }
}

impl IntakeOptions {
    fn allows(&self, sighash_type: EcdsaSighashType) -> bool {
        sighash_type == EcdsaSighashType::All || self.extra_sighash_types.contains(&sighash_type)
    }
}

/// Why a PSBT was refused. Each message names the input, output or field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The PSBT is larger than the configured limit.
    #[error("psbt: {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Size of the PSBT (decoded bytes, or an estimate from the base64 length).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The text is not standard base64.
    #[error("psbt: not valid base64 ({0})")]
    Base64(String),
    /// The bytes are not a BIP-174 PSBT.
    #[error("psbt: not a valid BIP-174 PSBT ({0})")]
    Malformed(String),
    /// Bytes follow the last output map.
    #[error("psbt: {0} unexpected bytes after the last output map")]
    TrailingBytes(usize),
    /// The unsigned transaction has no outputs.
    #[error("psbt: the unsigned transaction has no outputs")]
    NoOutputs,
    /// A global xpub is encoded for a network other than the configured one.
    #[error(
        "psbt global xpub {xpub}: encoded for {found}, but the node is configured for {network}"
    )]
    WrongNetworkXpub {
        /// The xpub as found.
        xpub: String,
        /// Network kind of its version bytes.
        found: NetworkKindName,
        /// The configured network.
        network: Network,
    },
    /// Two inputs spend the same outpoint.
    #[error("input {input}: spends {outpoint}, which input {first} already spends")]
    DuplicateInput {
        /// The later input.
        input: usize,
        /// The earlier input spending the same outpoint.
        first: usize,
        /// The outpoint spent twice.
        outpoint: OutPoint,
    },
    /// The input has neither `witness_utxo` nor `non_witness_utxo`.
    #[error(
        "input {input}: has neither witness_utxo nor non_witness_utxo, so its amount is unknown"
    )]
    MissingUtxo {
        /// The input index.
        input: usize,
    },
    /// The `non_witness_utxo` does not describe the output the input spends.
    #[error("input {input}: non_witness_utxo {reason}")]
    UtxoMismatch {
        /// The input index.
        input: usize,
        /// What does not match.
        reason: String,
    },
    /// An input of the cluster key lacks `witness_utxo`.
    #[error(
        "input {input}: derives from the cluster key but has no witness_utxo (required for P2WPKH signing)"
    )]
    MissingWitnessUtxo {
        /// The input index.
        input: usize,
    },
    /// A derivation on the cluster fingerprint has a hardened step.
    #[error(
        "input {input}: bip32_derivation path {path} on the cluster fingerprint is hardened; the node signs only non-hardened paths"
    )]
    HardenedPath {
        /// The input index.
        input: usize,
        /// The path as given.
        path: DerivationPath,
    },
    /// A derivation on the cluster fingerprint cannot be derived.
    #[error(
        "input {input}: bip32_derivation path on the cluster fingerprint cannot be derived ({source})"
    )]
    Derivation {
        /// The input index.
        input: usize,
        /// Why the derivation failed.
        source: KeyError,
    },
    /// A derivation claims the cluster fingerprint with a key that is not the derived one.
    #[error(
        "input {input}: bip32_derivation claims the cluster fingerprint at {path}, but its public key {claimed} is not the key derived there ({derived})"
    )]
    WrongPublicKey {
        /// The input index.
        input: usize,
        /// The path claimed.
        path: DerivationPath,
        /// The key in the derivation entry (hex).
        claimed: String,
        /// The key the cluster xpub derives at the path (hex).
        derived: String,
    },
    /// Several derivations on one input claim the cluster fingerprint.
    #[error(
        "input {input}: {count} bip32_derivation entries claim the cluster fingerprint; a P2WPKH input has one key"
    )]
    SeveralOwnDerivations {
        /// The input index.
        input: usize,
        /// How many entries claim the fingerprint.
        count: usize,
    },
    /// The input derives from the cluster key but does not spend its P2WPKH script.
    #[error(
        "input {input}: derives from the cluster key at {path}, but witness_utxo script {script} is not that key's P2WPKH script"
    )]
    NotOwnScript {
        /// The input index.
        input: usize,
        /// The derivation path.
        path: DerivationPath,
        /// The script in witness_utxo.
        script: ScriptBuf,
    },
    /// The input asks for a sighash type that is not a standard ECDSA one.
    #[error("input {input}: sighash_type {value:#x} is not a standard ECDSA sighash type")]
    NonStandardSighash {
        /// The input index.
        input: usize,
        /// The raw value.
        value: u32,
    },
    /// The input asks for a sighash type the node is not allowed to sign.
    #[error(
        "input {input}: sighash_type {sighash_type} is not allowed (only SIGHASH_ALL unless policy allows more)"
    )]
    SighashNotAllowed {
        /// The input index.
        input: usize,
        /// The type asked for.
        sighash_type: EcdsaSighashType,
    },
    /// `SIGHASH_SINGLE` on an input with no output at the same index would commit to no output.
    #[error(
        "input {input}: {sighash_type} without an output at index {input} would sign no output"
    )]
    SingleWithoutOutput {
        /// The input index.
        input: usize,
        /// The SINGLE variant asked for.
        sighash_type: EcdsaSighashType,
    },
    /// An amount exceeds the 21 million BTC supply, or a sum overflows.
    #[error("{field}: amount exceeds the 21,000,000 BTC supply")]
    AmountTooLarge {
        /// Which amount: `input N`, `output N`, `total of inputs`, `total of outputs`.
        field: String,
    },
    /// Outputs spend more than the inputs bring.
    #[error(
        "psbt: outputs total {total_out} sat, more than the {total_in} sat the inputs bring (negative fee)"
    )]
    NegativeFee {
        /// Sum of input amounts, in satoshi.
        total_in: u64,
        /// Sum of output amounts, in satoshi.
        total_out: u64,
    },
    /// An output script has no address form on the configured network.
    #[error("output {output}: script {script} has no address on {network} ({reason})")]
    OutputNotAddress {
        /// The output index.
        output: usize,
        /// The output script.
        script: ScriptBuf,
        /// The configured network.
        network: Network,
        /// Why no address renders.
        reason: String,
    },
    /// An output derivation claims the cluster fingerprint with a key that is not the derived one.
    #[error(
        "output {output}: bip32_derivation claims the cluster fingerprint at {path}, but its public key {claimed} is not the key derived there ({derived})"
    )]
    OutputWrongPublicKey {
        /// The output index.
        output: usize,
        /// The path claimed.
        path: DerivationPath,
        /// The key in the derivation entry (hex).
        claimed: String,
        /// The key the cluster xpub derives at the path (hex).
        derived: String,
    },
    /// No input belongs to the cluster key.
    #[error(
        "psbt: no input belongs to the cluster key (fingerprint {fingerprint}); an input of ours is P2WPKH with witness_utxo and a non-hardened bip32_derivation on that fingerprint"
    )]
    NoInputOfOurs {
        /// The cluster key's master fingerprint.
        fingerprint: Fingerprint,
    },
    /// A foreign, unfinalized input spends a script whose final size cannot be estimated.
    #[error(
        "input {input}: foreign input spending a {kind} output is not finalized, so the transaction size cannot be estimated; finalize it before submitting"
    )]
    UnknownInputSize {
        /// The input index.
        input: usize,
        /// The kind of script it spends.
        kind: &'static str,
    },
    /// The sighash could not be computed.
    #[error("input {input}: cannot compute the BIP-143 sighash ({reason})")]
    Sighash {
        /// The input index.
        input: usize,
        /// What the sighash computation reported.
        reason: String,
    },
}

impl IntakeError {
    /// The input the error is about, if it is about one.
    pub fn input(&self) -> Option<usize> {
        use IntakeError::*;
        match self {
            DuplicateInput { input, .. }
            | MissingUtxo { input }
            | UtxoMismatch { input, .. }
            | MissingWitnessUtxo { input }
            | HardenedPath { input, .. }
            | Derivation { input, .. }
            | WrongPublicKey { input, .. }
            | SeveralOwnDerivations { input, .. }
            | NotOwnScript { input, .. }
            | NonStandardSighash { input, .. }
            | SighashNotAllowed { input, .. }
            | SingleWithoutOutput { input, .. }
            | UnknownInputSize { input, .. }
            | Sighash { input, .. } => Some(*input),
            _ => None,
        }
    }

    /// The output the error is about, if it is about one.
    pub fn output(&self) -> Option<usize> {
        match self {
            IntakeError::OutputNotAddress { output, .. }
            | IntakeError::OutputWrongPublicKey { output, .. } => Some(*output),
            _ => None,
        }
    }
}

/// A network kind as it appears in messages (`mainnet` or `testnet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkKindName(pub NetworkKind);

impl std::fmt::Display for NetworkKindName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_mainnet() {
            "mainnet"
        } else {
            "a test network"
        })
    }
}

/// Who an input belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "owner", rename_all = "snake_case")]
pub enum InputOwner {
    /// The cluster key signs this input.
    Ours {
        /// Derivation path below the cluster key.
        path: DerivationPath,
        /// The child key at that path.
        public_key: CompressedPublicKey,
        /// The sighash type the node signs with.
        sighash_type: EcdsaSighashType,
    },
    /// Someone else signs this input; the node leaves it alone.
    Foreign {
        /// Whether it already carries a final scriptSig or witness.
        finalized: bool,
    },
}

/// One input as the node understands it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputAnalysis {
    /// Position in the transaction.
    pub index: usize,
    /// The outpoint spent.
    pub previous_output: OutPoint,
    /// Amount of the spent output, in satoshi.
    pub amount_sat: u64,
    /// Who signs it.
    #[serde(flatten)]
    pub owner: InputOwner,
}

impl InputAnalysis {
    /// Whether the cluster key signs this input.
    pub fn is_ours(&self) -> bool {
        matches!(self.owner, InputOwner::Ours { .. })
    }
}

/// One output as the node understands it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputAnalysis {
    /// Position in the transaction.
    pub index: usize,
    /// The address, rendered for the configured network.
    pub address: String,
    /// Amount, in satoshi.
    pub amount_sat: u64,
    /// Whether the output pays back to the key's own descriptors (`/0/*` or `/1/*`).
    pub is_change: bool,
    /// The path of the own key it pays to, when it is change.
    pub change_path: Option<DerivationPath>,
}

/// Everything the policy needs to know about a transaction, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxAnalysis {
    /// The cluster key asked to sign.
    pub key_id: String,
    /// The configured network.
    pub network: Network,
    /// Txid of the unsigned transaction (segwit txids do not change when signed).
    pub txid: Txid,
    /// Every input, in order.
    pub inputs: Vec<InputAnalysis>,
    /// Every output, in order.
    pub outputs: Vec<OutputAnalysis>,
    /// Sum of input amounts, in satoshi.
    pub total_in_sat: u64,
    /// Sum of output amounts, in satoshi.
    pub total_out_sat: u64,
    /// Fee: inputs minus outputs, in satoshi.
    pub fee_sat: u64,
    /// Estimated weight of the finalized transaction (see the crate docs for the estimate).
    pub weight: u64,
    /// Estimated virtual size of the finalized transaction, in vbytes.
    pub vsize: u64,
    /// `fee_sat / vsize`, in sat/vB; exact comparisons should use `fee_sat` and `vsize`.
    pub fee_rate_sat_per_vb: f64,
}

impl TxAnalysis {
    /// Number of inputs.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// Sum of outputs that are not change, in satoshi: what leaves the key.
    pub fn spend_sat(&self) -> u64 {
        self.outputs
            .iter()
            .filter(|o| !o.is_change)
            .map(|o| o.amount_sat)
            .sum()
    }

    /// Whether every input is the cluster's.
    pub fn all_inputs_ours(&self) -> bool {
        self.inputs.iter().all(InputAnalysis::is_ours)
    }
}

/// One signature the threshold signer must produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputToSign {
    /// The input index.
    pub input_index: usize,
    /// Derivation path below the cluster key.
    pub path: DerivationPath,
    /// The child key the signature must verify under.
    pub public_key: CompressedPublicKey,
    /// The sighash type appended to the signature.
    pub sighash_type: EcdsaSighashType,
    /// The BIP-143 sighash, computed by this node from the PSBT.
    pub sighash: SegwitV0Sighash,
}

impl InputToSign {
    /// The sighash as a secp256k1 message.
    pub fn message(&self) -> secp256k1::Message {
        secp256k1::Message::from_digest(self.sighash.to_byte_array())
    }
}

/// A PSBT that passed intake: validated, analysed, with its sighashes and request digest.
///
/// Only [`intake_base64`] and [`intake_bytes`] build one, so holding it means the checks ran.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub(crate) psbt: Psbt,
    pub(crate) raw: Vec<u8>,
    pub(crate) key: ClusterKey,
    pub(crate) analysis: TxAnalysis,
    pub(crate) to_sign: Vec<InputToSign>,
    pub(crate) digest: RequestDigest,
}

impl SignRequest {
    /// The parsed PSBT as received.
    pub fn psbt(&self) -> &Psbt {
        &self.psbt
    }

    /// The PSBT bytes exactly as received (base64-decoded).
    pub fn raw_psbt(&self) -> &[u8] {
        &self.raw
    }

    /// The cluster key the request is for.
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// What the transaction does.
    pub fn analysis(&self) -> &TxAnalysis {
        &self.analysis
    }

    /// The signatures the threshold signer must produce, by ascending input index.
    pub fn inputs_to_sign(&self) -> &[InputToSign] {
        &self.to_sign
    }

    /// The request digest that votes and approvals sign.
    pub fn digest(&self) -> RequestDigest {
        self.digest
    }
}

/// Decodes base64 (surrounding whitespace ignored) and runs [`intake_bytes`].
pub fn intake_base64(
    text: &str,
    key: &ClusterKey,
    key_id: &str,
    options: &IntakeOptions,
) -> Result<SignRequest, IntakeError> {
    use bitcoin::base64::Engine as _;
    let text = text.trim_ascii();
    // Each 4 base64 characters carry 3 bytes: refuse before decoding anything too long.
    let decoded_bound = text.len() / 4 * 3;
    if decoded_bound > options.max_psbt_bytes.saturating_add(3) {
        return Err(IntakeError::Oversized {
            size: decoded_bound,
            limit: options.max_psbt_bytes,
        });
    }
    let bytes = bitcoin::base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| IntakeError::Base64(e.to_string()))?;
    intake_bytes(&bytes, key, key_id, options)
}

/// Parses and validates a binary PSBT for `key` on the key's network.
pub fn intake_bytes(
    bytes: &[u8],
    key: &ClusterKey,
    key_id: &str,
    options: &IntakeOptions,
) -> Result<SignRequest, IntakeError> {
    if bytes.len() > options.max_psbt_bytes {
        return Err(IntakeError::Oversized {
            size: bytes.len(),
            limit: options.max_psbt_bytes,
        });
    }
    let mut reader = bytes;
    let psbt = Psbt::deserialize_from_reader(&mut reader)
        .map_err(|e| IntakeError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(IntakeError::TrailingBytes(reader.len()));
    }
    Intake {
        psbt: &psbt,
        key,
        options,
    }
    .run(bytes, key_id)
}

struct Intake<'a> {
    psbt: &'a Psbt,
    key: &'a ClusterKey,
    options: &'a IntakeOptions,
}

/// An input of ours, before its sighash is computed.
struct OwnInput {
    path: DerivationPath,
    public_key: CompressedPublicKey,
    script: ScriptBuf,
    amount: Amount,
    sighash_type: EcdsaSighashType,
}

impl Intake<'_> {
    fn run(&self, raw: &[u8], key_id: &str) -> Result<SignRequest, IntakeError> {
        let tx = &self.psbt.unsigned_tx;
        let network = self.key.network();
        if tx.output.is_empty() {
            return Err(IntakeError::NoOutputs);
        }
        for xpub in self.psbt.xpub.keys() {
            if xpub.network != NetworkKind::from(network) {
                return Err(IntakeError::WrongNetworkXpub {
                    xpub: xpub.to_string(),
                    found: NetworkKindName(xpub.network),
                    network,
                });
            }
        }

        let mut seen = BTreeMap::new();
        let mut total_in = Amount::ZERO;
        let mut inputs = Vec::with_capacity(tx.input.len());
        let mut own = Vec::new();
        let mut sizes = Vec::with_capacity(tx.input.len());
        for (index, (txin, input)) in tx.input.iter().zip(&self.psbt.inputs).enumerate() {
            if let Some(first) = seen.insert(txin.previous_output, index) {
                return Err(IntakeError::DuplicateInput {
                    input: index,
                    first,
                    outpoint: txin.previous_output,
                });
            }
            // Our inputs first, so that one lacking witness_utxo is named as such.
            let ours = self.own_input(index, input, tx)?;
            let utxo = spent_output(index, txin.previous_output, input)?;
            check_amount(utxo.value, || format!("input {index}"))?;
            total_in = total_in
                .checked_add(utxo.value)
                .ok_or_else(|| too_large("total of inputs"))?;
            check_amount(total_in, || "total of inputs".to_owned())?;

            let owner = match ours {
                Some(found) => {
                    sizes.push(InputSize {
                        script_sig: 0,
                        witness: size::P2WPKH_WITNESS_BYTES,
                    });
                    let owner = InputOwner::Ours {
                        path: found.path.clone(),
                        public_key: found.public_key,
                        sighash_type: found.sighash_type,
                    };
                    own.push((index, found));
                    owner
                }
                None => {
                    sizes.push(foreign_size(index, input, &utxo.script_pubkey)?);
                    let finalized =
                        input.final_script_sig.is_some() || input.final_script_witness.is_some();
                    InputOwner::Foreign { finalized }
                }
            };
            inputs.push(InputAnalysis {
                index,
                previous_output: txin.previous_output,
                amount_sat: utxo.value.to_sat(),
                owner,
            });
        }
        if own.is_empty() {
            return Err(IntakeError::NoInputOfOurs {
                fingerprint: self.key.fingerprint(),
            });
        }

        let mut total_out = Amount::ZERO;
        let mut outputs = Vec::with_capacity(tx.output.len());
        for (index, (txout, output)) in tx.output.iter().zip(&self.psbt.outputs).enumerate() {
            check_amount(txout.value, || format!("output {index}"))?;
            total_out = total_out
                .checked_add(txout.value)
                .ok_or_else(|| too_large("total of outputs"))?;
            check_amount(total_out, || "total of outputs".to_owned())?;
            let address = Address::from_script(&txout.script_pubkey, network).map_err(|e| {
                IntakeError::OutputNotAddress {
                    output: index,
                    script: txout.script_pubkey.clone(),
                    network,
                    reason: e.to_string(),
                }
            })?;
            let change_path = self.change_path(index, &txout.script_pubkey, output)?;
            outputs.push(OutputAnalysis {
                index,
                address: address.to_string(),
                amount_sat: txout.value.to_sat(),
                is_change: change_path.is_some(),
                change_path,
            });
        }
        let fee = total_in
            .checked_sub(total_out)
            .ok_or(IntakeError::NegativeFee {
                total_in: total_in.to_sat(),
                total_out: total_out.to_sat(),
            })?;

        let mut cache = SighashCache::new(tx);
        let mut to_sign = Vec::with_capacity(own.len());
        for (index, found) in own {
            let sighash = cache
                .p2wpkh_signature_hash(index, &found.script, found.amount, found.sighash_type)
                .map_err(|e| IntakeError::Sighash {
                    input: index,
                    reason: e.to_string(),
                })?;
            to_sign.push(InputToSign {
                input_index: index,
                path: found.path,
                public_key: found.public_key,
                sighash_type: found.sighash_type,
                sighash,
            });
        }

        let weight = size::estimated_weight(tx, &sizes);
        let vsize = size::vsize(weight);
        let txid = tx.compute_txid();
        let analysis = TxAnalysis {
            key_id: key_id.to_owned(),
            network,
            txid,
            inputs,
            outputs,
            total_in_sat: total_in.to_sat(),
            total_out_sat: total_out.to_sat(),
            fee_sat: fee.to_sat(),
            weight,
            vsize,
            // vsize is at least the 10-byte transaction skeleton, never zero.
            fee_rate_sat_per_vb: fee.to_sat() as f64 / vsize.max(1) as f64,
        };
        let digest = digest::request_digest(network, key_id, &txid, raw, &to_sign);
        Ok(SignRequest {
            psbt: self.psbt.clone(),
            raw: raw.to_vec(),
            key: self.key.clone(),
            analysis,
            to_sign,
            digest,
        })
    }

    /// Recognises an input of the cluster key, or returns `None` for a foreign one.
    fn own_input(
        &self,
        index: usize,
        input: &psbt::Input,
        tx: &Transaction,
    ) -> Result<Option<OwnInput>, IntakeError> {
        let fingerprint = self.key.fingerprint();
        let mut claims = input
            .bip32_derivation
            .iter()
            .filter(|(_, (fp, _))| *fp == fingerprint);
        let Some((claimed, (_, path))) = claims.next() else {
            return Ok(None);
        };
        let count = 1 + claims.count();
        if count > 1 {
            return Err(IntakeError::SeveralOwnDerivations {
                input: index,
                count,
            });
        }
        if path.into_iter().any(ChildNumber::is_hardened) {
            return Err(IntakeError::HardenedPath {
                input: index,
                path: path.clone(),
            });
        }
        let derived = self
            .key
            .derive(path)
            .map_err(|source| IntakeError::Derivation {
                input: index,
                source,
            })?;
        if derived.0 != *claimed {
            return Err(IntakeError::WrongPublicKey {
                input: index,
                path: path.clone(),
                claimed: claimed.to_string(),
                derived: derived.to_string(),
            });
        }
        let utxo = input
            .witness_utxo
            .as_ref()
            .ok_or(IntakeError::MissingWitnessUtxo { input: index })?;
        let script = ScriptBuf::new_p2wpkh(&derived.wpubkey_hash());
        if utxo.script_pubkey != script {
            return Err(IntakeError::NotOwnScript {
                input: index,
                path: path.clone(),
                script: utxo.script_pubkey.clone(),
            });
        }
        let sighash_type = match input.sighash_type {
            None => EcdsaSighashType::All,
            Some(requested) => {
                requested
                    .ecdsa_hash_ty()
                    .map_err(|_| IntakeError::NonStandardSighash {
                        input: index,
                        value: requested.to_u32(),
                    })?
            }
        };
        if !self.options.allows(sighash_type) {
            return Err(IntakeError::SighashNotAllowed {
                input: index,
                sighash_type,
            });
        }
        let single = matches!(
            sighash_type,
            EcdsaSighashType::Single | EcdsaSighashType::SinglePlusAnyoneCanPay
        );
        if single && index >= tx.output.len() {
            return Err(IntakeError::SingleWithoutOutput {
                input: index,
                sighash_type,
            });
        }
        Ok(Some(OwnInput {
            path: path.clone(),
            public_key: derived,
            script,
            amount: utxo.value,
            sighash_type,
        }))
    }

    /// The path of an output paying back to the key's own descriptors, if it does.
    fn change_path(
        &self,
        index: usize,
        script: &Script,
        output: &psbt::Output,
    ) -> Result<Option<DerivationPath>, IntakeError> {
        let fingerprint = self.key.fingerprint();
        let mut change = None;
        for (claimed, (fp, path)) in &output.bip32_derivation {
            if *fp != fingerprint
                || path.len() > MAX_PATH_DEPTH
                || path.into_iter().any(ChildNumber::is_hardened)
            {
                // Not derivable from the xpub: the output counts as leaving the key.
                continue;
            }
            let Ok(derived) = self.key.derive(path) else {
                continue;
            };
            if derived.0 != *claimed {
                return Err(IntakeError::OutputWrongPublicKey {
                    output: index,
                    path: path.clone(),
                    claimed: claimed.to_string(),
                    derived: derived.to_string(),
                });
            }
            let on_own_branch = path.len() == 2
                && path
                    .into_iter()
                    .next()
                    .and_then(|c| Chain::from_index(u32::from(*c)))
                    .is_some();
            if on_own_branch && *script == *ScriptBuf::new_p2wpkh(&derived.wpubkey_hash()) {
                change = Some(path.clone());
            }
        }
        Ok(change)
    }
}

/// The output an input spends, from `witness_utxo` or `non_witness_utxo`, checked for consistency.
fn spent_output(
    index: usize,
    outpoint: OutPoint,
    input: &psbt::Input,
) -> Result<TxOut, IntakeError> {
    let from_full_tx = match &input.non_witness_utxo {
        None => None,
        Some(prev) => {
            let prev_txid = prev.compute_txid();
            if prev_txid != outpoint.txid {
                return Err(IntakeError::UtxoMismatch {
                    input: index,
                    reason: format!("is transaction {prev_txid}, but the input spends {outpoint}"),
                });
            }
            let vout = usize::try_from(outpoint.vout).unwrap_or(usize::MAX);
            let out = prev
                .output
                .get(vout)
                .ok_or_else(|| IntakeError::UtxoMismatch {
                    input: index,
                    reason: format!(
                        "has {} outputs, but the input spends output {}",
                        prev.output.len(),
                        outpoint.vout
                    ),
                })?;
            Some(out.clone())
        }
    };
    match (&input.witness_utxo, from_full_tx) {
        (Some(witness), Some(full)) if *witness != full => Err(IntakeError::UtxoMismatch {
            input: index,
            reason: "disagrees with witness_utxo on the spent output's amount or script".to_owned(),
        }),
        (Some(witness), _) => Ok(witness.clone()),
        (None, Some(full)) => Ok(full),
        (None, None) => Err(IntakeError::MissingUtxo { input: index }),
    }
}

/// Final sizes of a foreign input; see [`crate::size`] for the assumptions.
fn foreign_size(
    index: usize,
    input: &psbt::Input,
    spent: &Script,
) -> Result<InputSize, IntakeError> {
    if input.final_script_sig.is_some() || input.final_script_witness.is_some() {
        return Ok(InputSize {
            script_sig: input.final_script_sig.as_ref().map_or(0, |s| s.len()),
            witness: input.final_script_witness.as_ref().map_or(0, |w| w.size()),
        });
    }
    let known = if spent.is_p2wpkh() {
        Some(InputSize {
            script_sig: 0,
            witness: size::P2WPKH_WITNESS_BYTES,
        })
    } else if spent.is_p2tr() && input.tap_scripts.is_empty() {
        Some(InputSize {
            script_sig: 0,
            witness: size::P2TR_KEY_PATH_WITNESS_BYTES,
        })
    } else if spent.is_p2sh() && input.redeem_script.as_ref().is_some_and(|r| r.is_p2wpkh()) {
        Some(InputSize {
            script_sig: size::P2SH_P2WPKH_SCRIPT_SIG_BYTES,
            witness: size::P2WPKH_WITNESS_BYTES,
        })
    } else if spent.is_p2pkh() {
        Some(InputSize {
            script_sig: size::P2PKH_SCRIPT_SIG_BYTES,
            witness: 0,
        })
    } else {
        None
    };
    known.ok_or(IntakeError::UnknownInputSize {
        input: index,
        kind: script_kind(spent),
    })
}

fn script_kind(script: &Script) -> &'static str {
    if script.is_p2wsh() {
        "P2WSH"
    } else if script.is_p2sh() {
        "P2SH"
    } else if script.is_p2tr() {
        "P2TR (script path)"
    } else if script.is_p2pk() {
        "P2PK"
    } else if script.is_multisig() {
        "bare multisig"
    } else if script.witness_version().is_some() {
        "future witness version"
    } else {
        "non-standard"
    }
}

fn check_amount(amount: Amount, field: impl FnOnce() -> String) -> Result<(), IntakeError> {
    if amount > Amount::MAX_MONEY {
        return Err(IntakeError::AmountTooLarge { field: field() });
    }
    Ok(())
}

fn too_large(field: &str) -> IntakeError {
    IntakeError::AmountTooLarge {
        field: field.to_owned(),
    }
}
