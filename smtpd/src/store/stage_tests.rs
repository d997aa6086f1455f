//! The storage stage against a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;
use rusqlite::Connection;

use super::*;
use crate::handoff::{Completion, CompletionSink, ConnKey, Envelope, Submission};

struct Sink {
    sink: Arc<CompletionSink>,
    rx: Receiver<Completion>,
    _poll: mio::Poll,
}

fn sink() -> Sink {
    let poll = mio::Poll::new().unwrap();
    let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    Sink {
        sink: Arc::new(CompletionSink::new(tx, waker)),
        rx,
        _poll: poll,
    }
}

fn config(batch: usize, delay_ms: u64) -> StageConfig {
    StageConfig {
        batch_max_messages: batch,
        batch_max_delay: Duration::from_millis(delay_ms),
        batch_max_bytes: crate::config::DEFAULT_BATCH_MAX_BYTES,
        queue_capacity: 1024,
        mysql_committers: 2,
        hostname: "mx.test".into(),
        synchronous: Synchronous::Full,
        migrate: false,
        cache: None,
        retention: crate::store::retention::RetentionConfig::default(),
        metrics: None,
        watchdog: None,
    }
}

pub(crate) fn envelope(n: usize, rcpts: &[&str]) -> Envelope {
    Envelope {
        mail_from: format!("s{n}@example.org"),
        rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
        data: format!("Subject: message {n}\r\n\r\nbody {n}\r\n..\r\n").into_bytes(),
        data_offset: 0,
        helo: "client.example".into(),
        esmtp: true,
        smtputf8: false,
        body_8bit: false,
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        is_tls: false,
    }
}

fn submit(stage: &StorageStage, sink: &Sink, slot: usize, envelope: Envelope) {
    stage
        .sender()
        .send(Submission {
            envelope,
            spool: None,
            received_at: SystemTime::now(),
            conn: ConnKey {
                slot,
                generation: 0,
            },
            reply: Arc::clone(&sink.sink),
        })
        .unwrap();
}

fn recv(sink: &Sink) -> Completion {
    sink.rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no completion")
}

fn db(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

/// (batches committed, messages committed) so far.
fn committed(stage: &StorageStage) -> (u64, u64) {
    let stats = stage.stats();
    (
        stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        stats.messages.load(std::sync::atomic::Ordering::Relaxed),
    )
}

fn start(path: &Path, config: StageConfig) -> StorageStage {
    StorageStage::start(&StoreUrl::Sqlite(path.to_owned()), config).unwrap()
}

#[test]
fn a_batch_from_two_reactors_is_stored_byte_exact_and_each_reactor_answered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/mail.sqlite");
    let stage = start(&path, config(64, 200));
    let (a, b) = (sink(), sink());
    submit(
        &stage,
        &a,
        1,
        envelope(1, &["x@example.com", "y@example.com"]),
    );
    submit(&stage, &b, 2, envelope(2, &["z@example.com"]));
    submit(&stage, &a, 3, envelope(3, &["x@example.com"]));
    let mut from_a = [recv(&a), recv(&a)];
    from_a.sort_by_key(|c| c.conn.slot);
    let from_b = recv(&b);
    assert_eq!(from_a[0].conn.slot, 1);
    assert_eq!(from_a[1].conn.slot, 3);
    assert_eq!(from_b.conn.slot, 2);
    assert_eq!(committed(&stage), (1, 3));

    let db = db(&path);
    let id1 = from_a[0].result.unwrap().to_string();
    let rows: Vec<(String, Vec<u8>, String, String, i64)> = db
        .prepare("SELECT recipient, mail, subject, \"to\", size FROM new_mail WHERE hash = ?1 ORDER BY recipient")
        .unwrap()
        .query_map([&id1], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "x@example.com");
    assert_eq!(rows[1].0, "y@example.com");
    let data = envelope(1, &[]).data;
    for (rcpt, mail, subject, to, size) in &rows {
        assert!(mail.starts_with(
            b"Received: from client.example ([127.0.0.1])\r\n\tby mx.test with ESMTP id "
        ));
        assert!(mail.ends_with(&data));
        assert_eq!(subject, "message 1");
        assert_eq!(to, rcpt); // no To: header: the recipient
        assert_eq!(*size, data.len() as i64);
    }
    let total: i64 = db
        .query_row("SELECT count(*) FROM new_mail", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 4);
    drop(stage.sender());
    stage.join().unwrap();
}

#[test]
fn migrations_apply_once_and_wal_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    start(&path, config(1, 0)).join().unwrap();
    start(&path, config(1, 0)).join().unwrap();
    let db = db(&path);
    let versions: Vec<i64> = db
        .prepare("SELECT version FROM schema_migrations")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_failing_message_gets_451_the_rest_of_its_batch_is_stored_and_the_stage_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sqlite");
    let stage = start(&path, config(64, 300));
    db(&path)
        .execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON new_mail WHEN NEW.recipient LIKE 'fail%' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .unwrap();
    let s = sink();
    submit(&stage, &s, 1, envelope(1, &["ok1@example.com"]));
    submit(&stage, &s, 2, envelope(2, &["fail@example.com"]));
    submit(
        &stage,
        &s,
        3,
        envelope(3, &["ok3@example.com", "fail2@example.com"]),
    );
    submit(&stage, &s, 4, envelope(4, &["ok4@example.com"]));
    let mut results: Vec<Completion> = (0..4).map(|_| recv(&s)).collect();
    results.sort_by_key(|c| c.conn.slot);
    assert!(results[0].result.is_ok());
    assert_eq!(results[1].result, Err(StoreFailed));
    assert_eq!(results[2].result, Err(StoreFailed)); // all of a message, or none
    assert!(results[3].result.is_ok());
    let stored: Vec<String> = db(&path)
        .prepare("SELECT recipient FROM new_mail ORDER BY recipient")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored, ["ok1@example.com", "ok4@example.com"]);

    // Still working afterwards.
    submit(&stage, &s, 5, envelope(5, &["later@example.com"]));
    assert!(recv(&s).result.is_ok());
    stage.join().unwrap();
}

#[test]
fn messages_sent_together_commit_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sqlite");
    let stage = start(&path, config(50, 2000));
    let s = sink();
    for n in 0..50 {
        submit(&stage, &s, n, envelope(n, &["x@example.com"]));
    }
    for _ in 0..50 {
        assert!(recv(&s).result.is_ok());
    }
    assert_eq!(committed(&stage), (1, 50));
    stage.join().unwrap();
}

#[test]
fn without_a_delay_what_queues_during_a_commit_is_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.sqlite");
    // The defaults: no timer, so only a busy committer can make a batch.
    let config = StageConfig::new("mx.test");
    assert!(config.batch_max_delay.is_zero());
    let stage = start(&path, config);
    let s = sink();
    // Another writer holds the lock: the first message's commit waits for it
    // (busy timeout) while 30 more queue up behind it.
    let blocker = db(&path);
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    submit(&stage, &s, 0, envelope(0, &["x@example.com"]));
    std::thread::sleep(Duration::from_millis(200));
    for n in 1..=30 {
        submit(&stage, &s, n, envelope(n, &["x@example.com"]));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.rx.try_recv().is_err(), "answered before its commit");
    blocker.execute_batch("COMMIT").unwrap();
    for _ in 0..31 {
        assert!(recv(&s).result.is_ok());
    }
    // One for the first message, one for the 30 that waited behind it.
    assert_eq!(committed(&stage), (2, 31));
    stage.join().unwrap();
}

#[test]
fn join_commits_and_answers_everything_submitted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    // A long delay: only the end of input can close the batch early.
    let stage = start(&path, config(1000, 60_000));
    let s = sink();
    for n in 0..20 {
        submit(&stage, &s, n, envelope(n, &["x@example.com"]));
    }
    let started = std::time::Instant::now();
    stage.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(s.rx.try_iter().filter(|c| c.result.is_ok()).count(), 20);
    let n: i64 = db(&path)
        .query_row("SELECT count(*) FROM new_mail", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
}

#[test]
fn an_unopenable_store_fails_the_start() {
    let err = StorageStage::start(
        &StoreUrl::Sqlite("/proc/nonexistent/x.sqlite".into()),
        config(1, 0),
    )
    .err()
    .expect("start should fail");
    assert!(err.to_string().contains("/proc/nonexistent"), "{err}");
}

/// The queries documented in schema/README.md use the indexes they claim to.
#[test]
fn documented_consumer_queries_use_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite");
    start(&path, config(1, 0)).join().unwrap();
    let db = db(&path);
    let plan = |sql: &str| -> String {
        db.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let newest = plan(
        "SELECT mail_id, date, \"from\", subject FROM new_mail WHERE recipient = 'a@example.com' \
         ORDER BY date DESC LIMIT 20",
    );
    assert!(
        newest.contains("USING INDEX new_mail_recipient_date"),
        "{newest}"
    );
    assert!(!newest.contains("TEMP B-TREE"), "{newest}");
    let by_hash =
        plan("SELECT mail FROM new_mail WHERE hash = 'x' AND recipient = 'a@example.com'");
    assert!(
        by_hash.contains("USING INDEX new_mail_hash_recipient"),
        "{by_hash}"
    );
    let by_id = plan("SELECT mail FROM new_mail WHERE mail_id = 1");
    assert!(by_id.contains("USING INTEGER PRIMARY KEY"), "{by_id}");
    let purge = plan("DELETE FROM new_mail WHERE date < '2026-01-01 00:00:00'");
    assert!(
        purge.contains("USING COVERING INDEX new_mail_date")
            || purge.contains("USING INDEX new_mail_date"),
        "{purge}"
    );
}

fn submission(sink: &Sink, data_bytes: usize) -> Submission {
    let mut e = envelope(0, &["a@example.com"]);
    e.data = vec![b'x'; data_bytes];
    Submission {
        envelope: e,
        spool: None,
        received_at: SystemTime::now(),
        conn: ConnKey {
            slot: 0,
            generation: 0,
        },
        reply: Arc::clone(&sink.sink),
    }
}

#[test]
fn a_batch_is_bounded_by_body_bytes_but_always_takes_one_message() {
    let sink = sink();
    let mut batch = Batch::new(10, 100);
    assert!(batch.offer(submission(&sink, 60)).is_none());
    // 60 + 60 > 100: carried over to the next batch.
    assert!(batch.offer(submission(&sink, 60)).is_some());
    assert!(batch.offer(submission(&sink, 40)).is_none());
    assert!(batch.is_full());
    assert_eq!((batch.items.len(), batch.bytes), (2, 100));

    let mut batch = Batch::new(10, 100);
    // A message larger than the bound is a batch of its own.
    assert!(batch.offer(submission(&sink, 500)).is_none());
    assert!(batch.is_full());
    assert!(batch.offer(submission(&sink, 1)).is_some());
}

#[test]
fn a_spooled_message_is_stored_from_its_file_and_the_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.sqlite");
    let stage = start(&path, config(16, 0));
    let sink = sink();
    let spool = crate::spool::Spool::open(&dir.path().join("spool")).unwrap();
    let mut writer = spool.create().unwrap();
    let body = b"Subject: spooled\r\n\r\nfrom a file\r\n";
    writer.append(&body[..10]).unwrap();
    writer.append(&body[10..]).unwrap();
    let mut s = submission(&sink, 0);
    s.spool = Some(writer.finish());
    stage.sender().send(s).unwrap();
    assert!(recv(&sink).result.is_ok());
    let (mail, subject, size): (Vec<u8>, String, i64) = db(&path)
        .query_row("SELECT mail, subject, size FROM new_mail", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert!(mail.starts_with(b"Received: "));
    assert!(mail.ends_with(body));
    assert_eq!((subject.as_str(), size), ("spooled", body.len() as i64));
    let left: Vec<_> = std::fs::read_dir(spool.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["lock"]);

    // A spool file that vanished is a 451, not a lost or empty message.
    let mut writer = spool.create().unwrap();
    writer.append(b"0123456789").unwrap();
    let gone = writer.finish();
    std::fs::remove_file(gone.path()).unwrap();
    let mut s = submission(&sink, 0);
    s.spool = Some(gone);
    stage.sender().send(s).unwrap();
    assert!(recv(&sink).result.is_err());
    stage.join().unwrap();
}

#[test]
fn while_a_commit_is_in_doubt_later_submissions_get_451_at_once_and_the_batch_waits() {
    let sink = sink();
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = StageStats::default();
    let mut asked = 0;
    // The database answers on the fourth attempt; meanwhile two clients submit.
    let stored = resolve(
        || {
            asked += 1;
            match asked {
                1 => {
                    tx.send(submission(&sink, 10)).unwrap();
                    tx.send(submission(&sink, 20)).unwrap();
                    Err(CommitError::Unavailable("connection refused".into()))
                }
                2 | 3 => Err(CommitError::Unavailable("connection refused".into())),
                _ => Ok(["a".to_owned()].into_iter().collect()),
            }
        },
        || refuse_queued(&rx, &stats),
        Duration::from_secs(30),
    );
    // The in-doubt batch is answered from what the database says, not guessed.
    assert_eq!(stored, Some(["a".to_owned()].into_iter().collect()));
    assert_eq!(asked, 4);
    // Both later submissions were refused without being stored.
    for _ in 0..2 {
        assert_eq!(recv(&sink).result, Err(StoreFailed));
    }
    assert!(rx.is_empty());
    assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
}

#[test]
fn an_unresolvable_commit_is_given_up_at_the_deadline() {
    let started = std::time::Instant::now();
    let stored = resolve(
        || Err(CommitError::Unavailable("connection refused".into())),
        || {},
        Duration::from_millis(600),
    );
    assert_eq!(stored, None);
    assert!(started.elapsed() >= Duration::from_millis(600));
}

/// MySQL: with two committers, a batch whose INSERT is slow (a trigger sleeps on
/// one recipient) does not hold back the next: that one commits on the other
/// committer meanwhile, and each client is answered for its own message.
#[test]
fn on_mysql_a_second_batch_commits_while_the_first_is_still_in_flight() {
    let db = test_support::services::Mariadb::start();
    let url: StoreUrl = db.url().parse().unwrap();
    let mut cfg = config(64, 0);
    cfg.migrate = true;
    assert_eq!(cfg.mysql_committers, 2);
    let stage = StorageStage::start(&url, cfg).unwrap();
    db.query(
        "CREATE TRIGGER slow_insert BEFORE INSERT ON new_mail FOR EACH ROW \
         SET @slept = IF(NEW.recipient = 'slow@example.com', SLEEP(3), 0)",
    );
    let (slow, fast) = (sink(), sink());
    let started = std::time::Instant::now();
    submit(&stage, &slow, 1, envelope(1, &["slow@example.com"]));
    // Let the first committer take it and sit in its INSERT.
    std::thread::sleep(Duration::from_millis(300));
    submit(&stage, &fast, 2, envelope(2, &["fast@example.com"]));
    let fast_done = recv(&fast);
    let fast_at = started.elapsed();
    assert!(fast_done.result.is_ok());
    assert!(
        slow.rx.try_recv().is_err(),
        "the slow batch was answered before the fast one: one commit at a time"
    );
    assert!(
        fast_at < Duration::from_millis(2500),
        "fast answered after {fast_at:?}"
    );
    let slow_done = recv(&slow);
    assert!(slow_done.result.is_ok());
    assert!(started.elapsed() >= Duration::from_secs(3));
    // Each row exactly once (ids are allocated at INSERT, so which one holds
    // the lower id is not for the test to say: that is why the bounce intake lets
    // ids settle).
    assert_eq!(
        db.column("SELECT recipient FROM new_mail ORDER BY recipient"),
        ["fast@example.com", "slow@example.com"]
    );
    assert_eq!(committed(&stage), (2, 2));
    stage.join().unwrap();
}
