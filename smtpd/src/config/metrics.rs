//! `[metrics]`: where `/metrics`, `/healthz` and `/readyz` are served.
//!
//! Owns: the setting's name, default and check. Kept apart from the other sections
//! so that the telemetry settings stay in one place.

use std::net::SocketAddr;

use serde::Deserialize;

use ops::{ConfigError, invalid};

/// Loopback only by default: the metrics tell who sends how much, so they are
/// offered beyond the host only when an operator chooses an address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9325";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `"host:port"`, or `""` for no listener.
    pub listen: Option<String>,
}

/// The validated `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// None: no telemetry listener.
    pub listen: Option<SocketAddr>,
    /// The address was written in the file: failing to bind it stops the start.
    /// The default address that is taken (another smtpd on the host) only warns.
    pub explicit: bool,
}

pub(super) fn metrics(raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let explicit = raw.listen.is_some();
    let text = raw
        .listen
        .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
    let text = text.trim();
    if text.is_empty() {
        return Ok(MetricsConfig {
            listen: None,
            explicit,
        });
    }
    let addr = text
        .parse::<SocketAddr>()
        .map_err(|e| invalid("metrics.listen", format!("{text:?} is not host:port ({e})")))?;
    Ok(MetricsConfig {
        listen: Some(addr),
        explicit,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_empty_and_bad() {
        let d = metrics(RawMetrics::default()).unwrap();
        assert_eq!(d.listen, Some(DEFAULT_METRICS_LISTEN.parse().unwrap()));
        assert!(!d.explicit);
        let off = metrics(RawMetrics {
            listen: Some(String::new()),
        })
        .unwrap();
        assert_eq!(off.listen, None);
        let e = metrics(RawMetrics {
            listen: Some("localhost".into()),
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("metrics.listen: "), "{e}");
    }
}
