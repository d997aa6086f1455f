//! `outbound campaign ...`: campaign state and counts for operators without HTTP.
//!
//! Owns: the subcommands (their names are a contract) and what they print.
//! Operators act on any account's campaign. An unknown id is a usage error
//! ([`CampaignNotFound`], exit 2); a transition the state does not allow fails
//! (exit 1) naming the state.
//! Must not: hold SQL (`campaign::store` does).

use chrono::Utc;
use clap::Subcommand;

use crate::campaign::Action;
use crate::campaign::store::{self, ActionError};
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

/// `id: campaign N not found` (main exits 2 on it).
#[derive(Debug, thiserror::Error)]
#[error("id: campaign {0} not found")]
pub struct CampaignNotFound(pub i64);

pub async fn run(db: &mut Db, action: CampaignAction) -> anyhow::Result<()> {
    let (id, action) = match action {
        CampaignAction::Start { id } => (id, Action::Start),
        CampaignAction::Pause { id } => (id, Action::Pause),
        CampaignAction::Resume { id } => (id, Action::Resume),
        CampaignAction::Cancel { id } => (id, Action::Cancel),
        CampaignAction::Stats { id } => return stats(db, id).await,
    };
    match store::apply(db, None, id, action, Utc::now()).await {
        Ok(state) => {
            println!("campaign {id} {state}");
            Ok(())
        }
        Err(ActionError::NotFound(id)) => Err(CampaignNotFound(id).into()),
        Err(e) => Err(e.into()),
    }
}

async fn stats(db: &mut Db, id: i64) -> anyhow::Result<()> {
    let Some(c) = store::get(db, None, id).await? else {
        return Err(CampaignNotFound(id).into());
    };
    let counts = store::counts(db, &c).await?;
    println!("state {}", c.state);
    for (name, value) in counts.pairs() {
        println!("{name} {value}");
    }
    let t = crate::tracking::store::counts(db, id).await?;
    println!("clicks {}", t.clicks);
    println!("unique_clickers {}", t.unique_clickers);
    println!("opens {}", t.opens);
    println!("unique_opens {}", t.unique_opens);
    Ok(())
}
