//! An uploaded file as the CSV inside it: a plain CSV, or a zip, gzip or RAR
//! archive holding one.
//!
//! Owns: telling the kinds apart by their magic bytes (never by name or
//! Content-Type, which clients get wrong): `PK\x03\x04` zip (APPNOTE 4.3.7),
//! `1f 8b` gzip (RFC 1952 §2.3.1), `Rar!\x1a\x07` RAR 4 and 5; anything else is
//! taken as CSV. For archives: finding exactly one `.csv` entry (directories and
//! macOS's `__MACOSX/` resource forks ignored), and giving its contents as a
//! streaming `Read`. zip through the `zip` crate (it needs the seekable file: the
//! upload is on disk), gzip through flate2, RAR through libarchive
//! (`compress-tools`). The count of file bytes consumed, for progress.
//! Must not: hold a whole file or entry in memory, or parse CSV (`csv_rows` does).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the first bytes say a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Csv,
    Zip,
    Gzip,
    Rar,
}

/// The kind of a file starting with `head` (at least 7 bytes, when it has them).
pub fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"PK\x03\x04") {
        Kind::Zip
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Kind::Gzip
    } else if head.starts_with(b"Rar!\x1a\x07") {
        Kind::Rar
    } else {
        Kind::Csv
    }
}

/// Why no CSV could be got out of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("reading the upload: {0}")]
    Io(String),
    #[error("the {0} archive holds no .csv file")]
    NoCsv(&'static str),
    #[error("the {0} archive holds {1} .csv files; it must hold exactly one")]
    SeveralCsv(&'static str, usize),
    #[error("the {0} archive is corrupt or unsupported: {1}")]
    Corrupt(&'static str, String),
}

/// Whether an archive entry is the CSV to import.
fn is_csv_entry(name: &str) -> bool {
    let name = name.replace('\\', "/");
    !name.ends_with('/')
        && !name.starts_with("__MACOSX/")
        && !name.contains("/__MACOSX/")
        && name.to_ascii_lowercase().ends_with(".csv")
}

/// A file read, counting the bytes taken from it (seeks move the count, so a zip
/// read through its central directory still reports where it is).
pub struct Counted {
    file: File,
    pub consumed: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for Counted {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let at = self.file.seek(pos)?;
        self.consumed.store(at, Ordering::Relaxed);
        Ok(at)
    }
}

/// Opens `path` and calls `consume` with the CSV it holds; `consumed` counts the
/// file's bytes read so far.
pub fn with_csv<T>(
    path: &Path,
    consumed: Arc<AtomicU64>,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> Result<T, SourceError> {
    let io = |e: std::io::Error| SourceError::Io(e.to_string());
    let mut file = File::open(path).map_err(io)?;
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read(head.get_mut(got..).unwrap_or_default())
            .map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let kind = sniff(head.get(..got).unwrap_or_default());
    let mut counted = Counted { file, consumed };
    match kind {
        Kind::Csv => Ok(consume(&mut counted)),
        Kind::Gzip => {
            // Multi-member: `cat a.gz b.gz` is a valid gzip file (RFC 1952 §2.2).
            let mut gz =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, counted));
            Ok(consume(&mut gz))
        }
        Kind::Zip => {
            let corrupt = |e: zip::result::ZipError| SourceError::Corrupt("zip", e.to_string());
            let mut archive = zip::ZipArchive::new(counted).map_err(corrupt)?;
            let csvs: Vec<usize> = (0..archive.len())
                .filter(|&i| archive.name_for_index(i).is_some_and(is_csv_entry))
                .collect();
            let index = match csvs.as_slice() {
                [] => return Err(SourceError::NoCsv("zip")),
                [one] => *one,
                many => return Err(SourceError::SeveralCsv("zip", many.len())),
            };
            let mut entry = archive.by_index(index).map_err(corrupt)?;
            if entry.is_dir() {
                return Err(SourceError::NoCsv("zip"));
            }
            Ok(consume(&mut entry))
        }
        Kind::Rar => {
            let corrupt = |e: compress_tools::Error| SourceError::Corrupt("RAR", e.to_string());
            // First pass: the entry names (libarchive reads headers, skipping data).
            let names = compress_tools::list_archive_files(&mut counted).map_err(corrupt)?;
            let csvs: Vec<String> = names.into_iter().filter(|n| is_csv_entry(n)).collect();
            let wanted = match csvs.as_slice() {
                [] => return Err(SourceError::NoCsv("RAR")),
                [one] => one.clone(),
                many => return Err(SourceError::SeveralCsv("RAR", many.len())),
            };
            counted.seek(SeekFrom::Start(0)).map_err(io)?;
            let filter_name = wanted.clone();
            let iter = compress_tools::ArchiveIteratorBuilder::new(counted)
                .filter(move |name, _| name == filter_name)
                .build()
                .map_err(corrupt)?;
            let mut reader = EntryReader {
                iter,
                chunk: Vec::new(),
                at: 0,
                started: false,
                done: false,
            };
            let out = consume(&mut reader);
            Ok(out)
        }
    }
}

/// One archive entry of libarchive's iterator as a `Read`: its data chunks in
/// order (each a bounded block of libarchive's, not the whole entry).
struct EntryReader<R: Read + Seek> {
    iter: compress_tools::ArchiveIterator<R>,
    chunk: Vec<u8>,
    at: usize,
    started: bool,
    done: bool,
}

impl<R: Read + Seek> Read for EntryReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use compress_tools::ArchiveContents as C;
        loop {
            if let Some(rest) = self.chunk.get(self.at..)
                && !rest.is_empty()
            {
                let n = rest.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.at += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.iter.next() {
                Some(C::StartOfEntry(..)) => self.started = true,
                Some(C::DataChunk(data)) => {
                    self.chunk = data;
                    self.at = 0;
                }
                Some(C::EndOfEntry) if self.started => self.done = true,
                Some(C::EndOfEntry) => {}
                Some(C::Err(e)) => {
                    self.done = true;
                    return Err(std::io::Error::other(format!("RAR: {e}")));
                }
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_magic_bytes() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Kind::Zip);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Kind::Gzip);
        assert_eq!(sniff(b"Rar!\x1a\x07\x00"), Kind::Rar);
        assert_eq!(sniff(b"Rar!\x1a\x07\x01\x00"), Kind::Rar);
        assert_eq!(sniff(b"email,name\n"), Kind::Csv);
        assert_eq!(sniff(b"PK"), Kind::Csv);
        assert_eq!(sniff(b""), Kind::Csv);
    }

    #[test]
    fn which_entries_count_as_the_csv() {
        assert!(is_csv_entry("people.csv"));
        assert!(is_csv_entry("export/People.CSV"));
        assert!(!is_csv_entry("__MACOSX/._people.csv"));
        assert!(!is_csv_entry("x/__MACOSX/._people.csv"));
        assert!(!is_csv_entry("dir.csv/"));
        assert!(!is_csv_entry("readme.txt"));
    }

    #[test]
    fn a_corrupt_zip_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"PK\x03\x04garbage that is no zip at all").unwrap();
        let got = with_csv(&path, Arc::default(), |_| ());
        assert!(
            matches!(got, Err(SourceError::Corrupt("zip", _))),
            "{got:?}"
        );
        std::fs::write(&path, b"Rar!\x1a\x07\x00garbage").unwrap();
        let got = with_csv(&path, Arc::default(), |_| ());
        assert!(
            matches!(got, Err(SourceError::Corrupt("RAR", _))),
            "{got:?}"
        );
    }

    #[test]
    fn a_gzip_stream_is_read_through() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"email\na@b.test\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let text = with_csv(&path, Arc::default(), |r| {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
        .unwrap();
        assert_eq!(text, "email\na@b.test\n");
    }
}
