//! What brokers and the controller say to each other: the requests of Kafka's replication
//! protocol, cut down to the fields replication decides on.

use strata_meta::partition_change::{AlterPartitionError, PartitionRegistration};
use strata_partition::EpochEndOffset;

use crate::replica_log::Record;

/// Brokers are `1..=replicas`; the controller is 0.
pub type NodeId = i32;
pub const CONTROLLER: NodeId = 0;

/// A message in flight. The incarnations stand for the TCP connection: a process that
/// crashed never reads what was sent to it before, and what it sent but was not yet read is
/// lost with it (see "Not modelled" in the crate documentation).
#[derive(Clone, Debug)]
pub struct Message {
    pub from: NodeId,
    pub from_incarnation: u32,
    pub to: NodeId,
    pub to_incarnation: u32,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// BrokerRegistration of a (re)started broker process.
    Register,
    /// `Err(())`: DUPLICATE_BROKER_REGISTRATION, the previous process's session is alive.
    RegisterResponse(Result<PartitionRegistration, ()>),
    /// BrokerHeartbeat, with how far the broker has caught up with the metadata (the
    /// partition epoch it knows): the controller unfences it once it is current.
    Heartbeat { known_partition_epoch: i32 },
    /// The response carries the current registration (the broker's metadata fetch).
    HeartbeatResponse(PartitionRegistration),
    /// A partition change, pushed to every broker when the controller commits it.
    Metadata(PartitionRegistration),
    AlterPartition {
        request_id: u64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    AlterPartitionResponse {
        request_id: u64,
        result: Result<PartitionRegistration, AlterPartitionError>,
    },
    OffsetForLeaderEpoch {
        request_id: u64,
        current_leader_epoch: i32,
        epoch: i32,
    },
    OffsetForLeaderEpochResponse {
        request_id: u64,
        result: Result<EpochEndOffset, FetchError>,
    },
    Fetch {
        request_id: u64,
        current_leader_epoch: i32,
        fetch_offset: i64,
        /// The follower's latest epoch (KIP-595 truncation on fetch); `None` for an empty log.
        last_fetched_epoch: Option<i32>,
    },
    FetchResponse {
        request_id: u64,
        result: Result<FetchData, FetchError>,
    },
}

impl Body {
    /// Whether the network may deliver this message twice. An AlterPartition request is not
    /// idempotent for the leader's bookkeeping: if one copy is refused (INELIGIBLE_REPLICA,
    /// the leader drops its pending change) and a later copy is applied, the controller's ISR
    /// holds a replica the leader does not wait for. TCP never duplicates; the leader resends
    /// only after every earlier copy has been delivered or lost (`alter_partition_retry_ms` >
    /// twice the longest delay), so the model's duplication stops at this one request.
    pub fn may_duplicate(&self) -> bool {
        !matches!(self, Body::AlterPartition { .. })
    }

    /// One line for the trace: records are summarised, not listed.
    pub fn describe(&self) -> String {
        match self {
            Body::FetchResponse {
                request_id,
                result: Ok(FetchData::Records {
                    fetch_offset,
                    records,
                    high_watermark,
                }),
            } => format!(
                "FetchResponse #{request_id} records [{fetch_offset}, {}) epochs {:?} hw {high_watermark}",
                fetch_offset + records.len() as i64,
                records.first().zip(records.last()).map(|(a, b)| (a.leader_epoch, b.leader_epoch))
            ),
            other => format!("{other:?}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchData {
    Records {
        fetch_offset: i64,
        records: Vec<Record>,
        high_watermark: i64,
    },
    /// The follower's latest epoch ends earlier in the leader's log than its fetch offset, or
    /// the leader does not have it: where the leader's matching epoch ends.
    Diverging(EpochEndOffset),
}

/// Kafka's errors for Fetch and OffsetForLeaderEpoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    NotLeaderOrFollower,
    /// The request's leader epoch is older than the leader's.
    FencedLeaderEpoch,
    /// The request's leader epoch is newer: the receiver has not learnt of it yet.
    UnknownLeaderEpoch,
    /// Only without truncation on fetch (an injected bug): the leader's log end.
    OffsetOutOfRange {
        log_end_offset: i64,
    },
}
