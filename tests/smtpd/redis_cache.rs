//! The Redis cache against private MariaDB and Redis instances: keys, TTLs, inbox
//! lists, notifications, compression, Guerrilla mode, Redis outages.

use std::io::Read;
use std::time::Duration;

use crate::support::services::{Mariadb, Redis};
use crate::support::{Opts, Server, simple_message};

fn server(db: &Mariadb, redis: &Redis, extra_config: &str) -> Server {
    let toml = format!(
        "[redis]\nurl = \"{}\"\nttl_secs = 600\ninbox_max = 3\n{extra_config}\n",
        redis.url()
    );
    Server::start_with(Opts::config(&toml).store(&db.url()).arg("--migrate"))
}

fn get(redis: &Redis, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(&mut redis.conn()).unwrap()
}

fn ttl(redis: &Redis, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(&mut redis.conn()).unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn cache_mode_writes_the_message_the_inbox_and_a_notification() {
    let db = Mariadb::start();
    let redis = Redis::start();
    let server = server(&db, &redis, "");

    // Subscribe before sending: the notification must arrive.
    let mut sub_conn = redis.conn();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe("smtpd:new:bob@example.com").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mut c = server.client();
    c.ehlo("client.example");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(c.deliver(
            "s@example.org",
            &["bob@example.com"],
            &simple_message(&format!("m{n}")),
        ));
    }
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "smtpd:new:bob@example.com");
    assert_eq!(msg.get_payload::<String>().unwrap(), ids[0]);

    for id in &ids {
        let stored = db.query(&format!("SELECT mail FROM new_mail WHERE hash = '{id}'"));
        let cached = get(&redis, &format!("smtpd:mail:{id}")).expect("cached body");
        assert_eq!(
            cached, stored[0][0],
            "cache and database hold the same bytes"
        );
        let t = ttl(&redis, &format!("smtpd:mail:{id}"));
        assert!(t > 0 && t <= 600, "ttl {t}");
    }
    // Newest first, trimmed to inbox_max = 3, with a TTL.
    let inbox: Vec<String> = redis::cmd("LRANGE")
        .arg("smtpd:inbox:bob@example.com")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(inbox, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    assert!(ttl(&redis, "smtpd:inbox:bob@example.com") > 0);
}

#[test]
fn large_compressible_messages_are_stored_gzipped() {
    let db = Mariadb::start();
    let redis = Redis::start();
    let server = server(&db, &redis, "compress_min_bytes = 4096");
    let mut c = server.client();
    c.ehlo("client.example");
    let body = format!(
        "Subject: big\r\n\r\n{}",
        "The quick brown fox.\r\n".repeat(2000)
    );
    let id = c.deliver("s@example.org", &["x@example.com"], body.as_bytes());
    let small = c.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("small"),
    );
    let cached = get(&redis, &format!("smtpd:mail:{id}")).unwrap();
    assert_eq!(&cached[..2], &[0x1f, 0x8b], "gzip magic");
    let stored = db.query(&format!("SELECT mail FROM new_mail WHERE hash = '{id}'"));
    assert!(cached.len() < stored[0][0].len() / 5);
    assert_eq!(gunzip(&cached), stored[0][0]);
    // Small messages stay plain.
    let cached_small = get(&redis, &format!("smtpd:mail:{small}")).unwrap();
    assert!(cached_small.starts_with(b"Received: "));
}

#[test]
fn redis_down_at_start_in_cache_mode_still_starts_stores_and_acknowledges() {
    let db = Mariadb::start();
    let mut redis = Redis::start();
    // Down before smtpd starts: a transient failure, not a configuration error.
    redis.stop();
    let server = server(&db, &redis, "");
    assert!(
        server.stderr().contains("Redis unreachable at start"),
        "{}",
        server.stderr()
    );
    let mut c = server.client();
    c.ehlo("client.example");
    let id = c.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("no cache"),
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM new_mail WHERE hash = '{id}'"
        )),
        1
    );
    // Back up: later messages are cached again (after the reconnect backoff).
    redis.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let id = c.deliver(
            "s@example.org",
            &["x@example.com"],
            &simple_message("cached again"),
        );
        if get(&redis, &format!("smtpd:mail:{id}")).is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cache never came back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn guerrilla_mode_keeps_bodies_only_in_redis_and_needs_it() {
    let db = Mariadb::start();
    let mut redis = Redis::start();
    let server = server(&db, &redis, "mode = \"guerrilla\"");
    let mut c = server.client();
    c.ehlo("client.example");
    let data = simple_message("guerrilla");
    let id = c.deliver("s@example.org", &["g@example.com"], &data);
    let rows = db.query(&format!(
        "SELECT body, LENGTH(mail), recipient FROM new_mail WHERE hash = '{id}'"
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], b"redis");
    assert_eq!(rows[0][1], b"0");
    let cached = get(&redis, &format!("smtpd:mail:{id}")).unwrap();
    crate::support::assert_mail_blob(&cached, "client.example", &data);
    assert!(ttl(&redis, &format!("smtpd:mail:{id}")) > 0);

    // Without Redis there is nowhere to keep the body: 451, and no row.
    redis.stop();
    let before = db.count("SELECT COUNT(*) FROM new_mail");
    let r = c.transaction(
        "s@example.org",
        &["g2@example.com"],
        &simple_message("lost?"),
    );
    r.assert(451, "4.3.0");
    assert_eq!(db.count("SELECT COUNT(*) FROM new_mail"), before);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM new_mail WHERE recipient = 'g2@example.com'"),
        0
    );
}

#[test]
fn redis_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, field) in [
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\nmode = \"sometimes\"\n",
            "redis.mode",
        ),
        ("[redis]\nurl = \"http://x\"\n", "redis.url"),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\nttl_secs = 0\n",
            "redis.ttl_secs",
        ),
        (
            "[retention]\ninterval_secs = 0\n",
            "retention.interval_secs",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let args: Vec<String> = ["-c", &path.display().to_string(), "--listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (code, stderr) =
            crate::support::run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(10));
        assert_eq!(code, 2, "{toml}: {stderr}");
        assert!(stderr.contains(field), "{toml}: {stderr}");
    }
}
