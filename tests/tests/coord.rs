//! Coordination against a real etcd: membership, one leader, take-over when the leader dies,
//! recovery after etcd restarts.

// Helpers outside #[test] functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use strongroom_coord::{CoordConfig, CoordError, Coordinator};
use strongroom_tests::etcd::Etcd;

fn config(etcd: &Etcd, node: &str) -> CoordConfig {
    let mut c = CoordConfig::new(vec![etcd.endpoint()], "test-cluster", node);
    c.lease_ttl_secs = 2;
    c.poll_interval = Duration::from_millis(200);
    c
}

async fn wait_for<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn leaders(nodes: &[&Coordinator]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|c| {
            let s = c.state();
            s.is_leader.then(|| s.leader.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn unreachable_etcd_names_the_endpoint() {
    let port = strongroom_tests::ports::free_tcp_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = CoordConfig::new(vec![endpoint.clone()], "c", "node-1");
    let err = match Coordinator::start(cfg).await {
        Err(e) => e,
        Ok(_) => panic!("no etcd listens there"),
    };
    assert!(matches!(err, CoordError::Unreachable { .. }));
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_takeover_and_etcd_restart() {
    let mut etcd = Etcd::start().unwrap();
    let a = Coordinator::start(config(&etcd, "node-1")).await.unwrap();
    let b = Coordinator::start(config(&etcd, "node-2")).await.unwrap();
    let c = Coordinator::start(config(&etcd, "node-3")).await.unwrap();
    let all = |n: &[&Coordinator]| {
        n.iter().all(|x| {
            let s = x.state();
            s.members.len() == 3 && s.leader.is_some()
        }) && leaders(n).len() == 1
    };
    wait_for("membership and a leader", Duration::from_secs(15), || {
        all(&[&a, &b, &c])
    })
    .await;
    let l = leaders(&[&a, &b, &c]);
    assert_eq!(l.len(), 1, "exactly one leader: {l:?}");
    let leader = l[0].clone();
    for x in [&a, &b, &c] {
        assert_eq!(
            x.state().leader.as_deref(),
            Some(leader.as_str()),
            "everyone agrees"
        );
    }

    // The leader dies without revoking its lease: another node takes over once it expires.
    let mut rest = Vec::new();
    for (id, x) in [("node-1", a), ("node-2", b), ("node-3", c)] {
        if id == leader { drop(x) } else { rest.push(x) }
    }
    let took = wait_for("a new leader", Duration::from_secs(10), || {
        let l = leaders(&[&rest[0], &rest[1]]);
        l.len() == 1 && l[0] != leader
    })
    .await;
    eprintln!("leader take-over after {took:?}");
    wait_for("the dead node to leave", Duration::from_secs(10), || {
        rest.iter().all(|x| !x.state().members.contains(&leader))
    })
    .await;

    // etcd restarts: both nodes come back, and again exactly one leads.
    etcd.restart().unwrap();
    wait_for(
        "recovery after etcd restart",
        Duration::from_secs(20),
        || {
            rest.iter()
                .all(|x| x.state().etcd_reachable && x.state().members.len() == 2)
                && leaders(&[&rest[0], &rest[1]]).len() == 1
        },
    )
    .await;

    // A clean shutdown revokes the lease at once.
    let mut rest = rest.into_iter();
    let (first, second) = (rest.next().unwrap(), rest.next().unwrap());
    let gone = first.state().leader.clone();
    first.shutdown().await;
    wait_for(
        "the other node to see the departure",
        Duration::from_secs(5),
        || second.state().members.len() == 1 && second.state().is_leader,
    )
    .await;
    let _ = gone;
}
