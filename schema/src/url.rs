//! Store URLs (`--store`, `store.url`) and the SQLite durability setting.
//!
//! Owns: the spelling of store locations. Must not: open anything.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where messages are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:PATH` or `sqlite://PATH`: the embedded store, one file (plus its WAL).
    Sqlite(PathBuf),
    /// `mysql://USER:PASS@HOST:PORT/DB`, or `mysql://USER:PASS@localhost/DB?socket=PATH`
    /// for a unix socket: MySQL or MariaDB.
    Mysql(MysqlUrl),
}

/// A validated MySQL URL. Its `Debug`/`Display` hide the password (it is logged).
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlUrl(String);

impl MysqlUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> String {
        // mysql://user:secret@host → mysql://user:***@host
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) => match self.0.get(scheme + 3..at) {
                Some(userinfo) if userinfo.contains(':') => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("mysql://{user}:***{}", self.0.get(at..).unwrap_or_default())
                }
                _ => self.0.clone(),
            },
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for MysqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

/// A store URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    #[error("unsupported store URL `{0}` (expected sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB)")]
    Unsupported(String),
    #[error("store URL `{0}` has an empty path (expected sqlite:PATH)")]
    EmptyPath(String),
    #[error("bad MySQL URL (expected mysql://USER:PASS@HOST:PORT/DB[?socket=PATH]): {0}")]
    Mysql(String),
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("mysql://") {
            let opts =
                mysql_async::Opts::from_url(s).map_err(|e| StoreUrlError::Mysql(e.to_string()))?;
            if opts.db_name().is_none_or(str::is_empty) {
                return Err(StoreUrlError::Mysql("no database name".into()));
            }
            return Ok(Self::Mysql(MysqlUrl(s.to_owned())));
        }
        let Some(rest) = s.strip_prefix("sqlite:") else {
            return Err(StoreUrlError::Unsupported(s.to_owned()));
        };
        // `sqlite://data/x.sqlite` is relative, `sqlite:///var/x.sqlite` absolute:
        // the `//` is only the URL authority marker.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(StoreUrlError::EmptyPath(s.to_owned()));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Mysql(url) => write!(f, "{}", url.redacted()),
        }
    }
}

/// SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit: a `250` survives power loss (the default).
    Full,
    /// fsync at checkpoints only: a `250` survives a crash of the process, but the
    /// last commits may be lost if the machine loses power.
    Normal,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// A `store.synchronous` value other than "full" or "normal".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of \"full\", \"normal\"")]
pub struct SynchronousError(String);

impl FromStr for Synchronous {
    type Err = SynchronousError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("full") {
            Ok(Self::Full)
        } else if s.eq_ignore_ascii_case("normal") {
            Ok(Self::Normal)
        } else {
            Err(SynchronousError(s.to_owned()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            "sqlite:./data/smtpd.sqlite".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("./data/smtpd.sqlite".into())
        );
        assert_eq!(
            "sqlite:///var/lib/smtpd/x.sqlite"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Sqlite("/var/lib/smtpd/x.sqlite".into())
        );
        assert_eq!(
            "sqlite://rel.sqlite".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("rel.sqlite".into())
        );
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for bad in ["nosuch:foo", "", "/tmp/x.sqlite", "SQLITE"] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert!(e.to_string().contains("sqlite:PATH"), "{bad}: {e}");
        }
        assert!(matches!(
            "sqlite:".parse::<StoreUrl>(),
            Err(StoreUrlError::EmptyPath(_))
        ));
        assert!(matches!(
            "sqlite://".parse::<StoreUrl>(),
            Err(StoreUrlError::EmptyPath(_))
        ));
    }

    #[test]
    fn mysql_urls_are_validated_and_their_passwords_never_shown() {
        let url: StoreUrl = "mysql://smtpd:s3cret@127.0.0.1:3306/mail".parse().unwrap();
        assert_eq!(url.to_string(), "mysql://smtpd:***@127.0.0.1:3306/mail");
        assert!(!format!("{url:?}").contains("s3cret"));
        let url: StoreUrl = "mysql://u:p@localhost/mail?socket=/run/mysqld/mysqld.sock"
            .parse()
            .unwrap();
        assert!(matches!(url, StoreUrl::Mysql(_)));
        assert!(matches!(
            "mysql://u:p@host:3306".parse::<StoreUrl>(),
            Err(StoreUrlError::Mysql(_))
        ));
        assert!(matches!(
            "mysql://u:p@host:notaport/db".parse::<StoreUrl>(),
            Err(StoreUrlError::Mysql(_))
        ));
    }

    #[test]
    fn synchronous_values() {
        assert_eq!("full".parse::<Synchronous>().unwrap(), Synchronous::Full);
        assert_eq!(
            "NORMAL".parse::<Synchronous>().unwrap(),
            Synchronous::Normal
        );
        assert!("off".parse::<Synchronous>().is_err());
    }
}
