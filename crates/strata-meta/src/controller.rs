//! The controller: validates metadata changes against the image and turns them into records,
//! with Kafka's rules and error cases (Kafka's `ReplicationControlManager` and
//! `ConfigurationControlManager`).
//!
//! Sans-IO: every method reads an image and returns records; [`MetadataStore::commit_with`]
//! runs it under the commit lock and makes the records durable.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::config::{broker_config, check_topic_config_set, topic_config};
use crate::image::MetadataImage;
use crate::records::{ConfigResource, MetadataRecord};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A refused change, one variant per Kafka error code the controller can return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    #[error("This server does not host this topic ID.")]
    UnknownTopicId,
    #[error("{0}")]
    TopicDeletionDisabled(String),
}

/// One topic of a CreateTopics request, with Kafka's `-1` meaning "broker default".
#[derive(Debug, Clone, Default)]
pub struct CreateTopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Manual assignment: (partition, broker ids). Exclusive with the two counts above.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

/// A topic the controller created (or would create, for `validate_only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// One config change of AlterConfigs / IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Checks a topic name with Kafka's rules (`org.apache.kafka.common.internals.Topic`).
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::InvalidTopic(
            "Topic name is illegal, it can't be empty".into(),
        ));
    }
    if name == "." || name == ".." {
        return Err(ControllerError::InvalidTopic(
            "Topic name cannot be \".\" or \"..\"".into(),
        ));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Kafka treats `.` and `_` as the same character in metric names, so topics differing only
/// there collide.
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

pub struct Controller {
    pub node_id: i32,
}

impl Controller {
    pub fn new(node_id: i32) -> Self {
        Self { node_id }
    }

    /// The live brokers. A single node for now; the cluster issue fills this from registrations.
    fn brokers(&self) -> BTreeSet<i32> {
        BTreeSet::from([self.node_id])
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

    /// Records for one CreateTopics entry. `defaults` are `num.partitions` and
    /// `default.replication.factor`.
    pub fn create_topic(
        &self,
        image: &MetadataImage,
        spec: &CreateTopicSpec,
        defaults: (i32, i16),
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), ControllerError> {
        validate_topic_name(&spec.name)?;
        if image.topic(&spec.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists(format!(
                "Topic '{}' already exists.",
                spec.name
            )));
        }
        let key = collision_key(&spec.name);
        if let Some(other) = image.topics().find(|t| collision_key(&t.name) == key) {
            return Err(ControllerError::InvalidTopic(format!(
                "Topic '{}' collides with existing topic: {}",
                spec.name, other.name
            )));
        }
        let brokers = self.brokers();
        let assignments: Vec<Vec<i32>> = if spec.assignments.is_empty() {
            let partitions = match spec.num_partitions {
                -1 => defaults.0,
                n if n <= 0 => {
                    return Err(ControllerError::InvalidPartitions(
                        "Number of partitions was set to an invalid non-positive value.".into(),
                    ))
                }
                n => n,
            };
            let replication_factor =
                match spec.replication_factor {
                    -1 => defaults.1,
                    n if n <= 0 => return Err(ControllerError::InvalidReplicationFactor(
                        "Replication factor must be larger than 0, or -1 to use the default value."
                            .into(),
                    )),
                    n => n,
                };
            if replication_factor as usize > brokers.len() {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
                    brokers.len()
                )));
            }
            let ids: Vec<i32> = brokers.iter().copied().collect();
            (0..partitions)
                .map(|p| {
                    (0..replication_factor as usize)
                        .map(|r| ids[(p as usize + r) % ids.len()])
                        .collect()
                })
                .collect()
        } else {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            self.validate_assignments(&spec.assignments, 0, &brokers)?
        };
        Self::validate_topic_configs(spec.configs.iter().map(|(k, v)| (k.as_str(), v.as_deref())))?;
        let topic_id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: spec.name.clone(),
            topic_id,
        }];
        records.extend(partition_records(topic_id, 0, &assignments));
        for (name, value) in &spec.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(spec.name.clone()),
                name: name.clone(),
                value: value.clone(),
            });
        }
        Ok((
            CreatedTopic {
                topic_id,
                num_partitions: assignments.len() as i32,
                replication_factor: assignments.first().map_or(0, |r| r.len() as i16),
            },
            records,
        ))
    }

    /// Checks a manual assignment: partitions numbered consecutively from `first_partition`,
    /// each with distinct, registered brokers and the same replica count.
    fn validate_assignments(
        &self,
        assignments: &[(i32, Vec<i32>)],
        first_partition: i32,
        brokers: &BTreeSet<i32>,
    ) -> Result<Vec<Vec<i32>>, ControllerError> {
        let by_partition: BTreeMap<i32, &Vec<i32>> =
            assignments.iter().map(|(p, r)| (*p, r)).collect();
        let bad = |m: String| Err(ControllerError::InvalidReplicaAssignment(m));
        if by_partition.len() != assignments.len() {
            return bad("Duplicate partition index in the replica assignment.".into());
        }
        let mut out = Vec::with_capacity(assignments.len());
        for (i, (partition, replicas)) in by_partition.into_iter().enumerate() {
            if partition != first_partition + i as i32 {
                return bad(format!(
                    "Partitions should be consecutive and start at {first_partition}, found {partition}."
                ));
            }
            if replicas.is_empty() {
                return bad(format!("The manual partition assignment includes an empty replica list for partition {partition}."));
            }
            let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
            if distinct.len() != replicas.len() {
                return bad(format!(
                    "The manual partition assignment includes the broker {:?} more than once.",
                    replicas
                ));
            }
            if let Some(missing) = distinct.iter().find(|b| !brokers.contains(b)) {
                return bad(format!("The manual partition assignment includes broker {missing}, but no such broker is registered."));
            }
            if let Some(first) = out.first() {
                let first: &Vec<i32> = first;
                if first.len() != replicas.len() {
                    return bad("All partitions in the manual partition assignment must have the same number of replicas.".into());
                }
            }
            out.push(replicas.clone());
        }
        Ok(out)
    }

    pub fn delete_topic(
        &self,
        image: &MetadataImage,
        topic_id: Uuid,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if image.topic_by_id(&topic_id).is_none() {
            return Err(ControllerError::UnknownTopicId);
        }
        Ok(vec![MetadataRecord::RemoveTopic { topic_id }])
    }

    /// CreatePartitions: grows `name` to `count` partitions.
    pub fn create_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image
            .topic(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            )));
        }
        if count == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            )));
        }
        let brokers = self.brokers();
        let new_assignments = match assignments {
            Some(a) => {
                if a.len() as i32 != count - current {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - current,
                        a.len()
                    )));
                }
                let numbered: Vec<(i32, Vec<i32>)> = a
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (current + i as i32, r.clone()))
                    .collect();
                self.validate_assignments(&numbered, current, &brokers)?
            }
            None => {
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
                let ids: Vec<i32> = brokers.iter().copied().collect();
                (current..count)
                    .map(|p| (0..rf).map(|r| ids[(p as usize + r) % ids.len()]).collect())
                    .collect()
            }
        };
        Ok(partition_records(topic.topic_id, current, &new_assignments).collect())
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
            ConfigResource::Broker(Some(id)) if *id != self.node_id => {
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

    /// Reserves the next block of `block_size` producer ids; returns its first id.
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        block_size: i64,
    ) -> (i64, Vec<MetadataRecord>) {
        assert!(block_size > 0);
        let start = image.next_producer_id_block;
        (
            start,
            vec![MetadataRecord::ProducerIds {
                next_block_start: start + block_size,
            }],
        )
    }
}

fn partition_records(
    topic_id: Uuid,
    first_partition: i32,
    assignments: &[Vec<i32>],
) -> impl Iterator<Item = MetadataRecord> + '_ {
    assignments
        .iter()
        .enumerate()
        .map(move |(i, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: first_partition + i as i32,
            replicas: replicas.clone(),
            leader: replicas[0],
            leader_epoch: 0,
            isr: replicas.clone(),
            partition_epoch: 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, partitions: i32) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: -1,
            ..Default::default()
        }
    }

    fn create(
        image: &MetadataImage,
        s: &CreateTopicSpec,
    ) -> Result<MetadataImage, ControllerError> {
        let (_, records) = Controller::new(1).create_topic(image, s, (1, 1))?;
        Ok(image.apply(&records))
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "A.b_c-9", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn create_validates_and_applies() {
        let image = MetadataImage::default();
        let image = create(&image, &spec("a.b", 3)).unwrap();
        let topic = image.topic("a.b").unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(image.topic_by_id(&topic.topic_id).unwrap().name, "a.b");
        assert!(matches!(
            create(&image, &spec("a.b", 1)),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            create(&image, &spec("a_b", 1)),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert!(matches!(
            create(&image, &spec("c", 0)),
            Err(ControllerError::InvalidPartitions(_))
        ));
        let mut rf3 = spec("d", 1);
        rf3.replication_factor = 3;
        assert!(matches!(
            create(&image, &rf3),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        let mut bad_config = spec("e", 1);
        bad_config.configs = vec![("retention.ms".into(), Some("soon".into()))];
        assert!(matches!(
            create(&image, &bad_config),
            Err(ControllerError::InvalidConfig(_))
        ));
        let mut manual = spec("f", -1);
        manual.assignments = vec![(0, vec![1]), (1, vec![1])];
        assert_eq!(
            create(&image, &manual)
                .unwrap()
                .topic("f")
                .unwrap()
                .partitions
                .len(),
            2
        );
        manual.assignments = vec![(0, vec![2])];
        assert!(matches!(
            create(&image, &manual),
            Err(ControllerError::InvalidReplicaAssignment(_))
        ));
    }

    #[test]
    fn tiered_config_rules_and_deleted_topics_are_remembered() {
        let image = MetadataImage::default();
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
    fn partition_records_carry_the_isr_and_old_ones_still_load() {
        let image = create(&MetadataImage::default(), &spec("t", 2)).unwrap();
        let p = &image.topic("t").unwrap().partitions[1];
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1], 0));
        assert_eq!(p.registration().check(), Ok(()));
        // A record written before ISRs were tracked: the ISR is every replica.
        let id = image.topic("t").unwrap().topic_id;
        let old = format!(
            r#"{{"type":"Partition","topic_id":"{id}","partition":1,"replicas":[1],"leader":1,"leader_epoch":3}}"#
        );
        let record: MetadataRecord = serde_json::from_str(&old).unwrap();
        let image = image.apply(&[record]);
        let p = &image.topic("t").unwrap().partitions[1];
        assert_eq!(
            (p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (vec![1], 3, 0)
        );
    }

    #[test]
    fn partitions_grow_only() {
        let controller = Controller::new(1);
        let image = create(&MetadataImage::default(), &spec("t", 2)).unwrap();
        assert!(controller.create_partitions(&image, "t", 1, None).is_err());
        assert!(controller.create_partitions(&image, "t", 2, None).is_err());
        let records = controller.create_partitions(&image, "t", 4, None).unwrap();
        assert_eq!(
            image.apply(&records).topic("t").unwrap().partitions.len(),
            4
        );
        assert_eq!(
            controller.create_partitions(&image, "nope", 4, None),
            Err(ControllerError::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn config_changes_are_validated_together() {
        let controller = Controller::new(1);
        let image = create(&MetadataImage::default(), &spec("t", 1)).unwrap();
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
