//! Mailing lists, their subscribers and memberships: every SQL statement on the
//! `lists`, `subscribers` and `list_members` tables (`schema/*/0004_campaigns.sql`).
//!
//! Owns: what a valid list name, subscriber address, name and attribute object are;
//! creating and reading an account's lists with their member counts; removing a
//! member; and [`upsert`], the one bulk write that both `POST
//! /api/v1/lists/{id}/subscribers` and the importer use, so a subscriber added by
//! hand and one imported from a CSV follow exactly the same rules:
//!
//! - a subscriber is one row per account and lowercased address (`email_key`);
//! - a given name or attribute object replaces the stored one, an absent one keeps it;
//! - a new membership is `confirmed` on a single opt-in list, `unconfirmed` on a
//!   double one; an existing membership keeps its status (an `unsubscribed` member is
//!   never silently resubscribed) and a `blocklisted` subscriber stays blocklisted
//!   (the upsert never writes `subscribers.status`);
//! - rows given twice in one call are merged, later fields winning.
//!
//! Must not: know HTTP or files (`web::lists`, `import` do), open transactions of
//! its own in [`upsert`] (the caller's transaction also holds the import's progress).

use std::collections::HashMap;

use crate::db::{Db, DbError, Val};
use crate::row::{Column, Fields};

/// The longest list name, in characters (the column is `VARCHAR(255)` in MySQL).
pub const MAX_LIST_NAME_CHARS: usize = 255;
/// The longest subscriber name, in characters (`VARCHAR(255)`).
pub const MAX_SUBSCRIBER_NAME_CHARS: usize = 255;
/// The longest address: RFC 5321 §4.5.3.1 (64 + 1 + 255), and `VARCHAR(320)`.
pub const MAX_EMAIL_BYTES: usize = 320;
/// The largest attribute object, serialized: far inside MySQL's `TEXT` (64 KiB),
/// and small enough that 5,000 rows of them stay a few tens of MB in flight.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// Keys per `IN (...)` lookup: well under both dialects' parameter limits (SQLite
/// 32,766, MySQL 65,535) and short enough for the query planner to use the
/// `(account_id, email_key)` index as a series of point lookups.
const LOOKUP_BATCH: usize = 500;
/// Rows per multi-row `INSERT`: 5 parameters each, 5,000 per statement. Fewer,
/// larger statements are what makes an import fast (one round trip per 1,000 rows
/// to MySQL), and the statement text stays the same for every full batch, so it is
/// prepared once (`prepare_cached` / the server's statement cache).
const INSERT_BATCH: usize = 1_000;

/// How a list confirms new members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    /// Members are confirmed when added.
    Single,
    /// Members wait, `unconfirmed`, for their confirmation.
    Double,
}

impl OptIn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Double => "double",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "single" => Some(Self::Single),
            "double" => Some(Self::Double),
            _ => None,
        }
    }

    /// The status of a new member.
    fn new_member_status(self) -> &'static str {
        match self {
            Self::Single => "confirmed",
            Self::Double => "unconfirmed",
        }
    }
}

/// A list as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub opt_in: OptIn,
    pub created_at: String,
    /// From address of its double opt-in confirmations (None: the config's).
    pub sender: Option<String>,
}

impl List {
    const COLUMNS: &'static [Column] = &[
        Column::plain("id"),
        Column::plain("account_id"),
        Column::plain("name"),
        Column::plain("opt_in"),
        Column::text("created_at"),
        Column::plain("sender"),
    ];

    fn from_row(row: Vec<Val>) -> Option<Self> {
        let mut f = Fields::new(Self::COLUMNS, row).ok()?;
        Some(Self {
            id: f.int("id").ok()?,
            account_id: f.int("account_id").ok()?,
            name: f.text("name").ok()?,
            // The schema's CHECK (SQLite) and our writes keep it one of the two.
            opt_in: OptIn::parse(&f.text("opt_in").ok()?)?,
            created_at: f.text("created_at").ok()?,
            sender: f.opt_text("sender").ok()?,
        })
    }
}

/// Members of a list by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounts {
    pub unconfirmed: i64,
    pub confirmed: i64,
    pub unsubscribed: i64,
}

impl MemberCounts {
    pub fn total(&self) -> i64 {
        self.unconfirmed + self.confirmed + self.unsubscribed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("name: {0}")]
    BadName(&'static str),
    #[error("name: a list called {0:?} exists already")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a list name is refused, if it is.
pub fn check_list_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("must not be empty");
    }
    if name.chars().count() > MAX_LIST_NAME_CHARS {
        return Err("longer than 255 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    Ok(())
}

/// A subscriber ready to be stored: the address checked, the optional parts
/// checked and (attributes) serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscriber {
    pub email: String,
    /// None: keep the stored name ('' for a new subscriber).
    pub name: Option<String>,
    /// A serialized JSON object; None: keep the stored one ('{}' for a new one).
    pub attributes: Option<String>,
}

impl NewSubscriber {
    /// The uniqueness key: addresses are printable ASCII (`address::is_mailbox`),
    /// so ASCII lowercasing is the whole of case-insensitivity here.
    pub fn key(&self) -> String {
        self.email.to_ascii_lowercase()
    }
}

/// The address as stored, or why it is refused.
pub fn check_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim();
    if email.is_empty() {
        return Err("missing");
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err("longer than 320 bytes");
    }
    if !crate::address::is_mailbox(email) {
        return Err("not an email address (local@domain)");
    }
    Ok(email.to_owned())
}

/// A subscriber name, or why it is refused.
pub fn check_subscriber_name(name: &str) -> Result<(), &'static str> {
    if name.chars().count() > MAX_SUBSCRIBER_NAME_CHARS {
        return Err("longer than 255 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    Ok(())
}

/// A serialized attribute object within [`MAX_ATTRIBUTES_BYTES`], or why not.
pub fn check_attributes(serialized: &str) -> Result<(), &'static str> {
    if serialized.len() > MAX_ATTRIBUTES_BYTES {
        return Err("larger than 16 KiB serialized");
    }
    Ok(())
}

/// SQL for "now" in the schema's time format.
pub fn now_sql(db: &Db) -> &'static str {
    if db.is_mysql() {
        "CURRENT_TIMESTAMP(3)"
    } else {
        "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    }
}

/// Creates a list; returns its id. `sender`: the From address of its
/// confirmations (checked by the caller with [`check_email`]).
pub async fn create(
    db: &mut Db,
    account_id: i64,
    name: &str,
    opt_in: OptIn,
    sender: Option<&str>,
) -> Result<i64, ListError> {
    check_list_name(name).map_err(ListError::BadName)?;
    db.begin().await?;
    let result = async {
        let exists = db
            .query(
                "SELECT id FROM lists WHERE account_id = ? AND name = ?",
                vec![account_id.into(), name.into()],
            )
            .await?;
        if !exists.is_empty() {
            return Err(ListError::Exists(name.to_owned()));
        }
        db.exec(
            "INSERT INTO lists (account_id, name, opt_in, sender) VALUES (?, ?, ?, ?)",
            vec![
                account_id.into(),
                name.into(),
                opt_in.as_str().into(),
                sender.into(),
            ],
        )
        .await?;
        let rows = db
            .query(
                "SELECT id FROM lists WHERE account_id = ? AND name = ?",
                vec![account_id.into(), name.into()],
            )
            .await?;
        crate::row::scalar_int(&rows)
            .ok_or(ListError::Db(DbError::Timeout(std::time::Duration::ZERO)))
    }
    .await;
    match result {
        Ok(id) => {
            db.commit().await?;
            Ok(id)
        }
        Err(e) => {
            db.rollback().await;
            // Two concurrent creates: the second one's INSERT hits the unique key.
            if let ListError::Db(_) = &e
                && !lists_named(db, account_id, name).await?.is_empty()
            {
                return Err(ListError::Exists(name.to_owned()));
            }
            Err(e)
        }
    }
}

/// What [`update`] changes about a list; None leaves a setting as it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListUpdate {
    /// A new name (checked with [`check_list_name`], unique in the account).
    pub name: Option<String>,
    /// A new confirmations sender (`Some(None)` clears it; checked by the caller
    /// with [`check_email`]).
    pub sender: Option<Option<String>>,
}

/// Changes list `id` of `account_id`; `Ok(None)` when there is no such list (or
/// another account owns it), else the list as it is now.
pub async fn update(
    db: &mut Db,
    account_id: i64,
    id: i64,
    change: &ListUpdate,
) -> Result<Option<List>, ListError> {
    if let Some(name) = &change.name {
        check_list_name(name).map_err(ListError::BadName)?;
    }
    db.in_tx(async |db: &mut Db| {
        if get(db, account_id, id).await?.is_none() {
            return Ok(None);
        }
        if let Some(name) = &change.name {
            let taken = lists_named(db, account_id, name).await?;
            if taken
                .iter()
                .any(|r| r.first().and_then(Val::int) != Some(id))
            {
                return Err(ListError::Exists(name.clone()));
            }
            db.exec(
                "UPDATE lists SET name = ? WHERE id = ? AND account_id = ?",
                vec![name.as_str().into(), id.into(), account_id.into()],
            )
            .await?;
        }
        if let Some(sender) = &change.sender {
            db.exec(
                "UPDATE lists SET sender = ? WHERE id = ? AND account_id = ?",
                vec![sender.as_deref().into(), id.into(), account_id.into()],
            )
            .await?;
        }
        Ok(get(db, account_id, id).await?)
    })
    .await
}

async fn lists_named(db: &mut Db, account_id: i64, name: &str) -> Result<Vec<Vec<Val>>, DbError> {
    db.query(
        "SELECT id FROM lists WHERE account_id = ? AND name = ?",
        vec![account_id.into(), name.into()],
    )
    .await
}

/// List `id` of `account_id` (None also for another account's list).
pub async fn get(db: &mut Db, account_id: i64, id: i64) -> Result<Option<List>, DbError> {
    let sql = format!(
        "SELECT {} FROM lists WHERE id = ? AND account_id = ?",
        crate::row::select_list(db, List::COLUMNS)
    );
    let rows = db.query(&sql, vec![id.into(), account_id.into()]).await?;
    Ok(rows.into_iter().next().and_then(List::from_row))
}

/// List `id` whoever owns it (the operator's CLI).
pub async fn get_any(db: &mut Db, id: i64) -> Result<Option<List>, DbError> {
    let sql = format!(
        "SELECT {} FROM lists WHERE id = ?",
        crate::row::select_list(db, List::COLUMNS)
    );
    let rows = db.query(&sql, vec![id.into()]).await?;
    Ok(rows.into_iter().next().and_then(List::from_row))
}

/// Every list of `account_id` (every list when None: the operator's CLI), by id.
pub async fn all(db: &mut Db, account_id: Option<i64>) -> Result<Vec<List>, DbError> {
    let columns = crate::row::select_list(db, List::COLUMNS);
    let rows = match account_id {
        Some(a) => {
            db.query(
                &format!("SELECT {columns} FROM lists WHERE account_id = ? ORDER BY id"),
                vec![a.into()],
            )
            .await?
        }
        None => {
            db.query(&format!("SELECT {columns} FROM lists ORDER BY id"), vec![])
                .await?
        }
    };
    Ok(rows.into_iter().filter_map(List::from_row).collect())
}

/// Members of list `list_id` by status.
pub async fn member_counts(db: &mut Db, list_id: i64) -> Result<MemberCounts, DbError> {
    let rows = db
        .query(
            "SELECT status, COUNT(*) FROM list_members WHERE list_id = ? GROUP BY status",
            vec![list_id.into()],
        )
        .await?;
    let mut counts = MemberCounts::default();
    for row in rows {
        let (Some(status), Some(n)) = (
            row.first().and_then(Val::text),
            row.get(1).and_then(Val::int),
        ) else {
            continue;
        };
        match status.as_str() {
            "unconfirmed" => counts.unconfirmed = n,
            "confirmed" => counts.confirmed = n,
            "unsubscribed" => counts.unsubscribed = n,
            _ => {}
        }
    }
    Ok(counts)
}

/// Takes `email` off list `list` (the subscriber row stays: it may be on other
/// lists, and its history is the account's). Whether it was a member.
pub async fn remove_member(db: &mut Db, list: &List, email: &str) -> Result<bool, DbError> {
    let key = email.trim().to_ascii_lowercase();
    let n = db
        .exec(
            "DELETE FROM list_members WHERE list_id = ? AND subscriber_id IN \
             (SELECT id FROM subscribers WHERE account_id = ? AND email_key = ?)",
            vec![list.id.into(), list.account_id.into(), key.into()],
        )
        .await?;
    Ok(n > 0)
}

/// What [`upsert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upserted {
    /// Newly members of the list.
    pub added: u64,
    /// Members already (their subscriber row updated).
    pub updated: u64,
}

/// One stored subscriber as [`upsert`] looks it up.
struct Existing {
    id: i64,
    name: String,
    attributes: String,
    /// Its membership of the list, if any.
    member: bool,
}

/// Stores `rows` as subscribers of `list`'s account and members of `list`, in the
/// caller's transaction (see the module comment for the rules).
///
/// Per call: one indexed lookup of the existing subscribers per 500 addresses,
/// multi-row `INSERT ... ON CONFLICT DO UPDATE` (MySQL: `ON DUPLICATE KEY UPDATE`)
/// of the new and changed ones, a lookup of the new ids, multi-row membership
/// inserts. A concurrent writer of the same address is absorbed by the conflict
/// clauses (it may then be counted as added by both).
pub async fn upsert(db: &mut Db, list: &List, rows: &[NewSubscriber]) -> Result<Upserted, DbError> {
    let merged = merge(rows);
    if merged.is_empty() {
        return Ok(Upserted::default());
    }

    let existing = lookup(db, list, &merged).await?;

    // The subscriber rows to write: every new one, and existing ones that change.
    // SQLite gives the ids of the rows written back (`RETURNING`), so new ones
    // need no second lookup; MySQL has no `RETURNING` and looks them up below.
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut writes: Vec<Val> = Vec::new();
    let mut write_rows = 0usize;
    let mut insert_sql_full: Option<String> = None;
    for (key, row) in &merged {
        // An existing subscriber keeps the address as first stored: the key is
        // case-insensitive, but an application's own spelling (a local part may be
        // case-sensitive at its server) is not rewritten by a later import.
        let (name, attributes) = match existing.get(key) {
            Some(e) => {
                let name = row.name.as_deref().unwrap_or(&e.name);
                let attributes = row.attributes.as_deref().unwrap_or(&e.attributes);
                if e.name == name && e.attributes == attributes {
                    continue; // unchanged: no write, no lock
                }
                (name.to_owned(), attributes.to_owned())
            }
            None => (
                row.name.clone().unwrap_or_default(),
                row.attributes.clone().unwrap_or_else(|| "{}".to_owned()),
            ),
        };
        writes.extend([
            Val::Int(list.account_id),
            Val::Text(row.email.clone()),
            Val::Text(key.clone()),
            Val::Text(name),
            Val::Text(attributes),
        ]);
        write_rows += 1;
        if write_rows == INSERT_BATCH {
            let sql =
                insert_sql_full.get_or_insert_with(|| subscriber_upsert_sql(db, INSERT_BATCH));
            write_subscribers(db, sql, std::mem::take(&mut writes), &mut ids).await?;
            write_rows = 0;
        }
    }
    if write_rows > 0 {
        let sql = subscriber_upsert_sql(db, write_rows);
        write_subscribers(db, &sql, writes, &mut ids).await?;
    }

    // Ids of the subscribers that were not there before (and not returned).
    let new_keys: Vec<&str> = merged
        .iter()
        .filter(|(k, _)| !existing.contains_key(k) && !ids.contains_key(k))
        .map(|(k, _)| k.as_str())
        .collect();
    for batch in new_keys.chunks(LOOKUP_BATCH) {
        let sql = format!(
            "SELECT email_key, id FROM subscribers WHERE account_id = ? AND email_key IN ({})",
            Db::placeholders(batch.len())
        );
        let mut params = Vec::with_capacity(batch.len() + 1);
        params.push(Val::Int(list.account_id));
        params.extend(batch.iter().map(|k| Val::Text((*k).to_owned())));
        collect_ids(db.query(&sql, params).await?, &mut ids);
    }

    // Memberships of those not yet members.
    let member_ids: Vec<i64> = merged
        .iter()
        .filter_map(|(k, _)| match existing.get(k) {
            Some(e) if e.member => None,
            Some(e) => Some(e.id),
            None => ids.get(k).copied(),
        })
        .collect();
    let mut added = 0u64;
    let status = list.opt_in.new_member_status();
    for batch in member_ids.chunks(INSERT_BATCH) {
        let sql = member_insert_sql(db, batch.len(), status);
        let mut params = Vec::with_capacity(batch.len() * 2);
        for id in batch {
            params.push(Val::Int(list.id));
            params.push(Val::Int(*id));
        }
        added += db.exec(&sql, params).await?;
    }
    let total = merged.len() as u64;
    Ok(Upserted {
        added,
        updated: total.saturating_sub(added),
    })
}

/// `rows` by key, duplicates merged (later given fields win), in first-seen order.
fn merge(rows: &[NewSubscriber]) -> Vec<(String, NewSubscriber)> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    let mut merged: Vec<(String, NewSubscriber)> = Vec::with_capacity(rows.len());
    for row in rows {
        let key = row.key();
        match index.get(&key) {
            Some(&i) => {
                if let Some((_, earlier)) = merged.get_mut(i) {
                    earlier.email.clone_from(&row.email);
                    if row.name.is_some() {
                        earlier.name.clone_from(&row.name);
                    }
                    if row.attributes.is_some() {
                        earlier.attributes.clone_from(&row.attributes);
                    }
                }
            }
            None => {
                index.insert(key.clone(), merged.len());
                merged.push((key, row.clone()));
            }
        }
    }
    merged
}

/// Runs one subscriber upsert; on SQLite, notes the ids it returns.
async fn write_subscribers(
    db: &mut Db,
    sql: &str,
    params: Vec<Val>,
    ids: &mut HashMap<String, i64>,
) -> Result<(), DbError> {
    if db.is_mysql() {
        db.exec(sql, params).await?;
    } else {
        collect_ids(db.query(sql, params).await?, ids);
    }
    Ok(())
}

/// `(email_key, id)` rows into `ids`.
fn collect_ids(rows: Vec<Vec<Val>>, ids: &mut HashMap<String, i64>) {
    for row in rows {
        if let (Some(k), Some(id)) = (
            row.first().and_then(Val::text),
            row.get(1).and_then(Val::int),
        ) {
            ids.insert(k, id);
        }
    }
}

/// The stored subscribers among `merged`, by key, with their membership of `list`.
async fn lookup(
    db: &mut Db,
    list: &List,
    merged: &[(String, NewSubscriber)],
) -> Result<HashMap<String, Existing>, DbError> {
    let mut existing = HashMap::new();
    for batch in merged.chunks(LOOKUP_BATCH) {
        let sql = format!(
            "SELECT s.email_key, s.id, s.name, s.attributes, m.status \
             FROM subscribers s LEFT JOIN list_members m \
               ON m.list_id = ? AND m.subscriber_id = s.id \
             WHERE s.account_id = ? AND s.email_key IN ({})",
            Db::placeholders(batch.len())
        );
        let mut params = Vec::with_capacity(batch.len() + 2);
        params.push(Val::Int(list.id));
        params.push(Val::Int(list.account_id));
        params.extend(batch.iter().map(|(k, _)| Val::Text(k.clone())));
        for row in db.query(&sql, params).await? {
            let mut values = row.into_iter();
            let mut next = || values.next().unwrap_or(Val::Null);
            let (key, id, name, attributes, status) = (next(), next(), next(), next(), next());
            let (Some(key), Some(id)) = (key.text(), id.int()) else {
                continue;
            };
            existing.insert(
                key,
                Existing {
                    id,
                    name: name.text().unwrap_or_default(),
                    attributes: attributes.text().unwrap_or_else(|| "{}".to_owned()),
                    member: status != Val::Null,
                },
            );
        }
    }
    Ok(existing)
}

fn subscriber_upsert_sql(db: &Db, rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?)"; rows].join(", ");
    if db.is_mysql() {
        format!(
            "INSERT INTO subscribers (account_id, email, email_key, name, attributes) VALUES {values} \
             ON DUPLICATE KEY UPDATE name = VALUES(name), \
             attributes = VALUES(attributes), updated_at = CURRENT_TIMESTAMP(3)"
        )
    } else {
        format!(
            "INSERT INTO subscribers (account_id, email, email_key, name, attributes) VALUES {values} \
             ON CONFLICT (account_id, email_key) DO UPDATE SET \
             name = excluded.name, attributes = excluded.attributes, \
             updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') \
             RETURNING email_key, id"
        )
    }
}

/// `status` is one of our two constants, never input.
fn member_insert_sql(db: &Db, rows: usize, status: &'static str) -> String {
    let values = vec![format!("(?, ?, '{status}')"); rows].join(", ");
    if db.is_mysql() {
        format!("INSERT IGNORE INTO list_members (list_id, subscriber_id, status) VALUES {values}")
    } else {
        format!(
            "INSERT INTO list_members (list_id, subscriber_id, status) VALUES {values} \
             ON CONFLICT (list_id, subscriber_id) DO NOTHING"
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_checked() {
        assert_eq!(
            check_email(" Ann@Example.test ").unwrap(),
            "Ann@Example.test"
        );
        assert_eq!(check_email(""), Err("missing"));
        assert!(check_email("nobody").is_err());
        assert!(check_email("a b@c.test").is_err());
        assert!(check_email(&format!("{}@b.test", "a".repeat(320))).is_err());
        let s = NewSubscriber {
            email: "Ann@Example.TEST".into(),
            name: None,
            attributes: None,
        };
        assert_eq!(s.key(), "ann@example.test");
    }

    #[test]
    fn names_and_attributes_have_limits() {
        assert!(check_list_name("Newsletter").is_ok());
        assert!(check_list_name("  ").is_err());
        assert!(check_list_name(&"é".repeat(255)).is_ok());
        assert!(check_list_name(&"é".repeat(256)).is_err());
        assert!(check_list_name("a\nb").is_err());
        assert!(check_subscriber_name("").is_ok());
        assert!(check_subscriber_name(&"x".repeat(256)).is_err());
        assert!(check_attributes(&"x".repeat(MAX_ATTRIBUTES_BYTES)).is_ok());
        assert!(check_attributes(&"x".repeat(MAX_ATTRIBUTES_BYTES + 1)).is_err());
    }

    fn sub(email: &str, name: Option<&str>, attributes: Option<&str>) -> NewSubscriber {
        NewSubscriber {
            email: email.into(),
            name: name.map(Into::into),
            attributes: attributes.map(Into::into),
        }
    }

    #[test]
    fn duplicates_merge_field_by_field_later_winning_in_first_seen_order() {
        let merged = merge(&[
            sub("a@x.test", Some("A"), Some("{\"k\":1}")),
            sub("b@x.test", None, None),
            sub("A@X.test", None, Some("{\"k\":2}")),
            sub("a@x.TEST", Some("A2"), None),
        ]);
        assert_eq!(
            merged,
            vec![
                (
                    "a@x.test".into(),
                    sub("a@x.TEST", Some("A2"), Some("{\"k\":2}"))
                ),
                ("b@x.test".into(), sub("b@x.test", None, None)),
            ]
        );
        assert!(merge(&[]).is_empty());
    }

    #[test]
    fn opt_in_spellings() {
        assert_eq!(OptIn::parse("single"), Some(OptIn::Single));
        assert_eq!(OptIn::parse("double"), Some(OptIn::Double));
        assert_eq!(OptIn::parse("Double"), None);
        assert_eq!(OptIn::Double.new_member_status(), "unconfirmed");
    }
}
