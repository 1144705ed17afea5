//! The harness against the real servers: PostgreSQL and etcd started from the system
//! binaries, used through the same client crates the node uses; and the process handling
//! underneath them.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, PutOptions};
use rustix::process::Signal;
use strongroom_tests::etcd::Etcd;
use strongroom_tests::postgres::{Durability, Postgres};
use strongroom_tests::process::{ChildProcess, HarnessError};
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    // A failed connection surfaces as an error on the client's next call.
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn postgres_transaction_round_trip() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("harness").unwrap();
    let mut client = connect(&url).await.unwrap();

    client
        .batch_execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO notes VALUES ($1, $2)", &[&1_i64, &"sealed"])
        .await
        .unwrap();
    tx.execute("INSERT INTO notes VALUES ($1, $2)", &[&2_i64, &"unsealed"])
        .await
        .unwrap();
    // Visible inside the transaction before commit.
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inside, 2);
    tx.commit().await.unwrap();

    let rows = client
        .query("SELECT id, body FROM notes ORDER BY id", &[])
        .await
        .unwrap();
    let read: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        read,
        vec![(1, "sealed".to_owned()), (2, "unsealed".to_owned())]
    );

    // A rolled-back transaction leaves nothing behind.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO notes VALUES (3, 'dropped')", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);

    // The server is listening on loopback only, as the configured superuser.
    let row = client
        .query_one("SELECT current_user::text, inet_server_addr()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "strongroom");
    assert_eq!(row.get::<_, String>(1), "127.0.0.1/32");
}

#[tokio::test]
async fn two_postgres_servers_run_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Postgres::start);
        let b = s.spawn(Postgres::start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());

    let ca = connect(&a.url()).await.unwrap();
    let cb = connect(&b.url()).await.unwrap();
    ca.batch_execute("CREATE TABLE which (name TEXT); INSERT INTO which VALUES ('a')")
        .await
        .unwrap();
    cb.batch_execute("CREATE TABLE which (name TEXT); INSERT INTO which VALUES ('b')")
        .await
        .unwrap();
    let name_a: String = ca
        .query_one("SELECT name FROM which", &[])
        .await
        .unwrap()
        .get(0);
    let name_b: String = cb
        .query_one("SELECT name FROM which", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((name_a.as_str(), name_b.as_str()), ("a", "b"));
}

#[tokio::test]
async fn postgres_keeps_commits_across_kill_and_restart() {
    let mut pg = Postgres::start_with(Durability::SurvivesProcessCrash).unwrap();
    let client = connect(&pg.url()).await.unwrap();
    client
        .batch_execute("CREATE TABLE counter (n INT); INSERT INTO counter VALUES (41)")
        .await
        .unwrap();
    client
        .execute("UPDATE counter SET n = n + 1", &[])
        .await
        .unwrap();
    drop(client);

    pg.kill().unwrap();
    assert!(!pg.is_running().unwrap());
    pg.restart().unwrap();
    assert!(pg.is_running().unwrap());

    let client = connect(&pg.url()).await.unwrap();
    let n: i32 = client
        .query_one("SELECT n FROM counter", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 42,
        "a committed update must survive the server being killed"
    );

    pg.stop().unwrap();
    assert!(!pg.is_running().unwrap());
}

#[tokio::test]
async fn etcd_put_get_and_restart_keeps_data() {
    let mut etcd = Etcd::start().unwrap();
    let mut client = EtcdClient::connect([etcd.endpoint()], None).await.unwrap();
    client
        .put("strongroom/test/key", "value-1", None)
        .await
        .unwrap();
    let got = client.get("strongroom/test/key", None).await.unwrap();
    assert_eq!(
        got.kvs().first().map(|kv| kv.value()),
        Some(&b"value-1"[..])
    );
    drop(client);

    let endpoint = etcd.endpoint();
    etcd.restart().unwrap();
    assert_eq!(etcd.endpoint(), endpoint, "a restart keeps the endpoint");

    let mut client = EtcdClient::connect([etcd.endpoint()], None).await.unwrap();
    let got = client.get("strongroom/test/key", None).await.unwrap();
    assert_eq!(
        got.kvs().first().map(|kv| kv.value()),
        Some(&b"value-1"[..])
    );

    etcd.stop().unwrap();
    assert!(!etcd.is_running().unwrap());
}

#[tokio::test]
async fn etcd_lease_expires_and_takes_its_keys() {
    let etcd = Etcd::start().unwrap();
    let mut client = EtcdClient::connect([etcd.endpoint()], None).await.unwrap();

    // etcd's minimum lease TTL is derived from its election timeout (1 s by default): 2 s.
    let lease = client.lease_grant(2, None).await.unwrap();
    client
        .put(
            "strongroom/members/node-1",
            "alive",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .unwrap();
    let present = client.get("strongroom/members/node-1", None).await.unwrap();
    assert_eq!(present.kvs().len(), 1);

    // No keep-alive is sent: the lease must expire and delete the key.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = client.get("strongroom/members/node-1", None).await.unwrap();
        if got.kvs().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leased key outlived its lease by more than 13 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn several_etcd_servers_at_once() {
    let servers: Vec<Etcd> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(Etcd::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let mut ports: Vec<u16> = servers.iter().map(Etcd::client_port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
}

#[test]
fn a_process_that_exits_early_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "echo starting; echo 'bind: address already in use' >&2; exit 3",
    ]);
    let mut process = ChildProcess::spawn("failing", command, dir.path()).unwrap();
    let err = process
        .wait_until("ready", Duration::from_secs(10), || Ok(false))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("failing exited with exit status: 3 before ready"),
        "{text}"
    );
    assert!(text.contains("bind: address already in use"), "{text}");
    assert!(text.contains("starting"), "{text}");
    assert!(err.is_address_in_use());
}

#[test]
fn a_process_that_never_gets_ready_times_out_and_dies_with_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("sleep");
    command.arg("600");
    let mut process = ChildProcess::spawn("sleeper", command, dir.path()).unwrap();
    let err = process
        .wait_until("ready", Duration::from_millis(300), || Ok(false))
        .unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    let proc_entry = format!("/proc/{}", process.id());
    assert!(std::path::Path::new(&proc_entry).exists());
    drop(process);
    assert!(
        !std::path::Path::new(&proc_entry).exists(),
        "killed and reaped on drop"
    );
}

#[test]
fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    command.args(["-c", "trap '' TERM; exec sleep 600"]);
    let mut process = ChildProcess::spawn("stubborn", command, dir.path()).unwrap();
    // Give the shell time to install the trap before it is signalled.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = process
        .stop_with(Signal::TERM, Duration::from_millis(500))
        .unwrap();
    assert!(!status.success());
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(process.try_status().unwrap().is_some());
}
