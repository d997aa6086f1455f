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
//! yields [`Event::Message`] and the session waits in [`Phase::Storing`], reading
//! nothing, until the storage stage has committed it (or failed to).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::address::Mailbox;
use super::command::{self, Command, MAX_COMMAND_LINE_BYTES, MailFrom};
use super::data::{BodyPiece, DataError, DataReceiver, Progress};
use super::domains::DomainPolicy;
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

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading commands.
    Command,
    /// Reading the message after 354.
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
}

/// The result of [`Session::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// How many input bytes were used. The rest (an incomplete command line, or
    /// input that arrived behind a complete message) must be offered again later.
    pub consumed: usize,
    pub event: Option<Event>,
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
}

/// One client's SMTP session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    peer: IpAddr,
    phase: Phase,
    greeted: Option<Greeted>,
    transaction: Option<Transaction>,
    data: Option<DataReceiver>,
    /// The current command line is over 512 octets: its bytes are being discarded
    /// until its end, which then gets 500 (bounded memory, no desynchronisation).
    discarding_line: bool,
    tls: bool,
    counters: Counters,
}

impl Session {
    pub fn new(config: Arc<SessionConfig>, peer: IpAddr) -> Self {
        Self {
            config,
            peer,
            phase: Phase::Command,
            greeted: None,
            transaction: None,
            data: None,
            discarding_line: false,
            tls: false,
            counters: Counters::default(),
        }
    }

    /// Memory held for a message being received.
    pub fn buffered_bytes(&self) -> usize {
        self.data.as_ref().map_or(0, DataReceiver::buffered_bytes)
    }

    /// Takes the message body bytes received so far out of the session, so the
    /// reactor can spool a large body instead of holding it (None: nothing held).
    /// Each piece carries its offset in the body (0: a new body). The envelope of
    /// [`Event::Message`] then carries only the bytes after the last take, and says
    /// how many came before them (`Envelope::data_offset`).
    pub fn take_body_bytes(&mut self) -> Option<BodyPiece> {
        self.data.as_mut().and_then(DataReceiver::take_body)
    }

    /// The client's real address, learned from a PROXY protocol header.
    pub fn set_peer(&mut self, peer: IpAddr) {
        self.peer = peer;
    }

    /// The 220 banner, written once when the connection opens.
    pub fn greet(&mut self, out: &mut Vec<u8>) {
        self.reply(Reply::Greeting, out);
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether input should be read now (false while a commit is pending: that is
    /// the back-pressure that keeps pipelined input in the kernel, not in memory).
    pub fn wants_read(&self) -> bool {
        matches!(self.phase, Phase::Command | Phase::Data)
    }

    /// A MAIL transaction is open (including DATA and the commit).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some() || matches!(self.phase, Phase::Data | Phase::Storing)
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
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match self.phase {
                Phase::Command => {
                    if rest.is_empty() {
                        break;
                    }
                    let Some(newline) = memchr::memchr(b'\n', rest) else {
                        // No line end yet. Keep at most one line's worth for later;
                        // beyond that the line is too long and its bytes are dropped.
                        if self.discarding_line || rest.len() >= MAX_COMMAND_LINE_BYTES {
                            self.discarding_line = true;
                            pos = input.len();
                        }
                        break;
                    };
                    let line_len = newline + 1;
                    pos += line_len;
                    if std::mem::take(&mut self.discarding_line)
                        || line_len > MAX_COMMAND_LINE_BYTES
                    {
                        self.counters.errors += 1;
                        self.reply(Reply::LineTooLong, out);
                        continue;
                    }
                    // CRLF is the line end (RFC 5321 §2.3.8); a bare LF is tolerated
                    // for commands, as every major server does: unlike in DATA it
                    // cannot make two parties disagree about message boundaries.
                    let line = rest.get(..newline).unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let Some(event) = self.command(line, out) {
                        let consumed = if event == Event::StartTls {
                            input.len()
                        } else {
                            pos
                        };
                        return Fed {
                            consumed,
                            event: Some(event),
                        };
                    }
                }
                Phase::Data => {
                    let Some(receiver) = self.data.as_mut() else {
                        self.phase = Phase::Command;
                        continue;
                    };
                    match receiver.feed(rest) {
                        Progress::More => {
                            pos = input.len();
                            break;
                        }
                        Progress::Done { consumed } => {
                            pos += consumed;
                            if let Some(event) = self.end_of_data(out) {
                                return Fed {
                                    consumed: pos,
                                    event: Some(event),
                                };
                            }
                        }
                    }
                }
                Phase::Storing | Phase::Closed => break,
            }
        }
        Fed {
            consumed: pos,
            event: None,
        }
    }

    /// The storage stage's answer for the message handed out last.
    pub fn on_stored(&mut self, result: Result<QueueId, StoreFailed>, out: &mut Vec<u8>) {
        if self.phase != Phase::Storing {
            return;
        }
        self.phase = Phase::Command;
        match result {
            Ok(id) => {
                self.counters.messages += 1;
                self.counters.junk = 0;
                self.reply(Reply::Queued(id), out);
            }
            Err(StoreFailed) => {
                self.counters.refused_messages += 1;
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

    /// A short description for the connection's closing log line.
    pub fn summary(&self) -> impl fmt::Display + '_ {
        Summary(self)
    }

    fn close_with(&mut self, reply: Reply, out: &mut Vec<u8>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.reply(reply, out);
        self.phase = Phase::Closed;
        self.transaction = None;
        self.data = None;
    }

    fn reply(&self, reply: Reply, out: &mut Vec<u8>) {
        reply.write(&self.config.hostname, out);
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Event> {
        let event = self.execute(line, out);
        if event.is_none()
            && (self.counters.errors > self.config.max_errors
                || self.counters.junk > self.config.max_junk_commands)
        {
            self.close_with(Reply::TooManyErrors, out);
            return Some(Event::Close);
        }
        event
    }

    fn execute(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Event> {
        self.counters.commands = self.counters.commands.saturating_add(1);
        let smtputf8 = self.transaction.as_ref().is_some_and(|t| t.mail.smtputf8);
        let command = match command::parse(line, smtputf8) {
            Ok(command) => command,
            Err(e) => {
                self.counters.errors = self.counters.errors.saturating_add(1);
                self.reply(e.reply(), out);
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
        if reply.is_error() {
            self.counters.errors = self.counters.errors.saturating_add(1);
        }
        self.reply(reply, out);
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
        });
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

    fn data(&mut self) -> Reply {
        let Some(transaction) = self.transaction.as_ref() else {
            return Reply::NeedMail;
        };
        if transaction.recipients.is_empty() {
            return if transaction.recipients_refused {
                Reply::NoValidRecipients
            } else {
                Reply::NeedRcpt
            };
        }
        self.data = Some(DataReceiver::new(
            self.config.max_message_bytes,
            self.config.max_data_line_bytes,
        ));
        self.phase = Phase::Data;
        Reply::StartData
    }

    /// The end-of-data line was seen: hand out the message, or refuse it.
    fn end_of_data(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let receiver = self.data.take();
        let transaction = self.transaction.take();
        self.phase = Phase::Command;
        let (Some(receiver), Some(transaction), Some(greeted)) =
            (receiver, transaction, self.greeted.as_ref())
        else {
            return None;
        };
        let data_offset = receiver.taken_bytes();
        match receiver.finish() {
            Ok(data) => {
                self.phase = Phase::Storing;
                Some(Event::Message(Envelope {
                    mail_from: transaction.mail.sender.text,
                    rcpt_to: transaction.recipients,
                    data,
                    data_offset,
                    helo: greeted.name.clone(),
                    esmtp: greeted.esmtp,
                    smtputf8: transaction.mail.smtputf8,
                    body_8bit: transaction.mail.body_8bit,
                    peer: self.peer,
                    is_tls: self.tls,
                }))
            }
            Err(e) => {
                self.counters.refused_messages = self.counters.refused_messages.saturating_add(1);
                self.reply(
                    match e {
                        DataError::TooBig => Reply::MessageTooBig,
                        DataError::BareLineEnding => Reply::BareLineEnding,
                        DataError::LineTooLong => Reply::DataLineTooLong,
                    },
                    out,
                );
                None
            }
        }
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
