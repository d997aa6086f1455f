//! Faults with nothing lost and nothing acknowledged falsely: MariaDB and Redis
//! stopped and restarted while clients send, replies compared with what is stored.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::services::{Mariadb, Redis};
use crate::support::{Client, Opts, READ_TIMEOUT, Server, simple_message};

/// What the load clients saw.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) acked: BTreeSet<String>,
    pub(crate) temp_failures: usize,
    pub(crate) other: Vec<String>,
}

/// `threads` clients send one message after another for `duration`, recording
/// every 250 id and counting 451s, each reply awaited up to `reply_wait`.
/// Connection errors reconnect.
pub(crate) fn load(
    addr: SocketAddr,
    threads: usize,
    duration: Duration,
    reply_wait: Duration,
    tally: Arc<Mutex<Tally>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let tally = Arc::clone(&tally);
            std::thread::spawn(move || {
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let Ok(stream) = std::net::TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let mut c = Client::from_stream(stream);
                    c.set_timeout(reply_wait);
                    if c.try_read_reply().map(|r| r.code) != Ok(220) {
                        continue;
                    }
                    c.ehlo("load.example");
                    for n in 0..10_000 {
                        if Instant::now() >= end {
                            break;
                        }
                        let r = c.transaction(
                            "s@example.org",
                            &[&format!("t{t}@example.com")],
                            &simple_message(&format!("{t}-{n}")),
                        );
                        let mut tally = tally.lock().unwrap();
                        match r.code {
                            250 => {
                                tally.acked.insert(r.queue_id());
                            }
                            451 => tally.temp_failures += 1,
                            _ => tally.other.push(r.text()),
                        }
                    }
                }
            })
        })
        .collect()
}

/// Sends one message to `rcpt` on `c` until it is accepted (451 meanwhile, 30 s at
/// most); returns its queue id.
pub(crate) fn until_stored(c: &mut Client, rcpt: &str, subject: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.transaction("s@example.org", &[rcpt], &simple_message(subject));
        if r.code == 250 {
            return r.queue_id();
        }
        r.assert(451, "4.3.0");
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn stored_hashes(db: &Mariadb) -> BTreeSet<String> {
    db.column("SELECT DISTINCT hash FROM new_mail")
        .into_iter()
        .collect()
}

#[test]
fn mariadb_down_gives_451_and_the_server_recovers_by_itself() {
    let mut db = Mariadb::start();
    let server = Server::start_with(Opts::default().store(&db.url()).arg("--migrate"));
    let mut c = server.client();
    c.ehlo("client.example");
    c.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("before"),
    );

    db.stop(false);
    let started = Instant::now();
    let r = c.transaction(
        "s@example.org",
        &["x@example.com"],
        &simple_message("during"),
    );
    r.assert(451, "4.3.0");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "451 took {:?}",
        started.elapsed()
    );
    // The session goes on: the client may retry on the same connection.
    c.cmd_expect("NOOP", 250, "2.0.0");

    db.start_again();
    let id = until_stored(&mut c, "x@example.com", "after");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM new_mail WHERE hash = '{id}'"
        )),
        1
    );
    assert!(db.count("SELECT COUNT(*) FROM new_mail WHERE subject = 'during'") == 0);
}

#[test]
fn mariadb_crash_under_load_loses_nothing_acknowledged_and_stores_nothing_unacknowledged() {
    let mut db = Mariadb::start();
    // The per-transaction lines would crowd the outage's warnings out of the
    // bounded stderr buffer the test reads.
    let server = Server::start_with(
        Opts::config("[log]\nlevel = \"info,smtpd::reactor::txlog=warn\"\n")
            .store(&db.url())
            .arg("--migrate"),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients = load(
        server.addr,
        6,
        Duration::from_secs(7),
        READ_TIMEOUT,
        Arc::clone(&tally),
    );
    std::thread::sleep(Duration::from_millis(2000));
    db.stop(true); // SIGKILL: a crash, mid-commit for some batch
    std::thread::sleep(Duration::from_millis(1500));
    db.start_again();
    for c in clients {
        c.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    assert!(
        tally.other.is_empty(),
        "unexpected replies: {:?}",
        tally.other
    );
    assert!(
        tally.acked.len() > 100,
        "too little load: {}",
        tally.acked.len()
    );
    // The crash shows either as 451s, or (when it hit a COMMIT) as a commit
    // whose outcome the server had to ask the database about once it was back.
    let log = server.stderr();
    assert!(
        tally.temp_failures > 0
            || log.contains("database unavailable")
            || log.contains("commit outcome unknown"),
        "the outage was not noticed:\n{log}"
    );
    let stored = stored_hashes(&db);
    let missing: Vec<_> = tally.acked.difference(&stored).collect();
    let extra: Vec<_> = stored.difference(&tally.acked).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert!(extra.is_empty(), "stored but not acknowledged: {extra:?}");
}

#[test]
fn redis_restart_under_load_in_cache_mode_costs_no_mail() {
    let db = Mariadb::start();
    let mut redis = Redis::start();
    let toml = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let server = Server::start_with(Opts::config(&toml).store(&db.url()).arg("--migrate"));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients = load(
        server.addr,
        6,
        Duration::from_secs(5),
        READ_TIMEOUT,
        Arc::clone(&tally),
    );
    std::thread::sleep(Duration::from_millis(1500));
    redis.stop();
    std::thread::sleep(Duration::from_millis(1500));
    redis.start_again();
    for c in clients {
        c.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    assert!(
        tally.other.is_empty(),
        "unexpected replies: {:?}",
        tally.other
    );
    assert_eq!(
        tally.temp_failures, 0,
        "cache mode must not refuse mail when Redis is down"
    );
    assert!(
        tally.acked.len() > 100,
        "too little load: {}",
        tally.acked.len()
    );
    assert_eq!(stored_hashes(&db), tally.acked);
}
