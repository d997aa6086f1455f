//! Per-client limits: concurrent connections and new connections per minute from
//! one IP address, shared by all reactors of this node.
//!
//! Owns: the counters and their bounds. Postfix's `smtpd_client_connection_count_limit`
//! and `smtpd_client_connection_rate_limit` are the model, including the exemption
//! of loopback clients (Postfix exempts `$mynetworks`). Must not: grow without
//! bound: rate windows are pruned, connection counts are removed at zero.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The rate window.
const WINDOW: Duration = Duration::from_secs(60);
/// How often stale rate windows are swept.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open connections per IP address (0 = no limit).
    pub max_connections_per_ip: u32,
    /// New connections per IP address per minute (0 = no limit).
    pub max_connection_rate_per_ip: u32,
    /// Loopback clients (local tools, health checks, benchmarks) are not limited.
    pub exempt_loopback: bool,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyFromIp,
    RateLimited,
}

#[derive(Debug, Default)]
struct Counters {
    open: HashMap<IpAddr, u32>,
    rate: HashMap<IpAddr, (Instant, u32)>,
    last_prune: Option<Instant>,
    /// Shared limits (several nodes, through Redis): new connections per IP not
    /// yet reported, and what the other nodes counted, per unix minute.
    unsynced: HashMap<IpAddr, u32>,
    others: HashMap<IpAddr, (u64, u32)>,
}

/// The current unix minute: the window shared limits count in.
pub fn unix_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[derive(Debug)]
pub struct ClientLimits {
    config: LimitsConfig,
    counters: Mutex<Counters>,
}

impl ClientLimits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            counters: Mutex::new(Counters::default()),
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        (self.config.max_connections_per_ip == 0 && self.config.max_connection_rate_per_ip == 0)
            || (self.config.exempt_loopback && ip.to_canonical().is_loopback())
    }

    /// Counts a new connection from `ip`, or says why it must be refused (then
    /// nothing is counted and [`release`](Self::release) must not be called).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.exempt(ip) {
            return Ok(());
        }
        let Ok(mut c) = self.counters.lock() else {
            return Ok(()); // a poisoned lock must not stop mail
        };
        if c.last_prune
            .is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY)
        {
            c.rate
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            c.last_prune = Some(now);
        }
        let max_open = self.config.max_connections_per_ip;
        if max_open > 0 && c.open.get(&ip).copied().unwrap_or(0) >= max_open {
            return Err(Refusal::TooManyFromIp);
        }
        let max_rate = self.config.max_connection_rate_per_ip;
        if max_rate > 0 {
            let minute = unix_minute();
            let others = match c.others.get(&ip) {
                Some(&(m, n)) if m == minute => n,
                _ => 0,
            };
            let entry = c.rate.entry(ip).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            if entry.1.saturating_add(others) >= max_rate {
                return Err(Refusal::RateLimited);
            }
            entry.1 = entry.1.saturating_add(1);
            let unsynced = c.unsynced.entry(ip).or_insert(0);
            *unsynced = unsynced.saturating_add(1);
        }
        let open = c.open.entry(ip).or_insert(0);
        *open = open.saturating_add(1);
        Ok(())
    }

    /// This node's count for `ip` in the current window.
    pub fn local_rate(&self, ip: IpAddr) -> u32 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.rate.get(&ip).map(|&(_, n)| n))
            .unwrap_or(0)
    }

    /// New connections per IP since the last call, for the shared counters.
    pub fn take_unsynced(&self) -> Vec<(IpAddr, u32)> {
        self.counters
            .lock()
            .map(|mut c| c.unsynced.drain().collect())
            .unwrap_or_default()
    }

    /// What the shared counter said for `ip` in `minute` after adding `ours`:
    /// the rest is the other nodes' share.
    pub fn set_shared(&self, minute: u64, ip: IpAddr, total: u32, ours: u32) {
        if let Ok(mut c) = self.counters.lock() {
            let others = total.saturating_sub(ours);
            if others > 0 {
                c.others.insert(ip, (minute, others));
            }
            let stale: Vec<IpAddr> = c
                .others
                .iter()
                .filter(|(_, (m, _))| m.saturating_add(1) < minute)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in stale {
                c.others.remove(&ip);
            }
        }
    }

    /// The connection from `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        if self.exempt(ip) {
            return;
        }
        if let Ok(mut c) = self.counters.lock()
            && let Some(n) = c.open.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn limits(open: u32, rate: u32) -> ClientLimits {
        ClientLimits::new(LimitsConfig {
            max_connections_per_ip: open,
            max_connection_rate_per_ip: rate,
            exempt_loopback: true,
        })
    }

    #[test]
    fn concurrent_connections_per_ip() {
        let l = limits(2, 0);
        let now = Instant::now();
        assert_eq!(l.admit(A, now), Ok(()));
        assert_eq!(l.admit(A, now), Ok(()));
        assert_eq!(l.admit(A, now), Err(Refusal::TooManyFromIp));
        assert_eq!(l.admit(B, now), Ok(()));
        l.release(A);
        assert_eq!(l.admit(A, now), Ok(()));
        // Loopback is exempt.
        for _ in 0..10 {
            assert_eq!(l.admit(IpAddr::V4(Ipv4Addr::LOCALHOST), now), Ok(()));
        }
    }

    #[test]
    fn connection_rate_per_ip_with_a_one_minute_window() {
        let l = limits(0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit(A, t0), Ok(()));
            l.release(A);
        }
        assert_eq!(
            l.admit(A, t0 + Duration::from_secs(59)),
            Err(Refusal::RateLimited)
        );
        assert_eq!(l.admit(B, t0), Ok(()));
        assert_eq!(l.admit(A, t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn counters_do_not_grow_without_bound() {
        let l = limits(5, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.admit(ip, t0).unwrap();
            l.release(ip);
        }
        assert!(l.counters.lock().unwrap().open.is_empty());
        l.admit(A, t0 + Duration::from_secs(120)).unwrap();
        assert_eq!(l.counters.lock().unwrap().rate.len(), 1);
    }
}
