//! Behavioural tests of `Log` against a real directory.

use std::path::Path;

use crate::test_util::{edited, headers, timed_batch, BatchBuilder, TimestampOffsetPair};
use crate::{Log, LogConfig, LogError, TimestampAndOffset, TimestampType};

const NOW_MS: i64 = 1_700_000_000_000;

fn open(dir: &Path, cfg: LogConfig, clean: bool) -> Log {
    Log::open(dir, cfg, clean, NOW_MS).expect("open log")
}

fn batch(n: usize) -> Vec<u8> {
    BatchBuilder::new(n).timestamp(NOW_MS).build()
}

fn log_files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

#[test]
fn append_assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    let a = log.append_as_leader(&batch(3), 5, NOW_MS).expect("append");
    assert_eq!(
        (a.first_offset, a.last_offset, a.records_count, a.duplicate),
        (0, 2, 3, false)
    );
    assert_eq!(a.log_append_time_ms, -1);
    let b = log.append_as_leader(&batch(2), 5, NOW_MS).expect("append");
    assert_eq!((b.first_offset, b.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.high_watermark(), 5);

    let r = log.read(0, 1 << 20, false).expect("read");
    let hs = headers(&r.records);
    assert_eq!(hs.len(), 2);
    assert_eq!((hs[0].base_offset, hs[0].partition_leader_epoch), (0, 5));
    assert_eq!((hs[1].base_offset, hs[1].last_offset()), (3, 4));
    assert_eq!(r.high_watermark, 5);

    // Middle of a batch returns from the start of that batch.
    let r = log.read(4, 1 << 20, false).expect("read");
    assert_eq!(headers(&r.records)[0].base_offset, 3);
    // At log end: empty.
    assert!(log
        .read(5, 1 << 20, false)
        .expect("read")
        .records
        .is_empty());
    // Out of range.
    assert!(matches!(
        log.read(6, 100, false),
        Err(LogError::OffsetOutOfRange { offset: 6, .. })
    ));
    assert!(matches!(
        log.read(-1, 100, false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.latest_epoch(), Some(5));
}

#[test]
fn max_bytes_and_at_least_one_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    let first = batch(3);
    let size = first.len();
    log.append_as_leader(&first, 0, NOW_MS).expect("append");
    log.append_as_leader(&batch(3), 0, NOW_MS).expect("append");
    // Room for one and a half batches: only whole batches are returned.
    let r = log.read(0, size + size / 2, false).expect("read");
    assert_eq!(r.records.len(), size);
    // Smaller than one batch.
    assert!(log.read(0, 10, false).expect("read").records.is_empty());
    let r = log.read(0, 10, true).expect("read");
    assert_eq!(headers(&r.records).len(), 1);
    assert_eq!(r.records.len(), size);
}

#[test]
fn invalid_batches_are_rejected_and_nothing_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        max_message_bytes: 500,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, false);
    log.append_as_leader(&batch(1), 0, NOW_MS).expect("append");
    let before = log.snapshot();

    let mut bad_crc = batch(2);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(
        log.append_as_leader(&bad_crc, 0, NOW_MS),
        Err(LogError::CorruptRecord(_))
    ));

    let mut old_magic = batch(2);
    old_magic[16] = 1;
    assert!(matches!(
        log.append_as_leader(&old_magic, 0, NOW_MS),
        Err(LogError::UnsupportedMagic(1))
    ));

    let mismatch = BatchBuilder::new(2)
        .timestamp(NOW_MS)
        .override_count(3)
        .build();
    assert!(matches!(
        log.append_as_leader(&mismatch, 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));

    let big = BatchBuilder::new(1)
        .timestamp(NOW_MS)
        .value_size(600)
        .build();
    assert!(matches!(
        log.append_as_leader(&big, 0, NOW_MS),
        Err(LogError::RecordTooLarge { max_bytes: 500, .. })
    ));

    let control = BatchBuilder::new(1)
        .timestamp(NOW_MS)
        .attributes(0x20)
        .build();
    assert!(matches!(
        log.append_as_leader(&control, 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));

    let future = BatchBuilder::new(1).timestamp(NOW_MS + 3_600_001).build();
    assert!(matches!(
        log.append_as_leader(&future, 0, NOW_MS),
        Err(LogError::InvalidRecords {
            invalid_timestamp: true,
            ..
        })
    ));

    // Truncated batch / trailing partial batch.
    let good = batch(1);
    assert!(matches!(
        log.append_as_leader(&good[..good.len() - 1], 0, NOW_MS),
        Err(LogError::CorruptRecord(_))
    ));
    let mut two = batch(1);
    two.extend_from_slice(&bad_crc[..30]);
    assert!(log.append_as_leader(&two, 0, NOW_MS).is_err());
    // Second batch invalid: the first is not written either.
    let mut mixed = batch(1);
    mixed.extend_from_slice(&bad_crc);
    assert!(log.append_as_leader(&mixed, 0, NOW_MS).is_err());
    assert!(matches!(
        log.append_as_leader(&[], 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));

    assert_eq!(log.snapshot(), before);
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn multiple_batches_in_one_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    let mut req = batch(2);
    req.extend_from_slice(&batch(3));
    let info = log.append_as_leader(&req, 1, NOW_MS).expect("append");
    assert_eq!(
        (info.first_offset, info.last_offset, info.records_count),
        (0, 4, 5)
    );
    let hs = headers(&log.read(0, 1 << 20, false).expect("read").records);
    assert_eq!(
        hs.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        vec![0, 2]
    );
}

#[test]
fn log_append_time_rewrites_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, false);
    // Ancient CreateTime timestamp is fine: LogAppendTime topics ignore it.
    let info = log
        .append_as_leader(&BatchBuilder::new(2).timestamp(5).build(), 0, NOW_MS)
        .expect("append");
    assert_eq!(info.log_append_time_ms, NOW_MS);
    let hs = headers(&log.read(0, 1 << 20, false).expect("read").records);
    assert_eq!(hs[0].timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(hs[0].max_timestamp, NOW_MS);
    assert_eq!(hs[0].base_timestamp, 5);
}

#[test]
fn idempotent_producer_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    let b0 = BatchBuilder::new(2)
        .producer(42, 0, 0)
        .timestamp(NOW_MS)
        .build();
    let b1 = BatchBuilder::new(3)
        .producer(42, 0, 2)
        .timestamp(NOW_MS)
        .build();
    log.append_as_leader(&b0, 0, NOW_MS).expect("append");
    log.append_as_leader(&b1, 0, NOW_MS).expect("append");
    let size = log.snapshot().size_bytes;

    // Retry of either cached batch: original offsets, nothing written.
    let dup = log.append_as_leader(&b0, 0, NOW_MS).expect("dup");
    assert!(dup.duplicate);
    assert_eq!((dup.first_offset, dup.last_offset), (0, 1));
    let dup = log.append_as_leader(&b1, 0, NOW_MS).expect("dup");
    assert_eq!(
        (dup.first_offset, dup.last_offset, dup.duplicate),
        (2, 4, true)
    );
    assert_eq!(log.snapshot().size_bytes, size);
    assert_eq!(log.log_end_offset(), 5);

    let gap = BatchBuilder::new(1)
        .producer(42, 0, 6)
        .timestamp(NOW_MS)
        .build();
    assert!(matches!(
        log.append_as_leader(&gap, 0, NOW_MS),
        Err(LogError::OutOfOrderSequence(_))
    ));
    let old_epoch = BatchBuilder::new(1)
        .producer(42, -1, 5)
        .timestamp(NOW_MS)
        .build();
    assert!(matches!(
        log.append_as_leader(&old_epoch, 0, NOW_MS),
        Err(LogError::InvalidProducerEpoch(_))
    ));
    let new_epoch_bad = BatchBuilder::new(1)
        .producer(42, 1, 5)
        .timestamp(NOW_MS)
        .build();
    assert!(matches!(
        log.append_as_leader(&new_epoch_bad, 0, NOW_MS),
        Err(LogError::OutOfOrderSequence(_))
    ));
    let new_epoch = BatchBuilder::new(1)
        .producer(42, 1, 0)
        .timestamp(NOW_MS)
        .build();
    assert_eq!(
        log.append_as_leader(&new_epoch, 0, NOW_MS)
            .expect("append")
            .first_offset,
        5
    );
    assert_eq!(log.active_producers(), vec![(42, 1, 0, NOW_MS)]);
    assert_eq!(
        log.snapshot().size_bytes as usize,
        b0.len() + b1.len() + new_epoch.len()
    );
}

fn append_producer_batches(log: &mut Log) {
    let mut seq = 0;
    for n in [2usize, 3, 1] {
        let b = BatchBuilder::new(n)
            .producer(7, 3, seq)
            .timestamp(NOW_MS)
            .build();
        log.append_as_leader(&b, 0, NOW_MS).expect("append");
        seq += n as i32;
    }
}

#[test]
fn producer_state_survives_clean_and_unclean_restart() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), small_segments(), false);
        append_producer_batches(&mut log);
        let expected = log.active_producers();
        if clean {
            log.close().expect("close");
        } else {
            // Crash: no close, and remove any snapshot so state must come from batch headers.
            drop(log);
            for name in log_files(dir.path(), ".snapshot") {
                std::fs::remove_file(dir.path().join(name)).expect("rm");
            }
        }
        let mut log = open(dir.path(), small_segments(), clean);
        assert_eq!(log.active_producers(), expected, "clean={clean}");
        let retry = BatchBuilder::new(1)
            .producer(7, 3, 5)
            .timestamp(NOW_MS)
            .build();
        let dup = log.append_as_leader(&retry, 0, NOW_MS).expect("dup");
        assert!(dup.duplicate, "clean={clean}");
        assert_eq!(dup.first_offset, 5);
        let next = BatchBuilder::new(1)
            .producer(7, 3, 7)
            .timestamp(NOW_MS)
            .build();
        assert!(matches!(
            log.append_as_leader(&next, 0, NOW_MS),
            Err(LogError::OutOfOrderSequence(_))
        ));
        let next = BatchBuilder::new(1)
            .producer(7, 3, 6)
            .timestamp(NOW_MS)
            .build();
        assert_eq!(
            log.append_as_leader(&next, 0, NOW_MS)
                .expect("append")
                .first_offset,
            6
        );
    }
}

#[test]
fn segments_roll_by_size_and_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    let mut sizes = Vec::new();
    for _ in 0..30 {
        let b = batch(2);
        sizes.push(b.len());
        log.append_as_leader(&b, 0, NOW_MS).expect("append");
    }
    let snap = log.snapshot();
    assert!(
        snap.segments >= 3,
        "expected several segments, got {}",
        snap.segments
    );
    assert_eq!(snap.log_end_offset, 60);
    assert_eq!(snap.size_bytes as usize, sizes.iter().sum::<usize>());
    for name in log_files(dir.path(), ".log") {
        let len = std::fs::metadata(dir.path().join(&name))
            .expect("meta")
            .len();
        assert!(len <= 1024, "{name} is {len} bytes");
    }
    let all_before: Vec<_> = (0..60)
        .step_by(2)
        .map(|o| log.read(o, 1 << 20, false).expect("read").records)
        .collect();
    log.close().expect("close");

    for clean in [true, false] {
        let log = open(dir.path(), cfg.clone(), clean);
        assert_eq!(log.snapshot(), snap, "clean={clean}");
        for (i, o) in (0..60).step_by(2).enumerate() {
            let r = log.read(o, 1 << 20, false).expect("read");
            assert_eq!(r.records, all_before[i], "offset {o} clean={clean}");
            assert_eq!(headers(&r.records)[0].base_offset, o);
        }
        // Reads never span segments.
        let r = log.read(0, 1 << 20, false).expect("read");
        assert!(r.records.len() <= 1024);
        log.close().expect("close");
    }
}

#[test]
fn unclean_open_rebuilds_deleted_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    for _ in 0..20 {
        log.append_as_leader(&batch(2), 0, NOW_MS).expect("append");
    }
    let index_sizes: Vec<_> = log_files(dir.path(), ".index")
        .into_iter()
        .map(|n| std::fs::metadata(dir.path().join(n)).expect("meta").len())
        .collect();
    assert!(index_sizes.iter().any(|s| *s > 0));
    drop(log);
    // Unflushed crash: state file says recovery point is old; indexes are gone.
    for name in log_files(dir.path(), ".index") {
        std::fs::remove_file(dir.path().join(name)).expect("rm");
    }
    let log = open(dir.path(), cfg.clone(), false);
    assert_eq!(log.log_end_offset(), 40);
    let rebuilt: Vec<_> = log_files(dir.path(), ".index")
        .into_iter()
        .map(|n| std::fs::metadata(dir.path().join(n)).expect("meta").len())
        .collect();
    // Segments below the recovery point are rebuilt lazily; the active one eagerly.
    assert_eq!(rebuilt.last(), index_sizes.last());
    for o in 0..40 {
        let r = log.read(o, 1 << 20, false).expect("read");
        let h = &headers(&r.records)[0];
        assert!(h.base_offset <= o && o <= h.last_offset());
    }
}

#[test]
fn clean_open_detects_broken_index_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    for _ in 0..20 {
        log.append_as_leader(&batch(2), 0, NOW_MS).expect("append");
    }
    log.close().expect("close");
    // Tear every index file by one byte.
    for name in log_files(dir.path(), "index") {
        let p = dir.path().join(name);
        let len = std::fs::metadata(&p).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(len + 1))
            .expect("extend");
    }
    let mut log = open(dir.path(), cfg, true);
    assert_eq!(log.log_end_offset(), 40);
    for o in 0..40 {
        let r = log.read(o, 1 << 20, false).expect("read");
        let h = &headers(&r.records)[0];
        assert!(h.base_offset <= o && o <= h.last_offset());
    }
    assert_eq!(
        log.offset_for_timestamp(NOW_MS).expect("lookup").pair(),
        Some((NOW_MS, 0))
    );
    log.append_as_leader(&batch(1), 0, NOW_MS).expect("append");
}

#[test]
fn clean_open_does_not_scan_inactive_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    for _ in 0..30 {
        log.append_as_leader(&batch(2), 0, NOW_MS).expect("append");
    }
    log.close().expect("close");
    // Corrupt a record byte (CRC-protected) in the oldest segment: a scan would truncate there.
    let first = dir.path().join(&log_files(dir.path(), ".log")[0]);
    let mut bytes = std::fs::read(&first).expect("read");
    let len = bytes.len();
    bytes[len - 5] ^= 0xff;
    std::fs::write(&first, &bytes).expect("write");
    let log = open(dir.path(), cfg.clone(), true);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(std::fs::metadata(&first).expect("meta").len() as usize, len);
    drop(log);
    // The unclean open after that (no close) recovers only from the recovery point,
    // which is past the oldest segment.
    let log = open(dir.path(), cfg, false);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(std::fs::metadata(&first).expect("meta").len() as usize, len);
}

/// The recovery test required by the issue: a torn last batch at every byte length.
#[test]
fn recovery_truncates_torn_last_batch_at_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        index_interval_bytes: 50,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg.clone(), false);
    let mut batch_sizes = Vec::new();
    for n in 1..=4 {
        let b = BatchBuilder::new(n)
            .producer(9, 0, ((n - 1) * n / 2) as i32)
            .timestamp(NOW_MS)
            .build();
        batch_sizes.push(b.len());
        log.append_as_leader(&b, 0, NOW_MS).expect("append");
    }
    let intact = log.read(0, 1 << 20, false).expect("read").records;
    drop(log);
    let log_path = dir.path().join(format!("{:020}.log", 0));
    let full = std::fs::read(&log_path).expect("read log");
    let last_size = *batch_sizes.last().expect("batches");
    let complete_len = full.len() - last_size;
    let backup = tempfile::tempdir().expect("tempdir");
    for f in std::fs::read_dir(dir.path()).expect("readdir") {
        let f = f.expect("entry");
        std::fs::copy(f.path(), backup.path().join(f.file_name())).expect("backup");
    }
    for cut in complete_len..full.len() {
        // Restore the pristine directory, then tear the log.
        for f in std::fs::read_dir(dir.path()).expect("readdir") {
            std::fs::remove_file(f.expect("entry").path()).expect("rm");
        }
        for f in std::fs::read_dir(backup.path()).expect("readdir") {
            let f = f.expect("entry");
            std::fs::copy(f.path(), dir.path().join(f.file_name())).expect("restore");
        }
        std::fs::write(&log_path, &full[..cut]).expect("tear");
        let mut log = open(dir.path(), cfg.clone(), false);
        assert_eq!(log.log_end_offset(), 6, "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&log_path).expect("meta").len() as usize,
            complete_len
        );
        let r = log.read(0, 1 << 20, false).expect("read");
        assert_eq!(&r.records[..], &intact[..complete_len], "cut at {cut}");
        // The producer's last batch (seq 6..=9) is gone, so it may be re-sent.
        let resend = BatchBuilder::new(4)
            .producer(9, 0, 6)
            .timestamp(NOW_MS)
            .build();
        let info = log
            .append_as_leader(&resend, 0, NOW_MS)
            .expect("append after recovery");
        assert_eq!((info.first_offset, info.duplicate), (6, false));
        let r = log.read(6, 1 << 20, false).expect("read");
        assert_eq!(headers(&r.records)[0].records_count, 4);
    }
}

#[test]
fn recovery_truncates_garbage_after_last_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    for _ in 0..3 {
        log.append_as_leader(&batch(2), 0, NOW_MS).expect("append");
    }
    let intact = log.read(0, 1 << 20, false).expect("read").records;
    drop(log);
    let log_path = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&log_path).expect("read");
    bytes.extend_from_slice(&[0xAB; 100]);
    std::fs::write(&log_path, &bytes).expect("write");
    // Even a caller claiming a clean shutdown gets recovery: close() never ran.
    let mut log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.read(0, 1 << 20, false).expect("read").records, intact);
    assert_eq!(
        std::fs::metadata(&log_path).expect("meta").len() as usize,
        intact.len()
    );
    assert_eq!(
        log.append_as_leader(&batch(1), 0, NOW_MS)
            .expect("append")
            .first_offset,
        6
    );
}

#[test]
fn recovery_drops_corrupt_middle_and_later_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    let b = batch(2);
    for _ in 0..30 {
        log.append_as_leader(&b, 0, NOW_MS).expect("append");
    }
    let segments = log_files(dir.path(), ".log");
    assert!(segments.len() >= 3);
    drop(log);
    // Pretend nothing was ever flushed, then flip a byte in the second batch of the first segment.
    std::fs::remove_file(dir.path().join(crate::log::STATE_FILE)).expect("rm state");
    let first = dir.path().join(&segments[0]);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[b.len() + 70] ^= 0xff;
    std::fs::write(&first, &bytes).expect("write");
    let log = open(dir.path(), cfg, false);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.snapshot().segments, 1);
    assert_eq!(log_files(dir.path(), ".log").len(), 1);
}

#[test]
fn offset_for_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 400,
        ..small_segments()
    };
    let mut log = open(dir.path(), cfg.clone(), false);
    assert_eq!(log.max_timestamp_and_offset().expect("max").pair(), None);
    assert_eq!(log.offset_for_timestamp(0).expect("lookup").pair(), None);
    // Batch i (2 records) has timestamps NOW+10i, NOW+10i+1; batch 7 is the max.
    let order = [0i64, 1, 2, 3, 4, 5, 6, 9, 7, 8];
    for i in order {
        let b = BatchBuilder::new(2)
            .timestamp(NOW_MS - 1000 + 10 * i)
            .build();
        log.append_as_leader(&b, 0, NOW_MS).expect("append");
    }
    assert!(log.snapshot().segments > 1);
    // Answers name the record, not its batch (Kafka's `LogSegment.findOffsetByTimestamp`).
    let check = |log: &Log| {
        let at = |ts| log.offset_for_timestamp(ts).expect("lookup").pair();
        let t = |delta| NOW_MS - 1000 + delta;
        // The second record of batch "9" (offsets 14, 15) holds the max timestamp.
        assert_eq!(
            log.max_timestamp_and_offset().expect("max").pair(),
            Some((t(91), 15))
        );
        assert_eq!(at(0), Some((t(0), 0)));
        // Inside a batch: its second record.
        assert_eq!(at(t(1)), Some((t(1), 1)));
        assert_eq!(at(t(31)), Some((t(31), 7)));
        assert_eq!(at(t(32)), Some((t(40), 8)));
        // 75 first reached by batch "9" at offset 14.
        assert_eq!(at(t(75)), Some((t(90), 14)));
        assert_eq!(at(t(91)), Some((t(91), 15)));
        assert_eq!(
            log.offset_for_timestamp(NOW_MS).expect("lookup").pair(),
            None
        );
    };
    check(&log);
    log.close().expect("close");
    let log = open(dir.path(), cfg, true);
    check(&log);
}

#[test]
fn lookups_by_timestamp_read_compressed_batches_and_log_append_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments(), false);
    let t = |delta| NOW_MS - 1000 + delta;
    // Offsets 0..=2 gzip, 3..=5 zstd; the max (t(40)) is at offset 4.
    log.append_as_leader(
        &timed_batch(&[(None, t(0)), (None, t(20)), (None, t(10))], 1),
        0,
        NOW_MS,
    )
    .expect("append");
    log.append_as_leader(
        &timed_batch(&[(None, t(30)), (None, t(40)), (None, t(35))], 4),
        0,
        NOW_MS,
    )
    .expect("append");
    assert_eq!(
        log.offset_for_timestamp(t(15)).expect("lookup").pair(),
        Some((t(20), 1))
    );
    assert_eq!(
        log.offset_for_timestamp(t(36)).expect("lookup").pair(),
        Some((t(40), 4))
    );
    assert_eq!(
        log.max_timestamp_and_offset().expect("max").pair(),
        Some((t(40), 4))
    );

    // LogAppendTime: every record of a batch has its append time; the first one answers.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..small_segments()
    };
    let mut log = open(dir.path(), cfg, false);
    log.append_as_leader(&timed_batch(&[(None, 1), (None, 2)], 0), 0, NOW_MS)
        .expect("append");
    log.append_as_leader(&timed_batch(&[(None, 1), (None, 2)], 3), 0, NOW_MS + 5)
        .expect("append");
    assert_eq!(
        log.offset_for_timestamp(NOW_MS + 1).expect("lookup").pair(),
        Some((NOW_MS + 5, 2))
    );
    assert_eq!(
        log.max_timestamp_and_offset().expect("max").pair(),
        Some((NOW_MS + 5, 2))
    );
}

#[test]
fn lookups_answer_the_leader_epoch_of_the_record_found() {
    // Kafka answers the epoch of the batch holding the record (`FileRecords.searchForTimestamp`,
    // `batch.partitionLeaderEpoch`), not the partition's current one: clients keep it with the
    // offset to detect truncation (KIP-320).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments(), false);
    let t = |delta| NOW_MS - 1000 + delta;
    // Offsets 0..=1 in epoch 2, 2..=3 in epoch 5 (zstd), 4..=5 in epoch 7.
    for (epoch, codec, timestamps) in [
        (2, 0u8, [t(0), t(10)]),
        (5, 4, [t(40), t(20)]),
        (7, 0, [t(30), t(35)]),
    ] {
        let records: Vec<(Option<&str>, i64)> = timestamps.iter().map(|&ts| (None, ts)).collect();
        log.append_as_leader(&timed_batch(&records, codec), epoch, NOW_MS)
            .expect("append");
    }
    let found = |ts| {
        log.offset_for_timestamp(ts)
            .expect("lookup")
            .expect("found")
    };
    assert_eq!(
        found(t(5)),
        TimestampAndOffset {
            timestamp_ms: t(10),
            offset: 1,
            leader_epoch: Some(2)
        }
    );
    assert_eq!(found(t(15)).leader_epoch, Some(5));
    assert_eq!(
        (found(t(31)).offset, found(t(31)).leader_epoch),
        (2, Some(5))
    );
    assert_eq!(
        log.max_timestamp_and_offset().expect("max"),
        Some(TimestampAndOffset {
            timestamp_ms: t(40),
            offset: 2,
            leader_epoch: Some(5)
        })
    );
    // The cache's answers for EARLIEST, EARLIEST_LOCAL and LATEST_TIERED (Kafka's
    // `epochForOffset`, the earliest entry at or below the log start).
    assert_eq!(log.log_start_epoch(), Some(2));
    let epochs: Vec<Option<i32>> = (0..7).map(|o| log.epoch_for_offset(o)).collect();
    assert_eq!(
        epochs,
        [
            Some(2),
            Some(2),
            Some(5),
            Some(5),
            Some(7),
            Some(7),
            Some(7)
        ]
    );
    // DeleteRecords past the max record: the answer moves to the log start, in its epoch.
    log.set_high_watermark(log.log_end_offset());
    log.delete_records_before(3).expect("delete");
    assert_eq!(log.log_start_epoch(), Some(5));
    assert_eq!(
        log.max_timestamp_and_offset().expect("max"),
        Some(TimestampAndOffset {
            timestamp_ms: t(40),
            offset: 3,
            leader_epoch: Some(5)
        })
    );
    log.delete_records_before(4).expect("delete");
    assert_eq!(
        log.max_timestamp_and_offset()
            .expect("max")
            .map(|f| (f.offset, f.leader_epoch)),
        Some((4, Some(7)))
    );
}

#[test]
fn a_batch_is_stored_with_its_records_max_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments(), false);
    // The producer's header says NOW - 100; the records' max is NOW - 3.
    for codec in [0u8, 4] {
        let lying = edited(
            timed_batch(
                &[(None, NOW_MS - 7), (None, NOW_MS - 3), (None, NOW_MS - 9)],
                codec,
            ),
            |b| b[35..43].copy_from_slice(&(NOW_MS - 100).to_be_bytes()),
        );
        let first = log
            .append_as_leader(&lying, 0, NOW_MS)
            .expect("append")
            .first_offset;
        let stored = log.read(first, 1 << 20, false).expect("read").records;
        let h = &headers(&stored)[0];
        assert_eq!(h.max_timestamp, NOW_MS - 3, "codec {codec}");
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        // The time index agrees: the lookup finds the record.
        assert_eq!(
            log.offset_for_timestamp(NOW_MS - 4).expect("lookup").pair(),
            Some((NOW_MS - 3, 1))
        );
    }
}

#[test]
fn refused_records_leave_the_log_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        timestamp_after_max_ms: 1_000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, false);
    let future = timed_batch(&[(None, NOW_MS), (None, NOW_MS + 5_000), (None, NOW_MS)], 4);
    let refused = log
        .append_as_leader(&future, 0, NOW_MS)
        .expect_err("refused");
    assert_eq!(refused.kafka_error_code(), 32);
    let named: Vec<_> = refused
        .record_errors()
        .iter()
        .map(|r| r.batch_index)
        .collect();
    assert_eq!(named, vec![1]);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.snapshot().size_bytes, 0);
}

#[test]
fn retention_by_time_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    // Old data first, then new data.
    for i in 0..20 {
        let ts = if i < 10 { NOW_MS - 10_000 } else { NOW_MS };
        log.append_as_leader(&BatchBuilder::new(2).timestamp(ts).build(), 0, NOW_MS)
            .expect("append");
    }
    let before = log.snapshot();
    assert_eq!(log.apply_retention(NOW_MS).expect("retention"), 0);
    log.set_config(LogConfig {
        retention_ms: 5_000,
        ..cfg.clone()
    });
    let deleted = log.apply_retention(NOW_MS).expect("retention");
    assert!(deleted >= 1);
    let after = log.snapshot();
    assert_eq!(after.segments, before.segments - deleted);
    assert!(after.log_start_offset > 0 && after.log_start_offset <= 20);
    assert_eq!(log_files(dir.path(), ".log").len(), after.segments);
    assert_eq!(log_files(dir.path(), ".index").len(), after.segments);
    assert!(matches!(
        log.read(0, 100, false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(!log
        .read(after.log_start_offset, 1 << 20, false)
        .expect("read")
        .records
        .is_empty());

    // Bytes: keep at most ~1.5 segments' worth.
    log.set_config(LogConfig {
        retention_bytes: 1500,
        ..cfg.clone()
    });
    log.apply_retention(NOW_MS).expect("retention");
    let s = log.snapshot();
    assert!(s.size_bytes <= 1500, "size {}", s.size_bytes);
    assert_eq!(s.log_end_offset, 40);
    // Everything expired: the active segment is rolled and deleted too, leaving an empty log.
    log.set_config(LogConfig {
        retention_ms: 0,
        ..cfg.clone()
    });
    log.apply_retention(NOW_MS + 10).expect("retention");
    let s = log.snapshot();
    assert_eq!(
        (
            s.log_start_offset,
            s.log_end_offset,
            s.size_bytes,
            s.segments
        ),
        (40, 40, 0, 1)
    );
    log.append_as_leader(&batch(1), 0, NOW_MS).expect("append");
    log.close().expect("close");
    let log = open(dir.path(), cfg, true);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 41));
}

#[test]
fn delete_records_is_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small_segments();
    let mut log = open(dir.path(), cfg.clone(), false);
    for _ in 0..30 {
        log.append_as_leader(&batch(2), 0, NOW_MS).expect("append");
    }
    let segments_before = log.snapshot().segments;
    assert!(matches!(
        log.delete_records_before(61),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.delete_records_before(-2),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(33).expect("delete"), 33);
    assert_eq!(log.delete_records_before(10).expect("no-op"), 33);
    assert!(log.snapshot().segments < segments_before);
    assert!(matches!(
        log.read(32, 100, false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Offset 33 is inside a batch starting at 32: whole batch returned.
    let r = log.read(33, 1 << 20, false).expect("read");
    assert_eq!(headers(&r.records)[0].base_offset, 32);
    drop(log); // unclean
    let mut log = open(dir.path(), cfg.clone(), false);
    assert_eq!(log.log_start_offset(), 33);
    assert_eq!(log.delete_records_before(-1).expect("delete to hw"), 60);
    log.close().expect("close");
    let log = open(dir.path(), cfg, true);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (60, 60));
}

#[test]
fn leader_epochs_track_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
    log.append_as_leader(&batch(2), 1, NOW_MS).expect("append");
    log.append_as_leader(&batch(2), 1, NOW_MS).expect("append");
    log.append_as_leader(&batch(3), 3, NOW_MS).expect("append");
    assert_eq!(log.end_offset_for_epoch(1), (1, 4));
    assert_eq!(log.end_offset_for_epoch(2), (1, 4));
    assert_eq!(log.end_offset_for_epoch(3), (3, 7));
    assert_eq!(log.end_offset_for_epoch(0), (0, 0));
    assert_eq!(log.end_offset_for_epoch(4), (-1, -1));
    log.close().expect("close");
    let log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(log.latest_epoch(), Some(3));
    assert_eq!(log.end_offset_for_epoch(1), (1, 4));
}

#[test]
fn flush_messages_and_flush_ms_advance_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        flush_messages: 4,
        flush_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, false);
    log.append_as_leader(&batch(3), 0, NOW_MS).expect("append");
    assert_eq!(log.recovery_point(), 0);
    log.append_as_leader(&batch(1), 0, NOW_MS).expect("append");
    assert_eq!(log.recovery_point(), 4);
    log.append_as_leader(&batch(1), 0, NOW_MS).expect("append");
    log.maybe_flush(NOW_MS + 999).expect("maybe flush");
    assert_eq!(log.recovery_point(), 4);
    log.maybe_flush(NOW_MS + 1000).expect("maybe flush");
    assert_eq!(log.recovery_point(), 5);
}

#[test]
fn segment_ms_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, false);
    log.append_as_leader(&batch(1), 0, NOW_MS).expect("append");
    log.maybe_flush(NOW_MS + 1000).expect("tick");
    assert_eq!(log.snapshot().segments, 1);
    log.maybe_flush(NOW_MS + 1001).expect("tick");
    assert_eq!(log.snapshot().segments, 2);
    // Lazily at append time too.
    log.append_as_leader(&batch(1), 0, NOW_MS + 2000)
        .expect("append");
    log.append_as_leader(&batch(1), 0, NOW_MS + 3001)
        .expect("append");
    assert_eq!(log.snapshot().segments, 3);
}

#[test]
fn index_full_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_index_bytes: 24, // two time-index entries
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg, false);
    for i in 0..10 {
        log.append_as_leader(
            &BatchBuilder::new(1).timestamp(NOW_MS + i).build(),
            0,
            NOW_MS,
        )
        .expect("append");
    }
    assert!(log.snapshot().segments >= 3, "{:?}", log.snapshot());
}

#[test]
fn producer_expiration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    append_producer_batches(&mut log);
    log.maybe_flush(NOW_MS + 1000).expect("tick");
    assert_eq!(log.active_producers().len(), 1);
    log.set_producer_id_expiration_ms(1000);
    log.maybe_flush(NOW_MS + 1000).expect("tick");
    assert!(log.active_producers().is_empty());
}

#[test]
fn log_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default(), false);
    is_send(&log);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn append_never_panics_on_random_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default(), false);
        let _ = log.append_as_leader(&bytes, 0, NOW_MS);
    }

    #[test]
    fn append_never_panics_on_mutated_batches(
        flips in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..6),
        fix_crc in proptest::bool::ANY,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default(), false);
        let mut b = BatchBuilder::new(3).producer(1, 0, 0).timestamp(NOW_MS).build();
        for (pos, v) in flips {
            let len = b.len();
            b[pos % len] = v;
        }
        if fix_crc && b.len() > 21 {
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        let before = log.log_end_offset();
        match log.append_as_leader(&b, 0, NOW_MS) {
            Ok(info) => proptest::prop_assert!(info.last_offset >= info.first_offset),
            Err(_) => proptest::prop_assert_eq!(log.log_end_offset(), before),
        }
    }
}
