//! Bounds: recipients per message (RFC 5321 §4.5.3.1.8), the command and DATA
//! timeouts (§4.5.3.2), the connection limit, and many concurrent connections.

use std::time::{Duration, Instant};

use crate::support::{Client, Opts, ReadError, Server, simple_message};

#[test]
fn recipients_over_limit_get_452_and_the_first_are_kept() {
    let server = Server::with_config("[limits]\nmax_recipients = 3\n");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    for i in 0..3 {
        c.cmd_expect(&format!("RCPT TO:<r{i}@example.com>"), 250, "2.1.5");
    }
    c.cmd_expect("RCPT TO:<r3@example.com>", 452, "4.5.3");
    c.cmd_expect("RCPT TO:<r4@example.com>", 452, "4.5.3");
    c.cmd_expect("DATA", 354, "");
    c.send(&simple_message("limit"));
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let mut got: Vec<String> = server
        .rows_for(&id)
        .into_iter()
        .map(|r| r.recipient)
        .collect();
    got.sort();
    assert_eq!(got, ["r0@example.com", "r1@example.com", "r2@example.com"]);
}

#[test]
fn default_recipient_limit_is_100() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let mut wire = b"MAIL FROM:<a@b.example>\r\n".to_vec();
    for i in 0..101 {
        wire.extend_from_slice(format!("RCPT TO:<r{i}@example.com>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"DATA\r\n");
    c.send(&wire);
    c.expect(250, "2.1.0");
    for _ in 0..100 {
        c.expect(250, "2.1.5");
    }
    c.expect(452, "4.5.3");
    c.expect(354, "");
    c.send(&simple_message("hundred"));
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|r| r.recipient != "r100@example.com"));
}

#[test]
fn idle_client_gets_421_after_command_timeout() {
    let server = Server::with_config("[timeouts]\ncommand_secs = 1\n");
    let mut c = server.ehlo_client();
    let start = Instant::now();
    let r = c.read_reply();
    let waited = start.elapsed();
    r.assert(421, "4.4.2");
    assert!(
        waited >= Duration::from_millis(800) && waited <= Duration::from_secs(4),
        "timeout after {waited:?}, configured 1 s"
    );
    c.expect_closed();
}

#[test]
fn command_timeout_is_per_command_not_per_session() {
    let server = Server::with_config("[timeouts]\ncommand_secs = 1\n");
    let mut c = server.ehlo_client();
    // 3 s of activity, a command every 400 ms: never idle for 1 s.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        c.cmd_expect("NOOP", 250, "2.0.0");
    }
}

#[test]
fn silent_client_in_data_gets_421_and_nothing_is_stored() {
    let server = Server::with_config("[timeouts]\ncommand_secs = 30\ndata_secs = 1\n");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(b"Subject: partial\r\n\r\nsome text but no end");
    let start = Instant::now();
    let r = c.read_reply();
    let waited = start.elapsed();
    r.assert(421, "4.4.2");
    assert!(
        waited <= Duration::from_secs(4),
        "data timeout after {waited:?}"
    );
    c.expect_closed();
    assert_eq!(server.row_count(), 0);
}

#[test]
fn data_timeout_counts_silence_not_total_time() {
    let server = Server::with_config("[timeouts]\ncommand_secs = 30\ndata_secs = 1\n");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    let mut msg = b"Subject: slow\r\n\r\n".to_vec();
    c.send(&msg);
    // 3 s in total, a line every 400 ms.
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        let line = format!("line {i}\r\n");
        c.send(line.as_bytes());
        msg.extend_from_slice(line.as_bytes());
    }
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    crate::support::assert_mail_blob(&server.rows_for(&id)[0].mail, "client.test", &msg);
}

/// Connects and reads the first reply (220 or 421).
fn connect_first_reply(server: &Server) -> (Client, Result<crate::support::Reply, ReadError>) {
    let mut c = Client::connect(server.addr);
    let r = c.try_read_reply();
    (c, r)
}

#[test]
fn max_clients_refuses_extra_connections_with_421() {
    let server = Server::with_args(&["--max-clients", "3"]);
    let mut held: Vec<Client> = (0..3).map(|_| server.client()).collect();
    let (mut fourth, r) = connect_first_reply(&server);
    match r {
        Ok(r) => {
            r.assert(421, "4.7.0");
        }
        Err(e) => panic!("4th connection: expected 421 4.7.0, got {e:?}"),
    }
    fourth.expect_closed();
    // The three are still served.
    for c in &mut held {
        c.cmd_expect("NOOP", 250, "2.0.0");
    }
    // One quits; then a new connection is accepted (retry briefly: the server may
    // need a moment to count the close).
    held[0].quit();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut new = loop {
        let (c, r) = connect_first_reply(&server);
        match r {
            Ok(r) if r.code == 220 => break c,
            Ok(r) if r.code == 421 => {}
            other => panic!("unexpected first reply {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed within 5 s after a client quit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    new.ehlo("client.test");
    new.deliver("a@b.example", &["x@example.com"], &simple_message("slot"));
}

#[test]
fn max_clients_from_config_file() {
    let server = Server::start_with(Opts::config("[server]\nmax_clients = 1\n"));
    let _first = server.client();
    let (mut second, r) = connect_first_reply(&server);
    r.expect("second connection gets a reply")
        .assert(421, "4.7.0");
    second.expect_closed();
}

#[test]
fn fifty_connections_twenty_messages_each_all_stored() {
    const CONNS: usize = 50;
    const MSGS: usize = 20;
    let server = Server::start();
    let addr = server.addr;
    let threads: Vec<_> = (0..CONNS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.expect(220, "");
                c.ehlo(&format!("load{t}.test"));
                let mut ids = Vec::with_capacity(MSGS);
                for m in 0..MSGS {
                    let rcpt = format!("c{t}m{m}@example.com");
                    let id = c.deliver(
                        "load@b.example",
                        &[&rcpt],
                        &simple_message(&format!("load {t} {m}")),
                    );
                    ids.push((id, rcpt));
                }
                c.quit();
                ids
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in threads {
        acked.extend(t.join().expect("client thread"));
    }
    assert_eq!(acked.len(), CONNS * MSGS);
    let rows = server.rows();
    assert_eq!(rows.len(), CONNS * MSGS, "row count");
    let stored: std::collections::HashMap<&str, &str> = rows
        .iter()
        .map(|r| (r.hash.as_str(), r.recipient.as_str()))
        .collect();
    assert_eq!(stored.len(), CONNS * MSGS, "queue ids must be unique");
    for (id, rcpt) in &acked {
        assert_eq!(stored.get(id.as_str()), Some(&rcpt.as_str()), "id {id}");
    }
}
