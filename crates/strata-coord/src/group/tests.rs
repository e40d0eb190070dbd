//! Drivers shared by the group coordinator's tests (here, and in `metadata`, `migration` and
//! `offsets`), and the tests that need both managers: deleting a group with its offsets,
//! reloading both from their records, unloading both.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::metadata::s;
use super::*;

pub(super) const SESSION_MS: i32 = 10_000;

/// A commit to group "g" from outside any generation (Kafka's "simple" group: an admin, or a
/// consumer using `assign()`).
pub(super) const SIMPLE: CommitIdentity<'static> = CommitIdentity {
    group_id: "g",
    generation_id: -1,
    member_id: "",
    group_instance_id: None,
    api_version: 8,
};

/// Offset `offset` of partition 0 of `topic`, without leader epoch or metadata.
pub(super) fn commit_at(topic: &str, offset: i64) -> OffsetCommit {
    OffsetCommit {
        topic: topic.into(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: None,
    }
}

pub(super) fn coordinator(initial_delay_ms: i64) -> GroupCoordinator {
    GroupCoordinator::new(
        GroupConfig {
            initial_rebalance_delay_ms: initial_delay_ms,
            ..GroupConfig::default()
        },
        Default::default(),
    )
}

pub(super) fn join_request(member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
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
pub(super) type Answers = (
    HashMap<ReplyId, JoinGroupResponse>,
    HashMap<ReplyId, SyncGroupResponse>,
);

pub(super) fn split_replies(replies: Vec<PendingReply>) -> Answers {
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

pub(super) fn joins(c: &mut GroupCoordinator) -> HashMap<ReplyId, JoinGroupResponse> {
    split_replies(c.take_output().1).0
}

pub(super) fn syncs(c: &mut GroupCoordinator) -> HashMap<ReplyId, SyncGroupResponse> {
    split_replies(c.take_output().1).1
}

/// Joins a new dynamic member through the KIP-394 two-step join; returns its member id.
pub(super) fn join_new(c: &mut GroupCoordinator, reply: ReplyId, now: i64) -> String {
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

pub(super) fn sync(
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

/// A commit to group "g" by `member` of `generation`, as OffsetCommit `api_version`.
pub(super) fn by<'a>(member: &'a str, generation: i32, api_version: i16) -> CommitIdentity<'a> {
    CommitIdentity {
        group_id: "g",
        generation_id: generation,
        member_id: member,
        group_instance_id: None,
        api_version,
    }
}

pub(super) const PRODUCER: (i64, i16) = (7, 0);

/// Makes "g" a Stable group of one new member (returned) at generation 1, assigned "x";
/// the answers are taken.
pub(super) fn stable_group(c: &mut GroupCoordinator) -> String {
    let a = join_new(c, 1, 0);
    joins(c);
    sync(c, 1, &a, 1, &[(&a, b"x")], 0);
    syncs(c);
    a
}

/// Topic "t" with 4 partitions.
pub(super) fn topic_t() -> [crate::consumer_group::TopicView; 1] {
    [crate::consumer_group::TopicView {
        name: "t".into(),
        id: uuid::Uuid::new_v4(),
        partitions: 4,
    }]
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
    assert_eq!(
        c.commit_offsets(&by(&a, 0, 8), &[commit("t")], 0),
        vec![code(ResponseError::IllegalGeneration)]
    );
    let unknown = CommitIdentity {
        group_id: "nope",
        ..by("x", 3, 9)
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
    let offset = OffsetCommit {
        topic: "t".into(),
        partition: 2,
        offset: 9,
        leader_epoch: 0,
        metadata: Some("m".into()),
    };
    assert_eq!(c.commit_offsets(&by(&a, 1, 8), &[offset], 0), vec![0]);
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
