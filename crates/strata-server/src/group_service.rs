//! Runs the group coordinator of `strata-coord` on this broker: a lock around the state
//! machine, a table of requests waiting for their JoinGroup/SyncGroup answer, the clock, and
//! the durability of its records in `__consumer_offsets`.
//!
//! Every call runs under the coordinator lock and, before the lock is released, appends the
//! records the call produced to the group's offsets-topic partition and then delivers the
//! completed replies, so that a client never sees an answer whose state is not yet on disk.
//! At start-up the offsets topic is read back to rebuild groups and committed offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_coord::consumer_group::{ConsumerGroupConfig, TopicView};
use strata_coord::{
    partition_for, GroupConfig, GroupCoordinator, OffsetsRecord, PendingReply, ReplyId,
    OFFSETS_TOPIC,
};
use strata_meta::MetadataImage;
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::internal_topics::{self, Replayed};
use crate::replica_manager::now_ms;

/// A transactional producer: id and epoch.
type Producer = (i64, i16);

pub struct GroupService {
    coordinator: Mutex<GroupCoordinator>,
    waiting: Mutex<HashMap<ReplyId, oneshot::Sender<PendingReply>>>,
    next_reply: AtomicU64,
    partitions: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupServiceError {
    #[error("cannot create {OFFSETS_TOPIC}: {0}")]
    CreateTopic(String),
    #[error("{OFFSETS_TOPIC} partition {0} is not hosted here")]
    NotHosted(i32),
    #[error("{OFFSETS_TOPIC}: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Log(#[from] strata_log::LogError),
}

impl GroupService {
    pub fn new(broker_config: &crate::config::ServerConfig) -> Self {
        let value = |name: &str| broker_config.broker_value::<i64>(name);
        let config = GroupConfig {
            min_session_timeout_ms: value("group.min.session.timeout.ms") as i32,
            max_session_timeout_ms: value("group.max.session.timeout.ms") as i32,
            initial_rebalance_delay_ms: value("group.initial.rebalance.delay.ms"),
            max_size: value("group.max.size").max(1) as usize,
            max_metadata_bytes: value("offset.metadata.max.bytes").max(0) as usize,
            offsets_retention_ms: value("offsets.retention.minutes").saturating_mul(60_000),
        };
        let consumer = ConsumerGroupConfig {
            session_timeout_ms: value("group.consumer.session.timeout.ms") as i32,
            heartbeat_interval_ms: value("group.consumer.heartbeat.interval.ms") as i32,
            max_size: value("group.consumer.max.size").max(1) as usize,
        };
        Self {
            coordinator: Mutex::new(GroupCoordinator::new(config, consumer)),
            waiting: Mutex::new(HashMap::new()),
            next_reply: AtomicU64::new(1),
            partitions: value("offsets.topic.num.partitions").max(1) as i32,
        }
    }

    /// A reply id and the receiver on which its answer will arrive.
    pub fn register(&self) -> (ReplyId, oneshot::Receiver<PendingReply>) {
        let id = self.next_reply.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        (id, rx)
    }

    /// Runs `f` on the coordinator, persists the records it produced, delivers its replies.
    /// Blocking (appends to the offsets topic): call from a blocking context.
    pub fn run<T>(&self, broker: &Broker, f: impl FnOnce(&mut GroupCoordinator) -> T) -> T {
        self.run_durable(broker, f).0
    }

    /// [`GroupService::run`], also saying whether the call's records reached the log. Callers
    /// that acknowledge durability (OffsetCommit) must not report success when they did not.
    pub fn run_durable<T>(
        &self,
        broker: &Broker,
        f: impl FnOnce(&mut GroupCoordinator) -> T,
    ) -> (T, Result<(), GroupServiceError>) {
        let mut coordinator = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        let value = f(&mut coordinator);
        let (records, replies) = coordinator.take_output();
        let txn_records = coordinator.take_txn_records();
        let persisted = if records.is_empty() && txn_records.is_empty() {
            Ok(())
        } else {
            self.persist(broker, &records, &txn_records)
        };
        if let Err(e) = &persisted {
            // The in-memory state is ahead of the log until the next successful write of the
            // same group; a restart reloads the last durable state.
            broker.metrics.storage_errors.add(1);
            tracing::error!(error = %e, "cannot write group coordinator records");
        }
        drop(coordinator);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for reply in replies {
            let id = match &reply {
                PendingReply::Join(id, _) | PendingReply::Sync(id, _) => *id,
            };
            if let Some(tx) = waiting.remove(&id) {
                // The client may have gone away; nothing to do then.
                let _ = tx.send(reply);
            }
        }
        (value, persisted)
    }

    /// Creates `__consumer_offsets` if it does not exist yet.
    pub fn ensure_offsets_topic(&self, broker: &Broker) -> Result<(), GroupServiceError> {
        internal_topics::ensure_topic(
            broker,
            OFFSETS_TOPIC,
            self.partitions,
            broker
                .config
                .broker_value("offsets.topic.replication.factor"),
            broker.config.broker_value("offsets.topic.segment.bytes"),
        )
        .map_err(GroupServiceError::CreateTopic)
    }

    /// Appends records to their groups' partitions: one batch per partition, and one
    /// transactional batch per partition and producer for transactional offset commits.
    fn persist(
        &self,
        broker: &Broker,
        records: &[OffsetsRecord],
        txn_records: &[(i64, i16, OffsetsRecord)],
    ) -> Result<(), GroupServiceError> {
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
            let hosted = broker
                .replicas
                .partition(OFFSETS_TOPIC, partition)
                .ok_or(GroupServiceError::NotHosted(partition))?;
            let buf = internal_topics::encode_batch(records, producer, now)
                .map_err(GroupServiceError::Corrupt)?;
            let mut log = hosted.log();
            match producer {
                None => log.append_as_leader(&buf, hosted.leader_epoch(), now)?,
                Some(_) => log.append_as_coordinator(&buf, hosted.leader_epoch(), now)?,
            };
        }
        Ok(())
    }

    /// Rebuilds groups and offsets from the offsets topic. Blocking; run at start-up.
    pub fn load(&self, broker: &Broker) -> Result<usize, GroupServiceError> {
        let mut coordinator = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let mut loaded = 0usize;
        let partitions = self.partitions;
        for partition in 0..partitions {
            internal_topics::replay(broker, OFFSETS_TOPIC, partition, |r| match r {
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
        }
        Ok(loaded)
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
pub async fn tick_loop(broker: Arc<Broker>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = crate::broker::Ticker::new(std::time::Duration::from_millis(100), stop);
    let retention_check_ms: i64 = broker
        .config
        .broker_value("offsets.retention.check.interval.ms");
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
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let topics = topic_views(&b.image());
            b.groups.run(&b, |c| {
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
