//! Typed errors of the partition log, each mapped to the Kafka error code a
//! broker must return for it.

/// Most refused records one [`LogError::InvalidRecords`] names. A batch holds at most a few
/// hundred thousand records (`max.message.bytes` over the 7 bytes of the smallest record),
/// and each named one costs its message in the produce response; this covers a full batch of
/// librdkafka's default `batch.num.messages` (10 000). Records refused beyond it are counted
/// but not named: clients fail them as part of a batch with invalid records.
pub const MAX_RECORD_ERRORS: usize = 10_000;

/// One record of a batch refused by produce validation (Kafka's `ProduceResponse.RecordError`,
/// KIP-467): its index in the batch, from 0, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// Index of the record in its batch.
    pub batch_index: i32,
    /// Why it was refused, in Kafka's words.
    pub message: String,
}

impl std::fmt::Display for RecordError {
    /// Kafka's `RecordError.toString`, which the partition's error message quotes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RecordError(batchIndex={}, message='{}')",
            self.batch_index, self.message
        )
    }
}

/// The partition's error message when some records were refused, as Kafka's
/// `LogValidator.processRecordErrors` words it.
fn invalid_records_message(
    invalid_timestamp: bool,
    records: &[RecordError],
    total: usize,
) -> String {
    if invalid_timestamp {
        return "One or more records have been rejected due to invalid timestamp".into();
    }
    let shown: Vec<String> = records.iter().take(3).map(RecordError::to_string).collect();
    format!(
        "One or more records have been rejected due to {total} record errors in total, and only \
         showing the first three errors at most: [{}]",
        shown.join(", ")
    )
}

/// Everything that can go wrong in the partition log.
///
/// Variants that come from a client request (`CorruptRecord` .. `OffsetOutOfRange`)
/// leave the log unchanged; `Io` and `StorageCorruption` mean the log directory
/// may need operator attention (Kafka marks the log dir offline).
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    /// Bad CRC, impossible length fields or a truncated batch in a request.
    #[error("corrupt record: {0}")]
    CorruptRecord(String),
    /// Structurally valid batch that Kafka's LogValidator refuses (count
    /// mismatch, control batch from a client, bad sequence, ...), or, in a produced batch,
    /// records that do not parse (Kafka's `InvalidRecordException` from its record reader).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A compressed batch whose codec cannot inflate its records section, or whose section
    /// inflates past the bound on one batch. Kafka's record reader fails such a batch with a
    /// plain `KafkaException` ("Failed to decompress record stream"), which a produce answers
    /// as UNKNOWN_SERVER_ERROR.
    #[error("{0}")]
    Decompression(String),
    /// A batch with a magic other than 2. Kafka 4 only accepts magic v2 and its
    /// `ProduceRequest.validateRecords` raises `InvalidRecordException` for others.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// One batch is larger than `max.message.bytes`.
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    RecordTooLarge {
        /// Size of the offending batch, including the 12-byte log overhead.
        size_bytes: usize,
        /// The configured limit.
        max_bytes: u32,
    },
    /// Some records of a batch refused one by one (Kafka's `RecordValidationException`): a
    /// keyless record on a compacted topic, a CreateTime timestamp outside
    /// `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms`, a LogAppendTime
    /// batch from a producer. Nothing of the batch is appended; the produce answer names the
    /// records (`record_errors`, Produce v8+) so that clients fail only those.
    #[error("{}", invalid_records_message(*.invalid_timestamp, .records, *.total))]
    InvalidRecords {
        /// A timestamp was refused: INVALID_TIMESTAMP, else INVALID_RECORD (Kafka's rule).
        invalid_timestamp: bool,
        /// The refused records in batch order, at most [`MAX_RECORD_ERRORS`].
        records: Vec<RecordError>,
        /// How many records were refused; more than `records.len()` past the bound.
        total: usize,
    },
    /// Idempotent producer sequence gap or reset.
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// Idempotent producer epoch older than the one the log already saw.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// A batch that does not fit the producer's transaction state: a
    /// non-transactional batch while the producer has a transaction open on
    /// this partition (Kafka's `InvalidTxnStateException`, INVALID_TXN_STATE).
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A transaction marker whose coordinator epoch is older than the one the
    /// producer's last marker carried: a zombie coordinator
    /// (Kafka's TRANSACTION_COORDINATOR_FENCED).
    #[error("transaction coordinator fenced: {0}")]
    TransactionCoordinatorFenced(String),
    /// Fetch / DeleteRecords offset outside `[log_start_offset, log_end_offset]`
    /// (or above the high watermark for DeleteRecords).
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offending offset.
        offset: i64,
        /// Log start offset at the time of the request.
        log_start_offset: i64,
        /// Log end offset at the time of the request.
        log_end_offset: i64,
    },
    /// A read at an offset the log holds only in the tier: at or above the log start offset
    /// but below the first local segment. The broker serves it from object storage; a caller
    /// that cannot answers OFFSET_OUT_OF_RANGE.
    #[error(
        "offset {offset} is below the local log start {local_log_start_offset}: it is in the tier"
    )]
    NotLocal {
        offset: i64,
        local_log_start_offset: i64,
    },
    /// A follower append ([`crate::Log::append_as_follower`]) whose batch starts below the
    /// offset it must start at or above: the log end offset for the first batch, the offset
    /// after the previous batch for the others (Kafka's `UnexpectedAppendOffsetException` and
    /// `OffsetsOutOfOrderException`). Nothing was appended.
    ///
    /// When the first batch straddles the log end (`first_offset < expected <= last_offset`)
    /// of an empty log, the leader's log start offset lies inside that batch (DeleteRecords):
    /// Kafka's fetcher then calls `truncate_fully_and_start_at(first_offset)` and appends again.
    /// Broker-internal: never sent to a client.
    #[error(
        "follower append of batch {first_offset}..={last_offset} does not fit the log: \
         expected a base offset of at least {expected}"
    )]
    UnexpectedAppendOffset {
        /// The lowest base offset the batch could have had.
        expected: i64,
        /// Base offset of the refused batch.
        first_offset: i64,
        /// Last offset of the refused batch.
        last_offset: i64,
    },
    /// An operating-system I/O failure.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Data already on disk is inconsistent (e.g. a batch header in a segment
    /// that was trusted to be clean does not parse).
    #[error("log storage corruption: {0}")]
    StorageCorruption(String),
}

impl LogError {
    /// The Kafka protocol error code for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::CorruptRecord(_) => 2,
            LogError::InvalidRecord(_) => 87,
            LogError::Decompression(_) => -1,
            // Kafka 4: ProduceRequest.validateRecords -> InvalidRecordException.
            LogError::UnsupportedMagic(_) => 87,
            LogError::RecordTooLarge { .. } => 10,
            LogError::InvalidRecords {
                invalid_timestamp: true,
                ..
            } => 32,
            LogError::InvalidRecords { .. } => 87,
            LogError::OutOfOrderSequence(_) => 45,
            LogError::InvalidProducerEpoch(_) => 47,
            LogError::InvalidTxnState(_) => 48,
            LogError::TransactionCoordinatorFenced(_) => 52,
            LogError::OffsetOutOfRange { .. } | LogError::NotLocal { .. } => 1,
            // UNKNOWN_SERVER_ERROR: only a follower's own fetcher meets it.
            LogError::UnexpectedAppendOffset { .. } => -1,
            LogError::Io { .. } => 56,
            LogError::StorageCorruption(_) => 56,
        }
    }

    /// The refused records of [`LogError::InvalidRecords`]; empty for every other error.
    pub fn record_errors(&self) -> &[RecordError] {
        match self {
            LogError::InvalidRecords { records, .. } => records,
            _ => &[],
        }
    }

    /// Helper for `map_err`: wraps an `io::Error` with a context string.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
        let context = context.into();
        move |source| LogError::Io { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_match_kafka() {
        assert_eq!(LogError::CorruptRecord(String::new()).kafka_error_code(), 2);
        assert_eq!(
            LogError::InvalidRecord(String::new()).kafka_error_code(),
            87
        );
        assert_eq!(LogError::UnsupportedMagic(1).kafka_error_code(), 87);
        assert_eq!(
            LogError::Decompression(String::new()).kafka_error_code(),
            -1
        );
        let too_large = LogError::RecordTooLarge {
            size_bytes: 2,
            max_bytes: 1,
        };
        assert_eq!(too_large.kafka_error_code(), 10);
        let refused = |invalid_timestamp| LogError::InvalidRecords {
            invalid_timestamp,
            records: vec![],
            total: 1,
        };
        assert_eq!(refused(true).kafka_error_code(), 32);
        assert_eq!(refused(false).kafka_error_code(), 87);
        assert_eq!(
            LogError::OutOfOrderSequence(String::new()).kafka_error_code(),
            45
        );
        assert_eq!(
            LogError::InvalidProducerEpoch(String::new()).kafka_error_code(),
            47
        );
        assert_eq!(
            LogError::InvalidTxnState(String::new()).kafka_error_code(),
            48
        );
        assert_eq!(
            LogError::TransactionCoordinatorFenced(String::new()).kafka_error_code(),
            52
        );
        let oor = LogError::OffsetOutOfRange {
            offset: 0,
            log_start_offset: 0,
            log_end_offset: 0,
        };
        assert_eq!(oor.kafka_error_code(), 1);
        let io = LogError::io("x")(std::io::Error::other("boom"));
        assert_eq!(io.kafka_error_code(), 56);
    }

    #[test]
    fn invalid_records_read_as_kafka_words_them() {
        let record = |i| RecordError {
            batch_index: i,
            message: format!("no key {i}"),
        };
        let e = LogError::InvalidRecords {
            invalid_timestamp: false,
            records: (0..5).map(record).collect(),
            total: 7,
        };
        assert_eq!(
            e.to_string(),
            "One or more records have been rejected due to 7 record errors in total, and only \
             showing the first three errors at most: [RecordError(batchIndex=0, message='no key \
             0'), RecordError(batchIndex=1, message='no key 1'), RecordError(batchIndex=2, \
             message='no key 2')]"
        );
        assert_eq!(e.record_errors().len(), 5);
        let e = LogError::InvalidRecords {
            invalid_timestamp: true,
            records: vec![record(0)],
            total: 1,
        };
        assert_eq!(
            e.to_string(),
            "One or more records have been rejected due to invalid timestamp"
        );
        assert!(LogError::InvalidRecord("x".into())
            .record_errors()
            .is_empty());
    }
}
