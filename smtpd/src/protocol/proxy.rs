//! The HAProxy PROXY protocol header that a load balancer puts before the SMTP
//! conversation, naming the real client.
//!
//! Owns: recognising and parsing version 1 (text) and version 2 (binary) headers as
//! specified in <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, with
//! the spec's length limits (§2.1: 107 bytes for v1) and our own cap on v2 TLVs.
//! Must not: read sockets, buffer, decide whether a peer is *allowed* to send a header
//! (only trusted proxies may; that is the listener's configuration), or interpret
//! TLVs (they are skipped).
//!
//! [`parse`] is called with the first bytes of a connection, however many have
//! arrived. It answers [`ProxyParse::Incomplete`] for every strict prefix of a valid
//! header and decides as early as the bytes allow: `EHLO` is [`ProxyError::NotProxy`]
//! at its first byte, `PROXY FOO` is [`ProxyError::Malformed`] at its `F`. A decision
//! is final: more bytes never change it. Bytes after the header are not consumed;
//! they are the start of the SMTP conversation.
//!
//! Strict where looseness would let a client choose its logged address: exactly one
//! space between v1 fields, `\r\n` only, addresses of the stated family, ports as
//! plain decimal, v2 version and command checked (§2.2).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The real client: source address (the client) and destination (our listener as
    /// the proxy saw it).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, v2 `LOCAL` or an unsupported family: keep the connection's own
    /// peer address.
    Local,
}

/// The outcome of [`parse`] when the bytes may still be, or are, a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParse {
    /// Not enough bytes yet to decide; call again with more (never returned once
    /// `input` is longer than the longest valid header).
    Incomplete,
    /// A complete header of `consumed` bytes.
    Done {
        header: ProxyHeader,
        consumed: usize,
    },
}

/// Why the bytes are not an acceptable PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither signature: the peer did not send a PROXY header at all.
    NotProxy,
    /// A signature, then something the spec does not allow.
    Malformed,
    /// A signature, but no complete header within the length limit.
    TooLong,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::NotProxy => "not a PROXY protocol header",
            ProxyError::Malformed => "malformed PROXY protocol header",
            ProxyError::TooLong => "PROXY protocol header too long",
        })
    }
}

impl std::error::Error for ProxyError {}

/// §2.1: "PROXY" and a single space.
const V1_PREFIX: &[u8] = b"PROXY ";
/// §2.1: the worst case, `PROXY UNKNOWN` with two full IPv6 addresses and ports.
const V1_MAX_BYTES: usize = 107;
/// §2.2: the binary signature, chosen so that it cannot start a text protocol.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// §2.2: signature, version/command, family/protocol, 2-byte length.
const V2_FIXED_BYTES: usize = 16;
/// §2.2: the largest address block (two 108-byte `AF_UNIX` paths).
const V2_MAX_ADDRESS_BYTES: usize = 216;
/// Our cap on TLVs (§2.2.1ff). The spec allows up to 64 KiB; real proxies send a few
/// dozen bytes (AWS VPC endpoint id, SSL version and CN), and an unauthenticated peer
/// must not make us wait for more.
const V2_MAX_TLV_BYTES: usize = 1024;
const V2_MAX_PAYLOAD_BYTES: usize = V2_MAX_ADDRESS_BYTES + V2_MAX_TLV_BYTES;

/// Longest header accepted (bytes): input beyond this without a complete header is an
/// error.
pub const MAX_PROXY_HEADER_BYTES: usize = V2_FIXED_BYTES + V2_MAX_PAYLOAD_BYTES;
const _: () = assert!(MAX_PROXY_HEADER_BYTES >= V1_MAX_BYTES);

/// Parses a PROXY header (v1 or v2) at the start of `input`.
pub fn parse(input: &[u8]) -> Result<ProxyParse, ProxyError> {
    if input.starts_with(V1_PREFIX) {
        parse_v1(input)
    } else if input.starts_with(V2_SIGNATURE) {
        parse_v2(input)
    } else if V1_PREFIX.starts_with(input) || V2_SIGNATURE.starts_with(input) {
        Ok(ProxyParse::Incomplete)
    } else {
        Err(ProxyError::NotProxy)
    }
}

// ---- Version 1 (§2.1) -------------------------------------------------------------

/// The v1 protocol words, each followed by what the spec allows after it.
const V1_TCP4: &[u8] = b"TCP4";
const V1_TCP6: &[u8] = b"TCP6";
const V1_UNKNOWN: &[u8] = b"UNKNOWN";

/// One step of the v1 parser: `Ok(None)` when the input ends before the step does.
type Step<T> = Result<Option<T>, ProxyError>;

/// `input` starts with [`V1_PREFIX`].
fn parse_v1(input: &[u8]) -> Result<ProxyParse, ProxyError> {
    // Only the first 107 bytes can belong to a header; a line that has not ended
    // there never will.
    let window = input.get(..V1_MAX_BYTES).unwrap_or(input);
    match v1_line(window)? {
        Some(done) => Ok(done),
        None if input.len() >= V1_MAX_BYTES => Err(ProxyError::TooLong),
        None => Ok(ProxyParse::Incomplete),
    }
}

/// Parses the line in `window`; `Ok(None)` when it ends before the line does.
fn v1_line(window: &[u8]) -> Step<ProxyParse> {
    let after_prefix = window.get(V1_PREFIX.len()..).ok_or(ProxyError::Malformed)?;
    let word_len = after_prefix
        .iter()
        .position(|b| !b.is_ascii_uppercase() && !b.is_ascii_digit())
        .unwrap_or(after_prefix.len());
    let (word, rest) = after_prefix.split_at(word_len);
    if rest.is_empty() {
        // The word is still arriving: fail as soon as it can be none of the three.
        let possible = [V1_TCP4, V1_TCP6, V1_UNKNOWN]
            .iter()
            .any(|w| w.starts_with(word));
        return if possible {
            Ok(None)
        } else {
            Err(ProxyError::Malformed)
        };
    }
    let family_v6 = match word {
        V1_TCP4 => false,
        V1_TCP6 => true,
        V1_UNKNOWN => return v1_unknown(window, rest),
        _ => return Err(ProxyError::Malformed),
    };
    let address_byte: fn(u8) -> bool = if family_v6 {
        |b| b.is_ascii_hexdigit() || b == b':' || b == b'.'
    } else {
        |b| b.is_ascii_digit() || b == b'.'
    };
    let rest = match separator(rest, b" ")? {
        Some(rest) => rest,
        None => return Ok(None),
    };
    let Some((source_ip, rest)) = field(rest, address_byte, b" ")? else {
        return Ok(None);
    };
    let Some((destination_ip, rest)) = field(rest, address_byte, b" ")? else {
        return Ok(None);
    };
    let Some((source_port, rest)) = field(rest, |b| b.is_ascii_digit(), b" ")? else {
        return Ok(None);
    };
    let Some((destination_port, rest)) = field(rest, |b| b.is_ascii_digit(), b"\r\n")? else {
        return Ok(None);
    };
    let (source_ip, destination_ip) = if family_v6 {
        (
            IpAddr::V6(parse_text::<Ipv6Addr>(source_ip)?),
            IpAddr::V6(parse_text::<Ipv6Addr>(destination_ip)?),
        )
    } else {
        (
            IpAddr::V4(parse_text::<Ipv4Addr>(source_ip)?),
            IpAddr::V4(parse_text::<Ipv4Addr>(destination_ip)?),
        )
    };
    Ok(Some(ProxyParse::Done {
        header: ProxyHeader::Proxied {
            source: SocketAddr::new(source_ip, v1_port(source_port)?),
            destination: SocketAddr::new(destination_ip, v1_port(destination_port)?),
        },
        consumed: window.len().saturating_sub(rest.len()),
    }))
}

/// §2.1: after `UNKNOWN` the receiver ignores everything up to the CRLF (a sender may
/// still write addresses there).
fn v1_unknown(window: &[u8], rest: &[u8]) -> Step<ProxyParse> {
    let rest = match rest.first() {
        Some(b' ') => {
            let skip = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(rest.len());
            rest.get(skip..).unwrap_or_default()
        }
        _ => rest,
    };
    Ok(separator(rest, b"\r\n")?.map(|rest| ProxyParse::Done {
        header: ProxyHeader::Local,
        consumed: window.len().saturating_sub(rest.len()),
    }))
}

/// A run of bytes matching `allowed`, then `sep`. `Ok(None)` when the input ends
/// first; an empty run is returned as such (and then fails to parse as a value).
fn field<'a>(input: &'a [u8], allowed: fn(u8) -> bool, sep: &[u8]) -> Step<(&'a [u8], &'a [u8])> {
    let len = input
        .iter()
        .position(|&b| !allowed(b))
        .unwrap_or(input.len());
    let (text, rest) = input.split_at(len);
    Ok(separator(rest, sep)?.map(|rest| (text, rest)))
}

/// `input` without its leading `sep`; `Ok(None)` when `input` is a strict prefix of it.
fn separator<'a>(input: &'a [u8], sep: &[u8]) -> Step<&'a [u8]> {
    if let Some(rest) = input.strip_prefix(sep) {
        Ok(Some(rest))
    } else if sep.starts_with(input) {
        Ok(None)
    } else {
        Err(ProxyError::Malformed)
    }
}

/// Addresses go through the standard parser, which (since Rust 1.58) rejects octal-
/// looking IPv4 octets such as `010`: a header should name one address, not two
/// depending on who reads it.
fn parse_text<T: std::str::FromStr>(text: &[u8]) -> Result<T, ProxyError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProxyError::Malformed)
}

/// §2.1: a decimal port in 0..=65535. Digits only (`u16::from_str` would take `+25`),
/// and no leading zero, which no sender writes.
fn v1_port(text: &[u8]) -> Result<u16, ProxyError> {
    match text {
        [b'0', _, ..] => Err(ProxyError::Malformed),
        _ if text.iter().all(u8::is_ascii_digit) => parse_text(text),
        _ => Err(ProxyError::Malformed),
    }
}

// ---- Version 2 (§2.2) -------------------------------------------------------------

const V2_VERSION: u8 = 0x2;
const V2_COMMAND_LOCAL: u8 = 0x0;
const V2_COMMAND_PROXY: u8 = 0x1;
/// §2.2 address family and transport protocol bytes.
const V2_UNSPEC: u8 = 0x00;
const V2_TCP4: u8 = 0x11;
const V2_UDP4: u8 = 0x12;
const V2_TCP6: u8 = 0x21;
const V2_UDP6: u8 = 0x22;
const V2_UNIX_STREAM: u8 = 0x31;
const V2_UNIX_DGRAM: u8 = 0x32;
const V2_TCP4_ADDRESS_BYTES: usize = 12;
const V2_TCP6_ADDRESS_BYTES: usize = 36;

/// `input` starts with [`V2_SIGNATURE`].
fn parse_v2(input: &[u8]) -> Result<ProxyParse, ProxyError> {
    let version_command = input.get(V2_SIGNATURE.len()).copied();
    let command = match version_command {
        // §2.2: any other version "must" be dropped; unassigned commands likewise.
        Some(b) if b >> 4 != V2_VERSION => return Err(ProxyError::Malformed),
        Some(b) if b & 0xf > V2_COMMAND_PROXY => return Err(ProxyError::Malformed),
        Some(b) => b & 0xf,
        None => return Ok(ProxyParse::Incomplete),
    };
    let Some(&family) = input.get(V2_SIGNATURE.len().saturating_add(1)) else {
        return Ok(ProxyParse::Incomplete);
    };
    // §2.2: values other than the seven listed "must be rejected as invalid", except
    // under LOCAL, where the family is ignored.
    let known_family = matches!(
        family,
        V2_UNSPEC | V2_TCP4 | V2_UDP4 | V2_TCP6 | V2_UDP6 | V2_UNIX_STREAM | V2_UNIX_DGRAM
    );
    if command == V2_COMMAND_PROXY && !known_family {
        return Err(ProxyError::Malformed);
    }
    let (Some(&high), Some(&low)) = (input.get(14), input.get(15)) else {
        return Ok(ProxyParse::Incomplete);
    };
    let payload_len = usize::from(u16::from_be_bytes([high, low]));
    if payload_len > V2_MAX_PAYLOAD_BYTES {
        return Err(ProxyError::TooLong);
    }
    let consumed = V2_FIXED_BYTES + payload_len;
    let Some(payload) = input.get(V2_FIXED_BYTES..consumed) else {
        return Ok(ProxyParse::Incomplete);
    };
    let header = if command == V2_COMMAND_LOCAL {
        // §2.2: a health check or the proxy's own traffic; addresses are ignored.
        ProxyHeader::Local
    } else {
        match family {
            V2_TCP4 => {
                let a = payload
                    .get(..V2_TCP4_ADDRESS_BYTES)
                    .ok_or(ProxyError::Malformed)?;
                ProxyHeader::Proxied {
                    source: SocketAddr::new(Ipv4Addr::from(array::<4>(a, 0)?).into(), port(a, 8)?),
                    destination: SocketAddr::new(
                        Ipv4Addr::from(array::<4>(a, 4)?).into(),
                        port(a, 10)?,
                    ),
                }
            }
            V2_TCP6 => {
                let a = payload
                    .get(..V2_TCP6_ADDRESS_BYTES)
                    .ok_or(ProxyError::Malformed)?;
                ProxyHeader::Proxied {
                    source: SocketAddr::new(
                        Ipv6Addr::from(array::<16>(a, 0)?).into(),
                        port(a, 32)?,
                    ),
                    destination: SocketAddr::new(
                        Ipv6Addr::from(array::<16>(a, 16)?).into(),
                        port(a, 34)?,
                    ),
                }
            }
            // UNSPEC, UDP and unix sockets say nothing usable about an SMTP client:
            // the spec lets the receiver fall back to the real endpoints.
            _ => ProxyHeader::Local,
        }
    };
    // TLVs (the rest of the payload) are skipped unread.
    Ok(ProxyParse::Done { header, consumed })
}

/// `N` bytes of `bytes` from `at`.
fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ProxyError> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(ProxyError::Malformed)
}

/// A big-endian port at `at`.
fn port(bytes: &[u8], at: usize) -> Result<u16, ProxyError> {
    array::<2>(bytes, at).map(u16::from_be_bytes)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    fn done(header: ProxyHeader, consumed: usize) -> Result<ProxyParse, ProxyError> {
        Ok(ProxyParse::Done { header, consumed })
    }

    /// A v2 header: signature, the two command/family bytes, length, payload.
    fn v2(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn v2_addresses(source: SocketAddr, destination: SocketAddr) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        let family = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                V2_TCP4
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                V2_TCP6
            }
            _ => unreachable!("mixed families"),
        };
        out.extend_from_slice(&source.port().to_be_bytes());
        out.extend_from_slice(&destination.port().to_be_bytes());
        (family, out)
    }

    /// Two TLVs as a proxy would send them: PP2_TYPE_AUTHORITY and PP2_TYPE_NOOP.
    const TLVS: &[u8] = b"\x02\x00\x07mx.test\x04\x00\x03\0\0\0";

    fn assert_prefixes_incomplete(header: &[u8]) {
        for end in 0..header.len() {
            assert_eq!(
                parse(&header[..end]),
                Ok(ProxyParse::Incomplete),
                "prefix {:?}",
                &header[..end]
            );
        }
    }

    fn valid_headers() -> Vec<Vec<u8>> {
        let (f4, a4) = v2_addresses(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:25".parse().unwrap(),
        );
        let (f6, a6) = v2_addresses(
            "[2001:db8::1]:56324".parse().unwrap(),
            "[2001:db8::25]:25".parse().unwrap(),
        );
        vec![
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::ffff:198.51.100.7 56324 25\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:fff 65535 65535\r\n".to_vec(),
            v2(0x21, f4, &[a4.as_slice(), TLVS].concat()),
            v2(0x21, f6, &[a6.as_slice(), TLVS].concat()),
            v2(0x20, V2_UNSPEC, b""),
            v2(0x21, V2_UNSPEC, TLVS),
        ]
    }

    #[test]
    fn v1_tcp4() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n";
        assert_eq!(
            parse(h),
            done(proxied("192.0.2.1:56324", "198.51.100.7:25"), h.len())
        );
    }

    #[test]
    fn v1_tcp6() {
        let h = b"PROXY TCP6 2001:db8::1 ::ffff:198.51.100.7 0 65535\r\n";
        assert_eq!(
            parse(h),
            done(
                proxied("[2001:db8::1]:0", "[::ffff:198.51.100.7]:65535"),
                h.len()
            )
        );
    }

    #[test]
    fn v1_longest_tcp6_header_fits() {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let h = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        let got = parse(h.as_bytes());
        assert!(matches!(got, Ok(ProxyParse::Done { consumed, .. }) if consumed == h.len()));
    }

    #[test]
    fn v1_unknown_is_local_and_ignores_the_rest_of_the_line() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), done(ProxyHeader::Local, 15));
        let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse(h), done(ProxyHeader::Local, h.len()));
        // §2.1's worst case: exactly 107 bytes.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let h = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(h.len(), V1_MAX_BYTES);
        assert_eq!(parse(h.as_bytes()), done(ProxyHeader::Local, V1_MAX_BYTES));
    }

    #[test]
    fn v2_tcp4_with_tlvs() {
        let (family, addresses) = v2_addresses(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:25".parse().unwrap(),
        );
        let h = v2(0x21, family, &[addresses.as_slice(), TLVS].concat());
        assert_eq!(
            parse(&h),
            done(proxied("192.0.2.1:56324", "198.51.100.7:25"), h.len())
        );
    }

    #[test]
    fn v2_tcp6_with_tlvs() {
        let (family, addresses) = v2_addresses(
            "[2001:db8::1]:56324".parse().unwrap(),
            "[2001:db8::25]:25".parse().unwrap(),
        );
        let h = v2(0x21, family, &[addresses.as_slice(), TLVS].concat());
        assert_eq!(
            parse(&h),
            done(proxied("[2001:db8::1]:56324", "[2001:db8::25]:25"), h.len())
        );
    }

    #[test]
    fn v2_local_ignores_family_and_addresses() {
        assert_eq!(
            parse(&v2(0x20, V2_UNSPEC, b"")),
            done(ProxyHeader::Local, 16)
        );
        let (_, addresses) = v2_addresses(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        );
        let h = v2(0x20, V2_TCP4, &addresses);
        assert_eq!(parse(&h), done(ProxyHeader::Local, h.len()));
        // Under LOCAL even an unlisted family is ignored (§2.2).
        assert_eq!(
            parse(&v2(0x20, 0xff, TLVS)),
            done(ProxyHeader::Local, 16 + TLVS.len())
        );
    }

    #[test]
    fn v2_unspec_udp_and_unix_are_local() {
        for family in [V2_UNSPEC, V2_UDP4, V2_UDP6, V2_UNIX_STREAM, V2_UNIX_DGRAM] {
            let h = v2(0x21, family, TLVS);
            assert_eq!(parse(&h), done(ProxyHeader::Local, h.len()), "{family:#x}");
        }
        let h = v2(0x21, V2_UNIX_STREAM, &[0; V2_MAX_ADDRESS_BYTES]);
        assert_eq!(parse(&h), done(ProxyHeader::Local, h.len()));
    }

    #[test]
    fn bytes_after_the_header_are_not_consumed() {
        for h in valid_headers() {
            let mut input = h.clone();
            input.extend_from_slice(b"EHLO client.example\r\n");
            assert_eq!(
                parse(&input),
                parse(&h),
                "{:?}",
                String::from_utf8_lossy(&h)
            );
            assert!(
                matches!(parse(&input), Ok(ProxyParse::Done { consumed, .. }) if consumed == h.len())
            );
        }
    }

    #[test]
    fn every_strict_prefix_of_a_valid_header_is_incomplete() {
        for h in valid_headers() {
            assert_prefixes_incomplete(&h);
        }
    }

    #[test]
    fn smtp_and_http_are_not_proxy_at_the_first_byte() {
        assert_eq!(parse(b"EHLO x\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"E"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"G"), Err(ProxyError::NotProxy));
        // Near misses of either signature.
        assert_eq!(parse(b"PROXY\t"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"proxy "), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIT\r"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\nQUIT\r\n"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n"[..],
            b"PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY UNKNOWN\n",
            b"PROXY UNKNOWN \n",
            b"PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",
            b"PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 010.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 ::1 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 ::1%eth0 1 2\r\n",
            b"PROXY TCP6 ::g ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 025 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 0x19\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 \r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_malformed_is_decided_before_the_line_ends() {
        assert_eq!(parse(b"PROXY F"), Err(ProxyError::Malformed));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4:"), Err(ProxyError::Malformed));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4\t"), Err(ProxyError::Malformed));
    }

    #[test]
    fn v1_without_crlf_in_107_bytes_is_too_long() {
        let mut h = b"PROXY UNKNOWN ".to_vec();
        h.resize(V1_MAX_BYTES - 1, b'x');
        assert_eq!(parse(&h), Ok(ProxyParse::Incomplete));
        h.push(b'x');
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        // A CRLF just past the limit is too late.
        h.extend_from_slice(b"\r\n");
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        // An address field that never ends.
        let mut h = b"PROXY TCP6 ".to_vec();
        h.resize(200, b'f');
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
    }

    #[test]
    fn v2_bad_version_or_command_is_malformed() {
        for version_command in [0x11, 0x31, 0x01, 0xf1, 0x22, 0x2f] {
            let mut h = V2_SIGNATURE.to_vec();
            h.push(version_command);
            assert_eq!(
                parse(&h),
                Err(ProxyError::Malformed),
                "{version_command:#x}"
            );
        }
    }

    #[test]
    fn v2_unlisted_family_is_malformed() {
        for family in [0x01, 0x10, 0x13, 0x23, 0x41, 0xff] {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[0x21, family]);
            assert_eq!(parse(&h), Err(ProxyError::Malformed), "{family:#x}");
        }
    }

    #[test]
    fn v2_address_block_shorter_than_its_family_is_malformed() {
        assert_eq!(
            parse(&v2(0x21, V2_TCP4, &[0; 11])),
            Err(ProxyError::Malformed)
        );
        assert_eq!(
            parse(&v2(0x21, V2_TCP6, &[0; 35])),
            Err(ProxyError::Malformed)
        );
        assert_eq!(
            parse(&v2(0x21, V2_TCP6, &[0; 12])),
            Err(ProxyError::Malformed)
        );
    }

    #[test]
    fn v2_length_over_the_cap_is_too_long_at_once() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, V2_TCP4]);
        let over = u16::try_from(V2_MAX_PAYLOAD_BYTES + 1).unwrap();
        h.extend_from_slice(&over.to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        h.truncate(14);
        h.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        // The largest accepted header is exactly MAX_PROXY_HEADER_BYTES.
        let h = v2(0x21, V2_UNSPEC, &[0; V2_MAX_PAYLOAD_BYTES]);
        assert_eq!(h.len(), MAX_PROXY_HEADER_BYTES);
        assert_eq!(parse(&h), done(ProxyHeader::Local, MAX_PROXY_HEADER_BYTES));
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            ProxyError::TooLong.to_string(),
            "PROXY protocol header too long"
        );
    }

    fn socket_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<[u8; 4]>(),
                any::<u16>()
            )
                .prop_map(|(s, sp, d, dp)| (
                    SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                    SocketAddr::new(Ipv4Addr::from(d).into(), dp)
                )),
            (
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<[u8; 16]>(),
                any::<u16>()
            )
                .prop_map(|(s, sp, d, dp)| (
                    SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                    SocketAddr::new(Ipv6Addr::from(d).into(), dp)
                )),
        ]
    }

    /// A valid header for a random address pair, v1 or v2 (with random TLV bytes),
    /// and the header it must parse to.
    fn valid_header() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
        (
            socket_pair(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..=V2_MAX_TLV_BYTES),
        )
            .prop_map(|((source, destination), text, tlvs)| {
                let header = ProxyHeader::Proxied {
                    source,
                    destination,
                };
                if text {
                    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                    let line = format!(
                        "PROXY {family} {} {} {} {}\r\n",
                        source.ip(),
                        destination.ip(),
                        source.port(),
                        destination.port()
                    );
                    (line.into_bytes(), header)
                } else {
                    let (family, mut payload) = v2_addresses(source, destination);
                    payload.extend_from_slice(&tlvs);
                    (v2(0x21, family, &payload), header)
                }
            })
    }

    /// Arbitrary bytes, and arbitrary bytes behind each signature (to get past
    /// `NotProxy`), in the v1 alphabet too.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        let v1_alphabet = prop::sample::select(b"PROXYTCP46UNKOW 0123456789abcdef.:\r\n".to_vec());
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1400),
            prop::collection::vec(v1_alphabet, 0..140).prop_map(|b| [V1_PREFIX, &b[..]].concat()),
            prop::collection::vec(any::<u8>(), 0..1400)
                .prop_map(|b| [&V2_SIGNATURE[..], &b[..]].concat()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// TCP segmentation: a header split anywhere is Incomplete until its last
        /// byte, then parses to the same header whatever follows.
        #[test]
        fn any_split_of_a_valid_header_is_incomplete_then_done(
            (bytes, header) in valid_header(),
            cut in any::<prop::sample::Index>(),
            trailing in prop::collection::vec(any::<u8>(), 0..32),
        ) {
            let cut = cut.index(bytes.len());
            prop_assert_eq!(parse(&bytes[..cut]), Ok(ProxyParse::Incomplete));
            let mut input = bytes.clone();
            input.extend_from_slice(&trailing);
            prop_assert_eq!(parse(&input), done(header, bytes.len()));
        }

        /// Arbitrary input never panics, Incomplete stays under the bound, and a
        /// decision on a prefix is the decision on the whole.
        #[test]
        fn arbitrary_bytes_never_panic_and_decisions_are_final(
            input in noise(),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = parse(&input);
            match whole {
                Ok(ProxyParse::Incomplete) => prop_assert!(input.len() < MAX_PROXY_HEADER_BYTES),
                Ok(ProxyParse::Done { consumed, .. }) => {
                    prop_assert!(consumed <= input.len() && consumed <= MAX_PROXY_HEADER_BYTES);
                    prop_assert_eq!(parse(&input[..consumed]), whole);
                }
                Err(_) => {}
            }
            let prefix = parse(&input[..cut.index(input.len() + 1)]);
            if prefix != Ok(ProxyParse::Incomplete) {
                prop_assert_eq!(prefix, whole);
            }
        }
    }
}
