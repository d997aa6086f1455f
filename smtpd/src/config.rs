//! Configuration: the TOML file and the command line, validated into one [`Config`].
//!
//! Owns: every setting's name, default and bounds, in one place (as Postfix's
//! `mail_params.h` does). Two layers, as KumoMTA does: a raw [`FileConfig`] where
//! every field is optional and unknown fields are refused, then [`Config`], complete
//! and validated, with no options left. Command-line flags override the file.
//! Must not: open sockets or files other than the config file itself.
//!
//! Every error names the field it is about (`limits.max_recipients: must be ...`),
//! so an operator can fix a config without reading the source.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::{DomainPolicy, SessionConfig};
use crate::store::cache::{CacheConfig, CacheMode};
use crate::store::retention::RetentionConfig;
use crate::store::{StoreUrl, Synchronous};
pub use ops::ConfigError;
use ops::host::{check_hostname, system_hostname};
use ops::{bounded, invalid, parse_toml, read_toml};

/// The listen address with no `--listen`, `-p` or `server.listen`: loopback only, so a
/// first `cargo run` never exposes a server to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
/// The embedded store with no `--store` or `store.url`.
pub const DEFAULT_STORE_URL: &str = "sqlite:./data/smtpd.sqlite";

/// Where `-l` without a file name logs (Guerrilla SMTPd's default `log.txt`).
pub const DEFAULT_LOG_FILE: &str = "./log.txt";

/// The command line (the original Guerrilla SMTPd's `-p`, `-v`, `-l` are kept).
#[derive(Debug, Default, Clone, clap::Parser)]
#[command(
    name = "smtpd",
    version,
    about = "Inbound SMTP sink: accepts mail for its domains and commits it to a database before answering 250"
)]
pub struct Cli {
    /// TOML config file; command-line flags override its values.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port to listen on, keeping the configured address(es) (default host 127.0.0.1).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,
    /// Address to listen on (repeatable); replaces server.listen.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// Store URL: sqlite:PATH (default sqlite:./data/smtpd.sqlite) or
    /// mysql://USER:PASS@HOST:PORT/DB (add ?socket=PATH for a unix socket).
    #[arg(long = "store", value_name = "URL")]
    pub store: Option<String>,
    /// Create or update the MySQL schema at start (schema/mysql/*.sql).
    #[arg(long = "migrate")]
    pub migrate: bool,
    /// Redis cache: redis://HOST:PORT[/DB]; replaces redis.url.
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Option<String>,
    /// Name used in the greeting, the EHLO reply and Received: headers.
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Option<String>,
    /// Accept mail for this domain (repeatable; "*.example.com" for its subdomains,
    /// "*" for any); replaces server.accept_domains.
    #[arg(long = "accept-domain", value_name = "DOMAIN")]
    pub accept_domain: Vec<String>,
    /// Maximum open client connections in total.
    #[arg(long = "max-clients", value_name = "N")]
    pub max_clients: Option<usize>,
    /// Verbose logging (debug level).
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Write logs to FILE instead of stderr; `-l` alone writes to ./log.txt, as
    /// Guerrilla SMTPd did.
    #[arg(
        short = 'l',
        long = "log-file",
        value_name = "FILE",
        num_args = 0..=1,
        default_missing_value = DEFAULT_LOG_FILE
    )]
    pub log_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------
// Raw layer: what the TOML file may say. Every field optional; unknown fields refused.
// ---------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub redis: RawRedis,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub require: Option<bool>,
    pub implicit_listen: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<Vec<String>>,
    pub trusted_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    pub mode: Option<String>,
    pub ttl_secs: Option<u64>,
    pub inbox_max: Option<usize>,
    pub key_prefix: Option<String>,
    pub compress_min_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub max_age_hours: Option<u64>,
    pub max_total_bytes: Option<u64>,
    pub interval_secs: Option<u64>,
    pub batch_rows: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub hostname: Option<String>,
    pub listen: Option<Vec<String>>,
    pub accept_domains: Option<Vec<String>>,
    pub threads: Option<usize>,
    pub max_clients: Option<usize>,
    pub listen_backlog: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_message_bytes: Option<usize>,
    pub max_recipients: Option<usize>,
    pub max_data_line_bytes: Option<usize>,
    pub max_errors: Option<u32>,
    pub max_junk_commands: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub max_connection_rate_per_ip: Option<u32>,
    pub exempt_loopback: Option<bool>,
    pub greet_delay_ms: Option<u64>,
    pub max_inflight_bytes: Option<usize>,
    pub spill_threshold_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub command_secs: Option<u64>,
    pub data_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
    pub batch_max_messages: Option<usize>,
    pub batch_max_delay_us: Option<u64>,
    pub batch_max_bytes: Option<usize>,
    pub queue_capacity: Option<usize>,
    pub spool_dir: Option<PathBuf>,
    pub synchronous: Option<String>,
    pub migrate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub verbose: Option<bool>,
    pub file: Option<String>,
}

// ---------------------------------------------------------------------------------
// Defaults: one named value each, with the reason.
// ---------------------------------------------------------------------------------

/// RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients; more per
/// transaction is rarely legitimate for a sink.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
/// 10 MiB, Postfix's `message_size_limit` order of magnitude; advertised as SIZE.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// RFC 5322 caps lines at 998 octets, but real-world senders exceed it; 64 KiB bounds
/// the damage without rejecting mail that Postfix would take.
pub const DEFAULT_MAX_DATA_LINE_BYTES: usize = 64 * 1024;
/// RFC 5321 §4.5.3.2.7 suggests 5 minutes of server idle timeout.
pub const DEFAULT_COMMAND_SECS: u64 = 300;
/// RFC 5321 §4.5.3.2.5/6: 3 minutes per data block; we wait 5 minutes per read.
pub const DEFAULT_DATA_SECS: u64 = 300;
/// How long SIGTERM waits for transactions in DATA to finish before closing them.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Total connections across all reactors; an idle connection costs a few KiB.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Sized so a burst of 1,000 simultaneous connects is not refused by the kernel.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
/// Group commit: a batch closes at this many messages...
pub const DEFAULT_BATCH_MAX_MESSAGES: usize = 256;
/// ...or, when set, this long after its first message. 0: no waiting. Batches still
/// form under load from what queues up while a commit runs (the commit's own
/// duration is the window), and an idle server answers at once. A timer here put
/// its whole length on every message: at 2 ms one session could not pass 400 msgs/s,
/// 10 sessions 3,600 (13,000 without it; bench/RESULTS.md, 2026-11-28e).
pub const DEFAULT_BATCH_MAX_DELAY_US: u64 = 0;
/// ...or once its message bodies add up to 16 MiB: the most the committer holds in
/// memory at once (a larger single message is a batch of its own). Small messages
/// never reach it (256 × 64 KB), so it costs batching nothing where batching pays.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Submissions waiting for the storage stage; beyond it reactors hold messages back
/// (and their connections stop reading) instead of buffering without bound.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Redis: a day of recent mail in the cache.
pub const DEFAULT_REDIS_TTL_SECS: u64 = 86_400;
/// Redis: entries kept per inbox list.
pub const DEFAULT_REDIS_INBOX_MAX: usize = 100;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "smtpd:";
/// Redis: below 4 KiB gzip saves little and costs CPU on the commit path.
pub const DEFAULT_REDIS_COMPRESS_MIN_BYTES: usize = 4096;
/// Retention: one purge run a minute.
pub const DEFAULT_RETENTION_INTERVAL_SECS: u64 = 60;
/// Retention: rows per DELETE, small enough to hold the write lock only briefly.
pub const DEFAULT_RETENTION_BATCH_ROWS: usize = 1000;

/// Postfix's `smtpd_hard_error_limit`.
pub const DEFAULT_MAX_ERRORS: u32 = 20;
/// Postfix's `smtpd_junk_command_limit`.
pub const DEFAULT_MAX_JUNK_COMMANDS: u32 = 100;
/// Message bytes held in memory over all connections before new message data
/// waits in the sockets: 1 GiB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 1 << 30;
/// A message body over 1 MiB goes to the spool as it arrives instead of staying in
/// memory: most mail is far smaller (and stays on the fast path), while 1,000
/// concurrent messages at this size fit the default budget.
pub const DEFAULT_SPILL_THRESHOLD_BYTES: usize = 1 << 20;
/// Spool directory for a MySQL store (relative to the working directory, like the
/// default SQLite file). For SQLite it is `spool` next to the database file.
pub const DEFAULT_MYSQL_SPOOL_DIR: &str = "./data/spool";
/// Postfix's `smtpd_client_connection_count_limit`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 50;

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    pub domains: DomainPolicy,
    /// The accepted-domain entries as written, for the startup log line.
    pub accept_domains: Vec<String>,
    pub threads: usize,
    pub max_clients: usize,
    pub listen_backlog: u32,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_data_line_bytes: usize,
    pub max_errors: u32,
    pub max_junk_commands: u32,
    pub client_limits: crate::reactor::limits::LimitsConfig,
    pub greet_delay: Duration,
    pub max_inflight_bytes: usize,
    pub spill_threshold_bytes: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub shutdown_grace: Duration,
    pub store_url: StoreUrl,
    pub batch_max_messages: usize,
    pub batch_max_delay: Duration,
    pub batch_max_bytes: usize,
    pub queue_capacity: usize,
    /// Where bodies over `spill_threshold_bytes` (or beyond the budget) are kept
    /// until they are committed.
    pub spool_dir: PathBuf,
    pub synchronous: Synchronous,
    pub migrate: bool,
    /// The certificate and key files, when TLS is configured (SIGHUP reloads them).
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Loaded at start: a bad certificate is a configuration error.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub require_tls: bool,
    /// Listeners where TLS starts at connect (port 465 style).
    pub implicit_tls_listen: Vec<SocketAddr>,
    /// Listeners behind a load balancer: a PROXY v1/v2 header comes first.
    pub proxy_listen: Vec<SocketAddr>,
    /// The load balancers allowed to connect to `proxy_listen`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub cache: Option<CacheConfig>,
    pub retention: RetentionConfig,
    pub verbose: bool,
    pub log_file: Option<PathBuf>,
}

impl Config {
    /// The settings every SMTP session of this server shares.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            hostname: self.hostname.clone(),
            max_message_bytes: self.max_message_bytes,
            max_recipients: self.max_recipients,
            max_data_line_bytes: self.max_data_line_bytes,
            domains: self.domains.clone(),
            starttls: self.tls.is_some(),
            require_tls: self.require_tls,
            max_errors: self.max_errors,
            max_junk_commands: self.max_junk_commands,
        }
    }

    /// Reads the file named by `-c` (if any), applies the flags, validates.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::build(file, cli)
    }

    /// Merges file and flags (flags win) and validates every field.
    pub fn build(file: FileConfig, cli: &Cli) -> Result<Config, ConfigError> {
        let FileConfig {
            server,
            limits,
            timeouts,
            store,
            tls,
            proxy,
            redis,
            retention,
            log,
        } = file;

        let hostname = cli
            .hostname
            .clone()
            .or(server.hostname)
            .unwrap_or_else(system_hostname);
        check_hostname("server.hostname", &hostname)?;

        let mut listen_raw = if !cli.listen.is_empty() {
            cli.listen.clone()
        } else {
            server
                .listen
                .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()])
        };
        if listen_raw.is_empty() {
            return Err(invalid("server.listen", "needs at least one ADDR:PORT"));
        }
        let mut listen = Vec::with_capacity(listen_raw.len());
        for raw in listen_raw.drain(..) {
            let addr: SocketAddr = raw.parse().map_err(|_| {
                invalid(
                    "server.listen",
                    format!("{raw:?} is not an ADDR:PORT (e.g. 127.0.0.1:2525 or [::1]:2525)"),
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
            server
                .accept_domains
                .unwrap_or_else(|| vec!["*".to_string()])
        };
        if accept_domains.is_empty() {
            return Err(invalid(
                "server.accept_domains",
                "is empty: list domains, or \"*\" to accept any",
            ));
        }
        let domains = DomainPolicy::parse(&accept_domains)
            .map_err(|e| invalid("server.accept_domains", e))?;

        let threads = match server.threads.unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > 1024 => return Err(invalid("server.threads", "must be at most 1024")),
            n => n,
        };
        let max_clients = cli
            .max_clients
            .or(server.max_clients)
            .unwrap_or(DEFAULT_MAX_CLIENTS);
        bounded("server.max_clients", max_clients, 1, 1_000_000)?;
        let listen_backlog = server.listen_backlog.unwrap_or(DEFAULT_LISTEN_BACKLOG);
        bounded("server.listen_backlog", listen_backlog as usize, 1, 65_535)?;

        let max_message_bytes = limits
            .max_message_bytes
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        bounded("limits.max_message_bytes", max_message_bytes, 1024, 1 << 30)?;
        let max_recipients = limits.max_recipients.unwrap_or(DEFAULT_MAX_RECIPIENTS);
        bounded("limits.max_recipients", max_recipients, 1, 100_000)?;
        let max_data_line_bytes = limits
            .max_data_line_bytes
            .unwrap_or(DEFAULT_MAX_DATA_LINE_BYTES);
        bounded(
            "limits.max_data_line_bytes",
            max_data_line_bytes,
            1000,
            1 << 30,
        )?;

        let max_errors = limits.max_errors.unwrap_or(DEFAULT_MAX_ERRORS);
        bounded("limits.max_errors", max_errors as usize, 1, 100_000)?;
        let max_junk_commands = limits
            .max_junk_commands
            .unwrap_or(DEFAULT_MAX_JUNK_COMMANDS);
        bounded(
            "limits.max_junk_commands",
            max_junk_commands as usize,
            1,
            1_000_000,
        )?;
        let max_connections_per_ip = limits
            .max_connections_per_ip
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP);
        bounded(
            "limits.max_connections_per_ip",
            max_connections_per_ip as usize,
            0,
            1_000_000,
        )?;
        let max_connection_rate_per_ip = limits.max_connection_rate_per_ip.unwrap_or(0);
        bounded(
            "limits.max_connection_rate_per_ip",
            max_connection_rate_per_ip as usize,
            0,
            10_000_000,
        )?;
        let max_inflight_bytes = limits
            .max_inflight_bytes
            .unwrap_or(DEFAULT_MAX_INFLIGHT_BYTES);
        bounded(
            "limits.max_inflight_bytes",
            max_inflight_bytes,
            65_536,
            usize::MAX,
        )?;
        let spill_threshold_bytes = limits
            .spill_threshold_bytes
            .unwrap_or(DEFAULT_SPILL_THRESHOLD_BYTES.min(max_inflight_bytes));
        bounded(
            "limits.spill_threshold_bytes",
            spill_threshold_bytes,
            4096,
            max_inflight_bytes,
        )?;
        let greet_delay_ms = limits.greet_delay_ms.unwrap_or(0);
        bounded("limits.greet_delay_ms", greet_delay_ms as usize, 0, 60_000)?;
        let client_limits = crate::reactor::limits::LimitsConfig {
            max_connections_per_ip,
            max_connection_rate_per_ip,
            exempt_loopback: limits.exempt_loopback.unwrap_or(true),
        };

        let command_secs = timeouts.command_secs.unwrap_or(DEFAULT_COMMAND_SECS);
        bounded("timeouts.command_secs", command_secs as usize, 1, 86_400)?;
        let data_secs = timeouts.data_secs.unwrap_or(DEFAULT_DATA_SECS);
        bounded("timeouts.data_secs", data_secs as usize, 1, 86_400)?;
        let grace_secs = timeouts
            .shutdown_grace_secs
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
        bounded(
            "timeouts.shutdown_grace_secs",
            grace_secs as usize,
            0,
            3_600,
        )?;

        let store_url_raw = cli
            .store
            .clone()
            .or(store.url)
            .unwrap_or_else(|| DEFAULT_STORE_URL.to_string());
        let store_url = StoreUrl::from_str(&store_url_raw).map_err(|e| invalid("store.url", e))?;
        let batch_max_messages = store
            .batch_max_messages
            .unwrap_or(DEFAULT_BATCH_MAX_MESSAGES);
        bounded("store.batch_max_messages", batch_max_messages, 1, 10_000)?;
        let batch_delay_us = store
            .batch_max_delay_us
            .unwrap_or(DEFAULT_BATCH_MAX_DELAY_US);
        bounded(
            "store.batch_max_delay_us",
            batch_delay_us as usize,
            0,
            1_000_000,
        )?;
        let queue_capacity = store.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
        bounded("store.queue_capacity", queue_capacity, 1, 1_000_000)?;
        let batch_max_bytes = store.batch_max_bytes.unwrap_or(DEFAULT_BATCH_MAX_BYTES);
        bounded("store.batch_max_bytes", batch_max_bytes, 65_536, 1 << 32)?;
        let spool_dir = match store.spool_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(invalid("store.spool_dir", "is empty"));
            }
            Some(dir) => dir,
            None => match &store_url {
                StoreUrl::Sqlite(path) => path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .join("spool"),
                StoreUrl::Mysql(_) => PathBuf::from(DEFAULT_MYSQL_SPOOL_DIR),
            },
        };
        let synchronous = match store.synchronous.as_deref() {
            None => Synchronous::Full,
            Some(s) => Synchronous::from_str(s).map_err(|_| {
                invalid(
                    "store.synchronous",
                    format!("{s:?}: expected \"full\" or \"normal\""),
                )
            })?,
        };

        let migrate = cli.migrate || store.migrate.unwrap_or(false);
        let (tls_files, tls_config) = match (tls.cert, tls.key) {
            (None, None) => (None, None),
            (Some(cert), Some(key)) => {
                let loaded = crate::tls::load(&cert, &key).map_err(|e| {
                    invalid(
                        if matches!(e, crate::tls::TlsError::Key { .. }) {
                            "tls.key"
                        } else {
                            "tls.cert"
                        },
                        e,
                    )
                })?;
                (Some((cert, key)), Some(loaded))
            }
            (Some(_), None) => return Err(invalid("tls.key", "tls.cert needs tls.key")),
            (None, Some(_)) => return Err(invalid("tls.cert", "tls.key needs tls.cert")),
        };
        let mut proxy_listen = Vec::new();
        for raw in proxy.listen.unwrap_or_default() {
            proxy_listen
                .push(raw.parse::<SocketAddr>().map_err(|_| {
                    invalid("proxy.listen", format!("{raw:?} is not an ADDR:PORT"))
                })?);
        }
        let mut trusted_proxies = Vec::new();
        for raw in proxy.trusted_networks.unwrap_or_default() {
            // A bare address means that one host.
            let net = raw
                .parse::<ipnet::IpNet>()
                .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "proxy.trusted_networks",
                        format!("{raw:?} is not a network (e.g. 10.0.0.0/8) or address"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        if !proxy_listen.is_empty() && trusted_proxies.is_empty() {
            return Err(invalid(
                "proxy.trusted_networks",
                "is empty: list the load balancers allowed to send PROXY headers",
            ));
        }
        let require_tls = tls.require.unwrap_or(false);
        if require_tls && tls_config.is_none() {
            return Err(invalid("tls.require", "needs tls.cert and tls.key"));
        }
        let mut implicit_tls_listen = Vec::new();
        for raw in tls.implicit_listen.unwrap_or_default() {
            let addr: SocketAddr = raw.parse().map_err(|_| {
                invalid(
                    "tls.implicit_listen",
                    format!("{raw:?} is not an ADDR:PORT"),
                )
            })?;
            implicit_tls_listen.push(addr);
        }
        if !implicit_tls_listen.is_empty() && tls_config.is_none() {
            return Err(invalid("tls.implicit_listen", "needs tls.cert and tls.key"));
        }
        let cache = build_cache(redis, cli)?;
        let retention = build_retention(retention)?;

        let verbose = cli.verbose || log.verbose.unwrap_or(false);
        let log_file = cli
            .log_file
            .clone()
            .or_else(|| log.file.filter(|f| !f.is_empty()).map(PathBuf::from));

        Ok(Config {
            hostname,
            listen,
            domains,
            accept_domains,
            threads,
            max_clients,
            listen_backlog,
            max_message_bytes,
            max_recipients,
            max_data_line_bytes,
            max_errors,
            max_junk_commands,
            client_limits,
            greet_delay: Duration::from_millis(greet_delay_ms),
            max_inflight_bytes,
            spill_threshold_bytes,
            command_timeout: Duration::from_secs(command_secs),
            data_timeout: Duration::from_secs(data_secs),
            shutdown_grace: Duration::from_secs(grace_secs),
            store_url,
            batch_max_messages,
            batch_max_delay: Duration::from_micros(batch_delay_us),
            batch_max_bytes,
            queue_capacity,
            spool_dir,
            synchronous,
            migrate,
            tls_files,
            tls: tls_config,
            require_tls,
            implicit_tls_listen,
            proxy_listen,
            trusted_proxies,
            cache,
            retention,
            verbose,
            log_file,
        })
    }
}

fn build_cache(redis: RawRedis, cli: &Cli) -> Result<Option<CacheConfig>, ConfigError> {
    let Some(url) = cli.redis.clone().or(redis.url).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    CacheConfig::check_url(&url).map_err(|e| invalid("redis.url", format!("{url:?}: {e}")))?;
    let mode = match redis.mode.as_deref() {
        None | Some("cache") => CacheMode::Cache,
        Some("guerrilla") => CacheMode::Guerrilla,
        Some(other) => {
            return Err(invalid(
                "redis.mode",
                format!("{other:?}: expected \"cache\" or \"guerrilla\""),
            ));
        }
    };
    let ttl_secs = redis.ttl_secs.unwrap_or(DEFAULT_REDIS_TTL_SECS);
    bounded("redis.ttl_secs", ttl_secs as usize, 1, 365 * 86_400)?;
    let inbox_max = redis.inbox_max.unwrap_or(DEFAULT_REDIS_INBOX_MAX);
    bounded("redis.inbox_max", inbox_max, 1, 1_000_000)?;
    let key_prefix = redis
        .key_prefix
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.len() > 64 || key_prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(
            "redis.key_prefix",
            "at most 64 characters, no spaces or control characters",
        ));
    }
    let compress_min_bytes = redis
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

fn build_retention(raw: RawRetention) -> Result<RetentionConfig, ConfigError> {
    let hours = raw.max_age_hours.unwrap_or(0);
    bounded("retention.max_age_hours", hours as usize, 0, 24 * 365 * 100)?;
    let interval = raw.interval_secs.unwrap_or(DEFAULT_RETENTION_INTERVAL_SECS);
    bounded("retention.interval_secs", interval as usize, 1, 86_400)?;
    let batch_rows = raw.batch_rows.unwrap_or(DEFAULT_RETENTION_BATCH_ROWS);
    bounded("retention.batch_rows", batch_rows, 1, 1_000_000)?;
    Ok(RetentionConfig {
        max_age: (hours > 0).then(|| Duration::from_secs(hours * 3600)),
        max_total_bytes: raw.max_total_bytes.filter(|&b| b > 0),
        interval: Duration::from_secs(interval),
        batch_rows,
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    read_toml(path)
}

/// Parses TOML text; serde's message already names the section and key.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    parse_toml(path, text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn build(toml_text: &str, cli: &Cli) -> Result<Config, ConfigError> {
        let file = parse_file(Path::new("test.toml"), toml_text)?;
        Config::build(file, cli)
    }

    fn err_text(toml_text: &str) -> String {
        build(toml_text, &Cli::default()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_loopback_sqlite_any_domain() {
        let c = build("", &Cli::default()).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert!(
            matches!(c.store_url, StoreUrl::Sqlite(ref p) if p == Path::new("./data/smtpd.sqlite"))
        );
        assert!(c.domains.accepts("anything.example"));
        assert_eq!(c.max_recipients, 100);
        assert_eq!(c.synchronous, Synchronous::Full);
        assert!(c.threads >= 1);
    }

    #[test]
    fn flags_override_file() {
        let cli = Cli {
            port: Some(2600),
            hostname: Some("mx.example.net".into()),
            accept_domain: vec!["example.com".into()],
            max_clients: Some(7),
            store: Some("sqlite:/tmp/x.sqlite".into()),
            ..Cli::default()
        };
        let c = build(
            "[server]\nhostname = \"file.example\"\nlisten = [\"127.0.0.2:25\"]\nmax_clients = 9\n",
            &cli,
        )
        .unwrap();
        assert_eq!(c.listen, vec!["127.0.0.2:2600".parse().unwrap()]);
        assert_eq!(c.hostname, "mx.example.net");
        assert_eq!(c.max_clients, 7);
        assert!(c.domains.accepts("example.com"));
        assert!(!c.domains.accepts("example.org"));
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err_text("[limits]\nmax_recipient = 5\n");
        assert!(e.contains("max_recipient"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            ("[limits]\nmax_recipients = 0\n", "limits.max_recipients"),
            (
                "[limits]\nmax_message_bytes = 10\n",
                "limits.max_message_bytes",
            ),
            ("[server]\nlisten = [\"nonsense\"]\n", "server.listen"),
            ("[server]\nlisten = []\n", "server.listen"),
            (
                "[server]\naccept_domains = [\"a*b.com\"]\n",
                "server.accept_domains",
            ),
            ("[server]\nhostname = \"bad host\"\n", "server.hostname"),
            ("[server]\nmax_clients = 0\n", "server.max_clients"),
            ("[timeouts]\ncommand_secs = 0\n", "timeouts.command_secs"),
            ("[store]\nurl = \"nosuch:foo\"\n", "store.url"),
            (
                "[store]\nsynchronous = \"sometimes\"\n",
                "store.synchronous",
            ),
            (
                "[store]\nbatch_max_messages = 0\n",
                "store.batch_max_messages",
            ),
            (
                "[limits]\nspill_threshold_bytes = 100\n",
                "limits.spill_threshold_bytes",
            ),
            ("[store]\nbatch_max_bytes = 10\n", "store.batch_max_bytes"),
            ("[store]\nspool_dir = \"\"\n", "store.spool_dir"),
        ] {
            let e = err_text(text);
            assert!(e.contains(field), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn wrong_type_is_a_parse_error_naming_the_key() {
        let e = err_text("[server]\nthreads = \"x\"\n");
        assert!(e.contains("threads"), "{e}");
    }
}
