//! The raw layer: what the TOML file may say. Every field is optional and unknown
//! fields are refused (`deny_unknown_fields`), so a typo is an error naming the key,
//! never a silently ignored setting.

use std::path::PathBuf;

use serde::Deserialize;

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
    #[serde(default)]
    pub http: super::http::RawHttp,
    #[serde(default)]
    pub metrics: super::metrics::RawMetrics,
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
    pub mysql_committers: Option<usize>,
    pub spool_dir: Option<PathBuf>,
    pub synchronous: Option<String>,
    pub migrate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub verbose: Option<bool>,
    pub level: Option<String>,
    pub format: Option<String>,
    pub file: Option<String>,
}
