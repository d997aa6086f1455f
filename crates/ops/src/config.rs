//! The error of every configuration loader in the workspace (`smtpd`'s and
//! `outbound`'s), the TOML file reading and the range check they share.
//!
//! Owns: naming what is wrong: the file that cannot be read, the file that does not
//! parse (serde's message names the section and key), or the field whose value is
//! refused (`limits.max_recipients: must be ...`, `domains."example.com".rate: ...`),
//! so an operator can fix a config without reading the source.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {reason}")]
    Invalid {
        field: Cow<'static, str>,
        reason: String,
    },
}

/// `field` (a fixed name, or one built for a table entry) cannot hold this value.
pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Reads and parses a TOML config file.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(path, &text)
}

/// Parses TOML text read from `path` (named in the error).
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `value` of `field` must lie in `min..=max`; returns it when it does.
pub fn bounded<T: PartialOrd + fmt::Display + Copy>(
    field: impl Into<Cow<'static, str>>,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            field,
            format!("{value} is out of range (allowed {min} to {max})"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_names_the_field_and_the_range() {
        assert_eq!(bounded("a.b", 5, 1, 10).ok(), Some(5));
        let e = bounded("limits.max_recipients", 0usize, 1, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "limits.max_recipients: 0 is out of range (allowed 1 to 10)"
        );
        assert!(bounded("x", 1.5, 1.0, 100.0).is_ok());
    }
}
