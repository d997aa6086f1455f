//! The process's tracing subscriber.
//!
//! Owns: where log lines go, their format (`log.format`: `text`, or `json`, one JSON
//! object per line for a log shipper) and whether they carry ANSI colours. Colours
//! only for a person at a terminal; a log file or journald (stderr that is not a
//! terminal) gets plain text. The returned [`LogHandle`] changes the level live (SIGHUP) and
//! reopens the log file (SIGUSR1, after logrotate moved it). Must not: decide what
//! is logged.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::ConfigError;

/// `log.format`: how each line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// tracing's human-readable line (the default: what an operator reads).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`).
    Json,
}

impl LogFormat {
    /// Parses `log.format` (`text` or `json`; absent or empty is `text`).
    pub fn parse(field: &'static str, value: Option<&str>) -> Result<Self, ConfigError> {
        match value.unwrap_or("") {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(crate::invalid(
                field,
                format!("must be \"text\" or \"json\", not {other:?}"),
            )),
        }
    }
}

/// Checks a `log.level` filter (`info`, `debug`, `smtpd=debug,info`) at config load,
/// so a bad one is refused naming `field` rather than failing at start or reload.
pub fn check_level(field: &'static str, value: &str) -> Result<(), ConfigError> {
    EnvFilter::try_new(value)
        .map(drop)
        .map_err(|e| crate::invalid(field, e))
}

/// How to set up logging.
#[derive(Debug, Clone)]
pub struct Logging<'a> {
    /// The environment variable with a filter (`smtpd=debug,info`) that overrides
    /// `default_filter`.
    pub env_var: &'a str,
    pub default_filter: &'a str,
    /// Append to this file instead of writing to stderr.
    pub file: Option<&'a Path>,
    pub format: LogFormat,
}

/// The log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source}")]
pub struct LogFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A filter that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("cannot change the log level: {0}")]
pub struct LevelError(String);

fn open_append(path: &Path) -> Result<File, LogFileError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogFileError {
            path: path.to_owned(),
            source,
        })
}

/// The log file, swapped for a new one on [`LogHandle::reopen`]. Writers hold the
/// read lock for one line.
#[derive(Debug)]
struct ReopenableFile {
    path: PathBuf,
    file: RwLock<File>,
}

impl Write for &ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.file.read() {
            Ok(f) => (&*f).write(buf),
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.read() {
            Ok(f) => (&*f).flush(),
            Err(_) => Ok(()),
        }
    }
}

/// Swaps the subscriber's filter (the reload handle, behind its writer's type).
type ApplyFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// What a running process can change about its logging.
pub struct LogHandle {
    env_var: String,
    filter: Option<ApplyFilter>,
    file: Option<Arc<ReopenableFile>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("file", &self.file.as_ref().map(|f| &f.path))
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Applies `default_filter` (unless the environment variable overrides it, as at
    /// start).
    pub fn set_level(&self, default_filter: &str) -> Result<(), LevelError> {
        if std::env::var_os(&self.env_var).is_some() {
            return Ok(());
        }
        let filter = EnvFilter::try_new(default_filter).map_err(|e| LevelError(e.to_string()))?;
        match &self.filter {
            Some(apply) => apply(filter).map_err(LevelError),
            None => Ok(()),
        }
    }

    /// Opens the log file again by its path (a no-op when logging to stderr): lines
    /// from now on go to the new file.
    pub fn reopen(&self) -> Result<(), LogFileError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let new = open_append(&file.path)?;
        if let Ok(mut f) = file.file.write() {
            *f = new;
        }
        Ok(())
    }

    /// The log file, when logging to one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

/// Installs the global subscriber (once per process).
pub fn init(setup: &Logging<'_>) -> Result<LogHandle, LogFileError> {
    let filter = EnvFilter::try_from_env(setup.env_var)
        .unwrap_or_else(|_| EnvFilter::new(setup.default_filter));
    let mut handle = LogHandle {
        env_var: setup.env_var.to_owned(),
        filter: None,
        file: None,
    };
    let apply = match setup.file {
        Some(path) => {
            let file = Arc::new(ReopenableFile {
                path: path.to_owned(),
                file: RwLock::new(open_append(path)?),
            });
            handle.file = Some(Arc::clone(&file));
            install(file, false, filter, setup.format)
        }
        None => install(
            std::io::stderr,
            std::io::stderr().is_terminal(),
            filter,
            setup.format,
        ),
    };
    handle.filter = Some(apply);
    Ok(handle)
}

/// Installs the subscriber writing to `writer` in `format`; returns what swaps its
/// filter.
fn install<W>(writer: W, ansi: bool, filter: EnvFilter, format: LogFormat) -> ApplyFilter
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => {
            let builder = builder
                .with_ansi(ansi)
                .event_format(crate::log_text::TextLine::default())
                .with_filter_reloading();
            let h = builder.reload_handle();
            builder.init();
            Box::new(move |f: EnvFilter| h.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            // No colours in JSON: escape codes would end up inside the strings.
            let builder = builder
                .json()
                .with_ansi(false)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let h = builder.reload_handle();
            builder.init();
            Box::new(move |f: EnvFilter| h.reload(f).map_err(|e| e.to_string()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_text_and_json_and_names_the_field() {
        assert_eq!(
            LogFormat::parse("log.format", None).unwrap(),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::parse("log.format", Some("json")).unwrap(),
            LogFormat::Json
        );
        let e = LogFormat::parse("log.format", Some("xml")).unwrap_err();
        assert!(e.to_string().starts_with("log.format: "), "{e}");
        assert!(check_level("log.level", "smtpd=debug,info").is_ok());
        let e = check_level("log.level", "smtpd=loud").unwrap_err();
        assert!(e.to_string().starts_with("log.level: "), "{e}");
    }
}
