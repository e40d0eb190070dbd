//! Runs the transaction coordinator of `strata-coord` on this broker: its state in
//! `__transaction_state`, and the transaction markers it asks for.
//!
//! The transactions of a `__transaction_state` partition live on the broker that leads it
//! (Kafka's `TransactionStateManager`): they are read back when this broker starts leading
//! it and forgotten when it stops; a request for a transactional id whose partition is led
//! elsewhere gets NOT_COORDINATOR. The partition's leader epoch when it was loaded is the
//! coordinator epoch written into markers, so that a partition leader refuses the markers
//! of a coordinator that has since been replaced.
//!
//! Every call runs under the coordinator lock, and before the lock is released its state
//! records are appended to the transactional id's partition. The answer then waits, without
//! the lock, until a replicated partition's in-sync replicas have them. The markers of
//! transactions that reached PrepareCommit/PrepareAbort are written, also without the lock,
//! once the prepare record is in the ISR (a prepared commit must survive the coordinator's
//! failover before any marker exists), to every partition of the transaction (and, for
//! `__consumer_offsets` partitions, the group coordinator makes the transaction's offsets
//! visible or drops them). A marker that cannot be written is retried on the next tick; the
//! transaction stays prepared until then, holding the last stable offset.
//!
//! When a call's records cannot be appended, the call did not happen: it answers the error
//! Kafka maps the failure to, and the transactions of the partitions it wrote to are read
//! back from the log (no marker goes out for a prepare the log does not have).

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
    TXN_LOG_VALUE_FLEXIBLE,
};
use strata_coord::{partition_for, OFFSETS_TOPIC};
use strata_durable::LockExt;
use strata_meta::config::props;

pub mod verification;

use crate::broker_client::BrokerPool;
use crate::config::ServerConfig;
use crate::group_service::GroupService;
use crate::internal_topics::{self, Replayed};
use crate::metadata_changes::MetadataChanges;
use crate::metrics::Metrics;
use crate::replica_manager::{now_ms, wait_all_replicated, Partition, ReplicaManager};

/// Longest wait for another broker to write a transaction's markers.
const MARKER_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for the state records to reach the in-sync replicas (Kafka's
/// `transaction.state.log` appends wait up to the request timeout).
const REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct TxnService {
    config: Arc<ServerConfig>,
    replicas: Arc<ReplicaManager>,
    meta: Arc<MetadataChanges>,
    metrics: Arc<Metrics>,
    /// Connections to the leaders of partitions markers go to.
    peers: Arc<BrokerPool>,
    /// Markers to `__consumer_offsets` complete the transaction's offsets there.
    groups: Arc<GroupService>,
    coordinator: Mutex<TransactionCoordinator>,
    /// Marker work that failed and is tried again on the next tick.
    retry: Mutex<Vec<MarkerWork>>,
    partitions: i32,
    /// `__transaction_state` partitions whose transactions are in the coordinator (led here),
    /// with the leader epoch they were loaded at: the coordinator epoch of their markers.
    /// Lock order: after the coordinator lock.
    loaded: Mutex<BTreeMap<i32, i32>>,
}

impl TxnService {
    pub fn new(
        config: Arc<ServerConfig>,
        replicas: Arc<ReplicaManager>,
        meta: Arc<MetadataChanges>,
        metrics: Arc<Metrics>,
        peers: Arc<BrokerPool>,
        groups: Arc<GroupService>,
    ) -> Self {
        Self {
            coordinator: Mutex::new(TransactionCoordinator::new(TxnConfig {
                max_timeout_ms: config.broker_value(props::TRANSACTION_MAX_TIMEOUT_MS) as i32,
            })),
            retry: Mutex::new(Vec::new()),
            partitions: config
                .broker_value(props::TRANSACTION_STATE_LOG_NUM_PARTITIONS)
                .max(1) as i32,
            loaded: Mutex::new(BTreeMap::new()),
            config,
            replicas,
            meta,
            metrics,
            peers,
            groups,
        }
    }

    /// The cluster's finalized `transaction.version`: the protocol of the coordinator's own
    /// transaction ends (timeouts, fencing), as Kafka's
    /// `TransactionStateManager.transactionVersionLevel`.
    pub fn transaction_version(&self) -> i16 {
        self.meta
            .image()
            .feature_level(strata_meta::features::TRANSACTION_VERSION)
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.partitions)
    }

    /// Creates `__transaction_state` if it does not exist yet. Blocking.
    pub fn ensure_topic(&self) -> Result<(), ResponseError> {
        internal_topics::ensure_topic(
            &self.meta,
            TRANSACTION_STATE_TOPIC,
            self.partitions,
            self.config
                .broker_value(props::TRANSACTION_STATE_LOG_REPLICATION_FACTOR),
            self.config
                .broker_value(props::TRANSACTION_STATE_LOG_SEGMENT_BYTES),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "transaction coordinator unavailable");
            ResponseError::CoordinatorNotAvailable
        })
    }

    /// Whether this broker coordinates `transactional_id` (leads its partition, whose
    /// transactions are then loaded if they were not). Blocking.
    pub fn coordinates(&self, transactional_id: &str) -> bool {
        self.sync_partition(self.partition_of(transactional_id))
            .is_some()
    }

    /// Loads or forgets the transactions of every partition to match leadership (after each
    /// metadata image). The markers of loaded prepared transactions go out on the next tick.
    /// Blocking.
    pub fn sync_leadership(&self) {
        for partition in 0..self.partitions {
            self.sync_partition(partition);
        }
    }

    /// Brings one partition's transactions in line with its leadership; returns the
    /// coordinator epoch when it is led (and loaded) here. A partition led again at a newer
    /// epoch is read again: another coordinator may have written to it meanwhile.
    fn sync_partition(&self, partition: i32) -> Option<i32> {
        let leading = self
            .replicas
            .partition(TRANSACTION_STATE_TOPIC, partition)
            .filter(|p| p.is_leader())
            .map(|p| p.leader_epoch());
        let loaded = self.loaded_epoch(partition);
        if leading == loaded {
            return leading;
        }
        let partitions = self.partitions;
        let belongs = |id: &str| partition_for(id, partitions) == partition;
        let mut coordinator = self.coordinator.locked();
        let mut loaded = self.loaded.locked();
        if loaded.get(&partition).copied() == leading {
            return leading; // another thread got here first
        }
        if loaded.remove(&partition).is_some() {
            let forgotten = coordinator.unload(belongs);
            self.retry
                .locked()
                .retain(|w| !belongs(&w.transactional_id));
            tracing::info!(
                partition,
                transactions = forgotten,
                "no longer the transaction coordinator of a partition"
            );
        }
        let epoch = leading?;
        match load_partition(&self.replicas, &mut coordinator, partition) {
            Ok(records) => {
                tracing::info!(
                    partition,
                    records,
                    coordinator_epoch = epoch,
                    "became the transaction coordinator of a partition"
                );
                loaded.insert(partition, epoch);
                Some(epoch)
            }
            Err(e) => {
                // Whatever was read is dropped; the next request or tick tries again.
                coordinator.unload(belongs);
                tracing::error!(partition, error = %e, "cannot load the transactions of a partition");
                None
            }
        }
    }

    fn loaded_epoch(&self, partition: i32) -> Option<i32> {
        self.loaded.locked().get(&partition).copied()
    }

    /// Runs `f` on the coordinator, then persists its state and writes the markers it asks
    /// for. Blocking. If the state cannot be persisted, the call fails with NOT_COORDINATOR
    /// (leadership moved) or COORDINATOR_NOT_AVAILABLE (the log or its replicas failed), as
    /// Kafka's coordinator answers.
    ///
    /// Only the call and the append of its records hold the coordinator lock, so that the
    /// log's order is the calls' order. Waiting for the in-sync replicas and writing markers
    /// (which may wait on another broker) happen without it: other transactions go on, and
    /// one being ended answers CONCURRENT_TRANSACTIONS until its markers are written. A
    /// later call's records reaching the ISR implies this call's did, since they come after.
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut TransactionCoordinator) -> T,
    ) -> Result<T, ResponseError> {
        let (value, appended, mut markers) = {
            let mut coordinator = self.coordinator.locked();
            let value = f(&mut coordinator);
            let (records, markers) = coordinator.take_output();
            match self.append(&records) {
                Ok(appended) => (value, appended, markers),
                Err(e) => {
                    // The call did not happen: its transitions (and the markers of a
                    // prepare the log does not have) go, and the log is read again.
                    let forgotten = self.forget(&mut coordinator, &records);
                    self.retry_later(
                        markers
                            .into_iter()
                            .filter(|w| {
                                !forgotten.contains(&self.partition_of(&w.transactional_id))
                            })
                            .collect(),
                    );
                    return Err(self.failed(e));
                }
            }
        };
        markers.append(&mut std::mem::take(&mut *self.retry.locked()));
        let replicated = wait_replicated(&appended);
        let written: Vec<MarkerWork> = markers
            .into_iter()
            .filter_map(|work| self.write_markers_of(work))
            .collect();
        if !written.is_empty() {
            let mut coordinator = self.coordinator.locked();
            for work in &written {
                coordinator.complete_markers(work, now_ms());
            }
            let (records, markers) = coordinator.take_output();
            self.retry_later(markers);
            // Not waited for: a coordinator that loses these finds the transactions
            // prepared and writes their (idempotent) markers again.
            if let Err(e) = self.append(&records) {
                // The log keeps them prepared; so does the coordinator once it reads it again
                // (and writes the idempotent markers once more).
                self.forget(&mut coordinator, &records);
                self.failed(e);
            }
        }
        replicated.map_err(|e| self.failed(e))?;
        Ok(value)
    }

    /// Forgets the transactions of the partitions `records` were to be written to, with
    /// their pending marker work, and marks the partitions unloaded: the next request or tick
    /// reads them back from the log, so that the coordinator holds what the log holds
    /// (Kafka's coordinator drops a pending transition whose append failed). Returns the
    /// partitions.
    fn forget(
        &self,
        coordinator: &mut TransactionCoordinator,
        records: &[TxnRecord],
    ) -> std::collections::BTreeSet<i32> {
        let partitions: std::collections::BTreeSet<i32> = records
            .iter()
            .map(|r| self.partition_of(&r.0.transactional_id))
            .collect();
        let belongs = |id: &str| partitions.contains(&self.partition_of(id));
        coordinator.unload(belongs);
        self.retry
            .locked()
            .retain(|w| !belongs(&w.transactional_id));
        let mut loaded = self.loaded.locked();
        for partition in &partitions {
            loaded.remove(partition);
        }
        partitions
    }

    fn failed(&self, e: PersistError) -> ResponseError {
        self.metrics.storage_errors.add(1);
        tracing::error!(error = %e, "cannot write transaction state");
        e.response_error()
    }

    fn retry_later(&self, mut markers: Vec<MarkerWork>) {
        if !markers.is_empty() {
            self.retry.locked().append(&mut markers);
        }
    }

    /// Writes one transaction's markers once its state partition's records are in the ISR;
    /// returns the work when done. On failure the work is retried on the next tick; when the
    /// partition moved away, the new coordinator completes it.
    fn write_markers_of(&self, work: MarkerWork) -> Option<MarkerWork> {
        let partition = self.partition_of(&work.transactional_id);
        let coordinator_epoch = self.loaded_epoch(partition)?;
        let written = self
            .state_replicated(partition)
            .and_then(|()| self.write_markers(&work, coordinator_epoch));
        match written {
            Ok(()) => Some(work),
            Err(e) => {
                self.metrics.storage_errors.add(1);
                tracing::error!(transactional_id = %work.transactional_id, error = %e, "cannot write transaction markers; will retry");
                self.retry_later(vec![work]);
                None
            }
        }
    }

    /// Appends the state records to their partitions, which must be led here at the epoch
    /// their transactions were loaded at. Returns where the high watermark of each
    /// replicated partition must reach for the records to be in its ISR.
    fn append(&self, records: &[TxnRecord]) -> Result<Vec<(Arc<Partition>, i64)>, PersistError> {
        let now = now_ms();
        // Kafka writes the flexible value (with protocol v2's fields) from
        // transaction.version 1 on, and the old one below, which older software reads.
        let value_version = if self.transaction_version() >= 1 {
            TXN_LOG_VALUE_FLEXIBLE
        } else {
            0
        };
        let mut by_partition: BTreeMap<i32, Vec<_>> = BTreeMap::new();
        for r in records {
            let partition = self.partition_of(&r.0.transactional_id);
            let (key, value) = r.encode(value_version);
            by_partition
                .entry(partition)
                .or_default()
                .push((key, Some(value)));
        }
        let mut appended = Vec::new();
        for (partition, records) in by_partition {
            let hosted = self.led_partition(partition)?;
            let buf = internal_topics::encode_batch(records, None, now)
                .map_err(PersistError::Unavailable)?;
            let mut log = hosted.log();
            let info = log
                .append_as_leader(&buf, hosted.leader_epoch(), now)
                .map_err(PersistError::Log)?;
            hosted.after_leader_append(&mut log, now);
            drop(log);
            if hosted.is_replicated_leader() {
                appended.push((hosted, info.last_offset + 1));
            }
        }
        if !records.is_empty() {
            self.replicas.notify_appended();
        }
        Ok(appended)
    }

    /// The `__transaction_state` partition, if it is still led here at the epoch its
    /// transactions were loaded at.
    fn led_partition(&self, partition: i32) -> Result<Arc<Partition>, PersistError> {
        self.replicas
            .partition(TRANSACTION_STATE_TOPIC, partition)
            .filter(|p| p.is_leader() && Some(p.leader_epoch()) == self.loaded_epoch(partition))
            .ok_or(PersistError::NotCoordinator(partition))
    }

    /// Waits until everything in a state partition is in its in-sync replicas: the prepare
    /// record of a transaction whose markers are about to go out may have been appended by a
    /// call whose wait timed out.
    fn state_replicated(&self, partition: i32) -> Result<(), String> {
        let hosted = self.led_partition(partition).map_err(|e| e.to_string())?;
        if !hosted.is_replicated_leader() {
            return Ok(());
        }
        let end = hosted.log().log_end_offset();
        wait_replicated(&[(hosted, end)]).map_err(|e| e.to_string())
    }
    /// Writes the markers of one transaction to all of its partitions: those led here
    /// directly, the others with WriteTxnMarkers to their leaders. Partitions that no longer
    /// exist (deleted topics) are skipped, as Kafka does. An error leaves the work to be
    /// retried (markers are idempotent for a partition whose transaction already ended).
    fn write_markers(&self, work: &MarkerWork, coordinator_epoch: i32) -> Result<(), String> {
        let image = self.meta.image();
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, index) in &work.partitions {
            let Some(assigned) = image
                .topic(topic)
                .and_then(|t| t.partitions.get(*index as usize))
            else {
                tracing::warn!(%topic, partition = index, "transaction partition is gone; skipping its marker");
                continue;
            };
            if assigned.leader != self.config.node_id {
                if assigned.leader < 0 {
                    return Err(format!("{topic}-{index} has no leader"));
                }
                remote
                    .entry(assigned.leader)
                    .or_default()
                    .push((topic.clone(), *index));
                continue;
            }
            let partition = self
                .replicas
                .leader_or_error(&self.meta.image(), topic, *index)
                .map_err(|e| format!("{topic}-{index}: {e:?}"))?;
            self.append_marker(
                &partition,
                work.producer_id,
                work.producer_epoch,
                work.commit,
                coordinator_epoch,
            )
            .map_err(|e| format!("{topic}-{index}: {e}"))?;
        }
        self.replicas.notify_appended();
        for (leader, partitions) in remote {
            self.send_markers(leader, work, coordinator_epoch, &partitions)?;
        }
        tracing::info!(transactional_id = %work.transactional_id, commit = work.commit, partitions = work.partitions.len(), "transaction markers written");
        Ok(())
    }
}

/// Why state records could not be made durable.
#[derive(Debug, thiserror::Error)]
enum PersistError {
    #[error("{TRANSACTION_STATE_TOPIC} partition {0} is no longer led here")]
    NotCoordinator(i32),
    /// The log refused the records.
    #[error("{TRANSACTION_STATE_TOPIC}: {0}")]
    Log(strata_log::LogError),
    #[error("{0}")]
    Unavailable(String),
}

impl PersistError {
    /// As Kafka's `TransactionStateManager` maps append failures: leadership moved or the
    /// storage failed: NOT_COORDINATOR; the replicas did not confirm: COORDINATOR_NOT_AVAILABLE;
    /// records too large: UNKNOWN_SERVER_ERROR.
    fn response_error(&self) -> ResponseError {
        match self {
            PersistError::NotCoordinator(_) => ResponseError::NotCoordinator,
            PersistError::Log(e) => internal_topics::append_error(e),
            PersistError::Unavailable(_) => ResponseError::CoordinatorNotAvailable,
        }
    }
}

/// Replays one `__transaction_state` partition into the coordinator; prepared transactions
/// are queued for their markers again. Blocking.
fn load_partition(
    replicas: &ReplicaManager,
    coordinator: &mut TransactionCoordinator,
    partition: i32,
) -> Result<usize, String> {
    let mut loaded = 0usize;
    internal_topics::replay(replicas, TRANSACTION_STATE_TOPIC, partition, |r| {
        if let Replayed::Data { key, value, .. } = r {
            match TxnRecord::decode(&key, value.as_deref()) {
                Ok(Some(record)) => {
                    coordinator.load(record);
                    loaded += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(partition, error = %e, "skipping transaction record"),
            }
        }
    })?;
    Ok(loaded)
}

/// Waits for the in-sync replicas of the partitions appended to with replication.
fn wait_replicated(appended: &[(Arc<Partition>, i64)]) -> Result<(), PersistError> {
    wait_all_replicated(appended, REPLICATION_WAIT).map_err(|partition| {
        PersistError::Unavailable(format!(
            "{TRANSACTION_STATE_TOPIC} partition {partition}: the in-sync replicas did not confirm the records in time"
        ))
    })
}

/// Marker writing: to partitions led here and through other leaders.
impl TxnService {
    /// Appends one transaction marker to a partition led here, as the coordinator's
    /// WriteTxnMarkers does, and completes the transaction's offsets when the partition is an
    /// offsets-topic one. Blocking.
    pub(crate) fn append_marker(
        &self,
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
            let offsets_partitions = self.groups.partitions();
            self.groups.run(|g| {
                g.complete_transaction(producer_id, commit, partition.index, |group| {
                    partition_for(group, offsets_partitions)
                })
            });
        }
        Ok(())
    }

    /// WriteTxnMarkers to `leader` for `partitions` of one transaction, on the broker's pooled
    /// connections (markers are idempotent, so a resend after a failed pooled connection is
    /// safe). Blocking (waits on the runtime, at most [`MARKER_REQUEST_TIMEOUT`]).
    fn send_markers(
        &self,
        leader: i32,
        work: &MarkerWork,
        coordinator_epoch: i32,
        partitions: &[(String, i32)],
    ) -> Result<(), String> {
        let image = self.meta.image();
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
                .with_coordinator_epoch(coordinator_epoch)
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
            .block_on(tokio::time::timeout(
                MARKER_REQUEST_TIMEOUT,
                self.peers.send(
                    &self.metrics,
                    &address,
                    ApiKey::WriteTxnMarkers,
                    1,
                    &request,
                ),
            ))
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
}

/// Spawned once: follows leadership, aborts timed-out transactions and writes pending
/// markers (those of loaded prepared transactions, and failed ones again).
pub async fn tick_loop(txns: Arc<TxnService>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = crate::task::Ticker::new(std::time::Duration::from_millis(100), stop);
    loop {
        if !ticker.tick().await {
            return;
        }
        let t = txns.clone();
        let _ = tokio::task::spawn_blocking(move || {
            t.sync_leadership();
            let transaction_version = t.transaction_version();
            t.run(|c| c.tick(now_ms(), transaction_version))
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
