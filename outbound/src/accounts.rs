//! Accounts (the users of the mass-mailing system) and their API bearer tokens.
//!
//! Owns: the `accounts` and `api_tokens` tables (`schema/*/0004_campaigns.sql`):
//! creating an account with its first token, and finding the account a token
//! belongs to. A token is 32 random bytes (hex, prefixed `ob_`); only its SHA-256
//! is stored. A fast hash is right here, unlike for passwords: a token has 256
//! bits of entropy, so there is nothing to guess, and the lookup runs on every
//! request.
//! Must not: know HTTP (`web::auth` does) or any other account data.

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
