//! Feedback-loop reports (ARF, RFC 5965): what a complaint says and which of our
//! messages it is about.
//!
//! Owns: reading a `multipart/report; report-type=feedback-report` message (RFC 5965
//! §2) — its `message/feedback-report` part's `Feedback-Type` field (§3.1) and the
//! original message or its headers (the third part, `message/rfc822` or
//! `text/rfc822-headers`, §2 c) — and listing the addresses those headers carry, the
//! `Return-Path` first, so the intake can find a VERP return path among them.
//! Must not: trust any of it (the intake verifies the VERP tag) nor touch the store.
//!
//! Parsed with mail-parser rather than mail-auth's `report` feature: the report part
//! is a plain header block, and mail-parser is what the bounce intake already uses.

use mail_parser::{MessageParser, MimeHeaders};

/// The most addresses taken from an original's headers (bounded work per report).
const MAX_CANDIDATES: usize = 64;

/// What a feedback report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// `Feedback-Type` (RFC 5965 §3.1: `abuse`, `fraud`, `other`, …), lowercased.
    pub feedback_type: String,
    /// Addresses in the original's headers: its `Return-Path` first, then every
    /// other one in header order, lowercased, without duplicates.
    pub addresses: Vec<String>,
}

/// The complaint in `raw`, or None when it is not an ARF report (no
/// `message/feedback-report` part with a `Feedback-Type`, or no original headers).
pub fn parse(raw: &[u8]) -> Option<Complaint> {
    let message = MessageParser::default().parse(raw)?;
    let is_report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("feedback-report"))
    });
    if !is_report {
        return None;
    }
    let mut feedback_type = None;
    let mut original: Option<Vec<u8>> = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (ct.ctype().to_ascii_lowercase().as_str(), sub.as_str()) {
            ("message", "feedback-report") if feedback_type.is_none() => {
                let fields = MessageParser::new().parse_headers(part.contents())?;
                feedback_type = fields
                    .header_raw("Feedback-Type")
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty());
            }
            ("message", "rfc822") | ("text", "rfc822-headers") if original.is_none() => {
                original = Some(part.contents().to_vec());
            }
            _ => {}
        }
    }
    let feedback_type = feedback_type?;
    let original = original?;
    let headers = MessageParser::new().parse_headers(&original)?;
    let mut addresses: Vec<String> = Vec::new();
    let mut add = |text: &str| {
        for token in text.split(|c: char| {
            c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\'')
        }) {
            let token = token.trim_end_matches('.').to_ascii_lowercase();
            if token.contains('@')
                && addresses.len() < MAX_CANDIDATES
                && !addresses.contains(&token)
            {
                addresses.push(token);
            }
        }
    };
    if let Some(rp) = headers.header_raw("Return-Path") {
        add(rp);
    }
    for h in headers.headers() {
        if let Some(text) = headers.header_raw(h.name.as_str()) {
            add(text);
        }
    }
    Some(Complaint {
        feedback_type,
        addresses,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// RFC 5965 Appendix B.2's example, with a VERP return path in the original.
    const SAMPLE: &str = "From: <abusedesk@example.com>\r\n\
Date: Thu, 8 Mar 2005 17:40:36 EDT\r\n\
Subject: FW: Earn money\r\n\
To: <fbl@bounce.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; \
boundary=\"part1_13d.2e68ed54_boundary\"\r\n\
\r\n\
--part1_13d.2e68ed54_boundary\r\n\
Content-Type: text/plain; charset=\"US-ASCII\"\r\n\
\r\n\
This is an email abuse report for an email message received from IP\r\n\
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.\r\n\
\r\n\
--part1_13d.2e68ed54_boundary\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: Abuse\r\n\
User-Agent: SomeGenerator/1.0\r\n\
Version: 1\r\n\
Original-Mail-From: <bounces+42-abc@bounce.test>\r\n\
Original-Rcpt-To: <user@example.com>\r\n\
\r\n\
--part1_13d.2e68ed54_boundary\r\n\
Content-Type: message/rfc822\r\n\
Content-Disposition: inline\r\n\
\r\n\
Return-Path: <Bounces+42-abc@bounce.test>\r\n\
From: <somespammer@example.net>\r\n\
Received: from mailserver.example.net by example.com; Thu, 8 Mar 2005\r\n\
To: Undisclosed Recipients <user@example.com>\r\n\
Subject: Earn money\r\n\
\r\n\
Spam Spam Spam\r\n\
--part1_13d.2e68ed54_boundary--\r\n";

    #[test]
    fn arf_report_gives_feedback_type_and_return_path_first() {
        let c = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(c.feedback_type, "abuse");
        assert_eq!(c.addresses[0], "bounces+42-abc@bounce.test");
        assert!(c.addresses.contains(&"user@example.com".to_owned()));
    }

    #[test]
    fn rfc822_headers_part_works_like_a_whole_message() {
        let raw = SAMPLE
            .replace("message/rfc822", "text/rfc822-headers")
            .replace("\r\nSpam Spam Spam\r\n", "");
        let c = parse(raw.as_bytes()).unwrap();
        assert_eq!(c.addresses[0], "bounces+42-abc@bounce.test");
    }

    #[test]
    fn mail_that_is_not_a_feedback_report_is_none() {
        assert_eq!(parse(b"Subject: hi\r\n\r\nplease stop\r\n"), None);
        let dsn = SAMPLE.replace("report-type=feedback-report", "report-type=delivery-status");
        assert_eq!(parse(dsn.as_bytes()), None);
        let no_type = SAMPLE.replace("Feedback-Type: Abuse\r\n", "");
        assert_eq!(parse(no_type.as_bytes()), None);
    }
}
