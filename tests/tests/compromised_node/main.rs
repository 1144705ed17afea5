//! The policy gate against a compromised member and racing clients, on three real node
//! processes (SoftHSM tokens, one PostgreSQL database each, etcd).
//!
//! Node-3 plays the compromised member: it runs with `[dev] dangerous_peer_request_endpoint`,
//! so the test can make it send any control message, as itself, to the honest nodes. Every
//! node runs [`POLICY`]: spends up to 1,000,000 sat each and 1,500,000 sat per rolling hour.
//!
//! One cluster serves every phase (aux info and key generation cost tens of seconds of CPU);
//! each phase is a function of its own module, named for the property it shows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod window;

use std::time::Duration;

use serde_json::json;
use strongroom_client::ApiClient;
use strongroom_tests::cluster::{ClusterOptions, TestCluster};
use strongroom_tests::psbt::{Key, wait_pools};
use strongroom_tests::support::{api_client, eventually, key_ready};

/// Nodes in the cluster.
pub const N: usize = 3;
/// The compromised member (0-based index): node-3.
pub const COMPROMISED: usize = 2;

/// Every node's policy: an hourly cap that a burst of requests must not exceed.
pub const POLICY: &str = r#"
version = 1
id = "capped"

[[rules]]
name = "within-hourly-cap"
action = "allow"
[rules.when]
amount_sat = { max = 1_000_000 }
rolling_amount_sat = { seconds = 3_600, max = 1_500_000 }

[[rules]]
name = "hourly-cap"
action = "deny"
reason = "above the 1,500,000 sat hourly cap"
when.amount_sat = { max = 1_000_000 }
"#;

/// What every phase gets.
pub struct Ctx {
    /// The cluster.
    pub cluster: TestCluster,
    /// The harness's client (every role).
    pub ops: ApiClient,
    /// A client with the submitter role only.
    pub wallet: ApiClient,
    /// The ready 2-of-3 key.
    pub key: Key,
}

impl Ctx {
    /// Sends `request` (a control message as JSON) from the compromised node to node `to`
    /// (0-based) and returns the reply: the peer's answer, or `{"error": {kind, detail}}`.
    pub async fn from_compromised(
        &self,
        to: usize,
        request: serde_json::Value,
    ) -> serde_json::Value {
        let r = self
            .ops
            .post_at(
                COMPROMISED,
                "/v1/dangerous-dev/peer-request",
                &json!({"to": format!("node-{}", to + 1), "request": request}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_node_and_racing_clients_cannot_pass_the_policy_gate() {
    let cluster = tokio::task::block_in_place(|| {
        TestCluster::start(ClusterOptions {
            nodes: N,
            pool_target: 8,
            pool_low_water: 4,
            pool_max: 12,
            pool_concurrency: 2,
            interactive_fallback: false,
            sign_digest_endpoint: false,
            peer_request_endpoint: vec![COMPROMISED],
            policy: POLICY.to_owned(),
            extra_clients: vec![
                ("wallet".into(), vec!["submitter".into()]),
                ("withdrawal-service".into(), vec!["submitter".into()]),
            ],
            ..ClusterOptions::default()
        })
    })
    .unwrap();
    let ops = api_client(&cluster, None);
    let wallet = api_client(&cluster, Some("wallet"));
    eventually("a leader", Duration::from_secs(60), || async {
        let r = ops.get_at(0, "/v1/cluster").await.ok()?;
        r.body["leader"].is_string().then_some(r.body)
    })
    .await;
    let created = ops
        .post_at(0, "/v1/keys", &json!({"name": "capped", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    for node in 0..N {
        key_ready(&ops, node, &key_id, Duration::from_secs(600)).await;
    }
    let key = Key::fetch(&ops, 0, &key_id).await;
    wait_pools(&ops, N, 4).await;
    let ctx = Ctx {
        cluster,
        ops,
        wallet,
        key,
    };

    window::concurrent_requests_fit_the_cap(&ctx).await;
    window::a_peers_failed_keeps_a_released_spend(&ctx).await;
}
