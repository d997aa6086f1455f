//! `/api/v1/campaigns`. (Being written.)

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
