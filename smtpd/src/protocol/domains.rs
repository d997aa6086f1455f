//! Which recipient domains this server accepts mail for.
//!
//! Owns: parsing the configured patterns (`example.com`, `*.example.com`, `*`) and
//! matching a recipient's domain against them. Must not: look anything up in DNS —
//! the decision is made on the accept path, from configuration alone.
//!
//! A sink that accepted mail for every domain while also relaying would be an open
//! relay; this one never relays, but a temporary-mailbox service still must not
//! collect mail for domains it does not serve, so anything outside the list gets
//! `550 5.7.1` (RFC 5321 §3.6.2: "relay access denied").

use std::collections::HashSet;
use std::fmt;

/// The accepted recipient domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPolicy {
    /// `*`: any domain (the default, as a temporary-mailbox sink usually wants).
    Any,
    /// Exact domains and subdomain wildcards, lowercase, without trailing dots.
    List {
        exact: HashSet<String>,
        /// From `*.example.com`: stored as `example.com`; matches `a.example.com`,
        /// `b.a.example.com`, but not `example.com` itself (list it separately).
        suffixes: Vec<String>,
    },
}

/// A configured domain pattern that is not a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl fmt::Display for DomainPatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.pattern, self.reason)
    }
}

impl std::error::Error for DomainPatternError {}

impl DomainPolicy {
    /// Parses patterns as given on the command line or in `server.accept_domains`.
    pub fn parse(patterns: &[String]) -> Result<Self, DomainPatternError> {
        let mut exact = HashSet::new();
        let mut suffixes = Vec::new();
        for raw in patterns {
            let pattern = raw.trim();
            if pattern == "*" {
                return Ok(Self::Any);
            }
            let err = |reason| DomainPatternError {
                pattern: raw.clone(),
                reason,
            };
            let (wildcard, domain) = match pattern.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, pattern),
            };
            let domain = domain.strip_suffix('.').unwrap_or(domain);
            if domain.contains('*') {
                return Err(err(
                    "is not a domain: `*` is allowed only as `*` or a leading `*.`",
                ));
            }
            if !is_domain(domain) {
                return Err(err(
                    "is not a domain (letters, digits, `-` and `.`-separated labels of 1 to 63 characters)",
                ));
            }
            let domain = domain.to_ascii_lowercase();
            if wildcard {
                suffixes.push(domain);
            } else {
                exact.insert(domain);
            }
        }
        Ok(Self::List { exact, suffixes })
    }

    /// Whether mail for `domain` (as written in a recipient address) is accepted.
    pub fn accepts(&self, domain: &str) -> bool {
        let Self::List { exact, suffixes } = self else {
            return true;
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        // Domains are case-insensitive (RFC 5321 §2.4); lowercase only when needed.
        let lower;
        let domain = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = domain.to_ascii_lowercase();
            lower.as_str()
        } else {
            domain
        };
        if exact.contains(domain) {
            return true;
        }
        suffixes.iter().any(|suffix| {
            domain.ends_with(suffix.as_str())
                && domain
                    .len()
                    .checked_sub(suffix.len())
                    .and_then(|end| end.checked_sub(1))
                    .and_then(|dot| domain.as_bytes().get(dot))
                    .is_some_and(|&b| b == b'.')
        })
    }
}

/// A DNS name as configured: labels of letters, digits, `-` and `_`, not starting or
/// ending with `-`, at most 63 octets each and 253 in total (RFC 1035 §2.3.4).
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> DomainPolicy {
        let v: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        DomainPolicy::parse(&v).unwrap()
    }

    #[test]
    fn star_accepts_everything() {
        let p = policy(&["example.com", "*"]);
        assert_eq!(p, DomainPolicy::Any);
        assert!(p.accepts("anything.example"));
    }

    #[test]
    fn exact_domains_are_case_insensitive() {
        let p = policy(&["Example.COM"]);
        assert!(p.accepts("example.com"));
        assert!(p.accepts("EXAMPLE.com"));
        assert!(p.accepts("example.com."));
        assert!(!p.accepts("sub.example.com"));
        assert!(!p.accepts("example.org"));
        assert!(!p.accepts("badexample.com"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = policy(&["*.example.net"]);
        assert!(p.accepts("a.example.net"));
        assert!(p.accepts("b.A.Example.net"));
        assert!(!p.accepts("example.net"));
        assert!(!p.accepts("badexample.net"));
        assert!(!p.accepts("net"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        for bad in [
            "a*b.com",
            "exa mple.com",
            "",
            "*.",
            "-a.com",
            "a..com",
            "**.com",
        ] {
            let err = DomainPolicy::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.pattern, bad);
            assert!(err.to_string().contains(bad));
        }
    }
}
