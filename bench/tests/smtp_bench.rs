//! smtp-bench against a real SMTP server (aiosmtpd's Sink handler, Debian's
//! python3-aiosmtpd, installed by scripts/test): the report counts what the server
//! accepted, the modes do what they say, and runs stay bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    fn start() -> Sink {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-c",
                "aiosmtpd.handlers.Sink",
                "-l",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (scripts/test installs python3-aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sink { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs smtp-bench against `port` (at most 30 s) and returns its JSON report.
fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-bench"))
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--json",
            "--duration",
            "30",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn counts_what_the_server_accepted_in_every_mode() {
    let sink = Sink::start();
    let r = bench(
        sink.port,
        &["--connections", "5", "--messages", "300", "--size", "2048"],
    );
    assert_eq!(r["messages"], 300);
    assert_eq!(r["replies"]["250"], 300);
    assert_eq!(r["sessions_opened"], 5);
    assert_eq!(r["connection_errors"], 0);
    for key in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(r["eod_latency_ms"][key].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["transaction_latency_ms"][key].as_f64().unwrap()
                >= r["eod_latency_ms"][key].as_f64().unwrap() * 0.5
        );
    }
    assert!(r["bytes_per_s"].as_f64().unwrap() > r["messages_per_s"].as_f64().unwrap() * 2000.0);

    // Pipelined, several recipients, a new connection per message.
    let r = bench(
        sink.port,
        &[
            "--connections",
            "4",
            "--messages",
            "40",
            "--pipelining",
            "--recipients",
            "3",
            "--per-connection",
            "1",
        ],
    );
    assert_eq!(r["messages"], 40);
    // One connection per message; a session may open one more that finds the
    // budget spent by the others (at most one per session).
    let opened = r["sessions_opened"].as_u64().unwrap();
    assert!((40..=44).contains(&opened), "{opened}");
    assert_eq!(r["pipelining"], true);

    // The size mix and a target rate: 60 messages at 100/s take about 0.6 s.
    let r = bench(
        sink.port,
        &[
            "--connections",
            "4",
            "--messages",
            "60",
            "--size-mix",
            "--rate",
            "100",
        ],
    );
    assert_eq!(r["messages"], 60);
    assert_eq!(r["size"], "mix");
    let elapsed = r["elapsed_s"].as_f64().unwrap();
    assert!((0.55..5.0).contains(&elapsed), "{elapsed}");
}

#[test]
fn stops_at_the_duration_and_reports_connection_errors() {
    let sink = Sink::start();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-bench"))
        .args([
            "--server",
            &format!("127.0.0.1:{}", sink.port),
            "--json",
            "--duration",
            "1",
            "--messages",
            "100000000",
            "--rate",
            "50",
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = r["messages"].as_u64().unwrap();
    assert!((20..=80).contains(&n), "{n} messages in 1 s at 50/s");

    // Nothing listening: every attempt is a connection error, and the run still ends.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-bench"))
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--json",
            "--duration",
            "1",
            "--connections",
            "2",
        ])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["messages"], 0);
    assert!(r["connection_errors"].as_u64().unwrap() > 0);
}

#[test]
fn idle_mode_holds_connections() {
    let sink = Sink::start();
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-bench"))
        .args([
            "--server",
            &format!("127.0.0.1:{}", sink.port),
            "--idle",
            "50",
            "--hold",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("opened 50 idle connections"));
}

/// A minimal SMTP server that waits `delay` before each greeting; it records when
/// each message's end of data arrived.
fn slow_greeting_server(delay: Duration) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let mut out = stream.try_clone().unwrap();
                let mut lines = BufReader::new(stream);
                let _ = out.write_all(b"220 slow.test ESMTP\r\n");
                let mut in_data = false;
                let mut line = String::new();
                while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let reply: &[u8] = if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            seen.lock().unwrap().push(Instant::now());
                            b"250 2.0.0 ok\r\n"
                        } else {
                            b""
                        }
                    } else if line.starts_with("DATA") {
                        in_data = true;
                        b"354 go on\r\n"
                    } else if line.starts_with("QUIT") {
                        let _ = out.write_all(b"221 2.0.0 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if out.write_all(reply).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, arrivals)
}

#[test]
fn a_paced_schedule_starts_once_every_session_has_connected() {
    // Greetings take 1.5 s (1,000 sessions connecting at once to a loaded server
    // take about as long). At 20 msgs/s, a schedule started before them would owe
    // 30 messages by then and send the 20 it may as one burst; started after the
    // greetings, they are spread over about a second.
    let (port, arrivals) = slow_greeting_server(Duration::from_millis(1500));
    let r = bench(
        port,
        &["--connections", "4", "--messages", "20", "--rate", "20"],
    );
    assert_eq!(r["messages"], 20);
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 20);
    let spread = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(800),
        "20 messages at 20/s arrived within {spread:?}"
    );
}
