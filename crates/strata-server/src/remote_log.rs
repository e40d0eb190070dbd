//! The remote log manager (Kafka's `RemoteLogManager`, KIP-405): moves rolled segments of
//! tiered partitions to object storage, applies the whole log's retention there, serves reads
//! below the local log start, and deletes the tier's data of deleted topics.
//!
//! One background task runs a pass every `remote.log.manager.task.interval.ms`. For each hosted
//! partition with `remote.storage.enable`, at most `remote.log.manager.thread.pool.size` at once:
//! 1. load the remote manifest the first time (then delete orphans of interrupted uploads and
//!    tell the log the highest offset in the tier);
//! 2. apply `retention.ms` / `retention.bytes` to the whole log (tier + local-only part),
//!    moving the log start offset; delete tier segments below the log start (this also
//!    finishes DeleteRecords);
//! 3. upload rolled segments in order; each upload is visible once the manifest naming it is
//!    written, and only then may local retention delete the local copy.
//!
//! A partition followed here (not led) is never written to the tier. Every
//! [`FOLLOWER_PASS_EVERY`] passes its follower reads the manifest the leader writes: local
//! retention may then delete its local copies of uploaded segments, and its log start follows
//! the leader's retention through the tier.
//!
//! A failing partition backs off exponentially (0.5 s doubling to 30 s) and is retried; the
//! local log keeps accepting records meanwhile, up to `log.local.untiered.max.bytes` not yet in the
//! tier across the broker.
//!
//! Deleted topics: after a topic deletion (and once after start-up), the pass lists the tier's
//! topic directories and deletes those whose topic id the metadata image records as deleted.
//! Because the image is durable, an interrupted deletion is found again on a later pass or
//! after a restart; a directory of an id the image never knew is kept (a lost metadata log
//! must not turn into lost data).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_durable::{LockExt, RwLockExt};
use strata_log::{SegmentForUpload, TierTail, TimestampAndOffset};
use strata_meta::config::{props, BrokerProperty};
use strata_tier::{
    AuxData, CacheStats, RemoteManifest, RemotePartition, RemoteReadCache, SegmentUpload,
    TierError, TierStore,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::ServerConfig;
use crate::metadata_source::MetadataSource;
use crate::metrics::Metrics;
use crate::metrics::TierReadMetrics;
use crate::replica_manager::ReplicaManager;
use crate::replica_manager::{now_ms, Partition};
use crate::task::blocking;

/// Segments one partition uploads per pass before the pass moves on (fairness).
const UPLOADS_PER_PASS: usize = 2;
/// Tier reads at once (a read outlives its fetch after `remote.fetch.max.wait.ms`); a fetch
/// finding none free answers without that partition's data.
const MAX_TIER_READS: usize = 64;
/// A follower reads its partition's manifest once every this many passes: often enough
/// that its disk does not fill far beyond the leader's, rarely enough that followers do
/// not multiply the store's requests.
const FOLLOWER_PASS_EVERY: u64 = 10;
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The tier state of one partition.
struct RemoteLogPartition {
    remote: RemotePartition,
    /// The manifest as this broker last wrote or read it; `None` until first loaded. Holding
    /// this lock serialises every change to the partition's tier (one writer per partition).
    writer: tokio::sync::Mutex<Option<RemoteManifest>>,
    /// A copy of the writer's manifest for readers, who never wait for an upload.
    published: RwLock<Option<Arc<RemoteManifest>>>,
    backoff: Mutex<Backoff>,
    /// A failed attempt may have left objects no manifest names (a PUT that timed out here
    /// but completed in the store); they are deleted after the next successful pass.
    orphans_possible: AtomicBool,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
}

impl RemoteLogPartition {
    fn published(&self) -> Option<Arc<RemoteManifest>> {
        self.published.read_locked().clone()
    }

    fn publish(&self, manifest: &RemoteManifest) {
        *self.published.write_locked() = Some(Arc::new(manifest.clone()));
    }

    fn ready(&self) -> bool {
        let b = self.backoff.locked();
        b.next_attempt.is_none_or(|at| Instant::now() >= at)
    }

    fn record(&self, ok: bool) {
        let mut b = self.backoff.locked();
        if ok {
            *b = Backoff::default();
        } else {
            b.failures = b.failures.saturating_add(1);
            let delay = MIN_BACKOFF
                .saturating_mul(1 << b.failures.min(10).saturating_sub(1))
                .min(MAX_BACKOFF);
            b.next_attempt = Some(Instant::now() + delay);
        }
    }
}

/// Why a ListOffsets lookup in the tier has no answer.
#[derive(Debug, thiserror::Error)]
pub enum TierLookupError {
    #[error("the tier did not answer within remote.list.offsets.request.timeout.ms")]
    TimedOut,
    #[error(transparent)]
    Tier(#[from] TierError),
}

pub struct RemoteLogManager {
    replicas: Arc<ReplicaManager>,
    /// The image: which topics exist (and were deleted), who leads.
    metadata: Arc<MetadataSource>,
    metrics: Arc<Metrics>,
    store: TierStore,
    cache: Arc<RemoteReadCache>,
    partitions: Mutex<HashMap<(Uuid, i32), Arc<RemoteLogPartition>>>,
    /// Deleted-topic count of the image at the last complete sweep of deleted topics' data.
    swept_deletions: Mutex<Option<usize>>,
    /// `log.local.untiered.max.bytes`.
    untiered_max_bytes: i64,
    disk_limit_reached: AtomicBool,
    /// `remote.fetch.max.wait.ms`: how long a fetch waits for the tier.
    fetch_max_wait: Duration,
    /// `remote.list.offsets.request.timeout.ms`: how long ListOffsets waits for the tier.
    list_offsets_timeout: Duration,
    read_metrics: Arc<TierReadMetrics>,
    reads: Arc<tokio::sync::Semaphore>,
    /// Largest read from the tier for one partition of one fetch (one cache chunk), except
    /// that a larger first batch is returned whole.
    max_read_bytes: usize,
    /// Empty tiered partitions whose manifest has not been read since start-up: they may
    /// have lost their local data, so producers wait until the tier says where they start.
    awaiting_tier: Mutex<HashSet<(Uuid, i32)>>,
    /// Passes run since start-up (followers read the tier every [`FOLLOWER_PASS_EVERY`]).
    passes: std::sync::atomic::AtomicU64,
}

impl RemoteLogManager {
    /// Opens the tier: `--object-store` or `<data dir>/tier`, everything under the cluster id
    /// (so two clusters can share a bucket).
    pub fn open(
        config: &ServerConfig,
        cluster_id: &str,
        replicas: Arc<ReplicaManager>,
        metadata: Arc<MetadataSource>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TierError> {
        let read_metrics = metrics.tier_reads.clone();
        let url = match &config.object_store {
            Some(url) => url.clone(),
            None => {
                let dir = std::path::absolute(config.data_dir.join("tier")).map_err(|e| {
                    TierError::Config(format!("{}: {e}", config.data_dir.display()))
                })?;
                format!("file://{}", dir.display())
            }
        };
        let store = TierStore::open(&url, &config.object_store_options)?.scoped(cluster_id);
        let cache_bytes: i64 = config.broker_value(props::REMOTE_LOG_READER_CACHE_BYTES);
        let chunk_bytes = config
            .broker_value(props::REMOTE_LOG_READER_CHUNK_BYTES)
            .max(1);
        tracing::info!(url = %store.url(), cache_bytes, "tiered storage");
        Ok(Self {
            replicas,
            metadata,
            metrics,
            store,
            cache: RemoteReadCache::new(cache_bytes.max(0) as usize, chunk_bytes as usize),
            partitions: Mutex::new(HashMap::new()),
            swept_deletions: Mutex::new(None),
            untiered_max_bytes: config.broker_value(props::LOG_LOCAL_UNTIERED_MAX_BYTES),
            disk_limit_reached: AtomicBool::new(false),
            fetch_max_wait: millis(config, props::REMOTE_FETCH_MAX_WAIT_MS),
            list_offsets_timeout: millis(config, props::REMOTE_LIST_OFFSETS_REQUEST_TIMEOUT_MS),
            read_metrics,
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_TIER_READS)),
            max_read_bytes: chunk_bytes as usize,
            awaiting_tier: Mutex::new(HashSet::new()),
            passes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Whether tiered partitions hold `log.local.untiered.max.bytes` or more that is not yet
    /// in the tier (a store outage): producers to tiered partitions then get
    /// KAFKA_STORAGE_ERROR (retriable) until uploads catch up.
    pub fn disk_limit_reached(&self) -> bool {
        self.disk_limit_reached.load(Ordering::Relaxed)
    }

    /// Whether producers to this partition must wait: it is empty and tiered, and the tier
    /// has not yet said whether it holds the partition's earlier records.
    pub fn awaiting_tier(&self, partition: &Partition) -> bool {
        let awaiting = self.awaiting_tier.locked();
        !awaiting.is_empty() && awaiting.contains(&(partition.topic_id, partition.index))
    }

    fn partition_state(&self, p: &Partition) -> Arc<RemoteLogPartition> {
        let mut map = self.partitions.locked();
        map.entry((p.topic_id, p.index))
            .or_insert_with(|| {
                Arc::new(RemoteLogPartition {
                    remote: RemotePartition::new(
                        &self.store,
                        &p.topic,
                        &p.topic_id.simple().to_string(),
                        p.index,
                    )
                    .with_cache(self.cache.clone()),
                    writer: tokio::sync::Mutex::new(None),
                    published: RwLock::new(None),
                    backoff: Mutex::new(Backoff::default()),
                    orphans_possible: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// The partition's manifest for a read, loading it if no pass has yet.
    async fn manifest(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<(Arc<RemoteLogPartition>, Arc<RemoteManifest>), TierError> {
        let state = self.partition_state(partition);
        if let Some(m) = state.published() {
            return Ok((state, m));
        }
        let mut writer = state.writer.lock().await;
        let manifest = self.load(&state, partition, &mut writer).await?.clone();
        drop(writer);
        Ok((state, Arc::new(manifest)))
    }

    /// Whole batches from `offset` (below the local log start) out of the tier: at most
    /// `max_bytes`, but the first batch whole when `min_one_batch`. Empty if the tier has
    /// nothing there (yet), or if the store does not answer within `remote.fetch.max.wait.ms`
    /// (Kafka's KIP-1018 bound): the read then goes on in the background, and the consumer's
    /// next fetch finds its chunks cached or joins the fetch still in flight.
    pub async fn read(
        self: &Arc<Self>,
        partition: &Arc<Partition>,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Bytes, TierError> {
        let Ok(permit) = self.reads.clone().try_acquire_owned() else {
            return Ok(Bytes::new());
        };
        let max_bytes = max_bytes.min(self.max_read_bytes);
        let (rlm, p) = (self.clone(), partition.clone());
        let read = tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let result = async {
                let (state, manifest) = rlm.manifest(&p).await?;
                // The tier's segments run from its first to its last without gaps (unless
                // compacted); an offset below the first one was deleted meanwhile.
                let holder = manifest.segment_for(offset);
                if holder.is_none_or(|s| offset < s.base_offset && !s.compacted) {
                    return Err(TierError::NotInTier(offset));
                }
                state
                    .remote
                    .read(&manifest, offset, max_bytes, min_one_batch)
                    .await
            }
            .await;
            // Counted here: the fetch may have answered without waiting for this.
            match &result {
                Ok(bytes) => {
                    rlm.read_metrics.bytes.add(bytes.len() as u64);
                    rlm.read_metrics.latency.observe(started.elapsed());
                }
                Err(error) => {
                    rlm.read_metrics.errors.add(1);
                    tracing::warn!(topic = %p.topic, partition = p.index, offset, %error, "read from the tier failed");
                }
            }
            result
        });
        match tokio::time::timeout(self.fetch_max_wait, read).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(io_error("reading from the tier", join)),
            Err(_) => {
                tracing::debug!(topic = %partition.topic, partition = partition.index, offset, "tier read still running after remote.fetch.max.wait.ms");
                Ok(Bytes::new())
            }
        }
    }

    /// `lookup` within `remote.list.offsets.request.timeout.ms` (KIP-1075).
    async fn bounded<T>(
        &self,
        lookup: impl std::future::Future<Output = Result<T, TierError>>,
    ) -> Result<T, TierLookupError> {
        match tokio::time::timeout(self.list_offsets_timeout, lookup).await {
            Ok(result) => result.map_err(TierLookupError::Tier),
            Err(_) => Err(TierLookupError::TimedOut),
        }
    }

    /// ListOffsets by timestamp in the tier: the first record at or after `log_start_offset`
    /// with timestamp >= `timestamp_ms`, with its timestamp and its batch's leader epoch.
    pub async fn offset_for_timestamp(
        &self,
        partition: &Arc<Partition>,
        timestamp_ms: i64,
        log_start_offset: i64,
    ) -> Result<Option<TimestampAndOffset>, TierLookupError> {
        self.bounded(async {
            let (state, manifest) = self.manifest(partition).await?;
            state
                .remote
                .offset_for_timestamp(&manifest, timestamp_ms, log_start_offset)
                .await
        })
        .await
    }

    /// ListOffsets LATEST_TIERED: the last offset in the tier, if any.
    pub async fn highest_offset(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<Option<i64>, TierLookupError> {
        let (_, manifest) = self.bounded(self.manifest(partition)).await?;
        Ok(manifest.next_offset().map(|next| next - 1))
    }

    /// ListOffsets MAX_TIMESTAMP over the tier: the largest max timestamp there, with the
    /// offset of the first record holding it and its leader epoch (see
    /// `RemotePartition::max_timestamp`).
    pub async fn max_timestamp(
        &self,
        partition: &Arc<Partition>,
        log_start_offset: i64,
    ) -> Result<Option<TimestampAndOffset>, TierLookupError> {
        self.bounded(async {
            let (state, manifest) = self.manifest(partition).await?;
            state
                .remote
                .max_timestamp(&manifest, log_start_offset)
                .await
        })
        .await
    }

    /// Loads the manifest into `writer` if it is not there yet: orphans of interrupted uploads
    /// are deleted, and the log learns what the tier holds.
    async fn load<'a>(
        &self,
        state: &RemoteLogPartition,
        partition: &Arc<Partition>,
        writer: &'a mut Option<RemoteManifest>,
    ) -> Result<&'a mut RemoteManifest, TierError> {
        if writer.is_none() {
            let manifest = state.remote.load_manifest().await?;
            // Only the leader may: an object the leader has uploaded but not yet named in
            // the manifest looks like an orphan to anyone else.
            if partition.is_leader() {
                let cleaned = state.remote.clean_orphans(&manifest).await;
                report_orphan_cleanup(partition, cleaned);
            }
            let tier_end = manifest.records_end();
            if tier_end > 0 && partition.log().is_behind_tier(tier_end) {
                let tail = tier_tail(&state.remote, &manifest, tier_end).await?;
                let p = partition.clone();
                blocking(move || match p.is_removed() {
                    true => Ok(()),
                    false => p.log().start_after_tier(&tail),
                })
                .await
                .map_err(|e| io_error("starting after the tier", e))?;
            }
            if let Some(next) = manifest.next_offset() {
                let mut log = partition.log();
                if log.log_end_offset() < next {
                    // Records were written locally over offsets the tier holds (local data
                    // lost, and the tier unreadable when the partition started). Local
                    // retention must not treat them as uploaded: keep everything local and
                    // let uploads fail on the overlap until an operator decides.
                    tracing::error!(topic = %partition.topic, partition = partition.index, log_end_offset = log.log_end_offset(), tier_next_offset = next, "local log diverged from the tier; keeping all local data");
                } else {
                    log.set_highest_offset_in_remote(next - 1);
                }
            }
            state.publish(&manifest);
            *writer = Some(manifest);
            self.awaiting_tier
                .locked()
                .remove(&(partition.topic_id, partition.index));
        }
        Ok(writer.as_mut().expect("loaded above"))
    }

    /// At start-up, before clients are served: loads the manifest of every tiered partition
    /// whose local log is empty, so that one whose local data was lost starts after the tier
    /// before a producer can write over offsets the tier holds. Waits at most `limit`; a
    /// store that does not answer by then is tried again by the passes.
    pub async fn load_empty_partitions(&self, limit: Duration) {
        let empty: Vec<Arc<Partition>> = self
            .replicas
            .all()
            .into_iter()
            .filter(|p| {
                let log = p.log();
                log.config().remote_storage_enable && log.snapshot().size_bytes == 0
            })
            .collect();
        if empty.is_empty() {
            return;
        }
        self.awaiting_tier
            .locked()
            .extend(empty.iter().map(|p| (p.topic_id, p.index)));
        let load = async {
            for partition in &empty {
                let state = self.partition_state(partition);
                let mut writer = state.writer.lock().await;
                if let Err(e) = self.load(&state, partition, &mut writer).await {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "cannot read the tier at start-up");
                }
            }
        };
        if tokio::time::timeout(limit, load).await.is_err() {
            tracing::warn!(partitions = empty.len(), "the tier did not answer at start-up; empty partitions are checked again by the next passes");
        }
    }

    /// One pass over every tiered partition, and the sweep of deleted topics when due.
    /// Returns whether a partition has more segments to upload than one pass takes.
    async fn pass(self: &Arc<Self>, concurrency: usize) -> bool {
        // Only a partition's leader uploads and applies tier retention; a manifest loaded while
        // leading is dropped when leadership moves, since the next leader writes it.
        let (partitions, followed): (Vec<_>, Vec<_>) =
            self.replicas.all().into_iter().partition(|p| p.is_leader());
        if self
            .passes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(FOLLOWER_PASS_EVERY)
        {
            self.follow_tier(followed).await;
        }
        let hosted: HashSet<(Uuid, i32)> =
            partitions.iter().map(|p| (p.topic_id, p.index)).collect();
        self.partitions
            .locked()
            .retain(|key, _| hosted.contains(key));
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for partition in partitions {
            if !partition.log().config().remote_storage_enable {
                continue;
            }
            let state = self.partition_state(&partition);
            if !state.ready() {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let rlm = self.clone();
            tasks.spawn(async move {
                let result = rlm.sync_partition(&partition, &state).await;
                match &result {
                    Err(e) => {
                        rlm.metrics.tier_upload_errors.add(1);
                        state.orphans_possible.store(true, Ordering::Relaxed);
                        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "tiered storage pass failed; retrying with backoff");
                    }
                    Ok(_) if state.orphans_possible.swap(false, Ordering::Relaxed) => {
                        rlm.clean_orphans(&partition, &state).await;
                    }
                    Ok(_) => {}
                }
                state.record(result.is_ok());
                drop(permit);
                result.unwrap_or(false)
            });
        }
        let mut more = false;
        while let Some(done) = tasks.join_next().await {
            more |= done.unwrap_or(false);
        }
        if let Err(e) = self.sweep_deleted_topics().await {
            self.metrics.tier_upload_errors.add(1);
            tracing::warn!(error = %e, "cannot delete tier data of deleted topics; will retry");
        }
        more
    }

    /// The followers' side of the tier (module docs): for each tiered partition followed
    /// here, reads the leader's manifest and lets local retention and the log start follow it.
    async fn follow_tier(&self, followed: Vec<Arc<Partition>>) {
        for partition in followed {
            if !partition.log().config().remote_storage_enable {
                continue;
            }
            let manifest = match self.remote_of(&partition).load_manifest().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(topic = %partition.topic, partition = partition.index, error = %e, "follower cannot read the tier manifest");
                    continue;
                }
            };
            let p = partition.clone();
            let followed = blocking(move || {
                let mut log = p.log();
                if p.is_removed() || p.is_leader() {
                    return Ok(());
                }
                follow_manifest(&mut log, &manifest, now_ms())
            })
            .await;
            if let Err(e) = followed {
                self.metrics.storage_errors.add(1);
                tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "follower cannot apply the tier's retention");
            }
        }
    }

    /// The partition's tier, for a follower: read fresh each time, never cached, since the
    /// leader changes it.
    fn remote_of(&self, partition: &Partition) -> RemotePartition {
        RemotePartition::new(
            &self.store,
            &partition.topic,
            &partition.topic_id.simple().to_string(),
            partition.index,
        )
    }

    /// A follower whose fetch offset the leader has only in the tier
    /// (OFFSET_MOVED_TO_TIERED_STORAGE: it was away while the leader's local retention went
    /// past it, or it is a new replica) starts its log over where the tier ends, with the
    /// leader epochs, producer state and aborted transactions the tier holds there (the
    /// "remote log auxiliary state" Kafka's follower builds), then fetches the rest from the
    /// leader. Its local records below that end are dropped: the tier holds them. Returns
    /// whether the log moved.
    pub async fn start_follower_after_tier(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<bool, TierError> {
        let remote = self.remote_of(partition);
        let manifest = remote.load_manifest().await?;
        let tier_end = manifest.records_end();
        if tier_end <= partition.log().log_end_offset() {
            return Ok(false);
        }
        let tail = tier_tail(&remote, &manifest, tier_end).await?;
        let p = partition.clone();
        blocking(move || {
            let mut log = p.log();
            if p.is_removed() || p.is_leader() || log.log_end_offset() >= tier_end {
                return Ok(false);
            }
            if !log.is_behind_tier(tier_end) {
                let end = log.log_end_offset();
                log.truncate_fully_and_start_at(end)?;
            }
            log.start_after_tier(&tail)?;
            log.set_highest_offset_in_remote(tier_end - 1);
            tracing::info!(topic = %p.topic, partition = p.index, log_start_offset = log.log_start_offset(), log_end_offset = tier_end, "follower starts after the tier");
            Ok(true)
        })
        .await
        .map_err(|e: strata_log::LogError| io_error("starting the follower after the tier", e))
    }

    /// Deletes objects of the partition that its manifest does not name; on failure, tries
    /// again after the next successful pass.
    async fn clean_orphans(&self, partition: &Partition, state: &RemoteLogPartition) {
        let writer = state.writer.lock().await;
        let Some(manifest) = writer.as_ref() else {
            return;
        };
        if !report_orphan_cleanup(partition, state.remote.clean_orphans(manifest).await) {
            state.orphans_possible.store(true, Ordering::Relaxed);
        }
    }

    /// Compares `bytes`, what tiered partitions hold locally that is not yet in the tier, with
    /// `log.local.untiered.max.bytes`. Called by the broker's housekeeping tick, which does
    /// not wait for the object store.
    pub fn update_disk_usage(&self, bytes: u64) {
        let reached = self.untiered_max_bytes >= 0 && bytes >= self.untiered_max_bytes as u64;
        if reached != self.disk_limit_reached.swap(reached, Ordering::Relaxed) {
            if reached {
                tracing::warn!(bytes, limit = self.untiered_max_bytes, "data not yet in the tier reached log.local.untiered.max.bytes: refusing produce to tiered partitions until uploads catch up");
            } else {
                tracing::info!(
                    bytes,
                    "data not yet in the tier back under log.local.untiered.max.bytes"
                );
            }
        }
    }

    /// Retention, deletion and uploads of one partition (module docs, steps 1-3). Returns
    /// whether segments are left to upload after [`UPLOADS_PER_PASS`].
    async fn sync_partition(
        &self,
        partition: &Arc<Partition>,
        state: &RemoteLogPartition,
    ) -> Result<bool, TierError> {
        if partition.is_removed() {
            return Ok(false);
        }
        let mut writer = state.writer.lock().await;
        let manifest = self.load(state, partition, &mut writer).await?;

        // The whole log's retention, over the tier and the local-only tail.
        let (log_start, target) = {
            let log = partition.log();
            let cfg = log.config();
            let target = retention_target(
                manifest,
                log.log_start_offset(),
                cfg.retention_ms,
                cfg.retention_bytes,
                log.local_only_bytes(),
                now_ms(),
            );
            (log.log_start_offset(), target)
        };
        let log_start = match target {
            Some(target) if target > log_start => {
                let p = partition.clone();
                let moved = blocking(move || {
                    let mut log = p.log();
                    match p.is_removed() {
                        true => Ok(log.log_start_offset()),
                        false => log.delete_records_before(target),
                    }
                })
                .await;
                match moved {
                    Ok(start) => {
                        tracing::info!(topic = %partition.topic, partition = partition.index, log_start_offset = start, "retention moved the log start through the tier");
                        start
                    }
                    Err(e) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "cannot move the log start for retention");
                        log_start
                    }
                }
            }
            _ => log_start,
        };
        let stale = manifest.log_start_offset < log_start
            || manifest
                .segments
                .first()
                .is_some_and(|s| s.end_offset < log_start);
        if stale {
            let gone = state.remote.drop_below(manifest, log_start).await?;
            // Readers get the new manifest before the objects go.
            state.publish(manifest);
            state.remote.delete_segments(&gone).await?;
            self.metrics.tier_segments_deleted.add(gone.len() as u64);
        }

        for _ in 0..UPLOADS_PER_PASS {
            let p = partition.clone();
            let next = blocking(move || p.log().segments_for_upload(1)).await;
            let segment = match next {
                Ok(mut v) if !v.is_empty() => v.remove(0),
                Ok(_) => return Ok(false),
                Err(e) => return Err(io_error("listing segments to upload", e)),
            };
            let (end, size) = (segment.end_offset, segment.size_bytes);
            let uploaded = state
                .remote
                .upload_segment(manifest, upload_of(segment))
                .await?;
            self.metrics.tier_segments_uploaded.add(1);
            self.metrics.tier_bytes_uploaded.add(uploaded.size_bytes);
            state.publish(manifest);
            tracing::debug!(topic = %partition.topic, partition = partition.index, base = uploaded.base_offset, end, size, "segment uploaded to the tier");
            let p = partition.clone();
            blocking(move || {
                let mut log = p.log();
                if p.is_removed() {
                    return;
                }
                log.set_highest_offset_in_remote(end);
                // Local retention right away: the hot tail shrinks as soon as it may.
                if let Err(e) = log.apply_retention(now_ms()) {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "local retention failed");
                }
            })
            .await;
        }
        Ok(true)
    }

    /// Deletes the tier directories of deleted topics, when topics were deleted since the last
    /// complete sweep (and once after start-up). Only ids the image records as deleted go: a
    /// directory of an id the image never knew (a lost or foreign metadata log) is kept.
    async fn sweep_deleted_topics(&self) -> Result<(), TierError> {
        let deletions = self.metadata.image().deleted_topic_count();
        if *self.swept_deletions.locked() == Some(deletions) {
            return Ok(());
        }
        let image = self.metadata.image();
        for (topic, topic_id) in self.store.list_topic_dirs().await? {
            let Ok(id) = Uuid::parse_str(&topic_id) else {
                continue;
            };
            if image.topic_by_id(&id).is_some() {
                continue;
            }
            if !image.was_deleted(&id) {
                tracing::warn!(%topic, %topic_id, "tier directory of a topic this cluster never had; keeping it");
                continue;
            }
            let deleted = self.store.delete_topic_dir(&topic, &topic_id).await?;
            tracing::info!(%topic, %topic_id, objects = deleted, "deleted tier data of a deleted topic");
        }
        *self.swept_deletions.locked() = Some(image.deleted_topic_count());
        Ok(())
    }
}

/// Brings a follower's log in line with the leader's tier: what the tier holds below the
/// follower's high watermark (the same records on every in-sync replica) counts as uploaded
/// for local retention, and the log start moves up to the tier's (never past the high
/// watermark). Blocking.
fn follow_manifest(
    log: &mut strata_log::Log,
    manifest: &RemoteManifest,
    now_ms: i64,
) -> Result<(), strata_log::LogError> {
    let hw = log.high_watermark();
    if manifest.log_start_offset > log.log_start_offset() {
        log.delete_records_before(manifest.log_start_offset.min(hw))?;
    }
    if let Some(next) = manifest.next_offset() {
        log.set_highest_offset_in_remote((next - 1).min(hw - 1));
    }
    log.apply_retention(now_ms)?;
    Ok(())
}

/// Logs what an orphan cleanup did; false if it failed.
fn report_orphan_cleanup(partition: &Partition, cleaned: Result<usize, TierError>) -> bool {
    match cleaned {
        Ok(0) => true,
        Ok(n) => {
            tracing::info!(topic = %partition.topic, partition = partition.index, objects = n, "deleted tier objects no manifest names (interrupted uploads)");
            true
        }
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "cannot delete tier objects of interrupted uploads");
            false
        }
    }
}

fn io_error(context: &str, e: impl std::fmt::Display) -> TierError {
    TierError::Io {
        context: context.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn millis(config: &ServerConfig, key: BrokerProperty<i64>) -> Duration {
    Duration::from_millis(config.broker_value(key).max(1) as u64)
}

/// What a local log that lost its data needs from the tier to start after it.
async fn tier_tail(
    remote: &RemotePartition,
    manifest: &RemoteManifest,
    tier_end: i64,
) -> Result<TierTail, TierError> {
    let mut tail = TierTail {
        log_start_offset: manifest
            .segments
            .first()
            .map_or(0, |s| s.base_offset)
            .max(manifest.log_start_offset),
        next_offset: tier_end,
        ..TierTail::default()
    };
    for seg in &manifest.segments {
        for &(epoch, start) in &seg.leader_epochs {
            if tail.leader_epochs.last().is_none_or(|(e, _)| *e < epoch) {
                tail.leader_epochs.push((epoch, start));
            }
        }
        if let Some(aborted) = remote.read_aux(seg, "txnindex").await? {
            tail.aborted_txns.extend_from_slice(&aborted);
        }
    }
    if let Some(last) = manifest.segments.last() {
        tail.producer_snapshot = remote.read_aux(last, "snapshot").await?.map(|b| b.to_vec());
    }
    Ok(tail)
}

/// The segment's files as the tier stores them.
fn upload_of(s: SegmentForUpload) -> SegmentUpload {
    let mut aux = vec![
        ("index".to_string(), AuxData::File(s.offset_index_file)),
        ("timeindex".to_string(), AuxData::File(s.time_index_file)),
    ];
    if let Some(snapshot) = s.producer_snapshot {
        aux.push((
            "snapshot".to_string(),
            AuxData::Bytes(Bytes::from(snapshot)),
        ));
    }
    if !s.aborted_txns.is_empty() {
        aux.push((
            "txnindex".to_string(),
            AuxData::Bytes(Bytes::from(s.aborted_txns)),
        ));
    }
    SegmentUpload {
        base_offset: s.base_offset,
        end_offset: s.end_offset,
        max_timestamp_ms: s.max_timestamp_ms,
        max_timestamp_offset: s.max_timestamp_offset,
        compacted: s.compacted,
        leader_epochs: s.leader_epochs,
        log: s.log_file,
        aux,
    }
}

/// Where `retention.ms` / `retention.bytes` put the log start of a tiered log (Kafka's
/// `RemoteLogManager` retention): the oldest tier segments (at or after the current log start)
/// go while their max timestamp is older than `retention_ms`, or while the log without them
/// is still at least `retention_bytes` (the tier's bytes plus `local_only_bytes`). `None` when
/// nothing goes. Only whole tier segments are removed.
fn retention_target(
    manifest: &RemoteManifest,
    log_start: i64,
    retention_ms: i64,
    retention_bytes: i64,
    local_only_bytes: u64,
    now_ms: i64,
) -> Option<i64> {
    let live: Vec<_> = manifest
        .segments
        .iter()
        .filter(|s| s.end_offset >= log_start)
        .collect();
    let mut n = 0;
    if retention_ms >= 0 {
        n = live
            .iter()
            // A segment without timestamps (-1) never expires by time, as a local one without
            // them counts from its file's age rather than from 1970.
            .take_while(|s| {
                s.max_timestamp_ms >= 0 && now_ms.saturating_sub(s.max_timestamp_ms) > retention_ms
            })
            .count();
    }
    if retention_bytes >= 0 {
        let total: u64 = live.iter().map(|s| s.size_bytes).sum::<u64>() + local_only_bytes;
        let mut excess = total as i64 - retention_bytes;
        let by_size = live
            .iter()
            .take_while(|s| {
                let fits = excess - s.size_bytes as i64 >= 0;
                if fits {
                    excess -= s.size_bytes as i64;
                }
                fits
            })
            .count();
        n = n.max(by_size);
    }
    if n == 0 {
        return None;
    }
    Some(match live.get(n) {
        Some(next) => next.base_offset,
        None => live[n - 1].end_offset + 1,
    })
}

/// Runs passes until `stop` turns true.
pub(crate) async fn run(
    rlm: Arc<RemoteLogManager>,
    config: &ServerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let interval: i64 = config.broker_value(props::REMOTE_LOG_MANAGER_TASK_INTERVAL_MS);
    let concurrency: i32 = config.broker_value(props::REMOTE_LOG_MANAGER_THREAD_POOL_SIZE);
    let mut ticker = tokio::time::interval(Duration::from_millis(interval.max(10) as u64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut more = false;
    loop {
        // A backlog (more segments than one pass uploads) goes on at once.
        if !more {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::task::stopped(&mut stop) => return,
            }
        }
        let rlm = rlm.clone();
        let pass = async move { rlm.pass(concurrency.max(1) as usize).await };
        tokio::select! {
            again = pass => more = again,
            // An upload in flight is abandoned at shutdown: its objects are orphans that the
            // next start deletes, and the manifest never named them.
            _ = crate::task::stopped(&mut stop) => return,
        }
    }
}
