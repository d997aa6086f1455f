//! smtpd's cache on a three-master Redis Cluster that speaks TLS only
//! (`rediss+cluster://…?ssl-ca=`, `test_support::redis_cluster::RedisCluster::start_tls`:
//! `port 0`, `tls-port`, `tls-cluster yes`), one test with the cluster started once:
//!
//! - cache mode: every acknowledged message is stored and cached (body key, inbox
//!   list) across all three masters, and the arrival's `PUBLISH` reaches a
//!   subscriber on another node, all over TLS;
//! - a CA that did not sign the nodes' certificates fails the start (exit 2, naming
//!   `redis.url`), as for one server.

use std::time::{Duration, Instant};

use test_support::ca::TestCa;
use test_support::redis_cluster::RedisCluster;

use crate::redis_cluster::{caches_every_message, server};
use crate::support::run_smtpd_to_exit;
use crate::support::services::Mariadb;

#[test]
fn smtpd_caches_on_a_tls_only_redis_cluster_and_a_wrong_ca_fails_the_start() {
    let started = Instant::now();
    let ca = TestCa::new("redis cluster test CA");
    let db = Mariadb::start();
    let cluster = RedisCluster::start_tls(&ca);
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let a = server(&db, &cluster, "", true);

    caches_every_message(&db, &cluster, &a, 30, 10);

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
