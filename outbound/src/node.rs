//! Who this relay process is, and whether it may run under its node id.
//!
//! Owns: the random instance id each process gets at start (beside the node id,
//! which defaults to the host name and so is often shared by accident or by a
//! restart), and the rule that tells a live process holding the node id from a
//! predecessor that died a moment ago, judged from the node's row in
//! `outbound_nodes`:
//!
//! - no row, a row stopped cleanly (`stopped_at`), or a heartbeat older than three
//!   of that process's intervals (what `outbound nodes` calls dead): the node id is
//!   free at once;
//! - a recent heartbeat from another process that did not stop: it may be alive,
//!   or it may have been killed a moment ago (SIGKILL, then systemd's
//!   `Restart=on-failure`). A heartbeat alone cannot say which, and neither can a
//!   pid (another host, a container's pid 1, a reused pid), so the new process
//!   watches the row for two of that process's heartbeat intervals plus a second:
//!   a live process beats in that time (its loop renews every interval); if the row
//!   does not change, it is dead and its leases are taken back at once — long
//!   before they would expire. If it changes, the new process refuses to start.
//!
//! Clocks are assumed in step to well within three heartbeat intervals, as lease
//! expiry already assumes. Must not: do I/O (the dispatcher reads and writes the row).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::queue::Node;

/// Heartbeats a live process may miss before it counts as dead (as `outbound nodes`
/// shows it).
pub const MISSED_HEARTBEATS: i64 = 3;

/// A new process's instance id: 64 random bits in hex.
pub fn new_instance_id() -> String {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: the pid and the clock still tell processes apart.
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        buf = (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the node row found at start says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nobody runs under the node id: take it now.
    Free,
    /// A recent heartbeat from another process: watch the row this long.
    Watch(Duration),
}

/// Judges the node row `seen` (from another process) at `now`.
pub fn judge(seen: &Node, now: DateTime<Utc>) -> Verdict {
    if seen.stopped_at.is_some() {
        return Verdict::Free;
    }
    let interval_ms = seen.heartbeat_secs.clamp(1, 3_600).saturating_mul(1_000);
    let Some(beat) = seen.heartbeat_at else {
        return Verdict::Free;
    };
    // A heartbeat "in the future" (its clock ahead of ours) is recent.
    let age_ms = (now - beat).num_milliseconds();
    if age_ms > interval_ms.saturating_mul(MISSED_HEARTBEATS) {
        return Verdict::Free;
    }
    let watch_ms = interval_ms.saturating_mul(2).saturating_add(1_000);
    Verdict::Watch(Duration::from_millis(u64::try_from(watch_ms).unwrap_or(0)))
}

/// How the row looks after watching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Unchanged: no sign of life (yet).
    Same,
    /// Stopped cleanly or deleted meanwhile: judge again.
    Released,
    /// It beat again, or another process took it: somebody is alive.
    Alive,
}

pub fn change(before: &Node, now: Option<&Node>) -> Change {
    match now {
        None => Change::Released,
        Some(n) if n.stopped_at.is_some() => Change::Released,
        Some(n)
            if n.instance_id == before.instance_id && n.heartbeat_text == before.heartbeat_text =>
        {
            Change::Same
        }
        Some(_) => Change::Alive,
    }
}

/// Why the relay does not run under its node id (a configuration error: every
/// process needs its own node id).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "node id `{node}` is in use by a running relay (pid {pid} on {host}, last heartbeat {age}); \
         give each relay process its own --node-id (relay.node_id)"
    )]
    InUse {
        node: String,
        pid: i64,
        host: String,
        age: String,
    },
    #[error(
        "node id `{node}` was taken over by another relay process (pid {pid} on {host}) while this \
         one ran; give each relay process its own --node-id (relay.node_id)"
    )]
    TakenOver {
        node: String,
        pid: i64,
        host: String,
    },
}

impl NodeError {
    pub fn in_use(node: &Node, now: DateTime<Utc>) -> Self {
        Self::InUse {
            node: node.node_id.clone(),
            pid: node.pid,
            host: node.hostname.clone(),
            age: node.heartbeat_at.map_or_else(
                || "unknown".to_owned(),
                |h| format!("{:.1}s ago", (now - h).num_milliseconds() as f64 / 1000.0),
            ),
        }
    }

    pub fn taken_over(node: &Node) -> Self {
        Self::TakenOver {
            node: node.node_id.clone(),
            pid: node.pid,
            host: node.hostname.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn row(instance: &str, beat: Option<DateTime<Utc>>, stopped: bool) -> Node {
        Node {
            node_id: "n".into(),
            instance_id: instance.into(),
            hostname: "h".into(),
            pid: 1,
            threads: 1,
            heartbeat_secs: 5,
            started_at: String::new(),
            heartbeat_at: beat,
            heartbeat_text: beat.map(crate::queue::ts).unwrap_or_default(),
            stopped_at: stopped.then(Utc::now),
        }
    }

    #[test]
    fn instance_ids_are_random_hex() {
        let (a, b) = (new_instance_id(), new_instance_id());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_a_recent_heartbeat_of_a_running_process_is_watched() {
        let now = Utc::now();
        let secs = chrono::Duration::seconds;
        assert_eq!(judge(&row("a", Some(now), true), now), Verdict::Free);
        assert_eq!(judge(&row("a", None, false), now), Verdict::Free);
        assert_eq!(
            judge(&row("a", Some(now - secs(16)), false), now),
            Verdict::Free
        );
        let watch = Verdict::Watch(Duration::from_secs(11));
        assert_eq!(judge(&row("a", Some(now - secs(14)), false), now), watch);
        assert_eq!(judge(&row("a", Some(now), false), now), watch);
        // Its clock ahead of ours.
        assert_eq!(judge(&row("a", Some(now + secs(30)), false), now), watch);
    }

    #[test]
    fn a_new_heartbeat_or_instance_is_a_sign_of_life() {
        let t = Utc::now();
        let before = row("a", Some(t), false);
        assert_eq!(change(&before, Some(&before.clone())), Change::Same);
        let later = chrono::Duration::seconds(5);
        assert_eq!(
            change(&before, Some(&row("a", Some(t + later), false))),
            Change::Alive
        );
        assert_eq!(
            change(&before, Some(&row("b", Some(t), false))),
            Change::Alive
        );
        assert_eq!(
            change(&before, Some(&row("a", Some(t), true))),
            Change::Released
        );
        assert_eq!(change(&before, None), Change::Released);
    }
}
