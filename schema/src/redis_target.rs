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

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, Value};

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
}
