//! `outbound list ...`: lists and imports for operators without HTTP.

use std::path::PathBuf;

use clap::Subcommand;

use crate::db::Db;

#[derive(Debug, Subcommand)]
pub enum ListAction {
    /// Import a CSV (or a zip/gzip/RAR archive holding one) into list LIST_ID,
    /// with a progress bar on stderr.
    Import {
        /// The list's id.
        list_id: i64,
        /// The file to import.
        file: PathBuf,
    },
}

pub async fn run(_db: &mut Db, _action: ListAction) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
