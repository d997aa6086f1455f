//! The relay on a three-node MariaDB Galera cluster (`test_support::galera`): one
//! test that starts the cluster once and runs the scenarios in order, each ending in
//! exact counts (queued, delivered, duplicates, lost), printed and asserted.
//!
//! Galera locks only on the node that runs a statement, so two relays on different
//! nodes claim the same rows; the one that commits second fails certification (1213)
//! and claims again. Exactly-once delivery here rests on that and on the fenced
//! outcome UPDATE, not on `SKIP LOCKED`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

use test_support::galera::Galera;

use crate::support::{Dest, FAST, Relay, Store, enqueue_distinct, outbound, wait_for};

/// `--transport` for every test domain, to `addr`.
fn transports(domains: &[&str], addr: &str) -> Vec<String> {
    domains
        .iter()
        .flat_map(|d| ["--transport".to_owned(), format!("{d}={addr}")])
        .collect()
}

fn start(store: &Store, config: &str, mut args: Vec<String>, node: &str) -> Relay {
    args.extend(["--node-id".to_owned(), node.to_owned()]);
    Relay::start(
        store,
        config,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// (delivered once, duplicates, lost) of `expected` at `dest`.
fn tally(dest: &Dest, expected: &[String]) -> (usize, usize, usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in dest.recipients() {
        *seen.entry(r).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n.saturating_sub(1)).sum();
    let lost = expected.iter().filter(|r| !seen.contains_key(*r)).count();
    (seen.len(), duplicates, lost)
}

#[test]
fn relays_on_a_galera_cluster_deliver_each_recipient_once() {
    let started = Instant::now();
    let cluster = Rc::new(Galera::start());
    let on = |i| Store::Galera(Rc::clone(&cluster), i);
    let (db0, db1, db2) = (on(0), on(1), on(2));
    let out = outbound(&db0, &["--migrate", "stats"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Applied on the first node; the others apply the replicated rows a moment later.
    let versions = db0.count("SELECT COUNT(*) FROM schema_migrations");
    for db in [&db1, &db2] {
        wait_for("the schema on every node", Duration::from_secs(30), || {
            db.count("SELECT COUNT(*) FROM schema_migrations") == versions
        });
    }
    println!("galera: cluster up and migrated in {:?}", started.elapsed());

    // -- Scenario 1: two relays on different Galera nodes share one queue. ----------
    let t = Instant::now();
    let dest = Dest::start(&[]);
    let domains: Vec<String> = (0..10).map(|d| format!("d{d}.test")).collect();
    let domain_refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let config = FAST.replace(
        "[relay]\n",
        "[relay]\nbatch_size = 25\nmax_in_flight = 50\n",
    );
    let args = transports(&domain_refs, &dest.addr.to_string());
    let mut node_a = start(&db0, &config, args.clone(), "node-a");
    let mut node_b = start(&db1, &config, args, "node-b");
    wait_for("both heartbeats", Duration::from_secs(30), || {
        db2.count("SELECT COUNT(*) FROM outbound_nodes") == 2
    });
    let expected: Vec<String> = (0..60)
        .flat_map(|i| (0..10).map(move |d| format!("u{i}@d{d}.test")))
        .collect();
    // Queued through the third node: all three take part.
    enqueue_distinct(&db2, &expected);
    db2.wait_settled(&["delivered"], Duration::from_secs(120));
    let (delivered, duplicates, lost) = tally(&dest, &expected);
    let per_node = db2.column(
        "SELECT CONCAT(node_id, '=', COUNT(*)) FROM outbound_log GROUP BY node_id ORDER BY node_id",
    );
    let conflicts = [&node_a, &node_b]
        .iter()
        .map(|n| n.log().matches("claim conflicted").count())
        .sum::<usize>();
    println!(
        "galera scenario two-relays: queued={} delivered={delivered} duplicates={duplicates} \
         lost={lost} attempts={per_node:?} claim-conflicts-retried={conflicts} in {:?}",
        expected.len(),
        t.elapsed()
    );
    assert_eq!((delivered, duplicates, lost), (expected.len(), 0, 0));
    assert_eq!(per_node.len(), 2, "both relays took part: {per_node:?}");
    assert_eq!(
        db0.count("SELECT COUNT(*) FROM outbound_log"),
        i64::try_from(expected.len()).unwrap()
    );
    assert!(node_a.stop() && node_b.stop());

    // -- Scenario 2: a relay killed mid-batch; another on another node takes over. --
    let t = Instant::now();
    // node-c delivers into a black hole: accepted by the kernel, never answered.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let slow: Vec<String> = (0..20).map(|i| format!("s{i}@slow.test")).collect();
    enqueue_distinct(&db2, &slow);
    let mut node_c = start(
        &db0,
        FAST,
        transports(&["slow.test"], &hole.local_addr().unwrap().to_string()),
        "node-c",
    );
    wait_for("node-c to claim every row", Duration::from_secs(30), || {
        db1.count(
            "SELECT COUNT(*) FROM outbound_queue WHERE state = 'sending' AND lease_node = 'node-c'",
        ) == 20
    });
    node_c.kill();
    let dest2 = Dest::start(&[]);
    let node_d = start(
        &db1,
        FAST,
        transports(&["slow.test"], &dest2.addr.to_string()),
        "node-d",
    );
    db2.wait_settled(&["delivered"], Duration::from_secs(60));
    let (delivered, duplicates, lost) = tally(&dest2, &slow);
    let by =
        db2.column("SELECT DISTINCT node_id FROM outbound_log WHERE recipient LIKE '%@slow.test'");
    println!(
        "galera scenario relay-killed: queued={} delivered={delivered} duplicates={duplicates} \
         lost={lost} delivered-by={by:?} in {:?}",
        slow.len(),
        t.elapsed()
    );
    assert_eq!((delivered, duplicates, lost), (slow.len(), 0, 0));
    assert_eq!(by, ["node-d"]);
    assert!(
        node_d
            .log()
            .contains("took back rows whose lease had expired")
    );
    drop(node_d);
    drop(hole);
    println!("galera suite: {:?}", started.elapsed());
}
