//! `/`: the dashboard: relay nodes online or offline with their last heartbeat,
//! the queue by state, deliveries per minute over the last hour (a chart), and
//! bounces by class; `/dashboard/live` gives the counts and chart as JSON.
//!
//! Owns: the page, the node liveness rule shown (a heartbeat within three of the
//! node's intervals), and two aggregate reads of its own (deliveries per minute,
//! bounces by class).
//! Must not: read the queue's rows one by one, or show any account's addresses:
//! the dashboard shows relay-wide aggregates only.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Duration, Timelike, Utc};
use maud::{PreEscaped, html};
use serde_json::{Map, Value, json};

use super::charts::Chart;
use super::session::Console;
use super::{ConsoleState, PageError, PageResult, page};
use crate::db::{Db, DbError, Val};
use crate::queue::{Node, ts};
use crate::web::AppState;

/// Minutes the deliveries chart covers.
const CHART_MINUTES: i64 = 60;
/// How often the script refreshes the dashboard.
const DASHBOARD_REFRESH_MS: u64 = 5_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/live", get(live))
}

/// Delivered attempts per minute since `since`: ("YYYY-MM-DD HH:MM", count).
async fn deliveries_per_minute(
    db: &mut Db,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, DbError> {
    // The stored text's first 16 characters are the minute, in both dialects.
    let minute = format!("SUBSTR({}, 1, 16)", db.as_text("at"));
    Ok(db
        .query(
            &format!(
                "SELECT {minute}, COUNT(*) FROM outbound_log \
                 WHERE outcome = 'delivered' AND at >= ? GROUP BY 1 ORDER BY 1"
            ),
            vec![ts(since).into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((r.first().and_then(Val::text)?, r.get(1).and_then(Val::int)?)))
        .collect())
}

/// Bounces recorded by class (hard, soft, policy).
async fn bounces_by_class(db: &mut Db) -> Result<Vec<(String, i64)>, DbError> {
    Ok(db
        .query(
            "SELECT class, COUNT(*) FROM outbound_bounces GROUP BY class ORDER BY class",
            vec![],
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((r.first().and_then(Val::text)?, r.get(1).and_then(Val::int)?)))
        .collect())
}

/// One point per minute of the last hour, zeros included (a gap is a fact).
fn minute_points(rows: &[(String, i64)], now: DateTime<Utc>) -> Vec<(String, f64)> {
    let end = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    (0..CHART_MINUTES)
        .rev()
        .map(|back| {
            let t = end - Duration::minutes(back);
            let key = t.format("%Y-%m-%d %H:%M").to_string();
            let n = rows.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n);
            (t.format("%H:%M").to_string(), n as f64)
        })
        .collect()
}

fn chart_svg(points: &[(String, f64)]) -> String {
    Chart {
        title: "Deliveries per minute, last hour (UTC)",
        x_label: "minute",
        y_label: "delivered",
        points,
    }
    .svg()
}

fn online(n: &Node, now: DateTime<Utc>) -> bool {
    n.stopped_at.is_none()
        && n.heartbeat_at
            .is_some_and(|h| now - h < Duration::seconds(n.heartbeat_secs.max(1) * 3))
}

struct Data {
    nodes: Vec<Node>,
    by_state: Vec<(String, i64)>,
    bounces: Vec<(String, i64)>,
    points: Vec<(String, f64)>,
}

async fn data(state: &AppState, cs: &ConsoleState) -> Result<Data, PageError> {
    let now = Utc::now();
    let (nodes, stats) = {
        let mut q = cs.queue(state).await?;
        (q.nodes().await?, q.stats(now).await?)
    };
    let mut db = state.pool.get().await?;
    let rows = deliveries_per_minute(&mut db, now - Duration::minutes(CHART_MINUTES)).await?;
    Ok(Data {
        nodes,
        by_state: stats.by_state,
        bounces: bounces_by_class(&mut db).await?,
        points: minute_points(&rows, now),
    })
}

async fn index(
    State(state): State<AppState>,
    Extension(cs): Extension<Arc<ConsoleState>>,
    c: Console,
) -> PageResult {
    let d = data(&state, &cs).await?;
    let now = Utc::now();
    let paused = {
        let mut db = state.pool.get().await?;
        crate::accounts::status(&mut db, c.account.id, now)
            .await?
            .paused_reason
    };
    Ok(page(
        Some(&c),
        "Dashboard",
        html! {
            h1 { "Dashboard" }
            @if let Some(reason) = &paused {
                p.box id="account-paused" { strong { "This account is paused: " } (reason) ". An admin lifts it (" code { "outbound account resume" } ")." }
            }
            // Slower than a campaign's page: `Queue::stats` also totals the whole
            // delivery log, which grows without bound.
            div data-live-url="/dashboard/live" data-live-every-ms=(DASHBOARD_REFRESH_MS) {}
            h2 { "Relay nodes" }
            @if d.nodes.is_empty() { p { "No relay node has started yet." } }
            @else {
                table {
                    tr { th { "node" } th { "host" } th { "state" } th { "last heartbeat" } }
                    @for n in &d.nodes {
                        tr {
                            td { (n.node_id) } td { (n.hostname) }
                            td { @if online(n, now) { span.online { "online" } } @else { span.offline { "offline" } } }
                            td { (n.heartbeat_at.map_or("never".to_owned(), |h| format!("{} ({}s ago)", h.format("%Y-%m-%d %H:%M:%S"), (now - h).num_seconds()))) }
                        }
                    }
                }
            }
            h2 { "Queue by state" }
            div.cards {
                @for (s, n) in &d.by_state {
                    div.card { div.n data-count=(format!("state.{s}")) { (n) } div.k { (s) } }
                }
                @if d.by_state.is_empty() { p { "The queue is empty." } }
            }
            h2 { "Deliveries" }
            div data-chart { (PreEscaped(chart_svg(&d.points))) }
            h2 { "Bounces by class" }
            table {
                tr { th { "class" } th { "bounces" } }
                @for (class, n) in &d.bounces { tr { td { (class) } td.num { (n) } } }
                @if d.bounces.is_empty() { tr { td colspan="2" { "none" } } }
            }
        },
    ))
}

async fn live(
    State(state): State<AppState>,
    Extension(cs): Extension<Arc<ConsoleState>>,
    _c: Console,
) -> Result<Json<Value>, PageError> {
    let d = data(&state, &cs).await?;
    let counts: Map<String, Value> = d
        .by_state
        .iter()
        .map(|(s, n)| (format!("state.{s}"), json!(n)))
        .collect();
    Ok(Json(
        json!({ "counts": counts, "svg": chart_svg(&d.points) }),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_hour_has_a_point_per_minute_with_zeros() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T10:30:40Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = minute_points(&[("2026-01-02 10:29".into(), 7)], now);
        assert_eq!(p.len(), 60);
        assert_eq!(p.last().unwrap(), &("10:30".to_owned(), 0.0));
        assert_eq!(p[58], ("10:29".to_owned(), 7.0));
        assert_eq!(p[0].0, "09:31");
    }
}
