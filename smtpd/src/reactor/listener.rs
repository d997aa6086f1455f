//! Listening sockets: one per reactor thread per address, bound with SO_REUSEPORT.
//!
//! Owns: creating and binding listeners. With SO_REUSEPORT every reactor has its own
//! accept queue and the kernel spreads new connections across them, so threads never
//! contend on one socket. Port 0 is resolved once (the first bind picks the port, the
//! other threads bind to that same port), which lets tests ask for a free port.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `threads` listeners on each address. Returns, per thread, its listeners in
/// the order of `addrs`, and the addresses actually bound (ports resolved).
pub fn bind_all(
    addrs: &[SocketAddr],
    threads: usize,
    backlog: u32,
) -> io::Result<(Vec<Vec<mio::net::TcpListener>>, Vec<SocketAddr>)> {
    let mut per_thread: Vec<Vec<mio::net::TcpListener>> = (0..threads)
        .map(|_| Vec::with_capacity(addrs.len()))
        .collect();
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let mut actual = addr;
        for listeners in per_thread.iter_mut() {
            let socket = bind_one(actual, backlog)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {actual}: {e}")))?;
            actual = socket.local_addr()?;
            listeners.push(socket);
        }
        bound.push(actual);
    }
    Ok((per_thread, bound))
}

/// The TCP listeners systemd passed (socket activation: `LISTEN_FDS`, checked
/// against `LISTEN_PID`), each duplicated for every reactor thread (the threads
/// then share its accept queue). None when none were passed.
#[allow(clippy::type_complexity)]
pub fn inherited(
    threads: usize,
) -> io::Result<Option<(Vec<Vec<mio::net::TcpListener>>, Vec<SocketAddr>)>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut per_thread: Vec<Vec<mio::net::TcpListener>> = (0..threads)
        .map(|_| Vec::with_capacity(fds.len()))
        .collect();
    let mut bound = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let Some(listener) = fds.take_tcp_listener(i)? else {
            continue;
        };
        listener.set_nonblocking(true)?;
        bound.push(listener.local_addr()?);
        for listeners in per_thread.iter_mut() {
            listeners.push(mio::net::TcpListener::from_std(listener.try_clone()?));
        }
    }
    if bound.is_empty() {
        return Err(io::Error::other(
            "LISTEN_FDS names no TCP listening socket (smtpd.socket must use ListenStream=)",
        ));
    }
    Ok(Some((per_thread, bound)))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // An IPv6 listener serves IPv6 only; list 0.0.0.0 separately for IPv4.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_resolved_once_for_all_threads() {
        let (per_thread, bound) = bind_all(&["127.0.0.1:0".parse().unwrap()], 3, 16).unwrap();
        assert_eq!(per_thread.len(), 3);
        assert_ne!(bound[0].port(), 0);
        for l in &per_thread {
            assert_eq!(l[0].local_addr().unwrap(), bound[0]);
        }
    }
}
