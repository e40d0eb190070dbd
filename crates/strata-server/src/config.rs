//! Broker configuration and the resolution of effective topic configs.
//!
//! Static settings come from flags, `server.properties` and `--override`; dynamic ones from
//! config records in the metadata image. [`ServerConfig::resolve_topic_config`] walks Kafka's
//! precedence (topic override, dynamic per-broker, dynamic cluster default, static broker,
//! built-in default) and returns every level that is set, which is also what DescribeConfigs
//! reports as synonyms.

use std::net::SocketAddr;
use std::path::PathBuf;

use strata_log::{LogConfig, TimestampType};
use strata_meta::config::{
    broker_value_for_topic, props, BrokerProperties, BrokerProperty, BrokerValue, ConfigDef,
    TOPIC_CONFIGS,
};
use strata_meta::{ConfigResource, MetadataImage};

/// Kafka's DescribeConfigs `ConfigSource` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// One level at which a config is set: the key as named at that level, its value, its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLevel {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub props: BrokerProperties,
    /// `--object-store`: the tier's URL; `None` = a folder under the data directory.
    pub object_store: Option<String>,
    /// `--object-store-option KEY=VALUE`: store settings (endpoint, region, credentials),
    /// over the ones in the environment.
    pub object_store_options: Vec<(String, String)>,
    /// `--broker-rack`: where replicas are spread across (Kafka's `broker.rack`).
    pub rack: Option<String>,
    /// `--controller-quorum-voters` and friends: `None` is a single node with its own file
    /// metadata log.
    pub quorum: Option<QuorumSettings>,
}

/// How this node takes part in a cluster's metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSettings {
    /// Node id -> "host:port" of every voter's controller listener.
    pub voters: std::collections::BTreeMap<i32, String>,
    /// Where this node's controller listener binds (Raft and broker-to-controller RPCs).
    pub controller_listen: SocketAddr,
    /// The address others reach this node's controller listener at.
    pub controller_advertised: String,
    /// `--process-roles`: whether this node serves Kafka clients and hosts partitions.
    pub broker: bool,
    /// `--process-roles`: whether this node votes and may become the active controller.
    pub controller: bool,
}

impl ServerConfig {
    /// A broker-only property's value: the static setting, else its default. Keys are the
    /// typed constants of [`strata_meta::config::props`], so a misspelt name does not compile;
    /// values were validated at start-up, so the `T::default()` fallback is not reached.
    pub fn broker_value<T: BrokerValue>(&self, key: BrokerProperty<T>) -> T {
        self.props.broker_value(key).unwrap_or_default()
    }

    /// A broker-only property that can change at run time
    /// ([`strata_meta::config::DYNAMIC_BROKER_CONFIGS`]): this broker's dynamic value, else the
    /// cluster-wide dynamic default, else the static setting or the built-in default (Kafka's
    /// precedence). Values are compared without case, as Kafka's booleans are.
    pub fn dynamic_broker_value<T: BrokerValue>(
        &self,
        image: &MetadataImage,
        key: BrokerProperty<T>,
    ) -> T {
        let name = key.name();
        debug_assert!(strata_meta::config::is_dynamic_broker_config(name));
        for resource in [
            ConfigResource::Broker(Some(self.node_id)),
            ConfigResource::Broker(None),
        ] {
            if let Some(v) = image.config(&resource, name) {
                if let Ok(value) = v.trim().to_ascii_lowercase().parse() {
                    return value;
                }
            }
        }
        self.props
            .get(name)
            .and_then(|v| v.trim().to_ascii_lowercase().parse().ok())
            .unwrap_or_else(|| self.broker_value(key))
    }

    /// `transaction.partition.verification.enable` as it is now (dynamic, KIP-890): whether
    /// partition leaders check transactional writes of protocol v1 clients with the
    /// coordinator.
    pub fn transaction_verification_enabled(&self, image: &MetadataImage) -> bool {
        self.dynamic_broker_value(image, props::TRANSACTION_PARTITION_VERIFICATION_ENABLE)
    }

    /// `unclean.leader.election.enable` per topic as the controller applies it, for the
    /// controller's elections ([`strata_meta::UncleanElection`]): the topic's override, else
    /// this broker's dynamic or static setting, else false (Kafka's precedence).
    pub fn unclean_leader_election<'a>(
        &'a self,
        image: &'a MetadataImage,
    ) -> impl Fn(&str) -> bool + 'a {
        move |topic| {
            strata_meta::config::topic_config("unclean.leader.election.enable").is_some_and(|def| {
                self.topic_config_value(image, topic, def)
                    .trim()
                    .eq_ignore_ascii_case("true")
            })
        }
    }

    /// All levels at which topic config `def` is set for `topic`, most specific first; the first
    /// is the effective value. Always ends with the built-in default.
    pub fn resolve_topic_config(
        &self,
        image: &MetadataImage,
        topic: &str,
        def: &ConfigDef,
    ) -> Vec<ConfigLevel> {
        let mut levels = Vec::new();
        if let Some(v) = image.config(&ConfigResource::Topic(topic.to_string()), def.name) {
            levels.push(ConfigLevel {
                name: def.name.to_string(),
                value: v.to_string(),
                source: ConfigSource::TopicConfig,
            });
        }
        self.resolve_broker_levels(image, def, &mut levels);
        levels
    }

    /// The broker-side levels of a topic config (its synonyms), then the default.
    fn resolve_broker_levels(
        &self,
        image: &MetadataImage,
        def: &ConfigDef,
        levels: &mut Vec<ConfigLevel>,
    ) {
        let dynamic = [
            (
                ConfigResource::Broker(Some(self.node_id)),
                ConfigSource::DynamicBrokerConfig,
            ),
            (
                ConfigResource::Broker(None),
                ConfigSource::DynamicDefaultBrokerConfig,
            ),
        ];
        for (resource, source) in dynamic {
            for synonym in def.broker_synonyms {
                if let Some(v) = image.config(&resource, synonym) {
                    levels.push(level(synonym, v, source));
                }
            }
        }
        for synonym in def.broker_synonyms {
            if let Some(v) = self.props.get(synonym) {
                levels.push(level(synonym, v, ConfigSource::StaticBrokerConfig));
            }
        }
        levels.push(ConfigLevel {
            name: def.name.to_string(),
            value: def.default.to_string(),
            source: ConfigSource::DefaultConfig,
        });
    }

    /// Levels of a broker property (a broker-only key or a topic config's synonym).
    pub fn resolve_broker_config(
        &self,
        image: &MetadataImage,
        name: &str,
        default: &str,
    ) -> Vec<ConfigLevel> {
        let mut levels = Vec::new();
        for (resource, source) in [
            (
                ConfigResource::Broker(Some(self.node_id)),
                ConfigSource::DynamicBrokerConfig,
            ),
            (
                ConfigResource::Broker(None),
                ConfigSource::DynamicDefaultBrokerConfig,
            ),
        ] {
            if let Some(v) = image.config(&resource, name) {
                levels.push(level(name, v, source));
            }
        }
        if let Some(v) = self.props.get(name) {
            levels.push(level(name, v, ConfigSource::StaticBrokerConfig));
        }
        levels.push(level(name, default, ConfigSource::DefaultConfig));
        levels
    }

    /// The effective value of a topic config, converted to the topic config's unit.
    pub fn topic_config_value(
        &self,
        image: &MetadataImage,
        topic: &str,
        def: &ConfigDef,
    ) -> String {
        let levels = self.resolve_topic_config(image, topic, def);
        let top = &levels[0];
        broker_value_for_topic(&top.name, &top.value).unwrap_or_else(|| def.default.to_string())
    }

    /// The log settings of `topic`.
    pub fn log_config(&self, image: &MetadataImage, topic: &str) -> LogConfig {
        let mut config = LogConfig::default();
        for def in TOPIC_CONFIGS {
            let value = self.topic_config_value(image, topic, def);
            let long = || value.parse::<i64>().ok();
            match def.name {
                "segment.bytes" => set(&mut config.segment_bytes, long().map(|v| v as u64)),
                "segment.ms" => set(&mut config.segment_ms, long()),
                "segment.index.bytes" => {
                    set(&mut config.segment_index_bytes, long().map(|v| v as u64))
                }
                "index.interval.bytes" => {
                    set(&mut config.index_interval_bytes, long().map(|v| v as u64))
                }
                "retention.ms" => set(&mut config.retention_ms, long()),
                "retention.bytes" => set(&mut config.retention_bytes, long()),
                "flush.messages" => set(&mut config.flush_messages, long().map(|v| v as u64)),
                "flush.ms" => set(&mut config.flush_ms, long()),
                "max.message.bytes" => set(&mut config.max_message_bytes, long().map(|v| v as u32)),
                "message.timestamp.before.max.ms" => {
                    set(&mut config.timestamp_before_max_ms, long())
                }
                "message.timestamp.after.max.ms" => set(&mut config.timestamp_after_max_ms, long()),
                "file.delete.delay.ms" => set(&mut config.file_delete_delay_ms, long()),
                "delete.retention.ms" => set(&mut config.delete_retention_ms, long()),
                "min.cleanable.dirty.ratio" => {
                    set(&mut config.min_cleanable_dirty_ratio, value.parse().ok())
                }
                "min.compaction.lag.ms" => set(&mut config.min_compaction_lag_ms, long()),
                "max.compaction.lag.ms" => set(&mut config.max_compaction_lag_ms, long()),
                "local.retention.ms" => set(&mut config.local_retention_ms, long()),
                "local.retention.bytes" => set(&mut config.local_retention_bytes, long()),
                "remote.storage.enable" => {
                    config.remote_storage_enable = value.trim().eq_ignore_ascii_case("true")
                }
                "message.timestamp.type" => {
                    config.timestamp_type = if value == "LogAppendTime" {
                        TimestampType::LogAppendTime
                    } else {
                        TimestampType::CreateTime
                    }
                }
                _ => {}
            }
        }
        // Time and size retention belong to the `delete` policy; a compact-only topic keeps
        // its records until compaction removes superseded ones.
        let policy = self.topic_config_value(image, topic, cleanup_policy_def());
        config.compact = policy.split(',').any(|p| p.trim() == "compact");
        // Kafka refuses remote storage for compacted topics; a broker-wide default must not
        // turn it on for them (the internal topics among them).
        config.remote_storage_enable &= !config.compact;
        if !policy.split(',').any(|p| p.trim() == "delete") {
            config.retention_ms = -1;
            config.retention_bytes = -1;
        }
        config
    }
}

fn cleanup_policy_def() -> &'static ConfigDef {
    strata_meta::config::topic_config("cleanup.policy").expect("cleanup.policy is defined")
}

fn level(name: &str, value: &str, source: ConfigSource) -> ConfigLevel {
    ConfigLevel {
        name: name.to_string(),
        value: value.to_string(),
        source,
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}
