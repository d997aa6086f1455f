//! The sessions: one tokio task per connection, each running transactions until
//! the shared message budget or the deadline is spent.
//!
//! Owns: connecting (STARTTLS when asked), the SMTP dialogue of a transaction
//! (pipelined or step by step), pacing to `--rate`, and the per-session counters.
//! Must not: print (the report does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::Args;
use crate::report::{Report, Stats};

/// The realistic size mix (percent, bytes), see `--size-mix`.
const MIX: &[(u64, usize)] = &[
    (60, 2 * 1024),
    (25, 10 * 1024),
    (10, 50 * 1024),
    (4, 200 * 1024),
    (1, 1024 * 1024),
];

/// How long one reply may take before the session counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

struct Shared {
    args: Args,
    next: AtomicU64,
    deadline: Instant,
    /// Paced runs: every session passes this once, after its first connection
    /// attempt, so the schedule does not start while sessions are still connecting.
    ready: Barrier,
    /// When the schedule of a paced run starts (the first session past `ready`).
    schedule_start: OnceLock<Instant>,
    tls: Option<TlsConnector>,
    /// Message bodies (dot-stuffed, with the final `.` line) by size; one per size
    /// class with `--size-mix`.
    bodies: Vec<Arc<Vec<u8>>>,
    /// Envelope commands of one transaction (MAIL and the RCPTs), prebuilt.
    envelope: Vec<u8>,
    rcpt_count: usize,
}

impl Shared {
    /// The next message's sequence number, while the budget and the time last.
    fn take(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        (seq < self.args.messages).then_some(seq)
    }

    fn body(&self, seq: u64) -> &Arc<Vec<u8>> {
        if self.bodies.len() == 1 {
            return &self.bodies[0];
        }
        // Spread the classes evenly over the sequence (deterministic, no RNG).
        let mut point = (seq.wrapping_mul(37)) % 100;
        for (i, (percent, _)) in MIX.iter().enumerate() {
            if point < *percent {
                return &self.bodies[i];
            }
            point -= percent;
        }
        &self.bodies[0]
    }
}

/// A message of about `size` bytes, CRLF lines of at most 78 characters, dots
/// stuffed, ending with the terminating `.` line.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@bench.invalid\r\nTo: sink@example.com\r\nSubject: smtp-bench\r\nMessage-ID: <bench@bench.invalid>\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog while the load generator counts.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

pub async fn send(args: Args) -> anyhow::Result<Report> {
    let tls = if args.starttls {
        Some(TlsConnector::from(
            smtp_wire::tls_client::unverified_client_config()?,
        ))
    } else {
        None
    };
    let bodies = if args.size_mix {
        MIX.iter()
            .map(|(_, size)| Arc::new(message(*size)))
            .collect()
    } else {
        vec![Arc::new(message(args.size))]
    };
    let mut envelope = b"MAIL FROM:<bench@bench.invalid>\r\n".to_vec();
    for i in 0..args.recipients {
        envelope.extend_from_slice(format!("RCPT TO:<user{i}@{}>\r\n", args.domain).as_bytes());
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + Duration::from_secs(args.duration),
        next: AtomicU64::new(0),
        ready: Barrier::new(args.connections),
        schedule_start: OnceLock::new(),
        tls,
        bodies,
        envelope,
        rcpt_count: args.recipients,
        args,
    });
    let mut sessions = JoinSet::new();
    for _ in 0..shared.args.connections {
        sessions.spawn(session(shared.clone()));
    }
    let mut total = Stats::new();
    while let Some(done) = sessions.join_next().await {
        total.merge(&done?);
    }
    Ok(Report {
        stats: total,
        elapsed: start.elapsed(),
    })
}

async fn session(shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::new();
    // A paced schedule that started with the first session would find a backlog of
    // due messages once all N sessions had connected (1,000 greetings and EHLOs take
    // a while) and send it as one burst at full speed: the latency measured at "half
    // the peak rate" would be that of a burst. So paced runs start the clock here.
    let mut before_schedule = shared.args.rate > 0.0;
    'connections: loop {
        if Instant::now() >= shared.deadline
            || shared.next.load(Ordering::Relaxed) >= shared.args.messages
        {
            break;
        }
        let opened = Conn::open(&shared).await;
        if std::mem::take(&mut before_schedule) {
            // Once per session, whether it connected or not, so no one waits forever.
            shared.ready.wait().await;
            shared.schedule_start.get_or_init(Instant::now);
        }
        let mut conn = match opened {
            Ok(c) => c,
            Err(_) => {
                stats.connection_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.connections += 1;
        let mut on_this = 0u64;
        while let Some(seq) = shared.take() {
            if shared.args.rate > 0.0 {
                let start = *shared.schedule_start.get_or_init(Instant::now);
                let due = start + Duration::from_secs_f64(seq as f64 / shared.args.rate);
                tokio::time::sleep_until(due.into()).await;
            }
            if conn.transaction(&shared, seq, &mut stats).await.is_err() {
                stats.connection_errors += 1;
                continue 'connections;
            }
            on_this += 1;
            if shared.args.per_connection > 0 && on_this >= shared.args.per_connection {
                conn.quit().await;
                continue 'connections;
            }
        }
        conn.quit().await;
        break;
    }
    stats
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(shared: &Shared) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(shared.args.server).await?;
        tcp.set_nodelay(true)?;
        let mut c = Conn {
            io: Box::new(tcp),
            buf: Vec::with_capacity(4096),
        };
        c.expect(220).await.context("greeting")?;
        c.io.write_all(b"EHLO bench.invalid\r\n").await?;
        c.expect(250).await.context("EHLO")?;
        if let Some(tls) = &shared.tls {
            c.io.write_all(b"STARTTLS\r\n").await?;
            c.expect(220).await.context("STARTTLS")?;
            let Conn { io, .. } = c;
            // The plain stream goes into the TLS session; `io` is a boxed TcpStream.
            let tcp = BoxedTcp(io);
            let name = rustls::pki_types::ServerName::try_from("smtp.bench.invalid")?;
            let stream = tls.connect(name, tcp).await?;
            c = Conn {
                io: Box::new(stream),
                buf: Vec::with_capacity(4096),
            };
            c.io.write_all(b"EHLO bench.invalid\r\n").await?;
            c.expect(250).await.context("EHLO after STARTTLS")?;
        }
        Ok(c)
    }

    async fn transaction(
        &mut self,
        shared: &Shared,
        seq: u64,
        stats: &mut Stats,
    ) -> anyhow::Result<()> {
        let body = shared.body(seq);
        let began = Instant::now();
        let n = shared.rcpt_count;
        let (mail, rcpt_ok, data) = if shared.args.pipelining {
            let mut batch = Vec::with_capacity(shared.envelope.len() + 6);
            batch.extend_from_slice(&shared.envelope);
            batch.extend_from_slice(b"DATA\r\n");
            self.io.write_all(&batch).await?;
            let mail = self.reply().await?;
            let mut ok = 0;
            for _ in 0..n {
                if (250..=251).contains(&self.reply().await?) {
                    ok += 1;
                }
            }
            (mail, ok, self.reply().await?)
        } else {
            let (mail_line, rcpts) = shared
                .envelope
                .split_at(memchr::memchr(b'\n', &shared.envelope).map_or(0, |i| i + 1));
            self.io.write_all(mail_line).await?;
            let mail = self.reply().await?;
            let mut ok = 0;
            if mail == 250 {
                for line in rcpts.split_inclusive(|b| *b == b'\n') {
                    self.io.write_all(line).await?;
                    if (250..=251).contains(&self.reply().await?) {
                        ok += 1;
                    }
                }
            }
            let data = if mail == 250 && ok > 0 {
                self.io.write_all(b"DATA\r\n").await?;
                self.reply().await?
            } else {
                0
            };
            (mail, ok, data)
        };
        if data != 354 {
            let code = if mail != 250 {
                mail
            } else if rcpt_ok == 0 {
                550
            } else {
                data
            };
            stats.code(code);
            self.io.write_all(b"RSET\r\n").await?;
            self.reply().await?;
            return Ok(());
        }
        self.io.write_all(body).await?;
        let sent = Instant::now();
        let code = self.reply().await?;
        let done = Instant::now();
        stats.code(code);
        if (200..300).contains(&code) {
            stats.delivered(body.len() as u64, done - sent, done - began);
        }
        Ok(())
    }

    async fn quit(&mut self) {
        if self.io.write_all(b"QUIT\r\n").await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.reply()).await;
        }
        let _ = self.io.shutdown().await;
    }

    async fn expect(&mut self, code: u16) -> anyhow::Result<()> {
        let got = self.reply().await?;
        if got != code {
            bail!("expected {code}, got {got}");
        }
        Ok(())
    }

    /// Reads one (possibly multi-line) reply; returns its code.
    async fn reply(&mut self) -> anyhow::Result<u16> {
        tokio::time::timeout(REPLY_TIMEOUT, async {
            let mut parser = smtp_wire::ReplyParser::default();
            loop {
                while let Some(end) = memchr::memchr(b'\n', &self.buf) {
                    let line = self.buf[..end]
                        .strip_suffix(b"\r")
                        .unwrap_or(&self.buf[..end]);
                    let parsed = parser.line(line)?;
                    self.buf.drain(..=end);
                    if let Some(reply) = parsed {
                        return Ok(reply.code);
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed");
                }
                self.buf.extend_from_slice(&chunk[..n]);
                if self.buf.len() > 64 * 1024 {
                    bail!("reply too long");
                }
            }
        })
        .await
        .context("reply timed out")?
    }
}

/// The boxed plain stream, as a concrete type tokio-rustls can wrap.
struct BoxedTcp(Box<dyn Io>);

impl AsyncRead for BoxedTcp {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoxedTcp {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// Opens `n` connections, reads each greeting, holds them, then QUITs.
pub async fn idle(args: &Args, n: usize, hold: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    // In waves, so the server's listen backlog is not the thing being measured.
    for wave in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut set = JoinSet::new();
        for _ in wave {
            let server = args.server;
            set.spawn(async move {
                let tcp = TcpStream::connect(server).await?;
                let mut c = Conn {
                    io: Box::new(tcp),
                    buf: Vec::new(),
                };
                c.expect(220).await?;
                anyhow::Ok(c)
            });
        }
        while let Some(c) = set.join_next().await {
            conns.push(c??);
        }
    }
    println!(
        "opened {} idle connections in {:.2}s; holding them {}s",
        conns.len(),
        started.elapsed().as_secs_f64(),
        hold.as_secs()
    );
    tokio::time::sleep(hold).await;
    for mut c in conns {
        c.quit().await;
    }
    Ok(())
}
