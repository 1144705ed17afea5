//! QUIC transport between nodes with mTLS identities from the cluster CA, and the multiplexed
//! protocol session layer.
//!
//! # Contract
//!
//! - **Identity.** A peer is who its certificate says, and nothing else: the certificate must
//!   chain to the cluster CA (the only trust anchor), be valid now, name this cluster and the
//!   role `node`, and name a node listed in this node's membership configuration
//!   ([`verify`]). A client certificate cannot join as a node. The dialer also checks that the
//!   node that answered is the one it dialed. This node's own handshake key is any
//!   [`rustls::sign::SigningKey`]; in production it signs inside the node's token.
//! - **Connections.** Exactly one connection per peer pair, the one the lower node id dialed.
//!   The higher node never keeps a connection it dialed: when it has none it "knocks" (an
//!   authenticated handshake the lower node closes at once and answers by dialing back, after
//!   probing any connection it still holds). Reconnects use capped, jittered exponential
//!   backoff; [`PeerStatus`] reports each peer's connection for the API.
//! - **Sessions.** A session (32-byte id, protocol kind, ordered participants) has its own QUIC
//!   streams and is routed by its id; a session id seen before is refused; messages for a
//!   session not yet joined wait in a bounded buffer for a short time ([`session`]).
//! - **Senders.** The sender of every message is the authenticated peer of the connection it
//!   arrived on, as an index into the participant list. No payload field names its sender.
//! - **Bad input.** An oversized or malformed frame, or an undecodable message, aborts only
//!   the affected session and names the peer that sent it ([`session::SessionError::culprit`]).
//!   The node and its other sessions carry on.
//! - **Requests.** A node can ask a peer something and wait for its answer
//!   ([`Node::request`]): each request has its own bidirectional stream on the peer
//!   connection, bodies are bounded by [`Limits::max_request_bytes`], and the whole exchange
//!   by the caller's timeout. The answering node takes its inbox once
//!   ([`Node::take_requests`]) and answers each [`IncomingRequest`], whose requester is the
//!   authenticated peer. A request nobody can take (no inbox, inbox full) or that is dropped
//!   unanswered is refused at once rather than left to time out: the requester gets
//!   [`RequestError::Refused`] and the refusal is reported ([`rpc`]). Both ends can derive the
//!   TLS exporter value of the connection a request travelled on
//!   ([`IncomingRequest::channel_binding`], [`Node::request_bound`]) to bind what they
//!   exchange (attestation evidence) to that connection.
//! - **Not promised.** Point-to-point delivery is not a reliable broadcast: protocols keep
//!   their own echo round (cggmp's `enforce_reliable_broadcast(true)`). Messages of a session
//!   whose connection breaks are not replayed: the session aborts and is retried under a new id.
//!
//! # Wiring
//!
//! ```text
//! let node = Node::start(config, NodeIdentity { ca, chain, key }, session_ids).await?;
//! let session = node.join(SessionSpec { id, protocol, participants }).await?;
//! let party = round_based::MpcParty::connected(delivery::delivery::<Msg>(session));
//!
//! let mut requests = node.take_requests();  // the answering side: Some the first time only
//! while let Some(req) = requests.recv().await { let a = handle(&req.body); req.respond(a) }
//! let answer = node.request(&peer, body, timeout).await?;  // the asking side
//! ```

pub mod bench;
pub(crate) mod conn;
pub mod delivery;
pub mod events;
pub mod frame;
pub mod ids;
pub mod node;
pub mod pki;
pub mod rpc;
pub mod session;
pub mod verify;

pub use conn::PeerStatus;
pub use delivery::{IncomingMessages, OutgoingMessages, delivery};
pub use events::{Events, RequestRefusal, StreamRefusal, TransportEvent};
pub use ids::{ClientName, ClusterId, NodeId, Role, SpiffeId, Subject};
pub use node::{ALPN, Limits, Node, NodeConfig, NodeIdentity, StartError, Timing};
pub use rpc::{BoundAnswer, ChannelBindingError, IncomingRequest, RequestError, Responder};
pub use session::{
    InMemorySessionIds, InboundMessage, JoinError, Misbehavior, ProtocolKind, SendError, Session,
    SessionError, SessionId, SessionIdStore, SessionIdStoreError, SessionReceiver, SessionSender,
    SessionSpec,
};

#[cfg(test)]
mod tests;
