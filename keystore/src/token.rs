//! An open, logged-in token: provisioning, KEK versions, counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::config::TokenConfig;
use crate::error::Error;
use crate::identity::{self, IdentityKey, IdentityPublicKey};
use crate::module::{self, Module};

/// Label prefix of KEKs; the full label is `strongroom-kek-v{version}`.
pub const KEK_LABEL_PREFIX: &str = "strongroom-kek-v";
/// Label prefix of counters; the full label is `strongroom-counter-{name}`.
pub const COUNTER_LABEL_PREFIX: &str = "strongroom-counter-";
/// `CKA_APPLICATION` of counter objects.
const COUNTER_APPLICATION: &[u8] = b"strongroom-counter";
/// Prefix of a KEK's `CKA_ID`; the version follows as a big-endian `u32`.
const KEK_ID_PREFIX: &[u8] = b"srkek";

/// The label of KEK `version`.
pub fn kek_label(version: u32) -> String {
    format!("{KEK_LABEL_PREFIX}{version}")
}

fn kek_id(version: u32) -> Vec<u8> {
    let mut id = KEK_ID_PREFIX.to_vec();
    id.extend_from_slice(&version.to_be_bytes());
    id
}

/// The version of a KEK, if `label` and `id` are a canonical KEK label and id.
fn kek_version(label: &[u8], id: &[u8]) -> Option<u32> {
    let label = std::str::from_utf8(label).ok()?;
    let version: u32 = label.strip_prefix(KEK_LABEL_PREFIX)?.parse().ok()?;
    (kek_label(version) == label && kek_id(version) == id).then_some(version)
}

/// Mechanisms every open token must offer.
const RUNTIME_MECHANISMS: [MechanismType; 2] = [MechanismType::AES_GCM, MechanismType::ECDSA];
/// Mechanisms provisioning and rotation need in addition.
const PROVISION_MECHANISMS: [MechanismType; 2] =
    [MechanismType::AES_KEY_GEN, MechanismType::ECC_KEY_PAIR_GEN];

/// Facts about a token, for status output and attestation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Token label.
    pub label: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Firmware version, `major.minor`.
    pub firmware_version: String,
    /// Hardware version, `major.minor`.
    pub hardware_version: String,
    /// Path of the PKCS#11 module.
    pub module: std::path::PathBuf,
}

/// Security attributes of a KEK as the token reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekAttributes {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_MODIFIABLE`.
    pub modifiable: bool,
    /// `CKA_TOKEN` (persistent).
    pub persistent: bool,
}

/// What provisioning did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionReport {
    /// Whether KEK version 1 was created (false: KEKs were already there).
    pub kek_created: bool,
    /// Whether the identity key pair was created (false: it was already there).
    pub identity_created: bool,
    /// KEK versions on the token afterwards.
    pub kek_versions: Vec<u32>,
}

/// What is on a token, without secrets.
#[derive(Clone, Debug)]
pub struct TokenStatus {
    /// Token facts.
    pub info: TokenInfo,
    /// KEK versions and their attributes, oldest first.
    pub keks: Vec<(u32, KekAttributes)>,
    /// The identity public key, if the token has one.
    pub identity: Option<IdentityPublicKey>,
    /// Counters and their values, by name.
    pub counters: Vec<(String, u64)>,
}

#[derive(Debug)]
struct Keks {
    /// Version → handle; the highest version is current.
    handles: BTreeMap<u32, ObjectHandle>,
}

impl Keks {
    fn current(&self) -> Option<(u32, ObjectHandle)> {
        self.handles.last_key_value().map(|(v, h)| (*v, *h))
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) module: Module,
    info: TokenInfo,
    pub(crate) session: Mutex<Session>,
    keks: RwLock<Keks>,
    identity: identity::Handles,
    slot: Slot,
    pub(crate) audit_key: Mutex<Option<ObjectHandle>>,
}

impl Inner {
    pub(crate) fn info_slot(&self) -> Slot {
        self.slot
    }
}

/// A logged-in token holding a provisioned KEK and identity key.
///
/// Cloning is cheap and clones share one PKCS#11 session: SoftHSM 2.6.1 is fragile under
/// concurrent use, so every operation takes the session in turn, and object creation is
/// additionally serialised across all tokens of the module. Keep one process per token.
#[derive(Clone)]
pub struct Token {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label())
            .field("kek_versions", &self.kek_versions())
            .finish_non_exhaustive()
    }
}

/// A logged-in session on a token whose objects have not been looked up yet.
struct Connection {
    module: Module,
    info: TokenInfo,
    slot: Slot,
    session: Session,
}

impl Connection {
    fn open(config: &TokenConfig) -> Result<Self, Error> {
        let module = module::load(&config.module)?;
        let pin = config.pin.read()?;
        let p = &module.pkcs11;
        let ck = |operation, source| Error::Pkcs11 {
            token: config.label.clone(),
            operation,
            source,
        };
        let slots = p
            .get_slots_with_initialized_token()
            .map_err(|e| ck("list slots", e))?;
        let mut present = Vec::new();
        let mut matches = Vec::new();
        for slot in slots {
            let info = p
                .get_token_info(slot)
                .map_err(|e| ck("read token info", e))?;
            if info.label() == config.label {
                matches.push((slot, info));
            } else {
                present.push(info.label().to_owned());
            }
        }
        let (slot, info) = match matches.len() {
            1 => matches.swap_remove(0),
            0 => {
                return Err(Error::TokenNotFound {
                    label: config.label.clone(),
                    module: config.module.clone(),
                    present,
                });
            }
            count => {
                return Err(Error::TokenAmbiguous {
                    label: config.label.clone(),
                    count,
                });
            }
        };
        let info = TokenInfo {
            label: info.label().to_owned(),
            manufacturer: info.manufacturer_id().to_owned(),
            model: info.model().to_owned(),
            serial: info.serial_number().to_owned(),
            firmware_version: info.firmware_version().to_string(),
            hardware_version: info.hardware_version().to_string(),
            module: config.module.clone(),
        };
        let session = p.open_rw_session(slot).map_err(|e| ck("open session", e))?;
        match session.login(UserType::User, Some(&pin)) {
            // Login state belongs to the application, not the session: another token handle
            // of this process may have logged in already.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                return Err(Error::PinIncorrect {
                    token: info.label,
                    pin: config.pin.clone(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Error::PinLocked { token: info.label });
            }
            Err(e) => return Err(ck("log in", e)),
        }
        tracing::debug!(token = %info.label, slot = slot.id(), "logged in to token");
        Ok(Connection {
            module,
            info,
            slot,
            session,
        })
    }

    fn ck(&self, operation: &'static str) -> impl FnOnce(CkError) -> Error + '_ {
        move |source| Error::Pkcs11 {
            token: self.info.label.clone(),
            operation,
            source,
        }
    }

    fn require_mechanisms(&self, needed: &[MechanismType]) -> Result<(), Error> {
        // The list, not C_GetMechanismInfo: SoftHSM applies its `slots.mechanisms` policy to
        // the list only. cryptoki logs (and skips) mechanism codes it does not know.
        let offered = self
            .module
            .pkcs11
            .get_mechanism_list(self.slot)
            .map_err(self.ck("list mechanisms"))?;
        for m in needed {
            if !offered.contains(m) {
                return Err(Error::MechanismMissing {
                    token: self.info.label.clone(),
                    mechanism: m.to_string(),
                });
            }
        }
        Ok(())
    }

    fn find_keks(&self) -> Result<BTreeMap<u32, ObjectHandle>, Error> {
        find_keks(&self.session, &self.info.label)
    }

    fn create_kek(&self, version: u32) -> Result<ObjectHandle, Error> {
        create_kek(&self.session, &self.info.label, version)
    }
}

fn find_keks(session: &Session, token: &str) -> Result<BTreeMap<u32, ObjectHandle>, Error> {
    let ck = |operation, source| Error::Pkcs11 {
        token: token.to_owned(),
        operation,
        source,
    };
    let candidates = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ])
        .map_err(|e| ck("find KEKs", e))?;
    let mut found: BTreeMap<u32, Vec<ObjectHandle>> = BTreeMap::new();
    for handle in candidates {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
            .map_err(|e| ck("read KEK label", e))?;
        let (mut label, mut id) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::Label(l) => label = l,
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        if let Some(version) = kek_version(&label, &id) {
            found.entry(version).or_default().push(handle);
        }
    }
    let mut out = BTreeMap::new();
    for (version, handles) in found {
        match handles.as_slice() {
            [one] => {
                out.insert(version, *one);
            }
            many => {
                return Err(Error::DuplicateObject {
                    token: token.to_owned(),
                    label: kek_label(version),
                    count: many.len(),
                });
            }
        }
    }
    Ok(out)
}

fn create_kek(session: &Session, token: &str, version: u32) -> Result<ObjectHandle, Error> {
    let handle = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Modifiable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(kek_label(version).into_bytes()),
                Attribute::Id(kek_id(version)),
            ],
        )
        .map_err(|source| Error::Pkcs11 {
            token: token.to_owned(),
            operation: "generate KEK",
            source,
        })?;
    tracing::info!(token, version, "created KEK");
    Ok(handle)
}

pub(crate) fn lock<'a, T>(m: &'a Mutex<T>, token: &str) -> Result<MutexGuard<'a, T>, Error> {
    m.lock().map_err(|_| Error::Poisoned {
        token: token.to_owned(),
    })
}

impl Token {
    /// Opens a provisioned token: loads the module (once per process), finds the token by
    /// label, logs in, and finds the KEKs and the identity key. Creates nothing.
    pub fn open(config: &TokenConfig) -> Result<Token, Error> {
        let conn = Connection::open(config)?;
        conn.require_mechanisms(&RUNTIME_MECHANISMS)?;
        Self::from_connection(conn)
    }

    /// Opens a token and creates KEK version 1 and the identity key pair if they are absent.
    /// Safe to repeat: what exists is kept.
    pub fn provision(config: &TokenConfig) -> Result<(Token, ProvisionReport), Error> {
        let conn = Connection::open(config)?;
        conn.require_mechanisms(&RUNTIME_MECHANISMS)?;
        conn.require_mechanisms(&PROVISION_MECHANISMS)?;
        let (kek_created, identity_created) = {
            let _objects = lock(&conn.module.object_lock, &conn.info.label)?;
            let kek_created = if conn.find_keks()?.is_empty() {
                conn.create_kek(1)?;
                true
            } else {
                false
            };
            let identity_created = match identity::find(&conn.session, &conn.info.label)? {
                Some(_) => false,
                None => {
                    identity::generate(&conn.session, &conn.info.label)?;
                    true
                }
            };
            (kek_created, identity_created)
        };
        let token = Self::from_connection(conn)?;
        // The audit HMAC key too, so that a node's start-up only finds it (creating token
        // objects while other processes open the same token store is what SoftHSM handles
        // worst).
        token.ensure_audit_key()?;
        let kek_versions = token.kek_versions();
        Ok((
            token,
            ProvisionReport {
                kek_created,
                identity_created,
                kek_versions,
            },
        ))
    }

    /// Reports what is on a token (provisioned or not) without creating anything and without
    /// reading any secret.
    pub fn inspect(config: &TokenConfig) -> Result<TokenStatus, Error> {
        let conn = Connection::open(config)?;
        let handles = conn.find_keks()?;
        let mut keks = Vec::new();
        for (version, handle) in handles {
            keks.push((
                version,
                kek_attributes(&conn.session, &conn.info.label, handle)?,
            ));
        }
        let identity = identity::find(&conn.session, &conn.info.label)?.map(|h| h.public);
        let counters = list_counters(&conn.session, &conn.info.label)?;
        Ok(TokenStatus {
            info: conn.info,
            keks,
            identity,
            counters,
        })
    }

    fn from_connection(conn: Connection) -> Result<Token, Error> {
        let token = conn.info.label.clone();
        let handles = conn.find_keks()?;
        if handles.is_empty() {
            return Err(Error::NotProvisioned {
                token,
                missing: "key-encryption key (KEK)",
            });
        }
        let identity = identity::find(&conn.session, &token)?.ok_or(Error::NotProvisioned {
            token,
            missing: "identity key",
        })?;
        Ok(Token {
            inner: Arc::new(Inner {
                module: conn.module,
                info: conn.info,
                session: Mutex::new(conn.session),
                keks: RwLock::new(Keks { handles }),
                identity,
                slot: conn.slot,
                audit_key: Mutex::new(None),
            }),
        })
    }

    /// Facts about the token.
    pub fn info(&self) -> &TokenInfo {
        &self.inner.info
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.inner.info.label
    }

    /// Runs `f` with the session. Every token operation goes through here.
    pub(crate) fn with_session<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, Error> {
        let session = lock(&self.inner.session, self.label())?;
        f(&session).map_err(|source| self.pkcs11_error(operation, source))
    }

    /// Runs `f` with the session while holding the module's object-creation lock.
    pub(crate) fn with_objects_locked<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _objects = lock(&self.inner.module.object_lock, self.label())?;
        let session = lock(&self.inner.session, self.label())?;
        f(&session)
    }

    pub(crate) fn pkcs11_error(&self, operation: &'static str, source: CkError) -> Error {
        Error::Pkcs11 {
            token: self.label().to_owned(),
            operation,
            source,
        }
    }

    fn keks(&self) -> Result<std::sync::RwLockReadGuard<'_, Keks>, Error> {
        self.inner.keks.read().map_err(|_| Error::Poisoned {
            token: self.label().to_owned(),
        })
    }

    /// KEK versions on the token, oldest first.
    pub fn kek_versions(&self) -> Vec<u32> {
        self.keks()
            .map(|k| k.handles.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The KEK version new seals use.
    pub fn current_kek_version(&self) -> Result<u32, Error> {
        Ok(self.current_kek()?.0)
    }

    pub(crate) fn current_kek(&self) -> Result<(u32, ObjectHandle), Error> {
        self.keks()?.current().ok_or_else(|| Error::NotProvisioned {
            token: self.label().to_owned(),
            missing: "key-encryption key (KEK)",
        })
    }

    /// The handle of KEK `version`, if the token holds it.
    pub(crate) fn kek_handle(&self, version: u32) -> Result<Option<ObjectHandle>, Error> {
        Ok(self.keks()?.handles.get(&version).copied())
    }

    /// The security attributes of KEK `version`, as the token reports them.
    pub fn kek_attributes(&self, version: u32) -> Result<KekAttributes, Error> {
        let handle = self.kek_handle(version)?.ok_or_else(|| Error::UnknownKek {
            token: self.label().to_owned(),
            version,
        })?;
        let session = lock(&self.inner.session, self.label())?;
        kek_attributes(&session, self.label(), handle)
    }

    /// Creates KEK version N+1 and makes it current for new seals. Blobs sealed under older
    /// versions still unseal; [`Token::reseal`] moves them to the new version.
    pub fn rotate_kek(&self) -> Result<u32, Error> {
        let conn_label = self.label().to_owned();
        let mut keks = self.inner.keks.write().map_err(|_| Error::Poisoned {
            token: conn_label.clone(),
        })?;
        let next = keks
            .current()
            .map_or(Some(1), |(v, _)| v.checked_add(1))
            .ok_or_else(|| Error::KekVersionsExhausted {
                token: conn_label.clone(),
            })?;
        let handle = self.with_objects_locked(|s| create_kek(s, &conn_label, next))?;
        keks.handles.insert(next, handle);
        Ok(next)
    }

    /// Destroys KEK `version`. Every blob sealed under it becomes unreadable for good, so the
    /// caller must have re-sealed all of them (see [`Token::reseal`]) first. The current
    /// version cannot be retired.
    pub fn retire_kek(&self, version: u32) -> Result<(), Error> {
        let mut keks = self.inner.keks.write().map_err(|_| Error::Poisoned {
            token: self.label().to_owned(),
        })?;
        if keks.current().map(|(v, _)| v) == Some(version) {
            return Err(Error::RetireCurrentKek { version });
        }
        let handle = keks
            .handles
            .get(&version)
            .copied()
            .ok_or_else(|| Error::UnknownKek {
                token: self.label().to_owned(),
                version,
            })?;
        self.with_objects_locked(|s| {
            s.destroy_object(handle)
                .map_err(|e| self.pkcs11_error("destroy KEK", e))
        })?;
        keks.handles.remove(&version);
        tracing::info!(token = self.label(), version, "retired KEK");
        Ok(())
    }

    /// The token-held identity key.
    pub fn identity(&self) -> IdentityKey {
        IdentityKey::new(self.clone(), &self.inner.identity)
    }

    /// The value of counter `name` (0 if it was never incremented).
    pub fn counter_read(&self, name: &str) -> Result<u64, Error> {
        check_counter_name(name)?;
        let session = lock(&self.inner.session, self.label())?;
        Ok(read_counter(&session, self.label(), name)?.value)
    }

    /// Increments counter `name` in the token and returns the new value. The first increment
    /// of a name creates the counter (at 0) and returns 1. The new value is persistent on the
    /// token when this returns.
    ///
    /// Tokens need not let a data object's value change (SoftHSM 2.6.1 refuses), so each
    /// increment writes a new object and then destroys the old ones; a crash in between
    /// leaves both, and reading takes the highest, so the counter never goes back.
    pub fn counter_increment(&self, name: &str) -> Result<u64, Error> {
        check_counter_name(name)?;
        let token = self.label();
        self.with_objects_locked(|s| {
            let current = read_counter(s, token, name)?;
            let next = current
                .value
                .checked_add(1)
                .ok_or_else(|| Error::CounterOverflow {
                    name: name.to_owned(),
                })?;
            s.create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Modifiable(true),
                Attribute::Application(COUNTER_APPLICATION.to_vec()),
                Attribute::Label(format!("{COUNTER_LABEL_PREFIX}{name}").into_bytes()),
                Attribute::Value(next.to_be_bytes().to_vec()),
            ])
            .map_err(|e| self.pkcs11_error("write counter", e))?;
            for old in current.objects {
                s.destroy_object(old)
                    .map_err(|e| self.pkcs11_error("remove old counter value", e))?;
            }
            Ok(next)
        })
    }

    /// Every counter on the token and its value.
    pub fn counters(&self) -> Result<Vec<(String, u64)>, Error> {
        let session = lock(&self.inner.session, self.label())?;
        list_counters(&session, self.label())
    }
}

fn kek_attributes(
    session: &Session,
    token: &str,
    handle: ObjectHandle,
) -> Result<KekAttributes, Error> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Modifiable,
                AttributeType::Token,
            ],
        )
        .map_err(|source| Error::Pkcs11 {
            token: token.to_owned(),
            operation: "read KEK attributes",
            source,
        })?;
    // Start from the unsafe answer so that an attribute the token does not report reads as
    // a weakness, not a guarantee.
    let mut out = KekAttributes {
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        modifiable: true,
        persistent: false,
    };
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => out.sensitive = v,
            Attribute::Extractable(v) => out.extractable = v,
            Attribute::AlwaysSensitive(v) => out.always_sensitive = v,
            Attribute::NeverExtractable(v) => out.never_extractable = v,
            Attribute::Modifiable(v) => out.modifiable = v,
            Attribute::Token(v) => out.persistent = v,
            _ => {}
        }
    }
    Ok(out)
}

fn check_counter_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::CounterName {
            name: name.to_owned(),
        })
    }
}

/// A counter's value and the objects that hold it (several after an interrupted increment).
struct CounterState {
    value: u64,
    objects: Vec<ObjectHandle>,
}

fn read_counter(session: &Session, token: &str, name: &str) -> Result<CounterState, Error> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(format!("{COUNTER_LABEL_PREFIX}{name}").into_bytes()),
        ])
        .map_err(|source| Error::Pkcs11 {
            token: token.to_owned(),
            operation: "find counter",
            source,
        })?;
    let mut value = 0;
    for handle in &handles {
        value = value.max(counter_value(session, token, name, *handle)?);
    }
    Ok(CounterState {
        value,
        objects: handles,
    })
}

fn counter_value(
    session: &Session,
    token: &str,
    name: &str,
    handle: ObjectHandle,
) -> Result<u64, Error> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(|source| Error::Pkcs11 {
            token: token.to_owned(),
            operation: "read counter",
            source,
        })?;
    let corrupt = || Error::CounterCorrupt {
        token: token.to_owned(),
        name: name.to_owned(),
    };
    let value = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .ok_or_else(corrupt)?;
    let bytes: [u8; 8] = value.as_slice().try_into().map_err(|_| corrupt())?;
    Ok(u64::from_be_bytes(bytes))
}

fn list_counters(session: &Session, token: &str) -> Result<Vec<(String, u64)>, Error> {
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .map_err(|source| Error::Pkcs11 {
            token: token.to_owned(),
            operation: "find counters",
            source,
        })?;
    let mut out = BTreeMap::new();
    for handle in handles {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label])
            .map_err(|source| Error::Pkcs11 {
                token: token.to_owned(),
                operation: "read counter label",
                source,
            })?;
        let name = attrs.into_iter().find_map(|a| match a {
            Attribute::Label(l) => String::from_utf8(l)
                .ok()
                .and_then(|l| l.strip_prefix(COUNTER_LABEL_PREFIX).map(str::to_owned)),
            _ => None,
        });
        if let Some(name) = name {
            let value = counter_value(session, token, &name, handle)?;
            let entry = out.entry(name).or_insert(0);
            *entry = (*entry).max(value);
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_labels_round_trip() {
        assert_eq!(kek_label(7), "strongroom-kek-v7");
        assert_eq!(kek_version(b"strongroom-kek-v7", &kek_id(7)), Some(7));
        assert_eq!(kek_version(b"strongroom-kek-v07", &kek_id(7)), None);
        assert_eq!(kek_version(b"strongroom-kek-v7", &kek_id(8)), None);
        assert_eq!(kek_version(b"other", &kek_id(7)), None);
    }

    #[test]
    fn counter_names() {
        assert!(check_counter_name("presign.gen-1_a").is_ok());
        for bad in ["", "Upper", "a/b", "x y", &"a".repeat(65)] {
            assert!(check_counter_name(bad).is_err(), "{bad}");
        }
    }
}
