//! Memory in flight (issue 15, item 11): the `max_inflight_bytes` budget is a bound
//! on peak RSS (plus the overhead README.md documents), clients that hold back the
//! final dot cannot lock other clients out, and large bodies go through spool files
//! that are removed once their message is committed, refused or abandoned.
//!
//! Every load here is bounded: a fixed number of clients, one message each, each
//! read under the support client's timeout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Client, Server, assert_mail_blob};

const MIB: u64 = 1024 * 1024;

/// A message of about `bytes` octets: headers, then 1000-octet lines.
fn big_message(tag: &str, bytes: usize) -> Vec<u8> {
    let mut m = format!("From: <s@example.org>\r\nSubject: {tag}\r\n\r\n").into_bytes();
    let mut n = 0usize;
    while m.len() < bytes {
        // Distinct lines, so a lost or reordered piece cannot go unnoticed.
        let line = format!("{tag} {n:08} {}\r\n", "y".repeat(970));
        m.extend_from_slice(line.as_bytes());
        n += 1;
    }
    m
}

/// The server's peak resident set so far (VmHWM), in bytes.
fn peak_rss(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kb * 1024
}

/// The files of this server's spool (all of its process directories), without the
/// lock files: the message bodies on disk now.
fn spool_files(server: &Server) -> Vec<PathBuf> {
    let root = server.dir().join("spool");
    let mut found = Vec::new();
    for dir in std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("no spool directory {}: {e}", root.display()))
    {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.file_name().is_some_and(|n| n != "lock") {
                found.push(f);
            }
        }
    }
    found
}

/// Waits (bounded) until the spool holds no message files.
#[track_caller]
fn assert_spool_empties(server: &Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files = spool_files(server);
        if files.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: spool files left: {files:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until the spool holds exactly one file of at least `min_len`
/// octets.
#[track_caller]
fn wait_for_spool_file(server: &Server, min_len: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files = spool_files(server);
        if let [only] = files.as_slice()
            && let Ok(meta) = std::fs::metadata(only)
            && meta.len() >= min_len
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected one spool file: {files:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts MAIL, RCPT and DATA for `rcpt`.
fn open_data(c: &mut Client, rcpt: &str) {
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect(&format!("RCPT TO:<{rcpt}>"), 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
}

/// 100 clients × 2 MB at once against a 16 MiB budget (all bodies sent before any
/// final dot): every message is stored
/// exactly, and the server's peak RSS stays within the budget plus the overhead
/// README.md documents ("Memory in flight"): the SQLite page cache (64 MiB), 32 MiB
/// for the process itself (code, threads, runtimes, read buffers), and the
/// committer's batch, `max(batch_max_bytes, max_message_bytes) + 2 ×
/// max_message_bytes` (16 + 8 MiB here). Only settings that existed before are
/// used, so the same test shows the old behaviour.
#[test]
fn peak_rss_stays_within_the_budget_plus_the_documented_overhead() {
    const CLIENTS: usize = 100;
    const BYTES: usize = 2_000_000;
    let budget = 16 * MIB;
    let max_message = 4 * MIB;
    let batch_bytes = 16 * MIB; // the default store.batch_max_bytes
    let server = Server::with_config(&format!(
        "[server]\nthreads = 2\n[limits]\nmax_inflight_bytes = {budget}\n\
         max_message_bytes = {max_message}\n"
    ));
    let before = peak_rss(&server);
    let addr = server.addr;
    // Every body starts at once and is sent before any final dot: all 100 messages
    // are under way together, the worst case for memory.
    let all_ready = Arc::new(Barrier::new(CLIENTS));
    let all_sent = Arc::new(Barrier::new(CLIENTS));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let all_ready = Arc::clone(&all_ready);
            let all_sent = Arc::clone(&all_sent);
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.expect(220, "");
                c.ehlo("client.test");
                open_data(&mut c, &format!("r{i}@example.com"));
                let body = big_message(&format!("m{i}"), BYTES);
                all_ready.wait();
                c.send(&body);
                all_sent.wait();
                c.send(b".\r\n");
                let id = c.read_reply().queue_id();
                c.quit();
                (id, body)
            })
        })
        .collect();
    let sent: Vec<(String, Vec<u8>)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let peak = peak_rss(&server);

    let rows = server.rows();
    assert_eq!(rows.len(), CLIENTS);
    for (id, body) in &sent {
        let row = rows.iter().find(|r| &r.hash == id).expect("stored");
        crate::support::assert_mail_blob(&row.mail, "client.test", body);
        assert_eq!(row.size as usize, body.len());
    }
    let sqlite_cache = 64 * MIB;
    let process = 32 * MIB;
    let overhead = sqlite_cache + process + batch_bytes.max(max_message) + 2 * max_message;
    eprintln!(
        "peak RSS {} MiB, idle {} MiB, bound {} MiB",
        peak / MIB,
        before / MIB,
        (budget + overhead) / MIB
    );
    assert!(
        peak <= budget + overhead,
        "peak RSS {} MiB (idle {} MiB) is over budget {} MiB + overhead {} MiB",
        peak / MIB,
        before / MIB,
        budget / MIB,
        overhead / MIB
    );
    assert_spool_empties(&server, "after commit");
}

/// Clients that send their bodies but hold back the final dot hold more than the
/// whole budget between them; a normal client's message is still read and stored
/// at once (it used to wait for memory until its DATA timeout gave it 451). Then
/// the holders finish and are stored too.
#[test]
fn clients_holding_back_the_final_dot_do_not_lock_out_others() {
    const HOLDERS: usize = 12;
    let server = Server::with_config(
        "[server]\nthreads = 1\n[limits]\nmax_inflight_bytes = 1048576\n[timeouts]\ndata_secs = 4\n",
    );
    let mut holders = Vec::new();
    for i in 0..HOLDERS {
        let mut c = server.ehlo_client();
        open_data(&mut c, &format!("hold{i}@example.com"));
        let body = big_message(&format!("hold{i}"), 200_000);
        c.send(&body);
        holders.push((c, body));
    }
    // 12 × 200 KB > 1 MiB, all of it read by the server (not left in the sockets).
    thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let mut normal = server.ehlo_client();
    let body = big_message("normal", 50_000);
    let id = normal.deliver("s@example.org", &["normal@example.com"], &body);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a normal client waited {took:?}"
    );
    assert_eq!(server.rows_for(&id).len(), 1);

    for (c, _) in holders.iter_mut() {
        c.send(b".\r\n");
    }
    for (c, body) in holders.iter_mut() {
        let id = c.read_reply().queue_id();
        let rows = server.rows_for(&id);
        assert_eq!(rows.len(), 1);
        crate::support::assert_mail_blob(&rows[0].mail, "client.test", body);
    }
    assert_eq!(server.row_count(), HOLDERS as i64 + 1);
    assert_spool_empties(&server, "after the holders finished");
}

/// A body over `spill_threshold_bytes` (1 MiB by default) is written to a spool
/// file as it arrives (`spool/` beside the SQLite file), and the file goes once its
/// message is committed, refused (too big, or bare LF), or abandoned by a client
/// that disconnects mid-DATA.
#[test]
fn spool_files_are_removed_after_commit_refusal_and_disconnect() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 3000000\n");

    // Committed: stored byte-exact, the file gone.
    let mut c = server.ehlo_client();
    open_data(&mut c, "commit@example.com");
    let body = big_message("commit", 2_000_000);
    c.send(&body);
    wait_for_spool_file(&server, 1_500_000);
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    crate::support::assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", &body);
    assert_spool_empties(&server, "after commit");

    // Refused as too big: 552, nothing stored, the file gone.
    open_data(&mut c, "big@example.com");
    c.send(&big_message("big", 3_500_000));
    c.send(b".\r\n");
    c.expect(552, "5.3.4");
    assert_spool_empties(&server, "after 552");

    // Refused for a bare LF after the body was spooled.
    open_data(&mut c, "lf@example.com");
    c.send(&big_message("lf", 1_500_000));
    c.send(b"bare\nLF\r\n.\r\n");
    assert_eq!(c.read_reply().code / 100, 5);
    assert_spool_empties(&server, "after a refused bare LF");

    // Abandoned: the client vanishes mid-DATA.
    let mut gone = server.ehlo_client();
    open_data(&mut gone, "gone@example.com");
    gone.send(&big_message("gone", 1_500_000));
    wait_for_spool_file(&server, 1_100_000);
    drop(gone);
    assert_spool_empties(&server, "after a disconnect");

    assert_eq!(server.row_count(), 1);
    c.quit();
}

/// Spool files left by a process that crashed (never acknowledged) are removed at
/// start; another live process's files in the same directory are not touched.
#[test]
fn spool_leftovers_of_a_crashed_process_are_removed_at_start() {
    let first = Server::start();
    let root = first.dir().join("spool");
    let crashed = root.join("smtpd-4000000-1");
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(crashed.join("lock"), b"").unwrap();
    std::fs::write(crashed.join("7.eml"), b"Subject: never acknowledged\r\n").unwrap();
    let live_dirs = |root: &Path| -> usize {
        std::fs::read_dir(root)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().join("lock").exists())
            .count()
    };
    assert_eq!(live_dirs(&root), 2);

    // A second server on the same store, so the same default spool directory.
    let second = Server::start_with(
        crate::support::Opts::default().store(&format!("sqlite:{}", first.db_path.display())),
    );
    assert!(!crashed.exists(), "the crashed process's spool is removed");
    assert_eq!(live_dirs(&root), 2, "the first server's directory is kept");
    drop(second);
    let mut c = first.ehlo_client();
    c.deliver(
        "s@example.org",
        &["x@example.com"],
        &big_message("after", 3_000_000),
    );
    assert_spool_empties(&first, "after commit");
}

/// A body that cannot be spooled (here: the spool directory was removed under the
/// server) is answered `451 4.3.0`, never stored short; the session goes on, and
/// small messages, which stay in memory, are still stored.
#[test]
fn a_body_that_cannot_be_spooled_gets_451_and_the_session_goes_on() {
    let server = Server::start();
    for dir in std::fs::read_dir(server.dir().join("spool")).unwrap() {
        std::fs::remove_dir_all(dir.unwrap().path()).unwrap();
    }
    let mut c = server.ehlo_client();
    let r = c.transaction(
        "s@example.org",
        &["big@example.com"],
        &big_message("unspoolable", 2_000_000),
    );
    r.assert(451, "4.3.0");
    c.deliver(
        "s@example.org",
        &["small@example.com"],
        &crate::support::simple_message("in memory"),
    );
    let stored: Vec<String> = server.rows().into_iter().map(|r| r.recipient).collect();
    assert_eq!(stored, ["small@example.com"]);
}

/// A spooled message that is refused, with the next whole transaction pipelined
/// behind its final dot in the same write: the next message is stored exactly as
/// sent, never joined to the refused one's spool file.
#[test]
fn a_message_pipelined_behind_a_refused_spooled_one_is_stored_exactly() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 3000000\n");
    let mut c = server.ehlo_client();
    let small = crate::support::simple_message("pipelined behind a refusal");
    for (refusal, bad_tail) in [
        (550, &b"bare\nLF\r\n"[..]),
        (552, &big_message("over", 2_000_000)[..]),
    ] {
        open_data(&mut c, "refused@example.com");
        c.send(&big_message("spooled", 1_500_000));
        wait_for_spool_file(&server, 1_100_000);
        let mut wire = bad_tail.to_vec();
        wire.extend_from_slice(
            b".\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<next@example.com>\r\nDATA\r\n",
        );
        wire.extend_from_slice(&small);
        wire.extend_from_slice(b".\r\n");
        // One write from the final dot of the refused message to the end of the
        // next one, so the server reads them together.
        let dot = bad_tail.len();
        c.send(&wire[..dot.saturating_sub(1)]);
        thread::sleep(Duration::from_millis(200));
        c.send(&wire[dot.saturating_sub(1)..]);
        assert_eq!(c.read_reply().code, refusal);
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        let id = c.read_reply().queue_id();
        let rows = server.rows_for(&id);
        crate::support::assert_mail_blob(&rows[0].mail, "client.test", &small);
        assert_spool_empties(&server, "after the refusal and the next message");
    }

    // The same, but the next message is large too: its own spool file, exact.
    open_data(&mut c, "refused@example.com");
    c.send(&big_message("spooled", 1_500_000));
    wait_for_spool_file(&server, 1_100_000);
    let next = big_message("next", 2_000_000);
    let mut wire =
        b"bare\nLF\r\n.\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<next@example.com>\r\nDATA\r\n"
            .to_vec();
    wire.extend_from_slice(&next[..10_000]);
    c.send(&wire);
    c.send(&next[10_000..]);
    c.send(b".\r\n");
    c.expect(550, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    let id = c.read_reply().queue_id();
    crate::support::assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", &next);
    assert_spool_empties(&server, "after the large next message");
}

/// BDAT bodies go through the same spool as DATA bodies: a 3 MB message in 1 MB
/// chunks is spooled between chunks (the transaction is open, no chunk in
/// flight), stored byte-exact, and its file goes after the commit; a chunked
/// message refused as too big after spooling, or abandoned by RSET, leaves no file.
#[test]
fn chunked_bodies_are_spooled_and_their_files_removed() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 5000000\n");
    let mut c = server.client();
    c.ehlo("client.example");
    let message = big_message("chunked", 3_000_000);
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    let mut chunks = message.chunks(1_000_000).peekable();
    let mut sent = 0;
    while let Some(chunk) = chunks.next() {
        sent += chunk.len();
        let last = chunks.peek().is_none();
        let mut cmd = format!(
            "BDAT {}{}\r\n",
            chunk.len(),
            if last { " LAST" } else { "" }
        )
        .into_bytes();
        cmd.extend_from_slice(chunk);
        c.send(&cmd);
        if last {
            let id = c.expect(250, "2.0.0").queue_id();
            assert_mail_blob(&server.rows_for(&id)[0].mail, "client.example", &message);
        } else {
            c.expect(250, "2.0.0");
            // Between chunks, once past the 1 MiB threshold, the body so far is on
            // disk, not in memory (all but the last spool write of at most 64 KiB).
            if sent > 1_100_000 {
                wait_for_spool_file(&server, sent as u64 - 65_536);
            }
        }
    }
    assert_spool_empties(&server, "after a chunked commit");

    // Too big after two spooled chunks: 552 at the chunk that crosses the limit,
    // and the file goes with the transaction at LAST.
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    let part = &message[..2_000_000];
    for expect in [250, 250, 552] {
        let mut cmd = format!("BDAT {}\r\n", part.len()).into_bytes();
        cmd.extend_from_slice(part);
        c.send(&cmd);
        c.expect(expect, "");
    }
    c.send(b"BDAT 0 LAST\r\n");
    c.expect(552, "5.3.4");
    assert_spool_empties(&server, "after a chunked 552");

    // Abandoned by RSET after a spooled chunk.
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    let mut cmd = format!("BDAT {}\r\n", part.len()).into_bytes();
    cmd.extend_from_slice(part);
    c.send(&cmd);
    c.expect(250, "2.0.0");
    wait_for_spool_file(&server, 1_500_000);
    c.cmd_expect("RSET", 250, "2.0.0");
    assert_spool_empties(&server, "after RSET");
    assert_eq!(server.row_count(), 1);
}
