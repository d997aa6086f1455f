//! `smtpd`: an inbound SMTP sink that commits every accepted message to a database
//! before it answers `250`.
//!
//! # Layout
//!
//! - [`protocol`]: the pure, I/O-free SMTP core: command parsing, the RFC 5321 state
//!   machine, DATA un-stuffing, limits, the reply table. No sockets, clocks or threads.
//! - [`reactor`]: the mio event loops (one per core, SO_REUSEPORT): accept, read,
//!   write, timers, connection limits. Never blocks and never touches the store.
//! - [`store`]: the storage stage: committer threads that batch messages into one
//!   transaction (group commit), extract the indexed header fields, and report back.
//! - [`handoff`]: the plain values that cross between those three.
//! - [`spool`]: files for message bodies too large to hold in memory, from the
//!   reactor that receives them to the committer that stores them.
//! - [`config`]: the TOML file and command line, validated into one `Config`.
//! - [`http`]: `smtpd --http`: the mailbox API, its event stream and the inbox
//!   page, on their own threads, reading the store the committer writes.
//! - [`ip_text`]: client addresses as text, cheaply (they are written three times a
//!   message).
//! - [`tls`]: certificate loading and the reloadable rustls configuration.
//! - [`metrics`]: the Prometheus metrics and what `/readyz` reports.

#![forbid(unsafe_code)]

pub mod config;
pub mod handoff;
pub mod http;
pub mod ip_text;
pub mod metrics;
pub mod protocol;
pub mod reactor;
pub mod spool;
pub mod store;
pub mod tls;
