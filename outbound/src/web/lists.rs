//! `/api/v1/lists`: lists and their subscribers. (Being written.)

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
