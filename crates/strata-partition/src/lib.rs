//! strata-partition: partition replication (Kafka's `Partition` and the ISR design), as
//! sans-IO state machines that take events and a clock, so that they run the same under the
//! broker and under deterministic simulation.
//!
//! Issue 6 in progress, not used by the broker yet: [`LeaderState`] is the leader's side
//! (follower progress, ISR expansion and shrinking through the controller, the high
//! watermark, `acks=all`); [`truncation_for`] is the follower's reconciliation with a new
//! leader (OffsetForLeaderEpoch, KIP-101 and KIP-279); [`preferred_read_replica`] is where the
//! leader sends a consumer that says which rack it is in (KIP-392).

mod error;
mod follower;
mod leader;
mod replica_selector;
#[cfg(test)]
mod tests;

pub use error::PartitionError;
pub use follower::{truncation_for, EpochEndOffset, Truncation};
pub use leader::{AckState, FollowerProgress, IsrChange, LeaderAndIsr, LeaderConfig, LeaderState};
pub use replica_selector::{preferred_read_replica, FollowerView};
