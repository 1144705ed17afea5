use std::io;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::bench::{LoopbackMember, loopback_cluster};
use crate::events::Events;
use crate::ids::{ClusterId, NodeId, Subject};
use crate::node::{Limits, Node, NodeConfig, NodeIdentity, Timing, quic_configs};
use crate::pki::{ClusterCa, SoftwareKey, Validity};
use crate::session::InMemorySessionIds;
use crate::verify::PeerVerifier;

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("strongroom_transport=info")
            }),
        )
        .with_test_writer()
        .try_init();
}

pub(crate) fn members(n: usize) -> (ClusterCa, Vec<LoopbackMember>) {
    loopback_cluster("vault", n, &Timing::default(), &Limits::default()).unwrap()
}

pub(crate) fn members_with(n: usize, limits: Limits) -> (ClusterCa, Vec<LoopbackMember>) {
    loopback_cluster("vault", n, &Timing::default(), &limits).unwrap()
}

pub(crate) async fn start(m: LoopbackMember) -> Node {
    Node::start_on_socket(
        m.config,
        m.identity,
        Arc::new(InMemorySessionIds::default()),
        m.socket,
    )
    .await
    .unwrap()
}

/// Starts every member at the same moment.
pub(crate) async fn start_all(ms: Vec<LoopbackMember>) -> Vec<Node> {
    futures::future::join_all(ms.into_iter().map(start)).await
}

pub(crate) async fn all_connected(nodes: &[Node]) {
    for n in nodes {
        assert!(
            n.wait_all_connected(Duration::from_secs(10)).await,
            "{} not connected",
            n.id()
        );
    }
}

pub(crate) fn node_id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// A certificate for `subject` from `ca` with its software key.
pub(crate) fn identity_from(
    ca: &ClusterCa,
    trust: &ClusterCa,
    subject: Subject,
    validity: Validity,
) -> NodeIdentity {
    let key = SoftwareKey::generate().unwrap();
    let cert = ca.issue(subject, key.rcgen_key(), validity).unwrap();
    NodeIdentity {
        ca: trust.cert_der().clone(),
        chain: vec![cert.der],
        key: key.rustls_signing_key().unwrap(),
    }
}

/// A bare QUIC endpoint presenting `identity` (no self-checks: it may hold any certificate),
/// trusting `trust` and accepting every node of the cluster as its peer.
pub(crate) fn raw_endpoint(
    identity: &NodeIdentity,
    trust: &CertificateDer<'static>,
) -> (quinn::Endpoint, quinn::ClientConfig) {
    let members = (1..=9).map(|i| node_id(&format!("node-{i}")));
    let verifier = Arc::new(
        PeerVerifier::new(
            ClusterId::new("vault").unwrap(),
            node_id("raw"),
            members,
            trust,
            Arc::new(Events::new()),
        )
        .unwrap(),
    );
    let config = NodeConfig {
        cluster: ClusterId::new("vault").unwrap(),
        node: node_id("raw"),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: Default::default(),
        timing: Timing::default(),
        limits: Limits::default(),
    };
    let transport = Arc::new(crate::node::transport_config(&config).unwrap());
    let (server, client) = quic_configs(identity, verifier, transport).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    (endpoint, client)
}

/// Log lines captured while a test runs on the current thread.
#[derive(Clone, Default)]
pub(crate) struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub(crate) fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sub = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

impl io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Waits until `f` holds, polling.
pub(crate) async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
