//! A node's answer to a JSON call.

use serde_json::Value;

use crate::error::ClientError;

/// Prefix of every problem `type` URI the API sends.
pub const PROBLEM_TYPE_BASE: &str = "https://strongroom.dev/problems/";

/// Kind reported by [`ApiResponse::into_result`] for an error status without a problem
/// document (the API's own name for that case).
pub const HTTP_ERROR_KIND: &str = "http-error";

/// Longest body quoted as the detail of an error without a problem document.
const MAX_QUOTED_BODY: usize = 512;

/// One HTTP answer from one node, whatever its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body; `Null` when the body is empty.
    pub body: Value,
    /// The node that answered, from its verified certificate's SPIFFE id.
    pub node: String,
    /// The URL of the node that answered, as configured (see [`ApiClient::urls`](crate::ApiClient::urls)).
    pub url: String,
}

impl ApiResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// For a 4xx or 5xx answer carrying an RFC 9457 problem document: its kind (the `type`
    /// after `https://strongroom.dev/problems/`, or the whole `type` if it is another URI) and
    /// its `detail` (or its `title` when it has no detail, or an empty string).
    pub fn problem(&self) -> Option<(String, String)> {
        if self.status < 400 {
            return None;
        }
        let doc = self.body.as_object()?;
        let kind = doc.get("type")?.as_str()?;
        let kind = kind.strip_prefix(PROBLEM_TYPE_BASE).unwrap_or(kind);
        let detail = doc
            .get("detail")
            .and_then(Value::as_str)
            .or_else(|| doc.get("title").and_then(Value::as_str))
            .unwrap_or_default();
        Some((kind.to_owned(), detail.to_owned()))
    }

    /// The body on 2xx; otherwise [`ClientError::Api`] with the problem's kind and detail
    /// (kind [`HTTP_ERROR_KIND`] and the body, shortened, when there is no problem document).
    pub fn into_result(self) -> Result<Value, ClientError> {
        if self.is_success() {
            return Ok(self.body);
        }
        let (kind, detail) = self.problem().unwrap_or_else(|| {
            let detail = match &self.body {
                Value::Null => format!("HTTP status {} with an empty body", self.status),
                Value::String(s) => quote(s),
                other => quote(&other.to_string()),
            };
            (HTTP_ERROR_KIND.to_owned(), detail)
        });
        Err(ClientError::Api {
            status: self.status,
            kind,
            detail,
            node: self.node,
        })
    }
}

fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn response(status: u16, body: Value) -> ApiResponse {
        ApiResponse {
            status,
            body,
            node: "n1".into(),
            url: "https://127.0.0.1:1".into(),
        }
    }

    #[test]
    fn success_passes_the_body() {
        let r = response(200, json!({"a": 1}));
        assert!(r.is_success());
        assert_eq!(r.problem(), None);
        assert_eq!(r.into_result().unwrap(), json!({"a": 1}));
        assert_eq!(
            response(204, Value::Null).into_result().unwrap(),
            Value::Null
        );
    }

    #[test]
    fn problem_documents_map_to_kind_and_detail() {
        let r = response(
            409,
            json!({
                "type": "https://strongroom.dev/problems/item-sealed",
                "title": "Item sealed",
                "status": 409,
                "detail": "item 7 is sealed",
            }),
        );
        assert_eq!(
            r.problem(),
            Some(("item-sealed".into(), "item 7 is sealed".into()))
        );
        match r.into_result().unwrap_err() {
            ClientError::Api {
                status,
                kind,
                detail,
                node,
            } => {
                assert_eq!(
                    (status, kind.as_str(), detail.as_str(), node.as_str()),
                    (409, "item-sealed", "item 7 is sealed", "n1")
                );
            }
            other => panic!("{other:?}"),
        }
        // Title when there is no detail; a foreign type is kept whole.
        let r = response(404, json!({"type": "about:blank", "title": "Not Found"}));
        assert_eq!(
            r.problem(),
            Some(("about:blank".into(), "Not Found".into()))
        );
        // A 2xx body that looks like a problem is no problem.
        assert_eq!(response(200, json!({"type": "x"})).problem(), None);
    }

    #[test]
    fn other_errors_quote_the_body() {
        let err = response(502, json!({"oops": true}))
            .into_result()
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Api { kind, detail, .. } if kind == HTTP_ERROR_KIND && detail.contains("oops")),
            "{err:?}"
        );
        let err = response(500, Value::Null).into_result().unwrap_err();
        assert!(err.to_string().contains("empty body"), "{err}");
        let long = "x".repeat(2000);
        let err = response(500, Value::String(long))
            .into_result()
            .unwrap_err();
        assert!(err.to_string().len() < 700, "{err}");
        // A redirect is no success either.
        assert!(response(301, Value::Null).into_result().is_err());
    }
}
