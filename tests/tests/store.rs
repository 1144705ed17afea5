//! The node's PostgreSQL store against a real server: migrations, session-id uniqueness and
//! the presignature state machine (check and record in one transaction).

// Helpers outside #[test] functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use strongroom_store::{Consumption, NewPresignature, PrimesOrigin, Store, StoreError};
use strongroom_tests::postgres::Postgres;

async fn store(pg: &Postgres) -> Store {
    Store::connect(&pg.url(), 8).await.expect("connect")
}

async fn ready_key(store: &Store, key_id: &str) {
    let participants = vec![
        "node-1".to_owned(),
        "node-2".to_owned(),
        "node-3".to_owned(),
    ];
    assert!(
        store
            .insert_key(key_id, "treasury", 2, &participants)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_key(key_id, "again", 2, &participants)
            .await
            .unwrap(),
        "duplicate key id"
    );
    store
        .mark_key_ready(key_id, &[2; 33], &[7; 32], b"sealed-share")
        .await
        .unwrap();
}

async fn add_presig(store: &Store, key_id: &str, id: u8) -> Vec<u8> {
    let presig_id = vec![id; 32];
    store
        .insert_presignature(&NewPresignature {
            presig_id: &presig_id,
            key_id,
            signer_set: "node-1,node-2",
            sealed: b"sealed-presignature",
            public_data: b"public",
            generation: 1,
        })
        .await
        .unwrap();
    presig_id
}

#[tokio::test]
async fn unreachable_server_names_the_endpoint() {
    let port = strongroom_tests::ports::free_tcp_port().unwrap();
    let err = Store::connect(
        &format!("postgres://strongroom@127.0.0.1:{port}/postgres"),
        2,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}/postgres")), "{msg}");
    assert!(msg.contains("database.url"), "{msg}");
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_a_newer_schema() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    // A second start finds everything applied.
    let s2 = store(&pg).await;
    let c = s2.client().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, strongroom_store::MIGRATIONS.len());
    c.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')",
        &[],
    )
    .await
    .unwrap();
    let err = s.migrate().await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn session_ids_are_single_use_and_primes_are_taken_once() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    let id = [9u8; 32];
    assert!(!s.session_id_seen(&id).await.unwrap());
    assert!(s.claim_session_id(&id, "presign").await.unwrap());
    assert!(
        !s.claim_session_id(&id, "sign").await.unwrap(),
        "a seen session id is refused"
    );
    assert!(s.session_id_seen(&id).await.unwrap());

    s.add_primes(PrimesOrigin::DevFixture, b"sealed-primes")
        .await
        .unwrap();
    assert_eq!(s.unused_primes().await.unwrap(), 1);
    let taken = s.take_primes().await.unwrap().expect("one set");
    assert_eq!(taken.origin, PrimesOrigin::DevFixture);
    assert!(
        s.take_primes().await.unwrap().is_none(),
        "primes are used once"
    );
}

#[tokio::test]
async fn presignature_state_machine() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    ready_key(&s, "k1").await;
    let p = add_presig(&s, "k1", 1).await;
    assert_eq!(
        s.oldest_available("k1", "node-1,node-2").await.unwrap(),
        Some(p.clone())
    );

    s.reserve_presignature(&p, "req-a").await.unwrap();
    s.reserve_presignature(&p, "req-a").await.unwrap(); // idempotent for the same request
    assert!(matches!(
        s.reserve_presignature(&p, "req-b").await,
        Err(StoreError::Refused(_))
    ));
    let counts = s.pool_counts().await.unwrap();
    assert_eq!(
        (counts[0].available, counts[0].reserved, counts[0].consumed),
        (0, 1, 0)
    );

    // Reserved for another request: refused, nothing changes.
    let err = s
        .consume_presignature(&p, "req-b", &used(), |_| async { Ok::<i64, String>(1) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");

    // A failing step before commit rolls everything back.
    let err = s
        .consume_presignature(&p, "req-a", &used(), |_| async {
            Err::<i64, _>("token unavailable")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Aborted(_)), "{err}");
    assert_eq!(s.presignature(&p).await.unwrap().unwrap().state, "reserved");
    assert_eq!(s.meta("consumption_counter").await.unwrap(), 0);

    let sealed = s
        .consume_presignature(&p, "req-a", &used(), |sealed| async move {
            assert_eq!(sealed, b"sealed-presignature");
            Ok::<i64, String>(41)
        })
        .await
        .unwrap();
    assert_eq!(sealed, b"sealed-presignature");
    let rec = s.presignature(&p).await.unwrap().unwrap();
    assert_eq!(
        (rec.state.as_str(), rec.request_id.as_deref()),
        ("consumed", Some("req-a"))
    );
    assert_eq!(s.meta("consumption_counter").await.unwrap(), 41);
    let c = s.client().await.unwrap();
    let secret: Option<Vec<u8>> = c
        .query_one(
            "SELECT sealed FROM presignatures WHERE presig_id = $1",
            &[&p],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        secret.is_none(),
        "the secret part is destroyed on consumption"
    );

    // Never twice, not even for the same request.
    let err = s
        .consume_presignature(&p, "req-a", &used(), |_| async { Ok::<i64, String>(42) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");

    // Discarding after a suspected rollback leaves consumed rows alone.
    add_presig(&s, "k1", 2).await;
    add_presig(&s, "k1", 3).await;
    assert_eq!(s.discard_unconsumed_presignatures().await.unwrap(), 2);
    let counts = s.pool_counts().await.unwrap();
    assert_eq!(
        (counts[0].available, counts[0].reserved, counts[0].consumed),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn concurrent_consumers_of_one_presignature_get_it_once() {
    let pg = Postgres::start().unwrap();
    let s = Arc::new(store(&pg).await);
    ready_key(&s, "k1").await;
    let p = Arc::new(add_presig(&s, "k1", 5).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let req = format!("req-{i}");
            // Each request tries to reserve, then to consume; only one may get through.
            let _ = s.reserve_presignature(&p, &req).await;
            s.consume_presignature(&p, &req, &used(), |_| async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok::<i64, String>(i)
            })
            .await
            .is_ok()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one request consumes a presignature");
}

#[tokio::test]
async fn only_a_reservation_for_the_request_can_be_consumed_and_none_is_handed_back() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    ready_key(&s, "k1").await;
    let p = add_presig(&s, "k1", 7).await;
    // Available but not reserved: refused.
    let err = s
        .consume_presignature(&p, "req-a", &used(), |_| async { Ok::<i64, String>(1) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");

    // The oldest available one is reserved atomically; an empty pool gives None.
    let q = add_presig(&s, "k1", 8).await;
    let first = s
        .reserve_oldest("k1", "node-1,node-2", "req-a")
        .await
        .unwrap()
        .unwrap();
    let second = s
        .reserve_oldest("k1", "node-1,node-2", "req-b")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, second);
    assert!(first == p || first == q);
    assert_eq!(
        s.reserve_oldest("k1", "node-1,node-2", "req-c")
            .await
            .unwrap(),
        None
    );

    // Discarding needs the request the reservation is for.
    assert!(!s.discard_presignature(&first, "req-b").await.unwrap());
    assert!(s.discard_presignature(&first, "req-a").await.unwrap());
    assert_eq!(
        s.presignature(&first).await.unwrap().unwrap().state,
        "discarded"
    );

    // Stale reservations are discarded, never made available again.
    assert_eq!(
        s.discard_stale_reservations(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.presignature(&second).await.unwrap().unwrap().state,
        "discarded"
    );

    // The consumption records what it served.
    let r = add_presig(&s, "k1", 9).await;
    s.reserve_presignature(&r, "req-d").await.unwrap();
    s.consume_presignature(&r, "req-d", &used(), |_| async { Ok::<i64, String>(3) })
        .await
        .unwrap();
    let c = s.client().await.unwrap();
    let row = c
        .query_one(
            "SELECT nonce_point, message, counter FROM presignatures WHERE presig_id = $1",
            &[&r],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), vec![2u8; 33]);
    assert_eq!(row.get::<_, Vec<u8>>(1), vec![7u8; 32]);
    assert_eq!(row.get::<_, i64>(2), 3);
}

fn used() -> Consumption<'static> {
    Consumption {
        nonce_point: &[2u8; 33],
        message: &[7u8; 32],
        gate: None,
    }
}
