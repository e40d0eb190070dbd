//! strata-sim: a deterministic simulation of one replicated partition (issue 6, section 3).
//!
//! It drives the sans-IO state machines the broker will run, unchanged:
//! [`strata_partition::LeaderState`] (follower progress, ISR expansion and shrinking proposed
//! one change at a time, the high watermark, `min.insync.replicas`, `acks=all`),
//! [`strata_partition::truncation_for`] (KIP-101/279 truncation) and
//! [`strata_meta::partition_change::PartitionRegistration`] (the controller's rules), under a
//! seeded schedule of network misbehaviour, crashes, pauses and partitions, and checks
//! Kafka's replication guarantees after every step. A seed replays a run exactly.
//!
//! # The model
//!
//! - **Replicas** (3 by default, 5 for one seed in eight): each broker hosts one replica of
//!   the partition, a log of `(leader epoch, record id)` with Kafka's leader-epoch cache, a
//!   high watermark and a flush point ([`replica_log`]).
//! - **Controller** ([`controller`]): the active controller, holding the
//!   `PartitionRegistration` and the broker sessions. It fails over at random: for a while
//!   (the quorum's election) no controller answers and messages to it are lost, then a new
//!   one takes over with the durable registration and fenced flags and gives every broker
//!   a fresh session, as a newly elected KRaft controller does. A broker whose heartbeats stop for
//!   `session_timeout_ms` is fenced (`on_broker_fenced`: out of the ISR, a new leader from
//!   the ISR). A restarted broker registers as a new process, refused while the old
//!   process's session lives (KRaft's DUPLICATE_BROKER_REGISTRATION), so the old one is
//!   fenced first; it is unfenced (`on_broker_unfenced`) once its heartbeat shows it has
//!   caught up with the metadata. AlterPartition goes through `alter_isr`; preferred-leader
//!   elections happen at random. Unclean election is off. Every change is pushed to every
//!   broker, and heartbeat answers carry the registration too.
//! - **Brokers** ([`broker`]) learn leadership only from the controller. The leader runs a
//!   `LeaderState` with `min.insync.replicas=2`; clients send `acks=all` produces of one to
//!   three records to whichever broker believes it leads (stale leaders included): refused
//!   with NOT_ENOUGH_REPLICAS before the append, then answered with success only when
//!   `ack_state` is `Done` (NOT_ENOUGH_REPLICAS_AFTER_APPEND, a timeout or a lost leadership
//!   are failures). Followers fetch with their fetch offset, last fetched epoch and leader
//!   epoch (KIP-320 fencing both ways); the leader answers records and its high watermark,
//!   or a diverging epoch. On a new leader a follower truncates with `truncation_for`, fed
//!   either by OffsetForLeaderEpoch rounds (even seeds) or by diverging-epoch answers (odd
//!   seeds).
//! - **Network**: every pair of nodes, the controller included. Each message is lost, or
//!   delivered once or twice (never an AlterPartition twice, see
//!   [`message::Body::may_duplicate`]) after an independent delay in `[1, max]` ms, so
//!   messages reorder. A link can be cut for a while. A crashed process loses the messages
//!   it had not read and those it sent that were not read yet (its TCP connections die).
//! - **Faults**: process crashes (the log survives; the high watermark comes back from its
//!   last checkpoint), restarts, pauses (the broker's clock jumps ahead: a GC pause or a
//!   stalled disk; it may come back as a zombie leader the controller has replaced),
//!   metadata stalls (a broker applies no registration for a while though its heartbeats
//!   keep its session), cut links, preferred elections, and machine crashes that lose the
//!   unflushed tail.
//! - **Time**: a discrete-event queue; a step is one event (a delivery, a timer, a produce,
//!   a restart). Brokers tick every ~20 ms (heartbeats every 100, session timeout 600,
//!   `replica.lag.time.max.ms` 250, 1000 or 2500 by seed).
//!
//! ## When a machine crash may lose data
//!
//! Kafka does not fsync on acknowledgement: `acks=all` is durable because every ISR member
//! holds the records, not because any disk does. A replica that loses its unflushed tail
//! while in the ISR breaks that premise: the controller still counts it in sync, may elect
//! it, and acknowledged records are gone. Kafka's guarantee does not cover this (it is what
//! KIP-966's unclean-shutdown handling addresses). So the simulation lets a machine crash
//! lose data only on a replica nothing relies on: not in the controller's ISR, not leading,
//! and not in the maximal ISR (committed or being added) of any broker acting as leader.
//! Such a replica can lead again only after rejoining the ISR, and it rejoins from a fetch
//! that states what its log really holds (messages of the dead process are never read).
//! Any other crash keeps the whole log (a process crash: the page cache survives).
//!
//! # Invariants ([`checker`])
//!
//! 1. At most one leader per leader epoch (from the controller and from every broker that
//!    acts as leader); a broker's successive leaderships have growing epochs; the
//!    controller bumps the epoch by one on every leader change.
//! 2. Every acknowledged record is in the log of every leader of the same or a later epoch,
//!    at its offset: checked when a broker starts leading, when a record is acknowledged
//!    (against every broker then leading), and on the converged leader at the end.
//! 3. Replicas never disagree below their high watermarks: every replica's log below its
//!    high watermark is a prefix of one committed history, and no follower truncates below
//!    its own high watermark.
//! 4. A leader's high watermark never moves back while it leads.
//! 5. `PartitionRegistration::check()` after every change, the partition epoch grows by one,
//!    a leader is never fenced and (unclean election off) comes from the previous ISR.
//!
//! Plus the model's own consistency ([`report::Invariant::Model`]): log structure, and no
//! state machine refusing an event the model believes valid. After the chaos phase every
//! fault heals and the cluster must **converge**: one leader, every replica in the ISR and
//! holding exactly the leader's log and high watermark, every acknowledged record there.
//!
//! Injected bugs ([`config::Bug`]) prove the invariants catch broken rules.
//!
//! # Profiles and tests
//!
//! [`config::Profile::Default`] draws a fault about every 110 steps and loses up to 10% of
//! messages; [`config::Profile::Harsh`] draws one about every 40 steps, loses 20%, pauses brokers just
//! under the session timeout and shortens `replica.lag.time.max.ms`, so that rare
//! interleavings become common. `cargo test -p strata-sim` runs 500 default and 300 harsh
//! seeds of 3,000 chaos steps plus healing (about 4 s in a debug build), checks that the
//! runs exercised what they claim (acknowledgements, both NOT_ENOUGH_REPLICAS errors, ISR
//! changes, truncations, machine crashes that lost records...), and runs each injected bug
//! until an invariant fails. `STRATA_SIM_SWEEP=N cargo test --release -p strata-sim --test
//! simulation -- --ignored` sweeps N more seeds of each profile.
//!
//! # What it found
//!
//! Two contracts the broker must keep around the state machines, each shown by a bug the
//! tests inject (they print the first seed that breaks an invariant, and its replay):
//!
//! - A leader may drop its pending ISR change only on a refusal that says the change was not
//!   applied (INELIGIBLE_REPLICA, INVALID_REQUEST). Its first documentation said "stale epoch"
//!   too; dropping it on INVALID_UPDATE_VERSION, after a lost response to an AlterPartition
//!   the controller did commit, leaves the controller's ISR with a replica the leader's high
//!   watermark no longer waits for, and acknowledged records are lost
//!   ([`config::Bug::DropPendingIsrOnAnyRefusal`]). The decision is now
//!   `LeaderState::on_isr_change_refused`, from the error code, which the broker calls too.
//! - Neither `LeaderState::on_follower_fetch` nor `PartitionRegistration::alter_isr` knows
//!   broker epochs (KIP-903): a fetch of a replica's previous process, read by a paused leader
//!   after the replica restarted without its unflushed tail, puts it back in the ISR with a
//!   log end it no longer has ([`config::Bug::NoBrokerEpochs`]).
//!
//! # Not modelled
//!
//! - The KRaft quorum itself: a failover never loses committed metadata (Raft's promise,
//!   tested in `strata-quorum`); metadata is pushed and pulled, not replicated as a log
//!   (brokers only learn newer partition epochs).
//! - Broker epochs (KIP-903): the model drops the unread messages of a dead process instead
//!   (see above for what happens without either).
//! - Machine crashes of replicas an ISR relies on (see above), disk failures, JBOD.
//! - Asymmetric partitions (a cut link drops both ways) and clock skew (every node reads one
//!   clock; pauses make a node late, not wrong).
//! - Unclean leader election (only as an injected bug), KIP-966's ELR, reassignment
//!   (replicas never change), leader-recovery state, several partitions, transactions,
//!   idempotent producers (a retried produce is a new record), consumers, retention and the
//!   log start offset, tiered storage, fetch sessions, quotas, throttling.
//! - Byte sizes: records are counted, fetches bounded by a record count.
//!
//! # Replaying a seed
//!
//! A failure prints its seed and the command that replays it with a trace of every event:
//! `STRATA_SIM_SEED=N cargo test -p strata-sim --test simulation -- --nocapture`
//! (with `STRATA_SIM_BUG=<name>` and `STRATA_SIM_PROFILE=harsh` when the run had them).

pub mod broker;
pub mod checker;
pub mod config;
pub mod controller;
pub mod message;
pub mod replica_log;
pub mod report;
pub mod rng;
mod sim;

pub use config::{Bug, Profile, SimConfig, TruncationMode};
pub use report::{Failure, Invariant, Report, Stats, Violation};
pub use sim::run;
