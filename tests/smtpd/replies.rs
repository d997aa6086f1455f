//! Replies: the greeting, EHLO/HELO, each command's code and enhanced code (RFC 5321
//! §4.2, RFC 3463), command sequencing (§4.1.4), argument syntax, the recipient
//! domain policy, PIPELINING (RFC 2920) and SMTPUTF8/8BITMIME (RFC 6531, 6152).

use crate::support::{Client, HOSTNAME, Opts, Server, assert_mail_blob, simple_message};

#[test]
fn greeting_is_220_with_hostname_and_esmtp() {
    let server = Server::start();
    let mut c = Client::connect(server.addr);
    let r = c.expect(220, "");
    assert_eq!(r.lines.len(), 1, "{r:?}");
    assert!(
        r.lines[0].starts_with(&format!("220 {HOSTNAME} ESMTP")),
        "{r:?}"
    );
}

#[test]
fn ehlo_advertises_hostname_and_extensions() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.cmd_expect("EHLO client.test", 250, "");
    assert!(
        r.lines[0].starts_with(&format!("250-{HOSTNAME}")),
        "first EHLO line must name the host: {r:?}"
    );
    let last = r.lines.last().unwrap();
    assert!(last.starts_with("250 "), "{r:?}");
    for l in &r.lines[..r.lines.len() - 1] {
        assert!(l.starts_with("250-"), "{r:?}");
    }
    let keywords: Vec<String> = r.lines[1..]
        .iter()
        .map(|l| l[4..].to_ascii_uppercase())
        .collect();
    for ext in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"] {
        assert!(keywords.iter().any(|k| k == ext), "{ext} missing: {r:?}");
    }
    assert!(
        keywords.iter().any(|k| k == "SIZE 10485760"),
        "SIZE must advertise the default max_message_bytes: {r:?}"
    );
    // Not configured: must not be offered.
    assert!(!keywords.iter().any(|k| k == "STARTTLS"), "{r:?}");
}

#[test]
fn ehlo_size_follows_max_message_bytes() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 4096\n");
    let mut c = server.client();
    let r = c.ehlo("client.test");
    assert!(r.lines.iter().any(|l| &l[4..] == "SIZE 4096"), "{r:?}");
}

#[test]
fn helo_replies_250_hostname() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.cmd_expect("HELO client.test", 250, "");
    assert_eq!(r.lines.len(), 1);
    assert!(r.lines[0].starts_with(&format!("250 {HOSTNAME}")), "{r:?}");
    // HELO is enough for a transaction.
    let id = c.deliver("a@b.example", &["x@example.com"], &simple_message("helo"));
    assert_eq!(server.rows_for(&id).len(), 1);
}

#[test]
fn transaction_codes_and_queue_id_is_stored_hash() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<sender@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<rcpt@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(&simple_message("codes"));
    c.send(b".\r\n");
    let r = c.read_reply();
    let id = r.queue_id();
    assert!(r.lines[0].starts_with("250 2.0.0 OK queued as "), "{r:?}");
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].hash, id);
    assert_eq!(rows[0].recipient, "rcpt@example.com");
    c.quit();
}

#[test]
fn rset_noop_vrfy_help() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("NOOP", 250, "2.0.0");
    c.cmd_expect("RSET", 250, "2.0.0");
    c.cmd_expect("VRFY someone", 252, "2.5.0");
    c.cmd_expect("HELP", 214, "2.0.0");
    // RSET clears a transaction: RCPT then needs a new MAIL.
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RSET", 250, "2.0.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
}

#[test]
fn commands_are_case_insensitive() {
    let server = Server::start();
    let mut c = server.client();
    c.cmd_expect("ehlo client.test", 250, "");
    c.cmd_expect("mail from:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("rcpt to:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("noop", 250, "2.0.0");
}

#[test]
fn quit_replies_221_and_closes() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.quit();
}

#[test]
fn unimplemented_commands_get_502() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    for cmd in [
        "EXPN list",
        "TURN",
        "ETRN example.com",
        "AUTH PLAIN",
        "STARTTLS",
    ] {
        let r = c.cmd(cmd);
        r.assert(502, "5.5.1");
    }
    // Still usable.
    c.deliver(
        "a@b.example",
        &["x@example.com"],
        &simple_message("after 502"),
    );
}

#[test]
fn unknown_command_gets_500() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("FOO bar", 500, "5.5.2");
    c.cmd_expect("XYZZY", 500, "5.5.2");
    c.cmd_expect("NOOP", 250, "2.0.0");
}

#[test]
fn command_line_of_512_octets_is_accepted() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    // "NOOP " + 505 + CRLF = 512 octets: the RFC 5321 §4.5.3.1.4 maximum.
    let line = format!("NOOP {}", "x".repeat(505));
    assert_eq!(line.len() + 2, 512);
    c.cmd_expect(&line, 250, "2.0.0");
}

#[test]
fn command_line_over_512_octets_gets_500_and_session_continues() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let line = format!("NOOP {}", "x".repeat(506));
    assert_eq!(line.len() + 2, 513);
    c.cmd_expect(&line, 500, "5.5.2");
    c.cmd_expect("NOOP", 250, "2.0.0");
    // A very long line (100 KB) gets exactly one 500, then the next command works.
    let long = format!("MAIL FROM:<{}@b.example>", "y".repeat(100_000));
    c.cmd_expect(&long, 500, "5.5.2");
    c.cmd_expect("NOOP", 250, "2.0.0");
    // The overlong MAIL was not executed: a transaction can start normally.
    c.deliver(
        "a@b.example",
        &["x@example.com"],
        &simple_message("after long"),
    );
}

#[test]
fn overlong_line_in_pieces_gets_one_500() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    // Sent in several writes, with pauses, so the server sees it in parts.
    for _ in 0..5 {
        c.send(&[b'z'; 700]);
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    c.send(b"\r\nNOOP\r\n");
    c.expect(500, "5.5.2");
    c.expect(250, "2.0.0");
    c.assert_quiet(std::time::Duration::from_millis(300));
}

#[test]
fn helo_and_ehlo_without_domain_get_501() {
    let server = Server::start();
    let mut c = server.client();
    c.cmd_expect("EHLO", 501, "5.5.4");
    c.cmd_expect("HELO", 501, "5.5.4");
    // Still not greeted.
    c.cmd_expect("MAIL FROM:<a@b.example>", 503, "5.5.1");
    c.ehlo("client.test");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
}

#[test]
fn unbalanced_sender_path_gets_501_5_1_7() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b", 501, "5.1.7");
    // No transaction was opened.
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1");
}

#[test]
fn recipient_with_control_character_gets_501_5_1_3() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_bytes(b"RCPT TO:<x\x01y@example.com>")
        .assert(501, "5.1.3");
    c.cmd_expect("RCPT TO:<>", 501, "5.1.3");
    // The transaction is still open and usable.
    c.cmd_expect("RCPT TO:<ok@example.com>", 250, "2.1.5");
}

#[test]
fn bad_sequences_get_503() {
    let server = Server::start();
    let mut c = server.client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 503, "5.5.1"); // before EHLO
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1"); // before EHLO
    c.cmd_expect("DATA", 503, "5.5.1"); // before EHLO
    c.ehlo("client.test");
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1"); // before MAIL
    c.cmd_expect("DATA", 503, "5.5.1"); // before MAIL
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("DATA", 503, "5.5.1"); // before any RCPT
    c.cmd_expect("MAIL FROM:<c@d.example>", 503, "5.5.1"); // nested MAIL
    // The first transaction is intact.
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(&simple_message("sequence"));
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].from, "a@b.example");
}

#[test]
fn unknown_mail_parameter_gets_555_and_session_unchanged() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example> FOO=BAR", 555, "5.5.4");
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
}

#[test]
fn mail_size_over_limit_gets_552_and_session_unchanged() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 2048\n");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example> SIZE=2049", 552, "5.3.4");
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RSET", 250, "2.0.0");
    c.cmd_expect("MAIL FROM:<a@b.example> SIZE=99999999999", 552, "5.3.4");
    c.cmd_expect("MAIL FROM:<a@b.example> SIZE=1000", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
}

fn policy_server() -> Server {
    Server::with_args(&[
        "--accept-domain",
        "example.com",
        "--accept-domain",
        "*.example.net",
    ])
}

#[test]
fn domain_policy_accepts_listed_domains_and_subdomains_only() {
    let server = policy_server();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<sender@anywhere.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<a@example.com>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<b@EXAMPLE.com>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<c@sub.example.net>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<d@deep.sub.example.net>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<e@example.net>", 550, "5.7.1");
    c.cmd_expect("RCPT TO:<f@other.org>", 550, "5.7.1");
    c.cmd_expect("RCPT TO:<g@notexample.com>", 550, "5.7.1");
    c.cmd_expect("RCPT TO:<h@example.com.evil.org>", 550, "5.7.1");
    c.cmd_expect("RCPT TO:<postmaster>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(&simple_message("policy"));
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let mut got: Vec<String> = server
        .rows_for(&id)
        .into_iter()
        .map(|r| r.recipient.to_ascii_lowercase())
        .collect();
    got.sort();
    // Domains are case-insensitive: `b@EXAMPLE.com` may be stored either way.
    let mut want = vec![
        "a@example.com",
        "b@example.com",
        "c@sub.example.net",
        "d@deep.sub.example.net",
        "postmaster",
    ];
    want.sort();
    assert_eq!(got, want, "one row per accepted recipient");
}

#[test]
fn domain_policy_star_accepts_any_domain() {
    let server = Server::with_args(&["--accept-domain", "*"]);
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@other.org>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<y@example.net>", 250, "2.1.5");
}

#[test]
fn domain_policy_from_config_file() {
    let server = Server::start_with(Opts::config(
        "[server]\naccept_domains = [\"example.com\"]\n",
    ));
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<x@example.org>", 550, "5.7.1");
}

#[test]
fn data_after_only_refused_recipients_gets_554() {
    let server = policy_server();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@other.org>", 550, "5.7.1");
    c.cmd_expect("RCPT TO:<y@example.net>", 550, "5.7.1");
    c.cmd_expect("DATA", 554, "5.5.1");
    // No 354 was sent, so the next line is a command again.
    c.cmd_expect("NOOP", 250, "2.0.0");
    assert_eq!(server.row_count(), 0);
}

#[test]
fn pipelined_transaction_gets_replies_in_order() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.send(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nDATA\r\n",
    );
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    let msg = simple_message("pipelined");
    c.send(&msg);
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_mail_blob(&r.mail, "client.test", &msg);
    }
}

#[test]
fn whole_session_in_one_write() {
    let server = Server::start();
    let mut c = Client::connect(server.addr);
    let msg = simple_message("one write");
    let mut all =
        b"EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n"
            .to_vec();
    all.extend_from_slice(&msg);
    all.extend_from_slice(b".\r\nQUIT\r\n");
    c.send(&all);
    c.expect(220, "");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    let id = c.read_reply().queue_id();
    c.expect(221, "2.0.0");
    c.expect_closed();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_mail_blob(&rows[0].mail, "client.test", &msg);
}

#[test]
fn pipelined_messages_back_to_back_are_all_stored() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    const N: usize = 20;
    let mut all = Vec::new();
    for i in 0..N {
        all.extend_from_slice(
            format!("MAIL FROM:<s{i}@b.example>\r\nRCPT TO:<r{i}@example.com>\r\nDATA\r\n")
                .as_bytes(),
        );
        all.extend_from_slice(&simple_message(&format!("pipelined {i}")));
        all.extend_from_slice(b".\r\n");
    }
    c.send(&all);
    let mut ids = Vec::new();
    for _ in 0..N {
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        ids.push(c.read_reply().queue_id());
    }
    c.quit();
    let rows = server.rows();
    assert_eq!(rows.len(), N);
    for (i, id) in ids.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| &r.hash == id)
            .unwrap_or_else(|| panic!("id {id} not stored"));
        assert_eq!(row.recipient, format!("r{i}@example.com"));
        assert_eq!(row.subject, format!("pipelined {i}"));
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), N, "queue ids must be unique");
}

#[test]
fn smtputf8_and_8bitmime_are_accepted() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect(
        "MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8",
        250,
        "2.1.0",
    );
    c.cmd_expect("RCPT TO:<üser@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    let mut msg =
        "Subject: grüße\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße, 世界, \u{1F600}\r\n"
            .as_bytes()
            .to_vec();
    // Raw 8-bit (not even UTF-8) octets in the body are stored as they are.
    msg.extend_from_slice(b"\xfe\xff raw octets\r\n");
    c.send(&msg);
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recipient, "üser@example.com");
    assert_mail_blob(&rows[0].mail, "client.test", &msg);
}

#[test]
fn body_7bit_parameter_is_accepted() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example> BODY=7BIT", 250, "2.1.0");
    c.cmd_expect("RSET", 250, "2.0.0");
    c.cmd_expect(
        "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME",
        250,
        "2.1.0",
    );
}

#[test]
fn null_sender_is_accepted_and_stored_as_empty() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    let id = c.deliver("", &["x@example.com"], &simple_message("bounce"));
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].from, "");
}

#[test]
fn rset_mid_transaction_forgets_recipients() {
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<forgotten@example.com>", 250, "2.1.5");
    c.cmd_expect("RSET", 250, "2.0.0");
    let id = c.deliver(
        "c@d.example",
        &["kept@example.com"],
        &simple_message("rset"),
    );
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].hash, id);
    assert_eq!(rows[0].recipient, "kept@example.com");
    assert_eq!(rows[0].from, "c@d.example");
}

#[test]
fn second_ehlo_resets_the_transaction() {
    // RFC 5321 §4.1.4: a later EHLO clears state exactly as RSET does.
    let server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.ehlo("again.test");
    c.cmd_expect("RCPT TO:<x@example.com>", 503, "5.5.1");
    let id = c.deliver("a@b.example", &["y@example.com"], &simple_message("again"));
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].helo, "again.test",
        "the latest EHLO name is recorded"
    );
}

#[test]
fn address_literal_helo_quoted_local_part_and_source_route_are_accepted() {
    // RFC 5321 §4.1.3 (address literals), §4.1.2 (quoted local parts), and
    // Appendix C (source routes: accept and ignore). Real clients send all three.
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("[127.0.0.1]");
    c.cmd_expect("MAIL FROM:<a@[127.0.0.1]>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<\"john doe\"@example.com>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<@relay.example:routed@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(&simple_message("literals"));
    c.send(b".\r\n");
    let id = c.read_reply().queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.helo == "[127.0.0.1]"));
    assert!(
        rows.iter().any(|r| r.recipient.contains("john doe")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.recipient.ends_with("routed@example.com")),
        "{rows:?}"
    );
}
