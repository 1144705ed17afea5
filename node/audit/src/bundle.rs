//! Export bundles: a directory an auditor can take away and verify offline.
//!
//! ```text
//! <bundle>/
//!   manifest.json       format and version, cluster and node id, export time, seq range,
//!                       counts, and the SHA-256 of each file below
//!   entries.jsonl       one AuditEntry per line, in seq order
//!   checkpoints.jsonl   one Checkpoint per line, in seq order
//!   chain.pem           the node's certificate, then any intermediates
//!   ca.pem              the cluster CA certificate the exporter claims
//! ```
//!
//! The manifest is not signed: the checkpoints are what authenticates the log. Its digests
//! catch a damaged or edited file, and its seq range and counts a bundle cut short without the
//! manifest being updated too.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::checkpoint::Checkpoint;
use crate::entry::AuditEntry;

/// `format` of every manifest.
pub const BUNDLE_FORMAT: &str = "strongroom-audit-bundle";
/// The bundle version this crate writes and reads; other versions are refused.
pub const BUNDLE_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The entries' file name.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The checkpoints' file name.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// The node certificate chain's file name.
pub const CHAIN_FILE: &str = "chain.pem";
/// The cluster CA's file name.
pub const CA_FILE: &str = "ca.pem";
/// Every file the manifest lists, in the order they are written.
pub const BUNDLE_FILES: [&str; 4] = [ENTRIES_FILE, CHECKPOINTS_FILE, CHAIN_FILE, CA_FILE];

/// `manifest.json`. Unknown members are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// [`BUNDLE_VERSION`].
    pub version: u32,
    /// The node's cluster.
    pub cluster_id: String,
    /// The node whose log this is.
    pub node_id: String,
    /// When the bundle was written, milliseconds since the Unix epoch; the certificate chain
    /// is checked as of this time.
    pub exported_at_unix_ms: u64,
    /// Seq of the first entry (`None` when there is none).
    pub first_seq: Option<u64>,
    /// Seq of the last entry (`None` when there is none).
    pub last_seq: Option<u64>,
    /// Number of entries.
    pub entries: u64,
    /// Number of checkpoints.
    pub checkpoints: u64,
    /// SHA-256 (lowercase hex) of each file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
}

/// What goes into a bundle.
#[derive(Debug, Clone, Copy)]
pub struct BundleContents<'a> {
    /// The node's cluster.
    pub cluster_id: &'a str,
    /// The node whose log this is.
    pub node_id: &'a str,
    /// Export time, milliseconds since the Unix epoch.
    pub exported_at_unix_ms: u64,
    /// The entries, in seq order.
    pub entries: &'a [AuditEntry],
    /// The checkpoints, in seq order.
    pub checkpoints: &'a [Checkpoint],
    /// PEM: the node's certificate, then any intermediates.
    pub chain_pem: &'a str,
    /// PEM: the cluster CA certificate.
    pub ca_pem: &'a str,
}

/// A bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The target exists and is not an empty directory (operator: choose a new directory).
    #[error("{0} already exists and is not an empty directory: refusing to overwrite it")]
    NotEmpty(PathBuf),
    /// A file could not be created or written (operator: check the path and permissions).
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be serialized (bug).
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Writes a bundle into `dir`, which must not exist or be empty, and returns its manifest.
/// The records are written as given; nothing is verified (see [`crate::verify_bundle`]).
pub fn write_bundle(dir: &Path, contents: &BundleContents<'_>) -> Result<Manifest, BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    match fs::read_dir(dir) {
        Ok(mut listing) => {
            if listing.next().is_some() {
                return Err(BundleError::NotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Err(_) if dir.exists() => return Err(BundleError::NotEmpty(dir.to_path_buf())),
        Err(e) => return Err(io(dir)(e)),
    }

    let mut entries = String::new();
    for e in contents.entries {
        entries.push_str(&json_line(e, "an entry")?);
    }
    let mut checkpoints = String::new();
    for c in contents.checkpoints {
        checkpoints.push_str(&json_line(c, "a checkpoint")?);
    }
    let mut files = BTreeMap::new();
    for (name, text) in [
        (ENTRIES_FILE, entries.as_str()),
        (CHECKPOINTS_FILE, checkpoints.as_str()),
        (CHAIN_FILE, contents.chain_pem),
        (CA_FILE, contents.ca_pem),
    ] {
        write_new(&dir.join(name), text.as_bytes())?;
        files.insert(
            name.to_owned(),
            hex::encode(Sha256::digest(text.as_bytes())),
        );
    }
    let manifest = Manifest {
        format: BUNDLE_FORMAT.to_owned(),
        version: BUNDLE_VERSION,
        cluster_id: contents.cluster_id.to_owned(),
        node_id: contents.node_id.to_owned(),
        exported_at_unix_ms: contents.exported_at_unix_ms,
        first_seq: contents.entries.first().map(|e| e.seq),
        last_seq: contents.entries.last().map(|e| e.seq),
        entries: u64::try_from(contents.entries.len()).unwrap_or(u64::MAX),
        checkpoints: u64::try_from(contents.checkpoints.len()).unwrap_or(u64::MAX),
        files,
    };
    let mut text =
        serde_json::to_string_pretty(&manifest).map_err(|source| BundleError::Serialize {
            what: "the manifest",
            source,
        })?;
    text.push('\n');
    write_new(&dir.join(MANIFEST_FILE), text.as_bytes())?;
    Ok(manifest)
}

fn json_line<T: Serialize>(record: &T, what: &'static str) -> Result<String, BundleError> {
    let mut line =
        serde_json::to_string(record).map_err(|source| BundleError::Serialize { what, source })?;
    line.push('\n');
    Ok(line)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
