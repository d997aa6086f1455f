//! The server under test: the real `smtpd` binary in its own temp dir on a free
//! loopback port, its stderr drained (and kept for failure messages), killed on
//! drop; and running the binary to its exit for configuration errors.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tempfile::TempDir;

use super::*;

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
    /// Extra environment (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
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

    pub fn env(mut self, key: &str, value: &str) -> Opts {
        self.env.push((key.to_string(), value.to_string()));
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
        Server::spawn_env(&args, &cwd, dir, db_path, &opts.env)
    }

    /// Starts the binary with exactly `args` in `cwd` and waits for its first
    /// `listening on` line. `db_path` is where its store is expected to be.
    pub fn spawn(args: &[String], cwd: &Path, dir: TempDir, db_path: PathBuf) -> Server {
        Server::spawn_env(args, cwd, dir, db_path, &[])
    }

    /// [`Server::spawn`] with extra environment variables.
    pub fn spawn_env(
        args: &[String],
        cwd: &Path,
        dir: TempDir,
        db_path: PathBuf,
        env: &[(String, String)],
    ) -> Server {
        let mut child = Command::new(SMTPD)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
