//! Producer APIs: InitProducerId (idempotent producers here; transactional ids go to the
//! transaction coordinator in `txn.rs`), and DescribeProducers.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};

use kafka_protocol::error::ResponseError;
use strata_meta::acl::{ResourceType, CLUSTER_NAME};

use super::code;
use super::partition_walk::{PartitionWalk, Role};
use crate::broker::Broker;
use crate::replica_manager::Partition;
use crate::session::{Operation, RequestContext};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let version = ctx.version();
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    // As Kafka: a transactional producer needs WRITE on its transactional id; an idempotent
    // one IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if let Some(id) = &request.transactional_id {
        if let Err(e) = ctx.authorize_transactional_id(Operation::Write, id) {
            return base.with_error_code(code(e));
        }
        return super::txn::handle_init_producer_id(broker, request, version);
    }
    if !ctx.permits(
        Operation::IdempotentWrite,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) && !ctx.authorize_any(Operation::Write, ResourceType::Topic)
    {
        return base.with_error_code(code(ResponseError::ClusterAuthorizationFailed));
    }
    if request.producer_id.0 >= 0 {
        // KIP-360: an idempotent producer asking to bump its epoch after an error. Handing out
        // a fresh id is always safe (its sequences start over) and needs no per-id state here.
        tracing::debug!(
            producer_id = request.producer_id.0,
            "producer asked to bump its epoch; issuing a new id"
        );
    }
    match tokio::task::block_in_place(|| broker.next_producer_id()) {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate producer id");
            base.with_error_code(super::meta_error_code(&e))
        }
    }
}

/// DescribeProducers: the idempotent producers each partition keeps state for.
pub async fn handle_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let walk = PartitionWalk::new(broker, ctx, Operation::Read, Role::Leader);
    // Reading producer state takes each log's lock, which an append may hold.
    let topics = walk
        .map_blocking(
            &request.topics,
            |&index| index,
            |index, partition| {
                let base = PartitionResponse::default().with_partition_index(index);
                match partition {
                    Ok(partition) => base.with_active_producers(active_producers(&partition)),
                    Err(e) => base.with_error_code(code(e)),
                }
            },
            |name, partitions| {
                TopicResponse::default()
                    .with_name(name)
                    .with_partitions(partitions)
            },
        )
        .await;
    DescribeProducersResponse::default().with_topics(topics)
}

/// The idempotent producers `partition` keeps state for, with the first offset of each one's
/// open transaction.
fn active_producers(partition: &Partition) -> Vec<ProducerState> {
    let log = partition.log();
    let open: std::collections::HashMap<i64, i64> = log
        .open_transactions()
        .into_iter()
        .map(|(pid, _, first)| (pid, first))
        .collect();
    log.active_producers()
        .into_iter()
        .map(|(producer_id, epoch, last_sequence, last_timestamp)| {
            ProducerState::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch.into())
                .with_last_sequence(last_sequence)
                .with_last_timestamp(last_timestamp)
                .with_coordinator_epoch(-1)
                .with_current_txn_start_offset(open.get(&producer_id).copied().unwrap_or(-1))
        })
        .collect()
}
