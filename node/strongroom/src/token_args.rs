//! Command-line and environment settings that select the token.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use strongroom_keystore::{PinSource, TokenConfig};

/// Environment variable that may hold the token PIN.
const PIN_ENV: &str = "STRONGROOM_PIN";

/// Which token to use and how to log in.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// PKCS#11 module of the HSM.
    #[arg(
        long,
        global = true,
        env = "STRONGROOM_PKCS11_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so"
    )]
    pkcs11_module: PathBuf,
    /// Label of the token.
    #[arg(long, global = true, env = "STRONGROOM_TOKEN_LABEL")]
    token_label: Option<String>,
    /// File holding the token's user PIN (otherwise the PIN is read from STRONGROOM_PIN).
    #[arg(long, global = true, env = "STRONGROOM_PIN_FILE")]
    pin_file: Option<PathBuf>,
}

impl TokenArgs {
    pub(crate) fn config(&self) -> anyhow::Result<TokenConfig> {
        let Some(label) = self.token_label.clone() else {
            bail!("no token label: pass --token-label or set STRONGROOM_TOKEN_LABEL");
        };
        let pin = match &self.pin_file {
            Some(path) => PinSource::File(path.clone()),
            None if std::env::var_os(PIN_ENV).is_some() => PinSource::Env(PIN_ENV.to_owned()),
            None => {
                bail!("no token PIN: pass --pin-file (or set STRONGROOM_PIN_FILE) or set {PIN_ENV}")
            }
        };
        Ok(TokenConfig {
            module: self.pkcs11_module.clone(),
            label,
            pin,
        })
    }
}
