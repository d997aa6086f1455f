//! A delivery worker: one thread, one current-thread tokio runtime, and every
//! destination domain hashed to it.
//!
//! Owns: for its domains, the connection cache (idle sessions reused for the next
//! message), the per-domain connection limit and message rate, routing (MX lookups
//! through its own resolver cache), and turning server replies into per-recipient
//! outcomes. Because a domain always lands on the same worker and the worker runs
//! on one thread, none of this state is shared or locked.
//! Must not: touch the database or decide retry times (the dispatcher does).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinSet, LocalSet};
use tracing::{debug, info, warn};

use crate::client::{ClientError, Endpoint, SmtpClient, Timeouts, Tls, TxOutcome};
use crate::config::Config;
use crate::mx::{RouteError, Router};
use crate::payload::Payload;
use crate::queue::{Attempt, Outcome};
use crate::sending::Source;
use smtp_wire::Reply;

/// Reserves a transaction's share of a domain's shared schedule (GCRA: the key holds
/// the earliest start of the next transaction, in microseconds of the Redis clock, so
/// that nodes with skewed clocks still share one schedule). `ARGV[1]` is the
/// transaction's cost: its recipients times the interval between two. Returns the
/// milliseconds to wait for the reserved start.
const SHARED_SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(next_free, now)
redis.call('SET', KEYS[1], string.format('%d', start + interval), 'PX', math.floor((start + interval - now) / 1000) + 1000)
return math.floor((start - now) / 1000)
";

/// One transaction's worth of work: recipients of one domain sharing sender and body.
#[derive(Debug)]
pub struct Job {
    pub domain: String,
    pub sender: String,
    /// (queue id, address)
    pub recipients: Vec<(i64, String)>,
    pub payload: Arc<Payload>,
    /// The rows' sending pool (None: no binding, the default source address).
    pub pool: Option<String>,
}

struct Pooled {
    client: SmtpClient,
    since: Instant,
}

/// A destination domain and the source address (None: the default one).
type DomainKey = (String, Option<IpAddr>);

struct DomainState {
    permits: Rc<Semaphore>,
    /// Earliest start of the next transaction (local rate limit: each transaction
    /// moves it on by one interval per recipient).
    next_slot: Cell<Instant>,
    idle: RefCell<Vec<Pooled>>,
}

struct Worker {
    index: usize,
    cfg: Arc<Config>,
    router: Router,
    tls: Tls,
    timeouts: Timeouts,
    global: Rc<Semaphore>,
    /// Per destination domain *and source address*: providers count connections
    /// and rates per sending IP, so each pool address has its own limits and cache.
    domains: RefCell<HashMap<DomainKey, Rc<DomainState>>>,
    /// The shared rate limits, when `redis.url` is set.
    redis: Option<SharedLimit>,
    results: mpsc::UnboundedSender<Vec<Attempt>>,
}

/// Starts worker thread `index`; it runs until `jobs` is closed and its deliveries
/// have finished.
pub fn spawn(
    index: usize,
    cfg: Arc<Config>,
    tls: Tls,
    jobs: mpsc::UnboundedReceiver<Job>,
    results: mpsc::UnboundedSender<Vec<Attempt>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("outbound-worker-{index}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(index, error = %e, "worker runtime failed to start");
                    return;
                }
            };
            LocalSet::new().block_on(&rt, run(index, cfg, tls, jobs, results));
        })
}

async fn run(
    index: usize,
    cfg: Arc<Config>,
    tls: Tls,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    results: mpsc::UnboundedSender<Vec<Attempt>>,
) {
    let router = match Router::new(
        cfg.resolver,
        cfg.transports.clone(),
        cfg.port,
        cfg.dns_timeout,
    ) {
        Ok(r) => r,
        Err(e) => {
            warn!(index, error = %e, "cannot create the DNS resolver; worker stops");
            return;
        }
    };
    let redis = cfg.redis.as_deref().and_then(SharedLimit::new);
    if let Some(limit) = &redis {
        // Before the first job: deliveries that start while a connect is under way
        // use the local limit.
        limit.conn().await;
    }
    let share = (cfg.max_connections / cfg.threads).max(1);
    let worker = Rc::new(Worker {
        index,
        timeouts: Timeouts {
            connect: cfg.connect_timeout,
            command: cfg.command_timeout,
            data: cfg.data_timeout,
        },
        cfg,
        router,
        tls,
        global: Rc::new(Semaphore::new(share)),
        domains: RefCell::new(HashMap::new()),
        redis,
        results,
    });
    let reaper = tokio::task::spawn_local(reap_idle(worker.clone()));
    let beat = tokio::task::spawn_local(crate::metrics::heartbeat(format!("worker-{index}")));
    let mut tasks = JoinSet::new();
    while let Some(job) = jobs.recv().await {
        tasks.spawn_local(worker.clone().deliver(job));
        // Finished tasks are collected as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    reaper.abort();
    beat.abort();
    let domains: Vec<Rc<DomainState>> = worker.domains.borrow().values().cloned().collect();
    for d in domains {
        let idle: Vec<Pooled> = d.idle.borrow_mut().drain(..).collect();
        for p in idle {
            p.client.quit().await;
        }
    }
    debug!(index, "worker finished");
}

/// `redis.url` cannot work: found at start, a configuration error (see
/// [`mailstore::RedisTarget::probe`]).
#[derive(Debug, thiserror::Error)]
#[error("redis.url: {0}")]
pub struct RedisMisconfigured(pub mailstore::redis_target::ProbeError);

/// Checks `redis.url` once at start: a configuration error (a certificate that
/// does not verify, a password refused, the wrong kind of server) fails the start;
/// Redis merely down is logged (each worker uses its local limits and connects
/// when Redis is back).
pub async fn check_redis(url: &str) -> Result<(), RedisMisconfigured> {
    use mailstore::redis_target::ProbeError;
    let target: mailstore::RedisTarget = url.parse().map_err(|e: mailstore::RedisUrlError| {
        RedisMisconfigured(ProbeError::Misconfigured {
            node: mailstore::redis_target::redact(url),
            reason: e.to_string(),
        })
    })?;
    match target.probe(REDIS_CONNECT_TIMEOUT).await {
        Ok(()) => Ok(()),
        Err(e @ ProbeError::Unreachable { .. }) => {
            warn!(error = %e, "Redis unreachable at start: rate limits are per node until it is back");
            Ok(())
        }
        Err(e) => Err(RedisMisconfigured(e)),
    }
}

/// A connect attempt longer than this fails (the delivery that made it goes on
/// with the local limit).
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_RETRY_MIN: Duration = Duration::from_secs(1);
const REDIS_RETRY_MAX: Duration = Duration::from_secs(30);

/// The connection of the shared rate limits: one server or a Redis Cluster (the
/// limiter's script touches one key, so a cluster runs it on that key's master).
/// Opened on first use and again after a connection failure, no more often than
/// the backoff allows; meanwhile the local limit applies.
struct SharedLimit {
    target: mailstore::RedisTarget,
    conn: RefCell<Option<mailstore::RedisConn>>,
    /// No connect attempt before this (one attempt at a time: it is moved on
    /// before the attempt starts).
    retry_at: Cell<Instant>,
    retry: Cell<Duration>,
}

impl SharedLimit {
    fn new(url: &str) -> Option<SharedLimit> {
        match url.parse::<mailstore::RedisTarget>() {
            Ok(target) => Some(SharedLimit {
                target,
                conn: RefCell::new(None),
                retry_at: Cell::new(Instant::now()),
                retry: Cell::new(REDIS_RETRY_MIN),
            }),
            Err(e) => {
                warn!(error = %e, "redis.url unusable: rate limits are per node");
                None
            }
        }
    }

    /// The connection, opening it when it is time to try.
    async fn conn(&self) -> Option<mailstore::RedisConn> {
        if let Some(c) = self.conn.borrow().as_ref() {
            return Some(c.clone());
        }
        let now = Instant::now();
        if now < self.retry_at.get() {
            return None;
        }
        let wait = self.retry.get();
        self.retry_at.set(now + wait);
        self.retry.set((wait * 2).min(REDIS_RETRY_MAX));
        match self.target.connect(REDIS_CONNECT_TIMEOUT).await {
            Ok(c) => {
                info!("Redis connected: rate limits are shared");
                self.retry.set(REDIS_RETRY_MIN);
                *self.conn.borrow_mut() = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                warn!(error = %e, retry_ms = wait.as_millis() as u64, "Redis unavailable: rate limits are per node");
                None
            }
        }
    }

    /// After an error on the connection: a broken one is dropped (the next use
    /// reconnects, within the backoff).
    fn failed(&self, e: &redis::RedisError) {
        if e.is_unrecoverable_error() || e.is_io_error() {
            self.conn.borrow_mut().take();
        }
    }
}

/// Closes cached connections idle longer than `delivery.idle_timeout_secs`.
async fn reap_idle(worker: Rc<Worker>) {
    let tick = worker
        .cfg
        .idle_timeout
        .clamp(Duration::from_millis(200), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let domains: Vec<Rc<DomainState>> = worker.domains.borrow().values().cloned().collect();
        for d in domains {
            let expired: Vec<Pooled> = {
                let mut idle = d.idle.borrow_mut();
                let (old, keep): (Vec<Pooled>, Vec<Pooled>) = idle
                    .drain(..)
                    .partition(|p| p.since.elapsed() >= worker.cfg.idle_timeout);
                *idle = keep;
                old
            };
            for p in expired {
                tokio::task::spawn_local(p.client.quit());
            }
        }
    }
}

/// The outcome of trying to get a recipient list through.
struct Report {
    outcome: Outcome,
    mx: Option<String>,
    code: Option<u16>,
    status: Option<String>,
    text: String,
}

impl Report {
    fn from_reply(reply: &Reply, mx: &str, outcome: Outcome) -> Self {
        Self {
            outcome,
            mx: Some(mx.to_owned()),
            code: Some(reply.code),
            status: reply.status.map(|s| s.to_string()),
            text: reply.text.replace('\n', " "),
        }
    }
    /// The session with `mx` broke or went silent mid-transaction (4.4.2): the
    /// recipients are retried later, never lost.
    fn broken_session(text: String, mx: &str) -> Self {
        Self::local(Outcome::Deferred, Some("4.4.2"), text, Some(mx.to_owned()))
    }
    fn local(outcome: Outcome, status: Option<&str>, text: String, mx: Option<String>) -> Self {
        Self {
            outcome,
            mx,
            code: None,
            status: status.map(str::to_owned),
            text,
        }
    }
}

/// Queue ids and recipients named in an attempt's log line; the rest are counted.
const LOGGED_RECIPIENTS: usize = 3;
/// Characters of the reply text kept in the log line.
const LOGGED_TEXT_CHARS: usize = 200;

/// The one info line per delivery attempt (Postfix's `smtp` line): queue ids,
/// recipients (bounded), domain, MX host and address, source address and pool,
/// reply (code, enhanced status, text trimmed), outcome and duration. The first
/// report speaks for the transaction; `outcomes` counts them all.
fn log_attempt(
    job: &Job,
    reports: &[Report],
    source_ip: Option<std::net::IpAddr>,
    elapsed: std::time::Duration,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let first = reports.first();
    let ids = Bounded(
        job.recipients.iter().map(|(id, _)| id),
        job.recipients.len(),
    );
    let rcpts = Bounded(job.recipients.iter().map(|(_, r)| r), job.recipients.len());
    let delivered = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Delivered)
        .count();
    let text = first.map_or("", |r| r.text.as_str());
    let text = text
        .char_indices()
        .nth(LOGGED_TEXT_CHARS)
        .map_or(text, |(i, _)| text.get(..i).unwrap_or(text));
    info!(
        queue_id = %ids,
        rcpt = %rcpts,
        nrcpt = job.recipients.len(),
        domain = %job.domain,
        mx = first.and_then(|r| r.mx.as_deref()).unwrap_or("none"),
        source = %source_ip.map_or_else(|| "default".to_owned(), |ip| ip.to_string()),
        pool = job.pool.as_deref().unwrap_or("none"),
        code = first.and_then(|r| r.code),
        status = first.and_then(|r| r.status.as_deref()).unwrap_or(""),
        text,
        outcome = first.map_or(Outcome::Deferred, |r| r.outcome).as_str(),
        delivered,
        duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "delivery attempt"
    );
}

/// `a, b, c (+N more)` from an iterator of `total` items.
struct Bounded<I>(I, usize);

impl<I, T> std::fmt::Display for Bounded<I>
where
    I: Iterator<Item = T> + Clone,
    T: std::fmt::Display,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, item) in self.0.clone().take(LOGGED_RECIPIENTS).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        let more = self.1.saturating_sub(LOGGED_RECIPIENTS);
        if more > 0 {
            write!(f, " (+{more} more)")?;
        }
        Ok(())
    }
}

fn reply_outcome(reply: &Reply) -> Outcome {
    if reply.is_permanent() {
        Outcome::Failed
    } else if reply.is_positive() {
        Outcome::Delivered
    } else {
        Outcome::Deferred
    }
}

impl Worker {
    fn domain(&self, domain: &str, source: Option<IpAddr>) -> Rc<DomainState> {
        self.domains
            .borrow_mut()
            .entry((domain.to_owned(), source))
            .or_insert_with(|| {
                Rc::new(DomainState {
                    permits: Rc::new(Semaphore::new(self.cfg.limits_for(domain).max_connections)),
                    next_slot: Cell::new(Instant::now()),
                    idle: RefCell::new(Vec::new()),
                })
            })
            .clone()
    }

    async fn deliver(self: Rc<Self>, job: Job) {
        let source = match job.pool.as_deref() {
            None => Ok(None),
            Some(name) => self
                .cfg
                .pools
                .get(name)
                .and_then(|p| p.pick(&job.domain))
                .map(|s| Some(s.clone()))
                .ok_or(name),
        };
        let started = std::time::Instant::now();
        let source_ip = source.as_ref().ok().and_then(|s| s.as_ref().map(|s| s.ip));
        let reports = match source {
            Ok(source) => self.deliver_from(&job, source).await,
            // Permanent: retrying cannot make the name known to this process.
            Err(name) => vec![Report::local(
                Outcome::Failed,
                Some("5.3.5"),
                format!("unknown sending pool {name}"),
                None,
            )],
        };
        log_attempt(&job, &reports, source_ip, started.elapsed());
        self.finish(&job, &reports);
        crate::metrics::get()
            .attempt_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    async fn deliver_from(&self, job: &Job, source: Option<Source>) -> Vec<Report> {
        let ip = source.as_ref().map(|s| s.ip);
        let state = self.domain(&job.domain, ip);
        match (state.permits.acquire().await, self.global.acquire().await) {
            (Ok(_domain_permit), Ok(_global_permit)) => {
                // DKIM here, on this worker's thread and once per payload (the
                // dispatcher only renders): a chunk sharing the payload reuses it.
                // The relay's own DSNs (null sender) fall back to the bounce domain.
                let fallback = self
                    .cfg
                    .bounces
                    .verp
                    .as_ref()
                    .filter(|_| job.sender.is_empty())
                    .map(|v| v.domain.as_str());
                job.payload.sign(&self.cfg.dkim, fallback);
                self.rate_limit(&job.domain, ip, &state, job.recipients.len())
                    .await;
                self.attempt(job, &state, source.as_ref()).await
            }
            _ => vec![Report::local(
                Outcome::Deferred,
                Some("4.3.0"),
                "relay shutting down".into(),
                None,
            )],
        }
    }

    fn finish(&self, job: &Job, reports: &[Report]) {
        let at = Utc::now();
        let attempts: Vec<Attempt> = job
            .recipients
            .iter()
            .enumerate()
            .map(|(i, (id, rcpt))| {
                let r = reports.get(i).or(reports.first());
                Attempt {
                    queue_id: *id,
                    recipient: rcpt.clone(),
                    outcome: r.map_or(Outcome::Deferred, |r| r.outcome),
                    mx: r.and_then(|r| r.mx.clone()),
                    code: r.and_then(|r| r.code),
                    status: r.and_then(|r| r.status.clone()),
                    text: r.map_or_else(String::new, |r| r.text.clone()),
                    at,
                    next_attempt: None,
                    delay_notified: false,
                }
            })
            .collect();
        crate::metrics::deliveries(&job.domain, attempts.iter().map(|a| a.outcome));
        // The dispatcher being gone means we are shutting down; the leases will
        // expire and the rows be retried.
        let _ = self.results.send(attempts);
    }

    /// Waits for the domain's rate limit, which counts recipients (as providers do):
    /// a transaction of `recipients` reserves that many intervals of the schedule,
    /// starts at the first of them and pushes the next transaction back by all of
    /// them. The dispatcher keeps a transaction within one second's worth
    /// ([`crate::config::DomainLimits::rate_burst`]), so no second sees more than the
    /// rate. Redis-shared when configured, else a local schedule.
    async fn rate_limit(
        &self,
        domain: &str,
        source: Option<IpAddr>,
        state: &DomainState,
        recipients: usize,
    ) {
        let rate = self.cfg.limits_for(domain).messages_per_second;
        if rate <= 0.0 {
            return;
        }
        let cost = u32::try_from(recipients.max(1)).unwrap_or(u32::MAX);
        let interval = Duration::from_secs_f64(1.0 / rate).saturating_mul(cost);
        if let Some(redis) = &self.redis
            && let Some(mut conn) = redis.conn().await
        {
            // The same schedule as below, kept in Redis so that every node draws
            // from one: each transaction reserves its recipients' share of it.
            let wait: Result<i64, _> = redis::Script::new(SHARED_SLOT)
                .key(match source {
                    Some(ip) => format!("outbound:rate:{domain}:{ip}"),
                    None => format!("outbound:rate:{domain}"),
                })
                .arg(u64::try_from(interval.as_micros()).unwrap_or(u64::MAX))
                .invoke_async(&mut conn)
                .await;
            match wait {
                Ok(ms) => {
                    crate::metrics::get()
                        .rate_limit_waits
                        .inc_by(u64::from(ms > 0));
                    tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await;
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "Redis rate limit unavailable; using the local one");
                    redis.failed(&e);
                }
            }
        }
        let now = Instant::now();
        let slot = state.next_slot.get().max(now);
        state.next_slot.set(slot + interval);
        crate::metrics::get()
            .rate_limit_waits
            .inc_by(u64::from(slot > now));
        tokio::time::sleep_until(slot.into()).await;
    }

    /// One attempt for the job's recipients; a report per recipient (or one for all).
    async fn attempt(
        &self,
        job: &Job,
        state: &DomainState,
        source: Option<&Source>,
    ) -> Vec<Report> {
        let addresses: Vec<String> = job.recipients.iter().map(|(_, a)| a.clone()).collect();
        // A cached session first; if it turns out dead, a fresh one.
        let pooled = state.idle.borrow_mut().pop();
        if let Some(p) = pooled {
            let mut client = p.client;
            let mx = client.endpoint.to_string();
            match client
                .transaction(&job.sender, &addresses, &job.payload)
                .await
            {
                Ok(outcome) => {
                    crate::metrics::get().connections_reused.inc();
                    self.keep(client, state);
                    return reports(&outcome, &mx, addresses.len());
                }
                // The message may have arrived: retry later rather than at once.
                Err(e) if client.data_started => {
                    warn!(worker = self.index, mx, error = %e, "transaction failed after the message was sent");
                    return vec![Report::broken_session(e.to_string(), &mx)];
                }
                // A cached session the server has closed meanwhile: a fresh one.
                Err(e) => debug!(mx, error = %e, "cached connection failed; reconnecting"),
            }
        }
        let hops = match self.router.route(&job.domain).await {
            Ok(h) => h,
            Err(RouteError::Permanent { status, text }) => {
                return vec![Report::local(Outcome::Failed, Some(status), text, None)];
            }
            Err(RouteError::Temporary(text)) => {
                return vec![Report::local(Outcome::Deferred, Some("4.4.3"), text, None)];
            }
        };
        let mut last: Option<Report> = None;
        let mut all_permanent = true;
        for endpoint in hops.iter().flat_map(|h| h.endpoints.iter()) {
            let mx = endpoint.to_string();
            let mut client = match self.connect(endpoint, source).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(worker = self.index, mx, error = %e, "connection failed");
                    let permanent =
                        matches!(&e, ClientError::Refused { reply, .. } if reply.is_permanent());
                    all_permanent &= permanent;
                    last = Some(match e {
                        ClientError::Refused { reply, .. } => {
                            Report::from_reply(&reply, &mx, Outcome::Deferred)
                        }
                        other => Report::local(
                            Outcome::Deferred,
                            Some("4.4.1"),
                            other.to_string(),
                            Some(mx),
                        ),
                    });
                    continue;
                }
            };
            if let (Some(limit), true) = (client.ext.size, job.payload.size() > 0)
                && limit > 0
                && job.payload.size() as u64 > limit
            {
                let text = format!(
                    "message of {} octets exceeds {mx}'s limit of {limit}",
                    job.payload.size()
                );
                client.quit().await;
                return vec![Report::local(
                    Outcome::Failed,
                    Some("5.3.4"),
                    text,
                    Some(mx),
                )];
            }
            match client
                .transaction(&job.sender, &addresses, &job.payload)
                .await
            {
                Ok(outcome) => {
                    self.keep(client, state);
                    return reports(&outcome, &mx, addresses.len());
                }
                Err(e) => {
                    // The session broke mid-transaction. Whether the message got
                    // through is unknown only if the final dot was sent; either way
                    // the recipients are retried later, never lost.
                    warn!(worker = self.index, mx, error = %e, "transaction failed");
                    return vec![Report::broken_session(e.to_string(), &mx)];
                }
            }
        }
        match last {
            Some(mut r) => {
                if all_permanent {
                    r.outcome = Outcome::Failed;
                }
                vec![r]
            }
            None => vec![Report::local(
                Outcome::Deferred,
                Some("4.4.3"),
                format!("no usable address for {}", job.domain),
                None,
            )],
        }
    }

    /// Connects with opportunistic STARTTLS; a host whose TLS handshake fails is
    /// tried once more in plaintext (as Postfix does at its "may" level).
    /// From a pool address, the EHLO name is that address's (its PTR).
    async fn connect(
        &self,
        endpoint: &Endpoint,
        source: Option<&Source>,
    ) -> Result<SmtpClient, ClientError> {
        let helo = source.map_or(self.cfg.helo_name.as_str(), |s| s.helo.as_str());
        let ip = source.map(|s| s.ip);
        match SmtpClient::connect(endpoint, ip, helo, &self.tls, &self.timeouts).await {
            Err(ClientError::Tls(e)) => {
                info!(mx = %endpoint, error = %e, "TLS handshake failed; retrying without TLS");
                SmtpClient::connect(endpoint, ip, helo, &None, &self.timeouts).await
            }
            other => other,
        }
    }

    fn keep(&self, client: SmtpClient, state: &DomainState) {
        if client.transactions < self.cfg.max_messages_per_connection
            && !self.cfg.idle_timeout.is_zero()
        {
            state.idle.borrow_mut().push(Pooled {
                client,
                since: Instant::now(),
            });
        } else {
            tokio::task::spawn_local(client.quit());
        }
    }
}

fn reports(outcome: &TxOutcome, mx: &str, recipients: usize) -> Vec<Report> {
    match outcome {
        TxOutcome::MailRefused(reply) => vec![Report::from_reply(reply, mx, reply_outcome(reply))],
        TxOutcome::Done { rcpt, data } => (0..recipients)
            .map(|i| match rcpt.get(i) {
                Some(r) if r.is_positive() => match data {
                    Some(d) => Report::from_reply(d, mx, reply_outcome(d)),
                    None => Report::broken_session("no reply to DATA".into(), mx),
                },
                Some(r) => Report::from_reply(r, mx, reply_outcome(r)),
                None => Report::broken_session("no reply to RCPT".into(), mx),
            })
            .collect(),
    }
}
