//! The metadata image: an immutable snapshot of cluster metadata, the fold of all records.
//!
//! Request handlers read an `Arc<MetadataImage>` without locks; a commit builds the next image
//! and swaps it in. Invariants: topic names and ids map one-to-one; a topic's partitions are
//! numbered `0..n` without gaps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::acl::{AclBinding, AclSet};
use crate::client_quota::{QuotaEntity, Quotas};
use crate::features::VersionRange;
use crate::records::{ConfigResource, MetadataRecord};
use crate::scram::{ScramCredential, ScramMechanism};
use crate::tenant::{Tenant, TenantMember};

/// A record that does not fit the image it is applied to. The controller never builds one;
/// seeing it means a bug, or a batch built from another image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("creates topic {0}, which exists")]
    TopicExists(String),
    #[error("names unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("partition {partition} of {topic} leaves a gap")]
    PartitionGap { topic: String, partition: i32 },
    #[error("moves the producer id block back from {current} to {next}")]
    ProducerIdsBackward { current: i64, next: i64 },
    #[error("fences or unfences unregistered broker {0}")]
    UnregisteredBroker(i32),
    #[error("fences or unfences broker {broker_id} in epoch {record}, registered in {registered}")]
    BrokerEpoch {
        broker_id: i32,
        registered: i64,
        record: i64,
    },
    #[error("writes the cluster id a second time")]
    ClusterIdRewritten,
    #[error("removes SCRAM credential {mechanism} of {name}, which does not exist")]
    UnknownScramCredential {
        name: String,
        mechanism: ScramMechanism,
    },
    #[error("creates ACL {0}, which exists")]
    AclExists(Uuid),
    #[error("removes unknown ACL {0}")]
    UnknownAcl(Uuid),
    #[error("names tenant {name}, which tenant {other} has")]
    TenantNameTaken { name: String, other: String },
    #[error("names unknown tenant {0}")]
    UnknownTenant(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    /// In-sync replicas, in replica order; never empty.
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
    /// An ongoing reassignment (KIP-455): the replicas it adds and those it removes, both
    /// also in `replicas` (which lists the target first, then the removed ones). Empty when
    /// none is in progress; absent from snapshots taken before reassignments existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
}

impl PartitionImage {
    /// The partition as the controller's change rules see it.
    pub fn registration(&self) -> crate::partition_change::PartitionRegistration {
        crate::partition_change::PartitionRegistration {
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            adding_replicas: self.adding_replicas.clone(),
            removing_replicas: self.removing_replicas.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A registered broker (Kafka's `BrokerRegistration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub incarnation_id: Uuid,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is in no ISR it could be elected from.
    pub fenced: bool,
    /// The feature levels it can serve; empty for software older than feature versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub supported_features: BTreeMap<String, VersionRange>,
    /// Every listener's advertised endpoint (Kafka's `BrokerRegistration.listeners`). `host`
    /// and `port` above are the inter-broker listener's, which other brokers connect to.
    /// Empty for a registration written before named listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<BrokerEndpoint>,
}

/// One listener's advertised endpoint in a broker's registration (Kafka's `Endpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// The listener name, e.g. `PLAINTEXT`, `SSL`, `INTERNAL`.
    pub name: String,
    pub host: String,
    pub port: i32,
    /// Kafka's `SecurityProtocol` name: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    pub security_protocol: String,
}

impl BrokerRegistration {
    /// The broker's host and port on the listener `name`, which is what a client that came in
    /// on that listener must be told (Kafka's `MetadataCache.getAliveBrokerNode(id,
    /// listenerName)`); `None` when the broker has no such listener. A registration without
    /// named listeners had one, which served every client.
    pub fn endpoint(&self, name: &str) -> Option<(&str, i32)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// The image is serialised (as a Raft snapshot) through this flat form, because JSON maps
/// need string keys.
#[derive(Serialize, Deserialize)]
struct ImageSnapshot {
    offset: u64,
    topics: Vec<TopicImage>,
    configs: Vec<(ConfigResource, BTreeMap<String, String>)>,
    next_producer_id_block: i64,
    deleted_topics: Vec<Uuid>,
    #[serde(default)]
    brokers: Vec<BrokerRegistration>,
    #[serde(default)]
    cluster_id: Option<String>,
    #[serde(default)]
    features: BTreeMap<String, i16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scram_credentials: Vec<(String, ScramMechanism, ScramCredential)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    acls: Vec<(Uuid, AclBinding)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    client_quotas: Vec<(QuotaEntity, Quotas)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tenants: Vec<Tenant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tenant_users: Vec<(String, TenantMember)>,
}

impl From<MetadataImage> for ImageSnapshot {
    fn from(image: MetadataImage) -> Self {
        ImageSnapshot {
            offset: image.offset,
            topics: image.topics.values().map(|t| (**t).clone()).collect(),
            configs: image.configs.into_iter().collect(),
            next_producer_id_block: image.next_producer_id_block,
            deleted_topics: image.deleted_topics.iter().copied().collect(),
            brokers: image.brokers.into_values().collect(),
            cluster_id: image.cluster_id,
            features: image.features,
            scram_credentials: image
                .scram_credentials
                .iter()
                .flat_map(|(name, by_mechanism)| {
                    by_mechanism
                        .iter()
                        .map(move |(m, c)| (name.clone(), *m, c.clone()))
                })
                .collect(),
            acls: image
                .acls
                .iter()
                .map(|(id, acl)| (*id, acl.clone()))
                .collect(),
            client_quotas: image.client_quotas.into_iter().collect(),
            tenants: image.tenants.into_values().collect(),
            tenant_users: image.tenant_users.into_iter().collect(),
        }
    }
}

impl From<ImageSnapshot> for MetadataImage {
    fn from(snapshot: ImageSnapshot) -> Self {
        MetadataImage {
            offset: snapshot.offset,
            topic_names_by_id: snapshot
                .topics
                .iter()
                .map(|t| (t.topic_id, t.name.clone()))
                .collect(),
            topics: snapshot
                .topics
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            configs: snapshot.configs.into_iter().collect(),
            next_producer_id_block: snapshot.next_producer_id_block,
            deleted_topics: Arc::new(snapshot.deleted_topics.into_iter().collect()),
            brokers: snapshot
                .brokers
                .into_iter()
                .map(|b| (b.broker_id, b))
                .collect(),
            cluster_id: snapshot.cluster_id,
            features: snapshot.features,
            scram_credentials: snapshot.scram_credentials.into_iter().fold(
                BTreeMap::new(),
                |mut users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
                 (name, mechanism, credential)| {
                    users.entry(name).or_default().insert(mechanism, credential);
                    users
                },
            ),
            acls: Arc::new({
                let mut acls = AclSet::default();
                for (id, acl) in snapshot.acls {
                    acls.insert(id, acl);
                }
                acls
            }),
            client_quotas: snapshot.client_quotas.into_iter().collect(),
            tenants: snapshot
                .tenants
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            tenant_users: snapshot.tenant_users.into_iter().collect(),
        }
    }
}

/// Serialises as [`ImageSnapshot`]: a Raft snapshot of the metadata log is its image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "ImageSnapshot", from = "ImageSnapshot")]
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
    /// Registered brokers by id, fenced or not.
    brokers: BTreeMap<i32, BrokerRegistration>,
    cluster_id: Option<String>,
    /// Finalized feature levels (KIP-584), none at level 0.
    features: BTreeMap<String, i16>,
    /// SCRAM credentials by user, then mechanism (Kafka's `ScramImage`); a user without any
    /// credential is absent.
    scram_credentials: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// ACLs by id, indexed for the authorizer; shared between images, copied on a change.
    acls: Arc<AclSet>,
    /// Client quotas by entity (Kafka's `ClientQuotasImage`); an entity without any is absent.
    client_quotas: BTreeMap<QuotaEntity, Quotas>,
    /// Tenants by id; names are unique among them.
    tenants: BTreeMap<String, Tenant>,
    /// The users that belong to a tenant, by user name.
    tenant_users: BTreeMap<String, TenantMember>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    /// Whether the cluster has partition `index` of `topic` (a negative index never exists).
    pub fn has_partition(&self, topic: &str, index: i32) -> bool {
        self.topic(topic)
            .is_some_and(|t| usize::try_from(index).is_ok_and(|i| i < t.partitions.len()))
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

    /// The cluster id agreed in a quorum's log (`None` for a single node's own log).
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn broker(&self, broker_id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// Ids of the unfenced brokers: those that may lead and hold new replicas.
    pub fn live_brokers(&self) -> BTreeSet<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.broker_id)
            .collect()
    }

    /// Finalized feature levels by name; a feature at level 0 is absent.
    pub fn finalized_features(&self) -> &BTreeMap<String, i16> {
        &self.features
    }

    /// A feature's finalized level, 0 when it is not finalized.
    pub fn feature_level(&self, name: &str) -> i16 {
        self.features.get(name).copied().unwrap_or(0)
    }

    /// A user's SCRAM credential for one mechanism: what SCRAM and PLAIN authenticate against.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram_credentials
            .get(user)
            .and_then(|by_mechanism| by_mechanism.get(&mechanism))
    }

    /// Every user with a SCRAM credential, in name order, with their credentials.
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&String, &BTreeMap<ScramMechanism, ScramCredential>)> {
        self.scram_credentials.iter()
    }

    /// Every tenant, in id order.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(id)
    }

    pub fn tenant_by_name(&self, name: &str) -> Option<&Tenant> {
        self.tenants.values().find(|t| t.name == name)
    }

    /// The tenant `user` belongs to, if any.
    pub fn tenant_member(&self, user: &str) -> Option<&TenantMember> {
        self.tenant_users.get(user)
    }

    /// The members of tenant `id`, in name order.
    pub fn tenant_members<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a TenantMember)> + 'a {
        self.tenant_users
            .iter()
            .filter(move |(_, m)| m.tenant_id == id)
    }

    /// The quotas set for exactly `entity`.
    pub fn client_quotas(&self, entity: &QuotaEntity) -> Option<&Quotas> {
        self.client_quotas.get(entity)
    }

    /// Every entity with quotas, in entity order.
    pub fn all_client_quotas(&self) -> impl Iterator<Item = (&QuotaEntity, &Quotas)> {
        self.client_quotas.iter()
    }

    /// The cluster's ACLs.
    pub fn acls(&self) -> &AclSet {
        &self.acls
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
    /// written; a record that does not fit the image here is a bug and panics (the process
    /// aborts) rather than silently diverging from the log. Before a batch is written,
    /// [`MetadataImage::try_apply`] says whether it fits without panicking.
    #[track_caller]
    pub fn apply(&self, batch: &[MetadataRecord]) -> MetadataImage {
        self.try_apply(batch)
            .unwrap_or_else(|e| panic!("metadata batch at offset {}: {e}", self.offset))
    }

    /// The image after `batch`, or why a record of it does not fit this image: the check a
    /// batch passes before it is written to a metadata log, where it would otherwise fail
    /// [`MetadataImage::apply`] on every node at every replay. `self` is left unchanged.
    pub fn try_apply(&self, batch: &[MetadataRecord]) -> Result<MetadataImage, ImageError> {
        let mut next = self.clone();
        for record in batch {
            next.apply_record(record)?;
        }
        next.offset += 1;
        Ok(next)
    }

    fn apply_record(&mut self, record: &MetadataRecord) -> Result<(), ImageError> {
        match record {
            MetadataRecord::Topic { name, topic_id } => {
                if self.topics.contains_key(name) {
                    return Err(ImageError::TopicExists(name.clone()));
                }
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
                adding_replicas,
                removing_replicas,
            } => {
                let name = self
                    .topic_names_by_id
                    .get(topic_id)
                    .ok_or(ImageError::UnknownTopicId(*topic_id))?;
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
                    adding_replicas: adding_replicas.clone(),
                    removing_replicas: removing_replicas.clone(),
                };
                let index = *partition as usize;
                if index > topic.partitions.len() {
                    return Err(ImageError::PartitionGap {
                        topic: name.clone(),
                        partition: *partition,
                    });
                }
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
                    .ok_or(ImageError::UnknownTopicId(*topic_id))?;
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
                if *next_block_start <= self.next_producer_id_block {
                    return Err(ImageError::ProducerIdsBackward {
                        current: self.next_producer_id_block,
                        next: *next_block_start,
                    });
                }
                self.next_producer_id_block = *next_block_start;
            }
            MetadataRecord::RegisterBroker {
                broker_id,
                broker_epoch,
                incarnation_id,
                host,
                port,
                rack,
                supported_features,
                listeners,
            } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        broker_epoch: *broker_epoch,
                        incarnation_id: *incarnation_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: true,
                        supported_features: supported_features.clone(),
                        listeners: listeners.clone(),
                    },
                );
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            }
            | MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                let broker = self
                    .brokers
                    .get_mut(broker_id)
                    .ok_or(ImageError::UnregisteredBroker(*broker_id))?;
                if broker.broker_epoch != *broker_epoch {
                    return Err(ImageError::BrokerEpoch {
                        broker_id: *broker_id,
                        registered: broker.broker_epoch,
                        record: *broker_epoch,
                    });
                }
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.is_some() {
                    return Err(ImageError::ClusterIdRewritten);
                }
                self.cluster_id = Some(cluster_id.clone());
            }
            MetadataRecord::FeatureLevel { name, level } => {
                if *level == 0 {
                    self.features.remove(name);
                } else {
                    self.features.insert(name.clone(), *level);
                }
            }
            MetadataRecord::UserScramCredential {
                name,
                mechanism,
                credential,
            } => {
                self.scram_credentials
                    .entry(name.clone())
                    .or_default()
                    .insert(*mechanism, credential.clone());
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                let missing = || ImageError::UnknownScramCredential {
                    name: name.clone(),
                    mechanism: *mechanism,
                };
                let by_mechanism = self.scram_credentials.get_mut(name).ok_or_else(missing)?;
                by_mechanism.remove(mechanism).ok_or_else(missing)?;
                if by_mechanism.is_empty() {
                    self.scram_credentials.remove(name);
                }
            }
            MetadataRecord::AccessControlEntry { id, acl } => {
                if self.acls.get(id).is_some() {
                    return Err(ImageError::AclExists(*id));
                }
                Arc::make_mut(&mut self.acls).insert(*id, acl.clone());
            }
            MetadataRecord::RemoveAccessControlEntry { id } => {
                if self.acls.get(id).is_none() {
                    return Err(ImageError::UnknownAcl(*id));
                }
                Arc::make_mut(&mut self.acls).remove(id);
            }
            MetadataRecord::Tenant { tenant } => {
                if let Some(other) = self
                    .tenants
                    .values()
                    .find(|t| t.name == tenant.name && t.id != tenant.id)
                {
                    return Err(ImageError::TenantNameTaken {
                        name: tenant.name.clone(),
                        other: other.id.clone(),
                    });
                }
                self.tenants.insert(tenant.id.clone(), tenant.clone());
            }
            MetadataRecord::RemoveTenant { id } => {
                self.tenants
                    .remove(id)
                    .ok_or_else(|| ImageError::UnknownTenant(id.clone()))?;
                self.tenant_users.retain(|_, m| m.tenant_id != *id);
            }
            MetadataRecord::TenantUser { user, member } => match member {
                Some(member) => {
                    if !self.tenants.contains_key(&member.tenant_id) {
                        return Err(ImageError::UnknownTenant(member.tenant_id.clone()));
                    }
                    self.tenant_users.insert(user.clone(), member.clone());
                }
                None => {
                    self.tenant_users.remove(user);
                }
            },
            MetadataRecord::ClientQuota { entity, key, value } => match value {
                Some(value) => {
                    self.client_quotas
                        .entry(entity.clone())
                        .or_default()
                        .insert(key.clone(), *value);
                }
                None => {
                    if let Some(quotas) = self.client_quotas.get_mut(entity) {
                        quotas.remove(key);
                        if quotas.is_empty() {
                            self.client_quotas.remove(entity);
                        }
                    }
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, topic_id: Uuid) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id,
        }
    }

    #[test]
    fn try_apply_says_why_a_record_does_not_fit_and_leaves_the_image_alone() {
        let id = Uuid::new_v4();
        let image = MetadataImage::default().apply(&[topic("t", id)]);
        let unknown = Uuid::new_v4();
        let partition = |topic_id, partition| MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            partition_epoch: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
        };
        let cases = [
            (
                topic("t", Uuid::new_v4()),
                ImageError::TopicExists("t".into()),
            ),
            (partition(unknown, 0), ImageError::UnknownTopicId(unknown)),
            (
                partition(id, 2),
                ImageError::PartitionGap {
                    topic: "t".into(),
                    partition: 2,
                },
            ),
            (
                MetadataRecord::RemoveTopic { topic_id: unknown },
                ImageError::UnknownTopicId(unknown),
            ),
            (
                MetadataRecord::FenceBroker {
                    broker_id: 7,
                    broker_epoch: 0,
                },
                ImageError::UnregisteredBroker(7),
            ),
        ];
        for (record, expected) in cases {
            // A fitting record before the bad one must not leak into `image` either.
            let batch = [partition(id, 0), record];
            assert_eq!(image.try_apply(&batch), Err(expected));
            assert_eq!(image.topic("t").map(|t| t.partitions.len()), Some(0));
            assert_eq!(image.offset, 1);
        }
        let next = image.try_apply(&[partition(id, 0)]).expect("fits");
        assert_eq!(next.offset, 2);
        assert_eq!(next.topic("t").map(|t| t.partitions.len()), Some(1));
    }

    #[test]
    #[should_panic(expected = "metadata batch at offset 1: creates topic t, which exists")]
    fn apply_panics_on_a_record_that_does_not_fit() {
        let image = MetadataImage::default().apply(&[topic("t", Uuid::new_v4())]);
        image.apply(&[topic("t", Uuid::new_v4())]);
    }
}
