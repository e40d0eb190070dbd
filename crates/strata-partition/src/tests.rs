//! The leader's rules, by example and under random schedules.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::*;

const LAG_MS: i64 = 10_000;

fn config(min_isr: usize) -> LeaderConfig {
    LeaderConfig {
        replica_lag_time_max_ms: LAG_MS,
        min_insync_replicas: min_isr,
    }
}

/// Leader 1 of replicas 1, 2, 3, all in sync, log end 100, high watermark 100.
fn three_in_sync(min_isr: usize) -> LeaderState {
    LeaderState::new(
        &leader(1, 0, &[1, 2, 3], &[1, 2, 3]),
        100,
        100,
        0,
        config(min_isr),
    )
    .unwrap()
}

/// Leadership of `leader` at epoch 5 (partition epoch `partition_epoch`).
fn leader(leader: i32, partition_epoch: i32, replicas: &[i32], isr: &[i32]) -> LeaderAndIsr {
    LeaderAndIsr {
        leader,
        leader_epoch: 5,
        partition_epoch,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
    }
}

fn set(ids: &[i32]) -> BTreeSet<i32> {
    ids.iter().copied().collect()
}

#[test]
fn a_fenced_follower_is_neither_proposed_nor_waited_for() {
    // Follower 3 is out of the ISR and catching up while its broker is fenced (shutting
    // down, or restarted and not yet caught up with the metadata).
    let mut p =
        LeaderState::new(&leader(1, 0, &[1, 2, 3], &[1, 2]), 100, 100, 0, config(1)).unwrap();
    assert_eq!(p.set_isr_eligible(&set(&[1, 2]), 0), None);
    p.on_append(150, 1);
    assert_eq!(
        p.on_follower_fetch(3, 150, 2).unwrap(),
        (None, None),
        "not proposed"
    );
    assert_eq!(p.on_follower_fetch(2, 150, 3).unwrap(), (Some(150), None));
    p.on_append(200, 4);
    assert_eq!(p.on_follower_fetch(3, 160, 5).unwrap(), (None, None));
    assert_eq!(
        p.on_follower_fetch(2, 200, 6).unwrap(),
        (Some(200), None),
        "a fenced follower's lag does not hold the high watermark"
    );
    // Unfenced: it is proposed once caught up, and holds the high watermark meanwhile.
    assert_eq!(p.set_isr_eligible(&set(&[1, 2, 3]), 7), None);
    let (_, change) = p.on_follower_fetch(3, 200, 8).unwrap();
    assert_eq!(change.map(|c| c.proposed), Some(set(&[1, 2, 3])));
}

#[test]
fn the_high_watermark_waits_for_every_in_sync_replica() {
    let mut p = three_in_sync(2);
    assert_eq!(
        p.on_append(150, 1),
        None,
        "followers have not fetched the new records"
    );
    assert_eq!(p.ack_state(150), AckState::Waiting);
    assert_eq!(p.on_follower_fetch(2, 150, 2).unwrap(), (None, None));
    assert_eq!(p.on_follower_fetch(3, 120, 3).unwrap(), (Some(120), None));
    assert_eq!(p.ack_state(150), AckState::Waiting);
    assert_eq!(p.ack_state(120), AckState::Done);
    assert_eq!(p.on_follower_fetch(3, 150, 4).unwrap(), (Some(150), None));
    assert_eq!(p.ack_state(150), AckState::Done);
    // Fetching behind the high watermark (a slow follower's old request) never moves it back.
    assert_eq!(p.on_follower_fetch(3, 140, 5).unwrap(), (None, None));
    assert_eq!(p.high_watermark(), 150);
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_joins_again_once_caught_up() {
    let mut p = three_in_sync(2);
    p.on_append(200, 0);
    p.on_follower_fetch(2, 200, 1).unwrap();
    // Replica 3 fetches, but never reaches the log end the leader had at its previous fetch.
    p.on_follower_fetch(3, 150, 1).unwrap();
    assert_eq!(p.maybe_shrink_isr(LAG_MS), None, "within the lag time");
    p.on_append(300, LAG_MS);
    p.on_follower_fetch(2, 300, LAG_MS + 1).unwrap();
    p.on_follower_fetch(3, 180, LAG_MS + 1).unwrap();
    let shrink = p.maybe_shrink_isr(LAG_MS + 2).expect("replica 3 lags");
    assert_eq!(shrink.proposed, set(&[1, 2]));
    assert_eq!(shrink.partition_epoch, 0);
    // One change at a time; until the controller answers, 3 still holds the high watermark.
    assert_eq!(p.maybe_shrink_isr(LAG_MS + 3), None);
    assert_eq!(p.high_watermark(), 180);
    // Committed: the high watermark follows the smaller ISR.
    assert_eq!(
        p.on_isr_committed(&[1, 2], 1, LAG_MS + 4).unwrap(),
        Some(300)
    );
    assert_eq!(p.isr(), &set(&[1, 2]));
    // Replica 3 catches up to the high watermark: it is proposed for the ISR again, and it
    // holds the high watermark from then on (the maximal ISR).
    let (_, expand) = p.on_follower_fetch(3, 300, LAG_MS + 5).unwrap();
    let expand = expand.expect("caught up to the high watermark");
    assert_eq!(expand.proposed, set(&[1, 2, 3]));
    assert_eq!(expand.partition_epoch, 1);
    assert_eq!(p.maximal_isr(), set(&[1, 2, 3]));
    assert_eq!(
        p.isr(),
        &set(&[1, 2]),
        "the committed ISR changes only when the controller says"
    );
    p.on_append(310, LAG_MS + 6);
    p.on_follower_fetch(2, 310, LAG_MS + 6).unwrap();
    assert_eq!(
        p.high_watermark(),
        300,
        "replica 3, joining, has not fetched 310 yet"
    );
    assert_eq!(p.on_isr_committed(&[1, 2, 3], 2, LAG_MS + 7).unwrap(), None);
    assert_eq!(
        p.on_follower_fetch(3, 310, LAG_MS + 8).unwrap(),
        (Some(310), None)
    );
}

#[test]
fn min_insync_replicas_before_and_after_the_append() {
    let mut p = three_in_sync(3);
    assert_eq!(p.check_enough_replicas(), Ok(()));
    p.on_append(110, 0);
    p.on_follower_fetch(2, 110, 1).unwrap();
    p.on_follower_fetch(3, 105, 1).unwrap();
    let shrink = p.maybe_shrink_isr(LAG_MS + 2).expect("replica 3 lags");
    p.on_isr_committed(
        &shrink.proposed.iter().copied().collect::<Vec<_>>(),
        1,
        LAG_MS + 2,
    )
    .unwrap();
    // The records up to 110 are on every remaining ISR member, but the ISR is now too small.
    assert_eq!(p.ack_state(110), AckState::DoneWithTooFewReplicas);
    assert_eq!(
        p.check_enough_replicas(),
        Err(PartitionError::NotEnoughReplicas {
            isr: 2,
            min_insync_replicas: 3
        })
    );
}

#[test]
fn a_new_leader_waits_for_its_followers_and_for_its_epoch_start() {
    // Leader 2 of a new epoch with log end 100 and an inherited high watermark of 80.
    let mut p = LeaderState::new(
        &leader(2, 3, &[1, 2, 3], &[2, 3]),
        100,
        80,
        1_000,
        config(1),
    )
    .unwrap();
    assert_eq!(
        p.on_append(110, 1_001),
        None,
        "replica 3 has not fetched in this epoch"
    );
    // Replica 1 is out of the ISR and below the epoch's start offset: it cannot join, even
    // once at the high watermark.
    assert_eq!(p.on_follower_fetch(3, 90, 1_002).unwrap(), (Some(90), None));
    assert_eq!(p.on_follower_fetch(1, 95, 1_003).unwrap(), (None, None));
    let (_, expand) = p.on_follower_fetch(1, 100, 1_004).unwrap();
    assert_eq!(expand.unwrap().proposed, set(&[1, 2, 3]));
    // A fetch past the leader's log end means a divergent follower log.
    assert!(matches!(
        p.on_follower_fetch(3, 111, 1_005),
        Err(PartitionError::FetchOffsetOutOfRange { .. })
    ));
    assert_eq!(
        p.on_follower_fetch(9, 0, 1_005),
        Err(PartitionError::NotAReplica(9))
    );
    // A refusal that says the controller moved on (it may have committed the change and the
    // answer was lost) keeps the change pending; one that says it was not applied drops it.
    let maximal = p.maximal_isr();
    assert!(p.pending_isr_change().is_some());
    for code in [74, 108, 6, 77, 3] {
        assert_eq!(
            p.on_isr_change_refused(IsrChangeRefusal::from_error_code(code)),
            RefusedIsrChange::KeptUntilMetadata,
            "error code {code}"
        );
        assert!(p.pending_isr_change().is_some(), "error code {code}");
        assert_eq!(
            p.maximal_isr(),
            maximal,
            "the high watermark still waits for it"
        );
    }
    assert_eq!(
        p.on_isr_change_refused(IsrChangeRefusal::from_error_code(107)),
        RefusedIsrChange::Dropped
    );
    assert!(p.pending_isr_change().is_none());
    // A stale commit is refused.
    assert!(matches!(
        p.on_isr_committed(&[2], 2, 1_006),
        Err(PartitionError::StalePartitionEpoch { got: 2, current: 3 })
    ));
}

#[test]
fn a_single_replica_follows_its_log_end() {
    let mut p = LeaderState::new(&leader(1, 0, &[1], &[1]), 0, 0, 0, config(1)).unwrap();
    assert_eq!(p.on_append(10, 1), Some(10));
    assert_eq!(p.ack_state(10), AckState::Done);
    assert_eq!(p.maybe_shrink_isr(i64::MAX / 2), None);
}

/// One event of a random schedule.
#[derive(Clone, Debug)]
enum Event {
    Append(i64),
    Fetch {
        replica: i32,
        behind: i64,
    },
    Tick(i64),
    Shrink,
    CommitPending,
    /// The controller refuses the pending change with this error code.
    RefusePending(i16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (1i64..50).prop_map(Event::Append),
        (2i32..=4, 0i64..60).prop_map(|(replica, behind)| Event::Fetch { replica, behind }),
        (1i64..8_000).prop_map(Event::Tick),
        Just(Event::Shrink),
        Just(Event::CommitPending),
        prop::sample::select(vec![107i16, 42, 74, 108, 6, 77, 3]).prop_map(Event::RefusePending),
    ]
}

proptest! {
    /// Under any schedule of appends, follower fetches, time and controller answers: the high
    /// watermark never moves back, never passes the leader's log end or the log end of any
    /// member of the maximal ISR, the leader stays in the ISR, and a follower joins only at
    /// or past the high watermark.
    #[test]
    fn invariants_hold_under_random_schedules(events in proptest::collection::vec(event(), 1..200)) {
        let mut p = LeaderState::new(&leader(1, 0, &[1, 2, 3, 4], &[1, 2, 3]), 0, 0, 0, config(2)).unwrap();
        let (mut now, mut leo, mut epoch) = (0i64, 0i64, 0i32);
        let mut leos = std::collections::BTreeMap::from([(2, -1i64), (3, -1), (4, -1)]);
        for e in events {
            let hw_before = p.high_watermark();
            match e {
                Event::Append(n) => {
                    leo += n;
                    p.on_append(leo, now);
                }
                Event::Fetch { replica, behind } => {
                    let at = (leo - behind).max(leos[&replica]).max(0);
                    let (_, expand) = p.on_follower_fetch(replica, at, now).unwrap();
                    leos.insert(replica, at);
                    if let Some(change) = expand {
                        prop_assert!(at >= p.high_watermark());
                        prop_assert!(change.proposed.contains(&replica));
                    }
                }
                Event::Tick(ms) => now += ms,
                Event::Shrink => {
                    if let Some(change) = p.maybe_shrink_isr(now) {
                        prop_assert!(change.proposed.is_subset(p.isr()));
                    }
                }
                Event::CommitPending => {
                    if let Some(change) = p.pending_isr_change().cloned() {
                        epoch += 1;
                        let isr: Vec<i32> = change.proposed.iter().copied().collect();
                        p.on_isr_committed(&isr, epoch, now).unwrap();
                    }
                }
                Event::RefusePending(code) => {
                    let refusal = IsrChangeRefusal::from_error_code(code);
                    let pending = p.pending_isr_change().cloned();
                    let outcome = p.on_isr_change_refused(refusal);
                    prop_assert_eq!(outcome == RefusedIsrChange::Dropped, [107, 42].contains(&code));
                    if outcome == RefusedIsrChange::KeptUntilMetadata {
                        prop_assert_eq!(p.pending_isr_change().cloned(), pending);
                    } else {
                        prop_assert!(p.pending_isr_change().is_none());
                    }
                }
            }
            let hw = p.high_watermark();
            prop_assert!(hw >= hw_before, "high watermark moved back");
            prop_assert!(hw <= leo);
            prop_assert!(p.isr().contains(&1));
            for r in p.maximal_isr().iter().filter(|r| **r != 1) {
                // A member that has not fetched since the leader started (-1) holds it at 0.
                prop_assert!(hw <= leos[r].max(0), "hw {} past replica {}'s log end {}", hw, r, leos[r]);
            }
        }
    }
}

#[test]
fn a_replica_added_by_a_reassignment_joins_the_isr_once_caught_up() {
    // Leader 1 of [1, 2], both in sync; a reassignment adds 3 in the same leader epoch.
    let mut p = in_sync_of(&[1, 2]);
    assert_eq!(p.on_follower_fetch(2, 100, 1_001).unwrap(), (None, None));
    assert_eq!(
        p.on_follower_fetch(3, 0, 1_001),
        Err(PartitionError::NotAReplica(3)),
        "not a replica before the image says so"
    );
    p.set_replicas(&[2, 3, 1]).unwrap();
    assert_eq!(p.follower_log_end_offset(3), Some(-1));
    assert_eq!(p.follower_log_end_offset(2), Some(100), "progress kept");
    // A new replica far behind neither holds the high watermark nor joins.
    assert_eq!(p.on_append(120, 1_002), None, "2 is at 100");
    assert_eq!(
        p.on_follower_fetch(2, 120, 1_003).unwrap(),
        (Some(120), None)
    );
    assert_eq!(p.on_follower_fetch(3, 0, 1_004).unwrap(), (None, None));
    assert_eq!(p.on_follower_fetch(3, 60, 1_005).unwrap(), (None, None));
    let (hw, expand) = p.on_follower_fetch(3, 120, 1_006).unwrap();
    assert_eq!(hw, None);
    assert_eq!(expand.unwrap().proposed, set(&[1, 2, 3]));
    // The leader must stay a replica; a replica dropped is forgotten.
    assert_eq!(p.set_replicas(&[2, 3]), Err(PartitionError::NotAReplica(1)));
    p.set_replicas(&[1, 3]).unwrap();
    assert_eq!(p.follower_log_end_offset(2), None);
}

fn in_sync_of(replicas: &[i32]) -> LeaderState {
    LeaderState::new(
        &leader(1, 0, replicas, replicas),
        100,
        100,
        1_000,
        config(1),
    )
    .unwrap()
}

#[test]
fn follower_progress_tells_which_followers_could_serve_a_consumer() {
    let mut p = three_in_sync(1);
    let progress = |p: &LeaderState, id: i32| {
        p.follower_progress()
            .find(|f| f.replica == id)
            .expect("a follower")
    };
    // Before its first fetch a follower covers no offset: log end -1.
    assert_eq!(progress(&p, 2).log_end_offset, -1);
    assert!(progress(&p, 2).in_isr);
    p.on_follower_fetch(2, 100, 10).unwrap();
    p.on_follower_log_start(2, 40);
    let f2 = progress(&p, 2);
    assert_eq!((f2.log_start_offset, f2.log_end_offset), (40, 100));
    assert_eq!(f2.last_caught_up_ms, 10);
    // Out of the ISR once the controller commits the shrink.
    p.on_isr_committed(&[1, 2], 1, 20).unwrap();
    assert!(!progress(&p, 3).in_isr);
    assert!(progress(&p, 2).in_isr);
    // A replica that is not a follower is ignored.
    p.on_follower_log_start(9, 0);
    assert_eq!(p.follower_progress().count(), 2);
}

#[test]
fn an_altered_min_insync_replicas_applies_at_once() {
    let mut p = three_in_sync(2);
    assert_eq!(p.check_enough_replicas(), Ok(()));
    assert_eq!(p.on_append(110, 1), None);
    p.set_config(config(4));
    assert_eq!(
        p.check_enough_replicas(),
        Err(PartitionError::NotEnoughReplicas {
            isr: 3,
            min_insync_replicas: 4
        })
    );
    // A produce appended before the change is judged by the new value when it completes.
    p.on_follower_fetch(2, 110, 2).unwrap();
    p.on_follower_fetch(3, 110, 2).unwrap();
    assert_eq!(p.ack_state(110), AckState::DoneWithTooFewReplicas);
    p.set_config(config(3));
    assert_eq!(p.ack_state(110), AckState::Done);
}

#[test]
fn isr_change_refusals_keep_their_kafka_error_codes() {
    for code in [107i16, 42, 74, 108, 6, 77, 3, -1, 0] {
        assert_eq!(IsrChangeRefusal::from_error_code(code).error_code(), code);
    }
    assert!(IsrChangeRefusal::IneligibleReplica.change_not_applied());
    assert!(IsrChangeRefusal::InvalidRequest.change_not_applied());
    assert!(!IsrChangeRefusal::InvalidUpdateVersion.change_not_applied());
    assert!(!IsrChangeRefusal::FencedLeaderEpoch.change_not_applied());
    assert!(!IsrChangeRefusal::Other(77).change_not_applied());
}
