//! A message ready for DATA: its wire form (from `smtp_wire::data::stuff`: CRLF,
//! dot-stuffed, terminated) and the facts about it the client needs (8-bit
//! content, size), and its DKIM signatures, added once per payload by the first
//! worker that sends it ([`Payload::sign`]).
//! Must not: do I/O.

use std::sync::OnceLock;

use crate::dkim::Keys;

/// A message ready for the DATA phase, shared by every attempt and recipient.
#[derive(Debug)]
pub struct Payload {
    /// Dot-stuffed message with CRLF line endings, ending with `\r\n.\r\n`.
    wire: Vec<u8>,
    /// The wire form with the `DKIM-Signature` fields in front, once signed
    /// (None: no key for the From domain). Set once, by the first sender.
    signed: OnceLock<Option<Vec<u8>>>,
    /// The message has octets ≥ 0x80 (send `BODY=8BITMIME` when offered).
    pub eight_bit: bool,
    /// Size of the message itself, for the `SIZE=` parameter.
    size: usize,
}

impl Payload {
    pub fn new(message: &[u8]) -> Self {
        Self {
            eight_bit: message.iter().any(|&b| b >= 0x80),
            size: message.len(),
            wire: smtp_wire::data::stuff(message),
            signed: OnceLock::new(),
        }
    }

    /// Signs the message (as the receiver will see it: CRLF, unstuffed) with the
    /// keys of its From domain, the first time only: recipients grouped into one
    /// payload and its later attempts share the signatures. Runs in a delivery
    /// worker, never on the dispatcher's thread.
    /// `fallback`: the domain to sign as when the From domain has no key (DSNs).
    pub fn sign(&self, keys: &Keys, fallback: Option<&str>) {
        if keys.is_empty() {
            return;
        }
        self.signed.get_or_init(|| {
            let message = unstuff(&self.wire);
            // Signature fields are CRLF-terminated and never start with a dot, so
            // they go on the wire as they are.
            keys.sign(&message, fallback).map(|mut headers| {
                headers.extend_from_slice(&self.wire);
                headers
            })
        });
    }

    /// What is written after `354`.
    pub fn wire(&self) -> &[u8] {
        match self.signed.get() {
            Some(Some(w)) => w,
            _ => &self.wire,
        }
    }

    /// Octets of the message as sent (signatures included), for `SIZE=`.
    pub fn size(&self) -> usize {
        match self.signed.get() {
            Some(Some(w)) => self.size + (w.len() - self.wire.len()),
            _ => self.size,
        }
    }
}

/// The inverse of `stuff`: the message as the receiver stores it (CRLF line ends,
/// leading dots undoubled, no terminating `.` line).
pub fn unstuff(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").unwrap_or(wire);
    let mut out = Vec::with_capacity(body.len());
    let mut at_line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if at_line_start && b == b'.' && body.get(i + 1).is_some() {
            at_line_start = false;
            continue;
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_eight_bit_content() {
        assert!(!Payload::new(b"plain").eight_bit);
        assert!(Payload::new("café".as_bytes()).eight_bit);
        assert_eq!(Payload::new(b"abc").size(), 3);
    }

    #[test]
    fn unstuff_inverts_stuff() {
        for m in [&b"a\r\n.b\r\n..c\r\n"[..], b"x\ny\n", b"no end", b".\r\n"] {
            let wire = smtp_wire::data::stuff(m);
            let back = unstuff(&wire);
            assert_eq!(smtp_wire::data::stuff(&back), wire, "{m:?}");
        }
        assert_eq!(unstuff(&smtp_wire::data::stuff(b"a\n.b\n")), b"a\r\n.b\r\n");
    }
}
