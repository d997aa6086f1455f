//! Double opt-in confirmations: adding subscribers to a `double` list (the API's
//! `POST /api/v1/lists/{id}/subscribers`, the console's form) queues each new or
//! still unconfirmed member a confirmation message, an ordinary `outbound_queue`
//! row, with a signed link `/c/<token>` to `outbound web` (`page`), throttled
//! (`throttle`) so that a sign-up form cannot be used to flood anybody.
//!
//! [`add_members`] is the one path both take: in one transaction the members are
//! stored (`lists::upsert`), the unconfirmed ones among them looked up, every
//! throttle counted, and the messages queued; a throttle passed rolls all of it
//! back (nothing stored, nothing queued). Imports never come here: their rows are
//! the operator's existing opt-ins.
//!
//! The link: `<tracking.scheme>://<the account's first tracking domain>/c/<token>`,
//! the token signed with `tracking.key` (`tracking::token`, kind `Confirm`). The
//! From address: the list's `sender`, else `confirmations.sender`. Without a key,
//! a tracking domain or a sender no confirmation can be sent: members are added
//! unconfirmed and the answer says why none was sent (`skipped`).
//!
//! Owns: which members get a confirmation, the message, member confirmation
//! (`unconfirmed` → `confirmed`, never from `unsubscribed`).
//! Must not: confirm on a GET (link scanners prefetch), or sign tokens itself.

pub mod page;
pub mod throttle;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::message_id::MessageId;

use crate::config::Config;
use crate::db::{Db, DbError, Val};
use crate::lists::{self, List, NewSubscriber, OptIn, Upserted};
use crate::queue::ts;
use crate::tracking::token::{Claim, Signer};
use throttle::{Exceeded, Scope};

/// Addresses per member lookup (as `lists`' own lookups).
const LOOKUP_BATCH: usize = 500;

/// What [`add_members`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    pub upserted: Upserted,
    /// Confirmation messages queued.
    pub confirmations: u64,
    /// Why unconfirmed members got none (no key, domain or sender).
    pub skipped: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// A throttle is passed: nothing was stored or queued.
    #[error("{0}")]
    Throttled(Exceeded),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One member to confirm.
struct Pending {
    subscriber: i64,
    email: String,
    key: String,
}

/// What a confirmation needs besides its member.
struct Sending {
    signer: Signer,
    base: String,
    sender: String,
}

/// Stores `rows` as members of `list` and queues confirmations (see the module
/// comment), in one transaction of its own.
pub async fn add_members(
    db: &mut Db,
    cfg: &Config,
    list: &List,
    rows: &[NewSubscriber],
    client: Option<IpAddr>,
    now: DateTime<Utc>,
) -> Result<Added, AddError> {
    let added = db
        .in_tx(async |db: &mut Db| add_in_tx(db, cfg, list, rows, client, now).await)
        .await?;
    if added.confirmations > 0 {
        // Old windows go now and then: with every request that sent something.
        if let Err(e) = throttle::prune(db, now).await {
            tracing::debug!(error = %e, "pruning confirm_throttle failed");
        }
    }
    Ok(added)
}

async fn add_in_tx(
    db: &mut Db,
    cfg: &Config,
    list: &List,
    rows: &[NewSubscriber],
    client: Option<IpAddr>,
    now: DateTime<Utc>,
) -> Result<Added, AddError> {
    let mut added = Added {
        upserted: lists::upsert(db, list, rows).await?,
        ..Added::default()
    };
    if list.opt_in != OptIn::Double {
        return Ok(added);
    }
    let pending = unconfirmed(db, list, rows).await?;
    if pending.is_empty() {
        return Ok(added);
    }
    let sending = match sending(db, cfg, list).await? {
        Ok(s) => s,
        Err(why) => {
            added.skipped = Some(why);
            return Ok(added);
        }
    };
    let limits = &cfg.confirmations;
    if let Some(ip) = client {
        let n = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        throttle::hit(db, limits, Scope::Ip, &ip.to_string(), n, now)
            .await?
            .map_err(AddError::Throttled)?;
    }
    for p in &pending {
        throttle::hit(db, limits, Scope::Address, &p.key, 1, now)
            .await?
            .map_err(AddError::Throttled)?;
        let domain = p.key.rsplit_once('@').map_or("", |(_, d)| d);
        throttle::hit(db, limits, Scope::Domain, domain, 1, now)
            .await?
            .map_err(AddError::Throttled)?;
    }
    for p in &pending {
        let body = message(cfg, list, &sending, p, now);
        db.exec(
            "INSERT INTO outbound_queue (sender, recipient, body, priority, tag) \
             VALUES (?, ?, ?, 0, ?)",
            vec![
                sending.sender.as_str().into(),
                p.email.as_str().into(),
                Val::Bytes(body),
                format!("confirm:{}", list.id).into(),
            ],
        )
        .await?;
        added.confirmations += 1;
    }
    Ok(added)
}

/// The members among `rows` still `unconfirmed` on `list` (new ones, and those
/// added again before confirming), whose subscriber is not blocklisted.
async fn unconfirmed(
    db: &mut Db,
    list: &List,
    rows: &[NewSubscriber],
) -> Result<Vec<Pending>, DbError> {
    let mut keys: Vec<String> = rows.iter().map(NewSubscriber::key).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    for batch in keys.chunks(LOOKUP_BATCH) {
        let sql = format!(
            "SELECT s.id, s.email, s.email_key FROM subscribers s \
             JOIN list_members m ON m.list_id = ? AND m.subscriber_id = s.id \
             WHERE s.account_id = ? AND s.email_key IN ({}) \
             AND m.status = 'unconfirmed' AND s.status = 'enabled' ORDER BY s.id",
            Db::placeholders(batch.len())
        );
        let mut params = vec![Val::Int(list.id), Val::Int(list.account_id)];
        params.extend(batch.iter().map(|k| Val::Text(k.clone())));
        for r in db.query(&sql, params).await? {
            let mut v = r.into_iter();
            let (Some(subscriber), Some(email), Some(key)) = (
                v.next().and_then(|x| x.int()),
                v.next().and_then(|x| x.text()),
                v.next().and_then(|x| x.text()),
            ) else {
                continue;
            };
            out.push(Pending {
                subscriber,
                email,
                key,
            });
        }
    }
    Ok(out)
}

/// The signer, link base and From address of `list`'s confirmations, or why
/// there are none.
async fn sending(
    db: &mut Db,
    cfg: &Config,
    list: &List,
) -> Result<Result<Sending, &'static str>, DbError> {
    let Some(key) = cfg.tracking.key.as_deref() else {
        return Ok(Err("no tracking.key to sign confirm links with"));
    };
    let Some(sender) = list
        .sender
        .clone()
        .or_else(|| cfg.confirmations.sender.clone())
    else {
        return Ok(Err(
            "no sender: set the list's sender or confirmations.sender",
        ));
    };
    let Some(domain) = crate::tracking::store::domains(db, list.account_id)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Err("the account has no tracking domain for confirm links"));
    };
    Ok(Ok(Sending {
        signer: Signer::new(key),
        base: format!("{}://{domain}", cfg.tracking.scheme),
        sender,
    }))
}

/// The link that confirms `subscriber` on `list`.
pub fn confirm_url(signer: &Signer, base: &str, list: i64, subscriber: i64) -> String {
    format!(
        "{base}/c/{}",
        signer.sign(Claim::Confirm { list, subscriber })
    )
}

/// The whole RFC 5322 message of one confirmation.
fn message(cfg: &Config, list: &List, s: &Sending, p: &Pending, now: DateTime<Utc>) -> Vec<u8> {
    let url = confirm_url(&s.signer, &s.base, list.id, p.subscriber);
    let mut id = [0u8; 12];
    let unique = match getrandom::fill(&mut id) {
        Ok(()) => id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        Err(_) => format!("{}.{}", now.timestamp_millis(), p.subscriber),
    };
    let text = format!(
        "Please confirm that you want to receive mail from \"{name}\" at {email}:\r\n\
         \r\n{url}\r\n\r\n\
         Open the link and press the button on the page. If you did not ask for\r\n\
         this, ignore this message: without confirmation you get nothing more.\r\n",
        name = list.name,
        email = p.email,
    );
    MessageBuilder::new()
        .from(s.sender.as_str())
        .to(p.email.as_str())
        .subject(format!("Please confirm your subscription to {}", list.name))
        .date(now.timestamp())
        .message_id(MessageId::new(format!(
            "confirm.{unique}@{}",
            cfg.message_id_domain
        )))
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-generated"),
        )
        .text_body(text)
        .write_to_vec()
        .unwrap_or_default()
}

/// What `/c/<token>` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub email: String,
    pub list_name: String,
    pub status: String,
}

/// The member a confirm token names, if it is still a member.
pub async fn member(db: &mut Db, list: i64, subscriber: i64) -> Result<Option<Member>, DbError> {
    let rows = db
        .query(
            "SELECT s.email, l.name, m.status FROM list_members m \
             JOIN subscribers s ON s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id \
             WHERE m.list_id = ? AND m.subscriber_id = ? AND s.account_id = l.account_id",
            vec![list.into(), subscriber.into()],
        )
        .await?;
    Ok(rows.into_iter().next().and_then(|r| {
        let mut v = r.into_iter();
        Some(Member {
            email: v.next()?.text()?,
            list_name: v.next()?.text()?,
            status: v.next()?.text()?,
        })
    }))
}

/// Confirms an `unconfirmed` member (an `unsubscribed` or already `confirmed`
/// one is left as it is). Whether it changed.
pub async fn confirm(
    db: &mut Db,
    list: i64,
    subscriber: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let n = db
        .exec(
            "UPDATE list_members SET status = 'confirmed', confirmed_at = ?, updated_at = ? \
             WHERE list_id = ? AND subscriber_id = ? AND status = 'unconfirmed'",
            vec![
                ts(now).into(),
                ts(now).into(),
                list.into(),
                subscriber.into(),
            ],
        )
        .await?;
    Ok(n > 0)
}
