//! Bitcoin for the node: PSBT intake and validation, BIP-143 sighashes, transaction summaries, finalization.
