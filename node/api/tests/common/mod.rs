//! Test PKI (rcgen), a server on 127.0.0.1 and a minimal HTTPS client (hyper over tokio-rustls).

#![allow(
    dead_code,
    unreachable_pub,
    reason = "shared by several tests, each using a part"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use strongroom_api::{
    ApiConfig, ApiServer, AuthFailure, ClientRoles, Limits, Metrics, Routes, TlsMaterial,
};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub const CLUSTER: &str = "c1";

/// A certificate authority made in memory.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub cert: CertificateDer<'static>,
}

/// A certificate with its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self { params, key, cert }
    }

    fn issue(&self, sans: Vec<SanType>, ekus: Vec<ExtendedKeyUsagePurpose>) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "strongroom test");
        params.subject_alt_names = sans;
        params.extended_key_usages = ekus;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap().der().clone();
        Identity {
            chain: vec![cert],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A node certificate: server and client authentication, `localhost` for the TLS name.
    pub fn node(&self, cluster: &str, node: &str) -> Identity {
        self.issue(
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::URI(
                    format!("spiffe://{cluster}/node/{node}")
                        .try_into()
                        .unwrap(),
                ),
            ],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate.
    pub fn client(&self, cluster: &str, name: &str) -> Identity {
        self.issue(
            vec![SanType::URI(
                format!("spiffe://{cluster}/client/{name}")
                    .try_into()
                    .unwrap(),
            )],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

/// A running server and what the test needs to talk to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub ca: Arc<Ca>,
    pub failures: Arc<Mutex<Vec<AuthFailure>>>,
    pub openapi: Value,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(
        routes: Routes,
        roles: ClientRoles,
        limits: Limits,
        metrics: Metrics,
        health: Option<Arc<dyn Fn() -> strongroom_api::Health + Send + Sync>>,
    ) -> Self {
        let ca = Arc::new(Ca::new("cluster CA"));
        let node = ca.node(CLUSTER, "n1");
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&node.key).unwrap();
        let tls = TlsMaterial {
            cert_chain: node.chain,
            key,
            cluster_ca: vec![ca.cert.clone()],
        };
        let config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cluster_id: CLUSTER.into(),
            client_roles: roles,
            limits,
        };
        let failures = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&failures);
        let mut builder = ApiServer::builder(config, tls)
            .routes(routes)
            .metrics(metrics)
            .on_auth_failure(move |f| sink.lock().unwrap().push(f.clone()));
        if let Some(health) = health {
            builder = builder.health(move || health());
        }
        let server = builder.bind().await.unwrap();
        let addr = server.local_addr();
        let openapi = server.openapi().clone();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            ca,
            failures,
            openapi,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn client(&self, name: &str) -> Client {
        Client::new(
            self.addr,
            &self.ca.cert,
            Some(self.ca.client(CLUSTER, name)),
        )
    }

    pub fn anonymous(&self) -> Client {
        Client::new(self.addr, &self.ca.cert, None)
    }

    pub fn with_identity(&self, identity: Identity) -> Client {
        Client::new(self.addr, &self.ca.cert, Some(identity))
    }

    pub fn failures(&self) -> Vec<AuthFailure> {
        self.failures.lock().unwrap().clone()
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("serve returns after shutdown")
                .unwrap();
        }
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// Asserts a problem details document of `kind` with `status`, and returns it.
    pub fn problem(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        let doc = self.json();
        assert_eq!(
            doc["type"],
            format!("https://strongroom.dev/problems/{kind}"),
            "{doc}"
        );
        assert_eq!(doc["status"], status);
        assert!(doc["title"].is_string());
        assert!(doc["instance"].is_string());
        doc
    }
}

/// An HTTPS client that opens one connection per request.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl Client {
    fn new(addr: SocketAddr, ca: &CertificateDer<'static>, identity: Option<Identity>) -> Self {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder.with_client_auth_cert(id.chain, id.key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        Self {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Bytes::new(), &[])
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &str) -> Reply {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Bytes::from(body.to_owned()),
            &[],
        )
        .await
        .unwrap()
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        extra_headers: &[(&str, &str)],
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost")?;
        let tls = self.connector.connect(name, tcp).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in extra_headers {
            req = req.header(*k, *v);
        }
        let response = sender.send_request(req.body(Full::new(body))?).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}
