//! A private three-master Redis Cluster on loopback, built from the Redis instances
//! of [`crate::services`]: each node runs with `--cluster-enabled yes` and its own
//! `nodes.conf` in its temp dir, then `redis-cli --cluster create … --cluster-replicas
//! 0 --cluster-yes` assigns the 16384 slots. Dropping it kills every node.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::services::{Redis, find_binary};

/// How long the cluster may take to agree on its slots.
const CLUSTER_START: Duration = Duration::from_secs(30);

/// Three masters, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let mut nodes: Vec<Redis> = (0..3).map(|_| Redis::install(Vec::new(), None)).collect();
        for node in &mut nodes {
            let conf = node.dir().join("nodes.conf");
            node.set_extra(vec![
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
            ]);
            node.start_again();
        }
        let mut create = Command::new(find_binary(&["redis-cli"]));
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + CLUSTER_START;
        while !cluster.nodes.iter().all(cluster_ok) {
            assert!(Instant::now() < deadline, "cluster did not reach state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// A cluster-aware client connection (follows MOVED redirects).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.url())
            .collect();
        redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(10))
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

    /// SIGKILLs node `i` (a crashed master: its slots are down, the others serve on).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }
}

fn cluster_ok(node: &Redis) -> bool {
    let info: redis::RedisResult<String> =
        redis::cmd("CLUSTER").arg("INFO").query(&mut node.conn());
    info.is_ok_and(|i| i.contains("cluster_state:ok"))
}
