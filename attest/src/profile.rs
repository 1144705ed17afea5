//! Firmware profiles: the reference a node's evidence, and its own token, are checked against.
//!
//! The file format is documented field by field in `firmware-profile/README.md`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::digest::Sha256Digest;
use crate::error::ProfileError;

/// The profile file format this crate reads (`version = 1`).
pub const PROFILE_VERSION: u32 = 1;

/// Highest PCR index of a PC-client TPM (24 PCRs, 0–23).
pub const MAX_PCR_INDEX: u8 = 23;

/// Whether a profile is for development or for production appliances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileMode {
    /// Development: SoftHSM tokens, no TPM; the only mode in which dangerous options load.
    Dev,
    /// Production appliances.
    Production,
}

impl ProfileMode {
    /// `"dev"` or `"production"`, as written in the file.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProfileMode::Dev => "dev",
            ProfileMode::Production => "production",
        }
    }
}

/// Which builds of the `strongroom` binary the profile allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryPolicy {
    /// SHA-256 digests of the allowed binaries.
    pub sha256: Vec<Sha256Digest>,
    /// Accept any binary digest. Loads only in a `dev` profile, and the verifier refuses a
    /// profile that sets it outside `dev`.
    pub dangerous_accept_any_digest: bool,
}

/// How old, or how far ahead of the verifier's clock, evidence may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Evidence older than this many seconds is stale.
    pub max_age_secs: u64,
    /// Evidence dated up to this many seconds in the verifier's future is still accepted.
    pub max_clock_skew_secs: u64,
}

/// A token the profile accepts, as the token reports itself in `C_GetTokenInfo`. Each field
/// is a pattern: exact, case-sensitive text in which `*` stands for any run of characters.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPattern {
    /// `manufacturerID`.
    pub manufacturer: String,
    /// `model`.
    pub model: String,
    /// `firmwareVersion` as `major.minor`.
    pub firmware_version: String,
}

/// What the profile expects from a TPM quote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TpmPolicy {
    /// Evidence without a TPM quote is refused.
    pub required: bool,
    /// Expected SHA-256 bank values by PCR index; `None` is a value the release process has
    /// not filled in yet, and a profile with one is refused by the verifier.
    pub pcrs: BTreeMap<u8, Option<Sha256Digest>>,
    /// SHA-256 of the SubjectPublicKeyInfo DER of each appliance's attestation key, enrolled
    /// when the appliance joins the cluster.
    pub enrolled_aks: Vec<Sha256Digest>,
}

/// A loaded, validated firmware profile.
///
/// Build one with [`FirmwareProfile::from_toml_str`] or [`FirmwareProfile::load`]; the
/// verifier validates a profile again before using it, so one assembled by hand gets the
/// same checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareProfile {
    /// Profile id; evidence names the profile it was produced under.
    pub id: String,
    /// Development or production.
    pub mode: ProfileMode,
    /// Free text for operators.
    pub description: String,
    /// Allowed binaries.
    pub binary: BinaryPolicy,
    /// Freshness window of evidence.
    pub freshness: Freshness,
    /// Accepted tokens; a token is accepted when it matches one entry in every field.
    pub tokens: Vec<TokenPattern>,
    /// PKCS#11 mechanisms the node needs from its token (`CKM_*` names).
    pub required_mechanisms: Vec<String>,
    /// TPM quote requirements.
    pub tpm: TpmPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    version: u32,
    id: String,
    mode: ProfileMode,
    #[serde(default)]
    description: String,
    binary: RawBinary,
    freshness: RawFreshness,
    #[serde(default, rename = "token")]
    tokens: Vec<TokenPattern>,
    mechanisms: RawMechanisms,
    #[serde(default)]
    tpm: RawTpm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinary {
    #[serde(default)]
    sha256: Vec<String>,
    #[serde(default)]
    dangerous_accept_any_digest: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreshness {
    max_age_secs: u64,
    max_clock_skew_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMechanisms {
    required: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTpm {
    #[serde(default)]
    required: bool,
    #[serde(default)]
    pcrs: BTreeMap<String, String>,
    #[serde(default)]
    enrolled_aks: Vec<String>,
}

impl FirmwareProfile {
    /// Parses and validates a profile. The `version` is checked before anything else, so a
    /// file of a newer format is refused as such rather than for an unknown field.
    pub fn from_toml_str(text: &str) -> Result<Self, ProfileError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ProfileError::Toml {
            message: e.to_string(),
        })?;
        match table.get("version") {
            Some(toml::Value::Integer(v)) if *v == i64::from(PROFILE_VERSION) => {}
            Some(toml::Value::Integer(v)) => {
                return Err(ProfileError::UnknownVersion {
                    found: v.to_string(),
                    supported: PROFILE_VERSION,
                });
            }
            Some(other) => {
                return Err(ProfileError::UnknownVersion {
                    found: other.to_string(),
                    supported: PROFILE_VERSION,
                });
            }
            None => return Err(ProfileError::MissingVersion),
        }
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Toml {
            message: e.to_string(),
        })?;
        let profile = Self::from_raw(raw)?;
        profile.validate()?;
        Ok(profile)
    }

    /// Reads, parses and validates the profile at `path`.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    fn from_raw(raw: RawProfile) -> Result<Self, ProfileError> {
        let id = raw.id;
        let bad_digest = |field: String, value: &str| ProfileError::BadDigest {
            profile: id.clone(),
            field,
            value: value.to_owned(),
        };
        let mut sha256 = Vec::with_capacity(raw.binary.sha256.len());
        for (i, text) in raw.binary.sha256.iter().enumerate() {
            sha256.push(
                text.parse()
                    .map_err(|_| bad_digest(format!("binary.sha256[{i}]"), text))?,
            );
        }
        let mut pcrs = BTreeMap::new();
        for (key, value) in &raw.tpm.pcrs {
            let index = key
                .parse::<u8>()
                .ok()
                .filter(|i| *i <= MAX_PCR_INDEX && i.to_string() == *key)
                .ok_or_else(|| ProfileError::BadPcrIndex {
                    profile: id.clone(),
                    key: key.clone(),
                })?;
            let value = if value.is_empty() {
                None
            } else {
                Some(
                    value
                        .parse()
                        .map_err(|_| bad_digest(format!("tpm.pcrs.{index}"), value))?,
                )
            };
            pcrs.insert(index, value);
        }
        let mut enrolled_aks = Vec::with_capacity(raw.tpm.enrolled_aks.len());
        for (i, text) in raw.tpm.enrolled_aks.iter().enumerate() {
            enrolled_aks.push(
                text.parse()
                    .map_err(|_| bad_digest(format!("tpm.enrolled_aks[{i}]"), text))?,
            );
        }
        if raw.version != PROFILE_VERSION {
            return Err(ProfileError::UnknownVersion {
                found: raw.version.to_string(),
                supported: PROFILE_VERSION,
            });
        }
        Ok(FirmwareProfile {
            id,
            mode: raw.mode,
            description: raw.description,
            binary: BinaryPolicy {
                sha256,
                dangerous_accept_any_digest: raw.binary.dangerous_accept_any_digest,
            },
            freshness: Freshness {
                max_age_secs: raw.freshness.max_age_secs,
                max_clock_skew_secs: raw.freshness.max_clock_skew_secs,
            },
            tokens: raw.tokens,
            required_mechanisms: raw.mechanisms.required,
            tpm: TpmPolicy {
                required: raw.tpm.required,
                pcrs,
                enrolled_aks,
            },
        })
    }

    /// Checks the rules a profile must follow to be used at all: a well-formed id, at least
    /// one accepted token with no empty field, well-formed mechanism names, a non-zero
    /// freshness window, expected PCRs when a quote is required, and the dangerous binary
    /// option only in a `dev` profile.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            return Err(ProfileError::BadId {
                id: self.id.clone(),
            });
        }
        if self.binary.dangerous_accept_any_digest && self.mode != ProfileMode::Dev {
            return Err(ProfileError::DangerousOutsideDev {
                profile: self.id.clone(),
                mode: self.mode.as_str(),
            });
        }
        if self.freshness.max_age_secs == 0 {
            return Err(ProfileError::ZeroFreshness {
                profile: self.id.clone(),
            });
        }
        if self.tokens.is_empty() {
            return Err(ProfileError::NoTokens {
                profile: self.id.clone(),
            });
        }
        for (index, token) in self.tokens.iter().enumerate() {
            for (field, value) in [
                ("manufacturer", &token.manufacturer),
                ("model", &token.model),
                ("firmware_version", &token.firmware_version),
            ] {
                if value.trim().is_empty() {
                    return Err(ProfileError::EmptyTokenField {
                        profile: self.id.clone(),
                        index,
                        field,
                    });
                }
            }
        }
        for name in &self.required_mechanisms {
            let well_formed = name.len() > 4
                && name.starts_with("CKM_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !well_formed {
                return Err(ProfileError::BadMechanism {
                    profile: self.id.clone(),
                    name: name.clone(),
                });
            }
        }
        if let Some(index) = self.tpm.pcrs.keys().find(|i| **i > MAX_PCR_INDEX) {
            return Err(ProfileError::BadPcrIndex {
                profile: self.id.clone(),
                key: index.to_string(),
            });
        }
        if self.tpm.required && self.tpm.pcrs.is_empty() {
            return Err(ProfileError::TpmWithoutPcrs {
                profile: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Fields the release process or the operator still has to fill in, by their name in the
    /// file. The verifier refuses all evidence while this is not empty.
    pub fn unfilled_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.binary.sha256.is_empty() && !self.binary.dangerous_accept_any_digest {
            out.push("binary.sha256".to_owned());
        }
        if self.tpm.required {
            for (index, value) in &self.tpm.pcrs {
                if value.is_none() {
                    out.push(format!("tpm.pcrs.{index}"));
                }
            }
            if self.tpm.enrolled_aks.is_empty() {
                out.push("tpm.enrolled_aks".to_owned());
            }
        }
        out
    }

    /// Whether this is a development profile.
    pub fn is_dev(&self) -> bool {
        self.mode == ProfileMode::Dev
    }
}
