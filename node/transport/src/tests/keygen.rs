//! A real cggmp24 threshold key generation (3 parties, t = 2) over the transport.

use std::sync::Arc;
use std::time::Duration;

use cggmp24::supported_curves::Secp256k1;
use rand::rngs::OsRng;

use super::util::*;
use crate::delivery::delivery;
use crate::node::Node;
use crate::session::{ProtocolKind, SessionId, SessionSpec};

type KeygenMsg = cggmp24::keygen::ThresholdMsg<
    Secp256k1,
    cggmp24::security_level::SecurityLevel128,
    sha2::Sha256,
>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_keygen_over_the_transport() {
    init_tracing();
    let (_ca, ms) = members(3);
    let nodes = start_all(ms).await;
    all_connected(&nodes).await;
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
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
                    .start(&mut OsRng, party)
                    .await
                    .unwrap();
                assert_eq!(share.i, i);
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
    tracing::info!(public_key = %hex::encode(&keys[0]), "keygen finished");
    assert_eq!(keys.len(), 3);
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "parties disagree on the public key"
    );
    for n in &nodes {
        assert!(n.events().counts().is_empty(), "{:?}", n.events().counts());
    }
}
