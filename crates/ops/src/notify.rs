//! The systemd notify protocol (`Type=notify`): READY=1, STOPPING=1, STATUS= lines
//! and the watchdog.
//!
//! Owns: what is said to the service manager and when the watchdog is fed. Every
//! call is a no-op without `NOTIFY_SOCKET` (not run by systemd). The watchdog pings
//! (`WATCHDOG=1`) only while every registered loop has shown a [`Heartbeat`] within
//! the interval systemd asked for (`WATCHDOG_USEC`): one wedged loop stops the
//! pings, and systemd restarts the service. Must not: ping from a thread that
//! only proves itself alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The origin of heartbeat times: the first use in this process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

fn send(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1 with a STATUS= line: listeners bound, store open.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1: the drain began.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A one-line summary shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// RELOADING=1 is not sent (it needs MONOTONIC_USEC and `Type=notify-reload`);
/// a reload reports its outcome as a STATUS= line instead.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// One loop's sign of life: the loop calls [`Heartbeat::beat`] on every turn (a
/// relaxed store; loops turn at least every second even when idle).
#[derive(Debug)]
pub struct Heartbeat {
    name: String,
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// [`Heartbeat::beat`] with a time the loop already read.
    pub fn beat_at(&self, now: Instant) {
        self.last_ms
            .store(millis_since_epoch(now), Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The loops the watchdog watches.
#[derive(Debug, Default, Clone)]
pub struct Watchdog {
    beats: Arc<Mutex<Vec<Arc<Heartbeat>>>>,
}

/// Whether to ping: every loop beat within `interval_ms` of `now_ms`. Returns the
/// name of the first stale loop otherwise. No loops registered: ping (nothing to
/// wait for).
pub fn stale<'a>(
    beats: impl IntoIterator<Item = (&'a str, u64)>,
    now_ms: u64,
    interval_ms: u64,
) -> Option<&'a str> {
    beats
        .into_iter()
        .find(|(_, last)| now_ms.saturating_sub(*last) > interval_ms)
        .map(|(name, _)| name)
}

/// The watchdog interval systemd asked for, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` (a positive number), and `WATCHDOG_PID`, when set, naming us.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

impl Watchdog {
    /// A new heartbeat for a loop called `name`, counted as fresh now.
    pub fn register(&self, name: impl Into<String>) -> Arc<Heartbeat> {
        let beat = Arc::new(Heartbeat {
            name: name.into(),
            last_ms: AtomicU64::new(millis_since_epoch(Instant::now())),
        });
        if let Ok(mut beats) = self.beats.lock() {
            beats.push(Arc::clone(&beat));
        }
        beat
    }

    /// A loop that ended on purpose (drain) is no longer waited for.
    pub fn unregister(&self, beat: &Arc<Heartbeat>) {
        if let Ok(mut beats) = self.beats.lock() {
            beats.retain(|b| !Arc::ptr_eq(b, beat));
        }
    }

    /// The name of a loop that has not beaten within `interval`, if any.
    pub fn stale_loop(&self, interval: Duration) -> Option<String> {
        let now = millis_since_epoch(Instant::now());
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let beats = self.beats.lock().ok()?;
        stale(
            beats
                .iter()
                .map(|b| (b.name.as_str(), b.last_ms.load(Ordering::Relaxed))),
            now,
            interval_ms,
        )
        .map(str::to_owned)
    }

    /// When systemd asked for a watchdog (`WATCHDOG_USEC`, and `WATCHDOG_PID` is
    /// ours or unset), starts the thread that pings at half the interval while no
    /// loop is stale. Returns None without a watchdog.
    pub fn start(&self) -> Option<JoinHandle<()>> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )?;
        let watchdog = self.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut reported = false;
                loop {
                    std::thread::sleep(interval / 2);
                    match watchdog.stale_loop(interval) {
                        None => {
                            reported = false;
                            send(&[NotifyState::Watchdog]);
                        }
                        Some(name) if !reported => {
                            reported = true;
                            tracing::error!(
                                event_loop = %name,
                                "a loop is stuck: watchdog pings stop, systemd will restart the service"
                            );
                        }
                        Some(_) => {}
                    }
                }
            })
            .ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_stale_loop_stops_the_pings() {
        let beats = [("reactor-0", 9_000), ("store-commit", 9_500)];
        assert_eq!(stale(beats, 10_000, 2_000), None);
        let beats = [("reactor-0", 9_000), ("store-commit", 7_000)];
        assert_eq!(stale(beats, 10_000, 2_000), Some("store-commit"));
        assert_eq!(stale([], 10_000, 2_000), None);
        // A beat "in the future" (read before `now` on another core) is fresh.
        assert_eq!(stale([("a", 10_001)], 10_000, 1), None);
    }

    #[test]
    fn watchdog_interval_reads_usec_and_checks_the_pid() {
        let s = Some(Duration::from_secs(3));
        assert_eq!(watchdog_interval(Some("3000000"), None, 7), s);
        assert_eq!(watchdog_interval(Some("3000000"), Some("7"), 7), s);
        assert_eq!(watchdog_interval(Some("3000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn registered_heartbeats_are_watched() {
        let w = Watchdog::default();
        let a = w.register("a");
        let b = w.register("b");
        assert_eq!(w.stale_loop(Duration::from_secs(60)), None);
        std::thread::sleep(Duration::from_millis(30));
        a.beat();
        assert_eq!(
            w.stale_loop(Duration::from_millis(20)).as_deref(),
            Some("b")
        );
        w.unregister(&b);
        assert_eq!(w.stale_loop(Duration::from_millis(20)), None);
        assert_eq!(a.name(), "a");
    }
}
