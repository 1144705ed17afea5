//! The node's HTTPS API (axum, mTLS client authentication, RFC 9457 problem details).
//!
//! Every node serves this API. This crate is the framework the node's endpoints plug into,
//! with the endpoints every node has: `GET /v1/health`, `GET /metrics` and
//! `GET /v1/openapi.json`.
//!
//! # Contract
//!
//! - **Transport.** TLS 1.3 only (rustls with ring), HTTP/1.1. The server key is any rustls
//!   [`SigningKey`](rustls::sign::SigningKey): on an appliance it stays in the token.
//! - **Authentication.** A presented client certificate must chain to the cluster CA, or the
//!   handshake fails (and the failure hook hears of it). A client without a certificate gets
//!   a 401 problem on every route but the health probe. The identity is the certificate's one
//!   URI SAN, `spiffe://<cluster-id>/client/<name>`; another cluster's certificate, a node
//!   certificate, or one without that SAN gets a 403.
//! - **Authorization.** Roles come only from the node configuration ([`ClientRoles`]). Each
//!   route is registered with its [`Access`] rule and enforced before its handler runs; a
//!   handler can check more with the [`Caller`] extractor. A handler is only ever reached by a
//!   caller its rule admits.
//! - **Errors.** Everything that fails leaves as `application/problem+json` with a stable
//!   `type` (`https://strongroom.dev/problems/<kind>`), including malformed bodies and
//!   axum's own rejections. Handlers return [`ApiError`]; node-specific kinds are [`Problem`]s.
//! - **Limits.** Per-client token bucket (429 with `Retry-After`), per-client and node-wide
//!   caps on requests in progress (429 / 503), body size (413), request timeout (503),
//!   connection cap and handshake/header timeouts. See [`Limits`].
//! - **What it does not decide.** The API authenticates and authorizes callers; it takes no
//!   safety decision. Approvals are signatures every node verifies itself, so a compromised
//!   API node cannot forge them.
//! - **Honest description.** A route can only be added together with its OpenAPI operation
//!   ([`Routes`]), so the served document lists every route with its access rule.
//!
//! # Plugging in
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use strongroom_api::*;
//! # async fn run(config: ApiConfig, tls: TlsMaterial, metrics: Metrics) -> Result<(), ApiServerError> {
//! async fn list_keys(caller: Caller) -> Result<Json<Vec<String>>, ApiError> {
//!     Ok(Json(vec![format!("keys visible to {}", caller.name())]))
//! }
//! let routes = Routes::new().get(
//!     "/v1/keys",
//!     list_keys,
//!     Operation::new("list_keys", "List keys", Access::AnyOf(vec![Role::Admin, Role::Auditor]))
//!         .response_json(200, "The keys", serde_json::json!({"type": "array"})),
//! );
//! let server = ApiServer::builder(config, tls)
//!     .routes(routes)
//!     .health(|| Health::from_components(vec![ComponentHealth::ready("database")]))
//!     .metrics(metrics)
//!     .on_auth_failure(|failure| tracing::info!(%failure, "to the audit log"))
//!     .bind()
//!     .await?;
//! let addr = server.local_addr();
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! Handlers run under the request timeout and are dropped when it expires: work that must
//! finish once started (a database transaction that marks a presignature consumed) belongs in
//! a task of its own or must be safe to cancel.

mod health;
mod identity;
mod json;
mod limits;
mod metrics;
mod problem;
mod routes;
mod server;
mod tls;

pub use health::{ComponentHealth, Health, HealthSource};
pub use identity::{
    AuthFailure, AuthFailureHook, AuthFailureReason, Caller, ClientRoles, Role, UnknownRole,
};
pub use json::Json;
pub use limits::{Limits, RateLimit};
pub use metrics::{METRIC_PREFIX, METRICS_CONTENT_TYPE, Metrics};
pub use problem::{ApiError, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Problem, kinds};
pub use routes::{Access, Operation, RouteError, Routes};
pub use server::{
    ApiConfig, ApiServer, ApiServerBuilder, ApiServerError, HEALTH_PATH, METRICS_PATH, OPENAPI_PATH,
};
pub use tls::{TlsMaterial, TlsSetupError};

/// The metrics library the registry uses, so the node builds its metrics with the same
/// version.
pub use prometheus_client;
