//! The databases the committer can write to, behind one small interface.
//!
//! Owns: dispatch between SQLite (synchronous, on the committer thread) and MySQL
//! (async, on the committer's tokio runtime), and the classification of a failed
//! commit. Must not: decide what the client is told; the stage does that.

use std::collections::HashSet;

use tokio::runtime::Runtime;

use super::mysql::MysqlStore;
use super::row::MailRow;
use super::sqlite::SqliteStore;

/// Why a batch was not (or may not have been) committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The database refused the statement (a constraint, a trigger, a value): not
    /// committed, and the other messages may succeed on their own.
    Rejected(String),
    /// The database could not be reached or the connection broke before COMMIT was
    /// sent: not committed.
    Unavailable(String),
    /// The database is known to be down (a recent attempt failed and the backoff
    /// has not elapsed): not tried, not committed. Logged quietly: the failure that
    /// started the backoff was logged already.
    Down,
    /// COMMIT was sent but its answer was lost: maybe committed. Resolved by asking
    /// the database which queue ids it has.
    Ambiguous(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected(e) => write!(f, "rejected: {e}"),
            Self::Unavailable(e) => write!(f, "unavailable: {e}"),
            Self::Down => write!(f, "database down, waiting before the next attempt"),
            Self::Ambiguous(e) => write!(f, "outcome unknown: {e}"),
        }
    }
}

pub enum Backend {
    Sqlite(SqliteStore),
    Mysql(MysqlStore),
}

impl Backend {
    pub fn insert_batch(&mut self, rt: &Runtime, rows: &[MailRow]) -> Result<(), CommitError> {
        match self {
            // SQLite reports COMMIT's outcome reliably (it is a local call).
            Self::Sqlite(s) => s
                .insert_batch(rows)
                .map_err(|e| CommitError::Rejected(e.to_string())),
            Self::Mysql(m) => rt.block_on(m.insert_batch(rows)),
        }
    }

    /// Which of these queue ids are committed (after an ambiguous failure).
    pub fn committed(
        &mut self,
        rt: &Runtime,
        hashes: &[String],
    ) -> Result<HashSet<String>, CommitError> {
        match self {
            Self::Sqlite(s) => s
                .committed(hashes)
                .map_err(|e| CommitError::Unavailable(e.to_string())),
            Self::Mysql(m) => rt.block_on(m.committed(hashes)),
        }
    }

    /// Whether the database answers (for `/readyz` while no mail comes).
    pub fn ping(&mut self, rt: &Runtime) -> Result<(), String> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Mysql(m) => rt.block_on(m.ping()),
        }
    }

    pub fn close(self, rt: &Runtime) {
        if let Self::Mysql(m) = self {
            rt.block_on(m.close());
        }
    }
}
