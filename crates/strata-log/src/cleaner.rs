//! Log compaction (Kafka's `Cleaner`, `SkimpyOffsetMap` and the cleaning
//! policy of `LogCleanerManager`), split so that the expensive part runs
//! without the partition's lock:
//!
//! 1. [`crate::Log::plan_compaction`] (under the lock, cheap): decides whether
//!    the log needs cleaning and captures the inactive segments that may be
//!    cleaned, with open file handles;
//! 2. [`CompactionPlan::execute`] (no lock): builds the key → latest-offset map
//!    from the dirty part (beyond the cleaner checkpoint), bounded by
//!    [`OFFSET_MAP_MEMORY_BYTES`], and writes the cleaned segments, with their
//!    indexes, under `*.cleaned` names, fsynced;
//! 3. [`crate::Log::finish_compaction`] (under the lock): checks that the
//!    segments it read are still the log's (same base offsets and sizes, and no
//!    truncation since the plan), then swaps the new ones in:
//!    write the swap manifest, rename `.cleaned` → `.swap` (the commit point),
//!    delete the replaced segments, rename `.swap` → final names, advance the
//!    cleaner checkpoint.
//!
//! Crash safety: on open, `.cleaned` files are deleted (the swap never
//! started) and `.swap` files are completed: the segments they replace (the
//! manifest names the exact offset range) are deleted and the swap files take
//! their names. Each output segment replaces a disjoint range of old
//! segments, so a crash between two of them leaves a consistent log.
//!
//! Semantics (differences from Kafka are marked):
//! * only the latest record of each key survives; offsets never change, so the
//!   log has gaps; records without a key are dropped, as Kafka does;
//! * the active segment, any segment holding records younger than
//!   `min.compaction.lag.ms`, and any segment reaching the high watermark is never
//!   cleaned (Kafka stops at the last stable offset, which the high watermark
//!   bounds; Strata does not stop at open transactions);
//! * a log is cleaned when dirty bytes / cleanable bytes reaches
//!   `min.cleanable.dirty.ratio`, when its oldest dirty data is older than
//!   `max.compaction.lag.ms`, or when a retained tombstone has expired;
//! * a tombstone (null value) is removed once its batch's max timestamp is
//!   more than `delete.retention.ms` ago (Kafka: `delete.retention.ms` after
//!   the segment holding it was first cleaned; Strata's rule can drop a
//!   tombstone carrying an old producer timestamp on its first cleaning);
//! * a batch whose records all survive is copied byte for byte; a batch that
//!   lost some is rebuilt from the surviving records' original bytes, keeping
//!   base offset, last offset delta, producer id/epoch, base sequence,
//!   partition leader epoch and codec (records are copied, not re-encoded, so
//!   headers are preserved exactly); a batch that lost all records is dropped
//!   (Kafka keeps an empty batch when it is a producer's last; Strata's
//!   producer state comes from snapshots and the active segment);
//! * control batches are kept; transactions are not considered (no aborted
//!   transaction removal);
//! * neighbouring segments are merged while the result fits `segment.bytes`.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{RecordBatchHeader, BATCH_HEADER_SIZE_BYTES};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::fsutil::{
    self, offset_file_path, parse_offset_file_name, LOG_SUFFIX, OFFSET_INDEX_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use crate::records::{self, RawRecord};
use crate::segment::SegmentFileWriter;

/// Memory budget of the offset map of one cleaning (Kafka's dedupe buffer is
/// 128 MiB shared by its cleaner threads). When the dirty part has more keys
/// than fit, only a prefix of it is cleaned and the rest waits for the next run.
pub const OFFSET_MAP_MEMORY_BYTES: usize = 16 << 20;
/// Approximate memory per map entry: a 16-byte key hash, an 8-byte offset and
/// the hash table's control byte and spare capacity.
const OFFSET_MAP_ENTRY_BYTES: usize = 32;
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
pub(crate) const SWAP_SUFFIX: &str = ".swap";
/// Lists `base end` of every output segment of the swap in progress.
pub(crate) const SWAP_MANIFEST_FILE: &str = "cleaner-swap";

/// The hash map key is already a hash: use its low bits as is.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

/// Key → offset of its latest record in the mapped range. Keys are stored as
/// 128-bit hashes (Kafka stores MD5 digests), so memory does not depend on key size.
struct OffsetMap {
    entries: HashMap<u128, i64, BuildHasherDefault<PassThroughHasher>>,
    capacity: usize,
}

fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    ((half(0x5a) as u128) << 64) | half(0xa5) as u128
}

impl OffsetMap {
    fn new(memory_bytes: usize) -> Self {
        OffsetMap {
            entries: HashMap::default(),
            capacity: (memory_bytes / OFFSET_MAP_ENTRY_BYTES).max(1),
        }
    }
    fn put(&mut self, key: &[u8], offset: i64) {
        self.entries.insert(key_hash(key), offset);
    }
    fn get(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(&key_hash(key)).copied()
    }
}

/// One segment a plan may read.
pub(crate) struct PlannedSegment {
    pub(crate) base_offset: i64,
    pub(crate) size_bytes: u64,
    /// Base offset of the following segment (exclusive end of this one's offsets).
    pub(crate) next_base_offset: i64,
    pub(crate) file: File,
}

/// What to clean, captured under the log's lock by [`crate::Log::plan_compaction`].
pub struct CompactionPlan {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) now_ms: i64,
    /// Cleaner checkpoint: offsets below it have been cleaned before.
    pub(crate) first_dirty_offset: i64,
    /// Inactive segments from the first one up to the first uncleanable one.
    pub(crate) segments: Vec<PlannedSegment>,
    pub(crate) map_memory_bytes: usize,
    /// The log's generation when planned: a truncation since then voids the plan.
    pub(crate) generation: u64,
}

/// Numbers of one cleaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Segments read and replaced.
    pub segments_in: usize,
    /// Segments written.
    pub segments_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The cleaner checkpoint after this cleaning.
    pub cleaned_up_to: i64,
}

pub(crate) struct OutputSegment {
    pub(crate) base_offset: i64,
    /// Exclusive end of the replaced offset range (the next segment's base).
    pub(crate) end_offset: i64,
    /// `(base offset, size)` of the replaced segments, in order.
    pub(crate) replaced: Vec<(i64, u64)>,
    pub(crate) size_bytes: u64,
}

/// Cleaned segments written under `.cleaned` names, ready for
/// [`crate::Log::finish_compaction`]. Dropping it unused deletes the files.
pub struct CompactedOutput {
    pub(crate) dir: PathBuf,
    pub(crate) outputs: Vec<OutputSegment>,
    /// New cleaner checkpoint.
    pub(crate) end_offset: i64,
    /// Smallest batch max timestamp of a retained tombstone.
    pub(crate) oldest_tombstone_ms: Option<i64>,
    pub(crate) stats: CompactionStats,
    /// Set once the swap started: the files are then the log's.
    pub(crate) committed: bool,
    /// The log's generation when planned (see `Log::generation`).
    pub(crate) generation: u64,
}

impl CompactedOutput {
    pub fn stats(&self) -> CompactionStats {
        self.stats
    }
}

impl Drop for CompactedOutput {
    fn drop(&mut self) {
        if !self.committed {
            for o in &self.outputs {
                remove_temp_files(&self.dir, o.base_offset, CLEANED_SUFFIX);
            }
        }
    }
}

fn suffixed(suffix: &str, temp: &str) -> String {
    format!("{suffix}{temp}")
}

fn remove_temp_files(dir: &Path, base: i64, temp: &str) {
    for s in [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let _ = fsutil::remove_if_exists(&offset_file_path(dir, base, &suffixed(s, temp)));
    }
}

/// Calls `f(header, whole batch)` for every batch of a segment file until it
/// returns `false`.
fn for_each_batch(
    seg: &PlannedSegment,
    mut f: impl FnMut(&RecordBatchHeader, &[u8]) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let ctx = || format!("reading segment {} for cleaning", seg.base_offset);
    let mut pos = 0u64;
    let mut header = [0u8; BATCH_HEADER_SIZE_BYTES];
    let mut buf = Vec::new();
    while pos + BATCH_HEADER_SIZE_BYTES as u64 <= seg.size_bytes {
        seg.file
            .read_exact_at(&mut header, pos)
            .map_err(LogError::io(ctx()))?;
        let h = RecordBatchHeader::parse(&header).map_err(|e| {
            LogError::StorageCorruption(format!("segment {} position {pos}: {e}", seg.base_offset))
        })?;
        let size = h.size_bytes();
        if pos + size as u64 > seg.size_bytes {
            return Err(LogError::StorageCorruption(format!(
                "segment {} position {pos}: batch runs past the end",
                seg.base_offset
            )));
        }
        buf.resize(size, 0);
        seg.file
            .read_exact_at(&mut buf, pos)
            .map_err(LogError::io(ctx()))?;
        if !f(&h, &buf)? {
            break;
        }
        pos += size as u64;
    }
    Ok(())
}

impl CompactionPlan {
    /// Inactive segments the plan covers.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Overrides the offset-map memory budget (tests use a tiny one).
    pub fn with_map_memory_bytes(mut self, bytes: usize) -> Self {
        self.map_memory_bytes = bytes;
        self
    }

    /// Builds the offset map over the dirty segments. Returns the map and the
    /// exclusive end of the mapped (hence cleanable) offset range.
    fn build_offset_map(&self) -> Result<(OffsetMap, i64), LogError> {
        let mut map = OffsetMap::new(self.map_memory_bytes);
        let uncleanable = self
            .segments
            .last()
            .map_or(self.first_dirty_offset, |s| s.next_base_offset);
        let mut end = uncleanable.max(self.first_dirty_offset);
        let mut mapped_any = false;
        let mut full = false;
        for seg in self
            .segments
            .iter()
            .filter(|s| s.next_base_offset > self.first_dirty_offset)
        {
            for_each_batch(seg, |h, batch| {
                if h.last_offset() < self.first_dirty_offset || h.is_control() {
                    return Ok(true);
                }
                let count = h.records_count.max(0) as usize;
                if mapped_any && map.entries.len() + count > map.capacity {
                    end = h.base_offset;
                    full = true;
                    return Ok(false);
                }
                let section = records::records_section(batch, h)?;
                records::for_each_record(&section, |r| {
                    if let Some(k) = r.key {
                        map.put(k, h.base_offset + r.offset_delta as i64);
                    }
                    Ok(())
                })?;
                mapped_any = true;
                Ok(true)
            })?;
            if full {
                break;
            }
        }
        Ok((map, end))
    }

    /// Reads the planned segments and writes the cleaned ones under `.cleaned`
    /// names. Runs without the log's lock; touches no file the log uses.
    pub fn execute(self) -> Result<CompactedOutput, LogError> {
        let (map, end_offset) = self.build_offset_map()?;
        let mut out = CompactedOutput {
            dir: self.dir.clone(),
            outputs: Vec::new(),
            end_offset,
            oldest_tombstone_ms: None,
            stats: CompactionStats {
                cleaned_up_to: end_offset,
                ..CompactionStats::default()
            },
            committed: false,
            generation: self.generation,
        };
        // Group consecutive segments whose total fits one segment.
        let max_bytes = self.config.effective_segment_bytes();
        let mut groups: Vec<Vec<&PlannedSegment>> = Vec::new();
        for seg in self.segments.iter().filter(|s| s.base_offset < end_offset) {
            match groups.last_mut() {
                Some(g)
                    if g.iter().map(|s| s.size_bytes).sum::<u64>() + seg.size_bytes
                        <= max_bytes
                        && seg.next_base_offset - g[0].base_offset <= i32::MAX as i64 =>
                {
                    g.push(seg)
                }
                _ => groups.push(vec![seg]),
            }
        }
        let retention = self.config.delete_retention_ms;
        let now = self.now_ms;
        for group in groups {
            let base = group[0].base_offset;
            // Registered first so that a failure below still removes the files.
            out.outputs.push(OutputSegment {
                base_offset: base,
                end_offset: group[group.len() - 1].next_base_offset,
                replaced: group
                    .iter()
                    .map(|s| (s.base_offset, s.size_bytes))
                    .collect(),
                size_bytes: 0,
            });
            let mut writer =
                SegmentFileWriter::create(&self.dir, base, CLEANED_SUFFIX, &self.config)?;
            let stats = &mut out.stats;
            let oldest = &mut out.oldest_tombstone_ms;
            for seg in &group {
                stats.segments_in += 1;
                stats.bytes_in += seg.size_bytes;
                for_each_batch(seg, |h, batch| {
                    if h.base_offset >= end_offset || h.is_control() {
                        writer.append(batch, h)?;
                        return Ok(true);
                    }
                    let expired = h.max_timestamp.saturating_add(retention) < now;
                    let section = records::records_section(batch, h)?;
                    let mut survivors: Vec<RawRecord<'_>> = Vec::new();
                    let mut total = 0usize;
                    records::for_each_record(&section, |r| {
                        total += 1;
                        let offset = h.base_offset + r.offset_delta as i64;
                        let keep = match r.key {
                            None => false,
                            Some(k) => {
                                if map.get(k).is_some_and(|latest| latest > offset) {
                                    false
                                } else if r.value_is_null && expired {
                                    stats.tombstones_removed += 1;
                                    false
                                } else {
                                    true
                                }
                            }
                        };
                        if keep {
                            if r.value_is_null {
                                let at = h.max_timestamp;
                                *oldest = Some(oldest.map_or(at, |e: i64| e.min(at)));
                            }
                            survivors.push(r);
                        }
                        Ok(())
                    })?;
                    stats.records_removed += (total - survivors.len()) as u64;
                    if survivors.len() == total && total == h.records_count.max(0) as usize {
                        writer.append(batch, h)?;
                    } else if !survivors.is_empty() {
                        let rebuilt = records::rebuild_batch(batch, h, &survivors)?;
                        let nh = RecordBatchHeader::parse(&rebuilt)?;
                        writer.append(&rebuilt, &nh)?;
                    }
                    Ok(true)
                })?;
            }
            let size = writer.finish()?;
            out.stats.segments_out += 1;
            out.stats.bytes_out += size;
            if let Some(o) = out.outputs.last_mut() {
                o.size_bytes = size;
            }
        }
        fsutil::fsync_dir(&self.dir)?;
        Ok(out)
    }
}

fn manifest_encode(outputs: &[OutputSegment]) -> Vec<u8> {
    let mut s = String::new();
    for o in outputs {
        s.push_str(&format!("{} {}\n", o.base_offset, o.end_offset));
    }
    s.into_bytes()
}

fn manifest_decode(text: &[u8]) -> HashMap<i64, i64> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

/// Writes the manifest and renames every `.cleaned` file to `.swap`. From the
/// end of this call on, recovery completes the swap.
pub(crate) fn begin_swap(dir: &Path, outputs: &[OutputSegment]) -> Result<(), LogError> {
    fsutil::write_atomic(dir, SWAP_MANIFEST_FILE, &manifest_encode(outputs))?;
    for o in outputs {
        for s in [OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            let from = offset_file_path(dir, o.base_offset, &suffixed(s, CLEANED_SUFFIX));
            let to = offset_file_path(dir, o.base_offset, &suffixed(s, SWAP_SUFFIX));
            std::fs::rename(&from, &to)
                .map_err(LogError::io(format!("renaming {}", from.display())))?;
        }
    }
    fsutil::fsync_dir(dir)
}

/// Renames the `.swap` files of the segment at `base` to their final names:
/// indexes first, the log last (recovery keys on the `.log.swap` file).
pub(crate) fn complete_swap_files(dir: &Path, base: i64) -> Result<(), LogError> {
    for s in [OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        let from = offset_file_path(dir, base, &suffixed(s, SWAP_SUFFIX));
        if s != LOG_SUFFIX && !from.exists() {
            // Already renamed before a crash, or lost: the index is rebuilt on use.
            continue;
        }
        let to = offset_file_path(dir, base, s);
        std::fs::rename(&from, &to)
            .map_err(LogError::io(format!("renaming {}", from.display())))?;
    }
    Ok(())
}

pub(crate) fn remove_manifest(dir: &Path) -> Result<(), LogError> {
    fsutil::remove_if_exists(&dir.join(SWAP_MANIFEST_FILE))
}

/// Next offset after the last batch of a (swap) segment file; `base + 1` if empty.
fn next_offset_of_file(path: &Path, base: i64) -> Result<i64, LogError> {
    let file = File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(LogError::io(format!("reading {}", path.display())))?
        .len();
    let seg = PlannedSegment {
        base_offset: base,
        size_bytes: len,
        next_base_offset: base,
        file,
    };
    let mut next = base + 1;
    let _ = for_each_batch(&seg, |h, _| {
        next = h.last_offset() + 1;
        Ok(true)
    });
    Ok(next)
}

/// Kafka's `LogLoader` handling of cleaner leftovers, run before the log is
/// loaded: deletes `.cleaned` files (the swap never started) and completes
/// every interrupted swap.
pub(crate) fn recover_interrupted_compaction(dir: &Path) -> Result<(), LogError> {
    let ctx = || format!("listing {}", dir.display());
    let mut log_bases = Vec::new();
    let mut swaps = Vec::new();
    let mut index_swaps = Vec::new();
    let mut changed = false;
    for entry in std::fs::read_dir(dir).map_err(LogError::io(ctx()))? {
        let entry = entry.map_err(LogError::io(ctx()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(CLEANED_SUFFIX) {
            fsutil::remove_if_exists(&entry.path())?;
            changed = true;
            continue;
        }
        match parse_offset_file_name(&name) {
            Some((base, LOG_SUFFIX)) => log_bases.push(base),
            Some((base, s)) if s == suffixed(LOG_SUFFIX, SWAP_SUFFIX) => swaps.push(base),
            Some((base, s)) if s.ends_with(SWAP_SUFFIX) => index_swaps.push((base, entry.path())),
            _ => {}
        }
    }
    let manifest_path = dir.join(SWAP_MANIFEST_FILE);
    let manifest = fsutil::read_small_file(&manifest_path, 1 << 20)?
        .map(|b| manifest_decode(&b))
        .unwrap_or_default();
    swaps.sort_unstable();
    for &base in &swaps {
        let end = match manifest.get(&base) {
            Some(end) => *end,
            None => next_offset_of_file(
                &offset_file_path(dir, base, &suffixed(LOG_SUFFIX, SWAP_SUFFIX)),
                base,
            )?,
        };
        tracing::warn!(dir = %dir.display(), segment = base, end, "completing interrupted log compaction");
        for &old in log_bases.iter().filter(|b| **b >= base && **b < end) {
            for s in [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                fsutil::remove_if_exists(&offset_file_path(dir, old, s))?;
            }
        }
        complete_swap_files(dir, base)?;
        changed = true;
    }
    for (base, path) in index_swaps {
        if !swaps.contains(&base) {
            fsutil::remove_if_exists(&path)?;
            changed = true;
        }
    }
    if manifest_path.exists() {
        remove_manifest(dir)?;
        changed = true;
    }
    if changed {
        fsutil::fsync_dir(dir)?;
    }
    Ok(())
}
