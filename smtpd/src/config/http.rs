//! `[http]`: `smtpd --http`, the mailbox API (off unless `listen` is set).
//!
//! Kept in its own file: the section's raw form, its defaults and its validation.

use std::net::SocketAddr;

use ops::{ConfigError, bounded, invalid};
use serde::Deserialize;

use super::cli::Cli;

/// Requests per second per client IP in public mode (a reader polls a few times a
/// second at most; the page uses the event stream).
pub const DEFAULT_HTTP_RATE_PER_IP: u32 = 20;
/// Open event streams per client IP (a few browser tabs).
pub const DEFAULT_HTTP_MAX_STREAMS_PER_IP: usize = 8;
/// Open event streams in total (each holds a connection and a small buffer).
pub const DEFAULT_HTTP_MAX_STREAMS: usize = 1024;
/// Open HTTP connections (streams included); more wait to be accepted.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 4096;
/// Shortest accepted bearer token: a guessable token is no access control.
const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub public: Option<bool>,
    pub rate_per_ip: Option<u32>,
    pub max_streams_per_ip: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

/// Who may use the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAccess {
    /// `http.token`: `Authorization: Bearer <token>` on every request.
    Token(String),
    /// `http.public = true`: knowing an address (of `server.accept_domains`) is the
    /// key; requests per IP are rate limited.
    Public,
}

/// `[http]`, validated; `None` in [`super::Config`] when `listen` is not set.
#[derive(Debug, Clone)]
pub struct Http {
    pub listen: SocketAddr,
    pub access: HttpAccess,
    /// Requests per second per IP (public mode; 0 = unlimited).
    pub rate_per_ip: u32,
    pub max_streams_per_ip: usize,
    pub max_streams: usize,
    /// Open connections at most (event streams included).
    pub max_connections: usize,
    /// Open connections one client address may hold (0: no limit, the default:
    /// behind a reverse proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
}

pub(super) fn http(raw: RawHttp, cli: &Cli) -> Result<Option<Http>, ConfigError> {
    let Some(text) = cli.http.clone().or(raw.listen) else {
        return Ok(None);
    };
    let listen: SocketAddr = text.parse().map_err(|_| {
        invalid(
            "http.listen",
            format!("{text:?} is not an ADDR:PORT (e.g. 127.0.0.1:8025)"),
        )
    })?;
    let public = raw.public.unwrap_or(false);
    let access = match (raw.token, public) {
        (Some(_), true) => {
            return Err(invalid(
                "http.token",
                "set either http.token or http.public = true, not both",
            ));
        }
        (Some(t), false) => {
            if t.chars().count() < MIN_TOKEN_CHARS || !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(
                    "http.token",
                    format!("must be at least {MIN_TOKEN_CHARS} printable ASCII characters"),
                ));
            }
            HttpAccess::Token(t)
        }
        (None, true) => HttpAccess::Public,
        (None, false) => {
            return Err(invalid(
                "http.token",
                "is required with http.listen (or set http.public = true for the temporary-mailbox mode)",
            ));
        }
    };
    let rate_per_ip = raw.rate_per_ip.unwrap_or(DEFAULT_HTTP_RATE_PER_IP);
    bounded("http.rate_per_ip", rate_per_ip, 0, 100_000)?;
    let max_streams_per_ip = raw
        .max_streams_per_ip
        .unwrap_or(DEFAULT_HTTP_MAX_STREAMS_PER_IP);
    bounded("http.max_streams_per_ip", max_streams_per_ip, 1, 100_000)?;
    let max_streams = raw.max_streams.unwrap_or(DEFAULT_HTTP_MAX_STREAMS);
    bounded("http.max_streams", max_streams, 1, 1_000_000)?;
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS);
    bounded("http.max_connections", max_connections, 1, 1_000_000)?;
    let max_connections_per_ip = raw.max_connections_per_ip.unwrap_or(0);
    bounded(
        "http.max_connections_per_ip",
        max_connections_per_ip,
        0,
        1_000_000,
    )?;
    Ok(Some(Http {
        max_connections,
        max_connections_per_ip,
        listen,
        access,
        rate_per_ip,
        max_streams_per_ip,
        max_streams,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Http>, ConfigError> {
        let raw: RawHttp = toml::from_str(text).unwrap();
        http(raw, &Cli::default())
    }

    #[test]
    fn off_by_default_and_fields_are_named() {
        assert!(parse("").unwrap().is_none());
        for (text, field) in [
            ("listen = \"x\"\npublic = true", "http.listen"),
            ("listen = \"127.0.0.1:0\"", "http.token"),
            ("listen = \"127.0.0.1:0\"\ntoken = \"short\"", "http.token"),
            (
                "listen = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef\"\npublic = true",
                "http.token",
            ),
            (
                "listen = \"127.0.0.1:0\"\npublic = true\nmax_streams = 0",
                "http.max_streams",
            ),
            (
                "listen = \"127.0.0.1:0\"\npublic = true\nmax_connections_per_ip = 2000000",
                "http.max_connections_per_ip",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e}");
        }
        let h = parse("listen = \"127.0.0.1:0\"\npublic = true")
            .unwrap()
            .unwrap();
        assert_eq!(h.access, HttpAccess::Public);
        assert_eq!(h.rate_per_ip, DEFAULT_HTTP_RATE_PER_IP);
        assert_eq!(h.max_connections_per_ip, 0);
    }
}
