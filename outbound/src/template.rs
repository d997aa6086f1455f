//! Per-recipient message rendering for outbound templates.
//!
//! Owns: `[Tag]` substitution, header sanitising (anti-injection) and filtering, which
//! header fields a rendered message carries and in what order, the Message-ID
//! (RFC 5322 §3.6.4) and the multipart boundary. The wire format itself — RFC 2047
//! encoded-words, folding (RFC 5322 §2.2.3), the Date (§3.3), the `multipart/alternative`
//! tree (RFC 2046 §5.1) — is written by `mail-builder`; per-part transfer encodings are
//! chosen and applied in [`crate::mime`].
//!
//! Must not: do I/O, dot-stuff the output (the SMTP client does that on DATA), or panic on
//! any input — templates and parameters come from the database and from third parties.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_parser::MessageParser;

pub use crate::mime::TransferEncoding;
#[cfg(test)]
use crate::mime::{MAX_LINE, choose_encoding, to_crlf};
use crate::mime::{encode_text, encoded_part, header_value, multipart, write_field};

/// Longest tag name recognised by [`fill`].
const MAX_TAG_LEN: usize = 64;
/// Longest header field name accepted from `extra_headers`; keeps the first line short.
const MAX_HEADER_NAME: usize = 76;
/// Headers `render` always writes itself; a duplicate from `extra_headers` would make the
/// message ambiguous (two Content-Type, two From...), so such extras are dropped.
const RESERVED_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

impl std::str::FromStr for TransferEncoding {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Values come from a DB column typed by humans, so tolerate case and padding.
        let t = s.trim();
        if t.eq_ignore_ascii_case("7bit") {
            Ok(TransferEncoding::SevenBit)
        } else if t.eq_ignore_ascii_case("quoted-printable") {
            Ok(TransferEncoding::QuotedPrintable)
        } else if t.eq_ignore_ascii_case("base64") {
            Ok(TransferEncoding::Base64)
        } else {
            Err(TemplateError::BadEncoding(s.to_owned()))
        }
    }
}

/// A message template as stored in the `outbound_templates` table.
#[derive(Debug, Clone, Default)]
pub struct Template {
    /// `From:` header value, e.g. `Example <news@example.com>`; may contain `[Tags]`.
    pub from: String,
    /// `Subject:` (may contain `[Tags]`, may be non-ASCII → RFC 2047 encoded-words).
    pub subject: String,
    /// Plain-text body (may contain `[Tags]`); None = no text part.
    pub text: Option<String>,
    /// HTML body (may contain `[Tags]`); None = no HTML part.
    pub html: Option<String>,
    /// Forced encoding for the text part; None = choose automatically.
    pub text_encoding: Option<TransferEncoding>,
    /// Forced encoding for the HTML part; None = choose automatically.
    pub html_encoding: Option<TransferEncoding>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template has neither a text nor an HTML body")]
    NoBody,
    #[error("unknown transfer encoding `{0}` (expected 7bit, quoted-printable or base64)")]
    BadEncoding(String),
    #[error("7bit cannot carry this {0} part (non-ASCII or a line over 998 bytes)")]
    SevenBitUnsuitable(&'static str),
    #[error("tag [{0}] has no value for this recipient")]
    MissingTag(String),
}

fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Replaces every `[Name]` tag (Name = 1..64 chars of ASCII letters, digits, '_', '-', '.')
/// with `params["Name"]`. A `[` not starting a valid tag is left as is (e.g. `"[ x ]"`,
/// `"[]"`, an unterminated `"["`). A valid tag with no entry in params is an error
/// (MissingTag): the relay must not send `"Hello [UserName]"` to a real person.
///
/// Substituted values are not rescanned, so a parameter containing `[Other]` cannot pull in
/// another recipient field.
pub fn fill(text: &str, params: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        // Slicing is safe: '[' , ']' and tag bytes are ASCII, hence char boundaries.
        let after = &rest[open + 1..];
        let name_len = after
            .bytes()
            .take(MAX_TAG_LEN + 1)
            .take_while(|&b| is_tag_byte(b))
            .count();
        if (1..=MAX_TAG_LEN).contains(&name_len) && after.as_bytes().get(name_len) == Some(&b']') {
            let name = &after[..name_len];
            match params.get(name) {
                Some(value) => out.push_str(value),
                None => return Err(TemplateError::MissingTag(name.to_owned())),
            }
            rest = &after[name_len + 1..];
        } else {
            // Not a tag: keep the '[' and rescan right after it, so "[`[Name]`" still fills.
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Encodes one body part, naming the part in the error when a forced 7bit cannot carry it.
fn encode_body(
    body: &str,
    forced: Option<TransferEncoding>,
    part: &'static str,
) -> Result<(TransferEncoding, String), TemplateError> {
    encode_text(body, forced).map_err(|_| TemplateError::SevenBitUnsuitable(part))
}

/// Makes a header value safe to emit: CR/LF (and other control characters, which have no
/// business in a header) become spaces, so a hostile parameter cannot start a new header
/// line. Leading/trailing whitespace is dropped so folding never leaves blank lines.
fn sanitize_header_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_control() && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    cleaned.trim().to_owned()
}

/// Encodes a header value per RFC 2047 when it contains non-ASCII (folded, words separated
/// by CRLF + space); returns it unchanged otherwise.
///
/// The value is not sanitised: callers that take it from untrusted input must strip CR/LF
/// from ASCII values themselves.
#[allow(dead_code)] // for callers building their own headers (DSNs)
pub fn encode_header_value(value: &str) -> String {
    if value.is_ascii() {
        return value.to_owned();
    }
    let mut out = Vec::new();
    write_field(&mut out, "X", &Text::new(value).into());
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("X: ")
        .unwrap_or(&text)
        .trim_end_matches("\r\n")
        .to_owned()
}

/// The `From` value: ASCII as written (folded); otherwise, when it is `Name <addr>` with
/// an ASCII address, only the display name becomes encoded-words (an encoded address
/// would be undeliverable); otherwise the whole value is encoded. `mail-parser` splits the
/// address (quoted names, escapes, comments) and `mail-builder` writes it back.
fn from_value(value: &str) -> HeaderType<'static> {
    if value.is_ascii() {
        return header_value("From", value.to_owned());
    }
    let field = format!("From: {value}\r\n\r\n");
    let parsed = MessageParser::new().parse_headers(field.as_bytes());
    let single = parsed.as_ref().and_then(|m| match m.from()?.as_list()? {
        [only] => Some((only.name().map(str::to_owned), only.address()?.to_owned())),
        _ => None,
    });
    // An unquoted comma in the name ("Müller, Hans <h@x>") reads as two addresses to an
    // RFC 5322 parser; such names were always sent as one name, so keep them whole.
    let split = single.or_else(|| {
        let (name, rest) = value.rsplit_once('<')?;
        let address = rest.strip_suffix('>')?;
        let name = name.trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        Some((Some(name.to_owned()), address.to_owned()))
    });
    match split {
        Some((name, address)) if address.is_ascii() && !address.contains(['<', '>']) => {
            let name = name.filter(|n| !n.trim().is_empty());
            Address::new_address(name.map(|n| n.trim().to_owned()), address).into()
        }
        _ => Text::new(value.to_owned()).into(),
    }
}

/// RFC 5322 field-name: printable ASCII except ':' (anything else could break the header).
fn extra_header_allowed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
        && !RESERVED_HEADERS
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(name))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 random bits from the OS; if that fails, a process-unique mix of a counter, the clock
/// and the pid, so Message-IDs stay unique and rendering never fails for lack of entropy.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    match getrandom::fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let count = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
            let pid = u64::from(std::process::id());
            // splitmix64 is a bijection, so distinct counters give distinct outputs.
            splitmix64(count ^ nanos.rotate_left(21) ^ (pid << 40))
        }
    }
}

/// Keeps only characters valid in a dot-atom domain, so the Message-ID stays parseable
/// whatever the configuration says.
fn sanitize_id_domain(domain: &str) -> String {
    let cleaned: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(253)
        .collect();
    let trimmed = cleaned.trim_matches('.');
    if trimmed.is_empty() {
        "localhost".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `msec.random@domain` (written in angle brackets by `mail-builder`). Ours rather than
/// `mail-builder`'s generated one because the domain is configured (`message_id_domain`),
/// not the local host name, and the milliseconds let an operator date a message by its id.
fn message_id(id_domain: &str, now: DateTime<Utc>) -> String {
    format!(
        "{}.{:016x}@{}",
        now.timestamp_millis(),
        random_u64(),
        sanitize_id_domain(id_domain)
    )
}

/// A boundary absent from every part. Ours rather than `mail-builder`'s (time and counter
/// based, never checked against the content) because a template body is third-party text:
/// candidates share a random prefix and differ in a fixed-width counter, so each position
/// of the content can rule out at most one of them, and the loop ends after at most
/// `total length + 1` tries even if the content is adversarial.
fn pick_boundary(parts: &[&str]) -> String {
    let seed = random_u64();
    let total = parts.iter().map(|p| p.len() as u64).sum::<u64>();
    let candidate = |attempt: u64| format!("=_{seed:016x}{attempt:016x}");
    for attempt in 0..=total {
        let boundary = candidate(attempt);
        if !parts.iter().any(|p| p.contains(&boundary)) {
            return boundary;
        }
    }
    // Unreachable by the pigeonhole argument above; still a valid boundary syntactically.
    candidate(total.wrapping_add(1))
}

/// `headers` that may be written, as `mail-builder` header values: each value sanitised
/// (CR/LF and controls become spaces) and RFC 2047 encoded when non-ASCII; a header with
/// an invalid field name or one of the names [`render`] writes itself is dropped.
fn allowed_headers(headers: &[(String, String)]) -> Vec<(String, HeaderType<'static>)> {
    headers
        .iter()
        .filter(|(name, _)| extra_header_allowed(name))
        .map(|(name, value)| {
            let value = header_value(name, sanitize_header_value(value));
            (name.clone(), value)
        })
        .collect()
}

/// `headers` as header lines (see `allowed_headers`). [`render`] writes its extra headers
/// the same way and [`prepend_headers`] adds headers to any message with it, so a header
/// comes out the same on every path.
pub fn header_lines(headers: &[(String, String)]) -> String {
    let mut out = Vec::new();
    for (name, value) in allowed_headers(headers) {
        write_field(&mut out, &name, &value);
    }
    // mail-builder writes ASCII only (encoded-words for the rest).
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` (a whole RFC 5322 message, raw or rendered) with `headers` written
/// by [`header_lines`] in front of its own: how the relay adds headers of its own
/// (List-Unsubscribe) to raw and template messages alike.
pub fn prepend_headers(headers: &[(String, String)], message: Vec<u8>) -> Vec<u8> {
    if headers.is_empty() {
        return message;
    }
    let lines = header_lines(headers);
    let mut out = Vec::with_capacity(lines.len() + message.len());
    out.extend_from_slice(lines.as_bytes());
    out.extend_from_slice(&message);
    out
}

/// Renders the whole message for one recipient: headers + body, CRLF line endings throughout,
/// ready for SMTP DATA (the caller does dot-stuffing; this must NOT dot-stuff).
///
/// Headers, in order: From, To, Subject, Date, Message-ID, MIME-Version, `extra_headers`,
/// Content-Type, Content-Transfer-Encoding. Tags are filled in from, subject, text and html.
/// Every header value has CR/LF replaced by spaces (no header injection), non-ASCII is
/// RFC 2047 encoded (only the display name of `From`), and lines are folded to ≤ 998 octets.
/// Extra headers with an invalid field name or one of the names written here are dropped;
/// their values are sanitised and RFC 2047 encoded when non-ASCII, but not tag-filled.
pub fn render(
    t: &Template,
    params: &BTreeMap<String, String>,
    to: &str,
    id_domain: &str,
    extra_headers: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<Vec<u8>, TemplateError> {
    render_rewritten(t, params, to, id_domain, extra_headers, now, &|_, body| {
        body
    })
}

/// A body part, as [`render_rewritten`] names it to its rewrite step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Text,
    Html,
}

/// [`render`], with each body part passed through `rewrite` after its tags are
/// filled and before it is encoded (link masking, `tracking::links`).
pub fn render_rewritten(
    t: &Template,
    params: &BTreeMap<String, String>,
    to: &str,
    id_domain: &str,
    extra_headers: &[(String, String)],
    now: DateTime<Utc>,
    rewrite: &dyn Fn(Part, String) -> String,
) -> Result<Vec<u8>, TemplateError> {
    if t.text.is_none() && t.html.is_none() {
        return Err(TemplateError::NoBody);
    }
    let from = sanitize_header_value(&fill(&t.from, params)?);
    let subject = sanitize_header_value(&fill(&t.subject, params)?);
    let text = match &t.text {
        Some(body) => Some(encode_body(
            &rewrite(Part::Text, fill(body, params)?),
            t.text_encoding,
            "text",
        )?),
        None => None,
    };
    let html = match &t.html {
        Some(body) => Some(encode_body(
            &rewrite(Part::Html, fill(body, params)?),
            t.html_encoding,
            "html",
        )?),
        None => None,
    };
    let text_part = |content_type: &'static str, (encoding, body): (TransferEncoding, String)| {
        encoded_part(
            format!("{content_type}; charset=utf-8"),
            encoding.header_value(),
            body,
        )
    };
    let body = match (text, html) {
        (Some(text), Some(html)) => {
            let boundary = pick_boundary(&[&text.1, &html.1]);
            multipart(
                "alternative",
                &boundary,
                vec![text_part("text/plain", text), text_part("text/html", html)],
            )
        }
        // A single part is the whole body: make sure the message ends with CRLF.
        (Some(mut single), None) | (None, Some(mut single)) => {
            if !single.1.ends_with("\r\n") {
                single.1.push_str("\r\n");
            }
            let content_type = if t.text.is_some() {
                "text/plain"
            } else {
                "text/html"
            };
            text_part(content_type, single)
        }
        (None, None) => return Err(TemplateError::NoBody),
    };

    let mut message = MessageBuilder::new()
        .header("From", from_value(&from))
        // Raw even when not ASCII: an address must not become encoded-words (RFC 2047 §5),
        // and an SMTPUTF8 recipient is written as UTF-8 (RFC 6532), as it always was.
        .header("To", Raw::new(sanitize_header_value(to)))
        .header("Subject", header_value("Subject", subject))
        // mail-builder's Date handles any year (chrono's to_rfc2822 panics outside 0..=9999).
        .header("Date", Date::new(now.timestamp()))
        .header("Message-ID", MessageId::new(message_id(id_domain, now)))
        .header("MIME-Version", Raw::new("1.0"));
    for (name, value) in allowed_headers(extra_headers) {
        message = message.header(name, value);
    }
    let mut out = Vec::new();
    message.body(body).serialize(&mut out);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic by design
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 10, 11, 40).unwrap()
    }

    fn template(text: Option<&str>, html: Option<&str>) -> Template {
        Template {
            from: "Example <news@example.com>".into(),
            subject: "Hello [Name]".into(),
            text: text.map(Into::into),
            html: html.map(Into::into),
            ..Template::default()
        }
    }

    fn render_simple(t: &Template, p: &BTreeMap<String, String>) -> Vec<u8> {
        render(t, p, "bob@example.org", "mail.example.com", &[], now()).unwrap()
    }

    /// Every line ends with CRLF, no bare CR or LF, no line over 998 octets.
    fn assert_wire_clean(msg: &[u8]) {
        assert!(msg.ends_with(b"\r\n"), "message must end with CRLF");
        for (i, &b) in msg.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && msg[i - 1] == b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        for line in msg.split(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE + 1, "line too long: {}", line.len());
        }
    }

    /// (header block incl. final CRLF, body)
    fn split_msg(msg: &[u8]) -> (String, String) {
        let s = String::from_utf8(msg.to_vec()).unwrap();
        let i = s.find("\r\n\r\n").unwrap();
        (s[..i + 2].to_owned(), s[i + 4..].to_owned())
    }

    /// Unfolded (name, value) pairs, in order.
    fn headers(block: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in block.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                out.last_mut().unwrap().1.push_str(line);
            } else {
                let (n, v) = line.split_once(':').unwrap();
                out.push((n.to_owned(), v.to_owned()));
            }
        }
        out.into_iter()
            .map(|(n, v)| (n, v.trim().to_owned()))
            .collect()
    }

    fn header(block: &str, name: &str) -> String {
        headers(block)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    /// RFC 5322 §2.1.1 recommended limit, which folded headers keep to.
    const SOFT_LINE: usize = 78;

    /// An unstructured header value as mail-parser decodes it (RFC 2047 encoded-words,
    /// unfolding); every encoded-word must be within RFC 2047 §2's 75 characters.
    fn decode_words(value: &str) -> String {
        for word in value.split_whitespace().filter(|w| w.starts_with("=?")) {
            assert!(word.len() <= 75, "encoded-word too long: {word}");
        }
        let field = format!("Subject: {value}\r\n\r\n");
        let parsed = MessageParser::new()
            .parse_headers(field.as_bytes())
            .unwrap();
        parsed.subject().unwrap().to_owned()
    }

    /// A part body decoded by mail-parser, after checking RFC 2045's 76-character lines.
    fn decode_body(cte: &str, body: &str) -> String {
        if cte != "7bit" {
            for line in body.split("\r\n") {
                assert!(line.len() <= 76, "{cte} line too long: {line}");
            }
        }
        assert!(
            ["7bit", "quoted-printable", "base64"].contains(&cte),
            "unexpected CTE {cte}"
        );
        let part = format!(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}"
        );
        let parsed = MessageParser::new().parse(part.as_bytes()).unwrap();
        String::from_utf8(parsed.parts[0].contents().to_vec()).unwrap()
    }

    /// Splits a multipart body into (headers, body) per part, checking the close delimiter.
    fn parts(body: &str, boundary: &str) -> Vec<(String, String)> {
        let delim = format!("--{boundary}");
        let pieces: Vec<&str> = body.split(&delim).collect();
        // mail-builder starts the body with an empty line, which RFC 2046 §5.1.1 attaches to
        // the first delimiter: still no preamble text.
        assert_eq!(pieces.first(), Some(&"\r\n"), "no preamble expected");
        assert_eq!(
            pieces.last(),
            Some(&"--\r\n"),
            "close delimiter must end the message"
        );
        pieces[1..pieces.len() - 1]
            .iter()
            .map(|p| {
                let p = p
                    .strip_prefix("\r\n")
                    .unwrap()
                    .strip_suffix("\r\n")
                    .unwrap();
                let i = p.find("\r\n\r\n").unwrap();
                (p[..i + 2].to_owned(), p[i + 4..].to_owned())
            })
            .collect()
    }

    const FRENCH: &str = "Bonjour Élodie,\nVoici les nouveautés de la semaine : des crêpes, \
        du café et un déjeuner à la française. Ça vous intéresse ? Répondez vite !\n";
    const CJK: &str = "你好，世界。这是一封测试邮件，内容全部是中文字符。\n";

    #[test]
    fn fill_replaces_tags() {
        let p = params(&[("Name", "Bob"), ("a.b-c_1", "X")]);
        assert_eq!(
            fill("Hi [Name]! [a.b-c_1][Name]", &p).unwrap(),
            "Hi Bob! XBob"
        );
        assert_eq!(fill("", &p).unwrap(), "");
        assert_eq!(fill("no tags", &p).unwrap(), "no tags");
    }

    #[test]
    fn fill_leaves_non_tags() {
        let p = params(&[("Name", "Bob")]);
        for s in [
            "[ x ]", "[]", "end [", "[a b]", "[é]", "[Name", "a]b", "[Na me]",
        ] {
            assert_eq!(fill(s, &p).unwrap(), s);
        }
        assert_eq!(fill("[[Name]]", &p).unwrap(), "[Bob]");
        assert_eq!(fill("é[Name]é", &p).unwrap(), "éBobé");
        let long = format!("[{}]", "a".repeat(65));
        assert_eq!(fill(&long, &p).unwrap(), long);
        let max = "a".repeat(64);
        let p64 = params(&[(&max, "ok")]);
        assert_eq!(fill(&format!("[{max}]"), &p64).unwrap(), "ok");
    }

    #[test]
    fn fill_errors_on_missing_tag() {
        let p = params(&[("Name", "Bob")]);
        assert_eq!(
            fill("Hello [UserName]", &p),
            Err(TemplateError::MissingTag("UserName".into()))
        );
    }

    #[test]
    fn fill_does_not_rescan_values() {
        let p = params(&[("Name", "[Secret]")]);
        assert_eq!(fill("Hi [Name]", &p).unwrap(), "Hi [Secret]");
    }

    #[test]
    fn transfer_encoding_from_str() {
        use TransferEncoding::*;
        assert_eq!("7bit".parse::<TransferEncoding>(), Ok(SevenBit));
        assert_eq!(
            "Quoted-Printable".parse::<TransferEncoding>(),
            Ok(QuotedPrintable)
        );
        assert_eq!(" BASE64 ".parse::<TransferEncoding>(), Ok(Base64));
        assert_eq!(
            "8bit".parse::<TransferEncoding>(),
            Err(TemplateError::BadEncoding("8bit".into()))
        );
    }

    #[test]
    fn choose_encoding_cases() {
        use TransferEncoding::*;
        assert_eq!(choose_encoding(""), SevenBit);
        assert_eq!(choose_encoding("Hello\nworld\r\n"), SevenBit);
        assert_eq!(choose_encoding(&"a".repeat(998)), SevenBit);
        assert_eq!(
            choose_encoding(&format!("x\r\n{}\n", "a".repeat(998))),
            SevenBit
        );
        assert_eq!(choose_encoding(&"a".repeat(999)), QuotedPrintable);
        assert_eq!(choose_encoding(FRENCH), QuotedPrintable);
        assert_eq!(
            choose_encoding("hello\0 world, a NUL in a text"),
            QuotedPrintable
        );
        assert_eq!(choose_encoding(CJK), Base64);
        // Controls other than NUL are legal 7bit (RFC 2045 §2.7); NUL is not.
        let controls: String = (1u8..32).map(char::from).collect();
        assert_eq!(choose_encoding(&controls), SevenBit);
        let binaryish: String = (0u8..32).map(char::from).collect();
        assert_eq!(choose_encoding(&binaryish), Base64);
    }

    #[test]
    fn render_text_only() {
        let t = template(Some("Hi [Name],\nline two\n.\n"), None);
        let p = params(&[("Name", "Bob")]);
        let extra = vec![
            (
                "List-Unsubscribe".to_owned(),
                "<mailto:u@example.com>".to_owned(),
            ),
            ("X-Campaign".to_owned(), "42".to_owned()),
        ];
        let msg = render(&t, &p, "bob@example.org", "mail.example.com", &extra, now()).unwrap();
        assert_wire_clean(&msg);
        let (h, body) = split_msg(&msg);
        let names: Vec<String> = headers(&h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "From",
                "To",
                "Subject",
                "Date",
                "Message-ID",
                "MIME-Version",
                "List-Unsubscribe",
                "X-Campaign",
                "Content-Type",
                "Content-Transfer-Encoding"
            ]
        );
        assert_eq!(header(&h, "From"), "Example <news@example.com>");
        assert_eq!(header(&h, "To"), "bob@example.org");
        assert_eq!(header(&h, "Subject"), "Hello Bob");
        assert_eq!(header(&h, "Date"), "Sat, 28 Nov 2026 10:11:40 +0000");
        assert_eq!(header(&h, "MIME-Version"), "1.0");
        assert_eq!(header(&h, "Content-Type"), "text/plain; charset=utf-8");
        assert_eq!(header(&h, "Content-Transfer-Encoding"), "7bit");
        // Normalised to CRLF and, crucially, not dot-stuffed.
        assert_eq!(body, "Hi Bob,\r\nline two\r\n.\r\n");
    }

    #[test]
    fn render_html_only_quoted_printable() {
        let html = format!("<p>[Name]</p>\n<p>{}</p>\n", FRENCH.replace('\n', " "));
        let t = template(None, Some(&html));
        let p = params(&[("Name", "Zoë")]);
        let msg = render_simple(&t, &p);
        assert_wire_clean(&msg);
        let (h, body) = split_msg(&msg);
        assert_eq!(header(&h, "Content-Type"), "text/html; charset=utf-8");
        assert_eq!(header(&h, "Content-Transfer-Encoding"), "quoted-printable");
        assert!(body.is_ascii());
        let expected = to_crlf(&fill(&html, &p).unwrap());
        assert_eq!(decode_body("quoted-printable", &body), expected);
    }

    #[test]
    fn render_multipart() {
        let t = template(
            Some("Hi [Name]\nplain\n"),
            Some(&format!("<b>[Name]</b>{CJK}")),
        );
        let p = params(&[("Name", "Bob")]);
        let msg = render_simple(&t, &p);
        assert_wire_clean(&msg);
        let (h, body) = split_msg(&msg);
        let ct = header(&h, "Content-Type");
        let boundary = ct
            .strip_prefix("multipart/alternative; boundary=\"")
            .and_then(|b| b.strip_suffix('"'))
            .unwrap();
        assert!(!boundary.is_empty() && boundary.len() <= 70);
        assert!(
            headers(&h)
                .iter()
                .all(|(n, _)| n != "Content-Transfer-Encoding")
        );
        let ps = parts(&body, boundary);
        assert_eq!(ps.len(), 2);
        let (th, tb) = &ps[0];
        assert_eq!(header(th, "Content-Type"), "text/plain; charset=utf-8");
        assert_eq!(header(th, "Content-Transfer-Encoding"), "7bit");
        assert_eq!(decode_body("7bit", tb), "Hi Bob\r\nplain\r\n");
        let (hh, hb) = &ps[1];
        assert_eq!(header(hh, "Content-Type"), "text/html; charset=utf-8");
        assert_eq!(header(hh, "Content-Transfer-Encoding"), "base64");
        assert_eq!(
            decode_body("base64", hb),
            to_crlf(&format!("<b>Bob</b>{CJK}"))
        );
        for (_, b) in &ps {
            assert!(!b.contains(boundary));
        }
    }

    #[test]
    fn forced_encodings_are_honoured() {
        let mut t = template(Some("plain ascii\n"), Some("<p>ascii</p>\n"));
        t.text_encoding = Some(TransferEncoding::Base64);
        t.html_encoding = Some(TransferEncoding::QuotedPrintable);
        let msg = render_simple(&t, &params(&[("Name", "x")]));
        assert_wire_clean(&msg);
        let (h, body) = split_msg(&msg);
        let ct = header(&h, "Content-Type");
        let boundary = ct.split('"').nth(1).unwrap();
        let ps = parts(&body, boundary);
        assert_eq!(header(&ps[0].0, "Content-Transfer-Encoding"), "base64");
        assert_eq!(decode_body("base64", &ps[0].1), "plain ascii\r\n");
        assert_eq!(
            header(&ps[1].0, "Content-Transfer-Encoding"),
            "quoted-printable"
        );
        assert_eq!(
            decode_body("quoted-printable", &ps[1].1),
            "<p>ascii</p>\r\n"
        );
    }

    #[test]
    fn forced_7bit_on_unsuitable_content_errors() {
        let p = params(&[("Name", "x")]);
        let mut t = template(Some("café"), None);
        t.text_encoding = Some(TransferEncoding::SevenBit);
        assert_eq!(
            render_simple_err(&t, &p),
            TemplateError::SevenBitUnsuitable("text")
        );
        let mut t = template(Some("ok"), Some(&"a".repeat(999)));
        t.html_encoding = Some(TransferEncoding::SevenBit);
        assert_eq!(
            render_simple_err(&t, &p),
            TemplateError::SevenBitUnsuitable("html")
        );
    }

    fn render_simple_err(t: &Template, p: &BTreeMap<String, String>) -> TemplateError {
        render(t, p, "bob@example.org", "example.com", &[], now()).unwrap_err()
    }

    #[test]
    fn render_errors() {
        let p = params(&[]);
        assert_eq!(
            render_simple_err(&template(None, None), &p),
            TemplateError::NoBody
        );
        assert_eq!(
            render_simple_err(&template(Some("x"), None), &p),
            TemplateError::MissingTag("Name".into())
        );
    }

    #[test]
    fn header_injection_is_impossible() {
        let evil = "x\r\nBcc: evil@x\nX-Evil: 1\r";
        let mut t = template(Some("body\n"), None);
        t.from = "[Name] <news@example.com>".into();
        let p = params(&[("Name", evil)]);
        let extra = vec![("X-Tag".to_owned(), evil.to_owned())];
        let msg = render(&t, &p, "bob@x\r\nBcc: evil@x", "d\r\nBcc: x", &extra, now()).unwrap();
        assert_wire_clean(&msg);
        let (h, _) = split_msg(&msg);
        for line in h.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            assert!(
                !lower.starts_with("bcc:") && !lower.starts_with("x-evil:"),
                "{line}"
            );
        }
        assert_eq!(header(&h, "Subject"), "Hello x  Bcc: evil@x X-Evil: 1");
        assert_eq!(headers(&h).len(), 9);
    }

    #[test]
    fn non_ascii_subject_round_trips() {
        let mut t = template(Some("b"), None);
        for subject in [
            "Café [Name] ☕",
            &"Les nouveautés de la semaine, Élodie — 日本語も少し ".repeat(8),
        ] {
            t.subject = subject.into();
            let p = params(&[("Name", "Zoë")]);
            let msg = render_simple(&t, &p);
            assert_wire_clean(&msg);
            let (h, _) = split_msg(&msg);
            assert!(h.is_ascii());
            for line in h.split("\r\n") {
                assert!(line.len() <= 90, "line not folded: {line}");
            }
            let expected = sanitize_header_value(&fill(subject, &p).unwrap());
            assert_eq!(decode_words(&header(&h, "Subject")), expected);
        }
    }

    #[test]
    fn encode_header_value_shape() {
        assert_eq!(encode_header_value("plain"), "plain");
        let s = "€".repeat(100);
        let encoded = encode_header_value(&s);
        assert!(encoded.contains("\r\n "));
        assert_eq!(decode_words(&encoded), s);
    }

    #[test]
    fn non_ascii_from_encodes_display_name_only() {
        let mut t = template(Some("b"), None);
        t.from = "\"Élodie [Name]\" <news@example.com>".into();
        let msg = render_simple(&t, &params(&[("Name", "Dupont")]));
        let (h, _) = split_msg(&msg);
        let from = header(&h, "From");
        let (name, addr) = from.rsplit_once(' ').unwrap();
        assert_eq!(addr, "<news@example.com>");
        assert_eq!(decode_words(name), "Élodie Dupont");
    }

    #[test]
    fn non_ascii_from_with_unquoted_comma_keeps_one_name_and_address() {
        let mut t = template(Some("b"), None);
        t.from = "Müller, Hans <h@example.com>".into();
        let msg = render_simple(&t, &params(&[("Name", "x")]));
        let m = MessageParser::default().parse(&msg).unwrap();
        let from = m.from().unwrap().as_list().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].name(), Some("Müller, Hans"));
        assert_eq!(from[0].address(), Some("h@example.com"));
    }

    #[test]
    fn non_ascii_to_is_written_as_utf8_not_encoded() {
        let t = template(Some("b"), None);
        let msg = render(
            &t,
            &params(&[("Name", "x")]),
            "zoë@exämple.org",
            "d",
            &[],
            now(),
        )
        .unwrap();
        let (h, _) = split_msg(&msg);
        assert_eq!(header(&h, "To"), "zoë@exämple.org");
    }

    #[test]
    fn long_ascii_headers_are_folded() {
        let mut t = template(Some("b"), None);
        t.subject = "word ".repeat(400);
        let msg = render_simple(&t, &params(&[]));
        let (h, _) = split_msg(&msg);
        for line in h.split("\r\n") {
            assert!(line.len() <= SOFT_LINE, "{}", line.len());
        }
        assert_eq!(header(&h, "Subject"), "word ".repeat(400).trim());
        // No whitespace at all: only the 998 hard limit can be honoured.
        t.subject = "x".repeat(3000);
        let msg = render_simple(&t, &params(&[]));
        assert_wire_clean(&msg);
        let (h, _) = split_msg(&msg);
        let subject = decode_words(&header(&h, "Subject"));
        assert_eq!(subject.replace(' ', ""), "x".repeat(3000));
        // Carried as encoded-words now, so unfolding no longer adds spaces.
        assert_eq!(subject, "x".repeat(3000));
    }

    #[test]
    fn prepended_headers_are_sanitised_like_rendered_ones() {
        let headers = vec![
            (
                "List-Unsubscribe".to_owned(),
                "<mailto:u@x.test>\r\nBcc: evil@x.test".to_owned(),
            ),
            ("From".to_owned(), "dropped@x.test".to_owned()),
        ];
        let out = prepend_headers(&headers, b"Subject: s\r\n\r\nbody\r\n".to_vec());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "List-Unsubscribe: <mailto:u@x.test>  Bcc: evil@x.test\r\nSubject: s\r\n\r\nbody\r\n"
        );
        assert_eq!(prepend_headers(&[], b"x".to_vec()), b"x");
    }

    #[test]
    fn extra_headers_filtered() {
        let t = template(Some("b"), None);
        let extra: Vec<(String, String)> = [
            ("Bad Name", "1"),
            ("Bad:Name", "2"),
            ("", "3"),
            ("content-type", "text/evil"),
            ("X-Ok", "Grüße"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let msg = render(&t, &params(&[("Name", "x")]), "a@b", "d", &extra, now()).unwrap();
        let (h, _) = split_msg(&msg);
        let hs = headers(&h);
        assert_eq!(hs.len(), 9);
        assert_eq!(header(&h, "Content-Type"), "text/plain; charset=utf-8");
        assert_eq!(decode_words(&header(&h, "X-Ok")), "Grüße");
    }

    #[test]
    fn message_id_shape() {
        let t = template(Some("b"), None);
        let p = params(&[("Name", "x")]);
        let id = |msg: Vec<u8>| header(&split_msg(&msg).0, "Message-ID");
        let a = id(render_simple(&t, &p));
        let b = id(render_simple(&t, &p));
        assert_ne!(a, b);
        let inner = a.strip_prefix('<').unwrap().strip_suffix('>').unwrap();
        let (local, domain) = inner.split_once('@').unwrap();
        assert_eq!(domain, "mail.example.com");
        let (ts, hex) = local.split_once('.').unwrap();
        assert_eq!(ts, now().timestamp_millis().to_string());
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(sanitize_id_domain(" <bad domain>\r\n"), "baddomain");
        assert_eq!(sanitize_id_domain("..."), "localhost");
    }

    #[test]
    fn line_endings_normalised() {
        let t = template(Some("a\nb\r\nc\rd"), None);
        let msg = render_simple(&t, &params(&[("Name", "x")]));
        assert_wire_clean(&msg);
        assert_eq!(split_msg(&msg).1, "a\r\nb\r\nc\r\nd\r\n");
    }

    #[test]
    fn boundary_avoids_content() {
        // Content that literally contains the first candidate forces a second try.
        let seedless = pick_boundary(&["abc"]);
        assert!(seedless.starts_with("=_") && seedless.len() == 34);
        let b = pick_boundary(&["x", "y"]);
        let part = format!("--{b}\r\n");
        let b2 = pick_boundary(&[&part, &part]);
        assert!(!part.contains(&b2));
    }

    #[test]
    fn extreme_dates_do_not_panic() {
        let t = template(Some("b"), None);
        let p = params(&[("Name", "x")]);
        for when in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let msg = render(&t, &p, "a@b", "d", &[], when).unwrap();
            assert_wire_clean(&msg);
        }
    }

    /// Cheap deterministic fuzz: hostile mixes of tags, line breaks, NUL and non-ASCII must
    /// never panic and must always produce a clean wire format that decodes back.
    #[test]
    fn fuzz_render_round_trips() {
        let alphabet = [
            "a",
            " ",
            "\r",
            "\n",
            "\r\n",
            "[",
            "]",
            "[N]",
            "é",
            "中",
            "\0",
            "=",
            ".",
            "\t",
            "--",
            "=_",
            "😀",
            &"z".repeat(300),
        ];
        let mut state = 0x1234_5678_9abc_def0_u64;
        let mut next = |n: usize| {
            state = splitmix64(state);
            (state % n as u64) as usize
        };
        let mut rendered = 0;
        for _ in 0..300 {
            let mut gen_str = |len: usize| -> String {
                (0..len).map(|_| alphabet[next(alphabet.len())]).collect()
            };
            let text = gen_str(40);
            let html = gen_str(40);
            let subject = gen_str(10);
            let value = gen_str(5);
            let t = Template {
                from: format!("{} <a@b.c>", gen_str(3)),
                subject,
                text: Some(text.clone()),
                html: Some(html.clone()),
                ..Template::default()
            };
            let p = params(&[("N", &value)]);
            // The alphabet can assemble real tags such as "`[a]`"; those must fail cleanly.
            let msg = match render(&t, &p, "to@x", "d", &[], now()) {
                Err(TemplateError::MissingTag(_)) => continue,
                other => other.unwrap(),
            };
            rendered += 1;
            assert_wire_clean(&msg);
            let (h, body) = split_msg(&msg);
            assert!(h.is_ascii());
            let ct = header(&h, "Content-Type");
            let boundary = ct.split('"').nth(1).unwrap();
            let ps = parts(&body, boundary);
            assert_eq!(ps.len(), 2);
            for ((ph, pb), src) in ps.iter().zip([&text, &html]) {
                let cte = header(ph, "Content-Transfer-Encoding");
                assert_eq!(decode_body(&cte, pb), to_crlf(&fill(src, &p).unwrap()));
            }
        }
        assert!(rendered > 100, "fuzz mostly hit MissingTag: {rendered}");
    }
}
