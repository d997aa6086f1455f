//! `/login` and `/logout`.
//!
//! Owns: the login form (its CSRF token is a double-submit cookie, as there is
//! no session yet), checking the password with the attempt bound (429 past it),
//! setting and clearing the session cookie.
//! Must not: store sessions or hash passwords itself (`session` does).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::html;

use super::csrf::{self, Posted};
use super::session::{self, COOKIE_NAME, Console, SESSION_SECS};
use super::{ConsoleState, PageError, page, see_other};
use crate::accounts;
use crate::web::AppState;

/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "outbound_login";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(form).post(login))
        .route("/logout", post(logout))
}

fn login_page(token: &str, error: Option<&str>, secure: bool, status: StatusCode) -> Response {
    let body = page(
        None,
        "Log in",
        html! {
            h1 { "outbound console" }
            @if let Some(e) = error { p.error { (e) } }
            form.box method="post" action="/login" {
                input type="hidden" name=(csrf::FIELD) value=(token);
                label for="account" { "Account" }
                input type="text" id="account" name="account" maxlength=(accounts::MAX_NAME) required autofocus;
                label for="password" { "Password" }
                input type="password" id="password" name="password" maxlength=(session::MAX_PASSWORD_BYTES) required;
                p { button type="submit" id="login" { "Log in" } }
            }
        },
    );
    (
        status,
        [(
            SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, token, 3600, secure),
        )],
        body,
    )
        .into_response()
}

async fn form(State(state): State<AppState>) -> Result<Response, PageError> {
    let token = session::random_token().map_err(|e| PageError::unavailable(&e))?;
    Ok(login_page(
        &token,
        None,
        state.cfg.web.secure_cookies,
        StatusCode::OK,
    ))
}

async fn login(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<ConsoleState>>,
    req: Request,
) -> Result<Response, PageError> {
    let secure = state.cfg.web.secure_cookies;
    let ip = session::client_ip(req.extensions());
    let cookie_token = session::cookie(req.headers(), LOGIN_COOKIE).unwrap_or_default();
    let Form(fields) = Form::<Vec<(String, String)>>::from_request(req, &state)
        .await
        .map_err(|e| PageError::bad(format!("form: {}", e.body_text())))?;
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if !csrf::matches(&cookie_token, get(csrf::FIELD)) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "CSRF token missing or wrong: reload the login page",
        ));
    }
    let fresh = session::random_token().map_err(|e| PageError::unavailable(&e))?;
    let name = get("account").trim();
    let password = get("password");
    if name.len() > accounts::MAX_NAME || password.len() > session::MAX_PASSWORD_BYTES {
        return Ok(login_page(
            &fresh,
            Some("wrong account or password"),
            secure,
            StatusCode::UNAUTHORIZED,
        ));
    }
    if !console.limiter.allow(name, ip, Instant::now()) {
        return Ok(login_page(
            &fresh,
            Some("too many login attempts; wait 15 minutes"),
            secure,
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let mut db = state.pool.get().await?;
    let Some(account) = session::check_login(&mut db, name, password).await? else {
        tracing::info!(account = name, "console login refused");
        return Ok(login_page(
            &fresh,
            Some("wrong account or password"),
            secure,
            StatusCode::UNAUTHORIZED,
        ));
    };
    let id = session::open(&mut db, &account).await?;
    tracing::info!(account = %account.name, "console login");
    let mut res = see_other("/");
    let headers = res.headers_mut();
    for c in [
        session::set_cookie(COOKIE_NAME, &id, SESSION_SECS, secure),
        session::set_cookie(LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            headers.append(SET_COOKIE, v);
        }
    }
    Ok(res)
}

async fn logout(State(state): State<AppState>, posted: Posted) -> Result<Response, PageError> {
    let Console { session_id, .. } = posted.console;
    let mut db = state.pool.get().await?;
    session::close(&mut db, &session_id).await?;
    let mut res = see_other("/login");
    if let Ok(v) = session::set_cookie(COOKIE_NAME, "", 0, state.cfg.web.secure_cookies).parse() {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(res)
}
