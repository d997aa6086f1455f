//! Tracking of campaign mail: masked links, open pixels and one-click
//! unsubscribe URLs (RFC 8058), all on the campaign's tracking domains and all
//! served by `outbound web` (`web::tracking`).
//!
//! Layout: `token` (the signed tokens, pure), `links` (link extraction at
//! campaign creation and per-recipient rewriting at render time, pure), `store`
//! (the SQL: tracking domains, campaign links, clicks and opens, counts).
//!
//! Owns: what is masked and how a token names a campaign, link and subscriber.
//! Must not: sit on the delivery path's I/O (the relay renders with maps loaded
//! once per campaign), nor write clicks synchronously (the web's writer task does).

pub mod links;
pub mod store;
pub mod token;
