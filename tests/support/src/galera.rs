//! A private three-node MariaDB Galera cluster on loopback for the scale-out suites:
//! each node is a [`Mariadb`] (its own temp datadir, socket, SQL port) with its own
//! group-communication, IST and SST ports; the first bootstraps the cluster
//! (`--wsrep-new-cluster`), the others join by state transfer (`rsync`). Dropping the
//! cluster kills every node. Needs Debian's `galera-4`, `mariadb-server` and `rsync`
//! (`scripts/test` installs them).
//!
//! Galera replicates at commit: a transaction that touched rows another node changed
//! meanwhile fails certification with error 1213 (the client must run it again),
//! `SELECT … FOR UPDATE` locks only on the node that runs it, and auto-increment
//! values are interleaved by node (`wsrep_auto_increment_control`), so two nodes never
//! hand out the same id.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::services::{Mariadb, find_binary, free_port};

/// The provider library of Debian's `galera-4`.
pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
/// How long a joining node may take (state transfer included) to be `Synced`.
const JOIN: Duration = Duration::from_secs(90);

/// Three Galera nodes sharing one database [`crate::services::DB_NAME`].
pub struct Galera {
    pub nodes: Vec<Mariadb>,
}

impl Galera {
    /// Starts a three-node cluster and waits until every node is `Synced` and the
    /// cluster has three members.
    pub fn start() -> Galera {
        Galera::start_n(3)
    }

    pub fn start_n(n: usize) -> Galera {
        assert!(
            std::path::Path::new(PROVIDER).exists(),
            "{PROVIDER} is missing: run scripts/test (it installs galera-4)"
        );
        let gcomm: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let address = gcomm
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = gcomm
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                let (ist, sst) = (free_port(), free_port());
                let make = if i == 0 {
                    Mariadb::install
                } else {
                    Mariadb::empty
                };
                make(vec![
                    "--wsrep-on=ON".into(),
                    format!("--wsrep-provider={PROVIDER}"),
                    format!("--wsrep-cluster-address=gcomm://{address}"),
                    "--wsrep-cluster-name=test".into(),
                    format!("--wsrep-node-name=node{}", i + 1),
                    format!("--wsrep-node-address=127.0.0.1:{g}"),
                    format!(
                        "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{g};\
                         ist.recv_addr=127.0.0.1:{ist};gcache.size=64M;\
                         evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;\
                         evs.inactive_check_period=PT0.5S;evs.inactive_timeout=PT3S;\
                         evs.install_timeout=PT3S"
                    ),
                    "--wsrep-sst-method=rsync".into(),
                    format!("--wsrep-sst-receive-address=127.0.0.1:{sst}"),
                    "--wsrep-slave-threads=2".into(),
                    "--binlog-format=ROW".into(),
                    "--innodb-autoinc-lock-mode=2".into(),
                    "--default-storage-engine=InnoDB".into(),
                    "--innodb-flush-log-at-trx-commit=2".into(),
                ])
            })
            .collect();
        let mut cluster = Galera { nodes };
        // The joiners' rsync daemon (as `nobody`) copies the donor's datadir mode
        // onto its own datadir, which it may not chmod: make them equal.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                cluster.nodes[0].dir().join("data"),
                std::fs::Permissions::from_mode(0o777),
            )
            .expect("chmod datadir");
        }
        cluster.nodes[0].start_with(&["--wsrep-new-cluster"]);
        cluster.wait_synced(0);
        cluster.nodes[0].create_user();
        for i in 1..n {
            let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cluster.nodes[i].start_again();
                cluster.wait_synced(i);
            }));
            // The donor's side of a failed state transfer is in the first node's log.
            assert!(
                joined.is_ok(),
                "galera node {i} did not join; the donor's log:\n{}",
                cluster.nodes[0]
                    .log_tail(400)
                    .lines()
                    .filter(|l| l.contains("ERROR") || l.contains("rsync"))
                    .map(|l| &l[..l.len().min(300)])
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        cluster.wait_size(n);
        cluster
    }

    /// `mysql://smtpd:pw@127.0.0.1:PORT/mail` of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// SIGKILLs node `i` (a crash: the others keep quorum and go on).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop(true);
    }

    /// Starts node `i` again; it rejoins (IST or SST) and is `Synced` on return.
    pub fn restart(&mut self, i: usize) {
        // A node killed mid-write has no saved position and asks for a full state
        // transfer, which the donor's rsync (as `nobody`) writes over the files
        // this server created as root: hand them over first.
        let data = self.nodes[i].dir().join("data");
        let chown = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(&data)
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown -R nobody {}", data.display());
        self.nodes[i].start_again();
        self.wait_synced(i);
    }

    /// A status variable of node `i`, read as root over its socket.
    pub fn status(&self, i: usize, name: &str) -> String {
        let out = Command::new(find_binary(&["mariadb", "mysql"]))
            .args([
                &format!("--socket={}", self.nodes[i].socket().display()),
                "-uroot",
                "-N",
                "-B",
                "-e",
                &format!("SHOW GLOBAL STATUS LIKE '{name}'"),
            ])
            .output()
            .expect("run mariadb client");
        String::from_utf8_lossy(&out.stdout)
            .split('\t')
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    /// Waits until node `i` reports `wsrep_local_state_comment = Synced`.
    pub fn wait_synced(&self, i: usize) {
        self.wait(i, "wsrep_local_state_comment", "Synced");
    }

    /// Waits until every running node sees a cluster of `n` members.
    pub fn wait_size(&self, n: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.running() {
                self.wait(i, "wsrep_cluster_size", &n.to_string());
            }
        }
    }

    fn wait(&self, i: usize, name: &str, want: &str) {
        let deadline = Instant::now() + JOIN;
        loop {
            let got = self.status(i, name);
            if got == want {
                return;
            }
            if Instant::now() > deadline {
                let tail = self.nodes[i].log_tail(40);
                panic!("galera node {i}: {name} is {got:?}, not {want:?} after {JOIN:?}\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
