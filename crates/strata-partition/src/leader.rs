//! The leader's side of one replicated partition (Kafka's `Partition` as leader): follower
//! progress, the in-sync replica set, the high watermark, and the `acks=all` rules.
//!
//! Sans-IO: events come in as method calls with the time, decisions go out as return values
//! (a high watermark that moved, an ISR change to propose to the controller). The caller owns
//! the log, the network and the controller.
//!
//! Kafka's rules, kept here:
//! - A follower's log end offset is the offset it fetches from. It is *caught up* when that
//!   reached the leader's log end, or did within `replica.lag.time.max.ms` (the leader's log
//!   end as of its previous fetch counts, so a follower chasing a busy leader stays caught up).
//! - ISR changes go through the controller (AlterPartition, KIP-497): one at a time; while one
//!   is pending, the *maximal* ISR (the committed ISR plus a replica being added) decides the
//!   high watermark, and the *committed* ISR decides `min.insync.replicas`.
//! - The high watermark is the smallest log end among the leader, the maximal ISR and the
//!   caught-up replicas eligible to join; it never moves back while this leader leads.
//! - A follower joins the ISR when its log end reached the high watermark and the start of the
//!   leader's epoch; a member is removed when it has not been caught up for the lag time.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::PartitionError;

/// Broker settings the leader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas` of the topic.
    pub min_insync_replicas: usize,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}

/// A partition's leadership as the controller assigned it (Kafka's `LeaderAndIsr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped by the controller on every change of the partition (ISR, replicas, leader).
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Follower {
    log_end_offset: i64,
    /// The log start offset the follower reported in its last fetch (-1 before it fetched).
    log_start_offset: i64,
    /// Last time the follower was caught up (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: i64,
    /// The leader's log end and the time at the follower's previous fetch.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

impl Follower {
    fn is_caught_up(&self, leader_leo: i64, now_ms: i64, lag_max_ms: i64) -> bool {
        self.log_end_offset == leader_leo
            || now_ms.saturating_sub(self.last_caught_up_ms) <= lag_max_ms
    }
}

/// What the leader knows of one follower's log, for choosing where consumers may read
/// (KIP-392, [`crate::preferred_read_replica`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    pub replica: i32,
    /// In the ISR the controller committed (Kafka's `inSyncReplicaIds`).
    pub in_isr: bool,
    /// As of the follower's last fetch; -1 before its first.
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Last time the follower was caught up with the leader's log end.
    pub last_caught_up_ms: i64,
}

/// An ISR change this leader asked the controller for (AlterPartition), not yet answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    /// The ISR the leader proposes.
    pub proposed: BTreeSet<i32>,
    /// The partition epoch the proposal is based on (the controller refuses a stale one).
    pub partition_epoch: i32,
}

/// The controller's refusal of an ISR change (AlterPartition's error, KIP-497), sorted by what
/// it tells the leader about its pending change. The broker gets a code on the wire and the
/// simulation a typed error from `strata-meta`; both go through [`Self::from_error_code`] and
/// [`LeaderState::on_isr_change_refused`], so the simulation tests the decision the broker
/// makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsrChangeRefusal {
    /// INELIGIBLE_REPLICA (107): a proposed member is not a replica, or is fenced. Not applied.
    IneligibleReplica,
    /// INVALID_REQUEST (42): the proposed ISR does not hold the leader. Not applied.
    InvalidRequest,
    /// FENCED_LEADER_EPOCH (74): the controller has a newer leader epoch.
    FencedLeaderEpoch,
    /// INVALID_UPDATE_VERSION (108): the controller has a newer partition epoch, possibly
    /// because it committed this very change and its answer was lost.
    InvalidUpdateVersion,
    /// NOT_LEADER_OR_FOLLOWER (6): the controller has another leader.
    NotLeaderOrFollower,
    /// Any other code (STALE_BROKER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION, ...): the leader cannot
    /// tell whether the change was applied.
    Other(i16),
}

impl IsrChangeRefusal {
    pub fn from_error_code(error_code: i16) -> Self {
        match error_code {
            107 => IsrChangeRefusal::IneligibleReplica,
            42 => IsrChangeRefusal::InvalidRequest,
            74 => IsrChangeRefusal::FencedLeaderEpoch,
            108 => IsrChangeRefusal::InvalidUpdateVersion,
            6 => IsrChangeRefusal::NotLeaderOrFollower,
            other => IsrChangeRefusal::Other(other),
        }
    }

    pub fn error_code(self) -> i16 {
        match self {
            IsrChangeRefusal::IneligibleReplica => 107,
            IsrChangeRefusal::InvalidRequest => 42,
            IsrChangeRefusal::FencedLeaderEpoch => 74,
            IsrChangeRefusal::InvalidUpdateVersion => 108,
            IsrChangeRefusal::NotLeaderOrFollower => 6,
            IsrChangeRefusal::Other(code) => code,
        }
    }

    /// Whether the controller says it did not apply the change (Kafka's
    /// `Partition.handleAlterPartitionError` resets to the committed state only then). Every
    /// other refusal says the leader is out of date, which it may be because the change
    /// committed.
    pub fn change_not_applied(self) -> bool {
        matches!(
            self,
            IsrChangeRefusal::IneligibleReplica | IsrChangeRefusal::InvalidRequest
        )
    }
}

/// What [`LeaderState::on_isr_change_refused`] did with the pending change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedIsrChange {
    /// Dropped: the next fetch or shrink check proposes again from the committed ISR.
    Dropped,
    /// Kept pending (the maximal ISR still holds it) until metadata with a newer partition
    /// epoch arrives ([`LeaderState::on_isr_committed`]).
    KeptUntilMetadata,
}

/// Outcome of a produce with `acks=all` once its last offset is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckState {
    /// Not every in-sync replica has the records yet.
    Waiting,
    /// Replicated to the ISR and the ISR is large enough.
    Done,
    /// Replicated, but the ISR shrank below `min.insync.replicas` meanwhile
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    DoneWithTooFewReplicas,
}

/// The leader's state of one partition for one leader epoch.
#[derive(Clone, Debug)]
pub struct LeaderState {
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    /// Log end offset when this epoch began: a follower must reach it to join the ISR.
    epoch_start_offset: i64,
    config: LeaderConfig,
    /// The ISR as the controller last committed it; always holds the leader.
    isr: BTreeSet<i32>,
    pending: Option<IsrChange>,
    followers: BTreeMap<i32, Follower>,
    /// Followers that may not join the ISR now (fenced or shutting down, KIP-841): they are
    /// never proposed, and do not hold the high watermark unless already in the ISR.
    ineligible: BTreeSet<i32>,
    leader_leo: i64,
    high_watermark: i64,
}

impl LeaderState {
    /// Becomes the leader `assignment` names. The log's end and its high watermark are where
    /// the local log stands; followers start unknown (log end -1), and those in the ISR
    /// caught up as of `now_ms`, as Kafka assumes for the ISR a leader inherits.
    pub fn new(
        assignment: &LeaderAndIsr,
        log_end_offset: i64,
        high_watermark: i64,
        now_ms: i64,
        config: LeaderConfig,
    ) -> Result<Self, PartitionError> {
        let LeaderAndIsr {
            leader,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
        } = assignment;
        let leader = *leader;
        if !replicas.contains(&leader) {
            return Err(PartitionError::NotAReplica(leader));
        }
        if let Some(stranger) = isr.iter().find(|r| !replicas.contains(r)) {
            return Err(PartitionError::NotAReplica(*stranger));
        }
        if high_watermark > log_end_offset || high_watermark < 0 {
            return Err(PartitionError::InvalidOffsets {
                high_watermark,
                log_end_offset,
            });
        }
        let mut isr: BTreeSet<i32> = isr.iter().copied().collect();
        isr.insert(leader);
        let followers = replicas
            .iter()
            .filter(|r| **r != leader)
            .map(|r| {
                (
                    *r,
                    Follower {
                        log_end_offset: -1,
                        log_start_offset: -1,
                        last_caught_up_ms: if isr.contains(r) { now_ms } else { 0 },
                        last_fetch_leader_leo: -1,
                        last_fetch_ms: 0,
                    },
                )
            })
            .collect();
        Ok(LeaderState {
            leader,
            leader_epoch: *leader_epoch,
            partition_epoch: *partition_epoch,
            epoch_start_offset: log_end_offset,
            config,
            isr,
            pending: None,
            followers,
            ineligible: BTreeSet::new(),
            leader_leo: log_end_offset,
            high_watermark,
        })
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Applies changed settings (an altered `min.insync.replicas`) at once, as Kafka reads
    /// them on every produce: the next append and every acknowledgement still waiting are
    /// judged by them.
    pub fn set_config(&mut self, config: LeaderConfig) {
        self.config = config;
    }

    /// The log end offset when this leader's epoch began (Kafka's
    /// `leaderEpochStartOffsetOpt`). Until the high watermark reaches it, the leader cannot
    /// tell where the committed log ends: a record it holds from the previous epoch may be
    /// committed or not.
    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }

    /// The partition epoch of the ISR this leader last saw committed.
    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    /// The ISR the controller committed.
    pub fn isr(&self) -> &BTreeSet<i32> {
        &self.isr
    }

    /// The ISR the high watermark waits for: the committed one plus a replica being added.
    pub fn maximal_isr(&self) -> BTreeSet<i32> {
        match &self.pending {
            Some(change) => self.isr.union(&change.proposed).copied().collect(),
            None => self.isr.clone(),
        }
    }

    pub fn pending_isr_change(&self) -> Option<&IsrChange> {
        self.pending.as_ref()
    }

    /// A follower's log end offset as the leader last saw it (-1 before its first fetch).
    pub fn follower_log_end_offset(&self, replica: i32) -> Option<i64> {
        self.followers.get(&replica).map(|f| f.log_end_offset)
    }

    /// Every follower's progress, by replica id.
    pub fn follower_progress(&self) -> impl Iterator<Item = FollowerProgress> + '_ {
        self.followers.iter().map(|(id, f)| FollowerProgress {
            replica: *id,
            in_isr: self.isr.contains(id),
            log_start_offset: f.log_start_offset,
            log_end_offset: f.log_end_offset,
            last_caught_up_ms: f.last_caught_up_ms,
        })
    }

    /// The log start offset follower `replica` reported with a fetch (Kafka's
    /// `followerStartOffset`). It only tells where a consumer may be sent; it moves neither
    /// the high watermark nor the ISR.
    pub fn on_follower_log_start(&mut self, replica: i32, log_start_offset: i64) {
        if let Some(f) = self.followers.get_mut(&replica) {
            f.log_start_offset = log_start_offset;
        }
    }

    /// The leader's log grew to `log_end_offset` (an append). Returns the new high watermark
    /// if it moved (a single-replica ISR follows the log end).
    pub fn on_append(&mut self, log_end_offset: i64, now_ms: i64) -> Option<i64> {
        assert!(
            log_end_offset >= self.leader_leo,
            "the leader's log end never moves back while it leads"
        );
        self.leader_leo = log_end_offset;
        self.maybe_advance_high_watermark(now_ms)
    }

    /// A fetch from follower `replica` at `fetch_offset` (its log end). Returns the new high
    /// watermark if it moved, and an ISR expansion to propose if the follower may join.
    pub fn on_follower_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<(Option<i64>, Option<IsrChange>), PartitionError> {
        let leader_leo = self.leader_leo;
        let follower = self
            .followers
            .get_mut(&replica)
            .ok_or(PartitionError::NotAReplica(replica))?;
        if fetch_offset < 0 || fetch_offset > leader_leo {
            return Err(PartitionError::FetchOffsetOutOfRange {
                replica,
                fetch_offset,
                log_end_offset: leader_leo,
            });
        }
        if fetch_offset >= leader_leo {
            follower.last_caught_up_ms = now_ms;
        } else if fetch_offset >= follower.last_fetch_leader_leo {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(follower.last_fetch_ms);
        }
        follower.log_end_offset = fetch_offset;
        follower.last_fetch_leader_leo = leader_leo;
        follower.last_fetch_ms = now_ms;
        let hw = self.maybe_advance_high_watermark(now_ms);
        let expand = self.maybe_expand_isr(replica);
        Ok((hw, expand))
    }

    /// The controller changed the replica set without a new leader epoch (a reassignment
    /// adding replicas, KIP-455): new followers start unknown (log end -1, never caught
    /// up), so they neither hold the high watermark nor join the ISR before they fetch and
    /// catch up; followers no longer assigned are forgotten. Kafka's
    /// `Partition.updateAssignmentAndIsr`. A reassignment that drops a replica comes with
    /// a new leader epoch, hence a new leader state, instead.
    pub fn set_replicas(&mut self, replicas: &[i32]) -> Result<(), PartitionError> {
        if !replicas.contains(&self.leader) {
            return Err(PartitionError::NotAReplica(self.leader));
        }
        self.followers.retain(|r, _| replicas.contains(r));
        self.ineligible.retain(|r| replicas.contains(r));
        for r in replicas.iter().filter(|r| **r != self.leader) {
            self.followers.entry(*r).or_insert(Follower {
                log_end_offset: -1,
                log_start_offset: -1,
                last_caught_up_ms: 0,
                last_fetch_leader_leo: -1,
                last_fetch_ms: 0,
            });
        }
        Ok(())
    }

    /// The followers that may join the ISR: those whose brokers are registered and unfenced
    /// (Kafka's `isReplicaIsrEligible`). A fenced broker that still fetches (shutting down,
    /// or back but not yet caught up with the metadata) is neither proposed, which the
    /// controller would refuse, nor waited for by the high watermark. Returns the new high
    /// watermark if it moved.
    pub fn set_isr_eligible(&mut self, eligible: &BTreeSet<i32>, now_ms: i64) -> Option<i64> {
        self.ineligible = self
            .followers
            .keys()
            .filter(|r| !eligible.contains(r))
            .copied()
            .collect();
        self.maybe_advance_high_watermark(now_ms)
    }

    fn maybe_expand_isr(&mut self, replica: i32) -> Option<IsrChange> {
        if self.pending.is_some()
            || self.isr.contains(&replica)
            || self.ineligible.contains(&replica)
        {
            return None;
        }
        let leo = self.followers.get(&replica)?.log_end_offset;
        if leo < self.high_watermark || leo < self.epoch_start_offset {
            return None;
        }
        let mut proposed = self.isr.clone();
        proposed.insert(replica);
        Some(self.propose(proposed))
    }

    /// ISR members (other than the leader) not caught up for `replica.lag.time.max.ms`:
    /// the shrink to propose, if any and if no change is pending.
    pub fn maybe_shrink_isr(&mut self, now_ms: i64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .filter(|r| **r != self.leader)
            .filter(|r| {
                self.followers.get(r).is_some_and(|f| {
                    !f.is_caught_up(self.leader_leo, now_ms, self.config.replica_lag_time_max_ms)
                })
            })
            .copied()
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let proposed = self
            .isr
            .iter()
            .filter(|r| !lagging.contains(r))
            .copied()
            .collect();
        Some(self.propose(proposed))
    }

    fn propose(&mut self, proposed: BTreeSet<i32>) -> IsrChange {
        debug_assert!(proposed.contains(&self.leader));
        let change = IsrChange {
            proposed,
            partition_epoch: self.partition_epoch,
        };
        self.pending = Some(change.clone());
        change
    }

    /// The controller committed an ISR (the pending change or another one) at
    /// `partition_epoch`. Returns the new high watermark if it moved.
    pub fn on_isr_committed(
        &mut self,
        isr: &[i32],
        partition_epoch: i32,
        now_ms: i64,
    ) -> Result<Option<i64>, PartitionError> {
        if partition_epoch < self.partition_epoch {
            return Err(PartitionError::StalePartitionEpoch {
                got: partition_epoch,
                current: self.partition_epoch,
            });
        }
        if let Some(stranger) = isr
            .iter()
            .find(|r| **r != self.leader && !self.followers.contains_key(r))
        {
            return Err(PartitionError::NotAReplica(*stranger));
        }
        self.isr = isr.iter().copied().collect();
        self.isr.insert(self.leader);
        self.partition_epoch = partition_epoch;
        self.pending = None;
        Ok(self.maybe_advance_high_watermark(now_ms))
    }

    /// The controller refused the pending change. Only a refusal that says the change was not
    /// applied (INELIGIBLE_REPLICA, INVALID_REQUEST) drops it; the next fetch or shrink check
    /// proposes again from the committed ISR.
    ///
    /// The others (INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH, ...) mean the controller's
    /// state moved on, possibly by committing this very change whose answer was lost. Dropping
    /// the pending change then would let the high watermark stop waiting for a replica the
    /// controller already counts in the ISR, and an acknowledged record could be lost (found by
    /// strata-sim, `STRATA_SIM_BUG=drop-pending-isr STRATA_SIM_PROFILE=harsh
    /// STRATA_SIM_SEED=347`). It is kept until new metadata arrives
    /// ([`Self::on_isr_committed`]), as Kafka does.
    pub fn on_isr_change_refused(&mut self, refusal: IsrChangeRefusal) -> RefusedIsrChange {
        if refusal.change_not_applied() {
            self.pending = None;
            RefusedIsrChange::Dropped
        } else {
            RefusedIsrChange::KeptUntilMetadata
        }
    }

    fn maybe_advance_high_watermark(&mut self, now_ms: i64) -> Option<i64> {
        let maximal = self.maximal_isr();
        let lag = self.config.replica_lag_time_max_ms;
        let mut candidate = self.leader_leo;
        for (id, f) in &self.followers {
            // A caught-up, eligible replica about to be proposed for the ISR holds the high
            // watermark too, so that it does not join behind it.
            let counts = maximal.contains(id)
                || (f.log_end_offset >= self.high_watermark
                    && !self.ineligible.contains(id)
                    && f.is_caught_up(self.leader_leo, now_ms, lag));
            if counts && f.log_end_offset < candidate {
                candidate = f.log_end_offset;
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }

    /// `acks=all` before the append: NOT_ENOUGH_REPLICAS when the committed ISR is smaller
    /// than `min.insync.replicas`.
    pub fn check_enough_replicas(&self) -> Result<(), PartitionError> {
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(PartitionError::NotEnoughReplicas {
                isr: self.isr.len(),
                min_insync_replicas: self.config.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// `acks=all` after the append of records ending before `required_offset` (the last
    /// offset + 1): done once the high watermark reached it.
    pub fn ack_state(&self, required_offset: i64) -> AckState {
        if self.high_watermark < required_offset {
            AckState::Waiting
        } else if self.isr.len() < self.config.min_insync_replicas {
            AckState::DoneWithTooFewReplicas
        } else {
            AckState::Done
        }
    }
}
