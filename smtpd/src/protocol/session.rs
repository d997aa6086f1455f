//! One SMTP session as a pure state machine: bytes in, reply bytes and events out.
//!
//! Owns: the RFC 5321 §4.1.4 command sequencing (greeting → EHLO/HELO → MAIL → RCPT…
//! → DATA → message → back to MAIL), command-line framing (§4.5.3.1.4: 512 octets),
//! PIPELINING order (RFC 2920: every command is answered in order, from whatever
//! chunks the input arrives in), recipient limits (§4.5.3.1.10), and the hand-off of a
//! complete message. Must not: touch sockets, clocks, threads or the store. The
//! reactor feeds it bytes and commit results and writes out what it says.
//!
//! A message is acknowledged only through [`Session::on_stored`]: the end of DATA
//! (or of `BDAT … LAST`) yields [`Event::Message`] and the session waits in
//! [`Phase::Storing`], reading nothing, until the storage stage has committed it (or
//! failed to).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::address::Mailbox;
use super::chunk::ChunkedBody;
use super::command::{self, Command, MAX_COMMAND_LINE_BYTES, MailFrom};
use super::data::{BodyPiece, DataError, DataReceiver, Progress};
use super::domains::DomainPolicy;
use super::proxy::{self, ProxyError, ProxyHeader, ProxyParse};
use super::reply::{self, Reply};
use crate::handoff::{Envelope, QueueId, StoreFailed};

/// The settings every session of a server shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting and replies.
    pub hostname: String,
    /// Advertised as SIZE; larger messages get 552 5.3.4.
    pub max_message_bytes: usize,
    /// More RCPTs get 452 4.5.3; the first ones are kept.
    pub max_recipients: usize,
    /// Longer message lines get the message refused.
    pub max_data_line_bytes: usize,
    /// Recipient domains we accept mail for.
    pub domains: DomainPolicy,
    /// STARTTLS is offered (a certificate is configured).
    pub starttls: bool,
    /// MAIL, RCPT and DATA need TLS first (530 5.7.0).
    pub require_tls: bool,
    /// More 4xx/5xx replies than this in one session → 421 and close (Postfix's
    /// `smtpd_hard_error_limit`).
    pub max_errors: u32,
    /// More NOOP/RSET/VRFY/HELP/EHLO… without an accepted message → 421 and close
    /// (Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
}

/// Where the session is, as the reactor needs to know it (which timeout applies,
/// whether input may be paused for the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading commands.
    Command,
    /// Reading message content: after 354, or inside a BDAT chunk.
    Data,
    /// The message is complete and being committed; no input is read until
    /// [`Session::on_stored`].
    Storing,
    /// The session is over (QUIT, timeout, shutdown); close after writing replies.
    Closed,
}

/// Something the reactor must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message to commit; answer with [`Session::on_stored`].
    Message(Envelope),
    /// The client said QUIT: close once the replies are written.
    Close,
    /// The client said STARTTLS and got 220: write the replies, then start the TLS
    /// handshake. Everything after the STARTTLS line was consumed and must be
    /// dropped (RFC 3207 §4.2 / CVE-2011-0411: no plaintext command survives).
    StartTls,
    /// A PROXY protocol header arrived: the reactor applies its per-IP limits to
    /// the real client address, then answers with [`Session::admit`] or
    /// [`Session::refuse`]. Nothing after the header is read until then.
    Proxy(ProxyHeader),
    /// What came first on a PROXY listener was not an acceptable header: close
    /// without a word (the peer is not a proxy we understand).
    BadProxy(ProxyError),
}

/// How a connection begins, before any SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The banner goes out at once ([`Session::greet`]).
    Greet,
    /// The banner is held (`limits.greet_delay_ms`, Postfix postscreen's pregreet
    /// test): a client that talks before it gets 554 and is closed; the reactor
    /// calls [`Session::greet`] when the delay is over.
    HoldGreeting,
    /// A PROXY protocol listener: the header must come first, and nothing is said
    /// before it (a proxy waits for no banner).
    Proxy,
}

/// The result of [`Session::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// How many input bytes were used. The rest (an incomplete command line, or
    /// input that arrived behind a complete message) must be offered again later.
    pub consumed: usize,
    pub event: Option<Event>,
    /// The client made progress: it completed a command line or sent message
    /// content. Timeouts count from the last progress, so bytes that only extend
    /// (or are discarded from) an unfinished command line never reset them: a
    /// client dribbling an endless line is cut off like an idle one.
    pub progress: bool,
}

/// What the session is reading now; each state carries what it needs.
#[derive(Debug)]
enum State {
    /// A PROXY listener's connection before its header (HAProxy PROXY v1/v2).
    AwaitingProxy,
    /// The header arrived; waiting for the reactor's per-IP verdict. Reads nothing.
    Admitting,
    /// The banner is held; any input now is a protocol violation.
    PreGreeting,
    /// Command lines.
    Command,
    /// The current command line is over 512 octets: its bytes are dropped up to
    /// its end, which then gets 500 (bounded memory, no desynchronisation).
    DiscardingLine,
    /// The message after 354, up to `CRLF.CRLF`.
    Data(DataReceiver),
    /// The octets of one BDAT chunk (RFC 3030 §2), counted, not scanned.
    Chunk(Chunk),
    /// The message is complete and being committed; no input is read until
    /// [`Session::on_stored`].
    Storing,
    /// The session is over; close after writing replies.
    Closed,
}

/// A BDAT chunk being read.
#[derive(Debug)]
struct Chunk {
    /// Octets of the chunk not read yet.
    remaining: u64,
    /// Octets in the whole chunk (for the 250 reply).
    size: u64,
    last: bool,
    /// The BDAT was refused: its octets are read and dropped (they must not be
    /// taken for commands), then this reply is sent.
    refused: Option<Reply>,
}

#[derive(Debug)]
struct Greeted {
    name: String,
    esmtp: bool,
}

#[derive(Debug)]
struct Transaction {
    mail: MailFrom,
    recipients: Vec<String>,
    /// Whether any RCPT was refused by policy or limit: DATA then says 554, not 503.
    recipients_refused: bool,
    /// The content so far, once the first BDAT chunk came (RFC 3030).
    chunks: Option<ChunkedBody>,
}

/// Counters for the one-line summary logged when the connection closes.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    commands: u32,
    /// Commands that move no mail, since the last accepted message.
    junk: u32,
    messages: u32,
    refused_messages: u32,
    errors: u32,
    /// MAIL commands that began a transaction.
    transactions: u32,
}

/// One client's SMTP session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    peer: IpAddr,
    state: State,
    greeted: Option<Greeted>,
    transaction: Option<Transaction>,
    tls: bool,
    counters: Counters,
    /// Replies by kind, for the metrics (drained by the reactor).
    replies: super::reply::ReplyTally,
    /// Commands by verb, for the metrics (drained with the replies).
    verbs: super::reply::VerbTally,
    /// The last complete message refused without going to the store (size,
    /// smuggling, line length), for the reactor's transaction log line.
    refused: Option<Refused>,
    /// A transaction the session itself ended without a message (QUIT, a
    /// timeout, too many errors, shutdown), kept for the reactor's log line.
    abandoned: Option<Abandoned>,
}

/// A MAIL transaction that ended without a message: the client left (QUIT or a
/// lost connection) or the server closed the session (timeout, errors,
/// shutdown) after MAIL, RCPT or inside DATA/BDAT (Postfix's "lost connection
/// after DATA").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    pub mail_from: String,
    /// Accepted recipients: the first [`ABANDONED_RECIPIENTS`] of them...
    pub recipients: Vec<String>,
    /// ...and how many there were.
    pub recipient_count: usize,
    /// Inside the message content (after 354, or after a BDAT chunk).
    pub in_content: bool,
    /// What ended it: the session's closing reply, or None when the connection
    /// was lost (or closed by the reactor) with the transaction open.
    pub closed_with: Option<Reply>,
}

/// Recipients an [`Abandoned`] names; the rest are counted.
pub const ABANDONED_RECIPIENTS: usize = 3;

/// A complete message refused by the session itself ([`Session::take_refused`]).
#[derive(Debug)]
pub struct Refused {
    pub reply: Reply,
    pub mail_from: String,
    pub recipients: Vec<String>,
}

impl Session {
    /// A session whose banner the caller writes at once with [`Session::greet`].
    pub fn new(config: Arc<SessionConfig>, peer: IpAddr) -> Self {
        Self::opening(config, peer, Opening::Greet)
    }

    /// A session that begins as `opening` says.
    pub fn opening(config: Arc<SessionConfig>, peer: IpAddr, opening: Opening) -> Self {
        Self {
            config,
            peer,
            state: match opening {
                Opening::Greet => State::Command,
                Opening::HoldGreeting => State::PreGreeting,
                Opening::Proxy => State::AwaitingProxy,
            },
            greeted: None,
            transaction: None,
            tls: false,
            counters: Counters::default(),
            replies: Default::default(),
            verbs: Default::default(),
            refused: None,
            abandoned: None,
        }
    }

    /// Memory held for a message being received.
    pub fn buffered_bytes(&self) -> usize {
        let chunks = self
            .transaction
            .as_ref()
            .and_then(|t| t.chunks.as_ref())
            .map_or(0, ChunkedBody::buffered_bytes);
        match &self.state {
            State::Data(receiver) => receiver.buffered_bytes().saturating_add(chunks),
            _ => chunks,
        }
    }

    /// Takes the message body bytes received so far out of the session, so the
    /// reactor can spool a large body instead of holding it (None: nothing held).
    /// Each piece carries its offset in the body (0: a new body). The envelope of
    /// [`Event::Message`] then carries only the bytes after the last take, and says
    /// how many came before them (`Envelope::data_offset`).
    pub fn take_body_bytes(&mut self) -> Option<BodyPiece> {
        match &mut self.state {
            State::Data(receiver) => receiver.take_body(),
            _ => self
                .transaction
                .as_mut()
                .and_then(|t| t.chunks.as_mut())
                .and_then(ChunkedBody::take_body),
        }
    }

    /// The client's real address, learned from a PROXY protocol header.
    pub fn set_peer(&mut self, peer: IpAddr) {
        self.peer = peer;
    }

    /// The 220 banner, written once when the connection opens.
    /// Also ends a held greeting ([`Opening::HoldGreeting`]).
    pub fn greet(&mut self, out: &mut Vec<u8>) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.state = State::Command;
        self.reply(Reply::Greeting, out);
    }

    /// The banner is being held (see [`Opening::HoldGreeting`]).
    pub fn greeting_held(&self) -> bool {
        matches!(self.state, State::PreGreeting)
    }

    /// After [`Event::Proxy`]: the real client is admitted; greet it.
    pub fn admit(&mut self, out: &mut Vec<u8>) {
        if matches!(self.state, State::Admitting) {
            self.greet(out);
        }
    }

    /// After [`Event::Proxy`]: the real client is refused with `reply` (a per-IP
    /// limit); the session is over.
    pub fn refuse(&mut self, reply: Reply, out: &mut Vec<u8>) {
        self.close_with(reply, out);
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::AwaitingProxy
            | State::Admitting
            | State::PreGreeting
            | State::Command
            | State::DiscardingLine => Phase::Command,
            State::Data(_) | State::Chunk(_) => Phase::Data,
            State::Storing => Phase::Storing,
            State::Closed => Phase::Closed,
        }
    }

    /// Whether input should be read now (false while a commit is pending: that is
    /// the back-pressure that keeps pipelined input in the kernel, not in memory).
    pub fn wants_read(&self) -> bool {
        !matches!(self.state, State::Admitting)
            && matches!(self.phase(), Phase::Command | Phase::Data)
    }

    /// A MAIL transaction is open (including DATA and the commit).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some() || matches!(self.phase(), Phase::Data | Phase::Storing)
    }

    /// Marks the session as running inside TLS. RFC 3207 §4.2: the client must
    /// start over with EHLO, so all SMTP state is forgotten.
    pub fn set_tls(&mut self, on: bool) {
        self.tls = on;
        self.greeted = None;
        self.transaction = None;
    }

    /// Consumes input: answers every complete command, receives message data, and
    /// stops at the first event.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut pos = 0;
        let mut progress = false;
        let event = loop {
            let rest = input.get(pos..).unwrap_or_default();
            match &mut self.state {
                State::AwaitingProxy => {
                    if rest.is_empty() {
                        break None;
                    }
                    match proxy::parse(rest) {
                        Ok(ProxyParse::Incomplete) => break None,
                        Ok(ProxyParse::Done { header, consumed }) => {
                            pos = pos.saturating_add(consumed);
                            progress = true;
                            self.state = State::Admitting;
                            if let ProxyHeader::Proxied { source, .. } = header {
                                self.peer = source.ip();
                            }
                            break Some(Event::Proxy(header));
                        }
                        Err(e) => {
                            self.state = State::Closed;
                            pos = input.len();
                            break Some(Event::BadProxy(e));
                        }
                    }
                }
                State::PreGreeting => {
                    if rest.is_empty() {
                        break None;
                    }
                    // RFC 5321 §3.1: the client waits for the 220. One that does not
                    // is not waiting for any reply (a spam engine): refuse, close.
                    self.close_with(Reply::PregreetTalker, out);
                    pos = input.len();
                    break Some(Event::Close);
                }
                State::Command | State::DiscardingLine => {
                    if rest.is_empty() {
                        break None;
                    }
                    let Some(newline) = memchr::memchr(b'\n', rest) else {
                        // No line end yet. Keep at most one line's worth for later;
                        // beyond that the line is too long and its bytes are dropped.
                        // Neither is progress: the command is not complete.
                        if matches!(self.state, State::DiscardingLine)
                            || rest.len() >= MAX_COMMAND_LINE_BYTES
                        {
                            self.state = State::DiscardingLine;
                            pos = input.len();
                        }
                        break None;
                    };
                    let line_len = newline.saturating_add(1);
                    pos = pos.saturating_add(line_len);
                    progress = true;
                    let too_long = matches!(self.state, State::DiscardingLine)
                        || line_len > MAX_COMMAND_LINE_BYTES;
                    let event = if too_long {
                        self.state = State::Command;
                        self.respond(Reply::LineTooLong, out);
                        None
                    } else {
                        // CRLF is the line end (RFC 5321 §2.3.8); a bare LF is
                        // tolerated for commands, as every major server does: unlike
                        // in DATA it cannot make two parties disagree about message
                        // boundaries.
                        let line = rest.get(..newline).unwrap_or_default();
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        self.command(line, out)
                    };
                    if let Some(event) = event.or_else(|| self.enforce_limits(out)) {
                        if event == Event::StartTls {
                            pos = input.len();
                        }
                        break Some(event);
                    }
                }
                State::Data(receiver) => {
                    if rest.is_empty() {
                        break None;
                    }
                    progress = true;
                    match receiver.feed(rest) {
                        Progress::More => {
                            pos = input.len();
                            break None;
                        }
                        Progress::Done { consumed } => {
                            pos = pos.saturating_add(consumed);
                            if let Some(event) = self.end_of_data(out) {
                                break Some(event);
                            }
                        }
                    }
                }
                State::Chunk(chunk) => {
                    // A chunk of 0 octets (`BDAT 0 LAST`) ends without input.
                    if rest.is_empty() && chunk.remaining > 0 {
                        break None;
                    }
                    let take = usize::try_from(chunk.remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    let bytes = rest.get(..take).unwrap_or_default();
                    chunk.remaining = chunk
                        .remaining
                        .saturating_sub(u64::try_from(take).unwrap_or(u64::MAX));
                    pos = pos.saturating_add(take);
                    progress |= take > 0;
                    let done = chunk.remaining == 0;
                    if chunk.refused.is_none()
                        && let Some(body) =
                            self.transaction.as_mut().and_then(|t| t.chunks.as_mut())
                    {
                        body.extend(bytes);
                    }
                    if done && let Some(event) = self.end_of_chunk(out) {
                        break Some(event);
                    }
                }
                State::Admitting | State::Storing | State::Closed => break None,
            }
        };
        Fed {
            consumed: pos,
            event,
            progress,
        }
    }

    /// The storage stage's answer for the message handed out last.
    pub fn on_stored(&mut self, result: Result<QueueId, StoreFailed>, out: &mut Vec<u8>) {
        if !matches!(self.state, State::Storing) {
            return;
        }
        self.state = State::Command;
        match result {
            Ok(id) => {
                self.counters.messages = self.counters.messages.saturating_add(1);
                self.counters.junk = 0;
                self.reply(Reply::Queued(id), out);
            }
            Err(StoreFailed) => {
                self.counters.refused_messages = self.counters.refused_messages.saturating_add(1);
                self.reply(Reply::StoreFailed, out);
            }
        }
    }

    /// The client was silent too long.
    pub fn on_timeout(&mut self, out: &mut Vec<u8>) {
        self.close_with(Reply::Timeout, out);
    }

    /// The server could not take the message in time (the store fell behind and the
    /// connection's input was paused): 451, so the client retries later.
    pub fn on_store_timeout(&mut self, out: &mut Vec<u8>) {
        self.close_with(Reply::StoreFailed, out);
    }

    /// The server is shutting down.
    pub fn on_shutdown(&mut self, out: &mut Vec<u8>) {
        self.close_with(Reply::ShuttingDown, out);
    }

    /// Replies sent since the last call, by kind (for the metrics).
    pub fn drain_replies(&self, f: impl FnMut(Reply, u32)) {
        self.replies.drain(f);
    }

    /// Transactions begun (MAIL accepted) so far: the reactor notes the time when
    /// this moves, so the transaction's log line can say how long it took.
    pub fn transactions_begun(&self) -> u32 {
        self.counters.transactions
    }

    /// The message the session refused last, once.
    pub fn take_refused(&mut self) -> Option<Refused> {
        self.refused.take()
    }

    /// Commands received since the last call, by verb (for the metrics).
    pub fn drain_verbs(&self, f: impl FnMut(command::Verb, u32)) {
        self.verbs.drain(f);
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A short description for the connection's closing log line.
    pub fn summary(&self) -> impl fmt::Display + '_ {
        Summary(self)
    }

    fn close_with(&mut self, reply: Reply, out: &mut Vec<u8>) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.reply(reply, out);
        self.abandoned = self.open_transaction(Some(reply));
        self.state = State::Closed;
        self.transaction = None;
    }

    /// The open transaction, if any, as an [`Abandoned`] ended by `closed_with`.
    fn open_transaction(&self, closed_with: Option<Reply>) -> Option<Abandoned> {
        let t = self.transaction.as_ref()?;
        Some(Abandoned {
            mail_from: t.mail.sender.text.clone(),
            recipients: t
                .recipients
                .iter()
                .take(ABANDONED_RECIPIENTS)
                .cloned()
                .collect(),
            recipient_count: t.recipients.len(),
            in_content: matches!(self.state, State::Data(_) | State::Chunk(_))
                || t.chunks.is_some(),
            closed_with,
        })
    }

    /// At the end of the connection: the transaction it ended without a message,
    /// if any (one the session closed itself, or one still open when the
    /// connection went away). A message being committed is not abandoned: the
    /// store answers it and the transaction line says how.
    pub fn abandoned(&self) -> Option<Abandoned> {
        self.abandoned
            .clone()
            .or_else(|| self.open_transaction(None))
    }

    fn reply(&self, reply: Reply, out: &mut Vec<u8>) {
        self.replies.add(reply);
        reply.write(&self.config.hostname, out);
    }

    /// Writes the reply to a command (or a chunk), counting it if it is an error.
    fn respond(&mut self, reply: Reply, out: &mut Vec<u8>) {
        if reply.is_error() {
            self.counters.errors = self.counters.errors.saturating_add(1);
        }
        self.reply(reply, out);
    }

    /// The one place the error and junk limits are applied, after every reply to
    /// client input (a command, an over-long line, a chunk): past either limit
    /// the session ends with 421 (Postfix's `smtpd_hard_error_limit` and
    /// `smtpd_junk_command_limit`).
    fn enforce_limits(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        if matches!(self.state, State::Closed | State::Storing) {
            return None;
        }
        if self.counters.errors > self.config.max_errors
            || self.counters.junk > self.config.max_junk_commands
        {
            self.close_with(Reply::TooManyErrors, out);
            return Some(Event::Close);
        }
        None
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Event> {
        self.counters.commands = self.counters.commands.saturating_add(1);
        let smtputf8 = self.transaction.as_ref().is_some_and(|t| t.mail.smtputf8);
        let (verb, arg) = command::split(line);
        self.verbs.add(verb);
        let command = match command::parse_argument(verb, arg, smtputf8) {
            Ok(command) => command,
            Err(command::CommandError::BdatSyntax) => {
                // The chunk's size is unknown, so where the next command starts is
                // too: nothing after this line can be trusted (as Postfix does).
                self.respond(Reply::BdatSyntax, out);
                self.close_with(Reply::TooManyErrors, out);
                return Some(Event::Close);
            }
            Err(e) => {
                self.respond(e.reply(), out);
                return None;
            }
        };
        if matches!(
            command,
            Command::Ehlo(_)
                | Command::Helo(_)
                | Command::Noop
                | Command::Rset
                | Command::Vrfy
                | Command::Help
                | Command::NotImplemented
                // An empty chunk that is not the last moves no mail: without this,
                // `BDAT 0` forever would hold a session open past every limit.
                | Command::Bdat {
                    size: 0,
                    last: false
                }
        ) {
            self.counters.junk = self.counters.junk.saturating_add(1);
        }
        let reply = match command {
            Command::Ehlo(name) => {
                reply::write_ehlo(
                    &self.config.hostname,
                    &name,
                    self.config.max_message_bytes,
                    self.config.starttls && !self.tls,
                    out,
                );
                // RFC 5321 §4.1.4: EHLO mid-session is an implicit RSET.
                self.greeted = Some(Greeted { name, esmtp: true });
                self.transaction = None;
                return None;
            }
            Command::Helo(name) => {
                self.greeted = Some(Greeted { name, esmtp: false });
                self.transaction = None;
                Reply::Helo
            }
            Command::Bdat { size, last } => {
                self.bdat(size, last);
                return None;
            }
            Command::Mail(_) | Command::Rcpt(_) | Command::Data
                if self.config.require_tls && !self.tls =>
            {
                Reply::TlsRequired
            }
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(recipient) => self.rcpt(recipient),
            Command::Data => self.data(),
            Command::StartTls if !self.config.starttls => Reply::NotImplemented,
            Command::StartTls if self.tls => Reply::TlsAlreadyActive,
            Command::StartTls if self.transaction.is_some() => Reply::TransactionInProgress,
            Command::StartTls => {
                self.reply(Reply::TlsReady, out);
                return Some(Event::StartTls);
            }
            Command::Rset => {
                self.transaction = None;
                Reply::Ok
            }
            Command::Noop => Reply::Ok,
            Command::Vrfy => Reply::CannotVerify,
            Command::Help => Reply::Help,
            Command::NotImplemented => Reply::NotImplemented,
            Command::Quit => {
                self.close_with(Reply::Closing, out);
                return Some(Event::Close);
            }
        };
        self.respond(reply, out);
        None
    }

    fn mail(&mut self, mail: MailFrom) -> Reply {
        if self.greeted.is_none() {
            return Reply::NeedHelo;
        }
        if self.transaction.is_some() {
            return Reply::NestedMail;
        }
        // RFC 1870 §6.2: a declared size over the limit is refused up front, and the
        // session stays as it was (no transaction starts).
        let limit = u64::try_from(self.config.max_message_bytes).unwrap_or(u64::MAX);
        if mail.size.is_some_and(|size| size > limit) {
            return Reply::MessageTooBig;
        }
        self.transaction = Some(Transaction {
            mail,
            recipients: Vec::new(),
            recipients_refused: false,
            chunks: None,
        });
        self.counters.transactions = self.counters.transactions.wrapping_add(1);
        Reply::SenderOk
    }

    fn rcpt(&mut self, recipient: Mailbox) -> Reply {
        let Some(transaction) = self.transaction.as_mut() else {
            return Reply::NeedMail;
        };
        if let Some(domain) = recipient.domain()
            && !self.config.domains.accepts(domain)
        {
            transaction.recipients_refused = true;
            return Reply::RelayDenied;
        }
        // Domains are case-insensitive (RFC 5321 §2.4): store them lowercase so
        // consumers can look recipients up with one spelling. Local parts are kept.
        let address = match recipient.domain() {
            Some(domain) => format!("{}@{}", recipient.local_part(), domain.to_lowercase()),
            None => recipient.text,
        };
        // The same mailbox twice is one recipient (one row, one copy).
        if transaction
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&address))
        {
            return Reply::RecipientOk;
        }
        if transaction.recipients.len() >= self.config.max_recipients {
            transaction.recipients_refused = true;
            return Reply::TooManyRecipients;
        }
        transaction.recipients.push(address);
        Reply::RecipientOk
    }

    /// Why a transaction cannot take message content now, if it cannot.
    fn content_refusal(&self) -> Option<Reply> {
        let Some(transaction) = self.transaction.as_ref() else {
            return Some(Reply::NeedMail);
        };
        if transaction.recipients.is_empty() {
            return Some(if transaction.recipients_refused {
                Reply::NoValidRecipients
            } else {
                Reply::NeedRcpt
            });
        }
        None
    }

    fn data(&mut self) -> Reply {
        if let Some(refusal) = self.content_refusal() {
            return refusal;
        }
        if let Some(transaction) = self.transaction.as_ref() {
            // RFC 3030 §2/§3: DATA and BDAT do not mix in one transaction, and
            // binary content can only come in chunks.
            if transaction.chunks.is_some() {
                return Reply::DataAfterBdat;
            }
            if transaction.mail.binary {
                return Reply::BinaryNeedsBdat;
            }
        }
        self.state = State::Data(DataReceiver::with_declared_size(
            self.config.max_message_bytes,
            self.config.max_data_line_bytes,
            self.transaction.as_ref().and_then(|t| t.mail.size),
        ));
        Reply::StartData
    }

    /// `BDAT size [LAST]`: read the chunk's octets next, whatever the reply will be
    /// (RFC 3030 §2: a refused chunk's octets must still be consumed, or they
    /// would be read as commands).
    fn bdat(&mut self, size: u64, last: bool) {
        // A refused chunk leaves an open transaction as it was.
        let refused = if self.config.require_tls && !self.tls {
            Some(Reply::TlsRequired)
        } else {
            self.content_refusal()
        };
        if refused.is_none()
            && let Some(transaction) = self.transaction.as_mut()
        {
            let body = transaction.chunks.get_or_insert_with(|| {
                ChunkedBody::new(
                    self.config.max_message_bytes,
                    self.config.max_data_line_bytes,
                    transaction.mail.binary,
                )
            });
            // Known to be too big before a byte of it is read: drop the chunk
            // unread into memory, and say so when it has passed.
            if body.would_exceed(size) {
                body.refuse_too_big();
            }
        }
        self.state = State::Chunk(Chunk {
            remaining: size,
            size,
            last,
            refused,
        });
    }

    /// The last octet of a chunk was read: answer it, and after LAST hand out the
    /// message (or refuse it).
    fn end_of_chunk(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let State::Chunk(chunk) = std::mem::replace(&mut self.state, State::Command) else {
            return None;
        };
        if let Some(reply) = chunk.refused {
            self.respond(reply, out);
            return self.enforce_limits(out);
        }
        if !chunk.last {
            let failed = self
                .transaction
                .as_ref()
                .and_then(|t| t.chunks.as_ref())
                .and_then(ChunkedBody::error);
            // A failed message is refused at the chunk where it failed, and every
            // chunk after it (RFC 3030 §4.2: the client should stop sending). As
            // with DATA, a refused message is not a protocol error.
            match failed {
                Some(e) => self.reply(data_error_reply(e), out),
                None => self.respond(Reply::ChunkReceived(chunk.size), out),
            }
            return self.enforce_limits(out);
        }
        let transaction = self.transaction.take()?;
        let body = transaction
            .chunks
            .unwrap_or_else(|| ChunkedBody::new(0, 0, true));
        let data_offset = body.taken_bytes();
        let result = body.finish();
        self.hand_out(
            transaction.mail,
            transaction.recipients,
            result,
            data_offset,
            out,
        )
    }

    /// The end-of-data line was seen: hand out the message, or refuse it.
    fn end_of_data(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let State::Data(receiver) = std::mem::replace(&mut self.state, State::Command) else {
            return None;
        };
        let transaction = self.transaction.take()?;
        let data_offset = receiver.taken_bytes();
        self.hand_out(
            transaction.mail,
            transaction.recipients,
            receiver.finish(),
            data_offset,
            out,
        )
    }

    /// A complete message (DATA or BDAT): to the store, or refused.
    fn hand_out(
        &mut self,
        mail: MailFrom,
        recipients: Vec<String>,
        content: Result<Vec<u8>, DataError>,
        data_offset: u64,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let greeted = self.greeted.as_ref()?;
        match content {
            Ok(data) => {
                self.state = State::Storing;
                Some(Event::Message(Envelope {
                    mail_from: mail.sender.text,
                    rcpt_to: recipients,
                    data,
                    data_offset,
                    helo: greeted.name.clone(),
                    esmtp: greeted.esmtp,
                    smtputf8: mail.smtputf8,
                    body_8bit: mail.body_8bit,
                    peer: self.peer,
                    is_tls: self.tls,
                }))
            }
            Err(e) => {
                self.counters.refused_messages = self.counters.refused_messages.saturating_add(1);
                let reply = data_error_reply(e);
                self.reply(reply, out);
                self.refused = Some(Refused {
                    reply,
                    mail_from: mail.sender.text,
                    recipients,
                });
                None
            }
        }
    }
}

/// The reply that refuses a complete message.
fn data_error_reply(error: DataError) -> Reply {
    match error {
        DataError::TooBig => Reply::MessageTooBig,
        DataError::BareLineEnding => Reply::BareLineEnding,
        DataError::LineTooLong => Reply::DataLineTooLong,
    }
}

/// The 421 written to a connection refused because the server is full.
pub fn write_too_busy(hostname: &str, out: &mut Vec<u8>) {
    Reply::TooBusy.write(hostname, out);
}

struct Summary<'a>(&'a Session);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let c = s.counters;
        let helo = s.greeted.as_ref().map_or("-", |g| g.name.as_str());
        write!(
            f,
            "helo={helo} commands={} messages={} refused={} errors={}{}",
            c.commands,
            c.messages,
            c.refused_messages,
            c.errors,
            if s.tls { " tls" } else { "" }
        )
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
