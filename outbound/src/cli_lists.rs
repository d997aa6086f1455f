//! `outbound list ...`: lists and imports for operators without HTTP.
//!
//! Owns: the `list` subcommands (`create`, `ls`, `import`), the import's progress
//! bar on stderr and its summary on stdout. Exit status of `import`: 0 when it
//! finished (rejected rows included), 1 when it failed, 2 for a bad argument.
//! Must not: hold SQL (`lists`, `import` do) or differ from the HTTP import: it
//! runs the very same job (`import::spawn`), recorded in `imports` the same way.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::db::Db;
use crate::import::{self, Job, Outcome, Progress};
use crate::lists::{self, OptIn};

/// Row errors printed after the summary (all of them are in the `imports` row).
const SHOWN_ERRORS: usize = 20;
/// The progress bar is redrawn at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

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
    /// Create a list for an account; prints its id.
    Create {
        /// The account that owns it.
        #[arg(long = "account", value_name = "NAME")]
        account: String,
        /// single (members confirmed when added) or double.
        #[arg(
            long = "opt-in",
            value_name = "single|double",
            default_value = "single"
        )]
        opt_in: String,
        /// The From address of a double opt-in list's confirmations (else
        /// `[confirmations] sender`).
        #[arg(long = "sender", value_name = "ADDRESS")]
        sender: Option<String>,
        /// The list's name.
        name: String,
    },
    /// Change a list's name or confirmations sender.
    Update {
        /// The list's id.
        list_id: i64,
        #[arg(long = "name", value_name = "NAME")]
        name: Option<String>,
        /// A new confirmations sender.
        #[arg(long = "sender", value_name = "ADDRESS", conflicts_with = "no_sender")]
        sender: Option<String>,
        /// Remove the list's own sender (`[confirmations] sender` applies).
        #[arg(long = "no-sender")]
        no_sender: bool,
    },
    /// Show lists (of one account, or all) with their member counts.
    Ls {
        #[arg(long = "account", value_name = "NAME")]
        account: Option<String>,
    },
}

/// A command-line argument that names nothing usable: exit status 2, as for
/// clap's own usage errors.
fn bad_argument(message: String) -> ! {
    // `main` maps every error of a command to 1; a bad argument is 2 by the
    // contract of `outbound list import`, so it exits here.
    eprintln!("outbound: {message}");
    std::process::exit(2)
}

pub async fn run(db: &mut Db, action: ListAction) -> anyhow::Result<()> {
    match action {
        ListAction::Create {
            account,
            opt_in,
            sender,
            name,
        } => {
            let Some(opt_in) = OptIn::parse(&opt_in) else {
                bad_argument(format!("--opt-in: {opt_in:?} is not single or double"));
            };
            let sender = sender.map(|s| {
                lists::check_email(&s)
                    .unwrap_or_else(|why| bad_argument(format!("--sender: {s:?}: {why}")))
            });
            let Some(account) = crate::accounts::by_name(db, &account).await? else {
                bad_argument(format!("--account: no account {account:?}"));
            };
            match lists::create(db, account.id, &name, opt_in, sender.as_deref()).await {
                Ok(id) => println!("{id}"),
                Err(e @ (lists::ListError::BadName(_) | lists::ListError::Exists(_))) => {
                    bad_argument(e.to_string())
                }
                Err(e) => return Err(e.into()),
            }
        }
        ListAction::Update {
            list_id,
            name,
            sender,
            no_sender,
        } => {
            let sender = match (sender, no_sender) {
                (Some(s), _) => {
                    Some(Some(lists::check_email(&s).unwrap_or_else(|why| {
                        bad_argument(format!("--sender: {s:?}: {why}"))
                    })))
                }
                (None, true) => Some(None),
                (None, false) => None,
            };
            if name.is_none() && sender.is_none() {
                bad_argument(
                    "list update: nothing to change (--name, --sender, --no-sender)".into(),
                );
            }
            let Some(list) = lists::get_any(db, list_id).await? else {
                bad_argument(format!("no list {list_id}"));
            };
            let change = lists::ListUpdate { name, sender };
            match lists::update(db, list.account_id, list_id, &change).await {
                Ok(Some(list)) => println!(
                    "list {} {:?}: sender {}",
                    list.id,
                    list.name,
                    list.sender.as_deref().unwrap_or("(none)")
                ),
                Ok(None) => bad_argument(format!("no list {list_id}")),
                Err(e @ (lists::ListError::BadName(_) | lists::ListError::Exists(_))) => {
                    bad_argument(e.to_string())
                }
                Err(e) => return Err(e.into()),
            }
        }
        ListAction::Ls { account } => {
            let account_id = match account {
                None => None,
                Some(name) => match crate::accounts::by_name(db, &name).await? {
                    Some(a) => Some(a.id),
                    None => bad_argument(format!("--account: no account {name:?}")),
                },
            };
            println!(
                "{:>6} {:>8} {:<6} {:>11} {:>9} {:>12}  name",
                "id", "account", "opt_in", "unconfirmed", "confirmed", "unsubscribed"
            );
            for list in lists::all(db, account_id).await? {
                let c = lists::member_counts(db, list.id).await?;
                println!(
                    "{:>6} {:>8} {:<6} {:>11} {:>9} {:>12}  {}",
                    list.id,
                    list.account_id,
                    list.opt_in.as_str(),
                    c.unconfirmed,
                    c.confirmed,
                    c.unsubscribed,
                    list.name
                );
            }
        }
        ListAction::Import { list_id, file } => {
            let Some(list) = lists::get_any(db, list_id).await? else {
                bad_argument(format!("list_id: list {list_id} not found"));
            };
            let size = match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => bad_argument(format!("{}: not a file", file.display())),
                Err(e) => bad_argument(format!("{}: {e}", file.display())),
            };
            let import_id = import::create(db, &list).await?;
            let job = Job {
                import_id,
                list,
                path: file,
                delete_file: false,
            };
            let outcome = run_import(db, job, size).await;
            match outcome {
                Outcome::Finished(p) => summary(&p),
                Outcome::Failed(why, p) => {
                    summary(&p);
                    anyhow::bail!("import {import_id} failed: {why}");
                }
            }
        }
    }
    Ok(())
}

/// Runs the job here, in the foreground (its file is read on a thread of its
/// own, as for an upload), drawing the bar meanwhile.
async fn run_import(db: &mut Db, job: Job, size: u64) -> Outcome {
    let started = Instant::now();
    let mut last_draw: Option<Instant> = None;
    let bar = Box::new(move |p: &Progress, consumed: u64| {
        let now = Instant::now();
        if last_draw.is_some_and(|t| now.duration_since(t) < REDRAW_EVERY) {
            return;
        }
        last_draw = Some(now);
        draw(p, consumed, size, started.elapsed());
    });
    let outcome = import::run(db, &job, Some(bar)).await;
    let (Outcome::Finished(p) | Outcome::Failed(_, p)) = &outcome;
    let done = if matches!(outcome, Outcome::Finished(_)) {
        size
    } else {
        0
    };
    draw(p, done, size, started.elapsed());
    eprintln!();
    outcome
}

fn draw(p: &Progress, consumed: u64, size: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(0.001);
    let percent = if size == 0 {
        100.0
    } else {
        (consumed.min(size) as f64 * 100.0) / size as f64
    };
    const WIDTH: usize = 30;
    let filled = ((percent / 100.0) * WIDTH as f64) as usize;
    let mut stderr = std::io::stderr().lock();
    let _ = write!(
        stderr,
        "\r[{}{}] {percent:5.1}%  {} rows  {:.0} rows/s ",
        "#".repeat(filled.min(WIDTH)),
        " ".repeat(WIDTH.saturating_sub(filled)),
        p.rows_read,
        p.rows_read as f64 / secs
    );
    let _ = stderr.flush();
}

fn summary(p: &Progress) {
    println!(
        "rows_read {} added {} updated {} rejected {}",
        p.rows_read, p.added, p.updated, p.rejected
    );
    for e in p.errors.iter().take(SHOWN_ERRORS) {
        println!("line {}: {}: {}", e.line, e.email, e.error);
    }
}
