//! The embedded store: one SQLite file in WAL mode.
//!
//! Owns: writing one batch of messages in one transaction (opening the file and its
//! migrations are `schema`'s).
//! Must not: be used from more than the committer thread (SQLite has one writer).

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use std::path::Path;

use super::StoreError;
use super::row::MailRow;
use super::schema;
use mailstore::Synchronous;

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
        Ok(Self {
            conn: schema::open_sqlite(path, synchronous)?,
        })
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
        tx.commit()
    }
}
