//! The server: configuration, the builder the node plugs its routes into, the accept loop,
//! and the layer every request passes (limits, access control, problem details, metrics).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::health::{self, HealthSource};
use crate::identity::{
    AuthFailure, AuthFailureHook, AuthFailureReason, Caller, ClientRoles, Connection, PeerIdentity,
    identify, is_label,
};
use crate::json::BodyLimit;
use crate::limits::{InFlight, InFlightGuard, Limits, RateLimiter};
use crate::metrics::{HttpLabels, HttpMetrics, METRICS_CONTENT_TYPE, Metrics};
use crate::problem::{ApiError, PROBLEM_CONTENT_TYPE, Problem, problem_for_status};
use crate::routes::{self, Access, Operation, RouteError, Routes};
use crate::tls::{TlsMaterial, TlsSetupError, server_config};

/// Path of the health probe.
pub const HEALTH_PATH: &str = "/v1/health";
/// Path of the Prometheus exposition.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// Largest error body of a non-problem response that is quoted as a problem's detail.
const MAX_QUOTED_BODY: usize = 1024;

/// What the server needs from the node configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Address to listen on (port 0 picks a free port; see [`ApiServer::local_addr`]).
    pub listen: SocketAddr,
    /// The cluster id: only `spiffe://<cluster-id>/client/<name>` certificates are clients.
    pub cluster_id: String,
    /// The roles of each client.
    pub client_roles: ClientRoles,
    /// Request, connection and rate limits.
    pub limits: Limits,
}

/// The server cannot start; each variant names the configuration to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A limit is out of range.
    #[error("invalid API limit `{field}`: {reason}")]
    InvalidLimit {
        /// The [`Limits`] field.
        field: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// The cluster id is not a valid identifier.
    #[error("cluster id '{0}' must be 1-63 characters of a-z, 0-9 and '-'")]
    BadClusterId(String),
    /// Routes clash or are malformed (a fault of the code registering them).
    #[error("invalid routes: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Routes(Vec<RouteError>),
    /// The OpenAPI document cannot be serialized.
    #[error("cannot serialize the OpenAPI document: {0}")]
    OpenApi(#[source] serde_json::Error),
}

fn validate(limits: &Limits) -> Result<(), ApiServerError> {
    let bad = |field, reason| Err(ApiServerError::InvalidLimit { field, reason });
    if limits.max_body_bytes == 0 {
        return bad("max_body_bytes", "must be at least 1");
    }
    if limits.max_in_flight == 0 {
        return bad("max_in_flight", "must be at least 1");
    }
    if limits.max_in_flight_per_client == 0
        || limits.max_in_flight_per_client >= limits.max_in_flight
    {
        return bad(
            "max_in_flight_per_client",
            "must be at least 1 and below max_in_flight, so one client cannot take every slot",
        );
    }
    if limits.max_connections == 0 {
        return bad("max_connections", "must be at least 1");
    }
    for (field, value) in [
        ("request_timeout", limits.request_timeout),
        ("handshake_timeout", limits.handshake_timeout),
        ("header_read_timeout", limits.header_read_timeout),
    ] {
        if value.is_zero() {
            return bad(field, "must be longer than zero");
        }
    }
    if let Some(rate) = &limits.rate_limit {
        if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
            return bad("rate_limit.per_second", "must be a positive number");
        }
        if rate.burst == 0 {
            return bad("rate_limit.burst", "must be at least 1");
        }
    }
    Ok(())
}

/// Builds an [`ApiServer`]: the node adds its routes, its health source, its metrics registry
/// and a hook for refused clients, then binds.
pub struct ApiServerBuilder {
    config: ApiConfig,
    tls: TlsMaterial,
    routes: Routes,
    health: Arc<dyn HealthSource>,
    metrics: Metrics,
    hook: Option<AuthFailureHook>,
}

impl std::fmt::Debug for ApiServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerBuilder")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl ApiServerBuilder {
    /// Adds routes (with their state already supplied). May be called more than once.
    #[must_use]
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = std::mem::take(&mut self.routes).merge(routes);
        self
    }

    /// Where `GET /v1/health` reads the node's health. Without one, the node is reported
    /// live and ready as long as the server runs.
    #[must_use]
    pub fn health(mut self, source: impl HealthSource + 'static) -> Self {
        self.health = Arc::new(source);
        self
    }

    /// The registry `GET /metrics` serves; the server adds its HTTP metrics to it. Use one
    /// registry per server. Without one, the server has a registry of its own.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Called for every refused client (no certificate, wrong cluster, node certificate,
    /// certificate rejected in the handshake, missing role), in addition to a log line.
    #[must_use]
    pub fn on_auth_failure(mut self, hook: impl Fn(&AuthFailure) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Checks the configuration, builds the TLS configuration and the routes, and binds the
    /// listen address.
    pub async fn bind(self) -> Result<ApiServer, ApiServerError> {
        let Self {
            config,
            tls,
            routes,
            health,
            metrics,
            hook,
        } = self;
        validate(&config.limits)?;
        if !is_label(&config.cluster_id) {
            return Err(ApiServerError::BadClusterId(config.cluster_id));
        }
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&tls)?));

        let doc_cell = Arc::new(OnceLock::new());
        let parts = builtin_routes(health, metrics.clone(), Arc::clone(&doc_cell))
            .merge(routes)
            .into_parts();
        if !parts.errors.is_empty() {
            return Err(ApiServerError::Routes(parts.errors));
        }
        let openapi = routes::document(parts.paths);
        let doc_bytes = serde_json::to_vec(&openapi).map_err(ApiServerError::OpenApi)?;
        // The cell is fresh, so this set cannot find it full.
        let _ = doc_cell.set(Bytes::from(doc_bytes));

        let limits = config.limits;
        let shared = Arc::new(Shared {
            roles: config.client_roles,
            access: parts.access,
            rate: limits.rate_limit.map(RateLimiter::new),
            clients: Arc::new(InFlight::default()),
            slots: Arc::new(Semaphore::new(limits.max_in_flight)),
            http: HttpMetrics::register(&metrics),
            hook,
            limits,
        });
        let app = parts
            .router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(shared.limits.max_body_bytes))
            .layer(from_fn_with_state(Arc::clone(&shared), front));

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ApiServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ApiServerError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(ApiServer {
            listener,
            local_addr,
            acceptor,
            app,
            shared,
            cluster_id: Arc::from(config.cluster_id),
            openapi,
        })
    }
}

/// A bound server; [`ApiServer::serve`] runs it.
pub struct ApiServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    shared: Arc<Shared>,
    cluster_id: Arc<str>,
    openapi: serde_json::Value,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts building a server.
    pub fn builder(config: ApiConfig, tls: TlsMaterial) -> ApiServerBuilder {
        ApiServerBuilder {
            config,
            tls,
            routes: Routes::new(),
            health: Arc::new(health::server_only),
            metrics: Metrics::new(),
            hook: None,
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The OpenAPI document served at `/v1/openapi.json`.
    pub fn openapi(&self) -> &serde_json::Value {
        &self.openapi
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in progress
    /// finish for up to [`Limits::shutdown_grace`], and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Self {
            listener,
            local_addr,
            acceptor,
            app,
            shared,
            cluster_id,
            ..
        } = self;
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(shared.limits.max_connections));
        info!(%local_addr, "API server listening");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        warn!(error = %e, "accepting an API connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                debug!(%peer, "connection limit reached; closing the new connection");
                continue;
            };
            let conn = ConnectionTask {
                acceptor: acceptor.clone(),
                app: app.clone(),
                shared: Arc::clone(&shared),
                cluster_id: Arc::clone(&cluster_id),
                watcher: graceful.watcher(),
                _permit: permit,
            };
            tokio::spawn(conn.run(tcp, peer));
        }
        drop(listener);
        info!(%local_addr, "API server stopping; waiting for requests in progress");
        if tokio::time::timeout(shared.limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("API requests still in progress after the shutdown grace period; closing them");
        }
    }
}

/// One accepted connection: handshake, identity, then HTTP/1.1 until it closes.
struct ConnectionTask {
    acceptor: TlsAcceptor,
    app: Router,
    shared: Arc<Shared>,
    cluster_id: Arc<str>,
    watcher: hyper_util::server::graceful::Watcher,
    _permit: OwnedSemaphorePermit,
}

impl ConnectionTask {
    async fn run(self, tcp: TcpStream, peer: SocketAddr) {
        // Small request/response exchanges: do not wait to coalesce segments.
        let _ = tcp.set_nodelay(true);
        let limits = &self.shared.limits;
        let tls =
            match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    self.handshake_failed(peer, &e);
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
        let identity = identify(tls.get_ref().1.peer_certificates(), &self.cluster_id);
        let connection = Connection {
            peer,
            identity: Arc::new(identity),
        };
        let app = self.app;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(connection.clone());
            app.clone().oneshot(req)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let served = self
            .watcher
            .watch(http.serve_connection(TokioIo::new(tls), service))
            .await;
        if let Err(e) = served {
            debug!(%peer, error = %e, "API connection ended with an error");
        }
    }

    fn handshake_failed(&self, peer: SocketAddr, e: &io::Error) {
        let tls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls_error {
            Some(
                err @ (rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_)),
            ) => {
                let reason = AuthFailureReason::HandshakeRejected {
                    detail: err.to_string(),
                };
                self.shared.report(AuthFailure {
                    peer,
                    path: None,
                    reason,
                });
            }
            _ => debug!(%peer, error = %e, "TLS handshake failed"),
        }
    }
}

/// The registered routes' access rules, the limits and the metrics, shared by every request.
struct Shared {
    roles: ClientRoles,
    access: HashMap<(String, Method), Access>,
    limits: Limits,
    rate: Option<RateLimiter>,
    clients: Arc<InFlight>,
    slots: Arc<Semaphore>,
    http: HttpMetrics,
    hook: Option<AuthFailureHook>,
}

/// Holds a request's places in the per-client and node-wide counts.
struct Admitted {
    _client: InFlightGuard,
    _slot: OwnedSemaphorePermit,
}

impl Shared {
    fn report(&self, failure: AuthFailure) {
        warn!(peer = %failure.peer, path = ?failure.path, reason = %failure.reason, "API client refused");
        if let Some(hook) = &self.hook {
            hook(&failure);
        }
    }

    /// The access rule of a route; `HEAD` follows `GET`. A request that matched no route, or
    /// not with this method, must still authenticate before it learns that.
    fn access_for(&self, route: Option<&str>, method: &Method) -> &Access {
        const ANY_CLIENT: &Access = &Access::AnyClient;
        let Some(route) = route else {
            return ANY_CLIENT;
        };
        let lookup = |m: &Method| self.access.get(&(route.to_owned(), m.clone()));
        lookup(method)
            .or_else(|| {
                if *method == Method::HEAD {
                    lookup(&Method::GET)
                } else {
                    None
                }
            })
            .unwrap_or(ANY_CLIENT)
    }

    /// Rate limit, access control, per-client and node-wide concurrency, body size; in that
    /// order, so a flooding client is turned away before it holds anything.
    fn admit(&self, req: &mut Request, route: Option<&str>) -> Result<Admitted, ApiError> {
        let conn = req
            .extensions()
            .get::<Connection>()
            .cloned()
            .unwrap_or_else(|| Connection {
                peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                identity: Arc::new(PeerIdentity::Anonymous),
            });
        let key = conn.limit_key();
        if let Some(rate) = &self.rate {
            if let Err(retry_after) = rate.check(&key, Instant::now()) {
                debug!(client = %key, "API rate limit exceeded");
                return Err(ApiError::RateLimited {
                    client: key,
                    retry_after,
                });
            }
        }
        let access = self.access_for(route, req.method());
        if let Some(caller) = self.authorize(&conn, access, req)? {
            req.extensions_mut().insert(caller);
        }
        let limit = self.limits.max_in_flight_per_client;
        let client = self
            .clients
            .enter(&key, limit)
            .ok_or_else(|| ApiError::TooManyInFlight {
                client: key.clone(),
                limit,
            })?;
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            warn!(
                limit = self.limits.max_in_flight,
                "API at its request limit; shedding load"
            );
            ApiError::Overloaded {
                limit: self.limits.max_in_flight,
            }
        })?;
        let max_body = self.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body as u64) {
            return Err(ApiError::BodyTooLarge { limit: max_body });
        }
        req.extensions_mut().insert(BodyLimit(max_body));
        Ok(Admitted {
            _client: client,
            _slot: slot,
        })
    }

    fn authorize(
        &self,
        conn: &Connection,
        access: &Access,
        req: &Request,
    ) -> Result<Option<Caller>, ApiError> {
        let caller = match &*conn.identity {
            PeerIdentity::Client(name) => Ok(Caller::new(name.clone(), self.roles.roles_of(name))),
            PeerIdentity::Anonymous => Err(AuthFailureReason::NoCertificate),
            PeerIdentity::Refused(reason) => Err(reason.clone()),
        };
        let path = req.uri().path();
        let refuse = |reason: AuthFailureReason| {
            let error = reason.to_api_error();
            self.report(AuthFailure {
                peer: conn.peer,
                path: Some(path.to_owned()),
                reason,
            });
            Err(error)
        };
        match (access, caller) {
            (Access::Public, caller) => Ok(caller.ok()),
            (_, Err(reason)) => refuse(reason),
            (Access::AnyClient, Ok(caller)) => Ok(Some(caller)),
            (Access::AnyOf(roles), Ok(caller)) => {
                if roles.iter().any(|r| caller.has(*r)) {
                    Ok(Some(caller))
                } else {
                    refuse(AuthFailureReason::MissingRole {
                        client: caller.name().to_owned(),
                        needed: roles.clone(),
                        method: req.method().to_string(),
                        path: path.to_owned(),
                    })
                }
            }
        }
    }
}

/// The layer around every route: admission, timeout, problem details, metrics.
async fn front(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let response = match shared.admit(&mut req, route.as_deref()) {
        Ok(admitted) => {
            let after = shared.limits.request_timeout;
            let result = tokio::time::timeout(after, next.run(req)).await;
            drop(admitted);
            match result {
                Ok(response) => response,
                Err(_) => {
                    warn!(%method, %path, ?after, "API request timed out");
                    ApiError::Timeout { after }.into_response()
                }
            }
        }
        Err(e) => e.into_response(),
    };
    let response = finish(response, &path).await;
    let labels = HttpLabels {
        method: method_label(&method).to_owned(),
        route: route.unwrap_or_else(|| "unmatched".to_owned()),
        status: response.status().as_u16(),
    };
    shared.http.record(&labels, started.elapsed());
    response
}

/// Known methods by name, anything else as `other`, so the label set stays bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Every error leaves as a problem details document with its `instance` set: problems get the
/// request path, and error responses made elsewhere (axum's extractor rejections) are turned
/// into problems quoting their text.
async fn finish(response: Response, path: &str) -> Response {
    let status = response.status();
    if let Some(problem) = response.extensions().get::<Problem>() {
        if problem.instance().is_some() {
            return response;
        }
        let problem = problem.clone().with_instance(path);
        return replace_body(response, problem);
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with(PROBLEM_CONTENT_TYPE)
        });
    if is_json {
        // A handler's own JSON error body (e.g. the health document with 503).
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match Limited::new(body, MAX_QUOTED_BODY).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let detail = (!text.is_empty()).then_some(text);
    let problem = problem_for_status(status, detail).with_instance(path);
    replace_body(Response::from_parts(parts, Body::empty()), problem)
}

/// The response with `problem` as its body, keeping its status and other headers.
fn replace_body(response: Response, problem: Problem) -> Response {
    let (mut parts, _) = response.into_parts();
    let body = serde_json::to_vec(&problem.to_json()).unwrap_or_else(|_| b"{}".to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    parts.extensions.insert(problem);
    Response::from_parts(parts, Body::from(body))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound {
        detail: format!(
            "no route for {}; {OPENAPI_PATH} lists the API",
            req.uri().path()
        ),
    }
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}

/// The routes every node serves.
fn builtin_routes(
    health: Arc<dyn HealthSource>,
    metrics: Metrics,
    openapi: Arc<OnceLock<Bytes>>,
) -> Routes {
    let health = Routes::new()
        .get(HEALTH_PATH, health::handler, health::operation())
        .with_state(health);
    let metrics = Routes::new()
        .get(
            METRICS_PATH,
            metrics_handler,
            Operation::new(
                "get_metrics",
                "Prometheus metrics of the node",
                Access::AnyOf(vec![crate::Role::Auditor, crate::Role::Admin]),
            )
            .description("OpenMetrics text; every metric is named `strongroom_*`.")
            .tag("node")
            .response_with(
                200,
                "Metrics",
                METRICS_CONTENT_TYPE,
                serde_json::json!({"type": "string"}),
            ),
        )
        .with_state(metrics);
    let openapi = Routes::new()
        .get(
            OPENAPI_PATH,
            openapi_handler,
            Operation::new("get_openapi", "This OpenAPI document", Access::AnyClient)
                .tag("node")
                .response_json(
                    200,
                    "OpenAPI 3.1 document",
                    serde_json::json!({"type": "object"}),
                ),
        )
        .with_state(openapi);
    health.merge(metrics).merge(openapi)
}

async fn metrics_handler(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::internal(format!("encoding metrics: {e}")).into_response(),
    }
}

async fn openapi_handler(State(doc): State<Arc<OnceLock<Bytes>>>) -> Response {
    match doc.get() {
        Some(doc) => ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response(),
        None => ApiError::internal("the OpenAPI document was not built").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::RateLimit;
    use axum::http::StatusCode;

    #[test]
    fn limits_are_validated() {
        assert!(validate(&Limits::default()).is_ok());
        let mut l = Limits::default();
        l.max_in_flight_per_client = l.max_in_flight;
        assert!(validate(&l).is_err());
        let l = Limits {
            rate_limit: Some(RateLimit {
                per_second: f64::NAN,
                burst: 1,
            }),
            ..Limits::default()
        };
        assert!(validate(&l).is_err());
        let l = Limits {
            request_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(validate(&l).is_err());
    }

    #[tokio::test]
    async fn plain_text_errors_become_problems() {
        let response = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
            .into_response();
        let response = finish(response, "/v1/x").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            doc["type"],
            "https://strongroom.dev/problems/invalid-request"
        );
        assert_eq!(doc["instance"], "/v1/x");
        assert_eq!(doc["detail"], "Failed to deserialize query string");
    }

    #[tokio::test]
    async fn server_errors_do_not_leak_their_text() {
        let response = (StatusCode::INTERNAL_SERVER_ERROR, "db password wrong").into_response();
        let response = finish(response, "/v1/x").await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("password"));
    }
}
