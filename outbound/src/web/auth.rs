//! Who is asking: the `Authorization: Bearer <token>` of every API request.
//!
//! Owns: reading the header and finding its account (`accounts::authenticate`);
//! 401 with `WWW-Authenticate: Bearer` when it is missing or unknown.
//! Must not: decide what the account may see (each route filters by its id).

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::accounts::{self, Account};

/// The authenticated account of a request.
pub struct Auth(pub Account);

/// 401 with the challenge header.
pub struct Unauthorized(ApiError);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let mut response = self.0.into_response();
        if status == axum::http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Unauthorized;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(Unauthorized(ApiError::unauthorized(
                "Authorization: missing (send `Authorization: Bearer <token>`)",
            )));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                Unauthorized(ApiError::unauthorized(
                    "Authorization: expected `Bearer <token>`",
                ))
            })?;
        let mut db = state.pool.get().await.map_err(|e| Unauthorized(e.into()))?;
        match accounts::authenticate(&mut db, token).await {
            Ok(Some(account)) => Ok(Self(account)),
            Ok(None) => Err(Unauthorized(ApiError::unauthorized(
                "Authorization: unknown token",
            ))),
            Err(e) => Err(Unauthorized(e.into())),
        }
    }
}
