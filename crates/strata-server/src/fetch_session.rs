//! Incremental fetch sessions (KIP-227): Kafka's `FetchManager` and `FetchSessionCache`, sans-IO.
//!
//! A consumer or follower of many partitions sends them all once (a *full* fetch, epoch 0);
//! the broker keeps what it asked and answered in a session and gives back a session id.
//! From then on the client sends only partitions whose fetch parameters changed (and the ones
//! to forget), with the session's next epoch, and the broker answers only partitions with
//! something new: records, a moved high watermark, last stable offset or log start offset, an
//! error, a preferred read replica or a diverging epoch. An idle consumer of N partitions then
//! costs a few dozen bytes per round trip instead of O(N).
//!
//! What a request means (Kafka's `FetchMetadata`):
//!
//! | session id | epoch | meaning |
//! |---|---|---|
//! | 0 | -1 | sessionless full fetch (also every Fetch below v7) |
//! | 0 | 0 | full fetch; create a session if there is room |
//! | id | 0 | full fetch; close session `id`, create a new one if there is room |
//! | id | -1 | full fetch; close session `id`, create none |
//! | id | n > 0 | incremental fetch in session `id`, which must expect epoch `n` |
//!
//! [`FetchSessionCache::new_context`] decides which of these a request is ([`FetchContext`]);
//! the handler reads the partitions the context names, then hands the results back:
//! [`FetchSessionCache::create_session`] after a full fetch (the answer's session id, 0 when
//! there is no room), [`FetchSessionCache::complete_incremental`] after an incremental one
//! (which partitions go in the answer). Errors are Kafka's: FETCH_SESSION_ID_NOT_FOUND for an
//! unknown id, INVALID_FETCH_SESSION_EPOCH for an epoch other than the expected one (also
//! when two requests race in one session), FETCH_SESSION_TOPIC_ID_ERROR when a session made
//! with topic ids (Fetch v13+) is used by a request with names, or the other way round.
//!
//! Eviction is Kafka's (`FetchSessionCacheShard.tryEvict`): a new session takes the place of
//! the least recently used session if that one has been idle for longer than
//! `min.incremental.fetch.session.eviction.ms`; otherwise of the least valuable *evictable*
//! session, if the new one is worth more. Value orders by privileged (a follower's session)
//! before not, then by the number of partitions; a session becomes evictable once it is older
//! than the eviction time, and for privileged newcomers any consumer session is evictable at
//! once. Kafka splits its cache into 8 shards for lock contention and evicts within a shard;
//! here there is one cache behind one mutex, so eviction looks at all sessions, as Kafka did
//! before KAFKA-9401.
//!
//! Bounds (Kafka bounds only the number of sessions; Strata bounds memory too): at most
//! `max_sessions` sessions, at most `max_session_partitions` partitions in one session and
//! `max_cached_partitions` over all of them (a cached partition costs about 110 bytes). A
//! full fetch that does not fit is answered without a session (session id 0, as when the
//! cache is full); an incremental fetch that would grow its session beyond a bound closes the
//! session and is answered without one, which makes the client start over with a full fetch
//! (Kafka does the same when a session loses its last partition). Sessions idle for longer
//! than `expiry_ms` are dropped ([`FetchSessionCache::expire`]): Kafka keeps them until their
//! slot is wanted, but a client that lost its connection starts a new session anyway.
//!
//! Cost: a full fetch copies the request's partitions into the session (O(N) under the cache
//! lock); an incremental one updates the partitions it names, snapshots the session's
//! partitions for the read (O(N) copy of ~60 bytes each) and compares every answer with the
//! cached one (O(N)). No I/O, no allocation per partition beyond the session map itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use uuid::Uuid;

/// The session id of a request or response without a session.
pub const INVALID_SESSION_ID: i32 = 0;
/// The epoch of a full fetch that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full fetch that wants no session.
pub const FINAL_EPOCH: i32 = -1;
/// The first Fetch version that names topics by id: sessions made by it key partitions by
/// topic id, older ones by name.
pub const TOPIC_ID_MIN_VERSION: i16 = 13;

/// The epoch after `epoch` (Kafka's `FetchMetadata.nextEpoch`): wraps to 1, never back to 0.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// A request's session id and epoch (Kafka's `FetchMetadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchMetadata {
    pub session_id: i32,
    pub epoch: i32,
}

/// How a session names a partition's topic: by id from Fetch v13 on, by name before.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Name(Arc<str>),
    Id(Uuid),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// What a fetcher asks of one partition (Kafka's `FetchRequest.PartitionData`); a session
/// remembers it between the requests that change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRequest {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
    /// The epoch of the last batch a follower has (-1 from consumers).
    pub last_fetched_epoch: i32,
    /// A follower's log start offset (-1 from consumers).
    pub log_start_offset: i64,
    /// A follower's high watermark (Fetch v18, KIP-1166); `i64::MAX` when not known (consumers,
    /// older versions), which never makes the leader answer early.
    pub replica_high_watermark: i64,
}

/// What the answer said of one partition: the parts that decide whether an incremental
/// answer must carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionResult {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records_bytes: usize,
    pub error: bool,
    pub preferred_read_replica: bool,
    pub diverging_epoch: bool,
}

/// Why a request cannot use its session: the answer is this top-level error, session id 0
/// and no partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no fetch session with this id")]
    IdNotFound,
    #[error("the fetch session expects another epoch")]
    InvalidEpoch,
    #[error("the fetch session and the request disagree on topic ids")]
    TopicIdError,
}

impl SessionError {
    pub fn response_error(self) -> ResponseError {
        match self {
            SessionError::IdNotFound => ResponseError::FetchSessionIdNotFound,
            SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
            SessionError::TopicIdError => ResponseError::FetchSessionTopicIdError,
        }
    }
}

/// What one fetch request is, and so what the handler reads and how it answers.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchContext {
    /// Answer the error alone; read nothing.
    Error(SessionError),
    /// Read the request's partitions and answer them all with session id 0.
    Sessionless,
    /// Read the request's partitions, answer them all, and offer a session
    /// ([`FetchSessionCache::create_session`]).
    Full {
        privileged: bool,
        uses_topic_ids: bool,
    },
    /// Read every partition of the session (these, in this order), and answer those that
    /// [`FetchSessionCache::complete_incremental`] selects, with `session_id`.
    Incremental {
        session_id: i32,
        /// The session's epoch after this request: what the client's next request carries.
        next_epoch: i32,
        partitions: Vec<(PartitionKey, PartitionRequest)>,
    },
}

/// Limits of the cache (broker properties, see `config.rs` in strata-meta).
#[derive(Clone, Copy, Debug)]
pub struct FetchSessionConfig {
    /// `max.incremental.fetch.session.cache.slots`: sessions at most (0 = no sessions).
    pub max_sessions: usize,
    /// `min.incremental.fetch.session.eviction.ms`: how long a session is safe from eviction
    /// (after creation, from other sessions; after last use, from anyone).
    pub eviction_ms: i64,
    /// `max.incremental.fetch.session.partitions`: partitions in one session at most.
    pub max_session_partitions: usize,
    /// `max.incremental.fetch.session.cache.partitions`: partitions in all sessions at most.
    pub max_cached_partitions: usize,
    /// `incremental.fetch.session.expiry.ms`: a session unused this long is dropped.
    pub expiry_ms: i64,
}

impl Default for FetchSessionConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            eviction_ms: 120_000,
            max_session_partitions: 100_000,
            max_cached_partitions: 1_000_000,
            expiry_ms: 600_000,
        }
    }
}

/// Numbers for `/metrics` (Kafka's `kafka.server:type=FetchSessionCache` gauges and meter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchSessionStats {
    /// NumIncrementalFetchSessions.
    pub sessions: usize,
    /// NumIncrementalFetchPartitionsCached.
    pub partitions: usize,
    /// Sessions created since start.
    pub created: u64,
    /// IncrementalFetchSessionEvictionsPerSec, as a running total.
    pub evictions: u64,
    /// Sessions dropped for being idle longer than the expiry.
    pub expirations: u64,
}

/// A partition as the session remembers it: the last request and the last answer.
#[derive(Clone, Copy, Debug)]
struct CachedPartition {
    request: PartitionRequest,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

impl CachedPartition {
    fn new(request: PartitionRequest) -> Self {
        Self {
            request,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
        }
    }

    /// Kafka's `CachedPartition.maybeUpdateResponseData`: whether the answer must carry this
    /// partition, remembering what it carries. Kafka leaves the last stable offset out (a
    /// transaction marker moves the high watermark too); Strata also answers when it alone
    /// moved, so that a read_committed consumer never waits on a change it was not told of.
    fn must_respond(&mut self, result: &PartitionResult) -> bool {
        let mut must = result.records_bytes > 0;
        if self.high_watermark != result.high_watermark {
            self.high_watermark = result.high_watermark;
            must = true;
        }
        if self.log_start_offset != result.log_start_offset {
            self.log_start_offset = result.log_start_offset;
            must = true;
        }
        if self.last_stable_offset != result.last_stable_offset {
            self.last_stable_offset = result.last_stable_offset;
            must = true;
        }
        if result.error {
            // Forget the high watermark, so the partition is sent again once the error is gone.
            self.high_watermark = -1;
            must = true;
        }
        must || result.preferred_read_replica || result.diverging_epoch
    }
}

/// Orders sessions by value for eviction: privileged after not, then by size, then by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EvictableKey {
    privileged: bool,
    size: usize,
    id: i32,
}

struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    /// In the order the session is read: a partition that returned records moves to the end,
    /// so that `max_bytes` does not always favour the same partitions.
    partitions: IndexMap<PartitionKey, CachedPartition>,
    creation_ms: i64,
    last_used_ms: i64,
    /// The epoch the next request must carry.
    epoch: i32,
    /// The size the eviction sets and the partition count know this session by.
    cached_size: usize,
}

impl Session {
    fn evictable_key(&self, id: i32) -> EvictableKey {
        EvictableKey {
            privileged: self.privileged,
            size: self.cached_size,
            id,
        }
    }
}

/// The broker's fetch sessions. Not thread-safe: the broker keeps it behind a mutex, held
/// only for the bookkeeping, never across a read of the logs.
///
/// Invariants (checked by [`FetchSessionCache::check_invariants`] in tests): every session is
/// in `last_used` once, under its last use; `evictable_by_all` ⊆ `evictable_by_privileged`
/// hold sessions under their cached size; `cached_partitions` is the sum of the cached sizes;
/// at most `max_sessions` sessions and `max_cached_partitions` partitions.
pub struct FetchSessionCache {
    config: FetchSessionConfig,
    sessions: HashMap<i32, Session>,
    /// (last used, id), least recently used first.
    last_used: BTreeSet<(i64, i32)>,
    /// Sessions a privileged (follower) newcomer may evict: consumers' sessions, and
    /// followers' sessions older than the eviction time.
    evictable_by_privileged: BTreeSet<EvictableKey>,
    /// Sessions any newcomer may evict: those older than the eviction time.
    evictable_by_all: BTreeSet<EvictableKey>,
    cached_partitions: usize,
    created: u64,
    evictions: u64,
    expirations: u64,
    /// State of the session-id generator (splitmix64): ids are random, so that a client
    /// cannot guess another's session, and seeded, so tests are repeatable.
    rng: u64,
}

impl FetchSessionCache {
    pub fn new(config: FetchSessionConfig, seed: u64) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            last_used: BTreeSet::new(),
            evictable_by_privileged: BTreeSet::new(),
            evictable_by_all: BTreeSet::new(),
            cached_partitions: 0,
            created: 0,
            evictions: 0,
            expirations: 0,
            rng: seed,
        }
    }

    pub fn stats(&self) -> FetchSessionStats {
        FetchSessionStats {
            sessions: self.sessions.len(),
            partitions: self.cached_partitions,
            created: self.created,
            evictions: self.evictions,
            expirations: self.expirations,
        }
    }

    /// What the request is (Kafka's `FetchManager.newContext`). `fetch_data` are the
    /// request's partitions, `forgotten` its `forgotten_topics_data`, `privileged` whether a
    /// follower sent it. A full fetch closes the session it names; an incremental one updates
    /// its session with the partitions sent and forgotten, moves it to the next epoch, and
    /// returns the whole session to read.
    pub fn new_context(
        &mut self,
        now_ms: i64,
        version: i16,
        metadata: FetchMetadata,
        privileged: bool,
        fetch_data: &[(PartitionKey, PartitionRequest)],
        forgotten: &[PartitionKey],
    ) -> FetchContext {
        self.expire(now_ms);
        let FetchMetadata { session_id, epoch } = metadata;
        let uses_topic_ids = version >= TOPIC_ID_MIN_VERSION;
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != INVALID_SESSION_ID {
                self.remove(session_id);
            }
            return if epoch == FINAL_EPOCH {
                FetchContext::Sessionless
            } else {
                FetchContext::Full {
                    privileged,
                    uses_topic_ids,
                }
            };
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return FetchContext::Error(SessionError::IdNotFound);
        };
        if session.epoch != epoch {
            return FetchContext::Error(SessionError::InvalidEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return FetchContext::Error(SessionError::TopicIdError);
        }
        for (key, request) in fetch_data {
            session
                .partitions
                .entry(key.clone())
                .and_modify(|cached| cached.request = *request)
                .or_insert_with(|| CachedPartition::new(*request));
        }
        if !forgotten.is_empty() {
            let forgotten: HashSet<&PartitionKey> = forgotten.iter().collect();
            session.partitions.retain(|key, _| !forgotten.contains(key));
        }
        let size = session.partitions.len();
        let cached_after = self.cached_partitions - session.cached_size + size;
        if size == 0
            || size > self.config.max_session_partitions
            || cached_after > self.config.max_cached_partitions
        {
            self.remove(session_id);
            return FetchContext::Sessionless;
        }
        self.touch(session_id, now_ms);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            unreachable!("session {session_id} was just touched");
        };
        session.epoch = next_epoch(session.epoch);
        FetchContext::Incremental {
            session_id,
            next_epoch: session.epoch,
            partitions: session
                .partitions
                .iter()
                .map(|(key, cached)| (key.clone(), cached.request))
                .collect(),
        }
    }

    /// After a full fetch: keeps its partitions as a new session if there is room or a
    /// session may be evicted for it (Kafka's `maybeCreateSession`). Returns the session id
    /// for the answer, [`INVALID_SESSION_ID`] when no session was created.
    pub fn create_session(
        &mut self,
        now_ms: i64,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: impl IntoIterator<Item = (PartitionKey, PartitionRequest, PartitionResult)>,
    ) -> i32 {
        let mut map = IndexMap::new();
        for (key, request, result) in partitions {
            if map.len() >= self.config.max_session_partitions && !map.contains_key(&key) {
                return INVALID_SESSION_ID;
            }
            map.insert(
                key,
                CachedPartition {
                    request,
                    high_watermark: result.high_watermark,
                    last_stable_offset: result.last_stable_offset,
                    log_start_offset: result.log_start_offset,
                },
            );
        }
        let size = map.len();
        if size > self.config.max_cached_partitions || !self.make_room(privileged, size, now_ms) {
            return INVALID_SESSION_ID;
        }
        let id = self.new_session_id();
        self.sessions.insert(
            id,
            Session {
                privileged,
                uses_topic_ids,
                partitions: map,
                creation_ms: now_ms,
                last_used_ms: now_ms,
                epoch: next_epoch(INITIAL_EPOCH),
                cached_size: 0,
            },
        );
        self.last_used.insert((now_ms, id));
        self.touch(id, now_ms);
        self.created += 1;
        id
    }

    /// After an incremental fetch: `results` answer the partitions of the context, in its
    /// order. Returns which of them the answer carries (Kafka's `IncrementalFetchContext
    /// .updateAndGenerateResponseData`), remembering what it carries and moving partitions
    /// that returned records to the end of the session. INVALID_FETCH_SESSION_EPOCH if
    /// another request used the session meanwhile. A session evicted meanwhile answers with
    /// every partition (they are all in the client's session; its next request learns the
    /// session is gone).
    pub fn complete_incremental(
        &mut self,
        session_id: i32,
        next_epoch: i32,
        results: &[PartitionResult],
    ) -> Result<Vec<bool>, SessionError> {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Ok(vec![true; results.len()]);
        };
        if session.epoch != next_epoch {
            return Err(SessionError::InvalidEpoch);
        }
        // The epoch is unchanged since `new_context`, so the session is too: same partitions,
        // same order as the results. (A session evicted and an id drawn again meanwhile would
        // not be: it is another session, whose epoch the request cannot know.)
        if session.partitions.len() != results.len() {
            return Err(SessionError::InvalidEpoch);
        }
        let mut include = Vec::with_capacity(results.len());
        let mut moved = Vec::new();
        for (index, ((_, cached), result)) in session.partitions.iter_mut().zip(results).enumerate()
        {
            include.push(cached.must_respond(result));
            if result.records_bytes > 0 {
                moved.push(index);
            }
        }
        if !moved.is_empty() {
            // Stable: the partitions without records keep their order, then those with.
            let mut with_records = vec![false; session.partitions.len()];
            for index in moved {
                with_records[index] = true;
            }
            let old = std::mem::take(&mut session.partitions);
            let (records, idle): (Vec<_>, Vec<_>) = old
                .into_iter()
                .zip(with_records)
                .partition(|(_, had_records)| *had_records);
            session.partitions = idle.into_iter().chain(records).map(|(kv, _)| kv).collect();
        }
        Ok(include)
    }

    /// Drops sessions unused for longer than the expiry. Returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let mut expired = 0;
        while let Some(&(last_used_ms, id)) = self.last_used.first() {
            if now_ms.saturating_sub(last_used_ms) <= self.config.expiry_ms {
                break;
            }
            self.remove(id);
            expired += 1;
        }
        self.expirations += expired as u64;
        expired
    }

    /// Removes a session; false if there was none.
    pub fn remove(&mut self, id: i32) -> bool {
        let Some(session) = self.sessions.remove(&id) else {
            return false;
        };
        self.last_used.remove(&(session.last_used_ms, id));
        let key = session.evictable_key(id);
        self.evictable_by_all.remove(&key);
        self.evictable_by_privileged.remove(&key);
        self.cached_partitions -= session.cached_size;
        true
    }

    /// Records a use of session `id` at `now_ms` and its current size (Kafka's `touch`).
    fn touch(&mut self, id: i32, now_ms: i64) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        self.last_used.remove(&(session.last_used_ms, id));
        session.last_used_ms = now_ms;
        self.last_used.insert((now_ms, id));
        let old = session.evictable_key(id);
        self.evictable_by_all.remove(&old);
        self.evictable_by_privileged.remove(&old);
        self.cached_partitions -= session.cached_size;
        session.cached_size = session.partitions.len();
        self.cached_partitions += session.cached_size;
        let key = session.evictable_key(id);
        let old_enough = now_ms.saturating_sub(session.creation_ms) > self.config.eviction_ms;
        if !session.privileged || old_enough {
            self.evictable_by_privileged.insert(key);
        }
        if old_enough {
            self.evictable_by_all.insert(key);
        }
    }

    /// Evicts what must go for a new session of `size` partitions to fit, or nothing if it
    /// cannot fit. The victims, in order: sessions idle for longer than the eviction time
    /// (least recently used first), then evictable sessions worth less than the newcomer
    /// (least valuable first). Needing only a slot, this evicts exactly what Kafka's
    /// `tryEvict` does; needing partitions too, it evicts nothing unless enough can go.
    fn make_room(&mut self, privileged: bool, size: usize, now_ms: i64) -> bool {
        let slots_needed = (self.sessions.len() + 1).saturating_sub(self.config.max_sessions);
        let partitions_needed =
            (self.cached_partitions + size).saturating_sub(self.config.max_cached_partitions);
        if slots_needed == 0 && partitions_needed == 0 {
            return true;
        }
        let newcomer = EvictableKey {
            privileged,
            size,
            id: 0,
        };
        let evictable = if privileged {
            &self.evictable_by_privileged
        } else {
            &self.evictable_by_all
        };
        let stale = self
            .last_used
            .iter()
            .take_while(|(last_used_ms, _)| {
                now_ms.saturating_sub(*last_used_ms) > self.config.eviction_ms
            })
            .map(|&(_, id)| id);
        let less_valuable = evictable
            .iter()
            .take_while(|key| newcomer >= **key)
            .map(|key| key.id);
        let mut victims = Vec::new();
        let (mut slots, mut partitions) = (0, 0);
        for id in stale.chain(less_valuable) {
            if slots >= slots_needed && partitions >= partitions_needed {
                break;
            }
            if victims.contains(&id) {
                continue;
            }
            victims.push(id);
            slots += 1;
            partitions += self.sessions.get(&id).map_or(0, |s| s.cached_size);
        }
        if slots < slots_needed || partitions < partitions_needed {
            return false;
        }
        for id in victims {
            self.remove(id);
            self.evictions += 1;
        }
        true
    }

    /// A random positive id no session has.
    fn new_session_id(&mut self) -> i32 {
        loop {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let id = (z >> 33) as i32; // 31 bits: never negative
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Panics if an invariant of the bookkeeping is broken. For tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.sessions.len() <= self.config.max_sessions);
        assert_eq!(self.last_used.len(), self.sessions.len());
        let mut total = 0;
        for (&id, s) in &self.sessions {
            assert!(self.last_used.contains(&(s.last_used_ms, id)));
            assert_eq!(s.cached_size, s.partitions.len(), "session {id} size");
            total += s.cached_size;
            let key = s.evictable_key(id);
            if self.evictable_by_all.contains(&key) {
                assert!(self.evictable_by_privileged.contains(&key));
            }
        }
        assert_eq!(total, self.cached_partitions);
        assert!(self.cached_partitions <= self.config.max_cached_partitions);
        for key in self
            .evictable_by_privileged
            .iter()
            .chain(&self.evictable_by_all)
        {
            assert!(
                self.sessions.contains_key(&key.id),
                "stale evictable key {key:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V12: i16 = 12;
    const V13: i16 = 13;

    fn md(session_id: i32, epoch: i32) -> FetchMetadata {
        FetchMetadata { session_id, epoch }
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicKey::Name(Arc::from(topic)),
            partition,
        }
    }

    fn id_key(topic: u128, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicKey::Id(Uuid::from_u128(topic)),
            partition,
        }
    }

    fn req(fetch_offset: i64) -> PartitionRequest {
        PartitionRequest {
            replica_high_watermark: i64::MAX,
            fetch_offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: 0,
            last_fetched_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn idle(high_watermark: i64) -> PartitionResult {
        PartitionResult {
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: 0,
            records_bytes: 0,
            error: false,
            preferred_read_replica: false,
            diverging_epoch: false,
        }
    }

    fn cache(config: FetchSessionConfig) -> FetchSessionCache {
        FetchSessionCache::new(config, 7)
    }

    fn partitions(n: i32) -> Vec<(PartitionKey, PartitionRequest)> {
        (0..n).map(|p| (key("t", p), req(0))).collect()
    }

    /// A full fetch of `n` partitions of topic `t` (idle, high watermark 0) that asks for a
    /// session; returns its id.
    fn open(cache: &mut FetchSessionCache, now_ms: i64, privileged: bool, n: i32) -> i32 {
        let data = partitions(n);
        let ctx = cache.new_context(now_ms, V12, md(0, INITIAL_EPOCH), privileged, &data, &[]);
        assert_eq!(
            ctx,
            FetchContext::Full {
                privileged,
                uses_topic_ids: false
            }
        );
        let id = cache.create_session(
            now_ms,
            privileged,
            false,
            data.into_iter().map(|(k, r)| (k, r, idle(0))),
        );
        cache.check_invariants();
        id
    }

    /// An incremental fetch that changes nothing, answered with `results`; returns which
    /// partitions the answer carries.
    fn incremental(
        cache: &mut FetchSessionCache,
        now_ms: i64,
        id: i32,
        epoch: i32,
        results: impl Fn(usize) -> PartitionResult,
    ) -> Vec<bool> {
        let FetchContext::Incremental {
            session_id,
            next_epoch,
            partitions,
        } = cache.new_context(now_ms, V12, md(id, epoch), false, &[], &[])
        else {
            panic!("not incremental");
        };
        assert_eq!(session_id, id);
        assert_eq!(next_epoch, super::next_epoch(epoch));
        let results: Vec<_> = (0..partitions.len()).map(results).collect();
        let include = cache
            .complete_incremental(id, next_epoch, &results)
            .unwrap();
        cache.check_invariants();
        include
    }

    #[test]
    fn epochs_advance_and_wrap_to_one() {
        assert_eq!(next_epoch(INITIAL_EPOCH), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
    }

    #[test]
    fn full_fetch_creates_a_session_that_expects_epoch_one() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 3);
        assert_ne!(id, INVALID_SESSION_ID);
        assert!(id > 0);
        assert_eq!(
            c.stats(),
            FetchSessionStats {
                sessions: 1,
                partitions: 3,
                created: 1,
                evictions: 0,
                expirations: 0
            }
        );
        assert_eq!(
            c.new_context(1, V12, md(id, 2), false, &[], &[]),
            FetchContext::Error(SessionError::InvalidEpoch)
        );
        let include = incremental(&mut c, 1, id, 1, |_| idle(0));
        assert_eq!(include, vec![false; 3], "nothing changed: an empty answer");
        assert!(incremental(&mut c, 2, id, 2, |_| idle(0))
            .iter()
            .all(|i| !i));
    }

    #[test]
    fn sessionless_and_closing_full_fetches() {
        let mut c = cache(FetchSessionConfig::default());
        assert_eq!(
            c.new_context(0, V12, md(0, FINAL_EPOCH), false, &partitions(2), &[]),
            FetchContext::Sessionless
        );
        assert_eq!(c.stats().sessions, 0);
        // A full fetch naming a session closes it, and with epoch -1 asks for none.
        let id = open(&mut c, 0, false, 2);
        assert_eq!(
            c.new_context(1, V12, md(id, FINAL_EPOCH), false, &partitions(2), &[]),
            FetchContext::Sessionless
        );
        assert_eq!(c.stats().sessions, 0);
        assert_eq!(
            c.new_context(2, V12, md(id, 1), false, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound)
        );
        // With epoch 0 it asks for a new one.
        let id = open(&mut c, 3, false, 2);
        let ctx = c.new_context(4, V12, md(id, INITIAL_EPOCH), false, &partitions(2), &[]);
        assert!(matches!(ctx, FetchContext::Full { .. }));
        assert_eq!(c.stats().sessions, 0, "the old session is closed");
        c.check_invariants();
    }

    #[test]
    fn session_errors() {
        let mut c = cache(FetchSessionConfig::default());
        assert_eq!(
            c.new_context(0, V12, md(12345, 1), false, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound)
        );
        let id = open(&mut c, 0, false, 1);
        assert_eq!(
            c.new_context(0, V12, md(id, 5), false, &[], &[]),
            FetchContext::Error(SessionError::InvalidEpoch)
        );
        // A session made with names cannot be used with topic ids, nor the other way round.
        assert_eq!(
            c.new_context(0, V13, md(id, 1), false, &[], &[]),
            FetchContext::Error(SessionError::TopicIdError)
        );
        let data = vec![(id_key(9, 0), req(0))];
        assert_eq!(
            c.new_context(0, V13, md(0, INITIAL_EPOCH), false, &data, &[]),
            FetchContext::Full {
                privileged: false,
                uses_topic_ids: true
            }
        );
        let with_ids = c.create_session(0, false, true, [(id_key(9, 0), req(0), idle(0))]);
        assert_eq!(
            c.new_context(0, V12, md(with_ids, 1), false, &[], &[]),
            FetchContext::Error(SessionError::TopicIdError)
        );
        // Errors change nothing: the right request still works.
        assert!(matches!(
            c.new_context(0, V13, md(with_ids, 1), false, &[], &[]),
            FetchContext::Incremental { .. }
        ));
        assert_eq!(
            SessionError::IdNotFound.response_error().code(),
            70,
            "FETCH_SESSION_ID_NOT_FOUND"
        );
        assert_eq!(SessionError::InvalidEpoch.response_error().code(), 71);
        assert_eq!(SessionError::TopicIdError.response_error().code(), 106);
        c.check_invariants();
    }

    #[test]
    fn incremental_fetch_adds_updates_and_forgets() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 3);
        let sent = vec![(key("t", 1), req(50)), (key("u", 0), req(7))];
        let forgotten = vec![key("t", 0), key("nope", 3)];
        let FetchContext::Incremental {
            next_epoch,
            partitions,
            ..
        } = c.new_context(1, V12, md(id, 1), false, &sent, &forgotten)
        else {
            panic!("not incremental");
        };
        assert_eq!(next_epoch, 2);
        assert_eq!(
            partitions,
            vec![
                (key("t", 1), req(50)),
                (key("t", 2), req(0)),
                (key("u", 0), req(7))
            ],
            "t-0 forgotten, t-1 updated in place, u-0 added at the end"
        );
        assert_eq!(c.stats().partitions, 3);
        // The new partition has never been answered: it must be, the others are unchanged.
        let include = c
            .complete_incremental(id, next_epoch, &[idle(0), idle(0), idle(0)])
            .unwrap();
        assert_eq!(include, vec![false, false, true]);
        c.check_invariants();
    }

    #[test]
    fn forgetting_every_partition_closes_the_session() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 2);
        let ctx = c.new_context(1, V12, md(id, 1), false, &[], &[key("t", 0), key("t", 1)]);
        assert_eq!(ctx, FetchContext::Sessionless);
        assert_eq!(c.stats().sessions, 0);
        assert_eq!(c.stats().partitions, 0);
        c.check_invariants();
    }

    #[test]
    fn an_answer_carries_exactly_the_partitions_that_changed() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 7);
        let changed = |i: usize| {
            let mut r = idle(0);
            match i {
                0 => r.records_bytes = 100, // new records (the high watermark moved too)
                1 => r.high_watermark = 5,
                2 => r.log_start_offset = 3,
                3 => r.last_stable_offset = -7,
                4 => r.error = true,
                5 => r.preferred_read_replica = true,
                6 => r.diverging_epoch = true,
                _ => unreachable!(),
            }
            r
        };
        assert_eq!(incremental(&mut c, 1, id, 1, changed), vec![true; 7]);
        // Partition 0 returned records: it moved to the end of the session.
        let FetchContext::Incremental {
            partitions,
            next_epoch,
            ..
        } = c.new_context(2, V12, md(id, 2), false, &[], &[])
        else {
            panic!("not incremental");
        };
        let order: Vec<i32> = partitions.iter().map(|(k, _)| k.partition).collect();
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6, 0]);
        // The same answers again: only what is news each time is carried. Partition 4's error
        // reset its cached high watermark, so once the error is gone it is sent again.
        let again = |p: i32| {
            let mut r = idle(0);
            match p {
                1 => r.high_watermark = 5,
                2 => r.log_start_offset = 3,
                3 => r.last_stable_offset = -7,
                _ => {}
            }
            r
        };
        let results: Vec<_> = order.iter().map(|&p| again(p)).collect();
        let include = c.complete_incremental(id, next_epoch, &results).unwrap();
        let sent: Vec<i32> = order
            .iter()
            .zip(&include)
            .filter(|(_, i)| **i)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(sent, vec![4], "only the partition whose error went away");
        c.check_invariants();
    }

    #[test]
    fn partitions_with_records_rotate_to_the_end_in_order() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 5);
        let with_records = |i: usize| {
            let mut r = idle(0);
            if i == 1 || i == 3 {
                r.records_bytes = 10;
            }
            r
        };
        incremental(&mut c, 1, id, 1, with_records);
        let FetchContext::Incremental { partitions, .. } =
            c.new_context(2, V12, md(id, 2), false, &[], &[])
        else {
            panic!("not incremental");
        };
        let order: Vec<i32> = partitions.iter().map(|(k, _)| k.partition).collect();
        assert_eq!(order, vec![0, 2, 4, 1, 3]);
    }

    #[test]
    fn racing_requests_in_one_session_get_invalid_epoch() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 2);
        let FetchContext::Incremental { next_epoch, .. } =
            c.new_context(1, V12, md(id, 1), false, &[], &[])
        else {
            panic!("not incremental");
        };
        // A second request with the same epoch is refused...
        assert_eq!(
            c.new_context(1, V12, md(id, 1), false, &[], &[]),
            FetchContext::Error(SessionError::InvalidEpoch)
        );
        // ...and one with the next epoch wins: the first request's answer is then refused.
        let FetchContext::Incremental {
            next_epoch: later, ..
        } = c.new_context(1, V12, md(id, next_epoch), false, &[], &[])
        else {
            panic!("not incremental");
        };
        assert_eq!(
            c.complete_incremental(id, next_epoch, &[idle(0), idle(0)]),
            Err(SessionError::InvalidEpoch)
        );
        assert!(c
            .complete_incremental(id, later, &[idle(0), idle(0)])
            .is_ok());
    }

    #[test]
    fn a_session_evicted_during_its_fetch_answers_everything() {
        let mut c = cache(FetchSessionConfig::default());
        let id = open(&mut c, 0, false, 3);
        let FetchContext::Incremental { next_epoch, .. } =
            c.new_context(1, V12, md(id, 1), false, &[], &[])
        else {
            panic!("not incremental");
        };
        assert!(c.remove(id));
        assert_eq!(
            c.complete_incremental(id, next_epoch, &[idle(0); 3]),
            Ok(vec![true; 3])
        );
        assert_eq!(
            c.new_context(2, V12, md(id, next_epoch), false, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound)
        );
    }

    #[test]
    fn a_full_cache_answers_without_a_session_until_an_entry_may_go() {
        let config = FetchSessionConfig {
            max_sessions: 2,
            eviction_ms: 1000,
            ..FetchSessionConfig::default()
        };
        let mut c = cache(config);
        let a = open(&mut c, 0, false, 2);
        let b = open(&mut c, 0, false, 3);
        assert_eq!(c.stats().sessions, 2);
        // Young sessions are safe from consumers, even from a bigger one.
        assert_eq!(open(&mut c, 10, false, 10), INVALID_SESSION_ID);
        // Still in use after the eviction time: now evictable, but only by a bigger session.
        incremental(&mut c, 1500, a, 1, |_| idle(0));
        incremental(&mut c, 1500, b, 1, |_| idle(0));
        assert_eq!(
            open(&mut c, 1600, false, 2),
            INVALID_SESSION_ID,
            "not bigger than a"
        );
        let d = open(&mut c, 1600, false, 3);
        assert_ne!(d, INVALID_SESSION_ID, "bigger than a (2)");
        assert_eq!(
            c.new_context(1601, V12, md(a, 2), false, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound),
            "the smallest session went"
        );
        assert_eq!(c.stats().evictions, 1);
        assert!(matches!(
            c.new_context(1601, V12, md(b, 2), false, &[], &[]),
            FetchContext::Incremental { .. }
        ));
        c.check_invariants();
    }

    #[test]
    fn followers_evict_consumers_at_once_but_not_the_other_way() {
        let config = FetchSessionConfig {
            max_sessions: 1,
            eviction_ms: 1000,
            ..FetchSessionConfig::default()
        };
        let mut c = cache(config);
        let consumer = open(&mut c, 0, false, 50);
        let follower = open(&mut c, 1, true, 1);
        assert_ne!(
            follower, INVALID_SESSION_ID,
            "a follower evicts a young consumer session"
        );
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(
            c.new_context(2, V12, md(consumer, 1), false, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound)
        );
        // A consumer never evicts a follower's session that is in use, however big it is.
        incremental(&mut c, 5000, follower, 1, |_| idle(0));
        assert_eq!(open(&mut c, 5001, false, 1000), INVALID_SESSION_ID);
        // Another follower may, once the session is old and the newcomer bigger.
        assert_eq!(
            open(&mut c, 5001, true, 1),
            INVALID_SESSION_ID,
            "not bigger"
        );
        assert_ne!(open(&mut c, 5001, true, 2), INVALID_SESSION_ID);
        c.check_invariants();
    }

    #[test]
    fn a_stale_session_goes_for_anyone() {
        let config = FetchSessionConfig {
            max_sessions: 1,
            eviction_ms: 1000,
            ..FetchSessionConfig::default()
        };
        let mut c = cache(config);
        let follower = open(&mut c, 0, true, 100);
        assert_eq!(
            open(&mut c, 1000, false, 1),
            INVALID_SESSION_ID,
            "not idle long enough"
        );
        let consumer = open(&mut c, 1001, false, 1);
        assert_ne!(consumer, INVALID_SESSION_ID, "idle > eviction time: stale");
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(
            c.new_context(1002, V12, md(follower, 1), true, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound)
        );
    }

    #[test]
    fn no_slots_no_sessions() {
        let mut c = cache(FetchSessionConfig {
            max_sessions: 0,
            ..FetchSessionConfig::default()
        });
        assert_eq!(open(&mut c, 0, true, 1), INVALID_SESSION_ID);
        assert_eq!(c.stats(), FetchSessionStats::default());
    }

    #[test]
    fn a_session_is_bounded_in_partitions() {
        let mut c = cache(FetchSessionConfig {
            max_session_partitions: 4,
            ..FetchSessionConfig::default()
        });
        assert_eq!(open(&mut c, 0, false, 5), INVALID_SESSION_ID);
        let id = open(&mut c, 0, false, 4);
        assert_ne!(id, INVALID_SESSION_ID);
        // Growing past the bound closes the session: the request is answered sessionless.
        let ctx = c.new_context(1, V12, md(id, 1), false, &[(key("u", 0), req(0))], &[]);
        assert_eq!(ctx, FetchContext::Sessionless);
        assert_eq!((c.stats().sessions, c.stats().partitions), (0, 0));
        // Forgetting one while adding one stays within it.
        let id = open(&mut c, 2, false, 4);
        let ctx = c.new_context(
            3,
            V12,
            md(id, 1),
            false,
            &[(key("u", 0), req(0))],
            &[key("t", 0)],
        );
        assert!(matches!(ctx, FetchContext::Incremental { .. }));
        c.check_invariants();
    }

    #[test]
    fn the_cache_is_bounded_in_partitions() {
        let config = FetchSessionConfig {
            max_sessions: 10,
            eviction_ms: 1000,
            max_session_partitions: 100,
            max_cached_partitions: 10,
            ..FetchSessionConfig::default()
        };
        let mut c = cache(config);
        let a = open(&mut c, 0, false, 4);
        let b = open(&mut c, 0, false, 6);
        assert_eq!(
            open(&mut c, 0, false, 11),
            INVALID_SESSION_ID,
            "larger than the cache"
        );
        assert_eq!(
            open(&mut c, 0, false, 3),
            INVALID_SESSION_ID,
            "young sessions stay"
        );
        incremental(&mut c, 2000, a, 1, |_| idle(0));
        incremental(&mut c, 2000, b, 1, |_| idle(0));
        // Old now. A session of 5 may evict a (4 < 5) but not b (6), and a alone does not
        // make room for 5: nothing is evicted for a session that still could not fit.
        assert_eq!(open(&mut c, 2001, false, 5), INVALID_SESSION_ID);
        assert_eq!(c.stats().evictions, 0);
        // A session of 7 may evict both, and needs both.
        let d = open(&mut c, 2001, false, 7);
        assert_ne!(d, INVALID_SESSION_ID);
        assert_eq!(c.stats().evictions, 2);
        assert_eq!(c.stats().partitions, 7);
        // An incremental fetch that would push the cache past its bound closes its session.
        let e = open(&mut c, 2002, false, 3);
        assert_ne!(e, INVALID_SESSION_ID);
        let ctx = c.new_context(2003, V12, md(e, 1), false, &[(key("u", 0), req(0))], &[]);
        assert_eq!(ctx, FetchContext::Sessionless);
        c.check_invariants();
    }

    #[test]
    fn idle_sessions_expire() {
        let mut c = cache(FetchSessionConfig {
            expiry_ms: 10_000,
            ..FetchSessionConfig::default()
        });
        let a = open(&mut c, 0, false, 2);
        let b = open(&mut c, 5_000, false, 2);
        assert_eq!(c.expire(10_000), 0);
        assert_eq!(c.expire(10_001), 1);
        assert_eq!(c.stats().sessions, 1);
        assert_eq!(
            c.new_context(10_002, V12, md(a, 1), false, &[], &[]),
            FetchContext::Error(SessionError::IdNotFound)
        );
        // Each use restarts the clock; new_context expires on its own.
        incremental(&mut c, 14_000, b, 1, |_| idle(0));
        assert_eq!(
            c.new_context(24_001, V12, md(0, FINAL_EPOCH), false, &[], &[]),
            FetchContext::Sessionless
        );
        assert_eq!(c.stats().sessions, 0);
        assert_eq!(c.stats().expirations, 2);
        c.check_invariants();
    }

    #[test]
    fn names_and_ids_are_different_keys() {
        let mut c = cache(FetchSessionConfig::default());
        let data = vec![(id_key(1, 0), req(0)), (id_key(2, 0), req(0))];
        c.new_context(0, V13, md(0, INITIAL_EPOCH), false, &data, &[]);
        let id = c.create_session(
            0,
            false,
            true,
            data.into_iter().map(|(k, r)| (k, r, idle(0))),
        );
        let FetchContext::Incremental { partitions, .. } =
            c.new_context(1, V13, md(id, 1), false, &[], &[id_key(1, 0)])
        else {
            panic!("not incremental");
        };
        assert_eq!(partitions, vec![(id_key(2, 0), req(0))]);
        // A recreated topic has a new id: it is another partition to the session.
        let FetchContext::Incremental { partitions, .. } =
            c.new_context(1, V13, md(id, 2), false, &[(id_key(3, 0), req(0))], &[])
        else {
            panic!("not incremental");
        };
        assert_eq!(partitions.len(), 2);
    }

    #[test]
    fn session_ids_are_positive_and_unique() {
        let mut c = cache(FetchSessionConfig {
            max_sessions: 5000,
            ..FetchSessionConfig::default()
        });
        let mut seen = HashSet::new();
        for _ in 0..5000 {
            let id = c.create_session(0, false, false, std::iter::empty());
            assert!(id > 0);
            assert!(seen.insert(id));
        }
        assert_eq!(open(&mut c, 0, false, 1), INVALID_SESSION_ID, "full");
        // Another seed, other ids.
        let mut other = FetchSessionCache::new(FetchSessionConfig::default(), 8);
        let first = other.create_session(0, false, false, std::iter::empty());
        assert!(first > 0);
        c.check_invariants();
    }

    /// Random sequences of every operation keep the bookkeeping consistent and the bounds.
    #[test]
    fn random_operations_keep_the_invariants() {
        let config = FetchSessionConfig {
            max_sessions: 8,
            eviction_ms: 50,
            max_session_partitions: 20,
            max_cached_partitions: 60,
            expiry_ms: 400,
        };
        for seed in 0..20u64 {
            let mut c = FetchSessionCache::new(config, seed);
            let mut rng = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut next = |n: u64| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) % n
            };
            let mut live: Vec<(i32, i32)> = Vec::new(); // (id, expected epoch)
            let mut now = 0;
            for _ in 0..2000 {
                now += next(20) as i64;
                match next(4) {
                    0 => {
                        let n = next(25) as i32;
                        let data = partitions(n);
                        let privileged = next(2) == 0;
                        let ctx =
                            c.new_context(now, V12, md(0, INITIAL_EPOCH), privileged, &data, &[]);
                        assert!(matches!(ctx, FetchContext::Full { .. }));
                        let id = c.create_session(
                            now,
                            privileged,
                            false,
                            data.into_iter().map(|(k, r)| (k, r, idle(0))),
                        );
                        if id != INVALID_SESSION_ID {
                            live.push((id, 1));
                        }
                    }
                    1 | 2 if !live.is_empty() => {
                        let i = next(live.len() as u64) as usize;
                        let (id, epoch) = live[i];
                        let add: Vec<_> = (0..next(4))
                            .map(|_| (key("t", next(30) as i32), req(next(100) as i64)))
                            .collect();
                        let forget: Vec<_> =
                            (0..next(4)).map(|_| key("t", next(30) as i32)).collect();
                        match c.new_context(now, V12, md(id, epoch), false, &add, &forget) {
                            FetchContext::Incremental {
                                next_epoch,
                                partitions,
                                ..
                            } => {
                                let results: Vec<_> = partitions
                                    .iter()
                                    .map(|_| {
                                        let mut r = idle(next(3) as i64);
                                        r.records_bytes = next(2) as usize;
                                        r
                                    })
                                    .collect();
                                let include =
                                    c.complete_incremental(id, next_epoch, &results).unwrap();
                                assert_eq!(include.len(), partitions.len());
                                live[i].1 = next_epoch;
                            }
                            FetchContext::Error(SessionError::IdNotFound)
                            | FetchContext::Sessionless => {
                                live.swap_remove(i);
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    _ => {
                        c.expire(now);
                    }
                }
                c.check_invariants();
            }
        }
    }
}
