//! `/api/v1/account`: the caller's own account, its sending limits and whether
//! (and why) it is paused; an admin lifts another account's pause.
//!
//! - `GET /account` → `{"id","name","is_admin","send_rate","daily_quota",
//!   "sent_today","quota_left","state","paused_reason","paused_at","window":{"since",
//!   "sent","bounced","complained","bounce_rate","complaint_rate"},"complaints"}`.
//! - `POST /accounts/{name}/resume` (admin only) → `{"resumed":[campaign ids]}`;
//!   409 when that account is not paused.
//!
//! Owns: the JSON. Must not: hold SQL (`accounts` does).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Auth;
use super::error::{ApiError, ApiPath, ApiResult};
use crate::accounts;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account", get(show))
        .route("/accounts/{name}/resume", post(resume))
}

async fn show(State(state): State<AppState>, Auth(account): Auth) -> ApiResult<Json<Value>> {
    let now = Utc::now();
    let mut db = state.pool.get().await?;
    let s = accounts::status(&mut db, account.id, now).await?;
    let window = chrono::Duration::from_std(state.cfg.campaigns.pause.window).unwrap_or_default();
    let since = s.resumed_at.map_or(now - window, |r| r.max(now - window));
    let sample = accounts::sample(&mut db, account.id, since).await?;
    // All-time: the report counts only (what was ever sent is not shown, and
    // counting it would read every queue row the account ever had).
    let (bounces, complaints) =
        accounts::reports(&mut db, account.id, chrono::DateTime::UNIX_EPOCH).await?;
    let rfc = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    Ok(Json(json!({
        "id": account.id,
        "name": account.name,
        "is_admin": account.is_admin,
        "send_rate": s.send_rate,
        "daily_quota": s.daily_quota,
        "sent_today": s.sent_today,
        "quota_left": s.daily_quota.map(|q| (q - s.sent_today).max(0)),
        "state": if s.paused_reason.is_some() { "paused" } else { "active" },
        "paused_reason": s.paused_reason,
        "paused_at": s.paused_at.map(rfc),
        "window": {
            "since": rfc(since),
            "sent": sample.sent,
            "bounced": sample.bounced,
            "complained": sample.complained,
            "bounce_rate": sample.bounce_rate(),
            "complaint_rate": sample.complaint_rate(),
        },
        "complaints": complaints,
        "bounces": bounces,
    })))
}

async fn resume(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    if !account.is_admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin account may lift a pause",
        ));
    }
    let mut db = state.pool.get().await?;
    let target = accounts::by_name(&mut db, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {name:?}")))?;
    match accounts::resume(&mut db, target.id, Utc::now()).await? {
        Some(resumed) => Ok(Json(json!({ "resumed": resumed }))),
        None => Err(ApiError::conflict(format!(
            "account {name:?} is not paused"
        ))),
    }
}
