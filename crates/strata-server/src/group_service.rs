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

use bytes::BytesMut;
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_coord::consumer_group::{ConsumerGroupConfig, TopicView};
use strata_coord::{
    partition_for, GroupConfig, GroupCoordinator, OffsetsRecord, PendingReply, ReplyId,
    OFFSETS_TOPIC,
};
use strata_meta::{ControllerError, CreateTopicSpec, MetadataImage};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::replica_manager::now_ms;

/// Bytes read per step while loading the offsets topic.
const LOAD_READ_BYTES: usize = 1024 * 1024;

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
        let persisted = if records.is_empty() {
            Ok(())
        } else {
            self.persist(broker, &records)
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

    /// Creates `__consumer_offsets` if it does not exist yet (Kafka creates it on the first
    /// FindCoordinator for a group).
    pub fn ensure_offsets_topic(&self, broker: &Broker) -> Result<(), GroupServiceError> {
        if broker.image().topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let spec = CreateTopicSpec {
            name: OFFSETS_TOPIC.to_string(),
            num_partitions: self.partitions,
            replication_factor: broker
                .config
                .broker_value::<i16>("offsets.topic.replication.factor")
                .max(1),
            assignments: Vec::new(),
            configs: vec![
                ("cleanup.policy".into(), Some("compact".into())),
                ("compression.type".into(), Some("producer".into())),
                (
                    "segment.bytes".into(),
                    Some(
                        broker
                            .config
                            .broker_value::<i64>("offsets.topic.segment.bytes")
                            .to_string(),
                    ),
                ),
            ],
        };
        let defaults = (self.partitions, 1);
        let created = broker
            .commit(
                |image| match broker.controller.create_topic(image, &spec, defaults) {
                    Ok((_, records)) => (records, Ok(())),
                    Err(ControllerError::TopicAlreadyExists(_)) => (Vec::new(), Ok(())),
                    Err(e) => (Vec::new(), Err(e)),
                },
            )
            .map_err(|e| GroupServiceError::CreateTopic(e.to_string()))?;
        created.map_err(|e| GroupServiceError::CreateTopic(e.to_string()))?;
        tracing::info!(partitions = self.partitions, "created {OFFSETS_TOPIC}");
        Ok(())
    }

    /// Appends records to their groups' partitions, one batch per partition.
    fn persist(&self, broker: &Broker, records: &[OffsetsRecord]) -> Result<(), GroupServiceError> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        let now = now_ms();
        for r in records {
            let (key, value) = r.encode();
            let partition = partition_for(r.group(), self.partitions);
            let batch = by_partition.entry(partition).or_default();
            batch.push(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: batch.len() as i64,
                sequence: -1,
                timestamp: now,
                key: Some(key),
                value,
                headers: IndexMap::new(),
            });
        }
        for (partition, batch) in by_partition {
            let hosted = broker
                .replicas
                .partition(OFFSETS_TOPIC, partition)
                .ok_or(GroupServiceError::NotHosted(partition))?;
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &batch,
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .map_err(|e| GroupServiceError::Corrupt(format!("cannot encode records: {e}")))?;
            let mut log = hosted.log();
            log.append_as_leader(&buf, hosted.leader_epoch, now)?;
        }
        Ok(())
    }

    /// Rebuilds groups and offsets from the offsets topic. Blocking; run at start-up.
    pub fn load(&self, broker: &Broker) -> Result<usize, GroupServiceError> {
        let mut coordinator = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let mut loaded = 0usize;
        for partition in 0..self.partitions {
            let Some(hosted) = broker.replicas.partition(OFFSETS_TOPIC, partition) else {
                continue;
            };
            let log = hosted.log();
            let mut offset = log.log_start_offset();
            while offset < log.log_end_offset() {
                let read = log.read(offset, LOAD_READ_BYTES, true)?;
                if read.records.is_empty() {
                    break;
                }
                let mut buf = read.records.clone();
                let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                    GroupServiceError::Corrupt(format!(
                        "undecodable batch in partition {partition}: {e}"
                    ))
                })?;
                let mut next = offset;
                for set in sets {
                    for record in set.records {
                        next = next.max(record.offset + 1);
                        if record.control || record.offset < offset {
                            continue;
                        }
                        let Some(key) = record.key.as_deref() else {
                            continue;
                        };
                        match OffsetsRecord::decode(key, record.value.as_deref()) {
                            Ok(Some(r)) => {
                                coordinator.load(r, now);
                                loaded += 1;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(partition, offset = record.offset, error = %e, "skipping record")
                            }
                        }
                    }
                }
                assert!(next > offset, "loading {OFFSETS_TOPIC} must make progress");
                offset = next;
            }
        }
        Ok(loaded)
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

/// Spawned once: advances the coordinator's clock (sessions, rebalance deadlines).
pub async fn tick_loop(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::broker::stopped(&mut stop) => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let topics = topic_views(&b.image());
            b.groups.run(&b, |c| c.tick(&topics, now_ms()))
        })
        .await;
    }
}
