//! The shared database schema: opening a store and bringing its schema up to date.
//!
//! Owns: the migration lists (`schema/sqlite/*.sql`, `schema/mysql/*.sql`), applying
//! them (each once, recorded in `schema_migrations`), the version check, and how a
//! connection to either store is opened (WAL and durability for SQLite; UTC session
//! time zone for MySQL). Both daemons call this, so `smtpd` and `outbound` always
//! agree on one schema version for one database.
//! Must not: hold connections or know what the tables are used for.

use std::path::Path;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::time::timeout;
use tracing::info;

use crate::OpenError;
use crate::url::{MysqlUrl, Synchronous};

/// SQLite migrations, in order. A released migration is never edited, only
/// followed by a new one.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_new_mail",
        include_str!("../sqlite/0001_new_mail.sql"),
    ),
    (
        2,
        "0002_outbound",
        include_str!("../sqlite/0002_outbound.sql"),
    ),
    (
        3,
        "0003_relay_instances",
        include_str!("../sqlite/0003_relay_instances.sql"),
    ),
    (
        4,
        "0004_campaigns",
        include_str!("../sqlite/0004_campaigns.sql"),
    ),
    (
        5,
        "0005_tracking",
        include_str!("../sqlite/0005_tracking.sql"),
    ),
    (
        6,
        "0006_sending",
        include_str!("../sqlite/0006_sending.sql"),
    ),
    (
        7,
        "0007_complaints",
        include_str!("../sqlite/0007_complaints.sql"),
    ),
    (
        8,
        "0008_responsible",
        include_str!("../sqlite/0008_responsible.sql"),
    ),
    (
        9,
        "0009_mailbox_http",
        include_str!("../sqlite/0009_mailbox_http.sql"),
    ),
    (
        10,
        "0010_scaleout",
        include_str!("../sqlite/0010_scaleout.sql"),
    ),
    (
        11,
        "0011_indexes",
        include_str!("../sqlite/0011_indexes.sql"),
    ),
];

/// MySQL migrations, in order (same versions as SQLite's).
pub const MYSQL_MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_new_mail",
        include_str!("../mysql/0001_new_mail.sql"),
    ),
    (
        2,
        "0002_outbound",
        include_str!("../mysql/0002_outbound.sql"),
    ),
    (
        3,
        "0003_relay_instances",
        include_str!("../mysql/0003_relay_instances.sql"),
    ),
    (
        4,
        "0004_campaigns",
        include_str!("../mysql/0004_campaigns.sql"),
    ),
    (
        5,
        "0005_tracking",
        include_str!("../mysql/0005_tracking.sql"),
    ),
    (6, "0006_sending", include_str!("../mysql/0006_sending.sql")),
    (
        7,
        "0007_complaints",
        include_str!("../mysql/0007_complaints.sql"),
    ),
    (
        8,
        "0008_responsible",
        include_str!("../mysql/0008_responsible.sql"),
    ),
    (
        9,
        "0009_mailbox_http",
        include_str!("../mysql/0009_mailbox_http.sql"),
    ),
    (
        10,
        "0010_scaleout",
        include_str!("../mysql/0010_scaleout.sql"),
    ),
    (
        11,
        "0011_indexes",
        include_str!("../mysql/0011_indexes.sql"),
    ),
];

/// How long a statement waits for a lock held by another connection or process
/// before failing.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Any single MySQL round trip at start longer than this is a failure.
const MYSQL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size of a newly created SQLite file.
pub const SQLITE_PAGE_SIZE: u32 = 16 * 1024;
/// Page cache of each connection opened by [`open_sqlite`], in KiB.
pub const SQLITE_CACHE_KIB: u32 = 64 * 1024;
/// WAL size that triggers a checkpoint.
const WAL_CHECKPOINT_BYTES: u32 = 4 * 1024 * 1024;

/// Opens (creating it and its directory if needed) the SQLite store in WAL mode with
/// the given durability, and applies any missing migrations.
pub fn open_sqlite(path: &Path, synchronous: Synchronous) -> Result<Connection, OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let open = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(open)?;
    // The busy handler does not cover every step here: a file that another
    // process is creating right now (its WAL switch, its first migration) can
    // answer SQLITE_BUSY at once, without waiting. Every step is idempotent, so
    // the whole sequence is retried until the same deadline a statement would
    // wait for; two openers racing on a fresh file then both succeed.
    let deadline = Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        match configure_sqlite(&mut conn, path, synchronous) {
            Err(e) if e.is_busy() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.map(|()| conn),
        }
    }
}

/// The per-connection settings of [`open_sqlite`], then the missing migrations.
fn configure_sqlite(
    conn: &mut Connection,
    path: &Path,
    synchronous: Synchronous,
) -> Result<(), OpenError> {
    let open = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    // Only a new, empty file takes this (an existing one keeps its page size). Most
    // bytes of a mail store are bodies in overflow chains, and WAL writes each page
    // as its own frame (two write() calls and a checksum): 16 KiB pages write a
    // 100 KB message in 7 frames instead of 25. Measured on the 100 KB benchmark:
    // about a fifth less server CPU per message, and less at 1 KB too.
    conn.execute_batch(&format!("PRAGMA page_size={SQLITE_PAGE_SIZE};"))
        .map_err(open)?;
    // WAL: readers (the applications) never block the writer, and a commit is
    // one sequential append plus one fsync.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal {
            path: path.to_owned(),
            mode,
        });
    }
    // A 64 MiB page cache (SQLite's default is 2 MiB): once the store holds
    // gigabytes, each insert walks three indexes whose upper levels no longer fit
    // in 2 MiB, and every miss is a pread. Measured on a 5 GB store: 100 KB
    // messages at 100-1,000 sessions went from ~500 to ~260 us of CPU each and
    // nearly doubled in rate. The cache fills only as pages are used.
    conn.execute_batch(&format!(
        "PRAGMA synchronous={}; PRAGMA cache_size=-{};",
        synchronous.pragma_value(),
        SQLITE_CACHE_KIB
    ))
    .map_err(open)?;
    // Checkpoint (copy the WAL into the file) every ~4 MiB of WAL, as SQLite's
    // default of 1000 pages does for 4 KiB pages: an inline checkpoint runs inside
    // a commit, so its size bounds the latency spike it adds. This is the default
    // for every opener; smtpd's committer turns it off and checkpoints on a
    // background connection instead, with an inline bound (smtpd/src/store/sqlite.rs).
    set_wal_autocheckpoint(conn, WAL_CHECKPOINT_BYTES).map_err(open)?;
    migrate_sqlite(conn)
}

/// Makes `conn` checkpoint after any commit that leaves the WAL at `bytes` or
/// more (in this file's own page size).
pub fn set_wal_autocheckpoint(conn: &Connection, bytes: u32) -> rusqlite::Result<()> {
    let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = bytes / page_size.max(512);
    conn.execute_batch(&format!("PRAGMA wal_autocheckpoint={pages};"))
}

fn migrate_sqlite(conn: &mut Connection) -> Result<(), OpenError> {
    let migrate = |version, source: rusqlite::Error| OpenError::Migrate {
        version,
        source: Box::new(source),
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
           version    INTEGER PRIMARY KEY,
           name       TEXT NOT NULL,
           applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
         );",
    )
    .map_err(|e| migrate(0, e))?;
    for &(version, name, sql) in SQLITE_MIGRATIONS {
        // IMMEDIATE: two processes starting at once serialize here, and the second
        // sees the first one's record.
        let tx = conn
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
            info!(version, name, "schema migration applied");
        }
        tx.commit().map_err(|e| migrate(version, e))?;
    }
    Ok(())
}

/// A MySQL pool for `url` (at most `pool_max` connections, every session in UTC,
/// `stmt_cache` prepared statements per connection), after migrating (`migrate`) or
/// checking that the schema is at the version this build needs.
pub async fn open_mysql(
    url: &MysqlUrl,
    migrate: bool,
    pool_max: usize,
    stmt_cache: usize,
) -> Result<Pool, OpenError> {
    let opts = url.opts().map_err(|e| OpenError::Mysql(e.to_string()))?;
    let constraints = PoolConstraints::new(1, pool_max.max(1)).unwrap_or_default();
    let opts = OptsBuilder::from_opts(opts)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .stmt_cache_size(stmt_cache)
        // `setup`, not `init`: the pool resets a returned connection, and a reset
        // re-runs only `setup` (with `init` the session fell back to the server's
        // time zone after its first use, and the schema's times are UTC).
        // Autocommit whatever the server's default: smtpd answers 250 when a
        // single INSERT returns, and the relay's lone statements must stand.
        .setup(vec!["SET time_zone = '+00:00'", "SET autocommit = 1"]);
    let pool = Pool::new(opts);
    let mut conn = timeout(MYSQL_CONNECT_TIMEOUT, pool.get_conn())
        .await
        .map_err(|_| OpenError::Mysql("connect timed out".into()))?
        .map_err(|e| {
            // Name the setting when the TLS handshake is what failed.
            if url.tls() {
                OpenError::Mysql(format!("{e} (TLS per the store URL's ssl-mode/ssl-ca)"))
            } else {
                OpenError::Mysql(e.to_string())
            }
        })?;
    if migrate {
        migrate_mysql(&mut conn).await?;
    }
    let latest = MYSQL_MIGRATIONS.last().map_or(0, |m| m.0);
    let found: Option<u32> = conn
        .query_first("SELECT MAX(version) FROM schema_migrations")
        .await
        .unwrap_or(None);
    if found.unwrap_or(0) < latest {
        return Err(OpenError::SchemaOutdated {
            found: found.unwrap_or(0),
            expected: latest,
        });
    }
    Ok(pool)
}

async fn migrate_mysql(conn: &mut mysql_async::Conn) -> Result<(), OpenError> {
    let fail = |version: u32| {
        move |e: mysql_async::Error| OpenError::Migrate {
            version: i64::from(version),
            source: Box::new(e),
        }
    };
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
           version    INT UNSIGNED NOT NULL PRIMARY KEY,
           name       VARCHAR(255) NOT NULL,
           applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )
    .await
    .map_err(fail(0))?;
    // Several nodes (of either daemon) may start at once: one migrates, the others
    // wait and then find every version recorded.
    conn.query_drop("SELECT GET_LOCK('smtpd_migrate', 60)")
        .await
        .map_err(fail(0))?;
    for &(version, name, sql) in MYSQL_MIGRATIONS {
        let applied: Option<u32> = conn
            .exec_first(
                "SELECT version FROM schema_migrations WHERE version = ?",
                (version,),
            )
            .await
            .map_err(fail(version))?;
        if applied.is_some() {
            continue;
        }
        // DDL commits implicitly in MySQL, so a migration is a list of idempotent
        // statements, recorded once all have run.
        for statement in split_statements(sql) {
            conn.query_drop(statement).await.map_err(fail(version))?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (version, name),
        )
        .await
        .map_err(fail(version))?;
        info!(version, name, "schema migration applied");
    }
    conn.query_drop("SELECT RELEASE_LOCK('smtpd_migrate')")
        .await
        .map_err(fail(0))?;
    Ok(())
}

/// Splits a migration file into statements at `;` line ends, dropping comments.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        let code = match line.find(" -- ") {
            Some(i) => line.get(..i).unwrap_or(line),
            None => line,
        };
        current.push_str(code);
        current.push('\n');
        if code.trim_end().ends_with(';') {
            out.push(
                std::mem::take(&mut current)
                    .trim()
                    .trim_end_matches(';')
                    .to_owned(),
            );
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_split_into_statements_without_comments() {
        let statements = split_statements(MYSQL_MIGRATIONS[0].2);
        assert_eq!(statements.len(), 1);
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS new_mail"));
        assert!(!statements[0].contains("--"));
        assert!(statements[0].contains("KEY new_mail_recipient_date (recipient, date)"));
        // `--` inside a comment column text would be cut: the file has none.
        assert!(statements[0].ends_with("COLLATE=utf8mb4_unicode_ci"));
    }

    #[test]
    fn outbound_migration_splits_into_its_tables() {
        let statements = split_statements(MYSQL_MIGRATIONS[1].2);
        let tables: Vec<&str> = statements
            .iter()
            .filter_map(|s| s.strip_prefix("CREATE TABLE IF NOT EXISTS "))
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        assert_eq!(
            tables,
            [
                "outbound_queue",
                "outbound_templates",
                "outbound_log",
                "outbound_nodes",
                "suppression",
                "outbound_bounces",
                "outbound_intake"
            ]
        );
        assert!(statements.iter().all(|s| !s.contains("--")));
    }

    #[test]
    fn relay_instances_migration_adds_its_columns() {
        let statements = split_statements(MYSQL_MIGRATIONS[2].2);
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].starts_with("ALTER TABLE outbound_queue ADD COLUMN lease_instance"));
        assert!(statements[1].starts_with("ALTER TABLE outbound_nodes"));
        assert!(statements[1].contains("ADD COLUMN stopped_at"));
        assert!(statements.iter().all(|s| !s.contains("--")));
    }

    #[test]
    fn both_stores_have_the_same_migration_versions() {
        let sqlite: Vec<(i64, &str)> = SQLITE_MIGRATIONS.iter().map(|m| (m.0, m.1)).collect();
        let mysql: Vec<(i64, &str)> = MYSQL_MIGRATIONS
            .iter()
            .map(|m| (i64::from(m.0), m.1))
            .collect();
        assert_eq!(sqlite, mysql);
    }

    #[test]
    fn sqlite_migrations_apply_to_a_new_file_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.sqlite");
        drop(open_sqlite(&path, Synchronous::Normal).unwrap());
        let conn = open_sqlite(&path, Synchronous::Normal).unwrap();
        let versions: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, i64::try_from(SQLITE_MIGRATIONS.len()).unwrap());
        conn.execute(
            "INSERT INTO outbound_queue (sender, recipient, body) VALUES ('a@x', 'b@y', x'41')",
            [],
        )
        .unwrap();
        let (state, due): (String, String) = conn
            .query_row(
                "SELECT state, next_attempt_at FROM outbound_queue",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(state, "queued");
        assert_eq!(due.len(), "2026-01-01 00:00:00.000".len());
    }

    #[test]
    fn a_new_sqlite_file_gets_large_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |conn: &Connection| -> u32 {
            conn.query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        let fresh = dir.path().join("fresh.sqlite");
        let conn = open_sqlite(&fresh, Synchronous::Full).unwrap();
        assert_eq!(page_size(&conn), SQLITE_PAGE_SIZE);
        let cache: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cache, -i64::from(SQLITE_CACHE_KIB));

        // A store created before (SQLite's default 4 KiB pages, already in WAL
        // mode and holding data) opens unchanged: no rewrite of the file.
        let old = dir.path().join("old.sqlite");
        let pre = Connection::open(&old).unwrap();
        pre.execute_batch(
            "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        drop(pre);
        let conn = open_sqlite(&old, Synchronous::Full).unwrap();
        assert_eq!(page_size(&conn), 4096);
        let kept: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1);
        // The checkpoint threshold is in bytes, whatever the page size: 4 MiB.
        let pages: u32 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pages * 4096, WAL_CHECKPOINT_BYTES);
        let fresh_pages: u32 = open_sqlite(&fresh, Synchronous::Full)
            .unwrap()
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fresh_pages * SQLITE_PAGE_SIZE, WAL_CHECKPOINT_BYTES);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod concurrent_open_tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Several processes (here: connections on threads, which take the same file
    /// locks) opening one fresh file at once, as `outbound enqueue` from cron does
    /// while the relay starts: each must wait for the others' WAL switch and
    /// migrations rather than fail with "database is locked".
    #[test]
    fn openers_racing_on_a_fresh_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let path = dir.path().join(format!("race-{round}.sqlite"));
            let openers = 6;
            let barrier = Arc::new(Barrier::new(openers));
            let threads: Vec<_> = (0..openers)
                .map(|_| {
                    let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        open_sqlite(&path, Synchronous::Normal).map(drop)
                    })
                })
                .collect();
            for t in threads {
                if let Err(e) = t.join().unwrap() {
                    panic!("round {round}: {e}");
                }
            }
        }
    }
}
