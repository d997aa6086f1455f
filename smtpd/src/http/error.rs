//! Errors of the mailbox API: a status and `{"error": "..."}` naming the field or
//! object at fault, and the extractors whose own rejections would otherwise be
//! plain text.
//!
//! The same shape as `outbound web` (`outbound/src/web/error.rs`); copied, not
//! shared: that crate is not a dependency of smtpd and the copy is two small
//! extractors.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::store::read::ReadError;

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
    /// 404, also for a message of another mailbox: its existence is not told.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
}

impl From<ReadError> for ApiError {
    /// 503: the store failed; the client may retry. The cause goes to the log.
    fn from(e: ReadError) -> Self {
        warn!(error = %e, "mailbox API request failed on the store");
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

/// `Path<T>` whose rejections are [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) => Err(match &e {
                PathRejection::FailedToDeserializePathParams(d) => {
                    ApiError::field("path", d.body_text())
                }
                other => ApiError::new(other.status(), format!("path: {}", other.body_text())),
            }),
        }
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s (`limit: invalid digit ...`).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(d)) => {
                Err(ApiError::field("query", d.body_text()))
            }
            Err(other) => Err(ApiError::new(other.status(), other.body_text())),
        }
    }
}
