//! `strongroom node run` refuses to start with a clear error: a configuration field that is
//! wrong names the file and the field; an unreachable PostgreSQL or etcd names the endpoint.
//! Real tokens, a real PostgreSQL and etcd; the node process is the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use strongroom_tests::cluster::{ClusterOptions, TestCluster};
use strongroom_tests::ports::free_tcp_port;
use strongroom_tests::support::run_node;

#[test]
fn start_up_errors_name_the_field_or_the_endpoint() {
    let cluster = TestCluster::provision(ClusterOptions::default()).unwrap();
    let config = cluster.config_path(0).display().to_string();

    // A field with a value the node cannot use: the file and the field are named.
    let (ok, err) = run_node(&cluster, &[("STRONGROOM__POOL__LOW_WATER", "500".into())]);
    assert!(!ok);
    assert!(err.contains(&config), "{err}");
    assert!(err.contains("`pool`") && err.contains("low_water"), "{err}");

    // Fixture primes outside dev mode are refused before anything starts.
    let (ok, err) = run_node(&cluster, &[("STRONGROOM__NODE__DEV_MODE", "false".into())]);
    assert!(!ok);
    assert!(
        err.contains("primes.source") || err.contains("dev_mode"),
        "{err}"
    );

    // PostgreSQL that does not answer: the endpoint is named.
    let dead = free_tcp_port().unwrap();
    let (ok, err) = run_node(
        &cluster,
        &[(
            "STRONGROOM__DATABASE__URL",
            format!("postgresql://strongroom@127.0.0.1:{dead}/node_1"),
        )],
    );
    assert!(!ok);
    assert!(err.contains(&format!("127.0.0.1:{dead}/node_1")), "{err}");

    // etcd that does not answer: the endpoint is named.
    let dead = free_tcp_port().unwrap();
    let (ok, err) = run_node(
        &cluster,
        &[(
            "STRONGROOM__ETCD__ENDPOINTS",
            format!("[\"http://127.0.0.1:{dead}\"]"),
        )],
    );
    assert!(!ok);
    assert!(err.contains(&format!("127.0.0.1:{dead}")), "{err}");

    // A token that does not exist: the label is named.
    let (ok, err) = run_node(
        &cluster,
        &[("STRONGROOM__TOKEN__LABEL", "no-such-token".into())],
    );
    assert!(!ok);
    assert!(err.contains("no-such-token"), "{err}");
}
