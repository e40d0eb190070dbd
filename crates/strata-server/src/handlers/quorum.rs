//! DescribeQuorum (KIP-595, KIP-836; Kafka's `kafka-metadata-quorum.sh describe` and
//! `Admin.describeMetadataQuorum`): the metadata quorum as its leader sees it.
//!
//! Kafka's brokers forward DescribeQuorum to the active controller; here any node asks the
//! Raft leader for its view ([`strata_quorum::Quorum::describe`]), so every node answers
//! alike. Offsets are Raft log indexes + 1 (see `strata_quorum`'s `describe` module): the
//! high watermark is `/cluster`'s `quorum.committed_index` + 1. A single node has no Raft: it
//! answers as a quorum of one, itself leader and only voter, its metadata offset (`/cluster`'s
//! `metadata_offset`) as high watermark and log end.
//!
//! Not reported: directory ids (Strata has none; Kafka's "no directory" zero UUID is sent)
//! and, in v2, the voters' listener endpoints (`nodes` is empty): Strata's controller
//! listener speaks HTTP, not Kafka's protocol, and naming it as a Kafka endpoint would send
//! `--bootstrap-controller` tools to a port that cannot answer them.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use strata_quorum::{QuorumDescription, ReplicaDescription};

use super::{code, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

/// Kafka's name of the metadata log's topic; it has the one partition 0.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
const METADATA_PARTITION: i32 = 0;

/// The leader epoch a single node reports: it has led since its metadata log began, with no
/// election, as a one-node KRaft cluster leads in epoch 1 after its first election.
const SINGLE_NODE_EPOCH: i32 = 1;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    // As Kafka: DESCRIBE on the cluster.
    if let Err(e) = ctx.authorize_cluster(Operation::Describe) {
        let refused = DescribeQuorumResponse::default().with_error_code(e.code());
        // The message exists from v2 on.
        return if ctx.version() >= 2 {
            refused.with_error_message(Some(super::str_bytes(e.to_string())))
        } else {
            refused
        };
    }
    if !names_only_the_metadata_partition(request) {
        // As Kafka's KafkaRaftClient: every partition asked for gets the error.
        let topics = request
            .topics
            .iter()
            .map(|t| {
                TopicData::default()
                    .with_topic_name(t.topic_name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            })
                            .collect(),
                    )
            })
            .collect();
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let description = match broker.store.quorum() {
        None => single_node(broker),
        Some(quorum) => match quorum.describe().await {
            Ok(description) => description,
            Err(e) => {
                tracing::warn!(error = %e, "DescribeQuorum: the metadata leader did not answer");
                return singleton(
                    PartitionData::default()
                        .with_error_code(code(ResponseError::NotLeaderOrFollower))
                        .with_error_message(Some(str_bytes(e.to_string()))),
                );
            }
        },
    };
    let leader_id = description.leader_id;
    singleton(
        PartitionData::default()
            .with_leader_id(BrokerId(leader_id))
            .with_leader_epoch(i32::try_from(description.leader_epoch).unwrap_or(i32::MAX))
            .with_high_watermark(description.high_watermark)
            .with_current_voters(description.voters.iter().map(replica_state).collect())
            .with_observers(description.observers.iter().map(replica_state).collect()),
    )
}

/// Kafka's `hasValidTopicPartition`: exactly one topic, `__cluster_metadata`, with exactly
/// its partition 0.
fn names_only_the_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    match request.topics.as_slice() {
        [topic] => {
            topic.topic_name.as_str() == METADATA_TOPIC
                && matches!(topic.partitions.as_slice(), [p] if p.partition_index == METADATA_PARTITION)
        }
        _ => false,
    }
}

/// The response with `partition` as `__cluster_metadata`-0.
fn singleton(partition: PartitionData) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
        .with_partitions(vec![partition.with_partition_index(METADATA_PARTITION)])])
}

fn replica_state(replica: &ReplicaDescription) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(replica.node_id))
        .with_log_end_offset(replica.log_end_offset)
        .with_last_fetch_timestamp(replica.last_fetch_timestamp_ms)
        .with_last_caught_up_timestamp(replica.last_caught_up_timestamp_ms)
}

/// A node without `--controller-quorum-voters`: a quorum of one, caught up by definition.
fn single_node(broker: &Broker) -> QuorumDescription {
    let node_id = broker.config.node_id;
    let offset = i64::try_from(broker.image().offset).unwrap_or(i64::MAX);
    let now_ms = strata_quorum::wall_clock_ms();
    QuorumDescription {
        leader_id: node_id,
        leader_epoch: SINGLE_NODE_EPOCH as u64,
        high_watermark: offset,
        voters: vec![ReplicaDescription {
            node_id,
            log_end_offset: offset,
            last_fetch_timestamp_ms: now_ms,
            last_caught_up_timestamp_ms: now_ms,
        }],
        observers: Vec::new(),
        voter_addresses: Default::default(),
    }
}
