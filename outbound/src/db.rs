//! One connection to the shared database, SQLite or MySQL, behind one small
//! interface: positional `?` statements with plain values, and explicit transactions.
//!
//! Owns: opening the store (through `mailstore::schema`, so both daemons agree on
//! the schema version), converting values, the per-call timeout, reconnecting MySQL.
//! Must not: know the queue's tables (that is `queue`).

use std::time::Duration;

use mailstore::schema;
use mailstore::{OpenError, StoreUrl, Synchronous};
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Pool, Value};
use tokio::time::timeout;

/// Longest any one statement may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// A column or parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Real(r) => Some(*r as i64),
            Self::Text(t) => t.trim().parse().ok(),
            Self::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            Self::Null => None,
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Text(t) => Some(t.clone()),
            Self::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Self::Int(i) => Some(i.to_string()),
            Self::Real(r) => Some(r.to_string()),
            Self::Null => None,
        }
    }
    pub fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Self::Bytes(b) => Some(b),
            Self::Text(t) => Some(t.into_bytes()),
            Self::Null => None,
            other => other.text().map(String::into_bytes),
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// A failed database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("MySQL: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("database call timed out after {0:?}")]
    Timeout(Duration),
}

impl DbError {
    /// InnoDB chose this transaction as a deadlock victim (1213) or gave up
    /// waiting for a row lock (1205): nothing was applied, and the same
    /// transaction run again normally succeeds (what the MySQL manual asks
    /// applications to do).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Mysql(mysql_async::Error::Server(e)) if e.code == 1213 || e.code == 1205)
    }
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Mysql {
        pool: Pool,
        /// One connection held across calls, so that a transaction's statements run
        /// on it; dropped (and replaced on next use) after any error.
        conn: Option<mysql_async::Conn>,
    },
}

impl Db {
    /// Opens the store; SQLite is migrated always (as `smtpd` does), MySQL only with
    /// `migrate` (otherwise its schema version is checked).
    pub async fn open(url: &StoreUrl, migrate: bool) -> Result<Self, OpenError> {
        match url {
            StoreUrl::Sqlite(path) => {
                Ok(Self::Sqlite(schema::open_sqlite(path, Synchronous::Full)?))
            }
            StoreUrl::Mysql(url) => Ok(Self::Mysql {
                pool: schema::open_mysql(url, migrate, 4, 64).await?,
                conn: None,
            }),
        }
    }

    /// `n` connections to one store (for the HTTP API's pool): MySQL shares one
    /// connection pool among them, SQLite opens `n` files handles (migrating once).
    pub async fn open_many(
        url: &StoreUrl,
        migrate: bool,
        n: usize,
    ) -> Result<Vec<Self>, OpenError> {
        let n = n.max(1);
        match url {
            StoreUrl::Sqlite(path) => (0..n)
                .map(|_| Ok(Self::Sqlite(schema::open_sqlite(path, Synchronous::Full)?)))
                .collect(),
            StoreUrl::Mysql(url) => {
                let pool = schema::open_mysql(url, migrate, n, 64).await?;
                Ok((0..n)
                    .map(|_| Self::Mysql {
                        pool: pool.clone(),
                        conn: None,
                    })
                    .collect())
            }
        }
    }

    /// A second connection to the store this one is on (`url`): the relay records
    /// attempts on one while it claims on the other. MySQL: from the same pool;
    /// SQLite: the file opened again.
    pub async fn another(&self, url: &StoreUrl) -> Result<Self, OpenError> {
        match self {
            Self::Mysql { pool, .. } => Ok(Self::Mysql {
                pool: pool.clone(),
                conn: None,
            }),
            Self::Sqlite(_) => Self::open(url, false).await,
        }
    }

    pub fn is_mysql(&self) -> bool {
        matches!(self, Self::Mysql { .. })
    }

    /// `CAST(col AS <text>)` in this dialect: times come back as text either way.
    pub fn as_text(&self, column: &str) -> String {
        match self {
            Self::Sqlite(_) => format!("CAST({column} AS TEXT)"),
            Self::Mysql { .. } => format!("CAST({column} AS CHAR)"),
        }
    }

    /// Runs a statement; returns the number of rows changed.
    pub async fn exec(&mut self, sql: &str, params: Vec<Val>) -> Result<u64, DbError> {
        match self {
            Self::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))? as u64)
            }
            Self::Mysql { pool, conn } => {
                let c = mysql_conn(pool, conn).await?;
                let result = timeout(OP_TIMEOUT, c.exec_iter(sql, to_mysql(params))).await;
                let out = match result {
                    Ok(Ok(r)) => {
                        let n = r.affected_rows();
                        drop(r);
                        Ok(n)
                    }
                    Ok(Err(e)) => Err(DbError::Mysql(e)),
                    Err(_) => Err(DbError::Timeout(OP_TIMEOUT)),
                };
                if out.is_err() {
                    *conn = None;
                }
                out
            }
        }
    }

    /// Runs a query; returns its rows.
    pub async fn query(&mut self, sql: &str, params: Vec<Val>) -> Result<Vec<Vec<Val>>, DbError> {
        match self {
            Self::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        values.push(from_sqlite(row.get_ref(i)?));
                    }
                    out.push(values);
                }
                Ok(out)
            }
            Self::Mysql { pool, conn } => {
                let c = mysql_conn(pool, conn).await?;
                let result: Result<Result<Vec<mysql_async::Row>, _>, _> =
                    timeout(OP_TIMEOUT, c.exec(sql, to_mysql(params))).await;
                match result {
                    Ok(Ok(rows)) => Ok(rows
                        .into_iter()
                        .map(|row| row.unwrap().into_iter().map(from_mysql).collect())
                        .collect()),
                    Ok(Err(e)) => {
                        *conn = None;
                        Err(DbError::Mysql(e))
                    }
                    Err(_) => {
                        *conn = None;
                        Err(DbError::Timeout(OP_TIMEOUT))
                    }
                }
            }
        }
    }

    /// Starts a write transaction (SQLite: IMMEDIATE, so the write lock is taken
    /// now and a concurrent `smtpd` commit waits instead of failing half-way).
    pub async fn begin(&mut self) -> Result<(), DbError> {
        let sql = if self.is_mysql() {
            "START TRANSACTION"
        } else {
            "BEGIN IMMEDIATE"
        };
        self.plain(sql).await
    }

    /// Runs `f` in a transaction: committed when it succeeds, rolled back when it
    /// (or the commit) fails. The one wrapper the stores share.
    pub async fn in_tx<T, E: From<DbError>>(
        &mut self,
        f: impl AsyncFnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin().await?;
        match f(self).await {
            Ok(v) => match self.commit().await {
                Ok(()) => Ok(v),
                Err(e) => {
                    self.rollback().await;
                    Err(e.into())
                }
            },
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    pub async fn commit(&mut self) -> Result<(), DbError> {
        self.plain("COMMIT").await
    }

    /// Abandons a transaction after an error (best effort: a MySQL connection that
    /// failed is dropped, which rolls back by itself).
    pub async fn rollback(&mut self) {
        match self {
            Self::Sqlite(conn) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            Self::Mysql { conn, .. } => {
                if let Some(c) = conn.as_mut()
                    && timeout(OP_TIMEOUT, c.query_drop("ROLLBACK")).await.is_err()
                {
                    *conn = None;
                }
            }
        }
    }

    async fn plain(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Self::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Self::Mysql { pool, conn } => {
                let c = mysql_conn(pool, conn).await?;
                match timeout(OP_TIMEOUT, c.query_drop(sql)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        *conn = None;
                        Err(DbError::Mysql(e))
                    }
                    Err(_) => {
                        *conn = None;
                        Err(DbError::Timeout(OP_TIMEOUT))
                    }
                }
            }
        }
    }

    /// `?, ?, ?` for an IN list of `n` values.
    pub fn placeholders(n: usize) -> String {
        vec!["?"; n.max(1)].join(", ")
    }

    pub async fn close(self) {
        if let Self::Mysql { pool, conn } = self {
            drop(conn);
            let _ = timeout(Duration::from_secs(2), pool.disconnect()).await;
        }
    }
}

/// Tests: runs `f` on a private MariaDB, with its URL and a migrated connection.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub fn on_mariadb(f: impl AsyncFnOnce(StoreUrl, Db)) {
    let server = test_support::services::Mariadb::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url: StoreUrl = server.url().parse().unwrap();
        let db = Db::open(&url, true).await.unwrap();
        f(url, db).await;
    });
}

async fn mysql_conn<'a>(
    pool: &Pool,
    conn: &'a mut Option<mysql_async::Conn>,
) -> Result<&'a mut mysql_async::Conn, DbError> {
    if conn.is_none() {
        let c = timeout(OP_TIMEOUT, pool.get_conn())
            .await
            .map_err(|_| DbError::Timeout(OP_TIMEOUT))??;
        *conn = Some(c);
    }
    conn.as_mut().ok_or(DbError::Timeout(Duration::ZERO))
}

fn to_sqlite(v: &Val) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Val::Null => V::Null,
        Val::Int(i) => V::Integer(*i),
        Val::Real(r) => V::Real(*r),
        Val::Text(t) => V::Text(t.clone()),
        Val::Bytes(b) => V::Blob(b.clone()),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Val {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => Val::Null,
        V::Integer(i) => Val::Int(i),
        V::Real(r) => Val::Real(r),
        V::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => Val::Bytes(b.to_vec()),
    }
}

fn to_mysql(params: Vec<Val>) -> Params {
    if params.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        params
            .into_iter()
            .map(|v| match v {
                Val::Null => Value::NULL,
                Val::Int(i) => Value::Int(i),
                Val::Real(r) => Value::Double(r),
                Val::Text(t) => Value::Bytes(t.into_bytes()),
                Val::Bytes(b) => Value::Bytes(b),
            })
            .collect(),
    )
}

fn from_mysql(v: Value) -> Val {
    match v {
        Value::NULL => Val::Null,
        Value::Int(i) => Val::Int(i),
        Value::UInt(u) => Val::Int(i64::try_from(u).unwrap_or(i64::MAX)),
        Value::Float(f) => Val::Real(f64::from(f)),
        Value::Double(d) => Val::Real(d),
        Value::Bytes(b) => Val::Bytes(b),
        Value::Date(y, mo, d, h, mi, s, us) => Val::Text(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:03}",
            us / 1000
        )),
        Value::Time(neg, d, h, m, s, us) => Val::Text(format!(
            "{}{}:{m:02}:{s:02}.{us:06}",
            if neg { "-" } else { "" },
            u32::from(h) + d * 24
        )),
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    fn server(code: u16) -> DbError {
        DbError::Mysql(mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "x".into(),
            state: "40001".into(),
        }))
    }

    #[test]
    fn only_deadlocks_and_lock_wait_timeouts_are_retried() {
        assert!(server(1213).is_retryable());
        assert!(server(1205).is_retryable());
        assert!(!server(1062).is_retryable());
        assert!(!DbError::Timeout(Duration::from_secs(1)).is_retryable());
    }
}
