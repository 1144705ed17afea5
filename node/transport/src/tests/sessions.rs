//! Many concurrent sessions, the pre-join buffer, id reuse, and bad frames.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use round_based::{Incoming, MessageType, Outgoing};
use serde::{Deserialize, Serialize};

use super::util::*;
use crate::delivery::delivery;
use crate::frame::{MessageKind, StreamOpen, encode_message, encode_open};
use crate::ids::NodeId;
use crate::node::{Limits, Node};
use crate::session::{JoinError, Misbehavior, ProtocolKind, SessionError, SessionId, SessionSpec};

/// The payload names session, round, sender and recipient only so the test can check that
/// the transport's own sender index agrees; the transport never reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TestMsg {
    session: u32,
    round: u32,
    from: u16,
    to: Option<u16>,
    text: String,
}

fn text(s: u32, round: u32, from: u16, to: Option<u16>) -> String {
    match to {
        None => format!("broadcast s{s} r{round} from {from}"),
        Some(to) => format!("p2p s{s} r{round} from {from} to {to}"),
    }
}

const SESSIONS: u32 = 200;
const ROUNDS: u32 = 4;

/// The participants of session `s`: rotated so indices differ between sessions, and every
/// fifth session has only two of the three nodes.
fn participants(s: u32, ids: &[NodeId]) -> Vec<NodeId> {
    let mut p: Vec<NodeId> = ids.to_vec();
    p.rotate_left((s % 3) as usize);
    if s % 5 == 4 {
        p.truncate(2);
    }
    p
}

async fn run_party(node: Arc<Node>, s: u32, spec: SessionSpec) -> usize {
    // Stagger joins so that many messages arrive before their session is joined.
    let delay = (u64::from(s) * 7 + u64::from(node.id().as_str().len() as u32)) % 25;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let n = spec.participants.len() as u16;
    let session = node.join(spec).await.unwrap();
    let me = session.my_index();
    let (mut incoming, mut outgoing) = delivery::<TestMsg>(session);
    let mut early: BTreeMap<u32, Vec<Incoming<TestMsg>>> = BTreeMap::new();
    let mut received = 0usize;
    let mut last_id = None;
    for round in 0..ROUNDS {
        outgoing
            .send(Outgoing::broadcast(TestMsg {
                session: s,
                round,
                from: me,
                to: None,
                text: text(s, round, me, None),
            }))
            .await
            .unwrap();
        for j in (0..n).filter(|j| *j != me) {
            outgoing
                .send(Outgoing::p2p(
                    j,
                    TestMsg {
                        session: s,
                        round,
                        from: me,
                        to: Some(j),
                        text: text(s, round, me, Some(j)),
                    },
                ))
                .await
                .unwrap();
        }
        let expected: BTreeSet<(u16, bool)> = (0..n)
            .filter(|j| *j != me)
            .flat_map(|j| [(j, true), (j, false)])
            .collect();
        let mut got = BTreeSet::new();
        let mut this_round = early.remove(&round).unwrap_or_default();
        while got.len() < expected.len() {
            let m = match this_round.pop() {
                Some(m) => m,
                None => {
                    let m = tokio::time::timeout(Duration::from_secs(30), incoming.next())
                        .await
                        .expect("message timeout")
                        .expect("stream ended")
                        .expect("session error");
                    // Ids increase monotonically.
                    assert!(last_id.is_none_or(|l| m.id > l));
                    last_id = Some(m.id);
                    if m.msg.round != round {
                        assert!(m.msg.round > round, "stale round");
                        early.entry(m.msg.round).or_default().push(m);
                        continue;
                    }
                    m
                }
            };
            // Exact contents: right session, sender index from the connection, kind as sent.
            assert_eq!(m.msg.session, s, "message from another session");
            assert_eq!(
                m.sender, m.msg.from,
                "sender index does not match the authenticated peer"
            );
            let broadcast = m.msg_type == MessageType::Broadcast;
            assert_eq!(broadcast, m.msg.to.is_none());
            if let Some(to) = m.msg.to {
                assert_eq!(to, me, "p2p message for another party");
            }
            assert_eq!(m.msg.text, text(s, round, m.sender, m.msg.to));
            assert!(got.insert((m.sender, broadcast)), "duplicate message");
            received += 1;
        }
        assert_eq!(got, expected);
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_at_once_never_mix() {
    init_tracing();
    let (_ca, ms) = members(3);
    let nodes: Vec<Arc<Node>> = start_all(ms).await.into_iter().map(Arc::new).collect();
    for n in &nodes {
        assert!(n.wait_all_connected(Duration::from_secs(10)).await);
    }
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id().clone()).collect();
    let mut tasks = Vec::new();
    let mut expected_total = 0usize;
    for s in 0..SESSIONS {
        let spec = SessionSpec {
            id: SessionId::random(),
            protocol: ProtocolKind::Presign,
            participants: participants(s, &ids),
        };
        let n = spec.participants.len();
        expected_total += n * (ROUNDS as usize) * 2 * (n - 1);
        for node in &nodes {
            if spec.participants.contains(node.id()) {
                tasks.push(tokio::spawn(run_party(node.clone(), s, spec.clone())));
            }
        }
    }
    let mut total = 0;
    for t in tasks {
        total += tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(total, expected_total);
    for n in &nodes {
        let counts = n.events().counts();
        assert!(
            counts.is_empty(),
            "{}: unexpected events {counts:?}",
            n.id()
        );
    }
}

fn spec(participants: &[&Node]) -> SessionSpec {
    SessionSpec {
        id: SessionId::random(),
        protocol: ProtocolKind::Sign,
        participants: participants.iter().map(|n| n.id().clone()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_checks_the_spec_and_refuses_a_reused_id() {
    init_tracing();
    let (_ca, ms) = members(3);
    let nodes = start_all(ms).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let s = spec(&[n1, n2]);
    let first = n1.join(s.clone()).await.unwrap();
    assert!(matches!(n1.join(s.clone()).await, Err(JoinError::SessionIdReused(id)) if id == s.id));
    drop(first);
    // Still refused once the session has ended.
    assert!(matches!(
        n1.join(s.clone()).await,
        Err(JoinError::SessionIdReused(_))
    ));
    assert!(matches!(
        n3.join(spec(&[n1, n2])).await,
        Err(JoinError::NotAParticipant)
    ));
    assert!(matches!(
        n1.join(spec(&[n1, n1])).await,
        Err(JoinError::DuplicateParticipant(_))
    ));
    assert!(matches!(
        n1.join(spec(&[n1])).await,
        Err(JoinError::ParticipantCount(1))
    ));
    let mut stranger = spec(&[n1, n2]);
    stranger.participants.push(node_id("node-7"));
    assert!(matches!(
        n1.join(stranger).await,
        Err(JoinError::UnknownParticipant(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_join_wait_then_expire() {
    init_tracing();
    let limits = Limits {
        pending_ttl: Duration::from_millis(400),
        ..Limits::default()
    };
    let (_ca, ms) = members_with(2, limits);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);

    // Sent before node-1 joins, delivered in order once it does.
    let early = spec(&[n1, n2]);
    let (_rx2, mut tx2) = n2.join(early.clone()).await.unwrap().split();
    for i in 0u8..5 {
        tx2.p2p(0, &[i]).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut rx1, _tx1) = n1.join(early).await.unwrap().split();
    for i in 0u8..5 {
        let m = rx1.recv().await.unwrap().unwrap();
        assert_eq!(
            (m.sender, m.peer.as_str(), m.body.as_slice()),
            (1, "node-2", &[i][..])
        );
    }

    // Never joined in time: dropped with a log line naming peer and session.
    let mut events = n1.subscribe_events();
    let late = spec(&[n1, n2]);
    let (_rx2, mut tx2) = n2.join(late.clone()).await.unwrap().split();
    tx2.p2p(0, b"too early").unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let crate::events::TransportEvent::PendingExpired {
                session,
                peers,
                messages,
            } = events.recv().await.unwrap()
            {
                return (session, peers, messages);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev, (late.id, vec![node_id("node-2")], 1));
    // Joining afterwards fails fast instead of waiting for messages that were dropped.
    let (mut rx1, _tx1) = n1.join(late).await.unwrap().split();
    assert_eq!(
        rx1.recv().await.unwrap().unwrap_err(),
        SessionError::MessagesExpired {
            peers: vec![node_id("node-2")]
        }
    );
}

/// Opens a raw stream on `conn` for `open` and writes `bytes` after the OPEN frame.
async fn raw_stream(conn: &quinn::Connection, open: Option<StreamOpen>, bytes: &[u8]) {
    let mut s = conn.open_uni().await.unwrap();
    if let Some(open) = open {
        s.write_all(&encode_open(&open)).await.unwrap();
    }
    s.write_all(bytes).await.unwrap();
    let _ = s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_abort_only_their_session_and_name_the_sender() {
    init_tracing();
    let (_ca, ms) = members(2);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let before = n1.peer_status()[0].connection_id.clone();
    // node-2's side of the pair's connection, used to write whatever bytes it likes.
    let conn = n2.connection(n1.id()).unwrap();

    let oversized = spec(&[n1, n2]);
    let garbage = spec(&[n1, n2]);
    let undecodable = spec(&[n1, n2]);
    let healthy = spec(&[n1, n2]);
    let open = |s: &SessionSpec| {
        Some(StreamOpen {
            session: s.id,
            protocol: s.protocol,
        })
    };

    let (mut rx_over, _t1) = n1.join(oversized.clone()).await.unwrap().split();
    let (mut rx_garbage, _t2) = n1.join(garbage.clone()).await.unwrap().split();
    let (mut in_undecodable, _o) = delivery::<TestMsg>(n1.join(undecodable.clone()).await.unwrap());
    let (mut in_healthy, mut out_healthy) =
        delivery::<TestMsg>(n1.join(healthy.clone()).await.unwrap());
    let (mut in_healthy2, mut out_healthy2) =
        delivery::<TestMsg>(n2.join(healthy.clone()).await.unwrap());

    // Length prefix far over the 8 MiB limit.
    raw_stream(&conn, open(&oversized), &u32::MAX.to_be_bytes()).await;
    // Unknown frame tag.
    raw_stream(&conn, open(&garbage), &[0, 0, 0, 3, 0x77, 1, 2]).await;
    // Well-formed frame whose body is not CBOR of the protocol's message type.
    raw_stream(
        &conn,
        open(&undecodable),
        &encode_message(MessageKind::P2p, &[0xff, 0x00, 0x13], 1024).unwrap(),
    )
    .await;
    // A stream that never names its session.
    raw_stream(&conn, None, b"\x00\x00\x00\x02\x02\x00").await;

    let err = rx_over.recv().await.unwrap().unwrap_err();
    assert_eq!(err.culprit(), Some(&node_id("node-2")));
    assert!(
        matches!(
            &err,
            SessionError::PeerMisbehaved {
                reason: Misbehavior::Frame(crate::frame::FrameError::TooLarge { .. }),
                ..
            }
        ),
        "{err}"
    );
    let err = rx_garbage.recv().await.unwrap().unwrap_err();
    assert!(
        matches!(&err, SessionError::PeerMisbehaved { peer, reason: Misbehavior::Frame(crate::frame::FrameError::UnknownTag(0x77)) } if peer.as_str() == "node-2"),
        "{err}"
    );
    let err = in_undecodable.next().await.unwrap().unwrap_err();
    assert!(
        matches!(&err, SessionError::PeerMisbehaved { peer, reason: Misbehavior::UndecodableBody(_) } if peer.as_str() == "node-2"),
        "{err}"
    );

    // The healthy session, on the same connection, still works both ways.
    for round in 0..3 {
        out_healthy2
            .send(Outgoing::p2p(
                0,
                TestMsg {
                    session: 1,
                    round,
                    from: 1,
                    to: Some(0),
                    text: "hi".into(),
                },
            ))
            .await
            .unwrap();
        let m = in_healthy.next().await.unwrap().unwrap();
        assert_eq!((m.sender, m.msg.round), (1, round));
        out_healthy
            .send(Outgoing::broadcast(TestMsg {
                session: 1,
                round,
                from: 0,
                to: None,
                text: "ho".into(),
            }))
            .await
            .unwrap();
        let m = in_healthy2.next().await.unwrap().unwrap();
        assert_eq!(
            (m.sender, m.msg_type, m.msg.round),
            (0, MessageType::Broadcast, round)
        );
    }
    assert_eq!(n1.events().count("session.aborted"), 3);
    let after = n1.peer_status()[0].clone();
    assert!(after.connected);
    assert_eq!(after.connection_id, before, "the connection must survive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_protocol_backpressures_without_losing_messages() {
    init_tracing();
    // A byte budget of two messages: the sender must wait for the receiver, nothing is lost.
    let limits = Limits {
        session_queue_bytes: 1000,
        ..Limits::default()
    };
    let (_ca, ms) = members_with(2, limits);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let s = spec(&[n1, n2]);
    let (mut rx1, _tx1) = n1.join(s.clone()).await.unwrap().split();
    let (_rx2, mut tx2) = n2.join(s).await.unwrap().split();
    for i in 0u16..200 {
        let mut body = vec![0u8; 500];
        body[..2].copy_from_slice(&i.to_be_bytes());
        tx2.p2p(0, &body).unwrap();
    }
    for i in 0u16..200 {
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = rx1.recv().await.unwrap().unwrap();
        assert_eq!(&m.body[..2], &i.to_be_bytes());
    }
}
