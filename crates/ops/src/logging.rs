//! The process's tracing subscriber.
//!
//! Owns: where log lines go and whether they carry ANSI colours. Colours only for a
//! person at a terminal; a log file or journald (stderr that is not a terminal)
//! gets plain text. Must not: decide what is logged.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// How to set up logging.
#[derive(Debug, Clone)]
pub struct Logging<'a> {
    /// The environment variable with a filter (`smtpd=debug,info`) that overrides
    /// `default_filter`.
    pub env_var: &'a str,
    pub default_filter: &'a str,
    /// Append to this file instead of writing to stderr.
    pub file: Option<&'a Path>,
}

/// The log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source}")]
pub struct LogFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Installs the global subscriber (once per process).
pub fn init(setup: &Logging<'_>) -> Result<(), LogFileError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env(setup.env_var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(setup.default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match setup.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogFileError {
                    path: path.to_owned(),
                    source,
                })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}
