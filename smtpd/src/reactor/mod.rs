//! The reactors: hand-rolled mio event loops, one per thread, each with its own
//! SO_REUSEPORT listener(s).
//!
//! Owns: sockets, buffers, timers and connection limits. Sessions (the SMTP logic)
//! come from [`crate::protocol`]; complete messages go to [`crate::store`] through a
//! bounded channel and the results come back through each reactor's
//! [`CompletionSink`]. A reactor never blocks and never touches the store.
//!
//! - [`listener`]: binding the SO_REUSEPORT listeners.
//! - [`connection`]: one connection's socket, buffers and session.
//! - [`event_loop`]: the poll loop.
//! - [`timer`]: the coarse timer wheel.

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod connection;
pub mod event_loop;
pub mod limits;
pub mod listener;
pub mod rate_sync;
pub mod timer;
pub mod txlog;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::handoff::{CompletionSink, Submission};
use crate::protocol::SessionConfig;

/// What every reactor needs to know about limits and timeouts.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Idle time allowed between commands (and for a final reply to drain).
    pub command_timeout: Duration,
    /// Time allowed between two reads while the client sends DATA.
    pub data_timeout: Duration,
    /// How long a shutdown waits for transactions in DATA to finish.
    pub shutdown_grace: Duration,
    /// Open connections in total, over all reactors.
    pub max_clients: usize,
    /// For the `421` sent when the server is full.
    pub hostname: String,
    /// Message bytes held in memory over all connections (being received or
    /// waiting for the store); bodies beyond it go to the spool.
    pub max_inflight_bytes: usize,
    /// The most one message body may hold in memory; larger bodies are spooled.
    pub spill_threshold_bytes: usize,
    /// Where spooled bodies are written.
    pub spool: Arc<crate::spool::Spool>,
    /// The banner waits this long; clients that talk first are refused (0: off).
    pub greet_delay: Duration,
    /// Listeners from this index on start TLS at connect (implicit TLS)...
    pub implicit_tls_from: usize,
    /// ...and from this index on expect a PROXY protocol header first.
    pub proxy_from: usize,
    /// Who may send a PROXY header (a load balancer); others are refused on
    /// PROXY listeners.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ReactorConfig {
    /// The shortest of the per-phase timeouts: how long a connection's timer may
    /// sleep without possibly missing a deadline after a phase change.
    pub fn shortest_timeout(&self) -> Duration {
        self.command_timeout.min(self.data_timeout)
    }
}

/// State every reactor and the signal handler share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Open client connections over all reactors: the `max_clients` limit.
    pub clients: AtomicUsize,
    /// Set once on SIGTERM/SIGINT; each reactor then stops accepting and drains.
    pub shutdown: AtomicBool,
    /// The TLS configuration new STARTTLS handshakes use; SIGHUP replaces it.
    pub tls: crate::tls::TlsSlot,
    /// Per-IP connection counts and rates.
    pub client_limits: Option<Arc<limits::ClientLimits>>,
    /// Message bytes in memory now, over all reactors (see `max_inflight_bytes`).
    pub inflight_bytes: AtomicUsize,
    /// The Prometheus metrics (relaxed atomics).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each reactor registers a heartbeat here; the systemd watchdog reads them.
    pub watchdog: ops::notify::Watchdog,
    /// A reloaded configuration (SIGHUP) each reactor picks up on its next turn;
    /// connections keep the settings they started with.
    pub reloaded: arc_swap::ArcSwapOption<Reloaded>,
}

/// What SIGHUP can change in a running reactor.
#[derive(Debug)]
pub struct Reloaded {
    pub session: Arc<SessionConfig>,
    pub reactor: Arc<ReactorConfig>,
}

/// A running reactor thread and the way to wake it.
pub struct ReactorHandle {
    pub sink: Arc<CompletionSink>,
    pub thread: JoinHandle<()>,
}

/// Starts one reactor thread serving `listeners`.
pub fn spawn(
    id: usize,
    listeners: Vec<mio::net::TcpListener>,
    session_config: Arc<SessionConfig>,
    config: Arc<ReactorConfig>,
    shared: Arc<Shared>,
    submit: Sender<Submission>,
) -> io::Result<ReactorHandle> {
    let poll = mio::Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), event_loop::WAKER_TOKEN)?;
    // Unbounded on purpose: each connection has at most one message in flight, so
    // this holds at most one result per connection of this reactor.
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink = Arc::new(CompletionSink::new(tx, waker));
    let reactor = event_loop::Reactor::new(
        id,
        poll,
        listeners,
        session_config,
        config,
        shared,
        submit,
        rx,
        Arc::clone(&sink),
    )?;
    let thread = std::thread::Builder::new()
        .name(format!("reactor-{id}"))
        .spawn(move || reactor.run())?;
    Ok(ReactorHandle { sink, thread })
}
