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
        "{fast}\n[bounces]\ndomain = \"bounce.test\"\nkey = \"{KEY}\"\nintake_interval_ms = 200\nsoft_bounce_limit = 2\n"
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
    // (A third DSN reports full@prose.test, below.)
    wait_for("two DSNs to the sender", Duration::from_secs(30), || {
        senders.messages().len() >= 2
    });
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
