//! What an EHLO reply offers (RFC 5321 §4.1.1.1: one keyword, with parameters, per
//! line after the greeting line).
//!
//! Owns: reading the keywords a client acts on. Unknown keywords are ignored, as
//! RFC 5321 §2.2.2 asks.

use crate::reply::Reply;

/// Extensions a server offered, as far as a client here uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 6152: `BODY=8BITMIME` may be sent.
    pub eight_bit_mime: bool,
    /// RFC 1870: the declared maximum message size (`SIZE n`; 0 = no limit
    /// announced). `None` when SIZE was not offered.
    pub size: Option<u64>,
    /// RFC 3030 CHUNKING: `BDAT` may be used.
    pub chunking: bool,
    /// RFC 6531.
    pub smtputf8: bool,
}

impl Extensions {
    /// Reads the keyword lines of an EHLO reply (its first line is the greeting).
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut ext = Self::default();
        for line in &reply.lines {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "STARTTLS" => ext.starttls = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "CHUNKING" => ext.chunking = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                _ => {}
            }
        }
        ext
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reply::ReplyParser;

    #[test]
    fn keywords_are_read_case_insensitively_and_unknown_ones_ignored() {
        let mut p = ReplyParser::default();
        let mut reply = None;
        for line in [
            "250-mx.example greets you",
            "250-pipelining",
            "250-SIZE 1000",
            "250-X-UNKNOWN 1",
            "250-CHUNKING",
            "250-8BITMIME",
            "250 SMTPUTF8",
        ] {
            reply = p.line(line.as_bytes()).unwrap();
        }
        let ext = Extensions::from_ehlo(&reply.unwrap());
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                starttls: false,
                eight_bit_mime: true,
                size: Some(1000),
                chunking: true,
                smtputf8: true,
            }
        );
    }
}
