//! Queue ids: unique, time-ordered, made without coordination.
//!
//! Owns: [`new_queue_id`]. 48 bits of Unix milliseconds, big-endian, then 80 random
//! bits: ids sort by arrival time (useful in logs and indexes), and several smtpd
//! nodes writing to one database never collide (the chance of two ids in the same
//! millisecond colliding is about n²/2⁸¹).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::handoff::QueueId;

/// Mixed into the fallback when the OS random source fails.
static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Random bytes of one id.
const RANDOM_BYTES: usize = 10;
/// Ids' worth of OS random bytes fetched at once: one `getrandom` call per this
/// many ids instead of one per message (the bytes are used once each, never reused).
const IDS_PER_FILL: usize = 256;

thread_local! {
    /// OS random bytes not used yet, and where the unused ones start.
    static POOL: RefCell<([u8; RANDOM_BYTES * IDS_PER_FILL], usize)> =
        const { RefCell::new(([0; RANDOM_BYTES * IDS_PER_FILL], RANDOM_BYTES * IDS_PER_FILL)) };
}

/// Fills `out` from this thread's pool of OS random bytes, refilling it when empty.
fn random_bytes(out: &mut [u8; RANDOM_BYTES]) -> Result<(), getrandom::Error> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, next) = &mut *pool;
        if *next + RANDOM_BYTES > bytes.len() {
            getrandom::fill(bytes)?;
            *next = 0;
        }
        out.copy_from_slice(&bytes[*next..*next + RANDOM_BYTES]);
        // Used bytes are wiped: nothing later can hand them out again.
        bytes[*next..*next + RANDOM_BYTES].fill(0);
        *next += RANDOM_BYTES;
        Ok(())
    })
}

pub fn new_queue_id(now: SystemTime) -> QueueId {
    let millis = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut id = [0u8; 16];
    let time = millis.to_be_bytes();
    id[..6].copy_from_slice(&time[2..]);
    let mut random = [0u8; RANDOM_BYTES];
    if random_bytes(&mut random).is_ok() {
        id[6..].copy_from_slice(&random);
    } else {
        // getrandom does not fail on Linux after boot; if it ever did, uniqueness
        // within this process still holds (counter), and across nodes the pid and
        // the nanoseconds make collisions unlikely. Never a reason to refuse mail.
        let count = FALLBACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        id[6..10].copy_from_slice(&std::process::id().to_be_bytes());
        id[10..12].copy_from_slice(&(nanos as u16).to_be_bytes());
        id[12..16].copy_from_slice(&(count as u32).to_be_bytes());
    }
    QueueId(id)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[test]
    fn ids_are_unique_and_sort_by_time() {
        let t0 = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let ids: Vec<QueueId> = (0..10_000u64)
            .map(|i| new_queue_id(t0 + Duration::from_millis(i / 10)))
            .collect();
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for pair in ids.windows(2) {
            // Same millisecond: random order; later millisecond: larger id.
            if pair[0].0[..6] != pair[1].0[..6] {
                assert!(pair[0] < pair[1]);
            }
        }
        assert_eq!(&ids[0].0[..6], &1_800_000_000_000u64.to_be_bytes()[2..]);
        assert_eq!(ids[0].to_string().len(), 32);
    }
}
