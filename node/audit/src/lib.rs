//! The tamper-evident audit log: entry and checkpoint formats, export bundles and their
//! offline verification.
//!
//! Every node keeps its own audit log (in its database, see `strongroom-store`): one
//! [`AuditEntry`] per security-relevant event ([`EventKind`]), in a hash chain, with a
//! [`Checkpoint`] signed by the node's token-held identity key every N entries or T seconds. An
//! auditor exports a [`bundle`] and checks it with [`verify_bundle`], with no cluster
//! and no network.
//!
//! This crate is pure: no database, no network, no clock (times are passed in). It reads and
//! writes files only in [`write_bundle`] and [`verify_bundle`].
//!
//! # What the log promises
//!
//! - **Order and completeness.** Entries are numbered 0, 1, 2, ... and each carries the hash of
//!   the one before ([`chain`]), so removing, inserting, reordering or changing an entry breaks
//!   the chain at that entry.
//! - **Authorship.** A checkpoint is the node's signature over (cluster, node, seq, hash of
//!   entry seq, time). Anyone can recompute a chain; only the node's token can sign a
//!   checkpoint, so a valid checkpoint at seq S vouches for every entry up to S. Entries after
//!   the newest checkpoint are chained but not yet signed.
//! - **No secrets.** Sensitive values are recorded only as HMAC-SHA256 under the node's audit
//!   key ([`AuditKey`]), never in clear. Key shares, presignatures, PINs, sealed blobs and
//!   private keys are never recorded in any form.
//!
//! # What it does not promise
//!
//! - A node whose token key is compromised can sign a false history. Comparing the logs of
//!   several nodes (each signs its own) limits what one compromised node can hide.
//! - Cutting entries off the end of a log, together with their checkpoints, leaves a shorter
//!   log that verifies. An auditor detects it by comparing the head with an earlier export or
//!   with the node's current checkpoint.
//! - The manifest of a bundle is not signed; only its checkpoints are.
//!
//! The caller must guarantee that an entry is appended in the same database transaction as
//! the state change it records, so that one never commits without the other (the store's
//! `append_audit_in` and `with_audit` do this).

pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod encoding;
pub mod entry;
pub mod export;
mod hexser;
pub mod key;
pub mod verify;

pub use bundle::{BundleContents, BundleError, Manifest, write_bundle};
pub use chain::{ChainError, ChainVerifier, verify_chain};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointSchedule, CheckpointSigner};
pub use entry::{AuditEntry, AuditEvent, EventKind, FormatError, GENESIS_PREV_HASH};
pub use export::{AuditChain, ExportError, ExportRecord, parse_export};
pub use key::{AuditKey, AuditKeyError, SoftwareAuditKey};
pub use verify::{Failure, FailureCode, TrustAnchorSource, VerifyReport, verify_bundle};

#[cfg(test)]
mod tests;
