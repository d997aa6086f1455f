//! `smtp-bench`: an SMTP load generator for sizing deployments and comparing servers.
//!
//! Event-driven (tokio, `--threads` worker threads, default 1) so that thousands of
//! sessions cost little client CPU: on a small machine the generator must not be
//! the bottleneck it is measuring. Every run is bounded by `--messages` and
//! `--duration`, whichever ends first.
//!
//! - `send` (default): `--connections` sessions send messages (`--size` bytes, or
//!   `--size-mix` drawn from a realistic distribution), several per connection or
//!   `--per-connection N` before reconnecting; `--pipelining` sends MAIL, RCPT and
//!   DATA in one write; `--starttls` upgrades each session; `--rate` paces the total
//!   to a target (default: as fast as possible), starting the schedule once every
//!   session has connected. The report: messages/s, bytes/s,
//!   reply codes, connection errors, and latency percentiles (p50/p90/p99/p99.9) of
//!   end-of-DATA → reply and of the whole transaction (MAIL → final reply), from
//!   hdrhistograms; `--json` prints it as one JSON object.
//! - `--idle N`: opens N connections, reads each greeting, holds them for `--hold`
//!   seconds (so the server's RSS can be read), then QUITs.
//!
//! Modules: `load` (the sessions), `report` (histograms and output).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

mod load;
mod report;

#[derive(Parser, Debug, Clone)]
#[command(name = "smtp-bench", about = "SMTP load generator")]
pub struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub server: SocketAddr,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Messages in total (upper bound).
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Seconds at most.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Message size in bytes (headers included).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Draw sizes from a mix like real mail instead of --size: 60% 2 KB, 25% 10 KB,
    /// 10% 50 KB, 4% 200 KB, 1% 1 MB.
    #[arg(long)]
    pub size_mix: bool,
    /// Messages per connection before reconnecting (0 = keep the connection).
    #[arg(long, default_value_t = 0)]
    pub per_connection: u64,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    pub recipients: usize,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920 pipelining).
    #[arg(long)]
    pub pipelining: bool,
    /// Use STARTTLS on every connection (the certificate is not verified).
    #[arg(long)]
    pub starttls: bool,
    /// Target messages/s in total (0 = as fast as possible). The schedule starts once
    /// every session has made its first connection attempt.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Recipient domain.
    #[arg(long, default_value = "example.com")]
    pub domain: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Idle mode: open this many connections and hold them.
    #[arg(long)]
    pub idle: Option<usize>,
    /// Idle mode: seconds to hold the connections.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.recipients > 0, "--recipients must be at least 1");
    anyhow::ensure!(
        (1..=64).contains(&args.threads),
        "--threads must be 1 to 64"
    );
    anyhow::ensure!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate must be 0 or more"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    match args.idle {
        Some(n) => runtime.block_on(load::idle(&args, n, Duration::from_secs(args.hold))),
        None => {
            let report = runtime.block_on(load::send(args.clone()))?;
            if args.json {
                println!("{}", report.json(&args));
            } else {
                print!("{}", report.text(&args));
            }
            Ok(())
        }
    }
}
