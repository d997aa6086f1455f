//! The SQL of tracking (`schema/*/0005_tracking.sql`): accounts' tracking
//! domains, a campaign's links (numbered when it is created), the batches of
//! clicks and opens `outbound web` writes, and the counts the API shows.
//!
//! Owns: the `tracking_domains`, `campaign_links`, `clicks` and `opens` tables.
//! Must not: decide what a link is (`links::extract`) or verify tokens.

use sha2::{Digest, Sha256};

use super::links::CampaignLinks;
use crate::db::{Db, DbError, Val};
use crate::queue::ts;
use crate::row;

/// The longest tracking domain (a DNS name).
pub const MAX_DOMAIN_BYTES: usize = 253;
/// Most tracking domains one campaign may name.
pub const MAX_CAMPAIGN_DOMAINS: usize = 20;
/// The most links `GET /campaigns/{id}/links` lists (most clicked first).
pub const MAX_LISTED_LINKS: i64 = 1_000;

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A domain as stored: trimmed, lowercased, a valid host name. None otherwise.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= MAX_DOMAIN_BYTES
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(d)
}

/// Why a domain was not added.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("`{0}` is not a host name")]
    Invalid(String),
    #[error("{0} belongs to another account")]
    Taken(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Gives `domain` to `account`. Adding one the account has is a no-op.
pub async fn add_domain(db: &mut Db, account: i64, domain: &str) -> Result<String, DomainError> {
    let d = normalize_domain(domain).ok_or_else(|| DomainError::Invalid(domain.to_owned()))?;
    let insert = if db.is_mysql() {
        "INSERT IGNORE INTO tracking_domains (domain, account_id) VALUES (?, ?)"
    } else {
        "INSERT INTO tracking_domains (domain, account_id) VALUES (?, ?) ON CONFLICT (domain) DO NOTHING"
    };
    db.exec(insert, vec![d.as_str().into(), account.into()])
        .await?;
    let owner = row::scalar_int(
        &db.query(
            "SELECT account_id FROM tracking_domains WHERE domain = ?",
            vec![d.as_str().into()],
        )
        .await?,
    );
    if owner != Some(account) {
        return Err(DomainError::Taken(d));
    }
    Ok(d)
}

/// The account's tracking domains, sorted.
pub async fn domains(db: &mut Db, account: i64) -> Result<Vec<String>, DbError> {
    Ok(db
        .query(
            "SELECT domain FROM tracking_domains WHERE account_id = ? ORDER BY domain",
            vec![account.into()],
        )
        .await?
        .iter()
        .filter_map(|r| r.first().and_then(Val::text))
        .collect())
}

/// The first of `domains` that is not `account`'s (None: all are).
pub async fn first_foreign_domain(
    db: &mut Db,
    account: i64,
    domains: &[String],
) -> Result<Option<String>, DbError> {
    let owned = self::domains(db, account).await?;
    Ok(domains.iter().find(|d| !owned.contains(d)).cloned())
}

/// Numbers a new campaign's links (in its creating transaction).
pub async fn insert_links(db: &mut Db, campaign: i64, urls: &[String]) -> Result<(), DbError> {
    for url in urls {
        db.exec(
            "INSERT INTO campaign_links (campaign_id, url, url_sha256) VALUES (?, ?, ?)",
            vec![campaign.into(), url.as_str().into(), sha256_hex(url).into()],
        )
        .await?;
    }
    Ok(())
}

/// A campaign's tracking settings and link map, as the relay renders with them.
/// None: no such campaign.
pub async fn campaign_links(db: &mut Db, campaign: i64) -> Result<Option<CampaignLinks>, DbError> {
    let rows = db
        .query(
            "SELECT tracking_domains, track_opens FROM campaigns WHERE id = ?",
            vec![campaign.into()],
        )
        .await?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let domains: Vec<String> = r
        .first()
        .and_then(Val::text)
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let track_opens = r.get(1).and_then(Val::int).unwrap_or(0) != 0;
    let urls = if domains.is_empty() {
        Default::default()
    } else {
        db.query(
            "SELECT url, id FROM campaign_links WHERE campaign_id = ?",
            vec![campaign.into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((r.first().and_then(Val::text)?, r.get(1).and_then(Val::int)?)))
        .collect()
    };
    Ok(Some(CampaignLinks {
        domains,
        track_opens,
        urls,
    }))
}

/// The URL of link `link` of `campaign`.
pub async fn link_url(db: &mut Db, campaign: i64, link: i64) -> Result<Option<String>, DbError> {
    Ok(db
        .query(
            "SELECT url FROM campaign_links WHERE id = ? AND campaign_id = ?",
            vec![link.into(), campaign.into()],
        )
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.first().and_then(Val::text)))
}

/// Whether `campaign` has an open pixel (None: no such campaign).
pub async fn track_opens(db: &mut Db, campaign: i64) -> Result<Option<bool>, DbError> {
    Ok(db
        .query(
            "SELECT track_opens FROM campaigns WHERE id = ?",
            vec![campaign.into()],
        )
        .await?
        .into_iter()
        .next()
        .map(|r| r.first().and_then(Val::int).unwrap_or(0) != 0))
}

/// One recorded click or open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: chrono::DateTime<chrono::Utc>,
    pub campaign: i64,
    /// Some for a click, None for an open.
    pub link: Option<i64>,
    pub subscriber: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Writes a batch in one transaction, as multi-row INSERTs.
pub async fn insert_events(db: &mut Db, events: &[Event]) -> Result<(), DbError> {
    db.begin().await?;
    let result = async {
        let (clicks, opens): (Vec<&Event>, Vec<&Event>) =
            events.iter().partition(|e| e.link.is_some());
        // 100 rows × 6 values stays under SQLite's and MySQL's parameter limits.
        for chunk in clicks.chunks(100) {
            let mut params = Vec::with_capacity(chunk.len() * 6);
            for e in chunk {
                params.extend([
                    ts(e.at).into(),
                    e.campaign.into(),
                    e.link.unwrap_or(0).into(),
                    e.subscriber.into(),
                    e.ip.clone().into(),
                    e.user_agent.clone().into(),
                ]);
            }
            let values = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            db.exec(
                &format!(
                    "INSERT INTO clicks (at, campaign_id, link_id, subscriber_id, ip, user_agent) \
                     VALUES {values}"
                ),
                params,
            )
            .await?;
        }
        for chunk in opens.chunks(100) {
            let mut params = Vec::with_capacity(chunk.len() * 5);
            for e in chunk {
                params.extend([
                    ts(e.at).into(),
                    e.campaign.into(),
                    e.subscriber.into(),
                    e.ip.clone().into(),
                    e.user_agent.clone().into(),
                ]);
            }
            let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            db.exec(
                &format!(
                    "INSERT INTO opens (at, campaign_id, subscriber_id, ip, user_agent) VALUES {values}"
                ),
                params,
            )
            .await?;
        }
        Ok::<(), DbError>(())
    }
    .await;
    match result {
        Ok(()) => db.commit().await,
        Err(e) => {
            db.rollback().await;
            Err(e)
        }
    }
}

/// A campaign's tracking counts (`GET /api/v1/campaigns/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub clicks: i64,
    pub unique_clickers: i64,
    pub opens: i64,
    pub unique_opens: i64,
}

fn two(rows: &[Vec<Val>]) -> (i64, i64) {
    let r = rows.first();
    (
        r.and_then(|r| r.first()).and_then(Val::int).unwrap_or(0),
        r.and_then(|r| r.get(1)).and_then(Val::int).unwrap_or(0),
    )
}

pub async fn counts(db: &mut Db, campaign: i64) -> Result<Counts, DbError> {
    let (clicks, unique_clickers) = two(&db
        .query(
            "SELECT COUNT(*), COUNT(DISTINCT subscriber_id) FROM clicks WHERE campaign_id = ?",
            vec![campaign.into()],
        )
        .await?);
    let (opens, unique_opens) = two(&db
        .query(
            "SELECT COUNT(*), COUNT(DISTINCT subscriber_id) FROM opens WHERE campaign_id = ?",
            vec![campaign.into()],
        )
        .await?);
    Ok(Counts {
        clicks,
        unique_clickers,
        opens,
        unique_opens,
    })
}

/// One link with its counts (`GET /api/v1/campaigns/{id}/links`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounts {
    pub id: i64,
    pub url: String,
    pub clicks: i64,
    pub unique_clickers: i64,
}

/// A campaign's links, most clicked first (then by id).
pub async fn link_counts(db: &mut Db, campaign: i64) -> Result<Vec<LinkCounts>, DbError> {
    Ok(db
        .query(
            "SELECT l.id, l.url, COUNT(c.id), COUNT(DISTINCT c.subscriber_id) \
             FROM campaign_links l LEFT JOIN clicks c \
             ON c.campaign_id = l.campaign_id AND c.link_id = l.id \
             WHERE l.campaign_id = ? GROUP BY l.id, l.url ORDER BY 3 DESC, l.id LIMIT ?",
            vec![campaign.into(), MAX_LISTED_LINKS.into()],
        )
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(LinkCounts {
                id: r.first().and_then(Val::int)?,
                url: r.get(1).and_then(Val::text)?,
                clicks: r.get(2).and_then(Val::int).unwrap_or(0),
                unique_clickers: r.get(3).and_then(Val::int).unwrap_or(0),
            })
        })
        .collect())
}

/// What the unsubscribe page shows: the address and the names of the lists it
/// leaves. None: the subscriber or campaign is gone.
pub async fn unsubscribe_info(
    db: &mut Db,
    campaign: i64,
    subscriber: i64,
) -> Result<Option<(String, Vec<String>)>, DbError> {
    let Some(email) = db
        .query(
            "SELECT s.email FROM subscribers s JOIN campaigns c ON c.account_id = s.account_id \
             WHERE s.id = ? AND c.id = ?",
            vec![subscriber.into(), campaign.into()],
        )
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.first().and_then(Val::text))
    else {
        return Ok(None);
    };
    let lists = db
        .query(
            "SELECT l.name FROM campaign_lists cl JOIN lists l ON l.id = cl.list_id \
             WHERE cl.campaign_id = ? AND cl.kind = 'include' ORDER BY l.id",
            vec![campaign.into()],
        )
        .await?
        .iter()
        .filter_map(|r| r.first().and_then(Val::text))
        .collect();
    Ok(Some((email, lists)))
}
