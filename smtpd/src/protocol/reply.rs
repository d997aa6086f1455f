//! The reply table: every reply this server sends, with its code, enhanced status
//! code and text, in one place.
//!
//! Owns: the wire form of replies (RFC 5321 §4.2, multi-line replies §4.2.1) and the
//! enhanced status codes (RFC 2034, RFC 3463) carried by every reply after the
//! greeting, except the greeting, EHLO/HELO and 354, which RFC 2034 §4 exempts.
//! Must not: decide which reply applies; the session does that.

use std::io::Write;

use crate::handoff::QueueId;

/// One reply. Handlers name a variant; nobody writes reply bytes by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 220 banner.
    Greeting,
    /// 250 to HELO.
    Helo,
    /// 250 MAIL accepted.
    SenderOk,
    /// 250 RCPT accepted.
    RecipientOk,
    /// 354 go ahead with the message.
    StartData,
    /// 250 after the message was committed.
    Queued(QueueId),
    /// 250 to a BDAT chunk that is not the last (RFC 3030 §2): its octets count.
    ChunkReceived(u64),
    /// 250 to RSET and NOOP.
    Ok,
    /// 221 to QUIT.
    Closing,
    /// 252 to VRFY: we do not verify addresses (RFC 5321 §3.5.3).
    CannotVerify,
    /// 214 to HELP.
    Help,
    /// 421: the client was silent too long.
    Timeout,
    /// 421: the server is shutting down.
    ShuttingDown,
    /// 421: too many connections.
    TooBusy,
    /// 421: too many connections from this client's address.
    TooManyFromIp,
    /// 421: too many new connections from this address in the last minute.
    RateLimited,
    /// 421: too many errors, or too many commands without mail.
    TooManyErrors,
    /// 554: the client sent commands before the greeting (RFC 5321 §3.1: it must
    /// wait for the 220).
    PregreetTalker,
    /// 421: a connection to a PROXY protocol listener from outside the trusted
    /// proxy networks.
    UntrustedProxy,
    /// 451: the store could not commit the message; the client should retry.
    StoreFailed,
    /// 452: more recipients than `limits.max_recipients` (RFC 5321 §4.5.3.1.10).
    TooManyRecipients,
    /// 500: unknown command.
    Unrecognized,
    /// 500: command line longer than 512 octets (RFC 5321 §4.5.3.1.4).
    LineTooLong,
    /// 501: arguments where none belong, or missing/malformed ones.
    SyntaxError,
    /// 501: EHLO/HELO without a usable domain.
    HeloSyntax,
    /// 501: malformed MAIL FROM path.
    BadSender,
    /// 501: malformed RCPT TO path.
    BadRecipient,
    /// 501: a BDAT line without a readable size (RFC 3030 §2); the session ends,
    /// since the chunk's end cannot be found.
    BdatSyntax,
    /// 502: a command we know but do not offer.
    NotImplemented,
    /// 503: MAIL before EHLO/HELO.
    NeedHelo,
    /// 503: MAIL inside a transaction.
    NestedMail,
    /// 503: RCPT or DATA without MAIL.
    NeedMail,
    /// 503: DATA without any RCPT.
    NeedRcpt,
    /// 503: DATA in a transaction that already sent BDAT chunks (RFC 3030 §2:
    /// the two must not be mixed).
    DataAfterBdat,
    /// 503: DATA after `MAIL ... BODY=BINARYMIME` (RFC 3030 §3: BDAT only).
    BinaryNeedsBdat,
    /// 550: a recipient domain this server does not accept mail for.
    RelayDenied,
    /// 550: the message had bare CR or LF line endings (SMTP smuggling defence).
    BareLineEnding,
    /// 550: a message line longer than `limits.max_data_line_bytes`.
    DataLineTooLong,
    /// 552: the message (or its declared SIZE) is over `limits.max_message_bytes`.
    MessageTooBig,
    /// 553: a non-ASCII address without SMTPUTF8 (RFC 6531 §3.5).
    NonAsciiAddress,
    /// 554: DATA when every recipient was refused (RFC 5321 §3.3).
    NoValidRecipients,
    /// 555: a MAIL/RCPT parameter we do not support (RFC 5321 §4.1.1.11).
    UnknownParameter,
    /// 220 to STARTTLS: the TLS handshake follows (RFC 3207 §4).
    TlsReady,
    /// 503: STARTTLS inside TLS.
    TlsAlreadyActive,
    /// 503: STARTTLS inside a mail transaction.
    TransactionInProgress,
    /// 530: this server requires TLS before mail (RFC 3207 §4).
    TlsRequired,
}

impl Reply {
    /// How many kinds of reply there are: [`Reply::index`] is below it.
    pub const KINDS: usize = 46;

    /// One reply of each kind, in [`Reply::index`] order (for metrics labels).
    pub const ALL: [Reply; Self::KINDS] = [
        Self::Greeting,
        Self::Helo,
        Self::SenderOk,
        Self::RecipientOk,
        Self::StartData,
        Self::Queued(QueueId([0; 16])),
        Self::ChunkReceived(0),
        Self::Ok,
        Self::Closing,
        Self::CannotVerify,
        Self::Help,
        Self::Timeout,
        Self::ShuttingDown,
        Self::TooBusy,
        Self::TooManyFromIp,
        Self::RateLimited,
        Self::TooManyErrors,
        Self::PregreetTalker,
        Self::UntrustedProxy,
        Self::StoreFailed,
        Self::TooManyRecipients,
        Self::Unrecognized,
        Self::LineTooLong,
        Self::SyntaxError,
        Self::HeloSyntax,
        Self::BadSender,
        Self::BadRecipient,
        Self::BdatSyntax,
        Self::NotImplemented,
        Self::NeedHelo,
        Self::NestedMail,
        Self::NeedMail,
        Self::NeedRcpt,
        Self::DataAfterBdat,
        Self::BinaryNeedsBdat,
        Self::RelayDenied,
        Self::BareLineEnding,
        Self::DataLineTooLong,
        Self::MessageTooBig,
        Self::NonAsciiAddress,
        Self::NoValidRecipients,
        Self::UnknownParameter,
        Self::TlsReady,
        Self::TlsAlreadyActive,
        Self::TransactionInProgress,
        Self::TlsRequired,
    ];

    /// A dense number for the kind of reply, `0..KINDS` (per-kind counters).
    pub fn index(self) -> usize {
        match self {
            Self::Greeting => 0,
            Self::Helo => 1,
            Self::SenderOk => 2,
            Self::RecipientOk => 3,
            Self::StartData => 4,
            Self::Queued(_) => 5,
            Self::ChunkReceived(_) => 6,
            Self::Ok => 7,
            Self::Closing => 8,
            Self::CannotVerify => 9,
            Self::Help => 10,
            Self::Timeout => 11,
            Self::ShuttingDown => 12,
            Self::TooBusy => 13,
            Self::TooManyFromIp => 14,
            Self::RateLimited => 15,
            Self::TooManyErrors => 16,
            Self::PregreetTalker => 17,
            Self::UntrustedProxy => 18,
            Self::StoreFailed => 19,
            Self::TooManyRecipients => 20,
            Self::Unrecognized => 21,
            Self::LineTooLong => 22,
            Self::SyntaxError => 23,
            Self::HeloSyntax => 24,
            Self::BadSender => 25,
            Self::BadRecipient => 26,
            Self::BdatSyntax => 27,
            Self::NotImplemented => 28,
            Self::NeedHelo => 29,
            Self::NestedMail => 30,
            Self::NeedMail => 31,
            Self::NeedRcpt => 32,
            Self::DataAfterBdat => 33,
            Self::BinaryNeedsBdat => 34,
            Self::RelayDenied => 35,
            Self::BareLineEnding => 36,
            Self::DataLineTooLong => 37,
            Self::MessageTooBig => 38,
            Self::NonAsciiAddress => 39,
            Self::NoValidRecipients => 40,
            Self::UnknownParameter => 41,
            Self::TlsReady => 42,
            Self::TlsAlreadyActive => 43,
            Self::TransactionInProgress => 44,
            Self::TlsRequired => 45,
        }
    }
}

impl Reply {
    /// A 4xx or 5xx reply (counted as a client error in the session summary).
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            Self::Greeting
                | Self::Helo
                | Self::SenderOk
                | Self::RecipientOk
                | Self::StartData
                | Self::Queued(_)
                | Self::ChunkReceived(_)
                | Self::Ok
                | Self::Closing
                | Self::CannotVerify
                | Self::Help
                | Self::TlsReady
        )
    }

    /// Appends the reply, CRLF-terminated, to `out`.
    pub fn write(self, hostname: &str, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = match self {
            Self::Greeting => write!(out, "220 {hostname} ESMTP smtpd ready\r\n"),
            Self::Helo => write!(out, "250 {hostname}\r\n"),
            Self::Queued(id) => write!(out, "250 2.0.0 OK queued as {id}\r\n"),
            Self::ChunkReceived(n) => write!(out, "250 2.0.0 OK {n} octets received\r\n"),
            Self::Closing => write!(out, "221 2.0.0 {hostname} closing connection\r\n"),
            Self::Timeout => write!(out, "421 4.4.2 {hostname} Error: timeout exceeded\r\n"),
            Self::ShuttingDown => write!(out, "421 4.3.2 {hostname} Service shutting down\r\n"),
            Self::TooBusy => write!(
                out,
                "421 4.7.0 {hostname} Too many connections, try again later\r\n"
            ),
            Self::TooManyFromIp => write!(
                out,
                "421 4.7.0 {hostname} Too many connections from your address\r\n"
            ),
            Self::RateLimited => write!(
                out,
                "421 4.7.0 {hostname} Connection rate limit exceeded, try again later\r\n"
            ),
            Self::PregreetTalker => write!(
                out,
                "554 5.5.1 {hostname} Protocol error: client spoke before the greeting\r\n"
            ),
            Self::UntrustedProxy => write!(
                out,
                "421 4.7.0 {hostname} This port accepts connections from trusted proxies only\r\n"
            ),
            Self::TooManyErrors => write!(
                out,
                "421 4.7.0 {hostname} Error: too many errors or commands without mail\r\n"
            ),
            fixed => {
                out.extend_from_slice(fixed.fixed_text().as_bytes());
                Ok(())
            }
        };
    }

    /// The wire text of replies that carry no variable part.
    fn fixed_text(self) -> &'static str {
        match self {
            Self::SenderOk => "250 2.1.0 Sender OK\r\n",
            Self::RecipientOk => "250 2.1.5 Recipient OK\r\n",
            Self::StartData => "354 End data with <CR><LF>.<CR><LF>\r\n",
            Self::Ok => "250 2.0.0 OK\r\n",
            Self::CannotVerify => {
                "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
            }
            Self::Help => {
                "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"
            }
            Self::StoreFailed => "451 4.3.0 Temporary storage failure, try again later\r\n",
            Self::TooManyRecipients => "452 4.5.3 Too many recipients\r\n",
            Self::Unrecognized => "500 5.5.2 Error: command not recognized\r\n",
            Self::LineTooLong => "500 5.5.2 Error: line too long\r\n",
            Self::SyntaxError => "501 5.5.4 Syntax error in parameters or arguments\r\n",
            Self::HeloSyntax => "501 5.5.4 Syntax: EHLO hostname\r\n",
            Self::BadSender => "501 5.1.7 Bad sender address syntax\r\n",
            Self::BadRecipient => "501 5.1.3 Bad recipient address syntax\r\n",
            Self::BdatSyntax => "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n",
            Self::DataAfterBdat => {
                "503 5.5.1 Error: DATA cannot follow BDAT in one transaction\r\n"
            }
            Self::BinaryNeedsBdat => "503 5.5.1 Error: BODY=BINARYMIME requires BDAT\r\n",
            Self::NotImplemented => "502 5.5.1 Error: command not implemented\r\n",
            Self::NeedHelo => "503 5.5.1 Error: send HELO/EHLO first\r\n",
            Self::NestedMail => "503 5.5.1 Error: nested MAIL command\r\n",
            Self::NeedMail => "503 5.5.1 Error: need MAIL command\r\n",
            Self::NeedRcpt => "503 5.5.1 Error: need RCPT command\r\n",
            Self::RelayDenied => "550 5.7.1 Relay access denied\r\n",
            Self::BareLineEnding => {
                "550 5.6.0 Message contains bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)\r\n"
            }
            Self::DataLineTooLong => "550 5.6.0 Message contains a line that is too long\r\n",
            Self::MessageTooBig => "552 5.3.4 Message size exceeds fixed maximum message size\r\n",
            Self::NonAsciiAddress => {
                "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter\r\n"
            }
            Self::NoValidRecipients => "554 5.5.1 Error: no valid recipients\r\n",
            Self::UnknownParameter => "555 5.5.4 Unsupported MAIL/RCPT parameter\r\n",
            Self::TlsReady => "220 2.0.0 Ready to start TLS\r\n",
            Self::TlsAlreadyActive => "503 5.5.1 Error: TLS already active\r\n",
            Self::TransactionInProgress => "503 5.5.1 Error: MAIL transaction in progress\r\n",
            Self::TlsRequired => "530 5.7.0 Must issue a STARTTLS command first\r\n",
            // Variants with a variable part are written by `write`.
            Self::Greeting
            | Self::Helo
            | Self::Queued(_)
            | Self::ChunkReceived(_)
            | Self::Closing
            | Self::Timeout
            | Self::ShuttingDown
            | Self::TooBusy
            | Self::TooManyFromIp
            | Self::RateLimited
            | Self::TooManyErrors
            | Self::UntrustedProxy
            | Self::PregreetTalker => "",
        }
    }
}

/// The EHLO reply (RFC 5321 §4.1.1.1): greeting line, then one extension per line.
/// STARTTLS is listed only when offered and not yet in effect (RFC 3207 §4.2).
pub fn write_ehlo(
    hostname: &str,
    client: &str,
    max_message_bytes: usize,
    starttls: bool,
    out: &mut Vec<u8>,
) {
    let _ = write!(
        out,
        "250-{hostname} greets {client}\r\n\
         250-PIPELINING\r\n\
         250-SIZE {max_message_bytes}\r\n\
         250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n\
         250-CHUNKING\r\n\
         250-BINARYMIME\r\n"
    );
    if starttls {
        out.extend_from_slice(b"250-STARTTLS\r\n");
    }
    out.extend_from_slice(b"250 SMTPUTF8\r\n");
}

/// Replies sent, by kind, since the last [`ReplyTally::drain`]: a plain counter per
/// kind inside the session, added to the process's metrics by the reactor (no
/// atomics on the per-reply path).
#[derive(Debug)]
pub struct ReplyTally([std::cell::Cell<u32>; Reply::KINDS]);

impl Default for ReplyTally {
    fn default() -> Self {
        Self(std::array::from_fn(|_| std::cell::Cell::new(0)))
    }
}

impl ReplyTally {
    pub fn add(&self, reply: Reply) {
        if let Some(c) = self.0.get(reply.index()) {
            c.set(c.get().saturating_add(1));
        }
    }

    /// Calls `f` with each kind sent since the last drain and how often, and
    /// starts counting again from zero.
    pub fn drain(&self, mut f: impl FnMut(Reply, u32)) {
        for (reply, c) in Reply::ALL.iter().zip(&self.0) {
            let n = c.replace(0);
            if n > 0 {
                f(*reply, n);
            }
        }
    }
}

/// Commands received, by verb, since the last [`VerbTally::drain`]: counted like
/// [`ReplyTally`], inside the session without atomics.
#[derive(Debug)]
pub struct VerbTally([std::cell::Cell<u32>; super::command::Verb::KINDS]);

impl Default for VerbTally {
    fn default() -> Self {
        Self(std::array::from_fn(|_| std::cell::Cell::new(0)))
    }
}

impl VerbTally {
    pub fn add(&self, verb: super::command::Verb) {
        if let Some(c) = self.0.get(verb.index()) {
            c.set(c.get().saturating_add(1));
        }
    }

    /// Calls `f` with each verb seen since the last drain and how often, and
    /// starts counting again from zero.
    pub fn drain(&self, mut f: impl FnMut(super::command::Verb, u32)) {
        for (verb, c) in super::command::Verb::ALL.iter().zip(&self.0) {
            let n = c.replace(0);
            if n > 0 {
                f(*verb, n);
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    #[test]
    fn index_is_dense_and_all_is_in_index_order() {
        for (i, r) in Reply::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for r in ALL {
            assert!(r.index() < Reply::KINDS);
        }
        let t = ReplyTally::default();
        t.add(Reply::Ok);
        t.add(Reply::Ok);
        t.add(Reply::MessageTooBig);
        let mut seen = Vec::new();
        t.drain(|r, n| seen.push((r, n)));
        assert_eq!(seen, vec![(Reply::Ok, 2), (Reply::MessageTooBig, 1)]);
        t.drain(|_, _| panic!("drained twice"));
    }

    const ALL: &[Reply] = &[
        Reply::Greeting,
        Reply::Helo,
        Reply::SenderOk,
        Reply::RecipientOk,
        Reply::StartData,
        Reply::Queued(QueueId([0xab; 16])),
        Reply::ChunkReceived(4096),
        Reply::Ok,
        Reply::Closing,
        Reply::CannotVerify,
        Reply::Help,
        Reply::Timeout,
        Reply::ShuttingDown,
        Reply::TooBusy,
        Reply::TooManyFromIp,
        Reply::RateLimited,
        Reply::TooManyErrors,
        Reply::UntrustedProxy,
        Reply::PregreetTalker,
        Reply::StoreFailed,
        Reply::TooManyRecipients,
        Reply::Unrecognized,
        Reply::LineTooLong,
        Reply::SyntaxError,
        Reply::HeloSyntax,
        Reply::BadSender,
        Reply::BadRecipient,
        Reply::BdatSyntax,
        Reply::DataAfterBdat,
        Reply::BinaryNeedsBdat,
        Reply::NotImplemented,
        Reply::NeedHelo,
        Reply::NestedMail,
        Reply::NeedMail,
        Reply::NeedRcpt,
        Reply::RelayDenied,
        Reply::BareLineEnding,
        Reply::DataLineTooLong,
        Reply::MessageTooBig,
        Reply::NonAsciiAddress,
        Reply::NoValidRecipients,
        Reply::UnknownParameter,
        Reply::TlsReady,
        Reply::TlsAlreadyActive,
        Reply::TransactionInProgress,
        Reply::TlsRequired,
    ];

    /// RFC 2034 §4: every reply but 220/HELO/354 carries `class.subject.detail`
    /// whose class digit equals the reply code's first digit.
    #[test]
    fn every_reply_is_one_crlf_line_with_a_matching_enhanced_code() {
        for &reply in ALL {
            let mut out = Vec::new();
            reply.write("mx.test", &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n"), "{reply:?}");
            assert_eq!(text.matches("\r\n").count(), 1, "{reply:?}");
            let code = &text[..3];
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{reply:?}");
            assert_eq!(text.as_bytes()[3], b' ', "{reply:?}");
            if matches!(reply, Reply::Greeting | Reply::Helo | Reply::StartData) {
                continue;
            }
            let enhanced = text[4..].split(' ').next().unwrap();
            let parts: Vec<&str> = enhanced.split('.').collect();
            assert_eq!(parts.len(), 3, "{reply:?}: {text}");
            assert_eq!(parts[0], &code[..1], "{reply:?}: {text}");
        }
    }

    #[test]
    fn queued_reply_carries_the_id() {
        let mut out = Vec::new();
        Reply::Queued(QueueId([0x01; 16])).write("h", &mut out);
        assert_eq!(
            out,
            b"250 2.0.0 OK queued as 01010101010101010101010101010101\r\n"
        );
    }

    #[test]
    fn ehlo_lists_the_extensions_and_ends_with_a_final_line() {
        let mut out = Vec::new();
        write_ehlo("mx.test", "client.example", 1000, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines[0], "250-mx.test greets client.example");
        assert!(lines.contains(&"250-SIZE 1000"));
        for ext in [
            "PIPELINING",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "BINARYMIME",
        ] {
            assert!(lines.contains(&format!("250-{ext}").as_str()), "{ext}");
        }
        assert_eq!(*lines.last().unwrap(), "250 SMTPUTF8");
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("250-"))
        );
    }
}
