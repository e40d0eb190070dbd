//! Online migration of a group between the classic and the consumer protocol (Kafka 4,
//! `group.consumer.migration.policy`):
//!
//! - upgrade: a ConsumerGroupHeartbeat joins a classic group with members. The classic
//!   members become members of the classic protocol in a new consumer group at epoch =
//!   generation, keeping their last assignment as their target; members waiting for a
//!   JoinGroup or SyncGroup answer are told REBALANCE_IN_PROGRESS. The classic group's
//!   metadata is tombstoned; its committed offsets stay.
//! - downgrade: the last member of the consumer protocol leaves (heartbeat with -1, expiry,
//!   or a LeaveGroup naming it) while members of the classic protocol remain. They become
//!   the members of a classic group at generation = group epoch, each with its target
//!   assignment, and the group rebalances, which their next heartbeat tells them. The
//!   consumer group is tombstoned.
//! - downgrade by replacement: a static member joins with the classic protocol under the
//!   instance id of the last member of the consumer protocol (Kafka's
//!   `validateOnlineDowngradeWithReplacedMember`). It takes that member's place and target;
//!   the classic group stays Stable, unless the joining member subscribes to other topics,
//!   when it rebalances (Kafka 4.1.1, KAFKA-19546).
//!
//! Kafka's `convertToConsumerGroup` / `convertToClassicGroup`.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{Group, GroupMetadataManager, GroupState, Member, CONSUMER_PROTOCOL_TYPE};
use crate::consumer_group::{
    encode_assignment, ClassicMemberState, ConsumerGroup, HeartbeatError, TopicView,
};
use crate::offsets_topic::OffsetsRecord;

fn upgrade_refused(group_id: &str, why: &str) -> HeartbeatError {
    tracing::info!(group = %group_id, why, "cannot upgrade the classic group to a consumer group");
    HeartbeatError {
        error: ResponseError::GroupIdNotFound,
        message: format!(
            "Cannot upgrade classic group {group_id} to consumer group because {why}."
        ),
    }
}

impl GroupMetadataManager {
    /// Kafka's `validateOnlineUpgrade` and `ConsumerGroup.fromClassicGroup`: the consumer
    /// group the classic group `group_id` (with members) becomes. Changes nothing.
    pub(super) fn consumer_group_from_classic(
        &self,
        group_id: &str,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<ConsumerGroup, HeartbeatError> {
        let group = self
            .groups
            .get(group_id)
            .expect("a classic group with members");
        if !self.consumer.config.migration_policy.upgrade_enabled() {
            return Err(upgrade_refused(group_id, "online upgrade is disabled"));
        }
        if group.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return Err(upgrade_refused(
                group_id,
                "the group does not use the consumer embedded protocol",
            ));
        }
        if group.members.len() > self.consumer.config.max_size {
            return Err(upgrade_refused(
                group_id,
                "the group size exceeds the consumer group maximum size",
            ));
        }
        // A group that never completed a join has no protocol yet: its members' first.
        let protocol = group.protocol.clone().unwrap_or_else(|| {
            group
                .members
                .values()
                .next()
                .and_then(|m| m.protocols.first())
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        });
        let members = group
            .members
            .values()
            .map(|m| ClassicMemberState {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocols: m.protocols.clone(),
                assignment: m.assignment.clone(),
            })
            .collect();
        ConsumerGroup::from_classic(group.generation, &protocol, members, topics, |session| {
            now_ms + session as i64
        })
        .map_err(|why| upgrade_refused(group_id, why))
    }

    /// Completes an upgrade once the consumer group took over `group_id`: members waiting on
    /// the classic group hear REBALANCE_IN_PROGRESS, its metadata is tombstoned and it keeps
    /// only its committed offsets.
    pub(super) fn retire_classic_group(&mut self, group_id: &str, now_ms: i64) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        for member in group.members.values_mut() {
            member.fail_waiting(ResponseError::RebalanceInProgress, &mut self.replies);
        }
        group.reset_membership(now_ms);
        self.records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        tracing::info!(group = %group_id, "converted the classic group to a consumer group");
    }

    /// Kafka's `convertToClassicGroup`: the consumer group `group_id` becomes a classic
    /// group of its members but `leaving` (all of the classic protocol), at generation =
    /// group epoch, each with its target assignment, its first member the leader. With
    /// `rebalance` the group then rebalances (always when members left; after a static
    /// member's replacement only if it changed the subscription), otherwise it stays Stable
    /// and members collect their assignment with SyncGroup at that generation.
    pub(super) fn downgrade_to_classic(
        &mut self,
        group_id: &str,
        leaving: &[String],
        topics: &[TopicView],
        now_ms: i64,
        rebalance: bool,
    ) {
        let Some(consumer_group) = self.consumer.groups.remove(group_id) else {
            return;
        };
        self.records.push(OffsetsRecord::ConsumerGroup {
            group: group_id.to_string(),
            value: None,
        });
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now_ms));
        group.reset_membership(now_ms);
        group.generation = consumer_group.group_epoch;
        group.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
        let downgraded = consumer_group.downgraded_members(leaving);
        for m in &downgraded {
            if let Some(instance) = &m.instance_id {
                group.static_members.insert(instance.clone(), m.id.clone());
            }
            group.members.insert(
                m.id.clone(),
                Member {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.classic.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m.classic.protocols.clone(),
                    assignment: Bytes::new(),
                    awaiting_join: None,
                    awaiting_sync: None,
                    heartbeat_deadline_ms: now_ms + m.classic.session_timeout_ms as i64,
                },
            );
        }
        group.protocol = group.select_protocol();
        // Kafka's `ClassicGroup.add` makes the first member the leader.
        group.leader = group.members.keys().next().cloned();
        let protocol = group.protocol.clone().unwrap_or_default();
        for m in &downgraded {
            let member = group.members.get_mut(&m.id).expect("inserted");
            // In the version of the member's subscription for the group's protocol.
            member.assignment = encode_assignment(&m.target, topics, &member.metadata(&protocol));
        }
        group.transition(GroupState::Stable, now_ms);
        tracing::info!(group = %group_id, generation = group.generation, members = group.members.len(), "converted the consumer group to a classic group");
        self.persist_group(group_id);
        if rebalance {
            self.prepare_rebalance(group_id, now_ms);
        }
    }
}

#[cfg(test)]
mod tests;
