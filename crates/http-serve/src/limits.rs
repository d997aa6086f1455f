//! The bounds of one HTTP server. Each daemon reads its own config keys into
//! these (`http.max_connections`, `web.max_connections`, ...) and checks their
//! ranges there, so that a config error names that daemon's field.

use std::time::Duration;

/// `header_read_timeout` unless a daemon says otherwise: long enough for a slow
/// mobile client to send a few hundred bytes of head, short enough that a
/// slowloris client cannot hold a slot for long.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `shutdown_grace` unless a daemon says otherwise: in-flight requests of these
/// APIs take milliseconds; only a stalled upload or an event stream takes longer,
/// and neither may hold a stop (and a restart) up for long.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How much one server holds at most, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, event streams included. At the cap the accept
    /// loop stops accepting: new connections wait in the kernel's backlog
    /// instead of taking file descriptors and memory.
    pub max_connections: usize,
    /// Connections one client address may hold open at once (0: no such limit).
    /// A further connection from it is closed at once, without a word, so that
    /// one address cannot take every slot of `max_connections` (a slowloris
    /// flood) while the others wait in the backlog. Off by default: behind a
    /// reverse proxy every client has the proxy's address.
    pub max_connections_per_ip: usize,
    /// How long a client has to send a whole request head: on a new connection,
    /// and between requests on a kept-alive one (hyper starts this timer as soon
    /// as it waits for a head, so it is also the idle keep-alive timeout). A
    /// response that lasts (an event stream) is not affected.
    pub header_read_timeout: Duration,
    /// After the shutdown signal: how long in-flight requests have to finish
    /// before their connections are closed regardless.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// `max_connections` slots, the default timeouts.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            max_connections_per_ip: 0,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    pub fn with_header_read_timeout(self, header_read_timeout: Duration) -> Self {
        Self {
            header_read_timeout,
            ..self
        }
    }

    pub fn with_max_connections_per_ip(self, max_connections_per_ip: usize) -> Self {
        Self {
            max_connections_per_ip,
            ..self
        }
    }

    pub fn with_shutdown_grace(self, shutdown_grace: Duration) -> Self {
        Self {
            shutdown_grace,
            ..self
        }
    }

    /// A semaphore of zero permits would accept nothing, ever; a zero timeout
    /// would close every connection at once. Config checks refuse both; this
    /// keeps a caller that skipped them serving.
    pub(crate) fn sane(self) -> Self {
        Self {
            max_connections: self.max_connections.max(1),
            max_connections_per_ip: self.max_connections_per_ip,
            header_read_timeout: self.header_read_timeout.max(Duration::from_millis(1)),
            shutdown_grace: self.shutdown_grace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let l = Limits::new(7);
        assert_eq!(l.max_connections, 7);
        assert_eq!(l.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(l.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let l = l
            .with_header_read_timeout(Duration::from_millis(250))
            .with_shutdown_grace(Duration::from_secs(3));
        assert_eq!(l.header_read_timeout, Duration::from_millis(250));
        assert_eq!(l.shutdown_grace, Duration::from_secs(3));
        assert_eq!(l.max_connections, 7);
    }

    #[test]
    fn zero_bounds_are_raised_to_something_that_serves() {
        let l = Limits::new(0)
            .with_header_read_timeout(Duration::ZERO)
            .sane();
        assert_eq!(l.max_connections, 1);
        assert!(l.header_read_timeout > Duration::ZERO);
    }
}
