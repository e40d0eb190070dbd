//! strata-partition: partition replication (Kafka's `Partition` and the ISR design), as
//! sans-IO state machines that take events and a clock, so that they run the same under the
//! broker and under deterministic simulation.
//!
//! Issue 6 in progress: [`LeaderState`] is the leader's side (follower progress, ISR
//! expansion and shrinking through the controller, the high watermark, `acks=all`); the
//! broker does not use it yet.

mod error;
mod leader;
#[cfg(test)]
mod tests;

pub use error::PartitionError;
pub use leader::{AckState, IsrChange, LeaderAndIsr, LeaderConfig, LeaderState};
