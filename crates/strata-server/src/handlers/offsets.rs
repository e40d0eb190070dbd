//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords: offset queries and log-start moves.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use strata_log::TimestampAndOffset;

use super::partition_walk::{PartitionWalk, Role};
use super::{code, log_error};
use crate::broker::Broker;
use crate::remote_log::TierLookupError;
use crate::replica_manager::Partition;
use crate::session::{Operation, RequestContext};

/// ListOffsets special timestamps (Kafka's `ListOffsetsRequest`).
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
/// Kafka's `RecordBatch.NO_TIMESTAMP`: the timestamp of answers that name no record.
const NO_TIMESTAMP: i64 = -1;
/// ListOffsets `isolation_level` of read_committed consumers.
const READ_COMMITTED: i8 = 1;

pub async fn handle_list_offsets(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = ctx.version();
    let read_committed = request.isolation_level == READ_COMMITTED;
    let walk = PartitionWalk::new(broker, ctx, Operation::Describe, Role::Leader);
    let b = broker.clone();
    let topics = walk
        .map_blocking(
            &request.topics,
            |p| (p.partition_index, p.timestamp),
            move |(index, timestamp), partition| {
                let base = ListOffsetsPartitionResponse::default()
                    .with_partition_index(index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                let partition = match partition {
                    Ok(partition) => partition,
                    Err(e) => return base.with_error_code(code(e)),
                };
                match list_offset(&b, &partition, timestamp, read_committed, version) {
                    // The leader epoch is in the answer from v4 (KIP-320); older versions
                    // have no field for it.
                    Ok(Some(found)) => base
                        .with_timestamp(found.timestamp_ms)
                        .with_offset(found.offset)
                        .with_leader_epoch(match found.leader_epoch {
                            Some(epoch) if version >= 4 => epoch,
                            _ => -1,
                        }),
                    Ok(None) => base,
                    Err(error) => base.with_error_code(error),
                }
            },
            |name, partitions| {
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(partitions)
            },
        )
        .await;
    ListOffsetsResponse::default().with_topics(topics)
}

/// One ListOffsets lookup across the tier and the local log: the timestamp, offset and leader
/// epoch to answer, `None` when nothing matches, or an error code. Blocking (tier lookups wait
/// on the runtime).
///
/// As in Kafka, what a consumer may fetch bounds the answer: LATEST is the high watermark
/// (the last stable offset for `read_committed`), in the partition's current leader epoch,
/// and a lookup that lands at or above it finds nothing. A new leader whose high watermark
/// has not reached the start of its epoch answers those with OFFSET_NOT_AVAILABLE
/// (LEADER_NOT_AVAILABLE before v5), so that a client never sees the end of the log move
/// back.
fn list_offset(
    broker: &Broker,
    partition: &Arc<Partition>,
    timestamp: i64,
    read_committed: bool,
    version: i16,
) -> Result<Option<TimestampAndOffset>, i16> {
    let (fetchable, lagging) = {
        let log = partition.log();
        let hw = log.high_watermark();
        let fetchable = if read_committed {
            log.last_stable_offset()
        } else {
            hw
        };
        (fetchable, partition.high_watermark_lags_epoch_start(hw))
    };
    let not_available = || {
        code(if version >= 5 {
            ResponseError::OffsetNotAvailable
        } else {
            ResponseError::LeaderNotAvailable
        })
    };
    match timestamp {
        EARLIEST | EARLIEST_LOCAL => lookup(broker, partition, timestamp),
        LATEST if lagging => Err(not_available()),
        LATEST => Ok(Some(TimestampAndOffset {
            timestamp_ms: NO_TIMESTAMP,
            offset: fetchable,
            leader_epoch: Some(partition.leader_epoch()),
        })),
        _ => match lookup(broker, partition, timestamp)? {
            Some(found) if found.offset >= fetchable && lagging => Err(not_available()),
            Some(found) if found.offset >= fetchable => Ok(None),
            found => Ok(found),
        },
    }
}

/// [`list_offset`] before the bound of what a consumer may fetch. The leader epoch answered
/// is Kafka's (`UnifiedLog.fetchOffsetByTimestamp`): for a record found by timestamp or
/// MAX_TIMESTAMP, locally or in the tier, the epoch of the batch holding it; for EARLIEST,
/// the leader-epoch cache's earliest epoch if it starts at or below the log start; for
/// EARLIEST_LOCAL (tiered) and LATEST_TIERED, the cache's epoch for the offset answered.
fn lookup(
    broker: &Broker,
    partition: &Arc<Partition>,
    timestamp: i64,
) -> Result<Option<TimestampAndOffset>, i16> {
    let tier_error = |e| match e {
        TierLookupError::TimedOut => code(ResponseError::RequestTimedOut),
        TierLookupError::Tier(_) => code(ResponseError::KafkaStorageError),
    };
    let runtime = tokio::runtime::Handle::current();
    let log = partition.log();
    let log_start = log.log_start_offset();
    let tiered = log.config().remote_storage_enable;
    let special = |offset, leader_epoch| TimestampAndOffset {
        timestamp_ms: NO_TIMESTAMP,
        offset,
        leader_epoch,
    };
    let found = match timestamp {
        EARLIEST => Some(special(log_start, log.log_start_epoch())),
        // Without a tier Kafka answers EARLIEST_LOCAL as EARLIEST.
        EARLIEST_LOCAL if !tiered => Some(special(log_start, log.log_start_epoch())),
        EARLIEST_LOCAL => {
            let local_start = log.local_log_start_offset();
            Some(special(local_start, log.epoch_for_offset(local_start)))
        }
        // Nothing tiered (or no tier): offset -1 with leader epoch -1, as Kafka answers.
        LATEST_TIERED if tiered => {
            drop(log);
            let highest = runtime
                .block_on(broker.remote.highest_offset(partition))
                .map_err(tier_error)?;
            highest.map(|offset| special(offset, partition.log().epoch_for_offset(offset)))
        }
        MAX_TIMESTAMP => {
            let local = log
                .max_timestamp_and_offset()
                .map_err(|e| log_error(broker, partition, &e))?;
            drop(log);
            let remote = if tiered {
                runtime
                    .block_on(broker.remote.max_timestamp(partition, log_start))
                    .map_err(tier_error)?
            } else {
                None
            };
            // The earliest record holding the largest timestamp: the tier's on a tie.
            match (remote, local) {
                (Some(r), Some(l)) if l.timestamp_ms > r.timestamp_ms => Some(l),
                (Some(r), _) => Some(r),
                (None, l) => l,
            }
        }
        ts if ts < 0 => None,
        ts => {
            // Below the local log start only the tier has the records.
            let in_tier = log.local_log_start_offset() > log_start;
            drop(log);
            let remote = if in_tier {
                runtime
                    .block_on(broker.remote.offset_for_timestamp(partition, ts, log_start))
                    .map_err(tier_error)?
            } else {
                None
            };
            match remote {
                Some(found) => Some(found),
                None => {
                    let log = partition.log();
                    log.offset_for_timestamp(ts)
                        .map_err(|e| log_error(broker, partition, &e))?
                }
            }
        }
    };
    Ok(found)
}

pub fn handle_offset_for_leader_epoch(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let walk = PartitionWalk::new(broker, ctx, Operation::Describe, Role::Leader);
    let topics = walk.map(
        &request.topics,
        |_, p, partition| {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match partition {
                Ok(partition) => {
                    // In-memory lookup in the leader-epoch cache: no I/O.
                    let (epoch, end_offset) = partition.log().end_offset_for_epoch(p.leader_epoch);
                    base.with_leader_epoch(epoch).with_end_offset(end_offset)
                }
                Err(e) => base.with_error_code(code(e)),
            }
        },
        |topic, partitions| {
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        },
    );
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub async fn handle_delete_records(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let walk = PartitionWalk::new(broker, ctx, Operation::Delete, Role::Leader);
    let b = broker.clone();
    let topics = walk
        .map_blocking(
            &request.topics,
            |p| (p.partition_index, p.offset),
            move |(index, offset), partition| {
                let base = DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(-1);
                let partition = match partition {
                    Ok(partition) => partition,
                    Err(e) => return base.with_error_code(code(e)),
                };
                let mut log = partition.log();
                match log.delete_records_before(offset) {
                    Ok(low_watermark) => {
                        tracing::info!(topic = %partition.topic, partition = index, low_watermark, "deleted records");
                        base.with_low_watermark(low_watermark)
                    }
                    Err(e) => base.with_error_code(log_error(&b, &partition, &e)),
                }
            },
            |name, partitions| {
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(partitions)
            },
        )
        .await;
    DeleteRecordsResponse::default().with_topics(topics)
}
