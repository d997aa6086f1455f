//! smtpd's cache on a three-master Redis Cluster that speaks TLS only
//! (`rediss+cluster://…?ssl-ca=`, `test_support::redis_cluster::RedisCluster::start_tls`:
//! `port 0`, `tls-port`, `tls-cluster yes`), one test with the cluster started once:
//!
//! - cache mode: every acknowledged message is stored and cached (body key, inbox
//!   list) across all three masters, and the arrival's `PUBLISH` reaches a
//!   subscriber on another node, all over TLS;
//! - a CA that did not sign the nodes' certificates fails the start (exit 2, naming
//!   `redis.url`), as for one server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use test_support::ca::TestCa;
use test_support::redis_cluster::RedisCluster;

use crate::redis_cluster::{cached, server, stored};
use crate::support::services::Mariadb;
use crate::support::{run_smtpd_to_exit, simple_message};

#[test]
fn smtpd_caches_on_a_tls_only_redis_cluster_and_a_wrong_ca_fails_the_start() {
    let started = Instant::now();
    let ca = TestCa::new("redis cluster test CA");
    let db = Mariadb::start();
    let cluster = RedisCluster::start_tls(&ca);
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let a = server(&db, &cluster, "", true);

    let mut sub_conn = cluster.nodes[2].conn();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.psubscribe("smtpd:new:*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = a.client();
    c.ehlo("client.example");
    let mut acked = BTreeSet::new();
    for n in 0..30 {
        let rcpt = format!("t{}@example.com", n % 10);
        acked.insert(c.deliver(
            "s@example.org",
            &[&rcpt],
            &simple_message(&format!("tls {n}")),
        ));
    }
    let mut conn = cluster.conn();
    let in_cache = acked.iter().filter(|h| cached(&mut conn, h)).count();
    let inboxed: i64 = (0..10)
        .map(|r| {
            redis::cmd("LLEN")
                .arg(format!("smtpd:inbox:t{r}@example.com"))
                .query::<i64>(&mut conn)
                .unwrap()
        })
        .sum();
    let keys: Vec<String> = acked.iter().map(|h| format!("smtpd:mail:{h}")).collect();
    let masters: BTreeSet<usize> = cluster.masters_of(&keys).into_iter().collect();
    println!(
        "TLS cluster, cache mode: acked {} stored {} cached {in_cache} inbox entries {inboxed} masters used {}",
        acked.len(),
        stored(&db).len(),
        masters.len()
    );
    assert_eq!(acked.len(), 30);
    assert_eq!(stored(&db), acked, "acked == stored");
    assert_eq!(in_cache, 30, "acked == cached");
    assert_eq!(inboxed, 30);
    assert_eq!(masters.len(), 3, "the bodies live on all three masters");
    let msg = pubsub.get_message().unwrap();
    assert!(msg.get_channel_name().starts_with("smtpd:new:t"));
    assert!(acked.contains(&msg.get_payload::<String>().unwrap()));
    drop(pubsub);

    // The same cluster with a CA that did not sign its certificates.
    let other = TestCa::new("not the cluster's CA");
    let wrong = cluster.url().replace(
        &ca.ca().display().to_string(),
        &other.ca().display().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--store",
        "sqlite:wrong-ca.sqlite",
        "--redis",
        &wrong,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(20));
    println!("TLS cluster, wrong CA: exit {code}: {}", stderr.trim());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("redis.url") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(!a.stderr().contains("panicked"), "{}", a.stderr());
    println!("TLS redis cluster suite: {:?}", started.elapsed());
}
