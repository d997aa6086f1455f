//! The SMTP client side of one connection to a destination host.
//!
//! Owns: connecting, the greeting, EHLO (HELO fallback), opportunistic STARTTLS,
//! one mail transaction (pipelined when offered, several recipients), RSET and QUIT,
//! each step under its RFC 5321 §4.5.3.2 timeout. Must not: decide what a reply means
//! for the queue (the worker does), or retry anything by itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::payload::Payload;
use smtp_wire::Extensions;
use smtp_wire::reply::{MAX_REPLY_LINE, Reply, ReplyError, ReplyParser};

/// Timeouts, from `[delivery]`.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// Greeting, EHLO, MAIL, RCPT, DATA, RSET (RFC 5321: 5 minutes).
    pub command: Duration,
    /// Sending the message and waiting for the final reply (RFC 5321: 10 minutes).
    pub data: Duration,
}

/// Where to connect: the MX host name (for logs and TLS SNI) and one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]:{}", self.host, self.addr.ip(), self.addr.port())
    }
}

/// Why a connection could not be used. All of these mean "this host, now": the
/// caller may try another host; none says anything final about a recipient except
/// a permanent greeting/EHLO reply, which the caller reads from `Refused`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("protocol error: {0}")]
    Protocol(#[from] ReplyError),
    #[error("{stage} refused: {reply}")]
    Refused { stage: &'static str, reply: Reply },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// What the server said to one transaction.
#[derive(Debug, Clone)]
pub enum TxOutcome {
    /// MAIL FROM was not accepted: applies to every recipient.
    MailRefused(Reply),
    /// Per recipient: its RCPT reply; and the DATA outcome (None when no recipient
    /// was accepted, so DATA was not attempted or was refused as expected).
    Done {
        rcpt: Vec<Reply>,
        /// The reply to DATA (a non-354 one) or to the final dot.
        data: Option<Reply>,
    },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STARTTLS moves the socket into the TLS session (or after that failed).
    Closed,
}

impl Stream {
    fn io(&mut self) -> std::io::Result<&mut dyn Io> {
        match self {
            Self::Plain(s) => Ok(s),
            Self::Tls(s) => Ok(s.as_mut()),
            Self::Closed => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection closed after a failed TLS handshake",
            )),
        }
    }
}

/// One open SMTP session, ready for a transaction.
pub struct SmtpClient {
    stream: Stream,
    buf: Vec<u8>,
    pub endpoint: Endpoint,
    pub ext: Extensions,
    pub tls: bool,
    /// Transactions completed on this connection (for the reuse limit).
    pub transactions: u32,
    /// The message of the current transaction has started to go out: after a
    /// failure from here on, the server may have accepted it.
    pub data_started: bool,
    timeouts: Timeouts,
    /// Counts this connection in `outbound_connections_open` while it lives.
    _open: crate::metrics::OpenConnection,
}

/// Opportunistic TLS settings: `None` = never STARTTLS.
pub type Tls = Option<Arc<TlsConnector>>;

/// Connects from `source` (bound before connect, port chosen by the kernel) or from
/// wherever the routing table says.
async fn tcp_connect(
    addr: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

impl SmtpClient {
    /// Connects, reads the greeting, says EHLO (HELO if EHLO is refused), and
    /// upgrades with STARTTLS when offered and `tls` is set.
    /// `source` binds the local address first (a sending pool's address).
    pub async fn connect(
        endpoint: &Endpoint,
        source: Option<std::net::IpAddr>,
        helo_name: &str,
        tls: &Tls,
        timeouts: &Timeouts,
    ) -> Result<Self, ClientError> {
        let tcp = timeout(timeouts.connect, tcp_connect(endpoint.addr, source))
            .await
            .map_err(|_| ClientError::Timeout("connect"))?
            .map_err(|e| ClientError::Io(format!("connect to {endpoint}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut client = Self {
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(1024),
            endpoint: endpoint.clone(),
            ext: Extensions::default(),
            tls: false,
            transactions: 0,
            data_started: false,
            timeouts: timeouts.clone(),
            _open: crate::metrics::OpenConnection::new(),
        };
        let greeting = client.read_reply("greeting", timeouts.command).await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused {
                stage: "greeting",
                reply: greeting,
            });
        }
        client.hello(helo_name).await?;
        if let (Some(connector), true) = (tls, client.ext.starttls) {
            client.send(b"STARTTLS\r\n").await?;
            let reply = client.read_reply("STARTTLS", timeouts.command).await?;
            if reply.code == 220 {
                client.start_tls(connector).await?;
                client.hello(helo_name).await?;
            }
            // A refused STARTTLS leaves the session in plaintext; opportunistic TLS
            // goes on without it, as Postfix's "may" level does.
        }
        Ok(client)
    }

    async fn hello(&mut self, helo_name: &str) -> Result<(), ClientError> {
        self.send(format!("EHLO {helo_name}\r\n").as_bytes())
            .await?;
        let reply = self.read_reply("EHLO", self.timeouts.command).await?;
        if reply.code == 250 {
            self.ext = Extensions::from_ehlo(&reply);
            return Ok(());
        }
        if reply.code == 421 || reply.code == 554 {
            return Err(ClientError::Refused {
                stage: "EHLO",
                reply,
            });
        }
        self.send(format!("HELO {helo_name}\r\n").as_bytes())
            .await?;
        let reply = self.read_reply("HELO", self.timeouts.command).await?;
        if reply.code != 250 {
            return Err(ClientError::Refused {
                stage: "HELO",
                reply,
            });
        }
        self.ext = Extensions::default();
        Ok(())
    }

    async fn start_tls(&mut self, connector: &TlsConnector) -> Result<(), ClientError> {
        // Anything the server sent after its 220 would be a plaintext injection
        // (CVE-2011-0411's mirror image): refuse to carry it into the TLS session.
        if !self.buf.is_empty() {
            return Err(ClientError::Tls("data after the STARTTLS reply".into()));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ClientError::Tls("STARTTLS inside TLS".into()));
        };
        let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
            .unwrap_or_else(|_| {
                rustls::pki_types::ServerName::IpAddress(self.endpoint.addr.ip().into())
            });
        let tls = timeout(self.timeouts.command, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake"))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.stream = Stream::Tls(Box::new(tls));
        self.tls = true;
        crate::metrics::get().tls_used.inc();
        Ok(())
    }

    /// Runs one transaction for `recipients` (all of one domain). Pipelined when the
    /// server offers PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write.
    pub async fn transaction(
        &mut self,
        sender: &str,
        recipients: &[String],
        payload: &Payload,
    ) -> Result<TxOutcome, ClientError> {
        let mut mail = format!("MAIL FROM:<{sender}>");
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", payload.size()));
        }
        if payload.eight_bit && self.ext.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        mail.push_str("\r\n");
        self.data_started = false;
        let cmd = self.timeouts.command;
        let outcome = if self.ext.pipelining {
            let mut batch = mail.into_bytes();
            for r in recipients {
                batch.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.send(&batch).await?;
            let mail_reply = self.read_reply("MAIL reply", cmd).await?;
            let mut rcpt = Vec::with_capacity(recipients.len());
            for _ in recipients {
                rcpt.push(self.read_reply("RCPT reply", cmd).await?);
            }
            let data_reply = self.read_reply("DATA reply", cmd).await?;
            if !mail_reply.is_positive() {
                if data_reply.code == 354 {
                    self.abort_data().await?;
                }
                TxOutcome::MailRefused(mail_reply)
            } else {
                let accepted = rcpt.iter().any(Reply::is_positive);
                if data_reply.code != 354 {
                    TxOutcome::Done {
                        rcpt,
                        data: accepted.then_some(data_reply),
                    }
                } else if !accepted {
                    // A server that opens DATA with no recipient: end it empty.
                    self.abort_data().await?;
                    TxOutcome::Done { rcpt, data: None }
                } else {
                    let data = self.send_payload(payload).await?;
                    TxOutcome::Done {
                        rcpt,
                        data: Some(data),
                    }
                }
            }
        } else {
            self.send(mail.as_bytes()).await?;
            let mail_reply = self.read_reply("MAIL reply", cmd).await?;
            if !mail_reply.is_positive() {
                TxOutcome::MailRefused(mail_reply)
            } else {
                let mut rcpt = Vec::with_capacity(recipients.len());
                for r in recipients {
                    self.send(format!("RCPT TO:<{r}>\r\n").as_bytes()).await?;
                    rcpt.push(self.read_reply("RCPT reply", cmd).await?);
                }
                if !rcpt.iter().any(Reply::is_positive) {
                    TxOutcome::Done { rcpt, data: None }
                } else {
                    self.send(b"DATA\r\n").await?;
                    let data_reply = self.read_reply("DATA reply", cmd).await?;
                    if data_reply.code != 354 {
                        TxOutcome::Done {
                            rcpt,
                            data: Some(data_reply),
                        }
                    } else {
                        let data = self.send_payload(payload).await?;
                        TxOutcome::Done {
                            rcpt,
                            data: Some(data),
                        }
                    }
                }
            }
        };
        let finished = matches!(&outcome, TxOutcome::Done { data: Some(d), .. } if d.code != 354);
        if !finished {
            // The transaction did not end with a final DATA reply: reset it so the
            // connection can carry the next one.
            self.send(b"RSET\r\n").await?;
            let reply = self.read_reply("RSET reply", cmd).await?;
            if reply.code != 250 {
                return Err(ClientError::Refused {
                    stage: "RSET",
                    reply,
                });
            }
        }
        self.transactions += 1;
        Ok(outcome)
    }

    async fn send_payload(&mut self, payload: &Payload) -> Result<Reply, ClientError> {
        self.data_started = true;
        timeout(self.timeouts.data, async {
            self.stream.io()?.write_all(payload.wire()).await
        })
        .await
        .map_err(|_| ClientError::Timeout("sending the message"))?
        .map_err(|e| ClientError::Io(format!("sending the message: {e}")))?;
        self.read_reply("end of data reply", self.timeouts.data)
            .await
    }

    async fn abort_data(&mut self) -> Result<(), ClientError> {
        self.send(b".\r\n").await?;
        self.read_reply("end of data reply", self.timeouts.command)
            .await
            .map(drop)
    }

    /// Says QUIT and closes, without waiting long for the answer.
    pub async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply("QUIT reply", Duration::from_secs(2)).await;
        }
        if let Ok(io) = self.stream.io() {
            let _ = io.shutdown().await;
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        timeout(self.timeouts.command, async {
            let io = self.stream.io()?;
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout("sending a command"))?
        .map_err(|e| ClientError::Io(format!("write to {}: {e}", self.endpoint)))
    }

    async fn read_reply(
        &mut self,
        what: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        let mut parser = ReplyParser::default();
        timeout(limit, async {
            loop {
                while let Some(end) = memchr::memchr(b'\n', &self.buf) {
                    let line_end = if end > 0 && self.buf.get(end - 1) == Some(&b'\r') {
                        end - 1
                    } else {
                        end
                    };
                    let parsed = parser.line(self.buf.get(..line_end).unwrap_or_default());
                    self.buf.drain(..=end);
                    if let Some(reply) = parsed? {
                        return Ok(reply);
                    }
                }
                if self.buf.len() > MAX_REPLY_LINE {
                    return Err(ClientError::Protocol(ReplyError::LineTooLong));
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .stream
                    .io()
                    .map_err(|e| ClientError::Io(e.to_string()))?
                    .read(&mut chunk)
                    .await
                    .map_err(|e| ClientError::Io(format!("read from {}: {e}", self.endpoint)))?;
                if n == 0 {
                    return Err(ClientError::Io(format!(
                        "{} closed the connection before the {what}",
                        self.endpoint
                    )));
                }
                self.buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(what))?
    }
}
