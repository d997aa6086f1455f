//! Responsible sending: DKIM signatures verified by an independent verifier (Debian's
//! dkimpy) on the bytes the destination received, sending IP pools seen from the
//! destination (source address, EHLO name), `dns-records` fed to the test DNS
//! server and checked by `dns-check`, per-message expiry, and the config errors.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    Dest, Dns, FAST, Relay, Store, enqueue, outbound, outbound_raw, python, wait_for,
};

/// Runs `outbound dkim generate`; returns the TXT record's name and value.
fn generate(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> (String, String) {
    let out_file = dir.join(format!("{domain}.{selector}.pem"));
    let out = outbound_raw(&[
        "dkim",
        "generate",
        domain,
        "--selector",
        selector,
        "--algorithm",
        algorithm,
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let line = String::from_utf8(out.stdout).unwrap();
    parse_txt(line.trim())
}

/// `NAME. IN TXT "a" "b"` → (name without the dot, "ab").
fn parse_txt(line: &str) -> (String, String) {
    let (name, rest) = line.split_once(" IN TXT ").unwrap();
    let value: String = rest
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    (name.trim_end_matches('.').to_owned(), value)
}

/// Verifies every DKIM-Signature of `message` with dkimpy, the DNS answering from
/// `records` (name → TXT value). One bool per signature, in header order.
fn dkimpy(message: &str, records: &[(String, String)]) -> Vec<bool> {
    let input = serde_json::json!({
        "message": message,
        "records": records.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
    });
    let script = r#"
import json, sys, dkim
data = json.load(sys.stdin)
msg = data["message"].encode()
records = {k.lower(): v for k, v in data["records"].items()}
def dnsfunc(name, timeout=5):
    n = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
    return records.get(n, "").encode()
n = sum(1 for l in msg.split(b"\r\n") if l.lower().startswith(b"dkim-signature:"))
def ok(i):
    try:
        return bool(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError as e:
        print(e, file=sys.stderr)
        return False
print(json.dumps([ok(i) for i in range(n)]))
"#;
    serde_json::from_str(&python(script, &input.to_string())).unwrap()
}

fn data_of(dest: &Dest, needle: &str) -> String {
    dest.messages()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .find(|d| d.contains(needle))
        .unwrap_or_else(|| panic!("no message with {needle}"))
}

#[test]
fn dkim_signatures_verify_with_dkimpy_for_rsa_ed25519_and_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rsa = generate(d, "rsa.test", "s1", "rsa");
    let ed = generate(d, "ed.test", "e1", "ed25519");
    let both_rsa = generate(d, "both.test", "r1", "rsa");
    let both_ed = generate(d, "both.test", "e2", "ed25519");
    let records = vec![rsa, ed, both_rsa, both_ed];
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    let p = |n: &str| d.join(n).display().to_string();
    let config = format!(
        "{FAST}\n[dkim.\"rsa.test\"]\nselector = \"s1\"\nkey_file = \"{}\"\n\
         [dkim.\"ed.test\"]\nselector = \"e1\"\nkey_file = \"{}\"\n\
         [[dkim.\"both.test\".keys]]\nselector = \"r1\"\nkey_file = \"{}\"\n\
         [[dkim.\"both.test\".keys]]\nselector = \"e2\"\nkey_file = \"{}\"\n",
        p("rsa.test.s1.pem"),
        p("ed.test.e1.pem"),
        p("both.test.r1.pem"),
        p("both.test.e2.pem"),
    );
    for (domain, tag) in [
        ("rsa.test", "m-rsa"),
        ("ed.test", "m-ed"),
        ("both.test", "m-both"),
    ] {
        let body = format!(
            "From: App <app@{domain}>\r\nTo: ann@a.test\r\nSubject: {tag}\r\n\
             Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{tag}@{domain}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             List-Unsubscribe: <mailto:u@{domain}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
             \r\nbody of {tag}\r\n.leading dot line\r\n"
        );
        enqueue(&store, &format!("app@{domain}"), &["ann@a.test"], &body);
    }
    // No key for this From domain: sent unsigned.
    enqueue(
        &store,
        "app@plain.test",
        &["ann@a.test"],
        "From: app@plain.test\r\nSubject: m-plain\r\n\r\nplain\r\n",
    );
    let _relay = Relay::start(
        &store,
        &config,
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    store.wait_settled(&["delivered"], Duration::from_secs(30));

    let rsa_msg = data_of(&dest, "m-rsa");
    assert_eq!(dkimpy(&rsa_msg, &records), [true], "{rsa_msg}");
    assert!(rsa_msg.contains("a=rsa-sha256"));
    // Every header the brief names is signed, the RFC 8058 pair included.
    let h = rsa_msg
        .split("h=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(
            h.split(':').any(|x| x.trim() == name),
            "{name} not in h={h}"
        );
    }
    let ed_msg = data_of(&dest, "m-ed");
    assert_eq!(dkimpy(&ed_msg, &records), [true], "{ed_msg}");
    assert!(ed_msg.contains("a=ed25519-sha256"));
    let both_msg = data_of(&dest, "m-both");
    assert_eq!(dkimpy(&both_msg, &records), [true, true], "{both_msg}");
    assert!(!data_of(&dest, "m-plain").contains("DKIM-Signature"));

    // The check can fail: a changed body, or a record of another key.
    let tampered = rsa_msg.replace("body of m-rsa", "body of m-rsb");
    assert_eq!(dkimpy(&tampered, &records), [false]);
    let wrong = vec![(records[0].0.clone(), records[2].1.clone())];
    assert_eq!(dkimpy(&rsa_msg, &wrong), [false]);
}

#[test]
fn a_dsn_is_signed_with_the_bounce_domains_key() {
    let dir = tempfile::tempdir().unwrap();
    let record = generate(dir.path(), "bounce.test", "b1", "ed25519");
    let store = Store::sqlite();
    let dest = Dest::start(&["--rule", "gone@a.test=550 5.1.1 no such user"]);
    let fast = FAST.replace("[bounces]\ndsn = false\n", "");
    let config = format!(
        "{fast}\n[bounces]\ndomain = \"bounce.test\"\nkey = \"0123456789abcdef-test-key\"\n\
         [dkim.\"bounce.test\"]\nselector = \"b1\"\nkey_file = \"{}\"\n",
        dir.path().join("bounce.test.b1.pem").display()
    );
    enqueue(
        &store,
        "app@sender.test",
        &["gone@a.test"],
        "From: app@sender.test\r\nSubject: will bounce\r\n\r\nhello\r\n",
    );
    let _relay = Relay::start(
        &store,
        &config,
        &[
            "--transport",
            &format!("a.test={}", dest.addr),
            "--transport",
            &format!("sender.test={}", dest.addr),
        ],
    );
    wait_for("the DSN at the sender", Duration::from_secs(30), || {
        dest.messages().iter().any(|m| m["mail_from"] == "<>")
    });
    let dsn = dest
        .messages()
        .iter()
        .find(|m| m["mail_from"] == "<>")
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(dsn.contains("d=bounce.test"), "{dsn}");
    assert_eq!(dkimpy(&dsn, &[record]), [true], "{dsn}");
}

fn pools_config(extra: &str) -> String {
    format!(
        "{FAST}\n[pools.a]\naddresses = [{{ address = \"127.0.0.2\", helo = \"mta2.relay.test\" }}, \
         {{ address = \"127.0.0.3\", helo = \"mta3.relay.test\" }}]\n\
         [pools.s]\nstrategy = \"sticky\"\naddresses = [\"127.0.0.4\", \"127.0.0.5\"]\n{extra}"
    )
}

fn enqueue_pool(store: &Store, pool: &str, to: &str, tag: &str) {
    let out = outbound(
        store,
        &[
            "enqueue",
            "--from",
            "app@sender.test",
            "--to",
            to,
            "--pool",
            pool,
        ],
        Some(format!("From: app@sender.test\r\nSubject: {tag}\r\n\r\n{tag}\r\n").as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pools_bind_their_addresses_round_robin_or_sticky_and_unknown_pools_fail() {
    let store = Store::sqlite();
    let dest = Dest::start(&[]);
    for i in 0..4 {
        enqueue_pool(&store, "a", &format!("r{i}@a.test"), &format!("rr{i}"));
    }
    for i in 0..3 {
        enqueue_pool(&store, "s", &format!("s{i}@b.test"), &format!("st{i}"));
    }
    enqueue_pool(&store, "nope", "x@a.test", "unknown");
    enqueue(
        &store,
        "app@sender.test",
        &["after@a.test"],
        "From: app@sender.test\r\nSubject: after\r\n\r\nafter\r\n",
    );
    let _relay = Relay::start(
        &store,
        &pools_config(""),
        &[
            "--transport",
            &format!("a.test={}", dest.addr),
            "--transport",
            &format!("b.test={}", dest.addr),
            // One worker: the round robin's order is the claim's.
            "--threads",
            "1",
        ],
    );
    store.wait_settled(&["delivered", "failed"], Duration::from_secs(30));
    let msgs = dest.messages();
    let from = |needle: &str| -> (String, String) {
        let m = msgs
            .iter()
            .find(|m| m["data"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {msgs:?}"));
        (
            m["peer"].as_str().unwrap().to_owned(),
            m["helo"].as_str().unwrap().to_owned(),
        )
    };
    let rr: Vec<(String, String)> = (0..4).map(|i| from(&format!("rr{i}"))).collect();
    let peers: Vec<&str> = rr.iter().map(|(p, _)| p.as_str()).collect();
    // Each of the pool's addresses sends every other message.
    assert_eq!(
        peers.iter().filter(|p| **p == "127.0.0.2").count(),
        2,
        "{rr:?}"
    );
    assert_eq!(
        peers.iter().filter(|p| **p == "127.0.0.3").count(),
        2,
        "{rr:?}"
    );
    for (peer, helo) in &rr {
        assert_eq!(helo, &format!("mta{}.relay.test", &peer[peer.len() - 1..]));
    }
    let sticky: Vec<String> = (0..3).map(|i| from(&format!("st{i}")).0).collect();
    assert!(
        sticky.iter().all(|p| p == &sticky[0])
            && ["127.0.0.4", "127.0.0.5"].contains(&sticky[0].as_str()),
        "{sticky:?}"
    );
    // The row without a pool leaves from the default address; the unknown pool fails.
    assert_eq!(from("after").0, "127.0.0.1");
    assert_eq!(store.state("x@a.test"), "failed");
    assert_eq!(
        store.column("SELECT last_status || ' ' || last_text FROM outbound_queue WHERE recipient = 'x@a.test'"),
        ["5.3.5 unknown sending pool nope"]
    );
}

#[test]
fn an_unbindable_pool_address_refuses_start() {
    let store = Store::sqlite();
    let mut relay = Relay::start(
        &store,
        &format!("{FAST}\n[pools.bad]\naddresses = [\"192.0.2.1\"]\n"),
        &[],
    );
    let status = relay
        .wait_exit(Duration::from_secs(20))
        .expect("relay exits");
    assert_eq!(status.code(), Some(2), "{}", relay.log());
    assert!(
        relay.log().contains("pools.bad.addresses"),
        "{}",
        relay.log()
    );
}

#[test]
fn an_expired_row_fails_with_4_4_7_and_no_dsn() {
    let store = Store::sqlite();
    let dest = Dest::start(&["--rule", "late@a.test=451 4.2.0 try later"]);
    let out = outbound(
        &store,
        &[
            "enqueue",
            "--from",
            "app@sender.test",
            "--to",
            "late@a.test",
            "--expires-in",
            "2",
        ],
        Some(b"From: app@sender.test\r\nSubject: event\r\n\r\nsoon\r\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // DSNs on: an ordinary failure would mail the sender one.
    let config = FAST.replace("[bounces]\ndsn = false\n", "[bounces]\ndsn = true\n");
    let _relay = Relay::start(
        &store,
        &config,
        &[
            "--transport",
            &format!("a.test={}", dest.addr),
            "--transport",
            &format!("sender.test={}", dest.addr),
        ],
    );
    wait_for("the row to fail", Duration::from_secs(30), || {
        store.state("late@a.test") == "failed"
    });
    assert_eq!(
        store.column("SELECT last_status || ' ' || last_text FROM outbound_queue WHERE recipient = 'late@a.test'"),
        ["4.4.7 message expired"]
    );
    // It was tried (deferred) before it expired, and no DSN was queued for it.
    assert!(
        store.count("SELECT attempts FROM outbound_queue WHERE recipient = 'late@a.test'") >= 1
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        store.count("SELECT COUNT(*) FROM outbound_queue WHERE sender = ''"),
        0
    );
}

#[test]
fn dns_records_served_pass_dns_check_and_a_wrong_dkim_key_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "sender.test", "s1", "rsa");
    let (_, other) = generate(dir.path(), "other.test", "s1", "ed25519");
    let cfg_path = dir.path().join("outbound.toml");
    let config = format!(
        "{}\n[bounces]\ndomain = \"bounce.test\"\nkey = \"0123456789abcdef-test-key\"\n\
         [dkim.\"sender.test\"]\nselector = \"s1\"\nkey_file = \"{}\"\n",
        // Documentation addresses: only printed and looked up, never bound (and
        // hickory answers "localhost" for any 127/8 PTR itself).
        FAST.replace("[bounces]\ndsn = false\n", "")
            + "[pools.a]\naddresses = [{ address = \"198.51.100.2\", helo = \"mta2.relay.test\" }, \
               { address = \"198.51.100.3\", helo = \"mta3.relay.test\" }]\n\
               [pools.s]\naddresses = [\"198.51.100.4\", \"2001:db8::5\"]\n",
        dir.path().join("sender.test.s1.pem").display()
    );
    std::fs::write(&cfg_path, config).unwrap();
    let cfg = cfg_path.to_str().unwrap();
    let out = outbound_raw(&["-c", cfg, "dns-records", "sender.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zone = String::from_utf8(out.stdout).unwrap();
    assert!(zone.contains("sender.test. IN TXT \"v=spf1 ip4:198.51.100.2 ip4:198.51.100.3 ip4:198.51.100.4 ip6:2001:db8::5 -all\""), "{zone}");
    assert!(
        zone.contains(
            "_dmarc.sender.test. IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc@sender.test\""
        ),
        "{zone}"
    );
    assert!(zone.contains("bounce.test. IN MX 10 relay.test."), "{zone}");
    assert!(
        zone.contains("2.100.51.198.in-addr.arpa. IN PTR mta2.relay.test."),
        "{zone}"
    );
    assert!(
        zone.contains("4.100.51.198.in-addr.arpa. IN PTR relay.test."),
        "{zone}"
    );

    // The zone, as the operator would publish it, into the test DNS server.
    let mut records = Vec::new();
    for line in zone.lines().filter(|l| !l.starts_with(';')) {
        let mut parts = line.splitn(4, ' ');
        let (name, _, rtype, rdata) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        records.push(match rtype {
            "TXT" => {
                let strings: Vec<&str> = rdata.split('"').skip(1).step_by(2).collect();
                serde_json::json!({"name": name, "type": "TXT", "text": strings})
            }
            "MX" => {
                let (pref, host) = rdata.split_once(' ').unwrap();
                serde_json::json!({"name": name, "type": "MX", "preference": pref.parse::<u16>().unwrap(), "exchange": host})
            }
            "PTR" => serde_json::json!({"name": name, "type": "PTR", "target": rdata}),
            other => panic!("unexpected {other}"),
        });
    }
    let dns = Dns::start(&serde_json::json!({ "records": records }));
    let resolver = dns.addr.to_string();
    let out = outbound_raw(&[
        "-c",
        cfg,
        "dns-check",
        "sender.test",
        "--resolver",
        &resolver,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Another key's record under the selector, and one PTR missing.
    let records: Vec<serde_json::Value> = records
        .into_iter()
        .filter(|r| r["name"] != "3.100.51.198.in-addr.arpa.")
        .map(|r| {
            if r["name"] == "s1._domainkey.sender.test." {
                serde_json::json!({"name": r["name"], "type": "TXT", "text": other})
            } else {
                r
            }
        })
        .collect();
    let dns = Dns::start(&serde_json::json!({ "records": records }));
    let resolver = dns.addr.to_string();
    let out = outbound_raw(&[
        "-c",
        cfg,
        "dns-check",
        "sender.test",
        "--resolver",
        &resolver,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "DKIM s1 (rsa) s1._domainkey.sender.test.: public key does not match the key file"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("PTR 198.51.100.3: missing (want mta3.relay.test)"),
        "{stdout}"
    );
    assert!(!stdout.contains("SPF"), "{stdout}");
}

#[test]
fn key_file_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("notpem.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (file, why) in [(&missing, "No such file"), (&not_pem, "not a PKCS#8 PEM")] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "[dkim.\"sender.test\"]\nselector = \"s1\"\nkey_file = \"{}\"\n",
                file.display()
            ),
        )
        .unwrap();
        let out = outbound_raw(&["-c", cfg.to_str().unwrap(), "dns-records", "sender.test"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("dkim.\"sender.test\".key_file"), "{err}");
        assert!(err.contains(why), "{err}");
    }
}
