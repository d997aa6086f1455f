//! The Prometheus metrics of smtpd and what `/readyz` reports.
//!
//! Owns: every metric family (names, help, labels) and the readiness state. The hot
//! path pays relaxed atomic increments only: connection counters at accept/close,
//! the store's counters once per batch, and replies counted inside each session
//! ([`crate::protocol::Session::drain_replies`]) and added here when a message is
//! answered or the connection closes. Label sets are fixed at start (reply kinds,
//! refusal reasons), so nothing is allocated or locked per message.
//! Must not: read a clock or touch a socket.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::command::Verb;
use crate::protocol::reply::Reply;

/// Why a connection was refused before its session began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    MaxClients,
    PerIp,
    Rate,
    Pregreet,
    UntrustedProxy,
}

impl ConnRefusal {
    const ALL: [Self; 5] = [
        Self::MaxClients,
        Self::PerIp,
        Self::Rate,
        Self::Pregreet,
        Self::UntrustedProxy,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::MaxClients => "max_clients",
            Self::PerIp => "per_ip",
            Self::Rate => "rate",
            Self::Pregreet => "pregreet",
            Self::UntrustedProxy => "untrusted_proxy",
        }
    }
}

/// Why a message (or, for `domain`, a recipient) was refused.
fn message_refusal(reply: Reply) -> Option<&'static str> {
    Some(match reply {
        Reply::MessageTooBig => "size",
        Reply::BareLineEnding => "smuggling",
        Reply::DataLineTooLong => "line_length",
        Reply::RelayDenied => "domain",
        Reply::StoreFailed => "store",
        _ => return None,
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    code: String,
    enhanced: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabel {
    tls: &'static str,
}

/// The reply code and enhanced status code of a kind of reply, read from the reply
/// table itself (so the labels cannot drift from what is sent).
fn reply_labels(reply: Reply) -> ReplyLabels {
    let mut out = Vec::new();
    reply.write("h", &mut out);
    let text = String::from_utf8_lossy(&out);
    let code: String = text.chars().take(3).collect();
    let enhanced = text
        .get(4..)
        .and_then(|rest| rest.split([' ', '\r']).next())
        .filter(|t| t.split('.').count() == 3 && t.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .unwrap_or("")
        .to_owned();
    let class = format!("{}xx", code.chars().next().unwrap_or('0'));
    ReplyLabels {
        code,
        enhanced,
        class,
    }
}

/// Every smtpd metric. Cloned handles share their atomics with the registry.
#[derive(Debug)]
pub struct Metrics {
    pub connections_total: Counter,
    pub connections_open: Gauge,
    refused: [Counter; 5],
    sessions_tls: Counter,
    sessions_plain: Counter,
    replies: Vec<Counter>,
    /// Commands by verb, in `Verb::index` order.
    commands: [Counter; Verb::KINDS],
    messages_refused: Vec<Option<Counter>>,
    pub messages_accepted: Counter,
    pub bytes_accepted: Counter,
    pub backpressure_pauses: Counter,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub commit_failures: Counter,
    pub redis_writes: Counter,
    pub redis_failures: Counter,
    /// The store answered its last commit or probe.
    store: ops::telemetry::Readiness,
    /// Set once every listener is bound and the reactors run.
    listening: AtomicBool,
    refused_family: Family<ReasonLabel, Counter>,
    sessions_family: Family<TlsLabel, Counter>,
    replies_family: Family<ReplyLabels, Counter>,
    commands_family: Family<VerbLabel, Counter>,
    messages_refused_family: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let refused_family = Family::<ReasonLabel, Counter>::default();
        let refused = ConnRefusal::ALL.map(|r| {
            refused_family
                .get_or_create(&ReasonLabel { reason: r.label() })
                .clone()
        });
        let sessions_family = Family::<TlsLabel, Counter>::default();
        let sessions_tls = sessions_family
            .get_or_create(&TlsLabel { tls: "yes" })
            .clone();
        let sessions_plain = sessions_family
            .get_or_create(&TlsLabel { tls: "no" })
            .clone();
        let replies_family = Family::<ReplyLabels, Counter>::default();
        let replies = Reply::ALL
            .iter()
            .map(|r| replies_family.get_or_create(&reply_labels(*r)).clone())
            .collect();
        let commands_family = Family::<VerbLabel, Counter>::default();
        let commands = Verb::ALL.map(|v| {
            commands_family
                .get_or_create(&VerbLabel { verb: v.label() })
                .clone()
        });
        let messages_refused_family = Family::<ReasonLabel, Counter>::default();
        let messages_refused = Reply::ALL
            .iter()
            .map(|r| {
                message_refusal(*r).map(|reason| {
                    messages_refused_family
                        .get_or_create(&ReasonLabel { reason })
                        .clone()
                })
            })
            .collect();
        Self {
            connections_total: Counter::default(),
            connections_open: Gauge::default(),
            refused,
            sessions_tls,
            sessions_plain,
            replies,
            commands,
            messages_refused,
            messages_accepted: Counter::default(),
            bytes_accepted: Counter::default(),
            backpressure_pauses: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            commit_failures: Counter::default(),
            redis_writes: Counter::default(),
            redis_failures: Counter::default(),
            store: ops::telemetry::Readiness::new(true, ""),
            listening: AtomicBool::new(false),
            refused_family,
            sessions_family,
            replies_family,
            commands_family,
            messages_refused_family,
        }
    }

    /// Registers every family under the `smtpd_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("smtpd");
        r.register(
            "connections",
            "Client connections admitted",
            self.connections_total.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now",
            self.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused before a session, by reason",
            self.refused_family.clone(),
        );
        r.register(
            "sessions",
            "Sessions ended, by TLS",
            self.sessions_family.clone(),
        );
        r.register(
            "replies",
            "Replies sent, by code, enhanced status code and class",
            self.replies_family.clone(),
        );
        r.register(
            "commands",
            "Commands received, by verb (other: known but not offered; unknown: the rest)",
            self.commands_family.clone(),
        );
        r.register(
            "messages_accepted",
            "Messages committed (answered 250)",
            self.messages_accepted.clone(),
        );
        r.register(
            "bytes_accepted",
            "Message bytes committed",
            self.bytes_accepted.clone(),
        );
        r.register(
            "messages_refused",
            "Messages refused, by reason (domain counts refused recipients)",
            self.messages_refused_family.clone(),
        );
        r.register(
            "backpressure_pauses",
            "Connections whose input was paused because the store fell behind",
            self.backpressure_pauses.clone(),
        );
        r.register(
            "store_batch_size",
            "Messages per committed batch",
            self.batch_size.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Time one batch's commit took",
            self.commit_seconds.clone(),
        );
        r.register(
            "store_commit_failures",
            "Batches not committed (answered 451)",
            self.commit_failures.clone(),
        );
        r.register(
            "redis_writes",
            "Batches written to Redis",
            self.redis_writes.clone(),
        );
        r.register(
            "redis_failures",
            "Redis writes that failed",
            self.redis_failures.clone(),
        );
    }

    pub fn refused(&self, why: ConnRefusal) {
        if let Some(c) = self.refused.get(why as usize) {
            c.inc();
        }
    }

    /// Adds what a session received and replied since the last call (on each
    /// answer and at close).
    pub fn add_replies(&self, session: &crate::protocol::Session) {
        session.drain_verbs(|verb, n| {
            if let Some(c) = self.commands.get(verb.index()) {
                c.inc_by(u64::from(n));
            }
        });
        session.drain_replies(|reply, n| {
            let n = u64::from(n);
            if let Some(c) = self.replies.get(reply.index()) {
                c.inc_by(n);
            }
            if let Some(Some(c)) = self.messages_refused.get(reply.index()) {
                c.inc_by(n);
            }
            if reply == Reply::PregreetTalker {
                self.refused(ConnRefusal::Pregreet);
            }
        });
    }

    /// A session ended.
    pub fn session_closed(&self, session: &crate::protocol::Session) {
        self.add_replies(session);
        if session.is_tls() {
            self.sessions_tls.inc();
        } else {
            self.sessions_plain.inc();
        }
        self.connections_open.dec();
    }

    /// One batch went to the store: `ok` of `total` messages committed.
    pub fn record_batch(&self, ok: u64, total: u64, bytes: u64, took: std::time::Duration) {
        self.batch_size.observe(total as f64);
        self.commit_seconds.observe(took.as_secs_f64());
        if ok > 0 {
            self.messages_accepted.inc_by(ok);
            self.bytes_accepted.inc_by(bytes);
            self.set_store(Ok(()));
        } else if total > 0 {
            self.commit_failures.inc();
        }
    }

    /// A write to Redis succeeded or failed.
    pub fn redis_result(&self, ok: bool) {
        if ok {
            self.redis_writes.inc();
        } else {
            self.redis_failures.inc();
        }
    }

    /// The store committed (`Ok`) or failed.
    pub fn set_store(&self, result: Result<(), &str>) {
        self.store.set(result);
    }

    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// `/readyz`: listeners bound and the store answering.
    pub fn ready(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Acquire) {
            return Err("listeners not bound yet".into());
        }
        self.store.check("store unavailable")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reply_labels_come_from_the_reply_table() {
        let l = reply_labels(Reply::MessageTooBig);
        assert_eq!(
            (l.code.as_str(), l.enhanced.as_str(), l.class.as_str()),
            ("552", "5.3.4", "5xx")
        );
        let l = reply_labels(Reply::Greeting);
        assert_eq!((l.code.as_str(), l.enhanced.as_str()), ("220", ""));
        for r in Reply::ALL {
            let l = reply_labels(r);
            assert_eq!(l.code.len(), 3, "{r:?}");
            assert!(l.code.chars().all(|c| c.is_ascii_digit()), "{r:?}");
        }
    }

    #[test]
    fn readiness_follows_the_store() {
        let m = Metrics::new();
        assert!(m.ready().unwrap_err().contains("listeners"));
        m.set_listening();
        assert!(m.ready().is_ok());
        m.set_store(Err("connection refused"));
        assert_eq!(
            m.ready().unwrap_err(),
            "store unavailable: connection refused"
        );
        m.set_store(Ok(()));
        assert!(m.ready().is_ok());
    }

    #[test]
    fn encodes_families_with_fixed_labels() {
        let m = Metrics::new();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.refused(ConnRefusal::PerIp);
        m.messages_accepted.inc_by(3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains("smtpd_connections_refused_total{reason=\"per_ip\"} 1"),
            "{text}"
        );
        assert!(text.contains("smtpd_messages_accepted_total 3"), "{text}");
        assert!(
            text.contains("smtpd_messages_refused_total{reason=\"size\"} 0"),
            "{text}"
        );
        assert!(text.contains("code=\"552\""), "{text}");
    }
}
