//! SHA-256 digests: of a build's binary (for a profile), and of the running binary (for evidence).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::DigestError;

/// A SHA-256 digest, shown and parsed as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

/// Why a string is not a SHA-256 digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a SHA-256 digest: expected 64 hex digits")]
pub struct ParseDigestError {
    /// The rejected text.
    pub value: String,
}

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        // Upper-case hex is accepted (tpm2-tools prints PCRs that way); output is lower case.
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseDigestError {
            value: s.to_owned(),
        })?;
        Ok(Sha256Digest(out))
    }
}

/// SHA-256 of the file at `path`, read in chunks: what `strongroom firmware-profile digest`
/// prints, and what goes into a profile's `binary.sha256` list.
pub fn file_sha256(path: &Path) -> Result<Sha256Digest, DigestError> {
    let io = |source| DigestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(DigestError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}

/// SHA-256 of the executable of the running process (`/proc/self/exe` on Linux): the
/// `binary_sha256` a node puts into its evidence.
pub fn own_binary_sha256() -> Result<Sha256Digest, DigestError> {
    // `/proc/self/exe` names the mapped executable even if its path was replaced since start.
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return file_sha256(&proc_exe);
    }
    let exe = std::env::current_exe().map_err(|source| DigestError::Io {
        path: PathBuf::from("<current executable>"),
        source,
    })?;
    file_sha256(&exe)
}

/// The line to put into a profile's `[binary]` section for the build at `path`:
/// `sha256 = ["<hex>"]  # <file name>`.
pub fn profile_line(path: &Path, digest: &Sha256Digest) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    format!("sha256 = [\"{digest}\"]  # {name}")
}
