//! What the API says about a message: its id, the parsed fields, the sanitised
//! HTML, and the headers of a downloaded part.
//!
//! Owns: the message id format, address normalisation, parsing with mail-parser,
//! HTML sanitising with ammonia, `Content-Disposition`. Pure: no I/O.
//!
//! Message ids are `<queue id>-<tag>`: the queue id (`new_mail.hash`, 48 bits of
//! time and 80 random bits) names the message, and `tag`, 16 hex digits of
//! SHA-256 over queue id and recipient, names the recipient's row. Ids cannot be
//! guessed (the random bits), and knowing the id of one recipient's copy does not
//! give the id of another's (that needs the other address, which in public mode is
//! the key to that mailbox anyway). Rows are found through the unique index
//! `(hash, recipient)`.

use std::borrow::Cow;

use ammonia::{Builder, UrlRelative};
use mail_parser::{Address, MessageParser, MimeHeaders};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::read::MailItem;

/// Longest address accepted in a path (RFC 5321 §4.5.3.1.3 path limit, minus <>).
pub const MAX_ADDRESS_BYTES: usize = 254;
/// Characters of the tag in a message id.
const TAG_HEX: usize = 16;
/// Characters of a queue id.
const QUEUE_ID_HEX: usize = 32;

/// The id of a row, as the API shows it.
pub fn message_id(item: &MailItem) -> String {
    format!("{}-{}", item.hash, tag(&item.hash, &item.recipient))
}

fn tag(hash: &str, recipient: &str) -> String {
    let mut h = Sha256::new();
    h.update(hash.as_bytes());
    h.update(b"\n");
    h.update(recipient.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(TAG_HEX);
    for b in digest.iter().take(TAG_HEX / 2) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A parsed message id: the message, and the tag its row must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub hash: String,
    tag: String,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl MessageRef {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const WHAT: &str = "not a message id (32 hex digits, '-', 16 hex digits)";
        let (hash, tag) = text.split_once('-').ok_or(WHAT)?;
        if !is_hex(hash, QUEUE_ID_HEX) || !is_hex(tag, TAG_HEX) {
            return Err(WHAT);
        }
        Ok(Self {
            hash: hash.to_owned(),
            tag: tag.to_owned(),
        })
    }

    /// Whether this id names the row of `recipient`.
    pub fn names_recipient(&self, recipient: &str) -> bool {
        tag(&self.hash, recipient) == self.tag
    }

    /// Whether `item` is the row this id names.
    pub fn names(&self, item: &MailItem) -> bool {
        item.hash == self.hash && self.names_recipient(&item.recipient)
    }
}

/// The address as smtpd stores recipients (local part as given, domain
/// lowercased), or why it is not one.
pub fn normalize_address(text: &str) -> Result<(String, String), &'static str> {
    if text.len() > MAX_ADDRESS_BYTES {
        return Err("longer than 254 bytes");
    }
    let (local, domain) = text
        .rsplit_once('@')
        .ok_or("not an address (local@domain)")?;
    if local.is_empty()
        || domain.is_empty()
        || text
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>')
    {
        return Err("not an address (local@domain)");
    }
    let domain = domain.to_lowercase();
    Ok((format!("{local}@{domain}"), domain))
}

/// The list entry of a row.
pub fn item_json(item: &MailItem) -> Value {
    json!({
        "id": message_id(item),
        "date": item.date,
        "from": item.from,
        "subject": item.subject,
        "size": item.size,
        "has_attach": item.has_attach,
        "seen": item.seen,
    })
}

fn addresses(a: Option<&Address<'_>>) -> Value {
    Value::Array(
        a.map(|a| {
            a.iter()
                .map(|addr| json!({ "name": addr.name(), "address": addr.address() }))
                .collect()
        })
        .unwrap_or_default(),
    )
}

/// The parsed message (`GET /api/v1/messages/{id}`). `images`: keep remote image
/// sources in the HTML (the reader asked for them).
pub fn message_json(item: &MailItem, raw: &[u8], images: bool) -> Value {
    let mut out = item_json(item);
    let Some(m) = MessageParser::default().parse(raw) else {
        out["parsed"] = Value::Bool(false);
        return out;
    };
    let headers: Vec<Value> = m
        .headers()
        .iter()
        .map(|h| {
            let value = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(|v| String::from_utf8_lossy(v).trim().to_owned())
                .unwrap_or_default();
            json!({ "name": h.name(), "value": value })
        })
        .collect();
    let attachments: Vec<Value> = m
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            json!({
                "part": i,
                "name": part.attachment_name(),
                "type": part_type(part),
                "size": part.contents().len(),
            })
        })
        .collect();
    let html = m
        .body_html(0)
        .filter(|_| m.html_body_count() > 0 && has_real_html(&m));
    out["parsed"] = Value::Bool(true);
    out["received"] = out["date"].take();
    out["date"] = json!(m.date().map(|d| d.to_rfc3339()));
    out["envelope_from"] = out["from"].take();
    out["from"] = addresses(m.from());
    out["to"] = addresses(m.to());
    out["cc"] = addresses(m.cc());
    out["subject"] = json!(m.subject());
    out["headers"] = Value::Array(headers);
    out["text"] = json!(m.body_text(0));
    out["html"] = json!(html.map(|h| sanitize_html(&h, images)));
    out["attachments"] = Value::Array(attachments);
    out
}

/// mail-parser renders a text-only message as HTML too; only a real text/html
/// part counts.
fn has_real_html(m: &mail_parser::Message<'_>) -> bool {
    m.html_part(0).is_some_and(|p| p.is_text_html())
}

/// The content type of a part, `type/subtype`.
pub fn part_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "application/octet-stream".to_owned(),
    }
}

/// The type a part is served with: its own, except anything a browser would run
/// or render as a page (HTML, XML, SVG, script), which goes out as bytes.
pub fn served_type(declared: &str) -> String {
    let t = declared.trim();
    let ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
        && t.contains('/');
    let risky = ["html", "xml", "svg", "script", "multipart"];
    if !ok || risky.iter().any(|r| t.contains(r)) {
        "application/octet-stream".to_owned()
    } else {
        t.to_owned()
    }
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`
/// (RFC 6266 §4.3, RFC 8187 §3.2.1).
pub fn content_disposition(name: Option<&str>) -> String {
    let name = name.unwrap_or("attachment");
    let fallback: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for &b in name.as_bytes().iter().take(1024) {
        // attr-char (RFC 8187 §3.2.1)
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// ammonia with: no script, no style, no remote content unless `images`, links
/// opening a new browsing context with `rel="noopener noreferrer"`.
pub fn sanitize_html(html: &str, images: bool) -> String {
    let mut b = Builder::default();
    b.link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        // Relative and protocol-relative URLs would resolve against this server
        // or load from elsewhere: dropped.
        .url_relative(UrlRelative::Deny)
        .add_url_schemes(&["data"])
        .attribute_filter(move |element, attribute, value| {
            let v = value.trim_start().to_ascii_lowercase();
            match (element, attribute) {
                // Images: inline data only, remote ones when the reader asked.
                ("img", "src") if v.starts_with("data:image/") => Some(Cow::Borrowed(value)),
                ("img", "src") if images && (v.starts_with("https:") || v.starts_with("http:")) => {
                    Some(Cow::Borrowed(value))
                }
                ("img", "src") => None,
                // data: only for images, never as a link.
                (_, _) if v.starts_with("data:") => None,
                _ => Some(Cow::Borrowed(value)),
            }
        });
    b.clean(html).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item() -> MailItem {
        MailItem {
            mail_id: 42,
            hash: "0123456789abcdef0123456789abcdef".into(),
            recipient: "a@example.com".into(),
            date: "2026-01-01 00:00:00".into(),
            from: "s@example.org".into(),
            subject: "s".into(),
            size: 10,
            has_attach: 0,
            seen: false,
        }
    }

    #[test]
    fn ids_round_trip_and_name_only_their_row() {
        let it = item();
        let id = message_id(&it);
        let r = MessageRef::parse(&id).unwrap();
        assert!(r.names(&it));
        let mut other = it.clone();
        other.recipient = "b@example.com".into();
        assert!(!r.names(&other));
        assert!(id.starts_with("0123456789abcdef0123456789abcdef-") && id.len() == 49);
        for bad in [
            "",
            "42",
            "x-y",
            "42-00",
            &format!("{id}0"),
            &id.to_uppercase(),
        ] {
            assert!(MessageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_normalised_like_recipients() {
        assert_eq!(
            normalize_address("Joe@Example.COM").unwrap().0,
            "Joe@example.com"
        );
        assert!(normalize_address("nobody").is_err());
        assert!(normalize_address(&format!("{}@x.com", "a".repeat(300))).is_err());
        assert!(normalize_address("a b@x.com").is_err());
    }

    #[test]
    fn html_loses_script_and_remote_images_and_links_get_rel() {
        let html = r#"<p onclick="x()">hi<script>document.title='pwned'</script>
            <img src="http://127.0.0.1:9/x.png"><img src="data:image/png;base64,AAAA">
            <img src="//evil.example/y.png"><a href="https://example.com/">l</a>
            <a href="javascript:alert(1)">j</a><a href="data:text/html,x">d</a>
            <style>body{background:url(http://evil/)}</style></p>"#;
        let clean = sanitize_html(html, false);
        assert!(
            !clean.contains("script") && !clean.contains("onclick"),
            "{clean}"
        );
        assert!(
            !clean.contains("127.0.0.1") && !clean.contains("evil"),
            "{clean}"
        );
        assert!(clean.contains("data:image/png"), "{clean}");
        assert!(
            !clean.contains("javascript") && !clean.contains("data:text"),
            "{clean}"
        );
        assert!(
            clean.contains(r#"rel="noopener noreferrer""#) && clean.contains(r#"target="_blank""#),
            "{clean}"
        );
        assert!(sanitize_html(html, true).contains("http://127.0.0.1:9/x.png"));
    }

    #[test]
    fn dispositions_are_attachments_with_encoded_names() {
        let d = content_disposition(Some("\"><script>é.txt"));
        assert_eq!(
            d,
            "attachment; filename=\"___script__.txt\"; filename*=UTF-8''%22%3E%3Cscript%3E%C3%A9.txt"
        );
        assert_eq!(served_type("text/html"), "application/octet-stream");
        assert_eq!(served_type("image/svg+xml"), "application/octet-stream");
        assert_eq!(served_type("application/pdf"), "application/pdf");
        assert_eq!(
            served_type("text/plain\r\nX: y"),
            "application/octet-stream"
        );
    }
}
