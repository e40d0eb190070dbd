//! strata-log: the partition log of the Strata broker — segments, indexes,
//! record-batch validation, idempotent-producer state, leader epochs,
//! recovery and retention, the high watermark, follower appends and truncation,
//! following Apache Kafka's `UnifiedLog` semantics.
//!
//! Unix-only: reads and writes use positioned I/O (`FileExt`).

mod batch;
mod cleaner;
#[cfg(test)]
mod cleaner_tests;
mod config;
mod error;
mod fsutil;
mod index;
mod leader_epoch;
mod log;
mod producer_state;
mod read_buffers;
mod records;
mod replication;
#[cfg(test)]
mod replication_tests;
mod segment;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
mod tiered;
#[cfg(test)]
mod tiered_tests;
mod txn;
#[cfg(test)]
mod txn_tests;
mod verification;

pub use batch::{check_crc, RecordBatchHeader, TimestampType};
pub use cleaner::{CompactedOutput, CompactionPlan, CompactionStats, OFFSET_MAP_MEMORY_BYTES};
pub use config::LogConfig;
pub use error::{LogError, RecordError, MAX_RECORD_ERRORS};
pub use log::{AppendInfo, Log, LogOffsetSnapshot, ReadResult, DEFAULT_PRODUCER_ID_EXPIRATION_MS};
pub use records::{find_record_by_timestamp, offset_of_max_timestamp, TimestampAndOffset};
pub use tiered::{SegmentForUpload, TierTail};
pub use verification::{VerificationGuard, MAX_VERIFICATIONS, VERIFICATION_MAX_AGE_MS};
