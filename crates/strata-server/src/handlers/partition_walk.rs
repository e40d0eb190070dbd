//! The walk that partition APIs share: for each topic of a request, check the topic once, then
//! for each partition resolve it on this broker, or answer the error code Kafka gives.
//!
//! Kafka's `KafkaApis` does this per API (authorize the topics, then `ReplicaManager` looks up
//! each partition with `getPartitionOrError` and checks the client's leader epoch); here it is
//! written once, so that authorization (and, for tenants, name mapping) has one place to go.
//! The walk reads one metadata image for the whole request, so a request never sees two
//! versions of the metadata.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::DeleteRecordsTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::TopicName;
use strata_meta::MetadataImage;

use crate::broker::Broker;
use crate::replica_manager::{Partition, ReplicaManager};
use crate::session::{Operation, RequestContext};
use crate::task::blocking;

/// Which replica a request needs: writes and offset lookups need the leader; reads may be
/// served by any replica (KIP-392).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader,
    AnyReplica,
}

/// A request's topic entry, as the walk sees it: a name and partitions with an index and,
/// where the API carries one, the client's view of the leader epoch.
pub(crate) trait TopicEntry {
    type Partition;
    /// The name as the response carries it.
    type Name: Send + 'static;
    fn name(&self) -> &str;
    fn owned_name(&self) -> Self::Name;
    fn partitions(&self) -> &[Self::Partition];
    fn index(partition: &Self::Partition) -> i32;
    /// The client's current leader epoch (KIP-320), -1 when it sent none.
    fn current_leader_epoch(_partition: &Self::Partition) -> i32 {
        -1
    }
}

/// One request's walk: the image it reads, the replicas it looks in and what it needs.
pub(crate) struct PartitionWalk<'a> {
    ctx: &'a RequestContext<'a>,
    replicas: &'a ReplicaManager,
    image: Arc<MetadataImage>,
    operation: Operation,
    role: Role,
}

impl<'a> PartitionWalk<'a> {
    /// A walk for `operation` on topics, needing partitions in `role`.
    pub fn new(
        broker: &'a Broker,
        ctx: &'a RequestContext<'a>,
        operation: Operation,
        role: Role,
    ) -> Self {
        Self {
            ctx,
            replicas: &broker.replicas,
            image: broker.image(),
            operation,
            role,
        }
    }

    /// Walks `topics`: `answer` builds each partition's response from its resolution, and
    /// `topic_response` each topic's from its partitions' answers, in request order.
    pub fn map<T: TopicEntry, R, TR>(
        &self,
        topics: &[T],
        mut answer: impl FnMut(&T, &T::Partition, Result<Arc<Partition>, ResponseError>) -> R,
        mut topic_response: impl FnMut(&T, Vec<R>) -> TR,
    ) -> Vec<TR> {
        topics
            .iter()
            .map(|topic| {
                // The topic is authorized once; each partition then gets, in order,
                // KAFKA_STORAGE_ERROR / NOT_LEADER_OR_FOLLOWER / UNKNOWN_TOPIC_OR_PARTITION
                // when no replica is here, the leader-epoch errors, and NOT_LEADER_OR_FOLLOWER
                // when the role needs the leader ([`hosted`]).
                let authorized = self.ctx.authorize_topic(self.operation, topic.name());
                let answers = topic
                    .partitions()
                    .iter()
                    .map(|p| {
                        let resolved = authorized.and_then(|()| {
                            hosted(
                                self.replicas,
                                &self.image,
                                self.role,
                                topic.name(),
                                T::index(p),
                                T::current_leader_epoch(p),
                            )
                        });
                        answer(topic, p, resolved)
                    })
                    .collect();
                topic_response(topic, answers)
            })
            .collect()
    }
}

impl PartitionWalk<'_> {
    /// As [`Self::map`], with the answers built on a blocking thread: resolving is in memory,
    /// but answering takes log locks or waits on the tier. `keep` takes what answering needs
    /// from each partition's request entry; `topic_response` gets the topic's name.
    pub async fn map_blocking<T, K, R, TR>(
        &self,
        topics: &[T],
        keep: impl Fn(&T::Partition) -> K,
        answer: impl Fn(K, Result<Arc<Partition>, ResponseError>) -> R + Send + 'static,
        topic_response: impl Fn(T::Name, Vec<R>) -> TR + Send + 'static,
    ) -> Vec<TR>
    where
        T: TopicEntry,
        K: Send + 'static,
        R: Send + 'static,
        TR: Send + 'static,
    {
        let resolved = self.map(
            topics,
            |_, p, partition| (keep(p), partition),
            |topic, partitions| (topic.owned_name(), partitions),
        );
        blocking(move || {
            resolved
                .into_iter()
                .map(|(name, partitions)| {
                    let answers = partitions
                        .into_iter()
                        .map(|(kept, partition)| answer(kept, partition))
                        .collect();
                    topic_response(name, answers)
                })
                .collect()
        })
        .await
    }
}

/// The partition in `role` on this broker with the client's leader epoch checked, or the error
/// code to answer: the per-partition half of [`PartitionWalk::map`], for callers that
/// resolve again on a blocking thread (Fetch re-reads its partitions on every long-poll pass).
pub(crate) fn hosted(
    replicas: &ReplicaManager,
    image: &MetadataImage,
    role: Role,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    // Kafka's `Partition.getLocalLog`: the client's epoch is checked before the role, so a
    // follower here answers a stale epoch FENCED_LEADER_EPOCH and a newer one
    // UNKNOWN_LEADER_EPOCH (a client retries those here, where leadership may be arriving),
    // and NOT_LEADER_OR_FOLLOWER only a client that knows the current epoch.
    let partition = replicas.replica_or_error(image, topic, index)?;
    check_leader_epoch(&partition, current_leader_epoch)?;
    if role == Role::Leader && !partition.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(partition)
}

/// KIP-320: a client that names a leader epoch must be talking to that epoch's leader.
fn check_leader_epoch(
    partition: &Partition,
    current_leader_epoch: i32,
) -> Result<(), ResponseError> {
    let epoch = partition.leader_epoch();
    match current_leader_epoch {
        e if e < 0 || e == epoch => Ok(()),
        e if e < epoch => Err(ResponseError::FencedLeaderEpoch),
        _ => Err(ResponseError::UnknownLeaderEpoch),
    }
}

impl TopicEntry for ListOffsetsTopic {
    type Name = TopicName;
    fn owned_name(&self) -> TopicName {
        self.name.clone()
    }
    type Partition = ListOffsetsPartition;
    fn name(&self) -> &str {
        &self.name
    }
    fn partitions(&self) -> &[ListOffsetsPartition] {
        &self.partitions
    }
    fn index(p: &ListOffsetsPartition) -> i32 {
        p.partition_index
    }
    fn current_leader_epoch(p: &ListOffsetsPartition) -> i32 {
        p.current_leader_epoch
    }
}

impl TopicEntry for OffsetForLeaderTopic {
    type Name = TopicName;
    fn owned_name(&self) -> TopicName {
        self.topic.clone()
    }
    type Partition = OffsetForLeaderPartition;
    fn name(&self) -> &str {
        &self.topic
    }
    fn partitions(&self) -> &[OffsetForLeaderPartition] {
        &self.partitions
    }
    fn index(p: &OffsetForLeaderPartition) -> i32 {
        p.partition
    }
    fn current_leader_epoch(p: &OffsetForLeaderPartition) -> i32 {
        p.current_leader_epoch
    }
}

impl TopicEntry for DeleteRecordsTopic {
    type Name = TopicName;
    fn owned_name(&self) -> TopicName {
        self.name.clone()
    }
    type Partition = kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
    fn name(&self) -> &str {
        &self.name
    }
    fn partitions(&self) -> &[Self::Partition] {
        &self.partitions
    }
    fn index(p: &Self::Partition) -> i32 {
        p.partition_index
    }
}

impl TopicEntry for TopicRequest {
    type Name = TopicName;
    fn owned_name(&self) -> TopicName {
        self.name.clone()
    }
    type Partition = i32;
    fn name(&self) -> &str {
        &self.name
    }
    fn partitions(&self) -> &[i32] {
        &self.partition_indexes
    }
    fn index(p: &i32) -> i32 {
        *p
    }
}
