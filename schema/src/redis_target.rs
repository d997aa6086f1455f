//! Redis locations both daemons use (smtpd's cache, the relay's shared rate limits):
//! one server or a Redis Cluster, over TCP or TLS.
//!
//! Owns: the spelling of Redis URLs, opening a connection to one server or to a
//! cluster, and running a batch of commands on either without cross-slot pipelines.
//! Must not: know which keys the daemons write (see `schema/README.md`, "Redis").
//!
//! URLs:
//! - `redis://[:PASS@]HOST:PORT[/DB]`: one server;
//! - `rediss://…`: the same over TLS;
//! - `unix:///path/redis.sock`: one server on a local socket;
//! - `redis+cluster://[:PASS@]HOST1:PORT1,HOST2:PORT2,…`: a Redis Cluster, the hosts
//!   being seed nodes (the client learns the slot map from them); `rediss+cluster://`
//!   over TLS. No `/DB` (a cluster has database 0 only).
//! - `?ssl-ca=PATH` on a TLS URL: the PEM file of the CA the servers' certificates
//!   must chain to (otherwise the system roots).
//!
//! Failures come in two kinds ([`Fault`]): a *configuration* error that no retry
//! will fix (a certificate that does not verify, a TLS handshake that fails, a
//! password refused or missing, a database index out of range, a cluster URL for a
//! server that is not in a cluster or the other way round, something that does not
//! speak Redis), and a *transient* one (connection refused or reset, a timeout, a
//! host name that does not resolve now, a node that is loading or whose cluster is
//! down). [`RedisTarget::probe`] tells them apart at start: daemons refuse to start
//! on the first kind and start (and retry) on the second.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind,
    TlsCertificates, Value,
};

/// A validated Redis URL. `Display` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// What the operator wrote (never logged as is: it may hold a password).
    original: String,
    /// One `redis://` or `rediss://` URL per node (one for a single server).
    seeds: Vec<String>,
    cluster: bool,
    /// PEM bytes of `ssl-ca`, read when the URL is parsed.
    ca: Option<Vec<u8>>,
}

/// A Redis URL that cannot be used. The messages name the part that is wrong;
/// callers prefix the config field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RedisUrlError(String);

impl FromStr for RedisTarget {
    type Err = RedisUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |m: String| RedisUrlError(m);
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(bad(
                "expected redis://, rediss://, redis+cluster:// or rediss+cluster://".into(),
            ));
        };
        if scheme == "unix" || scheme == "redis+unix" {
            // A local socket: passed to the redis crate as is.
            redis::Client::open(s).map_err(|e| bad(e.to_string()))?;
            return Ok(Self {
                original: s.to_owned(),
                seeds: vec![s.to_owned()],
                cluster: false,
                ca: None,
            });
        }
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            other => {
                return Err(bad(format!(
                    "scheme {other:?}: expected redis, rediss, redis+cluster or rediss+cluster"
                )));
            }
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut kept = Vec::new();
        let mut ca = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ssl-ca", path)) => {
                    if !tls {
                        return Err(bad("ssl-ca needs a TLS URL (rediss:// …)".into()));
                    }
                    let pem = std::fs::read(path)
                        .map_err(|e| bad(format!("ssl-ca={path}: cannot read it: {e}")))?;
                    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                        return Err(bad(format!("ssl-ca={path}: no PEM certificate in it")));
                    }
                    // The redis crate reads the PEM itself; a file it cannot use fails
                    // the first connect, which names this setting too.
                    ca = Some(pem);
                }
                _ => kept.push(pair),
            }
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let node_scheme = if tls { "rediss" } else { "redis" };
        let seeds = if cluster {
            let (userinfo, hosts) = match rest.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), rest),
            };
            let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
            if hosts.contains('/') {
                return Err(bad(
                    "a cluster URL has no /DB (a Redis Cluster has database 0 only)".into(),
                ));
            }
            let seeds: Vec<String> = hosts
                .split(',')
                .map(|h| format!("{node_scheme}://{userinfo}{h}{query}"))
                .collect();
            if hosts.split(',').any(str::is_empty) {
                return Err(bad("an empty host in the cluster's seed list".into()));
            }
            seeds
        } else {
            vec![format!("{node_scheme}://{rest}{query}")]
        };
        for seed in &seeds {
            redis::Client::open(seed.as_str()).map_err(|e| {
                bad(format!(
                    "{}: {e}",
                    redact(seed).split('?').next().unwrap_or_default()
                ))
            })?;
        }
        Ok(Self {
            original: s.to_owned(),
            seeds,
            cluster,
            ca,
        })
    }
}

/// `scheme://user:secret@host` → `scheme://***@host` (the whole user part hidden).
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if scheme + 3 <= at => format!(
            "{}://***{}",
            url.get(..scheme).unwrap_or_default(),
            url.get(at..).unwrap_or_default()
        ),
        _ => url.to_owned(),
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.original))
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl RedisTarget {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    fn certs(&self) -> Option<TlsCertificates> {
        self.ca.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }

    /// A client for one node (`index` into the seeds, wrapping): the only node of a
    /// single server; for a cluster, what a subscriber uses (a `PUBLISH` on any
    /// node of a cluster reaches the subscribers of every node).
    pub fn node_client(&self, index: usize) -> RedisResult<redis::Client> {
        let url = self
            .seeds
            .get(index % self.seeds.len().max(1))
            .map_or("", String::as_str);
        match self.certs() {
            Some(certs) => redis::Client::build_with_tls(url, certs),
            None => redis::Client::open(url),
        }
    }

    /// How many seed nodes the URL lists (1 for a single server).
    pub fn node_count(&self) -> usize {
        self.seeds.len()
    }

    /// Opens a connection (to the server, or to the cluster through its seeds),
    /// giving up after `limit`.
    pub async fn connect(&self, limit: Duration) -> RedisResult<RedisConn> {
        let timed_out = || RedisError::from((redis::ErrorKind::Io, "connect timed out"));
        if self.cluster {
            let mut builder = ClusterClientBuilder::new(self.seeds.clone())
                .connection_timeout(limit)
                .response_timeout(limit)
                // A dead master answers nothing: fail fast and let the caller's
                // fallback (a cache miss, a 4xx, the local limit) take over.
                .retries(1)
                .min_retry_wait(50)
                .max_retry_wait(200);
            if let Some(certs) = self.certs() {
                builder = builder.certs(certs);
            }
            let client = builder.build()?;
            let conn = tokio::time::timeout(limit, client.get_async_connection())
                .await
                .map_err(|_| timed_out())??;
            return Ok(RedisConn::Cluster(conn));
        }
        let client = self.node_client(0)?;
        let conn = tokio::time::timeout(limit, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| timed_out())??;
        Ok(RedisConn::Single(conn))
    }
}

/// What kind of failure a Redis error is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The settings are wrong: retrying cannot help, the start must fail.
    Config,
    /// The server is down, unreachable or busy now: retry later.
    Transient,
}

impl Fault {
    /// Classifies an error from connecting to a node or from its first commands.
    pub fn of(e: &RedisError) -> Fault {
        match e.kind() {
            ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Parse
            | ErrorKind::RESP3NotSupported => Fault::Config,
            ErrorKind::Server(kind) => match kind {
                // Loading a dump, a failover or a cluster that lost a master: these pass.
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask => Fault::Transient,
                // `ERR DB index is out of range`, `ERR … cluster support disabled`,
                // a missing ACL permission.
                _ => Fault::Config,
            },
            // Error codes the crate has no kind for: `NOAUTH` (a password is
            // needed), `WRONGPASS`; others (`BUSY` …) pass.
            ErrorKind::Extension => match e.code() {
                Some("NOAUTH" | "WRONGPASS" | "NOPERM") => Fault::Config,
                _ => Fault::Transient,
            },
            ErrorKind::Io => match io_kind(e) {
                // rustls reports a certificate that does not verify and a failed
                // handshake as invalid data.
                Some(
                    io::ErrorKind::InvalidData
                    | io::ErrorKind::InvalidInput
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::Unsupported,
                ) => Fault::Config,
                // Refused, reset, timed out, unreachable, a name that does not
                // resolve now, a unix socket not there yet.
                _ => Fault::Transient,
            },
            _ => Fault::Transient,
        }
    }
}

/// The `std::io::ErrorKind` inside an I/O error of the redis crate (it keeps the
/// `io::Error` behind an `Arc`).
fn io_kind(e: &RedisError) -> Option<io::ErrorKind> {
    let source = std::error::Error::source(e)?;
    if let Some(io) = source.downcast_ref::<io::Error>() {
        return Some(io.kind());
    }
    source
        .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
        .map(io::Error::kind)
}

/// Why [`RedisTarget::probe`] found Redis unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// A configuration error ([`Fault::Config`]) on `node` (shown without password
    /// or query).
    #[error("{node}: {reason}")]
    Misconfigured { node: String, reason: String },
    /// No node could be reached, for transient reasons only ([`Fault::Transient`]).
    #[error("{node}: {reason}")]
    Unreachable { node: String, reason: String },
}

impl RedisTarget {
    /// Connects to every node the URL names (each seed of a cluster on its own,
    /// so that the error of each is seen) and checks it: `PING` (a password is
    /// needed or refused), and `CLUSTER INFO` (a cluster URL needs cluster nodes,
    /// a single-server URL must not point at one). `Ok` when no node has a
    /// configuration error and at least one answered.
    pub async fn probe(&self, limit: Duration) -> Result<(), ProbeError> {
        let checks = (0..self.seeds.len()).map(|i| self.probe_node(i, limit));
        let results = futures_util::future::join_all(checks).await;
        let mut unreachable = None;
        let mut reached = false;
        for (i, result) in results.into_iter().enumerate() {
            let node = self.node_shown(i);
            match result {
                Ok(()) => reached = true,
                Err((Fault::Config, reason)) => {
                    let reason = if self
                        .seeds
                        .get(i)
                        .is_some_and(|s| s.starts_with("rediss://"))
                    {
                        format!("{reason} (TLS per the URL's ssl-ca)")
                    } else {
                        reason
                    };
                    return Err(ProbeError::Misconfigured { node, reason });
                }
                Err((Fault::Transient, reason)) => {
                    unreachable.get_or_insert(ProbeError::Unreachable { node, reason });
                }
            }
        }
        match unreachable {
            Some(e) if !reached => Err(e),
            _ => Ok(()),
        }
    }

    /// Seed `i` as logs show it: no password, no query.
    fn node_shown(&self, i: usize) -> String {
        let seed = self.seeds.get(i).map_or("", String::as_str);
        redact(seed.split('?').next().unwrap_or_default())
    }

    async fn probe_node(&self, i: usize, limit: Duration) -> Result<(), (Fault, String)> {
        let fail = |e: RedisError| (Fault::of(&e), e.to_string());
        let timed_out = || (Fault::Transient, "timed out".to_string());
        let client = self.node_client(i).map_err(fail)?;
        let check = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok::<_, RedisError>(
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(&mut conn)
                    .await,
            )
        };
        let cluster_info = tokio::time::timeout(limit, check)
            .await
            .map_err(|_| timed_out())?
            .map_err(fail)?;
        match (self.cluster, cluster_info) {
            (true, Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) => Err((
                Fault::Config,
                format!("not a Redis Cluster node ({e}): for one server use redis:// or rediss://"),
            )),
            (true, Err(e)) => Err(fail(e)),
            (false, Ok(_)) => Err((
                Fault::Config,
                "a Redis Cluster node: use redis+cluster:// (or rediss+cluster://) with the cluster's nodes".into(),
            )),
            (true, Ok(_)) | (false, Err(_)) => Ok(()),
        }
    }
}

/// The master that serves each hash slot of a cluster (`CLUSTER SLOTS`), by the
/// address the cluster announces. A master that died keeps its slots here (the
/// cluster keeps them assigned to it until a replica takes over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotOwners {
    /// (first slot, last slot, "ip:port"), sorted by first slot.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotOwners {
    /// Reads a `CLUSTER SLOTS` reply; ranges it cannot read are left out (their
    /// keys then have no known owner).
    pub fn from_reply(reply: &Value) -> SlotOwners {
        let int = |v: &Value| match v {
            Value::Int(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let mut ranges = Vec::new();
        if let Value::Array(entries) = reply {
            for entry in entries {
                let Value::Array(fields) = entry else {
                    continue;
                };
                let (Some(first), Some(last), Some(Value::Array(master))) = (
                    fields.first().and_then(int),
                    fields.get(1).and_then(int),
                    fields.get(2),
                ) else {
                    continue;
                };
                let (Some(ip), Some(Value::Int(port))) =
                    (master.first().and_then(text), master.get(1))
                else {
                    continue;
                };
                ranges.push((first, last, format!("{ip}:{port}")));
            }
        }
        ranges.sort();
        SlotOwners { ranges }
    }

    /// The master of `key`'s slot, if known.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        let slot = key_slot(key);
        let i = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, node) = self.ranges.get(i.checked_sub(1)?)?;
        (slot <= *last).then_some(node.as_str())
    }

    /// How many masters own slots.
    pub fn masters(&self) -> usize {
        let mut nodes: Vec<&str> = self.ranges.iter().map(|(_, _, n)| n.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.len()
    }
}

/// The hash slot of `key` (Redis Cluster: CRC16/XMODEM of the key, or of its hash
/// tag, the part between the first `{` and the next `}` when not empty, mod 16384).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            rest.get(..close).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A connection to one server or to a cluster (which routes each command to the
/// master of its key's slot).
#[derive(Clone)]
pub enum RedisConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Runs `groups` and returns every reply, in order. Each group must touch one
    /// key (or one hash slot): on one server all groups go in one pipeline; on a
    /// cluster each group is its own pipeline (a pipeline across slots is refused
    /// there), all sent at once. Groups must not use `ignore()`.
    pub async fn run_groups(&mut self, groups: &[Pipeline]) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(conn) => {
                let mut all = redis::pipe();
                for cmd in groups.iter().flat_map(Pipeline::cmd_iter) {
                    all.add_command(cmd.clone());
                }
                all.query_async(conn).await
            }
            Self::Cluster(conn) => {
                // Every group is tried (a dead master fails only its own slots'
                // writes); the first error is the answer.
                let replies = futures_util::future::join_all(groups.iter().map(|group| {
                    let mut conn = conn.clone();
                    async move { group.query_async::<Vec<Value>>(&mut conn).await }
                }))
                .await;
                let mut all = Vec::with_capacity(replies.len());
                for reply in replies {
                    all.extend(reply?);
                }
                Ok(all)
            }
        }
    }
}

impl RedisConn {
    /// Runs `groups` and returns each group's own result, in order (rules as for
    /// [`RedisConn::run_groups`]), each given up after `limit`. On one server all
    /// groups go in one pipeline and share its result; on a cluster a dead (or
    /// silent) master fails only its own groups.
    pub async fn run_each(
        &mut self,
        groups: &[Pipeline],
        limit: Duration,
    ) -> Vec<RedisResult<Vec<Value>>> {
        let timed_out = || RedisError::from((ErrorKind::Io, "timed out"));
        match self {
            Self::Single(_) => {
                let counts: Vec<usize> = groups.iter().map(|g| g.cmd_iter().count()).collect();
                let all = tokio::time::timeout(limit, self.run_groups(groups))
                    .await
                    .unwrap_or_else(|_| Err(timed_out()));
                match all {
                    Ok(all) => {
                        let mut all = all.into_iter();
                        counts
                            .into_iter()
                            .map(|n| Ok(all.by_ref().take(n).collect()))
                            .collect()
                    }
                    Err(e) => groups.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            Self::Cluster(conn) => {
                futures_util::future::join_all(groups.iter().map(|group| {
                    let mut conn = conn.clone();
                    async move {
                        tokio::time::timeout(limit, group.query_async::<Vec<Value>>(&mut conn))
                            .await
                            .unwrap_or_else(|_| Err(timed_out()))
                    }
                }))
                .await
            }
        }
    }

    /// Which master serves which slots (a cluster; one server has no slots).
    pub async fn slot_owners(&mut self) -> RedisResult<SlotOwners> {
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(self).await?;
        Ok(SlotOwners::from_reply(&reply))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let one: RedisTarget = "redis://127.0.0.1:6379/2".parse().unwrap();
        assert!(!one.is_cluster());
        let c: RedisTarget = "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001"
            .parse()
            .unwrap();
        assert!(c.is_cluster());
        assert_eq!(c.node_count(), 2);
        assert_eq!(
            c.to_string(),
            "redis+cluster://***@127.0.0.1:7000,127.0.0.1:7001"
        );
        assert!("http://x".parse::<RedisTarget>().is_err());
        assert!("redis+cluster://a:1,,b:2".parse::<RedisTarget>().is_err());
        assert!("redis+cluster://a:1/3".parse::<RedisTarget>().is_err());
        let e = "redis://a:1?ssl-ca=/nonexistent"
            .parse::<RedisTarget>()
            .unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        let e = "rediss://a:1?ssl-ca=/nonexistent"
            .parse::<RedisTarget>()
            .unwrap_err();
        assert!(e.to_string().contains("ssl-ca=/nonexistent"), "{e}");
    }

    #[test]
    fn key_slots_are_the_clusters() {
        // The examples of the Redis Cluster specification.
        // CRC16/XMODEM("123456789") = 0x31c3, below 16384.
        assert_eq!(key_slot(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn slot_owners_from_a_cluster_slots_reply() {
        let node = |ip: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(ip.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7002),
            ]),
            Value::Array(vec![Value::Int(1)]),
        ]);
        let owners = SlotOwners::from_reply(&reply);
        assert_eq!(owners.masters(), 3);
        assert_eq!(owners.owner(b"foo"), Some("127.0.0.1:7002"));
        assert_eq!(owners.owner(b"123456789"), Some("127.0.0.1:7002"));
        assert_eq!(owners.owner(b"{a}"), Some("127.0.0.1:7002"));
        assert_eq!(owners.owner(b"a{b}"), Some("127.0.0.1:7000"));
        assert_eq!(SlotOwners::default().owner(b"foo"), None);
    }

    #[test]
    fn faults_are_classified() {
        let io = |kind: io::ErrorKind| RedisError::from(io::Error::new(kind, "x"));
        assert_eq!(
            Fault::of(&io(io::ErrorKind::ConnectionRefused)),
            Fault::Transient
        );
        assert_eq!(Fault::of(&io(io::ErrorKind::TimedOut)), Fault::Transient);
        assert_eq!(Fault::of(&io(io::ErrorKind::InvalidData)), Fault::Config);
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "no"));
        assert_eq!(Fault::of(&auth), Fault::Config);
        let down = RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "x"));
        assert_eq!(Fault::of(&down), Fault::Transient);
    }
}
