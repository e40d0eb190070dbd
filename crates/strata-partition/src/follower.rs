//! The follower's side of a leader change: where to truncate its log before fetching from a
//! new leader, so that no two replicas disagree below the high watermark (KIP-101, KIP-279).
//!
//! The follower asks the leader (OffsetForLeaderEpoch) where its latest epoch ends in the
//! leader's log. Records past that point were written by a leader whose epoch the new
//! leader's log does not continue: they are cut off. When the leader answers with an epoch
//! the follower's log does not have, the follower truncates to where its own earlier epoch
//! ends and asks again (KIP-279), until both agree. With truncation on fetch (KIP-595) the
//! leader finds the divergence itself ([`diverging_epoch`]) and answers the fetch with the
//! same information.

/// Kafka's unknown epoch and offset (-1).
pub const UNDEFINED: i64 = -1;

/// The leader's answer to OffsetForLeaderEpoch: the largest epoch <= the requested one in
/// its log, and where that epoch ends (the start of the next, or its log end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// What the follower does with its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truncation {
    /// Truncate the log to `offset` (no-op when it is the log end) and fetch from there.
    Done(i64),
    /// Truncate to `offset`, then ask the leader again about `epoch`, the follower's latest
    /// epoch after the truncation.
    AskAgain { offset: i64, epoch: i32 },
}

/// The leader's half of the exchange (KIP-595, Kafka's `Partition.readRecords`): a follower
/// that fetches at `fetch_offset` after writing `last_fetched_epoch` (`None` for an empty log)
/// has diverged from the leader's log when the leader's largest epoch at or below it is older,
/// or ends before the fetch offset. Then the leader answers with where that epoch ends
/// (`leader_end_offset_for(epoch)`: the leader log's own OffsetForLeaderEpoch answer, `(-1,
/// -1)` when it has none) instead of records, and the follower truncates with
/// [`truncation_for`]. `None`: serve the fetch.
pub fn diverging_epoch(
    last_fetched_epoch: Option<i32>,
    fetch_offset: i64,
    leader_end_offset_for: impl FnOnce(i32) -> (i32, i64),
) -> Option<EpochEndOffset> {
    let last = last_fetched_epoch?;
    let (leader_epoch, end_offset) = leader_end_offset_for(last);
    (leader_epoch < last || end_offset < fetch_offset).then_some(EpochEndOffset {
        leader_epoch,
        end_offset,
    })
}

/// Kafka's `getOffsetTruncationState`. `local_end_offset_for(epoch)` is the follower log's
/// own OffsetForLeaderEpoch answer (`(-1, -1)` when it knows no epoch at or below `epoch`);
/// `high_watermark` is the follower's, used when the leader knows no epoch at all.
pub fn truncation_for(
    leader: EpochEndOffset,
    log_end_offset: i64,
    high_watermark: i64,
    local_end_offset_for: impl Fn(i32) -> (i32, i64),
) -> Truncation {
    if leader.end_offset == UNDEFINED {
        // The leader has no epoch at or below ours: keep only what is known committed.
        return Truncation::Done(high_watermark.min(log_end_offset));
    }
    if leader.leader_epoch as i64 == UNDEFINED {
        return Truncation::Done(leader.end_offset.min(log_end_offset));
    }
    match local_end_offset_for(leader.leader_epoch) {
        (epoch, end) if epoch as i64 == UNDEFINED || end == UNDEFINED => {
            // The follower tracks no epoch that old: the leader's answer is below what the
            // follower asked about, so its end offset is safe to truncate to.
            Truncation::Done(leader.end_offset.min(log_end_offset))
        }
        (epoch, end) if epoch != leader.leader_epoch => Truncation::AskAgain {
            offset: end.min(log_end_offset),
            epoch,
        },
        (_, end) => Truncation::Done(end.min(leader.end_offset).min(log_end_offset)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An epoch cache's answer, as `strata_log::Log::end_offset_for_epoch` gives it.
    fn end_offset_for(entries: &[(i32, i64)], log_end: i64, requested: i32) -> (i32, i64) {
        if entries.last().map(|e| e.0) == Some(requested) {
            return (requested, log_end);
        }
        let higher = entries.iter().find(|(e, _)| *e > requested);
        let floor = entries.iter().rev().find(|(e, _)| *e <= requested);
        match (floor, higher) {
            (_, None) => (-1, -1),
            (None, Some(&(_, start))) => (requested, start),
            (Some(&(epoch, _)), Some(&(_, start))) => (epoch, start),
        }
    }

    /// Runs the exchange between a follower and a leader to the end; returns the offset the
    /// follower's log is truncated to.
    fn reconcile(
        follower: &[(i32, i64)],
        follower_leo: i64,
        leader: &[(i32, i64)],
        leader_leo: i64,
    ) -> i64 {
        let mut follower: Vec<(i32, i64)> = follower.to_vec();
        let mut leo = follower_leo;
        for _ in 0..10 {
            let asked = follower.last().map_or(-1, |e| e.0);
            let (leader_epoch, end_offset) = end_offset_for(leader, leader_leo, asked);
            let answer = EpochEndOffset {
                leader_epoch,
                end_offset,
            };
            let step = truncation_for(answer, leo, 0, |e| end_offset_for(&follower, leo, e));
            let offset = match step {
                Truncation::Done(offset) | Truncation::AskAgain { offset, .. } => offset,
            };
            assert!(offset <= leo, "truncation never extends the log");
            leo = offset;
            follower.retain(|(_, start)| *start < leo);
            if let Truncation::Done(_) = step {
                return leo;
            }
        }
        panic!("no agreement after 10 rounds");
    }

    #[test]
    fn the_divergent_tail_of_an_old_epoch_is_cut_off() {
        // KIP-101: the follower wrote 50..80 in epoch 1 as leader; the new leader's epoch 2
        // starts at 60, so its epoch 0 (the follower's floor) ends there.
        assert_eq!(
            reconcile(&[(0, 0), (1, 50)], 80, &[(0, 0), (2, 60)], 90),
            50
        );
        // The same epoch on both sides: the shorter one wins.
        assert_eq!(
            reconcile(&[(0, 0), (1, 50)], 80, &[(0, 0), (1, 50), (2, 70)], 90),
            70
        );
        assert_eq!(
            reconcile(&[(0, 0), (1, 50)], 65, &[(0, 0), (1, 50), (2, 70)], 90),
            65
        );
        // A follower that is simply behind keeps everything.
        assert_eq!(
            reconcile(&[(0, 0), (2, 60)], 75, &[(0, 0), (2, 60)], 90),
            75
        );
    }

    #[test]
    fn an_epoch_the_follower_lacks_takes_another_round() {
        // KIP-279: the leader answers with epoch 1, which the follower never saw; it cuts to
        // where its own epoch 0 ends (50), asks about 0, and cuts to the leader's 40.
        let asked = truncation_for(
            EpochEndOffset {
                leader_epoch: 1,
                end_offset: 60,
            },
            90,
            0,
            |e| end_offset_for(&[(0, 0), (2, 50), (3, 70)], 90, e),
        );
        assert_eq!(
            asked,
            Truncation::AskAgain {
                offset: 50,
                epoch: 0
            }
        );
        assert_eq!(
            reconcile(
                &[(0, 0), (2, 50), (3, 70)],
                90,
                &[(0, 0), (1, 40), (4, 60)],
                95
            ),
            40
        );
    }

    #[test]
    fn the_leader_finds_a_diverging_follower() {
        let leader = [(0, 0), (2, 60)];
        let leader_end = 90;
        let answer = |epoch| end_offset_for(&leader, leader_end, epoch);
        // An empty follower log, or one in step with the leader's epochs: serve the fetch.
        assert_eq!(diverging_epoch(None, 0, answer), None);
        assert_eq!(diverging_epoch(Some(2), 75, answer), None);
        assert_eq!(diverging_epoch(Some(0), 60, answer), None);
        // Epoch 0 ends at 60 here: a follower past it in epoch 0 has a tail to cut.
        assert_eq!(
            diverging_epoch(Some(0), 70, answer),
            Some(EpochEndOffset {
                leader_epoch: 0,
                end_offset: 60
            })
        );
        // Epoch 1 was never the leader's: its floor is 0, which ends at 60.
        assert_eq!(
            diverging_epoch(Some(1), 55, answer),
            Some(EpochEndOffset {
                leader_epoch: 0,
                end_offset: 60
            })
        );
        // An epoch the leader's cache does not know at all.
        assert_eq!(
            diverging_epoch(Some(3), 10, |_| (-1, -1)),
            Some(EpochEndOffset {
                leader_epoch: -1,
                end_offset: -1
            })
        );
    }

    #[test]
    fn unknown_epochs_fall_back_to_what_is_safe() {
        // The leader knows no epoch: truncate to the high watermark.
        let none = EpochEndOffset {
            leader_epoch: -1,
            end_offset: -1,
        };
        assert_eq!(
            truncation_for(none, 80, 30, |_| (-1, -1)),
            Truncation::Done(30)
        );
        // An answer without an epoch (old leader): its end offset.
        let old = EpochEndOffset {
            leader_epoch: -1,
            end_offset: 55,
        };
        assert_eq!(
            truncation_for(old, 80, 30, |_| (-1, -1)),
            Truncation::Done(55)
        );
        // The follower tracks no epoch that old: the leader's end offset.
        let deep = EpochEndOffset {
            leader_epoch: 0,
            end_offset: 20,
        };
        assert_eq!(
            truncation_for(deep, 80, 30, |_| (-1, -1)),
            Truncation::Done(20)
        );
    }

    /// Random histories: two replicas share a prefix of epochs, then each writes its own
    /// epochs; after reconciling, the follower's log is a prefix of the leader's lineage (it
    /// ends at or before where their histories part) and keeps all of the common part.
    #[test]
    fn reconciled_logs_agree() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2_000 {
            // Common history: epochs 0.. with increasing starts.
            let mut common = vec![(0, 0i64)];
            for _ in 0..next(3) {
                let (e, s) = *common.last().unwrap();
                common.push((e + 1 + next(2) as i32, s + 1 + next(20) as i64));
            }
            let split = common.last().unwrap().1 + next(20) as i64;
            let top = common.last().unwrap().0;
            // Each replica continues with its own epochs from the split point; the leader's
            // are newer than any of the follower's (it won a later election).
            let mut follower = common.clone();
            let mut leader = common.clone();
            let mut f_end = split;
            if next(2) == 0 {
                follower.push((top + 1, split));
                f_end = split + 1 + next(30) as i64;
            }
            // A new leader records its epoch when it takes over (Kafka's makeLeader), even
            // before it writes anything in it.
            leader.push((top + 2, split));
            let l_end = split + next(30) as i64;
            let truncated = reconcile(&follower, f_end, &leader, l_end);
            assert!(truncated <= f_end);
            assert!(
                truncated >= split.min(f_end),
                "kept less than the common part: {follower:?} {leader:?}"
            );
            assert!(
                truncated <= split,
                "kept a divergent tail: {follower:?} {leader:?} -> {truncated}"
            );
        }
    }
}
