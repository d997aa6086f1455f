//! The message of a BDAT transaction: chunks of exactly counted octets, joined.
//!
//! Owns: RFC 3030 §2 (CHUNKING: the content arrives in `BDAT n` chunks of exactly
//! `n` octets, with no dot-stuffing and no end-of-data line) and §3 (BINARYMIME: any
//! octet may appear), plus the same size and line rules that DATA applies
//! (`max_message_bytes`; for non-binary content, lines end with CRLF only and are at
//! most `max_line_bytes`). Must not: look for a terminator or interpret the octets in
//! any other way. Where a chunk ends is decided by the session from the BDAT size,
//! never by the content, so a chunk that holds `CRLF.CRLF` or a smuggling sequence
//! is just message text.
//!
//! Why the line rules apply to BDAT too: the stored message is what consumers read
//! and what may be relayed onward with DATA, where a bare LF is exactly what SMTP
//! smuggling exploits (see `data.rs`). A message declared `BODY=BINARYMIME` is
//! binary by contract and is stored exactly as sent.

use super::data::{BodyBuffer, BodyPiece, DataError};

/// The content received so far in one BDAT transaction.
#[derive(Debug)]
pub struct ChunkedBody {
    /// Shared with DATA: bounded growth, and pieces the reactor can spool.
    body: BodyBuffer,
    /// Octets received, counted even when no longer kept.
    size: u64,
    max_message_bytes: u64,
    max_line_bytes: usize,
    /// `BODY=BINARYMIME`: no line rules.
    binary: bool,
    /// The last octet seen was a CR (its LF may come in the next chunk).
    after_cr: bool,
    /// Octets of the current line so far, excluding the line ending.
    line_bytes: usize,
    /// The first reason the message will be refused; once set, nothing more is kept.
    error: Option<DataError>,
}

impl ChunkedBody {
    pub fn new(max_message_bytes: usize, max_line_bytes: usize, binary: bool) -> Self {
        Self {
            body: BodyBuffer::default(),
            size: 0,
            max_message_bytes: u64::try_from(max_message_bytes).unwrap_or(u64::MAX),
            max_line_bytes,
            binary,
            after_cr: false,
            line_bytes: 0,
            error: None,
        }
    }

    /// Whether a chunk of `size` more octets would take the message over the limit.
    /// Such a chunk is read and dropped, and its BDAT is refused at once (552).
    pub fn would_exceed(&self, size: u64) -> bool {
        self.size.saturating_add(size) > self.max_message_bytes
    }

    /// Appends octets of a chunk.
    pub fn extend(&mut self, bytes: &[u8]) {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.size = self.size.saturating_add(len);
        if self.size > self.max_message_bytes {
            self.fail(DataError::TooBig);
        }
        if !self.binary {
            self.check_lines(bytes);
        }
        if self.error.is_none() {
            self.body.extend(bytes);
        }
    }

    /// Marks the message too big without reading more of it (a chunk refused by
    /// [`Self::would_exceed`]).
    pub fn refuse_too_big(&mut self) {
        self.fail(DataError::TooBig);
    }

    /// Why the message will be refused, if it already will be.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Memory held for the message so far (the global in-flight budget counts it).
    pub fn buffered_bytes(&self) -> usize {
        self.body.capacity()
    }

    /// Takes what is held so the reactor can spool it (see
    /// [`DataReceiver::take_body`](super::data::DataReceiver::take_body)).
    pub fn take_body(&mut self) -> Option<BodyPiece> {
        self.body.take()
    }

    /// Octets taken out by [`Self::take_body`] so far.
    pub fn taken_bytes(&self) -> u64 {
        self.body.taken()
    }

    /// The message after `BDAT … LAST`: its octets, or why it is refused.
    pub fn finish(mut self) -> Result<Vec<u8>, DataError> {
        // A CR as the very last octet had no LF after it.
        if !self.binary && self.after_cr {
            self.fail(DataError::BareLineEnding);
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.body.into_bytes()),
        }
    }

    /// RFC 5321 §2.3.8 for text content: every CR is followed by LF and every LF
    /// preceded by CR; §4.5.3.1.6 line length. State carries across chunks.
    fn check_lines(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest.first() == Some(&b'\n') {
                    self.line_bytes = 0;
                    rest = rest.get(1..).unwrap_or_default();
                    continue;
                }
                // The CR before this octet was bare; count it as line text.
                self.fail(DataError::BareLineEnding);
                self.line_text(1);
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => {
                    self.line_text(rest.len());
                    return;
                }
                Some(at) => {
                    self.line_text(at);
                    if rest.get(at) == Some(&b'\n') {
                        self.fail(DataError::BareLineEnding);
                        self.line_text(1);
                    } else {
                        self.after_cr = true;
                    }
                    rest = rest.get(at.saturating_add(1)..).unwrap_or_default();
                }
            }
        }
    }

    fn line_text(&mut self, n: usize) {
        self.line_bytes = self.line_bytes.saturating_add(n);
        if self.line_bytes > self.max_line_bytes {
            self.fail(DataError::LineTooLong);
        }
    }

    fn fail(&mut self, error: DataError) {
        // Size wins over the other reasons, as in DATA.
        if self.error.is_none() || error == DataError::TooBig {
            self.error = Some(error);
        }
        // A refused message is not kept: free its memory now.
        self.body.discard();
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// However the octets are cut into chunks, the result is the same, and an
        /// accepted message is exactly the octets sent.
        #[test]
        fn any_split_into_chunks_gives_the_same_message(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..300),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            binary in any::<bool>(),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let whole = body(&[&bytes], binary);
            prop_assert_eq!(&whole, &body(&chunks, binary));
            if let Ok(kept) = whole {
                prop_assert_eq!(kept, bytes);
            }
        }
    }

    fn body(chunks: &[&[u8]], binary: bool) -> Result<Vec<u8>, DataError> {
        let mut b = ChunkedBody::new(100, 20, binary);
        for c in chunks {
            b.extend(c);
        }
        b.finish()
    }

    #[test]
    fn chunks_are_joined_exactly_with_no_dot_or_terminator_meaning() {
        assert_eq!(
            body(
                &[b"Subject: x\r\n\r\n", b".\r\n..a\r\n", b"\r\n.\r\nb\r\n"],
                false
            )
            .unwrap(),
            b"Subject: x\r\n\r\n.\r\n..a\r\n\r\n.\r\nb\r\n"
        );
        assert_eq!(body(&[], false).unwrap(), b"");
    }

    #[test]
    fn crlf_split_across_chunks_is_a_line_end() {
        assert_eq!(
            body(&[b"a\r", b"\nb\r\n"], false).unwrap(),
            b"a\r\nb\r\n".to_vec()
        );
    }

    #[test]
    fn bare_cr_or_lf_refuses_text_but_not_binary() {
        for chunks in [
            &[&b"a\nb\r\n"[..]][..],
            &[b"a\rb\r\n"],
            &[b"a\r", b"b\r\n"],
            &[b"a\r\r\n"],
            &[b"a\r"],
            &[b"x\r\n.\n"],
        ] {
            assert_eq!(
                body(chunks, false),
                Err(DataError::BareLineEnding),
                "{chunks:?}"
            );
            assert_eq!(body(chunks, true).unwrap(), chunks.concat(), "{chunks:?}");
        }
    }

    #[test]
    fn size_counts_every_octet_and_wins() {
        let mut b = ChunkedBody::new(10, 1000, false);
        assert!(!b.would_exceed(10));
        assert!(b.would_exceed(11));
        b.extend(b"12345\r\n");
        assert!(b.would_exceed(4));
        b.extend(b"a\nb");
        assert_eq!(b.error(), Some(DataError::BareLineEnding));
        b.extend(b"c");
        assert_eq!(b.error(), Some(DataError::TooBig));
        assert_eq!(b.buffered_bytes(), 0);
        assert_eq!(b.finish(), Err(DataError::TooBig));
    }

    #[test]
    fn long_lines_are_refused_in_text_only() {
        let line = [b'x'; 21];
        assert_eq!(body(&[&line, b"\r\n"], false), Err(DataError::LineTooLong));
        assert_eq!(
            body(&[&line[..10], &line[10..], b"\r\n"], false),
            Err(DataError::LineTooLong)
        );
        assert!(body(&[&line[..20], b"\r\n", &line[..20]], false).is_ok());
        assert!(body(&[&line, b"\r\n"], true).is_ok());
    }
}
