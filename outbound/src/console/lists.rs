//! `/lists`: an account's lists: create one, a list's members by status, add one
//! subscriber, search members by email, upload a file (with a progress bar the
//! script fills from `/imports/{id}/progress`).
//!
//! Owns: the pages, the upload's CSRF check (a header when the script sends the
//! file as the body; the form's first field when a browser without script sends
//! multipart), an import's progress page, and one read of its own (members matching an email, bounded).
//! Another account's list or import is a 404.
//! Must not: write subscribers or parse uploads itself (`confirm::add_members`,
//! `web::imports::accept` do).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::csrf::{self, Posted};
use super::session::Console;
use super::{PageError, PageResult, csrf_field, page, see_other};
use crate::db::{Db, DbError, Val};
use crate::import;
use crate::lists::{self, List, NewSubscriber, OptIn};
use crate::web::AppState;

/// Members a page shows at most.
const MAX_SHOWN: i64 = 100;
/// Longest search text.
const MAX_QUERY_CHARS: usize = 320;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lists", get(index).post(create))
        .route("/lists/{id}", get(show))
        .route("/lists/{id}/settings", post(settings))
        .route("/lists/{id}/subscribers", post(add))
        .route(
            "/lists/{id}/upload",
            // Streams to disk with web.max_import_bytes as its limit (as the API's).
            post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/imports/{id}", get(import_page))
        .route("/imports/{id}/progress", get(progress))
}

async fn own(db: &mut Db, c: &Console, id: i64) -> Result<List, PageError> {
    lists::get(db, c.account.id, id)
        .await?
        .ok_or_else(|| PageError::not_found(&format!("list {id}")))
}

/// `%`, `_` and `!` taken literally in a LIKE pattern (with `ESCAPE '!'`: not a
/// backslash, which MySQL string literals would eat).
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// (email, name, status) of members whose address contains `q` (all with None),
/// by address, at most [`MAX_SHOWN`].
async fn members(
    db: &mut Db,
    list: i64,
    q: Option<&str>,
) -> Result<Vec<(String, String, String)>, DbError> {
    let pattern = format!("%{}%", like_literal(&q.unwrap_or("").to_lowercase()));
    Ok(db
        .query(
            "SELECT s.email, s.name, m.status FROM list_members m \
             JOIN subscribers s ON s.id = m.subscriber_id \
             WHERE m.list_id = ? AND s.email_key LIKE ? ESCAPE '!' ORDER BY s.email_key LIMIT ?",
            vec![list.into(), pattern.into(), MAX_SHOWN.into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first().and_then(Val::text)?,
                r.get(1).and_then(Val::text).unwrap_or_default(),
                r.get(2).and_then(Val::text)?,
            ))
        })
        .collect())
}

async fn index(State(state): State<AppState>, c: Console) -> PageResult {
    let mut db = state.pool.get().await?;
    let all = lists::all(&mut db, Some(c.account.id)).await?;
    let mut rows = Vec::with_capacity(all.len());
    for l in all {
        let n = lists::member_counts(&mut db, l.id).await?;
        rows.push((l, n));
    }
    Ok(page(
        Some(&c),
        "Lists",
        html! {
            h1 { "Lists" }
            table {
                tr { th { "id" } th { "name" } th { "opt-in" } th { "confirmed" } th { "unconfirmed" } th { "unsubscribed" } }
                @for (l, n) in &rows {
                    tr {
                        td.num { (l.id) }
                        td { a href=(format!("/lists/{}", l.id)) { (l.name) } }
                        td { (l.opt_in.as_str()) }
                        td.num { (n.confirmed) } td.num { (n.unconfirmed) } td.num { (n.unsubscribed) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="6" { "No lists yet." } } }
            }
            h2 { "New list" }
            form.box method="post" action="/lists" {
                (csrf_field(&c))
                label for="name" { "Name" }
                input type="text" id="list-name" name="name" maxlength=(lists::MAX_LIST_NAME_CHARS) required;
                label for="opt_in" { "Opt-in" }
                select id="opt_in" name="opt_in" {
                    option value="single" { "single" }
                    option value="double" { "double" }
                }
                label for="list-sender" { "Sender of confirmations (double opt-in; optional)" }
                input type="email" id="list-sender" name="sender" maxlength=(lists::MAX_EMAIL_BYTES);
                p { button type="submit" id="create-list" { "Create list" } }
            }
        },
    ))
}

async fn create(State(state): State<AppState>, posted: Posted) -> Result<Response, PageError> {
    let name = posted.required("name", lists::MAX_LIST_NAME_CHARS)?;
    let opt_in = match posted.text("opt_in", 16)? {
        None => OptIn::Single,
        Some(o) => OptIn::parse(&o).ok_or_else(|| PageError::bad("opt_in: single or double"))?,
    };
    let sender = sender_field(&posted)?;
    let mut db = state.pool.get().await?;
    match lists::create(
        &mut db,
        posted.console.account.id,
        &name,
        opt_in,
        sender.as_deref(),
    )
    .await
    {
        Ok(id) => Ok(see_other(&format!("/lists/{id}"))),
        Err(lists::ListError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::bad(e.to_string())),
    }
}

/// The form's `sender`: an address, or None when left empty.
fn sender_field(posted: &Posted) -> Result<Option<String>, PageError> {
    match posted.text("sender", lists::MAX_EMAIL_BYTES)? {
        Some(s) if !s.trim().is_empty() => lists::check_email(&s)
            .map(Some)
            .map_err(|why| PageError::bad(format!("sender: {why}"))),
        _ => Ok(None),
    }
}

/// `POST /lists/{id}/settings`: the list's name and confirmations sender (an
/// empty sender clears it).
async fn settings(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted,
) -> Result<Response, PageError> {
    let name = posted.required("name", lists::MAX_LIST_NAME_CHARS)?;
    let change = lists::ListUpdate {
        name: Some(name),
        sender: Some(sender_field(&posted)?),
    };
    let mut db = state.pool.get().await?;
    // Another account's list: the same 404 as none.
    own(&mut db, &posted.console, id).await?;
    match lists::update(&mut db, posted.console.account.id, id, &change).await {
        Ok(Some(_)) => Ok(see_other(&format!("/lists/{id}"))),
        Ok(None) => Err(PageError::new(StatusCode::NOT_FOUND, format!("list {id}"))),
        Err(lists::ListError::Db(e)) => Err(e.into()),
        Err(e) => Err(PageError::bad(e.to_string())),
    }
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
    Query(search): Query<Search>,
) -> PageResult {
    let q: Option<String> = search
        .q
        .map(|q| q.trim().chars().take(MAX_QUERY_CHARS).collect())
        .filter(|q: &String| !q.is_empty());
    let mut db = state.pool.get().await?;
    let list = own(&mut db, &c, id).await?;
    let n = lists::member_counts(&mut db, list.id).await?;
    let shown = members(&mut db, list.id, q.as_deref()).await?;
    Ok(page(
        Some(&c),
        &list.name,
        html! {
            h1 { "List: " (list.name) }
            div.cards {
                div.card { div.n data-count="confirmed" id="count-confirmed" { (n.confirmed) } div.k { "confirmed" } }
                div.card { div.n data-count="unconfirmed" { (n.unconfirmed) } div.k { "unconfirmed" } }
                div.card { div.n data-count="unsubscribed" { (n.unsubscribed) } div.k { "unsubscribed" } }
            }
            h2 { "Settings" }
            form.box id="list-settings" method="post" action=(format!("/lists/{}/settings", list.id)) {
                (csrf_field(&c))
                label for="settings-name" { "Name" }
                input type="text" id="settings-name" name="name" value=(list.name) maxlength=(lists::MAX_LIST_NAME_CHARS) required;
                label for="settings-sender" { "Sender of confirmations (" (list.opt_in.as_str()) " opt-in; empty: the server's default)" }
                input type="email" id="settings-sender" name="sender" value=(list.sender.clone().unwrap_or_default()) maxlength=(lists::MAX_EMAIL_BYTES);
                p { button type="submit" id="save-settings" { "Save" } }
            }
            h2 { "Upload a file" }
            form.box id="upload-form" method="post" enctype="multipart/form-data"
                action=(format!("/lists/{}/upload", list.id)) data-upload-url=(format!("/lists/{}/upload", list.id)) {
                (csrf_field(&c))
                p { "A CSV file (email, name, attributes…) or a zip, gzip or RAR archive of one." }
                input type="file" id="upload-file" name="file";
                button type="submit" id="upload" { "Upload" }
                p { progress id="upload-progress" max="100" value="0" {} " " span id="upload-status" { "" } }
            }
            h2 { "Add a subscriber" }
            form.box method="post" action=(format!("/lists/{}/subscribers", list.id)) {
                (csrf_field(&c))
                label for="email" { "Email" }
                input type="email" id="email" name="email" maxlength=(lists::MAX_EMAIL_BYTES) required;
                label for="sub-name" { "Name" }
                input type="text" id="sub-name" name="name" maxlength=(lists::MAX_SUBSCRIBER_NAME_CHARS);
                p { button type="submit" id="add-subscriber" { "Add" } }
            }
            h2 { "Members" }
            form method="get" action=(format!("/lists/{}", list.id)) {
                input type="text" name="q" value=(q.clone().unwrap_or_default()) maxlength=(MAX_QUERY_CHARS) placeholder="search by email";
                " " button type="submit" { "Search" }
            }
            table id="members" {
                tr { th { "email" } th { "name" } th { "status" } }
                @for (email, name, status) in &shown { tr { td { (email) } td { (name) } td { (status) } } }
                @if shown.is_empty() { tr { td colspan="3" { "no members" @if q.is_some() { " match" } } } }
            }
            @if shown.len() as i64 >= MAX_SHOWN { p { "Showing the first " (MAX_SHOWN) "; search to narrow." } }
        },
    ))
}

async fn add(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    extensions: axum::http::Extensions,
    posted: Posted,
) -> Result<Response, PageError> {
    let client = super::session::client_ip(&extensions);
    let email = posted.required("email", lists::MAX_EMAIL_BYTES)?;
    let email =
        lists::check_email(&email).map_err(|why| PageError::bad(format!("email: {why}")))?;
    let name = posted.text("name", lists::MAX_SUBSCRIBER_NAME_CHARS)?;
    if let Some(n) = &name {
        lists::check_subscriber_name(n).map_err(|why| PageError::bad(format!("name: {why}")))?;
    }
    let mut db = state.pool.get().await?;
    let list = own(&mut db, &posted.console, id).await?;
    let row = NewSubscriber {
        email,
        name,
        attributes: None,
    };
    // The API's path: on a double opt-in list a confirmation is queued, throttled.
    match crate::confirm::add_members(&mut db, &state.cfg, &list, &[row], client, Utc::now()).await
    {
        Ok(_) => Ok(see_other(&format!("/lists/{id}"))),
        Err(crate::confirm::AddError::Throttled(x)) => {
            Err(PageError::new(StatusCode::TOO_MANY_REQUESTS, x.to_string()))
        }
        Err(crate::confirm::AddError::Db(e)) => Err(e.into()),
    }
}

/// The longest CSRF field a multipart upload may carry (a token is 64 bytes).
const MAX_CSRF_FIELD_BYTES: usize = 128;

/// `POST /lists/{id}/upload`: the script sends the file as the body with the
/// token in a header (→ 202 `{"id"}`); a browser without script sends the form
/// as multipart, its `csrf` field first (→ 303 to the import's page).
async fn upload(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
    req: Request,
) -> Result<Response, PageError> {
    let multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !multipart {
        let given = req
            .headers()
            .get(csrf::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf::matches(&c.csrf, given) {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "CSRF token missing or wrong",
            ));
        }
    }
    let list = {
        let mut db = state.pool.get().await?;
        own(&mut db, &c, id).await?
    };
    if !multipart {
        let (parts, body) = req.into_parts();
        return match crate::web::imports::accept(&state, list, &parts.headers, body).await {
            Ok(import_id) => {
                Ok((StatusCode::ACCEPTED, Json(json!({ "id": import_id }))).into_response())
            }
            Err(e) => Err(PageError::new(e.status, e.message)),
        };
    }
    let bad = |e: axum::extract::multipart::MultipartError| {
        PageError::bad(format!("form: {}", e.body_text()))
    };
    let mut form = Multipart::from_request(req, &state)
        .await
        .map_err(|e| PageError::bad(format!("form: {}", e.body_text())))?;
    let mut token_ok = false;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some(csrf::FIELD) => {
                // Read in chunks, bounded: this route has no body limit.
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    value.extend_from_slice(&chunk);
                    if value.len() > MAX_CSRF_FIELD_BYTES {
                        return Err(PageError::new(
                            StatusCode::FORBIDDEN,
                            "CSRF token missing or wrong",
                        ));
                    }
                }
                token_ok = csrf::matches(&c.csrf, &String::from_utf8_lossy(&value));
            }
            Some("file") => {
                if !token_ok {
                    return Err(PageError::new(
                        StatusCode::FORBIDDEN,
                        "CSRF token missing or wrong",
                    ));
                }
                // The file part's own type is what `accept` checks.
                let mut headers = HeaderMap::new();
                if let Some(t) = field.content_type().and_then(|t| t.parse().ok()) {
                    headers.insert(CONTENT_TYPE, t);
                }
                // The part is streamed through a small channel into the same
                // receiver as the script's upload (to disk, under the size limit).
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
                let body =
                    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|item| (item, rx))
                    }));
                let pump = async move {
                    loop {
                        let item = match field.chunk().await {
                            Ok(Some(chunk)) => Ok(chunk),
                            Ok(None) => break,
                            Err(e) => Err(std::io::Error::other(e.body_text())),
                        };
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            break;
                        }
                    }
                };
                let (accepted, ()) = tokio::join!(
                    crate::web::imports::accept(&state, list, &headers, body),
                    pump
                );
                return match accepted {
                    Ok(import_id) => Ok(see_other(&format!("/imports/{import_id}"))),
                    Err(e) => Err(PageError::new(e.status, e.message)),
                };
            }
            _ => {}
        }
    }
    Err(PageError::bad("file: missing"))
}

/// An import's progress as a page (the upload without script lands here); it
/// reloads itself with a meta refresh until the import is done.
async fn import_page(State(state): State<AppState>, c: Console, Path(id): Path<i64>) -> PageResult {
    let mut db = state.pool.get().await?;
    let row = import::get(&mut db, c.account.id, id)
        .await?
        .ok_or_else(|| PageError::not_found(&format!("import {id}")))?;
    let done = row.state == "finished" || row.state == "failed";
    let body = html! {
        @if !done { meta http-equiv="refresh" content="2"; }
        h1 { "Import " (row.id) }
        table {
            tr { th { "state" } td.state id="import-state" { (row.state) } }
            tr { th { "rows read" } td.num { (row.rows_read) } }
            tr { th { "added" } td.num { (row.added) } }
            tr { th { "updated" } td.num { (row.updated) } }
            tr { th { "rejected" } td.num { (row.rejected) } }
            @if let Some(f) = &row.failure { tr { th { "failure" } td.error { (f) } } }
        }
        p { a href=(format!("/lists/{}", row.list_id)) { "Back to the list" } }
    };
    Ok(page(Some(&c), &format!("Import {}", row.id), body))
}

async fn progress(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
) -> Result<Json<Value>, PageError> {
    let mut db = state.pool.get().await?;
    let row = import::get(&mut db, c.account.id, id)
        .await?
        .ok_or_else(|| PageError::not_found(&format!("import {id}")))?;
    let n = lists::member_counts(&mut db, row.list_id).await?;
    Ok(Json(json!({
        "id": row.id,
        "state": row.state,
        "rows_read": row.rows_read,
        "added": row.added,
        "updated": row.updated,
        "rejected": row.rejected,
        "counts": { "confirmed": n.confirmed, "unconfirmed": n.unconfirmed, "unsubscribed": n.unsubscribed },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_literal_in_like() {
        assert_eq!(like_literal("a_b%c!d"), "a!_b!%c!!d");
        assert_eq!(like_literal("ann@x.test"), "ann@x.test");
    }
}
