//! The process: graceful shutdown on SIGTERM/SIGINT (idle sessions get `421 4.3.2`,
//! DATA in progress may finish, exit 0), durability across SIGKILL (every `250` is
//! in the database), the documented no-argument run, and configuration errors
//! (exit 2 naming the field) and runtime failures (exit 1).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    Client, Opts, Server, assert_mail_blob, open_db, rows, run_smtpd_to_exit, simple_message,
};

/// After shutdown began, a new connection must not be served: it is refused,
/// closed, or told 421 — never greeted with 220.
fn assert_not_served(addr: SocketAddr) {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let mut c = Client::from_stream(stream);
    if let Ok(r) = c.try_read_reply_within(Duration::from_secs(3)) {
        assert_ne!(r.code, 220, "a new connection was greeted after the signal");
    }
}

fn idle_client_gets_421_on(signal: &str) {
    let mut server = Server::start();
    let mut idle = server.ehlo_client();
    let mut fresh = server.client(); // greeted, not even EHLO
    server.signal(signal);
    idle.expect(421, "4.3.2");
    idle.expect_closed();
    fresh.expect(421, "4.3.2");
    fresh.expect_closed();
    // Let every reactor see the flag before probing the listeners.
    std::thread::sleep(Duration::from_millis(200));
    assert_not_served(server.addr);
    server.assert_exit(0, Duration::from_secs(5));
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).is_err(),
        "port still open after exit"
    );
}

#[test]
fn sigterm_sends_421_to_idle_clients_and_exits_0() {
    idle_client_gets_421_on("TERM");
}

#[test]
fn sigint_sends_421_to_idle_clients_and_exits_0() {
    idle_client_gets_421_on("INT");
}

#[test]
fn sigterm_lets_a_message_in_data_finish() {
    let mut server = Server::start();
    let mut writer = server.ehlo_client();
    let mut idle = server.ehlo_client();
    writer.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    writer.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    writer.cmd_expect("DATA", 354, "");
    let msg = simple_message("finishing during shutdown");
    let (first, rest) = msg.split_at(20);
    writer.send(first);
    std::thread::sleep(Duration::from_millis(100));
    server.term();
    idle.expect(421, "4.3.2");
    idle.expect_closed();
    std::thread::sleep(Duration::from_millis(300));
    assert_not_served(server.addr);
    writer.send(rest);
    writer.send(b".\r\n");
    let id = writer.read_reply().queue_id();
    // Then the session ends: 421 4.3.2 and close, or just close.
    match writer.try_read_reply() {
        Ok(r) => {
            r.assert(421, "4.3.2");
            writer.expect_closed();
        }
        Err(crate::support::ReadError::Closed) => {}
        Err(e) => panic!("after the 250 the session must end, got {e:?}"),
    }
    server.assert_exit(0, Duration::from_secs(8));
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1, "the acknowledged message is stored");
    assert_mail_blob(&rows[0].mail, "client.test", &msg);
}

#[test]
fn sigterm_with_no_clients_exits_0_quickly() {
    let mut server = Server::start();
    let mut c = server.ehlo_client();
    let id = c.deliver("a@b.example", &["x@example.com"], &simple_message("before"));
    c.quit();
    let start = Instant::now();
    server.term();
    server.assert_exit(0, Duration::from_secs(5));
    assert!(start.elapsed() < Duration::from_secs(5));
    // Readable after exit.
    assert_eq!(server.rows_for(&id).len(), 1);
}

#[test]
fn shutdown_grace_closes_a_stalled_transaction() {
    let mut server = Server::with_config("[timeouts]\nshutdown_grace_secs = 1\n");
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(b"Subject: stalled\r\n\r\nnever finished");
    server.term();
    // The client never finishes: after the grace period it is cut off.
    let start = Instant::now();
    match c.try_read_reply() {
        Ok(r) => {
            r.assert(421, "");
            c.expect_closed();
        }
        Err(crate::support::ReadError::Closed) => {}
        Err(e) => panic!("stalled client not closed: {e:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    server.assert_exit(0, Duration::from_secs(5));
    assert_eq!(server.row_count(), 0);
}

#[test]
fn sigkill_loses_no_acknowledged_message() {
    const THREADS: usize = 8;
    const MSGS_PER_CONN: usize = 25;
    const MAX_MSGS_PER_THREAD: usize = 2_000;
    let mut server = Server::start();
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                sigkill_load(addr, t, &stop, MSGS_PER_CONN, MAX_MSGS_PER_THREAD)
            })
        })
        .collect();
    // Let load build up, then kill mid-stream.
    std::thread::sleep(Duration::from_millis(1500));
    let status = server.kill();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let mut acked = Vec::new();
    for t in threads {
        acked.extend(t.join().expect("load thread"));
    }
    assert!(
        acked.len() >= 10,
        "too few messages acknowledged ({}) before the kill to prove anything",
        acked.len()
    );
    let conn = open_db(&server.db_path);
    let stored = rows(&conn);
    let mut missing = Vec::new();
    for (id, rcpt) in &acked {
        if !stored.iter().any(|r| &r.hash == id && &r.recipient == rcpt) {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing after SIGKILL: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "sigkill: {} acknowledged, {} rows stored",
        acked.len(),
        stored.len()
    );
}

/// Sends messages over successive connections until the server dies, `stop` is set
/// or `max` messages; returns (queue id, recipient) of every 250.
fn sigkill_load(
    addr: SocketAddr,
    t: usize,
    stop: &AtomicBool,
    per_conn: usize,
    max: usize,
) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let mut n = 0;
    'conns: while n < max && !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            break;
        };
        let mut c = Client::from_stream(stream);
        if !matches!(c.try_read_reply(), Ok(r) if r.code == 220) {
            break;
        }
        if c.try_send(b"EHLO kill.test\r\n").is_err()
            || !matches!(c.try_read_reply(), Ok(r) if r.code == 250)
        {
            break;
        }
        for _ in 0..per_conn {
            if n >= max || stop.load(Ordering::Relaxed) {
                break 'conns;
            }
            n += 1;
            let rcpt = format!("t{t}n{n}@example.com");
            let mut wire =
                format!("MAIL FROM:<k@b.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").into_bytes();
            wire.extend_from_slice(&simple_message(&format!("kill {t} {n}")));
            wire.extend_from_slice(b".\r\n");
            if c.try_send(&wire).is_err() {
                break 'conns;
            }
            let mut codes = Vec::new();
            let mut last = None;
            for _ in 0..4 {
                match c.try_read_reply() {
                    Ok(r) => {
                        codes.push(r.code);
                        last = Some(r);
                    }
                    Err(_) => break 'conns,
                }
            }
            assert_eq!(&codes[..3], &[250, 250, 354], "thread {t}");
            let last = last.expect("four replies");
            if last.code == 250 {
                acked.push((last.queue_id(), rcpt));
            }
        }
        let _ = c.try_send(b"QUIT\r\n");
    }
    acked
}

#[test]
fn no_arguments_listens_on_2525_and_stores_in_data_dir() {
    let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    match TcpListener::bind(addr) {
        Ok(l) => drop(l),
        Err(e) => panic!(
            "127.0.0.1:2525 is busy ({e}); this test runs smtpd with no arguments, which \
             must listen there. Stop whatever holds the port and rerun."
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let db_path = cwd.join("data").join("smtpd.sqlite");
    assert!(!cwd.join("data").exists());
    let mut server = Server::spawn(&[], &cwd, dir, db_path.clone());
    assert_eq!(server.addr, addr, "default listen address");
    assert!(db_path.exists(), "./data/smtpd.sqlite created at start");
    let mut c = Client::connect(addr);
    c.expect(220, "");
    c.ehlo("client.test");
    let msg = simple_message("default run");
    let id = c.deliver("a@b.example", &["anyone@any.example"], &msg);
    c.quit();
    let rows = server.rows_for(&id);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].recipient, "anyone@any.example",
        "any domain accepted"
    );
    assert_mail_blob(&rows[0].mail, "client.test", &msg);
    server.term();
    server.assert_exit(0, Duration::from_secs(5));
}

#[test]
fn port_flag_overrides_configured_port() {
    // A free port, found by binding 0 (tiny race with other processes; retried).
    let mut last_err = String::new();
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.sqlite");
        let args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "-p".into(),
            port.to_string(),
            "--store".into(),
            format!("sqlite:{}", db.display()),
        ];
        let cwd = dir.path().to_path_buf();
        let result = std::panic::catch_unwind(|| Server::spawn(&args, &cwd, dir, db.clone()));
        match result {
            Ok(server) => {
                assert_eq!(server.port(), port);
                let mut c = server.client();
                c.cmd_expect("NOOP", 250, "2.0.0");
                return;
            }
            Err(e) => last_err = format!("{e:?}"),
        }
    }
    panic!("server with -p never started: {last_err}");
}

#[test]
fn log_file_flag_writes_logs_there() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("smtpd.log");
    let mut server = Server::start_with(Opts::args(&["-v", "-l"]).arg(log.to_str().unwrap()));
    let mut c = server.ehlo_client();
    c.deliver("a@b.example", &["x@example.com"], &simple_message("logged"));
    c.quit();
    server.term();
    server.assert_exit(0, Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).expect("log file exists");
    assert!(!text.is_empty(), "log file is empty");
    assert!(
        server.stderr().contains("smtpd: listening on 127.0.0.1:"),
        "the listening line still goes to stderr"
    );
}

/// Issue 15 item 4: `-l` with no file name logs to ./log.txt in the working
/// directory, as Guerrilla SMTPd did; a flag after it is not taken for a file.
#[test]
fn log_flag_without_a_file_writes_log_txt() {
    let mut server = Server::start_with(Opts::args(&["-l", "-v"]));
    let mut c = server.ehlo_client();
    c.deliver("a@b.example", &["x@example.com"], &simple_message("logged"));
    c.quit();
    server.term();
    server.assert_exit(0, Duration::from_secs(5));
    let text = std::fs::read_to_string(server.dir().join("log.txt")).expect("./log.txt exists");
    // -v took effect (debug lines such as the per-connection summary).
    assert!(
        text.contains("DEBUG"),
        "log.txt without debug lines: {text}"
    );
    assert!(!server.dir().join("-v").exists());
}

// --- configuration errors ---------------------------------------------------------

/// Runs smtpd with `args` (plus a config file when given) and a safe listen address
/// and store, expecting it to exit with `code` and mention `needle` on stderr.
fn assert_refused(config: Option<&str>, extra: &[&str], code: i32, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    // A safe listen address and store unless the case is about them (a flag would
    // override the file's bad value).
    let mut args: Vec<String> = Vec::new();
    if !config.is_some_and(|t| t.contains("listen")) {
        args.push("--listen".into());
        args.push("127.0.0.1:0".into());
    }
    if !extra.contains(&"--store") && !config.is_some_and(|t| t.contains("url")) {
        args.push("--store".into());
        args.push(format!("sqlite:{}", dir.path().join("x.sqlite").display()));
    }
    if let Some(toml) = config {
        let path = dir.path().join("smtpd.toml");
        std::fs::write(&path, toml).unwrap();
        args.push("-c".into());
        args.push(path.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let (got, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(10));
    assert_eq!(got, code, "args {args:?}: exit code; stderr:\n{stderr}");
    assert!(
        stderr.contains(needle),
        "args {args:?}: stderr should mention {needle:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("listening on"),
        "must not start listening: {stderr}"
    );
}

#[test]
fn config_error_names_the_field_and_exits_2() {
    for (toml, field) in [
        ("[limits]\nmax_recipients = 0\n", "limits.max_recipients"),
        (
            "[limits]\nmax_message_bytes = 10\n",
            "limits.max_message_bytes",
        ),
        ("[server]\nlisten = [\"nonsense\"]\n", "server.listen"),
        ("[server]\naccept_domains = []\n", "server.accept_domains"),
        ("[server]\nhostname = \"bad host\"\n", "server.hostname"),
        ("[timeouts]\ncommand_secs = 0\n", "timeouts.command_secs"),
        ("[store]\nurl = \"nosuch:foo\"\n", "store.url"),
        (
            "[store]\nsynchronous = \"sometimes\"\n",
            "store.synchronous",
        ),
    ] {
        assert_refused(
            Some(toml),
            &[],
            2,
            &format!("smtpd: configuration error: {field}"),
        );
    }
}

#[test]
fn config_unknown_field_is_refused_by_name() {
    assert_refused(
        Some("[limits]\nmax_recipient = 5\n"),
        &[],
        2,
        "max_recipient",
    );
    assert_refused(Some("[server]\ncolour = \"blue\"\n"), &[], 2, "colour");
    assert_refused(Some("[nosuchsection]\nx = 1\n"), &[], 2, "nosuchsection");
}

#[test]
fn config_file_syntax_error_or_missing_file_exits_2() {
    assert_refused(
        Some("[limits\nmax_recipients = 5\n"),
        &[],
        2,
        "smtpd: configuration error",
    );
    assert_refused(
        None,
        &["-c", "/nonexistent/smtpd.toml"],
        2,
        "/nonexistent/smtpd.toml",
    );
}

#[test]
fn bad_store_url_flag_exits_2() {
    assert_refused(None, &["--store", "nosuch:x"], 2, "store.url");
}

#[test]
fn bad_accept_domain_flag_exits_2() {
    assert_refused(
        None,
        &["--accept-domain", "exa mple.com"],
        2,
        "server.accept_domains",
    );
    assert_refused(
        None,
        &["--accept-domain", "a*b.com"],
        2,
        "server.accept_domains",
    );
}

#[test]
fn bad_max_clients_flag_exits_2() {
    assert_refused(None, &["--max-clients", "0"], 2, "server.max_clients");
}

#[test]
fn unopenable_store_exits_1_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--store".into(),
        "sqlite:/proc/nonexistent/x.sqlite".into(),
    ];
    let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(10));
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert!(stderr.contains("smtpd:"), "an error is printed: {stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn second_signal_exits_at_once() {
    // A transaction in DATA would hold a graceful shutdown for the whole grace
    // period (10 s by default); a second signal must not wait for it.
    let mut server = Server::start();
    let mut c = server.ehlo_client();
    c.cmd_expect("MAIL FROM:<a@b.example>", 250, "2.1.0");
    c.cmd_expect("RCPT TO:<x@example.com>", 250, "2.1.5");
    c.cmd_expect("DATA", 354, "");
    c.send(b"Subject: stalled\r\n\r\nnot finished");
    server.term();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "exited while a transaction was in DATA, before the grace period"
    );
    let start = Instant::now();
    server.term();
    let status = server
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no exit within 3 s of the second signal"));
    assert!(
        status.code().is_some(),
        "exited by itself, not killed: {status}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    // Nothing was acknowledged, nothing stored.
    assert_eq!(server.row_count(), 0);
}
