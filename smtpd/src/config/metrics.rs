//! `[metrics]`: where `/metrics`, `/healthz` and `/readyz` are served.
//!
//! Owns: the setting's name, default and check (the check itself is shared with
//! outbound: [`ops::telemetry::listen_setting`]).

use serde::Deserialize;

use ops::ConfigError;
pub use ops::telemetry::Listen as MetricsConfig;

/// Loopback only by default: the metrics tell who sends how much, so they are
/// offered beyond the host only when an operator chooses an address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9325";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `"host:port"`, or `""` for no listener.
    pub listen: Option<String>,
}

pub(super) fn metrics(raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    ops::telemetry::listen_setting(
        "metrics.listen",
        raw.listen.as_deref(),
        DEFAULT_METRICS_LISTEN,
    )
}
