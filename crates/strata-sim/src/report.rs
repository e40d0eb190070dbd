//! What a run tells: the invariant broken (if any), where, and how often each interesting
//! thing happened (so that a green run also shows it exercised what it claims to).

use std::fmt;

/// The invariants of the crate documentation, numbered as there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// (1) At most one leader per leader epoch; epochs only grow.
    LeaderEpochs,
    /// (2) An acknowledged record is in every later leader's log at its offset.
    AckedRecordLost,
    /// (3) Replicas agree below their high watermarks; none truncates below its own.
    ReplicasDisagree,
    /// (4) A leader's high watermark never moves back while it leads.
    HighWatermarkMovedBack,
    /// (5) `PartitionRegistration::check`, epochs bumped, clean elections only.
    ControllerRules,
    /// The model itself: a log whose structure broke, or a state machine refusing an event
    /// the model believed valid. A bug in the simulation or in the state machine's contract.
    Model,
    /// After every fault healed, the replicas did not converge.
    Convergence,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: Invariant, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

/// A failed run: the seed replays it exactly.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub bug: Option<&'static str>,
    pub profile: &'static str,
    pub step: u64,
    pub now_ms: i64,
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {} (t={} ms): {:?}: {}\n  replay with a trace of every event: ",
            self.seed, self.step, self.now_ms, self.violation.invariant, self.violation.detail
        )?;
        if let Some(bug) = self.bug {
            write!(f, "STRATA_SIM_BUG={bug} ")?;
        }
        if self.profile != "default" {
            write!(f, "STRATA_SIM_PROFILE={} ", self.profile)?;
        }
        write!(
            f,
            "STRATA_SIM_SEED={} cargo test -p strata-sim --test simulation -- --nocapture",
            self.seed
        )
    }
}

/// Counters of one run (or, summed, of many).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub steps: u64,
    pub sim_time_ms: i64,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_cut: u64,
    pub crashes: u64,
    /// Machine crashes that actually lost records.
    pub machine_crashes_losing_records: u64,
    pub records_lost_in_crashes: u64,
    pub pauses: u64,
    pub metadata_stalls: u64,
    pub controller_failovers: u64,
    /// Messages to the controller while none was active.
    pub messages_to_no_controller: u64,
    pub cuts: u64,
    pub controller_changes: u64,
    pub leaderships: u64,
    pub produces: u64,
    pub produces_acked: u64,
    pub records_acked: u64,
    pub not_enough_replicas: u64,
    pub not_enough_replicas_after_append: u64,
    pub produce_timeouts: u64,
    pub produces_failed_leadership_lost: u64,
    pub isr_shrinks_proposed: u64,
    pub isr_expansions_proposed: u64,
    pub alter_partition_refused: u64,
    pub diverging_epoch_answers: u64,
    pub truncations: u64,
    pub truncated_records: u64,
    /// KIP-279: rounds where the follower lacked the leader's epoch.
    pub truncation_rounds_ask_again: u64,
    pub offset_out_of_range: u64,
    pub duplicate_registrations: u64,
}

impl Stats {
    /// Adds another run's counters (the sums of a batch of seeds).
    pub fn add(&mut self, o: &Stats) {
        let Stats {
            steps,
            sim_time_ms,
            messages_sent,
            messages_lost,
            messages_duplicated,
            messages_cut,
            crashes,
            machine_crashes_losing_records,
            records_lost_in_crashes,
            pauses,
            metadata_stalls,
            controller_failovers,
            messages_to_no_controller,
            cuts,
            controller_changes,
            leaderships,
            produces,
            produces_acked,
            records_acked,
            not_enough_replicas,
            not_enough_replicas_after_append,
            produce_timeouts,
            produces_failed_leadership_lost,
            isr_shrinks_proposed,
            isr_expansions_proposed,
            alter_partition_refused,
            diverging_epoch_answers,
            truncations,
            truncated_records,
            truncation_rounds_ask_again,
            offset_out_of_range,
            duplicate_registrations,
        } = self;
        *steps += o.steps;
        *sim_time_ms += o.sim_time_ms;
        *messages_sent += o.messages_sent;
        *messages_lost += o.messages_lost;
        *messages_duplicated += o.messages_duplicated;
        *messages_cut += o.messages_cut;
        *crashes += o.crashes;
        *machine_crashes_losing_records += o.machine_crashes_losing_records;
        *records_lost_in_crashes += o.records_lost_in_crashes;
        *pauses += o.pauses;
        *metadata_stalls += o.metadata_stalls;
        *controller_failovers += o.controller_failovers;
        *messages_to_no_controller += o.messages_to_no_controller;
        *cuts += o.cuts;
        *controller_changes += o.controller_changes;
        *leaderships += o.leaderships;
        *produces += o.produces;
        *produces_acked += o.produces_acked;
        *records_acked += o.records_acked;
        *not_enough_replicas += o.not_enough_replicas;
        *not_enough_replicas_after_append += o.not_enough_replicas_after_append;
        *produce_timeouts += o.produce_timeouts;
        *produces_failed_leadership_lost += o.produces_failed_leadership_lost;
        *isr_shrinks_proposed += o.isr_shrinks_proposed;
        *isr_expansions_proposed += o.isr_expansions_proposed;
        *alter_partition_refused += o.alter_partition_refused;
        *diverging_epoch_answers += o.diverging_epoch_answers;
        *truncations += o.truncations;
        *truncated_records += o.truncated_records;
        *truncation_rounds_ask_again += o.truncation_rounds_ask_again;
        *offset_out_of_range += o.offset_out_of_range;
        *duplicate_registrations += o.duplicate_registrations;
    }
}

/// A run that kept every invariant and converged.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub stats: Stats,
    /// The converged log's length and the last leader epoch.
    pub log_end_offset: i64,
    pub leader_epoch: i32,
}
