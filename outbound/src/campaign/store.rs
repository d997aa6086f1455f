//! The SQL of campaigns for the HTTP API, the console and the CLI: creating one
//! (its template, its lists) in one transaction, replacing a draft's the same way, the state transitions with what they do to the
//! campaign's queue rows, the counts and the timeline.
//!
//! Owns: the `campaigns` and `campaign_lists` tables' writes outside the runner,
//! the campaign's `outbound_templates` row, and the campaign's queue rows on
//! pause (→ `paused`), resume (→ due again, re-spaced at the campaign's rate) and
//! cancel (deleted unless being sent). Every query is scoped to one account, or
//! to none for operators (`account = None`, the CLI).
//! Must not: decide which transitions exist (`campaign::transition` does), nor
//! expand recipients (`runner` does).

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Action, FieldError, Point, State, Valid};
use crate::db::{Db, DbError, Val};
use crate::queue::{parse_ts, ts};
use crate::row::{self, Column, Fields};

/// A recipient's tag values as JSON, from the subscriber row `s` (SQLite). The
/// same rule as [`super::recipient_params`]; nested CASEs because json_type() of
/// invalid JSON is an error, and CASE is the one construct evaluated lazily.
pub const PARAMS_SQLITE: &str = "json_patch(CASE WHEN json_valid(s.attributes) THEN \
     CASE WHEN json_type(s.attributes) = 'object' THEN s.attributes ELSE '{}' END ELSE '{}' END, \
     json_object('Name', s.name, 'Email', s.email, 'name', s.name, 'email', s.email))";
/// The same for MySQL / MariaDB.
pub const PARAMS_MYSQL: &str = "JSON_MERGE_PATCH(CASE WHEN JSON_VALID(s.attributes) THEN \
     CASE WHEN JSON_TYPE(s.attributes) = 'OBJECT' THEN s.attributes ELSE '{}' END ELSE '{}' END, \
     JSON_OBJECT('Name', s.name, 'Email', s.email, 'name', s.name, 'email', s.email))";

/// The most campaigns `GET /api/v1/campaigns` lists (newest first).
pub const MAX_LISTED: i64 = 1_000;
/// The most timeline points one request returns (the earliest ones).
pub const MAX_POINTS: usize = 10_000;

/// The time `start + (rn - 1) / rate` in `db`'s dialect, as SQL with its
/// parameters in order: the due time of the rn-th row of a window spaced at the
/// campaign's rate (`interval_secs` = 1/R, 0 without a rate).
pub fn spaced_time(
    db: &Db,
    rn: &str,
    start: DateTime<Utc>,
    interval_secs: f64,
) -> (String, Vec<Val>) {
    if db.is_mysql() {
        (
            format!("TIMESTAMPADD(MICROSECOND, CAST(ROUND(({rn} - 1) * ?) AS SIGNED), ?)"),
            vec![Val::Real(interval_secs * 1e6), ts(start).into()],
        )
    } else {
        (
            format!("strftime('%Y-%m-%d %H:%M:%f', ? + ({rn} - 1) * ?, 'unixepoch')"),
            vec![
                Val::Real(start.timestamp_millis() as f64 / 1000.0),
                Val::Real(interval_secs),
            ],
        )
    }
}

/// The longest spacing between two rows of a campaign: a rate below one message
/// an hour is taken as one an hour, so that due times stay within what both
/// dialects' time columns hold.
pub const MAX_INTERVAL_SECS: f64 = 3_600.0;
/// The furthest ahead `next_send_at` is moved (ten years, in milliseconds).
pub const MAX_SPAN_MS: f64 = 10.0 * 365.0 * 86_400_000.0;

/// 1/R in seconds (at most [`MAX_INTERVAL_SECS`]); 0 without a rate (every row
/// due at once).
pub fn interval_secs(rate: Option<f64>) -> f64 {
    rate.filter(|r| *r > 0.0)
        .map_or(0.0, |r| (1.0 / r).min(MAX_INTERVAL_SECS))
}

/// A stored time as RFC 3339 UTC (milliseconds).
pub fn rfc3339(stored: Option<String>) -> Option<String> {
    stored
        .as_deref()
        .and_then(parse_ts)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// `SELECT LAST_INSERT_ID()` / `last_insert_rowid()`.
async fn last_id(db: &mut Db) -> Result<Option<i64>, DbError> {
    let sql = if db.is_mysql() {
        "SELECT LAST_INSERT_ID()"
    } else {
        "SELECT last_insert_rowid()"
    };
    Ok(row::scalar_int(&db.query(sql, Vec::new()).await?))
}

/// Why a campaign could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Field(FieldError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Creates a draft: the template, the campaign and its lists, in one transaction.
/// Lists of another account (or none) are refused naming the field and the id.
pub async fn create(db: &mut Db, account: i64, v: &Valid) -> Result<i64, CreateError> {
    let mut random = [0u8; 12];
    // No randomness: a fixed-name collision below tells the client to retry.
    let _ = getrandom::fill(&mut random);
    let template_name = format!(
        "campaign-{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    db.in_tx(async |db: &mut Db| {
        check_lists(db, account, v).await?;
        check_tracking_domains(db, account, v).await?;
        db.exec(
            "INSERT INTO outbound_templates (name, from_header, subject, text_body, html_body) \
             VALUES (?, ?, ?, ?, ?)",
            vec![
                template_name.as_str().into(),
                v.from_header.as_str().into(),
                v.subject.as_str().into(),
                v.text.clone().into(),
                v.html.clone().into(),
            ],
        )
        .await?;
        let template = last_id(db)
            .await?
            .ok_or(DbError::Timeout(std::time::Duration::ZERO))?;
        db.exec(
            &format!(
                "INSERT INTO campaigns (account_id, template_id, {SETTINGS}) \
                 VALUES (?, ?, {})",
                Db::placeholders(SETTINGS_COUNT)
            ),
            [vec![account.into(), template.into()], settings(v)].concat(),
        )
        .await?;
        let id = last_id(db)
            .await?
            .ok_or(DbError::Timeout(std::time::Duration::ZERO))?;
        number_links(db, id, v).await?;
        insert_lists(db, id, v).await?;
        Ok(id)
    })
    .await
}

/// Refuses lists of another account (or none), naming the field and the id.
async fn check_lists(db: &mut Db, account: i64, v: &Valid) -> Result<(), CreateError> {
    for (field, ids) in [("lists", &v.lists), ("exclude_lists", &v.exclude_lists)] {
        if ids.is_empty() {
            continue;
        }
        let mut params: Vec<Val> = vec![account.into()];
        params.extend(ids.iter().map(|&i| Val::Int(i)));
        let found: Vec<i64> = db
            .query(
                &format!(
                    "SELECT id FROM lists WHERE account_id = ? AND id IN ({})",
                    Db::placeholders(ids.len())
                ),
                params,
            )
            .await?
            .iter()
            .filter_map(|r| r.first().and_then(Val::int))
            .collect();
        if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
            return Err(CreateError::Field(FieldError::new(
                field,
                format!("list {missing} not found"),
            )));
        }
    }
    Ok(())
}

async fn insert_lists(db: &mut Db, id: i64, v: &Valid) -> Result<(), DbError> {
    for (kind, ids) in [("include", &v.lists), ("exclude", &v.exclude_lists)] {
        for &list in ids {
            db.exec(
                "INSERT INTO campaign_lists (campaign_id, list_id, kind) VALUES (?, ?, ?)",
                vec![id.into(), list.into(), kind.into()],
            )
            .await?;
        }
    }
    Ok(())
}

/// Why a draft was not edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("campaign {0} not found")]
    NotFound(i64),
    /// Only a draft can be edited: what is running has its message in the queue.
    #[error("only a draft can be edited; this campaign is {0}")]
    NotDraft(String),
    #[error("{0}")]
    Field(FieldError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<CreateError> for EditError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Field(f) => Self::Field(f),
            CreateError::Db(d) => Self::Db(d),
        }
    }
}

/// Replaces draft `id` of `account` with `v` (its template, name, rate, send
/// time and lists), in one transaction; refused unless it is still a draft.
/// The campaign columns a draft sets, created or edited (in [`settings`]'s order).
const SETTINGS: &str =
    "name, sender, messages_per_second, send_at, pool, tracking_domains, track_opens";
const SETTINGS_COUNT: usize = 7;

/// The values of [`SETTINGS`].
fn settings(v: &Valid) -> Vec<Val> {
    vec![
        v.name.as_str().into(),
        v.sender.as_str().into(),
        v.messages_per_second.map_or(Val::Null, Val::Real),
        v.send_at.map(ts).into(),
        v.pool.as_deref().into(),
        serde_json::to_string(&v.tracking_domains)
            .unwrap_or_else(|_| "[]".to_owned())
            .into(),
        i64::from(v.track_opens).into(),
    ]
}

/// Numbers the links of a campaign with tracking domains (the relay masks only
/// these).
async fn number_links(db: &mut Db, id: i64, v: &Valid) -> Result<(), DbError> {
    if !v.tracking_domains.is_empty() {
        let urls = crate::tracking::links::extract(v.html.as_deref(), v.text.as_deref());
        crate::tracking::store::insert_links(db, id, &urls).await?;
    }
    Ok(())
}

/// 400 `tracking_domains` unless every one is the account's.
async fn check_tracking_domains(db: &mut Db, account: i64, v: &Valid) -> Result<(), CreateError> {
    if let Some(d) =
        crate::tracking::store::first_foreign_domain(db, account, &v.tracking_domains).await?
    {
        return Err(CreateError::Field(FieldError::new(
            "tracking_domains",
            format!("{d} is not a tracking domain of this account"),
        )));
    }
    Ok(())
}

/// A campaign's tracking domains and whether it counts opens (the console's
/// draft form starts with them).
pub async fn tracking_settings(db: &mut Db, id: i64) -> Result<(Vec<String>, bool), DbError> {
    let rows = db
        .query(
            "SELECT tracking_domains, track_opens FROM campaigns WHERE id = ?",
            vec![id.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok((Vec::new(), false));
    };
    let domains = row
        .first()
        .and_then(Val::text)
        .and_then(|j| serde_json::from_str::<Vec<String>>(&j).ok())
        .unwrap_or_default();
    let opens = row.get(1).and_then(Val::int).unwrap_or(0) != 0;
    Ok((domains, opens))
}

pub async fn update_draft(db: &mut Db, account: i64, id: i64, v: &Valid) -> Result<(), EditError> {
    db.in_tx(async |db: &mut Db| {
        let rows = db
            .query(
                "SELECT state, template_id FROM campaigns WHERE id = ? AND account_id = ?",
                vec![id.into(), account.into()],
            )
            .await?;
        let row = rows.first().ok_or(EditError::NotFound(id))?;
        let state = row.first().and_then(Val::text).unwrap_or_default();
        if state != State::Draft.as_str() {
            return Err(EditError::NotDraft(state));
        }
        let template = row.get(1).and_then(Val::int).ok_or(EditError::NotFound(id))?;
        check_lists(db, account, v).await?;
        check_tracking_domains(db, account, v).await?;
        db.exec(
            "UPDATE outbound_templates SET from_header = ?, subject = ?, text_body = ?, html_body = ? \
             WHERE id = ?",
            vec![
                v.from_header.as_str().into(),
                v.subject.as_str().into(),
                v.text.clone().into(),
                v.html.clone().into(),
                template.into(),
            ],
        )
        .await?;
        // `state = 'draft'` again: a start committed by another connection since
        // the SELECT leaves this edit without effect rather than half-applied.
        let changed = db
            .exec(
                &format!(
                    "UPDATE campaigns SET {} WHERE id = ? AND state = 'draft'",
                    SETTINGS.replace(',', " = ?,") + " = ?"
                ),
                [settings(v), vec![id.into()]].concat(),
            )
            .await?;
        if changed == 0 {
            return Err(EditError::NotDraft("no longer a draft".into()));
        }
        db.exec(
            "DELETE FROM campaign_lists WHERE campaign_id = ?",
            vec![id.into()],
        )
        .await?;
        insert_lists(db, id, v).await?;
        // A draft has had no click yet: its links are numbered afresh from the
        // edited bodies.
        db.exec(
            "DELETE FROM campaign_links WHERE campaign_id = ?",
            vec![id.into()],
        )
        .await?;
        number_links(db, id, v).await?;
        Ok(())
    })
    .await
}

/// The text and HTML bodies of campaign `id` of `account` (for editing a draft).
pub async fn bodies(
    db: &mut Db,
    account: i64,
    id: i64,
) -> Result<Option<(Option<String>, Option<String>)>, DbError> {
    let rows = db
        .query(
            "SELECT t.text_body, t.html_body FROM campaigns c \
             JOIN outbound_templates t ON t.id = c.template_id WHERE c.id = ? AND c.account_id = ?",
            vec![id.into(), account.into()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .map(|r| (r.first().and_then(Val::text), r.get(1).and_then(Val::text))))
}

/// A campaign as `GET /api/v1/campaigns/{id}` shows it (the counts apart).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Campaign {
    pub id: i64,
    #[serde(skip)]
    pub account_id: i64,
    pub name: String,
    pub state: String,
    pub from: String,
    pub subject: String,
    pub lists: Vec<i64>,
    pub exclude_lists: Vec<i64>,
    pub messages_per_second: Option<f64>,
    pub send_at: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub recipients: i64,
    /// Sending pool (`sending`).
    pub pool: Option<String>,
    /// Why the system paused it (its account's auto-pause); None otherwise.
    pub paused_reason: Option<String>,
}

impl Campaign {
    const COLUMNS: &'static [Column] = &[
        Column::plain("c.id"),
        Column::plain("c.account_id"),
        Column::plain("c.name"),
        Column::plain("c.state"),
        Column::plain("t.from_header"),
        Column::plain("t.subject"),
        Column::plain("c.messages_per_second"),
        Column::text("c.send_at"),
        Column::text("c.created_at"),
        Column::text("c.started_at"),
        Column::text("c.finished_at"),
        Column::plain("c.recipients"),
        Column::plain("c.pool"),
        Column::plain("c.paused_reason"),
    ];

    /// Refused without id, account or state; the texts are NOT NULL in the
    /// schema (read as `''` should one be NULL), times optional.
    fn from_row(row: Vec<Val>) -> Result<Self, row::RowError> {
        let rate = row.get(6).and_then(|v| match v {
            Val::Real(r) => Some(*r),
            Val::Int(i) => Some(*i as f64),
            Val::Text(_) | Val::Bytes(_) => v.text().and_then(|t| t.trim().parse().ok()),
            Val::Null => None,
        });
        let mut f = Fields::new(Self::COLUMNS, row)?;
        Ok(Self {
            id: f.int("c.id")?,
            account_id: f.int("c.account_id")?,
            name: f.opt_text("c.name")?.unwrap_or_default(),
            state: f.text("c.state")?,
            from: f.opt_text("t.from_header")?.unwrap_or_default(),
            subject: f.opt_text("t.subject")?.unwrap_or_default(),
            lists: Vec::new(),
            exclude_lists: Vec::new(),
            messages_per_second: rate,
            send_at: rfc3339(f.opt_text("c.send_at")?),
            created_at: rfc3339(f.opt_text("c.created_at")?),
            started_at: rfc3339(f.opt_text("c.started_at")?),
            finished_at: rfc3339(f.opt_text("c.finished_at")?),
            recipients: f.opt_int("c.recipients")?.unwrap_or(0),
            pool: f.opt_text("c.pool")?,
            paused_reason: f.opt_text("c.paused_reason")?,
        })
    }
}

fn account_filter(account: Option<i64>, params: &mut Vec<Val>) -> &'static str {
    match account {
        Some(a) => {
            params.push(a.into());
            " AND c.account_id = ?"
        }
        None => "",
    }
}

/// Campaign `id` (of `account`, or of any with None), with its lists.
pub async fn get(db: &mut Db, account: Option<i64>, id: i64) -> Result<Option<Campaign>, DbError> {
    let mut params = vec![Val::Int(id)];
    let filter = account_filter(account, &mut params);
    let sql = format!(
        "SELECT {} FROM campaigns c LEFT JOIN outbound_templates t ON t.id = c.template_id \
         WHERE c.id = ?{filter}",
        row::select_list(db, Campaign::COLUMNS)
    );
    let Some(mut c) = db
        .query(&sql, params)
        .await?
        .into_iter()
        .find_map(|r| Campaign::from_row(r).ok())
    else {
        return Ok(None);
    };
    let lists = db
        .query(
            "SELECT list_id, kind FROM campaign_lists WHERE campaign_id = ? ORDER BY list_id",
            vec![id.into()],
        )
        .await?;
    for r in lists {
        let (Some(list), Some(kind)) = (r.first().and_then(Val::int), r.get(1).and_then(Val::text))
        else {
            continue;
        };
        if kind == "exclude" {
            c.exclude_lists.push(list);
        } else {
            c.lists.push(list);
        }
    }
    Ok(Some(c))
}

/// The account's campaigns, newest first, at most [`MAX_LISTED`] (without lists).
pub async fn list(db: &mut Db, account: i64) -> Result<Vec<Campaign>, DbError> {
    let sql = format!(
        "SELECT {} FROM campaigns c LEFT JOIN outbound_templates t ON t.id = c.template_id \
         WHERE c.account_id = ? ORDER BY c.id DESC LIMIT ?",
        row::select_list(db, Campaign::COLUMNS)
    );
    Ok(db
        .query(&sql, vec![account.into(), MAX_LISTED.into()])
        .await?
        .into_iter()
        .filter_map(|r| Campaign::from_row(r).ok())
        .collect())
}

/// A campaign's counts (`GET /api/v1/campaigns/{id}`, `outbound campaign stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Queue rows the expansion made.
    pub recipients: i64,
    /// Rows queued, being sent or paused.
    pub queued: i64,
    pub delivered: i64,
    pub deferred: i64,
    /// Rows with a bounce recorded.
    pub bounced: i64,
    /// Failed rows without a bounce record.
    pub failed: i64,
    pub suppressed: i64,
    /// Memberships its unsubscribe requests ended.
    pub unsubscribed: i64,
    /// Rows a feedback-loop report (complaint) was about.
    pub complained: i64,
}

impl Counts {
    /// `name value` pairs in the order the CLI prints them.
    pub fn pairs(&self) -> [(&'static str, i64); 9] {
        [
            ("recipients", self.recipients),
            ("queued", self.queued),
            ("delivered", self.delivered),
            ("deferred", self.deferred),
            ("bounced", self.bounced),
            ("failed", self.failed),
            ("suppressed", self.suppressed),
            ("unsubscribed", self.unsubscribed),
            ("complained", self.complained),
        ]
    }
}

pub async fn counts(db: &mut Db, c: &Campaign) -> Result<Counts, DbError> {
    let mut n = Counts {
        recipients: c.recipients,
        ..Counts::default()
    };
    let mut failed = 0;
    // The (campaign_id, state) index answers this without reading rows.
    for r in db
        .query(
            "SELECT state, COUNT(*) FROM outbound_queue WHERE campaign_id = ? GROUP BY state",
            vec![c.id.into()],
        )
        .await?
    {
        let (Some(state), Some(count)) =
            (r.first().and_then(Val::text), r.get(1).and_then(Val::int))
        else {
            continue;
        };
        match state.as_str() {
            "queued" | "sending" | "paused" => n.queued += count,
            "delivered" => n.delivered += count,
            "deferred" => n.deferred += count,
            "failed" => failed += count,
            "suppressed" => n.suppressed += count,
            _ => {}
        }
    }
    let bounced = db
        .query(
            "SELECT COUNT(DISTINCT q.id), COUNT(DISTINCT CASE WHEN q.state = 'failed' THEN q.id END) \
             FROM outbound_bounces b JOIN outbound_queue q ON q.id = b.queue_id \
             WHERE q.campaign_id = ?",
            vec![c.id.into()],
        )
        .await?;
    let first = bounced.first();
    n.bounced = first
        .and_then(|r| r.first())
        .and_then(Val::int)
        .unwrap_or(0);
    let failed_bounced = first.and_then(|r| r.get(1)).and_then(Val::int).unwrap_or(0);
    n.failed = (failed - failed_bounced).max(0);
    n.unsubscribed = row::scalar_int(
        &db.query(
            "SELECT COUNT(*) FROM list_members WHERE unsubscribed_by = ?",
            vec![c.id.into()],
        )
        .await?,
    )
    .unwrap_or(0);
    // Rows of the campaign a feedback-loop report was about (one per row however
    // many reports came).
    n.complained = row::scalar_int(
        &db.query(
            "SELECT COUNT(DISTINCT c.queue_id) FROM outbound_complaints c \
             JOIN outbound_queue q ON q.id = c.queue_id WHERE q.campaign_id = ?",
            vec![c.id.into()],
        )
        .await?,
    )
    .unwrap_or(0);
    Ok(n)
}

/// Why an action was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("campaign {0} not found")]
    NotFound(i64),
    #[error("cannot {action} a campaign that is {state}")]
    Conflict { action: &'static str, state: State },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Applies `action` to campaign `id` and returns its new state: a compare-and-set
/// on the state, and what the action does to the campaign's queue rows, in one
/// transaction.
pub async fn apply(
    db: &mut Db,
    account: Option<i64>,
    id: i64,
    action: Action,
    now: DateTime<Utc>,
) -> Result<State, ActionError> {
    // A pause or cancel touches every queued row of the campaign while relay
    // nodes claim and record some of them: on MySQL that can deadlock, and the
    // victim is simply run again.
    let mut tries = 0;
    loop {
        tries += 1;
        db.begin().await?;
        let result = match apply_in_tx(db, account, id, action, now).await {
            Ok(state) => db.commit().await.map(|()| state).map_err(ActionError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(state) => return Ok(state),
            Err(ActionError::Db(e)) if e.is_retryable() && tries < APPLY_TRIES => {
                db.rollback().await;
                tracing::debug!(campaign = id, error = %e, "campaign state change retried");
            }
            Err(e) => {
                db.rollback().await;
                return Err(e);
            }
        }
    }
}

/// Runs of a state change that InnoDB may pick as a deadlock victim.
const APPLY_TRIES: u32 = 3;

async fn apply_in_tx(
    db: &mut Db,
    account: Option<i64>,
    id: i64,
    action: Action,
    now: DateTime<Utc>,
) -> Result<State, ActionError> {
    let mut params = vec![Val::Int(id)];
    let filter = account_filter(account, &mut params);
    let lock = if db.is_mysql() { " FOR UPDATE" } else { "" };
    let rows = db
        .query(
            &format!(
                "SELECT c.state, {}, c.messages_per_second FROM campaigns c WHERE c.id = ?{filter}{lock}",
                db.as_text("c.send_at")
            ),
            params,
        )
        .await?;
    let Some(r) = rows.into_iter().next() else {
        return Err(ActionError::NotFound(id));
    };
    let current = r
        .first()
        .and_then(Val::text)
        .as_deref()
        .and_then(State::parse)
        .ok_or(ActionError::NotFound(id))?;
    let send_at = r.get(1).and_then(Val::text).as_deref().and_then(parse_ts);
    let rate = r.get(2).and_then(|v| match v {
        Val::Real(x) => Some(*x),
        other => other.text().and_then(|t| t.trim().parse().ok()),
    });
    let target =
        super::transition(current, action, send_at.is_some_and(|t| t > now)).map_err(|state| {
            ActionError::Conflict {
                action: action.as_str(),
                state,
            }
        })?;
    let from: Vec<Val> = action
        .allowed_from()
        .iter()
        .map(|s| Val::from(s.as_str()))
        .collect();
    let started = (target == State::Running).then(|| ts(now));
    let finished = (target == State::Cancelled).then(|| ts(now));
    let mut params: Vec<Val> = vec![
        target.as_str().into(),
        ts(now).into(),
        started.into(),
        finished.into(),
        id.into(),
    ];
    let n_from = from.len();
    params.extend(from);
    let changed = db
        .exec(
            &format!(
                "UPDATE campaigns SET state = ?, updated_at = ?, \
                 started_at = COALESCE(started_at, ?), finished_at = COALESCE(?, finished_at) \
                 WHERE id = ? AND state IN ({})",
                Db::placeholders(n_from)
            ),
            params,
        )
        .await?;
    if changed == 0 {
        // Changed in between (only possible without the row lock): say how it is.
        return Err(ActionError::Conflict {
            action: action.as_str(),
            state: current,
        });
    }
    match action {
        Action::Start => {}
        // Claims take queued and deferred rows only: from this commit on no node
        // starts another delivery of the campaign.
        Action::Pause => {
            db.exec(
                "UPDATE outbound_queue SET state = 'paused', updated_at = ? \
                 WHERE campaign_id = ? AND state IN ('queued', 'deferred')",
                vec![ts(now).into(), id.into()],
            )
            .await?;
        }
        Action::Resume => {
            resume_rows(db, id, rate, now).await?;
            db.exec(
                "UPDATE campaigns SET paused_reason = NULL WHERE id = ?",
                vec![id.into()],
            )
            .await?;
        }
        // Rows being sent finish normally (their result is recorded); nothing of
        // the campaign waits in the queue behind.
        Action::Cancel => {
            db.exec(
                "DELETE FROM outbound_queue WHERE campaign_id = ? \
                 AND state IN ('queued', 'deferred', 'paused')",
                vec![id.into()],
            )
            .await?;
        }
    }
    Ok(target)
}

/// A resumed campaign's rows: due again (deferred once attempted), spaced 1/R
/// apart from now in id order (R the slower of the campaign's and its account's
/// rate, after the account's other rows), and the campaign's next expanded row
/// after them.
async fn resume_rows(
    db: &mut Db,
    id: i64,
    rate: Option<f64>,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    let account = db
        .query(
            &format!(
                "SELECT a.id, a.send_rate, {} FROM accounts a JOIN campaigns c \
                 ON c.account_id = a.id WHERE c.id = ?",
                db.as_text("a.next_send_at")
            ),
            vec![id.into()],
        )
        .await?;
    let account = account.first();
    let account_id = account.and_then(|r| r.first()).and_then(Val::int);
    let account_rate = account
        .and_then(|r| r.get(1))
        .and_then(crate::accounts::real)
        .filter(|r| *r > 0.0);
    let account_next = account
        .and_then(|r| r.get(2))
        .and_then(Val::text)
        .as_deref()
        .and_then(parse_ts);
    let (start, interval) = super::runner::pace(now, None, rate, account_next, account_rate);
    let (due, mut params) = spaced_time(db, "r.rn", start, interval);
    let window = "SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS rn FROM outbound_queue \
                  WHERE campaign_id = ? AND state = 'paused'";
    let sql = if db.is_mysql() {
        format!(
            "UPDATE outbound_queue q JOIN ({window}) r ON q.id = r.id SET \
             q.state = CASE WHEN q.attempts > 0 THEN 'deferred' ELSE 'queued' END, \
             q.next_attempt_at = {due}, q.updated_at = ?"
        )
    } else {
        format!(
            "UPDATE outbound_queue SET \
             state = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END, \
             next_attempt_at = {due}, updated_at = ? FROM ({window}) AS r \
             WHERE outbound_queue.id = r.id"
        )
    };
    // Parameter order follows the SQL text: MySQL's window comes first.
    let all = if db.is_mysql() {
        let mut p = vec![Val::Int(id)];
        p.append(&mut params);
        p.push(ts(now).into());
        p
    } else {
        params.push(ts(now).into());
        params.push(id.into());
        params
    };
    let n = db.exec(&sql, all).await?;
    let next = start
        + chrono::Duration::milliseconds((interval * n as f64 * 1000.0).min(MAX_SPAN_MS) as i64);
    db.exec(
        "UPDATE campaigns SET next_send_at = ? WHERE id = ?",
        vec![ts(next).into(), id.into()],
    )
    .await?;
    if let (Some(a), Some(_)) = (account_id, account_rate) {
        db.exec(
            "UPDATE accounts SET next_send_at = ? WHERE id = ?",
            vec![ts(next).into(), a.into()],
        )
        .await?;
    }
    Ok(n)
}

/// The timeline of campaign `id` (None: not the account's): attempts by outcome
/// per `step` seconds, from the delivery log.
pub async fn timeline(
    db: &mut Db,
    account: i64,
    id: i64,
    step: i64,
) -> Result<Option<Vec<Point>>, DbError> {
    let owned = db
        .query(
            "SELECT id FROM campaigns WHERE id = ? AND account_id = ?",
            vec![id.into(), account.into()],
        )
        .await?;
    if owned.is_empty() {
        return Ok(None);
    }
    // Whole seconds since the epoch, divided as integers (SQLite's `/` of two
    // integers is; MySQL's needs DIV). The sessions run in UTC (`mailstore`).
    let bucket = if db.is_mysql() {
        "(TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', at) DIV ?) * ?"
    } else {
        "(CAST(strftime('%s', at) AS INTEGER) / ?) * ?"
    };
    let limit = i64::try_from(MAX_POINTS * 4).unwrap_or(i64::MAX);
    let rows = db
        .query(
            &format!(
                "SELECT {bucket}, outcome, COUNT(*) FROM outbound_log \
                 WHERE campaign_id = ? GROUP BY 1, 2 ORDER BY 1 LIMIT ?"
            ),
            vec![step.into(), step.into(), id.into(), limit.into()],
        )
        .await?;
    let mut points = super::timeline_points(
        rows.into_iter().filter_map(|r| {
            Some((
                r.first().and_then(Val::int)?,
                r.get(1).and_then(Val::text)?,
                r.get(2).and_then(Val::int)?,
            ))
        }),
        step,
    );
    points.truncate(MAX_POINTS);
    Ok(Some(points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_columns_and_their_count_agree() {
        assert_eq!(SETTINGS.split(',').count(), SETTINGS_COUNT);
        assert_eq!(
            SETTINGS.replace(',', " = ?,") + " = ?",
            "name = ?, sender = ?, messages_per_second = ?, send_at = ?, pool = ?, \
             tracking_domains = ?, track_opens = ?"
        );
    }
}
