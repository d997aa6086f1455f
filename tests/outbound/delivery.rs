//! Delivery, grouping and connection reuse, retries, failures, TLS, templates,
//! suppression and the command-line tools.

use std::time::Duration;

use crate::support::{Dest, FAST, Relay, Store, enqueue, message, outbound, wait_for};

fn transport(dest: &Dest, domain: &str) -> String {
    format!("{domain}={}", dest.addr)
}

#[test]
fn delivers_from_a_mariadb_queue_grouping_recipients_and_reusing_the_connection() {
    let store = Store::mariadb();
    let dest = Dest::start(&[]);
    let ids = enqueue(
        &store,
        "app@sender.test",
        &["ann@a.test", "bob@a.test"],
        &message("first"),
    );
    assert_eq!(ids.len(), 2);
    let config = FAST.replace("idle_timeout_secs = 2", "idle_timeout_secs = 30");
    let mut relay = Relay::start(
        &store,
        &config,
        &["--transport", &transport(&dest, "a.test"), "--threads", "2"],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    // The next message to the domain, a moment later, goes over the cached session.
    enqueue(
        &store,
        "app@sender.test",
        &["cy@a.test"],
        "Subject: second\r\n\r\n.leading dot\r\nend\r\n",
    );
    store.wait_settled(&["delivered"], Duration::from_secs(30));

    let msgs = dest.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    // One transaction for the two recipients sharing sender and body.
    let first = msgs
        .iter()
        .find(|m| m["data"].as_str().unwrap().contains("first"))
        .unwrap();
    let mut rcpts: Vec<&str> = first["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    rcpts.sort_unstable();
    assert_eq!(rcpts, ["ann@a.test", "bob@a.test"]);
    assert_eq!(first["mail_from"], "app@sender.test");
    assert_eq!(first["helo"], "relay.test");
    // Byte-exact after dot-stuffing and un-stuffing.
    let second = msgs
        .iter()
        .find(|m| m["data"].as_str().unwrap().contains("second"))
        .unwrap();
    assert_eq!(
        second["data"],
        "Subject: second\r\n\r\n.leading dot\r\nend\r\n"
    );
    // Both transactions on one connection (the cache); no STARTTLS offered here.
    assert_eq!(
        first["conn_id"], second["conn_id"],
        "connection reused: {msgs:?}"
    );
    assert_eq!(first["tls"], false);

    // The queue rows and the delivery log say exactly what happened.
    assert_eq!(
        store.column("SELECT CONCAT(state, ' ', attempts, ' ', last_code, ' ', last_status) FROM outbound_queue ORDER BY id"),
        ["delivered 1 250 2.0.0"; 3]
    );
    let mx = format!("a.test[127.0.0.1]:{}", dest.addr.port());
    assert_eq!(
        store.column("SELECT DISTINCT last_mx FROM outbound_queue"),
        std::slice::from_ref(&mx)
    );
    assert_eq!(
        store.column("SELECT CONCAT(queue_id, ' ', recipient, ' ', outcome, ' ', code, ' ', mx) FROM outbound_log ORDER BY queue_id"),
        [
            format!("1 ann@a.test delivered 250 {mx}"),
            format!("2 bob@a.test delivered 250 {mx}"),
            format!("3 cy@a.test delivered 250 {mx}"),
        ]
    );
    assert!(relay.stop(), "clean exit on SIGTERM");
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_queue WHERE finished_at IS NULL"),
        0
    );
}

#[test]
fn deferred_recipients_are_retried_and_delivered_once_the_destination_recovers() {
    let store = Store::sqlite();
    let port = crate::support::free_port();
    let busy = Dest::start_on(
        "127.0.0.1",
        port,
        &["--rule", "*@a.test=451 4.3.2 come back later"],
    );
    enqueue(
        &store,
        "app@sender.test",
        &["ann@a.test"],
        &message("retry"),
    );
    let _relay = Relay::start(
        &store,
        FAST,
        &["--transport", &format!("a.test=127.0.0.1:{port}")],
    );
    wait_for("the deferral", Duration::from_secs(20), || {
        store.state("ann@a.test") == "deferred"
    });
    assert_eq!(
        store.column(
            "SELECT last_code || ' ' || last_status || ' ' || last_text FROM outbound_queue"
        ),
        ["451 4.3.2 come back later"]
    );
    assert!(busy.messages().is_empty());
    // Deferred at least twice while the destination keeps deferring (first retry
    // after 1 s), each attempt logged.
    wait_for("a second deferral", Duration::from_secs(20), || {
        store.count("SELECT COUNT(*) FROM outbound_log WHERE outcome = 'deferred'") >= 2
    });
    drop(busy);
    let ok = Dest::start_on("127.0.0.1", port, &[]);
    wait_for("delivery after recovery", Duration::from_secs(20), || {
        store.state("ann@a.test") == "delivered"
    });
    assert_eq!(ok.recipients(), ["ann@a.test"]);
    let attempts = store.count("SELECT attempts FROM outbound_queue");
    let log = store.column("SELECT outcome FROM outbound_log ORDER BY id");
    assert_eq!(log.last().unwrap(), "delivered");
    assert_eq!(attempts as usize, log.len(), "{log:?}");
    assert!(
        log[..log.len() - 1].iter().all(|o| o == "deferred"),
        "{log:?}"
    );
    // The retries were spaced by the schedule (≥ 1 s), not hammered.
    let times = store.column("SELECT at FROM outbound_log ORDER BY id");
    let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    for w in times.windows(2) {
        assert!((t(&w[1]) - t(&w[0])).num_milliseconds() >= 900, "{times:?}");
    }
}

#[test]
fn permanent_failures_are_final_and_connection_failures_are_deferred() {
    let store = Store::sqlite();
    let dest = Dest::start(&[
        "--rule",
        "gone@a.test=550 5.1.1 no such user",
        "--rule",
        "full@a.test=452 4.2.2 mailbox full",
    ]);
    enqueue(
        &store,
        "app@sender.test",
        &["gone@a.test", "full@a.test", "ok@a.test"],
        &message("mixed"),
    );
    enqueue(
        &store,
        "app@sender.test",
        &["x@down.test"],
        &message("down"),
    );
    let closed = crate::support::free_port();
    let _relay = Relay::start(
        &store,
        FAST,
        &[
            "--transport",
            &transport(&dest, "a.test"),
            "--transport",
            &format!("down.test=127.0.0.1:{closed}"),
        ],
    );
    wait_for("outcomes", Duration::from_secs(20), || {
        store.state("gone@a.test") == "failed" && store.state("ok@a.test") == "delivered"
    });
    wait_for("deferrals", Duration::from_secs(20), || {
        store.state("full@a.test") == "deferred" && store.state("x@down.test") == "deferred"
    });
    assert_eq!(dest.recipients(), ["ok@a.test"]);
    assert_eq!(
        store.column("SELECT last_code || ' ' || last_status || ' ' || last_text FROM outbound_queue WHERE recipient = 'gone@a.test'"),
        ["550 5.1.1 no such user"]
    );
    let down = store.column("SELECT last_text FROM outbound_queue WHERE recipient = 'x@down.test'");
    assert!(down[0].contains("refused"), "{down:?}");
    // A failed recipient is never tried again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_log WHERE recipient = 'gone@a.test'"),
        1
    );
    assert!(store.count("SELECT COUNT(*) FROM outbound_log WHERE recipient = 'full@a.test'") >= 2);
}

#[test]
fn gives_up_after_the_retry_period() {
    let store = Store::sqlite();
    let dest = Dest::start(&["--rule", "*@a.test=421 4.4.5 too busy"]);
    enqueue(
        &store,
        "app@sender.test",
        &["late@a.test"],
        &message("late"),
    );
    let config = FAST.replace("give_up_secs = 3600", "give_up_secs = 3");
    let _relay = Relay::start(
        &store,
        &config,
        &["--transport", &transport(&dest, "a.test")],
    );
    wait_for("giving up", Duration::from_secs(20), || {
        store.state("late@a.test") == "failed"
    });
    let row = store.column("SELECT last_status || ' ' || last_text FROM outbound_queue");
    assert!(row[0].starts_with("4.4.7 gave up after "), "{row:?}");
    assert!(row[0].ends_with("too busy"), "{row:?}");
    assert!(store.count("SELECT attempts FROM outbound_queue") >= 2);
}

#[test]
fn starttls_is_used_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mx.a.test",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let store = Store::sqlite();
    let dest = Dest::start(&[
        "--starttls-cert",
        cert.to_str().unwrap(),
        "--starttls-key",
        key.to_str().unwrap(),
    ]);
    enqueue(
        &store,
        "app@sender.test",
        &["tls@a.test"],
        &message("secret"),
    );
    let _relay = Relay::start(&store, FAST, &["--transport", &transport(&dest, "a.test")]);
    store.wait_settled(&["delivered"], Duration::from_secs(20));
    let msgs = dest.messages();
    assert_eq!(msgs[0]["tls"], true, "{msgs:?}");
    assert_eq!(msgs[0]["helo"], "relay.test");
}

#[test]
fn templates_are_filled_per_recipient_with_mime_headers() {
    let store = Store::sqlite();
    outbound(&store, &["stats"], None); // creates the schema
    store.exec(
        "INSERT INTO outbound_templates (id, name, from_header, subject, text_body, html_body) VALUES \
         (7, 'welcome', 'News <news@sender.test>', 'Hello [UserName]', \
          'Hello [UserName], you have [Count] new messages. Café!', '<p>Hello <b>[UserName]</b></p>');
         INSERT INTO outbound_queue (sender, recipient, template_id, params) VALUES \
          ('news@sender.test', 'ann@a.test', 7, '{\"UserName\": \"Ann\", \"Count\": 3}'),
          ('news@sender.test', 'bob@a.test', 7, '{\"UserName\": \"Bob\\r\\nBcc: evil@x.test\", \"Count\": 1}'),
          ('news@sender.test', 'cy@a.test', 7, '{\"Count\": 1}');",
    );
    let dest = Dest::start(&[]);
    let _relay = Relay::start(&store, FAST, &["--transport", &transport(&dest, "a.test")]);
    store.wait_settled(&["delivered", "failed"], Duration::from_secs(20));
    // A recipient without a value for a tag is not sent "Hello [UserName]".
    assert_eq!(store.state("cy@a.test"), "failed");
    let text = store.column("SELECT last_text FROM outbound_queue WHERE recipient = 'cy@a.test'");
    assert!(text[0].contains("UserName"), "{text:?}");
    // Each message, parsed by Python's email package: per-recipient values, MIME
    // structure, the standard headers, and no injected header.
    let msgs = dest.messages();
    assert_eq!(msgs.len(), 2);
    for m in msgs {
        let rcpt = m["rcpt_tos"][0].as_str().unwrap().to_owned();
        let name = if rcpt.starts_with("ann") {
            "Ann"
        } else {
            "Bob"
        };
        let script = r#"
import email, email.policy, json, sys
msg = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
parts = [p for p in msg.walk() if not p.is_multipart()]
print(json.dumps({
    "subject": str(msg['Subject']), "to": str(msg['To']), "type": msg.get_content_type(),
    "date": bool(msg['Date']), "message_id": str(msg['Message-ID']), "mime": msg['MIME-Version'],
    "bcc": msg['Bcc'], "parts": [[p.get_content_type(), p.get_content()] for p in parts],
    "defects": [str(d) for p in msg.walk() for d in p.defects],
}))
"#;
        let out = crate::support::python(script, m["data"].as_str().unwrap());
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            parsed["subject"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Hello {name}")),
            "{out}"
        );
        assert_eq!(parsed["to"], rcpt.as_str());
        assert_eq!(parsed["type"], "multipart/alternative");
        assert_eq!(parsed["date"], true);
        assert!(
            parsed["message_id"]
                .as_str()
                .unwrap()
                .ends_with("@relay.test>"),
            "{out}"
        );
        assert_eq!(parsed["mime"], "1.0");
        assert_eq!(
            parsed["bcc"],
            serde_json::Value::Null,
            "header injection: {out}"
        );
        assert_eq!(parsed["defects"], serde_json::json!([]), "{out}");
        let parts = parsed["parts"].as_array().unwrap();
        assert_eq!(parts[0][0], "text/plain");
        let text = parts[0][1].as_str().unwrap();
        assert!(text.starts_with(&format!("Hello {name}")), "{out}");
        assert!(text.trim_end().ends_with("new messages. Café!"), "{out}");
        assert_eq!(parts[1][0], "text/html");
        assert!(
            parts[1][1]
                .as_str()
                .unwrap()
                .starts_with(&format!("<p>Hello <b>{name}")),
            "{out}"
        );
    }
}

#[test]
fn suppressed_addresses_are_never_sent_to() {
    let store = Store::sqlite();
    let out = outbound(
        &store,
        &["suppress", "add", "Gone@A.test", "--reason", "hard bounce"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8(outbound(&store, &["suppress", "list"], None).stdout).unwrap();
    assert!(list.starts_with("gone@a.test\tmanual\t"), "{list}");
    assert!(list.trim_end().ends_with("hard bounce"), "{list}");
    enqueue(
        &store,
        "app@sender.test",
        &["gone@a.test", "here@a.test"],
        &message("s"),
    );
    let dest = Dest::start(&[]);
    let _relay = Relay::start(&store, FAST, &["--transport", &transport(&dest, "a.test")]);
    store.wait_settled(&["delivered", "suppressed"], Duration::from_secs(20));
    assert_eq!(store.state("gone@a.test"), "suppressed");
    assert_eq!(dest.recipients(), ["here@a.test"]);
    assert_eq!(
        store.column(
            "SELECT outcome || ' ' || text FROM outbound_log WHERE recipient = 'gone@a.test'"
        ),
        ["suppressed address is on the suppression list"]
    );
    // Removing it lets the next message through.
    assert!(
        outbound(&store, &["suppress", "remove", "gone@a.test"], None)
            .status
            .success()
    );
    assert!(
        !outbound(&store, &["suppress", "remove", "gone@a.test"], None)
            .status
            .success()
    );
    enqueue(
        &store,
        "app@sender.test",
        &["gone@a.test"],
        &message("again"),
    );
    wait_for("delivery after removal", Duration::from_secs(20), || {
        store.state("gone@a.test") == "delivered"
    });
}

#[test]
fn cli_stats_nodes_and_errors() {
    let store = Store::sqlite();
    let dest = Dest::start(&["--rule", "no@a.test=550 5.1.1 unknown"]);
    enqueue(
        &store,
        "app@sender.test",
        &["yes@a.test", "no@a.test"],
        &message("stats"),
    );
    let mut relay = Relay::start(
        &store,
        FAST,
        &[
            "--transport",
            &transport(&dest, "a.test"),
            "--node-id",
            "node-one",
        ],
    );
    store.wait_settled(&["delivered", "failed"], Duration::from_secs(20));
    let stats = String::from_utf8(outbound(&store, &["stats"], None).stdout).unwrap();
    assert!(stats.contains("  delivered   1\n"), "{stats}");
    assert!(stats.contains("  failed      1\n"), "{stats}");
    assert!(stats.contains("  delivered   1 / 1\n"), "{stats}");
    assert!(stats.contains("delivery rate, last minute: "), "{stats}");
    let nodes = String::from_utf8(outbound(&store, &["nodes"], None).stdout).unwrap();
    let line = nodes
        .lines()
        .find(|l| l.starts_with("node-one"))
        .unwrap_or_else(|| panic!("{nodes}"));
    assert!(line.contains(" alive "), "{nodes}");
    assert!(line.contains(&relay.pid().to_string()), "{nodes}");
    assert!(relay.stop());

    // Bad input gets an error naming what is wrong, exit 2 for configuration.
    let bad = outbound(&store, &["--transport", "nonsense"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--transport"),
        "{bad:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[relay]\nthreads = 0\n").unwrap();
    let bad = outbound(&store, &["-c", cfg.to_str().unwrap()], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("relay.threads"),
        "{bad:?}"
    );
    let empty = outbound(
        &store,
        &["enqueue", "--from", "a@b.test", "--to", "c@d.test"],
        Some(b""),
    );
    assert!(!empty.status.success());
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("no message"),
        "{empty:?}"
    );
    let bad_store = crate::support::outbound_raw(&["stats", "--store", "postgres://x"]);
    assert_eq!(bad_store.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_store.stderr).contains("store.url"),
        "{bad_store:?}"
    );
}

#[test]
fn hostile_rows_fail_cleanly_instead_of_injecting_commands() {
    let store = Store::sqlite();
    outbound(&store, &["stats"], None);
    store.exec(
        "INSERT INTO outbound_queue (sender, recipient, body) VALUES \
         ('app@sender.test', 'x@a.test>' || char(13) || char(10) || 'RCPT TO:<victim@a.test', x'41'),
         ('app@sender.test', 'no-domain', x'41'),
         ('app@sender.test', 'ok@a.test', x'41');",
    );
    let dest = Dest::start(&[]);
    let _relay = Relay::start(&store, FAST, &["--transport", &transport(&dest, "a.test")]);
    store.wait_settled(&["delivered", "failed"], Duration::from_secs(20));
    assert_eq!(dest.recipients(), ["ok@a.test"]);
    assert_eq!(
        store.column("SELECT last_status FROM outbound_queue WHERE state = 'failed'"),
        ["5.1.3", "5.1.3"]
    );
}
