//! The node's identity key: a P-256 key pair generated in the token, whose private half
//! never leaves it. It signs TLS handshakes (through rustls), certificates and requests
//! (through rcgen), and votes.

use std::fmt;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ring::digest;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::error::Error;
use crate::token::Token;

/// Label of the identity key pair.
pub const IDENTITY_LABEL: &str = "strongroom-identity";
const IDENTITY_ID: &[u8] = b"srid1";
/// DER of the named-curve OID of P-256 (`CKA_EC_PARAMS`).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// SubjectPublicKeyInfo prefix for an uncompressed P-256 point (id-ecPublicKey, prime256v1).
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An uncompressed P-256 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdentityPublicKey {
    sec1: [u8; 65],
}

impl IdentityPublicKey {
    /// The SEC1 uncompressed encoding (`0x04 || x || y`).
    pub fn sec1(&self) -> &[u8; 65] {
        &self.sec1
    }

    /// The X.509 SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut out = SPKI_PREFIX.to_vec();
        out.extend_from_slice(&self.sec1);
        out
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER: the key's fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, &self.spki_der()).as_ref());
        out
    }

    /// The fingerprint in lower-case hex.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublicKey(sha256:{})", self.fingerprint_hex())
    }
}

/// Handles of the identity key pair on one session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handles {
    private: ObjectHandle,
    pub(crate) public: IdentityPublicKey,
}

fn ck(token: &str, operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Error {
    let token = token.to_owned();
    move |source| Error::Pkcs11 {
        token,
        operation,
        source,
    }
}

fn find_one(
    session: &Session,
    token: &str,
    class: ObjectClass,
) -> Result<Option<ObjectHandle>, Error> {
    let handles = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC),
            Attribute::Label(IDENTITY_LABEL.as_bytes().to_vec()),
            Attribute::Id(IDENTITY_ID.to_vec()),
        ])
        .map_err(ck(token, "find identity key"))?;
    match handles.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(Error::DuplicateObject {
            token: token.to_owned(),
            label: IDENTITY_LABEL.to_owned(),
            count: many.len(),
        }),
    }
}

/// Finds the identity key pair; `None` if the token has no private identity key.
pub(crate) fn find(session: &Session, token: &str) -> Result<Option<Handles>, Error> {
    let Some(private) = find_one(session, token, ObjectClass::PRIVATE_KEY)? else {
        return Ok(None);
    };
    let public = find_one(session, token, ObjectClass::PUBLIC_KEY)?.ok_or_else(|| {
        Error::NotProvisioned {
            token: token.to_owned(),
            missing: "identity public key (the private key is present)",
        }
    })?;
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(ck(token, "read identity public key"))?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .unwrap_or_default();
    let sec1 = parse_ec_point(&point).ok_or_else(|| Error::BadPublicKey {
        token: token.to_owned(),
    })?;
    Ok(Some(Handles {
        private,
        public: IdentityPublicKey { sec1 },
    }))
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (PKCS#11 2.40); some tokens return
/// the bare point. Accept both, for an uncompressed P-256 point only.
fn parse_ec_point(raw: &[u8]) -> Option<[u8; 65]> {
    let point = match raw {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare if bare.len() == 65 => bare,
        _ => return None,
    };
    if point.first() != Some(&0x04) {
        return None;
    }
    point.try_into().ok()
}

/// Generates the identity key pair in the token.
pub(crate) fn generate(session: &Session, token: &str) -> Result<(), Error> {
    let label = IDENTITY_LABEL.as_bytes().to_vec();
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Label(label.clone()),
                Attribute::Id(IDENTITY_ID.to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Modifiable(false),
                Attribute::Sign(true),
                Attribute::Label(label),
                Attribute::Id(IDENTITY_ID.to_vec()),
            ],
        )
        .map_err(ck(token, "generate identity key pair"))?;
    tracing::info!(token, "created identity key pair");
    Ok(())
}

/// An ECDSA P-256 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EcdsaSignature([u8; 64]);

impl EcdsaSignature {
    /// `r || s`, 32 bytes each, big-endian.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// The ASN.1 DER `Ecdsa-Sig-Value` (what TLS and X.509 carry).
    pub fn to_der(&self) -> Vec<u8> {
        let (r, s) = self.0.split_at(32);
        let r = der_uint(r);
        let s = der_uint(s);
        // Each integer is at most 35 bytes, so every length fits the short form.
        let mut out = Vec::with_capacity(72);
        out.push(0x30);
        out.push(u8::try_from(r.len() + s.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&r);
        out.extend_from_slice(&s);
        out
    }
}

impl fmt::Debug for EcdsaSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "EcdsaSignature({hex})")
    }
}

/// A DER INTEGER holding the unsigned big-endian `bytes`.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = bytes.get(start..).unwrap_or_default();
    let mut body = Vec::with_capacity(33);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    let mut out = vec![0x02, u8::try_from(body.len()).unwrap_or(u8::MAX)];
    out.extend_from_slice(&body);
    out
}

/// The token's identity key. Cheap to clone; signing goes through the token's session.
#[derive(Clone)]
pub struct IdentityKey {
    token: Token,
    private: ObjectHandle,
    public: IdentityPublicKey,
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("token", &self.token.label())
            .field("public", &self.public)
            .finish()
    }
}

impl IdentityKey {
    pub(crate) fn new(token: Token, handles: &Handles) -> Self {
        IdentityKey {
            token,
            private: handles.private,
            public: handles.public,
        }
    }

    /// The public key.
    pub fn public_key(&self) -> &IdentityPublicKey {
        &self.public
    }

    /// Signs `message` with ECDSA P-256 over SHA-256: the digest is computed here and the
    /// token signs it with `CKM_ECDSA` (SoftHSM 2.6.1 has no `CKM_ECDSA_SHA256`).
    pub fn sign(&self, message: &[u8]) -> Result<EcdsaSignature, Error> {
        let prehash = digest::digest(&digest::SHA256, message);
        let raw = self.token.with_session("sign with identity key", |s| {
            s.sign(&Mechanism::Ecdsa, self.private, prehash.as_ref())
        })?;
        let raw: [u8; 64] = raw.as_slice().try_into().map_err(|_| Error::BadSignature {
            token: self.token.label().to_owned(),
        })?;
        Ok(EcdsaSignature(raw))
    }
}

impl rustls::sign::SigningKey for IdentityKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(self.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.public.spki_der()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// Signs TLS handshakes inside the token with `ecdsa_secp256r1_sha256`.
#[derive(Debug)]
struct TlsSigner(IdentityKey);

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map(|sig| sig.to_der())
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

impl rcgen::PublicKeyData for IdentityKey {
    fn der_bytes(&self) -> &[u8] {
        self.public.sec1()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for IdentityKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        IdentityKey::sign(self, msg)
            .map(|sig| sig.to_der())
            .map_err(|e| {
                tracing::warn!(error = %e, "token signing for a certificate failed");
                rcgen::Error::RemoteKeyError
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers() {
        assert_eq!(der_uint(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(der_uint(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_uint(&[0, 0]), vec![2, 1, 0]);
        let sig = EcdsaSignature([0xff; 64]);
        let der = sig.to_der();
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        assert_eq!(der.len(), 2 + 2 * 35);
    }

    #[test]
    fn ec_point_forms() {
        let mut p = [0u8; 65];
        p[0] = 4;
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&p);
        assert_eq!(parse_ec_point(&wrapped), Some(p));
        assert_eq!(parse_ec_point(&p), Some(p));
        assert_eq!(parse_ec_point(&p[..64]), None);
    }
}
