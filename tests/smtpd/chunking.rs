//! RFC 3030 CHUNKING and BINARYMIME against the live server: chunks read by count,
//! pipelined, refused chunks consumed, sizes counted, and the same stored row as a
//! DATA message with `250` only after the commit.

use std::time::Duration;

use crate::support::{Server, assert_mail_blob, simple_message};

/// `BDAT <n> [LAST]` followed by exactly the chunk's octets.
fn chunk(bytes: &[u8], last: bool) -> Vec<u8> {
    let mut v = format!(
        "BDAT {}{}\r\n",
        bytes.len(),
        if last { " LAST" } else { "" }
    )
    .into_bytes();
    v.extend_from_slice(bytes);
    v
}

#[test]
fn ehlo_offers_chunking_and_binarymime() {
    let server = Server::start();
    let mut c = server.client();
    let r = c.ehlo("client.example");
    assert!(r.lines.iter().any(|l| l == "250-CHUNKING"), "{:?}", r.lines);
    assert!(
        r.lines.iter().any(|l| l == "250-BINARYMIME"),
        "{:?}",
        r.lines
    );
}

/// A message in three pipelined chunks, one of which holds `CRLF.CRLF` and text that
/// looks like commands: stored exactly, in the same row a DATA message would give.
#[test]
fn a_chunked_message_is_stored_like_data_and_acknowledged_after_the_commit() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    let message = b"From: a@sender.example\r\nTo: b@example.com\r\nSubject: chunked\r\n\r\nline one\r\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.com>\r\nlast line\r\n";
    let (a, rest) = message.split_at(30);
    let (b, d) = rest.split_at(50);
    let mut input = b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<b@example.com>\r\n".to_vec();
    input.extend(chunk(a, false));
    input.extend(chunk(b, false));
    input.extend(chunk(d, true));
    c.send(&input);
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    assert!(c.expect(250, "2.0.0").text().contains("30 octets"));
    assert!(c.expect(250, "2.0.0").text().contains("50 octets"));
    let id = c.expect(250, "2.0.0").queue_id();
    let rows = server.rows_for(&id);
    assert_eq!(
        rows.len(),
        1,
        "one row per recipient, and no smuggled message"
    );
    assert_eq!(server.row_count(), 1);
    let row = &rows[0];
    assert_eq!(row.recipient, "b@example.com");
    assert_eq!(row.subject, "chunked");
    assert_eq!(row.size as usize, message.len());
    assert_mail_blob(&row.mail, "client.example", message);

    // The same message by DATA gives the same columns.
    let data_id = c.deliver(
        "a@sender.example",
        &["b@example.com"],
        &crate::support::dot_stuff(message),
    );
    let data_row = &server.rows_for(&data_id)[0];
    assert_eq!(
        (
            &data_row.subject,
            &data_row.to,
            data_row.size,
            &data_row.content_type
        ),
        (&row.subject, &row.to, row.size, &row.content_type)
    );
    assert_mail_blob(&data_row.mail, "client.example", message);
    c.quit();
}

#[test]
fn refused_chunks_are_read_and_dropped_never_run_as_commands() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    // No MAIL: the chunk's octets are a whole transaction in disguise.
    let smuggled = b"MAIL FROM:<e@x.example>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nhi\r\n.\r\n";
    let mut input = chunk(smuggled, true);
    input.extend_from_slice(b"NOOP\r\n");
    c.send(&input);
    c.expect(503, "5.5.1");
    c.expect(250, "2.0.0");
    // MAIL but no RCPT.
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    let mut input = chunk(b"RSET\r\n", true);
    input.extend_from_slice(b"NOOP\r\n");
    c.send(&input);
    c.expect(503, "5.5.1");
    c.expect(250, "2.0.0");
    // DATA after a chunk in the same transaction.
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.send(&chunk(b"Subject: s\r\n\r\n", false));
    c.expect(250, "2.0.0");
    c.cmd_expect("DATA", 503, "5.5.1");
    c.send(&chunk(b"body\r\n", true));
    c.expect(250, "2.0.0").queue_id();
    assert_eq!(server.row_count(), 1);
    // BINARYMIME needs BDAT.
    c.cmd_expect("MAIL FROM:<a@b.example> BODY=BINARYMIME", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 503, "5.5.1");
    c.quit();
}

#[test]
fn binarymime_is_stored_exactly_and_text_chunks_follow_the_line_rules() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    let mut binary = b"Subject: bin\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    binary.extend((0..=255u8).cycle().take(3000));
    binary.extend_from_slice(b"\n.\n\r.\r");
    c.cmd_expect("MAIL FROM:<a@b.example> BODY=BINARYMIME", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.send(&chunk(&binary, true));
    let id = c.expect(250, "2.0.0").queue_id();
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.example", &binary);

    // Without BINARYMIME a bare LF refuses the message (as in DATA), and the
    // session goes on.
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.send(&chunk(b"Subject: s\r\n\r\nbare\nlf\r\n", true));
    c.expect(550, "5.6.0");
    c.cmd_expect("NOOP", 250, "2.0.0");
    assert_eq!(server.row_count(), 1);
}

#[test]
fn chunk_sizes_count_against_the_message_limit() {
    let server = Server::with_config("[limits]\nmax_message_bytes = 10000\n");
    let mut c = server.client();
    c.ehlo("client.example");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    let part = format!("{}\r\n", "y".repeat(98)).repeat(60); // 6,000 octets
    let mut input = chunk(part.as_bytes(), false);
    input.extend(chunk(part.as_bytes(), false));
    input.extend(chunk(part.as_bytes(), true));
    input.extend_from_slice(b"NOOP\r\n");
    c.send(&input);
    c.expect(250, "2.0.0");
    c.expect(552, "5.3.4");
    c.expect(552, "5.3.4");
    c.expect(250, "2.0.0");
    // One declared chunk far over the limit is drained without being kept.
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    let big = vec![b'z'; 200_000];
    c.send(&chunk(&big, true));
    c.expect(552, "5.3.4");
    // The connection is still usable and a normal message still goes through.
    c.send(
        &[
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n".as_slice(),
            &chunk(&simple_message("after"), true),
        ]
        .concat(),
    );
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.0.0").queue_id();
    assert_eq!(server.row_count(), 1);
}

/// `250` after LAST only once the commit has happened: with the store failing, the
/// client gets 451 and nothing is stored.
#[test]
fn a_failed_commit_answers_last_with_451() {
    let server = Server::start();
    server
        .db()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON new_mail BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
    let mut c = server.client();
    c.ehlo("client.example");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.send(&chunk(&simple_message("fails"), true));
    c.expect(451, "4.3.0");
    server.db().execute_batch("DROP TRIGGER refuse;").unwrap();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.send(&chunk(&simple_message("works"), true));
    c.expect(250, "2.0.0");
    assert_eq!(server.row_count(), 1);
}

#[test]
fn a_bdat_without_a_size_ends_the_session() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.send(b"BDAT many LAST\r\nQUIT\r\n");
    c.expect(501, "5.5.4");
    c.expect(421, "4.7.0");
    c.expect_closed();
}

/// A chunk whose octets trickle in is message content: it is timed by the DATA
/// timeout and completes.
#[test]
fn a_chunk_split_over_many_writes_completes() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    let message = simple_message("trickle");
    c.send(format!("BDAT {} LAST\r\n", message.len()).as_bytes());
    for piece in message.chunks(7) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(5));
    }
    let id = c.expect(250, "2.0.0").queue_id();
    assert_mail_blob(&server.rows_for(&id)[0].mail, "client.example", &message);
}
