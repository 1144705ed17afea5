//! Bitcoin for the node: PSBT intake and validation, BIP-143 sighashes, transaction summaries,
//! finalization. Pure functions over Bitcoin data: no network, no database.
//!
//! # Contract
//!
//! - The cluster key is a depth-0 extended public key ([`ClusterKey`]); its descriptors are
//!   `wpkh([fp]xpub/0/*)` (receive) and `wpkh([fp]xpub/1/*)` (change).
//! - [`intake_base64`] turns a client's PSBT into a [`SignRequest`] or an [`IntakeError`]
//!   naming the input, output or field at fault. The node signs exactly the inputs that are
//!   P2WPKH with a `witness_utxo` and one `bip32_derivation` on the cluster fingerprint with a
//!   non-hardened path whose derived key is the one claimed and pays to the spent script.
//!   Every other input is left alone, but must show its amount.
//! - Every sighash is computed here from the PSBT ([`InputToSign`]); nothing signs a hash a
//!   client handed in.
//! - [`TxAnalysis`] is what the policy sees; [`RequestDigest`] is what votes and approvals
//!   sign; it covers everything that changes a signature.
//! - [`SignRequest::apply_signatures`] accepts only signatures that verify under the child key
//!   for this node's own sighash, then finalizes when no foreign input awaits its signer.
//!
//! # Threat assumptions
//!
//! The PSBT comes from an untrusted client. Amounts of foreign inputs are the client's claim:
//! BIP-143 commits each of our signatures to our own input's amount only, so a false amount on
//! a foreign input can make the fee look smaller than it is. Where both `witness_utxo` and
//! `non_witness_utxo` are present they must agree, and a `non_witness_utxo` must hash to the
//! spent txid. An output script carries no network, so the network of a PSBT shows only
//! in its global xpubs, which must match the configured network; every output must render as
//! an address on that network. Change is recognised only from an output's `bip32_derivation`
//! on the cluster fingerprint whose derived key pays to the output's script; anything else
//! counts as leaving the key, which errs on the strict side for policy. A 4-byte fingerprint
//! can collide with a foreign wallet's (about 2^-32): such an input is refused, not signed.
//!
//! # Size estimate
//!
//! The estimate is the weight of the transaction once every input carries its final
//! scriptSig and witness:
//!
//! - our P2WPKH inputs: empty scriptSig; witness of two items, a signature of at most 72 bytes
//!   (a low-S DER signature is at most 71 bytes, plus the sighash byte) and the 33-byte key:
//!   1 + (1 + 72) + (1 + 33) = 108 witness bytes. Smaller signatures make the real transaction
//!   at most a few weight units lighter, so the fee rate is never overstated by more than that;
//! - foreign inputs that are already finalized: their actual final scriptSig and witness;
//! - foreign inputs not yet finalized, by the script they spend: P2WPKH as above; P2SH-wrapped
//!   P2WPKH (recognised by its redeem script) with a 23-byte scriptSig and the same witness;
//!   P2TR key path (no script leaves in the PSBT) with one 65-byte signature; P2PKH with a
//!   compressed key (1 + 72 + 1 + 33 = 107-byte scriptSig). Any other unfinalized foreign
//!   input has no reliable size and is refused.

mod checksum;
mod digest;
mod intake;
mod keys;
mod sign;
mod size;

pub use checksum::{ChecksumError, descriptor_checksum, with_checksum};
pub use digest::{DIGEST_DOMAIN, DIGEST_VERSION, ParseDigestError, RequestDigest};
pub use intake::{
    DEFAULT_MAX_PSBT_BYTES, InputAnalysis, InputOwner, InputToSign, IntakeError, IntakeOptions,
    NetworkKindName, OutputAnalysis, SignRequest, TxAnalysis, intake_base64, intake_bytes,
};
pub use keys::{AddressError, Chain, ClusterKey, KeyError, MAX_PATH_DEPTH, parse_address};
pub use sign::{SignError, SignedPsbt};

/// The `bitcoin` crate this crate's types come from.
pub use bitcoin;
