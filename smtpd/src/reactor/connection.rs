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

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::handoff::Envelope;
use crate::protocol::{Event, Phase, Session};

/// Above this much unsent reply data the connection stops reading: a client that
/// pipelines without reading its replies must not grow our memory.
const MAX_PENDING_OUT_BYTES: usize = 64 * 1024;
/// Buffers larger than this are released once empty, so a burst does not leave an
/// idle connection holding memory.
const KEEP_BUFFER_BYTES: usize = 4 * 1024;

/// What the event loop must do after the connection processed input.
pub enum Outcome {
    /// Nothing more: wait for the next readiness event.
    Idle,
    /// A message is complete and must be submitted to the storage stage.
    Submit(Envelope),
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
    /// Reading is paused mid-DATA because the storage queue is full: the message
    /// stays in the client's socket, not in our memory, until the store catches up.
    pub paused_for_store: bool,
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
            paused_for_store: false,
        }
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
    /// (message complete, close). Unconsumed bytes are kept in `pending_in`.
    fn feed(&mut self, input: &[u8]) -> Outcome {
        let mut offset = 0;
        let mut outcome = Outcome::Idle;
        while offset < input.len() {
            let Some(rest) = input.get(offset..) else {
                break;
            };
            let fed = self.session.feed(rest, &mut self.out);
            offset = offset.saturating_add(fed.consumed).min(input.len());
            match fed.event {
                Some(Event::Message(envelope)) => {
                    outcome = Outcome::Submit(envelope);
                    break;
                }
                Some(Event::Close) => {
                    self.closing = true;
                    break;
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
    pub fn feed_pending(&mut self) -> Outcome {
        if self.pending_in.is_empty() || !self.session.wants_read() {
            return Outcome::Idle;
        }
        let held = std::mem::take(&mut self.pending_in);
        let outcome = self.feed(&held);
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
    ) -> io::Result<Outcome> {
        // Held-back input first, so bytes stay in order.
        if let o @ Outcome::Submit(_) = self.feed_pending() {
            self.unread_input = !self.peer_closed;
            return Ok(o);
        }
        loop {
            if !self.can_read(store_backlog) {
                self.unread_input = !self.peer_closed && !self.closing;
                return Ok(Outcome::Idle);
            }
            let n = match self.stream.read(scratch) {
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
            self.last_active = now;
            let Some(input) = scratch.get(..n) else {
                return Ok(Outcome::Idle);
            };
            let outcome = if self.pending_in.is_empty() {
                self.feed(input)
            } else {
                // A partial command line is waiting: join it with the new bytes.
                let mut held = std::mem::take(&mut self.pending_in);
                held.extend_from_slice(input);
                self.feed(&held)
            };
            if let Outcome::Submit(_) = outcome {
                // The socket may hold more (pipelined) input: come back for it.
                self.unread_input = true;
                return Ok(outcome);
            }
        }
    }

    /// Writes pending replies until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
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
                Ok(n) => written += n,
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
        if !self.out.is_empty() {
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
