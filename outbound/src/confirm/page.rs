//! `GET|POST /c/<token>` of `outbound web`, at the root of every host name (as
//! the tracking routes): the page a confirmation's link opens, with a button,
//! and the POST that button sends, which confirms.
//!
//! A GET never confirms: mail security scanners fetch every link of a message,
//! and a confirmation a scanner can give is no confirmation. A token that does
//! not verify (or names no member any more) is a 404 like any unknown path.
//! Owns: the two pages (escaped). Must not: hold SQL (`confirm` does).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tracing::warn;

use crate::tracking::links::escape_html;
use crate::tracking::token::{Claim, MAX_TOKEN_CHARS, Signer};
use crate::web::AppState;
use crate::web::tracking::{not_found, page, unavailable};

pub fn routes() -> Router<AppState> {
    Router::new().route("/c/{token}", get(show).post(confirm))
}

/// (list, subscriber) of a token that verifies.
fn verify(state: &AppState, token: &str) -> Option<(i64, i64)> {
    if token.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let signer = Signer::new(state.cfg.tracking.key.as_deref()?);
    match signer.verify(token).ok()? {
        Claim::Confirm { list, subscriber } => Some((list, subscriber)),
        _ => None,
    }
}

fn unsubscribed_page() -> Response {
    page(
        "Not confirmed",
        "<h1>Not confirmed</h1><p>This address was unsubscribed from the list; \
         it cannot be confirmed again through this link.</p>",
    )
    .into_response()
}

fn already_page(email: &str, list: &str) -> Response {
    page(
        "Already confirmed",
        &format!(
            "<h1>Already confirmed</h1><p><strong>{}</strong> is already confirmed on {}.</p>",
            escape_html(email),
            escape_html(list)
        ),
    )
    .into_response()
}

async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some((list, subscriber)) = verify(&state, &token) else {
        return not_found();
    };
    let Ok(mut db) = state.pool.get().await else {
        return unavailable();
    };
    let m = match super::member(&mut db, list, subscriber).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(),
        Err(_) => return unavailable(),
    };
    match m.status.as_str() {
        "confirmed" => already_page(&m.email, &m.list_name),
        "unsubscribed" => unsubscribed_page(),
        _ => page(
            "Confirm your subscription",
            &format!(
                "<h1>Confirm your subscription</h1><p>Receive mail from <strong>{}</strong> \
                 at <strong>{}</strong>?</p><form method=\"post\" action=\"{}\">\
                 <button type=\"submit\" id=\"confirm\">Confirm</button></form>",
                escape_html(&m.list_name),
                escape_html(&m.email),
                escape_html(&token),
            ),
        )
        .into_response(),
    }
}

async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some((list, subscriber)) = verify(&state, &token) else {
        return not_found();
    };
    let Ok(mut db) = state.pool.get().await else {
        return unavailable();
    };
    match super::confirm(&mut db, list, subscriber, Utc::now()).await {
        Ok(true) => page(
            "Confirmed",
            "<h1>Thank you</h1><p>Your subscription is confirmed.</p>",
        )
        .into_response(),
        Ok(false) => match super::member(&mut db, list, subscriber).await {
            Ok(Some(m)) if m.status == "confirmed" => already_page(&m.email, &m.list_name),
            Ok(Some(_)) => unsubscribed_page(),
            Ok(None) => not_found(),
            Err(_) => unavailable(),
        },
        Err(e) => {
            warn!(error = %e, "confirmation failed");
            unavailable()
        }
    }
}
