//! The campaign runner: what each relay node does every `campaigns.interval`,
//! on its dispatcher's connection, between claims.
//!
//! One tick: (1) scheduled campaigns whose `send_at` has come start running;
//! (2) rows of paused campaigns that came back to the queue (a lease expired, a
//! deferral was recorded) are paused again, paused rows of running campaigns
//! (put back by a node that had not yet seen a resume) queued again, rows of
//! cancelled ones deleted;
//! (3) each running campaign not fully expanded is expanded by the node holding
//! its expansion lease (a compare-and-set on `expand_node`/`expand_instance`/
//! `expand_until`; free when lapsed, NULL or ours), one window of subscribers
//! per transaction while the campaign's backlog has room; (4) running campaigns
//! fully expanded with nothing left in the queue finish.
//!
//! A window is subscribers of the account with `id > expand_cursor`, in id order
//! (no OFFSET: the cursor is the checkpoint, as in listmonk), at most
//! `min(expand_batch, room)` of them; one `INSERT ... SELECT` queues the
//! recipients among them and the same transaction advances the cursor, the
//! recipient count and `next_send_at`. So a node that takes a dead node's
//! expansion over continues exactly after the last commit, and the UNIQUE
//! (campaign_id, subscriber_id) index with INSERT OR IGNORE / INSERT IGNORE makes
//! a second row for a subscriber impossible whatever happens.
//!
//! Rate: with `messages_per_second` R the window's rows are due 1/R apart from
//! `max(now, next_send_at)` (ROW_NUMBER() over the window), so the campaign's rate
//! holds across all nodes without any coordination beyond the database; the
//! per-domain limits of the workers apply on top.
//!
//! Account limits (schema 8): the same window also reads its account's row (on
//! MySQL locked, after the campaign's): with a `send_rate` the window's rows are
//! spaced at the slower of the two rates from the latest of now, the campaign's
//! and the account's `next_send_at`, and both move past the window, so all of an
//! account's running campaigns together stay under its rate, on any number of
//! nodes ([`pace`]). With a `daily_quota` a window holds at most what is left of
//! the UTC day's quota (`quota_day`/`quota_used` count the rows queued) and an
//! exhausted quota expands nothing until the next day: the campaign is slowed,
//! not failed ([`quota_room`]).
//!
//! Auto-pause: every `accounts.check_interval` a node counts the trailing window
//! of each sending account (`accounts::sample`) and pauses an account past a
//! threshold (`accounts::decide`); every tick the running and scheduled campaigns
//! of a paused account are paused through the campaign store's pause path, with
//! the account's reason as their `paused_reason`.
//!
//! Campaign rows have priority -1: the claim takes higher priority first, so an
//! ordinary message (priority 0) due now is claimed before any of a campaign's
//! backlog. Notifications are never starved by a newsletter.
//!
//! Owns: the campaign expansion lease, `expand_*` columns, `recipients`,
//! `next_send_at`, the scheduled → running and running → finished transitions.
//! Must not: send anything, or touch rows being sent (`sending`: their node
//! records them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::State;
use super::store::{MAX_SPAN_MS, PARAMS_MYSQL, PARAMS_SQLITE, interval_secs, spaced_time};
use crate::config::Campaigns;
use crate::db::{Db, DbError, Val};
use crate::queue::{parse_ts, ts};
use crate::row::{self, Column, Fields, RowError};

/// Priority of campaign rows: below ordinary mail's 0 (see the module comment).
pub const CAMPAIGN_PRIORITY: i64 = -1;
/// How long one tick may go on expanding before it returns to the dispatcher
/// loop (which must keep claiming, recording and heartbeating). A window that
/// started runs to its end, bounded by `campaigns.expand_batch`.
const TICK_BUDGET: Duration = Duration::from_millis(300);
/// Running campaigns looked at per tick (the rest wait for the next).
const MAX_CAMPAIGNS_PER_TICK: i64 = 64;
/// Cancelled campaigns stay in the stopped-campaign cache this long: rows of
/// theirs can only still be in flight shortly after the cancel.
const CANCELLED_CACHE_SECS: i64 = 3_600;

/// When this process last counted the accounts' bounce and complaint rates (Unix
/// ms): a schedule only, the decision itself is all in the database.
static LAST_PAUSE_CHECK_MS: AtomicI64 = AtomicI64::new(0);

/// What is left of an account's daily quota on `today` (None: no quota): a
/// `quota_used` counted on another day counts nothing.
pub fn quota_room(quota: Option<i64>, day: Option<&str>, used: i64, today: &str) -> Option<i64> {
    let used = if day == Some(today) { used } else { 0 };
    quota.map(|q| q.saturating_sub(used).max(0))
}

/// The first due time and the spacing of a window: the slower of the campaign's
/// and the account's rate, from the latest of now and both `next_send_at`s (the
/// account's only counts when it has a rate).
pub fn pace(
    now: DateTime<Utc>,
    campaign_next: Option<DateTime<Utc>>,
    campaign_rate: Option<f64>,
    account_next: Option<DateTime<Utc>>,
    account_rate: Option<f64>,
) -> (DateTime<Utc>, f64) {
    let account_interval = interval_secs(account_rate);
    let mut start = campaign_next.filter(|t| *t > now).unwrap_or(now);
    if account_interval > 0.0
        && let Some(a) = account_next
    {
        start = start.max(a);
    }
    (start, interval_secs(campaign_rate).max(account_interval))
}

/// An account's limits as a window reads them.
struct AccountPace {
    rate: Option<f64>,
    quota: Option<i64>,
    day: Option<String>,
    used: i64,
    next: Option<DateTime<Utc>>,
}

/// Who runs the runner: the dispatcher's node and process.
pub struct Runner<'a> {
    pub cfg: &'a Campaigns,
    pub node: &'a str,
    pub instance: &'a str,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub started: u64,
    pub expanded: u64,
    pub finished: u64,
    /// Campaigns paused or cancelled (recently): the dispatcher's cache.
    pub stopped: HashMap<i64, State>,
}

/// A running campaign to expand.
#[derive(Debug)]
struct Expandable {
    id: i64,
    account_id: i64,
    template_id: i64,
    sender: String,
    rate: Option<f64>,
    expand_node: Option<String>,
    expand_until: Option<DateTime<Utc>>,
}

impl Expandable {
    const COLUMNS: &'static [Column] = &[
        Column::plain("id"),
        Column::plain("account_id"),
        Column::plain("template_id"),
        Column::plain("sender"),
        Column::plain("messages_per_second"),
        Column::plain("expand_node"),
        Column::text("expand_until"),
    ];

    fn from_row(row: Vec<Val>) -> Result<Self, RowError> {
        let rate = row.get(4).and_then(|v| match v {
            Val::Real(r) => Some(*r),
            Val::Null => None,
            other => other.text().and_then(|t| t.trim().parse().ok()),
        });
        let mut f = Fields::new(Self::COLUMNS, row)?;
        Ok(Self {
            id: f.int("id")?,
            account_id: f.int("account_id")?,
            template_id: f.int("template_id")?,
            sender: f.text("sender")?,
            rate,
            expand_node: f.opt_text("expand_node")?,
            expand_until: f.opt_text("expand_until")?.and_then(|t| parse_ts(&t)),
        })
    }
}

/// One window's outcome.
enum Window {
    /// This many rows queued; more subscribers may follow.
    Queued(u64),
    /// No subscribers past the cursor: the campaign is fully expanded.
    Done,
    /// The lease is no longer ours (another node took it over).
    Lost,
    /// The account's daily quota is used up: nothing until the next day.
    Quota,
}

/// Campaign ids per statement of the sweep.
const SWEEP_CHUNK_IDS: usize = 500;

/// Ids of the campaigns matching `condition` (off `campaigns_state`).
async fn campaign_ids(db: &mut Db, condition: &str, params: Vec<Val>) -> Result<Vec<i64>, DbError> {
    Ok(db
        .query(
            &format!("SELECT id FROM campaigns WHERE {condition} ORDER BY id"),
            params,
        )
        .await?
        .iter()
        .filter_map(|r| r.first().and_then(Val::int))
        .collect())
}

/// Rows of paused campaigns back in the queue are paused again; rows of
/// cancelled ones deleted. Both by the (campaign_id, state) index: the
/// campaigns' ids are read first and named in the statements. (With
/// `campaign_id IN (SELECT …)` MariaDB's single-table UPDATE and DELETE read
/// the whole queue, every tick, also when no campaign was stopped: at a
/// backlog of 40,000 rows that was ~7% of its CPU during a relay run.)
async fn sweep(db: &mut Db, now: DateTime<Utc>) -> Result<(), DbError> {
    let paused = campaign_ids(db, "state = 'paused'", Vec::new()).await?;
    for chunk in paused.chunks(SWEEP_CHUNK_IDS) {
        let mut params: Vec<Val> = vec![ts(now).into()];
        params.extend(chunk.iter().map(|&id| Val::Int(id)));
        db.exec(
            &format!(
                "UPDATE outbound_queue SET state = 'paused', updated_at = ? \
                 WHERE campaign_id IN ({}) AND state IN ('queued', 'deferred')",
                Db::placeholders(chunk.len())
            ),
            params,
        )
        .await?;
    }
    // And the other way: a node whose stopped-campaign cache was stale when a
    // campaign was resumed puts the rows it had claimed back as paused;
    // those of a running campaign are due again. (Off the state indexes:
    // paused rows are few.)
    db.exec(
        "UPDATE outbound_queue SET state = CASE WHEN attempts > 0 THEN 'deferred' \
         ELSE 'queued' END, updated_at = ? WHERE state = 'paused' AND campaign_id IN \
         (SELECT id FROM campaigns WHERE state = 'running')",
        vec![ts(now).into()],
    )
    .await?;
    let since = ts(now - chrono::Duration::seconds(CANCELLED_CACHE_SECS));
    let cancelled = campaign_ids(
        db,
        "state = 'cancelled' AND updated_at >= ?",
        vec![since.into()],
    )
    .await?;
    for chunk in cancelled.chunks(SWEEP_CHUNK_IDS) {
        db.exec(
            &format!(
                "DELETE FROM outbound_queue WHERE campaign_id IN ({}) \
                 AND state IN ('queued', 'deferred', 'paused')",
                Db::placeholders(chunk.len())
            ),
            chunk.iter().map(|&id| Val::Int(id)).collect(),
        )
        .await?;
    }
    Ok(())
}

impl Runner<'_> {
    /// One tick (see the module comment).
    pub async fn tick(&self, db: &mut Db, now: DateTime<Utc>) -> Result<Report, DbError> {
        let mut report = Report {
            started: db
                .exec(
                    "UPDATE campaigns SET state = 'running', started_at = COALESCE(started_at, ?), \
                     updated_at = ? WHERE state = 'scheduled' AND send_at <= ?",
                    vec![ts(now).into(), ts(now).into(), ts(now).into()],
                )
                .await?,
            ..Report::default()
        };
        sweep(db, now).await?;
        self.pauses(db, now).await?;
        let deadline = Instant::now() + TICK_BUDGET;
        let sql = format!(
            "SELECT {} FROM campaigns WHERE state = 'running' AND expand_done = 0 \
             ORDER BY id LIMIT ?",
            row::select_list(db, Expandable::COLUMNS)
        );
        let campaigns: Vec<Expandable> = db
            .query(&sql, vec![MAX_CAMPAIGNS_PER_TICK.into()])
            .await?
            .into_iter()
            .filter_map(|r| Expandable::from_row(r).ok())
            .collect();
        for c in campaigns {
            if Instant::now() >= deadline {
                break;
            }
            report.expanded += self.expand(db, &c, now, deadline).await?;
        }
        report.finished = db
            .exec(
                "UPDATE campaigns SET state = 'finished', finished_at = ?, updated_at = ? \
                 WHERE state = 'running' AND expand_done = 1 AND NOT EXISTS \
                 (SELECT 1 FROM outbound_queue q WHERE q.campaign_id = campaigns.id \
                  AND q.state IN ('queued', 'deferred', 'sending', 'paused'))",
                vec![ts(now).into(), ts(now).into()],
            )
            .await?;
        if report.finished > 0 {
            info!(campaigns = report.finished, "campaign finished");
        }
        let since = ts(now - chrono::Duration::seconds(CANCELLED_CACHE_SECS));
        for r in db
            .query(
                "SELECT id, state FROM campaigns WHERE state = 'paused' \
                 OR (state = 'cancelled' AND updated_at >= ?)",
                vec![since.into()],
            )
            .await?
        {
            if let (Some(id), Some(state)) = (
                r.first().and_then(Val::int),
                r.get(1)
                    .and_then(Val::text)
                    .as_deref()
                    .and_then(State::parse),
            ) {
                report.stopped.insert(id, state);
            }
        }
        Ok(report)
    }

    /// The auto-pause (see the module comment).
    async fn pauses(&self, db: &mut Db, now: DateTime<Utc>) -> Result<(), DbError> {
        let limits = &self.cfg.pause;
        let now_ms = now.timestamp_millis();
        let every = i64::try_from(limits.check_interval.as_millis()).unwrap_or(i64::MAX);
        let last = LAST_PAUSE_CHECK_MS.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= every
            && LAST_PAUSE_CHECK_MS
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let window = chrono::Duration::from_std(limits.window).unwrap_or_default();
            let since = now - window;
            // Sending accounts: a campaign running, or finished within the window
            // (complaints come in days after the last message).
            let rows = db
                .query(
                    &format!(
                        "SELECT a.id, {} FROM accounts a WHERE a.paused_reason IS NULL AND EXISTS                          (SELECT 1 FROM campaigns c WHERE c.account_id = a.id AND                           (c.state = 'running' OR (c.state = 'finished' AND c.finished_at >= ?)))                          ORDER BY a.id LIMIT ?",
                        db.as_text("a.resumed_at")
                    ),
                    vec![ts(since).into(), MAX_CAMPAIGNS_PER_TICK.into()],
                )
                .await?;
            for r in rows {
                let Some(account) = r.first().and_then(Val::int) else {
                    continue;
                };
                let from = r
                    .get(1)
                    .and_then(Val::text)
                    .as_deref()
                    .and_then(parse_ts)
                    .map_or(since, |t| t.max(since));
                let sample = crate::accounts::sample(db, account, from).await?;
                if let Some(reason) = crate::accounts::decide(&sample, limits, now)
                    && crate::accounts::pause(db, account, &reason, now).await?
                {
                    warn!(account, %reason, "account paused");
                }
            }
        }
        // Campaigns of paused accounts: paused through the one pause path.
        let stop = db
            .query(
                "SELECT c.id, a.paused_reason FROM campaigns c JOIN accounts a ON a.id = c.account_id                  WHERE c.state IN ('running', 'scheduled') AND a.paused_reason IS NOT NULL                  ORDER BY c.id LIMIT ?",
                vec![MAX_CAMPAIGNS_PER_TICK.into()],
            )
            .await?;
        for r in stop {
            let (Some(id), Some(reason)) =
                (r.first().and_then(Val::int), r.get(1).and_then(Val::text))
            else {
                continue;
            };
            match super::store::apply(db, None, id, super::Action::Pause, now).await {
                Ok(_) => {
                    db.exec(
                        "UPDATE campaigns SET paused_reason = ? WHERE id = ?",
                        vec![reason.into(), id.into()],
                    )
                    .await?;
                    info!(campaign = id, "campaign paused with its account");
                }
                Err(super::store::ActionError::Db(e)) => return Err(e),
                Err(e) => debug!(campaign = id, error = %e, "not paused"),
            }
        }
        Ok(())
    }

    /// Takes or renews the expansion lease of `c`, then expands windows while the
    /// backlog has room and the tick has time. Returns the rows queued.
    async fn expand(
        &self,
        db: &mut Db,
        c: &Expandable,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<u64, DbError> {
        let lease = chrono::Duration::from_std(self.cfg.lease).unwrap_or_default();
        let taken = db
            .exec(
                "UPDATE campaigns SET expand_node = ?, expand_instance = ?, expand_until = ? \
                 WHERE id = ? AND state = 'running' AND expand_done = 0 AND \
                 (expand_until IS NULL OR expand_until < ? OR \
                  (expand_node = ? AND expand_instance = ?))",
                vec![
                    self.node.into(),
                    self.instance.into(),
                    ts(now + lease).into(),
                    c.id.into(),
                    ts(now).into(),
                    self.node.into(),
                    self.instance.into(),
                ],
            )
            .await?;
        if taken == 0 {
            // Another node's, still valid (the window checks ownership again
            // under the row lock, so a stale MySQL count cannot mislead it).
            return Ok(0);
        }
        if let Some(other) = c.expand_node.as_deref().filter(|n| *n != self.node)
            && c.expand_until.is_some_and(|u| u < now)
        {
            info!(
                campaign = c.id,
                from = other,
                "took over a campaign's expansion (its lease had lapsed)"
            );
        }
        let backlog = i64::try_from(self.cfg.backlog).unwrap_or(i64::MAX);
        let waiting = row::scalar_int(
            &db.query(
                "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = ? \
                 AND state IN ('queued', 'deferred', 'sending')",
                vec![c.id.into()],
            )
            .await?,
        )
        .unwrap_or(0);
        let mut room = backlog.saturating_sub(waiting);
        let batch = i64::try_from(self.cfg.expand_batch).unwrap_or(i64::MAX);
        let mut queued = 0u64;
        while room > 0 && Instant::now() < deadline {
            match self.window(db, c, room.min(batch), Utc::now()).await? {
                Window::Queued(n) => {
                    queued += n;
                    room = room.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Window::Done => {
                    info!(campaign = c.id, "campaign fully expanded");
                    break;
                }
                Window::Lost => {
                    warn!(campaign = c.id, "lost the expansion lease to another node");
                    break;
                }
                Window::Quota => {
                    debug!(campaign = c.id, "the account's daily quota is used up");
                    break;
                }
            }
        }
        if queued > 0 {
            debug!(campaign = c.id, rows = queued, "expanded");
        }
        Ok(queued)
    }

    /// One window in one transaction.
    async fn window(
        &self,
        db: &mut Db,
        c: &Expandable,
        size: i64,
        now: DateTime<Utc>,
    ) -> Result<Window, DbError> {
        db.begin().await?;
        match self.window_in_tx(db, c, size, now).await {
            Ok(Window::Lost) => {
                db.rollback().await;
                Ok(Window::Lost)
            }
            Ok(w) => {
                db.commit().await?;
                Ok(w)
            }
            Err(e) => {
                db.rollback().await;
                Err(e)
            }
        }
    }

    async fn window_in_tx(
        &self,
        db: &mut Db,
        c: &Expandable,
        size: i64,
        now: DateTime<Utc>,
    ) -> Result<Window, DbError> {
        let mysql = db.is_mysql();
        let lock = if mysql { " FOR UPDATE" } else { "" };
        // The lease fences the window: the cursor is read (and on MySQL the row
        // locked) only while the campaign is still ours and running.
        let mine = db
            .query(
                &format!(
                    "SELECT expand_cursor, {} FROM campaigns WHERE id = ? AND state = 'running' \
                     AND expand_done = 0 AND expand_node = ? AND expand_instance = ?{lock}",
                    db.as_text("next_send_at")
                ),
                vec![c.id.into(), self.node.into(), self.instance.into()],
            )
            .await?;
        let Some(mine) = mine.into_iter().next() else {
            return Ok(Window::Lost);
        };
        let cursor = mine.first().and_then(Val::int).unwrap_or(0);
        let next_send = mine
            .get(1)
            .and_then(Val::text)
            .as_deref()
            .and_then(parse_ts);
        let account = self.account_pace(db, c.account_id, lock).await?;
        let today = now.format("%Y-%m-%d").to_string();
        let room = quota_room(account.quota, account.day.as_deref(), account.used, &today);
        if room == Some(0) {
            return Ok(Window::Quota);
        }
        let size = room.map_or(size, |r| r.min(size));
        let span = db
            .query(
                "SELECT COUNT(*), MAX(id) FROM (SELECT id FROM subscribers \
                 WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?) w",
                vec![c.account_id.into(), cursor.into(), size.into()],
            )
            .await?;
        let first = span.first();
        let looked_at = first
            .and_then(|r| r.first())
            .and_then(Val::int)
            .unwrap_or(0);
        let Some(last) = first
            .and_then(|r| r.get(1))
            .and_then(Val::int)
            .filter(|_| looked_at > 0)
        else {
            db.exec(
                "UPDATE campaigns SET expand_done = 1, updated_at = ? WHERE id = ?",
                vec![ts(now).into(), c.id.into()],
            )
            .await?;
            return Ok(Window::Done);
        };
        let (start, interval) = pace(now, next_send, c.rate, account.next, account.rate);
        let (due, due_params) =
            spaced_time(db, "ROW_NUMBER() OVER (ORDER BY s.id)", start, interval);
        let (ignore, params_sql) = if mysql {
            ("INSERT IGNORE", PARAMS_MYSQL)
        } else {
            ("INSERT OR IGNORE", PARAMS_SQLITE)
        };
        // The recipient rule: a confirmed member of an include list, or any member
        // not unsubscribed of a single opt-in one; on no exclude list (any
        // status); not blocklisted; not on the suppression list. EXISTS keeps a
        // subscriber on two include lists to one row.
        let sql = format!(
            "{ignore} INTO outbound_queue (sender, recipient, template_id, params, priority, tag, \
             campaign_id, subscriber_id, next_attempt_at, pool) \
             SELECT ?, s.email, ?, {params_sql}, ?, ?, ?, s.id, {due}, \
             (SELECT cp.pool FROM campaigns cp WHERE cp.id = ?) \
             FROM subscribers s \
             WHERE s.account_id = ? AND s.id > ? AND s.id <= ? AND s.status = 'enabled' \
             AND EXISTS (SELECT 1 FROM campaign_lists cl \
               JOIN list_members m ON m.list_id = cl.list_id AND m.subscriber_id = s.id \
               JOIN lists l ON l.id = cl.list_id \
               WHERE cl.campaign_id = ? AND cl.kind = 'include' \
               AND (m.status = 'confirmed' OR (l.opt_in = 'single' AND m.status <> 'unsubscribed'))) \
             AND NOT EXISTS (SELECT 1 FROM campaign_lists cx \
               JOIN list_members mx ON mx.list_id = cx.list_id AND mx.subscriber_id = s.id \
               WHERE cx.campaign_id = ? AND cx.kind = 'exclude') \
             AND NOT EXISTS (SELECT 1 FROM suppression x WHERE x.address = s.email_key) \
             ORDER BY s.id"
        );
        let mut params: Vec<Val> = vec![
            c.sender.as_str().into(),
            c.template_id.into(),
            CAMPAIGN_PRIORITY.into(),
            format!("campaign:{}", c.id).into(),
            c.id.into(),
        ];
        params.extend(due_params);
        // The campaign's sending pool, copied to each row (the subquery above).
        params.push(c.id.into());
        params.extend([
            c.account_id.into(),
            cursor.into(),
            last.into(),
            c.id.into(),
            c.id.into(),
        ]);
        let queued = db.exec(&sql, params).await?;
        let next = start
            + chrono::Duration::milliseconds(
                (interval * queued as f64 * 1000.0).min(MAX_SPAN_MS) as i64
            );
        db.exec(
            "UPDATE campaigns SET expand_cursor = ?, recipients = recipients + ?, \
             next_send_at = ?, updated_at = ? WHERE id = ?",
            vec![
                last.into(),
                i64::try_from(queued).unwrap_or(i64::MAX).into(),
                ts(next).into(),
                ts(now).into(),
                c.id.into(),
            ],
        )
        .await?;
        let used = if account.day.as_deref() == Some(today.as_str()) {
            account.used
        } else {
            0
        };
        let account_next = (account.rate.is_some()).then(|| ts(next));
        db.exec(
            "UPDATE accounts SET quota_day = ?, quota_used = ?,              next_send_at = COALESCE(?, next_send_at) WHERE id = ?",
            vec![
                today.into(),
                used.saturating_add(i64::try_from(queued).unwrap_or(i64::MAX))
                    .into(),
                account_next.into(),
                c.account_id.into(),
            ],
        )
        .await?;
        Ok(Window::Queued(queued))
    }

    /// The account's limits, its row locked on MySQL (`lock`) until the window
    /// commits.
    async fn account_pace(
        &self,
        db: &mut Db,
        account: i64,
        lock: &str,
    ) -> Result<AccountPace, DbError> {
        let rows = db
            .query(
                &format!(
                    "SELECT send_rate, daily_quota, quota_day, quota_used, {} FROM accounts                      WHERE id = ?{lock}",
                    db.as_text("next_send_at")
                ),
                vec![account.into()],
            )
            .await?;
        let r = rows.into_iter().next().unwrap_or_default();
        let get = |i: usize| r.get(i).cloned().unwrap_or(Val::Null);
        Ok(AccountPace {
            rate: crate::accounts::real(&get(0)).filter(|r| *r > 0.0),
            quota: get(1).int(),
            day: get(2).text(),
            used: get(3).int().unwrap_or(0),
            next: get(4).text().as_deref().and_then(parse_ts),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-12-02T{s}Z").parse().unwrap()
    }

    #[test]
    fn the_quota_counts_only_today() {
        assert_eq!(quota_room(None, None, 0, "2026-12-02"), None);
        assert_eq!(
            quota_room(Some(10), Some("2026-12-02"), 4, "2026-12-02"),
            Some(6)
        );
        assert_eq!(
            quota_room(Some(10), Some("2026-12-02"), 12, "2026-12-02"),
            Some(0)
        );
        // Yesterday's use is gone.
        assert_eq!(
            quota_room(Some(10), Some("2026-12-01"), 10, "2026-12-02"),
            Some(10)
        );
        assert_eq!(quota_room(Some(0), None, 0, "2026-12-02"), Some(0));
    }

    #[test]
    fn the_slower_rate_and_the_latest_next_time_win() {
        let now = t("10:00:00");
        // No limits: now, no spacing.
        assert_eq!(pace(now, None, None, None, None), (now, 0.0));
        // The campaign's own schedule ahead of now.
        assert_eq!(
            pace(now, Some(t("10:00:05")), Some(10.0), None, None),
            (t("10:00:05"), 0.1)
        );
        // The account's rate is slower and its schedule later: it wins.
        assert_eq!(
            pace(
                now,
                Some(t("10:00:05")),
                Some(10.0),
                Some(t("10:01:00")),
                Some(2.0)
            ),
            (t("10:01:00"), 0.5)
        );
        // A next time of the account without a rate (left from before) is ignored.
        assert_eq!(pace(now, None, None, Some(t("11:00:00")), None), (now, 0.0));
        // A past schedule is now.
        assert_eq!(
            pace(
                now,
                Some(t("09:00:00")),
                None,
                Some(t("09:30:00")),
                Some(1.0)
            ),
            (now, 1.0)
        );
    }
}

/// The sweep's reads, on a private MariaDB.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod sweep_plan_tests {
    use super::*;

    /// Index and table rows this session has read so far.
    async fn rows_read(db: &mut Db) -> i64 {
        db.query("SHOW SESSION STATUS LIKE 'Handler_read%'", Vec::new())
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.get(1).and_then(Val::int))
            .sum()
    }

    async fn count(db: &mut Db, sql: &str) -> i64 {
        row::scalar_int(&db.query(sql, Vec::new()).await.unwrap()).unwrap()
    }

    #[test]
    fn the_sweep_reads_the_stopped_campaigns_rows_not_the_whole_queue() {
        crate::db::on_mariadb(async |_, mut db| {
            db.exec(
                "INSERT INTO campaigns (id, account_id, name, template_id, sender, state) \
                 VALUES (1, 1, 'p', 1, 's@x.test', 'paused'), \
                 (2, 1, 'c', 1, 's@x.test', 'cancelled'), (3, 1, 'r', 1, 's@x.test', 'running')",
                Vec::new(),
            )
            .await
            .unwrap();
            // 3,000 queued rows of no campaign; ten queued of each stopped
            // campaign; five paused of the running one (resumed since).
            db.exec("SET SESSION max_recursive_iterations = 100000", Vec::new())
                .await
                .unwrap();
            db.exec(
                "INSERT INTO outbound_queue (sender, recipient, body, campaign_id, \
                 subscriber_id, state) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL \
                 SELECT i + 1 FROM n WHERE i < 3025) SELECT 's@x.test', \
                 CONCAT('r', i, '@y.test'), 'b', CASE WHEN i <= 3000 THEN NULL \
                 WHEN i <= 3010 THEN 1 WHEN i <= 3020 THEN 2 ELSE 3 END, i, \
                 IF(i > 3020, 'paused', 'queued') FROM n",
                Vec::new(),
            )
            .await
            .unwrap();
            db.exec("ANALYZE TABLE outbound_queue", Vec::new())
                .await
                .unwrap();
            let before = rows_read(&mut db).await;
            sweep(&mut db, Utc::now()).await.unwrap();
            let read = rows_read(&mut db).await - before;
            // The stopped campaigns' rows and the paused ones, plus the campaign
            // look-ups: tens of rows, where `IN (SELECT …)` read all 3,025.
            assert!(read < 200, "rows read by one sweep: {read}");
            let state = |c: i64| {
                format!(
                    "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {c} \
                     AND state = 'paused'"
                )
            };
            assert_eq!(count(&mut db, &state(1)).await, 10);
            assert_eq!(
                count(
                    &mut db,
                    "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = 2"
                )
                .await,
                0
            );
            assert_eq!(count(&mut db, &state(3)).await, 0);
            assert_eq!(
                count(
                    &mut db,
                    "SELECT COUNT(*) FROM outbound_queue WHERE state = 'queued'"
                )
                .await,
                3005
            );
        });
    }
}
