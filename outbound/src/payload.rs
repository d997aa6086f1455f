//! A message ready for DATA: its wire form (from `smtp_wire::data::stuff`: CRLF,
//! dot-stuffed, terminated) and the facts about it the client needs (8-bit
//! content, size). Must not: do I/O.

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
        Self {
            eight_bit: message.iter().any(|&b| b >= 0x80),
            size: message.len(),
            wire: smtp_wire::data::stuff(message),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_eight_bit_content() {
        assert!(!Payload::new(b"plain").eight_bit);
        assert!(Payload::new("café".as_bytes()).eight_bit);
        assert_eq!(Payload::new(b"abc").size, 3);
    }
}
