//! `outbound web`: the HTTP API (JSON under `/api/v1`) of accounts, lists,
//! subscribers, imports and campaigns, and the recipients' tracking routes at
//! the root (`tracking`: `/l/`, `/o/`, `/u/`, on any Host).
//!
//! Owns: the listener (served by `http_serve`: `web.max_connections`,
//! `web.header_read_timeout_ms`, a stop bounded by a deadline), the router (each
//! resource's routes live in its own file: `lists`, `imports`, `campaigns`; the
//! web console's, `crate::console`, merged at the root), the shared state (a
//! [`DbPool`] and the config), the request body limit, JSON 404/405 for unknown
//! paths, and a graceful stop on SIGTERM/SIGINT (requests in flight finish, up
//! to a deadline). Every route takes [`auth::Auth`] and reads only the
//! authenticated account's rows.
//! Must not: hold SQL (the resource modules' stores do).

pub mod auth;
pub mod error;

mod account;
mod campaigns;
pub(crate) mod imports;
mod lists;
pub mod tracking;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::config::Config;
use crate::db_pool::DbPool;
use error::ApiError;

/// Connections the API holds to the store.
const POOL_SIZE: usize = 8;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub pool: Arc<DbPool>,
    pub cfg: Arc<Config>,
    /// The recipients' routes (`/l`, `/o`, `/u`) and their click writer.
    pub tracker: Arc<tracking::Tracker>,
}

/// The whole API, for a server or a test.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(lists::routes())
        .merge(imports::routes())
        .merge(campaigns::routes())
        .merge(account::routes())
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            )
        });
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::console::routes())
        .merge(tracking::routes(state.tracker.clone()))
        .merge(crate::confirm::page::routes())
        .fallback(|| async { ApiError::not_found("path") })
        .layer(DefaultBodyLimit::max(state.cfg.web.max_body_bytes))
        .layer(axum::middleware::map_response(
            crate::metrics::count_response,
        ))
        .with_state(state)
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(cfg: Arc<Config>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let pool = DbPool::open(&cfg.store, cfg.migrate, POOL_SIZE)
        .await
        .with_context(|| format!("store {}", cfg.store))?;
    let pool = Arc::new(pool);
    let (tracker, writer) = tracking::Tracker::start(pool.clone(), cfg.tracking.key.as_deref())
        .context("starting the click writer")?;
    let state = AppState {
        pool,
        cfg: cfg.clone(),
        tracker,
    };
    imports::resume(&state).await;
    crate::metrics::serve_web(&cfg, state.pool.clone())?;
    let addr = listen.unwrap_or(cfg.web.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("web.listen: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // The first line on stdout, for scripts and tests (as `smtpd` prints its own).
    println!("outbound web: listening on {local}");
    info!(%local, store = %cfg.store, "HTTP API running");
    ops::notify::ready(&format!("outbound web listening on {local}"));
    tokio::spawn(crate::metrics::heartbeat("web".into()));
    crate::metrics::watchdog().start();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = cfg.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::reload::reload(&running);
        }
    });
    // The console bounds login attempts per client address, clicks record it:
    // the server puts it into every request as `ConnectInfo<SocketAddr>`.
    let limits = http_serve::Limits::new(cfg.web.max_connections)
        .with_max_connections_per_ip(cfg.web.max_connections_per_ip)
        .with_header_read_timeout(cfg.web.header_read_timeout);
    let stopped = http_serve::serve(listener, router(state), limits, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("stopping the HTTP API");
        ops::notify::stopping("stopping the HTTP API");
    })
    .await;
    info!(?stopped, "HTTP API stopped");
    // The router (and with it the last sender) is gone: the writer flushes what
    // it holds and ends.
    if tokio::time::timeout(std::time::Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        tracing::warn!("clicks still unwritten at exit");
    }
    Ok(())
}
