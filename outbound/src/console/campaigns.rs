//! `/campaigns`: an account's campaigns: the list, a new draft or an edited one
//! (`/campaigns/{id}/edit`, drafts only: 409 otherwise), a campaign's page
//! (counts, delivery chart from the timeline, top links, bounce reasons,
//! unsubscribes, the start/pause/resume/cancel buttons) and its live JSON.
//!
//! Owns: the pages, the form → [`NewCampaign`] mapping (with field limits), and
//! two reads of its own for the page (top links from `campaign_links`/`clicks`,
//! which the tracking code fills; bounce reasons of the campaign's rows).
//! Another account's campaign is a 404, as in the API.
//! Must not: validate campaigns, write them or apply transitions itself
//! (`campaign::validate`, `campaign::store::{create, update_draft, apply}` do).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use maud::{PreEscaped, html};
use serde_json::{Map, Value, json};

use super::charts::Chart;
use super::csrf::Posted;
use super::session::Console;
use super::{PageError, PageResult, csrf_field, page, see_other};
use crate::campaign::store::{self, ActionError, Campaign, Counts, CreateError, EditError};
use crate::campaign::{self, Action, NewCampaign};
use crate::db::{Db, DbError, Val};
use crate::lists;
use crate::web::AppState;

/// Largest text or HTML body a form may carry (the router's body limit applies
/// to the whole form as well).
const MAX_BODY_CHARS: usize = 512 * 1024;
/// Rows of the top-links and bounce-reason tables.
const TOP_ROWS: i64 = 10;
/// Points the delivery chart aims at (its step is the campaign's age / this).
const CHART_POINTS: i64 = 40;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/campaigns", get(index).post(create))
        .route("/campaigns/new", get(new_form))
        .route("/campaigns/{id}", get(show))
        .route("/campaigns/{id}/edit", get(edit_form).post(edit))
        .route("/campaigns/{id}/action", post(act))
        .route("/campaigns/{id}/live", get(live))
}

fn not_found(id: i64) -> PageError {
    PageError::not_found(&format!("campaign {id}"))
}

async fn own(db: &mut Db, c: &Console, id: i64) -> Result<Campaign, PageError> {
    store::get(db, Some(c.account.id), id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// (url, clicks, unique clickers) of the campaign's most clicked links.
async fn top_links(db: &mut Db, campaign: i64) -> Result<Vec<(String, i64, i64)>, DbError> {
    Ok(db
        .query(
            "SELECT l.url, COUNT(k.id), COUNT(DISTINCT k.subscriber_id) FROM campaign_links l \
             LEFT JOIN clicks k ON k.link_id = l.id AND k.campaign_id = l.campaign_id \
             WHERE l.campaign_id = ? GROUP BY l.id, l.url ORDER BY 2 DESC, l.id LIMIT ?",
            vec![campaign.into(), TOP_ROWS.into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first().and_then(Val::text)?,
                r.get(1).and_then(Val::int)?,
                r.get(2).and_then(Val::int)?,
            ))
        })
        .collect())
}

/// (class, status, text, count) of the campaign's bounces, most frequent first.
async fn bounce_reasons(
    db: &mut Db,
    campaign: i64,
) -> Result<Vec<(String, String, String, i64)>, DbError> {
    Ok(db
        .query(
            "SELECT b.class, b.status, b.text, COUNT(*) FROM outbound_bounces b \
             JOIN outbound_queue q ON q.id = b.queue_id WHERE q.campaign_id = ? \
             GROUP BY b.class, b.status, b.text ORDER BY 4 DESC LIMIT ?",
            vec![campaign.into(), TOP_ROWS.into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first().and_then(Val::text)?,
                r.get(1).and_then(Val::text).unwrap_or_default(),
                r.get(2).and_then(Val::text).unwrap_or_default(),
                r.get(3).and_then(Val::int)?,
            ))
        })
        .collect())
}

async fn index(State(state): State<AppState>, c: Console) -> PageResult {
    let mut db = state.pool.get().await?;
    let all = store::list(&mut db, c.account.id).await?;
    Ok(page(
        Some(&c),
        "Campaigns",
        html! {
            h1 { "Campaigns" }
            p { a href="/campaigns/new" id="new-campaign" { "New campaign" } }
            table {
                tr { th { "id" } th { "name" } th { "subject" } th { "state" } th { "recipients" } }
                @for k in &all {
                    tr {
                        td.num { (k.id) }
                        td { a href=(format!("/campaigns/{}", k.id)) { (k.name) } }
                        td { (k.subject) } td.state { (k.state) } td.num { (k.recipients) }
                    }
                }
                @if all.is_empty() { tr { td colspan="5" { "No campaigns yet." } } }
            }
        },
    ))
}

/// What the draft form starts with (empty for a new campaign).
#[derive(Default)]
struct Draft {
    name: String,
    from: String,
    subject: String,
    text: String,
    html: String,
    lists: Vec<i64>,
    exclude_lists: Vec<i64>,
    rate: String,
    send_at: String,
    /// Comma-separated host names.
    tracking_domains: String,
    track_opens: bool,
    pool: String,
}

/// The draft form, posting to `action`.
async fn draft_form(
    state: &AppState,
    c: &Console,
    title: &str,
    action: &str,
    d: &Draft,
) -> PageResult {
    let mut db = state.pool.get().await?;
    let own_lists = lists::all(&mut db, Some(c.account.id)).await?;
    Ok(page(
        Some(c),
        title,
        html! {
            h1 { (title) }
            form.box method="post" action=(action) {
                (csrf_field(c))
                label for="name" { "Name" }
                input type="text" id="name" name="name" value=(d.name) maxlength=(campaign::MAX_NAME_CHARS) required;
                label for="from" { "From" }
                input type="text" id="from" name="from" value=(d.from) maxlength=(campaign::MAX_HEADER_CHARS) placeholder="News <news@example.com>" required;
                label for="subject" { "Subject" }
                input type="text" id="subject" name="subject" value=(d.subject) maxlength=(campaign::MAX_HEADER_CHARS) required;
                label for="text" { "Text body" }
                textarea id="text" name="text" maxlength=(MAX_BODY_CHARS) { (d.text) }
                label for="html" { "HTML body" }
                textarea id="html" name="html" maxlength=(MAX_BODY_CHARS) { (d.html) }
                label { "Send to lists" }
                @for l in &own_lists {
                    label { input type="checkbox" name="lists" value=(l.id) checked[d.lists.contains(&l.id)]; " " (l.name) }
                }
                label { "Exclude lists" }
                @for l in &own_lists {
                    label { input type="checkbox" name="exclude_lists" value=(l.id) checked[d.exclude_lists.contains(&l.id)]; " " (l.name) }
                }
                label for="rate" { "Messages per second (empty: no limit)" }
                input type="number" id="rate" name="rate" value=(d.rate) min="0" step="any";
                label for="send_at" { "Send at (RFC 3339, empty: at once)" }
                input type="text" id="send_at" name="send_at" value=(d.send_at) maxlength="40" placeholder="2026-01-31T09:00:00Z";
                label for="tracking_domains" { "Tracking domains (comma-separated, your account's; empty: links are not masked)" }
                input type="text" id="tracking_domains" name="tracking_domains" value=(d.tracking_domains) maxlength="1024" placeholder="t.example.com";
                label { input type="checkbox" name="track_opens" value="1" checked[d.track_opens]; " Count opens (a tracking pixel)" }
                label for="pool" { "Sending pool (empty: the default addresses)" }
                input type="text" id="pool" name="pool" value=(d.pool) maxlength="64";
                p { button type="submit" id="create-campaign" { "Save draft" } }
            }
        },
    ))
}

async fn new_form(State(state): State<AppState>, c: Console) -> PageResult {
    draft_form(&state, &c, "New campaign", "/campaigns", &Draft::default()).await
}

async fn edit_form(State(state): State<AppState>, c: Console, Path(id): Path<i64>) -> PageResult {
    let (k, (text, html), tracking) = {
        let mut db = state.pool.get().await?;
        let k = own(&mut db, &c, id).await?;
        let bodies = store::bodies(&mut db, c.account.id, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let tracking = store::tracking_settings(&mut db, id).await?;
        (k, bodies, tracking)
    };
    if k.state != "draft" {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            format!("only a draft can be edited; this campaign is {}", k.state),
        ));
    }
    let d = Draft {
        name: k.name,
        from: k.from,
        subject: k.subject,
        text: text.unwrap_or_default(),
        html: html.unwrap_or_default(),
        lists: k.lists,
        exclude_lists: k.exclude_lists,
        rate: k
            .messages_per_second
            .map(|r| r.to_string())
            .unwrap_or_default(),
        send_at: k.send_at.unwrap_or_default(),
        tracking_domains: tracking.0.join(", "),
        track_opens: tracking.1,
        pool: k.pool.unwrap_or_default(),
    };
    draft_form(
        &state,
        &c,
        "Edit campaign",
        &format!("/campaigns/{id}/edit"),
        &d,
    )
    .await
}

/// The posted draft form, validated.
fn posted_campaign(posted: &Posted) -> Result<campaign::Valid, PageError> {
    let rate = match posted.text("rate", 32)? {
        None => None,
        Some(r) => Some(
            r.parse::<f64>()
                .map_err(|_| PageError::bad("rate: not a number"))?,
        ),
    };
    let raw = NewCampaign {
        name: posted.text("name", campaign::MAX_NAME_CHARS)?,
        from: posted.text("from", campaign::MAX_HEADER_CHARS)?,
        subject: posted.text("subject", campaign::MAX_HEADER_CHARS)?,
        text: posted.text("text", MAX_BODY_CHARS)?,
        html: posted.text("html", MAX_BODY_CHARS)?,
        lists: Some(posted.ids("lists")),
        exclude_lists: Some(posted.ids("exclude_lists")),
        messages_per_second: rate,
        send_at: posted.text("send_at", 40)?,
        pool: posted.text("pool", 64)?,
        tracking_domains: Some(
            posted
                .text("tracking_domains", 1024)?
                .unwrap_or_default()
                .split([',', ' ', '\n', '\r', '\t'])
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        track_opens: Some(posted.text("track_opens", 8)?.is_some()),
    };
    campaign::validate(raw).map_err(|e| PageError::bad(format!("{}: {}", e.field, e.why)))
}

async fn create(State(state): State<AppState>, posted: Posted) -> Result<Response, PageError> {
    let valid = posted_campaign(&posted)?;
    let mut db = state.pool.get().await?;
    match store::create(&mut db, posted.console.account.id, &valid).await {
        Ok(id) => Ok(see_other(&format!("/campaigns/{id}"))),
        Err(CreateError::Field(e)) => Err(PageError::bad(format!("{}: {}", e.field, e.why))),
        Err(CreateError::Db(e)) => Err(e.into()),
    }
}

async fn edit(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted,
) -> Result<Response, PageError> {
    let mut db = state.pool.get().await?;
    // Another account's campaign is a 404 whatever the form holds.
    own(&mut db, &posted.console, id).await?;
    let valid = posted_campaign(&posted)?;
    match store::update_draft(&mut db, posted.console.account.id, id, &valid).await {
        Ok(()) => Ok(see_other(&format!("/campaigns/{id}"))),
        Err(EditError::NotFound(_)) => Err(not_found(id)),
        Err(e @ EditError::NotDraft(_)) => Err(PageError::new(StatusCode::CONFLICT, e.to_string())),
        Err(EditError::Field(e)) => Err(PageError::bad(format!("{}: {}", e.field, e.why))),
        Err(EditError::Db(e)) => Err(e.into()),
    }
}

/// The timeline step for a campaign of this age: about [`CHART_POINTS`] points.
fn chart_step(k: &Campaign) -> i64 {
    let started = k
        .started_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let age = started.map_or(60, |s| (Utc::now() - s.with_timezone(&Utc)).num_seconds());
    (age / CHART_POINTS).clamp(campaign::MIN_STEP_SECS, 3600)
}

/// The delivery chart: delivered so far, over time (cumulative, so a running
/// campaign's line climbs).
async fn chart(db: &mut Db, c: &Console, k: &Campaign) -> Result<String, PageError> {
    let step = chart_step(k);
    let points = store::timeline(db, c.account.id, k.id, step)
        .await?
        .ok_or_else(|| not_found(k.id))?;
    let mut total = 0i64;
    let series: Vec<(String, f64)> = points
        .iter()
        .map(|p| {
            total = total.saturating_add(p.delivered);
            // `at` is RFC 3339: its time of day is the label.
            let label = p.at.get(11..19).unwrap_or(&p.at).to_owned();
            (label, total as f64)
        })
        .collect();
    Ok(Chart {
        title: &format!("Delivered over time (every {step} s, UTC)"),
        x_label: "time",
        y_label: "delivered",
        points: &series,
    }
    .svg())
}

fn counts_json(n: &Counts) -> Map<String, Value> {
    n.pairs()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect()
}

async fn show(State(state): State<AppState>, c: Console, Path(id): Path<i64>) -> PageResult {
    let mut db = state.pool.get().await?;
    let k = own(&mut db, &c, id).await?;
    let n = store::counts(&mut db, &k).await?;
    let svg = chart(&mut db, &c, &k).await?;
    let links = top_links(&mut db, k.id).await?;
    let bounces = bounce_reasons(&mut db, k.id).await?;
    let own_lists = lists::all(&mut db, Some(c.account.id)).await?;
    let list_name = |id: &i64| {
        own_lists
            .iter()
            .find(|l| l.id == *id)
            .map_or_else(|| format!("list {id}"), |l| l.name.clone())
    };
    Ok(page(
        Some(&c),
        &k.name,
        html! {
            h1 { "Campaign: " (k.name) }
            div data-live-url=(format!("/campaigns/{}/live", k.id)) {}
            table {
                tr { th { "state" } td.state data-count="state" { (k.state) } }
                @if let Some(reason) = &k.paused_reason { tr { th { "paused because" } td id="paused-reason" { (reason) } } }
                tr { th { "from" } td { (k.from) } }
                tr { th { "subject" } td { (k.subject) } }
                tr { th { "lists" } td { @for l in &k.lists { (list_name(l)) " " } } }
                tr { th { "excluded" } td { @for l in &k.exclude_lists { (list_name(l)) " " } } }
                tr { th { "rate" } td { (k.messages_per_second.map_or("no limit".to_owned(), |r| format!("{r}/s"))) } }
                tr { th { "send at" } td { (k.send_at.clone().unwrap_or_else(|| "at once".into())) } }
                tr { th { "started" } td { (k.started_at.clone().unwrap_or_default()) } }
                tr { th { "finished" } td { (k.finished_at.clone().unwrap_or_default()) } }
            }
            div.actions {
                @if k.state == "draft" {
                    a href=(format!("/campaigns/{}/edit", k.id)) id="edit" { "Edit draft" } " "
                }
                @for a in [Action::Start, Action::Pause, Action::Resume, Action::Cancel] {
                    form.inline method="post" action=(format!("/campaigns/{}/action", k.id)) {
                        (csrf_field(&c))
                        input type="hidden" name="action" value=(a.as_str());
                        button type="submit" id=(format!("action-{}", a.as_str())) { (a.as_str()) }
                    }
                    " "
                }
            }
            h2 { "Counts" }
            div.cards {
                @for (name, v) in n.pairs() {
                    div.card { div.n data-count=(name) id=(format!("count-{name}")) { (v) } div.k { (name) } }
                }
            }
            h2 { "Delivery" }
            div data-chart id="campaign-chart" { (PreEscaped(svg)) }
            h2 { "Top links" }
            table {
                tr { th { "link" } th { "clicks" } th { "unique clickers" } }
                @for (url, clicks, unique) in &links { tr { td { (url) } td.num { (clicks) } td.num { (unique) } } }
                @if links.is_empty() { tr { td colspan="3" { "no links tracked yet" } } }
            }
            h2 { "Bounce reasons" }
            table {
                tr { th { "class" } th { "status" } th { "diagnostic" } th { "bounces" } }
                @for (class, status, text, count) in &bounces { tr { td { (class) } td { (status) } td { (text) } td.num { (count) } } }
                @if bounces.is_empty() { tr { td colspan="4" { "none" } } }
            }
            h2 { "Unsubscribes" }
            p { span data-count="unsubscribed" { (n.unsubscribed) } " memberships ended by this campaign's unsubscribe requests." }
        },
    ))
}

async fn act(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted,
) -> Result<Response, PageError> {
    let action = match posted.required("action", 16)?.as_str() {
        "start" => Action::Start,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        _ => return Err(PageError::bad("action: start, pause, resume or cancel")),
    };
    let mut db = state.pool.get().await?;
    match store::apply(
        &mut db,
        Some(posted.console.account.id),
        id,
        action,
        Utc::now(),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!("/campaigns/{id}"))),
        Err(ActionError::NotFound(_)) => Err(not_found(id)),
        Err(e @ ActionError::Conflict { .. }) => {
            Err(PageError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(ActionError::Db(e)) => Err(e.into()),
    }
}

async fn live(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<i64>,
) -> Result<Json<Value>, PageError> {
    let mut db = state.pool.get().await?;
    let k = own(&mut db, &c, id).await?;
    let n = store::counts(&mut db, &k).await?;
    let svg = chart(&mut db, &c, &k).await?;
    let mut counts = counts_json(&n);
    counts.insert("state".into(), json!(k.state));
    Ok(Json(json!({ "counts": counts, "svg": svg })))
}
