//! SMTP replies as a client reads them (RFC 5321 §4.2, enhanced codes RFC 3463).
//!
//! Owns: parsing reply lines into a [`Reply`] (code, enhanced status, text) and the
//! bounds on what a server may send us. Must not: do I/O.

use std::fmt;

use crate::enhanced::EnhancedCode;

/// Longest reply line we accept (RFC 5321 §4.5.3.1.5 says 512 octets; real servers
/// send longer texts, so allow some slack but stay bounded).
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply (a hostile server cannot make us buffer forever).
pub const MAX_REPLY_LINES: usize = 128;

/// A complete (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code such as `5.1.1`, when the first line carries one.
    pub status: Option<EnhancedCode>,
    /// The text of all lines (without code and enhanced status), joined by `\n`.
    pub text: String,
    /// Lines after the first, as sent (EHLO keywords live there).
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
    /// The reply as one line for logs and the delivery log: `550 5.1.1 text`.
    pub fn one_line(&self) -> String {
        let text = self.text.replace('\n', " / ");
        match &self.status {
            Some(s) => format!("{} {} {}", self.code, s, text),
            None => format!("{} {}", self.code, text),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// A reply line that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("multi-line reply changed its code from {0} to {1}")]
    CodeChanged(u16, u16),
}

/// Accumulates reply lines until the last one.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    first_text: String,
    texts: Vec<String>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line (without CRLF). Returns the reply once the last line is in.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        let line = String::from_utf8_lossy(line);
        let bytes = line.as_bytes();
        let malformed = || ReplyError::Malformed(line.chars().take(80).collect());
        if bytes.len() < 3 || !bytes.iter().take(3).all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(malformed)?;
        if !(200..600).contains(&code) {
            return Err(malformed());
        }
        let (last, text) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, line.get(4..).unwrap_or("")),
            Some(b'-') => (false, line.get(4..).unwrap_or("")),
            Some(_) => return Err(malformed()),
        };
        match self.code {
            Some(first) if first != code => return Err(ReplyError::CodeChanged(first, code)),
            Some(_) => self.lines.push(text.to_owned()),
            None => {
                self.code = Some(code);
                self.first_text = text.to_owned();
            }
        }
        self.texts.push(text.to_owned());
        if self.texts.len() > MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        if !last {
            return Ok(None);
        }
        let parser = std::mem::take(self);
        let (status, first) = EnhancedCode::split_text(code, &parser.first_text);
        let mut texts = parser.texts;
        if let Some(t) = texts.first_mut() {
            *t = first.to_owned();
        }
        Ok(Some(Reply {
            code,
            status,
            text: texts.join("\n"),
            lines: parser.lines,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Option<Reply>, ReplyError> {
        let mut p = ReplyParser::default();
        let mut out = None;
        for l in lines {
            out = p.line(l.as_bytes())?;
        }
        Ok(out)
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let r = parse(&["550 5.1.1 No such user"]).unwrap().unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.status, Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(r.text, "No such user");
        assert!(r.is_permanent());
        assert_eq!(r.one_line(), "550 5.1.1 No such user");
    }

    #[test]
    fn multi_line_ehlo_keeps_keyword_lines() {
        let mut p = ReplyParser::default();
        assert_eq!(p.line(b"250-mx.example Hello").unwrap(), None);
        assert_eq!(p.line(b"250-PIPELINING").unwrap(), None);
        let r = p.line(b"250 SIZE 1000").unwrap().unwrap();
        assert_eq!(r.lines, ["PIPELINING", "SIZE 1000"]);
        assert_eq!(r.status, None);
        // The parser is ready for the next reply.
        assert_eq!(p.line(b"221 bye").unwrap().unwrap().code, 221);
    }

    #[test]
    fn mismatched_or_malformed_enhanced_codes_stay_text() {
        let r = parse(&["450 5.1.1 odd"]).unwrap().unwrap();
        assert_eq!(r.status, None);
        assert_eq!(r.text, "5.1.1 odd");
        let r = parse(&["250 2.0 queued"]).unwrap().unwrap();
        assert_eq!(r.status, None);
        let r = parse(&["250"]).unwrap().unwrap();
        assert_eq!((r.code, r.text.as_str()), (250, ""));
    }

    #[test]
    fn protocol_violations_are_errors() {
        assert!(matches!(parse(&["hello"]), Err(ReplyError::Malformed(_))));
        assert!(matches!(parse(&["25"]), Err(ReplyError::Malformed(_))));
        assert!(matches!(parse(&["999 x"]), Err(ReplyError::Malformed(_))));
        assert!(matches!(parse(&["250x"]), Err(ReplyError::Malformed(_))));
        assert_eq!(
            parse(&["250-a", "251 b"]),
            Err(ReplyError::CodeChanged(250, 251))
        );
        let long = format!("250 {}", "x".repeat(MAX_REPLY_LINE));
        assert_eq!(parse(&[&long]), Err(ReplyError::LineTooLong));
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_REPLY_LINES + 1).collect();
        assert_eq!(parse(&many), Err(ReplyError::TooManyLines));
    }
}
