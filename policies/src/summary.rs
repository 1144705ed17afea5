//! What a policy sees: the transaction summary and the context of the request.

use serde::{Deserialize, Serialize};

use crate::approval::VerifiedApproval;
use crate::error::SummaryError;

/// The most satoshis that can ever exist (21 million bitcoin).
pub const MAX_MONEY_SAT: u64 = 21_000_000 * 100_000_000;

/// The transaction as the policy sees it. The node builds it itself from the PSBT; nothing in
/// it may come from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxSummary {
    /// The id of the cluster key that would sign (64 lowercase hex characters).
    pub key_id: String,
    /// That key's operator-chosen name, from the node's own key record (unique in the
    /// cluster). Policies name keys by it; see [`crate::Conditions::keys`].
    pub key_name: String,
    /// Number of inputs of the transaction (ours and any others).
    pub input_count: u32,
    /// Sum of the amounts of all inputs, in satoshis.
    pub total_input_sat: u64,
    /// The outputs, in transaction order.
    pub outputs: Vec<TxOutput>,
    /// The fee in satoshis: inputs minus outputs.
    pub fee_sat: u64,
    /// Virtual size of the transaction once signed, in vbytes (weight / 4, rounded up), with
    /// the witnesses still to be added estimated by the bitcoin layer.
    pub vsize: u64,
}

/// One output of the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxOutput {
    /// The address the output pays, as rendered for the configured network. Bech32 addresses
    /// are compared case-insensitively. A script without an address form must be rendered so
    /// that it cannot equal an address (for example `script:<hex>`).
    pub address: String,
    /// Amount in satoshis.
    pub amount_sat: u64,
    /// Whether the output pays back to the signing key's own descriptors.
    pub is_change: bool,
}

impl TxSummary {
    /// Checks that the summary is internally consistent: at least one input and output, a
    /// non-zero virtual size, amounts within the money supply, and inputs equal to outputs
    /// plus fee.
    pub fn check(&self) -> Result<(), SummaryError> {
        if self.input_count == 0 {
            return Err(SummaryError::NoInputs);
        }
        if self.outputs.is_empty() {
            return Err(SummaryError::NoOutputs);
        }
        if self.vsize == 0 {
            return Err(SummaryError::ZeroVsize);
        }
        let in_range = |field: String, amount: u128| {
            if amount > u128::from(MAX_MONEY_SAT) {
                Err(SummaryError::AmountOutOfRange { field, amount })
            } else {
                Ok(())
            }
        };
        for (index, output) in self.outputs.iter().enumerate() {
            in_range(
                format!("outputs[{index}].amount_sat"),
                u128::from(output.amount_sat),
            )?;
        }
        in_range(
            "total_input_sat".to_owned(),
            u128::from(self.total_input_sat),
        )?;
        in_range("fee_sat".to_owned(), u128::from(self.fee_sat))?;
        let outputs = self.total_output_sat();
        in_range("the sum of the outputs".to_owned(), outputs)?;
        if outputs + u128::from(self.fee_sat) != u128::from(self.total_input_sat) {
            return Err(SummaryError::DoesNotAddUp {
                inputs: self.total_input_sat,
                outputs,
                fee: self.fee_sat,
            });
        }
        Ok(())
    }

    /// Sum of all outputs, change included.
    pub fn total_output_sat(&self) -> u128 {
        self.outputs
            .iter()
            .map(|output| u128::from(output.amount_sat))
            .sum()
    }

    /// The spend amount: the sum of the outputs that are not change.
    pub fn spend_amount_sat(&self) -> u128 {
        self.outputs
            .iter()
            .filter(|output| !output.is_change)
            .map(|output| u128::from(output.amount_sat))
            .sum()
    }

    /// The fee rate in sat/vB, rounded **up** to a whole number; `None` when `vsize` is 0.
    ///
    /// Rounding up makes integer caps exact: the rounded rate is at most N exactly when
    /// `fee / vsize <= N`, and above N exactly when `fee / vsize > N`.
    pub fn fee_rate_sat_per_vb_ceil(&self) -> Option<u64> {
        if self.vsize == 0 {
            None
        } else {
            Some(self.fee_sat.div_ceil(self.vsize))
        }
    }
}

/// Everything besides the transaction that a decision depends on.
///
/// The caller guarantees: `now` is the node's own clock; `window_history` holds every spend
/// signed with [`TxSummary::key_id`] at least [`crate::Policy::longest_window`] seconds back
/// (entries for other keys must not be included); `approvals` were checked by
/// [`crate::verify_approval`] (the type guarantees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The client that submitted the request.
    pub initiator: Initiator,
    /// The time of evaluation, in unix seconds (UTC).
    pub now: u64,
    /// The digest of the request being decided; approvals over any other digest do not count.
    pub request_digest: [u8; 32],
    /// Spends already signed with this key (the caller may add approved requests still being
    /// signed, which is the conservative choice).
    pub window_history: Vec<WindowEntry>,
    /// Approvals received for the request.
    pub approvals: Vec<VerifiedApproval>,
}

/// The client that submitted a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiator {
    /// The client's name (from its certificate).
    pub name: String,
    /// The client's roles (from node configuration).
    pub roles: Vec<String>,
}

/// A spend already signed with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowEntry {
    /// When it was signed, in unix seconds (UTC).
    pub time: u64,
    /// Its spend amount (sum of its non-change outputs), in satoshis.
    pub amount_sat: u64,
}
