//! One log segment: a `.log` file of whole record batches plus its offset and
//! time indexes (Kafka's `LogSegment`).
//!
//! Invariants:
//! * the file name's base offset is <= the base offset of the first batch,
//!   and batch offsets strictly increase through the file;
//! * `size_bytes` is the length of the valid prefix of the file; for the active
//!   segment the file is exactly that long;
//! * inactive segments are immutable, so their indexes can be loaded lazily
//!   and cached.

use std::cell::OnceCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{RecordBatchHeader, BATCH_HEADER_SIZE_BYTES, NO_TIMESTAMP};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::fsutil::{self, offset_file_path, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use crate::index::{
    read_last_time_entry, OffsetIndex, TimeIndex, TimestampOffset, TIME_ENTRY_BYTES,
};
use crate::read_buffers;
use crate::records::{self, TimestampAndOffset};

/// Chunk size for streaming CRC checks during recovery; bounds the
/// allocation regardless of the batch length found on disk.
const RECOVERY_CHUNK_BYTES: usize = 64 * 1024;

/// Where one appended batch went, for index maintenance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchPlacement {
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) size_bytes: u64,
}

impl BatchPlacement {
    fn of(h: &RecordBatchHeader) -> Self {
        BatchPlacement {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp_ms: h.max_timestamp,
            size_bytes: h.size_bytes() as u64,
        }
    }
}

/// The two indexes of a segment, loaded together.
pub(crate) struct SegmentIndexes {
    pub(crate) offset: OffsetIndex,
    pub(crate) time: TimeIndex,
}

impl SegmentIndexes {
    fn clear(&mut self) -> Result<(), LogError> {
        self.offset.clear()?;
        self.time.clear()
    }
}

/// Incremental index maintenance shared by append, recovery and rebuilds, so
/// all three produce identical indexes (Kafka's `LogSegment.append` rule).
struct IndexBuilder {
    bytes_since_last_entry: u64,
    max_timestamp: TimestampOffset,
}

impl IndexBuilder {
    fn add(
        &mut self,
        indexes: &mut SegmentIndexes,
        position: u64,
        batch: &BatchPlacement,
        interval_bytes: u64,
    ) -> Result<(), LogError> {
        if batch.max_timestamp_ms > self.max_timestamp.timestamp_ms {
            self.max_timestamp = TimestampOffset {
                timestamp_ms: batch.max_timestamp_ms,
                offset: batch.base_offset,
            };
        }
        if self.bytes_since_last_entry > interval_bytes {
            indexes.offset.append(batch.last_offset, position)?;
            if self.max_timestamp.timestamp_ms != NO_TIMESTAMP {
                indexes
                    .time
                    .maybe_append(self.max_timestamp.timestamp_ms, self.max_timestamp.offset)?;
            }
            self.bytes_since_last_entry = 0;
        }
        self.bytes_since_last_entry += batch.size_bytes;
        Ok(())
    }
}

/// What `recover` found.
pub(crate) struct RecoveryOutcome {
    /// Offset after the last valid batch; `None` if the segment is now empty.
    pub(crate) next_offset: Option<i64>,
    /// Bytes cut off the end of the file.
    pub(crate) truncated_bytes: u64,
}

/// How much of the active segment may be appended before its writeback is started; see
/// `fsutil::start_writeback`. Small enough to keep the dirty set far below the kernel's
/// throttling limits, large enough that the call is rare (once per several batches).
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// One segment of the log.
pub(crate) struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    file: OnceCell<File>,
    size_bytes: u64,
    indexes: OnceCell<SegmentIndexes>,
    /// Largest batch max timestamp and the base offset of its batch.
    max_timestamp: OnceCell<TimestampOffset>,
    /// Only meaningful for the active segment.
    bytes_since_last_index_entry: u64,
    /// Bytes of the `.log` file whose writeback has been started (`fsutil::start_writeback`);
    /// only the active segment advances it.
    writeback_started_to: u64,
    /// Time the segment.ms roll clock started: wall-clock time of the first
    /// append, or (after a restart) the first batch's max timestamp, as Kafka does.
    rolling_base_ms: Option<i64>,
}

fn index_read_limit_bytes(cfg: &LogConfig) -> u64 {
    // Allow the config to have shrunk since the file was written; the +1 entry
    // is the final time-index entry written when the segment is rolled.
    cfg.segment_index_bytes.max(64 << 20) + TIME_ENTRY_BYTES
}

impl LogSegment {
    /// Creates the files of a brand-new empty segment. The `.log` file must not
    /// exist: a name clash would mean two segments claim the same offsets.
    pub(crate) fn create(dir: &Path, base_offset: i64, cfg: &LogConfig) -> Result<Self, LogError> {
        assert!(
            base_offset >= 0,
            "segment base offset {base_offset} must be non-negative"
        );
        let log_path = offset_file_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(LogError::io(format!("creating {}", log_path.display())))?;
        let seg = LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            file: OnceCell::from(file),
            size_bytes: 0,
            indexes: OnceCell::new(),
            max_timestamp: OnceCell::from(TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: base_offset,
            }),
            bytes_since_last_index_entry: 0,
            writeback_started_to: 0,
            rolling_base_ms: None,
        };
        let (mut indexes, _) = seg.open_indexes(cfg)?;
        // Leftover index files of a segment whose .log vanished carry nothing useful.
        indexes.clear()?;
        let _ = seg.indexes.set(indexes);
        fsutil::fsync_dir(dir)?;
        Ok(seg)
    }

    /// A segment found on disk; no I/O happens until it is used.
    pub(crate) fn existing(dir: &Path, base_offset: i64, size_bytes: u64) -> Self {
        LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            file: OnceCell::new(),
            size_bytes,
            indexes: OnceCell::new(),
            max_timestamp: OnceCell::new(),
            bytes_since_last_index_entry: 0,
            writeback_started_to: size_bytes,
            rolling_base_ms: None,
        }
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub(crate) fn rolling_base_ms(&self) -> Option<i64> {
        self.rolling_base_ms
    }

    pub(crate) fn path(&self, suffix: &str) -> PathBuf {
        offset_file_path(&self.dir, self.base_offset, suffix)
    }

    fn file(&self) -> Result<&File, LogError> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let path = self.path(LOG_SUFFIX);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(format!("opening {}", path.display())))?;
        Ok(self.file.get_or_init(|| f))
    }

    fn open_indexes(
        &self,
        cfg: &LogConfig,
    ) -> Result<(SegmentIndexes, Result<(), String>), LogError> {
        let limit = index_read_limit_bytes(cfg);
        let (offset, offset_ok) = OffsetIndex::open(
            self.path(OFFSET_INDEX_SUFFIX),
            self.base_offset,
            self.size_bytes,
            limit,
        )?;
        let (time, time_ok) =
            TimeIndex::open(self.path(TIME_INDEX_SUFFIX), self.base_offset, limit)?;
        Ok((SegmentIndexes { offset, time }, offset_ok.and(time_ok)))
    }

    /// The indexes, loaded on first use. A segment that is only read is
    /// trusted (it was flushed before becoming inactive), so a broken index
    /// is rebuilt from batch headers rather than truncating data.
    pub(crate) fn indexes(&self, cfg: &LogConfig) -> Result<&SegmentIndexes, LogError> {
        if let Some(idx) = self.indexes.get() {
            return Ok(idx);
        }
        let (mut indexes, ok) = self.open_indexes(cfg)?;
        // Missing index files come back empty; an empty index over data that
        // should have produced entries means it was lost, so rebuild it too.
        let lost = if self.size_bytes > 0 && indexes.time.len() == 0 {
            Err("time index is empty".to_string())
        } else if self.size_bytes > cfg.index_interval_bytes && indexes.offset.len() == 0 {
            Err("offset index is empty".to_string())
        } else {
            Ok(())
        };
        if let Err(why) = ok.and(lost) {
            tracing::warn!(segment = self.base_offset, %why, "rebuilding segment indexes");
            self.rebuild_indexes_from_headers(&mut indexes, cfg)?;
        }
        Ok(self.indexes.get_or_init(|| indexes))
    }

    fn indexes_mut(&mut self, cfg: &LogConfig) -> Result<&mut SegmentIndexes, LogError> {
        self.indexes(cfg)?;
        self.indexes
            .get_mut()
            .ok_or_else(|| LogError::StorageCorruption("segment indexes vanished".into()))
    }

    fn rebuild_indexes_from_headers(
        &self,
        indexes: &mut SegmentIndexes,
        cfg: &LogConfig,
    ) -> Result<(), LogError> {
        indexes.clear()?;
        let mut builder = IndexBuilder {
            bytes_since_last_entry: 0,
            max_timestamp: TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: self.base_offset,
            },
        };
        let mut pos = 0;
        while pos < self.size_bytes {
            let h = self.read_header(pos)?;
            builder.add(
                indexes,
                pos,
                &BatchPlacement::of(&h),
                cfg.index_interval_bytes,
            )?;
            pos += h.size_bytes() as u64;
        }
        if builder.max_timestamp.timestamp_ms != NO_TIMESTAMP {
            indexes.time.maybe_append(
                builder.max_timestamp.timestamp_ms,
                builder.max_timestamp.offset,
            )?;
        }
        Ok(())
    }

    /// Reads and parses the batch header at `position`; the whole batch must
    /// lie inside the segment (anything else is on-disk corruption).
    pub(crate) fn read_header(&self, position: u64) -> Result<RecordBatchHeader, LogError> {
        let corrupt = |why: String| {
            LogError::StorageCorruption(format!(
                "segment {} position {position}: {why}",
                self.base_offset
            ))
        };
        if position + BATCH_HEADER_SIZE_BYTES as u64 > self.size_bytes {
            return Err(corrupt(
                "batch header runs past the end of the segment".into(),
            ));
        }
        let mut buf = [0u8; BATCH_HEADER_SIZE_BYTES];
        self.file()?
            .read_exact_at(&mut buf, position)
            .map_err(LogError::io(format!(
                "reading segment {}",
                self.base_offset
            )))?;
        let h = RecordBatchHeader::parse(&buf).map_err(|e| corrupt(e.to_string()))?;
        if position + h.size_bytes() as u64 > self.size_bytes {
            return Err(corrupt(format!(
                "batch of {} bytes runs past the end",
                h.size_bytes()
            )));
        }
        Ok(h)
    }

    /// Reads `len_bytes` at `position` (caller keeps it within the segment), into a recycled
    /// buffer when the read is large (see `read_buffers`).
    pub(crate) fn read_bytes(&self, position: u64, len_bytes: usize) -> Result<Bytes, LogError> {
        debug_assert!(position + len_bytes as u64 <= self.size_bytes);
        read_buffers::read_at(self.file()?, position, len_bytes).map_err(LogError::io(format!(
            "reading segment {}",
            self.base_offset
        )))
    }

    /// Position and header of the first batch whose last offset is >= `target`,
    /// or `None` if the segment ends before it.
    pub(crate) fn find_batch(
        &self,
        target: i64,
        cfg: &LogConfig,
    ) -> Result<Option<(u64, RecordBatchHeader)>, LogError> {
        let mut pos = self
            .indexes(cfg)?
            .offset
            .lookup(target)
            .map_or(0, |e| e.position);
        while pos < self.size_bytes {
            let h = self.read_header(pos)?;
            if h.last_offset() >= target {
                return Ok(Some((pos, h)));
            }
            pos += h.size_bytes() as u64;
        }
        Ok(None)
    }

    /// Calls `f(position, header)` for every batch whose last offset is >= `from_offset`.
    pub(crate) fn try_for_each_batch_from(
        &self,
        from_offset: i64,
        cfg: &LogConfig,
        mut f: impl FnMut(u64, &RecordBatchHeader) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let Some((mut pos, _)) = self.find_batch(from_offset, cfg)? else {
            return Ok(());
        };
        while pos < self.size_bytes {
            let h = self.read_header(pos)?;
            f(pos, &h)?;
            pos += h.size_bytes() as u64;
        }
        Ok(())
    }

    /// Fills `buf` from `position`; the caller keeps the range inside the segment.
    pub(crate) fn read_exact_at(&self, position: u64, buf: &mut [u8]) -> Result<(), LogError> {
        if position + buf.len() as u64 > self.size_bytes {
            return Err(LogError::StorageCorruption(format!(
                "segment {}: read of {} bytes at {position} runs past the end",
                self.base_offset,
                buf.len()
            )));
        }
        self.file()?
            .read_exact_at(buf, position)
            .map_err(LogError::io(format!(
                "reading segment {}",
                self.base_offset
            )))
    }

    /// Appends already-validated batches (`chunks` hold them back to back, as
    /// described by `placements`) with a single vectored write.
    pub(crate) fn append(
        &mut self,
        chunks: &[&[u8]],
        placements: &[BatchPlacement],
        cfg: &LogConfig,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let size_bytes: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        debug_assert_eq!(
            placements.iter().map(|p| p.size_bytes).sum::<u64>(),
            size_bytes
        );
        let start = self.size_bytes;
        if let Some(first) = placements.first() {
            assert!(
                first.base_offset >= self.base_offset,
                "batch offset {} below segment base offset {}",
                first.base_offset,
                self.base_offset
            );
        }
        debug_assert!(placements
            .windows(2)
            .all(|w| w[1].base_offset > w[0].last_offset));
        let file = self.file()?;
        if let Err(e) = fsutil::write_all_vectored_at(file, chunks, start) {
            // Undo a partial write so the file never ends in a torn batch while we keep running.
            if let Err(undo) = file.set_len(start) {
                tracing::error!(segment = self.base_offset, error = %undo, "could not undo partial append");
            }
            return Err(LogError::io(format!(
                "appending to segment {}",
                self.base_offset
            ))(e));
        }
        let end = start + size_bytes;
        // A truncation may have moved the end below what was written back.
        let from = self.writeback_started_to.min(start);
        let write_behind = end - from >= WRITE_BEHIND_BYTES;
        if write_behind {
            fsutil::start_writeback(file, from, end - from);
        }
        self.size_bytes = end;
        if write_behind {
            self.writeback_started_to = end;
        }
        if self.rolling_base_ms.is_none() {
            self.rolling_base_ms = Some(now_ms);
        }
        let mut builder = IndexBuilder {
            bytes_since_last_entry: self.bytes_since_last_index_entry,
            max_timestamp: self.max_timestamp(cfg)?,
        };
        let interval = cfg.index_interval_bytes;
        let indexes = self.indexes_mut(cfg)?;
        let mut pos = start;
        for p in placements {
            builder.add(indexes, pos, p, interval)?;
            pos += p.size_bytes;
        }
        self.bytes_since_last_index_entry = builder.bytes_since_last_entry;
        self.max_timestamp = OnceCell::from(builder.max_timestamp);
        Ok(())
    }

    /// Whether either index reached segment.index.bytes (Kafka rolls then).
    pub(crate) fn is_index_full(&self, cfg: &LogConfig) -> Result<bool, LogError> {
        let idx = self.indexes(cfg)?;
        let max_offset_entries = cfg.segment_index_bytes / crate::index::OFFSET_ENTRY_BYTES;
        let max_time_entries = cfg.segment_index_bytes / TIME_ENTRY_BYTES;
        Ok(idx.offset.len() as u64 >= max_offset_entries
            || idx.time.len() as u64 >= max_time_entries)
    }

    /// Largest batch max timestamp in the segment and the base offset of its
    /// batch; `(-1, base_offset)` when there is none. For inactive segments
    /// this reads just the last time-index entry (written at roll).
    pub(crate) fn max_timestamp(&self, cfg: &LogConfig) -> Result<TimestampOffset, LogError> {
        if let Some(m) = self.max_timestamp.get() {
            return Ok(*m);
        }
        let none = TimestampOffset {
            timestamp_ms: NO_TIMESTAMP,
            offset: self.base_offset,
        };
        let found = match self.indexes.get() {
            Some(idx) => idx.time.last(),
            None => match read_last_time_entry(&self.path(TIME_INDEX_SUFFIX), self.base_offset)? {
                Some(t) => Some(t),
                None if self.size_bytes > 0 => self.indexes(cfg)?.time.last(),
                None => None,
            },
        };
        Ok(*self.max_timestamp.get_or_init(|| found.unwrap_or(none)))
    }

    /// Kafka `largestTimestamp` for retention: the max timestamp, or the file's
    /// modification time if the segment holds no timestamps.
    pub(crate) fn largest_timestamp_for_retention(&self, cfg: &LogConfig) -> Result<i64, LogError> {
        let ts = self.max_timestamp(cfg)?.timestamp_ms;
        if ts >= 0 {
            return Ok(ts);
        }
        let path = self.path(LOG_SUFFIX);
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(LogError::io(format!("reading mtime of {}", path.display())))?;
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64))
    }

    /// Kafka's `LogSegment.findOffsetByTimestamp`: the first record at or above
    /// `start_offset` whose timestamp is >= `timestamp_ms`, with its batch's leader epoch.
    /// The time index gives where to start; batch headers are walked from there, and the
    /// records of each batch whose max timestamp reaches the target are read (inflated if
    /// compressed, bounded) until one answers.
    pub(crate) fn find_offset_by_timestamp(
        &self,
        timestamp_ms: i64,
        start_offset: i64,
        cfg: &LogConfig,
    ) -> Result<Option<TimestampAndOffset>, LogError> {
        let from = self
            .indexes(cfg)?
            .time
            .lookup_before(timestamp_ms)
            .map_or(self.base_offset, |t| t.offset)
            .max(start_offset);
        let Some((mut pos, _)) = self.find_batch(from, cfg)? else {
            return Ok(None);
        };
        while pos < self.size_bytes {
            let h = self.read_header(pos)?;
            if h.max_timestamp >= timestamp_ms && h.last_offset() >= start_offset {
                let batch = self.read_bytes(pos, h.size_bytes())?;
                let found =
                    records::find_record_by_timestamp(&batch, &h, timestamp_ms, start_offset)
                        .map_err(|e| self.corrupt_batch(pos, e))?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            pos += h.size_bytes() as u64;
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP in this segment (Kafka's `UnifiedLog.fetchOffsetByTimestamp`,
    /// KIP-734): the first batch from the one holding the segment's max timestamp whose max
    /// timestamp it is, and in it the first record with that timestamp, with the batch's
    /// leader epoch. When no record of that batch carries its header's max timestamp, the
    /// batch's base offset (validation makes the header the records' max, so only batches
    /// appended without reading their records, by an older Strata, can be so); when no batch
    /// does, the time index's entry, without an epoch. `None` when the segment has no
    /// timestamps.
    pub(crate) fn max_timestamp_record(
        &self,
        cfg: &LogConfig,
    ) -> Result<Option<TimestampAndOffset>, LogError> {
        let max = self.max_timestamp(cfg)?;
        if max.timestamp_ms == NO_TIMESTAMP {
            return Ok(None);
        }
        let Some((mut pos, _)) = self.find_batch(max.offset, cfg)? else {
            return Ok(None);
        };
        while pos < self.size_bytes {
            let h = self.read_header(pos)?;
            if h.max_timestamp == max.timestamp_ms {
                let batch = self.read_bytes(pos, h.size_bytes())?;
                let offset = records::offset_of_max_timestamp(&batch, &h)
                    .map_err(|e| self.corrupt_batch(pos, e))?;
                return Ok(Some(TimestampAndOffset::in_batch(
                    &h,
                    h.max_timestamp,
                    offset.unwrap_or(h.base_offset),
                )));
            }
            pos += h.size_bytes() as u64;
        }
        Ok(Some(TimestampAndOffset {
            timestamp_ms: max.timestamp_ms,
            offset: max.offset,
            leader_epoch: None,
        }))
    }

    /// A batch of this segment whose records do not read: on-disk corruption.
    fn corrupt_batch(&self, position: u64, e: LogError) -> LogError {
        LogError::StorageCorruption(format!(
            "segment {} position {position}: {e}",
            self.base_offset
        ))
    }

    /// Full recovery: validates every batch (header, offsets, CRC), rebuilds
    /// both indexes and truncates the file at the first invalid or torn batch.
    pub(crate) fn recover(&mut self, cfg: &LogConfig) -> Result<RecoveryOutcome, LogError> {
        let file_len = self
            .file()?
            .metadata()
            .map_err(LogError::io(format!(
                "reading metadata of segment {}",
                self.base_offset
            )))?
            .len();
        self.size_bytes = file_len;
        let (mut indexes, _) = self.open_indexes(cfg)?;
        indexes.clear()?;
        let mut builder = IndexBuilder {
            bytes_since_last_entry: 0,
            max_timestamp: TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: self.base_offset,
            },
        };
        let file = self.file()?;
        let io_ctx = || format!("recovering segment {}", self.base_offset);
        let mut chunk = vec![0u8; RECOVERY_CHUNK_BYTES];
        let mut pos: u64 = 0;
        let mut next_offset: Option<i64> = None;
        let mut first_max_timestamp: Option<i64> = None;
        let mut stop_reason: Option<String> = None;
        while pos < file_len {
            if file_len - pos < BATCH_HEADER_SIZE_BYTES as u64 {
                stop_reason = Some("torn batch header".into());
                break;
            }
            let mut header = [0u8; BATCH_HEADER_SIZE_BYTES];
            file.read_exact_at(&mut header, pos)
                .map_err(LogError::io(io_ctx()))?;
            let h = match RecordBatchHeader::parse(&header) {
                Ok(h) => h,
                Err(e) => {
                    stop_reason = Some(e.to_string());
                    break;
                }
            };
            let size = h.size_bytes() as u64;
            let expected = next_offset.unwrap_or(self.base_offset);
            if pos + size > file_len {
                stop_reason = Some(format!(
                    "torn batch: {size} bytes declared, {} present",
                    file_len - pos
                ));
                break;
            }
            if h.base_offset < expected || h.last_offset_delta < 0 {
                stop_reason = Some(format!(
                    "batch offsets {}..={} but expected >= {expected}",
                    h.base_offset,
                    h.last_offset()
                ));
                break;
            }
            let mut crc = 0u32;
            let mut at = pos + 21;
            let end = pos + size;
            while at < end {
                let n = ((end - at) as usize).min(chunk.len());
                file.read_exact_at(&mut chunk[..n], at)
                    .map_err(LogError::io(io_ctx()))?;
                crc = crc32c::crc32c_append(crc, &chunk[..n]);
                at += n as u64;
            }
            if crc != h.crc {
                stop_reason = Some(format!("CRC mismatch in batch at offset {}", h.base_offset));
                break;
            }
            builder.add(
                &mut indexes,
                pos,
                &BatchPlacement::of(&h),
                cfg.index_interval_bytes,
            )?;
            first_max_timestamp.get_or_insert(h.max_timestamp);
            next_offset = Some(h.last_offset() + 1);
            pos = end;
        }
        let truncated_bytes = file_len - pos;
        if let Some(why) = stop_reason {
            tracing::warn!(segment = self.base_offset, position = pos, truncated_bytes, %why, "truncating log segment during recovery");
            file.set_len(pos).map_err(LogError::io(io_ctx()))?;
            file.sync_all().map_err(LogError::io(io_ctx()))?;
        }
        self.size_bytes = pos;
        self.bytes_since_last_index_entry = builder.bytes_since_last_entry;
        if builder.max_timestamp.timestamp_ms != NO_TIMESTAMP {
            // Kafka appends this entry when a segment becomes inactive; doing it for
            // every recovered segment keeps "last time-index entry == segment max" true.
            indexes.time.maybe_append(
                builder.max_timestamp.timestamp_ms,
                builder.max_timestamp.offset,
            )?;
        }
        self.indexes = OnceCell::from(indexes);
        self.max_timestamp = OnceCell::from(builder.max_timestamp);
        self.rolling_base_ms = first_max_timestamp.filter(|ts| *ts >= 0);
        Ok(RecoveryOutcome {
            next_offset,
            truncated_bytes,
        })
    }

    /// Clean-shutdown open of the active segment: trusts the indexes and reads
    /// only the batch headers after the last offset-index entry (at most about
    /// index.interval.bytes of data). Returns the next offset, or `Err(why)`
    /// when anything looks inconsistent and the caller should `recover`.
    pub(crate) fn load_active_after_clean_shutdown(
        &mut self,
        cfg: &LogConfig,
    ) -> Result<Result<i64, String>, LogError> {
        let (indexes, ok) = self.open_indexes(cfg)?;
        if let Err(why) = ok {
            return Ok(Err(why));
        }
        let start = indexes.offset.last();
        let mut pos = start.map_or(0, |e| e.position);
        let mut max_ts = indexes.time.last().unwrap_or(TimestampOffset {
            timestamp_ms: NO_TIMESTAMP,
            offset: self.base_offset,
        });
        let mut next_offset = self.base_offset;
        let mut first = true;
        while pos < self.size_bytes {
            let h = match self.read_header(pos) {
                Ok(h) => h,
                Err(e) => return Ok(Err(e.to_string())),
            };
            if first {
                if let Some(e) = start {
                    if h.last_offset() != e.offset {
                        return Ok(Err(format!(
                            "offset index entry {} does not match batch {}",
                            e.offset,
                            h.last_offset()
                        )));
                    }
                }
                first = false;
            }
            if h.base_offset < next_offset {
                return Ok(Err(format!(
                    "batch offset {} goes backwards",
                    h.base_offset
                )));
            }
            if h.max_timestamp > max_ts.timestamp_ms {
                max_ts = TimestampOffset {
                    timestamp_ms: h.max_timestamp,
                    offset: h.base_offset,
                };
            }
            next_offset = h.last_offset() + 1;
            pos += h.size_bytes() as u64;
        }
        if max_ts.timestamp_ms != NO_TIMESTAMP && max_ts.offset >= next_offset {
            return Ok(Err("time index points past the end of the segment".into()));
        }
        self.bytes_since_last_index_entry = self.size_bytes - start.map_or(0, |e| e.position);
        self.indexes = OnceCell::from(indexes);
        self.max_timestamp = OnceCell::from(max_ts);
        self.rolling_base_ms = if self.size_bytes > 0 {
            Some(self.read_header(0)?.max_timestamp).filter(|ts| *ts >= 0)
        } else {
            None
        };
        Ok(Ok(next_offset))
    }

    /// Cuts the segment before its first batch whose last offset is >= `offset` (Kafka's
    /// `LogSegment.truncateTo`: a batch holding `offset` goes whole, so the cut is always at
    /// a batch boundary) and makes the segment fit to be the active one again.
    ///
    /// Cheap whatever the segment's size: the indexes are cut to the kept batches (a kept
    /// time-index entry may have been written by a removed batch; it still names a kept batch
    /// and its timestamp), and the append state (max timestamp, bytes since the last index
    /// entry) is rebuilt from the last kept offset-index entry on, reading at most about
    /// `index.interval.bytes` of batch headers. Data file and indexes are fsynced.
    ///
    /// Returns the offset after the last kept batch; `None` if no batch is left.
    pub(crate) fn truncate_to(
        &mut self,
        offset: i64,
        cfg: &LogConfig,
    ) -> Result<Option<i64>, LogError> {
        let cut = self
            .find_batch(offset, cfg)?
            .map(|(position, h)| (position, h.base_offset));
        let position = cut.map_or(self.size_bytes, |(position, _)| position);
        let base_offset = self.base_offset;
        let indexes = self.indexes_mut(cfg)?;
        indexes.offset.truncate_to_position(position)?;
        if let Some((_, cut_base)) = cut {
            indexes.time.truncate_to_offset(cut_base)?;
        }
        let scan_from = indexes.offset.last().map_or(0, |e| e.position);
        let mut max_ts = indexes.time.last().unwrap_or(TimestampOffset {
            timestamp_ms: NO_TIMESTAMP,
            offset: base_offset,
        });
        if position < self.size_bytes {
            let ctx = || format!("truncating segment {base_offset} to {position} bytes");
            let file = self.file()?;
            file.set_len(position).map_err(LogError::io(ctx()))?;
            file.sync_all().map_err(LogError::io(ctx()))?;
            self.size_bytes = position;
        }
        // Same rule as `IndexBuilder::add`: the first batch with the largest timestamp wins.
        let mut next_offset = None;
        let mut pos = scan_from;
        while pos < position {
            let h = self.read_header(pos)?;
            if h.max_timestamp > max_ts.timestamp_ms {
                max_ts = TimestampOffset {
                    timestamp_ms: h.max_timestamp,
                    offset: h.base_offset,
                };
            }
            next_offset = Some(h.last_offset() + 1);
            pos += h.size_bytes() as u64;
        }
        assert_eq!(pos, position, "segment {base_offset} cut inside a batch");
        assert_eq!(
            next_offset.is_some(),
            position > 0,
            "a non-empty segment has a last batch"
        );
        self.bytes_since_last_index_entry = position - scan_from;
        self.writeback_started_to = self.writeback_started_to.min(position);
        self.max_timestamp = OnceCell::from(max_ts);
        self.rolling_base_ms = match (position, self.rolling_base_ms) {
            (0, _) => None,
            (_, Some(base)) => Some(base),
            (_, None) => Some(self.read_header(0)?.max_timestamp).filter(|ts| *ts >= 0),
        };
        self.flush()?;
        Ok(next_offset)
    }

    /// Prepares the segment to become inactive: records the final time-index
    /// entry (so the last entry is the segment's max timestamp) and fsyncs.
    pub(crate) fn on_become_inactive(&mut self, cfg: &LogConfig) -> Result<(), LogError> {
        let max = self.max_timestamp(cfg)?;
        if max.timestamp_ms != NO_TIMESTAMP {
            self.indexes_mut(cfg)?
                .time
                .maybe_append(max.timestamp_ms, max.offset)?;
        }
        self.flush()
    }

    /// fsyncs the data file and any loaded indexes.
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        if let Some(f) = self.file.get() {
            f.sync_data().map_err(LogError::io(format!(
                "syncing segment {}",
                self.base_offset
            )))?;
        }
        if let Some(idx) = self.indexes.get() {
            idx.offset.flush()?;
            idx.time.flush()?;
        }
        Ok(())
    }

    /// Deletes the segment's files.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        let paths = [
            self.path(LOG_SUFFIX),
            self.path(OFFSET_INDEX_SUFFIX),
            self.path(TIME_INDEX_SUFFIX),
        ];
        drop(self);
        for p in &paths {
            fsutil::remove_if_exists(p)?;
        }
        Ok(())
    }
}

/// Writes a new segment under temporary names (the log cleaner's `.cleaned`
/// files): `{base}.log{suffix}`, `{base}.index{suffix}`, `{base}.timeindex{suffix}`,
/// maintaining both indexes with the same rule as appends and recovery.
pub(crate) struct SegmentFileWriter {
    base_offset: i64,
    path: PathBuf,
    file: std::io::BufWriter<File>,
    indexes: SegmentIndexes,
    builder: IndexBuilder,
    size_bytes: u64,
    interval_bytes: u64,
}

impl SegmentFileWriter {
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        cfg: &LogConfig,
    ) -> Result<Self, LogError> {
        let path = offset_file_path(dir, base_offset, &format!("{LOG_SUFFIX}{suffix}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(LogError::io(format!("creating {}", path.display())))?;
        let limit = index_read_limit_bytes(cfg);
        let (offset, _) = OffsetIndex::open(
            offset_file_path(dir, base_offset, &format!("{OFFSET_INDEX_SUFFIX}{suffix}")),
            base_offset,
            0,
            limit,
        )?;
        let (time, _) = TimeIndex::open(
            offset_file_path(dir, base_offset, &format!("{TIME_INDEX_SUFFIX}{suffix}")),
            base_offset,
            limit,
        )?;
        let mut indexes = SegmentIndexes { offset, time };
        indexes.clear()?;
        Ok(SegmentFileWriter {
            base_offset,
            path,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            indexes,
            builder: IndexBuilder {
                bytes_since_last_entry: 0,
                max_timestamp: TimestampOffset {
                    timestamp_ms: NO_TIMESTAMP,
                    offset: base_offset,
                },
            },
            size_bytes: 0,
            interval_bytes: cfg.index_interval_bytes,
        })
    }

    /// Appends one whole batch (`h` is its parsed header).
    pub(crate) fn append(&mut self, batch: &[u8], h: &RecordBatchHeader) -> Result<(), LogError> {
        use std::io::Write;
        debug_assert_eq!(batch.len(), h.size_bytes());
        assert!(h.base_offset >= self.base_offset);
        self.file
            .write_all(batch)
            .map_err(LogError::io(format!("writing {}", self.path.display())))?;
        self.builder.add(
            &mut self.indexes,
            self.size_bytes,
            &BatchPlacement::of(h),
            self.interval_bytes,
        )?;
        self.size_bytes += batch.len() as u64;
        Ok(())
    }

    /// Writes the final time-index entry and fsyncs everything. Returns the size.
    pub(crate) fn finish(mut self) -> Result<u64, LogError> {
        let max = self.builder.max_timestamp;
        if max.timestamp_ms != NO_TIMESTAMP {
            self.indexes
                .time
                .maybe_append(max.timestamp_ms, max.offset)?;
        }
        let ctx = format!("syncing {}", self.path.display());
        let file = self
            .file
            .into_inner()
            .map_err(|e| LogError::io(ctx.clone())(e.into_error()))?;
        file.sync_all().map_err(LogError::io(ctx))?;
        self.indexes.offset.flush()?;
        self.indexes.time.flush()?;
        Ok(self.size_bytes)
    }
}

impl LogSegment {
    /// A new handle on the segment's data file, for reading without the log's lock.
    pub(crate) fn reopen_file(&self) -> Result<File, LogError> {
        self.file()?.try_clone().map_err(LogError::io(format!(
            "duplicating handle of segment {}",
            self.base_offset
        )))
    }

    /// Drops the in-memory handles without touching the files (the caller
    /// replaces them on disk).
    pub(crate) fn forget(self) {}
}
