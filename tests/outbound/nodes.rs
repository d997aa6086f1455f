//! Several relay nodes on one MariaDB queue: no message sent twice, and a node that
//! dies has its leases taken over.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use crate::support::{
    Dest, FAST, Relay, Store, enqueue, enqueue_distinct, message, outbound, wait_for,
};

#[test]
fn two_nodes_share_one_queue_without_sending_anything_twice() {
    let store = Store::mariadb();
    let dest = Dest::start(&[]);
    // At most 20 rows in flight per node and 20 messages/s per domain (200/s in all):
    // the work lasts long enough that neither node can take the whole queue alone.
    let config = FAST.replace(
        "[relay]\n",
        "[relay]\nbatch_size = 16\nmax_in_flight = 20\n",
    ) + "\n[domains.default]\nmessages_per_second = 20\n";
    let transports: Vec<String> = (0..10)
        .flat_map(|d| ["--transport".to_owned(), format!("d{d}.test={}", dest.addr)])
        .collect();
    let args = |node: &str| {
        let mut a = transports.clone();
        a.extend([
            "--node-id".to_owned(),
            node.to_owned(),
            "--threads".to_owned(),
            "2".to_owned(),
        ]);
        a
    };
    let (a, b) = (args("node-a"), args("node-b"));
    let mut node_a = Relay::start(
        &store,
        &config,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut node_b = Relay::start(
        &store,
        &config,
        &b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // Both nodes up (heartbeat rows) before anything is queued, then 300 recipients
    // over 10 domains with distinct bodies (no grouping) in one INSERT, so both see
    // the whole queue at once.
    wait_for("both nodes' heartbeats", Duration::from_secs(30), || {
        store.count("SELECT COUNT(*) FROM outbound_nodes") == 2
    });
    let expected: Vec<String> = (0..30)
        .flat_map(|batch| (0..10).map(move |d| format!("u{batch}@d{d}.test")))
        .collect();
    enqueue_distinct(&store, &expected);
    store.wait_settled(&["delivered"], Duration::from_secs(90));

    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in dest.recipients() {
        *seen.entry(r).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let mut got: Vec<String> = seen.into_keys().collect();
    got.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(got, expected);
    // Both nodes did part of the work; every row was attempted exactly once.
    let per_node = store.column(
        "SELECT CONCAT(node_id, ' ', COUNT(*)) FROM outbound_log GROUP BY node_id ORDER BY node_id",
    );
    assert_eq!(per_node.len(), 2, "{per_node:?}");
    assert_eq!(store.count("SELECT COUNT(*) FROM outbound_log"), 300);
    let nodes = String::from_utf8(outbound(&store, &["nodes"], None).stdout).unwrap();
    for n in ["node-a", "node-b"] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(n) && l.contains(" alive ")),
            "{nodes}"
        );
    }
    assert!(node_a.stop() && node_b.stop());
}

#[test]
fn a_killed_node_loses_its_leases_to_another() {
    let store = Store::mariadb();
    // node-a delivers into a black hole: connections are accepted by the kernel and
    // never answered, so its rows stay claimed ("sending") until it is killed.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let to: Vec<String> = (0..20).map(|i| format!("u{i}@slow.test")).collect();
    for rcpt in &to {
        enqueue(&store, "app@sender.test", &[rcpt], &message(rcpt));
    }
    let mut node_a = Relay::start(
        &store,
        FAST,
        &[
            "--transport",
            &format!("slow.test={}", hole.local_addr().unwrap()),
            "--node-id",
            "node-a",
        ],
    );
    wait_for(
        "node-a to claim everything",
        Duration::from_secs(20),
        || {
            store.count("SELECT COUNT(*) FROM outbound_queue WHERE state = 'sending' AND lease_node = 'node-a'") == 20
        },
    );
    node_a.kill();
    // Still leased to the dead node right after the kill.
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_queue WHERE lease_node = 'node-a'"),
        20
    );

    let dest = Dest::start(&[]);
    let node_b = Relay::start(
        &store,
        FAST,
        &[
            "--transport",
            &format!("slow.test={}", dest.addr),
            "--node-id",
            "node-b",
        ],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(40));
    let mut got = dest.recipients();
    got.sort();
    let mut want = to.clone();
    want.sort();
    assert_eq!(got, want, "each exactly once");
    assert_eq!(
        store.column("SELECT DISTINCT node_id FROM outbound_log"),
        ["node-b"]
    );
    assert!(
        node_b
            .log()
            .contains("took back rows whose lease had expired"),
        "{}",
        node_b.log()
    );
    let nodes = String::from_utf8(outbound(&store, &["nodes"], None).stdout).unwrap();
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("node-a") && l.contains(" dead ")),
        "{nodes}"
    );
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("node-b") && l.contains(" alive ")),
        "{nodes}"
    );
    drop(hole);
}

/// The default node id: the kernel's host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// The `outbound nodes` line of `node`.
fn nodes_line(store: &Store, node: &str) -> String {
    let nodes = String::from_utf8(outbound(store, &["nodes"], None).stdout).unwrap();
    nodes
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("{node} not in {nodes}"))
        .to_owned()
}

#[test]
fn a_second_relay_with_a_node_id_in_use_refuses_to_start_and_takes_nothing() {
    let store = Store::mariadb();
    // The first relay holds every row (its destination never answers).
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let to: Vec<String> = (0..20).map(|i| format!("u{i}@slow.test")).collect();
    for rcpt in &to {
        enqueue(&store, "app@sender.test", &[rcpt], &message(rcpt));
    }
    let slow = format!("slow.test={}", hole.local_addr().unwrap());
    // Both with the default node id (the host name), as in the issue.
    let mut first = Relay::start(&store, FAST, &["--transport", &slow]);
    wait_for(
        "the first relay to claim everything",
        Duration::from_secs(20),
        || store.count("SELECT COUNT(*) FROM outbound_queue WHERE state = 'sending'") == 20,
    );
    let leases = "SELECT CONCAT(lease_node, ' ', state) FROM outbound_queue ORDER BY id";
    let before = store.column(leases);
    let mut second = Relay::start(&store, FAST, &["--transport", &slow]);
    let started = std::time::Instant::now();
    let status = second.wait_exit(Duration::from_secs(15));
    eprintln!("the second relay exited after {:?}", started.elapsed());
    let node = host_name();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "the second relay must refuse to start: {}",
        second.log()
    );
    let log = second.log();
    assert!(
        log.contains(&format!("node id `{node}`")) && log.contains("--node-id"),
        "{log}"
    );
    // It took nothing, renewed nothing, released nothing.
    assert_eq!(store.column(leases), before);
    assert!(before.iter().all(|l| l.starts_with(&format!("{node} "))));
    // The first one stops cleanly and returns its rows; a relay started after it
    // (same node id) does not wait and delivers each recipient once.
    assert!(first.stop());
    drop(hole);
    let dest = Dest::start(&[]);
    let _third = Relay::start(
        &store,
        FAST,
        &["--transport", &format!("slow.test={}", dest.addr)],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    let mut got = dest.recipients();
    got.sort();
    let mut want = to.clone();
    want.sort();
    assert_eq!(got, want, "each exactly once");
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_log WHERE outcome = 'delivered'"),
        20
    );
}

#[test]
fn a_cleanly_stopped_node_shows_as_stopped_at_once() {
    let store = Store::sqlite();
    outbound(&store, &["stats"], None); // creates the schema
    let mut relay = Relay::start(&store, FAST, &["--node-id", "node-s"]);
    wait_for("the heartbeat", Duration::from_secs(20), || {
        store.count("SELECT COUNT(*) FROM outbound_nodes") == 1
    });
    assert!(
        nodes_line(&store, "node-s").contains(" alive "),
        "{}",
        nodes_line(&store, "node-s")
    );
    assert!(relay.stop());
    // No need to wait for three missed heartbeats.
    let line = nodes_line(&store, "node-s");
    assert!(line.contains(" stopped "), "{line}");
}

#[test]
fn a_relay_restarted_after_sigkill_takes_back_its_predecessors_leases_at_once() {
    let store = Store::sqlite();
    // The first process's destination never answers, so every row it claims stays
    // "sending" until it is killed; then a real server takes over the port.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    outbound(&store, &["stats"], None); // creates the schema
    let to: Vec<String> = (0..200).map(|i| format!("u{i}@slow.test")).collect();
    let rows: Vec<String> = to
        .iter()
        .map(|r| format!("('app@sender.test', '{r}', '{}')", message(r)))
        .collect();
    store.exec(&format!(
        "INSERT INTO outbound_queue (sender, recipient, body) VALUES {}",
        rows.join(", ")
    ));
    // A long lease: "promptly" must mean well before it would have expired.
    let config = FAST.replace("lease_secs = 4", "lease_secs = 60");
    let transport = format!("slow.test=127.0.0.1:{port}");
    let args = ["--transport", transport.as_str(), "--node-id", "node-r"];
    let mut first = Relay::start(&store, &config, &args);
    wait_for(
        "the first process to claim everything",
        Duration::from_secs(20),
        || store.count("SELECT COUNT(*) FROM outbound_queue WHERE state = 'sending'") == 200,
    );
    std::thread::sleep(Duration::from_secs(3));
    first.kill();
    drop(hole);
    let dest = Dest::start_on("127.0.0.1", port, &[]);
    // What systemd's Restart=on-failure does: start again at once.
    let started = std::time::Instant::now();
    let second = Relay::start(&store, &config, &args);
    store.wait_settled(&["delivered"], Duration::from_secs(25));
    let took = started.elapsed();
    eprintln!("restart to every row delivered: {took:?}");
    assert!(took < Duration::from_secs(25), "{took:?}");
    let mut got = dest.recipients();
    got.sort();
    let mut want = to.clone();
    want.sort();
    assert_eq!(got, want, "each recipient exactly once");
    assert!(
        second
            .log()
            .contains("took back rows leased by a previous process of this node"),
        "{}",
        second.log()
    );
}

#[test]
fn a_relay_renews_and_releases_only_its_own_leases() {
    let store = Store::sqlite();
    outbound(&store, &["stats"], None); // creates the schema
    let mut relay = Relay::start(&store, FAST, &["--node-id", "node-o"]);
    wait_for("the heartbeat", Duration::from_secs(20), || {
        store.count("SELECT COUNT(*) FROM outbound_nodes") == 1
    });
    // A row held by another process under the same node id (one that took the node
    // over while this one stalled, say), with a lease of its own.
    store.exec(
        "INSERT INTO outbound_queue (sender, recipient, body, state, lease_node, lease_instance, lease_until) \
         VALUES ('app@sender.test', 'x@other.test', x'41', 'sending', 'node-o', 'another-process', '2999-01-01 00:00:00.000')",
    );
    let lease = "SELECT state || ' ' || lease_node || ' ' || lease_instance || ' ' || lease_until FROM outbound_queue";
    let held = ["sending node-o another-process 2999-01-01 00:00:00.000"];
    // Two heartbeats later it is not renewed (that would shorten it to now + 4 s) ...
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(store.column(lease), held);
    // ... and a clean stop does not return it to the queue.
    assert!(relay.stop());
    assert_eq!(store.column(lease), held);
}

/// SIGTERM while deliveries and their records are under way: every message the
/// destination got is recorded `delivered` before the relay returns its leases
/// (the outcomes are written on a second connection, beside the claims; returning
/// a row whose outcome was still being written would send it again), nothing is
/// left `sending`, and a second run delivers the rest, each recipient once.
fn stopped_mid_run_records_before_it_returns_leases(store: &Store) {
    let dest = Dest::start(&[]);
    let config = FAST.replace(
        "[relay]\n",
        "[relay]\nbatch_size = 10\nmax_in_flight = 40\n",
    ) + "\n[domains.default]\nmessages_per_second = 40\n";
    let args: Vec<String> = (0..10)
        .flat_map(|d| ["--transport".to_owned(), format!("d{d}.test={}", dest.addr)])
        .chain(["--threads".to_owned(), "2".to_owned()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let expected: Vec<String> = (0..60)
        .flat_map(|batch| (0..10).map(move |d| format!("s{batch}@d{d}.test")))
        .collect();
    // Any command opens (and so creates) the SQLite store.
    assert!(outbound(store, &["stats"], None).status.success());
    enqueue_distinct(store, &expected);
    let mut relay = Relay::start(store, &config, &args);
    wait_for("100 deliveries", Duration::from_secs(60), || {
        dest.recipients().len() >= 100
    });
    assert!(relay.stop(), "clean exit on SIGTERM");
    let mut got = dest.recipients();
    got.sort();
    assert!(got.len() < expected.len(), "stopped before the end");
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_queue WHERE state = 'sending'"),
        0
    );
    let mut recorded = store.column(
        "SELECT recipient FROM outbound_queue WHERE state = 'delivered' ORDER BY recipient",
    );
    recorded.sort();
    assert_eq!(
        recorded, got,
        "delivered at the destination == recorded delivered"
    );
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_queue WHERE state = 'queued'"),
        i64::try_from(expected.len() - got.len()).unwrap()
    );

    let mut again = Relay::start(store, &config, &args);
    store.wait_settled(&["delivered"], Duration::from_secs(90));
    assert!(again.stop());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in dest.recipients() {
        *seen.entry(r).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), expected.len());
    // One log row per delivery: none recorded twice, none lost.
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_log WHERE outcome = 'delivered'"),
        i64::try_from(expected.len()).unwrap()
    );
}

#[test]
fn a_relay_stopped_mid_run_records_every_delivery_before_returning_its_leases_mariadb() {
    stopped_mid_run_records_before_it_returns_leases(&Store::mariadb());
}

#[test]
fn a_relay_stopped_mid_run_records_every_delivery_before_returning_its_leases_sqlite() {
    stopped_mid_run_records_before_it_returns_leases(&Store::sqlite());
}
