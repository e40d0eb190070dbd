//! The partition log (Kafka's `UnifiedLog` + `LocalLog` + `LogLoader`).
//!
//! Invariants:
//! * `segments` is never empty; the last segment is the active one and the
//!   only one that is ever appended to;
//! * segment base offsets increase and every offset in a segment is below the
//!   next segment's base offset;
//! * `log_start_offset <= high_watermark <= log_end_offset`; the log end offset
//!   decreases only through recovery truncation on open and through
//!   [`Log::truncate_to`] / [`Log::truncate_fully_and_start_at`] (a follower
//!   removing records its leader does not have, see [`crate::replication`]);
//! * nothing at or above the high watermark is deleted by retention, cleaned
//!   by the log cleaner or offered to the tier: only records below it are
//!   known to be on enough replicas to survive a leader change;
//! * everything below `recovery_point` is fsynced, so unclean recovery only
//!   scans from the segment containing it;
//! * the aborted-transaction index holds every ABORT marker that ended an open
//!   transaction, and is fsynced before each producer-state snapshot, so
//!   reopening needs only the index plus a replay from the snapshot (see
//!   [`crate::txn`]).
//!
//! Transactions follow Kafka: a producer's transactional batch opens a
//! transaction on the partition, the coordinator's marker
//! ([`Log::append_txn_marker`]) ends it; the last stable offset is the first
//! offset of the earliest open transaction, capped by the high watermark, and
//! read_committed fetches read below it ([`Log::read_bounded`]) and filter
//! aborted data with [`Log::aborted_transactions`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::batch::{self, RecordBatchHeader, TimestampType, BATCH_HEADER_SIZE_BYTES};
use crate::cleaner::{self, CompactedOutput, CompactionPlan, CompactionStats, PlannedSegment};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::fsutil::{
    self, parse_offset_file_name, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX, TMP_SUFFIX,
};
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{
    AppendOrigin, CompletedTxn, ProducerAppendStaging, ProducerStateManager, TxnMarker,
};
use crate::records::TimestampAndOffset;
use crate::segment::{BatchPlacement, LogSegment};
use crate::txn::{self, AbortedTxn, ControlRecord, TxnIndex, CONTROL_PREFIX_BYTES};
use crate::verification::{VerificationGuard, Verifications};

/// Name of the file holding log start offset, recovery point and the
/// clean-shutdown marker.
pub(crate) const STATE_FILE: &str = "strata-log-state";
const STATE_MAGIC: &[u8; 4] = b"SLOG";
const STATE_VERSION: u16 = 3;
/// Version 1 lacked the cleaner fields, version 2 the high watermark; both are still read.
const STATE_FILE_V1_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 4;
const STATE_FILE_V2_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 8 + 8 + 4;
const STATE_FILE_BYTES: usize = 4 + 2 + 8 + 8 + 8 + 8 + 8 + 8 + 4;
/// Kafka's default `producer.id.expiration.ms` (1 day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;

/// Result of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record of the first batch (or the original one if duplicate).
    pub first_offset: i64,
    /// Offset of the last record of the last batch.
    pub last_offset: i64,
    /// Broker time used for LogAppendTime topics; -1 for CreateTime.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// A retried idempotent batch that was already in the log; nothing was written.
    pub duplicate: bool,
    /// Number of records covered by `first_offset..=last_offset`. For a follower append,
    /// the number of offsets its batches cover (a compacted batch may hold fewer records).
    pub records_count: u64,
    /// Bytes of the input written to the log: all of it for a leader or coordinator append,
    /// 0 for a duplicate, the whole batches at the front of the input for a follower append
    /// (a torn batch at its end, as a fetch response may carry, is left out). A follower
    /// append that wrote nothing reports 0 with `first_offset` = log end offset and
    /// `last_offset` = log end offset - 1.
    pub size_bytes_appended: usize,
}

/// Result of a read.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole batches only, exactly as stored.
    pub records: Bytes,
    /// The high watermark at the time of the read (see [`Log::high_watermark`]).
    pub high_watermark: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Last stable offset at the time of the read (see [`Log::last_stable_offset`]).
    pub last_stable_offset: i64,
}

/// Cheap summary of the log's extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOffsetSnapshot {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PersistedState {
    log_start_offset: i64,
    recovery_point: i64,
    /// Log end offset written by `close`; `None` while the log is open, so a
    /// crash is detected even if the caller claims a clean shutdown.
    clean_log_end_offset: Option<i64>,
    /// Log cleaner checkpoint: offsets below it have been compacted.
    cleaner_checkpoint: i64,
    /// Smallest batch max timestamp of the tombstones kept by the last compaction.
    oldest_tombstone_ms: Option<i64>,
    /// High watermark of a replicated log (Kafka's `replication-offset-checkpoint`).
    high_watermark: Option<i64>,
}

impl PersistedState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_FILE_BYTES);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_be_bytes());
        out.extend_from_slice(&self.log_start_offset.to_be_bytes());
        out.extend_from_slice(&self.recovery_point.to_be_bytes());
        out.extend_from_slice(&self.clean_log_end_offset.unwrap_or(-1).to_be_bytes());
        out.extend_from_slice(&self.cleaner_checkpoint.to_be_bytes());
        out.extend_from_slice(&self.oldest_tombstone_ms.unwrap_or(i64::MAX).to_be_bytes());
        out.extend_from_slice(&self.high_watermark.unwrap_or(-1).to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(buf: &[u8]) -> Option<Self> {
        let version_is = |v: u16| buf.get(4..6) == Some(&v.to_be_bytes());
        let v1 = buf.len() == STATE_FILE_V1_BYTES && version_is(1);
        let v2 = buf.len() == STATE_FILE_V2_BYTES && version_is(2);
        let v3 = buf.len() == STATE_FILE_BYTES && version_is(STATE_VERSION);
        if !(v1 || v2 || v3) || &buf[..4] != STATE_MAGIC {
            return None;
        }
        let body = buf.len() - 4;
        let crc = u32::from_be_bytes([buf[body], buf[body + 1], buf[body + 2], buf[body + 3]]);
        if crc32c::crc32c(&buf[..body]) != crc {
            return None;
        }
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            i64::from_be_bytes(b)
        };
        let clean = i64_at(22);
        let (cleaner_checkpoint, expiry) = if v1 {
            (0, i64::MAX)
        } else {
            (i64_at(30), i64_at(38))
        };
        let high_watermark = if v3 { i64_at(46) } else { -1 };
        Some(PersistedState {
            log_start_offset: i64_at(6),
            recovery_point: i64_at(14),
            clean_log_end_offset: (clean >= 0).then_some(clean),
            cleaner_checkpoint,
            oldest_tombstone_ms: (expiry != i64::MAX).then_some(expiry),
            high_watermark: (high_watermark >= 0).then_some(high_watermark),
        })
    }
}

/// Source of [`Log::generation`] values, unique in the process (so that an
/// output planned against one `Log` never matches another opened on the same
/// directory later).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(0);

pub(crate) fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Kafka's UnifiedLog for one partition. Not internally synchronized: the
/// caller wraps it in a Mutex.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    pub(crate) segments: BTreeMap<i64, LogSegment>,
    pub(crate) log_start_offset: i64,
    pub(crate) log_end_offset: i64,
    pub(crate) recovery_point: i64,
    pub(crate) producers: ProducerStateManager,
    pub(crate) leader_epochs: LeaderEpochCache,
    pub(crate) unflushed_records: u64,
    last_flush_ms: i64,
    producer_id_expiration_ms: i64,
    /// Log cleaner checkpoint (Kafka's `cleaner-offset-checkpoint` entry).
    pub(crate) cleaner_checkpoint: i64,
    pub(crate) oldest_tombstone_ms: Option<i64>,
    /// Whether a replica manager owns the high watermark ([`Log::set_replicated`]). While
    /// false, the high watermark is the log end offset.
    replicated: bool,
    /// The high watermark while `replicated`; meaningless otherwise. Kept within
    /// `[log_start_offset, log_end_offset]`.
    pub(crate) high_watermark: i64,
    /// The high watermark the state file holds (written by
    /// [`Log::checkpoint_high_watermark`] and `close`, and read at open), so that a reopened
    /// log that becomes replicated again starts from it rather than from its log end, whose
    /// tail may not be on the other replicas. `None` once the log is not replicated. A stale
    /// checkpoint is only lower than the truth, which is safe.
    high_watermark_checkpoint: Option<i64>,
    /// Changes whenever records are removed from the end of the log (truncation): a
    /// compaction planned before then is discarded, since a segment of the same base offset
    /// and size may now hold other records.
    pub(crate) generation: u64,
    /// A truncation whose marker file is still on disk because it failed half way: appends
    /// and further truncations are refused until the log is reopened, which completes it
    /// (see [`crate::replication`]).
    pub(crate) failed_truncation: Option<i64>,
    /// Producers whose transactional write the leader is checking with the transaction
    /// coordinator (Kafka's `VerificationStateEntry`; in memory, leader only).
    pub(crate) verifications: Verifications,
    /// Aborted transactions (Kafka's `.txnindex`, one file per log here). Kept from the log
    /// start offset, so it also answers for the part of the log that is only in the tier.
    pub(crate) aborted: TxnIndex,
    /// Last offset copied to the tier (Kafka's `highestOffsetInRemoteStorage`); -1 when none.
    /// Set by the broker from the remote manifest; local retention of a tiered log deletes
    /// only segments that end at or below it.
    pub(crate) highest_offset_in_remote: i64,
}

struct DirListing {
    segments: Vec<(i64, u64)>,
    index_files: Vec<(i64, PathBuf)>,
}

fn list_dir(dir: &Path) -> Result<DirListing, LogError> {
    let ctx = || format!("listing {}", dir.display());
    let mut listing = DirListing {
        segments: Vec::new(),
        index_files: Vec::new(),
    };
    for entry in std::fs::read_dir(dir).map_err(LogError::io(ctx()))? {
        let entry = entry.map_err(LogError::io(ctx()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if name.ends_with(TMP_SUFFIX) || name.ends_with(".deleted") {
            // Leftovers of an interrupted atomic write or delete.
            fsutil::remove_if_exists(&path)?;
            continue;
        }
        match parse_offset_file_name(&name) {
            Some((base, LOG_SUFFIX)) => {
                let size = entry.metadata().map_err(LogError::io(ctx()))?.len();
                listing.segments.push((base, size));
            }
            Some((base, OFFSET_INDEX_SUFFIX | TIME_INDEX_SUFFIX)) => {
                listing.index_files.push((base, path))
            }
            _ => {}
        }
    }
    listing.segments.sort_unstable();
    Ok(listing)
}

impl Log {
    /// Opens (creating if absent) the partition directory `dir`. `clean_shutdown` says whether the broker shut down cleanly last time.
    ///
    /// Clean open reads the directory listing, the state file, the active
    /// segment's indexes and the batch headers after its last index entry, and
    /// the newest producer snapshot; inactive segments are touched lazily.
    /// Unclean open (or a clean open whose checks fail) recovers every segment
    /// from the one containing the recovery point, truncating torn data.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        clean_shutdown: bool,
        now_ms: i64,
    ) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(LogError::io(format!("creating {}", dir.display())))?;
        cleaner::recover_interrupted_compaction(dir)?;
        let listing = list_dir(dir)?;
        let state = fsutil::read_small_file(&dir.join(STATE_FILE), 1024)?.and_then(|buf| {
            let decoded = PersistedState::decode(&buf);
            if decoded.is_none() {
                tracing::warn!(dir = %dir.display(), "ignoring corrupt log state file");
            }
            decoded
        });
        let mut segments = BTreeMap::new();
        for (base, size) in &listing.segments {
            segments.insert(*base, LogSegment::existing(dir, *base, *size));
        }
        for (base, path) in &listing.index_files {
            if !segments.contains_key(base) {
                fsutil::remove_if_exists(path)?;
            }
        }
        let state_start = state.map_or(0, |s| s.log_start_offset.max(0));
        if segments.is_empty() {
            segments.insert(state_start, LogSegment::create(dir, state_start, &config)?);
        }
        let first_base = segments.keys().next().copied().unwrap_or(0);
        // A tiered log's start may lie below its first local segment: the part between is in
        // the tier. Without the tier, the first local segment bounds it.
        let log_start_offset = state.map_or(first_base, |s| {
            if config.remote_storage_enable {
                s.log_start_offset.max(0)
            } else {
                s.log_start_offset.max(first_base)
            }
        });
        let mut log = Log {
            dir: dir.to_path_buf(),
            producers: ProducerStateManager::new(dir),
            leader_epochs: LeaderEpochCache::load(dir)?,
            config,
            segments,
            log_start_offset,
            log_end_offset: first_base,
            recovery_point: state.map_or(first_base, |s| s.recovery_point),
            unflushed_records: 0,
            last_flush_ms: now_ms,
            producer_id_expiration_ms: DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            cleaner_checkpoint: state.map_or(0, |s| s.cleaner_checkpoint),
            oldest_tombstone_ms: state.and_then(|s| s.oldest_tombstone_ms),
            aborted: TxnIndex::new(dir),
            highest_offset_in_remote: -1,
            replicated: false,
            high_watermark: first_base,
            high_watermark_checkpoint: state.and_then(|s| s.high_watermark),
            generation: next_generation(),
            failed_truncation: None,
            verifications: Verifications::default(),
        };

        match state
            .and_then(|s| s.clean_log_end_offset)
            .filter(|_| clean_shutdown)
        {
            Some(clean_leo) => {
                let cfg = log.config.clone();
                let active = log.active_mut();
                let active_base = active.base_offset();
                match active.load_active_after_clean_shutdown(&cfg)? {
                    Ok(next) if next == clean_leo => log.log_end_offset = next,
                    Ok(next) => {
                        tracing::warn!(
                            next,
                            clean_leo,
                            "log end offset differs from clean shutdown record; recovering"
                        );
                        log.recover_from(active_base)?;
                    }
                    Err(why) => {
                        tracing::warn!(%why, "active segment inconsistent after clean shutdown; recovering");
                        log.recover_from(active_base)?;
                    }
                }
            }
            None => log.recover_from(log.recovery_point)?,
        }

        if log.log_start_offset > log.log_end_offset {
            tracing::warn!(
                log_start_offset = log.log_start_offset,
                log_end_offset = log.log_end_offset,
                "log start offset beyond log end; emptying the log"
            );
            let start = log.log_start_offset;
            log.reset_to_empty_at(start)?;
        }
        log.recovery_point = log.recovery_point.min(log.log_end_offset);
        let leo = log.log_end_offset;
        log.leader_epochs.truncate_from_end(leo)?;
        log.leader_epochs
            .truncate_from_start(log.log_start_offset)?;
        log.load_producer_state()?;
        log.delete_segments_below_log_start()?;
        log.aborted.trim_below(log.log_start_offset)?;
        log.persist_state(None)?;
        log.complete_interrupted_truncation()?;
        log.high_watermark = log.log_end_offset;
        log.assert_offsets();
        Ok(log)
    }

    /// Recovers every segment from the one containing `offset` to the end.
    fn recover_from(&mut self, offset: i64) -> Result<(), LogError> {
        let cfg = self.config.clone();
        let start_base = self
            .segments
            .range(..=offset)
            .next_back()
            .or_else(|| self.segments.iter().next())
            .map(|(b, _)| *b)
            .unwrap_or(0);
        let bases: Vec<i64> = self.segments.range(start_base..).map(|(b, _)| *b).collect();
        let mut leo = start_base;
        for (i, base) in bases.iter().enumerate() {
            let Some(seg) = self.segments.get_mut(base) else {
                continue;
            };
            if *base < leo {
                // A segment starting inside the previous one's offsets: unusable.
                tracing::warn!(segment = *base, leo, "deleting overlapping segment");
                for b in &bases[i..] {
                    if let Some(s) = self.segments.remove(b) {
                        s.delete()?;
                    }
                }
                break;
            }
            let outcome = seg.recover(&cfg)?;
            seg.flush()?;
            leo = outcome.next_offset.unwrap_or(*base);
            if outcome.truncated_bytes > 0 {
                for b in &bases[i + 1..] {
                    if let Some(s) = self.segments.remove(b) {
                        tracing::warn!(segment = *b, "deleting segment after truncation point");
                        s.delete()?;
                    }
                }
                break;
            }
        }
        self.log_end_offset = leo;
        self.recovery_point = leo;
        Ok(())
    }

    /// Deletes every segment and starts an empty one at `offset`, without the
    /// crash-safety marker, epoch or snapshot changes of
    /// [`Log::truncate_fully_and_start_at`]: for an open that found the log start
    /// beyond the data, and for [`Log::start_after_tier`], which fill those in themselves.
    pub(crate) fn reset_to_empty_at(&mut self, offset: i64) -> Result<(), LogError> {
        while let Some((_, seg)) = self.segments.pop_first() {
            seg.delete()?;
        }
        self.segments
            .insert(offset, LogSegment::create(&self.dir, offset, &self.config)?);
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.recovery_point = offset;
        self.high_watermark = offset;
        self.generation = next_generation();
        self.producers.clear();
        self.aborted.clear()
    }

    pub(crate) fn load_producer_state(&mut self) -> Result<(), LogError> {
        let leo = self.log_end_offset;
        let first_base = self.segments.keys().next().copied().unwrap_or(leo);
        let replay_from = self
            .producers
            .load_latest_snapshot(leo)?
            .unwrap_or(first_base);
        // Aborts at or after `replay_from` are re-derived from their markers below;
        // the index holds all earlier ones (it is synced before every snapshot).
        self.aborted.load(replay_from)?;
        if replay_from >= leo {
            return Ok(());
        }
        let cfg = &self.config;
        let producers = &mut self.producers;
        let aborted = &mut self.aborted;
        let start_base = self
            .segments
            .range(..=replay_from)
            .next_back()
            .map_or(first_base, |(b, _)| *b);
        for seg in self.segments.range(start_base..).map(|(_, s)| s) {
            seg.try_for_each_batch_from(replay_from, cfg, |pos, h| {
                let control = if h.is_control() && h.producer_id >= 0 {
                    Some(read_control_record(seg, pos, h)?)
                } else {
                    None
                };
                if let Some(txn) = producers
                    .replay(h, control)
                    .and_then(|done| aborted_txn_entry(producers, done))
                {
                    aborted.append(txn)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    pub(crate) fn persist_state(&self, clean_log_end_offset: Option<i64>) -> Result<(), LogError> {
        let state = PersistedState {
            log_start_offset: self.log_start_offset,
            recovery_point: self.recovery_point,
            clean_log_end_offset,
            cleaner_checkpoint: self.cleaner_checkpoint,
            oldest_tombstone_ms: self.oldest_tombstone_ms,
            high_watermark: self.high_watermark_checkpoint,
        };
        fsutil::write_atomic(&self.dir, STATE_FILE, &state.encode())
    }

    pub(crate) fn active(&self) -> &LogSegment {
        match self.segments.values().next_back() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    pub(crate) fn active_mut(&mut self) -> &mut LogSegment {
        match self.segments.values_mut().next_back() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Topic config changes at run time; take effect from the next append/roll.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Idle time after which producer state is dropped (Kafka's broker-wide
    /// `producer.id.expiration.ms`, default 1 day); applied in `maybe_flush`.
    pub fn set_producer_id_expiration_ms(&mut self, expiration_ms: i64) {
        self.producer_id_expiration_ms = expiration_ms;
    }

    /// Validates and appends the record batches in `records` (one or more
    /// magic-v2 batches, as received in a Produce request), as leader.
    ///
    /// Rewrites only base offset, partition leader epoch and (LogAppendTime)
    /// max timestamp + timestamp-type bit + CRC. All batches are validated
    /// before anything is written, so the call appends all or nothing. If any
    /// idempotent batch is a retry of one already in the log, the whole call
    /// is answered as that duplicate and nothing is written (Kafka returns on
    /// the first duplicate too; Produce v3+ carries one batch per partition).
    ///
    /// A transactional batch opens a transaction for its producer at its base
    /// offset if none is open; a non-transactional batch from a producer with
    /// an open transaction is refused with [`LogError::InvalidTxnState`].
    /// Control batches are refused.
    pub fn append_as_leader(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_batches(records, leader_epoch, now_ms, AppendOrigin::Client)
    }

    /// Like [`Log::append_as_leader`], for batches written by a coordinator
    /// (the group coordinator's transactional offset commits into
    /// `__consumer_offsets`): batches may carry a producer id / epoch with
    /// base sequence -1, and sequence checks and duplicate detection are
    /// skipped (Kafka's `AppendOrigin.COORDINATOR`). The producer epoch and
    /// the transaction rules are still enforced. Control batches are refused:
    /// markers go through [`Log::append_txn_marker`].
    pub fn append_as_coordinator(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_batches(records, leader_epoch, now_ms, AppendOrigin::Coordinator)
    }

    fn append_batches(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, LogError> {
        self.check_writable()?;
        if records.is_empty() {
            return Err(LogError::InvalidRecord(
                "produce request has no record batches".into(),
            ));
        }
        if records.len() > i32::MAX as usize {
            return Err(LogError::RecordTooLarge {
                size_bytes: records.len(),
                max_bytes: self.config.max_message_bytes,
            });
        }
        // Pass 1: validate every batch, reading its records. At most records.len() / 61
        // headers. Each keeps the largest timestamp of its records.
        let mut headers: Vec<(usize, RecordBatchHeader, i64)> = Vec::new();
        let topic_partition = || {
            self.dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        };
        let mut pos = 0usize;
        while pos < records.len() {
            let rest = &records[pos..];
            let h = RecordBatchHeader::parse(rest)?;
            let size = h.size_bytes();
            if size > rest.len() {
                return Err(LogError::CorruptRecord(format!(
                    "batch at byte {pos} declares {size} bytes but only {} remain",
                    rest.len()
                )));
            }
            if size > self.config.max_message_bytes as usize {
                return Err(LogError::RecordTooLarge {
                    size_bytes: size,
                    max_bytes: self.config.max_message_bytes,
                });
            }
            let batch_bytes = &rest[..size];
            batch::check_crc(batch_bytes, &h)?;
            let max_record_timestamp = batch::validate_client_batch(
                batch_bytes,
                &h,
                &self.config,
                now_ms,
                origin,
                &topic_partition,
            )?;
            headers.push((pos, h, max_record_timestamp));
            pos += size;
        }

        // Pass 2: assign offsets and check producer state, still without side effects.
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        let mut staging = ProducerAppendStaging::default();
        let mut placements = Vec::with_capacity(headers.len());
        let mut next_offset = self.log_end_offset;
        for (_, h, max_record_timestamp) in &headers {
            let first = next_offset;
            let last = first + h.last_offset_delta as i64;
            let max_timestamp_ms = if log_append_time {
                now_ms
            } else {
                *max_record_timestamp
            };
            if h.producer_id >= 0 {
                if let Some(dup) = self.producers.check_and_stage(
                    &mut staging,
                    h,
                    first,
                    last,
                    max_timestamp_ms,
                    origin,
                )? {
                    return Ok(AppendInfo {
                        first_offset: dup.first_offset,
                        last_offset: dup.last_offset,
                        log_append_time_ms: if log_append_time {
                            dup.timestamp_ms
                        } else {
                            -1
                        },
                        log_start_offset: self.log_start_offset,
                        duplicate: true,
                        records_count: (dup.last_offset - dup.first_offset + 1).max(0) as u64,
                        size_bytes_appended: 0,
                    });
                }
            }
            placements.push(BatchPlacement {
                base_offset: first,
                last_offset: last,
                max_timestamp_ms,
                size_bytes: h.size_bytes() as u64,
            });
            next_offset = last + 1;
        }
        let first_offset = self.log_end_offset;
        let last_offset = next_offset - 1;

        // Only the headers change: patch copies of them and write the records from the
        // request buffer, so the produced bytes are not copied again before the write.
        let mut patched = Vec::with_capacity(headers.len());
        for ((pos, h, _), p) in headers.iter().zip(&placements) {
            let (original, rest) =
                records[*pos..*pos + h.size_bytes()].split_at(BATCH_HEADER_SIZE_BYTES);
            let mut header = [0u8; BATCH_HEADER_SIZE_BYTES];
            header.copy_from_slice(original);
            batch::set_base_offset(&mut header, p.base_offset);
            batch::set_partition_leader_epoch(&mut header, leader_epoch);
            if log_append_time {
                batch::set_timestamp(&mut header, rest, TimestampType::LogAppendTime, now_ms);
            } else if h.timestamp_type() == TimestampType::LogAppendTime
                || p.max_timestamp_ms != h.max_timestamp
            {
                // CreateTime topic: keep the producer's timestamps, clear the bit, and make
                // the max timestamp the records' (Kafka's `setMaxTimestamp`), which the time
                // index and ListOffsets rely on.
                batch::set_timestamp(
                    &mut header,
                    rest,
                    TimestampType::CreateTime,
                    p.max_timestamp_ms,
                );
            }
            patched.push((header, rest));
        }
        let chunks: Vec<&[u8]> = patched
            .iter()
            .flat_map(|(header, rest)| [&header[..], rest])
            .collect();

        self.write_batches(
            &chunks,
            &placements,
            &[(leader_epoch, first_offset)],
            now_ms,
        )?;
        self.producers.commit(staging);
        let records_count = (last_offset - first_offset + 1) as u64;
        self.maybe_flush_after_append(records_count, now_ms)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start_offset: self.log_start_offset,
            duplicate: false,
            records_count,
            size_bytes_appended: records.len(),
        })
    }

    /// Refuses to write while a failed truncation is pending: its marker would cut the new
    /// records off again on the next open.
    pub(crate) fn check_writable(&self) -> Result<(), LogError> {
        match self.failed_truncation {
            None => Ok(()),
            Some(offset) => Err(LogError::StorageCorruption(format!(
                "{}: truncation to offset {offset} failed; reopen the log to complete it",
                self.dir.display()
            ))),
        }
    }

    /// Writes validated batches (`chunks`, back to back, described by `placements`, in
    /// offset order, the first at or above the log end offset) and moves the log end
    /// offset past them. `epoch_starts` are the leader epochs `(epoch, start offset)` to
    /// record first (Kafka assigns the epoch before writing). Producer state is the
    /// caller's: it applies the batches' changes once this returns Ok.
    ///
    /// On failure nothing is appended: the segment undoes a partial write, epochs assigned
    /// for the batches are dropped again, and an empty segment rolled for them is removed.
    pub(crate) fn write_batches(
        &mut self,
        chunks: &[&[u8]],
        placements: &[BatchPlacement],
        epoch_starts: &[(i32, i64)],
        now_ms: i64,
    ) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (placements.first(), placements.last()) else {
            unreachable!("an append writes at least one batch");
        };
        assert!(
            first.base_offset >= self.log_end_offset,
            "appends start at or above the log end offset ({} < {})",
            first.base_offset,
            self.log_end_offset
        );
        let (first_offset, last_offset) = (first.base_offset, last.last_offset);
        let size_bytes: u64 = placements.iter().map(|p| p.size_bytes).sum();
        let written = self.write_batches_at_end(
            chunks,
            placements,
            epoch_starts,
            (first_offset, last_offset, size_bytes),
            now_ms,
        );
        if let Err(e) = written {
            self.undo_failed_write();
            return Err(e);
        }
        assert!(
            last_offset >= self.log_end_offset,
            "log end offset must grow"
        );
        self.log_end_offset = last_offset + 1;
        Ok(())
    }

    fn write_batches_at_end(
        &mut self,
        chunks: &[&[u8]],
        placements: &[BatchPlacement],
        epoch_starts: &[(i32, i64)],
        (first_offset, last_offset, size_bytes): (i64, i64, u64),
        now_ms: i64,
    ) -> Result<(), LogError> {
        if first_offset > self.log_end_offset
            && last_offset - self.active().base_offset() > i32::MAX as i64
        {
            // Only a follower gets here: its batches start beyond a gap the log cleaner left on
            // the leader, too far from the active segment's base for the index's relative
            // offsets. Kafka rolls to the batch's base offset too (rolling at the log end
            // would not help: the gap itself is too wide).
            self.roll_to(first_offset, now_ms)?;
        } else {
            self.maybe_roll(size_bytes, last_offset, now_ms)?;
        }
        for &(epoch, start_offset) in epoch_starts {
            self.leader_epochs.assign(epoch, start_offset)?;
        }
        let cfg = self.config.clone();
        self.active_mut().append(chunks, placements, &cfg, now_ms)
    }

    /// Best-effort cleanup after a failed write (the write's own error is what the caller
    /// reports): epochs starting at or above the unchanged log end offset, and an empty
    /// active segment rolled above it, describe nothing that was written.
    fn undo_failed_write(&mut self) {
        let leo = self.log_end_offset;
        if let Err(e) = self.leader_epochs.truncate_from_end(leo) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot drop leader epochs of a failed append");
        }
        let active = self.active();
        if self.segments.len() > 1 && active.size_bytes() == 0 && active.base_offset() > leo {
            let base = active.base_offset();
            let snapshot = fsutil::offset_file_path(&self.dir, base, fsutil::SNAPSHOT_SUFFIX);
            let removed = match self.segments.pop_last() {
                Some((_, seg)) => seg.delete(),
                None => Ok(()),
            };
            if let Err(e) = removed.and_then(|()| fsutil::remove_if_exists(&snapshot)) {
                tracing::error!(dir = %self.dir.display(), segment = base, error = %e, "cannot remove the empty segment of a failed append");
            }
        }
    }

    pub(crate) fn maybe_flush_after_append(
        &mut self,
        records_count: u64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        self.unflushed_records = self.unflushed_records.saturating_add(records_count);
        if self.unflushed_records >= self.config.flush_messages {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// Appends a transaction marker as the transaction coordinator (Kafka's
    /// WriteTxnMarkers path, `AppendOrigin.COORDINATOR`): a control batch
    /// (transactional | control, magic 2, uncompressed) holding one record
    /// with key `[i16 0][i16 type: 0 = ABORT, 1 = COMMIT]` and value
    /// `[i16 0][i32 coordinator_epoch]`, producer id/epoch set, base sequence
    /// -1, timestamps `now_ms`.
    ///
    /// Ends the producer's open transaction on this partition; the marker is
    /// written even if none is open, as Kafka does (the coordinator sends
    /// markers to every partition it knows of, and retries). An ABORT that
    /// ends an open transaction records `(producer_id, first_offset,
    /// marker offset)` in the aborted-transaction index. The marker's epoch
    /// must be >= the producer's ([`LogError::InvalidProducerEpoch`]) and its
    /// coordinator epoch >= the last marker's
    /// ([`LogError::TransactionCoordinatorFenced`]); both become current.
    /// Returns the marker's offset.
    pub fn append_txn_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        self.check_writable()?;
        if producer_id < 0 || producer_epoch < 0 {
            return Err(LogError::InvalidRecord(format!(
                "transaction marker needs a producer id and epoch, got {producer_id}/{producer_epoch}"
            )));
        }
        let offset = self.log_end_offset;
        let mut staging = ProducerAppendStaging::default();
        let marker = TxnMarker {
            producer_id,
            producer_epoch,
            coordinator_epoch,
            commit,
        };
        let completed =
            self.producers
                .check_and_stage_marker(&mut staging, marker, offset, now_ms)?;
        let mut buf = txn::build_marker_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
            self.config.timestamp_type,
        );
        batch::set_base_offset(&mut buf, offset);
        batch::set_partition_leader_epoch(&mut buf, leader_epoch);
        let placement = BatchPlacement {
            base_offset: offset,
            last_offset: offset,
            max_timestamp_ms: now_ms,
            size_bytes: buf.len() as u64,
        };
        self.write_batches(&[&buf], &[placement], &[(leader_epoch, offset)], now_ms)?;
        self.producers.commit(staging);
        self.verifications.on_marker(producer_id, producer_epoch);
        if let Some(txn) = completed.and_then(|done| aborted_txn_entry(&self.producers, done)) {
            self.aborted.append(txn)?;
        }
        self.maybe_flush_after_append(1, now_ms)?;
        Ok(offset)
    }

    /// The last stable offset (Kafka's `UnifiedLog.lastStableOffset`): the
    /// first offset of the earliest open transaction, else the high
    /// watermark; never below the log start offset.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.producers
            .first_unstable_offset()
            .map_or(hw, |first| first.max(self.log_start_offset).min(hw))
    }

    /// Aborted transactions overlapping `[fetch_offset, upper_bound)`:
    /// `(producer_id, first_offset)` of each whose marker is at or after
    /// `fetch_offset` and whose first offset is below `upper_bound`, in
    /// first-offset order (FetchResponse.aborted_transactions).
    pub fn aborted_transactions(&self, fetch_offset: i64, upper_bound: i64) -> Vec<(i64, i64)> {
        self.aborted.overlapping(fetch_offset, upper_bound)
    }

    /// Open transactions `(producer_id, producer_epoch, first_offset)`, by first offset.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.producers.open_transactions()
    }

    /// Whether `producer_id` has a transaction open here at `producer_epoch` (Kafka's
    /// `UnifiedLog.hasOngoingTransaction`): a write to it needs no check with the
    /// transaction coordinator, since the first write of the transaction had one.
    pub fn has_ongoing_transaction(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.producers
            .entry(producer_id)
            .is_some_and(|e| e.epoch == producer_epoch && e.current_txn_first_offset.is_some())
    }

    /// Starts the check of a transactional write of `producer_id` with the transaction
    /// coordinator (Kafka's `UnifiedLog.maybeStartTransactionVerification`): the append that
    /// follows the coordinator's answer presents the returned guard to
    /// [`Log::txn_verification_valid`]. `supports_epoch_bump` is protocol v2 (the partition
    /// is added, and the transaction's marker will carry a bumped epoch).
    pub fn start_txn_verification(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        supports_epoch_bump: bool,
        now_ms: i64,
    ) -> VerificationGuard {
        self.verifications
            .start(producer_id, producer_epoch, supports_epoch_bump, now_ms)
    }

    /// Whether the check `guard` of `producer_id` still stands: no marker of that producer
    /// ended the checked transaction since it started. Other producers' markers do not
    /// matter.
    pub fn txn_verification_valid(
        &self,
        producer_id: i64,
        guard: VerificationGuard,
        now_ms: i64,
    ) -> bool {
        self.verifications.is_valid(producer_id, guard, now_ms)
    }

    /// The epoch this log last saw from `producer_id`, if it knows the producer.
    pub fn producer_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.entry(producer_id).map(|e| e.epoch)
    }

    fn maybe_roll(
        &mut self,
        incoming_bytes: u64,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let cfg = &self.config;
        let active = self.active();
        if active.size_bytes() == 0 {
            return Ok(());
        }
        let reason = if active.size_bytes() + incoming_bytes > cfg.effective_segment_bytes() {
            Some("segment.bytes")
        } else if active.is_index_full(cfg)? {
            Some("index full")
        } else if active
            .rolling_base_ms()
            .is_some_and(|base| now_ms.saturating_sub(base) > cfg.segment_ms)
        {
            Some("segment.ms")
        } else if last_offset - active.base_offset() > i32::MAX as i64 {
            Some("relative offset overflow")
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::debug!(dir = %self.dir.display(), reason, "rolling log segment");
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Starts a new active segment at the log end offset. The old one is
    /// fsynced first, so the recovery point can advance to the new base.
    pub(crate) fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let leo = self.log_end_offset;
        let active = self.active();
        assert!(
            active.size_bytes() > 0 && leo > active.base_offset(),
            "never roll an empty segment"
        );
        self.roll_to(leo, now_ms)
    }

    /// Starts a new active segment at `base_offset` (the log end offset, or above it when a
    /// follower's next batch lies beyond a compaction gap). The producer snapshot is taken
    /// at the new base, where the tier upload looks for it; no batch lies between the log
    /// end and the base, so it is the state as of both.
    fn roll_to(&mut self, base_offset: i64, now_ms: i64) -> Result<(), LogError> {
        let leo = self.log_end_offset;
        let cfg = self.config.clone();
        let active = self.active_mut();
        assert!(
            base_offset >= leo && base_offset > active.base_offset(),
            "new segment base {base_offset} must not be below the log end {leo} or the active segment's base {}",
            active.base_offset()
        );
        active.on_become_inactive(&cfg)?;
        let new = LogSegment::create(&self.dir, base_offset, &cfg)?;
        self.segments.insert(base_offset, new);
        self.recovery_point = leo;
        self.unflushed_records = 0;
        self.last_flush_ms = now_ms;
        self.aborted.sync()?;
        self.producers
            .take_snapshot(base_offset, self.snapshots_kept_above())?;
        self.persist_state(None)
    }

    /// Reads from `fetch_offset` up to `max_bytes` of whole batches, from one
    /// segment. If `min_one_batch` and the first batch is bigger than
    /// `max_bytes`, that one batch is returned anyway (its size is bounded by
    /// the segment it lives in).
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        self.read_bounded(fetch_offset, max_bytes, min_one_batch, i64::MAX)
    }

    /// [`Log::read`] that returns no batch whose base offset is >=
    /// `upper_bound_offset`; read_committed fetches pass the last stable
    /// offset (Kafka's `FetchIsolation.TXN_COMMITTED`), consumers' other
    /// fetches of a replicated log the high watermark (`HIGH_WATERMARK`); a
    /// follower's fetch reads to the log end (`LOG_END`). The at-least-one-batch
    /// rule applies to the first batch below the bound only. A fetch offset
    /// at or above the bound (but within the log) reads nothing.
    pub fn read_bounded(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        upper_bound_offset: i64,
    ) -> Result<ReadResult, LogError> {
        let result = |records: Bytes| ReadResult {
            records,
            high_watermark: self.high_watermark(),
            log_start_offset: self.log_start_offset,
            last_stable_offset: self.last_stable_offset(),
        };
        if fetch_offset < self.log_start_offset || fetch_offset > self.log_end_offset {
            return Err(self.out_of_range(fetch_offset));
        }
        let local_start = self.local_log_start_offset();
        if fetch_offset < local_start {
            return Err(LogError::NotLocal {
                offset: fetch_offset,
                local_log_start_offset: local_start,
            });
        }
        if fetch_offset == self.log_end_offset || fetch_offset >= upper_bound_offset {
            return Ok(result(Bytes::new()));
        }
        let start_base = self
            .segments
            .range(..=fetch_offset)
            .next_back()
            .map_or(fetch_offset, |(b, _)| *b);
        for seg in self.segments.range(start_base..).map(|(_, s)| s) {
            let Some((pos, first)) = seg.find_batch(fetch_offset, &self.config)? else {
                continue;
            };
            if first.base_offset >= upper_bound_offset {
                return Ok(result(Bytes::new()));
            }
            let first_size = first.size_bytes();
            if first_size > max_bytes {
                if !min_one_batch {
                    return Ok(result(Bytes::new()));
                }
                return Ok(result(seg.read_bytes(pos, first_size)?));
            }
            let len = (max_bytes as u64).min(seg.size_bytes() - pos) as usize;
            let mut buf = seg.read_bytes(pos, len)?;
            let whole = whole_batches_prefix_bytes(&buf, upper_bound_offset);
            debug_assert!(whole >= first_size);
            buf.truncate(whole);
            return Ok(result(buf));
        }
        Ok(result(Bytes::new()))
    }

    pub(crate) fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// First offset held on local disk (Kafka's `localLogStartOffset`); offsets from the log
    /// start up to here are only in the tier.
    pub fn local_log_start_offset(&self) -> i64 {
        self.first_segment_base().max(self.log_start_offset)
    }

    pub(crate) fn first_segment_base(&self) -> i64 {
        self.segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.log_end_offset)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Offset below which all data is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// The high watermark (Kafka's): the offset below which every record is on all in-sync
    /// replicas. Consumers read below it, and retention, the cleaner and the tier leave
    /// everything at or above it alone. It is the log end offset unless the log is
    /// [replicated](Log::set_replicated); then it moves only by [`Log::set_high_watermark`]
    /// and by truncation, which clamps it to the new log end.
    pub fn high_watermark(&self) -> i64 {
        if self.replicated {
            self.high_watermark
        } else {
            self.log_end_offset
        }
    }

    /// Whether a replica manager owns the high watermark (see [`Log::set_replicated`]).
    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// Hands the high watermark to the caller (`true`: the partition has other replicas) or
    /// back to the log (`false`: it follows the log end offset again, as for a single
    /// replica). Becoming replicated starts the high watermark at the last
    /// [checkpoint](Log::checkpoint_high_watermark) if the log was replicated when it was
    /// written (a reopened log), else at the log end offset; the caller moves it from
    /// there. Calling it again with the same value changes nothing.
    pub fn set_replicated(&mut self, replicated: bool) {
        if replicated && !self.replicated {
            self.high_watermark = self
                .high_watermark_checkpoint
                .unwrap_or(self.log_end_offset)
                .clamp(self.log_start_offset, self.log_end_offset);
        }
        if !replicated {
            self.high_watermark_checkpoint = None;
        }
        self.replicated = replicated;
        self.assert_offsets();
    }

    /// Writes the high watermark of a replicated log to the state file if it moved since
    /// the last checkpoint (Kafka's `replication-offset-checkpoint`, written every
    /// `replica.high.watermark.checkpoint.interval.ms`), so that after a restart consumers
    /// are not shown records that the other replicas may not have. Returns whether it wrote.
    pub fn checkpoint_high_watermark(&mut self) -> Result<bool, LogError> {
        if !self.replicated || self.high_watermark_checkpoint == Some(self.high_watermark) {
            return Ok(false);
        }
        let previous = self.high_watermark_checkpoint.replace(self.high_watermark);
        if let Err(e) = self.persist_state(None) {
            self.high_watermark_checkpoint = previous;
            return Err(e);
        }
        Ok(true)
    }

    /// Sets the high watermark of a replicated log, clamped to `[log_start_offset,
    /// log_end_offset]` (Kafka's `updateHighWatermark`). It may move back: a follower takes
    /// `min(leader's high watermark, own log end)` and the leader's may be behind after a
    /// truncation; a leader only moves it forward. No effect on an unreplicated log, whose
    /// high watermark is its log end offset.
    pub fn set_high_watermark(&mut self, offset: i64) {
        let clamped = offset.clamp(self.log_start_offset, self.log_end_offset);
        if clamped != offset {
            tracing::debug!(dir = %self.dir.display(), offset, clamped, "high watermark clamped to the log");
        }
        self.high_watermark = clamped;
        self.assert_offsets();
    }

    /// `log_start_offset <= high_watermark <= log_end_offset` (the module invariant).
    pub(crate) fn assert_offsets(&self) {
        let (start, hw, end) = (
            self.log_start_offset,
            self.high_watermark(),
            self.log_end_offset,
        );
        assert!(
            0 <= start && start <= hw && hw <= end,
            "{}: offsets out of order: log start {start}, high watermark {hw}, log end {end}",
            self.dir.display()
        );
    }

    pub fn snapshot(&self) -> LogOffsetSnapshot {
        LogOffsetSnapshot {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            size_bytes: self.segments.values().map(LogSegment::size_bytes).sum(),
            segments: self.segments.len(),
        }
    }

    /// ListOffsets by timestamp (Kafka's `UnifiedLog.fetchOffsetByTimestamp`): the first
    /// record at or after the local log start whose timestamp is >= `timestamp_ms`, with its
    /// timestamp and its batch's leader epoch; in a LogAppendTime batch a record's timestamp
    /// is the batch's. Segments whose max timestamp is below the target are skipped; in the first
    /// other one, the time index says where to start, batch headers are walked, and the records
    /// of the first batch whose max timestamp reaches the target are read (inflated if
    /// compressed, bounded) — usually one batch.
    ///
    /// Local segments only: a tiered log's caller looks in the tier below
    /// [`Log::local_log_start_offset`] first.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampAndOffset>, LogError> {
        let start = self.local_log_start_offset();
        let start_base = self
            .segments
            .range(..=start)
            .next_back()
            .map_or(start, |(b, _)| *b);
        for seg in self.segments.range(start_base..).map(|(_, s)| s) {
            if seg.size_bytes() == 0 || seg.max_timestamp(&self.config)?.timestamp_ms < timestamp_ms
            {
                continue;
            }
            if let Some(found) = seg.find_offset_by_timestamp(timestamp_ms, start, &self.config)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (KIP-734): the max timestamp and the first record holding it,
    /// in the first segment with the largest max timestamp, with its batch's leader epoch
    /// (Kafka's answer). Never below the log start offset: a record DeleteRecords put below it
    /// is answered with the log start offset and the epoch it was written in, where Kafka
    /// would name a record a consumer can no longer fetch. `None` if the log holds no
    /// timestamps. Segments whose index cannot be read are skipped (and logged); a batch whose
    /// records cannot be read is an error.
    pub fn max_timestamp_and_offset(&self) -> Result<Option<TimestampAndOffset>, LogError> {
        let mut best: Option<(i64, &LogSegment)> = None;
        for seg in self.segments.values().filter(|s| s.size_bytes() > 0) {
            match seg.max_timestamp(&self.config) {
                Ok(t) => {
                    if best.is_none_or(|(ts, _)| t.timestamp_ms > ts) {
                        best = Some((t.timestamp_ms, seg));
                    }
                }
                Err(e) => {
                    tracing::warn!(segment = seg.base_offset(), error = %e, "cannot read max timestamp")
                }
            }
        }
        let Some((_, seg)) = best else {
            return Ok(None);
        };
        Ok(seg.max_timestamp_record(&self.config)?.map(|found| {
            let mut found = self.with_epoch(found);
            if found.offset < self.log_start_offset {
                found.offset = self.log_start_offset;
                found.leader_epoch = self.leader_epochs.epoch_for_offset(found.offset);
            }
            found
        }))
    }

    /// `found` with the leader epoch of its offset from the leader-epoch cache when its batch
    /// gave none: answers that could not name their batch (see
    /// [`LogSegment::max_timestamp_record`]). Every batch this log appends carries an epoch.
    fn with_epoch(&self, found: TimestampAndOffset) -> TimestampAndOffset {
        TimestampAndOffset {
            leader_epoch: found
                .leader_epoch
                .or_else(|| self.leader_epochs.epoch_for_offset(found.offset)),
            ..found
        }
    }

    /// Kafka's `LeaderEpochFileCache.epochForOffset`: the leader epoch `offset` was written in,
    /// from the leader-epoch cache (which, as Kafka's, covers the log from its start offset,
    /// tiered part included); `None` below what it knows. ListOffsets answers it with
    /// EARLIEST_LOCAL and LATEST_TIERED offsets.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.leader_epochs.epoch_for_offset(offset)
    }

    /// The leader epoch of the log start offset as ListOffsets EARLIEST answers it (Kafka's
    /// `UnifiedLog.fetchOffsetByTimestamp`): the earliest cached epoch if it starts at or below
    /// the log start offset, else `None`.
    pub fn log_start_epoch(&self) -> Option<i32> {
        self.leader_epochs
            .earliest_entry()
            .filter(|&(_, start)| start <= self.log_start_offset)
            .map(|(epoch, _)| epoch)
    }

    /// OffsetForLeaderEpoch with Kafka's `LeaderEpochFileCache.endOffsetFor` semantics.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.leader_epochs
            .end_offset_for(epoch, self.log_end_offset)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.leader_epochs.latest_epoch()
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1 = high
    /// watermark), persists it, and deletes segments wholly below it. An offset
    /// below the current start is a no-op. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let target = if offset == -1 {
            self.high_watermark()
        } else {
            offset
        };
        if target < 0 || target > self.high_watermark() {
            return Err(self.out_of_range(offset));
        }
        if target > self.log_start_offset {
            self.log_start_offset = target;
            self.persist_state(None)?;
            self.leader_epochs.truncate_from_start(target)?;
            self.delete_segments_below_log_start()?;
            self.aborted.trim_below(self.log_start_offset)?;
        }
        Ok(self.log_start_offset)
    }

    /// Deletes segments whose next segment starts at or below the log start.
    fn delete_segments_below_log_start(&mut self) -> Result<usize, LogError> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let n = bases
            .windows(2)
            .take_while(|w| w[1] <= self.log_start_offset)
            .count();
        self.delete_oldest_segments(n, 0, "log start offset", true)
    }

    /// Deletes the `n` oldest segments; if that is all of them, rolls first so
    /// an (empty) active segment remains. `moves_log_start` is false when the
    /// segments are only leaving local disk (they stay readable in the tier).
    pub(crate) fn delete_oldest_segments(
        &mut self,
        n: usize,
        now_ms: i64,
        reason: &str,
        moves_log_start: bool,
    ) -> Result<usize, LogError> {
        if n == 0 {
            return Ok(0);
        }
        if n >= self.segments.len() {
            self.roll(now_ms)?;
        }
        for _ in 0..n {
            if let Some((base, seg)) = self.segments.pop_first() {
                tracing::info!(dir = %self.dir.display(), segment = base, reason, "deleting log segment");
                seg.delete()?;
            }
        }
        let first_base = self.first_segment_base();
        if moves_log_start && first_base > self.log_start_offset {
            self.log_start_offset = first_base;
            self.leader_epochs.truncate_from_start(first_base)?;
        }
        self.aborted.trim_below(self.log_start_offset)?;
        self.persist_state(None)?;
        Ok(n)
    }

    /// Number of oldest segments satisfying `pred`, stopping at the first
    /// that does not; an empty active segment is never counted, nor any segment
    /// holding offsets at or above the high watermark (Kafka's `deletableSegments`:
    /// the log start offset must never pass the high watermark).
    pub(crate) fn deletable_prefix(
        &self,
        mut pred: impl FnMut(&LogSegment) -> Result<bool, LogError>,
    ) -> Result<usize, LogError> {
        let total = self.segments.len();
        let hw = self.high_watermark();
        let next_bases = self
            .segments
            .keys()
            .skip(1)
            .copied()
            .chain([self.log_end_offset]);
        let mut n = 0;
        for (i, (seg, upper_bound)) in self.segments.values().zip(next_bases).enumerate() {
            if i + 1 == total && seg.size_bytes() == 0 {
                break;
            }
            if upper_bound > hw || !pred(seg)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Retention by retention.ms and retention.bytes (Kafka's
    /// `deleteOldSegments`): deletes whole segments oldest first. If the active
    /// segment itself is expired it is rolled first, leaving an empty one.
    /// Returns the number of segments deleted.
    ///
    /// A tiered log applies local retention here instead, to uploaded segments
    /// only ([`Log::apply_local_retention`]); the broker applies retention.ms and
    /// retention.bytes to the whole log through the tier.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if self.config.remote_storage_enable {
            let deleted = self.apply_local_retention(now_ms)?;
            return Ok(deleted + self.delete_segments_below_log_start()?);
        }
        let mut deleted = 0;
        let n = self.expired_by_time(self.config.retention_ms, now_ms)?;
        deleted += self.delete_oldest_segments(n, now_ms, "retention.ms", true)?;
        let n = self.expired_by_size(self.config.retention_bytes)?;
        deleted += self.delete_oldest_segments(n, now_ms, "retention.bytes", true)?;
        deleted += self.delete_segments_below_log_start()?;
        Ok(deleted)
    }

    /// How many of the oldest segments are older than `retention_ms` (-1 = none).
    pub(crate) fn expired_by_time(
        &self,
        retention_ms: i64,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        if retention_ms < 0 {
            return Ok(0);
        }
        self.deletable_prefix(|seg| {
            Ok(
                now_ms.saturating_sub(seg.largest_timestamp_for_retention(&self.config)?)
                    > retention_ms,
            )
        })
    }

    /// How many of the oldest segments can go with the log staying at or above
    /// `retention_bytes` (-1 = none), as Kafka counts: the log may exceed the
    /// limit by less than one segment.
    pub(crate) fn expired_by_size(&self, retention_bytes: i64) -> Result<usize, LogError> {
        if retention_bytes < 0 {
            return Ok(0);
        }
        let mut excess = self.snapshot().size_bytes as i64 - retention_bytes;
        self.deletable_prefix(|seg| {
            let size = seg.size_bytes() as i64;
            Ok(if excess - size >= 0 {
                excess -= size;
                true
            } else {
                false
            })
        })
    }

    /// Periodic housekeeping: expires idle producers, rolls if segment.ms has
    /// elapsed, and fsyncs if flush.ms has elapsed with unflushed data.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.producers
            .expire(now_ms, self.producer_id_expiration_ms);
        let active = self.active();
        if active.size_bytes() > 0
            && active
                .rolling_base_ms()
                .is_some_and(|base| now_ms.saturating_sub(base) > self.config.segment_ms)
        {
            self.roll(now_ms)?;
        }
        if self.unflushed_records > 0
            && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// fsyncs the active segment and its indexes and advances the recovery point.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.active().flush()?;
        self.aborted.sync()?;
        self.recovery_point = self.log_end_offset;
        self.unflushed_records = 0;
        self.persist_state(None)
    }

    /// Clean close: flushes, snapshots producer state at the log end offset and
    /// records the clean-shutdown marker, so the next clean open scans no data.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        if self.replicated {
            self.high_watermark_checkpoint = Some(self.high_watermark);
        }
        self.aborted.sync()?;
        self.producers
            .take_snapshot(self.log_end_offset, self.snapshots_kept_above())?;
        self.persist_state(Some(self.log_end_offset))
    }

    /// Offsets below this have been compacted (Kafka's cleaner checkpoint).
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.cleaner_checkpoint
    }

    /// Decides, cheaply and under the caller's lock, whether the log needs
    /// compaction (see [`crate::cleaner`] for the rules) and if so captures
    /// what [`CompactionPlan::execute`] needs: the inactive segments up to the
    /// first uncleanable one, with open handles, and the cleaner checkpoint.
    pub fn plan_compaction(&self, now_ms: i64) -> Result<Option<CompactionPlan>, LogError> {
        let cfg = &self.config;
        if !cfg.compact || self.segments.len() < 2 {
            return Ok(None);
        }
        let active_base = self.active().base_offset();
        let hw = self.high_watermark();
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let mut cleanable: Vec<(&LogSegment, i64)> = Vec::new();
        for (i, seg) in self.segments.values().enumerate() {
            // Records at or above the high watermark may still be truncated away; a key
            // seen there must not remove its older records.
            if seg.base_offset() == active_base || bases[i + 1] > hw {
                break;
            }
            // An empty segment (everything in it was compacted away) holds nothing young.
            if cfg.min_compaction_lag_ms > 0
                && seg.size_bytes() > 0
                && seg.largest_timestamp_for_retention(cfg)?
                    > now_ms.saturating_sub(cfg.min_compaction_lag_ms)
            {
                break;
            }
            cleanable.push((seg, bases[i + 1]));
        }
        let Some(&(first, _)) = cleanable.first() else {
            return Ok(None);
        };
        let first_dirty = self.cleaner_checkpoint.max(first.base_offset());
        let total: u64 = cleanable.iter().map(|(s, _)| s.size_bytes()).sum();
        let dirty_segments: Vec<&LogSegment> = cleanable
            .iter()
            .filter(|(_, next)| *next > first_dirty)
            .map(|(s, _)| *s)
            .collect();
        let dirty: u64 = dirty_segments.iter().map(|s| s.size_bytes()).sum();
        let ratio = if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        };
        let overdue = match dirty_segments.iter().find(|s| s.size_bytes() > 0) {
            Some(s) if cfg.max_compaction_lag_ms < i64::MAX => {
                let first_ts = s.read_header(0)?.max_timestamp;
                first_ts >= 0 && now_ms.saturating_sub(first_ts) > cfg.max_compaction_lag_ms
            }
            _ => false,
        };
        let tombstones_due = self
            .oldest_tombstone_ms
            .is_some_and(|t| t.saturating_add(cfg.delete_retention_ms) < now_ms);
        let needed =
            (dirty > 0 && (ratio >= cfg.min_cleanable_dirty_ratio || overdue)) || tombstones_due;
        if !needed {
            return Ok(None);
        }
        let mut segments = Vec::with_capacity(cleanable.len());
        for (seg, next) in cleanable {
            segments.push(PlannedSegment {
                base_offset: seg.base_offset(),
                size_bytes: seg.size_bytes(),
                next_base_offset: next,
                file: seg.reopen_file()?,
            });
        }
        Ok(Some(CompactionPlan {
            dir: self.dir.clone(),
            config: cfg.clone(),
            now_ms,
            first_dirty_offset: first_dirty,
            segments,
            map_memory_bytes: cleaner::OFFSET_MAP_MEMORY_BYTES,
            generation: self.generation,
        }))
    }

    /// Swaps the segments written by [`CompactionPlan::execute`] in, under
    /// the caller's lock. Returns `None` (and deletes the new files) if the
    /// log changed meanwhile so that the output no longer applies: a replaced
    /// segment was deleted by retention or DeleteRecords, or is gone.
    pub fn finish_compaction(
        &mut self,
        mut output: CompactedOutput,
    ) -> Result<Option<CompactionStats>, LogError> {
        let active_base = self.active().base_offset();
        let unchanged = output.dir == self.dir
            && output.generation == self.generation
            && output.outputs.iter().all(|o| {
                o.replaced.iter().all(|(base, size)| {
                    *base != active_base
                        && self
                            .segments
                            .get(base)
                            .is_some_and(|s| s.size_bytes() == *size)
                })
            });
        if !unchanged {
            tracing::info!(dir = %self.dir.display(), "log changed during compaction; discarding its output");
            return Ok(None);
        }
        cleaner::begin_swap(&self.dir, &output.outputs)?;
        output.committed = true;
        for o in &output.outputs {
            for (base, _) in &o.replaced {
                if let Some(seg) = self.segments.remove(base) {
                    if *base == o.base_offset {
                        // Its files are replaced by the rename below.
                        seg.forget();
                    } else {
                        seg.delete()?;
                    }
                }
            }
            cleaner::complete_swap_files(&self.dir, o.base_offset)?;
            self.segments.insert(
                o.base_offset,
                LogSegment::existing(&self.dir, o.base_offset, o.size_bytes),
            );
        }
        fsutil::fsync_dir(&self.dir)?;
        cleaner::remove_manifest(&self.dir)?;
        self.cleaner_checkpoint = self.cleaner_checkpoint.max(output.end_offset);
        self.oldest_tombstone_ms = output.oldest_tombstone_ms;
        self.persist_state(None)?;
        let stats = output.stats;
        tracing::info!(
            dir = %self.dir.display(),
            segments_in = stats.segments_in,
            segments_out = stats.segments_out,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            records_removed = stats.records_removed,
            cleaned_up_to = stats.cleaned_up_to,
            "compacted log"
        );
        Ok(Some(stats))
    }

    /// `(producer_id, epoch, last_sequence, last_timestamp)` sorted by producer id.
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers.active_producers()
    }
}

/// The aborted-transaction index entry for a transaction a marker just ended, if it was
/// aborted; `producers` already reflect the marker. Its last stable offset is Kafka's
/// `ProducerStateManager.lastStableOffset(completedTxn)`: the first offset of the earliest
/// other open transaction, else the offset after the marker. Shared by the leader's marker
/// append, follower appends and recovery, so all three write the same entry.
pub(crate) fn aborted_txn_entry(
    producers: &ProducerStateManager,
    done: CompletedTxn,
) -> Option<AbortedTxn> {
    done.aborted.then(|| AbortedTxn {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: producers
            .first_unstable_offset()
            .unwrap_or(done.last_offset + 1),
    })
}

/// Reads the first control record of the control batch `h` at `position`
/// of `seg` into a stack buffer (control batches are never compressed).
fn read_control_record(
    seg: &LogSegment,
    position: u64,
    h: &RecordBatchHeader,
) -> Result<ControlRecord, LogError> {
    let corrupt = |why: String| {
        LogError::StorageCorruption(format!("control batch at offset {}: {why}", h.base_offset))
    };
    if h.compression() != 0 {
        return Err(corrupt(format!(
            "compressed with codec {}",
            h.compression()
        )));
    }
    let mut prefix = [0u8; CONTROL_PREFIX_BYTES];
    let len = (h.size_bytes() - BATCH_HEADER_SIZE_BYTES).min(CONTROL_PREFIX_BYTES);
    seg.read_exact_at(
        position + BATCH_HEADER_SIZE_BYTES as u64,
        &mut prefix[..len],
    )?;
    txn::parse_control_record(&prefix[..len]).map_err(|e| corrupt(e.to_string()))
}

/// Length of the longest prefix of `buf` made of whole batches whose base
/// offsets are below `upper_bound_offset`.
fn whole_batches_prefix_bytes(buf: &[u8], upper_bound_offset: i64) -> usize {
    let mut pos = 0;
    while buf.len() - pos >= BATCH_HEADER_SIZE_BYTES {
        let Ok(h) = RecordBatchHeader::parse(&buf[pos..]) else {
            break;
        };
        if h.size_bytes() > buf.len() - pos || h.base_offset >= upper_bound_offset {
            break;
        }
        pos += h.size_bytes();
    }
    pos
}

#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Log>();
}
