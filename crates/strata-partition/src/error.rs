//! Errors of partition replication.

/// Why the leader refused an event. The `acks` ones map to Kafka's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// A replica id that the partition's assignment does not have.
    #[error("broker {0} is not a replica of this partition")]
    NotAReplica(i32),
    /// A follower fetching beyond the leader's log end (it has a divergent log and must
    /// truncate first, through OffsetForLeaderEpoch), or at a negative offset.
    #[error("replica {replica} fetched at {fetch_offset}, outside the leader's log [0, {log_end_offset}]")]
    FetchOffsetOutOfRange {
        replica: i32,
        fetch_offset: i64,
        log_end_offset: i64,
    },
    #[error("high watermark {high_watermark} outside [0, log end {log_end_offset}]")]
    InvalidOffsets {
        high_watermark: i64,
        log_end_offset: i64,
    },
    /// An ISR from the controller older than the one this leader has.
    #[error("partition epoch {got} is older than {current}")]
    StalePartitionEpoch { got: i32, current: i32 },
    /// NOT_ENOUGH_REPLICAS (19): `acks=all` with the ISR below `min.insync.replicas`.
    #[error("the ISR has {isr} replicas, fewer than min.insync.replicas={min_insync_replicas}")]
    NotEnoughReplicas {
        isr: usize,
        min_insync_replicas: usize,
    },
}
