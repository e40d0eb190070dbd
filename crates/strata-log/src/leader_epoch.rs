//! Leader epoch cache (Kafka's `LeaderEpochFileCache`): for each leader epoch,
//! the first offset written in it. Persisted to `leader-epoch-checkpoint` in
//! Kafka's text format (`version\ncount\nepoch offset\n...`).

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::fsutil;

pub(crate) const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_VERSION: u32 = 0;
/// Refuse to load an absurd checkpoint rather than allocating for it.
const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

/// Kafka's `UNDEFINED_EPOCH` / `UNDEFINED_EPOCH_OFFSET`.
pub(crate) const UNDEFINED_EPOCH: i32 = -1;
pub(crate) const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// Invariant: entries are strictly increasing in both epoch and start offset.
pub(crate) struct LeaderEpochCache {
    dir: PathBuf,
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint; a missing or unparsable file yields an empty cache
    /// (Kafka would fail; an empty cache only makes OffsetForLeaderEpoch answer
    /// "undefined" until the next epoch is assigned).
    pub(crate) fn load(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(CHECKPOINT_FILE);
        let mut cache = LeaderEpochCache {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        };
        if let Some(buf) = fsutil::read_small_file(&path, MAX_CHECKPOINT_BYTES)? {
            match Self::parse(&buf) {
                Ok(entries) => cache.entries = entries,
                Err(why) => {
                    tracing::warn!(path = %path.display(), %why, "ignoring corrupt leader epoch checkpoint")
                }
            }
        }
        Ok(cache)
    }

    fn parse(buf: &[u8]) -> Result<Vec<(i32, i64)>, String> {
        let text = std::str::from_utf8(buf).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        let version: u32 = lines
            .next()
            .ok_or("missing version")?
            .trim()
            .parse()
            .map_err(|_| "bad version")?;
        if version != CHECKPOINT_VERSION {
            return Err(format!("unknown version {version}"));
        }
        let count: usize = lines
            .next()
            .ok_or("missing count")?
            .trim()
            .parse()
            .map_err(|_| "bad count")?;
        let mut entries = Vec::new();
        for line in lines.by_ref().take(count) {
            let mut parts = line.split_whitespace();
            let epoch: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("bad epoch")?;
            let offset: i64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("bad offset")?;
            if let Some(&(last_epoch, last_offset)) = entries.last() {
                if epoch <= last_epoch || offset < last_offset {
                    return Err("entries not increasing".into());
                }
            }
            entries.push((epoch, offset));
        }
        if entries.len() != count {
            return Err(format!("expected {count} entries, found {}", entries.len()));
        }
        Ok(entries)
    }

    fn persist(&self) -> Result<(), LogError> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        fsutil::write_atomic(&self.dir, CHECKPOINT_FILE, text.as_bytes())
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    pub(crate) fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The first entry: the epoch the log's first records were written in (once the log start
    /// moved, re-based to it by [`Self::truncate_from_start`]).
    pub(crate) fn earliest_entry(&self) -> Option<(i32, i64)> {
        self.entries.first().copied()
    }

    /// Kafka's `epochForOffset`: the epoch `offset` was written in, the last epoch starting at
    /// or before it; `None` when the cache knows no epoch that early.
    pub(crate) fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let after = self.entries.partition_point(|&(_, start)| start <= offset);
        after.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// Kafka `assign`: records that `epoch` starts at `start_offset` if that is
    /// news, first removing entries it contradicts (same/higher epoch or
    /// same/higher start offset). Persists on change.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if epoch < 0 || start_offset < 0 {
            return Ok(());
        }
        let update_needed = match self.entries.last() {
            Some(&(last_epoch, last_offset)) => epoch != last_epoch || start_offset < last_offset,
            None => true,
        };
        if !update_needed {
            return Ok(());
        }
        self.entries.retain(|&(e, o)| e < epoch && o < start_offset);
        self.entries.push((epoch, start_offset));
        self.persist()
    }

    /// Kafka `endOffsetFor`: `(epoch, end offset)` of the largest epoch <=
    /// `requested`, where the end offset is the start of the next epoch (or the
    /// log end for the latest epoch); `(-1, -1)` if unknown.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let higher = self.entries.iter().find(|(e, _)| *e > requested);
        let floor = self.entries.iter().rev().find(|(e, _)| *e <= requested);
        match (floor, higher) {
            (_, None) => (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET),
            (None, Some(&(_, higher_start))) => (requested, higher_start),
            (Some(&(floor_epoch, _)), Some(&(_, higher_start))) => (floor_epoch, higher_start),
        }
    }

    /// Kafka `truncateFromEnd`: drops epochs starting at or after `end_offset`
    /// (their data was truncated away).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < end_offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Kafka `clearAndFlush`: forgets every epoch (the log was emptied).
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.entries.clear();
        self.persist()
    }

    /// Kafka `truncateFromStart`: drops epochs that start at or before
    /// `start_offset`, keeping the last of them re-based to `start_offset`.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        let removed = self.entries.partition_point(|&(_, o)| o <= start_offset);
        if removed == 0 {
            return Ok(());
        }
        let (epoch, old_start) = self.entries[removed - 1];
        if removed == 1 && old_start == start_offset {
            return Ok(());
        }
        self.entries.drain(..removed);
        self.entries.insert(0, (epoch, start_offset));
        self.persist()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_end_offsets_and_persistence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = LeaderEpochCache::load(dir.path()).expect("load");
        assert_eq!(c.end_offset_for(0, 10), (-1, -1));
        c.assign(1, 0).expect("assign");
        c.assign(1, 5).expect("same epoch later offset ignored");
        c.assign(3, 10).expect("assign");
        c.assign(5, 20).expect("assign");
        assert_eq!(c.entries(), &[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(c.end_offset_for(5, 30), (5, 30));
        assert_eq!(c.end_offset_for(3, 30), (3, 20));
        assert_eq!(c.end_offset_for(4, 30), (3, 20));
        assert_eq!(c.end_offset_for(0, 30), (0, 0));
        assert_eq!(c.end_offset_for(6, 30), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 30), (-1, -1));
        let reloaded = LeaderEpochCache::load(dir.path()).expect("reload");
        assert_eq!(reloaded.entries(), c.entries());
        assert_eq!(c.earliest_entry(), Some((1, 0)));
        // Kafka's epochForOffset: the epoch in effect at the offset.
        let epochs: Vec<Option<i32>> = [0, 9, 10, 19, 20, 1_000]
            .iter()
            .map(|&o| c.epoch_for_offset(o))
            .collect();
        assert_eq!(
            epochs,
            [Some(1), Some(1), Some(3), Some(3), Some(5), Some(5)]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).expect("read"),
            "0\n3\n1 0\n3 10\n5 20\n"
        );
        c.truncate_from_start(12).expect("truncate");
        assert_eq!(c.epoch_for_offset(11), None, "below the first entry");
        assert_eq!(c.epoch_for_offset(12), Some(3));
    }

    #[test]
    fn truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = LeaderEpochCache::load(dir.path()).expect("load");
        c.assign(1, 0).expect("assign");
        c.assign(2, 10).expect("assign");
        c.assign(3, 20).expect("assign");
        c.truncate_from_start(15).expect("truncate");
        assert_eq!(c.entries(), &[(2, 15), (3, 20)]);
        c.truncate_from_end(20).expect("truncate");
        assert_eq!(c.entries(), &[(2, 15)]);
        // Conflicting assign (lower start offset) removes later entries.
        c.assign(4, 30).expect("assign");
        c.assign(5, 25).expect("assign");
        assert_eq!(c.entries(), &[(2, 15), (5, 25)]);
    }
}
