//! The validated layer, one step per section: each function takes its raw section
//! (and the flags that override it) and returns the section's values complete, or
//! an error naming the field. Pure: nothing here opens a file or a socket (the TLS
//! certificate and key are read after validation, by `Config::load_tls`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ops::host::{check_hostname, system_hostname};
use ops::{ConfigError, bounded, invalid};

use super::cli::Cli;
use super::defaults::*;
use super::raw::{
    RawLimits, RawLog, RawProxy, RawRedis, RawRetention, RawServer, RawStore, RawTimeouts, RawTls,
};
use crate::protocol::DomainPolicy;
use crate::reactor::limits::LimitsConfig;
use crate::store::cache::{CacheConfig, CacheMode};
use crate::store::retention::RetentionConfig;
use crate::store::{StoreUrl, Synchronous};

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    pub domains: DomainPolicy,
    pub accept_domains: Vec<String>,
    pub threads: usize,
    pub max_clients: usize,
    pub listen_backlog: u32,
}

pub(super) fn server(raw: RawServer, cli: &Cli) -> Result<Server, ConfigError> {
    let hostname = cli
        .hostname
        .clone()
        .or(raw.hostname)
        .unwrap_or_else(system_hostname);
    check_hostname("server.hostname", &hostname)?;

    let listen_raw = if !cli.listen.is_empty() {
        cli.listen.clone()
    } else {
        raw.listen
            .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()])
    };
    if listen_raw.is_empty() {
        return Err(invalid("server.listen", "needs at least one ADDR:PORT"));
    }
    let mut listen = Vec::with_capacity(listen_raw.len());
    for text in listen_raw {
        let addr: SocketAddr = text.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{text:?} is not an ADDR:PORT (e.g. 127.0.0.1:2525 or [::1]:2525)"),
            )
        })?;
        listen.push(addr);
    }
    if let Some(port) = cli.port {
        for addr in &mut listen {
            addr.set_port(port);
        }
    }
    listen.dedup();

    let accept_domains = if !cli.accept_domain.is_empty() {
        cli.accept_domain.clone()
    } else {
        raw.accept_domains.unwrap_or_else(|| vec!["*".to_string()])
    };
    if accept_domains.is_empty() {
        return Err(invalid(
            "server.accept_domains",
            "is empty: list domains, or \"*\" to accept any",
        ));
    }
    let domains =
        DomainPolicy::parse(&accept_domains).map_err(|e| invalid("server.accept_domains", e))?;

    let threads = match raw.threads.unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > 1024 => return Err(invalid("server.threads", "must be at most 1024")),
        n => n,
    };
    let max_clients = cli
        .max_clients
        .or(raw.max_clients)
        .unwrap_or(DEFAULT_MAX_CLIENTS);
    bounded("server.max_clients", max_clients, 1, 1_000_000)?;
    let listen_backlog = raw.listen_backlog.unwrap_or(DEFAULT_LISTEN_BACKLOG);
    bounded("server.listen_backlog", listen_backlog, 1, 65_535)?;
    Ok(Server {
        hostname,
        listen,
        domains,
        accept_domains,
        threads,
        max_clients,
        listen_backlog,
    })
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_data_line_bytes: usize,
    pub max_errors: u32,
    pub max_junk_commands: u32,
    pub client_limits: LimitsConfig,
    pub greet_delay: Duration,
    pub max_inflight_bytes: usize,
    pub spill_threshold_bytes: usize,
}

pub(super) fn limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let max_message_bytes = raw.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    bounded("limits.max_message_bytes", max_message_bytes, 1024, 1 << 30)?;
    let max_recipients = raw.max_recipients.unwrap_or(DEFAULT_MAX_RECIPIENTS);
    bounded("limits.max_recipients", max_recipients, 1, 100_000)?;
    let max_data_line_bytes = raw
        .max_data_line_bytes
        .unwrap_or(DEFAULT_MAX_DATA_LINE_BYTES);
    bounded(
        "limits.max_data_line_bytes",
        max_data_line_bytes,
        1000,
        1 << 30,
    )?;
    let max_errors = raw.max_errors.unwrap_or(DEFAULT_MAX_ERRORS);
    bounded("limits.max_errors", max_errors, 1, 100_000)?;
    let max_junk_commands = raw.max_junk_commands.unwrap_or(DEFAULT_MAX_JUNK_COMMANDS);
    bounded("limits.max_junk_commands", max_junk_commands, 1, 1_000_000)?;
    let max_connections_per_ip = raw
        .max_connections_per_ip
        .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP);
    bounded(
        "limits.max_connections_per_ip",
        max_connections_per_ip,
        0,
        1_000_000,
    )?;
    let max_connection_rate_per_ip = raw.max_connection_rate_per_ip.unwrap_or(0);
    bounded(
        "limits.max_connection_rate_per_ip",
        max_connection_rate_per_ip,
        0,
        10_000_000,
    )?;
    let max_inflight_bytes = raw.max_inflight_bytes.unwrap_or(DEFAULT_MAX_INFLIGHT_BYTES);
    bounded(
        "limits.max_inflight_bytes",
        max_inflight_bytes,
        65_536,
        usize::MAX,
    )?;
    let spill_threshold_bytes = raw
        .spill_threshold_bytes
        .unwrap_or(DEFAULT_SPILL_THRESHOLD_BYTES.min(max_inflight_bytes));
    bounded(
        "limits.spill_threshold_bytes",
        spill_threshold_bytes,
        4096,
        max_inflight_bytes,
    )?;
    let greet_delay_ms = raw.greet_delay_ms.unwrap_or(0);
    bounded("limits.greet_delay_ms", greet_delay_ms, 0, 60_000)?;
    Ok(Limits {
        max_message_bytes,
        max_recipients,
        max_data_line_bytes,
        max_errors,
        max_junk_commands,
        client_limits: LimitsConfig {
            max_connections_per_ip,
            max_connection_rate_per_ip,
            exempt_loopback: raw.exempt_loopback.unwrap_or(true),
        },
        greet_delay: Duration::from_millis(greet_delay_ms),
        max_inflight_bytes,
        spill_threshold_bytes,
    })
}

/// `[timeouts]`.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub command: Duration,
    pub data: Duration,
    pub shutdown_grace: Duration,
}

pub(super) fn timeouts(raw: RawTimeouts) -> Result<Timeouts, ConfigError> {
    let command_secs = raw.command_secs.unwrap_or(DEFAULT_COMMAND_SECS);
    bounded("timeouts.command_secs", command_secs, 1, 86_400)?;
    let data_secs = raw.data_secs.unwrap_or(DEFAULT_DATA_SECS);
    bounded("timeouts.data_secs", data_secs, 1, 86_400)?;
    let grace_secs = raw
        .shutdown_grace_secs
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
    bounded("timeouts.shutdown_grace_secs", grace_secs, 0, 3_600)?;
    Ok(Timeouts {
        command: Duration::from_secs(command_secs),
        data: Duration::from_secs(data_secs),
        shutdown_grace: Duration::from_secs(grace_secs),
    })
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct Store {
    pub url: StoreUrl,
    pub batch_max_messages: usize,
    pub batch_max_delay: Duration,
    pub batch_max_bytes: usize,
    pub queue_capacity: usize,
    /// MySQL/MariaDB: committer threads, each with a batch and a COMMIT in flight.
    pub mysql_committers: usize,
    pub spool_dir: PathBuf,
    pub synchronous: Synchronous,
    pub migrate: bool,
}

pub(super) fn store(raw: RawStore, cli: &Cli) -> Result<Store, ConfigError> {
    let url_text = cli
        .store
        .clone()
        .or(raw.url)
        .unwrap_or_else(|| DEFAULT_STORE_URL.to_string());
    let url = StoreUrl::from_str(&url_text).map_err(|e| invalid("store.url", e))?;
    let batch_max_messages = raw.batch_max_messages.unwrap_or(DEFAULT_BATCH_MAX_MESSAGES);
    bounded("store.batch_max_messages", batch_max_messages, 1, 10_000)?;
    let batch_delay_us = raw.batch_max_delay_us.unwrap_or(DEFAULT_BATCH_MAX_DELAY_US);
    bounded("store.batch_max_delay_us", batch_delay_us, 0, 1_000_000)?;
    let queue_capacity = raw.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
    bounded("store.queue_capacity", queue_capacity, 1, 1_000_000)?;
    let mysql_committers = raw.mysql_committers.unwrap_or(DEFAULT_MYSQL_COMMITTERS);
    bounded("store.mysql_committers", mysql_committers, 1, 8)?;
    let batch_max_bytes = raw.batch_max_bytes.unwrap_or(DEFAULT_BATCH_MAX_BYTES);
    bounded("store.batch_max_bytes", batch_max_bytes, 65_536, 1 << 32)?;
    let spool_dir = match raw.spool_dir {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(invalid("store.spool_dir", "is empty"));
        }
        Some(dir) => dir,
        None => match &url {
            StoreUrl::Sqlite(path) => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("spool"),
            StoreUrl::Mysql(_) => PathBuf::from(DEFAULT_MYSQL_SPOOL_DIR),
        },
    };
    let synchronous = match raw.synchronous.as_deref() {
        None => Synchronous::Full,
        Some(s) => Synchronous::from_str(s).map_err(|_| {
            invalid(
                "store.synchronous",
                format!("{s:?}: expected \"full\" or \"normal\""),
            )
        })?,
    };
    Ok(Store {
        url,
        batch_max_messages,
        batch_max_delay: Duration::from_micros(batch_delay_us),
        batch_max_bytes,
        queue_capacity,
        mysql_committers,
        spool_dir,
        synchronous,
        migrate: cli.migrate || raw.migrate.unwrap_or(false),
    })
}

/// `[tls]`.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate and key files, when TLS is configured (SIGHUP reloads them).
    pub files: Option<(PathBuf, PathBuf)>,
    /// The configuration made from them: None until `Config::load_tls` has read
    /// them (a bad certificate is a configuration error).
    pub loaded: Option<Arc<rustls::ServerConfig>>,
    pub require: bool,
    pub implicit_listen: Vec<SocketAddr>,
}

pub(super) fn tls(raw: RawTls) -> Result<Tls, ConfigError> {
    let files = match (raw.cert, raw.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => return Err(invalid("tls.key", "tls.cert needs tls.key")),
        (None, Some(_)) => return Err(invalid("tls.cert", "tls.key needs tls.cert")),
    };
    let require = raw.require.unwrap_or(false);
    if require && files.is_none() {
        return Err(invalid("tls.require", "needs tls.cert and tls.key"));
    }
    let mut implicit_listen = Vec::new();
    for text in raw.implicit_listen.unwrap_or_default() {
        let addr: SocketAddr = text.parse().map_err(|_| {
            invalid(
                "tls.implicit_listen",
                format!("{text:?} is not an ADDR:PORT"),
            )
        })?;
        implicit_listen.push(addr);
    }
    if !implicit_listen.is_empty() && files.is_none() {
        return Err(invalid("tls.implicit_listen", "needs tls.cert and tls.key"));
    }
    Ok(Tls {
        files,
        loaded: None,
        require,
        implicit_listen,
    })
}

/// `[proxy]`.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub listen: Vec<SocketAddr>,
    pub trusted: Vec<ipnet::IpNet>,
}

pub(super) fn proxy(raw: RawProxy) -> Result<Proxy, ConfigError> {
    let mut listen = Vec::new();
    for text in raw.listen.unwrap_or_default() {
        listen.push(
            text.parse::<SocketAddr>()
                .map_err(|_| invalid("proxy.listen", format!("{text:?} is not an ADDR:PORT")))?,
        );
    }
    let mut trusted = Vec::new();
    for text in raw.trusted_networks.unwrap_or_default() {
        // A bare address means that one host.
        let net = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                invalid(
                    "proxy.trusted_networks",
                    format!("{text:?} is not a network (e.g. 10.0.0.0/8) or address"),
                )
            })?;
        trusted.push(net);
    }
    if !listen.is_empty() && trusted.is_empty() {
        return Err(invalid(
            "proxy.trusted_networks",
            "is empty: list the load balancers allowed to send PROXY headers",
        ));
    }
    Ok(Proxy { listen, trusted })
}

/// `[redis]`: the cache, when a URL is given.
pub(super) fn redis(raw: RawRedis, cli: &Cli) -> Result<Option<CacheConfig>, ConfigError> {
    let Some(url) = cli.redis.clone().or(raw.url).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    CacheConfig::check_url(&url).map_err(|e| {
        // The URL may hold a password: show it redacted.
        let shown = mailstore::redis_target::redact(&url);
        invalid("redis.url", format!("{shown:?}: {e}"))
    })?;
    let mode = match raw.mode.as_deref() {
        None | Some("cache") => CacheMode::Cache,
        Some("guerrilla") => CacheMode::Guerrilla,
        Some(other) => {
            return Err(invalid(
                "redis.mode",
                format!("{other:?}: expected \"cache\" or \"guerrilla\""),
            ));
        }
    };
    let ttl_secs = raw.ttl_secs.unwrap_or(DEFAULT_REDIS_TTL_SECS);
    bounded("redis.ttl_secs", ttl_secs, 1, 365 * 86_400)?;
    let inbox_max = raw.inbox_max.unwrap_or(DEFAULT_REDIS_INBOX_MAX);
    bounded("redis.inbox_max", inbox_max, 1, 1_000_000)?;
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.len() > 64 || key_prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(
            "redis.key_prefix",
            "at most 64 characters, no spaces or control characters",
        ));
    }
    let compress_min_bytes = raw
        .compress_min_bytes
        .unwrap_or(DEFAULT_REDIS_COMPRESS_MIN_BYTES);
    bounded("redis.compress_min_bytes", compress_min_bytes, 0, 1 << 30)?;
    Ok(Some(CacheConfig {
        url,
        mode,
        ttl_secs,
        inbox_max,
        key_prefix,
        compress_min_bytes,
    }))
}

/// `[retention]`.
pub(super) fn retention(raw: RawRetention) -> Result<RetentionConfig, ConfigError> {
    let hours = raw.max_age_hours.unwrap_or(0);
    bounded("retention.max_age_hours", hours, 0, 24 * 365 * 100)?;
    let interval = raw.interval_secs.unwrap_or(DEFAULT_RETENTION_INTERVAL_SECS);
    bounded("retention.interval_secs", interval, 1, 86_400)?;
    let batch_rows = raw.batch_rows.unwrap_or(DEFAULT_RETENTION_BATCH_ROWS);
    bounded("retention.batch_rows", batch_rows, 1, 1_000_000)?;
    Ok(RetentionConfig {
        max_age: (hours > 0).then(|| Duration::from_secs(hours.saturating_mul(3600))),
        max_total_bytes: raw.max_total_bytes.filter(|&b| b > 0),
        interval: Duration::from_secs(interval),
        batch_rows,
    })
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct Log {
    pub verbose: bool,
    /// `log.level`: the filter when not verbose (`info` by default; `-v` and
    /// `log.verbose` mean `debug`). Live on SIGHUP.
    pub level: String,
    /// `log.format`: `text` (default) or `json`. Needs a restart.
    pub format: ops::logging::LogFormat,
    pub file: Option<PathBuf>,
}

impl Log {
    /// The filter in force: `debug` when verbose, else `log.level`.
    pub fn filter(&self) -> &str {
        if self.verbose { "debug" } else { &self.level }
    }
}

pub(super) fn log(raw: RawLog, cli: &Cli) -> Result<Log, ConfigError> {
    let level = raw
        .level
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    ops::logging::check_level("log.level", &level)?;
    Ok(Log {
        verbose: cli.verbose || raw.verbose.unwrap_or(false),
        level,
        format: ops::logging::LogFormat::parse("log.format", raw.format.as_deref())?,
        file: cli
            .log_file
            .clone()
            .or_else(|| raw.file.filter(|f| !f.is_empty()).map(PathBuf::from)),
    })
}
