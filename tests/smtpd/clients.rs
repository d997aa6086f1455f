//! Real clients against the real server: Python's `smtplib`, `swaks` and `curl`.
//! Each must succeed and the stored `mail` must end with exactly the bytes the
//! client put on the wire (after unstuffing).
//!
//! These tools are installed by scripts/test. A missing tool FAILS the test with
//! its name (see `support::run_tool`); nothing is silently skipped.

use std::process::Command;
use std::time::Duration;

use crate::support::{Server, assert_mail_blob, kv_value, python_kv, run_tool};

const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The smtplib driver: `python3 script MODE PORT`. Prints one `key value` line per
/// result (`reply <code> <text>` for each DATA reply).
const SMTPLIB_SCRIPT: &str = r#"
import smtplib, sys
from email.message import EmailMessage

mode, port = sys.argv[1], int(sys.argv[2])
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.client.test", timeout=10)
if mode == "features":
    code, _ = s.ehlo()
    print("ehlo", code)
    for k in ["pipelining", "size", "smtputf8", "8bitmime", "enhancedstatuscodes"]:
        print(k, s.has_extn(k))
    print("size_value", s.esmtp_features.get("size", ""))
elif mode == "single":
    s.ehlo()
    s.mail("py@client.test")
    s.rcpt("x@example.com")
    code, msg = s.data(BODY)
    print("reply", code, msg.decode())
elif mode == "several":
    s.ehlo()
    for i in range(3):
        s.mail("py@client.test")
        s.rcpt("r%d@example.com" % i)
        code, msg = s.data(b"Subject: several %d\r\n\r\nmessage %d\r\n" % (i, i))
        print("reply", code, msg.decode())
elif mode == "send_message":
    s.ehlo()
    m = EmailMessage()
    m["From"] = "py@client.test"
    m["To"] = "a@example.com, b@example.com"
    m["Cc"] = "c@example.com"
    m["Subject"] = "send_message test"
    m.set_content("Hello from smtplib.\n")
    print("refused", len(s.send_message(m)))
s.quit()
"#;

/// The body smtplib sends in "single" mode: CRLF lines and dot lines.
const SMTPLIB_BODY: &[u8] =
    b"Subject: py single\r\nFrom: py@client.test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n";

/// Runs the driver; returns its `(key, value)` lines.
fn smtplib(server: &Server, mode: &str) -> Vec<(String, String)> {
    let script = server.dir().join("smtplib_driver.py");
    let body_literal: String = SMTPLIB_BODY.iter().map(|b| format!("\\x{b:02x}")).collect();
    std::fs::write(
        &script,
        format!("BODY = b\"{body_literal}\"\n{SMTPLIB_SCRIPT}"),
    )
    .unwrap();
    let script = script.display().to_string();
    let port = server.port().to_string();
    python_kv(&[&script, mode, &port], &format!("smtplib {mode}"))
}

fn value<'a>(out: &'a [(String, String)], key: &str) -> &'a str {
    kv_value(out, key)
}

/// The queue ids of the `reply 250 2.0.0 OK queued as <id>` lines.
fn queued_ids(out: &[(String, String)]) -> Vec<String> {
    out.iter()
        .filter(|(k, _)| k == "reply")
        .map(|(_, v)| {
            assert!(v.starts_with("250 2.0.0"), "{v:?}");
            v.split("queued as ")
                .nth(1)
                .unwrap_or_else(|| panic!("{v:?}"))
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn smtplib_parses_ehlo_features() {
    let server = Server::start();
    let out = smtplib(&server, "features");
    assert_eq!(value(&out, "ehlo"), "250");
    for k in [
        "pipelining",
        "size",
        "smtputf8",
        "8bitmime",
        "enhancedstatuscodes",
    ] {
        assert_eq!(value(&out, k), "True", "{k}: {out:?}");
    }
    assert_eq!(value(&out, "size_value"), "10485760");
}

#[test]
fn smtplib_single_message_is_stored_byte_exact() {
    let server = Server::start();
    let out = smtplib(&server, "single");
    let ids = queued_ids(&out);
    assert_eq!(ids.len(), 1, "{out:?}");
    let rows = server.rows_for(&ids[0]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].helo, "py.client.test");
    assert_eq!(rows[0].from, "py@client.test");
    assert_mail_blob(&rows[0].mail, "py.client.test", SMTPLIB_BODY);
}

#[test]
fn smtplib_several_messages_on_one_connection() {
    let server = Server::start();
    let out = smtplib(&server, "several");
    let ids = queued_ids(&out);
    assert_eq!(ids.len(), 3, "{out:?}");
    for (i, id) in ids.iter().enumerate() {
        let rows = server.rows_for(id);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].recipient, format!("r{i}@example.com"));
        assert_eq!(rows[0].subject, format!("several {i}"));
        let body = format!("Subject: several {i}\r\n\r\nmessage {i}\r\n");
        assert_mail_blob(&rows[0].mail, "py.client.test", body.as_bytes());
    }
    assert_eq!(server.row_count(), 3);
}

#[test]
fn smtplib_send_message_to_three_recipients() {
    let server = Server::start();
    let out = smtplib(&server, "send_message");
    assert_eq!(value(&out, "refused"), "0");
    let rows = server.rows();
    assert_eq!(rows.len(), 3, "one row per recipient");
    let mut rcpts: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@example.com", "b@example.com", "c@example.com"]);
    assert!(rows.iter().all(|r| r.hash == rows[0].hash), "one message");
    for r in &rows {
        assert_eq!(r.subject, "send_message test");
        let mail = String::from_utf8_lossy(&r.mail);
        assert!(
            mail.ends_with("\r\n\r\nHello from smtplib.\r\n"),
            "{mail:?}"
        );
    }
}

fn swaks(server: &Server, extra: &[&str]) -> std::process::Output {
    let out = run_tool(
        Command::new("swaks")
            .arg("--server")
            .arg(format!("127.0.0.1:{}", server.port()))
            .args(["--helo", "swaks.test"])
            .args(extra),
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "swaks {extra:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn swaks_simple_message() {
    let server = Server::start();
    swaks(
        &server,
        &[
            "--to",
            "a@example.com",
            "--from",
            "b@example.org",
            "--h-Subject",
            "swaks simple",
            "--body",
            "Body from swaks.",
        ],
    );
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recipient, "a@example.com");
    assert_eq!(rows[0].from, "b@example.org");
    assert_eq!(rows[0].helo, "swaks.test");
    assert_eq!(rows[0].subject, "swaks simple");
    let mail = String::from_utf8_lossy(&rows[0].mail);
    assert!(mail.contains("\r\n\r\nBody from swaks.\r\n"), "{mail:?}");
}

#[test]
fn swaks_pipelined_to_several_recipients() {
    let server = Server::start();
    swaks(
        &server,
        &[
            "--pipeline",
            "--to",
            "a@example.com,b@example.com",
            "--from",
            "b@example.org",
            "--body",
            "pipelined",
        ],
    );
    let rows = server.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].hash, rows[1].hash);
}

#[test]
fn swaks_data_from_file_is_stored_byte_exact() {
    let server = Server::start();
    let file = server.dir().join("swaks.eml");
    // No '%' (swaks expands %TOKENS% in --data). swaks sends the file, then its own
    // CRLF before the terminating dot line.
    let content: &[u8] = b"From: b@example.org\r\nTo: a@example.com\r\nSubject: swaks file\r\n\r\nline\r\n.dot line\r\n\r\nlast";
    std::fs::write(&file, content).unwrap();
    swaks(
        &server,
        &[
            "--to",
            "a@example.com",
            "--from",
            "b@example.org",
            "--data",
            file.to_str().unwrap(),
        ],
    );
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    let mut expected = content.to_vec();
    expected.extend_from_slice(b"\r\n");
    assert_mail_blob(&rows[0].mail, "swaks.test", &expected);
}

#[test]
fn curl_upload_is_stored_byte_exact() {
    let server = Server::start();
    let file = server.dir().join("msg.eml");
    let content: &[u8] = b"From: a@b.c\r\nTo: x@example.com\r\nSubject: curl upload\r\n\r\nHello from curl.\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";
    std::fs::write(&file, content).unwrap();
    let out = run_tool(
        Command::new("curl")
            .arg("-sS")
            .arg(format!("smtp://127.0.0.1:{}/curl.test", server.port()))
            .args(["--mail-from", "a@b.c"])
            .args(["--mail-rcpt", "x@example.com"])
            .args(["--mail-rcpt", "y@example.com"])
            .arg("--upload-file")
            .arg(&file),
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "curl failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = server.rows();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.helo, "curl.test");
        assert_eq!(r.from, "a@b.c");
        assert_eq!(r.subject, "curl upload");
        assert_mail_blob(&r.mail, "curl.test", content);
    }
}
