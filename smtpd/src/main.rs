//! `smtpd`: parse the command line and config, open the store, start the reactors
//! and the telemetry listener, tell systemd it is ready, wait for a signal (SIGHUP
//! reloads, SIGUSR1 reopens the log file), drain, exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tracing::{error, info, warn};

use smtpd::config::{Cli, Config};
use smtpd::metrics::Metrics;
use smtpd::reactor::{self, ReactorConfig, Reloaded, Shared};
use smtpd::store::{StageConfig, StorageStage};

/// Exit code for a configuration the server refuses to start with.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtpd: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = match init_logging(&config) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("smtpd: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(cli, config, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpd: {e:#}");
            // A redis.url that cannot work is a configuration error (no restart).
            if e.is::<smtpd::store::cache::Misconfigured>() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn log_filter(config: &Config) -> &str {
    config.log.filter()
}

fn init_logging(config: &Config) -> anyhow::Result<ops::logging::LogHandle> {
    ops::logging::init(&ops::logging::Logging {
        env_var: "SMTPD_LOG",
        default_filter: log_filter(config),
        file: config.log.file.as_deref(),
        format: config.log.format,
    })
    .context("log.file")
}

fn run(cli: Cli, config: Config, log: ops::logging::LogHandle) -> anyhow::Result<()> {
    // First of all: a SIGHUP or SIGUSR1 that arrives during the start (whose
    // default action would end the process) waits here until it is handled.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    let metrics = Arc::new(Metrics::new());
    let watchdog = ops::notify::Watchdog::default();
    // `--http`: committed messages are announced to its event streams.
    let arrivals = config
        .http
        .as_ref()
        .map(|_| smtpd::http::events::Arrivals::new());
    if let Some(cache) = &config.cache {
        cache.check_at_start()?;
    }
    let stage = StorageStage::start_with_arrivals(
        &config.store.url,
        StageConfig {
            batch_max_messages: config.store.batch_max_messages,
            batch_max_delay: config.store.batch_max_delay,
            batch_max_bytes: config.store.batch_max_bytes,
            queue_capacity: config.store.queue_capacity,
            mysql_committers: config.store.mysql_committers,
            hostname: config.server.hostname.clone(),
            synchronous: config.store.synchronous,
            migrate: config.store.migrate,
            cache: config.cache.clone(),
            retention: config.retention.clone(),
            metrics: Some(Arc::clone(&metrics)),
            watchdog: Some(watchdog.clone()),
        },
        arrivals.clone(),
    )
    .context("cannot open the store")?;
    if let (Some(http), Some(arrivals)) = (&config.http, arrivals) {
        let bound = smtpd::http::start(smtpd::http::HttpSetup {
            config: http.clone(),
            store: config.store.url.clone(),
            cache: config.cache.clone(),
            domains: config.server.domains.clone(),
            arrivals,
        })
        .context("cannot start the HTTP mailbox API (http.listen)")?;
        // Tests and scripts look for this exact phrase to learn the bound port.
        eprintln!("smtpd: http listening on {bound}");
    }
    // Before any reactor runs: leftovers of a crashed run (never acknowledged) are
    // removed before anything new is spooled.
    let spool =
        smtpd::spool::Spool::open(&config.store.spool_dir).context("cannot open the spool")?;

    // Plain (STARTTLS) listeners first, then implicit-TLS ones: the reactor tells
    // them apart by index.
    // Socket activation (smtpd.socket): the sockets systemd passed replace
    // server.listen; the implicit-TLS and PROXY listeners are bound here as usual.
    let inherited = reactor::listener::inherited(config.server.threads)?;
    let plain: &[std::net::SocketAddr] = if inherited.is_some() {
        &[]
    } else {
        &config.server.listen
    };
    let all_listen: Vec<_> = plain
        .iter()
        .chain(&config.tls.implicit_listen)
        .chain(&config.proxy.listen)
        .copied()
        .collect();
    raise_fd_limit(config.server.max_clients);
    let (mut listeners, mut bound) = reactor::listener::bind_all(
        &all_listen,
        config.server.threads,
        config.server.listen_backlog,
    )?;
    let mut implicit_tls_from = plain.len();
    if let Some((activated, addrs)) = inherited {
        implicit_tls_from = addrs.len();
        for (mine, theirs) in listeners.iter_mut().zip(activated) {
            mine.splice(0..0, theirs);
        }
        bound.splice(0..0, addrs);
    }
    let proxy_from = implicit_tls_from + config.tls.implicit_listen.len();
    for (i, addr) in bound.iter().enumerate() {
        // Tests and scripts look for this exact phrase to learn the bound port.
        if i < implicit_tls_from {
            eprintln!("smtpd: listening on {addr}");
            info!(%addr, "listening");
        } else if i < proxy_from {
            eprintln!("smtpd: listening on {addr} (implicit TLS)");
            info!(%addr, "listening, implicit TLS");
        } else {
            eprintln!("smtpd: listening on {addr} (PROXY protocol)");
            info!(%addr, "listening, PROXY protocol");
        }
    }
    info!(
        hostname = %config.server.hostname,
        threads = config.server.threads,
        store = %config.store.url,
        redis = config.cache.as_ref().map_or_else(|| "-".to_string(), |c| c.display_url()),
        domains = ?config.server.accept_domains,
        max_clients = config.server.max_clients,
        "smtpd started"
    );

    let session_config = Arc::new(config.session_config());
    let reactor_config = Arc::new(reactor_config(
        &config,
        Arc::clone(&spool),
        implicit_tls_from,
        proxy_from,
    ));
    let client_limits = Arc::new(reactor::limits::ClientLimits::new(
        config.limits.client_limits,
    ));
    if let Some(cache) = &config.cache
        && config.limits.client_limits.max_connection_rate_per_ip > 0
    {
        // Several nodes with one Redis enforce one per-IP rate.
        reactor::rate_sync::spawn(
            Arc::clone(&client_limits),
            cache.url.clone(),
            cache.key_prefix.clone(),
        )?;
    }
    let shared = Arc::new(Shared {
        tls: smtpd::tls::TlsSlot::new(config.tls.loaded.clone()),
        client_limits: Some(client_limits),
        metrics: Arc::clone(&metrics),
        watchdog: watchdog.clone(),
        ..Shared::default()
    });
    let telemetry = start_telemetry(&config, &metrics, &stage)?;
    let mut handles = Vec::with_capacity(listeners.len());
    for (id, thread_listeners) in listeners.into_iter().enumerate() {
        handles.push(reactor::spawn(
            id,
            thread_listeners,
            Arc::clone(&session_config),
            Arc::clone(&reactor_config),
            Arc::clone(&shared),
            stage.sender(),
        )?);
    }

    metrics.set_listening();
    let summary = format!(
        "accepting mail on {}",
        bound
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    ops::notify::ready(&summary);
    watchdog.start();
    spawn_status(Arc::clone(&metrics), summary, telemetry);

    let sinks: Vec<_> = handles.iter().map(|h| Arc::clone(&h.sink)).collect();
    let signal_shared = Arc::clone(&shared);
    let mut running = config;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    if let Some(new) = reload(&cli, &running, &signal_shared, &log, &spool, &sinks)
                    {
                        running = new;
                    }
                    continue;
                }
                if signal == SIGUSR1 {
                    match log.reopen() {
                        Ok(()) => info!("SIGUSR1: log file reopened"),
                        Err(e) => warn!(error = %e, "SIGUSR1: cannot reopen the log file"),
                    }
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    // A second signal: the operator wants out now. Only messages not
                    // yet acknowledged can be affected, and their clients retry.
                    warn!(signal, "second signal: exiting immediately");
                    std::process::exit(1);
                }
                info!(
                    signal,
                    "shutting down: no new connections, finishing transactions"
                );
                ops::notify::stopping("draining: finishing transactions");
                signal_shared.shutdown.store(true, Ordering::Release);
                for sink in &sinks {
                    sink.wake();
                }
            }
        })?;

    for handle in handles {
        if handle.thread.join().is_err() {
            warn!("a reactor thread panicked");
        }
    }
    // Every reactor is gone, so is every sender but the stage's own: join drains,
    // commits and answers what is left.
    stage
        .join()
        .context("storage stage failed while draining")?;
    info!("smtpd stopped");
    Ok(())
}

/// The reactor settings of `config` (listener layout from the start).
fn reactor_config(
    config: &Config,
    spool: Arc<smtpd::spool::Spool>,
    implicit_tls_from: usize,
    proxy_from: usize,
) -> ReactorConfig {
    ReactorConfig {
        command_timeout: config.timeouts.command,
        data_timeout: config.timeouts.data,
        shutdown_grace: config.timeouts.shutdown_grace,
        max_clients: config.server.max_clients,
        hostname: config.server.hostname.clone(),
        greet_delay: config.limits.greet_delay,
        max_inflight_bytes: config.limits.max_inflight_bytes,
        spill_threshold_bytes: config.limits.spill_threshold_bytes,
        spool,
        implicit_tls_from,
        proxy_from,
        trusted_proxies: config.proxy.trusted.clone(),
    }
}

/// The telemetry listener (`[metrics] listen`), with the store's retention count.
fn start_telemetry(
    config: &Config,
    metrics: &Arc<Metrics>,
    stage: &StorageStage,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let deleted = stage.retention_counter();
    registry.register_collector(ops::telemetry::Sampled::counter(
        "smtpd_retention_deleted",
        "Rows deleted by retention",
        move || deleted.as_ref().map_or(0, |d| d.load(Ordering::Relaxed)),
    ));
    let queue = stage.queue_probe();
    registry.register_collector(ops::telemetry::Sampled::gauge(
        "smtpd_store_queue_depth",
        "Messages waiting for the committer",
        move || i64::try_from(queue()).unwrap_or(i64::MAX),
    ));
    let ready_metrics = Arc::clone(metrics);
    let ready: ops::telemetry::ReadyCheck = Arc::new(move || ready_metrics.ready());
    ops::telemetry::serve_setting("smtpd", config.metrics, registry, ready)
        .context("metrics.listen")
}

/// STATUS= lines for `systemctl status`, every few seconds (only under systemd).
fn spawn_status(metrics: Arc<Metrics>, summary: String, telemetry: Option<std::net::SocketAddr>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            loop {
                let ready = match metrics.ready() {
                    Ok(()) => "ready".to_owned(),
                    Err(e) => e,
                };
                ops::notify::status(&format!(
                    "{summary}; {} connections open, {} messages accepted; {ready}{}",
                    metrics.connections_open.get(),
                    metrics.messages_accepted.get(),
                    telemetry.map_or_else(String::new, |a| format!("; metrics on {a}"))
                ));
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
        });
}

/// SIGHUP: reads the config file again and validates it whole. A bad file is
/// refused (logged, naming the field) and the running settings stay. Otherwise what
/// can change live is applied (new connections use it; open ones keep theirs) and
/// what cannot is logged as ignored. Returns the configuration now running.
fn reload(
    cli: &Cli,
    running: &Config,
    shared: &Shared,
    log: &ops::logging::LogHandle,
    spool: &Arc<smtpd::spool::Spool>,
    sinks: &[Arc<smtpd::handoff::CompletionSink>],
) -> Option<Config> {
    let new = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: configuration refused; keeping the running one");
            ops::notify::reloaded(&format!("reload refused: {e}"));
            return None;
        }
    };
    let plan = smtpd::config::reload::plan(running, &new);
    for field in &plan.ignored {
        warn!(field, "SIGHUP: cannot change without a restart; ignored");
    }
    let new = smtpd::config::reload::keep_ignored(running, new);
    let reactor = reactor_config(
        &new,
        Arc::clone(spool),
        new.server.listen.len(),
        new.server.listen.len() + new.tls.implicit_listen.len(),
    );
    if let Some(tls) = new.tls.loaded.clone() {
        shared.tls.set(tls);
        if let Some((cert, _)) = &new.tls.files {
            info!(cert = %cert.display(), "SIGHUP: TLS certificate reloaded");
        }
    }
    shared.reloaded.store(Some(Arc::new(Reloaded {
        session: Arc::new(new.session_config()),
        reactor: Arc::new(reactor),
    })));
    if let Err(e) = log.set_level(log_filter(&new)) {
        warn!(error = %e, "SIGHUP: log level not changed");
    }
    // Each reactor takes the new settings on its next turn: make that now.
    for sink in sinks {
        sink.wake();
    }
    info!(changed = ?plan.applied, "SIGHUP: configuration reloaded");
    ops::notify::reloaded(&format!("reloaded; changed: {}", plan.applied.join(", ")));
    Some(new)
}

/// Every connection is a file descriptor: raise the soft RLIMIT_NOFILE to the hard
/// limit (as nginx and Postfix's master do), and say so when even that is below
/// what `max_clients` needs.
fn raise_fd_limit(max_clients: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let needed = max_clients as u64 + 256;
            if limit < needed {
                warn!(
                    limit,
                    max_clients,
                    "open-file limit is below max_clients + 256; connections beyond it fail to accept"
                );
            } else {
                info!(limit, "open-file limit");
            }
        }
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
}
