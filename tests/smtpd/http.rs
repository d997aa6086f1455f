//! `smtpd --http`, the mailbox API, end to end: messages sent over SMTP appear in
//! the list and the event stream (latency measured), parsed fields equal Python's
//! `email` package's, attachments download byte-exact, deletes remove rows and
//! Redis entries, public mode refuses listing and rate-limits, token mode refuses
//! without the token, XSS payloads stay inert in headless chromium, a
//! 10,000-message mailbox pages correctly; SQLite, MariaDB, Redis cache and
//! Guerrilla mode, and arrivals from another node through Redis.
//!
//! HTTP is spoken with a tiny blocking client over `TcpStream` (event streams as
//! HTTP/1.0, so the stream is the socket, no chunking).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::services::{Mariadb, Redis};
use crate::support::{Opts, Server, run_tool, simple_message};

const TOKEN: &str = "test-token-0123456789";
const HTTP_PREFIX: &str = "smtpd: http listening on ";

/// A server with `[http]` as given (plus `extra` TOML), on SQLite unless `opts`
/// names a store; returns it with the HTTP address.
fn start(http: &str, extra: &str, opts: Opts) -> (Server, SocketAddr) {
    let toml = format!(
        "[server]\naccept_domains = [\"example.com\"]\n\n[http]\nlisten = \"127.0.0.1:0\"\n{http}\n{extra}\n"
    );
    let server = Server::start_with(Opts {
        config: Some(toml),
        ..opts
    });
    let addr = server
        .stderr()
        .lines()
        .find_map(|l| {
            l.strip_prefix(HTTP_PREFIX)
                .map(|a| a.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no http line:\n{}", server.stderr()));
    (server, addr)
}

fn public(extra_http: &str) -> (Server, SocketAddr) {
    start(&format!("public = true\n{extra_http}"), "", Opts::default())
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// The `{"error": ...}` of an error response.
    fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..nl])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[nl + 2 + size + 2..];
    }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[])
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "{path}: {r:?}");
    r.json()
}

/// One server-sent event and when it arrived.
#[derive(Debug, Clone)]
struct Ev {
    at: Instant,
    name: String,
    id: String,
    data: String,
}

/// An open event stream; events arrive on a channel from a reader thread.
struct Events {
    rx: mpsc::Receiver<Ev>,
    stream: TcpStream,
}

impl Events {
    fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Events, Resp> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: test\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            if l.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        if status != 200 {
            let mut body = Vec::new();
            let _ = reader.read_to_end(&mut body);
            return Err(Resp {
                status,
                headers,
                body,
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ev = Ev {
                at: Instant::now(),
                name: String::new(),
                id: String::new(),
                data: String::new(),
            };
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    if !ev.name.is_empty() || !ev.data.is_empty() {
                        ev.at = Instant::now();
                        if tx.send(ev.clone()).is_err() {
                            return;
                        }
                    }
                    ev.name.clear();
                    ev.id.clear();
                    ev.data.clear();
                } else if let Some(v) = l.strip_prefix("event:") {
                    ev.name = v.trim().to_owned();
                } else if let Some(v) = l.strip_prefix("id:") {
                    ev.id = v.trim().to_owned();
                } else if let Some(v) = l.strip_prefix("data:") {
                    ev.data.push_str(v.trim_start());
                }
            }
        });
        let events = Events { rx, stream: s };
        let ready = events.next(Duration::from_secs(10)).expect("ready event");
        assert_eq!(ready.name, "ready", "{ready:?}");
        Ok(events)
    }

    fn next(&self, timeout: Duration) -> Option<Ev> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next `message` event (skipping keep-alives), within `timeout`.
    fn message(&self, timeout: Duration) -> Ev {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.next(left).expect("a message event in time");
            if ev.name == "message" {
                return ev;
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn list(addr: SocketAddr, address: &str, query: &str) -> Value {
    get_json(
        addr,
        &format!("/api/v1/mailboxes/{address}/messages{query}"),
    )
}

/// Every id of the mailbox, walking the pages `limit` at a time.
fn all_ids(addr: SocketAddr, address: &str, limit: usize, auth: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    for _ in 0..10_000 {
        let path = format!("/api/v1/mailboxes/{address}/messages?limit={limit}&after={after}");
        let r = request(addr, "GET", &path, auth);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let page = r.json();
        let messages = page["messages"].as_array().unwrap().clone();
        assert!(messages.len() <= limit);
        out.extend(messages);
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return out,
        }
    }
    panic!("paging did not end");
}

#[test]
fn messages_sent_over_smtp_appear_in_the_list_and_the_stream_fast() {
    let (server, http) = public("rate_per_ip = 0");
    let events = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let mut c = server.client();
    c.ehlo("client.example");
    const N: usize = 200;
    let mut acked = HashMap::new();
    for i in 0..N {
        let subject = format!("m{i}");
        // Another mailbox's mail between ours never shows in our stream.
        if i % 50 == 0 {
            c.deliver(
                "s@example.org",
                &["alice@example.com"],
                &simple_message("other"),
            );
        }
        let started = Instant::now();
        c.deliver(
            "s@example.org",
            &["bob@example.com"],
            &simple_message(&subject),
        );
        acked.insert(subject, (started, Instant::now()));
    }
    let mut latencies = Vec::with_capacity(N);
    let mut from_mail = Vec::with_capacity(N);
    let mut ids = Vec::with_capacity(N);
    for _ in 0..N {
        let ev = events.message(Duration::from_secs(10));
        let data: Value = serde_json::from_str(&ev.data).unwrap();
        let subject = data["subject"].as_str().unwrap();
        let (started, at_250) = acked[subject];
        // The event may even come before the client read its 250 (it is sent right
        // after COMMIT): that counts as 0.
        latencies.push(ev.at.saturating_duration_since(at_250));
        from_mail.push(ev.at.saturating_duration_since(started));
        assert_eq!(data["id"].as_str(), Some(ev.id.as_str()));
        ids.push(ev.id);
    }
    assert!(
        events
            .next(Duration::from_millis(300))
            .is_none_or(|e| e.name != "message"),
        "more events than messages"
    );
    latencies.sort();
    from_mail.sort();
    println!(
        "event after the client's MAIL FROM (the whole transaction, commit included): p50 {:?}, p99 {:?}",
        percentile(&from_mail, 0.5),
        percentile(&from_mail, 0.99)
    );
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "arrival-to-event latency over {N} messages (after the client's 250): p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies[N - 1]
    );
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");

    // The list: newest first, all of them, in pages.
    let listed = all_ids(http, "bob@example.com", 64, &[]);
    let subjects: Vec<&str> = listed
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..N).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(subjects, expected);
    let listed_ids: HashSet<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, ids.iter().map(String::as_str).collect());
    let first = &listed[0];
    assert_eq!(first["from"], "s@example.org");
    assert_eq!(first["seen"], false);
    assert_eq!(first["has_attach"], 0);
    assert_eq!(
        first["size"].as_i64().unwrap(),
        simple_message("m199").len() as i64
    );
    assert_eq!(
        list(http, "alice@example.com", "")["messages"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Opening a message marks it seen.
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        get_json(http, &format!("/api/v1/messages/{id}"))["seen"],
        true
    );
    assert_eq!(
        list(http, "bob@example.com", "?limit=1")["messages"][0]["seen"],
        true
    );
}

/// A message with everything a parser can get wrong: encoded words, display
/// names, quoted-printable UTF-8, HTML, a binary and an RFC 2231-named attachment.
fn rich_message(boundary: &str, blob: &[u8]) -> Vec<u8> {
    use base64_lines as b64;
    format!(
        "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>\r\n\
To: Bob <bob@example.com>, carol@example.com\r\n\
Cc: \"Dan, the third\" <dan@example.net>\r\n\
Subject: =?UTF-8?B?w5xiZXIgZGVuIFLDpHViZXI=?= and more\r\n\
Date: Tue, 01 Dec 2026 10:20:30 +0100\r\n\
Message-ID: <rich@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: multipart/alternative; boundary=\"{boundary}-alt\"\r\n\
\r\n\
--{boundary}-alt\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Gr=C3=BC=C3=9Fe aus K=C3=B6ln,\r\n\
a long line that is soft-=\r\n\
wrapped.\r\n\
--{boundary}-alt\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Gr&uuml;&szlig;e <b>aus</b> K&ouml;ln</p>\r\n\
--{boundary}-alt--\r\n\
--{boundary}\r\n\
Content-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\
--{boundary}\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Disposition: attachment; filename*=UTF-8''%C3%BCber%20%22quoted%22.html\r\n\
\r\n\
<script>alert(1)</script>\r\n\
--{boundary}--\r\n",
        b64(blob)
    )
    .into_bytes()
}

fn base64_lines(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (n, chunk) in data.chunks(3).enumerate() {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
        if n % 19 == 18 {
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out
}

fn python_parse(raw: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, raw).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/smtpd/fixtures/mailbox_parse.py"
    );
    let out = run_tool(
        Command::new("/usr/bin/python3").arg(script).arg(&path),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pairs(v: &Value) -> Vec<(Option<String>, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            if let Some(arr) = a.as_array() {
                (
                    arr[0].as_str().map(str::to_owned),
                    arr[1].as_str().unwrap().to_owned(),
                )
            } else {
                (
                    a["name"].as_str().map(str::to_owned),
                    a["address"].as_str().unwrap().to_owned(),
                )
            }
        })
        .collect()
}

fn decode_b64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn parsed_fields_match_pythons_email_package_and_parts_download_byte_exact() {
    let (server, http) = public("rate_per_ip = 0");
    let mut blob: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    blob.extend_from_slice(b"\r\n.\r\n\0\xff");
    let data = rich_message("b0und", &blob);
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver("s@example.org", &["bob@example.com"], &data);
    let id = list(http, "bob@example.com", "")["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The raw message is what is stored: the Received: line, then the bytes sent.
    let raw = get(http, &format!("/api/v1/messages/{id}/raw"));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("message/rfc822"));
    assert!(raw.body.starts_with(b"Received: "));
    assert!(raw.body.ends_with(&data));
    assert_eq!(server.rows()[0].mail, raw.body);

    let py = python_parse(&raw.body);
    let m = get_json(http, &format!("/api/v1/messages/{id}"));
    assert_eq!(m["subject"], py["subject"]);
    assert_eq!(m["subject"], "Über den Räuber and more");
    assert_eq!(pairs(&m["from"]), pairs(&py["from"]));
    assert_eq!(pairs(&m["to"]), pairs(&py["to"]));
    assert_eq!(pairs(&m["cc"]), pairs(&py["cc"]));
    let when = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(when(&m["date"]), when(&py["date"]));
    let norm = |v: &Value| {
        v.as_str()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end()
            .to_owned()
    };
    assert_eq!(norm(&m["text"]), norm(&py["text"]));
    assert!(m["html"].as_str().unwrap().contains("<b>aus</b>"));
    assert_eq!(m["envelope_from"], "s@example.org");
    assert!(
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Message-ID" && h["value"] == "<rich@example.org>")
    );

    let ours = m["attachments"].as_array().unwrap();
    let theirs = py["attachments"].as_array().unwrap();
    assert_eq!(ours.len(), 2);
    assert_eq!(ours.len(), theirs.len());
    for (a, p) in ours.iter().zip(theirs) {
        assert_eq!(a["name"], p["name"]);
        assert_eq!(a["type"], p["type"]);
        let bytes = decode_b64(p["data"].as_str().unwrap());
        assert_eq!(a["size"].as_u64().unwrap(), bytes.len() as u64);
        let part = get(http, &format!("/api/v1/messages/{id}/parts/{}", a["part"]));
        assert_eq!(part.status, 200);
        assert_eq!(part.body, bytes, "attachment {} byte-exact", a["name"]);
        assert_eq!(part.header("x-content-type-options"), Some("nosniff"));
        assert!(
            part.header("content-security-policy")
                .unwrap()
                .contains("sandbox")
        );
    }
    let pdf = get(http, &format!("/api/v1/messages/{id}/parts/0"));
    assert_eq!(pdf.body, blob);
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert_eq!(
        pdf.header("content-disposition"),
        Some("attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf")
    );
    // An HTML attachment is never served as HTML, and its name is encoded.
    let html = get(http, &format!("/api/v1/messages/{id}/parts/1"));
    assert_eq!(
        html.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        html.header("content-disposition"),
        Some(
            "attachment; filename=\"_ber__quoted_.html\"; filename*=UTF-8''%C3%BCber%20%22quoted%22.html"
        )
    );
    assert_eq!(
        get(http, &format!("/api/v1/messages/{id}/parts/2")).status,
        404
    );
    assert!(
        get(http, &format!("/api/v1/messages/{id}/parts/x"))
            .error()
            .starts_with("part:")
    );
}

#[test]
fn public_mode_refuses_listing_and_other_domains_and_rate_limits() {
    let (server, http) = public("rate_per_ip = 5\nmax_streams_per_ip = 2");
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver("s@example.org", &["bob@example.com"], &simple_message("hi"));
    std::thread::sleep(Duration::from_millis(1100));
    // No route lists mailboxes; addresses outside accept_domains are refused.
    for path in [
        "/api/v1/mailboxes",
        "/api/v1/mailboxes/",
        "/api/v1/messages",
    ] {
        let r = get(http, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.error().contains("not found"));
    }
    let r = get(http, "/api/v1/mailboxes/bob@elsewhere.org/messages");
    assert_eq!(r.status, 404);
    assert!(
        r.error().starts_with("address: elsewhere.org"),
        "{}",
        r.error()
    );
    std::thread::sleep(Duration::from_millis(1100));
    let long = format!("/api/v1/mailboxes/{}@example.com/messages", "a".repeat(300));
    assert!(get(http, &long).error().starts_with("address:"));
    assert!(
        get(http, "/api/v1/mailboxes/bob@example.com/messages?limit=101")
            .error()
            .starts_with("limit:")
    );
    assert!(
        get(http, "/api/v1/mailboxes/bob@example.com/messages?after=7")
            .error()
            .starts_with("after:")
    );
    assert!(get(http, "/api/v1/messages/1").error().starts_with("id:"));
    std::thread::sleep(Duration::from_millis(1100));
    // Knowing bob's id gives nothing but bob's message: the tag is checked.
    let id = list(http, "bob@example.com", "")["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (hash, tag) = id.split_once('-').unwrap();
    let forged = format!(
        "{hash}-{}",
        if tag.starts_with('0') { "1" } else { "0" }.repeat(16)
    );
    let r = get(http, &format!("/api/v1/messages/{forged}"));
    assert_eq!(r.status, 404);
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{forged}"), &[]).status,
        404
    );
    std::thread::sleep(Duration::from_millis(1100));

    // A burst beyond 5 requests per second gets 429 with the JSON error.
    let statuses: Vec<Resp> = (0..15)
        .map(|_| get(http, "/api/v1/mailboxes/bob@example.com/messages"))
        .collect();
    let limited: Vec<&Resp> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(
        limited.len() >= 8,
        "{:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(limited[0].error().starts_with("rate limit"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        get(http, "/api/v1/mailboxes/bob@example.com/messages").status,
        200
    );

    // Event streams per IP are capped.
    let _a = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let _b = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let Err(r) = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]) else {
        panic!("a third stream was allowed");
    };
    assert_eq!(r.status, 429);
    assert!(r.error().contains("max_streams_per_ip"));
}

#[test]
fn token_mode_refuses_every_route_without_the_token() {
    let (server, http) = start(&format!("token = \"{TOKEN}\""), "", Opts::default());
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver(
        "s@example.org",
        &["bob@example.com"],
        &rich_message("b", b"x"),
    );
    let auth = format!("Bearer {TOKEN}");
    let good = [("Authorization", auth.as_str())];
    let r = request(
        http,
        "GET",
        "/api/v1/mailboxes/bob@example.com/messages",
        &good,
    );
    assert_eq!(r.status, 200);
    let id = r.json()["messages"][0]["id"].as_str().unwrap().to_owned();
    let paths = [
        (
            "GET",
            "/api/v1/mailboxes/bob@example.com/messages".to_owned(),
        ),
        ("GET", "/api/v1/mailboxes/bob@example.com/events".to_owned()),
        ("GET", format!("/api/v1/messages/{id}")),
        ("GET", format!("/api/v1/messages/{id}/raw")),
        ("GET", format!("/api/v1/messages/{id}/parts/0")),
        ("GET", "/inbox/bob@example.com".to_owned()),
        ("GET", "/inbox/app.js".to_owned()),
        ("GET", "/nowhere".to_owned()),
        ("DELETE", format!("/api/v1/messages/{id}")),
    ];
    let wrong = format!("Bearer {TOKEN}x");
    for (method, path) in &paths {
        for headers in [
            &[][..],
            &[("Authorization", wrong.as_str())][..],
            &[("Authorization", TOKEN)][..],
        ] {
            let r = request(http, method, path, headers);
            assert_eq!(r.status, 401, "{method} {path} {headers:?}");
            assert!(r.error().contains("Bearer"));
        }
    }
    for (method, path) in &paths[..7] {
        if path.ends_with("/events") {
            drop(Events::open(http, path, &good).unwrap());
            continue;
        }
        assert_eq!(
            request(http, method, path, &good).status,
            200,
            "{method} {path}"
        );
    }
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{id}"), &good).status,
        200
    );
    assert_eq!(server.row_count(), 0);
}

/// A loopback listener that counts the connections made to it.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, count)
}

fn xss_message(port: u16) -> Vec<u8> {
    format!(
        "From: \"<img src=x onerror=window.__pwned='from'>\" <evil@example.org>\r\n\
To: bob@example.com\r\n\
Subject: <script>window.__pwned='subject';document.title='pwned'</script><img src=x onerror=\"window.__pwned='subject-img'\">\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
--XX\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Hello</p><script>window.__pwned='html';parent.document.title='pwned'</script>\r\n\
<img src=\"http://127.0.0.1:{port}/remote.png\" alt=\"remote\">\r\n\
<img src=x onerror=\"window.__pwned='onerror';parent.document.title='pwned'\">\r\n\
<svg onload=\"window.__pwned='svg'\"></svg><iframe src=\"http://127.0.0.1:{port}/frame\"></iframe>\r\n\
<a href=\"javascript:window.__pwned='link'\">click</a>\r\n\
<div style=\"background:url(http://127.0.0.1:{port}/bg.png)\">styled</div>\r\n\
<style>@import url(http://127.0.0.1:{port}/x.css); body {{ background: url(http://127.0.0.1:{port}/b.png) }}</style>\r\n\
<link rel=stylesheet href=\"http://127.0.0.1:{port}/l.css\">\r\n\
--XX\r\n\
Content-Type: text/plain\r\n\
Content-Disposition: attachment; filename=\"<img src=x onerror=window.__pwned='file'>.txt\"\r\n\
\r\n\
file\r\n\
--XX--\r\n"
    )
    .into_bytes()
}

fn browse(url: &str, smtp: &[&str]) -> (Value, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("inbox.png");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/smtpd/fixtures/mailbox_browser.py"
    );
    let out = run_tool(
        Command::new("/usr/bin/python3")
            .arg(script)
            .arg(url)
            .arg(&shot)
            .args(smtp),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        std::fs::read(&shot).unwrap(),
    )
}

#[test]
fn xss_payloads_are_inert_in_headless_chromium() {
    let (server, http) = public("rate_per_ip = 0");
    let (port, connections) = counting_listener();
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver("evil@example.org", &["bob@example.com"], &xss_message(port));

    let page = get(http, "/inbox/bob@example.com");
    let csp = page.header("content-security-policy").unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("img-src 'self' data:"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));

    let smtp = server.addr.to_string();
    let (seen, shot) = browse(
        &format!("http://{http}/inbox/bob@example.com"),
        &[&smtp, "bob@example.com"],
    );
    assert_eq!(seen["title_before"], "Inbox bob@example.com", "{seen}");
    assert_eq!(seen["title"], "Inbox bob@example.com", "{seen}");
    assert_eq!(seen["pwned"], Value::Null, "a payload ran: {seen}");
    assert_eq!(seen["status"], "live");
    // The open page lists a new message by itself (the event stream).
    let live_ms = seen["live_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("not listed live: {seen}"));
    println!("the inbox page listed a new message {live_ms} ms after smtplib's 250");
    // Shown as text, exactly as sent.
    assert!(
        seen["subject"]
            .as_str()
            .unwrap()
            .starts_with("<script>window.__pwned="),
        "{seen}"
    );
    assert!(
        seen["attachments"][0]
            .as_str()
            .unwrap()
            .contains("onerror=window.__pwned='file'"),
        "{seen}"
    );
    assert_eq!(seen["sandbox"], "", "{seen}");
    let srcdoc = seen["srcdoc"].as_str().unwrap();
    assert!(
        srcdoc.contains("Hello") && !srcdoc.contains("<script") && !srcdoc.contains("onerror"),
        "{srcdoc}"
    );
    assert!(shot.len() > 5_000, "screenshot of {} bytes", shot.len());
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a request left for a remote resource"
    );

    // The listener does see a browser that is allowed to load images: the check
    // above can fail. (The live message goes first, so the page shows the XSS one.)
    let live = list(http, "bob@example.com", "")["messages"][0].clone();
    assert_eq!(live["subject"], "live arrival");
    let id = live["id"].as_str().unwrap();
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{id}"), &[]).status,
        200
    );
    let (seen, _) = browse(
        &format!("http://{http}/inbox/bob@example.com?images=1"),
        &[],
    );
    assert_eq!(seen["pwned"], Value::Null, "{seen}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "images=1 loaded no remote image"
    );
}

#[test]
fn a_ten_thousand_message_mailbox_pages_correctly() {
    let (server, http) = start(&format!("token = \"{TOKEN}\""), "", Opts::default());
    // Inserted straight into the store (one transaction, well under a second)
    // rather than over SMTP: the paging is what is tested here. Many rows share a
    // date (the sort's ties go by mail_id), and other mailboxes' rows interleave.
    {
        let mut db = server.db();
        let tx = db.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    r#"INSERT INTO new_mail (date, "from", "to", subject, body, charset, mail, hash,
                       content_type, recipient, has_attach, ip_addr, return_path, is_tls,
                       message_id, reply_to, sender, helo, size)
                       VALUES (?1, 's@example.org', ?2, ?3, '', 'utf-8', ?4, ?5, 'text/plain', ?2,
                       0, '127.0.0.1', 's@example.org', 0, '', '', '', 'h', ?6)"#,
                )
                .unwrap();
            for i in 0..11_000u32 {
                let rcpt = if i % 11 == 5 {
                    "other@example.com"
                } else {
                    "bob@example.com"
                };
                // 37 messages per second of arrival time, out of insertion order.
                let second = (i * 7919) % 300;
                let date = format!("2026-11-30 12:{:02}:{:02}", second / 60, second % 60);
                let subject = format!("n{i}");
                let mail = format!("Subject: {subject}\r\n\r\nx\r\n");
                insert
                    .execute(rusqlite::params![
                        date,
                        rcpt,
                        subject,
                        mail.as_bytes(),
                        format!("{i:032x}"),
                        mail.len() as i64
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let expected: Vec<String> = {
        let db = server.db();
        let mut q = db
            .prepare("SELECT subject FROM new_mail WHERE recipient = 'bob@example.com' ORDER BY date DESC, mail_id DESC")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(expected.len(), 10_000);
    let auth = format!("Bearer {TOKEN}");
    let t0 = Instant::now();
    let pages = all_ids(http, "bob@example.com", 100, &[("Authorization", &auth)]);
    println!("10,000 messages in 100-message pages: {:?}", t0.elapsed());
    let subjects: Vec<String> = pages
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects.len(), 10_000);
    assert_eq!(subjects, expected);
    let ids: HashSet<&str> = pages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10_000);
    // A cursor from another mailbox is refused, not silently used.
    let other = request(
        http,
        "GET",
        "/api/v1/mailboxes/other@example.com/messages?limit=1",
        &[("Authorization", &auth)],
    )
    .json()["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = request(
        http,
        "GET",
        &format!("/api/v1/mailboxes/bob@example.com/messages?after={other}"),
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("after:"));
}

fn redis_keys(redis: &Redis, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis.conn())
        .unwrap();
    keys.sort();
    keys
}

fn inbox(redis: &Redis, address: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(format!("smtpd:inbox:{address}"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap()
}

#[test]
fn mariadb_and_redis_cache_list_get_stream_and_delete_rows_and_cache() {
    let db = Mariadb::start();
    let redis = Redis::start();
    let (server, http) = start(
        "public = true\nrate_per_ip = 0",
        &format!("[redis]\nurl = \"{}\"\nttl_secs = 600\n", redis.url()),
        Opts::default().store(&db.url()).arg("--migrate"),
    );
    let events = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let mut c = server.client();
    c.ehlo("client.example");
    let qid = c.deliver(
        "s@example.org",
        &["bob@example.com", "carol@example.com"],
        &rich_message("mm", b"attached bytes"),
    );
    let ev = events.message(Duration::from_secs(10));
    let listed = list(http, "bob@example.com", "");
    assert_eq!(listed["messages"][0]["id"].as_str(), Some(ev.id.as_str()));
    assert_eq!(listed["messages"][0]["has_attach"], 2);
    let m = get_json(http, &format!("/api/v1/messages/{}", ev.id));
    assert_eq!(m["subject"], "Über den Räuber and more");
    assert_eq!(m["mailbox"], "bob@example.com");
    let part = get(http, &format!("/api/v1/messages/{}/parts/0", ev.id));
    assert_eq!(part.body, b"attached bytes");
    assert_eq!(
        list(http, "bob@example.com", "")["messages"][0]["seen"],
        true
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM new_mail WHERE seen = 1"), 1);

    assert_eq!(
        redis_keys(&redis, "smtpd:mail:*"),
        [format!("smtpd:mail:{qid}")]
    );
    assert_eq!(inbox(&redis, "bob@example.com"), std::slice::from_ref(&qid));
    // Deleting bob's copy keeps carol's row and the cached body she still needs.
    let r = request(http, "DELETE", &format!("/api/v1/messages/{}", ev.id), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM new_mail WHERE hash = '{qid}'"
        )),
        1
    );
    assert!(inbox(&redis, "bob@example.com").is_empty());
    assert_eq!(
        inbox(&redis, "carol@example.com"),
        std::slice::from_ref(&qid)
    );
    assert_eq!(redis_keys(&redis, "smtpd:mail:*").len(), 1);
    assert_eq!(
        get(http, &format!("/api/v1/messages/{}", ev.id)).status,
        404
    );
    let carol = list(http, "carol@example.com", "")["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        request(http, "DELETE", &format!("/api/v1/messages/{carol}"), &[]).status,
        200
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM new_mail"), 0);
    assert!(redis_keys(&redis, "smtpd:mail:*").is_empty());
    assert!(inbox(&redis, "carol@example.com").is_empty());

    // Paging on MariaDB: 250 rows sharing a few dates.
    db.query(
        "INSERT INTO new_mail (date, `from`, `to`, subject, body, charset, mail, hash, content_type, \
         recipient, has_attach, ip_addr, return_path, is_tls, message_id, reply_to, sender, helo, size) \
         SELECT TIMESTAMP('2026-11-30 12:00:00') + INTERVAL (seq % 7) SECOND, 's@example.org', \
         'dan@example.com', CONCAT('n', seq), '', 'utf-8', 'x', LPAD(LOWER(HEX(seq)), 32, '0'), 'text/plain', \
         'dan@example.com', 0, '127.0.0.1', '', 0, '', '', '', 'h', 1 FROM seq_1_to_250",
    );
    let expected = db.column(
        "SELECT subject FROM new_mail WHERE recipient = 'dan@example.com' ORDER BY date DESC, mail_id DESC",
    );
    let pages = all_ids(http, "dan@example.com", 100, &[]);
    let subjects: Vec<String> = pages
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects.len(), 250);
    assert_eq!(subjects, expected);
}

#[test]
fn guerrilla_mode_lists_gets_and_streams_bodies_from_redis() {
    let db = Mariadb::start();
    let redis = Redis::start();
    let (server, http) = start(
        "public = true\nrate_per_ip = 0",
        &format!(
            "[redis]\nurl = \"{}\"\nmode = \"guerrilla\"\nttl_secs = 600\n",
            redis.url()
        ),
        Opts::default().store(&db.url()).arg("--migrate"),
    );
    let events = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let mut c = server.client();
    c.ehlo("client.example");
    let data = rich_message("gg", b"guerrilla attachment");
    let qid = c.deliver("s@example.org", &["bob@example.com"], &data);
    let ev = events.message(Duration::from_secs(10));
    // Only duplicate-free: the committer's event and Redis's are one.
    assert!(
        events
            .next(Duration::from_millis(500))
            .is_none_or(|e| e.name != "message")
    );
    assert_eq!(
        db.column(&format!("SELECT body FROM new_mail WHERE hash = '{qid}'")),
        ["redis"]
    );
    assert_eq!(
        list(http, "bob@example.com", "")["messages"][0]["id"].as_str(),
        Some(ev.id.as_str())
    );
    let m = get_json(http, &format!("/api/v1/messages/{}", ev.id));
    assert_eq!(m["subject"], "Über den Räuber and more");
    let raw = get(http, &format!("/api/v1/messages/{}/raw", ev.id));
    assert!(raw.body.ends_with(&data));
    assert_eq!(
        get(http, &format!("/api/v1/messages/{}/parts/0", ev.id)).body,
        b"guerrilla attachment"
    );
    // The body expired: the row says so.
    redis::cmd("DEL")
        .arg(format!("smtpd:mail:{qid}"))
        .query::<()>(&mut redis.conn())
        .unwrap();
    let r = get(http, &format!("/api/v1/messages/{}", ev.id));
    assert_eq!(r.status, 410);
    assert!(r.error().contains("expired"));
}

#[test]
fn another_nodes_arrivals_come_through_redis() {
    let db = Mariadb::start();
    let redis = Redis::start();
    let redis_toml = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let (node_a, _) = start(
        "public = true\nrate_per_ip = 0",
        &redis_toml,
        Opts::default().store(&db.url()).arg("--migrate"),
    );
    let (_node_b, http_b) = start(
        "public = true\nrate_per_ip = 0",
        &redis_toml,
        Opts::default().store(&db.url()),
    );
    let events = Events::open(http_b, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    // The subscription may take a moment after the node started.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = node_a.client();
    c.ehlo("client.example");
    let sent = Instant::now();
    c.deliver(
        "s@example.org",
        &["bob@example.com"],
        &simple_message("from node a"),
    );
    let ev = events.message(Duration::from_secs(10));
    println!(
        "node A's arrival on node B's stream after {:?}",
        ev.at - sent
    );
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["subject"], "from node a");
}

#[test]
fn open_http_connections_are_capped() {
    let (_server, http) = public("rate_per_ip = 0\nmax_connections = 2");
    let a = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let _b = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    // A third connection waits: no answer while both slots are held...
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    s.write_all(b"GET /api/v1/mailboxes/bob@example.com/messages HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(s.read(&mut buf).is_err(), "answered beyond the cap");
    // ...and is served once one closes.
    drop(a);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_request_head_never_finished_is_closed_while_event_streams_stay_open() {
    let (server, http) = public("rate_per_ip = 0\nmax_connections = 4");
    let events = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    // A slowloris: half a request head, then silence.
    let mut slow = TcpStream::connect(http).unwrap();
    slow.write_all(b"GET /api/v1/mailboxes/bob@example.com/messages HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let opened = Instant::now();
    let mut rest = Vec::new();
    // Closed by the server (EOF, or a reset), well before the read timeout.
    let _ = slow.read_to_end(&mut rest);
    let held = opened.elapsed();
    assert!(
        held >= Duration::from_secs(5) && held < Duration::from_secs(20),
        "the half-sent request held its connection for {held:?}"
    );
    // The event stream, open all that time, still delivers.
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver(
        "s@example.org",
        &["bob@example.com"],
        &simple_message("after the wait"),
    );
    let ev = events.message(Duration::from_secs(10));
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["subject"], "after the wait");
}

/// A connection to `to` from the loopback address `from` (a second client).
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

#[test]
fn one_address_past_http_max_connections_per_ip_is_closed_while_others_are_served() {
    let (_server, http) =
        public("rate_per_ip = 0\nmax_connections = 50\nmax_connections_per_ip = 2");
    let _a = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let _b = Events::open(http, "/api/v1/mailboxes/bob@example.com/events", &[]).unwrap();
    let get = b"GET /api/v1/mailboxes/bob@example.com/messages HTTP/1.0\r\nHost: t\r\n\r\n";
    // A third from 127.0.0.1: closed without an answer, though slots are free.
    let mut third = TcpStream::connect(http).unwrap();
    let _ = third.write_all(get);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let _ = third.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Another address is served.
    let mut other = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), http);
    other.write_all(get).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
