//! The queue tables (`schema/*/0002_outbound.sql`): claiming with leases, recording
//! attempts, heartbeats, templates, the suppression list, and the read-only views
//! behind `outbound stats` and `outbound nodes`.
//!
//! Owns: every SQL statement the relay runs. Claims are `SELECT … FOR UPDATE SKIP
//! LOCKED` on MySQL (several nodes claim at once without waiting on each other) and
//! one `UPDATE … RETURNING` under SQLite's single writer. A claimed row is
//! `state = 'sending'` with `lease_node`/`lease_instance`/`lease_until`: a lease
//! belongs to one process of a node (its instance id), so two processes sharing a
//! node id, or a process and its crashed predecessor, never renew, release or record
//! each other's rows. Results are written only while the row is still leased to this
//! process (fencing), so one that lost its lease cannot overwrite the newer owner's
//! outcome. The node row (`outbound_nodes`) is taken by compare-and-set on its
//! instance id and last heartbeat, so two processes cannot both own it.
//! Must not: decide outcomes or schedules (the dispatcher does), nor what a bounce
//! calls for (`bounce_policy` does; this module runs the SQL its verdict asks for).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::bounce_policy::{self, Source, Suppression};
use crate::db::{Db, DbError, Val};
use crate::template::{Template, TransferEncoding};

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC: the format of every time column.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

pub fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// A claimed queue row.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub created: DateTime<Utc>,
    pub sender: String,
    pub recipient: String,
    pub body: Option<Vec<u8>>,
    pub template_id: Option<i64>,
    pub params: Option<String>,
    pub attempts: u32,
    pub delay_notified: bool,
}

/// What happened to one recipient in one attempt (the delivery log's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Delivered,
    Deferred,
    Failed,
    Suppressed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
        }
    }
}

/// One attempt's record: a delivery-log row and the queue row's new state.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub queue_id: i64,
    pub recipient: String,
    pub outcome: Outcome,
    pub mx: Option<String>,
    pub code: Option<u16>,
    pub status: Option<String>,
    pub text: String,
    pub at: DateTime<Utc>,
    /// For `Deferred`: when to try again.
    pub next_attempt: Option<DateTime<Utc>>,
    /// A "delayed" DSN went to the sender with this attempt.
    pub delay_notified: bool,
}

/// A row to add to the queue (a DSN for an original sender).
#[derive(Debug, Clone)]
pub struct NewRow {
    pub sender: String,
    pub recipient: String,
    pub body: Vec<u8>,
    pub tag: &'static str,
}

/// What one intake pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntakeReport {
    pub scanned: usize,
    pub bounces: usize,
    pub unsubscribes: usize,
    pub forged: usize,
    pub suppressed: usize,
}

/// Settings of an intake pass.
pub struct Intake<'a> {
    pub verp: &'a crate::verp::Verp,
    pub node: &'a str,
    /// What the bounce policy decides by.
    pub policy: bounce_policy::Settings<'a>,
}

/// A queue row's `state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    Queued,
    Sending,
    Deferred,
    Delivered,
    Failed,
    Suppressed,
}

impl RowState {
    /// The state as stored; None for text this relay never writes.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "sending" => Self::Sending,
            "deferred" => Self::Deferred,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            "suppressed" => Self::Suppressed,
            _ => return None,
        })
    }
}

/// A relay node as its heartbeat row shows it.
#[derive(Debug, Clone)]
pub struct Node {
    pub node_id: String,
    /// The process that owns the row (random per process; `''` before schema 3).
    pub instance_id: String,
    pub hostname: String,
    pub pid: i64,
    pub threads: i64,
    pub heartbeat_secs: i64,
    pub started_at: String,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// `heartbeat_at` exactly as stored, for compare-and-set.
    pub heartbeat_text: String,
    /// Set by a clean stop.
    pub stopped_at: Option<DateTime<Utc>>,
}

/// Which leased rows [`Queue::release`] returns to the queue.
#[derive(Debug, Clone, Copy)]
pub enum Leases<'a> {
    /// Every lease that ended before this time (a node that died).
    ExpiredBefore(DateTime<Utc>),
    /// This process's own (a clean stop).
    Own { node: &'a str, instance: &'a str },
    /// The node's leases held by any other process of it: a predecessor that
    /// crashed (taken back at start, once the node row is ours).
    Predecessors { node: &'a str, instance: &'a str },
}

/// What a heartbeat found.
#[derive(Debug, Clone)]
pub enum Beat {
    /// The node row is still ours; this many expired leases were taken back.
    Ours { took_back: u64 },
    /// Another process has taken the node row over (it judged this one dead).
    TakenOver(Node),
}

/// What `outbound stats` prints.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub by_state: Vec<(String, i64)>,
    pub log_last_minute: HashMap<String, i64>,
    pub log_total: HashMap<String, i64>,
    pub first_delivery: Option<DateTime<Utc>>,
    pub last_delivery: Option<DateTime<Utc>>,
}

pub struct Queue {
    db: Db,
}

async fn insert_row(db: &mut Db, row: &NewRow) -> Result<u64, DbError> {
    db.exec(
        "INSERT INTO outbound_queue (sender, recipient, body, tag) VALUES (?, ?, ?, ?)",
        vec![
            row.sender.as_str().into(),
            row.recipient.as_str().into(),
            Val::Bytes(row.body.clone()),
            row.tag.into(),
        ],
    )
    .await
}

/// Adds an address to the suppression list unless it is there already (the first
/// reason stays). Returns whether it was added.
async fn suppress(
    db: &mut Db,
    mysql: bool,
    address: &str,
    reason: &str,
    source: Source,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let ignore = if mysql {
        "INSERT IGNORE"
    } else {
        "INSERT OR IGNORE"
    };
    Ok(db
        .exec(
            &format!("{ignore} INTO suppression (address, reason, source, created_at) VALUES (?, ?, ?, ?)"),
            vec![
                address.to_ascii_lowercase().into(),
                reason.chars().take(1000).collect::<String>().into(),
                source.as_str().into(),
                ts(now).into(),
            ],
        )
        .await?
        > 0)
}

/// A verified bounce that is a failure, about one queue row.
struct BounceRecord<'a> {
    queue_id: i64,
    /// `new_mail.mail_id` of the bounce message.
    mail_id: i64,
    /// The row's recipient, lowercased.
    recipient: &'a str,
    failure: &'a bounce_policy::Failure,
}

/// The SQL a bounce failure asks for: the bounce recorded, the row failed, the
/// delivery log, the suppression entry (counting soft bounces first when the policy
/// needs the count, so the count includes this one) and the sender's DSN. Returns
/// whether the address was newly suppressed.
async fn record_bounce(
    db: &mut Db,
    mysql: bool,
    node: &str,
    b: &BounceRecord<'_>,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let f = b.failure;
    db.exec(
        "INSERT INTO outbound_bounces (at, queue_id, address, class, status, text, mail_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        vec![
            ts(now).into(),
            b.queue_id.into(),
            b.recipient.into(),
            f.class.as_str().into(),
            f.status.clone().into(),
            f.diagnostic.clone().into(),
            b.mail_id.into(),
        ],
    )
    .await?;
    db.exec(
        "UPDATE outbound_queue SET state = 'failed', last_code = NULL, last_status = ?, \
         last_text = ?, last_mx = 'bounce', updated_at = ?, finished_at = ? WHERE id = ?",
        vec![
            f.status.clone().into(),
            f.text.as_str().into(),
            ts(now).into(),
            ts(now).into(),
            b.queue_id.into(),
        ],
    )
    .await?;
    db.exec(
        "INSERT INTO outbound_log (at, queue_id, node_id, recipient, mx, code, status, text, outcome) \
         VALUES (?, ?, ?, ?, 'bounce', NULL, ?, ?, 'failed')",
        vec![
            ts(now).into(),
            b.queue_id.into(),
            node.into(),
            b.recipient.into(),
            f.status.clone().into(),
            f.text.as_str().into(),
        ],
    )
    .await?;
    let reason = match &f.suppression {
        Suppression::Now { reason } => Some(reason),
        Suppression::Never => None,
        Suppression::IfSoftLimitReached {
            since,
            limit,
            reason,
        } => {
            let soft = db
                .query(
                    "SELECT COUNT(*) FROM outbound_bounces \
                     WHERE address = ? AND class = 'soft' AND at >= ?",
                    vec![b.recipient.into(), ts(*since).into()],
                )
                .await?
                .first()
                .and_then(|r| r.first())
                .and_then(Val::int)
                .unwrap_or(0);
            bounce_policy::soft_limit_reached(soft, *limit).then_some(reason)
        }
    };
    let suppressed = match reason {
        Some(reason) => suppress(db, mysql, b.recipient, reason, Source::Bounce, now).await?,
        None => false,
    };
    if let Some(dsn) = &f.dsn {
        insert_row(db, dsn).await?;
    }
    Ok(suppressed)
}

/// The columns of [`Node`], times as text.
fn node_select(db: &Db) -> String {
    format!(
        "SELECT node_id, instance_id, hostname, pid, threads, heartbeat_secs, {}, {}, {} \
         FROM outbound_nodes",
        db.as_text("started_at"),
        db.as_text("heartbeat_at"),
        db.as_text("stopped_at")
    )
}

fn node_of_row(row: Vec<Val>) -> Option<Node> {
    let mut it = row.into_iter();
    let node_id = it.next()?.text()?;
    let instance_id = it.next()?.text().unwrap_or_default();
    let hostname = it.next()?.text().unwrap_or_default();
    let pid = it.next()?.int().unwrap_or(0);
    let threads = it.next()?.int().unwrap_or(0);
    let heartbeat_secs = it.next()?.int().unwrap_or(0);
    let started_at = it.next()?.text().unwrap_or_default();
    let heartbeat_text = it.next()?.text().unwrap_or_default();
    let stopped_at = it.next()?.text().and_then(|t| parse_ts(&t));
    Some(Node {
        node_id,
        instance_id,
        hostname,
        pid,
        threads,
        heartbeat_secs,
        started_at,
        heartbeat_at: parse_ts(&heartbeat_text),
        heartbeat_text,
        stopped_at,
    })
}

impl Queue {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn close(self) {
        self.db.close().await;
    }

    /// Runs `f` in a transaction, rolling back on error.
    async fn in_tx<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Db) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.db.begin().await?;
        match f(&mut self.db).await {
            Ok(v) => {
                if let Err(e) = self.db.commit().await {
                    self.db.rollback().await;
                    return Err(e);
                }
                Ok(v)
            }
            Err(e) => {
                self.db.rollback().await;
                Err(e)
            }
        }
    }

    /// Claims up to `limit` due rows for `node`'s process `instance` until
    /// `lease_until`.
    pub async fn claim(
        &mut self,
        node: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claimed>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let columns = "id, sender, recipient, body, template_id, params, attempts, delay_notified";
        let rows = if self.db.is_mysql() {
            let node = node.to_owned();
            let instance = instance.to_owned();
            let ids: Vec<i64> = self
                .in_tx(async |db: &mut Db| {
                    let rows = db
                        .query(
                            "SELECT id FROM outbound_queue \
                             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ? \
                             ORDER BY priority DESC, id LIMIT ? FOR UPDATE SKIP LOCKED",
                            vec![ts(now).into(), limit.into()],
                        )
                        .await?;
                    let ids: Vec<i64> = rows.iter().filter_map(|r| r.first()?.int()).collect();
                    if !ids.is_empty() {
                        let mut params: Vec<Val> = vec![
                            node.as_str().into(),
                            instance.as_str().into(),
                            ts(lease_until).into(),
                            ts(now).into(),
                        ];
                        params.extend(ids.iter().map(|&i| Val::Int(i)));
                        db.exec(
                            &format!(
                                "UPDATE outbound_queue SET state = 'sending', lease_node = ?, \
                                 lease_instance = ?, lease_until = ?, updated_at = ? WHERE id IN ({})",
                                Db::placeholders(ids.len())
                            ),
                            params,
                        )
                        .await?;
                    }
                    Ok(ids)
                })
                .await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT {columns}, CAST(created_at AS CHAR) FROM outbound_queue WHERE id IN ({}) \
                 ORDER BY priority DESC, id",
                Db::placeholders(ids.len())
            );
            self.db
                .query(&sql, ids.into_iter().map(Val::Int).collect())
                .await?
        } else {
            let sql = format!(
                "UPDATE outbound_queue SET state = 'sending', lease_node = ?1, lease_until = ?2, \
                 updated_at = ?3, lease_instance = ?5 WHERE id IN (SELECT id FROM outbound_queue \
                 WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?3 \
                 ORDER BY priority DESC, id LIMIT ?4) \
                 RETURNING {columns}, CAST(created_at AS TEXT)"
            );
            let params = vec![
                node.into(),
                ts(lease_until).into(),
                ts(now).into(),
                limit.into(),
                instance.into(),
            ];
            self.in_tx(async |db: &mut Db| db.query(&sql, params).await)
                .await?
        };
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let mut it = row.into_iter();
                let id = it.next()?.int()?;
                let sender = it.next()?.text().unwrap_or_default();
                let recipient = it.next()?.text().unwrap_or_default();
                let body = it.next()?.bytes();
                let template_id = it.next()?.int();
                let params = it.next()?.text();
                let attempts = u32::try_from(it.next()?.int().unwrap_or(0)).unwrap_or(0);
                let delay_notified = it.next()?.int().unwrap_or(0) != 0;
                let created = it.next()?.text().and_then(|t| parse_ts(&t)).unwrap_or(now);
                Some(Claimed {
                    id,
                    created,
                    sender,
                    recipient,
                    body,
                    template_id,
                    params,
                    attempts,
                    delay_notified,
                })
            })
            .collect())
    }

    /// Writes attempts: the queue rows' new state (only where this process still
    /// holds the lease) and the delivery log, in one transaction. Returns how many
    /// queue rows were still ours.
    pub async fn record(
        &mut self,
        node: &str,
        instance: &str,
        attempts: &[Attempt],
        new_rows: &[NewRow],
        suppressions: &[(String, String)],
    ) -> Result<u64, DbError> {
        if attempts.is_empty() && new_rows.is_empty() {
            return Ok(0);
        }
        let node = node.to_owned();
        let instance = instance.to_owned();
        let mysql = self.db.is_mysql();
        self.in_tx(async |db: &mut Db| {
            let mut ours = 0;
            for a in attempts {
                let finished = (a.outcome != Outcome::Deferred).then(|| ts(a.at));
                let counted = i64::from(a.outcome != Outcome::Suppressed);
                ours += db
                    .exec(
                        "UPDATE outbound_queue SET state = ?, attempts = attempts + ?, \
                         next_attempt_at = COALESCE(?, next_attempt_at), last_code = ?, \
                         last_status = ?, last_text = ?, last_mx = ?, lease_node = NULL, \
                         lease_instance = NULL, lease_until = NULL, updated_at = ?, \
                         finished_at = ?, delay_notified = delay_notified + ? \
                         WHERE id = ? AND lease_node = ? AND lease_instance = ? \
                         AND state = 'sending'",
                        vec![
                            a.outcome.as_str().into(),
                            counted.into(),
                            a.next_attempt.map(ts).into(),
                            a.code.map(i64::from).into(),
                            a.status.clone().into(),
                            a.text.clone().into(),
                            a.mx.clone().into(),
                            ts(a.at).into(),
                            finished.into(),
                            i64::from(a.delay_notified).into(),
                            a.queue_id.into(),
                            node.as_str().into(),
                            instance.as_str().into(),
                        ],
                    )
                    .await?;
            }
            // The log in multi-row INSERTs: one round trip per 64 attempts.
            for chunk in attempts.chunks(64) {
                let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let mut params: Vec<Val> = Vec::with_capacity(chunk.len() * 9);
                for a in chunk {
                    params.extend([
                        ts(a.at).into(),
                        a.queue_id.into(),
                        node.as_str().into(),
                        a.recipient.clone().into(),
                        a.mx.clone().into(),
                        a.code.map(i64::from).into(),
                        a.status.clone().into(),
                        a.text.clone().into(),
                        a.outcome.as_str().into(),
                    ]);
                }
                db.exec(
                    &format!(
                        "INSERT INTO outbound_log \
                         (at, queue_id, node_id, recipient, mx, code, status, text, outcome) \
                         VALUES {rows}"
                    ),
                    params,
                )
                .await?;
            }
            for row in new_rows {
                insert_row(db, row).await?;
            }
            let now = Utc::now();
            for (address, reason) in suppressions {
                suppress(db, mysql, address, reason, Source::Bounce, now).await?;
            }
            Ok(ours)
        })
        .await
    }

    /// Reads `new_mail` past the intake cursor for mail to our VERP and unsubscribe
    /// addresses and acts on it, all in one transaction with the cursor's advance
    /// (the cursor row is locked, so nodes take turns and nothing is read twice).
    pub async fn intake(
        &mut self,
        s: &Intake<'_>,
        now: DateTime<Utc>,
    ) -> Result<IntakeReport, DbError> {
        let mysql = self.db.is_mysql();
        let created = self.db.as_text("created_at");
        self.in_tx(async |db: &mut Db| {
            let ignore = if mysql {
                "INSERT IGNORE"
            } else {
                "INSERT OR IGNORE"
            };
            db.exec(
                &format!(
                    "{ignore} INTO outbound_intake (name, last_mail_id) VALUES ('new_mail', 0)"
                ),
                Vec::new(),
            )
            .await?;
            let lock = if mysql { " FOR UPDATE" } else { "" };
            let cursor = db
                .query(
                    &format!(
                        "SELECT last_mail_id FROM outbound_intake WHERE name = 'new_mail'{lock}"
                    ),
                    Vec::new(),
                )
                .await?
                .first()
                .and_then(|r| r.first())
                .and_then(Val::int)
                .unwrap_or(0);
            let rows = db
                .query(
                    "SELECT mail_id, recipient, mail FROM new_mail WHERE mail_id > ? \
                     ORDER BY mail_id LIMIT 200",
                    vec![cursor.into()],
                )
                .await?;
            let mut report = IntakeReport::default();
            let mut last = cursor;
            for row in rows {
                let mut it = row.into_iter();
                let (Some(mail_id), Some(address), Some(mail)) = (
                    it.next().and_then(|v| v.int()),
                    it.next().and_then(|v| v.text()),
                    it.next().and_then(Val::bytes),
                ) else {
                    continue;
                };
                last = last.max(mail_id);
                report.scanned += 1;
                if s.verp.kind_of(&address).is_none() {
                    continue;
                }
                let (kind, queue_id) = match s.verp.verify(&address) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(mail_id, address, error = %e, "ignoring mail to a VERP address that does not verify");
                        report.forged += 1;
                        continue;
                    }
                };
                let original = db
                    .query(
                        &format!(
                            "SELECT recipient, sender, state, body, {created} \
                             FROM outbound_queue WHERE id = ?"
                        ),
                        vec![queue_id.into()],
                    )
                    .await?;
                let Some(mut it) = original.into_iter().next().map(Vec::into_iter) else {
                    continue;
                };
                let recipient = it
                    .next()
                    .and_then(|v| v.text())
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let sender = it.next().and_then(|v| v.text()).unwrap_or_default();
                let state = it.next().and_then(|v| v.text()).unwrap_or_default();
                let body = it.next().and_then(Val::bytes).unwrap_or_default();
                let arrival = it
                    .next()
                    .and_then(|v| v.text())
                    .and_then(|t| parse_ts(&t))
                    .unwrap_or(now);
                match kind {
                    crate::verp::Kind::Unsubscribe => {
                        report.unsubscribes += 1;
                        report.suppressed += usize::from(
                            suppress(
                                db,
                                mysql,
                                &recipient,
                                bounce_policy::UNSUBSCRIBE_REASON,
                                Source::Unsubscribe,
                                now,
                            )
                            .await?,
                        );
                    }
                    crate::verp::Kind::Bounce => {
                        let bounce = crate::dsn::parse_bounce(&mail);
                        let original = bounce_policy::Original {
                            recipient: &recipient,
                            sender: &sender,
                            state: RowState::parse(&state),
                            body: &body,
                            arrival,
                        };
                        let bounce_policy::Verdict::Fail(failure) =
                            bounce_policy::judge_bounce(&bounce, &original, &s.policy, now)
                        else {
                            continue;
                        };
                        report.bounces += 1;
                        let suppressed = record_bounce(
                            db,
                            mysql,
                            s.node,
                            &BounceRecord {
                                queue_id,
                                mail_id,
                                recipient: &recipient,
                                failure: &failure,
                            },
                            now,
                        )
                        .await?;
                        report.suppressed += usize::from(suppressed);
                    }
                }
            }
            if last > cursor {
                db.exec(
                    "UPDATE outbound_intake SET last_mail_id = ? WHERE name = 'new_mail'",
                    vec![last.into()],
                )
                .await?;
            }
            Ok(report)
        })
        .await
    }

    /// The node row for `node_id`, if any.
    pub async fn node(&mut self, node_id: &str) -> Result<Option<Node>, DbError> {
        let sql = format!("{} WHERE node_id = ?", node_select(&self.db));
        Ok(self
            .db
            .query(&sql, vec![node_id.into()])
            .await?
            .into_iter()
            .find_map(node_of_row))
    }

    /// Makes the node row `node`'s (its instance id, pid, a fresh heartbeat, not
    /// stopped) if it is still as `seen` (None: there is no row yet), compare-and-set
    /// on the instance id and the last heartbeat. False when another process wrote
    /// the row in between.
    pub async fn take_node(
        &mut self,
        node: &Node,
        seen: Option<&Node>,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let mut values: Vec<Val> = vec![
            node.hostname.as_str().into(),
            node.pid.into(),
            node.threads.into(),
            node.heartbeat_secs.into(),
            node.started_at.as_str().into(),
            ts(now).into(),
            node.instance_id.as_str().into(),
            node.node_id.as_str().into(),
        ];
        let changed = match seen {
            None => {
                let ignore = if self.db.is_mysql() {
                    "INSERT IGNORE"
                } else {
                    "INSERT OR IGNORE"
                };
                self.db
                    .exec(
                        &format!(
                            "{ignore} INTO outbound_nodes (hostname, pid, threads, heartbeat_secs, \
                             started_at, heartbeat_at, instance_id, node_id) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        ),
                        values,
                    )
                    .await?
            }
            Some(seen) => {
                values.extend([
                    seen.instance_id.as_str().into(),
                    seen.heartbeat_text.as_str().into(),
                ]);
                self.db
                    .exec(
                        "UPDATE outbound_nodes SET hostname = ?, pid = ?, threads = ?, \
                         heartbeat_secs = ?, started_at = ?, heartbeat_at = ?, instance_id = ?, \
                         stopped_at = NULL WHERE node_id = ? AND instance_id = ? AND heartbeat_at = ?",
                        values,
                    )
                    .await?
            }
        };
        Ok(changed == 1)
    }

    /// The heartbeat: this process's node row refreshed, its own leases extended,
    /// and everybody's expired leases returned to the queue — unless another process
    /// has taken the node row over meanwhile.
    pub async fn heartbeat(
        &mut self,
        node: &Node,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Beat, DbError> {
        let updated = self
            .db
            .exec(
                "UPDATE outbound_nodes SET heartbeat_at = ?, stopped_at = NULL \
                 WHERE node_id = ? AND instance_id = ?",
                vec![
                    ts(now).into(),
                    node.node_id.as_str().into(),
                    node.instance_id.as_str().into(),
                ],
            )
            .await?;
        if updated == 0 {
            // MySQL counts changed rows only, so look before concluding anything.
            match self.node(&node.node_id).await? {
                Some(row) if row.instance_id == node.instance_id => {}
                Some(other) => return Ok(Beat::TakenOver(other)),
                // Deleted by hand: ours again, unless somebody else gets there first.
                None => {
                    if !self.take_node(node, None, now).await?
                        && let Some(other) = self.node(&node.node_id).await?
                    {
                        return Ok(Beat::TakenOver(other));
                    }
                }
            }
        }
        self.db
            .exec(
                "UPDATE outbound_queue SET lease_until = ? \
                 WHERE state = 'sending' AND lease_node = ? AND lease_instance = ?",
                vec![
                    ts(lease_until).into(),
                    node.node_id.as_str().into(),
                    node.instance_id.as_str().into(),
                ],
            )
            .await?;
        let took_back = self.release(Leases::ExpiredBefore(now)).await?;
        Ok(Beat::Ours { took_back })
    }

    /// Records a clean stop on this process's node row, so `outbound nodes` shows it
    /// stopped at once and the next process with the node id need not wait for it.
    pub async fn mark_stopped(&mut self, node: &Node, now: DateTime<Utc>) -> Result<bool, DbError> {
        Ok(self
            .db
            .exec(
                "UPDATE outbound_nodes SET stopped_at = ?, heartbeat_at = ? \
                 WHERE node_id = ? AND instance_id = ?",
                vec![
                    ts(now).into(),
                    ts(now).into(),
                    node.node_id.as_str().into(),
                    node.instance_id.as_str().into(),
                ],
            )
            .await?
            > 0)
    }

    /// Returns leased rows to the queue (`queued`, or `deferred` once attempted).
    pub async fn release(&mut self, which: Leases<'_>) -> Result<u64, DbError> {
        let (condition, values) = match which {
            Leases::ExpiredBefore(t) => ("lease_until < ?", vec![Val::from(ts(t))]),
            Leases::Own { node, instance } => (
                "lease_node = ? AND lease_instance = ?",
                vec![node.into(), instance.into()],
            ),
            Leases::Predecessors { node, instance } => (
                "lease_node = ? AND (lease_instance IS NULL OR lease_instance <> ?)",
                vec![node.into(), instance.into()],
            ),
        };
        self.db
            .exec(
                &format!(
                    "UPDATE outbound_queue SET \
                     state = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END, \
                     lease_node = NULL, lease_instance = NULL, lease_until = NULL \
                     WHERE state = 'sending' AND {condition}"
                ),
                values,
            )
            .await
    }

    /// Templates by id.
    pub async fn templates(
        &mut self,
        ids: &HashSet<i64>,
    ) -> Result<HashMap<i64, Result<Template, String>>, DbError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT id, from_header, subject, text_body, html_body, text_encoding, \
                     html_encoding FROM outbound_templates WHERE id IN ({})",
                    Db::placeholders(ids.len())
                ),
                ids.iter().map(|&i| Val::Int(i)).collect(),
            )
            .await?;
        let mut out = HashMap::new();
        for row in rows {
            let mut it = row.into_iter();
            let Some(id) = it.next().and_then(|v| v.int()) else {
                continue;
            };
            let mut next_text = || it.next().and_then(|v| v.text());
            let from = next_text().unwrap_or_default();
            let subject = next_text().unwrap_or_default();
            let text = next_text();
            let html = next_text();
            let encodings = (next_text(), next_text());
            let parse = |e: Option<String>| -> Result<Option<TransferEncoding>, String> {
                e.map(|e| e.parse::<TransferEncoding>().map_err(|e| e.to_string()))
                    .transpose()
            };
            let template = parse(encodings.0).and_then(|text_encoding| {
                Ok(Template {
                    from,
                    subject,
                    text,
                    html,
                    text_encoding,
                    html_encoding: parse(encodings.1)?,
                })
            });
            out.insert(id, template);
        }
        Ok(out)
    }

    /// Which of these (lowercased) addresses are on the suppression list.
    pub async fn suppressed(
        &mut self,
        addresses: &HashSet<String>,
    ) -> Result<HashSet<String>, DbError> {
        let mut out = HashSet::new();
        let list: Vec<&String> = addresses.iter().collect();
        for chunk in list.chunks(500) {
            let rows = self
                .db
                .query(
                    &format!(
                        "SELECT address FROM suppression WHERE address IN ({})",
                        Db::placeholders(chunk.len())
                    ),
                    chunk.iter().map(|a| Val::from(a.as_str())).collect(),
                )
                .await?;
            out.extend(
                rows.into_iter()
                    .filter_map(|r| r.into_iter().next()?.text()),
            );
        }
        Ok(out)
    }

    /// Queues `body` for each recipient; returns the new ids.
    pub async fn enqueue(
        &mut self,
        sender: &str,
        recipients: &[String],
        body: &[u8],
        priority: i64,
        tag: Option<&str>,
    ) -> Result<Vec<i64>, DbError> {
        let is_mysql = self.db.is_mysql();
        self.in_tx(async |db: &mut Db| {
            let mut ids = Vec::with_capacity(recipients.len());
            for r in recipients {
                db.exec(
                    "INSERT INTO outbound_queue (sender, recipient, body, priority, tag) \
                     VALUES (?, ?, ?, ?, ?)",
                    vec![
                        sender.into(),
                        r.as_str().into(),
                        Val::Bytes(body.to_vec()),
                        priority.into(),
                        tag.into(),
                    ],
                )
                .await?;
                let sql = if is_mysql {
                    "SELECT LAST_INSERT_ID()"
                } else {
                    "SELECT last_insert_rowid()"
                };
                let rows = db.query(sql, Vec::new()).await?;
                if let Some(id) = rows.first().and_then(|r| r.first()).and_then(Val::int) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await
    }

    pub async fn suppress_add(
        &mut self,
        address: &str,
        reason: &str,
        source: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "REPLACE INTO suppression (address, reason, source, created_at) VALUES (?, ?, ?, ?)",
                vec![
                    address.to_ascii_lowercase().into(),
                    reason.into(),
                    source.into(),
                    ts(Utc::now()).into(),
                ],
            )
            .await
            .map(drop)
    }

    pub async fn suppress_remove(&mut self, address: &str) -> Result<bool, DbError> {
        Ok(self
            .db
            .exec(
                "DELETE FROM suppression WHERE address = ?",
                vec![address.to_ascii_lowercase().into()],
            )
            .await?
            > 0)
    }

    pub async fn suppress_list(&mut self) -> Result<Vec<[String; 4]>, DbError> {
        let sql = format!(
            "SELECT address, reason, source, {} FROM suppression ORDER BY address",
            self.db.as_text("created_at")
        );
        Ok(self
            .db
            .query(&sql, Vec::new())
            .await?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter().map(|v| v.text().unwrap_or_default());
                [(); 4].map(|()| it.next().unwrap_or_default())
            })
            .collect())
    }

    pub async fn nodes(&mut self) -> Result<Vec<Node>, DbError> {
        let sql = format!("{} ORDER BY node_id", node_select(&self.db));
        Ok(self
            .db
            .query(&sql, Vec::new())
            .await?
            .into_iter()
            .filter_map(node_of_row)
            .collect())
    }

    pub async fn stats(&mut self, now: DateTime<Utc>) -> Result<Stats, DbError> {
        let pairs = |rows: Vec<Vec<Val>>| -> Vec<(String, i64)> {
            rows.into_iter()
                .filter_map(|r| {
                    let mut it = r.into_iter();
                    Some((it.next()?.text()?, it.next()?.int()?))
                })
                .collect()
        };
        let by_state = pairs(
            self.db
                .query(
                    "SELECT state, COUNT(*) FROM outbound_queue GROUP BY state ORDER BY state",
                    Vec::new(),
                )
                .await?,
        );
        let minute_ago = ts(now - chrono::Duration::seconds(60));
        let log_last_minute = pairs(
            self.db
                .query(
                    "SELECT outcome, COUNT(*) FROM outbound_log WHERE at >= ? GROUP BY outcome",
                    vec![minute_ago.into()],
                )
                .await?,
        )
        .into_iter()
        .collect();
        let log_total = pairs(
            self.db
                .query(
                    "SELECT outcome, COUNT(*) FROM outbound_log GROUP BY outcome",
                    Vec::new(),
                )
                .await?,
        )
        .into_iter()
        .collect();
        let sql = format!(
            "SELECT {}, {} FROM outbound_log WHERE outcome = 'delivered'",
            self.db.as_text("MIN(at)"),
            self.db.as_text("MAX(at)")
        );
        let span = self.db.query(&sql, Vec::new()).await?;
        let mut it = span.into_iter().next().unwrap_or_default().into_iter();
        let first_delivery = it.next().and_then(|v| v.text()).and_then(|t| parse_ts(&t));
        let last_delivery = it.next().and_then(|v| v.text()).and_then(|t| parse_ts(&t));
        Ok(Stats {
            by_state,
            log_last_minute,
            log_total,
            first_delivery,
            last_delivery,
        })
    }
}
