//! Whole-file replacement that survives a crash at any point: the reader sees the old content
//! or the new one, never a mix, and the new content is on disk when the call returns.
//!
//! Used for the small files of the Raft store (vote, committed index, snapshot) and for the
//! log file when a purge rewrites it. Blocking: call it on the blocking pool.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `dir/name` atomically: `name.tmp` is written and fsynced, renamed over
/// `name`, and the directory fsynced so the rename itself is durable.
pub(crate) fn replace(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
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

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The content of `dir/name`, or `None` if it does not exist.
pub(crate) fn read_if_exists(dir: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs blocking file work on tokio's blocking pool, so that an fsync never stalls an async
/// worker thread (and with it every task scheduled there).
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
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
}
