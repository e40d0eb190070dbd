//! Upload, read back, corruption, deletion and orphan cleanup, against the in-memory store and
//! a real local folder.

use std::path::Path as FsPath;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::{ObjectStoreExt, PutPayload};
use strata_log::RecordBatchHeader;

use crate::*;

/// Writes a segment of `batches` batches of `per_batch` records (offsets from `base`, 200-byte
/// values) with an offset index entry per batch; returns the upload and the file's bytes.
fn write_segment(
    dir: &FsPath,
    base: i64,
    batches: i64,
    per_batch: i64,
) -> (SegmentUpload, Vec<u8>) {
    let mut log = Vec::new();
    let mut index = Vec::new();
    for b in 0..batches {
        let first = base + b * per_batch;
        let records: Vec<Record> = (0..per_batch)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: first + i,
                // The encoder batches records whose offset - sequence is the same.
                sequence: (first + i) as i32,
                timestamp: 1_000 + first + i,
                key: None,
                value: Some(Bytes::from(vec![(first + i) as u8; 200])),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        index.extend_from_slice(&((first - base) as u32).to_be_bytes());
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
        max_timestamp_ms: 1_000 + base + batches * per_batch - 1,
        leader_epochs: vec![(0, base)],
        log: log_path,
        aux: vec![("index".into(), index_path)],
    };
    (upload, log)
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

async fn round_trip(store: TierStore) {
    let dir = tempfile::tempdir().unwrap();
    let part = RemotePartition::new(&store, "orders", "AAAAAAAAAAAAAAAAAAAAAA", 3);
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
    round_trip(TierStore::open("memory://", &[]).unwrap()).await;
}

#[tokio::test]
async fn round_trip_in_a_local_folder() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/tier", root.path().display());
    round_trip(TierStore::open(&url, &[]).unwrap()).await;
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
    let object = store.path(&["t-id", "0", &format!("{:020}-{}.log", 0, seg.id)]);
    store
        .store
        .put(&object, PutPayload::from(bytes))
        .await
        .unwrap();
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
    let store = TierStore::open("s3://strata/cluster-a", &options).unwrap();
    round_trip(store.clone()).await;
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
}
