//! Operations: the relay's and `outbound web`'s metrics listeners scraped with
//! curl after known traffic, `/readyz` following MariaDB, and the systemd notify
//! protocol against a datagram socket the test binds.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::{Dest, FAST, Relay, Store, Web, enqueue, message, wait_for};
use test_support::scrape::{curl, sample, scrape_until};

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The address announced as `<who>: metrics on ADDR` in `log`.
fn metrics_addr(who: &str, log: impl Fn() -> String) -> String {
    let prefix = format!("{who}: metrics on ");
    let mut addr = None;
    wait_for("the metrics line", Duration::from_secs(20), || {
        addr = log().lines().find_map(|l| {
            l.strip_prefix(prefix.as_str())
                .map(|a| a.trim().to_string())
        });
        addr.is_some()
    });
    addr.unwrap()
}

#[test]
fn relay_metrics_count_deliveries_by_outcome_and_domain() {
    let store = Store::sqlite();
    let dest = Dest::start(&["--rule", "gone@a.test=550 5.1.1 no such user"]);
    enqueue(
        &store,
        "app@sender.test",
        &["ann@a.test", "bob@a.test", "cy@a.test", "gone@a.test"],
        &message("metrics"),
    );
    let relay = Relay::start(
        &store,
        &format!("{FAST}{METRICS}"),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    let addr = metrics_addr("outbound", || relay.log());
    store.wait_settled(&["delivered", "failed"], Duration::from_secs(30));
    let text = scrape_until(
        &addr,
        "outbound_deliveries_total{outcome=\"delivered\",domain=\"a.test\"}",
        3.0,
    );
    assert_eq!(
        sample(
            &text,
            "outbound_deliveries_total{outcome=\"failed\",domain=\"a.test\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "outbound_claims_total"), 4.0, "{text}");
    assert_eq!(
        sample(&text, "outbound_attempt_seconds_count"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "outbound_connections_opened_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "outbound_claim_failures_total"),
        0.0,
        "{text}"
    );
    // The queue is sampled at each heartbeat (1 s here).
    scrape_until(&addr, "outbound_queue{state=\"delivered\"}", 3.0);
    assert_eq!(curl(&addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(curl(&addr, "/healthz").0, 200);
    assert_eq!(curl(&addr, "/nope").0, 404);
}

#[test]
fn relay_readyz_is_503_while_mariadb_is_down_and_200_when_back() {
    let mut store = Store::mariadb();
    let relay = Relay::start(&store, &format!("{FAST}{METRICS}"), &[]);
    let addr = metrics_addr("outbound", || relay.log());
    wait_for("ready", Duration::from_secs(20), || {
        curl(&addr, "/readyz").0 == 200
    });
    let Store::Mariadb(db) = &mut store else {
        unreachable!()
    };
    db.stop(false);
    let mut body = String::new();
    wait_for("503 with MariaDB down", Duration::from_secs(30), || {
        let (code, b) = curl(&addr, "/readyz");
        body = b;
        code == 503
    });
    assert!(body.starts_with("not ready: claim failed"), "{body}");
    assert_eq!(curl(&addr, "/healthz").0, 200);
    db.start_again();
    wait_for("ready again", Duration::from_secs(40), || {
        curl(&addr, "/readyz").0 == 200
    });
    let (_, text) = curl(&addr, "/metrics");
    assert!(
        sample(&text, "outbound_claim_failures_total") >= 1.0,
        "{text}"
    );
}

#[test]
fn relay_speaks_the_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let store = Store::sqlite();
    let mut relay = Relay::start_env(
        &store,
        FAST,
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && lines
            .iter()
            .filter(|l: &&String| *l == "WATCHDOG=1")
            .count()
            < 3
    {
        if let Ok(n) = sock.recv(&mut buf) {
            lines.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    assert!(lines.iter().any(|l| l == "READY=1"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=relay ") && l.contains("running")),
        "{lines:?}"
    );
    assert!(
        lines.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3,
        "{lines:?}"
    );
    test_support::services::signal_pid(relay.pid(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert!(
        relay
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn web_metrics_count_responses_and_readyz_checks_the_store() {
    let store = Store::sqlite();
    let web = Web::start(&store, "[metrics]\nweb_listen = \"127.0.0.1:0\"\n");
    let addr = metrics_addr("outbound web", || web.log());
    wait_for("web ready", Duration::from_secs(20), || {
        curl(&addr, "/readyz").0 == 200
    });
    let before = sample(
        &curl(&addr, "/metrics").1,
        "outbound_web_responses_total{class=\"4xx\"}",
    );
    let answer = web.call("GET", "/api/v1/lists", None, None);
    assert_eq!(answer.status, 401, "{answer:?}");
    scrape_until(
        &addr,
        "outbound_web_responses_total{class=\"4xx\"}",
        before + 1.0,
    );
    // The metrics are not on the API port.
    assert_eq!(web.call("GET", "/metrics", None, None).status, 404);
}

#[test]
fn units_verify_and_their_exposure_is_below_2() {
    use test_support::units;
    let services = ["outbound.service", "outbound-web.service"];
    let dir = units::verify(
        &services,
        &[("/usr/bin/outbound", env!("CARGO_BIN_EXE_outbound"))],
    );
    for unit in services {
        let score = units::exposure(&dir.path().join(unit));
        // 1.2 when this test was written (systemd 252).
        assert!(score < 2.0, "{unit} exposure {score}");
    }
}

#[test]
fn sighup_changes_a_domain_rate_live_and_refuses_a_bad_file() {
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    let mut relay = Relay::start(
        &store,
        &format!("{FAST}{METRICS}"),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    let addr = metrics_addr("outbound", || relay.log());
    let config = relay.config_path();
    std::fs::write(
        &config,
        format!("{FAST}{METRICS}[domains.\"a.test\"]\nmessages_per_second = 2.0\n"),
    )
    .unwrap();
    test_support::services::signal_pid(relay.pid(), "HUP");
    wait_for("the reload", Duration::from_secs(10), || {
        relay.log().contains("SIGHUP: configuration reloaded")
    });
    assert!(relay.log().contains("[\"domains\"]"), "{}", relay.log());
    // Four transactions at 2 per second: the last waits ~1.5 s for its slot.
    let started = Instant::now();
    for i in 0..4 {
        enqueue(
            &store,
            "app@sender.test",
            &["r@a.test"],
            &message(&format!("rate {i}")),
        );
    }
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    let (_, text) = curl(&addr, "/metrics");
    assert!(
        sample(&text, "outbound_rate_limit_waits_total") >= 3.0,
        "{text}"
    );

    // A file that does not validate is refused whole; the relay runs on.
    std::fs::write(&config, "[relay]\nthreads = 0\n").unwrap();
    test_support::services::signal_pid(relay.pid(), "HUP");
    wait_for("the refusal", Duration::from_secs(10), || {
        relay.log().contains("configuration refused")
    });
    assert!(relay.log().contains("relay.threads"), "{}", relay.log());
    assert!(relay.wait_exit(Duration::from_millis(500)).is_none());
    assert_eq!(curl(&addr, "/healthz").0, 200);
}

#[test]
fn sighup_applies_log_level_and_json_lines_stay_json() {
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outbound.toml");
    let log_path = dir.path().join("relay.log");
    let base = format!("{FAST}{METRICS}[log]\nformat = \"json\"\n");
    std::fs::write(&config, &base).unwrap();
    // No `-v` and no OUTBOUND_LOG: the file's level rules.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(["--store", &store.url(), "-c"])
        .arg(&config)
        .args(["--transport", &format!("a.test={}", dest.addr)])
        .env_remove("OUTBOUND_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let child = test_support::services::KillOnDrop(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    enqueue(&store, "app@sender.test", &["r@a.test"], &message("before"));
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    assert!(!log().contains("\"message\":\"claimed\""), "{}", log());

    std::fs::write(&config, format!("{base}level = \"outbound=debug,info\"\n")).unwrap();
    test_support::services::signal_pid(child.id(), "HUP");
    wait_for("the reload", Duration::from_secs(10), || {
        log().contains("SIGHUP: configuration reloaded")
    });
    enqueue(&store, "app@sender.test", &["r@a.test"], &message("after"));
    wait_for("a debug line", Duration::from_secs(30), || {
        log().contains("\"message\":\"claimed\"")
    });
    // Every log line is JSON (the `outbound: metrics on` announcement for scripts
    // is not a log line).
    for line in log().lines().filter(|l| !l.starts_with("outbound: ")) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(log().contains("log.level"), "{}", log());
    // One line per delivery attempt, at info (there before the reload too); the
    // second is written after its claim's debug line, so it is waited for.
    let attempts = || -> Vec<serde_json::Value> {
        log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "delivery attempt")
            .collect()
    };
    wait_for("two attempt lines", Duration::from_secs(30), || {
        attempts().len() >= 2
    });
    let attempts = attempts();
    assert_eq!(attempts.len(), 2, "{}", log());
    let f = &attempts[0]["fields"];
    assert_eq!(f["domain"], "a.test", "{f}");
    assert_eq!(f["rcpt"], "r@a.test", "{f}");
    assert_eq!(f["outcome"], "delivered", "{f}");
    assert_eq!(f["code"], 250, "{f}");
    assert!(f["mx"].as_str().unwrap().contains("127.0.0.1"), "{f}");
    child.terminate();
}

#[test]
fn sigusr1_reopens_the_relay_log_file_and_the_relay_runs_on() {
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = Relay::start(
        &store,
        &format!("{FAST}[log]\nfile = \"{}\"\n", log.display()),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    enqueue(&store, "app@sender.test", &["r@a.test"], &message("before"));
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    wait_for("the first attempt line", Duration::from_secs(10), || {
        read(&log).contains("delivery attempt")
    });
    // logrotate: move the file, then tell the relay.
    let rotated = dir.path().join("relay.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    test_support::services::signal_pid(relay.pid(), "USR1");
    wait_for("a new log file", Duration::from_secs(10), || {
        read(&log).contains("SIGUSR1: log file reopened")
    });
    // SIGUSR1's default action would have ended the process.
    assert!(relay.wait_exit(Duration::from_millis(300)).is_none());
    enqueue(&store, "app@sender.test", &["s@a.test"], &message("after"));
    wait_for(
        "the second attempt in the new file",
        Duration::from_secs(30),
        || read(&log).contains("s@a.test"),
    );
    let old = read(&rotated);
    assert!(old.contains("r@a.test"), "{old}");
    assert!(
        !old.contains("s@a.test") && !old.contains("reopened"),
        "{old}"
    );
}
