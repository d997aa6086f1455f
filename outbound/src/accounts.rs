//! Accounts (the users of the mass-mailing system) and their API bearer tokens.
//!
//! Owns: the `accounts` and `api_tokens` tables (`schema/*/0004_campaigns.sql`):
//! creating an account with its first token, and finding the account a token
//! belongs to. A token is 32 random bytes (hex, prefixed `ob_`); only its SHA-256
//! is stored. A fast hash is right here, unlike for passwords: a token has 256
//! bits of entropy, so there is nothing to guess, and the lookup runs on every
//! request.
//!
//! Also owns the account's responsible-sending state (schema 8): its limits
//! (`send_rate`, `daily_quota`, set by `outbound account limits`), what
//! `GET /api/v1/account` shows of it ([`status`]), and the auto-pause: over the
//! trailing [`PauseLimits::window`] (from an admin's resume at the latest), the
//! account's campaign messages sent (delivered or failed), bounced and complained
//! about; past `accounts.max_bounce_rate` or `accounts.max_complaint_rate` with at
//! least `accounts.min_sample` sent, the account gets a `paused_reason` and the
//! campaign runner pauses its campaigns ([`decide`] is the pure part).
//! Must not: know HTTP (`web::auth` does), or pause campaign rows itself (the
//! campaign store's pause path does).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, Val};
use crate::row::{Column, Fields};

/// The longest account name.
pub const MAX_NAME: usize = 64;

/// An account as every request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
}

impl Account {
    const COLUMNS: &'static [Column] = &[
        Column::plain("a.id"),
        Column::plain("a.name"),
        Column::plain("a.is_admin"),
    ];

    fn from_row(row: Vec<Val>) -> Option<Self> {
        let mut f = Fields::new(Self::COLUMNS, row).ok()?;
        Some(Self {
            id: f.int("a.id").ok()?,
            name: f.text("a.name").ok()?,
            is_admin: f.opt_int("a.is_admin").ok()?.unwrap_or(0) != 0,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "account name: must be 1 to {MAX_NAME} characters of letters, digits, '.', '_', '-' or '@'"
    )]
    BadName,
    #[error("account name: `{0}` exists already")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A new random bearer token.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf)?;
    Ok(format!("ob_{}", hex(&buf)))
}

/// What is stored of a token.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Creates an account and its first token; returns both (the token is not
/// stored and cannot be shown again).
pub async fn create(
    db: &mut Db,
    name: &str,
    admin: bool,
) -> Result<(Account, String), AccountError> {
    if !valid_name(name) {
        return Err(AccountError::BadName);
    }
    let token = new_token().map_err(|_| AccountError::BadName)?;
    db.begin().await?;
    let result = async {
        let exists = db
            .query("SELECT id FROM accounts WHERE name = ?", vec![name.into()])
            .await?;
        if !exists.is_empty() {
            return Err(AccountError::Exists(name.to_owned()));
        }
        db.exec(
            "INSERT INTO accounts (name, is_admin) VALUES (?, ?)",
            vec![name.into(), Val::Int(i64::from(admin))],
        )
        .await?;
        let rows = db
            .query("SELECT id FROM accounts WHERE name = ?", vec![name.into()])
            .await?;
        let id = crate::row::scalar_int(&rows).ok_or(AccountError::Db(DbError::Timeout(
            std::time::Duration::ZERO,
        )))?;
        db.exec(
            "INSERT INTO api_tokens (account_id, token_sha256) VALUES (?, ?)",
            vec![id.into(), token_sha256(&token).into()],
        )
        .await?;
        Ok(Account {
            id,
            name: name.to_owned(),
            is_admin: admin,
        })
    }
    .await;
    match result {
        Ok(account) => {
            db.commit().await?;
            Ok((account, token))
        }
        Err(e) => {
            db.rollback().await;
            Err(e)
        }
    }
}

/// How stale `api_tokens.last_used_at` may get: it is written at most once a
/// minute per token, not on every request.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// The account `token` belongs to, if any; notes when the token was last used.
pub async fn authenticate(db: &mut Db, token: &str) -> Result<Option<Account>, DbError> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let hash = token_sha256(token);
    let sql = format!(
        "SELECT {} FROM api_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_sha256 = ?",
        crate::row::select_list(db, Account::COLUMNS)
    );
    let rows = db.query(&sql, vec![hash.as_str().into()]).await?;
    let Some(account) = rows.into_iter().next().and_then(Account::from_row) else {
        return Ok(None);
    };
    let now = chrono::Utc::now();
    let stale = now - chrono::Duration::seconds(LAST_USED_GRANULARITY_SECS);
    db.exec(
        "UPDATE api_tokens SET last_used_at = ? \
         WHERE token_sha256 = ? AND (last_used_at IS NULL OR last_used_at < ?)",
        vec![
            crate::queue::ts(now).into(),
            hash.into(),
            crate::queue::ts(stale).into(),
        ],
    )
    .await?;
    Ok(Some(account))
}

/// The account called `name`, if any.
pub async fn by_name(db: &mut Db, name: &str) -> Result<Option<Account>, DbError> {
    let sql = format!(
        "SELECT {} FROM accounts a WHERE a.name = ?",
        crate::row::select_list(db, Account::COLUMNS)
    );
    let rows = db.query(&sql, vec![name.into()]).await?;
    Ok(rows.into_iter().next().and_then(Account::from_row))
}

/// `accounts.max_bounce_rate`: 5 % bounced is what mailbox providers treat as a
/// list nobody cleaned.
pub const DEFAULT_MAX_BOUNCE_RATE: f64 = 0.05;
/// `accounts.max_complaint_rate`: 0.3 %, the spam-rate ceiling the large
/// providers publish for bulk senders.
pub const DEFAULT_MAX_COMPLAINT_RATE: f64 = 0.003;
/// `accounts.min_sample`: fewer sends say too little (one complaint in 50 is 2 %).
pub const DEFAULT_MIN_SAMPLE: i64 = 500;
/// `accounts.window_secs`: the trailing day.
pub const DEFAULT_WINDOW_SECS: u64 = 86_400;
/// `accounts.check_interval_ms`: each relay node looks every 10 s; counting is a
/// few indexed queries per sending account.
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccounts {
    max_bounce_rate: Option<f64>,
    max_complaint_rate: Option<f64>,
    min_sample: Option<i64>,
    window_secs: Option<u64>,
    check_interval_ms: Option<u64>,
}

/// `[accounts]` validated: when an account is paused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PauseLimits {
    pub max_bounce_rate: f64,
    pub max_complaint_rate: f64,
    pub min_sample: i64,
    pub window: std::time::Duration,
    pub check_interval: std::time::Duration,
}

impl Default for PauseLimits {
    fn default() -> Self {
        Self {
            max_bounce_rate: DEFAULT_MAX_BOUNCE_RATE,
            max_complaint_rate: DEFAULT_MAX_COMPLAINT_RATE,
            min_sample: DEFAULT_MIN_SAMPLE,
            window: std::time::Duration::from_secs(DEFAULT_WINDOW_SECS),
            check_interval: std::time::Duration::from_millis(DEFAULT_CHECK_INTERVAL_MS),
        }
    }
}

fn rate_field(field: &'static str, v: Option<f64>, default: f64) -> Result<f64, ops::ConfigError> {
    let v = v.unwrap_or(default);
    if !(v > 0.0 && v <= 1.0) {
        return Err(ops::invalid(
            field,
            "must be a fraction in (0, 1], e.g. 0.05",
        ));
    }
    Ok(v)
}

/// `[accounts]`: rates in (0, 1], the sample 1..=10^9, the window 60 s..=30 days.
pub fn accounts_section(raw: FileAccounts) -> Result<PauseLimits, ops::ConfigError> {
    Ok(PauseLimits {
        max_bounce_rate: rate_field(
            "accounts.max_bounce_rate",
            raw.max_bounce_rate,
            DEFAULT_MAX_BOUNCE_RATE,
        )?,
        max_complaint_rate: rate_field(
            "accounts.max_complaint_rate",
            raw.max_complaint_rate,
            DEFAULT_MAX_COMPLAINT_RATE,
        )?,
        min_sample: ops::bounded(
            "accounts.min_sample",
            raw.min_sample.unwrap_or(DEFAULT_MIN_SAMPLE),
            1,
            1_000_000_000,
        )?,
        window: std::time::Duration::from_secs(ops::bounded(
            "accounts.window_secs",
            raw.window_secs.unwrap_or(DEFAULT_WINDOW_SECS),
            60,
            30 * 86_400,
        )?),
        check_interval: std::time::Duration::from_millis(ops::bounded(
            "accounts.check_interval_ms",
            raw.check_interval_ms.unwrap_or(DEFAULT_CHECK_INTERVAL_MS),
            10,
            3_600_000,
        )?),
    })
}

/// An account's campaign mail over the pause window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Campaign messages that reached an end (delivered or failed).
    pub sent: i64,
    /// Of them, with a bounce recorded.
    pub bounced: i64,
    /// Of them, with a feedback-loop complaint.
    pub complained: i64,
}

impl Sample {
    pub fn bounce_rate(&self) -> f64 {
        ratio(self.bounced, self.sent)
    }
    pub fn complaint_rate(&self) -> f64 {
        ratio(self.complained, self.sent)
    }
}

fn ratio(n: i64, of: i64) -> f64 {
    if of <= 0 { 0.0 } else { n as f64 / of as f64 }
}

/// `0.006` → `0.6%`: two decimals at most, trailing zeros dropped.
fn percent(x: f64) -> String {
    let text = format!("{:.2}", x * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// The pause reason `sample` calls for under `limits`, if any: complaints first
/// (the graver signal), then bounces; never below the minimum sample.
pub fn decide(sample: &Sample, limits: &PauseLimits, now: DateTime<Utc>) -> Option<String> {
    if sample.sent < limits.min_sample {
        return None;
    }
    let at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    if sample.complaint_rate() > limits.max_complaint_rate {
        return Some(format!(
            "complaint rate {} over {} ({} of {}) at {at}",
            percent(sample.complaint_rate()),
            percent(limits.max_complaint_rate),
            sample.complained,
            sample.sent
        ));
    }
    if sample.bounce_rate() > limits.max_bounce_rate {
        return Some(format!(
            "bounce rate {} over {} ({} of {}) at {at}",
            percent(sample.bounce_rate()),
            percent(limits.max_bounce_rate),
            sample.bounced,
            sample.sent
        ));
    }
    None
}

/// One count of the account's rows since `since` (`sql` takes both, in order).
async fn count_since(db: &mut Db, sql: &str, account: i64, since: &str) -> Result<i64, DbError> {
    Ok(
        crate::row::scalar_int(&db.query(sql, vec![account.into(), since.into()]).await?)
            .unwrap_or(0),
    )
}

/// What the account's campaigns finished since `?2` (account `?1`): a range of
/// `outbound_queue_campaign_state (campaign_id, state, finished_at)` per campaign and
/// state, not every finished row of them.
const SENT_SINCE: &str = "SELECT COUNT(*) FROM outbound_queue q JOIN campaigns c ON c.id = q.campaign_id \
     WHERE c.account_id = ? AND q.state IN ('delivered', 'failed') AND q.finished_at >= ?";

/// The account's sample since `since`.
pub async fn sample(db: &mut Db, account: i64, since: DateTime<Utc>) -> Result<Sample, DbError> {
    let (bounced, complained) = reports(db, account, since).await?;
    let since = crate::queue::ts(since);
    Ok(Sample {
        sent: count_since(db, SENT_SINCE, account, &since).await?,
        bounced,
        complained,
    })
}

/// (bounced, complained) campaign messages of the account since `since`: the
/// report tables only, without counting what was sent (which reads every queue
/// row of the account's campaigns in the window).
pub async fn reports(
    db: &mut Db,
    account: i64,
    since: DateTime<Utc>,
) -> Result<(i64, i64), DbError> {
    let since = crate::queue::ts(since);
    let bounced = count_since(
        db,
        "SELECT COUNT(DISTINCT b.queue_id) FROM outbound_bounces b          JOIN outbound_queue q ON q.id = b.queue_id JOIN campaigns c ON c.id = q.campaign_id          WHERE c.account_id = ? AND b.at >= ?",
        account,
        &since,
    )
    .await?;
    let complained = count_since(
        db,
        "SELECT COUNT(DISTINCT x.queue_id) FROM outbound_complaints x          JOIN outbound_queue q ON q.id = x.queue_id JOIN campaigns c ON c.id = q.campaign_id          WHERE c.account_id = ? AND x.at >= ?",
        account,
        &since,
    )
    .await?;
    Ok((bounced, complained))
}

/// The account's limits and responsible-sending state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub send_rate: Option<f64>,
    pub daily_quota: Option<i64>,
    /// Campaign messages queued today (UTC), counted against the quota.
    pub sent_today: i64,
    pub paused_reason: Option<String>,
    pub paused_at: Option<DateTime<Utc>>,
    pub resumed_at: Option<DateTime<Utc>>,
}

/// The limits and pause state of `account`.
pub async fn status(db: &mut Db, account: i64, now: DateTime<Utc>) -> Result<Status, DbError> {
    let sql = format!(
        "SELECT send_rate, daily_quota, quota_day, quota_used, paused_reason, {}, {}          FROM accounts WHERE id = ?",
        db.as_text("paused_at"),
        db.as_text("resumed_at")
    );
    let rows = db.query(&sql, vec![account.into()]).await?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(Status::default());
    };
    let mut v = r.into_iter();
    let mut next = || v.next().unwrap_or(Val::Null);
    let (rate, quota, day, used, reason, paused_at, resumed_at) =
        (next(), next(), next(), next(), next(), next(), next());
    let today = now.format("%Y-%m-%d").to_string();
    Ok(Status {
        send_rate: real(&rate),
        daily_quota: quota.int(),
        sent_today: if day.text().as_deref() == Some(today.as_str()) {
            used.int().unwrap_or(0)
        } else {
            0
        },
        paused_reason: reason.text(),
        paused_at: paused_at.text().as_deref().and_then(crate::queue::parse_ts),
        resumed_at: resumed_at
            .text()
            .as_deref()
            .and_then(crate::queue::parse_ts),
    })
}

/// A REAL column as f64 (MySQL may hand a DOUBLE back as text).
pub fn real(v: &Val) -> Option<f64> {
    match v {
        Val::Real(r) => Some(*r),
        Val::Int(i) => Some(*i as f64),
        Val::Null => None,
        other => other.text().and_then(|t| t.trim().parse().ok()),
    }
}

/// Why limits are refused.
pub fn check_limits(send_rate: Option<f64>, daily_quota: Option<i64>) -> Result<(), &'static str> {
    if let Some(r) = send_rate
        && !(r.is_finite() && r > 0.0 && r <= 1_000_000.0)
    {
        return Err("--send-rate: messages per second in (0, 1000000]");
    }
    if let Some(q) = daily_quota
        && !(0..=1_000_000_000_000).contains(&q)
    {
        return Err("--daily-quota: 0 to 10^12 messages a day");
    }
    Ok(())
}

/// Sets (Some) or clears (None, with `clear`) the limits of `account`.
pub async fn set_limits(
    db: &mut Db,
    account: i64,
    send_rate: Option<Option<f64>>,
    daily_quota: Option<Option<i64>>,
) -> Result<(), DbError> {
    if let Some(r) = send_rate {
        db.exec(
            "UPDATE accounts SET send_rate = ? WHERE id = ?",
            vec![r.map_or(Val::Null, Val::Real), account.into()],
        )
        .await?;
    }
    if let Some(q) = daily_quota {
        db.exec(
            "UPDATE accounts SET daily_quota = ? WHERE id = ?",
            vec![q.map_or(Val::Null, Val::Int), account.into()],
        )
        .await?;
    }
    Ok(())
}

/// Pauses `account` with `reason` unless it is paused already; whether it was
/// paused now. (The runner pauses its campaigns.)
pub async fn pause(
    db: &mut Db,
    account: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let n = db
        .exec(
            "UPDATE accounts SET paused_reason = ?, paused_at = ?              WHERE id = ? AND paused_reason IS NULL",
            vec![reason.into(), crate::queue::ts(now).into(), account.into()],
        )
        .await?;
    Ok(n > 0)
}

/// Lifts an auto-pause: the reason cleared, the sample restarted from now, and
/// the campaigns the pause stopped resumed (the campaign store's resume path).
/// Returns the campaigns resumed, or None when the account was not paused.
pub async fn resume(
    db: &mut Db,
    account: i64,
    now: DateTime<Utc>,
) -> Result<Option<Vec<i64>>, DbError> {
    let n = db
        .exec(
            "UPDATE accounts SET paused_reason = NULL, paused_at = NULL, resumed_at = ?              WHERE id = ? AND paused_reason IS NOT NULL",
            vec![crate::queue::ts(now).into(), account.into()],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let ids: Vec<i64> = db
        .query(
            "SELECT id FROM campaigns WHERE account_id = ? AND state = 'paused'              AND paused_reason IS NOT NULL ORDER BY id",
            vec![account.into()],
        )
        .await?
        .iter()
        .filter_map(|r| r.first().and_then(Val::int))
        .collect();
    let mut resumed = Vec::with_capacity(ids.len());
    for id in ids {
        match crate::campaign::store::apply(
            db,
            Some(account),
            id,
            crate::campaign::Action::Resume,
            now,
        )
        .await
        {
            Ok(_) => resumed.push(id),
            Err(crate::campaign::store::ActionError::Db(e)) => return Err(e),
            Err(e) => tracing::info!(campaign = id, error = %e, "not resumed"),
        }
        db.exec(
            "UPDATE campaigns SET paused_reason = NULL WHERE id = ?",
            vec![id.into()],
        )
        .await?;
    }
    Ok(Some(resumed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-02T16:00:00Z".parse().unwrap()
    }

    #[test]
    fn pause_decisions_need_the_sample_and_name_the_rate() {
        let l = PauseLimits::default();
        let s = |sent, bounced, complained| Sample {
            sent,
            bounced,
            complained,
        };
        // Below the minimum sample nothing is decided, however bad.
        assert_eq!(decide(&s(499, 499, 499), &l, at()), None);
        // At the threshold: not over it.
        assert_eq!(decide(&s(1000, 50, 3), &l, at()), None);
        assert_eq!(
            decide(&s(1000, 0, 6), &l, at()).unwrap(),
            "complaint rate 0.6% over 0.3% (6 of 1000) at 2026-12-02T16:00:00Z"
        );
        assert_eq!(
            decide(&s(1000, 51, 0), &l, at()).unwrap(),
            "bounce rate 5.1% over 5% (51 of 1000) at 2026-12-02T16:00:00Z"
        );
        // Both over: the complaint rate is named.
        assert!(
            decide(&s(1000, 100, 10), &l, at())
                .unwrap()
                .starts_with("complaint rate 1% over 0.3%")
        );
        assert_eq!(s(0, 0, 0).bounce_rate(), 0.0);
    }

    /// The sample counts the window off the index, without reading the finished
    /// rows before it (a campaign of millions is read every runner tick).
    #[tokio::test]
    async fn the_sent_count_is_a_range_of_the_campaign_state_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = mailstore::StoreUrl::Sqlite(dir.path().join("s.sqlite"));
        let Db::Sqlite(conn) = Db::open(&url, true).await.unwrap() else {
            unreachable!("a SQLite URL opens SQLite");
        };
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {SENT_SINCE}"))
            .unwrap()
            .query_map(rusqlite::params![1, "2026-01-01 00:00:00.000"], |r| {
                r.get(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter().any(|step| step.contains(
                "COVERING INDEX outbound_queue_campaign_state (campaign_id=? AND state=? AND finished_at>?)"
            )),
            "{plan:?}"
        );
    }

    #[test]
    fn pause_limits_are_checked() {
        assert_eq!(
            accounts_section(FileAccounts::default()).unwrap(),
            PauseLimits::default()
        );
        let e = accounts_section(FileAccounts {
            max_complaint_rate: Some(1.5),
            ..FileAccounts::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("accounts.max_complaint_rate"), "{e}");
        assert!(check_limits(Some(0.0), None).is_err());
        assert!(check_limits(Some(f64::NAN), None).is_err());
        assert!(check_limits(None, Some(-1)).is_err());
        assert!(check_limits(Some(2.5), Some(0)).is_ok());
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("ob_") && a.len() == 67);
        assert_eq!(token_sha256(&a).len(), 64);
        assert_ne!(token_sha256(&a), token_sha256(&b));
        // Known vector: SHA-256("abc").
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("press-office"));
        assert!(valid_name("ann@example.com"));
        assert!(!valid_name(""));
        assert!(!valid_name("two words"));
        assert!(!valid_name(&"x".repeat(MAX_NAME + 1)));
    }
}
