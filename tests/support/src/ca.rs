//! A private certificate authority for the data-tier TLS tests, made with the
//! `openssl` command line in a temp dir: a CA certificate and one server
//! certificate for `127.0.0.1` / `localhost` signed by it. Cloning shares the dir.
//! The certificate is good for clients too (`clientAuth`): the nodes of a TLS
//! Redis Cluster present it to each other on the cluster bus, which always checks
//! the client's certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tempfile::TempDir;

/// The CA and a server certificate it signed (PEM files in a temp dir).
#[derive(Clone)]
pub struct TestCa {
    dir: Arc<TempDir>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA named `name` and a server certificate for 127.0.0.1 and localhost.
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let subject = format!("/CN={name}");
        openssl(
            d,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                "ca.pem", "-days", "2", "-subj", &subject,
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write extensions");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        // mariadbd and redis-server read the key as whoever they run as.
        use std::os::unix::fs::PermissionsExt;
        for f in ["server.key", "server.pem", "ca.pem"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        TestCa { dir: Arc::new(dir) }
    }

    /// The CA certificate (what clients trust).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}
