//! Who may use the API, and how much: the bearer token (token mode), the per-IP
//! request rate (public mode), and the caps on event streams.
//!
//! Owns: [`Access`], the extractor every route takes, so a handler cannot forget
//! the check; the per-IP token buckets; [`StreamPermit`]. Must not: let one client
//! grow its state without bound (the bucket map is pruned, streams are capped).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::config::HttpAccess;

/// Buckets kept before idle ones are dropped (memory: ~64 bytes each).
const MAX_BUCKETS: usize = 65_536;
/// A bucket idle this long is full again, so it can be forgotten.
const BUCKET_IDLE: Duration = Duration::from_secs(60);

/// Proof that the request passed the access check.
pub struct Access {
    pub ip: IpAddr,
}

impl FromRequestParts<AppState> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        match &state.config.access {
            HttpAccess::Token(token) => {
                let given = parts
                    .headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "Authorization: a valid Bearer token is required",
                    ));
                }
            }
            HttpAccess::Public => {
                if !state.limiter.allow(ip, Instant::now()) {
                    return Err(ApiError::too_many(
                        "rate limit: too many requests from this address; slow down",
                    ));
                }
            }
        }
        Ok(Self { ip })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Token buckets per IP: `rate` requests per second, bursts of up to `rate`.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` 0: unlimited.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let Ok(mut map) = self.buckets.lock() else {
            return false;
        };
        if map.len() >= MAX_BUCKETS && !map.contains_key(&ip) {
            map.retain(|_, (_, last)| now.duration_since(*last) < BUCKET_IDLE);
            if map.len() >= MAX_BUCKETS {
                // Under a flood of distinct addresses: refuse the newcomers rather
                // than grow without bound.
                return false;
            }
        }
        let (tokens, last) = map.entry(ip).or_insert((self.rate, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Open event streams, per IP and in total.
#[derive(Debug)]
pub struct StreamLimits {
    per_ip: usize,
    total: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl StreamLimits {
    pub fn new(per_ip: usize, total: usize) -> Self {
        Self {
            per_ip,
            total,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A permit for one more stream from `ip`, or the 429 saying which cap.
    pub fn acquire(self: &std::sync::Arc<Self>, ip: IpAddr) -> Result<StreamPermit, ApiError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| ApiError::too_many("event streams: unavailable"))?;
        if open.0 >= self.total {
            return Err(ApiError::too_many(format!(
                "event streams: the server's limit of {} (http.max_streams) is reached",
                self.total
            )));
        }
        let n = open.1.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err(ApiError::too_many(format!(
                "event streams: at most {} per client address (http.max_streams_per_ip)",
                self.per_ip
            )));
        }
        *n += 1;
        open.0 += 1;
        Ok(StreamPermit {
            limits: std::sync::Arc::clone(self),
            ip,
        })
    }
}

/// Held by an open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit {
    limits: std::sync::Arc<StreamLimits>,
    ip: IpAddr,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.limits.open.lock() {
            open.0 = open.0.saturating_sub(1);
            if let Some(n) = open.1.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.1.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn buckets_refill_at_the_rate() {
        let l = RateLimiter::new(5);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let t0 = Instant::now();
        assert!((0..5).all(|_| l.allow(ip, t0)));
        assert!(!l.allow(ip, t0));
        assert!(l.allow(IpAddr::from([10, 0, 0, 2]), t0));
        assert!(l.allow(ip, t0 + Duration::from_millis(250)));
        assert!(!l.allow(ip, t0 + Duration::from_millis(250)));
        assert!(RateLimiter::new(0).allow(ip, t0));
    }

    #[test]
    fn stream_permits_are_capped_and_freed() {
        let s = Arc::new(StreamLimits::new(2, 3));
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let p1 = s.acquire(a).unwrap();
        let _p2 = s.acquire(a).unwrap();
        assert!(s.acquire(a).unwrap_err().message.contains("per client"));
        let _p3 = s.acquire(b).unwrap();
        assert!(s.acquire(b).unwrap_err().message.contains("max_streams"));
        drop(p1);
        assert!(s.acquire(b).is_ok());
    }

    #[test]
    fn tokens_compare_fully() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
