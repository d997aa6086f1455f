//! SIGHUP: the config file read again, validated whole, and what can change live
//! applied.
//!
//! SIGUSR1: the log file reopened ([`reopen_log_on_usr1`]).
//!
//! Owns: the split between what a running relay takes over and what it ignores
//! until a restart. Live: the per-domain limits (`[domains.*]`: rates apply to the
//! next transaction, connection limits to domains first seen after the reload) and
//! `log.level` (unless `-v` or `OUTBOUND_LOG` set the level at start).
//! Not live (logged as ignored): the store, Redis, the node id and everything in
//! `[relay]`, `[delivery]`, `[dns]`, `[retry]`, `[bounces]`, `[web]`, `[campaigns]`,
//! `[tracking]`, `[metrics]`, `log.format`, `log.file`, DKIM keys, pools and
//! transports. A file that does not
//! validate is refused whole (logged, naming the field), and the limits in force
//! stay. Must not: touch anything but the live-limits slot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use tracing::{error, info, warn};

use crate::config::{Config, DomainLimits, RunArgs};

/// Where the running configuration came from (`-c`, `--store`, the relay flags).
struct Source {
    path: Option<PathBuf>,
    store: Option<String>,
    args: RunArgs,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

/// The process's logging (set once at start) and whether `-v` fixed its level.
static LOG: OnceLock<(ops::logging::LogHandle, bool)> = OnceLock::new();

/// Remembers the logging handle, so a reload can change the level.
pub fn remember_log(handle: ops::logging::LogHandle, verbose: bool) {
    let _ = LOG.set((handle, verbose));
}

/// SIGUSR1 (logrotate's `postrotate`): reopens `log.file`, from a thread of its
/// own, in every mode (relay, `outbound web`, the CLI commands). Installed before
/// anything else: SIGUSR1's default action ends the process.
pub fn reopen_log_on_usr1() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])?;
    std::thread::Builder::new()
        .name("log-reopen".into())
        .spawn(move || {
            for _ in signals.forever() {
                match LOG.get().map(|(handle, _)| handle.reopen()) {
                    Some(Ok(())) => info!("SIGUSR1: log file reopened"),
                    Some(Err(e)) => warn!(error = %e, "SIGUSR1: cannot reopen the log file"),
                    // Logging is not set up yet: nothing to reopen.
                    None => {}
                }
            }
        })?;
    Ok(())
}

/// The tracing filter for `log.level`, or `-v`'s (which wins).
pub fn log_filter(verbose: bool, level: &str) -> &str {
    if verbose {
        "outbound=debug,info"
    } else {
        level
    }
}

/// The per-domain limits in force since the last reload (None: as at start).
struct Live {
    default_limits: DomainLimits,
    domain_limits: HashMap<String, DomainLimits>,
}

static LIVE: ArcSwapOption<Live> = ArcSwapOption::const_empty();

/// Remembers how the configuration was loaded, for reloads (once, at start).
pub fn remember_source(path: Option<PathBuf>, store: Option<String>, args: RunArgs) {
    let _ = SOURCE.set(Source { path, store, args });
}

/// The reloaded limits for `domain`, when a reload happened.
pub fn limits_for(domain: &str) -> Option<DomainLimits> {
    let live = LIVE.load();
    let live = live.as_ref()?;
    Some(
        live.domain_limits
            .get(domain)
            .copied()
            .unwrap_or(live.default_limits),
    )
}

/// What changed between the running configuration and a new one: (applied,
/// ignored), by section name. Sections are compared by their `Debug` form.
pub fn plan(old: &Config, new: &Config) -> (Vec<&'static str>, Vec<&'static str>) {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut applied = Vec::new();
    if differs(&old.default_limits, &new.default_limits)
        || differs(&sorted(&old.domain_limits), &sorted(&new.domain_limits))
    {
        applied.push("domains");
    }
    if old.log.level != new.log.level {
        applied.push("log.level");
    }
    let mut ignored = Vec::new();
    let checks: [(&'static str, bool); 14] = [
        ("store", differs(&old.store, &new.store)),
        ("redis", old.redis != new.redis),
        (
            "relay",
            old.node_id != new.node_id
                || old.threads != new.threads
                || old.batch_size != new.batch_size
                || old.max_in_flight != new.max_in_flight
                || old.poll_interval != new.poll_interval
                || old.lease != new.lease
                || old.heartbeat != new.heartbeat
                || old.shutdown_grace != new.shutdown_grace,
        ),
        (
            "delivery",
            old.helo_name != new.helo_name
                || old.port != new.port
                || old.max_connections != new.max_connections
                || old.connect_timeout != new.connect_timeout
                || old.command_timeout != new.command_timeout
                || old.data_timeout != new.data_timeout
                || old.idle_timeout != new.idle_timeout
                || old.max_messages_per_connection != new.max_messages_per_connection
                || old.max_recipients_per_transaction != new.max_recipients_per_transaction
                || old.starttls != new.starttls
                || old.message_id_domain != new.message_id_domain,
        ),
        ("retry", differs(&old.retry, &new.retry)),
        (
            "dns",
            old.resolver != new.resolver || old.dns_timeout != new.dns_timeout,
        ),
        (
            "transport",
            differs(&sorted(&old.transports), &sorted(&new.transports)),
        ),
        ("bounces", differs(&old.bounces, &new.bounces)),
        ("web", differs(&old.web, &new.web)),
        ("campaigns", differs(&old.campaigns, &new.campaigns)),
        ("tracking", differs(&old.tracking, &new.tracking)),
        ("metrics", old.metrics != new.metrics),
        ("log.format", old.log.format != new.log.format),
        ("log.file", old.log.file != new.log.file),
    ];
    ignored.extend(checks.into_iter().filter(|(_, c)| *c).map(|(n, _)| n));
    (applied, ignored)
}

fn sorted<V: Clone>(map: &HashMap<String, V>) -> Vec<(String, V)> {
    let mut v: Vec<(String, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Reads and validates the file again; applies the live part.
pub fn reload(running: &Config) {
    let Some(source) = SOURCE.get() else {
        warn!("SIGHUP: no configuration source known; nothing reloaded");
        return;
    };
    let new = match Config::load(
        source.path.as_deref(),
        source.store.as_deref(),
        &source.args,
    ) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: configuration refused; keeping the running one");
            ops::notify::reloaded(&format!("reload refused: {e}"));
            return;
        }
    };
    let (applied, ignored) = plan(running, &new);
    for field in &ignored {
        warn!(field, "SIGHUP: cannot change without a restart; ignored");
    }
    LIVE.store(Some(Arc::new(Live {
        default_limits: new.default_limits,
        domain_limits: new.domain_limits,
    })));
    if let Some((log, verbose)) = LOG.get()
        && let Err(e) = log.set_level(log_filter(*verbose, &new.log.level))
    {
        warn!(error = %e, "SIGHUP: log level not changed");
    }
    info!(changed = ?applied, "SIGHUP: configuration reloaded");
    ops::notify::reloaded(&format!("reloaded; changed: {}", applied.join(", ")));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(
            Some(&path),
            Some("sqlite:/tmp/x.sqlite"),
            &RunArgs::default(),
        )
        .unwrap()
    }

    #[test]
    fn domain_limits_are_live_the_rest_is_ignored() {
        let old = load("[domains.\"a.test\"]\nmessages_per_second = 5.0\n");
        let new = load(
            "[domains.\"a.test\"]\nmessages_per_second = 1.0\n[relay]\nthreads = 3\n[metrics]\nlisten = \"\"\n",
        );
        let (applied, ignored) = plan(&old, &new);
        assert_eq!(applied, vec!["domains"]);
        assert_eq!(ignored, vec!["relay", "metrics"]);
        assert_eq!(
            plan(
                &old,
                &load("[domains.\"a.test\"]\nmessages_per_second = 5.0\n")
            ),
            (vec![], vec![])
        );
    }
}
