//! The controller: validates metadata changes against the image and turns them into records,
//! with Kafka's rules and error cases (Kafka's `ReplicationControlManager` and
//! `ConfigurationControlManager`).
//!
//! Sans-IO: every method reads an image and returns records; [`MetadataStore::commit_with`]
//! runs it under the commit lock and makes the records durable.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::config::{broker_config, check_topic_config_set, topic_config};
use crate::image::MetadataImage;
use crate::partition_change::{
    AlterPartitionError, PartitionRegistration, ReassignmentError, NO_LEADER,
};
use crate::records::{ConfigResource, MetadataRecord};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// What a broker tells the controller when it registers (Kafka's BrokerRegistrationRequest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerRegistrationRequest {
    pub broker_id: i32,
    /// New on every start of the broker process, so that a retried registration of the same
    /// process is recognised and a restarted process gets a new epoch.
    pub incarnation_id: Uuid,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The feature levels the broker can serve (KIP-584); absent from software older than
    /// feature versions.
    #[serde(default)]
    pub supported_features: BTreeMap<String, crate::features::VersionRange>,
}

/// Why the controller refuses an AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionFailure {
    /// STALE_BROKER_EPOCH (77): the sender is not the current registration of its id.
    #[error("the sender's broker epoch is not its current registration")]
    StaleBrokerEpoch,
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    #[error("{0}")]
    Refused(AlterPartitionError),
}

impl AlterPartitionFailure {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            AlterPartitionFailure::StaleBrokerEpoch => 77,
            AlterPartitionFailure::UnknownTopicOrPartition => 3,
            AlterPartitionFailure::Refused(e) => e.kafka_error_code(),
        }
    }
}

/// Kafka's `ElectionType`, the kind of leader election an ElectLeaders request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica leads again, if it is live and in the ISR (Kafka's code 0).
    Preferred,
    /// A partition without a leader gets one, from the ISR if a member is live, otherwise
    /// from any live replica at the risk of losing acknowledged records (Kafka's code 1).
    Unclean,
}

impl ElectionType {
    /// The election type of an ElectLeaders request; `None` for a code Kafka does not define.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// Why one partition of an ElectLeaders request got no new leader, with Kafka's error codes
/// and messages (`ReplicationControlManager.electLeader`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    /// UNKNOWN_TOPIC_OR_PARTITION (3).
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    /// ELECTION_NOT_NEEDED (84): the preferred replica already leads (preferred), or the
    /// partition has a leader (unclean).
    #[error("Leader election not needed for topic partition.")]
    ElectionNotNeeded,
    /// PREFERRED_LEADER_NOT_AVAILABLE (80): the preferred replica is fenced or out of sync.
    #[error("The preferred leader was not available.")]
    PreferredLeaderNotAvailable,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE (83): no replica of the partition is live.
    #[error("Eligible topic partition leaders are not available.")]
    EligibleLeadersNotAvailable,
}

impl ElectionError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ElectionError::UnknownTopicOrPartition(_) => 3,
            ElectionError::ElectionNotNeeded => 84,
            ElectionError::PreferredLeaderNotAvailable => 80,
            ElectionError::EligibleLeadersNotAvailable => 83,
        }
    }
}

/// One topic of an ElectLeaders answer: each partition's outcome, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicElection {
    pub topic: String,
    pub partitions: Vec<(i32, Result<(), ElectionError>)>,
}

/// Most preferred-leader elections one automatic balance round commits (Kafka's
/// `MAX_ELECTIONS_PER_IMBALANCE`), so that one metadata batch stays small; the caller runs
/// another round at once when a round is full.
pub const MAX_ELECTIONS_PER_BALANCE: usize = 1000;

/// A refused change, one variant per Kafka error code the controller can return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    #[error("This server does not host this topic ID.")]
    UnknownTopicId,
    #[error("{0}")]
    TopicDeletionDisabled(String),
    /// NO_REASSIGNMENT_IN_PROGRESS (85).
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

/// One partition of an AlterPartitionReassignments request: its target replicas, or `None`
/// to cancel its ongoing reassignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentTarget {
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// A partition by topic id and index.
type PartitionKey = (Uuid, i32);

/// An ongoing reassignment, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub partition: i32,
    /// The whole replica set: the target, then the replicas being removed.
    pub replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

/// One topic of a CreateTopics request, with Kafka's `-1` meaning "broker default".
#[derive(Debug, Clone, Default)]
pub struct CreateTopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Manual assignment: (partition, broker ids). Exclusive with the two counts above.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

/// A topic the controller created (or would create, for `validate_only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// One config change of AlterConfigs / IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Checks a topic name with Kafka's rules (`org.apache.kafka.common.internals.Topic`).
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::InvalidTopic(
            "Topic name is illegal, it can't be empty".into(),
        ));
    }
    if name == "." || name == ".." {
        return Err(ControllerError::InvalidTopic(
            "Topic name cannot be \".\" or \"..\"".into(),
        ));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Kafka treats `.` and `_` as the same character in metric names, so topics differing only
/// there collide.
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// Whether a topic's partitions may take a leader from outside their ISR
/// (`unclean.leader.election.enable`), resolved per topic by the caller: a topic override,
/// else the broker's setting.
pub type UncleanElection<'a> = &'a dyn Fn(&str) -> bool;

/// An [`UncleanElection`] that never allows it (Kafka's default).
pub const NO_UNCLEAN_ELECTION: UncleanElection<'static> = &|_| false;

pub struct Controller {
    pub node_id: i32,
}

impl Controller {
    pub fn new(node_id: i32) -> Self {
        Self { node_id }
    }

    /// The brokers that take new replicas: the unfenced registered ones.
    fn brokers(image: &MetadataImage) -> BTreeSet<i32> {
        image.live_brokers()
    }

    /// Replica sets for partitions `first..first + count` of a topic (Kafka's rack-aware
    /// assignment): live brokers ordered so that consecutive ones are in different racks,
    /// replicas of a partition taken consecutively from that order, each partition starting
    /// one further on, from a start derived from the topic id so that topics spread out.
    fn place(
        image: &MetadataImage,
        topic_id: Uuid,
        first: i32,
        count: i32,
        replication_factor: usize,
    ) -> Vec<Vec<i32>> {
        let order = rack_alternated(image);
        assert!(replication_factor <= order.len() && !order.is_empty());
        let start = (topic_id.as_u128() % order.len() as u128) as usize;
        (first..first + count)
            .map(|p| {
                (0..replication_factor)
                    .map(|r| order[(start + p as usize + r) % order.len()])
                    .collect()
            })
            .collect()
    }

    /// Records registering a broker. A new registration (a restarted process) gets a new
    /// epoch and starts fenced, which also takes away the leadership and ISR memberships of
    /// the broker's previous incarnation; a retry from the same process changes nothing.
    /// Returns the broker epoch.
    pub fn register_broker(
        &self,
        image: &MetadataImage,
        request: &BrokerRegistrationRequest,
        unclean: UncleanElection,
    ) -> (i64, Vec<MetadataRecord>) {
        if let Some(existing) = image.broker(request.broker_id) {
            if existing.incarnation_id == request.incarnation_id {
                return (existing.broker_epoch, Vec::new());
            }
        }
        let broker_epoch = image.offset as i64 + 1;
        let mut records = vec![MetadataRecord::RegisterBroker {
            broker_id: request.broker_id,
            broker_epoch,
            incarnation_id: request.incarnation_id,
            host: request.host.clone(),
            port: request.port,
            rack: request.rack.clone(),
            supported_features: request.supported_features.clone(),
        }];
        let mut live = image.live_brokers();
        live.remove(&request.broker_id);
        records.extend(partition_changes(image, |topic, p| {
            p.on_broker_fenced(request.broker_id, &live, unclean(topic))
        }));
        (broker_epoch, records)
    }

    /// Records fencing a broker (its session expired, or it is shutting down): partitions it
    /// led get new leaders from their ISRs, and it leaves the ISRs it was in. Nothing when the
    /// broker is already fenced or `broker_epoch` is not its current registration.
    pub fn fence_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        unclean: UncleanElection,
    ) -> Vec<MetadataRecord> {
        match image.broker(broker_id) {
            Some(b) if b.broker_epoch == broker_epoch && !b.fenced => {}
            _ => return Vec::new(),
        }
        let mut live = image.live_brokers();
        live.remove(&broker_id);
        let mut records = vec![MetadataRecord::FenceBroker {
            broker_id,
            broker_epoch,
        }];
        records.extend(partition_changes(image, |topic, p| {
            p.on_broker_fenced(broker_id, &live, unclean(topic))
        }));
        records
    }

    /// AlterPartition from a partition's leader (KIP-497): a new ISR built on
    /// `partition_epoch`, validated by [`PartitionRegistration::alter_isr`] against the live
    /// brokers. Returns the registration as committed (unchanged if the ISR is the same).
    /// A sender whose registration is not `broker_epoch` is a stale process: NOT_LEADER.
    #[allow(clippy::too_many_arguments)]
    pub fn alter_partition(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> Result<(PartitionRegistration, Vec<MetadataRecord>), AlterPartitionFailure> {
        if image
            .broker(broker_id)
            .is_none_or(|b| b.broker_epoch != broker_epoch || b.fenced)
        {
            return Err(AlterPartitionFailure::StaleBrokerEpoch);
        }
        let topic = image
            .topic_by_id(&topic_id)
            .ok_or(AlterPartitionFailure::UnknownTopicOrPartition)?;
        let current = topic
            .partitions
            .get(partition.max(0) as usize)
            .filter(|_| partition >= 0)
            .ok_or(AlterPartitionFailure::UnknownTopicOrPartition)?
            .registration();
        let next = current
            .alter_isr(
                broker_id,
                leader_epoch,
                partition_epoch,
                new_isr,
                &image.live_brokers(),
            )
            .map_err(AlterPartitionFailure::Refused)?;
        let records = if next == current {
            Vec::new()
        } else {
            vec![partition_record(topic_id, partition, &next)]
        };
        Ok((next, records))
    }

    /// One partition's leader election for ElectLeaders (Kafka's
    /// `ReplicationControlManager.electLeader`): the record moving its leadership, or why
    /// there is none. A preferred election of a partition without any leader elects the
    /// first live ISR member when the preferred replica cannot lead, as Kafka's
    /// `PartitionChangeBuilder` does; an unclean one prefers a live ISR member and falls
    /// back to any live replica, whatever `unclean.leader.election.enable` says (asking for
    /// it is the operator's explicit consent to lose records).
    pub fn elect_leader(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        election: ElectionType,
    ) -> Result<MetadataRecord, ElectionError> {
        let t = image.topic(topic).ok_or_else(|| {
            ElectionError::UnknownTopicOrPartition(format!("No such topic as {topic}"))
        })?;
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
            .ok_or_else(|| {
                ElectionError::UnknownTopicOrPartition(format!(
                    "No such partition as {topic}-{partition}"
                ))
            })?;
        let current = p.registration();
        let live = image.live_brokers();
        let next = match election {
            ElectionType::Preferred => {
                if current.replicas.first() == Some(&current.leader) {
                    return Err(ElectionError::ElectionNotNeeded);
                }
                current
                    .elect_preferred(&live)
                    .or_else(|| {
                        (current.leader == NO_LEADER)
                            .then(|| current.on_broker_unfenced(&live, false))
                            .flatten()
                    })
                    .ok_or(ElectionError::PreferredLeaderNotAvailable)?
            }
            ElectionType::Unclean => {
                if current.leader != NO_LEADER {
                    return Err(ElectionError::ElectionNotNeeded);
                }
                current
                    .on_broker_unfenced(&live, true)
                    .ok_or(ElectionError::EligibleLeadersNotAvailable)?
            }
        };
        Ok(partition_record(t.topic_id, partition, &next))
    }

    /// ElectLeaders (KIP-460): an election for each named partition, or with `targets`
    /// `None` for every partition of every topic, where (as in Kafka) partitions that need
    /// no election are left out of the answer. A partition named twice gets one election
    /// and the same outcome twice.
    pub fn elect_leaders(
        &self,
        image: &MetadataImage,
        election: ElectionType,
        targets: Option<&[(String, Vec<i32>)]>,
    ) -> (Vec<TopicElection>, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let mut results = Vec::new();
        match targets {
            None => {
                for topic in image.topics() {
                    let mut partitions = Vec::new();
                    for p in &topic.partitions {
                        match self.elect_leader(image, &topic.name, p.partition, election) {
                            Ok(record) => {
                                records.push(record);
                                partitions.push((p.partition, Ok(())));
                            }
                            Err(ElectionError::ElectionNotNeeded) => {}
                            Err(e) => partitions.push((p.partition, Err(e))),
                        }
                    }
                    results.push(TopicElection {
                        topic: topic.name.clone(),
                        partitions,
                    });
                }
            }
            Some(targets) => {
                let mut done: BTreeMap<(&str, i32), Result<(), ElectionError>> = BTreeMap::new();
                for (topic, partitions) in targets {
                    let mut outcomes = Vec::with_capacity(partitions.len());
                    for &partition in partitions {
                        let outcome = done
                            .entry((topic.as_str(), partition))
                            .or_insert_with(|| {
                                self.elect_leader(image, topic, partition, election)
                                    .map(|record| records.push(record))
                            })
                            .clone();
                        outcomes.push((partition, outcome));
                    }
                    results.push(TopicElection {
                        topic: topic.clone(),
                        partitions: outcomes,
                    });
                }
            }
        }
        (results, records)
    }

    /// AlterPartitionReassignments (KIP-455, Kafka's
    /// `ReplicationControlManager.alterPartitionReassignments`): for each named partition,
    /// starts a reassignment to its target replicas (see [`PartitionRegistration::reassign`])
    /// or cancels the ongoing one (`None`). Outcomes are per partition, in request order;
    /// the records of the successful ones commit together. A partition named twice is
    /// changed twice, in order.
    ///
    /// `allow_replication_factor_change` false (v1, KIP-860) refuses a target whose size
    /// differs from the partition's replication factor (during a reassignment, that of its
    /// target). `unclean` (`unclean.leader.election.enable`) allows a cancellation that
    /// leaves no ISR member among the original replicas.
    pub fn alter_partition_reassignments(
        &self,
        image: &MetadataImage,
        targets: &[(String, Vec<ReassignmentTarget>)],
        allow_replication_factor_change: bool,
        unclean: UncleanElection,
    ) -> (Vec<Vec<Result<(), ControllerError>>>, Vec<MetadataRecord>) {
        let live = image.live_brokers();
        // Partitions changed by this request so far, so that one named twice builds on the
        // first change; one record each at the end.
        let mut changed: BTreeMap<PartitionKey, PartitionRegistration> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(targets.len());
        for (topic, partitions) in targets {
            let mut topic_outcomes = Vec::with_capacity(partitions.len());
            for target in partitions {
                let outcome = self.reassign_partition(
                    image,
                    &changed,
                    topic,
                    target,
                    allow_replication_factor_change,
                    &live,
                    unclean,
                );
                topic_outcomes.push(outcome.map(|next| {
                    if let Some((key, next)) = next {
                        changed.insert(key, next);
                    }
                }));
            }
            outcomes.push(topic_outcomes);
        }
        let records = changed
            .iter()
            .map(|((topic_id, partition), next)| partition_record(*topic_id, *partition, next))
            .collect();
        (outcomes, records)
    }

    /// One partition of [`Controller::alter_partition_reassignments`]: its next
    /// registration (`None` when nothing changes) or why it is refused.
    #[allow(clippy::too_many_arguments)]
    fn reassign_partition(
        &self,
        image: &MetadataImage,
        changed: &BTreeMap<PartitionKey, PartitionRegistration>,
        topic: &str,
        target: &ReassignmentTarget,
        allow_replication_factor_change: bool,
        live: &BTreeSet<i32>,
        unclean: UncleanElection,
    ) -> Result<Option<(PartitionKey, PartitionRegistration)>, ControllerError> {
        let t = image
            .topic(topic)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let key = (t.topic_id, target.partition);
        let current = match changed.get(&key) {
            Some(c) => c.clone(),
            None => usize::try_from(target.partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .ok_or(ControllerError::UnknownTopicOrPartition)?
                .registration(),
        };
        let next = match &target.replicas {
            None => current
                .cancel_reassignment(live, unclean(topic))
                .map_err(|e| match e {
                ReassignmentError::NoReassignmentInProgress => {
                    ControllerError::NoReassignmentInProgress(e.to_string())
                }
                ReassignmentError::RevertNeedsUncleanElection => {
                    ControllerError::InvalidReplicaAssignment(format!(
                        "Unable to revert partition assignment for {topic}:{} because it would require an unclean leader election.",
                        target.partition
                    ))
                }
            })?,
            Some(replicas) => {
                validate_reassignment_target(image, replicas)?;
                let factor = current.target_replicas().len();
                if !allow_replication_factor_change && replicas.len() != factor {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "The replication factor is changed from {factor} to {}",
                        replicas.len()
                    )));
                }
                current.reassign(replicas, live)
            }
        };
        Ok(next.map(|n| (key, n)))
    }

    /// ListPartitionReassignments (KIP-455): every ongoing reassignment with `topics`
    /// `None`, otherwise those of the named partitions; unknown topics and partitions, and
    /// partitions not being reassigned, are left out, and so are topics with none left.
    pub fn list_partition_reassignments(
        &self,
        image: &MetadataImage,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, Vec<OngoingReassignment>)> {
        let ongoing = |p: &crate::PartitionImage| {
            (!p.adding_replicas.is_empty() || !p.removing_replicas.is_empty()).then(|| {
                OngoingReassignment {
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    adding_replicas: p.adding_replicas.clone(),
                    removing_replicas: p.removing_replicas.clone(),
                }
            })
        };
        let listed: Vec<(String, Vec<OngoingReassignment>)> = match topics {
            None => image
                .topics()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.partitions.iter().filter_map(ongoing).collect(),
                    )
                })
                .collect(),
            Some(topics) => topics
                .iter()
                .filter_map(|(name, partitions)| {
                    let t = image.topic(name)?;
                    let found = partitions
                        .iter()
                        .filter_map(|p| usize::try_from(*p).ok().and_then(|i| t.partitions.get(i)))
                        .filter_map(ongoing)
                        .collect();
                    Some((name.clone(), found))
                })
                .collect(),
        };
        listed.into_iter().filter(|(_, p)| !p.is_empty()).collect()
    }

    /// The active controller's automatic preferred-leader balancing (Kafka's
    /// `auto.leader.rebalance.enable`): for each broker that is the preferred (first)
    /// replica of some partitions, when more than `imbalance_percentage` percent of those
    /// are not led by it, leadership of each of them moves back to it where its replica is
    /// live and in the ISR. At most [`MAX_ELECTIONS_PER_BALANCE`] elections per call.
    ///
    /// The per-broker threshold is the ZooKeeper controller's rule
    /// (`leader.imbalance.per.broker.percentage`); Kafka's KRaft controller ignores that
    /// setting and balances every imbalanced partition, which is this with 0 percent.
    pub fn balance_leaders(
        &self,
        image: &MetadataImage,
        imbalance_percentage: i32,
    ) -> Vec<MetadataRecord> {
        let live = image.live_brokers();
        // Per preferred replica: how many partitions prefer it, and those it does not lead.
        let mut preferred_for: BTreeMap<i32, usize> = BTreeMap::new();
        let mut not_led: BTreeMap<i32, Vec<(Uuid, &crate::PartitionImage)>> = BTreeMap::new();
        for topic in image.topics() {
            for p in &topic.partitions {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                *preferred_for.entry(preferred).or_default() += 1;
                if p.leader != preferred {
                    not_led
                        .entry(preferred)
                        .or_default()
                        .push((topic.topic_id, p));
                }
            }
        }
        let mut records = Vec::new();
        for (broker, not_led) in &not_led {
            let total = preferred_for.get(broker).copied().unwrap_or_default();
            // not_led / total > percentage / 100, without rounding.
            if (not_led.len() as i64) * 100 <= i64::from(imbalance_percentage) * (total as i64) {
                continue;
            }
            for (topic_id, p) in not_led {
                if records.len() >= MAX_ELECTIONS_PER_BALANCE {
                    return records;
                }
                if let Some(next) = p.registration().elect_preferred(&live) {
                    records.push(partition_record(*topic_id, p.partition, &next));
                }
            }
        }
        records
    }

    /// Records unfencing a broker that caught up with the metadata log: partitions without a
    /// leader that it can lead get it back. Nothing when it is not fenced in `broker_epoch`.
    pub fn unfence_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        unclean: UncleanElection,
    ) -> Vec<MetadataRecord> {
        match image.broker(broker_id) {
            Some(b) if b.broker_epoch == broker_epoch && b.fenced => {}
            _ => return Vec::new(),
        }
        let mut live = image.live_brokers();
        live.insert(broker_id);
        let mut records = vec![MetadataRecord::UnfenceBroker {
            broker_id,
            broker_epoch,
        }];
        records.extend(partition_changes(image, |topic, p| {
            if p.replicas.contains(&broker_id) {
                p.on_broker_unfenced(&live, unclean(topic))
            } else {
                None
            }
        }));
        records
    }

    /// Validates topic configs of a create request or an alter.
    pub fn validate_topic_configs<'a>(
        configs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<(), ControllerError> {
        let mut set = BTreeMap::new();
        for (name, value) in configs {
            let Some(def) = topic_config(name) else {
                return Err(ControllerError::InvalidConfig(format!(
                    "Unknown topic config name: {name}"
                )));
            };
            let Some(value) = value else {
                return Err(ControllerError::InvalidConfig(format!(
                    "Null value not supported for topic configs: {name}"
                )));
            };
            def.validate(value)
                .map_err(|e| ControllerError::InvalidConfig(e.0))?;
            set.insert(name.to_string(), value.to_string());
        }
        check_topic_config_set(&set).map_err(|e| ControllerError::InvalidConfig(e.0))
    }

    /// Records for one CreateTopics entry. `defaults` are `num.partitions` and
    /// `default.replication.factor`.
    pub fn create_topic(
        &self,
        image: &MetadataImage,
        spec: &CreateTopicSpec,
        defaults: (i32, i16),
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), ControllerError> {
        validate_topic_name(&spec.name)?;
        if image.topic(&spec.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists(format!(
                "Topic '{}' already exists.",
                spec.name
            )));
        }
        let key = collision_key(&spec.name);
        if let Some(other) = image.topics().find(|t| collision_key(&t.name) == key) {
            return Err(ControllerError::InvalidTopic(format!(
                "Topic '{}' collides with existing topic: {}",
                spec.name, other.name
            )));
        }
        let brokers = Self::brokers(image);
        let topic_id = Uuid::new_v4();
        let assignments: Vec<Vec<i32>> = if spec.assignments.is_empty() {
            let partitions = match spec.num_partitions {
                -1 => defaults.0,
                n if n <= 0 => {
                    return Err(ControllerError::InvalidPartitions(
                        "Number of partitions was set to an invalid non-positive value.".into(),
                    ))
                }
                n => n,
            };
            let replication_factor =
                match spec.replication_factor {
                    -1 => defaults.1,
                    n if n <= 0 => return Err(ControllerError::InvalidReplicationFactor(
                        "Replication factor must be larger than 0, or -1 to use the default value."
                            .into(),
                    )),
                    n => n,
                };
            if replication_factor as usize > brokers.len() {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
                    brokers.len()
                )));
            }
            Self::place(image, topic_id, 0, partitions, replication_factor as usize)
        } else {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            self.validate_assignments(&spec.assignments, 0, &brokers)?
        };
        Self::validate_topic_configs(spec.configs.iter().map(|(k, v)| (k.as_str(), v.as_deref())))?;
        let mut records = vec![MetadataRecord::Topic {
            name: spec.name.clone(),
            topic_id,
        }];
        records.extend(partition_records(topic_id, 0, &assignments));
        for (name, value) in &spec.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(spec.name.clone()),
                name: name.clone(),
                value: value.clone(),
            });
        }
        Ok((
            CreatedTopic {
                topic_id,
                num_partitions: assignments.len() as i32,
                replication_factor: assignments.first().map_or(0, |r| r.len() as i16),
            },
            records,
        ))
    }

    /// Checks a manual assignment: partitions numbered consecutively from `first_partition`,
    /// each with distinct, registered brokers and the same replica count.
    fn validate_assignments(
        &self,
        assignments: &[(i32, Vec<i32>)],
        first_partition: i32,
        brokers: &BTreeSet<i32>,
    ) -> Result<Vec<Vec<i32>>, ControllerError> {
        let by_partition: BTreeMap<i32, &Vec<i32>> =
            assignments.iter().map(|(p, r)| (*p, r)).collect();
        let bad = |m: String| Err(ControllerError::InvalidReplicaAssignment(m));
        if by_partition.len() != assignments.len() {
            return bad("Duplicate partition index in the replica assignment.".into());
        }
        let mut out = Vec::with_capacity(assignments.len());
        for (i, (partition, replicas)) in by_partition.into_iter().enumerate() {
            if partition != first_partition + i as i32 {
                return bad(format!(
                    "Partitions should be consecutive and start at {first_partition}, found {partition}."
                ));
            }
            if replicas.is_empty() {
                return bad(format!("The manual partition assignment includes an empty replica list for partition {partition}."));
            }
            let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
            if distinct.len() != replicas.len() {
                return bad(format!(
                    "The manual partition assignment includes the broker {:?} more than once.",
                    replicas
                ));
            }
            if let Some(missing) = distinct.iter().find(|b| !brokers.contains(b)) {
                return bad(format!("The manual partition assignment includes broker {missing}, but no such broker is registered."));
            }
            if let Some(first) = out.first() {
                let first: &Vec<i32> = first;
                if first.len() != replicas.len() {
                    return bad("All partitions in the manual partition assignment must have the same number of replicas.".into());
                }
            }
            out.push(replicas.clone());
        }
        Ok(out)
    }

    pub fn delete_topic(
        &self,
        image: &MetadataImage,
        topic_id: Uuid,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if image.topic_by_id(&topic_id).is_none() {
            return Err(ControllerError::UnknownTopicId);
        }
        Ok(vec![MetadataRecord::RemoveTopic { topic_id }])
    }

    /// CreatePartitions: grows `name` to `count` partitions.
    pub fn create_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image
            .topic(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            )));
        }
        if count == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            )));
        }
        let brokers = Self::brokers(image);
        let new_assignments = match assignments {
            Some(a) => {
                if a.len() as i32 != count - current {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - current,
                        a.len()
                    )));
                }
                let numbered: Vec<(i32, Vec<i32>)> = a
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (current + i as i32, r.clone()))
                    .collect();
                self.validate_assignments(&numbered, current, &brokers)?
            }
            None => {
                // The first partition's replication factor; while it is being reassigned,
                // that of its target (its replica set holds the leaving replicas too).
                let rf = topic
                    .partitions
                    .first()
                    .map_or(1, |p| p.replicas.len() - p.removing_replicas.len());
                if rf > brokers.len() {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.",
                        brokers.len()
                    )));
                }
                Self::place(image, topic.topic_id, current, count - current, rf)
            }
        };
        Ok(partition_records(topic.topic_id, current, &new_assignments).collect())
    }

    /// Records for config changes on one resource, validated as a whole: either every change
    /// is valid or none is written.
    pub fn alter_configs(
        &self,
        image: &MetadataImage,
        resource: &ConfigResource,
        ops: &[ConfigOp],
        replace_all: bool,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let current = image.configs(resource).cloned().unwrap_or_default();
        match resource {
            ConfigResource::Topic(name) => {
                if image.topic(name).is_none() {
                    return Err(ControllerError::UnknownTopicOrPartition);
                }
            }
            ConfigResource::Broker(Some(id))
                if *id != self.node_id && image.broker(*id).is_none() =>
            {
                return Err(ControllerError::InvalidRequest(format!(
                    "Unexpected broker id, expected {} but received {id}",
                    self.node_id
                )));
            }
            ConfigResource::Broker(_) => {}
        }
        let mut next = if replace_all {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for op in ops {
            let name = match op {
                ConfigOp::Set(n, _)
                | ConfigOp::Delete(n)
                | ConfigOp::Append(n, _)
                | ConfigOp::Subtract(n, _) => n,
            };
            let def = match resource {
                ConfigResource::Topic(_) => topic_config(name),
                ConfigResource::Broker(_) => broker_config(name).map(|k| k.def()),
            }
            .ok_or_else(|| {
                ControllerError::InvalidConfig(format!("Unknown config name: {name}"))
            })?;
            match op {
                ConfigOp::Set(n, v) => {
                    next.insert(n.clone(), v.clone());
                }
                ConfigOp::Delete(n) => {
                    next.remove(n);
                }
                ConfigOp::Append(n, v) | ConfigOp::Subtract(n, v) => {
                    if def.config_type != crate::config::ConfigType::List {
                        return Err(ControllerError::InvalidConfig(format!(
                            "Config value append/subtract is not allowed for config key {n} which is not a list"
                        )));
                    }
                    let base = next
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| def.default.to_string());
                    let mut items: Vec<String> = base
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if matches!(op, ConfigOp::Append(..)) {
                            if !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            }
                        } else {
                            items.retain(|i| i != item);
                        }
                    }
                    next.insert(n.clone(), items.join(","));
                }
            }
        }
        for (name, value) in &next {
            if current.get(name) == Some(value) {
                continue;
            }
            let checked = match resource {
                ConfigResource::Topic(_) => topic_config(name).map(|d| d.validate(value)),
                ConfigResource::Broker(_) => broker_config(name).map(|k| {
                    let converted = crate::config::broker_value_for_topic(name, value)
                        .unwrap_or_else(|| value.clone());
                    k.def().validate(&converted)
                }),
            };
            if let Some(Err(e)) = checked {
                return Err(ControllerError::InvalidConfig(e.0));
            }
        }
        if let ConfigResource::Topic(_) = resource {
            check_topic_config_set(&next).map_err(|e| ControllerError::InvalidConfig(e.0))?;
            // Kafka refuses this too (without remote.log.delete.on.disable, which Strata does
            // not have): the tier's data would stay, unreachable and never deleted.
            let enabled = |c: &BTreeMap<String, String>| {
                c.get("remote.storage.enable")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            };
            if enabled(&current) && !enabled(&next) {
                return Err(ControllerError::InvalidConfig(
                    "It is invalid to disable remote storage without deleting remote data: delete and re-create the topic instead".into(),
                ));
            }
        }
        let mut records = Vec::new();
        for (name, value) in &next {
            if current.get(name) != Some(value) {
                records.push(MetadataRecord::Config {
                    resource: resource.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        for name in current.keys().filter(|n| !next.contains_key(*n)) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                name: name.clone(),
                value: None,
            });
        }
        Ok(records)
    }

    /// Reserves the next block of `block_size` producer ids; returns its first id.
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        block_size: i64,
    ) -> (i64, Vec<MetadataRecord>) {
        assert!(block_size > 0);
        let start = image.next_producer_id_block;
        (
            start,
            vec![MetadataRecord::ProducerIds {
                next_block_start: start + block_size,
            }],
        )
    }
}

/// Kafka's `validateManualPartitionAssignment` for a reassignment target: non-empty, every
/// broker registered (fenced or not: it may be down for a moment), none twice.
fn validate_reassignment_target(
    image: &MetadataImage,
    replicas: &[i32],
) -> Result<(), ControllerError> {
    let bad = |m: String| Err(ControllerError::InvalidReplicaAssignment(m));
    if replicas.is_empty() {
        return bad("The manual partition assignment includes an empty replica list.".into());
    }
    let mut seen = BTreeSet::new();
    for &broker in replicas {
        if image.broker(broker).is_none() {
            return bad(format!("The manual partition assignment includes broker {broker}, but no such broker is registered."));
        }
        if !seen.insert(broker) {
            return bad(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            ));
        }
    }
    Ok(())
}

/// Live brokers ordered so that consecutive ones are in different racks where possible
/// (Kafka's `getRackAlternatedBrokerList`): racks in name order, brokers without a rack as
/// one more rack, then one broker of each rack in turn.
fn rack_alternated(image: &MetadataImage) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in image.brokers().filter(|b| !b.fenced) {
        by_rack
            .entry(b.rack.as_deref())
            .or_default()
            .push(b.broker_id);
    }
    let total: usize = by_rack.values().map(Vec::len).sum();
    let mut order = Vec::with_capacity(total);
    for round in 0.. {
        if order.len() == total {
            break;
        }
        order.extend(by_rack.values().filter_map(|ids| ids.get(round).copied()));
    }
    order
}

/// Partition records for every partition that `change` changes.
fn partition_changes(
    image: &MetadataImage,
    change: impl Fn(
        &str,
        &crate::partition_change::PartitionRegistration,
    ) -> Option<crate::partition_change::PartitionRegistration>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for p in &topic.partitions {
            if let Some(next) = change(&topic.name, &p.registration()) {
                records.push(partition_record(topic.topic_id, p.partition, &next));
            }
        }
    }
    records
}

fn partition_record(
    topic_id: Uuid,
    partition: i32,
    next: &PartitionRegistration,
) -> MetadataRecord {
    debug_assert_eq!(next.check(), Ok(()));
    MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: next.replicas.clone(),
        leader: next.leader,
        leader_epoch: next.leader_epoch,
        isr: next.isr.clone(),
        partition_epoch: next.partition_epoch,
        adding_replicas: next.adding_replicas.clone(),
        removing_replicas: next.removing_replicas.clone(),
    }
}

fn partition_records(
    topic_id: Uuid,
    first_partition: i32,
    assignments: &[Vec<i32>],
) -> impl Iterator<Item = MetadataRecord> + '_ {
    assignments
        .iter()
        .enumerate()
        .map(move |(i, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: first_partition + i as i32,
            replicas: replicas.clone(),
            leader: replicas[0],
            leader_epoch: 0,
            isr: replicas.clone(),
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, partitions: i32) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: -1,
            ..Default::default()
        }
    }

    /// An image with brokers `ids` registered and unfenced, racks "r<id % 2>".
    fn cluster(ids: &[i32]) -> MetadataImage {
        let controller = Controller::new(1);
        let mut image = MetadataImage::default();
        for &broker_id in ids {
            let request = BrokerRegistrationRequest {
                broker_id,
                incarnation_id: Uuid::new_v4(),
                host: "localhost".into(),
                port: 9092 + broker_id,
                rack: Some(format!("r{}", broker_id % 2)),
                supported_features: crate::features::supported(),
            };
            let (epoch, records) =
                controller.register_broker(&image, &request, NO_UNCLEAN_ELECTION);
            image = image.apply(&records);
            image = image.apply(&controller.unfence_broker(
                &image,
                broker_id,
                epoch,
                NO_UNCLEAN_ELECTION,
            ));
        }
        image
    }

    fn single() -> MetadataImage {
        cluster(&[1])
    }

    fn create(
        image: &MetadataImage,
        s: &CreateTopicSpec,
    ) -> Result<MetadataImage, ControllerError> {
        let (_, records) = Controller::new(1).create_topic(image, s, (1, 1))?;
        Ok(image.apply(&records))
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "A.b_c-9", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn create_validates_and_applies() {
        let image = single();
        let image = create(&image, &spec("a.b", 3)).unwrap();
        let topic = image.topic("a.b").unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(image.topic_by_id(&topic.topic_id).unwrap().name, "a.b");
        assert!(matches!(
            create(&image, &spec("a.b", 1)),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            create(&image, &spec("a_b", 1)),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert!(matches!(
            create(&image, &spec("c", 0)),
            Err(ControllerError::InvalidPartitions(_))
        ));
        let mut rf3 = spec("d", 1);
        rf3.replication_factor = 3;
        assert!(matches!(
            create(&image, &rf3),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        let mut bad_config = spec("e", 1);
        bad_config.configs = vec![("retention.ms".into(), Some("soon".into()))];
        assert!(matches!(
            create(&image, &bad_config),
            Err(ControllerError::InvalidConfig(_))
        ));
        let mut manual = spec("f", -1);
        manual.assignments = vec![(0, vec![1]), (1, vec![1])];
        assert_eq!(
            create(&image, &manual)
                .unwrap()
                .topic("f")
                .unwrap()
                .partitions
                .len(),
            2
        );
        manual.assignments = vec![(0, vec![2])];
        assert!(matches!(
            create(&image, &manual),
            Err(ControllerError::InvalidReplicaAssignment(_))
        ));
    }

    #[test]
    fn tiered_config_rules_and_deleted_topics_are_remembered() {
        let image = single();
        let mut compact_remote = spec("t", 1);
        compact_remote.configs = vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("remote.storage.enable".into(), Some("true".into())),
        ];
        assert!(matches!(
            create(&image, &compact_remote),
            Err(ControllerError::InvalidConfig(_))
        ));
        let mut local_over_total = spec("t", 1);
        local_over_total.configs = vec![
            ("retention.ms".into(), Some("1000".into())),
            ("local.retention.ms".into(), Some("2000".into())),
        ];
        assert!(matches!(
            create(&image, &local_over_total),
            Err(ControllerError::InvalidConfig(_))
        ));
        local_over_total.configs[1].1 = Some("500".into());
        local_over_total
            .configs
            .push(("remote.storage.enable".into(), Some("true".into())));
        let image = create(&image, &local_over_total).unwrap();
        let id = image.topic("t").unwrap().topic_id;
        // A tiered topic stays tiered: turning it off, by value or by deleting the key, and
        // switching it to compaction are refused.
        let topic = ConfigResource::Topic("t".into());
        for ops in [
            vec![ConfigOp::Set(
                "remote.storage.enable".into(),
                "false".into(),
            )],
            vec![ConfigOp::Delete("remote.storage.enable".into())],
            vec![ConfigOp::Set("cleanup.policy".into(), "compact".into())],
        ] {
            assert!(matches!(
                Controller::new(1).alter_configs(&image, &topic, &ops, false),
                Err(ControllerError::InvalidConfig(_))
            ));
        }
        assert!(!image.was_deleted(&id));
        let records = Controller::new(1).delete_topic(&image, id).unwrap();
        let image = image.apply(&records);
        assert!(image.topic_by_id(&id).is_none());
        assert!(image.was_deleted(&id));
        assert_eq!(image.deleted_topic_count(), 1);
    }

    #[test]
    fn partition_records_carry_the_isr_and_old_ones_still_load() {
        let image = create(&single(), &spec("t", 2)).unwrap();
        let p = &image.topic("t").unwrap().partitions[1];
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1], 0));
        assert_eq!(p.registration().check(), Ok(()));
        // A record written before ISRs were tracked: the ISR is every replica.
        let id = image.topic("t").unwrap().topic_id;
        let old = format!(
            r#"{{"type":"Partition","topic_id":"{id}","partition":1,"replicas":[1],"leader":1,"leader_epoch":3}}"#
        );
        let record: MetadataRecord = serde_json::from_str(&old).unwrap();
        let image = image.apply(&[record]);
        let p = &image.topic("t").unwrap().partitions[1];
        assert_eq!(
            (p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (vec![1], 3, 0)
        );
    }

    #[test]
    fn partitions_grow_only() {
        let controller = Controller::new(1);
        let image = create(&single(), &spec("t", 2)).unwrap();
        assert!(controller.create_partitions(&image, "t", 1, None).is_err());
        assert!(controller.create_partitions(&image, "t", 2, None).is_err());
        let records = controller.create_partitions(&image, "t", 4, None).unwrap();
        assert_eq!(
            image.apply(&records).topic("t").unwrap().partitions.len(),
            4
        );
        assert_eq!(
            controller.create_partitions(&image, "nope", 4, None),
            Err(ControllerError::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn config_changes_are_validated_together() {
        let controller = Controller::new(1);
        let image = create(&single(), &spec("t", 1)).unwrap();
        let topic = ConfigResource::Topic("t".into());
        let ops = [
            ConfigOp::Set("retention.ms".into(), "1000".into()),
            ConfigOp::Append("cleanup.policy".into(), "compact".into()),
        ];
        let image = image.apply(
            &controller
                .alter_configs(&image, &topic, &ops, false)
                .unwrap(),
        );
        assert_eq!(image.config(&topic, "retention.ms"), Some("1000"));
        assert_eq!(
            image.config(&topic, "cleanup.policy"),
            Some("delete,compact")
        );
        let bad = [
            ConfigOp::Set("retention.ms".into(), "5".into()),
            ConfigOp::Set("segment.bytes".into(), "x".into()),
        ];
        assert!(controller
            .alter_configs(&image, &topic, &bad, false)
            .is_err());
        let delete = [ConfigOp::Delete("retention.ms".into())];
        let image = image.apply(
            &controller
                .alter_configs(&image, &topic, &delete, false)
                .unwrap(),
        );
        assert_eq!(image.config(&topic, "retention.ms"), None);
        let unknown = [ConfigOp::Set("nope".into(), "1".into())];
        assert!(controller
            .alter_configs(&image, &topic, &unknown, false)
            .is_err());
    }

    #[test]
    fn replicas_spread_over_live_brokers_and_racks() {
        let image = cluster(&[1, 2, 3, 4]);
        let (_, records) = Controller::new(1)
            .create_topic(&image, &spec("t", 8), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        let leaders: Vec<i32> = image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        for b in 1..=4 {
            assert_eq!(
                leaders.iter().filter(|l| **l == b).count(),
                2,
                "{leaders:?}"
            );
        }
        // Consecutive brokers of the placement order alternate racks.
        let order = rack_alternated(&image);
        assert!(order.windows(2).all(|w| w[0] % 2 != w[1] % 2), "{order:?}");
        // A fenced broker takes no new replicas.
        let epoch = image.broker(2).unwrap().broker_epoch;
        let image =
            image.apply(&Controller::new(1).fence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION));
        let (_, records) = Controller::new(1)
            .create_topic(&image, &spec("u", 6), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        assert!(image
            .topic("u")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.replicas != vec![2]));
    }

    #[test]
    fn replicas_span_racks_and_the_leader_alters_the_isr() {
        let controller = Controller::new(1);
        let image = cluster(&[1, 2, 3, 4]);
        let mut s = spec("t", 4);
        s.replication_factor = 3;
        let (_, records) = controller.create_topic(&image, &s, (1, 1)).unwrap();
        let image = image.apply(&records);
        let topic = image.topic("t").unwrap().clone();
        for p in &topic.partitions {
            let racks: BTreeSet<i32> = p.replicas.iter().map(|r| r % 2).collect();
            assert_eq!((p.replicas.len(), racks.len()), (3, 2), "{:?}", p.replicas);
            assert_eq!(p.isr, p.replicas);
        }
        let p0 = &topic.partitions[0];
        let (leader, follower) = (p0.leader, p0.replicas[1]);
        let epoch = image.broker(leader).unwrap().broker_epoch;
        let shrunk: Vec<i32> = p0.isr.iter().copied().filter(|r| *r != follower).collect();
        let alter =
            |image: &MetadataImage, sender: i32, sender_epoch: i64, partition_epoch: i32| {
                controller.alter_partition(
                    image,
                    sender,
                    sender_epoch,
                    topic.topic_id,
                    0,
                    p0.leader_epoch,
                    partition_epoch,
                    &shrunk,
                )
            };
        assert_eq!(
            alter(
                &image,
                follower,
                image.broker(follower).unwrap().broker_epoch,
                0
            )
            .unwrap_err()
            .kafka_error_code(),
            6,
            "only the leader"
        );
        assert_eq!(
            alter(&image, leader, epoch - 1, 0)
                .unwrap_err()
                .kafka_error_code(),
            77
        );
        let (next, records) = alter(&image, leader, epoch, 0).unwrap();
        let image = image.apply(&records);
        let now = &image.topic("t").unwrap().partitions[0];
        assert_eq!((now.isr.clone(), now.partition_epoch), (next.isr, 1));
        assert_eq!(
            now.leader_epoch, p0.leader_epoch,
            "an ISR change keeps the leader epoch"
        );
        // A retry of the committed change on the old partition epoch is stale.
        assert_eq!(
            alter(&image, leader, epoch, 0)
                .unwrap_err()
                .kafka_error_code(),
            108
        );
    }

    #[test]
    fn fencing_takes_leadership_away_and_unfencing_gives_it_back() {
        let controller = Controller::new(1);
        let image = cluster(&[1, 2]);
        let (_, records) = controller
            .create_topic(&image, &spec("t", 2), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        let on = |image: &MetadataImage, b: i32| -> Vec<crate::PartitionImage> {
            image
                .topic("t")
                .unwrap()
                .partitions
                .iter()
                .filter(|p| p.replicas == vec![b])
                .cloned()
                .collect()
        };
        let before = on(&image, 2);
        assert_eq!(before.len(), 1);
        let epoch = image.broker(2).unwrap().broker_epoch;
        // A stale epoch changes nothing.
        assert!(controller
            .fence_broker(&image, 2, epoch - 1, NO_UNCLEAN_ELECTION)
            .is_empty());
        let image = image.apply(&controller.fence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION));
        assert!(image.broker(2).unwrap().fenced);
        let fenced = on(&image, 2);
        assert_eq!(fenced[0].leader, crate::partition_change::NO_LEADER);
        assert_eq!(fenced[0].isr, vec![2], "the last ISR member stays");
        assert!(fenced[0].leader_epoch > before[0].leader_epoch);
        assert!(controller
            .fence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION)
            .is_empty());
        let image = image.apply(&controller.unfence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION));
        let back = on(&image, 2);
        assert_eq!(back[0].leader, 2);
        assert!(back[0].leader_epoch > fenced[0].leader_epoch);
        assert_eq!(image.live_brokers(), BTreeSet::from([1, 2]));
    }

    #[test]
    fn a_new_incarnation_is_fenced_and_a_retry_is_not() {
        let controller = Controller::new(1);
        let image = cluster(&[1, 2]);
        let (_, records) = controller
            .create_topic(&image, &spec("t", 2), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        let old = image.broker(2).unwrap().clone();
        let retry = BrokerRegistrationRequest {
            broker_id: 2,
            incarnation_id: old.incarnation_id,
            host: old.host.clone(),
            port: old.port,
            rack: old.rack.clone(),
            supported_features: old.supported_features.clone(),
        };
        assert_eq!(
            controller.register_broker(&image, &retry, NO_UNCLEAN_ELECTION),
            (old.broker_epoch, vec![])
        );
        let restarted = BrokerRegistrationRequest {
            incarnation_id: Uuid::new_v4(),
            ..retry
        };
        let (epoch, records) = controller.register_broker(&image, &restarted, NO_UNCLEAN_ELECTION);
        assert!(epoch > old.broker_epoch);
        let image = image.apply(&records);
        let b = image.broker(2).unwrap();
        assert!(b.fenced && b.broker_epoch == epoch);
        let led_by_2 = image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .filter(|p| p.leader == 2)
            .count();
        assert_eq!(led_by_2, 0);
        // The image survives a snapshot round trip.
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, image);
    }

    /// A cluster of brokers 1..=3 with topic "t" (replication factor 3, `partitions`
    /// partitions, placed by the controller).
    fn replicated(partitions: i32) -> MetadataImage {
        let image = cluster(&[1, 2, 3]);
        let mut s = spec("t", partitions);
        s.replication_factor = 3;
        let (_, records) = Controller::new(1).create_topic(&image, &s, (1, 1)).unwrap();
        image.apply(&records)
    }

    fn partition(image: &MetadataImage, p: usize) -> crate::PartitionImage {
        image.topic("t").unwrap().partitions[p].clone()
    }

    fn fence(image: &MetadataImage, b: i32) -> MetadataImage {
        let epoch = image.broker(b).unwrap().broker_epoch;
        image.apply(&Controller::new(1).fence_broker(image, b, epoch, NO_UNCLEAN_ELECTION))
    }

    fn unfence(image: &MetadataImage, b: i32) -> MetadataImage {
        let epoch = image.broker(b).unwrap().broker_epoch;
        image.apply(&Controller::new(1).unfence_broker(image, b, epoch, NO_UNCLEAN_ELECTION))
    }

    /// The leader of partition `p` takes `b` back into the ISR (AlterPartition).
    fn rejoin_isr(image: &MetadataImage, p: usize, b: i32) -> MetadataImage {
        let part = partition(image, p);
        let mut isr = part.isr.clone();
        isr.push(b);
        let leader_epoch = image.broker(part.leader).unwrap().broker_epoch;
        let (_, records) = Controller::new(1)
            .alter_partition(
                image,
                part.leader,
                leader_epoch,
                image.topic("t").unwrap().topic_id,
                p as i32,
                part.leader_epoch,
                part.partition_epoch,
                &isr,
            )
            .unwrap();
        image.apply(&records)
    }

    fn codes(results: &[TopicElection]) -> Vec<(String, i32, i16)> {
        results
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|(p, r)| {
                    let code = r.as_ref().err().map_or(0, ElectionError::kafka_error_code);
                    (t.topic.clone(), *p, code)
                })
            })
            .collect()
    }

    #[test]
    fn preferred_election_moves_leadership_back_once_the_replica_is_in_sync() {
        let controller = Controller::new(1);
        let image = replicated(1);
        let preferred = partition(&image, 0).replicas[0];
        let targets = [("t".to_string(), vec![0])];
        let elect = |image: &MetadataImage| {
            controller.elect_leaders(image, ElectionType::Preferred, Some(&targets))
        };
        assert_eq!(codes(&elect(&image).0), [("t".into(), 0, 84)]);
        // Fenced: leadership moves away and the preferred replica cannot take it back.
        let image = fence(&image, preferred);
        assert_ne!(partition(&image, 0).leader, preferred);
        assert_eq!(codes(&elect(&image).0), [("t".into(), 0, 80)]);
        // Back, but not in the ISR yet.
        let image = unfence(&image, preferred);
        assert_eq!(codes(&elect(&image).0), [("t".into(), 0, 80)]);
        let image = rejoin_isr(&image, 0, preferred);
        let before = partition(&image, 0);
        let (results, records) = elect(&image);
        assert_eq!(codes(&results), [("t".into(), 0, 0)]);
        let image = image.apply(&records);
        let after = partition(&image, 0);
        assert_eq!(after.leader, preferred);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.isr, before.isr, "the ISR stays");
        assert_eq!(codes(&elect(&image).0), [("t".into(), 0, 84)]);
    }

    #[test]
    fn elect_leaders_reports_unknown_partitions_and_duplicates_once() {
        let controller = Controller::new(1);
        let image = replicated(2);
        let preferred = partition(&image, 0).replicas[0];
        let image = fence(&image, preferred);
        let image = unfence(&image, preferred);
        let image = rejoin_isr(&image, 0, preferred);
        let targets = [
            ("t".to_string(), vec![0, 0, 7, -1]),
            ("nope".to_string(), vec![0]),
        ];
        let (results, records) =
            controller.elect_leaders(&image, ElectionType::Preferred, Some(&targets));
        assert_eq!(
            codes(&results),
            [
                ("t".into(), 0, 0),
                ("t".into(), 0, 0),
                ("t".into(), 7, 3),
                ("t".into(), -1, 3),
                ("nope".into(), 0, 3)
            ]
        );
        assert_eq!(records.len(), 1, "one election for a partition named twice");
    }

    #[test]
    fn electing_every_partition_leaves_out_the_ones_that_need_none() {
        let controller = Controller::new(1);
        let image = replicated(6);
        let (results, records) = controller.elect_leaders(&image, ElectionType::Preferred, None);
        assert_eq!(results.len(), 1);
        assert!(results[0].partitions.is_empty() && records.is_empty());
        let image = fence(&image, 2);
        let image = unfence(&image, 2);
        let moved: Vec<i32> = (0..6)
            .filter(|p| partition(&image, *p).replicas[0] == 2)
            .map(|p| p as i32)
            .collect();
        assert_eq!(moved.len(), 2, "6 partitions over 3 brokers");
        // Out of sync: every partition preferring 2 reports PREFERRED_LEADER_NOT_AVAILABLE.
        let (results, _) = controller.elect_leaders(&image, ElectionType::Preferred, None);
        let want: Vec<(String, i32, i16)> = moved.iter().map(|p| ("t".into(), *p, 80)).collect();
        assert_eq!(codes(&results), want);
        let mut image = image;
        for p in &moved {
            image = rejoin_isr(&image, *p as usize, 2);
        }
        let (results, records) = controller.elect_leaders(&image, ElectionType::Preferred, None);
        let want: Vec<(String, i32, i16)> = moved.iter().map(|p| ("t".into(), *p, 0)).collect();
        assert_eq!(codes(&results), want);
        let image = image.apply(&records);
        assert!((0..6).all(|p| partition(&image, p).leader == partition(&image, p).replicas[0]));
    }

    #[test]
    fn unclean_election_only_for_partitions_without_a_leader() {
        let controller = Controller::new(1);
        let image = replicated(1);
        let targets = [("t".to_string(), vec![0])];
        let elect = |image: &MetadataImage, election| {
            controller.elect_leaders(image, election, Some(&targets))
        };
        assert_eq!(
            codes(&elect(&image, ElectionType::Unclean).0),
            [("t".into(), 0, 84)]
        );
        // Fence every replica: the last ISR member stays, the partition has no leader.
        let replicas = partition(&image, 0).replicas.clone();
        let mut image = image;
        for b in &replicas {
            image = fence(&image, *b);
        }
        let p = partition(&image, 0);
        assert_eq!(p.leader, NO_LEADER);
        let last_in_sync = p.isr[0];
        assert_eq!(
            codes(&elect(&image, ElectionType::Unclean).0),
            [("t".into(), 0, 83)],
            "no live replica"
        );
        // Another replica comes back: a clean election cannot use it, an unclean one can.
        let other = *replicas.iter().find(|b| **b != last_in_sync).unwrap();
        let image = unfence(&image, other);
        assert_eq!(partition(&image, 0).leader, NO_LEADER);
        let (results, records) = elect(&image, ElectionType::Unclean);
        assert_eq!(codes(&results), [("t".into(), 0, 0)]);
        let image = image.apply(&records);
        let p = partition(&image, 0);
        assert_eq!((p.leader, p.isr.clone()), (other, vec![other]));
        assert_eq!(p.registration().check(), Ok(()));
        assert_eq!(
            ElectionType::from_code(1),
            Some(ElectionType::Unclean),
            "Kafka's codes"
        );
        assert_eq!(ElectionType::from_code(2), None);
    }

    #[test]
    fn unclean_election_is_decided_per_topic() {
        // Topics "t" and "u", one partition each on 1, 2, 3. Fence every replica, then bring
        // back one that was not the last in sync: only the topic that allows an unclean
        // election gets a leader.
        let mut image = replicated(1);
        let mut s = spec("u", 1);
        s.replication_factor = 3;
        let (_, records) = Controller::new(1).create_topic(&image, &s, (1, 1)).unwrap();
        image = image.apply(&records);
        for b in [1, 2, 3] {
            image = fence(&image, b);
        }
        let last_in_sync =
            |image: &MetadataImage, topic: &str| image.topic(topic).unwrap().partitions[0].isr[0];
        assert_eq!(last_in_sync(&image, "t"), last_in_sync(&image, "u"));
        let other = [1, 2, 3]
            .into_iter()
            .find(|b| *b != last_in_sync(&image, "t"))
            .unwrap();
        let epoch = image.broker(other).unwrap().broker_epoch;
        let only_u: UncleanElection = &|topic| topic == "u";
        let image = image.apply(&Controller::new(1).unfence_broker(&image, other, epoch, only_u));
        let leader = |topic: &str| image.topic(topic).unwrap().partitions[0].leader;
        assert_eq!(
            leader("t"),
            NO_LEADER,
            "clean: waits for its last ISR member"
        );
        assert_eq!(leader("u"), other, "unclean: takes the live replica");
    }

    #[test]
    fn preferred_election_of_a_leaderless_partition_takes_a_live_isr_member() {
        let controller = Controller::new(1);
        let image = replicated(1);
        let p = partition(&image, 0);
        let (preferred, other) = (p.replicas[0], p.replicas[1]);
        let image = fence(&image, preferred);
        // A leaderless partition whose preferred replica is fenced but another ISR member is
        // live (the controller itself never leaves one so; an image can hold it).
        let p = partition(&image, 0);
        let image = image.apply(&[MetadataRecord::Partition {
            topic_id: image.topic("t").unwrap().topic_id,
            partition: 0,
            replicas: p.replicas.clone(),
            leader: NO_LEADER,
            leader_epoch: p.leader_epoch + 1,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch + 1,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }]);
        let targets = [("t".to_string(), vec![0])];
        let (results, records) =
            controller.elect_leaders(&image, ElectionType::Preferred, Some(&targets));
        assert_eq!(codes(&results), [("t".into(), 0, 0)]);
        let after = partition(&image.apply(&records), 0);
        assert_eq!(after.leader, other, "the first live ISR member");
        // The automatic balance moves leadership to preferred replicas only.
        assert!(controller.balance_leaders(&image, 0).is_empty());
    }

    #[test]
    fn automatic_balance_follows_the_per_broker_imbalance_percentage() {
        let controller = Controller::new(1);
        // 30 partitions over 3 brokers: each broker is preferred for 10.
        let image = replicated(30);
        assert!(controller.balance_leaders(&image, 0).is_empty(), "balanced");
        let image = unfence(&fence(&image, 1), 1);
        let preferring_1: Vec<usize> = (0..30)
            .filter(|p| partition(&image, *p).replicas[0] == 1)
            .collect();
        assert_eq!(preferring_1.len(), 10);
        assert!(preferring_1
            .iter()
            .all(|p| partition(&image, *p).leader != 1));
        // Not in sync yet: nothing to do, however imbalanced.
        assert!(controller.balance_leaders(&image, 0).is_empty());
        // One of the ten back in sync: 100% imbalance, the one partition that can move does.
        let mut image = rejoin_isr(&image, preferring_1[0], 1);
        let records = controller.balance_leaders(&image, 10);
        assert_eq!(records.len(), 1);
        image = image.apply(&records);
        assert_eq!(partition(&image, preferring_1[0]).leader, 1);
        // All in sync, 9 of 10 not led by 1.
        for p in &preferring_1[1..] {
            image = rejoin_isr(&image, *p, 1);
        }
        assert_eq!(controller.balance_leaders(&image, 89).len(), 9);
        assert!(
            controller.balance_leaders(&image, 90).is_empty(),
            "90% is not above 90%"
        );
        // Move 8 back by hand: 1 of 10 (10%) left, which the default 10% tolerates.
        let targets = [(
            "t".to_string(),
            preferring_1[1..9].iter().map(|p| *p as i32).collect(),
        )];
        let (_, records) =
            controller.elect_leaders(&image, ElectionType::Preferred, Some(&targets));
        image = image.apply(&records);
        assert!(controller.balance_leaders(&image, 10).is_empty());
        let records = controller.balance_leaders(&image, 9);
        assert_eq!(records.len(), 1);
        image = image.apply(&records);
        assert!((0..30).all(|p| partition(&image, p).leader == partition(&image, p).replicas[0]));
        assert!(controller.balance_leaders(&image, 0).is_empty());
    }

    /// Error codes of one AlterPartitionReassignments call on topic "t" (0 = accepted),
    /// and the image after its records.
    fn reassign(
        image: &MetadataImage,
        targets: &[(i32, Option<Vec<i32>>)],
        allow_replication_factor_change: bool,
    ) -> (Vec<i16>, MetadataImage) {
        let request = [(
            "t".to_string(),
            targets
                .iter()
                .map(|(partition, replicas)| ReassignmentTarget {
                    partition: *partition,
                    replicas: replicas.clone(),
                })
                .collect(),
        )];
        let (outcomes, records) = Controller::new(1).alter_partition_reassignments(
            image,
            &request,
            allow_replication_factor_change,
            NO_UNCLEAN_ELECTION,
        );
        let codes = outcomes[0]
            .iter()
            .map(|r| {
                r.as_ref().err().map_or(0, |e| match e {
                    ControllerError::UnknownTopicOrPartition => 3,
                    ControllerError::InvalidReplicationFactor(_) => 38,
                    ControllerError::InvalidReplicaAssignment(_) => 39,
                    ControllerError::NoReassignmentInProgress(_) => 85,
                    other => panic!("unexpected {other:?}"),
                })
            })
            .collect();
        (codes, image.apply(&records))
    }

    /// Brokers 1..=4, topic "t" with one partition on [1, 2] led by 1.
    fn on_one_and_two() -> MetadataImage {
        let image = cluster(&[1, 2, 3, 4]);
        let s = CreateTopicSpec {
            name: "t".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, vec![1, 2])],
            configs: Vec::new(),
        };
        let (_, records) = Controller::new(1).create_topic(&image, &s, (1, 1)).unwrap();
        image.apply(&records)
    }

    #[test]
    fn reassignment_requests_are_validated_with_kafkas_errors() {
        let image = on_one_and_two();
        let (codes, after) = reassign(
            &image,
            &[
                (7, Some(vec![1, 2])),
                (-1, Some(vec![1, 2])),
                (0, Some(vec![])),
                (0, Some(vec![2, 3, 2])),
                (0, Some(vec![2, 9])),
                (0, Some(vec![2, -1])),
                (0, None),
            ],
            true,
        );
        assert_eq!(codes, vec![3, 3, 39, 39, 39, 39, 85]);
        assert_eq!(after.topic("t"), image.topic("t"), "nothing changed");
        let (codes, _) = reassign(&image, &[(0, Some(vec![2, 3, 4]))], false);
        assert_eq!(codes, vec![38], "v1 without a replication factor change");
        let (codes, _) = reassign(&image, &[(0, Some(vec![3, 4]))], false);
        assert_eq!(codes, vec![0]);
        let request = [(
            "nope".to_string(),
            vec![ReassignmentTarget {
                partition: 0,
                replicas: None,
            }],
        )];
        let (outcomes, records) = Controller::new(1).alter_partition_reassignments(
            &image,
            &request,
            true,
            NO_UNCLEAN_ELECTION,
        );
        assert_eq!(
            outcomes[0],
            vec![Err(ControllerError::UnknownTopicOrPartition)]
        );
        assert!(records.is_empty());
        // A fenced broker is registered: it may be a target (it catches up once back).
        let fenced = fence(&image, 3);
        let (codes, after) = reassign(&fenced, &[(0, Some(vec![2, 3]))], true);
        assert_eq!(codes, vec![0]);
        assert_eq!(partition(&after, 0).adding_replicas, vec![3]);
    }

    #[test]
    fn a_move_completes_through_alter_partition_and_survives_a_snapshot() {
        let controller = Controller::new(1);
        let image = on_one_and_two();
        let (codes, image) = reassign(&image, &[(0, Some(vec![2, 3]))], true);
        assert_eq!(codes, vec![0]);
        let p = partition(&image, 0);
        assert_eq!(p.replicas, vec![2, 3, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![3], vec![1])
        );
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 0, vec![2, 1])
        );
        assert_eq!(p.partition_epoch, 1);
        assert_eq!(p.registration().check(), Ok(()));
        let listed = controller.list_partition_reassignments(&image, None);
        assert_eq!(
            listed,
            vec![(
                "t".to_string(),
                vec![OngoingReassignment {
                    partition: 0,
                    replicas: vec![2, 3, 1],
                    adding_replicas: vec![3],
                    removing_replicas: vec![1],
                }]
            )]
        );
        let named = [("t".to_string(), vec![0, 5]), ("nope".to_string(), vec![0])];
        assert_eq!(
            controller.list_partition_reassignments(&image, Some(&named)),
            listed
        );

        // The in-progress fields survive a snapshot round trip, and a snapshot written before
        // they existed still loads (as no reassignment).
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, image);
        let old = json
            .replace(r#","adding_replicas":[3]"#, "")
            .replace(r#","removing_replicas":[1]"#, "");
        assert_ne!(old, json);
        let old: MetadataImage = serde_json::from_str(&old).unwrap();
        assert!(partition(&old, 0).adding_replicas.is_empty());
        assert!(controller
            .list_partition_reassignments(&old, None)
            .is_empty());

        // The leader takes 3 into the ISR: the move completes in the same change, 1 (the
        // leader) is dropped and 2 leads in a new epoch.
        let image = rejoin_isr(&image, 0, 3);
        let p = partition(&image, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![2, 3], vec![2, 3])
        );
        assert!(p.adding_replicas.is_empty() && p.removing_replicas.is_empty());
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert!(controller
            .list_partition_reassignments(&image, None)
            .is_empty());
        let (codes, _) = reassign(&image, &[(0, None)], true);
        assert_eq!(codes, vec![85], "nothing left to cancel");
    }

    #[test]
    fn cancel_and_replace_through_the_controller() {
        let image = on_one_and_two();
        let (_, moving) = reassign(&image, &[(0, Some(vec![3, 4]))], true);
        assert_eq!(partition(&moving, 0).replicas, vec![3, 4, 1, 2]);
        // New partitions take the replication factor of the move's target, not of the
        // grown set.
        let grown = Controller::new(1)
            .create_partitions(&moving, "t", 2, None)
            .unwrap();
        assert!(
            matches!(&grown[..], [MetadataRecord::Partition { replicas, .. }] if replicas.len() == 2)
        );
        // Replaced: 4 (being added) is now removed, 1 and 2 too until completion.
        let (codes, replaced) = reassign(&moving, &[(0, Some(vec![3]))], true);
        assert_eq!(codes, vec![0]);
        let p = partition(&replaced, 0);
        assert_eq!(p.replicas, vec![3, 1, 2, 4]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![3], vec![1, 2, 4])
        );
        // Cancelled: back to the replicas before, the leader and ISR as they were.
        let (codes, reverted) = reassign(&replaced, &[(0, None)], true);
        assert_eq!(codes, vec![0]);
        let p = partition(&reverted, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1, 2, 4], vec![1, 2], 1)
        );
        // Kafka's revert keeps a replica the replaced reassignment was adding (4 is no longer
        // "adding" after the replacement). One request may change a partition twice, in order.
        let (codes, twice) = reassign(&image, &[(0, Some(vec![3, 4])), (0, None)], true);
        assert_eq!(codes, vec![0, 0]);
        let p = partition(&twice, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert_eq!(p.partition_epoch, 2);
    }
}
