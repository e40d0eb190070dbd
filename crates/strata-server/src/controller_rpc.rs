//! The messages of the controller listener's broker RPCs (KRaft's BrokerRegistration,
//! BrokerHeartbeat and AlterPartition), as JSON over HTTP to whichever node leads the quorum
//! (`Quorum::call_leader`). Both sides use them: the active controller
//! ([`crate::controller_service`]) answers, brokers ([`crate::broker_lifecycle`],
//! [`crate::replication`]) ask.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const REGISTER_PATH: &str = "/controller/v1/register";
pub const HEARTBEAT_PATH: &str = "/controller/v1/heartbeat";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub broker_epoch: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// The offset of the broker's metadata image: it is unfenced only once this reaches its
    /// registration.
    pub metadata_offset: u64,
    /// Controlled shutdown: fence me now rather than after the session timeout.
    pub want_shutdown: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub fenced: bool,
    /// The controller does not know this epoch (a newer registration, or none): register again.
    pub register_again: bool,
}

pub const ALTER_PARTITION_PATH: &str = "/controller/v1/alter-partition";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// The committed ISR and partition epoch, or a Kafka error code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterPartitionResponse {
    pub error_code: i16,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}
