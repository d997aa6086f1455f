//! Configuration of the relay: the TOML file and the command line, validated into
//! one [`Config`].
//!
//! Owns: every setting's name, default and bounds. As in `smtpd`, the file layer
//! has every field optional and refuses unknown ones; command-line flags override
//! it; every error names its field. Each section has one validation step (raw
//! section in, validated values out: `relay_section`, `delivery_section`, ...);
//! every default is a `DEFAULT_*` constant with its reason; the one file a setting
//! names (`bounces.key_file`) is read only after every section is valid
//! (`load_bounce_key`).
//! Must not: open sockets or databases. (`HOST:PORT` values are resolved once,
//! while validating.)

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailstore::StoreUrl;
pub use ops::ConfigError;
use ops::host::{check_hostname, system_hostname};
use ops::{bounded, invalid, read_toml};
use serde::Deserialize;

use crate::retry::RetryPolicy;
use crate::verp::Verp;

// ---------------------------------------------------------------------------------
// Defaults: one named value each, with the reason. (The node id and the HELO name
// default to the host name, `relay.threads` to the number of cores, and
// `delivery.message_id_domain` to the HELO name: values of the machine, not
// constants.)
// ---------------------------------------------------------------------------------

/// The embedded store shared with `smtpd` when nothing else is said.
pub const DEFAULT_STORE_URL: &str = "sqlite:./data/smtpd.sqlite";

/// `relay.batch_size`: rows per claim, enough to keep every worker busy from one
/// round trip while one claim's transaction stays short.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// `relay.max_in_flight`: claimed, unfinished recipients per node; bounds memory and
/// what waits for a lease to expire when a node dies.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5_000;
/// `relay.poll_interval_ms`: an idle queue is asked twice a second, so new mail
/// waits at most half a second without the database being polled hard.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 500;
/// `relay.lease_secs`: twelve heartbeats, so a few slow ones never lose a lease,
/// while a dead node's rows come back within a minute.
pub const DEFAULT_LEASE_SECS: u64 = 60;
/// `relay.heartbeat_secs`: renews leases well within `DEFAULT_LEASE_SECS`; a node
/// counts as dead after three missed.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 5;
/// `relay.shutdown_grace_secs`: on SIGTERM, time for deliveries under way, inside
/// systemd's default 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

/// `delivery.port`: SMTP relay to MX hosts (RFC 5321 §2.3.5); other values are for
/// tests.
pub const DEFAULT_SMTP_PORT: u16 = 25;
/// `delivery.max_connections`: connections open at once across all domains, per
/// node, far below file-descriptor limits.
pub const DEFAULT_MAX_CONNECTIONS: usize = 200;
/// `delivery.connect_timeout_secs`: an MX that does not answer a SYN in 30 s is
/// down; the next one is tried.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 30;
/// `delivery.command_timeout_secs`: RFC 5321 §4.5.3.2 gives MAIL, RCPT and the
/// greeting 5 minutes.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 300;
/// `delivery.data_timeout_secs`: RFC 5321 §4.5.3.2.6 gives the reply to the final
/// dot 10 minutes.
pub const DEFAULT_DATA_TIMEOUT_SECS: u64 = 600;
/// `delivery.idle_timeout_secs`: a connection kept 5 s for the next message to the
/// same domain, well inside servers' own idle timeouts.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 5;
/// `delivery.max_messages_per_connection`: a reused connection is renewed now and
/// then, as large providers expect.
pub const DEFAULT_MAX_MESSAGES_PER_CONNECTION: u32 = 100;
/// `delivery.max_recipients_per_transaction`: half the 100 a server must accept
/// (RFC 5321 §4.5.3.1.8), so that stricter servers take it too.
pub const DEFAULT_MAX_RECIPIENTS_PER_TRANSACTION: usize = 50;
/// `delivery.starttls`: opportunistic TLS (RFC 3207) whenever the server offers it.
pub const DEFAULT_STARTTLS: bool = true;

/// `retry.first_secs`: the first retry after 5 minutes, past most greylisting.
pub const DEFAULT_RETRY_FIRST_SECS: u64 = 300;
/// `retry.multiplier`: each wait twice the one before.
pub const DEFAULT_RETRY_MULTIPLIER: f64 = 2.0;
/// `retry.max_interval_secs`: never more than 4 hours between tries.
pub const DEFAULT_RETRY_MAX_INTERVAL_SECS: u64 = 14_400;
/// `retry.give_up_secs`: 5 days, within RFC 5321 §4.5.4.1's "at least 4-5 days".
pub const DEFAULT_RETRY_GIVE_UP_SECS: u64 = 432_000;

/// `dns.timeout_ms`: an MX lookup that takes 5 s has failed; the row is deferred.
pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 5_000;

/// `domains.*.max_connections`: connections to one domain per node; large
/// providers throttle beyond a handful.
pub const DEFAULT_DOMAIN_MAX_CONNECTIONS: usize = 10;
/// `domains.*.messages_per_second`: 0, unlimited, until an operator knows a limit.
pub const DEFAULT_DOMAIN_MESSAGES_PER_SECOND: f64 = 0.0;

/// `bounces.bounce_prefix`: the local part before `+` of VERP return paths.
pub const DEFAULT_BOUNCE_PREFIX: &str = "bounces";
/// `bounces.unsubscribe_prefix`: the local part before `+` of unsubscribe addresses.
pub const DEFAULT_UNSUBSCRIBE_PREFIX: &str = "unsubscribe";
/// `bounces.list_unsubscribe`: on, as bulk senders must (RFC 2369; with VERP only).
pub const DEFAULT_LIST_UNSUBSCRIBE: bool = true;
/// `bounces.dsn`: a sender learns of a failure (RFC 3464 DSN).
pub const DEFAULT_DSN: bool = true;
/// `bounces.delay_warning_secs`: 0, no "delayed" DSNs unless asked for.
pub const DEFAULT_DELAY_WARNING_SECS: u64 = 0;
/// `bounces.soft_bounce_limit`: three soft bounces in the window suppress; one full
/// mailbox is not a dead address.
pub const DEFAULT_SOFT_BOUNCE_LIMIT: u32 = 3;
/// `bounces.soft_bounce_window_secs`: a week, so soft bounces spread over a
/// campaign's sends count together.
pub const DEFAULT_SOFT_BOUNCE_WINDOW_SECS: u64 = 7 * 86_400;
/// `bounces.intake_interval_ms`: bounces are read once a second: prompt, and cheap
/// on the database.
pub const DEFAULT_INTAKE_INTERVAL_MS: u64 = 1_000;
/// `bounces.intake_settle_ms` on MySQL/MariaDB: how long an id must have been
/// passed by a visible one before the intake steps over it. Several writers
/// (smtpd nodes, Galera nodes, committers) commit out of id order; smtpd gives up
/// on a COMMIT after ≈ 15 s, so 30 s covers every row that will ever appear.
pub const DEFAULT_INTAKE_SETTLE_MS_MYSQL: u64 = 30_000;
/// `bounces.intake_settle_ms` on SQLite: one writer commits in id order.
pub const DEFAULT_INTAKE_SETTLE_MS_SQLITE: u64 = 0;

/// `web.listen`: the HTTP API on loopback only unless an operator says otherwise
/// (it holds every account's lists).
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";
/// `web.max_body_bytes`: a JSON request body; 10,000 subscribers with a name and a
/// few attributes each stay well inside it.
pub const DEFAULT_WEB_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// `web.max_import_bytes`: an uploaded import file (CSV or archive) as sent; a
/// million-row CSV is ~50-100 MB.
pub const DEFAULT_WEB_MAX_IMPORT_BYTES: u64 = 1024 * 1024 * 1024;
/// `web.max_connections`: connections `outbound web` holds open at once (the
/// public tracking routes included); beyond it new ones wait in the kernel's
/// backlog. A file descriptor and a few KB each.
pub const DEFAULT_WEB_MAX_CONNECTIONS: usize = 1024;
/// `web.header_read_timeout_ms`: how long a client has to send a request head
/// (and how long a kept-alive connection may sit idle), so a slowloris client
/// cannot hold a connection slot.
pub const DEFAULT_WEB_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// `web.import_dir`: where uploads wait (streamed to disk, never held in memory)
/// until their import has run.
pub const DEFAULT_WEB_IMPORT_DIR: &str = "./data/imports";

/// `campaigns.backlog`: a campaign's rows waiting in the queue at once. Pause and
/// cancel touch at most this many rows, and mail queued behind a campaign waits
/// behind at most this many.
pub const DEFAULT_CAMPAIGN_BACKLOG: usize = 10_000;
/// `campaigns.expand_batch`: subscribers looked at per expansion transaction.
pub const DEFAULT_CAMPAIGN_EXPAND_BATCH: usize = 5_000;
/// `campaigns.lease_secs`: a node's hold on a campaign's expansion; another node
/// takes the expansion over once it has lapsed.
pub const DEFAULT_CAMPAIGN_LEASE_SECS: u64 = 15;
/// `campaigns.interval_ms`: how often a node looks for campaigns to start, expand
/// or finish.
pub const DEFAULT_CAMPAIGN_INTERVAL_MS: u64 = 500;

/// Options of the relay itself (`outbound` with no subcommand).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// Redis for per-domain rate limits shared by several nodes: redis://HOST:PORT[/DB],
    /// rediss://…[?ssl-ca=PATH] or redis+cluster://H1:P1,H2:P2.
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Option<String>,
    /// This node's id in leases and heartbeats (default: the host name).
    #[arg(long = "node-id", value_name = "ID")]
    pub node_id: Option<String>,
    /// Delivery worker threads (default: one per CPU core).
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Send mail for DOMAIN to HOST:PORT instead of its MX hosts (repeatable).
    #[arg(long = "transport", value_name = "DOMAIN=HOST:PORT")]
    pub transport: Vec<String>,
    /// DNS server for MX lookups (default: /etc/resolv.conf).
    #[arg(long = "resolver", value_name = "HOST:PORT")]
    pub resolver: Option<String>,
    /// Create or update the MySQL schema at start (schema/mysql/*.sql); also
    /// after a subcommand (`outbound web --migrate`).
    #[arg(long = "migrate", global = true)]
    pub migrate: bool,
}

// ---------------------------------------------------------------------------------
// File layer.
// ---------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<FileStore>,
    redis: Option<FileRedis>,
    relay: Option<FileRelay>,
    delivery: Option<FileDelivery>,
    retry: Option<FileRetry>,
    dns: Option<FileDns>,
    bounces: Option<FileBounces>,
    web: Option<FileWeb>,
    campaigns: Option<FileCampaigns>,
    tracking: Option<FileTracking>,
    metrics: Option<crate::metrics::FileMetrics>,
    log: Option<FileLog>,
    /// Per-domain limits; the key `default` sets the defaults.
    #[serde(default)]
    domains: HashMap<String, FileDomain>,
    /// DOMAIN = "HOST:PORT".
    #[serde(default)]
    transport: HashMap<String, String>,
    /// Responsible sending (`sending`): DKIM keys per From domain, IP pools.
    #[serde(default)]
    dkim: HashMap<String, crate::sending::FileDkim>,
    #[serde(default)]
    pools: HashMap<String, crate::sending::FilePool>,
    /// Double opt-in confirmations and their throttles (`confirm::throttle`).
    confirmations: Option<crate::confirm::throttle::FileConfirmations>,
    /// Account auto-pause thresholds (`accounts`).
    accounts: Option<crate::accounts::FileAccounts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<String>,
    format: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedis {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRelay {
    node_id: Option<String>,
    threads: Option<usize>,
    batch_size: Option<usize>,
    max_in_flight: Option<usize>,
    poll_interval_ms: Option<u64>,
    lease_secs: Option<u64>,
    heartbeat_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDelivery {
    helo_name: Option<String>,
    port: Option<u16>,
    max_connections: Option<usize>,
    connect_timeout_secs: Option<u64>,
    command_timeout_secs: Option<u64>,
    data_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_messages_per_connection: Option<u32>,
    max_recipients_per_transaction: Option<usize>,
    starttls: Option<bool>,
    message_id_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    first_secs: Option<u64>,
    multiplier: Option<f64>,
    max_interval_secs: Option<u64>,
    give_up_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDns {
    resolver: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBounces {
    domain: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    bounce_prefix: Option<String>,
    unsubscribe_prefix: Option<String>,
    list_unsubscribe: Option<bool>,
    unsubscribe_url: Option<String>,
    dsn: Option<bool>,
    delay_warning_secs: Option<u64>,
    soft_bounce_limit: Option<u32>,
    soft_bounce_window_secs: Option<u64>,
    intake_interval_ms: Option<u64>,
    intake_settle_ms: Option<u64>,
    complaint_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWeb {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    max_import_bytes: Option<u64>,
    import_dir: Option<PathBuf>,
    secure_cookies: Option<bool>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    header_read_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCampaigns {
    backlog: Option<usize>,
    expand_batch: Option<usize>,
    lease_secs: Option<u64>,
    interval_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDomain {
    max_connections: Option<usize>,
    messages_per_second: Option<f64>,
}

// ---------------------------------------------------------------------------------
// Validated layer.
// ---------------------------------------------------------------------------------

/// Limits for one destination domain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DomainLimits {
    /// Connections open to the domain at once, per node (default 10).
    pub max_connections: usize,
    /// Recipients sent per second (0 = unlimited, the default), counted as providers
    /// count them: a transaction of n recipients costs n. Shared by all nodes through
    /// Redis when `redis.url` is set.
    pub messages_per_second: f64,
}

impl DomainLimits {
    /// The most recipients one transaction may carry under the rate limit: one
    /// second's worth (at least one), so that no second ever sees more than the rate
    /// and a large transaction is split instead of waiting for a budget it can never
    /// get at once. None without a rate.
    pub fn rate_burst(&self) -> Option<usize> {
        (self.messages_per_second > 0.0).then(|| (self.messages_per_second.floor() as usize).max(1))
    }
}

impl Default for DomainLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_DOMAIN_MAX_CONNECTIONS,
            messages_per_second: DEFAULT_DOMAIN_MESSAGES_PER_SECOND,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreUrl,
    pub migrate: bool,
    pub redis: Option<String>,
    pub node_id: String,
    pub threads: usize,
    /// Rows claimed per query (default 256).
    pub batch_size: usize,
    /// Claimed, unfinished recipients per node (default 5,000).
    pub max_in_flight: usize,
    /// Wait between claims when the queue had nothing due (default 500 ms).
    pub poll_interval: Duration,
    /// A claimed row's lease (default 60 s), renewed by each heartbeat.
    pub lease: Duration,
    /// Heartbeat and lease renewal interval (default 5 s).
    pub heartbeat: Duration,
    /// On SIGTERM, how long deliveries under way may take (default 30 s).
    pub shutdown_grace: Duration,
    pub helo_name: String,
    /// SMTP port of MX hosts (default 25; other values are for tests).
    pub port: u16,
    /// Connections open at once across all domains, per node (default 200).
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// How long an idle connection is kept for the next message (default 5 s).
    pub idle_timeout: Duration,
    pub max_messages_per_connection: u32,
    pub max_recipients_per_transaction: usize,
    pub starttls: bool,
    pub message_id_domain: String,
    pub retry: RetryPolicy,
    pub resolver: Option<SocketAddr>,
    pub dns_timeout: Duration,
    pub default_limits: DomainLimits,
    pub domain_limits: HashMap<String, DomainLimits>,
    pub transports: HashMap<String, SocketAddr>,
    pub bounces: Bounces,
    pub web: Web,
    pub campaigns: Campaigns,
    /// DKIM keys by From domain, loaded once at start (`sending`).
    pub dkim: std::sync::Arc<crate::dkim::Keys>,
    /// Sending IP pools by name (`sending`).
    pub pools: std::sync::Arc<crate::sending::Pools>,
    pub tracking: Tracking,
    /// `[confirmations]`: double opt-in senders and throttles.
    pub confirmations: crate::confirm::throttle::Confirmations,
    /// `[metrics]`: the telemetry listeners of the relay and of `outbound web`.
    pub metrics: crate::metrics::MetricsConfig,
    /// `[log]`: level (live on SIGHUP), format and file (need a restart).
    pub log: Log,
}

/// `[log]` of the relay and `outbound web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `log.level`: the tracing filter (`info` by default; `-v` overrides it with
    /// `outbound=debug,info`, `OUTBOUND_LOG` overrides both).
    pub level: String,
    /// `log.format`: `text` (default) or `json`.
    pub format: ops::logging::LogFormat,
    /// `log.file`: append here instead of stderr (`-l` overrides).
    pub file: Option<PathBuf>,
}

/// `log.level` when the file does not set it.
pub const DEFAULT_LOG_LEVEL: &str = "info";

fn log_section(file: FileLog) -> Result<Log, ConfigError> {
    let level = file
        .level
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    ops::logging::check_level("log.level", &level)?;
    Ok(Log {
        level,
        format: ops::logging::LogFormat::parse("log.format", file.format.as_deref())?,
        file: file.file.filter(|f| !f.as_os_str().is_empty()),
    })
}

/// The HTTP API (`[web]`, `outbound web`).
#[derive(Debug, Clone)]
pub struct Web {
    /// Where `outbound web` listens (`--listen` overrides).
    pub listen: SocketAddr,
    /// Largest JSON request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest import upload; larger gets 413.
    pub max_import_bytes: u64,
    /// Uploads wait here for their import.
    pub import_dir: PathBuf,
    /// The console's session cookie carries `Secure`. Default false: the default
    /// listener is loopback plain HTTP, where a `Secure` cookie would never be sent
    /// back; set it behind a TLS-terminating proxy.
    pub secure_cookies: bool,
    /// Connections open at once; more wait in the backlog.
    pub max_connections: usize,
    /// Connections one client address may hold (0: no limit, the default: behind
    /// a reverse proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
    /// Time to send a request head, and the idle keep-alive time.
    pub header_read_timeout: Duration,
}

/// The campaign runner of each relay node (`[campaigns]`).
#[derive(Debug, Clone)]
pub struct Campaigns {
    /// A running campaign's rows in the queue at once (queued, deferred, sending).
    pub backlog: usize,
    /// Subscribers looked at per expansion transaction.
    pub expand_batch: usize,
    /// A node's lease on one campaign's expansion.
    pub lease: Duration,
    /// How often the runner looks at campaigns.
    pub interval: Duration,
    /// `[accounts]`: when the runner pauses an account for its bounces or
    /// complaints (the runner is what pauses, so its settings travel with it).
    pub pause: crate::accounts::PauseLimits,
}

/// The bounce loop (`[bounces]`): VERP, DSNs, intake, unsubscribe.
#[derive(Debug, Clone)]
pub struct Bounces {
    /// VERP return paths and unsubscribe addresses; None = plain return paths and
    /// no bounce intake.
    pub verp: Option<Verp>,
    /// Add `List-Unsubscribe` (mailto:, and the URL when set) to every message.
    pub list_unsubscribe: bool,
    /// RFC 8058 one-click URL; `?token=<queue id>-<tag>` is appended.
    pub unsubscribe_url: Option<String>,
    /// Send the original sender a DSN when a recipient fails (default on).
    pub dsn: bool,
    /// Send a "delayed" DSN once a recipient has waited this long (default off).
    pub delay_warning: Option<Duration>,
    /// Suppress an address after this many soft bounces ...
    pub soft_bounce_limit: u32,
    /// ... within this window.
    pub soft_bounce_window: Duration,
    /// How often `new_mail` is read for bounces and unsubscribes.
    pub intake_interval: Duration,
    /// How long the intake waits before stepping over an id it has not seen
    /// (see `intake_horizon`); None: the store's default ([`Bounces::intake_settle`]).
    pub intake_settle: Option<Duration>,
    /// Where feedback-loop reports (ARF, RFC 5965) arrive, lowercased; None = no
    /// complaint intake. Read with the bounces, so it takes effect only with VERP.
    pub complaint_address: Option<String>,
}

impl Bounces {
    /// `bounces.intake_settle_ms`, or the store's default: 0 on SQLite (one writer,
    /// ids commit in order), 30 s on MySQL/MariaDB.
    pub fn intake_settle(&self, mysql: bool) -> Duration {
        self.intake_settle
            .unwrap_or(Duration::from_millis(if mysql {
                DEFAULT_INTAKE_SETTLE_MS_MYSQL
            } else {
                DEFAULT_INTAKE_SETTLE_MS_SQLITE
            }))
    }
}

impl Config {
    pub fn limits_for(&self, domain: &str) -> DomainLimits {
        // Per-domain limits a SIGHUP reloaded win over the ones read at start.
        if let Some(live) = crate::reload::limits_for(domain) {
            return live;
        }
        self.domain_limits
            .get(domain)
            .copied()
            .unwrap_or(self.default_limits)
    }

    /// Recipients per transaction to `domain`: `delivery.max_recipients_per_transaction`,
    /// or fewer when the domain's rate limit allows fewer per second.
    pub fn recipients_per_transaction(&self, domain: &str) -> usize {
        let most = self.max_recipients_per_transaction;
        self.limits_for(domain)
            .rate_burst()
            .map_or(most, |burst| burst.min(most))
    }

    /// Reads `path` (if any), applies the command line, validates.
    pub fn load(
        path: Option<&Path>,
        store: Option<&str>,
        args: &RunArgs,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => read_toml::<FileConfig>(path)?,
            None => FileConfig::default(),
        };
        Self::from_file(file, store, args)
    }

    /// Validates every section (raw → validated, one function each), then reads
    /// the one file a setting names (`bounces.key_file`), then assembles.
    fn from_file(
        file: FileConfig,
        store: Option<&str>,
        args: &RunArgs,
    ) -> Result<Self, ConfigError> {
        let machine = Machine::this_one();
        let store = store_section(store, file.store)?;
        let redis = redis_section(args.redis.as_deref(), file.redis)?;
        let relay = relay_section(file.relay.unwrap_or_default(), args, &machine)?;
        let dns = dns_section(file.dns.unwrap_or_default(), args)?;
        let transports = transport_section(file.transport, &args.transport)?;
        let (default_limits, domain_limits) = domains_section(file.domains)?;
        let retry = retry_section(file.retry.unwrap_or_default())?;
        let bounces = bounces_section(file.bounces.unwrap_or_default())?;
        let delivery = delivery_section(file.delivery.unwrap_or_default(), &machine)?;
        let web = web_section(file.web.unwrap_or_default())?;
        let campaigns = campaigns_section(file.campaigns.unwrap_or_default())?;
        let pools = crate::sending::pools_section(file.pools, &delivery.helo_name)?;
        let tracking = tracking_section(file.tracking.unwrap_or_default())?;
        let confirmations = crate::confirm::throttle::confirmations_section(
            file.confirmations.unwrap_or_default(),
        )?;
        let mut campaigns = campaigns;
        campaigns.pause = crate::accounts::accounts_section(file.accounts.unwrap_or_default())?;
        let metrics = crate::metrics::metrics_section(file.metrics.unwrap_or_default())?;
        let log = log_section(file.log.unwrap_or_default())?;
        // Every value is valid: only now is a file opened.
        let bounces = load_bounce_key(bounces)?;
        let dkim = crate::sending::dkim_section(file.dkim)?;
        let tracking = load_tracking_key(tracking)?;
        Ok(Self {
            store,
            migrate: args.migrate,
            redis,
            node_id: relay.node_id,
            threads: relay.threads,
            batch_size: relay.batch_size,
            max_in_flight: relay.max_in_flight,
            poll_interval: relay.poll_interval,
            lease: relay.lease,
            heartbeat: relay.heartbeat,
            shutdown_grace: relay.shutdown_grace,
            helo_name: delivery.helo_name,
            port: delivery.port,
            max_connections: delivery.max_connections,
            connect_timeout: delivery.connect_timeout,
            command_timeout: delivery.command_timeout,
            data_timeout: delivery.data_timeout,
            idle_timeout: delivery.idle_timeout,
            max_messages_per_connection: delivery.max_messages_per_connection,
            max_recipients_per_transaction: delivery.max_recipients_per_transaction,
            starttls: delivery.starttls,
            message_id_domain: delivery.message_id_domain,
            retry,
            resolver: dns.resolver,
            dns_timeout: dns.timeout,
            default_limits,
            domain_limits,
            transports,
            bounces,
            web,
            campaigns,
            dkim: std::sync::Arc::new(dkim),
            pools: std::sync::Arc::new(pools),
            tracking,
            confirmations,
            metrics,
            log,
        })
    }
}

// ---------------------------------------------------------------------------------
// One validation step per section: raw in, validated out, errors naming the field.
// ---------------------------------------------------------------------------------

/// What defaults depend on that is a fact of the machine, read once before
/// validating (so the section steps are functions of their inputs).
struct Machine {
    hostname: String,
    cores: usize,
}

impl Machine {
    fn this_one() -> Self {
        Self {
            hostname: system_hostname(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

fn web_section(raw: FileWeb) -> Result<Web, ConfigError> {
    let listen = parse_listen(
        "web.listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_WEB_LISTEN),
    )?;
    let import_dir = raw
        .import_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WEB_IMPORT_DIR));
    if import_dir.as_os_str().is_empty() {
        return Err(invalid("web.import_dir", "must not be empty"));
    }
    Ok(Web {
        listen,
        max_body_bytes: bounded(
            "web.max_body_bytes",
            raw.max_body_bytes.unwrap_or(DEFAULT_WEB_MAX_BODY_BYTES),
            1024,
            1024 * 1024 * 1024,
        )?,
        max_import_bytes: bounded(
            "web.max_import_bytes",
            raw.max_import_bytes.unwrap_or(DEFAULT_WEB_MAX_IMPORT_BYTES),
            1024,
            64 * 1024 * 1024 * 1024,
        )?,
        import_dir,
        secure_cookies: raw.secure_cookies.unwrap_or(false),
        max_connections: bounded(
            "web.max_connections",
            raw.max_connections.unwrap_or(DEFAULT_WEB_MAX_CONNECTIONS),
            1,
            1_000_000,
        )?,
        max_connections_per_ip: bounded(
            "web.max_connections_per_ip",
            raw.max_connections_per_ip.unwrap_or(0),
            0,
            1_000_000,
        )?,
        header_read_timeout: millis(
            "web.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            DEFAULT_WEB_HEADER_READ_TIMEOUT_MS,
            100,
            600_000,
        )?,
    })
}

/// `ADDR:PORT` for a listener (an IP address: a listener never resolves names).
pub fn parse_listen(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        invalid(
            field,
            format!("`{value}` is not ADDR:PORT (e.g. 127.0.0.1:8080)"),
        )
    })
}

fn campaigns_section(raw: FileCampaigns) -> Result<Campaigns, ConfigError> {
    Ok(Campaigns {
        backlog: bounded(
            "campaigns.backlog",
            raw.backlog.unwrap_or(DEFAULT_CAMPAIGN_BACKLOG),
            1,
            10_000_000,
        )?,
        expand_batch: bounded(
            "campaigns.expand_batch",
            raw.expand_batch.unwrap_or(DEFAULT_CAMPAIGN_EXPAND_BATCH),
            1,
            1_000_000,
        )?,
        lease: secs(
            "campaigns.lease_secs",
            raw.lease_secs,
            DEFAULT_CAMPAIGN_LEASE_SECS,
            2,
            3_600,
        )?,
        interval: millis(
            "campaigns.interval_ms",
            raw.interval_ms,
            DEFAULT_CAMPAIGN_INTERVAL_MS,
            10,
            60_000,
        )?,
        pause: crate::accounts::PauseLimits::default(),
    })
}

/// `value` (or `default`) seconds, within `min..=max`.
fn secs(
    field: &'static str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    bounded(field, value.unwrap_or(default), min, max).map(Duration::from_secs)
}

/// `value` (or `default`) milliseconds, within `min..=max`.
fn millis(
    field: &'static str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    bounded(field, value.unwrap_or(default), min, max).map(Duration::from_millis)
}

/// `[store]`: `--store` over `store.url`.
fn store_section(cli: Option<&str>, raw: Option<FileStore>) -> Result<StoreUrl, ConfigError> {
    let text = cli
        .map(str::to_owned)
        .or(raw.and_then(|s| s.url))
        .unwrap_or_else(|| DEFAULT_STORE_URL.to_owned());
    text.parse().map_err(|e| invalid("store.url", e))
}

/// `[redis]`: `--redis` over `redis.url`; none by default (limits per node).
fn redis_section(cli: Option<&str>, raw: Option<FileRedis>) -> Result<Option<String>, ConfigError> {
    let url = cli.map(str::to_owned).or(raw.and_then(|r| r.url));
    if let Some(url) = &url
        && let Err(e) = url.parse::<mailstore::RedisTarget>()
    {
        // The URL itself may hold a password: the error names the part at fault.
        return Err(invalid(
            "redis.url",
            format!(
                "{e} (expected redis://HOST:PORT[/DB], rediss://…[?ssl-ca=PATH] or redis+cluster://H1:P1,H2:P2)"
            ),
        ));
    }
    Ok(url)
}

/// `[relay]` validated.
struct Relay {
    node_id: String,
    threads: usize,
    batch_size: usize,
    max_in_flight: usize,
    poll_interval: Duration,
    lease: Duration,
    heartbeat: Duration,
    shutdown_grace: Duration,
}

/// `[relay]`: `--node-id` and `--threads` over the file.
fn relay_section(raw: FileRelay, args: &RunArgs, machine: &Machine) -> Result<Relay, ConfigError> {
    let node_id = args
        .node_id
        .clone()
        .or(raw.node_id)
        .unwrap_or_else(|| machine.hostname.clone());
    if node_id.is_empty() || node_id.len() > 64 || node_id.chars().any(char::is_control) {
        return Err(invalid(
            "relay.node_id",
            "must be 1 to 64 printable characters",
        ));
    }
    let threads = args.threads.or(raw.threads).unwrap_or(machine.cores);
    let threads = bounded("relay.threads", threads, 1, 1024)?;
    let lease = secs(
        "relay.lease_secs",
        raw.lease_secs,
        DEFAULT_LEASE_SECS,
        1,
        86_400,
    )?;
    let heartbeat = secs(
        "relay.heartbeat_secs",
        raw.heartbeat_secs,
        DEFAULT_HEARTBEAT_SECS,
        1,
        3_600,
    )?;
    if heartbeat >= lease {
        return Err(invalid(
            "relay.heartbeat_secs",
            "must be shorter than relay.lease_secs (each heartbeat renews the leases)",
        ));
    }
    Ok(Relay {
        node_id,
        threads,
        batch_size: bounded(
            "relay.batch_size",
            raw.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            1,
            10_000,
        )?,
        max_in_flight: bounded(
            "relay.max_in_flight",
            raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            1,
            1_000_000,
        )?,
        poll_interval: millis(
            "relay.poll_interval_ms",
            raw.poll_interval_ms,
            DEFAULT_POLL_INTERVAL_MS,
            10,
            60_000,
        )?,
        lease,
        heartbeat,
        shutdown_grace: secs(
            "relay.shutdown_grace_secs",
            raw.shutdown_grace_secs,
            DEFAULT_SHUTDOWN_GRACE_SECS,
            0,
            3_600,
        )?,
    })
}

/// `[delivery]` validated.
struct Delivery {
    helo_name: String,
    port: u16,
    max_connections: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    data_timeout: Duration,
    idle_timeout: Duration,
    max_messages_per_connection: u32,
    max_recipients_per_transaction: usize,
    starttls: bool,
    message_id_domain: String,
}

/// `[delivery]`: the HELO name defaults to the host name, the Message-ID domain to
/// the HELO name.
fn delivery_section(raw: FileDelivery, machine: &Machine) -> Result<Delivery, ConfigError> {
    let helo_name = raw.helo_name.unwrap_or_else(|| machine.hostname.clone());
    // The same rule as smtpd's server.hostname: it goes into EHLO and headers.
    check_hostname("delivery.helo_name", &helo_name)?;
    Ok(Delivery {
        message_id_domain: raw.message_id_domain.unwrap_or_else(|| helo_name.clone()),
        helo_name,
        port: raw.port.unwrap_or(DEFAULT_SMTP_PORT),
        max_connections: bounded(
            "delivery.max_connections",
            raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            1,
            100_000,
        )?,
        connect_timeout: secs(
            "delivery.connect_timeout_secs",
            raw.connect_timeout_secs,
            DEFAULT_CONNECT_TIMEOUT_SECS,
            1,
            600,
        )?,
        command_timeout: secs(
            "delivery.command_timeout_secs",
            raw.command_timeout_secs,
            DEFAULT_COMMAND_TIMEOUT_SECS,
            1,
            3_600,
        )?,
        data_timeout: secs(
            "delivery.data_timeout_secs",
            raw.data_timeout_secs,
            DEFAULT_DATA_TIMEOUT_SECS,
            1,
            3_600,
        )?,
        idle_timeout: secs(
            "delivery.idle_timeout_secs",
            raw.idle_timeout_secs,
            DEFAULT_IDLE_TIMEOUT_SECS,
            0,
            300,
        )?,
        max_messages_per_connection: bounded(
            "delivery.max_messages_per_connection",
            raw.max_messages_per_connection
                .unwrap_or(DEFAULT_MAX_MESSAGES_PER_CONNECTION),
            1,
            1_000_000,
        )?,
        max_recipients_per_transaction: bounded(
            "delivery.max_recipients_per_transaction",
            raw.max_recipients_per_transaction
                .unwrap_or(DEFAULT_MAX_RECIPIENTS_PER_TRANSACTION),
            1,
            1_000,
        )?,
        starttls: raw.starttls.unwrap_or(DEFAULT_STARTTLS),
    })
}

/// `[retry]`: the backoff schedule.
fn retry_section(raw: FileRetry) -> Result<RetryPolicy, ConfigError> {
    let multiplier = raw.multiplier.unwrap_or(DEFAULT_RETRY_MULTIPLIER);
    if !(1.0..=100.0).contains(&multiplier) {
        return Err(invalid("retry.multiplier", "must be between 1 and 100"));
    }
    Ok(RetryPolicy {
        first: secs(
            "retry.first_secs",
            raw.first_secs,
            DEFAULT_RETRY_FIRST_SECS,
            1,
            86_400,
        )?,
        multiplier,
        max_interval: secs(
            "retry.max_interval_secs",
            raw.max_interval_secs,
            DEFAULT_RETRY_MAX_INTERVAL_SECS,
            1,
            604_800,
        )?,
        give_up_after: secs(
            "retry.give_up_secs",
            raw.give_up_secs,
            DEFAULT_RETRY_GIVE_UP_SECS,
            1,
            2_592_000,
        )?,
    })
}

/// `[dns]` validated.
struct Dns {
    resolver: Option<SocketAddr>,
    timeout: Duration,
}

/// `[dns]`: `--resolver` over `dns.resolver`; none means /etc/resolv.conf.
fn dns_section(raw: FileDns, args: &RunArgs) -> Result<Dns, ConfigError> {
    let resolver = match args.resolver.clone().or(raw.resolver) {
        Some(text) => Some(parse_addr(&text).map_err(|e| invalid("dns.resolver", e))?),
        None => None,
    };
    Ok(Dns {
        resolver,
        timeout: millis(
            "dns.timeout_ms",
            raw.timeout_ms,
            DEFAULT_DNS_TIMEOUT_MS,
            10,
            60_000,
        )?,
    })
}

/// `[transport]` and `--transport DOMAIN=HOST:PORT` (the flags win), by lowercased
/// domain.
fn transport_section(
    raw: HashMap<String, String>,
    cli: &[String],
) -> Result<HashMap<String, SocketAddr>, ConfigError> {
    let mut transports = HashMap::new();
    for (domain, target) in raw {
        let addr = parse_addr(&target).map_err(|e| invalid(format!("transport.{domain}"), e))?;
        transports.insert(domain.to_ascii_lowercase(), addr);
    }
    for spec in cli {
        let (domain, target) = spec
            .split_once('=')
            .ok_or_else(|| invalid("--transport", format!("`{spec}` is not DOMAIN=HOST:PORT")))?;
        let addr = parse_addr(target).map_err(|e| invalid("--transport", e))?;
        transports.insert(domain.trim().to_ascii_lowercase(), addr);
    }
    Ok(transports)
}

/// `[domains.*]`: `domains.default` over the built-in defaults, every other domain
/// over `domains.default`. Returns the defaults and the limits by lowercased domain.
fn domains_section(
    mut raw: HashMap<String, FileDomain>,
) -> Result<(DomainLimits, HashMap<String, DomainLimits>), ConfigError> {
    let default_limits = domain_limits_of(
        "domains.default",
        raw.remove("default").unwrap_or_default(),
        DomainLimits::default(),
    )?;
    let mut domain_limits = HashMap::new();
    for (domain, limits) in raw {
        let field = format!("domains.\"{domain}\"");
        domain_limits.insert(
            domain.to_ascii_lowercase(),
            domain_limits_of(&field, limits, default_limits)?,
        );
    }
    Ok((default_limits, domain_limits))
}

fn domain_limits_of(
    field: &str,
    file: FileDomain,
    base: DomainLimits,
) -> Result<DomainLimits, ConfigError> {
    let max_connections = file.max_connections.unwrap_or(base.max_connections);
    if !(1..=10_000).contains(&max_connections) {
        return Err(invalid(
            format!("{field}.max_connections"),
            "must be between 1 and 10000",
        ));
    }
    let messages_per_second = file.messages_per_second.unwrap_or(base.messages_per_second);
    if !(0.0..=1_000_000.0).contains(&messages_per_second) {
        return Err(invalid(
            format!("{field}.messages_per_second"),
            "must be between 0 (unlimited) and 1000000",
        ));
    }
    Ok(DomainLimits {
        max_connections,
        messages_per_second,
    })
}

/// Where the VERP key is, once `[bounces]` is validated.
#[derive(Debug)]
enum BounceKey {
    /// `bounces.key`, already checked.
    Inline(Vec<u8>),
    /// `bounces.key_file`, read by [`load_bounce_key`] after validation.
    File(PathBuf),
}

/// The VERP part of `[bounces]`, validated but for a key file's contents.
#[derive(Debug)]
struct VerpSection {
    domain: String,
    bounce_prefix: String,
    unsubscribe_prefix: String,
    key: BounceKey,
}

/// `[bounces]` validated; [`load_bounce_key`] turns it into [`Bounces`].
#[derive(Debug)]
struct BouncesSection {
    verp: Option<VerpSection>,
    /// As configured; it takes effect only with VERP.
    list_unsubscribe: bool,
    unsubscribe_url: Option<String>,
    dsn: bool,
    delay_warning: Option<Duration>,
    soft_bounce_limit: u32,
    soft_bounce_window: Duration,
    intake_interval: Duration,
    intake_settle: Option<Duration>,
    complaint_address: Option<String>,
}

/// A VERP key must make tags unforgeable.
fn check_bounce_key(key: &[u8]) -> Result<(), ConfigError> {
    if key.len() < 16 {
        return Err(invalid(
            "bounces.key",
            "must be at least 16 bytes (it makes VERP tags unforgeable)",
        ));
    }
    Ok(())
}

/// `bounces.bounce_prefix` and `bounces.unsubscribe_prefix`: the local part before
/// the `+`, so it must be a safe one.
fn address_prefix(
    field: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if value.is_empty()
        || value.len() > 32
        || !value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
    {
        return Err(invalid(
            field,
            "must be 1 to 32 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(value)
}

/// `[bounces]`: VERP needs a domain and a key (`key` or `key_file`, not both);
/// without them return paths are plain and nothing is read back. Opens no file.
fn bounces_section(raw: FileBounces) -> Result<BouncesSection, ConfigError> {
    let key = match (raw.key, raw.key_file) {
        (Some(_), Some(_)) => return Err(invalid("bounces.key", "give key or key_file, not both")),
        (Some(k), None) => Some(BounceKey::Inline(k.into_bytes())),
        (None, Some(path)) => Some(BounceKey::File(path)),
        (None, None) => None,
    };
    let bounce_prefix = address_prefix(
        "bounces.bounce_prefix",
        raw.bounce_prefix,
        DEFAULT_BOUNCE_PREFIX,
    )?;
    let unsubscribe_prefix = address_prefix(
        "bounces.unsubscribe_prefix",
        raw.unsubscribe_prefix,
        DEFAULT_UNSUBSCRIBE_PREFIX,
    )?;
    if bounce_prefix.eq_ignore_ascii_case(&unsubscribe_prefix) {
        return Err(invalid(
            "bounces.unsubscribe_prefix",
            "must differ from bounces.bounce_prefix",
        ));
    }
    let verp = match (raw.domain, key) {
        (Some(domain), Some(key)) => {
            // A key file's length is checked once it is read.
            if let BounceKey::Inline(k) = &key {
                check_bounce_key(k)?;
            }
            if domain.is_empty()
                || !domain
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
            {
                return Err(invalid(
                    "bounces.domain",
                    format!("`{domain}` is not a domain name"),
                ));
            }
            Some(VerpSection {
                domain,
                bounce_prefix,
                unsubscribe_prefix,
                key,
            })
        }
        (Some(_), None) => return Err(invalid("bounces.key", "required with bounces.domain")),
        (None, Some(_)) => return Err(invalid("bounces.domain", "required with bounces.key")),
        (None, None) => None,
    };
    if let Some(url) = &raw.unsubscribe_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(invalid("bounces.unsubscribe_url", "must be an http(s) URL"));
    }
    if let Some(a) = &raw.complaint_address
        && !crate::address::is_mailbox(a)
    {
        return Err(invalid(
            "bounces.complaint_address",
            format!("`{a}` is not a mailbox (local@domain)"),
        ));
    }
    if let (Some(a), Some(v)) = (&raw.complaint_address, &verp) {
        check_complaint_address(a, v)?;
    }
    let delay = raw.delay_warning_secs.unwrap_or(DEFAULT_DELAY_WARNING_SECS);
    Ok(BouncesSection {
        complaint_address: raw.complaint_address.map(|a| a.to_ascii_lowercase()),
        verp,
        list_unsubscribe: raw.list_unsubscribe.unwrap_or(DEFAULT_LIST_UNSUBSCRIBE),
        unsubscribe_url: raw.unsubscribe_url,
        dsn: raw.dsn.unwrap_or(DEFAULT_DSN),
        delay_warning: (delay > 0).then(|| Duration::from_secs(delay)),
        soft_bounce_limit: bounded(
            "bounces.soft_bounce_limit",
            raw.soft_bounce_limit.unwrap_or(DEFAULT_SOFT_BOUNCE_LIMIT),
            1,
            1000,
        )?,
        soft_bounce_window: secs(
            "bounces.soft_bounce_window_secs",
            raw.soft_bounce_window_secs,
            DEFAULT_SOFT_BOUNCE_WINDOW_SECS,
            60,
            365 * 86_400,
        )?,
        intake_interval: millis(
            "bounces.intake_interval_ms",
            raw.intake_interval_ms,
            DEFAULT_INTAKE_INTERVAL_MS,
            10,
            3_600_000,
        )?,
        intake_settle: raw
            .intake_settle_ms
            .map(|ms| bounded("bounces.intake_settle_ms", ms, 0, 600_000))
            .transpose()?
            .map(Duration::from_millis),
    })
}

/// `bounces.complaint_address` must not be a VERP address (bounce or
/// unsubscribe, with or without a `+` tag): mail to it would be read as bounces or
/// unsubscribes, never as complaints.
fn check_complaint_address(address: &str, v: &VerpSection) -> Result<(), ConfigError> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Ok(());
    };
    if !domain.eq_ignore_ascii_case(&v.domain) {
        return Ok(());
    }
    let base = local.split_once('+').map_or(local, |(b, _)| b);
    for (prefix, field) in [
        (&v.bounce_prefix, "bounces.bounce_prefix"),
        (&v.unsubscribe_prefix, "bounces.unsubscribe_prefix"),
    ] {
        if base.eq_ignore_ascii_case(prefix) {
            return Err(invalid(
                "bounces.complaint_address",
                format!(
                    "`{address}` is the VERP address of {field} at bounces.domain;                      complaints need an address of their own"
                ),
            ));
        }
    }
    Ok(())
}

/// The step after validation: reads `bounces.key_file` when the key is there
/// (surrounding whitespace trimmed, as an editor's final newline), checks it like an
/// inline key, and builds the VERP settings.
fn load_bounce_key(section: BouncesSection) -> Result<Bounces, ConfigError> {
    let verp = match section.verp {
        Some(v) => {
            let key = match v.key {
                BounceKey::Inline(key) => key,
                BounceKey::File(path) => {
                    let key = std::fs::read(&path)
                        .map_err(|e| {
                            invalid("bounces.key_file", format!("{}: {e}", path.display()))
                        })?
                        .trim_ascii()
                        .to_vec();
                    check_bounce_key(&key)?;
                    key
                }
            };
            Some(Verp::new(
                &v.domain,
                &v.bounce_prefix,
                &v.unsubscribe_prefix,
                &key,
            ))
        }
        None => None,
    };
    Ok(Bounces {
        list_unsubscribe: section.list_unsubscribe && verp.is_some(),
        verp,
        unsubscribe_url: section.unsubscribe_url,
        dsn: section.dsn,
        delay_warning: section.delay_warning,
        soft_bounce_limit: section.soft_bounce_limit,
        soft_bounce_window: section.soft_bounce_window,
        complaint_address: section.complaint_address,
        intake_interval: section.intake_interval,
        intake_settle: section.intake_settle,
    })
}

/// `HOST:PORT` (a name is resolved once, now).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("`{text}` is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

// ---------------------------------------------------------------------------------
// [tracking]: masked links, open pixels and unsubscribe pages (`tracking`). Read by
// the relay (it masks) and by `outbound web` (it verifies): one file for both.
// ---------------------------------------------------------------------------------

/// `tracking.scheme`: recipients' clients follow https links without a warning;
/// `http` is for tests on loopback.
pub const DEFAULT_TRACKING_SCHEME: &str = "https";
/// The shortest tracking key: the HMAC makes tokens unforgeable.
pub const MIN_TRACKING_KEY_BYTES: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTracking {
    key: Option<String>,
    key_file: Option<PathBuf>,
    scheme: Option<String>,
    link_masking: Option<bool>,
}

/// `[tracking]` validated but for a key file's contents.
#[derive(Debug)]
struct TrackingSection {
    key: Option<BounceKey>,
    scheme: &'static str,
    link_masking: Option<bool>,
}

/// `[tracking]`: the key of tracking tokens and how links are written.
#[derive(Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The HMAC key of tracking tokens; None: no masking, and `outbound web`
    /// answers 404 to every `/l`, `/o`, `/u` path.
    pub key: Option<Vec<u8>>,
    /// `https` (default) or `http`.
    pub scheme: &'static str,
    /// Links masked in campaign mail (default: on when a key is set).
    pub link_masking: bool,
}

impl std::fmt::Debug for Tracking {
    // The key stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("scheme", &self.scheme)
            .field("link_masking", &self.link_masking)
            .finish()
    }
}

impl Default for Tracking {
    fn default() -> Self {
        Self {
            key: None,
            scheme: DEFAULT_TRACKING_SCHEME,
            link_masking: false,
        }
    }
}

fn check_tracking_key(field: &'static str, key: &[u8]) -> Result<(), ConfigError> {
    if key.len() < MIN_TRACKING_KEY_BYTES {
        return Err(invalid(
            field,
            format!(
                "must be at least {MIN_TRACKING_KEY_BYTES} bytes (it makes tracking tokens unforgeable)"
            ),
        ));
    }
    Ok(())
}

fn tracking_section(raw: FileTracking) -> Result<TrackingSection, ConfigError> {
    let key = match (raw.key, raw.key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "tracking.key",
                "give `key` or `key_file`, not both",
            ));
        }
        (Some(k), None) => {
            check_tracking_key("tracking.key", k.as_bytes())?;
            Some(BounceKey::Inline(k.into_bytes()))
        }
        (None, Some(path)) => Some(BounceKey::File(path)),
        (None, None) => None,
    };
    let scheme = match raw.scheme.as_deref().map(str::trim) {
        None => DEFAULT_TRACKING_SCHEME,
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(_) => return Err(invalid("tracking.scheme", "must be `https` or `http`")),
    };
    if raw.link_masking == Some(true) && key.is_none() {
        return Err(invalid(
            "tracking.link_masking",
            "needs `tracking.key` or `tracking.key_file`",
        ));
    }
    Ok(TrackingSection {
        key,
        scheme,
        link_masking: raw.link_masking,
    })
}

/// Reads `tracking.key_file` (trimmed, as `bounces.key_file`) once every section
/// is valid.
fn load_tracking_key(section: TrackingSection) -> Result<Tracking, ConfigError> {
    let key = match section.key {
        None => None,
        Some(BounceKey::Inline(k)) => Some(k),
        Some(BounceKey::File(path)) => {
            let key = std::fs::read(&path)
                .map_err(|e| invalid("tracking.key_file", format!("{}: {e}", path.display())))?
                .trim_ascii()
                .to_vec();
            check_tracking_key("tracking.key_file", &key)?;
            Some(key)
        }
    };
    Ok(Tracking {
        link_masking: section.link_masking.unwrap_or(key.is_some()) && key.is_some(),
        key,
        scheme: section.scheme,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, args: &RunArgs) -> Result<Config, ConfigError> {
        Config::from_file(toml::from_str(toml_text).unwrap(), None, args)
    }

    #[test]
    fn tracking_masks_by_default_once_a_key_is_set_and_checks_its_fields() {
        let c = parse("", &RunArgs::default()).unwrap();
        assert_eq!(c.tracking, Tracking::default());
        assert!(!c.tracking.link_masking);
        let c = parse(
            "[tracking]\nkey = \"0123456789abcdef\"\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert!(c.tracking.link_masking);
        assert_eq!(c.tracking.scheme, "https");
        let c = parse(
            "[tracking]\nkey = \"0123456789abcdef\"\nlink_masking = false\nscheme = \"http\"\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert!(!c.tracking.link_masking);
        assert_eq!(c.tracking.scheme, "http");
        for (toml_text, field) in [
            ("[tracking]\nkey = \"short\"\n", "tracking.key"),
            ("[tracking]\nscheme = \"ftp\"\n", "tracking.scheme"),
            ("[tracking]\nlink_masking = true\n", "tracking.link_masking"),
            (
                "[tracking]\nkey_file = \"/nonexistent/key\"\n",
                "tracking.key_file",
            ),
        ] {
            let e = parse(toml_text, &RunArgs::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{toml_text}: {e}");
        }
        assert!(
            !format!(
                "{:?}",
                Tracking {
                    key: Some(b"secret-secret-secret".to_vec()),
                    ..Tracking::default()
                }
            )
            .contains("secret")
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse("", &RunArgs::default()).unwrap();
        assert_eq!(c.store.to_string(), "sqlite:./data/smtpd.sqlite");
        assert_eq!(c.port, 25);
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.default_limits, DomainLimits::default());
        assert!(c.starttls);
        assert_eq!(c.lease, Duration::from_secs(60));
    }

    #[test]
    fn domains_inherit_the_default_section_and_cli_overrides_transport() {
        let args = RunArgs {
            transport: vec!["Example.COM=127.0.0.1:2600".into()],
            threads: Some(3),
            ..RunArgs::default()
        };
        let c = parse(
            "[domains.default]\nmax_connections = 4\n[domains.\"slow.test\"]\nmessages_per_second = 2.5\n[transport]\n\"example.com\" = \"127.0.0.1:2500\"\n",
            &args,
        )
        .unwrap();
        assert_eq!(c.limits_for("other.test").max_connections, 4);
        let slow = c.limits_for("slow.test");
        assert_eq!((slow.max_connections, slow.messages_per_second), (4, 2.5));
        assert_eq!(c.transports["example.com"].port(), 2600);
        assert_eq!(c.threads, 3);
    }

    #[test]
    fn a_rate_limit_caps_recipients_per_transaction_at_one_seconds_worth() {
        let c = parse(
            "[delivery]\nmax_recipients_per_transaction = 10\n\
             [domains.\"one.test\"]\nmessages_per_second = 1\n\
             [domains.\"slow.test\"]\nmessages_per_second = 0.2\n\
             [domains.\"fast.test\"]\nmessages_per_second = 2.5\n\
             [domains.\"faster.test\"]\nmessages_per_second = 500\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert_eq!(c.recipients_per_transaction("free.test"), 10);
        assert_eq!(c.recipients_per_transaction("one.test"), 1);
        assert_eq!(c.recipients_per_transaction("slow.test"), 1);
        assert_eq!(c.recipients_per_transaction("fast.test"), 2);
        assert_eq!(c.recipients_per_transaction("faster.test"), 10);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |t: &str| parse(t, &RunArgs::default()).unwrap_err().to_string();
        assert!(err("[relay]\nthreads = 0").starts_with("relay.threads:"));
        assert!(
            err("[relay]\nlease_secs = 5\nheartbeat_secs = 5").starts_with("relay.heartbeat_secs:")
        );
        assert!(
            err("[domains.\"a.test\"]\nmessages_per_second = -1")
                .starts_with("domains.\"a.test\".messages_per_second:")
        );
        assert!(err("[transport]\n\"a.test\" = \"nowhere\"").starts_with("transport.a.test:"));
        assert!(err("[retry]\nmultiplier = 0.5").starts_with("retry.multiplier:"));
        let bad = RunArgs {
            transport: vec!["x".into()],
            ..RunArgs::default()
        };
        assert!(
            parse("", &bad)
                .unwrap_err()
                .to_string()
                .starts_with("--transport:")
        );
        assert!(toml::from_str::<FileConfig>("[relay]\nbogus = 1").is_err());
        assert!(err("[bounces]\ndomain = \"b.test\"").starts_with("bounces.key:"));
        assert!(err("[bounces]\ndomain = \"b.test\"\nkey = \"short\"").starts_with("bounces.key:"));
        assert!(err("[bounces]\nkey = \"0123456789abcdef\"").starts_with("bounces.domain:"));
        assert!(
            err("[bounces]\nunsubscribe_url = \"ftp://x\"").starts_with("bounces.unsubscribe_url:")
        );
        assert!(
            err("[bounces]\ncomplaint_address = \"fbl\"").starts_with("bounces.complaint_address:")
        );
    }

    fn machine() -> Machine {
        Machine {
            hostname: "relay.test".into(),
            cores: 6,
        }
    }

    #[test]
    fn every_section_defaults_to_its_named_constant() {
        let relay = relay_section(FileRelay::default(), &RunArgs::default(), &machine()).unwrap();
        assert_eq!((relay.node_id.as_str(), relay.threads), ("relay.test", 6));
        assert_eq!(relay.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(relay.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(
            relay.poll_interval,
            Duration::from_millis(DEFAULT_POLL_INTERVAL_MS)
        );
        assert_eq!(relay.lease, Duration::from_secs(DEFAULT_LEASE_SECS));
        assert_eq!(relay.heartbeat, Duration::from_secs(DEFAULT_HEARTBEAT_SECS));
        assert_eq!(
            relay.shutdown_grace,
            Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS)
        );
        let d = delivery_section(FileDelivery::default(), &machine()).unwrap();
        assert_eq!(
            (d.helo_name.as_str(), d.message_id_domain.as_str()),
            ("relay.test", "relay.test")
        );
        assert_eq!(
            (d.port, d.max_connections),
            (DEFAULT_SMTP_PORT, DEFAULT_MAX_CONNECTIONS)
        );
        assert_eq!(
            d.idle_timeout,
            Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS)
        );
        assert_eq!(
            d.data_timeout,
            Duration::from_secs(DEFAULT_DATA_TIMEOUT_SECS)
        );
        assert_eq!(
            d.max_recipients_per_transaction,
            DEFAULT_MAX_RECIPIENTS_PER_TRANSACTION
        );
        assert!(d.starttls);
        assert_eq!(
            retry_section(FileRetry::default()).unwrap(),
            RetryPolicy::default()
        );
        let dns = dns_section(FileDns::default(), &RunArgs::default()).unwrap();
        assert_eq!(
            (dns.resolver, dns.timeout),
            (None, Duration::from_millis(DEFAULT_DNS_TIMEOUT_MS))
        );
        let b = load_bounce_key(bounces_section(FileBounces::default()).unwrap()).unwrap();
        assert!(
            b.verp.is_none() && !b.list_unsubscribe,
            "no VERP, no List-Unsubscribe"
        );
        assert_eq!((b.dsn, b.delay_warning), (DEFAULT_DSN, None));
        assert_eq!(b.soft_bounce_limit, DEFAULT_SOFT_BOUNCE_LIMIT);
        assert_eq!(
            b.soft_bounce_window,
            Duration::from_secs(DEFAULT_SOFT_BOUNCE_WINDOW_SECS)
        );
        assert_eq!(
            b.intake_interval,
            Duration::from_millis(DEFAULT_INTAKE_INTERVAL_MS)
        );
        assert_eq!(b.intake_settle(true), Duration::from_secs(30));
        assert_eq!(b.intake_settle(false), Duration::ZERO);
        let (default_limits, others) = domains_section(HashMap::new()).unwrap();
        assert_eq!(
            default_limits.max_connections,
            DEFAULT_DOMAIN_MAX_CONNECTIONS
        );
        assert!(others.is_empty());
        assert_eq!(
            store_section(None, None).unwrap().to_string(),
            DEFAULT_STORE_URL
        );
        assert_eq!(redis_section(None, None).unwrap(), None);
    }

    #[test]
    fn the_command_line_wins_over_the_file_section() {
        let args = RunArgs {
            node_id: Some("cli".into()),
            threads: Some(2),
            redis: Some("redis://127.0.0.1:6379".into()),
            ..RunArgs::default()
        };
        let raw = FileRelay {
            node_id: Some("file".into()),
            threads: Some(9),
            ..FileRelay::default()
        };
        let relay = relay_section(raw, &args, &machine()).unwrap();
        assert_eq!((relay.node_id.as_str(), relay.threads), ("cli", 2));
        let file = FileRedis {
            url: Some("bogus".into()),
        };
        assert_eq!(
            redis_section(args.redis.as_deref(), Some(file))
                .unwrap()
                .as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        let store = store_section(
            Some("sqlite:/tmp/x.sqlite"),
            Some(FileStore {
                url: Some("sqlite:/tmp/y.sqlite".into()),
            }),
        )
        .unwrap();
        assert_eq!(store.to_string(), "sqlite:/tmp/x.sqlite");
    }

    #[test]
    fn the_key_file_is_read_after_validation_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verp.key");
        std::fs::write(&path, "0123456789abcdef-from-file\n").unwrap();
        let toml = |path: &Path| {
            format!(
                "[bounces]\ndomain = \"b.test\"\nkey_file = {:?}\n",
                path.display().to_string()
            )
        };
        let c = parse(&toml(&path), &RunArgs::default()).unwrap();
        let verp = c.bounces.verp.unwrap();
        let inline = Verp::new(
            "b.test",
            DEFAULT_BOUNCE_PREFIX,
            DEFAULT_UNSUBSCRIBE_PREFIX,
            b"0123456789abcdef-from-file",
        );
        assert_eq!(
            verp.address(crate::verp::Kind::Bounce, 7),
            inline.address(crate::verp::Kind::Bounce, 7),
            "the trailing newline is not part of the key"
        );
        assert!(c.bounces.list_unsubscribe);

        let err = |t: &str| parse(t, &RunArgs::default()).unwrap_err().to_string();
        let missing = dir.path().join("missing.key");
        assert!(err(&toml(&missing)).starts_with("bounces.key_file: "));
        std::fs::write(&path, "short\n").unwrap();
        assert!(err(&toml(&path)).starts_with("bounces.key: must be at least 16 bytes"));
        // Validation comes first: a bad section is reported without opening the file.
        let section = bounces_section(FileBounces {
            key_file: Some(missing.clone()),
            ..FileBounces::default()
        });
        assert!(
            section
                .unwrap_err()
                .to_string()
                .starts_with("bounces.domain: required with bounces.key")
        );
        let both = format!("{}key = \"0123456789abcdef\"\n", toml(&missing));
        assert_eq!(err(&both), "bounces.key: give key or key_file, not both");
    }

    #[test]
    fn bounce_prefixes_are_checked_and_must_differ() {
        let err = |t: &str| parse(t, &RunArgs::default()).unwrap_err().to_string();
        assert!(err("[bounces]\nbounce_prefix = \"a+b\"").starts_with("bounces.bounce_prefix:"));
        assert!(
            err("[bounces]\nunsubscribe_prefix = \"\"").starts_with("bounces.unsubscribe_prefix:")
        );
        assert!(
            err("[bounces]\nbounce_prefix = \"x\"\nunsubscribe_prefix = \"X\"")
                .starts_with("bounces.unsubscribe_prefix: must differ")
        );
    }
}
