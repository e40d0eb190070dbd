//! The client side of the controller transport: HTTP/1.1 POSTs with JSON bodies, and
//! openraft's `RaftNetwork` on top of them.
//!
//! Every request has a timeout and every response body a size bound ([`MAX_BODY_BYTES`]), read
//! incrementally so that a misbehaving peer cannot make this node buffer more. Raft RPC
//! responses are `Result<reply, RaftError>` in JSON with status 200; any other status is a
//! transport failure. A refused connection is reported to openraft as `Unreachable`, so the
//! replication to that node backs off instead of spinning.
//!
//! Cost per RPC: one request on a pooled keep-alive connection; JSON encoding of the entries
//! (AppendEntries) or of at most `SNAPSHOT_CHUNK_BYTES` of snapshot (about 4 bytes of JSON per
//! snapshot byte).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;

use crate::describe::{wall_clock_ms, ReplicaContacts};
use crate::types::{NodeId, TypeConfig};
use crate::QuorumError;

/// Largest request or response body on the controller listener's Raft routes and in the
/// client. Must hold `max_payload_entries` entries or one snapshot chunk in JSON: entries are
/// bounded by `MAX_PROPOSAL_BYTES` each and AppendEntries is split when it would exceed this.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Snapshot bytes per InstallSnapshot request (before JSON, which expands bytes up to 4×).
pub(crate) const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// Header that asks the receiving node to refuse the request (421) unless it is the leader.
/// Set by [`crate::Quorum::call_leader`], honoured for every route including the extra ones.
pub(crate) const LEADER_ONLY_HEADER: &str = "x-strata-leader-only";

/// Routes of the Raft transport on the controller listener.
pub(crate) mod paths {
    pub const APPEND_ENTRIES: &str = "/raft/append-entries";
    pub const VOTE: &str = "/raft/vote";
    pub const INSTALL_SNAPSHOT: &str = "/raft/install-snapshot";
    pub const PROPOSE: &str = "/raft/propose";
    pub const JOIN: &str = "/raft/join";
    pub const STATUS: &str = "/raft/status";
    pub const DESCRIBE: &str = "/raft/describe";
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {addr}{path} failed: {source}")]
    Request {
        addr: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("response from {addr}{path} is larger than {max_bytes} bytes")]
    TooLarge {
        addr: String,
        path: String,
        max_bytes: usize,
    },
    #[error("{addr}{path} answered HTTP {status}: {message}")]
    Status {
        addr: String,
        path: String,
        status: u16,
        message: String,
    },
}

pub(crate) struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text for an error message, cut to a readable length.
    pub fn message(&self) -> String {
        const MAX_MESSAGE_BYTES: usize = 512;
        let end = self.body.len().min(MAX_MESSAGE_BYTES);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }
}

/// HTTP client for the other controllers, shared by Raft replication and leader calls.
#[derive(Clone)]
pub(crate) struct PeerClient {
    http: reqwest::Client,
    /// `https` with mutual TLS on the controller listener, else `http`.
    scheme: &'static str,
}

impl PeerClient {
    /// `tls`: this node's side of the controller listener's mutual TLS.
    pub fn new(
        connect_timeout: Duration,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<Self, QuorumError> {
        /// Idle keep-alive connections kept per peer: replication, votes and leader calls.
        const MAX_IDLE_PER_PEER: usize = 4;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(tls) = tls {
            builder = builder.tls_backend_preconfigured(tls.clone());
        }
        let http = builder
            .build()
            .map_err(|e| QuorumError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            scheme: if tls.is_some() { "https" } else { "http" },
        })
    }

    /// POSTs a JSON `body` to `{scheme}://{addr}{path}` and reads at most [`MAX_BODY_BYTES`]
    /// back.
    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        leader_only: bool,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        let request_error = |source: reqwest::Error| {
            if source.is_connect() {
                TransportError::Connect {
                    addr: addr.to_string(),
                    source,
                }
            } else {
                TransportError::Request {
                    addr: addr.to_string(),
                    path: path.to_string(),
                    source,
                }
            }
        };
        let mut request = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body);
        if leader_only {
            request = request.header(LEADER_ONLY_HEADER, "1");
        }
        let mut response = request.send().await.map_err(request_error)?;
        let too_large = || TransportError::TooLarge {
            addr: addr.to_string(),
            path: path.to_string(),
            max_bytes: MAX_BODY_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, body })
    }
}

/// Creates a [`PeerNetwork`] per replication target.
pub(crate) struct NetworkFactory {
    client: PeerClient,
    /// First pause before retrying a node that refused the connection (it is probably down).
    unreachable_backoff: Duration,
    contacts: ReplicaContacts,
}

impl NetworkFactory {
    pub fn new(
        client: PeerClient,
        unreachable_backoff: Duration,
        contacts: ReplicaContacts,
    ) -> Self {
        Self {
            client,
            unreachable_backoff,
            contacts,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            client: self.client.clone(),
            target,
            node: node.clone(),
            unreachable_backoff: self.unreachable_backoff,
            contacts: self.contacts.clone(),
        }
    }
}

/// The Raft RPCs to one node.
pub(crate) struct PeerNetwork {
    client: PeerClient,
    target: NodeId,
    node: BasicNode,
    unreachable_backoff: Duration,
    contacts: ReplicaContacts,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerNetwork {
    async fn call<Resp, E>(&self, path: &str, body: Vec<u8>, ttl: Duration) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let response = self
            .client
            .post(&self.node.addr, path, body, false, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        if response.status != 200 {
            let e = TransportError::Status {
                addr: self.node.addr.clone(),
                path: path.to_string(),
                status: response.status,
                message: response.message(),
            };
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&response.body)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

fn encode<T: serde::Serialize>(rpc: &T) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec(rpc).map_err(|e| NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let body = encode(&rpc).map_err(RPCError::Network)?;
        if body.len() > MAX_BODY_BYTES && rpc.entries.len() > 1 {
            // openraft resends fewer entries at once; a single entry always fits because a
            // proposal is bounded by MAX_PROPOSAL_BYTES.
            let entries_hint = (rpc.entries.len() / 2) as u64;
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries_hint),
            ));
        }
        // KIP-836's timestamps: the answer is the replica's "fetch"; accepting everything the
        // leader had when this was sent makes it caught up as of then.
        let term = rpc.vote.leader_id().get_term();
        let end = rpc
            .entries
            .last()
            .map(|entry| entry.log_id.index)
            .or(rpc.prev_log_id.map(|log_id| log_id.index));
        let reaches_end = self.contacts.reaches_leader_end(end);
        let sent_ms = wall_clock_ms();
        let result = self
            .call(paths::APPEND_ENTRIES, body, option.hard_ttl())
            .await;
        match &result {
            Ok(AppendEntriesResponse::Success) => {
                let answered_ms = wall_clock_ms();
                self.contacts
                    .record(self.target, term, sent_ms, answered_ms, reaches_end);
            }
            Ok(AppendEntriesResponse::Conflict) => {
                let answered_ms = wall_clock_ms();
                self.contacts
                    .record(self.target, term, sent_ms, answered_ms, false);
            }
            _ => {}
        }
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let body = encode(&rpc).map_err(RPCError::Network)?;
        self.call(paths::INSTALL_SNAPSHOT, body, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let body = encode(&rpc).map_err(RPCError::Network)?;
        self.call(paths::VOTE, body, option.hard_ttl()).await
    }

    /// Doubles from `unreachable_backoff` up to 8× it while the node stays unreachable
    /// (openraft resets it on the first successful RPC): a node that is down for long is
    /// probed, and logged about, every few seconds rather than several times a second.
    fn backoff(&self) -> Backoff {
        let cap = self.unreachable_backoff * 8;
        Backoff::new(std::iter::successors(
            Some(self.unreachable_backoff),
            move |d| Some((*d * 2).min(cap)),
        ))
    }
}
