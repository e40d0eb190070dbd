//! Per-topic log configuration (the subset of Kafka topic configs the log uses).

use crate::batch::TimestampType;

/// Kafka topic-level log configuration. Field names follow the Kafka config
/// names with units appended.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this.
    /// Positions in the index are u32, so values above `i32::MAX` are clamped.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when this long has passed since the segment's first append.
    pub segment_ms: i64,
    /// `segment.index.bytes`: maximum size of each index; roll when one is full.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: log bytes between index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`; -1 = unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 = unlimited.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many unflushed records.
    pub flush_messages: u64,
    /// `flush.ms`: fsync when this long has passed since the last flush.
    pub flush_ms: i64,
    /// `max.message.bytes`: maximum size of one record batch (incl. 12-byte log overhead).
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub timestamp_after_max_ms: i64,
    /// `file.delete.delay.ms`. Ignored: segments are deleted immediately, which
    /// is safe because the log is not shared between threads while deleting.
    pub file_delete_delay_ms: i64,
    /// `cleanup.policy` contains `compact`: records need keys and the log
    /// cleaner keeps only the latest record per key.
    pub compact: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction. Strata's
    /// rule: a tombstone is removed once its batch's max timestamp is more
    /// than this long ago (Kafka counts from when its segment was first cleaned).
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: dirty bytes / cleanable bytes needed to clean.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: segments with records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty data older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// `remote.storage.enable` (never on for compacted topics): rolled segments are copied to
    /// the tier by the broker, and local retention deletes only segments already copied.
    /// `retention.ms`/`retention.bytes` then govern the whole log, which the broker applies.
    pub remote_storage_enable: bool,
    /// `local.retention.ms`: how long uploaded segments stay on local disk; -2 = `retention.ms`.
    pub local_retention_ms: i64,
    /// `local.retention.bytes`: local bytes kept of uploaded segments; -2 = `retention.bytes`.
    pub local_retention_bytes: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: SEVEN_DAYS_MS,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: SEVEN_DAYS_MS,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            file_delete_delay_ms: 60_000,
            compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            remote_storage_enable: false,
            local_retention_ms: -2,
            local_retention_bytes: -2,
        }
    }
}

impl LogConfig {
    /// `segment_bytes` clamped so every position in a segment fits the u32
    /// position field of the offset index (Kafka's segment.bytes is an int).
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, i32::MAX as u64)
    }

    /// `local.retention.ms` with -2 resolved to `retention.ms`.
    pub fn effective_local_retention_ms(&self) -> i64 {
        if self.local_retention_ms == -2 {
            self.retention_ms
        } else {
            self.local_retention_ms
        }
    }

    /// `local.retention.bytes` with -2 resolved to `retention.bytes`.
    pub fn effective_local_retention_bytes(&self) -> i64 {
        if self.local_retention_bytes == -2 {
            self.retention_bytes
        } else {
            self.local_retention_bytes
        }
    }
}
