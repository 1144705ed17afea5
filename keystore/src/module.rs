//! The process-wide registry of loaded PKCS#11 modules.
//!
//! `C_Initialize` may run once per module and process, and SoftHSM 2.6.1 misbehaves when
//! objects are created concurrently through one module, so every [`crate::Token`] of a
//! module shares one [`Pkcs11`] context and one object-creation lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;

use crate::error::Error;

/// A loaded, initialised module.
#[derive(Clone, Debug)]
pub(crate) struct Module {
    pub(crate) pkcs11: Pkcs11,
    /// Held while creating or destroying token objects through this module.
    pub(crate) object_lock: Arc<Mutex<()>>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Module>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The Debian package that provides a module, judged by its path.
fn package_hint(path: &Path) -> String {
    let p = path.to_string_lossy();
    if p.contains("softhsm") {
        "install the Debian package softhsm2 (apt-get install softhsm2)".to_owned()
    } else if p.contains("opensc") {
        "install the Debian package opensc-pkcs11 (apt-get install opensc-pkcs11)".to_owned()
    } else {
        "install your HSM vendor's PKCS#11 module".to_owned()
    }
}

/// Loads and initialises the module at `path`, or returns the one already loaded.
pub(crate) fn load(path: &Path) -> Result<Module, Error> {
    if !path.exists() {
        return Err(Error::ModuleMissing {
            path: path.to_owned(),
            hint: package_hint(path),
        });
    }
    // Two paths to one library (the Debian path is a symlink) must share one context.
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mut modules = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(module) = modules.get(&key) {
        return Ok(module.clone());
    }
    let load_err = |source| Error::ModuleLoad {
        path: path.to_owned(),
        source,
    };
    let pkcs11 = Pkcs11::new(&key).map_err(load_err)?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library in this process initialised the module first; its context is
        // process-wide, so it serves us as well.
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e)),
    }
    let module = Module {
        pkcs11,
        object_lock: Arc::new(Mutex::new(())),
    };
    modules.insert(key, module.clone());
    Ok(module)
}
