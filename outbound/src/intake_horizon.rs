//! How far the bounce intake may move its `new_mail` cursor: the highest id below
//! which no row can still appear.
//!
//! Why: `mail_id` is allocated at INSERT and becomes visible at COMMIT. With one
//! writer (SQLite, one smtpd on MySQL with one committer) rows become visible in id
//! order, but with two smtpd nodes on one MariaDB, a Galera cluster (auto-increment
//! offsets), or two committers on one node, a batch holding lower ids can commit
//! after a batch holding higher ones. A cursor moved to the highest id read would
//! then step over the late rows for good: a bounce, unsubscribe or complaint in
//! them would never be acted on.
//!
//! The rule: an id X that ever commits does so within `settle` of its allocation
//! (smtpd's in-doubt COMMIT deadline plus a batch, ≈ 16 s; the default is 30 s), and
//! any id above X was allocated after X. So once this node has seen some id ≥ X
//! visible for at least `settle`, every row at or below X that will ever exist is
//! visible, and the intake may read up to X and move past it.
//!
//! Must: never report a horizon above what the rule allows (a skipped bounce is
//! lost for good; a late one costs only `settle` of delay); stay bounded in memory
//! however busy the inbox. Must not: touch the store or the clock (the caller
//! passes `now`, so this is tested without either).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Observations kept per `settle`: the horizon trails the truth by at most
/// `settle / GRANULARITY` beyond `settle` itself.
const GRANULARITY: u32 = 64;

/// A hard bound on what is kept, whatever the settle and call rate.
const MAX_SEEN: usize = 2 * GRANULARITY as usize + 2;

/// The intake's view of which `new_mail` ids have settled.
#[derive(Debug)]
pub struct IntakeHorizon {
    settle: Duration,
    /// (highest id visible, when this node first saw it), ids and times rising.
    /// The front is the newest observation old enough to have settled, if any is.
    seen: VecDeque<(i64, Instant)>,
}

impl IntakeHorizon {
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            seen: VecDeque::new(),
        }
    }

    /// Records that `max_id` is the highest id visible at `now`, and returns the
    /// highest id the intake may read up to and move its cursor to (None: nothing
    /// has settled yet). With a zero settle, that is `max_id` itself.
    pub fn observe(&mut self, max_id: i64, now: Instant) -> Option<i64> {
        let rising = self.seen.back().is_none_or(|&(id, _)| max_id > id);
        // Recording a higher id at an earlier time would be a lie; recording it at
        // most once per settle/GRANULARITY keeps the queue short. Skipped
        // observations only make the horizon later, never wrong.
        let spaced = self
            .seen
            .back()
            .is_none_or(|&(_, at)| now.saturating_duration_since(at) >= self.settle / GRANULARITY);
        if rising && spaced {
            if self.seen.len() >= MAX_SEEN {
                // Dropping an older, unsettled observation delays the horizon to
                // the next one: later, still right.
                self.seen.remove(1);
            }
            self.seen.push_back((max_id, now));
        }
        let settled = |at: Instant| now.saturating_duration_since(at) >= self.settle;
        while self.seen.len() >= 2 && self.seen.get(1).is_some_and(|&(_, at)| settled(at)) {
            self.seen.pop_front();
        }
        self.seen
            .front()
            .filter(|&&(_, at)| settled(at))
            .map(|&(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(30);

    #[test]
    fn with_no_settle_the_horizon_is_what_is_visible() {
        let mut h = IntakeHorizon::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(h.observe(10, t), Some(10));
        assert_eq!(h.observe(25, t), Some(25));
        // Rows deleted since (retention): the horizon never moves back.
        assert_eq!(h.observe(3, t), Some(25));
        assert_eq!(h.seen.len(), 1);
    }

    #[test]
    fn an_id_settles_only_once_something_at_or_above_it_was_seen_settle_ago() {
        let mut h = IntakeHorizon::new(SETTLE);
        let t = Instant::now();
        assert_eq!(h.observe(10, t), None);
        assert_eq!(h.observe(20, t + Duration::from_secs(10)), None);
        assert_eq!(h.observe(20, t + Duration::from_secs(29)), None);
        assert_eq!(h.observe(30, t + SETTLE), Some(10));
        // 20 was first seen at t+10: not settled until t+40, whatever is seen now.
        assert_eq!(h.observe(40, t + Duration::from_secs(39)), Some(10));
        assert_eq!(h.observe(40, t + Duration::from_secs(40)), Some(20));
        assert_eq!(h.observe(40, t + Duration::from_secs(60)), Some(30));
        assert_eq!(h.observe(40, t + Duration::from_secs(68)), Some(30));
        // 40 was first seen at t+39.
        assert_eq!(h.observe(40, t + Duration::from_secs(69)), Some(40));
    }

    #[test]
    fn a_busy_inbox_keeps_the_memory_bounded_and_the_horizon_never_early() {
        let mut h = IntakeHorizon::new(SETTLE);
        let t = Instant::now();
        let mut last = None;
        // One observation every millisecond for two minutes, a new id each time:
        // id i is first visible at t + i ms.
        for i in 0..120_000i64 {
            let now = t + Duration::from_millis(i as u64);
            let horizon = h.observe(i, now);
            assert!(h.seen.len() <= MAX_SEEN);
            if let Some(x) = horizon {
                // Never an id seen less than `settle` ago ...
                assert!(x <= i - 30_000, "at {i} ms: horizon {x}");
                // ... and never moving back.
                assert!(last.is_none_or(|l| x >= l));
            }
            last = horizon.or(last);
        }
        // ... and not far behind: within settle/GRANULARITY of the truth.
        let x = last.unwrap_or(0);
        assert!(x >= 120_000 - 30_000 - 30_000 / 64 - 2, "horizon {x}");
    }

    #[test]
    fn the_hard_bound_holds_when_a_settle_is_tiny_beside_the_call_rate() {
        // settle/GRANULARITY rounds to zero: every rising call records.
        let mut h = IntakeHorizon::new(Duration::from_nanos(10));
        let t = Instant::now();
        for i in 0..10_000i64 {
            h.observe(i, t);
            assert!(h.seen.len() <= MAX_SEEN);
        }
        assert_eq!(
            h.observe(10_000, t + Duration::from_nanos(10)),
            Some(10_000 - 1)
        );
    }
}
