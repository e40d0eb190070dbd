//! One replica's copy of the partition, reduced to what replication reasons about: each
//! record's leader epoch and a unique id (the payload), Kafka's leader-epoch cache, the
//! replica's high watermark, and how much of it is flushed to disk.
//!
//! The epoch cache follows `LeaderEpochFileCache`: entries `(epoch, start offset)` with epochs
//! strictly increasing; every record's epoch is the epoch of the last entry starting at or
//! before it; the last entry may start at the log end with no record yet (a leader assigns
//! its epoch when it takes over, before it appends). [`ReplicaLog::check`] verifies this.
//!
//! Not modelled: segments, indexes, batches (a produce of several records is appended at once
//! but stored as records), log start offset (nothing is deleted by retention).

/// Kafka's undefined epoch and offset (-1) in OffsetForLeaderEpoch answers.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// A record as replication sees it: who wrote it (the leader epoch) and which one it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub leader_epoch: i32,
    /// Unique over the whole run: the producer's payload.
    pub id: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ReplicaLog {
    records: Vec<Record>,
    /// `(leader epoch, start offset)`; see the module documentation for its invariants.
    epochs: Vec<(i32, i64)>,
    high_watermark: i64,
    /// Records below this are on disk and survive a machine crash.
    flushed_len: i64,
    /// The high watermark as of the last flush (Kafka's `replication-offset-checkpoint`).
    checkpointed_high_watermark: i64,
    /// The lowest log end since the checker last asked: it re-verifies from there.
    lowest_end_since_check: i64,
}

impl ReplicaLog {
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn log_end_offset(&self) -> i64 {
        self.records.len() as i64
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn flushed_len(&self) -> i64 {
        self.flushed_len
    }

    /// The latest epoch in the cache (Kafka's `latestEpoch`), which the follower asks about.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.last().map(|e| e.0)
    }

    pub fn epochs(&self) -> &[(i32, i64)] {
        &self.epochs
    }

    /// Appends one record. A record whose epoch is older than the log's last record would
    /// break the order of epochs along the log: refused, the caller reports a violation.
    pub fn append(&mut self, record: Record) -> Result<(), String> {
        if let Some(last) = self.records.last() {
            if record.leader_epoch < last.leader_epoch {
                return Err(format!(
                    "record {} of epoch {} appended after a record of epoch {} at offset {}",
                    record.id,
                    record.leader_epoch,
                    last.leader_epoch,
                    self.log_end_offset()
                ));
            }
        }
        let offset = self.log_end_offset();
        if self.latest_epoch() != Some(record.leader_epoch) {
            self.assign(record.leader_epoch, offset);
        }
        self.records.push(record);
        Ok(())
    }

    /// A new leader's epoch starts at its log end (Kafka's `makeLeader`), even before it
    /// appends: OffsetForLeaderEpoch answers about older epochs end there.
    pub fn assign_leader_epoch(&mut self, epoch: i32) -> Result<(), String> {
        match self.latest_epoch() {
            Some(latest) if latest > epoch => Err(format!(
                "leader epoch {epoch} assigned to a log that already has epoch {latest}"
            )),
            Some(latest) if latest == epoch => Ok(()),
            _ => {
                self.assign(epoch, self.log_end_offset());
                Ok(())
            }
        }
    }

    /// `LeaderEpochFileCache.assign`: entries the new one supersedes (same or newer epoch,
    /// same or later start) are removed first.
    fn assign(&mut self, epoch: i32, start: i64) {
        while let Some(&(e, s)) = self.epochs.last() {
            if e >= epoch || s >= start {
                self.epochs.pop();
            } else {
                break;
            }
        }
        self.epochs.push((epoch, start));
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: the largest epoch at or below `requested`
    /// and where it ends (the start of the next epoch, or the log end for the latest one);
    /// `(-1, -1)` when the requested epoch is undefined or newer than every epoch known.
    pub fn end_offset_for(&self, requested: i32) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, self.log_end_offset());
        }
        let Some(&(_, higher_start)) = self.epochs.iter().find(|(e, _)| *e > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match self.epochs.iter().rev().find(|(e, _)| *e <= requested) {
            Some(&(floor, _)) => (floor, higher_start),
            None => (requested, higher_start),
        }
    }

    /// `UnifiedLog.truncateTo`: drops the records at and above `offset` (no-op above the log
    /// end), and always the epoch entries starting at or after the new end, so that an epoch
    /// this replica assigned as leader without writing anything does not outlive its
    /// leadership. The high watermark and flush point follow the log end down.
    pub fn truncate_to(&mut self, offset: i64) {
        let end = offset.clamp(0, self.log_end_offset());
        self.records.truncate(end as usize);
        self.epochs.retain(|(_, start)| *start < end);
        self.high_watermark = self.high_watermark.min(end);
        self.flushed_len = self.flushed_len.min(end);
        self.checkpointed_high_watermark = self.checkpointed_high_watermark.min(end);
        self.lowest_end_since_check = self.lowest_end_since_check.min(end);
    }

    /// Sets the replica's high watermark, clamped to `[0, log end]` as Kafka's
    /// `updateHighWatermark` does. On a follower it may move back (a new leader's is lower).
    pub fn set_high_watermark(&mut self, high_watermark: i64) {
        self.high_watermark = high_watermark.clamp(0, self.log_end_offset());
    }

    /// fsync: what is in the log now survives a machine crash.
    pub fn flush(&mut self) {
        self.flushed_len = self.log_end_offset();
        self.checkpointed_high_watermark = self.high_watermark;
    }

    /// The log as a restarted process finds it. A process crash keeps everything (the page
    /// cache survives); a machine crash (`lose_unflushed`) keeps only what was flushed. The
    /// high watermark comes back from its last checkpoint, and the epoch cache is cut to the
    /// recovered log end (`LogLoader` truncates it from the end).
    pub fn recover_after_crash(&mut self, lose_unflushed: bool) -> i64 {
        let before = self.log_end_offset();
        if lose_unflushed {
            self.records.truncate(self.flushed_len as usize);
        }
        let end = self.log_end_offset();
        self.epochs.retain(|(_, start)| *start < end);
        self.high_watermark = self.checkpointed_high_watermark.min(end);
        self.flushed_len = end;
        self.lowest_end_since_check = self.lowest_end_since_check.min(end);
        before - end
    }

    /// The lowest log end since the last call, reset to the current log end.
    pub fn take_lowest_end_since_check(&mut self) -> i64 {
        let lowest = self.lowest_end_since_check.min(self.log_end_offset());
        self.lowest_end_since_check = self.log_end_offset();
        lowest
    }

    /// The structure of the module documentation: epochs ordered, the cache consistent with
    /// the records, the high watermark and flush point within the log. O(log length).
    pub fn check(&self) -> Result<(), String> {
        let end = self.log_end_offset();
        if !(0..=end).contains(&self.high_watermark) {
            return Err(format!(
                "high watermark {} outside [0, {end}]",
                self.high_watermark
            ));
        }
        if self.flushed_len > end {
            return Err(format!(
                "flushed up to {}, past the log end {end}",
                self.flushed_len
            ));
        }
        for pair in self.epochs.windows(2) {
            let ((e0, s0), (e1, s1)) = (pair[0], pair[1]);
            if e1 <= e0 || s1 <= s0 {
                return Err(format!("epoch cache out of order: {:?}", self.epochs));
            }
        }
        if let Some((i, &(e, s))) = self
            .epochs
            .iter()
            .enumerate()
            .find(|(i, (_, s))| *s > end || (*s == end && *i + 1 != self.epochs.len()))
        {
            return Err(format!(
                "epoch cache entry {i} ({e}, {s}) past the log end {end}: {:?}",
                self.epochs
            ));
        }
        let mut entry = 0usize;
        for (offset, record) in self.records.iter().enumerate() {
            let offset = offset as i64;
            while entry + 1 < self.epochs.len() && self.epochs[entry + 1].1 <= offset {
                entry += 1;
            }
            match self.epochs.get(entry) {
                Some(&(e, s)) if s <= offset && e == record.leader_epoch => {}
                other => {
                    return Err(format!(
                        "record {} at offset {offset} has epoch {}, the cache says {other:?}",
                        record.id, record.leader_epoch
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(epochs: &[i32]) -> ReplicaLog {
        let mut log = ReplicaLog::default();
        for (i, e) in epochs.iter().enumerate() {
            log.append(Record {
                leader_epoch: *e,
                id: i as u64,
            })
            .unwrap();
        }
        log
    }

    #[test]
    fn the_epoch_cache_answers_like_kafkas() {
        // Offsets 0-1 epoch 0, 2-4 epoch 2, 5 epoch 3.
        let mut log = log_of(&[0, 0, 2, 2, 2, 3]);
        assert_eq!(log.epochs(), &[(0, 0), (2, 2), (3, 5)]);
        assert_eq!(log.end_offset_for(3), (3, 6));
        assert_eq!(log.end_offset_for(2), (2, 5));
        assert_eq!(
            log.end_offset_for(1),
            (0, 2),
            "epoch 1 is unknown: epoch 0's end"
        );
        assert_eq!(
            log.end_offset_for(4),
            (-1, -1),
            "newer than any epoch known"
        );
        assert_eq!(log.end_offset_for(-1), (-1, -1));
        log.assign_leader_epoch(5).unwrap();
        assert_eq!(log.end_offset_for(4), (3, 6));
        assert_eq!(log.end_offset_for(5), (5, 6));
        assert!(log.assign_leader_epoch(4).is_err());
        log.check().unwrap();
        // Truncating to the log end drops the epoch assigned without records.
        log.truncate_to(6);
        assert_eq!(log.latest_epoch(), Some(3));
        log.truncate_to(3);
        assert_eq!(log.epochs(), &[(0, 0), (2, 2)]);
        log.check().unwrap();
        assert!(log
            .append(Record {
                leader_epoch: 1,
                id: 9
            })
            .is_err());
    }

    #[test]
    fn a_machine_crash_keeps_only_what_was_flushed() {
        let mut log = log_of(&[0, 0, 1]);
        log.set_high_watermark(2);
        log.flush();
        log.append(Record {
            leader_epoch: 4,
            id: 7,
        })
        .unwrap();
        log.set_high_watermark(4);
        assert_eq!(log.recover_after_crash(false), 0);
        assert_eq!((log.log_end_offset(), log.high_watermark()), (4, 2));
        log.set_high_watermark(4);
        log.append(Record {
            leader_epoch: 4,
            id: 8,
        })
        .unwrap();
        assert_eq!(
            log.recover_after_crash(true),
            1,
            "offset 4 was never flushed"
        );
        assert_eq!(log.log_end_offset(), 4);
        log.check().unwrap();
    }
}
