//! The SMTP protocol core: pure, sans-I/O, unit-tested and fuzzed without sockets.
//!
//! Owns: everything about the SMTP conversation (RFC 5321 with PIPELINING RFC 2920,
//! SIZE RFC 1870, 8BITMIME RFC 6152, ENHANCEDSTATUSCODES RFC 2034/3463, SMTPUTF8
//! RFC 6531): framing, parsing, sequencing, limits, DATA un-stuffing and the
//! smuggling defence, and the reply table. Must not: read clocks, touch sockets,
//! spawn threads or talk to the store. Time arrives as `on_timeout`, commit results
//! as `on_stored`.
//!
//! - [`session`]: the state machine the reactor drives.
//! - [`command`]: one command line → a [`command::Command`].
//! - [`address`]: paths (`<local@domain>`).
//! - [`data`]: the message body scanner (DATA).
//! - [`chunk`]: the message body of BDAT chunks (RFC 3030 CHUNKING, BINARYMIME).
//! - [`domains`]: which recipient domains are accepted.
//! - [`proxy`]: the HAProxy PROXY header (v1/v2) a load balancer sends first.
//! - [`reply`]: every reply's code, enhanced code and text.

// STYLE.md §5: nothing a client sends may panic the protocol core; checked
// arithmetic and checked indexing only (tests opt out locally).
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod address;
pub mod chunk;
pub mod command;
pub mod data;
pub mod domains;
pub mod proxy;
pub mod reply;
pub mod session;

pub use domains::{DomainPatternError, DomainPolicy};
pub use session::{Event, Fed, Opening, Phase, Session, SessionConfig, write_too_busy};
