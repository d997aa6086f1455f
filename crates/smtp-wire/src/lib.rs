//! The SMTP wire format as every part of the workspace speaks it from the client
//! side: the relay (`outbound`), the load generator (`bench`) and the end-to-end
//! tests. (The server's own replies are `smtpd::protocol::reply`'s table.)
//!
//! - [`enhanced`]: enhanced status codes (RFC 3463) as a typed value.
//! - [`reply`]: reading replies (RFC 5321 §4.2): one parser with bounds on what a
//!   server may send.
//! - [`ehlo`]: the extensions an EHLO reply offers (RFC 5321 §4.1.1.1).
//! - [`data`]: DATA transparency (RFC 5321 §4.5.2): CRLF line ends, leading dots
//!   doubled, the terminating line.
//! - [`tls_client`]: the unverified client TLS of opportunistic STARTTLS.
//!
//! Must not: do I/O. Everything here is bytes in, values out.

pub mod data;
pub mod ehlo;
pub mod enhanced;
pub mod reply;
pub mod tls_client;

pub use ehlo::Extensions;
pub use enhanced::EnhancedCode;
pub use reply::{Reply, ReplyError, ReplyParser};
