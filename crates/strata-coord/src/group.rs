//! The group coordinator: Kafka 4's group coordinator shard, composed as Kafka composes it of
//! two managers:
//!
//! - `metadata` (`GroupMetadataManager`): the groups. Classic groups (JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup, generations, rebalances, static members), KIP-848 consumer groups
//!   (`crate::consumer_group`: heartbeats, epochs, assignors), the online migration between
//!   the two, and the admin views (ListGroups, DescribeGroups, ConsumerGroupDescribe).
//! - `offsets` (`OffsetMetadataManager`): the committed offsets. OffsetCommit and
//!   TxnOffsetCommit (validated by asking the group), offsets pending a transaction's marker,
//!   OffsetFetch, OffsetDelete and offset expiration.
//!
//! [`GroupCoordinator`] is the one entry point: it routes each request to its manager, and
//! where a request needs both (an offset commit or delete, DeleteGroups, expiration, loading
//! and unloading a partition of `__consumer_offsets`) it hands one manager's answer to the
//! other, as Kafka's `GroupCoordinatorShard` does: the group decides whether a member may
//! commit, the offsets whether a group still has any. Both write to one output log, held by
//! the group metadata manager, so that records keep the order they were produced in.
//!
//! It is a sans-IO state machine: it is fed requests, a reply id for requests that may wait
//! (JoinGroup, SyncGroup), and the clock; it returns completed replies and the
//! [`OffsetsRecord`]s the caller must make durable in `__consumer_offsets` before sending
//! them, in the order they were produced.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{JoinGroupRequest, SyncGroupRequest};

use crate::consumer_group::{
    ConsumerGroup, ConsumerGroupConfig, Heartbeat, HeartbeatError, HeartbeatResult, TopicView,
};
use crate::offsets_topic::OffsetsRecord;

mod metadata;
mod offsets;

pub use metadata::{
    GroupDescription, GroupState, ListedGroup, MemberDescription, PendingReply, ReplyId,
};
pub use offsets::{OffsetCommit, TopicOffsets};

use metadata::GroupMetadataManager;
use offsets::OffsetMetadataManager;

/// Group settings, with Kafka's broker property names in the field docs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms` (Kafka default 6000).
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (Kafka default 1800000).
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (Kafka default 3000).
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size` (Kafka default i32::MAX).
    pub max_size: usize,
    /// `offset.metadata.max.bytes` (Kafka default 4096).
    pub max_metadata_bytes: usize,
    /// `offsets.retention.minutes` in ms (Kafka default 7 days).
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3000,
            max_size: i32::MAX as usize,
            max_metadata_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// The group-membership part of an OffsetCommit request: what the group answers.
#[derive(Debug, Clone)]
pub struct CommitIdentity<'a> {
    pub group_id: &'a str,
    pub generation_id: i32,
    pub member_id: &'a str,
    pub group_instance_id: Option<&'a str>,
    /// OffsetCommit version: v9+ answers GROUP_ID_NOT_FOUND for an unknown group.
    pub api_version: i16,
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

pub struct GroupCoordinator {
    groups: GroupMetadataManager,
    offsets: OffsetMetadataManager,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, consumer: ConsumerGroupConfig) -> Self {
        Self {
            offsets: OffsetMetadataManager::new(&config),
            groups: GroupMetadataManager::new(config, consumer),
        }
    }

    /// Replies completed and records to persist since the last call. The caller must make the
    /// records durable before sending the replies.
    pub fn take_output(&mut self) -> (Vec<OffsetsRecord>, Vec<PendingReply>) {
        self.groups.take_output()
    }

    /// Transactional offset-commit records since the last call: the caller writes them as
    /// transactional batches of their producer.
    pub fn take_txn_records(&mut self) -> Vec<(i64, i16, OffsetsRecord)> {
        self.offsets.take_txn_records()
    }

    // ------------------------------------------------------------------ groups

    /// ConsumerGroupHeartbeat (KIP-848), with the online migration of a classic group.
    pub fn consumer_heartbeat(
        &mut self,
        heartbeat: Heartbeat,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<HeartbeatResult, HeartbeatError> {
        self.groups.consumer_heartbeat(heartbeat, topics, now_ms)
    }

    /// A KIP-848 group.
    pub fn consumer_group(&self, group_id: &str) -> Option<&ConsumerGroup> {
        self.groups.consumer_group(group_id)
    }

    /// JoinGroup. `topics` are the cluster's topics, for a consumer group that members of
    /// the classic protocol join (online migration). The answer comes out of
    /// [`Self::take_output`], now or once the rebalance completes.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        reply: ReplyId,
        version: i16,
        request: &JoinGroupRequest,
        client_id: &str,
        client_host: &str,
        topics: &[TopicView],
        now_ms: i64,
    ) {
        self.groups.join(
            reply,
            version,
            request,
            client_id,
            client_host,
            topics,
            now_ms,
        )
    }

    /// SyncGroup. The answer comes out of [`Self::take_output`], now or once the leader
    /// has sent the assignment.
    pub fn sync(
        &mut self,
        reply: ReplyId,
        version: i16,
        request: &SyncGroupRequest,
        topics: &[TopicView],
        now_ms: i64,
    ) {
        self.groups.sync(reply, version, request, topics, now_ms)
    }

    /// Heartbeat: the error code to return.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        self.groups
            .heartbeat(group_id, member_id, instance_id, generation, now_ms)
    }

    /// LeaveGroup for each (member id, group instance id); returns per-member error codes, or
    /// a group-level error.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<Vec<i16>, i16> {
        self.groups.leave(group_id, members, topics, now_ms)
    }

    /// Advances the clock: expires sessions, pending member ids, and join, initial-delay and
    /// sync deadlines.
    pub fn tick(&mut self, topics: &[TopicView], now_ms: i64) {
        self.groups.tick(topics, now_ms)
    }

    /// ListGroups, filtered by Kafka's state names and group types.
    pub fn list_groups(
        &self,
        states_filter: &[String],
        types_filter: &[String],
    ) -> Vec<ListedGroup> {
        self.groups.list_groups(states_filter, types_filter)
    }

    /// DescribeGroups for one classic group, or Kafka's `GroupIdNotFoundException` message.
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription, String> {
        self.groups.describe_group(group_id)
    }

    /// A KIP-848 group for ConsumerGroupDescribe, or Kafka's `GroupIdNotFoundException`
    /// message: the group is unknown, or it is a classic group.
    pub fn describe_consumer_group(&self, group_id: &str) -> Result<&ConsumerGroup, String> {
        self.groups.describe_consumer_group(group_id)
    }

    // ------------------------------------------------------------------ offsets

    /// OffsetCommit: one error code per offset (in order). The group decides whether the
    /// member may commit; the offsets are stored only if it may.
    pub fn commit_offsets(
        &mut self,
        who: &CommitIdentity<'_>,
        offsets: &[OffsetCommit],
        now_ms: i64,
    ) -> Vec<i16> {
        self.commit(who, offsets, None, now_ms)
    }

    /// TxnOffsetCommit: the offsets stay pending until the producer's transaction ends
    /// ([`GroupCoordinator::complete_transaction`]).
    pub fn txn_commit_offsets(
        &mut self,
        who: &CommitIdentity<'_>,
        producer: (i64, i16),
        offsets: &[OffsetCommit],
        now_ms: i64,
    ) -> Vec<i16> {
        self.commit(who, offsets, Some(producer), now_ms)
    }

    fn commit(
        &mut self,
        who: &CommitIdentity<'_>,
        offsets: &[OffsetCommit],
        producer: Option<(i64, i16)>,
        now_ms: i64,
    ) -> Vec<i16> {
        let group = self
            .groups
            .validate_offset_commit(who, producer.is_some(), now_ms);
        self.offsets.commit(
            who.group_id,
            group,
            offsets,
            producer,
            now_ms,
            self.groups.records_mut(),
        )
    }

    /// Ends the transaction of `producer_id` for every group whose offsets partition is
    /// `offsets_partition`: a commit makes its pending offsets the committed ones.
    pub fn complete_transaction(
        &mut self,
        producer_id: i64,
        commit: bool,
        offsets_partition: i32,
        partition_of: impl Fn(&str) -> i32,
    ) {
        self.offsets
            .complete_transaction(producer_id, commit, offsets_partition, partition_of)
    }

    /// Whether a transaction holds uncommitted offsets for this group partition
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.offsets
            .has_pending_txn_offset(group_id, topic, partition)
    }

    /// Committed offsets of `group_id`: for the listed partitions (`None` for ones without a
    /// commit), or every committed partition when `topics` is `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> TopicOffsets {
        self.offsets.fetch(group_id, topics)
    }

    /// OffsetDelete: the group-level error, or per-partition errors. `subscribed` tells
    /// whether the members' subscriptions include a topic.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&[Bytes], &str) -> bool,
    ) -> Result<Vec<i16>, i16> {
        let group = self.groups.offset_delete_subscriptions(group_id);
        self.offsets.delete(
            group_id,
            group,
            partitions,
            subscribed,
            self.groups.records_mut(),
        )
    }

    /// Offsets retention (KIP-211): once a group is empty, its committed offsets expire
    /// `offsets.retention.minutes` after the later of the group emptying and the commit; a
    /// group left with neither members nor offsets is removed. Groups with members keep
    /// their offsets. Returns how many offsets expired.
    pub fn expire_offsets(&mut self, now_ms: i64) -> usize {
        let mut expired = 0;
        let mut emptied = Vec::new();
        for (group_id, empty_since_ms) in self.groups.groups_with_expirable_offsets() {
            let (n, none_left) =
                self.offsets
                    .expire(&group_id, empty_since_ms, now_ms, self.groups.records_mut());
            expired += n;
            if none_left {
                emptied.push(group_id);
            }
        }
        for group_id in emptied {
            self.groups.delete_group_without_offsets(&group_id);
        }
        expired
    }

    // ------------------------------------------------------------------ both

    /// DeleteGroups for one group: the error code. The group's offsets go with it.
    pub fn delete_group(&mut self, group_id: &str) -> i16 {
        let offsets = &mut self.offsets;
        self.groups
            .delete_group(group_id, |records| offsets.delete_group(group_id, records))
    }

    /// Forgets every group (classic and KIP-848) that `moved` selects, with its committed and
    /// pending offsets: this broker no longer leads their offsets-topic partition (Kafka's
    /// `onResignation`). Members waiting for a JoinGroup or SyncGroup answer get
    /// NOT_COORDINATOR, so that they find the new coordinator. Returns how many groups went.
    pub fn unload_groups(&mut self, moved: impl Fn(&str) -> bool) -> usize {
        self.offsets.unload_groups(&moved);
        self.groups.unload_groups(moved)
    }

    /// Applies a record read back from the offsets topic at start-up. An offset creates its
    /// group (Empty) if it has none yet, as Kafka's replay does.
    pub fn load(&mut self, record: OffsetsRecord, now_ms: i64) {
        match record {
            OffsetsRecord::ConsumerGroup { group, value } => {
                self.groups.replay_consumer_group(&group, value, now_ms);
            }
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                self.groups.create_simple_group(&group, now_ms);
                self.offsets.replay(group, topic, partition, value);
            }
            OffsetsRecord::Group { group, value } => {
                let has_offsets = self.offsets.has_offsets(&group);
                if value.is_none() && !has_offsets {
                    // The group goes (see `replay_group`).
                    self.offsets.forget(&group);
                }
                self.groups.replay_group(group, value, has_offsets, now_ms);
            }
        }
    }

    /// Applies a transactional offset record read back at start-up: pending until its marker.
    pub fn load_txn_offset(&mut self, producer_id: i64, record: OffsetsRecord, now_ms: i64) {
        if let OffsetsRecord::Offset {
            group,
            topic,
            partition,
            value: Some(value),
        } = record
        {
            self.groups.create_simple_group(&group, now_ms);
            self.offsets
                .replay_txn(producer_id, group, topic, partition, value);
        }
    }
}

#[cfg(test)]
mod tests;
