//! strata-durable: the one implementation of Strata's crash-safe small-file writes.
//!
//! Three crates write files that must survive a crash at any instant: the partition log
//! (`strata-log`: state file, leader-epoch checkpoint, producer snapshots, cleaner manifests),
//! the Raft store (`strata-quorum`: vote, committed index, snapshot, the purged log) and the
//! broker (`strata-server`: `meta.properties`, `partition.metadata`). None of them depends on
//! another, so the helpers live in this leaf crate rather than being written three times.
//!
//! The contract of [`replace`]: after a crash at any point, `dir/name` holds the old content
//! or the new one, never a mix, and once the call returns the new content and its name are on
//! disk. A crash may leave `name` + [`TMP_SUFFIX`] behind; it is never read, the next
//! [`replace`] overwrites it, and the partition log deletes such files when it opens.
//!
//! What it is not: a general file API. Errors are plain `std::io::Error`; each caller adds
//! the context (which file, for what) its own error type carries. Everything here blocks:
//! async callers run it on a blocking pool.
//!
//! Cost of one [`replace`]: one file create + write + `fsync`, one `rename`, one `fsync` of the
//! directory. Meant for files of kilobytes to a few megabytes, written rarely.
//!
//! The crate also holds the other half of crash safety, [`LockExt`] / [`RwLockExt`]: a lock
//! poisoned by a panic is never recovered from (the process aborts on panic; restart recovers
//! from these files), see `lock.rs`.

mod lock;

pub use lock::{mutex_into_inner, LockExt, RwLockExt, POISONED};

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Suffix of the temporary file [`replace`] writes before renaming it over the target.
pub const TMP_SUFFIX: &str = ".tmp";

/// Replaces `dir/name` with `bytes` atomically and durably: writes `name.tmp`, fsyncs it,
/// renames it over `name` and fsyncs `dir`, so that the rename itself survives a crash.
///
/// Invariant: `name` is never opened for writing, so a reader (or a crash) only ever sees a
/// file some completed call wrote in full.
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes creations, renames and deletions of entries in `dir` durable (an fsync of the
/// directory itself; without it a crash may forget a rename whose file was fsynced).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The content of `dir/name`, or `None` if it does not exist: the reading side of
/// [`replace`] for files that are absent until first written. Unbounded: for files this
/// process wrote itself.
pub fn read_if_exists(dir: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_overwrites_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_if_exists(dir.path(), "f").unwrap(), None);
        replace(dir.path(), "f", b"one").unwrap();
        replace(dir.path(), "f", b"two").unwrap();
        assert_eq!(
            read_if_exists(dir.path(), "f").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert!(!dir.path().join("f.tmp").exists());
    }

    /// A crash after the temporary file was (partly) written but before the rename leaves
    /// the old content readable; the next replace goes through over the leftover.
    #[test]
    fn a_crash_before_the_rename_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "f", b"old").unwrap();
        std::fs::write(dir.path().join(format!("f{TMP_SUFFIX}")), b"torn ne").unwrap();
        assert_eq!(
            read_if_exists(dir.path(), "f").unwrap().as_deref(),
            Some(&b"old"[..])
        );
        replace(dir.path(), "f", b"new").unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
        assert!(!dir.path().join(format!("f{TMP_SUFFIX}")).exists());
    }

    /// A failed replace (here: the temporary file cannot be created) leaves the target as it
    /// was and reports the error.
    #[test]
    fn a_failed_replace_leaves_the_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "f", b"old").unwrap();
        // A directory where the temporary file should go: opening it for writing fails.
        std::fs::create_dir(dir.path().join(format!("f{TMP_SUFFIX}"))).unwrap();
        assert!(replace(dir.path(), "f", b"new").is_err());
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
        assert!(replace(&dir.path().join("missing"), "f", b"x").is_err());
    }

    #[test]
    fn sync_dir_fails_for_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
