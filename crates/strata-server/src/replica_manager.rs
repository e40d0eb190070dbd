//! The replica manager: the set of partitions this broker hosts, each with its log, kept in
//! step with the metadata image (Kafka's `ReplicaManager` + `Partition`).
//!
//! The image is the truth: [`ReplicaManager::reconcile`] opens a log for every partition the
//! image assigns here and removes logs the image no longer has. A partition directory is
//! `logs/<topic>-<partition>` and holds `partition.metadata` with the topic id, so a directory
//! left behind by a deleted topic of the same name is never mistaken for the new one.
//!
//! Logs are synchronous (`std::fs`); callers run them on blocking threads, never on the async
//! workers. Each log sits behind its own mutex: appends and reads of one partition are
//! serialized, different partitions proceed in parallel.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kafka_protocol::error::ResponseError;
use strata_durable::{LockExt, RwLockExt};
use strata_log::{Log, LogError};
use strata_meta::config::props;
use strata_meta::{MetadataImage, PartitionImage};
use strata_partition::{
    preferred_read_replica, AckState, FollowerProgress, FollowerView, IsrChange, IsrChangeRefusal,
    LeaderAndIsr, LeaderConfig, LeaderState, PartitionError,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::ServerConfig;

pub type TopicPartition = (String, i32);

/// One hosted partition: its identity and its log.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    /// The leader epoch of the latest image, set by every reconcile.
    leader_epoch: AtomicI32,
    /// Whether the latest image names this broker the leader. Only the leader serves clients.
    leading: AtomicBool,
    /// Follower progress, ISR and high watermark while this broker leads a partition with
    /// more than one replica (`None` otherwise: an unreplicated log's high watermark is its
    /// end). Lock order: the log, then this.
    leader_state: Mutex<Option<LeaderState>>,
    /// Woken when the high watermark moves: `acks=all` produces wait on it.
    hw_advanced: Notify,
    /// Whether the log's high watermark is one a leader published, so that consumers may read
    /// below it here while this broker follows (KIP-392). False from opening the log until a
    /// leader's fetch response sets it, or this broker leads: the high watermark is not
    /// checkpointed, and a reopened replicated log starts with its log end, which may hold
    /// records the leader never committed.
    high_watermark_known: AtomicBool,
    dir: PathBuf,
    log: Mutex<Log>,
    /// Set when the image no longer has the partition and its directory is deleted: a task
    /// still holding it (an upload to the tier) must not touch the path, which a re-created
    /// topic of the same name may own by then.
    removed: AtomicBool,
}

impl Partition {
    /// Locks the log. A panic mid-operation on this partition has ended the process (crash
    /// policy: `strata_durable::LockExt`); its log is recovered from disk on restart.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        self.log.locked()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    fn leader_state(&self) -> MutexGuard<'_, Option<LeaderState>> {
        self.leader_state.locked()
    }

    pub fn hw_advanced(&self) -> &Notify {
        &self.hw_advanced
    }

    /// Applies the image's view of this partition: leadership, and for a replicated
    /// partition led here, the leader state (new for a new leader epoch; otherwise the
    /// replicas and ISR the controller committed, e.g. replicas a reassignment adds).
    fn apply_assignment(
        &self,
        assigned: &PartitionImage,
        node_id: i32,
        config: LeaderConfig,
        live_brokers: &BTreeSet<i32>,
        now_ms: i64,
    ) {
        let leading = assigned.leader == node_id;
        let replicated = assigned.replicas.len() > 1;
        if (self.leader_epoch(), self.is_leader()) != (assigned.leader_epoch, leading) {
            tracing::debug!(topic = %self.topic, partition = self.index, leader_epoch = assigned.leader_epoch, leading, "leadership changed");
        }
        let mut log = self.log();
        let mut state = self.leader_state();
        self.leader_epoch
            .store(assigned.leader_epoch, Ordering::Release);
        self.leading.store(leading, Ordering::Release);
        log.set_replicated(replicated);
        if leading {
            self.high_watermark_known.store(true, Ordering::Release);
        }
        if !(leading && replicated) {
            if state.take().is_some() {
                // Produces waiting for the ISR learn at once that leadership moved.
                self.hw_advanced.notify_waiters();
            }
            return;
        }
        match state.as_mut() {
            Some(current) if current.leader_epoch() == assigned.leader_epoch => {
                current.set_config(config);
                if assigned.partition_epoch > current.partition_epoch() {
                    // Replicas a reassignment adds in this epoch: their fetches count from now.
                    let committed = current.set_replicas(&assigned.replicas).and_then(|()| {
                        current.on_isr_committed(&assigned.isr, assigned.partition_epoch, now_ms)
                    });
                    match committed {
                        Ok(hw) => self.publish_high_watermark(&mut log, hw),
                        Err(e) => {
                            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "cannot apply the committed ISR")
                        }
                    }
                }
                let moved = current.set_isr_eligible(live_brokers, now_ms);
                self.publish_high_watermark(&mut log, moved);
            }
            _ => {
                let assignment = LeaderAndIsr {
                    leader: node_id,
                    leader_epoch: assigned.leader_epoch,
                    partition_epoch: assigned.partition_epoch,
                    replicas: assigned.replicas.clone(),
                    isr: assigned.isr.clone(),
                };
                match LeaderState::new(
                    &assignment,
                    log.log_end_offset(),
                    log.high_watermark(),
                    now_ms,
                    config,
                ) {
                    Ok(mut new) => {
                        let _ = new.set_isr_eligible(live_brokers, now_ms);
                        tracing::info!(topic = %self.topic, partition = self.index, leader_epoch = assigned.leader_epoch, isr = ?assigned.isr, log_end_offset = log.log_end_offset(), "leading a replicated partition");
                        *state = Some(new);
                    }
                    Err(e) => {
                        tracing::error!(topic = %self.topic, partition = self.index, error = %e, "cannot lead the partition")
                    }
                }
            }
        }
    }

    fn publish_high_watermark(&self, log: &mut Log, moved: Option<i64>) {
        if let Some(hw) = moved {
            log.set_high_watermark(hw);
            self.hw_advanced.notify_waiters();
        }
    }

    /// After an append as leader (`log` is this partition's, locked): the high watermark of a
    /// replicated partition moves only when the ISR has the records.
    pub fn after_leader_append(&self, log: &mut Log, now_ms: i64) {
        let moved = self
            .leader_state()
            .as_mut()
            .and_then(|s| s.on_append(log.log_end_offset(), now_ms));
        self.publish_high_watermark(log, moved);
    }

    /// `acks=all` before the append: NOT_ENOUGH_REPLICAS when the ISR is too small. The
    /// size of the ISR, for the error message, on refusal.
    pub fn check_enough_replicas(&self, min_insync_replicas: usize) -> Result<(), usize> {
        match self.leader_state().as_ref() {
            Some(s) => s.check_enough_replicas().map_err(|_| s.isr().len()),
            None if min_insync_replicas > 1 => Err(1),
            None => Ok(()),
        }
    }

    /// `acks=all` after the append of records below `required_offset`; `None` when this
    /// broker no longer leads the partition with replication (leadership moved meanwhile).
    pub fn ack_state(&self, required_offset: i64) -> Option<AckState> {
        self.leader_state()
            .as_ref()
            .map(|s| s.ack_state(required_offset))
    }

    /// Waits until the high watermark reaches `required` (the records below it are in every
    /// in-sync replica) or `deadline` passes. False when it timed out or this broker stopped
    /// leading the partition with replication.
    pub async fn wait_replicated(&self, required: i64, deadline: tokio::time::Instant) -> bool {
        loop {
            let advanced = self.hw_advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            match self.ack_state(required) {
                Some(AckState::Waiting) => {}
                Some(_) => return true,
                None => return false,
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return false;
            }
        }
    }

    /// Whether this leader's high watermark has not yet reached the start of its leader
    /// epoch: the end of the committed log is then unknown (see
    /// [`LeaderState::epoch_start_offset`]). Lock order: call under the log's lock or
    /// without it, never under the leader state's.
    pub fn high_watermark_lags_epoch_start(&self, high_watermark: i64) -> bool {
        self.leader_state()
            .as_ref()
            .is_some_and(|s| s.epoch_start_offset() > high_watermark)
    }

    /// Whether the partition is led here with replication (its acks wait for followers).
    pub fn is_replicated_leader(&self) -> bool {
        self.leader_state().is_some()
    }

    /// A follower fetched at `fetch_offset`: its progress moves the high watermark and may
    /// add it to the ISR (the change to propose is returned). `log_start_offset` is the one
    /// it reported, which tells whether consumers can be sent to it.
    pub fn on_follower_fetch(
        &self,
        log: &mut Log,
        replica: i32,
        fetch_offset: i64,
        log_start_offset: i64,
        now_ms: i64,
    ) -> Result<Option<IsrChange>, PartitionError> {
        let mut state = self.leader_state();
        let Some(s) = state.as_mut() else {
            return Ok(None);
        };
        let _ = s.on_append(log.log_end_offset(), now_ms);
        let (moved, change) = s.on_follower_fetch(replica, fetch_offset, now_ms)?;
        s.on_follower_log_start(replica, log_start_offset);
        drop(state);
        self.publish_high_watermark(log, moved);
        Ok(change)
    }

    /// Where a consumer in `client_rack` fetching at `fetch_offset` should read instead of
    /// here (KIP-392 with the rack-aware selector): a follower in its rack that is alive in
    /// `image`, in the ISR and whose log covers the offset. `None`: read from this leader
    /// (also for a partition without followers, or not led here).
    pub fn preferred_read_replica(
        &self,
        image: &MetadataImage,
        node_id: i32,
        client_rack: &str,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<i32> {
        let state = self.leader_state();
        let s = state.as_ref()?;
        let rack_of = |id: i32| image.broker(id).and_then(|b| b.rack.as_deref());
        let views: Vec<FollowerView<'_>> = s
            .follower_progress()
            .map(|f: FollowerProgress| FollowerView {
                broker_id: f.replica,
                rack: rack_of(f.replica),
                alive: image.broker(f.replica).is_some_and(|b| !b.fenced),
                in_isr: f.in_isr,
                log_start_offset: f.log_start_offset,
                log_end_offset: f.log_end_offset,
                time_since_last_caught_up_ms: now_ms.saturating_sub(f.last_caught_up_ms),
            })
            .collect();
        preferred_read_replica(client_rack, fetch_offset, rack_of(node_id), &views)
    }

    /// Whether consumers may read below this log's high watermark while this broker follows
    /// (see `high_watermark_known`).
    pub fn is_high_watermark_known(&self) -> bool {
        self.high_watermark_known.load(Ordering::Acquire)
    }

    /// A leader's fetch response set the high watermark of the log (the fetcher holds its
    /// lock).
    pub fn on_leader_high_watermark(&self) {
        self.high_watermark_known.store(true, Ordering::Release);
    }

    /// The periodic ISR check: catches the leader state up with the log end (appends by
    /// coordinators and markers) and returns a shrink to propose, if any.
    pub fn maybe_shrink_isr(&self, now_ms: i64) -> Option<(IsrChange, i32)> {
        let mut log = self.log();
        let mut state = self.leader_state();
        let s = state.as_mut()?;
        let moved = s.on_append(log.log_end_offset(), now_ms);
        let change = s.maybe_shrink_isr(now_ms).map(|c| (c, s.leader_epoch()));
        drop(state);
        self.publish_high_watermark(&mut log, moved);
        change
    }

    /// The controller's answer to an ISR change proposed in `leader_epoch`.
    pub fn on_isr_answer(
        &self,
        leader_epoch: i32,
        answer: Result<(Vec<i32>, i32), IsrChangeRefusal>,
        now_ms: i64,
    ) {
        let mut log = self.log();
        let mut state = self.leader_state();
        let Some(s) = state.as_mut().filter(|s| s.leader_epoch() == leader_epoch) else {
            return;
        };
        let moved = match answer {
            // An error: metadata with a newer partition epoch got here first.
            Ok((isr, partition_epoch)) => s
                .on_isr_committed(&isr, partition_epoch, now_ms)
                .unwrap_or_default(),
            // Dropped or kept pending by the rule strata-sim tests (`on_isr_change_refused`).
            Err(refusal) => {
                s.on_isr_change_refused(refusal);
                None
            }
        };
        drop(state);
        self.publish_high_watermark(&mut log, moved);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

pub struct ReplicaManager {
    logs_dir: PathBuf,
    clean_shutdown: bool,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Partitions assigned here whose log could not be opened (I/O error, full disk): served
    /// as KAFKA_STORAGE_ERROR until a later reconcile opens them.
    offline: RwLock<HashSet<TopicPartition>>,
    /// Woken whenever records are appended anywhere; delayed fetches wait on it.
    data_arrived: Notify,
}

const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Suffix of partition directories that the metadata image does not know.
const STRAY_SUFFIX: &str = "-stray";

/// Waits until each partition's high watermark reaches its offset (the records are in every
/// in-sync replica), up to `timeout` in all. The partitions were led here with replication
/// when their records were appended. Blocking: call it on a blocking thread of the broker's
/// runtime. `Err` names the first partition that did not get there: the wait timed out, this
/// broker stopped leading it, or there was no runtime to wait on.
///
/// Fails closed: a coordinator acknowledges a commit only on `Ok`, so `Ok` is never an answer
/// this function could not check.
pub fn wait_all_replicated(
    appended: &[(Arc<Partition>, i64)],
    timeout: std::time::Duration,
) -> Result<(), i32> {
    let Some((first, _)) = appended.first() else {
        return Ok(());
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(topic = %first.topic, partition = first.index, "no runtime to wait for the in-sync replicas on; answering not replicated");
        return Err(first.index);
    };
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + timeout;
        for (partition, required) in appended {
            if !partition.wait_replicated(*required, deadline).await {
                return Err(partition.index);
            }
        }
        Ok(())
    })
}

pub use crate::task::now_ms;

impl ReplicaManager {
    pub fn new(data_dir: &Path, clean_shutdown: bool) -> std::io::Result<Self> {
        let logs_dir = data_dir.join("logs");
        std::fs::create_dir_all(&logs_dir)?;
        Ok(Self {
            logs_dir,
            clean_shutdown,
            partitions: RwLock::new(HashMap::new()),
            offline: RwLock::new(HashSet::new()),
            data_arrived: Notify::new(),
        })
    }

    /// The partition this broker leads, or the error a client gets for it (Kafka's
    /// `getPartitionOrError` for a leader): KAFKA_STORAGE_ERROR when its log is offline,
    /// NOT_LEADER_OR_FOLLOWER when another broker leads it (or none does, for now),
    /// UNKNOWN_TOPIC_OR_PARTITION when `image` has no such partition.
    pub fn leader_or_error(
        &self,
        image: &MetadataImage,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        match self.replica_or_error(image, topic, index)? {
            p if p.is_leader() => Ok(p),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// The partition if this broker holds a replica of it, leader or follower (consumers may
    /// read from followers, KIP-392); otherwise the errors of [`Self::leader_or_error`].
    pub fn replica_or_error(
        &self,
        image: &MetadataImage,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        match self.partition(topic, index) {
            Some(p) => Ok(p),
            None if self.is_offline(topic, index) => Err(ResponseError::KafkaStorageError),
            None if image.has_partition(topic, index) => Err(ResponseError::NotLeaderOrFollower),
            None => Err(ResponseError::UnknownTopicOrPartition),
        }
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read_locked()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Whether `topic`/`index` is assigned here but its log could not be opened.
    pub fn is_offline(&self, topic: &str, index: i32) -> bool {
        self.offline
            .read_locked()
            .contains(&(topic.to_string(), index))
    }

    pub fn has_offline(&self) -> bool {
        !self.offline.read_locked().is_empty()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read_locked().values().cloned().collect()
    }

    pub fn data_arrived(&self) -> &Notify {
        &self.data_arrived
    }

    pub fn notify_appended(&self) {
        self.data_arrived.notify_waiters();
    }

    /// Brings hosted partitions in line with `image`: opens missing logs, applies config
    /// changes, deletes logs of removed topics (and stray directories on disk). Blocking.
    /// Returns the partitions that failed to open, with the reason.
    pub fn reconcile(
        &self,
        image: &MetadataImage,
        config: &ServerConfig,
    ) -> Vec<(TopicPartition, LogError)> {
        let mut failures = Vec::new();
        let mut wanted: HashMap<TopicPartition, (Uuid, &PartitionImage)> = HashMap::new();
        for topic in image.topics() {
            for p in &topic.partitions {
                if p.replicas.contains(&config.node_id) {
                    wanted.insert((topic.name.clone(), p.partition), (topic.topic_id, p));
                }
            }
        }
        let mut partitions = self.partitions.write_locked();
        // Removed or replaced partitions.
        let gone: Vec<TopicPartition> = partitions
            .iter()
            .filter(|(tp, p)| wanted.get(*tp).map(|(id, ..)| *id) != Some(p.topic_id))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in gone {
            if let Some(p) = partitions.remove(&tp) {
                // Under the log's lock: whoever checks the flag under it sees it set before
                // the directory goes.
                let log = p.log();
                p.removed.store(true, Ordering::Release);
                // No longer led here (a reassignment moved it away, or the topic is gone):
                // produces waiting for its ISR answer at once instead of at their timeout.
                p.leading.store(false, Ordering::Release);
                let was_leading = p.leader_state().take().is_some();
                drop(log);
                if was_leading {
                    p.hw_advanced.notify_waiters();
                }
                remove_dir(&p.dir);
                tracing::info!(topic = %tp.0, partition = tp.1, "deleted partition log");
            }
        }
        let now = now_ms();
        let mut log_configs = HashMap::new();
        let lag_ms: i64 = config.broker_value(props::REPLICA_LAG_TIME_MAX_MS);
        let live_brokers = image.live_brokers();
        for (tp, (topic_id, assigned)) in &wanted {
            let (log_config, leader_config) = log_configs
                .entry(tp.0.clone())
                .or_insert_with(|| {
                    let min_isr = strata_meta::config::topic_config("min.insync.replicas")
                        .map(|def| config.topic_config_value(image, &tp.0, def))
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(1);
                    let leader = LeaderConfig {
                        replica_lag_time_max_ms: lag_ms,
                        min_insync_replicas: min_isr.max(1),
                    };
                    (config.log_config(image, &tp.0), leader)
                })
                .clone();
            if let Some(existing) = partitions.get(tp) {
                {
                    let mut log = existing.log();
                    if log.config() != &log_config {
                        log.set_config(log_config);
                    }
                }
                existing.apply_assignment(
                    assigned,
                    config.node_id,
                    leader_config,
                    &live_brokers,
                    now,
                );
                continue;
            }
            let dir = self.logs_dir.join(format!("{}-{}", tp.0, tp.1));
            match open_partition_log(&dir, *topic_id, log_config, self.clean_shutdown, now) {
                Ok(log) => {
                    let partition = Arc::new(Partition {
                        topic: tp.0.clone(),
                        index: tp.1,
                        topic_id: *topic_id,
                        leader_epoch: AtomicI32::new(assigned.leader_epoch),
                        leading: AtomicBool::new(false),
                        leader_state: Mutex::new(None),
                        hw_advanced: Notify::new(),
                        high_watermark_known: AtomicBool::new(false),
                        dir,
                        log: Mutex::new(log),
                        removed: AtomicBool::new(false),
                    });
                    partition.apply_assignment(
                        assigned,
                        config.node_id,
                        leader_config,
                        &live_brokers,
                        now,
                    );
                    partitions.insert(tp.clone(), partition);
                }
                Err(e) => {
                    tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "cannot open partition log");
                    failures.push((tp.clone(), e));
                }
            }
        }
        drop(partitions);
        *self.offline.write_locked() = failures.iter().map(|(tp, _)| tp.clone()).collect();
        failures
    }

    /// Sets aside partition directories that no partition of the image owns (a topic deleted
    /// while the broker was down, or a deletion interrupted by a crash). They are renamed to
    /// `*-stray`, not deleted, as Kafka does: if the metadata log were ever lost or damaged,
    /// deleting would turn a metadata problem into data loss.
    /// Called once at start-up, after the first [`ReplicaManager::reconcile`].
    pub fn set_aside_stray_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.logs_dir) else {
            return;
        };
        let hosted = self.partitions.read_locked();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(STRAY_SUFFIX) {
                continue;
            }
            let owned = name
                .rsplit_once('-')
                .and_then(|(t, p)| Some((t.to_string(), p.parse::<i32>().ok()?)))
                .is_some_and(|tp| hosted.contains_key(&tp));
            if !owned {
                tracing::warn!(dir = %name, "partition directory not in the metadata image");
                set_aside(&entry.path());
            }
        }
    }

    /// Closes every log cleanly (flush, indexes, producer snapshots). Blocking.
    pub fn close_all(&self) -> Vec<(TopicPartition, LogError)> {
        let partitions: Vec<(TopicPartition, Arc<Partition>)> =
            self.partitions.write_locked().drain().collect();
        let mut failures = Vec::new();
        for (tp, partition) in partitions {
            match Arc::try_unwrap(partition) {
                Ok(p) => {
                    let log = strata_durable::mutex_into_inner(p.log);
                    if let Err(e) = log.close() {
                        failures.push((tp, e));
                    }
                }
                Err(shared) => {
                    // Still referenced by an in-flight request that outlived shutdown: flush
                    // what we can; the next start will recover the tail.
                    if let Err(e) = shared.log().flush() {
                        failures.push((tp.clone(), e));
                    }
                    failures.push((
                        tp,
                        LogError::Io {
                            context: "partition still in use at shutdown".into(),
                            source: std::io::Error::other("in use"),
                        },
                    ));
                }
            }
        }
        failures
    }
}

fn open_partition_log(
    dir: &Path,
    topic_id: Uuid,
    config: strata_log::LogConfig,
    clean_shutdown: bool,
    now_ms: i64,
) -> Result<Log, LogError> {
    let io = |context: &str, source| LogError::Io {
        context: format!("{context} {}", dir.display()),
        source,
    };
    let expected = format!("version: 0\ntopic_id: {topic_id}\n");
    match std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)) {
        Ok(found) if found == expected => {}
        Ok(found) => match parse_topic_id(&found) {
            Some(other) => {
                // Left behind by an older topic of the same name: keep its data aside.
                tracing::warn!(dir = %dir.display(), %other, "partition directory belongs to an older topic; setting it aside");
                set_aside(dir);
            }
            // Unreadable metadata (written by a crash on a full disk, say): the data is most
            // likely this topic's; keep it and write the file again below.
            None => {
                tracing::warn!(dir = %dir.display(), "unreadable partition.metadata; rewriting it")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
    if std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE))
        .ok()
        .as_deref()
        != Some(expected.as_str())
    {
        strata_durable::replace(dir, PARTITION_METADATA_FILE, expected.as_bytes())
            .map_err(|e| io("write partition.metadata in", e))?;
    }
    Log::open(dir, config, clean_shutdown, now_ms)
}

fn parse_topic_id(metadata: &str) -> Option<Uuid> {
    metadata
        .lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

/// Renames a partition directory to `<name>.<uuid>-stray` so that nothing is deleted that
/// the metadata does not account for.
fn set_aside(dir: &Path) {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().to_string()) else {
        return;
    };
    let target = dir.with_file_name(format!("{name}.{}{STRAY_SUFFIX}", Uuid::new_v4().simple()));
    match std::fs::rename(dir, &target) {
        Ok(()) => tracing::warn!(dir = %name, "set aside as *-stray"),
        Err(e) => tracing::error!(dir = %name, error = %e, "cannot set aside partition directory"),
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(dir = %dir.display(), error = %e, "cannot delete partition directory");
        }
    }
}

#[cfg(test)]
mod reconcile_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Partition 7 of "t", led here (broker 1) in epoch 0 with replicas [1, 2], both in the
    /// ISR, over an empty log: its high watermark is 0 until broker 2 fetches.
    fn replicated_leader(dir: &Path) -> Arc<Partition> {
        let log = Log::open(dir, strata_log::LogConfig::default(), true, 0).expect("open log");
        let assignment = LeaderAndIsr {
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
        };
        let state =
            LeaderState::new(&assignment, 0, 0, 0, LeaderConfig::default()).expect("leader state");
        Arc::new(Partition {
            topic: "t".into(),
            index: 7,
            topic_id: Uuid::new_v4(),
            leader_epoch: AtomicI32::new(0),
            leading: AtomicBool::new(true),
            leader_state: Mutex::new(Some(state)),
            hw_advanced: Notify::new(),
            high_watermark_known: AtomicBool::new(true),
            dir: dir.to_path_buf(),
            log: Mutex::new(log),
            removed: AtomicBool::new(false),
        })
    }

    #[test]
    fn without_a_runtime_nothing_counts_as_replicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = replicated_leader(dir.path());
        assert!(tokio::runtime::Handle::try_current().is_err());
        let wait = Duration::from_millis(50);
        assert_eq!(wait_all_replicated(&[(p.clone(), 1)], wait), Err(7));
        assert_eq!(wait_all_replicated(&[(p, 0)], wait), Err(7));
        assert_eq!(wait_all_replicated(&[], wait), Ok(()));
    }

    #[test]
    fn on_the_runtime_only_what_the_isr_has_counts_as_replicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = replicated_leader(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let wait = |required: i64| {
            let p = p.clone();
            runtime
                .block_on(runtime.spawn_blocking(move || {
                    wait_all_replicated(&[(p, required)], Duration::from_millis(50))
                }))
                .expect("join")
        };
        assert_eq!(wait(0), Ok(()), "below the high watermark");
        assert_eq!(wait(1), Err(7), "broker 2 has not fetched offset 0");
    }
}
