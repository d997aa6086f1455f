//! `outbound account limits|resume|show NAME`: an account's sending limits and
//! auto-pause, for operators.
//!
//! Owns: parsing the limit arguments (`none` clears one) and the printed lines.
//! Must not: hold SQL (`accounts` does).

use anyhow::Context;
use chrono::Utc;

use crate::accounts;
use crate::db::Db;

/// `--send-rate R|none`, `--daily-quota Q|none` as given.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// The account's name.
    pub name: String,
    /// Campaign messages per second, all its campaigns together; `none` clears it.
    #[arg(long = "send-rate")]
    pub send_rate: Option<String>,
    /// Campaign messages queued per UTC day; `none` clears it.
    #[arg(long = "daily-quota")]
    pub daily_quota: Option<String>,
}

/// `none` → Some(None); a number → Some(Some(n)); absent → None.
fn parse<T: std::str::FromStr>(flag: &str, v: Option<&str>) -> anyhow::Result<Option<Option<T>>> {
    match v {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(t) => t
            .trim()
            .parse()
            .map(|n| Some(Some(n)))
            .map_err(|_| anyhow::anyhow!("{flag}: `{t}` is not a number (or `none`)")),
    }
}

async fn account(db: &mut Db, name: &str) -> anyhow::Result<accounts::Account> {
    accounts::by_name(db, name)
        .await?
        .with_context(|| format!("account {name} not found"))
}

pub async fn limits(db: &mut Db, args: LimitArgs) -> anyhow::Result<()> {
    let a = account(db, &args.name).await?;
    let rate = parse::<f64>("--send-rate", args.send_rate.as_deref())?;
    let quota = parse::<i64>("--daily-quota", args.daily_quota.as_deref())?;
    accounts::check_limits(rate.flatten(), quota.flatten()).map_err(anyhow::Error::msg)?;
    accounts::set_limits(db, a.id, rate, quota).await?;
    show(db, &args.name).await
}

pub async fn resume(db: &mut Db, name: &str) -> anyhow::Result<()> {
    let a = account(db, name).await?;
    match accounts::resume(db, a.id, Utc::now()).await? {
        Some(ids) => {
            println!("account {name} resumed; campaigns resumed: {ids:?}");
            Ok(())
        }
        None => anyhow::bail!("account {name} is not paused"),
    }
}

pub async fn show(db: &mut Db, name: &str) -> anyhow::Result<()> {
    let a = account(db, name).await?;
    let s = accounts::status(db, a.id, Utc::now()).await?;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    println!("account {} ({})", a.name, a.id);
    println!("send_rate {}", opt(s.send_rate.map(|r| r.to_string())));
    println!("daily_quota {}", opt(s.daily_quota.map(|q| q.to_string())));
    println!("sent_today {}", s.sent_today);
    match s.paused_reason {
        Some(r) => println!("state paused: {r}"),
        None => println!("state active"),
    }
    Ok(())
}
