//! Size estimate of the finalized transaction.
//!
//! See the crate documentation, "Size estimate", for the assumptions.

use bitcoin::{Transaction, VarInt};

/// Witness bytes of a P2WPKH spend with the largest low-S signature.
pub(crate) const P2WPKH_WITNESS_BYTES: usize = 1 + (1 + 72) + (1 + 33);
/// scriptSig bytes of a P2SH-wrapped P2WPKH spend (a push of the 22-byte witness program).
pub(crate) const P2SH_P2WPKH_SCRIPT_SIG_BYTES: usize = 1 + 22;
/// Witness bytes of a P2TR key-path spend with a non-default sighash byte.
pub(crate) const P2TR_KEY_PATH_WITNESS_BYTES: usize = 1 + (1 + 65);
/// scriptSig bytes of a P2PKH spend with a compressed key.
pub(crate) const P2PKH_SCRIPT_SIG_BYTES: usize = (1 + 72) + (1 + 33);

/// The final scriptSig and witness sizes of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputSize {
    /// Length of the scriptSig (without its length prefix).
    pub(crate) script_sig: usize,
    /// Serialized witness, including its item count; 0 when the input has no witness.
    pub(crate) witness: usize,
}

fn varint_len(n: usize) -> usize {
    VarInt(n as u64).size()
}

/// Weight of `tx` once each input has the final sizes in `inputs` (same order).
pub(crate) fn estimated_weight(tx: &Transaction, inputs: &[InputSize]) -> u64 {
    let mut base = 4 + varint_len(tx.input.len()) + varint_len(tx.output.len()) + 4;
    for size in inputs {
        base += 32 + 4 + varint_len(size.script_sig) + size.script_sig + 4;
    }
    for output in &tx.output {
        let script = output.script_pubkey.len();
        base += 8 + varint_len(script) + script;
    }
    let witness = if inputs.iter().any(|size| size.witness > 0) {
        // Marker and flag, then one witness per input (a lone zero count when empty).
        2 + inputs.iter().map(|size| size.witness.max(1)).sum::<usize>()
    } else {
        0
    };
    (base as u64) * 4 + witness as u64
}

/// Virtual size in vbytes: weight divided by four, rounded up.
pub(crate) fn vsize(weight: u64) -> u64 {
    weight.div_ceil(4)
}
