//! The node's audit log in its PostgreSQL store against a real server: an entry commits or
//! rolls back with the state change it records, concurrent appenders build one unbroken chain,
//! entries are append-only, and what the store gives back verifies offline as a bundle.

// Helpers outside #[test] functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::json;
use strongroom_store::strongroom_audit::{
    AuditEvent, BundleContents, Checkpoint, CheckpointSchedule, EventKind, GENESIS_PREV_HASH,
    SoftwareAuditKey, verify_bundle, verify_chain, write_bundle,
};
use strongroom_store::{Store, StoreError};
use strongroom_tests::postgres::Postgres;
use strongroom_transport::pki::{ClusterCa, SoftwareKey, Validity};
use strongroom_transport::{ClusterId, NodeId, Subject};

const NODE: &str = "node-1";
const CLUSTER: &str = "vault";

async fn store(pg: &Postgres, connections: usize) -> Store {
    Store::connect(&pg.url(), connections)
        .await
        .expect("connect")
}

fn key_created(key_id: &str) -> AuditEvent {
    AuditEvent::new(NODE, EventKind::KeyCreated)
        .field("key_id", key_id)
        .field("threshold", 2)
        .field("participants", json!(["node-1", "node-2", "node-3"]))
}

async fn key_count(store: &Store, key_id: &str) -> i64 {
    let c = store.client().await.unwrap();
    c.query_one("SELECT count(*) FROM keys WHERE key_id = $1", &[&key_id])
        .await
        .unwrap()
        .get(0)
}

async fn entry_count(store: &Store) -> i64 {
    let c = store.client().await.unwrap();
    c.query_one("SELECT count(*) FROM audit_entries", &[])
        .await
        .unwrap()
        .get(0)
}

const INSERT_KEY: &str = "INSERT INTO keys (key_id, name, threshold, participants, state) \
                          VALUES ($1, 'treasury', 2, ARRAY['node-1','node-2','node-3'], 'generating')";

#[tokio::test]
async fn a_state_change_and_its_entry_commit_together() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg, 4).await;
    assert_eq!(s.audit_head().await.unwrap().next_seq, 0);

    let (rows, entry) = s
        .with_audit(key_created("k1"), |tx| {
            Box::pin(async move { Ok::<_, StoreError>(tx.execute(INSERT_KEY, &[&"k1"]).await?) })
        })
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(entry.seq, 0);
    assert_eq!(entry.prev_hash, GENESIS_PREV_HASH);
    assert_eq!(entry.kind, "key_created");
    assert_eq!(key_count(&s, "k1").await, 1);

    let stored = s.audit_entries(0, u64::MAX, 100).await.unwrap();
    assert_eq!(stored, std::slice::from_ref(&entry));
    let head = s.audit_head().await.unwrap();
    assert_eq!((head.next_seq, head.head_hash), (1, entry.hash));
    assert_eq!(head.head_seq(), Some(0));
}

#[tokio::test]
async fn a_failing_state_change_rolls_back_its_entry() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg, 4).await;
    s.append_audit(AuditEvent::new(NODE, EventKind::NodeStarted))
        .await
        .unwrap();
    let before = s.audit_head().await.unwrap();

    // The state change does its write, then fails: neither the write nor the entry remains.
    let err = s
        .with_audit(key_created("k1"), |tx| {
            Box::pin(async move {
                tx.execute(INSERT_KEY, &[&"k1"]).await?;
                Err::<(), _>(StoreError::Refused("policy says no".into()))
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    assert_eq!(key_count(&s, "k1").await, 0);
    assert_eq!(s.audit_head().await.unwrap(), before);
    assert_eq!(entry_count(&s).await, 1);

    // The database refuses the state change (a threshold of 0 breaks a CHECK): no entry.
    let err = s
        .with_audit(key_created("k2"), |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO keys (key_id, name, threshold, participants, state) \
                     VALUES ('k2', 'x', 0, ARRAY['node-1'], 'generating')",
                    &[],
                )
                .await?;
                Ok::<_, StoreError>(())
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");
    assert_eq!(s.audit_head().await.unwrap(), before);

    // An entry appended mid-transaction goes away with a transaction that fails later.
    {
        let mut client = s.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let entry = Store::append_audit_in(&tx, key_created("k3"))
            .await
            .unwrap();
        assert_eq!(entry.seq, 1);
        let later = tx
            .execute("INSERT INTO keys (key_id) VALUES ('k3')", &[])
            .await;
        assert!(later.is_err(), "missing NOT NULL columns must fail");
        // Dropping the transaction rolls it back.
    }
    assert_eq!(s.audit_head().await.unwrap(), before);
    assert_eq!(entry_count(&s).await, 1);

    // The next entry takes the seq the rolled-back ones had: no gap, no fork.
    let (_, entry) = s
        .with_audit(key_created("k4"), |tx| {
            Box::pin(async move { Ok::<_, StoreError>(tx.execute(INSERT_KEY, &[&"k4"]).await?) })
        })
        .await
        .unwrap();
    assert_eq!(entry.seq, 1);
    assert_eq!(entry.prev_hash, before.head_hash);
    verify_chain(&s.audit_entries(0, u64::MAX, 100).await.unwrap()).unwrap();
}

#[tokio::test]
async fn eight_concurrent_appenders_make_one_unbroken_chain() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let pg = Postgres::start().unwrap();
    let s = store(&pg, TASKS + 2).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut committed = 0usize;
            for i in 0..PER_TASK {
                let key_id = format!("k-{t}-{i}");
                let event = key_created(&key_id).field("task", t).field("i", i);
                // Every fifth state change fails and must take its entry with it.
                let fail = i % 5 == 4;
                let result = s
                    .with_audit(event, |tx| {
                        Box::pin(async move {
                            tx.execute(INSERT_KEY, &[&key_id]).await?;
                            // Hold the transaction open a little so appenders overlap.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            if fail {
                                return Err(StoreError::Aborted("test failure".into()));
                            }
                            Ok(())
                        })
                    })
                    .await;
                match (fail, result) {
                    (false, Ok(_)) => committed += 1,
                    (true, Err(StoreError::Aborted(_))) => {}
                    (fail, other) => panic!("task {t} step {i} (fail={fail}): {other:?}"),
                }
            }
            committed
        }));
    }
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    assert_eq!(committed, TASKS * PER_TASK * 4 / 5);

    let entries = s.audit_entries(0, u64::MAX, 10_000).await.unwrap();
    assert_eq!(entries.len(), committed);
    verify_chain(&entries).unwrap();
    assert_eq!(entries.first().unwrap().prev_hash, GENESIS_PREV_HASH);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, u64::try_from(i).unwrap());
        // Every committed entry's key exists: state and entry went together.
        let key_id = e.fields["key_id"].as_str().unwrap();
        assert_eq!(key_count(&s, key_id).await, 1, "{key_id}");
    }
    let head = s.audit_head().await.unwrap();
    assert_eq!(head.next_seq, u64::try_from(committed).unwrap());
    assert_eq!(head.head_hash, entries.last().unwrap().hash);
    let c = s.client().await.unwrap();
    let keys: i64 = c
        .query_one("SELECT count(*) FROM keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, i64::try_from(committed).unwrap());
}

#[tokio::test]
async fn audit_entries_are_append_only() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg, 2).await;
    s.append_audit(AuditEvent::new(NODE, EventKind::NodeStarted))
        .await
        .unwrap();
    let c = s.client().await.unwrap();
    for sql in [
        "UPDATE audit_entries SET kind = 'node_stopping'",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries CASCADE",
    ] {
        let err = c.execute(sql, &[]).await.unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("append-only"), "{sql}: {text}");
    }
    assert_eq!(entry_count(&s).await, 1);
}

fn now_unix_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn entries_read_back_verify_offline_as_a_bundle() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg, 4).await;

    // The node's identity: a cluster CA and a node certificate over a P-256 key.
    let ca = ClusterCa::generate(
        &ClusterId::new(CLUSTER).unwrap(),
        Validity::days_from_now(30),
    )
    .unwrap();
    let node_key = SoftwareKey::generate().unwrap();
    let cert = ca
        .issue(
            Subject::Node(NodeId::new(NODE).unwrap()),
            node_key.rcgen_key(),
            Validity::days_from_now(30),
        )
        .unwrap();
    let signing = SigningKey::from_pkcs8_pem(&node_key.to_pem()).unwrap();
    let signer = |msg: &[u8]| -> Result<[u8; 64], String> {
        let sig: Signature = signing.sign(msg);
        Ok(sig.to_bytes().into())
    };
    let audit_key = SoftwareAuditKey::new([42; 32]);
    let schedule = CheckpointSchedule {
        every_entries: 5,
        every: Duration::from_secs(3600),
    };

    for i in 0..12u64 {
        let event = AuditEvent::new(NODE, EventKind::SignRequestReceived)
            .request(format!("req-{i}"))
            .field("key_id", "k1")
            .field("spend_sat", 2_100_000_000_000_000u64 - i)
            .field("note", "ünïcode \"quoted\"\n\u{1}")
            .field("outputs", json!([{"value_sat": i, "change": i % 2 == 0}]))
            .sensitive(&audit_key, "memo", format!("payroll {i}").as_bytes())
            .unwrap();
        s.append_audit(event).await.unwrap();
        // The node's checkpoint loop, driven by the schedule.
        let head = s.audit_head().await.unwrap();
        let last = head
            .last_checkpoint
            .as_ref()
            .map(|c| (c.seq, c.time_unix_ms));
        if let Some(seq) = schedule.due(head.head_seq(), last, now_unix_ms()) {
            let c = Checkpoint::sign(CLUSTER, NODE, seq, head.head_hash, now_unix_ms(), &signer)
                .unwrap();
            assert!(s.insert_checkpoint(&c).await.unwrap());
            assert!(!s.insert_checkpoint(&c).await.unwrap(), "stored once");
        }
    }
    let entries = s.audit_entries(0, u64::MAX, 1000).await.unwrap();
    let checkpoints = s.audit_checkpoints(0, u64::MAX).await.unwrap();
    assert_eq!(entries.len(), 12);
    // Checkpoints at seq 0 (the first entry), 5 and 10.
    assert_eq!(
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [0, 5, 10]
    );
    assert_eq!(
        s.audit_head().await.unwrap().last_checkpoint.unwrap(),
        checkpoints[2]
    );

    // A checkpoint whose head is not the entry's hash is refused.
    let mut wrong = checkpoints[1].clone();
    wrong.seq = 6;
    assert!(matches!(
        s.insert_checkpoint(&wrong).await,
        Err(StoreError::Refused(_))
    ));

    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path().join("bundle");
    let ca_path = tmp.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    write_bundle(
        &dir,
        &BundleContents {
            cluster_id: CLUSTER,
            node_id: NODE,
            exported_at_unix_ms: now_unix_ms(),
            entries: &entries,
            checkpoints: &checkpoints,
            chain_pem: &cert.pem(),
            ca_pem: &ca.cert_pem(),
        },
    )
    .unwrap();
    let report = verify_bundle(&dir, Some(&ca_path));
    assert!(report.ok, "{report}");
    assert_eq!((report.entries, report.checkpoints), (12, 3));
    assert_eq!(report.covered_to_seq, Some(10));
    assert!(
        report.warnings[0].contains("entries seq 11..11 are not covered"),
        "{report}"
    );

    // A range from the middle of the log verifies too.
    let tail = s.audit_entries(5, 9, 1000).await.unwrap();
    let tail_checkpoints = s.audit_checkpoints(5, 9).await.unwrap();
    let dir = tmp.path().join("mid");
    write_bundle(
        &dir,
        &BundleContents {
            cluster_id: CLUSTER,
            node_id: NODE,
            exported_at_unix_ms: now_unix_ms(),
            entries: &tail,
            checkpoints: &tail_checkpoints,
            chain_pem: &cert.pem(),
            ca_pem: &ca.cert_pem(),
        },
    )
    .unwrap();
    let report = verify_bundle(&dir, Some(&ca_path));
    assert!(report.ok, "{report}");
    assert_eq!((report.first_seq, report.last_seq), (Some(5), Some(9)));
}

/// A store with an audit identity records its own state changes in the same transaction:
/// a key that becomes ready, a failed key, and nothing for a change that did not happen.
#[tokio::test]
async fn the_stores_own_state_changes_are_recorded() {
    use std::sync::Arc;
    use strongroom_store::AuditIdentity;
    let pg = Postgres::start().unwrap();
    let s = store(&pg, 4).await.with_audit_identity(AuditIdentity {
        node_id: NODE.into(),
        key: Arc::new(SoftwareAuditKey::new([9; 32])),
    });
    assert!(
        s.insert_key("k1", "treasury", 2, &["node-1".into(), "node-2".into()])
            .await
            .unwrap()
    );
    s.mark_key_ready("k1", &[2; 33], &[3; 32], b"sealed")
        .await
        .unwrap();
    // Not generating any more: refused, and nothing recorded.
    assert!(
        s.mark_key_ready("k1", &[2; 33], &[3; 32], b"sealed")
            .await
            .is_err()
    );
    assert!(
        s.insert_key("k2", "ops", 2, &["node-1".into(), "node-2".into()])
            .await
            .unwrap()
    );
    s.mark_key_failed("k2", "interrupted").await.unwrap();
    s.mark_key_failed("k2", "again").await.unwrap();

    let entries = s.audit_entries(0, u64::MAX, 100).await.unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["key_created", "key_generation_failed"]);
    assert_eq!(entries[0].fields["key_id"], "k1");
    assert_eq!(entries[0].fields["threshold"], 2);
    assert_eq!(entries[0].node_id, NODE);
    assert_eq!(entries[1].fields["reason"], "interrupted");
    verify_chain(&entries).unwrap();
}
