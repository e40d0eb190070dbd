//! Produce: validate and append record batches as the partition leader.
//!
//! Per request: one hop to a blocking thread, which appends each partition's batches under
//! that partition's lock (one buffer copy per partition; validation reads each record's
//! key and timestamp, in place or, for a compressed batch, through a bounded inflater, see
//! `strata-log`). A batch refused because of some of its records answers with those records'
//! indexes (`record_errors`, KIP-467) and Kafka's message for the partition; other errors are
//! answered with their code alone, as Kafka answers them.
//! On a single node the in-sync replica set is this broker, so `acks=all` is acknowledged once
//! the local append is done, after `min.insync.replicas` is checked against that set.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use strata_log::{LogError, RecordBatchHeader, RecordError};
use strata_meta::config::topic_config;
use strata_partition::AckState;

use super::partition_walk::{hosted, Role};
use super::{code, log_error, str_bytes};
use crate::broker::Broker;
use crate::client_quota_manager::QuotaKind;
use crate::replica_manager::now_ms;
use crate::replica_manager::Partition;
use crate::session::{Operation, RequestContext};
use crate::task::blocking;
use crate::txn_service::verification::{
    guard_writes, produce_error, ProducedBatch, TxnOperation, WriteGuard,
};

/// Outcome of one partition's append, computed on the blocking thread.
struct PartitionOutcome {
    index: i32,
    /// The error code, and the partition's error message where Kafka sets one (see
    /// [`error_message`]).
    error: Option<(i16, Option<String>)>,
    /// The records the error names (KIP-467), answered from Produce v8.
    record_errors: Vec<RecordError>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// `acks=all` on a replicated partition: the offset the high watermark must reach.
    replication: Option<(Arc<Partition>, i64)>,
}

/// A topic of the request: its name (resolved from the id for v13+) and the id it was sent with.
struct TopicRef {
    name: TopicName,
    topic_id: uuid::Uuid,
}

/// Longest an `acks=all` produce waits for the ISR, whatever the client's timeout.
const MAX_ACK_WAIT_MS: i32 = 120_000;

/// Waits, up to `timeout`, until every `acks=all` append on a replicated partition is in the
/// whole ISR (Kafka's delayed produce). Then: done; NOT_ENOUGH_REPLICAS_AFTER_APPEND when the
/// ISR shrank below `min.insync.replicas` meanwhile; NOT_LEADER_OR_FOLLOWER when leadership
/// moved; REQUEST_TIMED_OUT when the followers did not catch up in time.
async fn await_replication(results: &mut [(TopicRef, Vec<PartitionOutcome>)], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for outcome in results.iter_mut().flat_map(|(_, o)| o.iter_mut()) {
        let Some((partition, required)) = outcome.replication.take() else {
            continue;
        };
        let state = loop {
            let advanced = partition.hw_advanced().notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            match partition.ack_state(required) {
                Some(AckState::Waiting) if partition.is_leader() => {}
                other => break other,
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                break partition.ack_state(required);
            }
        };
        // Kafka's delayed produce answers these without a message.
        let error = match state {
            Some(AckState::Done) => None,
            // The ISR shrank below min.insync.replicas while the records were replicated.
            Some(AckState::DoneWithTooFewReplicas) => {
                Some(ResponseError::NotEnoughReplicasAfterAppend)
            }
            // The in-sync replicas did not acknowledge the records in time.
            Some(AckState::Waiting) if partition.is_leader() => {
                Some(ResponseError::RequestTimedOut)
            }
            // Leadership moved before the records were replicated.
            _ => Some(ResponseError::NotLeaderOrFollower),
        };
        outcome.error = error.map(|e| (code(e), None));
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let version = ctx.version();
    let acks = request.acks;
    let request_timeout_ms = request.timeout_ms;
    let image = broker.image();
    // KIP-890: transactional writes are checked with the transaction coordinator first:
    // verified for protocol v1 clients while `transaction.partition.verification.enable`
    // holds (a dynamic config), added for protocol v2 clients always.
    let txn_operation = TxnOperation::for_produce(version);
    let verify_transactional = request
        .transactional_id
        .as_ref()
        .map(|t| t.to_string())
        .filter(|_| {
            txn_operation.asks_coordinator(broker.config.transaction_verification_enabled(&image))
        });
    let valid_acks = matches!(acks, -1..=1);
    // Resolve topics and min.insync.replicas up front, on the async side (no I/O). Produce v13
    // names topics by id (KIP-516): an id the image does not know is UNKNOWN_TOPIC_ID.
    let work: Vec<_> = request
        .topic_data
        .into_iter()
        .map(|topic| {
            // As Kafka: an unknown id has no name to authorize; a name is authorized before
            // anyone learns whether it exists.
            let (name, unknown) = if version >= 13 {
                match image.topic_by_id(&topic.topic_id) {
                    Some(t) => {
                        let name = TopicName(str_bytes(t.name.clone()));
                        let refused = ctx.authorize_topic(Operation::Write, &name).err();
                        (name, refused)
                    }
                    None => (topic.name, Some(ResponseError::UnknownTopicId)),
                }
            } else {
                let refused = ctx
                    .authorize_topic(Operation::Write, &topic.name)
                    .err()
                    .or_else(|| {
                        image
                            .topic(topic.name.as_str())
                            .is_none()
                            .then_some(ResponseError::UnknownTopicOrPartition)
                    });
                (topic.name, refused)
            };
            let known = unknown.is_none();
            let min_isr: i64 = if known {
                topic_config("min.insync.replicas")
                    .map(|def| broker.config.topic_config_value(&image, name.as_str(), def))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1)
            } else {
                1
            };
            (
                TopicRef {
                    name,
                    topic_id: topic.topic_id,
                },
                unknown,
                min_isr,
                topic.partition_data,
            )
        })
        .collect();
    let b = broker.clone();
    let request_image = image.clone();
    let disk_limit_reached = broker.remote.disk_limit_reached();
    let results = blocking(move || {
        let guards = match &verify_transactional {
            Some(transactional_id) => {
                transactional_guards(&b, transactional_id, txn_operation, &work)
            }
            None => std::collections::HashMap::new(),
        };
        let now = now_ms();
        let mut appended_any = false;
        let results: Vec<_> = work
            .into_iter()
            .map(|(topic, unknown, min_isr, partitions)| {
                let name = topic.name.as_str();
                let outcomes: Vec<PartitionOutcome> = partitions
                    .into_iter()
                    .map(|p| {
                        let mut outcome = PartitionOutcome {
                            index: p.index,
                            error: None,
                            record_errors: Vec::new(),
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: -1,
                            replication: None,
                        };
                        let partition = match unknown {
                            None => hosted(&b.replicas, &request_image, Role::Leader, name, p.index, -1),
                            Some(e) => Err(e),
                        };
                        if !valid_acks {
                            outcome.error = Some((code(ResponseError::InvalidRequiredAcks), None));
                        } else if let Ok(partition) = &partition {
                            let enough = if acks == -1 {
                                partition.check_enough_replicas(min_isr.max(1) as usize)
                            } else {
                                Ok(())
                            };
                            if let Err(isr_size) = enough {
                                tracing::debug!(topic = name, partition = p.index, isr_size, min_isr, "produce refused: the ISR is smaller than min.insync.replicas");
                                outcome.error = Some((code(ResponseError::NotEnoughReplicas), None));
                            } else {
                                let records = p.records.unwrap_or_default();
                                let mut log = partition.log();
                                let tiered = log.config().remote_storage_enable;
                                // Retriable: clients back off and retry while the tier catches
                                // up, or says where a partition that lost its data starts.
                                let wait_for_tier = if !tiered {
                                    None
                                } else if disk_limit_reached {
                                    b.metrics.produce_rejected_disk_limit.add(1);
                                    Some("data not yet in the tier reached log.local.untiered.max.bytes; waiting for uploads")
                                } else if b.remote.awaiting_tier(partition) {
                                    Some("waiting for the tier to say where this partition starts")
                                } else {
                                    None
                                };
                                if let Some(why) = wait_for_tier {
                                    tracing::debug!(topic = name, partition = p.index, why, "produce refused");
                                    outcome.log_start_offset = log.log_start_offset();
                                    outcome.error = Some((code(ResponseError::KafkaStorageError), None));
                                    return outcome;
                                }
                                if let Some(guard) = guards.get(&(name.to_string(), p.index)) {
                                    if let Err((error, message)) = guard.admit(&log) {
                                        outcome.log_start_offset = log.log_start_offset();
                                        // Kafka words only some refusals (`produce_error`).
                                        outcome.error = Some((error, Some(message).filter(|m| !m.is_empty())));
                                        return outcome;
                                    }
                                }
                                match single_batch(&records).and_then(|()| log.append_as_leader(&records, partition.leader_epoch(), now)) {
                                    Ok(info) => {
                                        partition.after_leader_append(&mut log, now);
                                        if acks == -1 && partition.is_replicated_leader() {
                                            outcome.replication = Some((partition.clone(), info.last_offset + 1));
                                        }
                                        if !info.duplicate {
                                            b.metrics.produce_records.add(info.records_count);
                                            b.metrics.produce_bytes.add(records.len() as u64);
                                            appended_any = true;
                                        }
                                        outcome.base_offset = info.first_offset;
                                        outcome.log_append_time_ms = info.log_append_time_ms;
                                        outcome.log_start_offset = info.log_start_offset;
                                    }
                                    Err(e) => {
                                        outcome.log_start_offset = log.log_start_offset();
                                        outcome.error = Some((log_error(&b, partition, &e), error_message(&e)));
                                        if let LogError::InvalidRecords { records, .. } = e {
                                            outcome.record_errors = records;
                                        }
                                    }
                                }
                            }
                        } else if let Err(e) = partition {
                            outcome.error = Some((code(e), None));
                        }
                        outcome
                    })
                    .collect();
                (topic, outcomes)
            })
            .collect();
        if appended_any {
            b.replicas.notify_appended();
        }
        results
    })
    .await;
    let timeout = Duration::from_millis(request_timeout_ms.clamp(0, MAX_ACK_WAIT_MS) as u64);
    let mut results = results;
    await_replication(&mut results, timeout).await;
    // Kafka charges the whole request to the producer's quota once it is answered; with
    // acks=0 the client is throttled all the same, by the muted connection.
    super::charge_quota(broker, ctx, &image, QuotaKind::Produce, ctx.frame_bytes);
    if acks == 0 {
        return None;
    }
    // KIP-951: a NOT_LEADER_OR_FOLLOWER answer names the current leader and how to reach it,
    // so the client need not wait for a metadata refresh.
    let mut leaders = std::collections::BTreeSet::new();
    let responses = results
        .into_iter()
        .map(|(topic_ref, outcomes)| {
            let topic = image.topic(topic_ref.name.as_str()).cloned();
            // v13 answers by id only; older versions by name only.
            let response = if version >= 13 {
                TopicProduceResponse::default().with_topic_id(topic_ref.topic_id)
            } else {
                TopicProduceResponse::default().with_name(topic_ref.name)
            };
            response.with_partition_responses(
                outcomes
                    .into_iter()
                    .map(|o| {
                        let mut r = PartitionProduceResponse::default()
                            .with_index(o.index)
                            .with_base_offset(o.base_offset)
                            .with_log_append_time_ms(o.log_append_time_ms)
                            .with_log_start_offset(o.log_start_offset);
                        if let Some((error, message)) = o.error {
                            r = r.with_error_code(error);
                            let current = topic
                                .as_ref()
                                .and_then(|t| t.partitions.get(o.index as usize));
                            if let (true, Some(p)) = (
                                version >= 10 && error == code(ResponseError::NotLeaderOrFollower),
                                current,
                            ) {
                                r = r.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(p.leader))
                                        .with_leader_epoch(p.leader_epoch),
                                );
                                leaders.insert(p.leader);
                            }
                            if version >= 8 {
                                // KIP-467: the refused records by index, so that clients fail
                                // only those (the others of the batch as collateral).
                                r = r
                                    .with_record_errors(
                                        o.record_errors
                                            .into_iter()
                                            .map(|e| {
                                                BatchIndexAndErrorMessage::default()
                                                    .with_batch_index(e.batch_index)
                                                    .with_batch_index_error_message(Some(
                                                        str_bytes(e.message),
                                                    ))
                                            })
                                            .collect(),
                                    )
                                    .with_error_message(message.map(str_bytes));
                            }
                        }
                        r
                    })
                    .collect(),
            )
        })
        .collect();
    let node_endpoints = super::leader_endpoints!(image, leaders, NodeEndpoint);
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints),
    )
}

/// The partition's error message for a refused append, as Kafka's `ReplicaManager` sets it:
/// only for records its `LogValidator` refused one by one (`RecordValidationException`,
/// KIP-467), in its words. Every other error is answered with its code alone
/// (`LogAppendResult.hasCustomErrorMessage`).
fn error_message(e: &LogError) -> Option<String> {
    matches!(e, LogError::InvalidRecords { .. }).then(|| e.to_string())
}

/// The guards of a request's transactional batches (see `txn_verification`), by partition.
fn transactional_guards(
    broker: &Broker,
    transactional_id: &str,
    op: TxnOperation,
    work: &[(
        TopicRef,
        Option<ResponseError>,
        i64,
        Vec<kafka_protocol::messages::produce_request::PartitionProduceData>,
    )],
) -> std::collections::HashMap<(String, i32), WriteGuard> {
    let batches: Vec<ProducedBatch> = work
        .iter()
        .filter(|(_, unknown, _, _)| unknown.is_none())
        .flat_map(|(topic, _, _, partitions)| {
            partitions.iter().filter_map(move |p| {
                let header = RecordBatchHeader::parse(p.records.as_deref()?).ok()?;
                (header.is_transactional() && header.producer_id >= 0).then(|| ProducedBatch {
                    topic: topic.name.to_string(),
                    partition: p.index,
                    producer_id: header.producer_id,
                    producer_epoch: header.producer_epoch,
                })
            })
        })
        .collect();
    if batches.is_empty() {
        return std::collections::HashMap::new();
    }
    let guards = guard_writes(&broker.txns, transactional_id, op, &batches, produce_error);
    batches
        .into_iter()
        .map(|b| (b.topic, b.partition))
        .zip(guards)
        .collect()
}

/// Kafka 4 accepts exactly one record batch per partition in Produce v3+
/// (`ProduceRequest.validateRecords`).
fn single_batch(records: &[u8]) -> Result<(), LogError> {
    let header = RecordBatchHeader::parse(records)?;
    if header.size_bytes() < records.len() {
        return Err(LogError::InvalidRecord(
            "Produce requests with version 3 and above must have exactly one record batch per partition".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_records_carry_an_error_message() {
        let refused = LogError::InvalidRecords {
            invalid_timestamp: true,
            records: vec![RecordError {
                batch_index: 0,
                message: "too old".into(),
            }],
            total: 1,
        };
        assert_eq!(
            error_message(&refused).as_deref(),
            Some("One or more records have been rejected due to invalid timestamp")
        );
        for e in [
            LogError::CorruptRecord("crc".into()),
            LogError::InvalidRecord("count".into()),
            LogError::Decompression("zstd".into()),
            LogError::RecordTooLarge {
                size_bytes: 2,
                max_bytes: 1,
            },
            LogError::OutOfOrderSequence("gap".into()),
            LogError::InvalidProducerEpoch("old".into()),
            LogError::InvalidTxnState("open".into()),
        ] {
            assert_eq!(error_message(&e), None, "{e:?}");
        }
    }
}
