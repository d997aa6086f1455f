//! MIME building blocks shared by [`crate::template`] and [`crate::dsn`], on top of
//! `mail-builder` (which writes the header fields, RFC 2047 encoded-words, folding,
//! dates, Message-IDs and the multipart tree).
//!
//! Owns: the per-part Content-Transfer-Encoding (RFC 2045 §6) — choosing one, or honouring
//! the one a sender forced — and the choice of how a header value goes on the wire
//! (as is, folded, or as RFC 2047 encoded-words). Must not: do I/O or panic on any input.
//!
//! Why some of this is still ours: `mail-builder` 1.0 picks a part's encoding itself, and its
//! only override, `MimePart::transfer_encoding`, writes the header and then the body *raw*.
//! So to force 7bit / quoted-printable / base64 per part we encode the body here (with
//! `mail-builder`'s own encoders) and hand it over already encoded.

use std::borrow::Cow;

use mail_builder::encoders::{Base64Encoder, QuotedPrintableEncoder};
use mail_builder::headers::HeaderType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};

/// RFC 5322 §2.1.1 hard limit for a line, excluding CRLF.
pub const MAX_LINE: usize = 998;

/// Content-Transfer-Encoding of one body part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    SevenBit,
    QuotedPrintable,
    Base64,
}

impl TransferEncoding {
    pub fn header_value(self) -> &'static str {
        match self {
            TransferEncoding::SevenBit => "7bit",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Base64 => "base64",
        }
    }
}

/// Converts CRLF, lone LF and lone CR to CRLF. Text/* bodies must be in canonical CRLF form
/// before any transfer encoding (RFC 2045 §6.8), and a lone CR is never legal on the wire.
pub fn to_crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32 + 2);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 2045 §2.7 "7bit data": ASCII, no NUL, lines ≤ 998 octets. Expects CRLF-normalised text.
pub fn fits_7bit(normalised: &str) -> bool {
    normalised.bytes().all(|b| b != 0 && b.is_ascii())
        && normalised.split("\r\n").all(|line| line.len() <= MAX_LINE)
}

/// Picks the cheapest correct encoding: 7bit when all bytes are ASCII (no NUL) and every
/// line ≤ 998 octets; quoted-printable when most bytes (≥ ~80%) are printable ASCII;
/// base64 otherwise. (`mail-builder`'s own choice differs, and senders rely on this one.)
pub fn choose_encoding(body: &str) -> TransferEncoding {
    let normalised = to_crlf(body);
    if fits_7bit(&normalised) {
        return TransferEncoding::SevenBit;
    }
    let total = normalised.len();
    let printable = normalised
        .bytes()
        .filter(|&b| matches!(b, b'\t' | b'\r' | b'\n' | 0x20..=0x7e))
        .count();
    // QP costs 3 bytes per unprintable byte, base64 a flat 4/3: at ~80% printable QP still
    // wins and stays human-readable, below that base64 is smaller.
    if printable.saturating_mul(5) >= total.saturating_mul(4) {
        TransferEncoding::QuotedPrintable
    } else {
        TransferEncoding::Base64
    }
}

/// Why a forced 7bit cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSevenBit;

/// Encodes one text body (CRLF-normalised first); returns the encoding used and the wire
/// text, CRLF line breaks, lines ≤ 76 for QP and base64 (RFC 2045 §6.7, §6.8).
pub fn encode_text(
    body: &str,
    forced: Option<TransferEncoding>,
) -> Result<(TransferEncoding, String), NotSevenBit> {
    let normalised = to_crlf(body);
    let encoding = forced.unwrap_or_else(|| choose_encoding(&normalised));
    let mut encoded = Vec::with_capacity(normalised.len().saturating_mul(2));
    match encoding {
        TransferEncoding::SevenBit if fits_7bit(&normalised) => return Ok((encoding, normalised)),
        TransferEncoding::SevenBit => return Err(NotSevenBit),
        // Keeps our CRLFs as hard line breaks and soft-wraps at 76 with "=\r\n".
        TransferEncoding::QuotedPrintable => QuotedPrintableEncoder::new()
            .preserve_line_breaks()
            .encode_into(normalised.as_bytes(), &mut encoded),
        TransferEncoding::Base64 => Base64Encoder::new()
            .wrap_lines()
            .encode_into(normalised.as_bytes(), &mut encoded),
    };
    // Both encoders emit ASCII only, so nothing is replaced here.
    let encoded = String::from_utf8_lossy(&encoded).into_owned();
    Ok((encoding, encoded))
}

/// A leaf part whose body is already in its transfer encoding: `mail-builder` writes the
/// two header fields and then the body untouched.
///
/// `Content-Type` goes in as a raw value, not a `ContentType`, because `mail-builder` quotes
/// every parameter (`charset="utf-8"`) and the unquoted form is what we have always sent.
pub fn encoded_part<'x>(
    content_type: impl Into<Cow<'x, str>>,
    encoding: &'x str,
    body: impl Into<BodyPart<'x>>,
) -> MimePart<'x> {
    MimePart {
        headers: vec![
            ("Content-Type".into(), Raw::new(content_type).into()),
            (
                "Content-Transfer-Encoding".into(),
                Raw::new(encoding).into(),
            ),
        ],
        contents: body.into(),
    }
}

/// A `multipart/*` part with our own boundary (see [`crate::template`] for why it is ours)
/// and extra Content-Type parameters such as `report-type=delivery-status`.
pub fn multipart<'x>(
    subtype_and_params: &str,
    boundary: &str,
    parts: Vec<MimePart<'x>>,
) -> MimePart<'x> {
    MimePart {
        headers: vec![(
            "Content-Type".into(),
            Raw::new(format!(
                "multipart/{subtype_and_params}; boundary=\"{boundary}\""
            ))
            .into(),
        )],
        contents: BodyPart::Multipart(parts),
    }
}

/// How an unstructured header value (already free of CR/LF) goes on the wire.
///
/// ASCII that can be folded at whitespace goes as is (`mail-builder` folds it); non-ASCII
/// becomes RFC 2047 encoded-words; so does ASCII with a run too long for one line
/// (RFC 5322 §2.1.1: 998 octets), the only lossless way to carry it — `mail-builder`'s
/// `Text` would also encode merely long ASCII, which mail clients show but filters and
/// people reading raw headers do not like.
pub fn header_value<'x>(name: &str, value: impl Into<Cow<'x, str>>) -> HeaderType<'x> {
    let value = value.into();
    let longest_run = value.split([' ', '\t']).map(str::len).max().unwrap_or(0);
    // The first run shares its line with "Name: ".
    if value.is_ascii() && longest_run.saturating_add(name.len() + 2) <= MAX_LINE {
        Raw::new(value).into()
    } else {
        Text::new(value).into()
    }
}

/// Writes one `Name: value` field with `mail-builder` (folded, CRLF-terminated).
pub fn write_field(out: &mut Vec<u8>, name: &str, value: &HeaderType<'_>) {
    use mail_builder::headers::Header as _;
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    value.write_header(out, name.len() + 2);
}

/// What we build, read back by two parsers that are not ours: mail-parser (the one the
/// relay reads bounces with) and Python's `email` package (what many receivers resemble),
/// via `tests/outbound/fixtures/mime_dump.py`.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic by design
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use chrono::{TimeZone as _, Utc};
    use mail_parser::{HeaderForm, MessageParser, MimeHeaders as _};
    use serde_json::Value;

    use super::TransferEncoding::{self, Base64, QuotedPrintable, SevenBit};
    use crate::{dsn, template};

    /// `mime_dump.py`'s JSON for `message`; fails the test on any defect Python reports.
    fn python(message: &[u8]) -> Value {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/outbound/fixtures/mime_dump.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test installs it)");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["defects"], Value::Array(vec![]), "Python saw defects");
        v
    }

    fn py_header<'a>(fields: &'a Value, name: &str) -> &'a str {
        fields
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .and_then(|f| f[1].as_str())
            .unwrap_or_else(|| panic!("Python found no {name}"))
    }

    fn parser() -> MessageParser {
        MessageParser::default()
    }

    /// A field mail-parser does not know, decoded as unstructured text (it keeps such
    /// fields raw otherwise).
    fn text_field(m: &mail_parser::Message<'_>, name: &str) -> Option<String> {
        m.header_as(name.to_owned(), HeaderForm::Text)
            .into_iter()
            .find_map(|v| v.as_text().map(str::to_owned))
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn render(t: &template::Template, extra: &[(String, String)]) -> Vec<u8> {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 5, 9).unwrap();
        let p = params(&[("Name", "Zoë")]);
        template::render(t, &p, "bob@example.org", "mail.example.com", extra, now).unwrap()
    }

    fn template(text: Option<&str>, html: Option<&str>) -> template::Template {
        template::Template {
            from: "\"Élodie Dupont\" <news@example.com>".into(),
            subject: "Les nouveautés pour [Name] ☕".into(),
            text: text.map(Into::into),
            html: html.map(Into::into),
            ..template::Template::default()
        }
    }

    /// The mail-parser Content-Transfer-Encoding of a part, as written.
    fn cte(part: &mail_parser::MessagePart<'_>) -> String {
        part.headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case("Content-Transfer-Encoding"))
            .and_then(|h| h.value().as_text().map(str::to_owned))
            .unwrap()
    }

    #[test]
    fn alternative_text_and_html_parse_in_mail_parser_and_python() {
        let t = template(
            Some("Bonjour [Name],\nles crêpes sont prêtes.\n"),
            Some("<p>Bonjour <b>[Name]</b></p>\n<p>你好，世界。这是一封测试邮件。</p>\n"),
        );
        let msg = render(&t, &[]);
        let text = "Bonjour Zoë,\r\nles crêpes sont prêtes.\r\n";
        let html = "<p>Bonjour <b>Zoë</b></p>\r\n<p>你好，世界。这是一封测试邮件。</p>\r\n";

        let m = parser().parse(&msg).unwrap();
        let ct = m.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        assert_eq!(m.parts.len(), 3, "root and two leaves");
        assert_eq!(m.body_text(0).unwrap(), text);
        assert_eq!(m.body_html(0).unwrap(), html);
        assert_eq!(m.date().unwrap().to_rfc3339(), "2026-03-01T08:05:09Z");
        assert!(m.message_id().unwrap().ends_with("@mail.example.com"));
        // mail-builder writes the day of month without a leading zero (RFC 5322 §3.3
        // allows 1 or 2 digits); our hand-written Date padded it.
        let wire = String::from_utf8_lossy(&msg);
        assert!(
            wire.contains("\r\nDate: Sun, 1 Mar 2026 08:05:09 +0000\r\n"),
            "{wire}"
        );

        let py = python(&msg);
        assert_eq!(py["content_type"], "multipart/alternative");
        assert_eq!(py["preamble"], "", "no preamble text");
        let parts = py["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0]["content_type"], "text/plain");
        assert_eq!(parts[0]["body"], text);
        assert_eq!(parts[1]["content_type"], "text/html");
        assert_eq!(parts[1]["body"], html);
        assert_eq!(
            py_header(&py["headers"], "Date"),
            "Sun, 01 Mar 2026 08:05:09 +0000"
        );
    }

    #[test]
    fn non_ascii_subject_and_display_name_decode_in_mail_parser_and_python() {
        let msg = render(
            &template(Some("b"), None),
            &[("X-Note".into(), "Grüße aus Köln".into())],
        );
        let head = &msg[..memchr::memmem::find(&msg, b"\r\n\r\n").unwrap()];
        assert!(head.is_ascii(), "RFC 2047: headers stay ASCII");

        let m = parser().parse(&msg).unwrap();
        assert_eq!(m.subject(), Some("Les nouveautés pour Zoë ☕"));
        let from = m.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Élodie Dupont"));
        assert_eq!(from.address(), Some("news@example.com"));
        assert_eq!(text_field(&m, "X-Note").as_deref(), Some("Grüße aus Köln"));

        let py = python(&msg);
        assert_eq!(
            py_header(&py["headers"], "Subject"),
            "Les nouveautés pour Zoë ☕"
        );
        assert_eq!(py["from"]["name"], "Élodie Dupont");
        assert_eq!(py["from"]["addr"], "news@example.com");
        assert_eq!(py_header(&py["headers"], "X-Note"), "Grüße aus Köln");
    }

    #[test]
    fn long_headers_fold_and_unfold_in_mail_parser_and_python() {
        let words = "word ".repeat(60).trim().to_owned();
        let cjk = "日本語の件名はとても長くなることがあります。".repeat(6);
        let run = "x".repeat(1500);
        let mut t = template(Some("b"), None);
        t.subject = words.clone();
        let extra = vec![
            ("X-Cjk".to_owned(), cjk.clone()),
            ("X-Run".to_owned(), run.clone()),
        ];
        let msg = render(&t, &extra);
        let head = &msg[..memchr::memmem::find(&msg, b"\r\n\r\n").unwrap()];
        for line in head.split(|&b| b == b'\n') {
            assert!(line.len() <= 79, "{}", String::from_utf8_lossy(line));
        }

        let m = parser().parse(&msg).unwrap();
        // Unfolding keeps the whitespace a fold stood in (RFC 5322 §2.2.3).
        assert_eq!(m.subject(), Some(words.as_str()));
        assert_eq!(text_field(&m, "X-Cjk").as_deref(), Some(cjk.as_str()));
        assert_eq!(text_field(&m, "X-Run").as_deref(), Some(run.as_str()));

        let py = python(&msg);
        assert_eq!(py_header(&py["headers"], "Subject"), words);
        assert_eq!(py_header(&py["headers"], "X-Cjk"), cjk);
        assert_eq!(py_header(&py["headers"], "X-Run"), run);
    }

    #[test]
    fn each_forced_encoding_decodes_in_mail_parser_and_python() {
        let text = "plain [Name] text\nline = two  \n.\n";
        let html = "<p>[Name] = <i>html</i></p>\n";
        let encodings: [TransferEncoding; 3] = [SevenBit, QuotedPrintable, Base64];
        for (forced_text, forced_html) in encodings.iter().zip(encodings.iter().rev()) {
            let mut t = template(Some(text), Some(html));
            // 7bit cannot carry the ë of Zoë: an ASCII name for this test.
            t.from = "News <news@example.com>".into();
            t.text = Some(text.replace("[Name]", "Bob"));
            t.html = Some(html.replace("[Name]", "Bob"));
            t.text_encoding = Some(*forced_text);
            t.html_encoding = Some(*forced_html);
            let msg = render(&t, &[]);
            // Trailing blanks survive (QP writes them as =20, RFC 2045 §6.7 rule 3).
            let want_text = "plain Bob text\r\nline = two  \r\n.\r\n";
            let want_html = "<p>Bob = <i>html</i></p>\r\n";

            let m = parser().parse(&msg).unwrap();
            assert_eq!(cte(&m.parts[1]), forced_text.header_value());
            assert_eq!(cte(&m.parts[2]), forced_html.header_value());
            assert_eq!(m.body_text(0).unwrap(), want_text);
            assert_eq!(m.body_html(0).unwrap(), want_html);

            let py = python(&msg);
            let parts = py["parts"].as_array().unwrap();
            assert_eq!(parts[0]["cte"], forced_text.header_value());
            assert_eq!(parts[0]["body"], want_text);
            assert_eq!(parts[1]["cte"], forced_html.header_value());
            assert_eq!(parts[1]["body"], want_html);
        }
    }

    #[test]
    fn prepended_headers_parse_in_mail_parser_and_python() {
        let headers = vec![
            (
                "List-Unsubscribe".to_owned(),
                "<mailto:u@x.test>, <https://x.test/u/1>".to_owned(),
            ),
            ("X-Campagne".to_owned(), "Été [Name]".to_owned()),
        ];
        let raw = b"From: a@x.test\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
        let msg = template::prepend_headers(&headers, raw);
        let m = parser().parse(&msg).unwrap();
        assert_eq!(
            m.header_raw("List-Unsubscribe").map(str::trim),
            Some("<mailto:u@x.test>, <https://x.test/u/1>")
        );
        assert_eq!(
            text_field(&m, "X-Campagne").as_deref(),
            Some("Été [Name]"),
            "prepended values are not tag-filled"
        );
        assert_eq!(m.subject(), Some("s"));
        let py = python(&msg);
        assert_eq!(
            py_header(&py["headers"], "List-Unsubscribe"),
            "<mailto:u@x.test>, <https://x.test/u/1>"
        );
        assert_eq!(py_header(&py["headers"], "X-Campagne"), "Été [Name]");
    }

    #[test]
    fn dsn_three_parts_parse_in_mail_parser_and_python() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 5, 9).unwrap();
        let original = b"From: app@sender.test\nSubject: =?utf-8?B?w6l0w6k=?=\nX-Long: a\n b\n\n";
        let report = dsn::Report {
            reporting_mta: "relay.test",
            original_sender: "app@sender.test",
            recipient: "gone@a.test",
            action: dsn::Action::Failed,
            status: "5.1.1",
            remote_mta: Some("mx.a.test[192.0.2.1]:25"),
            diagnostic: "550 5.1.1 <gone@a.test>: No such user",
            diagnostic_is_smtp: true,
            arrival: now,
            now,
            original_headers: original,
            message_id_domain: "relay.test",
        };
        let msg = dsn::render(&report);

        let m = parser().parse(&msg).unwrap();
        let ct = m.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(m.parts.len(), 4, "root and three parts");
        let types: Vec<String> = m.parts[1..]
            .iter()
            .map(|p| {
                let ct = p.content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        // An explicit 7bit on the delivery-status part (it had none, which meant 7bit), and
        // no preamble text any more: mail-builder writes none.
        assert_eq!(cte(&m.parts[2]), "7bit");
        assert_eq!(cte(&m.parts[3]), "7bit");
        let status = String::from_utf8_lossy(m.parts[2].contents()).into_owned();
        assert!(
            status.starts_with("Reporting-MTA: dns; relay.test\r\n"),
            "{status}"
        );
        assert!(
            String::from_utf8_lossy(m.parts[3].contents()).contains("X-Long: a\r\n b\r\n"),
            "original headers kept as they were"
        );
        let bounce = dsn::parse_bounce(&msg);
        assert_eq!(bounce.status.as_deref(), Some("5.1.1"));
        assert_eq!(bounce.recipient.as_deref(), Some("gone@a.test"));

        let py = python(&msg);
        assert_eq!(py["content_type"], "multipart/report");
        assert_eq!(py["params"]["report-type"], "delivery-status");
        assert_eq!(py["preamble"], "");
        let parts = py["parts"].as_array().unwrap();
        let types: Vec<&str> = parts
            .iter()
            .map(|p| p["content_type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        assert!(
            parts[0]["body"]
                .as_str()
                .unwrap()
                .contains("<gone@a.test>: 550 5.1.1 <gone@a.test>: No such user")
        );
        let blocks = parts[1]["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2, "per-message and one per-recipient block");
        assert_eq!(py_header(&blocks[0], "Reporting-MTA"), "dns; relay.test");
        assert_eq!(
            py_header(&blocks[1], "Final-Recipient"),
            "rfc822; gone@a.test"
        );
        assert_eq!(py_header(&blocks[1], "Action"), "failed");
        assert_eq!(py_header(&blocks[1], "Status"), "5.1.1");
        assert_eq!(py_header(&blocks[1], "Remote-MTA"), "dns; mx.a.test");
        assert_eq!(
            py_header(&blocks[1], "Diagnostic-Code"),
            "smtp; 550 5.1.1 <gone@a.test>: No such user"
        );
        assert!(py_header(&py["headers"], "Message-ID").ends_with("@relay.test>"));
        assert_eq!(py_header(&py["headers"], "Auto-Submitted"), "auto-replied");
    }

    #[test]
    fn dsn_labels_non_ascii_original_headers_8bit() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 5, 9).unwrap();
        let report = dsn::Report {
            reporting_mta: "relay.test",
            original_sender: "app@sender.test",
            recipient: "gone@a.test",
            action: dsn::Action::Delayed,
            status: "4.4.7",
            remote_mta: None,
            diagnostic: "timed out",
            diagnostic_is_smtp: false,
            arrival: now,
            now,
            original_headers: "Subject: été\r\n".as_bytes(),
            message_id_domain: "relay.test",
        };
        let msg = dsn::render(&report);
        let m = parser().parse(&msg).unwrap();
        assert_eq!(cte(&m.parts[3]), "8bit");
        assert_eq!(m.parts[3].contents(), "Subject: été\r\n".as_bytes());
        let py = python(&msg);
        let blocks = py["parts"][1]["blocks"].as_array().unwrap();
        assert_eq!(py_header(&blocks[1], "Action"), "delayed");
        assert_eq!(
            py_header(&blocks[1], "Diagnostic-Code"),
            "x-local; timed out"
        );
    }
}
