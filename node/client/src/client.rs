//! The client: one HTTP/1.1 connection per request, over mTLS, to one node or the first that
//! answers.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::client::{ClientConfig as TlsConfig, Resumption};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;
use strongroom_transport::pki::{certs_from_pem, identity_of};
use strongroom_transport::{ClientName, ClusterId, Subject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, warn};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::response::ApiResponse;
use crate::verify::{NodeVerifier, describe_refusal};

/// Largest response body read, in bytes; a larger one is a [`ClientError::BadBody`].
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// `user-agent` of every request.
const USER_AGENT: &str = concat!("strongroom-client/", env!("CARGO_PKG_VERSION"));

/// An HTTPS client of the node API, authenticated by a client certificate of the cluster CA.
///
/// A connection (TCP, TLS 1.3, HTTP/1.1) is opened when no idle one to that node is at hand;
/// each new connection checks that the server is a node of the cluster (its certificate chains
/// to the cluster CA, is valid now and names a node of this cluster; host names are not
/// checked, node certificates need carry none). A request and its whole answer complete within
/// the configured timeout; after a complete answer the connection is kept for the next request
/// to the same node (at most [`IDLE_PER_NODE`] per node). TLS sessions are not resumed, so every
/// new connection verifies the node's certificate afresh.
///
/// Cloning is cheap; clones share the configuration.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Vec<String>,
    nodes: Vec<NodeUrl>,
    connector: TlsConnector,
    cluster: ClusterId,
    client: ClientName,
    timeout: Duration,
    /// Idle connections by node authority, with the node id their certificate names.
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<Idle>>>,
}

/// Idle connections kept per node.
pub(crate) const IDLE_PER_NODE: usize = 8;

/// An open connection waiting for its next request.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    node: String,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("urls", &self.inner.urls)
            .field("cluster", &self.inner.cluster)
            .field("client", &self.inner.client)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// One configured node URL, taken apart.
#[derive(Debug, Clone)]
struct NodeUrl {
    /// As configured.
    configured: String,
    /// `host` or `[v6]`, with `:port` if given: the `host` header.
    authority: String,
    /// Host name or address, without brackets: what to connect to.
    host: String,
    port: u16,
    /// Path prefix without a trailing `/` (usually empty).
    base_path: String,
    /// Sent as SNI for a host name; never checked against the certificate.
    server_name: ServerName<'static>,
}

impl NodeUrl {
    fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |detail: &str| ClientError::BadUrl {
            url: url.to_owned(),
            detail: detail.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(_) => {
                return Err(bad(
                    "only https:// URLs are supported (the node API requires TLS)",
                ));
            }
            None => return Err(bad("expected https://<host>:<port>")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad("expected https://<host>:<port>"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not supported in the URL"));
        }
        if uri.query().is_some() {
            return Err(bad("a node URL cannot carry a query"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("the URL names no host"));
        }
        let server_name = ServerName::try_from(host.clone()).map_err(|e| {
            bad(&format!(
                "'{host}' is neither a host name nor an address: {e}"
            ))
        })?;
        Ok(Self {
            configured: url.to_owned(),
            authority: authority.as_str().to_owned(),
            host,
            port: authority.port_u16().unwrap_or(443),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            server_name,
        })
    }

    /// The request target for `path`.
    fn target(&self, path: &str) -> Result<String, ClientError> {
        if !path.starts_with('/') {
            return Err(ClientError::BadUrl {
                url: path.to_owned(),
                detail: "a request path must start with '/'".to_owned(),
            });
        }
        Ok(format!("{}{path}", self.base_path))
    }

    /// The full URL of `target`, for messages.
    fn url_of(&self, target: &str) -> String {
        format!("https://{}{target}", self.authority)
    }
}

/// What a call sends and expects.
#[derive(Clone, Copy)]
enum Call<'a> {
    Get,
    Post(&'a Bytes),
    GetText,
}

/// An answer before its body is interpreted.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Bytes,
    node: String,
}

/// A failed attempt on one node.
struct Failed {
    error: ClientError,
    /// Whether the request may have reached the node (then a POST is not sent elsewhere).
    sent: bool,
}

fn read_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| ClientError::BadPem {
        path: path.to_owned(),
        detail: format!("not a PEM file (expected the {what})"),
    })?;
    certs_from_pem(&text).map_err(|e| ClientError::BadPem {
        path: path.to_owned(),
        detail: format!("{e} (expected the {what}, PEM)"),
    })
}

impl ApiClient {
    /// Loads and checks the CA certificate, the client certificate and the client key, and
    /// prepares the TLS configuration. Nothing is sent.
    ///
    /// The client certificate must name a client (`spiffe://<cluster>/client/<name>`), be
    /// issued by the cluster CA and be valid now, and the key must be its key; each error
    /// names the file at fault. `cluster_id`, when given, must be the certificate's cluster.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.urls.is_empty() {
            return Err(ClientError::Config(
                "no API URL configured (set STRONGROOM_API_URLS or pass the node URLs)".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(ClientError::Config(
                "the request timeout must be longer than zero".into(),
            ));
        }
        let nodes = config
            .urls
            .iter()
            .map(|u| NodeUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());

        // The cluster CA: the only trust anchors.
        let ca_path = &config.ca_cert;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(ca_path, "cluster CA certificate")? {
            roots.add(ca).map_err(|e| ClientError::BadPem {
                path: ca_path.clone(),
                detail: format!("not usable as the cluster CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);

        // The client certificate: a client of the cluster, issued by the cluster CA.
        let cert_path = &config.client_cert;
        let chain = read_certs(cert_path, "client certificate")?;
        let bad_cert = |detail: String| ClientError::BadPem {
            path: cert_path.clone(),
            detail,
        };
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| bad_cert("no certificate".into()))?;
        let identity = identity_of(leaf).map_err(|e| bad_cert(e.to_string()))?;
        let client = match identity.subject {
            Subject::Client(name) => name,
            Subject::Node(_) => {
                return Err(bad_cert(format!(
                    "names {identity}, a node; the API accepts only client certificates \
                     (spiffe://<cluster>/client/<name>)"
                )));
            }
        };
        let cluster = match &config.cluster_id {
            None => identity.cluster,
            Some(expected) => {
                let expected = ClusterId::new(expected.as_str())
                    .map_err(|e| ClientError::Config(format!("cluster id: {e}")))?;
                if expected != identity.cluster {
                    return Err(bad_cert(format!(
                        "is a client of cluster '{}', but the configured cluster is '{expected}'",
                        identity.cluster
                    )));
                }
                expected
            }
        };
        let client_check =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| {
                    ClientError::Tls(format!("cannot check the client certificate: {e}"))
                })?;
        client_check
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                let why = match &e {
                    rustls::Error::InvalidCertificate(ce) => describe_client_cert(ce),
                    other => other.to_string(),
                };
                bad_cert(format!(
                    "the client certificate is not usable with the cluster CA in {}: {why}",
                    ca_path.display()
                ))
            })?;

        // The client key, which must be the certificate's.
        let key_path = &config.client_key;
        let key_pem = read_file(key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ClientError::BadPem {
            path: key_path.clone(),
            detail: format!(
                "no usable PRIVATE KEY block (expected the client key, PKCS#8 PEM): {e}"
            ),
        })?;
        let certified = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| {
            let detail = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "this key does not belong to the client certificate in {}",
                    cert_path.display()
                ),
                other => format!("unusable client key: {other}"),
            };
            ClientError::BadPem {
                path: key_path.clone(),
                detail,
            }
        })?;

        let verifier = Arc::new(NodeVerifier::new(roots, cluster.clone()));
        let mut tls = TlsConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls.resumption = Resumption::disabled();

        Ok(Self {
            inner: Arc::new(Inner {
                urls: config.urls,
                nodes,
                connector: TlsConnector::from(Arc::new(tls)),
                cluster,
                client,
                timeout: config.timeout,
                idle: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// The node URLs, in the order they are tried; [`ApiClient::get_at`] and friends index
    /// into it.
    pub fn urls(&self) -> &[String] {
        &self.inner.urls
    }

    /// The cluster whose nodes this client accepts.
    pub fn cluster_id(&self) -> &str {
        self.inner.cluster.as_str()
    }

    /// This client's name, from its certificate.
    pub fn client_name(&self) -> &str {
        self.inner.client.as_str()
    }

    /// GET `path` (e.g. `/v1/health`) on the first node that answers.
    ///
    /// A node that cannot be reached, whose certificate is refused, or whose exchange fails
    /// or times out is skipped for the next URL; any HTTP answer, even 4xx or 5xx, is returned
    /// as is. When every node fails: [`ClientError::Connect`] listing each URL and its reason.
    pub async fn get(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.failover(Call::Get, path).await
    }

    /// POST `body` as JSON to `path` on the first node that answers.
    ///
    /// Fails over like [`ApiClient::get`] as long as the request cannot have reached a node
    /// (no connection, refused certificate). Once it was sent, a failure (timeout, broken
    /// connection) is returned as is and the request is not sent to another node, so that a
    /// request is never submitted twice by the client.
    pub async fn post(&self, path: &str, body: &Value) -> Result<ApiResponse, ClientError> {
        let body = encode(body)?;
        self.failover(Call::Post(&body), path).await
    }

    /// GET `path` on node `node` (an index into [`ApiClient::urls`]) only.
    pub async fn get_at(&self, node: usize, path: &str) -> Result<ApiResponse, ClientError> {
        let url = self.node(node)?;
        let answer = self
            .attempt(url, Call::Get, path)
            .await
            .map_err(|f| f.error)?;
        json_response(url, path, answer)
    }

    /// POST `body` as JSON to `path` on node `node` only.
    pub async fn post_at(
        &self,
        node: usize,
        path: &str,
        body: &Value,
    ) -> Result<ApiResponse, ClientError> {
        let url = self.node(node)?;
        let body = encode(body)?;
        let answer = self
            .attempt(url, Call::Post(&body), path)
            .await
            .map_err(|f| f.error)?;
        json_response(url, path, answer)
    }

    /// GET `path` on node `node` only and return the status and the raw body as text (for
    /// `/metrics` or JSON Lines); any status is returned as is. A body that is not UTF-8 is a
    /// [`ClientError::BadBody`].
    pub async fn get_text_at(&self, node: usize, path: &str) -> Result<(u16, String), ClientError> {
        let url = self.node(node)?;
        let answer = self
            .attempt(url, Call::GetText, path)
            .await
            .map_err(|f| f.error)?;
        let text = String::from_utf8(answer.body.to_vec()).map_err(|e| ClientError::BadBody {
            url: url.url_of(path),
            detail: format!("the body is not UTF-8 text: {e}"),
        })?;
        Ok((answer.status, text))
    }

    fn node(&self, index: usize) -> Result<&NodeUrl, ClientError> {
        self.inner.nodes.get(index).ok_or(ClientError::NoSuchNode {
            index,
            count: self.inner.nodes.len(),
        })
    }

    async fn failover(&self, call: Call<'_>, path: &str) -> Result<ApiResponse, ClientError> {
        // A bad path is the caller's fault, the same on every node.
        if let Some(first) = self.inner.nodes.first() {
            first.target(path)?;
        }
        let mut failures = Vec::new();
        for url in &self.inner.nodes {
            match self.attempt(url, call, path).await {
                Ok(answer) => return json_response(url, path, answer),
                Err(Failed { error, sent: true }) if matches!(call, Call::Post(_)) => {
                    return Err(error);
                }
                Err(Failed { error, .. }) => {
                    warn!(url = %url.configured, error = %error, "node did not answer, trying the next");
                    failures.push((url.configured.as_str(), error));
                }
            }
        }
        Err(ClientError::Connect {
            url: failures
                .iter()
                .map(|(u, _)| *u)
                .collect::<Vec<_>>()
                .join(", "),
            detail: failures
                .iter()
                .map(|(u, e)| match e {
                    // Said once, not "<url>: cannot reach <url>: ...".
                    ClientError::Connect { detail, .. } => format!("{u}: {detail}"),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// One exchange with one node, under the timeout.
    async fn attempt(&self, url: &NodeUrl, call: Call<'_>, path: &str) -> Result<Answer, Failed> {
        let target = url
            .target(path)
            .map_err(|error| Failed { error, sent: false })?;
        let full_url = url.url_of(&target);
        let sent = AtomicBool::new(false);
        let timeout = self.inner.timeout;
        debug!(url = %full_url, "API request");
        match tokio::time::timeout(timeout, self.exchange(url, call, &target, &full_url, &sent))
            .await
        {
            Ok(Ok(answer)) => {
                debug!(url = %full_url, status = answer.status, node = %answer.node, "API answer");
                Ok(answer)
            }
            Ok(Err(error)) => Err(Failed {
                error,
                sent: sent.load(Ordering::SeqCst),
            }),
            Err(_) => Err(Failed {
                error: ClientError::Timeout {
                    url: full_url,
                    after: timeout,
                },
                sent: sent.load(Ordering::SeqCst),
            }),
        }
    }

    async fn exchange(
        &self,
        url: &NodeUrl,
        call: Call<'_>,
        target: &str,
        full_url: &str,
        sent: &AtomicBool,
    ) -> Result<Answer, ClientError> {
        let http_error = |detail: String| ClientError::Http {
            url: full_url.to_owned(),
            detail,
        };

        let (mut sender, node, reused) = match self.take_idle(url).await {
            Some(idle) => (idle.sender, idle.node, true),
            None => {
                let (sender, node) = self.connect(url).await?;
                (sender, node, false)
            }
        };
        let (method, accept, body) = match call {
            Call::Get => (Method::GET, "application/json", None),
            Call::Post(body) => (Method::POST, "application/json", Some(body.clone())),
            Call::GetText => (Method::GET, "*/*", None),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, url.authority.as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, accept);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::BadUrl {
                url: target.to_owned(),
                detail: e.to_string(),
            })?;

        sent.store(true, Ordering::SeqCst);
        let response = match sender.send_request(request.clone()).await {
            Ok(response) => response,
            // A kept connection the node closed meanwhile: the request was not sent; open a
            // new connection and send it there.
            Err(e) if reused && e.is_canceled() => {
                let (fresh, _) = self.connect(url).await?;
                sender = fresh;
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| http_error(describe_http(&e)))?
            }
            Err(e) => return Err(http_error(describe_http(&e))),
        };
        let status = response.status().as_u16();
        let keep = !response
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the response body exceeds {MAX_RESPONSE_BYTES} bytes")
                } else {
                    format!("reading the response body: {}", describe_error(e.as_ref()))
                }
            })
            .map_err(http_error)?
            .to_bytes();
        if keep {
            self.put_idle(
                url,
                Idle {
                    sender,
                    node: node.clone(),
                },
            );
        }
        Ok(Answer {
            status,
            content_type,
            body,
            node,
        })
    }

    /// A new verified connection to `url`, driven by a task of its own until either side
    /// closes it (dropping the sender closes it).
    async fn connect(
        &self,
        url: &NodeUrl,
    ) -> Result<(http1::SendRequest<Full<Bytes>>, String), ClientError> {
        let connect_error = |detail: String| ClientError::Connect {
            url: url.configured.clone(),
            detail,
        };
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| connect_error(format!("TCP connection to {}: {e}", url.authority)))?;
        // Small requests: do not wait for more data before sending.
        let _ = tcp.set_nodelay(true);
        let tls = self
            .inner
            .connector
            .connect(url.server_name.clone(), tcp)
            .await
            .map_err(|e| handshake_error(&url.configured, &e))?;
        let node = node_of(&tls).map_err(connect_error)?;
        let (sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
            .await
            .map_err(|e| connect_error(format!("HTTP/1.1 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %describe_http(&e), "API connection ended");
            }
        });
        Ok((sender, node))
    }

    /// An idle connection to `url` that is still open and ready, if there is one.
    async fn take_idle(&self, url: &NodeUrl) -> Option<Idle> {
        loop {
            let mut idle = {
                let mut pool = self
                    .inner
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pool.get_mut(&url.authority)?.pop()?
            };
            if !idle.sender.is_closed() && idle.sender.ready().await.is_ok() {
                return Some(idle);
            }
        }
    }

    fn put_idle(&self, url: &NodeUrl, idle: Idle) {
        let mut pool = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = pool.entry(url.authority.clone()).or_default();
        if list.len() < IDLE_PER_NODE {
            list.push(idle);
        }
    }
}

fn encode(body: &Value) -> Result<Bytes, ClientError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ClientError::Config(format!("cannot encode the request body as JSON: {e}")))
}

/// The node id of the verified server certificate.
fn node_of(tls: &TlsStream<TcpStream>) -> Result<String, String> {
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(<[_]>::first)
        .ok_or("the server presented no certificate")?;
    match identity_of(leaf).map_err(|e| e.to_string())?.subject {
        Subject::Node(node) => Ok(node.to_string()),
        Subject::Client(_) => Err("the server certificate names no node".into()),
    }
}

/// The error of a failed TLS handshake: a refused server certificate, or anything else.
fn handshake_error(url: &str, e: &std::io::Error) -> ClientError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(ce)) => ClientError::UntrustedServer {
            url: url.to_owned(),
            detail: describe_refusal(ce),
        },
        Some(rustls::Error::AlertReceived(alert)) => ClientError::Connect {
            url: url.to_owned(),
            detail: format!(
                "the server ended the TLS handshake ({alert:?}): is the client certificate \
                 issued by this cluster's CA and still valid?"
            ),
        },
        Some(other) => ClientError::Connect {
            url: url.to_owned(),
            detail: format!("TLS handshake: {other}"),
        },
        None => ClientError::Connect {
            url: url.to_owned(),
            detail: format!("TLS handshake: {e}"),
        },
    }
}

/// A hyper error with its causes, and a hint when the server refused the client certificate
/// (TLS 1.3 reports that only after the handshake, on the first read).
fn describe_http(e: &hyper::Error) -> String {
    describe_error(e)
}

fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        if let Some(rustls::Error::AlertReceived(alert)) = cause.downcast_ref::<rustls::Error>() {
            text.push_str(&format!(
                " (the server sent TLS alert {alert:?}: is the client certificate issued by \
                 this cluster's CA and still valid?)"
            ));
        }
        source = cause.source();
    }
    text
}

fn describe_client_cert(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match e {
        E::UnknownIssuer | E::BadSignature => {
            "it is not issued by this CA (mixed-up files, or another cluster's?)".to_owned()
        }
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
            format!("it is not valid for TLS client authentication ({e})")
        }
        other => other.to_string(),
    }
}

/// Whether `content_type` is JSON (`application/json` or any `+json` type).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_response(url: &NodeUrl, path: &str, answer: Answer) -> Result<ApiResponse, ClientError> {
    let bad_body = |detail: String| ClientError::BadBody {
        url: url.url_of(path),
        detail,
    };
    let body = if answer.body.is_empty() {
        Value::Null
    } else {
        match answer.content_type.as_deref() {
            Some(ct) if is_json(ct) => serde_json::from_slice(&answer.body).map_err(|e| {
                bad_body(format!(
                    "status {}: content type {ct} but the body is not valid JSON: {e}",
                    answer.status
                ))
            })?,
            other => {
                return Err(bad_body(format!(
                    "status {}: expected a JSON body, got content type {} ({} bytes)",
                    answer.status,
                    other.unwrap_or("(none)"),
                    answer.body.len()
                )));
            }
        }
    };
    Ok(ApiResponse {
        status: answer.status,
        body,
        node: answer.node,
        url: url.configured.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let u = NodeUrl::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8443));
        assert_eq!(u.target("/v1/health").unwrap(), "/v1/health");
        assert_eq!(u.url_of("/v1/health"), "https://127.0.0.1:8443/v1/health");

        let u = NodeUrl::parse("https://[::1]:9000/api/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.authority, "[::1]:9000");
        assert_eq!(u.target("/v1/keys").unwrap(), "/api/v1/keys");

        let u = NodeUrl::parse("HTTPS://node-1.example").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("node-1.example", 443));

        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://",
            "https://user@host:1",
            "https://host:1/?x=1",
            "not a url",
        ] {
            assert!(
                matches!(NodeUrl::parse(bad), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
        assert!(NodeUrl::parse("https://h:1").unwrap().target("v1").is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(is_json("Application/JSON"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/openmetrics-text; version=1.0.0"));
    }
}
