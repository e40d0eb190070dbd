//! Tests of log compaction: plan / execute / finish, tombstones, compressed
//! batches, crash recovery of the swap, and races with retention and appends.

use std::path::Path;

use crate::batch::{check_crc, RecordBatchHeader};
use crate::cleaner;
use crate::records;
use crate::test_util::keyed_batch;
use crate::{Log, LogConfig, LogError};

const NOW_MS: i64 = 1_700_000_000_000;

fn one(key: &str, value: Option<&str>, ts: i64) -> Vec<u8> {
    keyed_batch(&[(Some(key), value)], ts, 0, None)
}

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        retention_ms: -1,
        compact: true,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

type Rec = (i64, Option<String>, Option<String>);

/// Every record of the log as `(offset, key, value)`, checking CRCs and header fields.
fn all_records(log: &Log) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let r = log.read(at, 1 << 20, true).expect("read");
        if r.records.is_empty() {
            break;
        }
        let bytes = &r.records[..];
        let mut pos = 0;
        while pos < bytes.len() {
            let h = RecordBatchHeader::parse(&bytes[pos..]).expect("header");
            let batch = &bytes[pos..pos + h.size_bytes()];
            check_crc(batch, &h).expect("crc");
            let section = records::records_section(batch, &h).expect("section");
            let mut n = 0;
            records::for_each_record(&section, |rec| {
                n += 1;
                let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                out.push((
                    h.base_offset + rec.offset_delta as i64,
                    s(rec.key),
                    s(rec.value),
                ));
                Ok(())
            })
            .expect("records");
            assert_eq!(n, h.records_count, "records count matches");
            at = h.last_offset() + 1;
            pos += h.size_bytes();
        }
    }
    out
}

fn compact(log: &mut Log, now_ms: i64) -> Option<cleaner::CompactionStats> {
    let plan = log.plan_compaction(now_ms).expect("plan")?;
    let out = plan.execute().expect("execute");
    log.finish_compaction(out).expect("finish")
}

fn dir_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Appends `rounds` updates of keys k0..k{keys-1}, value "v{round}", one record per batch.
fn fill(log: &mut Log, keys: usize, rounds: usize) {
    for round in 0..rounds {
        for k in 0..keys {
            let v = format!("v{round}");
            log.append_as_leader(&one(&format!("k{k}"), Some(&v), NOW_MS), 0, NOW_MS)
                .expect("append");
        }
    }
}

#[test]
fn keeps_latest_record_per_key_with_original_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 20);
    let before = log.snapshot();
    assert!(before.segments > 3, "{before:?}");
    let active_base = *log.segments.keys().next_back().unwrap();
    let stats = compact(&mut log, NOW_MS).expect("compacted");
    assert!(stats.records_removed > 0);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(log.cleaner_checkpoint(), active_base);
    let recs = all_records(&log);
    // Cleaned part: exactly one record per key, the latest before the active segment.
    let cleaned: Vec<&Rec> = recs.iter().filter(|r| r.0 < active_base).collect();
    let mut keys: Vec<&str> = cleaned.iter().map(|r| r.1.as_deref().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), cleaned.len(), "one record per key: {cleaned:?}");
    for r in &cleaned {
        let k: i64 = r.1.as_ref().unwrap()[1..].parse().unwrap();
        // offset = round * 3 + k, value = v{round}
        assert_eq!(r.2.as_deref(), Some(format!("v{}", (r.0 - k) / 3).as_str()));
        assert!(r.0 + 3 >= active_base, "not the latest: {r:?}");
    }
    // Offsets increase; the active segment is untouched.
    assert!(recs.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(recs.last().unwrap().0, 59);
    assert!(log.snapshot().size_bytes < before.size_bytes);
    // Nothing more to do until new data arrives.
    assert!(log.plan_compaction(NOW_MS).unwrap().is_none());
    // Reopen (clean and unclean) keeps the result and the checkpoint.
    let expect = recs.clone();
    log.close().expect("close");
    let log = Log::open(dir.path(), compact_config(), true, NOW_MS).expect("reopen");
    assert_eq!(all_records(&log), expect);
    assert_eq!(log.cleaner_checkpoint(), active_base);
    drop(log);
    let log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("reopen unclean");
    assert_eq!(all_records(&log), expect);
    // Fetch from inside a gap starts at the next surviving batch; timestamps still found.
    let r = log.read(1, 1 << 20, true).expect("read in gap");
    assert!(!r.records.is_empty());
    assert!(log.offset_for_timestamp(0).unwrap().is_some());
}

#[test]
fn second_compaction_merges_and_uses_only_dirty_part_for_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 4, 10);
    compact(&mut log, NOW_MS).expect("first");
    let segs_after_first = log.snapshot().segments;
    fill(&mut log, 4, 10);
    compact(&mut log, NOW_MS).expect("second");
    let recs = all_records(&log);
    let cp = log.cleaner_checkpoint();
    let cleaned: Vec<&Rec> = recs.iter().filter(|r| r.0 < cp).collect();
    assert!(cleaned.len() <= 4, "{cleaned:?}");
    assert!(log.snapshot().segments <= segs_after_first + 2);
}

#[test]
fn non_compact_topic_never_planned_and_ratio_gates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        compact: false,
        ..compact_config()
    };
    let mut log = Log::open(dir.path(), cfg, false, NOW_MS).expect("open");
    fill(&mut log, 2, 20);
    assert!(log.plan_compaction(NOW_MS).unwrap().is_none());
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio: 0.9,
        ..compact_config()
    });
    compact(&mut log, NOW_MS).expect("all dirty: ratio 1.0");
    // New dirty data is a small fraction of the cleanable log: below 0.9.
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio: 0.99,
        ..compact_config()
    });
    fill(&mut log, 2, 5);
    assert!(log.plan_compaction(NOW_MS).unwrap().is_none());
    // max.compaction.lag.ms forces it.
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio: 0.99,
        max_compaction_lag_ms: 1_000,
        ..compact_config()
    });
    assert!(log.plan_compaction(NOW_MS + 5_000).unwrap().is_some());
    // min.compaction.lag.ms holds back young segments.
    log.set_config(LogConfig {
        min_compaction_lag_ms: 60_000,
        ..compact_config()
    });
    assert!(log.plan_compaction(NOW_MS).unwrap().is_none());
    assert!(log.plan_compaction(NOW_MS + 120_000).unwrap().is_some());
}

#[test]
fn tombstones_kept_then_removed_after_delete_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 2, 5);
    log.append_as_leader(&one("k0", None, NOW_MS), 0, NOW_MS)
        .expect("tombstone");
    let tomb_offset = log.log_end_offset() - 1;
    fill(&mut log, 0, 0);
    // Push the tombstone out of the active segment with updates of another key.
    for i in 0..10 {
        log.append_as_leader(&one("k1", Some(&format!("w{i}")), NOW_MS), 0, NOW_MS)
            .expect("append");
    }
    compact(&mut log, NOW_MS).expect("compacted");
    let recs = all_records(&log);
    let k0: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.1.as_deref() == Some("k0"))
        .collect();
    assert_eq!(k0.len(), 1, "{recs:?}");
    assert_eq!(
        (k0[0].0, k0[0].2.as_ref()),
        (tomb_offset, None),
        "tombstone kept"
    );
    // Not yet expired: nothing to do.
    assert!(log.plan_compaction(NOW_MS + 500).unwrap().is_none());
    // Expired: the cleaner runs for the tombstone alone and removes it.
    let stats = compact(&mut log, NOW_MS + 2_000).expect("tombstone run");
    assert_eq!(stats.tombstones_removed, 1);
    let recs = all_records(&log);
    assert!(
        recs.iter().all(|r| r.1.as_deref() != Some("k0")),
        "{recs:?}"
    );
    assert!(log.plan_compaction(NOW_MS + 4_000).unwrap().is_none());
}

#[test]
fn compressed_batches_rebuilt_with_original_offsets_and_valid_crc() {
    for codec in 0u8..=4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 100_000,
            ..compact_config()
        };
        let mut log = Log::open(dir.path(), cfg, false, NOW_MS).expect("open");
        let b1 = keyed_batch(
            &[
                (Some("a"), Some("1")),
                (Some("b"), Some("1")),
                (Some("c"), Some("1")),
                (Some("d"), Some("1")),
            ],
            NOW_MS,
            codec,
            Some((7, 0, 0)),
        );
        // Supersedes a and d: the first and the last record of b1.
        let b2 = keyed_batch(
            &[(Some("a"), Some("2")), (Some("d"), Some("2"))],
            NOW_MS,
            codec,
            Some((7, 0, 4)),
        );
        let b3 = keyed_batch(&[(Some("e"), Some("1"))], NOW_MS, codec, Some((7, 0, 6)));
        log.append_as_leader(&b1, 3, NOW_MS).expect("b1");
        log.append_as_leader(&b2, 3, NOW_MS).expect("b2");
        log.roll(NOW_MS).expect("roll");
        log.append_as_leader(&b3, 3, NOW_MS).expect("b3");
        let stats = compact(&mut log, NOW_MS).expect("compacted");
        assert_eq!(stats.records_removed, 2, "codec {codec}");
        let r = log.read(0, 1 << 20, true).expect("read");
        let h = RecordBatchHeader::parse(&r.records).expect("header");
        check_crc(&r.records[..h.size_bytes()], &h).expect("crc");
        assert_eq!(h.compression(), codec);
        assert_eq!(
            (h.base_offset, h.last_offset_delta, h.records_count),
            (0, 3, 2)
        );
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 0, 0)
        );
        assert_eq!(h.partition_leader_epoch, 3);
        let recs = all_records(&log);
        let got: Vec<(i64, &str, &str)> = recs
            .iter()
            .map(|r| (r.0, r.1.as_deref().unwrap(), r.2.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "b", "1"),
                (2, "c", "1"),
                (4, "a", "2"),
                (5, "d", "2"),
                (6, "e", "1")
            ],
            "codec {codec}"
        );
        // Headers survive byte for byte (the batch of b2 was copied, not rebuilt).
        let r2 = log.read(4, 1 << 20, true).expect("read");
        assert!(r2.records.windows(3).any(|w| w == [1 << 1, b'h', 1 << 1]) || codec != 0);
    }
}

#[test]
fn keyless_records_refused_in_compacted_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    for codec in [0u8, 1, 4] {
        let b = keyed_batch(
            &[(Some("a"), Some("1")), (None, Some("x"))],
            NOW_MS,
            codec,
            None,
        );
        // Only the keyless record is named (KIP-467); the batch is refused whole.
        match log.append_as_leader(&b, 0, NOW_MS) {
            Err(e @ LogError::InvalidRecords { .. }) => {
                assert_eq!(e.kafka_error_code(), 87);
                let named: Vec<_> = e.record_errors().iter().map(|r| r.batch_index).collect();
                assert_eq!(named, vec![1], "codec {codec}");
                assert!(e.record_errors()[0].message.contains("without key"));
            }
            other => panic!("expected INVALID_RECORD, got {other:?}"),
        }
    }
    assert_eq!(log.log_end_offset(), 0);
    log.set_config(LogConfig {
        compact: false,
        ..compact_config()
    });
    let b = keyed_batch(&[(None, Some("x"))], NOW_MS, 0, None);
    log.append_as_leader(&b, 0, NOW_MS)
        .expect("delete topic takes keyless");
}

#[test]
fn offset_map_budget_cleans_a_prefix_then_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    // 40 distinct keys, each written twice.
    for round in 0..2 {
        for k in 0..40 {
            log.append_as_leader(
                &one(&format!("k{k}"), Some(&format!("v{round}")), NOW_MS),
                0,
                NOW_MS,
            )
            .expect("append");
        }
    }
    let active_base = *log.segments.keys().next_back().unwrap();
    let plan = log.plan_compaction(NOW_MS).unwrap().expect("plan");
    // Room for 10 keys.
    let out = plan.with_map_memory_bytes(320).execute().expect("execute");
    log.finish_compaction(out)
        .expect("finish")
        .expect("swapped");
    let cp = log.cleaner_checkpoint();
    assert!(cp > 0 && cp < active_base, "partial: {cp} < {active_base}");
    let mut guard = 0;
    while log.cleaner_checkpoint() < active_base {
        let plan = log.plan_compaction(NOW_MS).unwrap().expect("more to do");
        let out = plan.with_map_memory_bytes(320).execute().expect("execute");
        log.finish_compaction(out)
            .expect("finish")
            .expect("swapped");
        guard += 1;
        assert!(guard < 50);
    }
    let recs = all_records(&log);
    let cleaned: Vec<&Rec> = recs.iter().filter(|r| r.0 < active_base).collect();
    let mut keys: Vec<&str> = cleaned.iter().map(|r| r.1.as_deref().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), cleaned.len());
}

#[test]
fn append_during_execute_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 10);
    let plan = log.plan_compaction(NOW_MS).unwrap().expect("plan");
    let out = plan.execute().expect("execute");
    // Appends (and rolls) while the cleaner works without the lock.
    fill(&mut log, 3, 10);
    let leo = log.log_end_offset();
    log.finish_compaction(out)
        .expect("finish")
        .expect("swapped");
    assert_eq!(log.log_end_offset(), leo);
    let recs = all_records(&log);
    assert_eq!(recs.last().unwrap().0, leo - 1);
    assert!(
        recs.iter().filter(|r| r.0 >= 30).count() == 30,
        "new data untouched"
    );
    assert!(!dir_files(dir.path())
        .iter()
        .any(|f| f.contains(".cleaned") || f.contains(".swap")));
}

#[test]
fn delete_records_or_retention_during_execute_discards_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 10);
    let second_base = *log.segments.keys().nth(1).unwrap();
    let plan = log.plan_compaction(NOW_MS).unwrap().expect("plan");
    let out = plan.execute().expect("execute");
    log.delete_records_before(second_base)
        .expect("delete records");
    assert!(log.finish_compaction(out).expect("finish").is_none());
    assert!(!dir_files(dir.path()).iter().any(|f| f.contains(".cleaned")));
    assert_eq!(log.log_start_offset(), second_base);
    // The next run works on what is left.
    compact(&mut log, NOW_MS).expect("compacted");
    assert!(all_records(&log).iter().all(|r| r.0 >= second_base));

    // Retention deleting segments while the cleaner runs.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 10);
    let plan = log.plan_compaction(NOW_MS).unwrap().expect("plan");
    log.set_config(LogConfig {
        retention_ms: 1,
        ..compact_config()
    });
    assert!(log.apply_retention(NOW_MS + 10_000).unwrap() > 0);
    // The plan's handles still read the deleted files.
    let out = plan.execute().expect("execute on deleted files");
    assert!(log.finish_compaction(out).expect("finish").is_none());
    assert!(!dir_files(dir.path()).iter().any(|f| f.contains(".cleaned")));
}

#[test]
fn crash_before_swap_discards_cleaned_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 10);
    let before = all_records(&log);
    let out = log
        .plan_compaction(NOW_MS)
        .unwrap()
        .unwrap()
        .execute()
        .unwrap();
    std::mem::forget(out); // crash: the .cleaned files stay
    drop(log);
    assert!(dir_files(dir.path())
        .iter()
        .any(|f| f.ends_with(".log.cleaned")));
    let log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("reopen");
    assert_eq!(all_records(&log), before);
    assert!(!dir_files(dir.path()).iter().any(|f| f.contains(".cleaned")));
}

/// Runs plan/execute and the first `steps` of the swap, then "crashes".
fn crash_during_swap(steps: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 10);
    let reference_dir = tempfile::tempdir().expect("tempdir");
    // The expected result: the same compaction completed normally on a copy.
    for f in dir_files(dir.path()) {
        std::fs::copy(dir.path().join(&f), reference_dir.path().join(&f)).unwrap();
    }
    let mut reference = Log::open(reference_dir.path(), compact_config(), false, NOW_MS).unwrap();
    compact(&mut reference, NOW_MS).expect("reference");
    let expected = all_records(&reference);
    drop(reference);

    let mut out = log
        .plan_compaction(NOW_MS)
        .unwrap()
        .unwrap()
        .execute()
        .unwrap();
    assert!(out.outputs.len() >= 2, "want several output segments");
    cleaner::begin_swap(dir.path(), &out.outputs).unwrap();
    out.committed = true;
    let d = dir.path();
    let mut done = 0;
    'outer: for o in &out.outputs {
        for (base, _) in &o.replaced {
            if done == steps {
                break 'outer;
            }
            if *base != o.base_offset {
                for s in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(crate::fsutil::offset_file_path(d, *base, s));
                }
            }
            done += 1;
        }
        if done == steps {
            break;
        }
        // Rename only the offset index, then crash.
        std::fs::rename(
            crate::fsutil::offset_file_path(d, o.base_offset, "index.swap"),
            crate::fsutil::offset_file_path(d, o.base_offset, "index"),
        )
        .unwrap();
        done += 1;
        if done == steps {
            break;
        }
        cleaner::complete_swap_files(d, o.base_offset).unwrap();
        done += 1;
    }
    std::mem::forget(out);
    drop(log);
    let log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("reopen");
    assert_eq!(all_records(&log), expected, "after {steps} steps");
    let files = dir_files(dir.path());
    assert!(
        !files
            .iter()
            .any(|f| f.contains(".swap") || f.contains(".cleaned") || f == "cleaner-swap"),
        "{files:?}"
    );
}

#[test]
fn crash_at_every_step_of_the_swap_recovers_to_the_compacted_log() {
    for steps in 0..12 {
        crash_during_swap(steps);
    }
}

#[test]
fn swap_without_manifest_uses_swap_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("open");
    fill(&mut log, 3, 10);
    let mut out = log
        .plan_compaction(NOW_MS)
        .unwrap()
        .unwrap()
        .execute()
        .unwrap();
    cleaner::begin_swap(dir.path(), &out.outputs).unwrap();
    out.committed = true;
    std::mem::forget(out);
    drop(log);
    std::fs::remove_file(dir.path().join(cleaner::SWAP_MANIFEST_FILE)).unwrap();
    let log = Log::open(dir.path(), compact_config(), false, NOW_MS).expect("reopen");
    let recs = all_records(&log);
    assert!(recs.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(recs.last().unwrap().0, 29);
}
