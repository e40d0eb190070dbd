//! Zero-copy view of the Kafka magic-v2 record batch header, plus the
//! LogValidator checks and the in-place header rewrites done on append.
//!
//! Layout (big-endian):
//! ```text
//! 0  baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
//! 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
//! 57 recordsCount i32 | 61 records...
//! ```
//! The CRC-32C covers bytes 21.. (attributes to end), so base offset and
//! partition leader epoch can be rewritten without recomputing it.

use std::ops::ControlFlow;

use crate::config::LogConfig;
use crate::error::{LogError, RecordError, MAX_RECORD_ERRORS};
use crate::producer_state::AppendOrigin;
use crate::records;

/// Size of the fixed v2 batch header.
pub const BATCH_HEADER_SIZE_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: bytes not counted in `batch_length`.
pub const LOG_OVERHEAD_BYTES: usize = 12;

const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// Highest compression codec id Kafka defines (zstd).
const MAX_COMPRESSION_CODEC: u8 = 4;
/// Smallest possible record body: attributes, timestampDelta, offsetDelta,
/// keyLength, valueLength, headerCount, each at least one byte.
pub(crate) const MIN_RECORD_BODY_BYTES: i64 = 6;

/// Kafka's "no timestamp" sentinel.
pub const NO_TIMESTAMP: i64 = -1;

/// Which clock a batch's timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker on append.
    LogAppendTime,
}

/// Kafka record-batch (magic v2) header, parsed without copying from the front of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordBatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batch_length` field; always >= 49 once parsed.
    pub batch_length: i32,
    /// Leader epoch of the broker that appended the batch.
    pub partition_leader_epoch: i32,
    /// Always 2 once parsed.
    pub magic: i8,
    /// CRC-32C of bytes 21.. of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// `last_offset - base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the log-append time).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}
fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl RecordBatchHeader {
    /// Parses the 61-byte header at the front of `buf`. `buf` may hold only the
    /// header (e.g. when walking a segment with positioned reads); the caller
    /// checks that the whole batch is present. Rejects any magic other than 2
    /// (the v0/v1 layouts also keep magic at byte 16) and lengths too small to
    /// hold a v2 header.
    pub fn parse(buf: &[u8]) -> Result<Self, LogError> {
        if buf.len() < BATCH_HEADER_SIZE_BYTES {
            // v0/v1 messages can be shorter than a v2 header; report the magic if we can see it.
            if buf.len() > MAGIC_OFFSET {
                let magic = buf[MAGIC_OFFSET] as i8;
                if magic == 0 || magic == 1 {
                    return Err(LogError::UnsupportedMagic(magic));
                }
            }
            return Err(LogError::CorruptRecord(format!(
                "record batch header needs {BATCH_HEADER_SIZE_BYTES} bytes, got {}",
                buf.len()
            )));
        }
        let batch_length = be_i32(buf, 8);
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(LogError::UnsupportedMagic(magic));
        }
        if (batch_length as i64) < (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(LogError::CorruptRecord(format!(
                "record batch length {batch_length} is smaller than the v2 header"
            )));
        }
        Ok(RecordBatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Whole batch size on disk: 12 bytes of log overhead + `batch_length`.
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length.max(0) as usize
    }

    /// Offset of the last record. Saturates rather than overflowing on garbage input.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// The leader epoch the batch was appended in; `None` for a batch that carries none (-1,
    /// Kafka's `NO_PARTITION_LEADER_EPOCH`, as producers send it).
    pub fn leader_epoch(&self) -> Option<i32> {
        (self.partition_leader_epoch >= 0).then_some(self.partition_leader_epoch)
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Timestamp type from the attributes.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// A record's timestamp: the batch's max timestamp in a LogAppendTime batch, else the base
    /// timestamp plus the record's delta (Kafka's `DefaultRecord.readFrom`, Java arithmetic).
    pub(crate) fn record_timestamp(&self, timestamp_delta: i64) -> i64 {
        match self.timestamp_type() {
            TimestampType::LogAppendTime => self.max_timestamp,
            TimestampType::CreateTime => self.base_timestamp.wrapping_add(timestamp_delta),
        }
    }

    /// Last sequence number of the batch, wrapping past `i32::MAX` to 0 like
    /// Kafka's `DefaultRecordBatch.incrementSequence`.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `seq + increment` with wrap from `i32::MAX` to 0. Java int arithmetic
/// (wrapping), so garbage headers (negative deltas) cannot panic.
pub(crate) fn increment_sequence(seq: i32, increment: i32) -> i32 {
    let limit = i32::MAX.wrapping_sub(increment);
    if seq > limit {
        seq.wrapping_sub(limit).wrapping_sub(1)
    } else {
        seq.wrapping_add(increment)
    }
}

/// CRC-32C over the CRC-protected part of a whole batch.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks that `batch` is exactly one whole batch whose stored CRC matches.
pub fn check_crc(batch: &[u8], header: &RecordBatchHeader) -> Result<(), LogError> {
    debug_assert_eq!(batch.len(), header.size_bytes());
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(LogError::CorruptRecord(format!(
            "record batch at base offset {} has CRC {:#010x}, computed {actual:#010x}",
            header.base_offset, header.crc
        )));
    }
    Ok(())
}

/// Kafka LogValidator checks for a client-produced magic-v2 batch, except the
/// size and CRC checks, which the caller does first (Kafka's order). `batch`
/// is the whole batch and its CRC has been verified. Control batches are
/// refused from every origin: markers are written only by
/// `Log::append_txn_marker`, which keeps the transaction index in step.
/// A coordinator may write producer batches without a sequence (-1).
///
/// Then every record is read and checked as Kafka's `LogValidator.validateRecord` does: a
/// compacted topic refuses records without a key; a CreateTime topic refuses timestamps
/// outside `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` of `now_ms`;
/// a batch a producer marked LogAppendTime is refused unless its records' timestamp passes
/// the CreateTime check. Refused records are answered together ([`LogError::InvalidRecords`]),
/// each with its index; `topic_partition` names the partition in their messages.
///
/// Returns the largest record timestamp (Kafka's `maxBatchTimestamp`, -1 if none), for the
/// caller to store in the header as Kafka does.
///
/// Every batch is read to its last record, compressed ones too, whatever the topic's rules:
/// Kafka's validator iterates the records of every batch it appends, and that is what refuses
/// a batch whose records do not match its count or do not parse (INVALID_RECORD) or whose
/// section does not inflate (UNKNOWN_SERVER_ERROR, Kafka's bare `KafkaException`), and what
/// makes the stored max timestamp the records' own. A batch let through unread would be
/// served to every consumer, which would fail on it at the same offset every time. The cost
/// is the codec's inflation, streamed through a fixed buffer and a reused per-thread context
/// ([`records::walk_records`]).
pub(crate) fn validate_client_batch(
    batch: &[u8],
    header: &RecordBatchHeader,
    config: &LogConfig,
    now_ms: i64,
    origin: AppendOrigin,
    topic_partition: &dyn Fn() -> String,
) -> Result<i64, LogError> {
    if header.records_count <= 0 {
        return Err(LogError::InvalidRecord(format!(
            "record batch has records count {}",
            header.records_count
        )));
    }
    if header.last_offset_delta < 0
        || header.last_offset_delta as i64 + 1 != header.records_count as i64
    {
        return Err(LogError::InvalidRecord(format!(
            "record batch last offset delta {} does not match records count {}",
            header.last_offset_delta, header.records_count
        )));
    }
    if header.is_control() {
        return Err(LogError::InvalidRecord(
            "clients are not allowed to write control records".into(),
        ));
    }
    if header.compression() > MAX_COMPRESSION_CODEC {
        return Err(LogError::InvalidRecord(format!(
            "unknown compression codec {}",
            header.compression()
        )));
    }
    if header.producer_id >= 0
        && header.base_sequence < 0
        && !(origin == AppendOrigin::Coordinator && header.base_sequence == -1)
    {
        return Err(LogError::InvalidRecord(format!(
            "invalid sequence number {} for producer {}",
            header.base_sequence, header.producer_id
        )));
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err(LogError::InvalidRecord(
            "transactional batch without a producer id".into(),
        ));
    }
    let rules = RecordRules::new(header, config, now_ms);
    let mut refused = RefusedRecords::default();
    let mut max_timestamp = NO_TIMESTAMP;
    records::walk_records(batch, header, |index, record| {
        let timestamp = header.record_timestamp(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        if let Some((invalid_timestamp, why)) = rules.check(header, &record, topic_partition) {
            refused.add(index, invalid_timestamp, why);
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| match e {
        // Kafka's record reader throws `InvalidRecordException` for a record that does not
        // parse; CORRUPT_MESSAGE is for a batch whose CRC does not match, checked before.
        LogError::CorruptRecord(why) => LogError::InvalidRecord(why),
        other => other,
    })?;
    refused.into_result()?;
    Ok(max_timestamp)
}

/// The record-level rules of `LogValidator.validateRecord` for one batch on one topic.
struct RecordRules {
    keys_required: bool,
    /// CreateTime topic: the allowed distances of a timestamp from now.
    window: Option<TimestampWindow>,
    /// The producer marked the batch LogAppendTime.
    batch_log_append_time: bool,
}

#[derive(Clone, Copy)]
struct TimestampWindow {
    now_ms: i64,
    before_max_ms: i64,
    after_max_ms: i64,
}

impl TimestampWindow {
    /// Kafka's `recordHasInvalidTimestamp`, in Java's wrapping arithmetic.
    fn refuses(&self, timestamp_ms: i64) -> bool {
        let diff = self.now_ms.wrapping_sub(timestamp_ms);
        diff > self.before_max_ms || diff.wrapping_neg() > self.after_max_ms
    }
}

impl RecordRules {
    fn new(header: &RecordBatchHeader, config: &LogConfig, now_ms: i64) -> Self {
        RecordRules {
            keys_required: config.compact,
            window: (config.timestamp_type == TimestampType::CreateTime).then_some(
                TimestampWindow {
                    now_ms,
                    before_max_ms: config.timestamp_before_max_ms,
                    after_max_ms: config.timestamp_after_max_ms,
                },
            ),
            batch_log_append_time: header.timestamp_type() == TimestampType::LogAppendTime,
        }
    }

    /// Why `record` is refused, if it is: `(is a timestamp error, message)`. Kafka's order:
    /// the key first, then the timestamp; one error per record.
    fn check(
        &self,
        header: &RecordBatchHeader,
        record: &records::RecordSummary,
        topic_partition: &dyn Fn() -> String,
    ) -> Option<(bool, String)> {
        if self.keys_required && record.key_len < 0 {
            return Some((
                false,
                format!(
                    "Compacted topic cannot accept message without key in topic partition {}",
                    topic_partition()
                ),
            ));
        }
        let timestamp = header.record_timestamp(record.timestamp_delta);
        let offset = header
            .base_offset
            .wrapping_add(i64::from(record.offset_delta));
        match self.window {
            Some(w) if timestamp != NO_TIMESTAMP => w.refuses(timestamp).then(|| {
                (
                    true,
                    format!(
                        "Timestamp {timestamp} of message with offset {offset} is out of range. \
                         The timestamp should be within [{}, {}]",
                        w.now_ms.wrapping_sub(w.before_max_ms),
                        w.now_ms.wrapping_add(w.after_max_ms)
                    ),
                )
            }),
            _ if self.batch_log_append_time => Some((
                true,
                format!(
                    "Invalid timestamp type in message DefaultRecord(offset={offset}, \
                     timestamp={timestamp}, key={} bytes, value={} bytes). Producer should not \
                     set timestamp type to LogAppendTime.",
                    record.key_len.max(0),
                    record.value_len.max(0)
                ),
            )),
            _ => None,
        }
    }
}

/// The records of one batch refused so far, named up to [`MAX_RECORD_ERRORS`].
#[derive(Default)]
struct RefusedRecords {
    records: Vec<RecordError>,
    total: usize,
    invalid_timestamp: bool,
}

impl RefusedRecords {
    fn add(&mut self, batch_index: i32, invalid_timestamp: bool, message: String) {
        self.total += 1;
        self.invalid_timestamp |= invalid_timestamp;
        if self.records.len() < MAX_RECORD_ERRORS {
            self.records.push(RecordError {
                batch_index,
                message,
            });
        }
    }

    fn into_result(self) -> Result<(), LogError> {
        if self.total == 0 {
            return Ok(());
        }
        Err(LogError::InvalidRecords {
            invalid_timestamp: self.invalid_timestamp,
            records: self.records,
            total: self.total,
        })
    }
}

/// Structural checks of a batch another broker already validated and stored, before a
/// follower appends it (Kafka's `AppendOrigin.REPLICATION`). The caller has checked the size
/// and the CRC. None of the client rules apply: control batches, any timestamps, missing
/// sequences and keys are the leader's business. What is checked is what this log relies on:
/// offsets that make sense, a known codec, and (uncompressed) records that fill the batch.
/// A batch may hold fewer records than offsets (the log cleaner removes records but keeps
/// each batch's offsets), even none.
pub(crate) fn validate_replicated_batch(
    batch: &[u8],
    header: &RecordBatchHeader,
) -> Result<(), LogError> {
    if header.base_offset < 0 || header.last_offset_delta < 0 {
        return Err(LogError::CorruptRecord(format!(
            "replicated batch has base offset {} and last offset delta {}",
            header.base_offset, header.last_offset_delta
        )));
    }
    if header.records_count < 0 || header.records_count as i64 > header.last_offset_delta as i64 + 1
    {
        return Err(LogError::CorruptRecord(format!(
            "replicated batch at offset {} has {} records for {} offsets",
            header.base_offset,
            header.records_count,
            header.last_offset_delta as i64 + 1
        )));
    }
    if header.compression() > MAX_COMPRESSION_CODEC {
        return Err(LogError::CorruptRecord(format!(
            "replicated batch at offset {} has unknown compression codec {}",
            header.base_offset,
            header.compression()
        )));
    }
    if header.compression() == 0 {
        walk_uncompressed_records(&batch[BATCH_HEADER_SIZE_BYTES..], header.records_count)?;
    }
    Ok(())
}

/// Reads a zigzag varint (at most 5 bytes) from the front of `buf`.
/// Returns the value and the number of bytes consumed.
pub(crate) fn read_varint(buf: &[u8]) -> Result<(i32, usize), LogError> {
    let mut raw: u32 = 0;
    for (i, byte) in buf.iter().take(5).enumerate() {
        raw |= ((byte & 0x7f) as u32) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i32) ^ -((raw & 1) as i32);
            return Ok((value, i + 1));
        }
    }
    Err(LogError::CorruptRecord(
        "malformed or truncated varint".into(),
    ))
}

/// Walks the length prefixes of an uncompressed records section without
/// allocating: the records must fill it exactly and number `expected`.
fn walk_uncompressed_records(records: &[u8], expected: i32) -> Result<(), LogError> {
    let mut pos = 0usize;
    let mut count: i64 = 0;
    while pos < records.len() {
        if count >= expected as i64 {
            return Err(LogError::InvalidRecord(format!(
                "record batch holds more records than its count {expected}"
            )));
        }
        let (len, used) = read_varint(&records[pos..])?;
        pos += used;
        let len = len as i64;
        if len < MIN_RECORD_BODY_BYTES || len > (records.len() - pos) as i64 {
            return Err(LogError::CorruptRecord(format!(
                "record {count} has length {len} with {} bytes left in the batch",
                records.len() - pos
            )));
        }
        pos += len as usize;
        count += 1;
    }
    if count != expected as i64 {
        return Err(LogError::InvalidRecord(format!(
            "record batch declares {expected} records but holds {count}"
        )));
    }
    Ok(())
}

/// Rewrites the base offset (not CRC-protected).
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch (not CRC-protected).
pub(crate) fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the timestamp type bit and, for LogAppendTime, the max timestamp,
/// then recomputes the CRC (both fields are CRC-protected).
///
/// The batch is given in two parts, its `header` (the first
/// [`BATCH_HEADER_SIZE_BYTES`]) and the `records` after it, so that an append
/// can patch a copy of the header and write the records straight from the
/// request buffer instead of copying the whole batch.
pub(crate) fn set_timestamp(
    header: &mut [u8; BATCH_HEADER_SIZE_BYTES],
    records: &[u8],
    timestamp_type: TimestampType,
    max_timestamp: i64,
) {
    let mut attributes = be_i16(header, ATTRIBUTES_OFFSET);
    match timestamp_type {
        TimestampType::LogAppendTime => attributes |= TIMESTAMP_TYPE_BIT,
        TimestampType::CreateTime => attributes &= !TIMESTAMP_TYPE_BIT,
    }
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES_OFFSET..]), records);
    header[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{edited, put_varint, timed_batch, BatchBuilder};

    /// [`validate_client_batch`] of a client's `batch` on partition `t-0`.
    fn validate(batch: &[u8], config: &LogConfig, now_ms: i64) -> Result<i64, LogError> {
        let h = RecordBatchHeader::parse(batch).expect("parse");
        check_crc(batch, &h).expect("crc");
        validate_client_batch(batch, &h, config, now_ms, AppendOrigin::Client, &|| {
            "t-0".into()
        })
    }

    /// The refused records' `(index, message)` and whether the error is INVALID_TIMESTAMP.
    fn refused(result: Result<i64, LogError>) -> (bool, Vec<(i32, String)>, usize) {
        match result {
            Err(LogError::InvalidRecords {
                invalid_timestamp,
                records,
                total,
            }) => (
                invalid_timestamp,
                records
                    .into_iter()
                    .map(|r| (r.batch_index, r.message))
                    .collect(),
                total,
            ),
            other => panic!("expected refused records, got {other:?}"),
        }
    }

    const NOW: i64 = 1_000_000;
    const CODECS: [u8; 5] = [0, 1, 2, 3, 4];

    fn window(before_max_ms: i64, after_max_ms: i64) -> LogConfig {
        LogConfig {
            timestamp_before_max_ms: before_max_ms,
            timestamp_after_max_ms: after_max_ms,
            ..LogConfig::default()
        }
    }

    #[test]
    fn keyless_records_on_a_compacted_topic_are_named() {
        let compact = LogConfig {
            compact: true,
            ..LogConfig::default()
        };
        let no_key = "Compacted topic cannot accept message without key in topic partition t-0";
        for codec in CODECS {
            let batch = timed_batch(
                &[(Some("a"), NOW), (None, NOW), (Some("c"), NOW), (None, NOW)],
                codec,
            );
            let (invalid_timestamp, records, total) = refused(validate(&batch, &compact, NOW));
            assert!(!invalid_timestamp, "codec {codec}");
            assert_eq!(
                records,
                vec![(1, no_key.into()), (3, no_key.into())],
                "codec {codec}"
            );
            assert_eq!(total, 2);
            let keyed = timed_batch(&[(Some("a"), NOW), (Some("b"), NOW)], codec);
            assert_eq!(validate(&keyed, &compact, NOW).expect("keys"), NOW);
            // Keys are not required elsewhere.
            assert!(validate(&batch, &LogConfig::default(), NOW).is_ok());
        }
    }

    #[test]
    fn every_record_timestamp_is_checked() {
        let cfg = window(10_000, 1_000);
        for codec in CODECS {
            // The batch's base and max timestamps are inside the window; records 1 and 3 are
            // not, and record 4 has no timestamp (never refused).
            let batch = timed_batch(
                &[
                    (None, NOW),
                    (None, NOW - 20_000),
                    (None, NOW + 500),
                    (None, NOW + 2_000),
                    (None, -1),
                    (None, NOW - 10_000),
                ],
                codec,
            );
            let batch = edited(batch, |b| b[35..43].copy_from_slice(&NOW.to_be_bytes()));
            let (invalid_timestamp, records, total) = refused(validate(&batch, &cfg, NOW));
            assert!(invalid_timestamp, "codec {codec}");
            assert_eq!(total, 2);
            assert_eq!(
                records,
                vec![
                    (
                        1,
                        "Timestamp 980000 of message with offset 1 is out of range. The \
                         timestamp should be within [990000, 1001000]"
                            .into()
                    ),
                    (
                        3,
                        "Timestamp 1002000 of message with offset 3 is out of range. The \
                         timestamp should be within [990000, 1001000]"
                            .into()
                    ),
                ],
                "codec {codec}"
            );
        }
    }

    #[test]
    fn timestamps_at_the_window_edges_pass_and_the_defaults_refuse_only_the_future() {
        let batch = timed_batch(&[(None, NOW - 10_000), (None, NOW + 1_000)], 0);
        assert_eq!(
            validate(&batch, &window(10_000, 1_000), NOW).expect("edges"),
            NOW + 1_000
        );
        // Kafka 4's defaults: any past, at most an hour ahead.
        let cfg = LogConfig::default();
        let old = timed_batch(&[(None, 0), (None, 1)], 4);
        assert!(validate(&old, &cfg, NOW).is_ok());
        let future = timed_batch(&[(None, NOW), (None, NOW + 3_600_001)], 4);
        let (_, records, _) = refused(validate(&future, &cfg, NOW));
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_record_gets_one_error_and_a_timestamp_error_makes_the_batch_invalid_timestamp() {
        let cfg = LogConfig {
            compact: true,
            ..window(10_000, 1_000)
        };
        // Record 0: no key and too old: the key error only. Record 1: too old.
        let batch = timed_batch(&[(None, NOW - 20_000), (Some("k"), NOW - 20_000)], 3);
        let (invalid_timestamp, records, total) = refused(validate(&batch, &cfg, NOW));
        assert!(invalid_timestamp);
        assert_eq!(total, 2);
        assert!(records[0].1.starts_with("Compacted topic cannot accept"));
        assert!(records[1].1.starts_with("Timestamp 980000 of message"));
    }

    #[test]
    fn a_producer_may_not_send_log_append_time() {
        let lat = |b: &mut Vec<u8>| b[22] |= 0x08;
        let batch = edited(timed_batch(&[(Some("k"), NOW), (None, NOW)], 0), lat);
        let log_append_time = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        };
        let (invalid_timestamp, records, total) = refused(validate(&batch, &log_append_time, NOW));
        assert!(invalid_timestamp);
        assert_eq!(total, 2);
        assert_eq!(
            records[1],
            (
                1,
                "Invalid timestamp type in message DefaultRecord(offset=1, timestamp=1000000, \
                 key=0 bytes, value=3 bytes). Producer should not set timestamp type to \
                 LogAppendTime."
                    .into()
            )
        );
        // On a CreateTime topic the records take the batch's timestamp, which is checked.
        assert_eq!(
            validate(&batch, &LogConfig::default(), NOW).expect("ok"),
            NOW
        );
        let no_timestamp = edited(batch, |b| b[35..43].copy_from_slice(&(-1i64).to_be_bytes()));
        let (invalid_timestamp, _, total) =
            refused(validate(&no_timestamp, &LogConfig::default(), NOW));
        assert!(invalid_timestamp);
        assert_eq!(total, 2);
    }

    #[test]
    fn every_compressed_batch_is_read_whatever_the_rules() {
        // Topics where no rule can refuse a record: Kafka reads their batches all the same.
        let unbounded = window(i64::MAX, i64::MAX);
        let log_append_time = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..unbounded.clone()
        };
        for cfg in [&unbounded, &log_append_time, &LogConfig::default()] {
            for codec in 1..=4u8 {
                // A body its codec cannot inflate: UNKNOWN_SERVER_ERROR, as Kafka answers.
                let garbage = edited(timed_batch(&[(None, NOW)], codec), |b| {
                    let len = b.len();
                    b[61..len].fill(0xAB);
                });
                let e = validate(&garbage, cfg, NOW).expect_err("garbage");
                assert!(
                    matches!(e, LogError::Decompression(_)),
                    "codec {codec}: {e:?}"
                );
                assert_eq!(e.kafka_error_code(), -1);
                // A count that does not match the records: INVALID_RECORD.
                let batch = timed_batch(&[(None, NOW), (None, NOW)], codec);
                for count in [1i32, 3] {
                    let wrong_count = edited(batch.clone(), |b| {
                        b[57..61].copy_from_slice(&count.to_be_bytes());
                        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
                    });
                    let e = validate(&wrong_count, cfg, NOW).expect_err("count");
                    assert!(
                        matches!(e, LogError::InvalidRecord(_)),
                        "codec {codec}, count {count}: {e:?}"
                    );
                }
                // Records that do not parse: INVALID_RECORD too (Kafka's record reader).
                let mut bad_record = Vec::new();
                put_varint(&mut bad_record, 40); // longer than what follows
                bad_record.extend_from_slice(&[0, 0, 0, 1]);
                let unparsable = edited(batch.clone(), |b| {
                    b.truncate(BATCH_HEADER_SIZE_BYTES);
                    b.extend_from_slice(&records::compress(codec, &bad_record).expect("compress"));
                    b[57..61].copy_from_slice(&1i32.to_be_bytes());
                    b[23..27].copy_from_slice(&0i32.to_be_bytes());
                    let len = (b.len() - LOG_OVERHEAD_BYTES) as i32;
                    b[8..12].copy_from_slice(&len.to_be_bytes());
                });
                let e = validate(&unparsable, cfg, NOW).expect_err("unparsable");
                assert!(
                    matches!(e, LogError::InvalidRecord(_)),
                    "codec {codec}: {e:?}"
                );
                assert_eq!(validate(&batch, cfg, NOW).expect("valid"), NOW);
            }
        }
    }

    #[test]
    fn the_records_max_timestamp_is_returned_whatever_the_header_says() {
        for codec in CODECS {
            let batch = timed_batch(&[(None, NOW - 7), (None, NOW - 3), (None, NOW - 9)], codec);
            let lying = edited(batch, |b| {
                b[35..43].copy_from_slice(&(NOW - 100).to_be_bytes())
            });
            assert_eq!(
                validate(&lying, &LogConfig::default(), NOW).expect("valid"),
                NOW - 3,
                "codec {codec}"
            );
        }
    }

    #[test]
    fn refused_records_are_named_up_to_the_bound() {
        let n = MAX_RECORD_ERRORS + 5;
        let records: Vec<(Option<&str>, i64)> = vec![(None, NOW); n];
        let batch = timed_batch(&records, 0);
        let compact = LogConfig {
            compact: true,
            ..LogConfig::default()
        };
        let (_, named, total) = refused(validate(&batch, &compact, NOW));
        assert_eq!(total, n);
        assert_eq!(named.len(), MAX_RECORD_ERRORS);
        assert_eq!(
            named.last().map(|r| r.0),
            Some(MAX_RECORD_ERRORS as i32 - 1)
        );
    }

    #[test]
    fn parse_roundtrip_of_builder() {
        let bytes = BatchBuilder::new(3)
            .producer(7, 2, 10)
            .timestamp(1000)
            .build();
        let h = RecordBatchHeader::parse(&bytes).expect("parse");
        assert_eq!(h.size_bytes(), bytes.len());
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.producer_epoch, 2);
        assert_eq!(h.base_sequence, 10);
        assert_eq!(h.last_sequence(), 12);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1002);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_control() && !h.is_transactional());
        assert_eq!(h.compression(), 0);
        check_crc(&bytes, &h).expect("crc");
        let max = validate(&bytes, &LogConfig::default(), 1000).expect("valid");
        assert_eq!(max, 1002);
    }

    #[test]
    fn varint_decoding() {
        assert_eq!(read_varint(&[0x00]).ok(), Some((0, 1)));
        assert_eq!(read_varint(&[0x01]).ok(), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]).ok(), Some((1, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]).ok(), Some((150, 2)));
        assert!(read_varint(&[0x80, 0x80]).is_err());
        assert!(read_varint(&[0xff; 6]).is_err());
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
    }

    #[test]
    fn short_and_old_magic_rejected() {
        assert!(matches!(
            RecordBatchHeader::parse(&[0u8; 10]),
            Err(LogError::CorruptRecord(_))
        ));
        let mut bytes = BatchBuilder::new(1).build();
        bytes[16] = 1;
        assert!(matches!(
            RecordBatchHeader::parse(&bytes),
            Err(LogError::UnsupportedMagic(1))
        ));
        let mut bytes = BatchBuilder::new(1).build();
        bytes[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            RecordBatchHeader::parse(&bytes),
            Err(LogError::CorruptRecord(_))
        ));
    }

    #[test]
    fn log_append_time_rewrite_keeps_crc_valid() {
        let mut bytes = BatchBuilder::new(2).timestamp(5).build();
        let (header, records) = bytes.split_at_mut(BATCH_HEADER_SIZE_BYTES);
        let header: &mut [u8; BATCH_HEADER_SIZE_BYTES] = header.try_into().expect("61 bytes");
        set_timestamp(header, records, TimestampType::LogAppendTime, 99);
        set_base_offset(&mut bytes, 1234);
        set_partition_leader_epoch(&mut bytes, 7);
        let h = RecordBatchHeader::parse(&bytes).expect("parse");
        check_crc(&bytes, &h).expect("crc still valid");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 99);
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 7);
    }

    #[test]
    fn uncompressed_record_walk_detects_mismatch() {
        let cfg = LogConfig::default();
        // Declared count 3 but only two records present (CRC recomputed so only the walk can catch it).
        let bytes = BatchBuilder::new(2).override_count(3).build();
        let h = RecordBatchHeader::parse(&bytes).expect("parse");
        check_crc(&bytes, &h).expect("crc");
        assert!(matches!(
            validate(&bytes, &cfg, 0),
            Err(LogError::InvalidRecord(_))
        ));
        // Trailing bytes after the declared records.
        let bytes = BatchBuilder::new(2).trailing_garbage(3).build();
        assert!(matches!(
            validate(&bytes, &cfg, 0),
            Err(LogError::InvalidRecord(_))
        ));
        // A record length running past the end of the batch.
        let bytes = edited(BatchBuilder::new(2).build(), |b| {
            b[61] = 0x7e; // zigzag 63: longer than the records section
        });
        // INVALID_RECORD, as Kafka's record reader answers; CORRUPT_MESSAGE is the CRC's.
        assert!(matches!(
            validate(&bytes, &cfg, 0),
            Err(LogError::InvalidRecord(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(h) = RecordBatchHeader::parse(&bytes) {
                let _ = (h.size_bytes(), h.last_offset(), h.last_sequence(), h.compression(), h.timestamp_type());
            }
        }
    }
}
