//! The metadata image: an immutable snapshot of cluster metadata, the fold of all records.
//!
//! Request handlers read an `Arc<MetadataImage>` without locks; a commit builds the next image
//! and swaps it in. Invariants: topic names and ids map one-to-one; a topic's partitions are
//! numbered `0..n` without gaps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use crate::records::{ConfigResource, MetadataRecord};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    /// In-sync replicas, in replica order; never empty.
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

impl PartitionImage {
    /// The partition as the controller's change rules see it.
    pub fn registration(&self) -> crate::partition_change::PartitionRegistration {
        crate::partition_change::PartitionRegistration {
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    /// Indexed by partition id.
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    /// Kafka's internal topics start with `__` (e.g. `__consumer_offsets`).
    pub fn is_internal(&self) -> bool {
        self.name == "__consumer_offsets" || self.name == "__transaction_state"
    }
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Number of batches applied: the metadata offset this image reflects.
    pub offset: u64,
    topics: BTreeMap<String, Arc<TopicImage>>,
    topic_names_by_id: HashMap<Uuid, String>,
    configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    /// Producer ids below this have been allocated.
    pub next_producer_id_block: i64,
    /// Ids of topics deleted so far. Data elsewhere (the tier) is deleted only for these: a
    /// topic id the image has never heard of may mean a lost metadata log, not a deletion.
    /// Shared between images; copied only when a topic is deleted.
    deleted_topics: Arc<BTreeSet<Uuid>>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_names_by_id
            .get(topic_id)
            .and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topics.values()
    }

    /// Whether a topic with this id existed and was deleted.
    pub fn was_deleted(&self, topic_id: &Uuid) -> bool {
        self.deleted_topics.contains(topic_id)
    }

    pub fn deleted_topic_count(&self) -> usize {
        self.deleted_topics.len()
    }

    /// Explicitly set configs of a resource (no defaults).
    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }

    pub fn config(&self, resource: &ConfigResource, name: &str) -> Option<&str> {
        self.configs
            .get(resource)
            .and_then(|c| c.get(name))
            .map(String::as_str)
    }

    /// The image after `batch`. Records are validated by the controller before they are
    /// written; a record that does not fit the image here is a bug and panics rather than
    /// silently diverging from the log.
    pub fn apply(&self, batch: &[MetadataRecord]) -> MetadataImage {
        let mut next = self.clone();
        for record in batch {
            next.apply_record(record);
        }
        next.offset += 1;
        next
    }

    fn apply_record(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic { name, topic_id } => {
                assert!(
                    !self.topics.contains_key(name),
                    "metadata log creates existing topic {name}"
                );
                self.topic_names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: Vec::new(),
                    }),
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch,
                isr,
                partition_epoch,
            } => {
                let name = self
                    .topic_names_by_id
                    .get(topic_id)
                    .unwrap_or_else(|| panic!("partition record for unknown topic id {topic_id}"));
                let topic = Arc::make_mut(self.topics.get_mut(name).expect("id map in sync"));
                let image = PartitionImage {
                    partition: *partition,
                    replicas: replicas.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    isr: if isr.is_empty() {
                        replicas.clone()
                    } else {
                        isr.clone()
                    },
                    partition_epoch: *partition_epoch,
                };
                let index = *partition as usize;
                assert!(
                    index <= topic.partitions.len(),
                    "partition {partition} of {name} leaves a gap"
                );
                if index == topic.partitions.len() {
                    topic.partitions.push(image);
                } else {
                    topic.partitions[index] = image;
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = self
                    .topic_names_by_id
                    .remove(topic_id)
                    .unwrap_or_else(|| panic!("removal of unknown topic id {topic_id}"));
                Arc::make_mut(&mut self.deleted_topics).insert(*topic_id);
                self.topics.remove(&name);
                self.configs.remove(&ConfigResource::Topic(name));
            }
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                let entries = self.configs.entry(resource.clone()).or_default();
                match value {
                    Some(v) => {
                        entries.insert(name.clone(), v.clone());
                    }
                    None => {
                        entries.remove(name);
                    }
                }
                if entries.is_empty() {
                    self.configs.remove(resource);
                }
            }
            MetadataRecord::ProducerIds { next_block_start } => {
                assert!(
                    *next_block_start > self.next_producer_id_block,
                    "producer id blocks only move forward"
                );
                self.next_producer_id_block = *next_block_start;
            }
        }
    }
}
