//! DATA transparency for the sending side (RFC 5321 §4.5.2, §2.3.8): the bytes sent
//! after `354`.
//!
//! Owns: normalising line endings to CRLF (a bare CR or LF becomes CRLF, so no
//! receiver can read the message two ways: the smuggling family of CVE-2023-51764),
//! doubling a leading dot on every line, and the terminating `.` line. The receiving
//! side's inverse is `smtpd::protocol::data`.

/// The message as sent after DATA: CRLF line ends, dot-stuffed, ending with
/// `\r\n.\r\n` (a message without a final line end gets one).
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(
        message
            .len()
            .saturating_add(message.len() / 64)
            .saturating_add(8),
    );
    let mut at_line_start = true;
    let mut previous = 0u8;
    for &b in message {
        if b == b'\n' && previous != b'\r' {
            wire.push(b'\r');
        }
        if at_line_start && b == b'.' {
            wire.push(b'.');
        }
        // A bare CR not followed by LF: sending it as is would let some servers
        // read it as a line end, so it becomes CRLF.
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
    wire
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn wire(s: &str) -> String {
        String::from_utf8(stuff(s.as_bytes())).unwrap()
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

    proptest::proptest! {
        /// Whatever the message, the wire form has no bare CR/LF and no line that
        /// starts with a single dot before the end.
        #[test]
        fn stuffing_leaves_no_bare_line_end_and_no_lone_dot(msg in proptest::collection::vec(proptest::sample::select(vec![b'a', b'.', b'\r', b'\n', 0xC3]), 0..64)) {
            let w = stuff(&msg);
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
