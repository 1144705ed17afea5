//! Policy-gated PSBT signing end to end on three real node processes (SoftHSM tokens, one
//! PostgreSQL database each, etcd), every node running the dev policy of
//! `policies/examples/dev.toml`.
//!
//! PSBTs are built here with the `bitcoin` crate alone, from the key's xpub; signed
//! transactions are checked with libbitcoinconsensus. One test function runs the phases in
//! order on one cluster: aux info and key generation cost tens of seconds of CPU, so they are
//! done once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::Address;
use bitcoin::bip32::{DerivationPath, Fingerprint, Xpub};
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use strongroom_tests::cluster::{ClusterOptions, TestCluster};
use strongroom_tests::psbt::{
    Key, Out, build_psbt, check_signed, foreign_address, submit, wait_pools, wait_state,
};
use strongroom_tests::support::{api_client, db_rows, eventually};

const N: usize = 3;
const DENYLISTED: &str = "bcrt1qsfyza8dnx9dhudwpg5pxq5q4k9e7kug3ys8qcf";

/// The stricter policy node-3 runs in the last phase: spends up to 100,000 sat only.
const STRICT_POLICY: &str = r#"
version = 1
id = "strict"

[[rules]]
name = "tiny-spend"
action = "allow"
when.amount_sat = { max = 100_000 }
"#;

/// Every presignature's state on every node: (node, presig id) → (state, request id).
async fn presignature_states(cluster: &TestCluster) -> HashMap<(usize, Vec<u8>), (String, String)> {
    let mut out = HashMap::new();
    for node in 0..N {
        for row in db_rows(
            &cluster.database_url(node),
            "SELECT presig_id, state, COALESCE(request_id, '') FROM presignatures",
        )
        .await
        {
            out.insert((node, row.get(0)), (row.get(1), row.get(2)));
        }
    }
    out
}

fn approval(digest_hex: &str, approver: u32) -> String {
    let seed: [u8; 32] = sha2::Sha256::digest(format!("strongroom-dev-approver-{approver}")).into();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    hex::encode(key.sign(&hex::decode(digest_hex).unwrap()).to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn psbts_are_signed_under_every_nodes_policy() {
    let mut cluster = tokio::task::block_in_place(|| {
        TestCluster::start(ClusterOptions {
            nodes: N,
            pool_target: 6,
            pool_low_water: 3,
            pool_max: 10,
            pool_concurrency: 2,
            interactive_fallback: false,
            sign_digest_endpoint: false,
            extra_clients: vec![
                ("wallet".into(), vec!["submitter".into()]),
                ("approver-app".into(), vec!["approver".into()]),
                ("auditor".into(), vec!["auditor".into()]),
            ],
            ..ClusterOptions::default()
        })
    })
    .unwrap();
    let ops = api_client(&cluster, None);
    let wallet = api_client(&cluster, Some("wallet"));
    let approver = api_client(&cluster, Some("approver-app"));

    // ---- a key and full pools ------------------------------------------------------------------
    eventually("a leader", Duration::from_secs(60), || async {
        let r = ops.get_at(0, "/v1/cluster").await.ok()?;
        r.body["leader"].is_string().then_some(r.body)
    })
    .await;
    let created = ops
        .post_at(0, "/v1/keys", &json!({"name": "treasury", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    let mut shown = Value::Null;
    for node in 0..N {
        shown = eventually("the key", Duration::from_secs(600), || {
            let ops = ops.clone();
            let path = format!("/v1/keys/{key_id}");
            async move {
                let r = ops.get_at(node, &path).await.ok()?;
                assert_ne!(r.body["state"], "failed", "{}", r.body);
                (r.body["state"] == "ready").then_some(r.body)
            }
        })
        .await;
    }
    let key = Key {
        id: key_id.clone(),
        xpub: Xpub::from_str(shown["xpub"].as_str().unwrap()).unwrap(),
        fingerprint: Fingerprint::from_str(shown["fingerprint"].as_str().unwrap()).unwrap(),
    };
    wait_pools(&ops, N, 3).await;

    // ---- roles ---------------------------------------------------------------------------------
    let r = wallet
        .post_at(0, "/v1/keys", &json!({"name": "x", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(r.status, 403, "a submitter cannot create keys: {}", r.body);
    let r = wallet.get_at(0, "/v1/presignatures").await.unwrap();
    assert_eq!(r.status, 403);
    let (psbt_any, _) = build_psbt(&key, &[(1, 50_000)], &[Out::To(foreign_address(), 49_000)]);
    let r = approver
        .post_at(
            0,
            "/v1/sign-requests",
            &json!({"key_id": key.id, "psbt": psbt_any.to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "an approver cannot submit: {}", r.body);

    // ---- bad input: 400 naming the input or field, nothing reserved -----------------------------
    let before = presignature_states(&cluster).await;
    let r = wallet
        .post_at(
            0,
            "/v1/sign-requests",
            &json!({"key_id": key.id, "psbt": "not base64!"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.problem().unwrap().0.as_str()),
        (400, "invalid-psbt"),
        "{}",
        r.body
    );
    // Missing witness_utxo on input 0.
    let (mut no_utxo, _) = build_psbt(&key, &[(2, 80_000)], &[Out::To(foreign_address(), 79_000)]);
    no_utxo.inputs[0].witness_utxo = None;
    let (status, body) = submit(&wallet, 0, &key, &no_utxo).await;
    assert_eq!((status, body["input"].as_u64()), (400, Some(0)), "{body}");
    // A hardened path.
    let (mut hardened, _) = build_psbt(&key, &[(2, 80_000)], &[Out::To(foreign_address(), 79_000)]);
    let (pk, _) = key.child(0, 2);
    hardened.inputs[0].bip32_derivation.insert(
        pk.0,
        (key.fingerprint, DerivationPath::from_str("m/0'/2").unwrap()),
    );
    let (status, body) = submit(&wallet, 1, &key, &hardened).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("input 0"),
        "{body}"
    );
    // Outputs worth more than the inputs.
    let (overspend, _) = build_psbt(&key, &[(2, 80_000)], &[Out::To(foreign_address(), 90_000)]);
    let (status, body) = submit(&wallet, 2, &key, &overspend).await;
    assert_eq!(status, 400, "{body}");
    // Unknown key.
    let r = wallet
        .post_at(
            0,
            "/v1/sign-requests",
            &json!({"key_id": "00ff", "psbt": psbt_any.to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let after = presignature_states(&cluster).await;
    for (id, state) in &before {
        assert_eq!(
            after.get(id),
            Some(state),
            "bad input changed a presignature"
        );
    }

    // ---- 1. two inputs at different paths, signed, consensus-valid ------------------------------
    let (psbt, spent) = build_psbt(
        &key,
        &[(3, 300_000), (7, 250_000)],
        &[Out::To(foreign_address(), 400_000), Out::Change(2, 149_000)],
    );
    let (status, body) = submit(&wallet, 0, &key, &psbt).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["existing"], false);
    let id = body["request_id"].as_str().unwrap().to_owned();
    let done = wait_state(&wallet, 0, &id, &["signed"]).await;
    let tx = check_signed(&done, &spent);
    assert_eq!(tx.input.len(), 2);
    assert_eq!(done["summary"]["spend_sat"], 400_000);
    let decisions = done["decisions"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .filter(|d| d["decision"] == "allow")
            .count()
            >= 2,
        "{done}"
    );
    // Every node ends up with the signed request.
    for node in 0..N {
        let b = wait_state(&ops, node, &id, &["signed"]).await;
        assert_eq!(b["tx_hex"], done["tx_hex"]);
    }
    // A resubmission returns the existing request.
    let (status, again) = submit(&wallet, 1, &key, &psbt).await;
    assert_eq!((status, again["existing"].clone()), (202, json!(true)));
    assert_eq!(again["request_id"], id.as_str());
    // Another submitter does not see it; the auditor does.
    let r = ops
        .get_at(0, "/v1/sign-requests?state=signed")
        .await
        .unwrap();
    assert!(
        r.body["sign_requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["request_id"] == id.as_str())
    );

    // ---- 2. the dev policy: large needs one approval; denylisted is rejected ----------------------
    let (large, large_spent) = build_psbt(
        &key,
        &[(4, 3_000_000)],
        &[
            Out::To(foreign_address(), 2_000_000),
            Out::Change(3, 999_000),
        ],
    );
    let (status, body) = submit(&wallet, 1, &key, &large).await;
    assert_eq!(status, 202, "{body}");
    let large_id = body["request_id"].as_str().unwrap().to_owned();
    let waiting = wait_state(&wallet, 1, &large_id, &["awaiting_approvals"]).await;
    assert_eq!(waiting["needs"]["group"], "treasurers", "{waiting}");
    let digest = waiting["digest"].as_str().unwrap().to_owned();
    // Refused approvals: a signature by a key the policy does not list for that name, an
    // unknown approver, and a client without the approver role.
    let path = format!("/v1/sign-requests/{large_id}/approvals");
    let r = approver
        .post_at(
            1,
            &path,
            &json!({"approver": "dev-approver-1", "signature": approval(&digest, 3)}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.problem().unwrap().0.as_str()),
        (403, "approval-refused"),
        "{}",
        r.body
    );
    let r = approver
        .post_at(
            1,
            &path,
            &json!({"approver": "mallory", "signature": approval(&digest, 1)}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let r = wallet
        .post_at(
            1,
            &path,
            &json!({"approver": "dev-approver-1", "signature": approval(&digest, 1)}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "a submitter cannot approve: {}", r.body);
    let still = wallet
        .get_at(1, &format!("/v1/sign-requests/{large_id}"))
        .await
        .unwrap();
    assert_eq!(still.body["state"], "awaiting_approvals");
    assert!(still.body["approvals"].as_array().unwrap().is_empty());
    // The real approval, through another node.
    let r = approver
        .post_at(
            2,
            &path,
            &json!({"approver": "dev-approver-1", "signature": approval(&digest, 1)}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let done = wait_state(&wallet, 1, &large_id, &["signed"]).await;
    check_signed(&done, &large_spent);
    assert_eq!(done["approvals"][0]["approver"], "dev-approver-1");

    // Denylisted destination: rejected with the rule named, no presignature touched.
    wait_pools(&ops, N, 2).await;
    let before = presignature_states(&cluster).await;
    let (denied, _) = build_psbt(
        &key,
        &[(5, 60_000)],
        &[
            Out::To(
                Address::from_str(DENYLISTED).unwrap().assume_checked(),
                50_000,
            ),
            Out::Change(4, 9_000),
        ],
    );
    let (status, body) = submit(&wallet, 2, &key, &denied).await;
    assert_eq!(status, 202, "{body}");
    let denied_id = body["request_id"].as_str().unwrap().to_owned();
    let rejected = wait_state(&wallet, 2, &denied_id, &["rejected"]).await;
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("denylisted-destination"),
        "{rejected}"
    );
    for d in rejected["decisions"].as_array().unwrap() {
        assert_eq!(d["decision"], "deny", "{rejected}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = presignature_states(&cluster).await;
    for (id, state) in &before {
        assert_eq!(
            after.get(id),
            Some(state),
            "a denied request changed a presignature"
        );
    }
    assert!(
        !after.values().any(|(_, req)| req.starts_with(&denied_id)),
        "a presignature was reserved for the denied request"
    );

    // ---- 3. a stricter node votes deny and never signs; the others still sign ---------------------
    cluster.set_node_policy(2, STRICT_POLICY).unwrap();
    tokio::task::block_in_place(|| {
        cluster.stop_node(2).unwrap();
        cluster.start_node(2).unwrap();
    });
    eventually("node-3 back", Duration::from_secs(60), || async {
        let r = ops.get_at(2, "/v1/policy").await.ok()?;
        (r.body["policy"]["id"] == "strict").then_some(r.body)
    })
    .await;
    wait_pools(&ops, N, 2).await;
    let (medium, medium_spent) = build_psbt(
        &key,
        &[(6, 400_000)],
        &[Out::To(foreign_address(), 300_000), Out::Change(5, 99_000)],
    );
    // Submitted to the stricter node itself: it hands the signing to a node that allowed it.
    let (status, body) = submit(&wallet, 2, &key, &medium).await;
    assert_eq!(status, 202, "{body}");
    let medium_id = body["request_id"].as_str().unwrap().to_owned();
    let done = wait_state(&wallet, 2, &medium_id, &["signed"]).await;
    check_signed(&done, &medium_spent);
    let node3 = done["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["node_id"] == "node-3")
        .cloned()
        .unwrap();
    assert_eq!(node3["decision"], "deny", "{done}");
    let rows = db_rows(
        &cluster.database_url(2),
        &format!("SELECT count(*) FROM presignatures WHERE request_id LIKE '{medium_id}%'"),
    )
    .await;
    assert_eq!(
        rows[0].get::<_, i64>(0),
        0,
        "node-3 reserved or consumed a presignature"
    );
    let rows = db_rows(
        &cluster.database_url(0),
        &format!("SELECT signers FROM signatures WHERE request_id = '{medium_id}'"),
    )
    .await
    .into_iter()
    .chain(
        db_rows(
            &cluster.database_url(1),
            &format!("SELECT signers FROM signatures WHERE request_id = '{medium_id}'"),
        )
        .await,
    )
    .map(|r| r.get::<_, String>(0))
    .collect::<Vec<_>>();
    assert_eq!(rows, vec!["node-1,node-2".to_owned()], "signer set");

    // ---- a flood from one client gets 429s while another client's request is signed --------------
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..150 {
        let wallet = wallet.clone();
        flood.spawn(async move {
            wallet
                .get_at(0, "/v1/sign-requests?limit=1")
                .await
                .unwrap()
                .status
        });
    }
    let statuses: Vec<u16> = flood.join_all().await;
    assert!(statuses.contains(&429), "no 429 in a flood: {statuses:?}");
    let (small, small_spent) = build_psbt(
        &key,
        &[(8, 70_000)],
        &[Out::To(foreign_address(), 60_000), Out::Change(6, 9_000)],
    );
    let (status, body) = submit(&ops, 0, &key, &small).await;
    assert_eq!(status, 202, "{body}");
    let done = wait_state(&ops, 0, body["request_id"].as_str().unwrap(), &["signed"]).await;
    check_signed(&done, &small_spent);

    // ---- every node's audit log exports as a bundle that verifies offline ------------------------
    let mut recorded = std::collections::BTreeSet::new();
    for node in 0..N {
        recorded.extend(audit_bundle_verifies_and_tampering_is_named(
            &cluster,
            node,
            &small.to_string(),
        ));
    }
    assert!(recorded.contains("signature_completed"), "{recorded:?}");
}

/// Runs the `strongroom` CLI as the auditor client; returns (exit code, stdout JSON).
fn strongroom_cli(cluster: &TestCluster, args: &[&str]) -> (i32, Value) {
    let out = std::process::Command::new(strongroom_tests::process::strongroom_binary().unwrap())
        .args(args)
        .arg("--json")
        .env("STRONGROOM_API_URLS", cluster.api_urls().join(","))
        .env("STRONGROOM_CA_CERT", cluster.ca_cert())
        .env("STRONGROOM_CLIENT_CERT", cluster.client_cert_of("auditor"))
        .env("STRONGROOM_CLIENT_KEY", cluster.client_key_of("auditor"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "strongroom {args:?} printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// Exports node `node`'s audit log with `strongroom audit export`, checks what it recorded,
/// verifies the bundle offline, then tampers with copies of it: a flipped byte, a deleted
/// entry, two swapped entries and a replaced checkpoint signature each fail and are named.
fn audit_bundle_verifies_and_tampering_is_named(
    cluster: &TestCluster,
    node: usize,
    psbt: &str,
) -> Vec<String> {
    let dir = cluster.dir().join(format!("audit-node-{}", node + 1));
    let bundle = dir.join("bundle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (code, report) = strongroom_cli(
        cluster,
        &[
            "audit",
            "export",
            "--out",
            bundle.to_str().unwrap(),
            "--node",
            &node.to_string(),
        ],
    );
    assert_eq!(code, 0, "export of node {}: {report}", node + 1);
    assert_eq!(report["verification"]["ok"], true, "{report}");
    let entries_text = std::fs::read_to_string(bundle.join("entries.jsonl")).unwrap();
    let entries: Vec<Value> = entries_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "node_started",
        "config_loaded",
        "policy_loaded",
        "sign_request_received",
        "vote_cast",
        "vote_received",
        "request_state_changed",
        "key_created",
        "approval_accepted",
        "presignature_reserved",
        "presignature_consumed",
        "partial_released",
        "audit_exported",
    ] {
        assert!(
            kinds.contains(kind),
            "node {} recorded no {kind}: {kinds:?}",
            node + 1
        );
    }
    // The refused approvals were sent to node-2, which recorded them.
    if node == 1 {
        assert!(kinds.contains("approval_refused"), "{kinds:?}");
    }
    // Node-3 was restarted with another policy: its log shows both starts.
    if node == 2 {
        let starts = entries
            .iter()
            .filter(|e| e["kind"] == "node_started")
            .count();
        assert!(starts >= 2, "node-3 restarted but recorded {starts} starts");
    }
    // The log never holds a PSBT in clear, only its HMAC.
    assert!(
        !entries_text.contains(psbt),
        "a PSBT is in the audit log in clear"
    );
    let received = entries
        .iter()
        .find(|e| e["kind"] == "sign_request_received")
        .unwrap();
    assert!(received["hmacs"]["psbt"].is_string(), "{received}");

    // Offline verification against the CA the operator trusts.
    let ca = cluster.ca_cert();
    let verify = |path: &std::path::Path| {
        strongroom_cli(
            cluster,
            &[
                "audit",
                "verify",
                path.to_str().unwrap(),
                "--ca",
                ca.to_str().unwrap(),
            ],
        )
    };
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["entries"], entries.len(), "{report}");
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report}");

    let lines: Vec<&str> = entries_text.lines().collect();
    let tampered = |name: &str, new_lines: Vec<String>| {
        let copy = dir.join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for file in std::fs::read_dir(&bundle).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), copy.join(file.file_name())).unwrap();
        }
        let mut text = new_lines.join("\n");
        text.push('\n');
        std::fs::write(copy.join("entries.jsonl"), text).unwrap();
        copy
    };
    let failure_of = |path: &std::path::Path| {
        let (code, report) = verify(path);
        assert_eq!(
            code,
            1,
            "tampered bundle {} verified: {report}",
            path.display()
        );
        assert_eq!(report["ok"], false, "{report}");
        report["failure"].clone()
    };

    // A flipped byte inside an entry's recorded time: that entry is named.
    let victim = lines.len() / 2;
    let mut flipped: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let entry: Value = serde_json::from_str(lines[victim]).unwrap();
    let time = entry["time_unix_ms"].as_u64().unwrap();
    flipped[victim] = lines[victim].replacen(
        &format!("\"time_unix_ms\":{time}"),
        &format!("\"time_unix_ms\":{}", time ^ 1),
        1,
    );
    assert_ne!(flipped[victim], lines[victim]);
    let failure = failure_of(&tampered("flipped", flipped));
    assert_eq!(failure["seq"], entry["seq"], "{failure}");
    assert_eq!(failure["code"], "hash_mismatch", "{failure}");

    // A deleted entry: the gap is named.
    let mut deleted: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let gone: Value = serde_json::from_str(&deleted.remove(victim)).unwrap();
    let failure = failure_of(&tampered("deleted", deleted));
    assert_eq!(failure["code"], "sequence_break", "{failure}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains(&gone["seq"].to_string()),
        "{failure}"
    );

    // Two entries swapped: named.
    let mut swapped: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    swapped.swap(victim, victim + 1);
    let failure = failure_of(&tampered("swapped", swapped));
    assert_eq!(failure["code"], "sequence_break", "{failure}");
    assert_eq!(failure["line"], victim + 1, "{failure}");

    // A checkpoint whose signature was replaced: named.
    let copy = tampered("resigned", lines.iter().map(|l| (*l).to_owned()).collect());
    let checkpoints = std::fs::read_to_string(copy.join("checkpoints.jsonl")).unwrap();
    let mut cps: Vec<Value> = checkpoints
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = cps.last_mut().unwrap();
    let sig = last["signature"].as_str().unwrap();
    let forged: String = sig.chars().rev().collect::<String>();
    last["signature"] = Value::String(forged);
    let forged_seq = last["seq"].clone();
    let text: String = cps
        .iter()
        .map(|c| format!("{}\n", serde_json::to_string(c).unwrap()))
        .collect();
    std::fs::write(copy.join("checkpoints.jsonl"), text).unwrap();
    let failure = failure_of(&copy);
    assert_eq!(failure["code"], "checkpoint_signature", "{failure}");
    assert_eq!(failure["seq"], forged_seq, "{failure}");
    kinds.into_iter().map(str::to_owned).collect()
}
