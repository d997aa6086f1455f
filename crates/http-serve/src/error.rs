//! The one JSON error shape of both APIs: a status and `{"error": "..."}`, the
//! message naming the field or object at fault (`limit: at most 100`,
//! `list 7 not found`). Clients of `smtpd --http` and `outbound web` read this
//! shape: it is a contract.
//!
//! Must not: decide what a route's errors are (the routes do), or tell a client
//! why the store failed (that goes to the log).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::warn;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    /// 400: `field` is what was wrong, `why` says how.
    pub fn field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{field}: {why}"))
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404, also for an object the client may not see: its existence is not told.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body: larger than the limit of {limit} bytes"),
        )
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }
    /// 503: the store (or the disk behind it) failed; the client may retry. The
    /// cause goes to the log, not to the client.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        warn!(error = %cause, "HTTP request failed on the store");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::to_bytes;

    /// Status, content type and parsed body of a response.
    pub(crate) async fn parts(r: Response) -> (StatusCode, String, serde_json::Value) {
        let status = r.status();
        let ctype = r
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, ctype, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn the_body_is_one_error_string_as_json() {
        let (status, ctype, body) =
            parts(ApiError::field("limit", "at most 100").into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ctype, "application/json");
        assert_eq!(body, serde_json::json!({"error": "limit: at most 100"}));
    }

    #[test]
    fn constructors_set_the_status_and_name_the_object() {
        assert_eq!(ApiError::not_found("list 7").message, "list 7 not found");
        assert_eq!(ApiError::not_found("x").status, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::conflict("c").status, StatusCode::CONFLICT);
        assert_eq!(ApiError::unauthorized("u").status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            ApiError::too_many("t").status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::unsupported("s").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let big = ApiError::too_large(4096);
        assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(big.message.starts_with("body:") && big.message.contains("4096"));
    }

    #[test]
    fn a_store_failure_tells_the_client_nothing_of_its_cause() {
        let e = ApiError::unavailable(&"password authentication failed for user x");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("password"), "{}", e.message);
    }
}
