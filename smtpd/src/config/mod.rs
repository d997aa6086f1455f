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

use std::path::Path;

pub use ops::ConfigError;
use ops::{invalid, parse_toml, read_toml};

use crate::protocol::SessionConfig;
use crate::store::cache::CacheConfig;
use crate::store::retention::RetentionConfig;

mod cli;
mod defaults;
mod http;
mod metrics;
mod raw;
pub mod reload;
mod sections;

pub use cli::Cli;
pub use defaults::*;
pub use http::{Http, HttpAccess, RawHttp};
pub use metrics::{DEFAULT_METRICS_LISTEN, MetricsConfig, RawMetrics};
pub use raw::*;
pub use sections::{Limits, Log, Proxy, Server, Store, Timeouts, Tls};

/// A complete, validated configuration, by section (each as its file section
/// says, after the flags that override it).
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub store: Store,
    pub tls: Tls,
    pub proxy: Proxy,
    /// `[redis]`: the cache, when configured.
    pub cache: Option<CacheConfig>,
    pub retention: RetentionConfig,
    pub log: Log,
    /// `[http]`: the mailbox API, when `http.listen` (or `--http`) is set.
    pub http: Option<Http>,
    /// `[metrics]`: the telemetry listener.
    pub metrics: MetricsConfig,
}

impl Config {
    /// The settings every SMTP session of this server shares.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            hostname: self.server.hostname.clone(),
            max_message_bytes: self.limits.max_message_bytes,
            max_recipients: self.limits.max_recipients,
            max_data_line_bytes: self.limits.max_data_line_bytes,
            domains: self.server.domains.clone(),
            starttls: self.tls.loaded.is_some(),
            require_tls: self.tls.require,
            max_errors: self.limits.max_errors,
            max_junk_commands: self.limits.max_junk_commands,
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
    /// named, not read: `tls.loaded` is None until [`Config::load_tls`]).
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
            http,
            metrics,
        } = file;
        Ok(Config {
            server: sections::server(server, cli)?,
            limits: sections::limits(limits)?,
            timeouts: sections::timeouts(timeouts)?,
            store: sections::store(store, cli)?,
            tls: sections::tls(tls)?,
            proxy: sections::proxy(proxy)?,
            cache: sections::redis(redis, cli)?,
            retention: sections::retention(retention)?,
            log: sections::log(log, cli)?,
            http: http::http(http, cli)?,
            metrics: metrics::metrics(metrics)?,
        })
    }

    /// Reads the certificate and key named by `tls.cert` and `tls.key`: a file that
    /// cannot be read or used is a configuration error naming the field.
    pub fn load_tls(mut self) -> Result<Config, ConfigError> {
        if let Some((cert, key)) = &self.tls.files {
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
            self.tls.loaded = Some(loaded);
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
    use std::path::Path;

    use super::*;
    use crate::store::{StoreUrl, Synchronous};

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
        assert_eq!(c.server.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert!(
            matches!(c.store.url, StoreUrl::Sqlite(ref p) if p == Path::new("./data/smtpd.sqlite"))
        );
        assert!(c.server.domains.accepts("anything.example"));
        assert_eq!(c.limits.max_recipients, 100);
        assert_eq!(c.store.synchronous, Synchronous::Full);
        assert!(c.server.threads >= 1);
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
        assert_eq!(c.server.listen, vec!["127.0.0.2:2600".parse().unwrap()]);
        assert_eq!(c.server.hostname, "mx.example.net");
        assert_eq!(c.server.max_clients, 7);
        assert!(c.server.domains.accepts("example.com"));
        assert!(!c.server.domains.accepts("example.org"));
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
            ("[store]\nmysql_committers = 0\n", "store.mysql_committers"),
            ("[store]\nmysql_committers = 9\n", "store.mysql_committers"),
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
        assert!(config.tls.loaded.is_none() && config.tls.files.is_some());
        let e = config.load_tls().unwrap_err().to_string();
        assert!(e.starts_with("tls.cert: "), "{e}");
    }
}
