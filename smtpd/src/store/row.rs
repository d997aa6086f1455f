//! What goes into `new_mail` for one message: the `Received:` trace header and the
//! indexed header fields, extracted here on the committer thread, never on an event
//! loop.
//!
//! Owns: the column values (see `schema/README.md` for their meaning) and the
//! RFC 5321 §4.4 trace header. Must not: fail. Whatever bytes a client sent, a row
//! can be written: unparsable headers give empty columns, never an error, because the
//! raw message in `mail` is what counts.

use std::net::IpAddr;
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Timelike, Utc};
use mail_parser::{Address, Message, MessageParser, MimeHeaders};

use super::plain_headers;
use crate::handoff::{Envelope, QueueId};
use crate::spool::SpooledBody;

/// Above this size only the header section is parsed, and attachments are counted
/// by a plain scan: a full MIME parse of a 10 MiB message would stall every other
/// message waiting for the same commit.
const FULL_PARSE_MAX_BYTES: usize = 1024 * 1024;
/// Column widths kept compatible with Guerrilla's `varchar(255)` columns.
const MAX_TEXT_CHARS: usize = 255;

/// One message, ready to be written as one row per recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct MailRow {
    pub hash: String,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    pub date: String,
    pub from: String,
    /// The first address of the `To:` header, if any (else each row's recipient).
    pub to_header: Option<String>,
    pub subject: String,
    /// Storage marker: `""` (message in `mail`) or `"redis"` (Guerrilla mode: the
    /// message lives only in Redis and `mail` is empty).
    pub body: &'static str,
    pub charset: String,
    pub content_type: String,
    pub has_attach: i64,
    pub message_id: String,
    pub reply_to: String,
    pub sender: String,
    pub helo: String,
    pub ip_addr: String,
    pub is_tls: bool,
    /// Octets of the message as received (without the `Received:` header).
    pub size: i64,
    /// `Received:` header + the message exactly as received.
    pub mail: Vec<u8>,
    pub recipients: Vec<String>,
}

impl MailRow {
    pub fn new(envelope: Envelope, id: QueueId, received_at: SystemTime, hostname: &str) -> Self {
        let built = Self::build(envelope, id, received_at, hostname, |header, envelope| {
            // The header goes in front of the body in the body's own buffer (one
            // move of the body, usually within the slack the DATA buffer already
            // has), not into a second allocation of the message's size.
            let mut mail = std::mem::take(&mut envelope.data);
            mail.splice(0..0, header);
            Ok::<_, std::convert::Infallible>(mail)
        });
        match built {
            Ok(row) => row,
            Err(never) => match never {},
        }
    }

    /// A message whose body was spooled: the body is read from the file straight
    /// into `mail` behind the `Received:` header (one allocation of the message's
    /// size; nothing else holds it). Fails when the file cannot be read.
    pub fn from_spool(
        envelope: Envelope,
        spool: &SpooledBody,
        id: QueueId,
        received_at: SystemTime,
        hostname: &str,
    ) -> std::io::Result<Self> {
        let reserved = usize::try_from(spool.len()).map_err(std::io::Error::other)?;
        Self::build(envelope, id, received_at, hostname, |mut mail, _| {
            mail.reserve_exact(reserved);
            spool.read_into(&mut mail)?;
            Ok(mail)
        })
    }

    /// `mail` is the `Received:` header followed by the body: `assemble` is given
    /// the header and returns the two together; the columns come from that body.
    fn build<E>(
        mut envelope: Envelope,
        id: QueueId,
        received_at: SystemTime,
        hostname: &str,
        assemble: impl FnOnce(Vec<u8>, &mut Envelope) -> Result<Vec<u8>, E>,
    ) -> Result<Self, E> {
        let hash = id.to_string();
        let at: DateTime<Utc> = received_at.into();
        let mut header = Vec::with_capacity(RECEIVED_RESERVE_BYTES);
        write_received(&mut header, &envelope, &hash, &at, hostname);
        let body_start = header.len();
        let mail = assemble(header, &mut envelope)?;
        let body = mail.get(body_start..).unwrap_or_default();
        let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let headers = Headers::extract(body);
        let message_id = headers
            .message_id
            .unwrap_or_else(|| clip(&format!("{hash}@{hostname}")));
        Ok(Self {
            date: column_date(&at),
            from: envelope.mail_from,
            to_header: headers.to,
            subject: headers.subject,
            body: "",
            charset: headers.charset,
            content_type: headers.content_type,
            has_attach: headers.attachments,
            message_id,
            reply_to: headers.reply_to,
            sender: headers.sender,
            helo: envelope.helo,
            ip_addr: crate::ip_text::IpText(canonical_ip(envelope.peer)).to_string(),
            is_tls: envelope.is_tls,
            size,
            mail,
            recipients: envelope.rcpt_to,
            hash,
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS` (the `date` column), written directly: chrono's
/// `format("%Y-%m-%d %H:%M:%S")` interprets its format string on every call (≈ 3 k
/// instructions a message). Same text as chrono's (test
/// `the_date_column_is_chrono_s_text`); a year outside 0..=9999 or a leap second
/// goes to chrono.
fn column_date(at: &DateTime<Utc>) -> String {
    let year = at.year();
    let (Ok(year @ 0..=9999), false) = (u32::try_from(year), at.nanosecond() >= 1_000_000_000)
    else {
        return at.format("%Y-%m-%d %H:%M:%S").to_string();
    };
    let mut out = String::with_capacity(19);
    let mut two = |n: u32, after: Option<char>| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
        if let Some(c) = after {
            out.push(c);
        }
    };
    two(year / 100, None);
    two(year % 100, Some('-'));
    two(at.month(), Some('-'));
    two(at.day(), Some(' '));
    two(at.hour(), Some(':'));
    two(at.minute(), Some(':'));
    two(at.second(), None);
    out
}

/// Room for the `Received:` header (a longer one only costs a reallocation).
const RECEIVED_RESERVE_BYTES: usize = 512;

/// `::ffff:192.0.2.1` (an IPv4 client on a dual-stack socket) is stored as
/// `192.0.2.1`, so one client has one spelling.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// RFC 5321 §4.4 trace header, RFC 5322 §3.6.7 syntax; `with` keywords from
/// RFC 3848 and RFC 6531 §3.7.3. The `for` clause names the recipient only when there
/// is exactly one, so a copy never reveals the other recipients.
fn write_received(out: &mut Vec<u8>, e: &Envelope, hash: &str, at: &DateTime<Utc>, hostname: &str) {
    // Written piece by piece: through `write!` and chrono's `to_rfc2822` this
    // header cost ≈ 5,000 instructions a message (bench/RESULTS.md, 2026-12-04).
    let protocol = match (e.smtputf8, e.esmtp, e.is_tls) {
        (true, _, false) => "UTF8SMTP",
        (true, _, true) => "UTF8SMTPS",
        (false, true, true) => "ESMTPS",
        (false, true, false) => "ESMTP",
        (false, false, true) => "SMTPS",
        (false, false, false) => "SMTP",
    };
    out.extend_from_slice(b"Received: from ");
    // The protocol core admits only printable HELO names; this guards the header
    // against any other producer of envelopes.
    if e.helo.bytes().all(|b| b.is_ascii_graphic()) {
        out.extend_from_slice(e.helo.as_bytes());
    } else {
        let mut utf8 = [0u8; 4];
        for c in e.helo.chars() {
            let c = if c.is_control() || c == ' ' { '?' } else { c };
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    let ip = canonical_ip(e.peer);
    out.extend_from_slice(if ip.is_ipv4() { b" ([" } else { b" ([IPv6:" });
    crate::ip_text::push_ip(out, ip);
    for piece in ["])\r\n\tby ", hostname, " with ", protocol, " id ", hash] {
        out.extend_from_slice(piece.as_bytes());
    }
    match e.rcpt_to.as_slice() {
        [only] => {
            out.extend_from_slice(b"\r\n\tfor <");
            out.extend_from_slice(only.as_bytes());
            out.extend_from_slice(b">; ");
        }
        _ => out.extend_from_slice(b";\r\n\t"),
    }
    push_rfc2822(out, at);
    out.extend_from_slice(b"\r\n");
}

/// `Fri, 4 Dec 2026 01:28:06 +0000`: chrono's `to_rfc2822` text (test
/// `the_received_date_is_chrono_s_rfc2822`), written directly; a year outside
/// 0..=9999 or a leap second goes to chrono.
fn push_rfc2822(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (Ok(year @ 0..=9999), false) = (u32::try_from(at.year()), at.nanosecond() >= 1_000_000_000)
    else {
        out.extend_from_slice(at.to_rfc2822().as_bytes());
        return;
    };
    let digit = |n: u32| b'0' + (n % 10) as u8;
    out.extend_from_slice(DAYS[at.weekday().num_days_from_monday() as usize].as_bytes());
    out.extend_from_slice(b", ");
    if at.day() >= 10 {
        out.push(digit(at.day() / 10));
    }
    out.push(digit(at.day()));
    out.push(b' ');
    out.extend_from_slice(MONTHS[at.month0() as usize % 12].as_bytes());
    out.extend_from_slice(&[
        b' ',
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b' ',
        digit(at.hour() / 10),
        digit(at.hour()),
        b':',
        digit(at.minute() / 10),
        digit(at.minute()),
        b':',
        digit(at.second() / 10),
        digit(at.second()),
    ]);
    out.extend_from_slice(b" +0000");
}

/// The header fields the indexed columns hold.
#[derive(Debug, Default, PartialEq)]
struct Headers {
    subject: String,
    to: Option<String>,
    charset: String,
    content_type: String,
    attachments: i64,
    message_id: Option<String>,
    reply_to: String,
    sender: String,
}

impl Headers {
    /// A plain header section (the common, simple case) is read directly; any
    /// other goes through mail-parser. Both give the same columns: the property
    /// test `the_plain_path_gives_what_mail_parser_gives` holds them equal.
    fn extract(data: &[u8]) -> Self {
        match plain_headers::scan(data) {
            Some(plain) => {
                let mut headers = Self::from_plain(&plain);
                if data.len() > FULL_PARSE_MAX_BYTES {
                    // As `extract_parsed`: the count of a large message is a scan.
                    headers.attachments = count_attachment_dispositions(data);
                }
                headers
            }
            None => Self::extract_parsed(data),
        }
    }

    fn extract_parsed(data: &[u8]) -> Self {
        let parser = MessageParser::default();
        // The header section alone first: a single-part message needs nothing more,
        // and a full parse would decode (and UTF-8-check) its whole body only to
        // count zero or one attachment (a tenth of the CPU per 100 KB message).
        let Some(top) = parser.parse_headers(data) else {
            return Self {
                content_type: "text/plain".into(),
                ..Self::default()
            };
        };
        let attachments = if data.len() > FULL_PARSE_MAX_BYTES {
            count_attachment_dispositions(data)
        } else if top
            .content_type()
            .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        {
            parser.parse(data).map_or(0, |m| {
                i64::try_from(m.attachment_count()).unwrap_or(i64::MAX)
            })
        } else {
            single_part_attachments(&top)
        };
        Self::from_message(&top, attachments)
    }

    /// The same post-processing as [`Self::from_message`] (clipping, lowercasing,
    /// the single-part attachment rule) on the values of a plain section.
    fn from_plain(plain: &plain_headers::Plain<'_>) -> Self {
        let (content_type, charset, body_text) = match plain.content_type {
            Some((ctype, subtype, charset)) => (
                format!("{ctype}/{subtype}"),
                charset.unwrap_or_default(),
                ctype.eq_ignore_ascii_case("text")
                    && (subtype.eq_ignore_ascii_case("plain")
                        || subtype.eq_ignore_ascii_case("html")),
            ),
            None => ("text/plain".to_owned(), "", true),
        };
        Self {
            subject: clip(plain.subject.unwrap_or_default()),
            to: plain.to.map(clip),
            charset: clip(&charset.to_ascii_lowercase()),
            content_type: clip(&content_type.to_ascii_lowercase()),
            // As `single_part_attachments`; a plain section has no
            // Content-Disposition.
            attachments: i64::from(!body_text),
            message_id: plain.message_id.map(clip),
            reply_to: plain.reply_to.map(clip).unwrap_or_default(),
            sender: plain.sender.map(clip).unwrap_or_default(),
        }
    }

    fn from_message(message: &Message<'_>, attachments: i64) -> Self {
        let (content_type, charset) = match message.content_type() {
            Some(ct) => (
                match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                },
                ct.attribute("charset").unwrap_or_default().to_owned(),
            ),
            // RFC 2045 §5.2: no Content-Type means text/plain; charset=us-ascii.
            None => ("text/plain".to_owned(), String::new()),
        };
        Self {
            subject: clip(message.subject().unwrap_or_default()),
            to: first_address(message.to()),
            charset: clip(&charset.to_ascii_lowercase()),
            content_type: clip(&content_type.to_ascii_lowercase()),
            attachments,
            message_id: message.message_id().map(clip),
            reply_to: first_address(message.reply_to()).unwrap_or_default(),
            sender: first_address(message.sender()).unwrap_or_default(),
        }
    }
}

fn first_address(address: Option<&Address<'_>>) -> Option<String> {
    address
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(clip)
}

/// At most 255 characters, no control characters (they are never meaningful in
/// these columns and would only confuse the applications that display them).
fn clip(s: &str) -> String {
    // The common case, a short ASCII value without controls, is the value itself
    // (`char::is_control` is C0, DEL and C1; C1 is not ASCII).
    if s.len() <= MAX_TEXT_CHARS && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return s.to_owned();
    }
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT_CHARS)
        .collect()
}

/// The attachment count of a message that is not multipart, by the rule
/// mail-parser's full parse applies to a lone part (the tests hold the two equal):
/// it is the message body (0) when it is inline `text/plain` or `text/html` (or has
/// no Content-Type); any other type, or `Content-Disposition: attachment`, makes
/// the whole message one attachment.
fn single_part_attachments(top: &Message<'_>) -> i64 {
    let body_text = top.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_some_and(|sub| {
                sub.eq_ignore_ascii_case("plain") || sub.eq_ignore_ascii_case("html")
            })
    });
    let attached = top.content_disposition().is_some_and(|d| d.is_attachment());
    i64::from(attached || !body_text)
}

/// Best-effort attachment count for messages too large to parse in full.
fn count_attachment_dispositions(data: &[u8]) -> i64 {
    let finder = memchr::memmem::Finder::new(b"attachment");
    let count = data
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.len() >= 20
                && line
                    .get(..20)
                    .is_some_and(|h| h.eq_ignore_ascii_case(b"content-disposition:"))
                && finder.find(&line.to_ascii_lowercase()).is_some()
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    fn envelope(data: &[u8], rcpts: &[&str]) -> Envelope {
        Envelope {
            mail_from: "sender@example.org".into(),
            rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
            data: data.to_vec(),
            data_offset: 0,
            helo: "client.example".into(),
            esmtp: true,
            smtputf8: false,
            body_8bit: false,
            peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            is_tls: false,
        }
    }

    /// 2026-11-22 10:00:00 UTC, a Sunday.
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_341_600)
    }

    fn row(e: Envelope) -> MailRow {
        MailRow::new(e, QueueId([0xab; 16]), at(), "mx.test")
    }

    const HASH: &str = "abababababababababababababababab";

    #[test]
    fn received_header_for_one_recipient_then_the_message_byte_exact() {
        let data = b"Subject: hi\r\n\r\nbody\r\n";
        let r = row(envelope(data, &["rcpt@example.com"]));
        let expected = format!(
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.test with ESMTP id {HASH}\r\n\
             \tfor <rcpt@example.com>; Sun, 22 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(String::from_utf8(r.mail).unwrap(), expected);
        assert_eq!(r.date, "2026-11-22 10:00:00");
        assert_eq!(r.size, data.len() as i64);
        assert_eq!(r.ip_addr, "192.0.2.7");
    }

    #[test]
    fn received_header_variants() {
        let mut e = envelope(b"x\r\n", &["a@example.com", "b@example.com"]);
        e.esmtp = false;
        e.peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let text = String::from_utf8(row(e.clone()).mail).unwrap();
        assert!(text.starts_with(&format!(
            "Received: from client.example ([IPv6:2001:db8::1])\r\n\tby mx.test with SMTP id {HASH};\r\n\tSun, 22 Nov 2026"
        )));
        assert!(!text.contains("a@example.com"));
        for (esmtp, tls, utf8, proto) in [
            (true, true, false, "ESMTPS"),
            (true, false, true, "UTF8SMTP"),
            (true, true, true, "UTF8SMTPS"),
        ] {
            e.esmtp = esmtp;
            e.is_tls = tls;
            e.smtputf8 = utf8;
            let text = String::from_utf8(row(e.clone()).mail).unwrap();
            assert!(
                text.contains(&format!(" with {proto} id ")),
                "{proto}: {text}"
            );
        }
        // IPv4-mapped IPv6 is stored as IPv4.
        e.peer = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
        let r = row(e);
        assert_eq!(r.ip_addr, "192.0.2.9");
        assert!(String::from_utf8(r.mail).unwrap().contains("([192.0.2.9])"));
    }

    #[test]
    fn helo_cannot_inject_header_lines() {
        let mut e = envelope(b"x\r\n", &["a@example.com"]);
        e.helo = "evil\r\nX-Injected: 1".into();
        let text = String::from_utf8(row(e).mail).unwrap();
        assert!(!text.contains("\r\nX-Injected"));
        assert!(text.starts_with("Received: from evil??X-Injected:?1 ("));
    }

    #[test]
    fn header_fields() {
        let data = b"From: Alice <alice@example.org>\r\nTo: \"Bob\" <bob@example.com>, carol@example.com\r\n\
Reply-To: replies@example.org\r\nSender: list@example.org\r\nMessage-ID: <abc.123@example.org>\r\n\
Subject: =?UTF-8?B?SGVsbG8gd8O2cmxk?=\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\nhi\r\n";
        let r = row(envelope(data, &["bob@example.com"]));
        assert_eq!(r.subject, "Hello wörld");
        assert_eq!(r.to_header.as_deref(), Some("bob@example.com"));
        assert_eq!(r.reply_to, "replies@example.org");
        assert_eq!(r.sender, "list@example.org");
        assert_eq!(r.message_id, "abc.123@example.org");
        assert_eq!(r.content_type, "text/plain");
        assert_eq!(r.charset, "utf-8");
        assert_eq!(r.has_attach, 0);
        assert_eq!(r.from, "sender@example.org");
    }

    #[test]
    fn multipart_attachments_are_counted() {
        let data = b"Subject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee attached\r\n\
--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n\
--b1\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"b.png\"\r\n\r\nxx\r\n--b1--\r\n";
        let r = row(envelope(data, &["x@example.com"]));
        assert_eq!(r.content_type, "multipart/mixed");
        assert_eq!(r.has_attach, 2);
        assert_eq!(count_attachment_dispositions(data), 2);
    }

    #[test]
    fn missing_headers_get_defaults() {
        let r = row(envelope(b"", &["x@example.com"]));
        assert_eq!(r.subject, "");
        assert_eq!(r.to_header, None);
        assert_eq!(r.content_type, "text/plain");
        assert_eq!(r.message_id, format!("{HASH}@mx.test"));
        let r = row(envelope(
            b"just a body line, no headers\r\n",
            &["x@example.com"],
        ));
        assert_eq!(r.content_type, "text/plain");
    }

    #[test]
    fn long_subjects_are_clipped_to_255_characters() {
        let data = format!("Subject: {}\r\n\r\n", "ü".repeat(400));
        let r = row(envelope(data.as_bytes(), &["x@example.com"]));
        assert_eq!(r.subject.chars().count(), 255);
    }

    /// Single-part messages skip the full parse: the count must be what the full
    /// parse gives, for every type, disposition and encoding.
    #[test]
    fn single_part_count_equals_the_full_parse() {
        let types = [
            None,
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("TEXT/PLAIN"),
            Some("Text/Html; charset=\"iso-8859-1\""),
            Some("text/plain; name=\"notes.txt\""),
            Some("text/calendar; method=REQUEST"),
            Some("text/csv"),
            Some("text"),
            Some("image/png"),
            Some("application/pdf; name=a.pdf"),
            Some("application/octet-stream"),
            Some("message/rfc822"),
            Some("message/delivery-status"),
            Some("audio/ogg"),
            Some("garbage"),
        ];
        let dispositions = [
            None,
            Some("inline"),
            Some("attachment"),
            Some("ATTACHMENT; filename=\"x.bin\""),
            Some("inline; filename=pic.png"),
            Some("form-data"),
        ];
        let encodings = [
            (None, "hello there\r\nsecond line \u{fc}\r\n"),
            (Some("base64"), "aGVsbG8gdGhlcmUK\r\n"),
            (
                Some("quoted-printable"),
                "caf=C3=A9 and =\r\nsoft break\r\n",
            ),
            (Some("7bit"), "plain\r\n"),
        ];
        let parser = MessageParser::default();
        let mut checked = 0;
        for ct in types {
            for cd in dispositions {
                for (cte, body) in encodings {
                    let mut m =
                        String::from("From: a@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n");
                    if let Some(ct) = ct {
                        m.push_str(&format!("Content-Type: {ct}\r\n"));
                    }
                    if let Some(cd) = cd {
                        m.push_str(&format!("Content-Disposition: {cd}\r\n"));
                    }
                    if let Some(cte) = cte {
                        m.push_str(&format!("Content-Transfer-Encoding: {cte}\r\n"));
                    }
                    m.push_str("\r\n");
                    m.push_str(body);
                    let full = parser.parse(m.as_bytes()).unwrap().attachment_count() as i64;
                    let row = row(envelope(m.as_bytes(), &["x@example.com"]));
                    assert_eq!(row.has_attach, full, "{m}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 16 * 6 * 4);
    }

    /// The plain path is taken for common shapes (so the differential test below
    /// exercises it) and agrees with mail-parser on each of them.
    #[test]
    fn plain_sections_agree_with_mail_parser() {
        for data in [
            &b"From: bench@bench.invalid\r\nTo: sink@example.com\r\nSubject: smtp-bench\r\nMessage-ID: <bench@bench.invalid>\r\n\r\nx"[..],
            b"To: Bob Smith <bob@example.com>\r\nReply-To: <r@example.org>\r\nSender: s@example.org\r\nSubject:   spaced   out  \r\n\r\n",
            b"Content-Type: TEXT/HTML; charset=\"UTF-8\"\r\nSubject:\r\nTo:\r\nMessage-ID:\r\n\r\n",
            b"Content-Type: image/png\r\n\r\n",
            b"Content-Type: text/plain;charset=ISO-8859-1\r\nMessage-ID: <plainword>\r\n\r\n",
            b"\r\nno headers at all\r\n",
        ] {
            let text = String::from_utf8_lossy(data);
            assert!(plain_headers::scan(data).is_some(), "{text}");
            assert_eq!(Headers::extract(data), Headers::extract_parsed(data), "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// The hand-written `date` column is chrono's text, to the year 9999.
        #[test]
        fn the_date_column_is_chrono_s_text(secs in 0i64..253_402_300_800, nanos in 0u32..1_000_000_000) {
            let at = DateTime::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(column_date(&at), at.format("%Y-%m-%d %H:%M:%S").to_string());
        }

        /// The `Received:` date is chrono's RFC 2822 text, leap seconds included.
        #[test]
        fn the_received_date_is_chrono_s_rfc2822(secs in 0i64..253_402_300_800, nanos in 0u32..2_000_000_000) {
            let at = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
            let mut out = Vec::new();
            push_rfc2822(&mut out, &at);
            prop_assert_eq!(String::from_utf8(out).unwrap(), at.to_rfc2822());
        }

        /// The HELO name in `Received:` is the client's with controls and spaces
        /// replaced by `?`, whatever it holds.
        #[test]
        fn the_received_helo_is_the_sanitised_name(helo in "(\\PC|[ \\x00-\\x1f\\x7f\\u{80}-\\u{9f}]){0,80}") {
            let mut e = envelope(b"Subject: x\r\n\r\nbody\r\n", &["x@example.com"]);
            e.helo = helo.clone();
            let rule: String = helo.chars().map(|c| if c.is_control() || c == ' ' { '?' } else { c }).collect();
            let r = row(e);
            let text = String::from_utf8_lossy(&r.mail).into_owned();
            let want = format!("Received: from {rule} ([");
            prop_assert!(text.starts_with(&want), "{}", text);
        }

        /// The short-ASCII shortcut of `clip` gives what the general rule gives.
        #[test]
        fn clip_is_the_filter_and_take_rule(
            s in prop_oneof![
                "[ -~\\x00-\\x1f\\x7f]{0,300}",
                "(\\PC|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]){0,300}",
            ],
        ) {
            let rule: String = s.chars().filter(|c| !c.is_control()).take(MAX_TEXT_CHARS).collect();
            prop_assert_eq!(clip(&s), rule);
        }

        /// Whatever a client sends, a row comes out and `mail` ends with it exactly.
        #[test]
        fn any_bytes_give_a_row(data in prop::collection::vec(any::<u8>(), 0..3000)) {
            let r = row(envelope(&data, &["x@example.com"]));
            prop_assert!(r.mail.ends_with(&data));
            prop_assert!(r.subject.chars().count() <= 255);
            let full = MessageParser::default().parse(&data).map_or(0, |m| m.attachment_count() as i64);
            prop_assert_eq!(r.has_attach, full);
        }

        /// Header soup from MIME-relevant pieces (duplicates, bad encodings,
        /// multipart without a boundary): still the full parse's count.
        #[test]
        fn attachment_count_equals_the_full_parse(
            headers in prop::collection::vec(prop::sample::select(vec![
                "Content-Type: text/plain\r\n",
                "Content-Type: text/html; charset=utf-8\r\n",
                "Content-Type: text/enriched\r\n",
                "Content-Type: image/gif\r\n",
                "Content-Type: multipart/mixed\r\n",
                "Content-Type: multipart/alternative; boundary=zz\r\n",
                "Content-Type: message/rfc822\r\n",
                "Content-Type: ;;\r\n",
                "Content-Disposition: attachment\r\n",
                "Content-Disposition: inline\r\n",
                "Content-Transfer-Encoding: base64\r\n",
                "Content-Transfer-Encoding: quoted-printable\r\n",
                "Subject: s\r\n",
                " folded continuation\r\n",
            ]), 0..6),
            body in prop::sample::select(vec![
                "", "aGk=\r\n", "!!not base64!!\r\n", "=ZZ=\r\n", "--zz\r\n\r\nx\r\n--zz--\r\n",
                "--zz\r\nContent-Type: application/zip\r\n\r\nPK\r\n--zz--\r\n",
            ]),
        ) {
            let data = format!("{}\r\n{body}", headers.concat());
            let r = row(envelope(data.as_bytes(), &["x@example.com"]));
            let parsed = MessageParser::default().parse(data.as_bytes());
            // One deliberate difference: a lone text/html part whose transfer
            // encoding does not decode is, to mail-parser, an attachment; it is
            // still the message's body, so we count 0.
            let broken_single_part = parsed.as_ref().is_some_and(|m| {
                m.parts.len() == 1 && m.parts.first().is_some_and(|p| p.is_encoding_problem)
            });
            prop_assume!(!broken_single_part);
            let full = parsed.map_or(0, |m| m.attachment_count() as i64);
            prop_assert_eq!(r.has_attach, full, "{}", data);
        }
    }

    proptest! {
        // Most generated sections are not plain; at this count ≈ 250 plain ones with
        // headers are compared per run.
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]
        /// Differential: header sections built from the pieces that change how a
        /// field is read (names in any case, encoded words, quotes, comments, groups,
        /// lists, folding, bare LF, tabs, 8-bit, repeats, Content-Type parameters) give
        /// the same columns on the plain path as through mail-parser. A section the
        /// plain path takes must agree; one it declines is mail-parser's anyway.
        #[test]
        fn the_plain_path_gives_what_mail_parser_gives(
            lines in prop::collection::vec((
                prop::sample::select(vec![
                    "Subject", "subject", "SUBJECT", "To", "to", "Reply-To", "reply-TO",
                    "Sender", "Message-ID", "message-id", "Message-Id", "Content-Type",
                    "content-type", "Content-Disposition", "From", "Date", "Received",
                    "X-Other", "Cc", "MIME-Version", "Sub ject", "",
                ]),
                prop_oneof![8 => Just(": "), 1 => Just(":"), 1 => Just(":  "), 1 => Just(" :")],
                // Mostly pieces a plain section may hold, sometimes one that makes
                // it not plain, so both paths are compared often.
                prop::collection::vec(prop_oneof![
                    6 => prop::sample::select(vec![
                        "a", "Bob", "bob@example.com", "x.y+z@mail.example.org", "<a@b.c>",
                        "<id-1.2@host>", "<word>", " ", "  ", "text/plain", "text/html",
                        "TEXT/PLAIN", "image/png", "application/pdf", "text", "/",
                        "; charset=utf-8", ";charset=\"ISO-8859-1\"", "; CHARSET=us-ascii",
                        "Bob Smith <b@c.d>",
                    ]),
                    1 => prop::sample::select(vec![
                        "<>", "<a", ">", "@", "a@", "@b", "\t", "\"Bob\"", "(comment)", ",",
                        ";", ":", "grp:", "multipart/mixed", "; name=x", "charset=",
                        "=?utf-8?q?caf=C3=A9?=", "=?", "?=", "=", "\u{e9}", "\\", "\"",
                        "'", "!", "#",
                    ]),
                ], 0..5),
                prop_oneof![
                    12 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r\n "),
                    1 => Just("\r\n\t"), 1 => Just("\r"),
                ],
            ), 0..7),
            end in prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just("")],
        ) {
            let mut data = String::new();
            for (name, colon, value, eol) in &lines {
                data.push_str(name);
                data.push_str(colon);
                data.push_str(&value.concat());
                data.push_str(eol);
            }
            data.push_str(end);
            data.push_str("body\r\n");
            prop_assert_eq!(
                Headers::extract(data.as_bytes()),
                Headers::extract_parsed(data.as_bytes()),
                "{:?}", data
            );
        }
    }
}
