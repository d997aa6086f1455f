//! smtpd's cache on a three-master Redis Cluster (`test_support::redis_cluster`): one
//! test that starts the cluster once and runs the scenarios in order, each ending in
//! exact counts, printed and asserted.
//!
//! - cache mode: every acknowledged message is stored in MariaDB and cached (body
//!   key, inbox list) across the slots of all three masters, and the `PUBLISH` of an
//!   arrival reaches a subscriber on another node;
//! - the per-IP connection rate is one limit over two smtpd nodes, through the
//!   cluster;
//! - a master SIGKILLed mid-load: cache mode answers 250 throughout, nothing lost in
//!   the database, no panic, and the cache misses are exactly the keys of the dead
//!   master (the others' writes go on: the backoff is per master); Guerrilla mode
//!   (bodies in Redis) answers 451 4.3.0 for what it cannot write and stores exactly
//!   what it acked.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::redis_cluster::RedisCluster;

use crate::faults::{Tally, load};
use crate::support::services::Mariadb;
use crate::support::{Opts, Server, simple_message};

pub(crate) fn server(db: &Mariadb, cluster: &RedisCluster, extra: &str, migrate: bool) -> Server {
    let toml = format!(
        "[redis]\nurl = \"{}\"\nttl_secs = 600\ninbox_max = 1000\n{extra}\n",
        cluster.url()
    );
    let opts = Opts::config(&toml).store(&db.url());
    Server::start_with(if migrate { opts.arg("--migrate") } else { opts })
}

/// Whether the body of `hash` is in the cluster (a key on a dead master is not).
fn cached(conn: &mut redis::cluster::ClusterConnection, hash: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("smtpd:mail:{hash}"))
        .query::<i64>(conn)
        .is_ok_and(|n| n == 1)
}

fn stored(db: &Mariadb) -> BTreeSet<String> {
    db.column("SELECT hash FROM new_mail").into_iter().collect()
}

/// Cache mode: `messages` messages to `recipients` recipients through `server`,
/// while a subscriber on node 2 listens: acked == stored == cached, one inbox entry
/// each, bodies on all three masters, and the subscriber hears an arrival (whichever
/// node the committer's `PUBLISH` went to).
pub(crate) fn caches_every_message(
    db: &Mariadb,
    cluster: &RedisCluster,
    server: &Server,
    messages: usize,
    recipients: usize,
) {
    let mut sub_conn = cluster.nodes[2].conn();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.psubscribe("smtpd:new:*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = server.client();
    c.ehlo("client.example");
    let mut acked = BTreeSet::new();
    for n in 0..messages {
        let rcpt = format!("r{}@example.com", n % recipients);
        acked.insert(c.deliver("s@example.org", &[&rcpt], &simple_message(&format!("m{n}"))));
    }
    let mut conn = cluster.conn();
    let in_cache = acked.iter().filter(|h| cached(&mut conn, h)).count();
    let inboxed: i64 = (0..recipients)
        .map(|r| {
            redis::cmd("LLEN")
                .arg(format!("smtpd:inbox:r{r}@example.com"))
                .query::<i64>(&mut conn)
                .unwrap()
        })
        .sum();
    let keys: Vec<String> = acked.iter().map(|h| format!("smtpd:mail:{h}")).collect();
    let masters: BTreeSet<usize> = cluster.masters_of(&keys).into_iter().collect();
    println!(
        "cache mode ({}): acked {} stored {} cached {in_cache} inbox entries {inboxed} masters used {}",
        cluster.url().split("://").next().unwrap_or_default(),
        acked.len(),
        stored(db).len(),
        masters.len()
    );
    assert_eq!(acked.len(), messages);
    assert_eq!(stored(db), acked, "acked == stored");
    assert_eq!(in_cache, messages, "acked == cached");
    assert_eq!(inboxed, messages as i64);
    assert_eq!(masters.len(), 3, "the bodies live on all three masters");
    let msg = pubsub.get_message().unwrap();
    assert!(msg.get_channel_name().starts_with("smtpd:new:r"));
    assert!(acked.contains(&msg.get_payload::<String>().unwrap()));
}

#[test]
fn smtpd_on_a_redis_cluster_caches_what_it_stores_and_survives_a_dead_master() {
    let started = Instant::now();
    let db = Mariadb::start();
    let mut cluster = RedisCluster::start();
    let a = server(&db, &cluster, "", true);

    // 1. Cache mode: 60 messages to 20 recipients (keys spread over all slots).
    caches_every_message(&db, &cluster, &a, 60, 20);

    // 2. The per-IP connection rate over two nodes, through the cluster.
    let limited = "[limits]\nexempt_loopback = false\nmax_connection_rate_per_ip = 4\n";
    let ra = server(&db, &cluster, limited, false);
    let rb = server(&db, &cluster, limited, false);
    let r = crate::hostile::fifth_connection_over_two_nodes(&ra, &rb);
    println!(
        "rate: 2 connections on each node, the 5th answered {}",
        r.code
    );
    r.assert(421, "4.7.0");
    drop((ra, rb));

    // 3. A master SIGKILLed mid-load, cache mode (a) and Guerrilla mode (g).
    let g = server(&db, &cluster, "mode = \"guerrilla\"", false);
    let (ta, tg) = (
        Arc::new(Mutex::new(Tally::default())),
        Arc::new(Mutex::new(Tally::default())),
    );
    let wait = Duration::from_secs(15);
    let mut clients = load(a.addr, 2, Duration::from_secs(6), wait, Arc::clone(&ta));
    clients.extend(load(
        g.addr,
        2,
        Duration::from_secs(6),
        wait,
        Arc::clone(&tg),
    ));
    std::thread::sleep(Duration::from_secs(2));
    cluster.kill(1);
    for t in clients {
        t.join().unwrap();
    }
    let (ta, tg) = (ta.lock().unwrap(), tg.lock().unwrap());
    let all = stored(&db);
    let guerrilla_rows: BTreeSet<String> = db
        .column("SELECT hash FROM new_mail WHERE body = 'redis'")
        .into_iter()
        .collect();
    let mut conn = cluster.conn();
    // Each miss with the master of its key: the dead one's keys are lost (no
    // persistence) or were never written; a live master's key must be there.
    let (mut dead_misses, mut live_misses, mut on_dead) = (0, 0, 0);
    let keys: Vec<String> = ta.acked.iter().map(|h| format!("smtpd:mail:{h}")).collect();
    for (h, master) in ta.acked.iter().zip(cluster.masters_of(&keys)) {
        let dead = master == 1;
        on_dead += usize::from(dead);
        if !cached(&mut conn, h) {
            if dead {
                dead_misses += 1;
            } else {
                live_misses += 1;
            }
        }
    }
    println!(
        "master killed, cache mode: acked {} 451 {} other {:?} stored {} cache misses {} \
         (dead master's keys {dead_misses} of {on_dead}, live masters' keys {live_misses} of {})",
        ta.acked.len(),
        ta.temp_failures,
        ta.other,
        ta.acked.iter().filter(|h| all.contains(*h)).count(),
        dead_misses + live_misses,
        ta.acked.len() - on_dead
    );
    println!(
        "master killed, guerrilla: acked {} 451 {} other {:?} stored {}",
        tg.acked.len(),
        tg.temp_failures,
        tg.other,
        guerrilla_rows.len()
    );
    assert!(ta.other.is_empty() && tg.other.is_empty());
    assert_eq!(
        ta.temp_failures, 0,
        "cache mode never refuses for the cache"
    );
    assert!(
        ta.acked.iter().all(|h| all.contains(h)),
        "nothing acked lost"
    );
    assert_eq!(dead_misses, on_dead, "the dead master's keys are misses");
    assert!(on_dead > 0);
    assert_eq!(
        live_misses, 0,
        "a dead master does not stop the cache writes to the others"
    );
    assert!(
        tg.temp_failures > 0,
        "guerrilla mode refuses what it cannot keep"
    );
    assert!(!tg.acked.is_empty());
    assert_eq!(guerrilla_rows, tg.acked, "guerrilla: stored == acked");
    // Still serving, and no panic.
    let mut c = a.client();
    c.ehlo("client.example");
    let id = c.deliver(
        "s@example.org",
        &["after@example.com"],
        &simple_message("after"),
    );
    assert!(stored(&db).contains(&id));
    for s in [&a, &g] {
        assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
    }
    println!("redis cluster suite: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(120));
}
