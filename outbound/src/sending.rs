//! Responsible-sending settings: `[dkim."DOMAIN"]` keys and `[pools.NAME]` sending
//! IP pools, and the choice of a pool's source address for a delivery.
//!
//! Owns: the file layer and validation of those two sections (kept here so that
//! `config` only names them), the bind check of every pool address at start
//! ([`Pools::check_bindable`]) and [`Pool::pick`] (round robin, or sticky per
//! destination domain).
//! Must not: open connections (the worker binds and connects) or touch the queue.
//!
//! ```toml
//! [dkim."example.com"]            # one key ...
//! selector = "s1"
//! key_file = "/etc/outbound/dkim/example.com.s1.pem"
//! [[dkim."example.com".keys]]     # ... and/or more: each signs (two signatures)
//! selector = "ed1"
//! key_file = "/etc/outbound/dkim/example.com.ed1.pem"
//!
//! [pools.a]
//! strategy = "round-robin"        # or "sticky": one address per destination domain
//! addresses = [{ address = "198.51.100.10", helo = "mta10.example.com" }, "198.51.100.11"]
//! ```

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ops::{ConfigError, invalid};
use serde::Deserialize;

use crate::dkim::{KeySpec, Keys};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDkim {
    selector: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    keys: Vec<FileDkimKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDkimKey {
    selector: String,
    key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    addresses: Vec<FileAddress>,
    strategy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileAddress {
    Plain(String),
    Full(FileAddressTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAddressTable {
    address: String,
    helo: Option<String>,
}

fn check_selector(field: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field.to_owned(),
            format!("{s:?} is not a DNS label"),
        ))
    }
}

/// `[dkim]`: validates the table, then reads every key file (an unreadable or
/// invalid one is an error naming its `key_file` field).
pub fn dkim_section(raw: HashMap<String, FileDkim>) -> Result<Keys, ConfigError> {
    let mut specs: HashMap<String, Vec<KeySpec>> = HashMap::new();
    for (domain, d) in raw {
        let base = format!("dkim.\"{domain}\"");
        let mut keys = Vec::new();
        match (d.selector, d.key_file) {
            (Some(selector), Some(key_file)) => {
                check_selector(&format!("{base}.selector"), &selector)?;
                keys.push(KeySpec {
                    selector,
                    key_file,
                    field: format!("{base}.key_file"),
                });
            }
            (None, None) => {}
            (Some(_), None) => return Err(invalid(format!("{base}.key_file"), "missing")),
            (None, Some(_)) => return Err(invalid(format!("{base}.selector"), "missing")),
        }
        for (i, k) in d.keys.into_iter().enumerate() {
            check_selector(&format!("{base}.keys[{i}].selector"), &k.selector)?;
            keys.push(KeySpec {
                selector: k.selector,
                key_file: k.key_file,
                field: format!("{base}.keys[{i}].key_file"),
            });
        }
        if keys.is_empty() {
            return Err(invalid(base, "no key: set selector and key_file"));
        }
        specs.insert(domain, keys);
    }
    Keys::load(&specs).map_err(|(field, reason)| invalid(field, reason))
}

/// One source address of a pool and the EHLO name that goes with it (its PTR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub ip: IpAddr,
    pub helo: String,
}

#[derive(Debug)]
pub struct Pool {
    pub addresses: Vec<Source>,
    pub sticky: bool,
    /// Round-robin position, shared by the workers (one relaxed atomic per
    /// connection, no lock).
    next: AtomicUsize,
}

impl Pool {
    /// The source address for a new connection to `domain` (None only for a pool
    /// without addresses, which validation refuses).
    pub fn pick(&self, domain: &str) -> Option<&Source> {
        let n = self.addresses.len().max(1);
        let i = if self.sticky {
            let mut h = DefaultHasher::new();
            domain.to_ascii_lowercase().hash(&mut h);
            usize::try_from(h.finish() % n as u64).unwrap_or(0)
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        self.addresses.get(i)
    }
}

#[derive(Debug, Default)]
pub struct Pools {
    pub pools: HashMap<String, Pool>,
}

/// A pool address this host cannot send from (a configuration error: exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{field}: cannot bind {address}: {reason}")]
pub struct BindError {
    pub field: String,
    pub address: IpAddr,
    pub reason: String,
}

impl Pools {
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    /// Every address of every pool, deduplicated, in a stable order.
    pub fn all_addresses(&self) -> Vec<&Source> {
        let mut names: Vec<&String> = self.pools.keys().collect();
        names.sort();
        let mut out: Vec<&Source> = Vec::new();
        for n in names {
            for s in &self.pools[n].addresses {
                if !out.iter().any(|o| o.ip == s.ip) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Binds a TCP socket to each address (port 0) and lets it go: an address not
    /// on this host fails here, at start, not on the first delivery.
    pub fn check_bindable(&self) -> Result<(), BindError> {
        let mut names: Vec<&String> = self.pools.keys().collect();
        names.sort();
        for name in names {
            for s in &self.pools[name].addresses {
                let domain = if s.ip.is_ipv4() {
                    socket2::Domain::IPV4
                } else {
                    socket2::Domain::IPV6
                };
                let result = socket2::Socket::new(domain, socket2::Type::STREAM, None)
                    .and_then(|sock| sock.bind(&SocketAddr::new(s.ip, 0).into()));
                if let Err(e) = result {
                    return Err(BindError {
                        field: format!("pools.{name}.addresses"),
                        address: s.ip,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// `[pools]`: addresses parsed, EHLO names checked (default: `delivery.helo_name`).
pub fn pools_section(
    raw: HashMap<String, FilePool>,
    default_helo: &str,
) -> Result<Pools, ConfigError> {
    let mut pools = HashMap::new();
    for (name, p) in raw {
        let field = format!("pools.{name}.addresses");
        if p.addresses.is_empty() {
            return Err(invalid(field, "a pool needs at least one address"));
        }
        let sticky = match p.strategy.as_deref() {
            None | Some("round-robin") => false,
            Some("sticky") => true,
            Some(other) => {
                return Err(invalid(
                    format!("pools.{name}.strategy"),
                    format!("{other:?}: expected \"round-robin\" or \"sticky\""),
                ));
            }
        };
        let mut addresses = Vec::new();
        for a in p.addresses {
            let (text, helo) = match a {
                FileAddress::Plain(t) => (t, None),
                FileAddress::Full(t) => (t.address, t.helo),
            };
            let ip: IpAddr = text
                .parse()
                .map_err(|_| invalid(field.clone(), format!("{text:?} is not an IP address")))?;
            let helo = helo.unwrap_or_else(|| default_helo.to_owned());
            if !ops::host::is_hostname(&helo) {
                return Err(invalid(
                    format!("pools.{name}.addresses.helo"),
                    format!("{helo:?} is not a host name"),
                ));
            }
            addresses.push(Source { ip, helo });
        }
        pools.insert(
            name,
            Pool {
                addresses,
                sticky,
                next: AtomicUsize::new(0),
            },
        );
    }
    Ok(Pools { pools })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pools(toml_text: &str) -> Result<Pools, ConfigError> {
        let raw: HashMap<String, FilePool> = toml::from_str(toml_text).unwrap();
        pools_section(raw, "mta.example.com")
    }

    #[test]
    fn round_robin_alternates_and_sticky_keeps_a_domain_on_one_address() {
        let p = pools(
            "[a]\naddresses = [{ address = \"127.0.0.2\", helo = \"m2.example.com\" }, \"127.0.0.3\"]\n\
             [b]\nstrategy = \"sticky\"\naddresses = [\"127.0.0.2\", \"127.0.0.3\"]\n",
        )
        .unwrap();
        let a = p.get("a").unwrap();
        let seq: Vec<String> = (0..4)
            .map(|_| a.pick("x.org").unwrap().ip.to_string())
            .collect();
        assert_eq!(seq, ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]);
        assert_eq!(a.addresses[0].helo, "m2.example.com");
        assert_eq!(a.addresses[1].helo, "mta.example.com");
        let b = p.get("b").unwrap();
        let first = b.pick("x.org").unwrap().ip;
        assert!((0..5).all(|_| b.pick("x.org").unwrap().ip == first));
    }

    #[test]
    fn errors_name_the_field() {
        let e = pools("[a]\naddresses = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pools.a.addresses"), "{e}");
        let e = pools("[a]\nstrategy = \"x\"\naddresses = [\"127.0.0.2\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pools.a.strategy"), "{e}");
    }
}
