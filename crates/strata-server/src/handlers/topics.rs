//! CreateTopics, DeleteTopics, CreatePartitions, and auto-creation for Metadata and Produce.
//!
//! Each request is validated and committed as one metadata batch: every topic of the request
//! is checked against the image plus the topics accepted before it in the same request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use strata_meta::acl::{ResourceType, CLUSTER_NAME};
use strata_meta::config::TOPIC_CONFIGS;
use strata_meta::{ControllerError, CreateTopicSpec, MetadataImage};
use uuid::Uuid;

use super::{code, controller_error, str_bytes};
use crate::broker::Broker;
use crate::client_quota_manager::QuotaKind;
use crate::session::{Operation, RequestContext};

fn defaults(broker: &Broker) -> (i32, i16) {
    (
        broker
            .config
            .broker_value(strata_meta::config::props::NUM_PARTITIONS)
            .max(1),
        broker
            .config
            .broker_value(strata_meta::config::props::DEFAULT_REPLICATION_FACTOR)
            .max(1),
    )
}

/// Validates `specs` in order against `image`, each seeing the ones accepted before it.
/// Returns per-topic results and the records of the accepted ones.
/// KIP-599: charges each item's partition mutations (`None`: nothing to charge) to the
/// client's `controller_mutation_rate`, in request order, and throttles the client for what it
/// earned. Returns whether each was refused, which only a `strict` version can be.
fn charge_mutations(
    broker: &Broker,
    ctx: &RequestContext<'_>,
    image: &MetadataImage,
    strict: bool,
    mutations: &[Option<usize>],
) -> Vec<bool> {
    let now = std::time::Instant::now();
    let user = &ctx.session.principal.name;
    mutations
        .iter()
        .map(|m| {
            let charge = m.and_then(|m| {
                broker
                    .quotas
                    .record_mutations(image, user, ctx.client_id(), m as f64, strict, now)
            });
            charge.is_some_and(|c| {
                ctx.throttle(c.throttle);
                c.refused
            })
        })
        .collect()
}

/// Whether a controller mutation quota applies to the request's client: only then is the
/// request planned ahead to count its partitions.
fn mutation_quota_applies(ctx: &RequestContext<'_>, image: &MetadataImage) -> bool {
    crate::client_quota_manager::ClientQuotaManager::resolve(
        image,
        QuotaKind::ControllerMutation,
        &ctx.session.principal.name,
        ctx.client_id(),
    )
    .is_some()
}

/// The answer of a topic refused by the controller mutation quota, as Kafka words it.
fn quota_exceeded() -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    (
        code(ResponseError::ThrottlingQuotaExceeded),
        Some(str_bytes("The throttling quota has been exceeded.")),
    )
}

fn plan_topics(
    broker: &Broker,
    image: &MetadataImage,
    specs: &[CreateTopicSpec],
) -> (
    Vec<Result<strata_meta::controller::CreatedTopic, ControllerError>>,
    Vec<strata_meta::MetadataRecord>,
    MetadataImage,
) {
    let defaults = defaults(broker);
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(specs.len());
    for spec in specs {
        let spec = &with_tier_default(broker, &working, spec);
        match broker
            .meta
            .controller()
            .create_topic(&working, spec, defaults)
        {
            Ok((created, new_records)) => {
                working = working.apply(&new_records);
                records.extend(new_records);
                results.push(Ok(created));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (results, records, working)
}

/// `spec` with `remote.storage.enable=true` recorded as the topic's own setting when the broker
/// tiers new topics by default (`log.remote.storage.enable`, set by `--object-store`) and the
/// topic neither says otherwise nor is compacted. Recorded, so that the topic stays tiered
/// if the broker default changes, and so that Kafka's rules for tiered topics (no switch to
/// compaction) apply to it.
fn with_tier_default(
    broker: &Broker,
    image: &MetadataImage,
    spec: &CreateTopicSpec,
) -> CreateTopicSpec {
    let set = |name: &str| {
        spec.configs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut spec = spec.clone();
    if set("remote.storage.enable").is_some() {
        return spec;
    }
    let def = |name| strata_meta::config::topic_config(name).expect("defined topic config");
    let broker_default =
        broker
            .config
            .topic_config_value(image, &spec.name, def("remote.storage.enable"));
    let policy = set("cleanup.policy").flatten().unwrap_or_else(|| {
        broker
            .config
            .topic_config_value(image, &spec.name, def("cleanup.policy"))
    });
    let compacted = policy.split(',').any(|p| p.trim() == "compact");
    if broker_default.trim().eq_ignore_ascii_case("true") && !compacted {
        spec.configs
            .push(("remote.storage.enable".into(), Some("true".into())));
    }
    spec
}

/// Creates missing topics with the broker defaults (auto-creation). Returns the failures.
pub async fn auto_create(
    broker: &Arc<Broker>,
    names: Vec<String>,
) -> HashMap<String, ControllerError> {
    let specs: Vec<CreateTopicSpec> = names
        .iter()
        .map(|name| CreateTopicSpec {
            name: name.clone(),
            num_partitions: -1,
            replication_factor: -1,
            ..Default::default()
        })
        .collect();
    let broker = broker.clone();
    let committed = tokio::task::block_in_place(|| {
        broker.commit(|image| {
            let (results, records, _) = plan_topics(&broker, image, &specs);
            (records, results)
        })
    });
    let mut failures = HashMap::new();
    match committed {
        Ok(results) => {
            for (name, result) in names.into_iter().zip(results) {
                match result {
                    Ok(created) => {
                        tracing::info!(topic = %name, partitions = created.num_partitions, "auto-created topic")
                    }
                    // Lost a race with another creator: the topic exists, which is what we want.
                    Err(ControllerError::TopicAlreadyExists(_)) => {}
                    Err(e) => {
                        failures.insert(name, e);
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "metadata commit failed during auto-creation");
            for name in names {
                failures.insert(name, ControllerError::InvalidRequest(e.to_string()));
            }
        }
    }
    failures
}

pub async fn handle_create(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = ctx.version();
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    // As Kafka: CREATE on the cluster, else on each topic; a topic the principal may not
    // create is TOPIC_AUTHORIZATION_FAILED.
    let may_create_any = ctx.permits(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
    let unauthorized: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.name.to_string())
        .filter(|name| {
            !duplicates.contains(name)
                && !may_create_any
                && ctx.authorize_topic(Operation::Create, name).is_err()
        })
        .collect();
    let mut specs: Vec<CreateTopicSpec> = request
        .topics
        .iter()
        .filter(|t| !duplicates.contains(t.name.as_str()))
        .filter(|t| !unauthorized.iter().any(|n| n == t.name.as_str()))
        .map(|t| CreateTopicSpec {
            name: t.name.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect(),
        })
        .collect();
    let validate_only = request.validate_only;
    // KIP-599: the partitions of the topics that would be created, charged in order; from v6
    // a topic is refused while the client's quota is overdrawn.
    let image = broker.image();
    let throttled: Vec<String> = if validate_only || !mutation_quota_applies(ctx, &image) {
        Vec::new()
    } else {
        let (planned, _, _) = plan_topics(broker, &image, &specs);
        let mutations: Vec<Option<usize>> = planned
            .iter()
            .map(|r| r.as_ref().ok().map(|c| c.num_partitions.max(0) as usize))
            .collect();
        let refused = charge_mutations(broker, ctx, &image, version >= 6, &mutations);
        specs
            .iter()
            .zip(refused)
            .filter(|(_, refused)| *refused)
            .map(|(s, _)| s.name.clone())
            .collect()
    };
    specs.retain(|s| !throttled.contains(&s.name));
    let outcome = tokio::task::block_in_place(|| {
        if validate_only {
            let image = broker.image();
            let (results, _, working) = plan_topics(broker, &image, &specs);
            Ok((results, Arc::new(working)))
        } else {
            broker
                .commit(|image| {
                    let (results, records, _) = plan_topics(broker, image, &specs);
                    (records, results)
                })
                .map(|results| (results, broker.image()))
        }
    });
    let mut responses: Vec<CreatableTopicResult> = duplicates
        .iter()
        .map(|name| {
            CreatableTopicResult::default()
                .with_name(TopicName(str_bytes(name.clone())))
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(Some(str_bytes(format!(
                    "Create topics request from client contains multiple entries for the following topics: {name}"
                ))))
        })
        .collect();
    responses.extend(unauthorized.into_iter().map(|name| {
        CreatableTopicResult::default()
            .with_name(TopicName(str_bytes(name)))
            .with_error_code(code(ResponseError::TopicAuthorizationFailed))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }));
    responses.extend(throttled.into_iter().map(|name| {
        let (error, message) = quota_exceeded();
        CreatableTopicResult::default()
            .with_name(TopicName(str_bytes(name)))
            .with_error_code(error)
            .with_error_message(message)
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }));
    match outcome {
        Ok((results, image)) => {
            for (spec, result) in specs.iter().zip(results) {
                let base = CreatableTopicResult::default()
                    .with_name(TopicName(str_bytes(spec.name.clone())));
                responses.push(match result {
                    Ok(created) => {
                        if !validate_only {
                            tracing::info!(topic = %spec.name, partitions = created.num_partitions, "created topic");
                        }
                        let mut r = base
                            .with_topic_id(created.topic_id)
                            .with_num_partitions(created.num_partitions)
                            .with_replication_factor(created.replication_factor);
                        if version >= 5 {
                            r = r.with_configs(Some(effective_configs(broker, &image, &spec.name)));
                        }
                        r
                    }
                    Err(e) => {
                        let (error, message) = controller_error(&e);
                        base.with_error_code(error)
                            .with_error_message(message)
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                    }
                });
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "metadata commit failed");
            for spec in &specs {
                responses.push(
                    CreatableTopicResult::default()
                        .with_name(TopicName(str_bytes(spec.name.clone())))
                        .with_error_code(super::meta_error_code(&e))
                        .with_error_message(Some(str_bytes(e.to_string()))),
                );
            }
        }
    }
    CreateTopicsResponse::default().with_topics(responses)
}

/// The effective configs of a just-created topic (CreateTopics v5+ returns them).
fn effective_configs(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let levels = broker.config.resolve_topic_config(image, topic, def);
            CreatableTopicConfigs::default()
                .with_name(str_bytes(def.name))
                .with_value(Some(str_bytes(
                    broker.config.topic_config_value(image, topic, def),
                )))
                .with_config_source(levels[0].source as i8)
        })
        .collect()
}

pub async fn handle_delete(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let version = ctx.version();
    // v6 names topics by name or id; older versions by name only.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.to_string()), Uuid::nil()))
            .collect()
    };
    let deletion_enabled = broker
        .config
        .broker_value(strata_meta::config::props::DELETE_TOPIC_ENABLE);
    // As Kafka: DELETE on the topic, checked before its existence is told (a topic named by
    // an id this broker knows is checked by its name); refused ones are not deleted.
    let refused: Vec<bool> = {
        let image = broker.image();
        targets
            .iter()
            .map(|(name, id)| {
                let name = name
                    .clone()
                    .or_else(|| image.topic_by_id(id).map(|t| t.name.clone()));
                name.is_some_and(|n| ctx.authorize_topic(Operation::Delete, &n).is_err())
            })
            .collect()
    };
    // KIP-599: each topic's partitions are charged; from v5 a topic is refused while the
    // client's quota is overdrawn.
    let throttled: Vec<bool> = {
        let image = broker.image();
        if !mutation_quota_applies(ctx, &image) {
            vec![false; targets.len()]
        } else {
            let mutations: Vec<Option<usize>> = targets
                .iter()
                .zip(&refused)
                .map(|((name, id), refused)| {
                    let topic = match name {
                        Some(n) => image.topic(n),
                        None => image.topic_by_id(id),
                    };
                    topic.filter(|_| !refused).map(|t| t.partitions.len())
                })
                .collect();
            charge_mutations(broker, ctx, &image, version >= 5, &mutations)
        }
    };
    let refused: Vec<bool> = refused
        .iter()
        .zip(&throttled)
        .map(|(refused, throttled)| *refused || *throttled)
        .collect();
    let outcome = tokio::task::block_in_place(|| {
        broker.commit(|image| {
            let mut records = Vec::new();
            let mut results = Vec::new();
            let mut working = image.clone();
            for ((name, id), refused) in targets.iter().zip(&refused) {
                if *refused {
                    // Answered TOPIC_AUTHORIZATION_FAILED below; nothing is planned.
                    results.push(Err(ControllerError::UnknownTopicOrPartition));
                    continue;
                }
                let resolved = match name {
                    Some(n) => working
                        .topic(n)
                        .map(|t| t.topic_id)
                        .ok_or(ControllerError::UnknownTopicOrPartition),
                    None => working
                        .topic_by_id(id)
                        .map(|t| t.topic_id)
                        .ok_or(ControllerError::UnknownTopicId),
                };
                let result = resolved.and_then(|topic_id| {
                    if !deletion_enabled {
                        return Err(ControllerError::TopicDeletionDisabled(
                            "Topic deletion is disabled.".into(),
                        ));
                    }
                    let name = working
                        .topic_by_id(&topic_id)
                        .map(|t| t.name.clone())
                        .unwrap_or_default();
                    let new_records = broker.meta.controller().delete_topic(&working, topic_id)?;
                    working = working.apply(&new_records);
                    records.extend(new_records);
                    Ok((name, topic_id))
                });
                results.push(result);
            }
            (records, results)
        })
    });
    let responses = match outcome {
        Ok(results) => targets
            .iter()
            .zip(results)
            .zip(&refused)
            .zip(&throttled)
            .map(
                |((((name, id), result), refused), throttled)| match result {
                    _ if *throttled => {
                        let (error, message) = quota_exceeded();
                        DeletableTopicResult::default()
                            .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
                            .with_topic_id(*id)
                            .with_error_code(error)
                            .with_error_message(message)
                    }
                    _ if *refused => DeletableTopicResult::default()
                        .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
                        .with_topic_id(*id)
                        .with_error_code(code(ResponseError::TopicAuthorizationFailed)),
                    Ok((name, topic_id)) => {
                        tracing::info!(topic = %name, "deleted topic");
                        DeletableTopicResult::default()
                            .with_name(Some(TopicName(str_bytes(name))))
                            .with_topic_id(topic_id)
                    }
                    Err(e) => {
                        let (error, message) = controller_error(&e);
                        DeletableTopicResult::default()
                            .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
                            .with_topic_id(*id)
                            .with_error_code(error)
                            .with_error_message(message)
                    }
                },
            )
            .collect(),
        Err(e) => targets
            .iter()
            .map(|(name, id)| {
                DeletableTopicResult::default()
                    .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
                    .with_topic_id(*id)
                    .with_error_code(super::meta_error_code(&e))
                    .with_error_message(Some(str_bytes(e.to_string())))
            })
            .collect(),
    };
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn handle_create_partitions(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let validate_only = request.validate_only;
    // As Kafka: ALTER on the topic, else TOPIC_AUTHORIZATION_FAILED and nothing planned.
    let refused: Vec<bool> = request
        .topics
        .iter()
        .map(|t| ctx.authorize_topic(Operation::Alter, &t.name).is_err())
        .collect();
    // KIP-599: the partitions each topic gains are charged; from v3 a topic is refused while
    // the client's quota is overdrawn.
    let throttled: Vec<bool> = {
        let image = broker.image();
        if validate_only || !mutation_quota_applies(ctx, &image) {
            vec![false; request.topics.len()]
        } else {
            let mutations: Vec<Option<usize>> = request
                .topics
                .iter()
                .zip(&refused)
                .map(|(t, refused)| {
                    let current = image.topic(&t.name).filter(|_| !refused)?.partitions.len();
                    usize::try_from(t.count).ok()?.checked_sub(current)
                })
                .collect();
            charge_mutations(broker, ctx, &image, ctx.version() >= 3, &mutations)
        }
    };
    let refused: Vec<bool> = refused
        .iter()
        .zip(&throttled)
        .map(|(refused, throttled)| *refused || *throttled)
        .collect();
    let plan = |image: &MetadataImage| {
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut working = image.clone();
        let mut seen = HashSet::new();
        for (t, refused) in request.topics.iter().zip(&refused) {
            if *refused {
                results.push(Ok(()));
                continue;
            }
            if !seen.insert(t.name.to_string()) {
                results.push(Err(ControllerError::InvalidRequest(
                    "Duplicate topic in request.".into(),
                )));
                continue;
            }
            let assignments: Option<Vec<Vec<i32>>> = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            match broker.meta.controller().create_partitions(
                &working,
                &t.name,
                t.count,
                assignments.as_deref(),
            ) {
                Ok(new_records) => {
                    working = working.apply(&new_records);
                    records.extend(new_records);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        (records, results)
    };
    let outcome = tokio::task::block_in_place(|| {
        if validate_only {
            Ok(plan(&broker.image()).1)
        } else {
            broker.commit(plan)
        }
    });
    let results = request
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if throttled[i] {
                let (error, message) = quota_exceeded();
                return base.with_error_code(error).with_error_message(message);
            }
            if refused[i] {
                return base.with_error_code(code(ResponseError::TopicAuthorizationFailed));
            }
            match &outcome {
                Ok(results) => match &results[i] {
                    Ok(()) => base,
                    Err(e) => {
                        let (error, message) = controller_error(e);
                        base.with_error_code(error).with_error_message(message)
                    }
                },
                Err(e) => base
                    .with_error_code(super::meta_error_code(e))
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
