//! `/api/v1/lists`: an account's lists and their subscribers.
//!
//! Owns: the routes and their JSON (request checks naming the field, response
//! shapes); what one request may carry ([`MAX_SUBSCRIBERS_PER_REQUEST`]).
//! Another account's list is a 404 like a list that does not exist.
//! Must not: hold SQL (`lists` does) or apply list rules itself (`lists::upsert`).
//!
//! - `POST /lists` `{"name","opt_in","sender"}` → 201 `{"id"}`; 409 for a name in
//!   use (`sender`: the From address of a double opt-in list's confirmations).
//! - `GET /lists` → `{"lists":[...]}`; `GET /lists/{id}` → the list with counts.
//! - `PATCH /lists/{id}` `{"name","sender"}` (either; `"sender": null` clears it) →
//!   the list; 409 for a name in use.
//! - `POST /lists/{id}/subscribers` `[{"email","name","attributes"}]` → `{"added",
//!   "updated","rejected":[{"email","error"}],"confirmations","confirmations_skipped"}`,
//!   in one transaction; on a double opt-in list each unconfirmed member is sent a
//!   confirmation (`confirm::add_members`), and a confirmation throttle passed is a
//!   429 with `Retry-After` (nothing stored, nothing queued).
//! - `DELETE /lists/{id}/subscribers/{email}` → `{"removed":true}`.

use axum::extract::State;
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Auth;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::db::Db;
use crate::lists::{self, List, ListError, ListUpdate, NewSubscriber, OptIn};

/// Subscribers one `POST .../subscribers` may carry: one transaction per request
/// must stay short (a few hundred ms), and larger loads belong in an import.
pub const MAX_SUBSCRIBERS_PER_REQUEST: usize = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lists", post(create).get(index))
        .route("/lists/{id}", get(show).patch(update))
        .route("/lists/{id}/subscribers", post(add_subscribers))
        .route("/lists/{id}/subscribers/{email}", delete(remove_subscriber))
}

/// The list `id` of `account_id`, or 404.
pub async fn own_list(db: &mut Db, account_id: i64, id: i64) -> ApiResult<List> {
    lists::get(db, account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("list {id}")))
}

fn list_json(list: &List) -> Value {
    json!({
        "id": list.id,
        "name": list.name,
        "opt_in": list.opt_in.as_str(),
        "sender": list.sender,
        "created_at": list.created_at,
    })
}

/// The body's object, refusing keys other than `known` (a misspelt key would
/// otherwise be silently ignored).
fn object<'a>(body: &'a Value, what: &str, known: &[&str]) -> ApiResult<&'a Map<String, Value>> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::field(what, "expected a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::field(unknown, "unknown field"));
    }
    Ok(object)
}

async fn create(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let object = object(&body, "body", &["name", "opt_in", "sender"])?;
    let name = match object.get("name") {
        None | Some(Value::Null) => return Err(ApiError::field("name", "missing")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::field("name", "expected a string")),
    };
    let opt_in = match object.get("opt_in") {
        None | Some(Value::Null) => OptIn::Single,
        Some(Value::String(s)) => OptIn::parse(s)
            .ok_or_else(|| ApiError::field("opt_in", "must be \"single\" or \"double\""))?,
        Some(_) => {
            return Err(ApiError::field(
                "opt_in",
                "must be \"single\" or \"double\"",
            ));
        }
    };
    let sender = sender_field(object.get("sender"))?;
    let mut db = state.pool.get().await?;
    match lists::create(&mut db, account.id, name, opt_in, sender.as_deref()).await {
        Ok(id) => Ok((StatusCode::CREATED, Json(json!({ "id": id })))),
        Err(ListError::BadName(why)) => Err(ApiError::field("name", why)),
        Err(e @ ListError::Exists(_)) => Err(ApiError::conflict(e.to_string())),
        Err(ListError::Db(e)) => Err(e.into()),
    }
}

/// A `sender` field: an address, or null for none.
fn sender_field(value: Option<&Value>) -> ApiResult<Option<String>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            lists::check_email(s).map_err(|why| ApiError::field("sender", why))?,
        )),
        Some(_) => Err(ApiError::field("sender", "expected a string or null")),
    }
}

async fn update(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let object = object(&body, "body", &["name", "sender"])?;
    if object.is_empty() {
        return Err(ApiError::field("body", "nothing to change (name, sender)"));
    }
    let name = match object.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::field("name", "expected a string")),
    };
    let change = ListUpdate {
        name,
        sender: match object.get("sender") {
            None => None,
            value => Some(sender_field(value)?),
        },
    };
    let mut db = state.pool.get().await?;
    match lists::update(&mut db, account.id, id, &change).await {
        Ok(Some(list)) => Ok(Json(list_json(&list))),
        Ok(None) => Err(ApiError::not_found(format!("list {id}"))),
        Err(ListError::BadName(why)) => Err(ApiError::field("name", why)),
        Err(e @ ListError::Exists(_)) => Err(ApiError::conflict(e.to_string())),
        Err(ListError::Db(e)) => Err(e.into()),
    }
}

async fn index(State(state): State<AppState>, Auth(account): Auth) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    let all = lists::all(&mut db, Some(account.id)).await?;
    Ok(Json(
        json!({ "lists": all.iter().map(list_json).collect::<Vec<_>>() }),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    let list = own_list(&mut db, account.id, id).await?;
    let counts = lists::member_counts(&mut db, list.id).await?;
    let mut out = list_json(&list);
    if let Some(o) = out.as_object_mut() {
        o.insert(
            "members".into(),
            json!({
                "unconfirmed": counts.unconfirmed,
                "confirmed": counts.confirmed,
                "unsubscribed": counts.unsubscribed,
            }),
        );
        o.insert("subscribers".into(), json!(counts.total()));
    }
    Ok(Json(out))
}

/// One item of the subscribers array, checked; Err is (email as given, why).
fn subscriber(item: &Value) -> Result<NewSubscriber, (String, String)> {
    let given_email = item
        .get("email")
        .and_then(Value::as_str)
        .map(|e| e.chars().take(lists::MAX_EMAIL_BYTES).collect::<String>())
        .unwrap_or_default();
    let fail = |why: String| Err((given_email.clone(), why));
    let Some(object) = item.as_object() else {
        return fail("expected a JSON object".into());
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "email" | "name" | "attributes"))
    {
        return fail(format!("{unknown}: unknown field"));
    }
    let email = match object.get("email") {
        None | Some(Value::Null) => return fail("email: missing".into()),
        Some(Value::String(s)) => match lists::check_email(s) {
            Ok(e) => e,
            Err(why) => return fail(format!("email: {why}")),
        },
        Some(_) => return fail("email: expected a string".into()),
    };
    let name = match object.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if let Err(why) = lists::check_subscriber_name(s) {
                return fail(format!("name: {why}"));
            }
            Some(s.clone())
        }
        Some(_) => return fail("name: expected a string".into()),
    };
    let attributes = match object.get("attributes") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            let serialized = v.to_string();
            if let Err(why) = lists::check_attributes(&serialized) {
                return fail(format!("attributes: {why}"));
            }
            Some(serialized)
        }
        Some(_) => return fail("attributes: expected a JSON object".into()),
    };
    Ok(NewSubscriber {
        email,
        name,
        attributes,
    })
}

/// A confirmation throttle passed: 429, the limit named, `Retry-After`.
pub fn throttled(e: &crate::confirm::throttle::Exceeded) -> Response {
    let mut r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
    if let Ok(v) = HeaderValue::from_str(&e.retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn add_subscribers(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
    extensions: Extensions,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, Response> {
    add_subscribers_inner(state, account.id, id, &extensions, body).await
}

async fn add_subscribers_inner(
    state: AppState,
    account: i64,
    id: i64,
    extensions: &Extensions,
    body: Value,
) -> Result<Json<Value>, Response> {
    let e = |e: ApiError| e.into_response();
    let Value::Array(items) = body else {
        return Err(e(ApiError::field(
            "body",
            "expected a JSON array of subscribers",
        )));
    };
    if items.len() > MAX_SUBSCRIBERS_PER_REQUEST {
        return Err(e(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body: {} subscribers; at most {MAX_SUBSCRIBERS_PER_REQUEST} per request (use an import for more)",
                items.len()
            ),
        )));
    }
    let mut db = state.pool.get().await.map_err(|x| e(x.into()))?;
    let list = own_list(&mut db, account, id).await.map_err(e)?;
    let mut good = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for item in &items {
        match subscriber(item) {
            Ok(s) => good.push(s),
            Err((email, error)) => rejected.push(json!({ "email": email, "error": error })),
        }
    }
    let client = crate::console::session::client_ip(extensions);
    let done = match crate::confirm::add_members(
        &mut db,
        &state.cfg,
        &list,
        &good,
        client,
        chrono::Utc::now(),
    )
    .await
    {
        Ok(done) => done,
        Err(crate::confirm::AddError::Throttled(x)) => return Err(throttled(&x)),
        Err(crate::confirm::AddError::Db(x)) => return Err(e(x.into())),
    };
    Ok(Json(json!({
        "added": done.upserted.added,
        "updated": done.upserted.updated,
        "rejected": rejected,
        "confirmations": done.confirmations,
        "confirmations_skipped": done.skipped,
    })))
}

async fn remove_subscriber(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath((id, email)): ApiPath<(i64, String)>,
) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    let list = own_list(&mut db, account.id, id).await?;
    if lists::remove_member(&mut db, &list, &email).await? {
        Ok(Json(json!({ "removed": true })))
    } else {
        Err(ApiError::not_found(format!(
            "subscriber {email:?} on list {id}"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_item_is_checked_field_by_field() {
        let ok =
            subscriber(&json!({ "email": " a@b.test ", "name": "A", "attributes": { "k": 1 } }))
                .unwrap();
        assert_eq!(ok.email, "a@b.test");
        assert_eq!(ok.name.as_deref(), Some("A"));
        assert_eq!(ok.attributes.as_deref(), Some(r#"{"k":1}"#));
        let bare = subscriber(&json!({ "email": "a@b.test", "name": null })).unwrap();
        assert_eq!((bare.name, bare.attributes), (None, None));
        for (item, email, error) in [
            (json!({}), "", "email: missing"),
            (json!({ "email": 1 }), "", "email: expected a string"),
            (
                json!({ "email": "x" }),
                "x",
                "email: not an email address (local@domain)",
            ),
            (
                json!({ "email": "a@b.test", "attributes": "k=v" }),
                "a@b.test",
                "attributes: expected a JSON object",
            ),
            (
                json!({ "email": "a@b.test", "extra": 1 }),
                "a@b.test",
                "extra: unknown field",
            ),
            (json!(null), "", "expected a JSON object"),
        ] {
            assert_eq!(
                subscriber(&item).unwrap_err(),
                (email.to_owned(), error.to_owned()),
                "{item}"
            );
        }
    }
}
