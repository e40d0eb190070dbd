//! Idempotent-producer state (Kafka's `ProducerStateManager` and
//! `ProducerAppendInfo.checkSequence`).
//!
//! For every producer id the log remembers its epoch and the metadata of its
//! last [`MAX_CACHED_BATCHES`] batches, which is what lets a retried batch be
//! recognised as a duplicate (the producer keeps at most 5 in flight).
//! The state is snapshotted to `{offset:020}.snapshot`, meaning "state after
//! all batches below `offset`"; on open the newest usable snapshot is loaded
//! and batches after it are replayed from the segment headers.
//!
//! Transactions (Kafka's `ProducerAppendInfo.appendDataBatch` /
//! `appendEndTxnMarker`): a producer's first transactional batch on the
//! partition opens a transaction at that batch's base offset
//! (`currentTxnFirstOffset`); the coordinator's COMMIT/ABORT marker closes
//! it. The open transactions, ordered by first offset, give the last stable
//! offset. A producer with an open transaction is never expired (its
//! transaction would otherwise hold nothing back and then vanish).
//! Snapshot version 2 adds each producer's open-transaction first offset and
//! coordinator epoch; version 1 snapshots still load (no open transactions).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch::{increment_sequence, RecordBatchHeader};
use crate::error::LogError;
use crate::fsutil::{self, offset_file_path, parse_offset_file_name, SNAPSHOT_SUFFIX};
use crate::txn::ControlRecord;

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`).
pub(crate) const MAX_CACHED_BATCHES: usize = 5;
/// Snapshot files kept on disk; older ones are deleted after each snapshot.
pub(crate) const SNAPSHOTS_TO_KEEP: usize = 2;

const SNAPSHOT_VERSION: u16 = 2;
/// Version 1 lacked the transaction fields; it is still read.
const SNAPSHOT_VERSION_V1: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 2 + 4 + 4;
const ENTRY_FIXED_BYTES_V1: usize = 8 + 2 + 8 + 1;
const ENTRY_FIXED_BYTES: usize = ENTRY_FIXED_BYTES_V1 + 8 + 4;
const BATCH_META_BYTES: usize = 4 + 4 + 8 + 8 + 8;
/// Refuse to load absurdly large snapshots instead of allocating for them.
const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Metadata of one appended idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    pub(crate) first_seq: i32,
    pub(crate) last_seq: i32,
    pub(crate) first_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) timestamp_ms: i64,
}

/// State of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProducerStateEntry {
    pub(crate) epoch: i16,
    /// Oldest first; at most `MAX_CACHED_BATCHES`, all of the current epoch.
    pub(crate) batches: VecDeque<BatchMetadata>,
    pub(crate) last_timestamp_ms: i64,
    /// Base offset of the first batch of the producer's open transaction on
    /// this partition (Kafka's `currentTxnFirstOffset`).
    pub(crate) current_txn_first_offset: Option<i64>,
    /// Coordinator epoch of the last marker (-1 before any): markers from an
    /// older coordinator are fenced.
    pub(crate) coordinator_epoch: i32,
}

impl ProducerStateEntry {
    fn new(epoch: i16) -> Self {
        ProducerStateEntry {
            epoch,
            batches: VecDeque::new(),
            last_timestamp_ms: -1,
            current_txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }

    /// Kafka's `maybeUpdateProducerEpoch`: a new epoch forgets the old
    /// epoch's batches (their sequences restart at 0).
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    /// Opens a transaction at `first_offset` for a transactional batch if none is open.
    fn on_data_batch(&mut self, transactional: bool, first_offset: i64) {
        if transactional && self.current_txn_first_offset.is_none() {
            self.current_txn_first_offset = Some(first_offset);
        }
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    /// Records a batch; a new epoch forgets the old epoch's batches.
    fn push(&mut self, epoch: i16, batch: BatchMetadata) {
        self.set_epoch(epoch);
        if self.batches.len() == MAX_CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp_ms = batch.timestamp_ms;
    }
}

/// Producer-state changes of one append request, applied only if the whole
/// request is appended (all-or-nothing).
#[derive(Default)]
pub(crate) struct ProducerAppendStaging {
    pending: HashMap<i64, ProducerStateEntry>,
}

/// Who is appending (Kafka's `AppendOrigin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendOrigin {
    /// A producer: sequence numbers are checked and retries deduplicated.
    Client,
    /// A coordinator writing on its own behalf (transactional offset
    /// commits): producer epoch and transaction state are checked, sequences
    /// are not (they may be -1).
    Coordinator,
}

/// The fields of a transaction marker that producer state checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxnMarker {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) coordinator_epoch: i32,
    pub(crate) commit: bool,
}

/// A transaction ended by a marker (Kafka's `CompletedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CompletedTxn {
    pub(crate) producer_id: i64,
    pub(crate) first_offset: i64,
    /// Offset of the marker.
    pub(crate) last_offset: i64,
    pub(crate) aborted: bool,
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq as i64 == last_seq as i64 + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// All producer state of one partition.
pub(crate) struct ProducerStateManager {
    dir: PathBuf,
    producers: HashMap<i64, ProducerStateEntry>,
    /// Open transactions: first offset -> producer id. Mirrors
    /// `current_txn_first_offset` of `producers` (kept in step by `insert`).
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStateManager {
    pub(crate) fn new(dir: &Path) -> Self {
        ProducerStateManager {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
            ongoing: BTreeMap::new(),
        }
    }

    /// Replaces a producer's entry, keeping `ongoing` in step.
    fn insert(&mut self, pid: i64, entry: ProducerStateEntry) {
        let old = self
            .producers
            .get(&pid)
            .and_then(|e| e.current_txn_first_offset);
        let new = entry.current_txn_first_offset;
        self.producers.insert(pid, entry);
        self.update_ongoing(pid, old, new);
    }

    /// Moves `pid`'s open transaction in `ongoing` from `old` to `new`.
    fn update_ongoing(&mut self, pid: i64, old: Option<i64>, new: Option<i64>) {
        if old == new {
            return;
        }
        if let Some(first) = old {
            self.ongoing.remove(&first);
        }
        if let Some(first) = new {
            let prev = self.ongoing.insert(first, pid);
            assert!(
                prev.is_none_or(|p| p == pid),
                "two open transactions start at offset {first}"
            );
        }
    }

    fn rebuild_ongoing(&mut self) {
        self.ongoing = self
            .producers
            .iter()
            .filter_map(|(pid, e)| e.current_txn_first_offset.map(|f| (f, *pid)))
            .collect();
    }

    /// First offset of the earliest open transaction (Kafka's `firstUnstableOffset`).
    pub(crate) fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Open transactions `(producer_id, producer_epoch, first_offset)` by first offset.
    pub(crate) fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.ongoing
            .iter()
            .map(|(first, pid)| {
                let epoch = self.producers.get(pid).map_or(-1, |e| e.epoch);
                (*pid, epoch, *first)
            })
            .collect()
    }

    /// Checks a transaction marker for `producer_id` at `offset` and stages
    /// the end of its transaction (Kafka's `appendEndTxnMarker`). Returns the
    /// completed transaction if one was open.
    pub(crate) fn check_and_stage_marker(
        &self,
        staging: &mut ProducerAppendStaging,
        marker: TxnMarker,
        offset: i64,
        timestamp_ms: i64,
    ) -> Result<Option<CompletedTxn>, LogError> {
        let TxnMarker {
            producer_id,
            producer_epoch,
            coordinator_epoch,
            commit,
        } = marker;
        let current = staging
            .pending
            .get(&producer_id)
            .or_else(|| self.producers.get(&producer_id));
        if let Some(e) = current {
            if producer_epoch < e.epoch {
                return Err(LogError::InvalidProducerEpoch(format!(
                    "transaction marker for producer {producer_id} has epoch {producer_epoch}, older than current epoch {}",
                    e.epoch
                )));
            }
            if coordinator_epoch < e.coordinator_epoch {
                return Err(LogError::TransactionCoordinatorFenced(format!(
                    "transaction marker for producer {producer_id} has coordinator epoch {coordinator_epoch}, older than {}",
                    e.coordinator_epoch
                )));
            }
        }
        let mut entry = current
            .cloned()
            .unwrap_or_else(|| ProducerStateEntry::new(producer_epoch));
        let completed = end_txn(
            &mut entry,
            producer_id,
            producer_epoch,
            coordinator_epoch,
            commit,
            offset,
            timestamp_ms,
        );
        staging.pending.insert(producer_id, entry);
        Ok(completed)
    }

    /// Checks one batch (`producer_id >= 0`) of a request against the current
    /// state plus the request's earlier batches. `Ok(Some(_))` means it is a
    /// retry of a batch already in the log.
    pub(crate) fn check_and_stage(
        &self,
        staging: &mut ProducerAppendStaging,
        h: &RecordBatchHeader,
        first_offset: i64,
        last_offset: i64,
        timestamp_ms: i64,
        origin: AppendOrigin,
    ) -> Result<Option<BatchMetadata>, LogError> {
        debug_assert!(h.producer_id >= 0 && !h.is_control());
        let pid = h.producer_id;
        let epoch = h.producer_epoch;
        let first_seq = h.base_sequence;
        let last_seq = h.last_sequence();
        let current = staging
            .pending
            .get(&pid)
            .or_else(|| self.producers.get(&pid));
        let check_sequence = origin == AppendOrigin::Client;
        if let Some(entry) = current {
            if check_sequence {
                if let Some(dup) = entry.find_duplicate(epoch, first_seq, last_seq) {
                    return Ok(Some(dup));
                }
            }
            if epoch < entry.epoch {
                return Err(LogError::InvalidProducerEpoch(format!(
                    "producer {pid} epoch {epoch} is older than current epoch {}",
                    entry.epoch
                )));
            }
            if !check_sequence {
                // Kafka's AppendOrigin.COORDINATOR: no sequence checks.
            } else if epoch > entry.epoch {
                if first_seq != 0 {
                    return Err(LogError::OutOfOrderSequence(format!(
                        "producer {pid} new epoch {epoch} must start at sequence 0, got {first_seq}"
                    )));
                }
            } else {
                match entry.last_seq() {
                    Some(last) if !in_sequence(last, first_seq) => {
                        return Err(LogError::OutOfOrderSequence(format!(
                            "producer {pid} epoch {epoch}: expected sequence {}, got {first_seq}",
                            increment_sequence(last, 1)
                        )));
                    }
                    None if first_seq != 0 => {
                        return Err(LogError::OutOfOrderSequence(format!(
                            "producer {pid} epoch {epoch} has no batches; expected sequence 0, got {first_seq}"
                        )));
                    }
                    _ => {}
                }
            }
        }
        // No entry at all: accept any sequence, as Kafka does, since the state may
        // have been removed (expiry) while the producer kept going.
        let mut entry = current
            .cloned()
            .unwrap_or_else(|| ProducerStateEntry::new(epoch));
        if entry.current_txn_first_offset.is_some() && !h.is_transactional() {
            return Err(LogError::InvalidTxnState(format!(
                "expected a transactional write from producer {pid} at offset {first_offset}: it has a transaction open since offset {}",
                entry.current_txn_first_offset.unwrap_or(-1)
            )));
        }
        if first_seq >= 0 {
            entry.push(
                epoch,
                BatchMetadata {
                    first_seq,
                    last_seq,
                    first_offset,
                    last_offset,
                    timestamp_ms,
                },
            );
        } else {
            // A coordinator batch without sequence: nothing to deduplicate against.
            entry.set_epoch(epoch);
            entry.last_timestamp_ms = timestamp_ms;
        }
        entry.on_data_batch(h.is_transactional(), first_offset);
        staging.pending.insert(pid, entry);
        Ok(None)
    }

    pub(crate) fn commit(&mut self, staging: ProducerAppendStaging) {
        for (pid, entry) in staging.pending {
            self.insert(pid, entry);
        }
    }

    /// Rebuilds state from a batch already in the log (no validation: the
    /// leader validated it when it was appended).
    /// `control` is the first record of a control batch (`None` for data
    /// batches). Returns the transaction a marker completed, if any.
    pub(crate) fn replay(
        &mut self,
        h: &RecordBatchHeader,
        control: Option<ControlRecord>,
    ) -> Option<CompletedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        let pid = h.producer_id;
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerStateEntry::new(h.producer_epoch));
        if h.producer_epoch < entry.epoch {
            return None;
        }
        let old = entry.current_txn_first_offset;
        let completed = if h.is_control() {
            match control {
                Some(ControlRecord::EndTxn {
                    commit,
                    coordinator_epoch,
                }) => end_txn(
                    entry,
                    pid,
                    h.producer_epoch,
                    coordinator_epoch,
                    commit,
                    h.base_offset,
                    h.max_timestamp,
                ),
                Some(ControlRecord::Other(_)) | None => return None,
            }
        } else {
            if h.base_sequence >= 0 {
                entry.push(
                    h.producer_epoch,
                    BatchMetadata {
                        first_seq: h.base_sequence,
                        last_seq: h.last_sequence(),
                        first_offset: h.base_offset,
                        last_offset: h.last_offset(),
                        timestamp_ms: h.max_timestamp,
                    },
                );
            } else {
                entry.set_epoch(h.producer_epoch);
                entry.last_timestamp_ms = h.max_timestamp;
            }
            entry.on_data_batch(h.is_transactional(), h.base_offset);
            None
        };
        let new = entry.current_txn_first_offset;
        self.update_ongoing(pid, old, new);
        completed
    }

    /// Removes producers idle for `expiration_ms` (Kafka's producer.id.expiration.ms).
    /// Producers with an open transaction are kept, as in Kafka's `isProducerExpired`.
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms
        });
    }

    /// Drops all state (used when the log is emptied).
    pub(crate) fn clear(&mut self) {
        self.producers.clear();
        self.ongoing.clear();
    }

    /// Drops all state and deletes every snapshot file (Kafka's
    /// `ProducerStateManager.truncateFullyAndStartAt`): the log they describe is gone, and a
    /// snapshot left at or below the new log end would be loaded on the next open.
    pub(crate) fn truncate_fully(&mut self) -> Result<(), LogError> {
        self.clear();
        for offset in self.list_snapshots()? {
            fsutil::remove_if_exists(&offset_file_path(&self.dir, offset, SNAPSHOT_SUFFIX))?;
        }
        Ok(())
    }

    /// `(producer_id, epoch, last_sequence, last_timestamp)` sorted by id.
    pub(crate) fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut v: Vec<_> = self
            .producers
            .iter()
            .map(|(pid, e)| {
                (
                    *pid,
                    e.epoch,
                    e.last_seq().unwrap_or(-1),
                    e.last_timestamp_ms,
                )
            })
            .collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn entry(&self, pid: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&pid)
    }

    fn encode(&self) -> Vec<u8> {
        let mut pids: Vec<_> = self.producers.keys().copied().collect();
        pids.sort_unstable();
        let mut body = Vec::new();
        body.extend_from_slice(&(pids.len() as u32).to_be_bytes());
        for pid in pids {
            let e = &self.producers[&pid];
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
            body.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.timestamp_ms.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode(buf: &[u8]) -> Result<HashMap<i64, ProducerStateEntry>, String> {
        let mut r = Reader { buf, pos: 0 };
        if buf.len() < SNAPSHOT_HEADER_BYTES {
            return Err("snapshot too short".into());
        }
        let version = r.u16()?;
        let entry_fixed_bytes = match version {
            SNAPSHOT_VERSION => ENTRY_FIXED_BYTES,
            SNAPSHOT_VERSION_V1 => ENTRY_FIXED_BYTES_V1,
            _ => return Err(format!("unknown snapshot version {version}")),
        };
        let crc = r.u32()?;
        if crc32c::crc32c(&buf[6..]) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let count = r.u32()? as usize;
        if count > (buf.len() - SNAPSHOT_HEADER_BYTES) / entry_fixed_bytes {
            return Err(format!("snapshot claims {count} producers"));
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.u16()? as i16;
            let last_timestamp_ms = r.i64()?;
            let (current_txn_first_offset, coordinator_epoch) = if version == SNAPSHOT_VERSION_V1 {
                (None, -1)
            } else {
                let first = r.i64()?;
                let coordinator_epoch = r.u32()? as i32;
                (Some(first).filter(|f| *f >= 0), coordinator_epoch)
            };
            let n = r.u8()? as usize;
            if n > MAX_CACHED_BATCHES {
                return Err(format!("producer {pid} has {n} cached batches"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp_ms: r.i64()?,
                });
            }
            producers.insert(
                pid,
                ProducerStateEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                    current_txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        if r.pos != buf.len() {
            return Err("trailing bytes in snapshot".into());
        }
        Ok(producers)
    }

    /// Offsets of the snapshot files in the directory, ascending.
    fn list_snapshots(&self) -> Result<Vec<i64>, LogError> {
        let mut offsets = Vec::new();
        let rd = std::fs::read_dir(&self.dir)
            .map_err(LogError::io(format!("listing {}", self.dir.display())))?;
        for entry in rd {
            let entry = entry.map_err(LogError::io(format!("listing {}", self.dir.display())))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Some((offset, SNAPSHOT_SUFFIX)) = parse_offset_file_name(name) {
                    offsets.push(offset);
                }
            }
        }
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Writes the state as of `offset` (every batch below it applied) and keeps
    /// only the newest `SNAPSHOTS_TO_KEEP` snapshot files, and every one above
    /// `keep_above` (a tiered log keeps the snapshots of segments not yet uploaded,
    /// which go to the tier with them).
    pub(crate) fn take_snapshot(&self, offset: i64, keep_above: i64) -> Result<(), LogError> {
        let name = format!("{offset:020}.{SNAPSHOT_SUFFIX}");
        fsutil::write_atomic(&self.dir, &name, &self.encode())?;
        let offsets = self.list_snapshots()?;
        let excess = offsets.len().saturating_sub(SNAPSHOTS_TO_KEEP);
        for old in offsets[..excess].iter().filter(|o| **o <= keep_above) {
            fsutil::remove_if_exists(&offset_file_path(&self.dir, *old, SNAPSHOT_SUFFIX))?;
        }
        Ok(())
    }

    /// Loads the newest valid snapshot at or below `log_end_offset`, deleting
    /// snapshots above it (they describe truncated data) and corrupt ones.
    /// Returns the snapshot's offset, from which the caller replays the log.
    pub(crate) fn load_latest_snapshot(
        &mut self,
        log_end_offset: i64,
    ) -> Result<Option<i64>, LogError> {
        let offsets = self.list_snapshots()?;
        for offset in offsets.into_iter().rev() {
            let path = offset_file_path(&self.dir, offset, SNAPSHOT_SUFFIX);
            if offset > log_end_offset {
                fsutil::remove_if_exists(&path)?;
                continue;
            }
            let Some(buf) = fsutil::read_small_file(&path, MAX_SNAPSHOT_BYTES)? else {
                continue;
            };
            match Self::decode(&buf) {
                Ok(producers) => {
                    self.producers = producers;
                    self.rebuild_ongoing();
                    return Ok(Some(offset));
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), %why, "deleting corrupt producer snapshot");
                    fsutil::remove_if_exists(&path)?;
                }
            }
        }
        self.clear();
        Ok(None)
    }
}

/// Ends `entry`'s open transaction for a marker at `offset` (Kafka's
/// `appendEndTxnMarker` after its checks): the marker's epoch becomes the
/// producer's, its coordinator epoch is remembered.
fn end_txn(
    entry: &mut ProducerStateEntry,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    offset: i64,
    timestamp_ms: i64,
) -> Option<CompletedTxn> {
    let completed = entry
        .current_txn_first_offset
        .take()
        .map(|first_offset| CompletedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
            aborted: !commit,
        });
    if let Some(c) = &completed {
        assert!(
            c.first_offset < c.last_offset,
            "marker at {offset} must follow its transaction's first batch"
        );
    }
    entry.set_epoch(producer_epoch);
    entry.coordinator_epoch = coordinator_epoch;
    entry.last_timestamp_ms = timestamp_ms;
    completed
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self
            .pos
            .checked_add(N)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated snapshot")?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

const _: () = assert!(BATCH_META_BYTES == 32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::BatchBuilder;

    fn header(pid: i64, epoch: i16, seq: i32, n: usize) -> RecordBatchHeader {
        let bytes = BatchBuilder::new(n).producer(pid, epoch, seq).build();
        RecordBatchHeader::parse(&bytes).expect("parse")
    }

    fn append(
        m: &mut ProducerStateManager,
        h: &RecordBatchHeader,
        offset: i64,
    ) -> Result<Option<BatchMetadata>, LogError> {
        let mut staging = ProducerAppendStaging::default();
        let r = m.check_and_stage(
            &mut staging,
            h,
            offset,
            offset + h.last_offset_delta as i64,
            0,
            AppendOrigin::Client,
        )?;
        m.commit(staging);
        Ok(r)
    }

    #[test]
    fn sequence_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = ProducerStateManager::new(dir.path());
        // Unknown producer: any sequence accepted.
        assert_eq!(append(&mut m, &header(1, 0, 5, 2), 0).ok(), Some(None));
        // In sequence.
        assert_eq!(append(&mut m, &header(1, 0, 7, 1), 2).ok(), Some(None));
        // Duplicate of an older cached batch.
        let dup = append(&mut m, &header(1, 0, 5, 2), 99)
            .expect("dup")
            .expect("is dup");
        assert_eq!((dup.first_offset, dup.last_offset), (0, 1));
        // Gap.
        assert!(matches!(
            append(&mut m, &header(1, 0, 9, 1), 3),
            Err(LogError::OutOfOrderSequence(_))
        ));
        // Old epoch.
        assert!(matches!(
            append(&mut m, &header(1, -1, 8, 1), 3),
            Err(LogError::InvalidProducerEpoch(_))
        ));
        // New epoch must restart at 0.
        assert!(matches!(
            append(&mut m, &header(1, 1, 8, 1), 3),
            Err(LogError::OutOfOrderSequence(_))
        ));
        assert_eq!(append(&mut m, &header(1, 1, 0, 1), 3).ok(), Some(None));
        assert_eq!(m.active_producers(), vec![(1, 1, 0, 0)]);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = ProducerStateManager::new(dir.path());
        append(&mut m, &header(3, 0, i32::MAX - 1, 2), 0).expect("append");
        assert_eq!(m.entry(3).and_then(|e| e.last_seq()), Some(i32::MAX));
        assert_eq!(append(&mut m, &header(3, 0, 0, 1), 2).ok(), Some(None));
    }

    #[test]
    fn only_five_batches_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = ProducerStateManager::new(dir.path());
        for i in 0..7 {
            append(&mut m, &header(1, 0, i, 1), i as i64).expect("append");
        }
        assert_eq!(
            m.entry(1).map(|e| e.batches.len()),
            Some(MAX_CACHED_BATCHES)
        );
        // Sequence 1 fell out of the cache: no longer a duplicate, and out of order.
        assert!(matches!(
            append(&mut m, &header(1, 0, 1, 1), 7),
            Err(LogError::OutOfOrderSequence(_))
        ));
        assert!(append(&mut m, &header(1, 0, 2, 1), 7)
            .expect("dup")
            .is_some());
    }

    #[test]
    fn snapshot_round_trip_and_pruning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = ProducerStateManager::new(dir.path());
        append(&mut m, &header(1, 0, 0, 3), 0).expect("append");
        append(&mut m, &header(2, 4, 10, 1), 3).expect("append");
        for offset in [4, 5, 6] {
            m.take_snapshot(offset, i64::MAX).expect("snapshot");
        }
        assert_eq!(m.list_snapshots().expect("list"), vec![5, 6]);
        let mut loaded = ProducerStateManager::new(dir.path());
        assert_eq!(loaded.load_latest_snapshot(5).expect("load"), Some(5));
        assert_eq!(loaded.active_producers(), m.active_producers());
        assert_eq!(loaded.entry(1), m.entry(1));
        // The snapshot above the log end was deleted.
        assert_eq!(m.list_snapshots().expect("list"), vec![5]);
        // Corrupt snapshot is skipped and deleted.
        let p = offset_file_path(dir.path(), 5, SNAPSHOT_SUFFIX);
        let mut bytes = std::fs::read(&p).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&p, bytes).expect("write");
        assert_eq!(loaded.load_latest_snapshot(10).expect("load"), None);
        assert!(loaded.active_producers().is_empty());
    }

    #[test]
    fn version_1_snapshot_loads_and_v2_keeps_open_transactions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&7i64.to_be_bytes()); // producer id
        body.extend_from_slice(&2i16.to_be_bytes()); // epoch
        body.extend_from_slice(&99i64.to_be_bytes()); // last timestamp
        body.push(1);
        for v in [0i32, 4] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        for v in [10i64, 14, 99] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut v1 = Vec::new();
        v1.extend_from_slice(&SNAPSHOT_VERSION_V1.to_be_bytes());
        v1.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        v1.extend_from_slice(&body);
        std::fs::write(offset_file_path(dir.path(), 15, SNAPSHOT_SUFFIX), &v1).expect("write");
        let mut m = ProducerStateManager::new(dir.path());
        assert_eq!(m.load_latest_snapshot(20).expect("load"), Some(15));
        assert_eq!(m.active_producers(), vec![(7, 2, 4, 99)]);
        assert!(m.open_transactions().is_empty());

        // A transactional batch opens a transaction; v2 snapshots keep it.
        let h = RecordBatchHeader::parse(
            &BatchBuilder::new(1)
                .producer(7, 2, 5)
                .attributes(0x10)
                .build(),
        )
        .expect("parse");
        let mut staging = ProducerAppendStaging::default();
        m.check_and_stage(&mut staging, &h, 15, 15, 100, AppendOrigin::Client)
            .expect("stage");
        m.commit(staging);
        assert_eq!(m.open_transactions(), vec![(7, 2, 15)]);
        m.take_snapshot(16, i64::MAX).expect("snapshot");
        let mut loaded = ProducerStateManager::new(dir.path());
        assert_eq!(loaded.load_latest_snapshot(16).expect("load"), Some(16));
        assert_eq!(loaded.open_transactions(), vec![(7, 2, 15)]);
        assert_eq!(loaded.first_unstable_offset(), Some(15));
        assert_eq!(loaded.entry(7), m.entry(7));
    }
}
