//! The HTTP serving layer `smtpd --http` and `outbound web` share: both face
//! hostile clients on the public internet (the mailbox API, the tracking routes),
//! so both need the same bounds, and both answer errors in the same JSON shape.
//!
//! - [`limits`]: [`Limits`], the bounds of one server (open connections, the time
//!   a client has for a request head, the shutdown deadline).
//! - [`server`]: [`serve`], the accept loop: one slot per open connection (at the
//!   cap, new connections wait in the kernel's backlog), HTTP/1.1 with a
//!   request-head read timeout, the client's address as
//!   `ConnectInfo<SocketAddr>`, and a graceful stop bounded by a deadline.
//! - [`error`]: [`ApiError`], a status and `{"error": "..."}` naming the field or
//!   object at fault (a contract of both APIs).
//! - [`extract`]: [`ApiPath`], [`ApiQuery`] and the JSON body rejection, the
//!   extractors whose own rejections would otherwise be plain text.
//!
//! Must not: know any route, store or config file (the daemons own those and name
//! their own config fields).

pub mod error;
pub mod extract;
pub mod limits;
pub mod server;

pub use error::{ApiError, ApiResult};
pub use extract::{ApiPath, ApiQuery, json_rejection};
pub use limits::Limits;
pub use server::{Stopped, serve};
