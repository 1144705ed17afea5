//! Shared test material: a software identity key standing in for the token's, fixed claims,
//! and the profiles of `firmware-profile/`.

#![cfg(test)]
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use strongroom_attest::{
    Claims, Evidence, FirmwareProfile, Sha256Digest, SignError, TokenIdentity, VerifyContext,
};

pub(crate) const NOW: u64 = 1_800_000_000;
pub(crate) const CLUSTER: &str = "cluster-a";
pub(crate) const NODE: &str = "node-1";
pub(crate) const BINDING: [u8; 32] = [0x5a; 32];

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn profile_dir() -> PathBuf {
    repo_root().join("firmware-profile")
}

pub(crate) fn dev_profile() -> FirmwareProfile {
    FirmwareProfile::load(&profile_dir().join("dev.toml")).unwrap()
}

/// A production profile that accepts exactly `binary()` and SoftHSM 2.6, without TPM.
pub(crate) fn production_profile() -> FirmwareProfile {
    let text = format!(
        r#"
version = 1
id = "test-production"
mode = "production"

[binary]
sha256 = ["{}", "{}"]

[freshness]
max_age_secs = 300
max_clock_skew_secs = 30

[[token]]
manufacturer = "SoftHSM project"
model = "SoftHSM v2"
firmware_version = "2.6"

[[token]]
manufacturer = "Yubico (www.yubico.com)"
model = "YubiHSM"
firmware_version = "2.*"

[mechanisms]
required = ["CKM_AES_GCM", "CKM_ECDSA"]
"#,
        Sha256Digest::of(b"another release"),
        binary()
    );
    FirmwareProfile::from_toml_str(&text).unwrap()
}

pub(crate) fn binary() -> Sha256Digest {
    Sha256Digest::of(b"strongroom release build")
}

pub(crate) fn softhsm() -> TokenIdentity {
    TokenIdentity {
        manufacturer: "SoftHSM project".into(),
        model: "SoftHSM v2".into(),
        firmware_version: "2.6".into(),
    }
}

pub(crate) fn claims(profile_id: &str) -> Claims {
    Claims {
        binary_sha256: binary(),
        profile_id: profile_id.into(),
        token: softhsm(),
        node_id: NODE.into(),
        cluster_id: CLUSTER.into(),
        issued_at: NOW,
        channel_binding: BINDING.to_vec(),
        tpm_quote: None,
    }
}

pub(crate) fn node_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11u8; 32].into()).unwrap()
}

pub(crate) fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[0x22u8; 32].into()).unwrap()
}

pub(crate) fn spki(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Signs like the token does: ECDSA P-256 over SHA-256, `r || s`.
pub(crate) fn sign_with(key: &SigningKey, claims: Claims) -> Evidence {
    let signer = |message: &[u8]| -> Result<[u8; 64], SignError> {
        let sig: p256::ecdsa::Signature = key.sign(message);
        Ok(sig.to_bytes().into())
    };
    Evidence::sign(claims, &signer).unwrap()
}

pub(crate) fn sign(claims: Claims) -> Vec<u8> {
    sign_with(&node_key(), claims).to_bytes()
}

pub(crate) struct Ctx {
    pub(crate) spki: Vec<u8>,
    pub(crate) node_id: String,
    pub(crate) cluster_id: String,
    pub(crate) binding: Vec<u8>,
    pub(crate) now: u64,
}

impl Ctx {
    pub(crate) fn new() -> Self {
        Ctx {
            spki: spki(&node_key()),
            node_id: NODE.into(),
            cluster_id: CLUSTER.into(),
            binding: BINDING.to_vec(),
            now: NOW,
        }
    }

    pub(crate) fn get(&self) -> VerifyContext<'_> {
        VerifyContext {
            peer_spki_der: &self.spki,
            peer_node_id: &self.node_id,
            cluster_id: &self.cluster_id,
            channel_binding: &self.binding,
            now: self.now,
        }
    }
}
