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
    let bytes = match encoding {
        TransferEncoding::SevenBit if fits_7bit(&normalised) => return Ok((encoding, normalised)),
        TransferEncoding::SevenBit => return Err(NotSevenBit),
        // Keeps our CRLFs as hard line breaks and soft-wraps at 76 with "=\r\n".
        TransferEncoding::QuotedPrintable => QuotedPrintableEncoder::new()
            .preserve_line_breaks()
            .encode(normalised.as_bytes()),
        TransferEncoding::Base64 => Base64Encoder::new()
            .wrap_lines()
            .encode(normalised.as_bytes()),
    };
    // Both encoders write into a Vec (infallible) and emit only ASCII.
    let encoded = bytes
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
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
