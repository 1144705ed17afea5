//! Errors, one enum per operation. Verification errors name the field that did not match and
//! both values, so the refusal can be logged and audited as it is.

use std::path::{Path, PathBuf};

/// Computing the digest of a file failed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory or another non-file.
    #[error("{path} is not a regular file: give the path of the built `strongroom` binary")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
}

/// A firmware profile could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read firmware profile {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// An error in a named profile file.
    #[error("firmware profile {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<ProfileError>,
    },
    /// The text is not TOML of the profile format (syntax, a missing or unknown field).
    #[error("{message}")]
    Toml {
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// The file has no `version`.
    #[error("no `version`: add `version = 1` at the top of the profile")]
    MissingVersion,
    /// The file is of a format version this build does not know.
    #[error(
        "profile format version {found} is not supported (this build reads version {supported})"
    )]
    UnknownVersion {
        /// The version in the file.
        found: String,
        /// The version this build reads.
        supported: u32,
    },
    /// The id is empty, too long or has characters outside `a-z A-Z 0-9 . _ -`.
    #[error("profile id '{id}' is not valid: use 1-64 of a-z A-Z 0-9 . _ -")]
    BadId {
        /// The id.
        id: String,
    },
    /// `binary.dangerous_accept_any_digest` is set in a profile that is not `mode = "dev"`.
    #[error(
        "profile '{profile}' (mode \"{mode}\") sets binary.dangerous_accept_any_digest: only a dev profile may; list the allowed digests in binary.sha256"
    )]
    DangerousOutsideDev {
        /// The profile id.
        profile: String,
        /// The profile's mode.
        mode: &'static str,
    },
    /// `freshness.max_age_secs` is 0, so no evidence could ever be fresh.
    #[error("profile '{profile}': freshness.max_age_secs must be above 0")]
    ZeroFreshness {
        /// The profile id.
        profile: String,
    },
    /// The profile accepts no token.
    #[error("profile '{profile}' lists no [[token]]: a node could not start under it")]
    NoTokens {
        /// The profile id.
        profile: String,
    },
    /// A `[[token]]` entry has an empty field.
    #[error(
        "profile '{profile}': token entry {index} has an empty {field} (use \"*\" to accept any)"
    )]
    EmptyTokenField {
        /// The profile id.
        profile: String,
        /// Position of the entry, from 0.
        index: usize,
        /// The empty field.
        field: &'static str,
    },
    /// A required mechanism is not a `CKM_*` name.
    #[error("profile '{profile}': mechanism '{name}' is not a PKCS#11 name such as CKM_AES_GCM")]
    BadMechanism {
        /// The profile id.
        profile: String,
        /// The name.
        name: String,
    },
    /// A `tpm.pcrs` key is not a PCR index 0–23.
    #[error("profile '{profile}': tpm.pcrs key '{key}' is not a PCR index 0-23")]
    BadPcrIndex {
        /// The profile id.
        profile: String,
        /// The key.
        key: String,
    },
    /// A digest field is not 64 hex digits.
    #[error("profile '{profile}': {field} = '{value}' is not a SHA-256 digest (64 hex digits)")]
    BadDigest {
        /// The profile id.
        profile: String,
        /// The field, e.g. `binary.sha256[0]`.
        field: String,
        /// The value.
        value: String,
    },
    /// `tpm.required` is set but `tpm.pcrs` names no PCR.
    #[error("profile '{profile}': tpm.required is set but tpm.pcrs names no PCR")]
    TpmWithoutPcrs {
        /// The profile id.
        profile: String,
    },
}

impl ProfileError {
    pub(crate) fn in_file(self, path: &Path) -> ProfileError {
        match self {
            e @ ProfileError::Io { .. } => e,
            e => ProfileError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }
}

/// Claims could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than the encoding allows.
    #[error("evidence field {field} is {len} bytes long, over the limit of {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The TPM quote reports more PCRs than the encoding allows.
    #[error("the TPM quote reports {count} PCRs, over the limit of {max}")]
    TooManyPcrs {
        /// PCRs reported.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Evidence could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The claims could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The signer (the token) failed.
    #[error("signing the evidence failed: {0}")]
    Signer(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl SignError {
    /// Wraps the error of a signer.
    pub fn signer(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SignError::Signer(Box::new(e))
    }
}

/// Bytes received as evidence are not a valid encoding. The peer sent them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start with the evidence magic.
    #[error("not strongroom evidence (bad magic)")]
    BadMagic,
    /// The encoding version is unknown to this build.
    #[error("evidence version {found} is not supported (this build reads version {supported})")]
    UnknownVersion {
        /// The version in the evidence.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The bytes end inside a field.
    #[error("evidence ends inside {field}")]
    Truncated {
        /// The field.
        field: &'static str,
    },
    /// A field is longer than allowed.
    #[error("evidence field {field} is {len} long, over the limit of {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("evidence field {field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A presence flag is neither 0 nor 1.
    #[error("evidence field {field} has flag {value}, expected 0 or 1")]
    BadFlag {
        /// The field.
        field: &'static str,
        /// The flag.
        value: u8,
    },
    /// Bytes follow the signature.
    #[error("{count} bytes follow the evidence signature")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// A token is outside the tokens a profile accepts. Fields are compared in order
/// manufacturer, model, firmware version; the first field that no remaining entry accepts is
/// reported, with the values the entries that got that far accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenMismatch {
    /// No accepted token has this manufacturer.
    #[error(
        "token manufacturer '{found}' is not accepted (profile accepts: {})",
        quoted(accepted)
    )]
    Manufacturer {
        /// What the token reports.
        found: String,
        /// The manufacturer patterns of the profile.
        accepted: Vec<String>,
    },
    /// No accepted token of this manufacturer has this model.
    #[error(
        "token model '{found}' is not accepted for manufacturer '{manufacturer}' (profile accepts: {})",
        quoted(accepted)
    )]
    Model {
        /// The token's manufacturer.
        manufacturer: String,
        /// What the token reports.
        found: String,
        /// The model patterns of the entries that accept the manufacturer.
        accepted: Vec<String>,
    },
    /// No accepted token of this manufacturer and model has this firmware version.
    #[error(
        "token firmware version '{found}' is not accepted for '{manufacturer}' '{model}' (profile accepts: {})",
        quoted(accepted)
    )]
    FirmwareVersion {
        /// The token's manufacturer.
        manufacturer: String,
        /// The token's model.
        model: String,
        /// What the token reports.
        found: String,
        /// The firmware patterns of the entries that accept manufacturer and model.
        accepted: Vec<String>,
    },
}

impl TokenMismatch {
    /// The profile field that did not match: `token.manufacturer`, `token.model` or
    /// `token.firmware_version`.
    pub fn field(&self) -> &'static str {
        match self {
            TokenMismatch::Manufacturer { .. } => "token.manufacturer",
            TokenMismatch::Model { .. } => "token.model",
            TokenMismatch::FirmwareVersion { .. } => "token.firmware_version",
        }
    }
}

fn quoted(values: &[String]) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    values
        .iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node's check of its own token against its own profile, at start-up, failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelfCheckError {
    /// The token is not one the profile accepts.
    #[error(
        "this node's token is outside firmware profile '{profile}': {mismatch}; use an accepted token or a profile that lists this one (see `strongroom keystore status`)"
    )]
    Token {
        /// The profile id.
        profile: String,
        /// Which field did not match, and both values.
        mismatch: TokenMismatch,
    },
    /// The token lacks mechanisms the profile requires.
    #[error("this node's token lacks mechanisms firmware profile '{profile}' requires: {}", missing.join(", "))]
    MissingMechanisms {
        /// The profile id.
        profile: String,
        /// The required mechanisms the token does not list.
        missing: Vec<String>,
    },
}

impl SelfCheckError {
    /// The profile field that did not match.
    pub fn field(&self) -> &'static str {
        match self {
            SelfCheckError::Token { mismatch, .. } => mismatch.field(),
            SelfCheckError::MissingMechanisms { .. } => "mechanisms.required",
        }
    }
}

/// A TPM quote did not pass. All but [`TpmError::PcrUnfilled`] are the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    /// The quote or its signature is not a well-formed TPM structure.
    #[error("malformed {what}")]
    Malformed {
        /// The structure or field.
        what: &'static str,
    },
    /// The quote does not carry `TPM_GENERATED_VALUE`: the TPM did not produce it.
    #[error("quote magic is {magic:#010x}, not TPM_GENERATED_VALUE 0xff544347")]
    NotTpmGenerated {
        /// The magic found.
        magic: u32,
    },
    /// The attestation structure is not a quote.
    #[error("attestation type is {kind:#06x}, not TPM_ST_ATTEST_QUOTE 0x8018")]
    NotAQuote {
        /// The type found.
        kind: u16,
    },
    /// PCRs of a bank other than SHA-256 are selected.
    #[error(
        "quote selects PCRs of hash algorithm {alg:#06x}; only the SHA-256 bank (0x000b) is accepted"
    )]
    PcrBank {
        /// The algorithm id.
        alg: u16,
    },
    /// The signature is not ECDSA with SHA-256.
    #[error(
        "quote signature algorithm {alg:#06x} with hash {hash:#06x}; expected ECDSA (0x0018) with SHA-256 (0x000b)"
    )]
    UnsupportedSignature {
        /// `sigAlg`.
        alg: u16,
        /// Its hash.
        hash: u16,
    },
    /// The attestation key is not enrolled in the profile.
    #[error(
        "attestation key {found} is not enrolled (tpm.enrolled_aks: {})",
        quoted(enrolled)
    )]
    AkNotEnrolled {
        /// SHA-256 of the key's SubjectPublicKeyInfo.
        found: String,
        /// The enrolled keys.
        enrolled: Vec<String>,
    },
    /// The attestation key is not a P-256 SubjectPublicKeyInfo.
    #[error("attestation key is not a P-256 public key: {reason}")]
    AkKey {
        /// Why.
        reason: String,
    },
    /// The quote signature does not verify under the attestation key.
    #[error("quote signature does not verify under the attestation key")]
    BadSignature,
    /// The quote's `extraData` is not the qualifying data of the evidence.
    #[error("quote qualifying data: expected {expected} (bound to this evidence), found {found}")]
    QualifyingData {
        /// What the evidence requires.
        expected: String,
        /// What the quote carries.
        found: String,
    },
    /// The reported PCR list is not the quote's selection.
    #[error("quote selects PCRs {quoted:?} but the evidence reports {reported:?}")]
    PcrSelection {
        /// Indices the quote selects.
        quoted: Vec<u8>,
        /// Indices the evidence reports.
        reported: Vec<u8>,
    },
    /// The reported PCR values do not hash to the quoted digest.
    #[error("quoted PCR digest {quoted} is not the hash {computed} of the reported PCR values")]
    PcrDigest {
        /// Digest in the quote.
        quoted: String,
        /// Digest of the reported values.
        computed: String,
    },
    /// A PCR the profile names is not in the quote.
    #[error("PCR {index}: the profile expects {expected} but the quote does not cover it")]
    PcrNotQuoted {
        /// PCR index.
        index: u8,
        /// Expected value.
        expected: String,
    },
    /// A PCR has a value other than the profile's.
    #[error("PCR {index}: expected {expected}, found {found}")]
    PcrValue {
        /// PCR index.
        index: u8,
        /// The profile's value.
        expected: String,
        /// The quoted value.
        found: String,
    },
    /// The profile has no value for a PCR it names (the verifier's own fault).
    #[error("PCR {index}: the profile's value is not filled in")]
    PcrUnfilled {
        /// PCR index.
        index: u8,
    },
}

impl TpmError {
    /// The profile field the refusal is about: `tpm.enrolled_aks` for a key the profile did
    /// not enroll, `tpm.pcrs` for a PCR value, `tpm_quote` for the quote itself.
    pub fn field(&self) -> &'static str {
        match self {
            TpmError::AkNotEnrolled { .. } => "tpm.enrolled_aks",
            TpmError::PcrNotQuoted { .. }
            | TpmError::PcrValue { .. }
            | TpmError::PcrUnfilled { .. } => "tpm.pcrs",
            _ => "tpm_quote",
        }
    }
}

/// Evidence was refused. Except for [`VerifyError::Profile`] and
/// [`VerifyError::ProfileIncomplete`] (the verifier's own configuration), and
/// [`VerifyError::PeerKey`] (the peer's certificate), each variant is a claim of the peer
/// that does not hold.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The bytes are not valid evidence, or of an unknown version.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The key of the peer's certificate is not a P-256 public key.
    #[error("peer certificate key is not a P-256 public key: {reason}")]
    PeerKey {
        /// Why.
        reason: String,
    },
    /// The signature does not verify under the peer certificate's key.
    #[error("evidence signature does not verify under the peer certificate's key")]
    BadSignature,
    /// The evidence is for another cluster.
    #[error("cluster_id: evidence says '{found}', this cluster is '{expected}'")]
    ClusterId {
        /// This node's cluster id.
        expected: String,
        /// The evidence's.
        found: String,
    },
    /// The evidence names another node than the peer's certificate.
    #[error("node_id: evidence says '{found}', the peer certificate says '{expected}'")]
    NodeId {
        /// From the certificate.
        expected: String,
        /// From the evidence.
        found: String,
    },
    /// The evidence was made for another connection (a replay).
    #[error(
        "channel_binding: evidence carries {found}, this connection's exporter value is {expected}"
    )]
    ChannelBinding {
        /// This connection's exporter value, hex.
        expected: String,
        /// The evidence's, hex.
        found: String,
    },
    /// The evidence is too old.
    #[error("issued_at: evidence issued at {issued_at} is over {max_age_secs} s old (now {now})")]
    Stale {
        /// Evidence time, Unix seconds.
        issued_at: u64,
        /// Verifier time, Unix seconds.
        now: u64,
        /// The profile's limit.
        max_age_secs: u64,
    },
    /// The evidence is dated further in the future than the allowed clock skew.
    #[error(
        "issued_at: evidence issued at {issued_at} is over {max_clock_skew_secs} s ahead of this node's clock (now {now})"
    )]
    FromFuture {
        /// Evidence time, Unix seconds.
        issued_at: u64,
        /// Verifier time, Unix seconds.
        now: u64,
        /// The profile's limit.
        max_clock_skew_secs: u64,
    },
    /// The evidence was produced under another profile.
    #[error("profile_id: evidence names '{found}', this node verifies against '{expected}'")]
    ProfileId {
        /// This node's profile.
        expected: String,
        /// The evidence's.
        found: String,
    },
    /// The verifier's profile is not valid (for example the dangerous dev option outside dev).
    #[error("firmware profile refused: {0}")]
    Profile(#[source] ProfileError),
    /// The verifier's profile has fields still to be filled in.
    #[error("firmware profile '{profile}' is not filled in: {}; no evidence is accepted until it is", fields.join(", "))]
    ProfileIncomplete {
        /// The profile id.
        profile: String,
        /// The unfilled fields.
        fields: Vec<String>,
    },
    /// The binary digest is not allowed.
    #[error(
        "binary_sha256: {found} is not allowed by profile '{profile}' (allowed: {})",
        quoted(allowed)
    )]
    BinaryDigest {
        /// The profile id.
        profile: String,
        /// The evidence's digest.
        found: String,
        /// The profile's digests.
        allowed: Vec<String>,
    },
    /// The peer's token is not accepted.
    #[error("{0}")]
    Token(TokenMismatch),
    /// The profile requires a TPM quote and the evidence has none.
    #[error("tpm_quote: profile '{profile}' requires a TPM quote, the evidence has none")]
    TpmQuoteMissing {
        /// The profile id.
        profile: String,
    },
    /// The TPM quote did not pass.
    #[error("{field}: {0}", field = .0.field())]
    Tpm(TpmError),
}

impl VerifyError {
    /// The evidence or profile field the refusal is about, for logs and the audit log.
    pub fn field(&self) -> &'static str {
        match self {
            VerifyError::Decode(_) => "encoding",
            VerifyError::PeerKey { .. } => "peer_certificate",
            VerifyError::BadSignature => "signature",
            VerifyError::ClusterId { .. } => "cluster_id",
            VerifyError::NodeId { .. } => "node_id",
            VerifyError::ChannelBinding { .. } => "channel_binding",
            VerifyError::Stale { .. } | VerifyError::FromFuture { .. } => "issued_at",
            VerifyError::ProfileId { .. } => "profile_id",
            VerifyError::Profile(_) | VerifyError::ProfileIncomplete { .. } => "profile",
            VerifyError::BinaryDigest { .. } => "binary_sha256",
            VerifyError::Token(m) => m.field(),
            VerifyError::TpmQuoteMissing { .. } => "tpm_quote",
            VerifyError::Tpm(e) => e.field(),
        }
    }
}
