//! Operational plumbing that `smtpd` and `outbound` share, so both behave alike to
//! an operator: the same configuration errors (naming the field at fault), the same
//! host-name rules, the same logging, the same telemetry and systemd integration.
//!
//! - [`config`]: [`ConfigError`], TOML file reading, range checks.
//! - [`host`]: the machine's name (from the kernel, no resolver) and what may be
//!   used as a host name in greetings, EHLO and headers.
//! - [`logging`]: the tracing subscriber: an environment filter, stderr (colours
//!   only for a person at a terminal) or an append-only file (never colours), a
//!   log level changed live and a log file reopened (SIGUSR1).
//! - [`telemetry`]: the `/metrics`, `/healthz`, `/readyz` listener.
//! - [`notify`]: systemd's notify protocol and the watchdog fed by loop heartbeats.
//! - [`topn`]: a bounded label set (the first N values seen, the rest as `other`).

pub mod config;
pub mod host;
mod log_text;
pub mod logging;
pub mod notify;
pub mod telemetry;
pub mod topn;

pub use config::{ConfigError, bounded, invalid, parse_toml, read_toml};
