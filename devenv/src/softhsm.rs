//! SoftHSM tokens for tests: a fresh token directory and configuration per test process.
//!
//! SoftHSM reads its configuration from `SOFTHSM2_CONF` once, when the module is
//! initialised, and the keystore initialises a module once per process. So a process gets one
//! [`SoftHsm`], created before anything loads the module and before the test starts other
//! threads; it may hold several tokens. Tests run under `cargo nextest` (one process per
//! test), so every test has its own.
//!
//! SoftHSM also reads the token directory only when the module is initialised: initialise
//! every token a test needs before the test opens the first one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use strongroom_keystore::{PinSource, TokenConfig};
use tempfile::TempDir;

use crate::process::{HarnessError, run};

/// Where Debian's softhsm2 package puts the PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// User PIN of every test token.
pub const USER_PIN: &str = "1234-test-pin";
/// Security officer PIN of every test token.
pub const SO_PIN: &str = "5678-test-so-pin";

static CREATED: AtomicBool = AtomicBool::new(false);

/// A private SoftHSM installation: its own configuration and token directory, removed on drop.
#[derive(Debug)]
pub struct SoftHsm {
    dir: TempDir,
    conf: PathBuf,
}

/// A token initialised in a [`SoftHsm`], with its user PIN in a file.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// Token label.
    pub label: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
    conf: PathBuf,
}

impl SoftHsm {
    /// Creates the configuration and token directory and points this process at them.
    /// Call it once per process, at the start of the test, before any other thread runs.
    pub fn new() -> Result<Self, HarnessError> {
        Self::with_options(&[])
    }

    /// Like [`SoftHsm::new`], with extra `softhsm2.conf` lines (e.g.
    /// `slots.mechanisms = CKM_AES_KEY_GEN,CKM_ECDSA` to offer only those mechanisms).
    pub fn with_options(extra_config: &[&str]) -> Result<Self, HarnessError> {
        if !Path::new(MODULE).exists() {
            return Err(HarnessError::NotFound {
                what: MODULE.to_owned(),
                hint: "install the Debian package softhsm2, or run deploy/dev/setup.sh".to_owned(),
            });
        }
        if CREATED.swap(true, Ordering::SeqCst) {
            return Err(HarnessError::Misuse(
                "SoftHSM reads its configuration once per process: create one SoftHsm per test \
                 and add tokens to it"
                    .to_owned(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("strongroom-softhsm-")
            .tempdir()
            .map_err(|e| HarnessError::io("cannot create the SoftHSM directory", e))?;
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens)
            .map_err(|e| HarnessError::io("cannot create the SoftHSM token directory", e))?;
        let conf = dir.path().join("softhsm2.conf");
        let mut text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        );
        for line in extra_config {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text)
            .map_err(|e| HarnessError::io("cannot write softhsm2.conf", e))?;
        set_softhsm_conf(&conf);
        Ok(SoftHsm { dir, conf })
    }

    /// Path of this installation's `softhsm2.conf`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Initialises a token labelled `label` with [`USER_PIN`] and writes the PIN to a file.
    pub fn init_token(&self, label: &str) -> Result<TestToken, HarnessError> {
        let mut cmd = Command::new("softhsm2-util");
        cmd.env("SOFTHSM2_CONF", &self.conf).args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            USER_PIN,
            "--so-pin",
            SO_PIN,
        ]);
        run(cmd)?;
        let pin_file = self.dir.path().join(format!("{label}.pin"));
        std::fs::write(&pin_file, format!("{USER_PIN}\n"))
            .map_err(|e| HarnessError::io("cannot write the PIN file", e))?;
        Ok(TestToken {
            label: label.to_owned(),
            pin_file,
            conf: self.conf.clone(),
        })
    }

    /// Environment for child processes that use this installation's tokens.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.clone().into())]
    }
}

impl TestToken {
    /// How the keystore opens this token.
    pub fn config(&self) -> TokenConfig {
        TokenConfig {
            module: PathBuf::from(MODULE),
            label: self.label.clone(),
            pin: PinSource::File(self.pin_file.clone()),
        }
    }

    /// Environment that makes the `strongroom` binary use this token.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf.clone().into()),
            ("STRONGROOM_PKCS11_MODULE".into(), MODULE.into()),
            ("STRONGROOM_TOKEN_LABEL".into(), self.label.clone().into()),
            ("STRONGROOM_PIN_FILE".into(), self.pin_file.clone().into()),
        ]
    }
}

#[allow(unsafe_code)]
fn set_softhsm_conf(conf: &Path) {
    // SAFETY: `set_var` races with concurrent reads of the environment. `SoftHsm::new` is
    // documented to run at the start of a test, in a process of its own, before the test
    // starts threads or loads the PKCS#11 module, so nothing reads the environment meanwhile.
    unsafe { std::env::set_var("SOFTHSM2_CONF", conf) };
}
