//! `outbound dns-records DOMAIN` and `outbound dns-check DOMAIN`: the DNS a sending
//! domain needs, derived from the configuration, and a check of what is published.
//!
//! Owns: the record list (SPF from the pools' addresses, one DKIM TXT per configured
//! key, a starting DMARC policy, the bounce domain's MX, each pool address's PTR),
//! its zone-file form, and comparing it with lookups (hickory, as `mx` does).
//! Must not: change anything; it only reads the config and asks DNS.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::Config;
use crate::dkim;

/// What a record must say, for `dns-check`.
#[derive(Debug, Clone)]
enum Expect {
    /// SPF: a `v=spf1` TXT at the name listing each of these mechanisms.
    Spf(Vec<String>),
    /// DKIM: a TXT whose `p=` is this public key (from the key file).
    Dkim { public: Vec<u8>, key_file: String },
    /// DMARC: any `v=DMARC1` TXT will do (the printed one is only a start).
    Dmarc,
    /// MX: an exchange with this name.
    Mx(String),
    /// PTR of an address: this name.
    Ptr(IpAddr, String),
}

#[derive(Debug, Clone)]
pub struct Record {
    /// What the record is for, in the output ("SPF", "DKIM s1", ...).
    what: String,
    name: String,
    line: String,
    expect: Expect,
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// The records `domain` needs; `pool` limits SPF and PTR to one pool.
pub fn records(cfg: &Config, domain: &str, pool: Option<&str>) -> anyhow::Result<Vec<Record>> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let sources: Vec<&crate::sending::Source> = match pool {
        Some(name) => cfg
            .pools
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("--pool: unknown sending pool {name}"))?
            .addresses
            .iter()
            .collect(),
        None => cfg.pools.all_addresses(),
    };
    let mut out = Vec::new();
    // Without pools, mail leaves from the host's own address: name it by the HELO
    // name, whose A/AAAA records the operator publishes anyway.
    let mechanisms: Vec<String> = if sources.is_empty() {
        vec![format!("a:{}", cfg.helo_name)]
    } else {
        sources
            .iter()
            .map(|s| match s.ip {
                IpAddr::V4(ip) => format!("ip4:{ip}"),
                IpAddr::V6(ip) => format!("ip6:{ip}"),
            })
            .collect()
    };
    let spf = format!("v=spf1 {} -all", mechanisms.join(" "));
    out.push(Record {
        what: "SPF".into(),
        name: fqdn(&domain),
        line: format!("{} IN TXT {}", fqdn(&domain), dkim::quoted_strings(&spf)),
        expect: Expect::Spf(mechanisms),
    });
    for key in cfg.dkim.for_domain(&domain) {
        out.push(Record {
            what: format!("DKIM {} ({})", key.selector, key.algorithm.dns_name()),
            name: fqdn(&format!("{}._domainkey.{domain}", key.selector)),
            line: dkim::txt_line(&domain, key),
            expect: Expect::Dkim {
                public: key.public.clone(),
                key_file: key.path.display().to_string(),
            },
        });
    }
    let dmarc = format!("v=DMARC1; p=none; rua=mailto:dmarc@{domain}");
    out.push(Record {
        what: "DMARC".into(),
        name: fqdn(&format!("_dmarc.{domain}")),
        line: format!(
            "{} IN TXT {}",
            fqdn(&format!("_dmarc.{domain}")),
            dkim::quoted_strings(&dmarc)
        ),
        expect: Expect::Dmarc,
    });
    if let Some(verp) = &cfg.bounces.verp {
        out.push(Record {
            what: "bounce MX".into(),
            name: fqdn(&verp.domain),
            line: format!("{} IN MX 10 {}", fqdn(&verp.domain), fqdn(&cfg.helo_name)),
            expect: Expect::Mx(cfg.helo_name.to_ascii_lowercase()),
        });
    }
    for s in &sources {
        out.push(Record {
            what: format!("PTR {}", s.ip),
            name: reverse_name(s.ip),
            line: format!("{} IN PTR {}", reverse_name(s.ip), fqdn(&s.helo)),
            expect: Expect::Ptr(s.ip, s.helo.to_ascii_lowercase()),
        });
    }
    Ok(out)
}

/// Zone-file text, one record a line, each after a comment saying what it is for.
pub fn zone_text(records: &[Record]) -> String {
    let mut s = String::new();
    for r in records {
        s.push_str(&format!("; {}\n{}\n", r.what, r.line));
    }
    s
}

fn resolver(ns: Option<SocketAddr>) -> anyhow::Result<TokioResolver> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    // A check must see what is published now, not what was cached.
    opts.cache_size = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    let builder = match ns {
        Some(ns) => {
            let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                TokioConnectionProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()?,
    };
    Ok(builder.with_options(opts).build())
}

/// The TXT records at `name`, each one's strings joined (as RFC 6376 §3.6.2.2 and
/// RFC 7208 §3.3 read them).
async fn txts(resolver: &TokioResolver, name: &str) -> Vec<String> {
    match resolver.txt_lookup(name).await {
        Ok(l) => l
            .iter()
            .map(|t| {
                t.txt_data()
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect::<String>()
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn trim_name(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

/// The `p=` tag of a DKIM key record, decoded (whitespace inside is allowed).
fn dkim_public(txt: &str) -> Option<Vec<u8>> {
    let p = txt
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("p="))?;
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(p).ok()
}

/// Looks each record up; returns one line per problem (empty: all as they should be).
pub async fn check(records: &[Record], ns: Option<SocketAddr>) -> anyhow::Result<Vec<String>> {
    let resolver = resolver(ns)?;
    let mut problems = Vec::new();
    for r in records {
        match &r.expect {
            Expect::Spf(mechanisms) => {
                let spf: Vec<String> = txts(&resolver, &r.name)
                    .await
                    .into_iter()
                    .filter(|t| t.starts_with("v=spf1"))
                    .collect();
                match spf.as_slice() {
                    [] => problems.push(format!("SPF {}: missing; want: {}", r.name, r.line)),
                    [one] => {
                        let terms: Vec<&str> = one.split_whitespace().collect();
                        for m in mechanisms {
                            if !terms.iter().any(|t| t.trim_start_matches('+') == m) {
                                problems.push(format!("SPF {}: {m} is not listed", r.name));
                            }
                        }
                    }
                    _ => problems.push(format!(
                        "SPF {}: {} v=spf1 records (RFC 7208 allows one)",
                        r.name,
                        spf.len()
                    )),
                }
            }
            Expect::Dkim { public, key_file } => {
                let keys: Vec<Option<Vec<u8>>> = txts(&resolver, &r.name)
                    .await
                    .iter()
                    .filter(|t| t.contains("p="))
                    .map(|t| dkim_public(t))
                    .collect();
                if keys.is_empty() {
                    problems.push(format!("{} {}: missing; want: {}", r.what, r.name, r.line));
                } else if !keys.iter().any(|k| k.as_ref() == Some(public)) {
                    problems.push(format!(
                        "{} {}: public key does not match the key file {key_file}",
                        r.what, r.name
                    ));
                }
            }
            Expect::Dmarc => {
                if !txts(&resolver, &r.name)
                    .await
                    .iter()
                    .any(|t| t.starts_with("v=DMARC1"))
                {
                    problems.push(format!("DMARC {}: missing; want: {}", r.name, r.line));
                }
            }
            Expect::Mx(host) => {
                let found: Vec<String> = match resolver.mx_lookup(r.name.as_str()).await {
                    Ok(l) => l
                        .iter()
                        .map(|m| trim_name(&m.exchange().to_utf8()))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                if !found.iter().any(|f| f == host) {
                    problems.push(format!(
                        "bounce MX {}: {} (want {host})",
                        r.name,
                        if found.is_empty() {
                            "missing".to_owned()
                        } else {
                            format!("points at {}", found.join(", "))
                        }
                    ));
                }
            }
            Expect::Ptr(ip, host) => {
                // A PTR query, not `reverse_lookup`: that one answers from
                // /etc/hosts first, and the check is about what DNS publishes.
                let found: Vec<String> =
                    match resolver.lookup(r.name.as_str(), RecordType::PTR).await {
                        Ok(l) => l
                            .iter()
                            .filter_map(|d| match d {
                                RData::PTR(p) => Some(trim_name(&p.0.to_utf8())),
                                _ => None,
                            })
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                if !found.iter().any(|f| f == host) {
                    problems.push(format!(
                        "PTR {ip}: {} (want {host})",
                        if found.is_empty() {
                            "missing".to_owned()
                        } else {
                            format!("is {}", found.join(", "))
                        }
                    ));
                }
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("127.0.0.2".parse().unwrap()),
            "2.0.0.127.in-addr.arpa."
        );
        assert!(reverse_name("::1".parse().unwrap()).starts_with("1.0.0.0."));
    }

    #[test]
    fn dkim_public_reads_p_with_spaces() {
        assert_eq!(
            dkim_public("v=DKIM1; k=rsa; p=AQ ID").unwrap(),
            vec![1, 2, 3]
        );
        assert!(dkim_public("v=DKIM1; k=rsa").is_none());
    }
}
