//! The relay's queue over TLS: a MariaDB that refuses plaintext TCP
//! (`require_secure_transport=ON`) with a private CA's certificate. The relay
//! delivers from it; a CA that does not verify the server fails the start naming
//! the setting, for the store and for the shared rate limit's TLS Redis (exit 2,
//! `redis.url`).

use std::time::Duration;

use test_support::ca::TestCa;

use crate::support::{Dest, FAST, Relay, Store, enqueue, message};
use test_support::services::Redis;

#[test]
fn the_relay_delivers_from_mariadb_over_tls_and_a_wrong_ca_fails_the_start() {
    let ca = TestCa::new("relay test CA");
    let store = Store::mariadb_tls(&ca);
    let Store::Mariadb(db) = &store else {
        unreachable!()
    };
    let url = store.url();
    assert!(url.contains("ssl-mode=verify_identity"), "{url}");
    let dest = Dest::start(&[]);
    for i in 0..5 {
        enqueue(
            &store,
            "app@sender.test",
            &[&format!("r{i}@tls.test")],
            &message(&format!("tls {i}")),
        );
    }
    let before = db.count(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SSL_ACCEPTS'",
    );
    let _relay = Relay::start(
        &store,
        FAST,
        &["--transport", &format!("tls.test={}", dest.addr)],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(60));
    assert_eq!(dest.messages().len(), 5);
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_queue WHERE state = 'delivered'"),
        5
    );
    let after = db.count(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SSL_ACCEPTS'",
    );
    println!(
        "relay over TLS: 5 delivered, {} TLS sessions",
        after - before
    );
    assert!(after > before);

    // Another CA: the relay's CLI cannot open the store, and says which setting.
    let other = TestCa::new("not the server's CA");
    let wrong = format!(
        "{}?ssl-mode=verify_ca&ssl-ca={}",
        db.plain_url(),
        other.ca().display()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(["--store", &wrong, "stats"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("wrong CA: {}", stderr.trim());
    assert!(!out.status.success());
    assert!(stderr.contains("ssl-mode/ssl-ca"), "{stderr}");
    assert!(!stderr.contains(":pw@"), "{stderr}");

    // A TLS-only Redis for the shared rate limit, with the same wrong CA: the relay
    // does not start on per-node limits, it refuses to start (exit 2).
    let redis = Redis::start_tls(&ca);
    let mut relay = Relay::start(&store, FAST, &["--redis", &redis.tls_url(&other.ca())]);
    let status = relay.wait_exit(Duration::from_secs(20));
    let log = relay.log();
    println!("relay, wrong Redis CA: {status:?}: {}", log.trim());
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("redis.url") && log.contains("UnknownIssuer"),
        "{log}"
    );
}
