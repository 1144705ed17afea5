//! The cluster harness provisions everything a cluster of nodes needs: tokens with identity
//! keys and certificates, PIN files, one database per node, and a configuration file per node.
//! Nothing is started here (see `cluster_processes.rs` for the processes).
//!
//! One test per file: a process holds one SoftHSM installation, and the cluster owns it.

// The helpers below are part of the test: like the test, they fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use strongroom_keystore::Token;
use strongroom_tests::cluster::{ClusterOptions, TestCluster};
use strongroom_tests::softhsm::USER_PIN;
use strongroom_transport::pki::certs_from_pem;
use strongroom_transport::verify::check_node_certificate;
use strongroom_transport::{ClusterId, NodeId};
use toml::{Table, Value};

fn str_of<'a>(config: &'a Table, section: &str, key: &str) -> &'a str {
    config[section][key]
        .as_str()
        .unwrap_or_else(|| panic!("[{section}] {key} is not a string"))
}

fn int_of(config: &Table, section: &str, key: &str) -> i64 {
    config[section][key]
        .as_integer()
        .unwrap_or_else(|| panic!("[{section}] {key} is not an integer"))
}

fn bool_of(config: &Table, section: &str, key: &str) -> bool {
    config[section][key]
        .as_bool()
        .unwrap_or_else(|| panic!("[{section}] {key} is not a boolean"))
}

fn port_of(addr: &str) -> u16 {
    let (host, port) = addr.rsplit_once(':').unwrap();
    assert_eq!(host, "127.0.0.1");
    port.parse().unwrap()
}

#[test]
fn provisions_tokens_pki_databases_and_configs() {
    let options = ClusterOptions {
        pool_target: 7,
        pool_low_water: 4,
        pool_max: 11,
        pool_concurrency: 3,
        interactive_fallback: false,
        sign_digest_endpoint: false,
        corrupt_partials: vec![1],
        lease_ttl_secs: 5,
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::provision(options).unwrap();
    let ids = cluster.node_ids();
    assert_eq!(ids, ["node-1", "node-2", "node-3"]);

    // PKI: the CA, the client, each node's certificate.
    let ca_pem = std::fs::read_to_string(cluster.ca_cert()).unwrap();
    let ca = certs_from_pem(&ca_pem).unwrap().remove(0);
    assert!(cluster.client_cert().is_file());
    assert!(cluster.client_key().is_file());
    assert!(
        std::fs::read_to_string(cluster.client_key())
            .unwrap()
            .contains("PRIVATE KEY")
    );

    let cluster_id = ClusterId::new("test").unwrap();
    let etcd_endpoint = cluster.etcd().endpoint();
    let urls = cluster.api_urls();
    let mut api_ports = HashSet::new();
    let mut transport_ports = HashSet::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    for (index, id) in ids.iter().enumerate() {
        let text = std::fs::read_to_string(cluster.config_path(index)).unwrap();
        let config: Table = text
            .parse()
            .unwrap_or_else(|e| panic!("config of {id} does not parse: {e}\n{text}"));

        assert_eq!(str_of(&config, "node", "id"), id);
        assert_eq!(str_of(&config, "node", "cluster_id"), "test");
        assert_eq!(str_of(&config, "node", "network"), "regtest");
        assert!(bool_of(&config, "node", "dev_mode"));

        assert_eq!(
            str_of(&config, "token", "module"),
            "/usr/lib/softhsm/libsofthsm2.so"
        );
        assert_eq!(
            str_of(&config, "token", "label"),
            format!("strongroom-{id}")
        );
        let pin_file = std::path::PathBuf::from(str_of(&config, "token", "pin_file"));
        assert!(pin_file.ends_with(format!("pins/{id}.pin")));
        assert_eq!(std::fs::read_to_string(&pin_file).unwrap().trim(), USER_PIN);
        let mode = std::fs::metadata(&pin_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", pin_file.display());

        let transport = str_of(&config, "transport", "listen");
        assert!(transport_ports.insert(port_of(transport)));
        assert_eq!(
            std::path::Path::new(str_of(&config, "transport", "ca_cert")),
            cluster.ca_cert()
        );
        let cert_path = std::path::PathBuf::from(str_of(&config, "transport", "certificate"));
        assert_eq!(cert_path, cluster.node_cert(index));

        // The peers are the other nodes, at their transport addresses.
        let peers = config["peers"].as_table().unwrap();
        let expected: Vec<&String> = ids.iter().filter(|p| *p != id).collect();
        assert_eq!(peers.keys().collect::<Vec<_>>(), expected);
        for peer in expected {
            let peer_index = ids.iter().position(|p| p == peer).unwrap();
            let peer_config: Table = std::fs::read_to_string(cluster.config_path(peer_index))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                peers[peer.as_str()].as_str(),
                Some(str_of(&peer_config, "transport", "listen"))
            );
        }

        let api = str_of(&config, "api", "listen");
        assert!(api_ports.insert(port_of(api)));
        assert_eq!(urls[index], format!("https://{api}"));
        assert_eq!(
            config["api"]["clients"]["ops"],
            Value::Array(vec![
                "admin".into(),
                "submitter".into(),
                "auditor".into(),
                "approver".into()
            ])
        );

        assert_eq!(
            str_of(&config, "database", "url"),
            cluster.database_url(index)
        );
        assert!(
            cluster
                .database_url(index)
                .ends_with(&format!("/node_{}", index + 1))
        );
        assert_eq!(int_of(&config, "database", "max_connections"), 8);

        assert_eq!(
            config["etcd"]["endpoints"],
            Value::Array(vec![etcd_endpoint.clone().into()])
        );
        assert_eq!(int_of(&config, "etcd", "lease_ttl_secs"), 5);
        assert_eq!(str_of(&config, "primes", "source"), "dangerous-dev-fixture");
        assert_eq!(int_of(&config, "pool", "target"), 7);
        assert_eq!(int_of(&config, "pool", "low_water"), 4);
        assert_eq!(int_of(&config, "pool", "max"), 11);
        assert_eq!(int_of(&config, "pool", "concurrency"), 3);
        assert!(!bool_of(&config, "signing", "interactive_fallback"));
        assert_eq!(int_of(&config, "signing", "timeout_secs"), 60);
        assert!(!bool_of(&config, "dev", "dangerous_sign_digest_endpoint"));
        assert_eq!(
            bool_of(&config, "dev", "dangerous_corrupt_partials"),
            index == 1
        );

        // The node's database exists and is empty.
        let url = cluster.database_url(index);
        let (name, tables) = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let name: String = client
                .query_one("SELECT current_database()::text", &[])
                .await
                .unwrap()
                .get(0);
            let tables: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (name, tables)
        });
        assert_eq!(name, format!("node_{}", index + 1));
        assert_eq!(tables, 0);

        // The token holds the identity key, and the node's certificate is for that key and
        // this node, issued by the cluster CA.
        let token = Token::open(&cluster.token_config(index))
            .unwrap_or_else(|e| panic!("token of {id} does not open: {e}"));
        let spki = token.identity().public_key().spki_der();
        let chain = certs_from_pem(&std::fs::read_to_string(&cert_path).unwrap()).unwrap();
        let node = NodeId::new(id.as_str()).unwrap();
        check_node_certificate(&ca, &chain, &cluster_id, &node, Some(&spki))
            .unwrap_or_else(|e| panic!("certificate of {id} does not check: {e}"));
    }
    assert_eq!(api_ports.len(), 3);
    assert_eq!(transport_ports.len(), 3);

    // Nothing runs, and nothing has logged yet.
    for index in 0..3 {
        assert!(!cluster.is_running(index));
        assert_eq!(cluster.logs(index), "");
        assert_eq!(cluster.log_tail(index), "");
        assert!(cluster.log_files(index).is_empty());
    }
    assert!(cluster.kill_node(0).is_ok());
    assert!(cluster.stop_node(2).is_ok());
    assert!(cluster.kill_node(3).is_err());

    // Dropping removes the cluster directory.
    let dir = cluster.dir().to_path_buf();
    assert!(dir.is_dir());
    drop(cluster);
    if std::env::var_os("STRONGROOM_KEEP_TEST_DIRS").is_none() {
        assert!(!dir.exists());
    }
}
