//! What a run simulates: cluster size, Kafka settings, timing, the network's misbehaviour,
//! the faults, and optionally a deliberately broken rule (to prove the checker catches it).

/// How a follower finds where to truncate when it follows a new leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationMode {
    /// OffsetForLeaderEpoch rounds first (KIP-101/279), then fetches.
    OffsetForLeaderEpoch,
    /// Fetch straight away; the leader answers a diverging epoch (KIP-595, Kafka >= 2.7).
    DivergingEpoch,
}

/// A rule deliberately broken, so that a test proves the invariants notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The leader acknowledges an `acks=all` produce as soon as it is in its own log.
    AckBeforeReplicated,
    /// The controller elects a live replica outside the ISR when no ISR member is live
    /// (`unclean.leader.election.enable=true`), and the checker's rule check is off.
    UncleanElection,
    /// Followers never truncate: they take every OffsetForLeaderEpoch answer as "keep
    /// everything", and the leader does not look for a diverging epoch (pre-KIP-101 without
    /// even the truncation to the high watermark).
    SkipTruncation,
    /// The leader drops its pending ISR change on every AlterPartition refusal, including
    /// FENCED_LEADER_EPOCH and INVALID_UPDATE_VERSION, as the first documentation of
    /// `LeaderState`'s refusal handling suggested ("stale epoch"); Kafka keeps it until the
    /// metadata tells. Injected by feeding `on_isr_change_refused` a not-applied refusal.
    DropPendingIsrOnAnyRefusal,
    /// Messages a process sent that the receiver had not read yet are still read after the
    /// sender crashed (as TCP allows: they sit in the receiver's socket buffer), and nothing
    /// tells them from the new process's: Kafka's broker epochs on Fetch and AlterPartition
    /// (KIP-903) are missing, as they are from `PartitionRegistration::alter_isr`. The model
    /// otherwise drops such messages, standing in for KIP-903.
    NoBrokerEpochs,
}

impl Bug {
    pub const ALL: [Bug; 5] = [
        Bug::AckBeforeReplicated,
        Bug::UncleanElection,
        Bug::SkipTruncation,
        Bug::DropPendingIsrOnAnyRefusal,
        Bug::NoBrokerEpochs,
    ];

    /// The name `STRATA_SIM_BUG` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeReplicated => "ack-before-replicated",
            Bug::UncleanElection => "unclean-election",
            Bug::SkipTruncation => "skip-truncation",
            Bug::DropPendingIsrOnAnyRefusal => "drop-pending-isr",
            Bug::NoBrokerEpochs => "no-broker-epochs",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// How hard a run is on the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Faults a few times a second of simulated time, up to 10% loss: what every seed runs.
    Default,
    /// Three to four times the faults, 20% loss, short restarts, pauses just under the
    /// session timeout, rare flushes and a short `replica.lag.time.max.ms`: the rare
    /// interleavings (a leader's metadata lagging while a follower falls behind, a restarted
    /// replica rejoining while a paused leader still holds its old requests) become common.
    Harsh,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Harsh => "harsh",
        }
    }

    pub fn from_name(name: &str) -> Option<Profile> {
        [Profile::Default, Profile::Harsh]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// The network between every pair of nodes (controller included).
#[derive(Clone, Copy, Debug)]
pub struct NetworkConfig {
    /// Every message arrives within `[min_delay_ms, max_delay_ms]` or not at all (a paused
    /// receiver reads it when it resumes). Independent delays reorder messages.
    pub min_delay_ms: i64,
    pub max_delay_ms: i64,
    pub loss_per_million: u32,
    pub duplicate_per_million: u32,
}

/// Faults, drawn before every step of the chaos phase.
#[derive(Clone, Copy, Debug)]
pub struct FaultConfig {
    /// A broker process dies; it restarts after `restart_after_ms`.
    pub crash_per_million: u32,
    /// Whether a crash may be a machine crash that loses the unflushed tail of the log.
    /// Only ever applied to a replica no ISR relies on (see the crate documentation).
    pub machine_crash: bool,
    pub restart_after_ms: (i64, i64),
    /// A broker stops for a while (GC pause, stalled disk): its clock jumps ahead of what it
    /// has processed, it sends nothing, and reads its backlog when it resumes.
    pub pause_per_million: u32,
    pub pause_ms: (i64, i64),
    /// The link between two nodes (the controller is one) drops everything for a while.
    pub cut_per_million: u32,
    pub cut_ms: (i64, i64),
    /// A broker's metadata lags (a slow metadata publisher): it applies no registration for
    /// a while, though its heartbeats keep its session alive.
    pub metadata_stall_per_million: u32,
    pub metadata_stall_ms: (i64, i64),
    /// `kafka-leader-election --election-type PREFERRED`.
    pub preferred_election_per_million: u32,
    /// The active controller dies: no controller answers for `controller_failover_ms` (the
    /// quorum's election), then a new one takes over with the durable registration and
    /// grants every broker a fresh session (sessions are in the old controller's memory).
    pub controller_failover_per_million: u32,
    pub controller_failover_ms: (i64, i64),
    /// How long a broker waits between flushes (`flush.ms`-like).
    pub flush_interval_ms: (i64, i64),
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub profile: Profile,
    pub replicas: usize,
    /// `min.insync.replicas` of the topic; produces use `acks=all`.
    pub min_insync_replicas: usize,
    /// Steps (events) with faults and produces.
    pub chaos_steps: u64,
    /// After the chaos phase everything heals; the cluster must converge within this many.
    pub heal_steps_max: u64,
    pub replica_lag_time_max_ms: i64,
    /// The controller fences a broker whose heartbeats stopped this long ago.
    pub session_timeout_ms: i64,
    pub heartbeat_interval_ms: i64,
    /// A broker's timer: heartbeats, follower requests, ISR checks, flushes.
    pub tick_interval_ms: i64,
    /// A follower resends a fetch or OffsetForLeaderEpoch not answered this long.
    pub request_timeout_ms: i64,
    /// A leader resends an unanswered AlterPartition; must exceed twice the longest delay
    /// (see [`crate::message::Body::may_duplicate`]).
    pub alter_partition_retry_ms: i64,
    pub produce_timeout_ms: i64,
    /// Produces arrive every `[low, high]` ms, each of 1..=3 records.
    pub produce_interval_ms: (i64, i64),
    /// Bound on the records of one fetch response.
    pub fetch_max_records: usize,
    pub truncation: TruncationMode,
    pub network: NetworkConfig,
    pub faults: FaultConfig,
    pub bug: Option<Bug>,
    /// Print every event to stderr.
    pub trace: bool,
}

impl SimConfig {
    /// The run of a seed in the default profile: the seed also picks the variant (truncation mode, machine
    /// crashes, network quality, cluster size), so the seed alone replays a run.
    pub fn for_seed(seed: u64) -> SimConfig {
        SimConfig::new(seed, Profile::Default)
    }

    /// The run of a seed under a profile (see [`SimConfig::for_seed`]).
    pub fn new(seed: u64, profile: Profile) -> SimConfig {
        // A separate stream from the run's, so that variants do not shift the schedule.
        let mut pick = crate::rng::Rng::new(seed ^ 0x5eed_c0f1_6a11_0000);
        let max_delay_ms = pick.between(2, 30);
        let mut config = SimConfig {
            seed,
            profile,
            replicas: if seed % 8 == 7 { 5 } else { 3 },
            min_insync_replicas: 2,
            chaos_steps: 3_000,
            heal_steps_max: 30_000,
            // Below, near and above the session timeout.
            replica_lag_time_max_ms: [250, 1_000, 2_500][pick.below(3) as usize],
            session_timeout_ms: 600,
            heartbeat_interval_ms: 100,
            tick_interval_ms: 20,
            request_timeout_ms: 4 * max_delay_ms + 20,
            alter_partition_retry_ms: 2 * max_delay_ms + 50,
            produce_timeout_ms: 1_500,
            produce_interval_ms: (2, 40),
            fetch_max_records: 16,
            truncation: if seed.is_multiple_of(2) {
                TruncationMode::OffsetForLeaderEpoch
            } else {
                TruncationMode::DivergingEpoch
            },
            network: NetworkConfig {
                min_delay_ms: 1,
                max_delay_ms,
                loss_per_million: pick.between(0, 100_000) as u32,
                duplicate_per_million: pick.between(0, 50_000) as u32,
            },
            faults: FaultConfig {
                crash_per_million: 2_000,
                machine_crash: !seed.is_multiple_of(3),
                restart_after_ms: (20, 2_000),
                pause_per_million: 1_500,
                pause_ms: (50, 1_500),
                cut_per_million: 2_500,
                cut_ms: (50, 2_500),
                metadata_stall_per_million: 1_500,
                metadata_stall_ms: (50, 3_000),
                preferred_election_per_million: 1_500,
                controller_failover_per_million: 500,
                controller_failover_ms: (50, 1_000),
                flush_interval_ms: (20, 400),
            },
            bug: None,
            trace: false,
        };
        if profile == Profile::Harsh {
            config.network.loss_per_million = 200_000;
            config.replica_lag_time_max_ms = 250;
            let faults = &mut config.faults;
            faults.crash_per_million = 6_000;
            faults.restart_after_ms = (10, 300);
            faults.pause_per_million = 6_000;
            faults.pause_ms = (100, config.session_timeout_ms - 10);
            faults.cut_per_million = 6_000;
            faults.metadata_stall_per_million = 6_000;
            faults.controller_failover_per_million = 2_000;
            faults.flush_interval_ms = (200, 2_000);
        }
        config
    }

    /// The rules between settings the model relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.replicas == 0 || self.min_insync_replicas == 0 {
            return Err("at least one replica, min.insync.replicas at least 1".into());
        }
        if self.network.min_delay_ms < 1 || self.network.max_delay_ms < self.network.min_delay_ms {
            return Err("network delays must be in [1, max]".into());
        }
        if self.alter_partition_retry_ms <= 2 * self.network.max_delay_ms {
            return Err(format!(
                "alter_partition_retry_ms {} must exceed twice the longest delay {}",
                self.alter_partition_retry_ms, self.network.max_delay_ms
            ));
        }
        if self.session_timeout_ms <= self.heartbeat_interval_ms {
            return Err("the session timeout must exceed the heartbeat interval".into());
        }
        Ok(())
    }
}
