//! The storage stage: the committer thread between the reactors and the database.
//!
//! Owns: group commit. Submissions arrive over a bounded channel (when it is full,
//! reactors hold messages back and stop reading: back-pressure, not memory); the
//! committer takes everything queued (up to `batch_max_messages` and
//! `batch_max_bytes` of message bodies; what arrives during one commit forms the
//! next batch), optionally waits up to
//! `batch_max_delay` for more, writes them all in one transaction, and only after
//! COMMIT returns sends each reactor its results, waking it once per batch.
//! Must not: answer anything before the commit, or stop on a failed commit: a
//! failure is answered `451 4.3.0` for the messages it concerns and the next batch
//! tries again.
//!
//! Memory: a batch holds at most `batch_max_bytes` of bodies (or one message, when
//! a single one is larger), per committer. Spooled bodies are read from their files
//! only here, one allocation each, and their files are deleted once the message is
//! answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tokio::runtime::Runtime;
use tracing::{debug, error, warn};

use super::StoreError;
use super::backend::{Backend, CommitError};
use super::cache::{CacheConfig, CacheError, CacheMode, RedisCache};
use super::mysql::MysqlStore;
use super::queue_id::new_queue_id;
use super::retention::{Retention, RetentionConfig};
use super::row::MailRow;
use super::sqlite::SqliteStore;
use crate::handoff::{Completion, CompletionSink, ConnKey, QueueId, StoreFailed, Submission};
use crate::http::events::Arrivals;
use mailstore::{StoreUrl, Synchronous};

/// After a COMMIT whose answer was lost, how long the committer keeps asking the
/// database whether the batch is there before giving up (and answering 451, with
/// the risk of a duplicate when the client retries).
const RESOLVE_DEADLINE: Duration = Duration::from_secs(15);
const RESOLVE_PAUSE: Duration = Duration::from_millis(250);
/// MySQL connections of each committer (one is busy at a time; one spare for the
/// in-doubt resolve and the probe): 2 × `mysql_committers` in all.
const MYSQL_POOL_MAX: usize = 2;

/// How the stage batches and where it writes.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// A batch closes at this many messages...
    pub batch_max_messages: usize,
    /// ...or, when not zero, this long after its first message arrived (without
    /// it, a batch is what queued up while the previous commit ran).
    pub batch_max_delay: Duration,
    /// ...or once its bodies add up to this many bytes (a larger single message
    /// is a batch on its own): what the committer holds in memory at once.
    pub batch_max_bytes: usize,
    /// Submissions that may wait for the committers.
    pub queue_capacity: usize,
    /// MySQL/MariaDB: committer threads, each with a batch in flight (SQLite: 1).
    pub mysql_committers: usize,
    /// For the `Received:` header and generated Message-IDs.
    pub hostname: String,
    pub synchronous: Synchronous,
    /// MySQL: create or update the schema at start (`--migrate`).
    pub migrate: bool,
    /// Redis, when configured (`--redis`).
    pub cache: Option<CacheConfig>,
    pub retention: RetentionConfig,
    /// Counters and readiness (the Prometheus metrics), when served.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Each committer registers a heartbeat here and beats it on every turn (the
    /// systemd watchdog): one stuck committer is seen even while others run.
    pub watchdog: Option<ops::notify::Watchdog>,
}

/// An idle committer wakes this often to show its heartbeat and, every
/// [`PROBE_EVERY`], asks the database whether it answers (for `/readyz`).
const IDLE_TICK: Duration = Duration::from_millis(250);
const PROBE_EVERY: Duration = Duration::from_secs(2);

impl StageConfig {
    /// The embedded defaults, for tests and tools.
    pub fn new(hostname: &str) -> Self {
        Self {
            batch_max_messages: crate::config::DEFAULT_BATCH_MAX_MESSAGES,
            batch_max_delay: Duration::from_micros(crate::config::DEFAULT_BATCH_MAX_DELAY_US),
            batch_max_bytes: crate::config::DEFAULT_BATCH_MAX_BYTES,
            queue_capacity: 4096,
            mysql_committers: crate::config::DEFAULT_MYSQL_COMMITTERS,
            hostname: hostname.to_owned(),
            synchronous: Synchronous::Full,
            migrate: false,
            cache: None,
            retention: RetentionConfig::default(),
            metrics: None,
            watchdog: None,
        }
    }
}

/// Counters for tests, logs and benchmarks.
#[derive(Debug, Default)]
pub struct StageStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Messages committed.
    pub messages: AtomicU64,
    /// Messages answered 451.
    pub failed: AtomicU64,
    /// Batches whose cache write failed after the commit (cache mode: mail safe).
    pub cache_errors: AtomicU64,
}

/// The running stage.
pub struct StorageStage {
    tx: Sender<Submission>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<StageStats>,
    retention: Option<Retention>,
    /// The queue seen from the receiving side, for its depth (a sender kept for
    /// that would keep the committer from ever seeing the end of input).
    queue: Receiver<Submission>,
}

impl StorageStage {
    /// Opens the store on the calling thread (so a store that cannot be opened
    /// fails the start, not the first message) and starts the committers.
    pub fn start(url: &StoreUrl, config: StageConfig) -> Result<Self, StoreError> {
        Self::start_with_arrivals(url, config, None)
    }

    /// [`StorageStage::start`], and after each COMMIT the committed queue ids and
    /// recipients go to `arrivals` (the `--http` event streams).
    pub fn start_with_arrivals(
        url: &StoreUrl,
        config: StageConfig,
        arrivals: Option<Arc<Arrivals>>,
    ) -> Result<Self, StoreError> {
        let count = match url {
            StoreUrl::Sqlite(_) => 1,
            StoreUrl::Mysql(_) => config.mysql_committers.clamp(1, 8),
        };
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let stats = Arc::new(StageStats::default());
        let queue = rx.clone();
        // Every connection first, then the threads: a store that cannot be opened
        // fails the start with nothing left running.
        let mut committers = Vec::with_capacity(count);
        for index in 0..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StoreError::Runtime)?;
            let backend = match url {
                StoreUrl::Sqlite(path) => {
                    Backend::Sqlite(SqliteStore::open(path, config.synchronous)?)
                }
                // The first migrates (`--migrate`); the others only check the version.
                StoreUrl::Mysql(url) => Backend::Mysql(rt.block_on(MysqlStore::open(
                    url,
                    config.migrate && index == 0,
                    MYSQL_POOL_MAX,
                ))?),
            };
            let cache = config.cache.clone().map(RedisCache::new).transpose()?;
            let name = match index {
                0 => "store-commit".to_owned(),
                i => format!("store-commit-{i}"),
            };
            committers.push((
                name.clone(),
                Committer {
                    rt,
                    backend: Some(backend),
                    cache,
                    rx: rx.clone(),
                    heartbeat: config.watchdog.as_ref().map(|w| w.register(name)),
                    config: config.clone(),
                    stats: Arc::clone(&stats),
                    arrivals: arrivals.clone(),
                },
            ));
        }
        drop(rx);
        let retention = Retention::start(url, config.retention.clone())?;
        let mut threads = Vec::with_capacity(count);
        for (name, committer) in committers {
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || committer.run())
                    .map_err(StoreError::Spawn)?,
            );
        }
        Ok(Self {
            tx,
            threads,
            stats,
            retention,
            queue,
        })
    }

    /// Where reactors send complete messages.
    pub fn sender(&self) -> Sender<Submission> {
        self.tx.clone()
    }

    pub fn stats(&self) -> Arc<StageStats> {
        Arc::clone(&self.stats)
    }

    /// Messages waiting for the committer now (the metrics read it at scrape).
    pub fn queue_probe(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let queue = self.queue.clone();
        move || queue.len()
    }

    /// The count of rows deleted by retention (None when retention is off).
    pub fn retention_counter(&self) -> Option<Arc<AtomicU64>> {
        self.retention.as_ref().map(Retention::deleted_counter)
    }

    /// Rows deleted by retention so far.
    pub fn retention_deleted(&self) -> u64 {
        self.retention.as_ref().map_or(0, Retention::deleted)
    }

    /// Commits and answers everything already submitted, then stops. Call after
    /// every other sender is gone (the reactors have exited).
    pub fn join(self) -> Result<(), StoreError> {
        drop(self.tx);
        if let Some(r) = self.retention {
            r.stop();
        }
        let mut result = Ok(());
        for thread in self.threads {
            if thread.join().is_err() {
                result = Err(StoreError::CommitterPanicked);
            }
        }
        result
    }
}

struct Committer {
    rt: Runtime,
    backend: Option<Backend>,
    cache: Option<RedisCache>,
    rx: Receiver<Submission>,
    /// This committer's sign of life, when a watchdog is set.
    heartbeat: Option<Arc<ops::notify::Heartbeat>>,
    config: StageConfig,
    stats: Arc<StageStats>,
    /// `--http`: committed messages are announced here (never blocks).
    arrivals: Option<Arc<Arrivals>>,
}

impl Committer {
    fn run(mut self) {
        let max = self.config.batch_max_messages.max(1);
        let mut batch = Batch::new(max, self.config.batch_max_bytes);
        // A submission that did not fit into the last batch (by bytes) starts the
        // next one.
        let mut carried: Option<Submission> = None;
        // Ends when every sender is gone and the queue is empty.
        let mut last_probe = Instant::now();
        while let Some(first) = carried
            .take()
            .or_else(|| self.next_submission(&mut last_probe))
        {
            let deadline = Instant::now() + self.config.batch_max_delay;
            batch.push(first);
            // Everything that queued up while the last commit ran goes in this one:
            // that is what batches under load, without a timer.
            while !batch.is_full() {
                match self.rx.try_recv() {
                    Ok(s) => {
                        if let Some(s) = batch.offer(s) {
                            carried = Some(s);
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            // An optional wait for more (`batch_max_delay`, 0 by default): fewer,
            // larger transactions at the price of that much latency on every message.
            while carried.is_none() && !batch.is_full() && !self.config.batch_max_delay.is_zero() {
                match self.rx.recv_deadline(deadline) {
                    Ok(s) => carried = batch.offer(s),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.commit(&mut batch.items);
            batch.bytes = 0;
        }
        if let Some(backend) = self.backend.take() {
            backend.close(&self.rt);
        }
        debug!("storage stage drained");
    }

    /// Waits for the next submission, showing the heartbeat while idle and
    /// probing the database now and then; None once every sender is gone.
    fn next_submission(&mut self, last_probe: &mut Instant) -> Option<Submission> {
        loop {
            if let Some(h) = &self.heartbeat {
                h.beat();
            }
            match self.rx.recv_timeout(IDLE_TICK) {
                Ok(s) => return Some(s),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(m) = &self.config.metrics
                && last_probe.elapsed() >= PROBE_EVERY
                && let Some(backend) = self.backend.as_mut()
            {
                *last_probe = Instant::now();
                let probe = backend.ping(&self.rt);
                m.set_store(probe.as_ref().map(|_| ()).map_err(String::as_str));
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<Submission>) {
        let mut waiting: Vec<(QueueId, ConnKey, Arc<CompletionSink>)> =
            Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        // Spool files live until their messages are answered (then dropped: deleted).
        let mut spooled = Vec::new();
        let mut unreadable = Vec::new();
        for Submission {
            envelope,
            spool,
            received_at,
            conn,
            reply,
        } in batch.drain(..)
        {
            let id = new_queue_id(received_at);
            let hostname = &self.config.hostname;
            let row = match &spool {
                // A safety check: the start of this body was taken out but is not
                // here. Never store a message short.
                None if envelope.data_offset != 0 => {
                    error!(
                        offset = envelope.data_offset,
                        "message without the start of its body; answering 451"
                    );
                    unreadable.push(((id, conn, reply), Err(StoreFailed)));
                    continue;
                }
                None => MailRow::new(envelope, id, received_at, hostname),
                Some(body) => {
                    match MailRow::from_spool(envelope, body, id, received_at, hostname) {
                        Ok(row) => row,
                        Err(e) => {
                            // Never acknowledged: the client is told 451 and retries.
                            error!(error = %e, path = %body.path().display(), "cannot read a spooled message; answering 451");
                            unreadable.push(((id, conn, reply), Err(StoreFailed)));
                            spooled.push(spool);
                            continue;
                        }
                    }
                }
            };
            spooled.push(spool);
            rows.push(row);
            waiting.push((id, conn, reply));
        }
        self.stats
            .failed
            .fetch_add(unreadable.len() as u64, Ordering::Relaxed);
        answer(unreadable.into_iter());
        if rows.is_empty() {
            return;
        }
        let guerrilla = self
            .cache
            .as_ref()
            .is_some_and(|c| c.mode() == CacheMode::Guerrilla);
        // Before Guerrilla mode moves the bodies out of the rows.
        let sizes: Vec<u64> = rows.iter().map(|r| r.mail.len() as u64).collect();
        let started = Instant::now();
        let results = if guerrilla && !self.write_bodies_to_redis(&mut rows) {
            vec![Err(StoreFailed); rows.len()]
        } else {
            self.insert(&rows, &waiting)
        };
        if let Some(arrivals) = &self.arrivals {
            for (row, result) in rows.iter().zip(&results) {
                if result.is_ok() {
                    arrivals.publish_row(row);
                }
            }
        }
        self.update_cache(&rows, &results, guerrilla);
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        if let Some(m) = &self.config.metrics {
            let bytes = sizes
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(n, _)| n)
                .sum();
            m.record_batch(ok, results.len() as u64, bytes, started.elapsed());
        }
        if ok > 0 {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.messages.fetch_add(ok, Ordering::Relaxed);
        self.stats
            .failed
            .fetch_add(results.len() as u64 - ok, Ordering::Relaxed);
        // The bodies go before the answers: a client that has its 250 finds no
        // spool file of its message left.
        drop(rows);
        drop(spooled);
        answer(waiting.into_iter().zip(results));
    }

    /// Guerrilla mode: the bodies go to Redis first; the rows keep metadata only.
    /// Returns false when Redis failed (the batch is answered 451, nothing stored).
    fn write_bodies_to_redis(&mut self, rows: &mut [MailRow]) -> bool {
        let Some(cache) = self.cache.as_mut() else {
            return true;
        };
        let refs: Vec<&MailRow> = rows.iter().collect();
        let written = self.rt.block_on(cache.write(&refs, true, false));
        if let Some(m) = &self.config.metrics {
            m.redis_result(written.is_ok());
        }
        if let Err(e) = written {
            error!(error = %e, messages = rows.len(), "Guerrilla mode: Redis write failed; answering 451");
            return false;
        }
        for row in rows.iter_mut() {
            row.mail = Vec::new();
            row.body = "redis";
        }
        true
    }

    /// Commits the rows; on failure works out, message by message, what is stored.
    fn insert(
        &mut self,
        rows: &[MailRow],
        waiting: &[(QueueId, ConnKey, Arc<CompletionSink>)],
    ) -> Vec<Result<QueueId, StoreFailed>> {
        let Some(backend) = self.backend.as_mut() else {
            return vec![Err(StoreFailed); rows.len()];
        };
        let all_ok = || waiting.iter().map(|(id, _, _)| Ok(*id)).collect();
        match backend.insert_batch(&self.rt, rows) {
            Ok(()) => all_ok(),
            Err(CommitError::Rejected(e)) if rows.len() > 1 => {
                // One bad message must not cost the others their delivery: retry
                // each on its own (rare, so the extra fsyncs do not matter).
                warn!(error = %e, messages = rows.len(), "batch commit failed; retrying one by one");
                rows.iter()
                    .zip(waiting)
                    .map(|(row, (id, _, _))| {
                        match backend.insert_batch(&self.rt, std::slice::from_ref(row)) {
                            Ok(()) => Ok(*id),
                            Err(e) => {
                                error!(error = %e, id = %id, "commit failed; answering 451");
                                Err(StoreFailed)
                            }
                        }
                    })
                    .collect()
            }
            Err(CommitError::Ambiguous(e)) => {
                warn!(error = %e, messages = rows.len(), "commit outcome unknown; asking the database");
                let hashes: Vec<String> = rows.iter().map(|r| r.hash.clone()).collect();
                let (rt, rx, stats) = (&self.rt, &self.rx, &self.stats);
                // This batch's clients wait for the answer (telling them 451 for a
                // message that did land would make them send it twice); everyone
                // who submits meanwhile is told 451 at once instead of waiting
                // behind it for a database that is gone.
                let stored = resolve(
                    || backend.committed(rt, &hashes),
                    || refuse_queued(rx, stats),
                    RESOLVE_DEADLINE,
                );
                waiting
                    .iter()
                    .zip(&hashes)
                    .map(|((id, _, _), h)| match &stored {
                        Some(set) if set.contains(h) => Ok(*id),
                        _ => Err(StoreFailed),
                    })
                    .collect()
            }
            Err(CommitError::Down) => {
                if let Some(m) = &self.config.metrics {
                    m.set_store(Err("database down (backing off)"));
                }
                debug!(messages = rows.len(), "database down; answering 451");
                vec![Err(StoreFailed); rows.len()]
            }
            Err(e) => {
                if let Some(m) = &self.config.metrics {
                    m.set_store(Err(&e.to_string()));
                }
                error!(error = %e, messages = rows.len(), "commit failed; answering 451");
                vec![Err(StoreFailed); rows.len()]
            }
        }
    }

    /// After the commit: bodies (cache mode), inbox lists and notifications for
    /// what was committed. A failure here costs cache misses, not mail.
    fn update_cache(
        &mut self,
        rows: &[MailRow],
        results: &[Result<QueueId, StoreFailed>],
        guerrilla: bool,
    ) {
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        let committed: Vec<&MailRow> = rows
            .iter()
            .zip(results)
            .filter(|(_, r)| r.is_ok())
            .map(|(row, _)| row)
            .collect();
        if committed.is_empty() {
            return;
        }
        let written = self.rt.block_on(cache.write(&committed, !guerrilla, true));
        if let Some(m) = &self.config.metrics {
            m.redis_result(written.is_ok());
        }
        match written {
            Ok(()) => {}
            Err(CacheError::Down) => {
                self.stats.cache_errors.fetch_add(1, Ordering::Relaxed);
                debug!(
                    messages = committed.len(),
                    "Redis down; cache not updated (mail is stored)"
                );
            }
            Err(e) => {
                // The cache logged the failure itself.
                self.stats.cache_errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, messages = committed.len(), "cache not updated (mail is stored)");
            }
        }
    }
}

/// The submissions of the next transaction, bounded in count and in body bytes.
struct Batch {
    items: Vec<Submission>,
    /// Body bytes of `items` (in memory or spooled: the committer holds them all
    /// in memory while it writes the batch).
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Batch {
    fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            items: Vec::with_capacity(max_messages),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.max_messages || self.bytes >= self.max_bytes
    }

    /// Adds the submission whatever its size (the first of a batch).
    fn push(&mut self, s: Submission) {
        self.bytes = self.bytes.saturating_add(body_bytes(&s));
        self.items.push(s);
    }

    /// Adds the submission if it fits, else hands it back for the next batch.
    fn offer(&mut self, s: Submission) -> Option<Submission> {
        if self.items.is_empty() || self.bytes.saturating_add(body_bytes(&s)) <= self.max_bytes {
            self.push(s);
            None
        } else {
            Some(s)
        }
    }
}

/// The size of a submission's body, wherever it is.
fn body_bytes(s: &Submission) -> usize {
    match &s.spool {
        Some(body) => usize::try_from(body.len()).unwrap_or(usize::MAX),
        None => s.envelope.data.len(),
    }
}

/// Asks the database (`ask`) which of a batch's queue ids it holds, retrying
/// while it is unreachable, up to `deadline`; between attempts `meanwhile` runs
/// (it refuses what queued up behind the batch).
fn resolve(
    mut ask: impl FnMut() -> Result<std::collections::HashSet<String>, CommitError>,
    mut meanwhile: impl FnMut(),
    deadline: Duration,
) -> Option<std::collections::HashSet<String>> {
    let deadline = Instant::now() + deadline;
    loop {
        match ask() {
            Ok(set) => return Some(set),
            Err(e) if Instant::now() >= deadline => {
                error!(error = %e, "cannot learn whether the batch was committed; answering 451");
                return None;
            }
            Err(_) => {
                meanwhile();
                std::thread::sleep(RESOLVE_PAUSE);
            }
        }
    }
}

/// Answers 451 to every submission queued now, without trying to store it: the
/// database is unreachable and the committer is busy learning the fate of a
/// batch, so these would only wait. Nothing of theirs was written.
fn refuse_queued(rx: &Receiver<Submission>, stats: &StageStats) {
    let refused: Vec<_> = rx
        .try_iter()
        .map(|s| {
            // Drops the spool file (if any) with the submission.
            let Submission {
                received_at,
                conn,
                reply,
                ..
            } = s;
            ((new_queue_id(received_at), conn, reply), Err(StoreFailed))
        })
        .collect();
    if refused.is_empty() {
        return;
    }
    debug!(
        messages = refused.len(),
        "database unreachable while a commit's outcome is unknown; answering 451"
    );
    stats
        .failed
        .fetch_add(refused.len() as u64, Ordering::Relaxed);
    answer(refused.into_iter());
}

/// Sends each reactor its results, one wake-up per reactor per batch.
fn answer(
    results: impl Iterator<
        Item = (
            (QueueId, ConnKey, Arc<CompletionSink>),
            Result<QueueId, StoreFailed>,
        ),
    >,
) {
    let mut by_sink: Vec<(Arc<CompletionSink>, Vec<Completion>)> = Vec::new();
    for ((_, conn, reply), result) in results {
        let completion = Completion { conn, result };
        match by_sink
            .iter_mut()
            .find(|(sink, _)| Arc::ptr_eq(sink, &reply))
        {
            Some((_, list)) => list.push(completion),
            None => by_sink.push((reply, vec![completion])),
        }
    }
    for (sink, list) in by_sink {
        sink.deliver(list);
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
pub(crate) mod tests;
