//! The event loop of one reactor thread.
//!
//! Owns: this thread's listeners and connections (in a slab), their timers, and the
//! submissions it hands to the storage stage. One `poll` → dispatch by token:
//! listeners accept until WouldBlock, connections read and write until WouldBlock
//! (readiness is edge-triggered: a hint, never a promise), the waker brings commit
//! results back from the storage stage. Must not: block, or touch the store.
//!
//! Back-pressure: a session waiting for its commit takes no input, and when the
//! storage stage's bounded queue is full the submission waits here (its connection
//! still reads nothing). Memory: every message body in memory, being received or
//! waiting for its commit, is charged to the global in-flight budget; a body that
//! would take the budget over its limit, or is over `spill_threshold_bytes`, goes
//! to the spool instead (see [`super::connection`]), so the budget is a bound and
//! nobody waits for memory.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, error, warn};

use super::connection::{Budget, Connection, Outcome};
use super::limits::Refusal;
use super::timer::{TICK, TimerWheel};
use super::{ReactorConfig, Shared};
use crate::handoff::{
    Completion, CompletionSink, ConnKey, Envelope, QueueId, StoreFailed, Submission,
};
use crate::metrics::ConnRefusal;
use crate::protocol::proxy::ProxyHeader;
use crate::protocol::reply::Reply;
use crate::protocol::{self, Opening, Phase, Session, SessionConfig};
use crate::spool::SpooledBody;

pub const WAKER_TOKEN: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`; connections use their slab slot, which
/// never gets near (connections are capped far below).
const LISTENER_BASE: usize = usize::MAX - 1;
const MAX_LISTENERS: usize = 1024;
/// One read buffer per reactor, shared by its connections.
const SCRATCH_BYTES: usize = 64 * 1024;
/// How often a reactor retries handing held-back messages to a full storage queue.
const STALLED_RETRY: Duration = Duration::from_millis(1);

pub struct Reactor {
    id: usize,
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<Connection>,
    next_generation: u64,
    wheel: TimerWheel<ConnKey>,
    expired: Vec<ConnKey>,
    session_config: Arc<SessionConfig>,
    config: Arc<ReactorConfig>,
    shared: Arc<Shared>,
    submit: Sender<Submission>,
    /// Messages the storage queue had no room for yet, in arrival order.
    stalled: VecDeque<Submission>,
    completions: Receiver<Completion>,
    sink: Arc<CompletionSink>,
    scratch: Box<[u8]>,
    /// Set when shutdown began: connections still open then are closed at this time.
    shutdown_deadline: Option<Instant>,
    /// Some connection was paused mid-DATA (store backlog).
    paused_any: bool,
    /// Shown to the systemd watchdog on every turn of the loop.
    heartbeat: Arc<ops::notify::Heartbeat>,
    /// The reloaded configuration in use (pointer identity tells a new one).
    reloaded: Option<Arc<super::Reloaded>>,
}

/// The longest a reactor sleeps in poll when nothing is due: its heartbeat (the
/// watchdog) comes at least this often, well within any `WatchdogSec=`.
const IDLE_TICK: Duration = Duration::from_millis(250);

impl Reactor {
    #[allow(clippy::too_many_arguments)] // all owned parts, passed once at start
    pub fn new(
        id: usize,
        poll: Poll,
        mut listeners: Vec<TcpListener>,
        session_config: Arc<SessionConfig>,
        config: Arc<ReactorConfig>,
        shared: Arc<Shared>,
        submit: Sender<Submission>,
        completions: Receiver<Completion>,
        sink: Arc<CompletionSink>,
    ) -> io::Result<Self> {
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::other("too many listen addresses"));
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                l,
                Token(LISTENER_BASE.saturating_sub(i)),
                Interest::READABLE,
            )?;
        }
        let heartbeat = shared.watchdog.register(format!("reactor-{id}"));
        Ok(Self {
            id,
            poll,
            listeners,
            conns: Slab::new(),
            next_generation: 0,
            wheel: TimerWheel::new(Instant::now()),
            expired: Vec::new(),
            session_config,
            config,
            shared,
            submit,
            stalled: VecDeque::new(),
            completions,
            sink,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            shutdown_deadline: None,
            paused_any: false,
            heartbeat,
            reloaded: None,
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let wedge_at = test_wedge(self.id);
        loop {
            let now = Instant::now();
            if wedge_at.is_some_and(|at| now >= at) {
                wedge(self.id);
            }
            self.heartbeat.beat_at(now);
            if self.shutdown_deadline.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
                self.begin_shutdown(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if now >= deadline {
                    self.close_all_now();
                }
                if self.conns.is_empty() {
                    break;
                }
            }
            let timeout = if !self.stalled.is_empty() {
                Some(STALLED_RETRY)
            } else if !self.wheel.is_empty() || self.shutdown_deadline.is_some() {
                Some(TICK)
            } else {
                Some(IDLE_TICK)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!(reactor = self.id, error = %e, "poll failed; reactor stops");
                break;
            }
            let now = Instant::now();
            // After the poll: a SIGHUP wakes the reactor, and the connection that
            // arrived in the same batch of events must see the new settings.
            self.pick_up_reload();
            for event in events.iter() {
                match event.token() {
                    WAKER_TOKEN => {}
                    Token(t) if t > LISTENER_BASE - MAX_LISTENERS => {
                        self.accept(LISTENER_BASE.saturating_sub(t), now);
                    }
                    Token(slot) => {
                        let readable = event.is_readable() || event.is_read_closed();
                        let writable = event.is_writable() || event.is_write_closed();
                        if (event.is_read_closed() || event.is_error())
                            && let Some(conn) = self.conns.get_mut(slot)
                        {
                            conn.hangup_seen = true;
                        }
                        self.on_ready(slot, readable, writable, now);
                    }
                }
            }
            self.drain_completions(now);
            self.retry_stalled(now);
            self.resume_paused(now);
            self.expire_timers(now);
        }
        // Whatever still waits for room in the storage queue was never answered, so
        // dropping it loses nothing that was acknowledged.
        if !self.stalled.is_empty() {
            warn!(
                reactor = self.id,
                messages = self.stalled.len(),
                "unanswered messages dropped at shutdown"
            );
        }
        self.shared.watchdog.unregister(&self.heartbeat);
        debug!(reactor = self.id, "reactor stopped");
    }

    /// Takes a configuration SIGHUP stored, once: new connections use it.
    fn pick_up_reload(&mut self) {
        let current = self.shared.reloaded.load();
        let Some(new) = current.as_ref() else {
            return;
        };
        if self.reloaded.as_ref().is_some_and(|r| Arc::ptr_eq(r, new)) {
            return;
        }
        self.session_config = Arc::clone(&new.session);
        self.config = Arc::clone(&new.reactor);
        self.reloaded = Some(Arc::clone(new));
        debug!(reactor = self.id, "reloaded configuration in use");
    }

    fn accept(&mut self, index: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, index, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the pending connection stays queued and is
                    // retried on the next readiness event.
                    warn!(reactor = self.id, error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, index: usize, now: Instant) {
        let clients = self.shared.clients.fetch_add(1, Ordering::AcqRel);
        if clients >= self.config.max_clients {
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            // Best effort, one write: the socket is new, so its buffer has room.
            let mut reply = Vec::with_capacity(96);
            protocol::write_too_busy(&self.config.hostname, &mut reply);
            let _ = stream.write(&reply);
            self.shared.metrics.refused(ConnRefusal::MaxClients);
            debug!(%peer, "connection refused: max_clients reached");
            return;
        }
        let behind_proxy = index >= self.config.proxy_from;
        if behind_proxy
            && !self
                .config
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&peer.ip().to_canonical()))
        {
            // A PROXY header from anyone else could forge the client address.
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            let mut reply = Vec::with_capacity(96);
            Reply::UntrustedProxy.write(&self.config.hostname, &mut reply);
            let _ = stream.write(&reply);
            self.shared.metrics.refused(ConnRefusal::UntrustedProxy);
            debug!(%peer, "connection refused: not a trusted proxy");
            return;
        }
        // Behind a proxy the real address is known only after the header.
        if !behind_proxy && let Err(refusal) = count_ip(&self.shared, peer.ip(), now) {
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            let mut reply = Vec::with_capacity(96);
            refusal.write(&self.config.hostname, &mut reply);
            let _ = stream.write(&reply);
            self.shared.metrics.refused(refusal_reason(refusal));
            debug!(%peer, "connection refused by per-IP limit");
            return;
        }
        // Replies are small and each one is awaited by the client: Nagle would only
        // add latency.
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            if !behind_proxy {
                self.release_ip(peer.ip());
            }
            warn!(%peer, error = %e, "cannot register connection");
            return;
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        // Behind a proxy nothing is said before the header; otherwise the banner
        // may be held (a client that talks before it is a spam engine that does
        // not wait for replies: Postfix postscreen's pregreet test).
        let opening = if behind_proxy {
            Opening::Proxy
        } else if self.config.greet_delay > Duration::ZERO {
            Opening::HoldGreeting
        } else {
            Opening::Greet
        };
        let session = Session::opening(Arc::clone(&self.session_config), peer.ip(), opening);
        let implicit_tls = index >= self.config.implicit_tls_from && !behind_proxy;
        let tls_config = if implicit_tls || self.session_config.starttls {
            self.shared.tls.get()
        } else {
            None
        };
        let mut conn =
            Connection::new(stream, session, peer, generation, now).with_tls_config(tls_config);
        if !behind_proxy {
            conn.counted_ip = Some(peer.ip());
        }
        if implicit_tls && let Err(e) = conn.start_tls_now() {
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            self.release_ip(peer.ip());
            let _ = self.poll.registry().deregister(&mut conn.stream);
            warn!(%peer, error = %e, "cannot start TLS");
            return;
        }
        let first_timer = match opening {
            Opening::Proxy => after(now, self.config.shortest_timeout()),
            Opening::HoldGreeting => {
                conn.greet_at = Some(after(now, self.config.greet_delay));
                after(now, self.config.greet_delay)
            }
            Opening::Greet => {
                conn.session.greet(&mut conn.out);
                let _ = conn.flush();
                after(now, self.config.shortest_timeout())
            }
        };
        self.wheel
            .schedule(ConnKey { slot, generation }, first_timer);
        conn.timer_armed = true;
        entry.insert(conn);
        self.shared.metrics.connections_total.inc();
        self.shared.metrics.connections_open.inc();
        debug!(reactor = self.id, %peer, "connect");
    }

    fn on_ready(&mut self, slot: usize, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if writable && conn.has_output() && conn.flush().is_err() {
            self.close(slot);
            return;
        }
        if readable || conn.unread_input {
            self.read(slot, now);
        }
        self.after_io(slot);
    }

    /// Reads from the connection and submits a completed message, if any.
    fn read(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        // Message data waits in the client's socket while the store is behind.
        // Memory never pauses anyone: a body the budget has no room for is spooled.
        let pause_data = !self.stalled.is_empty();
        let budget = Budget {
            inflight: &self.shared.inflight_bytes,
            max_inflight_bytes: self.config.max_inflight_bytes,
            spill_threshold_bytes: self.config.spill_threshold_bytes,
            spool: &self.config.spool,
        };
        let result = conn.read(&mut self.scratch, now, pause_data, budget);
        conn.txlog.observe(conn.session.transactions_begun(), now);
        if let Some(refused) = conn.session.take_refused() {
            let tls = conn.tls_params();
            conn.txlog.refused(&refused, conn.peer, tls, now);
        }
        if let Ok(Outcome::Submit(envelope, _)) = &result {
            conn.txlog.hold(envelope);
        }
        if conn.paused_for_store && !self.paused_any {
            self.shared.metrics.backpressure_pauses.inc();
        }
        self.paused_any |= conn.paused_for_store;
        let key = ConnKey {
            slot,
            generation: conn.generation,
        };
        match result {
            Ok(Outcome::Idle) => {}
            Ok(Outcome::Submit(envelope, spool)) => self.submit(key, envelope, spool, now),
            Ok(Outcome::Proxied(header)) => {
                if self.admit_proxied(slot, header, now) {
                    // What the client sent after the header waits in pending_in.
                    self.read(slot, now);
                }
            }
            Ok(Outcome::SpoolFailed) => {
                // Answered like a failed commit, through our own inbox so that the
                // connection carries on exactly as after any other answer.
                self.sink.deliver([Completion {
                    conn: key,
                    result: Err(StoreFailed),
                }]);
            }
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "read failed");
                self.close(slot);
            }
        }
    }

    /// Brings the connection's share of the global in-flight budget up to date.
    fn recharge(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.recharge(&self.shared.inflight_bytes);
        }
    }

    /// Writes what the session said, applies shutdown, closes a finished connection.
    fn after_io(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.draining && !conn.closing && conn.session.phase() == Phase::Command {
            conn.session.on_shutdown(&mut conn.out);
            conn.closing = true;
        }
        if conn.has_output() && conn.flush().is_err() {
            self.close(slot);
            return;
        }
        if conn.finished() {
            self.close(slot);
        }
    }

    fn submit(
        &mut self,
        conn: ConnKey,
        envelope: Envelope,
        spool: Option<SpooledBody>,
        now: Instant,
    ) {
        let submission = Submission {
            envelope,
            spool,
            received_at: SystemTime::now(),
            conn,
            reply: Arc::clone(&self.sink),
        };
        if !self.stalled.is_empty() {
            // Keep arrival order behind those already waiting.
            self.stalled.push_back(submission);
            return;
        }
        match self.submit.try_send(submission) {
            Ok(()) => {}
            Err(TrySendError::Full(s)) => self.stalled.push_back(s),
            Err(TrySendError::Disconnected(s)) => self.complete(s.conn, Err(StoreFailed), now),
        }
    }

    fn retry_stalled(&mut self, now: Instant) {
        while let Some(s) = self.stalled.pop_front() {
            match self.submit.try_send(s) {
                Ok(()) => {}
                Err(TrySendError::Full(s)) => {
                    self.stalled.push_front(s);
                    return;
                }
                Err(TrySendError::Disconnected(s)) => self.complete(s.conn, Err(StoreFailed), now),
            }
        }
    }

    /// Connections paused mid-DATA read on once the store queue has room. Rare
    /// (only after the store fell behind), so a scan of the slab is fine.
    fn resume_paused(&mut self, now: Instant) {
        if !self.paused_any || !self.stalled.is_empty() {
            return;
        }
        self.paused_any = false;
        let paused: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.paused_for_store)
            .map(|(slot, _)| slot)
            .collect();
        for slot in paused {
            self.read(slot, now);
            self.after_io(slot);
        }
    }

    fn drain_completions(&mut self, now: Instant) {
        while let Ok(c) = self.completions.try_recv() {
            self.complete(c.conn, c.result, now);
        }
    }

    /// The storage stage answered: tell the client, then carry on with input that
    /// was held back behind the commit.
    fn complete(&mut self, key: ConnKey, result: Result<QueueId, StoreFailed>, now: Instant) {
        let Some(conn) = self.conns.get_mut(key.slot) else {
            return;
        };
        if conn.generation != key.generation {
            return; // that client left; its slot serves someone else now
        }
        conn.in_flight = 0;
        let (queue_id, reply) = match result {
            Ok(id) => (Some(id), Reply::Queued(id)),
            Err(StoreFailed) => (None, Reply::StoreFailed),
        };
        let tls = conn.tls_params();
        conn.txlog.answered(queue_id, conn.peer, tls, reply, now);
        conn.session.on_stored(result, &mut conn.out);
        self.shared.metrics.add_replies(&conn.session);
        // Timeouts count from the answer, not from the end of DATA.
        conn.last_active = now;
        self.recharge(key.slot);
        self.read(key.slot, now);
        self.after_io(key.slot);
    }

    fn expire_timers(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(now, &mut expired);
        for key in expired.drain(..) {
            let Some(conn) = self.conns.get_mut(key.slot) else {
                continue;
            };
            if conn.generation != key.generation {
                continue;
            }
            conn.timer_armed = false;
            if let Some(at) = conn.greet_at.filter(|_| conn.session.greeting_held()) {
                if now >= at {
                    conn.greet_at = None;
                    conn.last_active = now;
                    conn.session.greet(&mut conn.out);
                    if conn.flush().is_err() {
                        self.close(key.slot);
                        continue;
                    }
                    self.wheel
                        .schedule(key, after(now, self.config.shortest_timeout()));
                } else {
                    self.wheel.schedule(key, at);
                }
                conn.timer_armed = true;
                continue;
            }
            let timeout = match conn.session.phase() {
                Phase::Data => self.config.data_timeout,
                // The server is the one working; the client is not idle.
                Phase::Storing => {
                    conn.last_active = now;
                    self.config.command_timeout
                }
                Phase::Command | Phase::Closed => self.config.command_timeout,
            };
            let deadline = after(conn.last_active, timeout);
            if now < deadline {
                // The phase may change before the deadline (a client entering DATA
                // with a shorter data timeout): check again no later than the
                // shortest timeout from now, which no future deadline can precede.
                self.wheel.schedule(
                    key,
                    deadline.min(after(now, self.config.shortest_timeout())),
                );
                conn.timer_armed = true;
                continue;
            }
            if !conn.closing && conn.paused_for_store {
                // Our fault, not the client's: it was the store that kept us from
                // reading. 451 tells it to try again later.
                conn.session.on_store_timeout(&mut conn.out);
                conn.closing = true;
                let _ = conn.flush();
                debug!(peer = %conn.peer, "timeout while paused for the store");
            } else if !conn.closing {
                conn.session.on_timeout(&mut conn.out);
                conn.closing = true;
                // One attempt: a client that stopped reading gets no more of our time.
                let _ = conn.flush();
                debug!(peer = %conn.peer, "timeout");
            }
            self.close(key.slot);
        }
        self.expired = expired;
    }

    fn begin_shutdown(&mut self, now: Instant) {
        for (i, mut l) in self.listeners.drain(..).enumerate() {
            let _ = self.poll.registry().deregister(&mut l);
            debug!(reactor = self.id, listener = i, "listener closed");
        }
        self.shutdown_deadline = Some(after(now, self.config.shutdown_grace));
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.draining = true;
            }
            self.after_io(slot);
        }
    }

    /// The grace period is over: whoever is still here is told and closed. A message
    /// still being committed may yet be stored; its client saw no 250 and retries.
    fn close_all_now(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            if let Some(conn) = self.conns.get_mut(slot) {
                if !conn.closing && conn.session.phase() != Phase::Closed {
                    conn.session.on_shutdown(&mut conn.out);
                    conn.closing = true;
                }
                let _ = conn.flush();
            }
            self.close(slot);
        }
        self.stalled.clear();
    }

    /// A PROXY listener's connection after its header: take the real client
    /// address for everything (limits, Received:, ip_addr), then admit (greet) or
    /// refuse it. True when admitted.
    fn admit_proxied(&mut self, slot: usize, header: ProxyHeader, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        if let ProxyHeader::Proxied { source, .. } = header {
            conn.peer = source;
        }
        let ip = conn.peer.ip();
        match count_ip(&self.shared, ip, now) {
            Ok(()) => {
                conn.counted_ip = Some(ip);
                conn.session.admit(&mut conn.out);
                true
            }
            Err(reply) => {
                conn.session.refuse(reply, &mut conn.out);
                conn.closing = true;
                false
            }
        }
    }

    fn release_ip(&self, ip: std::net::IpAddr) {
        if let Some(limits) = &self.shared.client_limits {
            limits.release(ip);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns.try_remove(slot) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            self.shared
                .inflight_bytes
                .fetch_sub(conn.charged, Ordering::Relaxed);
            if let Some(ip) = conn.counted_ip {
                self.release_ip(ip);
            }
            self.shared.metrics.session_closed(&conn.session);
            let tls = conn.tls_params();
            conn.txlog
                .abandoned(&conn.session, conn.peer, tls, Instant::now());
            debug!(reactor = self.id, peer = %conn.peer, summary = %conn.session.summary(), "disconnect");
        }
    }
}

/// Counts a connection from `ip` against the per-IP limits, or gives the reply that
/// refuses it.
fn count_ip(shared: &Shared, ip: std::net::IpAddr, now: Instant) -> Result<(), Reply> {
    match &shared.client_limits {
        Some(limits) => limits.admit(ip, now).map_err(|refusal| match refusal {
            Refusal::TooManyFromIp => Reply::TooManyFromIp,
            Refusal::RateLimited => Reply::RateLimited,
        }),
        None => Ok(()),
    }
}

/// The metrics label of a per-IP refusal.
fn refusal_reason(reply: Reply) -> ConnRefusal {
    if reply == Reply::RateLimited {
        ConnRefusal::Rate
    } else {
        ConnRefusal::PerIp
    }
}

/// `now + d`. Every duration here is bounded by the configuration (at most a day),
/// so the sum cannot overflow; the fallback only keeps the reactor free of panics.
/// TEST ONLY: `SMTPD_TEST_WEDGE_REACTOR_AFTER_MS=N` (read once, at start) wedges
/// reactor 0 N ms after it starts, so a test can see the watchdog pings stop while
/// the other threads live on. Not a setting: never set it in production.
fn test_wedge(id: usize) -> Option<Instant> {
    if id != 0 {
        return None;
    }
    let ms: u64 = std::env::var("SMTPD_TEST_WEDGE_REACTOR_AFTER_MS")
        .ok()?
        .parse()
        .ok()?;
    Some(after(Instant::now(), Duration::from_millis(ms)))
}

/// The fault [`test_wedge`] asked for: the loop stops turning, forever.
fn wedge(id: usize) -> ! {
    warn!(
        reactor = id,
        "TEST FAULT: reactor wedged (SMTPD_TEST_WEDGE_REACTOR_AFTER_MS)"
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}
