//! STARTTLS (RFC 3207) and implicit TLS with real clients: Python's ssl/smtplib,
//! swaks, openssl s_client; the plaintext-injection case; TLS required; SIGHUP
//! certificate reload; configuration errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Server, kv_value, python_kv, run_smtpd_to_exit, run_tool};

const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A self-signed certificate for `cn` (openssl, as an operator would make one).
fn make_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = run_tool(
        Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ]),
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

struct TlsServer {
    server: Server,
    _certs: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_server(extra: &str) -> TlsServer {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(certs.path(), "server", "mx.test");
    let server = Server::with_config(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nimplicit_listen = [\"127.0.0.1:0\"]\n{extra}",
        cert.display(),
        key.display()
    ));
    TlsServer {
        server,
        _certs: certs,
        cert,
        key,
    }
}

fn implicit_port(server: &Server) -> u16 {
    server.listener_port("implicit TLS")
}

/// `python3 -c SCRIPT MODE PORT`: prints `key value` lines.
const PY: &str = r#"
import socket, ssl, smtplib, sys, hashlib
mode, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "starttls":
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.test", timeout=10)
    s.ehlo()
    print("before", s.has_extn("starttls"))
    print("starttls", s.starttls(context=ctx)[0])
    s.ehlo()
    print("after", s.has_extn("starttls"))
    print("again", s.docmd("STARTTLS")[0])
    s.sendmail("a@b.example", ["tls@example.com"], b"Subject: over tls\r\n\r\nsecret\r\n")
    print("sent", 1)
    s.quit()
elif mode == "inject":
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = raw.makefile("rb")
    def reply(f):
        lines = []
        while True:
            l = f.readline()
            lines.append(l)
            if l[3:4] != b"-":
                return lines
    reply(f)
    raw.sendall(b"EHLO x\r\n")
    reply(f)
    # One write: STARTTLS plus a command that must never run.
    raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n")
    print("starttls", reply(f)[-1][:3].decode())
    tls = ctx.wrap_socket(raw, server_hostname="mx.test")
    tls.settimeout(1.5)
    try:
        data = tls.recv(1000)
        print("unsolicited", repr(data))
    except socket.timeout:
        print("unsolicited", "none")
    tls.settimeout(10)
    tls.sendall(b"RCPT TO:<x@example.com>\r\n")
    print("rcpt", tls.recv(1000)[:9].decode())
elif mode == "fingerprint":
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname="mx.test")
    print("sha256", hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
    print("greeting", tls.recv(1000)[:3].decode())
"#;

fn python(mode: &str, port: u16) -> Vec<(String, String)> {
    python_kv(&["-c", PY, mode, &port.to_string()], mode)
}

fn value<'a>(kv: &'a [(String, String)], key: &str) -> &'a str {
    kv_value(kv, key)
}

fn fingerprint(cert: &Path) -> String {
    let out = run_tool(
        Command::new("openssl").args([
            "x509",
            "-in",
            &cert.display().to_string(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ]),
        TOOL_TIMEOUT,
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

#[test]
fn python_starttls_resets_the_session_and_the_message_is_marked_tls() {
    let t = tls_server("");
    let kv = python("starttls", t.server.port());
    assert_eq!(value(&kv, "before"), "True");
    assert_eq!(value(&kv, "starttls"), "220");
    assert_eq!(
        value(&kv, "after"),
        "False",
        "STARTTLS is not offered inside TLS"
    );
    assert_eq!(value(&kv, "again"), "503");
    let rows = t.server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].is_tls, 1);
    assert!(String::from_utf8_lossy(&rows[0].mail).contains(" with ESMTPS id "));
}

/// CVE-2011-0411: a command sent in the same packet as STARTTLS is dropped, not
/// run inside the TLS session; the TLS session starts from scratch (EHLO again).
#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let t = tls_server("");
    let kv = python("inject", t.server.port());
    assert_eq!(value(&kv, "starttls"), "220");
    assert_eq!(value(&kv, "unsolicited"), "none");
    // The injected MAIL did not run: RCPT needs a MAIL first.
    assert_eq!(value(&kv, "rcpt"), "503 5.5.1");
}

#[test]
fn swaks_with_starttls_and_with_implicit_tls() {
    let t = tls_server("");
    for (flag, port, rcpt) in [
        ("--tls", t.server.port(), "starttls@example.com"),
        ("--tlsc", implicit_port(&t.server), "implicit@example.com"),
    ] {
        let out = run_tool(
            Command::new("swaks").args([
                "--server",
                &format!("127.0.0.1:{port}"),
                flag,
                "--to",
                rcpt,
                "--from",
                "a@b.example",
                "--body",
                "over tls",
            ]),
            TOOL_TIMEOUT,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "swaks {flag}: {text}");
        assert!(text.contains("TLS started"), "{text}");
    }
    let rows = t.server.rows();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.is_tls == 1));
}

#[test]
fn openssl_s_client_starttls() {
    let t = tls_server("");
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", t.server.port()),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // s_client sends its own EHLO and STARTTLS; these lines go inside TLS.
        std::thread::sleep(Duration::from_millis(500));
        stdin
            .write_all(b"EHLO s-client.test\nNOOP\nQUIT\n")
            .unwrap();
    }
    let deadline = std::time::Instant::now() + TOOL_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "s_client hung");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("250-mx.test greets s-client.test"), "{out}");
    assert!(out.contains("250 2.0.0 OK"), "{out}");
    assert!(out.contains("221 2.0.0"), "{out}");
}

#[test]
fn required_tls_refuses_mail_in_plaintext() {
    let t = tls_server("require = true\n");
    let mut c = t.server.client();
    c.ehlo("client.example");
    c.cmd_expect("MAIL FROM:<a@b.example>", 530, "5.7.0");
    c.cmd_expect("NOOP", 250, "2.0.0");
    // Over TLS it works (python's smtplib does the STARTTLS).
    let kv = python("starttls", t.server.port());
    assert_eq!(value(&kv, "sent"), "1");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let t = tls_server("");
    let port = implicit_port(&t.server);
    let old = value(&python("fingerprint", port), "sha256").to_string();
    assert_eq!(old, fingerprint(&t.cert));
    let dir = tempfile::tempdir().unwrap();
    let (cert2, key2) = make_cert(dir.path(), "new", "mx2.test");
    std::fs::copy(&cert2, &t.cert).unwrap();
    std::fs::copy(&key2, &t.key).unwrap();
    t.server.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kv = python("fingerprint", port);
        assert_eq!(value(&kv, "greeting"), "220");
        if value(&kv, "sha256") == fingerprint(&cert2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate not reloaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(t.server.stderr().contains("TLS certificate reloaded"));
}

#[test]
fn tls_configuration_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "ok", "mx.test");
    for (toml, field) in [
        (
            format!(
                "[tls]\ncert = \"{}/missing.pem\"\nkey = \"{}\"\n",
                dir.path().display(),
                key.display()
            ),
            "tls.cert",
        ),
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                cert.display()
            ),
            "tls.key",
        ),
        (format!("[tls]\ncert = \"{}\"\n", cert.display()), "tls.key"),
        ("[tls]\nrequire = true\n".to_string(), "tls.require"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &toml).unwrap();
        let args: Vec<String> = ["-c", &path.display().to_string(), "--listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (code, stderr) = run_smtpd_to_exit(&args, dir.path(), Duration::from_secs(10));
        assert_eq!(code, 2, "{toml}: {stderr}");
        assert!(stderr.contains(field), "{toml}: {stderr}");
    }
}
