//! The one log line per SMTP transaction (Postfix's `smtpd`/`cleanup` lines in one):
//! queue id, client, envelope (MAIL FROM, recipient count and the first
//! [`LOGGED_RECIPIENTS`]), size, TLS, the reply (code and enhanced status) and the
//! time from MAIL to that reply, as structured fields at info level; and a line
//! for a transaction the connection ended without a message (`transaction
//! abandoned`).
//!
//! Owns: what the reactor keeps between handing a message to the store and
//! answering it. Must not: allocate when info is off (the envelope is copied only
//! when the line will be written), block, or log message content.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::{Level, info};

use crate::handoff::{Envelope, QueueId};
use crate::protocol::Session;
use crate::protocol::reply::Reply;
use crate::protocol::session::Refused;

/// Recipients named in the line; the rest are only counted.
pub const LOGGED_RECIPIENTS: usize = 3;

/// A connection's transaction-log state.
#[derive(Debug, Default)]
pub struct TxLog {
    /// [`crate::protocol::Session::transactions_begun`] when last looked at.
    begun: u32,
    /// When the current transaction's MAIL was read.
    mail_at: Option<Instant>,
    /// The envelope of the message the store holds (None when info is off).
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    from: String,
    recipients: Vec<String>,
    rcpt_count: usize,
    size: u64,
}

/// Whether the line would be written: the only check on the per-message path when
/// info is off.
fn enabled() -> bool {
    tracing::enabled!(Level::INFO)
}

impl TxLog {
    /// Notes the time when the session began a transaction since the last look.
    pub fn observe(&mut self, begun: u32, now: Instant) {
        if begun != self.begun {
            self.begun = begun;
            self.mail_at = Some(now);
        }
    }

    /// The message goes to the store: keep what the line will say about it.
    pub fn hold(&mut self, envelope: &Envelope) {
        if !enabled() {
            return;
        }
        let size = envelope
            .data_offset
            .saturating_add(u64::try_from(envelope.data.len()).unwrap_or(u64::MAX));
        self.held = Some(Box::new(Held {
            from: envelope.mail_from.clone(),
            recipients: envelope
                .rcpt_to
                .iter()
                .take(LOGGED_RECIPIENTS)
                .cloned()
                .collect(),
            rcpt_count: envelope.rcpt_to.len(),
            size,
        }));
    }

    /// The store answered and `reply` went to the client.
    pub fn answered(
        &mut self,
        queue_id: Option<QueueId>,
        client: SocketAddr,
        tls: Tls,
        reply: Reply,
        now: Instant,
    ) {
        let held = self.held.take();
        let elapsed = self.elapsed(now);
        let Some(held) = held else {
            return;
        };
        let queue_id = queue_id.map(|id| id.to_string());
        info!(
            queue_id = queue_id.as_deref().unwrap_or("none"),
            client = %crate::ip_text::IpText(client.ip()),
            from = %held.from,
            nrcpt = held.rcpt_count,
            rcpt = %Recipients(&held.recipients, held.rcpt_count),
            size = held.size,
            tls = %tls,
            reply = %Code(reply),
            duration_ms = elapsed,
            "transaction"
        );
    }

    /// The session refused a complete message itself (size, smuggling, line length).
    pub fn refused(&mut self, refused: &Refused, client: SocketAddr, tls: Tls, now: Instant) {
        let elapsed = self.elapsed(now);
        info!(
            queue_id = "none",
            client = %crate::ip_text::IpText(client.ip()),
            from = %refused.mail_from,
            nrcpt = refused.recipients.len(),
            rcpt = %Recipients(
                refused.recipients.get(..LOGGED_RECIPIENTS).unwrap_or(&refused.recipients),
                refused.recipients.len()
            ),
            tls = %tls,
            reply = %Code(refused.reply),
            duration_ms = elapsed,
            "transaction refused"
        );
    }

    /// The connection closed with a transaction begun and no message: one line
    /// saying how far it got and what ended it (Postfix's "lost connection after
    /// RCPT"). Nothing when the session ended between transactions.
    pub fn abandoned(&mut self, session: &Session, client: SocketAddr, tls: Tls, now: Instant) {
        if !enabled() {
            return;
        }
        let Some(a) = session.abandoned() else {
            return;
        };
        let elapsed = self.elapsed(now);
        info!(
            queue_id = "none",
            client = %crate::ip_text::IpText(client.ip()),
            from = %a.mail_from,
            nrcpt = a.recipient_count,
            rcpt = %Recipients(&a.recipients, a.recipient_count),
            tls = %tls,
            after = if a.in_content { "DATA" } else if a.recipient_count > 0 { "RCPT" } else { "MAIL" },
            ended = %Ended(a.closed_with),
            duration_ms = elapsed,
            "transaction abandoned"
        );
    }

    /// Milliseconds since MAIL (0 when unknown); the transaction is over.
    fn elapsed(&mut self, now: Instant) -> u64 {
        self.mail_at.take().map_or(0, |at| {
            u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
        })
    }
}

/// The TLS of a connection: protocol and cipher, or none.
#[derive(Debug, Clone, Copy)]
pub struct Tls(pub Option<(rustls::ProtocolVersion, rustls::CipherSuite)>);

impl fmt::Display for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((version, suite)) => write!(f, "{version:?}/{suite:?}"),
            None => f.write_str("none"),
        }
    }
}

/// `a@x, b@y, c@z (+N more)`.
struct Recipients<'a>(&'a [String], usize);

impl fmt::Display for Recipients<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(r)?;
        }
        let more = self.1.saturating_sub(self.0.len());
        if more > 0 {
            write!(f, " (+{more} more)")?;
        }
        Ok(())
    }
}

/// What ended an abandoned transaction: `lost connection`, `QUIT`, or the
/// server's closing reply (`421 4.4.2` for a timeout).
struct Ended(Option<Reply>);

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("lost connection"),
            Some(Reply::Closing) => f.write_str("QUIT"),
            Some(reply) => Code(reply).fmt(f),
        }
    }
}

/// A reply's code and enhanced status (`250 2.0.0`), read from the reply table.
struct Code(Reply);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The line of nearly every transaction: written out in full, the reply's
        // queue id in hex and the text were ≈ 5 k instructions a message on the
        // reactor thread (callgrind, 1 KB at 10 sessions), only to be cut off
        // again. The test below holds this to what the table gives.
        if let Reply::Queued(_) = self.0 {
            return f.write_str("250 2.0.0");
        }
        let mut line = Vec::with_capacity(64);
        self.0.write("", &mut line);
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split([' ', '\r', '-']);
        let code = words.next().unwrap_or("");
        match words.next().filter(|w| w.contains('.')) {
            Some(enhanced) => write!(f, "{code} {enhanced}"),
            None => f.write_str(code),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn reply_code_and_bounded_recipients_render() {
        assert_eq!(Code(Reply::StoreFailed).to_string(), "451 4.3.0");
        assert_eq!(Code(Reply::MessageTooBig).to_string(), "552 5.3.4");
        // The shortcut for Queued says what the reply table says.
        let queued = Reply::Queued(QueueId([0x5a; 16]));
        let mut line = Vec::new();
        queued.write("mx.test", &mut line);
        assert!(line.starts_with(b"250 2.0.0 "), "{line:?}");
        assert_eq!(Code(queued).to_string(), "250 2.0.0");
        let r: Vec<String> = ["a@x", "b@x", "c@x"].map(String::from).to_vec();
        assert_eq!(Recipients(&r, 5).to_string(), "a@x, b@x, c@x (+2 more)");
        assert_eq!(Recipients(&r[..1], 1).to_string(), "a@x");
        assert_eq!(Tls(None).to_string(), "none");
        assert_eq!(Ended(None).to_string(), "lost connection");
        assert_eq!(Ended(Some(Reply::Closing)).to_string(), "QUIT");
        assert_eq!(Ended(Some(Reply::Timeout)).to_string(), "421 4.4.2");
    }
}
