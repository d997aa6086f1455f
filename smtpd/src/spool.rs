//! The spool: message bodies too large for memory, kept in files until the storage
//! stage has committed (or refused) them.
//!
//! Owns: this process's spool directory, the files in it, and their removal. A body
//! goes through three values: a [`SpoolWriter`] (the reactor appends to it as the
//! message arrives), a [`SpooledBody`] (the complete body, closed, on its way to the
//! storage stage), and the bytes the committer reads back for the INSERT. Both
//! values delete their file when dropped, so a file lives exactly as long as its
//! message: committed, refused, connection lost, or dropped at shutdown, the file
//! goes with it.
//!
//! Must not: be a durability point. Nothing in the spool was ever acknowledged (the
//! `250` comes only after the database commit), so files are not fsynced and a
//! crash leaves nothing that must be recovered: at start, the directories of
//! processes that are gone are removed. Several processes may share one spool
//! directory: each works in its own subdirectory, held by a lock on a file in it,
//! and only subdirectories whose lock is free (their process died) are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, warn};

/// Subdirectories of the spool directory that belong to an smtpd process start so.
const OWNED_PREFIX: &str = "smtpd-";
/// The file in each process's subdirectory that the process keeps locked.
const LOCK_FILE: &str = "lock";

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("spool lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
}

/// This process's part of the spool directory. Shared by every reactor.
#[derive(Debug)]
pub struct Spool {
    /// `<spool dir>/smtpd-<pid>-<random>`: only this process writes here.
    dir: PathBuf,
    /// Held (locked) for the life of the process: tells other processes starting on
    /// the same spool directory that these files are not leftovers.
    _lock: File,
    /// Names the next file; never reused within the process.
    next: AtomicU64,
}

impl Spool {
    /// Creates `root` if needed, removes what crashed processes left in it, and takes
    /// a fresh subdirectory for this process.
    pub fn open(root: &Path) -> Result<Arc<Spool>, SpoolError> {
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Dir { path, source }
        };
        fs::create_dir_all(root).map_err(dir_err(root))?;
        remove_leftovers(root);
        let mut random = [0u8; 8];
        // A clash only matters with our own pid, so a weak fallback is fine.
        let _ = getrandom::fill(&mut random);
        let dir = root.join(format!(
            "{OWNED_PREFIX}{}-{}",
            std::process::id(),
            u64::from_le_bytes(random)
        ));
        fs::create_dir(&dir).map_err(dir_err(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_err = |source| SpoolError::Lock {
            path: lock_path.clone(),
            source,
        };
        let lock = File::create(&lock_path).map_err(lock_err)?;
        lock.lock().map_err(lock_err)?;
        Ok(Arc::new(Spool {
            dir,
            _lock: lock,
            next: AtomicU64::new(0),
        }))
    }

    /// This process's subdirectory (where its spool files are).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty spool file for one message.
    pub fn create(&self) -> io::Result<SpoolWriter> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{n}.eml"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(SpoolWriter {
            file,
            path: Removal(Some(path)),
            len: 0,
        })
    }
}

impl Drop for Spool {
    /// At a clean exit every message is answered and its file gone: the directory
    /// holds only the lock.
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            debug!(dir = %self.dir.display(), error = %e, "cannot remove the spool directory");
        }
    }
}

/// Removes the subdirectories of processes that are gone (their lock is free).
fn remove_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let owned = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(OWNED_PREFIX));
        if !owned || !path.is_dir() {
            continue;
        }
        let free = match File::open(path.join(LOCK_FILE)) {
            Ok(lock) => lock.try_lock().is_ok(),
            // No lock file: a process that died while creating its directory.
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if !free {
            continue; // another live smtpd's files
        }
        // Never acknowledged (250 comes after the commit), so nothing is lost.
        match fs::remove_dir_all(&path) {
            Ok(()) => warn!(dir = %path.display(), "removed spool files of a process that is gone"),
            Err(e) => warn!(dir = %path.display(), error = %e, "cannot remove old spool files"),
        }
    }
}

/// Deletes the file at the path it holds when dropped.
#[derive(Debug)]
struct Removal(Option<PathBuf>);

impl Drop for Removal {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %e, "cannot remove spool file");
        }
    }
}

impl Removal {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

/// A message body being written by the reactor. Dropping it (connection lost,
/// message refused) deletes the file.
#[derive(Debug)]
pub struct SpoolWriter {
    file: File,
    path: Removal,
    len: u64,
}

impl SpoolWriter {
    /// Appends message bytes. Page cache speed: no fsync (see the module docs).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len = self
            .len
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body is complete: the file is closed (a queued message holds no file
    /// descriptor) and handed on by path.
    pub fn finish(self) -> SpooledBody {
        SpooledBody {
            path: self.path,
            len: self.len,
        }
    }
}

/// A complete message body in the spool, on its way to the storage stage. Dropping
/// it deletes the file: the committer drops it once the message is answered.
#[derive(Debug)]
pub struct SpooledBody {
    path: Removal,
    len: u64,
}

impl SpooledBody {
    /// Octets of the body.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        self.path.path()
    }

    /// Appends the whole body to `out`, reserving exactly its size first (one
    /// allocation, no doubling). Fails if the file is not the size written.
    pub fn read_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        out.try_reserve_exact(len).map_err(io::Error::other)?;
        let start = out.len();
        File::open(self.path())?.take(self.len).read_to_end(out)?;
        if out.len().saturating_sub(start) != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file is shorter than what was written",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_body_round_trips_and_its_file_goes_with_it() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path()).unwrap();
        let mut w = spool.create().unwrap();
        w.append(b"Subject: x\r\n\r\n").unwrap();
        w.append(b"body\r\n").unwrap();
        assert_eq!(w.len(), 20);
        let body = w.finish();
        assert_eq!(files(spool.dir()), ["0.eml", "lock"]);
        let mut out = b"Received: ...\r\n".to_vec();
        body.read_into(&mut out).unwrap();
        assert_eq!(out, b"Received: ...\r\nSubject: x\r\n\r\nbody\r\n");
        drop(body);
        assert_eq!(files(spool.dir()), ["lock"]);
    }

    #[test]
    fn a_dropped_writer_deletes_its_file() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path()).unwrap();
        let mut w = spool.create().unwrap();
        w.append(b"partial").unwrap();
        drop(w);
        assert_eq!(files(spool.dir()), ["lock"]);
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        // A crashed process: its directory and a file, no lock held.
        let dead = root.path().join("smtpd-1-1");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LOCK_FILE), b"").unwrap();
        fs::write(dead.join("0.eml"), b"never acknowledged").unwrap();
        // Something that is not ours.
        fs::write(root.path().join("README"), b"keep").unwrap();
        let live = Spool::open(root.path()).unwrap();
        let mut w = live.create().unwrap();
        w.append(b"in progress").unwrap();
        assert!(!dead.exists());
        // A second process on the same directory leaves the live one's files alone.
        let other = Spool::open(root.path()).unwrap();
        assert!(live.dir().join("0.eml").exists());
        assert_ne!(live.dir(), other.dir());
        assert!(root.path().join("README").exists());
        drop(w);
        let live_dir = live.dir().to_path_buf();
        drop(live);
        assert!(!live_dir.exists(), "a clean exit removes its directory");
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_short_message() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path()).unwrap();
        let mut w = spool.create().unwrap();
        w.append(b"0123456789").unwrap();
        let body = w.finish();
        fs::write(body.path(), b"01234").unwrap();
        assert!(body.read_into(&mut Vec::new()).is_err());
    }
}
