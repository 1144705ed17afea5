//! `GET /v1/health`: liveness and readiness, as the node reports them.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::routes::{Access, Operation};

/// The node's health, as its parts report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The node is running and should not be restarted.
    pub live: bool,
    /// The node can serve requests (token open, database and etcd reachable, primes ready...).
    pub ready: bool,
    /// Each part's state, for an operator to see what is missing.
    pub components: Vec<ComponentHealth>,
}

impl Health {
    /// Live, and ready when every component is.
    pub fn from_components(components: Vec<ComponentHealth>) -> Self {
        let ready = components.iter().all(|c| c.ready);
        Self {
            live: true,
            ready,
            components,
        }
    }
}

/// One part of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    /// Its name (`hsm`, `database`, `etcd`, `peers`, ...).
    pub name: String,
    /// Whether it is ready.
    pub ready: bool,
    /// What an operator should know, e.g. why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ComponentHealth {
    /// A ready component.
    pub fn ready(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ready: true,
            detail: None,
        }
    }

    /// A component that is not ready, and why.
    pub fn not_ready(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ready: false,
            detail: Some(detail.into()),
        }
    }
}

/// Where the server gets the node's health from.
///
/// It is called on every health request, which anyone may send: answer from state the node
/// keeps current, without I/O.
pub trait HealthSource: Send + Sync {
    /// The current health.
    fn health(&self) -> Health;
}

impl<F: Fn() -> Health + Send + Sync> HealthSource for F {
    fn health(&self) -> Health {
        self()
    }
}

/// The source used when the node supplies none: the server is up, so the node is live and
/// ready.
pub(crate) fn server_only() -> Health {
    Health::from_components(vec![ComponentHealth::ready("api")])
}

pub(crate) async fn handler(State(source): State<Arc<dyn HealthSource>>) -> Response {
    let health = source.health();
    let status = if health.live && health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let summary = match (health.live, health.ready) {
        (true, true) => "ready",
        (true, false) => "not_ready",
        (false, _) => "not_live",
    };
    let body = json!({
        "status": summary,
        "live": health.live,
        "ready": health.ready,
        "components": health.components,
    });
    (status, Json(body)).into_response()
}

pub(crate) fn operation() -> Operation {
    let component = json!({
        "type": "object",
        "required": ["name", "ready"],
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "detail": {"type": "string"}
        }
    });
    let schema = json!({
        "type": "object",
        "required": ["status", "live", "ready", "components"],
        "properties": {
            "status": {"enum": ["ready", "not_ready", "not_live"]},
            "live": {"type": "boolean"},
            "ready": {"type": "boolean"},
            "components": {"type": "array", "items": component}
        }
    });
    Operation::new(
        "get_health",
        "Liveness and readiness of the node",
        Access::Public,
    )
    .description(
        "200 when the node is live and ready, 503 otherwise; the body is the same in both \
             cases and lists each component. Needs no client certificate.",
    )
    .tag("node")
    .response_json(200, "Live and ready", schema.clone())
    .response_json(503, "Not live or not ready", schema)
}
