//! Retention: temporary mail expires.
//!
//! Owns: a background thread with its own database connection that deletes rows
//! older than `max_age` and, optionally, the oldest rows while the total stored size
//! is over `max_total_bytes`, in batches of `batch_rows` with a pause between them,
//! so the write lock is held only briefly and ingestion is not stalled.
//! Must not: share the committer's connection (SQLite has one writer at a time; the
//! busy timeout lets both take turns), or delete anything younger than asked.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mysql_async::prelude::Queryable;
use tracing::{debug, info, warn};

use super::StoreError;
use super::sqlite::SqliteStore;
use mailstore::{MysqlUrl, StoreUrl};

/// Pause between two delete batches: lets the committer take the write lock.
const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// At most this many batches per run, so one run cannot go on for ever.
const MAX_BATCHES_PER_RUN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Delete mail older than this (`None`: keep for ever).
    pub max_age: Option<Duration>,
    /// Delete the oldest mail while the sum of `size` is over this (`None`: no limit).
    pub max_total_bytes: Option<u64>,
    /// Time between two runs.
    pub interval: Duration,
    /// Rows per DELETE.
    pub batch_rows: usize,
}

impl RetentionConfig {
    pub fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_total_bytes.is_some()
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: None,
            max_total_bytes: None,
            interval: Duration::from_secs(60),
            batch_rows: 1000,
        }
    }
}

/// The running purge thread.
pub struct Retention {
    stop: Sender<()>,
    thread: JoinHandle<()>,
    deleted: Arc<AtomicU64>,
}

impl Retention {
    pub fn start(url: &StoreUrl, config: RetentionConfig) -> Result<Option<Self>, StoreError> {
        if !config.enabled() {
            return Ok(None);
        }
        let target = match url {
            StoreUrl::Sqlite(path) => Target::Sqlite(path.clone()),
            StoreUrl::Mysql(url) => Target::Mysql(url.clone()),
        };
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let deleted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&deleted);
        let thread = std::thread::Builder::new()
            .name("store-retention".into())
            .spawn(move || run(target, config, stopped, counter))
            .map_err(StoreError::Spawn)?;
        Ok(Some(Self {
            stop,
            thread,
            deleted,
        }))
    }

    /// The shared count of deleted rows (read by the metrics at scrape).
    pub fn deleted_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.deleted)
    }

    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

enum Target {
    Sqlite(PathBuf),
    Mysql(MysqlUrl),
}

fn run(target: Target, config: RetentionConfig, stopped: Receiver<()>, deleted: Arc<AtomicU64>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(error = %e, "retention disabled: no runtime");
            return;
        }
    };
    let pool = match &target {
        Target::Mysql(url) => match url.opts() {
            Ok(opts) => Some(mysql_async::Pool::new(opts)),
            Err(e) => {
                warn!(error = %e, "retention disabled: bad MySQL URL");
                return;
            }
        },
        Target::Sqlite(_) => None,
    };
    // Runs every interval until told to stop (or the stage is gone).
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(config.interval) {
        let result = match (&target, &pool) {
            (Target::Sqlite(path), _) => purge_sqlite(path, &config, &stopped),
            (Target::Mysql(_), Some(pool)) => rt.block_on(purge_mysql(pool, &config)),
            (Target::Mysql(_), None) => Ok(0),
        };
        match result {
            Ok(0) => debug!("retention: nothing to delete"),
            Ok(n) => {
                deleted.fetch_add(n, Ordering::Relaxed);
                info!(rows = n, "retention: deleted old mail");
            }
            Err(e) => warn!(error = %e, "retention run failed; next run retries"),
        }
    }
    if let Some(pool) = pool {
        let _ = rt.block_on(pool.disconnect());
    }
}

fn cutoff(max_age: Duration) -> String {
    let at: DateTime<Utc> = SystemTime::now()
        .checked_sub(max_age)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .into();
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn purge_sqlite(
    path: &std::path::Path,
    config: &RetentionConfig,
    stopped: &Receiver<()>,
) -> Result<u64, String> {
    let conn = SqliteStore::open_side_connection(path).map_err(|e| e.to_string())?;
    let batch = i64::try_from(config.batch_rows).unwrap_or(1000);
    let mut total = 0u64;
    if let Some(age) = config.max_age {
        let cutoff = cutoff(age);
        for _ in 0..MAX_BATCHES_PER_RUN {
            let n = conn
                .execute(
                    "DELETE FROM new_mail WHERE mail_id IN \
                     (SELECT mail_id FROM new_mail WHERE date < ?1 ORDER BY date LIMIT ?2)",
                    rusqlite::params![cutoff, batch],
                )
                .map_err(|e| e.to_string())?;
            total += n as u64;
            if (n as i64) < batch || !stopped.is_empty() {
                break;
            }
            std::thread::sleep(BATCH_PAUSE);
        }
    }
    if let Some(limit) = config.max_total_bytes {
        for _ in 0..MAX_BATCHES_PER_RUN {
            let size: i64 = conn
                .query_row("SELECT COALESCE(SUM(size), 0) FROM new_mail", [], |r| {
                    r.get(0)
                })
                .map_err(|e| e.to_string())?;
            if u64::try_from(size).unwrap_or(0) <= limit || !stopped.is_empty() {
                break;
            }
            let n = conn
                .execute(
                    "DELETE FROM new_mail WHERE mail_id IN \
                     (SELECT mail_id FROM new_mail ORDER BY date, mail_id LIMIT ?1)",
                    [batch],
                )
                .map_err(|e| e.to_string())?;
            total += n as u64;
            if n == 0 {
                break;
            }
            std::thread::sleep(BATCH_PAUSE);
        }
    }
    Ok(total)
}

async fn purge_mysql(pool: &mysql_async::Pool, config: &RetentionConfig) -> Result<u64, String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(10), pool.get_conn())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let batch = config.batch_rows as u64;
    let mut total = 0u64;
    if let Some(age) = config.max_age {
        let cutoff = cutoff(age);
        for _ in 0..MAX_BATCHES_PER_RUN {
            conn.exec_drop(
                "DELETE FROM new_mail WHERE date < ? ORDER BY date LIMIT ?",
                (cutoff.as_str(), batch),
            )
            .await
            .map_err(|e| e.to_string())?;
            let n = conn.affected_rows();
            total += n;
            if n < batch {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    if let Some(limit) = config.max_total_bytes {
        for _ in 0..MAX_BATCHES_PER_RUN {
            let size: Option<u64> = conn
                .query_first("SELECT CAST(COALESCE(SUM(size), 0) AS UNSIGNED) FROM new_mail")
                .await
                .map_err(|e| e.to_string())?;
            if size.unwrap_or(0) <= limit {
                break;
            }
            conn.exec_drop(
                "DELETE FROM new_mail ORDER BY date, mail_id LIMIT ?",
                (batch,),
            )
            .await
            .map_err(|e| e.to_string())?;
            let n = conn.affected_rows();
            total += n;
            if n == 0 {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    Ok(total)
}
