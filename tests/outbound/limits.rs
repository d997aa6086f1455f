//! Per-domain limits, measured where they matter: at the destination.

use std::time::Duration;

use crate::support::{Dest, FAST, Relay, Store, enqueue, message};
use test_support::services::Redis;

/// Destination arrival times (seconds), sorted.
fn arrivals(dest: &Dest) -> Vec<f64> {
    let mut t: Vec<f64> = dest
        .messages()
        .iter()
        .map(|m| m["time"].as_f64().unwrap())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// The most arrivals within any one-second window.
fn max_per_second(times: &[f64]) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t < times[i] + 1.0)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn per_domain_rate_and_connection_limits_are_honoured() {
    let store = Store::sqlite();
    let slow = Dest::start(&[]);
    let narrow = Dest::start(&[]);
    let free = Dest::start(&[]);
    for i in 0..15 {
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("r{i}@slow.test")],
            &message(&format!("slow {i}")),
        );
    }
    for i in 0..30 {
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("r{i}@narrow.test")],
            &message(&format!("narrow {i}")),
        );
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("r{i}@free.test")],
            &message(&format!("free {i}")),
        );
    }
    let config = format!(
        "{FAST}\n[domains.\"slow.test\"]\nmessages_per_second = 5\n[domains.\"narrow.test\"]\nmax_connections = 2\n"
    );
    let _relay = Relay::start(
        &store,
        &config,
        &[
            "--transport",
            &format!("slow.test={}", slow.addr),
            "--transport",
            &format!("narrow.test={}", narrow.addr),
            "--transport",
            &format!("free.test={}", free.addr),
        ],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(40));
    // 15 messages at 5/s: the first at once, then one every 200 ms.
    let times = arrivals(&slow);
    assert_eq!(times.len(), 15);
    let span = times[14] - times[0];
    assert!(span >= 2.6, "15 messages at 5/s took only {span:.2}s");
    assert!(max_per_second(&times) <= 6, "{times:?}");
    // The unlimited domain is not slowed down by its neighbour.
    let free_times = arrivals(&free);
    assert_eq!(free_times.len(), 30);
    assert!(
        free_times[29] - free_times[0] < span,
        "free.test took {:.2}s",
        free_times[29] - free_times[0]
    );
    // narrow.test never saw more than 2 connections at once.
    assert_eq!(narrow.messages().len(), 30);
    assert!(narrow.peak() <= 2, "peak {} connections", narrow.peak());
    assert!(narrow.peak() >= 1);
}

#[test]
fn rate_limit_is_shared_by_nodes_through_redis() {
    let redis = Redis::start();
    shared_by_two_nodes(&redis.url());
}

/// The same through a three-master Redis Cluster (`redis+cluster://…`), started once
/// for this one test.
#[test]
fn rate_limit_is_shared_by_nodes_through_a_redis_cluster() {
    let cluster = test_support::redis_cluster::RedisCluster::start();
    shared_by_two_nodes(&cluster.url());
    // The limiter's keys live in the cluster.
    let keys: i64 = redis::cmd("EXISTS")
        .arg("outbound:rate:shared.test")
        .query(&mut cluster.conn())
        .unwrap();
    assert_eq!(keys, 1);
}

/// The same through a Redis Cluster that speaks TLS only (`rediss+cluster://…?ssl-ca=`).
#[test]
fn rate_limit_is_shared_by_nodes_through_a_tls_redis_cluster() {
    let ca = test_support::ca::TestCa::new("relay cluster CA");
    let cluster = test_support::redis_cluster::RedisCluster::start_tls(&ca);
    assert!(cluster.url().starts_with("rediss+cluster://"));
    shared_by_two_nodes(&cluster.url());
    let keys: i64 = redis::cmd("EXISTS")
        .arg("outbound:rate:shared.test")
        .query(&mut cluster.conn())
        .unwrap();
    assert_eq!(keys, 1);
}

/// Two relay nodes with `--redis redis_url`, 24 messages to a domain limited to 4/s:
/// both nodes send, and together they keep to the rate.
fn shared_by_two_nodes(redis_url: &str) {
    let store = Store::mariadb();
    // Each node holds at most 12 of the 24 messages at a time, so both take part.
    let dest = Dest::start(&[]);
    for i in 0..24 {
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("r{i}@shared.test")],
            &message(&format!("shared {i}")),
        );
    }
    let config = FAST.replace("[relay]\n", "[relay]\nmax_in_flight = 12\n")
        + "\n[domains.\"shared.test\"]\nmessages_per_second = 4\n";
    let args = |node: &'static str| {
        vec![
            "--transport".to_owned(),
            format!("shared.test={}", dest.addr),
            "--redis".to_owned(),
            redis_url.to_owned(),
            "--node-id".to_owned(),
            node.to_owned(),
        ]
    };
    let a_args = args("node-a");
    let b_args = args("node-b");
    let _a = Relay::start(
        &store,
        &config,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let _b = Relay::start(
        &store,
        &config,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    store.wait_settled(&["delivered"], Duration::from_secs(60));
    // Both nodes sent, and together they kept to 4 per second.
    let nodes = store.column("SELECT DISTINCT node_id FROM outbound_log ORDER BY node_id");
    assert_eq!(nodes, ["node-a", "node-b"]);
    let times = arrivals(&dest);
    assert_eq!(times.len(), 24);
    let span = times[23] - times[0];
    assert!(
        span >= 4.0,
        "24 messages at 4/s shared took only {span:.2}s"
    );
    assert!(max_per_second(&times) <= 5, "{times:?}");
    println!(
        "shared rate 4/s over two relays ({redis_url}): 24 delivered in {span:.2}s, at most {} in one second",
        max_per_second(&times)
    );
}

/// Each recipient's arrival time (a message to n recipients counts n times), sorted.
fn recipient_arrivals(dest: &Dest) -> Vec<f64> {
    let mut t: Vec<f64> = dest
        .messages()
        .iter()
        .flat_map(|m| {
            let n = m["rcpt_tos"].as_array().map_or(0, Vec::len);
            std::iter::repeat_n(m["time"].as_f64().unwrap(), n)
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// The most recipients any one transaction carried.
fn largest_transaction(dest: &Dest) -> usize {
    dest.messages()
        .iter()
        .map(|m| m["rcpt_tos"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0)
}

#[test]
fn the_rate_limit_counts_recipients_not_transactions() {
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    // One message to 8 recipients of a domain limited to 2 per second: providers
    // count recipients, so it takes 3 s (2 at once, then 2 a second), not one
    // transaction at once.
    let to: Vec<String> = (0..8).map(|i| format!("r{i}@counted.test")).collect();
    let to_refs: Vec<&str> = to.iter().map(String::as_str).collect();
    enqueue(&store, "app@sender.test", &to_refs, &message("eight"));
    let config = format!("{FAST}\n[domains.\"counted.test\"]\nmessages_per_second = 2\n");
    let _relay = Relay::start(
        &store,
        &config,
        &["--transport", &format!("counted.test={}", dest.addr)],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(40));
    let times = recipient_arrivals(&dest);
    assert_eq!(times.len(), 8);
    let span = times[7] - times[0];
    assert!(span >= 2.7, "8 recipients at 2/s took only {span:.2}s");
    // A transaction never holds more recipients than one second's worth.
    assert!(largest_transaction(&dest) <= 2, "{:?}", dest.messages());
    assert!(max_per_second(&times) <= 4, "{times:?}");
}

#[test]
fn the_shared_rate_limit_counts_recipients_too() {
    let store = Store::sqlite();
    crate::support::outbound(&store, &["stats"], None); // creates the schema
    let redis = Redis::start();
    let dest = Dest::start(&[]);
    let config = FAST.replace("[relay]\n", "[relay]\nmax_in_flight = 6\n")
        + "\n[domains.\"shared.test\"]\nmessages_per_second = 2\n";
    let args = |node: &'static str| {
        vec![
            "--transport".to_owned(),
            format!("shared.test={}", dest.addr),
            "--redis".to_owned(),
            redis.url(),
            "--node-id".to_owned(),
            node.to_owned(),
        ]
    };
    let a_args = args("node-a");
    let b_args = args("node-b");
    let _a = Relay::start(
        &store,
        &config,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let _b = Relay::start(
        &store,
        &config,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    crate::support::wait_for("both heartbeats", Duration::from_secs(30), || {
        store.count("SELECT COUNT(*) FROM outbound_nodes") == 2
    });
    // Two messages of 6 recipients each, queued at once: each node takes one (at
    // most 6 rows in flight), and together they send 12 recipients at 2/s.
    let rows: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "('app@sender.test', 'r{i}@shared.test', '{}')",
                message(&format!("batch {}", i / 6))
            )
        })
        .collect();
    store.exec(&format!(
        "INSERT INTO outbound_queue (sender, recipient, body) VALUES {}",
        rows.join(", ")
    ));
    store.wait_settled(&["delivered"], Duration::from_secs(60));
    let nodes = store.column("SELECT DISTINCT node_id FROM outbound_log ORDER BY node_id");
    assert_eq!(nodes, ["node-a", "node-b"]);
    let times = recipient_arrivals(&dest);
    assert_eq!(times.len(), 12);
    let span = times[11] - times[0];
    assert!(
        span >= 4.5,
        "12 recipients at 2/s shared took only {span:.2}s"
    );
    assert!(largest_transaction(&dest) <= 2, "{:?}", dest.messages());
}

/// Redis down when the relay starts is not a configuration error: the relay starts,
/// delivers on its local limit, and shares the limit through Redis once Redis is
/// back (it reconnects, within its backoff).
#[test]
fn the_relay_starts_with_redis_down_and_shares_the_limit_once_it_is_back() {
    let mut redis = Redis::start();
    redis.stop();
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    let config = format!("{FAST}\n[domains.\"back.test\"]\nmessages_per_second = 20\n");
    // Queued before the relay starts, as in the other tests here (the CLI does not
    // race the relay on a new SQLite file).
    for i in 0..3 {
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("a{i}@back.test")],
            &message(&format!("down {i}")),
        );
    }
    let relay = Relay::start(
        &store,
        &config,
        &[
            "--transport",
            &format!("back.test={}", dest.addr),
            "--redis",
            &redis.url(),
        ],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    assert_eq!(dest.messages().len(), 3, "delivered with Redis down");
    assert!(
        relay.log().contains("Redis unreachable at start"),
        "{}",
        relay.log()
    );
    redis.start_again();
    // One message at a time until the limiter's key shows up in Redis (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut sent = 3;
    loop {
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("b{sent}@back.test")],
            &message(&format!("back {sent}")),
        );
        sent += 1;
        store.wait_settled(&["delivered"], Duration::from_secs(30));
        let shared: i64 = redis::cmd("EXISTS")
            .arg("outbound:rate:back.test")
            .query(&mut redis.conn())
            .unwrap();
        if shared == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never used Redis after it came back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "Redis back: the shared limit used after {} messages",
        sent - 3
    );
    assert_eq!(dest.messages().len(), sent, "every message delivered once");
}
