//! The client against real API servers on 127.0.0.1, with certificates from the transport
//! crate's cluster PKI written to a temporary directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use strongroom_api::{
    Access, ApiConfig, ApiError, ApiServer, Caller, ClientRoles, Json, Limits, Operation, Problem,
    Role, Routes, TlsMaterial,
};
use strongroom_client::{ApiClient, ClientConfig, ClientError};
use strongroom_transport::pki::{CA_KEY_FILE, ClusterCa, SoftwareKey, Validity, cert_to_pem};
use strongroom_transport::{ClientName, ClusterId, NodeId, Subject};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLUSTER: &str = "c1";

/// The cluster CA and the client "alice", as files.
struct Pki {
    dir: TempDir,
    ca: ClusterCa,
    ca_cert: PathBuf,
    alice_cert: PathBuf,
    alice_key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate(
            &ClusterId::new(CLUSTER).unwrap(),
            Validity::days_from_now(2),
        )
        .unwrap();
        ca.write_files(dir.path()).unwrap();
        let ca_cert = dir.path().join("ca.pem");
        let (alice_cert, alice_key) = write_identity(dir.path(), &ca, client("alice"), "alice");
        Self {
            dir,
            ca,
            ca_cert,
            alice_cert,
            alice_key,
        }
    }

    fn config(&self, urls: Vec<String>) -> ClientConfig {
        ClientConfig {
            urls,
            ca_cert: self.ca_cert.clone(),
            client_cert: self.alice_cert.clone(),
            client_key: self.alice_key.clone(),
            cluster_id: None,
            timeout: Duration::from_secs(10),
        }
    }

    fn client(&self, urls: Vec<String>) -> ApiClient {
        ApiClient::new(self.config(urls)).unwrap()
    }

    /// An issuer over the CA's key, for certificates the CA's own API would not issue.
    fn raw_issuer(&self) -> Issuer<'static, KeyPair> {
        let pem = std::fs::read_to_string(self.dir.path().join(CA_KEY_FILE)).unwrap();
        let key = KeyPair::from_pem(&pem).unwrap();
        Issuer::from_ca_cert_der(self.ca.cert_der(), key).unwrap()
    }
}

fn node(name: &str) -> Subject {
    Subject::Node(NodeId::new(name).unwrap())
}

fn client(name: &str) -> Subject {
    Subject::Client(ClientName::new(name).unwrap())
}

/// Issues a certificate and writes `<name>.pem` and `<name>-key.pem` into `dir`.
fn write_identity(dir: &Path, ca: &ClusterCa, subject: Subject, name: &str) -> (PathBuf, PathBuf) {
    let key = SoftwareKey::generate().unwrap();
    let cert = ca
        .issue(subject, key.rcgen_key(), Validity::days_from_now(1))
        .unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.to_pem()).unwrap();
    (cert_path, key_path)
}

/// Server TLS material: `subject`'s certificate from `issuer`; client certificates must chain
/// to `pki`'s CA.
fn material(pki: &Pki, issuer: &ClusterCa, subject: Subject) -> TlsMaterial {
    let key = SoftwareKey::generate().unwrap();
    let cert = issuer
        .issue(subject, key.rcgen_key(), Validity::days_from_now(1))
        .unwrap();
    TlsMaterial {
        cert_chain: vec![cert.der],
        key: key.rustls_signing_key().unwrap(),
        cluster_ca: vec![pki.ca.cert_der().clone()],
    }
}

/// Server TLS material over a hand-made certificate for `uri` with `ekus`, signed by the CA.
fn raw_material(pki: &Pki, uri: &str, ekus: Vec<ExtendedKeyUsagePurpose>) -> TlsMaterial {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "odd");
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.extended_key_usages = ekus;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &pki.raw_issuer()).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    TlsMaterial {
        cert_chain: vec![cert.der().clone()],
        key: rustls::crypto::ring::sign::any_ecdsa_type(&der).unwrap(),
        cluster_ca: vec![pki.ca.cert_der().clone()],
    }
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.name()}))
}

async fn echo(caller: Caller, Json(body): Json<Value>) -> Json<Value> {
    Json(json!({"client": caller.name(), "echo": body}))
}

async fn sealed() -> Result<Json<Value>, ApiError> {
    Err(
        Problem::new("item-sealed", StatusCode::CONFLICT, "Item sealed")
            .with_detail("item 7 is sealed")
            .into(),
    )
}

async fn text() -> &'static str {
    "plain words"
}

fn routes() -> Routes {
    Routes::new()
        .get(
            "/v1/whoami",
            whoami,
            Operation::new("whoami", "The caller", Access::AnyClient),
        )
        .post(
            "/v1/echo",
            echo,
            Operation::new("echo", "Echo the body", Access::AnyClient),
        )
        .get(
            "/v1/sealed",
            sealed,
            Operation::new("sealed", "Always a problem", Access::AnyClient),
        )
        .get(
            "/v1/text",
            text,
            Operation::new("text", "Plain text", Access::AnyClient),
        )
}

/// A running API server.
struct Server {
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl Server {
    async fn start(tls: TlsMaterial) -> Self {
        let config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cluster_id: CLUSTER.into(),
            client_roles: ClientRoles::new().grant("alice", [Role::Auditor]),
            limits: Limits {
                rate_limit: None,
                ..Limits::default()
            },
        };
        let server = ApiServer::builder(config, tls)
            .routes(routes())
            .bind()
            .await
            .unwrap();
        let url = format!("https://{}", server.local_addr());
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Self {
            url,
            shutdown: Some(tx),
            handle,
        }
    }

    async fn node(pki: &Pki, name: &str) -> Self {
        Self::start(material(pki, &pki.ca, node(name))).await
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("https://{addr}")
}

#[tokio::test]
async fn get_and_post_round_trip_with_the_node_named() {
    let pki = Pki::new();
    let server = Server::node(&pki, "n1").await;
    let api = pki.client(vec![server.url.clone()]);
    assert_eq!(api.urls(), std::slice::from_ref(&server.url));
    assert_eq!(api.cluster_id(), CLUSTER);
    assert_eq!(api.client_name(), "alice");

    let r = api.get("/v1/whoami").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.is_success());
    assert_eq!(r.body, json!({"name": "alice"}));
    assert_eq!(r.node, "n1");
    assert_eq!(r.url, server.url);

    let body = json!({"name": "treasury", "threshold": 2, "tags": ["a", "b"]});
    let r = api.post("/v1/echo", &body).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.node, "n1");
    assert_eq!(
        r.into_result().unwrap(),
        json!({"client": "alice", "echo": body})
    );

    let r = api.get_at(0, "/v1/whoami").await.unwrap();
    assert_eq!((r.status, r.node.as_str()), (200, "n1"));
    let r = api.post_at(0, "/v1/echo", &json!([1, 2])).await.unwrap();
    assert_eq!(r.body["echo"], json!([1, 2]));

    // Raw text: the metrics exposition (alice is an auditor).
    let (status, text) = api.get_text_at(0, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# EOF"), "{text}");

    // A JSON call answered with text names the content type.
    let err = api.get_at(0, "/v1/text").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BadBody { detail, .. } if detail.contains("text/plain")),
        "{err:?}"
    );

    assert!(matches!(
        api.get_at(1, "/v1/whoami").await,
        Err(ClientError::NoSuchNode { index: 1, count: 1 })
    ));
    assert!(matches!(
        api.get("v1/whoami").await,
        Err(ClientError::BadUrl { .. })
    ));
    server.stop().await;
}

#[tokio::test]
async fn fails_over_from_a_dead_url_to_a_live_one() {
    let pki = Pki::new();
    let n1 = Server::node(&pki, "n1").await;
    let n2 = Server::node(&pki, "n2").await;
    let dead = dead_url().await;
    let api = pki.client(vec![dead.clone(), n2.url.clone(), n1.url.clone()]);

    let r = api.get("/v1/whoami").await.unwrap();
    assert_eq!((r.node.as_str(), r.url.as_str()), ("n2", n2.url.as_str()));
    let r = api.post("/v1/echo", &json!({"x": 1})).await.unwrap();
    assert_eq!((r.node.as_str(), r.status), ("n2", 200));

    // The _at calls go where they are told, and do not fail over.
    assert_eq!(api.get_at(2, "/v1/whoami").await.unwrap().node, "n1");
    let err = api.get_at(0, "/v1/whoami").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Connect { url, .. } if *url == dead),
        "{err:?}"
    );

    // Nothing answers: every URL is listed with its reason.
    let dead2 = dead_url().await;
    let api = pki.client(vec![dead.clone(), dead2.clone()]);
    let err = api.get("/v1/whoami").await.unwrap_err();
    match &err {
        ClientError::Connect { url, detail } => {
            assert!(url.contains(&dead) && url.contains(&dead2), "{err}");
            assert!(detail.contains(&dead) && detail.contains(&dead2), "{err}");
        }
        other => panic!("{other:?}"),
    }
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    // Same cluster id, another CA.
    let other = ClusterCa::generate(
        &ClusterId::new(CLUSTER).unwrap(),
        Validity::days_from_now(2),
    )
    .unwrap();
    let impostor = Server::start(material(&pki, &other, node("n1"))).await;
    let api = pki.client(vec![impostor.url.clone()]);
    let err = api.get_at(0, "/v1/whoami").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::UntrustedServer { detail, .. } if detail.contains("cluster CA")),
        "{err:?}"
    );
    let err = api.post("/v1/echo", &json!({})).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Connect { detail, .. } if detail.contains("refused")),
        "{err:?}"
    );

    // With a genuine node behind it, failover skips the impostor.
    let genuine = Server::node(&pki, "n2").await;
    let api = pki.client(vec![impostor.url.clone(), genuine.url.clone()]);
    let r = api.post("/v1/echo", &json!({"x": 1})).await.unwrap();
    assert_eq!(r.node, "n2");
    impostor.stop().await;
    genuine.stop().await;
}

#[tokio::test]
async fn a_server_presenting_a_client_certificate_is_refused() {
    let pki = Pki::new();
    // A client certificate as the CA issues it (client authentication only).
    let server = Server::start(material(&pki, &pki.ca, client("mallory"))).await;
    let api = pki.client(vec![server.url.clone()]);
    let err = api.get_at(0, "/v1/whoami").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::UntrustedServer { detail, .. }
            if detail.contains("spiffe://c1/client/mallory") && detail.contains("not a node")),
        "{err:?}"
    );
    server.stop().await;

    // A client identity even with the server key usage: refused for its role.
    let both = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server = Server::start(raw_material(
        &pki,
        "spiffe://c1/client/mallory",
        both.clone(),
    ))
    .await;
    let api = pki.client(vec![server.url.clone()]);
    let err = api.get_at(0, "/v1/whoami").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::UntrustedServer { detail, .. } if detail.contains("not a node")),
        "{err:?}"
    );
    server.stop().await;

    // A node of another cluster, under this CA: refused for its cluster.
    let server = Server::start(raw_material(&pki, "spiffe://c2/node/n1", both)).await;
    let api = pki.client(vec![server.url.clone()]);
    let err = api.get_at(0, "/v1/whoami").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::UntrustedServer { detail, .. } if detail.contains("cluster 'c2'")),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_problem_document_maps_into_an_api_error() {
    let pki = Pki::new();
    let server = Server::node(&pki, "n1").await;
    let api = pki.client(vec![server.url.clone()]);

    let r = api.get("/v1/sealed").await.unwrap();
    assert_eq!(r.status, 409);
    assert!(!r.is_success());
    assert_eq!(
        r.problem(),
        Some(("item-sealed".to_owned(), "item 7 is sealed".to_owned()))
    );
    match r.into_result().unwrap_err() {
        ClientError::Api {
            status,
            kind,
            detail,
            node,
        } => {
            assert_eq!(status, 409);
            assert_eq!(kind, "item-sealed");
            assert_eq!(detail, "item 7 is sealed");
            assert_eq!(node, "n1");
        }
        other => panic!("{other:?}"),
    }

    // The framework's own problems too.
    let r = api.get("/v1/nowhere").await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.problem().map(|(kind, _)| kind).as_deref(),
        Some("not-found")
    );
    server.stop().await;
}

#[tokio::test]
async fn connect_and_handshake_are_bounded_by_the_timeout() {
    let pki = Pki::new();
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut config = pki.config(vec![url.clone()]);
    config.timeout = Duration::from_millis(300);
    let api = ApiClient::new(config).unwrap();
    let started = Instant::now();
    let err = api.get_at(0, "/v1/whoami").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // With failover, the silent node is skipped.
    let server = Server::node(&pki, "n1").await;
    let mut config = pki.config(vec![url, server.url.clone()]);
    config.timeout = Duration::from_millis(300);
    let api = ApiClient::new(config).unwrap();
    assert_eq!(api.get("/v1/whoami").await.unwrap().node, "n1");
    hold.abort();
    server.stop().await;
}

#[test]
fn new_checks_the_files_and_names_them() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let urls = vec!["https://127.0.0.1:1".to_owned()];
    let error_of = |config: ClientConfig| ApiClient::new(config).unwrap_err();

    // A missing file.
    let mut config = pki.config(urls.clone());
    config.ca_cert = dir.join("missing.pem");
    let err = error_of(config);
    assert!(
        matches!(&err, ClientError::ReadFile { path, .. } if path.ends_with("missing.pem")),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.pem"));

    // Not PEM.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let mut config = pki.config(urls.clone());
    config.client_cert = junk.clone();
    let err = error_of(config);
    assert!(
        matches!(&err, ClientError::BadPem { path, .. } if *path == junk),
        "{err:?}"
    );
    let mut config = pki.config(urls.clone());
    config.client_key = junk.clone();
    assert!(matches!(error_of(config), ClientError::BadPem { path, .. } if path == junk));

    // A key that is not the certificate's.
    let (_, bob_key) = write_identity(dir, &pki.ca, client("bob"), "bob");
    let mut config = pki.config(urls.clone());
    config.client_key = bob_key.clone();
    let err = error_of(config);
    assert!(
        matches!(&err, ClientError::BadPem { path, detail } if *path == bob_key && detail.contains("does not belong")),
        "{err:?}"
    );

    // A node certificate is no client certificate.
    let (n1_cert, n1_key) = write_identity(dir, &pki.ca, node("n1"), "n1");
    let mut config = pki.config(urls.clone());
    config.client_cert = n1_cert.clone();
    config.client_key = n1_key;
    let err = error_of(config);
    assert!(
        matches!(&err, ClientError::BadPem { path, detail } if *path == n1_cert && detail.contains("node")),
        "{err:?}"
    );

    // A client certificate of another CA.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterCa::generate(
        &ClusterId::new(CLUSTER).unwrap(),
        Validity::days_from_now(2),
    )
    .unwrap();
    let (eve_cert, eve_key) = write_identity(other_dir.path(), &other, client("eve"), "eve");
    let mut config = pki.config(urls.clone());
    config.client_cert = eve_cert.clone();
    config.client_key = eve_key;
    let err = error_of(config);
    assert!(
        matches!(&err, ClientError::BadPem { path, detail } if *path == eve_cert && detail.contains("not issued by this CA")),
        "{err:?}"
    );

    // A configured cluster that is not the certificate's.
    let mut config = pki.config(urls.clone());
    config.cluster_id = Some("c2".into());
    assert!(matches!(error_of(config), ClientError::BadPem { .. }));
    let mut config = pki.config(urls.clone());
    config.cluster_id = Some(CLUSTER.into());
    assert!(ApiClient::new(config).is_ok());

    // URLs.
    assert!(matches!(
        error_of(pki.config(vec![])),
        ClientError::Config(_)
    ));
    assert!(matches!(
        error_of(pki.config(vec!["http://127.0.0.1:1".into()])),
        ClientError::BadUrl { .. }
    ));

    // The CA file holds the CA certificate; a PEM with several is fine.
    let two = dir.join("two-cas.pem");
    std::fs::write(
        &two,
        format!("{}{}", cert_to_pem(other.cert_der()), pki.ca.cert_pem()),
    )
    .unwrap();
    let mut config = pki.config(urls);
    config.ca_cert = two;
    assert!(ApiClient::new(config).is_ok());
}

/// Marks the copy of this test binary that checks `from_env` in a controlled environment.
const CHILD_MARK: &str = "STRONGROOM_CLIENT_TEST_FROM_ENV_CHILD";

#[test]
fn from_env_names_a_missing_variable() {
    if std::env::var_os(CHILD_MARK).is_some() {
        let err = ClientConfig::from_env().unwrap_err();
        assert!(
            matches!(err, ClientError::MissingEnv { var } if var == "STRONGROOM_CLIENT_CERT"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("STRONGROOM_CLIENT_CERT"), "{text}");
        assert!(text.contains("source .dev/cluster.env"), "{text}");
        return;
    }
    // The environment of this process is shared by every test: check in a child process.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "from_env_names_a_missing_variable",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_MARK, "1")
        .env(
            "STRONGROOM_API_URLS",
            "https://127.0.0.1:1,https://127.0.0.1:2",
        )
        .env("STRONGROOM_CA_CERT", "/nonexistent/ca.pem")
        .env_remove("STRONGROOM_CLIENT_CERT")
        .env("STRONGROOM_CLIENT_KEY", "/nonexistent/key.pem")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}
