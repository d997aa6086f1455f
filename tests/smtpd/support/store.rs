//! Read-back of what the server committed: `new_mail` rows from the SQLite file,
//! and the check that a stored `mail` blob is a `Received:` header plus exactly the
//! bytes sent.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// One `new_mail` row.
#[derive(Debug, Clone)]
pub struct Row {
    pub mail_id: i64,
    pub date: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub charset: String,
    pub mail: Vec<u8>,
    pub hash: String,
    pub content_type: String,
    pub recipient: String,
    pub ip_addr: String,
    pub return_path: String,
    pub is_tls: i64,
    pub message_id: String,
    pub helo: String,
    pub size: i64,
}

pub fn open_db(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

pub fn rows(conn: &Connection) -> Vec<Row> {
    let mut stmt = conn
        .prepare(
            "SELECT mail_id, date, \"from\", \"to\", subject, body, charset, mail, hash, \
             content_type, recipient, ip_addr, return_path, is_tls, message_id, helo, size \
             FROM new_mail ORDER BY mail_id",
        )
        .expect("prepare select");
    stmt.query_map([], |r| {
        Ok(Row {
            mail_id: r.get(0)?,
            date: r.get(1)?,
            from: r.get(2)?,
            to: r.get(3)?,
            subject: r.get(4)?,
            body: r.get(5)?,
            charset: r.get(6)?,
            mail: r.get(7)?,
            hash: r.get(8)?,
            content_type: r.get(9)?,
            recipient: r.get(10)?,
            ip_addr: r.get(11)?,
            return_path: r.get(12)?,
            is_tls: r.get(13)?,
            message_id: r.get(14)?,
            helo: r.get(15)?,
            size: r.get(16)?,
        })
    })
    .expect("query rows")
    .collect::<Result<Vec<_>, _>>()
    .expect("read rows")
}

/// Asserts a stored `mail` blob is a `Received:` header for `helo` from 127.0.0.1,
/// folded with CRLF + whitespace, followed by exactly `data`.
#[track_caller]
pub fn assert_mail_blob(mail: &[u8], helo: &str, data: &[u8]) {
    assert!(
        mail.ends_with(data),
        "stored mail does not end with the sent bytes\nsent   ({} bytes): {:?}\nstored ({} bytes): {:?}",
        data.len(),
        String::from_utf8_lossy(data),
        mail.len(),
        String::from_utf8_lossy(mail)
    );
    let prefix = &mail[..mail.len() - data.len()];
    let want = format!("Received: from {helo} ([127.0.0.1])");
    assert!(
        prefix.starts_with(want.as_bytes()),
        "stored mail does not start with {want:?}: {:?}",
        String::from_utf8_lossy(prefix)
    );
    assert!(
        prefix.ends_with(b"\r\n"),
        "Received: header not ended by CRLF: {:?}",
        String::from_utf8_lossy(prefix)
    );
    // Folded: every line end inside the header is CRLF and followed by whitespace.
    let body = &prefix[..prefix.len() - 2];
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\n' => {
                assert!(
                    i > 0 && body[i - 1] == b'\r',
                    "bare LF in Received: header: {:?}",
                    String::from_utf8_lossy(prefix)
                );
                assert!(
                    matches!(body.get(i + 1), Some(b' ') | Some(b'\t')),
                    "Received: header line not folded with whitespace: {:?}",
                    String::from_utf8_lossy(prefix)
                );
            }
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR in Received: header"),
            _ => {}
        }
    }
}
