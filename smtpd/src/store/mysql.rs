//! The production store: MySQL or MariaDB through mysql_async.
//!
//! Owns: the connection pool, multi-row prepared INSERTs (a batch that fits one
//! statement is that one statement in autocommit: one round trip, atomic and
//! durable on its own; a larger batch is several inside one transaction: three
//! round trips and more), reconnecting with backoff, and telling a failed commit
//! that certainly did not happen from one that may have. Migrations, only with
//! `--migrate`, and the version check are `schema`'s.
//! Must not: run on an event loop. It runs on the committer thread, driven by that
//! thread's current-thread tokio runtime.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts, Value};
use tokio::time::timeout;
use tracing::{info, warn};

use super::StoreError;
use super::backend::CommitError;
use super::row::MailRow;
use super::schema;
use mailstore::MysqlUrl;

/// Any single database round trip longer than this counts as a failure: the
/// clients are waiting, and a hung server must turn into 451s, not into silence.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per INSERT statement, and bytes per statement (kept well under MySQL's
/// default 64 MiB / MariaDB's 16 MiB `max_allowed_packet`). A batch of up to this
/// many rows is one statement (one round trip); 1,000 busy sessions make batches of
/// ≈ 85–100 (64: ×0.93 of 256 there, 2026-12-04). Each row count is one prepared
/// statement per connection, cached (`stmt_cache`).
const ROWS_PER_INSERT: usize = 128;
const BYTES_PER_INSERT: usize = 4 * 1024 * 1024;
/// A pooled connection that answered within this long is used for a one-statement
/// commit as it is; one idle for longer is pinged first. A statement sent on a
/// connection the server has closed meanwhile (a restart, `wait_timeout`) fails
/// with its outcome unknown (the committer then asks the database for up to 15 s);
/// a failed ping says for certain that nothing was written (an immediate 451).
const FRESH: Duration = Duration::from_millis(100);
/// Connections remembered as fresh (a few per pool; ids change on reconnects).
const FRESH_MAX: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

const COLUMNS: &str = "(date, `from`, `to`, subject, body, charset, mail, spam_score, hash, \
    content_type, recipient, has_attach, ip_addr, return_path, is_tls, message_id, reply_to, \
    sender, helo, size)";
const ROW_PLACEHOLDERS: &str = "(?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Parameters of one row ([`push_row`]).
const VALUES_PER_ROW: usize = 19;

pub struct MysqlStore {
    pool: Pool,
    /// While set and in the future, the database is considered down: batches fail
    /// fast (451) instead of each waiting for a connect timeout.
    down_until: Option<Instant>,
    backoff: Duration,
    /// INSERT statement text by row count (the statement cache is per connection).
    insert_sql: Vec<String>,
    /// When each pooled connection (by server connection id) last answered.
    answered: HashMap<u32, Instant>,
}

impl MysqlStore {
    /// Connects, then migrates (`migrate`) or checks the schema version.
    pub async fn open(url: &MysqlUrl, migrate: bool, pool_max: usize) -> Result<Self, StoreError> {
        let pool = schema::open_mysql(url, migrate, pool_max, ROWS_PER_INSERT + 8).await?;
        Ok(Self {
            pool,
            down_until: None,
            backoff: BACKOFF_MIN,
            insert_sql: (0..=ROWS_PER_INSERT)
                .map(|n| {
                    let rows = vec![ROW_PLACEHOLDERS; n].join(", ");
                    format!("INSERT INTO new_mail {COLUMNS} VALUES {rows}")
                })
                .collect(),
            answered: HashMap::new(),
        })
    }

    /// Writes the batch in one transaction.
    pub async fn insert_batch(&mut self, rows: &[MailRow]) -> Result<(), CommitError> {
        let now = Instant::now();
        if self.down_until.is_some_and(|t| now < t) {
            return Err(CommitError::Down);
        }
        match self.try_insert(rows).await {
            Err(CommitError::Unavailable(e)) => {
                self.down_until = Some(now + self.backoff);
                warn!(error = %e, backoff_ms = self.backoff.as_millis() as u64, "database unavailable");
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Err(CommitError::Unavailable(e))
            }
            other => {
                if other.is_ok() && self.down_until.take().is_some() {
                    info!("database reachable again");
                }
                if other.is_ok() {
                    self.backoff = BACKOFF_MIN;
                }
                other
            }
        }
    }

    async fn try_insert(&mut self, rows: &[MailRow]) -> Result<(), CommitError> {
        let unavailable = |e: String| CommitError::Unavailable(e);
        let mut conn = self.conn().await?;
        let count: usize = rows.iter().map(|r| r.recipients.len()).sum();
        let bytes: usize = rows
            .iter()
            .map(|r| (r.mail.len() + 512).saturating_mul(r.recipients.len()))
            .sum();
        if count <= ROWS_PER_INSERT && (count == 1 || bytes < BYTES_PER_INSERT) {
            return self.insert_one_statement(&mut conn, rows, count).await;
        }
        let mut tx = timeout(OP_TIMEOUT, conn.start_transaction(TxOpts::default()))
            .await
            .map_err(|_| unavailable("BEGIN timed out".into()))?
            .map_err(classify_before_commit)?;
        // Before COMMIT is sent, any failure leaves nothing behind: the server rolls
        // back a transaction whose connection is lost.
        let mut params: Vec<Value> = Vec::new();
        let mut count = 0;
        let mut bytes = 0;
        for row in rows {
            for recipient in &row.recipients {
                push_row(&mut params, row, recipient);
                count += 1;
                bytes += row.mail.len() + 512;
                if count == ROWS_PER_INSERT || bytes >= BYTES_PER_INSERT {
                    self.flush(&mut tx, &mut params, count).await?;
                    count = 0;
                    bytes = 0;
                }
            }
        }
        if count > 0 {
            self.flush(&mut tx, &mut params, count).await?;
        }
        // From here on the outcome may be unknown to us if the reply is lost.
        match timeout(OP_TIMEOUT, tx.commit()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(mysql_async::Error::Server(e))) => Err(CommitError::Rejected(e.to_string())),
            Ok(Err(e)) => Err(CommitError::Ambiguous(e.to_string())),
            Err(_) => Err(CommitError::Ambiguous("COMMIT timed out".into())),
        }
    }

    /// The whole batch as one INSERT in autocommit: committed (and flushed, per the
    /// server's durability settings) when the OK arrives. The session is in
    /// autocommit whatever the server's default (`schema::open_mysql` sets it).
    async fn insert_one_statement(
        &mut self,
        conn: &mut mysql_async::Conn,
        rows: &[MailRow],
        count: usize,
    ) -> Result<(), CommitError> {
        let id = conn.id();
        let fresh = self.answered.get(&id).is_some_and(|t| t.elapsed() < FRESH);
        if !fresh {
            timeout(OP_TIMEOUT, conn.ping())
                .await
                .map_err(|_| CommitError::Unavailable("ping timed out".into()))?
                .map_err(|e| CommitError::Unavailable(e.to_string()))?;
        }
        let sql = self
            .insert_sql
            .get(count)
            .ok_or_else(|| CommitError::Rejected("bad chunk size".into()))?;
        let mut params: Vec<Value> = Vec::with_capacity(count.saturating_mul(VALUES_PER_ROW));
        for row in rows {
            for recipient in &row.recipients {
                push_row(&mut params, row, recipient);
            }
        }
        match timeout(OP_TIMEOUT, conn.exec_drop(sql.as_str(), params)).await {
            Ok(Ok(())) => {
                if self.answered.len() >= FRESH_MAX && !self.answered.contains_key(&id) {
                    self.answered.clear();
                }
                self.answered.insert(id, Instant::now());
                Ok(())
            }
            Ok(Err(mysql_async::Error::Server(e))) => Err(CommitError::Rejected(e.to_string())),
            // Sent, maybe executed: only the database can say.
            Ok(Err(e)) => Err(CommitError::Ambiguous(e.to_string())),
            Err(_) => Err(CommitError::Ambiguous("INSERT timed out".into())),
        }
    }

    /// A pooled connection that goes back to the pool as it is. mysql_async's
    /// default resets a returned connection (`COM_RESET_CONNECTION`): a round trip
    /// per batch, every prepared INSERT dropped (so each batch prepared its
    /// statement again: another round trip and a server-side parse), and the
    /// session's `init` (`time_zone = '+00:00'`) undone, since a reset re-runs only
    /// `setup` commands. The committer changes no session state (PING, BEGIN,
    /// INSERT, COMMIT, SELECT), and a connection returned inside a transaction is still
    /// rolled back by the pool, so nothing needs resetting.
    async fn conn(&self) -> Result<mysql_async::Conn, CommitError> {
        let mut conn = timeout(OP_TIMEOUT, self.pool.get_conn())
            .await
            .map_err(|_| CommitError::Unavailable("connect timed out".into()))?
            .map_err(|e| CommitError::Unavailable(e.to_string()))?;
        conn.reset_connection(false);
        Ok(conn)
    }

    async fn flush(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        params: &mut Vec<Value>,
        count: usize,
    ) -> Result<(), CommitError> {
        let sql = self
            .insert_sql
            .get(count)
            .ok_or_else(|| CommitError::Rejected("bad chunk size".into()))?;
        let values = std::mem::take(params);
        timeout(OP_TIMEOUT, tx.exec_drop(sql.as_str(), values))
            .await
            .map_err(|_| CommitError::Unavailable("INSERT timed out".into()))?
            .map_err(classify_before_commit)
    }

    /// Which of these queue ids are stored: resolves a commit whose outcome was lost.
    pub async fn committed(&mut self, hashes: &[String]) -> Result<HashSet<String>, CommitError> {
        let mut conn = self.conn().await?;
        let mut found = HashSet::new();
        for chunk in hashes.chunks(256) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT DISTINCT hash FROM new_mail WHERE hash IN ({marks})");
            let rows: Vec<String> = timeout(OP_TIMEOUT, conn.exec(sql, chunk.to_vec()))
                .await
                .map_err(|_| CommitError::Unavailable("query timed out".into()))?
                .map_err(|e| CommitError::Unavailable(e.to_string()))?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// One round trip on a pooled connection (for `/readyz`).
    pub async fn ping(&mut self) -> Result<(), String> {
        let mut conn = timeout(OP_TIMEOUT, self.pool.get_conn())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        timeout(OP_TIMEOUT, conn.ping())
            .await
            .map_err(|_| "ping timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    pub async fn close(self) {
        let _ = timeout(Duration::from_secs(2), self.pool.disconnect()).await;
    }
}

fn push_row(params: &mut Vec<Value>, row: &MailRow, recipient: &str) {
    let text = |s: &str| Value::Bytes(s.as_bytes().to_vec());
    params.extend([
        text(&row.date),
        text(&row.from),
        text(row.to_header.as_deref().unwrap_or(recipient)),
        text(&row.subject),
        text(row.body),
        text(&row.charset),
        Value::Bytes(row.mail.clone()),
        text(&row.hash),
        text(&row.content_type),
        text(recipient),
        Value::Int(row.has_attach),
        text(&row.ip_addr),
        text(&row.from),
        Value::Int(i64::from(row.is_tls)),
        text(&row.message_id),
        text(&row.reply_to),
        text(&row.sender),
        text(&row.helo),
        Value::Int(row.size),
    ]);
}

/// A failure before COMMIT was sent: nothing was committed. Server errors are
/// about the data (per-message retry may help); anything else is the connection.
fn classify_before_commit(e: mysql_async::Error) -> CommitError {
    match e {
        mysql_async::Error::Server(e) => CommitError::Rejected(e.to_string()),
        other => CommitError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_statements_have_one_placeholder_per_value() {
        let row_values = VALUES_PER_ROW;
        assert_eq!(ROW_PLACEHOLDERS.matches('?').count(), row_values);
        assert_eq!(COLUMNS.matches(',').count() + 1, row_values + 1); // + spam_score
        let now = std::time::SystemTime::now();
        let envelope = crate::store::stage::tests::envelope(0, &["a@example.com"]);
        let row = MailRow::new(envelope, crate::store::new_queue_id(now), now, "mx.test");
        let mut params = Vec::new();
        push_row(&mut params, &row, "a@example.com");
        assert_eq!(params.len(), row_values);
    }
}
