//! Envelope sealing: a fresh data key per blob encrypts the payload in software; the token
//! encrypts the data key under the KEK.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::blob::{
    DATA_KEY_LEN, FORMAT_VERSION, Header, MAX_PAYLOAD_LEN, NONCE_LEN, ObjectKind, ProtectedKey,
    SealedBlob, Suite, TAG_LEN,
};
use crate::error::{Error, SealError, UnsealError};
use crate::secret::SecretBytes;
use crate::token::{Token, kek_label, lock};

/// GCM tag length in bits, as PKCS#11 wants it.
const TAG_BITS: u64 = (TAG_LEN * 8) as u64;

/// Which object a blob is: given to [`Token::seal`] and expected by [`Token::unseal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    /// Cluster id.
    pub cluster_id: &'a str,
    /// Node id of the node that seals and unseals.
    pub node_id: &'a str,
    /// Kind of object.
    pub kind: ObjectKind,
    /// Object id (key id, presignature id, ...).
    pub object_id: &'a [u8],
}

/// An unsealed blob: its header (for the generation and rollback checks) and its plaintext.
#[derive(Debug)]
pub struct Unsealed {
    /// The authenticated header.
    pub header: Header,
    /// The plaintext.
    pub plaintext: SecretBytes,
}

impl Unsealed {
    /// The generation the blob was sealed with.
    pub fn generation(&self) -> u64 {
        self.header.generation
    }
}

fn fill_random(buf: &mut [u8]) -> Result<(), Error> {
    SystemRandom::new().fill(buf).map_err(|_| Error::Random)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Token {
    /// Seals `plaintext` as `object` with the caller's `generation`, under the current KEK.
    ///
    /// The blob can be opened only by this token, and only as the same object.
    pub fn seal(
        &self,
        object: &ObjectRef<'_>,
        generation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PAYLOAD_LEN {
            return Err(SealError::PayloadTooLarge {
                len: plaintext.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let (kek_version, kek) = self.current_kek()?;
        let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        fill_random(&mut data_key[..])?;
        let mut iv = [0u8; NONCE_LEN];
        fill_random(&mut iv)?;
        let mut payload_nonce = [0u8; NONCE_LEN];
        fill_random(&mut payload_nonce)?;
        let mut header = Header {
            format_version: FORMAT_VERSION,
            suite: Suite::TokenAesGcmA256Gcm,
            kek_label: kek_label(kek_version),
            kek_version,
            protected_key: ProtectedKey {
                iv,
                ciphertext: Vec::new(),
            },
            payload_nonce,
            cluster_id: object.cluster_id.to_owned(),
            node_id: object.node_id.to_owned(),
            kind: object.kind,
            object_id: object.object_id.to_vec(),
            generation,
        };
        let wrap_aad = header.wrap_aad().map_err(SealError::InvalidField)?;
        let (iv, ciphertext) = self.with_session("encrypt data key", |s| {
            let mut iv = iv;
            let ciphertext = {
                let params = GcmParams::new(&mut iv, &wrap_aad, TAG_BITS.into())?;
                s.encrypt(&Mechanism::AesGcm(params), kek, &data_key[..])?
            };
            // FIPS-mode tokens ignore the caller's IV and write their own into the buffer.
            Ok((iv, ciphertext))
        })?;
        header.protected_key = ProtectedKey { iv, ciphertext };
        let mut blob = header.encode().map_err(SealError::InvalidField)?;
        let header_len = blob.len();
        blob.reserve_exact(plaintext.len() + TAG_LEN);
        blob.extend_from_slice(plaintext);
        let key = payload_key(&data_key)?;
        let (aad, payload) = blob.split_at_mut(header_len);
        let sealed = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(payload_nonce),
                Aad::from(&*aad),
                payload,
            )
            .map_err(|_| Error::Crypto {
                operation: "payload encryption",
            });
        match sealed {
            Ok(tag) => {
                blob.extend_from_slice(tag.as_ref());
                Ok(blob)
            }
            Err(e) => {
                blob.zeroize();
                Err(e.into())
            }
        }
    }

    /// Opens a blob, checking that it is `expected` (cluster, node, kind, object id), that
    /// this token holds its KEK, and that neither header nor payload was altered. Returns
    /// nothing but an error otherwise. The caller checks the returned generation against
    /// its rollback high-water mark.
    pub fn unseal(&self, expected: &ObjectRef<'_>, blob: &[u8]) -> Result<Unsealed, UnsealError> {
        let parsed = SealedBlob::parse(blob)?;
        let h = &parsed.header;
        if h.cluster_id != expected.cluster_id {
            return Err(UnsealError::WrongCluster {
                expected: expected.cluster_id.to_owned(),
                found: h.cluster_id.clone(),
            });
        }
        if h.node_id != expected.node_id {
            return Err(UnsealError::WrongNode {
                expected: expected.node_id.to_owned(),
                found: h.node_id.clone(),
            });
        }
        if h.kind != expected.kind {
            return Err(UnsealError::WrongKind {
                expected: expected.kind,
                found: h.kind,
            });
        }
        if h.object_id != expected.object_id {
            return Err(UnsealError::WrongObject {
                expected: hex(expected.object_id),
                found: hex(&h.object_id),
            });
        }
        let unknown_kek = || UnsealError::UnknownKek {
            token: self.label().to_owned(),
            label: h.kek_label.clone(),
            version: h.kek_version,
        };
        if h.kek_label != kek_label(h.kek_version) {
            return Err(unknown_kek());
        }
        let kek = self.kek_handle(h.kek_version)?.ok_or_else(unknown_kek)?;
        let wrap_aad = h.wrap_aad()?;
        let decrypted = {
            let session = lock(&self.inner.session, self.label())?;
            let mut iv = h.protected_key.iv;
            GcmParams::new(&mut iv, &wrap_aad, TAG_BITS.into())
                .and_then(|params| {
                    session.decrypt(&Mechanism::AesGcm(params), kek, &h.protected_key.ciphertext)
                })
                .map(Zeroizing::new)
        };
        let data_key = match decrypted {
            Ok(key) => key,
            Err(e) if is_integrity_failure(&e) => return Err(UnsealError::DataKeyRejected),
            Err(e) => return Err(self.pkcs11_error("decrypt data key", e).into()),
        };
        let data_key: Zeroizing<[u8; DATA_KEY_LEN]> = Zeroizing::new(
            data_key
                .as_slice()
                .try_into()
                .map_err(|_| UnsealError::DataKeyRejected)?,
        );
        let key = payload_key(&data_key)?;
        let mut buf = Zeroizing::new(parsed.payload.to_vec());
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(h.payload_nonce),
                Aad::from(parsed.header_bytes),
                &mut buf[..],
            )
            .map_err(|_| UnsealError::PayloadRejected)?
            .len();
        buf.truncate(len);
        Ok(Unsealed {
            header: parsed.header.clone(),
            plaintext: SecretBytes::new(std::mem::take(&mut *buf)),
        })
    }

    /// Re-seals a blob under the current KEK, keeping its object and generation. Used after
    /// [`Token::rotate_kek`] and before [`Token::retire_kek`].
    pub fn reseal(&self, expected: &ObjectRef<'_>, blob: &[u8]) -> Result<Vec<u8>, UnsealError> {
        let opened = self.unseal(expected, blob)?;
        self.seal(
            expected,
            opened.header.generation,
            opened.plaintext.expose_secret(),
        )
        .map_err(UnsealError::Reseal)
    }
}

fn payload_key(data_key: &[u8; DATA_KEY_LEN]) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&AES_256_GCM, data_key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto {
            operation: "payload key setup",
        })
}

/// Whether a failed `C_Decrypt` means "this ciphertext does not authenticate" rather than
/// "the token is unwell". SoftHSM reports a GCM tag mismatch as `CKR_GENERAL_ERROR`.
fn is_integrity_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed
                | RvError::DataInvalid
                | RvError::DataLenRange,
            _
        )
    )
}
