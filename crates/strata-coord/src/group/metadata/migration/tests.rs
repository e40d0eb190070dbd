//! The online migration between the classic and the consumer protocol, and the admin views
//! of groups of both kinds, driven through the coordinator.

use std::collections::HashMap;

use bytes::{Buf, BufMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Assigned;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, JoinGroupRequest, JoinGroupResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::Encodable;

use super::*;
use crate::consumer_group::{
    Heartbeat, HeartbeatError, HeartbeatResult, MigrationPolicy, LEAVE_EPOCH,
};
use crate::group::metadata::s;
use crate::group::tests::*;
use crate::group::{
    code, CommitIdentity, GroupConfig, GroupCoordinator, GroupDescription, PendingReply, ReplyId,
};

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

/// A member of the classic protocol joins "g" in KIP-394's two steps: JoinGroup `reply`
/// without a member id, then `reply + 1` with the id handed out (returned). The second
/// answer, if any, stays in the output.
fn classic_member_joins(c: &mut GroupCoordinator, reply: ReplyId, now: i64) -> String {
    c.join(
        reply,
        7,
        &classic_join_request(""),
        "kp",
        "/h",
        &topics(),
        now,
    );
    let id = joins(c).remove(&reply).unwrap().member_id.to_string();
    c.join(
        reply + 1,
        7,
        &classic_join_request(&id),
        "kp",
        "/h",
        &topics(),
        now,
    );
    id
}

/// A classic group "g" whose one member `a` owns all of "t" at generation 1.
fn stable_classic_group(c: &mut GroupCoordinator) -> String {
    let a = classic_member_joins(c, 1, 0);
    let joined = joins(c).remove(&2).unwrap();
    assert_eq!(joined.generation_id, 1);
    leader_sync(c, 3, &a, assignment(&[0, 1, 2, 3]));
    a
}

/// The SyncGroup of `a`, leader of generation 1 and its only member, assigning itself
/// `assignment`; it must succeed.
fn leader_sync(c: &mut GroupCoordinator, reply: ReplyId, a: &str, assignment: Bytes) {
    let request = SyncGroupRequest::default()
        .with_group_id(s("g").into())
        .with_generation_id(1)
        .with_member_id(s(a))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(a))
            .with_assignment(assignment)]);
    c.sync(reply, 5, &request, &topics(), 0);
    assert_eq!(syncs(c)[&reply].error_code, 0);
}

fn consumer_join(
    c: &mut GroupCoordinator,
    member: &str,
    now: i64,
) -> Result<HeartbeatResult, HeartbeatError> {
    consumer_join_to(c, "g", member, now)
}

/// `member` joins `group` with the consumer protocol, subscribed to "t".
fn consumer_join_to(
    c: &mut GroupCoordinator,
    group: &str,
    member: &str,
    now: i64,
) -> Result<HeartbeatResult, HeartbeatError> {
    c.consumer_heartbeat(
        Heartbeat {
            group_id: group.into(),
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

/// `member` of the consumer protocol leaves "g" (epoch -1).
fn consumer_leave(
    c: &mut GroupCoordinator,
    member: &str,
    now: i64,
) -> Result<HeartbeatResult, HeartbeatError> {
    c.consumer_heartbeat(
        Heartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: LEAVE_EPOCH,
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
    let a_at = |generation| by(&a, generation, 8);
    assert_eq!(c.commit_offsets(&a_at(2), &commit, 12), vec![0]);
    assert_eq!(
        c.commit_offsets(&a_at(1), &commit, 12),
        vec![code(ResponseError::IllegalGeneration)]
    );
    c.take_output();

    // Downgrade: c1 leaves; a is the last member, of the classic protocol.
    let left = consumer_leave(&mut c, "c1", 20).unwrap();
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
    consumer_leave(&mut c, "c1", 6).unwrap();
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
    c.groups.persist_consumer_group("g", None);
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
    consumer_leave(&mut c, "c1", 1).unwrap();
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
    join_request(member_id, Some(instance))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription_to(names))])
}

/// A member of the classic protocol joins "g" as static member "i1", subscribed to `names`
/// (reply 10, at 10): its answer, and the records written.
fn join_as_i1(c: &mut GroupCoordinator, names: &[&str]) -> (JoinGroupResponse, Vec<OffsetsRecord>) {
    let request = classic_static_join_request("", "i1", names);
    c.join(10, 9, &request, "kp2", "/h", &topics(), 10);
    let (records, replies) = c.take_output();
    (split_replies(replies).0.remove(&10).unwrap(), records)
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
    let a = classic_member_joins(c, 1, 1);
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
    let (j, records) = join_as_i1(&mut c, &["t"]);
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
    let (j, records) = join_as_i1(&mut c, &["t", "u"]);
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
    let (j, _) = join_as_i1(&mut c, &["t"]);
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
    let b = classic_member_joins(&mut c, 5, 1);
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
    let a = classic_member_joins(&mut c, 1, 0);
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
    leader_sync(&mut c, 3, &a, raw.freeze());
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
    consumer_join_to(&mut c, "cg", "x", 6).unwrap();
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
    let listed = |states: &[&str], types: &[&str]| -> Vec<(String, &'static str, &'static str)> {
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
    classic_member_joins(&mut c, 5, 1);
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
    classic_member_joins(&mut c, 8, 3);
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
