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

    /// The connection options: the URL as `mysql_async` reads it, with our TLS
    /// parameters (`ssl-mode`, `ssl-ca`, see [`MysqlTls`]) taken out and applied.
    pub fn opts(&self) -> Result<mysql_async::Opts, StoreUrlError> {
        let (rest, tls) = MysqlTls::split(&self.0)?;
        let opts =
            mysql_async::Opts::from_url(&rest).map_err(|e| StoreUrlError::Mysql(e.to_string()))?;
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(StoreUrlError::Mysql("no database name".into()));
        }
        Ok(match tls.ssl_opts() {
            Some(ssl) => mysql_async::OptsBuilder::from_opts(opts)
                .ssl_opts(ssl)
                .into(),
            None => opts,
        })
    }

    /// Whether the URL asks for TLS (`ssl-mode` other than `disabled`).
    pub fn tls(&self) -> bool {
        MysqlTls::split(&self.0).is_ok_and(|(_, t)| t.mode != SslMode::Disabled)
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

/// `?ssl-mode=`: how a MySQL connection uses TLS (the names of the `mysql` client's
/// `--ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP (the default).
    Disabled,
    /// TLS or nothing. The server certificate is checked against `ssl-ca` when one is
    /// given (as the `mysql` client does), otherwise not checked at all.
    Required,
    /// TLS, the certificate chain must verify against `ssl-ca` (or the web PKI
    /// roots), any host name.
    VerifyCa,
    /// As `verify_ca`, and the certificate must name the host of the URL.
    VerifyIdentity,
}

/// The TLS parameters of a MySQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    pub mode: SslMode,
    /// `?ssl-ca=PATH`: PEM file of the CA(s) the server certificate must chain to.
    pub ca: Option<PathBuf>,
}

impl MysqlTls {
    /// Splits `ssl-mode`/`ssl-ca` off `url`: (the URL without them, the settings).
    fn split(url: &str) -> Result<(String, MysqlTls), StoreUrlError> {
        let bad = |m: String| StoreUrlError::Mysql(m);
        let mut tls = MysqlTls {
            mode: SslMode::Disabled,
            ca: None,
        };
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), tls));
        };
        let mut kept = Vec::new();
        let mut mode_given = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ssl-mode" => {
                    mode_given = true;
                    tls.mode = match value.to_ascii_lowercase().as_str() {
                        "disabled" => SslMode::Disabled,
                        "required" => SslMode::Required,
                        "verify_ca" => SslMode::VerifyCa,
                        "verify_identity" => SslMode::VerifyIdentity,
                        other => {
                            return Err(bad(format!(
                                "ssl-mode={other:?}: expected disabled, required, verify_ca or verify_identity"
                            )));
                        }
                    }
                }
                "ssl-ca" => {
                    if value.is_empty() {
                        return Err(bad(
                            "ssl-ca is empty (expected the path of a PEM CA file)".into()
                        ));
                    }
                    let path = PathBuf::from(value);
                    let pem = std::fs::read_to_string(&path).map_err(|e| {
                        bad(format!("ssl-ca={}: cannot read it: {e}", path.display()))
                    })?;
                    if !pem.contains("-----BEGIN CERTIFICATE-----") {
                        return Err(bad(format!(
                            "ssl-ca={}: no PEM certificate in it",
                            path.display()
                        )));
                    }
                    tls.ca = Some(path);
                }
                "require_ssl" | "verify_ca" | "verify_identity" => {
                    return Err(bad(format!(
                        "{key}: use ssl-mode=required|verify_ca|verify_identity"
                    )));
                }
                _ => kept.push(pair),
            }
        }
        if tls.ca.is_some() && !mode_given {
            // A CA file alone means "check the server against it".
            tls.mode = SslMode::VerifyIdentity;
        }
        if tls.ca.is_some() && tls.mode == SslMode::Disabled {
            return Err(bad("ssl-ca is set but ssl-mode=disabled".into()));
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, tls))
    }

    fn ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        let verify = match self.mode {
            SslMode::Disabled => return None,
            SslMode::Required => self.ca.is_some(),
            SslMode::VerifyCa | SslMode::VerifyIdentity => true,
        };
        let mut ssl = mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(!verify)
            .with_danger_skip_domain_validation(self.mode != SslMode::VerifyIdentity);
        if let Some(ca) = &self.ca {
            // Only the operator's CA: a private CA is what this setting is for.
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        Some(ssl)
    }
}

/// A store URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    #[error("unsupported store URL `{0}` (expected sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB)")]
    Unsupported(String),
    #[error("store URL `{0}` has an empty path (expected sqlite:PATH)")]
    EmptyPath(String),
    #[error(
        "bad MySQL URL (expected mysql://USER:PASS@HOST:PORT/DB[?socket=PATH][&ssl-mode=MODE&ssl-ca=PATH]): {0}"
    )]
    Mysql(String),
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("mysql://") {
            let url = MysqlUrl(s.to_owned());
            url.opts()?;
            return Ok(Self::Mysql(url));
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
    fn mysql_tls_settings_are_parsed_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let base = "mysql://u:secret@db:3306/mail";
        let (rest, tls) = MysqlTls::split(&format!(
            "{base}?ssl-mode=verify_ca&ssl-ca={}&socket=/s",
            ca.display()
        ))
        .unwrap();
        assert_eq!(rest, format!("{base}?socket=/s"));
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.ca.as_deref(), Some(ca.as_path()));
        // A CA alone means verify_identity; no parameters means no TLS.
        let (_, tls) = MysqlTls::split(&format!("{base}?ssl-ca={}", ca.display())).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyIdentity);
        let url: StoreUrl = base.parse().unwrap();
        let StoreUrl::Mysql(url) = url else {
            unreachable!()
        };
        assert!(!url.tls() && url.opts().unwrap().ssl_opts().is_none());
        let url: StoreUrl = format!("{base}?ssl-mode=required").parse().unwrap();
        let StoreUrl::Mysql(url) = url else {
            unreachable!()
        };
        assert!(url.tls() && url.opts().unwrap().ssl_opts().is_some());
        for (bad, needle) in [
            ("?ssl-mode=sometimes", "ssl-mode=\"sometimes\""),
            ("?ssl-ca=/nonexistent.pem", "ssl-ca=/nonexistent.pem"),
            ("?ssl-ca=", "ssl-ca is empty"),
            ("?require_ssl=true", "use ssl-mode"),
        ] {
            let e = format!("{base}{bad}")
                .parse::<StoreUrl>()
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        let e = format!("{base}?ssl-mode=disabled&ssl-ca={}", ca.display())
            .parse::<StoreUrl>()
            .unwrap_err();
        assert!(e.to_string().contains("ssl-mode=disabled"), "{e}");
    }

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
