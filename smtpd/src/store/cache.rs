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

use std::io::Write;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
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

/// Why a cache write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// Redis failed recently and the backoff has not elapsed: not tried.
    Down,
    /// The write was tried and failed (the connection is dropped and rebuilt).
    Failed(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down => f.write_str("Redis down, waiting before the next attempt"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

pub struct RedisCache {
    target: RedisTarget,
    conn: Option<RedisConn>,
    config: CacheConfig,
    down_until: Option<Instant>,
    backoff: Duration,
}

impl RedisCache {
    pub fn new(config: CacheConfig) -> Result<Self, StoreError> {
        let target = config.target().map_err(StoreError::Redis)?;
        Ok(Self {
            target,
            conn: None,
            config,
            down_until: None,
            backoff: BACKOFF_MIN,
        })
    }

    pub fn mode(&self) -> CacheMode {
        self.config.mode
    }

    /// Writes bodies (`bodies`) and/or inbox entries and notifications (`notify`)
    /// for the rows, in one pipeline.
    pub async fn write(
        &mut self,
        rows: &[&MailRow],
        bodies: bool,
        notify: bool,
    ) -> Result<(), CacheError> {
        let now = Instant::now();
        if self.down_until.is_some_and(|t| now < t) {
            return Err(CacheError::Down);
        }
        let result = self.try_write(rows, bodies, notify).await;
        match &result {
            Ok(()) => {
                if self.down_until.take().is_some() {
                    info!("Redis reachable again");
                }
                self.backoff = BACKOFF_MIN;
            }
            Err(e) => {
                // Drop the connection: the next attempt reconnects.
                self.conn = None;
                self.down_until = Some(now + self.backoff);
                warn!(error = %e, backoff_ms = self.backoff.as_millis() as u64, "Redis write failed");
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
        result.map_err(CacheError::Failed)
    }

    async fn try_write(
        &mut self,
        rows: &[&MailRow],
        bodies: bool,
        notify: bool,
    ) -> Result<(), String> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = self
                    .target
                    .connect(OP_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                self.conn.insert(c)
            }
        };
        let cfg = &self.config;
        let ttl = cfg.ttl_secs;
        // One group per key (a cluster refuses pipelines across hash slots; on one
        // server the groups go out as one pipeline).
        let mut groups = Vec::with_capacity(rows.len() * 3);
        for row in rows {
            if bodies {
                let key = format!("{}mail:{}", cfg.key_prefix, row.hash);
                let mut pipe = redis::pipe();
                match compress(&row.mail, cfg.compress_min_bytes) {
                    Some(gz) => pipe.cmd("SET").arg(key).arg(gz),
                    None => pipe.cmd("SET").arg(key).arg(&row.mail[..]),
                }
                .arg("EX")
                .arg(ttl);
                groups.push(pipe);
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
                    groups.push(pipe);
                    // PUBLISH has no key: a cluster sends it to any node, which
                    // broadcasts it to the subscribers of every node.
                    let mut pipe = redis::pipe();
                    pipe.cmd("PUBLISH")
                        .arg(format!("{}new:{recipient}", cfg.key_prefix))
                        .arg(&row.hash);
                    groups.push(pipe);
                }
            }
        }
        timeout(OP_TIMEOUT, conn.run_groups(&groups))
            .await
            .map_err(|_| "pipeline timed out".to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
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
