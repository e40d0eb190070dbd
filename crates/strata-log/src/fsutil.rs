//! File-name conventions, and the log's error context around the crash-safe small-file
//! writes of `strata-durable` (the one implementation, shared with the Raft store and the
//! broker).

use std::fs::File;
#[cfg(test)]
use std::fs::OpenOptions;
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::LogError;

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const OFFSET_INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";
/// What a write interrupted by a crash leaves behind; deleted when the log opens.
pub(crate) const TMP_SUFFIX: &str = strata_durable::TMP_SUFFIX;

/// Kafka file name: the offset zero-padded to 20 digits plus a suffix.
pub(crate) fn offset_file_path(dir: &Path, offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{offset:020}.{suffix}"))
}

/// Parses `{offset:020}.{suffix}`; `None` for anything else.
pub(crate) fn parse_offset_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset = stem.parse::<i64>().ok()?;
    Some((offset, suffix))
}

/// fsyncs a directory so created/renamed/deleted entries are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    strata_durable::sync_dir(dir)
        .map_err(LogError::io(format!("syncing directory {}", dir.display())))
}

/// Replaces `dir/name` atomically ([`strata_durable::replace`]): a crash leaves either the
/// old or the new content, never a mix.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    strata_durable::replace(dir, name, contents).map_err(LogError::io(format!(
        "writing {}",
        dir.join(name).display()
    )))
}

/// Most slices one `writev` takes (Linux's `IOV_MAX`); longer lists take several calls.
const MAX_IO_SLICES: usize = 1024;

/// Writes `chunks` back to back at `position`, as one `lseek` plus one `writev` when the
/// kernel takes it all (it does for regular files unless the disk fills up).
///
/// Why not `write_all_at` of one buffer: an append patches only the 61-byte header of each
/// batch, so writing the patched headers and the untouched records from where they already
/// are saves copying every produced byte once more. `pwritev` is not in stable `std`, hence the
/// seek; callers hold the only handle that writes through the file position (readers use
/// positioned reads), so the seek cannot race.
pub(crate) fn write_all_vectored_at(
    file: &File,
    chunks: &[&[u8]],
    position: u64,
) -> std::io::Result<()> {
    let mut writer = file;
    writer.seek(SeekFrom::Start(position))?;
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut unwritten = &mut slices[..];
    // Drops leading empty chunks, so `unwritten` is empty exactly when all is written.
    IoSlice::advance_slices(&mut unwritten, 0);
    while !unwritten.is_empty() {
        let take = unwritten.len().min(MAX_IO_SLICES);
        match writer.write_vectored(&unwritten[..take]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut unwritten, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` back to disk, without
/// waiting for it (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere nothing).
///
/// Why: a log appended at hundreds of MB/s otherwise piles up dirty pages until the kernel's
/// dirty limits throttle the writer, and an append then blocks for a hundred milliseconds or
/// more. Starting writeback as data arrives keeps the dirty set small and the stalls away. It
/// promises no durability (that is what fsync is for), so a failure is only logged.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments; the fd is open for the
        // lifetime of `file`.
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Reads a small file, returning `None` if it does not exist. `max_bytes`
/// bounds the allocation: larger files are reported as corrupt.
pub(crate) fn read_small_file(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, LogError> {
    let ctx = || format!("reading {}", path.display());
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > max_bytes => Err(LogError::StorageCorruption(format!(
            "{} is {} bytes, more than the expected maximum {max_bytes}",
            path.display(),
            meta.len()
        ))),
        Ok(_) => std::fs::read(path).map(Some).map_err(LogError::io(ctx())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(ctx())(e)),
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("deleting {}", path.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let p = offset_file_path(Path::new("/x"), 42, LOG_SUFFIX);
        assert_eq!(p, Path::new("/x/00000000000000000042.log"));
        assert_eq!(
            parse_offset_file_name("00000000000000000042.log"),
            Some((42, "log"))
        );
        assert_eq!(
            parse_offset_file_name("00000000000000000042.timeindex"),
            Some((42, "timeindex"))
        );
        assert_eq!(parse_offset_file_name("42.log"), None);
        assert_eq!(parse_offset_file_name("leader-epoch-checkpoint"), None);
        assert_eq!(parse_offset_file_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn vectored_write_lands_every_chunk_in_order_at_the_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&file, b"0123456789", 0).expect("prefix");
        // More chunks than one writev takes, with empty ones in between.
        let bytes: Vec<[u8; 1]> = (0..MAX_IO_SLICES as u32 * 2 + 3)
            .map(|i| [(i % 251) as u8])
            .collect();
        let mut chunks: Vec<&[u8]> = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            if i % 7 == 0 {
                chunks.push(&[]);
            }
            chunks.push(b);
        }
        write_all_vectored_at(&file, &chunks, 4).expect("write");
        let written = std::fs::read(dir.path().join("f")).expect("read back");
        let expected: Vec<u8> = b"0123"
            .iter()
            .copied()
            .chain(bytes.iter().map(|b| b[0]))
            .collect();
        assert_eq!(written, expected);
    }
}
