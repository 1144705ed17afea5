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

/// Why this node answered a peer's request with a refusal (status 1) instead of passing it to,
/// or answering it from, the request handler (see [`crate::rpc`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestRefusal {
    /// Nobody took the request inbox ([`crate::Node::take_requests`]).
    NoHandler,
    /// The request inbox is full: the handler falls behind.
    InboxFull,
    /// The handler dropped the inbox receiver.
    HandlerGone,
    /// The request body exceeds this node's `max_request_bytes`.
    TooLarge {
        /// The announced body length.
        size: u64,
        /// The limit.
        limit: u32,
    },
    /// The handler dropped the request without answering it.
    Unanswered,
    /// The handler's answer exceeds `max_request_bytes`; it was not sent.
    AnswerTooLarge {
        /// The answer's length.
        size: u64,
        /// The limit.
        limit: u32,
    },
}

impl RequestRefusal {
    fn kind(&self) -> &'static str {
        match self {
            RequestRefusal::NoHandler => "request.no_handler",
            RequestRefusal::InboxFull => "request.inbox_full",
            RequestRefusal::HandlerGone => "request.handler_gone",
            RequestRefusal::TooLarge { .. } => "request.too_large",
            RequestRefusal::Unanswered => "request.unanswered",
            RequestRefusal::AnswerTooLarge { .. } => "request.answer_too_large",
        }
    }
}

/// The short text sent to the requester with the refusal.
impl std::fmt::Display for RequestRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestRefusal::NoHandler => f.write_str("no request handler installed"),
            RequestRefusal::InboxFull => f.write_str("request inbox full"),
            RequestRefusal::HandlerGone => f.write_str("request handler stopped"),
            RequestRefusal::TooLarge { size, limit } => {
                write!(
                    f,
                    "request of {size} bytes exceeds the limit of {limit} bytes"
                )
            }
            RequestRefusal::Unanswered => f.write_str("dropped without an answer"),
            RequestRefusal::AnswerTooLarge { size, limit } => {
                write!(
                    f,
                    "answer of {size} bytes exceeds the limit of {limit} bytes"
                )
            }
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
    /// A peer's request was answered with a refusal (see [`crate::rpc`]).
    RequestRefused {
        /// The authenticated requester.
        peer: NodeId,
        /// Why.
        reason: RequestRefusal,
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
            TransportEvent::RequestRefused { reason, .. } => reason.kind(),
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
