//! strata-partition: partition replication (Kafka's `Partition` and the ISR design), as
//! sans-IO state machines that take events and a clock, so that they run the same under the
//! broker and under deterministic simulation.
//!
//! The broker (`strata-server`) and the simulation (`strata-sim`) call the same functions:
//! [`LeaderState`] is the leader's side (follower progress, ISR expansion and shrinking
//! through the controller, what a refused ISR change leaves pending
//! ([`LeaderState::on_isr_change_refused`], from AlterPartition's error code), the high
//! watermark, `acks=all`); [`diverging_epoch`] is the leader's check of a follower's fetch
//! (KIP-595) and [`truncation_for`] the follower's reconciliation with a new leader
//! (OffsetForLeaderEpoch, KIP-101 and KIP-279); [`preferred_read_replica`] is where the
//! leader sends a consumer that says which rack it is in (KIP-392).

mod error;
mod follower;
mod leader;
mod replica_selector;
#[cfg(test)]
mod tests;

pub use error::PartitionError;
pub use follower::{diverging_epoch, truncation_for, EpochEndOffset, Truncation};
pub use leader::{
    AckState, FollowerProgress, IsrChange, IsrChangeRefusal, LeaderAndIsr, LeaderConfig,
    LeaderState, RefusedIsrChange,
};
pub use replica_selector::{preferred_read_replica, FollowerView};
