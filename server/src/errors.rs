//! OpenAI-style error responses (`{"error": {"message", "type", "param", "code"}}` with the
//! matching HTTP status) and the JSON body extractor whose rejections use them: a malformed
//! body or a field of the wrong type is a 400 with that JSON, never axum's plain-text 422.

use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error answered to the client as OpenAI's error JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's error `type`: `invalid_request_error`, `authentication_error`, `server_error`.
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`, `invalid_api_key`, `queue_full`…).
    pub code: Option<&'static str>,
}

/// The body of an error response.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// OpenAI's error object.
#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about `param` (if any).
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// A 400 with code `context_length_exceeded`: the prompt leaves no room to generate.
    pub fn context_length(prompt_tokens: usize, n_ctx: usize, param: &str) -> ApiError {
        ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(
                format!(
                    "This model's maximum context length is {n_ctx} tokens per sequence, but the \
                     prompt has {prompt_tokens} tokens, leaving no room to generate. Shorten \
                     the prompt (or restart the server with a larger --ctx)."
                ),
                Some(param),
            )
        }
    }

    /// A 401: the API key is missing or wrong.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect or missing API key: send `Authorization: Bearer <key>` with \
                      the key the server was started with (--api-key)."
                .into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// A 404 for a route that does not exist.
    pub fn not_found(method: &str, path: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: Some("not_found"),
            ..ApiError::invalid(format!("Invalid URL ({method} {path})"), None)
        }
    }

    /// A 405 for a route that exists with another method.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: Some("method_not_allowed"),
            ..ApiError::invalid(format!("Method {method} not allowed for {path}"), None)
        }
    }

    /// A 413: the body is over the server's limit.
    pub fn payload_too_large() -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Some("payload_too_large"),
            ..ApiError::invalid("The request body is larger than the server accepts.", None)
        }
    }

    /// A 503 `server_error` with code `queue_full`: every slot is busy and the wait queue is
    /// full.
    pub fn queue_full(n_slots: usize, queue: usize) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "The server is busy: all {n_slots} parallel sequences are running and the wait \
                 queue ({queue} requests) is full. Retry later."
            ),
            kind: "server_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    /// A 503 `server_error`: the engine thread is stopping or stopped.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("unavailable"),
        }
    }

    /// A 500 `server_error`.
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The error JSON as a string (also the data of an SSE error event).
    pub fn to_json(&self) -> String {
        let body = ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_string(&body).expect("error JSON serializes")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.to_json(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// A JSON request body parsed into `T`, whatever the Content-Type. Failures are [`ApiError`]s:
/// 413 over the body limit, 400 for malformed JSON or a field of the wrong type (naming the
/// field in `param`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::invalid(
                    format!("Could not read the request body: {}", r.body_text()),
                    None,
                )
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body into `T`; errors name the offending field (`param`) when there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "We could not parse the JSON body of your request"
        } else {
            "Invalid request body"
        };
        // "." is the whole body; "?" a place serde_path_to_error could not name (syntax).
        let param = (path != "." && path != "?").then_some(path);
        ApiError::invalid(format!("{what}: {inner}"), param.as_deref())
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Req {
        #[allow(dead_code)]
        temperature: Option<f64>,
    }

    #[test]
    fn error_json_has_openai_shape() {
        let e = ApiError::context_length(5000, 4096, "messages");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["param"], "messages");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("4096") && msg.contains("5000"), "{msg}");
        let v: serde_json::Value =
            serde_json::from_str(&ApiError::server("boom").to_json()).unwrap();
        assert!(v["error"]["param"].is_null() && v["error"]["code"].is_null());
    }

    #[test]
    fn wrong_types_and_bad_json_are_400_naming_the_field() {
        let e = parse_json::<Req>(br#"{"temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse_json::<Req>(b"{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("parse"), "{}", e.message);
        assert_eq!(e.param, None);
        let e = parse_json::<Req>(b"{} trailing").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<Req>(br#"{"temperature": null, "other": 1}"#).is_ok());
    }
}
