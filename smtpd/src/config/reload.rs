//! What a reload (SIGHUP) may change in a running server, and what it may not.
//!
//! Owns: the split. Live: limits (sizes, recipients, errors, greet delay, memory),
//! accepted domains, host name, timeouts, TLS certificate and key, `tls.require`,
//! trusted proxies, log level. Not live (need a restart, logged as ignored): listen
//! addresses of every kind, threads and backlog, the store (URL, batching, spool),
//! Redis, retention, the per-IP connection limits (their tables are sized at
//! start), the log file path and the metrics listener. Sections are compared by
//! their `Debug` form: every section prints all of its settings.
//! Must not: apply anything; `main` does that.

use super::Config;

/// What changed in a new configuration, by field name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changed and applied live.
    pub applied: Vec<&'static str>,
    /// Changed but kept as running until a restart.
    pub ignored: Vec<&'static str>,
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Compares the running configuration with a new, valid one.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    let mut live = |name, changed: bool| {
        if changed {
            plan.applied.push(name);
        }
    };
    live(
        "server.hostname",
        old.server.hostname != new.server.hostname,
    );
    live(
        "server.accept_domains",
        old.server.accept_domains != new.server.accept_domains,
    );
    live(
        "server.max_clients",
        old.server.max_clients != new.server.max_clients,
    );
    live(
        "limits",
        differs(
            &(
                old.limits.max_message_bytes,
                old.limits.max_recipients,
                old.limits.max_data_line_bytes,
                old.limits.max_errors,
                old.limits.max_junk_commands,
                old.limits.greet_delay,
                old.limits.max_inflight_bytes,
                old.limits.spill_threshold_bytes,
            ),
            &(
                new.limits.max_message_bytes,
                new.limits.max_recipients,
                new.limits.max_data_line_bytes,
                new.limits.max_errors,
                new.limits.max_junk_commands,
                new.limits.greet_delay,
                new.limits.max_inflight_bytes,
                new.limits.spill_threshold_bytes,
            ),
        ),
    );
    live("timeouts", differs(&old.timeouts, &new.timeouts));
    live(
        "tls.cert",
        old.tls.files != new.tls.files || old.tls.require != new.tls.require,
    );
    live(
        "proxy.trusted_networks",
        differs(&old.proxy.trusted, &new.proxy.trusted),
    );
    live("log.verbose", old.log.verbose != new.log.verbose);
    live("log.level", old.log.level != new.log.level);
    let mut fixed = |name, changed: bool| {
        if changed {
            plan.ignored.push(name);
        }
    };
    fixed("server.listen", old.server.listen != new.server.listen);
    fixed(
        "tls.implicit_listen",
        old.tls.implicit_listen != new.tls.implicit_listen,
    );
    fixed("proxy.listen", old.proxy.listen != new.proxy.listen);
    fixed(
        "server.threads",
        old.server.threads != new.server.threads
            || old.server.listen_backlog != new.server.listen_backlog,
    );
    fixed("store", differs(&old.store, &new.store));
    fixed("redis", differs(&old.cache, &new.cache));
    fixed("retention", differs(&old.retention, &new.retention));
    fixed(
        "limits.max_connections_per_ip",
        differs(&old.limits.client_limits, &new.limits.client_limits),
    );
    fixed("log.file", old.log.file != new.log.file);
    fixed("log.format", old.log.format != new.log.format);
    fixed("metrics.listen", old.metrics != new.metrics);
    plan
}

/// `new` with every setting that cannot change live put back to the running value,
/// so the configuration kept is the one actually in force.
pub fn keep_ignored(old: &Config, mut new: Config) -> Config {
    new.server.listen = old.server.listen.clone();
    new.server.threads = old.server.threads;
    new.server.listen_backlog = old.server.listen_backlog;
    new.tls.implicit_listen = old.tls.implicit_listen.clone();
    new.proxy.listen = old.proxy.listen.clone();
    new.store = old.store.clone();
    new.cache = old.cache.clone();
    new.retention = old.retention.clone();
    new.limits.client_limits = old.limits.client_limits;
    new.log.file = old.log.file.clone();
    new.log.format = old.log.format;
    new.metrics = old.metrics;
    new
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Cli, FileConfig};
    use clap::Parser;

    fn config(text: &str) -> Config {
        let file: FileConfig = toml::from_str(text).unwrap();
        Config::validate(file, &Cli::parse_from(["smtpd"])).unwrap()
    }

    #[test]
    fn limits_and_domains_are_live_listen_and_store_are_not() {
        let old = config("[server]\naccept_domains = [\"a.test\"]\n");
        let new = config(
            "[server]\naccept_domains = [\"b.test\"]\nlisten = [\"127.0.0.1:2600\"]\n\
             [limits]\nmax_recipients = 3\n[store]\nurl = \"sqlite:/tmp/other.sqlite\"\n",
        );
        let p = plan(&old, &new);
        assert_eq!(p.applied, vec!["server.accept_domains", "limits"]);
        assert_eq!(p.ignored, vec!["server.listen", "store"]);
        let kept = keep_ignored(&old, new);
        assert_eq!(kept.server.listen, old.server.listen);
        assert_eq!(kept.limits.max_recipients, 3);
        assert_eq!(plan(&old, &kept).ignored, Vec::<&str>::new());
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let a = config("");
        assert_eq!(plan(&a, &config("")), Plan::default());
        let t = config("[timeouts]\ncommand_secs = 7\n[log]\nverbose = true\n");
        assert_eq!(plan(&a, &t).applied, vec!["timeouts", "log.verbose"]);
    }
}
