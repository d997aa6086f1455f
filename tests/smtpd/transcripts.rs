//! Golden transcripts (`tests/smtpd/transcripts/*.smtp`, format in its README)
//! replayed twice: against the live server over TCP, and against the sans-IO
//! [`Session`] directly (no sockets, every commit answered at once), so the protocol
//! core and the server around it are held to the same conversations.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use smtpd::config::{Cli, Config, FileConfig};
use smtpd::handoff::QueueId;
use smtpd::protocol::{Event, Phase, Session};

use crate::support::{Client, HOSTNAME, Opts, Server};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/smtpd/transcripts");

/// Decodes `\r`, `\n`, `\t`, `\\` and `\xNN`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// One line of a transcript.
enum Step {
    Send(Vec<u8>),
    Expect { code: u16, enhanced: String },
    Quiet,
    Closed,
    Rows(i64),
}

struct Transcript {
    name: String,
    /// The server flags from `# args:` lines.
    args: Vec<String>,
    /// Each step with its `file:line` for failure messages.
    steps: Vec<(String, Step)>,
}

fn parse(path: &Path) -> Transcript {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let mut args = Vec::new();
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        if let Some(a) = line.strip_prefix("# args:") {
            args.extend(a.split_whitespace().map(String::from));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let step = if let Some(bytes) = line.strip_prefix("C: ") {
            Step::Send(unescape(bytes))
        } else if let Some(want) = line.strip_prefix("S: ") {
            match want.trim() {
                "quiet" => Step::Quiet,
                "closed" => Step::Closed,
                want => {
                    let mut parts = want.split_whitespace();
                    Step::Expect {
                        code: parts.next().unwrap().parse().unwrap(),
                        enhanced: parts.next().unwrap_or("").to_string(),
                    }
                }
            }
        } else if let Some(n) = line.strip_prefix("ROWS: ") {
            Step::Rows(n.trim().parse().unwrap())
        } else {
            panic!("{at}: cannot parse {line:?}");
        };
        steps.push((at, step));
    }
    Transcript { name, args, steps }
}

fn transcripts() -> Vec<Transcript> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap_or_else(|e| panic!("{DIR}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "smtp"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "transcripts missing from {DIR}");
    files.iter().map(|f| parse(f)).collect()
}

fn replay_live(t: &Transcript) {
    let mut opts = Opts::default();
    for a in &t.args {
        opts = opts.arg(a);
    }
    let server = Server::start_with(opts);
    let mut c = Client::connect(server.addr);
    for (at, step) in &t.steps {
        match step {
            Step::Send(bytes) => c.send(bytes),
            Step::Quiet => assert!(
                c.is_quiet_for(Duration::from_millis(300)),
                "{at}: expected silence\n{}",
                c.transcript()
            ),
            Step::Closed => c.expect_closed(),
            Step::Expect { code, enhanced } => {
                let r = c
                    .try_read_reply()
                    .unwrap_or_else(|e| panic!("{at}: no reply ({e:?})\n{}", c.transcript()));
                assert!(
                    r.code == *code && (enhanced.is_empty() || r.enhanced() == enhanced),
                    "{at}: expected {code} {enhanced}, got {:?}\n{}",
                    r.text(),
                    c.transcript()
                );
            }
            Step::Rows(want) => assert_eq!(server.row_count(), *want, "{at}: rows"),
        }
    }
}

/// Moves the replies written so far into `replies`, one entry per reply
/// (continuation lines of a multi-line reply folded into its last line).
fn take_replies(out: &mut Vec<u8>, replies: &mut VecDeque<String>) {
    let text = String::from_utf8(std::mem::take(out)).expect("replies are UTF-8");
    for line in text.split_terminator("\r\n") {
        if line.as_bytes().get(3) != Some(&b'-') {
            replies.push_back(line.to_string());
        }
    }
}

/// The sans-IO replay: the same configuration the server builds from the same
/// flags, input fed as the reactor feeds it (unconsumed bytes kept for later),
/// every message committed at once.
fn replay_session(t: &Transcript) {
    let mut argv = vec!["smtpd".to_string(), "--hostname".into(), HOSTNAME.into()];
    argv.extend(t.args.iter().cloned());
    let cli = <Cli as clap::Parser>::parse_from(argv);
    let config = Config::build(FileConfig::default(), &cli).unwrap();
    let mut session = Session::new(
        Arc::new(config.session_config()),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    let mut out = Vec::new();
    session.greet(&mut out);
    let mut pending: Vec<u8> = Vec::new();
    let mut rows = 0i64;
    let mut closed = false;
    let mut replies = VecDeque::new();
    for (at, step) in &t.steps {
        match step {
            Step::Send(bytes) => {
                if closed {
                    continue;
                }
                pending.extend_from_slice(bytes);
                loop {
                    let fed = session.feed(&pending, &mut out);
                    pending.drain(..fed.consumed);
                    match fed.event {
                        Some(Event::Message(envelope)) => {
                            rows += envelope.rcpt_to.len() as i64;
                            session.on_stored(Ok(QueueId([1; 16])), &mut out);
                        }
                        Some(Event::Close | Event::BadProxy(_)) => {
                            closed = true;
                            break;
                        }
                        Some(Event::StartTls) => pending.clear(),
                        // Transcripts run on ordinary listeners (no PROXY header).
                        Some(Event::Proxy(_)) => session.admit(&mut out),
                        None if fed.consumed == 0 => break,
                        None => {}
                    }
                }
                take_replies(&mut out, &mut replies);
            }
            Step::Expect { code, enhanced } => {
                take_replies(&mut out, &mut replies);
                let got = replies
                    .pop_front()
                    .unwrap_or_else(|| panic!("{}: {at}: no reply", t.name));
                let want = format!("{code} {enhanced}");
                assert!(
                    got.starts_with(want.trim_end()),
                    "{at}: expected {want}, got {got:?}"
                );
            }
            Step::Quiet => {
                take_replies(&mut out, &mut replies);
                assert!(
                    replies.is_empty(),
                    "{at}: expected silence, got {replies:?}"
                );
            }
            Step::Closed => {
                take_replies(&mut out, &mut replies);
                assert!(
                    replies.is_empty() && (closed || session.phase() == Phase::Closed),
                    "{at}: expected close, got {replies:?}"
                );
            }
            Step::Rows(want) => assert_eq!(rows, *want, "{at}: rows"),
        }
    }
}

#[test]
fn golden_transcripts_replay_against_live_server() {
    for t in &transcripts() {
        replay_live(t);
    }
}

#[test]
fn golden_transcripts_replay_against_the_session() {
    for t in &transcripts() {
        replay_session(t);
    }
}
