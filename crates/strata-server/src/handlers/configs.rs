//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and DescribeLogDirs.
//!
//! Topic configs and the broker's dynamic defaults are metadata records; a change is validated
//! by the controller and committed, after which the replica manager hands the new settings to
//! the affected logs. Static broker properties are read-only at run time, as in Kafka, but for
//! the few Strata reads afresh on every use (`DYNAMIC_BROKER_CONFIGS`, e.g.
//! `transaction.partition.verification.enable`).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::list_config_resources_response;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListConfigResourcesRequest, ListConfigResourcesResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strata_meta::config::{
    broker_config, is_dynamic_broker_config, BrokerKey, ConfigDef, BROKER_CONFIGS, TOPIC_CONFIGS,
};
use strata_meta::controller::ConfigOp;
use strata_meta::{ConfigResource, ControllerError};

use super::{code, controller_error, str_bytes};
use crate::broker::Broker;
use crate::config::ConfigLevel;
use crate::session::{Operation, RequestContext};

/// Kafka's `ConfigResource.Type` codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Maps a request's resource to ours, or the error to return for it.
fn resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<ConfigResource, (i16, String)> {
    match resource_type {
        RESOURCE_TOPIC => Ok(ConfigResource::Topic(name.to_string())),
        RESOURCE_BROKER if name.is_empty() => Ok(ConfigResource::Broker(None)),
        RESOURCE_BROKER => match name.parse::<i32>() {
            Ok(id) if id == broker.config.node_id => Ok(ConfigResource::Broker(Some(id))),
            _ => Err((
                code(ResponseError::InvalidRequest),
                format!(
                    "Unexpected broker id, expected {} or empty string, but received {name}",
                    broker.config.node_id
                ),
            )),
        },
        other => Err((
            code(ResponseError::InvalidRequest),
            format!("Unsupported resource type {other}"),
        )),
    }
}

/// Kafka authorizes a config resource before it looks at it: a topic against the topic's
/// ACLs, the broker (and any other type) against the cluster's.
fn authorize_resource(
    ctx: &RequestContext<'_>,
    resource_type: i8,
    name: &str,
    operation: Operation,
) -> Result<(), ResourceError> {
    let refused = match resource_type {
        RESOURCE_TOPIC => ctx.authorize_topic(operation, name),
        _ => ctx.authorize_cluster(operation),
    };
    refused.map_err(|e| (code(e), e.to_string()))
}

fn describe_entry(
    def: &ConfigDef,
    name: &str,
    value: Option<String>,
    levels: &[ConfigLevel],
    read_only: bool,
    include_synonyms: bool,
    include_docs: bool,
) -> DescribeConfigsResourceResult {
    // Kafka reports a password's value as null at every level (it is "sensitive").
    let sensitive = def.config_type == strata_meta::config::ConfigType::Password;
    let value = value.filter(|_| !sensitive);
    let synonyms = if include_synonyms {
        levels
            .iter()
            .map(|l| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(l.name.clone()))
                    .with_value((!sensitive).then(|| str_bytes(l.value.clone())))
                    .with_source(l.source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name.to_string()))
        .with_value(value.map(str_bytes))
        .with_read_only(read_only)
        .with_config_source(levels[0].source as i8)
        .with_is_sensitive(sensitive)
        .with_synonyms(synonyms)
        .with_config_type(def.config_type.describe_code())
        .with_documentation(include_docs.then(|| str_bytes(def.doc)))
}

pub fn handle_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = ctx.version();
    let image = broker.image();
    let include_synonyms = version >= 1 && request.include_synonyms;
    let include_docs = version >= 3 && request.include_documentation;
    let results = request
        .resources
        .iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
            };
            let authorized = authorize_resource(
                ctx,
                r.resource_type,
                &r.resource_name,
                Operation::DescribeConfigs,
            );
            let resource =
                authorized.and_then(|()| resource(broker, r.resource_type, &r.resource_name));
            let configs = match resource {
                Err((error, message)) => {
                    return base
                        .with_error_code(error)
                        .with_error_message(Some(str_bytes(message)));
                }
                Ok(ConfigResource::Topic(topic)) => {
                    if image.topic(&topic).is_none() {
                        return base
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_error_message(Some(str_bytes(format!(
                                "Topic {topic} does not exist."
                            ))));
                    }
                    TOPIC_CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                        .map(|def| {
                            let levels = broker.config.resolve_topic_config(&image, &topic, def);
                            let value = broker.config.topic_config_value(&image, &topic, def);
                            describe_entry(
                                def,
                                def.name,
                                Some(value),
                                &levels,
                                false,
                                include_synonyms,
                                include_docs,
                            )
                        })
                        .collect()
                }
                Ok(ConfigResource::Broker(_)) => {
                    let mut entries = Vec::new();
                    let synonyms = TOPIC_CONFIGS
                        .iter()
                        .flat_map(|d| d.broker_synonyms.iter().map(move |s| (*s, d, false, false)));
                    let broker_only = BROKER_CONFIGS
                        .iter()
                        .map(|d| (d.name, d, !is_dynamic_broker_config(d.name), true));
                    for (name, def, read_only, only_broker) in broker_only.chain(synonyms) {
                        if !wanted(name) {
                            continue;
                        }
                        let default = if only_broker || def.broker_synonyms.first() == Some(&name) {
                            def.default
                        } else {
                            ""
                        };
                        let levels = broker.config.resolve_broker_config(&image, name, default);
                        let value = Some(levels[0].value.clone()).filter(|v| !v.is_empty());
                        entries.push(describe_entry(
                            def,
                            name,
                            value,
                            &levels,
                            read_only,
                            include_synonyms,
                            include_docs,
                        ));
                    }
                    entries
                }
            };
            base.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// One resource's requested changes, decoded from either alter API.
struct AlterTarget {
    resource_type: i8,
    resource_name: StrBytes,
    ops: Result<Vec<ConfigOp>, ResourceError>,
}

/// A per-resource failure: Kafka error code and message.
type ResourceError = (i16, String);

/// Validates and commits config changes; returns (error code, message) per resource.
async fn alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    targets: Vec<AlterTarget>,
    validate_only: bool,
    replace_all: bool,
) -> Vec<(i16, Option<String>)> {
    let mut seen = HashSet::new();
    let planned: Vec<Result<(ConfigResource, Vec<ConfigOp>), ResourceError>> = targets
        .iter()
        .map(|t| {
            if !seen.insert((t.resource_type, t.resource_name.to_string())) {
                return Err((
                    code(ResponseError::InvalidRequest),
                    "Duplicate resource in request".into(),
                ));
            }
            authorize_resource(
                ctx,
                t.resource_type,
                &t.resource_name,
                Operation::AlterConfigs,
            )?;
            let ops = t.ops.clone()?;
            let resource = resource(broker, t.resource_type, &t.resource_name)?;
            if matches!(resource, ConfigResource::Broker(_)) {
                let static_only: Vec<&str> = ops
                    .iter()
                    .map(op_name)
                    .filter(|n| {
                        !matches!(broker_config(n), Some(BrokerKey::TopicSynonym(_)))
                            && !is_dynamic_broker_config(n)
                    })
                    .collect();
                if !static_only.is_empty() {
                    return Err((
                        code(ResponseError::InvalidRequest),
                        format!(
                            "Cannot update these configs dynamically: {}",
                            static_only.join(", ")
                        ),
                    ));
                }
            }
            Ok((resource, ops))
        })
        .collect();
    let run = |image: &strata_meta::MetadataImage| {
        let mut working = image.clone();
        let mut records = Vec::new();
        let results: Vec<Result<(), ResourceError>> = planned
            .iter()
            .map(|plan| {
                let (resource, ops) = plan.as_ref().map_err(Clone::clone)?;
                let new_records = broker
                    .meta
                    .controller()
                    .alter_configs(&working, resource, ops, replace_all)
                    .map_err(|e: ControllerError| {
                        let (error, message) = controller_error(&e);
                        (error, message.map(|m| m.to_string()).unwrap_or_default())
                    })?;
                working = working.apply(&new_records);
                records.extend(new_records);
                Ok(())
            })
            .collect();
        (records, results)
    };
    let outcome = tokio::task::block_in_place(|| {
        if validate_only {
            Ok(run(&broker.image()).1)
        } else {
            broker.commit(run)
        }
    });
    match outcome {
        Ok(results) => results
            .into_iter()
            .map(|r| match r {
                Ok(()) => (0, None),
                Err((error, message)) => (error, Some(message)),
            })
            .collect(),
        Err(e) => targets
            .iter()
            .map(|_| (super::meta_error_code(&e), Some(e.to_string())))
            .collect(),
    }
}

fn op_name(op: &ConfigOp) -> &str {
    match op {
        ConfigOp::Set(n, _)
        | ConfigOp::Delete(n)
        | ConfigOp::Append(n, _)
        | ConfigOp::Subtract(n, _) => n,
    }
}

pub async fn handle_alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let targets: Vec<AlterTarget> = request
        .resources
        .iter()
        .map(|r| AlterTarget {
            resource_type: r.resource_type,
            resource_name: r.resource_name.clone(),
            ops: Ok(r
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => ConfigOp::Set(c.name.to_string(), v.to_string()),
                    None => ConfigOp::Delete(c.name.to_string()),
                })
                .collect()),
        })
        .collect();
    let results = alter(broker, ctx, targets, request.validate_only, true).await;
    AlterConfigsResponse::default().with_responses(
        request
            .resources
            .iter()
            .zip(results)
            .map(|(r, (error, message))| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_error_code(error)
                    .with_error_message(message.map(str_bytes))
            })
            .collect(),
    )
}

pub async fn handle_incremental_alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let targets: Vec<AlterTarget> = request
        .resources
        .iter()
        .map(|r| AlterTarget {
            resource_type: r.resource_type,
            resource_name: r.resource_name.clone(),
            ops: r
                .configs
                .iter()
                .map(|c| {
                    let name = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    match (c.config_operation, value) {
                        (0, Some(v)) => Ok(ConfigOp::Set(name, v)),
                        (1, _) => Ok(ConfigOp::Delete(name)),
                        (2, Some(v)) => Ok(ConfigOp::Append(name, v)),
                        (3, Some(v)) => Ok(ConfigOp::Subtract(name, v)),
                        (0 | 2 | 3, None) => Err((
                            code(ResponseError::InvalidRequest),
                            format!("Null value not supported for : {name}"),
                        )),
                        (op, _) => Err((
                            code(ResponseError::InvalidRequest),
                            format!("Unknown config operation {op}"),
                        )),
                    }
                })
                .collect(),
        })
        .collect();
    let results = alter(broker, ctx, targets, request.validate_only, false).await;
    IncrementalAlterConfigsResponse::default().with_responses(
        request
            .resources
            .iter()
            .zip(results)
            .map(|(r, (error, message))| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_error_code(error)
                    .with_error_message(message.map(str_bytes))
            })
            .collect(),
    )
}

/// DescribeLogDirs: the one log directory (`<data dir>/logs`), the size of each partition
/// hosted here, and (v4+) the file system's total and usable bytes. Runs on a blocking thread:
/// it takes each partition's log lock and asks the file system.
pub async fn handle_describe_log_dirs(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let version = ctx.version();
    // As Kafka: DESCRIBE on the cluster, else no directories (and, v3+, the error).
    if let Err(e) = ctx.authorize_cluster(Operation::Describe) {
        let refused = DescribeLogDirsResponse::default();
        return if version >= 3 {
            refused.with_error_code(code(e))
        } else {
            refused
        };
    }
    let broker = broker.clone();
    crate::task::blocking(move || describe_log_dirs(&broker, &request, version)).await
}

fn describe_log_dirs(
    broker: &Broker,
    request: &DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let mut partitions = broker.replicas.all();
    partitions.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    let wanted = |topic: &str, index: i32| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| t.topic.as_str() == topic && t.partitions.contains(&index)),
    };
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for p in partitions.iter().filter(|p| wanted(&p.topic, p.index)) {
        let size_bytes = p.log().snapshot().size_bytes as i64;
        let entry = DescribeLogDirsPartition::default()
            .with_partition_index(p.index)
            .with_partition_size(size_bytes)
            .with_offset_lag(0);
        match topics.last_mut() {
            Some(t) if t.name.as_str() == p.topic => t.partitions.push(entry),
            _ => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(p.topic.clone())))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let log_dir = broker.config.data_dir.join("logs");
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(log_dir.display().to_string()))
        .with_topics(topics);
    // The fields exist from v4 (KIP-827); older versions must leave them at -1.
    if version >= 4 {
        let (total_bytes, usable_bytes) = disk_space(&log_dir);
        result = result
            .with_total_bytes(total_bytes)
            .with_usable_bytes(usable_bytes);
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Total and usable bytes of the file system holding `dir`, as Kafka's `FileStore`
/// `getTotalSpace` / `getUsableSpace` count them: all blocks, and the blocks available to an
/// unprivileged user, times the fragment size. (-1, -1), Kafka's "unknown", when the file
/// system cannot be asked; a size past `i64::MAX` is `i64::MAX`, as Kafka caps it.
fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(fs) => {
            let bytes =
                |blocks: u64| i64::try_from(blocks.saturating_mul(fs.f_frsize)).unwrap_or(i64::MAX);
            (bytes(fs.f_blocks), bytes(fs.f_bavail))
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the log directory's disk space");
            (-1, -1)
        }
    }
}

/// Kafka's `ConfigResource.Type` codes that ListConfigResources v1 knows (KIP-1142); v0 (the
/// former ListClientMetricsResources, KIP-714) lists client-metrics resources only.
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_CLIENT_METRICS: i8 = 16;
const RESOURCE_GROUP: i8 = 32;
const LIST_CONFIG_RESOURCE_TYPES: [i8; 5] = [
    RESOURCE_TOPIC,
    RESOURCE_BROKER,
    RESOURCE_BROKER_LOGGER,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_GROUP,
];

/// ListConfigResources (74): the resources DescribeConfigs can describe, by type. An empty
/// type list means every type the version knows; a type it does not know is UNSUPPORTED_VERSION,
/// as in Kafka. Strata has topic and broker configs; it has no broker loggers, client-metrics
/// subscriptions or group configs, so those types list nothing.
pub fn handle_list_config_resources(
    broker: &Broker,
    ctx: &RequestContext<'_>,
    request: &ListConfigResourcesRequest,
) -> ListConfigResourcesResponse {
    let version = ctx.version();
    if let Err(e) = ctx.authorize_cluster(Operation::DescribeConfigs) {
        return ListConfigResourcesResponse::default().with_error_code(code(e));
    }
    let supported: &[i8] = if version == 0 {
        &[RESOURCE_CLIENT_METRICS]
    } else {
        &LIST_CONFIG_RESOURCE_TYPES
    };
    let wanted: Vec<i8> = if version == 0 || request.resource_types.is_empty() {
        supported.to_vec()
    } else {
        request.resource_types.clone()
    };
    if wanted.iter().any(|t| !supported.contains(t)) {
        return ListConfigResourcesResponse::default()
            .with_error_code(code(ResponseError::UnsupportedVersion));
    }
    let image = broker.image();
    let listed = |name: String, resource_type: i8| {
        list_config_resources_response::ConfigResource::default()
            .with_resource_name(str_bytes(name))
            .with_resource_type(resource_type)
    };
    let mut resources = Vec::new();
    if wanted.contains(&RESOURCE_BROKER) {
        resources.extend(
            image
                .brokers()
                .map(|b| listed(b.broker_id.to_string(), RESOURCE_BROKER)),
        );
    }
    if wanted.contains(&RESOURCE_TOPIC) {
        resources.extend(
            image
                .topics()
                .map(|t| listed(t.name.clone(), RESOURCE_TOPIC)),
        );
    }
    ListConfigResourcesResponse::default().with_config_resources(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_is_the_file_system_s_or_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (total_bytes, usable_bytes) = disk_space(dir.path());
        assert!(total_bytes > 0, "{total_bytes}");
        assert!(
            (0..=total_bytes).contains(&usable_bytes),
            "{usable_bytes} of {total_bytes}"
        );
        assert_eq!(disk_space(&dir.path().join("missing")), (-1, -1));
    }
}
