//! Partitions (the partition half of Kafka's `ReplicationControlManager`): leader elections
//! (when a broker is fenced or unfenced, ElectLeaders (KIP-460) and the automatic
//! preferred-leader balance), AlterPartition (ISR changes, KIP-497) and reassignments
//! (KIP-455).
//!
//! The rules for one partition are the pure functions of [`crate::partition_change`]; this
//! module applies them across the image and turns each change into a `Partition` record.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::brokers::BrokerControl;
use super::ControllerError;
use crate::image::MetadataImage;
use crate::partition_change::{
    AlterPartitionError, PartitionRegistration, ReassignmentError, NO_LEADER,
};
use crate::records::MetadataRecord;

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

/// Whether a topic's partitions may take a leader from outside their ISR
/// (`unclean.leader.election.enable`), resolved per topic by the caller: a topic override,
/// else the broker's setting.
pub type UncleanElection<'a> = &'a dyn Fn(&str) -> bool;

/// An [`UncleanElection`] that never allows it (Kafka's default).
pub const NO_UNCLEAN_ELECTION: UncleanElection<'static> = &|_| false;

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

/// Leader elections, ISR changes and reassignments as records.
#[derive(Debug, Default)]
pub struct PartitionControl;

impl PartitionControl {
    /// The partition changes of fencing `broker_id` (Kafka's `handleBrokerFenced`):
    /// partitions it led get new leaders from their ISRs, and it leaves the ISRs it was in.
    pub fn handle_broker_fenced(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        unclean: UncleanElection,
    ) -> Vec<MetadataRecord> {
        let mut live = image.live_brokers();
        live.remove(&broker_id);
        partition_changes(image, |topic, p| {
            p.on_broker_fenced(broker_id, &live, unclean(topic))
        })
    }

    /// The partition changes of unfencing `broker_id` (Kafka's `handleBrokerUnfenced`):
    /// partitions without a leader that it can lead get it back.
    pub fn handle_broker_unfenced(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        unclean: UncleanElection,
    ) -> Vec<MetadataRecord> {
        let mut live = image.live_brokers();
        live.insert(broker_id);
        partition_changes(image, |topic, p| {
            if p.replicas.contains(&broker_id) {
                p.on_broker_unfenced(&live, unclean(topic))
            } else {
                None
            }
        })
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
        if !BrokerControl::is_unfenced_in_epoch(image, broker_id, broker_epoch) {
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

    /// One partition of [`Self::alter_partition_reassignments`]: its next
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

/// Partition records for every partition that `change` changes.
fn partition_changes(
    image: &MetadataImage,
    change: impl Fn(&str, &PartitionRegistration) -> Option<PartitionRegistration>,
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

/// The record of a partition's next registration, which must hold its invariants.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{cluster, spec};
    use crate::controller::{Controller, CreateTopicSpec};

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
