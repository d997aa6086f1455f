//! End-to-end tests: the real `smtpd` binary, spawned per test in its own temp dir
//! on a free loopback port, driven over TCP by a raw client or real SMTP clients, and
//! checked against the rows it committed to SQLite.
//!
//! Layout (one test binary, as ripgrep does):
//! - [`support`]: the `Server` wrapper, the raw SMTP `Client`, store read-back.
//! - [`replies`]: every command's reply code and enhanced code, sequencing, domain
//!   policy, PIPELINING, SMTPUTF8.
//! - [`data`]: the message body: byte-exact storage, dot-unstuffing, the SMTP
//!   smuggling defence, size and line limits.
//! - [`limits`]: recipient limit, timeouts, connection limit, many connections.
//! - [`memory`]: the in-flight budget as a bound on RSS, fairness between clients,
//!   spool files and their removal.
//! - [`store`]: the `new_mail` columns, store failure (`451`).
//! - [`lifecycle`]: signals and graceful shutdown, SIGKILL durability, the default
//!   no-argument run, configuration errors.
//! - [`chunking`]: RFC 3030 BDAT and BINARYMIME.
//! - [`clients`]: Python `smtplib`, `swaks` and `curl` against the server.
//! - [`transcripts`]: the golden transcripts in `transcripts/`, replayed live.
//! - [`http`]: `smtpd --http`: the mailbox API, event stream and inbox page (chromium).
//! - [`packaging`]: the Debian packages installed, run and purged (root only).
//! - [`ops`]: metrics, health, systemd notify, SIGHUP reload, SIGUSR1 log reopen.
//! - [`mariadb`], [`redis_cache`], [`faults`], [`retention`]: the production stores
//!   against private MariaDB and Redis instances ([`support::services`]).
//! - [`redis_cluster`]: the cache on a three-master Redis Cluster, a master killed
//!   under load (one test, the cluster started once).
//! - [`redis_cluster_tls`]: the cache on a TLS-only Redis Cluster
//!   (`rediss+cluster://`), a wrong CA failing the start.
//! - [`tls_data`]: MariaDB and Redis over TLS with a private CA.
//! - [`galera`]: two smtpd nodes on a three-node MariaDB Galera cluster, one Galera
//!   node killed under load (one test, the cluster started once).
//!
//! Every test is bounded in time (reads time out, loops are bounded, servers are
//! killed on drop), and only the default-run test uses a fixed port (2525).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod chunking;
mod clients;
mod data;
mod faults;
mod galera;
mod hostile;
mod http;
mod lifecycle;
mod limits;
mod mariadb;
mod memory;
mod ops;
mod packaging;
mod proxy;
mod redis_cache;
mod redis_cluster;
mod redis_cluster_tls;
mod replies;
mod retention;
mod store;
mod tls;
mod tls_data;
mod transcripts;
