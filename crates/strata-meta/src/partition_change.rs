//! How the controller changes one partition's leadership (Kafka KRaft's
//! `PartitionChangeBuilder` and the partition parts of `ReplicationControlManager`): broker
//! fencing and unfencing, leader election from the ISR, preferred-leader election, and the
//! leader's AlterPartition requests.
//!
//! Pure functions from a [`PartitionRegistration`] and the live brokers to the next
//! registration (or a Kafka error), so that the controller and a deterministic simulation use
//! the same rules: the controller applies them to the image's partitions (fencing, unfencing,
//! AlterPartition, ElectLeaders and the automatic preferred-leader balance).
//!
//! Invariants kept by every change (checked by [`PartitionRegistration::check`]): the ISR is a
//! non-empty subset of the replicas; the leader is in the ISR or is [`NO_LEADER`]; the leader
//! epoch grows whenever the leader changes and the partition epoch on every change; with
//! `unclean.leader.election.enable=false`, a leader is only ever chosen from the ISR.

use std::collections::BTreeSet;

/// Kafka's "no leader" (-1): every ISR member is fenced.
pub const NO_LEADER: i32 = -1;

/// A partition's replicas, ISR and leadership (Kafka's `PartitionRegistration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRegistration {
    /// Assigned replicas in preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
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
        Ok(())
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
        let wanted: BTreeSet<i32> = new_isr.iter().copied().collect();
        // Kept in replica order, so equal sets compare equal.
        next.isr = self
            .replicas
            .iter()
            .copied()
            .filter(|r| wanted.contains(r))
            .collect();
        Ok(next.finish(self).unwrap_or_else(|| self.clone()))
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
        if self.leader != before.leader {
            self.leader_epoch = before.leader_epoch + 1;
        }
        self.partition_epoch = before.partition_epoch + 1;
        debug_assert_eq!(self.check(), Ok(()));
        Some(self)
    }
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
                let changed = match next(4) {
                    0 => {
                        alive.remove(&broker);
                        p.on_broker_fenced(broker, &alive, unclean)
                    }
                    1 => {
                        alive.insert(broker);
                        p.on_broker_unfenced(&alive, unclean)
                    }
                    2 => p.elect_preferred(&alive),
                    _ => {
                        let isr: Vec<i32> = p
                            .replicas
                            .iter()
                            .copied()
                            .filter(|r| *r == p.leader || next(2) == 0)
                            .collect();
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
                    if p.leader != before.leader {
                        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
                    }
                    if p.leader != NO_LEADER {
                        assert!(alive.contains(&p.leader), "a fenced leader: {p:?}");
                        let clean = before.isr.contains(&p.leader) || p.isr == [p.leader];
                        assert!(clean, "leader outside the ISR: {before:?} -> {p:?}");
                    }
                }
            }
        }
    }
}
