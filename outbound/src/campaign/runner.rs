//! The campaign runner: what each relay node does every `campaigns.interval`,
//! on its dispatcher's connection, between claims.
//!
//! One tick: (1) scheduled campaigns whose `send_at` has come start running;
//! (2) rows of paused campaigns that came back to the queue (a lease expired, a
//! deferral was recorded) are paused again, rows of cancelled ones deleted;
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
//! Campaign rows have priority -1: the claim takes higher priority first, so an
//! ordinary message (priority 0) due now is claimed before any of a campaign's
//! backlog. Notifications are never starved by a newsletter.
//!
//! Owns: the campaign expansion lease, `expand_*` columns, `recipients`,
//! `next_send_at`, the scheduled → running and running → finished transitions.
//! Must not: send anything, or touch rows being sent (`sending`: their node
//! records them).

use std::collections::HashMap;
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
        self.sweep(db, now).await?;
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

    /// Rows of paused campaigns back in the queue are paused again; rows of
    /// cancelled ones deleted. Both by the (campaign_id, state) index.
    async fn sweep(&self, db: &mut Db, now: DateTime<Utc>) -> Result<(), DbError> {
        db.exec(
            "UPDATE outbound_queue SET state = 'paused', updated_at = ? \
             WHERE state IN ('queued', 'deferred') AND campaign_id IN \
             (SELECT id FROM campaigns WHERE state = 'paused')",
            vec![ts(now).into()],
        )
        .await?;
        db.exec(
            "DELETE FROM outbound_queue WHERE state IN ('queued', 'deferred', 'paused') \
             AND campaign_id IN (SELECT id FROM campaigns WHERE state = 'cancelled' \
             AND updated_at >= ?)",
            vec![ts(now - chrono::Duration::seconds(CANCELLED_CACHE_SECS)).into()],
        )
        .await?;
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
        let start = next_send.filter(|t| *t > now).unwrap_or(now);
        let interval = interval_secs(c.rate);
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
        Ok(Window::Queued(queued))
    }
}
