//! Extractors whose rejections are [`ApiError`]s, so that a path segment of the
//! wrong type, a bad query string or a malformed JSON body gets the API's JSON
//! error (naming the field) instead of axum's plain text.
//!
//! Owns: mapping axum's rejections onto [`ApiError`]: a path segment or query of
//! the wrong type → 400, a body that is not JSON → 415, malformed → 400, over
//! the size limit → 413.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// `Path<T>` whose rejections are [`ApiError`]s (`path: ... id ...`).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) => Err(path_rejection(e)),
        }
    }
}

fn path_rejection(e: PathRejection) -> ApiError {
    match &e {
        PathRejection::FailedToDeserializePathParams(d) => ApiError::field("path", d.body_text()),
        other => ApiError::new(other.status(), format!("path: {}", other.body_text())),
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s (`query: invalid digit ...`).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::field("query", source_text(&e))
}

/// A JSON body's rejection as an [`ApiError`]. serde's message names the field
/// (`body: name: missing field`); `limit_field` is the config key of the body
/// size limit, named in a 413 so an operator knows what to raise.
pub fn json_rejection(e: JsonRejection, limit_field: &str) -> ApiError {
    let status = e.status();
    let message = match &e {
        JsonRejection::MissingJsonContentType(_) => {
            "Content-Type: expected application/json".to_owned()
        }
        JsonRejection::JsonDataError(d) => format!("body: {}", source_text(d)),
        JsonRejection::JsonSyntaxError(d) => format!("body: not valid JSON ({})", source_text(d)),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            format!("body: larger than the configured limit ({limit_field})")
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::error::tests::parts;
    use axum::Router;
    use axum::body::Body;
    use axum::extract::{DefaultBodyLimit, Json};
    use axum::http::Request;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use serde::Deserialize;
    use tower::ServiceExt;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Page {
        limit: u32,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct NewList {
        name: String,
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/items/{id}",
                get(|ApiPath(id): ApiPath<u64>| async move { id.to_string() }),
            )
            .route(
                "/items",
                get(|ApiQuery(p): ApiQuery<Page>| async move { p.limit.to_string() }),
            )
            .route(
                "/lists",
                post(|body: Result<Json<NewList>, JsonRejection>| async move {
                    match body {
                        Ok(Json(l)) => l.name.into_response(),
                        Err(e) => json_rejection(e, "web.max_body_bytes").into_response(),
                    }
                }),
            )
            .layer(DefaultBodyLimit::max(64))
    }

    async fn call(req: Request<Body>) -> (StatusCode, String, serde_json::Value) {
        parts(app().oneshot(req).await.unwrap()).await
    }

    fn get_req(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    fn post_json(ctype: &str, body: &str) -> Request<Body> {
        Request::post("/lists")
            .header("content-type", ctype)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn error(body: &serde_json::Value) -> &str {
        body["error"].as_str().unwrap()
    }

    #[tokio::test]
    async fn a_path_segment_of_the_wrong_type_is_a_json_400_naming_the_path() {
        let (status, ctype, body) = call(get_req("/items/seven")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ctype, "application/json");
        assert!(error(&body).starts_with("path: "), "{body}");
    }

    #[tokio::test]
    async fn a_bad_query_is_a_json_400_without_axums_prefix() {
        let (status, _, body) = call(get_req("/items?limit=x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let e = error(&body);
        assert!(e.starts_with("query: "), "{e}");
        assert!(!e.contains("Failed to deserialize"), "{e}");
        let (status, _, body) = call(get_req("/items")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).contains("limit"), "{body}");
    }

    #[tokio::test]
    async fn json_bodies_name_the_field_the_type_and_the_limit() {
        let (status, _, body) = call(post_json("application/json", "{}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error(&body).contains("name"), "{body}");
        let (status, _, body) = call(post_json("application/json", "{\"colour\":1}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error(&body).contains("colour"), "{body}");
        let (status, _, body) = call(post_json("application/json", "{")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).starts_with("body: not valid JSON"), "{body}");
        let (status, _, body) = call(post_json("text/plain", "{}")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(error(&body), "Content-Type: expected application/json");
        let big = format!("{{\"name\":\"{}\"}}", "x".repeat(100));
        let (status, _, body) = call(post_json("application/json", &big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error(&body).contains("web.max_body_bytes"), "{body}");
    }
}
