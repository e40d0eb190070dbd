//! One handler per Kafka API (Kafka's `KafkaApis`): each takes the decoded request and the
//! broker and builds the response with Kafka's semantics and error codes.
//!
//! Handlers never fail as a whole: per-topic and per-partition problems are error codes inside
//! the response, as the protocol wants. Work that touches files runs on blocking threads.

mod acls;
pub mod api_versions;
mod client_quotas;
mod configs;
mod elect_leaders;
mod features;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod partition_walk;
mod produce;
mod producer_id;
mod quorum;
mod reassignments;
mod sasl;
mod scram;
mod tenant_namespace;
#[cfg(test)]
mod tests;
mod topics;
pub(crate) mod txn;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use strata_log::LogError;
use strata_meta::ControllerError;

use crate::broker::Broker;
use crate::client_quota_manager::{Charge, QuotaKind};
use crate::replica_manager::Partition;
use crate::session::RequestContext;

/// Handles one request admitted by [`crate::session::Session::admit`]. `None` means no
/// response is sent (Produce with acks=0). Every handler gets the context: the version to
/// answer, the client id and the session it came on.
///
/// A request of a client with a `request_percentage` quota (KIP-124) is charged the CPU time
/// it took (not time spent waiting), unless it is exempt as in Kafka: ApiVersions, SASL, and
/// the brokers' own requests (a follower's Fetch, WriteTxnMarkers). The answer carries the
/// largest throttle time any quota charge of the request earned.
///
/// A tenant's request is mapped into its name space here, and its answer back
/// (`tenant_namespace`); an API a tenant may not use is refused by its handler, every
/// authorization of it denied.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &mut RequestContext<'_>,
    mut body: RequestKind,
) -> Option<ResponseKind> {
    let image = broker.image();
    ctx.tenant = tenant_namespace::scope_of(&image, &ctx.session.principal);
    if let Some(scope) = &mut ctx.tenant {
        let namespace = tenant_namespace::Namespace::new(scope, &image);
        let mapped = namespace.permitted(&body) && namespace.map_request(&mut body);
        scope.denied = !mapped;
    }
    let ctx = &*ctx;
    let user = &ctx.session.principal.name;
    let charged = !exempt_from_request_quota(&body)
        && !broker
            .quotas
            .applicable(&image, QuotaKind::Request, user, ctx.client_id())
            .is_empty();
    let response = if charged {
        let (response, cpu) = crate::task::metered(dispatch(broker, ctx, body)).await;
        let now = std::time::Instant::now();
        if let Some(throttle) =
            broker
                .quotas
                .record_request(&image, user, ctx.client_id(), cpu, now)
        {
            ctx.throttle(throttle);
        }
        response
    } else {
        dispatch(broker, ctx, body).await
    };
    let throttle = throttle_time_ms(ctx);
    response.map(|mut r| {
        if throttle > 0 {
            set_throttle_time_ms(&mut r, throttle);
        }
        // A refused request's answer carries only errors, under the names the client sent.
        if let Some(scope) = ctx.tenant.as_ref().filter(|s| !s.denied) {
            tenant_namespace::Namespace::new(scope, &image).map_response(&mut r);
        }
        r
    })
}

/// Requests Kafka never charges to a request quota: those a client needs to connect, and those
/// of other brokers.
fn exempt_from_request_quota(body: &RequestKind) -> bool {
    match body {
        RequestKind::ApiVersions(_)
        | RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_)
        | RequestKind::WriteTxnMarkers(_) => true,
        RequestKind::Fetch(f) => f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0,
        _ => false,
    }
}

/// Hands the request to its API's handler.
async fn dispatch(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    body: RequestKind,
) -> Option<ResponseKind> {
    let response = match body {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(api_versions::handle(ctx, &r, &broker.image()))
        }
        RequestKind::SaslHandshake(_) => ResponseKind::SaslHandshake(sasl::handle_handshake()),
        RequestKind::SaslAuthenticate(_) => {
            ResponseKind::SaslAuthenticate(sasl::handle_authenticate())
        }
        RequestKind::UpdateFeatures(r) => {
            ResponseKind::UpdateFeatures(features::handle_update(broker, ctx, &r))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle_metadata(broker, ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(metadata::handle_describe_cluster(broker, ctx, &r))
        }
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            metadata::handle_describe_topic_partitions(broker, ctx, &r),
        ),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(topics::handle_create(broker, ctx, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::handle_delete(broker, ctx, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::handle_create_partitions(broker, ctx, r).await)
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, ctx, r).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            reassignments::handle_alter(broker, ctx, r).await,
        ),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(reassignments::handle_list(broker, ctx, &r))
        }
        RequestKind::Produce(r) => {
            return produce::handle(broker, ctx, r)
                .await
                .map(ResponseKind::Produce)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, ctx, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::handle_list_offsets(broker, ctx, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            offsets::handle_offset_for_leader_epoch(broker, ctx, &r),
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(offsets::handle_delete_records(broker, ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::handle_describe(broker, ctx, &r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::handle_alter(broker, ctx, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            configs::handle_incremental_alter(broker, ctx, r).await,
        ),
        RequestKind::ListConfigResources(r) => ResponseKind::ListConfigResources(
            configs::handle_list_config_resources(broker, ctx, &r),
        ),
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(configs::handle_describe_log_dirs(broker, ctx, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producer_id::handle(broker, ctx, &r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::handle_find_coordinator(broker, ctx, r).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::handle_join(broker, ctx, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::handle_sync(broker, ctx, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(groups::handle_heartbeat(broker, ctx, &r))
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::handle_leave(broker, ctx, &r))
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::handle_offset_commit(broker, ctx, &r))
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::handle_offset_fetch(broker, ctx, &r))
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::handle_list_groups(broker, ctx, &r))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::handle_describe_groups(broker, ctx, &r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::handle_delete_groups(broker, ctx, &r))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::handle_add_partitions(broker, ctx, &r))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::handle_add_offsets(broker, ctx, &r))
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::handle_end_txn(broker, ctx, &r)),
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(txn::handle_write_txn_markers(broker, ctx, &r))
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::handle_txn_offset_commit(broker, ctx, &r))
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::handle_describe(broker, ctx, &r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::handle_list(broker, ctx, &r))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(producer_id::handle_describe(broker, ctx, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            if broker
                .image()
                .feature_level(strata_meta::features::GROUP_VERSION)
                < 1
            {
                // Kafka answers so while group.version has not enabled the consumer group
                // protocol (KIP-848).
                kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code(ResponseError::UnsupportedVersion))
                    .with_error_message(Some(str_bytes(
                        "The new group coordinator is not enabled: group.version is 0",
                    )))
            } else {
                groups::handle_consumer_group_heartbeat(broker, ctx, &r)
            },
        ),
        RequestKind::ConsumerGroupDescribe(r) => ResponseKind::ConsumerGroupDescribe(
            groups::handle_consumer_group_describe(broker, ctx, &r),
        ),
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(quorum::handle(broker, ctx, &r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::handle_offset_delete(broker, ctx, &r))
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(scram::handle_describe(broker, ctx, &r))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(scram::handle_alter(broker, ctx, r).await)
        }
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(client_quotas::handle_describe(broker, ctx, &r))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(client_quotas::handle_alter(broker, ctx, r).await)
        }
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(acls::handle_create(broker, ctx, r).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(acls::handle_describe(broker, ctx, &r))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(acls::handle_delete(broker, ctx, r).await)
        }
        other => {
            // The decoder only lets through APIs in the served table, and every one of them
            // has an arm above; reaching here is a bug in that table.
            unreachable!("no handler for served request {other:?}")
        }
    };
    Some(response)
}

/// Charges `value` to the client's quota of `kind` (if one applies) and throttles the client
/// for what it earned. Returns the charge, which a response dropped for the throttle takes back.
pub(crate) fn charge_quota(
    broker: &Broker,
    ctx: &RequestContext<'_>,
    image: &strata_meta::MetadataImage,
    kind: QuotaKind,
    value: usize,
) -> Option<Charge> {
    let charge = broker.quotas.record(
        image,
        kind,
        &ctx.session.principal.name,
        ctx.client_id(),
        value as f64,
        std::time::Instant::now(),
    )?;
    ctx.throttle(charge.throttle);
    Some(charge)
}

/// Sets the `throttle_time_ms` of a response, of any API that has one (Kafka's
/// `maybeSetThrottleTimeMs`); a version without the field does not send it (Produce v0 and
/// Fetch v0 clients get their answer late instead). Answers without one (SASL, DescribeQuorum,
/// WriteTxnMarkers) are left alone.
fn set_throttle_time_ms(body: &mut ResponseKind, ms: i32) {
    macro_rules! set {
        ($($api:ident)*) => {
            match body {
                $(ResponseKind::$api(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    set!(AddOffsetsToTxn AddPartitionsToTxn AlterClientQuotas AlterConfigs AlterPartitionReassignments AlterUserScramCredentials ApiVersions ConsumerGroupDescribe ConsumerGroupHeartbeat CreateAcls CreatePartitions CreateTopics DeleteAcls DeleteGroups DeleteRecords DeleteTopics DescribeAcls DescribeClientQuotas DescribeCluster DescribeConfigs DescribeGroups DescribeLogDirs DescribeProducers DescribeTopicPartitions DescribeTransactions DescribeUserScramCredentials ElectLeaders EndTxn Fetch FindCoordinator Heartbeat IncrementalAlterConfigs InitProducerId JoinGroup LeaveGroup ListConfigResources ListGroups ListOffsets ListPartitionReassignments ListTransactions Metadata OffsetCommit OffsetDelete OffsetFetch OffsetForLeaderEpoch Produce SyncGroup TxnOffsetCommit UpdateFeatures);
}

/// The `throttle_time_ms` a response carries: what the request's quota charges earned.
fn throttle_time_ms(ctx: &RequestContext<'_>) -> i32 {
    ctx.throttle_time().as_millis().min(i32::MAX as u128) as i32
}

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// KIP-951: the `node_endpoints` of a Produce or Fetch response (each its own generated
/// `$endpoint` type of the same shape): the live brokers among `$leaders`, the leaders that
/// NOT_LEADER_OR_FOLLOWER answers named.
macro_rules! leader_endpoints {
    ($image:expr, $leaders:expr, $endpoint:ty) => {
        $leaders
            .into_iter()
            .filter_map(|id| $image.broker(id).filter(|b| !b.fenced))
            .map(|b| {
                <$endpoint>::default()
                    .with_node_id(kafka_protocol::messages::BrokerId(b.broker_id))
                    .with_host($crate::handlers::str_bytes(b.host.clone()))
                    .with_port(b.port)
                    .with_rack(b.rack.clone().map($crate::handlers::str_bytes))
            })
            .collect::<Vec<$endpoint>>()
    };
}
pub(crate) use leader_endpoints;
pub(crate) use tenant_namespace::scope_of as tenant_scope;

/// Kafka error code and message for a refused metadata change.
pub(crate) fn controller_error(e: &ControllerError) -> (i16, Option<StrBytes>) {
    let error = match e {
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ControllerError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        ControllerError::UnknownTopicId => ResponseError::UnknownTopicId,
        ControllerError::TopicDeletionDisabled(_) => ResponseError::TopicDeletionDisabled,
        ControllerError::NoReassignmentInProgress(_) => ResponseError::NoReassignmentInProgress,
        ControllerError::UnsupportedSaslMechanism(_) => ResponseError::UnsupportedSaslMechanism,
        ControllerError::ResourceNotFound(_) => ResponseError::ResourceNotFound,
        ControllerError::DuplicateResource(_) => ResponseError::DuplicateResource,
        ControllerError::UnacceptableCredential(_) => ResponseError::UnacceptableCredential,
        ControllerError::UnsupportedVersion(_) => ResponseError::UnsupportedVersion,
        ControllerError::PolicyViolation(_) => ResponseError::PolicyViolation,
    };
    (error.code(), Some(str_bytes(e.to_string())))
}

/// Kafka error code for a metadata commit that failed: a quorum without a leader is
/// REQUEST_TIMED_OUT (clients retry), a local metadata log failure KAFKA_STORAGE_ERROR.
pub(crate) fn meta_error_code(e: &strata_meta::MetaError) -> i16 {
    match e {
        strata_meta::MetaError::Unavailable(_) => code(ResponseError::RequestTimedOut),
        _ => code(ResponseError::KafkaStorageError),
    }
}

/// Kafka error code for a failure of `partition`'s log; I/O errors are logged and counted as
/// storage errors.
pub(crate) fn log_error(broker: &Broker, partition: &Partition, e: &LogError) -> i16 {
    if matches!(e, LogError::Io { .. }) {
        broker.metrics.storage_errors.add(1);
        tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "log I/O error");
    }
    e.kafka_error_code()
}
