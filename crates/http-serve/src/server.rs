//! The accept loop of both HTTP servers (what `axum::serve` does, plus the
//! bounds it has no setting for).
//!
//! Owns: the listener, one semaphore permit per open connection (held by the
//! connection's task and released when it ends: at the cap the loop stops
//! accepting, so new connections wait in the kernel's backlog instead of taking
//! file descriptors and memory), the count of open connections per client
//! address (`max_connections_per_ip`: one more is closed at once), hyper's HTTP/1.1 connection with a request-head
//! read timeout, the client's address in every request
//! (`ConnectInfo<SocketAddr>`), and the stop: on the shutdown future the listener
//! closes, every connection is told to finish its request in flight and close,
//! and whatever is still open at the deadline (an event stream, a stalled
//! upload) is closed regardless.
//! Must not: know the routes (the daemons' routers do).
//!
//! HTTP/2 is not offered: both APIs are small requests and one event stream per
//! client, and h2's own flow-control and stream limits would be a second set of
//! bounds to get right.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::Limits;

/// Pause after a failed accept (e.g. out of file descriptors), so that the loop
/// does not spin while the condition lasts.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the deadline.
    Drained,
    /// These connections were still open at the deadline and were closed.
    Cut { connections: usize },
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then
/// stops as the module says. Returns once every connection is closed.
pub async fn serve<F>(listener: TcpListener, app: Router, limits: Limits, shutdown: F) -> Stopped
where
    F: Future<Output = ()> + Send,
{
    let limits = limits.sane();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(Mutex::new(HashMap::new()));
    // `true` once the stop has begun; every connection's task watches it.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap ended connections, so the set holds only open ones.
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    warn!(error = %e, "HTTP connection task failed");
                }
                continue;
            }
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((slot, stream, addr)) = accepted else {
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let Some(counted) = PerIp::admit(&per_ip, addr.ip(), limits.max_connections_per_ip) else {
            // Dropping the stream closes it; the slot goes back at once.
            debug!(%addr, "HTTP connection refused: max_connections_per_ip");
            continue;
        };
        connections.spawn(connection(
            stream,
            addr,
            app.clone(),
            limits.header_read_timeout,
            stop_rx.clone(),
            (slot, counted),
        ));
    }
    // Stop accepting: new connections are refused, not left in the backlog.
    drop(listener);
    let open = connections.len();
    info!(open, grace = ?limits.shutdown_grace, "HTTP server stopping");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_ok() {
        return Stopped::Drained;
    }
    let cut = connections.len();
    warn!(
        connections = cut,
        "HTTP connections still open at the shutdown deadline; closing them"
    );
    connections.shutdown().await;
    Stopped::Cut { connections: cut }
}

/// One slot, then one connection; `None` after a failed accept (logged).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    // The semaphore is never closed; if it were, there is nothing to accept for.
    let slot = Arc::clone(slots).acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, addr)) => Some((slot, stream, addr)),
        Err(e) => {
            warn!(error = %e, "HTTP accept failed");
            None
        }
    }
}

/// Open connections by client address (only while `max_connections_per_ip` is
/// set; addresses with none open are removed, so the map holds at most one
/// entry per open connection).
type PerIpCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection counted against its address; uncounted when dropped.
struct PerIp {
    counts: PerIpCounts,
    ip: IpAddr,
}

impl PerIp {
    /// Counts a connection from `ip`, or None when it already holds `max` (0:
    /// no limit, nothing counted).
    fn admit(counts: &PerIpCounts, ip: IpAddr, max: usize) -> Option<Option<PerIp>> {
        if max == 0 {
            return Some(None);
        }
        // A poisoned lock only means a panic elsewhere mid-update: go on counting.
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Some(PerIp {
            counts: Arc::clone(counts),
            ip,
        }))
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Resolves once the stop has begun (or the server, and its sender, is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Serves one connection until it closes, the head read times out, or the stop
/// has let its request in flight finish. `_slot` (its place under both caps) is
/// released when this ends.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _slot: (OwnedSemaphorePermit, Option<PerIp>),
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        // A dropped sender means the server is gone: stop as well.
        () = stopping(&mut stop) => {
            // Closes an idle connection now; one with a request in flight after
            // its response (no keep-alive).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        debug!(%addr, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::{Body, Bytes};
    use axum::routing::get;
    use futures_util::StreamExt;
    use std::convert::Infallible;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    /// An event stream that sends one event and then never ends.
    async fn events() -> Body {
        let first = futures_util::stream::once(async {
            Ok::<_, Infallible>(Bytes::from_static(b"data: hi\n\n"))
        });
        Body::from_stream(first.chain(futures_util::stream::pending()))
    }

    async fn start(
        grace: Duration,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Stopped>,
    ) {
        start_with(Limits::new(4).with_shutdown_grace(grace)).await
    }

    async fn start_with(
        limits: Limits,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Stopped>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/events", get(events)).route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, async {
            let _ = rx.await;
        }));
        (addr, tx, server)
    }

    async fn read_some(s: &mut TcpStream, until: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(until.len()).any(|w| w == until) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        let (addr, stop, server) = start(Duration::from_secs(1)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let me = s.local_addr().unwrap().to_string();
        s.write_all(b"GET /peer HTTP/1.0\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got).ends_with(&me), "{me}");
        stop.send(()).unwrap();
        assert_eq!(server.await.unwrap(), Stopped::Drained);
    }

    #[tokio::test]
    async fn an_event_stream_is_cut_at_the_shutdown_deadline() {
        let grace = Duration::from_millis(300);
        let (addr, stop, server) = start(grace).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        read_some(&mut s, b"data: hi").await;
        let asked = Instant::now();
        stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        let took = asked.elapsed();
        assert_eq!(stopped, Stopped::Cut { connections: 1 });
        assert!(took >= grace && took < Duration::from_secs(5), "{took:?}");
        // The client sees the connection end.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .unwrap();
    }

    /// GET /peer on a new connection: the answer, or None when the server closed
    /// the connection without one.
    async fn peer(addr: SocketAddr) -> Option<String> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /peer HTTP/1.0\r\n\r\n").await.ok()?;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .unwrap()
            .ok()?;
        (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share_of_connections() {
        let (addr, stop, server) = start_with(Limits::new(10).with_max_connections_per_ip(2)).await;
        // Two idle connections from 127.0.0.1 (half a head each)...
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /pe").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...and a third is closed without an answer, though slots are free.
        assert_eq!(peer(addr).await, None);
        // One leaves: the address may connect again.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(peer(addr).await.is_some_and(|r| r.starts_with("HTTP/1.")));
        drop(held);
        stop.send(()).unwrap();
        let _ = server.await.unwrap();
    }

    #[tokio::test]
    async fn without_a_per_address_limit_one_address_may_fill_the_cap() {
        let (addr, stop, server) = start_with(Limits::new(10)).await;
        let mut held = Vec::new();
        for _ in 0..5 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /pe").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(peer(addr).await.is_some());
        drop(held);
        stop.send(()).unwrap();
        let _ = server.await.unwrap();
    }
}
