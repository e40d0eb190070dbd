//! A bounded cache of remote reads, shared by every partition of a broker, with read-ahead.
//!
//! What is cached:
//! - whole auxiliary objects of a segment (its offset index, its time index), keyed by
//!   (segment id, extension);
//! - the `.log` object in chunks of `chunk_bytes` aligned to multiples of `chunk_bytes`,
//!   keyed by (segment id, chunk number). A read of any byte range fetches the chunks it
//!   covers; one chunk is answered as a zero-copy slice, several are concatenated.
//!
//! Segment ids are unique per upload (a UUID), so an entry can never be stale: objects are
//! written once and never changed while a manifest names them. Entries of deleted segments
//! are dropped by [`RemoteReadCache::invalidate_segment`] (the partition calls it) or age out.
//!
//! Invariants:
//! - the bytes of cached entries never exceed `capacity_bytes` (least recently used entries
//!   are evicted first; an entry larger than the whole capacity is served but not cached);
//! - a chunk is cached only if the store returned exactly the bytes asked for: a short
//!   object (torn, or smaller than its manifest says) is a [`TierError::Corrupt`] and is not
//!   cached. Chunks are not CRC-checked here, since a batch may span chunks; the reader checks
//!   the CRC of every batch it serves, on every read, cached or not;
//! - one fetch at a time per entry: concurrent readers of a missing entry wait for the same
//!   fetch (a failed fetch is retried by the next waiter);
//! - at most [`READ_AHEAD_TASKS`] read-aheads run at once, cache-wide; when none is free a
//!   read-ahead is skipped, never queued.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_durable::LockExt;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::TierError;

/// Smallest chunk: smaller ones would cost one request per few batches.
const MIN_CHUNK_BYTES: usize = 1 << 10;
/// Largest chunk: one fetch is held in memory whole.
const MAX_CHUNK_BYTES: usize = 1 << 30;
/// Read-aheads running at once, cache-wide.
pub(crate) const READ_AHEAD_TASKS: usize = 4;
/// Chunk fetches one read runs at once (a read spanning many chunks is a large
/// `min_one_batch` batch or a large `max_bytes`).
const CHUNK_FETCHES_PER_READ: usize = 4;

/// Counters of a [`RemoteReadCache`], since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups by reads answered from the cache.
    pub hits: u64,
    /// Lookups by reads that had to fetch (or wait for a fetch already running, such as a
    /// read-ahead). Read-aheads themselves count neither.
    pub misses: u64,
    /// Bytes of the cached entries now (at most the capacity).
    pub bytes_cached: u64,
    /// Cached entries now.
    pub entries: u64,
    /// Bytes fetched from the object store, read-aheads included.
    pub remote_bytes_read: u64,
    /// Requests made to the object store, read-aheads and failed ones included.
    pub remote_requests: u64,
}

/// What an entry caches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// A whole auxiliary object of a segment, by extension (`index`, `timeindex`).
    Aux(Arc<str>, &'static str),
    /// Chunk number `.1` of a segment's `.log` object.
    Chunk(Arc<str>, u64),
}

impl Key {
    fn segment(&self) -> &str {
        match self {
            Key::Aux(id, _) | Key::Chunk(id, _) => id,
        }
    }
}

/// A segment's `.log` object, as the cache needs it to fetch chunks (also from a read-ahead
/// task, hence owned).
#[derive(Clone, Debug)]
pub(crate) struct LogObject {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
    pub(crate) segment_id: Arc<str>,
    /// Size of the object, from the manifest.
    pub(crate) size: u64,
}

/// Least-recently-used map bounded by the total bytes of its values. Recency is a tick
/// taken on every insert and hit; `order` maps ticks to keys, oldest first.
#[derive(Default)]
struct Lru {
    entries: HashMap<Key, (Bytes, u64)>,
    order: BTreeMap<u64, Key>,
    next_tick: u64,
    bytes: usize,
}

impl Lru {
    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn get(&mut self, key: &Key) -> Option<Bytes> {
        let tick = self.tick();
        let (data, at) = self.entries.get_mut(key)?;
        self.order.remove(at);
        *at = tick;
        self.order.insert(tick, key.clone());
        Some(data.clone())
    }

    fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Caches `data`, evicting the least recently used entries until it fits; does nothing
    /// when `data` alone is larger than `capacity`.
    fn insert(&mut self, key: Key, data: Bytes, capacity: usize) {
        if data.len() > capacity {
            return;
        }
        self.remove(&key);
        while self.bytes + data.len() > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((gone, _)) = self.entries.remove(&oldest) {
                self.bytes -= gone.len();
            }
        }
        let tick = self.tick();
        self.bytes += data.len();
        self.order.insert(tick, key.clone());
        self.entries.insert(key, (data, tick));
    }

    fn remove(&mut self, key: &Key) {
        if let Some((data, at)) = self.entries.remove(key) {
            self.order.remove(&at);
            self.bytes -= data.len();
        }
    }

    fn remove_segment(&mut self, segment_id: &str) {
        let gone: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| k.segment() == segment_id)
            .cloned()
            .collect();
        for key in &gone {
            self.remove(key);
        }
    }
}

/// A fetch in progress: every reader of the entry waits on the same cell.
#[derive(Default)]
struct FlightState {
    cell: OnceCell<Bytes>,
    /// Readers holding a [`FlightGuard`] of it; changed only under the `inflight` lock (an
    /// atomic only for interior mutability).
    readers: AtomicUsize,
}

type Flight = Arc<FlightState>;

/// The tier's read cache: one per broker, shared by its partitions through
/// [`crate::RemotePartition::with_cache`].
pub struct RemoteReadCache {
    capacity_bytes: usize,
    chunk_bytes: usize,
    lru: Mutex<Lru>,
    /// Fetches in progress. Lock order: `inflight` before `lru`, never the other way.
    inflight: Mutex<HashMap<Key, Flight>>,
    read_aheads: Arc<Semaphore>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Mirrors of the LRU's size, updated under its lock, so `stats` takes no lock.
    bytes_cached: AtomicU64,
    entries: AtomicU64,
    remote_bytes_read: AtomicU64,
    remote_requests: AtomicU64,
}

impl fmt::Debug for RemoteReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteReadCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RemoteReadCache {
    /// A cache holding at most `capacity_bytes` of data (the cached bytes themselves; the
    /// bookkeeping per entry, some 100 bytes, is not counted), reading `.log` objects in
    /// chunks of `chunk_bytes` (kept within 1 KiB..=1 GiB). A capacity of 0 caches nothing:
    /// reads still work, each fetching what it needs.
    pub fn new(capacity_bytes: usize, chunk_bytes: usize) -> Arc<Self> {
        Arc::new(RemoteReadCache {
            capacity_bytes,
            chunk_bytes: chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
            lru: Mutex::new(Lru::default()),
            inflight: Mutex::new(HashMap::new()),
            read_aheads: Arc::new(Semaphore::new(READ_AHEAD_TASKS)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_cached: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            remote_bytes_read: AtomicU64::new(0),
            remote_requests: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_cached: self.bytes_cached.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            remote_bytes_read: self.remote_bytes_read.load(Ordering::Relaxed),
            remote_requests: self.remote_requests.load(Ordering::Relaxed),
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// The chunk size in use (after clamping).
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Read-aheads running now (for tests waiting for them to settle).
    #[cfg(test)]
    pub(crate) fn read_aheads_running(&self) -> usize {
        READ_AHEAD_TASKS - self.read_aheads.available_permits()
    }

    /// Drops every entry of a segment (after its deletion), freeing the space for live data.
    pub fn invalidate_segment(&self, segment_id: &str) {
        self.with_lru(|lru| lru.remove_segment(segment_id));
    }

    /// Runs `f` on the LRU under its lock and refreshes the size mirrors.
    fn with_lru<T>(&self, f: impl FnOnce(&mut Lru) -> T) -> T {
        let mut lru = self.lru.locked();
        let out = f(&mut lru);
        self.bytes_cached.store(lru.bytes as u64, Ordering::Relaxed);
        self.entries
            .store(lru.entries.len() as u64, Ordering::Relaxed);
        out
    }

    fn inflight(&self) -> MutexGuard<'_, HashMap<Key, Flight>> {
        self.inflight.locked()
    }

    /// The entry `key` from the cache, or from `fetch` (run by at most one caller at a time
    /// per key, its result cached). `count` says whether the lookup counts as a hit or miss.
    async fn get_or_fetch<F, Fut>(
        &self,
        key: Key,
        count: bool,
        fetch: F,
    ) -> Result<Bytes, TierError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, TierError>>,
    {
        let hit = |data: Bytes| {
            if count {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(data)
        };
        if let Some(data) = self.with_lru(|lru| lru.get(&key)) {
            return hit(data);
        }
        let flight = {
            let mut inflight = self.inflight();
            // Checked again under the lock: a fetch that finished since caches its data
            // before leaving `inflight`.
            if let Some(data) = self.with_lru(|lru| lru.get(&key)) {
                return hit(data);
            }
            let state = Arc::clone(inflight.entry(key.clone()).or_default());
            state.readers.fetch_add(1, Ordering::Relaxed);
            FlightGuard {
                cache: self,
                key: &key,
                state,
            }
        };
        if count {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        let data = flight
            .state
            .cell
            .get_or_try_init(|| async {
                self.remote_requests.fetch_add(1, Ordering::Relaxed);
                let data = fetch().await?;
                self.remote_bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                self.with_lru(|lru| lru.insert(key.clone(), data.clone(), self.capacity_bytes));
                Ok::<_, TierError>(data)
            })
            .await?
            .clone();
        Ok(data)
    }

    /// A whole auxiliary object of a segment.
    pub(crate) async fn aux(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        segment_id: &str,
        ext: &'static str,
    ) -> Result<Bytes, TierError> {
        let key = Key::Aux(Arc::from(segment_id), ext);
        self.get_or_fetch(key, true, || async {
            Ok(store.get(path).await?.bytes().await?)
        })
        .await
    }

    /// Bytes `start..end` of a `.log` object (`end` capped at its size), through the chunks
    /// covering them; starts a read-ahead of the chunk after the last one.
    pub(crate) async fn read_range(
        self: &Arc<Self>,
        log: &LogObject,
        start: u64,
        end: u64,
    ) -> Result<Bytes, TierError> {
        let end = end.min(log.size);
        if start >= end {
            return Ok(Bytes::new());
        }
        let chunk = self.chunk_bytes as u64;
        let (first, last) = (start / chunk, (end - 1) / chunk);
        // Started first so it overlaps this read's own fetches.
        self.read_ahead(log, last + 1);
        let chunks: Vec<Bytes> = futures::stream::iter(first..=last)
            .map(|k| self.chunk(log, k, true))
            .buffered(CHUNK_FETCHES_PER_READ)
            .try_collect()
            .await?;
        // Every chunk has its exact length (checked when fetched), so the slices below are
        // within bounds: chunk k spans [k * chunk, min((k + 1) * chunk, size)).
        if let [only] = chunks.as_slice() {
            let base = first * chunk;
            return Ok(only.slice((start - base) as usize..(end - base) as usize));
        }
        let mut out = BytesMut::with_capacity((end - start) as usize);
        for (k, data) in (first..).zip(&chunks) {
            let base = k * chunk;
            let from = start.saturating_sub(base) as usize;
            let to = ((end - base) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        Ok(out.freeze())
    }

    /// Chunk `k` of a `.log` object, exactly `min(chunk_bytes, size - k * chunk_bytes)` bytes.
    async fn chunk(&self, log: &LogObject, k: u64, count: bool) -> Result<Bytes, TierError> {
        let chunk = self.chunk_bytes as u64;
        let from = k * chunk;
        let len = chunk.min(log.size.saturating_sub(from));
        let key = Key::Chunk(Arc::clone(&log.segment_id), k);
        self.get_or_fetch(key, count, || async {
            let data = log.store.get_range(&log.path, from..from + len).await?;
            if data.len() as u64 != len {
                return Err(TierError::Corrupt(format!(
                    "{}: got {} bytes at {from}, expected {len}",
                    log.path,
                    data.len()
                )));
            }
            Ok(data)
        })
        .await
    }

    /// Fetches chunk `k` in the background if it exists, is neither cached nor being
    /// fetched, and a read-ahead slot is free; otherwise does nothing. Also nothing outside a
    /// tokio runtime.
    pub(crate) fn read_ahead(self: &Arc<Self>, log: &LogObject, k: u64) {
        if k.saturating_mul(self.chunk_bytes as u64) >= log.size {
            return;
        }
        let key = Key::Chunk(Arc::clone(&log.segment_id), k);
        if self.with_lru(|lru| lru.contains(&key)) || self.inflight().contains_key(&key) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(permit) = Arc::clone(&self.read_aheads).try_acquire_owned() else {
            return;
        };
        let (cache, log) = (Arc::clone(self), log.clone());
        runtime.spawn(async move {
            let _permit = permit;
            if let Err(e) = cache.chunk(&log, k, false).await {
                // The read that needs the chunk fetches it again and reports the error.
                tracing::debug!("read-ahead of chunk {k} of {}: {e}", log.path);
            }
        });
    }
}

/// A reader's membership in a fetch in progress. Dropping it (when the read finishes, fails
/// or is cancelled) takes the fetch out of `inflight` once it is done, or once no other
/// reader waits on it, so `inflight` never keeps entries nobody will complete.
struct FlightGuard<'a> {
    cache: &'a RemoteReadCache,
    key: &'a Key,
    state: Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = self.cache.inflight();
        let left = self.state.readers.fetch_sub(1, Ordering::Relaxed) - 1;
        let ours = inflight
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.state));
        if ours && (self.state.cell.initialized() || left == 0) {
            inflight.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Key {
        Key::Chunk(Arc::from("s"), n)
    }

    #[test]
    fn lru_evicts_the_least_recently_used_within_capacity() {
        let mut lru = Lru::default();
        for n in 0..3 {
            lru.insert(key(n), Bytes::from(vec![0u8; 10]), 30);
        }
        assert_eq!(lru.bytes, 30);
        // Touch 0 so 1 is the oldest.
        assert!(lru.get(&key(0)).is_some());
        lru.insert(key(3), Bytes::from(vec![0u8; 10]), 30);
        assert!(!lru.contains(&key(1)));
        assert!(lru.contains(&key(0)) && lru.contains(&key(2)) && lru.contains(&key(3)));
        // A large entry evicts as many as it needs.
        lru.insert(key(4), Bytes::from(vec![0u8; 25]), 30);
        assert_eq!(lru.entries.len(), 1);
        assert_eq!(lru.bytes, 25);
        // Larger than the capacity: not cached, nothing evicted.
        lru.insert(key(5), Bytes::from(vec![0u8; 31]), 30);
        assert!(!lru.contains(&key(5)) && lru.contains(&key(4)));
        // Replacing an entry accounts for the old one.
        lru.insert(key(4), Bytes::from(vec![0u8; 5]), 30);
        assert_eq!((lru.bytes, lru.entries.len(), lru.order.len()), (5, 1, 1));
        lru.insert(
            Key::Aux(Arc::from("t"), "index"),
            Bytes::from_static(b"x"),
            30,
        );
        lru.remove_segment("s");
        assert_eq!((lru.bytes, lru.entries.len(), lru.order.len()), (1, 1, 1));
    }

    #[tokio::test]
    async fn one_fetch_per_entry_for_concurrent_readers() {
        let cache = RemoteReadCache::new(1 << 20, 4096);
        let calls = AtomicU64::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(Bytes::from_static(b"data"))
        };
        let reads = (0..8).map(|_| cache.get_or_fetch(key(0), true, fetch));
        for got in futures::future::join_all(reads).await {
            assert_eq!(got.unwrap(), Bytes::from_static(b"data"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits + stats.misses, stats.remote_requests), (8, 1));
        assert!(cache.inflight().is_empty());
        // A failed fetch is not cached and leaves nothing behind; the next read retries.
        let err = cache
            .get_or_fetch(key(1), true, || async {
                Err(TierError::Corrupt("boom".into()))
            })
            .await;
        assert!(matches!(err, Err(TierError::Corrupt(_))));
        assert!(cache.inflight().is_empty());
        assert_eq!(cache.stats().entries, 1);
        let got = cache
            .get_or_fetch(key(1), true, || async { Ok(Bytes::from_static(b"ok")) })
            .await
            .unwrap();
        assert_eq!(got, Bytes::from_static(b"ok"));
        // A read cancelled while fetching (a fetch request timing out) leaves nothing behind.
        let stuck = cache.get_or_fetch(key(2), true, || async {
            std::future::pending::<()>().await;
            Ok(Bytes::new())
        });
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(10), stuck).await;
        assert!(cancelled.is_err());
        assert!(cache.inflight().is_empty());
    }
}
