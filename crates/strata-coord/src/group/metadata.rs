//! Group metadata: Kafka 4's `GroupMetadataManager`. It owns the groups (classic groups and
//! KIP-848 consumer groups), their members, generations and epochs, rebalances, the online
//! migration between the two protocols, and the admin views; it answers, for the offset
//! manager, whether a member may commit. It holds no offsets.
//!
//! A classic group (Kafka's `ClassicGroup`) moves Empty → PreparingRebalance →
//! CompletingRebalance → Stable, and Dead once deleted. A rebalance collects a JoinGroup from
//! every member (or waits until the rebalance timeout, then drops the dynamic members that did
//! not rejoin), picks a protocol all members support, answers every JoinGroup (the leader gets
//! the member list), and waits for the leader's SyncGroup, whose assignment is handed to each
//! member's SyncGroup.
//!
//! Implemented as in Kafka 4: member ids required on first join (KIP-394, JoinGroup v4+),
//! static membership (KIP-345: a member that rejoins with the same `group.instance.id` takes
//! its old place without a rebalance while the group is stable), batched LeaveGroup (v3+),
//! the initial rebalance delay for a new group, session and rebalance timeouts, and
//! `group.max.size`. Requests that may wait carry a [`ReplyId`]; their answers come out of
//! [`GroupMetadataManager::take_output`] together with the records to persist.
//!
//! Every group id with committed offsets has a classic-group entry here (Kafka creates a
//! "simple" classic group for them too): an Empty one for a group that only commits offsets,
//! or beside a KIP-848 group for its offsets. The offsets expire through that entry, and go
//! when it is deleted.

use std::collections::HashMap;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{
    JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{code, CommitIdentity, GroupConfig};
use crate::consumer_group::{
    validate_heartbeat, ClassicJoin, ClassicJoinOutcome, ConsumerGroup, ConsumerGroupConfig,
    ConsumerGroupSnapshot, ConsumerGroups, Heartbeat, HeartbeatError, HeartbeatResult, TopicView,
    JOIN_EPOCH,
};
use crate::offsets_topic::{OffsetsRecord, StoredGroup, StoredMember};

mod migration;

/// The protocol type of consumers (the `consumer` embedded protocol).
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Identifies a waiting JoinGroup or SyncGroup request of the caller.
pub type ReplyId = u64;

/// A completed answer to a request that waited.
#[derive(Debug)]
pub enum PendingReply {
    Join(ReplyId, JoinGroupResponse),
    Sync(ReplyId, SyncGroupResponse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    /// Protocols in the member's order of preference: (name, metadata).
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete, with its API version.
    awaiting_join: Option<(ReplyId, i16)>,
    awaiting_sync: Option<(ReplyId, i16)>,
    heartbeat_deadline_ms: i64,
}

impl Member {
    /// Answers the member's waiting JoinGroup and SyncGroup, if it has any, with `error`:
    /// it is gone, fenced, or must find the group again.
    fn fail_waiting(&mut self, error: ResponseError, replies: &mut Vec<PendingReply>) {
        if let Some((reply, version)) = self.awaiting_join.take() {
            replies.push(PendingReply::Join(
                reply,
                join_error(version, &self.id, error),
            ));
        }
        if let Some((reply, _)) = self.awaiting_sync.take() {
            replies.push(PendingReply::Sync(reply, sync_error(error)));
        }
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order; the first member becomes leader when the leader leaves.
    members: IndexMap<String, Member>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting their second JoinGroup,
    /// with the deadline after which they are forgotten.
    pending_members: HashMap<String, i64>,
    /// When a PreparingRebalance gives up on members that did not rejoin.
    join_deadline_ms: i64,
    /// While set, a new group waits for more members (initial rebalance delay):
    /// (current deadline, latest possible deadline).
    initial_delay: Option<(i64, i64)>,
    /// When a CompletingRebalance gives up on members that did not send SyncGroup.
    sync_deadline_ms: i64,
    /// When the group last changed state: for an Empty group, when it emptied, which is
    /// where the retention of its offsets starts.
    state_timestamp_ms: i64,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline_ms: i64::MAX,
            initial_delay: None,
            sync_deadline_ms: i64::MAX,
            state_timestamp_ms: now_ms,
        }
    }

    /// Forgets the members and the generation's protocol; the group's committed offsets (in
    /// the offset manager) stay.
    fn reset_membership(&mut self, now_ms: i64) {
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.leader = None;
        self.protocol = None;
        self.protocol_type = None;
        self.initial_delay = None;
        self.join_deadline_ms = i64::MAX;
        self.sync_deadline_ms = i64::MAX;
        self.transition(GroupState::Empty, now_ms);
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Protocols every member supports, chosen by the members' votes (each votes for its most
    /// preferred candidate); ties go to the first member's preference.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some(choice) = m
                .protocols
                .iter()
                .map(|(n, _)| n)
                .find(|n| candidates.contains(n))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == choice) {
                    v.0 += 1;
                }
            }
        }
        // max_by_key keeps the last maximum; iterate reversed so the first one wins ties.
        votes
            .iter()
            .rev()
            .max_by_key(|(n, _)| *n)
            .map(|(_, c)| (*c).clone())
    }

    /// Whether a member with these protocols could join the group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(n, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
    }

    fn stored(&self) -> StoredGroup {
        let protocol = self.protocol.clone().unwrap_or_default();
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }
}

/// One group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name (`Stable`, `Empty`, … for either kind of group).
    pub state: &'static str,
    /// `classic` or `consumer`.
    pub group_type: &'static str,
}

/// One member's description, for DescribeGroups.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// DescribeGroups for one group.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// The groups of this coordinator, classic and KIP-848, and what they produced.
pub(super) struct GroupMetadataManager {
    config: GroupConfig,
    /// Classic groups, and the Empty entries that stand for groups with only offsets.
    groups: HashMap<String, Group>,
    consumer: ConsumerGroups,
    /// Records to make durable, in the order they were produced: the coordinator's one
    /// output log, which the offset manager appends to as well (through [`Self::records_mut`]),
    /// so that a group's records and its offsets' records keep their order.
    records: Vec<OffsetsRecord>,
    replies: Vec<PendingReply>,
}

pub(super) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A JoinGroup error response in the shape each version expects.
fn join_error(version: i16, member_id: &str, error: ResponseError) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code(error))
        .with_generation_id(-1)
        .with_member_id(s(member_id))
        .with_protocol_name(if version >= 7 {
            None
        } else {
            Some(StrBytes::default())
        })
}

fn sync_error(error: ResponseError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(code(error))
}

impl GroupMetadataManager {
    pub(super) fn new(config: GroupConfig, consumer: ConsumerGroupConfig) -> Self {
        Self {
            config,
            groups: HashMap::new(),
            consumer: ConsumerGroups::new(consumer),
            records: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// ConsumerGroupHeartbeat (KIP-848). A joining heartbeat to a classic group with members
    /// upgrades it to a consumer group when `group.consumer.migration.policy` allows it
    /// (Kafka's `validateOnlineUpgrade` and `convertToConsumerGroup`); the conversion and the
    /// join are applied together or not at all. Any other heartbeat to a classic group gets
    /// GROUP_ID_NOT_FOUND. A member leaving with -1 whose departure leaves only members of
    /// the classic protocol turns the group back into a classic group (the downgrade).
    pub(super) fn consumer_heartbeat(
        &mut self,
        heartbeat: Heartbeat,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<HeartbeatResult, HeartbeatError> {
        validate_heartbeat(&heartbeat)?;
        let group_id = heartbeat.group_id.clone();
        // A classic group (with members, or only committed offsets) answers any heartbeat
        // but a join as Kafka's `getOrMaybeCreateConsumerGroup` / `consumerGroup` do.
        let classic_members = match self.groups.get(&group_id) {
            Some(g) if !self.consumer.groups.contains_key(&group_id) => Some(g.members.len()),
            _ => None,
        };
        if classic_members.is_some() && heartbeat.member_epoch != JOIN_EPOCH {
            return Err(HeartbeatError {
                error: ResponseError::GroupIdNotFound,
                message: format!("Group {group_id} is not a consumer group."),
            });
        }
        if classic_members.is_some_and(|n| n > 0) {
            let converted = self.consumer_group_from_classic(&group_id, topics, now_ms)?;
            self.consumer.groups.insert(group_id.clone(), converted);
            let result = self.consumer.heartbeat(heartbeat, topics, now_ms);
            if result.is_err() {
                // Kafka writes the conversion and the join in one batch: neither happened.
                self.consumer.groups.remove(&group_id);
                return result;
            }
            self.retire_classic_group(&group_id, now_ms);
            self.persist_consumer_group(&group_id, None);
            return result;
        }
        if let Some(leaving) = self.consumer.leaving_member(&heartbeat) {
            let leaving = vec![leaving];
            if self.consumer.downgrades_without(&group_id, &leaving) {
                self.downgrade_to_classic(&group_id, &leaving, topics, now_ms, true);
                return Ok(HeartbeatResult {
                    member_id: heartbeat.member_id,
                    member_epoch: heartbeat.member_epoch,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                });
            }
        }
        let before = self.consumer.snapshot(&group_id);
        let result = self.consumer.heartbeat(heartbeat, topics, now_ms);
        self.persist_consumer_group(&group_id, before);
        result
    }

    /// Removes `ids` from a consumer group (leave, expiry), or, when that leaves only members
    /// of the classic protocol, converts the group into a classic group without them.
    fn fence_consumer_members(
        &mut self,
        group_id: &str,
        ids: &[String],
        topics: &[TopicView],
        now_ms: i64,
    ) {
        if self.consumer.downgrades_without(group_id, ids) {
            self.downgrade_to_classic(group_id, ids, topics, now_ms, true);
            return;
        }
        let before = self.consumer.snapshot(group_id);
        self.consumer.remove_members(group_id, ids, topics);
        self.persist_consumer_group(group_id, before);
    }

    /// Writes the group's snapshot if it differs from `before`.
    fn persist_consumer_group(&mut self, group_id: &str, before: Option<ConsumerGroupSnapshot>) {
        let after = self.consumer.snapshot(group_id);
        if after != before {
            self.records.push(OffsetsRecord::ConsumerGroup {
                group: group_id.to_string(),
                value: after,
            });
        }
    }

    /// A KIP-848 group, for ConsumerGroupDescribe.
    pub(super) fn consumer_group(&self, group_id: &str) -> Option<&ConsumerGroup> {
        self.consumer.groups.get(group_id)
    }

    /// Replies completed and records to persist since the last call. The caller must make the
    /// records durable before sending the replies.
    pub(super) fn take_output(&mut self) -> (Vec<OffsetsRecord>, Vec<PendingReply>) {
        (
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.replies),
        )
    }

    /// The output log, for the offset manager's records.
    pub(super) fn records_mut(&mut self) -> &mut Vec<OffsetsRecord> {
        &mut self.records
    }

    /// Kafka's member id format: the client id (or group instance id) and a UUID.
    fn new_member_id(&mut self, prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    fn persist_group(&mut self, group_id: &str) {
        if let Some(g) = self.groups.get(group_id) {
            self.records.push(OffsetsRecord::Group {
                group: group_id.to_string(),
                value: Some(g.stored()),
            });
        }
    }

    // ------------------------------------------------------------------ JoinGroup

    /// JoinGroup. `topics` are the cluster's topics, for a consumer group that members of
    /// the classic protocol join (online migration).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join(
        &mut self,
        reply: ReplyId,
        version: i16,
        request: &JoinGroupRequest,
        client_id: &str,
        client_host: &str,
        topics: &[TopicView],
        now_ms: i64,
    ) {
        let member_id = request.member_id.to_string();
        let group_id = request.group_id.to_string();
        let fail = |this: &mut Self, e| {
            this.replies.push(PendingReply::Join(
                reply,
                join_error(version, &member_id, e),
            ))
        };
        if group_id.is_empty() {
            return fail(self, ResponseError::InvalidGroupId);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(self, ResponseError::InvalidSessionTimeout);
        }
        let instance_id = request.group_instance_id.as_ref().map(|i| i.to_string());
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        // v0 has no rebalance timeout: it equals the session timeout.
        let rebalance_timeout_ms = if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        if self.consumer.has_members(&group_id) {
            let join = ClassicJoin {
                group_id: &group_id,
                member_id: &member_id,
                instance_id: instance_id.as_deref(),
                protocol_type: &request.protocol_type,
                protocols: &protocols,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms,
                client_id,
                client_host,
                api_version: version,
            };
            let before = self.consumer.snapshot(&group_id);
            let outcome = self.consumer.classic_join(join, topics, now_ms);
            match &outcome {
                Ok(ClassicJoinOutcome::Joined {
                    downgrade: Some(d), ..
                }) => self.downgrade_to_classic(&group_id, &[], topics, now_ms, d.rebalance),
                _ => self.persist_consumer_group(&group_id, before),
            }
            let response = match outcome {
                Ok(ClassicJoinOutcome::Joined {
                    member_id,
                    generation,
                    protocol_name,
                    ..
                }) => JoinGroupResponse::default()
                    .with_generation_id(generation)
                    .with_protocol_type(Some(s(CONSUMER_PROTOCOL_TYPE)))
                    .with_protocol_name(Some(s(&protocol_name)))
                    .with_member_id(s(&member_id)),
                Ok(ClassicJoinOutcome::MemberIdRequired(id)) => {
                    join_error(version, &id, ResponseError::MemberIdRequired)
                }
                Err(e) => join_error(version, &member_id, e),
            };
            self.replies.push(PendingReply::Join(reply, response));
            return;
        }
        if self.consumer.groups.remove(&group_id).is_some() {
            // An empty consumer group gives its id to the classic group (Kafka's
            // `maybeDeleteEmptyConsumerGroup`); its offsets stay.
            tracing::info!(group = %group_id, "converted the empty consumer group to a classic group");
            self.records.push(OffsetsRecord::ConsumerGroup {
                group: group_id.clone(),
                value: None,
            });
        }
        if !self.groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                return fail(self, ResponseError::UnknownMemberId);
            }
            self.groups
                .insert(group_id.clone(), Group::new(&group_id, now_ms));
        }
        let group = self.groups.get(&group_id).expect("inserted above");
        if group.state == GroupState::Dead {
            return fail(self, ResponseError::CoordinatorNotAvailable);
        }
        if !group.supports(&request.protocol_type, &protocols) {
            return fail(self, ResponseError::InconsistentGroupProtocol);
        }
        let is_new = member_id.is_empty() || group.pending_members.contains_key(&member_id);
        let known_static = instance_id
            .as_ref()
            .and_then(|i| group.static_members.get(i))
            .cloned();
        if is_new
            && known_static.is_none()
            && group.members.len() + group.pending_members.len() >= self.config.max_size
        {
            return fail(self, ResponseError::GroupMaxSizeReached);
        }
        let template = Member {
            id: member_id.clone(),
            instance_id: instance_id.clone(),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocols,
            assignment: Bytes::new(),
            awaiting_join: Some((reply, version)),
            awaiting_sync: None,
            heartbeat_deadline_ms: now_ms + request.session_timeout_ms as i64,
        };
        if member_id.is_empty() {
            if let Some(old_id) = known_static {
                return self.rejoin_static_member(
                    &group_id,
                    &old_id,
                    template,
                    request.protocol_type.as_str(),
                    now_ms,
                );
            }
            let prefix = instance_id.clone().unwrap_or_else(|| client_id.to_string());
            let new_id = self.new_member_id(&prefix);
            let group = self.groups.get_mut(&group_id).expect("exists");
            if instance_id.is_none() && version >= 4 {
                // KIP-394: hand out the id and make the client come back with it.
                group
                    .pending_members
                    .insert(new_id.clone(), now_ms + request.session_timeout_ms as i64);
                self.replies.push(PendingReply::Join(
                    reply,
                    join_error(version, &new_id, ResponseError::MemberIdRequired),
                ));
                return;
            }
            let member = Member {
                id: new_id,
                ..template
            };
            return self.add_member_and_rebalance(
                &group_id,
                member,
                &request.protocol_type,
                now_ms,
            );
        }
        let group = self.groups.get_mut(&group_id).expect("exists");
        if group.pending_members.remove(&member_id).is_some() {
            return self.add_member_and_rebalance(
                &group_id,
                template,
                &request.protocol_type,
                now_ms,
            );
        }
        if let Some(instance) = &instance_id {
            if group
                .static_members
                .get(instance)
                .is_some_and(|id| *id != member_id)
            {
                return fail(self, ResponseError::FencedInstanceId);
            }
        }
        let Some(member) = group.members.get_mut(&member_id) else {
            return fail(self, ResponseError::UnknownMemberId);
        };
        let same_protocols = member.protocols == template.protocols;
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(self, ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                update_member(member, template);
                self.try_complete_join(&group_id, now_ms);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same_protocols && !(group.state == GroupState::Stable && is_leader) =>
            {
                // The member lost the JoinGroup answer of the current generation: repeat it.
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
                let response = current_generation_response(group, &member_id, version, false);
                self.replies.push(PendingReply::Join(reply, response));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                update_member(member, template);
                self.prepare_rebalance(&group_id, now_ms);
            }
        }
    }

    /// KIP-345: a static member restarted and rejoins without its member id.
    fn rejoin_static_member(
        &mut self,
        group_id: &str,
        old_id: &str,
        template: Member,
        protocol_type: &str,
        now_ms: i64,
    ) {
        let instance = template.instance_id.clone().expect("static member");
        let new_id = self.new_member_id(&instance);
        let group = self.groups.get_mut(group_id).expect("exists");
        let Some(mut member) = group.members.shift_remove(old_id) else {
            return;
        };
        // An old incarnation still waiting is fenced.
        member.fail_waiting(ResponseError::FencedInstanceId, &mut self.replies);
        let (reply, version) = template.awaiting_join.expect("join request");
        let old_protocols = std::mem::replace(&mut member.protocols, template.protocols.clone());
        member.id = new_id.clone();
        member.session_timeout_ms = template.session_timeout_ms;
        member.rebalance_timeout_ms = template.rebalance_timeout_ms;
        member.client_id = template.client_id;
        member.client_host = template.client_host;
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
        group.members.insert(new_id.clone(), member);
        group.static_members.insert(instance, new_id.clone());
        if group.leader.as_deref() == Some(old_id) {
            group.leader = Some(new_id.clone());
        }
        tracing::info!(group = %group_id, old = %old_id, new = %new_id, "static member rejoined");
        match group.state {
            GroupState::Stable
                if group.select_protocol() == group.protocol
                    && group.protocol_type.as_deref() == Some(protocol_type) =>
            {
                let is_leader = group.leader.as_deref() == Some(new_id.as_str());
                let response = current_generation_response(group, &new_id, version, is_leader);
                self.persist_group(group_id);
                self.replies.push(PendingReply::Join(reply, response));
            }
            _ => {
                let group = self.groups.get_mut(group_id).expect("exists");
                let member = group.members.get_mut(&new_id).expect("inserted");
                member.awaiting_join = Some((reply, version));
                if old_protocols != member.protocols
                    || group.state != GroupState::PreparingRebalance
                {
                    self.prepare_rebalance(group_id, now_ms);
                } else {
                    self.try_complete_join(group_id, now_ms);
                }
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        group_id: &str,
        member: Member,
        protocol_type: &str,
        now_ms: i64,
    ) {
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("exists");
        if group.members.is_empty() {
            group.protocol_type = Some(protocol_type.to_string());
        }
        if let Some(instance) = &member.instance_id {
            group
                .static_members
                .insert(instance.clone(), member.id.clone());
        }
        if group.leader.is_none() {
            group.leader = Some(member.id.clone());
        }
        tracing::debug!(group = %group_id, member = %member.id, "member joining");
        group.members.insert(member.id.clone(), member);
        if let Some((deadline, max)) = group.initial_delay.as_mut() {
            // Another member arrived during the initial delay: wait a little longer for more.
            *deadline = (now_ms + initial_delay_ms).min(*max);
        }
        match group.state {
            GroupState::PreparingRebalance => self.try_complete_join(group_id, now_ms),
            _ => self.prepare_rebalance(group_id, now_ms),
        }
    }

    fn prepare_rebalance(&mut self, group_id: &str, now_ms: i64) {
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("exists");
        if group.state == GroupState::CompletingRebalance {
            // Kafka's `resetAndPropagateAssignmentWithError`: the generation that is given up
            // never had its assignment, and the previous one's is no longer anybody's.
            for m in group.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some((r, _)) = m.awaiting_sync.take() {
                    self.replies.push(PendingReply::Sync(
                        r,
                        sync_error(ResponseError::RebalanceInProgress),
                    ));
                }
            }
        }
        let rebalance_timeout_ms = group.max_rebalance_timeout_ms();
        if group.state == GroupState::Empty && initial_delay_ms > 0 {
            let max = now_ms + rebalance_timeout_ms.max(initial_delay_ms);
            group.initial_delay = Some(((now_ms + initial_delay_ms).min(max), max));
        }
        group.join_deadline_ms = now_ms + rebalance_timeout_ms;
        group.sync_deadline_ms = i64::MAX;
        group.transition(GroupState::PreparingRebalance, now_ms);
        tracing::info!(group = %group_id, generation = group.generation, members = group.members.len(), "preparing to rebalance");
        self.try_complete_join(group_id, now_ms);
    }

    fn try_complete_join(&mut self, group_id: &str, now_ms: i64) {
        let group = self.groups.get(group_id).expect("exists");
        if group.state != GroupState::PreparingRebalance || group.initial_delay.is_some() {
            return;
        }
        let all_joined = group.pending_members.is_empty()
            && group.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined {
            self.complete_join(group_id, now_ms);
        }
    }

    /// Ends the join phase: drops dynamic members that did not rejoin, starts the next
    /// generation and answers every waiting JoinGroup.
    fn complete_join(&mut self, group_id: &str, now_ms: i64) {
        let group = self.groups.get_mut(group_id).expect("exists");
        let gone: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            group.members.shift_remove(&id);
            tracing::info!(group = %group_id, member = %id, "member did not rejoin in time; removed");
        }
        if group
            .leader
            .as_ref()
            .is_none_or(|l| !group.members.contains_key(l))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.initial_delay = None;
        group.join_deadline_ms = i64::MAX;
        group.generation += 1;
        if group.members.is_empty() {
            group.protocol = None;
            group.protocol_type = None;
            group.transition(GroupState::Empty, now_ms);
            tracing::info!(group = %group_id, generation = group.generation, "group is empty");
            self.persist_group(group_id);
            return;
        }
        group.protocol = group.select_protocol();
        group.transition(GroupState::CompletingRebalance, now_ms);
        group.sync_deadline_ms = now_ms + group.max_rebalance_timeout_ms();
        tracing::info!(group = %group_id, generation = group.generation, members = group.members.len(), protocol = ?group.protocol, "rebalance: join phase complete");
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let group = self.groups.get_mut(group_id).expect("exists");
            let member = group.members.get_mut(&id).expect("listed");
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
            if let Some((reply, version)) = member.awaiting_join.take() {
                let response = current_generation_response(group, &id, version, false);
                self.replies.push(PendingReply::Join(reply, response));
            }
        }
    }

    // ------------------------------------------------------------------ SyncGroup

    pub(super) fn sync(
        &mut self,
        reply: ReplyId,
        version: i16,
        request: &SyncGroupRequest,
        topics: &[TopicView],
        now_ms: i64,
    ) {
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        let fail = |this: &mut Self, e| this.replies.push(PendingReply::Sync(reply, sync_error(e)));
        if self.consumer.has_members(&group_id) {
            let response = match self.consumer.classic_sync(
                &group_id,
                &member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                request.protocol_type.as_deref(),
                request.protocol_name.as_deref(),
                topics,
                now_ms,
            ) {
                Ok(assignment) => {
                    let r = SyncGroupResponse::default().with_assignment(assignment);
                    if version >= 5 {
                        r.with_protocol_type(request.protocol_type.clone())
                            .with_protocol_name(request.protocol_name.clone())
                    } else {
                        r
                    }
                }
                Err(e) => sync_error(e),
            };
            self.replies.push(PendingReply::Sync(reply, response));
            return;
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return fail(self, ResponseError::UnknownMemberId);
        };
        if let Err(e) = validate_member(
            group,
            &member_id,
            request.group_instance_id.as_ref().map(|i| i.as_str()),
        ) {
            return fail(self, e);
        }
        if request.generation_id != group.generation {
            return fail(self, ResponseError::IllegalGeneration);
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t.as_str()) != group.protocol_type.as_deref())
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p.as_str()) != group.protocol.as_deref())
        {
            return fail(self, ResponseError::InconsistentGroupProtocol);
        }
        let protocol_type = group.protocol_type.clone().map(|t| s(&t));
        let protocol = group.protocol.clone().map(|p| s(&p));
        let ok = |assignment: Bytes| {
            let r = SyncGroupResponse::default().with_assignment(assignment);
            if version >= 5 {
                r.with_protocol_type(protocol_type.clone())
                    .with_protocol_name(protocol.clone())
            } else {
                r
            }
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(self, ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(self, ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let member = group.members.get_mut(&member_id).expect("validated");
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
                let assignment = member.assignment.clone();
                self.replies.push(PendingReply::Sync(reply, ok(assignment)));
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&member_id).expect("validated");
                member.awaiting_sync = Some((reply, version));
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
                if group.leader.as_deref() != Some(member_id.as_str()) {
                    return;
                }
                let assignments: HashMap<String, Bytes> = request
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                    .collect();
                for m in group.members.values_mut() {
                    m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                }
                group.sync_deadline_ms = i64::MAX;
                group.transition(GroupState::Stable, now_ms);
                tracing::info!(group = %group_id, generation = group.generation, "group is stable");
                let waiting: Vec<(ReplyId, Bytes)> = group
                    .members
                    .values_mut()
                    .filter_map(|m| {
                        m.awaiting_sync
                            .take()
                            .map(|(r, _)| (r, m.assignment.clone()))
                    })
                    .collect();
                self.persist_group(&group_id);
                for (r, assignment) in waiting {
                    self.replies.push(PendingReply::Sync(r, ok(assignment)));
                }
            }
        }
    }

    // ------------------------------------------------------------------ Heartbeat, LeaveGroup

    /// Heartbeat: the error code to return.
    pub(super) fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        if self.consumer.has_members(group_id) {
            return match self.consumer.classic_heartbeat(
                group_id,
                member_id,
                instance_id,
                generation,
                now_ms,
            ) {
                Ok(()) => 0,
                Err(e) => code(e),
            };
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if let Err(e) = validate_member(group, member_id, instance_id) {
            return code(e);
        }
        if generation != group.generation {
            return code(ResponseError::IllegalGeneration);
        }
        let state = group.state;
        let member = group.members.get_mut(member_id).expect("validated");
        match state {
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
                code(ResponseError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
                0
            }
        }
    }

    /// LeaveGroup for each (member id, group instance id); returns per-member error codes, or
    /// a group-level error.
    pub(super) fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<Vec<i16>, i16> {
        // Kafka's `classicGroupLeaveToConsumerGroup`, for a consumer group with or without
        // members: each named member is removed whatever protocol it uses (a member of the
        // consumer protocol too; if it was the last one, the group downgrades), or gets its
        // own error.
        if self.consumer.groups.contains_key(group_id) {
            let resolved = self.consumer.classic_leaving(group_id, members);
            let mut leaving: Vec<String> = resolved.iter().flatten().cloned().collect();
            leaving.dedup();
            if !leaving.is_empty() {
                self.fence_consumer_members(group_id, &leaving, topics, now_ms);
            }
            return Ok(resolved
                .into_iter()
                .map(|r| r.map_or_else(code, |_| 0))
                .collect());
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(code(ResponseError::UnknownMemberId));
        };
        let mut results = Vec::with_capacity(members.len());
        let mut removed = Vec::new();
        for (member_id, instance_id) in members {
            // A static member may leave by instance id alone.
            let resolved = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => Ok(id.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if group.pending_members.remove(member_id).is_some() => {
                    results.push(0);
                    continue;
                }
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            match resolved {
                Ok(id) => {
                    removed.push(id);
                    results.push(0);
                }
                Err(e) => results.push(code(e)),
            }
        }
        for id in removed {
            tracing::info!(group = %group_id, member = %id, "member left");
            self.remove_member(group_id, &id, now_ms);
        }
        Ok(results)
    }

    fn remove_member(&mut self, group_id: &str, member_id: &str, now_ms: i64) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let Some(mut member) = group.members.shift_remove(member_id) else {
            return;
        };
        member.fail_waiting(ResponseError::UnknownMemberId, &mut self.replies);
        if let Some(instance) = &member.instance_id {
            if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
                group.static_members.remove(instance);
            }
        }
        if group.leader.as_deref() == Some(member_id) {
            group.leader = group.members.keys().next().cloned();
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group_id, now_ms)
            }
            GroupState::PreparingRebalance => self.try_complete_join(group_id, now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ------------------------------------------------------------------ timers

    /// The groups whose offsets may expire (KIP-211), with the time each emptied: Empty
    /// groups, unless a KIP-848 group of that id has members. Groups with members keep
    /// their offsets however old.
    pub(super) fn groups_with_expirable_offsets(&self) -> Vec<(String, i64)> {
        self.groups
            .values()
            .filter(|g| g.state == GroupState::Empty && !self.consumer.has_members(&g.id))
            .map(|g| (g.id.clone(), g.state_timestamp_ms))
            .collect()
    }

    /// Removes an Empty group whose last offsets expired, with its KIP-848 group if one is
    /// left, and writes their tombstones (Kafka's `maybeDeleteGroup`).
    pub(super) fn delete_group_without_offsets(&mut self, group_id: &str) {
        self.groups.remove(group_id);
        if self.consumer.groups.remove(group_id).is_some() {
            self.records.push(OffsetsRecord::ConsumerGroup {
                group: group_id.to_string(),
                value: None,
            });
        }
        self.records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
    }

    /// Advances the clock: expires sessions, pending member ids, and join, initial-delay and
    /// sync deadlines.
    pub(super) fn tick(&mut self, topics: &[TopicView], now_ms: i64) {
        for (group_id, expired) in self.consumer.expired_members(now_ms) {
            for member in &expired {
                tracing::info!(group = %group_id, member = %member, "consumer group member expired");
            }
            self.fence_consumer_members(&group_id, &expired, topics, now_ms);
        }
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            group
                .pending_members
                .retain(|_, deadline| *deadline > now_ms);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.awaiting_join.is_none()
                        && m.awaiting_sync.is_none()
                        && m.heartbeat_deadline_ms <= now_ms
                })
                .map(|m| m.id.clone())
                .collect();
            for member in expired {
                tracing::info!(group = %id, member = %member, "member session expired");
                self.remove_member(&id, &member, now_ms);
            }
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            match group.state {
                GroupState::PreparingRebalance => {
                    if let Some((deadline, _)) = group.initial_delay {
                        if now_ms >= deadline {
                            group.initial_delay = None;
                            let all_joined =
                                group.members.values().all(|m| m.awaiting_join.is_some());
                            if all_joined || now_ms >= group.join_deadline_ms {
                                self.complete_join(&id, now_ms);
                            }
                        }
                    } else if now_ms >= group.join_deadline_ms {
                        group.pending_members.clear();
                        self.complete_join(&id, now_ms);
                    } else {
                        self.try_complete_join(&id, now_ms);
                    }
                }
                GroupState::CompletingRebalance if now_ms >= group.sync_deadline_ms => {
                    let lagging: Vec<String> = group
                        .members
                        .values()
                        .filter(|m| m.awaiting_sync.is_none())
                        .map(|m| m.id.clone())
                        .collect();
                    tracing::info!(group = %id, members = ?lagging, "members did not send SyncGroup in time; removing them");
                    for member in lagging {
                        self.remove_member(&id, &member, now_ms);
                    }
                }
                _ => {}
            }
        }
    }

    // ------------------------------------------------------------------ offsets' groups

    /// The group's answer to an OffsetCommit (or, `transactional`, a TxnOffsetCommit): may
    /// this member commit? Validated as Kafka 4's `OffsetMetadataManager` and the group's
    /// `validateOffsetCommit` do; the offset manager stores nothing unless this is `Ok`:
    ///
    /// - unknown group: a negative generation creates a simple group (an admin, or a consumer
    ///   that assigns its partitions itself); otherwise GROUP_ID_NOT_FOUND for OffsetCommit
    ///   v9+, ILLEGAL_GENERATION before, and always for TxnOffsetCommit;
    /// - KIP-848 group: [`ConsumerGroup::validate_offset_commit`]; a TxnOffsetCommit gets
    ///   ILLEGAL_GENERATION where an OffsetCommit gets STALE_MEMBER_EPOCH;
    /// - classic group: a negative generation commits to an Empty group; a request naming a
    ///   member (or a generation, or an instance) must come from a current member
    ///   (UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID) of the current generation
    ///   (ILLEGAL_GENERATION); an OffsetCommit naming none is refused while the group has
    ///   members (UNKNOWN_MEMBER_ID), a TxnOffsetCommit is not (old producers send no group
    ///   metadata); an OffsetCommit during CompletingRebalance is REBALANCE_IN_PROGRESS (the
    ///   member has the new generation but not its assignment yet).
    ///
    /// So a member whose partitions were revoked in a rebalance that has moved on cannot
    /// commit: its generation (or member epoch) is no longer the group's. During
    /// PreparingRebalance the old generation is still current and commits go through, so
    /// an eager consumer can commit what it processed before it rejoins. An OffsetCommit
    /// from a member of a classic group in Stable or PreparingRebalance counts as a sign of
    /// life for its session, as in Kafka.
    pub(super) fn validate_offset_commit(
        &mut self,
        who: &CommitIdentity<'_>,
        transactional: bool,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if who.group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if let Some(cg) = self.consumer.groups.get(who.group_id) {
            cg.validate_offset_commit(
                who.member_id,
                who.group_instance_id,
                who.generation_id,
                transactional,
                who.api_version,
            )
            .map_err(|e| match e {
                ResponseError::StaleMemberEpoch if transactional => {
                    ResponseError::IllegalGeneration
                }
                e => e,
            })?;
            // The group's offsets expire through its classic-group entry: make sure it has one.
            self.create_simple_group(who.group_id, now_ms);
            return Ok(());
        }
        let Some(group) = self.groups.get_mut(who.group_id) else {
            if who.generation_id < 0 {
                self.create_simple_group(who.group_id, now_ms);
                return Ok(());
            }
            return Err(if !transactional && who.api_version >= 9 {
                ResponseError::GroupIdNotFound
            } else {
                ResponseError::IllegalGeneration
            });
        };
        match group.state {
            GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty if who.generation_id < 0 => return Ok(()),
            _ => {}
        }
        if who.generation_id >= 0 || !who.member_id.is_empty() || who.group_instance_id.is_some() {
            validate_member(group, who.member_id, who.group_instance_id)?;
            if who.generation_id != group.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if !transactional && group.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if !transactional && group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if !transactional
            && matches!(
                group.state,
                GroupState::Stable | GroupState::PreparingRebalance
            )
        {
            if let Some(m) = group.members.get_mut(who.member_id) {
                m.heartbeat_deadline_ms = now_ms + m.session_timeout_ms as i64;
            }
        }
        Ok(())
    }

    /// The group's answer to an OffsetDelete (Kafka's `validateOffsetDelete`): unknown (or
    /// Dead) groups are GROUP_ID_NOT_FOUND; otherwise the subscriptions of its members, in the
    /// group's protocol (none while the group is Empty), for the caller to refuse deleting
    /// offsets of a subscribed topic.
    pub(super) fn offset_delete_subscriptions(
        &self,
        group_id: &str,
    ) -> Result<Vec<Bytes>, ResponseError> {
        let group = match self.groups.get(group_id) {
            Some(g) if g.state != GroupState::Dead => g,
            _ => return Err(ResponseError::GroupIdNotFound),
        };
        if group.state == GroupState::Empty {
            return Ok(Vec::new());
        }
        let protocol = group.protocol.clone().unwrap_or_default();
        Ok(group
            .members
            .values()
            .map(|m| m.metadata(&protocol))
            .collect())
    }

    /// Kafka's `getOrMaybeCreateClassicGroup(groupId, true)`: the classic group `group_id`,
    /// created Empty (a "simple" group) if there is none, for offsets committed or replayed
    /// outside any generation.
    pub(super) fn create_simple_group(&mut self, group_id: &str, now_ms: i64) {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now_ms));
    }

    // ------------------------------------------------------------------ admin

    /// ListGroups: every group (classic and KIP-848), or those in one of `states_filter`
    /// (Kafka's state names, any case, trimmed) and of one of `types_filter` (`classic`,
    /// `consumer`, any case; an unknown type matches no group), as Kafka's
    /// `GroupMetadataManager.listGroups` filters them. A consumer group is listed once, as
    /// a consumer group, whatever protocol its members use.
    pub(super) fn list_groups(
        &self,
        states_filter: &[String],
        types_filter: &[String],
    ) -> Vec<ListedGroup> {
        let states: Vec<String> = states_filter
            .iter()
            .map(|s| s.to_lowercase().trim().to_string())
            .collect();
        let types: Vec<String> = types_filter.iter().map(|t| t.to_lowercase()).collect();
        let mut groups: Vec<ListedGroup> = self
            .groups
            .values()
            .filter(|g| g.state != GroupState::Dead && !self.consumer.groups.contains_key(&g.id))
            .map(|g| ListedGroup {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
                group_type: "classic",
            })
            .chain(self.consumer.groups.iter().map(|(id, g)| ListedGroup {
                group_id: id.clone(),
                protocol_type: "consumer".into(),
                state: g.state(),
                group_type: "consumer",
            }))
            .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
            .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// DescribeGroups for one group, as Kafka's `GroupMetadataManager.describeGroups`: only
    /// a classic group is described; anything else is Kafka's `GroupIdNotFoundException`
    /// message (the caller answers GROUP_ID_NOT_FOUND with it from v6, state `Dead`). A
    /// KIP-848 group is not described here, whatever protocol its members use: its members
    /// are in ConsumerGroupDescribe. Members carry their assignment in every state, their
    /// metadata (and the group its protocol) only when Stable.
    pub(super) fn describe_group(&self, group_id: &str) -> Result<GroupDescription, String> {
        if self.consumer.groups.contains_key(group_id) {
            return Err(format!("Group {group_id} is not a classic group."));
        }
        let g = self
            .groups
            .get(group_id)
            .ok_or_else(|| format!("Group {group_id} not found."))?;
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        Ok(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// A KIP-848 group for ConsumerGroupDescribe, or Kafka's `GroupIdNotFoundException`
    /// message: the group is unknown, or it is a classic group.
    pub(super) fn describe_consumer_group(&self, group_id: &str) -> Result<&ConsumerGroup, String> {
        match self.consumer.groups.get(group_id) {
            Some(g) => Ok(g),
            None if self.groups.contains_key(group_id) => {
                Err(format!("Group {group_id} is not a consumer group."))
            }
            None => Err(format!("Group {group_id} not found.")),
        }
    }

    /// DeleteGroups for one group: the error code. A classic group (or the entry of a group
    /// with only offsets) must be Empty; `delete_offsets` then writes the tombstones of its
    /// offsets, before the group's own (Kafka's `deleteAllOffsets`, then
    /// `createGroupTombstoneRecords`).
    pub(super) fn delete_group(
        &mut self,
        group_id: &str,
        delete_offsets: impl FnOnce(&mut Vec<OffsetsRecord>),
    ) -> i16 {
        if self.consumer.has_members(group_id) {
            return code(ResponseError::NonEmptyGroup);
        }
        if self.consumer.groups.remove(group_id).is_some() {
            self.records.push(OffsetsRecord::ConsumerGroup {
                group: group_id.to_string(),
                value: None,
            });
            if !self.groups.contains_key(group_id) {
                return 0;
            }
        }
        let Some(group) = self.groups.get(group_id) else {
            return code(ResponseError::GroupIdNotFound);
        };
        match group.state {
            GroupState::Dead => return code(ResponseError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return code(ResponseError::NonEmptyGroup),
        }
        self.groups.remove(group_id);
        delete_offsets(&mut self.records);
        self.records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        tracing::info!(group = %group_id, "deleted group");
        0
    }

    /// Forgets every group (classic and KIP-848) that `moved` selects: this broker no longer
    /// leads their offsets-topic partition (Kafka's `onResignation`). Members waiting for a
    /// JoinGroup or SyncGroup answer get NOT_COORDINATOR, so that they find the new
    /// coordinator. Returns how many groups went.
    pub(super) fn unload_groups(&mut self, moved: impl Fn(&str) -> bool) -> usize {
        let ids: Vec<String> = self.groups.keys().filter(|g| moved(g)).cloned().collect();
        for id in &ids {
            let Some(group) = self.groups.remove(id) else {
                continue;
            };
            for (_, mut member) in group.members {
                member.fail_waiting(ResponseError::NotCoordinator, &mut self.replies);
            }
        }
        let before = self.consumer.groups.len();
        self.consumer.groups.retain(|g, _| !moved(g));
        ids.len() + before - self.consumer.groups.len()
    }

    /// Applies a KIP-848 group's record read back from the offsets topic at start-up.
    pub(super) fn replay_consumer_group(
        &mut self,
        group_id: &str,
        value: Option<ConsumerGroupSnapshot>,
        now_ms: i64,
    ) {
        self.consumer.restore(group_id, value, now_ms);
    }

    /// Applies a classic group's record read back from the offsets topic at start-up. After
    /// a tombstone (the group was deleted, or converted to a consumer group) the group stays
    /// as an Empty entry if it `has_offsets` (committed or pending): those are their own
    /// records and stay.
    pub(super) fn replay_group(
        &mut self,
        group: String,
        value: Option<StoredGroup>,
        has_offsets: bool,
        now_ms: i64,
    ) {
        match value {
            None => {
                if has_offsets {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.reset_membership(now_ms);
                    }
                } else {
                    self.groups.remove(&group);
                }
            }
            Some(stored) => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now_ms));
                g.generation = stored.generation;
                g.protocol = stored.protocol.clone();
                g.leader = stored.leader.clone();
                g.members.clear();
                g.static_members.clear();
                let protocol = stored.protocol.unwrap_or_default();
                for m in stored.members {
                    if let Some(i) = &m.group_instance_id {
                        g.static_members.insert(i.clone(), m.member_id.clone());
                    }
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: vec![(protocol.clone(), m.subscription)],
                            assignment: m.assignment,
                            awaiting_join: None,
                            awaiting_sync: None,
                            // Members get a full session to find the coordinator again.
                            heartbeat_deadline_ms: now_ms + m.session_timeout_ms as i64,
                        },
                    );
                }
                if g.members.is_empty() {
                    g.protocol_type = None;
                    g.state = GroupState::Empty;
                } else {
                    g.protocol_type = Some(stored.protocol_type);
                    g.state = GroupState::Stable;
                }
            }
        }
    }
}

/// Checks that `member_id` belongs to the group and is not a fenced static incarnation.
fn validate_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), ResponseError> {
    if let Some(instance) = instance_id {
        match group.static_members.get(instance) {
            Some(id) if id == member_id => return Ok(()),
            Some(_) => return Err(ResponseError::FencedInstanceId),
            None => return Err(ResponseError::UnknownMemberId),
        }
    }
    if group.members.contains_key(member_id) {
        Ok(())
    } else {
        Err(ResponseError::UnknownMemberId)
    }
}

fn update_member(member: &mut Member, joined: Member) {
    member.protocols = joined.protocols;
    member.session_timeout_ms = joined.session_timeout_ms;
    member.rebalance_timeout_ms = joined.rebalance_timeout_ms;
    member.client_id = joined.client_id;
    member.client_host = joined.client_host;
    member.awaiting_join = joined.awaiting_join;
}

/// The JoinGroup answer for the current generation; the leader gets the member list.
fn current_generation_response(
    group: &Group,
    member_id: &str,
    version: i16,
    skip_assignment: bool,
) -> JoinGroupResponse {
    let protocol = group.protocol.clone().unwrap_or_default();
    let is_leader = group.leader.as_deref() == Some(member_id);
    let members = if is_leader {
        group
            .members
            .values()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(s(&m.id))
                    .with_group_instance_id(m.instance_id.as_deref().map(s))
                    .with_metadata(m.metadata(&protocol))
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinGroupResponse::default()
        .with_generation_id(group.generation)
        .with_protocol_type(group.protocol_type.as_deref().map(s))
        .with_protocol_name(Some(s(&protocol)))
        .with_leader(s(group.leader.as_deref().unwrap_or("")))
        .with_member_id(s(member_id))
        .with_skip_assignment(skip_assignment && version >= 9)
        .with_members(members)
}

#[cfg(test)]
mod tests;
