//! One connection per pair, and reconnection after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::util::*;
use crate::node::{Node, NodeConfig, NodeIdentity};
use crate::session::InMemorySessionIds;

fn assert_one_connection_per_pair(nodes: &[&Node]) {
    for a in nodes {
        for st in a.peer_status() {
            assert!(st.connected, "{} -> {} not connected", a.id(), st.node);
            let b = nodes.iter().find(|n| *n.id() == st.node).unwrap();
            let back = b
                .peer_status()
                .into_iter()
                .find(|s| s.node == *a.id())
                .unwrap();
            assert!(st.connection_id.is_some());
            assert_eq!(
                st.connection_id,
                back.connection_id,
                "{} and {} hold different connections",
                a.id(),
                b.id()
            );
            assert_eq!(st.this_node_dials, a.id() < b.id());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_together_hold_one_connection_per_pair() {
    init_tracing();
    for _ in 0..3 {
        let (_ca, ms) = members(3);
        let nodes = start_all(ms).await;
        all_connected(&nodes).await;
        // Knock connections are closed at once; once they have drained every node holds
        // exactly one connection to each of its two peers.
        assert!(
            eventually(Duration::from_secs(5), || nodes
                .iter()
                .all(|n| n.open_connections() == 2))
            .await,
            "open connections: {:?}",
            nodes.iter().map(Node::open_connections).collect::<Vec<_>>()
        );
        let refs: Vec<&Node> = nodes.iter().collect();
        assert_one_connection_per_pair(&refs);
        // No dial fought another: each pair established exactly one connection.
        for n in &nodes {
            for st in n.peer_status() {
                assert_eq!(st.connections_established, 1, "{} -> {}", n.id(), st.node);
            }
        }
        for n in nodes {
            n.shutdown().await;
        }
    }
}

async fn restart(config: NodeConfig, identity: NodeIdentity) -> Node {
    // The old endpoint releases its port once its last connection is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let socket = loop {
        match std::net::UdpSocket::bind(config.listen) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {}: {e}", config.listen),
        }
    };
    Node::start_on_socket(
        config,
        identity,
        Arc::new(InMemorySessionIds::default()),
        socket,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_is_reconnected_within_5s() {
    init_tracing();
    let (_ca, ms) = members(3);
    let saved: Vec<(NodeConfig, NodeIdentity)> = ms
        .iter()
        .map(|m| (m.config.clone(), m.identity.clone()))
        .collect();
    let mut nodes: Vec<Option<Node>> = start_all(ms).await.into_iter().map(Some).collect();
    for n in nodes.iter().flatten() {
        assert!(n.wait_all_connected(Duration::from_secs(10)).await);
    }
    // The lowest (only dials), the middle (dials and knocks) and the highest (only knocks).
    for victim in [1usize, 0, 2] {
        let gone = nodes[victim].take().unwrap();
        let gone_id = gone.id().clone();
        gone.shutdown().await;
        assert!(
            eventually(Duration::from_secs(5), || nodes.iter().flatten().all(|n| {
                n.peer_status()
                    .iter()
                    .any(|s| s.node == gone_id && !s.connected)
            }))
            .await,
            "peers did not notice {gone_id} going away"
        );
        let (config, identity) = saved[victim].clone();
        let t0 = Instant::now();
        nodes[victim] = Some(restart(config, identity).await);
        for n in nodes.iter().flatten() {
            assert!(
                n.wait_all_connected(Duration::from_secs(5)).await,
                "{} not reconnected after {gone_id} restarted",
                n.id()
            );
        }
        let took = t0.elapsed();
        tracing::info!(restarted = %gone_id, ?took, "cluster reconnected");
        assert!(took < Duration::from_secs(5), "reconnect took {took:?}");
        let refs: Vec<&Node> = nodes.iter().flatten().collect();
        assert!(
            eventually(Duration::from_secs(3), || refs
                .iter()
                .all(|n| n.open_connections() == 2))
            .await
        );
        assert_one_connection_per_pair(&refs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_certificate_peers_would_refuse() {
    use crate::ids::Subject;
    use crate::node::StartError;
    use crate::pki::{SoftwareKey, Validity};
    use crate::verify::{NodeCertError, RefusalReason};
    use std::time::SystemTime;

    let (ca, ms) = members(2);
    let start_with = |m: &crate::bench::LoopbackMember, identity: NodeIdentity| {
        let config = m.config.clone();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        async move {
            Node::start_on_socket(
                config,
                identity,
                Arc::new(InMemorySessionIds::default()),
                socket,
            )
            .await
        }
    };
    let m1 = &ms[0];

    // Another node's certificate.
    let other = ms[1].identity.clone();
    let err = start_with(m1, other.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Certificate(NodeCertError::IdentityMismatch { .. })
        ),
        "{err}"
    );

    // The right certificate with another key.
    let mut wrong_key = m1.identity.clone();
    wrong_key.key = SoftwareKey::generate()
        .unwrap()
        .rustls_signing_key()
        .unwrap();
    let err = start_with(m1, wrong_key).await.unwrap_err();
    assert!(
        matches!(err, StartError::Certificate(NodeCertError::KeyMismatch)),
        "{err}"
    );

    // Expired.
    let past = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let expired = identity_from(
        &ca,
        &ca,
        Subject::Node(node_id("node-1")),
        Validity {
            not_before: past,
            not_after: past + Duration::from_secs(86_400),
        },
    );
    let err = start_with(m1, expired).await.unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Certificate(NodeCertError::Refused(RefusalReason::Expired { .. }))
        ),
        "{err}"
    );

    // Its own peer list naming itself.
    let mut config = m1.config.clone();
    config.peers.insert(node_id("node-1"), config.listen);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = Node::start_on_socket(
        config,
        m1.identity.clone(),
        Arc::new(InMemorySessionIds::default()),
        socket,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::SelfInPeers(_)), "{err}");
}
