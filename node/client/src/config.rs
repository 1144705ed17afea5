//! What the client needs to know: the node URLs, the cluster CA, its own identity.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ClientError;

/// Comma-separated node API URLs, tried in order.
pub const ENV_API_URLS: &str = "STRONGROOM_API_URLS";
/// Path of the cluster CA certificate (PEM).
pub const ENV_CA_CERT: &str = "STRONGROOM_CA_CERT";
/// Path of the client certificate chain (PEM).
pub const ENV_CLIENT_CERT: &str = "STRONGROOM_CLIENT_CERT";
/// Path of the client private key (PEM).
pub const ENV_CLIENT_KEY: &str = "STRONGROOM_CLIENT_KEY";

/// Default time one request to one node may take, connection and handshake included.
///
/// Longer than the server's default request timeout (30 s), so that a slow handler's 503
/// `timeout` problem reaches the client instead of the client giving up first.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);

/// Where the nodes are and who this client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Node API URLs (`https://host:port`, optionally with a base path), tried in order.
    pub urls: Vec<String>,
    /// The cluster CA certificate(s), PEM: the only trust anchors for node certificates.
    pub ca_cert: PathBuf,
    /// The client certificate chain, PEM, leaf first.
    pub client_cert: PathBuf,
    /// The client private key, PEM (PKCS#8, as `strongroom cluster init` writes it).
    pub client_key: PathBuf,
    /// The cluster the nodes must belong to; `None` takes it from the client certificate's
    /// identity. When given, it must match the client certificate's.
    pub cluster_id: Option<String>,
    /// Time one request to one node may take: TCP connect, TLS handshake, request and the
    /// whole response body. With failover, each node gets its own timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    /// From `STRONGROOM_API_URLS` (comma-separated), `STRONGROOM_CA_CERT`,
    /// `STRONGROOM_CLIENT_CERT` and `STRONGROOM_CLIENT_KEY`; the cluster id comes from the
    /// client certificate and the timeout is [`DEFAULT_TIMEOUT`].
    ///
    /// A variable that is not set (or empty) is a [`ClientError::MissingEnv`] naming it and
    /// saying to `source .dev/cluster.env` or pass the flags.
    pub fn from_env() -> Result<Self, ClientError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ClientConfig::from_env`] over any source of variables.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientError> {
        let get = |var: &'static str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(ClientError::MissingEnv { var })
        };
        let urls: Vec<String> = get(ENV_API_URLS)?
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(ClientError::MissingEnv { var: ENV_API_URLS });
        }
        Ok(Self {
            urls,
            ca_cert: get(ENV_CA_CERT)?.into(),
            client_cert: get(ENV_CLIENT_CERT)?.into(),
            client_key: get(ENV_CLIENT_KEY)?.into(),
            cluster_id: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_every_variable() {
        let config = ClientConfig::from_lookup(lookup(&[
            (ENV_API_URLS, " https://a:1 , https://b:2,, "),
            (ENV_CA_CERT, "/ca.pem"),
            (ENV_CLIENT_CERT, "/alice.pem"),
            (ENV_CLIENT_KEY, "/alice-key.pem"),
        ]))
        .unwrap();
        assert_eq!(config.urls, ["https://a:1", "https://b:2"]);
        assert_eq!(config.ca_cert, PathBuf::from("/ca.pem"));
        assert_eq!(config.client_cert, PathBuf::from("/alice.pem"));
        assert_eq!(config.client_key, PathBuf::from("/alice-key.pem"));
        assert_eq!(config.cluster_id, None);
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn names_the_first_missing_or_empty_variable() {
        let all = [
            (ENV_API_URLS, "https://a:1"),
            (ENV_CA_CERT, "/ca.pem"),
            (ENV_CLIENT_CERT, "/alice.pem"),
            (ENV_CLIENT_KEY, "/alice-key.pem"),
        ];
        for skip in 0..all.len() {
            let vars: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, kv)| *kv)
                .collect();
            let err = ClientConfig::from_lookup(lookup(&vars)).unwrap_err();
            assert!(
                matches!(err, ClientError::MissingEnv { var } if var == all[skip].0),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains(all[skip].0), "{text}");
            assert!(text.contains("source .dev/cluster.env"), "{text}");
        }
        let mut vars = all;
        vars[0].1 = " , ";
        assert!(matches!(
            ClientConfig::from_lookup(lookup(&vars)),
            Err(ClientError::MissingEnv { var: ENV_API_URLS })
        ));
        vars[0].1 = "https://a:1";
        vars[2].1 = "  ";
        assert!(matches!(
            ClientConfig::from_lookup(lookup(&vars)),
            Err(ClientError::MissingEnv {
                var: ENV_CLIENT_CERT
            })
        ));
    }
}
