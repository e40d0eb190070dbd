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
    /// What the tenants with quotas use on this broker, for the controller to split each
    /// tenant's cluster-wide quota among the brokers by demand.
    #[serde(default)]
    pub tenant_usage: Vec<TenantUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub fenced: bool,
    /// The controller does not know this epoch (a newer registration, or none): register again.
    pub register_again: bool,
    /// This broker's share of each tenant quota; a tenant quota not listed is held whole.
    #[serde(default)]
    pub tenant_shares: Vec<TenantShare>,
}

/// A tenant's rate against one of its quotas on one broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantUsage {
    pub tenant_id: String,
    /// The client-quota key (`producer_byte_rate`, ...).
    pub quota: String,
    /// Over the quota window, in the quota's unit per second.
    pub rate: f64,
    /// The rate is at (or near) the broker's share: the tenant wants more here.
    pub saturated: bool,
}

/// The fraction of a tenant's quota one broker holds the tenant to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantShare {
    pub tenant_id: String,
    pub quota: String,
    pub fraction: f64,
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
