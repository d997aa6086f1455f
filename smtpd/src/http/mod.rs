//! `smtpd --http`: temporary mailboxes over HTTP.
//!
//! Owns: the HTTP server (served by `http_serve`: the cap on open connections,
//! `http.max_connections`, and the request-head read timeout), on its own thread
//! with its own tokio runtime (two workers), so that nothing it does runs on a
//! reactor or the committer; the route table; the Redis subscription that brings other nodes' arrivals. Reads the store
//! through its own connections ([`crate::store::read`]), never the committer's, and
//! never takes SQLite's write lock for reading.
//!
//! - `access`: bearer token or public mode with per-IP rates; stream caps.
//! - `api`: the JSON routes and the event stream.
//! - `error`: how a store failure reads (the JSON error shape and extractors are
//!   `http_serve`'s, shared with `outbound web`).
//! - [`events`]: the in-process fan-out of committed messages.
//! - `message`: ids, parsing, sanitising, part headers.
//! - `page`: the inbox page and its script.
//!
//! Routes (all under the access check):
//!
//! | route | handler |
//! | --- | --- |
//! | `GET /api/v1/mailboxes/{address}/messages?after={id}&limit=N` | `api::list` |
//! | `GET /api/v1/mailboxes/{address}/events` | `api::events` |
//! | `GET /api/v1/messages/{id}` | `api::message` |
//! | `GET /api/v1/messages/{id}/raw` | `api::raw` |
//! | `GET /api/v1/messages/{id}/parts/{part}` | `api::part` |
//! | `DELETE /api/v1/messages/{id}` | `api::delete` |
//! | `GET /inbox/{address}` | `page::inbox` |
//! | `GET /inbox/app.js`, `GET /inbox/app.css` | `page::script`, `page::style` |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::config::Http;
use crate::protocol::DomainPolicy;
use crate::store::cache::CacheConfig;
use crate::store::read::MailReader;
use mailstore::StoreUrl;

mod access;
mod api;
mod error;
pub mod events;
mod message;
mod page;

use access::{RateLimiter, StreamLimits};
use events::Arrivals;

/// How long a client has to send a whole request head (on a new connection, and
/// between requests on a kept-alive one) before its connection is closed: a
/// client that trickles or never finishes its headers must not hold one of the
/// `http.max_connections` slots. Event streams are not affected (their request
/// head is complete; the response is what lasts).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Worker threads of the HTTP runtime.
const HTTP_WORKERS: usize = 2;
/// No route takes a body; anything sent is refused beyond this.
const MAX_BODY_BYTES: usize = 1024;
/// Pause before resubscribing after the Redis subscription broke.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    config: Arc<Http>,
    reader: Arc<MailReader>,
    arrivals: Arc<Arrivals>,
    domains: Arc<DomainPolicy>,
    limiter: Arc<RateLimiter>,
    streams: Arc<StreamLimits>,
}

/// Everything `start` needs.
pub struct HttpSetup {
    pub config: Http,
    pub store: StoreUrl,
    pub cache: Option<CacheConfig>,
    pub domains: DomainPolicy,
    pub arrivals: Arc<Arrivals>,
}

/// Binds the listener (so a port in use fails the start), then serves on a thread
/// of its own until the process exits. Returns the bound address.
pub fn start(setup: HttpSetup) -> anyhow::Result<SocketAddr> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(HTTP_WORKERS)
        .thread_name("http")
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(setup.config.listen))?;
    let bound = listener.local_addr()?;
    let limits = http_serve::Limits::new(setup.config.max_connections)
        .with_max_connections_per_ip(setup.config.max_connections_per_ip)
        .with_header_read_timeout(HEADER_READ_TIMEOUT);
    let reader = Arc::new(rt.block_on(MailReader::open(&setup.store, setup.cache.as_ref()))?);
    let state = AppState {
        limiter: Arc::new(RateLimiter::new(setup.config.rate_per_ip)),
        streams: Arc::new(StreamLimits::new(
            setup.config.max_streams_per_ip,
            setup.config.max_streams,
        )),
        config: Arc::new(setup.config),
        reader,
        arrivals: Arc::clone(&setup.arrivals),
        domains: Arc::new(setup.domains),
    };
    if let Some(cache) = setup.cache {
        rt.spawn(subscribe_redis(cache, setup.arrivals));
    }
    let app = routes(state);
    std::thread::Builder::new()
        .name("http-serve".into())
        .spawn(move || {
            // Until the process exits: smtpd's drain on SIGTERM is the SMTP
            // side's; readers of a mailbox lose nothing when the process ends.
            rt.block_on(http_serve::serve(
                listener,
                app,
                limits,
                std::future::pending(),
            ));
        })?;
    info!(addr = %bound, "HTTP mailbox API listening");
    Ok(bound)
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/mailboxes/{address}/messages", get(api::list))
        .route("/api/v1/mailboxes/{address}/events", get(api::events))
        .route(
            "/api/v1/messages/{id}",
            get(api::message).delete(api::delete),
        )
        .route("/api/v1/messages/{id}/raw", get(api::raw))
        .route("/api/v1/messages/{id}/parts/{part}", get(api::part))
        .route("/inbox/app.js", get(page::script))
        .route("/inbox/app.css", get(page::style))
        .route("/inbox/{address}", get(page::inbox))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(nosniff))
        .with_state(state)
}

/// Every response: no MIME sniffing, no framing by other sites.
async fn nosniff(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Other nodes' arrivals: `PSUBSCRIBE <prefix>new:*` (the channel the committer
/// of every node publishes each message's queue id on, see schema/README.md),
/// forwarded to the local streams. Local arrivals come in twice (committer and
/// Redis); the streams drop repeats.
async fn subscribe_redis(cache: CacheConfig, arrivals: Arc<Arrivals>) {
    let pattern = format!("{}new:*", cache.key_prefix);
    let strip = format!("{}new:", cache.key_prefix);
    let mut attempt = 0usize;
    loop {
        let result: Result<(), String> = async {
            // One node is enough on a cluster too: PUBLISH on any node reaches the
            // subscribers of every node. Try the seeds in turn, so a dead one is
            // skipped at the next retry.
            let target = cache.target()?;
            let client = target.node_client(attempt).map_err(|e| e.to_string())?;
            attempt = attempt.wrapping_add(1);
            let mut pubsub = tokio::time::timeout(REDIS_RETRY * 5, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            pubsub
                .psubscribe(&pattern)
                .await
                .map_err(|e| e.to_string())?;
            info!(%pattern, "subscribed to new-mail notifications");
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let channel = msg.get_channel_name();
                let Some(recipient) = channel.strip_prefix(strip.as_str()) else {
                    continue;
                };
                if let Ok(hash) = msg.get_payload::<String>() {
                    arrivals.publish_hash(&hash, recipient);
                }
            }
            Err("subscription closed".into())
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, "Redis subscription for new mail failed; retrying");
        }
        tokio::time::sleep(REDIS_RETRY).await;
    }
}
