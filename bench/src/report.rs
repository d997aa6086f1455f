//! Counters and latency histograms, merged from all sessions, and the report.
//!
//! Owns: what is measured (messages and bytes accepted, reply codes, connection
//! errors, end-of-DATA → reply latency and whole-transaction latency in µs via
//! hdrhistogram) and how it is printed (text or `--json`).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Args;

pub struct Stats {
    pub accepted: u64,
    pub bytes: u64,
    pub codes: BTreeMap<u16, u64>,
    pub connections: u64,
    pub connection_errors: u64,
    /// End of DATA (the final dot written) → the reply, µs.
    pub eod: Histogram<u64>,
    /// MAIL written → final reply, µs.
    pub txn: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Stats {
    pub fn new() -> Self {
        Self {
            accepted: 0,
            bytes: 0,
            codes: BTreeMap::new(),
            connections: 0,
            connection_errors: 0,
            eod: histogram(),
            txn: histogram(),
        }
    }

    pub fn code(&mut self, code: u16) {
        *self.codes.entry(code).or_default() += 1;
    }

    pub fn delivered(&mut self, bytes: u64, eod: Duration, txn: Duration) {
        self.accepted += 1;
        self.bytes += bytes;
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.eod.record(us(eod));
        let _ = self.txn.record(us(txn));
    }

    pub fn merge(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.bytes += other.bytes;
        for (code, n) in &other.codes {
            *self.codes.entry(*code).or_default() += n;
        }
        self.connections += other.connections;
        self.connection_errors += other.connection_errors;
        let _ = self.eod.add(&other.eod);
        let _ = self.txn.add(&other.txn);
    }
}

pub struct Report {
    pub stats: Stats,
    pub elapsed: Duration,
}

fn percentiles(h: &Histogram<u64>) -> [(&'static str, f64); 5] {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    [
        ("p50", ms(0.5)),
        ("p90", ms(0.9)),
        ("p99", ms(0.99)),
        ("p99.9", ms(0.999)),
        ("max", h.max() as f64 / 1000.0),
    ]
}

impl Report {
    fn rate(&self) -> f64 {
        self.stats.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn text(&self, args: &Args) -> String {
        let s = &self.stats;
        let mut out = format!(
            "{} messages accepted in {:.2}s: {:.0} msg/s, {:.1} MB/s ({} connections, {} connection errors; {} sessions, {}{}{})\n",
            s.accepted,
            self.elapsed.as_secs_f64(),
            self.rate(),
            s.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6,
            s.connections,
            s.connection_errors,
            args.connections,
            if args.pipelining {
                "pipelining"
            } else {
                "no pipelining"
            },
            if args.starttls { ", STARTTLS" } else { "" },
            if args.rate > 0.0 {
                format!(", target {} msg/s", args.rate)
            } else {
                String::new()
            },
        );
        let codes: Vec<String> = s.codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        out.push_str(&format!("replies: {}\n", codes.join(" ")));
        for (name, h) in [
            ("end-of-DATA → reply", &s.eod),
            ("whole transaction", &s.txn),
        ] {
            let p: Vec<String> = percentiles(h)
                .iter()
                .map(|(q, v)| format!("{q} {v:.2}"))
                .collect();
            out.push_str(&format!("{name} (ms): {}\n", p.join("  ")));
        }
        out
    }

    pub fn json(&self, args: &Args) -> String {
        let s = &self.stats;
        let lat = |h: &Histogram<u64>| -> serde_json::Value {
            percentiles(h)
                .iter()
                .map(|(q, v)| ((*q).to_owned(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::json!({
            "server": args.server.to_string(),
            "connections": args.connections,
            "size": if args.size_mix { serde_json::json!("mix") } else { serde_json::json!(args.size) },
            "per_connection": args.per_connection,
            "pipelining": args.pipelining,
            "starttls": args.starttls,
            "target_rate": args.rate,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "messages": s.accepted,
            "messages_per_s": self.rate(),
            "bytes_per_s": s.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9),
            "replies": s.codes.iter().map(|(c, n)| (c.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "sessions_opened": s.connections,
            "connection_errors": s.connection_errors,
            "eod_latency_ms": lat(&s.eod),
            "transaction_latency_ms": lat(&s.txn),
        })
        .to_string()
    }
}
