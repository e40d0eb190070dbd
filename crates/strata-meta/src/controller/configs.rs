//! Configs (Kafka's `ConfigurationControlManager`): topic and broker config changes, checked
//! against the definitions of [`crate::config`] as a whole per resource.

use std::collections::BTreeMap;

use super::ControllerError;
use crate::config::{broker_config, check_topic_config_set, topic_config};
use crate::image::MetadataImage;
use crate::records::{ConfigResource, MetadataRecord};

/// One config change of AlterConfigs / IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Config changes as records.
#[derive(Debug)]
pub struct ConfigControl {
    /// This node: a broker config change may name it before it has registered.
    node_id: i32,
}

impl ConfigControl {
    pub fn new(node_id: i32) -> Self {
        Self { node_id }
    }

    /// Validates topic configs of a create request or an alter.
    pub fn validate_topic_configs<'a>(
        configs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<(), ControllerError> {
        let mut set = BTreeMap::new();
        for (name, value) in configs {
            let Some(def) = topic_config(name) else {
                return Err(ControllerError::InvalidConfig(format!(
                    "Unknown topic config name: {name}"
                )));
            };
            let Some(value) = value else {
                return Err(ControllerError::InvalidConfig(format!(
                    "Null value not supported for topic configs: {name}"
                )));
            };
            def.validate(value)
                .map_err(|e| ControllerError::InvalidConfig(e.0))?;
            set.insert(name.to_string(), value.to_string());
        }
        check_topic_config_set(&set).map_err(|e| ControllerError::InvalidConfig(e.0))
    }

    /// The records of a new topic's configs, once they are valid together.
    pub fn new_topic_configs(
        topic: &str,
        configs: &[(String, Option<String>)],
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        Self::validate_topic_configs(configs.iter().map(|(k, v)| (k.as_str(), v.as_deref())))?;
        Ok(configs
            .iter()
            .map(|(name, value)| MetadataRecord::Config {
                resource: ConfigResource::Topic(topic.to_string()),
                name: name.clone(),
                value: value.clone(),
            })
            .collect())
    }

    /// Records for config changes on one resource, validated as a whole: either every change
    /// is valid or none is written.
    pub fn alter_configs(
        &self,
        image: &MetadataImage,
        resource: &ConfigResource,
        ops: &[ConfigOp],
        replace_all: bool,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let current = image.configs(resource).cloned().unwrap_or_default();
        match resource {
            ConfigResource::Topic(name) => {
                if image.topic(name).is_none() {
                    return Err(ControllerError::UnknownTopicOrPartition);
                }
            }
            ConfigResource::Broker(Some(id))
                if *id != self.node_id && image.broker(*id).is_none() =>
            {
                return Err(ControllerError::InvalidRequest(format!(
                    "Unexpected broker id, expected {} but received {id}",
                    self.node_id
                )));
            }
            ConfigResource::Broker(_) => {}
        }
        let mut next = if replace_all {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for op in ops {
            let name = match op {
                ConfigOp::Set(n, _)
                | ConfigOp::Delete(n)
                | ConfigOp::Append(n, _)
                | ConfigOp::Subtract(n, _) => n,
            };
            let def = match resource {
                ConfigResource::Topic(_) => topic_config(name),
                ConfigResource::Broker(_) => broker_config(name).map(|k| k.def()),
            }
            .ok_or_else(|| {
                ControllerError::InvalidConfig(format!("Unknown config name: {name}"))
            })?;
            match op {
                ConfigOp::Set(n, v) => {
                    next.insert(n.clone(), v.clone());
                }
                ConfigOp::Delete(n) => {
                    next.remove(n);
                }
                ConfigOp::Append(n, v) | ConfigOp::Subtract(n, v) => {
                    if def.config_type != crate::config::ConfigType::List {
                        return Err(ControllerError::InvalidConfig(format!(
                            "Config value append/subtract is not allowed for config key {n} which is not a list"
                        )));
                    }
                    let base = next
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| def.default.to_string());
                    let mut items: Vec<String> = base
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if matches!(op, ConfigOp::Append(..)) {
                            if !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            }
                        } else {
                            items.retain(|i| i != item);
                        }
                    }
                    next.insert(n.clone(), items.join(","));
                }
            }
        }
        for (name, value) in &next {
            if current.get(name) == Some(value) {
                continue;
            }
            let checked = match resource {
                ConfigResource::Topic(_) => topic_config(name).map(|d| d.validate(value)),
                ConfigResource::Broker(_) => broker_config(name).map(|k| {
                    let converted = crate::config::broker_value_for_topic(name, value)
                        .unwrap_or_else(|| value.clone());
                    k.def().validate(&converted)
                }),
            };
            if let Some(Err(e)) = checked {
                return Err(ControllerError::InvalidConfig(e.0));
            }
        }
        if let ConfigResource::Topic(_) = resource {
            check_topic_config_set(&next).map_err(|e| ControllerError::InvalidConfig(e.0))?;
            // Kafka refuses this too (without remote.log.delete.on.disable, which Strata does
            // not have): the tier's data would stay, unreachable and never deleted.
            let enabled = |c: &BTreeMap<String, String>| {
                c.get("remote.storage.enable")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            };
            if enabled(&current) && !enabled(&next) {
                return Err(ControllerError::InvalidConfig(
                    "It is invalid to disable remote storage without deleting remote data: delete and re-create the topic instead".into(),
                ));
            }
        }
        let mut records = Vec::new();
        for (name, value) in &next {
            if current.get(name) != Some(value) {
                records.push(MetadataRecord::Config {
                    resource: resource.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        for name in current.keys().filter(|n| !next.contains_key(*n)) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                name: name.clone(),
                value: None,
            });
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{create, single, spec};
    use crate::controller::Controller;

    #[test]
    fn tiered_config_rules_and_deleted_topics_are_remembered() {
        let image = single();
        let mut compact_remote = spec("t", 1);
        compact_remote.configs = vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("remote.storage.enable".into(), Some("true".into())),
        ];
        assert!(matches!(
            create(&image, &compact_remote),
            Err(ControllerError::InvalidConfig(_))
        ));
        let mut local_over_total = spec("t", 1);
        local_over_total.configs = vec![
            ("retention.ms".into(), Some("1000".into())),
            ("local.retention.ms".into(), Some("2000".into())),
        ];
        assert!(matches!(
            create(&image, &local_over_total),
            Err(ControllerError::InvalidConfig(_))
        ));
        local_over_total.configs[1].1 = Some("500".into());
        local_over_total
            .configs
            .push(("remote.storage.enable".into(), Some("true".into())));
        let image = create(&image, &local_over_total).unwrap();
        let id = image.topic("t").unwrap().topic_id;
        // A tiered topic stays tiered: turning it off, by value or by deleting the key, and
        // switching it to compaction are refused.
        let topic = ConfigResource::Topic("t".into());
        for ops in [
            vec![ConfigOp::Set(
                "remote.storage.enable".into(),
                "false".into(),
            )],
            vec![ConfigOp::Delete("remote.storage.enable".into())],
            vec![ConfigOp::Set("cleanup.policy".into(), "compact".into())],
        ] {
            assert!(matches!(
                Controller::new(1).alter_configs(&image, &topic, &ops, false),
                Err(ControllerError::InvalidConfig(_))
            ));
        }
        assert!(!image.was_deleted(&id));
        let records = Controller::new(1).delete_topic(&image, id).unwrap();
        let image = image.apply(&records);
        assert!(image.topic_by_id(&id).is_none());
        assert!(image.was_deleted(&id));
        assert_eq!(image.deleted_topic_count(), 1);
    }

    #[test]
    fn config_changes_are_validated_together() {
        let controller = Controller::new(1);
        let image = create(&single(), &spec("t", 1)).unwrap();
        let topic = ConfigResource::Topic("t".into());
        let ops = [
            ConfigOp::Set("retention.ms".into(), "1000".into()),
            ConfigOp::Append("cleanup.policy".into(), "compact".into()),
        ];
        let image = image.apply(
            &controller
                .alter_configs(&image, &topic, &ops, false)
                .unwrap(),
        );
        assert_eq!(image.config(&topic, "retention.ms"), Some("1000"));
        assert_eq!(
            image.config(&topic, "cleanup.policy"),
            Some("delete,compact")
        );
        let bad = [
            ConfigOp::Set("retention.ms".into(), "5".into()),
            ConfigOp::Set("segment.bytes".into(), "x".into()),
        ];
        assert!(controller
            .alter_configs(&image, &topic, &bad, false)
            .is_err());
        let delete = [ConfigOp::Delete("retention.ms".into())];
        let image = image.apply(
            &controller
                .alter_configs(&image, &topic, &delete, false)
                .unwrap(),
        );
        assert_eq!(image.config(&topic, "retention.ms"), None);
        let unknown = [ConfigOp::Set("nope".into(), "1".into())];
        assert!(controller
            .alter_configs(&image, &topic, &unknown, false)
            .is_err());
    }
}
