//! When to try a deferred recipient again, and when to give up.
//!
//! Owns: the backoff schedule (RFC 5321 §4.5.4.1: retry soon, then less often, give
//! up after days). Must not: know about databases or clocks beyond the values given.

use std::time::Duration;

use crate::config;

/// The schedule, from `[retry]` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub first: Duration,
    /// Each further wait is the previous one times this.
    pub multiplier: f64,
    /// No wait is longer than this.
    pub max_interval: Duration,
    /// A recipient still undelivered this long after it was queued fails for good.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // The defaults live with every other one, in `config`.
        Self {
            first: Duration::from_secs(config::DEFAULT_RETRY_FIRST_SECS),
            multiplier: config::DEFAULT_RETRY_MULTIPLIER,
            max_interval: Duration::from_secs(config::DEFAULT_RETRY_MAX_INTERVAL_SECS),
            give_up_after: Duration::from_secs(config::DEFAULT_RETRY_GIVE_UP_SECS),
        }
    }
}

/// What to do with a recipient after a temporary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryIn(Duration),
    /// The message is too old: fail it.
    GiveUp,
}

impl RetryPolicy {
    /// `attempts` counts the attempts made so far, including the one that just failed;
    /// `age` is the time since the message was queued.
    pub fn next(&self, attempts: u32, age: Duration) -> Next {
        if age >= self.give_up_after {
            return Next::GiveUp;
        }
        let exponent = attempts.saturating_sub(1).min(64);
        let factor = self.multiplier.max(1.0).powi(exponent as i32);
        let wait = self.first.as_secs_f64() * factor;
        let wait = if wait.is_finite() {
            Duration::from_secs_f64(wait.min(self.max_interval.as_secs_f64()))
        } else {
            self.max_interval
        };
        let wait = wait.min(self.max_interval);
        // Retrying after the deadline would only fail later than promised; one last
        // attempt at the deadline instead.
        let remaining = self.give_up_after.saturating_sub(age);
        Next::RetryIn(wait.min(remaining))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn default_schedule_grows_to_the_cap_and_gives_up_after_five_days() {
        let p = RetryPolicy::default();
        assert_eq!(p.next(1, MIN), Next::RetryIn(5 * MIN));
        assert_eq!(p.next(2, MIN), Next::RetryIn(10 * MIN));
        assert_eq!(p.next(3, MIN), Next::RetryIn(20 * MIN));
        assert_eq!(p.next(7, MIN), Next::RetryIn(240 * MIN));
        assert_eq!(p.next(1000, MIN), Next::RetryIn(240 * MIN));
        assert_eq!(p.next(3, 5 * 24 * 60 * MIN), Next::GiveUp);
        // Close to the deadline the wait shrinks to hit it, not to overshoot it.
        assert_eq!(
            p.next(9, 5 * 24 * 60 * MIN - 30 * MIN),
            Next::RetryIn(30 * MIN)
        );
    }

    #[test]
    fn odd_settings_stay_bounded() {
        let p = RetryPolicy {
            first: Duration::from_secs(1),
            multiplier: f64::INFINITY,
            max_interval: Duration::from_secs(10),
            give_up_after: Duration::from_secs(100),
        };
        assert_eq!(
            p.next(5, Duration::ZERO),
            Next::RetryIn(Duration::from_secs(10))
        );
        let p = RetryPolicy {
            multiplier: 0.1,
            ..p
        };
        assert_eq!(
            p.next(5, Duration::ZERO),
            Next::RetryIn(Duration::from_secs(1))
        );
    }
}
