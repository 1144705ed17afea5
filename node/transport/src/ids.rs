//! Cluster, node and client identifiers, and the SPIFFE URI that binds them into certificates.
//!
//! Every identifier follows the rules of a DNS label: 1 to 63 characters, lowercase ASCII
//! letters, digits and `-`, starting and ending with a letter or digit. A node id is also the
//! TLS server name a peer dials, so it must be a valid DNS name; the same rules for the cluster
//! id and client names keep the URI unambiguous (no `/`, no `%`, no upper case).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Maximum length of any identifier, in bytes (the DNS label limit).
pub const MAX_ID_LEN: usize = 63;

/// URI scheme of every identity in a certificate.
const SCHEME: &str = "spiffe://";

/// An identifier that breaks the naming rules; the caller supplied it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of identifier.
        kind: &'static str,
    },
    /// The identifier is longer than [`MAX_ID_LEN`].
    #[error("{kind} '{value}' is {len} characters long, at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Which kind of identifier.
        kind: &'static str,
        /// The offending value.
        value: String,
        /// Its length.
        len: usize,
    },
    /// The identifier contains a character outside `a-z`, `0-9` and `-`.
    #[error("{kind} '{value}' contains {ch:?}: use only lowercase letters, digits and '-'")]
    BadCharacter {
        /// Which kind of identifier.
        kind: &'static str,
        /// The offending value.
        value: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// The identifier starts or ends with `-`.
    #[error("{kind} '{value}' must start and end with a letter or digit")]
    BadEdge {
        /// Which kind of identifier.
        kind: &'static str,
        /// The offending value.
        value: String,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
            len: value.len(),
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_owned(),
            ch,
        });
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(IdError::BadEdge {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the naming rules.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

identifier!(
    /// The name of a cluster: every certificate its CA issues carries it.
    ClusterId,
    "cluster id"
);
identifier!(
    /// The name of a node within its cluster; also the TLS server name peers dial it by.
    NodeId,
    "node id"
);
identifier!(
    /// The name of an API client within its cluster.
    ClientName,
    "client name"
);

/// What a certificate's holder is: a cluster node or an API client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A node of the cluster (may join the node-to-node transport).
    Node(NodeId),
    /// An API client (may only call the HTTPS API).
    Client(ClientName),
}

impl Subject {
    /// The role part of the URI path.
    pub fn role(&self) -> Role {
        match self {
            Subject::Node(_) => Role::Node,
            Subject::Client(_) => Role::Client,
        }
    }

    /// The name part of the URI path.
    pub fn name(&self) -> &str {
        match self {
            Subject::Node(n) => n.as_str(),
            Subject::Client(c) => c.as_str(),
        }
    }
}

/// The role named in an identity URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `.../node/<node-id>`
    Node,
    /// `.../client/<name>`
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Client => "client",
        })
    }
}

/// A full identity: `spiffe://<cluster-id>/node/<node-id>` or `spiffe://<cluster-id>/client/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The cluster that issued the identity.
    pub cluster: ClusterId,
    /// Who holds it.
    pub subject: Subject,
}

/// A URI that is not a strongroom identity; whoever produced the URI is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The URI does not start with `spiffe://`.
    #[error("'{uri}' is not a spiffe:// URI")]
    NotSpiffe {
        /// The offending URI.
        uri: String,
    },
    /// The URI path is not `<cluster>/<role>/<name>`.
    #[error("'{uri}' is not of the form spiffe://<cluster-id>/(node|client)/<name>")]
    BadShape {
        /// The offending URI.
        uri: String,
    },
    /// The role is neither `node` nor `client`.
    #[error("'{uri}' names role '{role}', expected 'node' or 'client'")]
    UnknownRole {
        /// The offending URI.
        uri: String,
        /// The role found.
        role: String,
    },
    /// A component breaks the naming rules.
    #[error("'{uri}': {source}")]
    BadComponent {
        /// The offending URI.
        uri: String,
        /// What is wrong with the component.
        source: IdError,
    },
}

impl SpiffeId {
    /// A node identity.
    pub fn node(cluster: ClusterId, node: NodeId) -> Self {
        Self {
            cluster,
            subject: Subject::Node(node),
        }
    }

    /// A client identity.
    pub fn client(cluster: ClusterId, name: ClientName) -> Self {
        Self {
            cluster,
            subject: Subject::Client(name),
        }
    }

    /// The URI form that goes into the certificate's subject alternative name.
    pub fn uri(&self) -> String {
        format!(
            "{SCHEME}{}/{}/{}",
            self.cluster,
            self.subject.role(),
            self.subject.name()
        )
    }

    /// Parses the URI form.
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::NotSpiffe { uri: uri.into() })?;
        let mut parts = rest.split('/');
        let (Some(cluster), Some(role), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SpiffeIdError::BadShape { uri: uri.into() });
        };
        let bad = |source| SpiffeIdError::BadComponent {
            uri: uri.into(),
            source,
        };
        let cluster = ClusterId::new(cluster).map_err(bad)?;
        let subject = match role {
            "node" => Subject::Node(NodeId::new(name).map_err(bad)?),
            "client" => Subject::Client(ClientName::new(name).map_err(bad)?),
            other => {
                return Err(SpiffeIdError::UnknownRole {
                    uri: uri.into(),
                    role: other.into(),
                });
            }
        };
        Ok(Self { cluster, subject })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_dns_label_rules() {
        assert!(NodeId::new("node-1").is_ok());
        assert!(NodeId::new("a").is_ok());
        assert!(NodeId::new("x".repeat(63)).is_ok());
        assert!(matches!(NodeId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(
            NodeId::new("x".repeat(64)),
            Err(IdError::TooLong { len: 64, .. })
        ));
        assert!(matches!(
            NodeId::new("Node-1"),
            Err(IdError::BadCharacter { ch: 'N', .. })
        ));
        assert!(matches!(
            NodeId::new("node/1"),
            Err(IdError::BadCharacter { ch: '/', .. })
        ));
        assert!(matches!(
            NodeId::new("node_1"),
            Err(IdError::BadCharacter { ch: '_', .. })
        ));
        assert!(matches!(NodeId::new("-node"), Err(IdError::BadEdge { .. })));
        assert!(matches!(NodeId::new("node-"), Err(IdError::BadEdge { .. })));
        assert!(ClusterId::new("prod-eu").is_ok());
    }

    #[test]
    fn spiffe_round_trip() {
        let c = ClusterId::new("vault").unwrap();
        let n = SpiffeId::node(c.clone(), NodeId::new("node-2").unwrap());
        assert_eq!(n.uri(), "spiffe://vault/node/node-2");
        assert_eq!(SpiffeId::parse(&n.uri()).unwrap(), n);
        let a = SpiffeId::client(c, ClientName::new("alice").unwrap());
        assert_eq!(a.uri(), "spiffe://vault/client/alice");
        assert_eq!(SpiffeId::parse(&a.uri()).unwrap(), a);
    }

    #[test]
    fn spiffe_rejects_malformed() {
        for bad in [
            "https://vault/node/n1",
            "spiffe://vault/node",
            "spiffe://vault/node/n1/extra",
            "spiffe://vault/admin/n1",
            "spiffe://Vault/node/n1",
            "spiffe://vault/node/",
            "spiffe:///node/n1",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: NodeId = serde_json::from_str("\"node-3\"").unwrap();
        assert_eq!(ok.as_str(), "node-3");
        assert!(serde_json::from_str::<NodeId>("\"Node 3\"").is_err());
    }
}
