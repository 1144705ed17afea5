//! Every certificate refusal over real handshakes: the handshake fails, the refusing node logs
//! who tried and why, and reports the reason as an event.

use std::time::{Duration, SystemTime};

use super::util::*;
use crate::events::TransportEvent;
use crate::ids::{ClientName, ClusterId, SpiffeId, Subject};
use crate::node::NodeIdentity;
use crate::pki::{ClusterCa, SoftwareKey, Validity};
use crate::verify::Direction;

fn serve(ep: &quinn::Endpoint) {
    let ep = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let _ = incoming.await;
            });
        }
    });
}

/// Dials node-1 presenting `identity`; returns how the connection ended.
async fn dial_node1(
    identity: &NodeIdentity,
    trust: &ClusterCa,
    addr: std::net::SocketAddr,
) -> quinn::ConnectionError {
    let (ep, client) = raw_endpoint(identity, trust.cert_der());
    let result = match ep.connect_with(client, addr, "node-1").unwrap().await {
        // TLS 1.3: the client may finish before the server has checked its certificate.
        Ok(conn) => tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .unwrap(),
        Err(e) => e,
    };
    ep.close(0u32.into(), b"");
    result
}

#[tokio::test(flavor = "current_thread")]
async fn each_refusal_fails_the_handshake_and_is_logged() {
    let logs = LogBuf::default();
    let _guard = logs.install();

    let (ca, ms) = members(3);
    let mut ms = ms.into_iter();
    let (m1, m2, m3) = (ms.next().unwrap(), ms.next().unwrap(), ms.next().unwrap());
    let addr1 = m1.config.listen;
    let node1 = start(m1).await;
    let mut events = node1.subscribe_events();
    let day = Validity::days_from_now(1);

    // Inbound: peers dial node-1 with bad certificates.
    let foreign_ca = ClusterCa::generate(&ClusterId::new("vault").unwrap(), day).unwrap();
    let foreign = identity_from(
        &foreign_ca,
        &foreign_ca,
        Subject::Node(node_id("node-2")),
        day,
    );

    let key = SoftwareKey::generate().unwrap();
    let other_cluster = NodeIdentity {
        ca: ca.cert_der().clone(),
        chain: vec![
            ca.dangerous_issue_for_any_cluster(
                SpiffeId::node(ClusterId::new("other").unwrap(), node_id("node-2")),
                key.rcgen_key(),
                day,
            )
            .unwrap()
            .der,
        ],
        key: key.rustls_signing_key().unwrap(),
    };

    let stranger = identity_from(&ca, &ca, Subject::Node(node_id("node-9")), day);
    let past = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let expired = identity_from(
        &ca,
        &ca,
        Subject::Node(node_id("node-2")),
        Validity {
            not_before: past,
            not_after: past + Duration::from_secs(86_400),
        },
    );
    let client = identity_from(
        &ca,
        &ca,
        Subject::Client(ClientName::new("alice").unwrap()),
        day,
    );

    let cases = [
        (
            &foreign,
            "refused.unknown_issuer",
            "spiffe://vault/node/node-2",
            "not issued by this cluster's CA",
        ),
        (
            &other_cluster,
            "refused.wrong_cluster",
            "spiffe://other/node/node-2",
            "certificate is for cluster 'other'",
        ),
        (
            &stranger,
            "refused.not_a_member",
            "spiffe://vault/node/node-9",
            "node 'node-9' is not a member",
        ),
        (
            &expired,
            "refused.expired",
            "spiffe://vault/node/node-2",
            "certificate expired",
        ),
        (
            &client,
            "refused.not_a_node",
            "spiffe://vault/client/alice",
            "a client certificate cannot join as a node",
        ),
    ];
    for (identity, kind, presented, reason) in cases {
        let before = node1.events().count(kind);
        let end = dial_node1(identity, &ca, addr1).await;
        assert!(
            matches!(
                end,
                quinn::ConnectionError::ConnectionClosed(_)
                    | quinn::ConnectionError::TransportError(_)
            ),
            "{kind}: handshake should fail, connection ended with {end:?}"
        );
        assert_eq!(node1.events().count(kind), before + 1, "{kind} not counted");
        let event = loop {
            match events.recv().await.unwrap() {
                TransportEvent::HandshakeRefused(r) => break r,
                _ => continue,
            }
        };
        assert_eq!(event.direction, Direction::Inbound);
        assert_eq!(event.reason.kind(), kind);
        assert_eq!(event.presented.unwrap().uri(), presented);
        let text = logs.text();
        let line = text
            .lines()
            .find(|l| {
                l.contains("refused peer certificate")
                    && l.contains(presented)
                    && l.contains(reason)
            })
            .unwrap_or_else(|| panic!("no log line for {kind} in:\n{text}"));
        assert!(
            line.contains("WARN") && line.contains("direction=inbound"),
            "{line}"
        );
    }

    // Outbound: node-1 dials node-2's and node-3's addresses and finds impostors there.
    let node3_cert = identity_from(&ca, &ca, Subject::Node(node_id("node-3")), day);
    let at2 = raw_endpoint(&node3_cert, ca.cert_der()).0;
    at2.rebind(m2.socket).unwrap();
    serve(&at2);
    let at3 = raw_endpoint(&client, ca.cert_der()).0;
    at3.rebind(m3.socket).unwrap();
    serve(&at3);

    assert!(
        eventually(Duration::from_secs(5), || {
            node1.events().count("refused.unexpected_peer") >= 1
                && node1.events().count("refused.not_a_node") >= 2
        })
        .await,
        "{:?}",
        node1.events().counts()
    );
    let text = logs.text();
    assert!(
        text.lines().any(|l| l.contains("direction=outbound")
            && l.contains("presented=spiffe://vault/node/node-3")
            && l.contains("dialed node 'node-2' but 'node-3' answered")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("direction=outbound")
            && l.contains("presented=spiffe://vault/client/alice")
            && l.contains("cannot join as a node")),
        "{text}"
    );
    for st in node1.peer_status() {
        assert!(!st.connected, "{} must not be connected", st.node);
        let err = st.last_error.unwrap_or_default();
        assert!(
            err.contains("refused") || err.contains("invalid peer certificate"),
            "{}: {err}",
            st.node
        );
        assert!(st.reconnect_attempts >= 1);
    }
}
