//! A tiny raw SMTP client over a blocking `TcpStream`: it writes exact bytes,
//! reads replies with the workspace's reply parser (`smtp_wire`), keeps a
//! transcript for failure messages, and gives up on every read after
//! [`READ_TIMEOUT`](super::READ_TIMEOUT). Plus the message helpers tests send.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::*;

/// One SMTP reply: the code, its enhanced code (`""` when the reply has none), and
/// every line as sent (without CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    enhanced: String,
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined with `\n`, codes included.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code of the first line (`2.1.0`), or "" if there is none.
    pub fn enhanced(&self) -> &str {
        &self.enhanced
    }

    /// Asserts the code and (when `enhanced` is not empty) the enhanced code.
    #[track_caller]
    pub fn assert(&self, code: u16, enhanced: &str) -> &Self {
        assert!(
            self.code == code && (enhanced.is_empty() || self.enhanced() == enhanced),
            "expected {code} {enhanced}, got:\n{}",
            self.text()
        );
        self
    }

    /// The id in `250 2.0.0 OK queued as <32 lowercase hex>`.
    #[track_caller]
    pub fn queue_id(&self) -> String {
        self.assert(250, "2.0.0");
        let first = &self.lines[0];
        let id = first
            .split("queued as ")
            .nth(1)
            .unwrap_or_else(|| panic!("no 'queued as' in {first:?}"))
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "queue id {id:?} is not 32 lowercase hex digits (reply {first:?})"
        );
        id
    }
}

/// Why a read produced no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing complete arrived within the read timeout.
    Timeout,
}

/// A blocking SMTP client that speaks raw bytes and keeps a transcript for failures.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    transcript: String,
    timeout: Duration,
}

impl Client {
    /// Connects (10 s at most) with [`READ_TIMEOUT`]; reads nothing.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        Client {
            stream,
            buf: Vec::new(),
            transcript: String::new(),
            timeout: READ_TIMEOUT,
        }
    }

    /// The conversation so far (C: / S: lines), for failure messages.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all of `bytes` (panics on failure).
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write failed: {e}\ntranscript:\n{}", self.transcript));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let shown = if bytes.len() > 300 {
            format!(
                "{} bytes: {:?}…",
                bytes.len(),
                String::from_utf8_lossy(&bytes[..300])
            )
        } else {
            format!("{:?}", String::from_utf8_lossy(bytes))
        };
        let _ = writeln!(self.transcript, "C: {shown}");
        self.stream.write_all(bytes)
    }

    /// One line up to and including LF, within the timeout.
    fn read_line(&mut self, timeout: Duration) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(line);
            }
            assert!(
                self.buf.len() < 1 << 20,
                "reply line over 1 MiB without LF\ntranscript:\n{}",
                self.transcript
            );
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadError::Timeout);
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .expect("read timeout");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ReadError::Timeout);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// One complete (possibly multi-line) reply within `timeout`, read with the
    /// workspace's one reply parser (`smtp_wire`), which also refuses malformed
    /// lines and a code that changes inside a multi-line reply.
    /// How long each reply may take from now on (a client waiting out a commit
    /// that the store has to resolve, as RFC 5321 §4.5.3.2.6 allows for the dot).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn try_read_reply_within(&mut self, timeout: Duration) -> Result<Reply, ReadError> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        let mut parser = smtp_wire::ReplyParser::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self.read_line(left)?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            let _ = writeln!(self.transcript, "S: {:?}", text);
            assert!(
                raw.ends_with(b"\r\n"),
                "reply line not ended by CRLF: {text:?}\ntranscript:\n{}",
                self.transcript
            );
            let line = &raw[..raw.len() - 2];
            lines.push(String::from_utf8_lossy(line).into_owned());
            let parsed = parser.line(line).unwrap_or_else(|e| {
                panic!(
                    "bad reply line {text:?}: {e}\ntranscript:\n{}",
                    self.transcript
                )
            });
            if let Some(reply) = parsed {
                return Ok(Reply {
                    code: reply.code,
                    enhanced: reply.status.map(|s| s.to_string()).unwrap_or_default(),
                    lines,
                });
            }
        }
    }

    pub fn try_read_reply(&mut self) -> Result<Reply, ReadError> {
        self.try_read_reply_within(self.timeout)
    }

    /// The next reply; the test fails on timeout or close.
    #[track_caller]
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply() {
            Ok(r) => r,
            Err(e) => panic!("no reply ({e:?})\ntranscript:\n{}", self.transcript),
        }
    }

    /// Reads a reply and asserts its code and enhanced code ("" = any).
    #[track_caller]
    pub fn expect(&mut self, code: u16, enhanced: &str) -> Reply {
        let r = self.read_reply();
        if r.code != code || (!enhanced.is_empty() && r.enhanced() != enhanced) {
            panic!(
                "expected {code} {enhanced}, got {:?}\ntranscript:\n{}",
                r.text(),
                self.transcript
            );
        }
        r
    }

    /// Sends `line` + CRLF and reads the reply.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.cmd_bytes(line.as_bytes())
    }

    #[track_caller]
    pub fn cmd_bytes(&mut self, line: &[u8]) -> Reply {
        let mut v = line.to_vec();
        v.extend_from_slice(b"\r\n");
        self.send(&v);
        self.read_reply()
    }

    /// Sends a command and asserts the reply codes.
    #[track_caller]
    pub fn cmd_expect(&mut self, line: &str, code: u16, enhanced: &str) -> Reply {
        let mut v = line.as_bytes().to_vec();
        v.extend_from_slice(b"\r\n");
        self.send(&v);
        self.expect(code, enhanced)
    }

    /// `EHLO name`, asserting a 250 reply.
    #[track_caller]
    pub fn ehlo(&mut self, name: &str) -> Reply {
        self.cmd_expect(&format!("EHLO {name}"), 250, "")
    }

    /// True if no byte arrives for `quiet` (nothing buffered either).
    pub fn is_quiet_for(&mut self, quiet: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.read_line(quiet) {
            Err(ReadError::Timeout) => self.buf.is_empty(),
            Err(ReadError::Closed) => false,
            Ok(line) => {
                let _ = writeln!(
                    self.transcript,
                    "S (unexpected): {:?}",
                    String::from_utf8_lossy(&line)
                );
                self.buf.splice(0..0, line);
                false
            }
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    #[track_caller]
    pub fn assert_quiet(&mut self, quiet: Duration) {
        assert!(
            self.is_quiet_for(quiet),
            "expected no reply for {quiet:?}, but the server sent something or closed\ntranscript:\n{}\nbuffered: {:?}",
            self.transcript,
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Asserts the server closes the connection within the read timeout without
    /// sending anything more.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        match self.read_line(self.timeout) {
            Err(ReadError::Closed) => {}
            Err(ReadError::Timeout) => panic!(
                "connection not closed within {:?}\ntranscript:\n{}",
                self.timeout, self.transcript
            ),
            Ok(line) => panic!(
                "expected close, got {:?}\ntranscript:\n{}",
                String::from_utf8_lossy(&line),
                self.transcript
            ),
        }
    }

    /// MAIL, RCPT…, DATA (each must succeed), then `data` (already dot-stuffed and
    /// ending in CRLF, or empty) and `.CRLF`. Returns the reply to the final dot.
    #[track_caller]
    pub fn transaction(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> Reply {
        self.cmd_expect(&format!("MAIL FROM:<{from}>"), 250, "2.1.0");
        for r in rcpts {
            self.cmd_expect(&format!("RCPT TO:<{r}>"), 250, "2.1.5");
        }
        self.cmd_expect("DATA", 354, "");
        let mut body = data.to_vec();
        body.extend_from_slice(b".\r\n");
        self.send(&body);
        self.read_reply()
    }

    /// A whole successful transaction; returns the queue id.
    #[track_caller]
    pub fn deliver(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> String {
        let r = self.transaction(from, rcpts, data);
        if r.code != 250 {
            panic!(
                "message not accepted: {:?}\ntranscript:\n{}",
                r.text(),
                self.transcript
            );
        }
        r.queue_id()
    }

    /// QUIT → 221 2.0.0 → close.
    #[track_caller]
    pub fn quit(&mut self) {
        self.cmd_expect("QUIT", 221, "2.0.0");
        self.expect_closed();
    }
}

/// Dot-stuffs `body` (RFC 5321 §4.5.2): every line starting with '.' gets another.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// A small valid message with CRLF line ends.
pub fn simple_message(subject: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.org>\r\nTo: Rcpt <rcpt@example.com>\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}
