//! The follower's side of replication (Kafka's `ReplicaFetcherThread`): one task per leader
//! broker copies every partition this broker follows from it, with the Kafka Fetch protocol
//! (v12: replica id, current leader epoch, last fetched epoch).
//!
//! Per partition and response:
//! - a *diverging epoch* from the leader means this log's last epoch ends earlier in the
//!   leader's log (a previous leader wrote records the new one does not have): truncate
//!   where `strata_partition::truncation_for` says (KIP-101/279/595), then fetch again;
//! - records are appended as the leader wrote them (`Log::append_as_follower`), and the
//!   follower's high watermark becomes the leader's, bounded by its own log end (consumers
//!   reading from this follower, KIP-392, are woken when it moves), and its log start the
//!   leader's, bounded by its high watermark;
//! - a fetch below the leader's log start (OFFSET_OUT_OF_RANGE: a new replica of a partition
//!   whose start retention or DeleteRecords moved) starts the log over at the leader's log
//!   start, or at the base of the leader's first batch when that start is inside it;
//! - a fetch the leader can answer only from the tier (OFFSET_MOVED_TO_TIERED_STORAGE)
//!   starts the log over where the tier ends (`RemoteLogManager::start_follower_after_tier`);
//! - the next fetch offset is the log end, which tells the leader how far this follower is.
//!
//! Fetches go through an incremental fetch session (KIP-227, [`FollowerSession`]): after the
//! first full fetch, a request carries only partitions whose position moved and the leader
//! answers only partitions with news, so an idle follower of N partitions costs a few bytes
//! per round trip instead of O(N). The leader's cache treats followers' sessions as
//! privileged (they may evict consumers' sessions).
//!
//! [`ReplicaFetchers::update`] runs after every metadata image: it starts a fetcher for each
//! leader that has partitions to give here, hands each its partitions with the leader epoch
//! they follow, and stops fetchers that have nothing left. A partition whose leader epoch
//! changed is fetched with the new epoch from its next request on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_durable::LockExt;
use strata_meta::config::props;
use strata_meta::MetadataImage;
use strata_partition::{truncation_for, EpochEndOffset, Truncation};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::broker_client::BrokerConnection;
use crate::config::ServerConfig;
use crate::metadata_source::MetadataSource;
use crate::metrics::Metrics;
use crate::remote_log::RemoteLogManager;
use crate::replica_manager::ReplicaManager;
use crate::replica_manager::{now_ms, Partition, TopicPartition};

/// Fetch v12 is the first with `last_fetched_epoch` and diverging epochs, and still names
/// topics (v13+ uses topic ids).
const FETCH_VERSION: i16 = 12;
/// Bytes one fetch response may carry over all partitions.
const FETCH_RESPONSE_MAX_BYTES: i32 = 16 * 1024 * 1024;
/// Added to the leader's wait for the whole round trip.
const RESPONSE_SLACK: Duration = Duration::from_secs(10);
/// Pause after a failed connection or a response with errors, so that a leader that is
/// down or not ready is not hammered.
const BACKOFF: Duration = Duration::from_millis(200);

/// A partition this broker follows, and the leader epoch it follows it in.
#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
}

struct Fetcher {
    partitions: Arc<Mutex<BTreeMap<TopicPartition, Followed>>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

/// What the fetchers use: where leaders are, the logs they copy into, the tier a follower may
/// have to start after.
pub struct FetcherParts {
    /// How to reach the leaders' inter-broker listener.
    pub connector: crate::broker_client::BrokerConnector,
    pub config: Arc<ServerConfig>,
    pub metadata: Arc<MetadataSource>,
    pub replicas: Arc<ReplicaManager>,
    pub remote: Arc<RemoteLogManager>,
    pub metrics: Arc<Metrics>,
}

/// The running fetchers, by leader broker id.
pub struct ReplicaFetchers {
    parts: Arc<FetcherParts>,
    fetchers: Mutex<HashMap<i32, Fetcher>>,
}

impl ReplicaFetchers {
    pub fn new(parts: FetcherParts) -> Self {
        ReplicaFetchers {
            parts: Arc::new(parts),
            fetchers: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, re-targets and stops fetchers to match `image`. Must run inside the runtime
    /// (a blocking thread of it is fine).
    pub fn update(&self, image: &MetadataImage) {
        let me = self.parts.config.node_id;
        let mut wanted: HashMap<i32, BTreeMap<TopicPartition, Followed>> = HashMap::new();
        for topic in image.topics() {
            for p in &topic.partitions {
                if p.leader == me || p.leader < 0 || !p.replicas.contains(&me) {
                    continue;
                }
                let Some(partition) = self.parts.replicas.partition(&topic.name, p.partition)
                else {
                    continue; // offline here: nothing to copy into
                };
                wanted.entry(p.leader).or_default().insert(
                    (topic.name.clone(), p.partition),
                    Followed {
                        partition,
                        leader_epoch: p.leader_epoch,
                    },
                );
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut fetchers = self.fetchers.locked();
        fetchers.retain(|leader, f| {
            let keep = wanted.contains_key(leader) && !f.task.is_finished();
            if !keep {
                f.task.abort();
            }
            keep
        });
        for (leader, partitions) in wanted {
            let fetcher = fetchers.entry(leader).or_insert_with(|| {
                let shared = Arc::new(Mutex::new(BTreeMap::new()));
                let changed = Arc::new(Notify::new());
                let task = runtime.spawn(run_fetcher(
                    self.parts.clone(),
                    leader,
                    shared.clone(),
                    changed.clone(),
                ));
                Fetcher {
                    partitions: shared,
                    changed,
                    task,
                }
            });
            *fetcher.partitions.locked() = partitions;
            fetcher.changed.notify_one();
        }
    }

    /// Stops every fetcher and waits for them, so that no fetch holds a log at shutdown.
    pub async fn stop_all(&self) {
        let fetchers: Vec<Fetcher> = self.fetchers.locked().drain().map(|(_, f)| f).collect();
        for f in fetchers {
            f.task.abort();
            let _ = f.task.await;
        }
    }
}

/// What one partition's next fetch asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FetchPosition {
    tp: TopicPartition,
    leader_epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
    log_start_offset: i64,
}

async fn run_fetcher(
    parts: Arc<FetcherParts>,
    leader: i32,
    partitions: Arc<Mutex<BTreeMap<TopicPartition, Followed>>>,
    changed: Arc<Notify>,
) {
    let wait_ms: i32 = parts.config.broker_value(props::REPLICA_FETCH_WAIT_MAX_MS);
    let partition_max_bytes: i32 = parts.config.broker_value(props::REPLICA_FETCH_MAX_BYTES);
    let mut connection: Option<BrokerConnection> = None;
    let mut session = FollowerSession::default();
    // A leader that stays unreachable (down, or refusing this broker's TLS or SASL login) is
    // reported once per streak of failures, then at debug level.
    let mut connect_failures = 0u64;
    loop {
        let followed = partitions.locked().clone();
        if followed.is_empty() {
            changed.notified().await;
            continue;
        }
        if connection.is_none() {
            let image = parts.metadata.image();
            let address = image
                .broker(leader)
                .map(|b| format!("{}:{}", b.host, b.port));
            match address {
                Some(address) => {
                    match BrokerConnection::connect(
                        &parts.connector,
                        &address,
                        "strata-replica-fetcher",
                    )
                    .await
                    {
                        Ok(c) => {
                            tracing::info!(leader, %address, partitions = followed.len(), "replica fetcher connected");
                            connection = Some(c);
                            connect_failures = 0;
                        }
                        Err(e) => {
                            connect_failures += 1;
                            if connect_failures == 3 {
                                tracing::warn!(leader, %address, error = format!("{e:#}"), "replica fetcher cannot connect to the leader");
                            } else {
                                tracing::debug!(leader, %address, error = format!("{e:#}"), "replica fetcher cannot connect");
                            }
                            tokio::time::sleep(BACKOFF).await;
                            continue;
                        }
                    }
                }
                None => {
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let positions = {
            let followed = followed.clone();
            match tokio::task::spawn_blocking(move || positions(&followed)).await {
                Ok(p) => p,
                Err(_) => return,
            }
        };
        let (to_send, forgotten) = session.next_request(&positions);
        let request = fetch_request(
            parts.config.node_id,
            wait_ms,
            partition_max_bytes,
            &to_send,
            &forgotten,
            (session.id, session.epoch),
        );
        let timeout = Duration::from_millis(wait_ms.max(0) as u64) + RESPONSE_SLACK;
        let fetch = conn.send::<_, FetchResponse>(ApiKey::Fetch, FETCH_VERSION, &request);
        let response = match tokio::time::timeout(timeout, fetch).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(leader, error = %e, "replica fetch failed; reconnecting");
                connection = None;
                session.start_over();
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(leader, "replica fetch timed out; reconnecting");
                connection = None;
                session.start_over();
                continue;
            }
        };
        session.on_response(&response);
        let p = parts.clone();
        let applied =
            match tokio::task::spawn_blocking(move || apply(&p, &followed, response)).await {
                Ok(applied) => applied,
                Err(_) => return,
            };
        for partition in &applied.behind_tier {
            if let Err(e) = parts.remote.start_follower_after_tier(partition).await {
                tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "cannot start the follower after the tier; will retry");
            }
        }
        if applied.dropped {
            // The leader's session now thinks this follower has what it did not apply.
            session.start_over();
        }
        if applied.any_error {
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// This follower's side of an incremental fetch session (KIP-227) at one leader (Kafka's
/// `FetchSessionHandler`): after a full fetch opens the session, a request carries only the
/// partitions whose position changed since it was last sent, and the ones no longer
/// followed as forgotten; the leader answers only partitions with news. A session error,
/// a lost connection or an answer this follower could not apply makes the next request a
/// full one that closes the session and opens another.
#[derive(Default)]
struct FollowerSession {
    /// The leader's session id; 0 without a session.
    id: i32,
    /// The next request's epoch: 0 for a full fetch, otherwise the session's next epoch.
    epoch: i32,
    /// The position last sent of each partition in the leader's session.
    sent: HashMap<TopicPartition, FetchPosition>,
}

impl FollowerSession {
    /// The partitions the next request carries, and those it forgets.
    fn next_request(
        &mut self,
        positions: &[FetchPosition],
    ) -> (Vec<FetchPosition>, Vec<TopicPartition>) {
        if self.epoch == crate::fetch_session::INITIAL_EPOCH {
            self.sent = positions
                .iter()
                .map(|p| (p.tp.clone(), p.clone()))
                .collect();
            return (positions.to_vec(), Vec::new());
        }
        let wanted: std::collections::HashSet<&TopicPartition> =
            positions.iter().map(|p| &p.tp).collect();
        let forgotten: Vec<TopicPartition> = self
            .sent
            .keys()
            .filter(|tp| !wanted.contains(tp))
            .cloned()
            .collect();
        for tp in &forgotten {
            self.sent.remove(tp);
        }
        let mut changed = Vec::new();
        for p in positions {
            if self.sent.get(&p.tp) != Some(p) {
                self.sent.insert(p.tp.clone(), p.clone());
                changed.push(p.clone());
            }
        }
        (changed, forgotten)
    }

    /// Moves to the next request's session and epoch after a response (as the Java client).
    fn on_response(&mut self, response: &FetchResponse) {
        use crate::fetch_session::{next_epoch, INITIAL_EPOCH, INVALID_SESSION_ID};
        if response.error_code == ResponseError::FetchSessionIdNotFound.code() {
            // The leader has no such session: ask for a new one.
            self.id = INVALID_SESSION_ID;
            self.epoch = INITIAL_EPOCH;
        } else if response.error_code != 0 {
            // Another session error: close ours and ask for a new one.
            self.epoch = INITIAL_EPOCH;
        } else if response.session_id == INVALID_SESSION_ID {
            // No session was created (the leader's cache is full) or the leader closed ours.
            self.id = INVALID_SESSION_ID;
            self.epoch = INITIAL_EPOCH;
        } else if self.epoch == INITIAL_EPOCH {
            self.id = response.session_id;
            self.epoch = next_epoch(INITIAL_EPOCH);
        } else {
            self.epoch = next_epoch(self.epoch);
        }
    }

    /// The next request is a full fetch that closes the current session.
    fn start_over(&mut self) {
        self.epoch = crate::fetch_session::INITIAL_EPOCH;
    }
}

/// Where each followed partition stands. Blocking (locks the logs).
fn positions(followed: &BTreeMap<TopicPartition, Followed>) -> Vec<FetchPosition> {
    followed
        .iter()
        .map(|(tp, f)| {
            let log = f.partition.log();
            FetchPosition {
                tp: tp.clone(),
                leader_epoch: f.leader_epoch,
                fetch_offset: log.log_end_offset(),
                last_fetched_epoch: log.latest_epoch().unwrap_or(-1),
                log_start_offset: log.log_start_offset(),
            }
        })
        .collect()
}

fn fetch_request(
    replica_id: i32,
    wait_ms: i32,
    partition_max_bytes: i32,
    positions: &[FetchPosition],
    forgotten: &[TopicPartition],
    (session_id, session_epoch): (i32, i32),
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in positions {
        let partition = FetchPartition::default()
            .with_partition(p.tp.1)
            .with_current_leader_epoch(p.leader_epoch)
            .with_fetch_offset(p.fetch_offset)
            .with_last_fetched_epoch(p.last_fetched_epoch)
            .with_log_start_offset(p.log_start_offset)
            .with_partition_max_bytes(partition_max_bytes);
        match topics.last_mut() {
            Some(t) if t.topic.as_str() == p.tp.0 => t.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.tp.0.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let mut forgotten_topics: Vec<ForgottenTopic> = Vec::new();
    for (topic, partition) in forgotten {
        match forgotten_topics.last_mut() {
            Some(t) if t.topic.as_str() == topic => t.partitions.push(*partition),
            _ => forgotten_topics.push(
                ForgottenTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(session_id)
        .with_session_epoch(session_epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten_topics)
}

/// What applying a fetch response leaves the fetcher to do.
struct Applied {
    /// A partition answered with an error: back off.
    any_error: bool,
    /// Partitions whose fetch offset the leader has only in the tier.
    behind_tier: Vec<Arc<Partition>>,
    /// Some partition's answer was not applied (leadership moved on, or the log failed).
    dropped: bool,
}

/// Applies a fetch response to the followed logs. Blocking.
fn apply(
    parts: &FetcherParts,
    followed: &BTreeMap<TopicPartition, Followed>,
    response: FetchResponse,
) -> Applied {
    let mut any_error = response.error_code != 0;
    let mut behind_tier = Vec::new();
    let mut dropped = false;
    let now = now_ms();
    for topic in response.responses {
        for data in topic.partitions {
            let tp = (topic.topic.to_string(), data.partition_index);
            let Some(f) = followed.get(&tp) else {
                continue;
            };
            // Leadership moved on since the request: the next request uses the new epoch.
            if f.partition.leader_epoch() != f.leader_epoch || f.partition.is_leader() {
                dropped = true;
                continue;
            }
            if data.error_code != 0 {
                any_error = true;
                let error = ResponseError::try_from_code(data.error_code);
                tracing::debug!(topic = %tp.0, partition = tp.1, ?error, "replica fetch error");
                if data.error_code == ResponseError::OffsetOutOfRange.code() {
                    out_of_range(&f.partition, data.log_start_offset);
                } else if data.error_code == ResponseError::OffsetMovedToTieredStorage.code() {
                    behind_tier.push(f.partition.clone());
                }
                continue;
            }
            let mut log = f.partition.log();
            let result = if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0
            {
                let leader_answer = EpochEndOffset {
                    leader_epoch: data.diverging_epoch.epoch,
                    end_offset: data.diverging_epoch.end_offset,
                };
                let target = match truncation_for(
                    leader_answer,
                    log.log_end_offset(),
                    log.high_watermark(),
                    |epoch| log.end_offset_for_epoch(epoch),
                ) {
                    Truncation::Done(offset) | Truncation::AskAgain { offset, .. } => offset,
                };
                tracing::info!(topic = %tp.0, partition = tp.1, from = log.log_end_offset(), to = target, "truncating a diverging log");
                log.truncate_to(target)
            } else {
                let records = data.records.unwrap_or_default();
                let appended = if records.is_empty() {
                    Ok(())
                } else {
                    append(&mut log, &tp, &records, now)
                };
                appended.and_then(|()| {
                    let hw_before = log.high_watermark();
                    let hw = data.high_watermark.min(log.log_end_offset());
                    log.set_high_watermark(hw);
                    f.partition.on_leader_high_watermark();
                    if log.high_watermark() != hw_before {
                        // Consumers reading from this follower (KIP-392) wait for it.
                        parts.replicas.notify_appended();
                    }
                    follow_log_start(&mut log, data.log_start_offset)
                })
            };
            if let Err(e) = result {
                any_error = true;
                dropped = true;
                parts.metrics.storage_errors.add(1);
                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "cannot apply fetched records");
            }
        }
    }
    Applied {
        any_error,
        behind_tier,
        dropped,
    }
}

/// Appends what the leader sent. An empty log restarted at the leader's log start (see
/// [`out_of_range`]) may get a first batch that begins below it: DeleteRecords moved the
/// leader's log start inside that batch. As Kafka's follower does
/// (`Partition.appendRecordsToFollowerOrFutureReplica`), start the log again at the batch's
/// base offset and append it whole; [`follow_log_start`] then moves the log start up.
fn append(
    log: &mut strata_log::Log,
    tp: &TopicPartition,
    records: &[u8],
    now_ms: i64,
) -> Result<(), strata_log::LogError> {
    match log.append_as_follower(records, now_ms) {
        Err(strata_log::LogError::UnexpectedAppendOffset {
            expected,
            first_offset,
            last_offset,
        }) if log.log_end_offset() == log.log_start_offset()
            && first_offset < expected
            && last_offset >= expected =>
        {
            tracing::info!(topic = %tp.0, partition = tp.1, log_start_offset = expected, first_offset, "the leader's first batch starts below this empty log; starting the log at the batch");
            log.truncate_fully_and_start_at(first_offset)?;
            log.append_as_follower(records, now_ms).map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// A follower's log start follows the leader's (Kafka's follower calls
/// `maybeIncrementLogStartOffset` with the leader's log start after each fetch), so that
/// records deleted on the leader (DeleteRecords, retention) are not served again should this
/// replica lead. Only up to the local high watermark: below it the leader has the same records.
fn follow_log_start(
    log: &mut strata_log::Log,
    leader_log_start: i64,
) -> Result<(), strata_log::LogError> {
    let target = leader_log_start.min(log.high_watermark());
    if target > log.log_start_offset() {
        log.delete_records_before(target)?;
    }
    Ok(())
}

/// The leader no longer has this follower's fetch offset: below its log start (retention
/// moved it), start the log over there.
fn out_of_range(partition: &Partition, leader_log_start: i64) {
    let mut log = partition.log();
    if leader_log_start > log.log_end_offset() {
        tracing::warn!(topic = %partition.topic, partition = partition.index, leader_log_start, log_end_offset = log.log_end_offset(), "behind the leader's log start; starting over there");
        if let Err(e) = log.truncate_fully_and_start_at(leader_log_start) {
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "cannot restart the log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(partition: i32, fetch_offset: i64) -> FetchPosition {
        FetchPosition {
            tp: ("t".to_string(), partition),
            leader_epoch: 3,
            fetch_offset,
            last_fetched_epoch: 3,
            log_start_offset: 0,
        }
    }

    fn answer(error_code: i16, session_id: i32) -> FetchResponse {
        FetchResponse::default()
            .with_error_code(error_code)
            .with_session_id(session_id)
    }

    const NONE: i16 = 0;

    #[test]
    fn a_follower_sends_everything_once_then_only_changes() {
        let mut s = FollowerSession::default();
        let all = vec![position(0, 10), position(1, 20), position(2, 30)];
        let (sent, forgotten) = s.next_request(&all);
        assert_eq!((sent.len(), forgotten.len(), s.id, s.epoch), (3, 0, 0, 0));
        s.on_response(&answer(NONE, 77));
        assert_eq!((s.id, s.epoch), (77, 1));
        // Nothing moved: an empty incremental request.
        let (sent, forgotten) = s.next_request(&all);
        assert!(sent.is_empty() && forgotten.is_empty());
        s.on_response(&answer(NONE, 77));
        assert_eq!(s.epoch, 2);
        // Partition 1 advanced, partition 2 is no longer followed, partition 3 is new.
        let next = vec![position(0, 10), position(1, 25), position(3, 0)];
        let (sent, forgotten) = s.next_request(&next);
        assert_eq!(sent, vec![position(1, 25), position(3, 0)]);
        assert_eq!(forgotten, vec![("t".to_string(), 2)]);
        let (sent, _) = s.next_request(&next);
        assert!(sent.is_empty(), "sent once is enough");
    }

    #[test]
    fn session_errors_and_lost_answers_start_over() {
        let mut s = FollowerSession::default();
        let all = vec![position(0, 10)];
        s.next_request(&all);
        s.on_response(&answer(NONE, 77));
        // An error other than "not found": close session 77 with the next (full) request.
        s.on_response(&answer(ResponseError::InvalidFetchSessionEpoch.code(), 0));
        assert_eq!((s.id, s.epoch), (77, 0));
        let (sent, _) = s.next_request(&all);
        assert_eq!(sent.len(), 1, "a full request carries every partition");
        s.on_response(&answer(NONE, 78));
        assert_eq!((s.id, s.epoch), (78, 1));
        // Not found: a new session, closing none.
        s.on_response(&answer(ResponseError::FetchSessionIdNotFound.code(), 0));
        assert_eq!((s.id, s.epoch), (0, 0));
        // The leader's cache is full: full requests each time, asking again.
        s.next_request(&all);
        s.on_response(&answer(NONE, 0));
        assert_eq!((s.id, s.epoch), (0, 0));
        // A lost connection or a dropped answer.
        s.next_request(&all);
        s.on_response(&answer(NONE, 90));
        s.start_over();
        assert_eq!((s.id, s.epoch), (90, 0));
        assert_eq!(s.next_request(&all).0.len(), 1);
    }
}
