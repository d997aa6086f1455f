//! The embedded store: one SQLite file in WAL mode.
//!
//! Owns: writing one batch of messages in one transaction (opening the file and its
//! migrations are `schema`'s), and keeping the WAL bounded: the committer's own
//! connection never checkpoints inline (`wal_autocheckpoint = 0`); every
//! [`CHECKPOINT_EVERY_BYTES`] of committed rows it asks a background thread, on its
//! own connection, for a PASSIVE checkpoint, so the copy of the WAL into the file
//! (and its fsync) runs beside the next commits instead of inside one. The bound:
//! when the WAL file is found over [`WAL_BOUND_BYTES`] (the checkpointer fell behind,
//! or is not running), the committer runs a RESTART checkpoint inline after that
//! commit, as SQLite's autocheckpoint would, until it is back under.
//! Must not: be used from more than the committer thread (SQLite has one writer).

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use tracing::warn;

use super::StoreError;
use super::row::MailRow;
use super::schema;
use mailstore::Synchronous;

const INSERT: &str = r#"INSERT INTO new_mail
  (date, "from", "to", subject, body, charset, mail, spam_score, hash, content_type,
   recipient, has_attach, ip_addr, return_path, is_tls, message_id, reply_to, sender,
   helo, size)
VALUES (?1, ?2, ?3, ?4, ?18, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?2, ?12, ?13, ?14, ?15, ?16, ?17)"#;

/// Committed row bytes after which the background checkpointer is asked to run
/// (what SQLite's autocheckpoint did inline, every ~4 MiB of WAL).
pub const CHECKPOINT_EVERY_BYTES: u64 = 4 * 1024 * 1024;
/// What a commit adds to the WAL besides its rows: the table's and the indexes'
/// leaf pages it rewrites, 16 KiB each (measured: ≈ 6 frames for a commit of a few
/// 1 KB messages). Counting only row bytes, a 1 KB load asked for a checkpoint
/// every ≈ 90 MiB of WAL instead of every 4 MiB.
const COMMIT_OVERHEAD_BYTES: u64 = 6 * 16 * 1024;
/// A WAL file larger than this makes the committer checkpoint inline. Under steady
/// load a background checkpoint never quite catches up (commits keep appending
/// while it copies), so the WAL restarts from its beginning only when the committer
/// checkpoints here: the WAL cycles through this many bytes of page cache, reused.
pub const WAL_BOUND_BYTES: u64 = 8 * 1024 * 1024;

/// When to checkpoint, and whether a background thread does it.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every_bytes: u64,
    pub bound_bytes: u64,
    /// False: no checkpointer thread (tests of the bound: a checkpointer that
    /// never gets to run).
    pub background: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_bytes: CHECKPOINT_EVERY_BYTES,
            bound_bytes: WAL_BOUND_BYTES,
            background: true,
        }
    }
}

/// Counters of the checkpoints, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints the background thread ran.
    pub background: AtomicU64,
    /// Checkpoints the committer ran itself because the WAL was over the bound.
    pub inline: AtomicU64,
}

pub struct SqliteStore {
    conn: Connection,
    wal_path: PathBuf,
    policy: CheckpointPolicy,
    /// Row bytes committed since the checkpointer was last asked.
    since_checkpoint: u64,
    /// Over the bound at the last look: check (and checkpoint) after every commit.
    over_bound: bool,
    checkpointer: Option<Checkpointer>,
    stats: Arc<CheckpointStats>,
    /// Held by whoever checkpoints: SQLite answers a second checkpointer BUSY at
    /// once (no busy handler), so the inline one waits here for the background one.
    checkpointing: Arc<Mutex<()>>,
}

/// The background checkpoint thread; asked over a channel of one slot (a request
/// while one is pending is the same request).
struct Checkpointer {
    tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        Self::open_with(path, synchronous, CheckpointPolicy::default())
    }

    pub fn open_with(
        path: &Path,
        synchronous: Synchronous,
        policy: CheckpointPolicy,
    ) -> Result<Self, StoreError> {
        let conn = schema::open_sqlite(path, synchronous)?;
        let open = |source| {
            StoreError::Open(mailstore::OpenError::Open {
                path: path.to_owned(),
                source,
            })
        };
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={};",
            policy.bound_bytes
        ))
        .map_err(open)?;
        let stats = Arc::new(CheckpointStats::default());
        let checkpointing = Arc::new(Mutex::new(()));
        let checkpointer = if policy.background {
            let side = Self::open_side_connection(path).map_err(open)?;
            side.execute_batch(&format!(
                "PRAGMA synchronous={}; PRAGMA journal_size_limit={};",
                synchronous.pragma_value(),
                policy.bound_bytes
            ))
            .map_err(open)?;
            let (tx, rx) = crossbeam_channel::bounded::<()>(1);
            let counted = Arc::clone(&stats);
            let lock = Arc::clone(&checkpointing);
            let thread = std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || {
                    // Ends when the store is dropped (the sender goes).
                    while rx.recv().is_ok() {
                        let _held = lock
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        match checkpoint(&side, "PASSIVE") {
                            Ok(()) => {
                                counted.background.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => warn!(error = %e, "background WAL checkpoint failed"),
                        }
                    }
                })
                .map_err(StoreError::Spawn)?;
            Some(Checkpointer {
                tx: Some(tx),
                thread: Some(thread),
            })
        } else {
            None
        };
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        Ok(Self {
            conn,
            wal_path: PathBuf::from(wal_path),
            policy,
            since_checkpoint: 0,
            over_bound: false,
            checkpointer,
            stats,
            checkpointing,
        })
    }

    /// After a commit of `bytes`: asks for a background checkpoint every
    /// `every_bytes`, and checkpoints inline while the WAL file is over the bound.
    /// A failed checkpoint costs WAL space, not mail: the commit stands.
    fn after_commit(&mut self, bytes: u64) {
        self.since_checkpoint = self
            .since_checkpoint
            .saturating_add(bytes)
            .saturating_add(COMMIT_OVERHEAD_BYTES);
        if self.since_checkpoint < self.policy.every_bytes && !self.over_bound {
            return;
        }
        self.since_checkpoint = 0;
        if let Some(tx) = self.checkpointer.as_ref().and_then(|c| c.tx.as_ref()) {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    warn!("the background checkpointer is gone; checkpointing inline")
                }
            }
        }
        let wal = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        self.over_bound = wal > self.policy.bound_bytes;
        if self.over_bound {
            // RESTART, not PASSIVE: it waits (busy timeout) for a background
            // checkpoint that holds the checkpoint lock and for readers, copies
            // everything, and leaves the WAL to start again from its beginning.
            let _held = self
                .checkpointing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match checkpoint(&self.conn, "RESTART") {
                Ok(()) => {
                    self.stats.inline.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => warn!(error = %e, wal_bytes = wal, "inline WAL checkpoint failed"),
            }
        }
    }

    /// Which of these queue ids are stored.
    pub fn committed(
        &mut self,
        hashes: &[String],
    ) -> rusqlite::Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        let mut query = self
            .conn
            .prepare_cached("SELECT 1 FROM new_mail WHERE hash = ?1 LIMIT 1")?;
        for hash in hashes {
            if query.exists([hash])? {
                found.insert(hash.clone());
            }
        }
        Ok(found)
    }

    /// A second connection to the same file, for the retention thread.
    pub fn open_side_connection(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(schema::SQLITE_BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// Writes every message of the batch, one row per recipient, in one transaction.
    /// Either all rows are committed or none.
    pub fn insert_batch(&mut self, rows: &[MailRow]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for row in rows {
                for recipient in &row.recipients {
                    insert.execute(params![
                        row.date,
                        row.from,
                        row.to_header.as_deref().unwrap_or(recipient),
                        row.subject,
                        row.charset,
                        row.mail,
                        row.hash,
                        row.content_type,
                        recipient,
                        row.has_attach,
                        row.ip_addr,
                        row.is_tls,
                        row.message_id,
                        row.reply_to,
                        row.sender,
                        row.helo,
                        row.size,
                        row.body,
                    ])?;
                }
            }
        }
        // Dropping an uncommitted transaction rolls it back.
        tx.commit()?;
        let bytes = rows.iter().fold(0u64, |sum, row| {
            let n = u64::try_from(row.mail.len().saturating_mul(row.recipients.len()))
                .unwrap_or(u64::MAX);
            sum.saturating_add(n)
        });
        self.after_commit(bytes);
        Ok(())
    }
}

/// A checkpoint in `mode`: PASSIVE (the background one) copies what it can without
/// waiting for readers or the writer, so it never blocks a commit.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::SystemTime;

    use super::*;
    use crate::store::new_queue_id;

    /// A batch of `n` messages of `bytes` each, one recipient.
    fn batch(n: usize, bytes: usize) -> Vec<MailRow> {
        (0..n)
            .map(|i| {
                let mut data = format!("Subject: {i}\r\n\r\n").into_bytes();
                data.resize(bytes.saturating_sub(2), b'x');
                data.extend_from_slice(b"\r\n");
                let rcpt = format!("r{i}@example.com");
                let mut envelope = crate::store::stage::tests::envelope(i, &[&rcpt]);
                envelope.data = data;
                let now = SystemTime::now();
                MailRow::new(envelope, new_queue_id(now), now, "mx.test")
            })
            .collect()
    }

    /// Writes 8 MiB in 20 KB messages, 4 a commit; returns the largest WAL file seen
    /// after a commit and the store.
    fn load(policy: CheckpointPolicy) -> (u64, SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut store = SqliteStore::open_with(&path, Synchronous::Normal, policy).unwrap();
        let mut largest = 0;
        for _ in 0..100 {
            store.insert_batch(&batch(4, 20_000)).unwrap();
            largest = largest.max(std::fs::metadata(&store.wal_path).unwrap().len());
        }
        let rows: i64 = store
            .conn
            .query_row("SELECT count(*) FROM new_mail", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 400);
        (largest, store, dir)
    }

    const BOUND: u64 = 1024 * 1024;
    /// What one commit of this test can add past the bound (measured: ≈ 66 frames
    /// of 16 KiB), with room to spare; the control writes over 8 MiB.
    const ONE_BATCH: u64 = 1536 * 1024;

    /// Whatever ends a batch early rolls it back (rusqlite's `Transaction` on
    /// drop): no row of it stays, and the connection is not left in a transaction.
    #[test]
    fn a_failed_batch_leaves_no_row_and_no_open_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut store = SqliteStore::open(&path, Synchronous::Full).unwrap();
        let mut rows = batch(3, 1000);
        // The same queue id and recipient twice: the unique index refuses the third.
        rows[2].hash = rows[0].hash.clone();
        rows[2].recipients = rows[0].recipients.clone();
        assert!(store.insert_batch(&rows).is_err());
        assert!(store.conn.is_autocommit(), "the transaction was left open");
        let count = |store: &SqliteStore| -> i64 {
            store
                .conn
                .query_row("SELECT count(*) FROM new_mail", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&store), 0);
        // The next batches commit, and a second connection sees them.
        store.insert_batch(&batch(2, 1000)).unwrap();
        store.insert_batch(&batch(1, 1000)).unwrap();
        assert_eq!(count(&store), 3);
        let reader = SqliteStore::open_side_connection(&path).unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM new_mail", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 3);
    }

    #[test]
    fn without_checkpoints_the_wal_grows_with_everything_written() {
        // The control for the tests below: nothing checkpoints, the WAL holds all.
        let (largest, _store, _dir) = load(CheckpointPolicy {
            every_bytes: 64 * 1024,
            bound_bytes: u64::MAX,
            background: false,
        });
        assert!(largest > 8 * BOUND, "WAL {largest}");
    }

    #[test]
    fn a_stalled_checkpointer_leaves_the_wal_bounded_by_inline_checkpoints() {
        let (largest, store, _dir) = load(CheckpointPolicy {
            every_bytes: 64 * 1024,
            bound_bytes: BOUND,
            background: false,
        });
        assert!(largest <= BOUND + ONE_BATCH, "WAL {largest}");
        assert!(store.stats.inline.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn the_background_checkpointer_runs_and_the_wal_stays_bounded() {
        let (largest, store, _dir) = load(CheckpointPolicy {
            every_bytes: 64 * 1024,
            bound_bytes: BOUND,
            background: true,
        });
        assert!(largest <= BOUND + ONE_BATCH, "WAL {largest}");
        assert!(store.stats.background.load(Ordering::Relaxed) > 0);
        // The committer's own connection never checkpoints on its own.
        let auto: i64 = store
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0);
    }
}
