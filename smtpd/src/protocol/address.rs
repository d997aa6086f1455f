//! Reverse- and forward-paths: `<local@domain>` as written after `MAIL FROM:` and
//! `RCPT TO:`.
//!
//! Owns: RFC 5321 §4.1.2 path syntax (with the usual leniency: a path without angle
//! brackets, a space after the colon), source-route stripping (§4.1.1.3 / Appendix C),
//! the §4.5.3.1.3 length limit, and RFC 6531 UTF-8 detection. Must not: decide
//! whether an address is *accepted* (domain policy and sequencing are the session's).
//!
//! The parser is strict where looseness is dangerous: control characters, NUL, an
//! unbalanced `<`/`>`, or invalid UTF-8 are refused outright, so nothing odd ever
//! reaches a database column or a `Received:` header.

use std::fmt;

/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the brackets.
pub const MAX_PATH_BYTES: usize = 256;

/// A syntactically valid mailbox, without angle brackets or source route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// `local@domain`, or `""` for the null path `<>`, or a bare local part such as
    /// `postmaster` (only meaningful as a recipient, RFC 5321 §4.5.1).
    pub text: String,
    /// Byte offset of the domain in `text`, when there is one.
    domain_at: Option<usize>,
    /// Contains non-ASCII characters (needs SMTPUTF8, RFC 6531 §3.3).
    pub non_ascii: bool,
}

impl Mailbox {
    pub fn is_null(&self) -> bool {
        self.text.is_empty()
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain_at.and_then(|at| self.text.get(at..))
    }

    pub fn local_part(&self) -> &str {
        match self.domain_at {
            Some(at) => self.text.get(..at.saturating_sub(1)).unwrap_or(""),
            None => &self.text,
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.text)
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Malformed: unbalanced brackets, control characters, bad local part or domain,
    /// too long, invalid UTF-8.
    Syntax,
}

/// Splits `<path> params` into the path and the rest (parameters, unparsed).
pub fn split_path(arg: &[u8]) -> Result<(&[u8], &[u8]), PathError> {
    let arg = trim_start(arg);
    if arg.first() == Some(&b'<') {
        // The path ends at the first `>` outside a quoted string.
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in arg.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b'>' && !quoted {
                let (path, rest) = arg.split_at(i.saturating_add(1));
                // A parameter must be separated from the path by a space.
                if !rest.is_empty() && rest.first() != Some(&b' ') {
                    return Err(PathError::Syntax);
                }
                return Ok((path, rest));
            }
        }
        Err(PathError::Syntax)
    } else {
        // Leniency shared with Postfix and Exim: a bare address without brackets.
        let end = arg.iter().position(|&b| b == b' ').unwrap_or(arg.len());
        Ok(arg.split_at(end))
    }
}

/// Parses a path as returned by [`split_path`] into a mailbox.
pub fn parse_path(path: &[u8]) -> Result<Mailbox, PathError> {
    // The null path must be written `<>`; nothing at all is not a path.
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(PathError::Syntax);
    }
    let inner = match path.strip_prefix(b"<") {
        Some(rest) => rest.strip_suffix(b">").ok_or(PathError::Syntax)?,
        None => path,
    };
    if inner.iter().any(|&b| b == b'<' || b == b'>') && !has_quotes(inner) {
        return Err(PathError::Syntax);
    }
    if inner.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Syntax);
    }
    let inner = strip_source_route(inner)?;
    let text = std::str::from_utf8(inner).map_err(|_| PathError::Syntax)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::Syntax); // C1 controls (U+0080..U+009F)
    }
    if text.is_empty() {
        return Ok(Mailbox {
            text: String::new(),
            domain_at: None,
            non_ascii: false,
        });
    }
    let (local, domain) = split_at_domain(text)?;
    if !is_local_part(local) {
        return Err(PathError::Syntax);
    }
    if let Some(domain) = domain
        && !is_domain(domain)
    {
        return Err(PathError::Syntax);
    }
    Ok(Mailbox {
        text: text.to_owned(),
        domain_at: domain.map(|_| local.len().saturating_add(1)),
        non_ascii: !text.is_ascii(),
    })
}

fn has_quotes(s: &[u8]) -> bool {
    s.first() == Some(&b'"')
}

/// `@relay1,@relay2:user@domain` → `user@domain` (RFC 5321 §4.1.1.3: "MUST accept
/// and SHOULD ignore").
fn strip_source_route(inner: &[u8]) -> Result<&[u8], PathError> {
    if inner.first() != Some(&b'@') {
        return Ok(inner);
    }
    let colon = inner
        .iter()
        .position(|&b| b == b':')
        .ok_or(PathError::Syntax)?;
    let (route, rest) = inner.split_at(colon);
    for hop in route.split(|&b| b == b',') {
        let domain = hop.strip_prefix(b"@").ok_or(PathError::Syntax)?;
        let domain = std::str::from_utf8(domain).map_err(|_| PathError::Syntax)?;
        if !is_domain(domain) {
            return Err(PathError::Syntax);
        }
    }
    let mailbox = rest.get(1..).unwrap_or_default();
    if mailbox.is_empty() {
        return Err(PathError::Syntax);
    }
    Ok(mailbox)
}

/// Splits at the `@` that separates local part and domain: the last one outside a
/// quoted local part.
fn split_at_domain(text: &str) -> Result<(&str, Option<&str>), PathError> {
    let local_end = if text.starts_with('"') {
        closing_quote(text)
            .ok_or(PathError::Syntax)?
            .saturating_add(1)
    } else {
        text.find('@').unwrap_or(text.len())
    };
    let (local, rest) = text.split_at(local_end);
    if rest.is_empty() {
        return Ok((local, None));
    }
    match rest.strip_prefix('@') {
        Some(domain) => Ok((local, Some(domain))),
        None => Err(PathError::Syntax),
    }
}

/// Index of the quote that closes a quoted string starting at 0.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some(i);
        }
    }
    None
}

/// RFC 5321 §4.1.2 `Local-part = Dot-string / Quoted-string`, with UTF-8 allowed
/// (RFC 6531 §3.3) and consecutive or edge dots tolerated (real senders use them).
fn is_local_part(local: &str) -> bool {
    if local.is_empty() {
        return false;
    }
    if local.starts_with('"') {
        return local.len() >= 2 && local.ends_with('"');
    }
    local
        .chars()
        .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
}

/// A domain (labels of letters, digits, `-`, `_`, or UTF-8 for internationalized
/// names) or an address literal `[…]` (RFC 5321 §4.1.3).
fn is_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[') {
        return literal.strip_suffix(']').is_some_and(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":.-".contains(&b))
        });
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn mailbox(arg: &str) -> Result<Mailbox, PathError> {
        let (path, rest) = split_path(arg.as_bytes())?;
        assert!(rest.is_empty(), "{arg}: unexpected rest");
        parse_path(path)
    }

    #[test]
    fn plain_and_null_paths() {
        let m = mailbox("<User.Name+tag@Example.com>").unwrap();
        assert_eq!(m.text, "User.Name+tag@Example.com");
        assert_eq!(m.local_part(), "User.Name+tag");
        assert_eq!(m.domain(), Some("Example.com"));
        assert!(!m.non_ascii);
        assert!(mailbox("<>").unwrap().is_null());
    }

    #[test]
    fn bare_address_without_brackets_is_tolerated() {
        assert_eq!(mailbox("a@b.example").unwrap().text, "a@b.example");
    }

    #[test]
    fn unbalanced_brackets_are_refused() {
        for bad in [
            "<a@b.example",
            "a@b.example>",
            "<<a@b.example>",
            "<a<b@c.example>",
        ] {
            assert_eq!(mailbox(bad), Err(PathError::Syntax), "{bad}");
        }
    }

    #[test]
    fn control_characters_and_nul_are_refused() {
        for bad in [
            "<a\x01b@c.example>",
            "<a\u{85}b@c.example>",
            "<a@c.exam\x00ple>",
            "<a\tb@c.example>",
            "<a@c\x7f>",
        ] {
            assert_eq!(mailbox(bad), Err(PathError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn bad_domains_and_local_parts_are_refused() {
        for bad in [
            "<a@>",
            "<@example.com>",
            "<a@b..c>",
            "<a b@c.example>",
            "<a@exa mple.com>",
            "<a@[]>",
            "<a,b@c.example>",
            "<\"unterminated@c.example>",
        ] {
            assert_eq!(mailbox(bad), Err(PathError::Syntax), "{bad}");
        }
    }

    #[test]
    fn quoted_local_parts_address_literals_and_source_routes() {
        let m = mailbox("<\"john doe>\\\"\"@example.com>").unwrap();
        assert_eq!(m.domain(), Some("example.com"));
        assert_eq!(m.local_part(), "\"john doe>\\\"\"");
        assert_eq!(
            mailbox("<a@[192.0.2.1]>").unwrap().domain(),
            Some("[192.0.2.1]")
        );
        assert_eq!(
            mailbox("<a@[IPv6:2001:db8::1]>").unwrap().domain(),
            Some("[IPv6:2001:db8::1]")
        );
        assert_eq!(
            mailbox("<@relay.example,@r2.example:u@d.example>")
                .unwrap()
                .text,
            "u@d.example"
        );
        assert_eq!(mailbox("<@relay.example>"), Err(PathError::Syntax));
    }

    #[test]
    fn utf8_is_detected_and_invalid_utf8_refused() {
        let m = mailbox("<üser@exämple.com>").unwrap();
        assert!(m.non_ascii);
        assert_eq!(m.domain(), Some("exämple.com"));
        assert_eq!(parse_path(b"<\xff@example.com>"), Err(PathError::Syntax));
    }

    #[test]
    fn domainless_mailbox_parses_without_a_domain() {
        let m = mailbox("<Postmaster>").unwrap();
        assert_eq!(m.domain(), None);
        assert_eq!(m.local_part(), "Postmaster");
    }

    #[test]
    fn length_limit_is_256_octets() {
        let ok = format!("<{}@example.com>", "a".repeat(MAX_PATH_BYTES - 14));
        assert_eq!(ok.len(), MAX_PATH_BYTES);
        assert!(mailbox(&ok).is_ok());
        let long = format!("<{}@example.com>", "a".repeat(MAX_PATH_BYTES - 13));
        assert_eq!(mailbox(&long), Err(PathError::Syntax));
    }

    #[test]
    fn parameters_follow_the_path_after_a_space() {
        let (path, rest) = split_path(b" <a@b.example> SIZE=10 BODY=8BITMIME").unwrap();
        assert_eq!(path, b"<a@b.example>");
        assert_eq!(rest, b" SIZE=10 BODY=8BITMIME");
        assert_eq!(split_path(b"<a@b.example>SIZE=1"), Err(PathError::Syntax));
    }
}
