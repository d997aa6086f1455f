//! Complaints, with both daemons on one MariaDB: the relay sends with VERP return
//! paths; a feedback-loop report (ARF, RFC 5965) about one of those messages comes
//! back through `smtpd` to `bounces.complaint_address`; the relay verifies the VERP
//! tag in the original's headers, suppresses the recipient (`source = 'complaint'`)
//! and records the complaint. Forged and non-ARF mail to that address changes nothing.

use std::time::Duration;

use crate::support::{Dest, FAST, Relay, Smtpd, Store, enqueue, wait_for};

const KEY: &str = "0123456789abcdef-test-key";
pub const FBL: &str = "fbl@bounce.test";

fn config() -> String {
    let fast = FAST.replace("[bounces]\ndsn = false\n", "");
    format!(
        "{fast}\n[bounces]\ndsn = false\ndomain = \"bounce.test\"\nkey = \"{KEY}\"\nintake_interval_ms = 200\nintake_settle_ms = 300\ncomplaint_address = \"{FBL}\"\n"
    )
}

/// An ARF report (RFC 5965 §2) about a message sent with `return_path` to `rcpt`.
pub fn arf(return_path: &str, rcpt: &str) -> String {
    format!(
        "From: <fbl@isp.test>\r\nTo: <{FBL}>\r\nSubject: FW: Your receipt\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\r\n\r\n\
--arf\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n\r\n\
--arf\r\nContent-Type: message/feedback-report\r\n\r\n\
Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n\
--arf\r\nContent-Type: text/rfc822-headers\r\n\r\n\
Return-Path: <{return_path}>\r\nFrom: app@app.test\r\nTo: {rcpt}\r\nSubject: Your receipt\r\n\r\n\
--arf--\r\n"
    )
}

#[test]
fn arf_reports_suppress_the_recipient_and_forged_or_plain_mail_changes_nothing() {
    let store = Store::mariadb();
    let smtpd = Smtpd::start(&store, &["bounce.test"]);
    let dest = Dest::start(&[]);
    let body = "From: app@app.test\r\nSubject: Your receipt\r\nMessage-ID: <c1@app.test>\r\n\r\nThanks!\r\n";
    enqueue(
        &store,
        "app@app.test",
        &["a@dest.test", "b@dest.test"],
        body,
    );
    let _relay = Relay::start(
        &store,
        &config(),
        &["--transport", &format!("dest.test={}", dest.addr)],
    );
    wait_for("both delivered", Duration::from_secs(30), || {
        dest.messages().len() >= 2
    });
    let msgs = dest.messages();
    let path_of = |rcpt: &str| {
        let m = msgs.iter().find(|m| m["rcpt_tos"][0] == rcpt).unwrap();
        m["mail_from"].as_str().unwrap().to_owned()
    };
    let (a_path, b_path) = (path_of("a@dest.test"), path_of("b@dest.test"));
    assert!(a_path.starts_with("bounces+"), "{a_path}");
    let a_id = store.count("SELECT id FROM outbound_queue WHERE recipient = 'a@dest.test'");

    // Not ARF, then a report whose tag is forged: both are skipped ...
    smtpd.send(
        "someone@isp.test",
        FBL,
        "Subject: please stop\r\n\r\nb@dest.test does not want this\r\n",
    );
    let (local, domain) = b_path.split_once('@').unwrap();
    let (keep, last) = local.split_at(local.len() - 1);
    let other = if last == "x" { "y" } else { "x" };
    let forged = format!("{keep}{other}@{domain}");
    smtpd.send("", FBL, &arf(&forged, "b@dest.test"));
    // ... and read before this one, which is genuine.
    smtpd.send("", FBL, &arf(&a_path, "a@dest.test"));

    wait_for(
        "the complaint to be recorded",
        Duration::from_secs(30),
        || store.count("SELECT COUNT(*) FROM outbound_complaints") > 0,
    );
    assert_eq!(
        store.column(
            "SELECT CONCAT(queue_id, ' ', address, ' ', feedback_type) FROM outbound_complaints"
        ),
        [format!("{a_id} a@dest.test abuse")]
    );
    assert_eq!(
        store.column("SELECT CONCAT(address, ' ', source, ' ', reason) FROM suppression"),
        ["a@dest.test complaint complaint: abuse"]
    );
    // Every mail to the address was read: the intake went on past the skipped ones.
    assert_eq!(
        store.count("SELECT last_mail_id FROM outbound_intake WHERE name = 'new_mail'"),
        store.count("SELECT MAX(mail_id) FROM new_mail")
    );
}
