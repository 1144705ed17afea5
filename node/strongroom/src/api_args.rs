//! Command-line and environment settings that reach the node API (`strongroom keys ...`,
//! `strongroom sign ...`, `strongroom approve`).
//!
//! Each setting comes from its flag or, without the flag, from the environment variable
//! `.dev/cluster.env` sets (the variables `strongroom_client::ClientConfig::from_env` reads).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use strongroom_client::{
    ApiClient, ClientConfig, ClientError, DEFAULT_TIMEOUT, ENV_API_URLS, ENV_CA_CERT,
    ENV_CLIENT_CERT, ENV_CLIENT_KEY,
};

/// Where the cluster's API is and who this client is.
#[derive(Debug, Default, Args)]
pub(crate) struct ApiArgs {
    /// Node API URLs, comma-separated, tried in order [default: $STRONGROOM_API_URLS].
    #[arg(long, global = true, value_delimiter = ',', value_name = "URLS")]
    api_urls: Vec<String>,
    /// The cluster CA certificate, PEM [default: $STRONGROOM_CA_CERT].
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// This client's certificate, PEM [default: $STRONGROOM_CLIENT_CERT].
    #[arg(long, global = true, value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// This client's private key, PEM [default: $STRONGROOM_CLIENT_KEY].
    #[arg(long, global = true, value_name = "FILE")]
    client_key: Option<PathBuf>,
}

impl ApiArgs {
    /// The client configuration: each flag, or else its environment variable.
    pub(crate) fn config(&self) -> anyhow::Result<ClientConfig> {
        self.config_with(|name| std::env::var(name).ok())
    }

    /// The client configuration: each flag, or else the variable `env` gives for it.
    pub(crate) fn config_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ClientConfig> {
        let env = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let urls: Vec<String> = if self.api_urls.is_empty() {
            env(ENV_API_URLS)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.api_urls
                .iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect()
        };
        let file = |flag: &Option<PathBuf>, var: &str| {
            flag.clone().or_else(|| env(var).map(PathBuf::from))
        };
        let ca_cert = file(&self.ca_cert, ENV_CA_CERT);
        let client_cert = file(&self.client_cert, ENV_CLIENT_CERT);
        let client_key = file(&self.client_key, ENV_CLIENT_KEY);

        let mut missing = Vec::new();
        if urls.is_empty() {
            missing.push(format!("--api-urls ({ENV_API_URLS})"));
        }
        for (value, flag, var) in [
            (&ca_cert, "--ca-cert", ENV_CA_CERT),
            (&client_cert, "--client-cert", ENV_CLIENT_CERT),
            (&client_key, "--client-key", ENV_CLIENT_KEY),
        ] {
            if value.is_none() {
                missing.push(format!("{flag} ({var})"));
            }
        }
        match (ca_cert, client_cert, client_key) {
            (Some(ca_cert), Some(client_cert), Some(client_key)) if missing.is_empty() => {
                Ok(ClientConfig {
                    urls,
                    ca_cert,
                    client_cert,
                    client_key,
                    cluster_id: None,
                    timeout: DEFAULT_TIMEOUT,
                })
            }
            _ => {
                let here = if Path::new(".dev/cluster.env").is_file() {
                    " (.dev/cluster.env exists here: `source .dev/cluster.env`)"
                } else {
                    ""
                };
                bail!(
                    "no cluster to talk to: {} not given. For the local dev cluster run \
                     `strongroom dev up` and `source .dev/cluster.env`{here}; for another \
                     cluster pass --api-urls, --ca-cert, --client-cert and --client-key (or set \
                     {ENV_API_URLS}, {ENV_CA_CERT}, {ENV_CLIENT_CERT}, {ENV_CLIENT_KEY})",
                    missing.join(", ")
                )
            }
        }
    }

    /// A client of the cluster (certificates loaded and checked; nothing sent yet).
    pub(crate) fn client(&self) -> anyhow::Result<ApiClient> {
        let config = self.config()?;
        ApiClient::new(config)
            .map_err(|e| anyhow::Error::new(e).context("cannot set up the API client"))
    }
}

/// An API error with the fix a person needs (the cluster down, an unknown key).
pub(crate) fn explain(e: ClientError) -> anyhow::Error {
    let hint = match &e {
        ClientError::Connect { .. } => Some(
            "is the cluster up? For the local dev cluster: `strongroom dev status`, \
             `strongroom dev up`",
        ),
        ClientError::Api {
            status: 403, kind, ..
        } if kind == "missing-role" => {
            Some("this client lacks the role the request needs (see [api.clients] of the nodes)")
        }
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{e} ({hint})"),
        None => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn args(urls: &[&str], ca: Option<&str>) -> ApiArgs {
        ApiArgs {
            api_urls: urls.iter().map(|&u| u.to_owned()).collect(),
            ca_cert: ca.map(PathBuf::from),
            client_cert: None,
            client_key: None,
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flags_win_over_the_environment() {
        let vars = [
            (ENV_API_URLS, "https://a:1, https://b:2"),
            (ENV_CA_CERT, "/env/ca.pem"),
            (ENV_CLIENT_CERT, "/env/dev.pem"),
            (ENV_CLIENT_KEY, "/env/dev-key.pem"),
        ];
        let c = args(&[], None).config_with(env(&vars)).unwrap();
        assert_eq!(c.urls, ["https://a:1", "https://b:2"]);
        assert_eq!(c.ca_cert, PathBuf::from("/env/ca.pem"));
        let c = args(&["https://c:3"], Some("/flag/ca.pem"))
            .config_with(env(&vars))
            .unwrap();
        assert_eq!(c.urls, ["https://c:3"]);
        assert_eq!(c.ca_cert, PathBuf::from("/flag/ca.pem"));
        assert_eq!(c.client_key, PathBuf::from("/env/dev-key.pem"));
    }

    #[test]
    fn missing_settings_name_the_fix() {
        let err = args(&[], None)
            .config_with(env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("strongroom dev up"), "{err}");
        assert!(err.contains("source .dev/cluster.env"), "{err}");
        assert!(err.contains("--api-urls (STRONGROOM_API_URLS)"), "{err}");
        assert!(
            err.contains("--client-key (STRONGROOM_CLIENT_KEY)"),
            "{err}"
        );
    }
}
