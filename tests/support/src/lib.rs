//! Helpers shared by the end-to-end test suites (`tests/smtpd`, `tests/outbound`),
//! linked as a dev-dependency so no suite reaches into another's files.
//!
//! - [`services`]: private MariaDB and Redis instances, each in its own temp dir on
//!   a free loopback port, stopped on drop; `free_port`; `signal_pid`.
//! - [`galera`]: a private three-node MariaDB Galera cluster built from those
//!   MariaDB instances.

//! - [`scrape`]: curl a telemetry listener, read Prometheus samples.
//! - [`units`]: `systemd-analyze verify` and `security` on the units in `systemd/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod galera;
pub mod scrape;
pub mod services;
pub mod units;
