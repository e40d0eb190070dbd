//! Members of the classic protocol inside a KIP-848 consumer group (Kafka 4's online
//! migration between the protocols). Such a member still speaks JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup, but the group's assignor decides its partitions:
//!
//! - JoinGroup updates the member's subscription (decoded from its `consumer` protocol
//!   metadata), moves the group epoch if the subscription changed, and reconciles the member
//!   against the target with the partitions its subscription says it owns (none for eager
//!   assignors, which give everything up before rejoining). The answer comes at once: the
//!   generation is the member epoch, there is no leader, and the member is told no members.
//! - SyncGroup answers the member's current assignment as a `ConsumerProtocolAssignment`.
//! - Heartbeat answers REBALANCE_IN_PROGRESS when the member must rejoin: the group epoch
//!   moved past its epoch, it still holds partitions it must give up, or partitions it is
//!   waiting for were released.
//!
//! Mirrors `GroupMetadataManager.classicGroup*ToConsumerGroup` and
//! `ConsumerGroup.fromClassicGroup` / `ClassicGroup.fromConsumerGroup`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use uuid::Uuid;

use super::{
    check_static_member, downgrade_allowed, flatten, reconcile, refresh_target, unflatten,
    Assignment, ClassicMetadata, ConsumerGroup, ConsumerGroups, ConsumerMember, TopicView,
    ASSIGNORS,
};

/// The embedded protocol type a consumer group's classic members must use.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The newest `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` version.
const CONSUMER_PROTOCOL_MAX_VERSION: i16 = 3;

/// A JoinGroup from a member of the classic protocol to a consumer group with members.
#[derive(Debug, Clone)]
pub struct ClassicJoin<'a> {
    pub group_id: &'a str,
    /// Empty for a member without an id yet.
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub protocol_type: &'a str,
    pub protocols: &'a [(String, Bytes)],
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: &'a str,
    pub client_host: &'a str,
    /// JoinGroup version: v4+ dynamic members get MEMBER_ID_REQUIRED first (KIP-394).
    pub api_version: i16,
}

/// The answer to a [`ClassicJoin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicJoinOutcome {
    /// KIP-394: join again with this member id.
    MemberIdRequired(String),
    Joined {
        member_id: String,
        /// The member epoch.
        generation: i32,
        protocol_name: String,
        /// `Some` when the join turns the group back into a classic group.
        downgrade: Option<DowngradeOnJoin>,
    },
}

/// A classic member's join that turns the consumer group back into a classic group (Kafka's
/// `validateOnlineDowngradeWithReplacedMember`): the static member it replaced was the
/// group's last member of the consumer protocol, the policy allows a downgrade and the group
/// fits in `group.max.size`. The joining member takes the replaced member's place, target
/// included; the caller converts the group (at generation = group epoch, which the join left
/// as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DowngradeOnJoin {
    /// The joining member subscribes to other topics than the member it replaced: the
    /// classic group rebalances at once (Kafka 4.1.1, KAFKA-19546). Otherwise the group stays
    /// stable and every member keeps its target assignment.
    pub rebalance: bool,
}

/// A classic group's member as an upgrade to a consumer group takes it over.
#[derive(Debug, Clone)]
pub struct ClassicMemberState {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    /// Its `ConsumerProtocolAssignment` from the last SyncGroup (empty if none).
    pub assignment: Bytes,
}

/// A consumer group's classic member as a downgrade hands it back to a classic group.
#[derive(Debug, Clone)]
pub struct DowngradedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub classic: ClassicMetadata,
    /// Its partitions in the group's target assignment.
    pub target: Assignment,
}

/// Decodes a `consumer` protocol message (its version first, then the body); a version
/// above the newest known is read as the newest, as Kafka's `ConsumerProtocol` does.
fn decode_versioned<T: Decodable>(raw: &[u8]) -> Option<T> {
    let mut buf = Bytes::copy_from_slice(raw);
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    T::decode(&mut buf, version.min(CONSUMER_PROTOCOL_MAX_VERSION)).ok()
}

/// Decodes a `consumer` protocol subscription.
pub(crate) fn decode_subscription(metadata: &[u8]) -> Option<ConsumerProtocolSubscription> {
    decode_versioned(metadata)
}

/// The version a member's subscription metadata was written in (0 if unreadable).
fn metadata_version(metadata: &[u8]) -> i16 {
    if metadata.len() < 2 {
        return 0;
    }
    i16::from_be_bytes([metadata[0], metadata[1]]).clamp(0, CONSUMER_PROTOCOL_MAX_VERSION)
}

/// Decodes a `ConsumerProtocolAssignment`; an empty one (a member that never synced) is
/// no partitions.
fn decode_assignment(raw: &[u8]) -> Option<ConsumerProtocolAssignment> {
    if raw.is_empty() {
        return Some(ConsumerProtocolAssignment::default());
    }
    decode_versioned(raw)
}

/// Encodes `assignment` (topics by id) as a `ConsumerProtocolAssignment`, with topic names
/// from `topics` (partitions of topics that no longer exist are left out), in the version of
/// the member's subscription `metadata`, as Kafka answers each member in its own version.
pub(crate) fn encode_assignment(
    assignment: &Assignment,
    topics: &[TopicView],
    metadata: &[u8],
) -> Bytes {
    let version = metadata_version(metadata);
    let mut named: Vec<AssignedPartitions> = assignment
        .iter()
        .filter_map(|(id, partitions)| {
            let topic = topics.iter().find(|t| t.id == *id)?;
            Some(
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(partitions.iter().copied().collect()),
            )
        })
        .collect();
    named.sort_by(|a, b| a.topic.0.cmp(&b.topic.0));
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(named)
        .encode(&mut buf, version)
        .expect("an assignment of known topics always encodes");
    buf.freeze()
}

/// Partitions by topic name → by topic id; unknown topics are dropped.
fn by_id<'a>(
    named: impl IntoIterator<Item = (&'a str, &'a [i32])>,
    topics: &[TopicView],
) -> Assignment {
    unflatten(named.into_iter().flat_map(|(name, partitions)| {
        let id = topics.iter().find(|t| t.name == name).map(|t| t.id);
        partitions.iter().filter_map(move |p| id.map(|id| (id, *p)))
    }))
}

fn subscribed_names(subscription: &ConsumerProtocolSubscription) -> Vec<String> {
    let mut names: Vec<String> = subscription.topics.iter().map(|t| t.to_string()).collect();
    names.sort();
    names.dedup();
    names
}

impl ConsumerGroup {
    /// Kafka's `ConsumerGroup.fromClassicGroup`: the classic group's members become members
    /// of the classic protocol in a consumer group at epoch `generation`, each keeping the
    /// partitions of its last assignment (none for a member that never synced), which is
    /// also the target. A member whose subscription or assignment cannot be read, or whose
    /// assignment carries user data of a custom assignor, makes the upgrade fail (the
    /// message says why).
    pub fn from_classic(
        generation: i32,
        protocol: &str,
        members: Vec<ClassicMemberState>,
        topics: &[TopicView],
        session_deadline_ms: impl Fn(i32) -> i64,
    ) -> Result<ConsumerGroup, &'static str> {
        let mut group = ConsumerGroup {
            group_epoch: generation,
            assignment_epoch: generation,
            assignor: ASSIGNORS[0].to_string(),
            ..Default::default()
        };
        for m in members {
            let metadata = m
                .protocols
                .iter()
                .find(|(n, _)| n == protocol)
                .map(|(_, md)| md.clone())
                .unwrap_or_default();
            // A member that joined but never synced has no assignment yet: it starts with no
            // partitions (Kafka accepts it too).
            let assignment = decode_assignment(&m.assignment)
                .ok_or("the embedded consumer protocol is malformed")?;
            // The server-side assignors cannot carry a custom assignor's user data on: Kafka
            // refuses the upgrade rather than lose it (KAFKA-18134).
            if assignment.user_data.as_ref().is_some_and(|d| !d.is_empty()) {
                return Err("an unsupported custom assignor is in use. Please refer to the documentation or switch to a default assignor before re-attempting the upgrade");
            }
            let subscription = decode_subscription(&metadata)
                .ok_or("the embedded consumer protocol is malformed")?;
            let assigned = by_id(
                assignment
                    .assigned_partitions
                    .iter()
                    .map(|t| (t.topic.0.as_str(), t.partitions.as_slice())),
                topics,
            );
            group.target.insert(m.id.clone(), assigned.clone());
            group.members.insert(
                m.id.clone(),
                ConsumerMember {
                    id: m.id,
                    instance_id: m.instance_id,
                    rack_id: subscription.rack_id.as_ref().map(|r| r.to_string()),
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_names: subscribed_names(&subscription),
                    subscribed_regex: None,
                    server_assignor: None,
                    epoch: generation,
                    previous_epoch: generation,
                    assigned,
                    pending_revocation: Assignment::new(),
                    session_deadline_ms: session_deadline_ms(m.session_timeout_ms),
                    revocation_deadline_ms: None,
                    last_sent: None,
                    classic: Some(ClassicMetadata {
                        session_timeout_ms: m.session_timeout_ms,
                        protocols: m.protocols,
                    }),
                    classic_deadline_ms: None,
                },
            );
        }
        // The subscribed topics as they are now, so that the first refresh of the target
        // does not count them as a change.
        group.subscribed = super::subscribed_partitions(&group, topics);
        Ok(group)
    }

    /// The members but `leaving`, for Kafka's `ClassicGroup.fromConsumerGroup`. Every one of
    /// them uses the classic protocol (see [`ConsumerGroups::downgrades_without`]).
    pub fn downgraded_members(&self, leaving: &[String]) -> Vec<DowngradedMember> {
        self.members
            .values()
            .filter(|m| !leaving.contains(&m.id))
            .filter_map(|m| {
                Some(DowngradedMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    classic: m.classic.clone()?,
                    target: self.target.get(&m.id).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Kafka's `supportsClassicProtocols`: a classic member may join if it uses the
    /// `consumer` embedded protocol and shares a protocol with every classic member.
    fn supports_classic(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        protocol_type == CONSUMER_PROTOCOL_TYPE
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .filter_map(|m| m.classic.as_ref())
                    .all(|c| c.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Kafka's `validateConsumerGroupMember` for the classic APIs: the member (found by its
    /// instance id when it has one) must exist, and use the classic protocol.
    fn classic_member(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&mut ConsumerMember, ResponseError> {
        if let Some(instance) = instance_id {
            check_static_member(self, member_id, instance).map_err(|e| e.error)?;
        }
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if member.classic.is_none() {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(member)
    }

    /// The classic member `member_id`, found as [`Self::classic_member`] finds it, if it is
    /// of the generation a SyncGroup or Heartbeat names (ILLEGAL_GENERATION otherwise).
    fn classic_member_of_generation(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<&mut ConsumerMember, ResponseError> {
        let member = self.classic_member(member_id, instance_id)?;
        if generation != member.epoch {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(member)
    }

    /// Target partitions the member does not have yet, all of them released by their
    /// previous owners: it should rejoin to collect them.
    fn unreleased_now_free(&self, member: &ConsumerMember) -> bool {
        let Some(target) = self.target.get(&member.id) else {
            return false;
        };
        let missing: Vec<(Uuid, i32)> = flatten(target)
            .filter(|tp| !flatten(&member.assigned).any(|x| x == *tp))
            .collect();
        if missing.is_empty() {
            return false;
        }
        let owned = self.owned_by_others(&member.id);
        missing.iter().all(|tp| !owned.contains(tp))
    }
}

impl ConsumerMember {
    /// Kafka's join timeout for a classic member told to rejoin: its rebalance timeout,
    /// counted from the first time it is told.
    fn await_classic_rejoin(&mut self, now_ms: i64) {
        self.classic_deadline_ms
            .get_or_insert(now_ms + self.rebalance_timeout_ms.max(1) as i64);
    }
}

impl ConsumerGroups {
    /// JoinGroup from a member of the classic protocol to a consumer group that has members
    /// (Kafka's `classicGroupJoinToConsumerGroup`).
    pub fn classic_join(
        &mut self,
        join: ClassicJoin<'_>,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<ClassicJoinOutcome, ResponseError> {
        let max_size = self.config.max_size;
        let group = self
            .groups
            .get_mut(join.group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let unknown_member = join.member_id.is_empty();
        let member_id = if unknown_member {
            Uuid::new_v4().to_string()
        } else {
            join.member_id.to_string()
        };
        if group.members.len() >= max_size && !group.members.contains_key(&member_id) {
            return Err(ResponseError::GroupMaxSizeReached);
        }
        if !group.supports_classic(join.protocol_type, join.protocols) {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if unknown_member && join.instance_id.is_none() && join.api_version >= 4 {
            return Ok(ClassicJoinOutcome::MemberIdRequired(member_id));
        }
        let subscription = join
            .protocols
            .first()
            .and_then(|(_, metadata)| decode_subscription(metadata))
            .ok_or(ResponseError::UnknownServerError)?;
        // Kafka looks at the member holding the instance id before this join (the one it
        // replaces, or the joining member itself): if it is the last member of the consumer
        // protocol, the join may downgrade the group.
        let replaces_last_consumer_member = join.instance_id.is_some_and(|instance| {
            group
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
                .is_some_and(|holder| {
                    holder.classic.is_none()
                        && group
                            .members
                            .values()
                            .all(|m| m.id == holder.id || m.classic.is_some())
                })
        });
        match join.instance_id {
            // A static member with a known id must still hold its instance id.
            Some(instance) if !unknown_member => {
                check_static_member(group, &member_id, instance).map_err(|e| e.error)?;
            }
            // A (re)starting static member takes over the instance's membership, whatever
            // protocol its previous incarnation used.
            Some(instance) => {
                let holder = group
                    .members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(instance))
                    .map(|m| m.id.clone());
                if let Some(old) = holder {
                    if let Some(mut previous) = group.members.remove(&old) {
                        let target = group.target.remove(&old);
                        previous.id = member_id.clone();
                        previous.epoch = 0;
                        previous.previous_epoch = 0;
                        group.members.insert(member_id.clone(), previous);
                        if let Some(t) = target {
                            group.target.insert(member_id.clone(), t);
                        }
                        tracing::info!(group = %join.group_id, old = %old, new = %member_id, "static member rejoined the consumer group with the classic protocol");
                    }
                }
            }
            None => {}
        }
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| {
                tracing::info!(group = %join.group_id, member = %member_id, "member joins the consumer group with the classic protocol");
                ConsumerMember::joining(&member_id, None)
            });
        if let Some(instance) = join.instance_id {
            member.instance_id = Some(instance.to_string());
        }
        if let Some(rack) = &subscription.rack_id {
            member.rack_id = Some(rack.to_string());
        }
        if join.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = join.rebalance_timeout_ms;
        }
        member.client_id = join.client_id.to_string();
        member.client_host = join.client_host.to_string();
        member.classic = Some(ClassicMetadata {
            session_timeout_ms: join.session_timeout_ms,
            protocols: join.protocols.to_vec(),
        });
        let names = subscribed_names(&subscription);
        let changed = names != member.subscribed_names;
        member.subscribed_names = names;
        let owned = by_id(
            subscription
                .owned_partitions
                .iter()
                .map(|t| (t.topic.0.as_str(), t.partitions.as_slice())),
            topics,
        );
        let downgrade = replaces_last_consumer_member
            && downgrade_allowed(
                join.group_id,
                self.config.migration_policy,
                group.members.len(),
                self.config.classic_max_size,
            );
        if downgrade {
            // Kafka 4.1.1 (KAFKA-19546): with the same subscription the member is reconciled
            // against the target as it stands; with another one the group epoch is not moved
            // and no target computed, since the classic group rebalances anyway.
            if !changed {
                reconcile(group, &member_id, Some(&owned), now_ms);
            }
            let member = &group.members[&member_id];
            tracing::info!(group = %join.group_id, member = %member_id, rebalance = changed, "a classic static member replaced the last member of the consumer protocol; downgrading the group");
            return Ok(ClassicJoinOutcome::Joined {
                member_id: member_id.clone(),
                generation: member.epoch,
                protocol_name: member
                    .classic
                    .as_ref()
                    .map(|c| c.protocol_name().to_string())
                    .unwrap_or_default(),
                downgrade: Some(DowngradeOnJoin { rebalance: changed }),
            });
        }
        if changed {
            group.group_epoch += 1;
        }
        refresh_target(group, topics);
        reconcile(group, &member_id, Some(&owned), now_ms);
        let member = group.members.get_mut(&member_id).expect("joined");
        let classic = member.classic.as_ref().expect("set above");
        member.session_deadline_ms = now_ms + classic.session_timeout_ms as i64;
        // Kafka's sync timeout: the member must collect its assignment within its
        // rebalance timeout.
        member.classic_deadline_ms = Some(now_ms + member.rebalance_timeout_ms.max(1) as i64);
        Ok(ClassicJoinOutcome::Joined {
            member_id: member_id.clone(),
            generation: member.epoch,
            protocol_name: classic.protocol_name().to_string(),
            downgrade: None,
        })
    }

    /// SyncGroup from a classic member of a consumer group (Kafka's
    /// `classicGroupSyncToConsumerGroup`): its current assignment, encoded in the version
    /// of its subscription.
    #[allow(clippy::too_many_arguments)]
    pub fn classic_sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<Bytes, ResponseError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let group_epoch = group.group_epoch;
        let member = group.classic_member_of_generation(member_id, instance_id, generation)?;
        let classic = member.classic.as_ref().expect("a classic member");
        if protocol_type.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || protocol_name.is_some_and(|n| n != classic.protocol_name())
        {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if group_epoch > member.epoch && member.pending_revocation.is_empty() {
            // A new rebalance started since this member joined: it must rejoin first.
            member.await_classic_rejoin(now_ms);
            return Err(ResponseError::RebalanceInProgress);
        }
        let metadata = classic
            .protocols
            .first()
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default();
        member.session_deadline_ms = now_ms + classic.session_timeout_ms as i64;
        member.classic_deadline_ms = None;
        Ok(encode_assignment(&member.assigned, topics, &metadata))
    }

    /// Heartbeat from a classic member of a consumer group (Kafka's
    /// `classicGroupHeartbeatToConsumerGroup`): REBALANCE_IN_PROGRESS when it must rejoin.
    pub fn classic_heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let group_epoch = group.group_epoch;
        let member = group.classic_member_of_generation(member_id, instance_id, generation)?;
        let classic = member.classic.as_ref().expect("a classic member");
        member.session_deadline_ms = now_ms + classic.session_timeout_ms as i64;
        let (epoch, revoking) = (member.epoch, !member.pending_revocation.is_empty());
        let member = group.members.get(member_id).expect("found");
        let rejoin = epoch < group_epoch || revoking || group.unreleased_now_free(member);
        if rejoin {
            let member = group.members.get_mut(member_id).expect("found");
            member.await_classic_rejoin(now_ms);
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// The members a LeaveGroup to a consumer group names, each resolved to the member it
    /// removes or the error it gets (Kafka's `classicGroupLeaveToConsumerGroup`): a member
    /// given by instance id must hold it; one given by member id alone must exist.
    pub fn classic_leaving(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<String, ResponseError>> {
        let Some(group) = self.groups.get(group_id) else {
            return members
                .iter()
                .map(|_| Err(ResponseError::UnknownMemberId))
                .collect();
        };
        members
            .iter()
            .map(|(member_id, instance)| match instance {
                Some(instance) => {
                    let holder = group
                        .members
                        .values()
                        .find(|m| m.instance_id.as_deref() == Some(instance.as_str()))
                        .ok_or(ResponseError::UnknownMemberId)?;
                    if !member_id.is_empty() && holder.id != *member_id {
                        return Err(ResponseError::FencedInstanceId);
                    }
                    Ok(holder.id.clone())
                }
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            })
            .collect()
    }
}
