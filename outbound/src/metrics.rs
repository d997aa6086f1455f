//! The Prometheus metrics of the relay and of `outbound web`, the `[metrics]`
//! section, and what `/readyz` reports.
//!
//! Owns: every metric family of the process (one set per process, reached through
//! [`get`], so that the worker, client, MX and dispatcher code pays one relaxed
//! atomic increment per event and no plumbing), the readiness state (the last
//! claim), and the `[metrics]` settings. Destination domains are a bounded label
//! set ([`ops::topn::TopN`]: the first [`TOP_DOMAINS`] seen, then `other`).
//! Must not: block, or hold a lock across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use ops::ConfigError;

/// Destination domains with a label of their own; the rest are `other`.
pub const TOP_DOMAINS: usize = 50;
/// The relay's metrics listener by default (smtpd has 9325).
pub const DEFAULT_RELAY_METRICS_LISTEN: &str = "127.0.0.1:9326";
/// `outbound web`'s metrics listener by default.
pub const DEFAULT_WEB_METRICS_LISTEN: &str = "127.0.0.1:9327";
/// `/readyz` of the relay: the dispatcher loop must have turned this recently.
const LOOP_STALE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    deliveries: Family<DeliveryLabels, Counter>,
    domains: ops::topn::TopN,
    pub attempt_seconds: Histogram,
    pub claims: Counter,
    pub claim_failures: Counter,
    pub connections_open: Gauge,
    pub connections_opened: Counter,
    pub connections_reused: Counter,
    pub tls_used: Counter,
    pub dns_lookups: Counter,
    pub dns_failures: Counter,
    pub rate_limit_waits: Counter,
    bounces: Family<KindLabel, Counter>,
    pub leases_taken_over: Counter,
    pub campaign_expanded: Counter,
    queue: Family<StateLabel, Gauge>,
    queue_seen: Mutex<Vec<String>>,
    /// The last claim's outcome, and why it failed.
    claim: ops::telemetry::Readiness,
    /// Milliseconds since [`EPOCH`] of the dispatcher loop's last turn (0: never).
    loop_turn_ms: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn since_epoch_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Metrics {
    fn new() -> Self {
        LazyLock::force(&EPOCH);
        Self {
            deliveries: Family::default(),
            domains: ops::topn::TopN::new(TOP_DOMAINS),
            attempt_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            claims: Counter::default(),
            claim_failures: Counter::default(),
            connections_open: Gauge::default(),
            connections_opened: Counter::default(),
            connections_reused: Counter::default(),
            tls_used: Counter::default(),
            dns_lookups: Counter::default(),
            dns_failures: Counter::default(),
            rate_limit_waits: Counter::default(),
            bounces: Family::default(),
            leases_taken_over: Counter::default(),
            campaign_expanded: Counter::default(),
            queue: Family::default(),
            queue_seen: Mutex::new(Vec::new()),
            claim: ops::telemetry::Readiness::new(false, "no claim yet"),
            loop_turn_ms: AtomicU64::new(0),
        }
    }

    /// Registers the relay's families under `outbound_`.
    pub fn register(&'static self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("outbound");
        r.register(
            "deliveries",
            "Recipients attempted, by outcome and destination domain (top domains, then other)",
            self.deliveries.clone(),
        );
        r.register(
            "attempt_seconds",
            "Time one delivery attempt (a transaction) took",
            self.attempt_seconds.clone(),
        );
        r.register("claims", "Queue rows claimed", self.claims.clone());
        r.register(
            "claim_failures",
            "Claims that failed (store down)",
            self.claim_failures.clone(),
        );
        r.register(
            "connections_open",
            "SMTP connections open now",
            self.connections_open.clone(),
        );
        r.register(
            "connections_opened",
            "SMTP connections opened",
            self.connections_opened.clone(),
        );
        r.register(
            "connections_reused",
            "Transactions sent on a cached connection",
            self.connections_reused.clone(),
        );
        r.register(
            "tls_used",
            "Connections that went on in TLS (STARTTLS)",
            self.tls_used.clone(),
        );
        r.register(
            "dns_lookups",
            "MX and address lookups",
            self.dns_lookups.clone(),
        );
        r.register(
            "dns_failures",
            "MX and address lookups that failed",
            self.dns_failures.clone(),
        );
        r.register(
            "rate_limit_waits",
            "Transactions that waited for a per-domain rate limit",
            self.rate_limit_waits.clone(),
        );
        r.register(
            "bounces",
            "Bounce intake, by kind (bounce, unsubscribe, complaint, forged)",
            self.bounces.clone(),
        );
        r.register(
            "leases_taken_over",
            "Rows taken back whose lease had expired (a node stopped)",
            self.leases_taken_over.clone(),
        );
        r.register(
            "campaign_expanded",
            "Campaign recipients put into the queue",
            self.campaign_expanded.clone(),
        );
        r.register(
            "queue",
            "Queue rows by state (sampled at each heartbeat)",
            self.queue.clone(),
        );
    }

    /// One recipient's attempt ended with `outcome`.
    pub fn delivery(&self, outcome: crate::queue::Outcome, domain: &str, recipients: u64) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome: outcome.as_str(),
                domain: self.domains.label(domain),
            })
            .inc_by(recipients);
    }

    pub fn bounces(&self, kind: &'static str, n: u64) {
        if n > 0 {
            self.bounces.get_or_create(&KindLabel { kind }).inc_by(n);
        }
    }

    /// The queue's rows by state, as `outbound stats` counts them.
    /// States seen before and absent now go to 0.
    pub fn queue_states(&self, states: &[(String, i64)]) {
        let Ok(mut seen) = self.queue_seen.lock() else {
            return;
        };
        for old in seen.iter() {
            if !states.iter().any(|(s, _)| s == old) {
                self.queue
                    .get_or_create(&StateLabel { state: old.clone() })
                    .set(0);
            }
        }
        for (state, n) in states {
            self.queue
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n);
            if !seen.contains(state) {
                seen.push(state.clone());
            }
        }
    }

    /// A claim succeeded (`Ok`) or failed (the reason).
    pub fn claimed(&self, result: Result<usize, String>) {
        match result {
            Ok(n) => {
                self.claims.inc_by(n as u64);
                self.claim.set(Ok(()));
            }
            Err(e) => {
                self.claim_failures.inc();
                self.claim.set(Err(&e));
            }
        }
    }

    /// The dispatcher loop turned.
    pub fn loop_turned(&self) {
        // Never 0, which means "not yet".
        self.loop_turn_ms
            .store(since_epoch_ms().max(1), Ordering::Relaxed);
    }

    /// `/readyz` of the relay: the last claim succeeded and the loop turns.
    pub fn relay_ready(&self) -> Result<(), String> {
        let turned = self.loop_turn_ms.load(Ordering::Relaxed);
        if turned == 0 {
            return Err("starting".into());
        }
        let stale = u64::try_from(LOOP_STALE.as_millis()).unwrap_or(u64::MAX);
        if since_epoch_ms().saturating_sub(turned) > stale {
            return Err("dispatcher loop stuck".into());
        }
        self.claim.check("claim failed")
    }
}

/// One job's recipients to `domain` ended with these outcomes (one label lookup
/// per outcome present, not per recipient).
pub fn deliveries(domain: &str, outcomes: impl Iterator<Item = crate::queue::Outcome> + Clone) {
    use crate::queue::Outcome;
    for outcome in [
        Outcome::Delivered,
        Outcome::Deferred,
        Outcome::Failed,
        Outcome::Suppressed,
    ] {
        let n = outcomes.clone().filter(|o| *o == outcome).count() as u64;
        if n > 0 {
            get().delivery(outcome, domain, n);
        }
    }
}

/// What one bounce intake pass found.
pub fn record_intake(bounces: usize, unsubscribes: usize, complaints: usize, forged: usize) {
    let m = get();
    m.bounces("bounce", bounces as u64);
    m.bounces("unsubscribe", unsubscribes as u64);
    m.bounces("complaint", complaints as u64);
    m.bounces("forged", forged as u64);
}

/// Reads the queue's rows by state into the `queue` gauge (at heartbeat time).
pub async fn sample_queue(queue: &mut crate::queue::Queue) {
    match queue.state_counts().await {
        Ok(by_state) => get().queue_states(&by_state),
        Err(e) => tracing::debug!(error = %e, "queue sample failed"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

/// `outbound web`'s own metrics: responses by status class, and readiness (the
/// database answered its last probe).
struct WebMetrics {
    responses: Family<ClassLabel, Counter>,
    by_class: [Counter; 5],
    db: ops::telemetry::Readiness,
}

fn web() -> &'static WebMetrics {
    static WEB: LazyLock<WebMetrics> = LazyLock::new(|| {
        let responses = Family::<ClassLabel, Counter>::default();
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| responses.get_or_create(&ClassLabel { class }).clone());
        WebMetrics {
            responses,
            by_class,
            db: ops::telemetry::Readiness::new(false, "no probe yet"),
        }
    });
    &WEB
}

/// An axum response mapper: counts the response by status class (one relaxed
/// increment, fixed labels).
pub async fn count_response(response: axum::response::Response) -> axum::response::Response {
    let class = usize::from(response.status().as_u16() / 100);
    if let Some(c) = class.checked_sub(1).and_then(|i| web().by_class.get(i)) {
        c.inc();
    }
    response
}

/// How often `outbound web` asks the database whether it answers.
const WEB_PROBE: Duration = Duration::from_secs(2);

/// Starts `outbound web`'s metrics listener (`metrics.web_listen`) and the task
/// that probes the database for `/readyz`.
pub fn serve_web(
    cfg: &crate::config::Config,
    pool: std::sync::Arc<crate::db_pool::DbPool>,
) -> anyhow::Result<()> {
    if cfg.metrics.web.addr.is_none() {
        return Ok(());
    }
    tokio::spawn(async move {
        loop {
            let probe = match pool.get().await {
                Ok(mut db) => db.query("SELECT 1", Vec::new()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            let why = probe.err().map(|e| e.to_string());
            web().db.set(why.as_deref().map_or(Ok(()), Err));
            tokio::time::sleep(WEB_PROBE).await;
        }
    });
    let mut registry = Registry::default();
    registry.register(
        "outbound_web_responses",
        "HTTP responses of outbound web, by status class",
        web().responses.clone(),
    );
    serve(
        "outbound web",
        cfg.metrics.web,
        registry,
        std::sync::Arc::new(|| web().db.check("store unavailable")),
    )
}

/// The loops the systemd watchdog waits for (dispatcher, workers).
pub fn watchdog() -> &'static ops::notify::Watchdog {
    static WATCHDOG: LazyLock<ops::notify::Watchdog> = LazyLock::new(Default::default);
    &WATCHDOG
}

/// Beats for `name` while the runtime it is spawned on runs its tasks (a worker
/// runtime that is wedged stops beating); ends (and is no longer waited for) when
/// aborted.
pub async fn heartbeat(name: String) {
    struct Unregister(std::sync::Arc<ops::notify::Heartbeat>);
    impl Drop for Unregister {
        fn drop(&mut self) {
            watchdog().unregister(&self.0);
        }
    }
    let beat = Unregister(watchdog().register(name));
    let mut tick = tokio::time::interval(HEARTBEAT_TICK);
    loop {
        tick.tick().await;
        beat.0.beat();
    }
}

/// How often loops show their heartbeat: well within any `WatchdogSec=`.
pub const HEARTBEAT_TICK: Duration = Duration::from_millis(250);

/// Counts an open SMTP connection while it lives (a field of the client).
#[derive(Debug)]
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> Self {
        get().connections_open.inc();
        get().connections_opened.inc();
        Self(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        get().connections_open.dec();
    }
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    /// The relay's listener, `""` for none.
    pub listen: Option<String>,
    /// `outbound web`'s listener, `""` for none.
    pub web_listen: Option<String>,
}

pub use ops::telemetry::Listen;

/// The validated `[metrics]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    pub relay: Listen,
    pub web: Listen,
}

pub fn metrics_section(raw: FileMetrics) -> Result<MetricsConfig, ConfigError> {
    Ok(MetricsConfig {
        relay: ops::telemetry::listen_setting(
            "metrics.listen",
            raw.listen.as_deref(),
            DEFAULT_RELAY_METRICS_LISTEN,
        )?,
        web: ops::telemetry::listen_setting(
            "metrics.web_listen",
            raw.web_listen.as_deref(),
            DEFAULT_WEB_METRICS_LISTEN,
        )?,
    })
}

/// Starts the telemetry listener `name` (`outbound` or `outbound web`) serves.
pub fn serve(
    name: &str,
    listen: Listen,
    registry: Registry,
    ready: ops::telemetry::ReadyCheck,
) -> anyhow::Result<()> {
    ops::telemetry::serve_setting(name, listen, registry, ready)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_section_defaults_off_and_errors() {
        let m = metrics_section(FileMetrics::default()).unwrap();
        assert_eq!(
            m.relay.addr,
            Some(DEFAULT_RELAY_METRICS_LISTEN.parse().unwrap())
        );
        assert_eq!(
            m.web.addr,
            Some(DEFAULT_WEB_METRICS_LISTEN.parse().unwrap())
        );
        let m = metrics_section(FileMetrics {
            listen: Some(String::new()),
            web_listen: None,
        })
        .unwrap();
        assert_eq!(m.relay.addr, None);
        assert!(m.relay.explicit);
        let e = metrics_section(FileMetrics {
            listen: None,
            web_listen: Some("nope".into()),
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("metrics.web_listen: "), "{e}");
    }

    #[test]
    fn readiness_needs_a_turn_and_a_good_claim() {
        let m = Metrics::new();
        assert_eq!(m.relay_ready().unwrap_err(), "starting");
        m.loop_turned();
        assert!(m.relay_ready().unwrap_err().starts_with("claim failed"));
        m.claimed(Ok(3));
        assert!(m.relay_ready().is_ok());
        m.claimed(Err("connection refused".into()));
        assert_eq!(
            m.relay_ready().unwrap_err(),
            "claim failed: connection refused"
        );
        assert_eq!(m.claims.get(), 3);
        assert_eq!(m.claim_failures.get(), 1);
    }
}
