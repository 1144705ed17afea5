//! The transport benchmark behind `strongroom bench transport`: two nodes on loopback, each
//! with a fresh in-memory CA and software keys, in this process.
//!
//! What is measured:
//!
//! - **Session round trip.** For each of `round_trips` fresh sessions (both nodes join the same
//!   new session id), the time from node A sending one point-to-point message of
//!   `payload_bytes` until A has received B's reply of the same size. This covers opening a new
//!   QUIC stream in each direction, framing, routing by session id and the loopback network;
//!   joining is outside the timer. Reported as p50 and p99 (nearest rank) and the maximum.
//! - **Messages per second.** In one session, A sends `messages` point-to-point messages of
//!   `payload_bytes` to B; the rate is `messages` divided by the time from the first send until B
//!   has received the last one (one stream, in order, flow control included).
//!
//! The handshake key signs in software here; a token-held key only slows the handshakes,
//! which the figures above do not include.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::{ClusterId, NodeId, Subject};
use crate::node::{Limits, Node, NodeConfig, NodeIdentity, StartError, Timing};
use crate::pki::{ClusterCa, SoftwareKey, Validity};
use crate::session::{
    InMemorySessionIds, JoinError, ProtocolKind, SendError, SessionError, SessionId, SessionSpec,
};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Sessions for the round-trip measurement.
    pub round_trips: usize,
    /// Round trips run first and not counted.
    pub warmup: usize,
    /// Messages for the throughput measurement.
    pub messages: usize,
    /// Payload size of every message, bytes.
    pub payload_bytes: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            round_trips: 1000,
            warmup: 100,
            messages: 100_000,
            payload_bytes: 256,
        }
    }
}

/// The figures.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Sessions measured.
    pub round_trips: usize,
    /// Median session round trip.
    pub rtt_p50: Duration,
    /// 99th percentile session round trip.
    pub rtt_p99: Duration,
    /// Slowest session round trip.
    pub rtt_max: Duration,
    /// Messages in the throughput run.
    pub messages: usize,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Time of the throughput run.
    pub throughput_elapsed: Duration,
    /// Messages per second.
    pub messages_per_sec: f64,
}

/// The benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up the in-memory cluster failed (platform).
    #[error("benchmark setup: {0}")]
    Setup(String),
    /// A node did not start (platform: sockets).
    #[error("benchmark node: {0}")]
    Start(#[from] StartError),
    /// The two nodes did not connect (platform: loopback blocked?).
    #[error("the benchmark nodes did not connect within {0:?}")]
    NotConnected(Duration),
    /// Joining a session failed (bug).
    #[error("benchmark session: {0}")]
    Join(#[from] JoinError),
    /// A session aborted (bug or platform).
    #[error("benchmark session aborted: {0}")]
    Session(#[from] SessionError),
    /// Sending failed (bug).
    #[error("benchmark send: {0}")]
    Send(#[from] SendError),
    /// A message did not arrive in time.
    #[error("benchmark: no message within {0:?}")]
    Timeout(Duration),
    /// A message arrived with unexpected contents (bug).
    #[error("benchmark: unexpected message contents")]
    Corrupted,
}

/// One member of an in-memory loopback cluster: its config, identity and bound socket.
pub(crate) struct LoopbackMember {
    pub(crate) config: NodeConfig,
    pub(crate) identity: NodeIdentity,
    pub(crate) socket: UdpSocket,
}

/// Builds `n` nodes `node-1..node-n` of cluster `cluster` on 127.0.0.1 with software keys.
pub(crate) fn loopback_cluster(
    cluster: &str,
    n: usize,
    timing: &Timing,
    limits: &Limits,
) -> Result<(ClusterCa, Vec<LoopbackMember>), String> {
    let cluster = ClusterId::new(cluster).map_err(|e| e.to_string())?;
    let ca =
        ClusterCa::generate(&cluster, Validity::days_from_now(1)).map_err(|e| e.to_string())?;
    let mut sockets = Vec::new();
    let mut addrs = BTreeMap::new();
    for i in 1..=n {
        let node = NodeId::new(format!("node-{i}")).map_err(|e| e.to_string())?;
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr: SocketAddr = socket.local_addr().map_err(|e| e.to_string())?;
        addrs.insert(node.clone(), addr);
        sockets.push((node, socket));
    }
    let mut members = Vec::new();
    for (node, socket) in sockets {
        let key = SoftwareKey::generate().map_err(|e| e.to_string())?;
        let cert = ca
            .issue(
                Subject::Node(node.clone()),
                key.rcgen_key(),
                Validity::days_from_now(1),
            )
            .map_err(|e| e.to_string())?;
        let mut peers = addrs.clone();
        let listen = peers.remove(&node).ok_or("missing own address")?;
        members.push(LoopbackMember {
            config: NodeConfig {
                cluster: cluster.clone(),
                node,
                listen,
                peers,
                timing: timing.clone(),
                limits: limits.clone(),
            },
            identity: NodeIdentity {
                ca: ca.cert_der().clone(),
                chain: vec![cert.der],
                key: key.rustls_signing_key().map_err(|e| e.to_string())?,
            },
            socket,
        });
    }
    Ok((ca, members))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted
        .get(rank.min(sorted.len()) - 1)
        .copied()
        .unwrap_or_default()
}

const MESSAGE_WAIT: Duration = Duration::from_secs(10);

async fn recv_one(rx: &mut crate::session::SessionReceiver) -> Result<Vec<u8>, BenchError> {
    match tokio::time::timeout(MESSAGE_WAIT, rx.recv()).await {
        Ok(Some(Ok(m))) => Ok(m.body),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) | Err(_) => Err(BenchError::Timeout(MESSAGE_WAIT)),
    }
}

/// Runs the benchmark (needs a tokio runtime with the time and net drivers).
pub async fn run(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let (_ca, members) = loopback_cluster("bench", 2, &Timing::default(), &Limits::default())
        .map_err(BenchError::Setup)?;
    let mut nodes = Vec::new();
    for m in members {
        nodes.push(
            Node::start_on_socket(
                m.config,
                m.identity,
                Arc::new(InMemorySessionIds::default()),
                m.socket,
            )
            .await?,
        );
    }
    let (Some(b), Some(a)) = (nodes.pop(), nodes.pop()) else {
        return Err(BenchError::Setup("two nodes expected".into()));
    };
    let wait = Duration::from_secs(10);
    if !a.wait_all_connected(wait).await || !b.wait_all_connected(wait).await {
        return Err(BenchError::NotConnected(wait));
    }
    let participants = vec![a.id().clone(), b.id().clone()];
    let payload: Vec<u8> = (0..options.payload_bytes)
        .map(|i| (i % 251) as u8)
        .collect();

    let mut samples = Vec::with_capacity(options.round_trips);
    for i in 0..options.warmup + options.round_trips {
        let spec = SessionSpec {
            id: SessionId::random(),
            protocol: ProtocolKind::Benchmark,
            participants: participants.clone(),
        };
        let (sa, sb) = tokio::try_join!(a.join(spec.clone()), b.join(spec))?;
        let (mut a_rx, mut a_tx) = sa.split();
        let (mut b_rx, mut b_tx) = sb.split();
        let responder = async {
            let body = recv_one(&mut b_rx).await?;
            b_tx.p2p(0, &body)?;
            Ok::<_, BenchError>(())
        };
        let start = Instant::now();
        a_tx.p2p(1, &payload)?;
        let (reply, ()) = tokio::try_join!(recv_one(&mut a_rx), responder)?;
        let elapsed = start.elapsed();
        if reply != payload {
            return Err(BenchError::Corrupted);
        }
        if i >= options.warmup {
            samples.push(elapsed);
        }
    }
    samples.sort();

    let spec = SessionSpec {
        id: SessionId::random(),
        protocol: ProtocolKind::Benchmark,
        participants,
    };
    let (sa, sb) = tokio::try_join!(a.join(spec.clone()), b.join(spec))?;
    let (_a_rx, mut a_tx) = sa.split();
    let (mut b_rx, _b_tx) = sb.split();
    let total = options.messages;
    let receiver = async {
        for _ in 0..total {
            let body = recv_one(&mut b_rx).await?;
            if body.len() != payload.len() {
                return Err(BenchError::Corrupted);
            }
        }
        Ok::<_, BenchError>(())
    };
    let start = Instant::now();
    let sender = async {
        for _ in 0..total {
            a_tx.p2p(1, &payload)?;
            // Let the writer run between bursts, as a protocol would between rounds.
            tokio::task::yield_now().await;
        }
        Ok::<_, BenchError>(())
    };
    tokio::try_join!(sender, receiver)?;
    let throughput_elapsed = start.elapsed();

    a.shutdown().await;
    b.shutdown().await;
    Ok(BenchReport {
        round_trips: samples.len(),
        rtt_p50: percentile(&samples, 50.0),
        rtt_p99: percentile(&samples, 99.0),
        rtt_max: samples.last().copied().unwrap_or_default(),
        messages: total,
        payload_bytes: options.payload_bytes,
        throughput_elapsed,
        messages_per_sec: total as f64 / throughput_elapsed.as_secs_f64().max(f64::EPSILON),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_runs_small() {
        let report = run(&BenchOptions {
            round_trips: 20,
            warmup: 2,
            messages: 500,
            payload_bytes: 64,
        })
        .await
        .unwrap();
        assert_eq!(report.round_trips, 20);
        assert!(report.rtt_p50 <= report.rtt_p99 && report.rtt_p99 <= report.rtt_max);
        assert!(report.messages_per_sec > 0.0);
    }
}
