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
//! Transactions are not tracked (no ongoing-transaction / LSO state).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch::{increment_sequence, RecordBatchHeader};
use crate::error::LogError;
use crate::fsutil::{self, offset_file_path, parse_offset_file_name, SNAPSHOT_SUFFIX};

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`).
pub(crate) const MAX_CACHED_BATCHES: usize = 5;
/// Snapshot files kept on disk; older ones are deleted after each snapshot.
pub(crate) const SNAPSHOTS_TO_KEEP: usize = 2;

const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 2 + 4 + 4;
const ENTRY_FIXED_BYTES: usize = 8 + 2 + 8 + 1;
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
}

impl ProducerStateEntry {
    fn new(epoch: i16) -> Self {
        ProducerStateEntry {
            epoch,
            batches: VecDeque::new(),
            last_timestamp_ms: -1,
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
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
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

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq as i64 == last_seq as i64 + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// All producer state of one partition.
pub(crate) struct ProducerStateManager {
    dir: PathBuf,
    producers: HashMap<i64, ProducerStateEntry>,
}

impl ProducerStateManager {
    pub(crate) fn new(dir: &Path) -> Self {
        ProducerStateManager {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
        }
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
    ) -> Result<Option<BatchMetadata>, LogError> {
        debug_assert!(h.producer_id >= 0);
        let pid = h.producer_id;
        let epoch = h.producer_epoch;
        let first_seq = h.base_sequence;
        let last_seq = h.last_sequence();
        let current = staging
            .pending
            .get(&pid)
            .or_else(|| self.producers.get(&pid));
        if let Some(entry) = current {
            if let Some(dup) = entry.find_duplicate(epoch, first_seq, last_seq) {
                return Ok(Some(dup));
            }
            if epoch < entry.epoch {
                return Err(LogError::InvalidProducerEpoch(format!(
                    "producer {pid} epoch {epoch} is older than current epoch {}",
                    entry.epoch
                )));
            }
            if epoch > entry.epoch {
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
        staging.pending.insert(pid, entry);
        Ok(None)
    }

    pub(crate) fn commit(&mut self, staging: ProducerAppendStaging) {
        self.producers.extend(staging.pending);
    }

    /// Rebuilds state from a batch already in the log (no validation: the
    /// leader validated it when it was appended).
    pub(crate) fn replay(&mut self, h: &RecordBatchHeader) {
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerStateEntry::new(h.producer_epoch));
        if h.producer_epoch < entry.epoch {
            return;
        }
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
    }

    /// Removes producers idle for `expiration_ms` (Kafka's producer.id.expiration.ms).
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
    }

    /// Drops all state (used when the log is emptied).
    pub(crate) fn clear(&mut self) {
        self.producers.clear();
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

    #[cfg(test)]
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
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = r.u32()?;
        if crc32c::crc32c(&buf[6..]) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let count = r.u32()? as usize;
        if count > (buf.len() - SNAPSHOT_HEADER_BYTES) / ENTRY_FIXED_BYTES {
            return Err(format!("snapshot claims {count} producers"));
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.u16()? as i16;
            let last_timestamp_ms = r.i64()?;
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
    /// only the newest `SNAPSHOTS_TO_KEEP` snapshot files.
    pub(crate) fn take_snapshot(&self, offset: i64) -> Result<(), LogError> {
        let name = format!("{offset:020}.{SNAPSHOT_SUFFIX}");
        fsutil::write_atomic(&self.dir, &name, &self.encode())?;
        let offsets = self.list_snapshots()?;
        let excess = offsets.len().saturating_sub(SNAPSHOTS_TO_KEEP);
        for old in &offsets[..excess] {
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
                    return Ok(Some(offset));
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), %why, "deleting corrupt producer snapshot");
                    fsutil::remove_if_exists(&path)?;
                }
            }
        }
        self.producers.clear();
        Ok(None)
    }
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
            m.take_snapshot(offset).expect("snapshot");
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
}
