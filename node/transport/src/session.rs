//! Protocol sessions multiplexed over the peer connections.
//!
//! A session is a 32-byte id chosen by its initiator, a protocol kind and an ordered participant
//! list. Each node joins it with [`crate::Node::join`]; a session id this node has seen before
//! is refused. Messages of a session travel on their own unidirectional QUIC streams, one per
//! (session, sender, receiver), and are routed by the session id in the stream's first frame,
//! so any number of sessions run at once without their messages mixing.
//!
//! The sender of every message is the authenticated peer of the connection its stream arrived
//! on, turned into its index in the participant list; a peer that is not a participant is
//! refused. Messages for a session this node has not joined yet wait in a bounded buffer for a
//! short time, then are dropped with a log line. A malformed or oversized frame aborts that
//! session only, naming the peer that sent it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::conn::{PeerTable, stream_codes};
use crate::events::{Events, StreamRefusal, TransportEvent};
use crate::frame::{
    Frame, FrameDecoder, FrameError, LEN_PREFIX, MESSAGE_HEADER, MessageKind, StreamOpen,
    encode_message, encode_open,
};
use crate::ids::NodeId;
use crate::node::Limits;

/// A session id: 32 bytes chosen by the session's initiator, never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (what goes into the cggmp `ExecutionId`).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", hex::encode(self.0))
    }
}

/// Which protocol a session runs; both ends of a stream must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolKind {
    /// Threshold key generation.
    Keygen,
    /// Auxiliary information (Paillier keys, ring-Pedersen parameters).
    AuxInfo,
    /// Presignature generation.
    Presign,
    /// Interactive signing.
    Sign,
    /// Exchange of policy votes.
    VoteExchange,
    /// Transport benchmark and diagnostics traffic.
    Benchmark,
}

impl ProtocolKind {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            ProtocolKind::Keygen => 1,
            ProtocolKind::AuxInfo => 2,
            ProtocolKind::Presign => 3,
            ProtocolKind::Sign => 4,
            ProtocolKind::VoteExchange => 5,
            ProtocolKind::Benchmark => 6,
        }
    }

    /// The kind with this wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => ProtocolKind::Keygen,
            2 => ProtocolKind::AuxInfo,
            3 => ProtocolKind::Presign,
            4 => ProtocolKind::Sign,
            5 => ProtocolKind::VoteExchange,
            6 => ProtocolKind::Benchmark,
            _ => return None,
        })
    }
}

/// What a session is: every participant joins with the same spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// The session id.
    pub id: SessionId,
    /// The protocol it runs.
    pub protocol: ProtocolKind,
    /// The participants in protocol order: a participant's position is its party index.
    pub participants: Vec<NodeId>,
}

/// A session-id store failed (storage backend at fault).
#[derive(Debug, thiserror::Error)]
#[error("session id store: {0}")]
pub struct SessionIdStoreError(pub Box<dyn std::error::Error + Send + Sync>);

/// Where the ids of every session this node has joined are recorded, so none is joined twice.
/// The in-memory store forgets on restart; a durable store keeps them across restarts.
pub trait SessionIdStore: Send + Sync {
    /// Records `id`; `Ok(false)` if it was recorded before.
    fn record_new<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> Pin<Box<dyn Future<Output = Result<bool, SessionIdStoreError>> + Send + 'a>>;
}

/// A [`SessionIdStore`] in memory.
#[derive(Debug, Default)]
pub struct InMemorySessionIds {
    seen: Mutex<HashSet<SessionId>>,
}

impl SessionIdStore for InMemorySessionIds {
    fn record_new<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> Pin<Box<dyn Future<Output = Result<bool, SessionIdStoreError>> + Send + 'a>> {
        let result = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(*id))
            .map_err(|_| SessionIdStoreError("session id set poisoned by a panic".into()));
        Box::pin(std::future::ready(result))
    }
}

/// How a peer broke the rules of a session (the peer is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misbehavior {
    /// A frame that breaks the wire format, or exceeds the size limit.
    #[error("{0}")]
    Frame(FrameError),
    /// A message body that does not decode as the protocol's message type.
    #[error("undecodable message: {0}")]
    UndecodableBody(String),
    /// The stream names another protocol than the session runs.
    #[error("stream is for protocol {found:?}, the session runs {expected:?}")]
    ProtocolMismatch {
        /// What the session runs.
        expected: ProtocolKind,
        /// What the stream claimed.
        found: ProtocolKind,
    },
}

/// Why a session ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A participant sent something that breaks the rules; it is the culprit.
    #[error("peer '{peer}' misbehaved: {reason}")]
    PeerMisbehaved {
        /// The culprit (the authenticated sender).
        peer: NodeId,
        /// What it did.
        reason: Misbehavior,
    },
    /// A participant aborted the session on its side.
    #[error("peer '{peer}' aborted the session")]
    PeerAborted {
        /// The participant that aborted.
        peer: NodeId,
    },
    /// The connection to a participant broke while the session was running (network).
    #[error("connection to '{peer}' lost: {reason}")]
    ConnectionLost {
        /// The participant.
        peer: NodeId,
        /// What the connection reported.
        reason: String,
    },
    /// No connection to a participant came up in time (network or peer down).
    #[error("no connection to '{peer}' within {waited:?}")]
    PeerUnreachable {
        /// The participant.
        peer: NodeId,
        /// How long this node waited.
        waited: Duration,
    },
    /// Writing to a participant failed (network, or the peer stopped the stream).
    #[error("sending to '{peer}' failed: {reason}")]
    SendFailed {
        /// The participant.
        peer: NodeId,
        /// What failed.
        reason: String,
    },
    /// A participant's messages overflowed the buffer for sessions not yet joined, and some
    /// were dropped (the peer sent too much too early, or this node joined too late).
    #[error("messages from '{peer}' were dropped: the pre-join buffer was full")]
    BufferOverflow {
        /// The participant.
        peer: NodeId,
    },
    /// Messages arrived long before this node joined and were dropped (this node joined late).
    #[error("messages from {peers:?} arrived too long before this node joined and were dropped")]
    MessagesExpired {
        /// Who sent them.
        peers: Vec<NodeId>,
    },
    /// This node is shutting down.
    #[error("the node is shutting down")]
    NodeStopped,
}

impl SessionError {
    /// The peer at fault, when a peer is at fault.
    pub fn culprit(&self) -> Option<&NodeId> {
        match self {
            SessionError::PeerMisbehaved { peer, .. } => Some(peer),
            _ => None,
        }
    }
}

/// Joining a session failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The session id was used before (the initiator reused it, or a replay).
    #[error("session id {0} was used before")]
    SessionIdReused(SessionId),
    /// This node is not in the participant list (caller).
    #[error("this node is not a participant of the session")]
    NotAParticipant,
    /// A node appears twice in the participant list (caller).
    #[error("node '{0}' appears twice in the participant list")]
    DuplicateParticipant(NodeId),
    /// A participant is not a member of this node's cluster configuration (caller).
    #[error("participant '{0}' is not a configured member")]
    UnknownParticipant(NodeId),
    /// Fewer than two or more than 65535 participants (caller).
    #[error("a session needs 2 to 65535 participants, got {0}")]
    ParticipantCount(usize),
    /// The session id store failed (storage).
    #[error(transparent)]
    Store(#[from] SessionIdStoreError),
    /// Internal state was poisoned by an earlier panic (bug).
    #[error("session registry unavailable after an internal panic")]
    Poisoned,
}

/// Sending a message failed; the caller is at fault unless the session was aborted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The recipient index is out of range, or is this node's own index.
    #[error("invalid recipient index {0}")]
    InvalidRecipient(u16),
    /// The encoded message exceeds the frame size limit.
    #[error("message of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The message could not be encoded (bug in the message type).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The session was aborted.
    #[error("session aborted: {0}")]
    Aborted(SessionError),
}

/// One message received in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The sender's index in the participant list (from its authenticated connection).
    pub sender: u16,
    /// The sender's node id.
    pub peer: NodeId,
    /// How it was sent.
    pub kind: MessageKind,
    /// The message body (CBOR).
    pub body: Vec<u8>,
}

/// State of a joined session shared by the registry, the stream readers and the writers.
pub(crate) struct Shared {
    spec: SessionSpec,
    my_index: u16,
    inbound: mpsc::Sender<Queued>,
    /// Bytes of message bodies queued for the protocol, bounded per session.
    queue_bytes: Arc<Semaphore>,
    failure_tx: mpsc::UnboundedSender<SessionError>,
    failed: AtomicBool,
    first_error: Mutex<Option<SessionError>>,
    aborted_tx: watch::Sender<bool>,
    events: Arc<Events>,
}

impl Shared {
    fn index_of(&self, peer: &NodeId) -> Option<u16> {
        self.spec
            .participants
            .iter()
            .position(|p| p == peer)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Aborts the session once: the local protocol sees `error`, peers see their streams reset.
    pub(crate) fn abort(&self, error: SessionError) {
        if self.failed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut first) = self.first_error.lock() {
            *first = Some(error.clone());
        }
        match error.culprit() {
            Some(culprit) => tracing::warn!(
                session = %self.spec.id, culprit = %culprit, error = %error,
                "session aborted: peer misbehaved"
            ),
            None => tracing::warn!(session = %self.spec.id, error = %error, "session aborted"),
        }
        self.events.publish(TransportEvent::SessionAborted {
            session: self.spec.id,
            error: error.clone(),
        });
        let _ = self.failure_tx.send(error);
        self.aborted_tx.send_replace(true);
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn error(&self) -> SessionError {
        self.first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or(SessionError::NodeStopped)
    }
}

/// A message queued for the protocol, holding its share of the session's byte budget until
/// the protocol takes it (messages moved in from the pre-join buffer hold none: that buffer
/// has its own bound).
struct Queued {
    msg: InboundMessage,
    _budget: Option<OwnedSemaphorePermit>,
}

struct PendingItem {
    peer: NodeId,
    protocol: ProtocolKind,
    kind: MessageKind,
    body: Vec<u8>,
}

struct Pending {
    since: Instant,
    items: Vec<PendingItem>,
    bytes: usize,
    poisoned: Option<SessionError>,
}

/// A bounded set of recently seen ids, oldest forgotten first.
struct RecentIds<V> {
    map: HashMap<SessionId, V>,
    order: VecDeque<SessionId>,
    cap: usize,
}

impl<V> RecentIds<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, id: SessionId, v: V) {
        if self.map.insert(id, v).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

struct State {
    sessions: HashMap<SessionId, Arc<Shared>>,
    pending: HashMap<SessionId, Pending>,
    pending_bytes: usize,
    finished: RecentIds<()>,
    expired: RecentIds<Vec<NodeId>>,
}

/// Routes incoming session streams to joined sessions and buffers the others.
pub(crate) struct Registry {
    own: NodeId,
    members: HashSet<NodeId>,
    limits: Limits,
    send_wait: Duration,
    header_timeout: Duration,
    state: Mutex<State>,
    ids: Arc<dyn SessionIdStore>,
    peers: Arc<PeerTable>,
    events: Arc<Events>,
}

/// Most bytes read from a stream at once (no per-stream buffer is kept between reads).
const READ_CHUNK: usize = 64 * 1024;

/// How many ended or expired session ids the registry remembers for clear late-message logs.
const RECENT_IDS: usize = 65_536;

enum Routed {
    Deliver(mpsc::Sender<Queued>, Arc<Semaphore>, InboundMessage),
    Buffered,
    Stop(u32),
}

impl Registry {
    // Crate-internal constructor called once, by `Node::start`; a parameter struct would only
    // repeat these names.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        own: NodeId,
        members: HashSet<NodeId>,
        limits: Limits,
        send_wait: Duration,
        header_timeout: Duration,
        ids: Arc<dyn SessionIdStore>,
        peers: Arc<PeerTable>,
        events: Arc<Events>,
    ) -> Self {
        Self {
            own,
            members,
            limits,
            send_wait,
            header_timeout,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                pending: HashMap::new(),
                pending_bytes: 0,
                finished: RecentIds::new(RECENT_IDS),
                expired: RecentIds::new(RECENT_IDS),
            }),
            ids,
            peers,
            events,
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        // A poisoned lock means a panic elsewhere; refusing further work is the safe answer.
        self.state.lock().ok()
    }

    fn refuse(&self, peer: &NodeId, session: SessionId, reason: StreamRefusal) {
        match reason {
            StreamRefusal::SessionFinished => tracing::debug!(
                peer = %peer, session = %session, "late message for a finished session dropped"
            ),
            _ => tracing::warn!(
                peer = %peer, session = %session, reason = ?reason, "session stream refused"
            ),
        }
        self.events.publish(TransportEvent::StreamRefused {
            peer: peer.clone(),
            session,
            reason,
        });
    }

    /// Joins a session: checks the spec, records the id, takes over buffered messages.
    pub(crate) async fn join(self: &Arc<Self>, spec: SessionSpec) -> Result<Session, JoinError> {
        let n = spec.participants.len();
        if !(2..=usize::from(u16::MAX)).contains(&n) {
            return Err(JoinError::ParticipantCount(n));
        }
        let mut unique = HashSet::new();
        for p in &spec.participants {
            if !unique.insert(p) {
                return Err(JoinError::DuplicateParticipant(p.clone()));
            }
            if *p != self.own && !self.members.contains(p) {
                return Err(JoinError::UnknownParticipant(p.clone()));
            }
        }
        let my_index = spec
            .participants
            .iter()
            .position(|p| *p == self.own)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or(JoinError::NotAParticipant)?;
        if !self.ids.record_new(&spec.id).await? {
            tracing::warn!(session = %spec.id, "refused to join a session id used before");
            return Err(JoinError::SessionIdReused(spec.id));
        }

        // Room for the whole pre-join buffer, so moving it in never blocks.
        let (inbound, rx) = mpsc::channel(
            self.limits
                .session_queue
                .max(self.limits.pending_max_messages)
                + 1,
        );
        let budget = u32::try_from(self.limits.session_queue_bytes)
            .unwrap_or(u32::MAX)
            .max(1);
        let (failure_tx, failure_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            spec,
            my_index,
            inbound,
            queue_bytes: Arc::new(Semaphore::new(budget as usize)),
            failure_tx,
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
            aborted_tx: watch::channel(false).0,
            events: self.events.clone(),
        });
        let id = shared.spec.id;
        {
            let mut st = self.lock().ok_or(JoinError::Poisoned)?;
            if st.sessions.contains_key(&id) || st.finished.map.contains_key(&id) {
                return Err(JoinError::SessionIdReused(id));
            }
            if let Some(peers) = st.expired.map.remove(&id) {
                shared.abort(SessionError::MessagesExpired { peers });
            }
            if let Some(pending) = st.pending.remove(&id) {
                st.pending_bytes = st.pending_bytes.saturating_sub(pending.bytes);
                self.adopt(&shared, pending);
            }
            st.sessions.insert(id, shared.clone());
        }
        tracing::debug!(session = %id, protocol = ?shared.spec.protocol, index = my_index, "joined session");
        let guard = Arc::new(Guard {
            registry: self.clone(),
            shared: shared.clone(),
        });
        Ok(Session {
            receiver: SessionReceiver {
                guard: guard.clone(),
                rx,
                failure_rx,
                ended: false,
            },
            sender: SessionSender {
                guard,
                writers: HashMap::new(),
            },
        })
    }

    /// Moves buffered messages into a freshly joined session, in arrival order.
    fn adopt(&self, shared: &Arc<Shared>, pending: Pending) {
        for item in pending.items {
            let Some(sender) = shared.index_of(&item.peer) else {
                self.refuse(&item.peer, shared.spec.id, StreamRefusal::NotAParticipant);
                continue;
            };
            if item.protocol != shared.spec.protocol {
                shared.abort(SessionError::PeerMisbehaved {
                    peer: item.peer,
                    reason: Misbehavior::ProtocolMismatch {
                        expected: shared.spec.protocol,
                        found: item.protocol,
                    },
                });
                return;
            }
            let msg = InboundMessage {
                sender,
                peer: item.peer,
                kind: item.kind,
                body: item.body,
            };
            if shared
                .inbound
                .try_send(Queued { msg, _budget: None })
                .is_err()
            {
                // Cannot happen: the channel has room for the whole buffer.
                shared.abort(SessionError::NodeStopped);
                return;
            }
        }
        if let Some(err) = pending.poisoned {
            shared.abort(err);
        }
    }

    fn route(&self, peer: &NodeId, open: &StreamOpen, kind: MessageKind, body: Vec<u8>) -> Routed {
        let Some(mut st) = self.lock() else {
            return Routed::Stop(stream_codes::REFUSED);
        };
        let id = open.session;
        if let Some(shared) = st.sessions.get(&id) {
            let Some(sender) = shared.index_of(peer) else {
                drop(st);
                self.refuse(peer, id, StreamRefusal::NotAParticipant);
                return Routed::Stop(stream_codes::REFUSED);
            };
            if shared.is_failed() {
                return Routed::Stop(stream_codes::ABORTED);
            }
            if open.protocol != shared.spec.protocol {
                shared.abort(SessionError::PeerMisbehaved {
                    peer: peer.clone(),
                    reason: Misbehavior::ProtocolMismatch {
                        expected: shared.spec.protocol,
                        found: open.protocol,
                    },
                });
                return Routed::Stop(stream_codes::MALFORMED);
            }
            let msg = InboundMessage {
                sender,
                peer: peer.clone(),
                kind,
                body,
            };
            return Routed::Deliver(shared.inbound.clone(), shared.queue_bytes.clone(), msg);
        }
        if st.finished.map.contains_key(&id) {
            drop(st);
            self.refuse(peer, id, StreamRefusal::SessionFinished);
            return Routed::Stop(stream_codes::REFUSED);
        }
        if st.expired.map.contains_key(&id) {
            drop(st);
            self.refuse(peer, id, StreamRefusal::SessionExpired);
            return Routed::Stop(stream_codes::REFUSED);
        }
        let size = body.len();
        let total_after = st.pending_bytes.saturating_add(size);
        let sessions_full =
            !st.pending.contains_key(&id) && st.pending.len() >= self.limits.pending_max_sessions;
        if sessions_full {
            drop(st);
            self.refuse(peer, id, StreamRefusal::BufferFull);
            return Routed::Stop(stream_codes::REFUSED);
        }
        let max_messages = self.limits.pending_max_messages;
        let max_bytes = self.limits.pending_max_bytes;
        let entry = st.pending.entry(id).or_insert_with(|| Pending {
            since: Instant::now(),
            items: Vec::new(),
            bytes: 0,
            poisoned: None,
        });
        if entry.items.len() >= max_messages || total_after > max_bytes {
            if entry.poisoned.is_none() {
                entry.poisoned = Some(SessionError::BufferOverflow { peer: peer.clone() });
            }
            drop(st);
            self.refuse(peer, id, StreamRefusal::BufferFull);
            return Routed::Stop(stream_codes::REFUSED);
        }
        entry.bytes += size;
        entry.items.push(PendingItem {
            peer: peer.clone(),
            protocol: open.protocol,
            kind,
            body,
        });
        st.pending_bytes = total_after;
        Routed::Buffered
    }

    /// A peer broke a session's stream: abort the session (or poison its buffer), blame the peer.
    fn stream_failed(&self, peer: &NodeId, session: SessionId, error: SessionError) {
        let Some(mut st) = self.lock() else { return };
        if let Some(shared) = st.sessions.get(&session) {
            let shared = shared.clone();
            drop(st);
            shared.abort(error);
        } else if let Some(pending) = st.pending.get_mut(&session) {
            tracing::warn!(peer = %peer, session = %session, error = %error, "stream for a session not yet joined failed");
            if pending.poisoned.is_none() {
                pending.poisoned = Some(error);
            }
        } else if !st.finished.map.contains_key(&session)
            && st.pending.len() < self.limits.pending_max_sessions
        {
            tracing::warn!(peer = %peer, session = %session, error = %error, "stream for a session not yet joined failed");
            st.pending.insert(
                session,
                Pending {
                    since: Instant::now(),
                    items: Vec::new(),
                    bytes: 0,
                    poisoned: Some(error),
                },
            );
        }
    }

    /// Drops buffered messages older than the configured time; called periodically.
    pub(crate) fn expire_pending(&self) {
        let ttl = self.limits.pending_ttl;
        let Some(mut st) = self.lock() else { return };
        let now = Instant::now();
        let old: Vec<SessionId> = st
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= ttl)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            let Some(p) = st.pending.remove(&id) else {
                continue;
            };
            st.pending_bytes = st.pending_bytes.saturating_sub(p.bytes);
            let mut peers: Vec<NodeId> = p.items.iter().map(|i| i.peer.clone()).collect();
            peers.sort();
            peers.dedup();
            let messages = p.items.len();
            tracing::warn!(
                session = %id, peers = ?peers.iter().map(NodeId::as_str).collect::<Vec<_>>(), messages,
                "dropped messages for a session this node did not join in time"
            );
            st.expired.insert(id, peers.clone());
            self.events.publish(TransportEvent::PendingExpired {
                session: id,
                peers,
                messages,
            });
        }
    }

    /// Aborts every joined session (node shutdown).
    pub(crate) fn abort_all(&self) {
        let sessions: Vec<Arc<Shared>> = match self.lock() {
            Some(st) => st.sessions.values().cloned().collect(),
            None => return,
        };
        for s in sessions {
            s.abort(SessionError::NodeStopped);
        }
    }

    fn finish(&self, id: SessionId) {
        if let Some(mut st) = self.lock() {
            st.sessions.remove(&id);
            st.finished.insert(id, ());
        }
    }

    /// Serves one session stream a peer opened towards this node.
    pub(crate) async fn serve_stream(self: Arc<Self>, peer: NodeId, mut recv: quinn::RecvStream) {
        let mut decoder = FrameDecoder::new(self.limits.max_frame_bytes);
        let mut open: Option<StreamOpen> = None;
        let started = Instant::now();
        loop {
            // Drain every complete frame before reading more.
            loop {
                match decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(Frame::Open(o))) => open = Some(o),
                    Ok(Some(Frame::Message { kind, body })) => {
                        let Some(o) = open else { return };
                        match self.route(&peer, &o, kind, body) {
                            Routed::Buffered => {}
                            Routed::Deliver(tx, budget, msg) => {
                                // Backpressure: wait for the protocol to consume earlier
                                // messages before taking more than the session's byte budget.
                                let want = u32::try_from(msg.body.len().max(1))
                                    .unwrap_or(u32::MAX)
                                    .min(self.session_budget());
                                let Ok(permit) = budget.acquire_many_owned(want).await else {
                                    let _ = recv.stop(stream_codes::REFUSED.into());
                                    return;
                                };
                                if tx
                                    .send(Queued {
                                        msg,
                                        _budget: Some(permit),
                                    })
                                    .await
                                    .is_err()
                                {
                                    let _ = recv.stop(stream_codes::REFUSED.into());
                                    return;
                                }
                            }
                            Routed::Stop(code) => {
                                let _ = recv.stop(code.into());
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        self.malformed(&peer, open.as_ref(), e);
                        let _ = recv.stop(stream_codes::MALFORMED.into());
                        return;
                    }
                }
            }
            let read = if open.is_none() {
                // A stream must name its session promptly.
                let left = self.header_timeout.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, recv.read_chunk(READ_CHUNK, true)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(peer = %peer, "session stream did not name its session in time");
                        let _ = recv.stop(stream_codes::MALFORMED.into());
                        return;
                    }
                }
            } else {
                recv.read_chunk(READ_CHUNK, true).await
            };
            match read {
                Ok(Some(chunk)) => decoder.feed(&chunk.bytes),
                Ok(None) => {
                    if let Err(e) = decoder.finish() {
                        self.malformed(&peer, open.as_ref(), e);
                    }
                    return;
                }
                Err(quinn::ReadError::Reset(code)) => {
                    if let Some(o) = open {
                        let error = if code.into_inner() == u64::from(stream_codes::ABORTED) {
                            SessionError::PeerAborted { peer: peer.clone() }
                        } else {
                            SessionError::SendFailed {
                                peer: peer.clone(),
                                reason: format!("peer reset its stream with code {code}"),
                            }
                        };
                        self.stream_failed(&peer, o.session, error);
                    }
                    return;
                }
                Err(e) => {
                    if let Some(o) = open {
                        self.stream_failed(
                            &peer,
                            o.session,
                            SessionError::ConnectionLost {
                                peer: peer.clone(),
                                reason: e.to_string(),
                            },
                        );
                    }
                    return;
                }
            }
        }
    }

    fn session_budget(&self) -> u32 {
        u32::try_from(self.limits.session_queue_bytes)
            .unwrap_or(u32::MAX)
            .max(1)
    }

    fn malformed(&self, peer: &NodeId, open: Option<&StreamOpen>, error: FrameError) {
        match open {
            Some(o) => self.stream_failed(
                peer,
                o.session,
                SessionError::PeerMisbehaved {
                    peer: peer.clone(),
                    reason: Misbehavior::Frame(error),
                },
            ),
            None => tracing::warn!(
                peer = %peer, error = %error,
                "peer misbehaved: malformed session stream header"
            ),
        }
    }
}

/// Removes the session from the registry once both halves are gone.
struct Guard {
    registry: Arc<Registry>,
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.registry.finish(self.shared.spec.id);
    }
}

/// A joined session. Split it into its receiving and sending halves, or hand it to
/// [`crate::delivery::delivery`] for a `round-based` protocol.
pub struct Session {
    receiver: SessionReceiver,
    sender: SessionSender,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("spec", self.spec())
            .field("my_index", &self.my_index())
            .finish()
    }
}

impl Session {
    /// The session's spec.
    pub fn spec(&self) -> &SessionSpec {
        &self.receiver.guard.shared.spec
    }

    /// This node's party index (its position in the participant list).
    pub fn my_index(&self) -> u16 {
        self.receiver.guard.shared.my_index
    }

    /// The receiving and sending halves.
    pub fn split(self) -> (SessionReceiver, SessionSender) {
        (self.receiver, self.sender)
    }
}

/// The receiving half of a session.
pub struct SessionReceiver {
    guard: Arc<Guard>,
    rx: mpsc::Receiver<Queued>,
    failure_rx: mpsc::UnboundedReceiver<SessionError>,
    ended: bool,
}

impl fmt::Debug for SessionReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionReceiver")
            .field("session", &self.guard.shared.spec.id)
            .finish()
    }
}

impl SessionReceiver {
    /// The session's spec.
    pub fn spec(&self) -> &SessionSpec {
        &self.guard.shared.spec
    }

    /// The next message, or the error that ended the session (after which `None`).
    pub async fn recv(&mut self) -> Option<Result<InboundMessage, SessionError>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll form of [`SessionReceiver::recv`].
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<InboundMessage, SessionError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(Some(err)) = self.failure_rx.poll_recv(cx) {
            self.ended = true;
            return Poll::Ready(Some(Err(err)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(q)) => Poll::Ready(Some(Ok(q.msg))),
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Aborts the session because `peer` sent something the protocol cannot use.
    pub fn abort_misbehaved(&self, peer: NodeId, reason: Misbehavior) {
        self.guard
            .shared
            .abort(SessionError::PeerMisbehaved { peer, reason });
    }
}

/// The sending half of a session. Messages to one peer are delivered in order; sending
/// never blocks (each peer's stream is written by its own task).
pub struct SessionSender {
    guard: Arc<Guard>,
    writers: HashMap<u16, mpsc::UnboundedSender<Arc<[u8]>>>,
}

impl fmt::Debug for SessionSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSender")
            .field("session", &self.guard.shared.spec.id)
            .finish()
    }
}

impl SessionSender {
    /// The session's spec.
    pub fn spec(&self) -> &SessionSpec {
        &self.guard.shared.spec
    }

    /// This node's party index.
    pub fn my_index(&self) -> u16 {
        self.guard.shared.my_index
    }

    /// Largest body this session can send.
    pub fn max_body(&self) -> usize {
        (self.guard.registry.limits.max_frame_bytes as usize).saturating_sub(MESSAGE_HEADER)
    }

    /// Sends `body` to every other participant.
    pub fn broadcast(&mut self, body: &[u8]) -> Result<(), SendError> {
        let frame = self.frame(MessageKind::Broadcast, body)?;
        let n = self.guard.shared.spec.participants.len();
        for i in 0..n {
            let Ok(i) = u16::try_from(i) else { break };
            if i != self.guard.shared.my_index {
                self.push(i, frame.clone())?;
            }
        }
        Ok(())
    }

    /// Sends `body` to participant `to` only.
    pub fn p2p(&mut self, to: u16, body: &[u8]) -> Result<(), SendError> {
        if to == self.guard.shared.my_index
            || usize::from(to) >= self.guard.shared.spec.participants.len()
        {
            return Err(SendError::InvalidRecipient(to));
        }
        let frame = self.frame(MessageKind::P2p, body)?;
        self.push(to, frame)
    }

    fn frame(&self, kind: MessageKind, body: &[u8]) -> Result<Arc<[u8]>, SendError> {
        if self.guard.shared.is_failed() {
            return Err(SendError::Aborted(self.guard.shared.error()));
        }
        let max = self.guard.registry.limits.max_frame_bytes;
        encode_message(kind, body, max)
            .map(Arc::from)
            .map_err(|_| SendError::TooLarge {
                len: body.len() + MESSAGE_HEADER + LEN_PREFIX,
                max,
            })
    }

    fn push(&mut self, to: u16, frame: Arc<[u8]>) -> Result<(), SendError> {
        let guard = &self.guard;
        let tx = self.writers.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            if let Some(peer) = guard.shared.spec.participants.get(usize::from(to)) {
                tokio::spawn(run_writer(
                    guard.registry.clone(),
                    guard.shared.clone(),
                    peer.clone(),
                    rx,
                ));
            }
            tx
        });
        // The writer only goes away after aborting the session, which the receiver reports.
        let _ = tx.send(frame);
        Ok(())
    }
}

async fn wait_aborted(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await point.
    let _ = rx.wait_for(|a| *a).await.map(|_| ());
}

/// Writes one (session, peer) stream: waits for the connection, opens the stream, names the
/// session, then writes frames in order until the session is done or aborted.
async fn run_writer(
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    peer: NodeId,
    mut rx: mpsc::UnboundedReceiver<Arc<[u8]>>,
) {
    let mut aborted = shared.aborted_tx.subscribe();
    let open = encode_open(&StreamOpen {
        session: shared.spec.id,
        protocol: shared.spec.protocol,
    });
    let result: Result<(), SessionError> = async {
        let conn = registry
            .peers
            .wait_connection(&peer, registry.send_wait)
            .await
            .map_err(|waited| SessionError::PeerUnreachable {
                peer: peer.clone(),
                waited,
            })?;
        let fail = |e: &dyn fmt::Display| SessionError::SendFailed {
            peer: peer.clone(),
            reason: e.to_string(),
        };
        let mut stream = conn.open_uni().await.map_err(|e| fail(&e))?;
        stream.write_all(&open).await.map_err(|e| fail(&e))?;
        loop {
            tokio::select! {
                biased;
                () = wait_aborted(&mut aborted) => {
                    let _ = stream.reset(stream_codes::ABORTED.into());
                    return Ok(());
                }
                item = rx.recv() => match item {
                    Some(frame) => stream.write_all(&frame).await.map_err(|e| fail(&e))?,
                    None => {
                        let _ = stream.finish();
                        return Ok(());
                    }
                },
            }
        }
    }
    .await;
    if let Err(error) = result {
        shared.abort(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_refuses_reuse() {
        let s = InMemorySessionIds::default();
        let id = SessionId::random();
        assert!(s.record_new(&id).await.unwrap());
        assert!(!s.record_new(&id).await.unwrap());
        assert!(s.record_new(&SessionId::random()).await.unwrap());
    }

    #[test]
    fn protocol_codes_round_trip() {
        for p in [
            ProtocolKind::Keygen,
            ProtocolKind::AuxInfo,
            ProtocolKind::Presign,
            ProtocolKind::Sign,
            ProtocolKind::VoteExchange,
            ProtocolKind::Benchmark,
        ] {
            assert_eq!(ProtocolKind::from_code(p.code()), Some(p));
        }
        assert_eq!(ProtocolKind::from_code(0), None);
    }
}
