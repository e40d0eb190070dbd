//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455, Kafka's
//! `kafka-reassign-partitions.sh` and `Admin.alterPartitionReassignments` /
//! `listPartitionReassignments`): move a partition's replicas to other brokers, cancel a
//! move, and list the moves in progress.
//!
//! A reassignment is a controller change like any other: built from the image by
//! [`strata_meta::Controller::alter_partition_reassignments`] and committed through
//! `Broker::commit` (in a cluster, the quorum). The rest follows from the new image on every
//! node: a broker that gains a replica creates its log and fetches from the leader, the
//! leader tracks the new follower and proposes it for the ISR once it caught up
//! (AlterPartition), which completes the move in the controller, and a broker that loses
//! its replica deletes the log. Listing reads this node's image.
//!
//! Cost: one metadata commit per Alter request (one record per changed partition, bounded by
//! the request, itself bounded by `socket.request.max.bytes`); List is a scan of the image.
//!
//! As Kafka, Alter needs ALTER on the cluster and List DESCRIBE (else
//! CLUSTER_AUTHORIZATION_FAILED for the whole request).

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use strata_meta::controller::ReassignmentTarget;

use super::{code, controller_error, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

pub async fn handle_alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let version = ctx.version();
    let targets: Vec<(String, Vec<ReassignmentTarget>)> = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| ReassignmentTarget {
                    partition: p.partition_index,
                    replicas: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                })
                .collect();
            (t.name.to_string(), partitions)
        })
        .collect();
    // v0 has no such field: changing the replication factor is allowed (KIP-860).
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let refused = ctx
        .authorize_cluster(Operation::Alter)
        .map_err(|e| (code(e), e.to_string()));
    let outcome = refused.and_then(|()| {
        tokio::task::block_in_place(|| {
            broker.commit(|image| {
                let unclean = broker.config.unclean_leader_election(image);
                let (outcomes, records) = broker.meta.controller().alter_partition_reassignments(
                    image,
                    &targets,
                    allow_rf_change,
                    &unclean,
                );
                (records, outcomes)
            })
        })
        .map_err(|e| {
            tracing::error!(error = %e, "metadata commit failed during a partition reassignment");
            (super::meta_error_code(&e), e.to_string())
        })
    });
    let response = AlterPartitionReassignmentsResponse::default();
    let response = if version >= 1 {
        response.with_allow_replication_factor_change(allow_rf_change)
    } else {
        response
    };
    let outcomes = match outcome {
        Ok(outcomes) => outcomes,
        Err((code, message)) => {
            let responses = targets
                .iter()
                .map(|(topic, partitions)| {
                    let results = partitions
                        .iter()
                        .map(|p| {
                            ReassignablePartitionResponse::default()
                                .with_partition_index(p.partition)
                                .with_error_code(code)
                                .with_error_message(Some(str_bytes(message.clone())))
                        })
                        .collect();
                    topic_response(topic, results)
                })
                .collect();
            return response
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)))
                .with_responses(responses);
        }
    };
    let responses = targets
        .iter()
        .zip(outcomes)
        .map(|((topic, partitions), outcomes)| {
            let results = partitions
                .iter()
                .zip(outcomes)
                .map(|(p, outcome)| {
                    let result =
                        ReassignablePartitionResponse::default().with_partition_index(p.partition);
                    match outcome {
                        Ok(()) => {
                            tracing::info!(topic = %topic, partition = p.partition, replicas = ?p.replicas, "partition reassignment accepted");
                            result
                        }
                        Err(e) => {
                            let (code, message) = controller_error(&e);
                            result.with_error_code(code).with_error_message(message)
                        }
                    }
                })
                .collect();
            topic_response(topic, results)
        })
        .collect();
    response.with_responses(responses)
}

fn topic_response(
    topic: &str,
    partitions: Vec<ReassignablePartitionResponse>,
) -> ReassignableTopicResponse {
    ReassignableTopicResponse::default()
        .with_name(TopicName(str_bytes(topic)))
        .with_partitions(partitions)
}

pub fn handle_list(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if let Err(e) = ctx.authorize_cluster(Operation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(str_bytes(e.to_string())));
    }
    let named: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let image = broker.image();
    let listed = broker
        .meta
        .controller()
        .list_partition_reassignments(&image, named.as_deref());
    let ids = |ids: Vec<i32>| ids.into_iter().map(BrokerId).collect();
    let topics = listed
        .into_iter()
        .map(|(topic, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            OngoingPartitionReassignment::default()
                                .with_partition_index(p.partition)
                                .with_replicas(ids(p.replicas))
                                .with_adding_replicas(ids(p.adding_replicas))
                                .with_removing_replicas(ids(p.removing_replicas))
                        })
                        .collect(),
                )
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
