//! Where mail for a domain goes: transport overrides, then MX records (RFC 5321 §5.1).
//!
//! Owns: the route for a recipient domain — a transport override's fixed host, or the
//! MX hosts in preference order (equal preferences shuffled), each with its
//! addresses; implicit MX (the domain's own A/AAAA) when there is no MX; null MX
//! (RFC 7505) and non-existent domains as permanent failures. Lookups go through
//! hickory's cache, which honours record TTLs.
//! Must not: connect to anything.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::client::Endpoint;

/// One host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub host: String,
    pub endpoints: Vec<Endpoint>,
}

/// Why a domain has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Permanent: the domain says it takes no mail, or does not exist.
    #[error("{text}")]
    Permanent { status: &'static str, text: String },
    /// Temporary: DNS failed; try later.
    #[error("{0}")]
    Temporary(String),
}

/// Resolves routes. One per worker thread (its cache is the worker's).
pub struct Router {
    resolver: TokioResolver,
    transports: HashMap<String, SocketAddr>,
    port: u16,
}

impl Router {
    /// `nameserver`: a fixed DNS server (tests, split-horizon setups); `None` reads
    /// /etc/resolv.conf. `port`: the SMTP port of MX hosts (25 outside tests).
    pub fn new(
        nameserver: Option<SocketAddr>,
        transports: HashMap<String, SocketAddr>,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, ResolveError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.cache_size = 4096;
        // Search domains would turn a missing "example.com" into a lookup of
        // "example.com.corp.local": mail domains are always absolute.
        opts.ndots = 0;
        let builder = match nameserver {
            Some(ns) => {
                let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()?,
        };
        Ok(Self {
            resolver: builder.with_options(opts).build(),
            transports,
            port,
        })
    }

    /// The hosts to try for `domain`, best first.
    pub async fn route(&self, domain: &str) -> Result<Vec<Hop>, RouteError> {
        if let Some(addr) = self.transports.get(domain) {
            return Ok(vec![Hop {
                host: domain.to_owned(),
                endpoints: vec![Endpoint {
                    host: domain.to_owned(),
                    addr: *addr,
                }],
            }]);
        }
        // An address literal `[192.0.2.1]` is its own route.
        if let Some(ip) = domain
            .strip_prefix('[')
            .and_then(|d| d.strip_suffix(']'))
            .map(|d| d.strip_prefix("IPv6:").unwrap_or(d))
        {
            let ip: IpAddr = ip.parse().map_err(|_| RouteError::Permanent {
                status: "5.1.2",
                text: format!("bad address literal {domain}"),
            })?;
            return Ok(vec![Hop {
                host: domain.to_owned(),
                endpoints: vec![Endpoint {
                    host: ip.to_string(),
                    addr: SocketAddr::new(ip, self.port),
                }],
            }]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        crate::metrics::get().dns_lookups.inc();
        let mut mx: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .iter()
                .map(|r| (r.preference(), r.exchange().to_utf8()))
                .collect(),
            Err(e) => match classify(&e) {
                Negative::NoData => Vec::new(),
                Negative::NxDomain => {
                    return Err(RouteError::Permanent {
                        status: "5.1.2",
                        text: format!("domain {domain} does not exist (NXDOMAIN)"),
                    });
                }
                Negative::Failed => {
                    crate::metrics::get().dns_failures.inc();
                    return Err(RouteError::Temporary(format!(
                        "MX lookup for {domain} failed: {e}"
                    )));
                }
            },
        };
        // RFC 7505: a single MX of "." means the domain accepts no mail.
        if mx.iter().any(|(_, host)| host == "." || host.is_empty()) {
            return Err(RouteError::Permanent {
                status: "5.1.10",
                text: format!("domain {domain} accepts no mail (null MX, RFC 7505)"),
            });
        }
        if mx.is_empty() {
            // RFC 5321 §5.1: no MX → the domain itself is the implicit MX.
            mx.push((0, fqdn.clone()));
        }
        shuffle_equal_preferences(&mut mx);
        let mut hops = Vec::with_capacity(mx.len());
        let mut last_error = None;
        for (_, host) in mx {
            let name = host.trim_end_matches('.').to_owned();
            crate::metrics::get().dns_lookups.inc();
            match self.resolver.lookup_ip(host.as_str()).await {
                Ok(ips) => {
                    let endpoints = ips
                        .iter()
                        .map(|ip| Endpoint {
                            host: name.clone(),
                            addr: SocketAddr::new(ip, self.port),
                        })
                        .collect::<Vec<_>>();
                    if !endpoints.is_empty() {
                        hops.push(Hop {
                            host: name,
                            endpoints,
                        });
                    }
                }
                Err(e) => {
                    crate::metrics::get().dns_failures.inc();
                    last_error = Some((name, e));
                }
            }
        }
        if hops.is_empty() {
            return Err(match last_error {
                // The implicit MX (the domain itself) has no address either: the
                // domain exists but has nowhere to deliver.
                Some((name, e))
                    if matches!(classify(&e), Negative::NxDomain | Negative::NoData) =>
                {
                    RouteError::Temporary(format!("no address for mail host {name} of {domain}"))
                }
                Some((name, e)) => {
                    RouteError::Temporary(format!("address lookup for {name} failed: {e}"))
                }
                None => RouteError::Temporary(format!("no mail host for {domain}")),
            });
        }
        Ok(hops)
    }
}

enum Negative {
    NxDomain,
    NoData,
    Failed,
}

fn classify(e: &ResolveError) -> Negative {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => Negative::NxDomain,
            ResponseCode::NoError => Negative::NoData,
            _ => Negative::Failed,
        },
        _ => Negative::Failed,
    }
}

/// Sorts by preference; hosts of equal preference are tried in random order
/// (RFC 5321 §5.1) so that load spreads over them.
fn shuffle_equal_preferences(mx: &mut [(u16, String)]) {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut state = u64::from_le_bytes(seed) | 1;
    let mut keyed: Vec<(u16, u64, String)> = mx
        .iter()
        .map(|(p, h)| {
            // xorshift: cheap, good enough to spread equal-preference hosts.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (*p, state, h.clone())
        })
        .collect();
    keyed.sort();
    for (slot, (p, _, h)) in mx.iter_mut().zip(keyed) {
        *slot = (p, h);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn preference_order_is_kept_and_equal_ones_are_all_present() {
        let mut mx = vec![
            (20, "c".to_owned()),
            (10, "a".to_owned()),
            (10, "b".to_owned()),
            (30, "d".to_owned()),
        ];
        shuffle_equal_preferences(&mut mx);
        let prefs: Vec<u16> = mx.iter().map(|m| m.0).collect();
        assert_eq!(prefs, [10, 10, 20, 30]);
        let mut first_two: Vec<&str> = mx[..2].iter().map(|m| m.1.as_str()).collect();
        first_two.sort_unstable();
        assert_eq!(first_two, ["a", "b"]);
        assert_eq!((mx[2].1.as_str(), mx[3].1.as_str()), ("c", "d"));
    }
}
