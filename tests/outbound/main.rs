//! End-to-end tests of the `outbound` relay: the real binary against real parts
//! started by the harness — a private MariaDB (or the embedded SQLite file) as the
//! queue, destination SMTP servers on loopback (`fixtures/smtp_dest.py`, aiosmtpd)
//! that accept, defer or reject chosen recipients, and an authoritative DNS server
//! on loopback (`fixtures/dns_server.py`, dnslib) serving the test domains' MX
//! records to the relay's resolver.
//!
//! - [`support`]: the process wrappers (relay, destinations, DNS) and queue helpers.
//! - [`delivery`]: delivery, grouping and connection reuse, retries, permanent
//!   failures, giving up, STARTTLS, templates, suppression, the CLI.
//! - [`routing`]: MX preference and fallback, implicit MX, null MX, NXDOMAIN,
//!   SERVFAIL.
//! - [`limits`]: per-domain rate and connection limits, measured at the destination
//!   (the shared rate through one Redis and through a three-master Redis Cluster).
//! - [`tls_data`]: the queue in a MariaDB that takes TLS only (private CA).
//! - [`nodes`]: two relays sharing one MariaDB queue; a relay killed mid-run.
//! - [`galera`]: relays on a three-node MariaDB Galera cluster (one test, the
//!   cluster started once): two relays on two nodes, a relay killed mid-batch.
//! - [`campaigns`]: campaigns over the API and the CLI, expanded and delivered by
//!   relays: the recipient rule, tags, pause/resume/cancel, priority, takeover.
//! - [`console`]: the web console over curl (sessions, CSRF, isolation,
//!   escaping) and in headless chromium (a campaign run from the browser).
//! - [`sending`]: DKIM verified by dkimpy, sending IP pools, dns-records and
//!   dns-check, per-message expiry.
//! - [`bounces`]: the bounce loop with `smtpd`: VERP, DSNs both ways, suppression,
//!   forged bounces, unsubscribe.
//!
//! - [`web_serve`]: the serving layer: slowloris heads cut at the timeout, the
//!   connection cap, idle keep-alives, SIGTERM with requests in flight.
//! - [`ops`]: the metrics listeners, `/readyz` with MariaDB stopped, sd-notify.
//! - [`tracking`]: masked links, clicks, the open pixel and one-click unsubscribe.
//! - [`confirmations`]: double opt-in confirmations, their `/c/` link and throttles.
//! - [`account_limits`]: per-account sending rate, daily quota, auto-pause on
//!   complaints, and the complaint-address config check.
//!
//! Every wait is bounded; every process is killed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod account_limits;
mod bounces;
mod campaigns;
mod complaints;
mod confirmations;
mod console;
mod delivery;
mod flow;
mod galera;
mod imports;
mod limits;
mod lists;
mod nodes;
mod ops;
mod routing;
mod sending;
mod tls_data;
mod tracking;
mod web;
mod web_serve;
