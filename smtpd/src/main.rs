//! `smtpd`: parse the command line and config, open the store, start the reactors,
//! wait for a signal, drain, exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{info, warn};

use smtpd::config::{Cli, Config};
use smtpd::reactor::{self, ReactorConfig, Shared};
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
    if let Err(e) = init_logging(&config) {
        eprintln!("smtpd: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    ops::logging::init(&ops::logging::Logging {
        env_var: "SMTPD_LOG",
        default_filter: if config.log.verbose { "debug" } else { "info" },
        file: config.log.file.as_deref(),
    })
    .context("log.file")?;
    Ok(())
}

fn run(config: Config) -> anyhow::Result<()> {
    // `--http`: committed messages are announced to its event streams.
    let arrivals = config
        .http
        .as_ref()
        .map(|_| smtpd::http::events::Arrivals::new());
    let stage = StorageStage::start_with_arrivals(
        &config.store.url,
        StageConfig {
            batch_max_messages: config.store.batch_max_messages,
            batch_max_delay: config.store.batch_max_delay,
            batch_max_bytes: config.store.batch_max_bytes,
            queue_capacity: config.store.queue_capacity,
            hostname: config.server.hostname.clone(),
            synchronous: config.store.synchronous,
            migrate: config.store.migrate,
            cache: config.cache.clone(),
            retention: config.retention.clone(),
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
    let all_listen: Vec<_> = config
        .server
        .listen
        .iter()
        .chain(&config.tls.implicit_listen)
        .chain(&config.proxy.listen)
        .copied()
        .collect();
    let implicit_tls_from = config.server.listen.len();
    let proxy_from = implicit_tls_from + config.tls.implicit_listen.len();
    raise_fd_limit(config.server.max_clients);
    let (listeners, bound) = reactor::listener::bind_all(
        &all_listen,
        config.server.threads,
        config.server.listen_backlog,
    )?;
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
    let reactor_config = Arc::new(ReactorConfig {
        command_timeout: config.timeouts.command,
        data_timeout: config.timeouts.data,
        shutdown_grace: config.timeouts.shutdown_grace,
        max_clients: config.server.max_clients,
        hostname: config.server.hostname.clone(),
        greet_delay: config.limits.greet_delay,
        max_inflight_bytes: config.limits.max_inflight_bytes,
        spill_threshold_bytes: config.limits.spill_threshold_bytes,
        spool: Arc::clone(&spool),
        implicit_tls_from,
        proxy_from,
        trusted_proxies: config.proxy.trusted.clone(),
    });
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
        ..Shared::default()
    });
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

    let sinks: Vec<_> = handles.iter().map(|h| Arc::clone(&h.sink)).collect();
    let signal_shared = Arc::clone(&shared);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let tls_files = config.tls.files.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload_tls(tls_files.as_ref(), &signal_shared);
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

/// SIGHUP: reads the certificate and key again. New TLS sessions use them; open
/// connections are not disturbed. A bad file keeps the old configuration.
fn reload_tls(files: Option<&(std::path::PathBuf, std::path::PathBuf)>, shared: &Shared) {
    let Some((cert, key)) = files else {
        info!("SIGHUP: no TLS configured, nothing to reload");
        return;
    };
    match smtpd::tls::load(cert, key) {
        Ok(config) => {
            shared.tls.set(config);
            info!(cert = %cert.display(), "SIGHUP: TLS certificate reloaded");
        }
        Err(e) => warn!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificate"),
    }
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
