//! Upload, read back, corruption, deletion and orphan cleanup, against the in-memory store and
//! a real local folder.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::{ObjectStoreExt, PutPayload};
use strata_log::{RecordBatchHeader, TimestampAndOffset};

use crate::*;

/// Writes a segment of `batches` batches of `per_batch` records (offsets from `base`, 200-byte
/// values, timestamps 1000 + offset) with an offset index entry per batch; returns the upload
/// and the file's bytes.
fn write_segment(
    dir: &FsPath,
    base: i64,
    batches: i64,
    per_batch: i64,
) -> (SegmentUpload, Vec<u8>) {
    write_segment_with(dir, base, batches, per_batch, 200, |offset| 1_000 + offset)
}

/// [`write_segment`] with `value_bytes`-byte values and record timestamps `ts(offset)`.
fn write_segment_with(
    dir: &FsPath,
    base: i64,
    batches: i64,
    per_batch: i64,
    value_bytes: usize,
    ts: impl Fn(i64) -> i64,
) -> (SegmentUpload, Vec<u8>) {
    write_segment_compressed(
        dir,
        base,
        batches,
        per_batch,
        value_bytes,
        ts,
        Compression::None,
    )
}

/// [`write_segment_with`] with batches compressed by `compression`.
fn write_segment_compressed(
    dir: &FsPath,
    base: i64,
    batches: i64,
    per_batch: i64,
    value_bytes: usize,
    ts: impl Fn(i64) -> i64,
    compression: Compression,
) -> (SegmentUpload, Vec<u8>) {
    write_segment_in_epochs(
        dir,
        base,
        batches,
        per_batch,
        value_bytes,
        ts,
        compression,
        &[(0, base)],
    )
}

/// [`write_segment_compressed`] with each batch appended in the leader epoch `epochs` (as
/// `(epoch, start offset)`, the segment's leader-epoch entries) gives its base offset.
#[allow(clippy::too_many_arguments)]
fn write_segment_in_epochs(
    dir: &FsPath,
    base: i64,
    batches: i64,
    per_batch: i64,
    value_bytes: usize,
    ts: impl Fn(i64) -> i64,
    compression: Compression,
    epochs: &[(i32, i64)],
) -> (SegmentUpload, Vec<u8>) {
    let epoch_at = |offset: i64| {
        epochs
            .iter()
            .take_while(|(_, start)| *start <= offset)
            .last()
            .map_or(-1, |(epoch, _)| *epoch)
    };
    let mut log = Vec::new();
    let mut index = Vec::new();
    let (mut max_ts, mut max_ts_offset) = (-1, -1);
    for b in 0..batches {
        let first = base + b * per_batch;
        let records: Vec<Record> = (0..per_batch)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: epoch_at(first),
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: first + i,
                // The encoder batches records whose offset - sequence is the same.
                sequence: (first + i) as i32,
                timestamp: ts(first + i),
                key: None,
                value: Some(Bytes::from(vec![(first + i) as u8; value_bytes])),
                headers: IndexMap::new(),
            })
            .collect();
        let batch_max = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
        if batch_max > max_ts {
            (max_ts, max_ts_offset) = (batch_max, first);
        }
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        // Like strata-log's: (last offset of the batch, its position).
        index.extend_from_slice(&((first + per_batch - 1 - base) as u32).to_be_bytes());
        index.extend_from_slice(&(log.len() as u32).to_be_bytes());
        log.extend_from_slice(&buf);
    }
    let log_path = dir.join(format!("{base:020}.log"));
    let index_path = dir.join(format!("{base:020}.index"));
    std::fs::write(&log_path, &log).unwrap();
    std::fs::write(&index_path, &index).unwrap();
    let upload = SegmentUpload {
        base_offset: base,
        end_offset: base + batches * per_batch - 1,
        max_timestamp_ms: max_ts,
        max_timestamp_offset: max_ts_offset,
        compacted: false,
        leader_epochs: epochs.to_vec(),
        log: log_path,
        aux: vec![("index".into(), AuxData::File(index_path))],
    };
    (upload, log)
}

/// Kafka's time index of `log` as strata-log writes it: every `every` batches an entry
/// (max timestamp so far, base offset of the first batch holding it), relative to `base`.
fn time_index(log: &[u8], base: i64, every: usize) -> Bytes {
    let mut out = Vec::new();
    let (mut max_ts, mut max_ts_offset) = (-1i64, -1i64);
    let mut last_ts = i64::MIN;
    for (i, h) in headers(log).into_iter().enumerate() {
        if h.max_timestamp > max_ts {
            (max_ts, max_ts_offset) = (h.max_timestamp, h.base_offset);
        }
        if i % every == every - 1 && max_ts > last_ts {
            out.extend_from_slice(&max_ts.to_be_bytes());
            out.extend_from_slice(&((max_ts_offset - base) as i32).to_be_bytes());
            last_ts = max_ts;
        }
    }
    Bytes::from(out)
}

/// The headers of the batches in `log`, with their positions.
fn headers(mut log: &[u8]) -> Vec<RecordBatchHeader> {
    let mut out = Vec::new();
    while !log.is_empty() {
        let h = RecordBatchHeader::parse(log).unwrap();
        log = &log[h.size_bytes()..];
        out.push(h);
    }
    out
}

/// Base offsets of the batches in `bytes`, checking they are whole.
fn batch_offsets(mut bytes: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = RecordBatchHeader::parse(bytes).unwrap();
        strata_log::check_crc(&bytes[..h.size_bytes()], &h).unwrap();
        out.push(h.base_offset);
        bytes = &bytes[h.size_bytes()..];
    }
    out
}

async fn round_trip(store: TierStore, cache: Option<Arc<RemoteReadCache>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut part = RemotePartition::new(&store, "orders", "AAAAAAAAAAAAAAAAAAAAAA", 3);
    if let Some(cache) = cache {
        part = part.with_cache(cache);
    }
    let mut manifest = part.load_manifest().await.unwrap();
    assert_eq!(manifest, RemoteManifest::new());

    // Two segments of 50 batches x 10 records; batches are about 2.3 KB.
    let (first, first_bytes) = write_segment(dir.path(), 0, 50, 10);
    let (second, _) = write_segment(dir.path(), 500, 50, 10);
    let seg = part
        .upload_segment(&mut manifest, first.clone())
        .await
        .unwrap();
    assert_eq!(seg.size_bytes, first_bytes.len() as u64);
    assert_eq!(seg.crc32c, crc32c::crc32c(&first_bytes));
    part.upload_segment(&mut manifest, second).await.unwrap();
    assert_eq!(manifest.next_offset(), Some(1000));
    // Re-uploading the same offsets is refused, and the manifest stays as it was.
    assert!(matches!(
        part.upload_segment(&mut manifest, first).await,
        Err(TierError::InvalidUpload(_))
    ));
    assert_eq!(part.load_manifest().await.unwrap(), manifest);

    // Reads start at the batch holding the offset and return whole, CRC-checked batches.
    let got = part.read(&manifest, 0, 10_000, false).await.unwrap();
    let offsets = batch_offsets(&got);
    assert_eq!(offsets[0], 0);
    assert!(got.len() <= 10_000 && offsets.len() >= 3, "{}", got.len());
    let got = part.read(&manifest, 437, 5_000, false).await.unwrap();
    assert_eq!(batch_offsets(&got)[0], 430);
    let got = part.read(&manifest, 733, 1 << 20, false).await.unwrap();
    assert_eq!(
        batch_offsets(&got),
        (730..1000).step_by(10).collect::<Vec<_>>()
    );
    // A budget smaller than one batch: nothing, or exactly one batch when asked for one.
    assert!(part
        .read(&manifest, 100, 100, false)
        .await
        .unwrap()
        .is_empty());
    let one = part.read(&manifest, 100, 100, true).await.unwrap();
    assert_eq!(batch_offsets(&one), vec![100]);
    // Past the tier's end: nothing.
    assert!(part
        .read(&manifest, 1000, 1 << 20, true)
        .await
        .unwrap()
        .is_empty());

    // A manifest reloaded by a restarted broker reads the same.
    let reloaded = part.load_manifest().await.unwrap();
    assert_eq!(
        part.read(&reloaded, 733, 1 << 20, false).await.unwrap(),
        got
    );

    // Deleting below an offset inside the second segment drops only the first.
    assert_eq!(part.delete_below(&mut manifest, 600).await.unwrap(), 1);
    assert_eq!(manifest.segments.len(), 1);
    assert_eq!(manifest.log_start_offset, 600);
    assert_eq!(part.load_manifest().await.unwrap(), manifest);
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 3_000, false).await.unwrap())[0],
        500,
        "offsets below the tier read from its first segment"
    );

    part.delete_all().await.unwrap();
    assert_eq!(part.load_manifest().await.unwrap(), RemoteManifest::new());
    part.delete_all().await.unwrap();
}

#[tokio::test]
async fn round_trip_in_memory() {
    round_trip(TierStore::open("memory://", &[]).unwrap(), None).await;
}

#[tokio::test]
async fn round_trip_in_memory_through_a_cache() {
    // Chunks smaller than a batch, and a cache smaller than a segment.
    for (capacity, chunk) in [(1 << 20, 4096), (40_000, 1024), (0, 8192)] {
        let cache = RemoteReadCache::new(capacity, chunk);
        round_trip(
            TierStore::open("memory://", &[]).unwrap(),
            Some(Arc::clone(&cache)),
        )
        .await;
        assert!(cache.stats().bytes_cached <= capacity as u64);
    }
}

#[tokio::test]
async fn round_trip_in_a_local_folder() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/tier", root.path().display());
    round_trip(TierStore::open(&url, &[]).unwrap(), None).await;
    // Everything was deleted: no files are left behind.
    let left: Vec<_> = walk(&root.path().join("tier"));
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &FsPath) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn a_corrupted_object_is_an_error_not_data() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 0);
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, mut bytes) = write_segment(dir.path(), 0, 5, 10);
    let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
    // Flip one byte of a record value in the second batch.
    let second = RecordBatchHeader::parse(&bytes).unwrap().size_bytes();
    bytes[second + 100] ^= 0xFF;
    replace_log(&store, &None, &seg, bytes).await;
    // The first batch is still fine on its own; a read that covers the second fails.
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 100, true).await.unwrap()),
        vec![0]
    );
    let err = part.read(&manifest, 0, 1 << 20, false).await.unwrap_err();
    assert!(matches!(err, TierError::Corrupt(_)), "{err}");
    // A manifest that is not JSON is an error too, not an empty tier.
    store
        .store
        .put(
            &store.path(&["t-id", "0", "manifest.json"]),
            PutPayload::from_static(b"{"),
        )
        .await
        .unwrap();
    assert!(matches!(
        part.load_manifest().await,
        Err(TierError::Corrupt(_))
    ));
}

#[tokio::test]
async fn orphans_of_an_interrupted_upload_are_cleaned() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 1);
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, _) = write_segment(dir.path(), 0, 3, 10);
    part.upload_segment(&mut manifest, upload).await.unwrap();
    // An upload that died after writing its objects but before the manifest.
    for ext in ["log", "index"] {
        let name = format!("{:020}-deadbeef.{ext}", 30);
        store
            .store
            .put(
                &store.path(&["t-id", "1", &name]),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
    }
    // A missing file makes the upload fail and leaves the manifest as it was.
    let (mut broken, _) = write_segment(dir.path(), 30, 3, 10);
    broken.log = dir.path().join("missing.log");
    assert!(part.upload_segment(&mut manifest, broken).await.is_err());
    assert_eq!(manifest.segments.len(), 1);
    assert_eq!(part.load_manifest().await.unwrap(), manifest);
    // Cleanup removes the dead upload's two objects and the failed upload's index, keeps the
    // named segment's two.
    assert_eq!(part.clean_orphans(&manifest).await.unwrap(), 3);
    assert_eq!(part.clean_orphans(&manifest).await.unwrap(), 0);
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 1 << 20, false).await.unwrap()),
        vec![0, 10, 20]
    );
}

#[test]
fn bad_urls_are_configuration_errors() {
    for url in ["not a url", "nosuchscheme://x/y"] {
        assert!(
            matches!(TierStore::open(url, &[]), Err(TierError::Config(_))),
            "{url}"
        );
    }
}

/// A moto S3 server on a free loopback port, killed on drop.
struct MotoServer {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `moto_server` (PyPI `moto[server]`, which `scripts/test` installs) and creates the
/// bucket `strata`. `None` when moto is not installed and the environment does not require
/// the S3 tests (`STRATA_REQUIRE_S3_TEST=1`, set by `scripts/test`).
fn start_moto() -> Option<MotoServer> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if std::env::var("STRATA_REQUIRE_S3_TEST").as_deref() != Ok("1") => {
            eprintln!("skipping the S3 test: cannot start moto_server ({e})");
            return None;
        }
        Err(e) => panic!("STRATA_REQUIRE_S3_TEST=1 but moto_server cannot start: {e}"),
    };
    let server = MotoServer {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("moto_server did not listen on {port}: {e}"),
        }
    };
    write!(
        conn,
        "PUT /strata HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "creating the bucket: {reply}"
    );
    Some(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_an_s3_compatible_server() {
    let Some(moto) = start_moto() else {
        return;
    };
    let options: Vec<(String, String)> = [
        ("aws_endpoint", moto.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let store = TierStore::open("s3://strata", &options)
        .unwrap()
        .scoped("cluster-a");
    round_trip(store.clone(), None).await;
    round_trip(store.clone(), Some(RemoteReadCache::new(1 << 20, 16 << 10))).await;
    // The orphan cleanup lists and deletes through S3 too.
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "s3", "id", 0);
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, _) = write_segment(dir.path(), 0, 2, 10);
    part.upload_segment(&mut manifest, upload).await.unwrap();
    let stray = store.path(&["s3-id", "0", &format!("{:020}-0ddba11.log", 20)]);
    store
        .store
        .put(&stray, PutPayload::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(part.clean_orphans(&manifest).await.unwrap(), 1);
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 1 << 20, false).await.unwrap()),
        vec![0, 10]
    );
    topic_gc(store.scoped("gc")).await;
}

/// Polls the cache's counters until `done` holds; fails after 10 s. For read-aheads, which
/// finish in the background.
async fn wait_for(cache: &RemoteReadCache, done: impl Fn(&CacheStats) -> bool) -> CacheStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = cache.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never got there: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads the partition from `offset` to the end the way a consumer does, in fetches of at
/// most `max_bytes` (at least one batch each); returns everything read.
async fn consume(
    part: &RemotePartition,
    manifest: &RemoteManifest,
    mut offset: i64,
    max_bytes: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = part.read(manifest, offset, max_bytes, true).await.unwrap();
        if got.is_empty() {
            return out;
        }
        assert!(got.len() <= max_bytes || batch_offsets(&got).len() == 1);
        let last = headers(&got).last().unwrap().last_offset();
        offset = last + 1;
        out.extend_from_slice(&got);
    }
}

/// Store, partition with `cache`, and one uploaded segment per `(base, batches)`, 10 records a
/// batch; returns the segments' bytes too.
async fn setup(
    cache: Option<Arc<RemoteReadCache>>,
    segments: &[(i64, i64)],
) -> (RemotePartition, RemoteManifest, Vec<Vec<u8>>) {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut part = RemotePartition::new(&store, "t", "id", 0);
    if let Some(cache) = cache {
        part = part.with_cache(cache);
    }
    let mut manifest = part.load_manifest().await.unwrap();
    let mut logs = Vec::new();
    for &(base, batches) in segments {
        let (upload, log) = write_segment(dir.path(), base, batches, 10);
        part.upload_segment(&mut manifest, upload).await.unwrap();
        logs.push(log);
    }
    (part, manifest, logs)
}

#[tokio::test]
async fn a_sequential_re_read_is_served_from_the_cache() {
    const CHUNK: usize = 16 << 10;
    let cache = RemoteReadCache::new(1 << 20, CHUNK);
    let (part, manifest, logs) = setup(Some(Arc::clone(&cache)), &[(0, 50)]).await;
    let size = logs[0].len();
    let chunks = size.div_ceil(CHUNK) as u64;
    let index_bytes = 50 * 8;

    // One read of the whole segment: the index and every chunk are misses, fetched once.
    let all = part.read(&manifest, 0, 1 << 20, false).await.unwrap();
    assert_eq!(&all[..], &logs[0][..]);
    let first = cache.stats();
    assert_eq!(
        first,
        CacheStats {
            hits: 0,
            misses: 1 + chunks,
            bytes_cached: (index_bytes + size) as u64,
            entries: 1 + chunks,
            remote_bytes_read: (index_bytes + size) as u64,
            remote_requests: 1 + chunks,
        }
    );

    // A consumer reading it again in small fetches: all hits, nothing fetched.
    assert_eq!(consume(&part, &manifest, 0, 5_000).await, logs[0]);
    let again = cache.stats();
    assert!(again.hits > 2 * chunks, "{again:?}");
    assert_eq!(again.misses, first.misses);
    assert_eq!(again.remote_requests, first.remote_requests);
    assert_eq!(again.remote_bytes_read, first.remote_bytes_read);
    assert_eq!(again.entries, first.entries);
}

#[tokio::test]
async fn the_cache_stays_within_its_capacity() {
    const CHUNK: usize = 16 << 10;
    let capacity = 3 * CHUNK + 1_000;
    let cache = RemoteReadCache::new(capacity, CHUNK);
    let (part, manifest, logs) = setup(Some(Arc::clone(&cache)), &[(0, 50), (500, 50)]).await;
    let expected: Vec<u8> = logs.concat();
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let read = part.read(&manifest, offset, 7_000, true).await.unwrap();
        assert!(cache.stats().bytes_cached <= capacity as u64);
        if read.is_empty() {
            break;
        }
        offset = headers(&read).last().unwrap().last_offset() + 1;
        got.extend_from_slice(&read);
    }
    assert_eq!(got, expected);
    // Read-aheads still running finish within the capacity too.
    let stats = wait_for(&cache, |_| cache.read_aheads_running() == 0).await;
    assert!(stats.bytes_cached <= capacity as u64, "{stats:?}");
    assert!(stats.entries <= 5, "{stats:?}");
    // 230 KB went through a 50 KB cache: the start was evicted and is fetched again.
    let before = cache.stats();
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 1_000, true).await.unwrap()),
        vec![0]
    );
    let after = cache.stats();
    assert!(after.misses > before.misses, "{before:?} {after:?}");
    assert!(after.remote_requests > before.remote_requests);
    assert!(after.bytes_cached <= capacity as u64);
}

#[tokio::test]
async fn read_ahead_makes_the_next_chunk_a_hit() {
    const CHUNK: u64 = 128 << 10;
    let cache = RemoteReadCache::new(16 << 20, CHUNK as usize);
    let (part, manifest, logs) = setup(Some(Arc::clone(&cache)), &[(0, 150)]).await;
    assert!(logs[0].len() as u64 > 2 * CHUNK);

    // A read within chunk 0: the index and chunk 0 are fetched, chunk 1 follows by itself.
    let got = part.read(&manifest, 0, 1_000, true).await.unwrap();
    assert_eq!(batch_offsets(&got), vec![0]);
    let stats = wait_for(&cache, |s| s.entries == 3).await;
    assert_eq!((stats.hits, stats.misses, stats.remote_requests), (0, 2, 3));

    // A read that starts (at the offset index's position) and ends in chunk 1.
    let mut pos = 0u64;
    let mut positions = Vec::new();
    for h in headers(&logs[0]) {
        positions.push((pos, h.base_offset));
        pos += h.size_bytes() as u64;
    }
    let (_, offset) = positions
        .windows(2)
        .find(|w| w[0].0 >= CHUNK && w[1].0 + 1_000 + (64 << 10) < 2 * CHUNK)
        .map(|w| w[1])
        .unwrap();
    let got = part.read(&manifest, offset, 1_000, true).await.unwrap();
    assert_eq!(batch_offsets(&got), vec![offset]);
    let after = cache.stats();
    assert_eq!((after.hits, after.misses), (2, 2), "{after:?}");
    // And it fetches chunk 2 ahead in turn.
    wait_for(&cache, |s| s.entries == 4 && s.remote_requests == 4).await;
}

#[tokio::test]
async fn read_ahead_crosses_into_the_next_segment() {
    const CHUNK: usize = 1 << 20;
    let cache = RemoteReadCache::new(16 << 20, CHUNK);
    // Two segments, each smaller than one chunk.
    let (part, manifest, logs) = setup(Some(Arc::clone(&cache)), &[(0, 20), (200, 20)]).await;
    assert!(logs[0].len() < CHUNK && logs[1].len() < CHUNK);
    let got = part.read(&manifest, 0, 1_000, true).await.unwrap();
    assert_eq!(batch_offsets(&got), vec![0]);
    // Index and chunk of segment 0, then the read-ahead of segment 1's first chunk.
    let stats = wait_for(&cache, |s| {
        s.remote_requests == 3 && cache.read_aheads_running() == 0
    })
    .await;
    assert_eq!((stats.hits, stats.misses), (0, 2), "{stats:?}");
    let second = headers(&logs[1])[0].base_offset;
    let got = part.read(&manifest, second, 1_000, true).await.unwrap();
    assert_eq!(batch_offsets(&got), vec![second]);
    let after = cache.stats();
    // Segment 1's index is a miss; its data chunk is a hit.
    assert_eq!((after.hits, after.misses), (1, 3), "{after:?}");
}

#[tokio::test]
async fn a_batch_larger_than_a_chunk_is_returned_whole() {
    for capacity in [1 << 20, 8 << 10] {
        let cache = RemoteReadCache::new(capacity, 1024);
        let store = TierStore::open("memory://", &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let part = RemotePartition::new(&store, "t", "id", 0).with_cache(Arc::clone(&cache));
        let mut manifest = part.load_manifest().await.unwrap();
        // Three batches of one 100 KB record: each spans about 100 chunks, and is larger
        // than what a read fetches at first (max_bytes + the index slack).
        let (upload, log) = write_segment_with(dir.path(), 0, 3, 1, 100_000, |o| o);
        part.upload_segment(&mut manifest, upload).await.unwrap();
        let sizes: Vec<usize> = headers(&log).iter().map(|h| h.size_bytes()).collect();
        for offset in 0..3 {
            let got = part.read(&manifest, offset, 100, true).await.unwrap();
            assert_eq!(batch_offsets(&got), vec![offset]);
            assert_eq!(got.len(), sizes[offset as usize]);
            assert!(part
                .read(&manifest, offset, 100, false)
                .await
                .unwrap()
                .is_empty());
        }
        let all = part.read(&manifest, 0, 1 << 20, false).await.unwrap();
        assert_eq!(&all[..], &log[..]);
        assert_eq!(
            batch_offsets(&part.read(&manifest, 0, sizes[0] + 10, false).await.unwrap()),
            vec![0]
        );
        assert!(cache.stats().bytes_cached <= capacity as u64);
    }
}

#[tokio::test]
async fn a_corrupted_object_is_an_error_even_through_the_cache() {
    let cache = RemoteReadCache::new(1 << 20, 4096);
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 0).with_cache(Arc::clone(&cache));
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, mut bytes) = write_segment(dir.path(), 0, 5, 10);
    let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
    let second = RecordBatchHeader::parse(&bytes).unwrap().size_bytes();
    bytes[second + 100] ^= 0xFF;
    replace_log(&store, &None, &seg, bytes.clone()).await;
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 100, true).await.unwrap()),
        vec![0]
    );
    // The corrupt chunk is checked on every read, cached or not.
    for _ in 0..2 {
        let err = part.read(&manifest, 0, 1 << 20, false).await.unwrap_err();
        assert!(matches!(err, TierError::Corrupt(_)), "{err}");
        let err = part.read(&manifest, 10, 100, true).await.unwrap_err();
        assert!(matches!(err, TierError::Corrupt(_)), "{err}");
    }
    assert!(cache.stats().hits > 0);

    // A torn object (shorter than the manifest says): an error, and its short chunk is not
    // cached.
    let (upload, bytes) = write_segment(dir.path(), 50, 5, 10);
    let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
    let torn = bytes.len() - 10;
    replace_log(&store, &None, &seg, bytes[..torn].to_vec()).await;
    let entries = cache.stats().entries;
    let err = part.read(&manifest, 50, 1 << 20, false).await.unwrap_err();
    assert!(matches!(err, TierError::Corrupt(_)), "{err}");
    // Only the index and the whole chunks before the tear can have been cached.
    let whole_chunks = (torn / 4096) as u64;
    assert!(cache.stats().entries <= entries + 1 + whole_chunks);
    let err = part.read(&manifest, 50, 1 << 20, false).await.unwrap_err();
    assert!(matches!(err, TierError::Corrupt(_)), "{err}");
    // The same without a cache.
    let plain = RemotePartition::new(&store, "t", "id", 0);
    let err = plain.read(&manifest, 50, 1 << 20, false).await.unwrap_err();
    assert!(matches!(err, TierError::Corrupt(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_share_a_small_cache() {
    let cache = RemoteReadCache::new(20_000, 4096);
    let (part, manifest, logs) =
        setup(Some(Arc::clone(&cache)), &[(0, 20), (200, 20), (400, 20)]).await;
    let expected = logs.concat();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (part, manifest) = (part.clone(), manifest.clone());
            tokio::spawn(async move { consume(&part, &manifest, 0, 3_000 + i * 1_000).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), expected);
    }
    let stats = cache.stats();
    assert!(stats.bytes_cached <= 20_000, "{stats:?}");
    assert!(stats.hits > 0 && stats.misses > 0, "{stats:?}");
}

/// Segments 0..=99 (with a time index), 100..=199 (without any index) and, after a gap,
/// 300..=399 (with a time index); record timestamps 1000 + 10 x offset.
async fn timestamp_segments(
    cache: Option<Arc<RemoteReadCache>>,
) -> (RemotePartition, RemoteManifest) {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut part = RemotePartition::new(&store, "ts", "id", 0);
    if let Some(cache) = cache {
        part = part.with_cache(cache);
    }
    let mut manifest = part.load_manifest().await.unwrap();
    for (base, time_index_every) in [(0, Some(3)), (100, None), (300, Some(2))] {
        let (mut upload, log) =
            write_segment_with(dir.path(), base, 10, 10, 200, |o| 1_000 + 10 * o);
        match time_index_every {
            Some(every) => upload.aux.push((
                "timeindex".into(),
                AuxData::Bytes(time_index(&log, base, every)),
            )),
            None => upload.aux.clear(),
        }
        let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
        assert_eq!(seg.max_timestamp_ms, 1_000 + 10 * (base + 99));
        assert_eq!(seg.max_timestamp_offset, base + 90);
    }
    (part, manifest)
}

/// [`RemotePartition::offset_for_timestamp`], which must not fail.
async fn timestamp_lookup(
    part: &RemotePartition,
    manifest: &RemoteManifest,
    ts: i64,
    start: i64,
) -> Option<(i64, i64)> {
    pair(
        part.offset_for_timestamp(manifest, ts, start)
            .await
            .unwrap(),
    )
}

/// `(timestamp, offset)` of a lookup's answer, for tests not about its leader epoch.
fn pair(found: Option<TimestampAndOffset>) -> Option<(i64, i64)> {
    found.map(|f| (f.timestamp_ms, f.offset))
}

#[tokio::test]
async fn timestamps_are_found_across_segments() {
    for cache in [None, Some(RemoteReadCache::new(1 << 20, 4096))] {
        let (part, manifest) = timestamp_segments(cache).await;
        let find = |ts, start| timestamp_lookup(&part, &manifest, ts, start);
        // Answers name the record, not its batch (batches hold offsets 10k..10k+9).
        // Before everything: the first record.
        assert_eq!(find(0, 0).await, Some((1_000, 0)));
        assert_eq!(find(-1_000, 0).await, Some((1_000, 0)));
        // Inside the first segment, past its time index's entries, and its last batch.
        assert_eq!(find(1_500, 0).await, Some((1_500, 50)));
        assert_eq!(find(1_545, 0).await, Some((1_550, 55)));
        assert_eq!(find(1_590, 0).await, Some((1_590, 59)));
        assert_eq!(find(1_591, 0).await, Some((1_600, 60)));
        assert_eq!(find(1_990, 0).await, Some((1_990, 99)));
        // The second segment (no index at all).
        assert_eq!(find(1_991, 0).await, Some((2_000, 100)));
        assert_eq!(find(2_550, 0).await, Some((2_550, 155)));
        // Between segments (offsets 200..300 are not in the tier): the next record after.
        assert_eq!(find(3_500, 0).await, Some((4_000, 300)));
        assert_eq!(find(4_990, 0).await, Some((4_990, 399)));
        // After everything.
        assert_eq!(find(4_991, 0).await, None);
        assert_eq!(find(i64::MAX, 0).await, None);
        // A log start in the middle of a batch: earlier records do not count.
        assert_eq!(find(0, 55).await, Some((1_550, 55)));
        assert_eq!(find(1_700, 55).await, Some((1_700, 70)));
        assert_eq!(find(0, 155).await, Some((2_550, 155)));
        assert_eq!(find(2_550, 155).await, Some((2_550, 155)));
        assert_eq!(find(2_705, 155).await, Some((2_710, 171)));
        assert_eq!(find(0, 250).await, Some((4_000, 300)));
        assert_eq!(find(0, 400).await, None);
        // The manifest's own log start counts too.
        let mut trimmed = manifest.clone();
        trimmed.log_start_offset = 120;
        assert_eq!(
            pair(part.offset_for_timestamp(&trimmed, 0, 0).await.unwrap()),
            Some((2_200, 120))
        );
    }
}

/// Compressed batches are read record by record too, and MAX_TIMESTAMP names the record.
#[tokio::test]
async fn compressed_batches_answer_by_record_and_max_timestamp_names_the_record() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "ts", "id", 2);
    let mut manifest = part.load_manifest().await.unwrap();
    // Offsets 0..=49 in 5 zstd batches; timestamps rise but for a peak at offset 23.
    let ts = |o: i64| if o == 23 { 9_000 } else { 1_000 + o };
    for (base, compression) in [(0, Compression::Zstd), (50, Compression::Lz4)] {
        let (upload, _) = write_segment_compressed(dir.path(), base, 5, 10, 50, ts, compression);
        part.upload_segment(&mut manifest, upload).await.unwrap();
    }
    let find = |ts, start| timestamp_lookup(&part, &manifest, ts, start);
    assert_eq!(find(1_012, 0).await, Some((1_012, 12)));
    assert_eq!(find(1_030, 0).await, Some((9_000, 23)));
    // The first record at or after the target in offset order, as in Kafka.
    assert_eq!(find(1_077, 0).await, Some((9_000, 23)));
    assert_eq!(find(1_077, 24).await, Some((1_077, 77)));
    assert_eq!(find(9_001, 0).await, None);
    assert_eq!(
        pair(part.max_timestamp(&manifest, 0).await.unwrap()),
        Some((9_000, 23))
    );
    // A log start past the record: it is not returned below the log start.
    assert_eq!(
        pair(part.max_timestamp(&manifest, 30).await.unwrap()),
        Some((9_000, 30))
    );
    // Without the manifest's batch offset (older manifests): the segment's base.
    let mut old = manifest.clone();
    old.segments[0].max_timestamp_offset = -1;
    assert_eq!(
        pair(part.max_timestamp(&old, 0).await.unwrap()),
        Some((9_000, 0))
    );
    assert_eq!(
        part.max_timestamp(&RemoteManifest::new(), 0).await.unwrap(),
        None
    );
}

/// Lookups answer the leader epoch of the batch holding the record, as Kafka's
/// `RemoteLogManager.lookupTimestamp` does; answers that cannot name a batch take the
/// manifest's epoch for their offset.
#[tokio::test]
async fn lookups_answer_the_leader_epoch_of_the_batch() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "ts", "id", 3);
    let mut manifest = part.load_manifest().await.unwrap();
    // Offsets 0..=19 in epoch 3, 20..=49 in epoch 4, 50..=99 in epoch 6; the peak at 23.
    let ts = |o: i64| if o == 23 { 9_000 } else { 1_000 + o };
    for (base, epochs) in [(0, vec![(3, 0), (4, 20)]), (50, vec![(6, 50)])] {
        let (upload, _) =
            write_segment_in_epochs(dir.path(), base, 5, 10, 50, ts, Compression::Zstd, &epochs);
        part.upload_segment(&mut manifest, upload).await.unwrap();
    }
    // (Record 23 comes first for any target up to 9 000 from offset 0.)
    for (ts, start, offset, epoch) in [(1_005, 0, 5, 3), (1_021, 0, 21, 4), (1_060, 24, 60, 6)] {
        let found = part
            .offset_for_timestamp(&manifest, ts, start)
            .await
            .unwrap();
        assert_eq!(
            found.map(|f| (f.offset, f.leader_epoch)),
            Some((offset, Some(epoch))),
            "{ts}"
        );
    }
    assert_eq!(
        part.max_timestamp(&manifest, 0).await.unwrap(),
        Some(TimestampAndOffset {
            timestamp_ms: 9_000,
            offset: 23,
            leader_epoch: Some(4)
        })
    );
    // Moved up to the log start, or without the batch: the manifest's epoch of the offset.
    let found = part.max_timestamp(&manifest, 24).await.unwrap();
    assert_eq!(
        found.map(|f| (f.offset, f.leader_epoch)),
        Some((24, Some(4)))
    );
    let mut old = manifest.clone();
    old.segments[0].max_timestamp_offset = -1;
    let found = part.max_timestamp(&old, 0).await.unwrap();
    assert_eq!(
        found.map(|f| (f.offset, f.leader_epoch)),
        Some((0, Some(3)))
    );
    assert_eq!(manifest.epoch_for_offset(19), Some(3));
    assert_eq!(manifest.epoch_for_offset(20), Some(4));
    assert_eq!(manifest.epoch_for_offset(1_000), Some(6));
    let mut trimmed = manifest.clone();
    trimmed.segments.remove(0);
    assert_eq!(
        trimmed.epoch_for_offset(49),
        None,
        "no epoch starts that early"
    );
}

#[tokio::test]
async fn the_time_index_is_used_to_skip_ahead() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "ts", "id", 1);
    let mut manifest = part.load_manifest().await.unwrap();
    let (mut upload, _) = write_segment_with(dir.path(), 0, 10, 10, 200, |o| 1_000 + 10 * o);
    // An entry claiming every batch up to offset 79 is below 1499: the lookup believes it.
    let mut entry = 1_499i64.to_be_bytes().to_vec();
    entry.extend_from_slice(&79i32.to_be_bytes());
    upload
        .aux
        .push(("timeindex".into(), AuxData::Bytes(Bytes::from(entry))));
    part.upload_segment(&mut manifest, upload).await.unwrap();
    assert_eq!(
        pair(
            part.offset_for_timestamp(&manifest, 1_500, 0)
                .await
                .unwrap()
        ),
        Some((1_800, 80))
    );
    // Entries at or above the target are not used.
    assert_eq!(
        pair(
            part.offset_for_timestamp(&manifest, 1_400, 0)
                .await
                .unwrap()
        ),
        Some((1_400, 40))
    );
}

#[tokio::test]
async fn timestamp_lookup_of_a_corrupted_batch_is_an_error() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 0);
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, mut bytes) = write_segment(dir.path(), 0, 5, 10);
    let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
    let second = RecordBatchHeader::parse(&bytes).unwrap().size_bytes();
    bytes[second + 100] ^= 0xFF;
    replace_log(&store, &None, &seg, bytes).await;
    assert_eq!(
        pair(part.offset_for_timestamp(&manifest, 0, 0).await.unwrap()),
        Some((1_000, 0))
    );
    let err = part
        .offset_for_timestamp(&manifest, 1_015, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, TierError::Corrupt(_)), "{err}");
}

#[tokio::test]
async fn aux_files_come_from_disk_or_memory() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 0);
    let mut manifest = part.load_manifest().await.unwrap();
    let (mut upload, _) = write_segment(dir.path(), 0, 3, 10);
    upload.aux.push((
        "leader-epoch-checkpoint".into(),
        AuxData::Bytes(Bytes::from_static(b"0\n1\n0 0\n")),
    ));
    let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
    assert_eq!(seg.files, vec!["index", "leader-epoch-checkpoint"]);
    let name = format!("{:020}-{}.leader-epoch-checkpoint", 0, seg.id);
    let got = store
        .store
        .get(&store.path(&["t-id", "0", &name]))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, Bytes::from_static(b"0\n1\n0 0\n"));

    // A file that is gone is an error, left to the caller; the manifest is unchanged.
    let (mut upload, _) = write_segment(dir.path(), 30, 3, 10);
    upload.aux.push((
        "timeindex".into(),
        AuxData::File(dir.path().join("gone.timeindex")),
    ));
    let err = part
        .upload_segment(&mut manifest, upload.clone())
        .await
        .unwrap_err();
    let not_found = std::io::ErrorKind::NotFound;
    assert!(
        matches!(&err, TierError::Io { source, .. } if source.kind() == not_found),
        "{err}"
    );
    assert_eq!(manifest.segments.len(), 1);
    // Extensions that would clash are refused before anything is written.
    for aux in [
        vec![("log".to_string(), AuxData::Bytes(Bytes::new()))],
        vec![("".to_string(), AuxData::Bytes(Bytes::new()))],
        vec![("a.b".to_string(), AuxData::Bytes(Bytes::new()))],
        vec![("a/b".to_string(), AuxData::Bytes(Bytes::new()))],
        vec![
            ("x".to_string(), AuxData::Bytes(Bytes::new())),
            ("x".to_string(), AuxData::Bytes(Bytes::new())),
        ],
    ] {
        let mut bad = upload.clone();
        bad.aux = aux;
        assert!(matches!(
            part.upload_segment(&mut manifest, bad).await,
            Err(TierError::InvalidUpload(_))
        ));
    }
    assert_eq!(part.load_manifest().await.unwrap(), manifest);
}

/// Two topics of two partitions each, plus objects that are not topic directories; deleting
/// one topic leaves the other (and everything else) as it was.
async fn topic_gc(store: TierStore) {
    let dir = tempfile::tempdir().unwrap();
    let orders_id = "0123456789abcdef0123456789abcdef";
    let other_id = "fedcba9876543210fedcba9876543210";
    let mut parts = Vec::new();
    for (topic, id) in [("orders", orders_id), ("my-topic", other_id)] {
        for p in 0..2 {
            let part = RemotePartition::new(&store, topic, id, p);
            let mut manifest = part.load_manifest().await.unwrap();
            for base in [0, 20] {
                let (upload, _) = write_segment(dir.path(), base, 2, 10);
                part.upload_segment(&mut manifest, upload).await.unwrap();
            }
            parts.push((topic, part, manifest));
        }
    }
    for junk in ["notes/a", "orders-123/0/x", "readme"] {
        store
            .store
            .put(&store.path(&[junk]), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.list_topic_dirs().await.unwrap(),
        vec![
            ("my-topic".to_string(), other_id.to_string()),
            ("orders".to_string(), orders_id.to_string())
        ]
    );
    // Two partitions of a manifest and two segments of a .log and an .index each.
    assert_eq!(
        store.delete_topic_dir("orders", orders_id).await.unwrap(),
        10
    );
    assert_eq!(
        store.list_topic_dirs().await.unwrap(),
        vec![("my-topic".to_string(), other_id.to_string())]
    );
    assert_eq!(
        store.delete_topic_dir("orders", orders_id).await.unwrap(),
        0
    );
    for (topic, part, manifest) in &parts {
        if *topic == "orders" {
            assert_eq!(part.load_manifest().await.unwrap(), RemoteManifest::new());
        } else {
            assert_eq!(&part.load_manifest().await.unwrap(), manifest);
            assert_eq!(
                batch_offsets(&part.read(manifest, 0, 1 << 20, false).await.unwrap()),
                vec![0, 10]
            );
        }
    }
    for junk in ["notes/a", "orders-123/0/x", "readme"] {
        assert!(
            store.store.head(&store.path(&[junk])).await.is_ok(),
            "{junk}"
        );
    }
}

#[tokio::test]
async fn topic_directories_are_listed_and_deleted_in_memory() {
    let store = TierStore::open("memory://", &[]).unwrap();
    // Scoped: another cluster's topic in the same store is not listed, nor deleted.
    let other = store.scoped("cluster-b");
    let part = RemotePartition::new(&other, "orders", "0123456789abcdef0123456789abcdef", 0);
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, _) = write_segment(dir.path(), 0, 2, 10);
    part.upload_segment(&mut manifest, upload).await.unwrap();
    topic_gc(store.scoped("cluster-a")).await;
    assert_eq!(part.load_manifest().await.unwrap(), manifest);
    assert_eq!(other.list_topic_dirs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn topic_directories_are_listed_and_deleted_in_a_local_folder() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/tier", root.path().display());
    topic_gc(TierStore::open(&url, &[]).unwrap().scoped("cluster-a")).await;
    // The deleted topic's folder is gone; the other topic's is still there.
    let scope = root.path().join("tier/cluster-a");
    assert!(!scope
        .join("orders-0123456789abcdef0123456789abcdef")
        .exists());
    assert!(scope
        .join("my-topic-fedcba9876543210fedcba9876543210")
        .is_dir());
}

/// Positions of the batches in `log`.
fn positions(log: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    for h in headers(log) {
        out.push(pos);
        pos += h.size_bytes();
    }
    out
}

/// Replaces the `.log` object of `seg` (partition 0 of `t-id`) with `bytes`, dropping what
/// `cache` holds of it (objects are never rewritten, so the cache does not expect it).
async fn replace_log(
    store: &TierStore,
    cache: &Option<Arc<RemoteReadCache>>,
    seg: &RemoteSegment,
    bytes: Vec<u8>,
) {
    if let Some(cache) = cache {
        cache.invalidate_segment(&seg.id);
    }
    let object = store.path(&[
        "t-id",
        "0",
        &format!("{:020}-{}.log", seg.base_offset, seg.id),
    ]);
    store
        .store
        .put(&object, PutPayload::from(bytes))
        .await
        .unwrap();
}

fn assert_corrupt<T: std::fmt::Debug>(got: Result<T, TierError>, what: &str) {
    match got {
        Err(TierError::Corrupt(_)) => {}
        Err(e) => panic!("{what}: expected a Corrupt error, got {e}"),
        Ok(v) => {
            let mut shown = format!("{v:?}");
            shown.truncate(200);
            panic!("{what}: expected a Corrupt error, got Ok({shown}...)")
        }
    }
}

/// The repro of the end-to-end test: the batch CRC does not cover the base offset, so a bit
/// flipped there once labelled records 192..255 as 196..259 and served them.
#[tokio::test]
async fn a_corrupted_base_offset_is_an_error_not_data() {
    for with_index in [true, false] {
        for cache in [
            None,
            Some(RemoteReadCache::new(1 << 20, 4096)),
            Some(RemoteReadCache::new(1 << 20, 64 << 10)),
        ] {
            let store = TierStore::open("memory://", &[]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut part = RemotePartition::new(&store, "t", "id", 0);
            if let Some(cache) = cache.clone() {
                part = part.with_cache(cache);
            }
            let mut manifest = part.load_manifest().await.unwrap();
            // 8 batches of 64 records (offsets 0..=511), timestamps 1000 + offset.
            let (mut upload, mut bytes) = write_segment(dir.path(), 0, 8, 64);
            if !with_index {
                upload.aux.clear();
            }
            let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
            let at = positions(&bytes);
            // The 4th batch (192..=255) now says it starts at 196.
            bytes[at[3] + 7] ^= 0x04;
            assert_eq!(headers(&bytes)[3].base_offset, 196);
            replace_log(&store, &cache, &seg, bytes).await;
            let what = format!("index {with_index}, cache {:?}", cache.is_some());

            // At the batch's offset, and from earlier offsets whose reads walk into it: an
            // error. Reads that stop before it (the batch over `max_bytes` is parsed and
            // checked, never returned) answer batches before it.
            let corrupt: Option<&[i64]> = None;
            for (offset, max_bytes, min_one, expected) in [
                (192, 1 << 20, false, corrupt),
                (200, 1 << 20, false, corrupt),
                (255, 1 << 20, false, corrupt),
                (0, 1 << 20, false, corrupt),
                (100, 1 << 20, false, corrupt),
                (191, 1 << 20, false, corrupt),
                (192, 100, true, corrupt),
                (200, 100, true, corrupt),
                (255, 100, true, corrupt),
                (0, 100, true, Some(&[0][..])),
                (100, 100, true, Some(&[64][..])),
                (191, 100, true, Some(&[128][..])),
                // Batches are about 13.5 KB: two fit, the third is checked.
                (192, 30_000, true, corrupt),
                (0, 30_000, true, Some(&[0, 64][..])),
                (100, 30_000, true, corrupt),
                (191, 30_000, true, corrupt),
            ] {
                let got = part.read(&manifest, offset, max_bytes, min_one).await;
                let at = format!("{what}: read at {offset}, max {max_bytes}");
                match expected {
                    None => assert_corrupt(got, &at),
                    Some(offsets) => assert_eq!(batch_offsets(&got.unwrap()), offsets, "{at}"),
                }
            }
            // A timestamp lookup that walks it, too.
            assert_corrupt(
                part.offset_for_timestamp(&manifest, 1_000 + 192, 0).await,
                &format!("{what}: timestamp"),
            );
            // Batches before it still read when the read does not reach it.
            assert_eq!(
                batch_offsets(&part.read(&manifest, 64, 100, true).await.unwrap()),
                vec![64],
                "{what}"
            );
            if with_index {
                // With an index, a read starting past it never walks it.
                assert_eq!(
                    batch_offsets(&part.read(&manifest, 320, 1 << 20, false).await.unwrap()),
                    vec![320, 384, 448],
                    "{what}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_corrupted_base_offset_in_a_first_or_last_batch_is_an_error() {
    for with_index in [true, false] {
        for cache in [None, Some(RemoteReadCache::new(1 << 20, 4096))] {
            let store = TierStore::open("memory://", &[]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut part = RemotePartition::new(&store, "t", "id", 0);
            if let Some(cache) = cache.clone() {
                part = part.with_cache(cache);
            }
            let mut manifest = part.load_manifest().await.unwrap();
            let mut segs = Vec::new();
            for base in [0, 80, 160] {
                let (mut upload, bytes) = write_segment(dir.path(), base, 8, 10);
                if !with_index {
                    upload.aux.clear();
                }
                segs.push((
                    part.upload_segment(&mut manifest, upload).await.unwrap(),
                    bytes,
                ));
            }
            let what = format!("index {with_index}, cache {:?}", cache.is_some());
            // The first batch of the second segment says 84 (up), the first of the third 128
            // (down, into the segment before): neither starts its segment.
            for ((seg, bytes), flip) in segs.iter().skip(1).zip([0x04u8, 0x20]) {
                let mut bytes = bytes.clone();
                bytes[7] ^= flip;
                assert_ne!(headers(&bytes)[0].base_offset, seg.base_offset);
                replace_log(&store, &cache, seg, bytes).await;
                for offset in [seg.base_offset, seg.base_offset + 5] {
                    assert_corrupt(
                        part.read(&manifest, offset, 1 << 20, false).await,
                        &format!("{what}: read at {offset}"),
                    );
                    assert_corrupt(
                        part.read(&manifest, offset, 10, true).await,
                        &format!("{what}: read of one batch at {offset}"),
                    );
                }
                assert_corrupt(
                    part.offset_for_timestamp(&manifest, 1_000 + seg.base_offset, 0)
                        .await,
                    &format!("{what}: timestamp in {}", seg.base_offset),
                );
            }
            // The first segment still reads whole: reads stop at segment ends.
            assert_eq!(
                batch_offsets(&part.read(&manifest, 0, 1 << 20, false).await.unwrap()),
                (0..80).step_by(10).collect::<Vec<_>>(),
                "{what}"
            );
            // Its last batch now says it starts at 71 (0x46 ^ 0x01): not after the one
            // before it, and not ending at the segment's end.
            let (seg, bytes) = &segs[0];
            let mut bytes = bytes.clone();
            let last = *positions(&bytes).last().unwrap();
            bytes[last + 7] ^= 0x01;
            assert_eq!(headers(&bytes).last().unwrap().base_offset, 71);
            replace_log(&store, &cache, seg, bytes).await;
            for offset in [0, 69, 70, 75, 79] {
                assert_corrupt(
                    part.read(&manifest, offset, 1 << 20, false).await,
                    &format!("{what}: read at {offset} of a bad last batch"),
                );
            }
        }
    }
}

/// A segment whose batches do not reach the end offset the manifest gives it, or whose
/// index entry does not match the batch it points at.
#[tokio::test]
async fn offsets_must_match_the_manifest_and_the_index() {
    let store = TierStore::open("memory://", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 0);
    let mut manifest = part.load_manifest().await.unwrap();
    let (mut upload, _) = write_segment(dir.path(), 0, 4, 10);
    upload.end_offset = 49;
    part.upload_segment(&mut manifest, upload).await.unwrap();
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 100, true).await.unwrap()),
        vec![0]
    );
    assert_corrupt(part.read(&manifest, 0, 1 << 20, false).await, "short");
    assert_corrupt(part.read(&manifest, 45, 1 << 20, false).await, "short");

    // An index entry saying the batch at its position ends at 24 (it ends at 29).
    let (mut upload, _) = write_segment(dir.path(), 50, 4, 10);
    let mut index = Vec::new();
    for (rel, pos) in [(9u32, 0u32), (14, 0)] {
        index.extend_from_slice(&rel.to_be_bytes());
        index.extend_from_slice(&pos.to_be_bytes());
    }
    upload.aux = vec![("index".into(), AuxData::Bytes(Bytes::from(index)))];
    part.upload_segment(&mut manifest, upload).await.unwrap();
    assert_corrupt(part.read(&manifest, 65, 1 << 20, false).await, "index");
}

/// Reads from every offset, through dense, sparse and no offset indexes, with and without a
/// cache, return exactly the segment's bytes from the batch holding the offset on.
#[tokio::test]
async fn reads_across_many_index_entries_pass_the_offset_checks() {
    for index_every in [Some(1), Some(4), None] {
        for cache in [None, Some(RemoteReadCache::new(64 << 10, 1024))] {
            let store = TierStore::open("memory://", &[]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut part = RemotePartition::new(&store, "t", "id", 0);
            if let Some(cache) = cache.clone() {
                part = part.with_cache(cache);
            }
            let mut manifest = part.load_manifest().await.unwrap();
            let mut logs = Vec::new();
            // Three segments of 60 batches of 3 records with 50-byte values.
            for base in [0, 180, 360] {
                let (mut upload, log) =
                    write_segment_with(dir.path(), base, 60, 3, 50, |o| 1_000 + o);
                match index_every {
                    Some(every) => {
                        let mut index = Vec::new();
                        for (i, (h, pos)) in headers(&log).iter().zip(positions(&log)).enumerate() {
                            if i % every == 0 {
                                let rel = (h.last_offset() - base) as u32;
                                index.extend_from_slice(&rel.to_be_bytes());
                                index.extend_from_slice(&(pos as u32).to_be_bytes());
                            }
                        }
                        upload.aux = vec![("index".into(), AuxData::Bytes(Bytes::from(index)))];
                    }
                    None => upload.aux.clear(),
                }
                part.upload_segment(&mut manifest, upload).await.unwrap();
                logs.push((base, log));
            }
            let what = format!("index {index_every:?}, cache {:?}", cache.is_some());
            for offset in 0..540 {
                let (base, log) = &logs[(offset / 180) as usize];
                let batch = (offset - base) / 3;
                let from = positions(log)[batch as usize];
                let got = part.read(&manifest, offset, 1_000, true).await.unwrap();
                assert_eq!(&got[..], &log[from..from + got.len()], "{what}: {offset}");
                assert_eq!(batch_offsets(&got)[0], base + batch * 3, "{what}: {offset}");
                let got = part.read(&manifest, offset, 1 << 20, false).await.unwrap();
                assert_eq!(&got[..], &log[from..], "{what}: {offset}");
                if offset % 17 == 0 {
                    assert_eq!(
                        pair(
                            part.offset_for_timestamp(&manifest, 1_000 + offset, 0)
                                .await
                                .unwrap()
                        ),
                        Some((1_000 + offset, offset)),
                        "{what}: {offset}"
                    );
                }
            }
            let all: Vec<u8> = logs.iter().flat_map(|(_, log)| log.clone()).collect();
            assert_eq!(consume(&part, &manifest, 0, 700).await, all, "{what}");
        }
    }
}

/// A batch larger than a read's first window makes the read start again from a later
/// position; the batch found there must still follow the ones walked before.
#[tokio::test]
async fn a_read_started_again_keeps_checking_offsets() {
    for cache in [None, Some(RemoteReadCache::new(1 << 20, 1024))] {
        let store = TierStore::open("memory://", &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut part = RemotePartition::new(&store, "t", "id", 0);
        if let Some(cache) = cache.clone() {
            part = part.with_cache(cache);
        }
        let mut manifest = part.load_manifest().await.unwrap();
        // Eight batches of one 100 KB record, without an index: every read walks from 0.
        let (mut upload, mut bytes) = write_segment_with(dir.path(), 0, 8, 1, 100_000, |o| o);
        upload.aux.clear();
        let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
        for offset in 0..8 {
            assert_eq!(
                batch_offsets(&part.read(&manifest, offset, 100, true).await.unwrap()),
                vec![offset]
            );
        }
        // Batch 2 says 3: inside the segment, only its place in the chain gives it away.
        let at = positions(&bytes);
        bytes[at[2] + 7] ^= 0x01;
        replace_log(&store, &cache, &seg, bytes).await;
        for offset in [2, 3, 5] {
            assert_corrupt(
                part.read(&manifest, offset, 100, true).await,
                &format!("cache {:?}: read at {offset}", cache.is_some()),
            );
        }
        // The batch before it is never walked past.
        assert_eq!(
            batch_offsets(&part.read(&manifest, 1, 100, true).await.unwrap()),
            vec![1]
        );
    }
}

/// The folder of partition `partition` of topic `t-id` in a `file://` store scoped under
/// `cluster-a`, rooted at `root`.
fn local_partition_dir(root: &FsPath, partition: i32) -> std::path::PathBuf {
    root.join("tier")
        .join("cluster-a")
        .join("t-id")
        .join(partition.to_string())
}

/// A `file://` store killed mid-write leaves `<object>#<n>` staging files, which its listings
/// hide: the orphan cleanup deletes them (and counts them).
#[tokio::test]
async fn staging_files_of_a_crash_are_cleaned_in_a_local_folder() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/tier", root.path().display());
    let store = TierStore::open(&url, &[]).unwrap().scoped("cluster-a");
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "t", "id", 1);
    let mut manifest = part.load_manifest().await.unwrap();
    let (upload, _) = write_segment(dir.path(), 0, 3, 10);
    let seg = part.upload_segment(&mut manifest, upload).await.unwrap();
    let local = local_partition_dir(root.path(), 1);
    assert!(local.join(format!("{:020}-{}.log", 0, seg.id)).is_file());
    // A segment upload and a manifest write cut short.
    let staging = [
        format!("{:020}-deadbeef.log#1", 30),
        format!("{:020}-deadbeef.index#2", 30),
        "manifest.json#1".to_string(),
    ];
    for name in &staging {
        std::fs::write(local.join(name), b"partial").unwrap();
    }
    // The store does not list them.
    let listed: Vec<_> = store
        .store
        .list(Some(&store.path(&["t-id", "1"])))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(part.clean_orphans(&manifest).await.unwrap(), 3);
    for name in &staging {
        assert!(!local.join(name).exists(), "{name}");
    }
    assert_eq!(part.clean_orphans(&manifest).await.unwrap(), 0);
    assert_eq!(part.load_manifest().await.unwrap(), manifest);
    assert_eq!(
        batch_offsets(&part.read(&manifest, 0, 1 << 20, false).await.unwrap()),
        vec![0, 10, 20]
    );

    // A crash in a partition's first upload: only a staging file; cleaning it leaves no
    // folder behind (the topic's folder stays, partition 1 is in it).
    let first = RemotePartition::new(&store, "t", "id", 2);
    let local = local_partition_dir(root.path(), 2);
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join(format!("{:020}-0ddba11.log#1", 0)), b"x").unwrap();
    let empty = first.load_manifest().await.unwrap();
    assert_eq!(first.clean_orphans(&empty).await.unwrap(), 1);
    assert!(!local.exists());
    assert!(local_partition_dir(root.path(), 1).is_dir());

    // Other stores have no staging files: the memory store's cleanup is unchanged.
    let memory = TierStore::open("memory://", &[]).unwrap();
    let part = RemotePartition::new(&memory, "t", "id", 1);
    assert_eq!(part.clean_orphans(&RemoteManifest::new()).await.unwrap(), 0);
}

/// Deleting a topic from a `file://` store deletes the staging files in its folder too, and
/// the folder.
#[tokio::test]
async fn staging_files_go_with_a_deleted_topic_in_a_local_folder() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/tier", root.path().display());
    let store = TierStore::open(&url, &[]).unwrap().scoped("cluster-a");
    let dir = tempfile::tempdir().unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let topic_dir = root.path().join("tier/cluster-a").join(format!("t-{id}"));
    for p in 0..2 {
        let part = RemotePartition::new(&store, "t", id, p);
        let mut manifest = part.load_manifest().await.unwrap();
        let (upload, _) = write_segment(dir.path(), 0, 2, 10);
        part.upload_segment(&mut manifest, upload).await.unwrap();
        std::fs::write(
            topic_dir
                .join(p.to_string())
                .join(format!("{:020}-deadbeef.log#1", 20)),
            b"partial",
        )
        .unwrap();
    }
    // A partition whose only file is a staging file, which listings do not show at all.
    std::fs::create_dir_all(topic_dir.join("2")).unwrap();
    std::fs::write(topic_dir.join("2/manifest.json#1"), b"{").unwrap();
    // Another topic's staging file is not touched.
    let other = root
        .path()
        .join("tier/cluster-a/u-fedcba9876543210fedcba9876543210/0");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("manifest.json#1"), b"{").unwrap();

    assert_eq!(
        store.list_topic_dirs().await.unwrap(),
        vec![
            ("t".to_string(), id.to_string()),
            (
                "u".to_string(),
                "fedcba9876543210fedcba9876543210".to_string()
            )
        ]
    );
    // Two partitions of a manifest, a .log and an .index; three staging files.
    assert_eq!(store.delete_topic_dir("t", id).await.unwrap(), 6 + 3);
    assert!(!topic_dir.exists());
    assert_eq!(store.delete_topic_dir("t", id).await.unwrap(), 0);
    assert!(other.join("manifest.json#1").is_file());
    assert_eq!(
        store.list_topic_dirs().await.unwrap(),
        vec![(
            "u".to_string(),
            "fedcba9876543210fedcba9876543210".to_string()
        )]
    );
}

/// A segment with a gap between offsets (what log compaction leaves), with and without the
/// manifest's `compacted` flag: only a compacted segment may have one.
#[tokio::test]
async fn offset_gaps_are_corruption_unless_the_segment_was_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut upload, log) = write_segment(dir.path(), 0, 3, 10);
    // Drop the middle batch: offsets 10..=19 are gone, as after compaction.
    let sizes: Vec<usize> = headers(&log).iter().map(|h| h.size_bytes()).collect();
    let mut gapped = log[..sizes[0]].to_vec();
    gapped.extend_from_slice(&log[sizes[0] + sizes[1]..]);
    std::fs::write(&upload.log, &gapped).unwrap();
    upload.aux.clear();
    for compacted in [true, false] {
        let store = TierStore::open("memory://", &[]).unwrap();
        let part = RemotePartition::new(&store, "t", "id", 0);
        let mut manifest = part.load_manifest().await.unwrap();
        upload.compacted = compacted;
        part.upload_segment(&mut manifest, upload.clone())
            .await
            .unwrap();
        let read = part.read(&manifest, 0, 1 << 20, true).await;
        if compacted {
            assert_eq!(batch_offsets(&read.unwrap()), vec![0, 20]);
            let from_gap = part.read(&manifest, 12, 1 << 20, true).await.unwrap();
            assert_eq!(batch_offsets(&from_gap), vec![20]);
        } else {
            assert!(matches!(read, Err(TierError::Corrupt(_))), "{read:?}");
        }
    }
}
