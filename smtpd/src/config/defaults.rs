//! Every default in one place, one named value each with the reason (as Postfix's
//! `mail_params.h` does). The validated layer falls back to these, and the README's
//! configuration section lists the same values.

/// The listen address with no `--listen`, `-p` or `server.listen`: loopback only, so a
/// first `cargo run` never exposes a server to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
/// The embedded store with no `--store` or `store.url`.
pub const DEFAULT_STORE_URL: &str = "sqlite:./data/smtpd.sqlite";

/// Where `-l` without a file name logs (Guerrilla SMTPd's default `log.txt`).
pub const DEFAULT_LOG_FILE: &str = "./log.txt";
/// `log.level`: info shows one line per connection event and transaction.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients; more per
/// transaction is rarely legitimate for a sink.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
/// 10 MiB, Postfix's `message_size_limit` order of magnitude; advertised as SIZE.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// RFC 5322 caps lines at 998 octets, but real-world senders exceed it; 64 KiB bounds
/// the damage without rejecting mail that Postfix would take.
pub const DEFAULT_MAX_DATA_LINE_BYTES: usize = 64 * 1024;
/// RFC 5321 §4.5.3.2.7 suggests 5 minutes of server idle timeout.
pub const DEFAULT_COMMAND_SECS: u64 = 300;
/// RFC 5321 §4.5.3.2.5/6: 3 minutes per data block; we wait 5 minutes per read.
pub const DEFAULT_DATA_SECS: u64 = 300;
/// How long SIGTERM waits for transactions in DATA to finish before closing them.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Total connections across all reactors; an idle connection costs a few KiB.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Sized so a burst of 1,000 simultaneous connects is not refused by the kernel.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
/// Group commit: a batch closes at this many messages...
pub const DEFAULT_BATCH_MAX_MESSAGES: usize = 256;
/// ...or, when set, this long after its first message. 0: no waiting. Batches still
/// form under load from what queues up while a commit runs (the commit's own
/// duration is the window), and an idle server answers at once. A timer here put
/// its whole length on every message: at 2 ms one session could not pass 400 msgs/s,
/// 10 sessions 3,600 (13,000 without it; bench/RESULTS.md, 2026-11-28e).
pub const DEFAULT_BATCH_MAX_DELAY_US: u64 = 0;
/// ...or once its message bodies add up to 16 MiB: the most the committer holds in
/// memory at once (a larger single message is a batch of its own). Small messages
/// never reach it (256 × 64 KB), so it costs batching nothing where batching pays.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;
/// MySQL/MariaDB: commits in flight at once, each on its own connection. While one
/// batch waits for its COMMIT's fsync the next is already being written. One by
/// default: on the 2-core bench machine two gained ×1.15–1.24 at 1 KB × 10
/// sessions but lost ×0.86–0.88 at 100 (half-size batches cost the database more
/// CPU per message; bench/RESULTS.md, 2026-12-04), and one keeps `mail_id` in
/// commit order on one node. Raise it for a few busy senders, or a database on
/// cores of its own. SQLite has one writer whatever this says.
pub const DEFAULT_MYSQL_COMMITTERS: usize = 1;
/// Submissions waiting for the storage stage; beyond it reactors hold messages back
/// (and their connections stop reading) instead of buffering without bound.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Redis: a day of recent mail in the cache.
pub const DEFAULT_REDIS_TTL_SECS: u64 = 86_400;
/// Redis: entries kept per inbox list.
pub const DEFAULT_REDIS_INBOX_MAX: usize = 100;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "smtpd:";
/// Redis: below 4 KiB gzip saves little and costs CPU on the commit path.
pub const DEFAULT_REDIS_COMPRESS_MIN_BYTES: usize = 4096;
/// Retention: one purge run a minute.
pub const DEFAULT_RETENTION_INTERVAL_SECS: u64 = 60;
/// Retention: rows per DELETE, small enough to hold the write lock only briefly.
pub const DEFAULT_RETENTION_BATCH_ROWS: usize = 1000;

/// Postfix's `smtpd_hard_error_limit`.
pub const DEFAULT_MAX_ERRORS: u32 = 20;
/// Postfix's `smtpd_junk_command_limit`.
pub const DEFAULT_MAX_JUNK_COMMANDS: u32 = 100;
/// Message bytes held in memory over all connections before new message data
/// waits in the sockets: 1 GiB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 1 << 30;
/// A message body over 1 MiB goes to the spool as it arrives instead of staying in
/// memory: most mail is far smaller (and stays on the fast path), while 1,000
/// concurrent messages at this size fit the default budget.
pub const DEFAULT_SPILL_THRESHOLD_BYTES: usize = 1 << 20;
/// Spool directory for a MySQL store (relative to the working directory, like the
/// default SQLite file). For SQLite it is `spool` next to the database file.
pub const DEFAULT_MYSQL_SPOOL_DIR: &str = "./data/spool";
/// Postfix's `smtpd_client_connection_count_limit`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 50;
