//! The cluster PKI: the cluster CA, node and client certificates, certificate signing requests,
//! and reading the identity back out of a certificate.
//!
//! Every certificate the CA issues names its holder in exactly one URI subject alternative name,
//! `spiffe://<cluster-id>/node/<node-id>` or `spiffe://<cluster-id>/client/<name>`. Node
//! certificates may authenticate both ends of a TLS connection (extended key usages server and
//! client auth); client certificates only the client end. The CA never copies anything but the
//! identity and the public key out of a CSR: key usages, validity and CA flags are its own.
//!
//! Two ways to provision a node: the dev way issues everything in one go
//! ([`ClusterCa::issue`] over a public key the caller already has), the ceremony way has the node
//! write a CSR with its token-held key ([`create_csr`]) and the CA sign it ([`ClusterCa::sign_csr`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// DER certificate type used throughout this module (re-exported for callers).
pub use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::ids::{ClusterId, SpiffeId, SpiffeIdError, Subject};

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a CA directory (dev way only; mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Allowance for clocks that run slightly behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity.
    pub not_before: SystemTime,
    /// Last instant of validity.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from a few minutes ago (clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }

    fn to_rcgen(self) -> Result<(OffsetDateTime, OffsetDateTime), ValidityError> {
        if self.not_after <= self.not_before {
            return Err(ValidityError::Empty);
        }
        let conv = |t: SystemTime| {
            OffsetDateTime::from(t)
                .replace_nanosecond(0)
                .map_err(|_| ValidityError::OutOfRange)
        };
        Ok((conv(self.not_before)?, conv(self.not_after)?))
    }
}

/// A validity period that cannot go into a certificate; the caller chose it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    /// `not_after` is not after `not_before`.
    #[error("the validity period is empty: not_after must be later than not_before")]
    Empty,
    /// A date cannot be represented.
    #[error("a validity date is out of the representable range")]
    OutOfRange,
}

/// Creating or loading the cluster CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The requested validity period is unusable (caller).
    #[error("CA validity: {0}")]
    Validity(#[from] ValidityError),
    /// Key generation or self-signing failed inside the crypto library (bug or platform).
    #[error("cannot create the CA certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// Reading or writing a CA file failed (operator: check the path and permissions).
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CA certificate file does not hold a usable CA certificate (operator: wrong file).
    #[error("{path}: not a strongroom cluster CA certificate: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CA key file does not hold a usable key (operator: wrong or damaged file).
    #[error("{path}: cannot read the CA private key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file and the certificate do not belong together (operator: mixed-up files).
    #[error("the CA key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The directory already holds a CA; refusing to overwrite it (operator).
    #[error("{0} already exists: refusing to overwrite an existing CA")]
    AlreadyExists(PathBuf),
}

/// Issuing a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The requested validity period is unusable (caller).
    #[error("certificate validity: {0}")]
    Validity(#[from] ValidityError),
    /// The subject's key is not ECDSA P-256, the only key type the cluster accepts (requester).
    #[error("the subject key is not an ECDSA P-256 key")]
    UnsupportedKey,
    /// Signing failed inside the crypto library (bug or platform).
    #[error("cannot sign the certificate: {0}")]
    Sign(#[source] rcgen::Error),
}

/// Creating a certificate signing request failed.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The key is not ECDSA P-256, the only key type the cluster accepts (caller).
    #[error("the key is not an ECDSA P-256 key")]
    UnsupportedKey,
    /// Building or signing the request failed; with a token-held key the token refused (HSM).
    #[error("cannot build or sign the CSR: {0}")]
    Sign(#[source] rcgen::Error),
}

/// The CA refused to sign a CSR; unless stated otherwise, the requester is at fault.
#[derive(Debug, thiserror::Error)]
pub enum SignCsrError {
    /// The CSR cannot be parsed, or its self-signature is invalid.
    #[error("the CSR is malformed or its signature is invalid: {0}")]
    Malformed(#[source] rcgen::Error),
    /// The CSR names no identity, or more than one subject alternative name.
    #[error("the CSR must carry exactly one URI subject alternative name, found {found}")]
    IdentityCount {
        /// How many SANs the CSR carries.
        found: usize,
    },
    /// The CSR's SAN is not a strongroom identity URI.
    #[error("the CSR's identity is not valid: {0}")]
    BadIdentity(#[from] SpiffeIdError),
    /// The CSR is for another cluster.
    #[error("the CSR is for cluster '{found}', this CA signs for '{expected}'")]
    WrongCluster {
        /// This CA's cluster.
        expected: ClusterId,
        /// The cluster the CSR names.
        found: ClusterId,
    },
    /// The CSR names someone other than the operator said it would.
    #[error("the CSR is for {found}, expected {expected}")]
    UnexpectedSubject {
        /// What the operator expected.
        expected: SpiffeId,
        /// What the CSR names.
        found: SpiffeId,
    },
    /// The CSR asks for CA powers.
    #[error("the CSR asks for a CA certificate")]
    RequestsCa,
    /// Issuing the certificate failed (CA side).
    #[error(transparent)]
    Issue(#[from] IssueError),
}

/// A certificate does not carry a usable strongroom identity (its presenter is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate is not valid DER X.509.
    #[error("not a parseable X.509 certificate: {0}")]
    Malformed(String),
    /// The certificate carries no URI subject alternative name.
    #[error("the certificate names no spiffe:// identity")]
    Missing,
    /// The certificate carries more than one URI subject alternative name.
    #[error("the certificate names {0} URI identities, exactly one is allowed")]
    Ambiguous(usize),
    /// The URI is not a strongroom identity.
    #[error(transparent)]
    Bad(#[from] SpiffeIdError),
}

/// Reads the strongroom identity out of a DER certificate (no chain or validity check).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| IdentityError::Malformed(e.to_string()))?
        .ok_or(IdentityError::Missing)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(IdentityError::Missing),
        [one] => Ok(SpiffeId::parse(one)?),
        more => Err(IdentityError::Ambiguous(more.len())),
    }
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn public_key_of(cert: &CertificateDer<'_>) -> Result<Vec<u8>, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    Ok(parsed.public_key().raw.to_vec())
}

/// The end of a certificate's validity period.
pub fn not_after_of(cert: &CertificateDer<'_>) -> Result<SystemTime, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let ts = parsed.validity().not_after.timestamp();
    let secs =
        u64::try_from(ts).map_err(|_| IdentityError::Malformed("not_after before 1970".into()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Parses every PEM certificate in `pem`, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// PEM text of one DER certificate.
pub fn cert_to_pem(cert: &CertificateDer<'_>) -> String {
    pem_block("CERTIFICATE", cert.as_ref())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `contents` to a new file readable only by its owner (mode 0600).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive INTEGER that keeps its full 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn is_p256(key: &impl PublicKeyData) -> bool {
    key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256
}

/// The leaf certificate parameters the CA fills in for `id`; nothing comes from the requester.
fn leaf_params(id: &SpiffeId, validity: Validity) -> Result<CertificateParams, IssueError> {
    let (not_before, not_after) = validity.to_rcgen()?;
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        format!("strongroom {}", id.cluster),
    );
    dn.push(DnType::CommonName, id.subject.name());
    params.distinguished_name = dn;
    let uri = id.uri().try_into().map_err(IssueError::Sign)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match id.subject {
        Subject::Node(_) => {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        }
        Subject::Client(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Creates a CSR for `id`, signed by `key` (a token-held key in the ceremony way). PEM output.
pub fn create_csr(id: &SpiffeId, key: &impl rcgen::SigningKey) -> Result<String, CsrError> {
    if !is_p256(key) {
        return Err(CsrError::UnsupportedKey);
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.subject.name());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(id.uri().try_into().map_err(CsrError::Sign)?)];
    let csr = params.serialize_request(key).map_err(CsrError::Sign)?;
    csr.pem().map_err(CsrError::Sign)
}

/// A certificate the CA issued, DER and PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The identity it carries.
    pub identity: SpiffeId,
    /// DER encoding.
    pub der: CertificateDer<'static>,
}

impl IssuedCert {
    /// PEM encoding.
    pub fn pem(&self) -> String {
        cert_to_pem(&self.der)
    }
}

/// The cluster certificate authority: the only trust anchor of the cluster's TLS.
pub struct ClusterCa {
    cluster: ClusterId,
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256 key in memory) for `cluster`.
    pub fn generate(cluster: &ClusterId, validity: Validity) -> Result<Self, CaError> {
        let (not_before, not_after) = validity.to_rcgen()?;
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, format!("strongroom {cluster}"));
        dn.push(
            DnType::CommonName,
            format!("strongroom cluster CA {cluster}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(Self {
            cluster: cluster.clone(),
            cert: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA from its certificate and key PEM texts; `paths` name them in errors.
    pub fn from_pem(
        cluster: &ClusterId,
        cert_pem: &str,
        key_pem: &str,
        paths: (&Path, &Path),
    ) -> Result<Self, CaError> {
        let (cert_path, key_path) = paths;
        let bad_cert = |reason: String| CaError::BadCertificate {
            path: cert_path.into(),
            reason,
        };
        let cert = certs_from_pem(cert_pem)
            .map_err(bad_cert)?
            .into_iter()
            .next()
            .ok_or_else(|| bad_cert("empty".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| bad_cert(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(bad_cert("basic constraints do not mark it as a CA".into()));
        }
        let expected_cn = format!("strongroom cluster CA {cluster}");
        let cn_matches = parsed
            .subject()
            .iter_common_name()
            .any(|cn| cn.as_str().is_ok_and(|s| s == expected_cn));
        if !cn_matches {
            return Err(bad_cert(format!("its subject is not '{expected_cn}'")));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::BadKey {
            path: key_path.into(),
            reason: e.to_string(),
        })?;
        if key.subject_public_key_info() != parsed.public_key().raw {
            return Err(CaError::KeyMismatch {
                cert: cert_path.into(),
                key: key_path.into(),
            });
        }
        let cert = cert.into_owned();
        Ok(Self {
            cluster: cluster.clone(),
            cert,
            key,
        })
    }

    /// Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir` (dev way), never overwriting.
    pub fn write_files(&self, dir: &Path) -> Result<(), CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CaError::AlreadyExists(p.clone()));
            }
        }
        fs::write(&cert_path, self.cert_pem()).map_err(|source| CaError::Io {
            action: "write",
            path: cert_path,
            source,
        })?;
        write_secret_file(&key_path, self.key.serialize_pem().as_bytes()).map_err(|source| {
            CaError::Io {
                action: "write",
                path: key_path,
                source,
            }
        })
    }

    /// Loads the CA written by [`ClusterCa::write_files`].
    pub fn load_files(cluster: &ClusterId, dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let read = |p: &PathBuf| {
            fs::read_to_string(p).map_err(|source| CaError::Io {
                action: "read",
                path: p.clone(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        Self::from_pem(cluster, &cert_pem, &key_pem, (&cert_path, &key_path))
    }

    /// The cluster this CA signs for.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        cert_to_pem(&self.cert)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, IssueError> {
        Issuer::from_ca_cert_der(&self.cert, &self.key).map_err(IssueError::Sign)
    }

    /// Issues a certificate for `subject` in this CA's cluster over `public_key` (dev way).
    pub fn issue(
        &self,
        subject: Subject,
        public_key: &impl PublicKeyData,
        validity: Validity,
    ) -> Result<IssuedCert, IssueError> {
        self.issue_identity(
            SpiffeId {
                cluster: self.cluster.clone(),
                subject,
            },
            public_key,
            validity,
        )
    }

    /// Issues for any identity, even one of another cluster: only tests that show peers refuse
    /// such certificates need this.
    #[cfg(test)]
    pub(crate) fn dangerous_issue_for_any_cluster(
        &self,
        identity: SpiffeId,
        public_key: &impl PublicKeyData,
        validity: Validity,
    ) -> Result<IssuedCert, IssueError> {
        self.issue_identity(identity, public_key, validity)
    }

    fn issue_identity(
        &self,
        identity: SpiffeId,
        public_key: &impl PublicKeyData,
        validity: Validity,
    ) -> Result<IssuedCert, IssueError> {
        if !is_p256(public_key) {
            return Err(IssueError::UnsupportedKey);
        }
        let params = leaf_params(&identity, validity)?;
        let cert = params
            .signed_by(public_key, &self.issuer()?)
            .map_err(IssueError::Sign)?;
        Ok(IssuedCert {
            identity,
            der: cert.der().clone(),
        })
    }

    /// Signs a PEM CSR after checking it names exactly one identity of this cluster, and, if
    /// `expected` is given, that identity. Only the identity and the key are taken from the CSR.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: Option<&Subject>,
        validity: Validity,
    ) -> Result<IssuedCert, SignCsrError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(SignCsrError::Malformed)?;
        if matches!(csr.params.is_ca, IsCa::Ca(_)) {
            return Err(SignCsrError::RequestsCa);
        }
        let uri = match csr.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] => uri.as_str().to_owned(),
            sans => return Err(SignCsrError::IdentityCount { found: sans.len() }),
        };
        let found = SpiffeId::parse(&uri)?;
        if found.cluster != self.cluster {
            return Err(SignCsrError::WrongCluster {
                expected: self.cluster.clone(),
                found: found.cluster,
            });
        }
        if let Some(expected) = expected {
            if &found.subject != expected {
                return Err(SignCsrError::UnexpectedSubject {
                    expected: SpiffeId {
                        cluster: self.cluster.clone(),
                        subject: expected.clone(),
                    },
                    found,
                });
            }
        }
        Ok(self.issue(found.subject, &csr.public_key, validity)?)
    }
}

/// A software ECDSA P-256 key with its rustls signer: for client keys kept in files, tests and
/// the loopback benchmark. Node keys in production live in the node's token instead.
pub struct SoftwareKey {
    key: KeyPair,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareKey(<redacted>)")
    }
}

/// A software key could not be created or loaded (platform, or a bad key file).
#[derive(Debug, thiserror::Error)]
pub enum SoftwareKeyError {
    /// Generating or parsing the key failed.
    #[error("software key: {0}")]
    Key(#[source] rcgen::Error),
    /// The key is not ECDSA P-256.
    #[error("the key is not an ECDSA P-256 key")]
    UnsupportedKey,
    /// rustls refused the key.
    #[error("rustls cannot sign with the key: {0}")]
    Rustls(#[source] rustls::Error),
}

impl SoftwareKey {
    /// Generates a fresh P-256 key.
    pub fn generate() -> Result<Self, SoftwareKeyError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(SoftwareKeyError::Key)?;
        Ok(Self { key })
    }

    /// Loads a PKCS#8 PEM P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, SoftwareKeyError> {
        let key = KeyPair::from_pem(pem).map_err(SoftwareKeyError::Key)?;
        if !is_p256(&key) {
            return Err(SoftwareKeyError::UnsupportedKey);
        }
        Ok(Self { key })
    }

    /// PKCS#8 PEM of the private key (a secret: write it with [`write_secret_file`]).
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The rcgen view of the key (for CSRs and issuing).
    pub fn rcgen_key(&self) -> &KeyPair {
        &self.key
    }

    /// A rustls signer over this key.
    pub fn rustls_signing_key(
        &self,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, SoftwareKeyError> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        rustls::crypto::ring::sign::any_ecdsa_type(&der).map_err(SoftwareKeyError::Rustls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClientName, NodeId};

    fn cluster() -> ClusterId {
        ClusterId::new("vault").unwrap()
    }

    #[test]
    fn node_cert_carries_identity_and_usages() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(30)).unwrap();
        let key = SoftwareKey::generate().unwrap();
        let node = NodeId::new("node-1").unwrap();
        let cert = ca
            .issue(
                Subject::Node(node.clone()),
                key.rcgen_key(),
                Validity::days_from_now(1),
            )
            .unwrap();
        let id = identity_of(&cert.der).unwrap();
        assert_eq!(id, SpiffeId::node(cluster(), node));
        assert_eq!(
            public_key_of(&cert.der).unwrap(),
            key.rcgen_key().subject_public_key_info()
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der.as_ref()).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!parsed.is_ca());
    }

    #[test]
    fn client_cert_is_client_auth_only() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(30)).unwrap();
        let key = SoftwareKey::generate().unwrap();
        let cert = ca
            .issue(
                Subject::Client(ClientName::new("alice").unwrap()),
                key.rcgen_key(),
                Validity::days_from_now(1),
            )
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der.as_ref()).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(!eku.server_auth && eku.client_auth);
        assert_eq!(
            identity_of(&cert.der).unwrap().uri(),
            "spiffe://vault/client/alice"
        );
    }

    #[test]
    fn csr_round_trip_and_checks() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(30)).unwrap();
        let key = SoftwareKey::generate().unwrap();
        let node = Subject::Node(NodeId::new("node-2").unwrap());
        let id = SpiffeId {
            cluster: cluster(),
            subject: node.clone(),
        };
        let csr = create_csr(&id, key.rcgen_key()).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));

        let cert = ca
            .sign_csr(&csr, Some(&node), Validity::days_from_now(1))
            .unwrap();
        assert_eq!(identity_of(&cert.der).unwrap(), id);
        assert_eq!(
            public_key_of(&cert.der).unwrap(),
            key.rcgen_key().subject_public_key_info()
        );

        // Operator expected another node.
        let other = Subject::Node(NodeId::new("node-3").unwrap());
        assert!(matches!(
            ca.sign_csr(&csr, Some(&other), Validity::days_from_now(1)),
            Err(SignCsrError::UnexpectedSubject { .. })
        ));

        // A CSR for another cluster.
        let foreign = SpiffeId {
            cluster: ClusterId::new("other").unwrap(),
            subject: node,
        };
        let csr = create_csr(&foreign, key.rcgen_key()).unwrap();
        assert!(matches!(
            ca.sign_csr(&csr, None, Validity::days_from_now(1)),
            Err(SignCsrError::WrongCluster { .. })
        ));

        // Tampered CSR.
        assert!(matches!(
            ca.sign_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                None,
                Validity::days_from_now(1)
            ),
            Err(SignCsrError::Malformed(_))
        ));
    }

    #[test]
    fn csr_with_dns_san_is_refused() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(30)).unwrap();
        let key = SoftwareKey::generate().unwrap();
        let params = CertificateParams::new(vec!["node-1.example".to_string()]).unwrap();
        let csr = params
            .serialize_request(key.rcgen_key())
            .unwrap()
            .pem()
            .unwrap();
        assert!(matches!(
            ca.sign_csr(&csr, None, Validity::days_from_now(1)),
            Err(SignCsrError::IdentityCount { .. }) | Err(SignCsrError::BadIdentity(_))
        ));
    }

    #[test]
    fn ca_files_round_trip_with_private_key_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(30)).unwrap();
        ca.write_files(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            ca.write_files(dir.path()),
            Err(CaError::AlreadyExists(_))
        ));
        let loaded = ClusterCa::load_files(&cluster(), dir.path()).unwrap();
        assert_eq!(loaded.cert_der(), ca.cert_der());
        assert!(matches!(
            ClusterCa::load_files(&ClusterId::new("other").unwrap(), dir.path()),
            Err(CaError::BadCertificate { .. })
        ));
    }

    #[test]
    fn pem_encoding_parses_back() {
        let ca = ClusterCa::generate(&cluster(), Validity::days_from_now(30)).unwrap();
        let pem = ca.cert_pem();
        assert_eq!(certs_from_pem(&pem).unwrap(), vec![ca.cert_der().clone()]);
    }

    #[test]
    fn empty_validity_refused() {
        let now = SystemTime::now();
        let v = Validity {
            not_before: now,
            not_after: now,
        };
        assert!(matches!(
            ClusterCa::generate(&cluster(), v),
            Err(CaError::Validity(ValidityError::Empty))
        ));
    }
}
