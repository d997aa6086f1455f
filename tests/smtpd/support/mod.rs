//! Test support, by what it provides:
//!
//! - `server`: a [`Server`] (the real `smtpd` binary in its own temp dir) and
//!   running the binary to its exit; external tools under a deadline.
//! - `client`: a tiny raw SMTP [`Client`] over a blocking `TcpStream`, and the
//!   messages tests send.
//! - `store`: read-back of the `new_mail` rows the server committed.
//! - [`services`]: private MariaDB and Redis (the `test-support` crate, shared
//!   with the relay's suite).
//!
//! Everything here is bounded in time: the server must announce its port within
//! [`START_TIMEOUT`], every read gives up after [`READ_TIMEOUT`], external tools run
//! under [`run_tool`] with a deadline, and dropping a [`Server`] kills its process.
//! Servers only ever listen on 127.0.0.1.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::time::Duration;

mod client;
mod server;
mod store;

pub use client::*;
pub use server::*;
pub use store::*;

pub use test_support::{scrape, services, units};

/// The server binary under test, built by cargo for this test crate.
pub const SMTPD: &str = env!("CARGO_BIN_EXE_smtpd");
/// How long a server may take to print `smtpd: listening on ...`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client waits for any one reply line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The name every test server is started with (greeting, EHLO, `Received:`).
pub const HOSTNAME: &str = "mx.test";
/// The stderr line that tells us the bound address.
const LISTENING_PREFIX: &str = "smtpd: listening on ";
/// Stderr kept per server for failure messages; beyond it the oldest half is dropped
/// (the drain thread keeps reading either way, so the child never blocks on a pipe).
const MAX_STDERR_BYTES: usize = 1 << 20;
