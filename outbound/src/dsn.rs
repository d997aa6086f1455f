//! Delivery status notifications: writing them (RFC 3464) and reading the ones that
//! come back (RFC 3464, and the status code out of the prose of non-standard ones).
//!
//! Owns: the DSN we send to an original sender (`multipart/report;
//! report-type=delivery-status`: a human-readable part, the `message/delivery-status`
//! part, the original headers), and classifying an incoming bounce as hard, soft or
//! policy. Must not: do I/O.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_parser::{HeaderForm, MessageParser, MimeHeaders};

use crate::mime::{encoded_part, multipart};

/// Whether a DSN reports a failure or a delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
}

/// What a DSN we send says.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, the From: domain).
    pub reporting_mta: &'a str,
    pub original_sender: &'a str,
    pub recipient: &'a str,
    pub action: Action,
    /// Enhanced status, e.g. `5.1.1` (`4.4.7` when we gave up).
    pub status: &'a str,
    /// The remote host that answered, if any.
    pub remote_mta: Option<&'a str>,
    /// The remote reply (`550 5.1.1 No such user`) or our own diagnosis.
    pub diagnostic: &'a str,
    /// Whether the diagnostic is an SMTP reply (`smtp;`) or ours (`x-local;`).
    pub diagnostic_is_smtp: bool,
    pub arrival: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The original message's header section (may be empty).
    pub original_headers: &'a [u8],
    pub message_id_domain: &'a str,
}

/// Characters safe in a DSN field or the 7bit text part: printable ASCII.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The header section of `message` (up to the first empty line), capped, so that
/// a DSN never carries a whole body back.
pub fn header_section(message: &[u8]) -> &[u8] {
    const MAX: usize = 64 * 1024;
    let end = memchr::memmem::find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| memchr::memmem::find(message, b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    let end = end.min(MAX);
    message.get(..end).unwrap_or_default()
}

/// The whole DSN message, CRLF line ends, ready to queue with the null sender.
///
/// Built with `mail-builder`: `multipart/report; report-type=delivery-status` (RFC 3462 §2)
/// with the human-readable part, the `message/delivery-status` part (RFC 3464 §2) and the
/// original header section as `text/rfc822-headers`. Every value that comes from outside
/// (addresses, the remote reply) is reduced to printable ASCII first, so the 7bit parts
/// stay 7bit and no value can start a new field.
pub fn render(r: &Report<'_>) -> Vec<u8> {
    let mut random = [0u8; 12];
    let _ = getrandom::fill(&mut random);
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    // 96 random bits: content cannot contain it unless it was copied from this very DSN.
    let boundary = format!("dsn-{token}");
    let date = r.now.format("%a, %d %b %Y %H:%M:%S +0000");
    let (subject, what) = match r.action {
        Action::Failed => (
            "Undelivered Mail Returned to Sender",
            "could not be delivered to one or more recipients. It has been returned with this report; nothing more will be tried.",
        ),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            "has not been delivered yet to one or more recipients. Delivery is still being attempted; you do not need to send it again.",
        ),
    };
    let mta = ascii(r.reporting_mta);
    let recipient = ascii(r.recipient);
    let diagnostic = ascii(r.diagnostic);
    let human = format!(
        "This is the mail system at host {mta}.\r\n\
         \r\n\
         Your message {what}\r\n\
         \r\n\
         <{recipient}>: {diagnostic}\r\n"
    );

    // RFC 3464 §2.2 per-message fields, a blank line, §2.3 per-recipient fields.
    let mut status = format!(
        "Reporting-MTA: dns; {mta}\r\n\
         Arrival-Date: {arrival}\r\n\
         \r\n\
         Final-Recipient: rfc822; {recipient}\r\n\
         Action: {action}\r\n\
         Status: {code}\r\n",
        arrival = r.arrival.format("%a, %d %b %Y %H:%M:%S +0000"),
        action = match r.action {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        },
        code = ascii(r.status),
    );
    if let Some(remote) = r.remote_mta {
        // `host[ip]:port` → the host name.
        let host = remote.split('[').next().unwrap_or(remote);
        let _ = write!(status, "Remote-MTA: dns; {}\r\n", ascii(host));
    }
    let kind = if r.diagnostic_is_smtp {
        "smtp"
    } else {
        "x-local"
    };
    let _ = write!(
        status,
        "Diagnostic-Code: {kind}; {diagnostic}\r\nLast-Attempt-Date: {date}\r\n"
    );
    if r.action == Action::Delayed {
        status.push_str("Will-Retry-Until: see the sender's queue policy\r\n");
    }

    // Original headers as they were, line ends normalised. They may hold 8-bit text
    // (SMTPUTF8 senders): label it so rather than claim 7bit.
    let mut original = Vec::with_capacity(r.original_headers.len() + 2);
    let mut previous = 0u8;
    for &b in r.original_headers {
        if b == b'\n' && previous != b'\r' {
            original.push(b'\r');
        }
        original.push(b);
        previous = b;
    }
    if !original.ends_with(b"\r\n") {
        original.extend_from_slice(b"\r\n");
    }
    let original_encoding = if original.is_ascii() { "7bit" } else { "8bit" };

    let body = multipart(
        "report; report-type=delivery-status",
        &boundary,
        vec![
            encoded_part("text/plain; charset=us-ascii", "7bit", human),
            // An explicit 7bit: left to itself mail-builder would base64 a non-text part,
            // and RFC 2046 §5.2.4 / RFC 3464 §2 want message/* readable as it is.
            encoded_part("message/delivery-status", "7bit", status),
            encoded_part("text/rfc822-headers", original_encoding, original),
        ],
    );
    let mut out = Vec::with_capacity(2048 + r.original_headers.len());
    MessageBuilder::new()
        .header(
            "From",
            Raw::new(format!("Mail Delivery System <MAILER-DAEMON@{mta}>")),
        )
        .header("To", Raw::new(format!("<{}>", ascii(r.original_sender))))
        .header("Subject", Raw::new(subject))
        .header("Date", Date::new(r.now.timestamp()))
        .header(
            "Message-ID",
            MessageId::new(format!("dsn.{token}@{}", ascii(r.message_id_domain))),
        )
        // RFC 3834 §5: no auto-reply may answer this one.
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("MIME-Version", Raw::new("1.0"))
        .body(body)
        .serialize(&mut out);
    out
}

/// How a bounce is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The address does not exist (or its domain): suppress at once.
    Hard,
    /// Temporary (mailbox full, over quota, try later): suppress after repeats.
    Soft,
    /// Refused for policy or as spam: recorded, not suppressed (it says nothing
    /// about the address).
    Policy,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
            Self::Policy => "policy",
        }
    }
}

/// What an incoming bounce says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub class: Class,
    /// Enhanced status found (e.g. `5.1.1`), if any.
    pub status: Option<String>,
    /// Final-Recipient, if the bounce names one.
    pub recipient: Option<String>,
    /// Action field (`failed`, `delayed`, ...), if any.
    pub action: Option<String>,
    /// Diagnostic text (Diagnostic-Code, or the line the status was found in).
    pub diagnostic: String,
}

/// Reads a bounce: the RFC 3464 `message/delivery-status` part when there is one,
/// otherwise the first enhanced (or basic) status code in the text.
pub fn parse_bounce(raw: &[u8]) -> Bounce {
    let parsed = MessageParser::default().parse(raw);
    if let Some(message) = &parsed {
        for part in &message.parts {
            let is_status = part.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("message")
                    && ct.subtype().is_some_and(|s| {
                        s.eq_ignore_ascii_case("delivery-status")
                            || s.eq_ignore_ascii_case("global-delivery-status")
                    })
            });
            if is_status
                && let Some(b) = parse_delivery_status(&String::from_utf8_lossy(part.contents()))
            {
                return b;
            }
        }
    }
    // Non-standard: look through the text for a status code.
    let text = parsed
        .as_ref()
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned());
    from_prose(&text)
}

/// The field blocks of a `message/delivery-status` body (RFC 3464 §2.1: groups of
/// RFC 5322-style fields separated by blank lines), each parsed by `mail-parser`.
///
/// `mail-parser` has no RFC 3464 parser, but its header parser reads one block of fields,
/// so each block goes through it; finding the blank lines between blocks is the only part
/// done here.
fn status_blocks(text: &str) -> Vec<mail_parser::Message<'static>> {
    let normalised = text.replace("\r\n", "\n");
    normalised
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let fields = format!("{}\n\n", block.trim_start_matches('\n'));
            let parsed = MessageParser::new().parse_headers(fields.as_bytes())?;
            Some(parsed.into_owned())
        })
        .collect()
}

/// The first `name` field of `block`, unfolded and RFC 2047-decoded. Asked for as text
/// because `mail-parser` keeps fields it does not know (all of RFC 3464's) raw.
fn status_field(block: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    block
        .header_as(name.to_owned(), HeaderForm::Text)
        .into_iter()
        .find_map(|v| v.as_text().map(|t| t.trim().to_owned()))
}

/// Fields of the first per-recipient block that has a Status.
fn parse_delivery_status(text: &str) -> Option<Bounce> {
    for block in status_blocks(text) {
        let field = |name: &str| status_field(&block, name);
        let Some(status) = field("Status").and_then(|s| enhanced_in(&s)) else {
            continue;
        };
        // `type; value` (RFC 3464 §2.3.6, §2.3.2): the type is not part of what we keep.
        let after_type = |v: String| match v.split_once(';') {
            Some((_, rest)) => rest.trim().to_owned(),
            None => v,
        };
        let diagnostic = field("Diagnostic-Code").map(after_type).unwrap_or_default();
        let recipient = field("Final-Recipient")
            .or_else(|| field("Original-Recipient"))
            .map(after_type);
        return Some(Bounce {
            class: classify(&status, &diagnostic),
            status: Some(status),
            recipient,
            action: field("Action").map(|a| a.to_ascii_lowercase()),
            diagnostic,
        });
    }
    None
}

fn from_prose(text: &str) -> Bounce {
    for line in text.lines() {
        if let Some(status) = enhanced_in(line) {
            return Bounce {
                class: classify(&status, line),
                status: Some(status),
                recipient: None,
                action: None,
                diagnostic: line.trim().chars().take(500).collect(),
            };
        }
    }
    // Only a basic reply code ("550 ...") or keywords.
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(code) = t.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            && (t.len() == 3
                || t.as_bytes()
                    .get(3)
                    .is_some_and(|b| *b == b' ' || *b == b'-'))
            && (code.starts_with('4') || code.starts_with('5'))
        {
            let status = format!("{}.0.0", &code[..1]);
            return Bounce {
                class: classify(&status, line),
                status: Some(status),
                recipient: None,
                action: None,
                diagnostic: t.chars().take(500).collect(),
            };
        }
    }
    Bounce {
        class: classify("5.0.0", text),
        status: None,
        recipient: None,
        action: None,
        diagnostic: text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .chars()
            .take(500)
            .collect(),
    }
}

/// The first `class.subject.detail` code (class 2, 4 or 5) in `text`.
fn enhanced_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for start in 0..bytes.len() {
        if !matches!(bytes[start], b'2' | b'4' | b'5')
            || (start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'.'))
        {
            continue;
        }
        let rest = &text[start..];
        let candidate: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let candidate = candidate.trim_end_matches('.');
        let parts: Vec<&str> = candidate.split('.').collect();
        if parts.len() == 3
            && parts[0].len() == 1
            && parts[1..].iter().all(|p| (1..=3).contains(&p.len()))
        {
            return Some(candidate.to_owned());
        }
    }
    None
}

/// Hard, soft or policy, from the status code and (for vague codes) the words.
pub fn classify(status: &str, text: &str) -> Class {
    let lower = text.to_ascii_lowercase();
    let words = |ws: &[&str]| ws.iter().any(|w| lower.contains(w));
    let mut parts = status.split('.');
    let class = parts.next().unwrap_or("5");
    let subject = parts.next().unwrap_or("0");
    let detail = parts.next().unwrap_or("0");
    if class == "4" {
        return Class::Soft;
    }
    match (subject, detail) {
        // Bad mailbox, bad domain, null MX, address syntax, mailbox disabled.
        ("1", _) | ("2", "1") => Class::Hard,
        // Mailbox full, message too big for the mailbox, system full.
        ("2", "2") | ("3", "1") => Class::Soft,
        ("7", _) => Class::Policy,
        _ if words(&[
            "spam",
            "blocked",
            "blacklist",
            "blocklist",
            "policy",
            "reputation",
        ]) =>
        {
            Class::Policy
        }
        _ if words(&[
            "user unknown",
            "no such user",
            "does not exist",
            "unknown user",
            "invalid recipient",
            "mailbox unavailable",
            "no mailbox",
        ]) =>
        {
            Class::Hard
        }
        _ if words(&["full", "quota", "try again", "temporar"]) => Class::Soft,
        // A permanent failure we cannot place: treat like a hard one only when the
        // status says so; otherwise count it as soft.
        _ => Class::Soft,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn report<'a>(headers: &'a [u8]) -> Report<'a> {
        Report {
            reporting_mta: "relay.test",
            original_sender: "app@sender.test",
            recipient: "gone@a.test",
            action: Action::Failed,
            status: "5.1.1",
            remote_mta: Some("mx.a.test[127.0.0.1]:25"),
            diagnostic: "550 5.1.1 No such user",
            diagnostic_is_smtp: true,
            arrival: Utc::now(),
            now: Utc::now(),
            original_headers: headers,
            message_id_domain: "relay.test",
        }
    }

    #[test]
    fn rendered_dsn_parses_back_as_what_it_says() {
        let dsn = render(&report(b"From: app@sender.test\nSubject: hi\n\n"));
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Remote-MTA: dns; mx.a.test\r\n"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'), "bare LF");
        let b = parse_bounce(&dsn);
        assert_eq!(b.class, Class::Hard);
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert_eq!(b.recipient.as_deref(), Some("gone@a.test"));
        assert_eq!(b.action.as_deref(), Some("failed"));
        assert_eq!(b.diagnostic, "550 5.1.1 No such user");
    }

    #[test]
    fn delivery_status_fields_are_unfolded_and_blocks_found() {
        let dsn =
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n\
            --b\r\nContent-Type: message/delivery-status\r\n\r\n\
            Reporting-MTA: dns; mx.a.test\r\n\r\n\
            Final-Recipient: rfc822; first@a.test\r\nAction: delivered\r\n\r\n\
            Original-Recipient: rfc822;second@a.test\r\nACTION: Failed\r\n\
            Status: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 mailbox\r\n\tfull\r\n\
            --b--\r\n";
        let b = parse_bounce(dsn);
        assert_eq!(b.status.as_deref(), Some("5.2.2"));
        assert_eq!(b.recipient.as_deref(), Some("second@a.test"));
        assert_eq!(b.action.as_deref(), Some("failed"));
        assert_eq!(b.diagnostic, "552 5.2.2 mailbox full");
        assert_eq!(b.class, Class::Soft);
    }

    #[test]
    fn header_section_stops_at_the_body_and_hostile_text_stays_ascii() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n");
        assert_eq!(header_section(b"A: b\n\nbody"), b"A: b\n");
        assert_eq!(header_section(b"no body"), b"no body");
        let mut r = report(b"");
        r.diagnostic = "550 évil\r\nInjected: yes";
        let text = String::from_utf8(render(&r)).unwrap();
        assert!(!text.contains("\r\nInjected: yes"), "{text}");
    }

    #[test]
    fn non_standard_bounces_are_read_from_their_text() {
        let qmail = b"Subject: failure notice\r\n\r\nHi. This is the qmail-send program.\r\n<x@a.test>:\r\n550 5.2.2 mailbox full\r\n";
        let b = parse_bounce(qmail);
        assert_eq!((b.class, b.status.as_deref()), (Class::Soft, Some("5.2.2")));
        let exim = b"Subject: Mail delivery failed\r\n\r\nSMTP error from remote mail server after RCPT TO:<x@a.test>:\r\n550 User unknown\r\n";
        let b = parse_bounce(exim);
        assert_eq!((b.class, b.status.as_deref()), (Class::Hard, Some("5.0.0")));
        let spam = b"Subject: undeliverable\r\n\r\n554 5.7.1 Message rejected as spam\r\n";
        assert_eq!(parse_bounce(spam).class, Class::Policy);
        let vague = b"Subject: oops\r\n\r\nsomething went wrong\r\n";
        assert_eq!(parse_bounce(vague).status, None);
    }

    #[test]
    fn classification_by_status() {
        assert_eq!(classify("5.1.1", ""), Class::Hard);
        assert_eq!(classify("5.1.10", ""), Class::Hard);
        assert_eq!(classify("5.2.1", ""), Class::Hard);
        assert_eq!(classify("5.2.2", ""), Class::Soft);
        assert_eq!(classify("4.2.2", ""), Class::Soft);
        assert_eq!(classify("5.7.1", ""), Class::Policy);
        assert_eq!(classify("5.0.0", "No such user here"), Class::Hard);
        assert_eq!(classify("5.0.0", "blocked by reputation"), Class::Policy);
        assert_eq!(enhanced_in("Status: 5.1.1 (bad)"), Some("5.1.1".into()));
        assert_eq!(enhanced_in("version 10.5.1.2"), None);
        assert_eq!(enhanced_in("nothing"), None);
    }
}
