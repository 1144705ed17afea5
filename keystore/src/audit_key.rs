//! The token-held audit key: an HMAC-SHA256 secret key that fingerprints sensitive values in
//! the node's audit log. It never leaves the token (`CKA_SENSITIVE`, not extractable); the
//! node asks the token for `HMAC-SHA256(key, message)`.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::error::Error;
use crate::token::Token;

/// Label of the audit HMAC key.
pub const AUDIT_KEY_LABEL: &str = "strongroom-audit-hmac";
/// `CKA_ID` of the audit HMAC key.
const AUDIT_KEY_ID: &[u8] = b"sraudit1";

fn find(session: &Session, token: &Token) -> Result<Option<ObjectHandle>, Error> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Label(AUDIT_KEY_LABEL.as_bytes().to_vec()),
            Attribute::Id(AUDIT_KEY_ID.to_vec()),
        ])
        .map_err(|e| token.pkcs11_error("find the audit key", e))?;
    match handles.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(Error::DuplicateObject {
            token: token.label().to_owned(),
            label: AUDIT_KEY_LABEL.to_owned(),
            count: many.len(),
        }),
    }
}

impl Token {
    /// The handle of the audit HMAC key, created on the token on first use (a 256-bit generic
    /// secret that can only sign: sensitive, never extractable). Creating it takes the
    /// module's object lock, so two handles of one process never create two keys.
    fn audit_key(&self) -> Result<ObjectHandle, Error> {
        if let Some(h) = *crate::token::lock(&self.inner.audit_key, self.label())? {
            return Ok(h);
        }
        let handle = self.with_objects_locked(|s| {
            if let Some(h) = find(s, self)? {
                return Ok(h);
            }
            let h = s
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Modifiable(false),
                        Attribute::Sign(true),
                        Attribute::Verify(true),
                        Attribute::Encrypt(false),
                        Attribute::Decrypt(false),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::Derive(false),
                        Attribute::Label(AUDIT_KEY_LABEL.as_bytes().to_vec()),
                        Attribute::Id(AUDIT_KEY_ID.to_vec()),
                    ],
                )
                .map_err(|e| self.pkcs11_error("create the audit key", e))?;
            tracing::info!(token = self.label(), "created the audit HMAC key");
            Ok(h)
        })?;
        *crate::token::lock(&self.inner.audit_key, self.label())? = Some(handle);
        Ok(handle)
    }

    /// Makes sure the audit HMAC key exists (creating it if needed), so the first audited
    /// event does not pay for key creation.
    pub fn ensure_audit_key(&self) -> Result<(), Error> {
        self.audit_key().map(|_| ())
    }

    /// `HMAC-SHA256(audit key, message)`, computed by the token.
    pub fn audit_hmac(&self, message: &[u8]) -> Result<[u8; 32], Error> {
        let key = self.audit_key()?;
        let mac = self.with_session("audit HMAC", |s| {
            s.sign(&Mechanism::Sha256Hmac, key, message)
        })?;
        mac.as_slice().try_into().map_err(|_| Error::BadHmacLength {
            token: self.label().to_owned(),
            len: mac.len(),
        })
    }

    /// The mechanisms the token lists (`CKM_*` names), for the start-up check against the
    /// firmware profile.
    pub fn mechanisms(&self) -> Result<Vec<String>, Error> {
        let list = self
            .inner
            .module
            .pkcs11
            .get_mechanism_list(self.inner.info_slot())
            .map_err(|e| self.pkcs11_error("list mechanisms", e))?;
        Ok(list.iter().map(ToString::to_string).collect())
    }
}
