//! Routing through a real DNS server: MX preference and fallback, implicit MX, null
//! MX (RFC 7505), non-existent domains and DNS failures.

use std::time::Duration;

use serde_json::json;

use crate::support::{Dest, Dns, FAST, Relay, Store, enqueue, free_port, message};

#[test]
fn mx_preference_fallback_implicit_and_null_mx() {
    // Every destination listens on the same port on its own loopback address, as
    // real MX hosts all listen on port 25.
    let port = free_port();
    let zone = json!({"ttl": 5, "records": [
        // pref.test: both hosts up; the preferred one (10) takes the mail.
        {"name": "pref.test", "type": "MX", "preference": 20, "exchange": "backup.pref.test"},
        {"name": "pref.test", "type": "MX", "preference": 10, "exchange": "primary.pref.test"},
        {"name": "primary.pref.test", "type": "A", "address": "127.0.0.2"},
        {"name": "backup.pref.test", "type": "A", "address": "127.0.0.3"},
        // fallback.test: the preferred host is down, the next one takes the mail.
        {"name": "fallback.test", "type": "MX", "preference": 5, "exchange": "dead.fallback.test"},
        {"name": "fallback.test", "type": "MX", "preference": 50, "exchange": "alive.fallback.test"},
        {"name": "dead.fallback.test", "type": "A", "address": "127.0.0.9"},
        {"name": "alive.fallback.test", "type": "A", "address": "127.0.0.3"},
        // implicit.test: no MX at all, only an address: the domain is its own MX.
        {"name": "implicit.test", "type": "A", "address": "127.0.0.4"},
        // nullmx.test: "MX 0 ." — accepts no mail.
        {"name": "nullmx.test", "type": "MX", "preference": 0, "exchange": "."},
        // servfail.test: DNS is broken right now.
        {"name": "servfail.test", "type": "SERVFAIL"},
    ]});
    let dns = Dns::start(&zone);
    let primary = Dest::start_on("127.0.0.2", port, &[]);
    let backup = Dest::start_on("127.0.0.3", port, &[]);
    let implicit = Dest::start_on("127.0.0.4", port, &[]);
    let store = Store::sqlite();
    for rcpt in [
        "a@pref.test",
        "b@fallback.test",
        "c@implicit.test",
        "d@nullmx.test",
        "e@nxdomain.test",
        "f@servfail.test",
    ] {
        enqueue(&store, "app@sender.test", &[rcpt], &message(rcpt));
    }
    let config = FAST.replace("[delivery]\n", &format!("[delivery]\nport = {port}\n"));
    let relay = Relay::start(&store, &config, &["--resolver", &dns.addr.to_string()]);
    wait_for_states(
        &store,
        &[
            ("a@pref.test", "delivered"),
            ("b@fallback.test", "delivered"),
            ("c@implicit.test", "delivered"),
            ("d@nullmx.test", "failed"),
            ("e@nxdomain.test", "failed"),
            ("f@servfail.test", "deferred"),
        ],
    );
    assert_eq!(primary.recipients(), ["a@pref.test"]);
    assert_eq!(backup.recipients(), ["b@fallback.test"]);
    assert_eq!(implicit.recipients(), ["c@implicit.test"]);
    let row = |r: &str, col: &str| {
        store
            .column(&format!(
                "SELECT {col} FROM outbound_queue WHERE recipient = '{r}'"
            ))
            .remove(0)
    };
    assert_eq!(
        row("a@pref.test", "last_mx"),
        format!("primary.pref.test[127.0.0.2]:{port}")
    );
    assert_eq!(
        row("b@fallback.test", "last_mx"),
        format!("alive.fallback.test[127.0.0.3]:{port}")
    );
    assert_eq!(
        row("c@implicit.test", "last_mx"),
        format!("implicit.test[127.0.0.4]:{port}")
    );
    assert_eq!(row("d@nullmx.test", "last_status"), "5.1.10");
    assert!(row("d@nullmx.test", "last_text").contains("null MX"));
    assert_eq!(row("e@nxdomain.test", "last_status"), "5.1.2");
    assert!(row("e@nxdomain.test", "last_text").contains("NXDOMAIN"));
    assert_eq!(row("f@servfail.test", "last_status"), "4.4.3");
    // The dead preferred host was tried first, and its failure is why the backup
    // was used: the relay's log shows the refused connection.
    assert!(relay.log().contains("127.0.0.9"), "{}", relay.log());
}

fn wait_for_states(store: &Store, want: &[(&str, &str)]) {
    crate::support::wait_for("the expected states", Duration::from_secs(30), || {
        want.iter().all(|(r, s)| store.state(r) == *s)
    });
}
