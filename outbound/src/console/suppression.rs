//! `/suppression`: search, add and remove addresses of the suppression list.
//!
//! Owns: the page. The suppression table is relay-wide (no account column: an
//! address that hard-bounced is bad for every sender), so only the admin account
//! sees or changes it; any other gets 403.
//! Must not: hold the suppression SQL (`Queue::suppress_*` does).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;
use serde::Deserialize;

use super::csrf::Posted;
use super::session::Console;
use super::{ConsoleState, PageError, PageResult, csrf_field, page, see_other};
use crate::lists;
use crate::web::AppState;

/// Entries the page shows at most.
const MAX_SHOWN: usize = 200;
/// Longest reason kept.
const MAX_REASON_CHARS: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/suppression", get(index))
        .route("/suppression/add", post(add))
        .route("/suppression/remove", post(remove))
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn index(
    State(state): State<AppState>,
    Extension(cs): Extension<Arc<ConsoleState>>,
    c: Console,
    Query(search): Query<Search>,
) -> PageResult {
    if !c.account.is_admin {
        return Err(PageError::forbidden());
    }
    let q = search
        .q
        .map(|q| {
            q.trim()
                .to_lowercase()
                .chars()
                .take(320)
                .collect::<String>()
        })
        .unwrap_or_default();
    // The whole list is read and filtered here: it is the one read `Queue` has,
    // and the page keeps at most MAX_SHOWN of it.
    let all = cs.queue(&state).await?.suppress_list().await?;
    let total = all.len();
    let shown: Vec<_> = all
        .into_iter()
        .filter(|e| q.is_empty() || e.address.contains(&q))
        .take(MAX_SHOWN)
        .collect();
    Ok(page(
        Some(&c),
        "Suppression",
        html! {
            h1 { "Suppression list" }
            p { (total) " addresses in all." }
            form method="get" action="/suppression" {
                input type="text" name="q" value=(q) placeholder="search by address" maxlength="320";
                " " button type="submit" { "Search" }
            }
            table id="suppression" {
                tr { th { "address" } th { "source" } th { "since" } th { "reason" } th {} }
                @for e in &shown {
                    tr {
                        td { (e.address) } td { (e.source) } td { (e.created_at) } td { (e.reason) }
                        td {
                            form.inline method="post" action="/suppression/remove" {
                                (csrf_field(&c))
                                input type="hidden" name="address" value=(e.address);
                                button type="submit" { "Remove" }
                            }
                        }
                    }
                }
                @if shown.is_empty() { tr { td colspan="5" { "none" } } }
            }
            h2 { "Add an address" }
            form.box method="post" action="/suppression/add" {
                (csrf_field(&c))
                label for="address" { "Address" }
                input type="email" id="address" name="address" maxlength=(lists::MAX_EMAIL_BYTES) required;
                label for="reason" { "Reason" }
                input type="text" id="reason" name="reason" maxlength=(MAX_REASON_CHARS);
                p { button type="submit" { "Suppress" } }
            }
        },
    ))
}

async fn add(
    State(state): State<AppState>,
    Extension(cs): Extension<Arc<ConsoleState>>,
    posted: Posted,
) -> Result<Response, PageError> {
    if !posted.console.account.is_admin {
        return Err(PageError::forbidden());
    }
    let address = posted.required("address", lists::MAX_EMAIL_BYTES)?;
    let address =
        lists::check_email(&address).map_err(|why| PageError::bad(format!("address: {why}")))?;
    let reason = posted
        .text("reason", MAX_REASON_CHARS)?
        .unwrap_or_else(|| "added in the console".into());
    cs.queue(&state)
        .await?
        .suppress_add(&address, &reason, "manual")
        .await?;
    Ok(see_other("/suppression"))
}

async fn remove(
    State(state): State<AppState>,
    Extension(cs): Extension<Arc<ConsoleState>>,
    posted: Posted,
) -> Result<Response, PageError> {
    if !posted.console.account.is_admin {
        return Err(PageError::forbidden());
    }
    let address = posted.required("address", lists::MAX_EMAIL_BYTES)?;
    cs.queue(&state).await?.suppress_remove(&address).await?;
    Ok(see_other("/suppression"))
}
