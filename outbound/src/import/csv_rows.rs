//! A CSV stream as validated subscriber rows, one at a time, with the line each
//! came from.
//!
//! Owns: the header (required; an `email` column required, `name` optional, matched
//! trimmed and case-insensitively; every other column an attribute), and per row:
//! the field count, UTF-8, the address, the name, the attribute object. A bad row is
//! a [`Rejected`] with its 1-based line number, never a failure of the whole file.
//! Must not: buffer more than the row it is on (the `csv` reader's own 64 KiB
//! buffer aside), touch the database, or know about archives (`source` does).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use csv::{ByteRecord, ReaderBuilder};

use crate::lists::{self, NewSubscriber};

/// The longest single CSV record: no sane subscriber row is larger, and a file
/// that is one giant quoted field must not grow a buffer without bound.
const MAX_RECORD_BYTES: usize = 64 * 1024;
/// The `csv` reader's buffer: what it may have read beyond the current record.
const BUFFER_BYTES: usize = 64 * 1024;

/// A row refused, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line of the file where the record starts.
    pub line: u64,
    /// The address cell as given (lossy UTF-8, at most 320 bytes; "" when absent).
    pub email: String,
    pub error: String,
}

/// A row accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub line: u64,
    pub subscriber: NewSubscriber,
}

/// What the next record gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Accepted(Accepted),
    Rejected(Rejected),
}

/// Why the file as a whole is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvFailure {
    #[error("the file is empty: a header row (with an `email` column) is required")]
    Empty,
    #[error("the header row is not UTF-8")]
    HeaderNotUtf8,
    #[error("no `email` column in the header row")]
    NoEmailColumn,
    #[error("the header names column {0:?} twice")]
    DuplicateColumn(String),
    #[error("line {line}: a record longer than {MAX_RECORD_BYTES} bytes")]
    RecordTooLong { line: u64 },
    #[error("reading the file: {0}")]
    Read(String),
}

/// The columns of the header row.
#[derive(Debug)]
struct Columns {
    email: usize,
    name: Option<usize>,
    /// (index, attribute name) of every other column.
    attributes: Vec<(usize, String)>,
    width: usize,
}

/// The input, refusing to give the `csv` reader more than [`MAX_RECORD_BYTES`]
/// (plus its buffer) past the start of the record it is on: `csv` grows its record
/// buffer to any size, so the bound is enforced below it.
///
/// It also notes where line ends are, for line numbers: `csv`'s own
/// `Position::line` is off after a CRLF or a blank line (a record's position is
/// where the previous one ended, before the terminator's `\n` or the blank lines
/// it skips), so a record's line is counted here from its byte offset instead.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: Arc<AtomicU64>,
    tripped: Arc<AtomicBool>,
    /// Offsets of `\r` and `\n` bytes read but not yet behind a record's start
    /// (within the bounded window, so the queue is bounded too).
    breaks: VecDeque<(u64, u8)>,
    /// `\n` bytes behind the current record's start.
    lines_passed: u64,
}

impl<R> Bounded<R> {
    /// The 1-based line of the record `csv` says starts at byte `start`: its first
    /// byte is the first one at or after `start` that is not a line break.
    fn line_at(&mut self, start: u64) -> u64 {
        let mut cursor = start;
        while let Some(&(at, byte)) = self.breaks.front() {
            if at < start || at == cursor {
                if at == cursor {
                    cursor += 1;
                }
                if byte == b'\n' {
                    self.lines_passed += 1;
                }
                self.breaks.pop_front();
            } else {
                break;
            }
        }
        self.lines_passed + 1
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        let room = limit.saturating_sub(self.read);
        if room == 0 {
            self.tripped.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("record too long"));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        let base = self.read;
        for i in memchr::memchr2_iter(b'\r', b'\n', buf.get(..n).unwrap_or_default()) {
            let byte = buf.get(i).copied().unwrap_or(b'\n');
            self.breaks.push_back((base + i as u64, byte));
        }
        self.read = self.read.saturating_add(n as u64);
        Ok(n)
    }
}

/// Validated rows out of a CSV stream.
pub struct CsvRows<R: Read> {
    reader: csv::Reader<Bounded<R>>,
    limit: Arc<AtomicU64>,
    tripped: Arc<AtomicBool>,
    columns: Columns,
    record: ByteRecord,
}

impl<R: Read> std::fmt::Debug for CsvRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvRows")
            .field("columns", &self.columns)
            .finish()
    }
}

impl<R: Read> CsvRows<R> {
    /// Reads the header row.
    pub fn new(input: R) -> Result<Self, CsvFailure> {
        // Flexible: a row of the wrong width is this row's error (reported with its
        // line), not the reader's, which would end the whole file.
        let limit = Arc::new(AtomicU64::new(window(0)));
        let tripped = Arc::new(AtomicBool::new(false));
        let mut reader = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(BUFFER_BYTES)
            .from_reader(Bounded {
                inner: input,
                read: 0,
                limit: limit.clone(),
                tripped: tripped.clone(),
                breaks: VecDeque::new(),
                lines_passed: 0,
            });
        let mut header = ByteRecord::new();
        match reader.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return Err(CsvFailure::Empty),
            Err(_) if tripped.load(Ordering::Relaxed) => {
                return Err(CsvFailure::RecordTooLong { line: 1 });
            }
            Err(e) => return Err(CsvFailure::Read(e.to_string())),
        }
        let columns = parse_header(&header)?;
        limit.store(window(reader.position().byte()), Ordering::Relaxed);
        Ok(Self {
            reader,
            limit,
            tripped,
            columns,
            record: ByteRecord::new(),
        })
    }

    /// The next row; None at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>, CsvFailure> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) if self.tripped.load(Ordering::Relaxed) => {
                let start = self.reader.position().byte();
                let line = self.reader.get_mut().line_at(start);
                return Err(CsvFailure::RecordTooLong { line });
            }
            Err(e) => return Err(CsvFailure::Read(e.to_string())),
        }
        let start = self.record.position().map_or(0, csv::Position::byte);
        let line = self.reader.get_mut().line_at(start);
        self.limit
            .store(window(self.reader.position().byte()), Ordering::Relaxed);
        if self.record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(CsvFailure::RecordTooLong { line });
        }
        Ok(Some(check_record(&self.columns, &self.record, line)))
    }
}

/// How far the input may be read when the current record starts at `start`.
fn window(start: u64) -> u64 {
    start.saturating_add((MAX_RECORD_BYTES + BUFFER_BYTES) as u64)
}

fn parse_header(header: &ByteRecord) -> Result<Columns, CsvFailure> {
    let mut email = None;
    let mut name = None;
    let mut attributes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, field) in header.iter().enumerate() {
        let text = std::str::from_utf8(field).map_err(|_| CsvFailure::HeaderNotUtf8)?;
        // Spreadsheets save UTF-8 with a byte-order mark before the first cell.
        let text = if i == 0 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        let text = text.trim();
        let lower = text.to_lowercase();
        if !text.is_empty() && !seen.insert(lower.clone()) {
            return Err(CsvFailure::DuplicateColumn(text.to_owned()));
        }
        match lower.as_str() {
            "email" => email = Some(i),
            "name" => name = Some(i),
            // A nameless column has nothing to be called as an attribute.
            "" => {}
            _ => attributes.push((i, text.to_owned())),
        }
    }
    Ok(Columns {
        email: email.ok_or(CsvFailure::NoEmailColumn)?,
        name,
        attributes,
        width: header.len(),
    })
}

fn check_record(columns: &Columns, record: &ByteRecord, line: u64) -> Row {
    let raw_email = record.get(columns.email).unwrap_or_default();
    let shown_email = || {
        let cut = &raw_email[..raw_email.len().min(lists::MAX_EMAIL_BYTES)];
        String::from_utf8_lossy(cut).trim().to_owned()
    };
    let reject = |error: String| {
        Row::Rejected(Rejected {
            line,
            email: shown_email(),
            error,
        })
    };
    if record.len() != columns.width {
        return reject(format!(
            "expected {} fields, found {}",
            columns.width,
            record.len()
        ));
    }
    let Ok(email) = std::str::from_utf8(raw_email) else {
        return reject("email: not UTF-8".to_owned());
    };
    let email = match lists::check_email(email) {
        Ok(e) => e,
        Err(why) => return reject(format!("email: {why}")),
    };
    let name = match columns.name.and_then(|i| record.get(i)) {
        None => None,
        Some(raw) => {
            let Ok(text) = std::str::from_utf8(raw) else {
                return reject("name: not UTF-8".to_owned());
            };
            let text = text.trim();
            if let Err(why) = lists::check_subscriber_name(text) {
                return reject(format!("name: {why}"));
            }
            Some(text.to_owned())
        }
    };
    let attributes = if columns.attributes.is_empty() {
        None
    } else {
        let mut object = serde_json::Map::new();
        for (i, key) in &columns.attributes {
            let raw = record.get(*i).unwrap_or_default();
            let Ok(text) = std::str::from_utf8(raw) else {
                return reject(format!("{key}: not UTF-8"));
            };
            if !text.is_empty() {
                object.insert(key.clone(), serde_json::Value::String(text.to_owned()));
            }
        }
        let serialized = serde_json::Value::Object(object).to_string();
        if let Err(why) = lists::check_attributes(&serialized) {
            return reject(format!("attributes: {why}"));
        }
        Some(serialized)
    };
    Row::Accepted(Accepted {
        line,
        subscriber: NewSubscriber {
            email,
            name,
            attributes,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rows(input: &[u8]) -> Vec<Row> {
        let mut r = CsvRows::new(input).unwrap();
        let mut out = Vec::new();
        while let Some(row) = r.next_row().unwrap() {
            out.push(row);
        }
        out
    }

    fn rejected(row: &Row) -> (u64, &str, &str) {
        match row {
            Row::Rejected(r) => (r.line, r.email.as_str(), r.error.as_str()),
            Row::Accepted(a) => panic!("accepted line {}", a.line),
        }
    }

    #[test]
    fn header_columns_are_matched_loosely_and_others_become_attributes() {
        let out = rows(b"\xef\xbb\xbf Email ,NAME,City,Plan\nann@x.test,Ann,Oslo,\n");
        let Row::Accepted(a) = &out[0] else { panic!() };
        assert_eq!(a.line, 2);
        assert_eq!(a.subscriber.email, "ann@x.test");
        assert_eq!(a.subscriber.name.as_deref(), Some("Ann"));
        // Empty cells are omitted.
        assert_eq!(
            a.subscriber.attributes.as_deref(),
            Some(r#"{"City":"Oslo"}"#)
        );
    }

    #[test]
    fn only_an_email_column_keeps_stored_name_and_attributes() {
        let out = rows(b"email\nann@x.test\n");
        let Row::Accepted(a) = &out[0] else { panic!() };
        assert_eq!(a.subscriber.name, None);
        assert_eq!(a.subscriber.attributes, None);
    }

    #[test]
    fn bad_rows_name_their_line_and_do_not_stop_the_file() {
        let out = rows(
            b"email,name\nnobody,A\n\"multi\nline@x.test\",B\nann@x.test\nok@x.test,\xff\n\nlast@x.test,Z\n",
        );
        assert_eq!(out.len(), 5);
        assert_eq!(
            rejected(&out[0]),
            (2, "nobody", "email: not an email address (local@domain)")
        );
        // A quoted field spanning lines: the record starts on line 3.
        assert_eq!(rejected(&out[1]).0, 3);
        assert_eq!(
            rejected(&out[2]),
            (5, "ann@x.test", "expected 2 fields, found 1")
        );
        assert_eq!(rejected(&out[3]), (6, "ok@x.test", "name: not UTF-8"));
        // The blank line 7 is skipped, line numbers stay true.
        let Row::Accepted(a) = &out[4] else { panic!() };
        assert_eq!(a.line, 8);
    }

    #[test]
    fn crlf_files_count_lines_the_same() {
        let out = rows(b"email\r\nbad\r\nok@x.test\r\n");
        assert_eq!(rejected(&out[0]).0, 2);
        let Row::Accepted(a) = &out[1] else { panic!() };
        assert_eq!(a.line, 3);
        let out = rows(b"email\r\n\r\n\r\nbad\r\n\"x\r\ny\"\r\nlast\r\n");
        assert_eq!(rejected(&out[0]).0, 4);
        assert_eq!(rejected(&out[1]).0, 5);
        assert_eq!(rejected(&out[2]).0, 7);
    }

    #[test]
    fn a_file_without_an_email_column_fails_as_a_whole() {
        assert_eq!(
            CsvRows::new(&b"name,city\nA,B\n"[..]).unwrap_err(),
            CsvFailure::NoEmailColumn
        );
        assert_eq!(CsvRows::new(&b""[..]).unwrap_err(), CsvFailure::Empty);
        assert_eq!(
            CsvRows::new(&b"email,Email\n"[..]).unwrap_err(),
            CsvFailure::DuplicateColumn("Email".into())
        );
        assert_eq!(
            CsvRows::new(&b"em\xffail\n"[..]).unwrap_err(),
            CsvFailure::HeaderNotUtf8
        );
    }

    #[test]
    fn a_huge_record_ends_the_file_instead_of_growing_a_buffer() {
        let mut input = b"email\n\"".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_RECORD_BYTES + 10));
        input.extend(b"\"\n");
        let mut r = CsvRows::new(&input[..]).unwrap();
        assert_eq!(
            r.next_row().unwrap_err(),
            CsvFailure::RecordTooLong { line: 2 }
        );
    }

    #[test]
    fn no_input_panics() {
        for input in [
            &b"email\n\"\n"[..],
            b"email\n\0\0\0",
            b"email,,\n,,,,\n",
            b",\n,\n",
        ] {
            if let Ok(mut r) = CsvRows::new(input) {
                while let Ok(Some(_)) = r.next_row() {}
            }
        }
    }
}
