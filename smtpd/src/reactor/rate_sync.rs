//! Shared connection-rate limits: several smtpd nodes enforce one per-IP rate
//! through Redis.
//!
//! Owns: a background thread that, every [`SYNC_INTERVAL`], adds this node's new
//! connections per IP to `<prefix>rate:<ip>:<unix minute>` (INCRBY + EXPIRE, one
//! pipeline) and hands back the totals, so each node counts the others' share.
//! Must not: sit on the accept path (the reactors never wait for Redis) or stop
//! mail when Redis is down (then each node enforces its local count only).
//!
//! The result is approximate by design: a node learns the others' counts within
//! one interval, so a client spreading a burst over several nodes can exceed the
//! limit by at most what it manages in that interval.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::limits::{ClientLimits, unix_minute};

pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Starts the sync thread. It runs for the life of the process.
pub fn spawn(limits: Arc<ClientLimits>, redis_url: String, prefix: String) -> std::io::Result<()> {
    let client = redis::Client::open(redis_url.as_str()).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("rate-sync".into())
        .spawn(move || {
            let mut conn: Option<redis::Connection> = None;
            loop {
                std::thread::sleep(SYNC_INTERVAL);
                let ours = limits.take_unsynced();
                if ours.is_empty() {
                    continue;
                }
                if conn.is_none() {
                    conn = client
                        .get_connection_with_timeout(Duration::from_secs(1))
                        .ok()
                        .inspect(|c| {
                            let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                            let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
                        });
                }
                let Some(c) = conn.as_mut() else {
                    debug!("rate sync: Redis unreachable; local limits only");
                    continue;
                };
                let minute = unix_minute();
                let mut pipe = redis::pipe();
                for (ip, n) in &ours {
                    let key = format!("{prefix}rate:{ip}:{minute}");
                    pipe.cmd("INCRBY").arg(&key).arg(*n);
                    pipe.cmd("EXPIRE").arg(&key).arg(120).ignore();
                }
                match pipe.query::<Vec<u32>>(c) {
                    Ok(totals) => {
                        for ((ip, _), total) in ours.iter().zip(totals) {
                            let local = limits.local_rate(*ip);
                            limits.set_shared(minute, *ip, total, local);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "rate sync: Redis write failed; local limits only");
                        conn = None;
                    }
                }
            }
        })?;
    Ok(())
}
