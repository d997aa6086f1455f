//! The embedded store: one SQLite file in WAL mode.
//!
//! Owns: opening the file (creating its directory), the durability pragmas, schema
//! migrations (`schema/sqlite/*.sql`, applied once each, recorded in
//! `schema_migrations`), and writing one batch of messages in one transaction.
//! Must not: be used from more than the committer thread (SQLite has one writer).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::StoreError;
use super::row::MailRow;
use super::url::Synchronous;

/// Schema migrations, in order. Applied ones are recorded by version; a migration
/// is never edited once released, only followed by a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "0001_new_mail",
    include_str!("../../../schema/sqlite/0001_new_mail.sql"),
)];

/// How long a commit waits for a lock held by another process (a consumer running
/// a purge, say) before the batch fails with 451.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const INSERT: &str = r#"INSERT INTO new_mail
  (date, "from", "to", subject, body, charset, mail, spam_score, hash, content_type,
   recipient, has_attach, ip_addr, return_path, is_tls, message_id, reply_to, sender,
   helo, size)
VALUES (?1, ?2, ?3, ?4, ?18, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?2, ?12, ?13, ?14, ?15, ?16, ?17)"#;

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
        // WAL: readers (the applications) never block the writer, and a commit is
        // one sequential append plus one fsync.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous={};",
            synchronous.pragma_value()
        ))
        .map_err(open)?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let migrate = |version, source: rusqlite::Error| StoreError::Migrate {
            version,
            source: Box::new(source),
        };
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    INTEGER PRIMARY KEY,
                   name       TEXT NOT NULL,
                   applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
                 );",
            )
            .map_err(|e| migrate(0, e))?;
        for &(version, name, sql) in MIGRATIONS {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| migrate(version, e))?;
            let applied: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                    [version],
                    |r| r.get(0),
                )
                .map_err(|e| migrate(version, e))?;
            if !applied {
                tx.execute_batch(sql).map_err(|e| migrate(version, e))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                    params![version, name],
                )
                .map_err(|e| migrate(version, e))?;
                tracing::info!(version, name, "schema migration applied");
            }
            tx.commit().map_err(|e| migrate(version, e))?;
        }
        Ok(())
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
        conn.busy_timeout(BUSY_TIMEOUT)?;
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
        tx.commit()
    }
}
