//! The values that cross from one stage of the inbound pipeline to the next.
//!
//! Owns: [`Envelope`] (protocol core → storage stage), [`QueueId`], [`Submission`] and
//! [`Completion`] (reactor ⇄ storage stage) and [`CompletionSink`], the way the
//! storage stage hands a commit result back to the reactor that owns the connection.
//! Must not: do I/O or hold policy (a [`SpooledBody`] names a spool file; reading
//! it, and deleting it when dropped, is the spool module's). These are plain data so every stage can be tested
//! on its own.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Sender;

use crate::spool::SpooledBody;

/// A completed SMTP transaction: what the client sent between MAIL and the end of DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse-path from MAIL FROM without the angle brackets; empty for the null
    /// sender `<>` (bounces).
    pub mail_from: String,
    /// Accepted forward-paths, in RCPT order, without angle brackets, duplicates
    /// removed. Never empty.
    pub rcpt_to: Vec<String>,
    /// The message content exactly as received after dot-unstuffing (RFC 5321
    /// §4.5.2): CRLF line endings kept, the terminating `.CRLF` line removed. When
    /// non-empty it ends with CRLF.
    ///
    /// When the reactor took the start of the body out while it arrived (to spool
    /// it: `Session::take_body_bytes`), `data` is only what followed, and
    /// `data_offset` says how many octets came before it.
    pub data: Vec<u8>,
    /// Octets of the body before `data` (taken out while it arrived); 0 when `data`
    /// is the whole body.
    pub data_offset: u64,
    /// The EHLO/HELO argument as the client gave it.
    pub helo: String,
    /// True when the client greeted with EHLO (Received: `with ESMTP`), false for HELO.
    pub esmtp: bool,
    /// MAIL FROM carried the SMTPUTF8 parameter (RFC 6531).
    pub smtputf8: bool,
    /// MAIL FROM carried BODY=8BITMIME (RFC 6152).
    pub body_8bit: bool,
    /// The client's address as this server sees it.
    pub peer: IpAddr,
    /// The transaction ran inside TLS.
    pub is_tls: bool,
}

/// The id under which a message is stored, returned in `250 2.0.0 OK queued as <id>`
/// and stored in `new_mail.hash`. 128 bits: 48 bits of Unix milliseconds then 80
/// random bits, so ids sort by time and never collide across nodes or restarts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub [u8; 16]);

impl fmt::Display for QueueId {
    /// 32 lowercase hex digits (the width of Guerrilla's `hash char(32)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Into a buffer, then one write: sixteen `{:02x}` writes were ≈ 5 k
        // instructions, and every message formats its id twice (the `hash` column
        // and the 250 reply).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 32];
        for (pair, b) in text.chunks_exact_mut(2).zip(self.0) {
            if let [hi, lo] = pair {
                *hi = HEX[usize::from(b >> 4)];
                *lo = HEX[usize::from(b & 0x0f)];
            }
        }
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

/// The store could not commit a message. The client gets `451 4.3.0` and retries;
/// nothing about the message is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFailed;

impl fmt::Display for StoreFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the message could not be committed to the store")
    }
}

impl std::error::Error for StoreFailed {}

/// Which connection a submission came from: the reactor's slab slot plus a
/// generation number, so a result that arrives after the connection closed and its
/// slot was reused is recognised and dropped. Opaque to the storage stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub slot: usize,
    pub generation: u64,
}

/// A complete message on its way from a reactor to the storage stage.
#[derive(Debug)]
pub struct Submission {
    pub envelope: Envelope,
    /// A body too large to hold in memory was spooled: then the whole body is in
    /// this file, `envelope.data` is empty and `envelope.data_offset` is the file's
    /// length. Without it, `envelope.data` is the whole body (`data_offset` 0).
    /// Dropping it deletes the file, so the stage keeps it until the message is
    /// answered.
    pub spool: Option<SpooledBody>,
    /// When the end of DATA was seen (the `Received:` date and the `date` column).
    pub received_at: SystemTime,
    pub conn: ConnKey,
    /// Where the result goes: the owning reactor.
    pub reply: Arc<CompletionSink>,
}

/// The outcome of one submission, sent back to the reactor that owns `conn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub conn: ConnKey,
    pub result: Result<QueueId, StoreFailed>,
}

/// A reactor's inbox for commit results: an unbounded channel (its size is bounded
/// by the reactor's own in-flight submissions) plus the waker of the reactor's poll.
pub struct CompletionSink {
    tx: Sender<Completion>,
    waker: mio::Waker,
}

impl fmt::Debug for CompletionSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionSink").finish_non_exhaustive()
    }
}

impl CompletionSink {
    pub fn new(tx: Sender<Completion>, waker: mio::Waker) -> Self {
        Self { tx, waker }
    }

    /// Wakes the reactor without a result (shutdown, for instance).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Hands results to the reactor and wakes it once. A reactor that has already
    /// exited (its receiver is gone) cannot answer anyone, so a failed send is
    /// ignored; the messages are committed either way.
    pub fn deliver(&self, completions: impl IntoIterator<Item = Completion>) {
        let mut any = false;
        for c in completions {
            any |= self.tx.send(c).is_ok();
        }
        if any {
            // A failed wake means the poll is gone: same reasoning as above.
            let _ = self.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::QueueId;

    #[test]
    fn a_queue_id_is_32_lowercase_hex_digits_of_its_bytes() {
        for seed in 0u8..=255 {
            let bytes: [u8; 16] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 17));
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(QueueId(bytes).to_string(), expected);
        }
        assert_eq!(QueueId([0xab; 16]).to_string(), "ab".repeat(16));
    }
}
