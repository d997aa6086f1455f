//! The command line. Flags override the file; each names the file field it
//! replaces in its help.

use std::path::PathBuf;

use super::defaults::DEFAULT_LOG_FILE;

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
    /// Serve the mailbox API, event stream and inbox page on ADDR:PORT; replaces
    /// http.listen (needs http.token or http.public in the file).
    #[arg(long = "http", value_name = "ADDR:PORT")]
    pub http: Option<String>,
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
