//! What the transport reports about refusals and aborts: every event is also logged where it
//! happens; this channel and its counters are for the API, metrics and tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::ids::NodeId;
use crate::session::{SessionError, SessionId};
use crate::verify::Refusal;

/// Capacity of the event channel; a subscriber that falls further behind misses events
/// (the counters still count them).
const CHANNEL_CAPACITY: usize = 1024;

/// Why a message stream from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The peer is not in the session's participant list.
    NotAParticipant,
    /// The session already ended on this node.
    SessionFinished,
    /// The session was aborted on this node.
    SessionAborted,
    /// The session's messages arrived too long before this node joined and were dropped.
    SessionExpired,
    /// The pre-join buffer is full.
    BufferFull,
}

impl StreamRefusal {
    fn kind(&self) -> &'static str {
        match self {
            StreamRefusal::NotAParticipant => "stream.not_a_participant",
            StreamRefusal::SessionFinished => "stream.session_finished",
            StreamRefusal::SessionAborted => "stream.session_aborted",
            StreamRefusal::SessionExpired => "stream.session_expired",
            StreamRefusal::BufferFull => "stream.buffer_full",
        }
    }
}

/// One thing the transport refused, dropped or aborted.
#[derive(Debug, Clone)]
pub enum TransportEvent {
    /// A TLS handshake was refused by this node's certificate checks.
    HandshakeRefused(Refusal),
    /// A peer's message stream for a session was refused.
    StreamRefused {
        /// The authenticated sender.
        peer: NodeId,
        /// The session the stream named.
        session: SessionId,
        /// Why.
        reason: StreamRefusal,
    },
    /// Messages for a session this node had not joined waited too long and were dropped.
    PendingExpired {
        /// The session.
        session: SessionId,
        /// Who sent them.
        peers: Vec<NodeId>,
        /// How many messages were dropped.
        messages: usize,
    },
    /// A session was aborted; `error` names the culprit when a peer is at fault.
    SessionAborted {
        /// The session.
        session: SessionId,
        /// Why.
        error: SessionError,
    },
}

impl TransportEvent {
    /// Stable short name, for counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportEvent::HandshakeRefused(r) => r.reason.kind(),
            TransportEvent::StreamRefused { reason, .. } => reason.kind(),
            TransportEvent::PendingExpired { .. } => "pending.expired",
            TransportEvent::SessionAborted { .. } => "session.aborted",
        }
    }
}

/// The event channel and per-kind counters of one node.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<TransportEvent>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty event log.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts and broadcasts `event`.
    pub fn publish(&self, event: TransportEvent) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(event.kind()).or_default() += 1;
        }
        // No subscriber is fine: the counters and the log line already have it.
        let _ = self.tx.send(event);
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TransportEvent> {
        self.tx.subscribe()
    }

    /// How many events of `kind` (see [`TransportEvent::kind`]) were published.
    pub fn count(&self, kind: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// All counters.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
