//! Transaction markers and the aborted-transaction index (Kafka's
//! `EndTransactionMarker`, `ControlRecordType`, `AbortedTxn` and
//! `TransactionIndex`).
//!
//! Markers are control batches written only by the log itself
//! ([`crate::Log::append_txn_marker`]); clients can never write them. They are
//! never compressed, so their type can be read from the first bytes of the
//! records section without inflating or allocating.
//!
//! # Aborted-transaction index
//!
//! Kafka keeps one `.txnindex` per segment. Strata keeps one per-log file,
//! [`TXN_INDEX_FILE`], because the entries a fetch needs are few and the file
//! is small: it is an append-only sequence of [`ENTRY_BYTES`]-byte entries,
//! each Kafka's 34-byte `AbortedTxn` (`version i16 = 0, producer_id i64,
//! first_offset i64, last_offset i64, last_stable_offset i64`) followed by a
//! CRC-32C of those 34 bytes, in marker (= `last_offset`) order.
//!
//! Durability rule: the file is fsynced before every producer-state snapshot
//! (see [`TxnIndex::sync`]), so it holds every abort whose marker lies below
//! the offset of any snapshot on disk. On open, the producer state is loaded
//! from a snapshot at offset `S` and the log is replayed from `S`; the index
//! therefore keeps only its entries with `last_offset < S` and the replay
//! re-derives the rest from the markers in the log. A torn or corrupt tail
//! (a crash while appending) is cut off; it can only hold entries at or after
//! `S`, which the replay rebuilds. Trimming below the log start rewrites the
//! file atomically.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::batch::{self, TimestampType, BATCH_HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use crate::error::LogError;
use crate::fsutil;

/// Name of the per-log aborted-transaction index file.
pub(crate) const TXN_INDEX_FILE: &str = "strata-txn-index";
/// Kafka's `AbortedTxn` size including its version field.
const KAFKA_ENTRY_BYTES: usize = 34;
/// One on-disk entry: Kafka's layout plus a CRC-32C.
pub(crate) const ENTRY_BYTES: usize = KAFKA_ENTRY_BYTES + 4;
const ENTRY_VERSION: i16 = 0;
/// Refuse to load an index larger than this (about 7 million entries)
/// instead of allocating for it; such a file is corrupt.
const MAX_TXN_INDEX_BYTES: u64 = 256 << 20;

/// Attributes of a marker batch: transactional | control, no compression.
const MARKER_ATTRIBUTES: i16 = 0x10 | 0x20;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// Control record key `[i16 version][i16 type]` and marker value
/// `[i16 version][i32 coordinator_epoch]` (Kafka's `EndTransactionMarker` v0).
const CONTROL_KEY_BYTES: usize = 4;
const MARKER_VALUE_BYTES: usize = 6;
/// Enough of a control batch's records section to hold the first record's
/// length, attributes, timestamp delta (varlong), offset delta, key and value.
pub(crate) const CONTROL_PREFIX_BYTES: usize =
    5 + 1 + 10 + 5 + 5 + CONTROL_KEY_BYTES + 5 + MARKER_VALUE_BYTES;

/// Kafka's `ControlRecordType` as far as the log cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlRecord {
    /// An end-transaction marker: `commit` false = ABORT (type 0), true = COMMIT (type 1).
    EndTxn {
        commit: bool,
        coordinator_epoch: i32,
    },
    /// Any other control type (e.g. KRaft's LEADER_CHANGE); ignored by
    /// producer state, as Kafka ignores control types it does not handle.
    Other(i16),
}

/// One aborted transaction (Kafka's `AbortedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortedTxn {
    pub(crate) producer_id: i64,
    pub(crate) first_offset: i64,
    /// Offset of the ABORT marker.
    pub(crate) last_offset: i64,
    /// LSO right after the abort (kept for Kafka format fidelity).
    pub(crate) last_stable_offset: i64,
}

impl AbortedTxn {
    pub(crate) fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        let crc = crc32c::crc32c(&out[..KAFKA_ENTRY_BYTES]);
        out[KAFKA_ENTRY_BYTES..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<Self> {
        let buf = buf.get(..ENTRY_BYTES)?;
        let crc = u32::from_be_bytes(buf[KAFKA_ENTRY_BYTES..].try_into().ok()?);
        if crc32c::crc32c(&buf[..KAFKA_ENTRY_BYTES]) != crc
            || i16::from_be_bytes([buf[0], buf[1]]) != ENTRY_VERSION
        {
            return None;
        }
        let i64_at = |at: usize| buf[at..at + 8].try_into().ok().map(i64::from_be_bytes);
        let e = AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        };
        (e.producer_id >= 0 && e.first_offset >= 0 && e.first_offset <= e.last_offset).then_some(e)
    }
}

/// The aborted-transaction index of one log: all entries in memory (they are
/// what fetches answer from), mirrored by the append-only file.
pub(crate) struct TxnIndex {
    path: PathBuf,
    dir: PathBuf,
    /// Ascending `last_offset` (marker order).
    entries: Vec<AbortedTxn>,
    file: Option<File>,
    /// Appended since the last fsync.
    unsynced: bool,
    /// The file may not match `entries` (a failed append): rewrite it whole.
    needs_rewrite: bool,
}

impl TxnIndex {
    /// An index with no entries; nothing is read until [`TxnIndex::load`].
    pub(crate) fn new(dir: &Path) -> Self {
        TxnIndex {
            path: dir.join(TXN_INDEX_FILE),
            dir: dir.to_path_buf(),
            entries: Vec::new(),
            file: None,
            unsynced: false,
            needs_rewrite: false,
        }
    }

    /// Loads the entries whose marker lies below `keep_below` (the offset the
    /// caller replays the log from) and rewrites the file to hold exactly
    /// those. A torn or corrupt entry ends the file (see the module docs).
    pub(crate) fn load(&mut self, keep_below: i64) -> Result<(), LogError> {
        self.file = None;
        self.entries.clear();
        let buf = fsutil::read_small_file(&self.path, MAX_TXN_INDEX_BYTES)?.unwrap_or_default();
        let mut pos = 0;
        while pos < buf.len() {
            let next = AbortedTxn::decode(&buf[pos..]).filter(|e| {
                self.entries
                    .last()
                    .is_none_or(|prev| e.last_offset > prev.last_offset)
            });
            let Some(e) = next else {
                tracing::warn!(path = %self.path.display(), position = pos, len = buf.len(), "cutting torn or corrupt tail of the transaction index");
                break;
            };
            self.entries.push(e);
            pos += ENTRY_BYTES;
        }
        let valid = self.entries.len();
        self.entries.retain(|e| e.last_offset < keep_below);
        if self.entries.len() != valid || pos != buf.len() {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Entries in marker order.
    pub(crate) fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Records an abort. The entry is in memory at once; the file write is
    /// not fsynced here (see [`TxnIndex::sync`]).
    pub(crate) fn append(&mut self, entry: AbortedTxn) -> Result<(), LogError> {
        if let Some(prev) = self.entries.last() {
            assert!(
                entry.last_offset > prev.last_offset,
                "aborted transactions must be appended in marker order ({} after {})",
                entry.last_offset,
                prev.last_offset
            );
        }
        assert!(entry.first_offset <= entry.last_offset);
        self.entries.push(entry);
        self.unsynced = true;
        if self.needs_rewrite {
            return self.rewrite();
        }
        let result = self.append_to_file(&entry);
        if result.is_err() {
            // The file may now end in a partial entry: rewrite it whole next time.
            self.file = None;
            self.needs_rewrite = true;
        }
        result
    }

    fn append_to_file(&mut self, entry: &AbortedTxn) -> Result<(), LogError> {
        let ctx = || format!("appending to {}", self.path.display());
        if self.file.is_none() {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .map_err(LogError::io(ctx()))?;
            self.file = Some(f);
        }
        match self.file.as_mut() {
            Some(f) => f.write_all(&entry.encode()).map_err(LogError::io(ctx())),
            None => unreachable!("opened above"),
        }
    }

    /// Makes every entry durable. Called before each producer-state snapshot.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if self.needs_rewrite {
            return self.rewrite();
        }
        if !self.unsynced {
            return Ok(());
        }
        if let Some(f) = &self.file {
            f.sync_data()
                .map_err(LogError::io(format!("syncing {}", self.path.display())))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Drops entries wholly below `log_start_offset` (their marker is below
    /// it, so no fetch can need them). Rewrites the file only if any went.
    pub(crate) fn trim_below(&mut self, log_start_offset: i64) -> Result<(), LogError> {
        let n = self
            .entries
            .partition_point(|e| e.last_offset < log_start_offset);
        if n == 0 {
            return Ok(());
        }
        self.entries.drain(..n);
        self.rewrite()
    }

    /// Drops everything (the log was emptied).
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.entries.clear();
        self.file = None;
        self.needs_rewrite = false;
        self.unsynced = false;
        fsutil::remove_if_exists(&self.path)
    }

    /// Replaces the file atomically with the in-memory entries.
    fn rewrite(&mut self) -> Result<(), LogError> {
        self.file = None;
        self.needs_rewrite = true;
        let mut buf = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for e in &self.entries {
            buf.extend_from_slice(&e.encode());
        }
        fsutil::write_atomic(&self.dir, TXN_INDEX_FILE, &buf)?;
        self.needs_rewrite = false;
        self.unsynced = false;
        Ok(())
    }

    /// Aborted transactions with `last_offset >= fetch_offset` and
    /// `first_offset < upper_bound`, as `(producer_id, first_offset)` in
    /// first-offset order (Kafka's `collectAbortedTransactions`; consumers
    /// need them sorted by first offset).
    pub(crate) fn overlapping(&self, fetch_offset: i64, upper_bound: i64) -> Vec<(i64, i64)> {
        let from = self
            .entries
            .partition_point(|e| e.last_offset < fetch_offset);
        let mut out: Vec<(i64, i64)> = self.entries[from..]
            .iter()
            .filter(|e| e.first_offset < upper_bound)
            .map(|e| (e.producer_id, e.first_offset))
            .collect();
        out.sort_unstable_by_key(|(pid, first)| (*first, *pid));
        out
    }
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds a whole marker batch (base offset 0, to be set on append): one
/// control record, key `[0][type]`, value `[0][coordinator_epoch]`, base
/// sequence -1, both timestamps `now_ms`.
pub(crate) fn build_marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    now_ms: i64,
    timestamp_type: TimestampType,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    body.push(0u8); // record attributes
    put_varint(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_varint(&mut body, CONTROL_KEY_BYTES as i64);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&i16::from(commit).to_be_bytes());
    put_varint(&mut body, MARKER_VALUE_BYTES as i64);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varint(&mut body, 0); // no headers
    let mut records = Vec::with_capacity(body.len() + 1);
    put_varint(&mut records, body.len() as i64);
    records.extend_from_slice(&body);

    let mut attributes = MARKER_ATTRIBUTES;
    if timestamp_type == TimestampType::LogAppendTime {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE_BYTES + records.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let batch_length = (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    out.extend_from_slice(&now_ms.to_be_bytes()); // base timestamp
    out.extend_from_slice(&now_ms.to_be_bytes()); // max timestamp
    out.extend_from_slice(&producer_id.to_be_bytes());
    out.extend_from_slice(&producer_epoch.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&1i32.to_be_bytes()); // records count
    out.extend_from_slice(&records);
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Skips a varlong (at most 10 bytes); returns the bytes used.
fn skip_varlong(buf: &[u8]) -> Result<usize, LogError> {
    for (i, b) in buf.iter().take(10).enumerate() {
        if b & 0x80 == 0 {
            return Ok(i + 1);
        }
    }
    Err(LogError::CorruptRecord(
        "malformed or truncated varlong".into(),
    ))
}

/// Reads the first control record of an uncompressed control batch from
/// `prefix`, the first bytes (up to [`CONTROL_PREFIX_BYTES`]) of its records
/// section. No allocation.
pub(crate) fn parse_control_record(prefix: &[u8]) -> Result<ControlRecord, LogError> {
    let corrupt = |why: &str| LogError::CorruptRecord(format!("control record: {why}"));
    let mut pos = 0usize;
    let rest = |pos: usize| prefix.get(pos..).unwrap_or_default();
    let (_len, used) = batch::read_varint(rest(pos))?;
    pos += used;
    pos += 1; // record attributes
    pos += skip_varlong(rest(pos))?;
    let (_offset_delta, used) = batch::read_varint(rest(pos))?;
    pos += used;
    let (key_len, used) = batch::read_varint(rest(pos))?;
    pos += used;
    if key_len < CONTROL_KEY_BYTES as i32 {
        return Err(corrupt("key shorter than 4 bytes"));
    }
    let key = prefix
        .get(pos..pos + CONTROL_KEY_BYTES)
        .ok_or_else(|| corrupt("truncated key"))?;
    let version = i16::from_be_bytes([key[0], key[1]]);
    let kind = i16::from_be_bytes([key[2], key[3]]);
    if version != 0 {
        // Kafka's ControlRecordType.parseTypeId accepts higher versions with a warning.
        tracing::debug!(version, "control record key version above 0");
    }
    if kind != 0 && kind != 1 {
        return Ok(ControlRecord::Other(kind));
    }
    pos += key_len as usize;
    let (value_len, used) = batch::read_varint(rest(pos))?;
    pos += used;
    if value_len < MARKER_VALUE_BYTES as i32 {
        return Err(corrupt("end-transaction marker value shorter than 6 bytes"));
    }
    let value = prefix
        .get(pos..pos + MARKER_VALUE_BYTES)
        .ok_or_else(|| corrupt("truncated end-transaction marker value"))?;
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Ok(ControlRecord::EndTxn {
        commit: kind == 1,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RecordBatchHeader;

    #[test]
    fn marker_batch_round_trip() {
        for commit in [false, true] {
            let b = build_marker_batch(7, 3, commit, 42, 1_000, TimestampType::CreateTime);
            let h = RecordBatchHeader::parse(&b).expect("parse");
            assert_eq!(h.size_bytes(), b.len());
            batch::check_crc(&b, &h).expect("crc");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 3, -1)
            );
            assert_eq!((h.records_count, h.last_offset_delta), (1, 0));
            assert_eq!((h.base_timestamp, h.max_timestamp), (1_000, 1_000));
            let rec = parse_control_record(&b[BATCH_HEADER_SIZE_BYTES..]).expect("control");
            assert_eq!(
                rec,
                ControlRecord::EndTxn {
                    commit,
                    coordinator_epoch: 42
                }
            );
        }
        let b = build_marker_batch(1, 0, true, 0, 5, TimestampType::LogAppendTime);
        let h = RecordBatchHeader::parse(&b).expect("parse");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    }

    #[test]
    fn control_record_parse_rejects_garbage() {
        assert!(parse_control_record(&[]).is_err());
        assert!(parse_control_record(&[0x80; 40]).is_err());
        let b = build_marker_batch(7, 3, true, 42, 1_000, TimestampType::CreateTime);
        let section = &b[BATCH_HEADER_SIZE_BYTES..];
        // Every prefix that ends before the marker value's last byte fails;
        // the headers-count byte after the value is not needed.
        for cut in 0..section.len() - 1 {
            assert!(parse_control_record(&section[..cut]).is_err(), "cut {cut}");
        }
        assert!(parse_control_record(&section[..section.len() - 1]).is_ok());
    }

    #[test]
    fn index_file_round_trip_torn_tail_and_trim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = TxnIndex::new(dir.path());
        for (i, last) in [5i64, 9, 20].iter().enumerate() {
            idx.append(AbortedTxn {
                producer_id: i as i64,
                first_offset: last - 3,
                last_offset: *last,
                last_stable_offset: last + 1,
            })
            .expect("append");
        }
        idx.sync().expect("sync");
        assert_eq!(idx.overlapping(0, 100), vec![(0, 2), (1, 6), (2, 17)]);
        assert_eq!(idx.overlapping(6, 7), vec![(1, 6)]);
        assert_eq!(idx.overlapping(10, 17), vec![]);
        // Torn tail: half an entry.
        let path = dir.path().join(TXN_INDEX_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).expect("write");
        let mut loaded = TxnIndex::new(dir.path());
        loaded.load(i64::MAX).expect("load");
        assert_eq!(loaded.entries(), idx.entries());
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            3 * ENTRY_BYTES as u64
        );
        // Entries at or above the replay offset are dropped.
        loaded.load(20).expect("load");
        assert_eq!(loaded.entries().len(), 2);
        loaded.trim_below(6).expect("trim");
        assert_eq!(loaded.entries().len(), 1);
        let mut again = TxnIndex::new(dir.path());
        again.load(i64::MAX).expect("load");
        assert_eq!(again.entries(), loaded.entries());
        // A corrupt middle entry ends the index there.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[3] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        again.load(i64::MAX).expect("load");
        assert!(again.entries().is_empty());
    }
}
