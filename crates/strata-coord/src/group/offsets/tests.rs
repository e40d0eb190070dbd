//! Offset commits (with the group's validation), transactional offsets, expiration, driven
//! through the coordinator; and the offset manager on its own.

use super::*;
use crate::group::tests::*;
use crate::group::{code, GroupCoordinator, GroupState};

#[test]
fn transactional_offsets_wait_for_their_marker() {
    let mut c = coordinator(0);
    let who = by("", -1, 3);
    let offset = |o: i64| commit_at("t", o);
    assert_eq!(c.txn_commit_offsets(&who, (7, 0), &[offset(5)], 0), vec![0]);
    assert_eq!(c.take_txn_records().len(), 1);
    assert!(c.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        c.fetch_offsets("g", None),
        vec![],
        "not visible before the commit marker"
    );
    let partition_of = |_: &str| 3;
    c.complete_transaction(7, true, 4, partition_of);
    assert!(
        c.has_pending_txn_offset("g", "t", 0),
        "another offsets partition's marker"
    );
    c.complete_transaction(7, true, 3, partition_of);
    assert_eq!(
        c.fetch_offsets("g", None)[0].1[0]
            .1
            .as_ref()
            .unwrap()
            .offset,
        5
    );
    assert_eq!(c.txn_commit_offsets(&who, (8, 0), &[offset(9)], 0), vec![0]);
    c.complete_transaction(8, false, 3, partition_of);
    assert!(!c.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        c.fetch_offsets("g", None)[0].1[0]
            .1
            .as_ref()
            .unwrap()
            .offset,
        5,
        "aborted offsets vanish"
    );
}

#[test]
fn offsets_of_empty_groups_expire_after_retention() {
    let mut c = GroupCoordinator::new(
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            offsets_retention_ms: 1000,
            ..GroupConfig::default()
        },
        Default::default(),
    );
    assert_eq!(
        c.commit_offsets(&SIMPLE, &[commit_at("t", 1)], 100),
        vec![0]
    );
    c.take_output();
    assert_eq!(c.expire_offsets(1099), 0);
    assert_eq!(c.expire_offsets(1100), 1);
    let (records, _) = c.take_output();
    assert!(records
        .iter()
        .any(|r| matches!(r, OffsetsRecord::Offset { value: None, .. })));
    assert!(records
        .iter()
        .any(|r| matches!(r, OffsetsRecord::Group { value: None, .. })));
    assert!(
        c.describe_group("g").is_err(),
        "an empty group without offsets is removed"
    );
    // A group with members keeps its offsets however old.
    let a = stable_group(&mut c);
    assert_eq!(
        c.commit_offsets(&by(&a, 1, 8), &[commit_at("t", 2)], 0),
        vec![0]
    );
    assert_eq!(c.expire_offsets(1_000_000), 0);
}

#[test]
fn classic_commits_from_a_generation_that_moved_on_are_refused() {
    let mut c = coordinator(0);
    let commit = [commit_at("t", 1)];
    let err = |e: ResponseError| vec![code(e)];
    let a = join_new(&mut c, 1, 0);
    let gen1 = joins(&mut c)[&1].generation_id;
    sync(&mut c, 2, &a, gen1, &[(a.as_str(), b"a:0,1")], 0);
    syncs(&mut c);
    assert_eq!(c.commit_offsets(&by(&a, gen1, 8), &commit, 1), vec![0]);

    // b joins: PreparingRebalance. Generation 1 is still current, so a may commit what it
    // processed before it rejoins (the eager protocol's commit in onPartitionsRevoked).
    let b = join_new(&mut c, 3, 2);
    assert!(joins(&mut c).is_empty(), "b waits for a to rejoin");
    assert_eq!(c.commit_offsets(&by(&a, gen1, 8), &commit, 3), vec![0]);

    // a rejoins: generation 2, CompletingRebalance; a's partitions are about to move.
    c.join(
        4,
        9,
        &join_request(&a, None),
        "client",
        "/127.0.0.1",
        &[],
        4,
    );
    let answers = joins(&mut c);
    let gen2 = answers[&4].generation_id;
    assert_eq!(gen2, gen1 + 1);
    assert_eq!(
        c.commit_offsets(&by(&a, gen1, 8), &commit, 5),
        err(ResponseError::IllegalGeneration),
        "the generation a owned its partitions in is over"
    );
    assert_eq!(
        c.commit_offsets(&by(&a, gen2, 8), &commit, 5),
        err(ResponseError::RebalanceInProgress),
        "a has the new generation but not its assignment"
    );
    // TxnOffsetCommit does not depend on the group's state, only on the generation.
    assert_eq!(
        c.txn_commit_offsets(&by(&a, gen2, 3), PRODUCER, &commit, 5),
        vec![0]
    );
    assert_eq!(
        c.txn_commit_offsets(&by(&a, gen1, 3), PRODUCER, &commit, 5),
        err(ResponseError::IllegalGeneration)
    );

    sync(&mut c, 5, &b, gen2, &[], 6);
    sync(
        &mut c,
        6,
        &a,
        gen2,
        &[(a.as_str(), b"a:0"), (b.as_str(), b"b:1")],
        6,
    );
    assert_eq!(syncs(&mut c).len(), 2);
    assert_eq!(c.commit_offsets(&by(&a, gen2, 8), &commit, 7), vec![0]);
    assert_eq!(c.commit_offsets(&by(&b, gen2, 8), &commit, 7), vec![0]);

    // Without member or generation: an OffsetCommit is refused while the group has
    // members; a TxnOffsetCommit (old producers send no group metadata) is not.
    assert_eq!(
        c.commit_offsets(&by("", -1, 8), &commit, 8),
        err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        c.txn_commit_offsets(&by("", -1, 3), PRODUCER, &commit, 8),
        vec![0]
    );

    // b leaves: its partitions go back to the group and its commits are refused.
    c.leave("g", &[(b.clone(), None)], &[], 9).unwrap();
    assert_eq!(
        c.commit_offsets(&by(&b, gen2, 8), &commit, 10),
        err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn commits_to_an_unknown_group() {
    let mut c = coordinator(0);
    let commit = [commit_at("t", 1)];
    let err = |e: ResponseError| vec![code(e)];
    assert_eq!(
        c.commit_offsets(&by("m", 3, 9), &commit, 0),
        err(ResponseError::GroupIdNotFound)
    );
    assert_eq!(
        c.commit_offsets(&by("m", 3, 8), &commit, 0),
        err(ResponseError::IllegalGeneration)
    );
    // TxnOffsetCommit has no GROUP_ID_NOT_FOUND: ILLEGAL_GENERATION at every version.
    assert_eq!(
        c.txn_commit_offsets(&by("m", 3, 4), PRODUCER, &commit, 0),
        err(ResponseError::IllegalGeneration)
    );
    assert!(c.fetch_offsets("g", None).is_empty(), "nothing was stored");
    // Without a generation, the group is created (a simple group).
    assert_eq!(
        c.txn_commit_offsets(&by("", -1, 4), PRODUCER, &commit, 0),
        vec![0]
    );
    assert!(c.has_pending_txn_offset("g", "t", 0));
}

#[test]
fn only_an_offset_commit_in_stable_or_preparing_keeps_the_session() {
    let mut c = coordinator(0);
    let commit = [commit_at("t", 1)];
    let a = join_new(&mut c, 1, 0);
    let generation = joins(&mut c)[&1].generation_id;
    sync(&mut c, 2, &a, generation, &[(a.as_str(), b"a")], 0);
    syncs(&mut c);
    let late = i64::from(SESSION_MS) - 1;
    // A TxnOffsetCommit is no sign of life for the member's session...
    assert_eq!(
        c.txn_commit_offsets(&by(&a, generation, 3), PRODUCER, &commit, late),
        vec![0]
    );
    c.tick(&[], late + 2);
    assert_eq!(
        c.describe_group("g").unwrap().state,
        GroupState::Empty,
        "the member expired"
    );
    // ...an OffsetCommit is.
    let b = join_new(&mut c, 3, 100_000);
    let generation = joins(&mut c)[&3].generation_id;
    sync(&mut c, 4, &b, generation, &[(b.as_str(), b"b")], 100_000);
    syncs(&mut c);
    assert_eq!(
        c.commit_offsets(&by(&b, generation, 8), &commit, 100_000 + late),
        vec![0]
    );
    c.tick(&[], 100_000 + late + 2);
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Stable);
}

#[test]
fn consumer_group_commits_need_the_current_member_epoch() {
    use crate::consumer_group::{Assignment, Heartbeat};
    let topics = topic_t();
    let mut c = coordinator(0);
    let beat = |c: &mut GroupCoordinator, member: &str, epoch: i32, owned: &Assignment| {
        c.consumer_heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: member.into(),
                member_epoch: epoch,
                rebalance_timeout_ms: 10_000,
                subscribed_topic_names: Some(vec!["t".into()]),
                owned: Some(owned.clone()),
                api_version: 1,
                ..Default::default()
            },
            &topics,
            0,
        )
        .unwrap()
    };
    let commit = [commit_at("t", 5)];
    let err = |e: ResponseError| vec![code(e)];
    let a = beat(&mut c, "a", 0, &Assignment::new());
    let a_owned = a.assignment.clone().unwrap();
    let epoch_a = a.member_epoch;
    assert_eq!(c.commit_offsets(&by("a", epoch_a, 9), &commit, 1), vec![0]);
    assert_eq!(
        c.commit_offsets(&by("a", epoch_a, 8), &commit, 1),
        err(ResponseError::UnsupportedVersion),
        "OffsetCommit before v9 cannot carry a member epoch"
    );

    // b joins; a must give up half of its partitions, and keeps its epoch until it has.
    beat(&mut c, "b", 0, &Assignment::new());
    let revoking = beat(&mut c, "a", epoch_a, &a_owned);
    assert_eq!(revoking.member_epoch, epoch_a);
    assert_eq!(
        c.commit_offsets(&by("a", epoch_a, 9), &commit, 2),
        vec![0],
        "a commits what it processed before it releases the partitions"
    );
    let kept = revoking.assignment.unwrap();
    let released = beat(&mut c, "a", epoch_a, &kept);
    assert!(released.member_epoch > epoch_a);

    // The rebalance moved on: the epoch a owned the revoked partitions in is stale.
    assert_eq!(
        c.commit_offsets(&by("a", epoch_a, 9), &commit, 3),
        err(ResponseError::StaleMemberEpoch)
    );
    assert_eq!(
        c.commit_offsets(&by("a", released.member_epoch + 1, 9), &commit, 3),
        err(ResponseError::StaleMemberEpoch),
        "an epoch from the future is refused too"
    );
    // TxnOffsetCommit has no STALE_MEMBER_EPOCH.
    assert_eq!(
        c.txn_commit_offsets(&by("a", epoch_a, 4), PRODUCER, &commit, 3),
        err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        c.commit_offsets(&by("a", released.member_epoch, 9), &commit, 3),
        vec![0]
    );
    assert_eq!(
        c.commit_offsets(&by("zz", released.member_epoch, 9), &commit, 3),
        err(ResponseError::UnknownMemberId)
    );
    // Without member metadata: refused for an OffsetCommit while the group has members,
    // accepted for a TxnOffsetCommit.
    assert_eq!(
        c.commit_offsets(&by("", -1, 9), &commit, 3),
        err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        c.txn_commit_offsets(&by("", -1, 4), PRODUCER, &commit, 3),
        vec![0]
    );
}

// ------------------------------------------------------------------ the manager on its own

/// An offset manager with a retention of 1000 ms and metadata of at most 10 bytes.
fn manager() -> OffsetMetadataManager {
    OffsetMetadataManager::new(&GroupConfig {
        max_metadata_bytes: 10,
        offsets_retention_ms: 1000,
        ..GroupConfig::default()
    })
}

fn offset(topic: &str, partition: i32, offset: i64, metadata: &str) -> OffsetCommit {
    OffsetCommit {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: -1,
        metadata: Some(metadata.into()),
    }
}

/// The (topic, partition) of each offset tombstone in `records`, in order.
fn tombstones(records: &[OffsetsRecord]) -> Vec<(String, i32)> {
    records
        .iter()
        .filter_map(|r| match r {
            OffsetsRecord::Offset {
                topic,
                partition,
                value: None,
                ..
            } => Some((topic.clone(), *partition)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_groups_refusal_stores_nothing_and_answers_every_offset() {
    let mut m = manager();
    let mut records = Vec::new();
    let offsets = [offset("t", 0, 5, ""), offset("t", 1, 6, "")];
    let refused = Err(ResponseError::IllegalGeneration);
    assert_eq!(
        m.commit("g", refused, &offsets, None, 0, &mut records),
        vec![code(ResponseError::IllegalGeneration); 2]
    );
    let refused = Err(ResponseError::UnknownMemberId);
    assert_eq!(
        m.commit("g", refused, &offsets, Some((7, 0)), 0, &mut records),
        vec![code(ResponseError::UnknownMemberId); 2]
    );
    assert!(records.is_empty() && m.take_txn_records().is_empty());
    assert!(!m.has_offsets("g"));
    assert_eq!(m.fetch("g", None), vec![]);
}

#[test]
fn metadata_over_the_limit_refuses_only_its_own_offset() {
    let mut m = manager();
    let mut records = Vec::new();
    let offsets = [
        offset("t", 0, 5, "0123456789"),
        offset("t", 1, 6, "0123456789a"),
    ];
    assert_eq!(
        m.commit("g", Ok(()), &offsets, None, 0, &mut records),
        vec![0, code(ResponseError::OffsetMetadataTooLarge)]
    );
    assert_eq!(records.len(), 1);
    let fetched = m.fetch("g", Some(&[("t".into(), vec![0, 1])]));
    assert_eq!(fetched[0].1[0].1.as_ref().map(|o| o.offset), Some(5));
    assert_eq!(fetched[0].1[1].1, None);
}

#[test]
fn offsets_expire_after_the_later_of_the_commit_and_the_group_emptying() {
    let mut m = manager();
    let mut records = Vec::new();
    m.commit(
        "g",
        Ok(()),
        &[offset("t", 0, 1, "")],
        None,
        100,
        &mut records,
    );
    m.commit(
        "g",
        Ok(()),
        &[offset("t", 1, 1, "")],
        None,
        500,
        &mut records,
    );
    records.clear();
    // Empty since 300: t-0 expires at 1300, t-1 at 1500.
    assert_eq!(m.expire("g", 300, 1299, &mut records), (0, false));
    assert_eq!(m.expire("g", 300, 1300, &mut records), (1, false));
    assert_eq!(tombstones(&records), vec![("t".to_string(), 0)]);
    assert!(m.has_offsets("g"));
    assert_eq!(m.expire("g", 300, 1500, &mut records), (1, true));
    assert_eq!(tombstones(&records).len(), 2);
    assert!(!m.has_offsets("g"));
    assert_eq!(
        m.expire("g", 300, 1500, &mut records),
        (0, true),
        "a group without offsets has none left"
    );
}

#[test]
fn pending_offsets_keep_their_group_until_the_marker() {
    let mut m = manager();
    let mut records = Vec::new();
    let pending = [offset("t", 0, 9, "")];
    assert_eq!(
        m.commit("g", Ok(()), &pending, Some((7, 0)), 0, &mut records),
        vec![0]
    );
    assert!(
        records.is_empty(),
        "a transactional offset is the producer's"
    );
    assert_eq!(m.take_txn_records().len(), 1);
    assert!(m.has_offsets("g") && m.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        m.expire("g", 0, 1_000_000, &mut records),
        (0, false),
        "pending offsets do not expire, and keep the group"
    );
    m.complete_transaction(7, false, partition_for_test("g"), partition_for_test);
    assert!(!m.has_offsets("g"), "an abort leaves nothing");
    assert_eq!(m.fetch("g", None), vec![]);
}

fn partition_for_test(group_id: &str) -> i32 {
    group_id.len() as i32
}

#[test]
fn delete_refuses_subscribed_topics_and_tombstones_what_it_removed() {
    let mut m = manager();
    let mut records = Vec::new();
    let offsets = [offset("t", 0, 1, ""), offset("u", 0, 1, "")];
    m.commit("g", Ok(()), &offsets, None, 0, &mut records);
    records.clear();
    let subscribed = |subs: &[Bytes], topic: &str| subs.iter().any(|s| s == topic.as_bytes());
    let partitions = [
        ("t".to_string(), 0),
        ("u".to_string(), 0),
        ("u".to_string(), 1),
    ];
    assert_eq!(
        m.delete(
            "g",
            Err(ResponseError::GroupIdNotFound),
            &partitions,
            subscribed,
            &mut records
        ),
        Err(code(ResponseError::GroupIdNotFound))
    );
    let members_subscribe_to_t = Ok(vec![Bytes::from_static(b"t")]);
    assert_eq!(
        m.delete(
            "g",
            members_subscribe_to_t,
            &partitions,
            subscribed,
            &mut records
        ),
        Ok(vec![code(ResponseError::GroupSubscribedToTopic), 0, 0])
    );
    assert_eq!(
        tombstones(&records),
        vec![("u".to_string(), 0)],
        "no tombstone for an offset that was never committed"
    );
    let fetched = m.fetch("g", None);
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].0, "t");
}

#[test]
fn replaying_the_last_tombstone_leaves_the_group_without_offsets() {
    let mut m = manager();
    let committed = crate::offsets_topic::CommittedOffset {
        offset: 3,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    m.replay("g".into(), "t".into(), 0, Some(committed));
    assert!(m.has_offsets("g"));
    m.replay("g".into(), "t".into(), 0, None);
    assert!(!m.has_offsets("g"));
    assert_eq!(m.fetch("g", None), vec![]);
}
