//! Confirmation throttles: how many double opt-in confirmations may be queued per
//! address per day, per client IP per hour and per recipient domain per minute,
//! counted in the database (`confirm_throttle`), so that every `outbound web`
//! process behind a load balancer shares one count.
//!
//! Windows are fixed (aligned to multiples of their length in Unix time): one
//! upsert per (scope, subject, window) row, and the hit count read back in the
//! caller's transaction. A request over a limit is rolled back by its caller, so a
//! refused request counts nothing. At a window's boundary a client may get up to
//! twice the limit within one window length: the price of one row per window.
//!
//! Owns: the `[confirmations]` limits, the window arithmetic and the counter SQL.
//! Must not: decide what is sent (`confirm` does), or keep counts in memory.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::db::{Db, DbError, Val};

/// `confirmations.per_address_per_day`: a person asked three times a day is
/// asked enough; a fourth is someone else's form abuse.
pub const DEFAULT_PER_ADDRESS_PER_DAY: u32 = 3;
/// `confirmations.per_ip_per_hour`: a sign-up form's honest user adds a few
/// addresses; twenty an hour from one client is a script.
pub const DEFAULT_PER_IP_PER_HOUR: u32 = 20;
/// `confirmations.per_domain_per_minute`: one a second to one provider on
/// average, far below what gets a sender rate-limited there.
pub const DEFAULT_PER_DOMAIN_PER_MINUTE: u32 = 60;
/// Rows older than this are deleted (the longest window, a day, and some).
const KEEP_SECS: i64 = 2 * 86_400;

/// One of the three throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Address,
    Ip,
    Domain,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Ip => "ip",
            Self::Domain => "domain",
        }
    }

    /// Window length in seconds.
    pub fn window_secs(self) -> i64 {
        match self {
            Self::Address => 86_400,
            Self::Ip => 3_600,
            Self::Domain => 60,
        }
    }

    /// The config field that sets it (and names it in a 429).
    pub fn field(self) -> &'static str {
        match self {
            Self::Address => "confirmations.per_address_per_day",
            Self::Ip => "confirmations.per_ip_per_hour",
            Self::Domain => "confirmations.per_domain_per_minute",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfirmations {
    sender: Option<String>,
    per_address_per_day: Option<u32>,
    per_ip_per_hour: Option<u32>,
    per_domain_per_minute: Option<u32>,
}

/// `[confirmations]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmations {
    /// From address of confirmations of lists without their own `sender`; None:
    /// such lists send none.
    pub sender: Option<String>,
    pub per_address_per_day: u32,
    pub per_ip_per_hour: u32,
    pub per_domain_per_minute: u32,
}

impl Default for Confirmations {
    fn default() -> Self {
        Self {
            sender: None,
            per_address_per_day: DEFAULT_PER_ADDRESS_PER_DAY,
            per_ip_per_hour: DEFAULT_PER_IP_PER_HOUR,
            per_domain_per_minute: DEFAULT_PER_DOMAIN_PER_MINUTE,
        }
    }
}

impl Confirmations {
    pub fn limit(&self, scope: Scope) -> u32 {
        match scope {
            Scope::Address => self.per_address_per_day,
            Scope::Ip => self.per_ip_per_hour,
            Scope::Domain => self.per_domain_per_minute,
        }
    }
}

/// `[confirmations]`: limits 1..=1,000,000; the sender a mailbox.
pub fn confirmations_section(raw: FileConfirmations) -> Result<Confirmations, ConfigError> {
    let d = Confirmations::default();
    if let Some(s) = &raw.sender
        && !crate::address::is_mailbox(s)
    {
        return Err(ops::invalid(
            "confirmations.sender",
            format!("`{s}` is not a mailbox (local@domain)"),
        ));
    }
    let limit = |scope: Scope, v: Option<u32>, default: u32| {
        ops::bounded(scope.field(), v.unwrap_or(default), 1, 1_000_000)
    };
    Ok(Confirmations {
        sender: raw.sender,
        per_address_per_day: limit(
            Scope::Address,
            raw.per_address_per_day,
            d.per_address_per_day,
        )?,
        per_ip_per_hour: limit(Scope::Ip, raw.per_ip_per_hour, d.per_ip_per_hour)?,
        per_domain_per_minute: limit(
            Scope::Domain,
            raw.per_domain_per_minute,
            d.per_domain_per_minute,
        )?,
    })
}

/// The start (Unix seconds) of the window of length `len` holding `now`.
pub fn window_start(now_secs: i64, len: i64) -> i64 {
    now_secs.div_euclid(len.max(1)) * len.max(1)
}

/// Seconds until the window holding `now` ends (at least 1): the `Retry-After`.
pub fn retry_after(now_secs: i64, len: i64) -> i64 {
    (window_start(now_secs, len) + len.max(1) - now_secs).max(1)
}

/// A limit that was passed: which, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub scope: Scope,
    pub limit: u32,
    pub retry_after_secs: i64,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = match self.scope {
            Scope::Address => "per address per day",
            Scope::Ip => "per client IP per hour",
            Scope::Domain => "per recipient domain per minute",
        };
        write!(
            f,
            "{}: at most {} confirmations {per}; try again in {} s",
            self.scope.field(),
            self.limit,
            self.retry_after_secs
        )
    }
}

/// Adds `n` hits to `subject`'s current window of `scope`, in the caller's
/// transaction; Err(Exceeded) when the count passes the limit (the caller rolls
/// back, so nothing of it stays).
pub async fn hit(
    db: &mut Db,
    cfg: &Confirmations,
    scope: Scope,
    subject: &str,
    n: u32,
    now: DateTime<Utc>,
) -> Result<Result<(), Exceeded>, DbError> {
    let secs = now.timestamp();
    let start = window_start(secs, scope.window_secs());
    let params = || -> Vec<Val> {
        vec![
            scope.as_str().into(),
            subject.into(),
            start.into(),
            i64::from(n).into(),
        ]
    };
    let hits = if db.is_mysql() {
        db.exec(
            "INSERT INTO confirm_throttle (scope, subject, window_start, hits) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE hits = hits + VALUES(hits)",
            params(),
        )
        .await?;
        db.query(
            "SELECT hits FROM confirm_throttle WHERE scope = ? AND subject = ? AND window_start = ?",
            vec![scope.as_str().into(), subject.into(), start.into()],
        )
        .await?
    } else {
        db.query(
            "INSERT INTO confirm_throttle (scope, subject, window_start, hits) VALUES (?, ?, ?, ?) \
             ON CONFLICT (scope, subject, window_start) DO UPDATE SET hits = hits + excluded.hits \
             RETURNING hits",
            params(),
        )
        .await?
    };
    let hits = crate::row::scalar_int(&hits).unwrap_or(i64::MAX);
    let limit = cfg.limit(scope);
    Ok(if hits > i64::from(limit) {
        Err(Exceeded {
            scope,
            limit,
            retry_after_secs: retry_after(secs, scope.window_secs()),
        })
    } else {
        Ok(())
    })
}

/// Deletes windows long over (autocommit, outside any request's transaction).
pub async fn prune(db: &mut Db, now: DateTime<Utc>) -> Result<u64, DbError> {
    db.exec(
        "DELETE FROM confirm_throttle WHERE window_start < ?",
        vec![(now.timestamp() - KEEP_SECS).into()],
    )
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_retry_after_counts_to_their_end() {
        assert_eq!(window_start(0, 60), 0);
        assert_eq!(window_start(59, 60), 0);
        assert_eq!(window_start(60, 60), 60);
        assert_eq!(window_start(86_399, 86_400), 0);
        assert_eq!(window_start(-1, 60), -60);
        assert_eq!(retry_after(0, 60), 60);
        assert_eq!(retry_after(59, 60), 1);
        assert_eq!(retry_after(3_601, 3_600), 3_599);
        // A degenerate length never divides by zero.
        assert_eq!(window_start(5, 0), 5);
    }

    #[test]
    fn limits_are_checked_and_named() {
        let ok = confirmations_section(FileConfirmations::default()).unwrap();
        assert_eq!(ok, Confirmations::default());
        let e = confirmations_section(FileConfirmations {
            per_ip_per_hour: Some(0),
            ..FileConfirmations::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("confirmations.per_ip_per_hour"),
            "{e}"
        );
        let e = confirmations_section(FileConfirmations {
            sender: Some("nobody".into()),
            ..FileConfirmations::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("confirmations.sender"), "{e}");
        let x = Exceeded {
            scope: Scope::Domain,
            limit: 60,
            retry_after_secs: 12,
        };
        assert!(
            x.to_string()
                .starts_with("confirmations.per_domain_per_minute:")
        );
    }
}
