//! The MySQL/MariaDB store against a private MariaDB: migrations, rows byte-exact,
//! TCP and unix-socket URLs.

use crate::support::services::Mariadb;
use crate::support::{Opts, Server, assert_mail_blob, run_smtpd_to_exit, simple_message};

fn mysql_server(db: &Mariadb, extra: &[&str]) -> Server {
    let mut opts = Opts::default().store(&db.url());
    for a in extra {
        opts = opts.arg(a);
    }
    Server::start_with(opts)
}

#[test]
fn an_unmigrated_database_stops_the_start_and_names_migrate() {
    let db = Mariadb::start();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["--listen", "127.0.0.1:0", "--store", &db.url()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), std::time::Duration::from_secs(30));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--migrate"), "{stderr}");
}

#[test]
fn migrate_creates_the_schema_and_messages_land_byte_exact() {
    let db = Mariadb::start();
    let server = mysql_server(&db, &["--migrate"]);
    assert_eq!(
        db.column("SELECT version FROM schema_migrations ORDER BY version"),
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    );
    // The URL in the log never shows the password.
    assert!(!server.stderr().contains(":pw@"), "{}", server.stderr());

    let mut c = server.client();
    c.ehlo("client.example");
    let data = simple_message("über MySQL");
    let id1 = c.deliver(
        "sender@example.org",
        &["a@example.com", "b@example.com"],
        &data,
    );
    let big: Vec<u8> = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789012345678901234567890123456789\r\n".repeat(5_000)
    )
    .into_bytes();
    let id2 = c.deliver("", &["a@example.com"], &big);
    c.quit();

    let rows = db.query(&format!(
        "SELECT recipient, mail, subject, `from`, ip_addr, body, size, hash FROM new_mail \
         WHERE hash = '{id1}' ORDER BY recipient"
    ));
    assert_eq!(rows.len(), 2);
    for (row, rcpt) in rows.iter().zip(["a@example.com", "b@example.com"]) {
        assert_eq!(row[0], rcpt.as_bytes());
        assert_mail_blob(&row[1], "client.example", &data);
        assert_eq!(String::from_utf8_lossy(&row[2]), "über MySQL");
        assert_eq!(row[3], b"sender@example.org");
        assert_eq!(row[4], b"127.0.0.1");
        assert_eq!(row[5], b"");
        assert_eq!(row[6], data.len().to_string().as_bytes());
    }
    let big_rows = db.query(&format!(
        "SELECT mail, `from` FROM new_mail WHERE hash = '{id2}'"
    ));
    assert_eq!(big_rows.len(), 1);
    assert_mail_blob(&big_rows[0][0], "client.example", &big);
    assert_eq!(big_rows[0][1], b"");
    drop(server);

    // Migrated once: a second start needs no --migrate.
    let server = mysql_server(&db, &[]);
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver(
        "s@example.org",
        &["c@example.com"],
        &simple_message("again"),
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM new_mail"), 4);
    assert_eq!(db.column("SELECT COUNT(*) FROM schema_migrations"), ["11"]);
}

#[test]
fn a_unix_socket_url_works() {
    let db = Mariadb::start();
    let server = Server::start_with(Opts::default().store(&db.socket_url()).arg("--migrate"));
    let mut c = server.client();
    c.ehlo("client.example");
    let id = c.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("socket"),
    );
    assert_eq!(
        db.column(&format!(
            "SELECT recipient FROM new_mail WHERE hash = '{id}'"
        )),
        ["x@example.com"]
    );
}

#[test]
fn a_bad_mysql_url_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://u:p@127.0.0.1:notaport/db",
        "mysql://u:p@127.0.0.1:3306",
    ] {
        let args: Vec<String> = ["--listen", "127.0.0.1:0", "--store", url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (code, stderr) =
            run_smtpd_to_exit(&args, dir.path(), std::time::Duration::from_secs(10));
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stderr.contains("store.url"), "{url}: {stderr}");
    }
}

/// Issue 15 item 4 on MariaDB: the optional `to` index is built online and used
/// for `WHERE to = ?`.
#[test]
fn the_optional_to_index_is_used_on_mariadb() {
    let db = Mariadb::start();
    let server = mysql_server(&db, &["--migrate"]);
    let mut c = server.client();
    c.ehlo("client.example");
    for i in 0..3 {
        c.deliver(
            "s@example.org",
            &[&format!("r{i}@example.com")],
            &simple_message("indexed"),
        );
    }
    let sql = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schema/mysql/optional/new_mail_to.sql"),
    )
    .unwrap();
    db.query(&sql);
    let explain = db.query("EXPLAIN SELECT mail_id FROM new_mail WHERE `to` = 'rcpt@example.com'");
    let key = String::from_utf8_lossy(&explain[0][5]).into_owned();
    assert_eq!(key, "new_mail_to", "{explain:?}");
    c.deliver(
        "s@example.org",
        &["z@example.com"],
        &simple_message("after"),
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM new_mail WHERE `to` = 'rcpt@example.com'"),
        4
    );
}

/// The committer's connections go back to its pool without a reset: a reset
/// dropped the prepared INSERT, so every batch prepared it again (a round trip and
/// a server-side parse each). One message at a time is one batch each.
#[test]
fn consecutive_batches_reuse_the_prepared_insert() {
    let db = Mariadb::start();
    let server = mysql_server(&db, &["--migrate"]);
    let prepares = || {
        db.count(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'",
        )
    };
    let mut c = server.client();
    c.ehlo("client.example");
    // Warm both pooled connections (each prepares the one-row INSERT once).
    for i in 0..4 {
        c.deliver(
            "s@example.org",
            &["a@example.com"],
            &simple_message(&format!("warm {i}")),
        );
    }
    let before = prepares();
    for i in 0..30 {
        c.deliver(
            "s@example.org",
            &["a@example.com"],
            &simple_message(&format!("m {i}")),
        );
    }
    c.quit();
    assert_eq!(db.count("SELECT COUNT(*) FROM new_mail"), 34);
    let after = prepares();
    assert!(
        after - before <= 2,
        "{} statements prepared for 30 one-message batches",
        after - before
    );
}

/// Every connection of a store pool is in UTC, also after the pool has reset it
/// (a returned connection is reset; a reset drops the session's settings).
#[test]
fn pooled_connections_stay_in_utc_after_they_are_returned() {
    use mysql_async::prelude::Queryable;
    let db = Mariadb::start();
    let url: mailstore::StoreUrl = db.url().parse().unwrap();
    let mailstore::StoreUrl::Mysql(url) = url else {
        panic!("not a MySQL URL: {}", db.url());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = mailstore::schema::open_mysql(&url, true, 1, 4)
            .await
            .unwrap();
        for use_n in 0..3 {
            let mut conn = pool.get_conn().await.unwrap();
            let tz: Option<String> = conn
                .query_first("SELECT @@session.time_zone")
                .await
                .unwrap();
            assert_eq!(tz.as_deref(), Some("+00:00"), "use {use_n}");
            drop(conn);
            // The pool resets a returned connection in the background.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        pool.disconnect().await.unwrap();
    });
}

/// A global status counter of the server (`COM_BEGIN`, `COM_COMMIT`, …).
fn status(db: &Mariadb, name: &str) -> i64 {
    db.count(&format!(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
         WHERE VARIABLE_NAME = '{name}'"
    ))
}

/// A batch that fits one INSERT is that statement alone, in autocommit: one round
/// trip per commit instead of START TRANSACTION, INSERT, COMMIT (1 KB × 10
/// sessions: 6,951 → 9,028 msgs/s, bench/RESULTS.md). One message at a time is one
/// batch each.
#[test]
fn a_batch_that_fits_one_insert_is_committed_without_a_transaction() {
    let db = Mariadb::start();
    let server = mysql_server(&db, &["--migrate"]);
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver("s@example.org", &["a@example.com"], &simple_message("warm"));
    let (begins, commits) = (status(&db, "COM_BEGIN"), status(&db, "COM_COMMIT"));
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(c.deliver(
            "s@example.org",
            &["a@example.com", "b@example.com"],
            &simple_message(&format!("m {i}")),
        ));
    }
    c.quit();
    assert_eq!(status(&db, "COM_BEGIN") - begins, 0, "transactions opened");
    assert_eq!(status(&db, "COM_COMMIT") - commits, 0, "COMMITs sent");
    // Every acknowledged message is there, both recipients of each.
    for id in &ids {
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM new_mail WHERE hash = '{id}'"
            )),
            2,
            "{id}"
        );
    }
}

/// More rows than one INSERT takes (a message to 200 recipients: 128 + 72) go in
/// one transaction: all of them or none.
#[test]
fn a_batch_over_one_insert_is_one_transaction_of_several() {
    let db = Mariadb::start();
    let server = Server::start_with(
        Opts::config("[limits]\nmax_recipients = 200\n")
            .store(&db.url())
            .arg("--migrate"),
    );
    let mut c = server.client();
    c.ehlo("client.example");
    let rcpts: Vec<String> = (0..200).map(|i| format!("r{i}@example.com")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let (begins, commits) = (status(&db, "COM_BEGIN"), status(&db, "COM_COMMIT"));
    let id = c.deliver("s@example.org", &rcpts, &simple_message("many"));
    c.quit();
    assert_eq!(status(&db, "COM_BEGIN") - begins, 1);
    assert_eq!(status(&db, "COM_COMMIT") - commits, 1);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(DISTINCT recipient) FROM new_mail WHERE hash = '{id}'"
        )),
        200
    );
}

/// A server whose default is `autocommit = 0` would leave a lone INSERT in an open
/// transaction, invisible to everyone else and lost at disconnect, after its 250.
/// The store's sessions set autocommit themselves.
#[test]
fn a_server_without_autocommit_by_default_still_gets_every_message_committed() {
    let db = Mariadb::start();
    db.query("SET GLOBAL autocommit = 0");
    let server = mysql_server(&db, &["--migrate"]);
    let mut c = server.client();
    c.ehlo("client.example");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            c.deliver(
                "s@example.org",
                &["a@example.com"],
                &simple_message(&format!("m {i}")),
            )
        })
        .collect();
    // Seen from another connection while smtpd's stay open.
    for id in &ids {
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM new_mail WHERE hash = '{id}'"
            )),
            1,
            "{id}"
        );
    }
    c.quit();
}
