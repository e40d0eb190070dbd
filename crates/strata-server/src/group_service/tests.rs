//! The persistence-before-reply rule of the group service, on real logs: an answer that
//! acknowledges a state change (an offset commit, a group's generation and assignment) exists
//! only once the record that carries it is in `__consumer_offsets`; when the append fails, the
//! answer carries the error Kafka gives and the coordinator's state is what the log says.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{JoinGroupRequest, SyncGroupRequest};
use kafka_protocol::protocol::StrBytes;
use strata_coord::group::{CommitIdentity, GroupState, OffsetCommit};
use strata_coord::{OffsetsRecord, PendingReply, OFFSETS_TOPIC};
use tokio::sync::oneshot;

use super::*;
use crate::test_fixture::{Node, NODE, OTHER};

const GROUP: &str = "g";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A service that coordinates [`GROUP`], over a node with a topic "t" to commit offsets of.
fn coordinating(node: &Node) -> Arc<GroupService> {
    node.create_topic("t", 1);
    let groups = node.groups();
    groups.ensure_offsets_topic().expect("offsets topic");
    assert!(groups.coordinates(GROUP));
    groups
}

/// A simple (member-less) group's commit of `offset` for t-0: the coordinator's per-offset
/// codes and whether the record reached the log.
fn commit(groups: &GroupService, offset: i64) -> (Vec<i16>, Result<(), GroupServiceError>) {
    let who = CommitIdentity {
        group_id: GROUP,
        generation_id: -1,
        member_id: "",
        group_instance_id: None,
        api_version: 8,
    };
    let offsets = [OffsetCommit {
        topic: "t".into(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: None,
    }];
    groups.run_durable(|c| c.commit_offsets(&who, &offsets, now_ms()))
}

/// The offset the coordinator holds for the group's t-0.
fn committed(groups: &GroupService) -> Option<i64> {
    groups.run(|c| {
        c.fetch_offsets(GROUP, Some(&[("t".to_string(), vec![0])]))
            .into_iter()
            .flat_map(|(_, parts)| parts)
            .find_map(|(_, o)| o.map(|o| o.offset))
    })
}

/// Every record of the group's offsets partition, decoded.
fn offsets_log(node: &Node, groups: &GroupService) -> Vec<OffsetsRecord> {
    node.records(OFFSETS_TOPIC, groups.partition_of(GROUP))
        .into_iter()
        .filter_map(|(k, v)| OffsetsRecord::decode(&k, v.as_deref()).expect("decodes"))
        .collect()
}

fn offsets_in_log(node: &Node, groups: &GroupService) -> Vec<i64> {
    offsets_log(node, groups)
        .into_iter()
        .filter_map(|r| match r {
            OffsetsRecord::Offset {
                group,
                value: Some(v),
                ..
            } if group == GROUP => Some(v.offset),
            _ => None,
        })
        .collect()
}

/// Makes the log of the group's offsets partition refuse every append (real files, a real
/// log: its `max.message.bytes` is below any batch).
fn refuse_appends(node: &Node) {
    node.set_topic_config(OFFSETS_TOPIC, "max.message.bytes", Some("1"));
}

#[test]
fn an_offset_commit_is_answered_once_its_record_is_in_the_log() {
    let node = Node::start();
    let groups = coordinating(&node);
    let (codes, persisted) = commit(&groups, 42);
    assert_eq!(codes, [0]);
    assert!(persisted.is_ok());
    assert_eq!(offsets_in_log(&node, &groups), [42]);
    // The log is what a new coordinator (a restart, a failover) finds.
    let reloaded = node.groups();
    assert!(reloaded.coordinates(GROUP));
    assert_eq!(committed(&reloaded), Some(42));
}

#[test]
fn a_commit_the_log_refuses_is_not_acknowledged_and_changes_nothing() {
    let node = Node::start();
    let groups = coordinating(&node);
    assert!(commit(&groups, 42).1.is_ok());
    refuse_appends(&node);
    let end = node.log_end(OFFSETS_TOPIC, groups.partition_of(GROUP));

    let (_, persisted) = commit(&groups, 43);
    let error = persisted.expect_err("the log refused the record");
    assert!(matches!(error, GroupServiceError::Log(_)), "{error}");
    // Kafka's group coordinator: RecordTooLarge -> UNKNOWN_SERVER_ERROR.
    assert_eq!(error.response_error(), ResponseError::UnknownServerError);
    assert_eq!(node.log_end(OFFSETS_TOPIC, groups.partition_of(GROUP)), end);
    assert!(groups.coordinates(GROUP));
    assert_eq!(
        committed(&groups),
        Some(42),
        "the refused commit is not visible"
    );
    assert_eq!(offsets_in_log(&node, &groups), [42]);
}

#[test]
fn a_commit_after_leadership_moved_is_answered_not_coordinator() {
    let node = Node::start();
    let groups = coordinating(&node);
    assert!(commit(&groups, 42).1.is_ok());
    node.register_other();
    let partition = groups.partition_of(GROUP);
    // The image moves leadership away between the handler's check and the call.
    node.move_partition(OFFSETS_TOPIC, partition, vec![NODE, OTHER], OTHER);
    let end = node.log_end(OFFSETS_TOPIC, partition);

    let (_, persisted) = commit(&groups, 43);
    let error = persisted.expect_err("not the leader");
    assert!(matches!(error, GroupServiceError::NotLeader(p) if p == partition));
    assert_eq!(error.response_error(), ResponseError::NotCoordinator);
    assert_eq!(
        node.log_end(OFFSETS_TOPIC, partition),
        end,
        "a follower's log is not written"
    );
    assert!(!groups.coordinates(GROUP));
    assert_eq!(
        committed(&groups),
        None,
        "the groups went with the partition"
    );
}

#[test]
fn a_commit_to_a_partition_not_hosted_is_answered_not_coordinator() {
    let node = Node::start();
    let groups = coordinating(&node);
    node.register_other();
    node.move_partition(
        OFFSETS_TOPIC,
        groups.partition_of(GROUP),
        vec![OTHER],
        OTHER,
    );
    let (_, persisted) = commit(&groups, 43);
    let error = persisted.expect_err("not hosted");
    assert!(matches!(error, GroupServiceError::NotHosted(_)), "{error}");
    assert_eq!(error.response_error(), ResponseError::NotCoordinator);
    assert_eq!(committed(&groups), None);
}

fn join_request() -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(s(GROUP).into())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(""))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"sub"))])
}

fn answer(rx: &mut oneshot::Receiver<PendingReply>) -> PendingReply {
    rx.try_recv().expect("answered")
}

/// One member joins (JoinGroup v3: no member-id round trip) and the join completes: its
/// member id and generation.
fn join_one(groups: &GroupService) -> (String, i32) {
    let (id, mut rx) = groups.register();
    let now = now_ms();
    groups.run(|c| c.join(id, 3, &join_request(), "client", "/127.0.0.1", &[], now));
    groups.run(|c| c.tick(&[], now + 1));
    let PendingReply::Join(_, joined) = answer(&mut rx) else {
        panic!("a JoinGroup answer")
    };
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    (joined.member_id.to_string(), joined.generation_id)
}

/// The leader's SyncGroup with an assignment for itself: the answer and the call's result.
fn sync_leader(
    groups: &GroupService,
    member: &str,
    generation: i32,
) -> (PendingReply, Result<(), GroupServiceError>) {
    let request = SyncGroupRequest::default()
        .with_group_id(s(GROUP).into())
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(Bytes::from_static(b"assigned"))]);
    let (id, mut rx) = groups.register();
    let ((), persisted) = groups.run_durable(|c| c.sync(id, 3, &request, &[], now_ms()));
    (answer(&mut rx), persisted)
}

fn stored_generation(node: &Node, groups: &GroupService) -> Option<(i32, Vec<Bytes>)> {
    offsets_log(node, groups)
        .into_iter()
        .filter_map(|r| match r {
            OffsetsRecord::Group {
                group,
                value: Some(v),
            } if group == GROUP => Some((
                v.generation,
                v.members.into_iter().map(|m| m.assignment).collect(),
            )),
            _ => None,
        })
        .last()
}

#[test]
fn a_sync_is_answered_once_the_generation_and_assignment_are_in_the_log() {
    let node = Node::start();
    let groups = coordinating(&node);
    let (member, generation) = join_one(&groups);
    let (reply, persisted) = sync_leader(&groups, &member, generation);
    assert!(persisted.is_ok());
    let PendingReply::Sync(_, synced) = reply else {
        panic!("a SyncGroup answer")
    };
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"assigned"));
    assert_eq!(
        stored_generation(&node, &groups),
        Some((generation, vec![Bytes::from_static(b"assigned")]))
    );
    let state = groups
        .run(|c| c.describe_group(GROUP))
        .expect("group")
        .state;
    assert_eq!(state, GroupState::Stable);
}

#[test]
fn a_sync_the_log_refuses_is_answered_with_the_error_and_the_group_is_not_stable() {
    let node = Node::start();
    let groups = coordinating(&node);
    let (member, generation) = join_one(&groups);
    let stored = stored_generation(&node, &groups);
    refuse_appends(&node);

    let (reply, persisted) = sync_leader(&groups, &member, generation);
    assert_eq!(
        persisted.expect_err("refused").response_error(),
        ResponseError::UnknownServerError
    );
    let PendingReply::Sync(_, synced) = reply else {
        panic!("a SyncGroup answer")
    };
    assert_eq!(synced.error_code, ResponseError::UnknownServerError.code());
    assert!(
        synced.assignment.is_empty(),
        "no assignment without its record"
    );
    assert_eq!(stored_generation(&node, &groups), stored);
    // The coordinator holds what the log holds: not a Stable generation with the assignment.
    assert!(groups.coordinates(GROUP));
    let state = groups.run(|c| c.describe_group(GROUP)).map(|d| d.state);
    assert_ne!(state, Ok(GroupState::Stable));
}

#[test]
fn without_a_runtime_a_replicated_commit_is_not_acknowledged() {
    let node = Node::start();
    let groups = coordinating(&node);
    node.register_other();
    let partition = groups.partition_of(GROUP);
    // Led here, with a follower in the ISR that has not fetched: the high watermark waits.
    node.move_partition(OFFSETS_TOPIC, partition, vec![NODE, OTHER], NODE);
    assert!(groups.coordinates(GROUP));
    let (_, persisted) = commit(&groups, 42);
    let error = persisted.expect_err("nothing counts as replicated");
    assert!(matches!(error, GroupServiceError::NotReplicated(p) if p == partition));
    assert_eq!(
        error.response_error(),
        ResponseError::CoordinatorNotAvailable
    );
    assert_eq!(
        offsets_in_log(&node, &groups),
        [42],
        "in the leader's log, not acknowledged"
    );
}
