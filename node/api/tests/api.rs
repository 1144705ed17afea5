//! The API framework over real TLS on 127.0.0.1: authentication, roles, limits, problem
//! details, health, metrics and the OpenAPI document.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderMap, Method, StatusCode};
use hyper::body::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_api::prometheus_client;
use strongroom_api::{
    Access, ApiError, AuthFailureReason, Caller, ClientRoles, ComponentHealth, Health, Json,
    Limits, Metrics, Operation, Problem, RateLimit, Role, Routes,
};

use common::{CLUSTER, Ca, TestServer};

#[derive(Deserialize)]
struct SampleBody {
    name: String,
    threshold: u16,
}

async fn submit(caller: Caller, Json(body): Json<SampleBody>) -> Result<Json<Value>, ApiError> {
    if body.threshold == 0 {
        return Err(ApiError::invalid_field(
            "threshold",
            "the threshold must be at least 1",
        ));
    }
    Ok(Json(
        json!({"client": caller.name(), "name": body.name, "threshold": body.threshold}),
    ))
}

async fn item(Path(item_id): Path<u32>) -> Result<Json<Value>, ApiError> {
    if item_id == 7 {
        return Err(
            Problem::new("item-sealed", StatusCode::CONFLICT, "Item sealed")
                .with_detail("item 7 is sealed")
                .with_extension("item_id", 7)
                .into(),
        );
    }
    Ok(Json(json!({"item_id": item_id})))
}

/// Long enough that concurrent requests overlap even on a loaded machine.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(1)).await;
    "done"
}

async fn framing(headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "content_length": headers.contains_key("content-length"),
        "chunked": headers.get("transfer-encoding").is_some_and(|v| v == "chunked"),
    }))
}

async fn whoami(caller: Caller) -> Json<Value> {
    let roles: Vec<&str> = caller.roles().iter().map(|r| r.as_str()).collect();
    Json(json!({"name": caller.name(), "roles": roles}))
}

fn sample_routes() -> Routes {
    Routes::new()
        .post(
            "/v1/sample",
            submit,
            Operation::new(
                "submit_sample",
                "Submit a sample",
                Access::role(Role::Submitter),
            )
            .request_json(json!({"type": "object"}))
            .response_json(200, "Accepted", json!({"type": "object"})),
        )
        .get(
            "/v1/items/{item_id}",
            item,
            Operation::new("get_item", "Get an item", Access::AnyClient)
                .path_param("item_id", "Item number", json!({"type": "integer"}))
                .problem(409, "The item is sealed"),
        )
        .get(
            "/v1/slow",
            slow,
            Operation::new("slow", "Takes a second", Access::AnyClient),
        )
        .post(
            "/v1/framing",
            framing,
            Operation::new(
                "framing",
                "How the request body was framed",
                Access::AnyClient,
            ),
        )
        .get(
            "/v1/whoami",
            whoami,
            Operation::new("whoami", "The caller", Access::AnyClient),
        )
}

fn roles() -> ClientRoles {
    ClientRoles::new()
        .grant("alice", [Role::Submitter])
        .grant("bob", [Role::Submitter])
        .grant("audra", [Role::Auditor])
        .grant("root", [Role::Admin, Role::Auditor])
}

fn relaxed_limits() -> Limits {
    Limits {
        rate_limit: None,
        ..Limits::default()
    }
}

async fn start(limits: Limits) -> TestServer {
    TestServer::start(sample_routes(), roles(), limits, Metrics::new(), None).await
}

#[tokio::test]
async fn health_is_public_and_follows_the_node() {
    let ready = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&ready);
    let health: Arc<dyn Fn() -> Health + Send + Sync> = Arc::new(move || {
        Health::from_components(vec![
            ComponentHealth::ready("hsm"),
            if flag.load(Ordering::SeqCst) {
                ComponentHealth::ready("database")
            } else {
                ComponentHealth::not_ready("database", "cannot reach 127.0.0.1:5432")
            },
        ])
    });
    let server = TestServer::start(
        sample_routes(),
        roles(),
        relaxed_limits(),
        Metrics::new(),
        Some(health),
    )
    .await;

    let reply = server.anonymous().get("/v1/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    let doc = reply.json();
    assert_eq!(doc["status"], "ready");
    assert_eq!(doc["components"][1]["name"], "database");

    ready.store(false, Ordering::SeqCst);
    let reply = server.client("alice").get("/v1/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let doc = reply.json();
    assert_eq!(doc["status"], "not_ready");
    assert_eq!(doc["live"], true);
    assert_eq!(
        doc["components"][1]["detail"],
        "cannot reach 127.0.0.1:5432"
    );
    assert!(
        server.failures().is_empty(),
        "health needs no authentication"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_serve_node_and_http_metrics_to_auditors() {
    let metrics = Metrics::new();
    let pool = Gauge::<i64>::default();
    metrics.register(
        "presignatures_available",
        "Presignatures ready to use",
        pool.clone(),
    );
    pool.set(97);
    let server = TestServer::start(sample_routes(), roles(), relaxed_limits(), metrics, None).await;

    assert_eq!(
        server.anonymous().get("/v1/health").await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.client("alice").get("/v1/items/3").await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.client("alice").get("/v1/nowhere").await.status,
        StatusCode::NOT_FOUND
    );

    let reply = server.client("audra").get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .content_type()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(
        text.contains("strongroom_presignatures_available 97"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"strongroom_http_requests_total{method="GET",route="/v1/health",status="200"} 1"#
        ),
        "{text}"
    );
    // The route pattern, never the raw path.
    assert!(
        text.contains(
            r#"strongroom_http_requests_total{method="GET",route="/v1/items/{item_id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        text.contains("strongroom_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));

    // A submitter may not read metrics; the problem names the roles that may.
    let doc = server
        .client("alice")
        .get("/metrics")
        .await
        .problem(403, "missing-role");
    assert_eq!(doc["roles_needed"], json!(["auditor", "admin"]));
    server.stop().await;
}

#[tokio::test]
async fn openapi_lists_every_served_route() {
    let server = start(relaxed_limits()).await;
    let reply = server.client("alice").get("/v1/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert_eq!(doc, server.openapi);
    assert_eq!(doc["openapi"], "3.1.0");

    let mut registered: Vec<(String, String)> = sample_routes()
        .paths()
        .map(|(p, m)| (p.to_owned(), m.as_str().to_ascii_lowercase()))
        .collect();
    registered.extend(
        [
            ("/v1/health", "get"),
            ("/metrics", "get"),
            ("/v1/openapi.json", "get"),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned())),
    );
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (p.clone(), m.clone()))
        })
        .collect();
    registered.sort();
    documented.sort();
    assert_eq!(registered, documented);

    // Every documented operation is actually served (no routing 404 or 405).
    let root = server.client("root");
    for (path, method) in &documented {
        let concrete = path.replace("{item_id}", "3");
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let reply = root
            .send(
                method.clone(),
                &concrete,
                Some("application/json"),
                Bytes::from("{}"),
                &[],
            )
            .await
            .unwrap();
        if reply.content_type() == "application/problem+json" {
            let kind = reply.json()["type"].as_str().unwrap().to_owned();
            assert!(
                !kind.ends_with("/not-found") && !kind.ends_with("/method-not-allowed"),
                "{method} {path}: {kind}"
            );
        }
    }

    let op = &doc["paths"]["/v1/sample"]["post"];
    assert_eq!(op["x-strongroom-access"], json!(["submitter"]));
    for status in ["200", "400", "401", "403", "413", "415", "429", "503"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
    assert_eq!(
        doc["paths"]["/v1/health"]["get"]["x-strongroom-access"],
        "public"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["mutualTLS"]["type"],
        "mutualTLS"
    );
    server.stop().await;
}

#[tokio::test]
async fn no_certificate_gets_401_problem() {
    let server = start(relaxed_limits()).await;
    let doc = server
        .anonymous()
        .get("/v1/whoami")
        .await
        .problem(401, "unauthenticated");
    assert_eq!(doc["instance"], "/v1/whoami");
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("client certificate")
    );
    // Unknown paths do not tell an anonymous peer what exists.
    server
        .anonymous()
        .get("/v1/nowhere")
        .await
        .problem(401, "unauthenticated");
    let failures = server.failures();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].reason, AuthFailureReason::NoCertificate);
    assert_eq!(failures[0].path.as_deref(), Some("/v1/whoami"));
    server.stop().await;
}

/// A certificate from another CA is refused in the TLS handshake (no HTTP response at all),
/// and the refusal reaches the failure hook.
#[tokio::test]
async fn certificate_from_another_ca_is_refused_in_the_handshake() {
    let server = start(relaxed_limits()).await;
    let rogue = Ca::new("rogue CA");
    let client = server.with_identity(rogue.client(CLUSTER, "alice"));
    let result = client
        .send(Method::GET, "/v1/whoami", None, Bytes::new(), &[])
        .await;
    assert!(
        result.is_err(),
        "expected the handshake to be refused, got {result:?}"
    );
    // The server reports asynchronously from the connection task.
    let mut failures = Vec::new();
    for _ in 0..50 {
        failures = server.failures();
        if !failures.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(&failures[..], [f] if matches!(f.reason, AuthFailureReason::HandshakeRejected { .. })),
        "{failures:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn other_cluster_and_node_certificates_get_403() {
    let server = start(relaxed_limits()).await;
    let other = server.with_identity(server.ca.client("c2", "alice"));
    let doc = other
        .get("/v1/whoami")
        .await
        .problem(403, "forbidden-identity");
    let detail = doc["detail"].as_str().unwrap();
    assert!(
        detail.contains("'c2'") && detail.contains("'c1'"),
        "{detail}"
    );

    let node = server.with_identity(server.ca.node(CLUSTER, "n2"));
    let doc = node
        .get("/v1/whoami")
        .await
        .problem(403, "forbidden-identity");
    assert!(doc["detail"].as_str().unwrap().contains("node certificate"));

    let failures = server.failures();
    assert!(matches!(
        failures[0].reason,
        AuthFailureReason::WrongCluster { .. }
    ));
    assert!(matches!(
        failures[1].reason,
        AuthFailureReason::NodeCertificate { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn roles_are_enforced_per_route() {
    let server = start(relaxed_limits()).await;
    let body = r#"{"name": "k1", "threshold": 2}"#;

    let reply = server.client("alice").post_json("/v1/sample", body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["client"], "alice");

    let doc = server
        .client("audra")
        .post_json("/v1/sample", body)
        .await
        .problem(403, "missing-role");
    assert_eq!(doc["roles_needed"], json!(["submitter"]));
    assert_eq!(doc["client"], "audra");
    assert!(doc["detail"].as_str().unwrap().contains("'submitter'"));

    // Authenticated but not configured: no roles.
    let stranger = server.client("stranger");
    stranger
        .post_json("/v1/sample", body)
        .await
        .problem(403, "missing-role");
    let me = stranger.get("/v1/whoami").await.json();
    assert_eq!(me, json!({"name": "stranger", "roles": []}));

    let failures = server.failures();
    assert_eq!(failures.len(), 2);
    assert!(matches!(
        &failures[0].reason,
        AuthFailureReason::MissingRole { client, needed, .. }
            if client == "audra" && needed == &vec![Role::Submitter]
    ));
    server.stop().await;
}

#[tokio::test]
async fn bodies_are_checked_and_rejections_are_problems() {
    let server = start(Limits {
        max_body_bytes: 1024,
        ..relaxed_limits()
    })
    .await;
    let alice = server.client("alice");

    // Declared too large: refused before the body is read.
    let big = format!(r#"{{"name": "{}", "threshold": 2}}"#, "x".repeat(4096));
    let doc = alice
        .post_json("/v1/sample", &big)
        .await
        .problem(413, "body-too-large");
    assert_eq!(doc["limit"], 1024);
    // Chunked, so no length is declared: refused while reading.
    let chunked = [("transfer-encoding", "chunked")];
    let framing = alice
        .send(
            Method::POST,
            "/v1/framing",
            None,
            Bytes::from("x"),
            &chunked,
        )
        .await
        .unwrap()
        .json();
    assert_eq!(framing, json!({"content_length": false, "chunked": true}));
    let reply = alice
        .send(
            Method::POST,
            "/v1/sample",
            Some("application/json"),
            Bytes::from(big.clone()),
            &chunked,
        )
        .await
        .unwrap();
    reply.problem(413, "body-too-large");

    let doc = alice
        .post_json("/v1/sample", "{\"name\": \"k\",\n \"threshold\": }")
        .await;
    let doc = doc.problem(400, "malformed-json");
    assert_eq!(doc["line"], 2);
    assert!(doc["column"].as_u64().unwrap() > 0);

    let doc = alice
        .post_json("/v1/sample", r#"{"name": "k", "threshold": "two"}"#)
        .await;
    assert_eq!(doc.problem(400, "invalid-request")["field"], "threshold");

    let doc = alice
        .post_json("/v1/sample", r#"{"name": "k", "threshold": 0}"#)
        .await;
    let doc = doc.problem(400, "invalid-request");
    assert_eq!(doc["field"], "threshold");
    assert_eq!(doc["detail"], "the threshold must be at least 1");

    let reply = alice
        .send(
            Method::POST,
            "/v1/sample",
            Some("text/plain"),
            Bytes::from("{}"),
            &[],
        )
        .await
        .unwrap();
    reply.problem(415, "unsupported-media-type");

    // axum's own rejections (a path that is not a number) become problems too.
    let doc = alice
        .get("/v1/items/abc")
        .await
        .problem(400, "invalid-request");
    assert!(doc["detail"].as_str().unwrap().contains("abc"), "{doc}");

    // A node-defined problem kind keeps its type and extensions, and gets its instance.
    let doc = alice.get("/v1/items/7").await.problem(409, "item-sealed");
    assert_eq!(doc["item_id"], 7);
    assert_eq!(doc["instance"], "/v1/items/7");

    alice.get("/v1/nowhere").await.problem(404, "not-found");
    let reply = alice
        .send(Method::DELETE, "/v1/whoami", None, Bytes::new(), &[])
        .await
        .unwrap();
    reply.problem(405, "method-not-allowed");
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_stops_the_flooding_client_only() {
    let limits = Limits {
        rate_limit: Some(RateLimit {
            per_second: 1.0,
            burst: 5,
        }),
        ..Limits::default()
    };
    let server = start(limits).await;
    let alice = server.client("alice");
    let bob = server.client("bob");

    let mut limited = None;
    for _ in 0..20 {
        let reply = alice.get("/v1/whoami").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = limited.expect("the flood was rate limited");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let doc = limited.problem(429, "rate-limited");
    assert!(doc["detail"].as_str().unwrap().contains("alice"));

    // Alice is still limited, Bob is served.
    assert_eq!(
        alice.get("/v1/whoami").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let reply = bob.get("/v1/whoami").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["name"], "bob");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_flood_does_not_starve_other_clients() {
    let limits = Limits {
        rate_limit: None,
        max_in_flight_per_client: 2,
        max_in_flight: 4,
        ..Limits::default()
    };
    let server = start(limits).await;
    let alice = server.client("alice");
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.get("/v1/slow").await })
        })
        .collect();
    // Let the flood take its slots, then another client asks.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reply = server.client("bob").get("/v1/slow").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"done");

    let mut ok = 0;
    let mut refused = 0;
    for task in flood {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            200 => ok += 1,
            429 => {
                reply.problem(429, "too-many-in-flight");
                assert_eq!(reply.headers["retry-after"], "1");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {:?}", reply.body),
        }
    }
    assert!(ok >= 2 && refused >= 1, "ok {ok}, refused {refused}");
    server.stop().await;
}

#[tokio::test]
async fn node_wide_limit_sheds_load_with_503() {
    let limits = Limits {
        rate_limit: None,
        max_in_flight_per_client: 2,
        max_in_flight: 3,
        ..Limits::default()
    };
    let server = start(limits).await;
    let tasks: Vec<_> = ["alice", "bob"]
        .into_iter()
        .flat_map(|name| {
            let client = server.client(name);
            (0..2).map(move |_| {
                let client = client.clone();
                tokio::spawn(async move { client.get("/v1/slow").await })
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            reply.problem(503, "overloaded");
        }
        statuses.push(reply.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200, 503]);
    server.stop().await;
}

#[tokio::test]
async fn slow_requests_time_out_with_a_problem() {
    let limits = Limits {
        request_timeout: Duration::from_millis(100),
        ..relaxed_limits()
    };
    let server = start(limits).await;
    let doc = server
        .client("alice")
        .get("/v1/slow")
        .await
        .problem(503, "timeout");
    assert!(doc["detail"].as_str().unwrap().contains("100 ms"));
    // The timeout is per request: fast ones still pass.
    assert_eq!(
        server.client("alice").get("/v1/whoami").await.status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn clashing_routes_are_refused_at_bind() {
    let routes = Routes::new().get(
        "/v1/health",
        whoami,
        Operation::new("dup", "Duplicate of the health route", Access::AnyClient),
    );
    let ca = Ca::new("ca");
    let node = ca.node(CLUSTER, "n1");
    let tls = strongroom_api::TlsMaterial {
        key: rustls::crypto::ring::sign::any_ecdsa_type(&node.key).unwrap(),
        cert_chain: node.chain,
        cluster_ca: vec![ca.cert.clone()],
    };
    let config = strongroom_api::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster_id: CLUSTER.into(),
        client_roles: roles(),
        limits: Limits::default(),
    };
    let err = strongroom_api::ApiServer::builder(config, tls)
        .routes(routes)
        .bind()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("GET /v1/health is registered twice"),
        "{err}"
    );
}
