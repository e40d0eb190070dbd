//! Runs the transaction coordinator of `strata-coord` on this broker: its state in
//! `__transaction_state`, and the transaction markers it asks for.
//!
//! Every call runs under the coordinator lock; before the lock is released, the state records
//! are appended to the transactional id's `__transaction_state` partition and the markers of
//! transactions that reached PrepareCommit/PrepareAbort are written to every partition of the
//! transaction (and, for `__consumer_offsets` partitions, the group coordinator makes the
//! transaction's offsets visible or drops them). A marker that cannot be written is retried on
//! the next tick; the transaction stays prepared until then, holding the last stable offset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_coord::txn::{
    MarkerWork, TransactionCoordinator, TxnConfig, TxnRecord, TRANSACTION_STATE_TOPIC,
};
use strata_coord::{partition_for, OFFSETS_TOPIC};

use crate::broker::Broker;
use crate::broker_client::BrokerConnection;
use crate::internal_topics::{self, Replayed};
use crate::replica_manager::now_ms;

/// The coordinator epoch written into markers: one coordinator per transactional id on a
/// single node, so it never changes.
const COORDINATOR_EPOCH: i32 = 0;
/// Longest wait for another broker to write a transaction's markers.
const MARKER_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct TxnService {
    coordinator: Mutex<TransactionCoordinator>,
    /// Marker work that failed (I/O error) and is tried again on the next tick.
    retry: Mutex<Vec<MarkerWork>>,
    partitions: i32,
}

impl TxnService {
    pub fn new(config: &crate::config::ServerConfig) -> Self {
        Self {
            coordinator: Mutex::new(TransactionCoordinator::new(TxnConfig {
                max_timeout_ms: config.broker_value::<i64>("transaction.max.timeout.ms") as i32,
            })),
            retry: Mutex::new(Vec::new()),
            partitions: config
                .broker_value::<i64>("transaction.state.log.num.partitions")
                .max(1) as i32,
        }
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.partitions)
    }

    /// Creates `__transaction_state` if it does not exist yet. Blocking.
    pub fn ensure_topic(&self, broker: &Broker) -> Result<(), ResponseError> {
        internal_topics::ensure_topic(
            broker,
            TRANSACTION_STATE_TOPIC,
            self.partitions,
            broker
                .config
                .broker_value("transaction.state.log.replication.factor"),
            broker
                .config
                .broker_value("transaction.state.log.segment.bytes"),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "transaction coordinator unavailable");
            ResponseError::CoordinatorNotAvailable
        })
    }

    /// Runs `f` on the coordinator, then persists its state and writes the markers it asks
    /// for. Blocking. If the state cannot be persisted, the call's result is replaced by
    /// COORDINATOR_NOT_AVAILABLE-like failure through `Err`.
    pub fn run<T>(
        &self,
        broker: &Broker,
        f: impl FnOnce(&mut TransactionCoordinator) -> T,
    ) -> Result<T, ResponseError> {
        let mut coordinator = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        let value = f(&mut coordinator);
        let mut retry = std::mem::take(&mut *self.retry.lock().unwrap_or_else(|p| p.into_inner()));
        loop {
            let (records, mut markers) = coordinator.take_output();
            markers.append(&mut retry);
            if records.is_empty() && markers.is_empty() {
                break;
            }
            if let Err(e) = self.persist(broker, &records) {
                broker.metrics.storage_errors.add(1);
                tracing::error!(error = %e, "cannot write transaction state");
                // Kafka answers NOT_COORDINATOR when the state log cannot be written.
                self.retry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(markers);
                return Err(ResponseError::NotCoordinator);
            }
            for work in markers {
                match self.write_markers(broker, &work) {
                    Ok(()) => coordinator.complete_markers(&work, now_ms()),
                    Err(e) => {
                        broker.metrics.storage_errors.add(1);
                        tracing::error!(transactional_id = %work.transactional_id, error = %e, "cannot write transaction markers; will retry");
                        retry.push(work);
                    }
                }
            }
            if !retry.is_empty() {
                self.retry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&mut retry);
                break;
            }
        }
        Ok(value)
    }

    fn persist(&self, broker: &Broker, records: &[TxnRecord]) -> Result<(), String> {
        let now = now_ms();
        let mut by_partition: BTreeMap<i32, Vec<_>> = BTreeMap::new();
        for r in records {
            let partition = partition_for(&r.0.transactional_id, self.partitions);
            let (key, value) = r.encode();
            by_partition
                .entry(partition)
                .or_default()
                .push((key, Some(value)));
        }
        for (partition, records) in by_partition {
            let hosted = broker
                .replicas
                .partition(TRANSACTION_STATE_TOPIC, partition)
                .ok_or_else(|| {
                    format!("{TRANSACTION_STATE_TOPIC} partition {partition} is not hosted here")
                })?;
            let buf = internal_topics::encode_batch(records, None, now)?;
            hosted
                .log()
                .append_as_leader(&buf, hosted.leader_epoch(), now)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Writes the markers of one transaction to all of its partitions: those led here
    /// directly, the others with WriteTxnMarkers to their leaders. Partitions that no longer
    /// exist (deleted topics) are skipped, as Kafka does. An error leaves the work to be
    /// retried (markers are idempotent for a partition whose transaction already ended).
    fn write_markers(&self, broker: &Broker, work: &MarkerWork) -> Result<(), String> {
        let image = broker.image();
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, index) in &work.partitions {
            let Some(assigned) = image
                .topic(topic)
                .and_then(|t| t.partitions.get(*index as usize))
            else {
                tracing::warn!(%topic, partition = index, "transaction partition is gone; skipping its marker");
                continue;
            };
            if assigned.leader != broker.config.node_id {
                if assigned.leader < 0 {
                    return Err(format!("{topic}-{index} has no leader"));
                }
                remote
                    .entry(assigned.leader)
                    .or_default()
                    .push((topic.clone(), *index));
                continue;
            }
            let partition = crate::handlers::hosted(broker, topic, *index)
                .map_err(|e| format!("{topic}-{index}: {e:?}"))?;
            append_marker(
                broker,
                &partition,
                work.producer_id,
                work.producer_epoch,
                work.commit,
                COORDINATOR_EPOCH,
            )
            .map_err(|e| format!("{topic}-{index}: {e}"))?;
        }
        broker.replicas.notify_appended();
        for (leader, partitions) in remote {
            send_markers(broker, leader, work, &partitions)?;
        }
        tracing::info!(transactional_id = %work.transactional_id, commit = work.commit, partitions = work.partitions.len(), "transaction markers written");
        Ok(())
    }

    /// Rebuilds transaction state at start-up and completes prepared transactions. Blocking.
    pub fn load(&self, broker: &Broker) -> Result<usize, String> {
        let mut loaded = 0usize;
        {
            let mut coordinator = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
            for partition in 0..self.partitions {
                internal_topics::replay(broker, TRANSACTION_STATE_TOPIC, partition, |r| {
                    if let Replayed::Data { key, value, .. } = r {
                        match TxnRecord::decode(&key, value.as_deref()) {
                            Ok(Some(record)) => {
                                coordinator.load(record);
                                loaded += 1;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(partition, error = %e, "skipping transaction record")
                            }
                        }
                    }
                })?;
            }
        }
        self.run(broker, |_| ()).map_err(|e| format!("{e:?}"))?;
        Ok(loaded)
    }
}

/// Appends one transaction marker to a partition led here, as the coordinator's
/// WriteTxnMarkers does, and completes the transaction's offsets when the partition is an
/// offsets-topic one. Blocking.
pub(crate) fn append_marker(
    broker: &Broker,
    partition: &crate::replica_manager::Partition,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), strata_log::LogError> {
    let now = now_ms();
    {
        let mut log = partition.log();
        log.append_txn_marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            partition.leader_epoch(),
            now,
        )?;
        partition.after_leader_append(&mut log, now);
    }
    if partition.topic == OFFSETS_TOPIC {
        let offsets_partitions = broker.groups.partitions();
        broker.groups.run(broker, |g| {
            g.complete_transaction(producer_id, commit, partition.index, |group| {
                partition_for(group, offsets_partitions)
            })
        });
    }
    Ok(())
}

/// WriteTxnMarkers to `leader` for `partitions` of one transaction. Blocking (waits on the
/// runtime, at most [`MARKER_REQUEST_TIMEOUT`]).
fn send_markers(
    broker: &Broker,
    leader: i32,
    work: &MarkerWork,
    partitions: &[(String, i32)],
) -> Result<(), String> {
    let image = broker.image();
    let address = image
        .broker(leader)
        .filter(|b| !b.fenced)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or_else(|| format!("leader {leader} is not available"))?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(work.producer_id))
            .with_producer_epoch(work.producer_epoch)
            .with_transaction_result(work.commit)
            .with_coordinator_epoch(COORDINATOR_EPOCH)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            )]);
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    let response: WriteTxnMarkersResponse = runtime
        .block_on(async {
            tokio::time::timeout(MARKER_REQUEST_TIMEOUT, async {
                let mut conn =
                    BrokerConnection::connect(&address, "strata-txn-coordinator").await?;
                conn.send(ApiKey::WriteTxnMarkers, 1, &request).await
            })
            .await
        })
        .map_err(|_| format!("WriteTxnMarkers to broker {leader} timed out"))?
        .map_err(|e| format!("WriteTxnMarkers to broker {leader}: {e}"))?;
    for marker in response.markers {
        for topic in marker.topics {
            for p in topic.partitions {
                if p.error_code != 0 {
                    return Err(format!(
                        "broker {leader} refused the marker for {}-{}: error {}",
                        topic.name.as_str(),
                        p.partition_index,
                        p.error_code
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Spawned once: aborts timed-out transactions and retries failed markers.
pub async fn tick_loop(broker: Arc<Broker>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = crate::broker::Ticker::new(std::time::Duration::from_millis(100), stop);
    loop {
        if !ticker.tick().await {
            return;
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.txns.run(&b, |c| c.tick(now_ms()))).await;
    }
}
