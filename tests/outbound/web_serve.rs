//! `outbound web`'s serving layer (`crates/http-serve`) against the clients of
//! the public internet: half-sent request heads (slowloris) are cut at
//! `web.header_read_timeout_ms` and their slots freed, `web.max_connections`
//! holds further connections in the backlog until a slot frees, an idle
//! kept-alive connection is closed, and SIGTERM lets the request in flight finish
//! while a stalled one cannot hold the exit past the deadline. Real clients:
//! curl and raw sockets.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Store, Web, account, wait_for};

/// Half a request head: the request line and one header, never the blank line.
const HALF_HEAD: &[u8] = b"GET /api/v1/lists HTTP/1.1\r\nHost: t\r\n";

/// A client that sends [`HALF_HEAD`] and then nothing.
fn stall(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(HALF_HEAD).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads until the server closes the connection (EOF or a reset); what came,
/// and whether it was closed (false: the read timed out first).
fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => (got, true),
        Err(e) => {
            let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
            (got, !timed_out)
        }
    }
}

fn get_lists(token: &str) -> String {
    format!("GET /api/v1/lists HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
}

#[test]
fn stalled_request_heads_are_cut_at_the_timeout_and_free_their_slots() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(
        &store,
        "[web]\nmax_connections = 3\nheader_read_timeout_ms = 1500\n",
    );
    // Three slowloris clients take all three slots...
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| stall(web.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let opened = Instant::now();
    // ...so a real request waits in the backlog until the timeout frees them.
    let answer = std::thread::scope(|scope| {
        let curl = scope.spawn(|| {
            let a = web.call("GET", "/api/v1/lists", Some(&token), None);
            (a, opened.elapsed())
        });
        for s in &mut stalled {
            let (_, closed) = read_until_closed(s);
            assert!(closed, "a half-sent request head was never closed");
        }
        let held = opened.elapsed();
        assert!(
            held >= Duration::from_millis(1000) && held < Duration::from_secs(10),
            "the half-sent request heads held their connections for {held:?}"
        );
        curl.join().unwrap()
    });
    let (answer, waited) = answer;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.json["lists"].is_array(), "{}", answer.body);
    assert!(
        waited >= Duration::from_millis(1000),
        "curl was answered after {waited:?}, while every slot was held"
    );
}

#[test]
fn at_the_cap_a_further_connection_waits_and_is_served_once_a_slot_frees() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(
        &store,
        "[web]\nmax_connections = 2\nheader_read_timeout_ms = 60000\n",
    );
    let first = stall(web.addr);
    let _second = stall(web.addr);
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(web.addr).unwrap();
    third
        .write_all(
            format!(
                "GET /api/v1/lists HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "answered beyond the cap");
    // A slot frees when its client goes away: the waiting connection is served.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (answer, closed) = read_until_closed(&mut third);
    assert!(closed);
    assert!(
        answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_timeout() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "[web]\nheader_read_timeout_ms = 1000\n");
    let mut s = TcpStream::connect(web.addr).unwrap();
    s.write_all(get_lists(&token).as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut s);
    let idle = answered.elapsed();
    assert!(closed, "the kept-alive connection stayed open");
    assert!(
        idle >= Duration::from_millis(700) && idle < Duration::from_secs(10),
        "closed after {idle:?} idle"
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_by_the_deadline() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    // A long head timeout: only the shutdown deadline can end the stalled upload.
    let mut web = Web::start(&store, "[web]\nheader_read_timeout_ms = 60000\n");
    let post = |body_len: usize| {
        format!(
            "POST /api/v1/lists HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
        )
    };
    let body = br#"{"name": "late"}"#;
    let (head, tail) = body.split_at(9);
    // In flight: head and half the body sent; the rest comes after the SIGTERM.
    let mut in_flight = TcpStream::connect(web.addr).unwrap();
    in_flight.write_all(post(body.len()).as_bytes()).unwrap();
    in_flight.write_all(head).unwrap();
    // Stalled: half a body, and never the rest.
    let mut stalled = TcpStream::connect(web.addr).unwrap();
    stalled
        .write_all(format!("{}{{\"na", post(body.len())).as_bytes())
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Idle: one request answered, the connection kept alive.
    let mut idle = TcpStream::connect(web.addr).unwrap();
    idle.write_all(get_lists(&token).as_bytes()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    std::thread::sleep(Duration::from_millis(300));

    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &web.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The listener closes: new connections are refused, not queued.
    wait_for("the listener to close", Duration::from_secs(5), || {
        TcpStream::connect_timeout(&web.addr, Duration::from_millis(200)).is_err()
    });
    // The idle connection is closed at once.
    let (_, closed) = read_until_closed(&mut idle);
    assert!(closed, "the idle connection stayed open through the stop");
    assert!(term.elapsed() < Duration::from_secs(5));
    // The request in flight completes and is answered; then its connection closes.
    in_flight.write_all(tail).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (answer, closed) = read_until_closed(&mut in_flight);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed);
    assert_eq!(
        store.count("SELECT COUNT(*) FROM lists WHERE name = 'late'"),
        1
    );
    // The stalled upload holds the exit until the deadline (10 s), not beyond.
    let status = web.wait_exit(Duration::from_secs(25));
    let took = term.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert!(status.success(), "{status:?}\n{}", web.log());
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(17),
        "exited {took:?} after SIGTERM"
    );
    let (_, closed) = read_until_closed(&mut stalled);
    assert!(closed, "the stalled upload's connection was left open");
    assert!(
        web.log().contains("still open at the shutdown deadline"),
        "{}",
        web.log()
    );
}

#[test]
fn bad_web_limits_are_config_errors_naming_the_field() {
    let store = Store::sqlite();
    let dir = tempfile::tempdir().unwrap();
    for (line, field) in [
        ("max_connections = 0", "web.max_connections"),
        ("max_connections = 2000000", "web.max_connections"),
        ("header_read_timeout_ms = 0", "web.header_read_timeout_ms"),
        (
            "header_read_timeout_ms = 3600000",
            "web.header_read_timeout_ms",
        ),
        ("max_connections = \"many\"", "max_connections"),
        (
            "max_connections_per_ip = 2000000",
            "web.max_connections_per_ip",
        ),
    ] {
        let cfg = dir.path().join("outbound.toml");
        std::fs::write(&cfg, format!("[web]\n{line}\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_outbound"))
            .args(["--store", &store.url(), "-c"])
            .arg(&cfg)
            .args(["web", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}: started");
        assert!(stderr.contains(field), "{line}: {stderr}");
    }
}

#[test]
fn one_address_past_max_connections_per_ip_is_closed_while_others_are_served() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(
        &store,
        "[web]\nmax_connections = 50\nmax_connections_per_ip = 2\nheader_read_timeout_ms = 60000\n",
    );
    let _held: Vec<TcpStream> = (0..2).map(|_| stall(web.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    // A third from 127.0.0.1: closed without an answer, though 48 slots are free.
    let mut third = TcpStream::connect(web.addr).unwrap();
    let _ = third.write_all(get_lists(&token).as_bytes());
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (got, closed) = read_until_closed(&mut third);
    assert!(
        closed && got.is_empty(),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Another address (curl from 127.0.0.2) is served at once.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--interface",
            "127.0.0.2",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{}/api/v1/lists", web.addr))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
