//! The `text` log line, written directly: the same bytes as tracing-subscriber's
//! default ("full") format without colours, at a fraction of the cost.
//!
//! Why: smtpd writes one line per transaction and the relay one per delivery
//! attempt. Through the stock formatter that line cost ≈ 16,000 instructions, a
//! sixth of everything smtpd does for a 1 KB message (bench/RESULTS.md): the
//! timestamp formatted from scratch, colour wrappers around the level and target
//! even with colours off, every integer and string through `core::fmt`. Here the
//! timestamp's date and time are formatted once a second per thread, integers are
//! written digit by digit, and plain strings are copied.
//!
//! Must: keep the line byte for byte as operators and their log tools know it
//! (`2026-12-04T01:28:06.351672Z  INFO target: message key=value key="text"`);
//! keep each event on one line (control characters in any value are escaped, which
//! the stock format does only for the message). Hands over to the stock formatter
//! what it does not handle itself: colours (a person at a terminal), events inside
//! spans, and events bridged from the `log` crate.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as StockClock;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `text` format ([`crate::logging::LogFormat::Text`]).
#[derive(Debug, Default)]
pub struct TextLine {
    stock: Format<Full, StockClock>,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if writer.has_ansi_escapes()
            || ctx.lookup_current().is_some()
            || meta.fields().field("log.target").is_some()
        {
            return self.stock.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str(level_text(*meta.level()))?;
        writer.write_char(' ')?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// As the stock format pads them (to five characters, right-aligned).
fn level_text(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ ` (UTC, microseconds), as the stock format's clock.
fn write_timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.with(Cell::get);
    if cached != secs {
        text = civil_seconds(secs);
        SECOND.with(|c| c.set((secs, text)));
    }
    let mut tail = *b".000000Z ";
    let mut micros = since.subsec_micros();
    for digit in tail[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    w.write_str(ascii(&text))?;
    w.write_str(ascii(&tail))
}

/// The bytes are ASCII digits and punctuation written here; never fails.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time in seconds (UTC): chrono, once a second.
fn civil_seconds(secs: u64) -> [u8; 19] {
    let mut out = *b"0000-00-00T00:00:00";
    let text = i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default();
    if text.len() == out.len() {
        out.copy_from_slice(text.as_bytes());
    }
    out
}

/// Writes the event's fields as the stock format's visitor does: the message
/// first as it is, then ` name=value` (strings quoted and escaped as `{:?}`).
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// The separator, and the name unless this is the message.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }

    fn digits(&mut self, negative: bool, mut value: u64) {
        let mut buf = [0u8; 21];
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        if negative {
            at -= 1;
            buf[at] = b'-';
        }
        self.result = self.writer.write_str(ascii(&buf[at..]));
    }
}

impl Visit for Fields<'_, '_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.digits(false, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.digits(value < 0, value.unsigned_abs());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        if !self.start(field) {
            return;
        }
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.result = match (message, plain) {
            (true, true) => self.writer.write_str(value),
            (true, false) => write!(Escaping(self.writer), "{value}"),
            // Nothing `{:?}` would change: the quotes around it.
            (false, true) => self
                .writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"')),
            (false, false) => write!(Escaping(self.writer), "{value:?}"),
        };
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = write!(Escaping(self.writer), "{value:?}");
        }
    }
}

/// Passes text through with control characters escaped, so no value can end the
/// line or send a terminal escape sequence: C0 controls, DEL and the C1 range.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| c.is_control()) {
            self.0.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            if let Some(c) = chars.next() {
                match c {
                    '\n' => self.0.write_str("\\n")?,
                    '\r' => self.0.write_str("\\r")?,
                    '\t' => self.0.write_str("\\t")?,
                    c if (c as u32) < 0x80 => write!(self.0, "\\x{:02x}", c as u32)?,
                    c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                }
            }
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    struct Shown(&'static str);
    impl fmt::Display for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    /// Every kind of field the daemons log, emitted once.
    fn events() {
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        tracing::info!(
            queue_id = "01a23eaa6f7e231f",
            client = %ip,
            from = %Shown("bench@bench.invalid"),
            nrcpt = 3usize,
            rcpt = %Shown("a@x.test, b@x.test (+1 more)"),
            size = 1043u64,
            delta = -42i64,
            zero = 0u64,
            big = u64::MAX,
            small = i64::MIN,
            tls = false,
            ratio = 0.5f64,
            r#type = "bounce",
            quoted = "say \"hi\" \\ there",
            unicode = "wörld ✓",
            list = ?vec!["a", "b"],
            "transaction"
        );
        tracing::warn!("a message alone");
        tracing::error!(error = %Shown("connection refused"), "cannot {} the {}", "reach", "store");
        tracing::debug!(attempt = 2u64, "retrying");
    }

    fn capture(text: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE);
        if text {
            tracing::subscriber::with_default(
                builder.event_format(TextLine::default()).finish(),
                events,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// The timestamp's width: `2026-12-04T01:28:06.351672Z`.
    const STAMP: usize = 27;

    #[test]
    fn lines_are_byte_for_byte_the_stock_format_after_the_timestamp() {
        let (ours, stock) = (capture(true), capture(false));
        let tail = |s: &str| -> Vec<String> { s.lines().map(|l| l[STAMP..].to_owned()).collect() };
        assert_eq!(tail(&ours), tail(&stock));
        assert_eq!(ours.lines().count(), 4);
        for line in ours.lines() {
            let stamp = &line.as_bytes()[..STAMP];
            for (i, b) in stamp.iter().enumerate() {
                match i {
                    4 | 7 => assert_eq!(*b, b'-', "{line}"),
                    10 => assert_eq!(*b, b'T', "{line}"),
                    13 | 16 => assert_eq!(*b, b':', "{line}"),
                    19 => assert_eq!(*b, b'.', "{line}"),
                    26 => assert_eq!(*b, b'Z', "{line}"),
                    _ => assert!(b.is_ascii_digit(), "{line}"),
                }
            }
        }
    }

    #[test]
    fn the_timestamp_is_the_stock_clocks() {
        for secs in [
            0u64,
            951_782_400,
            1_709_164_800,
            1_796_346_486,
            4_102_444_799,
        ] {
            let at = UNIX_EPOCH + std::time::Duration::new(secs, 123_456_789);
            let mut ours = String::new();
            write_timestamp(&mut ours, at).unwrap();
            let want = chrono_free_reference(secs);
            assert_eq!(ours, format!("{want}.123456Z "), "{secs}");
        }
    }

    /// A slow, obviously right reference: count days forward from 1970.
    fn chrono_free_reference(secs: u64) -> String {
        let mut days = secs / 86_400;
        let mut year = 1970u64;
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        while days >= if leap(year) { 366 } else { 365 } {
            days -= if leap(year) { 366 } else { 365 };
            year += 1;
        }
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while days >= lengths[month] {
            days -= lengths[month];
            month += 1;
        }
        let rem = secs % 86_400;
        format!(
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            month + 1,
            days + 1,
            rem / 3_600,
            rem % 3_600 / 60,
            rem % 60
        )
    }

    #[test]
    fn no_value_can_break_the_line_or_reach_the_terminal() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .event_format(TextLine::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                from = %Shown("evil\r\n2026-01-01T00:00:00.000000Z  INFO forged: line"),
                text = "bell\x07 esc\x1b[31m c1\u{9b}",
                "msg\nsplit"
            );
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text[..text.len() - 1].chars().any(char::is_control),
            "{text:?}"
        );
        assert!(
            text.contains(r"msg\nsplit from=evil\r\n2026-01-01"),
            "{text}"
        );
        assert!(
            text.contains(r#"text="bell\u{7} esc\u{1b}[31m c1\u{9b}""#),
            "{text}"
        );
    }
}
