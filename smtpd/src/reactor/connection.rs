//! One client connection: the socket, its small buffers, and its [`Session`].
//!
//! Owns: moving bytes between the socket and the session, and the buffers that hold
//! what could not be moved yet. Must not: block, interpret SMTP (the session does),
//! or talk to the store (it returns envelopes to the event loop).
//!
//! Memory: an idle connection holds no input buffer and at most a small output
//! buffer. Reads go into the reactor's shared scratch buffer; only bytes the session
//! could not consume yet (a partial command line, or pipelined input waiting behind a
//! commit) are copied into `pending_in`, and buffers that grew for a burst are freed
//! when they drain.
//!
//! Message bodies: after every piece of input the connection settles its body with
//! the in-flight budget ([`Budget`]). A body stays in memory while it is at most
//! `spill_threshold_bytes` and the global budget has room for it; otherwise it is
//! moved to a spool file, and from then on written there in pieces of
//! [`SPOOL_WRITE_BYTES`]. So no client is ever paused for memory: a client that
//! holds a large body back (or many of them) costs disk, not everyone else's DATA.
//! The writes are plain page-cache writes on the event loop (Postfix's smtpd writes
//! its queue file the same way); a failed write turns the message into a `451`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mio::net::TcpStream;
use tracing::{debug, warn};

use crate::handoff::Envelope;
use crate::protocol::proxy::ProxyHeader;
use crate::protocol::{Event, Phase, Session};
use crate::spool::{Spool, SpoolWriter, SpooledBody};

/// Above this much unsent reply data the connection stops reading: a client that
/// pipelines without reading its replies must not grow our memory.
const MAX_PENDING_OUT_BYTES: usize = 64 * 1024;
/// Buffers larger than this are released once empty, so a burst does not leave an
/// idle connection holding memory.
const KEEP_BUFFER_BYTES: usize = 4 * 1024;

/// Once a body is spooled, it is written out whenever this much has accumulated:
/// few, large writes, and little memory per spooling connection.
pub const SPOOL_WRITE_BYTES: usize = 64 * 1024;

/// What the event loop must do after the connection processed input.
pub enum Outcome {
    /// Nothing more: wait for the next readiness event.
    Idle,
    /// A message is complete and must be submitted to the storage stage (with its
    /// spool file when the body was spooled; `envelope.data` is then empty).
    Submit(Envelope, Option<SpooledBody>),
    /// A message is complete but its body could not be spooled: answer `451`.
    SpoolFailed,
    /// A PROXY header arrived: apply the per-IP limits to its client, then
    /// admit or refuse the session.
    Proxied(ProxyHeader),
}

/// The global in-flight budget, as one connection sees it.
#[derive(Clone, Copy)]
pub struct Budget<'a> {
    /// Message bytes in memory now, over all reactors.
    pub inflight: &'a AtomicUsize,
    /// `limits.max_inflight_bytes`.
    pub max_inflight_bytes: usize,
    /// `limits.spill_threshold_bytes`: the most one body may hold in memory.
    pub spill_threshold_bytes: usize,
    pub spool: &'a Spool,
}

/// Where the body of the current message goes.
#[derive(Debug, Default)]
enum Spill {
    /// Kept in memory (the session holds it).
    #[default]
    Memory,
    /// Written to this spool file as it arrives.
    File(SpoolWriter),
    /// The spool could not be written: the rest of the body is read and dropped,
    /// and the message gets `451` at its end (the client keeps it and retries).
    Failed,
}

/// Whether a body held in memory must go to the spool now: it is over the
/// per-message share, or keeping it would take the global budget over its limit.
/// `others` is what everyone else holds (the global count minus this connection's
/// charge), `held` what this connection would hold.
pub fn must_spill(held: usize, others: usize, budget_bytes: usize, threshold_bytes: usize) -> bool {
    held > threshold_bytes || others.saturating_add(held) > budget_bytes
}

pub struct Connection {
    pub stream: TcpStream,
    pub session: Session,
    pub peer: SocketAddr,
    /// Distinguishes this connection from earlier users of the same slab slot.
    pub generation: u64,
    /// Input read but not consumed by the session yet.
    pending_in: Vec<u8>,
    /// Replies not written to the socket yet.
    pub out: Vec<u8>,
    /// Last time the client sent bytes; timeouts count from here.
    pub last_active: Instant,
    /// Whether the connection is entered in the timer wheel.
    pub timer_armed: bool,
    /// We stopped reading before the socket said WouldBlock, so (edge-triggered
    /// readiness) no new event will come for bytes already waiting: read again when
    /// the session can take input.
    pub unread_input: bool,
    /// Close once `out` is flushed (QUIT, timeout, fatal error, shutdown).
    pub closing: bool,
    /// The server is shutting down: close after the current transaction is answered.
    pub draining: bool,
    /// The peer has sent EOF.
    pub peer_closed: bool,
    /// epoll reported the peer's FIN (or an error): its edge has been spent, so
    /// reads must go on until EOF or WouldBlock (no short-read shortcut).
    pub hangup_seen: bool,
    /// Reading is paused mid-DATA because the storage queue is full: the message
    /// stays in the client's socket, not in our memory, until the store catches up.
    pub paused_for_store: bool,
    /// The TLS layer once STARTTLS (or an implicit-TLS listener) started it: rustls
    /// driven by hand on the non-blocking socket. Boxed: most connections never
    /// use TLS and must stay small when idle.
    tls: Option<Box<rustls::ServerConnection>>,
    /// The configuration STARTTLS will use (None: STARTTLS is not offered).
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// The session said STARTTLS: start TLS once the 220 is written.
    start_tls: bool,
    /// The address counted against the per-IP limits (released at close).
    pub counted_ip: Option<std::net::IpAddr>,
    /// What the transaction log line will say (`txlog`).
    pub txlog: super::txlog::TxLog,
    /// The banner is held until then (`limits.greet_delay_ms`).
    pub greet_at: Option<Instant>,
    /// Message bytes of this connection counted in the global in-flight budget.
    pub charged: usize,
    /// Memory held by this connection's message between submission and its answer.
    pub in_flight: usize,
    /// Where the body of the message being received goes.
    spill: Spill,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        session: Session,
        peer: SocketAddr,
        generation: u64,
        now: Instant,
    ) -> Self {
        Self {
            stream,
            session,
            peer,
            generation,
            pending_in: Vec::new(),
            out: Vec::new(),
            last_active: now,
            timer_armed: false,
            unread_input: false,
            closing: false,
            draining: false,
            peer_closed: false,
            hangup_seen: false,
            paused_for_store: false,
            tls: None,
            tls_config: None,
            start_tls: false,
            counted_ip: None,
            greet_at: None,
            charged: 0,
            in_flight: 0,
            spill: Spill::Memory,
            txlog: Default::default(),
        }
    }

    /// The TLS protocol and cipher, once negotiated (for the transaction log).
    pub fn tls_params(&self) -> super::txlog::Tls {
        super::txlog::Tls(
            self.tls
                .as_ref()
                .and_then(|t| Some((t.protocol_version()?, t.negotiated_cipher_suite()?.suite()))),
        )
    }

    /// Offers STARTTLS with this configuration.
    pub fn with_tls_config(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls_config = config;
        self
    }

    /// Starts TLS right away (an implicit-TLS listener): the greeting is sent
    /// through it once the handshake is done.
    pub fn start_tls_now(&mut self) -> io::Result<()> {
        let config = self
            .tls_config
            .clone()
            .ok_or_else(|| io::Error::other("no TLS configuration"))?;
        let tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        self.tls = Some(Box::new(tls));
        self.session.set_tls(true);
        Ok(())
    }

    /// Replies (plaintext or TLS records) are waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether reading more input now makes sense. `store_backlog`: the storage
    /// queue is full, so message data is left unread (back-pressure).
    fn can_read(&mut self, store_backlog: bool) -> bool {
        self.paused_for_store = store_backlog && self.session.phase() == Phase::Data;
        !self.closing
            && !self.peer_closed
            && !self.paused_for_store
            && self.session.wants_read()
            && self.out.len() < MAX_PENDING_OUT_BYTES
    }

    /// Feeds `input` to the session until it is consumed or the session stops
    /// (message complete, close), then settles the body with the budget.
    /// Unconsumed bytes are kept in `pending_in`. `progressed` is set when the
    /// session says the client made progress (see [`crate::protocol::Fed::progress`]).
    fn feed(&mut self, input: &[u8], budget: Budget<'_>, progressed: &mut bool) -> Outcome {
        let outcome = self.feed_session(input, progressed);
        match outcome {
            Outcome::Submit(envelope, _) => self.complete_body(envelope, budget),
            other => {
                if self.session.in_transaction() {
                    self.settle_body(budget);
                } else {
                    // The message ended without being handed out (refused: too big,
                    // bare LF...), or the session closed: its spool file goes now.
                    self.spill = Spill::Memory;
                    self.recharge(budget.inflight);
                }
                other
            }
        }
    }

    /// Keeps the body of the message being received within its share: spools it
    /// when it must, writes a spooled body out in pieces, and updates the charge.
    fn settle_body(&mut self, budget: Budget<'_>) {
        let held = self.session.buffered_bytes();
        let spill = match self.spill {
            Spill::Memory => {
                let others = budget
                    .inflight
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.charged);
                held > 0
                    && must_spill(
                        held.saturating_add(self.in_flight),
                        others,
                        budget.max_inflight_bytes,
                        budget.spill_threshold_bytes,
                    )
            }
            Spill::File(_) | Spill::Failed => held >= SPOOL_WRITE_BYTES,
        };
        if spill {
            self.spill_body(budget.spool);
        }
        self.recharge(budget.inflight);
    }

    /// Moves what the session holds of the body to the spool file. The piece's
    /// offset says which body it belongs to: 0 starts a new file (whatever an
    /// earlier, refused message left is dropped: with pipelining, one read can end
    /// a spooled message and begin the next), anything else must continue the open
    /// file exactly. On failure the body is dropped from here on (`Spill::Failed`).
    fn spill_body(&mut self, spool: &Spool) {
        let Some(piece) = self.session.take_body_bytes() else {
            return;
        };
        if piece.offset == 0 {
            self.spill = match spool.create() {
                Ok(writer) => Spill::File(writer),
                Err(e) => {
                    warn!(peer = %self.peer, error = %e, dir = %spool.dir().display(), "cannot create a spool file; the message will get 451");
                    Spill::Failed
                }
            };
        }
        match &mut self.spill {
            Spill::File(writer) if writer.len() == piece.offset => {
                if let Err(e) = writer.append(&piece.bytes) {
                    warn!(peer = %self.peer, error = %e, "cannot write to the spool; the message will get 451");
                    self.spill = Spill::Failed;
                }
            }
            Spill::Failed => {}
            // A continuation without its beginning: never store it short (a safety
            // check; the offsets above keep the two in step).
            Spill::File(_) | Spill::Memory => {
                warn!(peer = %self.peer, offset = piece.offset, "spool out of step with the body; the message will get 451");
                self.spill = Spill::Failed;
            }
        }
    }

    /// The end of the message: a spooled body gets its last bytes and is handed on
    /// closed. `data_offset` tells a spooled message (its start is in the file,
    /// exactly that long) from one held in memory whole.
    fn complete_body(&mut self, mut envelope: Envelope, budget: Budget<'_>) -> Outcome {
        let spill = std::mem::take(&mut self.spill);
        let outcome = match spill {
            // Any file here belonged to an earlier, refused message: dropped.
            _ if envelope.data_offset == 0 => {
                self.in_flight = envelope.data.capacity();
                Outcome::Submit(envelope, None)
            }
            Spill::File(mut writer) if writer.len() == envelope.data_offset => {
                let tail = std::mem::take(&mut envelope.data);
                match writer.append(&tail) {
                    Ok(()) => {
                        // All of the body is in the file now, before `data`.
                        envelope.data_offset = writer.len();
                        Outcome::Submit(envelope, Some(writer.finish()))
                    }
                    Err(e) => {
                        warn!(peer = %self.peer, error = %e, "cannot write to the spool; answering 451");
                        Outcome::SpoolFailed
                    }
                }
            }
            Spill::Failed => Outcome::SpoolFailed,
            Spill::File(_) | Spill::Memory => {
                warn!(peer = %self.peer, offset = envelope.data_offset, "spool out of step with the body; answering 451");
                Outcome::SpoolFailed
            }
        };
        self.recharge(budget.inflight);
        outcome
    }

    /// Brings this connection's share of the global in-flight count up to date:
    /// the body being received plus a submitted message held in memory.
    pub fn recharge(&mut self, inflight: &AtomicUsize) {
        let now_held = self.session.buffered_bytes().saturating_add(self.in_flight);
        if now_held > self.charged {
            inflight.fetch_add(now_held.saturating_sub(self.charged), Ordering::Relaxed);
        } else {
            inflight.fetch_sub(self.charged.saturating_sub(now_held), Ordering::Relaxed);
        }
        self.charged = now_held;
    }

    /// Feeds `input` to the session until it is consumed or the session stops.
    fn feed_session(&mut self, input: &[u8], progressed: &mut bool) -> Outcome {
        let mut offset = 0;
        let mut outcome = Outcome::Idle;
        while offset < input.len() {
            let Some(rest) = input.get(offset..) else {
                break;
            };
            let fed = self.session.feed(rest, &mut self.out);
            *progressed |= fed.progress;
            offset = offset.saturating_add(fed.consumed).min(input.len());
            match fed.event {
                Some(Event::Message(envelope)) => {
                    outcome = Outcome::Submit(envelope, None);
                    break;
                }
                Some(Event::Close) => {
                    self.closing = true;
                    break;
                }
                Some(Event::Proxy(header)) => {
                    outcome = Outcome::Proxied(header);
                    break;
                }
                Some(Event::BadProxy(e)) => {
                    debug!(peer = %self.peer, reason = %e, "bad PROXY header");
                    self.closing = true;
                    break;
                }
                Some(Event::StartTls) => {
                    // The session consumed the rest of this input: pipelined
                    // plaintext after STARTTLS is dropped, never executed.
                    self.start_tls = true;
                    self.pending_in.clear();
                    return outcome;
                }
                None if fed.consumed == 0 => break,
                None => {}
            }
        }
        if let Some(rest) = input.get(offset..) {
            self.pending_in.extend_from_slice(rest);
        }
        outcome
    }

    /// Feeds input held back earlier (pipelined commands that arrived while a
    /// message was being committed).
    pub fn feed_pending(&mut self, budget: Budget<'_>) -> Outcome {
        if self.pending_in.is_empty() || !self.session.wants_read() {
            return Outcome::Idle;
        }
        let held = std::mem::take(&mut self.pending_in);
        // Input that waited behind a commit: the commit's answer already reset
        // the timeout.
        let outcome = self.feed(&held, budget, &mut false);
        // `feed` appended the unconsumed tail to the now-empty `pending_in`; reuse
        // the old allocation only if it is small.
        if self.pending_in.is_empty() && held.capacity() <= KEEP_BUFFER_BYTES {
            let mut held = held;
            held.clear();
            self.pending_in = held;
        }
        outcome
    }

    /// Feeds held-back input, then reads until the socket would block or the
    /// session stops taking input. `scratch` is the reactor's shared read buffer.
    pub fn read(
        &mut self,
        scratch: &mut [u8],
        now: Instant,
        store_backlog: bool,
        budget: Budget<'_>,
    ) -> io::Result<Outcome> {
        // Held-back input first, so bytes stay in order.
        if let o @ (Outcome::Submit(..) | Outcome::SpoolFailed | Outcome::Proxied(_)) =
            self.feed_pending(budget)
        {
            self.unread_input = !self.peer_closed;
            return Ok(o);
        }
        loop {
            if !self.can_read(store_backlog) {
                self.unread_input = !self.peer_closed && !self.closing;
                return Ok(Outcome::Idle);
            }
            if std::mem::take(&mut self.start_tls) {
                self.begin_tls()?;
                continue;
            }
            let n = match self.read_plain(scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    self.unread_input = false;
                    return Ok(Outcome::Idle);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread_input = false;
                    return Ok(Outcome::Idle);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A plain read shorter than the buffer emptied the socket: stop here
            // instead of paying one more recv() for its WouldBlock (one per command
            // in a non-pipelined session). Edge-triggered epoll still reports any
            // byte that arrives after this read (tokio's TcpStream does the same).
            // Not under TLS (rustls buffers records) and not once the FIN has been
            // reported, whose edge would never come again.
            let drained = n < scratch.len() && self.tls.is_none() && !self.hangup_seen;
            let Some(input) = scratch.get(..n) else {
                return Ok(Outcome::Idle);
            };
            let mut progressed = false;
            let outcome = if self.pending_in.is_empty() {
                self.feed(input, budget, &mut progressed)
            } else {
                // A partial command line is waiting: join it with the new bytes.
                let mut held = std::mem::take(&mut self.pending_in);
                held.extend_from_slice(input);
                self.feed(&held, budget, &mut progressed)
            };
            // Timeouts count from the last *progress*, as the session defines it: a
            // byte that only extends (or is dropped from) an unfinished command
            // line does not reset the clock, so a client dribbling a command, or
            // an endless over-long line, one byte at a time (slowloris) still
            // times out (Postfix's smtpd_per_record_deadline). Message data counts.
            if progressed {
                self.last_active = now;
            }
            if let Outcome::Submit(..) | Outcome::SpoolFailed | Outcome::Proxied(_) = outcome {
                // The socket may hold more (pipelined) input: come back for it.
                self.unread_input = true;
                return Ok(outcome);
            }
            if drained {
                self.unread_input = false;
                return Ok(Outcome::Idle);
            }
        }
    }

    /// After `220 Ready to start TLS`: write that reply in plaintext, then switch
    /// the connection to TLS and reset the session (RFC 3207 §4.2).
    fn begin_tls(&mut self) -> io::Result<()> {
        self.flush()?;
        if !self.out.is_empty() {
            // The 220 did not fit into an empty socket buffer: give up on a client
            // this slow rather than mix plaintext into the TLS stream.
            return Err(io::Error::other("STARTTLS reply could not be written"));
        }
        self.start_tls_now()
    }

    /// Reads plaintext: straight from the socket, or decrypted by rustls (feeding
    /// it TLS records and writing back what the handshake needs).
    fn read_plain(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        let Self { tls, stream, .. } = self;
        let Some(tls) = tls.as_deref_mut() else {
            return stream.read(scratch);
        };
        loop {
            match tls.reader().read(scratch) {
                // 0: the peer sent close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(stream)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the peer why (the alert is queued by rustls), best effort.
                let _ = tls.write_tls(stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            write_tls(tls, stream)?;
        }
    }

    /// Writes pending replies until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_deref_mut() {
            while !self.out.is_empty() {
                let n = tls.writer().write(&self.out)?;
                self.out.drain(..n.min(self.out.len()));
                if n == 0 || write_tls(tls, &mut self.stream)? {
                    break;
                }
            }
            write_tls(tls, &mut self.stream)?;
            if self.out.is_empty() && self.out.capacity() > KEEP_BUFFER_BYTES {
                self.out = Vec::new();
            }
            return Ok(());
        }
        let mut written = 0;
        let result = loop {
            let Some(rest) = self.out.get(written..) else {
                break Ok(());
            };
            if rest.is_empty() {
                break Ok(());
            }
            match self.stream.write(rest) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written = written.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.out.drain(..written.min(self.out.len()));
        if self.out.is_empty() && self.out.capacity() > KEEP_BUFFER_BYTES {
            self.out = Vec::new();
        }
        result
    }

    /// True once everything that must be said has been written and the connection
    /// can go.
    pub fn finished(&self) -> bool {
        if self.has_output() {
            // A peer that is gone makes the write fail; one that stops reading is
            // closed by its timeout.
            return false;
        }
        let phase = self.session.phase();
        self.closing
            || phase == Phase::Closed
            // EOF: nothing more will come (held-back input has been fed by now, and
            // what is left is an incomplete line), but a commit in flight is still
            // answered: a half-closed client may be waiting for its 250.
            || (self.peer_closed && phase != Phase::Storing)
    }
}

/// Writes queued TLS records until rustls has none or the socket would block.
/// Returns true when the socket would block (the rest goes on the next writable
/// event).
fn write_tls(tls: &mut rustls::ServerConnection, stream: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::must_spill;

    #[test]
    fn a_body_spills_over_its_share_or_when_the_budget_has_no_room() {
        let (budget, threshold) = (1000, 300);
        // Within both bounds: stays in memory.
        assert!(!must_spill(300, 700, budget, threshold));
        // Over the per-message share, however much room there is.
        assert!(must_spill(301, 0, budget, threshold));
        // The budget would be exceeded: the one that needs more memory spills, so
        // no one waits for memory that others hold.
        assert!(must_spill(100, 901, budget, threshold));
        // Saturating: absurd counts never wrap into "fits".
        assert!(must_spill(1, usize::MAX, budget, threshold));
    }
}
