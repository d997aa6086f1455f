//! Hostile and careless clients: per-IP connection and rate limits, error and junk
//! command limits, a slowloris that dribbles a command, and 10,000 idle connections
//! held while a normal client still gets its mail through.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Client, Server, simple_message};

const LIMITED: &str = "[limits]\nexempt_loopback = false\n";

#[test]
fn concurrent_connections_per_ip_are_limited() {
    let server = Server::with_config(&format!("{LIMITED}max_connections_per_ip = 2\n"));
    let a = server.client();
    let _b = server.client();
    let mut c = Client::connect(server.addr);
    let r = c.read_reply();
    r.assert(421, "4.7.0");
    assert!(r.text().contains("from your address"), "{}", r.text());
    c.expect_closed();
    drop(a);
    // The slot frees once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = Client::connect(server.addr);
        if d.read_reply().code == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn connection_rate_per_ip_is_limited() {
    let server = Server::with_config(&format!("{LIMITED}max_connection_rate_per_ip = 3\n"));
    for _ in 0..3 {
        let mut c = server.client();
        c.quit();
    }
    let mut c = Client::connect(server.addr);
    let r = c.read_reply();
    r.assert(421, "4.7.0");
    assert!(r.text().contains("rate"), "{}", r.text());
}

#[test]
fn loopback_clients_are_exempt_by_default() {
    // The default per-IP limit is 50; 60 local connections are all served.
    let server = Server::start();
    let clients: Vec<Client> = (0..60).map(|_| server.client()).collect();
    assert_eq!(clients.len(), 60);
}

#[test]
fn too_many_errors_end_the_session() {
    let server = Server::with_config("[limits]\nmax_errors = 3\n");
    let mut c = server.client();
    c.ehlo("client.example");
    for _ in 0..3 {
        c.cmd_expect("BOGUS", 500, "5.5.2");
    }
    // The error over the limit is answered, then the session ends.
    c.cmd_expect("BOGUS", 500, "5.5.2");
    c.expect(421, "4.7.0");
    c.expect_closed();
}

#[test]
fn too_many_commands_without_mail_end_the_session() {
    let server = Server::with_config("[limits]\nmax_junk_commands = 5\n");
    let mut c = server.client();
    c.ehlo("client.example"); // 1
    for _ in 0..4 {
        c.cmd_expect("NOOP", 250, "2.0.0");
    }
    c.cmd_expect("RSET", 250, "2.0.0");
    c.expect(421, "4.7.0");
    c.expect_closed();
}

/// Connects, writes `first`, then one more byte of the same unfinished command
/// line every ~300 ms (calling `meanwhile` with the round number each time) until
/// the server closes; at most 15 s. Returns when it closed and what it said.
fn dribble_until_closed(
    server: &Server,
    first: &[u8],
    mut meanwhile: impl FnMut(usize),
) -> (Duration, String) {
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut next = first.to_vec();
    let mut round = 0;
    let closed_at = loop {
        if slow.write_all(&next).is_err() {
            break started.elapsed();
        }
        next = b"x".to_vec();
        let mut buf = [0u8; 512];
        match std::io::Read::read(&mut slow, &mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        meanwhile(round);
        round += 1;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "slowloris never timed out: {:?}",
            String::from_utf8_lossy(&got)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    (closed_at, String::from_utf8_lossy(&got).into_owned())
}

/// A client that sends a command one byte at a time, never finishing the line,
/// is timed out (the clock runs from the last complete command), while another
/// client is served normally at the same time.
#[test]
fn a_slowloris_is_timed_out_while_others_are_served() {
    let server = Server::with_config("[timeouts]\ncommand_secs = 2\n");
    let mut normal = server.client();
    normal.ehlo("client.example");
    let (closed_at, text) = dribble_until_closed(&server, b"x", |round| {
        if round % 2 == 0 {
            normal.deliver(
                "s@example.org",
                &["x@example.com"],
                &simple_message("meanwhile"),
            );
        }
    });
    assert!(text.contains("421 4.4.2"), "{text}");
    assert!(closed_at < Duration::from_secs(6), "took {closed_at:?}");
    assert!(server.row_count() >= 1);
}

/// Issue 15 item 1: a client that starts an over-long command line and then
/// dribbles more of it is timed out like an idle one: the bytes the server drops
/// from a line too long to keep are not progress.
#[test]
fn a_slowloris_on_an_over_long_line_is_timed_out() {
    let server = Server::with_config("[timeouts]\ncommand_secs = 2\n");
    let first = format!("NOOP {}", "x".repeat(2000));
    let (closed_at, text) = dribble_until_closed(&server, first.as_bytes(), |_| {});
    assert!(text.contains("421 4.4.2"), "{text}");
    assert!(!text.contains("500 "), "the line never ended: {text}");
    assert!(closed_at < Duration::from_secs(6), "took {closed_at:?}");
}

/// Issue 15 item 2: over-long command lines are errors like any other: 300 of them
/// pipelined end the session after `max_errors` (20) with 421.
#[test]
fn over_long_lines_count_against_the_error_limit() {
    let server = Server::start();
    let mut c = server.client();
    c.ehlo("client.example");
    let line = format!("NOOP {}\r\n", "x".repeat(2000));
    // Written from a thread: the server stops reading once it has closed, and the
    // writer must not block the reader.
    let mut writer = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let all = line.repeat(300);
        let _ = writer.write_all(all.as_bytes());
    });
    for _ in 0..21 {
        c.expect(500, "5.5.2");
    }
    c.expect(421, "4.7.0");
    c.expect_closed();
    sender.join().unwrap();
}

/// 10,000 idle connections (held by a Python client with a raised file limit) do
/// not keep a normal client from sending mail.
#[test]
fn ten_thousand_idle_connections_and_a_normal_client_still_delivers() {
    let server = Server::with_config("[server]\nmax_clients = 10100\n");
    let script = r#"
import socket, sys, time, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    socks.append(s)
print("open", len(socks), flush=True)
time.sleep(float(sys.argv[3]))
greeted = 0
for s in socks:
    s.settimeout(5)
    if s.recv(100).startswith(b"220"):
        greeted += 1
print("greeted", greeted, flush=True)
"#;
    let mut holder = Command::new("python3")
        .args(["-c", script, &server.port().to_string(), "10000", "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the server holds them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    while fds() < 10_000 {
        assert!(Instant::now() < deadline, "only {} descriptors open", fds());
        assert!(
            holder.try_wait().unwrap().is_none(),
            "the holder exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    // A few KiB per idle connection at most (measured: well under 1 KiB).
    assert!(
        rss_kib < 64 * 1024,
        "RSS {rss_kib} KiB with 10,000 idle connections"
    );
    let mut c = server.client();
    c.ehlo("client.example");
    let started = Instant::now();
    c.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("through the crowd"),
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    c.quit();
    let status = holder.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut holder.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("greeted 10000"), "{stdout}");
}

/// With `greet_delay_ms`, a client that talks before the banner is refused; one
/// that waits gets the 220 after the delay and is served.
#[test]
fn clients_that_talk_before_the_greeting_are_refused() {
    let server = Server::with_config("[limits]\ngreet_delay_ms = 600\n");
    let mut rude = Client::connect(server.addr);
    rude.send(b"EHLO spammer.example\r\nMAIL FROM:<s@example.org>\r\n");
    rude.expect(554, "5.5.1");
    rude.expect_closed();

    let started = Instant::now();
    let mut polite = server.client();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    polite.ehlo("client.example");
    polite.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("waited"),
    );
    assert_eq!(server.row_count(), 1);
}

/// The global budget for message bytes in memory: once it is spent, a new message
/// is not paused (that locked clients out until their DATA timeout gave them 451):
/// its body goes to the spool and it is stored at once, while the message already
/// under way finishes too.
#[test]
fn the_in_flight_memory_budget_spools_new_messages_instead_of_pausing_them() {
    let server = Server::with_config(
        "[server]\nthreads = 1\n[limits]\nmax_inflight_bytes = 65536\n[timeouts]\ndata_secs = 2\n",
    );
    let mut big = server.client();
    big.ehlo("client.example");
    big.cmd_expect("MAIL FROM:<s@example.org>", 250, "2.1.0");
    big.cmd_expect("RCPT TO:<big@example.com>", 250, "2.1.5");
    big.cmd_expect("DATA", 354, "");
    let line = format!("{}\r\n", "x".repeat(998));
    let body: String = std::iter::repeat_n(line.as_str(), 200).collect(); // ~200 KB
    big.send(format!("Subject: big\r\n\r\n{body}").as_bytes());
    std::thread::sleep(Duration::from_millis(300));

    let mut late = server.client();
    late.ehlo("client.example");
    late.deliver(
        "s@example.org",
        &["late@example.com"],
        &simple_message("no waiting for memory"),
    );

    big.send(b".\r\n");
    big.expect(250, "2.0.0");
    let stored: Vec<String> = server.rows().into_iter().map(|r| r.recipient).collect();
    assert_eq!(stored, ["late@example.com", "big@example.com"]);
}

/// Two connections on `a`, then two on `b` (each node syncing its counts), then a
/// fifth on `b`: its greeting (a limit of 4 shared by the nodes refuses it).
pub(crate) fn fifth_connection_over_two_nodes(a: &Server, b: &Server) -> crate::support::Reply {
    // The shared counters are per unix minute: do not straddle a boundary.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 50 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
    for server in [a, a] {
        let mut c = server.client();
        c.quit();
    }
    std::thread::sleep(Duration::from_millis(1200)); // a reports its 2
    for server in [b, b] {
        let mut c = server.client();
        c.quit();
    }
    std::thread::sleep(Duration::from_millis(1200)); // b reports, learns a's 2
    // b has seen only 2 connections itself, but the client made 4 in all.
    Client::connect(b.addr).read_reply()
}

/// With `--redis`, the per-IP connection rate is one limit over several nodes.
#[test]
fn the_connection_rate_is_shared_between_nodes_through_redis() {
    let redis = crate::support::services::Redis::start();
    let config = "[limits]\nexempt_loopback = false\nmax_connection_rate_per_ip = 4\n";
    let opts = crate::support::Opts::config(config)
        .arg("--redis")
        .arg(&redis.url());
    let a = Server::start_with(opts.clone());
    let b = Server::start_with(opts);
    let r = fifth_connection_over_two_nodes(&a, &b);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(r.code, 421, "shared counters: {keys:?}");
    r.assert(421, "4.7.0");
    assert!(r.text().contains("rate"), "{}", r.text());
}
