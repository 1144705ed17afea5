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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use strongroom_keystore::{PinSource, TokenConfig};

use crate::process::{HarnessDir, HarnessError, run};

/// Where Debian's softhsm2 package puts the PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// User PIN of every test token.
pub const USER_PIN: &str = "1234-test-pin";
/// Security officer PIN of every test token.
pub const SO_PIN: &str = "5678-test-so-pin";

static CREATED: AtomicBool = AtomicBool::new(false);

/// A private SoftHSM installation: its own configuration and token directory, removed on drop
/// unless it lives in a directory of the caller's ([`SoftHsm::in_dir`]).
#[derive(Debug)]
pub struct SoftHsm {
    dir: HarnessDir,
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
    /// The token directory its files live in (`directories.tokendir` of `conf`).
    tokens_dir: PathBuf,
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
        check_module_and_once()?;
        let dir = tempfile::Builder::new()
            .prefix("strongroom-softhsm-")
            .tempdir()
            .map_err(|e| HarnessError::io("cannot create the SoftHSM directory", e))?;
        Self::configure(HarnessDir::Temp(dir), extra_config)
    }

    /// Like [`SoftHsm::new`] in `dir`, which is kept: created if missing, and if it already
    /// holds an installation (`softhsm2.conf`, `tokens/`), its tokens are used again.
    pub fn in_dir(dir: &Path) -> Result<Self, HarnessError> {
        check_module_and_once()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("cannot create {}", dir.display()), e))?;
        // The tokens are the nodes' secrets: this user's only.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| HarnessError::io(format!("cannot restrict {}", dir.display()), e))?;
        Self::configure(HarnessDir::Kept(dir.to_path_buf()), &[])
    }

    fn configure(dir: HarnessDir, extra_config: &[&str]) -> Result<Self, HarnessError> {
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens)
            .map_err(|e| HarnessError::io("cannot create the SoftHSM token directory", e))?;
        let conf = write_conf(dir.path(), &tokens, extra_config)?;
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
        let tokens_dir = self.dir.path().join("tokens");
        init_token_with(&self.conf, tokens_dir, self.dir.path(), label)
    }

    /// Initialises a token labelled `label` in an installation of its own in `dir` (created,
    /// mode 0700: its own `softhsm2.conf` and token directory, the PIN file), so that a process
    /// given that configuration ([`TestToken::env`]) sees this token only. Several processes
    /// each on a token of their own then never read a token file another one is writing,
    /// which SoftHSM's file store does not guard against. This process keeps its own
    /// configuration; [`SoftHsm::with_tokens_gathered`] lends such tokens to it.
    pub fn init_token_alone(&self, label: &str, dir: &Path) -> Result<TestToken, HarnessError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("cannot create {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| HarnessError::io(format!("cannot restrict {}", dir.display()), e))?;
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .map_err(|e| HarnessError::io("cannot create the SoftHSM token directory", e))?;
        let conf = write_conf(dir, &tokens, &[])?;
        init_token_with(&conf, tokens, dir, label)
    }

    /// Runs `f` while the files of `tokens` (from [`SoftHsm::init_token_alone`]) sit in this
    /// installation's token directory, where one process with this installation's
    /// configuration (e.g. `strongroom cluster init`) sees them all; moves them back
    /// afterwards, also when `f` fails.
    pub fn with_tokens_gathered<T>(
        &self,
        tokens: &[TestToken],
        f: impl FnOnce() -> Result<T, HarnessError>,
    ) -> Result<T, HarnessError> {
        let shared = self.dir.path().join("tokens");
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut gather = || -> Result<(), HarnessError> {
            for token in tokens {
                let entries = std::fs::read_dir(&token.tokens_dir).map_err(|e| {
                    HarnessError::io(format!("cannot read {}", token.tokens_dir.display()), e)
                })?;
                for entry in entries {
                    let from = entry
                        .map_err(|e| HarnessError::io("cannot read a token directory", e))?
                        .path();
                    let Some(name) = from.file_name() else {
                        continue;
                    };
                    let to = shared.join(name);
                    std::fs::rename(&from, &to).map_err(|e| {
                        HarnessError::io(
                            format!("cannot move {} to {}", from.display(), to.display()),
                            e,
                        )
                    })?;
                    moved.push((from, to));
                }
            }
            Ok(())
        };
        let result = gather().and_then(|()| f());
        let mut restored = Ok(());
        for (home, shared) in moved.iter().rev() {
            if let Err(e) = std::fs::rename(shared, home) {
                restored = Err(HarnessError::io(
                    format!(
                        "cannot move {} back to {}",
                        shared.display(),
                        home.display()
                    ),
                    e,
                ));
            }
        }
        let value = result?;
        restored.map(|()| value)
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

    /// The SoftHSM configuration that shows this token.
    pub fn conf(&self) -> &Path {
        &self.conf
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

/// Writes `<dir>/softhsm2.conf` for the token directory `tokens` and returns its path.
fn write_conf(dir: &Path, tokens: &Path, extra_config: &[&str]) -> Result<PathBuf, HarnessError> {
    let conf = dir.join("softhsm2.conf");
    let mut text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
        tokens.display()
    );
    for line in extra_config {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&conf, text).map_err(|e| HarnessError::io("cannot write softhsm2.conf", e))?;
    Ok(conf)
}

/// `softhsm2-util --init-token` under configuration `conf`; the PIN file goes to `pin_dir`.
fn init_token_with(
    conf: &Path,
    tokens_dir: PathBuf,
    pin_dir: &Path,
    label: &str,
) -> Result<TestToken, HarnessError> {
    let mut cmd = Command::new("softhsm2-util");
    cmd.env("SOFTHSM2_CONF", conf).args([
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
    let pin_file = pin_dir.join(format!("{label}.pin"));
    std::fs::write(&pin_file, format!("{USER_PIN}\n"))
        .map_err(|e| HarnessError::io("cannot write the PIN file", e))?;
    Ok(TestToken {
        label: label.to_owned(),
        pin_file,
        conf: conf.to_path_buf(),
        tokens_dir,
    })
}

/// The module must be installed, and a process gets one [`SoftHsm`].
fn check_module_and_once() -> Result<(), HarnessError> {
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
    Ok(())
}

#[allow(unsafe_code)]
fn set_softhsm_conf(conf: &Path) {
    // SAFETY: `set_var` races with concurrent reads of the environment. `SoftHsm::new` is
    // documented to run at the start of a test, in a process of its own, before the test
    // starts threads or loads the PKCS#11 module, so nothing reads the environment meanwhile.
    unsafe { std::env::set_var("SOFTHSM2_CONF", conf) };
}
