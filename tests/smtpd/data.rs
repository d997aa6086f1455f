//! The message body (RFC 5321 §4.1.1.4, §4.5.2): byte-exact storage behind a
//! `Received:` header, dot-unstuffing, the end-of-data rule that defeats SMTP
//! smuggling (only CRLF.CRLF ends DATA; bare CR or LF rejects the message,
//! CVE-2023-51764 family), and the size and line limits.

use std::time::Duration;

use proptest::prelude::*;

use crate::support::{Client, Server, assert_mail_blob, dot_stuff, simple_message};

#[test]
fn message_is_stored_byte_exact_after_received_header() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.test");
    let msg: &[u8] = b"From: Sender <sender@example.org>\r\n\
To: rcpt@example.com\r\n\
Subject: byte exact\r\n\
X-Trailing-Space: yes   \r\n\
X-Tab:\tvalue\r\n\
\r\n\
first line\r\n\
\r\n\
\r\n\
  indented line\t\r\n\
line with 8-bit \xc3\xa9 and \xff\r\n\
last line\r\n";
    let id = c.deliver("sender@example.org", &["rcpt@example.com"], msg);
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_mail_blob(&rows[0].mail, "client.test", msg);
    assert_eq!(rows[0].size, msg.len() as i64, "size excludes Received:");
}

#[test]
fn dot_unstuffing_stores_single_dot() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let sent: &[u8] = b"Subject: dots\r\n\r\n..foo\r\n...\r\n..\r\nmid.dle\r\n";
    let stored: &[u8] = b"Subject: dots\r\n\r\n.foo\r\n..\r\n.\r\nmid.dle\r\n";
    let id = c.deliver("a@b.example", &["x@example.com"], sent);
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_mail_blob(&rows[0].mail, "client.test", stored);
}

#[test]
fn dot_unstuffing_removes_first_period_of_any_dot_line() {
    // RFC 5321 §4.5.2: "If the first character is a period and there are other
    // characters on the line, the first character is deleted."
    let server = Server::start();
    let mut c = server.ehlo_client();
    let sent: &[u8] = b"Subject: dots\r\n\r\n.x\r\n. \r\n";
    let stored: &[u8] = b"Subject: dots\r\n\r\nx\r\n \r\n";
    let id = c.deliver("a@b.example", &["x@example.com"], sent);
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", stored);
}

#[test]
fn dot_stuffed_lines_round_trip() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let original: &[u8] = b"Subject: dots\r\n\r\n.\r\n.foo\r\n..\r\n.. x\r\nend.\r\n";
    let id = c.deliver("a@b.example", &["x@example.com"], &dot_stuff(original));
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", original);
}

/// The fake terminators and stray line ends that must not end DATA.
const SMUGGLING: &[(&str, &[u8])] = &[
    ("LF.LF", b"\n.\n"),
    ("CR.CR", b"\r.\r"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("CR.CRLF", b"\r.\r\n"),
    ("CRLF.CR", b"\r\n.\r"),
    ("LF.CR", b"\n.\r"),
];

/// DATA with `fake` after "hi" and a smuggled transaction behind it, in one write
/// or split at the fake terminator. Exactly one reply (550 5.6.0), nothing stored,
/// the smuggled commands not executed.
fn assert_smuggling_refused(name: &str, fake: &[u8], split: bool) {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    let head: Vec<u8> = [b"Subject: x\r\n\r\nhi".as_slice(), fake].concat();
    let tail: &[u8] =
        b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n";
    if split {
        c.send(&head);
        // The fake terminator alone must not end DATA: no reply yet.
        c.assert_quiet(Duration::from_millis(400));
        c.send(tail);
    } else {
        c.send(&[head.as_slice(), tail].concat());
    }
    let r = c.read_reply();
    assert!(
        r.code == 550 && r.enhanced() == "5.6.0",
        "{name}: expected 550 5.6.0 for the whole thing, got {:?}\n{}",
        r.text(),
        c.transcript()
    );
    // Exactly one reply: nothing more is queued behind it.
    c.assert_quiet(Duration::from_millis(300));
    // The smuggled MAIL did not open a transaction.
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1");
    assert_eq!(server.row_count(), 0, "{name}: nothing may be stored");
    // The connection is still usable.
    let id = c.deliver("a@b.example", &["x@example.com"], &simple_message("after"));
    let rows = server.rows();
    assert_eq!(rows.len(), 1, "{name}");
    assert_eq!(rows[0].hash, id);
    assert_eq!(rows[0].recipient, "x@example.com");
}

#[test]
fn smuggling_fake_terminators_in_one_write_are_refused() {
    for (name, fake) in SMUGGLING {
        assert_smuggling_refused(name, fake, false);
    }
}

#[test]
fn smuggling_fake_terminators_split_are_refused() {
    for (name, fake) in SMUGGLING {
        assert_smuggling_refused(name, fake, true);
    }
}

#[test]
fn bare_lf_or_cr_inside_a_line_rejects_the_message() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    for body in [
        b"Subject: x\r\n\r\nhello\nworld\r\n".as_slice(),
        b"Subject: x\r\n\r\nhello\rworld\r\n",
        b"Subject: x\nX: y\r\n\r\nbody\r\n",
        // A bare LF right before the real terminator's CRLF.
        b"Subject: x\r\n\r\nends with bare lf\n\r\n",
    ] {
        let r = c.transaction("a@b.example", &["x@example.com"], body);
        assert!(
            r.code == 550 && r.enhanced() == "5.6.0",
            "{body:?}: expected 550 5.6.0, got {:?}",
            r.text()
        );
    }
    assert_eq!(server.row_count(), 0);
    c.deliver("a@b.example", &["x@example.com"], &simple_message("ok"));
    assert_eq!(server.row_count(), 1);
}

#[test]
fn bare_lf_dot_lf_does_not_end_data() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(b"Subject: x\r\n\r\nhi\n.\n");
    c.assert_quiet(Duration::from_millis(500));
    c.send(b"NOOP\r\n");
    c.assert_quiet(Duration::from_millis(300));
    c.send(b"\r\n.\r\n");
    c.expect(550, "5.6.0");
    c.cmd_expect("NOOP", 250, "2.0.0");
    assert_eq!(server.row_count(), 0);
}

#[test]
fn terminator_split_across_writes_ends_data() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    let msg = simple_message("split terminator");
    c.send(&msg[..msg.len() - 1]);
    for piece in [&b"\n"[..], b".", b"\r", b"\n"] {
        std::thread::sleep(Duration::from_millis(50));
        c.send(piece);
    }
    let id = c.read_reply().queue_id();
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", &msg);
}

#[test]
fn message_over_max_size_gets_552_after_dot_and_is_not_stored() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 2048\n");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..100 {
        big.extend_from_slice(format!("line {i:04} {}\r\n", "x".repeat(60)).as_bytes());
    }
    assert!(big.len() > 4096);
    c.send(&big);
    // The refusal waits for the end of the message (no reply mid-DATA).
    c.assert_quiet(Duration::from_millis(300));
    c.send(b".\r\n");
    c.expect(552, "5.3.4");
    assert_eq!(server.row_count(), 0);
    // The next transaction on the same connection works.
    let small = simple_message("small");
    let id = c.deliver("a@b.example", &["x@example.com"], &small);
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].hash, id);
    assert_mail_blob(&rows[0].mail, "client.test", &small);
}

#[test]
fn message_under_max_size_is_accepted() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 2048\n");
    let mut c = server.ehlo_client();
    let mut msg = b"Subject: fits\r\n\r\n".to_vec();
    while msg.len() < 1800 {
        msg.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    let id = c.deliver("a@b.example", &["x@example.com"], &msg);
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", &msg);
}

#[test]
fn data_line_over_limit_rejects_message_at_end() {
    let server = Server::with_config("[limits]\nmax_data_line_bytes = 1000\n");
    let mut c = server.ehlo_client();
    let mut body = b"Subject: long line\r\n\r\n".to_vec();
    body.extend_from_slice(&[b'a'; 5000]);
    body.extend_from_slice(b"\r\nafter\r\n");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(&body);
    c.assert_quiet(Duration::from_millis(300));
    c.send(b".\r\n");
    c.expect(550, "5.6.0");
    assert_eq!(server.row_count(), 0);
    // A line under the limit is fine, and the connection is still usable.
    let mut ok = b"Subject: ok line\r\n\r\n".to_vec();
    ok.extend_from_slice(&[b'b'; 900]);
    ok.extend_from_slice(b"\r\n");
    let id = c.deliver("a@b.example", &["x@example.com"], &ok);
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", &ok);
}

#[test]
fn large_message_in_many_writes_is_stored_byte_exact() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    // About 3 MB of varied lines, some starting with a dot.
    let mut msg = b"Subject: large\r\n\r\n".to_vec();
    let mut i: u32 = 0;
    while msg.len() < 3_000_000 {
        i += 1;
        let n = (i.wrapping_mul(2_654_435_761) % 200) as usize;
        if i.is_multiple_of(17) {
            msg.push(b'.');
        }
        msg.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, n));
        msg.extend_from_slice(b"\r\n");
    }
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    for chunk in dot_stuff(&msg).chunks(65_521) {
        c.send(chunk);
    }
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].size, msg.len() as i64);
    assert_mail_blob(&rows[0].mail, "client.test", &msg);
}

// A property test against the live server: any body (lines of any octets but CR,
// LF and NUL, many starting with '.') sent dot-stuffed in any split is stored
// exactly, and the store copes with whatever headers it finds.
fn body_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b". :abcXYZ\t-=?".to_vec()),
        1 => (1u8..=255).prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
    ];
    prop::collection::vec(prop::collection::vec(byte, 0..80), 1..25)
}

#[test]
fn prop_any_body_any_split_is_stored_exactly() {
    use proptest::test_runner::{Config, TestRunner};
    // One server for all cases (a server per case would dominate the run time).
    let server = Server::start();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let cuts = prop::collection::vec(any::<prop::sample::Index>(), 0..6);
    let result = runner.run(&(body_lines(), cuts), |(lines, cuts)| {
        let mut msg = Vec::new();
        for l in &lines {
            msg.extend_from_slice(l);
            msg.extend_from_slice(b"\r\n");
        }
        let mut wire =
            b"MAIL FROM:<p@b.example>\r\nRCPT TO:<prop@example.com>\r\nDATA\r\n".to_vec();
        wire.extend_from_slice(&dot_stuff(&msg));
        wire.extend_from_slice(b".\r\n");
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut c = Client::connect(server.addr);
        c.expect(220, "");
        c.ehlo("prop.test");
        let mut start = 0;
        for p in points {
            if p > start {
                c.send(&wire[start..p]);
                std::thread::sleep(Duration::from_millis(2));
                start = p;
            }
        }
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        let r = c.read_reply();
        prop_assert_eq!(r.code, 250, "{}", c.transcript());
        let id = r.queue_id();
        let rows = server.rows_for(&id);
        prop_assert_eq!(rows.len(), 1);
        prop_assert!(
            rows[0].mail.ends_with(&msg),
            "stored {:?}",
            String::from_utf8_lossy(&rows[0].mail)
        );
        prop_assert_eq!(rows[0].size, msg.len() as i64);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn client_vanishing_mid_data_stores_nothing_and_server_carries_on() {
    let server = Server::start();
    {
        let mut c = server.ehlo_client();
        c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
        c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
        c.cmd_expect("DATA", 354, "");
        c.send(b"Subject: cut\r\n\r\nhalf a message\r\n");
        // Dropped here: EOF in the middle of DATA.
    }
    {
        // And one that resets the connection right after the final dot.
        let mut c = server.ehlo_client();
        c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
        c.cmd_expect("RCPT TO:<y@example.com>", 250, "2.1.5");
        c.cmd_expect("DATA", 354, "");
        c.send(b"Subject: gone\r\n\r\nbye\r\n.\r\n");
        let _ = c.stream().shutdown(std::net::Shutdown::Both);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut c = server.ehlo_client();
    let id = c.deliver("a@b.example", &["z@example.com"], &simple_message("after"));
    let rows = server.rows();
    // The cut message is never stored; the one completed before the reset may be.
    assert!(
        rows.iter().all(|r| r.recipient != "x@example.com"),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.hash == id));
}

#[test]
fn half_close_behind_a_command_is_answered_and_closed_at_once() {
    // A command and the client's FIN arrive together (one write, then shutdown):
    // the command is answered and the server sees the EOF behind it and closes
    // now, not at the idle timeout. Once after a message, once after a NOOP.
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<fin@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(b"Subject: fin\r\n\r\nlast words\r\n.\r\n");
    c.stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let id = c.expect(250, "2.0.0").queue_id();
    c.expect_closed();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recipient, "fin@example.com");

    for _ in 0..5 {
        let mut c = server.ehlo_client();
        c.send(b"NOOP\r\n");
        c.stream()
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let started = std::time::Instant::now();
        c.expect(250, "2.0.0");
        c.expect_closed();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed only after {:?}",
            started.elapsed()
        );
    }
}
