//! A private three-master Redis Cluster on loopback, built from the Redis instances
//! of [`crate::services`]: each node runs with `--cluster-enabled yes` and its own
//! `nodes.conf` in its temp dir, then `redis-cli --cluster create … --cluster-replicas
//! 0 --cluster-yes` assigns the 16384 slots. Dropping it kills every node.
//!
//! [`RedisCluster::start_tls`]: the same with TLS only (`port 0`, `tls-port`,
//! `tls-cluster yes` for the cluster bus, `tls-replication yes`), certificates from
//! a [`crate::ca::TestCa`].

use std::process::Command;
use std::time::{Duration, Instant};

use crate::ca::TestCa;
use crate::services::{Redis, find_binary};

/// How long the cluster may take to agree on its slots.
const CLUSTER_START: Duration = Duration::from_secs(30);

/// Three masters, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    /// TLS only, with this CA's certificates ([`RedisCluster::start_tls`]).
    tls: Option<TestCa>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(None)
    }

    /// Three masters that speak TLS only, to clients and to each other.
    pub fn start_tls(ca: &TestCa) -> RedisCluster {
        RedisCluster::start_with(Some(ca.clone()))
    }

    fn start_with(tls: Option<TestCa>) -> RedisCluster {
        let mut nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::install(Vec::new(), tls.clone()))
            .collect();
        for node in &mut nodes {
            node.port = crate::services::free_cluster_port();
            let conf = node.dir().join("nodes.conf");
            let mut extra = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                conf.display().to_string(),
                // A dead master is noticed within this (the cluster then reports
                // its slots down; without replicas nothing takes them over).
                "--cluster-node-timeout".into(),
                "2000".into(),
                // The other masters keep serving their slots while one is down.
                "--cluster-require-full-coverage".into(),
                "no".into(),
            ];
            if tls.is_some() {
                // The cluster bus (node to node) and replication over TLS too.
                extra
                    .extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            }
            node.set_extra(extra);
            node.start_again();
        }
        let mut create = Command::new(find_binary(&["redis-cli"]));
        if let Some(ca) = &tls {
            create.arg("--tls").arg("--cacert").arg(ca.ca());
        }
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        // Bounded: `--cluster create` waits for the nodes to meet, forever if they
        // cannot (e.g. a TLS cluster bus that refuses their certificates).
        let child = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run redis-cli --cluster create");
        let out = wait_output(child, CLUSTER_START);
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, tls };
        let deadline = Instant::now() + CLUSTER_START;
        while !cluster.nodes.iter().all(cluster_ok) {
            assert!(Instant::now() < deadline, "cluster did not reach state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, or for a TLS
    /// cluster `rediss+cluster://…?ssl-ca=PATH`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        match &self.tls {
            Some(ca) => format!(
                "rediss+cluster://{}?ssl-ca={}",
                hosts.join(","),
                ca.ca().display()
            ),
            None => format!("redis+cluster://{}", hosts.join(",")),
        }
    }

    /// A cluster-aware client connection (follows MOVED redirects).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.url())
            .collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.tls {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca.ca()).expect("read CA")),
            });
        }
        builder
            .build()
            .expect("cluster client")
            .get_connection()
            .expect("connect to the cluster")
    }

    /// Index of the node that serves `key`'s slot.
    pub fn node_of(&self, key: &str) -> usize {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.running() {
                continue;
            }
            let r: redis::RedisResult<redis::Value> =
                redis::cmd("GET").arg(key).query(&mut node.conn());
            match r {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {}
                _ => return i,
            }
        }
        panic!("no running node serves {key}");
    }

    /// For each key, the index of the master that owns its slot, dead or alive,
    /// as a running node sees it (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`): a killed
    /// master keeps its slots.
    pub fn masters_of(&self, keys: &[String]) -> Vec<usize> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a running node");
        let mut conn = node.conn();
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .expect("CLUSTER SLOTS");
        // (first slot, last slot, node index)
        let mut owners = Vec::new();
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            if let (
                Some(redis::Value::Int(first)),
                Some(redis::Value::Int(last)),
                Some(redis::Value::Array(master)),
            ) = (fields.first(), fields.get(1), fields.get(2))
                && let Some(redis::Value::Int(port)) = master.get(1)
                && let Some(i) = self.nodes.iter().position(|n| i64::from(n.port) == *port)
            {
                owners.push((*first, *last, i));
            }
        }
        keys.iter()
            .map(|key| {
                let slot: i64 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query(&mut conn)
                    .expect("CLUSTER KEYSLOT");
                owners
                    .iter()
                    .find(|(first, last, _)| (*first..=*last).contains(&slot))
                    .map(|(_, _, i)| *i)
                    .unwrap_or_else(|| panic!("no master owns the slot of {key}"))
            })
            .collect()
    }

    /// SIGKILLs node `i` (a crashed master: its slots are down, the others serve on).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }
}

/// The output of `child`, killed if it runs longer than `limit`.
fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait for redis-cli").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("redis-cli output")
}

fn cluster_ok(node: &Redis) -> bool {
    let info: redis::RedisResult<String> =
        redis::cmd("CLUSTER").arg("INFO").query(&mut node.conn());
    // Every node must know all three and all slots (with full coverage off, a node
    // alone also says `ok`).
    info.is_ok_and(|i| {
        i.contains("cluster_state:ok")
            && i.contains("cluster_known_nodes:3")
            && i.contains("cluster_slots_assigned:16384")
    })
}
