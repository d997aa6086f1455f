//! Several relay nodes on one MariaDB queue: no message sent twice, and a node that
//! dies has its leases taken over.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use crate::support::{Dest, FAST, Relay, Store, enqueue, message, outbound, wait_for};

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
    let rows: Vec<String> = expected
        .iter()
        .map(|r| {
            format!(
                "('app@sender.test', '{r}', '{}')",
                message(r).replace('\'', "''")
            )
        })
        .collect();
    store.exec(&format!(
        "INSERT INTO outbound_queue (sender, recipient, body) VALUES {}",
        rows.join(", ")
    ));
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
