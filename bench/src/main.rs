//! `smtp-bench`: a minimal SMTP load generator.
//!
//! One OS thread per connection (simple and honest for up to a few hundred
//! connections; the event-driven generator with the full report is its own issue).
//! Every run is bounded by a message count and a duration, whichever ends first.
//!
//! Modes:
//! - `send` (default): `--connections` sessions each send messages of `--size` bytes
//!   over one connection (or a new connection per message with `--per-connection 1`),
//!   and the report gives messages/s and end-of-DATA → 250 latency percentiles.
//! - `--idle N`: opens N connections, reads each greeting, holds them for `--hold`
//!   seconds (so the server's RSS can be read), then QUITs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "smtp-bench", about = "SMTP load generator")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:2525")]
    server: SocketAddr,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Messages in total (upper bound).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Seconds at most.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Message size in bytes (approximate, headers included).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per connection before reconnecting (0 = never reconnect).
    #[arg(long, default_value_t = 0)]
    per_connection: u64,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920 pipelining).
    #[arg(long)]
    pipelining: bool,
    /// Idle mode: open this many connections and hold them.
    #[arg(long)]
    idle: Option<usize>,
    /// Idle mode: seconds to hold the connections.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// Use STARTTLS on every connection (the server certificate is not verified:
    /// this is a load generator, not a mail client).
    #[arg(long)]
    starttls: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.idle {
        Some(n) => idle(&args, n),
        None => send(&args),
    }
}

fn idle(args: &Args, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let stream = TcpStream::connect(args.server).with_context(|| format!("connection {i}"))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.starts_with("220") {
            bail!("connection {i}: greeting {line:?}");
        }
        conns.push(reader);
    }
    println!(
        "idle: {n} connections open in {:.2}s; holding {}s",
        started.elapsed().as_secs_f64(),
        args.hold
    );
    std::thread::sleep(Duration::from_secs(args.hold));
    for mut c in conns {
        let _ = c.get_mut().write_all(b"QUIT\r\n");
    }
    Ok(())
}

fn message(size: usize, seq: u64) -> Vec<u8> {
    let mut m = format!(
        "From: bench <bench@example.org>\r\nTo: <sink@example.com>\r\nSubject: bench {seq}\r\nMessage-ID: <{seq}@bench.example.org>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

struct Totals {
    sent: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn send(args: &Args) -> anyhow::Result<()> {
    let totals = Arc::new(Totals {
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let claimed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..args.connections {
        let (totals, claimed, stop) = (totals.clone(), claimed.clone(), stop.clone());
        let (server, size, limit, per_conn, pipelining, starttls) = (
            args.server,
            args.size,
            args.messages,
            args.per_connection,
            args.pipelining,
            args.starttls,
        );
        threads.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            'outer: while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(mut s) = Session::open(server, starttls) else {
                    totals.failed.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let mut on_this = 0;
                loop {
                    let seq = claimed.fetch_add(1, Ordering::Relaxed);
                    if seq >= limit || Instant::now() >= deadline {
                        stop.store(true, Ordering::Relaxed);
                        let _ = s.quit();
                        break 'outer;
                    }
                    match s.transaction(&message(size, seq), pipelining) {
                        Ok(us) => {
                            lat.push(us);
                            totals.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            totals.failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    on_this += 1;
                    if per_conn != 0 && on_this >= per_conn {
                        let _ = s.quit();
                        break;
                    }
                }
            }
            if let Ok(mut all) = totals.latencies_us.lock() {
                all.extend(lat);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let sent = totals.sent.load(Ordering::Relaxed);
    let failed = totals.failed.load(Ordering::Relaxed);
    let mut lat = totals
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or(0)
    };
    println!(
        "sent={sent} failed={failed} secs={secs:.2} msgs_per_s={:.0} MB_per_s={:.2} latency_us(end-of-DATA->250) p50={} p90={} p99={} p99.9={}",
        sent as f64 / secs,
        sent as f64 * args.size as f64 / secs / 1e6,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}

/// A plain or TLS byte stream.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Session {
    reader: BufReader<Box<dyn Stream>>,
    line: String,
}

impl Session {
    fn open(server: SocketAddr, starttls: bool) -> anyhow::Result<Session> {
        let stream = TcpStream::connect(server)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut s = Session {
            reader: BufReader::new(Box::new(stream.try_clone()?)),
            line: String::new(),
        };
        s.expect(220)?;
        s.reader
            .get_mut()
            .write_all(b"EHLO bench.example.org\r\n")?;
        s.expect(250)?;
        if starttls {
            s.reader.get_mut().write_all(b"STARTTLS\r\n")?;
            s.expect(220)?;
            let name = rustls::pki_types::ServerName::try_from("smtp.bench.invalid")?;
            let conn = rustls::ClientConnection::new(tls_config(), name)?;
            s.reader = BufReader::new(Box::new(rustls::StreamOwned::new(conn, stream)));
            s.reader
                .get_mut()
                .write_all(b"EHLO bench.example.org\r\n")?;
            s.expect(250)?;
        }
        Ok(s)
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    fn expect(&mut self, code: u16) -> anyhow::Result<()> {
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                bail!("connection closed");
            }
            let got: u16 = self.line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if got != code {
                bail!("expected {code}, got {:?}", self.line);
            }
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    /// One transaction; returns the end-of-DATA → 250 latency in µs.
    fn transaction(&mut self, msg: &[u8], pipelining: bool) -> anyhow::Result<u64> {
        let envelope = b"MAIL FROM:<bench@example.org>\r\nRCPT TO:<sink@example.com>\r\nDATA\r\n";
        if pipelining {
            self.reader.get_mut().write_all(envelope)?;
            self.expect(250)?;
            self.expect(250)?;
            self.expect(354)?;
        } else {
            for (cmd, code) in [
                (&b"MAIL FROM:<bench@example.org>\r\n"[..], 250),
                (b"RCPT TO:<sink@example.com>\r\n", 250),
                (b"DATA\r\n", 354),
            ] {
                self.reader.get_mut().write_all(cmd)?;
                self.expect(code)?;
            }
        }
        let mut body = Vec::with_capacity(msg.len() + 5);
        body.extend_from_slice(msg);
        body.extend_from_slice(b".\r\n");
        self.reader.get_mut().write_all(&body)?;
        let t = Instant::now();
        self.expect(250)?;
        Ok(t.elapsed().as_micros() as u64)
    }

    fn quit(&mut self) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(b"QUIT\r\n")?;
        self.expect(221)
    }
}

/// A client configuration that accepts any server certificate (benchmarks only).
fn tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
                        .with_no_client_auth()
                });
            std::sync::Arc::new(config.unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
