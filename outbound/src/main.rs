//! `outbound`: the thread-per-core delivery relay, and its command-line tools.
//!
//! - `outbound [-c FILE] [--store URL] [--redis URL] [--node-id ID] [--threads N]
//!   [--transport DOMAIN=HOST:PORT ...] [--resolver HOST:PORT] [-v] [-l FILE]` runs it;
//! - `outbound enqueue --from ADDR --to ADDR [--to ADDR ...] [--pool NAME]
//!   [--expires-in SECS] [--store URL] < message.eml`;
//! - `outbound dkim generate DOMAIN --selector S [--algorithm rsa|ed25519] --out FILE`,
//!   `outbound dns-records DOMAIN`, `outbound dns-check DOMAIN [--resolver HOST:PORT]`;
//! - `outbound stats`, `outbound nodes`, `outbound suppress add|remove|list`;
//! - `outbound web [--listen ADDR:PORT]`: the HTTP API (`web`);
//! - `outbound account add NAME [--admin]`, `outbound account passwd NAME` (stdin),
//!   `outbound account domain add|ls ACCOUNT [DOMAIN]`, `outbound account limits NAME
//!   [--send-rate R|none] [--daily-quota Q|none]`, `outbound account resume|show NAME`,
//!   `outbound list import LIST_ID FILE`,
//!   `outbound campaign start|pause|resume|cancel|stats ID`.
//!
//! Modules: `address` (envelope addresses), `bounce_policy` (what a bounce calls for),
//! `complaint` (feedback-loop reports, ARF),
//! `config` (settings), `db` (one SQLite/MySQL connection), `queue` (every
//! SQL statement), `row` (rows decoded by column name), `dispatch` (claims, retries), `recorder` (writes outcomes beside the claims), `worker` (a delivery
//! thread), `client` (SMTP client), `mx` (routes), `reply`, `payload`, `retry`, `node` (process identity),
//! `template` (MIME rendering), `tls`; `tracking` (masked links, opens, unsubscribe
//! URLs); `accounts`, `lists`, `import`, `campaign` (the mass-mailing data and the
//! campaign runner), `web` (HTTP API), `console` (the web console's pages), `db_pool`;
//! `dkim` (signing, keys), `sending` (`[dkim]` and `[pools]` settings, source address
//! choice), `dns_records` (`dns-records`, `dns-check`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};

mod accounts;
mod address;
mod bounce_policy;
mod campaign;
mod cli_accounts;
mod cli_campaigns;
mod cli_lists;
mod client;
mod complaint;
mod config;
mod confirm;
mod console;
mod db;
mod db_pool;
mod dispatch;
mod dkim;
mod dns_records;
mod dsn;
mod import;
mod intake_horizon;
mod lists;
mod metrics;
mod mime;
mod mx;
mod node;
mod payload;
mod queue;
mod recorder;
mod reload;
mod retry;
mod row;
mod sending;
mod template;
mod tls;
mod tracking;
mod verp;
mod web;
mod worker;

use config::{Config, RunArgs};
use queue::Queue;

/// Longest `enqueue --expires-in`: ten years (a bound, so the time cannot overflow).
const MAX_EXPIRES_IN_SECS: i64 = 10 * 366 * 24 * 3600;

/// Largest message `outbound enqueue` takes from stdin.
const MAX_ENQUEUE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "outbound",
    version,
    about = "Outbound relay: delivers queued messages from the shared database to the recipients' mail servers"
)]
struct Cli {
    /// TOML config file; command-line flags override its values.
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Store URL: sqlite:PATH (default sqlite:./data/smtpd.sqlite) or
    /// mysql://USER:PASS@HOST:PORT/DB (add ?socket=PATH for a unix socket).
    #[arg(long = "store", value_name = "URL", global = true)]
    store: Option<String>,
    /// Verbose logging (debug level).
    #[arg(short = 'v', long = "verbose", global = true)]
    verbose: bool,
    /// Write logs to FILE instead of stderr.
    #[arg(short = 'l', long = "log-file", value_name = "FILE", global = true)]
    log_file: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Queue the message on stdin for each --to recipient.
    Enqueue {
        /// Envelope sender: an address, or "<>" (or "") for the null sender, as in
        /// sendmail's -f '<>'.
        #[arg(long = "from", value_name = "ADDR")]
        from: String,
        /// Envelope recipient (repeatable).
        #[arg(long = "to", value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// Higher is sent first.
        #[arg(long = "priority", default_value_t = 0)]
        priority: i64,
        /// Campaign or category recorded with each row.
        #[arg(long = "tag")]
        tag: Option<String>,
        /// Send from this sending pool ([pools.NAME]).
        #[arg(long = "pool", value_name = "NAME")]
        pool: Option<String>,
        /// Fail the rows (4.4.7, no DSN) if not delivered within SECS (at most
        /// ten years).
        #[arg(long = "expires-in", value_name = "SECS",
              value_parser = clap::value_parser!(u32).range(1..=MAX_EXPIRES_IN_SECS))]
        expires_in: Option<u32>,
    },
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Print, in zone-file syntax, the DNS records DOMAIN needs to send from here.
    DnsRecords {
        domain: String,
        /// Only this pool's addresses (SPF, PTR); default: every pool.
        #[arg(long = "pool", value_name = "NAME")]
        pool: Option<String>,
    },
    /// Look up the records `dns-records` prints; exit 1 if any is missing or different.
    DnsCheck {
        domain: String,
        #[arg(long = "pool", value_name = "NAME")]
        pool: Option<String>,
        /// DNS server to ask (default dns.resolver, else the system's).
        #[arg(long = "resolver", value_name = "HOST:PORT")]
        resolver: Option<String>,
    },
    /// Queue totals by state, attempts by outcome, and the delivery rate.
    Stats,
    /// Relay nodes: alive (recent heartbeat), stopped (clean stop) or dead.
    Nodes,
    /// The suppression list: addresses never sent to.
    Suppress {
        #[command(subcommand)]
        action: SuppressAction,
    },
    /// Serve the HTTP API (JSON under /api/v1).
    Web {
        /// Listen address (default web.listen, 127.0.0.1:8080; port 0 picks one).
        #[arg(long = "listen", value_name = "ADDR:PORT")]
        listen: Option<String>,
    },
    /// Accounts of the mass-mailing system.
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Mailing lists.
    List {
        #[command(subcommand)]
        action: cli_lists::ListAction,
    },
    /// Campaigns.
    Campaign {
        #[command(subcommand)]
        action: cli_campaigns::CampaignAction,
    },
}

#[derive(Debug, Subcommand)]
enum DkimAction {
    /// Write a new private key (PKCS#8 PEM, mode 0600) and print its TXT record.
    Generate {
        domain: String,
        #[arg(long = "selector", value_name = "S")]
        selector: String,
        #[arg(long = "algorithm", value_enum, default_value = "rsa")]
        algorithm: KeyAlgorithm,
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long = "out", value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyAlgorithm {
    /// RSA-2048, signing with rsa-sha256.
    Rsa,
    /// Ed25519, signing with ed25519-sha256 (RFC 8463).
    Ed25519,
}

#[derive(Debug, Subcommand)]
enum AccountAction {
    /// Create an account; prints its API token (once: only a hash is kept).
    Add {
        name: String,
        /// May manage other accounts.
        #[arg(long = "admin")]
        admin: bool,
    },
    /// Set the console password of an account (read from stdin, one line, at
    /// least 12 characters); ends its console sessions.
    Passwd { name: String },
    /// Tracking domains of an account (host names of its masked links).
    Domain {
        #[command(subcommand)]
        action: DomainAction,
    },
    /// Set an account's sending rate and daily quota; prints them.
    Limits(cli_accounts::LimitArgs),
    /// Lift an account's auto-pause and resume the campaigns it paused.
    Resume { name: String },
    /// An account's limits, today's count and pause state.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
enum DomainAction {
    /// Give DOMAIN to ACCOUNT (its name); refused when another account has it.
    Add { account: String, domain: String },
    /// The account's tracking domains.
    Ls { account: String },
}

#[derive(Debug, Subcommand)]
enum SuppressAction {
    /// Add (or update) an address.
    Add {
        address: String,
        #[arg(long = "reason", default_value = "added by hand")]
        reason: String,
    },
    /// Remove an address.
    Remove { address: String },
    /// List every address.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = reload::reopen_log_on_usr1() {
        eprintln!("outbound: cannot install the SIGUSR1 handler: {e}");
        return ExitCode::from(1);
    }
    reload::remember_source(cli.config.clone(), cli.store.clone(), cli.run.clone());
    // The config first: `[log]` says how to log (its errors go to stderr).
    let config = match Config::load(cli.config.as_deref(), cli.store.as_deref(), &cli.run) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("outbound: {e}");
            return ExitCode::from(2);
        }
    };
    match init_logging(cli.verbose, cli.log_file.as_deref(), &config.log) {
        Ok(handle) => reload::remember_log(handle, cli.verbose),
        Err(e) => {
            eprintln!("outbound: {e:#}");
            return ExitCode::from(2);
        }
    }
    let command = match check_command(cli.command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outbound: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outbound: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outbound: {e:#}");
            // A node id another process runs under is a configuration error.
            // So is an unknown campaign id (`outbound campaign ... ID`).
            if e.downcast_ref::<node::NodeError>().is_some()
                || e.downcast_ref::<cli_campaigns::CampaignNotFound>()
                    .is_some()
                || e.downcast_ref::<sending::BindError>().is_some()
                || e.downcast_ref::<worker::RedisMisconfigured>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Command-line checks that need no store: `enqueue`'s sender becomes its stored
/// form (`""` for the null sender, brackets removed) and every recipient must be a
/// mailbox, so that nothing is queued that can only fail.
fn check_command(command: Option<Command>) -> Result<Option<Command>, String> {
    let Some(Command::Enqueue {
        from,
        to,
        priority,
        tag,
        pool,
        expires_in,
    }) = command
    else {
        return Ok(command);
    };
    let from = address::reverse_path(&from)
        .map_err(|e| format!("--from: {e}"))?
        .as_str()
        .to_owned();
    if let Some(bad) = to.iter().find(|t| !address::is_mailbox(t)) {
        return Err(format!(
            "--to: {bad:?} is not an email address (local@domain)"
        ));
    }
    Ok(Some(Command::Enqueue {
        from,
        to,
        priority,
        tag,
        pool,
        expires_in,
    }))
}

async fn run(command: Option<Command>, config: Arc<Config>) -> anyhow::Result<()> {
    if let Some(Command::Web { listen }) = &command {
        let listen = listen
            .as_deref()
            .map(|l| config::parse_listen("--listen", l))
            .transpose()?;
        return web::serve(config, listen).await;
    }
    // Responsible-sending tools: no store needed.
    match &command {
        Some(Command::Dkim {
            action:
                DkimAction::Generate {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        }) => {
            let algorithm = match algorithm {
                KeyAlgorithm::Rsa => dkim::Algorithm::Rsa,
                KeyAlgorithm::Ed25519 => dkim::Algorithm::Ed25519,
            };
            println!(
                "{}",
                dkim::generate_to_file(domain, selector, algorithm, out)?
            );
            return Ok(());
        }
        Some(Command::DnsRecords { domain, pool }) => {
            let records = dns_records::records(&config, domain, pool.as_deref())?;
            print!("{}", dns_records::zone_text(&records));
            return Ok(());
        }
        Some(Command::DnsCheck {
            domain,
            pool,
            resolver,
        }) => {
            let ns = match resolver {
                Some(r) => Some(config::parse_listen("--resolver", r)?),
                None => config.resolver,
            };
            let records = dns_records::records(&config, domain, pool.as_deref())?;
            let problems = dns_records::check(&records, ns).await?;
            if problems.is_empty() {
                println!("{domain}: all {} records as they should be", records.len());
                return Ok(());
            }
            for p in &problems {
                println!("{p}");
            }
            return Err(anyhow::Error::new(DnsCheckFailed(problems.len())));
        }
        _ => {}
    }
    let db = db::Db::open(&config.store, config.migrate)
        .await
        .with_context(|| format!("store {}", config.store))?;
    let mut queue = Queue::new(db);
    match command {
        None => {
            if let Some(url) = &config.redis {
                worker::check_redis(url).await?;
            }
            // A pool address this host cannot send from is a config error, now.
            if let Err(e) = config.pools.check_bindable() {
                tracing::error!(error = %e, "sending pool address cannot be bound");
                return Err(e.into());
            }
            let tls = if config.starttls {
                Some(Arc::new(
                    tls::opportunistic_connector().context("TLS setup")?,
                ))
            } else {
                None
            };
            let mut registry = prometheus_client::registry::Registry::default();
            metrics::get().register(&mut registry);
            metrics::serve(
                "outbound",
                config.metrics.relay,
                registry,
                Arc::new(|| metrics::get().relay_ready()),
            )?;
            return dispatch::run(config, queue, tls).await;
        }
        Some(Command::Enqueue {
            from,
            to,
            priority,
            tag,
            pool,
            expires_in,
        }) => {
            let mut body = Vec::new();
            std::io::stdin()
                .take(MAX_ENQUEUE_BYTES + 1)
                .read_to_end(&mut body)
                .context("reading the message from stdin")?;
            if body.len() as u64 > MAX_ENQUEUE_BYTES {
                anyhow::bail!("the message is larger than {MAX_ENQUEUE_BYTES} bytes");
            }
            if body.is_empty() {
                anyhow::bail!("no message on stdin");
            }
            let ids = queue
                .enqueue(
                    &from,
                    &to,
                    &body,
                    priority,
                    tag.as_deref(),
                    &queue::EnqueueSending {
                        pool,
                        // Bounded by clap to ten years: the sum cannot overflow.
                        expires_at: expires_in.and_then(|s| {
                            Utc::now().checked_add_signed(chrono::Duration::seconds(i64::from(s)))
                        }),
                    },
                )
                .await?;
            for (id, rcpt) in ids.iter().zip(&to) {
                println!("{id} {rcpt}");
            }
        }
        Some(Command::Stats) => {
            let now = Utc::now();
            let s = queue.stats(now).await?;
            println!("queue:");
            for (state, n) in &s.by_state {
                println!("  {state:<11} {n}");
            }
            println!("attempts (last minute / all time):");
            for outcome in ["delivered", "deferred", "failed", "suppressed"] {
                println!(
                    "  {outcome:<11} {} / {}",
                    s.log_last_minute.get(outcome).copied().unwrap_or(0),
                    s.log_total.get(outcome).copied().unwrap_or(0)
                );
            }
            let delivered = s.log_total.get("delivered").copied().unwrap_or(0);
            let minute = s.log_last_minute.get("delivered").copied().unwrap_or(0);
            println!("delivery rate, last minute: {:.1}/s", minute as f64 / 60.0);
            if let (Some(first), Some(last)) = (s.first_delivery, s.last_delivery) {
                let secs = (last - first).num_milliseconds() as f64 / 1000.0;
                if secs > 0.0 {
                    println!(
                        "delivery rate, first to last delivery: {:.1}/s ({delivered} in {secs:.1}s)",
                        delivered as f64 / secs
                    );
                }
            }
        }
        Some(Command::Nodes) => {
            let now = Utc::now();
            println!(
                "{:<24} {:<7} {:>8} {:>7}  {:<23}  heartbeat",
                "node", "state", "pid", "threads", "started"
            );
            for n in queue.nodes().await? {
                let age = n.heartbeat_at.map(|h| now - h);
                // Stopped: a clean stop said so. Alive: a heartbeat within three of
                // the node's own intervals. Dead otherwise (killed, crashed).
                let alive = age.is_some_and(|a| {
                    a.num_milliseconds()
                        <= n.heartbeat_secs
                            .saturating_mul(node::MISSED_HEARTBEATS)
                            .saturating_mul(1000)
                });
                let state = if n.stopped_at.is_some() {
                    "stopped"
                } else if alive {
                    "alive"
                } else {
                    "dead"
                };
                println!(
                    "{:<24} {:<7} {:>8} {:>7}  {:<23}  {}",
                    n.node_id,
                    state,
                    n.pid,
                    n.threads,
                    n.started_at,
                    age.map_or("never".to_owned(), |a| format!(
                        "{:.1}s ago",
                        a.num_milliseconds() as f64 / 1000.0
                    ))
                );
            }
        }
        // Served above, before any single connection is opened.
        Some(Command::Web { .. } | Command::Dkim { .. })
        | Some(Command::DnsRecords { .. } | Command::DnsCheck { .. }) => {}
        Some(Command::Account {
            action: AccountAction::Add { name, admin },
        }) => {
            let (account, token) = accounts::create(queue.db(), &name, admin).await?;
            println!(
                "account {} ({}){}",
                account.name,
                account.id,
                if admin { ", admin" } else { "" }
            );
            println!("token {token}");
        }
        Some(Command::Account {
            action: AccountAction::Passwd { name },
        }) => {
            let mut line = String::new();
            std::io::stdin()
                .take(console::session::MAX_PASSWORD_BYTES as u64 + 2)
                .read_to_string(&mut line)
                .context("reading the password from stdin")?;
            let password = line.strip_suffix('\n').unwrap_or(&line);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if !console::session::set_password(queue.db(), &name, password).await? {
                anyhow::bail!("no account `{name}`");
            }
            println!("password set for {name}");
        }
        Some(Command::Account {
            action: AccountAction::Domain { action },
        }) => match action {
            DomainAction::Add { account, domain } => {
                let a = accounts::by_name(queue.db(), &account)
                    .await?
                    .with_context(|| format!("account {account} not found"))?;
                let d = tracking::store::add_domain(queue.db(), a.id, &domain).await?;
                println!("tracking domain {d} of account {} ({})", a.name, a.id);
            }
            DomainAction::Ls { account } => {
                let a = accounts::by_name(queue.db(), &account)
                    .await?
                    .with_context(|| format!("account {account} not found"))?;
                for d in tracking::store::domains(queue.db(), a.id).await? {
                    println!("{d}");
                }
            }
        },
        Some(Command::Account {
            action: AccountAction::Limits(args),
        }) => cli_accounts::limits(queue.db(), args).await?,
        Some(Command::Account {
            action: AccountAction::Resume { name },
        }) => cli_accounts::resume(queue.db(), &name).await?,
        Some(Command::Account {
            action: AccountAction::Show { name },
        }) => cli_accounts::show(queue.db(), &name).await?,
        Some(Command::List { action }) => cli_lists::run(queue.db(), action).await?,
        Some(Command::Campaign { action }) => cli_campaigns::run(queue.db(), action).await?,
        Some(Command::Suppress { action }) => match action {
            SuppressAction::Add { address, reason } => {
                if !address.contains('@') || address.bytes().any(|b| !b.is_ascii_graphic()) {
                    anyhow::bail!("`{address}` is not an email address");
                }
                queue.suppress_add(&address, &reason, "manual").await?;
                println!("suppressed {}", address.to_ascii_lowercase());
            }
            SuppressAction::Remove { address } => {
                if !queue.suppress_remove(&address).await? {
                    anyhow::bail!("{address} is not on the suppression list");
                }
                println!("removed {}", address.to_ascii_lowercase());
            }
            SuppressAction::List => {
                for e in queue.suppress_list().await? {
                    println!(
                        "{}\t{}\t{}\t{}",
                        e.address, e.source, e.created_at, e.reason
                    );
                }
            }
        },
    }
    queue.close().await;
    Ok(())
}

/// `dns-check` found problems (exit 1; they are printed on stdout).
#[derive(Debug, thiserror::Error)]
#[error("{0} DNS record(s) missing or different")]
struct DnsCheckFailed(usize);

fn init_logging(
    verbose: bool,
    file: Option<&std::path::Path>,
    log: &config::Log,
) -> anyhow::Result<ops::logging::LogHandle> {
    Ok(ops::logging::init(&ops::logging::Logging {
        env_var: "OUTBOUND_LOG",
        default_filter: reload::log_filter(verbose, &log.level),
        file: file.or(log.file.as_deref()),
        format: log.format,
    })?)
}
