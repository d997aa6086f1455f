//! The JSON routes and the event stream.
//!
//! Every handler takes [`Access`] first (token or rate limit), checks the
//! address (public mode: one of `server.accept_domains`), and answers a message
//! of another mailbox, or a wrong id, with the same 404 as a missing one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::AppState;
use super::access::{Access, StreamPermit};
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use super::events::{ArrivalRef, Subscription};
use super::message::{
    MessageRef, content_disposition, item_json, message_json, normalize_address, part_type,
    served_type,
};
use crate::config::HttpAccess;
use crate::store::read::{MailItem, StoredMail};

/// Messages per page at most, and without `limit`.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 50;
/// Recent arrivals a stream remembers to drop the second copy (committer + Redis).
const SEEN_ARRIVALS: usize = 256;
/// Comment lines that keep idle streams (and proxies) from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// What raw messages and parts are served with: a sandbox, should a browser
/// render them anyway.
pub const SANDBOX_CSP: &str = "sandbox; default-src 'none'";

/// The mailbox in the path, normalised, and allowed in this mode.
pub fn mailbox(state: &AppState, address: &str) -> ApiResult<String> {
    let (address, domain) =
        normalize_address(address).map_err(|e| ApiError::field("address", e))?;
    if state.config.access == HttpAccess::Public && !state.domains.accepts(&domain) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("address: {domain} is not a domain of this server"),
        ));
    }
    Ok(address)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    _access: Access,
    State(state): State<AppState>,
    ApiPath(address): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let address = mailbox(&state, &address)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let r = MessageRef::parse(text).map_err(|e| ApiError::field("after", e))?;
            if !r.names_recipient(&address) {
                return Err(ApiError::field("after", "not a message of this mailbox"));
            }
            Some(r.hash)
        }
    };
    let items = state
        .reader
        .list(&address, after.as_deref(), limit)
        .await?
        .ok_or_else(|| ApiError::field("after", "not a message of this mailbox"))?;
    let next = (items.len() == limit)
        .then(|| items.last().map(super::message::message_id))
        .flatten();
    Ok(Json(json!({
        "mailbox": address,
        "messages": items.iter().map(item_json).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// The row the id names, or 404.
async fn load(state: &AppState, id: &str) -> ApiResult<StoredMail> {
    let r = MessageRef::parse(id).map_err(|e| ApiError::field("id", e))?;
    let rows = state.reader.items_of(&r.hash).await?;
    let Some(row) = rows.iter().find(|i| r.names(i)) else {
        return Err(ApiError::not_found("message"));
    };
    match state.reader.get(row.mail_id).await? {
        Some(m) if r.names(&m.item) => Ok(m),
        _ => Err(ApiError::not_found("message")),
    }
}

fn body_of(m: &StoredMail) -> ApiResult<&[u8]> {
    m.mail.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::GONE,
            "message: its body was kept in Redis and has expired",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    /// `images=1`: keep remote image sources in the HTML.
    images: Option<u8>,
}

pub async fn message(
    _access: Access,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let m = load(&state, &id).await?;
    let raw = body_of(&m)?;
    let mut item = m.item.clone();
    if !item.seen {
        state.reader.mark_seen(item.mail_id).await?;
        item.seen = true;
    }
    let images = q.images.unwrap_or(0) == 1;
    let mut out = message_json(&item, raw, images);
    out["mailbox"] = json!(item.recipient);
    Ok(Json(out))
}

pub async fn raw(
    _access: Access,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let m = load(&state, &id).await?;
    let raw = body_of(&m)?.to_vec();
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/rfc822"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(SANDBOX_CSP),
            ),
        ],
        Body::from(raw),
    )
        .into_response())
}

pub async fn part(
    _access: Access,
    State(state): State<AppState>,
    ApiPath((id, part)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let index: u32 = part
        .parse()
        .map_err(|_| ApiError::field("part", "not an attachment number"))?;
    let m = load(&state, &id).await?;
    let raw = body_of(&m)?;
    let parsed = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or_else(|| ApiError::not_found("part"))?;
    let p = parsed
        .attachment(index)
        .ok_or_else(|| ApiError::not_found("part"))?;
    let ctype = served_type(&part_type(p));
    let disposition = content_disposition(mail_parser::MimeHeaders::attachment_name(p));
    let mut r = Body::from(p.contents().to_vec()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ctype)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX_CSP),
    );
    Ok(r)
}

pub async fn delete(
    _access: Access,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let m = load(&state, &id).await?;
    state.reader.delete(&m.item).await?;
    Ok(Json(json!({ "deleted": id })))
}

pub async fn not_found(_access: Access) -> ApiError {
    ApiError::not_found("route")
}

/// `text/event-stream`: `ready` once subscribed, then `message` (the list entry,
/// id = message id) per arrival, `resync` when this stream fell behind and lost
/// events (list again), comments as keep-alive. Under load the events already
/// queued go out in one write (up to [`EVENTS_PER_WRITE`]).
pub async fn events(
    access: Access,
    State(state): State<AppState>,
    ApiPath(address): ApiPath<String>,
) -> ApiResult<Response> {
    let address = mailbox(&state, &address)?;
    let permit = state.streams.acquire(access.ip)?;
    let sub = state.arrivals.subscribe(&address);
    let stream = futures_util::stream::unfold(
        StreamState {
            state,
            address,
            sub,
            recent: VecDeque::with_capacity(SEEN_ARRIVALS),
            ready: false,
            _permit: permit,
        },
        |mut s| async move {
            let chunk = s.next_chunk().await?;
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), s))
        },
    );
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// Events written at once when several are queued.
const EVENTS_PER_WRITE: usize = 256;

struct StreamState {
    state: AppState,
    address: String,
    sub: Subscription,
    recent: VecDeque<ArrivalRef>,
    ready: bool,
    _permit: StreamPermit,
}

impl StreamState {
    /// The next bytes of the stream; `None` ends it.
    async fn next_chunk(&mut self) -> Option<String> {
        if !self.ready {
            self.ready = true;
            return Some("event: ready\ndata: {}\n\n".to_owned());
        }
        let mut out = String::new();
        loop {
            let first = match tokio::time::timeout(KEEPALIVE, self.sub.rx.recv()).await {
                Err(_) => return Some(":\n\n".to_owned()),
                Ok(Err(RecvError::Closed)) => return None,
                Ok(r) => r,
            };
            self.add(first.map_err(|_| ()), &mut out).await;
            for _ in 1..EVENTS_PER_WRITE {
                match self.sub.rx.try_recv() {
                    Ok(a) => self.add(Ok(a), &mut out).await,
                    Err(TryRecvError::Lagged(_)) => self.add(Err(()), &mut out).await,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if !out.is_empty() {
                return Some(out);
            }
        }
    }

    /// Appends the event for one arrival (`Err`: events were lost, list again).
    async fn add(&mut self, arrival: Result<ArrivalRef, ()>, out: &mut String) {
        let Ok(arrival) = arrival else {
            write_event(out, "resync", None, &json!({ "reason": "lagged" }));
            return;
        };
        if self.recent.iter().any(|a| a.hash == arrival.hash) {
            return;
        }
        if self.recent.len() == SEEN_ARRIVALS {
            self.recent.pop_front();
        }
        self.recent.push_back(std::sync::Arc::clone(&arrival));
        let item = match &arrival.summary {
            // From the committer: everything the list shows, no query; formatted
            // once for every stream of this address.
            Some(sum) => {
                let text = arrival.formatted.get_or_init(|| {
                    let item = MailItem {
                        mail_id: 0,
                        hash: arrival.hash.clone(),
                        recipient: self.address.clone(),
                        date: sum.date.clone(),
                        from: sum.from.clone(),
                        subject: sum.subject.clone(),
                        size: sum.size,
                        has_attach: sum.has_attach,
                        seen: false,
                    };
                    let mut text = String::new();
                    let id = super::message::message_id(&item);
                    write_event(&mut text, "message", Some(&id), &item_json(&item));
                    text
                });
                out.push_str(text);
                return;
            }
            None => match self
                .state
                .reader
                .item_by_hash(&arrival.hash, &self.address)
                .await
            {
                Ok(Some(item)) => item,
                // Deleted already, or not visible here: nothing to show.
                Ok(None) => return,
                Err(_) => {
                    write_event(
                        out,
                        "resync",
                        None,
                        &json!({ "reason": "store unavailable" }),
                    );
                    return;
                }
            },
        };
        let id = super::message::message_id(&item);
        write_event(out, "message", Some(&id), &item_json(&item));
    }
}

/// One event in the `text/event-stream` format (JSON has no newlines).
fn write_event(out: &mut String, name: &str, id: Option<&str>, data: &serde_json::Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}
