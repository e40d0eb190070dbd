//! Transactional APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions and ListTransactions. The
//! state machine is `strata_coord::txn`; `TxnService` persists it and writes the markers.
//!
//! The request version says which transaction protocol the client speaks, as in Kafka:
//! EndTxn v5, AddOffsetsToTxn v4 and TxnOffsetCommit v5 are protocol v2 (KIP-890 part 2),
//! which a client uses once the cluster finalizes `transaction.version` 2. EndTxn v5 then
//! bumps the epoch and answers the producer id and epoch to go on with; TxnOffsetCommit v5
//! adds the group's offsets partition to the transaction itself (the client sends no
//! AddOffsetsToTxn). AddPartitionsToTxn v4+ is the brokers' batched form: `verify_only`
//! checks a partition is in the transaction, otherwise it adds for a v2 client's write.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    describe_transactions_response, list_transactions_response, AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use strata_coord::group::{CommitIdentity, OffsetCommit};
use strata_coord::txn::TV2;
use strata_coord::OFFSETS_TOPIC;
use strata_meta::acl::ResourceType;

use super::groups::{commit_durably, commit_results, requested_commits};
use super::{code, str_bytes};
use crate::broker::Broker;
use crate::replica_manager::now_ms;
use crate::session::{Operation, RequestContext};

/// PRODUCER_FENCED exists from these versions on (KIP-588); older clients know the fencing
/// only as INVALID_PRODUCER_EPOCH.
fn fenced_for(
    version: i16,
    first_version_with_producer_fenced: i16,
    e: ResponseError,
) -> ResponseError {
    if e == ResponseError::ProducerFenced && version < first_version_with_producer_fenced {
        ResponseError::InvalidProducerEpoch
    } else {
        e
    }
}

/// Runs a transaction-coordinator call in a blocking context, with the topic in place.
/// With a transactional id, only if this broker coordinates it (NOT_COORDINATOR otherwise);
/// without, on the transactions coordinated here.
fn run_txn<T>(
    broker: &Broker,
    transactional_id: Option<&str>,
    f: impl FnOnce(&mut strata_coord::txn::TransactionCoordinator) -> Result<T, ResponseError>,
) -> Result<T, ResponseError> {
    tokio::task::block_in_place(|| {
        broker.txns.ensure_topic()?;
        match transactional_id {
            Some(id) if !broker.txns.coordinates(id) => return Err(ResponseError::NotCoordinator),
            Some(_) => {}
            None => broker.txns.sync_leadership(),
        }
        broker.txns.run(f)?
    })
}

pub fn handle_init_producer_id(
    broker: &Arc<Broker>,
    request: &InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let expected = (version >= 3 && request.producer_id.0 >= 0)
        .then_some((request.producer_id.0, request.producer_epoch));
    let result = run_txn(broker, Some(&transactional_id), |c| {
        c.init_producer_id(
            &transactional_id,
            request.transaction_timeout_ms,
            expected,
            broker.txns.transaction_version(),
            now_ms(),
            || {
                broker.next_producer_id().map_err(|e| {
                    tracing::error!(error = %e, "cannot allocate producer id");
                    ResponseError::KafkaStorageError
                })
            },
        )
    });
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match result {
        Ok((pid, epoch)) => base
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => base.with_error_code(code(fenced_for(version, 4, e))),
    }
}

pub fn handle_add_partitions(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = ctx.version();
    if version <= 3 {
        // A producer's own request: WRITE on its transactional id, then on each topic.
        if let Err(e) =
            ctx.authorize_transactional_id(Operation::Write, &request.v3_and_below_transactional_id)
        {
            let results = refused_partitions(&request.v3_and_below_topics, e);
            return AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(results);
        }
        let results = add_partitions(
            broker,
            Some(ctx),
            version,
            &request.v3_and_below_transactional_id,
            (
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
            ),
            &request.v3_and_below_topics,
            false,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // v4+: many transactions per request, from brokers (`verify_only` checks and the adds of
    // protocol v2 writes): CLUSTER_ACTION, as Kafka asks of them.
    if let Err(e) = ctx.authorize_cluster(Operation::ClusterAction) {
        return AddPartitionsToTxnResponse::default().with_error_code(code(e));
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(
        request
            .transactions
            .iter()
            .map(|t| {
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(add_partitions(
                        broker,
                        None,
                        version,
                        &t.transactional_id,
                        (t.producer_id.0, t.producer_epoch),
                        &t.topics,
                        t.verify_only,
                    ))
            })
            .collect(),
    )
}

/// Every partition of `topics` answered `error`.
fn refused_partitions(
    topics: &[AddPartitionsToTxnTopic],
    error: ResponseError,
) -> Vec<AddPartitionsToTxnTopicResult> {
    partition_results(topics, std::iter::repeat(code(error)))
}

/// Per-partition results of `topics`, errors in request order.
fn partition_results(
    topics: &[AddPartitionsToTxnTopic],
    mut errors: impl Iterator<Item = i16>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(errors.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// AddPartitionsToTxn for one transaction: per-partition results in request order. With a
/// producer's `ctx` (v3 and below), each topic needs WRITE.
fn add_partitions(
    broker: &Broker,
    ctx: Option<&RequestContext<'_>>,
    version: i16,
    transactional_id: &str,
    (producer_id, producer_epoch): (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let image = broker.image();
    let requested: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), *p)))
        .collect();
    let failed: Vec<Option<ResponseError>> = requested
        .iter()
        .map(|(t, p)| {
            if let Some(Err(e)) = ctx.map(|ctx| ctx.authorize_topic(Operation::Write, t)) {
                return Some(e);
            }
            image
                .topic(t)
                .is_none_or(|topic| *p < 0 || *p as usize >= topic.partitions.len())
                .then_some(ResponseError::UnknownTopicOrPartition)
        })
        .collect();
    // Kafka adds nothing when any partition fails its checks: those get their error
    // (TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION), the rest OPERATION_NOT_ATTEMPTED.
    let errors: Vec<i16> = if failed.iter().any(Option::is_some) {
        failed
            .iter()
            .map(|f| code(f.unwrap_or(ResponseError::OperationNotAttempted)))
            .collect()
    } else if verify_only {
        match run_txn(broker, Some(transactional_id), |c| {
            c.verify_partitions(transactional_id, producer_id, producer_epoch, &requested)
        }) {
            Ok(present) => present
                .into_iter()
                .map(|p| {
                    if p {
                        0
                    } else {
                        // KIP-890: the partition leader turns it into INVALID_TXN_STATE for
                        // clients that predate it.
                        code(ResponseError::TransactionAbortable)
                    }
                })
                .collect(),
            Err(e) => vec![code(fenced_for(version, 2, e)); requested.len()],
        }
    } else {
        // v4+ adds come from partition leaders, for the writes of protocol v2 clients.
        let client_transaction_version = if version >= 4 { TV2 } else { 0 };
        let result = run_txn(broker, Some(transactional_id), |c| {
            c.add_partitions(
                transactional_id,
                producer_id,
                producer_epoch,
                &requested,
                client_transaction_version,
                now_ms(),
            )
        });
        let error = match result {
            Ok(()) => 0,
            Err(e) => code(fenced_for(version, 2, e)),
        };
        vec![error; requested.len()]
    };
    partition_results(topics, errors.into_iter())
}

pub fn handle_add_offsets(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let version = ctx.version();
    // As Kafka: WRITE on the transactional id, READ on the group.
    let refused = ctx
        .authorize_transactional_id(Operation::Write, &request.transactional_id)
        .and_then(|()| ctx.authorize_group(Operation::Read, &request.group_id));
    if let Err(e) = refused {
        return AddOffsetsToTxnResponse::default().with_error_code(code(e));
    }
    let result = tokio::task::block_in_place(|| broker.groups.ensure_offsets_topic())
        .map_err(|_| ResponseError::CoordinatorNotAvailable)
        .and_then(|()| {
            let partition = broker.groups.partition_of(&request.group_id);
            run_txn(broker, Some(&request.transactional_id), |c| {
                c.add_partitions(
                    &request.transactional_id,
                    request.producer_id.0,
                    request.producer_epoch,
                    &[(OFFSETS_TOPIC.to_string(), partition)],
                    if version >= 4 { TV2 } else { 0 },
                    now_ms(),
                )
            })
        });
    AddOffsetsToTxnResponse::default().with_error_code(match result {
        Ok(()) => 0,
        Err(e) => code(fenced_for(version, 2, e)),
    })
}

pub fn handle_end_txn(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &EndTxnRequest,
) -> EndTxnResponse {
    let version = ctx.version();
    if let Err(e) = ctx.authorize_transactional_id(Operation::Write, &request.transactional_id) {
        return EndTxnResponse::default().with_error_code(code(e));
    }
    let result = run_txn(broker, Some(&request.transactional_id), |c| {
        c.end_txn(
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            if version >= 5 { TV2 } else { 0 },
            now_ms(),
            || {
                broker.next_producer_id().map_err(|e| {
                    tracing::error!(error = %e, "cannot allocate producer id");
                    ResponseError::KafkaStorageError
                })
            },
        )
    });
    match result {
        // v5 (protocol v2) answers the producer id and epoch the client goes on with.
        Ok((producer_id, producer_epoch)) if version >= 5 => EndTxnResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch),
        Ok(_) => EndTxnResponse::default(),
        Err(e) => EndTxnResponse::default().with_error_code(code(fenced_for(version, 2, e))),
    }
}

/// WriteTxnMarkers from another broker's transaction coordinator: appends each marker to the
/// partitions led here (NOT_LEADER_OR_FOLLOWER elsewhere), exactly as the coordinator does
/// for its own partitions.
pub fn handle_write_txn_markers(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    // Only brokers write markers: Kafka requires CLUSTER_ACTION and refuses every partition
    // otherwise.
    let refused = ctx
        .authorize_cluster(Operation::ClusterAction)
        .err()
        .map(code);
    let markers = tokio::task::block_in_place(|| {
        request
            .markers
            .iter()
            .map(|m| {
                let topics = m
                    .topics
                    .iter()
                    .map(|t| {
                        let partitions = t
                            .partition_indexes
                            .iter()
                            .map(|&index| {
                                let error = if let Some(error) = refused {
                                    error
                                } else {
                                    match broker.replicas.leader_or_error(
                                        &broker.image(),
                                        t.name.as_str(),
                                        index,
                                    ) {
                                        Ok(partition) => match broker.txns.append_marker(
                                            &partition,
                                            m.producer_id.0,
                                            m.producer_epoch,
                                            m.transaction_result,
                                            m.coordinator_epoch,
                                        ) {
                                            Ok(()) => 0,
                                            Err(e) => super::log_error(broker, &partition, &e),
                                        },
                                        Err(e) => code(e),
                                    }
                                };
                                WritableTxnMarkerPartitionResult::default()
                                    .with_partition_index(index)
                                    .with_error_code(error)
                            })
                            .collect();
                        WritableTxnMarkerTopicResult::default()
                            .with_name(t.name.clone())
                            .with_partitions(partitions)
                    })
                    .collect();
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics)
            })
            .collect()
    });
    broker.replicas.notify_appended();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// TxnOffsetCommit. As Kafka 4's group coordinator, the group's offsets partition is first
/// checked with the transaction coordinator (KIP-890): added for a protocol v2 client (v5),
/// verified for older ones while `transaction.partition.verification.enable` holds — so a
/// commit of a transaction the coordinator already ended (a timeout, a fencing) is refused
/// (INVALID_PRODUCER_EPOCH) rather than left pending. The check's guard is admitted again
/// under the group coordinator's lock, just before the commit.
pub fn handle_txn_offset_commit(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let version = ctx.version();
    use crate::txn_service::verification::{
        guard_writes, txn_offset_commit_error, ProducedBatch, TxnOperation, WriteGuard,
    };
    let commits = requested_commits!(request.topics);
    // As Kafka: WRITE on the transactional id, then READ on the group (checked again with the
    // topics when committing), before the transaction coordinator is asked anything.
    let refused = ctx
        .authorize_transactional_id(Operation::Write, &request.transactional_id)
        .and_then(|()| ctx.authorize_group(Operation::Read, &request.group_id));
    if let Err(e) = refused {
        return TxnOffsetCommitResponse::default().with_topics(commit_results!(
            request.topics,
            vec![code(e); commits.len()],
            TxnOffsetCommitResponseTopic,
            TxnOffsetCommitResponsePartition
        ));
    }
    let who = CommitIdentity {
        group_id: &request.group_id,
        generation_id: request.generation_id,
        member_id: &request.member_id,
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.as_str()),
        api_version: version,
    };
    let producer = (request.producer_id.0, request.producer_epoch);
    let op = TxnOperation::for_txn_offset_commit(version);
    let checked = op.asks_coordinator(
        broker
            .config
            .transaction_verification_enabled(&broker.image()),
    );
    let guard = if checked {
        tokio::task::block_in_place(|| {
            broker
                .groups
                .ensure_offsets_topic()
                .map_err(|_| code(ResponseError::CoordinatorNotAvailable))
                .map(|()| {
                    let partition = broker.groups.partition_of(&request.group_id);
                    let batch = ProducedBatch {
                        topic: OFFSETS_TOPIC.to_string(),
                        partition,
                        producer_id: producer.0,
                        producer_epoch: producer.1,
                    };
                    let guard = guard_writes(
                        &broker.txns,
                        &request.transactional_id,
                        op,
                        std::slice::from_ref(&batch),
                        txn_offset_commit_error,
                    );
                    (partition, guard.into_iter().next())
                })
        })
    } else {
        Ok((-1, None))
    };
    let errors = match guard {
        Ok((_, Some(WriteGuard::Refused(error, _)))) => vec![error; commits.len()],
        Err(error) => vec![error; commits.len()],
        Ok((partition, guard)) => {
            commit_durably(broker, ctx, &request.group_id, &commits, |c, commits| {
                // The check still stands: no marker of this producer ended the transaction
                // since (lock order: group coordinator, then the partition's log).
                let admitted = match (&guard, broker.replicas.partition(OFFSETS_TOPIC, partition)) {
                    (Some(guard), Some(hosted)) => guard.admit(&hosted.log()),
                    _ => Ok(()),
                };
                match admitted {
                    Ok(()) => c.txn_commit_offsets(&who, producer, commits, now_ms()),
                    Err((error, _)) => vec![error; commits.len()],
                }
            })
        }
    };
    TxnOffsetCommitResponse::default().with_topics(commit_results!(
        request.topics,
        errors,
        TxnOffsetCommitResponseTopic,
        TxnOffsetCommitResponsePartition
    ))
}

pub fn handle_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    // Which of the ids this broker coordinates (NOT_COORDINATOR for the others).
    let here: Vec<bool> = tokio::task::block_in_place(|| {
        let topic = broker.txns.ensure_topic();
        request
            .transactional_ids
            .iter()
            .map(|id| topic.is_ok() && broker.txns.coordinates(id))
            .collect()
    });
    let states = run_txn(broker, None, |c| {
        Ok(request
            .transactional_ids
            .iter()
            .zip(here)
            .map(|(id, here)| {
                let base = describe_transactions_response::TransactionState::default()
                    .with_transactional_id(id.clone());
                // As Kafka: DESCRIBE on the id, before anything about it is told.
                if let Err(e) = ctx.authorize_transactional_id(Operation::Describe, id) {
                    return base.with_error_code(code(e));
                }
                match c.describe(id) {
                    _ if !here => base.with_error_code(code(ResponseError::NotCoordinator)),
                    None => base.with_error_code(code(ResponseError::TransactionalIdNotFound)),
                    Some(t) => {
                        let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
                        for (topic, p) in &t.partitions {
                            match topics.last_mut() {
                                Some(last) if last.topic.as_str() == topic => {
                                    last.partitions.push(*p)
                                }
                                _ => topics.push(
                                    describe_transactions_response::TopicData::default()
                                        .with_topic(TopicName(str_bytes(topic.clone())))
                                        .with_partitions(vec![*p]),
                                ),
                            }
                        }
                        base.with_transaction_state(str_bytes(t.state.name()))
                            .with_transaction_timeout_ms(t.timeout_ms)
                            .with_transaction_start_time_ms(t.start_ms)
                            .with_producer_id(ProducerId(t.producer_id))
                            .with_producer_epoch(t.producer_epoch)
                            .with_topics(topics)
                    }
                }
            })
            .collect())
    })
    .unwrap_or_default();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: only the transactional ids the principal may DESCRIBE, as Kafka lists.
pub fn handle_list(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &ListTransactionsRequest,
) -> ListTransactionsResponse {
    const STATES: [&str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    // KIP-1152 (v2): a regular expression the whole transactional id must match; null or empty
    // lists every transaction.
    let pattern = match request.transactional_id_pattern.as_deref() {
        None | Some("") => None,
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(re) => Some(re),
            Err(e) => {
                tracing::debug!(pattern = p, error = %e, "ListTransactions: invalid pattern");
                return ListTransactionsResponse::default()
                    .with_error_code(code(ResponseError::InvalidRegularExpression));
            }
        },
    };
    let now = now_ms();
    let listed = run_txn(broker, None, |c| {
        Ok(c.list()
            .filter(|t| {
                request.state_filters.is_empty()
                    || request
                        .state_filters
                        .iter()
                        .any(|s| s.as_str() == t.state.name())
            })
            .filter(|t| {
                request.producer_id_filters.is_empty()
                    || request
                        .producer_id_filters
                        .iter()
                        .any(|p| p.0 == t.producer_id)
            })
            .filter(|t| {
                request.duration_filter < 0
                    || (t.start_ms >= 0 && now - t.start_ms >= request.duration_filter)
            })
            .filter(|t| {
                pattern
                    .as_ref()
                    .is_none_or(|re| re.is_match(&t.transactional_id))
            })
            .filter(|t| {
                ctx.permits(
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    &t.transactional_id,
                )
            })
            .map(|t| {
                list_transactions_response::TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(t.transactional_id.clone())))
                    .with_producer_id(ProducerId(t.producer_id))
                    .with_transaction_state(str_bytes(t.state.name()))
            })
            .collect())
    });
    match listed {
        Ok(states) => ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states),
        Err(e) => ListTransactionsResponse::default().with_error_code(code(e)),
    }
}
