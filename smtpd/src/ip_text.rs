//! An IP address as text, written without `core::fmt`'s machinery for IPv4.
//!
//! Why: every message writes its client's address three times (the `ip_addr`
//! column, the `Received:` header, the transaction log line), and std's `Display`
//! for `Ipv4Addr` costs ≈ 4,000 instructions each (it formats four numbers
//! through `write!` and handles width and padding): more than the rest of the log
//! line. Must: produce exactly std's text (IPv6 is std's own).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// `Display` of an address: dotted quad for IPv4, std's RFC 5952 form for IPv6.
#[derive(Debug, Clone, Copy)]
pub struct IpText(pub IpAddr);

impl fmt::Display for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => f.write_str(dotted(v4).as_str()),
            IpAddr::V6(v6) => fmt::Display::fmt(&v6, f),
        }
    }
}

/// At most `255.255.255.255`.
struct Dotted {
    buf: [u8; 15],
    len: usize,
}

impl Dotted {
    fn as_str(&self) -> &str {
        // Only ASCII digits and dots are written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

fn dotted(ip: Ipv4Addr) -> Dotted {
    let mut out = Dotted {
        buf: [0; 15],
        len: 0,
    };
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.buf[out.len] = b'.';
            out.len += 1;
        }
        if octet >= 100 {
            out.buf[out.len] = b'0' + octet / 100;
            out.len += 1;
        }
        if octet >= 10 {
            out.buf[out.len] = b'0' + octet / 10 % 10;
            out.len += 1;
        }
        out.buf[out.len] = b'0' + octet % 10;
        out.len += 1;
    }
    out
}

/// Appends the address as text.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out.extend_from_slice(dotted(v4).as_str().as_bytes()),
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_is_std_text_for_every_octet_value() {
        for a in 0..=255u8 {
            for b in [0u8, 1, 9, 10, 99, 100, 199, 255] {
                let ip = IpAddr::V4(Ipv4Addr::new(a, b, 255 - a, a.wrapping_mul(7)));
                assert_eq!(IpText(ip).to_string(), ip.to_string());
                let mut pushed = b"x".to_vec();
                push_ip(&mut pushed, ip);
                assert_eq!(pushed, format!("x{ip}").into_bytes());
            }
        }
    }

    #[test]
    fn ipv6_is_std_text() {
        for text in ["::1", "2001:db8::5", "fe80::1:2:3:4", "::ffff:192.0.2.7"] {
            let ip: IpAddr = text.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_eq!(IpText(ip).to_string(), ip.to_string());
        }
    }
}
