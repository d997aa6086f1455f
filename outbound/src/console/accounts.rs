//! `/accounts`: the admin account's pages to list accounts, create one with a
//! console password, and lift an account's auto-pause. Any other account gets 403.
//!
//! Owns: the page and one read of its own (accounts with whether they have a
//! password).
//! Must not: create accounts, hash passwords or resume campaigns itself
//! (`accounts::create`, `session::set_password`, `accounts::resume` do).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use maud::html;

use super::csrf::Posted;
use super::session::{self, Console};
use super::{PageError, PageResult, csrf_field, page};
use crate::accounts;
use crate::db::{Db, DbError, Val};
use crate::web::AppState;

/// Accounts listed at most.
const MAX_LISTED: i64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/accounts", get(index).post(create))
        .route("/accounts/{id}/resume", axum::routing::post(resume))
}

/// One row of the accounts table.
type Row = (i64, String, bool, bool, Option<String>);

/// (id, name, admin, has a password, pause reason), by name.
async fn all(db: &mut Db) -> Result<Vec<Row>, DbError> {
    Ok(db
        .query(
            "SELECT id, name, is_admin, password_hash IS NOT NULL, paused_reason FROM accounts \
             ORDER BY name LIMIT ?",
            vec![MAX_LISTED.into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first().and_then(Val::int)?,
                r.get(1).and_then(Val::text)?,
                r.get(2).and_then(Val::int).unwrap_or(0) != 0,
                r.get(3).and_then(Val::int).unwrap_or(0) != 0,
                r.get(4).and_then(Val::text),
            ))
        })
        .collect())
}

async fn render(state: &AppState, c: &Console, notice: Option<String>) -> PageResult {
    let mut db = state.pool.get().await?;
    let rows = all(&mut db).await?;
    Ok(page(
        Some(c),
        "Accounts",
        html! {
            h1 { "Accounts" }
            @if let Some(n) = notice { p.notice { (n) } }
            table {
                tr { th { "id" } th { "name" } th { "admin" } th { "console password" } th { "sending" } }
                @for (id, name, admin, pw, paused) in &rows {
                    tr {
                        td.num { (id) } td { (name) }
                        td { @if *admin { "yes" } @else { "no" } }
                        td { @if *pw { "set" } @else { "none" } }
                        td {
                            @if let Some(reason) = paused {
                                "paused: " (reason)
                                form method="post" action=(format!("/accounts/{id}/resume")) {
                                    (csrf_field(c))
                                    button type="submit" { "Resume" }
                                }
                            } @else { "active" }
                        }
                    }
                }
            }
            h2 { "New account" }
            form.box method="post" action="/accounts" {
                (csrf_field(c))
                label for="name" { "Name" }
                input type="text" id="name" name="name" maxlength=(accounts::MAX_NAME) required;
                label for="password" { "Password (at least " (session::MIN_PASSWORD_CHARS) " characters)" }
                input type="password" id="password" name="password" maxlength=(session::MAX_PASSWORD_BYTES) required;
                label { input type="checkbox" name="admin" value="1"; " admin" }
                p { button type="submit" { "Create" } }
            }
        },
    ))
}

async fn index(State(state): State<AppState>, c: Console) -> PageResult {
    if !c.account.is_admin {
        return Err(PageError::forbidden());
    }
    render(&state, &c, None).await
}

async fn create(State(state): State<AppState>, posted: Posted) -> PageResult {
    if !posted.console.account.is_admin {
        return Err(PageError::forbidden());
    }
    let name = posted.required("name", accounts::MAX_NAME)?;
    let password = posted.required("password", session::MAX_PASSWORD_BYTES)?;
    let admin = posted.text("admin", 1)?.is_some();
    // Checked before the account exists, so a short password leaves nothing behind.
    session::hash_password(&password).map_err(|e| PageError::bad(e.to_string()))?;
    let token = {
        let mut db = state.pool.get().await?;
        let (_, token) = accounts::create(&mut db, &name, admin)
            .await
            .map_err(|e| match e {
                accounts::AccountError::Db(e) => PageError::from(e),
                other => PageError::bad(other.to_string()),
            })?;
        session::set_password(&mut db, &name, &password)
            .await
            .map_err(|e| PageError::unavailable(&e))?;
        token
    };
    render(
        &state,
        &posted.console,
        Some(format!(
            "account {name} created; its API token (shown once): {token}"
        )),
    )
    .await
}

async fn resume(State(state): State<AppState>, Path(id): Path<i64>, posted: Posted) -> PageResult {
    if !posted.console.account.is_admin {
        return Err(PageError::forbidden());
    }
    let resumed = {
        let mut db = state.pool.get().await?;
        accounts::resume(&mut db, id, chrono::Utc::now()).await?
    };
    let notice = match resumed {
        Some(ids) => format!("account {id} resumed ({} campaigns)", ids.len()),
        None => format!("account {id} was not paused"),
    };
    render(&state, &posted.console, Some(notice)).await
}
