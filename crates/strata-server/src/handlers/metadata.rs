//! Metadata, DescribeCluster and DescribeTopicPartitions (KIP-966): views of the image.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use strata_meta::acl::{ResourceType, CLUSTER_NAME};
use strata_meta::{BrokerRegistration, MetadataImage, TopicImage};

use super::{code, str_bytes, topics};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

pub async fn handle_metadata(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = ctx.version();
    let mut image = broker.image();
    // v0 has no null: an empty list means every topic.
    let all_topics = request.topics.is_none()
        || (version == 0 && request.topics.as_ref().is_some_and(|t| t.is_empty()));
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let mut topics = Vec::new();
    // As Kafka's `handleTopicMetadataRequest`: only topics the principal may DESCRIBE are
    // listed; a named one it may not is TOPIC_AUTHORIZATION_FAILED, whether it exists or not.
    let may_describe = |name: &str| ctx.authorize_topic(Operation::Describe, name).is_ok();
    if all_topics {
        topics.extend(
            image
                .topics()
                .filter(|t| ctx.permits(Operation::Describe, ResourceType::Topic, &t.name))
                .map(|t| topic_metadata(&image, t)),
        );
    } else {
        let requested = request.topics.unwrap_or_default();
        let auto_create = allow_auto_create
            && broker
                .config
                .broker_value(strata_meta::config::props::AUTO_CREATE_TOPICS_ENABLE);
        // Auto-creation needs CREATE on the cluster or on the topic; a missing topic the
        // principal may not create is TOPIC_AUTHORIZATION_FAILED.
        let may_create_any = ctx.permits(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
        let mut missing = Vec::new();
        let mut refused_creation = std::collections::HashSet::new();
        for t in &requested {
            if let Some(name) = &t.name {
                if image.topic(name).is_none() && may_describe(name) {
                    if !auto_create
                        || may_create_any
                        || ctx.authorize_topic(Operation::Create, name).is_ok()
                    {
                        missing.push(name.to_string());
                    } else {
                        refused_creation.insert(name.to_string());
                    }
                }
            }
        }
        let mut creation_errors = std::collections::HashMap::new();
        if !missing.is_empty() && auto_create {
            creation_errors = topics::auto_create(broker, missing).await;
            image = broker.image();
        }
        for t in requested {
            let response = match &t.name {
                Some(name) if !may_describe(name) || refused_creation.contains(name.as_str()) => {
                    MetadataResponseTopic::default()
                        .with_name(Some(name.clone()))
                        .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                }
                None if image
                    .topic_by_id(&t.topic_id)
                    .is_some_and(|topic| !may_describe(&topic.name)) =>
                {
                    MetadataResponseTopic::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                }
                Some(name) => match image.topic(name) {
                    Some(topic) => topic_metadata(&image, topic),
                    None => {
                        let error = match creation_errors.get(name.as_str()) {
                            Some(strata_meta::ControllerError::InvalidTopic(_)) => {
                                ResponseError::InvalidTopicException
                            }
                            _ if strata_meta::controller::validate_topic_name(name).is_err() => {
                                ResponseError::InvalidTopicException
                            }
                            _ => ResponseError::UnknownTopicOrPartition,
                        };
                        MetadataResponseTopic::default()
                            .with_name(Some(name.clone()))
                            .with_error_code(code(error))
                    }
                },
                None => match image.topic_by_id(&t.topic_id) {
                    Some(topic) => topic_metadata(&image, topic),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(code(ResponseError::UnknownTopicId)),
                },
            };
            topics.push(response);
        }
    }
    // KIP-430: what the principal may do, when asked (v8+).
    if version >= 8 && request.include_topic_authorized_operations {
        for t in topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations =
                    ctx.authorized_operations(ResourceType::Topic, name);
            }
        }
    }
    let cluster_operations =
        if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
            cluster_authorized_operations(ctx)
        } else {
            i32::MIN
        };
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_operations)
        .with_brokers(
            // Each broker as reached on the listener this client came in on; a broker without
            // that listener is left out, as Kafka's `getAliveBrokerNodes(listenerName)` does.
            live_brokers(&image)
                .filter_map(|b| {
                    let (host, port) = b.endpoint(&ctx.session.listener)?;
                    Some(
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(b.broker_id))
                            .with_host(str_bytes(host))
                            .with_port(port)
                            .with_rack(b.rack.clone().map(str_bytes)),
                    )
                })
                .collect(),
        )
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(controller_id(broker, &image)))
        .with_topics(topics)
}

/// KIP-430's cluster operations: those the principal may do if it may DESCRIBE the cluster,
/// else none (Kafka's rule for Metadata and DescribeCluster).
fn cluster_authorized_operations(ctx: &RequestContext<'_>) -> i32 {
    match ctx.authorize_cluster(Operation::Describe) {
        Ok(()) => ctx.authorized_operations(ResourceType::Cluster, CLUSTER_NAME),
        Err(_) => 0,
    }
}

/// The brokers clients may use: the registered, unfenced ones.
fn live_brokers(image: &MetadataImage) -> impl Iterator<Item = &BrokerRegistration> {
    image.brokers().filter(|b| !b.fenced)
}

/// The controller id clients see. As in KRaft, clients cannot reach the controllers, so they
/// get a live broker, which forwards admin changes: the active controller when it is one,
/// else this broker.
fn controller_id(broker: &Broker, image: &MetadataImage) -> i32 {
    broker
        .store
        .quorum()
        .and_then(|q| q.leader_id())
        .filter(|id| image.broker(*id).is_some_and(|b| !b.fenced))
        .unwrap_or(broker.config.node_id)
}

/// Replicas on brokers that are fenced or not registered.
fn offline_replicas(image: &MetadataImage, replicas: &[i32]) -> Vec<BrokerId> {
    replicas
        .iter()
        .copied()
        .filter(|r| image.broker(*r).is_none_or(|b| b.fenced))
        .map(BrokerId)
        .collect()
}

fn topic_metadata(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.is_internal())
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    let error = if p.leader == strata_meta::partition_change::NO_LEADER {
                        code(ResponseError::LeaderNotAvailable)
                    } else {
                        0
                    };
                    MetadataResponsePartition::default()
                        .with_error_code(error)
                        .with_partition_index(p.partition)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_isr_nodes(broker_ids(&p.isr))
                        .with_replica_nodes(broker_ids(&p.replicas))
                        .with_offline_replicas(offline_replicas(image, &p.replicas))
                })
                .collect(),
        )
}

/// DescribeCluster endpoint type for broker listeners (v1+); 2 asks for controllers.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle_describe_cluster(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(broker.cluster_id.clone()));
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return response
            .with_error_code(code(ResponseError::MismatchedEndpointType))
            .with_error_message(Some(str_bytes("The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER")));
    }
    let image = broker.image();
    // v2 (KIP-1073): fenced brokers too when asked, marked as such. Older versions cannot ask
    // (the field decodes as false), so `is_fenced`, a v2 field, stays false for them.
    let include_fenced = request.include_fenced_brokers;
    let cluster_operations = if request.include_cluster_authorized_operations {
        cluster_authorized_operations(ctx)
    } else {
        i32::MIN
    };
    response
        .with_cluster_authorized_operations(cluster_operations)
        .with_controller_id(BrokerId(controller_id(broker, &image)))
        .with_brokers(
            image
                .brokers()
                .filter(|b| include_fenced || !b.fenced)
                .filter_map(|b| {
                    let (host, port) = b.endpoint(&ctx.session.listener)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.broker_id))
                            .with_host(str_bytes(host))
                            .with_port(port)
                            .with_rack(b.rack.clone().map(str_bytes))
                            .with_is_fenced(b.fenced),
                    )
                })
                .collect(),
        )
}

/// KIP-966: paginated partition descriptions, at most `response_partition_limit` partitions
/// per response, resuming from the cursor.
pub fn handle_describe_topic_partitions(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.image();
    let limit = request.response_partition_limit.clamp(1, 2000) as usize;
    // As Metadata: listing every topic lists those the principal may DESCRIBE; a named one
    // it may not is TOPIC_AUTHORIZATION_FAILED.
    let may_describe = |name: &str| ctx.authorize_topic(Operation::Describe, name).is_ok();
    let mut names: Vec<String> = if request.topics.is_empty() {
        image
            .topics()
            .map(|t| t.name.clone())
            .filter(|n| ctx.permits(Operation::Describe, ResourceType::Topic, n))
            .collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &request.cursor {
        Some(c) => (c.topic_name.to_string(), c.partition_index.max(0)),
        None => (String::new(), 0),
    };
    let mut topics = Vec::new();
    let mut emitted = 0usize;
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        if !request.topics.is_empty() && !may_describe(&name) {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_error_code(code(ResponseError::TopicAuthorizationFailed)),
            );
            continue;
        }
        let Some(topic) = image.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_error_code(code(ResponseError::UnknownTopicOrPartition)),
            );
            continue;
        };
        let first = if name == start_topic {
            start_partition as usize
        } else {
            0
        };
        let mut partitions = Vec::new();
        for p in topic.partitions.iter().skip(first) {
            if emitted == limit {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(str_bytes(name.clone())))
                        .with_partition_index(p.partition),
                );
                break;
            }
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p.partition)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_isr_nodes(broker_ids(&p.isr))
                    .with_replica_nodes(broker_ids(&p.replicas))
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new())),
            );
            emitted += 1;
        }
        let operations = ctx.authorized_operations(ResourceType::Topic, &name);
        topics.push(describe_topic(topic, partitions, operations));
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn describe_topic(
    topic: &TopicImage,
    partitions: Vec<DescribeTopicPartitionsResponsePartition>,
    authorized_operations: i32,
) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_topic_authorized_operations(authorized_operations)
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions)
}

fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|r| BrokerId(*r)).collect()
}
