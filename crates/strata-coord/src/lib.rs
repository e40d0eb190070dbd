//! Coordinators: state machines that run on top of internal topics.
//!
//! The [`GroupCoordinator`] implements Kafka's classic consumer-group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, offset commits) as a sans-IO state machine: it is fed
//! requests, a reply id for requests that may wait (JoinGroup, SyncGroup), and the clock; it
//! returns completed replies and the [`OffsetsRecord`]s the caller must make durable in
//! `__consumer_offsets`. Sockets, timers and disks stay in the server.

pub mod consumer_group;
pub mod group;
pub mod offsets_topic;
mod record_codec;
pub mod txn;

pub use group::{GroupConfig, GroupCoordinator, PendingReply, ReplyId};
pub use offsets_topic::{partition_for, OffsetsRecord, OFFSETS_TOPIC};
