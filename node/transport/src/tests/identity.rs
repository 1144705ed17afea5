//! A node holding node-2's certificate cannot get a message accepted as coming from node-3.

use std::time::Duration;

use super::util::*;
use crate::events::StreamRefusal;
use crate::events::TransportEvent;
use crate::frame::{MessageKind, StreamOpen, encode_message, encode_open};
use crate::session::{ProtocolKind, SessionId, SessionSpec};

async fn write_raw(
    conn: &quinn::Connection,
    open: StreamOpen,
    bodies: &[&[u8]],
) -> Result<(), String> {
    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
    s.write_all(&encode_open(&open))
        .await
        .map_err(|e| e.to_string())?;
    for (i, b) in bodies.iter().enumerate() {
        let kind = if i % 2 == 0 {
            MessageKind::P2p
        } else {
            MessageKind::Broadcast
        };
        s.write_all(&encode_message(kind, b, 1024).unwrap())
            .await
            .map_err(|e| e.to_string())?;
    }
    s.finish().map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node2_certificate_never_speaks_as_node3() {
    init_tracing();
    let (ca, ms) = members(3);
    let mut ms = ms.into_iter();
    let (m1, m2, m3) = (ms.next().unwrap(), ms.next().unwrap(), ms.next().unwrap());
    let node2_identity = m2.identity.clone();
    let node1 = start(m1).await;
    let node2 = start(m2).await;
    assert!(
        node1
            .wait_connection_to(node2.id(), Duration::from_secs(5))
            .await
    );
    assert!(
        node2
            .wait_connection_to(node1.id(), Duration::from_secs(5))
            .await
    );

    // 1. On its authenticated connection, node-2 can only speak as node-2: whatever its
    //    payload says, node-1 attributes the message to node-2's index.
    let all = SessionSpec {
        id: SessionId::random(),
        protocol: ProtocolKind::Sign,
        participants: vec![node_id("node-1"), node_id("node-2"), node_id("node-3")],
    };
    let (mut rx_all, _tx) = node1.join(all.clone()).await.unwrap().split();
    let conn = node2.connection(node1.id()).unwrap();
    write_raw(
        &conn,
        StreamOpen {
            session: all.id,
            protocol: all.protocol,
        },
        &[b"from node-3", b"sender=2"],
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let m = rx_all.recv().await.unwrap().unwrap();
        assert_eq!(m.sender, 1, "attributed to node-2's index");
        assert_eq!(m.peer.as_str(), "node-2");
    }

    // 2. In a session of node-1 and node-3 only, node-2's messages are refused outright.
    let pair = SessionSpec {
        id: SessionId::random(),
        protocol: ProtocolKind::Sign,
        participants: vec![node_id("node-1"), node_id("node-3")],
    };
    let (mut rx_pair, _tx) = node1.join(pair.clone()).await.unwrap().split();
    let mut events = node1.subscribe_events();
    let _ = write_raw(
        &conn,
        StreamOpen {
            session: pair.id,
            protocol: pair.protocol,
        },
        &[b"i am node-3"],
    )
    .await;
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let TransportEvent::StreamRefused {
                peer,
                session,
                reason,
            } = events.recv().await.unwrap()
            {
                return (peer, session, reason);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        refused,
        (node_id("node-2"), pair.id, StreamRefusal::NotAParticipant)
    );

    // 3. node-2's certificate listening at node-3's address: node-1 dials node-3 there and
    //    refuses the node that answers.
    let impostor = raw_endpoint(&node2_identity, ca.cert_der()).0;
    impostor.rebind(m3.socket).unwrap();
    let ep = impostor.clone();
    tokio::spawn(async move {
        while let Some(i) = ep.accept().await {
            tokio::spawn(async move {
                let _ = i.await;
            });
        }
    });
    assert!(
        eventually(Duration::from_secs(5), || node1
            .events()
            .count("refused.unexpected_peer")
            >= 1)
        .await
    );

    // 4. node-2's certificate dialing node-1 while claiming to be node-3 (server name, and a
    //    stream for the node-1/node-3 session): identified as node-2 from its certificate.
    let (ep, client) = raw_endpoint(&node2_identity, ca.cert_der());
    if let Ok(c) = ep
        .connect_with(client, node1.local_addr().unwrap(), "node-1")
        .unwrap()
        .await
    {
        let _ = write_raw(
            &c,
            StreamOpen {
                session: pair.id,
                protocol: pair.protocol,
            },
            &[b"i am node-3"],
        )
        .await;
    }
    // Nothing reached the node-1/node-3 session, and node-3 never counted as connected.
    let nothing = tokio::time::timeout(Duration::from_millis(500), rx_pair.recv()).await;
    assert!(
        nothing.is_err(),
        "a message reached the session: {nothing:?}"
    );
    let st3 = node1
        .peer_status()
        .into_iter()
        .find(|s| s.node.as_str() == "node-3")
        .unwrap();
    assert!(!st3.connected);
    assert_eq!(st3.connections_established, 0);
}
