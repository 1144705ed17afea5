//! Routes and their OpenAPI description, registered together.
//!
//! A route can only be added with its [`Operation`], which says who may call it ([`Access`])
//! and documents it; the server enforces the access and serves the OpenAPI 3.1 document built
//! from the same entries, so every served route is in `GET /v1/openapi.json` by construction.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use serde_json::{Map, Value, json};

use crate::identity::Role;
use crate::problem::PROBLEM_CONTENT_TYPE;

/// Who may call an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a certificate. Only for probes that reveal nothing (health).
    Public,
    /// Any authenticated client of this cluster, whatever its roles.
    AnyClient,
    /// An authenticated client holding at least one of these roles.
    AnyOf(Vec<Role>),
}

impl Access {
    /// Clients holding `role`.
    pub fn role(role: Role) -> Self {
        Self::AnyOf(vec![role])
    }

    fn roles_json(&self) -> Value {
        match self {
            Self::Public => json!("public"),
            Self::AnyClient => json!("any-client"),
            Self::AnyOf(roles) => json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
        }
    }
}

/// One operation: its access rule and its OpenAPI Operation Object.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub(crate) access: Access,
    doc: Map<String, Value>,
    tags: Vec<Value>,
    parameters: Vec<Value>,
    responses: Map<String, Value>,
}

impl Operation {
    /// An operation with a unique `operation_id`, a one-line summary and its access rule.
    pub fn new(operation_id: &str, summary: &str, access: Access) -> Self {
        let mut doc = Map::new();
        doc.insert("operationId".into(), json!(operation_id));
        doc.insert("summary".into(), json!(summary));
        Self {
            access,
            doc,
            tags: Vec::new(),
            parameters: Vec::new(),
            responses: Map::new(),
        }
    }

    /// A longer description (CommonMark).
    #[must_use]
    pub fn description(self, text: &str) -> Self {
        self.member("description", json!(text))
    }

    /// Adds a tag that groups operations in documentation.
    #[must_use]
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(json!(tag));
        self
    }

    /// Documents a query parameter with its JSON Schema.
    #[must_use]
    pub fn query(mut self, name: &str, description: &str, required: bool, schema: Value) -> Self {
        self.parameters.push(
            json!({"name": name, "in": "query", "description": description,
                   "required": required, "schema": schema}),
        );
        self
    }

    /// Documents a path parameter (`{name}` in the path). Undocumented path parameters are
    /// listed as strings.
    #[must_use]
    pub fn path_param(mut self, name: &str, description: &str, schema: Value) -> Self {
        self.parameters.push(
            json!({"name": name, "in": "path", "description": description,
                   "required": true, "schema": schema}),
        );
        self
    }

    /// A required JSON request body with its JSON Schema.
    #[must_use]
    pub fn request_json(self, schema: Value) -> Self {
        self.member(
            "requestBody",
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        )
    }

    /// A JSON response.
    #[must_use]
    pub fn response_json(self, status: u16, description: &str, schema: Value) -> Self {
        self.response_with(status, description, "application/json", schema)
    }

    /// A response with a body of `media_type`.
    #[must_use]
    pub fn response_with(
        mut self,
        status: u16,
        description: &str,
        media_type: &str,
        schema: Value,
    ) -> Self {
        self.responses.insert(
            status.to_string(),
            json!({"description": description, "content": {media_type: {"schema": schema}}}),
        );
        self
    }

    /// A response without a body.
    #[must_use]
    pub fn response(mut self, status: u16, description: &str) -> Self {
        self.responses
            .insert(status.to_string(), json!({"description": description}));
        self
    }

    /// An error response this operation can return (a problem details document), e.g. a
    /// 409 or a node-specific 400.
    #[must_use]
    pub fn problem(mut self, status: u16, description: &str) -> Self {
        self.responses
            .insert(status.to_string(), problem_response(description));
        self
    }

    /// Sets any other member of the Operation Object (`tags`, `parameters`, `responses` and
    /// `security` come from their own methods and the access rule, and are not overridden).
    #[must_use]
    pub fn member(mut self, name: &str, value: Value) -> Self {
        self.doc.insert(name.into(), value);
        self
    }

    /// The Operation Object as served: the given members, then path parameters, security,
    /// the access rule (`x-strongroom-access`) and the problem responses the server itself
    /// may return.
    fn finished(&self, path: &str) -> Value {
        let mut doc = self.doc.clone();
        let mut parameters = self.parameters.clone();
        for name in captures(path) {
            if !parameters
                .iter()
                .any(|p| p["in"] == "path" && p["name"] == name)
            {
                parameters.push(json!({"name": name, "in": "path", "required": true,
                                       "schema": {"type": "string"}}));
            }
        }
        if !parameters.is_empty() {
            doc.insert("parameters".into(), Value::Array(parameters));
        }
        if !self.tags.is_empty() {
            doc.insert("tags".into(), Value::Array(self.tags.clone()));
        }
        let security = match self.access {
            Access::Public => json!([{}, {"mutualTLS": []}]),
            _ => json!([{"mutualTLS": []}]),
        };
        doc.insert("security".into(), security);
        doc.insert("x-strongroom-access".into(), self.access.roles_json());
        let has_body = doc.contains_key("requestBody");
        let mut responses = self.responses.clone();
        let mut standard = vec![
            (
                429,
                "Rate limit or per-client concurrency exceeded (see Retry-After)",
            ),
            (
                503,
                "Node overloaded, request timed out, or a component unavailable",
            ),
        ];
        if self.access != Access::Public {
            standard.push((401, "No client certificate"));
            standard.push((403, "Not a client of this cluster, or a role is missing"));
        }
        if has_body {
            standard.push((400, "Malformed JSON or an invalid value (`field` names it)"));
            standard.push((413, "Request body over the size limit"));
            standard.push((415, "Request body is not application/json"));
        }
        for (status, description) in standard {
            responses
                .entry(status.to_string())
                .or_insert_with(|| problem_response(description));
        }
        doc.insert("responses".into(), Value::Object(responses));
        Value::Object(doc)
    }
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// The `{name}` segments of a path.
fn captures(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// Checks a route path: `/` followed by `/`-separated segments, each a literal of
/// `a-z 0-9 . _ -` or a capture `{name}` (`a-z 0-9 _`, not starting with a digit).
fn validate_path(path: &str) -> Result<(), &'static str> {
    if path == "/" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must start with '/'");
    };
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err("has an empty segment or a trailing '/'");
        }
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let ok = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && name.bytes().next().is_some_and(|b| !b.is_ascii_digit());
            if !ok {
                return Err("a capture must be {name} with a-z, 0-9 and '_'");
            }
        } else if !segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err("a literal segment may contain only a-z, 0-9, '.', '_' and '-'");
        }
    }
    Ok(())
}

/// The path with every capture name erased: two distinct paths with the same shape would
/// be ambiguous to the router.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// A route that could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path breaks the path rules.
    #[error("route path '{path}' {reason}")]
    BadPath {
        /// The path.
        path: String,
        /// Which rule.
        reason: &'static str,
    },
    /// The method is already registered for the path.
    #[error("{method} {path} is registered twice")]
    Duplicate {
        /// The method.
        method: Method,
        /// The path.
        path: String,
    },
    /// Two paths differ only in the names of their captures.
    #[error("route paths '{path}' and '{other}' differ only in capture names")]
    Ambiguous {
        /// The new path.
        path: String,
        /// The path already registered.
        other: String,
    },
    /// An operation requires a role from an empty list, which nobody could satisfy.
    #[error("{method} {path} requires a role from an empty list")]
    NoRoles {
        /// The method.
        method: Method,
        /// The path.
        path: String,
    },
}

/// Routes with state `S`, each with its operation; hand them to the server builder once their
/// state is supplied ([`Routes::with_state`]).
#[derive(Debug)]
pub struct Routes<S = ()> {
    router: Router<S>,
    entries: BTreeMap<String, BTreeMap<Method, Operation>>,
    errors: Vec<RouteError>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            entries: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// `GET path` (also answers `HEAD`).
    #[must_use]
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Operation) -> Self {
        self.add(Method::GET, MethodFilter::GET, path, handler, op)
    }

    /// `POST path`.
    #[must_use]
    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Operation) -> Self {
        self.add(Method::POST, MethodFilter::POST, path, handler, op)
    }

    /// `PUT path`.
    #[must_use]
    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Operation) -> Self {
        self.add(Method::PUT, MethodFilter::PUT, path, handler, op)
    }

    /// `PATCH path`.
    #[must_use]
    pub fn patch<H: Handler<T, S>, T: 'static>(
        self,
        path: &str,
        handler: H,
        op: Operation,
    ) -> Self {
        self.add(Method::PATCH, MethodFilter::PATCH, path, handler, op)
    }

    /// `DELETE path`.
    #[must_use]
    pub fn delete<H: Handler<T, S>, T: 'static>(
        self,
        path: &str,
        handler: H,
        op: Operation,
    ) -> Self {
        self.add(Method::DELETE, MethodFilter::DELETE, path, handler, op)
    }

    fn add<H: Handler<T, S>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &str,
        handler: H,
        op: Operation,
    ) -> Self {
        match self.check(&method, path, &op) {
            Ok(()) => {
                self.router = self.router.route(path, on(filter, handler));
                self.entries
                    .entry(path.to_owned())
                    .or_default()
                    .insert(method, op);
            }
            Err(e) => self.errors.push(e),
        }
        self
    }

    fn check(&self, method: &Method, path: &str, op: &Operation) -> Result<(), RouteError> {
        validate_path(path).map_err(|reason| RouteError::BadPath {
            path: path.to_owned(),
            reason,
        })?;
        if matches!(&op.access, Access::AnyOf(roles) if roles.is_empty()) {
            return Err(RouteError::NoRoles {
                method: method.clone(),
                path: path.to_owned(),
            });
        }
        if self
            .entries
            .get(path)
            .is_some_and(|m| m.contains_key(method))
        {
            return Err(RouteError::Duplicate {
                method: method.clone(),
                path: path.to_owned(),
            });
        }
        let new_shape = shape(path);
        if let Some(other) = self
            .entries
            .keys()
            .find(|p| *p != path && shape(p) == new_shape)
        {
            return Err(RouteError::Ambiguous {
                path: path.to_owned(),
                other: other.clone(),
            });
        }
        Ok(())
    }

    /// Adds every route of `other`. If any of them clashes with a route here, none is added
    /// and the server builder reports the clash.
    #[must_use]
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.errors.extend(other.errors);
        let mut clashes = Vec::new();
        for (path, methods) in &other.entries {
            for (method, op) in methods {
                if let Err(e) = self.check(method, path, op) {
                    clashes.push(e);
                }
            }
        }
        if clashes.is_empty() {
            self.router = self.router.merge(other.router);
            for (path, methods) in other.entries {
                self.entries.entry(path).or_default().extend(methods);
            }
        } else {
            self.errors.extend(clashes);
        }
        self
    }

    /// Supplies the state the handlers extract with `State<S>`.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            entries: self.entries,
            errors: self.errors,
        }
    }

    /// The registered paths and methods.
    pub fn paths(&self) -> impl Iterator<Item = (&str, &Method)> {
        self.entries
            .iter()
            .flat_map(|(p, ms)| ms.keys().map(move |m| (p.as_str(), m)))
    }
}

impl Routes<()> {
    /// Splits into the router, the access rule of each (path, method), the OpenAPI path
    /// items, and the registration errors.
    pub(crate) fn into_parts(self) -> RouteParts {
        let mut access = HashMap::new();
        let mut paths = Map::new();
        for (path, methods) in &self.entries {
            let mut item = Map::new();
            for (method, op) in methods {
                access.insert((path.clone(), method.clone()), op.access.clone());
                item.insert(method.as_str().to_ascii_lowercase(), op.finished(path));
            }
            paths.insert(path.clone(), Value::Object(item));
        }
        RouteParts {
            router: self.router,
            access,
            paths,
            errors: self.errors,
        }
    }
}

/// What the server takes from [`Routes`].
pub(crate) struct RouteParts {
    pub(crate) router: Router,
    pub(crate) access: HashMap<(String, Method), Access>,
    pub(crate) paths: Map<String, Value>,
    pub(crate) errors: Vec<RouteError>,
}

/// The OpenAPI 3.1 document for `paths`.
pub(crate) fn document(paths: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "strongroom node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTPS API of a strongroom node. Every call except the health \
                probe needs a client certificate from the cluster CA \
                (spiffe://<cluster-id>/client/<name>); roles come from the node \
                configuration. Errors are RFC 9457 problem details whose `type` is stable.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "Client certificate issued by the cluster CA"
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {"type": "string", "format": "uri",
                                 "description": "https://strongroom.dev/problems/<kind>"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "field": {"type": "string",
                                  "description": "JSON path of the offending value"}
                    },
                    "additionalProperties": true
                }
            }
        },
        "security": [{"mutualTLS": []}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok() -> &'static str {
        "ok"
    }

    fn op(id: &str) -> Operation {
        Operation::new(id, id, Access::AnyClient)
    }

    #[test]
    fn paths_are_checked() {
        for bad in [
            "",
            "v1/x",
            "/v1/",
            "/v1//x",
            "/v1/{Id}",
            "/v1/{*rest}",
            "/v1/:id",
            "/V1",
        ] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        for good in ["/", "/metrics", "/v1/keys/{key_id}", "/v1/openapi.json"] {
            assert!(validate_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn clashes_are_reported_not_panicked() {
        let routes = Routes::<()>::new()
            .get("/v1/keys/{key_id}", ok, op("a"))
            .post("/v1/keys/{key_id}", ok, op("b"))
            .get("/v1/keys/{key_id}", ok, op("c"))
            .get("/v1/keys/{id}", ok, op("d"))
            .get("/v1/x", ok, Operation::new("e", "e", Access::AnyOf(vec![])));
        let parts = routes.into_parts();
        assert_eq!(parts.errors.len(), 3, "{:?}", parts.errors);
        assert_eq!(parts.access.len(), 2);
    }

    #[test]
    fn merge_is_all_or_nothing() {
        let a = Routes::<()>::new().get("/a", ok, op("a"));
        let b = Routes::<()>::new()
            .get("/b", ok, op("b"))
            .get("/a", ok, op("a2"));
        let parts = a.merge(b).into_parts();
        assert_eq!(parts.errors.len(), 1);
        assert!(parts.paths.get("/b").is_none());
    }

    #[test]
    fn operation_gets_params_security_and_problems() {
        let doc = Operation::new("get_key", "Get a key", Access::role(Role::Auditor))
            .response_json(200, "The key", json!({"type": "object"}))
            .finished("/v1/keys/{key_id}");
        assert_eq!(doc["parameters"][0]["name"], "key_id");
        assert_eq!(doc["parameters"][0]["in"], "path");
        assert_eq!(doc["x-strongroom-access"], json!(["auditor"]));
        assert_eq!(doc["security"], json!([{"mutualTLS": []}]));
        for status in ["200", "401", "403", "429", "503"] {
            assert!(doc["responses"][status].is_object(), "{status}");
        }
        assert!(doc["responses"]["413"].is_null());
    }
}
