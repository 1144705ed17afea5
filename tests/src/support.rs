//! Helpers the cluster tests share: API clients of a test cluster, polling until a condition
//! holds, and reading a node's database directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::Value;
use strongroom_client::{ApiClient, ClientConfig};
use strongroom_devenv::cluster::TestCluster;

/// An API client of every node of `cluster`: the harness's default client, or the extra
/// client `name`.
pub fn api_client(cluster: &TestCluster, name: Option<&str>) -> ApiClient {
    let (client_cert, client_key) = match name {
        None => (cluster.client_cert(), cluster.client_key()),
        Some(n) => (cluster.client_cert_of(n), cluster.client_key_of(n)),
    };
    ApiClient::new(ClientConfig {
        urls: cluster.api_urls(),
        ca_cert: cluster.ca_cert(),
        client_cert,
        client_key,
        cluster_id: None,
        timeout: Duration::from_secs(90),
    })
    .unwrap()
}

/// Polls `f` every 300 ms until it yields a value; panics naming `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until key `key_id` is ready on node `node` (failing at once if its generation failed)
/// and returns the node's view of the key (`GET /v1/keys/{key_id}`).
pub async fn key_ready(api: &ApiClient, node: usize, key_id: &str, limit: Duration) -> Value {
    let path = format!("/v1/keys/{key_id}");
    eventually("the key to be ready", limit, || {
        let path = path.clone();
        async move {
            let r = api.get_at(node, &path).await.ok()?;
            assert_ne!(
                r.body["state"], "failed",
                "key generation failed: {}",
                r.body
            );
            (r.body["state"] == "ready").then_some(r.body)
        }
    })
    .await
}

/// The rows `sql` returns from the database at `url`.
pub async fn db_rows(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let rows = client.query(sql, &[]).await.unwrap();
    drop(client);
    let _ = task.await;
    rows
}

/// Runs `strongroom node run` for node 0 of `cluster` in the foreground with the extra
/// environment `env` (e.g. `STRONGROOM__SECTION__FIELD` overrides); returns whether it exited
/// successfully and its stderr.
pub fn run_node(cluster: &TestCluster, env: &[(&str, String)]) -> (bool, String) {
    let mut cmd =
        std::process::Command::new(strongroom_devenv::process::strongroom_binary().unwrap());
    cmd.args(["node", "run", "--config"])
        .arg(cluster.config_path(0))
        .envs(cluster.softhsm().env())
        .env("STRONGROOM_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
