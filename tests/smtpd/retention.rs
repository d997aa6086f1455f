//! Retention: old mail is deleted in the background, for SQLite and MariaDB alike,
//! while new mail keeps arriving.

use std::time::{Duration, Instant};

use crate::support::services::Mariadb;
use crate::support::{Opts, Server, simple_message};

const CONFIG: &str = "[retention]\nmax_age_hours = 1\ninterval_secs = 1\nbatch_rows = 7\n";

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sqlite_rows_older_than_max_age_are_deleted_and_fresh_ones_kept() {
    let server = Server::with_config(CONFIG);
    let mut c = server.client();
    c.ehlo("client.example");
    for n in 0..30 {
        c.deliver(
            "s@example.org",
            &[&format!("r{n}@example.com")],
            &simple_message("x"),
        );
    }
    server
        .db()
        .execute(
            "UPDATE new_mail SET date = datetime('now', '-3 hours') WHERE recipient IN \
             (SELECT recipient FROM new_mail ORDER BY mail_id LIMIT 20)",
            [],
        )
        .unwrap();
    // Mail keeps arriving while the purge runs (batches of 7 rows).
    let fresh = c.deliver(
        "s@example.org",
        &["fresh@example.com"],
        &simple_message("new"),
    );
    wait_for("the purge", || server.row_count() == 11);
    let left: Vec<String> = server.rows().into_iter().map(|r| r.recipient).collect();
    assert!(left.contains(&"fresh@example.com".to_string()));
    assert!(
        left.iter()
            .all(|r| !["r0@example.com", "r19@example.com"].contains(&r.as_str()))
    );
    assert_eq!(server.rows_for(&fresh).len(), 1);
}

#[test]
fn sqlite_oldest_rows_go_when_over_max_total_bytes() {
    let msg = simple_message("sized");
    let limit = msg.len() * 5;
    let server = Server::with_config(&format!(
        "[retention]\nmax_total_bytes = {limit}\ninterval_secs = 1\nbatch_rows = 2\n"
    ));
    let mut c = server.client();
    c.ehlo("client.example");
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(c.deliver("s@example.org", &[&format!("r{n}@example.com")], &msg));
    }
    wait_for("the size purge", || server.row_count() <= 5);
    // The newest survive.
    assert_eq!(server.rows_for(ids.last().unwrap()).len(), 1);
}

#[test]
fn mariadb_rows_older_than_max_age_are_deleted() {
    let db = Mariadb::start();
    let server = Server::start_with(Opts::config(CONFIG).store(&db.url()).arg("--migrate"));
    let mut c = server.client();
    c.ehlo("client.example");
    for n in 0..25 {
        c.deliver(
            "s@example.org",
            &[&format!("r{n}@example.com")],
            &simple_message("x"),
        );
    }
    let out = db.query("UPDATE new_mail SET date = DATE_SUB(UTC_TIMESTAMP(), INTERVAL 3 HOUR) ORDER BY mail_id LIMIT 15");
    assert!(out.is_empty());
    wait_for("the purge", || {
        db.count("SELECT COUNT(*) FROM new_mail") == 10
    });
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM new_mail WHERE date < DATE_SUB(UTC_TIMESTAMP(), INTERVAL 1 HOUR)"
        ),
        0
    );
}
