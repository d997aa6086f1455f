//! Enhanced mail system status codes (RFC 3463 §2, RFC 2034): `class.subject.detail`.
//!
//! Owns: the typed value and its text form. A code is carried by value
//! (`5.1.1` is `{ class: 5, subject: 1, detail: 1 }`), so code that classifies a
//! failure compares numbers, never string prefixes.

use std::fmt;
use std::str::FromStr;

/// `class.subject.detail`; class is 2 (success), 4 (persistent) or 5 (permanent),
/// subject and detail are 0 to 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

/// Text that is not an enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an enhanced status code (class.subject.detail, class 2, 4 or 5)")]
pub struct NotEnhanced;

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// A 5.x.x code: the failure is permanent.
    pub fn is_permanent(self) -> bool {
        self.class == 5
    }

    /// Splits `5.1.1 User unknown` into the code and the rest of the text, when the
    /// text starts with a well-formed code whose class matches the reply code's
    /// first digit (RFC 2034 §4). Otherwise the whole text is returned.
    pub fn split_text(reply_code: u16, text: &str) -> (Option<Self>, &str) {
        let (candidate, rest) = text.split_once(' ').unwrap_or((text, ""));
        match candidate.parse::<Self>() {
            Ok(code) if u16::from(code.class) == reply_code / 100 => (Some(code), rest),
            _ => (None, text),
        }
    }
}

impl FromStr for EnhancedCode {
    type Err = NotEnhanced;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let mut number = |max_digits: usize| -> Result<u16, NotEnhanced> {
            let p = parts.next().ok_or(NotEnhanced)?;
            if p.is_empty() || p.len() > max_digits || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NotEnhanced);
            }
            p.parse().map_err(|_| NotEnhanced)
        };
        let class = number(1)?;
        let subject = number(3)?;
        let detail = number(3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return Err(NotEnhanced);
        }
        Ok(Self {
            class: u8::try_from(class).map_err(|_| NotEnhanced)?,
            subject,
            detail,
        })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_class_subject_detail() {
        let c: EnhancedCode = "5.1.1".parse().unwrap();
        assert_eq!(c, EnhancedCode::new(5, 1, 1));
        assert_eq!(c.to_string(), "5.1.1");
        assert!(c.is_permanent());
        assert_eq!("4.7.999".parse::<EnhancedCode>().unwrap().detail, 999);
        for bad in [
            "", "5.1", "5.1.1.1", "3.1.1", "5..1", "5.1.1000", "55.1.1", "a.b.c", "5.1.x",
        ] {
            assert_eq!(bad.parse::<EnhancedCode>(), Err(NotEnhanced), "{bad}");
        }
    }

    #[test]
    fn split_text_needs_the_matching_class() {
        assert_eq!(
            EnhancedCode::split_text(550, "5.1.1 No such user"),
            (Some(EnhancedCode::new(5, 1, 1)), "No such user")
        );
        assert_eq!(
            EnhancedCode::split_text(450, "5.1.1 odd"),
            (None, "5.1.1 odd")
        );
        assert_eq!(
            EnhancedCode::split_text(250, "2.0 queued"),
            (None, "2.0 queued")
        );
        assert_eq!(
            EnhancedCode::split_text(250, "2.0.0"),
            (Some(EnhancedCode::new(2, 0, 0)), "")
        );
    }
}
