//! Any command line: parsing never panics, and a parsed path never holds control
//! characters (they would reach headers and database columns).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::protocol::command::{Command, parse};

fuzz_target!(|input: (&[u8], bool)| {
    let (line, smtputf8) = input;
    match parse(line, smtputf8) {
        Ok(Command::Mail(m)) => assert!(!m.sender.text.chars().any(char::is_control)),
        Ok(Command::Rcpt(r)) => {
            assert!(!r.text.chars().any(char::is_control));
            assert!(!r.text.is_empty());
        }
        Ok(Command::Ehlo(h) | Command::Helo(h)) => {
            assert!(!h.is_empty() && !h.chars().any(|c| c.is_control() || c == ' '));
        }
        _ => {}
    }
});
