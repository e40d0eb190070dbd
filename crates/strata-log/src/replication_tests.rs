//! Tests of the log side of replication against real directories: follower appends fed
//! the exact bytes a leader's `read` returns, truncation compared with a log that never
//! had the removed records, crashes during truncation, and the high watermark bounding
//! reads' metadata, retention, compaction and the tier.

use std::collections::BTreeMap;
use std::path::Path;

use crate::fsutil;
use crate::replication::{Truncation, TRUNCATION_FILE};
use crate::test_util::{headers, keyed_batch, BatchBuilder, TimestampOffsetPair};
use crate::{Log, LogConfig, LogError};

const NOW_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;

fn open(dir: &Path, cfg: LogConfig, clean: bool) -> Log {
    Log::open(dir, cfg, clean, NOW_MS).expect("open log")
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 500,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn plain(n: usize) -> Vec<u8> {
    BatchBuilder::new(n).timestamp(NOW_MS).build()
}

fn idempotent(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    BatchBuilder::new(n)
        .producer(pid, 0, seq)
        .timestamp(NOW_MS)
        .build()
}

fn transactional(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    BatchBuilder::new(n)
        .producer(pid, 0, seq)
        .attributes(TRANSACTIONAL)
        .timestamp(NOW_MS)
        .build()
}

/// Offsets of interest in [`leader_history`].
struct History {
    /// Producer 1's committed transaction: first batch and COMMIT marker.
    committed_first: i64,
    commit_marker: i64,
    /// Producer 2's aborted transaction: first batch and ABORT marker.
    aborted_first: i64,
    abort_marker: i64,
    /// Producer 3's transaction, still open at the end.
    open_first: i64,
    /// A batch of four records, for a truncation point inside a batch.
    four_records: i64,
}

/// One batch per append, in three leader epochs (1, 2, 4), with an idempotent producer, a
/// committed, an aborted and an open transaction, over several segments.
fn leader_history(log: &mut Log) -> History {
    leader_history_with(log, &mut |_| {})
}

/// [`leader_history`], calling `after` after each append.
fn leader_history_with(log: &mut Log, after: &mut dyn FnMut(&Log)) -> History {
    fn append(log: &mut Log, after: &mut dyn FnMut(&Log), bytes: Vec<u8>, epoch: i32) -> i64 {
        let first = log
            .append_as_leader(&bytes, epoch, NOW_MS)
            .expect("append")
            .first_offset;
        after(log);
        first
    }
    fn marker(log: &mut Log, after: &mut dyn FnMut(&Log), pid: i64, commit: bool) -> i64 {
        let offset = log
            .append_txn_marker(pid, 0, commit, 0, 2, NOW_MS)
            .expect("marker");
        after(log);
        offset
    }
    append(log, after, plain(3), 1); // 0..=2
    append(log, after, idempotent(7, 0, 2), 1); // 3..=4
    let committed_first = append(log, after, transactional(1, 0, 2), 1); // 5..=6
    let aborted_first = append(log, after, transactional(2, 0, 1), 1); // 7
    let four_records = append(log, after, plain(4), 2); // 8..=11
    append(log, after, transactional(1, 2, 1), 2); // 12
    let commit_marker = marker(log, after, 1, true); // 13
    append(log, after, transactional(2, 1, 2), 2); // 14..=15
    let abort_marker = marker(log, after, 2, false); // 16
    append(log, after, idempotent(7, 2, 1), 2); // 17
    let open_first = append(log, after, transactional(3, 0, 1), 2); // 18
    for _ in 0..8 {
        append(log, after, plain(2), 4); // 19..=34
    }
    History {
        committed_first,
        commit_marker,
        aborted_first,
        abort_marker,
        open_first,
        four_records,
    }
}

/// Every batch of the log from its local start, whole and in order, one `read` per segment.
fn all_batches(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.local_log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 30, true).expect("read");
        assert!(!r.records.is_empty(), "nothing read at {offset}");
        let mut pos = 0;
        for h in headers(&r.records) {
            out.push(r.records[pos..pos + h.size_bytes()].to_vec());
            pos += h.size_bytes();
            offset = h.last_offset() + 1;
        }
    }
    out
}

fn base_and_last(batch: &[u8]) -> (i64, i64) {
    let h = headers(batch)[0];
    (h.base_offset, h.last_offset())
}

/// Feeds `batches` to `follower`, one append each (so segments roll where the leader's did).
fn feed(follower: &mut Log, batches: &[Vec<u8>]) {
    for b in batches {
        let info = follower
            .append_as_follower(b, NOW_MS)
            .expect("follower append");
        let (base, last) = base_and_last(b);
        assert_eq!((info.first_offset, info.last_offset), (base, last));
        assert_eq!(info.size_bytes_appended, b.len());
        assert_eq!(follower.log_end_offset(), last + 1);
    }
}

/// Fetches as the broker's fetcher does: `read` at the follower's log end, append the bytes,
/// until the follower has everything. Returns the number of fetches.
fn replicate(leader: &Log, follower: &mut Log, max_bytes: usize) -> usize {
    let mut fetches = 0;
    while follower.log_end_offset() < leader.log_end_offset() {
        let r = leader
            .read(follower.log_end_offset(), max_bytes, true)
            .expect("leader read");
        let info = follower
            .append_as_follower(&r.records, NOW_MS)
            .expect("follower append");
        assert_eq!(info.size_bytes_appended, r.records.len());
        fetches += 1;
    }
    fetches
}

/// Everything a reader, a future leader or the tier can see of a log, compared.
fn assert_same_state(a: &Log, b: &Log) {
    assert_eq!(a.log_start_offset(), b.log_start_offset(), "log start");
    assert_eq!(a.log_end_offset(), b.log_end_offset(), "log end");
    assert_eq!(a.high_watermark(), b.high_watermark(), "high watermark");
    assert_eq!(a.last_stable_offset(), b.last_stable_offset(), "LSO");
    assert_eq!(a.open_transactions(), b.open_transactions(), "open txns");
    assert_eq!(a.active_producers(), b.active_producers(), "producers");
    for (pid, ..) in a.active_producers() {
        assert_eq!(
            a.producers.entry(pid),
            b.producers.entry(pid),
            "producer {pid}"
        );
    }
    assert_eq!(a.aborted.entries(), b.aborted.entries(), "aborted index");
    assert_eq!(
        a.aborted_transactions(0, i64::MAX),
        b.aborted_transactions(0, i64::MAX)
    );
    assert_eq!(
        a.leader_epochs.entries(),
        b.leader_epochs.entries(),
        "epochs"
    );
    assert_eq!(
        a.max_timestamp_and_offset().expect("max").pair(),
        b.max_timestamp_and_offset().expect("max").pair()
    );
    assert_eq!(all_batches(a), all_batches(b), "records");
}

/// The files of a partition directory, by name, filtered by `keep(name, contents)`.
fn files(dir: &Path, keep: impl Fn(&str, &[u8]) -> bool) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("readdir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf8");
        let bytes = std::fs::read(dir.join(&name)).expect("read");
        if keep(&name, &bytes) {
            out.insert(name, bytes);
        }
    }
    out
}

/// Data and offset index of every non-empty segment: the files two logs holding the same
/// records in the same segments agree on byte for byte, whatever their history. (A log that
/// never had an epoch or an abort has no checkpoint or index file, one that lost them has
/// empty ones: those are compared by content in [`assert_same_state`], and by reopening.)
fn data_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let non_empty: Vec<String> = files(dir, |n, b| n.ends_with(".log") && !b.is_empty())
        .into_keys()
        .map(|n| n.trim_end_matches(".log").to_string())
        .collect();
    files(dir, |n, _| {
        non_empty
            .iter()
            .any(|base| *n == format!("{base}.log") || *n == format!("{base}.index"))
    })
}

fn segment_bases(dir: &Path) -> Vec<i64> {
    files(dir, |n, _| n.ends_with(".log"))
        .keys()
        .map(|n| n.trim_end_matches(".log").parse().expect("base"))
        .collect()
}

#[test]
fn follower_fed_the_leaders_reads_is_identical_to_it() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path(), small_segments(), false);
    let mut follower = open(follower_dir.path(), small_segments(), false);
    // One fetch after each leader append, as a follower keeping up does.
    let mut fetches = 0;
    let h = leader_history_with(&mut leader, &mut |leader| {
        fetches += replicate(leader, &mut follower, 1 << 20);
    });
    let history = all_batches(&leader);
    assert_eq!(fetches, history.len());
    assert!(
        segment_bases(leader_dir.path()).len() >= 4,
        "several segments"
    );

    assert_same_state(&leader, &follower);
    assert_eq!(follower.leader_epochs.entries(), &[(1, 0), (2, 8), (4, 19)]);
    assert_eq!(follower.open_transactions(), vec![(3, 0, h.open_first)]);
    assert_eq!(follower.last_stable_offset(), h.open_first);
    assert_eq!(
        follower.aborted_transactions(0, i64::MAX),
        vec![(2, h.aborted_first)]
    );
    assert!(h.committed_first < h.commit_marker && h.aborted_first < h.abort_marker);
    // Same segments, indexes, snapshots, epoch checkpoint and aborted index, byte for byte.
    let except_state = |n: &str, _: &[u8]| n != "strata-log-state";
    assert_eq!(
        files(leader_dir.path(), except_state),
        files(follower_dir.path(), except_state)
    );

    // Both survive a crash and a clean restart the same way.
    drop(follower);
    let follower = open(follower_dir.path(), small_segments(), false);
    assert_same_state(&leader, &follower);
    leader.close().expect("close");
    follower.close().expect("close");
    let leader = open(leader_dir.path(), small_segments(), true);
    let follower = open(follower_dir.path(), small_segments(), true);
    assert_same_state(&leader, &follower);
    assert_eq!(
        files(leader_dir.path(), except_state),
        files(follower_dir.path(), except_state)
    );

    // A follower fetching big chunks (several batches per append) ends with the same records
    // and state; its segments may roll elsewhere.
    let chunky_dir = tempfile::tempdir().expect("tempdir");
    let mut chunky = open(chunky_dir.path(), small_segments(), false);
    assert!(replicate(&leader, &mut chunky, 1 << 20) < history.len());
    assert_same_state(&leader, &chunky);
}

#[test]
fn follower_ignores_a_torn_trailing_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(dir.path().join("l").as_path(), LogConfig::default(), false);
    for n in [2, 3, 1] {
        leader
            .append_as_leader(&plain(n), 3, NOW_MS)
            .expect("append");
    }
    let bytes = leader.read(0, 1 << 20, true).expect("read").records;
    let sizes: Vec<usize> = headers(&bytes).iter().map(|h| h.size_bytes()).collect();
    let mut follower = open(dir.path().join("f").as_path(), LogConfig::default(), false);

    // Two whole batches and all but 5 bytes of the third.
    let info = follower
        .append_as_follower(&bytes[..bytes.len() - 5], NOW_MS)
        .expect("append");
    assert_eq!(info.size_bytes_appended, sizes[0] + sizes[1]);
    assert_eq!(
        (info.first_offset, info.last_offset, info.records_count),
        (0, 4, 5)
    );
    assert_eq!(follower.log_end_offset(), 5);
    let rest = &bytes[sizes[0] + sizes[1]..];
    // Less than a batch's length prefix, then a header but not the whole batch: nothing.
    for cut in [0, 7, 11, 12, 40, rest.len() - 1] {
        let info = follower
            .append_as_follower(&rest[..cut], NOW_MS)
            .expect("torn only");
        assert_eq!(info.size_bytes_appended, 0, "cut {cut}");
        assert_eq!(
            (info.first_offset, info.last_offset, info.records_count),
            (5, 4, 0)
        );
        assert_eq!(follower.log_end_offset(), 5);
    }
    let info = follower.append_as_follower(rest, NOW_MS).expect("append");
    assert_eq!(
        (info.size_bytes_appended, info.first_offset),
        (rest.len(), 5)
    );
    assert_same_state(&leader, &follower);
    // What was appended is durable like any append: it survives a crash.
    drop(follower);
    let follower = open(dir.path().join("f").as_path(), LogConfig::default(), false);
    assert_same_state(&leader, &follower);
}

#[test]
fn follower_refuses_what_does_not_fit_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(dir.path().join("l").as_path(), LogConfig::default(), false);
    for n in [2, 3] {
        leader
            .append_as_leader(&plain(n), 1, NOW_MS)
            .expect("append");
    }
    let batches = all_batches(&leader);
    let mut follower = open(dir.path().join("f").as_path(), LogConfig::default(), false);
    feed(&mut follower, &batches[..1]);
    let before = follower.snapshot();

    // The batch it already has: below the log end.
    let err = follower.append_as_follower(&batches[0], NOW_MS);
    assert!(
        matches!(
            err,
            Err(LogError::UnexpectedAppendOffset {
                expected: 2,
                first_offset: 0,
                last_offset: 1
            })
        ),
        "{err:?}"
    );
    // A good batch followed by one overlapping it: all or nothing.
    let mut overlapping = batches[1].clone();
    overlapping.extend_from_slice(&batches[1]);
    let err = follower.append_as_follower(&overlapping, NOW_MS);
    assert!(
        matches!(
            err,
            Err(LogError::UnexpectedAppendOffset {
                expected: 5,
                first_offset: 2,
                last_offset: 4
            })
        ),
        "{err:?}"
    );
    // A flipped bit.
    let mut corrupt = batches[1].clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        follower.append_as_follower(&corrupt, NOW_MS),
        Err(LogError::CorruptRecord(_))
    ));
    // A length field too small for a header.
    let mut short = batches[1].clone();
    short[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert!(matches!(
        follower.append_as_follower(&short, NOW_MS),
        Err(LogError::CorruptRecord(_))
    ));
    assert_eq!(follower.snapshot(), before);
    assert_eq!(follower.leader_epochs.entries(), &[(1, 0)]);

    // The leader's log start inside a batch (DeleteRecords): the fetcher's recovery, as
    // Kafka's, is to start the log at the batch's base and append again.
    leader.delete_records_before(3).expect("delete records");
    let mut fresh = open(dir.path().join("g").as_path(), LogConfig::default(), false);
    fresh.truncate_fully_and_start_at(3).expect("start at 3");
    let fetched = leader.read(3, 1 << 20, true).expect("read").records;
    match fresh.append_as_follower(&fetched, NOW_MS) {
        Err(LogError::UnexpectedAppendOffset {
            expected: 3,
            first_offset: 2,
            last_offset: 4,
        }) => {}
        other => panic!("expected UnexpectedAppendOffset, got {other:?}"),
    }
    fresh.truncate_fully_and_start_at(2).expect("start at 2");
    fresh.append_as_follower(&fetched, NOW_MS).expect("append");
    assert_eq!(fresh.delete_records_before(3).expect("log start"), 3);
    assert_eq!(fresh.log_end_offset(), 5);
}

#[test]
fn follower_accepts_control_batches_and_offset_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        max_message_bytes: 100, // lowered after the leader stored bigger batches
        ..LogConfig::default()
    };
    let mut follower = open(dir.path(), cfg.clone(), false);
    // A transactional batch and its COMMIT marker, as a leader stored them (epoch 3).
    let mut txn = transactional(5, 0, 2);
    crate::batch::set_partition_leader_epoch(&mut txn, 3);
    let mut marker =
        crate::txn::build_marker_batch(5, 0, true, 9, NOW_MS, crate::TimestampType::CreateTime);
    crate::batch::set_base_offset(&mut marker, 2);
    crate::batch::set_partition_leader_epoch(&mut marker, 3);
    let mut both = txn.clone();
    both.extend_from_slice(&marker);
    // A compressed marker could not be read back on open: refused.
    let mut compressed = marker.clone();
    compressed[22] |= 1;
    let crc = crc32c::crc32c(&compressed[21..]);
    compressed[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut with_compressed = txn.clone();
    with_compressed.extend_from_slice(&compressed);
    assert!(matches!(
        follower.append_as_follower(&with_compressed, NOW_MS),
        Err(LogError::CorruptRecord(_))
    ));
    assert_eq!(follower.log_end_offset(), 0);
    follower.append_as_follower(&both, NOW_MS).expect("append");
    assert!(follower.open_transactions().is_empty());
    assert_eq!(follower.last_stable_offset(), 3);

    // Batches beyond gaps the leader's cleaner left, one more than i32::MAX offsets away
    // from the active segment's base: the follower rolls to the batch's base offset.
    let big = BatchBuilder::new(1)
        .timestamp(NOW_MS)
        .value_size(150)
        .build();
    let mut far = big.clone();
    crate::batch::set_base_offset(&mut far, 10);
    let info = follower
        .append_as_follower(&far, NOW_MS)
        .expect("gap append");
    assert_eq!((info.first_offset, info.last_offset), (10, 10));
    let very_far = 11 + i32::MAX as i64 + 1;
    let mut farther = big;
    crate::batch::set_base_offset(&mut farther, very_far);
    crate::batch::set_partition_leader_epoch(&mut farther, 4);
    follower
        .append_as_follower(&farther, NOW_MS)
        .expect("far append");
    assert_eq!(follower.log_end_offset(), very_far + 1);
    assert_eq!(segment_bases(dir.path()), vec![0, very_far]);
    assert_eq!(follower.leader_epochs.entries(), &[(3, 0), (4, very_far)]);
    // A read in the gap returns the next batch; all survives a crash.
    let r = follower.read(500, 1 << 20, true).expect("read");
    assert_eq!(headers(&r.records)[0].base_offset, very_far);
    let batches = all_batches(&follower);
    drop(follower);
    let follower = open(dir.path(), cfg, false);
    assert_eq!(all_batches(&follower), batches);
    assert_eq!(follower.log_end_offset(), very_far + 1);
    assert_eq!(follower.last_stable_offset(), very_far + 1);
}

/// Kept batches of `history` when truncating at `offset`: those ending below it.
fn kept(history: &[Vec<u8>], offset: i64) -> Vec<Vec<u8>> {
    history
        .iter()
        .filter(|b| base_and_last(b).1 < offset)
        .cloned()
        .collect()
}

#[test]
fn truncate_to_leaves_what_a_log_without_the_records_holds() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path(), small_segments(), false);
    let h = leader_history(&mut leader);
    let history = all_batches(&leader);
    let bases = segment_bases(leader_dir.path());
    assert!(bases.len() >= 4, "{bases:?}");
    let points = [
        ("mid-log batch boundary", h.committed_first),
        ("segment boundary", bases[2]),
        ("inside a batch", h.four_records + 1),
        ("into the aborted transaction", h.aborted_first + 1),
        ("at the COMMIT marker", h.commit_marker),
        ("at the ABORT marker", h.abort_marker),
        ("in the active segment", leader.log_end_offset() - 2),
        ("everything", 0),
    ];
    let full_dir = tempfile::tempdir().expect("tempdir");
    let mut full = open(full_dir.path(), small_segments(), false);
    feed(&mut full, &history);

    for (what, offset) in points {
        let kept = kept(&history, offset);
        let expected_end = kept.last().map_or(0, |b| base_and_last(b).1 + 1);
        let f_dir = tempfile::tempdir().expect("tempdir");
        let r_dir = tempfile::tempdir().expect("tempdir");
        let mut f = open(f_dir.path(), small_segments(), false);
        feed(&mut f, &history);
        f.truncate_to(offset).expect("truncate");
        assert_eq!(f.log_end_offset(), expected_end, "{what}");
        assert!(!f_dir.path().join(TRUNCATION_FILE).exists());
        let mut r = open(r_dir.path(), small_segments(), false);
        feed(&mut r, &kept);
        assert_same_state(&f, &r);
        assert_eq!(data_files(f_dir.path()), data_files(r_dir.path()), "{what}");
        if offset == h.aborted_first + 1 {
            // Both transactions open again, nothing aborted yet.
            assert_eq!(
                f.open_transactions(),
                vec![(1, 0, h.committed_first), (2, 0, h.aborted_first)]
            );
            assert!(f.aborted_transactions(0, i64::MAX).is_empty());
            assert_eq!(f.last_stable_offset(), h.committed_first);
        }
        if offset == h.abort_marker {
            assert_eq!(f.open_transactions(), vec![(2, 0, h.aborted_first)]);
        }

        // Reopened, cleanly and after a crash, it still matches.
        f.close().expect("close");
        let f = open(f_dir.path(), small_segments(), true);
        assert_same_state(&f, &r);
        drop(f);
        let mut f = open(f_dir.path(), small_segments(), false);
        assert_same_state(&f, &r);

        // As a new leader, it takes appends exactly as the other log does.
        for log in [&mut f, &mut r] {
            for (pid, epoch, _) in log.open_transactions() {
                log.append_txn_marker(pid, epoch, false, 0, 6, NOW_MS)
                    .expect("abort");
            }
            log.append_as_leader(&plain(2), 6, NOW_MS).expect("append");
        }
        assert_same_state(&f, &r);
        drop(f);
        drop(r);
        let f = open(f_dir.path(), small_segments(), false);
        let r = open(r_dir.path(), small_segments(), false);
        assert_same_state(&f, &r);

        // Truncated again and fed the rest of the leader's log, it is the full replica.
        let mut f = f;
        f.truncate_to(expected_end).expect("truncate");
        feed(&mut f, &history[kept.len()..]);
        assert_same_state(&f, &full);
        assert_eq!(
            data_files(f_dir.path()),
            data_files(full_dir.path()),
            "{what}"
        );
    }
}

#[test]
fn truncate_to_bounds_and_below_the_local_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments(), false);
    leader_history(&mut log);
    let leo = log.log_end_offset();
    let before = files(dir.path(), |_, _| true);
    let generation = log.generation;
    // At or beyond the end: nothing changes, not even the compaction generation.
    log.truncate_to(leo).expect("no-op");
    log.truncate_to(leo + 100).expect("no-op");
    assert_eq!(files(dir.path(), |_, _| true), before);
    assert_eq!(log.generation, generation);
    assert!(matches!(
        log.truncate_to(-1),
        Err(LogError::OffsetOutOfRange { offset: -1, .. })
    ));

    // Segments below the log start gone (DeleteRecords + retention): truncating below the
    // first local segment empties the log and starts it at the offset.
    let bases = segment_bases(dir.path());
    log.delete_records_before(bases[2]).expect("delete records");
    assert_eq!(segment_bases(dir.path())[0], bases[2]);
    log.truncate_to(bases[1]).expect("truncate");
    assert_eq!(segment_bases(dir.path()), vec![bases[1]]);
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (bases[1], bases[1], bases[1])
    );
    assert!(log.leader_epochs.entries().is_empty());
    assert!(log.active_producers().is_empty());
}

#[test]
fn truncate_fully_and_start_at_then_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(dir.path().join("l").as_path(), small_segments(), false);
    leader_history(&mut leader);
    let history = all_batches(&leader);
    let start = base_and_last(&history[10]).0;
    leader.delete_records_before(start).expect("delete records");

    // A follower with a divergent log of its own, below the leader's log start.
    let f_dir = dir.path().join("f");
    let mut f = open(&f_dir, small_segments(), false);
    f.append_as_leader(&transactional(9, 0, 3), 0, NOW_MS)
        .expect("append");
    f.append_txn_marker(9, 0, false, 0, 0, NOW_MS)
        .expect("abort");
    f.append_as_leader(&idempotent(8, 0, 2), 0, NOW_MS)
        .expect("append");
    f.append_as_leader(&transactional(9, 3, 3), 0, NOW_MS)
        .expect("append");
    f.roll(NOW_MS).expect("roll"); // leaves a producer snapshot behind
    f.set_replicated(true);
    f.set_high_watermark(2);
    assert!(matches!(
        leader.read(f.log_end_offset(), 1 << 20, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    f.truncate_fully_and_start_at(start)
        .expect("truncate fully");
    let start_name = format!("{start:020}.log");
    assert_eq!(
        files(&f_dir, |n, _| n.ends_with(".log")
            || n.ends_with(".snapshot"))
        .into_keys()
        .collect::<Vec<_>>(),
        vec![start_name]
    );
    assert_eq!(
        (f.log_start_offset(), f.log_end_offset(), f.high_watermark()),
        (start, start, start)
    );
    assert!(f.leader_epochs.entries().is_empty());
    assert!(f.active_producers().is_empty() && f.open_transactions().is_empty());
    assert!(f.aborted_transactions(0, i64::MAX).is_empty());
    assert_eq!(f.recovery_point(), start);

    // It follows from there and ends where a follower that started empty at `start` ends.
    replicate(&leader, &mut f, 1 << 20);
    let r_dir = dir.path().join("r");
    let mut r = open(&r_dir, small_segments(), false);
    r.truncate_fully_and_start_at(start).expect("start");
    replicate(&leader, &mut r, 1 << 20);
    f.set_high_watermark(f.log_end_offset());
    assert_same_state(&f, &r);
    assert_eq!(all_batches(&f), history[10..].to_vec());
    drop(f);
    let f = open(&f_dir, small_segments(), false);
    assert_same_state(&f, &r);
    assert_eq!(f.log_start_offset(), start);
}

#[test]
fn interrupted_truncation_is_completed_on_open() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path(), small_segments(), false);
    let h = leader_history(&mut leader);
    let history = all_batches(&leader);
    let offset = h.aborted_first + 1;
    let r_dir = tempfile::tempdir().expect("tempdir");
    let mut reference = open(r_dir.path(), small_segments(), false);
    feed(&mut reference, &kept(&history, offset));

    // Crash right after the marker was written, and after some segments were deleted.
    for delete_newest_segments in [0, 1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = open(dir.path(), small_segments(), false);
        feed(&mut f, &history);
        fsutil::write_atomic(
            dir.path(),
            TRUNCATION_FILE,
            &Truncation::To(offset).encode(),
        )
        .expect("marker");
        drop(f);
        let bases = segment_bases(dir.path());
        for base in bases.iter().rev().take(delete_newest_segments) {
            std::fs::remove_file(fsutil::offset_file_path(dir.path(), *base, "log")).expect("rm");
        }
        let f = open(dir.path(), small_segments(), false);
        assert_same_state(&f, &reference);
        assert!(!dir.path().join(TRUNCATION_FILE).exists());
    }

    // A full truncation interrupted before it deleted anything.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = open(dir.path(), small_segments(), false);
    feed(&mut f, &history);
    fsutil::write_atomic(
        dir.path(),
        TRUNCATION_FILE,
        &Truncation::FullyAndStartAt(1000).encode(),
    )
    .expect("marker");
    drop(f);
    let f = open(dir.path(), small_segments(), false);
    assert_eq!((f.log_start_offset(), f.log_end_offset()), (1000, 1000));
    assert_eq!(segment_bases(dir.path()), vec![1000]);
    assert!(f.active_producers().is_empty() && f.leader_epochs.entries().is_empty());
    drop(f);

    // A damaged marker: which records must go is unknown, so the log does not open.
    std::fs::write(dir.path().join(TRUNCATION_FILE), b"STRC garbage").expect("write");
    assert!(matches!(
        Log::open(dir.path(), small_segments(), false, NOW_MS),
        Err(LogError::StorageCorruption(_))
    ));
}

#[test]
fn a_failed_truncation_blocks_writes_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments(), false);
    log.append_as_leader(&plain(3), 0, NOW_MS).expect("append");
    // As `run_truncation` leaves it when the truncation itself returns an error.
    fsutil::write_atomic(dir.path(), TRUNCATION_FILE, &Truncation::To(1).encode()).expect("marker");
    log.failed_truncation = Some(1);
    assert!(matches!(
        log.append_as_leader(&plain(1), 0, NOW_MS),
        Err(LogError::StorageCorruption(_))
    ));
    assert!(log.append_as_follower(&plain(1), NOW_MS).is_err());
    assert!(log.append_txn_marker(1, 0, true, 0, 0, NOW_MS).is_err());
    assert!(log.truncate_to(0).is_err());
    drop(log);
    let log = open(dir.path(), small_segments(), false);
    assert_eq!(
        log.log_end_offset(),
        0,
        "the batch holding offset 1 is gone"
    );
}

#[test]
fn high_watermark_of_replicated_and_unreplicated_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    // 0..=9. Unreplicated: the high watermark is the log end, whatever the caller says.
    log.append_as_leader(&plain(10), 0, NOW_MS).expect("append");
    log.set_high_watermark(3);
    assert_eq!(log.high_watermark(), 10);
    assert!(!log.is_replicated());

    log.set_replicated(true);
    assert_eq!(log.high_watermark(), 10, "stays at the log end");
    log.append_as_leader(&plain(3), 0, NOW_MS).expect("append"); // 10..=12
    log.append_as_leader(&transactional(4, 0, 2), 0, NOW_MS)
        .expect("append"); // 13..=14
    assert_eq!(log.high_watermark(), 10, "appends do not move it");
    log.set_replicated(true);
    assert_eq!(
        log.high_watermark(),
        10,
        "set_replicated again changes nothing"
    );
    let r = log.read(0, 1 << 20, true).expect("read");
    assert_eq!(r.high_watermark, 10);
    assert_eq!(
        headers(&r.records).last().map(|h| h.last_offset()),
        Some(14)
    );
    assert_eq!(log.last_stable_offset(), 10, "LSO <= HW");
    assert_eq!(r.last_stable_offset, 10);
    log.set_high_watermark(14);
    assert_eq!(
        log.last_stable_offset(),
        13,
        "the open transaction holds it"
    );
    log.set_high_watermark(100);
    assert_eq!(log.high_watermark(), 15, "clamped to the log end");
    log.set_high_watermark(12);
    assert_eq!(log.high_watermark(), 12, "a follower's may go back");
    assert_eq!(log.read(0, 100, true).expect("read").high_watermark, 12);

    // DeleteRecords stops at the high watermark; -1 means it.
    assert!(matches!(
        log.delete_records_before(13),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(-1).expect("delete"), 12);
    log.set_high_watermark(0);
    assert_eq!(log.high_watermark(), 12, "never below the log start");

    // Truncation below it clamps it.
    log.set_high_watermark(15);
    log.truncate_to(13).expect("truncate");
    assert_eq!((log.log_end_offset(), log.high_watermark()), (13, 13));
    assert_eq!(log.last_stable_offset(), 13);

    log.set_replicated(false);
    log.append_as_leader(&plain(2), 0, NOW_MS).expect("append");
    assert_eq!(log.high_watermark(), 15, "follows the log end again");
    assert_eq!(log.last_stable_offset(), 15);
    // A reopened log starts unreplicated; never checkpointed, it starts at its log end.
    drop(log);
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.set_replicated(true);
    assert_eq!(log.high_watermark(), 15);
}

/// Appends single-record batches until `segments` segments exist; returns their bases.
fn fill_segments(log: &mut Log, segments: usize, batch: impl Fn(usize) -> Vec<u8>) -> Vec<i64> {
    let mut i = 0;
    while log.snapshot().segments < segments {
        log.append_as_leader(&batch(i), 0, NOW_MS).expect("append");
        i += 1;
    }
    log.segments.keys().copied().collect()
}

#[test]
fn retention_and_the_tier_stay_below_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        retention_bytes: 0,
        ..small_segments()
    };
    let mut log = open(dir.path(), cfg, false);
    let bases = fill_segments(&mut log, 5, |_| plain(3));
    log.set_replicated(true);
    log.set_high_watermark(bases[2] + 1);
    log.apply_retention(NOW_MS).expect("retention");
    assert_eq!(
        log.log_start_offset(),
        bases[2],
        "only segments below the HW"
    );
    assert_eq!(log.segments.keys().next(), Some(&bases[2]));
    log.set_high_watermark(log.log_end_offset());
    log.apply_retention(NOW_MS).expect("retention");
    assert_eq!(log.log_start_offset(), log.log_end_offset());

    let dir = tempfile::tempdir().expect("tempdir");
    let tiered = LogConfig {
        remote_storage_enable: true,
        ..small_segments()
    };
    let mut log = open(dir.path(), tiered, false);
    let bases = fill_segments(&mut log, 5, |_| plain(3));
    log.set_replicated(true);
    log.set_high_watermark(bases[2]);
    let ends: Vec<i64> = log
        .segments_for_upload(10)
        .expect("candidates")
        .iter()
        .map(|s| s.end_offset)
        .collect();
    assert_eq!(ends, vec![bases[1] - 1, bases[2] - 1]);
    log.set_highest_offset_in_remote(bases[2] - 1);
    // A truncation below what the tier holds makes the log forget it: nothing written
    // after the truncation may be deleted locally before it is uploaded.
    log.truncate_to(bases[1]).expect("truncate");
    assert_eq!(log.highest_offset_in_remote(), bases[1] - 1);
}

/// A batch of one keyed record, for compacted topics.
fn keyed(key: &str, value: &str) -> Vec<u8> {
    keyed_batch(&[(Some(key), Some(value))], NOW_MS, 0, None)
}

fn compacted() -> LogConfig {
    LogConfig {
        compact: true,
        retention_ms: -1,
        min_cleanable_dirty_ratio: 0.01,
        ..small_segments()
    }
}

#[test]
fn compaction_stays_below_the_high_watermark_and_truncation_voids_a_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(dir.path().join("l").as_path(), compacted(), false);
    let keys = ["a", "b", "c"];
    let bases = fill_segments(&mut leader, 5, |i| keyed(keys[i % 3], "value"));
    leader.set_replicated(true);
    leader.set_high_watermark(bases[2]);
    let plan = leader
        .plan_compaction(NOW_MS)
        .expect("plan")
        .expect("needed");
    assert_eq!(
        plan.segment_count(),
        2,
        "segments ending at or below the HW"
    );
    leader.set_high_watermark(leader.log_end_offset());
    let plan = leader
        .plan_compaction(NOW_MS)
        .expect("plan")
        .expect("needed");
    assert_eq!(plan.segment_count(), 4, "every inactive segment");
    drop(plan);
    let history = all_batches(&leader);

    // A plan made, then its segments truncated and written again with the same sizes but
    // (in general) other records: the output must not replace them.
    for truncate in [false, true] {
        let f_dir = dir.path().join(format!("f{truncate}"));
        let mut f = open(&f_dir, compacted(), false);
        feed(&mut f, &history);
        let output = f
            .plan_compaction(NOW_MS)
            .expect("plan")
            .expect("needed")
            .execute()
            .expect("execute");
        if truncate {
            f.truncate_to(bases[1]).expect("truncate");
            feed(&mut f, &history[bases[1] as usize..]);
            assert_eq!(segment_bases(&f_dir), bases, "same segments as before");
        }
        let finished = f.finish_compaction(output).expect("finish");
        assert_eq!(finished.is_some(), !truncate);
        if truncate {
            assert_eq!(all_batches(&f), history);
        }
    }
}

#[test]
fn truncation_cuts_both_indexes_to_the_kept_batches() {
    // Timestamps grow with every batch, so every time-index entry names the batch that
    // wrote it, and the indexes of a truncated segment must equal those of a segment that
    // only ever held the kept batches.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(dir.path().join("l").as_path(), small_segments(), false);
    for i in 0..40 {
        let b = BatchBuilder::new(2).timestamp(NOW_MS + 10 * i).build();
        leader.append_as_leader(&b, 0, NOW_MS).expect("append");
    }
    let history = all_batches(&leader);
    let bases = segment_bases(dir.path().join("l").as_path());
    assert!(bases.len() >= 3, "{bases:?}");
    let with_indexes = |d: &Path| {
        let mut all = data_files(d);
        let non_empty: Vec<String> = all
            .keys()
            .filter_map(|n| n.strip_suffix(".log").map(str::to_string))
            .collect();
        for base in non_empty {
            let name = format!("{base}.timeindex");
            all.insert(
                name.clone(),
                std::fs::read(d.join(&name)).expect("timeindex"),
            );
        }
        all
    };
    // Inside the first segment (then inactive), inside a middle one, inside the active one.
    for offset in [bases[0] + 6, bases[1] + 4, leader.log_end_offset() - 4] {
        let f_dir = dir.path().join(format!("f{offset}"));
        let r_dir = dir.path().join(format!("r{offset}"));
        let mut f = open(&f_dir, small_segments(), false);
        feed(&mut f, &history);
        f.truncate_to(offset).expect("truncate");
        let mut r = open(&r_dir, small_segments(), false);
        feed(&mut r, &kept(&history, offset));
        assert_eq!(
            with_indexes(&f_dir),
            with_indexes(&r_dir),
            "offset {offset}"
        );
        let last_ts = NOW_MS + 10 * (offset / 2 - 1) + 1;
        // The last batch's second record holds the max timestamp.
        assert_eq!(
            f.max_timestamp_and_offset().expect("max").pair(),
            Some((last_ts, offset - 1))
        );
        for ts in [NOW_MS, last_ts - 15, last_ts, last_ts + 1] {
            assert_eq!(
                f.offset_for_timestamp(ts).expect("lookup").pair(),
                r.offset_for_timestamp(ts).expect("lookup").pair(),
                "offset {offset} timestamp {ts}"
            );
        }
        assert_eq!(
            f.offset_for_timestamp(last_ts + 1).expect("lookup").pair(),
            None
        );
        // The indexes are what a clean open trusts.
        f.close().expect("close");
        let f = open(&f_dir, small_segments(), true);
        assert_same_state(&f, &r);
        assert_eq!(
            with_indexes(&f_dir),
            with_indexes(&r_dir),
            "offset {offset}"
        );
    }
}

#[test]
fn high_watermark_checkpoint_survives_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default(), false);
    log.set_replicated(true);
    log.append_as_leader(&plain(5), 0, NOW_MS).expect("append");
    log.append_as_leader(&plain(5), 0, NOW_MS).expect("append");
    log.set_high_watermark(6);
    assert!(log.checkpoint_high_watermark().expect("checkpoint"));
    assert!(
        !log.checkpoint_high_watermark().expect("checkpoint"),
        "unchanged: nothing to write"
    );
    log.set_high_watermark(8);
    drop(log); // a crash: the last checkpoint (6) is what survives

    let mut log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.high_watermark(), 10, "unreplicated: the log end");
    log.set_replicated(true);
    assert_eq!(log.high_watermark(), 6, "replicated again: the checkpoint");
    log.set_high_watermark(9);
    log.close().expect("close"); // a clean close writes the current one

    let mut log = open(dir.path(), LogConfig::default(), true);
    log.truncate_to(5).expect("truncate");
    log.set_replicated(true);
    assert_eq!(log.high_watermark(), 5, "never above the log end");
    log.set_replicated(false);
    log.append_as_leader(&plain(3), 0, NOW_MS).expect("append");
    log.close().expect("close");

    let mut log = open(dir.path(), LogConfig::default(), true);
    log.set_replicated(true);
    assert_eq!(
        log.high_watermark(),
        8,
        "a log last closed unreplicated starts at its log end"
    );
}
