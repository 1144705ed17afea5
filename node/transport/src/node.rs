//! A node's transport: its QUIC endpoint, its peers' connections and its session registry.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::conn::{self, Net, PeerStatus, PeerTable};
use crate::events::{Events, TransportEvent};
use crate::ids::{ClusterId, NodeId};
use crate::rpc::{IncomingRequest, RequestError, Requests};
use crate::session::{JoinError, Registry, Session, SessionIdStore, SessionSpec};
use crate::verify::{BadTrustAnchor, NodeCertError, PeerVerifier, check_node_certificate};

/// ALPN protocol id of the node-to-node transport.
pub const ALPN: &[u8] = b"strongroom/1";

/// Connection timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// QUIC keep-alive interval.
    pub keepalive: Duration,
    /// A connection silent for this long is considered dead.
    pub idle_timeout: Duration,
    /// Longest a handshake may take.
    pub connect_timeout: Duration,
    /// Longest a liveness probe may take.
    pub probe_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay (the cap of the exponential backoff).
    pub backoff_max: Duration,
    /// How long an outgoing session message waits for a connection to its peer.
    pub send_wait: Duration,
    /// How long a new session stream may take to name its session.
    pub stream_header_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            send_wait: Duration::from_secs(10),
            stream_header_timeout: Duration::from_secs(10),
        }
    }
}

/// Size limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted or sent, in bytes.
    pub max_frame_bytes: u32,
    /// How long messages for a session not yet joined are kept.
    pub pending_ttl: Duration,
    /// Most messages kept per session not yet joined.
    pub pending_max_messages: usize,
    /// Most bytes kept for all sessions not yet joined together.
    pub pending_max_bytes: usize,
    /// Most sessions not yet joined with messages kept.
    pub pending_max_sessions: usize,
    /// Inbound queue length of a joined session, in messages (backpressure beyond it).
    pub session_queue: usize,
    /// Inbound queue of a joined session, in body bytes (backpressure beyond it).
    pub session_queue_bytes: usize,
    /// QUIC connection-level receive window: bytes a peer may have in flight towards this
    /// node across all its streams.
    pub connection_receive_window: u32,
    /// Most session streams a peer may have open towards this node at once.
    pub max_streams_per_peer: u32,
    /// Largest request body and largest answer body, in bytes, sent or accepted
    /// ([`Node::request`]).
    pub max_request_bytes: u32,
    /// Incoming requests queued for the handler ([`Node::take_requests`]); requests beyond it
    /// are refused.
    pub request_inbox: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 8 * 1024 * 1024,
            pending_ttl: Duration::from_secs(10),
            pending_max_messages: 256,
            pending_max_bytes: 64 * 1024 * 1024,
            pending_max_sessions: 4096,
            session_queue: 1024,
            session_queue_bytes: 64 * 1024 * 1024,
            connection_receive_window: 256 * 1024 * 1024,
            max_streams_per_peer: 8192,
            max_request_bytes: 4 * 1024 * 1024,
            request_inbox: 1024,
        }
    }
}

/// Where this node sits in its cluster.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The cluster.
    pub cluster: ClusterId,
    /// This node.
    pub node: NodeId,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Every other member and its address: the membership configuration.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Connection timing.
    pub timing: Timing,
    /// Size limits.
    pub limits: Limits,
}

/// This node's TLS identity: its certificate chain, the key that signs its handshakes (in
/// production a token-held key), and the cluster CA, the only trust anchor.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key matching the certificate.
    pub key: Arc<dyn rustls::sign::SigningKey>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

/// Starting the transport failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The node certificate is unusable: wrong node, wrong key, or peers would refuse it
    /// (configuration: install the right certificate).
    #[error(transparent)]
    Certificate(#[from] NodeCertError),
    /// The peer list names this node itself (configuration).
    #[error("the peer list contains this node's own id '{0}'")]
    SelfInPeers(NodeId),
    /// The CA certificate is unusable (configuration).
    #[error(transparent)]
    TrustAnchor(#[from] BadTrustAnchor),
    /// rustls or quinn refused the TLS configuration (bug).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The UDP socket cannot be bound (operator: address in use or not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for FixedCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One node's transport. Dropping it stops its tasks; [`Node::shutdown`] also tells peers.
pub struct Node {
    net: Arc<Net>,
    events: Arc<Events>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("node", &self.net.own).finish()
    }
}

impl Node {
    /// Binds `config.listen` and starts the transport.
    pub async fn start(
        config: NodeConfig,
        identity: NodeIdentity,
        session_ids: Arc<dyn SessionIdStore>,
    ) -> Result<Self, StartError> {
        let socket = UdpSocket::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        Self::start_on_socket(config, identity, session_ids, socket).await
    }

    /// Starts the transport on an already bound UDP socket.
    pub async fn start_on_socket(
        config: NodeConfig,
        identity: NodeIdentity,
        session_ids: Arc<dyn SessionIdStore>,
        socket: UdpSocket,
    ) -> Result<Self, StartError> {
        if config.peers.contains_key(&config.node) {
            return Err(StartError::SelfInPeers(config.node.clone()));
        }
        let events = Arc::new(Events::new());
        check_own_identity(&config, &identity)?;

        let verifier = Arc::new(PeerVerifier::new(
            config.cluster.clone(),
            config.node.clone(),
            config.peers.keys().cloned(),
            &identity.ca,
            events.clone(),
        )?);
        let transport = Arc::new(transport_config(&config)?);
        let (server_config, client_config) = quic_configs(&identity, verifier, transport)?;

        let listen = socket.local_addr().unwrap_or(config.listen);
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;

        let peers = Arc::new(PeerTable::new(config.node.clone(), &config.peers));
        let members: HashSet<NodeId> = config.peers.keys().cloned().collect();
        let registry = Arc::new(Registry::new(
            config.node.clone(),
            members,
            config.limits.clone(),
            config.timing.send_wait,
            config.timing.stream_header_timeout,
            session_ids,
            peers.clone(),
            events.clone(),
        ));
        let requests = Arc::new(Requests::new(
            config.limits.request_inbox,
            config.limits.max_request_bytes,
            config.timing.stream_header_timeout,
            config.peers.keys().cloned(),
            conn::MAX_OUTGOING_REQUESTS,
            events.clone(),
        ));
        let net = Arc::new(Net {
            own: config.node.clone(),
            endpoint,
            client_config,
            timing: config.timing.clone(),
            peers,
            registry,
            requests,
        });

        let mut tasks = vec![tokio::spawn(conn::accept_loop(net.clone()))];
        for slot in net.peers.slots() {
            let task = if net.own < *slot_node(slot) {
                tokio::spawn(conn::dial_loop(net.clone(), slot.clone()))
            } else {
                tokio::spawn(conn::knock_loop(net.clone(), slot.clone()))
            };
            tasks.push(task);
        }
        let registry = net.registry.clone();
        let sweep = (config.limits.pending_ttl / 4).max(Duration::from_millis(10));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep);
            loop {
                tick.tick().await;
                registry.expire_pending();
            }
        }));
        tracing::info!(node = %config.node, cluster = %config.cluster, %listen, peers = config.peers.len(), "transport started");
        Ok(Self { net, events, tasks })
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.net.own
    }

    /// The UDP address the endpoint listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.net.endpoint.local_addr()
    }

    /// Every peer's connection status.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        self.net.peers.status()
    }

    /// Waits until every peer is connected; `false` on timeout.
    pub async fn wait_all_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for slot in self.net.peers.slots() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self
                .net
                .peers
                .wait_connection(slot_node(slot), left)
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Waits until `peer` is connected; `false` on timeout or if it is not a configured peer.
    pub async fn wait_connection_to(&self, peer: &NodeId, timeout: Duration) -> bool {
        self.net.peers.wait_connection(peer, timeout).await.is_ok()
    }

    /// Refusals, drops and aborts from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<TransportEvent> {
        self.events.subscribe()
    }

    /// The event counters (see [`TransportEvent::kind`]).
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Joins a session (see [`crate::session`]).
    pub async fn join(&self, spec: SessionSpec) -> Result<Session, JoinError> {
        self.net.registry.join(spec).await
    }

    /// Sends a request to `peer` and returns its answer (see [`crate::rpc`]). Waits up to
    /// `timeout` for a connection if there is none; the whole exchange is bounded by
    /// `timeout`. Requests to this node itself are not supported ([`RequestError::NotConnected`]).
    pub async fn request(
        &self,
        peer: &NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        self.net
            .requests
            .request(&self.net.peers, peer, &body, timeout)
            .await
            .map(|(answer, _)| answer)
    }

    /// Like [`Node::request`], and returns with the answer the TLS exporter value (`label`,
    /// empty context, `len` bytes) and the peer's certificate chain of the connection the
    /// request was sent on: the peer derives the same value for the request with
    /// [`crate::IncomingRequest::channel_binding`].
    pub async fn request_bound(
        &self,
        peer: &NodeId,
        body: Vec<u8>,
        timeout: Duration,
        label: &[u8],
        len: usize,
    ) -> Result<crate::rpc::BoundAnswer, RequestError> {
        let (answer, conn) = self
            .net
            .requests
            .request(&self.net.peers, peer, &body, timeout)
            .await?;
        let channel_binding = crate::rpc::export_binding(peer, &conn, label, len)?;
        let peer_certificates = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|chain| *chain)
            .unwrap_or_default();
        Ok(crate::rpc::BoundAnswer {
            answer,
            channel_binding,
            peer_certificates,
        })
    }

    /// The TLS exporter value (`label`, empty context, `len` bytes) of the live connection to
    /// `peer`, `None` without one. It changes whenever the connection does.
    pub fn channel_binding(&self, peer: &NodeId, label: &[u8], len: usize) -> Option<Vec<u8>> {
        let conn = self.net.peers.connection(peer)?;
        crate::rpc::export_binding(peer, &conn, label, len).ok()
    }

    /// The receiver of the requests peers send to this node, the first time only (`None`
    /// afterwards). Until it is taken, and after it is dropped, requests are refused; so are
    /// requests beyond [`Limits::request_inbox`] waiting in it.
    pub fn take_requests(&self) -> Option<mpsc::Receiver<IncomingRequest>> {
        self.net.requests.take()
    }

    /// The live QUIC connection to `peer` (diagnostics and tests).
    pub fn connection(&self, peer: &NodeId) -> Option<quinn::Connection> {
        self.net.peers.connection(peer)
    }

    /// Number of QUIC connections the endpoint holds, including ones being closed.
    pub fn open_connections(&self) -> usize {
        self.net.endpoint.open_connections()
    }

    /// Aborts running sessions, closes every connection (peers see it at once) and stops.
    pub async fn shutdown(mut self) {
        self.net.registry.abort_all();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.net.peers.close_all();
        self.net
            .endpoint
            .close(conn::conn_codes::SHUTDOWN.into(), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.net.endpoint.wait_idle()).await;
        tracing::info!(node = %self.net.own, "transport stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.net.peers.close_all();
        self.net
            .endpoint
            .close(conn::conn_codes::SHUTDOWN.into(), b"node stopped");
    }
}

fn slot_node(slot: &conn::PeerSlot) -> &NodeId {
    slot.node()
}

/// The QUIC server and client configurations of a node: TLS 1.3 only, ALPN [`ALPN`], this
/// identity on both sides, `verifier` checking the peer on both sides.
pub(crate) fn quic_configs(
    identity: &NodeIdentity,
    verifier: Arc<PeerVerifier>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), StartError> {
    let certified = Arc::new(CertifiedKey::new(
        identity.chain.clone(),
        identity.key.clone(),
    ));
    let resolver = Arc::new(FixedCert(certified));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |e: rustls::Error| StartError::Tls(e.to_string());

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(resolver.clone());
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    client_tls.alpn_protocols = vec![ALPN.to_vec()];

    let quic_server = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
    server_config.transport_config(transport.clone());
    let quic_client = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic_client));
    client_config.transport_config(transport);
    Ok((server_config, client_config))
}

pub(crate) fn transport_config(config: &NodeConfig) -> Result<quinn::TransportConfig, StartError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.timing.keepalive));
    let idle = quinn::IdleTimeout::try_from(config.timing.idle_timeout)
        .map_err(|e| StartError::Tls(format!("idle timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    t.max_concurrent_uni_streams(config.limits.max_streams_per_peer.into());
    t.max_concurrent_bidi_streams(conn::MAX_BIDI_STREAMS.into());
    t.receive_window(config.limits.connection_receive_window.into());
    Ok(t)
}

/// Refuses to start with a certificate peers would refuse, or one for another node or key.
fn check_own_identity(config: &NodeConfig, identity: &NodeIdentity) -> Result<(), StartError> {
    let spki = identity.key.public_key();
    check_node_certificate(
        &identity.ca,
        &identity.chain,
        &config.cluster,
        &config.node,
        spki.as_ref().map(|k| k.as_ref()),
    )?;
    Ok(())
}
