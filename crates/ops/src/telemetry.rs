//! The telemetry listener: `/metrics` (Prometheus text format), `/healthz` and
//! `/readyz` on their own address, never on a port that serves mail or the API.
//!
//! Owns: one small HTTP/1.1 server on its own thread, one request per connection
//! (`Connection: close`), connections served one after another. Bounded: a request
//! head of at most [`MAX_REQUEST_BYTES`], read within [`READ_TIMEOUT`]; anything
//! else is refused with 400/404/405/431. Must not: block the daemon (it has its own
//! thread) or take a lock a hot path holds (metrics are atomics read at scrape).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::registry::Registry;

/// A request head longer than this is refused (431).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A client that does not finish its request head in this long is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` asks: `Ok` when ready, else the reason (sent with a 503).
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The endpoints served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
}

/// Why a request is refused, as an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 400: not an HTTP/1.x request line.
    BadRequest,
    /// 404: a path we do not serve.
    NotFound,
    /// 405: a served path with a method other than GET or HEAD.
    MethodNotAllowed,
    /// 431: the head is over [`MAX_REQUEST_BYTES`].
    TooLarge,
}

impl Refused {
    fn status(self) -> (u16, &'static str) {
        match self {
            Self::BadRequest => (400, "Bad Request"),
            Self::NotFound => (404, "Not Found"),
            Self::MethodNotAllowed => (405, "Method Not Allowed"),
            Self::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// A parsed request: what to serve and whether the body is wanted (not for HEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub endpoint: Endpoint,
    pub head_only: bool,
}

/// Parses a complete request head (up to and including the blank line). Only the
/// request line matters; the query string is ignored.
pub fn parse_request(head: &[u8]) -> Result<Request, Refused> {
    if head.len() > MAX_REQUEST_BYTES {
        return Err(Refused::TooLarge);
    }
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(Refused::BadRequest)?;
    let line = std::str::from_utf8(head.get(..line_end).ok_or(Refused::BadRequest)?)
        .map_err(|_| Refused::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::BadRequest);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(Refused::BadRequest);
    }
    let path = target.split('?').next().unwrap_or(target);
    let endpoint = match path {
        "/metrics" => Endpoint::Metrics,
        "/healthz" => Endpoint::Healthz,
        "/readyz" => Endpoint::Readyz,
        _ => return Err(Refused::NotFound),
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Refused::MethodNotAllowed),
    };
    Ok(Request {
        endpoint,
        head_only,
    })
}

/// The running listener.
pub struct Telemetry {
    /// The bound address (the port is known when 0 was asked for).
    pub addr: SocketAddr,
    pub thread: JoinHandle<()>,
}

/// Binds `addr` and serves `registry` and the health checks on a thread named
/// `telemetry`.
pub fn serve(addr: SocketAddr, registry: Registry, ready: ReadyCheck) -> io::Result<Telemetry> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let registry = Arc::new(registry);
    let thread = std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = handle(stream, &registry, &ready) {
                            tracing::debug!(error = %e, "telemetry request failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "telemetry accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(Telemetry { addr, thread })
}

/// Reads a request head: until the blank line, the size bound, or end of input.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_REQUEST_BYTES {
            return Ok(head);
        }
    }
}

fn handle(mut stream: TcpStream, registry: &Registry, ready: &ReadyCheck) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body, head_only) = match parse_request(&head) {
        Ok(request) => {
            let (status, content_type, body) = respond(request.endpoint, registry, ready);
            (status, content_type, body, request.head_only)
        }
        Err(refused) => {
            let status = refused.status();
            (
                status,
                "text/plain; charset=utf-8",
                format!("{}\n", status.1),
                false,
            )
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status.0,
        status.1,
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn respond(
    endpoint: Endpoint,
    registry: &Registry,
    ready: &ReadyCheck,
) -> ((u16, &'static str), &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match endpoint {
        Endpoint::Metrics => {
            let mut body = String::with_capacity(16 * 1024);
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => (
                    (200, "OK"),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => (
                    (500, "Internal Server Error"),
                    TEXT,
                    "encoding failed\n".into(),
                ),
            }
        }
        Endpoint::Healthz => ((200, "OK"), TEXT, "ok\n".into()),
        Endpoint::Readyz => match ready() {
            Ok(()) => ((200, "OK"), TEXT, "ready\n".into()),
            Err(reason) => (
                (503, "Service Unavailable"),
                TEXT,
                format!("not ready: {reason}\n"),
            ),
        },
    }
}

/// One readiness condition: whether a part works (the store answered, a claim
/// succeeded) and, when it does not, why. Set by the part, read by `/readyz`.
#[derive(Debug)]
pub struct Readiness {
    ok: std::sync::atomic::AtomicBool,
    why: std::sync::Mutex<String>,
}

impl Readiness {
    /// Not ready until the first [`Readiness::set`], for `why`.
    pub fn new(ok: bool, why: &str) -> Self {
        Self {
            ok: std::sync::atomic::AtomicBool::new(ok),
            why: std::sync::Mutex::new(why.to_owned()),
        }
    }

    /// The part worked (`Ok`) or failed (the reason). The reason is written only
    /// on failure, so success costs one atomic store.
    pub fn set(&self, result: Result<(), &str>) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(()) => self.ok.store(true, Ordering::Release),
            Err(why) => {
                if let Ok(mut w) = self.why.lock() {
                    why.clone_into(&mut w);
                }
                self.ok.store(false, Ordering::Release);
            }
        }
    }

    /// `Ok`, or `"{what}: {why}"`.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.ok.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let why = self.why.lock().map(|w| w.clone()).unwrap_or_default();
        Err(format!("{what}: {why}"))
    }
}

/// A telemetry listener setting as validated from a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// None: no listener (`""`).
    pub addr: Option<SocketAddr>,
    /// Written in the file: failing to bind stops the start. The default address
    /// being taken (another daemon on the host) only warns.
    pub explicit: bool,
}

/// Validates `field` (`"ADDR:PORT"`, `""` for none, absent for `default`).
pub fn listen_setting(
    field: &'static str,
    raw: Option<&str>,
    default: &str,
) -> Result<Listen, crate::ConfigError> {
    let explicit = raw.is_some();
    let text = raw.unwrap_or(default).trim();
    if text.is_empty() {
        return Ok(Listen {
            addr: None,
            explicit,
        });
    }
    let addr = text
        .parse()
        .map_err(|e| crate::invalid(field, format!("{text:?} is not ADDR:PORT ({e})")))?;
    Ok(Listen {
        addr: Some(addr),
        explicit,
    })
}

/// Starts the listener a [`Listen`] setting names, announcing the bound address
/// on stderr as `<name>: metrics on ADDR` (scripts and tests read it). None when
/// off, or when the default address is taken (a warning).
pub fn serve_setting(
    name: &str,
    listen: Listen,
    registry: Registry,
    ready: ReadyCheck,
) -> io::Result<Option<SocketAddr>> {
    let Some(addr) = listen.addr else {
        return Ok(None);
    };
    match serve(addr, registry, ready) {
        Ok(t) => {
            eprintln!("{name}: metrics on {}", t.addr);
            tracing::info!(addr = %t.addr, "metrics listening");
            Ok(Some(t.addr))
        }
        Err(e) if !listen.explicit => {
            tracing::warn!(%addr, error = %e, "cannot listen for metrics at the default address; metrics off");
            Ok(None)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )),
    }
}

/// A value read at scrape time (a queue's length, a count another part keeps):
/// registered with [`Registry::register_collector`].
pub struct Sampled {
    name: &'static str,
    help: &'static str,
    counter: bool,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl Sampled {
    /// A gauge whose value `read` gives.
    pub fn gauge(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> Box<Self> {
        Box::new(Self {
            name,
            help,
            counter: false,
            read: Box::new(read),
        })
    }

    /// A counter (monotonic, `_total` added to the name) whose value `read` gives.
    pub fn counter(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Box<Self> {
        Box::new(Self {
            name,
            help,
            counter: true,
            read: Box::new(move || i64::try_from(read()).unwrap_or(i64::MAX)),
        })
    }
}

impl prometheus_client::collector::Collector for Sampled {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let v = (self.read)();
        if self.counter {
            let m = ConstCounter::new(u64::try_from(v).unwrap_or(0));
            let e = encoder.encode_descriptor(self.name, self.help, None, m.metric_type())?;
            m.encode(e)
        } else {
            let m = ConstGauge::new(v);
            let e = encoder.encode_descriptor(self.name, self.help, None, m.metric_type())?;
            m.encode(e)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_endpoints_and_head() {
        let r = parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.endpoint, Endpoint::Metrics);
        assert!(!r.head_only);
        let r = parse_request(b"HEAD /readyz?verbose=1 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.endpoint, Endpoint::Readyz);
        assert!(r.head_only);
        assert_eq!(
            parse_request(b"GET /healthz HTTP/1.1\r\n\r\n")
                .unwrap()
                .endpoint,
            Endpoint::Healthz
        );
    }

    #[test]
    fn refuses_what_it_does_not_serve() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n"),
            Err(Refused::NotFound)
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(Refused::MethodNotAllowed)
        );
        assert_eq!(
            parse_request(b"GET /metrics SMTP/1.0\r\n\r\n"),
            Err(Refused::BadRequest)
        );
        assert_eq!(parse_request(b"EHLO x\r\n"), Err(Refused::BadRequest));
        assert_eq!(parse_request(b"GET /metrics"), Err(Refused::BadRequest));
        assert_eq!(
            parse_request(b"GET  /metrics HTTP/1.1\r\n\r\n"),
            Err(Refused::BadRequest)
        );
        let big = vec![b'a'; MAX_REQUEST_BYTES + 1];
        assert_eq!(parse_request(&big), Err(Refused::TooLarge));
        assert_eq!(
            parse_request(b"\xff\xfe /x HTTP/1.1\r\n\r\n"),
            Err(Refused::BadRequest)
        );
    }

    #[test]
    fn listen_setting_default_empty_and_bad() {
        let d = listen_setting("metrics.listen", None, "127.0.0.1:9325").unwrap();
        assert_eq!(d.addr, Some("127.0.0.1:9325".parse().unwrap()));
        assert!(!d.explicit);
        let off = listen_setting("metrics.listen", Some(""), "127.0.0.1:9325").unwrap();
        assert_eq!((off.addr, off.explicit), (None, true));
        let e = listen_setting("metrics.listen", Some("localhost"), "x").unwrap_err();
        assert!(e.to_string().starts_with("metrics.listen: "), "{e}");
    }

    #[test]
    fn readiness_keeps_the_reason() {
        let r = Readiness::new(false, "starting");
        assert_eq!(r.check("store").unwrap_err(), "store: starting");
        r.set(Ok(()));
        assert!(r.check("store").is_ok());
        r.set(Err("refused"));
        assert_eq!(
            r.check("store unavailable").unwrap_err(),
            "store unavailable: refused"
        );
    }

    #[test]
    fn serves_over_tcp_with_connection_close() {
        let mut registry = Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        registry.register("demo_things", "Things", c.clone());
        registry.register_collector(Sampled::gauge("demo_depth", "Depth", || 7));
        c.inc_by(3);
        let ready: ReadyCheck = Arc::new(|| Err("store down".into()));
        let t = serve("127.0.0.1:0".parse().unwrap(), registry, ready).unwrap();
        let get = |req: &str| {
            let mut s = TcpStream::connect(t.addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let m = get("GET /metrics HTTP/1.1\r\n\r\n");
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.contains("Connection: close"), "{m}");
        assert!(m.contains("demo_things_total 3"), "{m}");
        assert!(m.contains("demo_depth 7"), "{m}");
        let r = get("GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.ends_with("not ready: store down\n"), "{r}");
        assert!(get("GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(get("PUT /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    }
}
