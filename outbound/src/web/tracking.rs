//! The recipients' side of `outbound web`, at the root of every host name (the
//! tracking domains point here): `GET /l/<token>` (302 to the link, the click
//! recorded), `GET /o/<token>.gif` (the open pixel, for campaigns with
//! `track_opens`), `GET|POST /u/<token>` (the unsubscribe page and the RFC 8058
//! one-click POST).
//!
//! Owns: the link-URL cache (a database read only on a miss), the bounded
//! channel and the writer task that inserts clicks and opens in batches (the
//! redirect never waits for the database; a full channel drops the click and
//! counts it in a log line), and the HTML of the unsubscribe pages (escaped).
//! Must not: answer anything but 404 to a token that does not verify (and count
//! nothing for it), hold SQL (`tracking::store`), or duplicate the unsubscribe
//! (`queue::unsubscribe_member`, shared with mail unsubscribes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tokio::sync::mpsc;
use tracing::warn;

use crate::db_pool::DbPool;
use crate::tracking::links::escape_html;
use crate::tracking::store::{self, Event};
use crate::tracking::token::{Claim, MAX_TOKEN_CHARS, Signer};

/// Clicks and opens waiting for the writer; past it they are dropped (counted).
pub const EVENT_CHANNEL: usize = 50_000;
/// The most events one transaction writes.
pub const BATCH_EVENTS: usize = 500;
/// How long the writer gathers a batch after its first event.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// The longest user agent kept (bytes, cut at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// Link URLs cached; past it the cache starts over.
pub const MAX_CACHED_LINKS: usize = 100_000;
/// Campaigns whose `track_opens` is cached.
pub const MAX_CACHED_CAMPAIGNS: usize = 10_000;
/// How often dropped events are reported.
const DROP_REPORT: Duration = Duration::from_secs(10);

/// A 1×1 transparent GIF (GIF89a).
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What the tracking routes share.
pub struct Tracker {
    /// None without `[tracking] key`: every token path is 404.
    signer: Option<Signer>,
    pool: Arc<DbPool>,
    links: Mutex<HashMap<(i64, i64), Arc<str>>>,
    opens: Mutex<HashMap<i64, bool>>,
    /// To the writer task; bounded: the request path only ever `try_send`s.
    events: mpsc::Sender<Event>,
    /// Events dropped because the channel was full, since the last report.
    dropped: Arc<AtomicU64>,
}

impl Tracker {
    /// The tracker and its writer (ends, after a last flush, when every sender
    /// is dropped; the receiver then hears it).
    ///
    /// The writer runs on a thread (and runtime) of its own: SQLite calls block
    /// their thread for the commit's fsync (≈ 3 ms here), and `outbound web`'s
    /// runtime is single-threaded, so a writer task there stalled every redirect
    /// behind each commit (p99 6.5 ms at 2,000/s; see bench/RESULTS.md "Clicks").
    pub fn start(
        pool: Arc<DbPool>,
        key: Option<&[u8]>,
    ) -> std::io::Result<(Arc<Self>, tokio::sync::oneshot::Receiver<()>)> {
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL);
        let dropped = Arc::new(AtomicU64::new(0));
        let (done_tx, writer) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (writer_pool, writer_dropped) = (pool.clone(), dropped.clone());
        std::thread::Builder::new()
            .name("click-writer".into())
            .spawn(move || {
                runtime.block_on(write_events(writer_pool, rx, writer_dropped));
                let _ = done_tx.send(());
            })?;
        Ok((
            Arc::new(Self {
                signer: key.map(Signer::new),
                pool,
                links: Mutex::new(HashMap::new()),
                opens: Mutex::new(HashMap::new()),
                events: tx,
                dropped,
            }),
            writer,
        ))
    }

    fn verify(&self, token: &str) -> Option<Claim> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        self.signer.as_ref()?.verify(token).ok()
    }

    fn record(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn link_url(&self, campaign: i64, link: i64) -> Result<Option<Arc<str>>, Response> {
        if let Some(url) = self
            .links
            .lock()
            .ok()
            .and_then(|m| m.get(&(campaign, link)).cloned())
        {
            return Ok(Some(url));
        }
        let mut db = self.pool.get().await.map_err(|_| unavailable())?;
        let url = store::link_url(&mut db, campaign, link)
            .await
            .map_err(|e| {
                warn!(error = %e, "link lookup failed");
                unavailable()
            })?
            .map(Arc::<str>::from);
        if let (Some(url), Ok(mut m)) = (&url, self.links.lock()) {
            if m.len() >= MAX_CACHED_LINKS {
                m.clear();
            }
            m.insert((campaign, link), url.clone());
        }
        Ok(url)
    }

    async fn track_opens(&self, campaign: i64) -> Result<bool, Response> {
        if let Some(on) = self
            .opens
            .lock()
            .ok()
            .and_then(|m| m.get(&campaign).copied())
        {
            return Ok(on);
        }
        let mut db = self.pool.get().await.map_err(|_| unavailable())?;
        let on = store::track_opens(&mut db, campaign)
            .await
            .map_err(|_| unavailable())?
            .unwrap_or(false);
        if let Ok(mut m) = self.opens.lock() {
            if m.len() >= MAX_CACHED_CAMPAIGNS {
                m.clear();
            }
            m.insert(campaign, on);
        }
        Ok(on)
    }
}

pub(crate) fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response()
}

pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The client's address and user agent (at most [`MAX_USER_AGENT_BYTES`]).
fn client(req: &Request) -> (Option<String>, Option<String>) {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|mut ua| {
            if ua.len() > MAX_USER_AGENT_BYTES {
                let mut cut = MAX_USER_AGENT_BYTES;
                while !ua.is_char_boundary(cut) {
                    cut -= 1;
                }
                ua.truncate(cut);
            }
            ua
        });
    (ip, ua)
}

/// The routes, with their own state, for `web::router` to merge at the root.
pub fn routes<S: Clone + Send + Sync + 'static>(tracker: Arc<Tracker>) -> Router<S> {
    Router::new()
        .route("/l/{token}", get(click))
        .route("/o/{file}", get(open))
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe))
        .with_state(tracker)
}

async fn click(State(t): State<Arc<Tracker>>, Path(token): Path<String>, req: Request) -> Response {
    let Some(Claim::Link {
        campaign,
        link,
        subscriber,
    }) = t.verify(&token)
    else {
        return not_found();
    };
    let url = match t.link_url(campaign, link).await {
        Ok(Some(url)) => url,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let Ok(location) = HeaderValue::from_str(&url) else {
        return not_found();
    };
    let (ip, user_agent) = client(&req);
    t.record(Event {
        at: Utc::now(),
        campaign,
        link: Some(link),
        subscriber,
        ip,
        user_agent,
    });
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

async fn open(State(t): State<Arc<Tracker>>, Path(file): Path<String>, req: Request) -> Response {
    let Some(Claim::Open {
        campaign,
        subscriber,
    }) = file.strip_suffix(".gif").and_then(|token| t.verify(token))
    else {
        return not_found();
    };
    match t.track_opens(campaign).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(r) => return r,
    }
    let (ip, user_agent) = client(&req);
    t.record(Event {
        at: Utc::now(),
        campaign,
        link: None,
        subscriber,
        ip,
        user_agent,
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        PIXEL_GIF,
    )
        .into_response()
}

pub(crate) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}\
         button{{font-size:1em;padding:.5em 1em}}</style></head><body>{body}</body></html>\n"
    ))
}

async fn unsubscribe_page(State(t): State<Arc<Tracker>>, Path(token): Path<String>) -> Response {
    let Some(Claim::Unsubscribe {
        campaign,
        subscriber,
    }) = t.verify(&token)
    else {
        return not_found();
    };
    let Ok(mut db) = t.pool.get().await else {
        return unavailable();
    };
    let (email, lists) = match store::unsubscribe_info(&mut db, campaign, subscriber).await {
        Ok(Some(info)) => info,
        Ok(None) => return not_found(),
        Err(_) => return unavailable(),
    };
    let lists = lists
        .iter()
        .map(|l| format!("<li>{}</li>", escape_html(l)))
        .collect::<String>();
    // The form posts to this very URL (relative: whichever tracking host served it).
    page(
        "Unsubscribe",
        &format!(
            "<h1>Unsubscribe</h1><p>Stop mail to <strong>{}</strong> from:</p><ul>{lists}</ul>\
             <form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
             value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>",
            escape_html(&email),
            escape_html(&token),
        ),
    )
    .into_response()
}

/// RFC 8058 §3.1: the POST body is `List-Unsubscribe=One-Click`; the page's form
/// sends the same. Any verified POST unsubscribes (a mail client may send other
/// form encodings), at once and idempotently.
async fn unsubscribe(State(t): State<Arc<Tracker>>, Path(token): Path<String>) -> Response {
    let Some(Claim::Unsubscribe {
        campaign,
        subscriber,
    }) = t.verify(&token)
    else {
        return not_found();
    };
    let Ok(mut db) = t.pool.get().await else {
        return unavailable();
    };
    match crate::queue::unsubscribe_member(&mut db, campaign, subscriber, Utc::now()).await {
        Ok(_) => page(
            "Unsubscribed",
            "<h1>You are unsubscribed</h1><p>You will not get these mails any more.</p>",
        )
        .into_response(),
        Err(e) => {
            warn!(error = %e, "unsubscribe failed");
            unavailable()
        }
    }
}

/// The writer task: gathers events for up to [`BATCH_WINDOW`] or
/// [`BATCH_EVENTS`], writes them in one transaction; reports drops.
async fn write_events(pool: Arc<DbPool>, mut rx: mpsc::Receiver<Event>, dropped: Arc<AtomicU64>) {
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH_EVENTS);
    let mut last_report = tokio::time::Instant::now();
    loop {
        let Some(first) = rx.recv().await else {
            break;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_EVENTS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        flush(&pool, &mut batch).await;
        if last_report.elapsed() >= DROP_REPORT {
            report_drops(&dropped);
            last_report = tokio::time::Instant::now();
        }
    }
    flush(&pool, &mut batch).await;
    report_drops(&dropped);
}

fn report_drops(dropped: &AtomicU64) {
    let n = dropped.swap(0, Ordering::Relaxed);
    if n > 0 {
        warn!(
            dropped = n,
            "clicks and opens dropped: the writer's channel was full"
        );
    }
}

async fn flush(pool: &DbPool, batch: &mut Vec<Event>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    let result = match pool.get().await {
        Ok(mut db) => store::insert_events(&mut db, batch).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tracing::debug!(events = n, "clicks and opens written"),
        // Lost, not retried forever: a click log is not worth blocking for.
        Err(e) => warn!(error = %e, events = n, "clicks and opens not written"),
    }
    batch.clear();
}
