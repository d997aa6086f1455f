//! The Redis cache: recent messages, per-recipient inboxes, new-mail notifications.
//!
//! Owns: the Redis keys and channels (documented in `schema/README.md`), written in
//! one pipeline per batch on the committer's tokio runtime, compression of large
//! bodies, and reconnecting with backoff. Must not: be the only copy of a message
//! unless the operator chose Guerrilla mode, where the body write is part of the
//! commit (no `250` before it succeeds).
//!
//! Keys (prefix `smtpd:` by default):
//! - `<prefix>mail:<hash>`: the message as in `new_mail.mail` (gzip when that saves
//!   at least 10% on messages of `compress_min_bytes` or more: the value then
//!   starts with the gzip magic `1f 8b`, which no RFC 5322 message starts with),
//!   expiring after `ttl_secs`;
//! - `<prefix>inbox:<recipient>`: list of hashes, newest first, at most
//!   `inbox_max`, expiring `ttl_secs` after the last arrival;
//! - channel `<prefix>new:<recipient>`: the hash of each new message.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use mailstore::redis_target::{ProbeError, SlotOwners};
use mailstore::{RedisConn, RedisTarget};
use tokio::time::timeout;
use tracing::{info, warn};

use super::StoreError;
use super::row::MailRow;

/// A Redis round trip longer than this is a failure (cache mode: logged and
/// counted; Guerrilla mode: 451).
const OP_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where message bodies live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The database holds everything; Redis is a cache written after the commit,
    /// and a Redis outage costs cache misses, never mail.
    Cache,
    /// Guerrilla SMTPd's mode: bodies only in Redis (with the TTL), the database row
    /// holds metadata with `body = 'redis'`. Redis is then part of the commit.
    Guerrilla,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `redis://host:port[/db]`, `rediss://…[?ssl-ca=PATH]` or
    /// `redis+cluster://h1:p1,h2:p2` (see [`RedisTarget`]), validated.
    pub url: String,
    pub mode: CacheMode,
    pub ttl_secs: u64,
    pub inbox_max: usize,
    pub key_prefix: String,
    /// 0 = never compress.
    pub compress_min_bytes: usize,
}

impl CacheConfig {
    /// The URL without its password, for logs.
    pub fn display_url(&self) -> String {
        mailstore::redis_target::redact(&self.url)
    }

    /// Checks that `url` is a Redis URL (used by config validation).
    pub fn check_url(url: &str) -> Result<(), String> {
        Self::target_of(url).map(|_| ())
    }

    /// Where the cache is: one server or a cluster.
    pub fn target(&self) -> Result<RedisTarget, String> {
        Self::target_of(&self.url)
    }

    fn target_of(url: &str) -> Result<RedisTarget, String> {
        url.parse::<RedisTarget>().map_err(|e| e.to_string())
    }
}

/// `redis.url` cannot work: a configuration error found at start (see
/// [`RedisTarget::probe`] for which errors are configuration errors).
#[derive(Debug, thiserror::Error)]
#[error("redis.url: {0}")]
pub struct Misconfigured(pub ProbeError);

impl CacheConfig {
    /// Connects to Redis once at start, in every mode. A configuration error
    /// (certificate, password, wrong kind of server) fails the start; Redis merely
    /// down is logged and the start goes on (cache mode: misses until it is back;
    /// Guerrilla mode: 451 until it is back), the committer reconnecting with
    /// backoff.
    pub fn check_at_start(&self) -> Result<(), Misconfigured> {
        let target = match self.target() {
            Ok(t) => t,
            // Config validation parsed it already; say so if it changed.
            Err(reason) => {
                return Err(Misconfigured(ProbeError::Misconfigured {
                    node: self.display_url(),
                    reason,
                }));
            }
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "cannot check Redis at start");
                return Ok(());
            }
        };
        match rt.block_on(target.probe(OP_TIMEOUT)) {
            Ok(()) => Ok(()),
            Err(e @ ProbeError::Unreachable { .. }) => {
                warn!(error = %e, mode = ?self.mode, "Redis unreachable at start; starting anyway, reconnecting with backoff");
                Ok(())
            }
            Err(e) => Err(Misconfigured(e)),
        }
    }
}

/// Why a cache write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// Redis failed recently and the backoff has not elapsed: not tried.
    Down,
    /// The write was tried and failed (the connection is dropped and rebuilt).
    Failed(String),
    /// A cluster with a master (or more) down: the writes to the live masters were
    /// done, `missed` of `of` groups (one key each) were not (failed, or skipped
    /// while their master backs off).
    Partial {
        missed: usize,
        of: usize,
        error: String,
    },
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down => f.write_str("Redis down, waiting before the next attempt"),
            Self::Failed(e) => f.write_str(e),
            Self::Partial { missed, of, error } => {
                write!(
                    f,
                    "{missed} of {of} cache writes not done (a master is down): {error}"
                )
            }
        }
    }
}

/// When the next attempt may be made after failures (doubling, capped).
#[derive(Debug)]
struct Backoff {
    down_until: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            down_until: None,
            delay: BACKOFF_MIN,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    /// Records a failure at `now`; returns the wait before the next attempt.
    fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.delay;
        self.down_until = Some(now + wait);
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
        wait
    }

    /// Records a success; true when it had been failing.
    fn succeeded(&mut self) -> bool {
        self.delay = BACKOFF_MIN;
        self.down_until.take().is_some()
    }
}

/// A cluster's masters and their own backoffs: one dead master must not stop the
/// writes to the others.
#[derive(Debug, Default)]
struct Masters {
    /// Which master serves each slot; `None` until read.
    owners: Option<SlotOwners>,
    /// Read the map again before the next write (a master failed: a failover may
    /// have moved its slots). The old map stays in use if that read fails.
    stale: bool,
    backoff: HashMap<String, Backoff>,
}

/// One group of commands and the key that routes it (its node on a cluster).
struct Group {
    /// The key (`None`: `PUBLISH`, which any node takes: it is neither skipped nor
    /// counted for a master's health, the client sends it to a live node when the
    /// channel's master is gone).
    route: Option<String>,
    pipe: redis::Pipeline,
}

pub struct RedisCache {
    target: RedisTarget,
    conn: Option<RedisConn>,
    config: CacheConfig,
    /// One server: its backoff. A cluster: the backoff of the whole connection
    /// (every master failed, or no connection).
    backoff: Backoff,
    /// A cluster: per master (empty on one server).
    masters: Masters,
}

impl RedisCache {
    pub fn new(config: CacheConfig) -> Result<Self, StoreError> {
        let target = config.target().map_err(StoreError::Redis)?;
        Ok(Self {
            target,
            conn: None,
            config,
            backoff: Backoff::new(),
            masters: Masters::default(),
        })
    }

    pub fn mode(&self) -> CacheMode {
        self.config.mode
    }

    /// Writes bodies (`bodies`) and/or inbox entries and notifications (`notify`)
    /// for the rows: one pipeline on one server; on a cluster one pipeline per key,
    /// skipping the masters that back off.
    pub async fn write(
        &mut self,
        rows: &[&MailRow],
        bodies: bool,
        notify: bool,
    ) -> Result<(), CacheError> {
        let now = Instant::now();
        if !self.backoff.ready(now) {
            return Err(CacheError::Down);
        }
        let groups = self.groups(rows, bodies, notify);
        let result = self.try_write(groups, now).await;
        match &result {
            Ok(()) | Err(CacheError::Partial { .. }) => {
                if self.backoff.succeeded() {
                    info!("Redis reachable again");
                }
            }
            Err(e) => {
                // Drop the connection: the next attempt reconnects.
                self.conn = None;
                self.masters.owners = None;
                let wait = self.backoff.failed(now);
                warn!(error = %e, backoff_ms = wait.as_millis() as u64, "Redis write failed");
            }
        }
        result
    }

    async fn try_write(&mut self, groups: Vec<Group>, now: Instant) -> Result<(), CacheError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = self
                    .target
                    .connect(OP_TIMEOUT)
                    .await
                    .map_err(|e| CacheError::Failed(e.to_string()))?;
                self.conn.insert(c)
            }
        };
        if !self.target.is_cluster() {
            let pipes: Vec<redis::Pipeline> = groups.into_iter().map(|g| g.pipe).collect();
            return timeout(OP_TIMEOUT, conn.run_groups(&pipes))
                .await
                .map_err(|_| CacheError::Failed("pipeline timed out".into()))?
                .map(|_| ())
                .map_err(|e| CacheError::Failed(e.to_string()));
        }
        let masters = &mut self.masters;
        if masters.owners.is_none() || masters.stale {
            // Without a map every group is tried (no per-master backoff yet).
            if let Ok(Ok(owners)) = timeout(OP_TIMEOUT, conn.slot_owners()).await {
                masters.owners = Some(owners);
                masters.stale = false;
            }
        }
        let of = groups.len();
        // Each group with its master; those whose master backs off are skipped.
        let mut skipped = 0;
        let mut tried: Vec<(Option<String>, redis::Pipeline)> = Vec::with_capacity(of);
        for group in groups {
            let node = group
                .route
                .as_ref()
                .zip(masters.owners.as_ref())
                .and_then(|(key, o)| o.owner(key.as_bytes()))
                .map(str::to_owned);
            let ready = node
                .as_ref()
                .and_then(|n| masters.backoff.get(n))
                .is_none_or(|b| b.ready(now));
            if ready {
                tried.push((node, group.pipe));
            } else {
                skipped += 1;
            }
        }
        if tried.is_empty() {
            // Every key's master backs off (the connection itself is fine).
            return Err(CacheError::Partial {
                missed: of,
                of,
                error: "master backing off".into(),
            });
        }
        let pipes: Vec<redis::Pipeline> = tried.iter().map(|(_, p)| p.clone()).collect();
        // Each group on its own clock: a master that does not answer fails its
        // own keys, not the batch.
        let results = conn.run_each(&pipes, OP_TIMEOUT).await;
        let mut failed = 0;
        let mut first_error = None;
        let mut down_nodes = Vec::new();
        for ((node, _), result) in tried.iter().zip(results) {
            match result {
                Ok(_) => {
                    if let Some(n) = node
                        && masters.backoff.get_mut(n).is_some_and(Backoff::succeeded)
                    {
                        info!(node = %n, "Redis Cluster master reachable again");
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                    if let Some(n) = node
                        && !down_nodes.contains(n)
                    {
                        down_nodes.push(n.clone());
                    }
                }
            }
        }
        let error = first_error.unwrap_or_else(|| "master backing off".into());
        let all_masters = masters.owners.as_ref().map_or(0, SlotOwners::masters);
        if failed == tried.len() && (down_nodes.is_empty() || down_nodes.len() >= all_masters) {
            // Every master (or a connection without a slot map) failed: the whole
            // cache backs off, as for one server.
            return Err(CacheError::Failed(error));
        }
        for node in down_nodes {
            let wait = masters
                .backoff
                .entry(node.clone())
                .or_insert_with(Backoff::new)
                .failed(now);
            warn!(node = %node, error = %error, backoff_ms = wait.as_millis() as u64, "Redis Cluster master failed; its keys are skipped while it backs off");
            masters.stale = true;
        }
        match failed + skipped {
            0 => Ok(()),
            missed => Err(CacheError::Partial { missed, of, error }),
        }
    }

    /// The commands for the rows, one group per key (a cluster refuses pipelines
    /// across hash slots; on one server the groups go out as one pipeline).
    fn groups(&self, rows: &[&MailRow], bodies: bool, notify: bool) -> Vec<Group> {
        let cfg = &self.config;
        let ttl = cfg.ttl_secs;
        let mut groups = Vec::with_capacity(rows.len() * 3);
        for row in rows {
            if bodies {
                let key = format!("{}mail:{}", cfg.key_prefix, row.hash);
                let mut pipe = redis::pipe();
                match compress(&row.mail, cfg.compress_min_bytes) {
                    Some(gz) => pipe.cmd("SET").arg(&key).arg(gz),
                    None => pipe.cmd("SET").arg(&key).arg(&row.mail[..]),
                }
                .arg("EX")
                .arg(ttl);
                groups.push(Group {
                    route: Some(key),
                    pipe,
                });
            }
            if notify {
                for recipient in &row.recipients {
                    let inbox = format!("{}inbox:{recipient}", cfg.key_prefix);
                    let mut pipe = redis::pipe();
                    pipe.cmd("LPUSH").arg(&inbox).arg(&row.hash);
                    pipe.cmd("LTRIM")
                        .arg(&inbox)
                        .arg(0)
                        .arg(cfg.inbox_max.saturating_sub(1));
                    pipe.cmd("EXPIRE").arg(&inbox).arg(ttl);
                    groups.push(Group {
                        route: Some(inbox),
                        pipe,
                    });
                    // PUBLISH has no key: a cluster client sends it to the master of
                    // the channel name's slot (or, that one gone, to another node),
                    // which broadcasts it to the subscribers of every node.
                    let mut pipe = redis::pipe();
                    pipe.cmd("PUBLISH")
                        .arg(format!("{}new:{recipient}", cfg.key_prefix))
                        .arg(&row.hash);
                    groups.push(Group { route: None, pipe });
                }
            }
        }
        groups
    }
}

/// gzip (fast level) when the message is large enough and it saves ≥ 10%.
fn compress(data: &[u8], min_bytes: usize) -> Option<Vec<u8>> {
    if min_bytes == 0 || data.len() < min_bytes {
        return None;
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::fast());
    encoder.write_all(data).ok()?;
    let gz = encoder.finish().ok()?;
    (gz.len() < data.len() - data.len() / 10).then_some(gz)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn compression_only_when_large_and_worth_it() {
        let text = b"Subject: hello\r\n\r\n".repeat(500);
        assert!(compress(&text, 0).is_none());
        assert!(compress(&text, text.len() + 1).is_none());
        let gz = compress(&text, 4096).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, text);
        // Incompressible data is stored as is.
        let mut noise = vec![0u8; 8192];
        getrandom::fill(&mut noise).unwrap();
        assert!(compress(&noise, 4096).is_none());
    }

    #[test]
    fn urls_are_checked() {
        assert!(CacheConfig::check_url("redis://127.0.0.1:6379/2").is_ok());
        assert!(CacheConfig::check_url("http://x").is_err());
        assert!(CacheConfig::check_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").is_ok());
    }
}
