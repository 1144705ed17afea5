//! Signing output: verified partial signatures into the PSBT, finalization, extraction.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{self, Secp256k1};
use bitcoin::{PublicKey, Transaction, Witness, ecdsa};

use crate::intake::{InputOwner, SignRequest};

/// Why a set of signatures was refused. Nothing is written into the PSBT then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A signature was given for an input the node does not sign.
    #[error(
        "input {input}: is not an input of the cluster key in this request, so it takes no signature"
    )]
    NotOurInput {
        /// The input index given.
        input: usize,
    },
    /// Two signatures were given for the same input.
    #[error("input {input}: more than one signature given")]
    Duplicate {
        /// The input index.
        input: usize,
    },
    /// An input of ours has no signature.
    #[error("input {input}: no signature given; every input of the cluster key must be signed")]
    Missing {
        /// The input index.
        input: usize,
    },
    /// The signature has a high S value, which the network does not relay.
    #[error(
        "input {input}: signature is not low-S (BIP-146), so the transaction would be non-standard"
    )]
    HighS {
        /// The input index.
        input: usize,
    },
    /// The signature does not verify under the child key for the node's own sighash.
    #[error(
        "input {input}: signature does not verify against the sighash and the child key at {path}"
    )]
    Invalid {
        /// The input index.
        input: usize,
        /// The derivation path of the child key.
        path: String,
    },
}

/// The signed PSBT and, when it could be finalized, the network transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedPsbt {
    psbt: Psbt,
    transaction: Option<Transaction>,
}

impl SignedPsbt {
    /// The PSBT: finalized when [`SignedPsbt::transaction`] is `Some`, otherwise with our
    /// `partial_sigs` filled in.
    pub fn psbt(&self) -> &Psbt {
        &self.psbt
    }

    /// The PSBT in base64.
    pub fn to_base64(&self) -> String {
        self.psbt.to_string()
    }

    /// The finalized transaction, when every input is ours or was already finalized.
    pub fn transaction(&self) -> Option<&Transaction> {
        self.transaction.as_ref()
    }

    /// The finalized transaction in consensus hex, ready to broadcast.
    pub fn transaction_hex(&self) -> Option<String> {
        self.transaction.as_ref().map(serialize_hex)
    }

    /// Splits into the PSBT and the transaction.
    pub fn into_parts(self) -> (Psbt, Option<Transaction>) {
        (self.psbt, self.transaction)
    }
}

impl SignRequest {
    /// Verifies one signature per input to sign, inserts them into `partial_sigs`, and
    /// finalizes when no foreign input still awaits its signer.
    ///
    /// Each signature must be low-S and verify under the child key for the sighash this node
    /// computed; otherwise nothing is inserted.
    pub fn apply_signatures(
        &self,
        signatures: &[(usize, secp256k1::ecdsa::Signature)],
    ) -> Result<SignedPsbt, SignError> {
        let secp = Secp256k1::verification_only();
        let mut found = vec![None; self.to_sign.len()];
        for (input, signature) in signatures {
            let slot = self
                .to_sign
                .iter()
                .position(|t| t.input_index == *input)
                .and_then(|position| found.get_mut(position))
                .ok_or(SignError::NotOurInput { input: *input })?;
            if slot.is_some() {
                return Err(SignError::Duplicate { input: *input });
            }
            *slot = Some(*signature);
        }

        let mut psbt = self.psbt.clone();
        let mut finals = Vec::with_capacity(self.to_sign.len());
        for (target, signature) in self.to_sign.iter().zip(found) {
            let input = target.input_index;
            let signature = signature.ok_or(SignError::Missing { input })?;
            let mut normalized = signature;
            normalized.normalize_s();
            if normalized != signature {
                return Err(SignError::HighS { input });
            }
            secp.verify_ecdsa(&target.message(), &signature, &target.public_key.0)
                .map_err(|_| SignError::Invalid {
                    input,
                    path: target.path.to_string(),
                })?;
            let signature = ecdsa::Signature {
                signature,
                sighash_type: target.sighash_type,
            };
            if let Some(psbt_input) = psbt.inputs.get_mut(input) {
                psbt_input
                    .partial_sigs
                    .insert(PublicKey::from(target.public_key), signature);
            }
            finals.push((input, Witness::p2wpkh(&signature, &target.public_key.0)));
        }

        let finalizable = self.analysis.inputs.iter().all(|input| match input.owner {
            InputOwner::Ours { .. } => true,
            InputOwner::Foreign { finalized } => finalized,
        });
        if !finalizable {
            return Ok(SignedPsbt {
                psbt,
                transaction: None,
            });
        }
        for (index, witness) in finals {
            if let Some(input) = psbt.inputs.get_mut(index) {
                // BIP-174 finalizer: keep the UTXO and unknown fields, drop the signing data.
                input.final_script_witness = Some(witness);
                input.partial_sigs.clear();
                input.sighash_type = None;
                input.redeem_script = None;
                input.witness_script = None;
                input.bip32_derivation.clear();
            }
        }
        let transaction = psbt.clone().extract_tx_unchecked_fee_rate();
        Ok(SignedPsbt {
            psbt,
            transaction: Some(transaction),
        })
    }
}
