//! The recorder: writes the dispatcher's finished attempts (queue rows, delivery
//! log, DSNs, suppressions) on a database connection of its own, while the
//! dispatcher goes on claiming on its connection.
//!
//! Why: with one connection the dispatcher waited for each outcome transaction
//! (a commit, an fsync with `innodb_flush_log_at_trx_commit = 1`) before it could
//! claim again, and for each claim before it could record: the two commits took
//! turns, and the workers ran dry between them. Run side by side, a claim and a
//! record commit together (InnoDB groups them into one log flush).
//!
//! Owns: one record at a time (a [`Flush`] in a task of its own), retried until it
//! lands, as the dispatcher always did (deliveries carry on meanwhile; leases are
//! renewed by the heartbeat); how many attempts it is writing, so the dispatcher
//! counts them against `relay.max_in_flight`; waiting for it to finish before the
//! dispatcher returns its leases at shutdown (a row released before its outcome
//! is written would be sent again).
//! Must not: decide outcomes (the dispatcher does) or know SQL (`queue` does).

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::warn;

use crate::queue::{Attempt, NewRow, Queue};

/// Wait after a failed record before the first retry; doubled up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What one transaction records: attempts and what they called for.
#[derive(Default)]
pub struct Flush {
    pub attempts: Vec<Attempt>,
    /// Campaign of each attempt's row (queue id → campaign id), for the log.
    pub campaign_of: HashMap<i64, i64>,
    /// DSNs to queue.
    pub new_rows: Vec<NewRow>,
    /// Addresses to suppress, with the reason.
    pub suppressions: Vec<(String, String)>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty() && self.new_rows.is_empty() && self.suppressions.is_empty()
    }
}

/// The connection, idle or lent to the task writing one [`Flush`].
enum State {
    Idle(Queue),
    /// A record under way, of this many attempts; the task hands the connection
    /// back when it is done.
    Writing(JoinHandle<Queue>, usize),
    /// Only between taking the connection out and putting it back.
    Gone,
}

pub struct Recorder {
    node: String,
    instance: String,
    state: State,
}

impl Recorder {
    /// Records as `node`'s process `instance` (only rows still leased to it).
    pub fn new(queue: Queue, node: &str, instance: &str) -> Self {
        Self {
            node: node.to_owned(),
            instance: instance.to_owned(),
            state: State::Idle(queue),
        }
    }

    /// Whether a record is under way (a new one must wait for it).
    pub fn busy(&self) -> bool {
        matches!(self.state, State::Writing(..))
    }

    /// Attempts being written: finished, but their rows still leased.
    pub fn writing(&self) -> usize {
        match self.state {
            State::Writing(_, n) => n,
            _ => 0,
        }
    }

    /// Starts writing `flush`; when busy (or empty), hands it back instead.
    pub fn start(&mut self, flush: Flush) -> Result<(), Flush> {
        if flush.is_empty() {
            return Ok(());
        }
        let queue = match std::mem::replace(&mut self.state, State::Gone) {
            State::Idle(q) => q,
            other => {
                self.state = other;
                return Err(flush);
            }
        };
        let rows = flush.attempts.len();
        let (node, instance) = (self.node.clone(), self.instance.clone());
        let task = tokio::spawn(record(queue, node, instance, flush));
        self.state = State::Writing(task, rows);
        Ok(())
    }

    /// Waits for the record under way (at once when there is none): after this
    /// its attempts are in the database. Cancel-safe: dropped unfinished, the
    /// record goes on and the next call waits for it again.
    pub async fn finished(&mut self) {
        if let State::Writing(task, _) = &mut self.state {
            let queue = match task.await {
                Ok(q) => q,
                // A panic in the record is a bug: let it end the process as it did
                // when the dispatcher recorded itself (the rows' leases expire and
                // they are retried, never lost).
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: only when the runtime shuts down.
                Err(e) => {
                    warn!(error = %e, "recording task cancelled");
                    self.state = State::Gone;
                    return;
                }
            };
            self.state = State::Idle(queue);
        }
    }

    /// Writes `flush` now, after the record under way, and waits for both.
    pub async fn write_all(&mut self, flush: Flush) {
        self.finished().await;
        if self.start(flush).is_ok() {
            self.finished().await;
        }
    }

    /// Waits for the record under way and closes the connection.
    pub async fn close(mut self) {
        self.finished().await;
        if let State::Idle(q) = self.state {
            q.close().await;
        }
    }
}

/// Writes `flush` until it lands; hands the connection back.
async fn record(mut queue: Queue, node: String, instance: String, flush: Flush) -> Queue {
    // Recording must not be lost: retry until it lands.
    let mut wait = RETRY_FIRST;
    loop {
        match queue
            .record(
                &node,
                &instance,
                &flush.attempts,
                &flush.campaign_of,
                &flush.new_rows,
                &flush.suppressions,
            )
            .await
        {
            Ok(ours) => {
                let lost = (flush.attempts.len() as u64).saturating_sub(ours);
                if lost > 0 {
                    warn!(
                        rows = lost,
                        "results recorded in the log only: the lease had passed to another node"
                    );
                }
                return queue;
            }
            Err(e) => {
                warn!(error = %e, rows = flush.attempts.len(), "recording attempts failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}
