//! A broker hosting one replica: the glue the real broker will need around the state
//! machines, written once here so the simulation drives exactly their contracts.
//!
//! - As leader it owns a [`LeaderState`]: produces are appended only after
//!   `check_enough_replicas`, and acknowledged only when `ack_state` says `Done`; follower
//!   fetches go through `on_follower_fetch`; ISR changes it proposes go to the controller one
//!   at a time and come back through `on_isr_committed` / `on_isr_change_refused`.
//! - As follower it reconciles with a new leader through [`truncation_for`], fed by
//!   OffsetForLeaderEpoch answers or a fetch's diverging epoch, then fetches.
//! - It learns leadership only from the controller, and only newer partition epochs: an
//!   equal one says nothing new (and applying it could clear a pending ISR change the
//!   controller may still commit).
//!
//! AlterPartition errors are handled as Kafka's `Partition.handleAlterPartitionError`, by the
//! broker's own code (`LeaderState::on_isr_change_refused`, fed the error's Kafka code):
//! INELIGIBLE_REPLICA and INVALID_REQUEST mean "not applied", so the pending change is
//! dropped; FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION and NOT_LEADER mean "you are out of
//! date", so it stays pending until the metadata brings the controller's state. Dropping it
//! then would let the controller's ISR hold a replica the leader no longer waits for.

use strata_meta::partition_change::{AlterPartitionError, PartitionRegistration, NO_LEADER};
use strata_partition::{
    diverging_epoch, truncation_for, AckState, EpochEndOffset, IsrChange, IsrChangeRefusal,
    LeaderAndIsr, LeaderConfig, LeaderState, PartitionError, RefusedIsrChange, Truncation,
};

use crate::config::{Bug, SimConfig, TruncationMode};
use crate::message::{Body, FetchData, FetchError, NodeId, CONTROLLER};
use crate::replica_log::{Record, ReplicaLog};
use crate::report::{Invariant, Stats, Violation};
use crate::rng::Rng;

/// What a broker's event reports to the simulation besides messages.
#[derive(Clone, Debug)]
pub enum Effect {
    BecameLeader {
        node: NodeId,
        leader_epoch: i32,
    },
    /// An `acks=all` produce answered with success: `(offset, record id)`.
    Acked {
        node: NodeId,
        leader_epoch: i32,
        records: Vec<(i64, u64)>,
    },
    Violation(Violation),
}

/// Everything a broker's event may touch outside the broker.
pub struct Ctx<'a> {
    pub now_ms: i64,
    pub config: &'a SimConfig,
    pub rng: &'a mut Rng,
    pub out: &'a mut Vec<(NodeId, Body)>,
    pub effects: &'a mut Vec<Effect>,
    pub stats: &'a mut Stats,
}

impl Ctx<'_> {
    fn violation(&mut self, invariant: Invariant, detail: String) {
        self.effects
            .push(Effect::Violation(Violation::new(invariant, detail)));
    }
}

/// A broker has one role at a time and the simulation holds few brokers, so the size of the
/// leader variant (its whole `LeaderState`) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Role {
    /// Not registered yet, or the partition has no leader.
    Idle,
    Leader(Leadership),
    Follower(Following),
}

#[derive(Debug)]
pub struct Leadership {
    pub state: LeaderState,
    /// The partition epoch of the ISR `state` holds as committed.
    partition_epoch: i32,
    alter: Option<AlterInFlight>,
    produces: Vec<PendingProduce>,
}

impl Leadership {
    pub fn has_alter_in_flight(&self) -> bool {
        self.alter.is_some()
    }

    /// Hands `LeaderState` an ISR the controller committed (`source` says how it arrived);
    /// a refusal is a model violation: the broker only passes newer partition epochs.
    fn apply_committed_isr(
        &mut self,
        broker: i32,
        registration: &PartitionRegistration,
        source: &str,
        ctx: &mut Ctx,
    ) {
        if let Err(e) =
            self.state
                .on_isr_committed(&registration.isr, registration.partition_epoch, ctx.now_ms)
        {
            ctx.violation(
                Invariant::Model,
                format!("leader {broker}: on_isr_committed {source}: {e}"),
            );
        }
        self.partition_epoch = registration.partition_epoch;
    }
}

/// The AlterPartition request of `LeaderState`'s pending change.
#[derive(Debug)]
struct AlterInFlight {
    request_id: u64,
    sent_at_ms: i64,
    change: IsrChange,
    /// Refused as out of date: no resend, the metadata will settle it.
    awaiting_metadata: bool,
}

/// An appended `acks=all` produce waiting for the high watermark (Kafka's DelayedProduce).
#[derive(Debug)]
struct PendingProduce {
    first_offset: i64,
    ids: Vec<u64>,
    required_offset: i64,
    deadline_ms: i64,
}

#[derive(Debug)]
pub struct Following {
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub phase: Phase,
    /// The request waiting for an answer: `(request id, sent at)`.
    outstanding: Option<(u64, i64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// OffsetForLeaderEpoch rounds before the first fetch.
    Truncating,
    Fetching,
}

#[derive(Debug)]
pub struct Broker {
    pub id: NodeId,
    pub up: bool,
    /// Bumped on every restart: the process, as the controller's session and TCP see it.
    pub incarnation: u32,
    /// Paused until then: its events wait (see `FaultConfig::pause_per_million`).
    pub paused_until_ms: i64,
    /// Registrations received before then are applied only then (the newest one): the
    /// broker's metadata lags while its heartbeats keep its session alive.
    pub metadata_stalled_until_ms: i64,
    stalled_registration: Option<PartitionRegistration>,
    pub log: ReplicaLog,
    registered: bool,
    /// The newest registration learnt from the controller.
    known: Option<PartitionRegistration>,
    pub role: Role,
    next_heartbeat_ms: i64,
    next_register_ms: i64,
    next_isr_check_ms: i64,
    next_flush_ms: i64,
    next_request_id: u64,
}

impl Broker {
    /// A broker of the initial cluster, registered with the controller (incarnation 0).
    pub fn new(id: NodeId) -> Self {
        Broker {
            id,
            up: true,
            incarnation: 0,
            paused_until_ms: 0,
            metadata_stalled_until_ms: 0,
            stalled_registration: None,
            log: ReplicaLog::default(),
            registered: true,
            known: None,
            role: Role::Idle,
            next_heartbeat_ms: 0,
            next_register_ms: 0,
            next_isr_check_ms: 0,
            next_flush_ms: 0,
            next_request_id: 0,
        }
    }

    pub fn known_partition_epoch(&self) -> Option<i32> {
        self.known.as_ref().map(|k| k.partition_epoch)
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// The leadership this broker exercises, if any (it may be a stale one).
    pub fn leadership(&self) -> Option<&Leadership> {
        match &self.role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// The process dies. The log is what the disk holds (everything for a process crash,
    /// the flushed part for a machine crash); everything in memory is gone. Returns the
    /// records lost.
    pub fn crash(&mut self, machine: bool, stats: &mut Stats) -> i64 {
        self.step_down(stats);
        self.up = false;
        self.registered = false;
        self.known = None;
        self.paused_until_ms = 0;
        self.metadata_stalled_until_ms = 0;
        self.stalled_registration = None;
        self.log.recover_after_crash(machine)
    }

    /// A new process on the same disk: it registers before it does anything else.
    pub fn restart(&mut self, now_ms: i64) {
        assert!(!self.up, "only a crashed broker restarts");
        self.up = true;
        self.incarnation += 1;
        self.next_register_ms = now_ms;
        self.next_heartbeat_ms = now_ms;
    }

    fn request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// The broker's timer: flushes, registration, heartbeats, follower requests not
    /// answered in time, the leader's ISR check, AlterPartition resends, produce timeouts.
    pub fn tick(&mut self, ctx: &mut Ctx) {
        let now = ctx.now_ms;
        if now >= self.next_flush_ms {
            self.log.flush();
            let (low, high) = ctx.config.faults.flush_interval_ms;
            self.next_flush_ms = now + ctx.rng.between(low, high);
        }
        if !self.registered {
            if now >= self.next_register_ms {
                ctx.out.push((CONTROLLER, Body::Register));
                self.next_register_ms = now + ctx.config.heartbeat_interval_ms;
            }
            return;
        }
        if now >= self.metadata_stalled_until_ms {
            if let Some(registration) = self.stalled_registration.take() {
                self.on_registration(registration, ctx);
            }
        }
        if now >= self.next_heartbeat_ms {
            let known_partition_epoch = self.known_partition_epoch().unwrap_or(-1);
            ctx.out.push((
                CONTROLLER,
                Body::Heartbeat {
                    known_partition_epoch,
                },
            ));
            self.next_heartbeat_ms = now + ctx.config.heartbeat_interval_ms;
        }
        match &mut self.role {
            Role::Follower(f) => {
                let timeout = ctx.config.request_timeout_ms;
                if f.outstanding.is_none_or(|(_, sent)| now - sent >= timeout) {
                    self.send_follower_request(ctx);
                }
            }
            Role::Leader(l) => {
                if now >= self.next_isr_check_ms {
                    self.next_isr_check_ms = now + ctx.config.replica_lag_time_max_ms / 2;
                    if let Some(change) = l.state.maybe_shrink_isr(now) {
                        ctx.stats.isr_shrinks_proposed += 1;
                        self.next_request_id += 1;
                        send_alter(l, change, self.next_request_id, ctx);
                    }
                }
                let resend = l.alter.as_ref().filter(|a| {
                    !a.awaiting_metadata
                        && now - a.sent_at_ms >= ctx.config.alter_partition_retry_ms
                });
                if let Some(change) = resend.map(|a| a.change.clone()) {
                    self.next_request_id += 1;
                    send_alter(l, change, self.next_request_id, ctx);
                }
                self.settle(ctx);
            }
            Role::Idle => {}
        }
    }

    /// A client's `acks=all` produce of `ids`, arriving at this broker.
    pub fn produce(&mut self, ids: &[u64], ctx: &mut Ctx) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        ctx.stats.produces += 1;
        if l.state.check_enough_replicas().is_err() {
            ctx.stats.not_enough_replicas += 1;
            return;
        }
        let leader_epoch = l.state.leader_epoch();
        let first_offset = self.log.log_end_offset();
        for id in ids {
            if let Err(e) = self.log.append(Record {
                leader_epoch,
                id: *id,
            }) {
                ctx.violation(Invariant::Model, format!("leader {}: {e}", self.id));
                return;
            }
        }
        let required_offset = self.log.log_end_offset();
        l.state.on_append(required_offset, ctx.now_ms);
        l.produces.push(PendingProduce {
            first_offset,
            ids: ids.to_vec(),
            required_offset,
            deadline_ms: ctx.now_ms + ctx.config.produce_timeout_ms,
        });
        self.settle(ctx);
    }

    /// A message from `from`.
    pub fn handle(&mut self, from: NodeId, body: Body, ctx: &mut Ctx) {
        match body {
            Body::RegisterResponse(Ok(registration)) => {
                if !self.registered {
                    self.registered = true;
                    self.next_heartbeat_ms = ctx.now_ms;
                }
                self.apply_registration(registration, ctx);
            }
            Body::RegisterResponse(Err(())) => ctx.stats.duplicate_registrations += 1,
            Body::HeartbeatResponse(registration) | Body::Metadata(registration) => {
                self.on_registration(registration, ctx)
            }
            Body::AlterPartitionResponse { request_id, result } => {
                self.on_alter_response(request_id, result, ctx)
            }
            Body::Fetch {
                request_id,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => {
                let result = self.serve_fetch(
                    from,
                    current_leader_epoch,
                    fetch_offset,
                    last_fetched_epoch,
                    ctx,
                );
                ctx.out
                    .push((from, Body::FetchResponse { request_id, result }));
                self.settle(ctx);
            }
            Body::FetchResponse { request_id, result } => {
                self.on_fetch_response(from, request_id, result, ctx)
            }
            Body::OffsetForLeaderEpoch {
                request_id,
                current_leader_epoch,
                epoch,
            } => {
                let result = match &self.role {
                    Role::Leader(l) => check_leader_epoch(l, current_leader_epoch).map(|()| {
                        let (leader_epoch, end_offset) = self.log.end_offset_for(epoch);
                        EpochEndOffset {
                            leader_epoch,
                            end_offset,
                        }
                    }),
                    _ => Err(FetchError::NotLeaderOrFollower),
                };
                ctx.out.push((
                    from,
                    Body::OffsetForLeaderEpochResponse { request_id, result },
                ));
            }
            Body::OffsetForLeaderEpochResponse { request_id, result } => {
                self.on_epoch_response(from, request_id, result, ctx)
            }
            Body::Register | Body::Heartbeat { .. } | Body::AlterPartition { .. } => {}
        }
    }

    /// A registration pushed or returned by a heartbeat: applied now, or kept (the newest)
    /// until a metadata stall ends.
    fn on_registration(&mut self, registration: PartitionRegistration, ctx: &mut Ctx) {
        if ctx.now_ms < self.metadata_stalled_until_ms {
            let newer = self
                .stalled_registration
                .as_ref()
                .is_none_or(|s| s.partition_epoch < registration.partition_epoch);
            if newer {
                self.stalled_registration = Some(registration);
            }
            return;
        }
        self.apply_registration(registration, ctx);
    }

    /// A registration from the controller: becomes leader, follower or idle as it says.
    fn apply_registration(&mut self, registration: PartitionRegistration, ctx: &mut Ctx) {
        if !self.registered
            || self
                .known_partition_epoch()
                .is_some_and(|known| known >= registration.partition_epoch)
        {
            return;
        }
        self.known = Some(registration.clone());
        if registration.leader == self.id {
            if let Role::Leader(l) = &mut self.role {
                if l.state.leader_epoch() == registration.leader_epoch {
                    // The same leadership, another ISR (the controller fenced a follower, or
                    // committed our change and we missed the answer).
                    if registration.partition_epoch > l.partition_epoch {
                        l.apply_committed_isr(self.id, &registration, "from metadata", ctx);
                        l.alter = None;
                    }
                    self.settle(ctx);
                    return;
                }
            }
            self.become_leader(&registration, ctx);
        } else if registration.leader == NO_LEADER {
            self.step_down(ctx.stats);
        } else {
            if let Role::Follower(f) = &self.role {
                if f.leader == registration.leader && f.leader_epoch == registration.leader_epoch {
                    return;
                }
            }
            self.step_down(ctx.stats);
            self.role = Role::Follower(Following {
                leader: registration.leader,
                leader_epoch: registration.leader_epoch,
                phase: match ctx.config.truncation {
                    TruncationMode::OffsetForLeaderEpoch => Phase::Truncating,
                    TruncationMode::DivergingEpoch => Phase::Fetching,
                },
                outstanding: None,
            });
            self.send_follower_request(ctx);
        }
    }

    fn become_leader(&mut self, registration: &PartitionRegistration, ctx: &mut Ctx) {
        self.step_down(ctx.stats);
        if let Err(e) = self.log.assign_leader_epoch(registration.leader_epoch) {
            ctx.violation(Invariant::Model, format!("broker {}: {e}", self.id));
            return;
        }
        let assignment = LeaderAndIsr {
            leader: self.id,
            leader_epoch: registration.leader_epoch,
            partition_epoch: registration.partition_epoch,
            replicas: registration.replicas.clone(),
            isr: registration.isr.clone(),
        };
        let config = LeaderConfig {
            replica_lag_time_max_ms: ctx.config.replica_lag_time_max_ms,
            min_insync_replicas: ctx.config.min_insync_replicas,
        };
        match LeaderState::new(
            &assignment,
            self.log.log_end_offset(),
            self.log.high_watermark(),
            ctx.now_ms,
            config,
        ) {
            Ok(state) => {
                self.role = Role::Leader(Leadership {
                    state,
                    partition_epoch: registration.partition_epoch,
                    alter: None,
                    produces: Vec::new(),
                });
                self.next_isr_check_ms = ctx.now_ms + ctx.config.replica_lag_time_max_ms / 2;
                ctx.stats.leaderships += 1;
                ctx.effects.push(Effect::BecameLeader {
                    node: self.id,
                    leader_epoch: registration.leader_epoch,
                });
            }
            Err(e) => ctx.violation(
                Invariant::Model,
                format!("broker {}: LeaderState::new({assignment:?}): {e}", self.id),
            ),
        }
    }

    /// Leaves any role; waiting produces fail (NOT_LEADER_OR_FOLLOWER), unacknowledged.
    fn step_down(&mut self, stats: &mut Stats) {
        if let Role::Leader(l) = &self.role {
            stats.produces_failed_leadership_lost += l.produces.len() as u64;
        }
        self.role = Role::Idle;
    }

    /// After any event of a leader: its replica's high watermark follows the state
    /// machine's, and waiting produces complete as `ack_state` says.
    fn settle(&mut self, ctx: &mut Ctx) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        self.log.set_high_watermark(l.state.high_watermark());
        let now = ctx.now_ms;
        let leader_epoch = l.state.leader_epoch();
        let ack_early = ctx.config.bug == Some(Bug::AckBeforeReplicated);
        let mut acked = Vec::new();
        l.produces.retain(|p| {
            let state = if ack_early {
                AckState::Done
            } else {
                l.state.ack_state(p.required_offset)
            };
            match state {
                AckState::Done => {
                    ctx.stats.produces_acked += 1;
                    ctx.stats.records_acked += p.ids.len() as u64;
                    acked.extend(
                        p.ids
                            .iter()
                            .enumerate()
                            .map(|(i, id)| (p.first_offset + i as i64, *id)),
                    );
                    false
                }
                AckState::DoneWithTooFewReplicas => {
                    ctx.stats.not_enough_replicas_after_append += 1;
                    false
                }
                AckState::Waiting if now >= p.deadline_ms => {
                    ctx.stats.produce_timeouts += 1;
                    false
                }
                AckState::Waiting => true,
            }
        });
        if !acked.is_empty() {
            ctx.effects.push(Effect::Acked {
                node: self.id,
                leader_epoch,
                records: acked,
            });
        }
    }

    fn on_alter_response(
        &mut self,
        request_id: u64,
        result: Result<PartitionRegistration, AlterPartitionError>,
        ctx: &mut Ctx,
    ) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(alter) = l.alter.as_mut().filter(|a| a.request_id == request_id) else {
            return;
        };
        match result {
            Ok(registration) => {
                l.alter = None;
                let ours = registration.leader == self.id
                    && registration.leader_epoch == l.state.leader_epoch()
                    && registration.partition_epoch >= l.partition_epoch;
                if !ours {
                    ctx.violation(
                        Invariant::Model,
                        format!(
                            "leader {} at epoch {}/{}: AlterPartition accepted as {registration:?}",
                            self.id,
                            l.state.leader_epoch(),
                            l.partition_epoch
                        ),
                    );
                    return;
                }
                l.apply_committed_isr(self.id, &registration, "from AlterPartition", ctx);
                if self
                    .known_partition_epoch()
                    .is_none_or(|known| known < registration.partition_epoch)
                {
                    self.known = Some(registration);
                }
            }
            Err(error) => {
                ctx.stats.alter_partition_refused += 1;
                // The broker receives the error as a code: decide from the code, as it does.
                let refusal = if ctx.config.bug == Some(Bug::DropPendingIsrOnAnyRefusal) {
                    // The bug: every refusal taken for one that was not applied.
                    IsrChangeRefusal::IneligibleReplica
                } else {
                    IsrChangeRefusal::from_error_code(error.kafka_error_code())
                };
                match l.state.on_isr_change_refused(refusal) {
                    RefusedIsrChange::Dropped => l.alter = None,
                    RefusedIsrChange::KeptUntilMetadata => alter.awaiting_metadata = true,
                }
            }
        }
        self.settle(ctx);
    }

    /// The leader's side of a fetch: epoch checks, the diverging-epoch check (`diverging_epoch`,
    /// as the broker's, before the follower's progress is recorded, as Kafka does), then
    /// `on_follower_fetch`.
    fn serve_fetch(
        &mut self,
        from: NodeId,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: Option<i32>,
        ctx: &mut Ctx,
    ) -> Result<FetchData, FetchError> {
        let Role::Leader(l) = &mut self.role else {
            return Err(FetchError::NotLeaderOrFollower);
        };
        check_leader_epoch(l, current_leader_epoch)?;
        if ctx.config.bug != Some(Bug::SkipTruncation) {
            let log = &self.log;
            if let Some(answer) =
                diverging_epoch(last_fetched_epoch, fetch_offset, |e| log.end_offset_for(e))
            {
                ctx.stats.diverging_epoch_answers += 1;
                return Ok(FetchData::Diverging(answer));
            }
        }
        match l.state.on_follower_fetch(from, fetch_offset, ctx.now_ms) {
            Ok((_, expand)) => {
                if let Some(change) = expand {
                    ctx.stats.isr_expansions_proposed += 1;
                    self.next_request_id += 1;
                    send_alter(l, change, self.next_request_id, ctx);
                }
            }
            Err(PartitionError::FetchOffsetOutOfRange { log_end_offset, .. }) => {
                ctx.stats.offset_out_of_range += 1;
                return Err(FetchError::OffsetOutOfRange { log_end_offset });
            }
            Err(e) => {
                ctx.violation(
                    Invariant::Model,
                    format!(
                        "leader {}: on_follower_fetch({from}, {fetch_offset}): {e}",
                        self.id
                    ),
                );
                return Err(FetchError::NotLeaderOrFollower);
            }
        }
        let end =
            (fetch_offset + ctx.config.fetch_max_records as i64).min(self.log.log_end_offset());
        Ok(FetchData::Records {
            fetch_offset,
            records: self.log.records()[fetch_offset as usize..end as usize].to_vec(),
            high_watermark: l.state.high_watermark(),
        })
    }

    /// The answer to the follower's outstanding request, if `request_id` is it.
    fn take_answer(&mut self, from: NodeId, request_id: u64, phase: Phase) -> bool {
        match &mut self.role {
            Role::Follower(f)
                if f.leader == from
                    && f.phase == phase
                    && f.outstanding.is_some_and(|(id, _)| id == request_id) =>
            {
                f.outstanding = None;
                true
            }
            _ => false,
        }
    }

    fn on_fetch_response(
        &mut self,
        from: NodeId,
        request_id: u64,
        result: Result<FetchData, FetchError>,
        ctx: &mut Ctx,
    ) {
        if !self.take_answer(from, request_id, Phase::Fetching) {
            return;
        }
        match result {
            Ok(FetchData::Records {
                fetch_offset,
                records,
                high_watermark,
            }) => {
                if fetch_offset != self.log.log_end_offset() {
                    ctx.violation(
                        Invariant::Model,
                        format!(
                            "follower {}: records from {fetch_offset} for a log ending at {}",
                            self.id,
                            self.log.log_end_offset()
                        ),
                    );
                    return;
                }
                for record in &records {
                    if let Err(e) = self.log.append(*record) {
                        ctx.violation(Invariant::Model, format!("follower {}: {e}", self.id));
                        return;
                    }
                }
                self.log.set_high_watermark(high_watermark);
                if !records.is_empty() {
                    self.send_follower_request(ctx);
                }
            }
            Ok(FetchData::Diverging(answer)) => {
                self.truncate(answer, ctx);
                self.send_follower_request(ctx);
            }
            Err(FetchError::OffsetOutOfRange { log_end_offset }) => {
                // Kafka's fallback: a follower past the leader's end truncates to it.
                if self.log.log_end_offset() > log_end_offset {
                    self.truncate_log(log_end_offset, ctx);
                }
                self.send_follower_request(ctx);
            }
            Err(_) => {}
        }
    }

    fn on_epoch_response(
        &mut self,
        from: NodeId,
        request_id: u64,
        result: Result<EpochEndOffset, FetchError>,
        ctx: &mut Ctx,
    ) {
        if !self.take_answer(from, request_id, Phase::Truncating) {
            return;
        }
        let Ok(answer) = result else {
            return;
        };
        if let Truncation::Done(_) = self.truncate(answer, ctx) {
            if let Role::Follower(f) = &mut self.role {
                f.phase = Phase::Fetching;
            }
        }
        self.send_follower_request(ctx);
    }

    /// Applies the leader's answer through `truncation_for`.
    fn truncate(&mut self, answer: EpochEndOffset, ctx: &mut Ctx) -> Truncation {
        let log_end_offset = self.log.log_end_offset();
        let step = truncation_for(answer, log_end_offset, self.log.high_watermark(), |epoch| {
            self.log.end_offset_for(epoch)
        });
        if ctx.config.bug == Some(Bug::SkipTruncation) {
            return Truncation::Done(log_end_offset);
        }
        let (Truncation::Done(offset) | Truncation::AskAgain { offset, .. }) = step;
        self.truncate_log(offset, ctx);
        if let Truncation::AskAgain { epoch, .. } = step {
            ctx.stats.truncation_rounds_ask_again += 1;
            if self.log.latest_epoch() != Some(epoch) {
                ctx.violation(
                    Invariant::Model,
                    format!(
                        "follower {}: truncation_for({answer:?}) asks again about epoch {epoch}, \
                         but after truncating to {offset} the latest epoch is {:?}",
                        self.id,
                        self.log.latest_epoch()
                    ),
                );
            }
        }
        step
    }

    fn truncate_log(&mut self, offset: i64, ctx: &mut Ctx) {
        let (end, high_watermark) = (self.log.log_end_offset(), self.log.high_watermark());
        if !(0..=end).contains(&offset) {
            ctx.violation(
                Invariant::Model,
                format!(
                    "follower {}: truncation to {offset}, outside its log [0, {end}]",
                    self.id
                ),
            );
            return;
        }
        if offset < high_watermark {
            ctx.violation(
                Invariant::ReplicasDisagree,
                format!(
                    "follower {} truncates to {offset}, below its high watermark {high_watermark}",
                    self.id
                ),
            );
        }
        if offset < end {
            ctx.stats.truncations += 1;
            ctx.stats.truncated_records += (end - offset) as u64;
        }
        self.log.truncate_to(offset);
    }

    /// The follower's next request: OffsetForLeaderEpoch while truncating (about its
    /// latest epoch), else a fetch from its log end.
    fn send_follower_request(&mut self, ctx: &mut Ctx) {
        let request_id = self.request_id();
        let Role::Follower(f) = &mut self.role else {
            return;
        };
        if f.phase == Phase::Truncating {
            match self.log.latest_epoch() {
                Some(epoch) => {
                    ctx.out.push((
                        f.leader,
                        Body::OffsetForLeaderEpoch {
                            request_id,
                            current_leader_epoch: f.leader_epoch,
                            epoch,
                        },
                    ));
                    f.outstanding = Some((request_id, ctx.now_ms));
                    return;
                }
                None => f.phase = Phase::Fetching,
            }
        }
        ctx.out.push((
            f.leader,
            Body::Fetch {
                request_id,
                current_leader_epoch: f.leader_epoch,
                fetch_offset: self.log.log_end_offset(),
                last_fetched_epoch: self.log.latest_epoch(),
            },
        ));
        f.outstanding = Some((request_id, ctx.now_ms));
    }
}

/// KIP-320: a request must carry the leader's current epoch.
fn check_leader_epoch(l: &Leadership, current_leader_epoch: i32) -> Result<(), FetchError> {
    let epoch = l.state.leader_epoch();
    match current_leader_epoch.cmp(&epoch) {
        std::cmp::Ordering::Less => Err(FetchError::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(FetchError::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

fn send_alter(l: &mut Leadership, change: IsrChange, request_id: u64, ctx: &mut Ctx) {
    ctx.out.push((
        CONTROLLER,
        Body::AlterPartition {
            request_id,
            leader_epoch: l.state.leader_epoch(),
            partition_epoch: change.partition_epoch,
            isr: change.proposed.iter().copied().collect(),
        },
    ));
    l.alter = Some(AlterInFlight {
        request_id,
        sent_at_ms: ctx.now_ms,
        change,
        awaiting_metadata: false,
    });
}
