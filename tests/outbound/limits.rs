//! Per-domain limits, measured where they matter: at the destination.

use std::time::Duration;

use crate::services::Redis;
use crate::support::{Dest, FAST, Relay, Store, enqueue, message};

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
    let store = Store::mariadb();
    let redis = Redis::start();
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
}
