//! Operations: the metrics listener (`/metrics`, `/healthz`, `/readyz`) scraped
//! with curl while known traffic goes through, readiness following MariaDB, the
//! systemd notify protocol against a datagram socket the test binds, SIGHUP reload
//! and SIGUSR1 log reopening.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::scrape::{curl, sample, scrape_until};
use crate::support::services::Mariadb;
use crate::support::*;

/// The metrics address the server announced (`smtpd: metrics on ADDR`).
fn metrics_addr(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(addr) = server
            .stderr()
            .lines()
            .find_map(|l| l.strip_prefix("smtpd: metrics on "))
        {
            return addr.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics line:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const METRICS_CONFIG: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n\
    [server]\naccept_domains = [\"mx.test\"]\n[limits]\nmax_message_bytes = 2000\n";

#[test]
fn metrics_move_by_the_exact_traffic_sent() {
    let server = Server::with_config(METRICS_CONFIG);
    let addr = metrics_addr(&server);
    let before = scrape_until(&addr, "smtpd_messages_accepted_total", 0.0);
    assert_eq!(sample(&before, "smtpd_connections_total"), 0.0, "{before}");

    let mut c = server.ehlo_client();
    for i in 0..3 {
        c.deliver(
            "a@example.org",
            &["rcpt@mx.test"],
            &simple_message(&format!("m{i}")),
        );
    }
    // One recipient outside the accepted domains, one message over the size limit.
    c.cmd_expect("MAIL FROM:<a@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@elsewhere.test>", 550, "5.7.1");
    c.cmd_expect("RSET", 250, "2.0.0");
    let big = vec![b'x'; 78]
        .into_iter()
        .chain(*b"\r\n")
        .cycle()
        .take(4000)
        .collect::<Vec<u8>>();
    let r = c.transaction("a@example.org", &["rcpt@mx.test"], &big);
    assert_eq!(r.code, 552, "{}", r.text());
    c.quit();

    let text = scrape_until(&addr, "smtpd_sessions_total{tls=\"no\"}", 1.0);
    assert_eq!(
        sample(&text, "smtpd_messages_accepted_total"),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "smtpd_messages_refused_total{reason=\"size\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "smtpd_messages_refused_total{reason=\"domain\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "smtpd_messages_refused_total{reason=\"smuggling\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(sample(&text, "smtpd_connections_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "smtpd_connections_open"), 0.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "smtpd_replies_total{code=\"250\",enhanced=\"2.0.0\",class=\"2xx\"}"
        ),
        // 3 × queued, RSET.
        4.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "smtpd_replies_total{code=\"552\",enhanced=\"5.3.4\",class=\"5xx\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        sample(&text, "smtpd_bytes_accepted_total") > 3.0 * 100.0,
        "{text}"
    );
    assert_eq!(sample(&text, "smtpd_store_batch_size_count"), 3.0, "{text}");
    assert_eq!(
        sample(&text, "smtpd_store_commit_seconds_count"),
        3.0,
        "{text}"
    );
    assert!(text.contains("smtpd_store_queue_depth 0"), "{text}");
    assert!(text.contains("smtpd_retention_deleted_total 0"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    let (code, body) = curl(&addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = curl(&addr, "/readyz");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    assert_eq!(curl(&addr, "/").0, 404);
    // Never on the SMTP port: the SMTP listener answers an HTTP request as SMTP.
    let (code, _) = curl(&server.addr.to_string(), "/metrics");
    assert_ne!(code, 200);
}

#[test]
fn connections_refused_by_the_per_ip_limit_are_counted() {
    let server = Server::with_config(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_connections_per_ip = 1\nexempt_loopback = false\n",
    );
    let addr = metrics_addr(&server);
    let _first = server.client();
    let mut second = Client::connect(server.addr);
    second.expect(421, "4.7.0");
    scrape_until(
        &addr,
        "smtpd_connections_refused_total{reason=\"per_ip\"}",
        1.0,
    );
}

#[test]
fn readyz_is_503_while_mariadb_is_down_and_200_when_it_is_back() {
    let mut db = Mariadb::start();
    let server = Server::start_with(
        Opts::config("[metrics]\nlisten = \"127.0.0.1:0\"\n")
            .store(&db.url())
            .arg("--migrate"),
    );
    let addr = metrics_addr(&server);
    assert_eq!(curl(&addr, "/readyz"), (200, "ready\n".to_string()));
    db.stop(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (code, body) = curl(&addr, "/readyz");
        if code == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with MariaDB down: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.starts_with("not ready: store unavailable"), "{body}");
    // Alive all along.
    assert_eq!(curl(&addr, "/healthz").0, 200);
    db.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&addr, "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after MariaDB restarted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Datagrams received on the notify socket within `within`, split into lines.
fn notify_lines(sock: &UnixDatagram, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            lines.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    lines
}

#[test]
fn notify_protocol_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut server = Server::start_with(
        Opts::default()
            .env("NOTIFY_SOCKET", path.to_str().unwrap())
            .env("WATCHDOG_USEC", "1000000"),
    );
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    assert!(
        first.contains("STATUS=accepting mail on 127.0.0.1:"),
        "{first}"
    );
    // READY comes after the listener is bound: the port accepts now.
    let mut c = server.client();
    c.quit();
    let lines = notify_lines(&sock, Duration::from_millis(2600));
    let pings = lines.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(pings >= 3, "expected a ping every 0.5 s: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("messages accepted")),
        "{lines:?}"
    );
    server.term();
    let lines = notify_lines(&sock, Duration::from_millis(1500));
    assert!(lines.iter().any(|l| l == "STOPPING=1"), "{lines:?}");
    server.assert_exit(0, Duration::from_secs(10));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn wait_stderr(server: &Server, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stderr().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} x{count}:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_applies_domains_and_limits_refuses_a_bad_file_and_ignores_listen() {
    let base = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let server = Server::with_config(&format!(
        "{base}[server]\naccept_domains = [\"a.test\"]\n[limits]\nmax_recipients = 5\n"
    ));
    let config = server.dir().join("smtpd.toml");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@b.test>", 550, "5.7.1");
    c.quit();

    write(
        &config,
        &format!("{base}[server]\naccept_domains = [\"b.test\"]\n[limits]\nmax_recipients = 1\n"),
    );
    server.signal("HUP");
    wait_stderr(&server, "SIGHUP: configuration reloaded", 1);
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@b.test>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<y@b.test>", 452, "4.5.3");
    c.cmd_expect("RSET", 250, "2.0.0");
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@a.test>", 550, "5.7.1");
    c.quit();

    // A file that does not validate is refused whole: the running settings stay.
    write(
        &config,
        &format!("{base}[server]\naccept_domains = [\"a.test\"]\n[limits]\nmax_recipients = 0\n"),
    );
    server.signal("HUP");
    wait_stderr(&server, "configuration refused", 1);
    assert!(
        server.stderr().contains("limits.max_recipients"),
        "{}",
        server.stderr()
    );
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@b.test>", 250, "2.1.5");
    c.quit();

    // A listen address cannot change live: logged as ignored.
    write(
        &config,
        "[metrics]\nlisten = \"127.0.0.1:1\"\n[server]\naccept_domains = [\"b.test\"]\n[limits]\nmax_recipients = 1\n",
    );
    server.signal("HUP");
    wait_stderr(&server, "SIGHUP: configuration reloaded", 2);
    let err = server.stderr();
    assert!(
        err.lines()
            .any(|l| l.contains("ignored") && l.contains("metrics.listen")),
        "{err}"
    );
}

#[test]
fn sigusr1_reopens_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("smtpd.log");
    let server = Server::with_config(&format!("[log]\nfile = \"{}\"\n", log.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("smtpd started")
    {
        assert!(
            Instant::now() < deadline,
            "nothing logged to {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rotated = dir.path().join("smtpd.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("log file reopened")
    {
        assert!(Instant::now() < deadline, "no new log file after SIGUSR1");
        std::thread::sleep(Duration::from_millis(50));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("smtpd started"), "{old}");
    assert!(!old.contains("log file reopened"), "{old}");
}

#[test]
fn units_verify_and_their_exposure_is_below_2() {
    use crate::support::units;
    let dir = units::verify(
        &["smtpd.service", "smtpd.socket"],
        &[("/usr/bin/smtpd", SMTPD)],
    );
    let score = units::exposure(&dir.path().join("smtpd.service"));
    // 1.4 when this test was written (systemd 252).
    assert!(score < 2.0, "smtpd.service exposure {score}");
}

#[test]
fn socket_activation_takes_the_listener_from_listen_fds() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::services::free_port();
    let addr = format!("127.0.0.1:{port}");
    let db = dir.path().join("x.sqlite");
    // systemd-socket-activate binds, then execs smtpd with LISTEN_FDS=1 and
    // LISTEN_PID set, as systemd does for smtpd.socket.
    let child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &addr,
            SMTPD,
            "--listen",
            "127.0.0.1:1",
            "--hostname",
            HOSTNAME,
        ])
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run systemd-socket-activate");
    let mut child = crate::support::services::KillOnDrop(child);
    // The socket exists before smtpd runs: the first connection starts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "{addr} never listened: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut c = Client::from_stream(stream);
    c.expect(220, "");
    c.ehlo("client.test");
    let id = c.deliver(
        "a@example.org",
        &["r@example.com"],
        &simple_message("activated"),
    );
    c.quit();
    assert_eq!(id.len(), 32);
    // server.listen (port 1) was not bound: the activated socket replaced it.
    assert!(std::net::TcpStream::connect("127.0.0.1:1").is_err());
    crate::support::services::signal_pid(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            panic!("smtpd did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn commands_are_counted_by_verb_exactly() {
    let server = Server::with_config(METRICS_CONFIG);
    let addr = metrics_addr(&server);
    let mut c = server.client();
    c.ehlo("client.test");
    c.ehlo("client.test");
    c.cmd_expect("MAIL FROM:<a@example.org>", 250, "2.1.0");
    for r in ["r1@mx.test", "r2@mx.test", "r3@mx.test"] {
        c.cmd_expect(&format!("RCPT TO:<{r}>"), 250, "2.1.5");
    }
    c.cmd_expect("NOOP", 250, "2.0.0");
    c.cmd_expect("BOGUS whatever", 500, "5.5.2");
    c.cmd_expect("EXPN list", 502, "5.5.1");
    c.quit();
    let text = scrape_until(&addr, "smtpd_sessions_total{tls=\"no\"}", 1.0);
    for (verb, n) in [
        ("ehlo", 2.0),
        ("mail", 1.0),
        ("rcpt", 3.0),
        ("noop", 1.0),
        ("unknown", 1.0),
        ("other", 1.0),
        ("quit", 1.0),
        ("data", 0.0),
        ("helo", 0.0),
    ] {
        assert_eq!(
            sample(&text, &format!("smtpd_commands_total{{verb=\"{verb}\"}}")),
            n,
            "{verb}: {text}"
        );
    }
}

/// Every line of `path` parsed as one JSON object.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn wait_json(path: &Path, message: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = json_lines(path);
        if lines.iter().any(|l| l["fields"]["message"] == message) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no {message:?} in {}: {lines:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_logs_carry_one_line_per_transaction_and_survive_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("smtpd.log");
    let server = Server::with_config(&format!(
        "[log]\nformat = \"json\"\nfile = \"{}\"\n\
         [server]\naccept_domains = [\"mx.test\"]\n[limits]\nmax_message_bytes = 2000\n",
        log.display()
    ));
    let mut c = server.ehlo_client();
    let rcpts = [
        "r1@mx.test",
        "r2@mx.test",
        "r3@mx.test",
        "r4@mx.test",
        "r5@mx.test",
    ];
    let id = c.deliver("a@example.org", &rcpts, &simple_message("json"));
    let big: Vec<u8> = b"x"
        .repeat(78)
        .into_iter()
        .chain(*b"\r\n")
        .cycle()
        .take(4000)
        .collect();
    let r = c.transaction("b@example.org", &["r1@mx.test"], &big);
    assert_eq!(r.code, 552, "{}", r.text());
    c.quit();

    let lines = wait_json(&log, "transaction refused");
    let tx: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "transaction")
        .collect();
    assert_eq!(tx.len(), 1, "{lines:?}");
    let f = &tx[0]["fields"];
    assert_eq!(tx[0]["level"], "INFO");
    assert_eq!(f["queue_id"], id.as_str(), "{f}");
    assert_eq!(f["client"], "127.0.0.1", "{f}");
    assert_eq!(f["from"], "a@example.org", "{f}");
    assert_eq!(f["nrcpt"], 5, "{f}");
    assert_eq!(
        f["rcpt"], "r1@mx.test, r2@mx.test, r3@mx.test (+2 more)",
        "{f}"
    );
    assert_eq!(f["tls"], "none", "{f}");
    assert_eq!(f["reply"], "250 2.0.0", "{f}");
    assert!(f["size"].as_u64().unwrap() > 50, "{f}");
    assert!(f["duration_ms"].as_u64().unwrap() < 10_000, "{f}");
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "transaction refused")
        .unwrap();
    assert_eq!(refused["fields"]["reply"], "552 5.3.4", "{refused}");
    assert_eq!(refused["fields"]["from"], "b@example.org", "{refused}");

    // logrotate: the reopened file is JSON too.
    let rotated = dir.path().join("smtpd.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("USR1");
    wait_json(&log, "SIGUSR1: log file reopened");
}

#[test]
fn a_transaction_the_connection_ends_without_a_message_gets_an_abandoned_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("smtpd.log");
    let server = Server::with_config(&format!(
        "[log]\nformat = \"json\"\nfile = \"{}\"\n[server]\naccept_domains = [\"mx.test\"]\n",
        log.display()
    ));
    // Lost in the middle of the content.
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@example.org>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<r1@mx.test>", 250, "2.1.5");
    c.cmd_expect("RCPT TO:<r2@mx.test>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(b"Subject: half a message\r\n");
    drop(c);
    // QUIT after MAIL: the client gave up.
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<b@example.org>", 250, "2.1.0");
    c.quit();
    // A finished message and a reset transaction: no such line.
    let mut c = server.ehlo_client();
    c.deliver("c@example.org", &["r1@mx.test"], &simple_message("whole"));
    c.cmd_expect("MAIL FROM:<d@example.org>", 250, "2.1.0");
    c.cmd_expect("RSET", 250, "2.0.0");
    c.quit();

    let deadline = Instant::now() + Duration::from_secs(10);
    let abandoned = loop {
        let lines: Vec<_> = json_lines(&log)
            .into_iter()
            .filter(|l| l["fields"]["message"] == "transaction abandoned")
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The third connection's QUIT has been logged too by now (it closed last).
    std::thread::sleep(Duration::from_millis(300));
    let all = json_lines(&log);
    let count = all
        .iter()
        .filter(|l| l["fields"]["message"] == "transaction abandoned")
        .count();
    assert_eq!(count, 2, "{all:?}");
    let by_from = |from: &str| {
        abandoned
            .iter()
            .find(|l| l["fields"]["from"] == from)
            .unwrap_or_else(|| panic!("no line for {from}: {abandoned:?}"))["fields"]
            .clone()
    };
    let lost = by_from("a@example.org");
    assert_eq!(lost["after"], "DATA", "{lost}");
    assert_eq!(lost["ended"], "lost connection", "{lost}");
    assert_eq!(lost["nrcpt"], 2, "{lost}");
    assert_eq!(lost["rcpt"], "r1@mx.test, r2@mx.test", "{lost}");
    assert_eq!(lost["client"], "127.0.0.1", "{lost}");
    let quit = by_from("b@example.org");
    assert_eq!(quit["after"], "MAIL", "{quit}");
    assert_eq!(quit["ended"], "QUIT", "{quit}");
}

#[test]
fn log_format_other_than_text_or_json_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    write(&config, "[log]\nformat = \"xml\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_smtpd"))
        .arg("-c")
        .arg(&config)
        .arg("--store")
        .arg(format!("sqlite:{}", dir.path().join("s.sqlite").display()))
        .env_remove("SMTPD_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.format"), "{err}");
}

#[test]
fn watchdog_pings_stop_when_one_reactor_is_wedged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let server = Server::start_with(
        Opts::config("[metrics]\nlisten = \"127.0.0.1:0\"\n[server]\nthreads = 2\n")
            .env("NOTIFY_SOCKET", path.to_str().unwrap())
            .env("WATCHDOG_USEC", "1000000")
            // The test-only fault: reactor 0 stops turning 2 s after it starts.
            .env("SMTPD_TEST_WEDGE_REACTOR_AFTER_MS", "2000"),
    );
    let addr = metrics_addr(&server);
    let before = notify_lines(&sock, Duration::from_millis(1500));
    assert!(
        before.iter().filter(|l| *l == "WATCHDOG=1").count() >= 2,
        "pings before the wedge: {before:?}"
    );
    wait_stderr(&server, "TEST FAULT: reactor wedged", 1);
    // The heartbeat goes stale one interval after the wedge; then no more pings.
    wait_stderr(&server, "watchdog pings stop", 1);
    // Pings sent before the loop went stale may still wait in the socket.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let after = notify_lines(&sock, Duration::from_millis(2500));
    assert!(
        !after.iter().any(|l| l == "WATCHDOG=1"),
        "pings after the wedge: {after:?}"
    );
    // The rest of the process lives on: systemd, not a crash, ends it.
    assert_eq!(curl(&addr, "/healthz").0, 200);
    assert!(
        server.stderr().contains("a loop is stuck"),
        "{}",
        server.stderr()
    );
}
