//! The storage stage: the only part of smtpd that talks to a database.
//!
//! Owns: committing complete messages (group commit) and answering each one only
//! after its commit; extracting the indexed header fields; the schema migrations.
//! Must not: run on an event loop, or acknowledge anything it has not committed.
//!
//! - `stage`: the committer thread and its batching.
//! - `backend`: SQLite or MySQL behind one interface; commit failure kinds.
//! - `sqlite`: the embedded SQLite store.
//! - `mysql`: MySQL/MariaDB (mysql_async on the committer's tokio runtime).
//! - [`cache`]: the Redis cache written after each commit (or, in Guerrilla mode,
//!   holding the bodies as part of the commit).
//! - [`retention`]: the background purge of old mail.
//! - [`schema`]: opening either store and its migrations, from the `mailstore`
//!   crate (shared with `outbound`), re-exported here with the store URLs.
//! - `row`: a message's column values and `Received:` header.
//! - `plain_headers`: the indexed fields of a plain header section, without mail-parser.
//! - `queue_id`: time-ordered unique ids.
//! - [`read`]: the `--http` side's own connections: listing, reading, deleting.

mod backend;
pub mod cache;
mod mysql;
mod plain_headers;
mod queue_id;
pub mod read;
pub mod retention;
mod row;
mod sqlite;
mod stage;

pub use mailstore::schema;
pub use mailstore::{MysqlUrl, OpenError, StoreUrl, StoreUrlError, Synchronous, SynchronousError};
pub use queue_id::new_queue_id;
pub use row::MailRow;
pub use stage::{StageConfig, StageStats, StorageStage};

/// The store cannot be used (at start) or the committer died.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be opened or migrated.
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("cannot start the storage runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the committer thread: {0}")]
    Spawn(std::io::Error),
    #[error("the committer thread panicked")]
    CommitterPanicked,
}
