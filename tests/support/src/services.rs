//! Private MariaDB and Redis instances for the tests: each test starts its own, in
//! its own temp dir, on a free loopback port, and dropping it stops it. They never
//! touch (or need) a system service. The binaries come from Debian's
//! `mariadb-server` and `redis-server` packages, which `scripts/test` installs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tempfile::TempDir;

/// How long a service may take to accept connections.
const SERVICE_START: Duration = Duration::from_secs(30);
pub const DB_USER: &str = "smtpd";
pub const DB_PASSWORD: &str = "pw";
pub const DB_NAME: &str = "mail";

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A port free right now whose Redis Cluster bus port (port + 10,000) is free too:
/// a node whose bus port is taken (often by some connection's ephemeral port)
/// exits at start.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
}

pub(crate) fn find_binary(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "none of {names:?} is installed: run scripts/test (it installs mariadb-server and redis-server)"
    );
}

pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + SERVICE_START;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start within {SERVICE_START:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------

/// A private MariaDB server with a database [`DB_NAME`] and a password user.
pub struct Mariadb {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Arguments added to every start (a Galera node's `wsrep_*` settings).
    pub(crate) extra: Vec<String>,
    /// The test's own queries go over the unix socket (set when TCP needs TLS).
    over_socket: bool,
    /// `?ssl-mode=verify_identity&ssl-ca=PATH` for a TLS server (what [`Mariadb::url`]
    /// appends for the daemons).
    tls_params: String,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        Mariadb::start_with_args(Vec::new())
    }

    /// A server with `extra` arguments on every start (TLS settings).
    pub fn start_with_args(extra: Vec<String>) -> Mariadb {
        let mut db = Mariadb::install(extra);
        db.start_again();
        db.create_user();
        db
    }

    /// A server that accepts TCP clients over TLS only (`require_secure_transport`),
    /// with the certificate of `ca`; the test's own queries use the unix socket.
    pub fn start_tls(ca: &crate::ca::TestCa) -> Mariadb {
        let mut db = Mariadb::start_with_args(vec![
            format!("--ssl-cert={}", ca.cert().display()),
            format!("--ssl-key={}", ca.key().display()),
            format!("--ssl-ca={}", ca.ca().display()),
            "--require-secure-transport=ON".into(),
        ]);
        db.over_socket = true;
        db.tls_params = format!("?ssl-mode=verify_identity&ssl-ca={}", ca.ca().display());
        db
    }

    /// An empty datadir that a Galera joiner fills by `rsync` state transfer. The
    /// rsync daemon the donor talks to runs as `nobody`, so the path is open to it.
    pub(crate) fn empty(extra: Vec<String>) -> Mariadb {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        for (sub, mode) in [("", 0o755), ("data", 0o777), ("tmp", 0o777)] {
            let p = dir.path().join(sub);
            std::fs::create_dir_all(&p).expect("datadir");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        Mariadb {
            dir,
            port: free_port(),
            child: None,
            extra,
            over_socket: false,
            tls_params: String::new(),
        }
    }

    /// A fresh datadir in a temp dir with `extra` server arguments, not started.
    pub(crate) fn install(extra: Vec<String>) -> Mariadb {
        let dir = tempfile::tempdir().expect("temp dir");
        // Its own tmpdir: concurrent bootstraps sharing /tmp collide on temp table
        // names ("Error on delete of '/tmp/#sql-temptable-…'").
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let install = Command::new(find_binary(&["mariadb-install-db", "mysql_install_db"]))
            .args([
                "--no-defaults",
                &format!("--datadir={}", dir.path().join("data").display()),
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                &format!("--tmpdir={}", tmp.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        Mariadb {
            dir,
            port: free_port(),
            child: None,
            extra,
            over_socket: false,
            tls_params: String::new(),
        }
    }

    /// The database [`DB_NAME`] and the password user (on a Galera cluster this runs
    /// on the first node and replicates).
    pub(crate) fn create_user(&self) {
        self.root_sql(&format!(
            "CREATE DATABASE {DB_NAME};
             CREATE USER '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';
             CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';
             GRANT ALL ON *.* TO '{DB_USER}'@'localhost';
             GRANT ALL ON *.* TO '{DB_USER}'@'127.0.0.1';"
        ));
    }

    /// The temp dir holding the datadir, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running (not stopped or killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// `mysql://smtpd:pw@127.0.0.1:PORT/mail`, with
    /// `?ssl-mode=verify_identity&ssl-ca=PATH` on a TLS server ([`Mariadb::start_tls`]).
    pub fn url(&self) -> String {
        format!("{}{}", self.plain_url(), self.tls_params)
    }

    /// `mysql://smtpd:pw@127.0.0.1:PORT/mail` without TLS settings.
    pub fn plain_url(&self) -> String {
        format!(
            "mysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{}/{DB_NAME}",
            self.port
        )
    }

    /// The same database over the unix socket.
    pub fn socket_url(&self) -> String {
        format!(
            "mysql://{DB_USER}:{DB_PASSWORD}@localhost/{DB_NAME}?socket={}",
            self.socket().display()
        )
    }

    /// (Re)starts the server on the same datadir, port and socket.
    pub fn start_again(&mut self) {
        self.start_with(&[]);
    }

    /// (Re)starts it with `once` added to this start only (`--wsrep-new-cluster`).
    pub(crate) fn start_with(&mut self, once: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("mariadb.log")).expect("log file");
        let child = Command::new(find_binary(&["mariadbd", "mysqld"]))
            .args([
                "--no-defaults",
                &format!("--datadir={}", self.dir.path().join("data").display()),
                &format!("--socket={}", self.socket().display()),
                &format!("--port={}", self.port),
                &format!(
                    "--pid-file={}",
                    self.dir.path().join("mariadb.pid").display()
                ),
                &format!("--tmpdir={}", self.dir.path().join("tmp").display()),
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--max-connections=200",
            ])
            .args(&self.extra)
            .args(once)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let socket = self.socket();
        let port = self.port;
        let deadline = Instant::now() + SERVICE_START;
        while !(socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start within {SERVICE_START:?}:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("mariadb.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the server: SIGTERM (a clean shutdown) or SIGKILL (a crash; InnoDB
    /// recovers committed transactions at the next start).
    pub fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            signal_pid(child.id(), if kill { "KILL" } else { "TERM" });
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }

    pub(crate) fn root_sql(&self, sql: &str) {
        let out = Command::new(find_binary(&["mariadb", "mysql"]))
            .args([
                &format!("--socket={}", self.socket().display()),
                "-uroot",
                "-e",
                sql,
            ])
            .output()
            .expect("run mariadb client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a query as the test user and returns every value as bytes (NULL → empty).
    pub fn query(&self, sql: &str) -> Vec<Vec<Vec<u8>>> {
        let url = if self.over_socket {
            self.socket_url()
        } else {
            self.url()
        };
        let sql = sql.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = tokio::time::timeout(Duration::from_secs(10), pool.get_conn())
                .await
                .expect("connect timed out")
                .expect("connect");
            let rows: Vec<mysql_async::Row> = conn.query(sql).await.expect("query");
            let out = rows
                .into_iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| match row.as_ref(i) {
                            Some(mysql_async::Value::Bytes(b)) => b.clone(),
                            Some(mysql_async::Value::NULL) | None => Vec::new(),
                            Some(v) => v.as_sql(true).trim_matches('\'').as_bytes().to_vec(),
                        })
                        .collect()
                })
                .collect();
            drop(conn);
            let _ = pool.disconnect().await;
            out
        })
    }

    /// A one-column query as strings.
    pub fn column(&self, sql: &str) -> Vec<String> {
        self.query(sql)
            .into_iter()
            .map(|r| String::from_utf8_lossy(r.first().map_or(&[][..], |v| v)).into_owned())
            .collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.column(sql)
            .first()
            .and_then(|v| v.parse().ok())
            .expect("a number")
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------

/// A private redis-server, no persistence.
pub struct Redis {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Arguments added to every start (cluster mode).
    extra: Vec<String>,
    /// Serve TLS only, with this CA's server certificate.
    tls: Option<crate::ca::TestCa>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis::install(Vec::new(), None);
        r.start_again();
        r
    }

    /// A server that speaks TLS only (`--port 0 --tls-port P`), with the server
    /// certificate of `ca`; clients need no certificate of their own.
    pub fn start_tls(ca: &crate::ca::TestCa) -> Redis {
        let mut r = Redis::install(Vec::new(), Some(ca.clone()));
        r.start_again();
        r
    }

    /// Not started yet, with `extra` arguments on every start.
    pub(crate) fn install(extra: Vec<String>, tls: Option<crate::ca::TestCa>) -> Redis {
        Redis {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
            extra,
            tls,
        }
    }

    /// The temp dir it runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running (not stopped or killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for a TLS server
    /// (the CA goes in with `?ssl-ca=`, see [`Redis::tls_url`]).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The URL smtpd and the relay take for a TLS server: `rediss://…?ssl-ca=PATH`.
    pub fn tls_url(&self, ca: &Path) -> String {
        format!("{}?ssl-ca={}", self.url(), ca.display())
    }

    fn client(&self) -> redis::Client {
        match &self.tls {
            Some(ca) => redis::Client::build_with_tls(
                self.url().as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca.ca()).expect("read CA")),
                },
            ),
            None => redis::Client::open(self.url().as_str()),
        }
        .expect("redis client")
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.tls {
            Some(ca) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port,
                "--tls-cert-file".into(),
                ca.cert().display().to_string(),
                "--tls-key-file".into(),
                ca.key().display().to_string(),
                "--tls-ca-cert-file".into(),
                ca.ca().display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            None => vec!["--port".into(), port],
        };
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new(find_binary(&["redis-server"]))
            .args(&listen)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.path().display().to_string(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let client = self.client();
        let log = self.dir.path().join("redis.log");
        let child = self.child.as_mut();
        let mut exited = None;
        if let Some(child) = child {
            wait_until("redis-server", || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                client
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .is_ok()
            });
        }
        if let Some(status) = exited {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            panic!(
                "redis-server on port {} exited at start ({status}):\n{}",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    pub(crate) fn set_extra(&mut self, extra: Vec<String>) {
        self.extra = extra;
    }

    /// Stops it with SIGKILL (a crash: nothing is flushed, it has no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn conn(&self) -> redis::Connection {
        let conn = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        conn
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kill -s NAME PID` through `sh` (always present; `/bin/kill` may not be).
pub fn signal_pid(pid: u32, name: &str) {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", name, &pid.to_string()])
        .status()
        .expect("run sh -c kill");
    assert!(status.success(), "kill -s {name} {pid} failed: {status}");
}

/// A child process killed (SIGKILL) and reaped when dropped: a test that panics
/// halfway leaves no daemon behind.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then waits for the exit (the orderly stop a test checks).
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        signal_pid(self.0.id(), "TERM");
        self.0.wait().ok()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
