//! Helpers shared by the end-to-end test suites (`tests/smtpd`, `tests/outbound`),
//! linked as a dev-dependency so no suite reaches into another's files.
//!
//! - [`services`]: private MariaDB and Redis instances, each in its own temp dir on
//!   a free loopback port, stopped on drop; `free_port`; `signal_pid`.
//! - [`galera`]: a private three-node MariaDB Galera cluster built from those
//!   MariaDB instances.

//! - [`redis_cluster`]: a private three-master Redis Cluster built from those Redis
//!   instances.
//! - [`ca`]: a private CA (openssl) and a server certificate for the data-tier TLS
//!   tests.
//! - [`scrape`]: curl a telemetry listener, read Prometheus samples.
//! - [`units`]: `systemd-analyze verify` and `security` on the units in `systemd/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod ca;
pub mod galera;
pub mod redis_cluster;
pub mod scrape;
pub mod services;
pub mod units;
