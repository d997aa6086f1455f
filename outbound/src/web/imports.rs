//! `/api/v1/lists/{id}/imports` and `/api/v1/imports/{id}`. (Being written.)

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}

/// Picks up imports a stopped server left unfinished.
pub async fn resume(_state: &AppState) {}
