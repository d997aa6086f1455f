//! Reading and deleting stored mail for `smtpd --http`.
//!
//! Owns: the HTTP side's own connections (SQLite: read-only connections to the WAL
//! file, which never take the write lock, plus one read-write connection for the
//! two writes the API makes, `seen` and DELETE; MySQL: a small pool of its own), the
//! queries of the mailbox API, and reading bodies from Redis in Guerrilla mode.
//! Must not: share a connection with the committer, or hold a transaction open
//! across an await.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Row, Value};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::time::timeout;

use super::cache::CacheConfig;
use super::schema;
use super::sqlite::SqliteStore;
use mailstore::StoreUrl;

/// Read-only SQLite connections of the HTTP side (WAL readers run in parallel).
const SQLITE_READERS: usize = 2;
/// MySQL connections of the HTTP side.
const MYSQL_POOL_MAX: usize = 4;
/// Any database or Redis round trip of a request longer than this is a 503.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows of one message read at once (its recipients; smtpd accepts at most
/// `limits.max_recipients` per message).
pub const MAX_ROWS_PER_HASH: usize = 10_000;
/// The list columns, in the order [`row_item`] reads them.
const ITEM_COLUMNS_SQLITE: &str =
    r#"mail_id, hash, recipient, date, "from", subject, size, has_attach, seen"#;
const ITEM_COLUMNS_MYSQL: &str = "mail_id, hash, recipient, \
    DATE_FORMAT(date, '%Y-%m-%d %H:%i:%s'), `from`, subject, size, has_attach, seen";

/// One `new_mail` row as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailItem {
    /// The row (0 in an event built from what the committer announced, which
    /// knows no row ids; nothing uses it there).
    pub mail_id: i64,
    /// The queue id.
    pub hash: String,
    pub recipient: String,
    /// UTC `YYYY-MM-DD HH:MM:SS`.
    pub date: String,
    /// The envelope sender.
    pub from: String,
    pub subject: String,
    pub size: i64,
    /// Number of attachments.
    pub has_attach: i64,
    pub seen: bool,
}

/// A row with its message.
#[derive(Debug, Clone)]
pub struct StoredMail {
    pub item: MailItem,
    /// The message as stored (`Received:` line + the message as received); `None`
    /// when its body lived in Redis and has expired.
    pub mail: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database: {0}")]
    Db(String),
    #[error("Redis: {0}")]
    Redis(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.to_string())
    }
}

impl From<mysql_async::Error> for ReadError {
    fn from(e: mysql_async::Error) -> Self {
        Self::Db(e.to_string())
    }
}

/// The HTTP side's view of the store.
pub struct MailReader {
    db: Db,
    redis: Option<RedisReader>,
}

enum Db {
    Sqlite {
        readers: Vec<Arc<Mutex<Connection>>>,
        next: AtomicUsize,
        writer: Arc<Mutex<Connection>>,
    },
    Mysql(Pool),
}

struct RedisReader {
    target: mailstore::RedisTarget,
    conn: tokio::sync::Mutex<Option<mailstore::RedisConn>>,
    prefix: String,
}

impl MailReader {
    /// Opens the HTTP side's connections (the committer has opened and migrated
    /// the store already).
    pub async fn open(url: &StoreUrl, cache: Option<&CacheConfig>) -> Result<Self, ReadError> {
        let db = match url {
            StoreUrl::Sqlite(path) => {
                let mut readers = Vec::with_capacity(SQLITE_READERS);
                for _ in 0..SQLITE_READERS {
                    readers.push(Arc::new(Mutex::new(open_sqlite_reader(path)?)));
                }
                Db::Sqlite {
                    readers,
                    next: AtomicUsize::new(0),
                    writer: Arc::new(Mutex::new(SqliteStore::open_side_connection(path)?)),
                }
            }
            StoreUrl::Mysql(url) => Db::Mysql(
                schema::open_mysql(url, false, MYSQL_POOL_MAX, 16)
                    .await
                    .map_err(|e| ReadError::Db(e.to_string()))?,
            ),
        };
        let redis = match cache {
            Some(c) => Some(RedisReader {
                target: c.target().map_err(ReadError::Redis)?,
                conn: tokio::sync::Mutex::new(None),
                prefix: c.key_prefix.clone(),
            }),
            None => None,
        };
        Ok(Self { db, redis })
    }

    /// Up to `limit` rows of `recipient`, newest first, after (older than) the row
    /// of message `after` (a queue id) in the same mailbox. `Ok(None)` when `after`
    /// is not in it.
    pub async fn list(
        &self,
        recipient: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<MailItem>>, ReadError> {
        let recipient = recipient.to_owned();
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match &self.db {
            Db::Sqlite { .. } => {
                self.sqlite_read(move |c| {
                    let cursor = match after {
                        None => None,
                        Some(hash) => match c
                            .prepare_cached(
                                "SELECT date, mail_id FROM new_mail WHERE hash = ?1 AND recipient = ?2",
                            )?
                            .query_row(rusqlite::params![hash, recipient], |r| {
                                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                            })
                            .optional()?
                        {
                            Some(cursor) => Some(cursor),
                            None => return Ok(None),
                        },
                    };
                    let mut items = Vec::new();
                    match cursor {
                        None => {
                            let mut q = c.prepare_cached(&format!(
                                "SELECT {ITEM_COLUMNS_SQLITE} FROM new_mail WHERE recipient = ?1 \
                                 ORDER BY date DESC, mail_id DESC LIMIT ?2"
                            ))?;
                            let rows =
                                q.query_map(rusqlite::params![recipient, limit], sqlite_item)?;
                            for r in rows {
                                items.push(r?);
                            }
                        }
                        Some((date, id)) => {
                            // `date <= ?` is the index range (recipient, date); the
                            // rest orders ties by mail_id (in the index too).
                            let mut q = c.prepare_cached(&format!(
                                "SELECT {ITEM_COLUMNS_SQLITE} FROM new_mail WHERE recipient = ?1 \
                                 AND date <= ?2 AND (date < ?2 OR mail_id < ?3) \
                                 ORDER BY date DESC, mail_id DESC LIMIT ?4"
                            ))?;
                            let rows = q.query_map(
                                rusqlite::params![recipient, date, id, limit],
                                sqlite_item,
                            )?;
                            for r in rows {
                                items.push(r?);
                            }
                        }
                    }
                    Ok(Some(items))
                })
                .await
            }
            Db::Mysql(pool) => {
                let mut conn = mysql_conn(pool).await?;
                let cursor = match after {
                    None => None,
                    Some(hash) => {
                        let cursor: Option<(String, i64)> = mysql_op(conn.exec_first(
                            "SELECT DATE_FORMAT(date, '%Y-%m-%d %H:%i:%s'), mail_id FROM new_mail \
                             WHERE hash = ? AND recipient = ?",
                            (hash, recipient.as_str()),
                        ))
                        .await?;
                        match cursor {
                            Some(c) => Some(c),
                            None => return Ok(None),
                        }
                    }
                };
                let rows: Vec<Row> = match cursor {
                    None => {
                        mysql_op(conn.exec(
                            format!(
                                "SELECT {ITEM_COLUMNS_MYSQL} FROM new_mail WHERE recipient = ? \
                                 ORDER BY date DESC, mail_id DESC LIMIT ?"
                            ),
                            (recipient.as_str(), limit),
                        ))
                        .await?
                    }
                    Some((date, id)) => {
                        mysql_op(conn.exec(
                            format!(
                                "SELECT {ITEM_COLUMNS_MYSQL} FROM new_mail WHERE recipient = ? \
                                 AND date <= ? AND (date < ? OR mail_id < ?) \
                                 ORDER BY date DESC, mail_id DESC LIMIT ?"
                            ),
                            (recipient.as_str(), &date, &date, id, limit),
                        ))
                        .await?
                    }
                };
                rows.into_iter()
                    .map(|r| mysql_item(r, 0))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
        }
    }

    /// The row `(hash, recipient)`: what an arrival event shows.
    pub async fn item_by_hash(
        &self,
        hash: &str,
        recipient: &str,
    ) -> Result<Option<MailItem>, ReadError> {
        let (hash, recipient) = (hash.to_owned(), recipient.to_owned());
        match &self.db {
            Db::Sqlite { .. } => {
                self.sqlite_read(move |c| {
                    Ok(c.prepare_cached(&format!(
                        "SELECT {ITEM_COLUMNS_SQLITE} FROM new_mail WHERE hash = ?1 AND recipient = ?2"
                    ))?
                    .query_row([hash, recipient], sqlite_item)
                    .optional()?)
                })
                .await
            }
            Db::Mysql(pool) => {
                let mut conn = mysql_conn(pool).await?;
                let row: Option<Row> = mysql_op(conn.exec_first(
                    format!(
                        "SELECT {ITEM_COLUMNS_MYSQL} FROM new_mail WHERE hash = ? AND recipient = ?"
                    ),
                    (hash, recipient),
                ))
                .await?;
                row.map(|r| mysql_item(r, 0)).transpose()
            }
        }
    }

    /// The rows of message `hash` (one per recipient, at most [`MAX_ROWS_PER_HASH`]).
    pub async fn items_of(&self, hash: &str) -> Result<Vec<MailItem>, ReadError> {
        let hash = hash.to_owned();
        match &self.db {
            Db::Sqlite { .. } => {
                self.sqlite_read(move |c| {
                    let mut q = c.prepare_cached(&format!(
                        "SELECT {ITEM_COLUMNS_SQLITE} FROM new_mail WHERE hash = ?1 LIMIT {MAX_ROWS_PER_HASH}"
                    ))?;
                    let rows = q.query_map([hash], sqlite_item)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
            }
            Db::Mysql(pool) => {
                let mut conn = mysql_conn(pool).await?;
                let rows: Vec<Row> = mysql_op(conn.exec(
                    format!(
                        "SELECT {ITEM_COLUMNS_MYSQL} FROM new_mail WHERE hash = ? LIMIT {MAX_ROWS_PER_HASH}"
                    ),
                    (hash,),
                ))
                .await?;
                rows.into_iter().map(|r| mysql_item(r, 0)).collect()
            }
        }
    }

    /// The row `mail_id` with its message (from Redis when the row says
    /// `body = 'redis'`).
    pub async fn get(&self, mail_id: i64) -> Result<Option<StoredMail>, ReadError> {
        let found: Option<(MailItem, String, Vec<u8>)> = match &self.db {
            Db::Sqlite { .. } => {
                self.sqlite_read(move |c| {
                    Ok(c.prepare_cached(&format!(
                        "SELECT {ITEM_COLUMNS_SQLITE}, body, mail FROM new_mail WHERE mail_id = ?1"
                    ))?
                    .query_row([mail_id], |r| Ok((sqlite_item(r)?, r.get(9)?, r.get(10)?)))
                    .optional()?)
                })
                .await?
            }
            Db::Mysql(pool) => {
                let mut conn = mysql_conn(pool).await?;
                let row: Option<Row> = mysql_op(conn.exec_first(
                    format!(
                        "SELECT {ITEM_COLUMNS_MYSQL}, body, mail FROM new_mail WHERE mail_id = ?"
                    ),
                    (mail_id,),
                ))
                .await?;
                match row {
                    None => None,
                    Some(mut r) => {
                        let body = bytes_at(&mut r, 9);
                        let mail = bytes_at(&mut r, 10);
                        Some((
                            mysql_item(r, 0)?,
                            String::from_utf8_lossy(&body).into_owned(),
                            mail,
                        ))
                    }
                }
            }
        };
        let Some((item, body, mail)) = found else {
            return Ok(None);
        };
        let mail = if body == "redis" {
            match &self.redis {
                Some(r) => r.body(&item.hash).await?,
                None => None,
            }
        } else {
            Some(mail)
        };
        Ok(Some(StoredMail { item, mail }))
    }

    /// Marks the row seen.
    pub async fn mark_seen(&self, mail_id: i64) -> Result<(), ReadError> {
        const SQL: &str = "UPDATE new_mail SET seen = 1 WHERE mail_id = ? AND seen = 0";
        match &self.db {
            Db::Sqlite { writer, .. } => {
                on_conn(Arc::clone(writer), move |c| {
                    c.prepare_cached(SQL)?.execute([mail_id])?;
                    Ok(())
                })
                .await
            }
            Db::Mysql(pool) => {
                let mut conn = mysql_conn(pool).await?;
                mysql_op(conn.exec_drop(SQL, (mail_id,))).await
            }
        }
    }

    /// Deletes the row, then its Redis traces: the entry in the recipient's inbox
    /// list, and the cached body once no row of that message is left.
    pub async fn delete(&self, item: &MailItem) -> Result<(), ReadError> {
        const DELETE: &str = "DELETE FROM new_mail WHERE mail_id = ?";
        const LEFT: &str = "SELECT COUNT(*) FROM new_mail WHERE hash = ?";
        let mail_id = item.mail_id;
        let hash = item.hash.clone();
        let left: i64 = match &self.db {
            Db::Sqlite { writer, .. } => {
                on_conn(Arc::clone(writer), move |c| {
                    c.prepare_cached(DELETE)?.execute([mail_id])?;
                    Ok(c.prepare_cached(LEFT)?.query_row([hash], |r| r.get(0))?)
                })
                .await?
            }
            Db::Mysql(pool) => {
                let mut conn = mysql_conn(pool).await?;
                mysql_op(conn.exec_drop(DELETE, (mail_id,))).await?;
                mysql_op(conn.exec_first::<i64, _, _>(LEFT, (hash,)))
                    .await?
                    .unwrap_or(0)
            }
        };
        if let Some(r) = &self.redis {
            r.forget(&item.hash, &item.recipient, left == 0).await?;
        }
        Ok(())
    }

    async fn sqlite_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let Db::Sqlite { readers, next, .. } = &self.db else {
            return Err(ReadError::Db("not SQLite".into()));
        };
        let i = next.fetch_add(1, Ordering::Relaxed) % readers.len().max(1);
        let conn = readers
            .get(i)
            .cloned()
            .ok_or_else(|| ReadError::Db("no reader".into()))?;
        on_conn(conn, f).await
    }
}

impl RedisReader {
    async fn conn(&self) -> Result<mailstore::RedisConn, ReadError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .target
            .connect(OP_TIMEOUT)
            .await
            .map_err(|e| ReadError::Redis(e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `groups` (one key each, see [`mailstore::RedisConn::run_groups`]).
    async fn run(&self, groups: &[redis::Pipeline]) -> Result<Vec<redis::Value>, ReadError> {
        let mut conn = self.conn().await?;
        let result = timeout(OP_TIMEOUT, conn.run_groups(groups))
            .await
            .map_err(|_| ReadError::Redis("timed out".into()))
            .and_then(|r| r.map_err(|e| ReadError::Redis(e.to_string())));
        if result.is_err() {
            // Reconnect next time.
            *self.conn.lock().await = None;
        }
        result
    }

    /// `<prefix>mail:<hash>`, gunzipped when the cache compressed it.
    async fn body(&self, hash: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(format!("{}mail:{hash}", self.prefix));
        let replies = self.run(&[pipe]).await?;
        let value: Option<Vec<u8>> = match replies.into_iter().next() {
            Some(v) => redis::from_redis_value(v).map_err(|e| ReadError::Redis(e.to_string()))?,
            None => None,
        };
        Ok(value.map(|v| {
            if v.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::with_capacity(v.len() * 3);
                match flate2::read::GzDecoder::new(&v[..]).read_to_end(&mut out) {
                    Ok(_) => out,
                    Err(_) => v,
                }
            } else {
                v
            }
        }))
    }

    async fn forget(&self, hash: &str, recipient: &str, body: bool) -> Result<(), ReadError> {
        // Two keys, two groups: they may live in different slots of a cluster.
        let mut inbox = redis::pipe();
        inbox
            .cmd("LREM")
            .arg(format!("{}inbox:{recipient}", self.prefix))
            .arg(0)
            .arg(hash);
        let mut groups = vec![inbox];
        if body {
            let mut mail = redis::pipe();
            mail.cmd("DEL").arg(format!("{}mail:{hash}", self.prefix));
            groups.push(mail);
        }
        self.run(&groups).await.map(|_| ())
    }
}

fn open_sqlite_reader(path: &Path) -> Result<Connection, ReadError> {
    let path: PathBuf = path.to_owned();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(schema::SQLITE_BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Runs `f` on the connection on a blocking thread (SQLite calls block).
async fn on_conn<T: Send + 'static>(
    conn: Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(move || {
        let c = conn.lock().map_err(|_| ReadError::Db("poisoned".into()))?;
        f(&c)
    })
    .await
    .map_err(|e| ReadError::Db(e.to_string()))?
}

fn sqlite_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailItem> {
    Ok(MailItem {
        mail_id: r.get(0)?,
        hash: r.get(1)?,
        recipient: r.get(2)?,
        date: r.get(3)?,
        from: r.get(4)?,
        subject: r.get(5)?,
        size: r.get(6)?,
        has_attach: r.get(7)?,
        seen: r.get::<_, i64>(8)? != 0,
    })
}

fn bytes_at(r: &mut Row, i: usize) -> Vec<u8> {
    match r.take::<Value, _>(i) {
        Some(Value::Bytes(b)) => b,
        _ => Vec::new(),
    }
}

fn text_at(r: &mut Row, i: usize) -> String {
    String::from_utf8_lossy(&bytes_at(r, i)).into_owned()
}

fn int_at(r: &mut Row, i: usize) -> Result<i64, ReadError> {
    match r.take::<Value, _>(i) {
        Some(Value::Int(n)) => Ok(n),
        Some(Value::UInt(n)) => i64::try_from(n).map_err(|e| ReadError::Db(e.to_string())),
        Some(Value::Bytes(b)) => String::from_utf8_lossy(&b)
            .parse()
            .map_err(|_| ReadError::Db(format!("column {i}: not a number"))),
        other => Err(ReadError::Db(format!("column {i}: unexpected {other:?}"))),
    }
}

fn mysql_item(mut r: Row, from: usize) -> Result<MailItem, ReadError> {
    Ok(MailItem {
        mail_id: int_at(&mut r, from)?,
        hash: text_at(&mut r, from + 1),
        recipient: text_at(&mut r, from + 2),
        date: text_at(&mut r, from + 3),
        from: text_at(&mut r, from + 4),
        subject: text_at(&mut r, from + 5),
        size: int_at(&mut r, from + 6)?,
        has_attach: int_at(&mut r, from + 7)?,
        seen: int_at(&mut r, from + 8)? != 0,
    })
}

async fn mysql_conn(pool: &Pool) -> Result<mysql_async::Conn, ReadError> {
    timeout(OP_TIMEOUT, pool.get_conn())
        .await
        .map_err(|_| ReadError::Db("connect timed out".into()))?
        .map_err(ReadError::from)
}

async fn mysql_op<T>(
    f: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, ReadError> {
    timeout(OP_TIMEOUT, f)
        .await
        .map_err(|_| ReadError::Db("query timed out".into()))?
        .map_err(ReadError::from)
}
