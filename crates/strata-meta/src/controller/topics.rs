//! Topics (the topic half of Kafka's `ReplicationControlManager`): CreateTopics with Kafka's
//! rules for names, counts and manual assignments, DeleteTopics and CreatePartitions.
//!
//! Where new replicas go is [`BrokerControl`]'s placement; a new topic's configs are checked
//! and written by [`ConfigControl`].

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::brokers::BrokerControl;
use super::configs::ConfigControl;
use super::ControllerError;
use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

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

/// Topics and their partition counts as records.
#[derive(Debug, Default)]
pub struct TopicControl;

impl TopicControl {
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
        let brokers = BrokerControl::usable_brokers(image);
        let topic_id = Uuid::new_v4();
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
            BrokerControl::place(image, topic_id, 0, partitions, replication_factor as usize)
        } else {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            self.validate_assignments(&spec.assignments, 0, &brokers)?
        };
        let configs = ConfigControl::new_topic_configs(&spec.name, &spec.configs)?;
        let mut records = vec![MetadataRecord::Topic {
            name: spec.name.clone(),
            topic_id,
        }];
        records.extend(partition_records(topic_id, 0, &assignments));
        records.extend(configs);
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
        let brokers = BrokerControl::usable_brokers(image);
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
                // The first partition's replication factor; while it is being reassigned,
                // that of its target (its replica set holds the leaving replicas too).
                let rf = topic
                    .partitions
                    .first()
                    .map_or(1, |p| p.replicas.len() - p.removing_replicas.len());
                if rf > brokers.len() {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.",
                        brokers.len()
                    )));
                }
                BrokerControl::place(image, topic.topic_id, current, count - current, rf)
            }
        };
        Ok(partition_records(topic.topic_id, current, &new_assignments).collect())
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
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{create, single, spec};
    use crate::controller::Controller;

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
        let image = single();
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
    fn partition_records_carry_the_isr_and_old_ones_still_load() {
        let image = create(&single(), &spec("t", 2)).unwrap();
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
        let image = create(&single(), &spec("t", 2)).unwrap();
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
}
