//! Behavioural tests of transactions in `Log`: markers, LSO, aborted index,
//! bounded reads, durability and recovery.

use std::path::Path;

use crate::test_util::{headers, BatchBuilder};
use crate::txn::TXN_INDEX_FILE;
use crate::{Log, LogConfig, LogError};

const NOW_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

fn open(dir: &Path, cfg: LogConfig, clean: bool) -> Log {
    Log::open(dir, cfg, clean, NOW_MS).expect("open log")
}

fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    BatchBuilder::new(n)
        .producer(pid, epoch, seq)
        .attributes(TRANSACTIONAL)
        .timestamp(NOW_MS)
        .build()
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    BatchBuilder::new(n)
        .producer(pid, epoch, seq)
        .timestamp(NOW_MS)
        .build()
}

fn plain_batch(n: usize) -> Vec<u8> {
    BatchBuilder::new(n).timestamp(NOW_MS).build()
}

fn marker(log: &mut Log, pid: i64, epoch: i16, commit: bool) -> i64 {
    log.append_txn_marker(pid, epoch, commit, 0, 0, NOW_MS)
        .expect("marker")
}

/// `(base_offset, last_offset, is_control)` of every batch in a read result.
fn batches(bytes: &[u8]) -> Vec<(i64, i64, bool)> {
    headers(bytes)
        .iter()
        .map(|h| (h.base_offset, h.last_offset(), h.is_control()))
        .collect()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

#[test]
fn commit_moves_lso_to_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.last_stable_offset(), 0);
    let a = log
        .append_as_leader(&txn_batch(1, 0, 0, 3), 0, NOW_MS)
        .expect("append");
    assert_eq!((a.first_offset, a.last_offset), (0, 2));
    assert_eq!(log.open_transactions(), vec![(1, 0, 0)]);
    assert_eq!(log.last_stable_offset(), 0);
    log.append_as_leader(&txn_batch(1, 0, 3, 2), 0, NOW_MS)
        .expect("append");
    log.append_as_leader(&plain_batch(1), 0, NOW_MS)
        .expect("append");
    assert_eq!(log.high_watermark(), 6);
    // The open transaction still holds the LSO at its first offset.
    assert_eq!(log.last_stable_offset(), 0);
    assert_eq!(
        log.read(0, 1 << 20, false)
            .expect("read")
            .last_stable_offset,
        0
    );

    let m = marker(&mut log, 1, 0, true);
    assert_eq!(m, 6);
    assert_eq!(log.high_watermark(), 7);
    assert_eq!(log.last_stable_offset(), 7);
    assert!(log.open_transactions().is_empty());
    assert!(log.aborted_transactions(0, i64::MAX).is_empty());
    let r = log.read_bounded(0, 1 << 20, false, 7).expect("read");
    assert_eq!(r.last_stable_offset, 7);
    let bs = batches(&r.records);
    assert_eq!(bs.len(), 4);
    assert_eq!(bs[3], (6, 6, true));
    // The marker batch has the documented shape.
    let h = headers(&r.records)[3];
    assert!(h.is_control() && h.is_transactional());
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (1, 0, -1)
    );
    assert_eq!((h.max_timestamp, h.records_count), (NOW_MS, 1));
    // A new transaction of the same producer after the commit.
    log.append_as_leader(&txn_batch(1, 0, 5, 1), 0, NOW_MS)
        .expect("append");
    assert_eq!(log.last_stable_offset(), 7);
    assert_eq!(log.open_transactions(), vec![(1, 0, 7)]);
}

#[test]
fn abort_records_range_and_filters_by_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.append_as_leader(&txn_batch(1, 0, 0, 3), 0, NOW_MS)
        .expect("append"); // 0..=2
    log.append_as_leader(&plain_batch(2), 0, NOW_MS)
        .expect("append"); // 3..=4
    assert_eq!(marker(&mut log, 1, 0, false), 5);
    assert_eq!(log.last_stable_offset(), 6);
    assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0)]);
    assert_eq!(log.aborted_transactions(3, 100), vec![(1, 0)]);
    assert_eq!(log.aborted_transactions(5, 6), vec![(1, 0)]);
    assert!(log.aborted_transactions(6, 100).is_empty());
    assert!(log.aborted_transactions(0, 0).is_empty());

    log.append_as_leader(&txn_batch(2, 0, 0, 2), 0, NOW_MS)
        .expect("append"); // 6..=7
    assert_eq!(marker(&mut log, 2, 0, false), 8);
    assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0), (2, 6)]);
    assert_eq!(log.aborted_transactions(0, 6), vec![(1, 0)]);
    assert_eq!(log.aborted_transactions(6, 7), vec![(2, 6)]);
    assert_eq!(log.aborted_transactions(9, 100), vec![]);
    // A marker with no open transaction is written but records nothing.
    assert_eq!(marker(&mut log, 2, 0, false), 9);
    assert_eq!(log.aborted_transactions(0, 100).len(), 2);
    assert_eq!(log.last_stable_offset(), 10);
}

#[test]
fn interleaved_producers_and_lso_held_by_oldest_open_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.append_as_leader(&txn_batch(1, 0, 0, 1), 0, NOW_MS)
        .expect("append"); // 0
    log.append_as_leader(&txn_batch(2, 0, 0, 1), 0, NOW_MS)
        .expect("append"); // 1
    log.append_as_leader(&txn_batch(1, 0, 1, 1), 0, NOW_MS)
        .expect("append"); // 2
    log.append_as_leader(&txn_batch(3, 0, 0, 1), 0, NOW_MS)
        .expect("append"); // 3
    assert_eq!(
        log.open_transactions(),
        vec![(1, 0, 0), (2, 0, 1), (3, 0, 3)]
    );
    assert_eq!(log.last_stable_offset(), 0);
    // The younger transaction ends first: the oldest still holds the LSO.
    assert_eq!(marker(&mut log, 2, 0, false), 4);
    assert_eq!(log.last_stable_offset(), 0);
    assert_eq!(marker(&mut log, 1, 0, false), 5);
    assert_eq!(log.last_stable_offset(), 3);
    // Sorted by first offset although the markers came in the other order.
    assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0), (2, 1)]);
    assert_eq!(marker(&mut log, 3, 0, true), 6);
    assert_eq!(log.last_stable_offset(), 7);
    assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0), (2, 1)]);
}

#[test]
fn transactional_state_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.append_as_leader(&txn_batch(1, 0, 0, 2), 0, NOW_MS)
        .expect("append");
    // Non-transactional write while a transaction is open: INVALID_TXN_STATE.
    let err = log
        .append_as_leader(&idempotent_batch(1, 0, 2, 1), 0, NOW_MS)
        .expect_err("refused");
    assert!(matches!(err, LogError::InvalidTxnState(_)), "{err:?}");
    assert_eq!(err.kafka_error_code(), 48);
    assert_eq!(log.log_end_offset(), 2);
    // Clients never write control batches, transactional or not.
    let control = BatchBuilder::new(1)
        .producer(1, 0, 2)
        .attributes(TRANSACTIONAL | CONTROL)
        .timestamp(NOW_MS)
        .build();
    assert!(matches!(
        log.append_as_leader(&control, 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));
    assert!(matches!(
        log.append_as_coordinator(&control, 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));
    // After the commit the producer may write non-transactionally again.
    marker(&mut log, 1, 0, true);
    log.append_as_leader(&idempotent_batch(1, 0, 2, 1), 0, NOW_MS)
        .expect("append");
    // Idle producers with an open transaction are not expired.
    log.append_as_leader(&txn_batch(5, 0, 0, 1), 0, NOW_MS)
        .expect("append");
    log.set_producer_id_expiration_ms(1);
    log.maybe_flush(NOW_MS + 1_000).expect("housekeeping");
    assert_eq!(log.open_transactions(), vec![(5, 0, 4)]);
    assert_eq!(
        log.active_producers()
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![5]
    );
}

#[test]
fn read_bounded_stops_below_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    let first = plain_batch(3);
    let first_size = first.len();
    log.append_as_leader(&first, 0, NOW_MS).expect("append"); // 0..=2
    log.append_as_leader(&plain_batch(1), 0, NOW_MS)
        .expect("append"); // 3
    log.append_as_leader(&txn_batch(1, 0, 0, 2), 0, NOW_MS)
        .expect("append"); // 4..=5
    log.append_as_leader(&plain_batch(1), 0, NOW_MS)
        .expect("append"); // 6
    let lso = log.last_stable_offset();
    assert_eq!(lso, 4);
    let r = log.read_bounded(0, 1 << 20, false, lso).expect("read");
    assert_eq!(batches(&r.records), vec![(0, 2, false), (3, 3, false)]);
    assert_eq!((r.last_stable_offset, r.high_watermark), (4, 7));
    // Unbounded read keeps returning everything.
    assert_eq!(
        batches(&log.read(0, 1 << 20, false).expect("read").records).len(),
        4
    );
    // At or above the bound: nothing, but not an error.
    assert!(log
        .read_bounded(4, 1 << 20, true, lso)
        .expect("read")
        .records
        .is_empty());
    assert!(log
        .read_bounded(6, 1 << 20, true, lso)
        .expect("read")
        .records
        .is_empty());
    // Fetching the middle of the last batch below the bound.
    assert_eq!(
        batches(
            &log.read_bounded(3, 1 << 20, false, lso)
                .expect("read")
                .records
        ),
        vec![(3, 3, false)]
    );
    // At least one batch below the bound, even if larger than max_bytes.
    let r = log.read_bounded(0, 10, true, lso).expect("read");
    assert_eq!(r.records.len(), first_size);
    assert!(log
        .read_bounded(0, 10, false, lso)
        .expect("read")
        .records
        .is_empty());
    // Out-of-range offsets are still errors.
    assert!(matches!(
        log.read_bounded(8, 100, true, lso),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn markers_with_stale_epochs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.append_as_leader(&txn_batch(1, 2, 0, 1), 0, NOW_MS)
        .expect("append");
    let err = log
        .append_txn_marker(1, 1, false, 0, 0, NOW_MS)
        .expect_err("stale epoch");
    assert!(matches!(err, LogError::InvalidProducerEpoch(_)), "{err:?}");
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.open_transactions(), vec![(1, 2, 0)]);
    // A bumped epoch (abort on fencing) becomes the producer's epoch.
    assert_eq!(
        log.append_txn_marker(1, 3, false, 5, 0, NOW_MS)
            .expect("marker"),
        1
    );
    assert_eq!(log.active_producers()[0].1, 3);
    assert_eq!(log.aborted_transactions(0, 10), vec![(1, 0)]);
    assert!(matches!(
        log.append_as_leader(&txn_batch(1, 2, 1, 1), 0, NOW_MS),
        Err(LogError::InvalidProducerEpoch(_))
    ));
    // The new epoch starts at sequence 0.
    log.append_as_leader(&txn_batch(1, 3, 0, 1), 0, NOW_MS)
        .expect("append");
    // An older coordinator is fenced.
    let err = log
        .append_txn_marker(1, 3, true, 4, 0, NOW_MS)
        .expect_err("fenced");
    assert!(
        matches!(err, LogError::TransactionCoordinatorFenced(_)),
        "{err:?}"
    );
    assert_eq!(err.kafka_error_code(), 52);
    assert!(matches!(
        log.append_txn_marker(-1, 0, true, 0, 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn coordinator_appends_skip_sequence_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    // Producer id with sequence -1: refused from clients.
    assert!(matches!(
        log.append_as_leader(&txn_batch(9, 0, -1, 1), 0, NOW_MS),
        Err(LogError::InvalidRecord(_))
    ));
    let a = log
        .append_as_coordinator(&txn_batch(9, 0, -1, 2), 0, NOW_MS)
        .expect("append");
    assert_eq!((a.first_offset, a.last_offset, a.duplicate), (0, 1, false));
    // The same bytes again are not a duplicate: nothing to deduplicate by.
    let b = log
        .append_as_coordinator(&txn_batch(9, 0, -1, 2), 0, NOW_MS)
        .expect("append");
    assert_eq!((b.first_offset, b.duplicate), (2, false));
    assert_eq!(log.open_transactions(), vec![(9, 0, 0)]);
    assert_eq!(log.last_stable_offset(), 0);
    // Epochs are still checked.
    marker(&mut log, 9, 1, true);
    assert!(matches!(
        log.append_as_coordinator(&txn_batch(9, 0, -1, 1), 0, NOW_MS),
        Err(LogError::InvalidProducerEpoch(_))
    ));
    assert_eq!(log.last_stable_offset(), 5);
}

/// Transactional history used by the restart tests: an aborted transaction
/// of producer 1 (0..=1, marker 3), a committed one of producer 3 and an open
/// one of producer 2 starting at 2.
fn write_history(log: &mut Log) {
    log.append_as_leader(&txn_batch(1, 0, 0, 2), 0, NOW_MS)
        .expect("append"); // 0..=1
    log.append_as_leader(&txn_batch(2, 0, 0, 1), 0, NOW_MS)
        .expect("append"); // 2
    assert_eq!(marker(log, 1, 0, false), 3);
    log.append_as_leader(&txn_batch(3, 0, 0, 2), 0, NOW_MS)
        .expect("append"); // 4..=5
    assert_eq!(marker(log, 3, 0, true), 6);
    log.append_as_leader(&txn_batch(2, 0, 1, 3), 0, NOW_MS)
        .expect("append"); // 7..=9
}

fn assert_history(log: &Log) {
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.open_transactions(), vec![(2, 0, 2)]);
    assert_eq!(log.last_stable_offset(), 2);
    assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0)]);
}

#[test]
fn open_transactions_and_aborted_index_survive_restarts() {
    for cfg in [LogConfig::default(), small_segments()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), cfg.clone(), false);
        write_history(&mut log);
        assert_history(&log);
        log.close().expect("close");

        let mut log = open(dir.path(), cfg.clone(), true);
        assert_history(&log);
        // Producer 2 continues its transaction and aborts it.
        log.append_as_leader(&txn_batch(2, 0, 4, 1), 0, NOW_MS)
            .expect("append"); // 10
        assert_eq!(marker(&mut log, 2, 0, false), 11);
        log.append_as_leader(&txn_batch(4, 0, 0, 1), 0, NOW_MS)
            .expect("append"); // 12
        let expected_aborted = vec![(1, 0), (2, 2)];
        assert_eq!(log.aborted_transactions(0, 100), expected_aborted);
        drop(log); // crash: no clean shutdown

        let log = open(dir.path(), cfg.clone(), false);
        assert_eq!(log.log_end_offset(), 13);
        assert_eq!(log.open_transactions(), vec![(4, 0, 12)]);
        assert_eq!(log.last_stable_offset(), 12);
        assert_eq!(log.aborted_transactions(0, 100), expected_aborted);
        drop(log);

        // Without snapshots and index, everything is rebuilt from the log.
        for entry in std::fs::read_dir(dir.path()).expect("readdir") {
            let name = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf8");
            if name.ends_with(".snapshot") || name == TXN_INDEX_FILE {
                std::fs::remove_file(dir.path().join(&name)).expect("rm");
            }
        }
        let log = open(dir.path(), cfg.clone(), false);
        assert_eq!(log.open_transactions(), vec![(4, 0, 12)]);
        assert_eq!(log.aborted_transactions(0, 100), expected_aborted);
        log.close().expect("close");
        let log = open(dir.path(), cfg, true);
        assert_eq!(log.aborted_transactions(0, 100), expected_aborted);
    }
}

#[test]
fn snapshot_from_before_the_transaction_support_still_loads() {
    // A log written without transactions (v1-compatible state) reopens; the
    // v2 snapshot format itself is covered in producer_state's tests.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.append_as_leader(&idempotent_batch(1, 0, 0, 2), 0, NOW_MS)
        .expect("append");
    log.close().expect("close");
    let log = open(dir.path(), LogConfig::default(), true);
    assert!(log.open_transactions().is_empty());
    assert_eq!(log.last_stable_offset(), 2);
}

#[test]
fn torn_marker_at_the_tail_is_recovered() {
    for cfg in [LogConfig::default(), small_segments()] {
        let marker_len = {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut log = open(dir.path(), cfg.clone(), false);
            let before = log.snapshot().size_bytes;
            marker(&mut log, 1, 0, false);
            (log.snapshot().size_bytes - before) as usize
        };
        for cut in [1, marker_len / 2, marker_len - 1] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut log = open(dir.path(), cfg.clone(), false);
            write_history(&mut log);
            assert_eq!(marker(&mut log, 2, 0, false), 10);
            assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0), (2, 2)]);
            assert_eq!(log.last_stable_offset(), 11);
            drop(log);
            let last = {
                let mut segs: Vec<_> = std::fs::read_dir(dir.path())
                    .expect("readdir")
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".log"))
                    .collect();
                segs.sort();
                dir.path().join(segs.last().expect("a segment"))
            };
            let len = std::fs::metadata(&last).expect("meta").len();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&last)
                .expect("open segment");
            f.set_len(len - cut as u64).expect("truncate");
            drop(f);

            let mut log = open(dir.path(), cfg.clone(), false);
            assert_eq!(log.log_end_offset(), 10, "cut {cut}");
            // The abort is gone with its marker: the transaction is open again.
            assert_history(&log);
            // The coordinator retries the marker.
            assert_eq!(marker(&mut log, 2, 0, false), 10);
            assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0), (2, 2)]);
            log.close().expect("close");
            let log = open(dir.path(), cfg.clone(), true);
            assert_eq!(log.aborted_transactions(0, 100), vec![(1, 0), (2, 2)]);
        }
    }
}

#[test]
fn delete_records_and_retention_trim_the_aborted_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments(), false);
    let mut markers = Vec::new();
    for pid in 0..6 {
        log.append_as_leader(&txn_batch(pid, 0, 0, 2), 0, NOW_MS)
            .expect("append");
        markers.push(marker(&mut log, pid, 0, false));
    }
    assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 6);
    assert!(log.snapshot().segments > 2, "test needs several segments");
    // DeleteRecords past the first marker drops the first entry only.
    log.delete_records_before(markers[0] + 1).expect("delete");
    let left: Vec<i64> = log
        .aborted_transactions(0, i64::MAX)
        .iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(left, vec![1, 2, 3, 4, 5]);
    // An entry whose marker is at the log start is kept.
    log.delete_records_before(markers[1]).expect("delete");
    assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 5);
    drop(log);
    let mut log = open(dir.path(), small_segments(), false);
    assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 5);

    // Retention by bytes removes old segments and their entries.
    let mut cfg = small_segments();
    cfg.retention_bytes = 0;
    log.set_config(cfg);
    log.apply_retention(NOW_MS).expect("retention");
    let start = log.log_start_offset();
    assert!(start > markers[4], "retention kept {start}");
    assert!(log.aborted_transactions(0, i64::MAX).is_empty());
    log.close().expect("close");
    let log = open(dir.path(), small_segments(), true);
    assert!(log.aborted_transactions(0, i64::MAX).is_empty());
    assert_eq!(
        std::fs::metadata(dir.path().join(TXN_INDEX_FILE))
            .expect("index file")
            .len(),
        0
    );
}

#[test]
fn ongoing_transactions_and_markers_guard_transactional_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    assert!(!log.has_ongoing_transaction(1, 0));
    let guard = log.start_txn_verification(1, 0, false, NOW_MS);
    log.append_as_leader(&txn_batch(1, 0, 0, 2), 0, NOW_MS)
        .expect("append");
    assert!(log.has_ongoing_transaction(1, 0));
    assert!(!log.has_ongoing_transaction(1, 1), "another epoch");
    assert!(!log.has_ongoing_transaction(2, 0), "another producer");
    assert_eq!(log.producer_epoch(1), Some(0));
    // Transactions v2: the marker carries the bumped epoch and ends the transaction.
    marker(&mut log, 1, 1, true);
    assert!(
        !log.txn_verification_valid(1, guard, NOW_MS),
        "the producer's marker ended the checked transaction"
    );
    assert!(!log.has_ongoing_transaction(1, 0) && !log.has_ongoing_transaction(1, 1));
    // The next transaction, at the new epoch, starts again at sequence 0.
    log.append_as_leader(&txn_batch(1, 1, 0, 1), 0, NOW_MS)
        .expect("append at the bumped epoch");
    assert!(log.has_ongoing_transaction(1, 1));
    let late = log.append_as_leader(&txn_batch(1, 0, 2, 1), 0, NOW_MS);
    assert!(
        matches!(late, Err(LogError::InvalidProducerEpoch(_))),
        "a late write of the ended transaction is fenced: {late:?}"
    );
}

#[test]
fn a_check_survives_other_producers_markers_but_not_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.append_as_leader(&txn_batch(2, 0, 0, 1), 0, NOW_MS)
        .expect("producer 2's transaction");
    let one = log.start_txn_verification(1, 0, false, NOW_MS);
    let three = log.start_txn_verification(3, 4, true, NOW_MS);
    marker(&mut log, 2, 0, true);
    assert!(
        log.txn_verification_valid(1, one, NOW_MS),
        "another producer's marker"
    );
    marker(&mut log, 3, 4, false);
    assert!(
        log.txn_verification_valid(3, three, NOW_MS),
        "protocol v2: the marker of the transaction before"
    );
    marker(&mut log, 1, 0, false);
    assert!(!log.txn_verification_valid(1, one, NOW_MS));
    marker(&mut log, 3, 5, false);
    assert!(!log.txn_verification_valid(3, three, NOW_MS));
    // A follower holds no checks.
    let again = log.start_txn_verification(1, 1, false, NOW_MS);
    log.truncate_to(log.log_end_offset())
        .expect("no-op truncation");
    assert!(log.txn_verification_valid(1, again, NOW_MS));
    log.truncate_to(1).expect("truncation");
    assert!(!log.txn_verification_valid(1, again, NOW_MS));
}
