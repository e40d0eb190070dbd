//! ElectLeaders (KIP-460, Kafka's `kafka-leader-election.sh` and `Admin.electLeaders`):
//! preferred or unclean leader election on request.
//!
//! The election is a controller change like any other: built from the image by
//! [`strata_meta::Controller::elect_leaders`] and committed through `Broker::commit`, so it
//! works the same on a single node's file log and through a cluster's quorum, and every
//! broker moves leadership when the new image reaches it.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use strata_meta::controller::{ElectionType, TopicElection};

use super::{code, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let version = ctx.version();
    let targets: Option<Vec<(String, Vec<i32>)>> = request.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect()
    });
    // As Kafka: ALTER on the cluster.
    if let Err(e) = ctx.authorize_cluster(Operation::Alter) {
        return failed(targets.as_deref(), version, code(e), e.to_string());
    }
    // v0 has no election type: it is always a preferred election (the field decodes as 0).
    let Some(election) = ElectionType::from_code(request.election_type) else {
        return failed(
            targets.as_deref(),
            version,
            code(ResponseError::InvalidRequest),
            format!("Unknown election type {}", request.election_type),
        );
    };
    let outcome = tokio::task::block_in_place(|| {
        broker.commit(|image| {
            let (results, records) =
                broker
                    .meta
                    .controller()
                    .elect_leaders(image, election, targets.as_deref());
            (records, results)
        })
    });
    match outcome {
        Ok(results) => {
            for t in &results {
                for (partition, _) in t.partitions.iter().filter(|(_, r)| r.is_ok()) {
                    tracing::info!(topic = %t.topic, partition, ?election, "elected a new leader on request");
                }
            }
            ElectLeadersResponse::default()
                .with_replica_election_results(results.into_iter().map(topic_result).collect())
        }
        Err(e) => {
            tracing::error!(error = %e, "metadata commit failed during leader election");
            failed(
                targets.as_deref(),
                version,
                super::meta_error_code(&e),
                e.to_string(),
            )
        }
    }
}

fn topic_result(t: TopicElection) -> ReplicaElectionResult {
    ReplicaElectionResult::default()
        .with_topic(TopicName(str_bytes(t.topic)))
        .with_partition_result(
            t.partitions
                .into_iter()
                .map(|(partition, outcome)| {
                    let result = PartitionResult::default().with_partition_id(partition);
                    match outcome {
                        Ok(()) => result,
                        Err(e) => result
                            .with_error_code(e.kafka_error_code())
                            .with_error_message(Some(str_bytes(e.to_string()))),
                    }
                })
                .collect(),
        )
}

/// The answer to a request that failed as a whole (Kafka's
/// `ElectLeadersRequest.getErrorResponse`): the error at the top (v1+) and on every named
/// partition.
fn failed(
    targets: Option<&[(String, Vec<i32>)]>,
    version: i16,
    error_code: i16,
    message: String,
) -> ElectLeadersResponse {
    let results = targets
        .unwrap_or_default()
        .iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(topic.clone())))
                .with_partition_result(
                    partitions
                        .iter()
                        .map(|p| {
                            PartitionResult::default()
                                .with_partition_id(*p)
                                .with_error_code(error_code)
                                .with_error_message(Some(str_bytes(message.clone())))
                        })
                        .collect(),
                )
        })
        .collect();
    let response = ElectLeadersResponse::default().with_replica_election_results(results);
    if version >= 1 {
        response.with_error_code(error_code)
    } else {
        response
    }
}
