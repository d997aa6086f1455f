//! The storage stage: the only part of smtpd that talks to a database.
//!
//! Owns: committing complete messages (group commit) and answering each one only
//! after its commit; extracting the indexed header fields; the schema migrations.
//! Must not: run on an event loop, or acknowledge anything it has not committed.
//!
//! - `url`: `--store` URLs and the durability setting.
//! - `stage`: the committer thread and its batching.
//! - `backend`: SQLite or MySQL behind one interface; commit failure kinds.
//! - `sqlite`: the embedded SQLite store.
//! - `mysql`: MySQL/MariaDB (mysql_async on the committer's tokio runtime).
//! - [`cache`]: the Redis cache written after each commit (or, in Guerrilla mode,
//!   holding the bodies as part of the commit).
//! - [`retention`]: the background purge of old mail.
//! - [`schema`]: opening either store and its migrations (shared with `outbound`).
//! - `row`: a message's column values and `Received:` header.
//! - `queue_id`: time-ordered unique ids.

use std::path::PathBuf;

mod backend;
pub mod cache;
mod mysql;
mod queue_id;
pub mod retention;
mod row;
pub mod schema;
mod sqlite;
mod stage;
mod url;

pub use queue_id::new_queue_id;
pub use row::MailRow;
pub use stage::{StageConfig, StageStats, StorageStage};
pub use url::{MysqlUrl, StoreUrl, StoreUrlError, Synchronous, SynchronousError};

/// The store cannot be used (at start) or the committer died.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open SQLite database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("SQLite database {path} cannot use WAL mode (journal_mode is {mode})")]
    NotWal { path: PathBuf, mode: String },
    #[error("schema migration {version} failed: {source}")]
    Migrate {
        version: i64,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("MySQL: {0}")]
    Mysql(String),
    #[error(
        "the database schema is at version {found}, this smtpd needs {expected}: \
         start once with --migrate (or apply schema/mysql/*.sql by hand)"
    )]
    SchemaOutdated { found: u32, expected: u32 },
    #[error("Redis: {0}")]
    Redis(String),
    #[error("cannot start the storage runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the committer thread: {0}")]
    Spawn(std::io::Error),
    #[error("the committer thread panicked")]
    CommitterPanicked,
}
