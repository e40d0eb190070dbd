//! Consumer-group APIs (classic protocol): FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and
//! OffsetDelete. The state machine is `strata_coord::GroupCoordinator`; these handlers
//! translate requests for it and wait for JoinGroup/SyncGroup answers.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    consumer_group_describe_response, consumer_group_heartbeat_response,
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolSubscription, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::Decodable;
use strata_coord::consumer_group::{Assignment, Heartbeat, HeartbeatError};
use strata_coord::group::{CommitIdentity, OffsetCommit};
use strata_coord::offsets_topic::CommittedOffset;
use strata_coord::PendingReply;
use strata_coord::OFFSETS_TOPIC;
use strata_meta::acl::{ResourceType, CLUSTER_NAME};

use super::{code, str_bytes};
use crate::broker::Broker;
use crate::replica_manager::now_ms;
use crate::session::{Operation, RequestContext};

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's "no metadata" for an offset without a commit.
const NO_METADATA: &str = "";

/// Makes sure the offsets topic exists, so the coordinator can persist. Blocking.
fn coordinator_ready(broker: &Broker) -> Result<(), ResponseError> {
    broker.groups.ensure_offsets_topic().map_err(|e| {
        tracing::error!(error = %e, "group coordinator unavailable");
        ResponseError::CoordinatorNotAvailable
    })
}

/// NOT_COORDINATOR unless this broker leads `group`'s offsets partition (then its groups are
/// loaded). Blocking.
fn coordinator_of(broker: &Broker, group: &str) -> Result<(), ResponseError> {
    if broker.groups.coordinates(group) {
        Ok(())
    } else {
        Err(ResponseError::NotCoordinator)
    }
}

pub async fn handle_find_coordinator(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = ctx.version();
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let key_type = request.key_type;
    let b = broker.clone();
    let ready = tokio::task::block_in_place(|| match key_type {
        KEY_TYPE_GROUP => coordinator_ready(&b),
        KEY_TYPE_TRANSACTION => b.txns.ensure_topic(),
        _ => Err(ResponseError::InvalidRequest),
    });
    let image = broker.image();
    // The coordinator of a key is the leader of the key's partition of the internal topic;
    // as Kafka, only for a principal that may DESCRIBE the group or transactional id.
    let coordinator = |key: &str| -> Result<(i32, String, i32), ResponseError> {
        if key_type == KEY_TYPE_GROUP {
            ctx.authorize_group(Operation::Describe, key)?;
        } else if key_type == KEY_TYPE_TRANSACTION {
            ctx.authorize_transactional_id(Operation::Describe, key)?;
        }
        ready?;
        let (topic, partition) = if key_type == KEY_TYPE_GROUP {
            (OFFSETS_TOPIC, broker.groups.partition_of(key))
        } else {
            (
                strata_coord::txn::TRANSACTION_STATE_TOPIC,
                broker.txns.partition_of(key),
            )
        };
        let leader = image
            .topic(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|p| p.leader)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        image
            .broker(leader)
            .filter(|b| !b.fenced)
            .and_then(|b| {
                // The coordinator as reached on the listener this client came in on.
                let (host, port) = b.endpoint(&ctx.session.listener)?;
                Some((b.broker_id, host.to_string(), port))
            })
            .ok_or(ResponseError::CoordinatorNotAvailable)
    };
    let answer = |key: &str| match coordinator(key) {
        Ok((node, host, port)) => (0, None, BrokerId(node), str_bytes(host), port),
        Err(e) => (
            code(e),
            Some(str_bytes(format!("{e:?}"))),
            BrokerId(-1),
            str_bytes(""),
            -1,
        ),
    };
    if version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            keys.into_iter()
                .map(|k| {
                    let (error, message, node, host, port) = answer(&k);
                    Coordinator::default()
                        .with_key(str_bytes(k))
                        .with_node_id(node)
                        .with_host(host)
                        .with_port(port)
                        .with_error_code(error)
                        .with_error_message(message)
                })
                .collect(),
        )
    } else {
        let (error, message, node, host, port) = answer(&keys[0]);
        FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_error_message(message)
            .with_node_id(node)
            .with_host(host)
            .with_port(port)
    }
}

pub async fn handle_join(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = ctx.version();
    let unavailable = || {
        JoinGroupResponse::default()
            .with_error_code(code(ResponseError::CoordinatorNotAvailable))
            .with_generation_id(-1)
            .with_member_id(request.member_id.clone())
            .with_protocol_name(if version >= 7 {
                None
            } else {
                Some(str_bytes(""))
            })
    };
    // As Kafka's `handleJoinGroupRequest`: READ on the group before anything else.
    if let Err(e) = ctx.authorize_group(Operation::Read, &request.group_id) {
        return unavailable().with_error_code(code(e));
    }
    if tokio::task::block_in_place(|| coordinator_ready(broker)).is_err() {
        return unavailable();
    }
    if tokio::task::block_in_place(|| coordinator_of(broker, &request.group_id)).is_err() {
        return unavailable().with_error_code(code(ResponseError::NotCoordinator));
    }
    let (id, answer) = broker.groups.register();
    let client_host = ctx.session.client_host();
    let topics = crate::group_service::topic_views(&broker.image());
    tokio::task::block_in_place(|| {
        broker.groups.run(|c| {
            c.join(
                id,
                version,
                &request,
                ctx.client_id(),
                &client_host,
                &topics,
                now_ms(),
            )
        })
    });
    match answer.await {
        Ok(PendingReply::Join(_, response)) => response,
        _ => unavailable(),
    }
}

pub async fn handle_sync(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = ctx.version();
    if let Err(e) = ctx.authorize_group(Operation::Read, &request.group_id) {
        return SyncGroupResponse::default().with_error_code(code(e));
    }
    if let Err(e) = tokio::task::block_in_place(|| coordinator_of(broker, &request.group_id)) {
        return SyncGroupResponse::default().with_error_code(code(e));
    }
    let (id, answer) = broker.groups.register();
    let topics = crate::group_service::topic_views(&broker.image());
    tokio::task::block_in_place(|| {
        broker
            .groups
            .run(|c| c.sync(id, version, &request, &topics, now_ms()))
    });
    match answer.await {
        Ok(PendingReply::Sync(_, response)) => response,
        _ => SyncGroupResponse::default()
            .with_error_code(code(ResponseError::CoordinatorNotAvailable)),
    }
}

pub fn handle_heartbeat(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &HeartbeatRequest,
) -> HeartbeatResponse {
    if let Err(e) = ctx.authorize_group(Operation::Read, &request.group_id) {
        return HeartbeatResponse::default().with_error_code(code(e));
    }
    if let Err(e) = tokio::task::block_in_place(|| coordinator_of(broker, &request.group_id)) {
        return HeartbeatResponse::default().with_error_code(code(e));
    }
    let error = tokio::task::block_in_place(|| {
        broker.groups.run(|c| {
            c.heartbeat(
                &request.group_id,
                &request.member_id,
                request.group_instance_id.as_ref().map(|i| i.as_str()),
                request.generation_id,
                now_ms(),
            )
        })
    });
    HeartbeatResponse::default().with_error_code(error)
}

pub fn handle_leave(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &LeaveGroupRequest,
) -> LeaveGroupResponse {
    let version = ctx.version();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    if let Err(e) = ctx.authorize_group(Operation::Read, &request.group_id) {
        return LeaveGroupResponse::default().with_error_code(code(e));
    }
    let topics = crate::group_service::topic_views(&broker.image());
    let result = tokio::task::block_in_place(|| {
        coordinator_of(broker, &request.group_id).map_err(code)?;
        broker
            .groups
            .run(|c| c.leave(&request.group_id, &members, &topics, now_ms()))
    });
    match result {
        Err(error) => LeaveGroupResponse::default().with_error_code(error),
        Ok(errors) if version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .iter()
                .zip(errors)
                .map(|((id, instance), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id.clone()))
                        .with_group_instance_id(instance.clone().map(str_bytes))
                        .with_error_code(error)
                })
                .collect(),
        ),
        Ok(errors) => {
            LeaveGroupResponse::default().with_error_code(errors.first().copied().unwrap_or(0))
        }
    }
}

/// OffsetCommit and TxnOffsetCommit carry the same offsets in distinct generated types: the
/// offsets to commit, in request order.
macro_rules! requested_commits {
    ($topics:expr) => {
        $topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| OffsetCommit {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect::<Vec<OffsetCommit>>()
    };
}
pub(super) use requested_commits;

/// The per-partition results of an (Txn)OffsetCommit, `errors` in request order.
macro_rules! commit_results {
    ($topics:expr, $errors:expr, $topic_type:ty, $partition_type:ty) => {{
        let mut errors = $errors.into_iter();
        $topics
            .iter()
            .map(|t| {
                <$topic_type>::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                <$partition_type>::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(errors.next().unwrap_or(0))
                            })
                            .collect(),
                    )
            })
            .collect()
    }};
}
pub(super) use commit_results;

/// Runs a commit on the group coordinator and reports one error per offset, in request
/// order. As Kafka's `KafkaApis` does before the coordinator sees the request, the principal
/// needs READ on the group (else every offset answers GROUP_AUTHORIZATION_FAILED) and READ on
/// each offset's topic (else TOPIC_AUTHORIZATION_FAILED), and an offset for a topic the
/// cluster does not have, or for a partition index the topic does not have, answers
/// UNKNOWN_TOPIC_OR_PARTITION; those offsets are not stored, and when no offset is left the
/// coordinator is not asked at all (no group is created or checked). Kafka answers
/// NOT_COORDINATOR when the offsets log cannot be written (the client looks the coordinator
/// up again and retries), and never acknowledges a commit that is not in the log.
pub(super) fn commit_durably(
    broker: &Broker,
    ctx: &RequestContext<'_>,
    group: &str,
    commits: &[OffsetCommit],
    commit: impl FnOnce(&mut strata_coord::GroupCoordinator, &[OffsetCommit]) -> Vec<i16>,
) -> Vec<i16> {
    if let Err(e) = ctx.authorize_group(Operation::Read, group) {
        return vec![code(e); commits.len()];
    }
    let image = broker.image();
    let mut topic_refusals: HashMap<&str, Option<ResponseError>> = HashMap::new();
    let refused: Vec<Option<ResponseError>> = commits
        .iter()
        .map(|c| {
            let refusal = *topic_refusals
                .entry(&c.topic)
                .or_insert_with(|| ctx.authorize_topic(Operation::Read, &c.topic).err());
            refusal.or_else(|| {
                (!image.has_partition(&c.topic, c.partition))
                    .then_some(ResponseError::UnknownTopicOrPartition)
            })
        })
        .collect();
    let to_commit: Vec<OffsetCommit> = commits
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| refused.is_none())
        .map(|(c, _)| c.clone())
        .collect();
    if to_commit.is_empty() {
        return merge_commit_errors(&refused, Vec::new());
    }
    let count = to_commit.len();
    let ready = || coordinator_ready(broker).and_then(|()| coordinator_of(broker, group));
    let errors = tokio::task::block_in_place(|| match ready() {
        Ok(()) => match broker.groups.run_durable(|c| commit(c, &to_commit)) {
            (errors, Ok(())) => errors,
            (_, Err(e)) => vec![code(e.response_error()); count],
        },
        Err(e) => vec![code(e); count],
    });
    merge_commit_errors(&refused, errors)
}

/// One error per requested offset: the refusal where there is one, the coordinator's `errors`
/// (one per offset it was given, in order) elsewhere.
fn merge_commit_errors(refused: &[Option<ResponseError>], errors: Vec<i16>) -> Vec<i16> {
    debug_assert_eq!(errors.len(), refused.iter().filter(|r| r.is_none()).count());
    let mut errors = errors.into_iter();
    refused
        .iter()
        .map(|refusal| match refusal {
            None => errors.next().unwrap_or(0),
            Some(e) => code(*e),
        })
        .collect()
}

pub fn handle_offset_commit(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = ctx.version();
    let commits = requested_commits!(request.topics);
    let who = CommitIdentity {
        group_id: &request.group_id,
        generation_id: request.generation_id_or_member_epoch,
        member_id: &request.member_id,
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.as_str()),
        api_version: version,
    };
    let errors = commit_durably(broker, ctx, &request.group_id, &commits, |c, commits| {
        c.commit_offsets(&who, commits, now_ms())
    });
    OffsetCommitResponse::default().with_topics(commit_results!(
        request.topics,
        errors,
        OffsetCommitResponseTopic,
        OffsetCommitResponsePartition
    ))
}

/// Committed offsets of one group: (topic, [(partition, offset view)]).
/// With `require_stable` (OffsetFetch v7+, sent by read_committed consumers), a partition
/// with offsets pending in an open transaction answers UNSTABLE_OFFSET_COMMIT, and the client
/// retries until the transaction ends.
fn fetch_group(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<(i32, CommittedOffsetView)>)> {
    tokio::task::block_in_place(|| {
        if coordinator_of(broker, group).is_err() {
            // Every requested partition answers NOT_COORDINATOR; the client looks again.
            let not_coordinator = || {
                let mut view = CommittedOffsetView::from(None);
                view.error = code(ResponseError::NotCoordinator);
                view
            };
            return topics
                .unwrap_or_default()
                .into_iter()
                .map(|(t, parts)| {
                    (
                        t,
                        parts.into_iter().map(|p| (p, not_coordinator())).collect(),
                    )
                })
                .collect();
        }
        broker.groups.run(|c| {
            c.fetch_offsets(group, topics.as_deref())
                .into_iter()
                .map(|(t, parts)| {
                    let parts = parts
                        .into_iter()
                        .map(|(p, o)| {
                            let mut view = CommittedOffsetView::from(o);
                            if require_stable && c.has_pending_txn_offset(group, &t, p) {
                                view = CommittedOffsetView::from(None);
                                view.error = code(ResponseError::UnstableOffsetCommit);
                            }
                            (p, view)
                        })
                        .collect();
                    (t, parts)
                })
                .collect()
        })
    })
}

/// [`fetch_group`] for a principal that may DESCRIBE the group, as Kafka authorizes the
/// topics: a requested topic it may not DESCRIBE answers TOPIC_AUTHORIZATION_FAILED for each
/// partition; of every committed topic (`None`), those it may not DESCRIBE are left out.
fn fetch_group_authorized(
    broker: &Broker,
    ctx: &RequestContext<'_>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<(i32, CommittedOffsetView)>)> {
    let may_describe = |topic: &str| ctx.authorize_topic(Operation::Describe, topic).is_ok();
    let Some(requested) = topics else {
        let mut all = fetch_group(broker, group, None, require_stable);
        all.retain(|(topic, _)| ctx.permits(Operation::Describe, ResourceType::Topic, topic));
        return all;
    };
    let (allowed, refused): (Vec<_>, Vec<_>) = requested
        .into_iter()
        .partition(|(topic, _)| may_describe(topic));
    let mut fetched = fetch_group(broker, group, Some(allowed), require_stable);
    fetched.extend(refused.into_iter().map(|(topic, partitions)| {
        let views = partitions
            .into_iter()
            .map(|p| {
                let mut view = CommittedOffsetView::from(None);
                view.error = code(ResponseError::TopicAuthorizationFailed);
                (p, view)
            })
            .collect();
        (topic, views)
    }));
    fetched
}

/// OffsetFetch v8+ and older versions carry the same fields in distinct generated types:
/// one body builds both. `$topics` is the requested topics (`None`: every committed one).
macro_rules! offset_fetch_topics {
    ($broker:expr, $ctx:expr, $group:expr, $topics:expr, $require_stable:expr, $topic_type:ty, $partition_type:ty) => {{
        let requested = $topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        fetch_group_authorized($broker, $ctx, $group, requested, $require_stable)
            .into_iter()
            .map(|(t, parts)| {
                <$topic_type>::default()
                    .with_name(TopicName(str_bytes(t)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, o)| {
                                <$partition_type>::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o.offset)
                                    .with_committed_leader_epoch(o.leader_epoch)
                                    .with_metadata(Some(str_bytes(o.metadata)))
                                    .with_error_code(o.error)
                            })
                            .collect(),
                    )
            })
            .collect()
    }};
}

pub fn handle_offset_fetch(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = ctx.version();
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let base = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                if let Err(e) = ctx.authorize_group(Operation::Describe, &g.group_id) {
                    return base.with_error_code(code(e));
                }
                let topics = offset_fetch_topics!(
                    broker,
                    ctx,
                    &g.group_id,
                    g.topics,
                    request.require_stable,
                    OffsetFetchResponseTopics,
                    OffsetFetchResponsePartitions
                );
                base.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Err(e) = ctx.authorize_group(Operation::Describe, &request.group_id) {
        // v2+ has a request-level error; v1 carries it on each requested partition.
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(code(e));
        }
        let topics = request.topics.iter().flatten().map(|t| {
            OffsetFetchResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partition_indexes
                        .iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(-1)
                                .with_metadata(Some(str_bytes(NO_METADATA)))
                                .with_error_code(code(e))
                        })
                        .collect(),
                )
        });
        return OffsetFetchResponse::default().with_topics(topics.collect());
    }
    OffsetFetchResponse::default().with_topics(offset_fetch_topics!(
        broker,
        ctx,
        &request.group_id,
        request.topics,
        request.require_stable,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    ))
}

/// ListGroups: every group for a principal that may DESCRIBE the cluster, else only the groups
/// it may DESCRIBE (Kafka's rule).
pub fn handle_list_groups(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &ListGroupsRequest,
) -> ListGroupsResponse {
    let may_list_all = ctx.permits(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let types: Vec<String> = request.types_filter.iter().map(|t| t.to_string()).collect();
    let groups =
        tokio::task::block_in_place(|| broker.groups.run(|c| c.list_groups(&states, &types)));
    ListGroupsResponse::default().with_groups(
        groups
            .into_iter()
            .filter(|g| {
                may_list_all || ctx.permits(Operation::Describe, ResourceType::Group, &g.group_id)
            })
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(g.group_id)))
                    .with_protocol_type(str_bytes(g.protocol_type))
                    .with_group_state(str_bytes(g.state))
                    .with_group_type(str_bytes(g.group_type))
            })
            .collect(),
    )
}

pub fn handle_describe_groups(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = ctx.version();
    // Kafka answers a group the principal may not DESCRIBE with GROUP_AUTHORIZATION_FAILED
    // and nothing else about it.
    let refused: Vec<Option<ResponseError>> = request
        .groups
        .iter()
        .map(|g| ctx.authorize_group(Operation::Describe, g).err())
        .collect();
    let described: Vec<_> = tokio::task::block_in_place(|| {
        broker.groups.run(|c| {
            request
                .groups
                .iter()
                .zip(&refused)
                .map(|(g, refused)| refused.is_none().then(|| c.describe_group(g)))
                .collect()
        })
    });
    DescribeGroupsResponse::default().with_groups(
        request
            .groups
            .iter()
            .zip(described)
            .zip(refused)
            .map(|((id, d), refused)| {
                let base = DescribedGroup::default().with_group_id(id.clone());
                let Some(d) = d else {
                    let e = refused.unwrap_or(ResponseError::GroupAuthorizationFailed);
                    return base.with_error_code(code(e));
                };
                match d {
                    // Kafka's `describeGroups`: an unknown group, or one that is not a
                    // classic group, is Dead; v6 (KIP-1043) also says why.
                    Err(message) if version >= 6 => base
                        .with_error_code(code(ResponseError::GroupIdNotFound))
                        .with_error_message(Some(str_bytes(message)))
                        .with_group_state(str_bytes("Dead")),
                    Err(_) => base.with_group_state(str_bytes("Dead")),
                    Ok(d) => base
                        .with_authorized_operations(
                            // KIP-430, when asked (v3+).
                            if version >= 3 && request.include_authorized_operations {
                                ctx.authorized_operations(ResourceType::Group, id)
                            } else {
                                i32::MIN
                            },
                        )
                        .with_group_state(str_bytes(d.state.name()))
                        .with_protocol_type(str_bytes(d.protocol_type))
                        .with_protocol_data(str_bytes(d.protocol))
                        .with_members(
                            d.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(str_bytes(m.member_id))
                                        .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                        .with_client_id(str_bytes(m.client_id))
                                        .with_client_host(str_bytes(m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        ),
                }
            })
            .collect(),
    )
}

/// DeleteGroups: each group needs DELETE (else GROUP_AUTHORIZATION_FAILED, and it is left).
pub fn handle_delete_groups(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let errors: Vec<i16> = tokio::task::block_in_place(|| {
        broker.groups.run(|c| {
            request
                .groups_names
                .iter()
                .map(|g| match ctx.authorize_group(Operation::Delete, g) {
                    Ok(()) => c.delete_group(g),
                    Err(e) => code(e),
                })
                .collect()
        })
    });
    DeleteGroupsResponse::default().with_results(
        request
            .groups_names
            .iter()
            .zip(errors)
            .map(|(g, error)| {
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(error)
            })
            .collect(),
    )
}

/// Whether any member's consumer-protocol subscription names `topic`.
fn subscribed(subscriptions: &[Bytes], topic: &str) -> bool {
    subscriptions.iter().any(|raw| {
        let mut buf = raw.clone();
        if buf.len() < 2 {
            return false;
        }
        let version = buf.get_i16().clamp(0, 3);
        ConsumerProtocolSubscription::decode(&mut buf, version)
            .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
            .unwrap_or(false)
    })
}

/// OffsetDelete: as Kafka, DELETE on the group (else GROUP_AUTHORIZATION_FAILED for the whole
/// request) and READ on each topic (else TOPIC_AUTHORIZATION_FAILED for its partitions, which
/// the coordinator does not see).
pub fn handle_offset_delete(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    if let Err(e) = ctx.authorize_group(Operation::Delete, &request.group_id) {
        return OffsetDeleteResponse::default().with_error_code(code(e));
    }
    let refused: Vec<Option<ResponseError>> = request
        .topics
        .iter()
        .map(|t| ctx.authorize_topic(Operation::Read, &t.name).err())
        .collect();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| refused.is_none())
        .flat_map(|(t, _)| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let result = tokio::task::block_in_place(|| {
        broker
            .groups
            .run(|c| c.delete_offsets(&request.group_id, &partitions, subscribed))
    });
    match result {
        Err(error) => OffsetDeleteResponse::default().with_error_code(error),
        Ok(errors) => {
            let mut errors = errors.into_iter();
            OffsetDeleteResponse::default().with_topics(
                request
                    .topics
                    .iter()
                    .zip(&refused)
                    .map(|(t, refused)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let error = match refused {
                                            Some(e) => code(*e),
                                            None => errors.next().unwrap_or(0),
                                        };
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
}

/// An offset as OffsetFetch reports it: -1 and empty metadata when nothing is committed.
struct CommittedOffsetView {
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    error: i16,
}

impl From<Option<CommittedOffset>> for CommittedOffsetView {
    fn from(o: Option<CommittedOffset>) -> Self {
        match o {
            Some(o) => Self {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata,
                error: 0,
            },
            None => Self {
                offset: -1,
                leader_epoch: -1,
                metadata: NO_METADATA.to_string(),
                error: 0,
            },
        }
    }
}

/// KIP-848 assignments name topics by id.
fn heartbeat_topic_partitions(
    a: &Assignment,
) -> Vec<consumer_group_heartbeat_response::TopicPartitions> {
    a.iter()
        .map(|(id, ps)| {
            consumer_group_heartbeat_response::TopicPartitions::default()
                .with_topic_id(*id)
                .with_partitions(ps.iter().copied().collect())
        })
        .collect()
}

pub fn handle_consumer_group_heartbeat(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let version = ctx.version();
    // As Kafka: READ on the group, and DESCRIBE on every topic subscribed by name.
    let refused = ctx
        .authorize_group(Operation::Read, &request.group_id)
        .and_then(|()| {
            request
                .subscribed_topic_names
                .iter()
                .flatten()
                .try_for_each(|t| ctx.authorize_topic(Operation::Describe, t))
        });
    if let Err(e) = refused {
        return ConsumerGroupHeartbeatResponse::default().with_error_code(code(e));
    }
    let heartbeat = Heartbeat {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: request.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: request
            .subscribed_topic_regex
            .as_ref()
            .map(|r| r.to_string()),
        server_assignor: request.server_assignor.as_ref().map(|a| a.to_string()),
        owned: request.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
                .collect()
        }),
        client_id: ctx.client_id().to_string(),
        client_host: ctx.session.client_host(),
        api_version: version,
    };
    let topics = crate::group_service::topic_views(&broker.image());
    let ready =
        || coordinator_ready(broker).and_then(|()| coordinator_of(broker, &request.group_id));
    let result = tokio::task::block_in_place(|| match ready() {
        Ok(()) => broker
            .groups
            .run(|c| c.consumer_heartbeat(heartbeat, &topics, now_ms())),
        Err(error) => Err(HeartbeatError {
            error,
            message: format!("{error:?}: this broker cannot coordinate the group now."),
        }),
    });
    match result {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|a| {
                consumer_group_heartbeat_response::Assignment::default()
                    .with_topic_partitions(heartbeat_topic_partitions(&a))
            })),
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code(e.error))
            .with_error_message(Some(str_bytes(e.message))),
    }
}

pub fn handle_consumer_group_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let image = broker.image();
    // Kafka's `topicPartitionsFromMap`: partitions of topics no longer in the metadata are
    // left out.
    let describe_assignment = |a: &Assignment| {
        consumer_group_describe_response::Assignment::default().with_topic_partitions(
            a.iter()
                .filter_map(|(id, ps)| {
                    let topic = image.topic_by_id(id)?;
                    Some(
                        consumer_group_describe_response::TopicPartitions::default()
                            .with_topic_id(*id)
                            .with_topic_name(TopicName(str_bytes(topic.name.clone())))
                            .with_partitions(ps.iter().copied().collect()),
                    )
                })
                .collect(),
        )
    };
    let groups = tokio::task::block_in_place(|| {
        broker.groups.run(|c| {
            request
                .group_ids
                .iter()
                .map(|id| {
                    let base = consumer_group_describe_response::DescribedGroup::default()
                        .with_group_id(id.clone());
                    if let Err(e) = ctx.authorize_group(Operation::Describe, id) {
                        return base.with_error_code(code(e));
                    }
                    let g = match c.describe_consumer_group(id) {
                        Ok(g) => g,
                        Err(message) => {
                            return base
                                .with_error_code(code(ResponseError::GroupIdNotFound))
                                .with_error_message(Some(str_bytes(message)))
                        }
                    };
                    let base = if request.include_authorized_operations {
                        base.with_authorized_operations(
                            ctx.authorized_operations(ResourceType::Group, id),
                        )
                    } else {
                        base
                    };
                    // Kafka's `ConsumerGroupState.toString()`: `Stable`, `Reconciling`, ...
                    base.with_group_state(str_bytes(g.state()))
                        .with_group_epoch(g.group_epoch)
                        .with_assignment_epoch(g.assignment_epoch)
                        .with_assignor_name(str_bytes(g.assignor.clone()))
                        .with_members(
                            g.members
                                .values()
                                .map(|m| {
                                    consumer_group_describe_response::Member::default()
                                        .with_member_id(str_bytes(m.id.clone()))
                                        .with_instance_id(m.instance_id.clone().map(str_bytes))
                                        .with_rack_id(m.rack_id.clone().map(str_bytes))
                                        .with_member_epoch(m.epoch)
                                        .with_client_id(str_bytes(m.client_id.clone()))
                                        .with_client_host(str_bytes(m.client_host.clone()))
                                        .with_subscribed_topic_names(
                                            m.subscribed_names
                                                .iter()
                                                .map(|n| TopicName(str_bytes(n.clone())))
                                                .collect(),
                                        )
                                        .with_subscribed_topic_regex(
                                            m.subscribed_regex.clone().map(str_bytes),
                                        )
                                        .with_assignment(describe_assignment(&m.assigned))
                                        .with_target_assignment(describe_assignment(
                                            g.target.get(&m.id).unwrap_or(&Assignment::new()),
                                        ))
                                        // KIP-1099: 0 classic, 1 consumer protocol.
                                        .with_member_type(if m.classic.is_some() { 0 } else { 1 })
                                })
                                .collect(),
                        )
                })
                .collect()
        })
    });
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_offsets_keep_their_place_among_the_coordinators_answers() {
        let unknown = ResponseError::UnknownTopicOrPartition;
        let denied = ResponseError::TopicAuthorizationFailed;
        let stale = code(ResponseError::IllegalGeneration);
        assert_eq!(
            merge_commit_errors(&[Some(unknown), None, Some(denied), None], vec![0, stale]),
            vec![code(unknown), 0, code(denied), stale]
        );
        assert_eq!(
            merge_commit_errors(&[Some(unknown), Some(unknown)], Vec::new()),
            vec![code(unknown); 2]
        );
        assert!(merge_commit_errors(&[], Vec::new()).is_empty());
    }
}
