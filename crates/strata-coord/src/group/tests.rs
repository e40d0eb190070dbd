use super::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;

const SESSION_MS: i32 = 10_000;

/// A commit to group "g" from outside any generation (Kafka's "simple" group: an admin, or a
/// consumer using `assign()`).
const SIMPLE: CommitIdentity<'static> = CommitIdentity {
    group_id: "g",
    generation_id: -1,
    member_id: "",
    group_instance_id: None,
    api_version: 8,
};

/// Offset `offset` of partition 0 of `topic`, without leader epoch or metadata.
fn commit_at(topic: &str, offset: i64) -> OffsetCommit {
    OffsetCommit {
        topic: topic.into(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: None,
    }
}

fn coordinator(initial_delay_ms: i64) -> GroupCoordinator {
    GroupCoordinator::new(
        GroupConfig {
            initial_rebalance_delay_ms: initial_delay_ms,
            ..GroupConfig::default()
        },
        Default::default(),
    )
}

fn join_request(member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(s("g").into())
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"sub"))])
}

/// Splits replies into JoinGroup and SyncGroup answers by reply id.
type Answers = (
    HashMap<ReplyId, JoinGroupResponse>,
    HashMap<ReplyId, SyncGroupResponse>,
);

fn split_replies(replies: Vec<PendingReply>) -> Answers {
    let (mut joins, mut syncs) = (HashMap::new(), HashMap::new());
    for r in replies {
        match r {
            PendingReply::Join(id, resp) => {
                joins.insert(id, resp);
            }
            PendingReply::Sync(id, resp) => {
                syncs.insert(id, resp);
            }
        }
    }
    (joins, syncs)
}

fn joins(c: &mut GroupCoordinator) -> HashMap<ReplyId, JoinGroupResponse> {
    split_replies(c.take_output().1).0
}

fn syncs(c: &mut GroupCoordinator) -> HashMap<ReplyId, SyncGroupResponse> {
    split_replies(c.take_output().1).1
}

/// Joins a new dynamic member through the KIP-394 two-step join; returns its member id.
fn join_new(c: &mut GroupCoordinator, reply: ReplyId, now: i64) -> String {
    c.join(
        reply,
        9,
        &join_request("", None),
        "client",
        "/127.0.0.1",
        &[],
        now,
    );
    let first = joins(c).remove(&reply).expect("immediate answer");
    assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
    let id = first.member_id.to_string();
    c.join(
        reply,
        9,
        &join_request(&id, None),
        "client",
        "/127.0.0.1",
        &[],
        now,
    );
    id
}

fn sync(
    c: &mut GroupCoordinator,
    reply: ReplyId,
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
    now: i64,
) {
    let request = SyncGroupRequest::default()
        .with_group_id(s("g").into())
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        );
    c.sync(reply, 5, &request, &[], now);
}

#[test]
fn two_members_rebalance_and_sync() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    let a_join = joins(&mut c)
        .remove(&1)
        .expect("single member completes at once");
    assert_eq!(a_join.error_code, 0);
    assert_eq!(a_join.generation_id, 1);
    assert_eq!(a_join.leader.as_str(), a);
    sync(&mut c, 1, &a, 1, &[(&a, b"all")], 0);
    assert_eq!(syncs(&mut c)[&1].assignment.as_ref(), b"all");

    // A second member triggers a rebalance; it completes once the first one rejoins.
    let b = join_new(&mut c, 2, 10);
    assert!(joins(&mut c).is_empty());
    assert_eq!(
        c.heartbeat("g", &a, None, 1, 20),
        code(ResponseError::RebalanceInProgress)
    );
    c.join(
        3,
        9,
        &join_request(&a, None),
        "client",
        "/127.0.0.1",
        &[],
        30,
    );
    let answers = joins(&mut c);
    assert_eq!(answers[&3].generation_id, 2);
    assert_eq!(answers[&3].members.len(), 2, "the leader gets the members");
    assert!(answers[&2].members.is_empty());
    sync(&mut c, 4, &b, 2, &[], 40);
    assert!(syncs(&mut c).is_empty(), "followers wait for the leader");
    sync(&mut c, 5, &a, 2, &[(&a, b"p0"), (&b, b"p1")], 50);
    let (records, replies) = c.take_output();
    assert!(records
        .iter()
        .any(|r| matches!(r, OffsetsRecord::Group { value: Some(g), .. } if g.generation == 2)));
    let answers = split_replies(replies).1;
    assert_eq!(answers[&4].assignment.as_ref(), b"p1");
    assert_eq!(answers[&5].assignment.as_ref(), b"p0");
    assert_eq!(c.heartbeat("g", &b, None, 2, 60), 0);
    assert_eq!(
        c.heartbeat("g", &b, None, 1, 60),
        code(ResponseError::IllegalGeneration)
    );
}

#[test]
fn expired_session_triggers_rebalance_and_removal() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    sync(&mut c, 1, &a, 1, &[(&a, b"x")], 0);
    syncs(&mut c);
    c.tick(&[], SESSION_MS as i64 - 1);
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Stable);
    c.tick(&[], SESSION_MS as i64 + 1);
    let d = c.describe_group("g").unwrap();
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
}

#[test]
fn static_member_rejoins_without_rebalance() {
    let mut c = coordinator(0);
    c.join(1, 9, &join_request("", Some("i1")), "client", "/h", &[], 0);
    let a = joins(&mut c).remove(&1).unwrap();
    assert_eq!(a.error_code, 0, "static members skip MEMBER_ID_REQUIRED");
    let a_id = a.member_id.to_string();
    sync(&mut c, 1, &a_id, 1, &[(&a_id, b"mine")], 0);
    syncs(&mut c);
    // Restart: same instance id, no member id.
    c.join(
        2,
        9,
        &join_request("", Some("i1")),
        "client",
        "/h",
        &[],
        100,
    );
    let again = joins(&mut c).remove(&2).unwrap();
    assert_eq!(again.error_code, 0);
    assert_eq!(again.generation_id, 1, "no new generation");
    assert_ne!(again.member_id.to_string(), a_id);
    assert!(again.skip_assignment);
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Stable);
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", &a_id, Some("i1"), 1, 100),
        code(ResponseError::FencedInstanceId)
    );
    let new_id = again.member_id.to_string();
    sync(&mut c, 3, &new_id, 1, &[], 100);
    assert_eq!(syncs(&mut c)[&3].assignment.as_ref(), b"mine");
}

#[test]
fn initial_delay_waits_for_more_members() {
    let mut c = coordinator(3000);
    let a = join_new(&mut c, 1, 0);
    let b = join_new(&mut c, 2, 1000);
    assert!(joins(&mut c).is_empty());
    c.tick(&[], 2000);
    assert!(
        joins(&mut c).is_empty(),
        "delay extended by the second member"
    );
    c.tick(&[], 4001);
    let answers = joins(&mut c);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[&1].generation_id, 1);
    assert!(c
        .describe_group("g")
        .unwrap()
        .members
        .iter()
        .any(|m| m.member_id == b));
    let _ = a;
}

#[test]
fn rejoin_timeout_drops_silent_dynamic_members() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    sync(&mut c, 1, &a, 1, &[(&a, b"x")], 0);
    syncs(&mut c);
    let _b = join_new(&mut c, 2, 100);
    // `a` keeps heartbeating but never rejoins within the rebalance timeout.
    assert_eq!(
        c.heartbeat("g", &a, None, 1, 5000),
        code(ResponseError::RebalanceInProgress)
    );
    c.tick(&[], 30_101);
    let answers = joins(&mut c);
    assert_eq!(answers[&2].generation_id, 2);
    assert_eq!(c.describe_group("g").unwrap().members.len(), 1);
}

#[test]
fn leave_and_join_errors() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    assert_eq!(
        c.leave("g", &[(a.clone(), None), ("nobody".into(), None)], &[], 0),
        Ok(vec![0, code(ResponseError::UnknownMemberId)])
    );
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Empty);
    c.join(5, 9, &join_request("ghost", None), "c", "h", &[], 0);
    assert_eq!(
        joins(&mut c)[&5].error_code,
        code(ResponseError::UnknownMemberId)
    );
    let mut bad = join_request("", None);
    bad.session_timeout_ms = 1;
    c.join(6, 9, &bad, "c", "h", &[], 0);
    assert_eq!(
        joins(&mut c)[&6].error_code,
        code(ResponseError::InvalidSessionTimeout)
    );
    let mut other = join_request("", None);
    other.protocol_type = s("connect");
    let _ = join_new(&mut c, 7, 0);
    joins(&mut c);
    c.join(8, 9, &other, "c", "h", &[], 0);
    assert_eq!(
        joins(&mut c)[&8].error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn offset_commits_follow_kafka_validation() {
    let mut c = coordinator(0);
    let commit = |topic: &str| commit_at(topic, 5);
    assert_eq!(c.commit_offsets(&SIMPLE, &[commit("t")], 0), vec![0]);
    let fetched = c.fetch_offsets("g", Some(&[("t".into(), vec![0, 1])]));
    assert_eq!(fetched[0].1[0].1.as_ref().map(|o| o.offset), Some(5));
    assert_eq!(fetched[0].1[1].1, None);
    // A member of the wrong generation is refused.
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    let stale = CommitIdentity {
        group_id: "g",
        generation_id: 0,
        member_id: &a,
        group_instance_id: None,
        api_version: 8,
    };
    assert_eq!(
        c.commit_offsets(&stale, &[commit("t")], 0),
        vec![code(ResponseError::IllegalGeneration)]
    );
    let unknown = CommitIdentity {
        group_id: "nope",
        generation_id: 3,
        member_id: "x",
        group_instance_id: None,
        api_version: 9,
    };
    assert_eq!(
        c.commit_offsets(&unknown, &[commit("t")], 0),
        vec![code(ResponseError::GroupIdNotFound)]
    );
    assert_eq!(c.delete_group("g"), code(ResponseError::NonEmptyGroup));
    c.leave("g", &[(a, None)], &[], 0).unwrap();
    assert_eq!(c.delete_group("g"), 0);
    assert!(c.fetch_offsets("g", None).is_empty());
    assert_eq!(c.delete_group("g"), code(ResponseError::GroupIdNotFound));
}

#[test]
fn state_survives_a_reload_of_its_records() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    sync(&mut c, 1, &a, 1, &[(&a, b"x")], 0);
    let me = CommitIdentity {
        group_id: "g",
        generation_id: 1,
        member_id: &a,
        group_instance_id: None,
        api_version: 8,
    };
    let offset = OffsetCommit {
        topic: "t".into(),
        partition: 2,
        offset: 9,
        leader_epoch: 0,
        metadata: Some("m".into()),
    };
    assert_eq!(c.commit_offsets(&me, &[offset], 0), vec![0]);
    let (records, _) = c.take_output();
    let mut reloaded = coordinator(0);
    for r in records {
        let (k, v) = r.encode();
        reloaded.load(OffsetsRecord::decode(&k, v.as_deref()).unwrap().unwrap(), 0);
    }
    let d = reloaded.describe_group("g").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members[0].assignment.as_ref(), b"x");
    assert_eq!(reloaded.heartbeat("g", &a, None, 1, 1), 0);
    assert_eq!(
        reloaded.fetch_offsets("g", None)[0].1[0]
            .1
            .as_ref()
            .unwrap()
            .metadata,
        "m"
    );
}

#[test]
fn transactional_offsets_wait_for_their_marker() {
    let mut c = coordinator(0);
    let who = CommitIdentity {
        group_id: "g",
        generation_id: -1,
        member_id: "",
        group_instance_id: None,
        api_version: 3,
    };
    let offset = |o: i64| OffsetCommit {
        topic: "t".into(),
        partition: 0,
        offset: o,
        leader_epoch: -1,
        metadata: None,
    };
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
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    let member = CommitIdentity {
        group_id: "g",
        generation_id: 1,
        member_id: &a,
        group_instance_id: None,
        api_version: 8,
    };
    let offset = OffsetCommit {
        topic: "t".into(),
        partition: 0,
        offset: 2,
        leader_epoch: -1,
        metadata: None,
    };
    sync(&mut c, 1, &a, 1, &[(&a, b"x")], 0);
    assert_eq!(c.commit_offsets(&member, &[offset], 0), vec![0]);
    assert_eq!(c.expire_offsets(1_000_000), 0);
}

#[test]
fn consumer_groups_survive_a_reload() {
    use crate::consumer_group::{Heartbeat, TopicView};
    let topics = [TopicView {
        name: "t".into(),
        id: uuid::Uuid::new_v4(),
        partitions: 4,
    }];
    let mut c = coordinator(0);
    let joined = c
        .consumer_heartbeat(
            Heartbeat {
                group_id: "cg".into(),
                member_id: "m1".into(),
                member_epoch: 0,
                rebalance_timeout_ms: 1000,
                subscribed_topic_names: Some(vec!["t".into()]),
                owned: Some(Default::default()),
                api_version: 1,
                ..Default::default()
            },
            &topics,
            0,
        )
        .unwrap();
    let (records, _) = c.take_output();
    assert!(records
        .iter()
        .any(|r| matches!(r, OffsetsRecord::ConsumerGroup { value: Some(_), .. })));
    let mut reloaded = coordinator(0);
    for r in records {
        let (k, v) = r.encode();
        reloaded.load(
            OffsetsRecord::decode(&k, v.as_deref()).unwrap().unwrap(),
            10,
        );
    }
    // The member carries on with its epoch and assignment, without rejoining.
    let again = reloaded
        .consumer_heartbeat(
            Heartbeat {
                group_id: "cg".into(),
                member_id: "m1".into(),
                member_epoch: joined.member_epoch,
                owned: joined.assignment.clone(),
                api_version: 1,
                ..Default::default()
            },
            &topics,
            20,
        )
        .unwrap();
    assert_eq!(again.member_epoch, joined.member_epoch);
    assert_eq!(
        reloaded.consumer_group("cg").unwrap().members["m1"].assigned,
        joined.assignment.unwrap()
    );
    let (records, _) = reloaded.take_output();
    assert!(records.is_empty(), "a steady heartbeat writes nothing");
    assert_eq!(
        reloaded.delete_group("cg"),
        code(ResponseError::NonEmptyGroup)
    );
}

#[test]
fn unloading_a_group_answers_its_waiting_members_and_forgets_it() {
    // initial delay: the first member's JoinGroup waits for more members.
    let mut c = coordinator(60_000);
    assert_eq!(c.commit_offsets(&SIMPLE, &[commit_at("t", 5)], 0), vec![0]);
    let _ = c.take_output();
    join_new(&mut c, 7, 0);
    assert!(
        joins(&mut c).is_empty(),
        "the join waits for the initial delay"
    );
    assert_eq!(c.unload_groups(|g| g == "other"), 0);
    assert_eq!(c.unload_groups(|g| g == "g"), 1);
    let answered = joins(&mut c);
    assert_eq!(
        answered.get(&7).map(|r| r.error_code),
        Some(code(ResponseError::NotCoordinator))
    );
    let fetched = c.fetch_offsets("g", Some(&[("t".into(), vec![0])]));
    assert_eq!(fetched[0].1[0].1, None, "offsets went with the group");
}

/// A commit to group "g" by `member` of `generation`, as OffsetCommit `api_version`.
fn by<'a>(member: &'a str, generation: i32, api_version: i16) -> CommitIdentity<'a> {
    CommitIdentity {
        group_id: "g",
        generation_id: generation,
        member_id: member,
        group_instance_id: None,
        api_version,
    }
}

const PRODUCER: (i64, i16) = (7, 0);

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
    use crate::consumer_group::{Assignment, Heartbeat, TopicView};
    let topics = [TopicView {
        name: "t".into(),
        id: uuid::Uuid::new_v4(),
        partitions: 4,
    }];
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

// ------------------------------------------------------------------ online migration

mod migration {
    use super::*;
    use crate::consumer_group::{
        Heartbeat, HeartbeatResult, MigrationPolicy, TopicView, LEAVE_EPOCH,
    };
    use bytes::{Buf, BufMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Assigned;
    use kafka_protocol::messages::{
        ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    };
    use kafka_protocol::protocol::Encodable;

    fn topics() -> Vec<TopicView> {
        vec![TopicView {
            name: "t".into(),
            id: uuid::Uuid::from_u128(7),
            partitions: 4,
        }]
    }

    /// A `consumer` protocol subscription to "t", version 0 (as eager clients send).
    fn subscription() -> Bytes {
        let mut b = bytes::BytesMut::new();
        b.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![s("t")])
            .encode(&mut b, 0)
            .unwrap();
        b.freeze()
    }

    fn assignment(partitions: &[i32]) -> Bytes {
        let mut b = bytes::BytesMut::new();
        b.put_i16(0);
        ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![Assigned::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(partitions.to_vec())])
            .encode(&mut b, 0)
            .unwrap();
        b.freeze()
    }

    fn partitions_of(raw: &Bytes) -> Vec<i32> {
        let mut b = raw.clone();
        let version = b.get_i16();
        let a = <ConsumerProtocolAssignment as kafka_protocol::protocol::Decodable>::decode(
            &mut b, version,
        )
        .unwrap();
        let mut ps: Vec<i32> = a
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.clone())
            .collect();
        ps.sort();
        ps
    }

    fn classic_join_request(member_id: &str) -> JoinGroupRequest {
        join_request(member_id, None).with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription())])
    }

    fn coordinator_with(policy: MigrationPolicy) -> GroupCoordinator {
        GroupCoordinator::new(
            GroupConfig {
                initial_rebalance_delay_ms: 0,
                ..GroupConfig::default()
            },
            crate::consumer_group::ConsumerGroupConfig {
                migration_policy: policy,
                ..Default::default()
            },
        )
    }

    /// A classic group "g" whose one member `a` owns all of "t" at generation 1.
    fn stable_classic_group(c: &mut GroupCoordinator) -> String {
        c.join(1, 7, &classic_join_request(""), "kp", "/h", &topics(), 0);
        let first = joins(c).remove(&1).unwrap();
        let a = first.member_id.to_string();
        c.join(2, 7, &classic_join_request(&a), "kp", "/h", &topics(), 0);
        let joined = joins(c).remove(&2).unwrap();
        assert_eq!(joined.generation_id, 1);
        let all = assignment(&[0, 1, 2, 3]);
        let request = SyncGroupRequest::default()
            .with_group_id(s("g").into())
            .with_generation_id(1)
            .with_member_id(s(&a))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&a))
                .with_assignment(all)]);
        c.sync(3, 5, &request, &topics(), 0);
        assert_eq!(syncs(c)[&3].error_code, 0);
        a
    }

    fn consumer_join(
        c: &mut GroupCoordinator,
        member: &str,
        now: i64,
    ) -> Result<HeartbeatResult, crate::consumer_group::HeartbeatError> {
        c.consumer_heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: member.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 30_000,
                subscribed_topic_names: Some(vec!["t".into()]),
                owned: Some(Default::default()),
                api_version: 1,
                ..Default::default()
            },
            &topics(),
            now,
        )
    }

    fn classic_sync(
        c: &mut GroupCoordinator,
        reply: ReplyId,
        a: &str,
        generation: i32,
    ) -> SyncGroupResponse {
        let request = SyncGroupRequest::default()
            .with_group_id(s("g").into())
            .with_generation_id(generation)
            .with_member_id(s(a))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")));
        c.sync(reply, 5, &request, &topics(), 10);
        syncs(c).remove(&reply).unwrap()
    }

    fn group_type(c: &GroupCoordinator) -> &'static str {
        c.list_groups(&[], &[])
            .into_iter()
            .find(|g| g.group_id == "g")
            .map(|g| g.group_type)
            .unwrap_or("none")
    }

    #[test]
    fn a_classic_group_upgrades_when_a_consumer_member_joins_and_downgrades_when_it_leaves() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let a = stable_classic_group(&mut c);
        c.take_output();

        // Upgrade: the consumer-protocol member joins; a keeps its partitions for now.
        let c1 = consumer_join(&mut c, "c1", 5).unwrap();
        assert_eq!(group_type(&c), "consumer");
        assert_eq!(
            c1.member_epoch, 2,
            "the classic generation 1, then the join"
        );
        assert_eq!(c1.assignment.as_ref().map(|a| a.len()), Some(0));
        let (records, _) = c.take_output();
        assert!(
            matches!(records[0], OffsetsRecord::Group { value: None, .. }),
            "{records:?}"
        );
        assert!(matches!(
            records[1],
            OffsetsRecord::ConsumerGroup { value: Some(_), .. }
        ));

        // a learns of the rebalance from its heartbeat and rejoins (eager: it owns nothing).
        assert_eq!(
            c.heartbeat("g", &a, None, 1, 6),
            code(ResponseError::RebalanceInProgress)
        );
        c.join(10, 7, &classic_join_request(&a), "kp", "/h", &topics(), 7);
        let j = joins(&mut c).remove(&10).unwrap();
        assert_eq!(
            (j.error_code, j.generation_id),
            (0, 1),
            "epoch held until a gives up two"
        );
        assert!(
            j.leader.is_empty() && j.members.is_empty(),
            "the broker assigns"
        );
        let kept = partitions_of(&classic_sync(&mut c, 11, &a, 1).assignment);
        assert_eq!(kept.len(), 2);
        assert_eq!(
            c.heartbeat("g", &a, None, 1, 8),
            code(ResponseError::RebalanceInProgress)
        );
        c.join(12, 7, &classic_join_request(&a), "kp", "/h", &topics(), 9);
        let j = joins(&mut c).remove(&12).unwrap();
        assert_eq!(j.generation_id, 2);
        assert_eq!(
            partitions_of(&classic_sync(&mut c, 13, &a, 2).assignment),
            kept
        );
        assert_eq!(c.heartbeat("g", &a, None, 2, 10), 0);
        // c1 now gets the two a released.
        let c1 = c
            .consumer_heartbeat(
                Heartbeat {
                    group_id: "g".into(),
                    member_id: "c1".into(),
                    member_epoch: 2,
                    owned: Some(Default::default()),
                    api_version: 1,
                    ..Default::default()
                },
                &topics(),
                11,
            )
            .unwrap();
        let c1_parts: usize = c1.assignment.unwrap().values().map(|p| p.len()).sum();
        assert_eq!(c1_parts, 2);
        // a commits with its generation (its member epoch), in any OffsetCommit version.
        let commit = [commit_at("t", 9)];
        let a_at = |generation| CommitIdentity {
            group_id: "g",
            generation_id: generation,
            member_id: &a,
            group_instance_id: None,
            api_version: 8,
        };
        assert_eq!(c.commit_offsets(&a_at(2), &commit, 12), vec![0]);
        assert_eq!(
            c.commit_offsets(&a_at(1), &commit, 12),
            vec![code(ResponseError::IllegalGeneration)]
        );
        c.take_output();

        // Downgrade: c1 leaves; a is the last member, of the classic protocol.
        let left = c
            .consumer_heartbeat(
                Heartbeat {
                    group_id: "g".into(),
                    member_id: "c1".into(),
                    member_epoch: LEAVE_EPOCH,
                    api_version: 1,
                    ..Default::default()
                },
                &topics(),
                20,
            )
            .unwrap();
        assert_eq!(left.member_epoch, LEAVE_EPOCH);
        assert_eq!(group_type(&c), "classic");
        assert_eq!(
            c.describe_group("g").unwrap().state,
            GroupState::PreparingRebalance
        );
        let (records, _) = c.take_output();
        assert!(matches!(
            records[0],
            OffsetsRecord::ConsumerGroup { value: None, .. }
        ));
        let stored = records.iter().find_map(|r| match r {
            OffsetsRecord::Group { value: Some(g), .. } => Some(g.clone()),
            _ => None,
        });
        let stored = stored.expect("the classic group is written");
        assert_eq!(stored.generation, 2);
        assert_eq!(partitions_of(&stored.members[0].assignment), kept);
        // a's generation is still the group's: its heartbeat asks it to rejoin.
        assert_eq!(
            c.heartbeat("g", &a, None, 2, 21),
            code(ResponseError::RebalanceInProgress)
        );
        c.join(30, 7, &classic_join_request(&a), "kp", "/h", &topics(), 22);
        let j = joins(&mut c).remove(&30).unwrap();
        assert_eq!((j.generation_id, j.leader.to_string()), (3, a.clone()));
        // The committed offset survived both conversions.
        let fetched = c.fetch_offsets("g", Some(&[("t".into(), vec![0])]));
        assert_eq!(fetched[0].1[0].1.as_ref().map(|o| o.offset), Some(9));
    }

    #[test]
    fn the_migration_policy_and_the_protocol_type_can_refuse_an_upgrade() {
        for policy in [MigrationPolicy::Disabled, MigrationPolicy::Downgrade] {
            let mut c = coordinator_with(policy);
            stable_classic_group(&mut c);
            let err = consumer_join(&mut c, "c1", 5).unwrap_err();
            assert_eq!(err.error, ResponseError::GroupIdNotFound);
            assert_eq!(
                err.message,
                "Cannot upgrade classic group g to consumer group because online upgrade is disabled."
            );
            assert_eq!(group_type(&c), "classic");
        }
        // A connect group (another embedded protocol) is never upgraded.
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let connect = join_request("", None).with_protocol_type(s("connect"));
        c.join(1, 9, &connect, "w", "/h", &topics(), 0);
        let id = joins(&mut c).remove(&1).unwrap().member_id.to_string();
        c.join(
            2,
            9,
            &join_request(&id, None).with_protocol_type(s("connect")),
            "w",
            "/h",
            &topics(),
            0,
        );
        let err = consumer_join(&mut c, "c1", 5).unwrap_err();
        assert!(
            err.message
                .contains("does not use the consumer embedded protocol"),
            "{}",
            err.message
        );
        // Without the policy for it, the last consumer member leaving empties the group.
        let mut c = coordinator_with(MigrationPolicy::Upgrade);
        let a = stable_classic_group(&mut c);
        consumer_join(&mut c, "c1", 5).unwrap();
        c.consumer_heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: "c1".into(),
                member_epoch: LEAVE_EPOCH,
                api_version: 1,
                ..Default::default()
            },
            &topics(),
            6,
        )
        .unwrap();
        assert_eq!(group_type(&c), "consumer", "no downgrade");
        assert_eq!(
            c.heartbeat("g", &a, None, 1, 7),
            code(ResponseError::RebalanceInProgress)
        );
    }

    #[test]
    fn a_classic_member_joins_a_consumer_group_and_a_failed_join_changes_nothing() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let c1 = consumer_join(&mut c, "c1", 0).unwrap();
        assert_eq!(
            c1.assignment
                .as_ref()
                .map(|a| a.values().map(|p| p.len()).sum::<usize>()),
            Some(4)
        );
        // KIP-394 first, then the member is in, with nothing until c1 releases.
        c.join(1, 7, &classic_join_request(""), "kp", "/h", &topics(), 1);
        let first = joins(&mut c).remove(&1).unwrap();
        assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
        let a = first.member_id.to_string();
        c.join(2, 7, &classic_join_request(&a), "kp", "/h", &topics(), 1);
        let j = joins(&mut c).remove(&2).unwrap();
        assert_eq!(j.error_code, 0);
        assert!(partitions_of(&classic_sync(&mut c, 3, &a, j.generation_id).assignment).is_empty());
        let member = &c.consumer_group("g").unwrap().members[&a];
        assert!(member.classic.is_some());
        // Another embedded protocol cannot join.
        c.join(
            4,
            9,
            &join_request("", None).with_protocol_type(s("connect")),
            "w",
            "/h",
            &topics(),
            2,
        );
        assert_eq!(
            joins(&mut c)[&4].error_code,
            code(ResponseError::InconsistentGroupProtocol)
        );
        // The group's snapshot, classic member included, survives a reload.
        let mut records = Vec::new();
        c.persist_consumer_group("g", None);
        records.extend(c.take_output().0);
        let mut reloaded = coordinator_with(MigrationPolicy::Bidirectional);
        for r in records {
            let (k, v) = r.encode();
            reloaded.load(OffsetsRecord::decode(&k, v.as_deref()).unwrap().unwrap(), 5);
        }
        assert_eq!(
            reloaded.consumer_group("g").unwrap().members[&a].classic,
            c.consumer_group("g").unwrap().members[&a].classic
        );
    }

    #[test]
    fn empty_groups_change_protocol_whatever_the_policy() {
        let mut c = coordinator_with(MigrationPolicy::Disabled);
        consumer_join(&mut c, "c1", 0).unwrap();
        c.consumer_heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: "c1".into(),
                member_epoch: LEAVE_EPOCH,
                api_version: 1,
                ..Default::default()
            },
            &topics(),
            1,
        )
        .unwrap();
        c.take_output();
        // A classic member takes the empty consumer group's id.
        c.join(1, 9, &classic_join_request(""), "kp", "/h", &topics(), 2);
        let (records, replies) = c.take_output();
        assert!(matches!(
            records[0],
            OffsetsRecord::ConsumerGroup { value: None, .. }
        ));
        assert!(
            matches!(&replies[0], PendingReply::Join(_, r) if r.error_code == code(ResponseError::MemberIdRequired))
        );
        assert!(c.consumer_group("g").is_none());
        assert_eq!(group_type(&c), "classic");
    }

    /// A `consumer` protocol subscription to `names`, version 0.
    fn subscription_to(names: &[&str]) -> Bytes {
        let mut b = bytes::BytesMut::new();
        b.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(names.iter().map(|n| s(n)).collect())
            .encode(&mut b, 0)
            .unwrap();
        b.freeze()
    }

    fn classic_static_join_request(
        member_id: &str,
        instance: &str,
        names: &[&str],
    ) -> JoinGroupRequest {
        join_request(member_id, Some(instance)).with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription_to(names)),
        ])
    }

    fn owned(partitions: &[i32]) -> crate::consumer_group::Assignment {
        let mut a = crate::consumer_group::Assignment::new();
        if !partitions.is_empty() {
            a.insert(topics()[0].id, partitions.iter().copied().collect());
        }
        a
    }

    fn parts(a: &crate::consumer_group::Assignment) -> Vec<i32> {
        a.values().flatten().copied().collect()
    }

    /// A ConsumerGroupHeartbeat of the static member `member` (instance "i1") to "g".
    fn static_consumer_beat(
        c: &mut GroupCoordinator,
        member: &str,
        epoch: i32,
        owned_now: &[i32],
        now: i64,
    ) -> Result<HeartbeatResult, crate::consumer_group::HeartbeatError> {
        c.consumer_heartbeat(
            Heartbeat {
                group_id: "g".into(),
                member_id: member.into(),
                member_epoch: epoch,
                instance_id: Some("i1".into()),
                rebalance_timeout_ms: 30_000,
                subscribed_topic_names: (epoch == 0).then(|| vec!["t".into()]),
                owned: Some(owned(owned_now)),
                api_version: 1,
                ..Default::default()
            },
            &topics(),
            now,
        )
    }

    /// A consumer group "g" at epoch 2, reconciled: the static consumer-protocol member c1
    /// (instance "i1") and the classic member `a` own two partitions each. Returns a's id
    /// and c1's partitions.
    fn reconciled_mixed_group(c: &mut GroupCoordinator) -> (String, Vec<i32>) {
        let c1 = static_consumer_beat(c, "c1", 0, &[], 0).unwrap();
        assert_eq!(parts(c1.assignment.as_ref().unwrap()), vec![0, 1, 2, 3]);
        c.join(1, 7, &classic_join_request(""), "kp", "/h", &topics(), 1);
        let a = joins(c).remove(&1).unwrap().member_id.to_string();
        c.join(2, 7, &classic_join_request(&a), "kp", "/h", &topics(), 1);
        assert_eq!(joins(c).remove(&2).unwrap().generation_id, 2);
        let kept = static_consumer_beat(c, "c1", 1, &[0, 1, 2, 3], 2).unwrap();
        let kept = parts(kept.assignment.as_ref().unwrap());
        assert_eq!(kept.len(), 2);
        assert_eq!(
            static_consumer_beat(c, "c1", 1, &kept, 3)
                .unwrap()
                .member_epoch,
            2
        );
        assert_eq!(
            c.heartbeat("g", &a, None, 2, 4),
            code(ResponseError::RebalanceInProgress),
            "a's partitions were released"
        );
        c.join(3, 7, &classic_join_request(&a), "kp", "/h", &topics(), 5);
        assert_eq!(joins(c).remove(&3).unwrap().generation_id, 2);
        assert_eq!(
            partitions_of(&classic_sync(c, 4, &a, 2).assignment).len(),
            2
        );
        assert_eq!(c.consumer_group("g").unwrap().state(), "Stable");
        c.take_output();
        (a, kept)
    }

    #[test]
    fn a_classic_static_member_replacing_the_last_consumer_member_downgrades_the_group() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let (a, c1_parts) = reconciled_mixed_group(&mut c);

        // c1's next incarnation uses the classic protocol, with the same subscription.
        c.join(
            10,
            9,
            &classic_static_join_request("", "i1", &["t"]),
            "kp2",
            "/h",
            &topics(),
            10,
        );
        let (records, replies) = c.take_output();
        let j = split_replies(replies).0.remove(&10).unwrap();
        let new_id = j.member_id.to_string();
        assert_eq!(j.error_code, 0);
        assert_ne!(new_id, "c1");
        assert_eq!(
            (
                j.generation_id,
                j.protocol_name.as_deref().map(|p| p.to_string())
            ),
            (2, Some("range".to_string())),
            "reconciled to c1's target at the group's epoch"
        );
        assert_eq!(group_type(&c), "classic");
        assert!(
            matches!(records[0], OffsetsRecord::ConsumerGroup { value: None, .. }),
            "{records:?}"
        );
        let stored = records
            .iter()
            .find_map(|r| match r {
                OffsetsRecord::Group { value: Some(g), .. } => Some(g.clone()),
                _ => None,
            })
            .expect("the classic group is written");
        assert_eq!(stored.generation, 2);
        let assigned: HashMap<String, Vec<i32>> = stored
            .members
            .iter()
            .map(|m| (m.member_id.clone(), partitions_of(&m.assignment)))
            .collect();
        assert_eq!(
            assigned[&new_id], c1_parts,
            "the new incarnation has c1's partitions"
        );
        assert_eq!(assigned[&a].len(), 2);
        // Same subscription: no rebalance. Both collect their assignment at generation 2.
        assert_eq!(c.describe_group("g").unwrap().state, GroupState::Stable);
        assert_eq!(c.heartbeat("g", &a, None, 2, 11), 0);
        let request = SyncGroupRequest::default()
            .with_group_id(s("g").into())
            .with_generation_id(2)
            .with_member_id(s(&new_id))
            .with_group_instance_id(Some(s("i1")));
        c.sync(11, 5, &request, &topics(), 12);
        let synced = syncs(&mut c).remove(&11).unwrap();
        assert_eq!(
            (synced.error_code, partitions_of(&synced.assignment)),
            (0, c1_parts)
        );
        // The old incarnation's heartbeats now reach a classic group.
        assert_eq!(
            static_consumer_beat(&mut c, "c1", 2, &[], 13)
                .unwrap_err()
                .error,
            ResponseError::GroupIdNotFound
        );
    }

    #[test]
    fn a_replacement_with_another_subscription_downgrades_and_rebalances() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let (a, _) = reconciled_mixed_group(&mut c);
        let epoch = c.consumer_group("g").unwrap().group_epoch;
        c.join(
            10,
            9,
            &classic_static_join_request("", "i1", &["t", "u"]),
            "kp2",
            "/h",
            &topics(),
            10,
        );
        let (records, replies) = c.take_output();
        let j = split_replies(replies).0.remove(&10).unwrap();
        assert_eq!(j.error_code, 0);
        // Kafka answers with the member's epoch as it was copied from c1 (0): it was not
        // reconciled, the classic group rebalances.
        assert_eq!(j.generation_id, 0);
        assert_eq!(group_type(&c), "classic");
        assert_eq!(
            c.describe_group("g").unwrap().state,
            GroupState::PreparingRebalance
        );
        let stored = records.into_iter().find_map(|r| match r {
            OffsetsRecord::Group { value: Some(g), .. } => Some(g),
            _ => None,
        });
        assert_eq!(
            stored.map(|g| g.generation),
            Some(epoch),
            "at the epoch before the join"
        );
        assert_eq!(
            c.heartbeat("g", &a, None, epoch, 11),
            code(ResponseError::RebalanceInProgress)
        );
    }

    #[test]
    fn a_replacement_downgrades_only_if_the_policy_allows_it() {
        let mut c = coordinator_with(MigrationPolicy::Upgrade);
        reconciled_mixed_group(&mut c);
        c.join(
            10,
            9,
            &classic_static_join_request("", "i1", &["t"]),
            "kp2",
            "/h",
            &topics(),
            10,
        );
        let j = joins(&mut c).remove(&10).unwrap();
        assert_eq!((j.error_code, j.generation_id), (0, 2));
        assert_eq!(group_type(&c), "consumer");
        let g = c.consumer_group("g").unwrap();
        assert!(
            g.members.values().all(|m| m.classic.is_some()),
            "two classic members"
        );
        assert!(!g.members.contains_key("c1"));
    }

    #[test]
    fn leave_group_removes_a_member_of_either_protocol() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let (a, _) = reconciled_mixed_group(&mut c);
        // Kafka does not ask which protocol the named member uses: c1 (consumer protocol)
        // leaves through LeaveGroup, and as the last of its protocol it downgrades the group.
        let left = c.leave(
            "g",
            &[("c1".into(), None), ("nobody".into(), None)],
            &topics(),
            10,
        );
        assert_eq!(left, Ok(vec![0, code(ResponseError::UnknownMemberId)]));
        assert_eq!(group_type(&c), "classic");
        assert_eq!(
            c.describe_group("g").unwrap().state,
            GroupState::PreparingRebalance
        );
        assert_eq!(c.describe_group("g").unwrap().members.len(), 1);
        assert_eq!(
            c.heartbeat("g", &a, None, 2, 11),
            code(ResponseError::RebalanceInProgress)
        );

        // An empty consumer group answers each member, not the whole request.
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        consumer_join(&mut c, "c1", 0).unwrap();
        c.leave("g", &[("c1".into(), None)], &topics(), 1).unwrap();
        assert!(c.consumer_group("g").unwrap().members.is_empty());
        assert_eq!(
            c.leave("g", &[("c1".into(), None)], &topics(), 2),
            Ok(vec![code(ResponseError::UnknownMemberId)])
        );
    }

    #[test]
    fn an_upgrade_takes_a_member_that_never_synced_with_no_partitions() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let a = stable_classic_group(&mut c);
        // b joins; the rebalance completes, and nobody has synced generation 2 yet.
        c.join(5, 7, &classic_join_request(""), "kp", "/h", &topics(), 1);
        let b = joins(&mut c).remove(&5).unwrap().member_id.to_string();
        c.join(6, 7, &classic_join_request(&b), "kp", "/h", &topics(), 1);
        c.join(7, 7, &classic_join_request(&a), "kp", "/h", &topics(), 2);
        let answers = joins(&mut c);
        assert_eq!(answers[&7].generation_id, 2);
        assert_eq!(
            c.describe_group("g").unwrap().state,
            GroupState::CompletingRebalance
        );

        // Kafka accepts the empty assignment of a member that never synced.
        let c1 = consumer_join(&mut c, "c1", 3).unwrap();
        assert_eq!(group_type(&c), "consumer");
        assert_eq!(c1.member_epoch, 3);
        let g = c.consumer_group("g").unwrap();
        assert!(g.members[&b].assigned.is_empty());
        assert_eq!(
            parts(&g.members[&a].assigned),
            vec![0, 1, 2, 3],
            "its generation-1 assignment"
        );
    }

    #[test]
    fn an_upgrade_is_refused_when_a_custom_assignor_left_user_data() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        c.join(1, 7, &classic_join_request(""), "kp", "/h", &topics(), 0);
        let a = joins(&mut c).remove(&1).unwrap().member_id.to_string();
        c.join(2, 7, &classic_join_request(&a), "kp", "/h", &topics(), 0);
        joins(&mut c);
        let mut raw = bytes::BytesMut::new();
        raw.put_i16(0);
        ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![Assigned::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![0, 1, 2, 3])])
            .with_user_data(Some(Bytes::from_static(b"sticky-state")))
            .encode(&mut raw, 0)
            .unwrap();
        let request = SyncGroupRequest::default()
            .with_group_id(s("g").into())
            .with_generation_id(1)
            .with_member_id(s(&a))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&a))
                .with_assignment(raw.freeze())]);
        c.sync(3, 5, &request, &topics(), 0);
        assert_eq!(syncs(&mut c)[&3].error_code, 0);
        let err = consumer_join(&mut c, "c1", 1).unwrap_err();
        assert_eq!(err.error, ResponseError::GroupIdNotFound);
        assert_eq!(
            err.message,
            "Cannot upgrade classic group g to consumer group because an unsupported custom assignor is in use. Please refer to the documentation or switch to a default assignor before re-attempting the upgrade."
        );
        assert_eq!(group_type(&c), "classic");
    }

    #[test]
    fn describe_and_list_groups_of_both_kinds() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        reconciled_mixed_group(&mut c); // "g": consumer group with a classic member
        c.consumer_heartbeat(
            Heartbeat {
                group_id: "cg".into(),
                member_id: "x".into(),
                rebalance_timeout_ms: 30_000,
                subscribed_topic_names: Some(vec!["t".into()]),
                owned: Some(Default::default()),
                api_version: 1,
                ..Default::default()
            },
            &topics(),
            6,
        )
        .unwrap();
        c.commit_offsets(
            &CommitIdentity {
                group_id: "k",
                ..SIMPLE
            },
            &[commit_at("t", 1)],
            7,
        );

        // DescribeGroups describes classic groups only; ConsumerGroupDescribe the others.
        for id in ["g", "cg"] {
            assert_eq!(
                c.describe_group(id).unwrap_err(),
                format!("Group {id} is not a classic group.")
            );
            assert!(c.describe_consumer_group(id).is_ok());
        }
        assert_eq!(c.describe_group("k").unwrap().state, GroupState::Empty);
        assert_eq!(
            c.describe_consumer_group("k").unwrap_err(),
            "Group k is not a consumer group."
        );
        assert_eq!(
            c.describe_group("nope").unwrap_err(),
            "Group nope not found."
        );
        assert_eq!(
            c.describe_consumer_group("nope").unwrap_err(),
            "Group nope not found."
        );

        // A consumer-protocol heartbeat to the classic group "k" (offsets only).
        let err = c
            .consumer_heartbeat(
                Heartbeat {
                    group_id: "k".into(),
                    member_id: "x".into(),
                    member_epoch: 5,
                    api_version: 1,
                    ..Default::default()
                },
                &topics(),
                8,
            )
            .unwrap_err();
        assert_eq!(
            (err.error, err.message.as_str()),
            (
                ResponseError::GroupIdNotFound,
                "Group k is not a consumer group."
            )
        );

        // ListGroups v5 filters, as Kafka: states trimmed and in any case, types in any case.
        let listed =
            |states: &[&str], types: &[&str]| -> Vec<(String, &'static str, &'static str)> {
                let owned = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
                c.list_groups(&owned(states), &owned(types))
                    .into_iter()
                    .map(|g| (g.group_id, g.group_type, g.state))
                    .collect()
            };
        assert_eq!(
            listed(&[], &[]),
            vec![
                ("cg".into(), "consumer", "Stable"),
                ("g".into(), "consumer", "Stable"),
                ("k".into(), "classic", "Empty"),
            ]
        );
        assert_eq!(listed(&[" STABLE "], &[]).len(), 2);
        assert_eq!(
            listed(&["empty"], &["Classic"]),
            vec![("k".into(), "classic", "Empty")]
        );
        assert_eq!(listed(&[], &["CONSUMER", "bogus"]).len(), 2);
        assert!(listed(&[], &["share"]).is_empty());
        assert!(listed(&["Stable"], &["classic"]).is_empty());
        assert!(listed(&["PreparingRebalance"], &[]).is_empty());
    }

    #[test]
    fn describe_groups_shows_assignments_in_every_state() {
        let mut c = coordinator_with(MigrationPolicy::Bidirectional);
        let a = stable_classic_group(&mut c);
        // b joins: while the group prepares the rebalance, a's assignment of generation 1 is
        // still described (Kafka's `describeNoMetadata`), without metadata or protocol.
        c.join(5, 7, &classic_join_request(""), "kp", "/h", &topics(), 1);
        let b = joins(&mut c).remove(&5).unwrap().member_id.to_string();
        c.join(6, 7, &classic_join_request(&b), "kp", "/h", &topics(), 1);
        let d = c.describe_group("g").unwrap();
        assert_eq!(
            (d.state, d.protocol.as_str()),
            (GroupState::PreparingRebalance, "")
        );
        let of = |d: &GroupDescription, id: &str| {
            let m = d.members.iter().find(|m| m.member_id == id).unwrap();
            (partitions_of_or_none(&m.assignment), m.metadata.is_empty())
        };
        assert_eq!(of(&d, &a), (vec![0, 1, 2, 3], true));
        // a rejoins: generation 2 waits for its assignment. A third member joins before the
        // leader synced: the generation is given up, and every assignment with it.
        c.join(7, 7, &classic_join_request(&a), "kp", "/h", &topics(), 2);
        assert_eq!(
            c.describe_group("g").unwrap().state,
            GroupState::CompletingRebalance
        );
        c.join(8, 7, &classic_join_request(""), "kp", "/h", &topics(), 3);
        let third = joins(&mut c).remove(&8).unwrap().member_id.to_string();
        c.join(
            9,
            7,
            &classic_join_request(&third),
            "kp",
            "/h",
            &topics(),
            3,
        );
        let d = c.describe_group("g").unwrap();
        assert_eq!(d.state, GroupState::PreparingRebalance);
        assert!(
            d.members.iter().all(|m| m.assignment.is_empty()),
            "{:?}",
            d.members
        );
    }

    fn partitions_of_or_none(raw: &Bytes) -> Vec<i32> {
        if raw.is_empty() {
            Vec::new()
        } else {
            partitions_of(raw)
        }
    }
}
