//! Offline verification of an export bundle: no cluster, no network.
//!
//! [`verify_bundle`] checks, in this order, and stops at the first failure:
//!
//! 1. `manifest.json` is a bundle of a version this crate reads;
//! 2. the node certificate in `chain.pem` chains to the trusted cluster CA (signatures, and
//!    validity as of the manifest's export time) and names node `node_id` of cluster
//!    `cluster_id` as the manifest says;
//! 3. `entries.jsonl`, line by line: the first entry has the manifest's `first_seq`, and the
//!    hash-chain rules of [`crate::chain`] hold (seq continuity, `prev_hash` links, each hash
//!    recomputed from the entry's content, one node);
//! 4. the entries end at the manifest's `last_seq` and their count matches;
//! 5. `checkpoints.jsonl`, line by line: strictly increasing seq, this cluster and node, a
//!    signature that verifies under the node certificate's key, and a head hash equal to the
//!    hash of the entry at its seq (or, for a checkpoint of the entry just before the first,
//!    the first entry's `prev_hash`); a checkpoint of an entry outside the bundle fails;
//! 6. at least one checkpoint covers an entry of the bundle (otherwise nothing in it is
//!    signed by the node);
//! 7. every file matches its SHA-256 in the manifest (checked last, so that a changed entry
//!    is named by its seq rather than by its file).
//!
//! Entries after the last checkpoint are reported as a warning: they are chained but not yet
//! signed. Deleting entries from the end of a log together with their checkpoints cannot be
//! detected from the bundle alone; compare the head with an earlier export or with the node.
//!
//! The trusted CA comes from the operator (`trusted_ca`); without it the bundle's own
//! `ca.pem` is used and the report says so, since a bundle can then vouch for itself.

use std::fmt;
use std::fs;
use std::io::{BufRead as _, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use strongroom_transport::Subject;
use strongroom_transport::pki::{certs_from_pem, identity_of};

use crate::bundle::{
    BUNDLE_FILES, BUNDLE_FORMAT, BUNDLE_VERSION, CA_FILE, CHAIN_FILE, CHECKPOINTS_FILE,
    ENTRIES_FILE, MANIFEST_FILE, Manifest,
};
use crate::chain::{ChainError, ChainVerifier};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::AuditEntry;

/// Longest line accepted in `entries.jsonl` or `checkpoints.jsonl`.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Longest `manifest.json`, `chain.pem` or `ca.pem` accepted.
const MAX_SMALL_FILE_BYTES: u64 = 1024 * 1024;

/// Where the trusted CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustAnchorSource {
    /// The operator named it (`--ca`).
    Operator,
    /// The bundle's own `ca.pem`: the bundle vouches for itself.
    Bundle,
}

/// What kind of failure stopped verification: a stable name for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// A file is missing or unreadable, or the trusted CA file given cannot be read.
    Unreadable,
    /// `manifest.json` is not a bundle manifest, or of a format version this tool does not read.
    UnsupportedBundle,
    /// The manifest disagrees with the files: seq range, counts, ids or a file's SHA-256.
    ManifestMismatch,
    /// The node certificate does not chain to the trusted CA, or was not valid at export time.
    UntrustedCertificate,
    /// The certificate is not a node certificate of the manifest's cluster and node.
    CertificateIdentity,
    /// A line of `entries.jsonl` is not a well-formed entry.
    MalformedEntry,
    /// Seq numbers do not continue: an entry is missing, repeated or out of order.
    SequenceBreak,
    /// An entry's content does not match its hash: the entry was altered.
    HashMismatch,
    /// An entry's `prev_hash` is not the previous entry's hash (or not the genesis value).
    ChainBreak,
    /// An entry names another node than the bundle's.
    WrongNode,
    /// A line of `checkpoints.jsonl` is not a well-formed checkpoint.
    MalformedCheckpoint,
    /// Checkpoints are not in strictly increasing seq order.
    CheckpointOrder,
    /// A checkpoint names another cluster or node.
    CheckpointIdentity,
    /// A checkpoint's signature does not verify under the node certificate's key.
    CheckpointSignature,
    /// A checkpoint's head hash differs from the entry at its seq: entries were rewritten.
    CheckpointMismatch,
    /// A checkpoint covers an entry that is not in the bundle: entries were removed.
    CheckpointOutOfRange,
    /// The bundle has entries but no checkpoint covers any of them.
    NoCheckpoint,
}

impl FailureCode {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::Unreadable => "unreadable",
            FailureCode::UnsupportedBundle => "unsupported_bundle",
            FailureCode::ManifestMismatch => "manifest_mismatch",
            FailureCode::UntrustedCertificate => "untrusted_certificate",
            FailureCode::CertificateIdentity => "certificate_identity",
            FailureCode::MalformedEntry => "malformed_entry",
            FailureCode::SequenceBreak => "sequence_break",
            FailureCode::HashMismatch => "hash_mismatch",
            FailureCode::ChainBreak => "chain_break",
            FailureCode::WrongNode => "wrong_node",
            FailureCode::MalformedCheckpoint => "malformed_checkpoint",
            FailureCode::CheckpointOrder => "checkpoint_order",
            FailureCode::CheckpointIdentity => "checkpoint_identity",
            FailureCode::CheckpointSignature => "checkpoint_signature",
            FailureCode::CheckpointMismatch => "checkpoint_mismatch",
            FailureCode::CheckpointOutOfRange => "checkpoint_out_of_range",
            FailureCode::NoCheckpoint => "no_checkpoint",
        }
    }
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure.
    pub code: FailureCode,
    /// The file it was found in, when it is one file's.
    pub file: Option<String>,
    /// 1-based line of that file, when it is one line's.
    pub line: Option<usize>,
    /// The seq of the entry or checkpoint at fault, when known.
    pub seq: Option<u64>,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.file.as_deref() {
            Some(ENTRIES_FILE) => "entry",
            Some(CHECKPOINTS_FILE) => "checkpoint",
            _ => "entry",
        };
        match (self.seq, self.line, self.file.as_deref()) {
            (Some(seq), Some(line), Some(file)) => {
                write!(f, "at {what} seq {seq} (line {line} of {file})")?
            }
            (Some(seq), None, _) => write!(f, "at {what} seq {seq}")?,
            (None, Some(line), Some(file)) => write!(f, "at line {line} of {file}")?,
            (None, _, Some(file)) => write!(f, "in {file}")?,
            _ => {}
        }
        let sep = if self.seq.is_some() || self.file.is_some() {
            ": "
        } else {
            ""
        };
        write!(f, "{sep}{} [{}]", self.reason, self.code.as_str())
    }
}

/// The outcome of [`verify_bundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether every check passed (warnings do not count).
    pub ok: bool,
    /// The bundle directory, as given.
    pub bundle: String,
    /// The cluster the manifest names.
    pub cluster_id: Option<String>,
    /// The node the manifest names.
    pub node_id: Option<String>,
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Seq of the first entry checked.
    pub first_seq: Option<u64>,
    /// Seq of the last entry checked.
    pub last_seq: Option<u64>,
    /// Entries up to this seq are covered by a verified checkpoint.
    pub covered_to_seq: Option<u64>,
    /// Where the trusted CA came from.
    pub trust_anchor: TrustAnchorSource,
    /// Things an auditor should know that do not make the bundle fail.
    pub warnings: Vec<String>,
    /// The first failure, if any.
    pub failure: Option<Failure>,
}

impl fmt::Display for VerifyReport {
    /// `OK: N entries (seq a..b), M checkpoints` or `FAILED at entry seq X (line L of
    /// entries.jsonl): reason`, then one `warning:` line per warning.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            None => {
                write!(f, "OK: {} entries", self.entries)?;
                if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
                    write!(f, " (seq {a}..{b})")?;
                }
                writeln!(f, ", {} checkpoints", self.checkpoints)?;
            }
            Some(failure) if failure.seq.is_none() && failure.file.is_none() => {
                writeln!(f, "FAILED: {failure}")?
            }
            Some(failure) => writeln!(f, "FAILED {failure}")?,
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Verifies the bundle in `dir` (see the [module docs](self)) against the cluster CA in
/// `trusted_ca` (PEM), or, when `None`, against the bundle's own `ca.pem` with a warning.
/// Never fails: every problem is the report's [`VerifyReport::failure`].
pub fn verify_bundle(dir: &Path, trusted_ca: Option<&Path>) -> VerifyReport {
    let mut report = VerifyReport {
        ok: false,
        bundle: dir.display().to_string(),
        cluster_id: None,
        node_id: None,
        entries: 0,
        checkpoints: 0,
        first_seq: None,
        last_seq: None,
        covered_to_seq: None,
        trust_anchor: if trusted_ca.is_some() {
            TrustAnchorSource::Operator
        } else {
            TrustAnchorSource::Bundle
        },
        warnings: Vec::new(),
        failure: None,
    };
    if trusted_ca.is_none() {
        report.warnings.push(format!(
            "no trusted CA given: the bundle's own {CA_FILE} was used, so the bundle vouches for \
             itself; pass the cluster CA you trust (--ca) to rule out a forged bundle"
        ));
    }
    let result = Run {
        dir,
        report: &mut report,
        chain: None,
    }
    .check(trusted_ca);
    report.ok = result.is_ok();
    report.failure = result.err();
    report
}

fn failure(code: FailureCode, reason: impl Into<String>) -> Failure {
    Failure {
        code,
        file: None,
        line: None,
        seq: None,
        reason: reason.into(),
    }
}

impl Failure {
    fn in_file(mut self, file: &str) -> Self {
        self.file = Some(file.to_owned());
        self
    }
    fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
    fn at_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }
}

/// One verification run.
struct Run<'a> {
    dir: &'a Path,
    report: &'a mut VerifyReport,
    /// The node certificate's intermediates and the trust anchors, once the chain verified.
    chain: Option<(Vec<CertificateDer<'static>>, Vec<TrustAnchor<'static>>)>,
}

/// The entries of the bundle, as far as checkpoints need them.
struct EntryHashes {
    first_seq: u64,
    first_prev_hash: [u8; 32],
    hashes: Vec<[u8; 32]>,
}

impl EntryHashes {
    fn last_seq(&self) -> u64 {
        self.first_seq
            .saturating_add(u64::try_from(self.hashes.len()).unwrap_or(u64::MAX))
            .saturating_sub(1)
    }

    fn hash_at(&self, seq: u64) -> Option<[u8; 32]> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.hashes.get(index).copied()
    }
}

impl Run<'_> {
    fn check(&mut self, trusted_ca: Option<&Path>) -> Result<(), Failure> {
        // 1. The manifest.
        let manifest_bytes = self.read_small(MANIFEST_FILE)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            failure(
                FailureCode::UnsupportedBundle,
                format!("not a strongroom audit bundle manifest: {e}"),
            )
            .in_file(MANIFEST_FILE)
        })?;
        if manifest.format != BUNDLE_FORMAT || manifest.version != BUNDLE_VERSION {
            return Err(failure(
                FailureCode::UnsupportedBundle,
                format!(
                    "format '{}' version {}: this tool reads '{BUNDLE_FORMAT}' version \
                     {BUNDLE_VERSION} only",
                    manifest.format, manifest.version
                ),
            )
            .in_file(MANIFEST_FILE));
        }
        self.report.cluster_id = Some(manifest.cluster_id.clone());
        self.report.node_id = Some(manifest.node_id.clone());
        let mut listed: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
        listed.sort_unstable();
        let mut expected = BUNDLE_FILES.to_vec();
        expected.sort_unstable();
        if listed != expected {
            return Err(failure(
                FailureCode::ManifestMismatch,
                format!(
                    "the manifest lists the files {listed:?}, a bundle has exactly {expected:?}"
                ),
            )
            .in_file(MANIFEST_FILE));
        }

        // 2. The certificate chain.
        let bundle_ca = self.read_small(CA_FILE)?;
        let chain = self.read_small(CHAIN_FILE)?;
        let leaf = match trusted_ca {
            Some(path) => {
                let trusted = read_limited(path, MAX_SMALL_FILE_BYTES).map_err(|e| {
                    failure(
                        FailureCode::Unreadable,
                        format!("cannot read the trusted CA {}: {e}", path.display()),
                    )
                })?;
                if pem_certs(&trusted) != pem_certs(&bundle_ca) {
                    self.report.warnings.push(format!(
                        "the bundle's {CA_FILE} is not the trusted CA {}; the trusted CA was used",
                        path.display()
                    ));
                }
                self.check_certificate(&chain, &trusted, &manifest)?
            }
            None => self.check_certificate(&chain, &bundle_ca, &manifest)?,
        };

        // 3, 4. The entries.
        let entries = self.check_entries(&manifest)?;

        // 5, 6. The checkpoints.
        self.check_checkpoints(&manifest, &leaf, entries.as_ref())?;

        // 7. The files' digests.
        for name in BUNDLE_FILES {
            let digest = match name {
                CA_FILE => hex::encode(Sha256::digest(&bundle_ca)),
                CHAIN_FILE => hex::encode(Sha256::digest(&chain)),
                _ => hex::encode(self.digest_of(name)?),
            };
            if manifest.files.get(name) != Some(&digest) {
                return Err(failure(
                    FailureCode::ManifestMismatch,
                    "the file does not match its SHA-256 in the manifest (it was changed after \
                     export; its records passed the checks above)",
                )
                .in_file(name));
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, Failure> {
        read_limited(&self.path(name), MAX_SMALL_FILE_BYTES).map_err(|e| {
            failure(
                FailureCode::Unreadable,
                format!("cannot read the file: {e}"),
            )
            .in_file(name)
        })
    }

    fn digest_of(&self, name: &str) -> Result<[u8; 32], Failure> {
        let unreadable =
            |e: std::io::Error| failure(FailureCode::Unreadable, e.to_string()).in_file(name);
        let mut file = fs::File::open(self.path(name)).map_err(unreadable)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(unreadable)?;
        Ok(hasher.finalize().into())
    }

    /// Chain to the trusted CA as of the export time, and the identity the manifest names.
    fn check_certificate(
        &mut self,
        chain_pem: &[u8],
        ca_pem: &[u8],
        manifest: &Manifest,
    ) -> Result<CertificateDer<'static>, Failure> {
        let untrusted =
            |reason: String| failure(FailureCode::UntrustedCertificate, reason).in_file(CHAIN_FILE);
        let chain = certs_from_pem(&String::from_utf8_lossy(chain_pem))
            .map_err(|e| untrusted(format!("no usable certificate: {e}")))?;
        let ca = certs_from_pem(&String::from_utf8_lossy(ca_pem)).map_err(|e| {
            failure(
                FailureCode::Unreadable,
                format!("the trusted CA holds no usable certificate: {e}"),
            )
        })?;
        let anchors = ca
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<TrustAnchor<'static>>, _>>()
            .map_err(|e| {
                failure(
                    FailureCode::Unreadable,
                    format!("the trusted CA cannot serve as a trust anchor: {e}"),
                )
            })?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| untrusted("no certificate".into()))?;
        let at = UnixTime::since_unix_epoch(Duration::from_millis(manifest.exported_at_unix_ms));
        chain_valid_at(leaf, intermediates, &anchors, at).map_err(untrusted)?;

        let identity = identity_of(leaf).map_err(|e| {
            failure(FailureCode::CertificateIdentity, e.to_string()).in_file(CHAIN_FILE)
        })?;
        let node = match &identity.subject {
            Subject::Node(n) => n.as_str(),
            Subject::Client(_) => {
                return Err(failure(
                    FailureCode::CertificateIdentity,
                    format!("the certificate names {}, not a node", identity.uri()),
                )
                .in_file(CHAIN_FILE));
            }
        };
        if identity.cluster.as_str() != manifest.cluster_id || node != manifest.node_id {
            return Err(failure(
                FailureCode::CertificateIdentity,
                format!(
                    "the certificate names {}, the manifest node '{}' of cluster '{}'",
                    identity.uri(),
                    manifest.node_id,
                    manifest.cluster_id
                ),
            )
            .in_file(CHAIN_FILE));
        }
        self.chain = Some((intermediates.to_vec(), anchors));
        Ok(leaf.clone())
    }

    /// Steps 3 and 4: the hash chain, and the manifest's seq range and count.
    fn check_entries(&mut self, manifest: &Manifest) -> Result<Option<EntryHashes>, Failure> {
        let mut chain = ChainVerifier::new(Some(&manifest.node_id));
        let mut hashes: Option<EntryHashes> = None;
        for_each_line(&self.path(ENTRIES_FILE), ENTRIES_FILE, |line, bytes| {
            let entry: AuditEntry = serde_json::from_slice(bytes).map_err(|e| {
                let f = failure(
                    FailureCode::MalformedEntry,
                    format!("not a valid audit entry: {e}"),
                )
                .in_file(ENTRIES_FILE)
                .at_line(line);
                match seq_of(bytes) {
                    Some(seq) => f.at_seq(seq),
                    None => f,
                }
            })?;
            let at = |f: Failure| f.in_file(ENTRIES_FILE).at_line(line).at_seq(entry.seq);
            if hashes.is_none() && manifest.first_seq != Some(entry.seq) {
                return Err(at(match manifest.first_seq {
                    Some(first) if first < entry.seq => failure(
                        FailureCode::SequenceBreak,
                        format!(
                            "the manifest says the export starts at seq {first}, the first \
                             entry is seq {}: entries {first}..{} are missing",
                            entry.seq,
                            entry.seq - 1
                        ),
                    ),
                    Some(first) => failure(
                        FailureCode::SequenceBreak,
                        format!(
                            "the manifest says the export starts at seq {first}, the first \
                             entry is seq {}",
                            entry.seq
                        ),
                    ),
                    None => failure(
                        FailureCode::ManifestMismatch,
                        "the manifest lists no entries, but entries.jsonl has some",
                    ),
                }));
            }
            chain.push(&entry).map_err(|e| at(chain_failure(&e)))?;
            match &mut hashes {
                None => {
                    hashes = Some(EntryHashes {
                        first_seq: entry.seq,
                        first_prev_hash: entry.prev_hash,
                        hashes: vec![entry.hash],
                    })
                }
                Some(h) => h.hashes.push(entry.hash),
            }
            self.report.entries += 1;
            self.report.first_seq.get_or_insert(entry.seq);
            self.report.last_seq = Some(entry.seq);
            Ok(())
        })?;

        match (&hashes, manifest.first_seq, manifest.last_seq) {
            (None, None, None) => {
                self.report
                    .warnings
                    .push("the bundle holds no entries".to_owned());
            }
            (None, first, last) => {
                return Err(failure(
                    FailureCode::SequenceBreak,
                    format!(
                        "the manifest lists entries {}..{}, entries.jsonl has none",
                        show(first),
                        show(last)
                    ),
                )
                .in_file(ENTRIES_FILE));
            }
            (Some(h), _, last) if last != Some(h.last_seq()) => {
                let end = h.last_seq();
                return Err(match last {
                    Some(last) if last > end => failure(
                        FailureCode::SequenceBreak,
                        format!(
                            "entries.jsonl ends at seq {end}, the manifest says {last}: entries \
                             {}..{last} were removed from the end",
                            end + 1
                        ),
                    )
                    .at_seq(end + 1),
                    _ => failure(
                        FailureCode::ManifestMismatch,
                        format!(
                            "entries.jsonl ends at seq {end}, the manifest says {}",
                            show(last)
                        ),
                    ),
                }
                .in_file(ENTRIES_FILE));
            }
            _ => {}
        }
        if manifest.entries != self.report.entries {
            return Err(failure(
                FailureCode::ManifestMismatch,
                format!(
                    "the manifest counts {} entries, entries.jsonl has {}",
                    manifest.entries, self.report.entries
                ),
            )
            .in_file(ENTRIES_FILE));
        }
        Ok(hashes)
    }

    /// Steps 5 and 6: every checkpoint, and that they cover the entries.
    fn check_checkpoints(
        &mut self,
        manifest: &Manifest,
        leaf: &CertificateDer<'static>,
        entries: Option<&EntryHashes>,
    ) -> Result<(), Failure> {
        let mut previous: Option<u64> = None;
        let mut covered: Option<u64> = None;
        // (seq, time) of the earliest- and the latest-signed checkpoint.
        let mut earliest: Option<(u64, u64)> = None;
        let mut latest: Option<(u64, u64)> = None;
        for_each_line(
            &self.path(CHECKPOINTS_FILE),
            CHECKPOINTS_FILE,
            |line, bytes| {
                let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| {
                    let f = failure(
                        FailureCode::MalformedCheckpoint,
                        format!("not a valid checkpoint: {e}"),
                    )
                    .in_file(CHECKPOINTS_FILE)
                    .at_line(line);
                    match seq_of(bytes) {
                        Some(seq) => f.at_seq(seq),
                        None => f,
                    }
                })?;
                let seq = c.seq;
                let fail = |code: FailureCode, reason: String| {
                    failure(code, reason)
                        .in_file(CHECKPOINTS_FILE)
                        .at_line(line)
                        .at_seq(seq)
                };
                if let Some(p) = previous {
                    if seq <= p {
                        return Err(fail(
                            FailureCode::CheckpointOrder,
                            format!(
                                "follows the checkpoint at seq {p}: checkpoints must be in \
                             increasing seq order (removed, repeated or reordered)"
                            ),
                        ));
                    }
                }
                if c.cluster_id != manifest.cluster_id || c.node_id != manifest.node_id {
                    return Err(fail(
                        FailureCode::CheckpointIdentity,
                        format!(
                            "signed for node '{}' of cluster '{}', the bundle is node '{}' of \
                         cluster '{}'",
                            c.node_id, c.cluster_id, manifest.node_id, manifest.cluster_id
                        ),
                    ));
                }
                c.verify(leaf).map_err(|e| {
                    let code = match e {
                        CheckpointError::IdentityMismatch { .. } | CheckpointError::NotANode(_) => {
                            FailureCode::CheckpointIdentity
                        }
                        CheckpointError::Format(_) => FailureCode::MalformedCheckpoint,
                        CheckpointError::Certificate(_) | CheckpointError::UnsupportedKey(_) => {
                            FailureCode::CertificateIdentity
                        }
                        CheckpointError::BadSignature
                        | CheckpointError::MalformedSignature(_)
                        | CheckpointError::Signer { .. } => FailureCode::CheckpointSignature,
                    };
                    fail(
                        code,
                        format!(
                            "{e} (the checkpoint was altered, forged, or signed by another key)"
                        ),
                    )
                })?;
                match entries {
                    Some(h) if (h.first_seq..=h.last_seq()).contains(&seq) => {
                        let actual = h.hash_at(seq).unwrap_or_default();
                        if actual != c.head_hash {
                            let from = covered.map_or(h.first_seq, |c| c + 1);
                            return Err(fail(
                                FailureCode::CheckpointMismatch,
                                format!(
                                    "the node signed hash {} for entry seq {seq}, the bundle's entry \
                                 seq {seq} has hash {}: entries between seq {from} and seq {seq} \
                                 were rewritten",
                                    hex::encode(c.head_hash),
                                    hex::encode(actual)
                                ),
                            ));
                        }
                        covered = Some(seq);
                    }
                    Some(h) if h.first_seq.checked_sub(1) == Some(seq) => {
                        if c.head_hash != h.first_prev_hash {
                            return Err(fail(
                                FailureCode::CheckpointMismatch,
                                format!(
                                    "the node signed hash {} for entry seq {seq}, the first entry \
                                 (seq {}) links to {}: the first entry's prev_hash was altered",
                                    hex::encode(c.head_hash),
                                    h.first_seq,
                                    hex::encode(h.first_prev_hash)
                                ),
                            ));
                        }
                    }
                    Some(h) if seq > h.last_seq() => {
                        return Err(fail(
                            FailureCode::CheckpointOutOfRange,
                            format!(
                                "covers entry seq {seq}, but the entries end at seq {}: entries \
                             {}..{seq} were removed from the end",
                                h.last_seq(),
                                h.last_seq() + 1
                            ),
                        ));
                    }
                    Some(h) => {
                        return Err(fail(
                            FailureCode::CheckpointOutOfRange,
                            format!(
                                "covers entry seq {seq}, before the bundle's first entry (seq {}): \
                             an export holds only the checkpoints of its own range",
                                h.first_seq
                            ),
                        ));
                    }
                    None => {
                        return Err(fail(
                            FailureCode::CheckpointOutOfRange,
                            format!("covers entry seq {seq}, but the bundle holds no entries"),
                        ));
                    }
                }
                if earliest.is_none_or(|(_, t)| c.time_unix_ms < t) {
                    earliest = Some((seq, c.time_unix_ms));
                }
                if latest.is_none_or(|(_, t)| c.time_unix_ms > t) {
                    latest = Some((seq, c.time_unix_ms));
                }
                previous = Some(seq);
                self.report.checkpoints += 1;
                Ok(())
            },
        )?;

        if manifest.checkpoints != self.report.checkpoints {
            return Err(failure(
                FailureCode::ManifestMismatch,
                format!(
                    "the manifest counts {} checkpoints, checkpoints.jsonl has {}",
                    manifest.checkpoints, self.report.checkpoints
                ),
            )
            .in_file(CHECKPOINTS_FILE));
        }
        self.report.covered_to_seq = covered;
        if let Some(h) = entries {
            let last = h.last_seq();
            match covered {
                None => {
                    return Err(failure(
                        FailureCode::NoCheckpoint,
                        format!(
                            "no checkpoint covers any of the entries seq {}..{last}: nothing in \
                             this bundle is signed by the node (export a range that reaches one \
                             of the node's checkpoints)",
                            h.first_seq
                        ),
                    )
                    .at_seq(h.first_seq));
                }
                Some(c) if c < last => self.report.warnings.push(format!(
                    "entries seq {}..{last} are not covered by a checkpoint: they are chained to \
                     the signed ones but not signed themselves",
                    c + 1
                )),
                Some(_) => {}
            }
        }

        // The certificate was checked as of the export time; say so when a checkpoint was
        // signed outside the chain's validity (e.g. the certificate was renewed later).
        if let Some((intermediates, anchors)) = &self.chain {
            let mut seen = None;
            for (seq, time) in [earliest, latest].into_iter().flatten() {
                if seen == Some(seq) {
                    continue;
                }
                seen = Some(seq);
                let at = UnixTime::since_unix_epoch(Duration::from_millis(time));
                if let Err(reason) = chain_valid_at(leaf, intermediates, anchors, at) {
                    self.report.warnings.push(format!(
                        "the checkpoint at seq {seq} was signed at {}, outside the validity of \
                         the bundle's certificate chain ({reason})",
                        utc(time)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The failure for a broken chain rule.
fn chain_failure(e: &ChainError) -> Failure {
    let code = match e {
        ChainError::Format { .. } => FailureCode::MalformedEntry,
        ChainError::HashMismatch { .. } => FailureCode::HashMismatch,
        ChainError::Sequence { .. } => FailureCode::SequenceBreak,
        ChainError::Link { .. } | ChainError::Genesis => FailureCode::ChainBreak,
        ChainError::WrongNode { .. } => FailureCode::WrongNode,
    };
    failure(code, e.reason())
}

/// The `seq` member of a line that is not a valid record, to name it anyway.
fn seq_of(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get("seq")?
        .as_u64()
}

fn show(seq: Option<u64>) -> String {
    seq.map_or_else(|| "(none)".to_owned(), |s| s.to_string())
}

/// Calls `f` with each line (1-based number, bytes without the newline). A final newline
/// ends the last line; an empty line or one longer than [`MAX_LINE_BYTES`] is a failure.
fn for_each_line(
    path: &Path,
    name: &str,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let unreadable = |e: std::io::Error| {
        failure(
            FailureCode::Unreadable,
            format!("cannot read the file: {e}"),
        )
        .in_file(name)
    };
    let malformed = if name == CHECKPOINTS_FILE {
        FailureCode::MalformedCheckpoint
    } else {
        FailureCode::MalformedEntry
    };
    let mut reader = BufReader::new(fs::File::open(path).map_err(unreadable)?);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(unreadable)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(failure(
                malformed,
                format!("the line is longer than {MAX_LINE_BYTES} bytes"),
            )
            .in_file(name)
            .at_line(line));
        }
        if buf.is_empty() {
            return Err(failure(malformed, "empty line").in_file(name).at_line(line));
        }
        f(line, &buf)?;
    }
}

fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// The certificates of a PEM text, for comparison (`None` when it holds none).
fn pem_certs(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    certs_from_pem(&String::from_utf8_lossy(pem)).ok()
}

/// Checks that `leaf` chains to one of `anchors` through `intermediates` and that every
/// certificate of the chain is valid at `at`; the error says why not.
fn chain_valid_at(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    at: UnixTime,
) -> Result<(), String> {
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the node certificate is malformed: {e}"))?;
    let when = utc(at.as_secs().saturating_mul(1000));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        intermediates,
        at,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        // A CA with the trusted CA's name but another key gives a signature mismatch: either
        // way the trusted CA did not issue the certificate.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            "the node certificate was not issued by the trusted cluster CA".to_owned()
        }
        webpki::Error::CertExpired { .. } => {
            format!("a certificate of the chain had expired at {when}")
        }
        webpki::Error::CertNotValidYet { .. } => {
            format!("a certificate of the chain was not yet valid at {when}")
        }
        other => format!("the certificate chain does not verify: {other}"),
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time in milliseconds.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_renders_known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn failures_render_with_their_place() {
        let f = failure(FailureCode::HashMismatch, "altered")
            .in_file(ENTRIES_FILE)
            .at_line(4)
            .at_seq(3);
        assert_eq!(
            f.to_string(),
            "at entry seq 3 (line 4 of entries.jsonl): altered [hash_mismatch]"
        );
        let f = failure(FailureCode::CheckpointSignature, "bad")
            .in_file(CHECKPOINTS_FILE)
            .at_line(1)
            .at_seq(9);
        assert_eq!(
            f.to_string(),
            "at checkpoint seq 9 (line 1 of checkpoints.jsonl): bad [checkpoint_signature]"
        );
        let f = failure(FailureCode::UntrustedCertificate, "no").in_file(CHAIN_FILE);
        assert_eq!(f.to_string(), "in chain.pem: no [untrusted_certificate]");
    }
}
