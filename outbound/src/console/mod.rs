//! The web console at `/` of `outbound web`: server-rendered HTML pages for an
//! account's campaigns, lists and suppression, and the relay's dashboard.
//!
//! Layout: `session` (passwords, sessions, the [`session::Console`] extractor,
//! the login limiter), `csrf` (the token check every POST goes through:
//! [`csrf::Posted`]), `charts` (SVG), `assets` (the embedded CSS and script),
//! `login` (login, logout), `accounts` (the admin's account pages), `dashboard`,
//! `campaigns`, `lists`, `suppression`: one file per page group.
//!
//! Owns: the console's routes, its page layout, its response headers (a strict
//! Content-Security-Policy with no inline script or style, `X-Frame-Options:
//! DENY`, `nosniff`, `no-store`), and the page error shape.
//! Must not: hold the SQL of another module's tables (it calls `lists`,
//! `campaign::store`, `queue`, `import`; the few reads of its own live next to the
//! page that shows them), or serve `/api/v1`, `/l/`, `/o/`, `/u/` (the API's and
//! tracking's).
//!
//! Every page is rendered with maud, which escapes every interpolated value: user
//! data is never written as raw HTML (the SVG charts escape their own text).

pub mod session;

mod accounts;
mod assets;
mod campaigns;
mod charts;
mod csrf;
mod dashboard;
mod lists;
mod login;
mod suppression;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use tokio::sync::{Mutex, OnceCell};

use crate::db::{Db, DbError};
use crate::queue::Queue;
use crate::web::AppState;
use session::Console;

/// The console's own state, beside [`AppState`].
#[derive(Default)]
pub struct ConsoleState {
    /// Login attempts per account and address.
    limiter: session::Limiter,
    /// One connection of its own for [`Queue`]'s functions (nodes, stats,
    /// suppression), which own their connection; opened on first use.
    queue: OnceCell<Mutex<Queue>>,
}

impl ConsoleState {
    async fn queue(
        &self,
        state: &AppState,
    ) -> Result<tokio::sync::MutexGuard<'_, Queue>, PageError> {
        let q = self
            .queue
            .get_or_try_init(|| async {
                Db::open(&state.cfg.store, state.cfg.migrate)
                    .await
                    .map(|db| Mutex::new(Queue::new(db)))
            })
            .await
            .map_err(|e| PageError::unavailable(&e))?;
        Ok(q.lock().await)
    }
}

/// The console's routes (merged at the root of `outbound web`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(login::routes())
        .merge(accounts::routes())
        .merge(dashboard::routes())
        .merge(campaigns::routes())
        .merge(lists::routes())
        .merge(suppression::routes())
        .merge(assets::routes())
        .layer(Extension(Arc::new(ConsoleState::default())))
        .layer(middleware::from_fn(security_headers))
}

/// What every console response carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // Scripts, styles and images from this origin only; no inline script or
    // style; no framing; forms post only here.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A page's failure: its status and a message shown (escaped) to the user.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "only the admin account may do this")
    }
    /// 503; the cause goes to the log, not to the page.
    pub fn unavailable(e: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "console request failed on the store");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; try again",
        )
    }
}

impl From<DbError> for PageError {
    fn from(e: DbError) -> Self {
        Self::unavailable(&e)
    }
}

impl From<csrf::FieldError> for PageError {
    fn from(e: csrf::FieldError) -> Self {
        Self::bad(e.0)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = page(
            None,
            "Error",
            html! {
                h1 { "Error " (self.status.as_u16()) }
                p.error { (self.message) }
                p { a href="/" { "Back to the dashboard" } }
            },
        );
        (self.status, body).into_response()
    }
}

pub type PageResult = Result<Html<String>, PageError>;

/// A whole page: the navigation (when signed in), the title and `body`.
pub fn page(console: Option<&Console>, title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · outbound" }
                link rel="stylesheet" href=(assets::CSS_PATH);
                script src=(assets::JS_PATH) defer {}
            }
            body {
                @if let Some(c) = console {
                    nav {
                        a href="/" { "Dashboard" }
                        a href="/campaigns" { "Campaigns" }
                        a href="/lists" { "Lists" }
                        @if c.account.is_admin {
                            a href="/suppression" { "Suppression" }
                            a href="/accounts" { "Accounts" }
                        }
                        span.who { "Signed in as " (c.account.name) }
                        form.inline method="post" action="/logout" {
                            (csrf_field(c))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(c: &Console) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(c.csrf); }
}

/// 303 to `to` (after a POST).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::accounts::Account;

    #[test]
    fn pages_escape_what_they_are_given() {
        let c = Console {
            account: Account {
                id: 1,
                name: "<b>ann</b>".into(),
                is_admin: false,
            },
            csrf: "\"><script>x</script>".into(),
            session_id: String::new(),
        };
        let Html(body) = page(
            Some(&c),
            "<script>alert(1)</script>",
            html! { p { ("<img src=x onerror=alert(1)>") } },
        );
        assert!(!body.contains("<script>alert(1)") && !body.contains("<img src=x"));
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(body.contains("&lt;b&gt;ann&lt;/b&gt;"));
        assert!(body.contains("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""));
        // The only script is the embedded file; admin links are not shown.
        assert_eq!(body.matches("<script").count(), 1);
        assert!(body.contains("<script src=\"/assets/console.js\""));
        assert!(!body.contains("/accounts"));
    }
}
