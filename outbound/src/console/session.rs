//! Console logins: passwords (argon2id), sessions (cookie `outbound_session`) and
//! the bound on login attempts.
//!
//! Owns: the `accounts.password_hash` column and the `console_sessions` table
//! (`schema/*/0005_tracking.sql`): setting a password, checking one, opening,
//! finding and ending a session; the [`Console`] extractor every page takes (no
//! session: a redirect to `/login`), so a page cannot forget to ask; the login
//! attempt limiter.
//! Must not: render pages or decide what an account may see (the pages filter by
//! the session's account id).
//!
//! A session id is 32 random bytes (hex in the cookie); only its SHA-256 is stored,
//! as for API tokens: a leaked database does not give live sessions. Passwords are
//! the opposite case (low entropy), hence a slow, salted hash.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{COOKIE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::accounts::{self, Account, token_sha256};
use crate::db::{Db, DbError, Val};
use crate::queue::ts;
use crate::web::AppState;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "outbound_session";
/// How long a session lives after login (no sliding renewal: a stolen cookie
/// dies on schedule).
pub const SESSION_SECS: i64 = 12 * 3600;
/// Shortest password `outbound account passwd` and the admin page accept.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password: argon2 takes any length, but a megabyte "password" would
/// only be a way to burn our CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Login attempts per account name and client address ...
pub const MAX_LOGIN_ATTEMPTS: usize = 10;
/// ... within this window; more get 429.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys the limiter remembers at most: past it, the oldest windows are dropped
/// first (memory stays bounded under a spray of names).
const MAX_LIMITER_KEYS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password: at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("password: at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password: cannot hash ({0})")]
    Hash(String),
}

/// The argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string (a malformed one never does).
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the account has none, so that an unknown name
/// costs as much time as a wrong password (names are not told by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never matches").unwrap_or_default())
}

/// Sets (or replaces) the password of account `name`; false: no such account.
/// Ends the account's sessions: a new password logs every browser out.
pub async fn set_password(db: &mut Db, name: &str, password: &str) -> anyhow::Result<bool> {
    let hash = hash_password(password)?;
    let Some(account) = accounts::by_name(db, name).await? else {
        return Ok(false);
    };
    db.exec(
        "UPDATE accounts SET password_hash = ? WHERE id = ?",
        vec![hash.into(), account.id.into()],
    )
    .await?;
    db.exec(
        "DELETE FROM console_sessions WHERE account_id = ?",
        vec![account.id.into()],
    )
    .await?;
    Ok(true)
}

/// The account `name` if `password` is its password.
pub async fn check_login(
    db: &mut Db,
    name: &str,
    password: &str,
) -> Result<Option<Account>, DbError> {
    let rows = db
        .query(
            "SELECT password_hash FROM accounts WHERE name = ?",
            vec![name.into()],
        )
        .await?;
    let stored = rows.first().and_then(|r| r.first()).and_then(Val::text);
    let phc = stored.clone().unwrap_or_else(|| decoy_hash().to_owned());
    let password = password.to_owned();
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    if !ok || stored.is_none() {
        return Ok(None);
    }
    accounts::by_name(db, name).await
}

/// 32 random bytes as hex.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens a session for `account`; returns the cookie value.
pub async fn open(db: &mut Db, account: &Account) -> Result<String, DbError> {
    let (Ok(id), Ok(csrf)) = (random_token(), random_token()) else {
        return Err(DbError::Timeout(Duration::ZERO));
    };
    let now = Utc::now();
    // Expired sessions of anyone are swept here: logins are rare enough.
    db.exec(
        "DELETE FROM console_sessions WHERE expires_at < ?",
        vec![ts(now).into()],
    )
    .await?;
    db.exec(
        "INSERT INTO console_sessions (id_sha256, account_id, csrf_token, expires_at) VALUES (?, ?, ?, ?)",
        vec![
            token_sha256(&id).into(),
            account.id.into(),
            csrf.into(),
            ts(now + chrono::Duration::seconds(SESSION_SECS)).into(),
        ],
    )
    .await?;
    Ok(id)
}

/// Ends the session whose cookie value is `id`.
pub async fn close(db: &mut Db, id: &str) -> Result<(), DbError> {
    db.exec(
        "DELETE FROM console_sessions WHERE id_sha256 = ?",
        vec![token_sha256(id).into()],
    )
    .await
    .map(drop)
}

/// A signed-in request: its account and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Console {
    pub account: Account,
    pub csrf: String,
    /// The cookie value (for logout).
    pub session_id: String,
}

/// The session of the cookie `id`, if live.
async fn find(db: &mut Db, id: &str) -> Result<Option<Console>, DbError> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let rows = db
        .query(
            "SELECT s.csrf_token, a.name FROM console_sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.id_sha256 = ? AND s.expires_at > ?",
            vec![token_sha256(id).into(), ts(Utc::now()).into()],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let (Some(csrf), Some(name)) = (
        row.first().and_then(Val::text),
        row.get(1).and_then(Val::text),
    ) else {
        return Ok(None);
    };
    Ok(accounts::by_name(db, &name).await?.map(|account| Console {
        account,
        csrf,
        session_id: id.to_owned(),
    }))
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// `Set-Cookie` for a session (an empty value with `Max-Age=0` ends it).
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// No session: pages redirect to the login form, JSON endpoints say 401.
pub enum NoSession {
    Login,
    Unavailable,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            Self::Login => (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response(),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again",
            )
                .into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Console {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Console>() {
            return Ok(c.clone());
        }
        let Some(id) = cookie(&parts.headers, COOKIE_NAME) else {
            return Err(NoSession::Login);
        };
        let mut db = state.pool.get().await.map_err(|_| NoSession::Unavailable)?;
        match find(&mut db, &id).await {
            Ok(Some(c)) => {
                parts.extensions.insert(c.clone());
                Ok(c)
            }
            Ok(None) => Err(NoSession::Login),
            Err(_) => Err(NoSession::Unavailable),
        }
    }
}

/// The client address of a request (None when the server was not started with
/// connection info, as in router-only tests).
pub fn client_ip(parts_ext: &axum::http::Extensions) -> Option<IpAddr> {
    parts_ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Whose attempts are counted together: the account name tried, from where.
type AttemptKey = (String, Option<IpAddr>);

/// Login attempts per (account name, client address) in a sliding window.
#[derive(Default)]
pub struct Limiter {
    attempts: Mutex<HashMap<AttemptKey, Vec<Instant>>>,
}

impl Limiter {
    /// Counts an attempt; false when the key is over its budget (not counted then).
    pub fn allow(&self, name: &str, ip: Option<IpAddr>, now: Instant) -> bool {
        let Ok(mut map) = self.attempts.lock() else {
            return false;
        };
        if map.len() >= MAX_LIMITER_KEYS {
            map.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < LOGIN_WINDOW));
            if map.len() >= MAX_LIMITER_KEYS {
                // Still full of live windows: refuse new keys rather than grow.
                if !map.contains_key(&(name.to_owned(), ip)) {
                    return false;
                }
            }
        }
        let entry = map.entry((name.to_owned(), ip)).or_default();
        entry.retain(|t| now.duration_since(*t) < LOGIN_WINDOW);
        if entry.len() >= MAX_LOGIN_ATTEMPTS {
            return false;
        }
        entry.push(now);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; outbound_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE_NAME).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(COOKIE_NAME, "v", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie(COOKIE_NAME, "v", 60, false).contains("Secure"));
    }

    #[test]
    fn login_attempts_are_bounded_per_name_and_address() {
        let l = Limiter::default();
        let now = Instant::now();
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..MAX_LOGIN_ATTEMPTS {
            assert!(l.allow("ann", ip, now));
        }
        assert!(!l.allow("ann", ip, now));
        assert!(l.allow("bob", ip, now), "another name has its own budget");
        assert!(l.allow("ann", ip, now + LOGIN_WINDOW), "the window slides");
    }
}
