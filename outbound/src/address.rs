//! Envelope addresses as the relay takes them from applications and the command line.
//!
//! Owns: what the null reverse-path is (`''`, `<>`, and `""`, as sendmail's `-f '<>'`
//! means it; RFC 5321 §4.5.5), unwrapping one pair of angle brackets, and what counts
//! as a mailbox the relay will put on an SMTP command line or send a DSN to
//! (`local@domain`, printable ASCII, no spaces or angle brackets, at most 320 octets).
//! A queue row is application input: a CR/LF or `>` in an address would let it add
//! SMTP commands of its own, so anything else is refused.
//! Must not: do I/O.

/// Longest address accepted (RFC 5321 §4.5.3.1: 64 octets of local part, 255 of domain).
const MAX_ADDRESS_BYTES: usize = 320;

/// An envelope sender (`MAIL FROM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `MAIL FROM:<>`: DSNs and other automatic mail; never bounced (RFC 5321 §4.5.5).
    Null,
    /// A mailbox, without angle brackets.
    Mailbox(String),
}

impl ReversePath {
    /// The form stored in `outbound_queue.sender` and put between `<` and `>` on the
    /// wire: `""` for the null sender.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Null => "",
            Self::Mailbox(m) => m,
        }
    }

    /// Where a DSN about this message may go: only to a mailbox, never to the null
    /// sender (a DSN is never sent about a DSN).
    pub fn dsn_recipient(&self) -> Option<&str> {
        match self {
            Self::Null => None,
            Self::Mailbox(m) => Some(m),
        }
    }
}

/// A sender that is neither the null reverse-path nor a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an email address (local@domain) or the null sender <>")]
pub struct NotAnAddress(pub String);

/// Parses a sender as applications and operators write it: `''`, `<>` or `""` (the
/// null sender), `a@b.example` or `<a@b.example>`. Surrounding whitespace is ignored.
pub fn reverse_path(text: &str) -> Result<ReversePath, NotAnAddress> {
    let trimmed = text.trim_matches([' ', '\t']);
    if matches!(trimmed, "" | "<>" | "\"\"") {
        return Ok(ReversePath::Null);
    }
    let inner = unbracket(trimmed);
    if is_mailbox(inner) {
        Ok(ReversePath::Mailbox(inner.to_owned()))
    } else {
        Err(NotAnAddress(text.to_owned()))
    }
}

/// `<x>` → `x`; anything else unchanged.
fn unbracket(text: &str) -> &str {
    text.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text)
}

/// `local@domain` with both parts non-empty, printable ASCII without `<`/`>` (so it
/// is safe between `<` and `>` on a command line), at most 320 octets.
pub fn is_mailbox(address: &str) -> bool {
    let safe = address.len() <= MAX_ADDRESS_BYTES
        && address
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    safe && address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_null_sender_is_null() {
        for null in ["", "<>", "\"\"", " <> ", "\t"] {
            assert_eq!(reverse_path(null), Ok(ReversePath::Null), "{null:?}");
        }
        assert_eq!(ReversePath::Null.as_str(), "");
        assert_eq!(ReversePath::Null.dsn_recipient(), None);
    }

    #[test]
    fn mailboxes_lose_their_brackets() {
        for (text, want) in [
            ("a@b.test", "a@b.test"),
            ("<a@b.test>", "a@b.test"),
            (" <x+tag@b.test> ", "x+tag@b.test"),
        ] {
            let path = reverse_path(text).unwrap();
            assert_eq!(path, ReversePath::Mailbox(want.into()));
            assert_eq!(path.dsn_recipient(), Some(want));
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "nobody",
            "a@",
            "@b.test",
            "<<>>",
            "<a@b.test",
            "a b@c.test",
            "a@b.test>\r\nRCPT TO:<victim@x.test",
            "<a@b.test>>",
            "é@b.test",
        ] {
            assert!(reverse_path(bad).is_err(), "{bad:?}");
            assert!(!is_mailbox(bad), "{bad:?}");
        }
        assert!(!is_mailbox(&format!("{}@b.test", "a".repeat(320))));
        assert!(is_mailbox("a@b"));
    }
}
