//! Shared connection-rate limits: several smtpd nodes enforce one per-IP rate
//! through Redis.
//!
//! Owns: a background thread that, every [`SYNC_INTERVAL`], adds this node's new
//! connections per IP to `<prefix>rate:<ip>:<unix minute>` (INCRBY + EXPIRE, one
//! pipeline, or one per key on a Redis Cluster) and hands back the totals, so each node counts the others' share.
//! Must not: sit on the accept path (the reactors never wait for Redis) or stop
//! mail when Redis is down (then each node enforces its local count only).
//!
//! The result is approximate by design: a node learns the others' counts within
//! one interval, so a client spreading a burst over several nodes can exceed the
//! limit by at most what it manages in that interval.

use std::sync::Arc;
use std::time::Duration;

use mailstore::{RedisConn, RedisTarget};
use tracing::{debug, warn};

use super::limits::{ClientLimits, unix_minute};

pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// A connect or a round trip longer than this counts as Redis down.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts the sync thread. It runs for the life of the process.
pub fn spawn(limits: Arc<ClientLimits>, redis_url: String, prefix: String) -> std::io::Result<()> {
    let target: RedisTarget = redis_url.parse().map_err(std::io::Error::other)?;
    // A runtime of its own: the cluster client is async only.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("rate-sync".into())
        .spawn(move || {
            let mut conn: Option<RedisConn> = None;
            loop {
                std::thread::sleep(SYNC_INTERVAL);
                let ours = limits.take_unsynced();
                if ours.is_empty() {
                    continue;
                }
                if conn.is_none() {
                    conn = rt.block_on(target.connect(OP_TIMEOUT)).ok();
                }
                let Some(c) = conn.as_mut() else {
                    debug!("rate sync: Redis unreachable; local limits only");
                    continue;
                };
                let minute = unix_minute();
                // One group per key: INCRBY and EXPIRE of one IP's counter (on a
                // cluster, different IPs live in different slots).
                let groups: Vec<redis::Pipeline> = ours
                    .iter()
                    .map(|(ip, n)| {
                        let key = format!("{prefix}rate:{ip}:{minute}");
                        let mut pipe = redis::pipe();
                        pipe.cmd("INCRBY").arg(&key).arg(*n);
                        pipe.cmd("EXPIRE").arg(&key).arg(120);
                        pipe
                    })
                    .collect();
                let replies = rt.block_on(async {
                    tokio::time::timeout(OP_TIMEOUT, c.run_groups(&groups))
                        .await
                        .unwrap_or_else(|_| {
                            Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
                        })
                });
                match replies {
                    Ok(values) => {
                        // Replies come in pairs: (INCRBY total, EXPIRE result).
                        let totals = values.chunks(2).map(|pair| {
                            pair.first()
                                .and_then(|v| redis::from_redis_value_ref::<u32>(v).ok())
                        });
                        for ((ip, _), total) in ours.iter().zip(totals) {
                            if let Some(total) = total {
                                let local = limits.local_rate(*ip);
                                limits.set_shared(minute, *ip, total, local);
                            }
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
