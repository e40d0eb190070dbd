//! The Raft-replicated metadata log, in KRaft's model, on openraft.
//!
//! Every node keeps the same [`strata_meta::MetadataImage`]: the fold of the metadata record
//! batches committed through Raft. Voters (the controllers) elect a leader; broker-only nodes
//! join as learners and receive the log without voting. A change is proposed optimistically
//! with the offset of the image it was built from ([`Quorum::propose`]); it applies only if
//! that image is still the latest when its log entry is applied, which every node decides the
//! same way.
//!
//! What this crate is not: it knows nothing about what the records mean (that is
//! `strata-meta`'s controller) or about the broker's duties as active controller (the server
//! watches [`Quorum::leader_watch`]).
//!
//! Modules: `config` (what a node is told), `quorum` (the public handle), `describe` (the
//! leader's view for Kafka's DescribeQuorum), `log_store` and
//! `state_machine` (openraft storage on files), `network` and `http` (the transport: JSON over
//! HTTP/1.1 on the controller listener). Small files (vote, committed index, snapshot) are
//! replaced with `strata-durable`, the crash-safe write the partition log and the broker use too.
//!
//! Invariants: an image's offset only grows, on every node; the image at offset `n` is the
//! same on every node; a batch is in the image only once its entry is committed; a voter's
//! vote and log are fsynced before it answers a Raft RPC.

mod config;
mod describe;
mod http;
mod log_store;
mod network;
mod quorum;
mod state_machine;
mod tls;
mod types;

pub use config::{
    QuorumConfig, DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_INTERVAL_MS,
    DEFAULT_SNAPSHOT_EVERY,
};
pub use describe::{wall_clock_ms, QuorumDescription, ReplicaDescription};
pub use http::MAX_SNAPSHOT_BYTES;
pub use network::MAX_BODY_BYTES;
pub use quorum::{Proposal, Quorum, QuorumStatus, MAX_PROPOSAL_BYTES};
pub use tls::{serve_identified, PeerIdentity, QuorumTls, ServerTls, TlsPeerListener};

/// Runs blocking file work on tokio's blocking pool, so that an fsync never stalls an async
/// worker thread (and with it every task scheduled there).
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// Errors of the metadata quorum. Storage errors at start name the file; errors of a
/// proposal say whether retrying can help (`NoLeader`, `NotApplied`) or not (`InvalidBatch`,
/// `TooLarge`).
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid quorum config: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The Raft files are damaged; the node cannot start from them. Restoring them from
    /// another voter means deleting the directory and letting the leader send a snapshot.
    #[error("corrupt raft storage: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("metadata proposal of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge { size_bytes: usize, max_bytes: usize },
    /// The batch does not apply to the image it claims to be built from (a controller bug).
    #[error("metadata batch rejected: {0}")]
    InvalidBatch(String),
    #[error("no metadata leader answered within {waited_ms} ms (last error: {last_error})")]
    NoLeader { waited_ms: u64, last_error: String },
    /// Committed, but this node did not apply it in time (it is far behind the leader).
    #[error("committed at metadata offset {offset}, but this node's image did not reach it within {waited_ms} ms")]
    NotApplied { offset: u64, waited_ms: u64 },
    #[error("the leader answered {path} with HTTP {status}: {message}")]
    Remote {
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot encode {0}")]
    Encode(String),
    #[error("cannot decode {0}")]
    Decode(String),
    #[error("the metadata quorum is shut down")]
    ShutDown,
}

impl QuorumError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        QuorumError::Io { context, source }
    }
}
