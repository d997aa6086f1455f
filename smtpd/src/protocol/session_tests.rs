//! Transcript tests for the session: every rule, replayed through the same driver
//! the reactor uses (pending input, feed until no progress, commit answered at once).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_message_bytes: 1000,
        max_recipients: 3,
        max_data_line_bytes: 100,
        domains: DomainPolicy::parse(&["example.com".into(), "*.example.net".into()]).unwrap(),
        starttls: false,
        require_tls: false,
        max_errors: 20,
        max_junk_commands: 100,
    }
}

fn tls_config(require: bool) -> SessionConfig {
    SessionConfig {
        starttls: true,
        require_tls: require,
        ..config()
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    messages: Vec<Envelope>,
    closed: bool,
    phase: Phase,
}

impl Run {
    /// Each reply's code and enhanced code (or the whole line when short), one
    /// entry per reply: the continuation lines of a multi-line reply (`250-…`,
    /// RFC 5321 §4.2.1) are skipped, so the EHLO reply counts once whatever it
    /// offers.
    fn codes(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.out)
            .split_terminator("\r\n")
            .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
            .map(|l| l.get(..9).unwrap_or(l).trim_end().to_string())
            .collect()
    }
}

/// Drives a session like the reactor does; `store` answers each message.
fn drive_with(
    config: SessionConfig,
    chunks: &[&[u8]],
    store: impl FnMut(usize) -> Result<QueueId, StoreFailed>,
) -> Run {
    drive_opened(Opening::Greet, config, chunks, store)
}

/// [`drive_with`] for any way of opening; a PROXY header is admitted at once and
/// a held banner is never released (the input must wait for it, or be refused).
fn drive_opened(
    opening: Opening,
    config: SessionConfig,
    chunks: &[&[u8]],
    mut store: impl FnMut(usize) -> Result<QueueId, StoreFailed>,
) -> Run {
    let mut session = Session::opening(Arc::new(config), IpAddr::V4(Ipv4Addr::LOCALHOST), opening);
    let mut out = Vec::new();
    if opening == Opening::Greet {
        session.greet(&mut out);
    }
    let mut pending = Vec::new();
    let mut messages = Vec::new();
    let mut closed = false;
    'chunks: for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let fed = session.feed(&pending, &mut out);
            assert!(fed.consumed <= pending.len());
            pending.drain(..fed.consumed);
            // Bounded memory: unconsumed input never exceeds one command line (or,
            // before a PROXY header, the longest header). Input that arrived behind
            // a header waiting for admission is one read's worth, like input behind
            // a message being committed.
            let limit = if matches!(fed.event, Some(Event::Proxy(_))) {
                usize::MAX
            } else if matches!(session.state, State::AwaitingProxy) {
                crate::protocol::proxy::MAX_PROXY_HEADER_BYTES
            } else {
                MAX_COMMAND_LINE_BYTES
            };
            if session.phase() == Phase::Command {
                assert!(pending.len() < limit, "pending {}", pending.len());
            }
            match fed.event {
                Some(Event::Message(envelope)) => {
                    assert_eq!(session.phase(), Phase::Storing);
                    assert!(!session.wants_read());
                    let result = store(messages.len());
                    messages.push(envelope);
                    session.on_stored(result, &mut out);
                }
                Some(Event::Close) => {
                    closed = true;
                    break 'chunks;
                }
                Some(Event::StartTls) => {
                    pending.clear();
                    session.set_tls(true);
                }
                Some(Event::Proxy(_)) => session.admit(&mut out),
                Some(Event::BadProxy(_)) => {
                    closed = true;
                    break 'chunks;
                }
                None if fed.consumed == 0 => break,
                None => {}
            }
        }
    }
    Run {
        out,
        messages,
        closed,
        phase: session.phase(),
    }
}

fn drive(chunks: &[&[u8]]) -> Run {
    drive_with(config(), chunks, |n| Ok(QueueId([n as u8; 16])))
}

fn one(input: &str) -> Run {
    drive(&[input.as_bytes()])
}

const TXN: &str =
    "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n";

#[test]
fn a_whole_pipelined_transaction_is_answered_in_order() {
    let run = one(&format!("{TXN}Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"));
    assert_eq!(
        run.codes(),
        [
            "220 mx.te",
            "250 SMTPU",
            "250 2.1.0",
            "250 2.1.5",
            "354 End d",
            "250 2.0.0",
            "221 2.0.0",
        ]
    );
    assert!(run.closed);
    assert_eq!(run.phase, Phase::Closed);
    let m = &run.messages[0];
    assert_eq!(m.mail_from, "a@sender.example");
    assert_eq!(m.rcpt_to, ["b@example.com"]);
    assert_eq!(m.data, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(m.helo, "client.example");
    assert!(m.esmtp && !m.smtputf8 && !m.body_8bit && !m.is_tls);
    let text = String::from_utf8(run.out).unwrap();
    assert!(text.contains("250 2.0.0 OK queued as 00000000000000000000000000000000\r\n"));
}

#[test]
fn helo_sessions_are_not_esmtp() {
    let run = one("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n.\r\n");
    assert_eq!(run.codes()[1], "250 mx.te");
    let m = &run.messages[0];
    assert!(!m.esmtp);
    assert_eq!(m.mail_from, "");
    assert_eq!(m.data, b"");
}

#[test]
fn sequence_errors_are_503() {
    let run = one(
        "MAIL FROM:<a@b.example>\r\nEHLO c\r\nRCPT TO:<x@example.com>\r\nDATA\r\n\
         MAIL FROM:<a@b.example>\r\nDATA\r\nMAIL FROM:<a@b.example>\r\n",
    );
    let codes = run.codes();
    assert_eq!(codes[1], "503 5.5.1"); // MAIL before EHLO
    assert_eq!(codes[3], "503 5.5.1"); // RCPT before MAIL
    assert_eq!(codes[4], "503 5.5.1"); // DATA before MAIL
    assert_eq!(codes[5], "250 2.1.0");
    assert_eq!(codes[6], "503 5.5.1"); // DATA before RCPT
    assert_eq!(codes[7], "503 5.5.1"); // nested MAIL
    assert!(String::from_utf8_lossy(&run.out).contains("nested MAIL"));
}

#[test]
fn simple_commands() {
    let run = one(
        "EHLO c\r\nNOOP hello\r\nRSET\r\nVRFY bob\r\nHELP\r\nEXPN list\r\nFOO\r\nDATA x\r\nEHLO\r\n",
    );
    let codes = run.codes();
    assert_eq!(
        codes[2..],
        [
            "250 2.0.0",
            "250 2.0.0",
            "252 2.5.0",
            "214 2.0.0",
            "502 5.5.1",
            "500 5.5.2",
            "501 5.5.4",
            "501 5.5.4"
        ]
    );
}

#[test]
fn foreign_domains_are_relay_denied_and_data_then_says_554() {
    let run = one(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.org>\r\nRCPT TO:<y@example.net>\r\n\
         RCPT TO:<postmaster>\r\nRCPT TO:<z@Sub.Example.NET>\r\nRCPT TO:<q@EXAMPLE.com>\r\nDATA\r\n.\r\n",
    );
    let codes = run.codes();
    assert_eq!(
        &codes[3..8],
        [
            "550 5.7.1",
            "550 5.7.1",
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5"
        ]
    );
    assert_eq!(
        run.messages[0].rcpt_to,
        ["postmaster", "z@sub.example.net", "q@example.com"]
    );

    let run = one("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.org>\r\nDATA\r\n");
    assert_eq!(run.codes().last().unwrap(), "554 5.5.1");
}

#[test]
fn recipients_over_the_limit_get_452_and_the_first_are_kept() {
    let run = one(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<1@example.com>\r\nRCPT TO:<2@example.com>\r\n\
         RCPT TO:<1@EXAMPLE.COM>\r\nRCPT TO:<3@example.com>\r\nRCPT TO:<4@example.com>\r\nDATA\r\n.\r\n",
    );
    let codes = run.codes();
    assert_eq!(
        &codes[3..8],
        [
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3"
        ]
    );
    assert_eq!(
        run.messages[0].rcpt_to,
        ["1@example.com", "2@example.com", "3@example.com"]
    );
}

#[test]
fn size_over_the_limit_leaves_the_session_as_it_was() {
    let run = one(
        "EHLO c\r\nMAIL FROM:<a@b.example> SIZE=1001\r\nRCPT TO:<x@example.com>\r\n\
         MAIL FROM:<a@b.example> SIZE=1000\r\nRCPT TO:<x@example.com>\r\n",
    );
    assert_eq!(
        &run.codes()[2..],
        ["552 5.3.4", "503 5.5.1", "250 2.1.0", "250 2.1.5"]
    );
}

#[test]
fn parameter_and_path_errors() {
    let run = one(
        "EHLO c\r\nMAIL FROM:<a@b.example> FOO=1\r\nMAIL FROM:<a@b.example\r\nMAIL FROM:<a@b.example>\r\n\
         RCPT TO:<x\x01y@example.com>\r\nRCPT TO:<>\r\nRCPT TO:<ü@example.com>\r\n",
    );
    assert_eq!(
        &run.codes()[2..],
        [
            "555 5.5.4",
            "501 5.1.7",
            "250 2.1.0",
            "501 5.1.3",
            "501 5.1.3",
            "553 5.6.7"
        ]
    );
}

#[test]
fn smtputf8_and_8bitmime_reach_the_envelope() {
    let run = one(
        "EHLO c\r\nMAIL FROM:<ä@b.example> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<ü@example.com>\r\nDATA\r\nh\u{e9}\r\n.\r\n",
    );
    let m = &run.messages[0];
    assert!(m.smtputf8 && m.body_8bit);
    assert_eq!(m.rcpt_to, ["ü@example.com"]);
    assert_eq!(m.data, "h\u{e9}\r\n".as_bytes());
}

#[test]
fn oversized_body_gets_552_and_the_connection_stays_usable() {
    let big = "x".repeat(99);
    let body: String = (0..12).map(|_| format!("{big}\r\n")).collect(); // 1212 octets
    let run = one(&format!("{TXN}{body}.\r\nMAIL FROM:<a@b.example>\r\n"));
    let codes = run.codes();
    assert_eq!(&codes[codes.len() - 2..], ["552 5.3.4", "250 2.1.0"]);
    assert!(run.messages.is_empty());
}

#[test]
fn long_data_lines_refuse_the_message() {
    let run = one(&format!("{TXN}{}\r\n.\r\nNOOP\r\n", "y".repeat(101)));
    assert_eq!(
        &run.codes()[run.codes().len() - 2..],
        ["550 5.6.0", "250 2.0.0"]
    );
    assert!(run.messages.is_empty());
}

#[test]
fn smuggled_commands_after_a_bare_lf_terminator_are_message_text() {
    for fake in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let input = format!(
            "{TXN}Subject: x\r\n\r\nhi{fake}MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n"
        );
        let run = one(&input);
        let codes = run.codes();
        // One reply for the whole message, then the NOOP.
        assert_eq!(
            &codes[codes.len() - 3..],
            ["354 End d", "550 5.6.0", "250 2.0.0"],
            "{fake:?}"
        );
        assert!(run.messages.is_empty(), "{fake:?}");
    }
}

#[test]
fn command_lines_over_512_octets_get_500_and_the_session_goes_on() {
    let long = format!("NOOP {}\r\n", "a".repeat(507)); // 514 octets
    let exact = format!("NOOP {}\r\n", "a".repeat(505)); // 512 octets
    let run = one(&format!("EHLO c\r\n{long}{exact}NOOP\r\n"));
    assert_eq!(&run.codes()[2..], ["500 5.5.2", "250 2.0.0", "250 2.0.0"]);

    // A huge line without an end, arriving in pieces: memory stays bounded
    // (asserted by `drive`) and one 500 comes when the line finally ends.
    let chunk = vec![b'z'; 4096];
    let mut chunks: Vec<&[u8]> = vec![b"EHLO c\r\n"];
    chunks.extend(std::iter::repeat_n(&chunk[..], 10));
    chunks.push(b"\r\nNOOP\r\n");
    let run = drive(&chunks);
    assert_eq!(&run.codes()[2..], ["500 5.5.2", "250 2.0.0"]);
}

#[test]
fn bare_lf_command_lines_are_tolerated() {
    let run = one("EHLO c\nNOOP\n");
    assert_eq!(run.codes().last().unwrap(), "250 2.0.0");
}

#[test]
fn store_failure_is_451_and_the_next_message_works() {
    let run = drive_with(
        config(),
        &[format!("{TXN}one\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\ntwo\r\n.\r\n").as_bytes()],
        |n| if n == 0 { Err(StoreFailed) } else { Ok(QueueId([7; 16])) },
    );
    let codes = run.codes();
    assert!(codes.contains(&"451 4.3.0".to_string()));
    assert_eq!(codes.last().unwrap(), "250 2.0.0");
    assert_eq!(run.messages.len(), 2);
}

#[test]
fn input_behind_a_message_waits_for_the_commit() {
    let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    let input = format!("{TXN}x\r\n.\r\nNOOP\r\n");
    let fed = session.feed(input.as_bytes(), &mut out);
    assert!(matches!(fed.event, Some(Event::Message(_))));
    assert_eq!(&input.as_bytes()[fed.consumed..], b"NOOP\r\n");
    assert!(!session.wants_read());
    assert!(session.in_transaction());
    // Nothing is read while storing.
    let again = session.feed(b"NOOP\r\n", &mut out);
    assert_eq!(again.consumed, 0);
    assert!(!String::from_utf8_lossy(&out).contains("250 2.0.0 OK queued"));
    session.on_stored(Ok(QueueId([1; 16])), &mut out);
    assert!(session.wants_read());
    assert!(!session.in_transaction());
    assert!(
        String::from_utf8_lossy(&out).ends_with("queued as 01010101010101010101010101010101\r\n")
    );
}

#[test]
fn timeout_and_shutdown_close_with_421() {
    for (f, code) in [
        (
            Session::on_timeout as fn(&mut Session, &mut Vec<u8>),
            "421 4.4.2",
        ),
        (Session::on_shutdown, "421 4.3.2"),
    ] {
        let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut out = Vec::new();
        f(&mut session, &mut out);
        assert!(String::from_utf8_lossy(&out).starts_with(code));
        assert_eq!(session.phase(), Phase::Closed);
        assert!(!session.wants_read());
        // Said once only.
        f(&mut session, &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}

#[test]
fn quit_stops_processing_pipelined_input() {
    let run = one("EHLO c\r\nQUIT\r\nNOOP\r\n");
    assert!(run.closed);
    assert_eq!(run.codes().last().unwrap(), "221 2.0.0");
}

#[test]
fn ehlo_resets_the_transaction_and_tls_resets_everything() {
    let run = one("EHLO c\r\nMAIL FROM:<a@b.example>\r\nEHLO c\r\nRCPT TO:<x@example.com>\r\n");
    assert_eq!(run.codes().last().unwrap(), "503 5.5.1");

    let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n", &mut out);
    assert!(session.in_transaction());
    session.set_tls(true);
    assert!(!session.in_transaction());
    out.clear();
    session.feed(b"MAIL FROM:<a@b.example>\r\n", &mut out);
    assert!(out.starts_with(b"503 5.5.1"));
    session.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n.\r\n",
        &mut out,
    );
}

#[test]
fn summary_counts_commands_and_messages() {
    let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    session.feed(format!("{TXN}x\r\n.\r\n").as_bytes(), &mut out);
    session.on_stored(Ok(QueueId([0; 16])), &mut out);
    session.feed(b"BOGUS\r\n", &mut out);
    assert_eq!(
        session.summary().to_string(),
        "helo=client.example commands=5 messages=1 refused=0 errors=1"
    );
}

/// Pieces of client input, good and bad, that transcripts are made of.
const PIECES: &[&str] = &[
    "EHLO client.example\r\n",
    "HELO c\r\n",
    "MAIL FROM:<a@b.example>\r\n",
    "MAIL FROM:<a@b.example> SIZE=5000\r\n",
    "MAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\n",
    "RCPT TO:<x@example.com>\r\n",
    "RCPT TO:<y@a.example.net>\r\n",
    "RCPT TO:<z@other.org>\r\n",
    "RCPT TO:<bad\r\n",
    "DATA\r\n",
    "Subject: s\r\n\r\nline\r\n..dot\r\n.\r\n",
    "bare\nlf\r\n.\r\n",
    "\r\n.\r\n",
    ".\r\n",
    "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
    "BDAT 5\r\nhello",
    "BDAT 7 LAST\r\n\r\n.\r\nab",
    "BDAT 0 LAST\r\n",
    "BDAT 12\r\n",
    "BDAT 3000 LAST\r\n",
    "BDAT x\r\n",
    "RSET\r\n",
    "NOOP\r\n",
    "VRFY x\r\n",
    "nonsense\r\n",
    "QUIT\r\n",
    "\n",
    "\r",
    ".",
];

fn transcript() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => (0..PIECES.len()).prop_map(|i| PIECES[i].as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..40),
            1 => (0usize..700).prop_map(|n| vec![b'q'; n]),
        ],
        0..30,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// RFC 2920 pipelining and TCP segmentation: however the bytes are split into
    /// reads, the replies, the messages and the end state are the same.
    #[test]
    fn any_split_of_the_input_gives_the_same_session(
        input in transcript(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let whole = drive(&[&input]);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&input[last..p]);
            last = p;
        }
        chunks.push(&input[last..]);
        let split = drive(&chunks);
        prop_assert_eq!(&whole, &split);

        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&whole, &drive(&bytewise));
    }

    /// The same for every way a connection opens: behind a PROXY header (v1 or
    /// v2, split anywhere too), and with the banner held.
    #[test]
    fn any_split_gives_the_same_session_for_every_opening(
        input in transcript(),
        cut in any::<prop::sample::Index>(),
        v2 in any::<bool>(),
        opening in prop_oneof![Just(Opening::Proxy), Just(Opening::HoldGreeting)],
    ) {
        let mut bytes = if v2 {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
            h.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1, 0x13, 0x88, 0, 25]);
            h
        } else {
            b"PROXY TCP4 192.0.2.7 198.51.100.1 5000 25\r\n".to_vec()
        };
        if opening == Opening::HoldGreeting {
            bytes.clear();
        }
        bytes.extend_from_slice(&input);
        let run = |chunks: &[&[u8]]| {
            drive_opened(opening, config(), chunks, |n| Ok(QueueId([n as u8; 16])))
        };
        let whole = run(&[&bytes]);
        let at = cut.index(bytes.len() + 1);
        prop_assert_eq!(&whole, &run(&[&bytes[..at], &bytes[at..]]));
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&whole, &run(&bytewise));
        for m in &whole.messages {
            if opening == Opening::Proxy {
                prop_assert_eq!(m.peer, "192.0.2.7".parse::<IpAddr>().unwrap());
            }
        }
    }

    /// No input makes the session panic, and every reply is a well-formed line.
    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        let run = drive(&[&input]);
        for line in String::from_utf8_lossy(&run.out).split_terminator("\r\n") {
            prop_assert!(line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit));
        }
    }
}

#[test]
fn a_store_timeout_mid_data_is_451_and_closes() {
    let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    session.feed(format!("{TXN}partial body").as_bytes(), &mut out);
    assert_eq!(session.phase(), Phase::Data);
    out.clear();
    session.on_store_timeout(&mut out);
    assert!(out.starts_with(b"451 4.3.0"));
    assert_eq!(session.phase(), Phase::Closed);
}

#[test]
fn starttls_is_advertised_only_when_offered_and_not_yet_active() {
    assert!(!String::from_utf8_lossy(&one("EHLO c\r\n").out).contains("STARTTLS"));
    let mut session = Session::new(Arc::new(tls_config(false)), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    session.feed(b"EHLO c\r\n", &mut out);
    assert!(String::from_utf8_lossy(&out).contains("250-STARTTLS\r\n"));
    session.set_tls(true);
    out.clear();
    session.feed(b"EHLO c\r\n", &mut out);
    assert!(!String::from_utf8_lossy(&out).contains("STARTTLS"));
}

/// CVE-2011-0411: commands pipelined after STARTTLS in the same read are consumed
/// (so the reactor drops them) and never answered.
#[test]
fn starttls_consumes_everything_pipelined_after_it() {
    let mut session = Session::new(Arc::new(tls_config(false)), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.com>\r\n";
    let fed = session.feed(input, &mut out);
    assert_eq!(fed.event, Some(Event::StartTls));
    assert_eq!(fed.consumed, input.len());
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{text}");
    assert!(!text.contains("2.1.0"));
}

#[test]
fn starttls_errors() {
    // Not offered.
    assert_eq!(
        one("EHLO c\r\nSTARTTLS\r\n").codes().last().unwrap(),
        "502 5.5.1"
    );
    let mut session = Session::new(Arc::new(tls_config(false)), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    // Inside a transaction.
    session.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\n",
        &mut out,
    );
    assert!(
        String::from_utf8_lossy(&out)
            .ends_with("503 5.5.1 Error: MAIL transaction in progress\r\n")
    );
    // Twice.
    session.set_tls(true);
    out.clear();
    session.feed(b"EHLO c\r\nSTARTTLS\r\n", &mut out);
    assert!(String::from_utf8_lossy(&out).ends_with("503 5.5.1 Error: TLS already active\r\n"));
}

#[test]
fn required_tls_refuses_mail_before_starttls() {
    let mut session = Session::new(Arc::new(tls_config(true)), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    session.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nNOOP\r\n",
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("530 5.7.0").count(), 2, "{text}");
    assert!(text.ends_with("250 2.0.0 OK\r\n"));
    session.set_tls(true);
    let mut out = Vec::new();
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n", &mut out);
    assert!(String::from_utf8_lossy(&out).ends_with("250 2.1.0 Sender OK\r\n"));
}

#[test]
fn too_many_errors_end_the_session_with_421() {
    let bad = "BOGUS\r\n".repeat(21);
    let run = one(&format!("EHLO c\r\n{bad}NOOP\r\n"));
    assert!(run.closed);
    let codes = run.codes();
    assert_eq!(codes.iter().filter(|c| c.starts_with("500")).count(), 21);
    assert_eq!(codes.last().unwrap(), "421 4.7.0");
}

#[test]
fn too_many_commands_without_mail_end_the_session_and_mail_resets_the_count() {
    let noops = "NOOP\r\n".repeat(60);
    // 60 + message + 60: the accepted message resets the count.
    let run = one(&format!(
        "EHLO c\r\n{noops}MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\nx\r\n.\r\n{noops}"
    ));
    assert!(!run.closed);
    assert_eq!(run.messages.len(), 1);
    let run = one(&format!("EHLO c\r\n{noops}{noops}"));
    assert!(run.closed);
    assert_eq!(run.codes().last().unwrap(), "421 4.7.0");
}

const BDAT_TXN: &str =
    "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@example.com>\r\n";

#[test]
fn ehlo_offers_chunking_and_binarymime() {
    let text = String::from_utf8(one("EHLO c\r\n").out).unwrap();
    assert!(text.contains("250-CHUNKING\r\n"), "{text}");
    assert!(text.contains("250-BINARYMIME\r\n"), "{text}");
}

#[test]
fn bdat_chunks_are_read_by_count_and_joined_into_one_message() {
    // The second chunk holds what would end DATA and what would smuggle commands:
    // inside a chunk it is all message text.
    let run = one(&format!(
        "{BDAT_TXN}BDAT 14\r\nSubject: x\r\n\r\nBDAT 19 LAST\r\nhi\r\n.\r\nRSET\r\nQUIT\r\nNOOP\r\n"
    ));
    assert_eq!(run.messages.len(), 1);
    assert_eq!(
        run.messages[0].data,
        b"Subject: x\r\n\r\nhi\r\n.\r\nRSET\r\nQUIT\r\n"
    );
    assert_eq!(run.messages[0].rcpt_to, vec!["b@example.com".to_string()]);
    let codes = run.codes();
    assert_eq!(
        &codes[codes.len() - 3..],
        ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    );
    assert!(String::from_utf8_lossy(&run.out).contains("250 2.0.0 OK 14 octets received\r\n"));
    assert!(!run.closed);
}

#[test]
fn bdat_0_last_ends_the_message() {
    let run = one(&format!(
        "{BDAT_TXN}BDAT 4\r\nab\r\nBDAT 0 LAST\r\nNOOP\r\n"
    ));
    assert_eq!(run.messages.len(), 1);
    assert_eq!(run.messages[0].data, b"ab\r\n");
    assert_eq!(run.codes().last().unwrap(), "250 2.0.0");
}

#[test]
fn refused_bdat_chunks_are_consumed_not_run_as_commands() {
    // No MAIL: the chunk's octets (which look like a transaction) are dropped.
    let chunk = "MAIL FROM:<e@x.example>\r\nRCPT TO:<v@example.com>\r\n";
    let run = one(&format!(
        "EHLO c\r\nBDAT {} LAST\r\n{chunk}NOOP\r\n",
        chunk.len()
    ));
    assert_eq!(run.codes()[2..], ["503 5.5.1", "250 2.0.0"]);
    assert!(run.messages.is_empty());
    // MAIL but no RCPT.
    let run = one("EHLO c\r\nMAIL FROM:<a@b.example>\r\nBDAT 6 LAST\r\nRSET\r\nNOOP\r\n");
    assert_eq!(run.codes()[3..], ["503 5.5.1", "250 2.0.0"]);
    // Every recipient refused.
    let run = one(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<z@other.org>\r\nBDAT 2 LAST\r\nxxNOOP\r\n",
    );
    assert_eq!(run.codes()[4..], ["554 5.5.1", "250 2.0.0"]);
}

#[test]
fn data_and_bdat_do_not_mix_and_binarymime_needs_bdat() {
    let run = one(&format!("{BDAT_TXN}BDAT 2\r\nabDATA\r\nBDAT 2 LAST\r\ncd"));
    let codes = run.codes();
    assert_eq!(
        codes[codes.len() - 3..],
        ["250 2.0.0", "503 5.5.1", "250 2.0.0"]
    );
    assert_eq!(run.messages.len(), 1);
    assert_eq!(run.messages[0].data, b"abcd");

    let binary = "EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<x@example.com>\r\n";
    let run = one(&format!("{binary}DATA\r\nNOOP\r\n"));
    assert_eq!(run.codes()[4..], ["503 5.5.1", "250 2.0.0"]);
    assert!(String::from_utf8_lossy(&run.out).contains("BINARYMIME requires BDAT"));
}

#[test]
fn binarymime_content_is_kept_exactly_and_text_content_follows_the_line_rules() {
    let content = b"\x00\xff\n.\n\r\r.\r\n";
    let mut input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<x@example.com>\r\nBDAT {} LAST\r\n",
        content.len()
    )
    .into_bytes();
    input.extend_from_slice(content);
    let run = drive(&[&input]);
    assert_eq!(run.messages.len(), 1);
    assert_eq!(run.messages[0].data, content);
    assert!(run.messages[0].body_8bit);

    // The same octets without BINARYMIME: refused like a DATA message with bare
    // line endings, and the session goes on.
    let mut input = format!("{BDAT_TXN}BDAT {} LAST\r\n", content.len()).into_bytes();
    input.extend_from_slice(content);
    input.extend_from_slice(b"NOOP\r\n");
    let run = drive(&[&input]);
    assert!(run.messages.is_empty());
    assert_eq!(
        run.codes()[run.codes().len() - 2..],
        ["550 5.6.0", "250 2.0.0"]
    );
}

#[test]
fn bdat_sizes_count_against_the_message_limit() {
    // One chunk over the limit (1000): refused when it has been read, unread into
    // memory; the session stays usable.
    let big = "x".repeat(1500);
    let run = one(&format!("{BDAT_TXN}BDAT 1500 LAST\r\n{big}NOOP\r\n"));
    assert!(run.messages.is_empty());
    assert_eq!(
        run.codes()[run.codes().len() - 2..],
        ["552 5.3.4", "250 2.0.0"]
    );
    // Chunks that add up to more: the chunk that crosses the limit gets 552, and so
    // does every chunk after it, up to LAST, which ends the transaction.
    let part = format!("{}\r\n", "y".repeat(58)).repeat(10);
    let run = one(&format!(
        "{BDAT_TXN}BDAT 600\r\n{part}BDAT 600\r\n{part}BDAT 600 LAST\r\n{part}MAIL FROM:<a@b.example>\r\n"
    ));
    assert!(run.messages.is_empty());
    let codes = run.codes();
    assert_eq!(
        codes[codes.len() - 4..],
        ["250 2.0.0", "552 5.3.4", "552 5.3.4", "250 2.1.0"]
    );
}

#[test]
fn a_bdat_line_without_a_size_ends_the_session() {
    let run = one(&format!("{BDAT_TXN}BDAT ten LAST\r\ntenoctets.NOOP\r\n"));
    assert!(run.closed);
    let codes = run.codes();
    assert_eq!(codes[codes.len() - 2..], ["501 5.5.4", "421 4.7.0"]);
}

#[test]
fn input_behind_bdat_last_waits_for_the_commit() {
    let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    let input = format!("{BDAT_TXN}BDAT 3 LAST\r\nabcNOOP\r\n");
    let fed = session.feed(input.as_bytes(), &mut out);
    assert!(matches!(fed.event, Some(Event::Message(_))));
    assert_eq!(fed.consumed, input.len() - "NOOP\r\n".len());
    assert_eq!(session.phase(), Phase::Storing);
    assert!(!session.wants_read());
    assert!(!String::from_utf8_lossy(&out).contains("queued"));
    session.on_stored(Ok(QueueId([7; 16])), &mut out);
    assert!(
        String::from_utf8_lossy(&out).ends_with("queued as 07070707070707070707070707070707\r\n")
    );
}

#[test]
fn bdat_before_starttls_is_refused_when_tls_is_required() {
    let mut session = Session::new(Arc::new(tls_config(true)), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    let fed = session.feed(b"EHLO c\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n", &mut out);
    assert_eq!(fed.event, None);
    assert!(
        String::from_utf8_lossy(&out)
            .ends_with("530 5.7.0 Must issue a STARTTLS command first\r\n250 2.0.0 OK\r\n")
    );
}

/// Issue 15 item 2: over-long lines count against `max_errors` like any other error.
#[test]
fn over_long_command_lines_count_against_the_error_limit() {
    let long = format!("NOOP {}\r\n", "x".repeat(2000));
    let run = one(&format!("EHLO c\r\n{}NOOP\r\n", long.repeat(300)));
    assert!(run.closed);
    let codes = run.codes();
    assert_eq!(codes.iter().filter(|c| c.starts_with("500")).count(), 21);
    assert_eq!(codes.last().unwrap(), "421 4.7.0");
}

/// Issue 15 item 1: the bytes of an unfinished (or over-long, discarded) command
/// line are not progress; its end is, and so is message content.
#[test]
fn only_complete_lines_and_message_content_are_progress() {
    let mut session = Session::new(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    let fed = session.feed(b"NOOP", &mut out);
    assert!(!fed.progress && fed.consumed == 0);
    let long = format!("NOOP {}", "x".repeat(2000));
    let fed = session.feed(long.as_bytes(), &mut out);
    assert!(!fed.progress && fed.consumed == long.len());
    for _ in 0..5 {
        assert!(!session.feed(b"x", &mut out).progress);
    }
    let fed = session.feed(b"x\r\n", &mut out);
    assert!(fed.progress);
    assert!(String::from_utf8_lossy(&out).ends_with("500 5.5.2 Error: line too long\r\n"));
    assert!(session.feed(TXN.as_bytes(), &mut out).progress);
    assert!(session.feed(b"a", &mut out).progress);
}

#[test]
fn empty_chunks_that_are_not_last_count_as_junk() {
    let run = one(&format!("{BDAT_TXN}{}", "BDAT 0\r\n".repeat(120)));
    assert!(run.closed);
    assert_eq!(run.codes().last().unwrap(), "421 4.7.0");
}

fn opened(opening: Opening) -> Session {
    Session::opening(Arc::new(config()), IpAddr::V4(Ipv4Addr::LOCALHOST), opening)
}

#[test]
fn a_proxy_header_comes_first_and_the_session_waits_for_admission() {
    let mut s = opened(Opening::Proxy);
    let mut out = Vec::new();
    // Incomplete: nothing consumed, nothing said.
    let fed = s.feed(b"PROXY TCP4 192.0.2.7 ", &mut out);
    assert_eq!((fed.consumed, fed.event, out.is_empty()), (0, None, true));
    let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 5000 25\r\n";
    let mut input = header.to_vec();
    input.extend_from_slice(b"EHLO c\r\n");
    let fed = s.feed(&input, &mut out);
    assert_eq!(fed.consumed, header.len());
    assert!(matches!(fed.event, Some(Event::Proxy(_))));
    assert!(out.is_empty(), "no banner before admission");
    // Waiting for the reactor's verdict: nothing is read.
    assert!(!s.wants_read());
    assert_eq!(s.feed(b"EHLO c\r\n", &mut out).consumed, 0);
    s.admit(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("220 mx.test"));
    let fed = s.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\nx\r\n.\r\n",
        &mut out,
    );
    let Some(Event::Message(m)) = fed.event else {
        panic!("no message");
    };
    // The real client's address, from the header.
    assert_eq!(m.peer, "192.0.2.7".parse::<IpAddr>().unwrap());
}

#[test]
fn a_refused_proxied_client_gets_the_reply_and_the_session_ends() {
    let mut s = opened(Opening::Proxy);
    let mut out = Vec::new();
    s.feed(b"PROXY TCP4 192.0.2.7 198.51.100.1 5000 25\r\n", &mut out);
    s.refuse(Reply::TooManyFromIp, &mut out);
    assert!(out.starts_with(b"421 4.7.0"));
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn anything_but_a_proxy_header_on_a_proxy_listener_closes_silently() {
    let mut s = opened(Opening::Proxy);
    let mut out = Vec::new();
    let fed = s.feed(b"EHLO c\r\n", &mut out);
    assert!(matches!(fed.event, Some(Event::BadProxy(_))));
    assert!(out.is_empty());
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn a_client_that_talks_before_a_held_banner_gets_554_and_is_closed() {
    let mut s = opened(Opening::HoldGreeting);
    let mut out = Vec::new();
    assert!(s.greeting_held());
    let fed = s.feed(b"EHLO spam\r\n", &mut out);
    assert_eq!(fed.event, Some(Event::Close));
    assert!(
        out.starts_with(b"554 5.5.1"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(s.phase(), Phase::Closed);
    // A patient client is greeted when the delay ends, and goes on normally.
    let mut s = opened(Opening::HoldGreeting);
    let mut out = Vec::new();
    assert_eq!(s.feed(b"", &mut out).event, None);
    s.greet(&mut out);
    assert!(!s.greeting_held());
    s.feed(b"EHLO c\r\n", &mut out);
    assert!(String::from_utf8_lossy(&out).contains("250 SMTPUTF8"));
}

/// Feeds `input` to a fresh session (each message stored at once) and returns it.
fn session_after(input: &[u8]) -> Session {
    let mut session = Session::opening(
        Arc::new(config()),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Opening::Greet,
    );
    let mut out = Vec::new();
    session.greet(&mut out);
    let mut pending = input.to_vec();
    loop {
        let fed = session.feed(&pending, &mut out);
        pending.drain(..fed.consumed);
        match fed.event {
            Some(Event::Message(_)) => session.on_stored(Err(StoreFailed), &mut out),
            Some(Event::Close) => break,
            _ if fed.consumed == 0 => break,
            _ => {}
        }
    }
    session
}

#[test]
fn a_transaction_cut_off_is_abandoned_with_how_far_it_got_and_what_ended_it() {
    // The connection went away after two RCPTs.
    let s = session_after(
        b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
    );
    let a = s.abandoned().expect("abandoned");
    assert_eq!(a.mail_from, "s@x.test");
    assert_eq!(a.recipients, ["a@example.com", "b@example.com"]);
    assert_eq!(
        (a.recipient_count, a.in_content, a.closed_with),
        (2, false, None)
    );

    // Inside DATA, then the server's timeout.
    let mut s = session_after(
        b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: half\r\n",
    );
    s.on_timeout(&mut Vec::new());
    let a = s.abandoned().expect("abandoned");
    assert!(a.in_content);
    assert_eq!(a.closed_with, Some(Reply::Timeout));

    // QUIT after MAIL: the client gave up.
    let s = session_after(b"HELO c.test\r\nMAIL FROM:<>\r\nQUIT\r\n");
    let a = s.abandoned().expect("abandoned");
    assert_eq!((a.mail_from.as_str(), a.recipient_count), ("", 0));
    assert_eq!(a.closed_with, Some(Reply::Closing));
}

#[test]
fn finished_reset_or_never_begun_transactions_are_not_abandoned() {
    for input in [
        &b"EHLO c.test\r\nQUIT\r\n"[..],
        b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nRSET\r\nQUIT\r\n",
        b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
        b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nhi\r\n.\r\n",
    ] {
        let s = session_after(input);
        assert_eq!(s.abandoned(), None, "{}", String::from_utf8_lossy(input));
    }
}
