//! The driver: a discrete-event scheduler over one seeded random stream. Every event (a
//! message delivered, a broker's or the controller's timer, a client's produce, a restart,
//! a link coming back) sits in one queue ordered by time, then by insertion; faults are drawn
//! before each step of the chaos phase. After each step the checker runs.
//!
//! Cost: O(log n) per event for the queue, O(replicas) for the incremental checks, and
//! O(log length x replicas) every `FULL_CHECK_EVERY_STEPS` steps. Memory: the logs (one
//! record is 16 bytes) and the messages in flight (bounded by the traffic of the last
//! `max_delay_ms`, plus a paused broker's backlog).

use std::collections::{BTreeMap, BTreeSet};

use strata_meta::partition_change::NO_LEADER;

use crate::broker::{Broker, Ctx, Effect, Role};
use crate::checker::{Checker, FULL_CHECK_EVERY_STEPS};
use crate::config::{Bug, SimConfig};
use crate::controller::Controller;
use crate::message::{Body, Message, NodeId, CONTROLLER};
use crate::report::{Failure, Invariant, Report, Stats, Violation};
use crate::rng::Rng;

/// The controller's timer (session expiry).
const CONTROLLER_TICK_MS: i64 = 25;
/// How often the heal phase looks for convergence (it compares whole logs).
const CONVERGENCE_CHECK_EVERY_STEPS: u64 = 16;

#[derive(Debug)]
enum Event {
    Deliver(Message),
    BrokerTick { node: NodeId, incarnation: u32 },
    ControllerTick,
    Produce,
    Restart { node: NodeId },
    Reconnect { a: NodeId, b: NodeId },
}

/// Runs one simulation to the end: the chaos phase, then healing until convergence.
pub fn run(config: &SimConfig) -> Result<Report, Failure> {
    if let Err(e) = config.validate() {
        panic!("invalid simulation config: {e}");
    }
    let mut sim = Simulation::new(config.clone());
    sim.run()
}

struct Simulation {
    config: SimConfig,
    rng: Rng,
    now_ms: i64,
    /// `(time, insertion number)`: equal times keep their insertion order.
    queue: BTreeMap<(i64, u64), Event>,
    next_seq: u64,
    controller: Controller,
    /// No controller is active before this time (a failover's election).
    controller_down_until_ms: i64,
    /// Broker `id` is at index `id - 1`.
    brokers: Vec<Broker>,
    /// Links that drop everything, as `(lower id, higher id)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    checker: Checker,
    stats: Stats,
    step: u64,
    next_record_id: u64,
    healing: bool,
    out: Vec<(NodeId, Body)>,
    effects: Vec<Effect>,
}

impl Simulation {
    fn new(config: SimConfig) -> Self {
        let ids: Vec<NodeId> = (1..=config.replicas as NodeId).collect();
        let unclean = config.bug == Some(Bug::UncleanElection);
        let mut sim = Simulation {
            rng: Rng::new(config.seed),
            now_ms: 0,
            queue: BTreeMap::new(),
            next_seq: 0,
            controller: Controller::new(&ids, config.session_timeout_ms, unclean, 0),
            controller_down_until_ms: 0,
            brokers: ids.iter().map(|id| Broker::new(*id)).collect(),
            cut: BTreeSet::new(),
            checker: Checker::new(!unclean),
            stats: Stats::default(),
            step: 0,
            next_record_id: 0,
            healing: false,
            out: Vec::new(),
            effects: Vec::new(),
            config,
        };
        for id in ids {
            let tick = sim.rng.between(0, sim.config.tick_interval_ms);
            sim.schedule(
                tick,
                Event::BrokerTick {
                    node: id,
                    incarnation: 0,
                },
            );
            // The registration every broker starts with, as if it read the metadata log.
            let registration = sim.controller.registration().clone();
            sim.with_broker(id, |b, ctx| {
                b.handle(CONTROLLER, Body::Metadata(registration), ctx)
            });
        }
        sim.schedule(CONTROLLER_TICK_MS, Event::ControllerTick);
        let first_produce = sim.rng.between(0, sim.config.produce_interval_ms.1);
        sim.schedule(first_produce, Event::Produce);
        sim
    }

    fn run(&mut self) -> Result<Report, Failure> {
        self.after_step()?;
        for _ in 0..self.config.chaos_steps {
            self.chaos();
            self.step()?;
        }
        self.heal();
        let mut converged = false;
        for i in 0..self.config.heal_steps_max {
            self.step()?;
            if i.is_multiple_of(CONVERGENCE_CHECK_EVERY_STEPS) && self.converged() {
                converged = true;
                break;
            }
        }
        if !converged {
            return Err(self.failure(Violation::new(
                Invariant::Convergence,
                format!(
                    "no convergence {} steps after healing: {}",
                    self.config.heal_steps_max,
                    self.describe_cluster()
                ),
            )));
        }
        let result = self.checker.check_full(&mut self.brokers).and_then(|()| {
            let leader = self.controller.registration().leader;
            self.checker
                .check_all_acked_in(leader, &self.broker(leader).log)
        });
        result.map_err(|v| self.failure(v))?;
        self.stats.sim_time_ms = self.now_ms;
        let registration = self.controller.registration();
        Ok(Report {
            seed: self.config.seed,
            stats: self.stats.clone(),
            log_end_offset: self.broker(registration.leader).log.log_end_offset(),
            leader_epoch: registration.leader_epoch,
        })
    }

    fn failure(&self, violation: Violation) -> Failure {
        Failure {
            seed: self.config.seed,
            bug: self.config.bug.map(Bug::name),
            profile: self.config.profile.name(),
            step: self.step,
            now_ms: self.now_ms,
            violation,
        }
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("{:>7} ms #{:<6} {}", self.now_ms, self.step, line());
        }
    }

    fn schedule(&mut self, after_ms: i64, event: Event) {
        self.next_seq += 1;
        self.queue
            .insert((self.now_ms + after_ms, self.next_seq), event);
    }

    fn broker(&self, id: NodeId) -> &Broker {
        &self.brokers[(id - 1) as usize]
    }

    fn broker_mut(&mut self, id: NodeId) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }

    /// Runs `f` on broker `id` with a context, then sends what it said.
    fn with_broker(&mut self, id: NodeId, f: impl FnOnce(&mut Broker, &mut Ctx)) {
        let mut ctx = Ctx {
            now_ms: self.now_ms,
            config: &self.config,
            rng: &mut self.rng,
            out: &mut self.out,
            effects: &mut self.effects,
            stats: &mut self.stats,
        };
        f(&mut self.brokers[(id - 1) as usize], &mut ctx);
        self.send_all(id);
    }

    /// Sends `self.out` from `from` over the network: each message is lost, or arrives once
    /// or twice, each copy after its own delay.
    fn send_all(&mut self, from: NodeId) {
        let from_incarnation = if from == CONTROLLER {
            0
        } else {
            self.broker(from).incarnation
        };
        for (to, body) in std::mem::take(&mut self.out) {
            self.stats.messages_sent += 1;
            let network = self.config.network;
            if !self.healing && self.rng.chance(network.loss_per_million) {
                self.stats.messages_lost += 1;
                self.trace(|| format!("lost {from}->{to} {}", body.describe()));
                continue;
            }
            let copies = if body.may_duplicate() && self.rng.chance(network.duplicate_per_million) {
                self.stats.messages_duplicated += 1;
                2
            } else {
                1
            };
            let to_incarnation = if to == CONTROLLER {
                0
            } else {
                self.broker(to).incarnation
            };
            for _ in 0..copies {
                let delay = self.rng.between(network.min_delay_ms, network.max_delay_ms);
                let message = Message {
                    from,
                    from_incarnation,
                    to,
                    to_incarnation,
                    body: body.clone(),
                };
                self.schedule(delay, Event::Deliver(message));
            }
        }
    }

    fn step(&mut self) -> Result<(), Failure> {
        self.step += 1;
        self.stats.steps += 1;
        let Some(((at_ms, _), event)) = self.queue.pop_first() else {
            return Err(self.failure(Violation::new(Invariant::Model, "no event left")));
        };
        debug_assert!(at_ms >= self.now_ms, "time never goes back");
        self.now_ms = at_ms;
        self.dispatch(event);
        self.after_step()
    }

    /// Checks after every step: the controller's changes, the incremental invariants, what
    /// the brokers reported, and every `FULL_CHECK_EVERY_STEPS` the full ones.
    fn after_step(&mut self) -> Result<(), Failure> {
        for change in std::mem::take(&mut self.controller.changes) {
            self.stats.controller_changes += 1;
            self.trace(|| format!("controller: {} -> {:?}", change.cause, change.after));
            self.checker
                .on_controller_change(&change)
                .map_err(|v| self.failure(v))?;
        }
        let result = self.checker.check_step(&mut self.brokers);
        result.map_err(|v| self.failure(v))?;
        for effect in std::mem::take(&mut self.effects) {
            let result = match &effect {
                Effect::BecameLeader { node, leader_epoch } => {
                    self.trace(|| format!("broker {node} leads epoch {leader_epoch}"));
                    self.checker.on_became_leader(
                        *node,
                        *leader_epoch,
                        &self.brokers[(*node - 1) as usize].log,
                    )
                }
                Effect::Acked {
                    node,
                    leader_epoch,
                    records,
                } => {
                    self.trace(|| format!("broker {node} (epoch {leader_epoch}) acks {records:?}"));
                    self.checker
                        .on_acked(*node, *leader_epoch, records, &self.brokers)
                }
                Effect::Violation(v) => Err(v.clone()),
            };
            result.map_err(|v| self.failure(v))?;
        }
        if self.step.is_multiple_of(FULL_CHECK_EVERY_STEPS) {
            let result = self.checker.check_full(&mut self.brokers);
            result.map_err(|v| self.failure(v))?;
        }
        Ok(())
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver(message) => self.deliver(message),
            Event::BrokerTick { node, incarnation } => {
                let b = self.broker(node);
                if !b.up || b.incarnation != incarnation {
                    return;
                }
                if b.paused_until_ms > self.now_ms {
                    let wait = b.paused_until_ms - self.now_ms;
                    self.schedule(wait, Event::BrokerTick { node, incarnation });
                    return;
                }
                self.with_broker(node, |b, ctx| b.tick(ctx));
                let next = self.config.tick_interval_ms + self.rng.between(0, 5);
                self.schedule(next, Event::BrokerTick { node, incarnation });
            }
            Event::ControllerTick => {
                if self.controller_active() {
                    self.controller.tick(self.now_ms, &mut self.out);
                    self.send_all(CONTROLLER);
                }
                self.schedule(CONTROLLER_TICK_MS, Event::ControllerTick);
            }
            Event::Produce => self.produce(),
            Event::Restart { node } => {
                if !self.broker(node).up {
                    self.trace(|| format!("broker {node} restarts"));
                    let now_ms = self.now_ms;
                    let b = self.broker_mut(node);
                    b.restart(now_ms);
                    let incarnation = b.incarnation;
                    self.schedule(0, Event::BrokerTick { node, incarnation });
                }
            }
            Event::Reconnect { a, b } => {
                if self.cut.remove(&(a, b)) {
                    self.trace(|| format!("link {a}-{b} back"));
                }
            }
        }
    }

    fn deliver(&mut self, m: Message) {
        let link = (m.from.min(m.to), m.from.max(m.to));
        if self.cut.contains(&link) {
            self.stats.messages_cut += 1;
            self.trace(|| format!("cut {}->{} {}", m.from, m.to, m.body.describe()));
            return;
        }
        // A process that died took its unread messages, both ways, with it.
        if m.from != CONTROLLER && self.config.bug != Some(Bug::NoBrokerEpochs) {
            let sender = self.broker(m.from);
            if !sender.up || sender.incarnation != m.from_incarnation {
                return;
            }
        }
        if m.to == CONTROLLER {
            if !self.controller_active() {
                self.stats.messages_to_no_controller += 1;
                self.trace(|| {
                    format!(
                        "no controller for {}->{} {}",
                        m.from,
                        m.to,
                        m.body.describe()
                    )
                });
                return;
            }
            self.trace(|| format!("{}->{} {}", m.from, m.to, m.body.describe()));
            self.controller.handle(
                self.now_ms,
                m.from,
                m.from_incarnation,
                m.body,
                &mut self.out,
            );
            self.send_all(CONTROLLER);
            return;
        }
        let receiver = self.broker(m.to);
        if !receiver.up || receiver.incarnation != m.to_incarnation {
            return;
        }
        if receiver.paused_until_ms > self.now_ms {
            let wait = receiver.paused_until_ms - self.now_ms;
            self.schedule(wait, Event::Deliver(m));
            return;
        }
        self.trace(|| format!("{}->{} {}", m.from, m.to, m.body.describe()));
        let (from, to) = (m.from, m.to);
        self.with_broker(to, |b, ctx| b.handle(from, m.body, ctx));
    }

    /// A client's produce reaches a broker that believes it leads (a stale leader too).
    fn produce(&mut self) {
        if self.healing {
            return;
        }
        let (low, high) = self.config.produce_interval_ms;
        let next = self.rng.between(low, high);
        self.schedule(next, Event::Produce);
        let now_ms = self.now_ms;
        let leaders: Vec<NodeId> = self
            .brokers
            .iter()
            .filter(|b| b.up && b.paused_until_ms <= now_ms && b.leadership().is_some())
            .map(|b| b.id)
            .collect();
        let Some(node) = self.rng.pick(&leaders) else {
            return;
        };
        let count = self.rng.between(1, 3) as u64;
        let ids: Vec<u64> = (self.next_record_id..self.next_record_id + count).collect();
        self.next_record_id += count;
        self.trace(|| format!("produce {ids:?} to broker {node}"));
        self.with_broker(node, |b, ctx| b.produce(&ids, ctx));
    }

    /// Faults, each with its own chance per step.
    fn chaos(&mut self) {
        let faults = self.config.faults;
        if self.rng.chance(faults.crash_per_million) {
            // Half the time aim at a replica that may lose its unflushed tail, if any.
            let aim = faults.machine_crash && self.rng.chance(500_000);
            let up: Vec<NodeId> = self
                .brokers
                .iter()
                .filter(|b| b.up && (!aim || self.nothing_relies_on(b.id)))
                .map(|b| b.id)
                .collect();
            if let Some(node) = self.rng.pick(&up) {
                self.crash(node);
            }
        }
        if self.rng.chance(faults.pause_per_million) {
            let now_ms = self.now_ms;
            let running: Vec<NodeId> = self
                .brokers
                .iter()
                .filter(|b| b.up && b.paused_until_ms <= now_ms)
                .map(|b| b.id)
                .collect();
            if let Some(node) = self.rng.pick(&running) {
                let pause = self.rng.between(faults.pause_ms.0, faults.pause_ms.1);
                self.stats.pauses += 1;
                self.trace(|| format!("broker {node} pauses for {pause} ms"));
                self.broker_mut(node).paused_until_ms = now_ms + pause;
            }
        }
        if self.rng.chance(faults.cut_per_million) {
            let nodes = self.config.replicas as u64 + 1;
            let a = self.rng.below(nodes) as NodeId;
            let b = self.rng.below(nodes) as NodeId;
            if a != b {
                let link = (a.min(b), a.max(b));
                let length = self.rng.between(faults.cut_ms.0, faults.cut_ms.1);
                self.stats.cuts += 1;
                self.trace(|| format!("link {}-{} cut for {length} ms", link.0, link.1));
                self.cut.insert(link);
                self.schedule(
                    length,
                    Event::Reconnect {
                        a: link.0,
                        b: link.1,
                    },
                );
            }
        }
        if self.rng.chance(faults.metadata_stall_per_million) {
            let now_ms = self.now_ms;
            let up: Vec<NodeId> = self.brokers.iter().filter(|b| b.up).map(|b| b.id).collect();
            if let Some(node) = self.rng.pick(&up) {
                let (low, high) = faults.metadata_stall_ms;
                let stall = self.rng.between(low, high);
                self.stats.metadata_stalls += 1;
                self.trace(|| format!("broker {node}'s metadata stalls for {stall} ms"));
                self.broker_mut(node).metadata_stalled_until_ms = now_ms + stall;
            }
        }
        if self.rng.chance(faults.controller_failover_per_million) && self.controller_active() {
            let (low, high) = faults.controller_failover_ms;
            let takeover = self.now_ms + self.rng.between(low, high);
            self.stats.controller_failovers += 1;
            self.trace(|| format!("the controller fails; a new one takes over at {takeover} ms"));
            self.controller_down_until_ms = takeover;
            self.controller.fail_over(takeover);
        }
        if self.rng.chance(faults.preferred_election_per_million) && self.controller_active() {
            self.trace(|| "preferred leader election".into());
            self.controller.elect_preferred(&mut self.out);
            self.send_all(CONTROLLER);
        }
    }

    /// Whether a controller is active (none during a failover's election).
    fn controller_active(&self) -> bool {
        self.now_ms >= self.controller_down_until_ms
    }

    /// A broker process dies; sometimes the machine, losing the unflushed tail when no ISR
    /// relies on this replica (see the crate documentation).
    fn crash(&mut self, node: NodeId) {
        let machine = self.config.faults.machine_crash
            && self.nothing_relies_on(node)
            && self.rng.chance(750_000);
        let lost = self.brokers[(node - 1) as usize].crash(machine, &mut self.stats);
        self.stats.crashes += 1;
        if lost > 0 {
            self.stats.machine_crashes_losing_records += 1;
            self.stats.records_lost_in_crashes += lost as u64;
        }
        self.trace(|| {
            let kind = if machine { "machine" } else { "process" };
            format!("broker {node} crashes ({kind}, {lost} unflushed records lost)")
        });
        let (low, high) = self.config.faults.restart_after_ms;
        let after = self.rng.between(low, high);
        self.schedule(after, Event::Restart { node });
    }

    /// No ISR relies on `node`'s log: not in the controller's ISR, not leading, not in the
    /// maximal ISR (committed or being added) of any broker that acts as leader. Then no
    /// acknowledged record depends on this copy, and the replica can only lead again after
    /// it rejoins the ISR, which it does from what its log really holds.
    fn nothing_relies_on(&self, node: NodeId) -> bool {
        let registration = self.controller.registration();
        !registration.isr.contains(&node)
            && registration.leader != node
            && self.brokers.iter().all(|b| {
                b.leadership()
                    .is_none_or(|l| !l.state.maximal_isr().contains(&node))
            })
    }

    /// The end of the chaos: links back, crashed brokers restarted, no more loss or
    /// produces. Paused brokers resume on their own.
    fn heal(&mut self) {
        self.trace(|| "heal: links back, crashed brokers restart, no more loss".into());
        self.healing = true;
        self.cut.clear();
        let down: Vec<NodeId> = self
            .brokers
            .iter()
            .filter(|b| !b.up)
            .map(|b| b.id)
            .collect();
        for node in down {
            self.schedule(0, Event::Restart { node });
        }
    }

    /// One leader of every replica in sync, every replica holding exactly its log and its
    /// high watermark, every broker unfenced and current with the metadata.
    fn converged(&self) -> bool {
        let registration = self.controller.registration();
        if registration.leader == NO_LEADER
            || registration.isr.len() != self.config.replicas
            || self.controller.sessions().values().any(|s| s.fenced)
        {
            return false;
        }
        let leader = self.broker(registration.leader);
        let Some(l) = leader.leadership() else {
            return false;
        };
        if l.state.leader_epoch() != registration.leader_epoch
            || l.has_alter_in_flight()
            || leader.log.high_watermark() != leader.log.log_end_offset()
        {
            return false;
        }
        self.brokers.iter().all(|b| {
            b.up && b.is_registered()
                && b.paused_until_ms <= self.now_ms
                && b.known_partition_epoch() == Some(registration.partition_epoch)
                && (b.id == leader.id
                    || matches!(&b.role, Role::Follower(f)
                        if f.leader == leader.id && f.leader_epoch == registration.leader_epoch)
                        && b.log.high_watermark() == leader.log.log_end_offset()
                        && b.log.records() == leader.log.records())
        })
    }

    fn describe_cluster(&self) -> String {
        let mut s = format!("controller {:?}", self.controller.registration());
        for b in &self.brokers {
            let role = match &b.role {
                Role::Idle => "idle".to_string(),
                Role::Leader(l) => format!(
                    "leader of epoch {} isr {:?} pending {:?}",
                    l.state.leader_epoch(),
                    l.state.isr(),
                    l.state.pending_isr_change()
                ),
                Role::Follower(f) => format!(
                    "follower of {} epoch {} {:?}",
                    f.leader, f.leader_epoch, f.phase
                ),
            };
            s.push_str(&format!(
                "; broker {} up={} registered={} known_pe={:?} {role} leo={} hw={}",
                b.id,
                b.up,
                b.is_registered(),
                b.known_partition_epoch(),
                b.log.log_end_offset(),
                b.log.high_watermark()
            ));
        }
        s
    }
}
