//! KIP-848 consumer groups: the broker computes assignments and hands each member its share
//! through ConsumerGroupHeartbeat; members never see each other.
//!
//! Epochs: the *group epoch* grows on every change of membership, subscriptions or the
//! partitions of subscribed topics; the *assignment epoch* is the group epoch the current
//! target assignment was computed for; each member's *member epoch* reaches the assignment
//! epoch once it has given up every partition the target takes away from it
//! (Kafka's `CurrentAssignmentBuilder`). A partition moves to a new owner only after the old
//! owner reported it released, so no partition is ever owned twice.
//!
//! Durable as one snapshot record per group in `__consumer_offsets` (see
//! [`ConsumerGroupSnapshot`]), written whenever the group's epochs, membership or
//! assignments change, so members keep their epochs and partitions across a broker restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use uuid::Uuid;

mod classic;
pub(crate) use classic::encode_assignment;
pub use classic::{
    ClassicJoin, ClassicJoinOutcome, ClassicMemberState, DowngradeOnJoin, DowngradedMember,
};

/// A topic as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
}

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Consumer-group settings (Kafka's `group.consumer.*` broker properties).
#[derive(Debug, Clone)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms` (default 45000).
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (default 5000).
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// `group.consumer.migration.policy`.
    pub migration_policy: MigrationPolicy,
    /// `group.max.size`: a group downgraded to the classic protocol must fit in it.
    pub classic_max_size: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
            migration_policy: MigrationPolicy::default(),
            classic_max_size: i32::MAX as usize,
        }
    }
}

/// `group.consumer.migration.policy` (Kafka 4's default: bidirectional): which online
/// conversions of a group with members between the classic and the consumer protocol are
/// allowed. Upgrade: a classic group whose members use the `consumer` embedded protocol
/// becomes a consumer group when a ConsumerGroupHeartbeat joins it. Downgrade: a consumer
/// group becomes a classic group when its last member of the consumer protocol leaves
/// while members of the classic protocol remain. Empty groups are replaced whatever the
/// policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    #[default]
    Bidirectional,
}

impl MigrationPolicy {
    /// Kafka's names, case-insensitive.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "disabled" => Some(Self::Disabled),
            "upgrade" => Some(Self::Upgrade),
            "downgrade" => Some(Self::Downgrade),
            "bidirectional" => Some(Self::Bidirectional),
            _ => None,
        }
    }

    pub fn upgrade_enabled(self) -> bool {
        matches!(self, Self::Upgrade | Self::Bidirectional)
    }

    pub fn downgrade_enabled(self) -> bool {
        matches!(self, Self::Downgrade | Self::Bidirectional)
    }
}

/// What a member of the classic protocol inside a consumer group joined with (Kafka's
/// `ClassicMemberMetadata`): it is still driven by JoinGroup, SyncGroup and Heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMetadata {
    pub session_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference; all carry the same
    /// `ConsumerProtocolSubscription`.
    pub protocols: Vec<(String, Bytes)>,
}

impl ClassicMetadata {
    /// The protocol the member is told in its JoinGroup answer (Kafka: its first one).
    pub fn protocol_name(&self) -> &str {
        self.protocols
            .first()
            .map(|(n, _)| n.as_str())
            .unwrap_or("")
    }
}

/// Server-side assignors, by the names clients use in `group.remote.assignor`.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Member epochs with special meaning in a heartbeat.
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// The first OffsetCommit version whose generation field carries a KIP-848 member epoch.
pub const FIRST_MEMBER_EPOCH_COMMIT_VERSION: i16 = 9;

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub epoch: i32,
    previous_epoch: i32,
    /// What the member may own now.
    pub assigned: Assignment,
    /// What it must give up before its epoch can advance.
    pub pending_revocation: Assignment,
    session_deadline_ms: i64,
    revocation_deadline_ms: Option<i64>,
    /// The assignment last sent, so unchanged ones are not sent again.
    last_sent: Option<Assignment>,
    /// `Some` for a member of the classic protocol (JoinGroup/SyncGroup/Heartbeat).
    pub classic: Option<ClassicMetadata>,
    /// A classic member's sync deadline (after its JoinGroup answer) or join deadline
    /// (after a Heartbeat told it to rejoin): Kafka's sync and join timeouts, both the
    /// member's rebalance timeout. Past it, the member is removed.
    classic_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    /// A member that has just joined (epoch 0): nothing assigned, nothing subscribed yet; the
    /// join that creates it fills in the rest.
    pub(crate) fn joining(id: &str, instance_id: Option<String>) -> Self {
        Self {
            id: id.to_string(),
            instance_id,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_names: Vec::new(),
            subscribed_regex: None,
            server_assignor: None,
            epoch: 0,
            previous_epoch: -1,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
            last_sent: None,
            classic: None,
            classic_deadline_ms: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// Resolved subscribed topics and their partition counts at the last target computation.
    subscribed: Vec<(Uuid, i32)>,
    pub assignor: String,
}

impl ConsumerGroup {
    /// Kafka's consumer-group states: empty, assigning, reconciling, stable.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.epoch != self.assignment_epoch
                || !m.pending_revocation.is_empty()
                || Some(&m.assigned) != self.target.get(&m.id)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Whether an (Txn)OffsetCommit may write to this group, as Kafka 4's
    /// `ConsumerGroup.validateOffsetCommit` decides:
    ///
    /// - a negative epoch commits to a group without members (an admin, or a consumer that
    ///   assigns its partitions itself);
    /// - a TxnOffsetCommit without member id, instance id and generation (a producer that
    ///   sent no group metadata) commits;
    /// - otherwise the member must exist (UNKNOWN_MEMBER_ID), an OffsetCommit must be v9+
    ///   (UNSUPPORTED_VERSION: older versions cannot carry a member epoch), and the epoch
    ///   must be the member's current one (STALE_MEMBER_EPOCH, older or newer alike;
    ///   ILLEGAL_GENERATION for a member of the classic protocol, whose commits carry its
    ///   generation and may use any version). A
    ///   member whose partitions were revoked and whose epoch moved on therefore cannot
    ///   commit them with the epoch it owned them in.
    ///
    /// The TxnOffsetCommit API has no STALE_MEMBER_EPOCH; the caller maps it.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        member_epoch: i32,
        transactional: bool,
        api_version: i16,
    ) -> Result<(), ResponseError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        if transactional && member_epoch == -1 && member_id.is_empty() && instance_id.is_none() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let classic = member.classic.is_some();
        if !transactional && !classic && api_version < FIRST_MEMBER_EPOCH_COMMIT_VERSION {
            return Err(ResponseError::UnsupportedVersion);
        }
        if member_epoch != member.epoch {
            // A classic member sends its generation, which is its member epoch.
            return Err(if classic {
                ResponseError::IllegalGeneration
            } else {
                ResponseError::StaleMemberEpoch
            });
        }
        Ok(())
    }

    fn owned_by_others(&self, member_id: &str) -> BTreeSet<(Uuid, i32)> {
        self.members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| flatten(&m.assigned).chain(flatten(&m.pending_revocation)))
            .collect()
    }
}

fn flatten(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn unflatten(items: impl IntoIterator<Item = (Uuid, i32)>) -> Assignment {
    let mut out = Assignment::new();
    for (t, p) in items {
        out.entry(t).or_default().insert(p);
    }
    out
}

/// The durable state of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupSnapshot {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub subscribed: Vec<(Uuid, i32)>,
    pub members: Vec<MemberSnapshot>,
}

/// The durable state of one member, with its target assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    pub target: Assignment,
    pub classic: Option<ClassicMetadata>,
}

/// One ConsumerGroupHeartbeat, decoded.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// Request version: v1+ clients generate their member id (KIP-1082).
    pub api_version: i16,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResult {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `Some` when the member's assignment changed since the last answer.
    pub assignment: Option<Assignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatError {
    pub error: ResponseError,
    pub message: String,
}

fn refuse(error: ResponseError, message: impl Into<String>) -> HeartbeatError {
    HeartbeatError {
        error,
        message: message.into(),
    }
}

/// All KIP-848 groups of the coordinator.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    pub config: ConsumerGroupConfig,
    pub groups: HashMap<String, ConsumerGroup>,
}

impl ConsumerGroups {
    pub fn new(config: ConsumerGroupConfig) -> Self {
        Self {
            config,
            groups: HashMap::new(),
        }
    }

    /// The durable state of a group, `None` if it does not exist.
    pub fn snapshot(&self, group_id: &str) -> Option<ConsumerGroupSnapshot> {
        let g = self.groups.get(group_id)?;
        Some(ConsumerGroupSnapshot {
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            subscribed: g.subscribed.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_names: m.subscribed_names.clone(),
                    subscribed_regex: m.subscribed_regex.clone(),
                    server_assignor: m.server_assignor.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.clone(),
                    pending_revocation: m.pending_revocation.clone(),
                    target: g.target.get(&m.id).cloned().unwrap_or_default(),
                    classic: m.classic.clone(),
                })
                .collect(),
        })
    }

    /// Rebuilds a group from its snapshot (`None`: the group was deleted). Members get a
    /// full session to heartbeat again.
    pub fn restore(
        &mut self,
        group_id: &str,
        snapshot: Option<ConsumerGroupSnapshot>,
        now_ms: i64,
    ) {
        let Some(snap) = snapshot else {
            self.groups.remove(group_id);
            return;
        };
        let mut group = ConsumerGroup {
            group_epoch: snap.group_epoch,
            assignment_epoch: snap.assignment_epoch,
            assignor: snap.assignor,
            subscribed: snap.subscribed,
            ..Default::default()
        };
        for m in snap.members {
            group.target.insert(m.id.clone(), m.target);
            let session_ms = m
                .classic
                .as_ref()
                .map_or(self.config.session_timeout_ms, |c| c.session_timeout_ms)
                as i64;
            group.members.insert(
                m.id.clone(),
                ConsumerMember {
                    id: m.id,
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_names: m.subscribed_names,
                    subscribed_regex: m.subscribed_regex,
                    server_assignor: m.server_assignor,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned,
                    pending_revocation: m.pending_revocation,
                    session_deadline_ms: now_ms + session_ms,
                    revocation_deadline_ms: None,
                    last_sent: None,
                    classic: m.classic,
                    classic_deadline_ms: None,
                },
            );
        }
        self.groups.insert(group_id.to_string(), group);
    }

    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Handles one heartbeat; `topics` is the cluster's topics now.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<HeartbeatResult, HeartbeatError> {
        validate_heartbeat(&hb)?;
        if hb.member_epoch == LEAVE_EPOCH || hb.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&hb, topics, now_ms);
        }
        let config = self.config.clone();
        let group = match self.groups.get_mut(&hb.group_id) {
            Some(g) => g,
            None if hb.member_epoch == JOIN_EPOCH => self
                .groups
                .entry(hb.group_id.clone())
                .or_insert_with(|| ConsumerGroup {
                    assignor: ASSIGNORS[0].to_string(),
                    ..Default::default()
                }),
            // Kafka's `getOrMaybeCreateConsumerGroup` with `createIfNotExists` false.
            None => {
                return Err(refuse(
                    ResponseError::GroupIdNotFound,
                    format!("Consumer group {} not found.", hb.group_id),
                ))
            }
        };
        let member_id = if hb.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            hb.member_id.clone()
        };
        let mut changed = false;
        if hb.member_epoch == JOIN_EPOCH {
            if !group.members.contains_key(&member_id) && group.members.len() >= config.max_size {
                return Err(refuse(
                    ResponseError::GroupMaxSizeReached,
                    format!(
                        "The consumer group has reached its maximum capacity of {} members.",
                        config.max_size
                    ),
                ));
            }
            // KIP-345 for consumer groups: an instance id belongs to one member at a time. A
            // new incarnation may take it over only once the holder left with the static
            // leave epoch (-2); it then carries on with the holder's assignment and target
            // from epoch 0, without a rebalance (Kafka's
            // `getOrMaybeSubscribeStaticConsumerGroupMember`).
            let holder = hb.instance_id.as_ref().and_then(|i| {
                group
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(i))
                    .map(|m| (m.id.clone(), m.epoch))
            });
            if let Some((holder_id, holder_epoch)) = &holder {
                if *holder_epoch != STATIC_LEAVE_EPOCH {
                    return Err(refuse(
                        ResponseError::UnreleasedInstanceId,
                        format!(
                            "Static member {member_id} with instance id {} cannot join the group because the instance id is owned by {holder_id} member.",
                            hb.instance_id.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
            // A dynamic member still in the group rejoins under its epoch rules: Kafka 4.1's
            // `getOrMaybeSubscribeDynamicConsumerGroupMember` checks epoch 0 like any other
            // (`throwIfConsumerGroupMemberEpochIsInvalid`), so the join is accepted only as a
            // retry of the member's first join (its previous epoch is 0: the answer that moved
            // it on was lost) and then keeps the member as it is; otherwise it is fenced until
            // its session expires. (Kafka 4.3 lets any epoch-0 rejoin through, KAFKA-19233.)
            if hb.instance_id.is_none() {
                if let Some(existing) = group.members.get(&member_id) {
                    check_member_epoch(existing, JOIN_EPOCH, hb.owned.as_ref())?;
                }
            }
            let previous = holder.and_then(|(old, _)| {
                let m = group.members.remove(&old)?;
                let target = group.target.remove(&old);
                Some((m, target))
            });
            let rejoining = previous.is_none() && group.members.contains_key(&member_id);
            let member = group
                .members
                .entry(member_id.clone())
                .or_insert_with(|| ConsumerMember::joining(&member_id, hb.instance_id.clone()));
            match previous {
                Some((old, target)) => {
                    member.epoch = 0;
                    member.previous_epoch = 0;
                    member.rack_id = old.rack_id;
                    member.rebalance_timeout_ms = old.rebalance_timeout_ms;
                    member.subscribed_names = old.subscribed_names;
                    member.subscribed_regex = old.subscribed_regex;
                    member.server_assignor = old.server_assignor;
                    member.assigned = old.assigned;
                    member.pending_revocation = old.pending_revocation;
                    if let Some(t) = target {
                        group.target.insert(member_id.clone(), t);
                    }
                }
                // Accepted above: it carries on with its epoch and partitions.
                None if rejoining => {}
                None => changed = true,
            }
            // An epoch-0 answer always carries the full assignment.
            member.last_sent = None;
        }
        if hb.member_epoch != JOIN_EPOCH {
            if let Some(instance) = &hb.instance_id {
                check_static_member(group, &member_id, instance)?;
            }
        }
        let Some(member) = group.members.get_mut(&member_id) else {
            return Err(refuse(
                ResponseError::UnknownMemberId,
                format!(
                    "Member {member_id} is not a member of group {}.",
                    hb.group_id
                ),
            ));
        };
        if hb.member_epoch != JOIN_EPOCH {
            check_member_epoch(member, hb.member_epoch, hb.owned.as_ref())?;
        }
        member.session_deadline_ms = now_ms + config.session_timeout_ms as i64;
        member.client_id = hb.client_id.clone();
        member.client_host = hb.client_host.clone();
        if hb.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if hb.rack_id.is_some() {
            member.rack_id = hb.rack_id.clone();
        }
        if let Some(names) = &hb.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if names != member.subscribed_names {
                member.subscribed_names = names;
                changed = true;
            }
        }
        if let Some(regex) = &hb.subscribed_topic_regex {
            let regex = Some(regex.clone()).filter(|r| !r.is_empty());
            if regex != member.subscribed_regex {
                member.subscribed_regex = regex;
                changed = true;
            }
        }
        if hb.server_assignor.is_some() && hb.server_assignor != member.server_assignor {
            member.server_assignor = hb.server_assignor.clone();
            changed = true;
        }
        if changed {
            group.group_epoch += 1;
        }
        refresh_target(group, topics);
        let owned = hb.owned.clone();
        reconcile(group, &member_id, owned.as_ref(), now_ms);
        let member = group.members.get_mut(&member_id).expect("present");
        let assignment =
            (member.last_sent.as_ref() != Some(&member.assigned)).then(|| member.assigned.clone());
        if assignment.is_some() {
            member.last_sent = Some(member.assigned.clone());
        }
        Ok(HeartbeatResult {
            member_id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment,
        })
    }

    /// A heartbeat with a leave epoch (Kafka's `consumerGroupLeave`). A dynamic member, or a
    /// static one leaving with -1, is removed and the group rebalances. A static member
    /// leaving with -2 (KIP-848's static leave: the consumer restarts and will be back
    /// within its session) keeps its partitions and target: no other member gets them, the
    /// group epoch stays, and the instance's next incarnation takes them over when it joins.
    /// Its session goes on running; if it expires first, the member is removed then.
    fn leave(
        &mut self,
        hb: &Heartbeat,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Result<HeartbeatResult, HeartbeatError> {
        // Kafka's `consumerGroupLeave` looks the group up with `consumerGroup(groupId)`.
        let Some(group) = self.groups.get_mut(&hb.group_id) else {
            return Err(refuse(
                ResponseError::GroupIdNotFound,
                format!("Group {} not found.", hb.group_id),
            ));
        };
        if let Some(instance) = &hb.instance_id {
            check_static_member(group, &hb.member_id, instance)?;
            if hb.member_epoch == STATIC_LEAVE_EPOCH {
                let member = group.members.get_mut(&hb.member_id).expect("checked");
                member.epoch = STATIC_LEAVE_EPOCH;
                member.pending_revocation.clear();
                member.revocation_deadline_ms = None;
                member.last_sent = None;
                tracing::info!(group = %hb.group_id, member = %hb.member_id, instance = %instance, "static member temporarily left the consumer group");
                return Ok(HeartbeatResult {
                    member_id: hb.member_id.clone(),
                    member_epoch: STATIC_LEAVE_EPOCH,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                });
            }
        }
        let id = hb.member_id.clone();
        if group.members.remove(&id).is_none() {
            return Err(refuse(
                ResponseError::UnknownMemberId,
                format!("Member {id} is not a member of group {}.", hb.group_id),
            ));
        }
        tracing::info!(group = %hb.group_id, member = %id, "consumer group member left");
        group.target.remove(&id);
        group.group_epoch += 1;
        refresh_target(group, topics);
        let _ = now_ms;
        Ok(HeartbeatResult {
            member_id: id,
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Members whose session, revocation deadline or (classic members) join/sync deadline
    /// passed, by group.
    pub fn expired_members(&self, now_ms: i64) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .groups
            .iter()
            .map(|(group_id, g)| {
                let expired = g
                    .members
                    .values()
                    .filter(|m| {
                        m.session_deadline_ms <= now_ms
                            || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
                            || m.classic_deadline_ms.is_some_and(|d| d <= now_ms)
                    })
                    .map(|m| m.id.clone())
                    .collect::<Vec<_>>();
                (group_id.clone(), expired)
            })
            .filter(|(_, expired)| !expired.is_empty())
            .collect();
        out.sort();
        out
    }

    /// Fences members (Kafka's `consumerGroupFenceMembers` without the downgrade, which is
    /// the caller's): they are removed, the group epoch moves and a new target is computed.
    pub fn remove_members(&mut self, group_id: &str, ids: &[String], topics: &[TopicView]) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let mut removed = false;
        for id in ids {
            if group.members.remove(id).is_some() {
                tracing::info!(group = %group_id, member = %id, "consumer group member removed");
                removed = true;
            }
            group.target.remove(id);
        }
        if removed {
            group.group_epoch += 1;
            refresh_target(group, topics);
        }
    }

    /// Expires members whose deadlines passed (see [`ConsumerGroups::expired_members`]).
    /// Returns the groups that changed, with their state before the change.
    pub fn tick(
        &mut self,
        topics: &[TopicView],
        now_ms: i64,
    ) -> Vec<(String, ConsumerGroupSnapshot)> {
        let mut changed = Vec::new();
        for (group_id, expired) in self.expired_members(now_ms) {
            let before = self.snapshot(&group_id).expect("listed");
            self.remove_members(&group_id, &expired, topics);
            changed.push((group_id, before));
        }
        changed
    }

    /// Whether fencing `leaving` should turn the group into a classic group instead (Kafka's
    /// `validateOnlineDowngradeWithFencedMembers`): every other member uses the classic
    /// protocol, at least one remains, the policy allows a downgrade, and the rest fit in
    /// `group.max.size`.
    pub fn downgrades_without(&self, group_id: &str, leaving: &[String]) -> bool {
        let Some(group) = self.groups.get(group_id) else {
            return false;
        };
        let remaining: Vec<&ConsumerMember> = group
            .members
            .values()
            .filter(|m| !leaving.contains(&m.id))
            .collect();
        if remaining.is_empty() || remaining.len() == group.members.len() {
            return false;
        }
        if !remaining.iter().all(|m| m.classic.is_some()) {
            return false;
        }
        downgrade_allowed(
            group_id,
            self.config.migration_policy,
            remaining.len(),
            self.config.classic_max_size,
        )
    }

    /// The member a leave heartbeat would remove, if it is a valid leave that removes one
    /// (a static member leaving with -2 stays).
    pub fn leaving_member(&self, hb: &Heartbeat) -> Option<String> {
        if hb.member_epoch != LEAVE_EPOCH {
            return None;
        }
        let group = self.groups.get(&hb.group_id)?;
        match &hb.instance_id {
            Some(instance) => group
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance.as_str()))
                .filter(|m| m.id == hb.member_id)
                .map(|m| m.id.clone()),
            None => group
                .members
                .contains_key(&hb.member_id)
                .then(|| hb.member_id.clone()),
        }
    }
}

/// The checks of a ConsumerGroupHeartbeat that need no group (Kafka's
/// `throwIfConsumerGroupHeartbeatRequestIsInvalid`, which Kafka runs before it looks the group
/// up): a request failing them gets their error whatever the group is.
pub fn validate_heartbeat(hb: &Heartbeat) -> Result<(), HeartbeatError> {
    let invalid = |why: &str| Err(refuse(ResponseError::InvalidRequest, why));
    // Kafka's `throwIfEmptyString`: null passes, a blank string does not.
    let blank = |s: &Option<String>| s.as_ref().is_some_and(|s| s.trim().is_empty());
    if (hb.api_version >= 1 || hb.member_epoch > 0 || hb.member_epoch == LEAVE_EPOCH)
        && hb.member_id.trim().is_empty()
    {
        return invalid("MemberId can't be empty.");
    }
    if hb.group_id.trim().is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if blank(&hb.instance_id) {
        return invalid("InstanceId can't be empty.");
    }
    if blank(&hb.rack_id) {
        return invalid("RackId can't be empty.");
    }
    if hb.member_epoch == JOIN_EPOCH {
        if hb.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if !hb.owned.as_ref().is_some_and(|owned| owned.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        // An empty list of names (or an empty regex) joins without a subscription.
        if hb.subscribed_topic_names.is_none() && hb.subscribed_topic_regex.is_none() {
            return invalid(
                "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
            );
        }
    } else if hb.member_epoch == STATIC_LEAVE_EPOCH {
        if hb.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
    } else if hb.member_epoch < STATIC_LEAVE_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if let Some(a) = &hb.server_assignor {
        if !ASSIGNORS.contains(&a.as_str()) {
            return Err(refuse(
                ResponseError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: uniform, range."
                ),
            ));
        }
    }
    if let Some(regex) = &hb.subscribed_topic_regex {
        if !regex.is_empty() && compile(regex).is_none() {
            return Err(refuse(
                ResponseError::InvalidRegularExpression,
                format!("SubscribedTopicRegex `{regex}` is not a valid regular expression."),
            ));
        }
    }
    Ok(())
}

/// The part of Kafka's `validateOnlineDowngrade*` that does not depend on why the group
/// would downgrade: the policy must allow it and the classic group of `members` must fit in
/// `group.max.size`. Says why in the log when it refuses.
pub(crate) fn downgrade_allowed(
    group_id: &str,
    policy: MigrationPolicy,
    members: usize,
    classic_max_size: usize,
) -> bool {
    if !policy.downgrade_enabled() {
        tracing::info!(group = %group_id, "cannot downgrade the consumer group to a classic group: online downgrade is disabled");
        return false;
    }
    if members > classic_max_size {
        tracing::info!(group = %group_id, "cannot downgrade the consumer group to a classic group: it is larger than group.max.size");
        return false;
    }
    true
}

/// The static member holding `instance` must be `member_id` (Kafka's
/// `throwIfStaticMemberIsUnknown` and `throwIfInstanceIdIsFenced`).
fn check_static_member(
    group: &ConsumerGroup,
    member_id: &str,
    instance: &str,
) -> Result<(), HeartbeatError> {
    let holder = group
        .members
        .values()
        .find(|m| m.instance_id.as_deref() == Some(instance))
        .ok_or_else(|| {
            refuse(
                ResponseError::UnknownMemberId,
                format!("Instance id {instance} is unknown."),
            )
        })?;
    if holder.id != member_id {
        return Err(refuse(
            ResponseError::FencedInstanceId,
            format!(
                "Static member {member_id} with instance id {instance} was fenced by member {}.",
                holder.id
            ),
        ));
    }
    Ok(())
}

/// Kafka's `throwIfConsumerGroupMemberEpochIsInvalid`: an epoch ahead of the member's is
/// fenced; one behind is accepted only if it is the member's previous epoch and the member
/// owns no partition beyond its assignment (the answer that moved it on may have been lost).
fn check_member_epoch(
    member: &ConsumerMember,
    received: i32,
    owned: Option<&Assignment>,
) -> Result<(), HeartbeatError> {
    if received > member.epoch {
        return Err(refuse(
            ResponseError::FencedMemberEpoch,
            format!(
                "The consumer group member has a greater member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                member.epoch
            ),
        ));
    }
    if received < member.epoch {
        let owned_subset =
            owned.is_some_and(|o| flatten(o).all(|tp| flatten(&member.assigned).any(|x| x == tp)));
        if received != member.previous_epoch || !owned_subset {
            return Err(refuse(
                ResponseError::FencedMemberEpoch,
                format!(
                    "The consumer group member has a smaller member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                    member.epoch
                ),
            ));
        }
    }
    Ok(())
}

fn compile(regex: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?:{regex})$")).ok()
}

/// The topics the group subscribes to, resolved against the cluster's topics.
fn resolve(group: &ConsumerGroup, topics: &[TopicView]) -> BTreeMap<String, BTreeSet<Uuid>> {
    // member id → topic ids it subscribes to
    let mut out = BTreeMap::new();
    for m in group.members.values() {
        let regex = m.subscribed_regex.as_deref().and_then(compile);
        let ids: BTreeSet<Uuid> = topics
            .iter()
            .filter(|t| {
                m.subscribed_names.contains(&t.name)
                    || regex
                        .as_ref()
                        .is_some_and(|r| !t.name.starts_with("__") && r.is_match(&t.name))
            })
            .map(|t| t.id)
            .collect();
        out.insert(m.id.clone(), ids);
    }
    out
}

/// The topics the members subscribe to, with their partition counts, as they are now.
fn subscribed_partitions(group: &ConsumerGroup, topics: &[TopicView]) -> Vec<(Uuid, i32)> {
    let wanted: BTreeSet<Uuid> = resolve(group, topics).into_values().flatten().collect();
    topics
        .iter()
        .filter(|t| wanted.contains(&t.id))
        .map(|t| (t.id, t.partitions))
        .collect()
}

/// Recomputes the target assignment when the group epoch moved or subscribed topics changed.
fn refresh_target(group: &mut ConsumerGroup, topics: &[TopicView]) {
    let subscriptions = resolve(group, topics);
    let subscribed = subscribed_partitions(group, topics);
    if subscribed != group.subscribed {
        group.subscribed = subscribed;
        // One bump per change, whether membership or metadata caused it.
        if group.group_epoch <= group.assignment_epoch {
            group.group_epoch = group.assignment_epoch + 1;
        }
    }
    if group.group_epoch <= group.assignment_epoch && group.target.len() == group.members.len() {
        return;
    }
    let assignor = group
        .members
        .values()
        .find_map(|m| m.server_assignor.clone())
        .unwrap_or_else(|| ASSIGNORS[0].to_string());
    let partitions: BTreeMap<Uuid, i32> = group.subscribed.iter().copied().collect();
    group.target = if assignor == "range" {
        assign_range(&subscriptions, &partitions, &group.target)
    } else {
        assign_uniform(&subscriptions, &partitions, &group.target)
    };
    group.assignor = assignor;
    group.assignment_epoch = group.group_epoch;
}

/// Range, as Kafka 4's server-side `RangeAssignor`: per topic, each subscribed member (in
/// id order) gets `partitions / members` partitions and the first `partitions % members`
/// get one more; a member keeps as many of its current partitions of the topic as its
/// quota allows (lowest first, so co-partitioned topics stay together), and the partitions
/// left over are handed out in ranges, in order. From scratch that is the classic range
/// layout; afterwards it moves as few partitions as the balance allows (sticky).
fn assign_range(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    partitions: &BTreeMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, count) in partitions {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let min_quota = *count as usize / members.len();
        let mut with_extra = *count as usize % members.len();
        let mut retained: BTreeSet<i32> = BTreeSet::new();
        // (member, partitions it still needs to reach the minimum quota; may be negative)
        let mut unfilled: Vec<(&String, i64)> = Vec::new();
        for m in &members {
            let current: Vec<i32> = previous
                .get(*m)
                .and_then(|a| a.get(topic))
                .map(|ps| ps.iter().copied().filter(|p| *p < *count).collect())
                .unwrap_or_default();
            let keep = current.len().min(min_quota);
            let set = target
                .entry((*m).clone())
                .or_default()
                .entry(*topic)
                .or_default();
            for p in &current[..keep] {
                set.insert(*p);
                retained.insert(*p);
            }
            let remaining = min_quota as i64 - current.len() as i64;
            if remaining < 0 && with_extra > 0 {
                with_extra -= 1;
                let extra = current[min_quota];
                set.insert(extra);
                retained.insert(extra);
            } else {
                unfilled.push((m, remaining));
            }
        }
        let mut free = (0..*count).filter(|p| !retained.contains(p));
        for (m, mut remaining) in unfilled {
            if with_extra > 0 {
                remaining += 1;
                with_extra -= 1;
            }
            let set = target
                .entry(m.clone())
                .or_default()
                .entry(*topic)
                .or_default();
            for _ in 0..remaining.max(0) {
                if let Some(p) = free.next() {
                    set.insert(p);
                }
            }
        }
    }
    prune(target)
}

/// Uniform: balances the partition count across members, keeping partitions where they
/// were in the previous target when that stays within balance (sticky).
fn assign_uniform(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    partitions: &BTreeMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut load: BTreeMap<&String, usize> = subscriptions.keys().map(|m| (m, 0)).collect();
    let all: Vec<(Uuid, i32)> = partitions
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (*t, p)))
        .collect();
    let eligible = |tp: &(Uuid, i32)| -> Vec<&String> {
        subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(&tp.0))
            .map(|(m, _)| m)
            .collect()
    };
    let quota = |n_members: usize| all.len().div_ceil(n_members.max(1));
    let mut unassigned = Vec::new();
    for tp in &all {
        let members = eligible(tp);
        let sticky = previous
            .iter()
            .find(|(m, a)| a.get(&tp.0).is_some_and(|ps| ps.contains(&tp.1)) && members.contains(m))
            .map(|(m, _)| m);
        match sticky {
            Some(m) if load[m] < quota(members.len()) => {
                *load.get_mut(m).expect("member") += 1;
                target
                    .entry(m.clone())
                    .or_default()
                    .entry(tp.0)
                    .or_default()
                    .insert(tp.1);
            }
            _ => unassigned.push(*tp),
        }
    }
    for tp in unassigned {
        let members = eligible(&tp);
        if let Some(m) = members.into_iter().min_by_key(|m| (load[*m], (*m).clone())) {
            *load.get_mut(m).expect("member") += 1;
            target
                .entry(m.clone())
                .or_default()
                .entry(tp.0)
                .or_default()
                .insert(tp.1);
        }
    }
    prune(target)
}

fn prune(target: BTreeMap<String, Assignment>) -> BTreeMap<String, Assignment> {
    target
        .into_iter()
        .map(|(m, a)| (m, a.into_iter().filter(|(_, ps)| !ps.is_empty()).collect()))
        .collect()
}

/// Moves one member's assignment towards its target (Kafka's `CurrentAssignmentBuilder`):
/// partitions the target takes away are revoked first (epoch held back until the member
/// reports them released); new partitions are given only once no other member owns them.
fn reconcile(group: &mut ConsumerGroup, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
    let target = group.target.get(member_id).cloned().unwrap_or_default();
    let owned_by_others = group.owned_by_others(member_id);
    let assignment_epoch = group.assignment_epoch;
    let member = group.members.get_mut(member_id).expect("present");
    if !member.pending_revocation.is_empty() {
        let released = owned.is_some_and(|o| {
            flatten(&member.pending_revocation).all(|tp| !flatten(o).any(|x| x == tp))
        });
        if !released {
            return;
        }
        member.pending_revocation.clear();
        member.revocation_deadline_ms = None;
    }
    let current: BTreeSet<(Uuid, i32)> = flatten(&member.assigned).collect();
    let wanted: BTreeSet<(Uuid, i32)> = flatten(&target).collect();
    let revoke: BTreeSet<(Uuid, i32)> = current.difference(&wanted).copied().collect();
    if !revoke.is_empty() {
        member.assigned = unflatten(current.intersection(&wanted).copied());
        member.pending_revocation = unflatten(revoke);
        // A classic member revokes by rejoining; its join and sync deadlines bound it.
        if member.classic.is_none() {
            member.revocation_deadline_ms =
                Some(now_ms + member.rebalance_timeout_ms.max(1) as i64);
        }
        return;
    }
    if member.epoch != assignment_epoch {
        member.previous_epoch = member.epoch;
        member.epoch = assignment_epoch;
    }
    let grantable = wanted
        .iter()
        .filter(|tp| current.contains(tp) || !owned_by_others.contains(tp))
        .copied();
    member.assigned = unflatten(grantable);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`, rule by rule.
    #[test]
    fn heartbeats_are_checked_as_kafka_checks_them() {
        let join = Heartbeat {
            group_id: "g".into(),
            member_id: "m".into(),
            member_epoch: JOIN_EPOCH,
            rebalance_timeout_ms: 5000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            api_version: 1,
            ..Default::default()
        };
        assert!(validate_heartbeat(&join).is_ok());
        // An empty subscription joins without topics; 0 is a valid rebalance timeout.
        let empty = Heartbeat {
            subscribed_topic_names: Some(Vec::new()),
            rebalance_timeout_ms: 0,
            ..join.clone()
        };
        assert!(validate_heartbeat(&empty).is_ok());
        let one_partition: Assignment = [(Uuid::new_v4(), BTreeSet::from([0]))].into();
        let cases = [
            (Heartbeat { member_id: " ".into(), ..join.clone() }, "MemberId can't be empty."),
            (Heartbeat { group_id: "".into(), ..join.clone() }, "GroupId can't be empty."),
            (Heartbeat { instance_id: Some(" ".into()), ..join.clone() }, "InstanceId can't be empty."),
            (Heartbeat { rack_id: Some("".into()), ..join.clone() }, "RackId can't be empty."),
            (
                Heartbeat { rebalance_timeout_ms: -1, ..join.clone() },
                "RebalanceTimeoutMs must be provided in first request.",
            ),
            (Heartbeat { owned: None, ..join.clone() }, "TopicPartitions must be empty when (re-)joining."),
            (
                Heartbeat { owned: Some(one_partition), ..join.clone() },
                "TopicPartitions must be empty when (re-)joining.",
            ),
            (
                Heartbeat { subscribed_topic_names: None, ..join.clone() },
                "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
            ),
            (
                Heartbeat { member_epoch: STATIC_LEAVE_EPOCH, ..join.clone() },
                "InstanceId can't be null.",
            ),
            (Heartbeat { member_epoch: -3, ..join.clone() }, "MemberEpoch is invalid."),
        ];
        for (hb, message) in cases {
            let err = validate_heartbeat(&hb).unwrap_err();
            assert_eq!(
                (err.error, err.message.as_str()),
                (ResponseError::InvalidRequest, message)
            );
        }
        // v0: the coordinator names a joining member.
        let v0 = Heartbeat {
            member_id: String::new(),
            api_version: 0,
            ..join
        };
        assert!(validate_heartbeat(&v0).is_ok());
    }

    fn topic(name: &str, partitions: i32) -> TopicView {
        TopicView {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
        }
    }

    fn join(
        groups: &mut ConsumerGroups,
        member: &str,
        topics: &[TopicView],
        now: i64,
    ) -> HeartbeatResult {
        groups
            .heartbeat(
                Heartbeat {
                    group_id: "g".into(),
                    member_id: member.into(),
                    member_epoch: 0,
                    rebalance_timeout_ms: 10_000,
                    subscribed_topic_names: Some(vec!["t".into()]),
                    owned: Some(Assignment::new()),
                    api_version: 1,
                    ..Default::default()
                },
                topics,
                now,
            )
            .unwrap()
    }

    fn beat(
        groups: &mut ConsumerGroups,
        member: &str,
        epoch: i32,
        owned: &Assignment,
        topics: &[TopicView],
        now: i64,
    ) -> Result<HeartbeatResult, HeartbeatError> {
        groups.heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: member.into(),
                member_epoch: epoch,
                owned: Some(owned.clone()),
                api_version: 1,
                ..Default::default()
            },
            topics,
            now,
        )
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn partitions_move_only_after_release() {
        let topics = [topic("t", 4)];
        let mut g = ConsumerGroups::default();
        let a = join(&mut g, "a", &topics, 0);
        assert_eq!(a.member_epoch, 1);
        let a_owned = a.assignment.clone().unwrap();
        assert_eq!(count(&a_owned), 4);
        // b joins: the target splits 2/2, but b gets nothing until a releases.
        let b = join(&mut g, "b", &topics, 1);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(b.assignment.as_ref().map(count), Some(0));
        let a2 = beat(&mut g, "a", 1, &a_owned, &topics, 2).unwrap();
        assert_eq!(a2.member_epoch, 1, "epoch held until revocation completes");
        let a_kept = a2.assignment.clone().unwrap();
        assert_eq!(count(&a_kept), 2);
        assert_eq!(g.groups["g"].state(), "Reconciling");
        // b still cannot take a's partitions.
        let b_owned = b.assignment.clone().unwrap();
        assert!(beat(&mut g, "b", 2, &b_owned, &topics, 3)
            .unwrap()
            .assignment
            .is_none());
        // a reports the release; then b gets them.
        let a3 = beat(&mut g, "a", 1, &a_kept, &topics, 4).unwrap();
        assert_eq!(a3.member_epoch, 2);
        let b2 = beat(&mut g, "b", 2, &b_owned, &topics, 5).unwrap();
        let b_new = b2.assignment.unwrap();
        assert_eq!(count(&b_new), 2);
        let union: BTreeSet<_> = flatten(&a_kept).chain(flatten(&b_new)).collect();
        assert_eq!(union.len(), 4, "every partition owned exactly once");
        assert_eq!(g.groups["g"].state(), "Stable");
    }

    #[test]
    fn fencing_leave_and_expiry() {
        let topics = [topic("t", 2)];
        let mut g = ConsumerGroups::default();
        let a = join(&mut g, "a", &topics, 0);
        let owned = a.assignment.unwrap();
        let err = beat(&mut g, "a", 7, &owned, &topics, 1).unwrap_err();
        assert_eq!(err.error, ResponseError::FencedMemberEpoch);
        assert_eq!(
            beat(&mut g, "zz", 1, &owned, &topics, 1).unwrap_err().error,
            ResponseError::UnknownMemberId
        );
        join(&mut g, "b", &topics, 2);
        assert!(beat(&mut g, "b", LEAVE_EPOCH, &Assignment::new(), &topics, 3).is_ok());
        assert_eq!(g.groups["g"].members.len(), 1);
        g.tick(&topics, 45_001);
        assert!(g.groups["g"].members.is_empty());
        assert_eq!(g.groups["g"].state(), "Empty");
    }

    #[test]
    fn a_dynamic_member_rejoining_with_epoch_zero_keeps_its_place_only_as_a_retry() {
        let topics = [topic("t", 4)];
        let mut g = ConsumerGroups::default();
        let a = join(&mut g, "a", &topics, 0);
        let a_owned = a.assignment.clone().unwrap();
        assert_eq!(a.member_epoch, 1);
        // Its first answer was lost: the same join again (previous epoch 0) is accepted and
        // changes nothing but resending the whole assignment.
        let epoch = g.groups["g"].group_epoch;
        let again = join(&mut g, "a", &topics, 1);
        assert_eq!(again.member_epoch, 1);
        assert_eq!(again.assignment, Some(a_owned.clone()));
        assert_eq!(g.groups["g"].group_epoch, epoch, "no rebalance");
        // Once past that epoch, a rejoin with 0 is fenced (Kafka 4.1) and the member keeps
        // its epoch and partitions until its session runs out.
        join(&mut g, "b", &topics, 2);
        let a2 = beat(&mut g, "a", 1, &a_owned, &topics, 3).unwrap();
        let a3 = beat(&mut g, "a", 1, &a2.assignment.unwrap(), &topics, 4).unwrap();
        assert_eq!(a3.member_epoch, 2);
        let err = g
            .heartbeat(
                Heartbeat {
                    group_id: "g".into(),
                    member_id: "a".into(),
                    member_epoch: JOIN_EPOCH,
                    rebalance_timeout_ms: 10_000,
                    subscribed_topic_names: Some(vec!["t".into()]),
                    owned: Some(Assignment::new()),
                    api_version: 1,
                    ..Default::default()
                },
                &topics,
                5,
            )
            .unwrap_err();
        assert_eq!(err.error, ResponseError::FencedMemberEpoch);
        assert!(
            err.message.contains("smaller member epoch (0)"),
            "{}",
            err.message
        );
        assert_eq!(g.groups["g"].members["a"].epoch, 2);
        assert_eq!(count(&g.groups["g"].members["a"].assigned), 2);
        // Expired, it is gone, and the same join then makes it a new member.
        g.tick(&topics, 45_004);
        assert!(!g.groups["g"].members.contains_key("a"));
        assert!(join(&mut g, "a", &topics, 45_005).member_epoch > 2);
    }

    #[test]
    fn heartbeats_to_a_group_that_does_not_exist() {
        let topics = [topic("t", 1)];
        let mut g = ConsumerGroups::default();
        let err = beat(&mut g, "a", 3, &Assignment::new(), &topics, 0).unwrap_err();
        assert_eq!(err.error, ResponseError::GroupIdNotFound);
        assert_eq!(err.message, "Consumer group g not found.");
        for epoch in [LEAVE_EPOCH, STATIC_LEAVE_EPOCH] {
            let err =
                static_beat(&mut g, "a", "i", epoch, &Assignment::new(), &topics, 0).unwrap_err();
            assert_eq!(
                (err.error, err.message.as_str()),
                (ResponseError::GroupIdNotFound, "Group g not found.")
            );
        }
        assert!(g.groups.is_empty(), "nothing was created");
        // Requests that are invalid in themselves say so first.
        let err = beat(&mut g, "", 3, &Assignment::new(), &topics, 0).unwrap_err();
        assert_eq!(err.error, ResponseError::InvalidRequest);
    }

    #[test]
    fn new_partitions_and_regex_bump_the_epoch() {
        let mut topics = vec![topic("orders-1", 1), topic("other", 1)];
        let mut g = ConsumerGroups::default();
        let r = g
            .heartbeat(
                Heartbeat {
                    group_id: "g".into(),
                    member_id: "a".into(),
                    member_epoch: 0,
                    rebalance_timeout_ms: 1000,
                    subscribed_topic_regex: Some("orders-.*".into()),
                    owned: Some(Assignment::new()),
                    api_version: 1,
                    ..Default::default()
                },
                &topics,
                0,
            )
            .unwrap();
        let owned = r.assignment.unwrap();
        assert_eq!(count(&owned), 1);
        topics.push(topic("orders-2", 3));
        let r2 = beat(&mut g, "a", r.member_epoch, &owned, &topics, 1).unwrap();
        assert!(r2.member_epoch > r.member_epoch);
        assert_eq!(count(&r2.assignment.unwrap()), 4);
        let bad = Heartbeat {
            group_id: "g".into(),
            member_id: "b".into(),
            member_epoch: 0,
            rebalance_timeout_ms: 1000,
            subscribed_topic_regex: Some("(".into()),
            owned: Some(Assignment::new()),
            api_version: 1,
            ..Default::default()
        };
        assert_eq!(
            g.heartbeat(bad, &topics, 2).unwrap_err().error,
            ResponseError::InvalidRegularExpression
        );
    }

    fn static_beat(
        groups: &mut ConsumerGroups,
        member: &str,
        instance: &str,
        epoch: i32,
        owned: &Assignment,
        topics: &[TopicView],
        now: i64,
    ) -> Result<HeartbeatResult, HeartbeatError> {
        groups.heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: member.into(),
                member_epoch: epoch,
                instance_id: Some(instance.into()),
                rebalance_timeout_ms: if epoch == JOIN_EPOCH { 10_000 } else { -1 },
                subscribed_topic_names: (epoch == JOIN_EPOCH).then(|| vec!["t".into()]),
                owned: Some(owned.clone()),
                api_version: 1,
                ..Default::default()
            },
            topics,
            now,
        )
    }

    #[test]
    fn a_static_member_that_leaves_for_a_while_keeps_its_partitions() {
        let topics = [topic("t", 4)];
        let mut g = ConsumerGroups::default();
        let a = static_beat(&mut g, "a1", "ia", 0, &Assignment::new(), &topics, 0).unwrap();
        let b = join(&mut g, "b", &topics, 0);
        // settle: a releases half to b
        let a = static_beat(
            &mut g,
            "a1",
            "ia",
            a.member_epoch,
            &a.assignment.unwrap(),
            &topics,
            1,
        )
        .unwrap();
        let a_kept = a.assignment.clone().unwrap();
        let a = static_beat(&mut g, "a1", "ia", a.member_epoch, &a_kept, &topics, 2).unwrap();
        let b = beat(&mut g, "b", b.member_epoch, &Assignment::new(), &topics, 3).unwrap();
        let b_owned = b.assignment.clone().unwrap();
        assert_eq!((count(&a_kept), count(&b_owned)), (2, 2));
        let group_epoch = g.groups["g"].group_epoch;

        // a restarts: static leave. Its partitions stay its own, nobody rebalances.
        let left =
            static_beat(&mut g, "a1", "ia", STATIC_LEAVE_EPOCH, &a_kept, &topics, 4).unwrap();
        assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
        assert_eq!(g.groups["g"].members["a1"].assigned, a_kept);
        assert_eq!(g.groups["g"].group_epoch, group_epoch);
        let b2 = beat(&mut g, "b", b.member_epoch, &b_owned, &topics, 5).unwrap();
        assert!(b2.assignment.is_none(), "b gets none of a's partitions");

        // The old incarnation cannot come back under its old id and epoch.
        assert_eq!(
            static_beat(&mut g, "a1", "ia", a.member_epoch, &a_kept, &topics, 6)
                .unwrap_err()
                .error,
            ResponseError::FencedMemberEpoch
        );
        // The new incarnation takes over the instance id and a's partitions, from epoch 0.
        let a2 = static_beat(&mut g, "a2", "ia", 0, &Assignment::new(), &topics, 7).unwrap();
        assert_eq!(a2.assignment, Some(a_kept.clone()));
        assert_eq!(a2.member_epoch, a.member_epoch);
        assert_eq!(g.groups["g"].group_epoch, group_epoch, "no rebalance");
        assert!(!g.groups["g"].members.contains_key("a1"));
        // ...and the old member id is fenced by it.
        assert_eq!(
            static_beat(&mut g, "a1", "ia", a.member_epoch, &a_kept, &topics, 8)
                .unwrap_err()
                .error,
            ResponseError::FencedInstanceId
        );
        // While a2 holds the instance id, another incarnation cannot join with it.
        assert_eq!(
            static_beat(&mut g, "a3", "ia", 0, &Assignment::new(), &topics, 9)
                .unwrap_err()
                .error,
            ResponseError::UnreleasedInstanceId
        );
        assert_eq!(
            static_beat(&mut g, "a3", "other", 5, &Assignment::new(), &topics, 9)
                .unwrap_err()
                .error,
            ResponseError::UnknownMemberId
        );
    }

    #[test]
    fn a_static_member_that_does_not_come_back_expires_with_its_session() {
        let topics = [topic("t", 2)];
        let mut g = ConsumerGroups::default();
        let a = static_beat(&mut g, "a1", "ia", 0, &Assignment::new(), &topics, 0).unwrap();
        let owned = a.assignment.unwrap();
        static_beat(&mut g, "a1", "ia", STATIC_LEAVE_EPOCH, &owned, &topics, 1).unwrap();
        let b = join(&mut g, "b", &topics, 2);
        assert_eq!(
            b.assignment.as_ref().map(count),
            Some(0),
            "a still holds both"
        );
        // a's session (from its last heartbeat) runs out: it goes, and b gets everything.
        g.tick(&topics, 45_001);
        assert!(!g.groups["g"].members.contains_key("a1"));
        let b = beat(
            &mut g,
            "b",
            b.member_epoch,
            &Assignment::new(),
            &topics,
            45_002,
        )
        .unwrap();
        assert_eq!(b.assignment.as_ref().map(count), Some(2));
        // A static member leaving with -1 leaves for good at once.
        let c = static_beat(&mut g, "c1", "ic", 0, &Assignment::new(), &topics, 45_003).unwrap();
        let epoch = g.groups["g"].group_epoch;
        static_beat(
            &mut g,
            "c1",
            "ic",
            LEAVE_EPOCH,
            &Assignment::new(),
            &topics,
            45_004,
        )
        .unwrap();
        assert!(!g.groups["g"].members.contains_key("c1"));
        assert!(g.groups["g"].group_epoch > epoch);
        let _ = c;
    }

    fn t_id(partitions: &BTreeMap<Uuid, i32>) -> Uuid {
        *partitions.keys().next().expect("one topic")
    }

    #[test]
    fn assignors_balance() {
        let t = topic("t", 7);
        let partitions = BTreeMap::from([(t.id, 7)]);
        let subs: BTreeMap<String, BTreeSet<Uuid>> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), BTreeSet::from([t.id])))
            .collect();
        for target in [
            assign_range(&subs, &partitions, &BTreeMap::new()),
            assign_uniform(&subs, &partitions, &BTreeMap::new()),
        ] {
            let mut counts: Vec<usize> = target.values().map(count).collect();
            counts.sort();
            assert_eq!(counts, vec![2, 2, 3]);
        }
        // Range keeps what it can too (Kafka's server-side range assignor is sticky): from
        // scratch the classic ranges; when c leaves, a and b keep theirs and share c's.
        let ranges = assign_range(&subs, &partitions, &BTreeMap::new());
        let range_of = |t: &BTreeMap<String, Assignment>, m: &str| -> Vec<i32> {
            t[m].get(&t_id(&partitions))
                .map(|ps| ps.iter().copied().collect())
                .unwrap_or_default()
        };
        assert_eq!(range_of(&ranges, "a"), vec![0, 1, 2]);
        assert_eq!(range_of(&ranges, "b"), vec![3, 4]);
        assert_eq!(range_of(&ranges, "c"), vec![5, 6]);
        let mut two = subs.clone();
        two.remove("c");
        let after = assign_range(&two, &partitions, &ranges);
        assert_eq!(range_of(&after, "a"), vec![0, 1, 2, 5]);
        assert_eq!(range_of(&after, "b"), vec![3, 4, 6]);
        // Uniform is sticky: removing one member moves only its partitions.
        let before = assign_uniform(&subs, &partitions, &BTreeMap::new());
        let mut fewer = subs.clone();
        fewer.remove("c");
        let after = assign_uniform(&fewer, &partitions, &before);
        for m in ["a", "b"] {
            assert!(
                flatten(&before[m]).all(|tp| flatten(&after[m]).any(|x| x == tp)),
                "{m} kept its partitions"
            );
        }
    }
}
