//! The connection manager: exactly one live QUIC connection per peer pair.
//!
//! Rule: the connection of a pair is the one the node with the lower node id dialed. The lower
//! node dials its higher peers and redials with capped, jittered exponential backoff whenever
//! it has no live connection. The higher node never keeps a connection it dialed: when it has
//! no connection from a lower peer it "knocks", i.e. completes an authenticated handshake that
//! the lower peer closes at once while it dials back. A knock tells a lower peer that holds a
//! connection that its peer may have restarted: it probes that connection and replaces it if
//! the probe goes unanswered. A node that accepts a new connection from a lower peer replaces
//! the older one: the lower peer only dials when it has none. So simultaneous dials cannot
//! fight, and a restarted peer is reconnected after a handshake and at most one probe timeout.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng as _;
use rustls_pki_types::CertificateDer;
use tokio::sync::{Notify, watch};

use crate::ids::{NodeId, Subject};
use crate::node::Timing;
use crate::pki::identity_of;
use crate::rpc::{RPC_REQUEST, Requests};
use crate::session::Registry;

/// QUIC application error codes on connections.
pub(crate) mod conn_codes {
    /// Closed by the lower peer after a knock: it dials back.
    pub(crate) const KNOCK: u32 = 1;
    /// Replaced by a newer connection of the same pair.
    pub(crate) const REPLACED: u32 = 2;
    /// The node shuts down.
    pub(crate) const SHUTDOWN: u32 = 3;
}

/// QUIC application error codes on session streams.
pub(crate) mod stream_codes {
    /// The session was aborted by its sender.
    pub(crate) const ABORTED: u32 = 0x10;
    /// The receiver refused the stream (not a participant, session over, buffer full).
    pub(crate) const REFUSED: u32 = 0x11;
    /// The receiver found the stream malformed.
    pub(crate) const MALFORMED: u32 = 0x12;
}

/// First byte of a liveness probe stream.
const PING: u8 = 0x50;
/// First byte of a probe's answer.
const PONG: u8 = 0x51;

/// Bidirectional streams a peer may have open towards this node at once (probes and
/// requests, see [`crate::rpc`]).
pub(crate) const MAX_BIDI_STREAMS: u32 = 64;
/// Requests this node keeps in flight towards one peer at once: below the peer's
/// bidirectional stream limit, so this node's liveness probes always find a stream.
pub(crate) const MAX_OUTGOING_REQUESTS: usize = (MAX_BIDI_STREAMS - 8) as usize;

/// How one peer's connection is doing, for the API and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub node: NodeId,
    /// Its configured address.
    pub address: SocketAddr,
    /// Whether this node dials the peer (lower node id) or waits for it.
    pub this_node_dials: bool,
    /// Whether a live connection exists.
    pub connected: bool,
    /// Since when the current connection is up.
    pub connected_since: Option<SystemTime>,
    /// Eight bytes exported from the TLS session, hex: both ends of one connection show the same
    /// value, so operators and tests can see that a pair shares exactly one connection.
    pub connection_id: Option<String>,
    /// Round-trip time of the current connection.
    pub rtt: Option<Duration>,
    /// The last connection error, if any.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// Failed dial (or knock) attempts since the last successful connection.
    pub reconnect_attempts: u32,
    /// Connections established since start.
    pub connections_established: u64,
}

#[derive(Default)]
struct SlotStatus {
    connected_since: Option<SystemTime>,
    connection_id: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    reconnect_attempts: u32,
    connections_established: u64,
}

pub(crate) struct PeerSlot {
    node: NodeId,
    addr: SocketAddr,
    conn: watch::Sender<Option<quinn::Connection>>,
    status: Mutex<SlotStatus>,
    wake: Notify,
}

impl PeerSlot {
    pub(crate) fn node(&self) -> &NodeId {
        &self.node
    }

    fn current(&self) -> Option<quinn::Connection> {
        self.conn
            .borrow()
            .clone()
            .filter(|c| c.close_reason().is_none())
    }

    fn record_error(&self, error: &str, attempt: Option<u32>) {
        if let Ok(mut s) = self.status.lock() {
            s.last_error = Some(error.to_owned());
            s.last_error_at = Some(SystemTime::now());
            if let Some(a) = attempt {
                s.reconnect_attempts = a;
            }
        }
    }

    /// Forgets `conn` if it is still the current one.
    fn clear(&self, conn: &quinn::Connection) -> bool {
        // The status lock is held across the swap so status and connection never disagree.
        let mut status = self.status.lock().ok();
        let cleared = self.conn.send_if_modified(|c| {
            if c.as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                *c = None;
                true
            } else {
                false
            }
        });
        if cleared {
            if let Some(s) = status.as_mut() {
                s.connected_since = None;
                s.connection_id = None;
            }
        }
        cleared
    }
}

/// Every configured peer's connection slot.
pub(crate) struct PeerTable {
    own: NodeId,
    slots: BTreeMap<NodeId, Arc<PeerSlot>>,
}

impl PeerTable {
    pub(crate) fn new(own: NodeId, peers: &BTreeMap<NodeId, SocketAddr>) -> Self {
        let slots = peers
            .iter()
            .map(|(node, addr)| {
                (
                    node.clone(),
                    Arc::new(PeerSlot {
                        node: node.clone(),
                        addr: *addr,
                        conn: watch::channel(None).0,
                        status: Mutex::new(SlotStatus::default()),
                        wake: Notify::new(),
                    }),
                )
            })
            .collect();
        Self { own, slots }
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = &Arc<PeerSlot>> {
        self.slots.values()
    }

    /// The live connection to `peer`, waiting up to `wait` for one; `Err(wait)` on timeout.
    pub(crate) async fn wait_connection(
        &self,
        peer: &NodeId,
        wait: Duration,
    ) -> Result<quinn::Connection, Duration> {
        let slot = self.slots.get(peer).ok_or(Duration::ZERO)?;
        let mut rx = slot.conn.subscribe();
        let found = tokio::time::timeout(wait, async {
            rx.wait_for(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
                .await
                .ok()
                .and_then(|c| c.clone())
        })
        .await;
        match found {
            Ok(Some(c)) => Ok(c),
            _ => Err(wait),
        }
    }

    /// The current connection to `peer`, if live.
    pub(crate) fn connection(&self, peer: &NodeId) -> Option<quinn::Connection> {
        self.slots.get(peer).and_then(|s| s.current())
    }

    pub(crate) fn status(&self) -> Vec<PeerStatus> {
        self.slots
            .values()
            .map(|slot| {
                // Same lock order as install/clear: status, then connection.
                let s = slot.status.lock().ok();
                let conn = slot.current();
                PeerStatus {
                    node: slot.node.clone(),
                    address: slot.addr,
                    this_node_dials: self.own < slot.node,
                    connected: conn.is_some(),
                    connected_since: conn
                        .as_ref()
                        .and(s.as_ref().and_then(|s| s.connected_since)),
                    connection_id: conn
                        .as_ref()
                        .and(s.as_ref().and_then(|s| s.connection_id.clone())),
                    rtt: conn.as_ref().map(quinn::Connection::rtt),
                    last_error: s.as_ref().and_then(|s| s.last_error.clone()),
                    last_error_at: s.as_ref().and_then(|s| s.last_error_at),
                    reconnect_attempts: s.as_ref().map_or(0, |s| s.reconnect_attempts),
                    connections_established: s.as_ref().map_or(0, |s| s.connections_established),
                }
            })
            .collect()
    }

    /// Closes every connection (node shutdown).
    pub(crate) fn close_all(&self) {
        for slot in self.slots.values() {
            if let Some(c) = slot.conn.send_replace(None) {
                c.close(conn_codes::SHUTDOWN.into(), b"node shutting down");
            }
        }
    }
}

/// Everything the connection tasks share.
pub(crate) struct Net {
    pub(crate) own: NodeId,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) timing: Timing,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) requests: Arc<Requests>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net").field("own", &self.own).finish()
    }
}

/// The node id from a connection's verified peer certificate: the only source of a peer's id.
pub(crate) fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    match identity_of(certs.first()?).ok()?.subject {
        Subject::Node(n) => Some(n),
        Subject::Client(_) => None,
    }
}

fn connection_id(conn: &quinn::Connection) -> Option<String> {
    let mut out = [0u8; 8];
    conn.export_keying_material(&mut out, b"strongroom connection id", b"")
        .ok()?;
    Some(hex::encode(out))
}

/// Delay before retry number `attempt` (1-based): exponential from `initial`, capped at `max`,
/// uniformly jittered over its upper half so peers that failed together retry apart.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = initial.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    half + full
        .saturating_sub(half)
        .mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
}

/// Sends a ping on a fresh stream and waits for the pong: proves the peer holds the
/// connection and serves it.
pub(crate) async fn probe(conn: &quinn::Connection, timeout: Duration) -> Result<(), String> {
    let nonce: [u8; 8] = rand::random();
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut ping = vec![PING];
        ping.extend_from_slice(&nonce);
        send.write_all(&ping).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let pong = recv.read_to_end(16).await.map_err(|e| e.to_string())?;
        match pong.split_first() {
            Some((&PONG, rest)) if rest == nonce => Ok(()),
            _ => Err("peer answered the probe wrongly".to_owned()),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer to probe within {timeout:?}"))?
}

/// Serves one bidirectional stream a peer opened: its first byte says whether it is a probe or
/// a request.
async fn serve_bi(
    net: Arc<Net>,
    peer: NodeId,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let deadline = crate::rpc::deadline_after(net.timing.stream_header_timeout);
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, recv.read_exact(&mut first)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "bidirectional stream ended before its first byte");
            return;
        }
        Err(_) => {
            tracing::warn!(peer = %peer, "bidirectional stream did not say what it is in time");
            let _ = recv.stop(stream_codes::MALFORMED.into());
            let _ = send.reset(stream_codes::MALFORMED.into());
            return;
        }
    }
    match first {
        [PING] => answer_probe(send, recv).await,
        [RPC_REQUEST] => net.requests.serve(peer, send, recv, deadline, conn).await,
        [other] => {
            tracing::warn!(peer = %peer, first_byte = other, "bidirectional stream of unknown type");
            let _ = recv.stop(stream_codes::MALFORMED.into());
            let _ = send.reset(stream_codes::MALFORMED.into());
        }
    }
}

/// Answers a probe whose first byte ([`PING`]) was read: `PONG` and the nonce back.
async fn answer_probe(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    // The whole probe, PING byte included, is at most 16 bytes.
    let Ok(nonce) = recv.read_to_end(15).await else {
        return;
    };
    let mut pong = vec![PONG];
    pong.extend_from_slice(&nonce);
    if send.write_all(&pong).await.is_ok() {
        let _ = send.finish();
    }
}

async fn connect(net: &Net, slot: &PeerSlot) -> Result<quinn::Connection, String> {
    let connecting = net
        .endpoint
        .connect_with(net.client_config.clone(), slot.addr, slot.node.as_str())
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(net.timing.connect_timeout, connecting)
        .await
        .map_err(|_| {
            format!(
                "handshake not complete within {:?}",
                net.timing.connect_timeout
            )
        })?
        .map_err(|e| e.to_string())?;
    // The verifier already refused anyone else; this is the identity that counts.
    match peer_node_id(&conn) {
        Some(id) if id == slot.node => Ok(conn),
        other => {
            conn.close(conn_codes::REPLACED.into(), b"unexpected peer");
            Err(format!(
                "dialed '{}' but the connection names {other:?}",
                slot.node
            ))
        }
    }
}

fn install(net: &Arc<Net>, slot: &Arc<PeerSlot>, conn: quinn::Connection) {
    let id = connection_id(&conn);
    let old = {
        // The status lock is held across the swap so status and connection never disagree.
        let mut status = slot.status.lock().ok();
        let old = slot.conn.send_replace(Some(conn.clone()));
        if let Some(s) = status.as_mut() {
            s.connected_since = Some(SystemTime::now());
            s.connection_id = id.clone();
            s.reconnect_attempts = 0;
            s.connections_established += 1;
        }
        old
    };
    if let Some(old) = old {
        if old.stable_id() != conn.stable_id() {
            old.close(
                conn_codes::REPLACED.into(),
                b"replaced by a newer connection",
            );
        }
    }
    tracing::info!(
        peer = %slot.node, address = %conn.remote_address(),
        connection = id.as_deref().unwrap_or("?"), "peer connected"
    );
    tokio::spawn(drive(net.clone(), slot.clone(), conn));
}

/// Serves one connection's incoming streams until it closes, then forgets it.
async fn drive(net: Arc<Net>, slot: Arc<PeerSlot>, conn: quinn::Connection) {
    let reason = loop {
        tokio::select! {
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    tokio::spawn(net.registry.clone().serve_stream(slot.node.clone(), recv));
                }
                Err(e) => break e,
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    tokio::spawn(serve_bi(net.clone(), slot.node.clone(), conn.clone(), send, recv));
                }
                Err(e) => break e,
            },
        }
    };
    if slot.clear(&conn) {
        let expected = matches!(&reason, quinn::ConnectionError::LocallyClosed);
        if expected {
            tracing::debug!(peer = %slot.node, "connection closed locally");
        } else {
            tracing::warn!(peer = %slot.node, reason = %reason, "peer connection lost");
            slot.record_error(&reason.to_string(), None);
        }
    }
}

/// Accepts inbound connections: lower peers' dials are kept, higher peers' knocks answered.
pub(crate) async fn accept_loop(net: Arc<Net>) {
    while let Some(incoming) = net.endpoint.accept().await {
        let net = net.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(net.timing.connect_timeout, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    // Certificate refusals were logged by the verifier with their reason.
                    tracing::debug!(%remote, error = %e, "inbound handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "inbound handshake timed out");
                    return;
                }
            };
            let Some(peer) = peer_node_id(&conn) else {
                conn.close(conn_codes::REPLACED.into(), b"no node identity");
                return;
            };
            let Some(slot) = net.peers.slots.get(&peer).cloned() else {
                conn.close(conn_codes::REPLACED.into(), b"not a member");
                return;
            };
            if net.own < peer {
                tracing::debug!(peer = %peer, %remote, "peer knocked; dialing it");
                conn.close(conn_codes::KNOCK.into(), b"dialing you");
                slot.wake.notify_one();
            } else {
                install(&net, &slot, conn);
            }
        });
    }
}

/// Keeps the connection to a higher peer up (this node dials).
pub(crate) async fn dial_loop(net: Arc<Net>, slot: Arc<PeerSlot>) {
    let mut rx = slot.conn.subscribe();
    loop {
        // Wait until a connection is needed.
        loop {
            let current = rx.borrow_and_update().clone();
            let Some(conn) = current.filter(|c| c.close_reason().is_none()) else {
                break;
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = slot.wake.notified() => {
                    // The peer knocked although a connection is up: it may have restarted.
                    if let Err(e) = probe(&conn, net.timing.probe_timeout).await {
                        tracing::info!(peer = %slot.node, error = %e, "knocking peer does not answer on the old connection; redialing");
                        conn.close(conn_codes::REPLACED.into(), b"unresponsive");
                        slot.clear(&conn);
                        break;
                    }
                }
            }
        }
        // Dial until connected.
        let mut attempt = 0u32;
        loop {
            let result = match connect(&net, &slot).await {
                Ok(conn) => match probe(&conn, net.timing.probe_timeout).await {
                    Ok(()) => Ok(conn),
                    Err(e) => {
                        // A refused client certificate surfaces here: the server closes after
                        // the handshake looked complete to this side.
                        let e = conn.close_reason().map_or(e, |r| r.to_string());
                        conn.close(conn_codes::REPLACED.into(), b"probe failed");
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(conn) => {
                    install(&net, &slot, conn);
                    break;
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    if attempt == 1 {
                        tracing::warn!(peer = %slot.node, address = %slot.addr, error = %e, "cannot connect to peer; retrying");
                    } else {
                        tracing::debug!(peer = %slot.node, attempt, error = %e, "cannot connect to peer");
                    }
                    slot.record_error(&e, Some(attempt));
                    let delay =
                        backoff(attempt, net.timing.backoff_initial, net.timing.backoff_max);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = slot.wake.notified() => attempt = 0,
                    }
                }
            }
        }
    }
}

/// Asks a lower peer to dial this node whenever there is no connection from it.
pub(crate) async fn knock_loop(net: Arc<Net>, slot: Arc<PeerSlot>) {
    let mut rx = slot.conn.subscribe();
    loop {
        // Wait until there is no live connection.
        loop {
            let live = rx
                .borrow_and_update()
                .as_ref()
                .is_some_and(|c| c.close_reason().is_none());
            if !live {
                break;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            match connect(&net, &slot).await {
                Ok(conn) => {
                    // The peer closes a knock at once; give it a moment, then let go.
                    let _ = tokio::time::timeout(net.timing.probe_timeout, conn.closed()).await;
                    conn.close(conn_codes::KNOCK.into(), b"knock");
                }
                Err(e) => {
                    if attempt == 1 {
                        tracing::warn!(peer = %slot.node, address = %slot.addr, error = %e, "cannot reach peer; retrying");
                    } else {
                        tracing::debug!(peer = %slot.node, attempt, error = %e, "cannot reach peer");
                    }
                    slot.record_error(&e, Some(attempt));
                }
            }
            let delay = backoff(attempt, net.timing.backoff_initial, net.timing.backoff_max);
            let connected = tokio::time::timeout(
                delay,
                rx.wait_for(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none())),
            )
            .await;
            if matches!(connected, Ok(Ok(_))) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..40 {
            let d = backoff(attempt, initial, max);
            let full = initial.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        let samples: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(5, initial, max)).collect();
        assert!(samples.len() > 1, "jitter");
    }
}
