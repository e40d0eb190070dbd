//! How the controller changes one partition's leadership (Kafka KRaft's
//! `PartitionChangeBuilder` and the partition parts of `ReplicationControlManager`): broker
//! fencing and unfencing, leader election from the ISR, preferred-leader election, the
//! leader's AlterPartition requests, and partition reassignment (KIP-455, Kafka's
//! `PartitionReassignmentReplicas` and `PartitionReassignmentRevert`).
//!
//! Pure functions from a [`PartitionRegistration`] and the live brokers to the next
//! registration (or a Kafka error), so that the controller and a deterministic simulation use
//! the same rules: the controller applies them to the image's partitions (fencing, unfencing,
//! AlterPartition, ElectLeaders and the automatic preferred-leader balance).
//!
//! Invariants kept by every change (checked by [`PartitionRegistration::check`]): the ISR is a
//! non-empty subset of the replicas; the leader is in the ISR or is [`NO_LEADER`]; the leader
//! epoch grows whenever the leader changes or a replica leaves the replica set, and the
//! partition epoch on every change; with `unclean.leader.election.enable=false`, a leader is
//! only ever chosen from the ISR.
//!
//! # Reassignment
//!
//! A reassignment grows the replica set first and shrinks it once the new replicas caught up,
//! so that no replica leaves before its data is elsewhere:
//! 1. start: `replicas` = target followed by the replicas it drops (`removing_replicas`),
//!    `adding_replicas` = target − current; the ISR and the leader stay;
//! 2. the leader adds the new replicas to the ISR as they catch up (AlterPartition);
//! 3. once the ISR holds every target replica, the same change completes it: `replicas` =
//!    target, ISR = ISR − removing, a new leader from that ISR if the old one is dropped, and
//!    (as for every change that drops a replica) a new leader epoch.
//!
//! A reassignment that adds nothing completes at once if the ISR allows it. A new one over an
//! ongoing one starts from the current (grown) replica set, as Kafka's KRaft controller does:
//! a replica the first one was adding and the second one drops is kept until completion, so it
//! is never dropped while it may be the only in-sync copy. Cancelling goes back to the
//! original replicas (current − adding), keeping the ISR members among them; if none is in the
//! ISR, that is an unclean election and needs `unclean.leader.election.enable`.

use std::collections::BTreeSet;

/// Kafka's "no leader" (-1): every ISR member is fenced.
pub const NO_LEADER: i32 = -1;

/// A partition's replicas, ISR and leadership (Kafka's `PartitionRegistration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRegistration {
    /// Assigned replicas in preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas an ongoing reassignment adds (target − original), in id order; empty when
    /// none is in progress.
    pub adding_replicas: Vec<i32>,
    /// Replicas an ongoing reassignment drops (original − target), in id order; they stay
    /// in `replicas` (after the target ones) and may stay in the ISR until it completes.
    pub removing_replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// Why a reassignment change is refused, with Kafka's error codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReassignmentError {
    /// NO_REASSIGNMENT_IN_PROGRESS (85): a cancellation of a partition that is not moving.
    #[error("No partition reassignment is in progress.")]
    NoReassignmentInProgress,
    /// INVALID_REPLICA_ASSIGNMENT (39): cancelling would leave no ISR member among the
    /// original replicas, and unclean leader election is off.
    #[error("Unable to revert partition assignment because it would require an unclean leader election.")]
    RevertNeedsUncleanElection,
}

impl ReassignmentError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ReassignmentError::NoReassignmentInProgress => 85,
            ReassignmentError::RevertNeedsUncleanElection => 39,
        }
    }
}

/// Why an AlterPartition request is refused, with Kafka's error codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionError {
    /// NOT_LEADER_OR_FOLLOWER (6): the sender does not lead the partition.
    #[error("broker {0} is not the leader")]
    NotLeader(i32),
    /// FENCED_LEADER_EPOCH (74): the sender's leader epoch is not the current one.
    #[error("leader epoch {got} is not the current {current}")]
    FencedLeaderEpoch { got: i32, current: i32 },
    /// INVALID_UPDATE_VERSION (108): the request was built on another partition epoch.
    #[error("partition epoch {got} is not the current {current}")]
    InvalidUpdateVersion { got: i32, current: i32 },
    /// INELIGIBLE_REPLICA (107): a proposed member is not a replica, or is fenced.
    #[error("broker {0} cannot be in the ISR")]
    IneligibleReplica(i32),
    /// INVALID_REQUEST (42): an ISR without its leader.
    #[error("the proposed ISR does not hold the leader")]
    LeaderNotInIsr,
}

impl AlterPartitionError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            AlterPartitionError::NotLeader(_) => 6,
            AlterPartitionError::FencedLeaderEpoch { .. } => 74,
            AlterPartitionError::InvalidUpdateVersion { .. } => 108,
            AlterPartitionError::IneligibleReplica(_) => 107,
            AlterPartitionError::LeaderNotInIsr => 42,
        }
    }
}

impl PartitionRegistration {
    /// A new partition: every replica in sync, the first live one leading.
    pub fn new(replicas: Vec<i32>, live: &BTreeSet<i32>) -> Self {
        let leader = replicas
            .iter()
            .copied()
            .find(|r| live.contains(r))
            .unwrap_or(NO_LEADER);
        PartitionRegistration {
            isr: replicas.clone(),
            replicas,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    /// The invariants of the module documentation.
    pub fn check(&self) -> Result<(), String> {
        if self.isr.is_empty() {
            return Err("empty ISR".into());
        }
        if let Some(r) = self.isr.iter().find(|r| !self.replicas.contains(r)) {
            return Err(format!("ISR member {r} is not a replica"));
        }
        if self.leader != NO_LEADER && !self.isr.contains(&self.leader) {
            return Err(format!("leader {} is not in the ISR", self.leader));
        }
        let moving = self.adding_replicas.iter().chain(&self.removing_replicas);
        if let Some(r) = moving.clone().find(|r| !self.replicas.contains(r)) {
            return Err(format!("reassigned replica {r} is not a replica"));
        }
        if let Some(r) = self
            .adding_replicas
            .iter()
            .find(|r| self.removing_replicas.contains(r))
        {
            return Err(format!("replica {r} is both added and removed"));
        }
        if self.is_reassigning() && self.target_replicas().is_empty() {
            return Err("a reassignment to no replica".into());
        }
        Ok(())
    }

    /// Whether a reassignment is in progress (Kafka's `isReassigning`).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas before the ongoing reassignment (Kafka's `originalReplicas`); the
    /// replicas when none is in progress.
    pub fn original_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.adding_replicas)
    }

    /// The replicas the ongoing reassignment moves to; the replicas when none is in progress.
    pub fn target_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.removing_replicas)
    }

    /// Starts moving the partition to `target` (AlterPartitionReassignments with replicas;
    /// the caller checked that `target` is non-empty, without duplicates, and names
    /// registered brokers). Computed from the current replica set, which during an ongoing
    /// reassignment includes the replicas it adds (see the module docs); completes at once
    /// when the ISR already allows it. `None` when nothing changes.
    pub fn reassign(&self, target: &[i32], live: &BTreeSet<i32>) -> Option<PartitionRegistration> {
        let removing = without(&sorted(&self.replicas), target);
        // New replicas, and those the ongoing reassignment adds that the target keeps: they
        // are not in sync for good yet either. (Kafka keeps the previous adding list when
        // the new one is empty, which for a target dropping them lists a replica as added
        // and removed at once; this keeps the lists disjoint.)
        let adding = sorted(
            &target
                .iter()
                .copied()
                .filter(|r| !self.replicas.contains(r) || self.adding_replicas.contains(r))
                .collect::<Vec<_>>(),
        );
        let mut next = self.clone();
        next.replicas = target.iter().chain(&removing).copied().collect();
        next.adding_replicas = adding;
        next.removing_replicas = removing;
        // Kafka elects with Election.ONLINE here: never unclean.
        next.settle(self, live, false)
    }

    /// Cancels the ongoing reassignment (AlterPartitionReassignments with null replicas,
    /// Kafka's `PartitionReassignmentRevert`): back to the original replicas, the ISR without
    /// the replicas being added, a new leader if the current one was being added. If no ISR
    /// member is an original replica, the first original replica becomes the ISR, which is
    /// an unclean election: refused unless `unclean`.
    pub fn cancel_reassignment(
        &self,
        live: &BTreeSet<i32>,
        unclean: bool,
    ) -> Result<Option<PartitionRegistration>, ReassignmentError> {
        if !self.is_reassigning() {
            return Err(ReassignmentError::NoReassignmentInProgress);
        }
        let mut next = self.clone();
        next.replicas = self.original_replicas();
        next.isr = without(&self.isr, &self.adding_replicas);
        if next.isr.is_empty() {
            if !unclean {
                return Err(ReassignmentError::RevertNeedsUncleanElection);
            }
            // Non-empty: a reassignment never adds every replica of a non-empty set.
            next.isr = next.replicas.first().copied().into_iter().collect();
        }
        next.adding_replicas.clear();
        next.removing_replicas.clear();
        Ok(next.settle(self, live, unclean))
    }

    /// The registration after `broker` is fenced (its heartbeats stopped): it leaves the ISR
    /// unless it is the last member (then the partition has no leader until it returns, or,
    /// with `unclean`, until another live replica takes over), and a new leader is elected
    /// from the ISR if it led. `None` when the partition does not change.
    pub fn on_broker_fenced(
        &self,
        broker: i32,
        live: &BTreeSet<i32>,
        unclean: bool,
    ) -> Option<PartitionRegistration> {
        if !self.isr.contains(&broker) && self.leader != broker {
            return None;
        }
        let mut next = self.clone();
        if self.isr.len() > 1 {
            next.isr.retain(|r| *r != broker);
        }
        if self.leader == broker {
            next.leader = next.elect(live, unclean);
        }
        next.finish(self)
    }

    /// The registration after `broker` is unfenced: a partition without a leader gets one.
    pub fn on_broker_unfenced(
        &self,
        live: &BTreeSet<i32>,
        unclean: bool,
    ) -> Option<PartitionRegistration> {
        if self.leader != NO_LEADER {
            return None;
        }
        let mut next = self.clone();
        next.leader = next.elect(live, unclean);
        next.finish(self)
    }

    /// Preferred-leader election: the first replica leads if it is live and in sync.
    pub fn elect_preferred(&self, live: &BTreeSet<i32>) -> Option<PartitionRegistration> {
        let preferred = *self.replicas.first()?;
        if preferred == self.leader || !live.contains(&preferred) || !self.isr.contains(&preferred)
        {
            return None;
        }
        let mut next = self.clone();
        next.leader = preferred;
        next.finish(self)
    }

    /// An AlterPartition from the leader: a new ISR built on `partition_epoch`.
    pub fn alter_isr(
        &self,
        sender: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
        live: &BTreeSet<i32>,
    ) -> Result<PartitionRegistration, AlterPartitionError> {
        if sender != self.leader {
            return Err(AlterPartitionError::NotLeader(sender));
        }
        if leader_epoch != self.leader_epoch {
            return Err(AlterPartitionError::FencedLeaderEpoch {
                got: leader_epoch,
                current: self.leader_epoch,
            });
        }
        if partition_epoch != self.partition_epoch {
            return Err(AlterPartitionError::InvalidUpdateVersion {
                got: partition_epoch,
                current: self.partition_epoch,
            });
        }
        if !new_isr.contains(&sender) {
            return Err(AlterPartitionError::LeaderNotInIsr);
        }
        if let Some(r) = new_isr
            .iter()
            .find(|r| !self.replicas.contains(r) || !live.contains(r))
        {
            return Err(AlterPartitionError::IneligibleReplica(*r));
        }
        let mut next = self.clone();
        next.isr = new_isr.to_vec();
        // A grown ISR may complete a reassignment (Kafka completes it in the same change).
        // The sender leads and every member is live, so any election here is clean.
        Ok(next
            .settle(self, live, false)
            .unwrap_or_else(|| self.clone()))
    }

    /// Kafka's `PartitionChangeBuilder.build` after the target replicas and ISR are set:
    /// completes the reassignment if the ISR allows it, keeps the leader if it may still
    /// lead and elects one otherwise, then bumps the epochs.
    fn settle(
        mut self,
        before: &PartitionRegistration,
        live: &BTreeSet<i32>,
        unclean: bool,
    ) -> Option<PartitionRegistration> {
        self.complete_reassignment_if_done();
        // Kept in replica order, so equal sets compare equal.
        let isr: BTreeSet<i32> = self.isr.iter().copied().collect();
        self.isr = self
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r))
            .collect();
        let can_lead = self.isr.contains(&self.leader) && live.contains(&self.leader);
        if !can_lead {
            self.leader = self.elect(live, unclean);
        }
        self.finish(before)
    }

    /// Kafka's `PartitionReassignmentReplicas.maybeCompleteReassignment`: once the ISR
    /// without the removed replicas is non-empty and holds every target replica, the
    /// replicas become the target and the removed ones leave the ISR.
    fn complete_reassignment_if_done(&mut self) {
        if !self.is_reassigning() {
            return;
        }
        let isr = without(&self.isr, &self.removing_replicas);
        let target = self.target_replicas();
        if isr.is_empty() || target.is_empty() || !target.iter().all(|r| isr.contains(r)) {
            return;
        }
        self.replicas = target;
        self.isr = isr;
        self.adding_replicas.clear();
        self.removing_replicas.clear();
    }

    /// A leader from the ISR: the first live member in replica order; without one, with
    /// `unclean`, the first live replica (which becomes the whole ISR, as in Kafka).
    fn elect(&mut self, live: &BTreeSet<i32>, unclean: bool) -> i32 {
        let from_isr = self
            .replicas
            .iter()
            .copied()
            .find(|r| self.isr.contains(r) && live.contains(r));
        if let Some(leader) = from_isr {
            return leader;
        }
        match self.replicas.iter().copied().find(|r| live.contains(r)) {
            Some(leader) if unclean => {
                self.isr = vec![leader];
                leader
            }
            _ => NO_LEADER,
        }
    }

    /// Bumps the epochs for a change from `before`; `None` if nothing changed.
    fn finish(mut self, before: &PartitionRegistration) -> Option<PartitionRegistration> {
        if self == *before {
            return None;
        }
        // A replica leaving the set also gets a new leader epoch (Kafka's
        // `triggerLeaderEpochBumpForReplicaReassignmentIfNeeded`): the removed replica's
        // fetches are fenced, and the leader starts its follower tracking afresh.
        let replica_dropped = before.replicas.iter().any(|r| !self.replicas.contains(r));
        if self.leader != before.leader || replica_dropped {
            self.leader_epoch = before.leader_epoch + 1;
        }
        self.partition_epoch = before.partition_epoch + 1;
        debug_assert_eq!(self.check(), Ok(()));
        Some(self)
    }
}

/// `list` without the members of `drop`, in `list`'s order.
fn without(list: &[i32], drop: &[i32]) -> Vec<i32> {
    list.iter().copied().filter(|r| !drop.contains(r)).collect()
}

fn sorted(list: &[i32]) -> Vec<i32> {
    let mut out = list.to_vec();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_and_bumps_epochs() {
        let p = PartitionRegistration::new(vec![1, 2, 3], &live(&[1, 2, 3]));
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2, 3]));
        let p = p.on_broker_fenced(1, &live(&[2, 3]), false).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
        // A follower fenced: ISR shrinks, the leader and its epoch stay.
        let p = p.on_broker_fenced(3, &live(&[2]), false).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (2, vec![2], 1, 2)
        );
        // The last member stays in the ISR; without a live member there is no leader.
        let p = p.on_broker_fenced(2, &live(&[]), false).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (NO_LEADER, vec![2], 2)
        );
        // Replica 1 coming back cannot lead (not in the ISR) without unclean election...
        assert_eq!(p.on_broker_unfenced(&live(&[1]), false), None);
        // ...but replica 2 can, and with unclean election replica 1 can.
        let back = p.on_broker_unfenced(&live(&[1, 2]), false).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (2, 3));
        let unclean = p.on_broker_unfenced(&live(&[1]), true).unwrap();
        assert_eq!((unclean.leader, unclean.isr.clone()), (1, vec![1]));
        // Unrelated brokers change nothing.
        assert_eq!(back.on_broker_fenced(7, &live(&[2]), false), None);
    }

    #[test]
    fn preferred_leader_election() {
        let p = PartitionRegistration::new(vec![1, 2, 3], &live(&[1, 2, 3]));
        let p = p.on_broker_fenced(1, &live(&[2, 3]), false).unwrap();
        assert_eq!(
            p.elect_preferred(&live(&[1, 2, 3])),
            None,
            "1 is not in sync"
        );
        let p = p
            .alter_isr(
                2,
                p.leader_epoch,
                p.partition_epoch,
                &[2, 3, 1],
                &live(&[1, 2, 3]),
            )
            .unwrap();
        assert_eq!(p.isr, vec![1, 2, 3], "kept in replica order");
        let p = p.elect_preferred(&live(&[1, 2, 3])).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (1, 2));
        assert_eq!(p.elect_preferred(&live(&[1, 2, 3])), None);
    }

    #[test]
    fn alter_partition_is_refused_with_kafkas_errors() {
        let p = PartitionRegistration::new(vec![1, 2, 3], &live(&[1, 2, 3]));
        let all = live(&[1, 2, 3]);
        let refused = |sender, le, pe, isr: &[i32], live: &BTreeSet<i32>| {
            p.alter_isr(sender, le, pe, isr, live)
                .unwrap_err()
                .kafka_error_code()
        };
        assert_eq!(refused(2, 0, 0, &[2], &all), 6);
        assert_eq!(refused(1, 1, 0, &[1], &all), 74);
        assert_eq!(refused(1, 0, 5, &[1], &all), 108);
        assert_eq!(refused(1, 0, 0, &[2, 3], &all), 42);
        assert_eq!(refused(1, 0, 0, &[1, 4], &all), 107);
        assert_eq!(
            refused(1, 0, 0, &[1, 3], &live(&[1, 2])),
            107,
            "3 is fenced"
        );
        let shrunk = p.alter_isr(1, 0, 0, &[1, 3], &all).unwrap();
        assert_eq!(
            (
                shrunk.isr.clone(),
                shrunk.leader_epoch,
                shrunk.partition_epoch
            ),
            (vec![1, 3], 0, 1)
        );
        // The same ISR again: accepted, no change.
        assert_eq!(shrunk.alter_isr(1, 0, 1, &[3, 1], &all).unwrap(), shrunk);
    }

    /// Random sequences of fencing, unfencing, preferred elections and ISR changes keep the
    /// invariants, and a clean election never picks a replica outside the ISR.
    #[test]
    fn invariants_under_random_changes() {
        // A small deterministic generator: the workspace's proptest is not a dependency here.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut alive = live(&[1, 2, 3, 4, 5]);
            let mut p = PartitionRegistration::new(vec![3, 1, 4], &alive);
            for _ in 0..100 {
                let broker = 1 + next(5) as i32;
                let unclean = next(10) == 0;
                let before = p.clone();
                // Replicas a change may elect without an unclean election: the ISR before,
                // and the members a leader's AlterPartition admits (they caught up).
                let mut in_sync = before.isr.clone();
                let changed = match next(6) {
                    0 => {
                        alive.remove(&broker);
                        p.on_broker_fenced(broker, &alive, unclean)
                    }
                    1 => {
                        alive.insert(broker);
                        p.on_broker_unfenced(&alive, unclean)
                    }
                    2 => p.elect_preferred(&alive),
                    3 => {
                        let size = 1 + next(3) as usize;
                        let mut target: Vec<i32> = Vec::new();
                        while target.len() < size {
                            let b = 1 + next(5) as i32;
                            if !target.contains(&b) {
                                target.push(b);
                            }
                        }
                        p.reassign(&target, &alive)
                    }
                    4 => p.cancel_reassignment(&alive, unclean).ok().flatten(),
                    _ => {
                        let isr: Vec<i32> = p
                            .replicas
                            .iter()
                            .copied()
                            .filter(|r| *r == p.leader || next(2) == 0)
                            .collect();
                        in_sync.extend(&isr);
                        // An ISR equal to the current one is accepted without a change.
                        p.alter_isr(p.leader, p.leader_epoch, p.partition_epoch, &isr, &alive)
                            .ok()
                            .filter(|changed| *changed != p)
                    }
                };
                if let Some(c) = changed {
                    p = c;
                    assert_eq!(p.check(), Ok(()), "{p:?}");
                    assert!(p.partition_epoch > before.partition_epoch);
                    assert!(p.leader_epoch >= before.leader_epoch);
                    let dropped = before.replicas.iter().any(|r| !p.replicas.contains(r));
                    if p.leader != before.leader || dropped {
                        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
                    }
                    if dropped && !p.is_reassigning() && p.replicas == before.target_replicas() {
                        // Completed: every replica left is in sync.
                        assert!(p.replicas.iter().all(|r| p.isr.contains(r)), "{p:?}");
                    }
                    if p.leader != NO_LEADER {
                        assert!(alive.contains(&p.leader), "a fenced leader: {p:?}");
                        let clean = in_sync.contains(&p.leader) || p.isr == [p.leader];
                        assert!(clean, "leader outside the ISR: {before:?} -> {p:?}");
                    }
                }
            }
        }
    }

    fn reg(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionRegistration {
        PartitionRegistration {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            leader,
            leader_epoch: 5,
            partition_epoch: 10,
        }
    }

    /// The leader's AlterPartition adding `b` to the ISR.
    fn join(p: &PartitionRegistration, b: i32, alive: &BTreeSet<i32>) -> PartitionRegistration {
        let mut isr = p.isr.clone();
        isr.push(b);
        p.alter_isr(p.leader, p.leader_epoch, p.partition_epoch, &isr, alive)
            .unwrap()
    }

    #[test]
    fn a_move_grows_the_replicas_then_completes_once_the_new_one_is_in_sync() {
        let all = live(&[1, 2, 3]);
        let p = reg(&[1, 2], &[1, 2], 1);
        let moving = p.reassign(&[2, 3], &all).unwrap();
        // Target first, then the removed replica; ISR, leader and leader epoch unchanged.
        assert_eq!(moving.replicas, vec![2, 3, 1]);
        assert_eq!(
            (
                moving.adding_replicas.clone(),
                moving.removing_replicas.clone()
            ),
            (vec![3], vec![1])
        );
        assert_eq!((moving.isr.clone(), moving.leader), (vec![2, 1], 1));
        assert_eq!((moving.leader_epoch, moving.partition_epoch), (5, 11));
        assert!(moving.is_reassigning());
        assert_eq!(moving.original_replicas(), vec![2, 1]);
        assert_eq!(moving.target_replicas(), vec![2, 3]);
        assert_eq!(moving.check(), Ok(()));
        // The same target again changes nothing.
        assert_eq!(moving.reassign(&[2, 3], &all), None);
        // 3 catches up: the same change completes the move; the removed leader hands over to
        // the first in-sync target replica, with a new leader epoch.
        let done = join(&moving, 3, &all);
        assert_eq!(done.replicas, vec![2, 3]);
        assert_eq!(done.isr, vec![2, 3]);
        assert!(!done.is_reassigning());
        assert_eq!(
            (done.leader, done.leader_epoch, done.partition_epoch),
            (2, 6, 12)
        );
    }

    #[test]
    fn completion_waits_for_every_target_replica_and_bumps_the_epoch_of_a_kept_leader() {
        let all = live(&[1, 2, 3, 4]);
        // 3 is a lagging replica that stays: Kafka waits for it too.
        let p = reg(&[1, 2, 3], &[1, 2], 1);
        let moving = p.reassign(&[1, 3, 4], &all).unwrap();
        assert_eq!(moving.replicas, vec![1, 3, 4, 2]);
        let p4 = join(&moving, 4, &all);
        assert!(p4.is_reassigning(), "3 is not in sync yet");
        assert_eq!(
            p4.isr,
            vec![1, 4, 2],
            "the removed replica stays in the ISR"
        );
        assert_eq!(p4.leader_epoch, 5);
        let done = join(&p4, 3, &all);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![1, 3, 4], vec![1, 3, 4])
        );
        // The leader stays, but a replica left: new leader epoch.
        assert_eq!((done.leader, done.leader_epoch), (1, 6));
    }

    #[test]
    fn removing_and_reordering_complete_at_once_when_the_isr_allows() {
        let all = live(&[1, 2, 3]);
        let p = reg(&[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(p.reassign(&[1, 2, 3], &all), None, "nothing to do");
        let reordered = p.reassign(&[3, 2, 1], &all).unwrap();
        assert_eq!(reordered.replicas, vec![3, 2, 1]);
        assert_eq!(reordered.isr, vec![3, 2, 1]);
        assert!(!reordered.is_reassigning());
        assert_eq!(
            (reordered.leader, reordered.leader_epoch),
            (1, 5),
            "the leader may stay"
        );
        let shrunk = p.reassign(&[2, 3], &all).unwrap();
        assert_eq!(
            (shrunk.replicas.clone(), shrunk.isr.clone()),
            (vec![2, 3], vec![2, 3])
        );
        assert_eq!((shrunk.leader, shrunk.leader_epoch), (2, 6));
        // A remaining replica out of sync: the shrink waits for it.
        let lagging = reg(&[1, 2, 3], &[1, 3], 1);
        let waiting = lagging.reassign(&[1, 2], &all).unwrap();
        assert_eq!(
            (waiting.replicas.clone(), waiting.removing_replicas.clone()),
            (vec![1, 2, 3], vec![3])
        );
        let done = join(&waiting, 2, &all);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
    }

    #[test]
    fn the_new_leader_is_live_and_in_sync() {
        let p = reg(&[1, 2, 3, 4], &[1, 2, 3, 4], 1);
        // 2 is fenced (out of the ISR): 3 takes over when 1 is moved away.
        let p = p.on_broker_fenced(2, &live(&[1, 3, 4]), false).unwrap();
        let done = p.reassign(&[2, 3, 4], &live(&[1, 3, 4])).unwrap();
        assert!(done.is_reassigning(), "2 must be in sync first");
        let p = done
            .on_broker_unfenced(&live(&[1, 2, 3, 4]), false)
            .map_or(done.clone(), |p| p);
        let done = join(&p, 2, &live(&[1, 2, 3, 4]));
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.leader, 2, "the first in-sync target replica");
    }

    #[test]
    fn cancelling_goes_back_to_the_original_replicas() {
        let all = live(&[1, 2, 3]);
        let p = reg(&[1, 2], &[1, 2], 1);
        assert_eq!(
            p.cancel_reassignment(&all, false)
                .unwrap_err()
                .kafka_error_code(),
            85
        );
        let moving = p.reassign(&[2, 3], &all).unwrap();
        let reverted = moving.cancel_reassignment(&all, false).unwrap().unwrap();
        // Kafka's order: the grown list without the added replicas.
        assert_eq!(reverted.replicas, vec![2, 1]);
        assert_eq!(reverted.isr, vec![2, 1]);
        assert!(!reverted.is_reassigning());
        assert_eq!((reverted.leader, reverted.leader_epoch), (1, 6), "3 left");

        // A leader being added (preferred election moved it there once in sync) hands back
        // to an original replica.
        let p = reg(&[1, 2], &[1, 2], 1)
            .reassign(&[3, 4], &live(&[1, 2, 3, 4]))
            .unwrap();
        let p = join(&p, 3, &live(&[1, 2, 3, 4]));
        let p = p.elect_preferred(&live(&[1, 2, 3, 4])).unwrap();
        assert_eq!(p.leader, 3);
        let reverted = p
            .cancel_reassignment(&live(&[1, 2, 3, 4]), false)
            .unwrap()
            .unwrap();
        assert_eq!(reverted.replicas, vec![1, 2]);
        assert_eq!((reverted.isr.clone(), reverted.leader), (vec![1, 2], 1));
        assert_eq!(reverted.leader_epoch, p.leader_epoch + 1);

        // Only added replicas in sync: reverting is an unclean election.
        let p = reg(&[1], &[1], 1).reassign(&[2, 3], &all).unwrap();
        let p = join(&p, 2, &all);
        let p = p.elect_preferred(&all).unwrap();
        assert_eq!(p.leader, 2);
        let p = p
            .alter_isr(2, p.leader_epoch, p.partition_epoch, &[2], &all)
            .unwrap();
        assert_eq!(p.isr, vec![2]);
        assert_eq!(
            p.cancel_reassignment(&all, false)
                .unwrap_err()
                .kafka_error_code(),
            39
        );
        let unclean = p.cancel_reassignment(&all, true).unwrap().unwrap();
        assert_eq!(
            (unclean.replicas.clone(), unclean.isr.clone()),
            (vec![1], vec![1])
        );
        assert_eq!(unclean.leader, 1);
    }

    #[test]
    fn a_new_target_replaces_the_ongoing_reassignment_from_the_grown_set() {
        let all = live(&[1, 2, 3, 4]);
        let moving = reg(&[1, 2], &[1, 2], 1).reassign(&[2, 3], &all).unwrap();
        let replaced = moving.reassign(&[2, 4], &all).unwrap();
        // 3, which the first one was adding, is removed like 1: kept until completion.
        assert_eq!(replaced.replicas, vec![2, 4, 1, 3]);
        assert_eq!(replaced.adding_replicas, vec![4]);
        assert_eq!(replaced.removing_replicas, vec![1, 3]);
        assert_eq!(replaced.partition_epoch, moving.partition_epoch + 1);
        let done = join(&replaced, 4, &all);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![2, 4], vec![2, 4])
        );
        // The grown set as the target: nothing is removed, 3 is still being added.
        let grown = moving.reassign(&[2, 3, 1], &all).unwrap();
        assert_eq!(grown.replicas, vec![2, 3, 1]);
        assert_eq!(
            (
                grown.adding_replicas.clone(),
                grown.removing_replicas.clone()
            ),
            (vec![3], vec![])
        );
        assert_eq!(grown.original_replicas(), vec![2, 1]);
        // A target without the replica being added: it is removed, not added.
        // 2 is in sync, so that completes at once.
        let dropped = moving.reassign(&[2], &all).unwrap();
        assert!(!dropped.is_reassigning());
        assert_eq!(
            (dropped.replicas.clone(), dropped.isr.clone()),
            (vec![2], vec![2])
        );
        let lagging = reg(&[1, 2], &[1], 1).reassign(&[2, 3], &all).unwrap();
        let dropped = lagging.reassign(&[2], &all).unwrap();
        assert_eq!(
            (
                dropped.adding_replicas.clone(),
                dropped.removing_replicas.clone()
            ),
            (vec![], vec![1, 3])
        );
        assert_eq!(dropped.replicas, vec![2, 1, 3]);
    }
}
