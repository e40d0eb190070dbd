//! Tiered logs: upload candidates, local retention limited to uploaded segments, reads below
//! the local log start, and the log start surviving a restart below the first local segment.

use std::path::Path;

use crate::test_util::BatchBuilder;
use crate::{Log, LogConfig, LogError};

const NOW_MS: i64 = 1_700_000_000_000;

fn tiered(local_retention_bytes: i64) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        remote_storage_enable: true,
        local_retention_bytes,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, cfg: LogConfig) -> Log {
    Log::open(dir, cfg, false, NOW_MS).expect("open log")
}

/// Appends batches of 5 records (about 400 bytes each) until `n` segments have rolled.
fn fill(log: &mut Log, rolled: usize) {
    while log.snapshot().segments <= rolled {
        let b = BatchBuilder::new(5)
            .timestamp(NOW_MS)
            .value_size(60)
            .build();
        log.append_as_leader(&b, 0, NOW_MS).expect("append");
    }
}

#[test]
fn local_retention_deletes_only_uploaded_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), tiered(0));
    fill(&mut log, 4);
    let candidates = log.segments_for_upload(10).expect("candidates");
    assert_eq!(
        candidates.len(),
        4,
        "every rolled segment, not the active one"
    );
    assert_eq!(candidates[0].base_offset, 0);
    for w in candidates.windows(2) {
        assert_eq!(w[0].end_offset + 1, w[1].base_offset);
    }
    assert!(candidates[0].log_file.exists() && candidates[0].offset_index_file.exists());
    assert_eq!(candidates[0].leader_epochs, vec![(0, 0)]);
    assert!(
        candidates.iter().all(|c| c.producer_snapshot.is_some()),
        "snapshots of segments not yet uploaded are kept for the upload"
    );
    assert_eq!(log.segments_for_upload(2).expect("candidates").len(), 2);
    assert_eq!(log.upload_lag().1, 4);

    // Nothing uploaded: local retention of 0 bytes deletes nothing.
    assert_eq!(log.apply_retention(NOW_MS).expect("retention"), 0);
    assert_eq!(log.local_log_start_offset(), 0);

    // Two uploaded: exactly those two go; the log start stays at 0.
    log.set_highest_offset_in_remote(candidates[1].end_offset);
    assert_eq!(log.upload_lag().1, 2);
    assert_eq!(log.apply_retention(NOW_MS).expect("retention"), 2);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.local_log_start_offset(), candidates[2].base_offset);
    let next = log.segments_for_upload(10).expect("candidates");
    assert_eq!(next[0].base_offset, candidates[2].base_offset);

    // Below the local start and above the log start: in the tier.
    assert!(matches!(
        log.read(3, 1 << 20, true),
        Err(LogError::NotLocal { offset: 3, local_log_start_offset }) if local_log_start_offset == candidates[2].base_offset
    ));
    assert!(!log
        .read(candidates[2].base_offset, 1 << 20, true)
        .expect("read")
        .records
        .is_empty());

    // A restart keeps the log start below the first local segment.
    drop(log);
    let mut log = open(dir.path(), tiered(0));
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.local_log_start_offset(), candidates[2].base_offset);
    assert_eq!(
        log.highest_offset_in_remote(),
        -1,
        "the broker sets it from the manifest"
    );
    assert_eq!(log.apply_retention(NOW_MS).expect("retention"), 0);

    // Retention of the whole log moves the log start; local segments below it go too.
    let start = log
        .delete_records_before(candidates[3].base_offset + 1)
        .expect("delete");
    assert_eq!(start, candidates[3].base_offset + 1);
    assert_eq!(log.local_log_start_offset(), start);
}

#[test]
fn upload_waits_for_the_last_stable_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), tiered(-2));
    // An open transaction in the first segment holds back the upload of every segment.
    let txn = BatchBuilder::new(1)
        .timestamp(NOW_MS)
        .producer(7, 0, 0)
        .attributes(0x10)
        .build();
    log.append_as_leader(&txn, 0, NOW_MS).expect("append");
    fill(&mut log, 3);
    assert!(log.last_stable_offset() == 0);
    assert!(log.segments_for_upload(10).expect("candidates").is_empty());
}

#[test]
fn an_empty_log_starts_after_the_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), tiered(-2));
    // An idempotent producer's batches, so that its state must come back from the tier.
    let mut seq = 0;
    while log.snapshot().segments <= 2 {
        let b = BatchBuilder::new(5)
            .timestamp(NOW_MS)
            .value_size(60)
            .producer(9, 0, seq)
            .build();
        log.append_as_leader(&b, 3, NOW_MS).expect("append");
        seq += 5;
    }
    let uploaded = log.segments_for_upload(10).expect("candidates");
    let last = uploaded.last().expect("two rolled segments");
    let next = last.end_offset + 1;
    let snapshot = last.producer_snapshot.clone().expect("snapshot kept");
    let tail = crate::TierTail {
        log_start_offset: 0,
        next_offset: next,
        leader_epochs: vec![(3, 0)],
        producer_snapshot: Some(snapshot),
        aborted_txns: Vec::new(),
    };

    // The partition directory is lost; a new, empty log takes over from the tier.
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut log = open(fresh.path(), tiered(-2));
    assert!(log.is_behind_tier(next));
    log.start_after_tier(&tail).expect("start after the tier");
    assert!(!log.is_behind_tier(next));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, next));
    assert_eq!(log.local_log_start_offset(), next);
    assert_eq!(log.highest_offset_in_remote(), next - 1);
    assert_eq!(log.latest_epoch(), Some(3));
    assert!(matches!(
        log.read(0, 1 << 20, true),
        Err(LogError::NotLocal { .. })
    ));
    // The producer continues from the tier's state: the last batch written above went to
    // the active segment, which the tier does not have, so it is the one expected next.
    seq -= 5;
    let next_batch = BatchBuilder::new(5)
        .timestamp(NOW_MS)
        .producer(9, 0, seq)
        .build();
    let appended = log
        .append_as_leader(&next_batch, 3, NOW_MS)
        .expect("append");
    assert_eq!(appended.first_offset, next);
    let gap = BatchBuilder::new(5)
        .timestamp(NOW_MS)
        .producer(9, 0, seq + 50)
        .build();
    assert!(matches!(
        log.append_as_leader(&gap, 3, NOW_MS),
        Err(LogError::OutOfOrderSequence(_))
    ));
    // The start survives a restart.
    drop(log);
    let log = open(fresh.path(), tiered(-2));
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (0, next + 5)
    );
}
