//! Errors as RFC 9457 problem details.
//!
//! Every error the API returns is an `application/problem+json` document with a stable `type`
//! URI (`https://strongroom.dev/problems/<kind>`) that clients may match on; `title` is fixed
//! per kind, `detail` explains this occurrence and names the fix, and `instance` is the request
//! path. Extension members (`field`, `line`, `limit`, `roles_needed`, ...) carry what a program
//! needs to react without parsing prose.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::identity::Role;

/// Prefix of every problem `type` URI.
pub const PROBLEM_TYPE_BASE: &str = "https://strongroom.dev/problems/";

/// Media type of a problem details document.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Member names RFC 9457 defines; extensions may not reuse them.
const RESERVED: [&str; 5] = ["type", "title", "status", "detail", "instance"];

/// One RFC 9457 problem details document.
///
/// Build one for a kind of error the framework does not define with [`Problem::new`]; the
/// `kind` becomes the last segment of the `type` URI and must stay stable once published.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    kind: Cow<'static, str>,
    status: StatusCode,
    title: Cow<'static, str>,
    detail: Option<String>,
    instance: Option<String>,
    extensions: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl Problem {
    /// A problem of `kind` (lowercase, `-`-separated, e.g. `psbt-invalid`) with its HTTP status
    /// and its fixed, human-readable title.
    pub fn new(
        kind: impl Into<Cow<'static, str>>,
        status: StatusCode,
        title: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind: kind.into(),
            status,
            title: title.into(),
            detail: None,
            instance: None,
            extensions: Map::new(),
            retry_after: None,
        }
    }

    /// Explains this occurrence; say what was wrong and how to fix it.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member. Names RFC 9457 reserves (`type`, `title`, `status`, `detail`,
    /// `instance`) are ignored: they are set through their own methods.
    #[must_use]
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !RESERVED.contains(&name.as_str()) {
            self.extensions.insert(name, value.into());
        }
        self
    }

    /// Sets the `Retry-After` header (whole seconds, rounded up, at least one).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Sets `instance`. The server sets it to the request path when a handler leaves it empty.
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The kind: the last segment of the `type` URI.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The full `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.kind)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The instance, if set.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The extension members.
    pub fn extensions(&self) -> &Map<String, Value> {
        &self.extensions
    }

    /// The `Retry-After` delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The JSON document.
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("type".into(), Value::String(self.type_uri()));
        doc.insert("title".into(), Value::String(self.title.to_string()));
        doc.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(detail) = &self.detail {
            doc.insert("detail".into(), Value::String(detail.clone()));
        }
        if let Some(instance) = &self.instance {
            doc.insert("instance".into(), Value::String(instance.clone()));
        }
        for (name, value) in &self.extensions {
            doc.insert(name.clone(), value.clone());
        }
        Value::Object(doc)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.title),
            None => f.write_str(&self.title),
        }
    }
}

impl std::error::Error for Problem {}

/// Whole seconds for a `Retry-After` header: rounded up, at least one.
fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // Serializing a `Value` built from strings and numbers cannot fail; fall back to an
        // empty object rather than panic should that ever change.
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
        }
        // The server's outer layer reads this back to fill in `instance`.
        response.extensions_mut().insert(self);
        response
    }
}

/// Kinds of problem the framework itself reports; the node defines its own with
/// [`Problem::new`] and returns them through [`ApiError::Problem`].
pub mod kinds {
    /// 400: a value in the request is wrong (the `field` member names it when known).
    pub const INVALID_REQUEST: &str = "invalid-request";
    /// 400: the body is not well-formed JSON.
    pub const MALFORMED_JSON: &str = "malformed-json";
    /// 401: the client presented no certificate.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// 403: the certificate is valid but does not name a client of this cluster.
    pub const FORBIDDEN_IDENTITY: &str = "forbidden-identity";
    /// 403: the client lacks the role the call needs.
    pub const MISSING_ROLE: &str = "missing-role";
    /// 403: the client may not do this for another reason the node explains.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404: no such resource or route.
    pub const NOT_FOUND: &str = "not-found";
    /// 405: the route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
    /// 409: the request conflicts with the resource's state.
    pub const CONFLICT: &str = "conflict";
    /// 413: the body is larger than the configured limit.
    pub const BODY_TOO_LARGE: &str = "body-too-large";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported-media-type";
    /// 429: the client exceeded its request rate.
    pub const RATE_LIMITED: &str = "rate-limited";
    /// 429: the client has too many requests in progress.
    pub const TOO_MANY_IN_FLIGHT: &str = "too-many-in-flight";
    /// 503: the node is at its limit of requests in progress.
    pub const OVERLOADED: &str = "overloaded";
    /// 503: the request took longer than the configured timeout.
    pub const TIMEOUT: &str = "timeout";
    /// 503: a component the call needs is not available now.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 500: a fault inside the node.
    pub const INTERNAL: &str = "internal";
    /// Any other HTTP error status without a more specific kind.
    pub const HTTP_ERROR: &str = "http-error";
}

/// The error every API handler returns; each variant becomes one problem details document.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The caller sent a value that is wrong (400 `invalid-request`).
    #[error("invalid request: {detail}")]
    InvalidRequest {
        /// What is wrong and how to fix it.
        detail: String,
        /// The JSON path or parameter name of the offending value, when known.
        field: Option<String>,
    },
    /// The caller sent a body that is not well-formed JSON (400 `malformed-json`).
    #[error("malformed JSON at line {line}, column {column}: {detail}")]
    MalformedJson {
        /// The parser's explanation.
        detail: String,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
    },
    /// The caller presented no client certificate (401 `unauthenticated`).
    #[error("unauthenticated: {detail}")]
    Unauthenticated {
        /// Why, and how to authenticate.
        detail: String,
    },
    /// The caller's certificate is valid but names no client of this cluster (403
    /// `forbidden-identity`).
    #[error("forbidden identity: {detail}")]
    ForbiddenIdentity {
        /// What the certificate names and what was expected.
        detail: String,
    },
    /// The caller lacks every role the call accepts (403 `missing-role`).
    #[error(
        "client '{client}' needs the role {} for this call",
        Role::list(needed)
    )]
    MissingRole {
        /// The client's name.
        client: String,
        /// The roles any one of which would allow the call.
        needed: Vec<Role>,
    },
    /// The caller may not do this for a reason the node explains (403 `forbidden`).
    #[error("forbidden: {detail}")]
    Forbidden {
        /// Why.
        detail: String,
    },
    /// The resource or route does not exist (404 `not-found`).
    #[error("not found: {detail}")]
    NotFound {
        /// What was not found.
        detail: String,
    },
    /// The route exists but not with this method (405 `method-not-allowed`).
    #[error("method {method} is not allowed here")]
    MethodNotAllowed {
        /// The method the caller used.
        method: String,
    },
    /// The request conflicts with the current state of the resource (409 `conflict`).
    #[error("conflict: {detail}")]
    Conflict {
        /// What conflicts.
        detail: String,
    },
    /// The body exceeds the configured limit (413 `body-too-large`).
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body has the wrong media type (415 `unsupported-media-type`).
    #[error("unsupported media type: {detail}")]
    UnsupportedMediaType {
        /// What was sent and what is expected.
        detail: String,
    },
    /// The client exceeded its request rate (429 `rate-limited`).
    #[error("client '{client}' exceeded its request rate; retry in {retry_after:?}")]
    RateLimited {
        /// The client (or `anonymous@<address>`).
        client: String,
        /// When the next request will be admitted.
        retry_after: Duration,
    },
    /// The client has too many requests in progress (429 `too-many-in-flight`).
    #[error("client '{client}' already has {limit} requests in progress")]
    TooManyInFlight {
        /// The client (or `anonymous@<address>`).
        client: String,
        /// The per-client limit.
        limit: usize,
    },
    /// The node is at its limit of requests in progress (503 `overloaded`).
    #[error("the node is at its limit of {limit} requests in progress")]
    Overloaded {
        /// The node-wide limit.
        limit: usize,
    },
    /// The request took longer than the configured timeout (503 `timeout`).
    #[error("the request did not complete within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// A component the call needs is not available now (503 `unavailable`).
    #[error("unavailable: {detail}")]
    Unavailable {
        /// Which component, and what to check.
        detail: String,
    },
    /// A fault inside the node (500 `internal`). The detail is logged, never sent: it may
    /// describe internals a client has no business seeing.
    #[error("internal error: {detail}")]
    Internal {
        /// What failed (logged only).
        detail: String,
    },
    /// A problem of a kind the node defines.
    #[error("{0}")]
    Problem(Box<Problem>),
}

impl ApiError {
    /// A 400 naming the offending field.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::InvalidRequest {
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    /// A 500 whose cause is logged but not sent.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::Internal {
            detail: detail.to_string(),
        }
    }

    /// The problem details document for this error.
    pub fn to_problem(&self) -> Problem {
        use kinds::*;
        match self {
            Self::InvalidRequest { detail, field } => {
                let p = Problem::new(INVALID_REQUEST, StatusCode::BAD_REQUEST, "Invalid request")
                    .with_detail(detail.clone());
                match field {
                    Some(field) => p.with_extension("field", field.clone()),
                    None => p,
                }
            }
            Self::MalformedJson {
                detail,
                line,
                column,
            } => Problem::new(MALFORMED_JSON, StatusCode::BAD_REQUEST, "Malformed JSON")
                .with_detail(format!(
                    "the request body is not valid JSON: {detail} (line {line}, column {column})"
                ))
                .with_extension("line", *line)
                .with_extension("column", *column),
            Self::Unauthenticated { detail } => Problem::new(
                UNAUTHENTICATED,
                StatusCode::UNAUTHORIZED,
                "Client certificate required",
            )
            .with_detail(detail.clone()),
            Self::ForbiddenIdentity { detail } => Problem::new(
                FORBIDDEN_IDENTITY,
                StatusCode::FORBIDDEN,
                "Certificate does not identify a client of this cluster",
            )
            .with_detail(detail.clone()),
            Self::MissingRole { client, needed } => {
                let roles: Vec<Value> = needed
                    .iter()
                    .map(|r| Value::String(r.as_str().into()))
                    .collect();
                Problem::new(MISSING_ROLE, StatusCode::FORBIDDEN, "Role required")
                    .with_detail(format!(
                        "this call needs the role {}; client '{client}' does not have it \
                         (grant it in the node configuration's client roles)",
                        Role::list(needed)
                    ))
                    .with_extension("roles_needed", roles)
                    .with_extension("client", client.clone())
            }
            Self::Forbidden { detail } => {
                Problem::new(FORBIDDEN, StatusCode::FORBIDDEN, "Forbidden")
                    .with_detail(detail.clone())
            }
            Self::NotFound { detail } => {
                Problem::new(NOT_FOUND, StatusCode::NOT_FOUND, "Not found")
                    .with_detail(detail.clone())
            }
            Self::MethodNotAllowed { method } => Problem::new(
                METHOD_NOT_ALLOWED,
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            )
            .with_detail(format!(
                "this path does not accept {method}; /v1/openapi.json lists the methods it does"
            )),
            Self::Conflict { detail } => {
                Problem::new(CONFLICT, StatusCode::CONFLICT, "Conflict").with_detail(detail.clone())
            }
            Self::BodyTooLarge { limit } => Problem::new(
                BODY_TOO_LARGE,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            )
            .with_detail(format!(
                "the request body exceeds the limit of {limit} bytes"
            ))
            .with_extension("limit", *limit),
            Self::UnsupportedMediaType { detail } => Problem::new(
                UNSUPPORTED_MEDIA_TYPE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            )
            .with_detail(detail.clone()),
            Self::RateLimited {
                client,
                retry_after,
            } => Problem::new(
                RATE_LIMITED,
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
            )
            .with_detail(format!(
                "client '{client}' sent requests faster than its rate limit; retry after \
                         {} s",
                retry_after_secs(*retry_after)
            ))
            .with_retry_after(*retry_after),
            Self::TooManyInFlight { client, limit } => Problem::new(
                TOO_MANY_IN_FLIGHT,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests in progress",
            )
            .with_detail(format!(
                "client '{client}' already has {limit} requests in progress; wait for one to \
                 finish"
            ))
            .with_extension("limit", *limit)
            .with_retry_after(Duration::from_secs(1)),
            Self::Overloaded { limit } => Problem::new(
                OVERLOADED,
                StatusCode::SERVICE_UNAVAILABLE,
                "Node overloaded",
            )
            .with_detail(format!(
                "the node is serving its limit of {limit} requests; retry shortly"
            ))
            .with_retry_after(Duration::from_secs(1)),
            Self::Timeout { after } => Problem::new(
                TIMEOUT,
                StatusCode::SERVICE_UNAVAILABLE,
                "Request timed out",
            )
            .with_detail(format!(
                "the request did not complete within {} ms; it may still take effect, \
                         so read the resource before retrying",
                after.as_millis()
            )),
            Self::Unavailable { detail } => Problem::new(
                UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
            )
            .with_detail(detail.clone()),
            Self::Internal { .. } => Problem::new(
                INTERNAL,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            )
            .with_detail("the node failed to handle the request; its log has the cause"),
            Self::Problem(problem) => (**problem).clone(),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Problem(Box::new(problem))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal { detail } = &self {
            tracing::error!(%detail, "API request failed with an internal error");
        }
        self.to_problem().into_response()
    }
}

/// A problem for an error response that something other than [`ApiError`] produced (axum's
/// own extractor rejections, routing): the kind follows from the status.
pub(crate) fn problem_for_status(status: StatusCode, detail: Option<String>) -> Problem {
    use kinds::*;
    let (kind, title) = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            (INVALID_REQUEST, "Invalid request")
        }
        StatusCode::UNAUTHORIZED => (UNAUTHENTICATED, "Client certificate required"),
        StatusCode::FORBIDDEN => (FORBIDDEN, "Forbidden"),
        StatusCode::NOT_FOUND => (NOT_FOUND, "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => (METHOD_NOT_ALLOWED, "Method not allowed"),
        StatusCode::CONFLICT => (CONFLICT, "Conflict"),
        StatusCode::PAYLOAD_TOO_LARGE => (BODY_TOO_LARGE, "Request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
        StatusCode::TOO_MANY_REQUESTS => (RATE_LIMITED, "Rate limit exceeded"),
        StatusCode::SERVICE_UNAVAILABLE => (UNAVAILABLE, "Service unavailable"),
        s if s.is_server_error() => (INTERNAL, "Internal error"),
        _ => (HTTP_ERROR, "Request failed"),
    };
    // A 400 must keep its status even though it shares a kind with 422.
    let problem = Problem::new(kind, status, title);
    match detail {
        Some(detail) if !status.is_server_error() => problem.with_detail(detail),
        _ => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_the_rfc_members_and_extensions() {
        let p = ApiError::invalid_field("psbt", "not base64")
            .to_problem()
            .with_instance("/v1/x");
        let doc = p.to_json();
        assert_eq!(
            doc["type"],
            "https://strongroom.dev/problems/invalid-request"
        );
        assert_eq!(doc["title"], "Invalid request");
        assert_eq!(doc["status"], 400);
        assert_eq!(doc["detail"], "not base64");
        assert_eq!(doc["instance"], "/v1/x");
        assert_eq!(doc["field"], "psbt");
    }

    #[test]
    fn reserved_members_cannot_be_overridden() {
        let p = Problem::new("x", StatusCode::CONFLICT, "X").with_extension("status", 200);
        assert_eq!(p.to_json()["status"], 409);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn missing_role_names_the_role() {
        let e = ApiError::MissingRole {
            client: "ops".into(),
            needed: vec![Role::Submitter],
        };
        let doc = e.to_problem().to_json();
        assert_eq!(doc["status"], 403);
        assert_eq!(doc["roles_needed"][0], "submitter");
        assert!(
            doc["detail"]
                .as_str()
                .is_some_and(|d| d.contains("submitter"))
        );
    }
}
