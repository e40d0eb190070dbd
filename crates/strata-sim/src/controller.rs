//! The controller as the simulation runs it: broker sessions (registration, heartbeats,
//! fencing when they stop, unfencing once a broker has caught up with the metadata) around
//! `PartitionRegistration`, which decides every change of the partition.
//!
//! The KRaft quorum is not modelled, only the controller's decisions and the network between
//! it and the brokers; the registration and the fenced flags are durable (in the metadata
//! log), sessions are not. A failover ([`Controller::fail_over`]) therefore keeps the first
//! and starts the second afresh, as a newly elected Kafka controller does. The controller
//! pushes every committed change to every broker and answers heartbeats with the current
//! registration, so a broker that missed a push catches up with its next heartbeat.

use std::collections::{BTreeMap, BTreeSet};

use strata_meta::partition_change::PartitionRegistration;

use crate::message::{Body, NodeId};

/// A broker's session as the controller sees it (Kafka's `BrokerRegistration` + heartbeat
/// tracking). A broker process is identified by its incarnation.
#[derive(Clone, Debug)]
pub struct Session {
    pub incarnation: u32,
    pub fenced: bool,
    /// The session expires (the broker is fenced) if no heartbeat comes by then.
    pub deadline_ms: i64,
}

/// A committed change, for the checker.
#[derive(Clone, Debug)]
pub struct Change {
    pub before: PartitionRegistration,
    pub after: PartitionRegistration,
    /// The brokers unfenced when it was made.
    pub live: BTreeSet<NodeId>,
    pub cause: String,
}

#[derive(Clone, Debug)]
pub struct Controller {
    registration: PartitionRegistration,
    sessions: BTreeMap<NodeId, Session>,
    session_timeout_ms: i64,
    /// `unclean.leader.election.enable`: only under the injected bug.
    unclean: bool,
    /// Changes since the simulation last drained them.
    pub changes: Vec<Change>,
}

impl Controller {
    /// A new partition on `replicas`, every broker registered (incarnation 0) and unfenced.
    pub fn new(replicas: &[NodeId], session_timeout_ms: i64, unclean: bool, now_ms: i64) -> Self {
        let sessions: BTreeMap<NodeId, Session> = replicas
            .iter()
            .map(|r| {
                (
                    *r,
                    Session {
                        incarnation: 0,
                        fenced: false,
                        deadline_ms: now_ms + session_timeout_ms,
                    },
                )
            })
            .collect();
        let live = sessions.keys().copied().collect();
        Controller {
            registration: PartitionRegistration::new(replicas.to_vec(), &live),
            sessions,
            session_timeout_ms,
            unclean,
            changes: Vec::new(),
        }
    }

    pub fn registration(&self) -> &PartitionRegistration {
        &self.registration
    }

    pub fn sessions(&self) -> &BTreeMap<NodeId, Session> {
        &self.sessions
    }

    /// Unfenced brokers: the ones elections and ISR changes may use.
    pub fn live(&self) -> BTreeSet<NodeId> {
        self.sessions
            .iter()
            .filter(|(_, s)| !s.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    /// One message from broker `from` (process `incarnation`). Replies and pushes go to `out`.
    pub fn handle(
        &mut self,
        now_ms: i64,
        from: NodeId,
        incarnation: u32,
        body: Body,
        out: &mut Vec<(NodeId, Body)>,
    ) {
        match body {
            Body::Register => {
                let Some(session) = self.sessions.get_mut(&from) else {
                    return;
                };
                if incarnation < session.incarnation {
                    return; // A dead process's request, read late.
                }
                if session.incarnation != incarnation {
                    if !session.fenced {
                        // KRaft refuses a new process while the old one's session lives: the
                        // old one is fenced (its ISR membership and leadership moved) first.
                        out.push((from, Body::RegisterResponse(Err(()))));
                        return;
                    }
                    session.incarnation = incarnation;
                    session.deadline_ms = now_ms + self.session_timeout_ms;
                }
                out.push((from, Body::RegisterResponse(Ok(self.registration.clone()))));
            }
            Body::Heartbeat {
                known_partition_epoch,
            } => {
                let Some(session) = self.sessions.get_mut(&from) else {
                    return;
                };
                if session.incarnation != incarnation {
                    return;
                }
                session.deadline_ms = now_ms + self.session_timeout_ms;
                let caught_up = known_partition_epoch >= self.registration.partition_epoch;
                if session.fenced && caught_up {
                    session.fenced = false;
                    let live = self.live();
                    if let Some(next) = self.registration.on_broker_unfenced(&live, self.unclean) {
                        self.commit(next, format!("broker {from} unfenced"), out);
                    }
                }
                out.push((from, Body::HeartbeatResponse(self.registration.clone())));
            }
            Body::AlterPartition {
                request_id,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let live = self.live();
                let result =
                    self.registration
                        .alter_isr(from, leader_epoch, partition_epoch, &isr, &live);
                if let Ok(next) = &result {
                    if *next != self.registration {
                        self.commit(next.clone(), format!("AlterPartition from {from}"), out);
                    }
                }
                out.push((from, Body::AlterPartitionResponse { request_id, result }));
            }
            _ => {}
        }
    }

    /// A new active controller takes over at `takeover_ms`: it knows the registration and
    /// which brokers are fenced (the metadata log) but not when they last sent a heartbeat,
    /// so every broker gets a full session from the takeover.
    pub fn fail_over(&mut self, takeover_ms: i64) {
        for session in self.sessions.values_mut() {
            session.deadline_ms = takeover_ms + self.session_timeout_ms;
        }
    }

    /// Fences every broker whose session expired.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<(NodeId, Body)>) {
        let expired: Vec<NodeId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.fenced && s.deadline_ms < now_ms)
            .map(|(id, _)| *id)
            .collect();
        for broker in expired {
            self.sessions.get_mut(&broker).expect("listed above").fenced = true;
            let live = self.live();
            if let Some(next) = self
                .registration
                .on_broker_fenced(broker, &live, self.unclean)
            {
                self.commit(next, format!("broker {broker} fenced"), out);
            }
        }
    }

    /// Preferred-leader election, as an operator or `auto.leader.rebalance.enable` runs it.
    pub fn elect_preferred(&mut self, out: &mut Vec<(NodeId, Body)>) {
        if let Some(next) = self.registration.elect_preferred(&self.live()) {
            self.commit(next, "preferred leader election".into(), out);
        }
    }

    fn commit(
        &mut self,
        next: PartitionRegistration,
        cause: String,
        out: &mut Vec<(NodeId, Body)>,
    ) {
        self.changes.push(Change {
            before: self.registration.clone(),
            after: next.clone(),
            live: self.live(),
            cause,
        });
        self.registration = next;
        for broker in self.sessions.keys() {
            out.push((*broker, Body::Metadata(self.registration.clone())));
        }
    }
}
