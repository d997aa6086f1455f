//! `/api/v1/campaigns`: create a campaign, move it through its states, read it
//! with its counts (tracking's too), its delivery timeline and its links with
//! their clicks.
//!
//! Owns: the routes and their JSON shapes (a public contract: paths and field
//! names do not change), mapping the store's outcomes to statuses: 400 naming the
//! field, 404 for another account's campaign or an unknown id, 409 naming the
//! state a transition is not allowed from.
//! Must not: hold SQL (`campaign::store` does) or decide transitions
//! (`campaign::transition` does).

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Auth;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::campaign::store::{self, ActionError, CreateError};
use crate::campaign::{self, Action, NewCampaign};
use crate::tracking::store as tracking_store;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/campaigns", post(create).get(list))
        .route("/campaigns/{id}", get(show))
        .route("/campaigns/{id}/start", post(start))
        .route("/campaigns/{id}/pause", post(pause))
        .route("/campaigns/{id}/resume", post(resume))
        .route("/campaigns/{id}/cancel", post(cancel))
        .route("/campaigns/{id}/timeline", get(timeline))
        .route("/campaigns/{id}/links", get(links))
}

fn not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("campaign {id}"))
}

async fn create(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    body: Result<ApiJson<NewCampaign>, ApiError>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // A field of the wrong type is a bad request like any other bad field (axum
    // says 422 for it; this API says 400 for every field at fault).
    let ApiJson(raw) = body.map_err(|mut e| {
        if e.status == StatusCode::UNPROCESSABLE_ENTITY {
            e.status = StatusCode::BAD_REQUEST;
        }
        e
    })?;
    let valid = campaign::validate(raw).map_err(|e| ApiError::field(e.field, e.why))?;
    let mut db = state.pool.get().await?;
    match store::create(&mut db, account.id, &valid).await {
        Ok(id) => Ok((StatusCode::CREATED, Json(json!({ "id": id })))),
        Err(CreateError::Field(e)) => Err(ApiError::field(e.field, e.why)),
        Err(CreateError::Db(e)) => Err(e.into()),
    }
}

async fn list(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    let campaigns = store::list(&mut db, account.id).await?;
    Ok(Json(json!({ "campaigns": campaigns })))
}

async fn show(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    let c = store::get(&mut db, Some(account.id), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let counts = store::counts(&mut db, &c).await?;
    let tracked = tracking_store::counts(&mut db, c.id).await?;
    let (domains, track_opens) = match tracking_store::campaign_links(&mut db, c.id).await? {
        Some(l) => (l.domains, l.track_opens),
        None => (Vec::new(), false),
    };
    let mut body = serde_json::to_value(&c).map_err(|e| ApiError::unavailable(&e))?;
    if let Some(obj) = body.as_object_mut() {
        for extra in [serde_json::to_value(counts), serde_json::to_value(tracked)] {
            if let Ok(Value::Object(n)) = extra {
                obj.extend(n);
            }
        }
        obj.insert("tracking_domains".into(), json!(domains));
        obj.insert("track_opens".into(), json!(track_opens));
    }
    Ok(Json(body))
}

async fn act(state: &AppState, account: i64, id: i64, action: Action) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    match store::apply(&mut db, Some(account), id, action, Utc::now()).await {
        Ok(s) => Ok(Json(json!({ "id": id, "state": s.as_str() }))),
        Err(ActionError::NotFound(_)) => Err(not_found(id)),
        Err(e @ ActionError::Conflict { .. }) => Err(ApiError::conflict(format!("state: {e}"))),
        Err(ActionError::Db(e)) => Err(e.into()),
    }
}

async fn start(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    act(&state, account.id, id, Action::Start).await
}

async fn pause(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    act(&state, account.id, id, Action::Pause).await
}

async fn resume(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    act(&state, account.id, id, Action::Resume).await
}

async fn cancel(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    act(&state, account.id, id, Action::Cancel).await
}

/// The campaign's links with their clicks, most clicked first ("top links").
async fn links(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    store::get(&mut db, Some(account.id), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let links = tracking_store::link_counts(&mut db, id).await?;
    Ok(Json(json!({ "links": links })))
}

/// `?step=` as text, so that a bad one gets our message naming it.
#[derive(Debug, Deserialize)]
struct TimelineQuery {
    step: Option<String>,
}

async fn timeline(
    state: axum::extract::State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> ApiResult<Json<Value>> {
    let step =
        campaign::parse_step(q.step.as_deref()).map_err(|e| ApiError::field(e.field, e.why))?;
    let mut db = state.pool.get().await?;
    let points = store::timeline(&mut db, account.id, id, step)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(json!({ "step": step, "points": points })))
}
