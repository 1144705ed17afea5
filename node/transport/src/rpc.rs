//! Requests between peers: one node asks a peer something and waits for its answer (the leader
//! inviting peers into a session, a coordinator asking signers for partial signatures).
//!
//! A request travels on its own bidirectional QUIC stream of the peer connection:
//!
//! ```text
//! request = 0x52 length:u32 body     ; big endian length; then the requester finishes its side
//! answer  = status:u8 length:u32 body ; then the answerer finishes its side
//! status  = 0x00 ok                   ; body is the handler's answer
//!         | 0x01 refused              ; body is a short UTF-8 reason (no handler, inbox full,
//!                                     ;   dropped without an answer, too large)
//! ```
//!
//! The first byte tells a request from a liveness probe (`0x50`), the only other use of
//! bidirectional streams; any other first byte gets the stream stopped as malformed. Both
//! bodies are limited to [`Limits::max_request_bytes`](crate::Limits::max_request_bytes) on
//! both ends; a length over the limit is refused from the length prefix alone, before anything
//! is buffered. The requester of an incoming request is the authenticated peer of the
//! connection the stream arrived on; nothing in the body names it.
//!
//! The requester sends with [`crate::Node::request`]; the answerer takes its inbox once with
//! [`crate::Node::take_requests`] and answers each [`IncomingRequest`] with
//! [`IncomingRequest::respond`].
//!
//! **Channel binding.** A request and its answer travel on one connection, so both ends can
//! derive the same TLS exporter value (RFC 5705 / RFC 8446 §7.5) for it: the answerer with
//! [`IncomingRequest::channel_binding`] (the connection the request arrived on), the requester
//! with [`crate::Node::request_bound`] (the connection the request was sent on). Attestation
//! evidence signed over that value cannot be replayed on another connection. A request that finds no inbox, a full inbox, or is dropped
//! without an answer is refused (status 1) and reported as
//! [`TransportEvent::RequestRefused`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::conn::{PeerTable, stream_codes};
use crate::events::{Events, RequestRefusal, TransportEvent};
use crate::ids::NodeId;

/// First byte of a request stream.
pub const RPC_REQUEST: u8 = 0x52;

const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;
/// Status (or tag) byte plus the u32 length.
const HEADER: usize = 5;

/// A request a peer sent to this node. Answer it with [`IncomingRequest::respond`]; dropping it
/// unanswered refuses it ("dropped without an answer").
pub struct IncomingRequest {
    /// The requester: the authenticated peer of the connection the request arrived on.
    pub peer: NodeId,
    /// The request body.
    pub body: Vec<u8>,
    responder: Responder,
    /// The connection the request arrived on.
    conn: quinn::Connection,
}

/// No TLS exporter value could be derived from a connection (the connection's TLS session
/// does not offer one for this label and length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot derive the TLS exporter value of the connection to peer '{peer}': {detail}")]
pub struct ChannelBindingError {
    /// The peer of the connection.
    pub peer: NodeId,
    /// Why.
    pub detail: String,
}

/// The TLS exporter value (`label`, empty context, `len` bytes) of `conn`.
pub(crate) fn export_binding(
    peer: &NodeId,
    conn: &quinn::Connection,
    label: &[u8],
    len: usize,
) -> Result<Vec<u8>, ChannelBindingError> {
    let mut out = vec![0u8; len];
    conn.export_keying_material(&mut out, label, b"")
        .map_err(|e| ChannelBindingError {
            peer: peer.clone(),
            detail: format!("{e:?}"),
        })?;
    Ok(out)
}

impl IncomingRequest {
    /// Sends `body` as the answer (status ok). An answer over `max_request_bytes` is not sent:
    /// the requester gets a refusal instead, and the refusal is logged and reported.
    pub fn respond(self, body: Vec<u8>) {
        self.responder.respond(body);
    }

    /// Splits the request into its requester, its body and the handle that answers it, for
    /// handlers that consume the body before answering.
    pub fn into_parts(self) -> (NodeId, Vec<u8>, Responder) {
        (self.peer, self.body, self.responder)
    }

    /// The TLS exporter value (`label`, empty context, `len` bytes) of the connection this
    /// request arrived on: the requester derives the same value with
    /// [`crate::Node::request_bound`], and no other connection has it.
    pub fn channel_binding(
        &self,
        label: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, ChannelBindingError> {
        export_binding(&self.peer, &self.conn, label, len)
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body may carry protocol data: its length only.
        f.debug_struct("IncomingRequest")
            .field("peer", &self.peer)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Answers one [`IncomingRequest`]; dropping it unanswered refuses the request.
pub struct Responder {
    tx: oneshot::Sender<Vec<u8>>,
}

impl Responder {
    /// Sends `body` as the answer (see [`IncomingRequest::respond`]).
    pub fn respond(self, body: Vec<u8>) {
        // The requester may have given up already; nothing to do then.
        let _ = self.tx.send(body);
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("requester_waiting", &!self.tx.is_closed())
            .finish()
    }
}

/// A request to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// There is no live connection to the peer and none came up in time, or the peer is not a
    /// configured peer (this node itself included: requests to self are not supported).
    #[error("no connection to peer '{peer}' for the request")]
    NotConnected {
        /// The peer.
        peer: NodeId,
    },
    /// The exchange did not complete in time (the peer's handler did not answer, or the
    /// network is slow or congested).
    #[error("request to peer '{peer}' not answered within {after:?}")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The timeout.
        after: Duration,
    },
    /// The request body exceeds this node's `max_request_bytes`; nothing was sent.
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes; not sent")]
    TooLarge {
        /// The body length.
        size: u64,
        /// The limit.
        limit: u32,
    },
    /// The peer's transport refused the request (status 1): no handler installed, inbox full,
    /// request too large for the peer, or dropped by the handler without an answer.
    #[error("peer '{peer}' refused the request: {reason}")]
    Refused {
        /// The peer.
        peer: NodeId,
        /// The peer's reason.
        reason: String,
    },
    /// The stream failed (connection lost, stream reset) or the answer is malformed.
    #[error("request to peer '{peer}' failed: {detail}")]
    Stream {
        /// The peer.
        peer: NodeId,
        /// What happened.
        detail: String,
    },
    /// The channel binding of the connection could not be derived
    /// ([`crate::Node::request_bound`]).
    #[error(transparent)]
    ChannelBinding(#[from] ChannelBindingError),
}

/// The answer to a request sent with [`crate::Node::request_bound`], with what identifies the
/// connection it travelled on.
#[derive(Debug, Clone)]
pub struct BoundAnswer {
    /// The peer's answer.
    pub answer: Vec<u8>,
    /// The TLS exporter value of the connection the request and the answer travelled on.
    pub channel_binding: Vec<u8>,
    /// The certificate chain the peer presented on that connection (leaf first).
    pub peer_certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
}

enum Inbox {
    /// Nobody took the receiver yet: requests are refused.
    NotTaken,
    /// Taken; the sender fails once the receiver is dropped.
    Taken(mpsc::Sender<IncomingRequest>),
}

/// A node's request machinery: its inbox, its limits and its outgoing concurrency caps.
pub(crate) struct Requests {
    inbox: Mutex<Inbox>,
    capacity: usize,
    max_bytes: u32,
    header_timeout: Duration,
    events: Arc<Events>,
    /// Per peer: outgoing requests in flight, capped below the peer's bidirectional stream
    /// limit so this node's liveness probes always find a stream.
    outgoing: HashMap<NodeId, Arc<Semaphore>>,
}

impl fmt::Debug for Requests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requests")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Requests {
    pub(crate) fn new(
        capacity: usize,
        max_bytes: u32,
        header_timeout: Duration,
        peers: impl IntoIterator<Item = NodeId>,
        outgoing_per_peer: usize,
        events: Arc<Events>,
    ) -> Self {
        Self {
            inbox: Mutex::new(Inbox::NotTaken),
            // A zero-capacity tokio channel panics; one is the least that works.
            capacity: capacity.max(1),
            max_bytes,
            header_timeout,
            events,
            outgoing: peers
                .into_iter()
                .map(|p| (p, Arc::new(Semaphore::new(outgoing_per_peer.max(1)))))
                .collect(),
        }
    }

    /// The inbox receiver, the first time only.
    pub(crate) fn take(&self) -> Option<mpsc::Receiver<IncomingRequest>> {
        let mut inbox = self.inbox.lock().ok()?;
        match *inbox {
            Inbox::Taken(_) => None,
            Inbox::NotTaken => {
                let (tx, rx) = mpsc::channel(self.capacity);
                *inbox = Inbox::Taken(tx);
                Some(rx)
            }
        }
    }

    fn deliver(&self, request: IncomingRequest) -> Result<(), RequestRefusal> {
        let tx = match self.inbox.lock().as_deref() {
            Ok(Inbox::Taken(tx)) => tx.clone(),
            Ok(Inbox::NotTaken) => return Err(RequestRefusal::NoHandler),
            Err(_) => return Err(RequestRefusal::HandlerGone),
        };
        tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RequestRefusal::InboxFull,
            mpsc::error::TrySendError::Closed(_) => RequestRefusal::HandlerGone,
        })
    }

    /// Sends `body` to `peer` and waits for the answer, all within `timeout`; waits up to
    /// `timeout` for a connection if there is none.
    pub(crate) async fn request(
        &self,
        peers: &PeerTable,
        peer: &NodeId,
        body: &[u8],
        timeout: Duration,
    ) -> Result<(Vec<u8>, quinn::Connection), RequestError> {
        let not_connected = || RequestError::NotConnected { peer: peer.clone() };
        let timed_out = || RequestError::Timeout {
            peer: peer.clone(),
            after: timeout,
        };
        let size = u64::try_from(body.len()).unwrap_or(u64::MAX);
        if size > u64::from(self.max_bytes) {
            return Err(RequestError::TooLarge {
                size,
                limit: self.max_bytes,
            });
        }
        // Not a configured peer (this node itself included).
        let slots = self.outgoing.get(peer).ok_or_else(not_connected)?;
        let deadline = deadline_after(timeout);
        let _permit = tokio::time::timeout_at(deadline, slots.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| not_connected())?;
        let conn = peers
            .wait_connection(peer, deadline.saturating_duration_since(Instant::now()))
            .await
            .map_err(|_| not_connected())?;
        let answer = tokio::time::timeout_at(deadline, self.exchange(peer, &conn, body))
            .await
            .map_err(|_| timed_out())??;
        Ok((answer, conn))
    }

    async fn exchange(
        &self,
        peer: &NodeId,
        conn: &quinn::Connection,
        body: &[u8],
    ) -> Result<Vec<u8>, RequestError> {
        let failed = |detail: String| RequestError::Stream {
            peer: peer.clone(),
            detail,
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| failed(format!("cannot open a stream: {e}")))?;
        let written = async {
            send.write_all(&header(RPC_REQUEST, body.len())).await?;
            send.write_all(body).await?;
            send.finish().map_err(|_| quinn::WriteError::ClosedStream)
        }
        .await;
        // A peer that refuses early (a request too large for it) stops reading and answers at
        // once: its answer counts even if sending failed.
        let answer = read_answer(&mut recv, self.max_bytes).await;
        let (status, answer) = match (answer, written) {
            (Ok(answer), Ok(())) => answer,
            (Ok(answer), Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "peer answered before reading the whole request");
                answer
            }
            (Err(_), Err(e)) => return Err(failed(format!("sending the request: {e}"))),
            (Err(e), Ok(())) => return Err(failed(e)),
        };
        match status {
            STATUS_OK => Ok(answer),
            STATUS_REFUSED => Err(RequestError::Refused {
                peer: peer.clone(),
                reason: String::from_utf8_lossy(&answer).into_owned(),
            }),
            other => Err(failed(format!("unknown answer status {other:#04x}"))),
        }
    }

    /// Serves one request stream whose first byte ([`RPC_REQUEST`]) was read; `deadline` bounds
    /// the rest of its header.
    pub(crate) async fn serve(
        &self,
        peer: NodeId,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        deadline: Instant,
        conn: quinn::Connection,
    ) {
        let mut len = [0u8; 4];
        match tokio::time::timeout_at(deadline, recv.read_exact(&mut len)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "request stream ended in its header");
                return;
            }
            Err(_) => {
                tracing::warn!(peer = %peer, timeout = ?self.header_timeout, "request header not received in time");
                let _ = recv.stop(stream_codes::MALFORMED.into());
                let _ = send.reset(stream_codes::MALFORMED.into());
                return;
            }
        }
        let len = u32::from_be_bytes(len);
        if len > self.max_bytes {
            // Refused from the prefix alone: stop the sender, buffer nothing.
            let _ = recv.stop(stream_codes::REFUSED.into());
            let refusal = RequestRefusal::TooLarge {
                size: len.into(),
                limit: self.max_bytes,
            };
            self.refuse(&peer, send, refusal).await;
            return;
        }
        // len <= max_bytes <= u32::MAX, which fits usize on every supported target.
        let mut body = vec![0u8; len as usize];
        if let Err(e) = recv.read_exact(&mut body).await {
            tracing::debug!(peer = %peer, error = %e, "request stream ended in its body");
            let _ = send.reset(stream_codes::MALFORMED.into());
            return;
        }
        match recv.read(&mut [0u8; 1]).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                tracing::warn!(peer = %peer, "request stream carries bytes after its body");
                let _ = recv.stop(stream_codes::MALFORMED.into());
                let _ = send.reset(stream_codes::MALFORMED.into());
                return;
            }
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "request stream failed after its body");
                return;
            }
        }

        let (tx, rx) = oneshot::channel();
        let request = IncomingRequest {
            peer: peer.clone(),
            body,
            responder: Responder { tx },
            conn,
        };
        if let Err(refusal) = self.deliver(request) {
            self.refuse(&peer, send, refusal).await;
            return;
        }
        // The requester stops reading when it gives up (timeout): stop waiting then too.
        let gave_up = send.stopped();
        let answer = tokio::select! {
            answer = rx => answer.ok(),
            _ = gave_up => {
                tracing::debug!(peer = %peer, "requester gave up before the answer");
                return;
            }
        };
        match answer {
            Some(answer) if answer.len() <= self.max_bytes as usize => {
                write_answer(&peer, send, STATUS_OK, &answer).await;
            }
            Some(answer) => {
                let refusal = RequestRefusal::AnswerTooLarge {
                    size: u64::try_from(answer.len()).unwrap_or(u64::MAX),
                    limit: self.max_bytes,
                };
                self.refuse(&peer, send, refusal).await;
            }
            None => self.refuse(&peer, send, RequestRefusal::Unanswered).await,
        }
    }

    async fn refuse(&self, peer: &NodeId, send: quinn::SendStream, reason: RequestRefusal) {
        match reason {
            RequestRefusal::Unanswered => {
                tracing::info!(peer = %peer, reason = %reason, "request refused");
            }
            _ => tracing::warn!(peer = %peer, reason = %reason, "request refused"),
        }
        write_answer(peer, send, STATUS_REFUSED, reason.to_string().as_bytes()).await;
        self.events.publish(TransportEvent::RequestRefused {
            peer: peer.clone(),
            reason,
        });
    }
}

/// `after` from now; a timeout too large to represent means no deadline (about 30 years).
pub(crate) fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// A tag or status byte and a body length.
fn header(first: u8, len: usize) -> [u8; HEADER] {
    // Callers checked `len` against a u32 limit.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [first, len[0], len[1], len[2], len[3]]
}

async fn write_answer(peer: &NodeId, mut send: quinn::SendStream, status: u8, body: &[u8]) {
    let result = async {
        send.write_all(&header(status, body.len())).await?;
        send.write_all(body).await?;
        send.finish().map_err(|_| quinn::WriteError::ClosedStream)
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "cannot send the answer to a request");
    }
}

/// Reads `status length body` and the end of the stream; the body is at most `limit` bytes.
async fn read_answer(recv: &mut quinn::RecvStream, limit: u32) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; HEADER];
    recv.read_exact(&mut head)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let [status, l0, l1, l2, l3] = head;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    if len > limit {
        return Err(format!(
            "answer of {len} bytes exceeds this node's limit of {limit} bytes"
        ));
    }
    // len <= limit <= u32::MAX, which fits usize on every supported target.
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    match recv.read(&mut [0u8; 1]).await {
        Ok(None) => Ok((status, body)),
        Ok(Some(_)) => Err("the answer carries bytes after its body".to_owned()),
        Err(e) => Err(format!("reading the end of the answer: {e}")),
    }
}
