//! Sparse per-segment indexes in Kafka's file formats.
//!
//! * `.index`: 8-byte entries `(u32 relative offset, u32 position)`, big-endian.
//!   Kafka convention: the offset is the *last* offset of the batch that starts
//!   at `position`.
//! * `.timeindex`: 12-byte entries `(i64 timestamp, u32 relative offset)`: the
//!   largest timestamp seen so far in the segment and the *base* offset of the
//!   batch holding it (Kafka stores a record offset; the batch base offset is
//!   the closest we know without decompressing).
//!
//! Entries are kept in memory (Kafka mmaps the files) and appended to the file
//! as they are created; files are never preallocated, so their length is
//! always a multiple of the entry size unless a write was torn.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// Bytes per offset-index entry.
pub(crate) const OFFSET_ENTRY_BYTES: u64 = 8;
/// Bytes per time-index entry.
pub(crate) const TIME_ENTRY_BYTES: u64 = 12;

/// An offset and the file position of the batch containing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetPosition {
    pub(crate) offset: i64,
    pub(crate) position: u64,
}

/// A timestamp and the offset of the batch it was seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimestampOffset {
    pub(crate) timestamp_ms: i64,
    pub(crate) offset: i64,
}

fn open_rw(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(LogError::io(format!("opening {}", path.display())))
}

/// Reads a whole index file. Index files are bounded by segment.index.bytes
/// (plus one final time-index entry), and we refuse files larger than
/// `max_bytes` rather than allocating for them.
fn read_index_file(
    file: &File,
    path: &Path,
    max_bytes: u64,
) -> Result<Result<Vec<u8>, String>, LogError> {
    let len_bytes = file
        .metadata()
        .map_err(LogError::io(format!(
            "reading metadata of {}",
            path.display()
        )))?
        .len();
    if len_bytes > max_bytes {
        return Ok(Err(format!(
            "{} is {len_bytes} bytes, limit {max_bytes}",
            path.display()
        )));
    }
    let mut buf = vec![0u8; len_bytes as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(LogError::io(format!("reading {}", path.display())))?;
    Ok(Ok(buf))
}

fn relative_offset(base_offset: i64, offset: i64) -> u32 {
    let relative = offset - base_offset;
    assert!(
        (0..=i32::MAX as i64).contains(&relative),
        "offset {offset} not representable relative to segment base {base_offset}"
    );
    relative as u32
}

/// The offset index of one segment.
pub(crate) struct OffsetIndex {
    base_offset: i64,
    path: PathBuf,
    file: File,
    /// (relative offset, position); both strictly increasing.
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Opens (creating if absent) and loads the index. The `Err(String)` in
    /// the second element explains why the file content was unusable; the
    /// returned index is then empty and the caller must rebuild it.
    pub(crate) fn open(
        path: PathBuf,
        base_offset: i64,
        segment_size_bytes: u64,
        max_bytes: u64,
    ) -> Result<(Self, Result<(), String>), LogError> {
        let file = open_rw(&path)?;
        let mut index = OffsetIndex {
            base_offset,
            path,
            file,
            entries: Vec::new(),
        };
        let buf = match read_index_file(&index.file, &index.path, max_bytes)? {
            Ok(buf) => buf,
            Err(why) => return Ok((index, Err(why))),
        };
        if !(buf.len() as u64).is_multiple_of(OFFSET_ENTRY_BYTES) {
            let why = format!(
                "{} has length {} not a multiple of 8",
                index.path.display(),
                buf.len()
            );
            return Ok((index, Err(why)));
        }
        let mut entries = Vec::with_capacity(buf.len() / 8);
        for chunk in buf.chunks_exact(8) {
            let rel = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let pos = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if let Some(&(last_rel, last_pos)) = entries.last() {
                if rel <= last_rel || pos <= last_pos {
                    let why = format!("{} entries are not increasing", index.path.display());
                    return Ok((index, Err(why)));
                }
            }
            if rel > i32::MAX as u32 || pos as u64 >= segment_size_bytes {
                let why = format!(
                    "{} has entry ({rel}, {pos}) outside the segment",
                    index.path.display()
                );
                return Ok((index, Err(why)));
            }
            entries.push((rel, pos));
        }
        index.entries = entries;
        Ok((index, Ok(())))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends an entry; offsets and positions must strictly increase.
    pub(crate) fn append(&mut self, offset: i64, position: u64) -> Result<(), LogError> {
        let rel = relative_offset(self.base_offset, offset);
        assert!(
            position <= u32::MAX as u64,
            "segment position {position} exceeds u32"
        );
        let pos = position as u32;
        if let Some(&(last_rel, last_pos)) = self.entries.last() {
            assert!(
                rel > last_rel && pos > last_pos,
                "offset index entries must increase"
            );
        }
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&rel.to_be_bytes());
        entry[4..].copy_from_slice(&pos.to_be_bytes());
        let at = self.entries.len() as u64 * OFFSET_ENTRY_BYTES;
        self.file
            .write_all_at(&entry, at)
            .map_err(LogError::io(format!(
                "appending to {}",
                self.path.display()
            )))?;
        self.entries.push((rel, pos));
        Ok(())
    }

    /// Largest entry whose offset is <= `target`, if any.
    pub(crate) fn lookup(&self, target: i64) -> Option<OffsetPosition> {
        let rel = target - self.base_offset;
        if rel < 0 {
            return None;
        }
        let idx = self.entries.partition_point(|&(r, _)| (r as i64) <= rel);
        idx.checked_sub(1).map(|i| self.entry(i))
    }

    pub(crate) fn last(&self) -> Option<OffsetPosition> {
        self.entries.len().checked_sub(1).map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> OffsetPosition {
        let (rel, pos) = self.entries[i];
        OffsetPosition {
            offset: self.base_offset + rel as i64,
            position: pos as u64,
        }
    }

    /// Drops all entries (before a rebuild).
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.file
            .set_len(0)
            .map_err(LogError::io(format!("truncating {}", self.path.display())))?;
        self.entries.clear();
        Ok(())
    }

    /// Drops the entries of batches at or after `position` (the segment is being cut
    /// there), in memory and in the file. Not fsynced.
    pub(crate) fn truncate_to_position(&mut self, position: u64) -> Result<(), LogError> {
        let keep = self
            .entries
            .partition_point(|&(_, pos)| (pos as u64) < position);
        self.file
            .set_len(keep as u64 * OFFSET_ENTRY_BYTES)
            .map_err(LogError::io(format!("truncating {}", self.path.display())))?;
        self.entries.truncate(keep);
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(LogError::io(format!("syncing {}", self.path.display())))
    }
}

/// The time index of one segment.
pub(crate) struct TimeIndex {
    base_offset: i64,
    path: PathBuf,
    file: File,
    /// (timestamp, relative offset); timestamps strictly increasing, offsets non-decreasing.
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Opens (creating if absent) and loads the index; see [`OffsetIndex::open`].
    pub(crate) fn open(
        path: PathBuf,
        base_offset: i64,
        max_bytes: u64,
    ) -> Result<(Self, Result<(), String>), LogError> {
        let file = open_rw(&path)?;
        let mut index = TimeIndex {
            base_offset,
            path,
            file,
            entries: Vec::new(),
        };
        let buf = match read_index_file(&index.file, &index.path, max_bytes)? {
            Ok(buf) => buf,
            Err(why) => return Ok((index, Err(why))),
        };
        if !(buf.len() as u64).is_multiple_of(TIME_ENTRY_BYTES) {
            let why = format!(
                "{} has length {} not a multiple of 12",
                index.path.display(),
                buf.len()
            );
            return Ok((index, Err(why)));
        }
        let mut entries = Vec::with_capacity(buf.len() / 12);
        for chunk in buf.chunks_exact(12) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let ts = i64::from_be_bytes(ts);
            let rel = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if let Some(&(last_ts, last_rel)) = entries.last() {
                if ts <= last_ts || rel < last_rel {
                    let why = format!("{} entries are not increasing", index.path.display());
                    return Ok((index, Err(why)));
                }
            }
            if rel > i32::MAX as u32 {
                let why = format!(
                    "{} has relative offset {rel} out of range",
                    index.path.display()
                );
                return Ok((index, Err(why)));
            }
            entries.push((ts, rel));
        }
        index.entries = entries;
        Ok((index, Ok(())))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends `(timestamp, offset)` unless the timestamp does not exceed the
    /// last entry's (Kafka's `maybeAppend`: the index only records new maxima).
    pub(crate) fn maybe_append(&mut self, timestamp_ms: i64, offset: i64) -> Result<(), LogError> {
        let rel = relative_offset(self.base_offset, offset);
        if let Some(&(last_ts, last_rel)) = self.entries.last() {
            if timestamp_ms <= last_ts {
                return Ok(());
            }
            assert!(rel >= last_rel, "time index offsets must not decrease");
        }
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&timestamp_ms.to_be_bytes());
        entry[8..].copy_from_slice(&rel.to_be_bytes());
        let at = self.entries.len() as u64 * TIME_ENTRY_BYTES;
        self.file
            .write_all_at(&entry, at)
            .map_err(LogError::io(format!(
                "appending to {}",
                self.path.display()
            )))?;
        self.entries.push((timestamp_ms, rel));
        Ok(())
    }

    /// Largest entry with timestamp strictly below `timestamp_ms`: every batch
    /// before its offset has max timestamp < `timestamp_ms`, so a search for
    /// the first batch with max timestamp >= `timestamp_ms` can start there.
    pub(crate) fn lookup_before(&self, timestamp_ms: i64) -> Option<TimestampOffset> {
        let idx = self.entries.partition_point(|&(ts, _)| ts < timestamp_ms);
        idx.checked_sub(1).map(|i| self.entry(i))
    }

    pub(crate) fn last(&self) -> Option<TimestampOffset> {
        self.entries.len().checked_sub(1).map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> TimestampOffset {
        let (ts, rel) = self.entries[i];
        TimestampOffset {
            timestamp_ms: ts,
            offset: self.base_offset + rel as i64,
        }
    }

    /// Drops all entries (before a rebuild).
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.file
            .set_len(0)
            .map_err(LogError::io(format!("truncating {}", self.path.display())))?;
        self.entries.clear();
        Ok(())
    }

    /// Drops the entries pointing at `offset` or later (Kafka's `TimeIndex.truncateTo`), in
    /// memory and in the file. An entry kept may have been written by a later batch: its
    /// timestamp is still that of the batch at its offset, so lookups stay right. Not fsynced.
    pub(crate) fn truncate_to_offset(&mut self, offset: i64) -> Result<(), LogError> {
        let base = self.base_offset;
        let keep = self
            .entries
            .partition_point(|&(_, rel)| base + (rel as i64) < offset);
        self.file
            .set_len(keep as u64 * TIME_ENTRY_BYTES)
            .map_err(LogError::io(format!("truncating {}", self.path.display())))?;
        self.entries.truncate(keep);
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(LogError::io(format!("syncing {}", self.path.display())))
    }
}

/// Reads only the last entry of a time-index file (to learn an inactive
/// segment's largest timestamp without loading its index). `None` if the file
/// is missing, empty or not a whole number of entries.
pub(crate) fn read_last_time_entry(
    path: &Path,
    base_offset: i64,
) -> Result<Option<TimestampOffset>, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(format!("opening {}", path.display()))(e)),
    };
    let len_bytes = file
        .metadata()
        .map_err(LogError::io(format!(
            "reading metadata of {}",
            path.display()
        )))?
        .len();
    if len_bytes == 0 || len_bytes % TIME_ENTRY_BYTES != 0 {
        return Ok(None);
    }
    let mut entry = [0u8; 12];
    file.read_exact_at(&mut entry, len_bytes - TIME_ENTRY_BYTES)
        .map_err(LogError::io(format!("reading {}", path.display())))?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&entry[..8]);
    let rel = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
    Ok(Some(TimestampOffset {
        timestamp_ms: i64::from_be_bytes(ts),
        offset: base_offset + rel as i64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let (mut idx, ok) = OffsetIndex::open(path.clone(), 100, 10_000, 1 << 20).expect("open");
        assert!(ok.is_ok());
        idx.append(105, 500).expect("append");
        idx.append(110, 900).expect("append");
        assert_eq!(idx.lookup(99), None);
        assert_eq!(idx.lookup(104), None);
        assert_eq!(
            idx.lookup(105),
            Some(OffsetPosition {
                offset: 105,
                position: 500
            })
        );
        assert_eq!(
            idx.lookup(109),
            Some(OffsetPosition {
                offset: 105,
                position: 500
            })
        );
        assert_eq!(
            idx.lookup(1000),
            Some(OffsetPosition {
                offset: 110,
                position: 900
            })
        );
        drop(idx);
        let (idx, ok) = OffsetIndex::open(path.clone(), 100, 10_000, 1 << 20).expect("reopen");
        assert!(ok.is_ok());
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.last(),
            Some(OffsetPosition {
                offset: 110,
                position: 900
            })
        );
        // Position beyond the segment is detected.
        let (_, ok) = OffsetIndex::open(path.clone(), 100, 800, 1 << 20).expect("reopen");
        assert!(ok.is_err());
        // Torn entry is detected.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &[1, 2, 3]))
            .expect("append garbage");
        let (_, ok) = OffsetIndex::open(path, 100, 10_000, 1 << 20).expect("reopen");
        assert!(ok.is_err());
    }

    #[test]
    fn time_index_only_records_new_maxima() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.timeindex");
        let (mut idx, _) = TimeIndex::open(path.clone(), 0, 1 << 20).expect("open");
        idx.maybe_append(10, 0).expect("append");
        idx.maybe_append(10, 5).expect("append");
        idx.maybe_append(20, 7).expect("append");
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.lookup_before(10), None);
        assert_eq!(
            idx.lookup_before(11),
            Some(TimestampOffset {
                timestamp_ms: 10,
                offset: 0
            })
        );
        assert_eq!(
            idx.lookup_before(100),
            Some(TimestampOffset {
                timestamp_ms: 20,
                offset: 7
            })
        );
        assert_eq!(
            read_last_time_entry(&path, 0).expect("read"),
            Some(TimestampOffset {
                timestamp_ms: 20,
                offset: 7
            })
        );
    }
}
