//! The database `smtpd` and `outbound` share: the public schema (`schema/sqlite/*.sql`,
//! `schema/mysql/*.sql`, documented in `schema/README.md`), its migrations, the
//! spelling of store URLs, and how a connection to either store is opened.
//!
//! Both daemons (and any tool that reads the store) link this crate and nothing of
//! each other, so they agree on one schema version for one database.
//!
//! - [`url`]: `--store` URLs (`sqlite:PATH`, `mysql://…`) and SQLite's durability
//!   setting. Opens nothing.
//! - [`redis_target`]: Redis URLs (one server or a Redis Cluster, TCP or TLS) and
//!   connections to either.
//! - [`schema`]: opening a store (WAL and durability for SQLite, UTC sessions for
//!   MySQL) and applying or checking the migrations.
//!
//! Must not: know what the tables are used for (that is each daemon's business).

use std::path::PathBuf;

pub mod redis_target;
pub mod schema;
pub mod url;

pub use redis_target::{RedisConn, RedisTarget, RedisUrlError};
pub use url::{
    MysqlTls, MysqlUrl, SslMode, StoreUrl, StoreUrlError, Synchronous, SynchronousError,
};

/// A store that cannot be opened, or whose schema cannot be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
        "the database schema is at version {found}, this build needs {expected}: \
         start once with --migrate (or apply schema/mysql/*.sql by hand)"
    )]
    SchemaOutdated { found: u32, expected: u32 },
}

impl OpenError {
    /// Whether SQLite refused a step because another connection held a lock: worth
    /// retrying, unlike every other failure here.
    pub fn is_busy(&self) -> bool {
        let sqlite = match self {
            OpenError::Open { source, .. } => Some(source),
            OpenError::Migrate { source, .. } => source.downcast_ref::<rusqlite::Error>(),
            _ => None,
        };
        matches!(
            sqlite.and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}
