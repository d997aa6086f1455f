//! Process wrappers for the outbound tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use test_support::services::{Mariadb, free_port};

const PYTHON: &str = "/usr/bin/python3";
const START: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/outbound/fixtures")
        .join(name)
}

/// Waits for `ready`, polling; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `limit` for `child` to exit by itself; its status (and the child
/// taken), or None while it is still running.
fn wait_child(child: &mut Option<Child>, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    let c = child.as_mut()?;
    loop {
        if let Ok(Some(status)) = c.try_wait() {
            *child = None;
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the child's first stdout line `listening on ADDR:PORT`.
fn listening(child: &mut Child, what: &str) -> SocketAddr {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(START)
        .unwrap_or_else(|_| panic!("{what} did not start"));
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{what} printed {line:?}"))
}

// ---------------------------------------------------------------------------------
// Destination SMTP servers
// ---------------------------------------------------------------------------------

/// A destination SMTP server (aiosmtpd) recording every accepted message.
pub struct Dest {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Dest {
    /// On 127.0.0.1, a free port; `args` are smtp_dest.py options (`--rule`, ...).
    pub fn start(args: &[&str]) -> Dest {
        Self::start_on("127.0.0.1", 0, args)
    }

    pub fn start_on(address: &str, port: u16, args: &[&str]) -> Dest {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dest.jsonl");
        let mut child = Command::new(PYTHON)
            .arg(fixture("smtp_dest.py"))
            .args([
                "--address",
                address,
                "--port",
                &port.to_string(),
                "--quiet",
                "--log",
            ])
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run smtp_dest.py (scripts/test installs python3-aiosmtpd)");
        let addr = listening(&mut child, "smtp_dest.py");
        Dest {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Every accepted message so far, as logged.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every accepted recipient so far (one entry per delivery).
    pub fn recipients(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|m| m["rcpt_tos"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect()
    }

    /// The most connections open at once.
    pub fn peak(&self) -> u64 {
        std::fs::read_to_string(self.log.with_extension("jsonl.peak"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Dest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------------

/// An authoritative DNS server for the test zone (JSON, see fixtures/dns_server.py).
pub struct Dns {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Dns {
    pub fn start(zone: &serde_json::Value) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone.json");
        std::fs::write(&path, zone.to_string()).unwrap();
        let mut child = Command::new(PYTHON)
            .arg(fixture("dns_server.py"))
            .args(["--address", "127.0.0.1", "--port", "0", "--quiet", "--zone"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run dns_server.py (scripts/test installs python3-dnslib)");
        let addr = listening(&mut child, "dns_server.py");
        Dns {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------------

/// The queue database: the embedded SQLite file or a private MariaDB.
pub enum Store {
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    Mariadb(Mariadb),
    /// One node of a shared Galera cluster (`galera.rs`).
    Galera(std::rc::Rc<test_support::galera::Galera>, usize),
}

impl Store {
    pub fn sqlite() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        Store::Sqlite { _dir: dir, path }
    }

    pub fn mariadb() -> Store {
        Store::migrated(Mariadb::start())
    }

    /// A MariaDB that takes TLS only, the relay connecting with the URL's
    /// `ssl-mode=verify_identity&ssl-ca=` (`Mariadb::start_tls`).
    pub fn mariadb_tls(ca: &test_support::ca::TestCa) -> Store {
        Store::migrated(Mariadb::start_tls(ca))
    }

    fn migrated(db: Mariadb) -> Store {
        let store = Store::Mariadb(db);
        // The schema, as an operator would create it.
        let out = outbound(&store, &["--migrate", "stats"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        store
    }

    pub fn url(&self) -> String {
        match self {
            Store::Sqlite { path, .. } => format!("sqlite:{}", path.display()),
            Store::Mariadb(db) => db.url(),
            Store::Galera(g, i) => g.url(*i),
        }
    }

    /// A one-column query, values as text (NULL → "").
    pub fn column(&self, sql: &str) -> Vec<String> {
        match self {
            Store::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                stmt.query_map([], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Real(f) => f.to_string(),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                    })
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Store::Mariadb(db) => db.column(sql),
            Store::Galera(g, i) => g.nodes[*i].column(sql),
        }
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.column(sql)[0].parse().unwrap()
    }

    /// Runs a statement (no result).
    pub fn exec(&self, sql: &str) {
        match self {
            Store::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Store::Mariadb(db) => {
                db.query(sql);
            }
            Store::Galera(g, i) => {
                g.nodes[*i].query(sql);
            }
        }
    }

    /// `state` of the queue row for `recipient`.
    pub fn state(&self, recipient: &str) -> String {
        self.column(&format!(
            "SELECT state FROM outbound_queue WHERE recipient = '{recipient}' ORDER BY id DESC LIMIT 1"
        ))
        .into_iter()
        .next()
        .unwrap_or_default()
    }

    /// Waits until no row is queued, sending or deferred-and-due.
    pub fn wait_settled(&self, states: &[&str], limit: Duration) {
        let list = states
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        wait_for("the queue to settle", limit, || {
            self.count(&format!(
                "SELECT COUNT(*) FROM outbound_queue WHERE state NOT IN ({list})"
            )) == 0
        });
    }
}

/// Runs `outbound ARGS --store URL` to completion (the CLI tools), with `stdin`.
pub fn outbound(store: &Store, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(["--store", &store.url()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("outbound CLI did not finish")
        .unwrap()
}

/// Queues `body` from `from` to each of `to`; returns the queue ids.
pub fn enqueue(store: &Store, from: &str, to: &[&str], body: &str) -> Vec<i64> {
    let mut args = vec!["enqueue", "--from", from];
    for t in to {
        args.extend(["--to", t]);
    }
    let out = outbound(store, &args, Some(body.as_bytes()));
    assert!(
        out.status.success(),
        "enqueue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// Enqueues one row per recipient, each with its own body ([`message`], so no
/// grouping), in INSERTs of 500 rows.
pub fn enqueue_distinct(store: &Store, recipients: &[String]) {
    let rows: Vec<String> = recipients
        .iter()
        .map(|r| {
            format!(
                "('app@sender.test', '{r}', '{}')",
                message(r).replace('\'', "''")
            )
        })
        .collect();
    for chunk in rows.chunks(500) {
        store.exec(&format!(
            "INSERT INTO outbound_queue (sender, recipient, body) VALUES {}",
            chunk.join(", ")
        ));
    }
}

/// A simple message whose body names `tag` (so each is distinct).
pub fn message(tag: &str) -> String {
    format!("From: app@sender.test\r\nSubject: {tag}\r\n\r\nbody of {tag}\r\n")
}

// ---------------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------------

/// A running relay node.
pub struct Relay {
    child: Option<Child>,
    dir: TempDir,
}

/// Config for tests: quick retries, short leases, fast polling, and no DSNs (the
/// senders' domains are not routable here; `bounces.rs` turns them on).
pub const FAST: &str = "
[relay]
poll_interval_ms = 50
heartbeat_secs = 1
lease_secs = 4
shutdown_grace_secs = 5
[retry]
first_secs = 1
multiplier = 1.0
max_interval_secs = 1
give_up_secs = 3600
[delivery]
helo_name = \"relay.test\"
connect_timeout_secs = 2
command_timeout_secs = 10
idle_timeout_secs = 2
[dns]
timeout_ms = 1000
[bounces]
dsn = false
";

impl Relay {
    /// Starts `outbound --store URL -c CONFIG ARGS` with `config` (TOML) as its file.
    pub fn start(store: &Store, config: &str, args: &[&str]) -> Relay {
        Relay::start_env(store, config, args, &[])
    }

    /// [`Relay::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_env(store: &Store, config: &str, args: &[&str], env: &[(&str, &str)]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("outbound.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("relay.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_outbound"))
            .args(["--store", &store.url(), "-v", "-c"])
            .arg(&cfg)
            .args(args)
            .env("OUTBOUND_LOG", "outbound=debug,info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Relay {
            child: Some(child),
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// The config file it was started with (rewritten by reload tests).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("outbound.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no chance to return its leases.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `limit` for the process to exit by itself; its status, or None
    /// while it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        test_support::services::signal_pid(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- relay log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// Runs a Python script (Debian's python3) with `stdin`; returns its stdout.
pub fn python(script: &str, stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `outbound ARGS` with nothing added.
pub fn outbound_raw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// smtpd, for the bounce loop
// ---------------------------------------------------------------------------------

/// The `smtpd` binary next to this package's `outbound` (built by `cargo test
/// --workspace`; built here when only this package's tests were built).
fn smtpd_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_outbound")).with_file_name("smtpd");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "smtpd", "--bin", "smtpd"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p smtpd");
    }
    path
}

/// A running `smtpd` on the same store, accepting the bounce domain.
pub struct Smtpd {
    child: Child,
    pub port: u16,
    /// Its working directory: anything it writes relative to it (the MySQL
    /// store's default spool, `./data/spool`) stays out of the source tree.
    _cwd: TempDir,
}

impl Smtpd {
    pub fn start(store: &Store, accept: &[&str]) -> Smtpd {
        let port = free_port();
        let cwd = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(smtpd_binary());
        cmd.current_dir(cwd.path()).args([
            "--store",
            &store.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--hostname",
            "mx.bounce.test",
        ]);
        for d in accept {
            cmd.args(["--accept-domain", d]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("smtpd to listen", START, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Smtpd {
            child,
            port,
            _cwd: cwd,
        }
    }

    /// Sends `message` from `from` (`""` = null sender) to `to` with Python's smtplib.
    pub fn send(&self, from: &str, to: &str, message: &str) {
        let script = format!(
            "import smtplib, sys\nwith smtplib.SMTP('127.0.0.1', {}, timeout=30) as s:\n    s.sendmail({:?}, [{:?}], sys.stdin.read().encode())\n",
            self.port, from, to
        );
        python(&script, message);
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// The HTTP API (`outbound web`), driven with curl
// ---------------------------------------------------------------------------------

/// A running `outbound web`.
pub struct Web {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: TempDir,
}

/// An HTTP answer: status and body (parsed as JSON when it is JSON, else Null).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: serde_json::Value,
    pub body: String,
}

impl Web {
    /// `outbound web --store URL -c CONFIG --listen 127.0.0.1:0`.
    pub fn start(store: &Store, config: &str) -> Web {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("outbound.toml");
        let config = format!(
            "{config}\n[web]\nimport_dir = \"{}\"\n",
            dir.path().join("imports").display()
        );
        // A [web] table given twice is an error: the test's own goes first.
        std::fs::write(&cfg, merge_web_table(&config)).unwrap();
        let log = std::fs::File::create(dir.path().join("web.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_outbound"))
            .args(["--store", &store.url(), "-v", "-c"])
            .arg(&cfg)
            .args(["web", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("outbound web: listening on ")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "outbound web printed {line:?}; log:\n{}",
                std::fs::read_to_string(dir.path().join("web.log")).unwrap_or_default()
            );
        };
        Web {
            child: Some(child),
            addr,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("web.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits up to `limit` for the process to exit by itself (after a SIGTERM);
    /// its status, or None while it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// curl `method` `path` with the bearer `token` (if any) and a JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        json: Option<&serde_json::Value>,
    ) -> Answer {
        let body = json.map(|j| j.to_string().into_bytes());
        self.send(method, path, token, body.as_deref(), "application/json")
    }

    /// curl with a raw body of `content_type` (e.g. an import file).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Answer {
        let out_file = self
            .dir
            .path()
            .join(format!("answer-{}", std::process::id()));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "60", "-X", method, "-o"])
            .arg(&out_file)
            .args(["-w", "%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let body_file = self.dir.path().join(format!("body-{}", std::process::id()));
        if let Some(b) = body {
            std::fs::write(&body_file, b).unwrap();
            cmd.args([
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
            ])
            .arg(format!("@{}", body_file.display()));
        }
        cmd.arg(self.url(path));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let body = std::fs::read_to_string(&out_file).unwrap_or_default();
        let _ = std::fs::remove_file(&out_file);
        let _ = std::fs::remove_file(&body_file);
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        Answer { status, json, body }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- web log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// Moves every `[web]` table's keys into one table (a test config may carry its
/// own `[web]` settings besides the harness's `import_dir`).
fn merge_web_table(config: &str) -> String {
    let mut out = String::new();
    let mut web = String::new();
    let mut in_web = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_web = t == "[web]";
            continue_if_header(&mut out, line, in_web);
            continue;
        }
        if in_web {
            web.push_str(line);
            web.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    format!("{out}\n[web]\n{web}")
}

fn continue_if_header(out: &mut String, line: &str, in_web: bool) {
    if !in_web {
        out.push_str(line);
        out.push('\n');
    }
}

/// `outbound account add NAME`; returns the token.
pub fn account(store: &Store, name: &str) -> String {
    let out = outbound(store, &["account", "add", name], None);
    assert!(
        out.status.success(),
        "account add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token ").map(str::to_owned))
        .expect("a token line")
}
