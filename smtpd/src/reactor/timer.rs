//! A coarse hashed timer wheel for connection timeouts.
//!
//! Owns: when each connection must next be looked at. Must not: know what a timeout
//! means (the event loop decides), or read the clock (callers pass `now`).
//!
//! SMTP timeouts are seconds to minutes and need no precision, so the wheel ticks
//! every [`TICK`] and every operation is O(1): a connection is entered at most once;
//! activity only moves the connection's own deadline (no wheel operation); when its
//! slot comes round, the event loop compares the deadline with `now` and either acts
//! or enters it again at the later deadline. This keeps the per-read cost of a busy
//! connection at one `Instant` store, which matters at tens of thousands of reads/s.

use std::time::{Duration, Instant};

/// Resolution of every timeout: deadlines fire up to one tick late.
pub const TICK: Duration = Duration::from_millis(100);
/// Slots in the wheel: 1,024 × 100 ms ≈ 102 s. Longer deadlines are entered at the
/// far end and simply re-entered when they come round (the lazy re-check above).
const SLOTS: usize = 1024;

pub struct TimerWheel<K> {
    slots: Vec<Vec<K>>,
    origin: Instant,
    /// Ticks since `origin` already processed: slots up to this one are empty.
    done_ticks: u64,
    len: usize,
    /// Spare vector swapped with a firing slot, so expiring does not allocate.
    spare: Vec<K>,
}

impl<K: Copy> TimerWheel<K> {
    pub fn new(now: Instant) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            origin: now,
            done_ticks: 0,
            len: 0,
            spare: Vec::new(),
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin);
        u64::try_from(since.as_millis().checked_div(TICK.as_millis()).unwrap_or(0))
            .unwrap_or(u64::MAX)
    }

    /// Enters `key` to be returned by [`expire`](Self::expire) once `deadline` has
    /// passed, or earlier (at the wheel's horizon) for far deadlines.
    pub fn schedule(&mut self, key: K, deadline: Instant) {
        let first = self.done_ticks.saturating_add(1);
        let last = self
            .done_ticks
            .saturating_add(SLOTS as u64)
            .saturating_sub(1);
        // Round up: never fire before the deadline's tick has fully started.
        let tick = self.tick_of(deadline).saturating_add(1).clamp(first, last);
        if let Some(slot) = self.slots.get_mut(slot_of(tick)) {
            slot.push(key);
            self.len = self.len.saturating_add(1);
        }
    }

    /// Moves every key whose slot has come round by `now` into `out`. The caller
    /// checks each key's real deadline and schedules it again if it moved.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<K>) {
        let target = self.tick_of(now);
        // At most one full turn: slots further back were all visited by then.
        let from = self.done_ticks.saturating_add(1);
        let to = target.min(self.done_ticks.saturating_add(SLOTS as u64));
        for tick in from..=to {
            let Some(slot) = self.slots.get_mut(slot_of(tick)) else {
                continue;
            };
            if slot.is_empty() {
                continue;
            }
            std::mem::swap(slot, &mut self.spare);
            self.len = self.len.saturating_sub(self.spare.len());
            out.append(&mut self.spare);
        }
        self.done_ticks = self.done_ticks.max(target);
    }

    /// Keys currently entered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The slot a tick falls in (always `< SLOTS`).
fn slot_of(tick: u64) -> usize {
    usize::try_from(tick.checked_rem(SLOTS as u64).unwrap_or(0)).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_deadline_not_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.schedule(7u32, t0 + Duration::from_millis(350));
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_millis(300), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_millis(550), &mut out);
        assert_eq!(out, vec![7]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadline_comes_back_at_the_horizon_for_recheck() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.schedule(1u32, t0 + Duration::from_secs(1000));
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(50), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_secs(103), &mut out);
        assert_eq!(
            out,
            vec![1],
            "returned at the horizon so the caller re-enters it"
        );
    }

    #[test]
    fn long_gap_between_expiries_loses_nothing() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        for i in 0..50u32 {
            w.schedule(i, t0 + Duration::from_millis(100 * u64::from(i)));
        }
        let mut out = Vec::new();
        // The loop stalled for far longer than a turn of the wheel.
        w.expire(t0 + Duration::from_secs(500), &mut out);
        out.sort_unstable();
        assert_eq!(out, (0..50).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn schedule_after_expire_is_relative_to_progress() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(200), &mut out);
        w.schedule(3u32, t0 + Duration::from_secs(201));
        w.expire(t0 + Duration::from_millis(200_500), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_millis(201_200), &mut out);
        assert_eq!(out, vec![3]);
    }
}
