//! Configuration of the relay: the TOML file and the command line, validated into
//! one [`Config`].
//!
//! Owns: every setting's name, default and bounds. As in `smtpd`, the file layer
//! has every field optional and refuses unknown ones; command-line flags override
//! it; every error names its field.
//! Must not: open sockets or databases.

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

/// The embedded store shared with `smtpd` when nothing else is said.
pub const DEFAULT_STORE_URL: &str = "sqlite:./data/smtpd.sqlite";

/// Options of the relay itself (`outbound` with no subcommand).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// Redis for per-domain rate limits shared by several nodes: redis://HOST:PORT[/DB].
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
    /// Create or update the MySQL schema at start (schema/mysql/*.sql).
    #[arg(long = "migrate")]
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
    /// Per-domain limits; the key `default` sets the defaults.
    #[serde(default)]
    domains: HashMap<String, FileDomain>,
    /// DOMAIN = "HOST:PORT".
    #[serde(default)]
    transport: HashMap<String, String>,
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
            max_connections: 10,
            messages_per_second: 0.0,
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
}

impl Config {
    pub fn limits_for(&self, domain: &str) -> DomainLimits {
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

    fn from_file(
        file: FileConfig,
        store: Option<&str>,
        args: &RunArgs,
    ) -> Result<Self, ConfigError> {
        let store_text = store
            .map(str::to_owned)
            .or(file.store.and_then(|s| s.url))
            .unwrap_or_else(|| DEFAULT_STORE_URL.to_owned());
        let store: StoreUrl = store_text.parse().map_err(|e| invalid("store.url", e))?;
        let redis = args.redis.clone().or(file.redis.and_then(|r| r.url));
        if let Some(url) = &redis
            && !(url.starts_with("redis://") || url.starts_with("unix://"))
        {
            return Err(invalid(
                "redis.url",
                format!("`{url}` is not redis://HOST:PORT[/DB]"),
            ));
        }
        let relay = file.relay.unwrap_or_default();
        let delivery = file.delivery.unwrap_or_default();
        let retry = file.retry.unwrap_or_default();
        let dns = file.dns.unwrap_or_default();
        let hostname = system_hostname();
        let node_id = args
            .node_id
            .clone()
            .or(relay.node_id)
            .unwrap_or_else(|| hostname.clone());
        if node_id.is_empty() || node_id.len() > 64 || node_id.chars().any(char::is_control) {
            return Err(invalid(
                "relay.node_id",
                "must be 1 to 64 printable characters",
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = args.threads.or(relay.threads).unwrap_or(cores);
        let threads = bounded("relay.threads", threads, 1, 1024)?;
        let secs = |field: &'static str, v: Option<u64>, default: u64, min: u64, max: u64| {
            bounded(field, v.unwrap_or(default), min, max).map(Duration::from_secs)
        };
        let lease = secs("relay.lease_secs", relay.lease_secs, 60, 1, 86_400)?;
        let heartbeat = secs("relay.heartbeat_secs", relay.heartbeat_secs, 5, 1, 3_600)?;
        if heartbeat >= lease {
            return Err(invalid(
                "relay.heartbeat_secs",
                "must be shorter than relay.lease_secs (each heartbeat renews the leases)",
            ));
        }
        let resolver = match args.resolver.clone().or(dns.resolver) {
            Some(text) => Some(parse_addr(&text).map_err(|e| invalid("dns.resolver", e))?),
            None => None,
        };
        let mut transports = HashMap::new();
        for (domain, target) in file.transport {
            let addr =
                parse_addr(&target).map_err(|e| invalid(format!("transport.{domain}"), e))?;
            transports.insert(domain.to_ascii_lowercase(), addr);
        }
        for spec in &args.transport {
            let (domain, target) = spec.split_once('=').ok_or_else(|| {
                invalid("--transport", format!("`{spec}` is not DOMAIN=HOST:PORT"))
            })?;
            let addr = parse_addr(target).map_err(|e| invalid("--transport", e))?;
            transports.insert(domain.trim().to_ascii_lowercase(), addr);
        }
        let mut domains = file.domains;
        let default_limits = domain_limits_of(
            "domains.default",
            domains.remove("default").unwrap_or_default(),
            DomainLimits::default(),
        )?;
        let mut domain_limits = HashMap::new();
        for (domain, limits) in domains {
            let field = format!("domains.\"{domain}\"");
            domain_limits.insert(
                domain.to_ascii_lowercase(),
                domain_limits_of(&field, limits, default_limits)?,
            );
        }
        let multiplier = retry.multiplier.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&multiplier) {
            return Err(invalid("retry.multiplier", "must be between 1 and 100"));
        }
        let bounces = bounces_config(file.bounces.unwrap_or_default())?;
        let helo_name = delivery.helo_name.unwrap_or_else(|| hostname.clone());
        // The same rule as smtpd's server.hostname: it goes into EHLO and headers.
        check_hostname("delivery.helo_name", &helo_name)?;
        Ok(Self {
            store,
            migrate: args.migrate,
            redis,
            node_id,
            threads,
            batch_size: bounded(
                "relay.batch_size",
                relay.batch_size.unwrap_or(256),
                1,
                10_000,
            )?,
            max_in_flight: bounded(
                "relay.max_in_flight",
                relay.max_in_flight.unwrap_or(5_000),
                1,
                1_000_000,
            )?,
            poll_interval: Duration::from_millis(bounded(
                "relay.poll_interval_ms",
                relay.poll_interval_ms.unwrap_or(500),
                10,
                60_000,
            )?),
            lease,
            heartbeat,
            shutdown_grace: secs(
                "relay.shutdown_grace_secs",
                relay.shutdown_grace_secs,
                30,
                0,
                3_600,
            )?,
            message_id_domain: delivery
                .message_id_domain
                .unwrap_or_else(|| helo_name.clone()),
            helo_name,
            port: delivery.port.unwrap_or(25),
            max_connections: bounded(
                "delivery.max_connections",
                delivery.max_connections.unwrap_or(200),
                1,
                100_000,
            )?,
            connect_timeout: secs(
                "delivery.connect_timeout_secs",
                delivery.connect_timeout_secs,
                30,
                1,
                600,
            )?,
            command_timeout: secs(
                "delivery.command_timeout_secs",
                delivery.command_timeout_secs,
                300,
                1,
                3_600,
            )?,
            data_timeout: secs(
                "delivery.data_timeout_secs",
                delivery.data_timeout_secs,
                600,
                1,
                3_600,
            )?,
            idle_timeout: secs(
                "delivery.idle_timeout_secs",
                delivery.idle_timeout_secs,
                5,
                0,
                300,
            )?,
            max_messages_per_connection: bounded(
                "delivery.max_messages_per_connection",
                delivery.max_messages_per_connection.unwrap_or(100),
                1,
                1_000_000,
            )?,
            max_recipients_per_transaction: bounded(
                "delivery.max_recipients_per_transaction",
                delivery.max_recipients_per_transaction.unwrap_or(50),
                1,
                1_000,
            )?,
            starttls: delivery.starttls.unwrap_or(true),
            retry: RetryPolicy {
                first: secs("retry.first_secs", retry.first_secs, 300, 1, 86_400)?,
                multiplier,
                max_interval: secs(
                    "retry.max_interval_secs",
                    retry.max_interval_secs,
                    14_400,
                    1,
                    604_800,
                )?,
                give_up_after: secs(
                    "retry.give_up_secs",
                    retry.give_up_secs,
                    432_000,
                    1,
                    2_592_000,
                )?,
            },
            resolver,
            dns_timeout: Duration::from_millis(bounded(
                "dns.timeout_ms",
                dns.timeout_ms.unwrap_or(5_000),
                10,
                60_000,
            )?),
            default_limits,
            domain_limits,
            transports,
            bounces,
        })
    }
}

fn bounces_config(b: FileBounces) -> Result<Bounces, ConfigError> {
    let key = match (&b.key, &b.key_file) {
        (Some(_), Some(_)) => return Err(invalid("bounces.key", "give key or key_file, not both")),
        (Some(k), None) => Some(k.as_bytes().to_vec()),
        (None, Some(path)) => Some(
            std::fs::read(path)
                .map_err(|e| invalid("bounces.key_file", format!("{}: {e}", path.display())))?
                .trim_ascii()
                .to_vec(),
        ),
        (None, None) => None,
    };
    let prefix = |field: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| default.to_owned());
        if v.is_empty()
            || v.len() > 32
            || !v
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        {
            return Err(invalid(
                field.to_owned(),
                "must be 1 to 32 letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(v)
    };
    let bounce_prefix = prefix("bounces.bounce_prefix", b.bounce_prefix, "bounces")?;
    let unsubscribe_prefix = prefix(
        "bounces.unsubscribe_prefix",
        b.unsubscribe_prefix,
        "unsubscribe",
    )?;
    if bounce_prefix.eq_ignore_ascii_case(&unsubscribe_prefix) {
        return Err(invalid(
            "bounces.unsubscribe_prefix",
            "must differ from bounces.bounce_prefix",
        ));
    }
    let verp = match (b.domain, key) {
        (Some(domain), Some(key)) => {
            if key.len() < 16 {
                return Err(invalid(
                    "bounces.key",
                    "must be at least 16 bytes (it makes VERP tags unforgeable)",
                ));
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
            Some(Verp::new(
                &domain,
                &bounce_prefix,
                &unsubscribe_prefix,
                &key,
            ))
        }
        (Some(_), None) => return Err(invalid("bounces.key", "required with bounces.domain")),
        (None, Some(_)) => return Err(invalid("bounces.domain", "required with bounces.key")),
        (None, None) => None,
    };
    if let Some(url) = &b.unsubscribe_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(invalid("bounces.unsubscribe_url", "must be an http(s) URL"));
    }
    let delay = b.delay_warning_secs.unwrap_or(0);
    Ok(Bounces {
        list_unsubscribe: b.list_unsubscribe.unwrap_or(true) && verp.is_some(),
        verp,
        unsubscribe_url: b.unsubscribe_url,
        dsn: b.dsn.unwrap_or(true),
        delay_warning: (delay > 0).then(|| Duration::from_secs(delay)),
        soft_bounce_limit: bounded(
            "bounces.soft_bounce_limit",
            b.soft_bounce_limit.unwrap_or(3),
            1,
            1000,
        )?,
        soft_bounce_window: Duration::from_secs(bounded(
            "bounces.soft_bounce_window_secs",
            b.soft_bounce_window_secs.unwrap_or(7 * 86_400),
            60,
            365 * 86_400,
        )?),
        intake_interval: Duration::from_millis(bounded(
            "bounces.intake_interval_ms",
            b.intake_interval_ms.unwrap_or(1000),
            10,
            3_600_000,
        )?),
    })
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

/// `HOST:PORT` (a name is resolved once, now).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("`{text}` is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, args: &RunArgs) -> Result<Config, ConfigError> {
        Config::from_file(toml::from_str(toml_text).unwrap(), None, args)
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
    }
}
