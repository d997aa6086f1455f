//! Errors of the HTTP API. The JSON shape every route returns (a status and
//! `{"error": "..."}` naming the field or object at fault) and the path and query
//! extractors are shared with `smtpd --http` (`http_serve`); what is this API's
//! own: a database error as a 503, and JSON bodies, whose size limit is
//! `web.max_body_bytes`.
//!
//! Must not: decide what a route's errors are (the routes do).

use axum::Json;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

pub use http_serve::{ApiError, ApiPath, ApiQuery, ApiResult};

use crate::db::DbError;

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::unavailable(&e)
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s. serde's message names the field
/// (`name: missing field` / `opt_in: unknown variant ...`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(http_serve::json_rejection(e, "web.max_body_bytes")),
        }
    }
}
