//! Configuration: the TOML file and the command line, validated into one [`Config`].
//!
//! Owns: every setting's name, default and bounds. Two layers, as KumoMTA does: a
//! raw [`FileConfig`] where every field is optional and unknown fields are refused,
//! then [`Config`], complete and validated, with no options left. Command-line
//! flags override the file.
//!
//! - `cli`: the command line ([`Cli`]).
//! - `raw`: the file's sections as written ([`FileConfig`]).
//! - `defaults`: every default, named, with its reason.
//! - `sections`: one pure validation step per section.
//!
//! Loading is: read the file, validate every section (no file or socket is
//! opened), then read the TLS certificate and key ([`Config::load_tls`]).
//! Must not: open sockets, or files other than the config file and the TLS files.
//!
//! Every error names the field it is about (`limits.max_recipients: must be ...`),
//! so an operator can fix a config without reading the source.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use ops::ConfigError;
use ops::{invalid, parse_toml, read_toml};

use crate::protocol::{DomainPolicy, SessionConfig};
use crate::store::cache::CacheConfig;
use crate::store::retention::RetentionConfig;
use crate::store::{StoreUrl, Synchronous};

mod cli;
mod defaults;
mod raw;
mod sections;

pub use cli::Cli;
pub use defaults::*;
pub use raw::*;

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

    /// Merges file and flags (flags win), validates every section, then reads the
    /// TLS files the configuration names.
    pub fn build(file: FileConfig, cli: &Cli) -> Result<Config, ConfigError> {
        Config::validate(file, cli)?.load_tls()
    }

    /// Merges file and flags and validates every section; pure (the TLS files are
    /// named, not read: `tls` is None until [`Config::load_tls`]).
    pub fn validate(file: FileConfig, cli: &Cli) -> Result<Config, ConfigError> {
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
        let server = sections::server(server, cli)?;
        let limits = sections::limits(limits)?;
        let timeouts = sections::timeouts(timeouts)?;
        let store = sections::store(store, cli)?;
        let tls = sections::tls(tls)?;
        let proxy = sections::proxy(proxy)?;
        let cache = sections::redis(redis, cli)?;
        let retention = sections::retention(retention)?;
        let log = sections::log(log, cli);
        Ok(Config {
            hostname: server.hostname,
            listen: server.listen,
            domains: server.domains,
            accept_domains: server.accept_domains,
            threads: server.threads,
            max_clients: server.max_clients,
            listen_backlog: server.listen_backlog,
            max_message_bytes: limits.max_message_bytes,
            max_recipients: limits.max_recipients,
            max_data_line_bytes: limits.max_data_line_bytes,
            max_errors: limits.max_errors,
            max_junk_commands: limits.max_junk_commands,
            client_limits: limits.client_limits,
            greet_delay: limits.greet_delay,
            max_inflight_bytes: limits.max_inflight_bytes,
            spill_threshold_bytes: limits.spill_threshold_bytes,
            command_timeout: timeouts.command,
            data_timeout: timeouts.data,
            shutdown_grace: timeouts.shutdown_grace,
            store_url: store.url,
            batch_max_messages: store.batch_max_messages,
            batch_max_delay: store.batch_max_delay,
            batch_max_bytes: store.batch_max_bytes,
            queue_capacity: store.queue_capacity,
            spool_dir: store.spool_dir,
            synchronous: store.synchronous,
            migrate: store.migrate,
            tls_files: tls.files,
            tls: None,
            require_tls: tls.require,
            implicit_tls_listen: tls.implicit_listen,
            proxy_listen: proxy.listen,
            trusted_proxies: proxy.trusted,
            cache,
            retention,
            verbose: log.verbose,
            log_file: log.file,
        })
    }

    /// Reads the certificate and key named by `tls.cert` and `tls.key`: a file that
    /// cannot be read or used is a configuration error naming the field.
    pub fn load_tls(mut self) -> Result<Config, ConfigError> {
        if let Some((cert, key)) = &self.tls_files {
            let loaded = crate::tls::load(cert, key).map_err(|e| {
                invalid(
                    if matches!(e, crate::tls::TlsError::Key { .. }) {
                        "tls.key"
                    } else {
                        "tls.cert"
                    },
                    e,
                )
            })?;
            self.tls = Some(loaded);
        }
        Ok(self)
    }
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

    /// Validation opens nothing: TLS files that do not exist pass it, and reading
    /// them afterwards is what fails, naming the field.
    #[test]
    fn validation_names_the_tls_files_and_loading_reads_them() {
        let file = parse_file(
            Path::new("t.toml"),
            "[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
        )
        .unwrap();
        let config = Config::validate(file, &Cli::default()).unwrap();
        assert!(config.tls.is_none() && config.tls_files.is_some());
        let e = config.load_tls().unwrap_err().to_string();
        assert!(e.starts_with("tls.cert: "), "{e}");
    }
}
