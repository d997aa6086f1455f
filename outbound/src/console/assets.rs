//! The console's stylesheet and script, embedded in the binary (nothing is
//! loaded from another host).
//!
//! Owns: `/assets/console.css` and `/assets/console.js`.
//! Must not: serve anything read from disk at run time.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::web::AppState;

pub const CSS_PATH: &str = "/assets/console.css";
pub const JS_PATH: &str = "/assets/console.js";
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            CSS_PATH,
            get(|| async {
                (
                    [
                        (CONTENT_TYPE, "text/css; charset=utf-8"),
                        (CACHE_CONTROL, "max-age=300"),
                    ],
                    CSS,
                )
                    .into_response()
            }),
        )
        .route(
            JS_PATH,
            get(|| async {
                (
                    [
                        (CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (CACHE_CONTROL, "max-age=300"),
                    ],
                    JS,
                )
                    .into_response()
            }),
        )
}
