//! The bounce loop, with both daemons on one MariaDB: the relay sends with VERP
//! return paths; a destination that accepts and then bounces sends a real DSN back
//! into `smtpd`; the relay reads it from `new_mail`, verifies the tag, classifies it,
//! fails the row, suppresses the address and tells the original sender with an RFC
//! 3464 DSN that Python's `email` package parses.

use std::time::Duration;

use crate::support::{
    Dest, FAST, Relay, Smtpd, Store, enqueue, message, outbound, python, wait_for,
};

const KEY: &str = "0123456789abcdef-test-key";

fn config() -> String {
    let fast = FAST.replace("[bounces]\ndsn = false\n", "");
    format!(
        "{fast}\n[bounces]\ndomain = \"bounce.test\"\nkey = \"{KEY}\"\nintake_interval_ms = 200\nintake_settle_ms = 300\nsoft_bounce_limit = 2\n"
    )
}

/// The queue id of the newest row for `recipient`.
fn id_of(store: &Store, recipient: &str) -> i64 {
    store.count(&format!(
        "SELECT MAX(id) FROM outbound_queue WHERE recipient = '{recipient}'"
    ))
}

/// Checks a DSN with Python's email package; returns its per-recipient fields.
fn check_dsn(raw: &str) -> serde_json::Value {
    let script = r#"
import email, email.policy, json, sys
msg = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
assert msg.get_content_type() == 'multipart/report', msg.get_content_type()
assert msg.get_param('report-type') == 'delivery-status'
parts = msg.get_payload()
assert [p.get_content_type() for p in parts] == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], [p.get_content_type() for p in parts]
blocks = parts[1].get_payload()
per_message, per_recipient = blocks[0], blocks[1]
print(json.dumps({
    'to': str(msg['To']), 'subject': str(msg['Subject']), 'auto': str(msg['Auto-Submitted']),
    'reporting_mta': per_message['Reporting-MTA'], 'final_recipient': per_recipient['Final-Recipient'],
    'action': per_recipient['Action'], 'status': per_recipient['Status'],
    'diagnostic': per_recipient['Diagnostic-Code'], 'remote_mta': per_recipient['Remote-MTA'],
    'headers': parts[2].get_payload() if isinstance(parts[2].get_payload(), str) else parts[2].get_content(),
    'defects': [str(d) for p in msg.walk() for d in p.defects],
}))
"#;
    serde_json::from_str(&python(script, raw)).unwrap()
}

#[test]
fn bounces_come_back_through_smtpd_and_close_the_loop() {
    let store = Store::mariadb();
    let smtpd = Smtpd::start(&store, &["bounce.test"]);
    let via = format!("127.0.0.1:{}", smtpd.port);
    let senders = Dest::start(&[]);
    let dest = Dest::start(&[
        "--rule",
        "reject@dest.test=550 5.1.1 no such user",
        "--bounce",
        "gone@dest.test=5.1.1",
        "--bounce-via",
        &via,
    ]);
    let prose = Dest::start(&[
        "--bounce",
        "full@prose.test=5.2.2",
        "--bounce-via",
        &via,
        "--bounce-prose",
    ]);
    let body = "From: app@app.test\r\nSubject: Your receipt\r\nMessage-ID: <r1@app.test>\r\n\r\nThanks!\r\n";
    enqueue(
        &store,
        "app@app.test",
        &[
            "ok@dest.test",
            "gone@dest.test",
            "reject@dest.test",
            "full@prose.test",
        ],
        body,
    );
    let (ok, gone, _reject) = (
        id_of(&store, "ok@dest.test"),
        id_of(&store, "gone@dest.test"),
        id_of(&store, "reject@dest.test"),
    );
    let relay = Relay::start(
        &store,
        &config(),
        &[
            "--transport",
            &format!("dest.test={}", dest.addr),
            "--transport",
            &format!("prose.test={}", prose.addr),
            "--transport",
            &format!("app.test={}", senders.addr),
        ],
    );

    // gone@ was accepted, then bounced: the DSN went through smtpd and the relay read it.
    wait_for(
        "the bounce to be processed",
        Duration::from_secs(30),
        || {
            store.column(&format!(
                "SELECT last_mx FROM outbound_queue WHERE id = {gone}"
            )) == ["bounce"]
        },
    );
    assert_eq!(store.state("gone@dest.test"), "failed");
    assert_eq!(store.state("ok@dest.test"), "delivered");
    assert_eq!(store.state("reject@dest.test"), "failed");
    assert_eq!(
        store.column(&format!(
            "SELECT CONCAT(class, ' ', status) FROM outbound_bounces WHERE queue_id = {gone}"
        )),
        ["hard 5.1.1"]
    );
    assert_eq!(
        store.column(&format!(
            "SELECT CONCAT(outcome, ' ', mx) FROM outbound_log WHERE queue_id = {gone} ORDER BY id"
        )),
        [
            "delivered dest.test[127.0.0.1]:".to_owned() + &dest.addr.port().to_string(),
            "failed bounce".to_owned()
        ]
    );
    // Both the bounced and the synchronously refused address are suppressed.
    let suppressed =
        store.column("SELECT CONCAT(address, ' ', source) FROM suppression ORDER BY address");
    assert_eq!(
        suppressed,
        ["gone@dest.test bounce", "reject@dest.test bounce"]
    );

    // Every message went out with its own VERP return path and a List-Unsubscribe.
    let msgs = dest.messages();
    for (id, rcpt) in [(ok, "ok@dest.test"), (gone, "gone@dest.test")] {
        let m = msgs.iter().find(|m| m["rcpt_tos"][0] == rcpt).unwrap();
        let from = m["mail_from"].as_str().unwrap();
        assert!(
            from.starts_with(&format!("bounces+{id}-")) && from.ends_with("@bounce.test"),
            "{from}"
        );
        let data = m["data"].as_str().unwrap();
        assert!(
            data.starts_with(&format!("List-Unsubscribe: <mailto:unsubscribe+{id}-")),
            "{data}"
        );
        assert!(data.ends_with(body), "the message itself is unchanged");
    }

    // The original sender got RFC 3464 DSNs with the null return path (aiosmtpd
    // logs it as "<>").
    // (A third DSN reports full@prose.test, below; it may come before either.)
    let reports_on = |rcpt: &str| {
        senders.messages().iter().any(|m| {
            m["data"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("Final-Recipient: rfc822; {rcpt}")))
        })
    };
    wait_for(
        "the two DSNs to the sender",
        Duration::from_secs(30),
        || reports_on("reject@dest.test") && reports_on("gone@dest.test"),
    );
    let dsns = senders.messages();
    assert!(
        dsns.iter()
            .all(|m| m["mail_from"] == "<>" && m["rcpt_tos"][0] == "app@app.test"),
        "{dsns:?}"
    );
    let parsed: Vec<serde_json::Value> = dsns
        .iter()
        .map(|m| check_dsn(m["data"].as_str().unwrap()))
        .collect();
    let about = |rcpt: &str| {
        parsed
            .iter()
            .find(|d| d["final_recipient"] == format!("rfc822; {rcpt}"))
            .unwrap_or_else(|| panic!("{parsed:?}"))
    };
    let sync = about("reject@dest.test");
    assert_eq!(sync["action"], "failed");
    assert_eq!(sync["status"], "5.1.1");
    assert_eq!(sync["diagnostic"], "smtp; 550 5.1.1 no such user");
    assert_eq!(sync["remote_mta"], "dns; dest.test");
    assert_eq!(sync["reporting_mta"], "dns; relay.test");
    assert_eq!(sync["auto"], "auto-replied");
    assert_eq!(sync["to"], "app@app.test");
    assert!(
        sync["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: Your receipt"),
        "{sync}"
    );
    assert_eq!(sync["defects"], serde_json::json!([]));
    let late = about("gone@dest.test");
    assert_eq!(
        (late["action"].as_str(), late["status"].as_str()),
        (Some("failed"), Some("5.1.1"))
    );
    assert!(
        late["diagnostic"]
            .as_str()
            .unwrap()
            .contains("mailbox unavailable after acceptance"),
        "{late}"
    );

    // The next message to the bounced address is never sent.
    enqueue(
        &store,
        "app@app.test",
        &["gone@dest.test"],
        &message("again"),
    );
    wait_for("suppression", Duration::from_secs(20), || {
        store.state("gone@dest.test") == "suppressed"
    });
    assert_eq!(
        dest.recipients()
            .iter()
            .filter(|r| *r == "gone@dest.test")
            .count(),
        1
    );

    // A forged bounce (wrong tag) for a delivered message is ignored.
    let forged = format!("bounces+{ok}-aaaaaaaaaa@bounce.test");
    smtpd.send("", &forged, "Subject: Undelivered\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; evil\r\n\r\nFinal-Recipient: rfc822; ok@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n");
    let forged_mail_id = store.count(&format!(
        "SELECT MAX(mail_id) FROM new_mail WHERE recipient = '{forged}'"
    ));
    wait_for(
        "intake past the forged bounce",
        Duration::from_secs(20),
        || {
            store.count("SELECT COALESCE(MAX(last_mail_id), 0) FROM outbound_intake")
                >= forged_mail_id
        },
    );
    assert_eq!(store.state("ok@dest.test"), "delivered");
    assert_eq!(
        store.count("SELECT COUNT(*) FROM suppression WHERE address = 'ok@dest.test'"),
        0
    );
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_bounces WHERE queue_id = {ok}"
        )),
        0
    );
    assert!(relay.log().contains("does not verify"), "{}", relay.log());

    // A non-standard (prose) bounce with 5.2.2 (mailbox full) is soft: counted, the
    // address suppressed only at the second one (soft_bounce_limit = 2).
    wait_for("the first soft bounce", Duration::from_secs(30), || {
        store.count("SELECT COUNT(*) FROM outbound_bounces WHERE address = 'full@prose.test'") == 1
    });
    assert_eq!(
        store.column("SELECT CONCAT(class, ' ', status) FROM outbound_bounces WHERE address = 'full@prose.test'"),
        ["soft 5.2.2"]
    );
    assert_eq!(
        store.count("SELECT COUNT(*) FROM suppression WHERE address = 'full@prose.test'"),
        0
    );
    enqueue(
        &store,
        "app@app.test",
        &["full@prose.test"],
        &message("second"),
    );
    wait_for(
        "the second soft bounce to suppress",
        Duration::from_secs(30),
        || store.count("SELECT COUNT(*) FROM suppression WHERE address = 'full@prose.test'") == 1,
    );

    // Unsubscribe by mail to the List-Unsubscribe address of ok@'s message.
    let data = msgs
        .iter()
        .find(|m| m["rcpt_tos"][0] == "ok@dest.test")
        .unwrap()["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let address = data
        .split("<mailto:")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    smtpd.send(
        "ok@dest.test",
        &address,
        "Subject: unsubscribe\r\n\r\nunsubscribe\r\n",
    );
    wait_for("the unsubscribe", Duration::from_secs(20), || {
        store.column("SELECT source FROM suppression WHERE address = 'ok@dest.test'")
            == ["unsubscribe"]
    });
    let list = String::from_utf8(outbound(&store, &["suppress", "list"], None).stdout).unwrap();
    assert!(list.contains("ok@dest.test\tunsubscribe\t"), "{list}");
}

#[test]
fn delay_dsns_once_and_never_a_dsn_about_a_dsn() {
    let store = Store::sqlite();
    let senders = Dest::start(&[]);
    let dest = Dest::start(&[
        "--rule",
        "slow@dest.test=451 4.4.1 try later",
        "--rule",
        "bad@dest.test=550 5.1.1 unknown",
    ]);
    enqueue(
        &store,
        "app@app.test",
        &["slow@dest.test"],
        &message("slow"),
    );
    // A message with the null sender (a DSN itself) that fails: no DSN about it.
    enqueue(&store, "", &["bad@dest.test"], &message("null sender"));
    let config = FAST.replace(
        "[bounces]\ndsn = false\n",
        "[bounces]\ndelay_warning_secs = 1\n",
    );
    let _relay = Relay::start(
        &store,
        &config,
        &[
            "--transport",
            &format!("dest.test={}", dest.addr),
            "--transport",
            &format!("app.test={}", senders.addr),
        ],
    );
    wait_for("a delay DSN", Duration::from_secs(30), || {
        !senders.messages().is_empty()
    });
    // Several more deferrals, still one delay notice.
    wait_for("more deferrals", Duration::from_secs(30), || {
        store.count("SELECT attempts FROM outbound_queue WHERE recipient = 'slow@dest.test'") >= 4
    });
    let dsns = senders.messages();
    assert_eq!(dsns.len(), 1, "{dsns:?}");
    let report = check_dsn(dsns[0]["data"].as_str().unwrap());
    assert_eq!(report["action"], "delayed");
    assert_eq!(report["status"], "4.4.1");
    assert_eq!(report["final_recipient"], "rfc822; slow@dest.test");
    assert!(
        report["subject"]
            .as_str()
            .unwrap()
            .starts_with("Delayed Mail"),
        "{report}"
    );
    assert_eq!(
        store.count("SELECT delay_notified FROM outbound_queue WHERE recipient = 'slow@dest.test'"),
        1
    );
    // The null-sender message failed and produced no DSN row.
    assert_eq!(store.state("bad@dest.test"), "failed");
    assert_eq!(
        store.count(
            "SELECT COUNT(*) FROM outbound_queue WHERE sender = '' AND recipient <> 'bad@dest.test'"
        ),
        1
    );
}

#[test]
fn null_sender_spelled_as_brackets_is_sent_as_null_and_never_earns_a_dsn() {
    let store = Store::sqlite();
    let dest = Dest::start(&["--rule", "bad*@dest.test=550 5.1.1 unknown"]);
    // sendmail's `-f '<>'` and the empty string both mean the null reverse-path.
    enqueue(
        &store,
        "<>",
        &["ok@dest.test", "bad@dest.test"],
        &message("null 1"),
    );
    enqueue(&store, "", &["ok2@dest.test"], &message("null 2"));
    // Applications that insert rows themselves may spell it `<>` too; a sender that
    // is not a mailbox at all (no domain) fails the row, and earns nobody a DSN.
    store.exec(
        "INSERT INTO outbound_queue (sender, recipient, body) VALUES \
         ('<>', 'bad2@dest.test', x'41'), ('nobody', 'ok3@dest.test', x'41');",
    );
    // DSNs on, and VERP on: neither applies to the null sender.
    let _relay = Relay::start(
        &store,
        &config(),
        &["--transport", &format!("dest.test={}", dest.addr)],
    );
    store.wait_settled(&["delivered", "failed"], Duration::from_secs(30));
    assert_eq!(
        store.column(
            "SELECT sender FROM outbound_queue WHERE recipient IN ('ok@dest.test', 'bad@dest.test', 'ok2@dest.test') ORDER BY id"
        ),
        ["", "", ""],
        "stored as the null sender"
    );
    let msgs = dest.messages();
    let mut got: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["rcpt_tos"][0].as_str().unwrap().to_owned(),
                m["mail_from"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("ok2@dest.test".to_owned(), "<>".to_owned()),
            ("ok@dest.test".to_owned(), "<>".to_owned())
        ],
        "sent with MAIL FROM:<>"
    );
    for rcpt in ["bad@dest.test", "bad2@dest.test"] {
        assert_eq!(store.state(rcpt), "failed");
        assert_eq!(
            store.column(&format!(
                "SELECT last_status FROM outbound_queue WHERE recipient = '{rcpt}'"
            )),
            ["5.1.1"],
            "{rcpt} was tried, not refused as a bad sender"
        );
    }
    assert_eq!(
        store.column("SELECT last_status FROM outbound_queue WHERE recipient = 'ok3@dest.test'"),
        ["5.1.7"]
    );
    // A moment for anything the relay might still queue.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        store.column("SELECT recipient FROM outbound_queue WHERE tag = 'dsn'"),
        Vec::<String>::new(),
        "no DSN to a null or invalid sender"
    );
    // A sender that is not an address is refused on the command line (exit 2).
    let bad = outbound(
        &store,
        &["enqueue", "--from", "not an address", "--to", "x@dest.test"],
        Some(b"Subject: x\r\n\r\nx\r\n"),
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--from"),
        "{bad:?}"
    );
}

#[test]
fn template_messages_carry_list_unsubscribe_like_raw_ones() {
    let store = Store::sqlite();
    outbound(&store, &["stats"], None); // creates the schema
    store.exec(
        "INSERT INTO outbound_templates (id, name, from_header, subject, text_body, html_body) VALUES \
         (3, 'news', 'News <news@app.test>', 'News for [Name]', 'Hi [Name]', '<p>Hi [Name]</p>');
         INSERT INTO outbound_queue (sender, recipient, template_id, params) VALUES \
          ('news@app.test', 'ann@dest.test', 3, '{\"Name\": \"Ann\"}'),
          ('news@app.test', 'bob@dest.test', 3, '{\"Name\": \"Bob\"}');",
    );
    enqueue(&store, "news@app.test", &["cy@dest.test"], &message("raw"));
    let dest = Dest::start(&[]);
    let config = config() + "unsubscribe_url = \"https://app.test/u\"\n";
    let _relay = Relay::start(
        &store,
        &config,
        &["--transport", &format!("dest.test={}", dest.addr)],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(30));
    let msgs = dest.messages();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    let script = r#"
import email, email.policy, json, sys
msg = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
print(json.dumps({
    "unsubscribe": msg.get_all('List-Unsubscribe'), "post": msg.get_all('List-Unsubscribe-Post'),
    "subject": str(msg['Subject']), "defects": [str(d) for p in msg.walk() for d in p.defects],
}))
"#;
    for rcpt in ["ann@dest.test", "bob@dest.test", "cy@dest.test"] {
        let id = id_of(&store, rcpt);
        let m = msgs
            .iter()
            .find(|m| m["rcpt_tos"][0] == rcpt)
            .unwrap_or_else(|| panic!("{rcpt}: {msgs:?}"));
        let from = m["mail_from"].as_str().unwrap();
        let token = from
            .strip_prefix("bounces+")
            .and_then(|f| f.strip_suffix("@bounce.test"))
            .unwrap_or_else(|| panic!("VERP return path: {from}"));
        let parsed: serde_json::Value =
            serde_json::from_str(&python(script, m["data"].as_str().unwrap())).unwrap();
        let unsubscribe = parsed["unsubscribe"].as_array().unwrap_or_else(|| {
            panic!("{rcpt}: no List-Unsubscribe: {parsed}");
        });
        assert_eq!(unsubscribe.len(), 1, "{parsed}");
        let value = unsubscribe[0].as_str().unwrap();
        // The recipient's own unsubscribe address: same queue id as its VERP, and the
        // one-click URL with its token (RFC 8058).
        assert!(
            value.starts_with(&format!("<https://app.test/u?token={id}-")),
            "{rcpt}: {value}"
        );
        assert!(
            value.contains(&format!("<mailto:unsubscribe+{id}-")),
            "{rcpt}: {value}"
        );
        assert!(!value.contains(token), "its own tag, not the bounce one");
        assert_eq!(
            parsed["post"],
            serde_json::json!(["List-Unsubscribe=One-Click"]),
            "{parsed}"
        );
        assert_eq!(parsed["defects"], serde_json::json!([]), "{parsed}");
    }
}
