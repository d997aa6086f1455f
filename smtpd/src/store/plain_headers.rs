//! The indexed header fields of a *plain* header section, without mail-parser.
//!
//! Owns: recognising a header section simple enough that the values mail-parser
//! would give for the indexed fields are known from the bytes alone, and reading
//! them. Everything else — folded lines, RFC 2047 encoded words, 8-bit bytes, bare
//! LF, comments, quoted strings in the fields we read, groups, several addresses,
//! `Content-Disposition`, multipart — is not plain, and [`scan`] says so with `None`:
//! the caller then parses with mail-parser as before. Correctness over coverage:
//! the differential property test in `row.rs` holds this path to mail-parser's
//! output over generated header soup, so any shape not listed here falls back.
//! Must not: allocate, or accept a section it is not sure of.
//!
//! Why: mail-parser parses every header of the section with its full parser (dates,
//! `From:`, `Received:` chains) and builds a `Message`; for the handful of columns
//! we index that was ≈ 14 k instructions per 1 KB message, a fifth of the row build.
//!
//! RFC 5322 §2.2 (header fields), §3.4 (addr-spec), §3.6.4 (msg-id); RFC 2045 §5.1
//! (Content-Type).

/// The values the indexed columns take from a plain header section (before the
/// column clipping and lowercasing, which the caller applies to either path).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plain<'a> {
    pub subject: Option<&'a str>,
    pub to: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub message_id: Option<&'a str>,
    /// `(type, subtype, charset)` of `Content-Type:`; never `multipart`.
    pub content_type: Option<(&'a str, &'a str, Option<&'a str>)>,
}

/// mail-parser's longest known header name; a longer name is never one we read.
const MAX_NAME_BYTES: usize = 34;

/// The fields we read, by name (compared ignoring ASCII case).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Subject,
    To,
    ReplyTo,
    Sender,
    MessageId,
    ContentType,
    /// Read by the attachment count: never plain.
    ContentDisposition,
    Other,
}

impl Field {
    fn of(name: &[u8]) -> Self {
        const NAMES: [(&[u8], Field); 7] = [
            (b"subject", Field::Subject),
            (b"to", Field::To),
            (b"reply-to", Field::ReplyTo),
            (b"sender", Field::Sender),
            (b"message-id", Field::MessageId),
            (b"content-type", Field::ContentType),
            (b"content-disposition", Field::ContentDisposition),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Field::Other, |&(_, f)| f)
    }
}

/// The indexed fields of `data`'s header section, or `None` when the section is not
/// plain (then mail-parser must decide).
pub(super) fn scan(data: &[u8]) -> Option<Plain<'_>> {
    let mut plain = Plain::default();
    // Each field we read may appear once (mail-parser would take the last one;
    // rather than follow that, a repeat is simply not plain).
    let mut seen = [false; 8];
    let mut rest = data;
    loop {
        let end = memchr::memchr(b'\n', rest)?;
        let (line, after) = rest.split_at(end);
        rest = after.get(1..)?;
        // A bare LF is not plain (mail-parser accepts it; we need not).
        let line = line.strip_suffix(b"\r")?;
        if line.is_empty() {
            return Some(plain);
        }
        // Printable ASCII only: no tabs, no CR inside, no 8-bit. A line that begins
        // with a space is a folded continuation, which mail-parser joins. An encoded
        // word (`=?`) anywhere may make mail-parser's decoder read on: not plain.
        // (One pass: a `memmem` searcher built per line cost more than the scan.)
        let mut previous = b' ';
        for &b in line {
            if !(0x20..=0x7e).contains(&b) || (previous == b'=' && b == b'?') {
                return None;
            }
            previous = b;
        }
        if line.first() == Some(&b' ') {
            return None;
        }
        let colon = memchr::memchr(b':', line)?;
        let (name, value) = line.split_at(colon);
        let value = value.get(1..)?;
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains(&b' ') {
            return None;
        }
        let field = Field::of(name);
        if field == Field::Other {
            continue;
        }
        let slot = seen.get_mut(field as usize)?;
        if std::mem::replace(slot, true) {
            return None;
        }
        // Printable ASCII was checked above, so this cannot fail.
        let value = std::str::from_utf8(value).ok()?.trim_matches(' ');
        match field {
            Field::Subject => plain.subject = non_empty(value),
            Field::To => plain.to = address(value)?,
            Field::ReplyTo => plain.reply_to = address(value)?,
            Field::Sender => plain.sender = address(value)?,
            Field::MessageId => plain.message_id = message_id(value)?,
            Field::ContentType => plain.content_type = Some(content_type(value)?),
            Field::ContentDisposition | Field::Other => return None,
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Letters, digits and the few punctuation marks common in addresses and ids; the
/// specials that change how mail-parser reads a field are not among them.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_word_byte)
}

/// `local@domain` with plain words on both sides.
fn is_addr_spec(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(local, domain)| is_word(local) && is_word(domain))
}

/// The one address of `a@b`, `<a@b>` or `Display Name <a@b>`; `Some(None)` for an
/// empty field; `None` (not plain) for anything else.
fn address(value: &str) -> Option<Option<&str>> {
    if value.is_empty() {
        return Some(None);
    }
    if is_addr_spec(value) {
        return Some(Some(value));
    }
    let inner = value.strip_suffix('>')?;
    let (name, addr) = inner.rsplit_once('<')?;
    let name = name.strip_suffix(' ').unwrap_or(name);
    let plain_name = name.is_empty()
        || name
            .split(' ')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric()));
    (plain_name && is_addr_spec(addr)).then_some(Some(addr))
}

/// `<id>` with a plain id (`left@right` or a bare word); `Some(None)` when empty.
fn message_id(value: &str) -> Option<Option<&str>> {
    if value.is_empty() {
        return Some(None);
    }
    let id = value.strip_prefix('<')?.strip_suffix('>')?;
    (is_word(id) || is_addr_spec(id)).then_some(Some(id))
}

/// `type/subtype`, optionally `; charset=value` or `; charset="value"`; not
/// `multipart` (its parts must be parsed for the attachment count).
fn content_type(value: &str) -> Option<(&str, &str, Option<&str>)> {
    let (media, params) = match value.split_once(';') {
        Some((media, params)) => (media.trim_end_matches(' '), Some(params)),
        None => (value, None),
    };
    let (ctype, subtype) = media.split_once('/')?;
    if !is_word(ctype) || !is_word(subtype) || ctype.eq_ignore_ascii_case("multipart") {
        return None;
    }
    let charset = match params {
        None => None,
        Some(params) => {
            let (key, v) = params.trim_start_matches(' ').split_once('=')?;
            if !key.eq_ignore_ascii_case("charset") {
                return None;
            }
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            is_word(v).then_some(v)?;
            Some(v)
        }
    };
    Some((ctype, subtype, charset))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn the_benchmark_message_and_common_shapes_are_plain() {
        let bench = b"From: bench@bench.invalid\r\nTo: sink@example.com\r\nSubject: smtp-bench\r\n\
Message-ID: <bench@bench.invalid>\r\n\r\nbody";
        let p = scan(bench).expect("plain");
        assert_eq!(p.to, Some("sink@example.com"));
        assert_eq!(p.subject, Some("smtp-bench"));
        assert_eq!(p.message_id, Some("bench@bench.invalid"));
        let p = scan(
            b"To: Bob Smith <bob@example.com>\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\n",
        )
        .expect("plain");
        assert_eq!(p.to, Some("bob@example.com"));
        assert_eq!(p.content_type, Some(("text", "plain", Some("UTF-8"))));
    }

    #[test]
    fn what_mail_parser_must_decide_is_not_plain() {
        for section in [
            &b"Subject: =?utf-8?q?x?=\r\n\r\n"[..],
            b"Subject: a\r\n b\r\n\r\n",
            b"Subject: a\n\n",
            b"To: a@b, c@d\r\n\r\n",
            b"To: \"Bob\" <b@c>\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n",
            b"Content-Disposition: attachment\r\n\r\n",
            b"Subject: a\r\nSubject: b\r\n\r\n",
            b"Subject: caf\xc3\xa9\r\n\r\n",
            b"no blank line\r\n",
        ] {
            assert_eq!(scan(section), None, "{}", String::from_utf8_lossy(section));
        }
    }
}
