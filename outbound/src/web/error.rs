//! Errors of the HTTP API: a status and `{"error": "..."}` naming the field or
//! object at fault, and the extractors whose own rejections would otherwise be
//! plain text.
//!
//! Owns: the one JSON error shape every route returns, and mapping extractor
//! rejections onto it (a malformed body → 400, not JSON → 415, over the size
//! limit → 413, a path segment of the wrong type → 400).
//! Must not: decide what a route's errors are (the routes do).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::db::DbError;

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
    /// 404, also for another account's object: its existence is not told.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
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
    /// 503: the store failed; the client may retry. The cause goes to the log,
    /// not to the client.
    pub fn unavailable(e: &dyn std::fmt::Display) -> Self {
        warn!(error = %e, "API request failed on the store");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; try again",
        )
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::unavailable(&e)
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

/// `Json<T>` whose rejections are [`ApiError`]s. serde's message names the field
/// (`name: missing field` / `opt_in: unknown variant ...`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    let status = e.status();
    let message = match &e {
        JsonRejection::MissingJsonContentType(_) => {
            "Content-Type: expected application/json".to_owned()
        }
        JsonRejection::JsonDataError(d) => format!("body: {}", source_text(d)),
        JsonRejection::JsonSyntaxError(d) => format!("body: not valid JSON ({})", source_text(d)),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            "body: larger than the configured limit (web.max_body_bytes)".to_owned()
        }
        other => format!("body: {}", other.body_text()),
    };
    ApiError::new(status, message)
}

/// The innermost message of a rejection (serde's, with the field path), without
/// axum's "Failed to deserialize ..." prefix.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// `Path<T>` whose rejections are [`ApiError`]s (`id: not a number`).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(path_rejection(e)),
        }
    }
}

fn path_rejection(e: PathRejection) -> ApiError {
    match &e {
        PathRejection::FailedToDeserializePathParams(d) => {
            ApiError::bad_request(format!("path: {}", d.body_text()))
        }
        other => ApiError::new(other.status(), format!("path: {}", other.body_text())),
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("query: {}", source_text(&e)))
}
