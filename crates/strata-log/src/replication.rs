//! The log side of partition replication (Kafka's `UnifiedLog.appendAsFollower`,
//! `truncateTo` and `truncateFullyAndStartAt`): a follower appends the batches its leader
//! stored, byte for byte, and removes the records its leader does not have. The high
//! watermark itself lives in [`crate::log`]; this module does not decide what to fetch or
//! where to truncate (that is `strata-partition`'s `truncation_for` and the broker's).
//!
//! # Follower appends
//!
//! Batches keep their offsets, timestamps and partition leader epochs. Only structure and
//! CRC are checked, never the client rules: the leader applied those. Producer state, the
//! leader-epoch cache and the aborted-transaction index are updated exactly as recovery
//! rebuilds them from the same bytes ([`crate::producer_state::ProducerStateManager::replay`]),
//! which is also what the leader's own recovery would give, so a follower that becomes
//! leader has the same last stable offset, open transactions and producer sequences.
//!
//! # Truncation and crashes
//!
//! A truncation first writes [`TRUNCATION_FILE`] (atomically, fsynced) naming its target,
//! then deletes and cuts segments, rewrites indexes, the epoch checkpoint, producer
//! snapshots, the aborted-transaction index and the state file, fsyncs the directory, and
//! only then removes the file (fsynced again, so the file can never come back after records
//! were appended above the target). [`crate::Log::open`] finds a leftover file after a crash
//! and performs the truncation again on the recovered log, so a crash at any point leaves a
//! log that opens without any record at or above the target. A truncation that fails with
//! an error leaves the file too, and the log refuses appends and truncations until it is
//! reopened.
//!
//! Cost: a truncation reads at most about `index.interval.bytes` of batch headers in the
//! segment it cuts, deletes the segments above it, and replays producer state from the
//! newest snapshot at or below the new end (snapshots are taken at each roll, and the two
//! newest are kept, so a deep truncation may replay from the first segment: one header read
//! per batch). It fsyncs the cut segment, its indexes, and the directory, and rewrites four
//! small files atomically (epoch checkpoint, aborted-transaction index, state file, marker).

use crate::batch::{self, RecordBatchHeader, BATCH_HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use crate::error::LogError;
use crate::fsutil;
use crate::log::{aborted_txn_entry, next_generation, AppendInfo, Log};
use crate::segment::{BatchPlacement, LogSegment};
use crate::txn::{self, ControlRecord, CONTROL_PREFIX_BYTES};

/// Most bytes one follower append writes (segment positions are u32, and a segment may
/// receive a whole append after a roll); whole batches beyond it are left for the next call.
const MAX_APPEND_BYTES: usize = i32::MAX as usize;

/// Name of the file recording a truncation in progress; see the module docs.
pub(crate) const TRUNCATION_FILE: &str = "strata-truncation";
const TRUNCATION_MAGIC: &[u8; 4] = b"STRC";
/// Magic, kind, offset, CRC-32C.
const TRUNCATION_FILE_BYTES: usize = 4 + 1 + 8 + 4;

/// A truncation recorded in [`TRUNCATION_FILE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Truncation {
    /// [`Log::truncate_to`] within the local log.
    To(i64),
    /// [`Log::truncate_fully_and_start_at`].
    FullyAndStartAt(i64),
}

impl Truncation {
    fn offset(self) -> i64 {
        match self {
            Truncation::To(offset) | Truncation::FullyAndStartAt(offset) => offset,
        }
    }

    pub(crate) fn encode(self) -> Vec<u8> {
        let kind: u8 = match self {
            Truncation::To(_) => 1,
            Truncation::FullyAndStartAt(_) => 2,
        };
        let mut out = Vec::with_capacity(TRUNCATION_FILE_BYTES);
        out.extend_from_slice(TRUNCATION_MAGIC);
        out.push(kind);
        out.extend_from_slice(&self.offset().to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(buf: &[u8]) -> Option<Self> {
        if buf.len() != TRUNCATION_FILE_BYTES || &buf[..4] != TRUNCATION_MAGIC {
            return None;
        }
        let body = TRUNCATION_FILE_BYTES - 4;
        let crc = u32::from_be_bytes(buf[body..].try_into().ok()?);
        if crc32c::crc32c(&buf[..body]) != crc {
            return None;
        }
        let offset = i64::from_be_bytes(buf[5..13].try_into().ok()?);
        match (buf[4], offset >= 0) {
            (1, true) => Some(Truncation::To(offset)),
            (2, true) => Some(Truncation::FullyAndStartAt(offset)),
            _ => None,
        }
    }
}

/// One batch of a follower append, validated.
struct FollowerBatch {
    header: RecordBatchHeader,
    /// The first control record of a control batch with a producer id (a transaction
    /// marker, or a control type producer state ignores).
    control: Option<ControlRecord>,
}

impl Log {
    /// Appends batches a leader stored (Kafka's `appendAsFollower`, `AppendOrigin.REPLICATION`):
    /// `records` is the records field of a fetch response from the leader, taken as is.
    ///
    /// * Batches keep their offsets, timestamps and partition leader epochs, byte for byte.
    /// * The first batch must start at or above the log end offset, and each next one after
    ///   the previous one's last offset; otherwise [`LogError::UnexpectedAppendOffset`] and
    ///   nothing is written. A batch may start above where the previous one ended: the leader's
    ///   log cleaner leaves offset gaps (Kafka accepts them too).
    /// * Checked: header, CRC, offsets, codec, uncompressed record framing, the control record
    ///   of a producer's control batch, and a batch size of at most the larger of
    ///   `max.message.bytes` and `segment.bytes` (the topic's limit may have shrunk since the
    ///   leader stored the batch), and never above 2 GiB. Not checked: sequences, producer
    ///   epochs, transaction state, timestamps, keys of compacted topics: the leader did.
    ///   Control batches are welcome.
    /// * All whole batches are validated before anything is written: the call appends all of
    ///   them or none. A torn batch at the end of `records` (a fetch response can stop in the
    ///   middle of one) is not an error: it is left out, and `size_bytes_appended` says how
    ///   much of `records` was appended (whole batches beyond 2 GiB are left out too, for a
    ///   next call). With no whole batch, nothing is written and the result has
    ///   `size_bytes_appended` 0, `first_offset` = log end offset and `last_offset` = log end
    ///   offset - 1.
    /// * The leader-epoch cache records each batch's partition leader epoch that is newer than
    ///   the latest it knows, at that batch's base offset.
    /// * Producer state, open transactions and the aborted-transaction index change exactly as
    ///   recovery derives them from the same batches (a marker ends its producer's transaction;
    ///   an ABORT records it in the index).
    /// * The high watermark does not move on a replicated log (the caller sets it from the
    ///   leader's); flushing follows `flush.messages` / `flush.ms` as for a leader's append.
    ///
    /// `AppendInfo`: `first_offset` is the first batch's base offset, `last_offset` the last
    /// batch's last offset, `records_count` the number of offsets the batches cover,
    /// `log_append_time_ms` -1, `duplicate` false.
    ///
    /// An `Io` error after the batches were written (the aborted-transaction index) leaves
    /// them appended: the log end offset tells.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_writable()?;
        // Checks of transactional writes belong to a leader (its markers end them).
        self.verifications.clear();
        let (batches, whole_bytes) = self.validate_follower_batches(records)?;
        let leo = self.log_end_offset;
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return Ok(AppendInfo {
                first_offset: leo,
                last_offset: leo - 1,
                log_append_time_ms: -1,
                log_start_offset: self.log_start_offset,
                duplicate: false,
                records_count: 0,
                size_bytes_appended: 0,
            });
        };
        let (first_offset, last_offset) = (first.header.base_offset, last.header.last_offset());

        let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
        let mut latest_epoch = self.leader_epochs.latest_epoch();
        for b in &batches {
            let epoch = b.header.partition_leader_epoch;
            if epoch >= 0 && latest_epoch.is_none_or(|latest| epoch > latest) {
                epoch_starts.push((epoch, b.header.base_offset));
                latest_epoch = Some(epoch);
            }
        }
        let placements: Vec<BatchPlacement> = batches
            .iter()
            .map(|b| BatchPlacement {
                base_offset: b.header.base_offset,
                last_offset: b.header.last_offset(),
                max_timestamp_ms: b.header.max_timestamp,
                size_bytes: b.header.size_bytes() as u64,
            })
            .collect();
        self.write_batches(
            &[&records[..whole_bytes]],
            &placements,
            &epoch_starts,
            now_ms,
        )?;

        // Producer state first, for every batch (it cannot fail), then the index entries.
        let mut aborted = Vec::new();
        for b in &batches {
            if let Some(txn) = self
                .producers
                .replay(&b.header, b.control)
                .and_then(|done| aborted_txn_entry(&self.producers, done))
            {
                aborted.push(txn);
            }
        }
        let mut indexed = Ok(());
        for txn in aborted {
            // An entry is in memory even when its write fails (the file is rewritten later).
            if let Err(e) = self.aborted.append(txn) {
                indexed = indexed.and(Err(e));
            }
        }
        let records_count: u64 = batches
            .iter()
            .map(|b| b.header.last_offset_delta as u64 + 1)
            .sum();
        self.maybe_flush_after_append(records_count, now_ms)?;
        indexed?;
        self.assert_offsets();
        Ok(AppendInfo {
            first_offset,
            last_offset,
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset,
            duplicate: false,
            records_count,
            size_bytes_appended: whole_bytes,
        })
    }

    /// The whole batches at the front of `records`, checked as [`Log::append_as_follower`]
    /// says, and their total size. Bounded work: one pass, one header per batch kept.
    fn validate_follower_batches(
        &self,
        records: &[u8],
    ) -> Result<(Vec<FollowerBatch>, usize), LogError> {
        let max_batch_bytes = (self.config().max_message_bytes as u64)
            .max(self.config().effective_segment_bytes())
            .min(MAX_APPEND_BYTES as u64);
        let mut batches = Vec::new();
        let mut expected = self.log_end_offset;
        let mut pos = 0usize;
        while records.len() - pos >= LOG_OVERHEAD_BYTES {
            let rest = &records[pos..];
            let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if (batch_length as i64) < (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i64 {
                return Err(LogError::CorruptRecord(format!(
                    "replicated batch at byte {pos} declares length {batch_length}"
                )));
            }
            let size = LOG_OVERHEAD_BYTES + batch_length as usize;
            if size > rest.len() {
                break; // torn: the fetch response ended inside this batch
            }
            if pos + size > MAX_APPEND_BYTES {
                break; // the rest is for the next call
            }
            if size as u64 > max_batch_bytes {
                return Err(LogError::RecordTooLarge {
                    size_bytes: size,
                    max_bytes: max_batch_bytes as u32,
                });
            }
            let bytes = &rest[..size];
            let h = RecordBatchHeader::parse(bytes)?;
            batch::check_crc(bytes, &h)?;
            batch::validate_replicated_batch(bytes, &h)?;
            if h.base_offset < expected {
                return Err(LogError::UnexpectedAppendOffset {
                    expected,
                    first_offset: h.base_offset,
                    last_offset: h.last_offset(),
                });
            }
            let Some(next) = h.base_offset.checked_add(h.last_offset_delta as i64 + 1) else {
                return Err(LogError::CorruptRecord(format!(
                    "replicated batch at offset {} ends past the largest offset",
                    h.base_offset
                )));
            };
            let control = if h.is_control() && h.producer_id >= 0 {
                // Recovery reads it from disk with the same rules; refusing it here keeps
                // a batch the log could not reopen with out of the log.
                if h.compression() != 0 {
                    return Err(LogError::CorruptRecord(format!(
                        "control batch at offset {} is compressed with codec {}",
                        h.base_offset,
                        h.compression()
                    )));
                }
                let end = size.min(BATCH_HEADER_SIZE_BYTES + CONTROL_PREFIX_BYTES);
                Some(txn::parse_control_record(
                    &bytes[BATCH_HEADER_SIZE_BYTES..end],
                )?)
            } else {
                None
            };
            batches.push(FollowerBatch { header: h, control });
            expected = next;
            pos += size;
        }
        Ok((batches, pos))
    }

    /// Removes every record at or above `offset` (Kafka's `truncateTo`), for a follower whose
    /// log diverged from its new leader's (KIP-101/279), or a replica giving up records above
    /// the high watermark. No-op if `offset >= log_end_offset`. An offset below the first
    /// local segment removes the whole local log: see [`Log::truncate_fully_and_start_at`].
    ///
    /// The cut is at a batch boundary: a batch holding `offset` goes whole, so the new log end
    /// offset is `offset` when `offset` is the base offset of a batch (as the end offset of a
    /// leader epoch always is), and below it otherwise; it is also below `offset` when the
    /// log cleaner left a gap just below it (the new end is the offset after the last batch
    /// kept). Segments above the cut are deleted; the segment holding it becomes the active
    /// one (empty if the cut is at its base).
    ///
    /// Afterwards: epochs starting at or above the new end are gone; producer state, open
    /// transactions and the aborted-transaction index are as if the removed batches had never
    /// been appended (rebuilt from the newest snapshot at or below the new end); the high
    /// watermark, recovery point and cleaner checkpoint are at most the new end, and so is the
    /// log start offset (as in Kafka, a log start inside the removed part moves down to the new
    /// end: the log is then empty); the highest offset in remote storage is below the new end;
    /// a compaction planned before is discarded. Everything is durable when this returns Ok.
    /// See the module docs for crashes and cost.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_writable()?;
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset >= self.log_end_offset {
            return Ok(());
        }
        if offset < self.first_segment_base() {
            return self.truncate_fully_and_start_at(offset);
        }
        self.run_truncation(Truncation::To(offset))
    }

    /// Deletes every local segment and starts an empty log at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): log start offset = log end offset = high watermark =
    /// `offset`, no leader epochs, no producer state or snapshots, no aborted transactions.
    /// For a follower whose fetch offset fell below the leader's log start, or whose
    /// truncation point lies below its local log.
    ///
    /// Tiered storage: the tier is not touched. The highest offset in remote storage is
    /// lowered to at most `offset - 1`, so local retention deletes nothing until the broker
    /// sets it again from the remote manifest; a tiered follower that should serve the tier's
    /// records below `offset` is restored with [`Log::start_after_tier`] instead.
    /// Durable and crash-safe as [`Log::truncate_to`].
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_writable()?;
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        self.run_truncation(Truncation::FullyAndStartAt(offset))
    }

    /// Marker file, truncation, marker removal; see the module docs.
    fn run_truncation(&mut self, truncation: Truncation) -> Result<(), LogError> {
        self.verifications.clear();
        fsutil::write_atomic(self.dir(), TRUNCATION_FILE, &truncation.encode())?;
        self.failed_truncation = Some(truncation.offset());
        self.apply_truncation(truncation)?;
        fsutil::remove_if_exists(&self.dir().join(TRUNCATION_FILE))?;
        fsutil::fsync_dir(self.dir())?;
        self.failed_truncation = None;
        Ok(())
    }

    /// On open: performs again a truncation a crash (or an error) interrupted.
    pub(crate) fn complete_interrupted_truncation(&mut self) -> Result<(), LogError> {
        let path = self.dir().join(TRUNCATION_FILE);
        let Some(buf) = fsutil::read_small_file(&path, 1024)? else {
            return Ok(());
        };
        let Some(truncation) = Truncation::decode(&buf) else {
            // Written atomically, so this is damage, not a torn write: which records must go
            // is unknown, and opening anyway could serve records a leader does not have.
            return Err(LogError::StorageCorruption(format!(
                "{} is unreadable: an interrupted truncation cannot be completed",
                path.display()
            )));
        };
        tracing::warn!(dir = %self.dir().display(), ?truncation, log_end_offset = self.log_end_offset, "completing an interrupted truncation");
        self.apply_truncation(truncation)?;
        fsutil::remove_if_exists(&path)?;
        fsutil::fsync_dir(self.dir())
    }

    fn apply_truncation(&mut self, truncation: Truncation) -> Result<(), LogError> {
        match truncation {
            Truncation::To(offset) if offset >= self.log_end_offset => Ok(()),
            // Only after a crash: the local log lost the segments below the target.
            Truncation::To(offset) if offset < self.first_segment_base() => {
                self.truncate_fully(offset)
            }
            Truncation::To(offset) => self.truncate_segments_to(offset),
            Truncation::FullyAndStartAt(offset) => self.truncate_fully(offset),
        }
    }

    fn truncate_segments_to(&mut self, offset: i64) -> Result<(), LogError> {
        let old_end = self.log_end_offset;
        assert!(offset >= self.first_segment_base() && offset < old_end);
        while let Some(entry) = self.segments.last_entry() {
            if *entry.key() <= offset {
                break;
            }
            let seg = entry.remove();
            tracing::info!(dir = %self.dir().display(), segment = seg.base_offset(), offset, "deleting log segment above the truncation point");
            seg.delete()?;
        }
        let cfg = self.config().clone();
        let holding = self.active_mut();
        let base = holding.base_offset();
        let new_end = holding.truncate_to(offset, &cfg)?.unwrap_or(base);
        assert!(
            base <= new_end && new_end <= offset,
            "truncation to {offset} ended the log at {new_end} (segment {base})"
        );
        fsutil::fsync_dir(self.dir())?;
        tracing::info!(dir = %self.dir().display(), offset, old_end, new_end, "truncated log");
        self.log_end_offset = new_end;
        self.after_truncation()
    }

    fn truncate_fully(&mut self, offset: i64) -> Result<(), LogError> {
        tracing::info!(dir = %self.dir().display(), offset, log_start_offset = self.log_start_offset, log_end_offset = self.log_end_offset, "deleting the whole local log");
        while let Some((_, seg)) = self.segments.pop_last() {
            seg.delete()?;
        }
        self.producers.truncate_fully()?;
        self.leader_epochs.clear()?;
        self.aborted.clear()?;
        let seg = LogSegment::create(self.dir(), offset, self.config())?;
        self.segments.insert(offset, seg);
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.oldest_tombstone_ms = None;
        self.after_truncation()
    }

    /// Brings everything derived from the log in line with the new log end offset, and
    /// persists it.
    fn after_truncation(&mut self) -> Result<(), LogError> {
        let end = self.log_end_offset;
        self.generation = next_generation();
        self.log_start_offset = self.log_start_offset.min(end);
        // Every segment left was fsynced when it rolled, the cut one just now.
        self.recovery_point = end;
        self.unflushed_records = 0;
        self.high_watermark = self.high_watermark.clamp(self.log_start_offset, end);
        self.highest_offset_in_remote = self.highest_offset_in_remote.min(end - 1);
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(end);
        self.leader_epochs.truncate_from_end(end)?;
        // The file must hold every in-memory entry before `load` reads it back.
        self.aborted.sync()?;
        self.load_producer_state()?;
        self.persist_state(None)?;
        self.assert_offsets();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_marker_round_trip_and_damage() {
        for t in [Truncation::To(0), Truncation::FullyAndStartAt(1 << 40)] {
            let bytes = t.encode();
            assert_eq!(Truncation::decode(&bytes), Some(t));
            for i in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[i] ^= 0x01;
                assert_eq!(Truncation::decode(&damaged), None, "byte {i}");
            }
            assert_eq!(Truncation::decode(&bytes[..bytes.len() - 1]), None);
        }
    }
}
