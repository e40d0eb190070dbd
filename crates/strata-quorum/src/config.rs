//! How a node takes part in the quorum, and the timeouts derived from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::QuorumError;

/// Default lower bound of the randomised election timeout (the upper bound is twice this).
/// Kafka's `controller.quorum.election.timeout.ms` is 1000 as well.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Default interval of the leader's heartbeats; also the timeout of one AppendEntries.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 200;
/// Default number of log entries between snapshots. A metadata batch is usually small, so
/// replaying this many after a restart is cheap, and serialising the image this often is too.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1024;

#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: i32,
    /// Voters: node id -> "host:port" of its controller listener. A node not in this map is
    /// a broker-only node and joins as a learner (it asks the leader to add it, giving
    /// `advertised`). Every node must be given the same map: voters initialise the cluster
    /// with it, and different maps would form different clusters.
    pub voters: BTreeMap<i32, String>,
    /// "host:port" others use to reach this node's controller listener.
    pub advertised: String,
    /// Directory for the Raft log, vote, committed index and snapshot (e.g.
    /// `<data-dir>/meta/raft`). Created if absent.
    pub dir: PathBuf,
    /// Lower bound of the randomised election timeout; the upper bound is twice this.
    pub election_timeout_ms: u64,
    /// Must be well below `election_timeout_ms`: it is also the timeout of one AppendEntries
    /// (including the follower's fsync).
    pub heartbeat_interval_ms: u64,
    /// Snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
    /// Mutual TLS on the controller listener, both as server and as client of the others;
    /// `None`: plaintext HTTP.
    pub tls: Option<crate::QuorumTls>,
}

impl QuorumConfig {
    /// A config with the default timeouts and snapshot interval.
    pub fn new(
        node_id: i32,
        voters: BTreeMap<i32, String>,
        advertised: impl Into<String>,
        dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            node_id,
            voters,
            advertised: advertised.into(),
            dir: dir.into(),
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            tls: None,
        }
    }

    /// Whether this node votes (and may lead); otherwise it is a learner.
    pub fn is_voter(&self) -> bool {
        self.voters.contains_key(&self.node_id)
    }

    pub(crate) fn validate(&self) -> Result<(), QuorumError> {
        let bad = |msg: String| Err(QuorumError::Config(msg));
        if self.node_id < 0 {
            return bad(format!("node id {} is negative", self.node_id));
        }
        if self.voters.is_empty() {
            return bad("no voters given: at least one node must be a controller".into());
        }
        if let Some((id, addr)) = self
            .voters
            .iter()
            .find(|(id, addr)| **id < 0 || addr.is_empty())
        {
            return bad(format!(
                "voter {id} has a negative id or an empty address {addr:?}"
            ));
        }
        if self.advertised.is_empty() {
            return bad("the advertised controller address is empty".into());
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.election_timeout_ms
        {
            return bad(format!(
                "heartbeat interval {} ms must be positive and below the election timeout {} ms",
                self.heartbeat_interval_ms, self.election_timeout_ms
            ));
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be positive".into());
        }
        Ok(())
    }
}

/// Every timeout of the quorum, derived from the configured election timeout so that tests
/// with short timeouts stay proportionate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub election_min: Duration,
    pub election_max: Duration,
    pub heartbeat: Duration,
    /// How long a proposal or leader call keeps trying while there is no reachable leader:
    /// a few elections' worth.
    pub leader_wait: Duration,
    /// Timeout of one forwarded request (and of one snapshot chunk).
    pub request_timeout: Duration,
    /// Pause between attempts to reach the leader.
    pub retry: Duration,
    pub connect_timeout: Duration,
    /// First replication pause after a node refused the connection (it grows while the node
    /// stays down, see `PeerNetwork::backoff`).
    pub unreachable_backoff: Duration,
}

impl Timing {
    pub fn new(config: &QuorumConfig) -> Self {
        let election_min = Duration::from_millis(config.election_timeout_ms);
        let election_max = election_min * 2;
        let heartbeat = Duration::from_millis(config.heartbeat_interval_ms);
        Self {
            election_min,
            election_max,
            heartbeat,
            leader_wait: election_max * 5,
            request_timeout: election_max * 2,
            retry: heartbeat,
            connect_timeout: election_min,
            unreachable_backoff: election_min / 2,
        }
    }
}
