//! [`Quorum`]: one node's membership in the Raft-replicated metadata log.
//!
//! It owns the openraft node, its HTTP listener (Raft RPCs plus the server's extra routes),
//! the watch of applied images, and the watch of the known leader. Proposals go to the leader,
//! locally or over HTTP; whichever node proposes then waits until its own image has caught up,
//! so that a caller reads its own write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_durable::LockExt;
use strata_meta::{MetadataImage, MetadataRecord};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{QuorumConfig, Timing};
use crate::describe::{self, QuorumDescription, ReplicaContacts};
use crate::log_store::{LogStore, SharedCommitted};
use crate::network::{paths, NetworkFactory, PeerClient, SNAPSHOT_CHUNK_BYTES};
use crate::state_machine::StateMachine;
use crate::tls::{PeerIdentity, TlsPeerListener};
use crate::types::{ApplyOutcome, NodeId, ProposalData, Raft};
use crate::{http, QuorumError};

/// Largest proposal (its JSON encoding): bounds one log entry, and with it every AppendEntries
/// that carries a single entry. Creating a topic with tens of thousands of partitions fits.
pub const MAX_PROPOSAL_BYTES: usize = 8 * 1024 * 1024;

/// Entries per AppendEntries: bounds the request alongside `MAX_BODY_BYTES`.
const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// How long `shutdown` lets in-flight HTTP requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The result of [`Quorum::propose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    /// The batch is committed; this node's image is at `offset` (or later).
    Committed { offset: u64 },
    /// The image moved on from the caller's base: nothing was written. This node's image has
    /// reached `current_offset` (unless that wait timed out), so rebuilding from
    /// [`Quorum::image`] sees the change that won.
    Conflict { current_offset: u64 },
}

/// A snapshot of the quorum's state for an HTTP status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuorumStatus {
    pub node_id: i32,
    /// "Leader", "Follower", "Candidate", "Learner" or "Shutdown".
    pub role: String,
    pub leader_id: Option<i32>,
    pub current_term: u64,
    /// Voter ids and their controller addresses.
    pub voters: BTreeMap<i32, String>,
    /// Learners (broker-only nodes) and their controller addresses.
    pub learners: BTreeMap<i32, String>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// Last log index covered by this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to this index are gone from this node's log (they are in the snapshot).
    pub purged_index: Option<u64>,
    /// The metadata offset of this node's image.
    pub image_offset: u64,
}

/// Where a node that is not the leader says the leader is (body of an HTTP 421).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaderHint {
    pub leader_id: Option<i32>,
    pub leader_addr: Option<String>,
}

/// A broker-only node asking the leader to replicate the log to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub node_id: i32,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinResponse {}

/// Asks the leader for its [`QuorumDescription`] (no parameters: there is one quorum).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DescribeRequest {}

/// Why the leader side of a request did not complete.
pub(crate) enum LeaderFailure {
    /// This node is not (or no longer) the leader: ask the leader.
    NotLeader,
    /// Worth retrying: the commit timed out, the leader is catching up, a membership change
    /// is in progress.
    Retry(String),
    /// Retrying would fail the same way.
    Reject(QuorumError),
}

pub struct Quorum {
    node_id: NodeId,
    voters: BTreeMap<NodeId, String>,
    advertised: String,
    /// Address this node dials to reach its own listener (for `call_leader` while leading).
    local_addr: String,
    timing: Timing,
    raft: Raft,
    image_rx: watch::Receiver<Arc<MetadataImage>>,
    leader_rx: watch::Receiver<Option<NodeId>>,
    committed: SharedCommitted,
    /// When the replicas last answered this node as leader (KIP-836's timestamps).
    contacts: ReplicaContacts,
    peers: PeerClient,
    shutdown_tx: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Quorum {
    /// Opens the storage, replays snapshot + committed entries into the image before
    /// returning, serves Raft RPCs plus `extra_routes` on `listener`, and joins the quorum:
    /// a voter initialises the cluster with all voters on its first start (safe when every
    /// voter does so: they all write the same first entry), a broker-only node asks the leader
    /// to add it as a learner, in the background.
    ///
    /// Does not wait for a leader: it returns once the local replay is done, even if no other
    /// voter is up. `extra_routes` must not use paths under `/raft/` (axum panics on
    /// overlapping routes). [`Quorum::shutdown`] must be called to stop the node: the listener
    /// and background tasks hold the quorum alive.
    pub async fn start(
        config: QuorumConfig,
        listener: TcpListener,
        extra_routes: axum::Router,
    ) -> Result<Arc<Quorum>, QuorumError> {
        config.validate()?;
        let listen_addr = listener
            .local_addr()
            .map_err(|e| QuorumError::io("controller listener address".into(), e))?;
        let timing = Timing::new(&config);
        let committed = SharedCommitted::default();
        let (log_store, (state_machine, image_rx)) = {
            let dir = config.dir.clone();
            let committed = committed.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| QuorumError::io(format!("create {}", dir.display()), e))?;
                Ok::<_, QuorumError>((LogStore::open(&dir, committed)?, StateMachine::open(&dir)?))
            })
            .await
            .map_err(|e| QuorumError::Raft(format!("storage open task failed: {e}")))??
        };
        let raft_config = openraft::Config {
            cluster_name: "strata-metadata".into(),
            election_timeout_min: timing.election_min.as_millis() as u64,
            election_timeout_max: timing.election_max.as_millis() as u64,
            heartbeat_interval: timing.heartbeat.as_millis() as u64,
            install_snapshot_timeout: timing.request_timeout.as_millis() as u64,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // Purge everything the snapshot covers: a node that needs older entries gets the
            // snapshot instead.
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))?;
        let peers = PeerClient::new(
            timing.connect_timeout,
            config.tls.as_ref().map(|tls| tls.client.as_ref()),
        )?;
        let contacts = ReplicaContacts::default();
        let network =
            NetworkFactory::new(peers.clone(), timing.unreachable_backoff, contacts.clone());
        // Replays the log up to the persisted committed index into the state machine.
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Raft(format!("cannot start the raft node: {e}")))?;
        let offset = image_rx.borrow().offset;
        tracing::info!(
            node_id = config.node_id,
            offset,
            voter = config.is_voter(),
            "metadata quorum storage replayed"
        );

        let (leader_tx, leader_rx) = watch::channel(None);
        let (shutdown_tx, _) = watch::channel(false);
        let quorum = Arc::new(Quorum {
            node_id: config.node_id,
            voters: config.voters.clone(),
            advertised: config.advertised.clone(),
            local_addr: dial_address(listen_addr),
            timing,
            raft: raft.clone(),
            image_rx,
            leader_rx,
            committed,
            contacts: contacts.clone(),
            peers,
            shutdown_tx,
            server: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });

        let tracker = tokio::spawn(track_leader(
            raft.metrics(),
            config.node_id,
            contacts,
            leader_tx,
            quorum.shutdown_tx.subscribe(),
        ));
        quorum.lock_tasks().push(tracker);

        let app = http::router(quorum.clone(), extra_routes, config.tls.is_some());
        let mut stop = quorum.shutdown_tx.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let server = match &config.tls {
            None => tokio::spawn(serve_peers(listener, app, stopped)),
            Some(tls) => {
                let (listener, acceptor) = TlsPeerListener::spawn(
                    listener,
                    tls.server.clone(),
                    quorum.shutdown_tx.subscribe(),
                )
                .map_err(|e| QuorumError::io("controller listener address".into(), e))?;
                quorum.lock_tasks().push(acceptor);
                tokio::spawn(serve_peers(listener, app, stopped))
            }
        };
        *quorum.server.locked() = Some(server);

        if config.is_voter() {
            if let Err(e) = quorum.initialize_if_pristine().await {
                quorum.shutdown().await;
                return Err(e);
            }
        } else {
            let joiner = tokio::spawn(quorum.clone().join_as_learner());
            quorum.lock_tasks().push(joiner);
        }
        Ok(quorum)
    }

    /// Writes the first membership entry on a node that has never been part of a cluster.
    async fn initialize_if_pristine(&self) -> Result<(), QuorumError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(voters = ?self.voters, "initialised the metadata quorum");
                Ok(())
            }
            // Another voter's entries reached us first: the cluster exists already.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(QuorumError::Raft(format!(
                "cannot initialise the quorum: {e}"
            ))),
        }
    }

    /// Asks the leader, until it answers or the node shuts down, to replicate to this node.
    async fn join_as_learner(self: Arc<Self>) {
        let request = JoinRequest {
            node_id: self.node_id,
            addr: self.advertised.clone(),
        };
        let mut stop = self.shutdown_tx.subscribe();
        loop {
            match self
                .call_leader::<_, JoinResponse>(paths::JOIN, &request)
                .await
            {
                Ok(JoinResponse {}) => {
                    tracing::info!(
                        node_id = self.node_id,
                        "joined the metadata quorum as a learner"
                    );
                    return;
                }
                Err(QuorumError::ShutDown) => return,
                Err(e) => tracing::warn!(error = %e, "cannot join the metadata quorum yet"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.election_max) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }

    /// The latest image applied on this node.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image_rx.borrow().clone()
    }

    /// Every applied image (a watch channel; the server reconciles its logs on each).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image_rx.clone()
    }

    /// Optimistic commit: the batch applies only if the image the caller built it from
    /// (`base_offset` = that image's offset) is still the latest; otherwise `Conflict`, and the
    /// caller rebuilds from a newer image. Forwards to the leader over HTTP when this node is
    /// not the leader; keeps trying for a few election timeouts while there is no leader.
    ///
    /// Returns `Committed` only after this node's image has reached `offset`, so the caller
    /// reads its own write. Retrying after an error is safe: a batch commits at most once,
    /// because a second copy finds the image moved on. That also means a caller whose first
    /// attempt committed but timed out sees `Conflict` on retry, and must rebuild from the
    /// image, which then contains its own change.
    ///
    /// Cost: on a follower or learner one HTTP round trip to the leader; then one Raft round
    /// (AppendEntries to the voters, each fsyncing its log, then the committed index), and on
    /// every node one apply (a shallow copy of the image plus the records). At most
    /// [`MAX_PROPOSAL_BYTES`] of JSON. Takes up to a few election timeouts without a leader,
    /// and as long again waiting for this node to apply.
    pub async fn propose(
        &self,
        base_offset: u64,
        records: Vec<MetadataRecord>,
    ) -> Result<Proposal, QuorumError> {
        let data = ProposalData {
            base_offset,
            records,
        };
        let body = serde_json::to_vec(&data)
            .map_err(|e| QuorumError::Encode(format!("metadata proposal: {e}")))?;
        if body.len() > MAX_PROPOSAL_BYTES {
            return Err(QuorumError::TooLarge {
                size_bytes: body.len(),
                max_bytes: MAX_PROPOSAL_BYTES,
            });
        }
        let reply = self.to_leader(paths::PROPOSE, body, Some(&data)).await?;
        let proposal: Proposal = serde_json::from_slice(&reply)
            .map_err(|e| QuorumError::Decode(format!("proposal reply: {e}")))?;
        let target = match proposal {
            Proposal::Committed { offset } => offset,
            Proposal::Conflict { current_offset } => current_offset,
        };
        let reached = self.wait_for_offset(target, self.timing.leader_wait).await;
        match proposal {
            Proposal::Committed { offset } if !reached => Err(QuorumError::NotApplied {
                offset,
                waited_ms: self.timing.leader_wait.as_millis() as u64,
            }),
            _ => Ok(proposal),
        }
    }

    /// The leader's side of a proposal: runs it through Raft unless it conflicts already.
    pub(crate) async fn propose_as_leader(
        &self,
        data: ProposalData,
        deadline: Instant,
    ) -> Result<Proposal, LeaderFailure> {
        let mut images = self.image_rx.clone();
        // A new leader applies everything committed before its term before it counts as
        // leader, but a follower may apply this leader's latest commit a moment before it does.
        let image = match tokio::time::timeout_at(
            deadline,
            images.wait_for(|image| image.offset >= data.base_offset),
        )
        .await
        {
            Ok(Ok(image)) => image.clone(),
            Ok(Err(_)) => return Err(LeaderFailure::Retry("the state machine stopped".into())),
            Err(_) => {
                return Err(LeaderFailure::Retry(format!(
                    "the leader's image has not reached base offset {}",
                    data.base_offset
                )))
            }
        };
        if data.base_offset < image.offset {
            return Ok(Proposal::Conflict {
                current_offset: image.offset,
            });
        }
        // Applying a batch that does not fit its image panics (see MetadataImage::apply). Once
        // in the log it would panic on every node at every replay, so check it here first, on
        // the very image it will apply to if it applies at all.
        dry_run(&image, &data.records)
            .map_err(|message| LeaderFailure::Reject(QuorumError::InvalidBatch(message)))?;
        match tokio::time::timeout_at(deadline, self.raft.client_write(data)).await {
            Err(_) => Err(LeaderFailure::Retry("the commit timed out".into())),
            Ok(Ok(response)) => match response.data {
                ApplyOutcome::Committed { offset } => Ok(Proposal::Committed { offset }),
                ApplyOutcome::Conflict { current_offset } => {
                    Ok(Proposal::Conflict { current_offset })
                }
                ApplyOutcome::Unchanged => Err(LeaderFailure::Reject(QuorumError::Raft(
                    "a proposal was applied as a no-op entry".into(),
                ))),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(LeaderFailure::NotLeader)
            }
            Ok(Err(e)) => Err(LeaderFailure::Retry(e.to_string())),
        }
    }

    /// Adds a broker-only node as a learner (or updates its address). Leader only.
    pub(crate) async fn admit_learner(
        &self,
        request: JoinRequest,
        deadline: Instant,
    ) -> Result<(), LeaderFailure> {
        if self.voters.contains_key(&request.node_id) {
            return Err(LeaderFailure::Reject(QuorumError::Config(format!(
                "node {} is a voter; voters are configured, they do not join",
                request.node_id
            ))));
        }
        if request.node_id < 0 || request.addr.is_empty() {
            return Err(LeaderFailure::Reject(QuorumError::Config(format!(
                "bad join request: node {} at {:?}",
                request.node_id, request.addr
            ))));
        }
        let node = BasicNode {
            addr: request.addr.clone(),
        };
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&request.node_id)
            .cloned();
        let change = match known {
            Some(known) if known == node => return Ok(()),
            Some(_) => {
                let nodes = BTreeMap::from([(request.node_id, node)]);
                tokio::time::timeout_at(
                    deadline,
                    self.raft
                        .change_membership(ChangeMembers::SetNodes(nodes), true),
                )
                .await
            }
            None => {
                tokio::time::timeout_at(
                    deadline,
                    self.raft.add_learner(request.node_id, node, false),
                )
                .await
            }
        };
        match change {
            Ok(Ok(_)) => {
                tracing::info!(node_id = request.node_id, addr = %request.addr, "added learner");
                Ok(())
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(LeaderFailure::NotLeader)
            }
            Ok(Err(e)) => Err(LeaderFailure::Retry(e.to_string())),
            Err(_) => Err(LeaderFailure::Retry(
                "the membership change timed out".into(),
            )),
        }
    }

    /// The leader's id, if known. This node counts as leader only once it has applied every
    /// entry committed before its term (KRaft's active controller waits the same way).
    pub fn leader_id(&self) -> Option<i32> {
        *self.leader_rx.borrow()
    }

    pub fn is_leader(&self) -> bool {
        self.leader_id() == Some(self.node_id)
    }

    /// Changes of the known leader (for the server to start/stop active-controller duties).
    pub fn leader_watch(&self) -> watch::Receiver<Option<i32>> {
        self.leader_rx.clone()
    }

    /// POSTs JSON `req` to `path` on the current leader's controller listener (one of the
    /// extra routes), retrying across leader changes for a few election timeouts. The
    /// request carries a header that makes any node but the leader refuse it (HTTP 421,
    /// naming the leader), so the handler runs on the leader as this node knew it. A 503
    /// answer is retried too; any other non-2xx status is returned as [`QuorumError::Remote`].
    pub async fn call_leader<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, QuorumError> {
        let body = serde_json::to_vec(req)
            .map_err(|e| QuorumError::Encode(format!("request to {path}: {e}")))?;
        let reply = self.to_leader(path, body, None).await?;
        serde_json::from_slice(&reply)
            .map_err(|e| QuorumError::Decode(format!("reply from the leader's {path}: {e}")))
    }

    /// Sends `body` to `path` on the leader until it answers, a few election timeouts at
    /// most. With `propose`, a leader that is this node runs the proposal in-process.
    async fn to_leader(
        &self,
        path: &str,
        body: Vec<u8>,
        propose: Option<&ProposalData>,
    ) -> Result<Vec<u8>, QuorumError> {
        let started = Instant::now();
        let deadline = started + self.timing.leader_wait;
        let mut leader_changes = self.leader_rx.clone();
        let mut hint: Option<String> = None;
        let mut rotation = 0usize;
        let mut last_error = String::from("no leader is known");
        loop {
            if *self.shutdown_tx.borrow() {
                return Err(QuorumError::ShutDown);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(QuorumError::NoLeader {
                    waited_ms: (now - started).as_millis() as u64,
                    last_error,
                });
            }
            let attempt_deadline = deadline.min(now + self.timing.request_timeout);
            match propose {
                Some(data) if self.is_leader() => {
                    match self.propose_as_leader(data.clone(), attempt_deadline).await {
                        Ok(proposal) => {
                            return serde_json::to_vec(&proposal)
                                .map_err(|e| QuorumError::Encode(e.to_string()))
                        }
                        Err(LeaderFailure::Reject(e)) => return Err(e),
                        Err(LeaderFailure::NotLeader) => last_error = "leadership moved".into(),
                        Err(LeaderFailure::Retry(message)) => last_error = message,
                    }
                }
                _ => {
                    let addr = hint
                        .take()
                        .unwrap_or_else(|| self.leader_guess(&mut rotation));
                    let response = self
                        .peers
                        .post(&addr, path, body.clone(), true, attempt_deadline - now)
                        .await;
                    match response {
                        Ok(r) if (200..300).contains(&r.status) => return Ok(r.body),
                        Ok(r) if r.status == 421 => {
                            last_error = format!("{addr} is not the leader");
                            let leader = serde_json::from_slice::<LeaderHint>(&r.body).ok();
                            hint = leader.and_then(|h| self.hint_address(h));
                            if hint.as_ref().is_some_and(|next| *next != addr) {
                                continue; // follow the redirect at once
                            }
                        }
                        Ok(r) if r.status == 503 => last_error = r.message(),
                        Ok(r) if r.status == 400 && propose.is_some() => {
                            return Err(QuorumError::InvalidBatch(r.message()))
                        }
                        Ok(r) => {
                            return Err(QuorumError::Remote {
                                path: path.to_string(),
                                status: r.status,
                                message: r.message(),
                            })
                        }
                        Err(e) => last_error = e.to_string(),
                    }
                }
            }
            // Pause, but wake at once when a leader becomes known.
            let pause_until = deadline.min(Instant::now() + self.timing.retry);
            tokio::select! {
                _ = tokio::time::sleep_until(pause_until) => {}
                _ = leader_changes.changed() => {}
            }
        }
    }

    /// Where to send a leader request when no one has said where the leader is: the known
    /// leader, else each other voter in turn (a voter that is not the leader names it).
    fn leader_guess(&self, rotation: &mut usize) -> String {
        if let Some(addr) = self.leader_id().and_then(|id| self.dial_address_of(id)) {
            return addr;
        }
        let others: Vec<&String> = self
            .voters
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(_, addr)| addr)
            .collect();
        if others.is_empty() {
            return self.local_addr.clone(); // the only voter: wait for ourselves
        }
        *rotation += 1;
        others[*rotation % others.len()].clone()
    }

    fn hint_address(&self, hint: LeaderHint) -> Option<String> {
        match hint.leader_id {
            Some(id) if id == self.node_id => Some(self.local_addr.clone()),
            Some(id) => hint.leader_addr.or_else(|| self.dial_address_of(id)),
            None => None,
        }
    }

    /// The address of node `id`'s controller listener, as this node dials it.
    fn dial_address_of(&self, id: NodeId) -> Option<String> {
        if id == self.node_id {
            return Some(self.local_addr.clone());
        }
        self.advertised_address_of(id)
    }

    /// The address node `id` advertises: voters from the config, learners from the
    /// replicated membership.
    fn advertised_address_of(&self, id: NodeId) -> Option<String> {
        if let Some(addr) = self.voters.get(&id) {
            return Some(addr.clone());
        }
        if id == self.node_id {
            return Some(self.advertised.clone());
        }
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    /// The body of a 421 from this node.
    pub(crate) fn leader_hint(&self) -> LeaderHint {
        let leader_id = self.leader_id();
        LeaderHint {
            leader_id,
            leader_addr: leader_id.and_then(|id| self.advertised_address_of(id)),
        }
    }

    /// Waits until this node's image reaches `offset`; false if `wait` passed first.
    async fn wait_for_offset(&self, offset: u64, wait: Duration) -> bool {
        let mut images = self.image_rx.clone();
        let reached =
            tokio::time::timeout(wait, images.wait_for(|image| image.offset >= offset)).await;
        matches!(reached, Ok(Ok(_)))
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn timing(&self) -> Timing {
        self.timing
    }

    /// The leader's view of the quorum, for Kafka's DescribeQuorum: asked of the leader over
    /// HTTP unless this node leads (Kafka's brokers forward DescribeQuorum to the controller
    /// the same way). Retries across leader changes for a few election timeouts, then fails
    /// with [`QuorumError::NoLeader`].
    pub async fn describe(&self) -> Result<QuorumDescription, QuorumError> {
        if self.is_leader() {
            if let Some(description) = self.describe_as_leader() {
                return Ok(description);
            }
        }
        self.call_leader(paths::DESCRIBE, &DescribeRequest {}).await
    }

    /// The description from this node's replication progress; `None` unless it leads.
    pub(crate) fn describe_as_leader(&self) -> Option<QuorumDescription> {
        let metrics = self.raft.metrics().borrow().clone();
        let committed = *self.committed.locked();
        let contacts = self.contacts.snapshot();
        describe::describe(&metrics, committed, &contacts, describe::wall_clock_ms())
    }

    /// Voter ids and their addresses, the current term, last applied / committed log index.
    pub fn status(&self) -> QuorumStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let address = |id: NodeId| {
            membership
                .get_node(&id)
                .map(|node| node.addr.clone())
                .or_else(|| self.advertised_address_of(id))
                .unwrap_or_default()
        };
        let mut voters: BTreeMap<i32, String> =
            membership.voter_ids().map(|id| (id, address(id))).collect();
        if voters.is_empty() {
            voters = self.voters.clone(); // not yet reached by the cluster
        }
        let learners = membership
            .learner_ids()
            .map(|id| (id, address(id)))
            .collect();
        let committed = *self.committed.locked();
        QuorumStatus {
            node_id: self.node_id,
            role: format!("{:?}", metrics.state),
            leader_id: self.leader_id(),
            current_term: metrics.current_term,
            voters,
            learners,
            last_log_index: metrics.last_log_index,
            committed_index: committed.map(|l| l.index),
            last_applied_index: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            image_offset: self.image_rx.borrow().offset,
        }
    }

    /// Stops Raft, the listener and the background tasks. Idempotent; waits for in-flight
    /// HTTP requests at most `SHUTDOWN_GRACE`.
    pub async fn shutdown(&self) {
        if self.shutdown_tx.send_replace(true) {
            return;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core did not stop cleanly");
        }
        let server = self.server.locked().take();
        if let Some(mut server) = server {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        tracing::info!(node_id = self.node_id, "metadata quorum stopped");
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.locked()
    }
}

/// Serves the controller listener until the quorum stops.
async fn serve_peers<L>(
    listener: L,
    app: axum::Router,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    PeerIdentity:
        for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    if let Err(e) = crate::tls::serve_identified(listener, app, stopped).await {
        tracing::error!(error = %e, "controller listener failed");
    }
}

/// Publishes the leader as this node sees it whenever openraft's metrics change, and the
/// last log index the transport's [`ReplicaContacts`] compare replicas with.
async fn track_leader(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    node_id: NodeId,
    contacts: ReplicaContacts,
    leader_tx: watch::Sender<Option<NodeId>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let leader = {
            let metrics = metrics.borrow_and_update();
            contacts.set_last_log_index(metrics.last_log_index);
            effective_leader(&metrics, node_id)
        };
        leader_tx.send_if_modified(|current| {
            if *current == leader {
                return false;
            }
            tracing::info!(node_id, leader = ?leader, "metadata leader changed");
            *current = leader;
            true
        });
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    leader_tx.send_replace(None);
}

/// The leader per `metrics`, except that this node counts as leader only once it has applied
/// the first entry of its own term (and so everything committed before it).
fn effective_leader(metrics: &RaftMetrics<NodeId, BasicNode>, me: NodeId) -> Option<NodeId> {
    match metrics.current_leader {
        Some(id) if id == me => {
            let ready = metrics.state == ServerState::Leader
                && metrics
                    .last_applied
                    .is_some_and(|applied| applied.leader_id == metrics.vote.leader_id);
            ready.then_some(me)
        }
        other => other,
    }
}

/// Applies `records` to a copy of `image` with [`MetadataImage::try_apply`], which says why
/// a record does not fit instead of panicking (the process aborts on panic, so a panic could
/// not be caught here).
fn dry_run(image: &MetadataImage, records: &[MetadataRecord]) -> Result<(), String> {
    image.try_apply(records).map(drop).map_err(|e| {
        format!(
            "batch does not apply to the image at offset {}: {e}",
            image.offset
        )
    })
}

/// How this node reaches its own listener: a wildcard bind address is dialled on loopback.
fn dial_address(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}
