//! Coordinators: state machines that run on top of internal topics.
//!
//! The [`GroupCoordinator`] implements Kafka's consumer groups (the classic protocol:
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup; KIP-848's ConsumerGroupHeartbeat; offset
//! commits, fetches and deletes) as a sans-IO state machine made, as in Kafka 4, of a group
//! metadata manager and an offset metadata manager (see [`group`]): it is fed requests, a
//! reply id for requests that may wait (JoinGroup, SyncGroup), and the clock; it returns
//! completed replies and the [`OffsetsRecord`]s the caller must make durable in
//! `__consumer_offsets`. The [`txn::TransactionCoordinator`] does the same for transactions
//! and `__transaction_state`. Sockets, timers and disks stay in the server.

pub mod consumer_group;
pub mod group;
pub mod offsets_topic;
mod record_codec;
pub mod txn;

pub use group::{GroupConfig, GroupCoordinator, PendingReply, ReplyId};
pub use offsets_topic::{partition_for, OffsetsRecord, OFFSETS_TOPIC};
