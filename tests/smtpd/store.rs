//! The store as consumers see it: the `new_mail` columns of a committed message
//! (schema/sqlite/0001_new_mail.sql), one row per recipient, and a failing commit
//! answered with `451 4.3.0` (nothing acknowledged, the session goes on).

use crate::support::{HOSTNAME, Server, assert_mail_blob, simple_message};

#[test]
fn columns_hold_envelope_headers_and_raw_message() {
    let server = Server::start();
    let mut c = server.client();
    c.cmd_expect("HELO client.test", 250, "");
    let msg: &[u8] = b"From: Alice <alice@example.org>\r\n\
To: Bob <bob@example.com>\r\n\
Subject: Columns test\r\n\
Message-ID: <abc123@client.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello Bob.\r\n";
    let before = chrono::Utc::now().naive_utc();
    let id = c.deliver(
        "alice@example.org",
        &["bob@example.com", "carol@example.com"],
        msg,
    );
    let after = chrono::Utc::now().naive_utc();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 2, "one row per recipient");
    let mut recipients: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
    recipients.sort();
    assert_eq!(recipients, ["bob@example.com", "carol@example.com"]);
    for r in &rows {
        assert_eq!(r.hash, id);
        assert_eq!(r.from, "alice@example.org");
        assert_eq!(r.return_path, "alice@example.org");
        assert_eq!(r.to, "bob@example.com", "address of the To: header");
        assert_eq!(r.subject, "Columns test");
        assert_eq!(r.charset.to_ascii_lowercase(), "utf-8");
        assert!(
            r.content_type
                .to_ascii_lowercase()
                .starts_with("text/plain"),
            "{:?}",
            r.content_type
        );
        assert_eq!(r.ip_addr, "127.0.0.1");
        assert_eq!(r.is_tls, 0);
        assert!(
            r.message_id.contains("abc123@client.test"),
            "{:?}",
            r.message_id
        );
        assert_eq!(r.helo, "client.test");
        assert_eq!(r.size, msg.len() as i64);
        assert_mail_blob(&r.mail, "client.test", msg);
        let received = String::from_utf8_lossy(&r.mail[..r.mail.len() - msg.len()]);
        assert!(
            received.contains(HOSTNAME),
            "Received: names our host: {received:?}"
        );
        let date = chrono::NaiveDateTime::parse_from_str(&r.date, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("date {:?} is not 'YYYY-MM-DD HH:MM:SS': {e}", r.date));
        let slack = chrono::TimeDelta::seconds(5);
        assert!(
            date >= before - slack && date <= after + slack,
            "date {date} not within [{before}, {after}] (UTC)"
        );
        assert_eq!(r.body, "", "body '' marks the raw message in `mail`");
    }
}

#[test]
fn encoded_subject_is_decoded_and_missing_headers_have_defaults() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let msg: &[u8] = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nno other headers\r\n";
    let id = c.deliver("a@b.example", &["x@example.com"], msg);
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.subject, "café");
    assert_eq!(r.to, "x@example.com", "no To: header: the recipient");
    assert!(
        !r.message_id.is_empty(),
        "a Message-ID is made up when missing"
    );
    assert_mail_blob(&r.mail, "client.test", msg);
}

#[test]
fn headerless_junk_message_is_stored() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let msg: &[u8] = b"\xff\xfe not a header\r\n: neither\r\n\x01\x02\x7f\r\n";
    let id = c.deliver("a@b.example", &["x@example.com"], msg);
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", msg);
}

#[test]
fn duplicate_recipients_are_stored_once() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(&simple_message("dup"));
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    assert_eq!(server.rows_for(&id).len(), 1);
}

#[test]
fn store_failure_gets_451_and_the_next_message_is_stored() {
    let server = Server::start();
    // Make the store fail for some recipients, from outside, while it runs.
    server
        .db()
        .execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON new_mail WHEN NEW.recipient LIKE 'fail%' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .expect("create trigger");
    let mut c = server.ehlo_client();
    let r = c.transaction(
        "a@b.example",
        &["fail@example.com"],
        &simple_message("fails"),
    );
    r.assert(451, "4.3.0");
    assert_eq!(server.row_count(), 0);
    // A message with a failing and a good recipient is all-or-nothing.
    let r = c.transaction(
        "a@b.example",
        &["ok@example.com", "fail2@example.com"],
        &simple_message("half"),
    );
    r.assert(451, "4.3.0");
    assert_eq!(server.row_count(), 0, "a failed message leaves no row");
    // The session goes on, and so does the store.
    let msg = simple_message("works");
    let id = c.deliver("a@b.example", &["ok@example.com"], &msg);
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].hash, id);
    assert_eq!(rows[0].recipient, "ok@example.com");
    assert_mail_blob(&rows[0].mail, "client.test", &msg);
    // And on a new connection.
    let mut d = server.ehlo_client();
    d.transaction(
        "a@b.example",
        &["fail@example.com"],
        &simple_message("again"),
    )
    .assert(451, "4.3.0");
    d.deliver("a@b.example", &["ok2@example.com"], &simple_message("ok2"));
    assert_eq!(server.row_count(), 2);
}

#[test]
fn synchronous_normal_and_small_batches_store_everything() {
    let server = Server::with_config(
        "[store]\nsynchronous = \"normal\"\nbatch_max_messages = 2\nbatch_max_delay_us = 0\nqueue_capacity = 1\n",
    );
    let mut c = server.ehlo_client();
    // 10 pipelined messages through a queue of one and batches of two.
    let mut wire = Vec::new();
    for i in 0..10 {
        wire.extend_from_slice(
            format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<r{i}@example.com>\r\nDATA\r\n").as_bytes(),
        );
        wire.extend_from_slice(&simple_message(&format!("small batch {i}")));
        wire.extend_from_slice(b".\r\n");
    }
    c.send(&wire);
    for _ in 0..10 {
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        c.read_reply().queue_id();
    }
    assert_eq!(server.row_count(), 10);
}

/// Back-pressure: when the store falls behind and its queue is full, the server
/// stops reading message data instead of buffering it; a client left waiting that
/// way past its DATA timeout is told 451 (our fault, try later), not 421. The
/// messages already taken are stored once the store catches up.
#[test]
fn a_full_store_queue_pauses_data_and_a_paused_client_gets_451() {
    let server = Server::with_config(
        "[server]\nthreads = 1\n[store]\nqueue_capacity = 1\nbatch_max_messages = 1\n\
         [timeouts]\ndata_secs = 1\ncommand_secs = 30\n",
    );
    // Hold SQLite's write lock: the committer blocks on its first message.
    let lock = server.db();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    // A is being committed (blocked), B waits in the queue, C is held back by
    // the reactor: from now on the reactor reads no message data.
    let mut senders: Vec<crate::support::Client> = Vec::new();
    for name in ["a", "b", "c"] {
        let mut c = server.client();
        c.ehlo("client.example");
        c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
        c.cmd_expect(&format!("RCPT TO:<{name}@example.com>"), 250, "2.1.5");
        c.cmd_expect("DATA", 354, "");
        c.send(&[simple_message(name), b".\r\n".to_vec()].concat());
        senders.push(c);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut d = server.client();
    d.ehlo("client.example");
    d.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    d.cmd_expect("RCPT TO:<d@example.com>", 250, "2.1.5");
    d.cmd_expect("DATA", 354, "");
    std::thread::sleep(std::time::Duration::from_millis(100));
    d.send(b"Subject: paused\r\n\r\nwaiting for the store");
    d.expect(451, "4.3.0");
    d.expect_closed();

    lock.execute_batch("ROLLBACK").unwrap();
    for c in &mut senders {
        c.expect(250, "2.0.0");
    }
    let stored: Vec<String> = server.rows().into_iter().map(|r| r.recipient).collect();
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(!stored.contains(&"d@example.com".to_string()));
}

/// The repository's root (the tests read the documented SQL files from there).
fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Issue 15 item 4: Guerrilla's consumers look mail up by `to`. The default schema
/// scans for that; the documented optional index, applied with the sqlite3 shell
/// while smtpd runs, turns it into an index search, and ingestion goes on.
#[test]
fn the_optional_to_index_applies_to_a_live_store_and_serves_to_lookups() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver("a@b.example", &["x@example.com"], &simple_message("before"));
    let plan = |db: &rusqlite::Connection| -> String {
        db.query_row(
            "EXPLAIN QUERY PLAN SELECT mail_id, subject FROM new_mail WHERE \"to\" = ?1 ORDER BY date DESC",
            ["rcpt@example.com"],
            |r| r.get::<_, String>(3),
        )
        .unwrap()
    };
    assert!(
        plan(&server.db()).starts_with("SCAN"),
        "{}",
        plan(&server.db())
    );

    let db_path = server.dir().join("x.sqlite");
    let out = std::process::Command::new("sqlite3")
        .arg(&db_path)
        .stdin(
            std::fs::File::open(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../schema/sqlite/optional/new_mail_to.sql"),
            )
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        plan(&server.db()),
        "SEARCH new_mail USING INDEX new_mail_to (to=?)"
    );
    c.deliver("a@b.example", &["y@example.com"], &simple_message("after"));
    let found: i64 = server
        .db()
        .query_row(
            "SELECT count(*) FROM new_mail WHERE \"to\" = 'rcpt@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(found, 2);
    // Idempotent.
    server
        .db()
        .execute_batch(&repo_file("schema/sqlite/optional/new_mail_to.sql"))
        .unwrap();
}
