//! Fetch: read stored batches, with long polling.
//!
//! A fetch reads every requested partition once; if it has fewer than `min_bytes` and
//! `max_wait_ms` has not passed, it waits until records are appended anywhere (or the deadline)
//! and reads again. `max_bytes` bounds the response except for Kafka's at-least-one-batch
//! rule: the first partition with data returns its first batch whole even if that batch is
//! larger, so a consumer can always make progress.
//!
//! Consumers may read from followers (KIP-392, Kafka's `fetchOnlyFromLeader` false): a
//! consumer fetch of v11+ is served by any replica, a follower reading below its own high
//! watermark (read_uncommitted) or last stable offset (read_committed, with the aborted
//! transactions), as the leader does. With `replica.selector.class` set to Kafka's
//! `RackAwareReplicaSelector`, the leader answers a consumer that gives its `client.rack` with
//! a *preferred read replica* in that rack and no records
//! ([`crate::replica_manager::Partition::preferred_read_replica`]); only the leader does.
//! A follower answers an offset between its high watermark and its log end with no records
//! (its high watermark catches up with its next fetch from the leader), and one outside its
//! log with OFFSET_OUT_OF_RANGE without offsets, as Kafka does: clients then go back to the
//! leader instead of resetting (librdkafka reverts when the fetch offset is above the
//! answered high watermark, -1). Until a leader's fetch response has given it a high
//! watermark (after a restart), a follower answers OFFSET_NOT_AVAILABLE: its log end may hold
//! records the leader never committed.
//!
//! Fetch sessions (KIP-227, [`crate::fetch_session`]): the session cache says what a request
//! is before anything is read. A full fetch reads and answers the partitions it names and
//! may get a session id; an incremental fetch reads *every* partition of its session (those
//! it does not name at their cached fetch offsets, which for a follower also count as its
//! progress) and answers only those with news; a session error is answered alone, reading
//! nothing. The long poll waits on the session's partitions like on a full fetch's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use strata_log::{LogError, ReadResult};
use uuid::Uuid;

use strata_meta::MetadataImage;

use super::partition_walk::{hosted, Role};
use super::{code, log_error, str_bytes};
use crate::broker::Broker;
use crate::client_quota_manager::QuotaKind;
use crate::fetch_session::{
    FetchContext, FetchMetadata, PartitionKey, PartitionRequest, PartitionResult, SessionError,
    TopicKey, INVALID_SESSION_ID, TOPIC_ID_MIN_VERSION,
};
use crate::replica_manager::now_ms;
use crate::session::{Operation, RequestContext};
use crate::task::blocking;

/// Kafka's isolation level code for read_committed.
const READ_COMMITTED: i8 = 1;
/// The first Fetch version with client metadata (`rack_id`, `preferred_read_replica`):
/// consumers' fetches from it on may be served by followers (KIP-392).
const FOLLOWER_FETCH_MIN_VERSION: i16 = 11;
/// Upper bound on how long a fetch may be parked, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// One requested partition, resolved against the image.
#[derive(Clone)]
struct Target {
    topic: TopicName,
    topic_id: Uuid,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: i32,
    current_leader_epoch: i32,
    /// The epoch of the last batch a follower has (-1 from consumers).
    last_fetched_epoch: i32,
    /// A follower's log start offset (-1 from consumers).
    log_start_offset: i64,
    /// A follower's high watermark (Fetch v18, KIP-1166; `i64::MAX` when not known).
    replica_high_watermark: i64,
    /// Set when the partition cannot be read at all (unknown topic, ...).
    error: Option<ResponseError>,
}

/// What applies to every partition of one fetch (Kafka's `FetchParams`).
#[derive(Clone)]
struct FetchParams {
    /// Bound on the response's record bytes (but for the at-least-one-batch rule).
    max_bytes: usize,
    read_committed: bool,
    /// The follower fetching (replica id >= 0); `None` for a consumer.
    replica: Option<i32>,
    /// Kafka's `fetchOnlyFromLeader` false: a consumer's fetch with client metadata (v11+),
    /// which any replica may serve.
    from_follower_allowed: bool,
    /// The consumer's `client.rack`, when it gave one (v11+) and the rack-aware replica
    /// selector is configured: the leader may then send it to a follower in its rack.
    client_rack: Option<String>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: FetchRequest,
) -> FetchResponse {
    let version = ctx.version();
    let image = broker.image();
    // A follower (replica id >= 0) reads up to the log end and reports its progress.
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    // KIP-227: the session decides which partitions this fetch reads, and which it answers.
    let fetch_data = requested_partitions(&request, version);
    let forgotten = forgotten_partitions(&request, version);
    let context = broker.fetch_sessions().new_context(
        now_ms(),
        version,
        FetchMetadata {
            session_id: request.session_id,
            epoch: request.session_epoch,
        },
        replica.is_some(),
        &fetch_data,
        &forgotten,
    );
    let to_read = match &context {
        FetchContext::Error(e) => return session_error(*e),
        FetchContext::Sessionless | FetchContext::Full { .. } => &fetch_data,
        FetchContext::Incremental { partitions, .. } => partitions,
    };
    // Kafka authorizes once per request, not per partition: a follower needs CLUSTER_ACTION
    // (else every partition is refused), a consumer READ on each topic it names.
    let follower_refused = replica
        .and_then(|_| ctx.authorize_cluster(Operation::ClusterAction).err())
        .map(|_| ResponseError::TopicAuthorizationFailed);
    let mut refusals: HashMap<String, Option<ResponseError>> = HashMap::new();
    let mut topic_refused = |name: &str| {
        if replica.is_some() {
            return None;
        }
        if let Some(&refusal) = refusals.get(name) {
            return refusal;
        }
        let refusal = ctx.authorize_topic(Operation::Read, name).err();
        refusals.insert(name.to_string(), refusal);
        refusal
    };
    let targets: Vec<Target> = to_read
        .iter()
        .map(|(key, wanted)| resolve(follower_refused, &mut topic_refused, &image, key, wanted))
        .collect();
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + max_wait;
    let max_bytes = if request.max_bytes <= 0 {
        i32::MAX as usize
    } else {
        request.max_bytes as usize
    };
    // Kafka's `getMaxValueInQuotaWindow`: a consumer with a byte-rate quota gets at most what
    // its quota allows over the window in one response (followers have no client quota).
    let quota_cap = match replica {
        Some(_) => None,
        None => broker.quotas.max_value_in_window(
            &image,
            QuotaKind::Fetch,
            &ctx.session.principal.name,
            ctx.client_id(),
        ),
    };
    let max_bytes = quota_cap.map_or(max_bytes, |cap| max_bytes.min(cap.max(1.0) as usize));
    let min_bytes = (request.min_bytes.max(0) as usize).min(max_bytes);
    let from_follower_allowed = replica.is_none() && version >= FOLLOWER_FETCH_MIN_VERSION;
    let client_rack = (from_follower_allowed && broker.rack_aware_reads)
        .then(|| request.rack_id.to_string())
        .filter(|rack| !rack.is_empty());
    let params = FetchParams {
        max_bytes,
        read_committed: request.isolation_level == READ_COMMITTED,
        replica,
        from_follower_allowed,
        client_rack,
    };
    let mut partitions = loop {
        // Register interest before reading, so an append between the read and the wait
        // is not missed.
        let notified = broker.replicas.data_arrived().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let b = broker.clone();
        let t = targets.clone();
        let p = params.clone();
        let partitions = blocking(move || read_all(&b, &t, &p)).await;
        let total: usize = partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .sum();
        let any_error = partitions.iter().any(|p| p.error_code != 0);
        // As Kafka: a consumer sent elsewhere learns it at once.
        let any_redirect = partitions.iter().any(|p| p.preferred_read_replica.0 >= 0);
        // KIP-1166: a follower whose high watermark is behind ours learns the new one at once,
        // not after the wait (it bounds how soon its consumers see new records).
        let follower_behind = replica.is_some()
            && targets
                .iter()
                .zip(&partitions)
                .any(|(t, p)| p.error_code == 0 && t.replica_high_watermark < p.high_watermark);
        if total >= min_bytes
            || any_error
            || any_redirect
            || follower_behind
            || Instant::now() >= deadline
            || !broker.is_serving()
        {
            break partitions;
        }
        if tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_err()
        {
            let b = broker.clone();
            let t = targets.clone();
            let p = params.clone();
            break blocking(move || read_all(&b, &t, &p)).await;
        }
    };
    let fetched: usize = partitions
        .iter()
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .sum();
    if replica.is_none() {
        let charge = super::charge_quota(broker, ctx, &image, QuotaKind::Fetch, fetched);
        if let Some(charge) = charge.filter(|c| !c.throttle.is_zero()) {
            // As Kafka: a throttled consumer gets an empty answer, and what was read does not
            // count against its quota. An incremental session keeps its id (its epoch moved
            // on with this request); a full fetch creates none.
            broker.quotas.unrecord(&charge, Instant::now());
            let session_id = match context {
                FetchContext::Incremental { session_id, .. } => session_id,
                _ => INVALID_SESSION_ID,
            };
            return FetchResponse::default().with_session_id(session_id);
        }
    }
    broker.metrics.fetch_bytes.add(fetched as u64);
    // Which partitions the answer carries, under which session id.
    let (session_id, include) = match context {
        FetchContext::Error(e) => return session_error(e),
        FetchContext::Sessionless => (INVALID_SESSION_ID, vec![true; partitions.len()]),
        FetchContext::Full {
            privileged,
            uses_topic_ids,
        } => {
            let cached = fetch_data
                .into_iter()
                .zip(&partitions)
                .map(|((key, wanted), data)| (key, wanted, result_of(data)));
            let id = broker.fetch_sessions().create_session(
                now_ms(),
                privileged,
                uses_topic_ids,
                cached,
            );
            (id, vec![true; partitions.len()])
        }
        FetchContext::Incremental {
            session_id,
            next_epoch,
            ..
        } => {
            let results: Vec<PartitionResult> = partitions.iter().map(result_of).collect();
            match broker
                .fetch_sessions()
                .complete_incremental(session_id, next_epoch, &results)
            {
                Ok(include) => (session_id, include),
                Err(e) => return session_error(e),
            }
        }
    };
    // Group the partitions answered back under their topics, in the order read.
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let answered = targets
        .iter()
        .zip(partitions.drain(..))
        .zip(include)
        .filter_map(|(answer, include)| include.then_some(answer));
    for (target, data) in answered {
        match responses.last_mut() {
            Some(last) if last.topic == target.topic && last.topic_id == target.topic_id => {
                last.partitions.push(data)
            }
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(target.topic.clone())
                    .with_topic_id(target.topic_id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    // KIP-951: NOT_LEADER_OR_FOLLOWER names the current leader (v12+) and its endpoint (v16+).
    let mut leaders = std::collections::BTreeSet::new();
    if version >= 12 {
        let not_leader = code(ResponseError::NotLeaderOrFollower);
        for topic in &mut responses {
            let Some(t) = image
                .topic(topic.topic.as_str())
                .or_else(|| image.topic_by_id(&topic.topic_id))
            else {
                continue;
            };
            for p in topic
                .partitions
                .iter_mut()
                .filter(|p| p.error_code == not_leader)
            {
                if let Some(current) = t.partitions.get(p.partition_index as usize) {
                    p.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(current.leader))
                        .with_leader_epoch(current.leader_epoch);
                    leaders.insert(current.leader);
                }
            }
        }
    }
    let node_endpoints = if version >= 16 {
        super::leader_endpoints!(image, leaders, NodeEndpoint)
    } else {
        Vec::new()
    };
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses)
        .with_node_endpoints(node_endpoints)
}

/// The answer to a request that cannot use its session: the error alone, no session.
fn session_error(error: SessionError) -> FetchResponse {
    FetchResponse::default()
        .with_error_code(code(error.response_error()))
        .with_session_id(INVALID_SESSION_ID)
}

/// The request's partitions as a session keys them: by topic id from v13, by name before.
fn requested_partitions(
    request: &FetchRequest,
    version: i16,
) -> Vec<(PartitionKey, PartitionRequest)> {
    let mut partitions = Vec::new();
    for topic in &request.topics {
        let key = topic_key(version, &topic.topic, topic.topic_id);
        for p in &topic.partitions {
            partitions.push((
                PartitionKey {
                    topic: key.clone(),
                    partition: p.partition,
                },
                PartitionRequest {
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                    log_start_offset: p.log_start_offset,
                    // Decoded as i64::MAX (its default) below v18.
                    replica_high_watermark: p.high_watermark,
                },
            ));
        }
    }
    partitions
}

/// The partitions an incremental fetch drops from its session (v7+).
fn forgotten_partitions(request: &FetchRequest, version: i16) -> Vec<PartitionKey> {
    let mut forgotten = Vec::new();
    for topic in &request.forgotten_topics_data {
        let key = topic_key(version, &topic.topic, topic.topic_id);
        for &partition in &topic.partitions {
            forgotten.push(PartitionKey {
                topic: key.clone(),
                partition,
            });
        }
    }
    forgotten
}

fn topic_key(version: i16, name: &TopicName, id: Uuid) -> TopicKey {
    if version >= TOPIC_ID_MIN_VERSION {
        TopicKey::Id(id)
    } else {
        TopicKey::Name(Arc::from(name.as_str()))
    }
}

/// One partition to read, resolved against the image: a topic id or name the cluster does
/// not know is UNKNOWN_TOPIC_ID (v13+) or UNKNOWN_TOPIC_OR_PARTITION. As in Kafka, a topic
/// named by a consumer is authorized (`topic_refused`, READ) before anyone learns whether it
/// exists; a follower refused CLUSTER_ACTION (`follower_refused`) is refused every partition.
fn resolve(
    follower_refused: Option<ResponseError>,
    topic_refused: &mut impl FnMut(&str) -> Option<ResponseError>,
    image: &MetadataImage,
    key: &PartitionKey,
    wanted: &PartitionRequest,
) -> Target {
    let (resolved, unknown, topic_id) = match &key.topic {
        TopicKey::Id(id) => (image.topic_by_id(id), ResponseError::UnknownTopicId, *id),
        TopicKey::Name(name) => (
            image.topic(name),
            ResponseError::UnknownTopicOrPartition,
            Uuid::nil(),
        ),
    };
    let partition = key.partition;
    let error = follower_refused.or_else(|| match (resolved, &key.topic) {
        (None, TopicKey::Name(name)) => topic_refused(name).or(Some(unknown)),
        (None, TopicKey::Id(_)) => Some(unknown),
        (Some(t), _) => topic_refused(&t.name).or_else(|| {
            (partition < 0 || partition as usize >= t.partitions.len())
                .then_some(ResponseError::UnknownTopicOrPartition)
        }),
    });
    let topic = match (resolved, &key.topic) {
        (Some(t), _) => TopicName(str_bytes(t.name.clone())),
        (None, TopicKey::Name(name)) => TopicName(str_bytes(name.to_string())),
        (None, TopicKey::Id(_)) => TopicName::default(),
    };
    Target {
        topic,
        topic_id,
        partition,
        fetch_offset: wanted.fetch_offset,
        partition_max_bytes: wanted.partition_max_bytes,
        current_leader_epoch: wanted.current_leader_epoch,
        last_fetched_epoch: wanted.last_fetched_epoch,
        log_start_offset: wanted.log_start_offset,
        replica_high_watermark: wanted.replica_high_watermark,
        error,
    }
}

/// What a session compares with its cache to decide whether the answer carries a partition.
fn result_of(data: &PartitionData) -> PartitionResult {
    PartitionResult {
        high_watermark: data.high_watermark,
        last_stable_offset: data.last_stable_offset,
        log_start_offset: data.log_start_offset,
        records_bytes: data.records.as_ref().map_or(0, Bytes::len),
        error: data.error_code != 0,
        preferred_read_replica: data.preferred_read_replica.0 >= 0,
        diverging_epoch: data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0,
    }
}

/// Reads every target once, within the response byte budget. Blocking. For a follower
/// (`params.replica`), records its progress: the high watermark may move (consumers waiting
/// for records are woken) and the follower may join the ISR (proposed to the controller).
fn read_all(broker: &Arc<Broker>, targets: &[Target], params: &FetchParams) -> Vec<PartitionData> {
    let mut remaining = params.max_bytes;
    let mut first_with_data = true;
    let mut tier_read_done = false;
    let read_committed = params.read_committed;
    let image = broker.image();
    targets
        .iter()
        .map(|t| {
            let base = PartitionData::default()
                .with_partition_index(t.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(if read_committed {
                    Some(Vec::new())
                } else {
                    None
                });
            if let Some(error) = t.error {
                return base.with_error_code(code(error));
            }
            let role = if params.from_follower_allowed {
                Role::AnyReplica
            } else {
                Role::Leader
            };
            let partition = match hosted(
                &broker.replicas,
                &image,
                role,
                t.topic.as_str(),
                t.partition,
                t.current_leader_epoch,
            ) {
                Ok(p) => p,
                Err(e) => return base.with_error_code(code(e)),
            };
            let budget = remaining.min(t.partition_max_bytes.max(0) as usize);
            let mut log = partition.log();
            if let Some(replica) = params.replica {
                return follower_read(broker, &partition, &mut log, t, replica, budget, base);
            }
            // Leadership is set under the log's lock: this is the role the read below has.
            let leading = partition.is_leader();
            if !leading {
                if !params.from_follower_allowed {
                    return base.with_error_code(code(ResponseError::NotLeaderOrFollower));
                }
                if !partition.is_high_watermark_known() {
                    return base.with_error_code(code(ResponseError::OffsetNotAvailable));
                }
            }
            if let (true, Some(rack)) = (leading, params.client_rack.as_deref()) {
                let preferred = partition.preferred_read_replica(
                    &image,
                    broker.config.node_id,
                    rack,
                    t.fetch_offset,
                    crate::replica_manager::now_ms(),
                );
                if let Some(id) = preferred {
                    // Kafka skips the read and tells where to read instead.
                    broker.metrics.preferred_read_replica_answers.add(1);
                    return base
                        .with_high_watermark(log.high_watermark())
                        .with_last_stable_offset(log.last_stable_offset())
                        .with_log_start_offset(log.log_start_offset())
                        .with_preferred_read_replica(BrokerId(id))
                        .with_records(Some(Bytes::new()));
                }
            }
            // Consumers read below the high watermark; read_committed only below the last
            // stable offset (Kafka's FetchIsolation.TXN_COMMITTED), and gets the aborted
            // transactions overlapping what it returns, so it can drop their records. On a
            // follower both are its own, the last stable offset bounded by its high watermark.
            let bound = if read_committed {
                log.last_stable_offset()
            } else {
                log.high_watermark()
            };
            let result = log.read_bounded(t.fetch_offset, budget, first_with_data, bound);
            let (log, result) = match result {
                Err(LogError::NotLocal { offset, .. }) if leading => {
                    // Below the local log start: from the tier, without holding the log's
                    // lock (producers keep appending meanwhile). Everything in the tier is
                    // below the last stable offset, so read_committed needs no bound here.
                    let ends = ReadResult {
                        records: Bytes::new(),
                        high_watermark: log.high_watermark(),
                        log_start_offset: log.log_start_offset(),
                        last_stable_offset: log.last_stable_offset(),
                    };
                    drop(log);
                    // One tier read per fetch, as in Kafka: the other partitions below their
                    // local log start answer empty, and the consumer asks again.
                    let remote = if tier_read_done {
                        Ok(Bytes::new())
                    } else {
                        tier_read_done = true;
                        tokio::runtime::Handle::current().block_on(broker.remote.read(
                            &partition,
                            offset,
                            budget,
                            first_with_data,
                        ))
                    };
                    let log = partition.log();
                    let result = match remote {
                        Ok(records) => Ok(ReadResult { records, ..ends }),
                        // Retention or DeleteRecords took it from the tier meanwhile.
                        Err(_) if offset < log.log_start_offset() => Err(LogError::OffsetOutOfRange {
                            offset,
                            log_start_offset: log.log_start_offset(),
                            log_end_offset: log.log_end_offset(),
                        }),
                        Err(e) => Err(LogError::StorageCorruption(e.to_string())),
                    };
                    (log, result)
                }
                other => (log, other),
            };
            match result {
                Ok(read) => {
                    if !read.records.is_empty() {
                        first_with_data = false;
                        remaining = remaining.saturating_sub(read.records.len());
                        let served = if leading {
                            &broker.metrics.consumer_fetch_bytes_leader
                        } else {
                            &broker.metrics.consumer_fetch_bytes_follower
                        };
                        served.add(read.records.len() as u64);
                    }
                    let mut data = base
                        .with_high_watermark(read.high_watermark)
                        .with_last_stable_offset(read.last_stable_offset)
                        .with_log_start_offset(read.log_start_offset);
                    if read_committed {
                        // End of the returned range: after its last batch, or the LSO.
                        let mut end = read.last_stable_offset;
                        let mut pos = 0;
                        while let Some(Ok(h)) = read
                            .records
                            .get(pos..)
                            .map(strata_log::RecordBatchHeader::parse)
                        {
                            end = h.last_offset() + 1;
                            pos += h.size_bytes();
                        }
                        let aborted = log
                            .aborted_transactions(t.fetch_offset, end)
                            .into_iter()
                            .map(|(pid, first_offset)| {
                                kafka_protocol::messages::fetch_response::AbortedTransaction::default()
                                    .with_producer_id(kafka_protocol::messages::ProducerId(pid))
                                    .with_first_offset(first_offset)
                            })
                            .collect();
                        data = data.with_aborted_transactions(Some(aborted));
                    }
                    data.with_records(Some(read.records))
                }
                // A follower does not know whether an offset outside its log is outside the
                // leader's too (its retention runs on its own, and it may lag): as Kafka, it
                // answers without offsets, and the client asks the leader. Offsets below its
                // local log start (a former leader of a tiered topic) go to the leader too.
                Err(LogError::OffsetOutOfRange { .. } | LogError::NotLocal { .. }) if !leading => {
                    base.with_error_code(code(ResponseError::OffsetOutOfRange))
                }
                Err(e) => {
                    let error = log_error(broker, &partition, &e);
                    let (hw, lso, start) = match e {
                        LogError::OffsetOutOfRange { .. } => (
                            log.high_watermark(),
                            log.last_stable_offset(),
                            log.log_start_offset(),
                        ),
                        _ => (-1, -1, -1),
                    };
                    base.with_error_code(error)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(start)
                }
            }
        })
        .collect()
}

/// A follower's fetch at the leader (Kafka's `Partition.fetchRecords` for a replica): a
/// follower whose last epoch diverges from the leader's log is told where that epoch ends
/// here (KIP-595's diverging epoch, so it truncates first); otherwise it reads up to the log
/// end and its fetch offset counts as its log end for the ISR and the high watermark.
#[allow(clippy::too_many_arguments)]
fn follower_read(
    broker: &Arc<Broker>,
    partition: &Arc<crate::replica_manager::Partition>,
    log: &mut strata_log::Log,
    t: &Target,
    replica: i32,
    budget: usize,
    base: PartitionData,
) -> PartitionData {
    let base = base
        .with_high_watermark(log.high_watermark())
        .with_last_stable_offset(log.last_stable_offset())
        .with_log_start_offset(log.log_start_offset());
    let last_fetched_epoch = (t.last_fetched_epoch >= 0).then_some(t.last_fetched_epoch);
    if let Some(diverging) =
        strata_partition::diverging_epoch(last_fetched_epoch, t.fetch_offset, |epoch| {
            log.end_offset_for_epoch(epoch)
        })
    {
        return base.with_diverging_epoch(
            EpochEndOffset::default()
                .with_epoch(diverging.leader_epoch)
                .with_end_offset(diverging.end_offset),
        );
    }
    let read = match log.read(t.fetch_offset, budget, true) {
        Ok(read) => read,
        Err(LogError::NotLocal { .. }) => {
            return base.with_error_code(code(ResponseError::OffsetMovedToTieredStorage))
        }
        Err(e) => return base.with_error_code(log_error(broker, partition, &e)),
    };
    let hw_before = log.high_watermark();
    match partition.on_follower_fetch(
        log,
        replica,
        t.fetch_offset,
        t.log_start_offset,
        crate::replica_manager::now_ms(),
    ) {
        Ok(Some(change)) => broker
            .isr
            .propose(partition.clone(), change, partition.leader_epoch()),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = partition.index, replica, error = %e, "refused a follower fetch");
            return base.with_error_code(code(ResponseError::NotLeaderOrFollower));
        }
    }
    if log.high_watermark() != hw_before {
        broker.replicas.notify_appended();
    }
    base.with_high_watermark(log.high_watermark())
        .with_last_stable_offset(log.last_stable_offset())
        .with_records(Some(read.records))
}
