//! The storage stage: the committer thread between the reactors and the database.
//!
//! Owns: group commit. Submissions arrive over a bounded channel (when it is full,
//! reactors hold messages back and stop reading: back-pressure, not memory); the
//! committer takes the first, waits up to `batch_max_delay` for more (up to
//! `batch_max_messages`), writes them all in one transaction, and only after COMMIT
//! returns sends each reactor its results, waking it once per batch.
//! Must not: answer anything before the commit, or stop on a failed commit: a
//! failure is answered `451 4.3.0` for the messages it concerns and the next batch
//! tries again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tracing::{debug, error, warn};

use super::StoreError;
use super::queue_id::new_queue_id;
use super::row::MailRow;
use super::sqlite::SqliteStore;
use super::url::{StoreUrl, Synchronous};
use crate::handoff::{Completion, CompletionSink, ConnKey, QueueId, StoreFailed, Submission};

/// How the stage batches and where it writes.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// A batch closes at this many messages...
    pub batch_max_messages: usize,
    /// ...or this long after its first message arrived.
    pub batch_max_delay: Duration,
    /// Submissions that may wait for the committer.
    pub queue_capacity: usize,
    /// For the `Received:` header and generated Message-IDs.
    pub hostname: String,
    pub synchronous: Synchronous,
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
}

/// The running stage.
pub struct StorageStage {
    tx: Sender<Submission>,
    thread: JoinHandle<()>,
    stats: Arc<StageStats>,
}

impl StorageStage {
    /// Opens the store on the calling thread (so a store that cannot be opened
    /// fails the start, not the first message) and starts the committer.
    pub fn start(url: &StoreUrl, config: StageConfig) -> Result<Self, StoreError> {
        let store = match url {
            StoreUrl::Sqlite(path) => SqliteStore::open(path, config.synchronous)?,
        };
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let stats = Arc::new(StageStats::default());
        let committer = Committer {
            store,
            rx,
            config,
            stats: Arc::clone(&stats),
        };
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || committer.run())
            .map_err(StoreError::Spawn)?;
        Ok(Self { tx, thread, stats })
    }

    /// Where reactors send complete messages.
    pub fn sender(&self) -> Sender<Submission> {
        self.tx.clone()
    }

    pub fn stats(&self) -> Arc<StageStats> {
        Arc::clone(&self.stats)
    }

    /// Commits and answers everything already submitted, then stops. Call after
    /// every other sender is gone (the reactors have exited).
    pub fn join(self) -> Result<(), StoreError> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| StoreError::CommitterPanicked)
    }
}

struct Committer {
    store: SqliteStore,
    rx: Receiver<Submission>,
    config: StageConfig,
    stats: Arc<StageStats>,
}

impl Committer {
    fn run(mut self) {
        let max = self.config.batch_max_messages.max(1);
        let mut batch: Vec<Submission> = Vec::with_capacity(max);
        // Ends when every sender is gone and the queue is empty.
        while let Ok(first) = self.rx.recv() {
            let deadline = Instant::now() + self.config.batch_max_delay;
            batch.push(first);
            while batch.len() < max {
                match self.rx.recv_deadline(deadline) {
                    Ok(s) => batch.push(s),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.commit(&mut batch);
        }
        debug!("storage stage drained");
    }

    fn commit(&mut self, batch: &mut Vec<Submission>) {
        let mut waiting: Vec<(QueueId, ConnKey, Arc<CompletionSink>)> =
            Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for Submission {
            envelope,
            received_at,
            conn,
            reply,
        } in batch.drain(..)
        {
            let id = new_queue_id(received_at);
            rows.push(MailRow::new(
                envelope,
                id,
                received_at,
                &self.config.hostname,
            ));
            waiting.push((id, conn, reply));
        }
        let results: Vec<Result<QueueId, StoreFailed>> = match self.store.insert_batch(&rows) {
            Ok(()) => waiting.iter().map(|(id, _, _)| Ok(*id)).collect(),
            Err(e) if rows.len() == 1 => {
                error!(error = %e, "commit failed; answering 451");
                vec![Err(StoreFailed)]
            }
            Err(e) => {
                // One bad message must not cost the others their delivery: retry
                // each on its own (rare, so the extra fsyncs do not matter).
                warn!(error = %e, messages = rows.len(), "batch commit failed; retrying one by one");
                rows.iter()
                    .zip(&waiting)
                    .map(|(row, (id, _, _))| {
                        match self.store.insert_batch(std::slice::from_ref(row)) {
                            Ok(()) => Ok(*id),
                            Err(e) => {
                                error!(error = %e, id = %id, "commit failed; answering 451");
                                Err(StoreFailed)
                            }
                        }
                    })
                    .collect()
            }
        };
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        if ok > 0 {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.messages.fetch_add(ok, Ordering::Relaxed);
        self.stats
            .failed
            .fetch_add(results.len() as u64 - ok, Ordering::Relaxed);
        answer(waiting.into_iter().zip(results));
    }
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
mod tests;
