//! Who is calling: the client identity from the verified certificate, and its roles.
//!
//! The TLS layer has already checked that a presented certificate chains to the cluster CA
//! and is valid for client authentication. What it names is decided here, from its single URI
//! subject alternative name: `spiffe://<cluster-id>/client/<name>` is a client; a node
//! certificate (`.../node/<id>`), another cluster's certificate, or one without a readable
//! identity is refused. Roles come only from the node's configuration, never from the
//! certificate.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::problem::ApiError;

/// URI scheme of every identity the cluster CA issues.
const SCHEME: &str = "spiffe://";

/// A role a client can be granted in the node configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits sign requests and reads its own.
    Submitter,
    /// Approves sign requests.
    Approver,
    /// Administers keys and the cluster.
    Admin,
    /// Reads everything, exports the audit log and reads metrics.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Submitter, Role::Approver, Role::Admin, Role::Auditor];

    /// The role's name as it appears in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`: how a message names alternatives.
    pub(crate) fn list(roles: &[Role]) -> String {
        let quoted: Vec<String> = roles.iter().map(|r| format!("'{r}'")).collect();
        match quoted.split_last() {
            None => "(none)".into(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `submitter`, `approver`, `admin`, `auditor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role '{0}': expected submitter, approver, admin or auditor")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The roles of each client, from the node configuration. A client that is not listed has no
/// role: it can authenticate but only call what needs no role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientRoles(HashMap<String, BTreeSet<Role>>);

impl ClientRoles {
    /// No client has any role.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `roles` to `client` (in addition to any it already has).
    #[must_use]
    pub fn grant(
        mut self,
        client: impl Into<String>,
        roles: impl IntoIterator<Item = Role>,
    ) -> Self {
        self.0.entry(client.into()).or_default().extend(roles);
        self
    }

    /// The roles of `client` (empty if it is not configured).
    pub fn roles_of(&self, client: &str) -> BTreeSet<Role> {
        self.0.get(client).cloned().unwrap_or_default()
    }
}

impl FromIterator<(String, BTreeSet<Role>)> for ClientRoles {
    fn from_iter<I: IntoIterator<Item = (String, BTreeSet<Role>)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// An authenticated client of this cluster and its configured roles.
///
/// Use it as an extractor in a handler; it is only ever built from a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    name: String,
    roles: BTreeSet<Role>,
}

impl Caller {
    /// Only the server builds callers, from a verified certificate.
    pub(crate) fn new(name: String, roles: BTreeSet<Role>) -> Self {
        Self { name, roles }
    }

    /// The client's name (`<name>` in `spiffe://<cluster-id>/client/<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client's roles.
    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }

    /// Whether the client has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// `Ok` if the client has at least one of `roles`, otherwise the 403 naming them.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has(*r)) {
            Ok(())
        } else {
            Err(ApiError::MissingRole {
                client: self.name.clone(),
                needed: roles.to_vec(),
            })
        }
    }

    /// `Ok` if the client has `role`, otherwise the 403 naming it.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        self.require_any(&[role])
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // The server's access layer inserts the caller for every request that authenticated;
        // only a route open to anonymous callers can get here without one.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        match parts.extensions.get::<Connection>().map(|c| &*c.identity) {
            Some(PeerIdentity::Refused(reason)) => Err(reason.to_api_error()),
            _ => Err(ApiError::Unauthenticated {
                detail: NO_CERTIFICATE_DETAIL.into(),
            }),
        }
    }
}

pub(crate) const NO_CERTIFICATE_DETAIL: &str = "this call needs a client certificate issued by \
     the cluster CA (spiffe://<cluster-id>/client/<name>); configure the client with its \
     certificate and key";

/// What a TLS connection's certificate says about its peer; decided once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerIdentity {
    /// No certificate.
    Anonymous,
    /// A client of this cluster.
    Client(String),
    /// A certificate that chains to the CA but does not name a client of this cluster.
    Refused(AuthFailureReason),
}

/// Per-connection facts, attached to every request on it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// Its identity.
    pub(crate) identity: Arc<PeerIdentity>,
}

impl Connection {
    /// The key the rate limiter and in-flight counters use: the client name, or the address
    /// for a peer without a usable identity (client names never contain `@`).
    pub(crate) fn limit_key(&self) -> String {
        match &*self.identity {
            PeerIdentity::Client(name) => name.clone(),
            PeerIdentity::Anonymous | PeerIdentity::Refused(_) => {
                format!("anonymous@{}", self.peer.ip())
            }
        }
    }
}

/// Reads the identity out of the leaf certificate of a verified chain.
pub(crate) fn identify(certs: Option<&[CertificateDer<'_>]>, cluster_id: &str) -> PeerIdentity {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return PeerIdentity::Anonymous;
    };
    match spiffe_uri(leaf).and_then(|uri| classify(&uri, cluster_id)) {
        Ok(name) => PeerIdentity::Client(name),
        Err(reason) => PeerIdentity::Refused(reason),
    }
}

/// The single URI SAN of a certificate.
fn spiffe_uri(cert: &CertificateDer<'_>) -> Result<String, AuthFailureReason> {
    let (_, cert) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| AuthFailureReason::BadIdentity {
            detail: format!("unparsable: {e}"),
        })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| AuthFailureReason::BadIdentity {
            detail: format!("bad SAN extension: {e}"),
        })?
        .ok_or(AuthFailureReason::NoIdentity)?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => Ok(uri.to_owned()),
        (None, _) => Err(AuthFailureReason::NoIdentity),
        (Some(_), Some(_)) => Err(AuthFailureReason::BadIdentity {
            detail: "more than one URI subject alternative name".into(),
        }),
    }
}

/// Checks `spiffe://<cluster-id>/client/<name>` and returns `<name>`.
fn classify(uri: &str, cluster_id: &str) -> Result<String, AuthFailureReason> {
    let bad = |why: &str| AuthFailureReason::BadIdentity {
        detail: format!("'{uri}': {why}"),
    };
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad("not a spiffe:// URI"))?;
    let mut parts = rest.split('/');
    let (Some(cluster), Some(kind), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected spiffe://<cluster-id>/client/<name>"));
    };
    if !is_label(cluster) || !is_label(name) {
        return Err(bad("identifiers must be DNS labels (a-z, 0-9, '-')"));
    }
    if cluster != cluster_id {
        return Err(AuthFailureReason::WrongCluster {
            found: cluster.to_owned(),
            expected: cluster_id.to_owned(),
        });
    }
    match kind {
        "client" => Ok(name.to_owned()),
        "node" => Err(AuthFailureReason::NodeCertificate {
            node: name.to_owned(),
        }),
        _ => Err(bad("expected .../client/<name>")),
    }
}

/// The identifier rules of the cluster PKI: a DNS label in lowercase.
pub(crate) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Why a client was refused; reported through the server's failure hook and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailureReason {
    /// The client presented no certificate.
    #[error("no client certificate presented")]
    NoCertificate,
    /// The TLS handshake rejected the certificate (unknown CA, expired, wrong key usage).
    #[error("client certificate rejected during the TLS handshake: {detail}")]
    HandshakeRejected {
        /// The TLS library's reason.
        detail: String,
    },
    /// The certificate belongs to another cluster.
    #[error("certificate of cluster '{found}' presented to cluster '{expected}'")]
    WrongCluster {
        /// The cluster the certificate names.
        found: String,
        /// This node's cluster.
        expected: String,
    },
    /// A node certificate was used as a client certificate.
    #[error("node certificate of '{node}' used as a client certificate")]
    NodeCertificate {
        /// The node it names.
        node: String,
    },
    /// The certificate has no URI subject alternative name.
    #[error("certificate carries no spiffe:// identity")]
    NoIdentity,
    /// The certificate's identity cannot be read.
    #[error("certificate identity is malformed: {detail}")]
    BadIdentity {
        /// What is wrong with it.
        detail: String,
    },
    /// The client authenticated but lacks the role the call needs.
    #[error(
        "client '{client}' lacks the role {} for {method} {path}",
        Role::list(needed)
    )]
    MissingRole {
        /// The client.
        client: String,
        /// Roles any one of which would have allowed the call.
        needed: Vec<Role>,
        /// The request method.
        method: String,
        /// The route.
        path: String,
    },
}

impl AuthFailureReason {
    /// The problem the client gets for this reason.
    pub(crate) fn to_api_error(&self) -> ApiError {
        match self {
            Self::NoCertificate | Self::HandshakeRejected { .. } => ApiError::Unauthenticated {
                detail: NO_CERTIFICATE_DETAIL.into(),
            },
            Self::WrongCluster { found, expected } => ApiError::ForbiddenIdentity {
                detail: format!(
                    "the certificate names cluster '{found}', this node serves cluster \
                     '{expected}': use a client certificate from this cluster's CA"
                ),
            },
            Self::NodeCertificate { node } => ApiError::ForbiddenIdentity {
                detail: format!(
                    "a node certificate ('{node}') cannot call the API: use a client \
                     certificate (spiffe://<cluster-id>/client/<name>)"
                ),
            },
            Self::NoIdentity | Self::BadIdentity { .. } => ApiError::ForbiddenIdentity {
                detail: format!(
                    "{self}; client certificates must carry exactly one URI SAN \
                     spiffe://<cluster-id>/client/<name>"
                ),
            },
            Self::MissingRole { client, needed, .. } => ApiError::MissingRole {
                client: client.clone(),
                needed: needed.clone(),
            },
        }
    }
}

/// A refused client, as reported to the failure hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The request path, when the failure happened on a request rather than the handshake.
    pub path: Option<String>,
    /// Why.
    pub reason: AuthFailureReason,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} on {path}: {}", self.peer, self.reason),
            None => write!(f, "{}: {}", self.peer, self.reason),
        }
    }
}

/// Receives every refused client (the audit log records them).
pub type AuthFailureHook = Arc<dyn Fn(&AuthFailure) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_of_this_cluster() {
        assert_eq!(classify("spiffe://c1/client/ops", "c1"), Ok("ops".into()));
    }

    #[test]
    fn other_cluster_node_and_garbage_are_refused() {
        assert!(matches!(
            classify("spiffe://c2/client/ops", "c1"),
            Err(AuthFailureReason::WrongCluster { .. })
        ));
        assert!(matches!(
            classify("spiffe://c1/node/n1", "c1"),
            Err(AuthFailureReason::NodeCertificate { .. })
        ));
        for uri in [
            "https://c1/client/ops",
            "spiffe://c1/client/ops/x",
            "spiffe://c1/client",
            "spiffe://c1/client/OPS",
            "spiffe://c1/client/",
            "spiffe://c1/admin/ops",
            "spiffe://c1/client/op%2fs",
        ] {
            assert!(
                matches!(
                    classify(uri, "c1"),
                    Err(AuthFailureReason::BadIdentity { .. })
                ),
                "{uri}"
            );
        }
    }

    #[test]
    fn roles_parse_and_list() {
        assert_eq!("auditor".parse::<Role>(), Ok(Role::Auditor));
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Role::list(&[Role::Admin]), "'admin'");
        assert_eq!(
            Role::list(&[Role::Admin, Role::Auditor]),
            "'admin' or 'auditor'"
        );
        assert_eq!(
            Role::list(&[Role::Submitter, Role::Admin, Role::Auditor]),
            "'submitter', 'admin' or 'auditor'"
        );
    }

    #[test]
    fn unlisted_client_has_no_roles() {
        let roles = ClientRoles::new().grant("ops", [Role::Admin]);
        assert!(roles.roles_of("ops").contains(&Role::Admin));
        assert!(roles.roles_of("stranger").is_empty());
    }
}
