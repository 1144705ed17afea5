//! Coordination against a real etcd: membership, one leader, take-over when the leader dies,
//! recovery after etcd restarts; eligibility to lead: a leader made ineligible resigns and the
//! other member is elected at once while its membership lease stays alive, and campaigns again
//! once eligible; a member made ineligible while it waits is not elected when the leader leaves.

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

// ---- eligibility to lead ------------------------------------------------------------------

/// Whether `c` leads, and everyone in `all` agrees that `id` leads.
fn leads(c: &Coordinator, id: &str, all: &[&Coordinator]) -> bool {
    c.state().is_leader && all.iter().all(|x| x.state().leader.as_deref() == Some(id))
}

/// Two members on `etcd`, once both see each other and agree on a leader: the leader and the
/// follower, each with its node id.
async fn leader_and_follower(
    etcd: &Etcd,
) -> ((Coordinator, &'static str), (Coordinator, &'static str)) {
    let a = Coordinator::start(config(etcd, "node-1")).await.unwrap();
    let b = Coordinator::start(config(etcd, "node-2")).await.unwrap();
    wait_for("membership and a leader", Duration::from_secs(15), || {
        [&a, &b].iter().all(|x| x.state().members.len() == 2)
            && (leads(&a, "node-1", &[&a, &b]) || leads(&b, "node-2", &[&a, &b]))
    })
    .await;
    if a.state().is_leader {
        ((a, "node-1"), (b, "node-2"))
    } else {
        ((b, "node-2"), (a, "node-1"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ineligible_leader_resigns_and_campaigns_again_once_eligible() {
    let etcd = Etcd::start().unwrap();
    let ((leader, leader_id), (other, other_id)) = leader_and_follower(&etcd).await;
    assert!(!other.state().is_leader);

    // Not eligible: the leader resigns and the other member is elected without waiting for a
    // lease to expire (none does: both stay members).
    leader.set_eligible(false);
    assert!(!leader.eligibility().get());
    let took = wait_for("the other member to lead", Duration::from_secs(5), || {
        leads(&other, other_id, &[&leader, &other]) && !leader.state().is_leader
    })
    .await;
    eprintln!("take-over after resigning: {took:?}");
    for x in [&leader, &other] {
        let s = x.state();
        assert!(s.etcd_reachable, "{s:?}");
        assert_eq!(s.members.len(), 2, "both stay members: {s:?}");
    }
    // Still not leading a while later (several lease lifetimes: the lease is kept alive).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!leader.state().is_leader);
    assert!(leads(&other, other_id, &[&leader, &other]));
    assert_eq!(leader.state().members.len(), 2);

    // Eligible again: it campaigns again, behind the current leader, which keeps leading.
    leader.set_eligible(true);
    assert!(leader.eligibility().get());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(leads(&other, other_id, &[&leader, &other]));
    assert!(!leader.state().is_leader);

    // The current leader leaves: the campaigning member is elected.
    other.shutdown().await;
    let took = wait_for(
        "the eligible member to lead again",
        Duration::from_secs(5),
        || leads(&leader, leader_id, &[&leader]) && leader.state().members.len() == 1,
    )
    .await;
    eprintln!("elected again after the other member left: {took:?}");
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ineligible_member_is_not_elected_when_the_leader_leaves() {
    let etcd = Etcd::start().unwrap();
    let ((leader, _), (follower, follower_id)) = leader_and_follower(&etcd).await;

    // The follower withdraws its queued campaign: when the leader leaves, nobody leads.
    follower.set_eligible(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    leader.shutdown().await;
    wait_for("the leader's departure", Duration::from_secs(5), || {
        let s = follower.state();
        s.members.len() == 1 && s.leader.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = follower.state();
    assert!(!s.is_leader && s.leader.is_none(), "{s:?}");

    // Eligible again: it campaigns and, alone, is elected.
    follower.set_eligible(true);
    wait_for("the member to lead", Duration::from_secs(5), || {
        leads(&follower, follower_id, &[&follower])
    })
    .await;
    follower.shutdown().await;
}
