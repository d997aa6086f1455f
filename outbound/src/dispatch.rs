//! The dispatcher: the relay node's only database client (with the `recorder`, which
//! writes outcomes on a second connection) and its single claimer.
//!
//! Owns: taking the node id at start (refusing it while another live process holds
//! it, taking back a dead predecessor's leases at once; the rule is in `node`), the
//! node's heartbeat and lease renewal, taking over expired leases, claiming
//! due rows (bounded by `relay.max_in_flight`), the suppression check, turning rows
//! into jobs (grouping recipients of one domain that share a sender and body;
//! rendering templates), handing each job to the worker owning its domain (hash of
//! the domain), applying the retry schedule to deferrals, and recording every
//! attempt in batches (one transaction per [`FLUSH_DELAY`] or [`FLUSH_ROWS`], written
//! by the `recorder` on its own connection while claims go on), the
//! campaign runner's tick (`campaign::runner`) on its own connection, and putting
//! back claimed rows of campaigns paused or cancelled since. On SIGTERM/SIGINT it stops claiming, lets deliveries under way
//! finish (up to `relay.shutdown_grace_secs`), returns the rest (its own leases
//! only) to the queue and marks the node stopped.
//! Must not: talk SMTP or DNS.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use crate::address::{self, ReversePath};
use crate::bounce_policy;
use crate::campaign::State as CampaignState;
use crate::campaign::runner::Runner;
use crate::client::Tls;
use crate::config::Config;
use crate::dsn;
use crate::intake_horizon::IntakeHorizon;
use crate::node;
use crate::payload::Payload;
use crate::queue::{Attempt, Beat, Claimed, Intake, Leases, NewRow, Node, Outcome, Queue};
use crate::recorder::{Flush, Recorder};
use crate::retry::Next;
use crate::template::{Part, Template, prepend_headers, render, render_rewritten};
use crate::tracking::links::{CampaignLinks, Recipient, UNSUBSCRIBE_TAG, list_unsubscribe};
use crate::tracking::token::Signer;
use crate::verp::Kind;
use crate::worker::{self, Job};

/// Attempts wait at most this long to be recorded, so that one transaction (one
/// fsync) records many: at thousands of deliveries a second a commit per loop
/// turn was what bounded the rate. Recording later delays no delivery.
const FLUSH_DELAY: Duration = Duration::from_millis(20);
/// ... unless this many are waiting already.
const FLUSH_ROWS: usize = 1_024;

/// How often the node row is read while watching for a heartbeat at start.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// Recipients share a transaction when domain, sender and body (hash) are equal.
/// (domain, envelope sender, body hash, sending pool).
type GroupKey = (String, String, u64, Option<String>);
/// A group's shared message and its (queue id, recipient) pairs.
type Group = (Arc<Payload>, Vec<(i64, String)>);

/// What the dispatcher needs to finish a claimed row.
struct InFlight {
    created: DateTime<Utc>,
    attempts: u32,
    /// Where a DSN about this row goes: the original envelope sender (before VERP)
    /// when it is a mailbox; None for the null sender or an invalid one.
    dsn_to: Option<String>,
    /// The message's header section, for DSNs (None for template rows).
    headers: Option<Vec<u8>>,
    delay_notified: bool,
    /// The row's campaign, for the delivery log.
    campaign_id: Option<i64>,
}

pub async fn run(cfg: Arc<Config>, mut queue: Queue, tls: Tls) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let node = Node {
        node_id: cfg.node_id.clone(),
        instance_id: node::new_instance_id(),
        hostname: cfg.helo_name.clone(),
        pid: i64::from(std::process::id()),
        threads: i64::try_from(cfg.threads).unwrap_or(0),
        heartbeat_secs: i64::try_from(cfg.heartbeat.as_secs()).unwrap_or(i64::MAX),
        started_at: crate::queue::ts(Utc::now()),
        heartbeat_at: None,
        heartbeat_text: String::new(),
        stopped_at: None,
    };
    if !take_node_id(&mut queue, &node, &mut term, &mut int).await? {
        info!("stopped before starting");
        queue.close().await;
        return Ok(());
    }
    // The node id is ours now, so whatever it still holds belongs to a process that
    // is gone (killed and restarted, say): back to the queue at once, rather than
    // after the lease (which no heartbeat of ours renews).
    let predecessors = Leases::Predecessors {
        node: &node.node_id,
        instance: &node.instance_id,
    };
    match queue.release(predecessors).await {
        Ok(0) => {}
        Ok(n) => info!(
            rows = n,
            "took back rows leased by a previous process of this node"
        ),
        Err(e) => {
            warn!(error = %e, "could not take back a previous process's rows; their leases will expire")
        }
    }
    // Attempts are recorded on a connection of their own, beside the claims.
    let recorder_db = queue.db().another(&cfg.store).await?;
    let recorder = Recorder::new(Queue::new(recorder_db), &node.node_id, &node.instance_id);
    let (results_tx, mut results) = mpsc::unbounded_channel::<Vec<Attempt>>();
    let mut jobs = Vec::with_capacity(cfg.threads);
    let mut threads = Vec::with_capacity(cfg.threads);
    for index in 0..cfg.threads {
        let (tx, rx) = mpsc::unbounded_channel();
        threads.push(worker::spawn(
            index,
            cfg.clone(),
            tls.clone(),
            rx,
            results_tx.clone(),
        )?);
        jobs.push(tx);
    }
    drop(results_tx);
    let mut d = Dispatcher {
        cfg: cfg.clone(),
        instance: node.instance_id.clone(),
        in_flight: HashMap::new(),
        pending: Vec::new(),
        pending_since: None,
        recorder,
        new_rows: Vec::new(),
        suppressions: Vec::new(),
        jobs,
        campaign_of: HashMap::new(),
        stopped: HashMap::new(),
        signer: cfg
            .tracking
            .key
            .as_deref()
            .map(|k| Arc::new(Signer::new(k))),
        tracking: HashMap::new(),
        horizon: IntakeHorizon::new(cfg.bounces.intake_settle(queue.db().is_mysql())),
    };
    let mut lost = d.heartbeat(&mut queue, &node).await;
    info!(node = %cfg.node_id, instance = %node.instance_id, threads = cfg.threads, store = %cfg.store, "relay running");
    let status = format!("relay {} running, {} workers", cfg.node_id, cfg.threads);
    ops::notify::ready(&status);
    let beat = crate::metrics::watchdog().register("dispatcher");
    crate::metrics::watchdog().start();
    let mut next_heartbeat = Instant::now() + cfg.heartbeat;
    let mut next_claim = Instant::now();
    let mut next_intake = Instant::now();
    let mut next_campaigns = Instant::now();
    while lost.is_none() {
        crate::metrics::get().loop_turned();
        beat.beat();
        let now = Instant::now();
        if now >= next_campaigns {
            d.campaigns(&mut queue, &node).await;
            next_campaigns = Instant::now() + cfg.campaigns.interval;
        }
        if cfg.bounces.verp.is_some() && now >= next_intake {
            d.intake(&mut queue).await;
            next_intake = now + cfg.bounces.intake_interval;
        }
        if now >= next_heartbeat {
            crate::metrics::sample_queue(&mut queue).await;
            ops::notify::status(&format!("{status}; {} in flight", d.in_flight.len()));
            lost = d.heartbeat(&mut queue, &node).await;
            next_heartbeat = now + cfg.heartbeat;
            if lost.is_some() {
                break;
            }
        }
        if now >= next_claim {
            // Finished rows not yet recorded are still leased: they count too.
            let room = cfg
                .max_in_flight
                .saturating_sub(d.in_flight.len() + d.pending.len() + d.recorder.writing());
            // Nearly full: wait for a worthwhile batch rather than committing a
            // claim transaction (an fsync) for a handful of rows.
            let worthwhile = (cfg.batch_size.min(cfg.max_in_flight) / 4).max(1);
            if room == 0 || (room < worthwhile && !d.in_flight.is_empty()) {
                next_claim = now + cfg.poll_interval;
            } else {
                let want = room.min(cfg.batch_size);
                match d.claim(&mut queue, want).await {
                    // A full batch means more is probably due: claim again at once.
                    Ok(n) if n == want => next_claim = now,
                    Ok(_) => next_claim = now + cfg.poll_interval,
                    Err(e) => {
                        warn!(error = %e, "claim failed; retrying");
                        next_claim = now + cfg.poll_interval.max(Duration::from_secs(1));
                    }
                }
            }
        }
        if d.flush_due(Instant::now()) {
            d.flush();
        }
        let mut wake = next_claim.min(next_heartbeat).min(next_campaigns);
        // While a record is under way the next waits for it (its end wakes us).
        if let Some(since) = d.pending_since.filter(|_| !d.recorder.busy()) {
            wake = wake.min(since + FLUSH_DELAY);
        }
        if cfg.bounces.verp.is_some() {
            wake = wake.min(next_intake);
        }
        tokio::select! {
            biased;
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => crate::reload::reload(&cfg),
            got = results.recv() => match got {
                Some(batch) => d.finish(batch),
                None => break,
            },
            () = d.recorder.finished(), if d.recorder.busy() => {}
            // A wake time already past fires at once: the loop must never wait
            // on results alone (an idle relay gets none).
            () = sleep_until(wake) => {}
        }
        // Take whatever else has arrived, so one transaction records it all.
        while let Ok(batch) = results.try_recv() {
            d.finish(batch);
        }
    }
    info!(
        in_flight = d.in_flight.len(),
        "stopping: no new claims; finishing deliveries under way"
    );
    crate::metrics::watchdog().unregister(&beat);
    ops::notify::stopping("stopping: finishing deliveries under way");
    d.jobs.clear();
    let deadline = Instant::now() + cfg.shutdown_grace;
    while !d.in_flight.is_empty() {
        tokio::select! {
            got = results.recv() => match got {
                Some(batch) => d.finish(batch),
                None => break,
            },
            () = sleep_until(deadline) => break,
        }
        while let Ok(batch) = results.try_recv() {
            d.finish(batch);
        }
        d.record_all().await;
    }
    d.record_all().await;
    // Only this process's leases: another process of the node id (one that took it
    // over) keeps its own.
    let own = Leases::Own {
        node: &node.node_id,
        instance: &node.instance_id,
    };
    match queue.release(own).await {
        Ok(n) if n > 0 => info!(rows = n, "returned unfinished rows to the queue"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not return rows; their leases will expire"),
    }
    if lost.is_none() {
        // `outbound nodes` shows it stopped at once, and the next process with this
        // node id need not watch for a heartbeat.
        if let Err(e) = queue.mark_stopped(&node, Utc::now()).await {
            warn!(error = %e, "could not mark the node stopped");
        }
    }
    queue.close().await;
    d.recorder.close().await;
    if d.in_flight.is_empty() {
        for t in threads {
            let _ = t.join();
        }
    }
    info!("relay stopped");
    lost.map_or(Ok(()), |e| Err(e.into()))
}

/// Takes the node id for this process (the rule is in [`node`]): at once when nobody
/// runs under it; after watching the node row when a recent heartbeat from another
/// process may be a live one. An error when another process is alive under it;
/// Ok(false) when a stop signal came while watching.
async fn take_node_id(
    queue: &mut Queue,
    node: &Node,
    term: &mut Signal,
    int: &mut Signal,
) -> anyhow::Result<bool> {
    // Each lost compare-and-set means another process wrote the row in between:
    // look again, a bounded number of times.
    for _ in 0..5 {
        let Some(seen) = queue.node(&node.node_id).await? else {
            if queue.take_node(node, None, Utc::now()).await? {
                return Ok(true);
            }
            continue;
        };
        if let node::Verdict::Watch(window) = node::judge(&seen, Utc::now()) {
            info!(
                node = %node.node_id,
                pid = seen.pid,
                host = %seen.hostname,
                watch_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                "the node id has a recent heartbeat from another process; watching whether it is alive"
            );
            let deadline = Instant::now() + window;
            let verdict = loop {
                tokio::select! {
                    _ = term.recv() => return Ok(false),
                    _ = int.recv() => return Ok(false),
                    () = tokio::time::sleep(WATCH_POLL) => {}
                }
                let now_row = queue.node(&node.node_id).await?;
                match node::change(&seen, now_row.as_ref()) {
                    node::Change::Same if Instant::now() < deadline => {}
                    node::Change::Alive => {
                        let alive = now_row.unwrap_or(seen);
                        return Err(node::NodeError::in_use(&alive, Utc::now()).into());
                    }
                    other => break other,
                }
            };
            if verdict == node::Change::Released {
                continue;
            }
            info!(
                node = %node.node_id,
                pid = seen.pid,
                "no heartbeat since: the previous process is gone; taking the node id over"
            );
        }
        if queue.take_node(node, Some(&seen), Utc::now()).await? {
            return Ok(true);
        }
    }
    match queue.node(&node.node_id).await? {
        Some(other) => Err(node::NodeError::in_use(&other, Utc::now()).into()),
        None => anyhow::bail!("could not register node id `{}`", node.node_id),
    }
}

struct Dispatcher {
    cfg: Arc<Config>,
    /// This process's instance id: its leases carry it.
    instance: String,
    in_flight: HashMap<i64, InFlight>,
    /// Attempts waiting to be recorded.
    pending: Vec<Attempt>,
    /// When the oldest of them arrived (None: none waiting).
    pending_since: Option<Instant>,
    /// Writes them, on its own connection, while claims go on.
    recorder: Recorder,
    /// DSNs to queue, recorded with the attempts that caused them.
    new_rows: Vec<NewRow>,
    /// Addresses a server refused as non-existent (hard 5xx at RCPT/DATA).
    suppressions: Vec<(String, String)>,
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    /// Campaign of each pending attempt's row (queue id → campaign id), for the
    /// delivery log; filled by `finish`, emptied by `flush`.
    campaign_of: HashMap<i64, i64>,
    /// Campaigns paused or cancelled, as the last runner tick saw them: their
    /// rows claimed since (a lease that came back, a race with the pause) are
    /// put back instead of sent.
    stopped: HashMap<i64, CampaignState>,
    /// Signs tracking tokens (`[tracking] key`); None: campaigns go unmasked.
    signer: Option<Arc<Signer>>,
    /// Each campaign's tracking domains and link map, loaded once (a campaign's
    /// links are fixed when it is created), at most [`MAX_TRACKED_CAMPAIGNS`].
    tracking: HashMap<i64, Arc<CampaignLinks>>,
    /// How far the bounce intake may read `new_mail` ([`IntakeHorizon`]).
    horizon: IntakeHorizon,
}

/// Campaigns whose link maps the dispatcher keeps; past it the cache starts over.
const MAX_TRACKED_CAMPAIGNS: usize = 1_000;

impl Dispatcher {
    /// One campaign runner tick (`campaign::runner`), on this connection.
    async fn campaigns(&mut self, queue: &mut Queue, node: &Node) {
        let runner = Runner {
            cfg: &self.cfg.campaigns,
            node: &node.node_id,
            instance: &node.instance_id,
        };
        match runner.tick(queue.db(), Utc::now()).await {
            Ok(report) => {
                crate::metrics::get()
                    .campaign_expanded
                    .inc_by(report.expanded);
                if report.started + report.expanded + report.finished > 0 {
                    debug!(
                        started = report.started,
                        expanded = report.expanded,
                        finished = report.finished,
                        "campaign runner"
                    );
                }
                self.stopped = report.stopped;
            }
            // The store down, most likely; the next tick tries again (a window
            // that failed was rolled back whole).
            Err(e) => warn!(error = %e, "campaign runner failed"),
        }
    }

    /// One heartbeat; an error when another process has taken the node id over
    /// (this one must stop: its leases are no longer its own).
    async fn heartbeat(&mut self, queue: &mut Queue, node: &Node) -> Option<node::NodeError> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.cfg.lease).unwrap_or_default();
        match queue.heartbeat(node, now, now + lease).await {
            Ok(Beat::Ours { took_back: 0 }) => None,
            Ok(Beat::Ours { took_back }) => {
                crate::metrics::get().leases_taken_over.inc_by(took_back);
                info!(
                    rows = took_back,
                    "took back rows whose lease had expired (a node stopped)"
                );
                None
            }
            Ok(Beat::TakenOver(other)) => {
                error!(
                    node = %node.node_id,
                    pid = other.pid,
                    host = %other.hostname,
                    "another process has taken this node id over; stopping"
                );
                Some(node::NodeError::taken_over(&other))
            }
            Err(e) => {
                warn!(error = %e, "heartbeat failed");
                None
            }
        }
    }

    /// Claims and dispatches up to `want` rows; returns how many were claimed.
    async fn claim(&mut self, queue: &mut Queue, want: usize) -> anyhow::Result<usize> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.cfg.lease).unwrap_or_default();
        let rows = queue
            .claim(&self.cfg.node_id, &self.instance, now, now + lease, want)
            .await
            .inspect_err(|e| crate::metrics::get().claimed(Err(e.to_string())))?;
        crate::metrics::get().claimed(Ok(rows.len()));
        let claimed = rows.len();
        if claimed == 0 {
            return Ok(0);
        }
        let rows = self.put_back_stopped(queue, rows).await;
        debug!(claimed, "claimed");
        let addresses: HashSet<String> = rows
            .iter()
            .map(|r| r.recipient.to_ascii_lowercase())
            .collect();
        let suppressed = queue.suppressed(&addresses).await?;
        let template_ids: HashSet<i64> = rows
            .iter()
            .filter(|r| r.body.is_none())
            .filter_map(|r| r.template_id)
            .collect();
        let templates = queue.templates(&template_ids).await?;
        if self.signer.is_some() {
            self.load_tracking(queue, &rows).await;
        }
        let scheme = self.cfg.tracking.scheme;
        let mask_links = self.cfg.tracking.link_masking;
        let mut groups: HashMap<GroupKey, Group> = HashMap::new();
        for row in rows {
            // A campaign's failures are counted in its stats, not mailed back to
            // its From address one DSN per recipient.
            let dsn_to =
                bounce_policy::dsn_recipient(&row.sender).filter(|_| row.campaign_id.is_none());
            self.in_flight.insert(
                row.id,
                InFlight {
                    created: row.created,
                    attempts: row.attempts,
                    dsn_to,
                    headers: row.body.as_deref().map(|b| dsn::header_section(b).to_vec()),
                    delay_notified: row.delay_notified,
                    campaign_id: row.campaign_id,
                },
            );
            if row.expires_at.is_some_and(|e| e <= now) {
                // A reminder of an event that is over is worse than none: no
                // attempt, and no DSN either (`sending`, per-message expiry).
                if let Some(f) = self.in_flight.get_mut(&row.id) {
                    f.dsn_to = None;
                }
                self.local(
                    &row,
                    Outcome::Failed,
                    Some("4.4.7"),
                    "message expired".into(),
                );
                continue;
            }
            if suppressed.contains(&row.recipient.to_ascii_lowercase()) {
                self.local(
                    &row,
                    Outcome::Suppressed,
                    None,
                    "address is on the suppression list".into(),
                );
                continue;
            }
            let (sender, domain) = match check_envelope(&row) {
                Ok(v) => v,
                Err((status, text)) => {
                    self.local(&row, Outcome::Failed, Some(status), text);
                    continue;
                }
            };
            // VERP: a return path of its own per recipient (never for the null
            // sender: a DSN must not be bounced).
            let verp = self
                .cfg
                .bounces
                .verp
                .as_ref()
                .filter(|_| sender != ReversePath::Null);
            let envelope_sender = verp.map_or_else(
                || sender.as_str().to_owned(),
                |v| v.address(Kind::Bounce, row.id),
            );
            let links = row.campaign_id.and_then(|c| self.tracking.get(&c).cloned());
            let signer = self.signer.clone();
            // A campaign row with a tracking domain: masked links and a one-click
            // unsubscribe URL of its own.
            let recipient = match (&signer, &links, row.campaign_id, row.subscriber_id) {
                (Some(s), Some(l), Some(c), Some(sub)) => {
                    Recipient::new(s, scheme, mask_links, l, c, sub)
                }
                _ => None,
            };
            let mailto = verp.filter(|_| self.cfg.bounces.list_unsubscribe);
            let unsubscribe = match &recipient {
                Some(r) => list_unsubscribe(
                    &r.unsubscribe_url(),
                    mailto
                        .map(|v| {
                            format!(
                                "<mailto:{}?subject=unsubscribe>",
                                v.address(Kind::Unsubscribe, row.id)
                            )
                        })
                        .as_deref(),
                ),
                None => mailto
                    .map(|v| {
                        unsubscribe_headers(
                            &v.address(Kind::Unsubscribe, row.id),
                            self.cfg.bounces.unsubscribe_url.as_deref(),
                        )
                    })
                    .unwrap_or_default(),
            };
            match message_for(
                &row,
                &templates,
                &self.cfg.message_id_domain,
                &unsubscribe,
                recipient.as_ref(),
            ) {
                Ok(Message::Shared(body)) => {
                    let mut h = DefaultHasher::new();
                    body.hash(&mut h);
                    let key = (domain, envelope_sender, h.finish(), row.pool.clone());
                    let entry = groups
                        .entry(key)
                        .or_insert_with(|| (Arc::new(Payload::new(&body)), Vec::new()));
                    entry.1.push((row.id, row.recipient.clone()));
                }
                Ok(Message::Own(body)) => {
                    self.send_job(Job {
                        domain,
                        sender: envelope_sender,
                        recipients: vec![(row.id, row.recipient.clone())],
                        payload: Arc::new(Payload::new(&body)),
                        pool: row.pool.clone(),
                    });
                }
                Err(text) => self.local(&row, Outcome::Failed, Some("5.3.0"), text),
            }
        }
        for ((domain, sender, _, pool), (payload, recipients)) in groups {
            // Under a rate limit, at most one second's worth per transaction.
            let per_transaction = self.cfg.recipients_per_transaction(&domain);
            for chunk in recipients.chunks(per_transaction.max(1)) {
                self.send_job(Job {
                    domain: domain.clone(),
                    sender: sender.clone(),
                    recipients: chunk.to_vec(),
                    payload: payload.clone(),
                    pool: pool.clone(),
                });
            }
        }
        Ok(claimed)
    }

    /// Loads the tracking settings of the claimed rows' campaigns not cached yet.
    /// A failed read leaves them out: those rows go unmasked, as without a key,
    /// rather than wait (their next claim tries again).
    async fn load_tracking(&mut self, queue: &mut Queue, rows: &[Claimed]) {
        let missing: HashSet<i64> = rows
            .iter()
            .filter_map(|r| r.campaign_id)
            .filter(|c| !self.tracking.contains_key(c))
            .collect();
        if missing.is_empty() {
            return;
        }
        if self.tracking.len() + missing.len() > MAX_TRACKED_CAMPAIGNS {
            self.tracking.clear();
        }
        for c in missing {
            match crate::tracking::store::campaign_links(queue.db(), c).await {
                Ok(Some(links)) => {
                    self.tracking.insert(c, Arc::new(links));
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, campaign = c, "cannot load tracking links"),
            }
        }
    }

    /// Rows of campaigns paused or cancelled since they were queued go back
    /// (paused) or away (cancelled) instead of out; the rest are returned. On
    /// failure they are sent: the pause missed them by a moment, as it would have
    /// had they been claimed a moment earlier.
    async fn put_back_stopped(&mut self, queue: &mut Queue, rows: Vec<Claimed>) -> Vec<Claimed> {
        if self.stopped.is_empty() {
            return rows;
        }
        let (mut paused, mut cancelled) = (Vec::new(), Vec::new());
        for r in &rows {
            match r.campaign_id.and_then(|c| self.stopped.get(&c)) {
                Some(CampaignState::Paused) => paused.push(r.id),
                Some(CampaignState::Cancelled) => cancelled.push(r.id),
                _ => {}
            }
        }
        if paused.is_empty() && cancelled.is_empty() {
            return rows;
        }
        let (node, instance) = (self.cfg.node_id.clone(), self.instance.clone());
        let back = queue
            .put_back_stopped(&node, &instance, &paused, false)
            .await;
        let gone = queue
            .put_back_stopped(&node, &instance, &cancelled, true)
            .await;
        if let Err(e) = back.as_ref().and(gone.as_ref()) {
            warn!(error = %e, "could not put back rows of stopped campaigns; sending them");
            return rows;
        }
        debug!(
            paused = paused.len(),
            cancelled = cancelled.len(),
            "claimed rows of stopped campaigns put back"
        );
        rows.into_iter()
            .filter(|r| !paused.contains(&r.id) && !cancelled.contains(&r.id))
            .collect()
    }

    fn send_job(&mut self, job: Job) {
        let mut h = DefaultHasher::new();
        job.domain.hash(&mut h);
        let index = usize::try_from(h.finish() % self.jobs.len().max(1) as u64).unwrap_or(0);
        if let Some(tx) = self.jobs.get(index)
            && let Err(mpsc::error::SendError(job)) = tx.send(job)
        {
            // The worker is gone (it could not start its resolver): defer, so the
            // rows are not stuck until their lease runs out.
            let at = Utc::now();
            let attempts = job
                .recipients
                .iter()
                .map(|(id, rcpt)| Attempt {
                    queue_id: *id,
                    recipient: rcpt.clone(),
                    outcome: Outcome::Deferred,
                    mx: None,
                    code: None,
                    status: Some("4.3.0".into()),
                    text: "delivery worker unavailable".into(),
                    at,
                    next_attempt: None,
                    delay_notified: false,
                })
                .collect();
            self.finish(attempts);
        }
    }

    /// An outcome decided here, without a delivery attempt.
    fn local(&mut self, row: &Claimed, outcome: Outcome, status: Option<&str>, text: String) {
        crate::metrics::get().delivery(outcome, row.recipient.rsplit('@').next().unwrap_or(""), 1);
        self.finish(vec![Attempt {
            queue_id: row.id,
            recipient: row.recipient.clone(),
            outcome,
            mx: None,
            code: None,
            status: status.map(str::to_owned),
            text,
            at: Utc::now(),
            next_attempt: None,
            delay_notified: false,
        }]);
    }

    /// Applies the retry schedule to a worker's results, adds the DSNs they call for,
    /// and queues both for recording.
    fn finish(&mut self, batch: Vec<Attempt>) {
        for mut a in batch {
            let Some(meta) = self.in_flight.remove(&a.queue_id) else {
                continue;
            };
            if let Some(campaign) = meta.campaign_id {
                self.campaign_of.insert(a.queue_id, campaign);
            }
            let age = (a.at - meta.created).to_std().unwrap_or_default();
            if a.outcome == Outcome::Deferred {
                let attempts = meta.attempts.saturating_add(1);
                match self.cfg.retry.next(attempts, age) {
                    Next::RetryIn(wait) => {
                        a.next_attempt =
                            Some(a.at + chrono::Duration::from_std(wait).unwrap_or_default());
                        let warn_after = self.cfg.bounces.delay_warning;
                        if warn_after.is_some_and(|w| age >= w) && !meta.delay_notified {
                            a.delay_notified = self.dsn(&a, &meta, dsn::Action::Delayed);
                        }
                    }
                    Next::GiveUp => {
                        a.outcome = Outcome::Failed;
                        a.text = format!(
                            "gave up after {attempts} attempts over {}: {}",
                            human(age),
                            a.text
                        );
                        a.status = Some("4.4.7".into());
                    }
                }
            }
            if a.outcome == Outcome::Failed {
                self.dsn(&a, &meta, dsn::Action::Failed);
                if let Some(reason) =
                    bounce_policy::refusal_suppression(a.code, a.status.as_deref(), &a.text)
                {
                    self.suppressions
                        .push((a.recipient.to_ascii_lowercase(), reason));
                }
            }
            self.pending.push(a);
            self.pending_since.get_or_insert_with(Instant::now);
        }
    }

    /// Queues a DSN about `a` to the original sender; false when none is due (DSNs
    /// off, or a sender that is not a mailbox: the null sender, since a DSN is never
    /// sent about a DSN, or an invalid one).
    fn dsn(&mut self, a: &Attempt, meta: &InFlight, action: dsn::Action) -> bool {
        let Some(sender) = meta.dsn_to.as_deref().filter(|_| self.cfg.bounces.dsn) else {
            return false;
        };
        let to_header = format!("To: <{}>\r\n", a.recipient);
        let headers = meta.headers.as_deref().unwrap_or(to_header.as_bytes());
        let diagnostic = match (a.code, &a.status) {
            (Some(code), Some(status)) => format!("{code} {status} {}", a.text),
            (Some(code), None) => format!("{code} {}", a.text),
            (None, _) => a.text.clone(),
        };
        let default_status = if action == dsn::Action::Failed {
            "5.0.0"
        } else {
            "4.0.0"
        };
        let body = dsn::render(&dsn::Report {
            reporting_mta: &self.cfg.helo_name,
            original_sender: sender,
            recipient: &a.recipient,
            action,
            status: a.status.as_deref().unwrap_or(default_status),
            remote_mta: a.mx.as_deref(),
            diagnostic: &diagnostic,
            diagnostic_is_smtp: a.code.is_some(),
            arrival: meta.created,
            now: a.at,
            original_headers: headers,
            message_id_domain: &self.cfg.message_id_domain,
        });
        self.new_rows.push(NewRow {
            sender: String::new(),
            recipient: sender.to_owned(),
            body,
            tag: "dsn",
        });
        true
    }

    /// One pass over new mail to our VERP and unsubscribe addresses.
    async fn intake(&mut self, queue: &mut Queue) {
        let Some(verp) = self.cfg.bounces.verp.as_ref() else {
            return;
        };
        let settings = Intake {
            verp,
            node: &self.cfg.node_id,
            policy: bounce_policy::Settings {
                dsn: self.cfg.bounces.dsn,
                soft_bounce_limit: self.cfg.bounces.soft_bounce_limit,
                soft_bounce_window: self.cfg.bounces.soft_bounce_window,
                reporting_mta: &self.cfg.helo_name,
                message_id_domain: &self.cfg.message_id_domain,
            },
            complaint_address: self.cfg.bounces.complaint_address.as_deref(),
        };
        let intake = queue.intake(&settings, &mut self.horizon, Utc::now()).await;
        if let Ok(r) = &intake {
            crate::metrics::record_intake(r.bounces, r.unsubscribes, r.complaints, r.forged);
        }
        match intake {
            Ok(r)
                if r.bounces + r.unsubscribes + r.forged + r.complaints + r.complaints_skipped
                    > 0 =>
            {
                info!(
                    bounces = r.bounces,
                    unsubscribes = r.unsubscribes,
                    forged = r.forged,
                    complaints = r.complaints,
                    complaints_skipped = r.complaints_skipped,
                    suppressed = r.suppressed,
                    "bounce intake"
                )
            }
            Ok(_) => {}
            // new_mail missing (a relay-only database) or the store is down.
            Err(e) => debug!(error = %e, "bounce intake failed"),
        }
    }

    /// Whether to record now: enough waiting, or the oldest has waited
    /// [`FLUSH_DELAY`]. DSNs and suppressions only come with attempts.
    fn flush_due(&self, now: Instant) -> bool {
        self.pending.len() >= FLUSH_ROWS
            || self
                .pending_since
                .is_some_and(|since| now >= since + FLUSH_DELAY)
    }

    /// What is waiting to be recorded, taken.
    fn take_flush(&mut self) -> Flush {
        self.pending_since = None;
        Flush {
            attempts: std::mem::take(&mut self.pending),
            campaign_of: std::mem::take(&mut self.campaign_of),
            new_rows: std::mem::take(&mut self.new_rows),
            suppressions: std::mem::take(&mut self.suppressions),
        }
    }

    /// Starts recording what waits, unless a record is under way (then it waits
    /// for that one's end: one record at a time, in order).
    fn flush(&mut self) {
        if self.recorder.busy() {
            return;
        }
        let flush = self.take_flush();
        if let Err(back) = self.recorder.start(flush) {
            // Not reached (not busy); kept for the next turn rather than lost.
            self.pending = back.attempts;
            self.campaign_of = back.campaign_of;
            self.new_rows = back.new_rows;
            self.suppressions = back.suppressions;
            self.pending_since = Some(Instant::now());
        }
    }

    /// Records everything waiting and waits until it is written (shutdown).
    async fn record_all(&mut self) {
        let flush = self.take_flush();
        self.recorder.write_all(flush).await;
    }
}

enum Message {
    /// The row's own body: may be shared with other recipients.
    Shared(Vec<u8>),
    /// Rendered for this recipient.
    Own(Vec<u8>),
}

fn message_for(
    row: &Claimed,
    templates: &HashMap<i64, Result<Template, String>>,
    id_domain: &str,
    extra_headers: &[(String, String)],
    tracking: Option<&Recipient<'_>>,
) -> Result<Message, String> {
    // Our headers (List-Unsubscribe) go in front of the message's own, by one
    // function for raw and template rows alike.
    if let Some(body) = &row.body {
        return Ok(Message::Shared(prepend_headers(
            extra_headers,
            body.clone(),
        )));
    }
    let Some(id) = row.template_id else {
        return Err("row has neither a body nor a template_id".into());
    };
    let template = match templates.get(&id) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err(format!("template {id}: {e}")),
        None => return Err(format!("template {id} does not exist")),
    };
    let mut params = parse_params(row.params.as_deref()).map_err(|e| format!("params: {e}"))?;
    let rendered = match tracking {
        Some(r) => {
            params.insert(UNSUBSCRIBE_TAG.to_owned(), r.unsubscribe_url());
            render_rewritten(
                template,
                &params,
                &row.recipient,
                id_domain,
                &[],
                Utc::now(),
                &|part, body| match part {
                    Part::Html => r.html(&body),
                    Part::Text => r.text(&body),
                },
            )
        }
        None => render(
            template,
            &params,
            &row.recipient,
            id_domain,
            &[],
            Utc::now(),
        ),
    };
    rendered
        .map(|message| Message::Own(prepend_headers(extra_headers, message)))
        .map_err(|e| format!("template {id}: {e}"))
}

/// `List-Unsubscribe` (RFC 2369) with our unsubscribe address, plus the one-click
/// URL and `List-Unsubscribe-Post` (RFC 8058) when a URL is configured.
fn unsubscribe_headers(address: &str, url: Option<&str>) -> Vec<(String, String)> {
    let mut value = format!("<mailto:{address}?subject=unsubscribe>");
    let mut headers = Vec::with_capacity(2);
    if let Some(url) = url {
        let token = address
            .split_once('+')
            .map_or("", |(_, t)| t)
            .split('@')
            .next()
            .unwrap_or("");
        let sep = if url.contains('?') { '&' } else { '?' };
        value = format!("<{url}{sep}token={token}>, {value}");
        headers.push(("List-Unsubscribe".to_owned(), value));
        headers.push((
            "List-Unsubscribe-Post".to_owned(),
            "List-Unsubscribe=One-Click".to_owned(),
        ));
    } else {
        headers.push(("List-Unsubscribe".to_owned(), value));
    }
    headers
}

/// `{"UserName": "Ann", "Count": 3}` → tag values (numbers and booleans as text).
fn parse_params(json: Option<&str>) -> Result<BTreeMap<String, String>, String> {
    let Some(json) = json.filter(|j| !j.trim().is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON object of tag values: {e}"))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// The sender (`''` and `<>` are the null sender) and the recipient's domain,
/// lowercased, once both are safe to put on an SMTP command line (a row is
/// application input: a CR/LF or `>` in it would let it add commands of its own).
fn check_envelope(row: &Claimed) -> Result<(ReversePath, String), (&'static str, String)> {
    let sender = address::reverse_path(&row.sender)
        .map_err(|_| ("5.1.7", format!("bad sender address {:?}", row.sender)))?;
    match row.recipient.rsplit_once('@') {
        Some((_, domain)) if address::is_mailbox(&row.recipient) => {
            Ok((sender, domain.to_ascii_lowercase()))
        }
        _ => Err((
            "5.1.3",
            format!("bad recipient address {:?}", row.recipient),
        )),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn row(sender: &str, recipient: &str) -> Claimed {
        Claimed {
            id: 1,
            created: Utc::now(),
            sender: sender.into(),
            recipient: recipient.into(),
            body: Some(b"x".to_vec()),
            template_id: None,
            params: None,
            attempts: 0,
            delay_notified: false,
            campaign_id: None,
            pool: None,
            expires_at: None,
            subscriber_id: None,
        }
    }

    #[test]
    fn envelope_check_refuses_command_injection_and_odd_addresses() {
        assert_eq!(
            check_envelope(&row("a@x.test", "b@Y.Test")).unwrap(),
            (ReversePath::Mailbox("a@x.test".into()), "y.test".into())
        );
        for null in ["", "<>"] {
            assert_eq!(
                check_envelope(&row(null, "b@y.test")).unwrap(),
                (ReversePath::Null, "y.test".into())
            );
        }
        for bad in [
            "b@y.test>\r\nRSET",
            "b y@test",
            "no-at",
            "@y.test",
            "b@",
            "b@y.test>",
        ] {
            assert_eq!(
                check_envelope(&row("a@x.test", bad)).unwrap_err().0,
                "5.1.3",
                "{bad}"
            );
        }
        for bad in ["a@x\r\n", "a x@y", "nodomain", "<a@x", "a@x>"] {
            assert_eq!(
                check_envelope(&row(bad, "b@y.test")).unwrap_err().0,
                "5.1.7",
                "{bad}"
            );
        }
    }

    #[test]
    fn params_become_strings() {
        let p = parse_params(Some(
            r#"{"UserName": "Ann", "Count": 3, "Vip": true, "X": null}"#,
        ))
        .unwrap();
        assert_eq!(p["UserName"], "Ann");
        assert_eq!(p["Count"], "3");
        assert_eq!(p["Vip"], "true");
        assert_eq!(p["X"], "");
        assert!(parse_params(Some("[1]")).is_err());
        assert!(parse_params(None).unwrap().is_empty());
    }
}
