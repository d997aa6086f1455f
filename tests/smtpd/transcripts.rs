//! Golden transcripts (`tests/smtpd/transcripts/*.smtp`, format in its README)
//! replayed against the live server: the same conversations the protocol core's
//! tests can replay without sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{Client, Opts, Server};

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

fn replay(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let mut opts = Opts::default();
    for line in text.lines() {
        if let Some(args) = line.strip_prefix("# args:") {
            for a in args.split_whitespace() {
                opts = opts.arg(a);
            }
        }
    }
    let server = Server::start_with(opts);
    let mut c = Client::connect(server.addr);
    for (n, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(bytes) = line.strip_prefix("C: ") {
            c.send(&unescape(bytes));
        } else if let Some(want) = line.strip_prefix("S: ") {
            match want.trim() {
                "quiet" => assert!(
                    c.is_quiet_for(Duration::from_millis(300)),
                    "{at}: expected silence\n{}",
                    c.transcript()
                ),
                "closed" => c.expect_closed(),
                want => {
                    let mut parts = want.split_whitespace();
                    let code: u16 = parts.next().unwrap().parse().unwrap();
                    let enhanced = parts.next().unwrap_or("");
                    let r = c
                        .try_read_reply()
                        .unwrap_or_else(|e| panic!("{at}: no reply ({e:?})\n{}", c.transcript()));
                    assert!(
                        r.code == code && (enhanced.is_empty() || r.enhanced() == enhanced),
                        "{at}: expected {want}, got {:?}\n{}",
                        r.text(),
                        c.transcript()
                    );
                }
            }
        } else if let Some(n) = line.strip_prefix("ROWS: ") {
            let want: i64 = n.trim().parse().unwrap();
            assert_eq!(server.row_count(), want, "{at}: rows");
        } else {
            panic!("{at}: cannot parse {line:?}");
        }
    }
}

#[test]
fn golden_transcripts_replay_against_live_server() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap_or_else(|e| panic!("{DIR}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "smtp"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "transcripts missing from {DIR}");
    for f in &files {
        replay(f);
    }
}
