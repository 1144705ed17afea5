//! Everything that can go wrong between a configuration and an answer from a node.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong; each variant says who is at fault and, where it can, how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An environment variable [`ClientConfig::from_env`](crate::ClientConfig::from_env)
    /// needs is not set, or is empty (operator).
    #[error(
        "environment variable {var} is not set: `source .dev/cluster.env` or pass the flags \
         (API URLs, CA certificate, client certificate and key)"
    )]
    MissingEnv {
        /// The variable's name.
        var: &'static str,
    },
    /// The configuration is unusable for a reason other than a file (operator): no URL, an
    /// invalid cluster id.
    #[error("invalid API client configuration: {0}")]
    Config(String),
    /// A URL (or a request path) cannot be used (operator, or the calling code for a path).
    #[error("invalid API URL '{url}': {detail}")]
    BadUrl {
        /// The URL or request path as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A node index beyond the configured URLs (calling code).
    #[error("node index {index} is out of range: {count} API URL(s) are configured")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many URLs there are.
        count: usize,
    },
    /// A file cannot be read (operator: check the path and permissions).
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should: no PEM block, a certificate without a client
    /// identity, a certificate the cluster CA did not issue, a key that does not belong to the
    /// certificate (operator: wrong or mixed-up file).
    #[error("{path}: {detail}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The TLS configuration cannot be built (a fault of this crate or of the platform).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// No connection could be made: with failover, to none of the URLs (`url` lists them all
    /// and `detail` gives each one's reason). The network, a node that is down, or a node
    /// whose certificate was refused.
    #[error("cannot reach {url}: {detail}")]
    Connect {
        /// The URL, or every URL tried, comma-separated.
        url: String,
        /// Why, per URL when several were tried.
        detail: String,
    },
    /// The server answered the handshake with a certificate this client does not trust: not
    /// issued by the cluster CA, expired, another cluster's, or not a node's. Either the URL
    /// points at something that is not a node of this cluster, or the node's certificate is
    /// wrong.
    #[error("{url}: server certificate refused: {detail}")]
    UntrustedServer {
        /// The node URL.
        url: String,
        /// Why the certificate was refused.
        detail: String,
    },
    /// The exchange did not complete within the configured timeout.
    #[error("{url}: no complete answer within {after:?}")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The HTTP exchange failed after the connection was made (connection reset, malformed
    /// response, the server refused the client certificate).
    #[error("{url}: HTTP exchange failed: {detail}")]
    Http {
        /// The request URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The answer's body is not what the call expects: not JSON, not UTF-8, too large.
    #[error("{url}: unusable response body: {detail}")]
    BadBody {
        /// The request URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The node answered with an error status (from [`ApiResponse::into_result`](crate::ApiResponse::into_result)).
    #[error("node {node} answered {status} ({kind}): {detail}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The problem kind (the last segment of the problem `type`), or `http-error` when
        /// the body is not a problem document.
        kind: String,
        /// The problem's `detail` (or its `title`, or the body).
        detail: String,
        /// The node that answered.
        node: String,
    },
}
