//! The `round-based` delivery adapter: runs a protocol (cggmp24 keygen, aux info, signing...)
//! over a joined session.
//!
//! - `Incoming::sender` is the authenticated peer's index in the session's participant list,
//!   never a payload field;
//! - `Incoming::msg_type` says truthfully how the message was sent (broadcast or point-to-point);
//! - `Incoming::id` increases monotonically within the session;
//! - a broadcast goes to every other participant, a point-to-point message to its recipient.
//!
//! Bodies are CBOR (ciborium). A body that does not decode as the protocol's message type
//! aborts the session and names its sender.
//!
//! Point-to-point sends are not a reliable broadcast: keep cggmp's
//! `enforce_reliable_broadcast(true)`.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, Stream};
use round_based::{Incoming, MessageDestination, MessageType, Outgoing};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::MessageKind;
use crate::session::{
    Misbehavior, SendError, Session, SessionError, SessionReceiver, SessionSender,
};

/// Splits a joined session into the `(incoming, outgoing)` pair `round_based::MpcParty::connected`
/// takes.
pub fn delivery<M>(session: Session) -> (IncomingMessages<M>, OutgoingMessages<M>)
where
    M: Serialize + DeserializeOwned,
{
    let (rx, tx) = session.split();
    (
        IncomingMessages {
            rx,
            next_id: 0,
            _msg: PhantomData,
        },
        OutgoingMessages {
            tx,
            _msg: PhantomData,
        },
    )
}

/// The incoming half: a stream of decoded protocol messages.
#[derive(Debug)]
pub struct IncomingMessages<M> {
    rx: SessionReceiver,
    next_id: u64,
    _msg: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> Stream for IncomingMessages<M> {
    type Item = Result<Incoming<M>, SessionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let msg = match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(m))) => m,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        match ciborium::from_reader::<M, _>(msg.body.as_slice()) {
            Ok(decoded) => {
                let id = this.next_id;
                this.next_id += 1;
                Poll::Ready(Some(Ok(Incoming {
                    id,
                    sender: msg.sender,
                    msg_type: match msg.kind {
                        MessageKind::Broadcast => MessageType::Broadcast,
                        MessageKind::P2p => MessageType::P2P,
                    },
                    msg: decoded,
                })))
            }
            Err(e) => {
                let reason = Misbehavior::UndecodableBody(e.to_string());
                this.rx.abort_misbehaved(msg.peer.clone(), reason.clone());
                Poll::Ready(Some(Err(SessionError::PeerMisbehaved {
                    peer: msg.peer,
                    reason,
                })))
            }
        }
    }
}

/// The outgoing half: a sink of protocol messages.
#[derive(Debug)]
pub struct OutgoingMessages<M> {
    tx: SessionSender,
    _msg: PhantomData<fn(M)>,
}

impl<M: Serialize> Sink<Outgoing<M>> for OutgoingMessages<M> {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Outgoing<M>) -> Result<(), SendError> {
        let this = self.get_mut();
        let mut body = Vec::new();
        ciborium::into_writer(&item.msg, &mut body)
            .map_err(|e| SendError::Encode(e.to_string()))?;
        match item.recipient {
            MessageDestination::AllParties => this.tx.broadcast(&body),
            MessageDestination::OneParty(to) => this.tx.p2p(to, &body),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        // Each peer's writer task sends in order; a failure aborts the session, which the
        // incoming half reports.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Poll::Ready(Ok(()))
    }
}
