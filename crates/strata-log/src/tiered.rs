//! The local side of tiered storage (KIP-405's `UnifiedLog` changes): which rolled segments
//! are ready to be copied to the tier, and local retention that deletes only copied segments.
//!
//! The log does not talk to object storage; the broker copies what
//! [`Log::segments_for_upload`] names and then calls [`Log::set_highest_offset_in_remote`].
//! Invariant: a local segment is deleted by local retention only if it ends at or below the
//! highest offset in remote storage, so every offset from the log start to the log end is
//! always in the tier, on local disk, or both.

use std::path::PathBuf;

use crate::error::LogError;
use crate::fsutil::{
    offset_file_path, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, SNAPSHOT_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::log::Log;

/// Producer snapshots are a few dozen bytes per producer; one larger than this is not read
/// into memory for upload (the segment goes without it).
const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;
use crate::txn::{AbortedTxn, ENTRY_BYTES};

/// What the tier holds of a partition, for a local log that lost its data (a replaced disk,
/// a deleted partition directory) to start after it.
#[derive(Clone, Debug, Default)]
pub struct TierTail {
    pub log_start_offset: i64,
    /// The offset after the tier's last segment.
    pub next_offset: i64,
    /// (epoch, start offset) of every leader epoch in the tier, in order.
    pub leader_epochs: Vec<(i32, i64)>,
    /// Producer state as of `next_offset` (the last segment's snapshot), if uploaded.
    pub producer_snapshot: Option<Vec<u8>>,
    /// Aborted-transaction entries of the tier's segments, concatenated in order.
    pub aborted_txns: Vec<u8>,
}

/// A rolled segment the tier does not have yet, with everything uploaded alongside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentForUpload {
    pub base_offset: i64,
    /// Last offset of the segment (the next segment's base - 1).
    pub end_offset: i64,
    pub size_bytes: u64,
    /// Largest batch max timestamp (-1 if none) and the base offset of its batch.
    pub max_timestamp_ms: i64,
    pub max_timestamp_offset: i64,
    /// The log cleaner has been over the segment: its offsets may have gaps.
    pub compacted: bool,
    pub log_file: PathBuf,
    pub offset_index_file: PathBuf,
    pub time_index_file: PathBuf,
    /// Producer state as of the segment's end (taken when the segment rolled), read while
    /// the log was locked: the file may be pruned once the segment is uploaded.
    pub producer_snapshot: Option<Vec<u8>>,
    /// Leader epochs in effect within the segment: (epoch, start offset).
    pub leader_epochs: Vec<(i32, i64)>,
    /// Aborted transactions whose ABORT marker is in the segment, in the `.txnindex` entry
    /// format.
    pub aborted_txns: Vec<u8>,
}

impl Log {
    /// Last offset copied to the tier; -1 when nothing is.
    pub fn highest_offset_in_remote(&self) -> i64 {
        self.highest_offset_in_remote
    }

    /// Records that the tier holds every offset up to `offset` (from the remote manifest).
    /// Never moves backwards: a stale manifest read must not make local retention unsafe
    /// in the other direction, and forgetting uploads only delays local deletion.
    pub fn set_highest_offset_in_remote(&mut self, offset: i64) {
        self.highest_offset_in_remote = self.highest_offset_in_remote.max(offset);
    }

    /// Snapshots above this offset are never pruned: a tiered log keeps those of segments
    /// not yet uploaded.
    pub(crate) fn snapshots_kept_above(&self) -> i64 {
        if self.config().remote_storage_enable {
            self.highest_offset_in_remote + 1
        } else {
            i64::MAX
        }
    }

    /// Whether this log has no records but the tier holds offsets at or after its end: the
    /// local data was lost and [`Log::start_after_tier`] should run.
    pub fn is_behind_tier(&self, tier_next_offset: i64) -> bool {
        self.snapshot().size_bytes == 0 && self.log_end_offset() < tier_next_offset
    }

    /// Starts this empty local log where the tier ends, so the partition serves its tiered
    /// records and producers continue at the right offsets: the log start becomes the tier's,
    /// leader epochs, aborted transactions and producer state come from the tier.
    /// Refused (`StorageCorruption`) unless the log is still empty and
    /// behind the tier: records may have arrived since the caller looked.
    pub fn start_after_tier(&mut self, tier: &TierTail) -> Result<(), LogError> {
        if !self.is_behind_tier(tier.next_offset) {
            return Err(LogError::StorageCorruption(format!(
                "cannot start after the tier at {}: the local log holds records up to {}",
                tier.next_offset,
                self.log_end_offset()
            )));
        }
        let next = tier.next_offset;
        self.reset_to_empty_at(next)?;
        self.log_start_offset = tier.log_start_offset.clamp(0, next);
        for &(epoch, start) in &tier.leader_epochs {
            self.leader_epochs.assign(epoch, start)?;
        }
        for entry in tier.aborted_txns.chunks(ENTRY_BYTES) {
            match AbortedTxn::decode(entry) {
                Some(txn) if txn.last_offset >= self.log_start_offset => {
                    self.aborted.append(txn)?
                }
                Some(_) => {}
                None => {
                    return Err(LogError::StorageCorruption(
                        "unreadable aborted-transaction entry from the tier".into(),
                    ))
                }
            }
        }
        self.aborted.sync()?;
        if let Some(snapshot) = &tier.producer_snapshot {
            let name = format!("{next:020}.{SNAPSHOT_SUFFIX}");
            crate::fsutil::write_atomic(self.dir(), &name, snapshot)?;
            self.load_producer_state()?;
        }
        self.highest_offset_in_remote = next - 1;
        self.persist_state(None)?;
        tracing::warn!(dir = %self.dir().display(), log_start_offset = self.log_start_offset, next, "local log was empty behind the tier; started after it");
        Ok(())
    }

    /// Inactive segments after the highest offset in remote storage that may be copied now,
    /// oldest first, at most `max`: those ending below the last stable offset (so the
    /// transactions in them are decided) and below the high watermark.
    pub fn segments_for_upload(&self, max: usize) -> Result<Vec<SegmentForUpload>, LogError> {
        let from = self.highest_offset_in_remote + 1;
        let limit = self.last_stable_offset().min(self.high_watermark());
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let mut out = Vec::new();
        for pair in bases.windows(2) {
            if out.len() >= max {
                break;
            }
            let (base, end) = (pair[0], pair[1] - 1);
            if end < from || end < self.log_start_offset() {
                continue;
            }
            if end >= limit {
                break;
            }
            if base < from {
                // Only possible if the tier and the local log were changed apart (a restored
                // data directory): the segment overlaps what the tier has. Nothing after it
                // is uploaded either, so the tier never gets a gap.
                tracing::warn!(dir = %self.dir().display(), base, from, "segment overlaps the tier; not uploading it or anything after it");
                break;
            }
            let seg = &self.segments[&base];
            let max_ts = seg.max_timestamp(self.config())?;
            let snapshot_path = offset_file_path(self.dir(), pair[1], SNAPSHOT_SUFFIX);
            let snapshot = match crate::fsutil::read_small_file(&snapshot_path, MAX_SNAPSHOT_BYTES)
            {
                Err(LogError::StorageCorruption(why)) => {
                    tracing::warn!(%why, "uploading a segment without its producer snapshot");
                    None
                }
                other => other?,
            };
            out.push(SegmentForUpload {
                base_offset: base,
                end_offset: end,
                size_bytes: seg.size_bytes(),
                max_timestamp_ms: max_ts.timestamp_ms,
                max_timestamp_offset: max_ts.offset,
                compacted: base < self.cleaner_checkpoint(),
                log_file: seg.path(LOG_SUFFIX),
                offset_index_file: seg.path(OFFSET_INDEX_SUFFIX),
                time_index_file: seg.path(TIME_INDEX_SUFFIX),
                producer_snapshot: snapshot,
                leader_epochs: self.leader_epochs_within(base, end),
                aborted_txns: self
                    .aborted
                    .entries()
                    .iter()
                    .filter(|t| (base..=end).contains(&t.last_offset))
                    .flat_map(|t| t.encode())
                    .collect(),
            });
        }
        Ok(out)
    }

    /// The epoch in effect at `base` and every epoch starting in `(base, end]`.
    fn leader_epochs_within(&self, base: i64, end: i64) -> Vec<(i32, i64)> {
        let entries = self.leader_epochs.entries();
        let first = entries.partition_point(|(_, start)| *start <= base);
        let from = first.saturating_sub(1);
        entries[from..]
            .iter()
            .filter(|(_, start)| *start <= end)
            .copied()
            .collect()
    }

    /// Every local segment with its last offset; the active segment's is `None`.
    fn segments_with_ends(
        &self,
    ) -> impl Iterator<Item = (&crate::segment::LogSegment, Option<i64>)> {
        let ends = self
            .segments
            .keys()
            .skip(1)
            .map(|next| Some(next - 1))
            .chain([None]);
        self.segments.values().zip(ends)
    }

    /// Bytes and count of rolled segments not yet in the tier (Kafka's `RemoteCopyLagBytes`
    /// and `RemoteCopyLagSegments`); zero for a log that is not tiered.
    pub fn upload_lag(&self) -> (u64, usize) {
        if !self.config().remote_storage_enable {
            return (0, 0);
        }
        self.segments_with_ends()
            .filter(|(_, end)| end.is_some_and(|end| end > self.highest_offset_in_remote))
            .fold((0, 0), |(bytes, n), (seg, _)| {
                (bytes + seg.size_bytes(), n + 1)
            })
    }

    /// Bytes of the log that are only on local disk (not yet in the tier, the active segment
    /// included): what retention.bytes adds to the tier's size for the whole log.
    pub fn local_only_bytes(&self) -> u64 {
        self.segments_with_ends()
            .filter(|(_, end)| end.is_none_or(|end| end > self.highest_offset_in_remote))
            .map(|(seg, _)| seg.size_bytes())
            .sum()
    }

    /// Local retention of a tiered log: `local.retention.ms` / `local.retention.bytes`
    /// (-2 = the whole log's settings) delete the oldest local segments, but only those
    /// already in the tier. The log start offset does not move: the records stay readable
    /// from the tier. Returns the number of segments deleted.
    pub(crate) fn apply_local_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let uploaded = self
            .segments_with_ends()
            .take_while(|(_, end)| end.is_some_and(|end| end <= self.highest_offset_in_remote))
            .count();
        if uploaded == 0 {
            return Ok(0);
        }
        let cfg = self.config();
        let by_time = self.expired_by_time(cfg.effective_local_retention_ms(), now_ms)?;
        let by_size = self.expired_by_size(cfg.effective_local_retention_bytes())?;
        let n = by_time.max(by_size);
        self.delete_oldest_segments(n.min(uploaded), now_ms, "local retention", false)
    }
}
