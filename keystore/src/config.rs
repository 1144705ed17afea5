//! How to reach a token: module, label and where the PIN comes from.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::Error;

/// Where the user PIN of a token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose contents (without a trailing newline) are the PIN.
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(path) => write!(f, "file {}", path.display()),
            PinSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

impl PinSource {
    /// Reads the PIN. A file's trailing newline (`\n` or `\r\n`) is not part of the PIN.
    pub fn read(&self) -> Result<SecretString, Error> {
        let unavailable = |reason: String| Error::PinUnavailable {
            pin: self.clone(),
            reason,
        };
        let raw = Zeroizing::new(match self {
            PinSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| unavailable(e.to_string()))?
            }
            PinSource::Env(name) => std::env::var(name).map_err(|e| unavailable(e.to_string()))?,
        });
        let pin = raw.strip_suffix('\n').unwrap_or(&raw);
        let pin = pin.strip_suffix('\r').unwrap_or(pin);
        if pin.is_empty() {
            return Err(unavailable("it is empty".to_owned()));
        }
        Ok(SecretString::from(pin.to_owned()))
    }
}

/// Everything needed to open a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token.
    pub label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
}
