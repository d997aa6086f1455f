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
//! Claimed rows carry their campaign (logged with each attempt); a campaign row's
//! unsubscribe request ends the subscriber's memberships of that campaign's lists
//! instead of suppressing the address.
//! Must not: decide outcomes or schedules (the dispatcher does), nor what a bounce
//! calls for (`bounce_policy` does; this module runs the SQL its verdict asks for),
//! nor campaign states and expansion (`campaign` does).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::bounce_policy::{self, Source, Suppression};
use crate::db::{Db, DbError, Val};
use crate::intake_horizon::IntakeHorizon;
use crate::row::{self, Column, Fields, RowError};
use crate::template::{Template, TransferEncoding};

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC: the format of every time column. Written
/// field by field: `format("%Y-…")` parses its pattern on every call, and the
/// recorder calls this four times per attempt (it was ~2% of the relay's
/// instructions).
pub fn ts(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Within three digits even in a leap second (nanosecond ≥ 1e9).
    let millis = (t.nanosecond() / 1_000_000).min(999);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
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
    /// The campaign the row belongs to (None for other mail).
    pub campaign_id: Option<i64>,
    /// A campaign row's subscriber (its tracking tokens name it).
    pub subscriber_id: Option<i64>,
    /// The sending pool to send from (None: the default source address).
    pub pool: Option<String>,
    /// Past this, the row fails with 4.4.7 and no DSN (None: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// `outbound enqueue --pool --expires-in`: what a row carries for responsible sending.
#[derive(Debug, Default)]
pub struct EnqueueSending {
    pub pool: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Claimed {
    /// What the claim selects (MySQL) or returns (SQLite).
    const COLUMNS: &'static [Column] = &[
        Column::plain("id"),
        Column::plain("sender"),
        Column::plain("recipient"),
        Column::plain("body"),
        Column::plain("template_id"),
        Column::plain("params"),
        Column::plain("attempts"),
        Column::plain("delay_notified"),
        Column::text("created_at"),
        Column::plain("campaign_id"),
        Column::plain("pool"),
        Column::text("expires_at"),
        Column::plain("subscriber_id"),
        // Last: the MySQL claim merges its two lists by it (not kept in the row).
        Column::plain("priority"),
    ];

    /// A claimed row; refused without an id. The schema makes the other columns NOT
    /// NULL (or nullable by design: body, template_id, params); should one still be
    /// NULL or unreadable, the claim has always defaulted it: sender and recipient
    /// to `''` (the envelope check then fails a bad recipient), attempts to 0 (also
    /// when out of range), delay_notified to false, created_at to `now`.
    fn from_row(row: Vec<Val>, now: DateTime<Utc>) -> Result<Self, RowError> {
        let mut f = Fields::new(Self::COLUMNS, row)?;
        Ok(Self {
            id: f.int("id")?,
            sender: f.opt_text("sender")?.unwrap_or_default(),
            recipient: f.opt_text("recipient")?.unwrap_or_default(),
            body: f.opt_bytes("body")?,
            template_id: f.opt_int("template_id")?,
            params: f.opt_text("params")?,
            attempts: u32::try_from(f.opt_int("attempts")?.unwrap_or(0)).unwrap_or(0),
            delay_notified: f.opt_int("delay_notified")?.unwrap_or(0) != 0,
            created: f
                .opt_text("created_at")?
                .and_then(|t| parse_ts(&t))
                .unwrap_or(now),
            campaign_id: f.opt_int("campaign_id")?,
            pool: f.opt_text("pool")?,
            expires_at: f.opt_text("expires_at")?.and_then(|t| parse_ts(&t)),
            subscriber_id: f.opt_int("subscriber_id")?,
        })
    }
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
    /// Every outcome, in the order [`Queue::record`] writes them.
    const ALL: [Outcome; 4] = [
        Self::Delivered,
        Self::Deferred,
        Self::Failed,
        Self::Suppressed,
    ];

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
    /// Verified feedback-loop reports, recorded in `outbound_complaints`.
    pub complaints: usize,
    /// Mail to the complaint address that was skipped: not an ARF report, or about
    /// no queue row of ours.
    pub complaints_skipped: usize,
}

/// Settings of an intake pass.
pub struct Intake<'a> {
    pub verp: &'a crate::verp::Verp,
    pub node: &'a str,
    /// What the bounce policy decides by.
    pub policy: bounce_policy::Settings<'a>,
    /// `bounces.complaint_address` (lowercased): mail to it is read as ARF reports.
    pub complaint_address: Option<&'a str>,
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
    /// A paused campaign's row: never claimed until its campaign resumes.
    Paused,
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
            "paused" => Self::Paused,
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
                .await?;
            let soft = row::scalar_int(&soft).unwrap_or(0);
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

// ---------------------------------------------------------------------------------
// Rows: one struct per query, its column list the SELECT list, decoded by name.
// ---------------------------------------------------------------------------------

impl Node {
    /// What [`Queue::node`] and [`Queue::nodes`] select.
    const COLUMNS: &'static [Column] = &[
        Column::plain("node_id"),
        Column::plain("instance_id"),
        Column::plain("hostname"),
        Column::plain("pid"),
        Column::plain("threads"),
        Column::plain("heartbeat_secs"),
        Column::text("started_at"),
        Column::text("heartbeat_at"),
        Column::text("stopped_at"),
    ];

    fn select(db: &Db) -> String {
        format!(
            "SELECT {} FROM outbound_nodes",
            row::select_list(db, Self::COLUMNS)
        )
    }

    /// A node row; refused without a node id. The rest defaults as it always has:
    /// texts to `''` (instance_id is `''` in rows from before schema 3), numbers to
    /// 0, unreadable times to None.
    fn from_row(row: Vec<Val>) -> Result<Self, RowError> {
        let mut f = Fields::new(Self::COLUMNS, row)?;
        let heartbeat_text = f.opt_text("heartbeat_at")?.unwrap_or_default();
        Ok(Self {
            node_id: f.text("node_id")?,
            instance_id: f.opt_text("instance_id")?.unwrap_or_default(),
            hostname: f.opt_text("hostname")?.unwrap_or_default(),
            pid: f.opt_int("pid")?.unwrap_or(0),
            threads: f.opt_int("threads")?.unwrap_or(0),
            heartbeat_secs: f.opt_int("heartbeat_secs")?.unwrap_or(0),
            started_at: f.opt_text("started_at")?.unwrap_or_default(),
            heartbeat_at: parse_ts(&heartbeat_text),
            heartbeat_text,
            stopped_at: f.opt_text("stopped_at")?.and_then(|t| parse_ts(&t)),
        })
    }
}

/// How many times a claim that lost a conflict (1213) is run again at once.
const CLAIM_TRIES: u32 = 5;

/// Due queued rows in claim order, off the claim index (schema 10): `columns` of
/// each, read by the locking read itself (a claim is one SELECT per list and one
/// UPDATE, not a second SELECT for the rows' bodies).
pub fn claim_queued_mysql(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM outbound_queue FORCE INDEX (outbound_queue_claim) \
         WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY priority DESC, id \
         LIMIT ? FOR UPDATE SKIP LOCKED"
    )
}

/// Due deferred rows, oldest due first, off the due-time index.
pub fn claim_deferred_mysql(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM outbound_queue FORCE INDEX (outbound_queue_due) \
         WHERE state = 'deferred' AND next_attempt_at <= ? ORDER BY next_attempt_at, id \
         LIMIT ? FOR UPDATE SKIP LOCKED"
    )
}

/// Queue rows per batched outcome UPDATE in [`Queue::record`].
const RECORD_CHUNK_ROWS: usize = 100;

/// `CASE id WHEN ? THEN ? … END` over `chunk`, its parameters appended to `params`.
/// `key` is how the id is compared (see [`record_outcome`]).
fn case_by_id(
    key: &str,
    chunk: &[&Attempt],
    params: &mut Vec<Val>,
    value: impl Fn(&Attempt) -> Val,
) -> String {
    let mut sql = format!("CASE {key}");
    for a in chunk {
        sql.push_str(" WHEN ? THEN ?");
        params.push(a.queue_id.into());
        params.push(value(a));
    }
    sql.push_str(" END");
    sql
}

/// One UPDATE writing `chunk` (attempts with the same `outcome`) to the rows still
/// leased to this process; returns how many were.
async fn record_outcome(
    db: &mut Db,
    outcome: Outcome,
    chunk: &[&Attempt],
    node: &str,
    instance: &str,
) -> Result<u64, DbError> {
    let mut params: Vec<Val> = vec![
        outcome.as_str().into(),
        i64::from(outcome != Outcome::Suppressed).into(),
    ];
    let finished = outcome != Outcome::Deferred;
    // MySQL: the id (BIGINT UNSIGNED) against signed parameters is compared as
    // DECIMAL, WHEN by WHEN; as a signed integer it is an integer comparison
    // (the DECIMAL one was ~7% of MariaDB's CPU per delivery, by perf).
    let key = if db.is_mysql() {
        "CAST(id AS SIGNED)"
    } else {
        "id"
    };
    let next = case_by_id(key, chunk, &mut params, |a| a.next_attempt.map(ts).into());
    let code = case_by_id(key, chunk, &mut params, |a| a.code.map(i64::from).into());
    let status = case_by_id(key, chunk, &mut params, |a| a.status.clone().into());
    let text = case_by_id(key, chunk, &mut params, |a| a.text.clone().into());
    let mx = case_by_id(key, chunk, &mut params, |a| a.mx.clone().into());
    let updated = case_by_id(key, chunk, &mut params, |a| ts(a.at).into());
    let finished_at = case_by_id(key, chunk, &mut params, |a| {
        finished.then(|| ts(a.at)).into()
    });
    let notified = case_by_id(key, chunk, &mut params, |a| {
        i64::from(a.delay_notified).into()
    });
    params.extend(chunk.iter().map(|a| Val::Int(a.queue_id)));
    params.extend([node.into(), instance.into()]);
    db.exec(
        &format!(
            "UPDATE outbound_queue SET state = ?, attempts = attempts + ?, \
             next_attempt_at = COALESCE({next}, next_attempt_at), last_code = {code}, \
             last_status = {status}, last_text = {text}, last_mx = {mx}, lease_node = NULL, \
             lease_instance = NULL, lease_until = NULL, updated_at = {updated}, \
             finished_at = {finished_at}, delay_notified = delay_notified + {notified} \
             WHERE id IN ({}) AND lease_node = ? AND lease_instance = ? AND state = 'sending'",
            Db::placeholders(chunk.len())
        ),
        params,
    )
    .await
}

/// `new_mail` rows per intake batch: ids and recipients only, so a batch is small
/// however large the bodies are.
pub const INTAKE_BATCH_ROWS: i64 = 5000;

/// How long one intake pass may run batch after batch before the relay's loop gets
/// its turn again (claims, heartbeats).
pub const INTAKE_PASS: std::time::Duration = std::time::Duration::from_millis(500);

/// What an intake batch reads of every `new_mail` row past the cursor.
const NEW_MAIL_HEAD: &[Column] = &[Column::plain("mail_id"), Column::plain("recipient")];

/// A `new_mail` row the intake reads ([`Queue::intake`]).
#[derive(Debug)]
struct NewMail {
    mail_id: i64,
    recipient: String,
    mail: Vec<u8>,
}

impl NewMail {
    const COLUMNS: &'static [Column] = &[
        Column::plain("mail_id"),
        Column::plain("recipient"),
        Column::plain("mail"),
    ];

    /// Every column is required: a row without one is not mail the intake can read.
    fn from_row(row: Vec<Val>) -> Result<Self, RowError> {
        let mut f = Fields::new(Self::COLUMNS, row)?;
        Ok(Self {
            mail_id: f.int("mail_id")?,
            recipient: f.text("recipient")?,
            mail: f.bytes("mail")?,
        })
    }
}

/// A campaign's unsubscribe request (by mail to its VERP address, or the
/// one-click URL of `outbound web`): the subscriber's memberships of the
/// campaign's include lists become `unsubscribed`, by that campaign. Idempotent;
/// returns how many memberships it ended.
pub async fn unsubscribe_member(
    db: &mut Db,
    campaign: i64,
    subscriber: i64,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    db.exec(
        "UPDATE list_members SET status = 'unsubscribed', \
         unsubscribed_by = ?, updated_at = ? \
         WHERE subscriber_id = ? AND status <> 'unsubscribed' \
         AND list_id IN (SELECT list_id FROM campaign_lists \
         WHERE campaign_id = ? AND kind = 'include')",
        vec![
            campaign.into(),
            ts(now).into(),
            subscriber.into(),
            campaign.into(),
        ],
    )
    .await
}

/// One message to the complaint address ([`Queue::intake`]): an ARF report whose
/// original carries a VERP return path that verifies (the tag checked exactly as a
/// bounce's) suppresses that row's recipient (`source = 'complaint'`, the
/// Feedback-Type as reason) and is recorded in `outbound_complaints`. Anything else
/// is counted and skipped; a forged tag is logged too. Only store errors are errors.
async fn complaint(
    db: &mut Db,
    mysql: bool,
    verp: &crate::verp::Verp,
    mail_id: i64,
    mail: &[u8],
    report: &mut IntakeReport,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let Some(c) = crate::complaint::parse(mail) else {
        tracing::debug!(
            mail_id,
            "skipping mail to the complaint address: not an ARF report"
        );
        report.complaints_skipped += 1;
        return Ok(());
    };
    let mut forged = false;
    let mut queue_id = None;
    for a in &c.addresses {
        if verp.kind_of(a) != Some(crate::verp::Kind::Bounce) {
            continue;
        }
        match verp.verify(a) {
            Ok((crate::verp::Kind::Bounce, id)) => {
                queue_id = Some(id);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(mail_id, address = %a, error = %e, "ignoring a complaint whose VERP return path does not verify");
                forged = true;
            }
        }
    }
    let Some(queue_id) = queue_id else {
        if forged {
            report.forged += 1;
        }
        report.complaints_skipped += 1;
        return Ok(());
    };
    let queued = db
        .query(
            "SELECT recipient FROM outbound_queue WHERE id = ?",
            vec![queue_id.into()],
        )
        .await?;
    let Some(recipient) = queued
        .first()
        .and_then(|r| r.first())
        .and_then(Val::text)
        .map(|r| r.to_ascii_lowercase())
    else {
        tracing::debug!(
            mail_id,
            queue_id,
            "skipping a complaint about a row that is gone"
        );
        report.complaints_skipped += 1;
        return Ok(());
    };
    let feedback_type: String = c.feedback_type.chars().take(64).collect();
    db.exec(
        "INSERT INTO outbound_complaints (at, queue_id, address, feedback_type, mail_id) \
         VALUES (?, ?, ?, ?, ?)",
        vec![
            ts(now).into(),
            queue_id.into(),
            recipient.as_str().into(),
            feedback_type.as_str().into(),
            mail_id.into(),
        ],
    )
    .await?;
    report.complaints += 1;
    let reason = format!("complaint: {feedback_type}");
    report.suppressed +=
        usize::from(suppress(db, mysql, &recipient, &reason, Source::Complaint, now).await?);
    Ok(())
}

/// The queue row a verified bounce or unsubscribe is about ([`Queue::intake`]).
#[derive(Debug)]
struct BouncedRow {
    recipient: String,
    sender: String,
    state: Option<RowState>,
    body: Vec<u8>,
    created: DateTime<Utc>,
    /// A campaign row's campaign and subscriber: its unsubscribe request ends
    /// the subscriber's membership of the campaign's lists.
    campaign: Option<(i64, i64)>,
}

impl BouncedRow {
    const COLUMNS: &'static [Column] = &[
        Column::plain("recipient"),
        Column::plain("sender"),
        Column::plain("state"),
        Column::plain("body"),
        Column::text("created_at"),
        Column::plain("campaign_id"),
        Column::plain("subscriber_id"),
    ];

    /// Defaults as the intake always had them (the schema makes all but body NOT
    /// NULL): recipient and sender `''` (no DSN then), an unknown or NULL state None
    /// (not "failed": the sender is told), body empty (template rows: the DSN
    /// carries no original headers), created_at `now`.
    fn from_row(row: Vec<Val>, now: DateTime<Utc>) -> Result<Self, RowError> {
        let mut f = Fields::new(Self::COLUMNS, row)?;
        Ok(Self {
            recipient: f.opt_text("recipient")?.unwrap_or_default(),
            sender: f.opt_text("sender")?.unwrap_or_default(),
            state: f.opt_text("state")?.as_deref().and_then(RowState::parse),
            body: f.opt_bytes("body")?.unwrap_or_default(),
            created: f
                .opt_text("created_at")?
                .and_then(|t| parse_ts(&t))
                .unwrap_or(now),
            campaign: f.opt_int("campaign_id")?.zip(f.opt_int("subscriber_id")?),
        })
    }
}

/// An `outbound_templates` row ([`Queue::templates`]).
#[derive(Debug)]
struct TemplateRow {
    id: i64,
    /// The template, or why it cannot be used (an unknown transfer encoding).
    template: Result<Template, String>,
}

impl TemplateRow {
    const COLUMNS: &'static [Column] = &[
        Column::plain("id"),
        Column::plain("from_header"),
        Column::plain("subject"),
        Column::plain("text_body"),
        Column::plain("html_body"),
        Column::plain("text_encoding"),
        Column::plain("html_encoding"),
    ];

    /// Refused without an id. from_header and subject (NOT NULL in the schema)
    /// default to `''`, as always; the bodies and encodings are optional by design.
    fn from_row(row: Vec<Val>) -> Result<Self, RowError> {
        let mut f = Fields::new(Self::COLUMNS, row)?;
        let id = f.int("id")?;
        let from = f.opt_text("from_header")?.unwrap_or_default();
        let subject = f.opt_text("subject")?.unwrap_or_default();
        let text = f.opt_text("text_body")?;
        let html = f.opt_text("html_body")?;
        let encoding = |e: Option<String>| -> Result<Option<TransferEncoding>, String> {
            e.map(|e| e.parse::<TransferEncoding>().map_err(|e| e.to_string()))
                .transpose()
        };
        let text_encoding = encoding(f.opt_text("text_encoding")?);
        let html_encoding = encoding(f.opt_text("html_encoding")?);
        let template = text_encoding.and_then(|text_encoding| {
            Ok(Template {
                from,
                subject,
                text,
                html,
                text_encoding,
                html_encoding: html_encoding?,
            })
        });
        Ok(Self { id, template })
    }
}

/// What [`Queue::suppressed`] selects: the address, required (the primary key).
const SUPPRESSED_COLUMNS: &[Column] = &[Column::plain("address")];

/// A suppression list entry ([`Queue::suppress_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionEntry {
    pub address: String,
    pub reason: String,
    /// `bounce`, `unsubscribe`, `complaint` or `manual`.
    pub source: String,
    /// As stored (`YYYY-MM-DD HH:MM:SS.mmm`), for printing.
    pub created_at: String,
}

impl SuppressionEntry {
    const COLUMNS: &'static [Column] = &[
        Column::plain("address"),
        Column::plain("reason"),
        Column::plain("source"),
        Column::text("created_at"),
    ];

    /// Every column NOT NULL in the schema; one that still is prints as `''`, as
    /// the list always did.
    fn from_row(row: Vec<Val>) -> Result<Self, RowError> {
        let mut f = Fields::new(Self::COLUMNS, row)?;
        let mut text = |name| f.opt_text(name).map(Option::unwrap_or_default);
        Ok(Self {
            address: text("address")?,
            reason: text("reason")?,
            source: text("source")?,
            created_at: text("created_at")?,
        })
    }
}

/// One group of a `GROUP BY` count ([`Queue::stats`]).
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    key: String,
    count: i64,
}

impl Tally {
    /// Queue rows by state.
    const BY_STATE: &'static [Column] = &[Column::plain("state"), Column::plain("COUNT(*)")];
    /// Log rows by outcome.
    const BY_OUTCOME: &'static [Column] = &[Column::plain("outcome"), Column::plain("COUNT(*)")];

    /// Both values required; the key is the first of `columns`.
    fn from_row(row: Vec<Val>, columns: &'static [Column]) -> Result<Self, RowError> {
        let key = columns.first().map_or("", |c| c.name);
        let mut f = Fields::new(columns, row)?;
        Ok(Self {
            key: f.text(key)?,
            count: f.int("COUNT(*)")?,
        })
    }
}

/// The first and last delivery in the log ([`Queue::stats`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct DeliverySpan {
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl DeliverySpan {
    const COLUMNS: &'static [Column] = &[Column::text("MIN(at)"), Column::text("MAX(at)")];

    /// From the one row an aggregate returns; both None when nothing was delivered
    /// (NULL), as when there is no row or its times do not parse.
    fn from_rows(rows: Vec<Vec<Val>>) -> Self {
        let Some(Ok(mut f)) = rows
            .into_iter()
            .next()
            .map(|r| Fields::new(Self::COLUMNS, r))
        else {
            return Self::default();
        };
        let mut time = |name| f.opt_text(name).ok().flatten().and_then(|t| parse_ts(&t));
        Self {
            first: time("MIN(at)"),
            last: time("MAX(at)"),
        }
    }
}

impl Queue {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn close(self) {
        self.db.close().await;
    }

    /// The connection, for the tables this module does not own (accounts, lists,
    /// campaigns).
    pub fn db(&mut self) -> &mut Db {
        &mut self.db
    }

    /// Runs `f` in a transaction, rolling back on error.
    async fn in_tx<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Db) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.db.in_tx(f).await
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
        let columns = row::select_list(&self.db, Claimed::COLUMNS);
        let rows = if self.db.is_mysql() {
            let mut tries = 0;
            loop {
                tries += 1;
                match self
                    .claim_mysql(&columns, node, instance, now, lease_until, limit)
                    .await
                {
                    Ok(rows) => break rows,
                    // Galera: another node's claim of the same rows committed first
                    // (certification failure, 1213). InnoDB: a deadlock victim. The
                    // rows it took are now 'sending': claiming again finds others.
                    Err(e) if e.is_retryable() && tries < CLAIM_TRIES => {
                        tracing::debug!(error = %e, tries, "claim conflicted; claiming again");
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            // Queued rows are read in claim order straight off outbound_queue_claim
            // (state, priority DESC, id), stopping after `limit` due ones, instead of
            // sorting every due row: with a campaign's backlog due at once that sort
            // was ~16 ms per claim at 100,000 rows (0.2 ms this way). Deferred rows
            // keep the due-time index: most of them wait for a later retry.
            let sql = format!(
                "UPDATE outbound_queue SET state = 'sending', lease_node = ?1, lease_until = ?2, \
                 updated_at = ?3, lease_instance = ?5 WHERE id IN (SELECT id FROM ( \
                 SELECT id, priority FROM (SELECT id, priority FROM outbound_queue \
                 INDEXED BY outbound_queue_claim WHERE state = 'queued' \
                 AND next_attempt_at <= ?3 ORDER BY priority DESC, id LIMIT ?4) \
                 UNION ALL SELECT id, priority FROM (SELECT id, priority FROM outbound_queue \
                 WHERE state = 'deferred' AND next_attempt_at <= ?3 \
                 ORDER BY priority DESC, id LIMIT ?4) \
                 ) ORDER BY priority DESC, id LIMIT ?4) \
                 RETURNING {columns}"
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
                Claimed::from_row(row, now)
                    .map_err(|e| {
                        // Its lease runs out and it is claimed again: say so each time.
                        tracing::warn!(error = %e, "skipping a claimed row that does not decode");
                    })
                    .ok()
            })
            .collect())
    }

    /// The MySQL claim, one transaction: the due rows (`columns` of
    /// [`Claimed::COLUMNS`]), locked, read and leased.
    ///
    /// Queued rows are read straight off `outbound_queue_claim` (state, priority
    /// DESC, id) in claim order, stopping after `limit` (no filesort; the rows locked
    /// are the rows taken). Due deferred rows come off `outbound_queue_due` (state,
    /// next_attempt_at), oldest due first, also at most `limit`; the two lists are
    /// merged by (priority DESC, id). `SKIP LOCKED` lets nodes on one server claim
    /// side by side; on Galera locks are per node, and a claim that overlaps another
    /// node's fails certification at commit (1213), which [`Queue::claim`] retries.
    /// The locking reads return the whole rows (bodies included): the rows are
    /// read once, where the old claim read their ids and then selected them again.
    async fn claim_mysql(
        &mut self,
        columns: &str,
        node: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Vec<Val>>, DbError> {
        // READ COMMITTED for this transaction only: InnoDB then keeps locks on the
        // rows that matched (due ones), not on every index entry the scan passed.
        self.db
            .exec("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", Vec::new())
            .await?;
        let lists = [claim_queued_mysql(columns), claim_deferred_mysql(columns)];
        self.in_tx(async |db: &mut Db| {
            // (priority, id, row): id is the first column, priority the last.
            let mut due: Vec<(i64, i64, Vec<Val>)> = Vec::new();
            for sql in &lists {
                let rows = db.query(sql, vec![ts(now).into(), limit.into()]).await?;
                due.extend(rows.into_iter().filter_map(|r| {
                    let id = r.first()?.int()?;
                    Some((r.last().and_then(Val::int).unwrap_or(0), id, r))
                }));
            }
            due.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            if !due.is_empty() {
                let mut params: Vec<Val> = vec![
                    node.into(),
                    instance.into(),
                    ts(lease_until).into(),
                    ts(now).into(),
                ];
                params.extend(due.iter().map(|&(_, id, _)| Val::Int(id)));
                db.exec(
                    &format!(
                        "UPDATE outbound_queue SET state = 'sending', lease_node = ?, \
                         lease_instance = ?, lease_until = ?, updated_at = ? WHERE id IN ({})",
                        Db::placeholders(due.len())
                    ),
                    params,
                )
                .await?;
            }
            Ok(due.into_iter().map(|(_, _, row)| row).collect())
        })
        .await
    }

    /// Writes attempts: the queue rows' new state (only where this process still
    /// holds the lease) and the delivery log, in one transaction. Returns how many
    /// queue rows were still ours.
    pub async fn record(
        &mut self,
        node: &str,
        instance: &str,
        attempts: &[Attempt],
        campaign_of: &HashMap<i64, i64>,
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
            // One UPDATE per outcome per 100 rows (the per-row values in CASE id
            // WHEN … lists), instead of one round trip per row.
            for outcome in Outcome::ALL {
                let of: Vec<&Attempt> = attempts.iter().filter(|a| a.outcome == outcome).collect();
                for chunk in of.chunks(RECORD_CHUNK_ROWS) {
                    ours += record_outcome(db, outcome, chunk, &node, &instance).await?;
                }
            }
            // The log in multi-row INSERTs: one round trip per 64 attempts.
            for chunk in attempts.chunks(64) {
                let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let mut params: Vec<Val> = Vec::with_capacity(chunk.len() * 10);
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
                        campaign_of.get(&a.queue_id).copied().into(),
                    ]);
                }
                db.exec(
                    &format!(
                        "INSERT INTO outbound_log \
                         (at, queue_id, node_id, recipient, mx, code, status, text, outcome, \
                         campaign_id) VALUES {rows}"
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
    /// addresses and acts on it: batches of [`INTAKE_BATCH_ROWS`] by `mail_id`, each
    /// in one transaction with the cursor's advance (the cursor row is locked, so
    /// nodes take turns and nothing is read twice), until it has caught up or spent
    /// [`INTAKE_PASS`]. A batch reads only ids and recipients; bodies are fetched
    /// for the rows addressed to us. It reads no further than `horizon` allows:
    /// rows that may still be joined by lower ids committing late wait for them.
    pub async fn intake(
        &mut self,
        s: &Intake<'_>,
        horizon: &mut IntakeHorizon,
        now: DateTime<Utc>,
    ) -> Result<IntakeReport, DbError> {
        let mut report = IntakeReport::default();
        let started = std::time::Instant::now();
        while self.intake_batch(s, horizon, now, &mut report).await?
            && started.elapsed() < INTAKE_PASS
        {}
        Ok(report)
    }

    /// One intake batch, added to `report`; whether it was full (more may wait).
    async fn intake_batch(
        &mut self,
        s: &Intake<'_>,
        horizon: &mut IntakeHorizon,
        now: DateTime<Utc>,
        report: &mut IntakeReport,
    ) -> Result<bool, DbError> {
        let mysql = self.db.is_mysql();
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
                .await?;
            // No row (it was inserted just above) or NULL: from the start.
            let cursor = row::scalar_int(&cursor).unwrap_or(0);
            // The end of the primary key: one index probe on either store.
            let visible = db
                .query("SELECT MAX(mail_id) FROM new_mail", Vec::new())
                .await?;
            let Some(settled) = row::scalar_int(&visible)
                .and_then(|max| horizon.observe(max, std::time::Instant::now()))
                .filter(|&settled| settled > cursor)
            else {
                // Nothing new, or nothing new that cannot still be joined by a
                // lower id: the next pass looks again.
                return Ok(false);
            };
            let heads = db
                .query(
                    "SELECT mail_id, recipient FROM new_mail WHERE mail_id > ? \
                     AND mail_id <= ? ORDER BY mail_id LIMIT ?",
                    vec![cursor.into(), settled.into(), INTAKE_BATCH_ROWS.into()],
                )
                .await?;
            let full = heads.len() >= usize::try_from(INTAKE_BATCH_ROWS).unwrap_or(usize::MAX);
            let ours = |address: &str| {
                s.complaint_address
                    .is_some_and(|c| c.eq_ignore_ascii_case(address))
                    || s.verp.kind_of(address).is_some()
            };
            let mut last = cursor;
            let mut wanted = Vec::new();
            for head in heads {
                let Ok(mut f) = Fields::new(NEW_MAIL_HEAD, head) else {
                    continue;
                };
                // Skipped (neither scanned nor past the cursor by itself), as always.
                let (Ok(mail_id), Ok(address)) = (f.int("mail_id"), f.text("recipient")) else {
                    continue;
                };
                last = last.max(mail_id);
                report.scanned += 1;
                if ours(&address) {
                    wanted.push(Val::Int(mail_id));
                }
            }
            let rows = if wanted.is_empty() {
                Vec::new()
            } else {
                db.query(
                    &format!(
                        "SELECT {} FROM new_mail WHERE mail_id IN ({}) ORDER BY mail_id",
                        row::select_list(db, NewMail::COLUMNS),
                        Db::placeholders(wanted.len())
                    ),
                    wanted,
                )
                .await?
            };
            for new_mail in rows {
                let Ok(NewMail {
                    mail_id,
                    recipient: address,
                    mail,
                }) = NewMail::from_row(new_mail)
                else {
                    continue;
                };
                if s
                    .complaint_address
                    .is_some_and(|c| c.eq_ignore_ascii_case(&address))
                {
                    complaint(db, mysql, s.verp, mail_id, &mail, report, now).await?;
                    continue;
                }
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
                let queued = db
                    .query(
                        &format!(
                            "SELECT {} FROM outbound_queue WHERE id = ?",
                            row::select_list(db, BouncedRow::COLUMNS)
                        ),
                        vec![queue_id.into()],
                    )
                    .await?;
                // A row deleted since: nothing to act on.
                let Some(Ok(queued)) = queued
                    .into_iter()
                    .next()
                    .map(|r| BouncedRow::from_row(r, now))
                else {
                    continue;
                };
                // The suppression list and outbound_bounces keep addresses lowercased.
                let recipient = queued.recipient.to_ascii_lowercase();
                match kind {
                    // A campaign's unsubscribe ends the subscriber's membership of
                    // that campaign's lists only: one newsletter's unsubscribe must
                    // not block the address's transactional mail.
                    crate::verp::Kind::Unsubscribe if queued.campaign.is_some() => {
                        report.unsubscribes += 1;
                        if let Some((campaign, subscriber)) = queued.campaign {
                            unsubscribe_member(db, campaign, subscriber, now).await?;
                        }
                    }
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
                            sender: &queued.sender,
                            state: queued.state,
                            body: &queued.body,
                            arrival: queued.created,
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
            Ok(full)
        })
        .await
    }

    /// The node row for `node_id`, if any.
    pub async fn node(&mut self, node_id: &str) -> Result<Option<Node>, DbError> {
        let sql = format!("{} WHERE node_id = ?", Node::select(&self.db));
        Ok(self
            .db
            .query(&sql, vec![node_id.into()])
            .await?
            .into_iter()
            .find_map(|r| Node::from_row(r).ok()))
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

    /// Claimed rows of campaigns paused (`pause`) or cancelled since: back to
    /// `paused`, or deleted, while still leased to this process. The runner's
    /// sweep does the same for rows that came back to the queue otherwise.
    pub async fn put_back_stopped(
        &mut self,
        node: &str,
        instance: &str,
        ids: &[i64],
        cancelled: bool,
    ) -> Result<u64, DbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let what = if cancelled {
            "DELETE FROM outbound_queue"
        } else {
            "UPDATE outbound_queue SET state = 'paused', lease_node = NULL, \
             lease_instance = NULL, lease_until = NULL"
        };
        let mut params: Vec<Val> = vec![node.into(), instance.into()];
        params.extend(ids.iter().map(|&i| Val::Int(i)));
        self.db
            .exec(
                &format!(
                    "{what} WHERE state = 'sending' AND lease_node = ? AND lease_instance = ? \
                     AND id IN ({})",
                    Db::placeholders(ids.len())
                ),
                params,
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
                    "SELECT {} FROM outbound_templates WHERE id IN ({})",
                    row::select_list(&self.db, TemplateRow::COLUMNS),
                    Db::placeholders(ids.len())
                ),
                ids.iter().map(|&i| Val::Int(i)).collect(),
            )
            .await?;
        // A row without an id cannot be asked for: left out, as always (the rows
        // that name it then read "does not exist").
        Ok(rows
            .into_iter()
            .filter_map(|r| TemplateRow::from_row(r).ok())
            .map(|t| (t.id, t.template))
            .collect())
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
                        "SELECT {} FROM suppression WHERE address IN ({})",
                        row::select_list(&self.db, SUPPRESSED_COLUMNS),
                        Db::placeholders(chunk.len())
                    ),
                    chunk.iter().map(|a| Val::from(a.as_str())).collect(),
                )
                .await?;
            out.extend(rows.into_iter().filter_map(|r| {
                Fields::new(SUPPRESSED_COLUMNS, r)
                    .and_then(|mut f| f.text("address"))
                    .ok()
            }));
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
        sending: &EnqueueSending,
    ) -> Result<Vec<i64>, DbError> {
        let is_mysql = self.db.is_mysql();
        self.in_tx(async |db: &mut Db| {
            let mut ids = Vec::with_capacity(recipients.len());
            for r in recipients {
                db.exec(
                    "INSERT INTO outbound_queue (sender, recipient, body, priority, tag, \
                     pool, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    vec![
                        sender.into(),
                        r.as_str().into(),
                        Val::Bytes(body.to_vec()),
                        priority.into(),
                        tag.into(),
                        sending.pool.as_deref().into(),
                        sending.expires_at.map(ts).into(),
                    ],
                )
                .await?;
                let sql = if is_mysql {
                    "SELECT LAST_INSERT_ID()"
                } else {
                    "SELECT last_insert_rowid()"
                };
                let rows = db.query(sql, Vec::new()).await?;
                if let Some(id) = row::scalar_int(&rows) {
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

    /// The whole suppression list, by address.
    pub async fn suppress_list(&mut self) -> Result<Vec<SuppressionEntry>, DbError> {
        let sql = format!(
            "SELECT {} FROM suppression ORDER BY address",
            row::select_list(&self.db, SuppressionEntry::COLUMNS)
        );
        Ok(self
            .db
            .query(&sql, Vec::new())
            .await?
            .into_iter()
            .filter_map(|r| SuppressionEntry::from_row(r).ok())
            .collect())
    }

    pub async fn nodes(&mut self) -> Result<Vec<Node>, DbError> {
        let sql = format!("{} ORDER BY node_id", Node::select(&self.db));
        Ok(self
            .db
            .query(&sql, Vec::new())
            .await?
            .into_iter()
            .filter_map(|r| Node::from_row(r).ok())
            .collect())
    }

    /// Queue rows by state (the metrics' sample): the queue only, never the
    /// delivery log, which grows with every attempt.
    pub async fn state_counts(&mut self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT {} FROM outbound_queue GROUP BY state ORDER BY state",
                    row::select_list(&self.db, Tally::BY_STATE)
                ),
                Vec::new(),
            )
            .await?;
        Ok(tallies(rows, Tally::BY_STATE))
    }

    /// Everything `outbound stats` shows: the queue by state and the delivery log
    /// (the last minute, all time, first and last delivery).
    pub async fn stats(&mut self, now: DateTime<Utc>) -> Result<Stats, DbError> {
        let by_state = self.state_counts().await?;
        let minute_ago = ts(now - chrono::Duration::seconds(60));
        let log_last_minute = tallies(
            self.db
                .query(
                    &format!(
                        "SELECT {} FROM outbound_log WHERE at >= ? GROUP BY outcome",
                        row::select_list(&self.db, Tally::BY_OUTCOME)
                    ),
                    vec![minute_ago.into()],
                )
                .await?,
            Tally::BY_OUTCOME,
        )
        .into_iter()
        .collect();
        let log_total = tallies(
            self.db
                .query(
                    &format!(
                        "SELECT {} FROM outbound_log GROUP BY outcome",
                        row::select_list(&self.db, Tally::BY_OUTCOME)
                    ),
                    Vec::new(),
                )
                .await?,
            Tally::BY_OUTCOME,
        )
        .into_iter()
        .collect();
        let sql = format!(
            "SELECT {} FROM outbound_log WHERE outcome = 'delivered'",
            row::select_list(&self.db, DeliverySpan::COLUMNS)
        );
        let span = self.db.query(&sql, Vec::new()).await?;
        let DeliverySpan {
            first: first_delivery,
            last: last_delivery,
        } = DeliverySpan::from_rows(span);
        Ok(Stats {
            by_state,
            log_last_minute,
            log_total,
            first_delivery,
            last_delivery,
        })
    }
}

/// `(key, count)` of grouped rows; a group whose key or count does not read is
/// left out, as always.
fn tallies(rows: Vec<Vec<Val>>, columns: &'static [Column]) -> Vec<(String, i64)> {
    rows.into_iter()
        .filter_map(|r| Tally::from_row(r, columns).ok())
        .map(|t| (t.key, t.count))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn text(t: &str) -> Val {
        Val::Text(t.into())
    }

    #[test]
    fn every_query_selects_its_decoders_columns_in_its_dialect() {
        let db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        assert_eq!(
            row::select_list(&db, Claimed::COLUMNS),
            "id, sender, recipient, body, template_id, params, attempts, delay_notified, \
             CAST(created_at AS TEXT), campaign_id, pool, CAST(expires_at AS TEXT), subscriber_id, \
             priority"
        );
        assert_eq!(
            row::select_list(&db, DeliverySpan::COLUMNS),
            "CAST(MIN(at) AS TEXT), CAST(MAX(at) AS TEXT)"
        );
        assert!(Node::select(&db).starts_with("SELECT node_id, instance_id, hostname"));
    }

    #[test]
    fn a_claimed_row_needs_an_id_and_defaults_the_rest_as_documented() {
        let now = Utc::now();
        let row = |id: Val| {
            vec![
                id,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
            ]
        };
        assert_eq!(
            Claimed::from_row(row(Val::Null), now).unwrap_err(),
            RowError::Null("id")
        );
        let c = Claimed::from_row(row(Val::Int(9)), now).unwrap();
        assert_eq!((c.id, c.sender.as_str(), c.recipient.as_str()), (9, "", ""));
        assert_eq!((c.attempts, c.delay_notified, c.created), (0, false, now));
        assert!(c.body.is_none() && c.template_id.is_none() && c.params.is_none());
        // As MySQL sends them: everything as bytes.
        let c = Claimed::from_row(
            vec![
                Val::Bytes(b"3".to_vec()),
                Val::Bytes(b"a@b.test".to_vec()),
                Val::Bytes(b"c@d.test".to_vec()),
                Val::Bytes(b"Subject: x\r\n\r\n".to_vec()),
                Val::Null,
                Val::Null,
                Val::Int(-1),
                Val::Int(2),
                text("2026-03-04 05:06:07.890"),
                Val::Bytes(b"12".to_vec()),
                Val::Bytes(b"a".to_vec()),
                Val::Bytes(b"2026-03-05 00:00:00.000".to_vec()),
                Val::Bytes(b"44".to_vec()),
                Val::Bytes(b"7".to_vec()),
            ],
            now,
        )
        .unwrap();
        assert_eq!(c.pool.as_deref(), Some("a"));
        assert_eq!(c.expires_at, parse_ts("2026-03-05 00:00:00"));
        assert_eq!((c.id, c.sender.as_str()), (3, "a@b.test"));
        assert_eq!(c.body.as_deref(), Some(&b"Subject: x\r\n\r\n"[..]));
        assert_eq!((c.attempts, c.delay_notified), (0, true), "negative → 0");
        assert_eq!(ts(c.created), "2026-03-04 05:06:07.890");
        assert_eq!(c.campaign_id, Some(12));
        assert_eq!(c.subscriber_id, Some(44));
        assert!(Claimed::from_row(vec![Val::Int(1)], now).is_err(), "width");
    }

    #[test]
    fn times_are_written_as_the_strftime_pattern_wrote_them() {
        for text in [
            "2026-03-04 05:06:07.890",
            "2026-12-31 23:59:59.999",
            "0999-01-01 00:00:00.000",
            "2026-07-08 09:10:11.005",
        ] {
            let t = parse_ts(text).unwrap();
            assert_eq!(ts(t), text);
            assert_eq!(ts(t), t.format("%Y-%m-%d %H:%M:%S%.3f").to_string());
        }
        // Sub-millisecond digits are cut, not rounded, as before.
        let t = parse_ts("2026-03-04 05:06:07.890999").unwrap();
        assert_eq!(ts(t), "2026-03-04 05:06:07.890");
    }

    #[test]
    fn new_mail_needs_all_three_columns() {
        let ok = NewMail::from_row(vec![Val::Int(5), text("b@x.test"), text("raw")]).unwrap();
        assert_eq!((ok.mail_id, ok.recipient.as_str()), (5, "b@x.test"));
        assert_eq!(ok.mail, b"raw");
        for (i, name) in ["mail_id", "recipient", "mail"].into_iter().enumerate() {
            let mut row = vec![Val::Int(5), text("b@x.test"), text("raw")];
            row[i] = Val::Null;
            assert_eq!(NewMail::from_row(row).unwrap_err(), RowError::Null(name));
        }
    }

    #[test]
    fn the_bounced_row_defaults_as_the_intake_always_did() {
        let now = Utc::now();
        let r = BouncedRow::from_row(vec![Val::Null; 7], now).unwrap();
        assert_eq!((r.recipient.as_str(), r.sender.as_str()), ("", ""));
        assert_eq!((r.state, r.body.len(), r.created), (None, 0, now));
        let r = BouncedRow::from_row(
            vec![
                text("A@B.test"),
                text("app@x.test"),
                text("failed"),
                Val::Null,
                text("bogus"),
                Val::Int(4),
                Val::Int(9),
            ],
            now,
        )
        .unwrap();
        assert_eq!(
            r.recipient, "A@B.test",
            "lowercased by the intake, not here"
        );
        assert_eq!((r.state, r.created), (Some(RowState::Failed), now));
        assert_eq!(r.campaign, Some((4, 9)));
        assert_eq!(
            BouncedRow::from_row(
                vec![
                    Val::Null,
                    Val::Null,
                    text("weird"),
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::Null
                ],
                now
            )
            .unwrap()
            .state,
            None
        );
    }

    #[test]
    fn templates_need_an_id_and_refuse_unknown_encodings_by_value() {
        let row = |id: Val, enc: Val| {
            vec![
                id,
                text("News <n@x.test>"),
                Val::Null,
                text("hi [Name]"),
                Val::Null,
                enc,
                Val::Null,
            ]
        };
        assert_eq!(
            TemplateRow::from_row(row(Val::Null, Val::Null)).unwrap_err(),
            RowError::Null("id")
        );
        let t = TemplateRow::from_row(row(Val::Int(2), text("base64"))).unwrap();
        let template = t.template.unwrap();
        assert_eq!((t.id, template.subject.as_str()), (2, ""));
        assert_eq!(template.text.as_deref(), Some("hi [Name]"));
        assert_eq!(template.text_encoding, Some(TransferEncoding::Base64));
        let bad = TemplateRow::from_row(row(Val::Int(3), text("uuencode"))).unwrap();
        assert!(bad.template.is_err());
    }

    #[test]
    fn node_rows_need_an_id_and_parse_their_times() {
        let mut row = vec![
            text("n1"),
            Val::Null,
            text("host"),
            Val::Int(42),
            Val::Int(2),
            Val::Int(5),
            text("2026-01-01 00:00:00.000"),
            text("2026-01-01 00:00:05.000"),
            Val::Null,
        ];
        let n = Node::from_row(row.clone()).unwrap();
        assert_eq!((n.node_id.as_str(), n.instance_id.as_str()), ("n1", ""));
        assert_eq!((n.pid, n.threads, n.heartbeat_secs), (42, 2, 5));
        assert_eq!(n.heartbeat_text, "2026-01-01 00:00:05.000");
        assert_eq!(
            n.heartbeat_at.map(ts).as_deref(),
            Some("2026-01-01 00:00:05.000")
        );
        assert!(n.stopped_at.is_none());
        row[0] = Val::Null;
        assert_eq!(Node::from_row(row).unwrap_err(), RowError::Null("node_id"));
    }

    #[test]
    fn stats_rows_need_key_and_count_and_the_span_may_be_empty() {
        let t = Tally::from_row(vec![text("queued"), Val::Int(4)], Tally::BY_STATE).unwrap();
        assert_eq!(
            t,
            Tally {
                key: "queued".into(),
                count: 4
            }
        );
        assert_eq!(
            Tally::from_row(vec![Val::Null, Val::Int(4)], Tally::BY_OUTCOME).unwrap_err(),
            RowError::Null("outcome")
        );
        assert_eq!(
            DeliverySpan::from_rows(vec![vec![Val::Null, Val::Null]]),
            DeliverySpan::default()
        );
        assert_eq!(DeliverySpan::from_rows(Vec::new()), DeliverySpan::default());
        let span = DeliverySpan::from_rows(vec![vec![
            text("2026-01-01 00:00:00.000"),
            text("2026-01-02 00:00:00.000"),
        ]]);
        assert_eq!(
            span.last.map(ts).as_deref(),
            Some("2026-01-02 00:00:00.000")
        );
    }

    #[test]
    fn suppression_entries_print_missing_values_as_empty() {
        let e = SuppressionEntry::from_row(vec![
            text("a@b.test"),
            Val::Null,
            text("manual"),
            text("2026-01-01 00:00:00.000"),
        ])
        .unwrap();
        assert_eq!((e.address.as_str(), e.reason.as_str()), ("a@b.test", ""));
        assert_eq!(e.source, "manual");
    }

    #[test]
    fn row_states_are_the_schemas() {
        for s in [
            "queued",
            "sending",
            "deferred",
            "delivered",
            "failed",
            "suppressed",
            "paused",
        ] {
            assert!(RowState::parse(s).is_some(), "{s}");
        }
        assert_eq!(RowState::parse("FAILED"), None);
        assert_eq!(RowState::parse(""), None);
    }
}

/// The MySQL claim's plan and locks, on a private MariaDB.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod claim_plan_tests {
    use super::*;

    fn text(v: &Val) -> String {
        v.text().unwrap_or_default()
    }

    #[test]
    fn the_mysql_claim_reads_its_index_in_order_and_locks_only_what_it_takes() {
        crate::db::on_mariadb(async |url, mut a| {
            let mut b = Db::open(&url, false).await.unwrap();
            // 3,000 queued rows over three priorities and 300 due deferred ones.
            a.exec("SET SESSION max_recursive_iterations = 100000", Vec::new())
                .await
                .unwrap();
            a.exec(
                "INSERT INTO outbound_queue (sender, recipient, body, priority, state, \
                 next_attempt_at) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 \
                 FROM n WHERE i < 3300) SELECT 's@x.test', CONCAT('r', i, '@y.test'), 'b', \
                 i % 3, IF(i % 11 = 0, 'deferred', 'queued'), '2020-01-01 00:00:00' FROM n",
                Vec::new(),
            )
            .await
            .unwrap();
            a.exec("ANALYZE TABLE outbound_queue", Vec::new())
                .await
                .unwrap();
            let now = ts(Utc::now());
            let columns = row::select_list(&a, Claimed::COLUMNS);
            let queued = claim_queued_mysql(&columns);
            for (sql, key) in [
                (queued.clone(), "outbound_queue_claim"),
                (claim_deferred_mysql(&columns), "outbound_queue_due"),
            ] {
                let plan = a
                    .query(
                        &format!("EXPLAIN {sql}"),
                        vec![now.clone().into(), 100.into()],
                    )
                    .await
                    .unwrap();
                // id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra
                let row = &plan[0];
                assert_eq!(text(&row[5]), key, "{plan:?}");
                assert!(!text(&row[9]).contains("filesort"), "{sql}: {plan:?}");
            }
            // Two claims side by side: the second, while the first still holds its
            // rows, gets the next 100 in claim order, none of the first's.
            let ids = |rows: Vec<Vec<Val>>| -> Vec<i64> {
                rows.iter().filter_map(|r| r[0].int()).collect()
            };
            a.begin().await.unwrap();
            let first = ids(a
                .query(&queued, vec![now.clone().into(), 100.into()])
                .await
                .unwrap());
            b.begin().await.unwrap();
            let second = ids(b
                .query(&queued, vec![now.clone().into(), 100.into()])
                .await
                .unwrap());
            let order = ids(b
                .query(
                    "SELECT id FROM outbound_queue WHERE state = 'queued' \
                     ORDER BY priority DESC, id LIMIT 200",
                    Vec::new(),
                )
                .await
                .unwrap());
            assert_eq!(first, order[..100]);
            assert_eq!(second, order[100..]);
            b.rollback().await;
            a.rollback().await;
        });
    }
    /// Statements this session has run so far (the status query itself counts one).
    async fn questions(db: &mut Db) -> i64 {
        let rows = db
            .query("SHOW SESSION STATUS LIKE 'Questions'", Vec::new())
            .await
            .unwrap();
        rows[0][1].int().unwrap()
    }

    #[test]
    fn a_mysql_claim_reads_whole_rows_once_in_claim_order_and_leases_them() {
        crate::db::on_mariadb(async |_, db| {
            let mut q = Queue::new(db);
            // 40 queued rows over two priorities, 10 due deferred ones, 5 deferred
            // ones not due yet; bodies name their row.
            q.db()
                .exec(
                    "INSERT INTO outbound_queue (sender, recipient, body, priority, state, \
                     next_attempt_at) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 \
                     FROM n WHERE i < 55) SELECT 's@x.test', CONCAT('r', i, '@y.test'), \
                     CONCAT('Subject: ', i, '\r\n\r\nbody ', i, '\r\n'), i % 2, \
                     IF(i > 40, 'deferred', 'queued'), \
                     IF(i > 50, '2037-01-01 00:00:00', '2020-01-01 00:00:00') FROM n",
                    Vec::new(),
                )
                .await
                .unwrap();
            let now = Utc::now();
            let until = now + chrono::Duration::seconds(60);
            let before = questions(q.db()).await;
            let first = q.claim("n1", "i1", now, until, 30).await.unwrap();
            let statements = questions(q.db()).await - before - 1;
            // SET TRANSACTION, START TRANSACTION, the two locking SELECTs (whole
            // rows), the UPDATE that leases them, COMMIT: no second SELECT.
            assert_eq!(statements, 6, "statements per claim");
            let rest = q.claim("n1", "i1", now, until, 100).await.unwrap();
            assert_eq!(q.claim("n1", "i1", now, until, 100).await.unwrap().len(), 0);
            // Claim order: priority 1 (odd ids) first, then by id; every due row
            // once, the ones not yet due never.
            let ids: Vec<i64> = first.iter().chain(&rest).map(|c| c.id).collect();
            let mut want: Vec<i64> = (1..=50).filter(|i| i % 2 == 1).collect();
            want.extend((1..=50).filter(|i| i % 2 == 0));
            assert_eq!(ids, want);
            assert_eq!(first.len(), 30);
            for c in first.iter().chain(&rest) {
                assert_eq!(c.recipient, format!("r{}@y.test", c.id));
                let body = format!("Subject: {0}\r\n\r\nbody {0}\r\n", c.id);
                assert_eq!(c.body.as_deref(), Some(body.as_bytes()));
            }
            let leased = q
                .db()
                .query(
                    "SELECT COUNT(*) FROM outbound_queue WHERE state = 'sending' \
                     AND lease_node = 'n1' AND lease_instance = 'i1'",
                    Vec::new(),
                )
                .await
                .unwrap();
            assert_eq!(row::scalar_int(&leased), Some(50));
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod intake_order_tests {
    use super::*;
    use std::time::Duration;

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    /// A queue row to unsubscribe from, and the unsubscribe address naming it.
    async fn queued(db: &mut Db, verp: &crate::verp::Verp, recipient: &str) -> String {
        db.exec(
            "INSERT INTO outbound_queue (sender, recipient, body) VALUES ('s@x.test', ?, 'b')",
            vec![recipient.into()],
        )
        .await
        .unwrap();
        let id = row::scalar_int(
            &db.query("SELECT MAX(id) FROM outbound_queue", Vec::new())
                .await
                .unwrap(),
        )
        .unwrap();
        verp.address(crate::verp::Kind::Unsubscribe, id)
    }

    /// A `new_mail` row as smtpd writes it, to `recipient`.
    async fn arrive(db: &mut Db, recipient: &str) {
        db.exec(
            "INSERT INTO new_mail (date, `from`, `to`, subject, charset, mail, hash, \
             content_type, recipient, ip_addr, return_path, message_id, reply_to, sender, \
             helo, size) VALUES (NOW(), 'a@b.test', ?, 'unsubscribe', 'utf-8', \
             'Subject: unsubscribe\r\n\r\n', MD5(UUID()), 'text/plain', ?, '127.0.0.1', \
             'a@b.test', '<m@b.test>', '', '', 'b.test', 25)",
            vec![recipient.into(), recipient.into()],
        )
        .await
        .unwrap();
    }

    async fn suppressed(db: &mut Db, address: &str) -> i64 {
        row::scalar_int(
            &db.query(
                "SELECT COUNT(*) FROM suppression WHERE address = ?",
                vec![address.into()],
            )
            .await
            .unwrap(),
        )
        .unwrap()
    }

    /// Two writers commit out of id order (two smtpd nodes, Galera, two
    /// committers): a lower id becomes visible after a higher one was read.
    #[test]
    fn a_row_committed_after_a_higher_id_was_read_is_acted_on_once_the_ids_settle() {
        crate::db::on_mariadb(async |url, db| {
            let verp = crate::verp::Verp::new("bounce.test", "bounces", "unsubscribe", KEY);
            let mut late = Db::open(&url, false).await.unwrap();
            let mut other = Db::open(&url, false).await.unwrap();
            let mut q = Queue::new(db);
            let settings = Intake {
                verp: &verp,
                node: "n1",
                policy: bounce_policy::Settings {
                    dsn: false,
                    soft_bounce_limit: 3,
                    soft_bounce_window: Duration::from_secs(3600),
                    reporting_mta: "relay.test",
                    message_id_domain: "relay.test",
                },
                complaint_address: None,
            };
            // One ordering race, read twice: the horizon's rule is what stands
            // between it and a lost unsubscribe.
            let mut race = async |q: &mut Queue, horizon: &mut IntakeHorizon, who: &str| {
                let address = queued(q.db(), &verp, who).await;
                // The lower id: allocated now, committed last.
                late.begin().await.unwrap();
                arrive(&mut late, &address).await;
                // A higher id, visible at once.
                arrive(&mut other, "someone@inbox.test").await;
                let before = q.intake(&settings, horizon, Utc::now()).await.unwrap();
                late.commit().await.unwrap();
                let mut after = 0;
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    after += q
                        .intake(&settings, horizon, Utc::now())
                        .await
                        .unwrap()
                        .unsubscribes;
                }
                (before.unsubscribes, after)
            };
            // No settle: the cursor steps over the late row for good. This is the
            // bug the settle exists for, and it shows the race is real here.
            let mut eager = IntakeHorizon::new(Duration::ZERO);
            assert_eq!(race(&mut q, &mut eager, "first@y.test").await, (0, 0));
            assert_eq!(suppressed(q.db(), "first@y.test").await, 0);
            // A settle: the late row is read once its ids settled, exactly once.
            let mut settled = IntakeHorizon::new(Duration::from_millis(1500));
            assert_eq!(race(&mut q, &mut settled, "second@y.test").await, (0, 1));
            assert_eq!(suppressed(q.db(), "second@y.test").await, 1);
            // And rows that commit in order are read as before: once, after the
            // settle.
            let address = queued(q.db(), &verp, "third@y.test").await;
            arrive(&mut other, &address).await;
            let mut seen = 0;
            for _ in 0..40 {
                seen += q
                    .intake(&settings, &mut settled, Utc::now())
                    .await
                    .unwrap()
                    .unsubscribes;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(seen, 1);
            assert_eq!(suppressed(q.db(), "third@y.test").await, 1);
        });
    }
}
