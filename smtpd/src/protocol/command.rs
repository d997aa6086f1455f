//! SMTP command lines: the verb table and argument syntax.
//!
//! Owns: turning one command line (CRLF already removed, at most 512 octets) into a
//! [`Command`], or the [`CommandError`] that says which reply it deserves. RFC 5321
//! §4.1.1 (commands), §4.1.2 (syntax), RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME),
//! RFC 6531 (SMTPUTF8), RFC 3030 (BDAT, BODY=BINARYMIME). Must not: know about sessions or state; parsing the same line
//! always gives the same result.

use super::address::{Mailbox, PathError, parse_path, split_path};
use super::reply::Reply;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const MAX_COMMAND_LINE_BYTES: usize = 512;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(Mailbox),
    Data,
    /// RFC 3030 §2: `BDAT <size> [LAST]`; exactly `size` octets of message follow
    /// the command line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    /// RFC 3207.
    StartTls,
    /// A command we recognise but do not offer (502).
    NotImplemented,
}

/// `MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    pub sender: Mailbox,
    /// RFC 1870 SIZE; `u64::MAX` when the number does not fit (it is too big anyway).
    pub size: Option<u64>,
    /// BODY=8BITMIME or BODY=BINARYMIME.
    pub body_8bit: bool,
    /// BODY=BINARYMIME (RFC 3030 §3): the content is sent with BDAT only and may
    /// hold any octet, so no line rules apply to it.
    pub binary: bool,
    pub smtputf8: bool,
}

/// A command line that cannot be executed, by the reply it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    Unrecognized,
    Syntax,
    HeloSyntax,
    BadSender,
    BadRecipient,
    NonAsciiAddress,
    UnknownParameter,
    /// A BDAT line whose size cannot be read: the chunk's end is unknown, so the
    /// session cannot find the next command and ends.
    BdatSyntax,
}

impl CommandError {
    pub fn reply(self) -> Reply {
        match self {
            Self::Unrecognized => Reply::Unrecognized,
            Self::Syntax => Reply::SyntaxError,
            Self::HeloSyntax => Reply::HeloSyntax,
            Self::BadSender => Reply::BadSender,
            Self::BadRecipient => Reply::BadRecipient,
            Self::NonAsciiAddress => Reply::NonAsciiAddress,
            Self::UnknownParameter => Reply::UnknownParameter,
            Self::BdatSyntax => Reply::BdatSyntax,
        }
    }
}

/// A command line's verb, for counting commands (`smtpd_commands_total{verb}`): the
/// verbs we act on, `other` for the ones we know and refuse (502), `unknown` for
/// the rest. The label set is fixed, whatever a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Quit,
    Noop,
    StartTls,
    Help,
    Vrfy,
    Other,
    Unknown,
}

impl Verb {
    /// How many verbs there are (the size of a per-verb tally).
    pub const KINDS: usize = 14;
    /// Every verb, in [`Verb::index`] order.
    pub const ALL: [Self; Self::KINDS] = [
        Self::Ehlo,
        Self::Helo,
        Self::Mail,
        Self::Rcpt,
        Self::Data,
        Self::Bdat,
        Self::Rset,
        Self::Quit,
        Self::Noop,
        Self::StartTls,
        Self::Help,
        Self::Vrfy,
        Self::Other,
        Self::Unknown,
    ];

    /// The verb's position in [`Verb::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ehlo => "ehlo",
            Self::Helo => "helo",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::Bdat => "bdat",
            Self::Rset => "rset",
            Self::Quit => "quit",
            Self::Noop => "noop",
            Self::StartTls => "starttls",
            Self::Help => "help",
            Self::Vrfy => "vrfy",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

/// The verb table: (name, verb), matched without regard to case.
const VERBS: [(&[u8], Verb); 17] = [
    (b"EHLO", Verb::Ehlo),
    (b"HELO", Verb::Helo),
    (b"MAIL", Verb::Mail),
    (b"RCPT", Verb::Rcpt),
    (b"DATA", Verb::Data),
    (b"BDAT", Verb::Bdat),
    (b"RSET", Verb::Rset),
    (b"QUIT", Verb::Quit),
    (b"NOOP", Verb::Noop),
    (b"STARTTLS", Verb::StartTls),
    (b"HELP", Verb::Help),
    (b"VRFY", Verb::Vrfy),
    (b"EXPN", Verb::Other),
    (b"TURN", Verb::Other),
    (b"ETRN", Verb::Other),
    (b"ATRN", Verb::Other),
    (b"AUTH", Verb::Other),
];

/// Splits a command line (without its line ending) into its verb and argument.
pub fn split(line: &[u8]) -> (Verb, &[u8]) {
    let line = trim_end(line);
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (
            line.get(..i).unwrap_or_default(),
            line.get(i.saturating_add(1)..).unwrap_or_default(),
        ),
        None => (line, &b""[..]),
    };
    let verb = VERBS
        .iter()
        .find(|(name, _)| verb.eq_ignore_ascii_case(name))
        .map_or(Verb::Unknown, |(_, v)| *v);
    (verb, arg)
}

/// Parses one command line without its line ending.
///
/// `smtputf8` says whether the current transaction's MAIL carried SMTPUTF8, which is
/// what permits a non-ASCII recipient (RFC 6531 §3.5).
pub fn parse(line: &[u8], smtputf8: bool) -> Result<Command, CommandError> {
    let (verb, arg) = split(line);
    parse_argument(verb, arg, smtputf8)
}

/// Parses the argument of a command whose verb [`split`] found.
pub fn parse_argument(verb: Verb, arg: &[u8], smtputf8: bool) -> Result<Command, CommandError> {
    match verb {
        Verb::Ehlo => helo_argument(arg).map(Command::Ehlo),
        Verb::Helo => helo_argument(arg).map(Command::Helo),
        Verb::Mail => mail(arg),
        Verb::Rcpt => rcpt(arg, smtputf8),
        Verb::Data => no_argument(arg, Command::Data),
        Verb::Bdat => bdat(arg),
        Verb::Rset => no_argument(arg, Command::Rset),
        Verb::Quit => no_argument(arg, Command::Quit),
        // RFC 5321 §4.1.1.9: a string argument is allowed and ignored.
        Verb::Noop => Ok(Command::Noop),
        Verb::StartTls => no_argument(arg, Command::StartTls),
        Verb::Help => Ok(Command::Help),
        Verb::Vrfy if trim_start(arg).is_empty() => Err(CommandError::Syntax),
        Verb::Vrfy => Ok(Command::Vrfy),
        Verb::Other => Ok(Command::NotImplemented),
        Verb::Unknown => Err(CommandError::Unrecognized),
    }
}

fn no_argument(arg: &[u8], command: Command) -> Result<Command, CommandError> {
    if trim_start(arg).is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax)
    }
}

/// The EHLO/HELO domain or address literal. Kept as given (it goes into the
/// `Received:` header) but only printable characters are allowed, so it cannot
/// inject anything into a header or a log line.
fn helo_argument(arg: &[u8]) -> Result<String, CommandError> {
    let arg = trim_start(arg);
    if arg.is_empty() || arg.len() > 255 || arg.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(CommandError::HeloSyntax);
    }
    match std::str::from_utf8(arg) {
        // C1 controls (U+0080..U+009F) are as unwelcome in a header as C0 ones.
        Ok(name) if !name.chars().any(char::is_control) => Ok(name.to_owned()),
        _ => Err(CommandError::HeloSyntax),
    }
}

/// Strips `keyword` (e.g. `FROM:`) case-insensitively from the argument.
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg.get(keyword.len()..).unwrap_or_default())
}

fn mail(arg: &[u8]) -> Result<Command, CommandError> {
    let rest = strip_keyword(arg, b"FROM:").ok_or(CommandError::Syntax)?;
    let (path, params) = split_path(rest).map_err(|PathError::Syntax| CommandError::BadSender)?;
    let sender = parse_path(path).map_err(|PathError::Syntax| CommandError::BadSender)?;
    if !sender.is_null() && sender.domain().is_none() {
        return Err(CommandError::BadSender);
    }
    let mut mail = MailFrom {
        sender,
        size: None,
        body_8bit: false,
        binary: false,
        smtputf8: false,
    };
    for param in params.split(|&b| b == b' ').filter(|p| !p.is_empty()) {
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (
                param.get(..i).unwrap_or_default(),
                param.get(i.saturating_add(1)..),
            ),
            None => (param, None),
        };
        if key.eq_ignore_ascii_case(b"SIZE") {
            mail.size = Some(size_value(value)?);
        } else if key.eq_ignore_ascii_case(b"BODY") {
            (mail.body_8bit, mail.binary) = match value {
                Some(v) if v.eq_ignore_ascii_case(b"8BITMIME") => (true, false),
                Some(v) if v.eq_ignore_ascii_case(b"7BIT") => (false, false),
                Some(v) if v.eq_ignore_ascii_case(b"BINARYMIME") => (true, true),
                _ => return Err(CommandError::Syntax),
            };
        } else if key.eq_ignore_ascii_case(b"SMTPUTF8") {
            if value.is_some() {
                return Err(CommandError::Syntax);
            }
            mail.smtputf8 = true;
        } else {
            return Err(CommandError::UnknownParameter);
        }
    }
    if mail.sender.non_ascii && !mail.smtputf8 {
        return Err(CommandError::NonAsciiAddress);
    }
    Ok(Command::Mail(mail))
}

/// RFC 1870 `size-value ::= 1*20DIGIT`. A number too big for u64 is certainly over
/// any limit, so it saturates instead of failing as a syntax error.
fn size_value(value: Option<&[u8]>) -> Result<u64, CommandError> {
    let digits =
        value.filter(|v| !v.is_empty() && v.len() <= 20 && v.iter().all(u8::is_ascii_digit));
    let digits = digits.ok_or(CommandError::Syntax)?;
    Ok(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10)
            .saturating_add(u64::from(d.saturating_sub(b'0')))
    }))
}

/// RFC 3030 §2: `bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CRLF`,
/// `chunk-size ::= 1*DIGIT`, `end-marker ::= "LAST"`. A size over 20 digits does
/// not fit any limit and is refused like a malformed one.
fn bdat(arg: &[u8]) -> Result<Command, CommandError> {
    let mut words = arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(CommandError::BdatSyntax)?;
    if size.len() > 20 || !size.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::BdatSyntax);
    }
    let size = size.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.saturating_sub(b'0')))
    });
    let size = size.ok_or(CommandError::BdatSyntax)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(CommandError::BdatSyntax),
    };
    if words.next().is_some() {
        return Err(CommandError::BdatSyntax);
    }
    Ok(Command::Bdat { size, last })
}

fn rcpt(arg: &[u8], smtputf8: bool) -> Result<Command, CommandError> {
    let rest = strip_keyword(arg, b"TO:").ok_or(CommandError::Syntax)?;
    let (path, params) =
        split_path(rest).map_err(|PathError::Syntax| CommandError::BadRecipient)?;
    let recipient = parse_path(path).map_err(|PathError::Syntax| CommandError::BadRecipient)?;
    if recipient.is_null() {
        return Err(CommandError::BadRecipient);
    }
    // RFC 5321 §4.5.1: `postmaster` without a domain must be accepted; any other
    // recipient needs a domain.
    if recipient.domain().is_none() && !recipient.text.eq_ignore_ascii_case("postmaster") {
        return Err(CommandError::BadRecipient);
    }
    // No RCPT parameters are advertised (no DSN extension).
    if params.iter().any(|&b| b != b' ') {
        return Err(CommandError::UnknownParameter);
    }
    if recipient.non_ascii && !smtputf8 {
        return Err(CommandError::NonAsciiAddress);
    }
    Ok(Command::Rcpt(recipient))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

/// Trailing spaces and tabs are common from hand-typed sessions and some clients.
fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i.saturating_add(1));
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, CommandError> {
        parse(line.as_bytes(), false)
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            p("ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(p("HeLo client"), Ok(Command::Helo("client".into())));
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("NOOP anything at all"), Ok(Command::Noop));
        assert_eq!(p("HELP MAIL"), Ok(Command::Help));
        assert_eq!(p("VRFY someone"), Ok(Command::Vrfy));
        assert_eq!(p("DATA  "), Ok(Command::Data));
    }

    #[test]
    fn unknown_and_unoffered_commands() {
        assert_eq!(p("FOO"), Err(CommandError::Unrecognized));
        assert_eq!(p(""), Err(CommandError::Unrecognized));
        assert_eq!(p("MAILFROM:<a@b.c>"), Err(CommandError::Unrecognized));
        assert_eq!(p("DA\0TA"), Err(CommandError::Unrecognized));
        for verb in ["EXPN x", "TURN", "ETRN x", "AUTH PLAIN"] {
            assert_eq!(p(verb), Ok(Command::NotImplemented), "{verb}");
        }
        assert_eq!(p("STARTTLS"), Ok(Command::StartTls));
        assert_eq!(p("starttls now"), Err(CommandError::Syntax));
    }

    #[test]
    fn bdat_size_and_last() {
        assert_eq!(
            p("BDAT 10 LAST"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            p("bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            p("BDAT 4096"),
            Ok(Command::Bdat {
                size: 4096,
                last: false
            })
        );
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 10 FIRST",
            "BDAT 10 LAST x",
            "BDAT 1e3",
            "BDAT 99999999999999999999",
            "BDAT 123456789012345678901",
        ] {
            assert_eq!(p(bad), Err(CommandError::BdatSyntax), "{bad}");
        }
    }

    #[test]
    fn body_binarymime_is_8bit_and_binary() {
        let Ok(Command::Mail(m)) = p("MAIL FROM:<a@b.example> BODY=BINARYMIME") else {
            panic!("not a MAIL");
        };
        assert!(m.body_8bit && m.binary);
    }

    #[test]
    fn argument_errors() {
        assert_eq!(p("EHLO"), Err(CommandError::HeloSyntax));
        assert_eq!(p("EHLO   "), Err(CommandError::HeloSyntax));
        assert_eq!(p("HELO a\x01b"), Err(CommandError::HeloSyntax));
        // Found by the `command` fuzz target: a UTF-8 encoded C1 control.
        assert_eq!(p("HELO ~~~@\u{9f}@@to"), Err(CommandError::HeloSyntax));
        assert_eq!(p("DATA now"), Err(CommandError::Syntax));
        assert_eq!(p("RSET x"), Err(CommandError::Syntax));
        assert_eq!(p("VRFY"), Err(CommandError::Syntax));
        assert_eq!(p("MAIL TO:<a@b.c>"), Err(CommandError::Syntax));
        assert_eq!(p("RCPT FROM:<a@b.c>"), Err(CommandError::Syntax));
    }

    #[test]
    fn mail_from_with_parameters() {
        let Ok(Command::Mail(m)) = p("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8")
        else {
            panic!("not a MAIL");
        };
        assert_eq!(m.sender.text, "a@b.example");
        assert_eq!(m.size, Some(1000));
        assert!(m.body_8bit && m.smtputf8);
        let Ok(Command::Mail(m)) = p("mail from: <> body=7bit") else {
            panic!("not a MAIL");
        };
        assert!(m.sender.is_null() && !m.body_8bit && m.size.is_none());
    }

    #[test]
    fn mail_parameter_errors() {
        assert_eq!(
            p("MAIL FROM:<a@b.c> FOO=BAR"),
            Err(CommandError::UnknownParameter)
        );
        assert_eq!(p("MAIL FROM:<a@b.c> SIZE=abc"), Err(CommandError::Syntax));
        assert_eq!(p("MAIL FROM:<a@b.c> SIZE="), Err(CommandError::Syntax));
        assert_eq!(p("MAIL FROM:<a@b.c> BODY=9BIT"), Err(CommandError::Syntax));
        assert_eq!(
            p("MAIL FROM:<a@b.c> SMTPUTF8=yes"),
            Err(CommandError::Syntax)
        );
        let Ok(Command::Mail(m)) = p("MAIL FROM:<a@b.c> SIZE=99999999999999999999") else {
            panic!("not a MAIL");
        };
        assert_eq!(m.size, Some(u64::MAX));
    }

    #[test]
    fn mail_path_errors_are_bad_sender() {
        assert_eq!(p("MAIL FROM:<a@b.c"), Err(CommandError::BadSender));
        assert_eq!(p("MAIL FROM:<a\x01@b.c>"), Err(CommandError::BadSender));
        assert_eq!(p("MAIL FROM:<nodomain>"), Err(CommandError::BadSender));
        assert_eq!(p("MAIL FROM:"), Err(CommandError::BadSender));
        assert_eq!(p("MAIL FROM:<ü@b.c>"), Err(CommandError::NonAsciiAddress));
        assert!(matches!(
            p("MAIL FROM:<ü@b.c> SMTPUTF8"),
            Ok(Command::Mail(_))
        ));
    }

    #[test]
    fn rcpt_rules() {
        assert!(
            matches!(p("RCPT TO:<a@b.example>"), Ok(Command::Rcpt(m)) if m.text == "a@b.example")
        );
        assert!(matches!(p("RCPT TO:<Postmaster>"), Ok(Command::Rcpt(_))));
        assert_eq!(p("RCPT TO:<>"), Err(CommandError::BadRecipient));
        assert_eq!(p("RCPT TO:<user>"), Err(CommandError::BadRecipient));
        assert_eq!(
            p("RCPT TO:<x\x01y@b.example>"),
            Err(CommandError::BadRecipient)
        );
        assert_eq!(
            p("RCPT TO:<a@b.example> NOTIFY=NEVER"),
            Err(CommandError::UnknownParameter)
        );
        assert_eq!(
            p("RCPT TO:<ü@b.example>"),
            Err(CommandError::NonAsciiAddress)
        );
        assert!(matches!(
            parse("RCPT TO:<ü@b.example>".as_bytes(), true),
            Ok(Command::Rcpt(_))
        ));
    }
}
