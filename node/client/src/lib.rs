//! HTTPS client for the node API.
//!
//! # Contract
//!
//! - **Who the client is.** A client certificate of the cluster CA
//!   (`spiffe://<cluster>/client/<name>`) and its key, both PEM files;
//!   [`ApiClient::new`] refuses a certificate that names a node, that the cluster CA did not
//!   issue, that is not valid now, or a key that is not the certificate's, naming the file.
//! - **Who the server must be.** A node of the cluster: its certificate chains to the cluster
//!   CA (the only trust anchor; signatures checked with ring), is valid now, allows TLS server
//!   authentication and names `spiffe://<cluster>/node/<id>`. The address it is reached at is
//!   not checked against the certificate (node certificates need carry no DNS or IP name);
//!   the node id it names is reported with every answer ([`ApiResponse::node`]). A refused
//!   server is a [`ClientError::UntrustedServer`].
//! - **Transport.** TLS 1.3 (rustls with ring), HTTP/1.1, one connection per request, no
//!   session resumption. Connect, handshake, request and the whole answer are bounded by the
//!   configured timeout, per node.
//! - **Failover.** [`ApiClient::get`] and [`ApiClient::post`] try the URLs in order and return
//!   the first HTTP answer, whatever its status; a POST that may have reached a node is never
//!   sent to another. The `_at` variants talk to one node only.
//! - **Bodies.** JSON calls send `content-type: application/json` and
//!   `accept: application/json`; an empty answer is `Null`, a non-JSON one an error naming its
//!   content type. Errors of the API are RFC 9457 problem documents:
//!   [`ApiResponse::problem`] and [`ApiResponse::into_result`] read their kind and detail.
//!
//! ```no_run
//! # async fn run() -> Result<(), strongroom_client::ClientError> {
//! use strongroom_client::{ApiClient, ClientConfig};
//! let client = ApiClient::new(ClientConfig::from_env()?)?;
//! let health = client.get("/v1/health").await?;
//! tracing::info!(node = %health.node, status = health.status, "health");
//! let created = client
//!     .post("/v1/keys", &serde_json::json!({"name": "treasury"}))
//!     .await?
//!     .into_result()?;
//! # let _ = created; Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod response;
mod verify;

pub use client::{ApiClient, MAX_RESPONSE_BYTES};
pub use config::{
    ClientConfig, DEFAULT_TIMEOUT, ENV_API_URLS, ENV_CA_CERT, ENV_CLIENT_CERT, ENV_CLIENT_KEY,
};
pub use error::ClientError;
pub use response::{ApiResponse, HTTP_ERROR_KIND, PROBLEM_TYPE_BASE};
