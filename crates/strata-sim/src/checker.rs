//! The invariants, checked after every step (incrementally, so a step costs O(what changed))
//! and in full every [`FULL_CHECK_EVERY_STEPS`] steps and at the end.
//!
//! Invariant (3) is checked against one history: the *committed log*, the records every
//! replica ever held below its high watermark. Each replica's log below its high watermark
//! must be a prefix of it, which is the same as "any two replicas agree below the smaller of
//! their high watermarks", also across time: a record once below a high watermark never
//! changes at its offset.

use std::collections::BTreeMap;

use strata_meta::partition_change::NO_LEADER;

use crate::broker::{Broker, Role};
use crate::controller::Change;
use crate::message::NodeId;
use crate::replica_log::{Record, ReplicaLog};
use crate::report::{Invariant, Violation};

/// How often the O(log length) checks run (log structure, the committed prefix re-verified
/// from offset 0).
pub const FULL_CHECK_EVERY_STEPS: u64 = 128;

#[derive(Debug)]
pub struct Checker {
    /// (5): refuse a leader from outside the ISR (off only when that bug is injected, so
    /// that the data invariants alone must catch it).
    clean_elections_only: bool,
    /// (1): the leader of each epoch, from the controller and from the brokers.
    leaders: BTreeMap<i32, NodeId>,
    last_epoch_led: BTreeMap<NodeId, i32>,
    /// (4): the last high watermark of each leadership `(node, incarnation, epoch)`.
    leader_high_watermarks: BTreeMap<(NodeId, u32, i32), i64>,
    /// (2): offset -> (record id, leader epoch of the acknowledging leader).
    acked: BTreeMap<i64, (u64, i32)>,
    /// (3): see the module documentation.
    committed: Vec<Record>,
    /// Per replica, the prefix of its log verified against `committed`.
    verified: BTreeMap<NodeId, i64>,
}

impl Checker {
    pub fn new(clean_elections_only: bool) -> Self {
        Checker {
            clean_elections_only,
            leaders: BTreeMap::new(),
            last_epoch_led: BTreeMap::new(),
            leader_high_watermarks: BTreeMap::new(),
            acked: BTreeMap::new(),
            committed: Vec::new(),
            verified: BTreeMap::new(),
        }
    }

    pub fn acked(&self) -> &BTreeMap<i64, (u64, i32)> {
        &self.acked
    }

    fn leader_of(&mut self, epoch: i32, node: NodeId, who: &str) -> Result<(), Violation> {
        match self.leaders.insert(epoch, node) {
            Some(other) if other != node => Err(Violation::new(
                Invariant::LeaderEpochs,
                format!("{who}: broker {node} leads epoch {epoch}, which broker {other} led"),
            )),
            _ => Ok(()),
        }
    }

    /// (5) and the controller's half of (1), on every committed change.
    pub fn on_controller_change(&mut self, change: &Change) -> Result<(), Violation> {
        let (before, after) = (&change.before, &change.after);
        let rule = |detail: String| {
            Err(Violation::new(
                Invariant::ControllerRules,
                format!("{} ({before:?} -> {after:?}): {detail}", change.cause),
            ))
        };
        if let Err(e) = after.check() {
            return rule(e);
        }
        if after.partition_epoch != before.partition_epoch + 1 {
            return rule("the partition epoch did not grow by one".into());
        }
        let epoch_step = after.leader_epoch - before.leader_epoch;
        if after.leader != before.leader && epoch_step != 1 {
            return Err(Violation::new(
                Invariant::LeaderEpochs,
                format!(
                    "{}: leader changed with the epoch going {epoch_step:+}",
                    change.cause
                ),
            ));
        }
        if after.leader == before.leader && epoch_step != 0 {
            return rule("same leader, new leader epoch".into());
        }
        if after.leader == NO_LEADER {
            return Ok(());
        }
        if !change.live.contains(&after.leader) {
            return rule(format!("leader {} is fenced", after.leader));
        }
        if self.clean_elections_only
            && after.leader != before.leader
            && !before.isr.contains(&after.leader)
        {
            return rule(format!("unclean election of {}", after.leader));
        }
        self.leader_of(after.leader_epoch, after.leader, "controller")
    }

    /// (1) and (2) when a broker starts leading: a new epoch for it, and every record
    /// acknowledged so far (by a leader of this epoch or an older one) in its log.
    pub fn on_became_leader(
        &mut self,
        node: NodeId,
        leader_epoch: i32,
        log: &ReplicaLog,
    ) -> Result<(), Violation> {
        self.leader_of(leader_epoch, node, "broker")?;
        if let Some(last) = self.last_epoch_led.insert(node, leader_epoch) {
            if last >= leader_epoch {
                return Err(Violation::new(
                    Invariant::LeaderEpochs,
                    format!("broker {node} leads epoch {leader_epoch} after epoch {last}"),
                ));
            }
        }
        for (offset, (id, acked_epoch)) in &self.acked {
            if *acked_epoch <= leader_epoch {
                check_has(log, *offset, *id, || {
                    format!("broker {node} became leader of epoch {leader_epoch}")
                })?;
            }
        }
        Ok(())
    }

    /// (2) when records are acknowledged: one record per offset, the same as the committed
    /// log has there, and in the log of every leader of this epoch or a newer one.
    pub fn on_acked(
        &mut self,
        node: NodeId,
        leader_epoch: i32,
        records: &[(i64, u64)],
        brokers: &[Broker],
    ) -> Result<(), Violation> {
        for (offset, id) in records {
            if let Some((other, other_epoch)) = self.acked.insert(*offset, (*id, leader_epoch)) {
                if other != *id {
                    return Err(Violation::new(
                        Invariant::AckedRecordLost,
                        format!(
                            "offset {offset} acknowledged twice: record {other} (epoch \
                             {other_epoch}), then record {id} by broker {node} (epoch \
                             {leader_epoch}); the first is lost"
                        ),
                    ));
                }
            }
            if let Some(committed) = self.committed.get(*offset as usize) {
                if committed.id != *id {
                    return Err(Violation::new(
                        Invariant::AckedRecordLost,
                        format!(
                            "broker {node} acknowledged record {id} at offset {offset}, where \
                             record {} is committed",
                            committed.id
                        ),
                    ));
                }
            }
            for b in brokers.iter().filter(|b| b.up) {
                if let Role::Leader(l) = &b.role {
                    if l.state.leader_epoch() >= leader_epoch {
                        check_has(&b.log, *offset, *id, || {
                            format!(
                                "broker {node} (epoch {leader_epoch}) acknowledged it while \
                                 broker {} leads epoch {}",
                                b.id,
                                l.state.leader_epoch()
                            )
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// (3) and (4) after every step, for what changed.
    pub fn check_step(&mut self, brokers: &mut [Broker]) -> Result<(), Violation> {
        for b in brokers.iter_mut() {
            let lowest = b.log.take_lowest_end_since_check();
            let verified = self.verified.entry(b.id).or_insert(0);
            *verified = (*verified).min(lowest);
            let high_watermark = b.log.high_watermark();
            for offset in *verified..high_watermark {
                let record = b.log.records()[offset as usize];
                match self.committed.get(offset as usize) {
                    Some(committed) if *committed != record => {
                        return Err(Violation::new(
                            Invariant::ReplicasDisagree,
                            format!(
                                "broker {} has {record:?} at offset {offset}, below its high \
                                 watermark {high_watermark}, where {committed:?} was committed",
                                b.id
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => self.committed.push(record),
                }
            }
            *verified = (*verified).max(high_watermark);
            if let Role::Leader(l) = &b.role {
                let hw = l.state.high_watermark();
                if hw > b.log.log_end_offset() {
                    return Err(Violation::new(
                        Invariant::Model,
                        format!(
                            "leader {}'s high watermark {hw} is past its log end {}",
                            b.id,
                            b.log.log_end_offset()
                        ),
                    ));
                }
                let key = (b.id, b.incarnation, l.state.leader_epoch());
                if let Some(before) = self.leader_high_watermarks.insert(key, hw) {
                    if hw < before {
                        return Err(Violation::new(
                            Invariant::HighWatermarkMovedBack,
                            format!(
                                "leader {} of epoch {} moved its high watermark from {before} to {hw}",
                                b.id, key.2
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The O(log) checks: every log's structure, and every replica's committed prefix again
    /// from offset 0 (in case the incremental bookkeeping missed a change).
    pub fn check_full(&mut self, brokers: &mut [Broker]) -> Result<(), Violation> {
        for b in brokers.iter() {
            b.log.check().map_err(|e| {
                Violation::new(Invariant::Model, format!("broker {}'s log: {e}", b.id))
            })?;
        }
        self.verified.clear();
        self.check_step(brokers)
    }

    /// (2) at the end: every acknowledged record in the converged leader's log.
    pub fn check_all_acked_in(&self, node: NodeId, log: &ReplicaLog) -> Result<(), Violation> {
        for (offset, (id, _)) in &self.acked {
            check_has(log, *offset, *id, || format!("the converged leader {node}"))?;
        }
        Ok(())
    }
}

fn check_has(
    log: &ReplicaLog,
    offset: i64,
    id: u64,
    context: impl FnOnce() -> String,
) -> Result<(), Violation> {
    match log.records().get(offset as usize) {
        Some(record) if record.id == id => Ok(()),
        other => Err(Violation::new(
            Invariant::AckedRecordLost,
            format!(
                "{}: acknowledged record {id} at offset {offset} is missing, found {other:?}",
                context()
            ),
        )),
    }
}
