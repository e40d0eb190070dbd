//! Runs the group coordinator of `strata-coord` on this broker: a lock around the state
//! machine, a table of requests waiting for their JoinGroup/SyncGroup answer, the clock, and
//! the durability of its records in `__consumer_offsets`.
//!
//! Every call runs under the coordinator lock and, before the lock is released, appends the
//! records the call produced to the group's offsets-topic partition and then delivers the
//! completed replies, so that a client never sees an answer whose state is not yet on disk.
//! The groups of an offsets-topic partition live on the broker that leads it (Kafka's
//! `GroupMetadataManager`): they are read back from the partition when this broker starts
//! leading it (on the first request after, or when the metadata says so) and forgotten when
//! it stops; a request for a group whose partition is led elsewhere gets NOT_COORDINATOR.
//! On a replicated offsets partition, answers wait until the records are in the ISR (as
//! Kafka's coordinator appends with acks=all).
//!
//! When the records of a call cannot be appended, the call did not happen: its replies carry
//! the error Kafka's group coordinator maps the failure to, and its changes are dropped by
//! forgetting the groups of the partitions it wrote to, which are read back from the log on
//! their next request (Kafka 4 reverts the coordinator to its last written snapshot).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use strata_coord::consumer_group::{ConsumerGroupConfig, MigrationPolicy, TopicView};
use strata_coord::{
    partition_for, GroupConfig, GroupCoordinator, OffsetsRecord, PendingReply, ReplyId,
    OFFSETS_TOPIC,
};
use strata_durable::LockExt;
use strata_meta::config::{props, BrokerProperty};
use strata_meta::MetadataImage;
use tokio::sync::oneshot;

use crate::config::ServerConfig;
use crate::internal_topics::{self, Replayed};
use crate::metadata_changes::MetadataChanges;
use crate::metrics::Metrics;
use crate::replica_manager::{now_ms, wait_all_replicated, Partition, ReplicaManager};

/// A transactional producer: id and epoch.
type Producer = (i64, i16);

pub struct GroupService {
    replicas: Arc<ReplicaManager>,
    meta: Arc<MetadataChanges>,
    metrics: Arc<Metrics>,
    config: Arc<ServerConfig>,
    coordinator: Mutex<GroupCoordinator>,
    waiting: Mutex<HashMap<ReplyId, oneshot::Sender<PendingReply>>>,
    next_reply: AtomicU64,
    partitions: i32,
    /// Offsets-topic partitions whose groups are in the coordinator (led here). Lock order:
    /// after the coordinator lock.
    loaded: Mutex<BTreeSet<i32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupServiceError {
    #[error("cannot create {OFFSETS_TOPIC}: {0}")]
    CreateTopic(String),
    #[error("{OFFSETS_TOPIC} partition {0} is not hosted here")]
    NotHosted(i32),
    #[error("{OFFSETS_TOPIC} partition {0} is no longer led here")]
    NotLeader(i32),
    #[error("{OFFSETS_TOPIC}: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Log(#[from] strata_log::LogError),
    #[error(
        "{OFFSETS_TOPIC} partition {0}: the in-sync replicas did not confirm the records in time"
    )]
    NotReplicated(i32),
}

impl GroupServiceError {
    /// The error a client gets when its call's records could not be made durable, as Kafka's
    /// `GroupCoordinatorService` maps append failures: the partition moved or its storage
    /// failed: NOT_COORDINATOR (the client looks the coordinator up again); the replicas did
    /// not confirm or the topic is missing: COORDINATOR_NOT_AVAILABLE; records the log refuses
    /// (too large) or cannot encode: UNKNOWN_SERVER_ERROR.
    pub fn response_error(&self) -> ResponseError {
        match self {
            GroupServiceError::NotHosted(_) | GroupServiceError::NotLeader(_) => {
                ResponseError::NotCoordinator
            }
            GroupServiceError::CreateTopic(_) | GroupServiceError::NotReplicated(_) => {
                ResponseError::CoordinatorNotAvailable
            }
            GroupServiceError::Log(e) => internal_topics::append_error(e),
            GroupServiceError::Corrupt(_) => ResponseError::UnknownServerError,
        }
    }
}

/// How long an answer waits for its records to reach the ISR (Kafka's
/// `offsets.commit.timeout.ms`).
const REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl GroupService {
    pub fn new(
        broker_config: Arc<ServerConfig>,
        replicas: Arc<ReplicaManager>,
        meta: Arc<MetadataChanges>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let value = |key: BrokerProperty<i64>| broker_config.broker_value(key);
        let config = GroupConfig {
            min_session_timeout_ms: value(props::GROUP_MIN_SESSION_TIMEOUT_MS) as i32,
            max_session_timeout_ms: value(props::GROUP_MAX_SESSION_TIMEOUT_MS) as i32,
            initial_rebalance_delay_ms: value(props::GROUP_INITIAL_REBALANCE_DELAY_MS),
            max_size: value(props::GROUP_MAX_SIZE).max(1) as usize,
            max_metadata_bytes: value(props::OFFSET_METADATA_MAX_BYTES).max(0) as usize,
            offsets_retention_ms: value(props::OFFSETS_RETENTION_MINUTES).saturating_mul(60_000),
        };
        let consumer = ConsumerGroupConfig {
            session_timeout_ms: value(props::GROUP_CONSUMER_SESSION_TIMEOUT_MS) as i32,
            heartbeat_interval_ms: value(props::GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS) as i32,
            max_size: value(props::GROUP_CONSUMER_MAX_SIZE).max(1) as usize,
            // The config's validator admits only Kafka's names, in any case.
            migration_policy: MigrationPolicy::parse(
                &broker_config.broker_value(props::GROUP_CONSUMER_MIGRATION_POLICY),
            )
            .unwrap_or_default(),
            classic_max_size: value(props::GROUP_MAX_SIZE).max(1) as usize,
        };
        let partitions = value(props::OFFSETS_TOPIC_NUM_PARTITIONS).max(1) as i32;
        Self {
            replicas,
            meta,
            metrics,
            config: broker_config.clone(),
            coordinator: Mutex::new(GroupCoordinator::new(config, consumer)),
            waiting: Mutex::new(HashMap::new()),
            next_reply: AtomicU64::new(1),
            partitions,
            loaded: Mutex::new(BTreeSet::new()),
        }
    }

    /// A reply id and the receiver on which its answer will arrive.
    pub fn register(&self) -> (ReplyId, oneshot::Receiver<PendingReply>) {
        let id = self.next_reply.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.locked().insert(id, tx);
        (id, rx)
    }

    /// Runs `f` on the coordinator, persists the records it produced, delivers its replies.
    /// Blocking (appends to the offsets topic): call from a blocking context.
    pub fn run<T>(&self, f: impl FnOnce(&mut GroupCoordinator) -> T) -> T {
        self.run_durable(f).0
    }

    /// [`GroupService::run`], also saying whether the call's records reached the log. Callers
    /// that acknowledge durability (OffsetCommit) must not report success when they did not;
    /// replies to JoinGroup and SyncGroup that the call completed carry the error then.
    pub fn run_durable<T>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator) -> T,
    ) -> (T, Result<(), GroupServiceError>) {
        let mut coordinator = self.coordinator.locked();
        let value = f(&mut coordinator);
        let (records, mut replies) = coordinator.take_output();
        let txn_records = coordinator.take_txn_records();
        let mut persisted = if records.is_empty() && txn_records.is_empty() {
            Ok(Vec::new())
        } else {
            self.persist(&records, &txn_records)
        };
        let mut forgotten = Vec::new();
        if persisted.is_err() {
            // The log is the truth: what the call changed is dropped with the groups of the
            // partitions it wrote to, read back from the log on their next request.
            let partitions: BTreeSet<i32> = records
                .iter()
                .chain(txn_records.iter().map(|(_, _, r)| r))
                .map(|r| partition_for(r.group(), self.partitions))
                .collect();
            forgotten = self.forget_partitions(&mut coordinator, &partitions);
        }
        drop(coordinator);
        // Outside the coordinator lock: other groups go on while these records replicate.
        if let Ok(appended) = &persisted {
            if let Err(partition) = wait_all_replicated(appended, REPLICATION_WAIT) {
                persisted = Err(GroupServiceError::NotReplicated(partition));
            }
        }
        if let Err(e) = &persisted {
            self.metrics.storage_errors.add(1);
            tracing::error!(error = %e, "cannot write group coordinator records");
            let error = e.response_error();
            replies = replies.into_iter().map(|r| failed(r, error)).collect();
        }
        replies.append(&mut forgotten);
        self.deliver(replies);
        (value, persisted.map(|_| ()))
    }

    /// Forgets the groups of `partitions` (their waiting members get NOT_COORDINATOR, as on
    /// a move) and marks the partitions unloaded, so that the next request for one of their
    /// groups reads them back from the log. Returns the replies to the waiting members.
    fn forget_partitions(
        &self,
        coordinator: &mut GroupCoordinator,
        partitions: &BTreeSet<i32>,
    ) -> Vec<PendingReply> {
        let count = self.partitions;
        coordinator.unload_groups(|g| partitions.contains(&partition_for(g, count)));
        let mut loaded = self.loaded.locked();
        for partition in partitions {
            loaded.remove(partition);
        }
        let (records, replies) = coordinator.take_output();
        debug_assert!(records.is_empty(), "unloading writes nothing");
        replies
    }

    /// Whether this broker coordinates `group`: it leads the group's offsets-topic partition.
    /// Loads the partition's groups on first use after this broker became its leader, and
    /// forgets them once another broker leads it. Blocking.
    pub fn coordinates(&self, group: &str) -> bool {
        let partition = self.partition_of(group);
        self.sync_partition(partition)
    }

    /// Loads or forgets the groups of every offsets-topic partition to match leadership
    /// (after each metadata image, so that members waiting on a moved group hear of it).
    /// Blocking.
    pub fn sync_leadership(&self) {
        for partition in 0..self.partitions {
            self.sync_partition(partition);
        }
    }

    /// Brings one partition's groups in line with its leadership; returns whether it is led
    /// (and loaded) here.
    fn sync_partition(&self, partition: i32) -> bool {
        let leads = self
            .replicas
            .partition(OFFSETS_TOPIC, partition)
            .is_some_and(|p| p.is_leader());
        let loaded = self.loaded.locked().contains(&partition);
        if leads == loaded {
            return leads;
        }
        let partitions = self.partitions;
        let mut coordinator = self.coordinator.locked();
        let mut loaded = self.loaded.locked();
        if leads && !loaded.contains(&partition) {
            match load_partition(&self.replicas, &mut coordinator, partition, partitions) {
                Ok(records) => {
                    tracing::info!(
                        partition,
                        records,
                        "became the coordinator of an offsets partition"
                    );
                    loaded.insert(partition);
                }
                Err(e) => {
                    tracing::error!(partition, error = %e, "cannot load the groups of an offsets partition");
                    return false;
                }
            }
        } else if !leads && loaded.remove(&partition) {
            let groups = coordinator.unload_groups(|g| partition_for(g, partitions) == partition);
            tracing::info!(
                partition,
                groups,
                "no longer the coordinator of an offsets partition"
            );
            drop(loaded);
            let (_, replies) = coordinator.take_output();
            drop(coordinator);
            self.deliver(replies);
        }
        leads
    }

    fn deliver(&self, replies: Vec<PendingReply>) {
        let mut waiting = self.waiting.locked();
        for reply in replies {
            let id = match &reply {
                PendingReply::Join(id, _) | PendingReply::Sync(id, _) => *id,
            };
            if let Some(tx) = waiting.remove(&id) {
                // The client may have gone away; nothing to do then.
                let _ = tx.send(reply);
            }
        }
    }

    /// Creates `__consumer_offsets` if it does not exist yet.
    pub fn ensure_offsets_topic(&self) -> Result<(), GroupServiceError> {
        internal_topics::ensure_topic(
            &self.meta,
            OFFSETS_TOPIC,
            self.partitions,
            self.config
                .broker_value(props::OFFSETS_TOPIC_REPLICATION_FACTOR),
            self.config.broker_value(props::OFFSETS_TOPIC_SEGMENT_BYTES),
        )
        .map_err(GroupServiceError::CreateTopic)
    }

    /// Appends records to their groups' partitions: one batch per partition, and one
    /// transactional batch per partition and producer for transactional offset commits.
    /// Returns, for replicated partitions, where the high watermark must reach.
    fn persist(
        &self,
        records: &[OffsetsRecord],
        txn_records: &[(i64, i16, OffsetsRecord)],
    ) -> Result<Vec<(Arc<Partition>, i64)>, GroupServiceError> {
        let mut appended = Vec::new();
        let now = now_ms();
        // (offsets partition, transactional producer) → records of one batch
        let mut batches: BTreeMap<(i32, Option<Producer>), Vec<_>> = BTreeMap::new();
        let plain = records.iter().map(|r| (None, r));
        let transactional = txn_records.iter().map(|(p, e, r)| (Some((*p, *e)), r));
        for (producer, r) in plain.chain(transactional) {
            let partition = partition_for(r.group(), self.partitions);
            batches
                .entry((partition, producer))
                .or_default()
                .push(r.encode());
        }
        for ((partition, producer), records) in batches {
            let hosted = self
                .replicas
                .partition(OFFSETS_TOPIC, partition)
                .ok_or(GroupServiceError::NotHosted(partition))?;
            // Leadership may have moved since the caller checked it (`coordinates`).
            if !hosted.is_leader() {
                return Err(GroupServiceError::NotLeader(partition));
            }
            let buf = internal_topics::encode_batch(records, producer, now)
                .map_err(GroupServiceError::Corrupt)?;
            let mut log = hosted.log();
            let info = match producer {
                None => log.append_as_leader(&buf, hosted.leader_epoch(), now)?,
                Some(_) => log.append_as_coordinator(&buf, hosted.leader_epoch(), now)?,
            };
            hosted.after_leader_append(&mut log, now);
            drop(log);
            if hosted.is_replicated_leader() {
                appended.push((hosted, info.last_offset + 1));
            }
        }
        self.replicas.notify_appended();
        Ok(appended)
    }

    /// Partitions of `__consumer_offsets`.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The offsets-topic partition of a group.
    pub fn partition_of(&self, group: &str) -> i32 {
        partition_for(group, self.partitions)
    }
}

/// A successful JoinGroup or SyncGroup answer of a call whose records were not made durable,
/// turned into `error`; answers that already carry an error acknowledge nothing and stay. The
/// response was built for its request's version, and only fields every version has change
/// (or go back to their defaults), so it still encodes for that version.
fn failed(reply: PendingReply, error: ResponseError) -> PendingReply {
    match reply {
        PendingReply::Join(id, mut r) if r.error_code == 0 => {
            r.error_code = error.code();
            r.generation_id = -1;
            r.leader = StrBytes::default();
            r.members.clear();
            r.skip_assignment = false;
            r.protocol_name = r.protocol_name.map(|_| StrBytes::default());
            PendingReply::Join(id, r)
        }
        PendingReply::Sync(id, r) if r.error_code == 0 => PendingReply::Sync(
            id,
            kafka_protocol::messages::SyncGroupResponse::default()
                .with_throttle_time_ms(r.throttle_time_ms)
                .with_error_code(error.code()),
        ),
        other => other,
    }
}

/// Replays one offsets-topic partition into the coordinator. Blocking.
fn load_partition(
    replicas: &ReplicaManager,
    coordinator: &mut GroupCoordinator,
    partition: i32,
    partitions: i32,
) -> Result<usize, GroupServiceError> {
    let now = now_ms();
    let mut loaded = 0usize;
    internal_topics::replay(replicas, OFFSETS_TOPIC, partition, |r| match r {
        Replayed::Marker(m) => {
            coordinator.complete_transaction(m.producer_id, m.commit, partition, |g| {
                partition_for(g, partitions)
            })
        }
        Replayed::Data {
            transactional_producer,
            key,
            value,
        } => match OffsetsRecord::decode(&key, value.as_deref()) {
            Ok(Some(record)) => {
                loaded += 1;
                match transactional_producer {
                    Some(pid) => coordinator.load_txn_offset(pid, record, now),
                    None => coordinator.load(record, now),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(partition, error = %e, "skipping record"),
        },
    })
    .map_err(GroupServiceError::Corrupt)?;
    Ok(loaded)
}

/// The cluster's topics as KIP-848 assignors see them.
pub fn topic_views(image: &MetadataImage) -> Vec<TopicView> {
    image
        .topics()
        .map(|t| TopicView {
            name: t.name.clone(),
            id: t.topic_id,
            partitions: t.partitions.len() as i32,
        })
        .collect()
}

/// Spawned once: advances the coordinator's clock (sessions, rebalance deadlines) and
/// expires offsets every `offsets.retention.check.interval.ms`.
pub async fn tick_loop(groups: Arc<GroupService>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = crate::task::Ticker::new(std::time::Duration::from_millis(100), stop);
    let retention_check_ms: i64 = groups
        .config
        .broker_value(props::OFFSETS_RETENTION_CHECK_INTERVAL_MS);
    let mut last_retention_check = now_ms();
    loop {
        if !ticker.tick().await {
            return;
        }
        let now = now_ms();
        let check_retention = now - last_retention_check >= retention_check_ms;
        if check_retention {
            last_retention_check = now;
        }
        let g = groups.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let topics = topic_views(&g.meta.image());
            g.run(|c| {
                c.tick(&topics, now);
                if check_retention {
                    let expired = c.expire_offsets(now);
                    if expired > 0 {
                        tracing::info!(expired, "expired committed offsets of empty groups");
                    }
                }
            })
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
