//! Imports: a CSV file (or an archive holding one) streamed into a list, with
//! its progress kept in the `imports` table.
//!
//! Owns: the `imports` table (queued → running → finished | failed, counts, the
//! first [`MAX_ERRORS`] row errors, the failure), and the job itself: rows read
//! from `source` through `csv_rows` in chunks of [`CHUNK_ROWS`], each chunk stored
//! by `lists::upsert` in one transaction together with the import's progress, so
//! what the row says is always what is committed. The file is read and validated
//! on a thread of its own, at most [`READ_AHEAD_CHUNKS`] ahead of the writer, so
//! memory is flat whatever the file size and parsing overlaps the store's work.
//! An upload's job runs on an OS thread with its own runtime and store connection
//! ([`spawn`]), so the HTTP API never waits on it; at most [`MAX_RUNNING`] run at
//! once, the others wait `queued`. The CLI runs the same job in the foreground
//! ([`run`]). Re-running a job is safe (the upsert is idempotent), which is how a
//! server restart resumes one (`web::imports::resume`).
//! Must not: know HTTP (`web::imports` does) or list rules (`lists` does).

pub mod csv_rows;
pub mod source;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mailstore::StoreUrl;
use tracing::{info, warn};

use crate::db::{Db, DbError, Val};
use crate::lists::{self, List, NewSubscriber};
use crate::row::{Column, Fields};
use csv_rows::{CsvRows, Rejected, Row};

/// Rows per transaction: large enough that commits (an fsync each on SQLite with
/// `synchronous = full`) are a small part of the time, small enough that a chunk in
/// memory is a few MB and a lock is held for well under a second.
pub const CHUNK_ROWS: usize = 5_000;
/// Row errors kept on the import (the count of rejected rows is always whole).
pub const MAX_ERRORS: usize = 100;
/// Imports running at once per process: each is one writer on the store; more
/// would only contend for SQLite's write lock or InnoDB's.
pub const MAX_RUNNING: usize = 2;
/// SQLite page cache of an import's connection (see `run_inner`).
const IMPORT_SQLITE_CACHE_KIB: u32 = 32 * 1024;
/// A chunk whose transaction fails (SQLite busy past its timeout, a MySQL
/// connection lost) is retried this many times before the import fails.
const CHUNK_ATTEMPTS: u32 = 3;

/// An import's counts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub rows_read: u64,
    pub added: u64,
    pub updated: u64,
    pub rejected: u64,
    /// The first [`MAX_ERRORS`] rejected rows.
    pub errors: Vec<Rejected>,
}

impl Progress {
    fn errors_json(&self) -> String {
        serde_json::Value::Array(self.errors.iter().map(error_json).collect()).to_string()
    }
}

fn error_json(e: &Rejected) -> serde_json::Value {
    serde_json::json!({ "line": e.line, "email": e.email, "error": e.error })
}

/// An import as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    pub id: i64,
    pub account_id: i64,
    pub list_id: i64,
    pub state: String,
    pub rows_read: i64,
    pub added: i64,
    pub updated: i64,
    pub rejected: i64,
    /// A JSON array of `{"line","email","error"}`.
    pub errors: serde_json::Value,
    pub failure: Option<String>,
}

impl ImportRow {
    const COLUMNS: &'static [Column] = &[
        Column::plain("id"),
        Column::plain("account_id"),
        Column::plain("list_id"),
        Column::plain("state"),
        Column::plain("rows_read"),
        Column::plain("added"),
        Column::plain("updated"),
        Column::plain("rejected"),
        Column::plain("errors"),
        Column::plain("failure"),
    ];

    fn from_row(row: Vec<Val>) -> Option<Self> {
        let mut f = Fields::new(Self::COLUMNS, row).ok()?;
        Some(Self {
            id: f.int("id").ok()?,
            account_id: f.int("account_id").ok()?,
            list_id: f.int("list_id").ok()?,
            state: f.text("state").ok()?,
            rows_read: f.int("rows_read").ok()?,
            added: f.int("added").ok()?,
            updated: f.int("updated").ok()?,
            rejected: f.int("rejected").ok()?,
            // Written only by `store_chunk`; an unreadable value shows as none.
            errors: serde_json::from_str(&f.text("errors").ok()?)
                .unwrap_or_else(|_| serde_json::Value::Array(Vec::new())),
            failure: f.opt_text("failure").ok()?,
        })
    }
}

/// Records a new, queued import of `list`; returns its id.
pub async fn create(db: &mut Db, list: &List) -> Result<i64, DbError> {
    db.begin().await?;
    let result = async {
        db.exec(
            "INSERT INTO imports (account_id, list_id, state, errors) VALUES (?, ?, 'queued', '[]')",
            vec![list.account_id.into(), list.id.into()],
        )
        .await?;
        // The id this connection just inserted (MySQL: `Db` holds one connection
        // across the transaction's statements), whatever others insert meanwhile.
        let sql = if db.is_mysql() {
            "SELECT LAST_INSERT_ID()"
        } else {
            "SELECT last_insert_rowid()"
        };
        let rows = db.query(sql, vec![]).await?;
        crate::row::scalar_int(&rows).ok_or(DbError::Timeout(Duration::ZERO))
    }
    .await;
    match result {
        Ok(id) => {
            db.commit().await?;
            Ok(id)
        }
        Err(e) => {
            db.rollback().await;
            Err(e)
        }
    }
}

/// Import `id` of `account_id` (None also for another account's import).
pub async fn get(db: &mut Db, account_id: i64, id: i64) -> Result<Option<ImportRow>, DbError> {
    let sql = format!(
        "SELECT {} FROM imports WHERE id = ? AND account_id = ?",
        crate::row::select_list(db, ImportRow::COLUMNS)
    );
    let rows = db.query(&sql, vec![id.into(), account_id.into()]).await?;
    Ok(rows.into_iter().next().and_then(ImportRow::from_row))
}

/// Imports left queued or running (by a server that stopped), oldest first.
pub async fn unfinished(db: &mut Db) -> Result<Vec<ImportRow>, DbError> {
    let sql = format!(
        "SELECT {} FROM imports WHERE state IN ('queued', 'running') ORDER BY id",
        crate::row::select_list(db, ImportRow::COLUMNS)
    );
    let rows = db.query(&sql, vec![]).await?;
    Ok(rows.into_iter().filter_map(ImportRow::from_row).collect())
}

/// Marks import `id` failed with `why`.
pub async fn mark_failed(db: &mut Db, id: i64, why: &str) -> Result<(), DbError> {
    let now = lists::now_sql(db);
    db.exec(
        &format!(
            "UPDATE imports SET state = 'failed', failure = ?, updated_at = {now}, finished_at = {now} WHERE id = ?"
        ),
        vec![why.into(), id.into()],
    )
    .await?;
    Ok(())
}

/// One import to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub import_id: i64,
    pub list: List,
    pub path: PathBuf,
    /// Delete `path` when the job ends (an upload; never an operator's own file).
    pub delete_file: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Finished(Progress),
    /// Why, and the counts up to then (the chunks before are committed).
    Failed(String, Progress),
}

/// Called after each chunk with the counts so far and the file bytes consumed.
pub type OnProgress = Box<dyn FnMut(&Progress, u64) + Send>;

/// Runs `job` on a thread of its own, with its own runtime and store connection
/// (so the HTTP API's runtime and pool never wait on it); the handle gives its
/// outcome.
pub fn spawn(store: StoreUrl, job: Job) -> std::io::Result<std::thread::JoinHandle<Outcome>> {
    std::thread::Builder::new()
        .name(format!("import-{}", job.import_id))
        .spawn(move || {
            let _slot = RunSlot::take();
            let outcome = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async {
                    match Db::open(&store, false).await {
                        Ok(mut db) => {
                            let outcome = run(&mut db, &job, None).await;
                            db.close().await;
                            outcome
                        }
                        Err(e) => {
                            let why = format!("cannot open the store: {e}");
                            warn!(import = job.import_id, failure = %why, "import failed");
                            Outcome::Failed(why, Progress::default())
                        }
                    }
                }),
                Err(e) => Outcome::Failed(
                    format!("cannot start the runtime: {e}"),
                    Progress::default(),
                ),
            };
            if job.delete_file
                && let Err(e) = std::fs::remove_file(&job.path)
            {
                warn!(import = job.import_id, error = %e, "cannot delete the upload");
            }
            outcome
        })
}

/// A place among the [`MAX_RUNNING`] imports; waits for one.
struct RunSlot;

static RUNNING: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

impl RunSlot {
    fn take() -> Self {
        // A poisoned lock only means another import thread panicked; the count is
        // still right, so go on with it.
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= MAX_RUNNING {
            running = SLOT_FREED.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        Self
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        SLOT_FREED.notify_one();
    }
}

/// What the reading thread hands the writer: one chunk of rows, or the end.
enum Msg {
    Chunk {
        rows: Vec<NewSubscriber>,
        read: u64,
        rejected: u64,
        errors: Vec<Rejected>,
        consumed: u64,
    },
    Failed(String),
    /// The whole file was read. (The channel closing without it means the reader
    /// died: a failure, never a silent "finished".)
    Done,
}

/// Chunks read ahead of the writer: parsing the next chunk overlaps storing this
/// one, and memory stays at a few chunks.
const READ_AHEAD_CHUNKS: usize = 2;

/// Runs `job` on `db`, recording its start, progress and end in its `imports`
/// row. The file is read and parsed on a thread of its own (blocking reads), the
/// chunks are stored here.
pub async fn run(db: &mut Db, job: &Job, mut on_progress: Option<OnProgress>) -> Outcome {
    let outcome = run_inner(db, job, &mut on_progress).await;
    // Recording the end; if even that fails the row stays `running` and the next
    // server start re-runs or fails it.
    let recorded = match &outcome {
        Outcome::Finished(p) => finish(db, job.import_id, p).await,
        Outcome::Failed(why, p) => match write_progress(db, job.import_id, p).await {
            Ok(()) => mark_failed(db, job.import_id, why).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = recorded {
        warn!(import = job.import_id, error = %e, "cannot record the end of the import");
    }
    match &outcome {
        Outcome::Finished(p) => info!(
            import = job.import_id,
            list = job.list.id,
            rows = p.rows_read,
            added = p.added,
            updated = p.updated,
            rejected = p.rejected,
            "import finished"
        ),
        Outcome::Failed(why, _) => warn!(import = job.import_id, failure = %why, "import failed"),
    }
    outcome
}

async fn run_inner(db: &mut Db, job: &Job, on_progress: &mut Option<OnProgress>) -> Outcome {
    let mut progress = Progress::default();
    if !db.is_mysql() {
        // The store's 64 MiB page cache is sized for a long-running daemon's
        // working set; an import writes each page once or twice, and the OS
        // page cache serves the re-reads. A smaller cache on this connection keeps
        // the import's memory flat (bench/import.sh, 1M rows: 64 MiB cache 93 MiB RSS, 32 MiB 57 MiB at ~10% less speed, 16 MiB 38 MiB at ~30% less).
        if let Err(e) = db
            .exec(
                &format!("PRAGMA cache_size = -{IMPORT_SQLITE_CACHE_KIB}"),
                vec![],
            )
            .await
        {
            warn!(import = job.import_id, error = %e, "cannot shrink the page cache");
        }
    }
    if let Err(e) = start(db, job.import_id).await {
        return Outcome::Failed(store_failed(job, &e), progress);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
    let path = job.path.clone();
    let reader = std::thread::Builder::new()
        .name(format!("import-{}-read", job.import_id))
        .spawn(move || read_file(&path, &tx));
    if let Err(e) = reader {
        return Outcome::Failed(format!("cannot start the reader: {e}"), progress);
    }
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Chunk {
                rows,
                read,
                rejected,
                errors,
                consumed,
            } => {
                progress.rows_read += read;
                progress.rejected += rejected;
                let room = MAX_ERRORS.saturating_sub(progress.errors.len());
                progress.errors.extend(errors.into_iter().take(room));
                match store_chunk(db, job, &rows, &progress).await {
                    Ok(done) => {
                        progress.added += done.added;
                        progress.updated += done.updated;
                    }
                    // Dropping `rx` (on return) stops the reader.
                    Err(e) => return Outcome::Failed(store_failed(job, &e), progress),
                }
                if let Some(f) = on_progress.as_mut() {
                    f(&progress, consumed);
                }
            }
            Msg::Failed(why) => return Outcome::Failed(why, progress),
            Msg::Done => return Outcome::Finished(progress),
        }
    }
    Outcome::Failed("the file reader stopped unexpectedly".into(), progress)
}

/// The failure shown for a store error: the cause goes to the log, not to the
/// account (as `web::error::ApiError::unavailable` does for requests).
fn store_failed(job: &Job, e: &DbError) -> String {
    warn!(import = job.import_id, error = %e, "import failed on the store");
    "the database failed (the server log has the cause); run the import again".to_owned()
}

/// The reading thread: the file as chunks of validated rows, sent to `tx`; it
/// ends when the file does, on a failure (sent), or when the writer is gone.
fn read_file(path: &std::path::Path, tx: &tokio::sync::mpsc::Sender<Msg>) {
    let consumed = Arc::new(AtomicU64::new(0));
    let counter = consumed.clone();
    let result = source::with_csv(path, consumed, |input| {
        let mut rows = CsvRows::new(input).map_err(|e| e.to_string())?;
        loop {
            let mut chunk: Vec<NewSubscriber> = Vec::with_capacity(CHUNK_ROWS);
            let mut errors = Vec::new();
            let (mut read, mut rejected) = (0u64, 0u64);
            let mut end = false;
            let mut failure = None;
            while read < CHUNK_ROWS as u64 {
                let row = match rows.next_row() {
                    Ok(Some(row)) => row,
                    Ok(None) => {
                        end = true;
                        break;
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                };
                read += 1;
                match row {
                    Row::Accepted(a) => chunk.push(a.subscriber),
                    Row::Rejected(r) => {
                        rejected += 1;
                        if errors.len() < MAX_ERRORS {
                            errors.push(r);
                        }
                    }
                }
            }
            if read > 0 {
                let msg = Msg::Chunk {
                    rows: chunk,
                    read,
                    rejected,
                    errors,
                    consumed: counter.load(std::sync::atomic::Ordering::Relaxed),
                };
                if tx.blocking_send(msg).is_err() {
                    return Ok(()); // the writer stopped
                }
            }
            if let Some(why) = failure {
                return Err(why);
            }
            if end {
                return Ok(());
            }
        }
    });
    let failure = match result {
        Ok(Ok(())) => {
            let _ = tx.blocking_send(Msg::Done);
            return;
        }
        Ok(Err(why)) => why,
        Err(e) => e.to_string(),
    };
    let _ = tx.blocking_send(Msg::Failed(failure));
}

/// `running`, counts reset: a resumed import starts over (its earlier chunks are
/// upserted again, unchanged rows without a write).
async fn start(db: &mut Db, id: i64) -> Result<(), DbError> {
    let now = lists::now_sql(db);
    db.exec(
        &format!(
            "UPDATE imports SET state = 'running', rows_read = 0, added = 0, updated = 0, \
             rejected = 0, errors = '[]', failure = NULL, updated_at = {now} WHERE id = ?"
        ),
        vec![id.into()],
    )
    .await?;
    Ok(())
}

/// One chunk and the progress including it, in one transaction; retried whole.
async fn store_chunk(
    db: &mut Db,
    job: &Job,
    chunk: &[NewSubscriber],
    progress: &Progress,
) -> Result<lists::Upserted, DbError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            db.begin().await?;
            let done = lists::upsert(db, &job.list, chunk).await?;
            let mut with_chunk = progress.clone();
            with_chunk.added += done.added;
            with_chunk.updated += done.updated;
            write_progress(db, job.import_id, &with_chunk).await?;
            db.commit().await?;
            Ok(done)
        }
        .await;
        match result {
            Ok(done) => return Ok(done),
            Err(e) => {
                db.rollback().await;
                if attempt >= CHUNK_ATTEMPTS {
                    return Err(e);
                }
                warn!(import = job.import_id, error = %e, attempt, "import chunk failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
}

async fn write_progress(db: &mut Db, id: i64, p: &Progress) -> Result<(), DbError> {
    let now = lists::now_sql(db);
    db.exec(
        &format!(
            "UPDATE imports SET rows_read = ?, added = ?, updated = ?, rejected = ?, errors = ?, \
             updated_at = {now} WHERE id = ?"
        ),
        vec![
            count(p.rows_read),
            count(p.added),
            count(p.updated),
            count(p.rejected),
            p.errors_json().into(),
            id.into(),
        ],
    )
    .await?;
    Ok(())
}

async fn finish(db: &mut Db, id: i64, p: &Progress) -> Result<(), DbError> {
    write_progress(db, id, p).await?;
    let now = lists::now_sql(db);
    db.exec(
        &format!(
            "UPDATE imports SET state = 'finished', updated_at = {now}, finished_at = {now} WHERE id = ?"
        ),
        vec![id.into()],
    )
    .await?;
    Ok(())
}

fn count(n: u64) -> Val {
    Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
}
