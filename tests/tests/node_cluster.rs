//! Three real node processes (SoftHSM tokens, one PostgreSQL database each, etcd) generate a
//! 2-of-3 key through the API, fill their presignature pools and sign; then nodes are killed at
//! random while signing, the leader is killed, and a node releases corrupted partials. Every
//! invariant is checked from the nodes' own databases.
//!
//! One test function runs the phases in order on one cluster: aux info and key generation cost
//! tens of seconds of CPU, so they are done once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::bip32::{DerivationPath, Xpub};
use bitcoin::secp256k1::{Message, Secp256k1, ecdsa};
use rand::Rng;
use serde_json::{Value, json};
use strongroom_client::ApiClient;
use strongroom_tests::cluster::{ClusterOptions, TestCluster};
use strongroom_tests::support::{api_client, db_rows, eventually, key_ready};

const N: usize = 3;

/// A signature from the dev digest endpoint, verified with the bitcoin crate alone: the child
/// key is derived from the xpub, never taken from the node's answer.
fn verify(xpub: &Xpub, path_index: u32, digest: &[u8; 32], out: &Value) {
    let secp = Secp256k1::verification_only();
    let path = DerivationPath::from_str(&format!("m/0/{path_index}")).unwrap();
    let child = xpub.derive_pub(&secp, &path).unwrap();
    let der = hex::decode(out["der"].as_str().unwrap()).unwrap();
    let sig = ecdsa::Signature::from_der(&der).unwrap();
    secp.verify_ecdsa(&Message::from_digest(*digest), &sig, &child.public_key)
        .unwrap_or_else(|e| panic!("signature for m/0/{path_index} does not verify: {e}; {out}"));
    // Low-S, as Bitcoin requires.
    let mut normalized = sig;
    normalized.normalize_s();
    assert_eq!(normalized, sig, "signature is not low-S");
}

fn digest_for(i: u32, salt: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(format!("strongroom test message {salt} {i}")).into()
}

/// Signs through node `node` (or any live node), retrying while no pool can serve.
async fn sign_pooled(
    api: &ApiClient,
    node: usize,
    key_id: &str,
    index: u32,
    digest: &[u8; 32],
    limit: Duration,
) -> Value {
    let body =
        json!({"key_id": key_id, "path": format!("0/{index}"), "digest": hex::encode(digest)});
    let start = Instant::now();
    loop {
        let r = api
            .post_at(node, "/v1/dangerous-dev/sign-digest", &body)
            .await
            .unwrap();
        if r.status == 200 {
            return r.body;
        }
        let (kind, detail) = r.problem().unwrap_or_default();
        assert!(
            matches!(
                kind.as_str(),
                "no-presignature" | "peer-unavailable" | "peer-refused"
            ),
            "signing failed: {} {kind}: {detail}",
            r.status
        );
        assert!(
            start.elapsed() < limit,
            "no pool served within {limit:?}: {kind}: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The invariants, read from every node's database: a presignature id serves one request on
/// every node that consumed it, and no nonce point appears twice.
async fn check_databases(cluster: &TestCluster) -> (usize, usize) {
    let mut consumed_for: HashMap<Vec<u8>, HashSet<String>> = HashMap::new();
    let mut nonce_of_presig: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    let mut signature_nonces: HashMap<Vec<u8>, String> = HashMap::new();
    let mut signature_rs: HashSet<Vec<u8>> = HashSet::new();
    let mut signatures = 0;
    for node in 0..N {
        let url = cluster.database_url(node);
        for row in db_rows(
            &url,
            "SELECT presig_id, request_id, nonce_point FROM presignatures WHERE state = 'consumed'",
        )
        .await
        {
            let id: Vec<u8> = row.get(0);
            let req: String = row.get(1);
            let nonce: Vec<u8> = row.get(2);
            consumed_for.entry(id.clone()).or_default().insert(req);
            nonce_of_presig.entry(id).or_default().insert(nonce);
        }
        for row in db_rows(
            &url,
            "SELECT request_id, nonce_point, r FROM signatures WHERE mode = 'pool'",
        )
        .await
        {
            signatures += 1;
            let req: String = row.get(0);
            let nonce: Vec<u8> = row.get(1);
            let r: Vec<u8> = row.get(2);
            if let Some(other) = signature_nonces.insert(nonce.clone(), req.clone()) {
                panic!(
                    "nonce point {} used by requests {other} and {req}",
                    hex::encode(nonce)
                );
            }
            assert!(
                signature_rs.insert(r),
                "two signatures share r (request {req})"
            );
        }
    }
    for (id, reqs) in &consumed_for {
        assert_eq!(
            reqs.len(),
            1,
            "presignature {} consumed for different requests {reqs:?}",
            hex::encode(id)
        );
    }
    let mut all_nonces = HashSet::new();
    for (id, nonces) in &nonce_of_presig {
        assert_eq!(
            nonces.len(),
            1,
            "presignature {} used with two nonce points",
            hex::encode(id)
        );
        assert!(
            all_nonces.insert(nonces.iter().next().unwrap().clone()),
            "two presignatures produced the same nonce point"
        );
    }
    (consumed_for.len(), signatures)
}

async fn leader_of(api: &ApiClient, node: usize) -> Option<String> {
    let r = api.get_at(node, "/v1/cluster").await.ok()?;
    r.body["leader"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_generate_fill_sign_survive_crashes_and_name_a_cheater() {
    let mut cluster = tokio::task::block_in_place(|| {
        TestCluster::start(ClusterOptions {
            nodes: N,
            pool_target: 8,
            pool_low_water: 4,
            pool_max: 12,
            pool_concurrency: 2,
            interactive_fallback: false,
            ..ClusterOptions::default()
        })
    })
    .unwrap();
    let api = api_client(&cluster, None);

    // ---- the cluster is up: members, a leader, connections --------------------------------
    let state = eventually(
        "a leader and connected peers",
        Duration::from_secs(60),
        || async {
            let r = api.get_at(0, "/v1/cluster").await.ok()?;
            let members = r.body["members"].as_array()?;
            let connected = members
                .iter()
                .filter(|m| m["this_node"] == false)
                .all(|m| m["connected"] == true);
            (r.body["leader"].is_string() && connected).then_some(r.body)
        },
    )
    .await;
    assert_eq!(state["members"].as_array().unwrap().len(), N);

    // ---- key generation through the API ------------------------------------------------------
    let created = api
        .post_at(0, "/v1/keys", &json!({"name": "treasury", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    assert_eq!(created.body["state"], "generating");
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    let mut xpubs = Vec::new();
    for node in 0..N {
        let key = key_ready(&api, node, &key_id, Duration::from_secs(600)).await;
        assert_eq!(key["threshold"], 2);
        assert_eq!(key["network"], "regtest");
        assert_eq!(key["participants"].as_array().unwrap().len(), N);
        let xpub = key["xpub"].as_str().unwrap().to_owned();
        assert!(xpub.starts_with("tpub"), "{xpub}");
        let fp = key["fingerprint"].as_str().unwrap();
        assert_eq!(
            key["descriptors"]["receive"]
                .as_str()
                .unwrap()
                .split('#')
                .next()
                .unwrap(),
            format!("wpkh([{fp}]{xpub}/0/*)")
        );
        assert_eq!(
            key["descriptors"]["change"]
                .as_str()
                .unwrap()
                .split('#')
                .next()
                .unwrap(),
            format!("wpkh([{fp}]{xpub}/1/*)")
        );
        xpubs.push(xpub);
    }
    assert!(
        xpubs.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree on the xpub"
    );
    let xpub = Xpub::from_str(&xpubs[0]).unwrap();
    // Bad input: unknown key, hardened path, short digest.
    let r = api.get_at(1, "/v1/keys/00ff").await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.problem().unwrap().0, "unknown-key");
    let r = api
        .post_at(
            0,
            "/v1/dangerous-dev/sign-digest",
            &json!({"key_id": key_id, "path": "0'/1", "digest": hex::encode([1u8; 32])}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.problem().unwrap().0.as_str()),
        (400, "invalid-path")
    );
    let r = api
        .post_at(
            0,
            "/v1/dangerous-dev/sign-digest",
            &json!({"key_id": key_id, "path": "0/1", "digest": "abcd"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);

    // ---- the pools fill ----------------------------------------------------------------------
    for node in 0..N {
        eventually(
            "the pools this node holds to reach the low-water mark",
            Duration::from_secs(300),
            || {
                let api = api.clone();
                async move {
                    let r = api.get_at(node, "/v1/presignatures").await.ok()?;
                    let pools = r.body["pools"].as_array()?.clone();
                    let held: Vec<&Value> = pools
                        .iter()
                        .filter(|p| p["held_by_this_node"] == true)
                        .collect();
                    (held.len() == 2 && held.iter().all(|p| p["available"].as_i64() >= Some(4)))
                        .then_some(r.body)
                }
            },
        )
        .await;
    }

    // ---- acceptance 1: 100 sighashes over 100 paths from the pool ------------------------------
    let mut latencies = Vec::new();
    for i in 0..100u32 {
        let digest = digest_for(i, "pool");
        let out = sign_pooled(
            &api,
            (i as usize) % N,
            &key_id,
            i,
            &digest,
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(out["mode"], "pool", "{out}");
        verify(&xpub, i, &digest, &out);
        latencies.push(out["duration_ms"].as_f64().unwrap());
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "100 pooled signatures: p50 {:.2} ms, p99 {:.2} ms (coordinator)",
        latencies[49], latencies[98]
    );
    let (consumed, signatures) = check_databases(&cluster).await;
    assert_eq!(signatures, 100);
    assert_eq!(consumed, 100);

    // ---- acceptance 2: SIGKILL at random moments during 100 signings ---------------------------
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    // The killer owns the cluster for the phase and hands it back when it stops.
    let killer = std::thread::spawn(move || {
        let mut rng = rand::thread_rng();
        let mut kills = 0usize;
        loop {
            let wait = Duration::from_millis(rng.gen_range(2000..5000));
            match stop_rx.recv_timeout(wait) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
            let victim = rng.gen_range(0..N);
            cluster.kill_node(victim).unwrap();
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
            cluster.start_node(victim).unwrap();
        }
        (cluster, kills)
    });
    let mut signed = 0u32;
    let mut i = 1000u32;
    let mut failures = 0;
    let crash_start = Instant::now();
    while signed < 100 {
        assert!(
            crash_start.elapsed() < Duration::from_secs(900),
            "crash phase too slow: {signed} signed"
        );
        i += 1;
        let digest = digest_for(i, "crash");
        let node = rand::thread_rng().gen_range(0..N);
        let body =
            json!({"key_id": key_id, "path": format!("0/{i}"), "digest": hex::encode(digest)});
        match api
            .post_at(node, "/v1/dangerous-dev/sign-digest", &body)
            .await
        {
            Ok(r) if r.status == 200 => {
                verify(&xpub, i, &digest, &r.body);
                signed += 1;
            }
            Ok(_) | Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stop_tx.send(()).unwrap();
    let (returned, kills) = killer.join().unwrap();
    cluster = returned;
    eprintln!("crash phase: 100 signed, {failures} attempts failed, {kills} nodes killed");
    assert!(kills >= 3, "the crash phase killed only {kills} nodes");
    let (consumed, signatures) = check_databases(&cluster).await;
    assert!(signatures >= 200, "{signatures}");
    assert!(consumed >= 200, "{consumed}");

    // ---- acceptance 3: kill the leader; another takes over and the pools keep refilling ------
    let leader = eventually("a leader", Duration::from_secs(60), || {
        let api = api.clone();
        async move { leader_of(&api, 0).await.map(Value::String) }
    })
    .await;
    let leader = leader.as_str().unwrap().to_owned();
    let leader_index: usize = leader.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let survivor = (leader_index + 1) % N;
    tokio::task::block_in_place(|| cluster.kill_node(leader_index)).unwrap();
    let killed_at = Instant::now();
    let new_leader = eventually("a new leader", Duration::from_secs(30), || {
        let api = api.clone();
        let old = leader.clone();
        async move {
            let l = leader_of(&api, survivor).await?;
            (l != old).then_some(Value::String(l))
        }
    })
    .await;
    eprintln!(
        "leader {leader} killed; {new_leader} leads after {:?}",
        killed_at.elapsed()
    );
    // Drain the survivors' pool, then watch it refill.
    let survivors: Vec<usize> = (0..N).filter(|n| *n != leader_index).collect();
    let pair = format!(
        "{},{}",
        cluster.node_ids()[survivors[0]],
        cluster.node_ids()[survivors[1]]
    );
    for k in 0..6u32 {
        let digest = digest_for(k, "leader");
        let out = sign_pooled(
            &api,
            survivors[0],
            &key_id,
            5000 + k,
            &digest,
            Duration::from_secs(120),
        )
        .await;
        verify(&xpub, 5000 + k, &digest, &out);
    }
    let first_survivor = survivors[0];
    eventually(
        "the survivors' pool to refill under the new leader",
        Duration::from_secs(180),
        || {
            let api = api.clone();
            let pair = pair.clone();
            async move {
                let r = api.get_at(first_survivor, "/v1/presignatures").await.ok()?;
                let pool = r.body["pools"]
                    .as_array()?
                    .iter()
                    .find(|p| {
                        p["signer_set"].as_array().map(|s| {
                            s.iter()
                                .map(|v| v.as_str().unwrap_or(""))
                                .collect::<Vec<_>>()
                                .join(",")
                        }) == Some(pair.clone())
                    })?
                    .clone();
                (pool["available"].as_i64()? >= 8).then_some(pool)
            }
        },
    )
    .await;
    tokio::task::block_in_place(|| cluster.start_node(leader_index)).unwrap();

    // ---- acceptance 4: a cheating signer is detected and named -------------------------------
    let cheat = N - 1;
    let cheater_id = cluster.node_ids()[cheat].clone();
    tokio::task::block_in_place(|| {
        cluster.stop_node(cheat)?;
        cluster.start_node_with_env(
            cheat,
            &[(
                "STRONGROOM__DEV__DANGEROUS_CORRUPT_PARTIALS".to_owned(),
                "true".to_owned(),
            )],
        )
    })
    .unwrap();
    // The cheater coordinates: a coordinator prefers the pools it holds, so once the cheater's
    // pools have presignatures, the signing runs with it as a signer.
    eventually(
        "the cheater's pools to hold presignatures",
        Duration::from_secs(180),
        || {
            let api = api.clone();
            async move {
                let r = api.get_at(cheat, "/v1/presignatures").await.ok()?;
                let pools = r.body["pools"].as_array()?.clone();
                let held: Vec<&Value> = pools
                    .iter()
                    .filter(|p| p["held_by_this_node"] == true)
                    .collect();
                (held.len() == 2 && held.iter().all(|p| p["available"].as_i64() >= Some(2)))
                    .then_some(r.body)
            }
        },
    )
    .await;
    let mut attempt = 0u32;
    let verdict = eventually("a signing attempt with the cheater as a signer", Duration::from_secs(180), || {
        attempt += 1;
        let api = api.clone();
        let cheater_id = cheater_id.clone();
        let body = json!({"key_id": key_id, "path": format!("0/{}", 7000 + attempt), "digest": hex::encode(digest_for(7000 + attempt, "cheat"))});
        async move {
            let r = api.post_at(cheat, "/v1/dangerous-dev/sign-digest", &body).await.ok()?;
            if r.status == 200 {
                // Served by a pool without the cheater: its partial never took part.
                let signers = r.body["signers"].as_array()?;
                assert!(
                    !signers.iter().any(|s| s.as_str() == Some(cheater_id.as_str())),
                    "a signature with a corrupted partial was released: {}",
                    r.body
                );
                return None;
            }
            match r.problem() {
                Some((kind, _)) if kind == "no-presignature" || kind == "peer-unavailable" => None,
                _ => Some(json!({"status": r.status, "body": r.body})),
            }
        }
    })
    .await;
    assert_eq!(verdict["status"], 502, "{verdict}");
    assert_eq!(
        verdict["body"]["type"],
        "https://strongroom.dev/problems/signer-misbehaved"
    );
    assert_eq!(
        verdict["body"]["culprits"],
        json!([cheater_id]),
        "{verdict}"
    );
    let (_, metrics) = api.get_text_at(cheat, "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("strongroom_session_failures_total")
                && l.contains("protocol=\"sign\"")
                && l.contains(&format!("culprit=\"{cheater_id}\""))),
        "the cheater is not counted in the metrics"
    );
    assert!(cluster.logs(cheat).contains(&cheater_id));
    check_databases(&cluster).await;
}
