//! `outbound campaign ...`: campaign state and counts for operators without HTTP.

use clap::Subcommand;

use crate::db::Db;

#[derive(Debug, Subcommand)]
pub enum CampaignAction {
    /// Start (or schedule, with a send_at) a draft campaign.
    Start { id: i64 },
    /// Stop new deliveries of a running campaign.
    Pause { id: i64 },
    /// Go on with a paused campaign.
    Resume { id: i64 },
    /// Stop a campaign for good, taking its rows out of the queue.
    Cancel { id: i64 },
    /// State and counts.
    Stats { id: i64 },
}

pub async fn run(_db: &mut Db, _action: CampaignAction) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
