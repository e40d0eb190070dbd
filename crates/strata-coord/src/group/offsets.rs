//! Committed offsets: Kafka 4's `OffsetMetadataManager`. It owns every group's committed
//! offsets and the offsets that transactions committed but have not ended yet, answers
//! OffsetFetch, OffsetCommit, TxnOffsetCommit and OffsetDelete, ends transactions when their
//! marker is written, and expires offsets after `offsets.retention.minutes`.
//!
//! It knows nothing of members, generations or rebalances: where a request depends on the
//! group (may this member commit? is the group subscribed to this topic? is it empty, and
//! since when?), the coordinator asks the group metadata manager and hands its answer in.
//! Records it produces go to the log it is given, so that they keep their place among the
//! group's own records.
//!
//! Invariant: a group id has an entry here only while the group metadata manager has one for
//! it (a "simple" Empty group if nothing else); the coordinator removes both together. An
//! entry may be empty: whether a group has offsets is always read from its contents.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::GroupConfig;
use crate::offsets_topic::{CommittedOffset, OffsetsRecord};

/// Committed offsets per topic: (topic, [(partition, offset if committed)]).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A topic partition of a group's offsets.
type PartitionKey = (String, i32);

/// One group's offsets.
#[derive(Debug, Default)]
struct GroupOffsets {
    committed: BTreeMap<PartitionKey, CommittedOffset>,
    /// Offsets committed inside transactions, by producer id, until the transaction's marker.
    pending_txn: HashMap<i64, BTreeMap<PartitionKey, CommittedOffset>>,
}

impl GroupOffsets {
    fn is_empty(&self) -> bool {
        self.committed.is_empty() && self.pending_txn.is_empty()
    }
}

pub(super) struct OffsetMetadataManager {
    /// `offset.metadata.max.bytes`.
    max_metadata_bytes: usize,
    /// `offsets.retention.minutes`, in ms.
    retention_ms: i64,
    groups: HashMap<String, GroupOffsets>,
    /// Records of transactional offset commits: (producer id, producer epoch, record).
    txn_records: Vec<(i64, i16, OffsetsRecord)>,
}

/// The tombstone of one committed offset.
fn tombstone(group_id: &str, topic: &str, partition: i32) -> OffsetsRecord {
    OffsetsRecord::Offset {
        group: group_id.to_string(),
        topic: topic.to_string(),
        partition,
        value: None,
    }
}

impl OffsetMetadataManager {
    pub(super) fn new(config: &GroupConfig) -> Self {
        Self {
            max_metadata_bytes: config.max_metadata_bytes,
            retention_ms: config.offsets_retention_ms,
            groups: HashMap::new(),
            txn_records: Vec::new(),
        }
    }

    /// OffsetCommit (`producer` is `None`) or TxnOffsetCommit: one error code per offset, in
    /// order. `group` is the group's answer to the commit; unless it is `Ok`, nothing is
    /// stored and every offset gets its error. A committed offset is written to `records`; a
    /// transactional one goes to the producer's records and stays pending until the
    /// transaction ends ([`Self::complete_transaction`]).
    pub(super) fn commit(
        &mut self,
        group_id: &str,
        group: Result<(), ResponseError>,
        offsets: &[OffsetCommit],
        producer: Option<(i64, i16)>,
        now_ms: i64,
        records: &mut Vec<OffsetsRecord>,
    ) -> Vec<i16> {
        if let Err(e) = group {
            return vec![e.code(); offsets.len()];
        }
        let group = self.groups.entry(group_id.to_string()).or_default();
        let mut results = Vec::with_capacity(offsets.len());
        for o in offsets {
            let metadata = o.metadata.clone().unwrap_or_default();
            if metadata.len() > self.max_metadata_bytes {
                results.push(ResponseError::OffsetMetadataTooLarge.code());
                continue;
            }
            let value = CommittedOffset {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
            };
            let record = OffsetsRecord::Offset {
                group: group_id.to_string(),
                topic: o.topic.clone(),
                partition: o.partition,
                value: Some(value.clone()),
            };
            match producer {
                None => {
                    group
                        .committed
                        .insert((o.topic.clone(), o.partition), value);
                    records.push(record);
                }
                Some((producer_id, producer_epoch)) => {
                    group
                        .pending_txn
                        .entry(producer_id)
                        .or_default()
                        .insert((o.topic.clone(), o.partition), value);
                    self.txn_records.push((producer_id, producer_epoch, record));
                }
            }
            results.push(0);
        }
        results
    }

    /// Transactional offset-commit records since the last call: the caller writes them as
    /// transactional batches of their producer.
    pub(super) fn take_txn_records(&mut self) -> Vec<(i64, i16, OffsetsRecord)> {
        std::mem::take(&mut self.txn_records)
    }

    /// Ends the transaction of `producer_id` for every group whose offsets partition is
    /// `offsets_partition`: a commit makes its pending offsets the committed ones.
    pub(super) fn complete_transaction(
        &mut self,
        producer_id: i64,
        commit: bool,
        offsets_partition: i32,
        partition_of: impl Fn(&str) -> i32,
    ) {
        for (group_id, group) in self.groups.iter_mut() {
            if partition_of(group_id) != offsets_partition {
                continue;
            }
            if let Some(pending) = group.pending_txn.remove(&producer_id) {
                if commit {
                    group.committed.extend(pending);
                }
            }
        }
    }

    /// Whether a transaction holds uncommitted offsets for this group partition
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub(super) fn has_pending_txn_offset(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> bool {
        self.groups.get(group_id).is_some_and(|g| {
            g.pending_txn
                .values()
                .any(|p| p.contains_key(&(topic.to_string(), partition)))
        })
    }

    /// Committed offsets of `group_id`: for the listed partitions (`None` for ones without a
    /// commit), or every committed partition when `topics` is `None`.
    pub(super) fn fetch(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> TopicOffsets {
        let committed = self.groups.get(group_id).map(|g| &g.committed);
        match topics {
            Some(topics) => topics
                .iter()
                .map(|(t, parts)| {
                    let found = parts
                        .iter()
                        .map(|p| (*p, committed.and_then(|c| c.get(&(t.clone(), *p)).cloned())))
                        .collect();
                    (t.clone(), found)
                })
                .collect(),
            None => {
                let mut out: TopicOffsets = Vec::new();
                for ((t, p), o) in committed.into_iter().flatten() {
                    match out.last_mut() {
                        Some((name, parts)) if name == t => parts.push((*p, Some(o.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(o.clone()))])),
                    }
                }
                out
            }
        }
    }

    /// OffsetDelete: the group-level error, or one error code per partition. `group` is the
    /// group's answer: its error, or its members' subscriptions (empty when the group is
    /// Empty); a partition of a topic that `subscribed` finds in them is refused with
    /// GROUP_SUBSCRIBED_TO_TOPIC. Deleted offsets get a tombstone in `records`.
    pub(super) fn delete(
        &mut self,
        group_id: &str,
        group: Result<Vec<Bytes>, ResponseError>,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&[Bytes], &str) -> bool,
        records: &mut Vec<OffsetsRecord>,
    ) -> Result<Vec<i16>, i16> {
        let subscriptions = group.map_err(|e| e.code())?;
        let mut offsets = self.groups.get_mut(group_id);
        let mut results = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            if !subscriptions.is_empty() && subscribed(&subscriptions, topic) {
                results.push(ResponseError::GroupSubscribedToTopic.code());
                continue;
            }
            let key = (topic.clone(), *partition);
            if offsets
                .as_mut()
                .is_some_and(|g| g.committed.remove(&key).is_some())
            {
                records.push(tombstone(group_id, topic, *partition));
            }
            results.push(0);
        }
        Ok(results)
    }

    /// Offsets retention (KIP-211) for a group that has been Empty since `empty_since_ms`:
    /// a committed offset expires `offsets.retention.minutes` after the later of the group
    /// emptying and the commit; each expired one gets a tombstone in `records`. Returns how
    /// many expired, and whether the group has no offsets left (committed or pending), when
    /// the group itself may go (Kafka's `cleanupExpiredOffsets`).
    pub(super) fn expire(
        &mut self,
        group_id: &str,
        empty_since_ms: i64,
        now_ms: i64,
        records: &mut Vec<OffsetsRecord>,
    ) -> (usize, bool) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return (0, true);
        };
        let retention_ms = self.retention_ms;
        let before = group.committed.len();
        group.committed.retain(|(topic, partition), o| {
            let expired = now_ms - o.commit_timestamp_ms.max(empty_since_ms) >= retention_ms;
            if expired {
                records.push(tombstone(group_id, topic, *partition));
            }
            !expired
        });
        let expired = before - group.committed.len();
        let none_left = group.is_empty();
        if none_left {
            self.groups.remove(group_id);
        }
        (expired, none_left)
    }

    /// Forgets the group's offsets, committed and pending, writing a tombstone for each
    /// committed one (DeleteGroups).
    pub(super) fn delete_group(&mut self, group_id: &str, records: &mut Vec<OffsetsRecord>) {
        if let Some(group) = self.groups.remove(group_id) {
            for (topic, partition) in group.committed.keys() {
                records.push(tombstone(group_id, topic, *partition));
            }
        }
    }

    /// Forgets whatever is left of a group that has no offsets (see [`Self::has_offsets`]) and
    /// is going away.
    pub(super) fn forget(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// Forgets the offsets of every group that `moved` selects, without records: another
    /// broker leads their offsets-topic partition now.
    pub(super) fn unload_groups(&mut self, moved: impl Fn(&str) -> bool) {
        self.groups.retain(|g, _| !moved(g));
    }

    /// Whether the group has offsets, committed or pending.
    pub(super) fn has_offsets(&self, group_id: &str) -> bool {
        self.groups.get(group_id).is_some_and(|g| !g.is_empty())
    }

    /// Applies an offset record read back from the offsets topic at start-up.
    pub(super) fn replay(
        &mut self,
        group_id: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    ) {
        match value {
            Some(v) => {
                let group = self.groups.entry(group_id).or_default();
                group.committed.insert((topic, partition), v);
            }
            None => {
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.committed.remove(&(topic, partition));
                    if group.is_empty() {
                        self.groups.remove(&group_id);
                    }
                }
            }
        }
    }

    /// Applies a transactional offset record read back at start-up: pending until its marker.
    pub(super) fn replay_txn(
        &mut self,
        producer_id: i64,
        group_id: String,
        topic: String,
        partition: i32,
        value: CommittedOffset,
    ) {
        self.groups
            .entry(group_id)
            .or_default()
            .pending_txn
            .entry(producer_id)
            .or_default()
            .insert((topic, partition), value);
    }
}

#[cfg(test)]
mod tests;
