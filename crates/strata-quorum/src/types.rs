//! The Raft type configuration and the data that travels through the replicated log.
//!
//! An entry's application data is a [`ProposalData`]: a batch of metadata records together with
//! the offset of the image it was built from. Applying it is deterministic on every node, so
//! every node's image at metadata offset `n` is the same image.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use strata_meta::MetadataRecord;

/// Node ids are Kafka's node ids (`node.id`), non-negative by validation at start.
pub type NodeId = i32;

openraft::declare_raft_types!(
    /// Strata's Raft types: metadata proposals in, apply outcomes out, the image as snapshot.
    pub TypeConfig:
        D = ProposalData,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Raft = openraft::Raft<TypeConfig>;

/// One optimistic metadata commit: `records` apply only if the image is still the one at
/// `base_offset` when the entry is applied (KRaft's controller does the same check under its
/// single-threaded event loop; here the Raft log order plays that role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalData {
    pub base_offset: u64,
    pub records: Vec<MetadataRecord>,
}

/// What applying one log entry did to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// The batch applied; the image is now at `offset`.
    Committed { offset: u64 },
    /// The image had moved on from the proposal's base; nothing changed.
    Conflict { current_offset: u64 },
    /// A blank (new leader) or membership entry: the image is unchanged.
    Unchanged,
}
