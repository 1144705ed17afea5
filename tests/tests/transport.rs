//! The transport with node keys held in SoftHSM tokens: every TLS handshake signs inside a
//! token. One SoftHSM configuration per test process (nextest), one token per node.

// The helpers below are part of the tests: like the tests, they fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cggmp24::supported_curves::Secp256k1;
use strongroom_keystore::Token;
use strongroom_tests::softhsm::SoftHsm;
use strongroom_transport::pki::{ClusterCa, Validity, create_csr};
use strongroom_transport::{
    ClusterId, InMemorySessionIds, Limits, Node, NodeConfig, NodeId, NodeIdentity, ProtocolKind,
    SessionId, SessionSpec, SpiffeId, Subject, Timing, delivery,
};

struct Member {
    config: NodeConfig,
    identity: NodeIdentity,
    socket: Option<UdpSocket>,
}

/// `n` nodes whose identity keys live in their own SoftHSM tokens. node-1 gets its certificate
/// the ceremony way (CSR signed by its token key, then signed by the CA), the others the dev way.
fn cluster(n: usize) -> (SoftHsm, Vec<Member>) {
    let hsm = SoftHsm::new().unwrap();
    let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
    // SoftHSM reads its token directory once: create every token before opening any.
    let tokens: Vec<_> = names
        .iter()
        .map(|name| hsm.init_token(name).unwrap())
        .collect();
    let cluster = ClusterId::new("vault").unwrap();
    let ca = ClusterCa::generate(&cluster, Validity::days_from_now(1)).unwrap();

    let mut sockets = Vec::new();
    let mut addrs = BTreeMap::new();
    for name in &names {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        addrs.insert(
            NodeId::new(name.as_str()).unwrap(),
            socket.local_addr().unwrap(),
        );
        sockets.push(socket);
    }
    let mut members = Vec::new();
    for ((name, token), socket) in names.iter().zip(&tokens).zip(sockets) {
        let node = NodeId::new(name.as_str()).unwrap();
        let (token, _) = Token::provision(&token.config()).unwrap();
        let key = token.identity();
        let subject = Subject::Node(node.clone());
        let cert = if name == "node-1" {
            let csr = create_csr(&SpiffeId::node(cluster.clone(), node.clone()), &key).unwrap();
            ca.sign_csr(&csr, Some(&subject), Validity::days_from_now(1))
                .unwrap()
        } else {
            ca.issue(subject, &key, Validity::days_from_now(1)).unwrap()
        };
        let mut peers = addrs.clone();
        let listen = peers.remove(&node).unwrap();
        members.push(Member {
            config: NodeConfig {
                cluster: cluster.clone(),
                node,
                listen,
                peers,
                timing: Timing::default(),
                limits: Limits::default(),
            },
            identity: NodeIdentity {
                ca: ca.cert_der().clone(),
                chain: vec![cert.der],
                key: Arc::new(key),
            },
            socket: Some(socket),
        });
    }
    (hsm, members)
}

async fn start(config: NodeConfig, identity: NodeIdentity, socket: UdpSocket) -> Node {
    Node::start_on_socket(
        config,
        identity,
        Arc::new(InMemorySessionIds::default()),
        socket,
    )
    .await
    .unwrap()
}

async fn start_all(members: &mut [Member]) -> Vec<Node> {
    let mut handles = Vec::new();
    for m in members.iter_mut() {
        let (config, identity, socket) = (
            m.config.clone(),
            m.identity.clone(),
            m.socket.take().unwrap(),
        );
        handles.push(tokio::spawn(start(config, identity, socket)));
    }
    let mut nodes = Vec::new();
    for h in handles {
        nodes.push(h.await.unwrap());
    }
    nodes
}

async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

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
                "{} and {}",
                a.id(),
                b.id()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keys_one_connection_per_pair_and_reconnect_within_5s() {
    let (_hsm, mut members) = cluster(3);
    let mut nodes: Vec<Option<Node>> = start_all(&mut members)
        .await
        .into_iter()
        .map(Some)
        .collect();
    for n in nodes.iter().flatten() {
        assert!(
            n.wait_all_connected(Duration::from_secs(10)).await,
            "{} not connected",
            n.id()
        );
    }
    let refs: Vec<&Node> = nodes.iter().flatten().collect();
    assert!(
        eventually(Duration::from_secs(5), || refs
            .iter()
            .all(|n| n.open_connections() == 2))
        .await
    );
    assert_one_connection_per_pair(&refs);
    for n in &refs {
        for st in n.peer_status() {
            assert_eq!(st.connections_established, 1, "{} -> {}", n.id(), st.node);
        }
    }

    // Stop node-2 and start it again with the same token and port.
    let victim = 1;
    let gone = nodes[victim].take().unwrap();
    let gone_id = gone.id().clone();
    gone.shutdown().await;
    assert!(
        eventually(Duration::from_secs(5), || nodes.iter().flatten().all(|n| {
            n.peer_status()
                .iter()
                .any(|s| s.node == gone_id && !s.connected)
        }))
        .await
    );
    let m = &members[victim];
    let deadline = Instant::now() + Duration::from_secs(5);
    let socket = loop {
        match UdpSocket::bind(m.config.listen) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("cannot rebind {}: {e}", m.config.listen),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let t0 = Instant::now();
    nodes[victim] = Some(start(m.config.clone(), m.identity.clone(), socket).await);
    for n in nodes.iter().flatten() {
        assert!(
            n.wait_all_connected(Duration::from_secs(5)).await,
            "{} not reconnected",
            n.id()
        );
    }
    let took = t0.elapsed();
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

type KeygenMsg = cggmp24::keygen::ThresholdMsg<
    Secp256k1,
    cggmp24::security_level::SecurityLevel128,
    sha2::Sha256,
>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keys_threshold_keygen_agrees_on_the_public_key() {
    let (_hsm, mut members) = cluster(3);
    let nodes: Vec<Arc<Node>> = start_all(&mut members)
        .await
        .into_iter()
        .map(Arc::new)
        .collect();
    for n in &nodes {
        assert!(n.wait_all_connected(Duration::from_secs(10)).await);
    }
    let spec = SessionSpec {
        id: SessionId::random(),
        protocol: ProtocolKind::Keygen,
        participants: nodes.iter().map(|n| n.id().clone()).collect(),
    };
    let tasks: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| {
            let spec = spec.clone();
            tokio::spawn(async move {
                let session = node.join(spec.clone()).await.unwrap();
                let i = session.my_index();
                let party = round_based::MpcParty::connected(delivery::<KeygenMsg>(session));
                let eid = cggmp24::ExecutionId::new(spec.id.as_bytes());
                let share = cggmp24::keygen::<Secp256k1>(eid, i, 3)
                    .set_threshold(2)
                    .enforce_reliable_broadcast(true)
                    .start(&mut rand::rngs::OsRng, party)
                    .await
                    .unwrap();
                share.shared_public_key.to_bytes(true).to_vec()
            })
        })
        .collect();
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(keys.len(), 3);
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "parties disagree on the public key"
    );
}
