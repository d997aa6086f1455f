//! The DATA phase: finding the end of the message, un-stuffing dots, and refusing
//! anything that could be read two ways.
//!
//! Owns: RFC 5321 §4.1.1.4 (end of data is `CRLF.CRLF`), §4.5.2 (transparency:
//! a leading dot is removed), §2.3.8 (lines end with CRLF only), and the size and
//! line-length limits. Must not: allocate beyond the message limit, or decide what
//! happens to the message.
//!
//! SMTP smuggling (CVE-2023-51764, -51765, -51766): servers that also accept `\n.\n`
//! or `\r.\r` as the end of data can be made to see a second, forged message inside
//! the first one. Here the message ends **only** at `CRLF.CRLF`; a bare CR or LF
//! anywhere makes the whole message refused once the real end arrives, so whatever
//! was hidden after a fake terminator is neither stored nor run as commands.
//!
//! The scanner is a small byte-level state machine with a memchr fast path: ordinary
//! text between line endings is copied in one slice, so the cost per byte is a
//! vectorised search plus a memcpy.
//!
//! Memory: the body accumulates in a [`BodyBuffer`], which grows in bounded steps
//! (never more than [`MAX_GROWTH_BYTES`] of slack, where a doubling `Vec` could
//! hold twice what it was given) and can be emptied while the message goes on
//! ([`DataReceiver::take_body`]): the reactor moves a large body to a spool file
//! piece by piece, so what a client sends is held in memory only up to a bound.

/// Where the scanner is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or right after the DATA command).
    LineStart,
    /// A `.` at the start of a line, not yet copied (it may be stuffing, or the end).
    Dot,
    /// `.` then CR at the start of a line: the end, if LF follows.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR inside a line: a line end if LF follows.
    Cr,
}

/// Why a complete message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// Over `max_message_bytes` (after un-stuffing).
    TooBig,
    /// A bare CR or a bare LF somewhere in the message.
    BareLineEnding,
    /// A line over `max_line_bytes`.
    LineTooLong,
}

/// What [`DataReceiver::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the message goes on.
    More,
    /// The end of data was found after `consumed` bytes of this input.
    Done { consumed: usize },
}

/// A buffer grows by doubling while small, then by at most this much at a time.
pub const MAX_GROWTH_BYTES: usize = 256 * 1024;
/// The first allocation for a body: one typical read.
const FIRST_ALLOCATION_BYTES: usize = 16 * 1024;
/// The most a declared `SIZE=` (RFC 1870) makes the first allocation: a message
/// declared up to this size is received without regrowing its buffer (no copies
/// of what came so far); a larger one starts here and grows in bounded steps, so
/// what a client declares never makes us allocate more than this up front (nor
/// more than the configured message limit).
pub const MAX_RESERVE_BYTES: usize = MAX_GROWTH_BYTES;

/// Message bytes received and not yet handed on. Shared by the receivers of the
/// message body (DATA here; BDAT chunks can use the same type), so the reactor
/// sees one way to measure and drain a body whatever command carries it.
///
/// Its capacity (what the in-flight budget charges) exceeds its length by at most
/// [`MAX_GROWTH_BYTES`] once past that size, and by at most the length before.
/// It counts what it handed out, so every piece says where in the body it belongs
/// ([`BodyPiece::offset`]) and the envelope can say where its `data` starts.
#[derive(Debug, Default)]
pub struct BodyBuffer {
    bytes: Vec<u8>,
    /// Octets handed out by [`BodyBuffer::take`] so far.
    taken: u64,
    /// The first allocation, from the declared size (0: [`FIRST_ALLOCATION_BYTES`]).
    /// Made when the first byte arrives, not before, so an idle DATA holds nothing.
    first_allocation: usize,
}

/// Body octets taken out of a receiver while the message arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPiece {
    /// Octets of this same body taken before this piece: 0 for the first piece of
    /// a body, so a new message is told from the continuation of an old one.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl BodyBuffer {
    /// Appends, growing the allocation in bounded steps.
    pub fn extend(&mut self, more: &[u8]) {
        let needed = self.bytes.len().saturating_add(more.len());
        if needed > self.bytes.capacity() {
            let step = if self.bytes.capacity() == 0 && self.first_allocation > 0 {
                self.first_allocation
            } else {
                self.bytes
                    .capacity()
                    .clamp(FIRST_ALLOCATION_BYTES, MAX_GROWTH_BYTES)
            };
            let target = needed.max(self.bytes.capacity().saturating_add(step));
            self.bytes
                .reserve_exact(target.saturating_sub(self.bytes.len()));
        }
        self.bytes.extend_from_slice(more);
    }

    /// Bytes held now.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Memory held (allocated, not only used).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Hands out everything held (None if nothing is) and starts over with no
    /// allocation.
    pub fn take(&mut self) -> Option<BodyPiece> {
        if self.bytes.is_empty() {
            return None;
        }
        let bytes = std::mem::take(&mut self.bytes);
        // A body taken out is going to the spool in pieces: no more reservations.
        self.first_allocation = 0;
        let offset = self.taken;
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.taken = self.taken.saturating_add(len);
        Some(BodyPiece { offset, bytes })
    }

    /// Octets handed out so far: where what is held now starts in the body.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Frees what is held (a refused body): nothing more is kept.
    pub fn discard(&mut self) {
        self.bytes = Vec::new();
    }

    /// What is held, at the end of the body (it starts at [`BodyBuffer::taken`]).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Receives one message body.
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    body: BodyBuffer,
    /// Octets of the current line so far, excluding the line ending.
    line_bytes: usize,
    /// Total octets after un-stuffing, counted even when no longer kept.
    size: usize,
    max_message_bytes: usize,
    max_line_bytes: usize,
    /// The first reason the message will be refused; once set, nothing more is kept.
    error: Option<DataError>,
}

impl DataReceiver {
    /// A receiver whose first allocation is the size the client declared in
    /// `MAIL FROM ... SIZE=`, capped by the message limit and [`MAX_RESERVE_BYTES`].
    pub fn with_declared_size(
        max_message_bytes: usize,
        max_line_bytes: usize,
        declared: Option<u64>,
    ) -> Self {
        let mut receiver = Self::new(max_message_bytes, max_line_bytes);
        if let Some(size) = declared {
            receiver.body.first_allocation = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(max_message_bytes)
                .min(MAX_RESERVE_BYTES);
        }
        receiver
    }

    pub fn new(max_message_bytes: usize, max_line_bytes: usize) -> Self {
        Self {
            state: State::LineStart,
            body: BodyBuffer::default(),
            line_bytes: 0,
            size: 0,
            max_message_bytes,
            max_line_bytes,
            error: None,
        }
    }

    /// Consumes input up to and including the end-of-data line, if present.
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while let Some(&byte) = input.get(i) {
            match self.state {
                State::Text => {
                    let rest = input.get(i..).unwrap_or_default();
                    // Fastest path: whole ordinary lines, kept in one copy.
                    let plain = self.plain_lines(rest);
                    if plain > 0 {
                        self.keep(rest.get(..plain).unwrap_or_default());
                        self.line_bytes = 0;
                        self.state = State::LineStart;
                        i = i.saturating_add(plain);
                        continue;
                    }
                    // Fast path: copy the run of ordinary bytes in one go.
                    let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    if run > 0 {
                        self.text(rest.get(..run).unwrap_or_default());
                        i = i.saturating_add(run);
                        continue;
                    }
                    i = i.saturating_add(1);
                    if byte == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare(b"\n");
                    }
                }
                State::LineStart => {
                    i = i.saturating_add(1);
                    match byte {
                        b'.' => self.state = State::Dot,
                        b'\r' => self.state = State::Cr,
                        b'\n' => self.bare(b"\n"),
                        other => {
                            self.state = State::Text;
                            self.text(&[other]);
                        }
                    }
                }
                State::Dot => {
                    i = i.saturating_add(1);
                    // RFC 5321 §4.5.2: the leading dot of a non-end line is dropped.
                    match byte {
                        b'\r' => self.state = State::DotCr,
                        b'\n' => self.bare(b"\n"),
                        other => {
                            self.state = State::Text;
                            self.text(&[other]);
                        }
                    }
                }
                State::DotCr => {
                    if byte == b'\n' {
                        self.state = State::LineStart;
                        return Progress::Done {
                            consumed: i.saturating_add(1),
                        };
                    }
                    // `.` CR and something else: the CR was bare. Re-read the byte
                    // as the character after a CR inside a line.
                    self.state = State::Cr;
                }
                State::Cr => {
                    if byte == b'\n' {
                        i = i.saturating_add(1);
                        self.keep(b"\r\n");
                        self.line_bytes = 0;
                        self.state = State::LineStart;
                    } else {
                        // Bare CR; the byte is looked at again as line text.
                        self.bare(b"\r");
                    }
                }
            }
        }
        Progress::More
    }

    /// Memory held for the message so far (the global in-flight budget counts it).
    pub fn buffered_bytes(&self) -> usize {
        self.body.capacity()
    }

    /// The body bytes received since the last call, for the reactor to spool; None
    /// when there are none (or the message is refused already: nothing is kept).
    /// [`DataReceiver::finish`] then returns only what arrived after the last take,
    /// and [`DataReceiver::taken_bytes`] says how much came before it.
    pub fn take_body(&mut self) -> Option<BodyPiece> {
        self.body.take()
    }

    /// Octets of the body taken out by [`DataReceiver::take_body`] so far.
    pub fn taken_bytes(&self) -> u64 {
        self.body.taken()
    }

    /// The message once the end was seen: the body (what was not taken), or why it
    /// is refused.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.body.into_bytes()),
        }
    }

    /// How many bytes at the start of `input` (which starts inside a line,
    /// `line_bytes` into it) are whole lines the state machine would keep exactly
    /// as they are: each ends in CRLF within the line limit and is followed by a
    /// byte that starts an ordinary line (not `.`, CR or LF). Anything else (a
    /// bare CR or LF, a dot, a line too long, the end of the input) is left to the
    /// byte-by-byte states, so this changes the cost, never the outcome.
    fn plain_lines(&self, input: &[u8]) -> usize {
        let mut end = 0;
        let mut line = self.line_bytes;
        loop {
            let rest = input.get(end..).unwrap_or_default();
            let Some(run) = memchr::memchr2(b'\r', b'\n', rest) else {
                return end;
            };
            let crlf = rest.get(run..run.saturating_add(2)) == Some(&b"\r\n"[..]);
            let next = rest.get(run.saturating_add(2)).copied();
            if !crlf
                || line.saturating_add(run) > self.max_line_bytes
                || matches!(next, None | Some(b'.' | b'\r' | b'\n'))
            {
                return end;
            }
            end = end.saturating_add(run).saturating_add(2);
            line = 0;
        }
    }

    /// Line text (no CR or LF).
    fn text(&mut self, bytes: &[u8]) {
        self.line_bytes = self.line_bytes.saturating_add(bytes.len());
        if self.line_bytes > self.max_line_bytes {
            self.fail(DataError::LineTooLong);
        }
        self.keep(bytes);
    }

    /// A CR or LF that is not part of a CRLF pair. The line goes on: a bare LF is
    /// not a line end here, which is exactly what defeats `\n.\n` smuggling.
    fn bare(&mut self, byte: &'static [u8]) {
        self.fail(DataError::BareLineEnding);
        self.state = State::Text;
        self.text(byte);
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.max_message_bytes {
            self.fail(DataError::TooBig);
        }
        if self.error.is_none() {
            self.body.extend(bytes);
        }
    }

    fn fail(&mut self, error: DataError) {
        // Size wins over the other reasons: a client that sent too much must learn
        // that (552) rather than a format complaint.
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
    use super::*;

    /// Feeds all of `input` at once; returns (consumed, result).
    fn run(input: &[u8]) -> (Option<usize>, Result<Vec<u8>, DataError>) {
        run_with(input, 1 << 20, 1000)
    }

    fn run_with(
        input: &[u8],
        max: usize,
        line: usize,
    ) -> (Option<usize>, Result<Vec<u8>, DataError>) {
        let mut r = DataReceiver::new(max, line);
        match r.feed(input) {
            Progress::Done { consumed } => (Some(consumed), r.finish()),
            Progress::More => (None, r.finish()),
        }
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_keeps_the_last_crlf() {
        let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
        let (consumed, body) = run(input);
        assert_eq!(consumed, Some(input.len() - 6));
        assert_eq!(body.unwrap(), b"Subject: x\r\n\r\nhello\r\n");
    }

    #[test]
    fn empty_message() {
        assert_eq!(run(b".\r\n"), (Some(3), Ok(Vec::new())));
    }

    #[test]
    fn dot_stuffing_is_removed() {
        let (_, body) = run(b"..leading\r\n...\r\n.x\r\n.\r\n");
        assert_eq!(body.unwrap(), b".leading\r\n..\r\nx\r\n");
    }

    #[test]
    fn dots_inside_lines_are_kept() {
        let (_, body) = run(b"a.b\r\n a .\r\n.\r\n");
        assert_eq!(body.unwrap(), b"a.b\r\n a .\r\n");
    }

    #[test]
    fn smuggling_terminators_do_not_end_the_message() {
        for fake in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\n.\r",
        ] {
            let mut input = b"Subject: x\r\n\r\nhi".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@example.com>\r\nDATA\r\n");
            let end_at = input.len() + 6;
            input.extend_from_slice(b"x\r\n.\r\nNOOP\r\n");
            let (consumed, body) = run(&input);
            assert_eq!(consumed, Some(end_at), "{fake:?}");
            assert_eq!(body, Err(DataError::BareLineEnding), "{fake:?}");
        }
    }

    #[test]
    fn bare_lf_or_cr_anywhere_is_refused() {
        for input in [
            &b"a\nb\r\n.\r\n"[..],
            b"a\rb\r\n.\r\n",
            b"\n\r\n.\r\n",
            b"a\r\r\n.\r\n",
        ] {
            assert_eq!(run(input).1, Err(DataError::BareLineEnding), "{input:?}");
        }
    }

    #[test]
    fn size_limit_counts_unstuffed_octets_and_wins() {
        assert_eq!(
            run_with(b"12345678\r\n.\r\n", 10, 100).1.unwrap(),
            b"12345678\r\n"
        );
        assert_eq!(
            run_with(b"123456789\r\n.\r\n", 10, 100).1,
            Err(DataError::TooBig)
        );
        assert_eq!(
            run_with(b"..23456789\r\n.\r\n", 11, 100).1.unwrap(),
            b".23456789\r\n"
        );
        assert_eq!(
            run_with(b"a\nb123456789\r\n.\r\n", 10, 100).1,
            Err(DataError::TooBig)
        );
    }

    #[test]
    fn long_lines_are_refused() {
        assert!(run_with(b"1234\r\n.\r\n", 100, 4).1.is_ok());
        assert_eq!(
            run_with(b"12345\r\n.\r\n", 100, 4).1,
            Err(DataError::LineTooLong)
        );
    }

    #[test]
    fn refused_messages_hold_no_memory() {
        let mut r = DataReceiver::new(100, 1000);
        r.feed(&[b'x'; 200]);
        assert_eq!(r.body.capacity(), 0);
        assert_eq!(r.feed(b"\r\n.\r\n"), Progress::Done { consumed: 5 });
        assert_eq!(r.finish(), Err(DataError::TooBig));
    }

    /// A 100,000-octet body fed in reads of 4 KiB; the buffer's capacity each time.
    fn capacities(r: &mut DataReceiver) -> Vec<usize> {
        let mut line = vec![b'x'; 98];
        line.extend_from_slice(b"\r\n");
        let body: Vec<u8> = line.repeat(1000);
        body.chunks(4096)
            .map(|piece| {
                assert_eq!(r.feed(piece), Progress::More);
                r.buffered_bytes()
            })
            .collect()
    }

    /// Fed one byte at a time the whole-line fast path never applies (it needs a
    /// line's CRLF and the next byte in one input), so this is the reference.
    fn run_bytewise(
        input: &[u8],
        max: usize,
        line: usize,
    ) -> (Option<usize>, Result<Vec<u8>, DataError>) {
        let mut r = DataReceiver::new(max, line);
        for (i, byte) in input.iter().enumerate() {
            if let Progress::Done { .. } = r.feed(std::slice::from_ref(byte)) {
                return (Some(i + 1), r.finish());
            }
        }
        (None, r.finish())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]
        /// Lines of the SMTP-relevant alphabet (dots, bare CR/LF, long lines, the
        /// smuggling sequences): the fast path ends, keeps and refuses exactly as
        /// the byte-by-byte states do.
        #[test]
        fn whole_lines_at_once_are_read_as_byte_by_byte(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                &b"abc"[..], b"\r\n", b".", b"\r", b"\n", b"..", b"\r\n.\r\n",
                b"\n.\n", b"\r.\r", b"xxxxxxxxxxxxxxxxxxxx", b"\r\n\r\n",
            ]), 0..40),
            line in 5usize..40,
            max in 10usize..400,
        ) {
            let input: Vec<u8> = parts.concat();
            proptest::prop_assert_eq!(run_with(&input, max, line), run_bytewise(&input, max, line));
        }
    }

    #[test]
    fn a_declared_size_is_the_first_allocation_and_the_buffer_never_regrows() {
        let mut r = DataReceiver::with_declared_size(10 << 20, 1000, Some(100_000));
        assert_eq!(
            r.buffered_bytes(),
            0,
            "nothing allocated before the first byte"
        );
        let seen = capacities(&mut r);
        assert!(seen.iter().all(|&c| c == seen[0]), "{seen:?}");
        assert!((100_000..100_000 + 4096).contains(&seen[0]), "{seen:?}");
        assert_eq!(r.feed(b".\r\n"), Progress::Done { consumed: 3 });
        assert_eq!(r.finish().unwrap().len(), 100_000);
        // Without SIZE the same body regrows (the control).
        let seen = capacities(&mut DataReceiver::new(10 << 20, 1000));
        assert!(seen.windows(2).any(|w| w[0] != w[1]), "{seen:?}");
    }

    #[test]
    fn a_declared_size_never_reserves_more_than_the_limits() {
        // Over the reservation cap: it starts at the cap and grows from there.
        let mut r = DataReceiver::with_declared_size(50 << 20, 1000, Some(40 << 20));
        r.feed(b"x");
        assert_eq!(r.buffered_bytes(), MAX_RESERVE_BYTES);
        // Over the message limit (and a lie): never more than the limit.
        let mut r = DataReceiver::with_declared_size(10_000, 1000, Some(u64::MAX));
        r.feed(b"x");
        assert_eq!(r.buffered_bytes(), 10_000);
        // SIZE=0 (or a small lie): the buffer grows as usual.
        let mut r = DataReceiver::with_declared_size(10 << 20, 1000, Some(0));
        let seen = capacities(&mut r);
        assert!(*seen.last().unwrap() >= 100_000);
    }

    #[test]
    fn the_buffer_grows_in_bounded_steps() {
        let mut b = BodyBuffer::default();
        let chunk = [b'x'; 64 * 1024];
        for _ in 0..64 {
            b.extend(&chunk);
            assert!(b.capacity() >= b.len());
            assert!(
                b.capacity() - b.len() <= MAX_GROWTH_BYTES.max(b.len()),
                "len {} capacity {}",
                b.len(),
                b.capacity()
            );
        }
        // 4 MiB given: a doubling Vec could hold up to 8 MiB here.
        assert_eq!(b.len(), 4 << 20);
        assert!(b.capacity() <= (4 << 20) + MAX_GROWTH_BYTES);
        assert_eq!(b.take().unwrap().bytes.len(), 4 << 20);
        assert_eq!((b.len(), b.capacity(), b.taken()), (0, 0, 4 << 20));
    }

    #[test]
    fn a_body_taken_in_pieces_is_the_whole_body() {
        let input = b"Subject: x\r\n\r\n..one\r\ntwo\r\n.\r\n";
        for split in 1..input.len() {
            let mut r = DataReceiver::new(1000, 1000);
            let mut body = Vec::new();
            let mut done = false;
            for piece in input.chunks(split) {
                done |= matches!(r.feed(piece), Progress::Done { .. });
                if !done && let Some(piece) = r.take_body() {
                    // Each piece says where it belongs.
                    assert_eq!(piece.offset, body.len() as u64);
                    body.extend(piece.bytes);
                    assert_eq!(r.buffered_bytes(), 0);
                }
            }
            assert!(done);
            assert_eq!(r.taken_bytes(), body.len() as u64);
            body.extend(r.finish().unwrap());
            assert_eq!(body, b"Subject: x\r\n\r\n.one\r\ntwo\r\n", "split {split}");
        }
    }

    #[test]
    fn sizes_count_what_was_taken_too() {
        let mut r = DataReceiver::new(10, 100);
        r.feed(b"123456\r\n");
        assert!(r.take_body().is_some());
        r.feed(b"789\r\n.\r\n");
        assert_eq!(r.take_body(), None);
        assert_eq!(r.finish(), Err(DataError::TooBig));
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let input = b"..a\r\n\r\nb.\r\n.\r\n";
        let mut r = DataReceiver::new(1000, 1000);
        let mut done = None;
        for (i, b) in input.iter().enumerate() {
            if let Progress::Done { consumed } = r.feed(&[*b]) {
                assert_eq!(consumed, 1);
                done = Some(i + 1);
            }
        }
        assert_eq!(done, Some(input.len()));
        assert_eq!(r.finish().unwrap(), b".a\r\n\r\nb.\r\n");
    }
}
