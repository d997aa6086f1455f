//! The bytes sent after `DATA`: line endings normalised to CRLF, leading dots
//! doubled (RFC 5321 §4.5.2), and the terminating `.` line.
//!
//! Owns: that transformation and the facts about a message the client needs
//! (8-bit content, size). Must not: do I/O.

/// A message ready for the DATA phase, shared by every attempt and recipient.
#[derive(Debug)]
pub struct Payload {
    /// Dot-stuffed message with CRLF line endings, ending with `\r\n.\r\n`.
    pub wire: Vec<u8>,
    /// The message has octets ≥ 0x80 (send `BODY=8BITMIME` when offered).
    pub eight_bit: bool,
    /// Size of the message itself, for the `SIZE=` parameter.
    pub size: usize,
}

impl Payload {
    pub fn new(message: &[u8]) -> Self {
        let mut wire = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        let mut at_line_start = true;
        let mut previous = 0u8;
        for &b in message {
            if b == b'\n' && previous != b'\r' {
                wire.push(b'\r');
            }
            if at_line_start && b == b'.' {
                wire.push(b'.');
            }
            // A bare CR not followed by LF is an error in a message; sending it as
            // is would let it be read as a line end by some servers, so it becomes CRLF.
            if previous == b'\r' && b != b'\n' {
                wire.push(b'\n');
                if b == b'.' {
                    wire.push(b'.');
                }
            }
            wire.push(b);
            at_line_start = b == b'\n';
            previous = b;
        }
        if previous == b'\r' {
            wire.push(b'\n');
        } else if !message.is_empty() && previous != b'\n' {
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        Self {
            eight_bit: message.iter().any(|&b| b >= 0x80),
            size: message.len(),
            wire,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn wire(s: &str) -> String {
        String::from_utf8(Payload::new(s.as_bytes()).wire).unwrap()
    }

    #[test]
    fn normalises_line_endings_and_terminates() {
        assert_eq!(wire("a\nb\r\nc"), "a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(wire("a\r\n"), "a\r\n.\r\n");
        assert_eq!(wire(""), ".\r\n");
        assert_eq!(wire("a\rb"), "a\r\nb\r\n.\r\n");
    }

    #[test]
    fn doubles_leading_dots_only() {
        assert_eq!(
            wire(".x\n..y\na.b\n.\n"),
            "..x\r\n...y\r\na.b\r\n..\r\n.\r\n"
        );
        assert_eq!(wire("a\r.b"), "a\r\n..b\r\n.\r\n");
    }

    #[test]
    fn flags_eight_bit_content() {
        assert!(!Payload::new(b"plain").eight_bit);
        assert!(Payload::new("café".as_bytes()).eight_bit);
        assert_eq!(Payload::new(b"abc").size, 3);
    }

    proptest::proptest! {
        /// Whatever the message, the wire form has no bare CR/LF, no line starting
        /// with a single dot before the end, and un-stuffs back to the CRLF message.
        #[test]
        fn stuffing_round_trips(msg in proptest::collection::vec(proptest::sample::select(vec![b'a', b'.', b'\r', b'\n', 0xC3]), 0..64)) {
            let w = Payload::new(&msg).wire;
            proptest::prop_assert!(w.ends_with(b".\r\n"));
            let body = &w[..w.len() - 3];
            for (i, &b) in body.iter().enumerate() {
                if b == b'\n' { proptest::prop_assert_eq!(i.checked_sub(1).map(|j| body[j]), Some(b'\r')); }
                if b == b'\r' { proptest::prop_assert_eq!(body.get(i + 1), Some(&b'\n')); }
            }
            let text = String::from_utf8_lossy(body);
            for line in text.split("\r\n") {
                proptest::prop_assert!(!line.starts_with('.') || line.starts_with(".."), "unstuffed dot line {:?}", line);
            }
        }
    }
}
