//! Operational plumbing that `smtpd` and `outbound` share, so both behave alike to
//! an operator: the same configuration errors (naming the field at fault), the same
//! host-name rules, the same logging.
//!
//! - [`config`]: [`ConfigError`], TOML file reading, range checks.
//! - [`host`]: the machine's name (from the kernel, no resolver) and what may be
//!   used as a host name in greetings, EHLO and headers.
//! - [`logging`]: the tracing subscriber: an environment filter, stderr (colours
//!   only for a person at a terminal) or an append-only file (never colours).

pub mod config;
pub mod host;
pub mod logging;

pub use config::{ConfigError, bounded, invalid, parse_toml, read_toml};
