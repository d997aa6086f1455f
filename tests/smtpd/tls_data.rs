//! The data tier over TLS with a private CA (`test_support::ca`): MariaDB that
//! refuses plaintext TCP (`require_secure_transport=ON`) and a TLS-only
//! redis-server. smtpd stores over TLS to both; a CA that does not verify the
//! server fails the start with an error naming the setting (MariaDB's `ssl-ca`, and
//! Redis's in cache and in Guerrilla mode: exit 2, `redis.url`); the password is
//! never printed.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use test_support::ca::TestCa;

use crate::support::services::{DB_PASSWORD, Mariadb, Redis};
use crate::support::{Opts, Server, run_smtpd_to_exit, simple_message};

/// The store URL over TLS, verified against `ca`.
fn tls_url(db: &Mariadb, mode: &str, ca: &std::path::Path) -> String {
    format!("{}?ssl-mode={mode}&ssl-ca={}", db.plain_url(), ca.display())
}

/// `Ssl_cipher` of a session opened with `url` (empty: not encrypted).
fn session_cipher(url: &str) -> Result<String, String> {
    let url: mailstore::StoreUrl = url.parse().map_err(|e| format!("{e}"))?;
    let mailstore::StoreUrl::Mysql(url) = url else {
        unreachable!()
    };
    let opts = url.opts().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pool = mysql_async::Pool::new(opts);
        let mut conn = tokio::time::timeout(Duration::from_secs(10), pool.get_conn())
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let row: Option<(String, String)> = conn
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .map_err(|e| e.to_string())?;
        drop(conn);
        let _ = pool.disconnect().await;
        Ok(row.map(|r| r.1).unwrap_or_default())
    })
}

#[test]
fn smtpd_stores_over_tls_to_mariadb_and_redis_and_a_wrong_ca_fails_the_start() {
    let ca = TestCa::new("smtpd test CA");
    let db = Mariadb::start_tls(&ca);
    let redis = Redis::start_tls(&ca);

    // The server really refuses plaintext TCP, and our URL form really encrypts.
    let plain = session_cipher(&db.plain_url());
    assert!(plain.is_err(), "plaintext accepted: {plain:?}");
    for mode in ["required", "verify_ca", "verify_identity"] {
        let cipher = session_cipher(&tls_url(&db, mode, &ca.ca())).unwrap();
        println!("ssl-mode={mode}: Ssl_cipher {cipher}");
        assert!(!cipher.is_empty(), "{mode}: not encrypted");
    }

    let toml = format!(
        "[redis]\nurl = \"{}\"\nttl_secs = 600\n",
        redis.tls_url(&ca.ca())
    );
    let before = db.count("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SSL_ACCEPTS'");
    let server = Server::start_with(
        Opts::config(&toml)
            .store(&tls_url(&db, "verify_identity", &ca.ca()))
            .arg("--migrate"),
    );
    let mut c = server.client();
    c.ehlo("client.example");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(c.deliver(
            "s@example.org",
            &["tls@example.com"],
            &simple_message(&format!("over tls {n}")),
        ));
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM new_mail WHERE recipient = 'tls@example.com'"),
        5
    );
    for id in &ids {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("smtpd:mail:{id}"))
            .query(&mut redis.conn())
            .unwrap();
        assert!(v.is_some(), "{id} cached over TLS");
    }
    let after = db.count("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SSL_ACCEPTS'");
    println!(
        "MariaDB TLS handshakes during smtpd's run: {}",
        after - before
    );
    assert!(after > before, "smtpd's sessions were TLS");
    assert!(!server.stderr().contains(&format!(":{DB_PASSWORD}@")));

    // A CA that did not sign the server's certificate: the start fails, naming it.
    let other = TestCa::new("some other CA");
    let dir = tempfile::tempdir().unwrap();
    for mode in ["verify_ca", "verify_identity", "required"] {
        let args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--store",
            &tls_url(&db, mode, &other.ca()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(20));
        println!("wrong CA, ssl-mode={mode}: exit {code}: {}", stderr.trim());
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains("ssl-mode/ssl-ca"), "{stderr}");
        assert!(!stderr.contains(&format!(":{DB_PASSWORD}@")), "{stderr}");
    }
    // A CA file that is not there is a config error naming the field.
    let args: Vec<String> = [
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--store".into(),
        format!(
            "{}?ssl-mode=verify_ca&ssl-ca=/nonexistent/ca.pem",
            db.plain_url()
        ),
    ]
    .to_vec();
    let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(10));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ssl-ca=/nonexistent/ca.pem"), "{stderr}");

    // Redis with a CA that did not sign its certificate: not a cache outage to
    // start through but a configuration error, in either mode (exit 2, no restart
    // by systemd), before any client is answered.
    for mode in ["cache", "guerrilla"] {
        let config = dir.path().join(format!("{mode}.toml"));
        std::fs::write(
            &config,
            format!(
                "[redis]\nurl = \"{}\"\nmode = \"{mode}\"\n",
                redis.tls_url(&other.ca())
            ),
        )
        .unwrap();
        let args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--store",
            "sqlite:wrong-redis-ca.sqlite",
            "--config",
            &config.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(20));
        println!(
            "wrong Redis CA, {mode} mode: exit {code}: {}",
            stderr.trim()
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("redis.url")
                && stderr.contains("invalid peer certificate: UnknownIssuer")
                && stderr.contains("ssl-ca"),
            "{stderr}"
        );
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}
