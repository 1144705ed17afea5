//! A JSON body extractor whose rejections are problem details.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// The body limit in force for a request, set by the server so rejections can quote it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// A JSON request or response body.
///
/// As an extractor it requires `Content-Type: application/json` (415 otherwise), enforces the
/// server's body limit (413), and turns syntax errors into 400 `malformed-json` with the line
/// and column, and type errors into 400 `invalid-request` with the JSON path in `field`. As a
/// response it serializes with `Content-Type: application/json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str());
        match content_type {
            Some(Ok(ct)) if is_json(ct) => {}
            Some(Ok(ct)) => {
                return Err(ApiError::UnsupportedMediaType {
                    detail: format!("the body is '{ct}'; send it as 'application/json'"),
                });
            }
            _ => {
                return Err(ApiError::UnsupportedMediaType {
                    detail: "the body has no valid Content-Type; send 'Content-Type: \
                             application/json'"
                        .into(),
                });
            }
        }
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match (rejection.status(), limit) {
                (axum::http::StatusCode::PAYLOAD_TOO_LARGE, Some(limit)) => {
                    ApiError::BodyTooLarge { limit }
                }
                _ => ApiError::InvalidRequest {
                    detail: rejection.body_text(),
                    field: None,
                },
            }
        })?;
        parse(&bytes).map(Json)
    }
}

/// Deserializes a complete JSON document, naming the field a type error is in.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            // serde_path_to_error writes `.` for the document root.
            let field = (path != ".").then_some(path);
            ApiError::InvalidRequest {
                detail: inner.to_string(),
                field,
            }
        } else {
            syntax_error(&inner)
        }
    })?;
    de.end().map_err(|e| syntax_error(&e))?;
    Ok(value)
}

fn syntax_error(e: &serde_json::Error) -> ApiError {
    // serde_json appends " at line L column C"; the members carry those separately.
    let text = e.to_string();
    let detail = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    ApiError::MalformedJson {
        detail,
        line: e.line(),
        column: e.column(),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        threshold: u16,
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
    }

    #[test]
    fn syntax_error_has_position() {
        match parse::<Body>(b"{\"name\": \n  \"x\",, }") {
            Err(ApiError::MalformedJson {
                line,
                column,
                detail,
            }) => {
                assert_eq!(line, 2);
                assert!(column > 0);
                assert!(!detail.contains("at line"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse::<Body>(b"{\"name\":\"x\",\"threshold\":2} trailing"),
            Err(ApiError::MalformedJson { .. })
        ));
    }

    #[test]
    fn type_error_names_field() {
        match parse::<Body>(br#"{"name": "k", "threshold": "two"}"#) {
            Err(ApiError::InvalidRequest { field, .. }) => {
                assert_eq!(field.as_deref(), Some("threshold"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse::<Body>(br#"{"name": "k"}"#) {
            Err(ApiError::InvalidRequest { field, detail }) => {
                assert_eq!(field, None);
                assert!(detail.contains("threshold"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
