//! Host names: the machine's own, and which names may stand in an SMTP greeting,
//! an EHLO and a `Received:` header.
//!
//! Owns: RFC 5321 §4.1.1.1 / §4.1.3 for what we send about ourselves: a domain name
//! or an address literal, nothing that could break a reply line or a header. Must
//! not: resolve names (no network at start).

use crate::config::{ConfigError, invalid};

/// Longest host name (RFC 1035 §2.3.4: 255 octets).
pub const MAX_HOSTNAME_BYTES: usize = 255;

/// The kernel's host name, if it is usable as one (`localhost` otherwise).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| is_hostname(s))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Letters, digits, `-`, `.`, and the `[]:` of an address literal; 1 to 255 octets.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOSTNAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
}

/// [`is_hostname`], as a configuration check of `field`.
pub fn check_hostname(field: &'static str, name: &str) -> Result<(), ConfigError> {
    if is_hostname(name) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} is not a host name (letters, digits, '-', '.', at most 255)"),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_literals_pass_and_header_breakers_do_not() {
        for ok in [
            "mx.example.com",
            "a",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "mx-1_b",
        ] {
            assert!(is_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "mx example",
            "mx\r\nX: y",
            "mx\t",
            "ü.example",
            &"a".repeat(256),
        ] {
            assert!(!is_hostname(bad), "{bad:?}");
        }
        let e = check_hostname("delivery.helo_name", "bad name").unwrap_err();
        assert!(e.to_string().starts_with("delivery.helo_name: "), "{e}");
        assert!(is_hostname(&system_hostname()));
    }
}
