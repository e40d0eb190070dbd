//! The leader's view of the quorum for Kafka's DescribeQuorum (KIP-595, KIP-836): who leads in
//! which epoch, the high watermark, and how far each voter and observer has replicated.
//!
//! Offsets are Kafka's, in the Raft log's space: an entry at Raft log index `i` is the record
//! at offset `i` of `__cluster_metadata`, and Kafka's offsets here are exclusive ends. So the
//! high watermark is the committed index + 1 and a replica's log end offset its last matched
//! index + 1 (`-1` while the leader does not know it). Blank and membership entries count,
//! as Kafka's control records do; these are not the image's metadata offsets, which count
//! only the batches that applied.
//!
//! Timestamps (KIP-836): openraft 0.9 reports no per-replica times, so the transport keeps
//! them ([`ReplicaContacts`]): a replica "fetches" when it answers one of the leader's
//! AppendEntries (heartbeats included; Raft pushes where Kafka's followers pull), at the time
//! the answer arrives; it is "caught up" as of the time the leader sent an AppendEntries it
//! accepted that reached the leader's last log index. Both are per leadership: a new term
//! starts at `-1` (unknown), as Kafka's `LeaderState` does. The leader's own are the time of
//! the answer, as in Kafka's `RaftUtil.toReplicaState`. The leader's last index is the one of
//! its latest metrics, which may trail an append by one iteration of openraft's loop.
//!
//! Cost: built from the leader's metrics snapshot, O(voters + learners); no I/O. A follower
//! or learner asks the leader over one HTTP round trip (`Quorum::describe`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use openraft::{BasicNode, RaftMetrics};
use serde::{Deserialize, Serialize};
use strata_durable::LockExt;

use crate::types::{LogId, NodeId};

/// Kafka's sentinel for an offset or timestamp the leader does not know.
pub const UNKNOWN: i64 = -1;

/// What DescribeQuorum reports: the leader's state, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumDescription {
    pub leader_id: i32,
    /// The Raft term, Kafka's leader epoch of `__cluster_metadata`.
    pub leader_epoch: u64,
    /// The committed index + 1; `-1` before the leader knows any commit.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaDescription>,
    /// Learners: broker-only nodes that follow the log without voting.
    pub observers: Vec<ReplicaDescription>,
    /// Voters' controller listener addresses (`host:port`), as the membership records them.
    pub voter_addresses: BTreeMap<i32, String>,
}

/// One replica of `__cluster_metadata` in a [`QuorumDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDescription {
    pub node_id: i32,
    /// The last index the leader knows this replica holds + 1; `-1` if unknown.
    pub log_end_offset: i64,
    pub last_fetch_timestamp_ms: i64,
    pub last_caught_up_timestamp_ms: i64,
}

/// When the leader last heard from a replica, in one term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contact {
    pub term: u64,
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The leader's [`Contact`]s with the replicas, written by the transport as AppendEntries are
/// answered, and the leader's last log index they are compared with. One entry per node id
/// the leader has replicated to since start (bounded by the nodes ever in the membership).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicaContacts(Arc<Mutex<ContactsInner>>);

#[derive(Debug, Default)]
struct ContactsInner {
    contacts: BTreeMap<NodeId, Contact>,
    last_log_index: Option<u64>,
}

impl ReplicaContacts {
    fn lock(&self) -> std::sync::MutexGuard<'_, ContactsInner> {
        self.0.locked()
    }

    /// This node's last log index, from its latest metrics.
    pub fn set_last_log_index(&self, index: Option<u64>) {
        self.lock().last_log_index = index;
    }

    /// Whether a replica that accepts entries up to `end` (the request's last entry, or the
    /// entry before it when it carries none) then holds everything this node has.
    pub fn reaches_leader_end(&self, end: Option<u64>) -> bool {
        end >= self.lock().last_log_index
    }

    /// `target` answered an AppendEntries of `term`, sent at `sent_ms`, at `answered_ms`;
    /// `caught_up` if it accepted one that reached the leader's end when sent. An answer from
    /// an earlier term than the last recorded is late and ignored; a later term starts over.
    pub fn record(
        &self,
        target: NodeId,
        term: u64,
        sent_ms: i64,
        answered_ms: i64,
        caught_up: bool,
    ) {
        let fresh = Contact {
            term,
            last_fetch_ms: UNKNOWN,
            last_caught_up_ms: UNKNOWN,
        };
        let mut inner = self.lock();
        let contact = inner.contacts.entry(target).or_insert(fresh);
        match term.cmp(&contact.term) {
            Ordering::Less => return,
            Ordering::Greater => *contact = fresh,
            Ordering::Equal => {}
        }
        contact.last_fetch_ms = contact.last_fetch_ms.max(answered_ms);
        if caught_up {
            contact.last_caught_up_ms = contact.last_caught_up_ms.max(sent_ms);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<NodeId, Contact> {
        self.lock().contacts.clone()
    }
}

/// Kafka's exclusive end offset after the entry `log_id`, or -1 for none.
fn end_offset(log_id: Option<u64>) -> i64 {
    log_id.map_or(UNKNOWN, |index| {
        i64::try_from(index).map_or(i64::MAX, |index| index.saturating_add(1))
    })
}

/// The description from the leader's own `metrics`, committed log id and `contacts` with
/// the replicas, at wall-clock `now_ms`. `None` unless `metrics` are a leader's (only a leader
/// has replication progress).
pub(crate) fn describe(
    metrics: &RaftMetrics<NodeId, BasicNode>,
    committed: Option<LogId>,
    contacts: &BTreeMap<NodeId, Contact>,
    now_ms: i64,
) -> Option<QuorumDescription> {
    let progress = metrics.replication.as_ref()?;
    if metrics.current_leader != Some(metrics.id) {
        return None;
    }
    let membership = metrics.membership_config.membership();
    // The metrics snapshot may trail the committed index (read apart from it) by an iteration
    // of openraft's loop. Reporting no more than the snapshot shows a majority holding keeps
    // the answer consistent (a majority's ends reach the high watermark), and what it reports
    // is still committed: it is at most the committed index.
    let matched = |id: NodeId| progress.get(&id).copied().flatten().map(|l| l.index);
    let quorum_matched = membership
        .get_joint_config()
        .iter()
        .map(|config| majority_index(config.iter().map(|id| matched(*id))))
        .min()
        .flatten();
    // `None` orders first: either one unknown makes the high watermark unknown.
    let high_watermark = end_offset(committed.map(|c| c.index).min(quorum_matched));
    let leader_end = end_offset(metrics.last_log_index).max(high_watermark);
    let replica = |id: NodeId| {
        if id == metrics.id {
            return ReplicaDescription {
                node_id: id,
                log_end_offset: leader_end,
                last_fetch_timestamp_ms: now_ms,
                last_caught_up_timestamp_ms: now_ms,
            };
        }
        let contact = contacts.get(&id).filter(|c| c.term == metrics.current_term);
        ReplicaDescription {
            node_id: id,
            // A follower holds at most what the leader has.
            log_end_offset: end_offset(matched(id)).min(leader_end),
            last_fetch_timestamp_ms: contact.map_or(UNKNOWN, |c| c.last_fetch_ms),
            last_caught_up_timestamp_ms: contact.map_or(UNKNOWN, |c| c.last_caught_up_ms),
        }
    };
    let voters: Vec<ReplicaDescription> = membership.voter_ids().map(replica).collect();
    let observers = membership.learner_ids().map(replica).collect();
    let voter_addresses = membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
        .collect();
    let description = QuorumDescription {
        leader_id: metrics.id,
        leader_epoch: metrics.current_term,
        high_watermark,
        voters,
        observers,
        voter_addresses,
    };
    debug_assert!(description
        .voters
        .iter()
        .chain(&description.observers)
        .all(|r| r.log_end_offset <= leader_end));
    Some(description)
}

/// The highest index a majority of one voter configuration holds (`matched` per voter;
/// `None` for a voter the leader has not heard from); `None` if no majority holds anything.
fn majority_index(matched: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let mut matched: Vec<Option<u64>> = matched.collect();
    if matched.is_empty() {
        return None;
    }
    // Descending, unknown last: the (n/2 + 1)-th highest is held by a majority.
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2]
}

/// Milliseconds since the Unix epoch, Kafka's timestamps; `-1` if the clock is before 1970.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(UNKNOWN, |d| {
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, Membership, ServerState, StoredMembership};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// Leader 1 in term 3 of voters {1,2,3} and learner 4.
    fn leader_metrics(progress: &[(NodeId, Option<u64>)]) -> RaftMetrics<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=4)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("127.0.0.1:900{id}"),
                    },
                )
            })
            .collect();
        let voters = BTreeSet::from([1, 2, 3]);
        let membership = Membership::new(vec![voters], nodes);
        let mut metrics = RaftMetrics::new_initial(1);
        metrics.current_term = 3;
        metrics.state = ServerState::Leader;
        metrics.current_leader = Some(1);
        metrics.last_log_index = Some(9);
        metrics.membership_config = Arc::new(StoredMembership::new(Some(log_id(1, 0)), membership));
        metrics.replication = Some(
            progress
                .iter()
                .map(|(id, index)| (*id, index.map(|i| log_id(3, i))))
                .collect(),
        );
        metrics
    }

    #[test]
    fn offsets_are_exclusive_ends_of_raft_indexes() {
        let metrics = leader_metrics(&[(1, Some(9)), (2, Some(9)), (3, Some(5)), (4, None)]);
        let d = describe(&metrics, Some(log_id(3, 8)), &BTreeMap::new(), 1_000)
            .expect("a leader's view");
        assert_eq!((d.leader_id, d.leader_epoch, d.high_watermark), (1, 3, 9));
        let ends: Vec<(i32, i64)> = d
            .voters
            .iter()
            .map(|r| (r.node_id, r.log_end_offset))
            .collect();
        assert_eq!(ends, vec![(1, 10), (2, 10), (3, 6)]);
        assert_eq!(d.observers.len(), 1);
        assert_eq!(d.observers[0].node_id, 4);
        assert_eq!(
            d.observers[0].log_end_offset, UNKNOWN,
            "not replicated to yet"
        );
        assert_eq!(
            d.voter_addresses.get(&2).map(String::as_str),
            Some("127.0.0.1:9002")
        );
        assert!(!d.voter_addresses.contains_key(&4), "only voters");
    }

    #[test]
    fn timestamps_are_the_leaders_contacts_in_its_term() {
        let metrics = leader_metrics(&[(1, Some(9)), (2, Some(9)), (3, Some(9))]);
        let contacts = ReplicaContacts::default();
        contacts.record(2, 3, 900, 950, true);
        contacts.record(3, 2, 500, 550, true); // from an earlier leadership
        let d = describe(&metrics, Some(log_id(3, 9)), &contacts.snapshot(), 1_000)
            .expect("a leader's view");
        let times: Vec<(i64, i64)> = d
            .voters
            .iter()
            .map(|r| (r.last_fetch_timestamp_ms, r.last_caught_up_timestamp_ms))
            .collect();
        assert_eq!(times, vec![(1_000, 1_000), (950, 900), (UNKNOWN, UNKNOWN)]);
    }

    #[test]
    fn contacts_only_move_forward_within_a_term() {
        let contacts = ReplicaContacts::default();
        contacts.record(2, 3, 100, 110, true);
        contacts.record(2, 3, 200, 210, false); // answered, but behind the leader's end
        contacts.record(2, 3, 90, 95, true); // a slow answer arriving late
        let expect = |fetch, caught_up| Contact {
            term: 3,
            last_fetch_ms: fetch,
            last_caught_up_ms: caught_up,
        };
        assert_eq!(contacts.snapshot()[&2], expect(210, 100));
        contacts.record(2, 2, 300, 310, true); // a late answer from an earlier term
        assert_eq!(contacts.snapshot()[&2], expect(210, 100));
        contacts.record(2, 4, 400, 410, false); // a new leadership starts over
        let got = contacts.snapshot()[&2];
        assert_eq!(
            (got.term, got.last_fetch_ms, got.last_caught_up_ms),
            (4, 410, UNKNOWN)
        );
    }

    #[test]
    fn reaching_the_leaders_end() {
        let contacts = ReplicaContacts::default();
        assert!(
            contacts.reaches_leader_end(None),
            "an empty log is reached by anyone"
        );
        contacts.set_last_log_index(Some(7));
        assert!(contacts.reaches_leader_end(Some(7)));
        assert!(contacts.reaches_leader_end(Some(8)));
        assert!(!contacts.reaches_leader_end(Some(6)));
        assert!(!contacts.reaches_leader_end(None));
    }

    #[test]
    fn the_high_watermark_is_no_more_than_the_snapshot_shows_a_majority_holding() {
        // Metrics taken a loop iteration before the commit of index 10 was read.
        let metrics = leader_metrics(&[(1, Some(9)), (2, Some(10)), (3, Some(9))]);
        let d = describe(&metrics, Some(log_id(3, 10)), &BTreeMap::new(), 1_000)
            .expect("a leader's view");
        assert_eq!(d.high_watermark, 10);
        assert_eq!(
            d.voters[0].log_end_offset, 10,
            "the leader's end, as the snapshot says"
        );
        assert!(d.voters.iter().all(|r| r.log_end_offset <= 10));
        // A majority not heard from: nothing is known to be held by a majority.
        let metrics = leader_metrics(&[(1, Some(9)), (2, None), (3, None)]);
        let d = describe(&metrics, Some(log_id(3, 9)), &BTreeMap::new(), 1_000)
            .expect("a leader's view");
        assert_eq!(d.high_watermark, UNKNOWN);
    }

    #[test]
    fn majority_index_is_the_middle_of_the_sorted_ends() {
        assert_eq!(
            majority_index([Some(3), Some(7), Some(5)].into_iter()),
            Some(5)
        );
        assert_eq!(
            majority_index([Some(3), None, Some(5)].into_iter()),
            Some(3)
        );
        assert_eq!(majority_index([Some(3), None, None].into_iter()), None);
        assert_eq!(
            majority_index([Some(3), Some(4), Some(6), Some(8)].into_iter()),
            Some(4)
        );
        assert_eq!(majority_index([Some(3)].into_iter()), Some(3));
        assert_eq!(majority_index(std::iter::empty()), None);
    }

    #[test]
    fn a_follower_has_no_view_and_nothing_committed_is_unknown() {
        let mut metrics = leader_metrics(&[(1, Some(0))]);
        let d = describe(&metrics, None, &BTreeMap::new(), 1_000).expect("a leader's view");
        assert_eq!(d.high_watermark, UNKNOWN);
        metrics.current_leader = Some(2);
        metrics.state = ServerState::Follower;
        assert!(describe(&metrics, None, &BTreeMap::new(), 1_000).is_none());
        metrics.replication = None;
        metrics.current_leader = Some(1);
        assert!(describe(&metrics, None, &BTreeMap::new(), 1_000).is_none());
    }
}
