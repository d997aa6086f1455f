//! The Debian packages, installed on this machine: both built with cargo-deb
//! (from the debug binaries the tests already built), installed with apt-get,
//! their files, users and units checked, each daemon started from its unit's
//! ExecStart line as the unit's User (ports moved to free loopback ports by
//! flags, which win over the packaged config), one message sent through smtpd
//! with swaks and one through outbound (delivered to that smtpd), then purged
//! and checked gone.
//!
//! It changes the real system, so it runs only as root, purges leftovers of an
//! interrupted run first (safe to run twice), and purges in a drop guard, so the
//! packages never stay installed, even when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::services::free_port;
use crate::support::*;

const PACKAGES: [&str; 2] = ["smtpd", "outbound"];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn purge() {
    let _ = Command::new("apt-get")
        .args(["purge", "-y", "-q"])
        .args(PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Kills the daemons it started, then purges the packages.
struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        purge();
    }
}

/// `Key=` of a unit file's `[Service]` section.
fn unit_value(unit: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(unit).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {}", unit.display()))
        .trim()
        .to_string()
}

/// The debug binaries' directory (where the smtpd under test was built).
fn target_dir() -> PathBuf {
    Path::new(SMTPD).parent().unwrap().to_path_buf()
}

fn build_deb(pkg: &str, out: &Path) -> PathBuf {
    if !target_dir().join(pkg).exists() {
        run(Command::new("cargo").args(["build", "-q", "-p", pkg]));
    }
    let o = run(Command::new("cargo")
        .args([
            "deb",
            "-q",
            "-p",
            pkg,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--output",
        ])
        .arg(out)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")));
    let path = String::from_utf8_lossy(&o.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let path = PathBuf::from(path);
    assert!(path.exists(), "cargo deb printed no package path");
    path
}

/// Starts `ExecStart` of `unit` as its `User=`, with `extra` flags; stderr to `log`.
fn start_unit(unit: &Path, extra: &[String], log: &Path) -> Child {
    let exec = unit_value(unit, "ExecStart");
    let user = unit_value(unit, "User");
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap().to_string();
    Command::new("runuser")
        .args(["-u", &user, "--", &program])
        .args(words)
        .args(extra)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn smtpd_rows() -> i64 {
    let out = Command::new("sqlite3")
        .args([
            "/var/lib/smtpd/smtpd.sqlite",
            "SELECT count(*) FROM new_mail",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn debian_packages_install_run_and_purge_cleanly() {
    if !is_root() {
        eprintln!("skipped: installing packages needs root");
        return;
    }
    purge();
    let dir = tempfile::tempdir().unwrap();
    let debs: Vec<PathBuf> = PACKAGES.iter().map(|p| build_deb(p, dir.path())).collect();
    let mut guard = Guard(Vec::new());
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&debs)
        .env("DEBIAN_FRONTEND", "noninteractive"));

    for pkg in PACKAGES {
        assert!(installed(pkg), "{pkg} not installed");
        assert!(user_exists(pkg), "no system user {pkg}");
        assert!(Path::new(&format!("/usr/bin/{pkg}")).exists());
        assert!(Path::new(&format!("/etc/{pkg}/{pkg}.toml")).exists());
        let state = run(Command::new("stat").args(["-c", "%U %a", &format!("/var/lib/{pkg}")]));
        assert_eq!(
            String::from_utf8_lossy(&state.stdout).trim(),
            format!("{pkg} 750")
        );
    }
    for unit in [
        "smtpd.service",
        "smtpd.socket",
        "outbound.service",
        "outbound-web.service",
    ] {
        assert!(
            Path::new("/lib/systemd/system").join(unit).exists(),
            "{unit}"
        );
    }

    let smtp_port = free_port();
    let smtpd_log = dir.path().join("smtpd.log");
    guard.0.push(start_unit(
        Path::new("/lib/systemd/system/smtpd.service"),
        &["--listen".into(), format!("127.0.0.1:{smtp_port}")],
        &smtpd_log,
    ));
    wait_log(&smtpd_log, "smtpd: listening on");
    let swaks = run(Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp_port}")])
        .args([
            "--from",
            "a@sender.test",
            "--to",
            "r@inbound.test",
            "--helo",
            "client.test",
        ])
        .args(["--timeout", "10"]));
    assert!(
        String::from_utf8_lossy(&swaks.stdout).contains("250 2.0.0 OK queued as"),
        "{}",
        String::from_utf8_lossy(&swaks.stdout)
    );
    assert_eq!(smtpd_rows(), 1);

    // One message through the relay, to the smtpd just started.
    let enqueue = Command::new("runuser")
        .args([
            "-u",
            "outbound",
            "--",
            "/usr/bin/outbound",
            "-c",
            "/etc/outbound/outbound.toml",
        ])
        .args([
            "enqueue",
            "--from",
            "app@sender.test",
            "--to",
            "r@relayed.test",
        ])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = enqueue.stdin.as_ref().unwrap();
        stdin
            .write_all(b"From: app@sender.test\r\nSubject: packaged\r\n\r\nvia the relay\r\n")
            .unwrap();
    }
    let out = enqueue.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "enqueue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outbound_log = dir.path().join("outbound.log");
    guard.0.push(start_unit(
        Path::new("/lib/systemd/system/outbound.service"),
        &[
            "--transport".into(),
            format!("relayed.test=127.0.0.1:{smtp_port}"),
        ],
        &outbound_log,
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtpd_rows() < 2 {
        assert!(
            Instant::now() < deadline,
            "the relayed message never arrived; relay log:\n{}",
            std::fs::read_to_string(&outbound_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    for c in &mut guard.0 {
        signal_pid_of(c, "TERM");
    }
    for c in &mut guard.0 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(guard);
    for pkg in PACKAGES {
        assert!(!installed(pkg), "{pkg} still installed");
        assert!(!user_exists(pkg), "user {pkg} left behind");
        for path in [
            format!("/usr/bin/{pkg}"),
            format!("/etc/{pkg}"),
            format!("/var/lib/{pkg}"),
        ] {
            assert!(!Path::new(&path).exists(), "{path} left behind");
        }
    }
    assert!(!Path::new("/lib/systemd/system/smtpd.service").exists());
}

/// SIGTERM to the daemon under `runuser` (runuser passes it on).
fn signal_pid_of(child: &Child, name: &str) {
    crate::support::services::signal_pid(child.id(), name);
}
