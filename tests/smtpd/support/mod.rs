//! Test support: a [`Server`] (the real `smtpd` binary in its own temp dir), a tiny
//! raw SMTP [`Client`] over a blocking `TcpStream`, and read-back of the `new_mail`
//! rows the server committed.
//!
//! Everything here is bounded in time: the server must announce its port within
//! [`START_TIMEOUT`], every read gives up after [`READ_TIMEOUT`], external tools run
//! under [`run_tool`] with a deadline, and dropping a [`Server`] kills its process.
//! Servers only ever listen on 127.0.0.1.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

pub use test_support::services;

/// The server binary under test, built by cargo for this test crate.
pub const SMTPD: &str = env!("CARGO_BIN_EXE_smtpd");
/// How long a server may take to print `smtpd: listening on ...`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client waits for any one reply line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The name every test server is started with (greeting, EHLO, `Received:`).
pub const HOSTNAME: &str = "mx.test";
/// The stderr line that tells us the bound address.
const LISTENING_PREFIX: &str = "smtpd: listening on ";
/// Stderr kept per server for failure messages; beyond it the oldest half is dropped
/// (the drain thread keeps reading either way, so the child never blocks on a pipe).
const MAX_STDERR_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------

/// A running `smtpd` with its own temp dir and SQLite file. Dropping it kills it.
pub struct Server {
    child: Child,
    /// Holds the store and config files; removed on drop (after the child is dead).
    dir: TempDir,
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    stderr: Arc<Mutex<String>>,
    drain: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

/// How to start a server: extra flags and an optional config file.
#[derive(Default, Clone)]
pub struct Opts {
    /// TOML written to `<dir>/smtpd.toml` and passed with `-c`.
    pub config: Option<String>,
    /// Flags after the defaults (`--listen 127.0.0.1:0 --store ... --hostname mx.test`).
    pub args: Vec<String>,
    /// A store URL instead of the temp dir's SQLite file (e.g. a MariaDB URL).
    pub store: Option<String>,
}

impl Opts {
    pub fn config(toml: &str) -> Opts {
        Opts {
            config: Some(toml.to_string()),
            ..Opts::default()
        }
    }

    pub fn args(args: &[&str]) -> Opts {
        Opts {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Opts::default()
        }
    }

    pub fn arg(mut self, a: &str) -> Opts {
        self.args.push(a.to_string());
        self
    }

    pub fn store(mut self, url: &str) -> Opts {
        self.store = Some(url.to_string());
        self
    }
}

impl Server {
    /// A server with defaults, on a free loopback port, storing into its temp dir.
    pub fn start() -> Server {
        Server::start_with(Opts::default())
    }

    pub fn with_args(args: &[&str]) -> Server {
        Server::start_with(Opts::args(args))
    }

    pub fn with_config(toml: &str) -> Server {
        Server::start_with(Opts::config(toml))
    }

    pub fn start_with(opts: Opts) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("x.sqlite");
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            opts.store
                .clone()
                .unwrap_or_else(|| format!("sqlite:{}", db_path.display())),
            "--hostname".into(),
            HOSTNAME.into(),
        ];
        if let Some(toml) = &opts.config {
            let path = dir.path().join("smtpd.toml");
            std::fs::write(&path, toml).expect("write config");
            args.push("-c".into());
            args.push(path.display().to_string());
        }
        args.extend(opts.args.iter().cloned());
        let cwd = dir.path().to_path_buf();
        Server::spawn(&args, &cwd, dir, db_path)
    }

    /// Starts the binary with exactly `args` in `cwd` and waits for its first
    /// `listening on` line. `db_path` is where its store is expected to be.
    pub fn spawn(args: &[String], cwd: &Path, dir: TempDir, db_path: PathBuf) -> Server {
        let mut child = Command::new(SMTPD)
            .args(args)
            .current_dir(cwd)
            .env_remove("SMTPD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smtpd");
        let stderr_pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let sink = Arc::clone(&stderr);
        let drain = std::thread::spawn(move || drain_stderr(stderr_pipe, &sink, &tx));

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed before the line: the server exited.
                    let status = child.wait().ok();
                    let text = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                    panic!("smtpd {args:?} exited ({status:?}) before listening; stderr:\n{text}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the drain thread a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                let text = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("smtpd {args:?} exited ({status}) before listening; stderr:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!(
                    "smtpd {args:?} did not print its listening line within {START_TIMEOUT:?}; stderr:\n{text}"
                );
            }
        };
        Server {
            child,
            dir,
            addr,
            db_path,
            stderr,
            drain: Some(drain),
            exit: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The port of the listener announced as `smtpd: listening on ADDR (<kind>)`
    /// (e.g. `implicit TLS`, `PROXY protocol`); waits for the line briefly.
    pub fn listener_port(&self, kind: &str) -> u16 {
        let suffix = format!("({kind})");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let port = self
                .stderr()
                .lines()
                .find(|l| l.starts_with(LISTENING_PREFIX) && l.ends_with(&suffix))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            if let Some(port) = port {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no {suffix} listener:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A client connected to this server, its 220 greeting read and checked.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.expect(220, "");
        c
    }

    /// A client that has also said `EHLO client.test`.
    pub fn ehlo_client(&self) -> Client {
        let mut c = self.client();
        c.ehlo("client.test");
        c
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) through `sh`'s `kill` builtin
    /// (the workspace forbids `unsafe`, so no `libc::kill`).
    pub fn signal(&self, name: &str) {
        signal_pid(self.pid(), name);
    }

    pub fn term(&self) {
        self.signal("TERM");
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for killed smtpd");
        self.exit = Some(status);
        status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                if let Some(h) = self.drain.take() {
                    let _ = h.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the process exits with `code` within `timeout`.
    #[track_caller]
    pub fn assert_exit(&mut self, code: i32, timeout: Duration) {
        match self.wait_exit(timeout) {
            Some(status) => assert_eq!(
                status.code(),
                Some(code),
                "smtpd exit status {status}; stderr:\n{}",
                self.stderr()
            ),
            None => panic!(
                "smtpd did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// A connection to the store (read-write, never creating it; tests only read,
    /// except the one that installs a failing trigger). Usable while the server runs
    /// (WAL) and after it has stopped or been killed (a read-write connection can
    /// recover a WAL left by a crash, a read-only one may not).
    pub fn db(&self) -> Connection {
        open_db(&self.db_path)
    }

    /// Every stored row, oldest first.
    pub fn rows(&self) -> Vec<Row> {
        rows(&self.db())
    }

    pub fn row_count(&self) -> i64 {
        self.db()
            .query_row("SELECT count(*) FROM new_mail", [], |r| r.get(0))
            .expect("count rows")
    }

    /// The rows of one message (queue id), ordered by recipient order of storage.
    pub fn rows_for(&self, hash: &str) -> Vec<Row> {
        self.rows().into_iter().filter(|r| r.hash == hash).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(h) = self.drain.take() {
            let _ = h.join();
        }
    }
}

fn drain_stderr(pipe: impl Read, sink: &Mutex<String>, tx: &mpsc::Sender<SocketAddr>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut announced = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if !announced
            && let Some(rest) = text.trim_end().strip_prefix(LISTENING_PREFIX)
            && let Ok(addr) = rest.parse::<SocketAddr>()
        {
            announced = true;
            let _ = tx.send(addr);
        }
        if let Ok(mut s) = sink.lock() {
            if s.len() > MAX_STDERR_BYTES {
                let mut cut = s.len() / 2;
                while !s.is_char_boundary(cut) {
                    cut += 1;
                }
                s.drain(..cut);
            }
            s.push_str(&text);
        }
    }
}

pub use services::signal_pid;

// ---------------------------------------------------------------------------------
// Running the binary without a listening server (config errors)
// ---------------------------------------------------------------------------------

/// Runs `smtpd` with `args` in `cwd` until it exits (at most `timeout`; then it is
/// killed and the test fails). Returns the exit code and stderr.
pub fn run_smtpd_to_exit(args: &[String], cwd: &Path, timeout: Duration) -> (i32, String) {
    let mut cmd = Command::new(SMTPD);
    cmd.args(args).current_dir(cwd).env_remove("SMTPD_LOG");
    let out = run_tool(&mut cmd, timeout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "smtpd {args:?} died by a signal: {}; stderr:\n{stderr}",
            out.status
        )
    });
    (code, stderr)
}

/// Runs `python3` with `args`; it must succeed. Returns its stdout lines split as
/// `key value` pairs (the drivers' output convention).
pub fn python_kv(args: &[&str], what: &str) -> Vec<(String, String)> {
    let out = run_tool(Command::new("python3").args(args), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 {what} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The value of `key` in a [`python_kv`] result.
#[track_caller]
pub fn kv_value<'a>(out: &'a [(String, String)], key: &str) -> &'a str {
    out.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key:?} in {out:?}"))
}

/// Runs an external program to completion with a deadline, capturing its output.
/// A missing program is a test FAILURE naming it (scripts/test installs them all).
pub fn run_tool(cmd: &mut Command, timeout: Duration) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let shown_args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` is not installed; the end-to-end tests need it (scripts/test installs swaks, curl, python3, sqlite3)"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "`{program} {shown_args:?}` did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------
// Raw SMTP client
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Store read-back
// ---------------------------------------------------------------------------------

/// One `new_mail` row.
#[derive(Debug, Clone)]
pub struct Row {
    pub mail_id: i64,
    pub date: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub charset: String,
    pub mail: Vec<u8>,
    pub hash: String,
    pub content_type: String,
    pub recipient: String,
    pub ip_addr: String,
    pub return_path: String,
    pub is_tls: i64,
    pub message_id: String,
    pub helo: String,
    pub size: i64,
}

pub fn open_db(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

pub fn rows(conn: &Connection) -> Vec<Row> {
    let mut stmt = conn
        .prepare(
            "SELECT mail_id, date, \"from\", \"to\", subject, body, charset, mail, hash, \
             content_type, recipient, ip_addr, return_path, is_tls, message_id, helo, size \
             FROM new_mail ORDER BY mail_id",
        )
        .expect("prepare select");
    stmt.query_map([], |r| {
        Ok(Row {
            mail_id: r.get(0)?,
            date: r.get(1)?,
            from: r.get(2)?,
            to: r.get(3)?,
            subject: r.get(4)?,
            body: r.get(5)?,
            charset: r.get(6)?,
            mail: r.get(7)?,
            hash: r.get(8)?,
            content_type: r.get(9)?,
            recipient: r.get(10)?,
            ip_addr: r.get(11)?,
            return_path: r.get(12)?,
            is_tls: r.get(13)?,
            message_id: r.get(14)?,
            helo: r.get(15)?,
            size: r.get(16)?,
        })
    })
    .expect("query rows")
    .collect::<Result<Vec<_>, _>>()
    .expect("read rows")
}

/// Asserts a stored `mail` blob is a `Received:` header for `helo` from 127.0.0.1,
/// folded with CRLF + whitespace, followed by exactly `data`.
#[track_caller]
pub fn assert_mail_blob(mail: &[u8], helo: &str, data: &[u8]) {
    assert!(
        mail.ends_with(data),
        "stored mail does not end with the sent bytes\nsent   ({} bytes): {:?}\nstored ({} bytes): {:?}",
        data.len(),
        String::from_utf8_lossy(data),
        mail.len(),
        String::from_utf8_lossy(mail)
    );
    let prefix = &mail[..mail.len() - data.len()];
    let want = format!("Received: from {helo} ([127.0.0.1])");
    assert!(
        prefix.starts_with(want.as_bytes()),
        "stored mail does not start with {want:?}: {:?}",
        String::from_utf8_lossy(prefix)
    );
    assert!(
        prefix.ends_with(b"\r\n"),
        "Received: header not ended by CRLF: {:?}",
        String::from_utf8_lossy(prefix)
    );
    // Folded: every line end inside the header is CRLF and followed by whitespace.
    let body = &prefix[..prefix.len() - 2];
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\n' => {
                assert!(
                    i > 0 && body[i - 1] == b'\r',
                    "bare LF in Received: header: {:?}",
                    String::from_utf8_lossy(prefix)
                );
                assert!(
                    matches!(body.get(i + 1), Some(b' ') | Some(b'\t')),
                    "Received: header line not folded with whitespace: {:?}",
                    String::from_utf8_lossy(prefix)
                );
            }
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR in Received: header"),
            _ => {}
        }
    }
}
