//! Whole sessions: arbitrary client bytes, split into reads at arbitrary points,
//! never panic, never grow unconsumed input beyond one command line, and every reply
//! is a well-formed reply line. Each message is "committed" at once.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use smtpd::handoff::QueueId;
use smtpd::protocol::{DomainPolicy, Event, Opening, Phase, Session, SessionConfig};

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, bytes) = input;
    let config = Arc::new(SessionConfig {
        hostname: "mx.fuzz".into(),
        max_message_bytes: 2048,
        max_recipients: 4,
        max_data_line_bytes: 256,
        domains: DomainPolicy::parse(&["example.com".into(), "*.example.net".into()])
            .unwrap_or(DomainPolicy::Any),
        starttls: true,
        require_tls: false,
        max_errors: 20,
        max_junk_commands: 100,
    });
    // Every way a connection can open: greeted, banner held, PROXY header first.
    let opening = match cuts.len() % 3 {
        0 => Opening::Greet,
        1 => Opening::HoldGreeting,
        _ => Opening::Proxy,
    };
    let mut session = Session::opening(config, IpAddr::V4(Ipv4Addr::LOCALHOST), opening);
    let mut out = Vec::new();
    if opening == Opening::Greet {
        session.greet(&mut out);
    }
    let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    let mut pending = Vec::new();
    let mut last = 0;
    'reads: for p in points {
        pending.extend_from_slice(&bytes[last..p]);
        last = p;
        loop {
            let fed = session.feed(&pending, &mut out);
            assert!(fed.consumed <= pending.len());
            pending.drain(..fed.consumed);
            if session.phase() == Phase::Command {
                assert!(pending.len() < 512);
            }
            match fed.event {
                Some(Event::Message(m)) => {
                    assert!(!m.rcpt_to.is_empty() && m.rcpt_to.len() <= 4);
                    assert!(m.data.len() <= 2048);
                    session.on_stored(Ok(QueueId([0; 16])), &mut out);
                }
                Some(Event::Close) => break 'reads,
                Some(Event::Proxy(_)) => session.admit(&mut out),
                Some(Event::BadProxy(_)) => break 'reads,
                Some(Event::StartTls) => {
                    // The reactor drops the rest of the read and switches to TLS.
                    pending.clear();
                    session.set_tls(true);
                }
                None if fed.consumed == 0 => break,
                None => {}
            }
        }
    }
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit));
        assert_eq!(line.last(), Some(&b'\r'));
    }
});
