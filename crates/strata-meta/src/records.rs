//! Metadata records: the only way cluster metadata changes. As in KRaft, every change is a
//! record appended to the metadata log, and the image is the fold of all records in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::acl::AclBinding;
use crate::client_quota::QuotaEntity;
use crate::features::VersionRange;
use crate::scram::{ScramCredential, ScramMechanism};
use crate::tenant::{Tenant, TenantMember};

/// What a config record applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// A broker's dynamic config; `None` is the cluster-wide default (Kafka's empty name).
    Broker(Option<i32>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A new topic. Its partitions follow as [`MetadataRecord::Partition`] records.
    Topic { name: String, topic_id: Uuid },
    /// A partition's replica set and leadership, new or changed.
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        /// In-sync replicas; empty in records written before ISRs were tracked, which means
        /// every replica (a single node's only replica).
        #[serde(default)]
        isr: Vec<i32>,
        /// Bumped on every change of the partition (KRaft's partition epoch); 0 in old records.
        #[serde(default)]
        partition_epoch: i32,
        /// An ongoing reassignment's added replicas (KIP-455); empty when none is in
        /// progress, and in records written before reassignments existed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<i32>,
        /// An ongoing reassignment's removed replicas, still in `replicas` until it completes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<i32>,
    },
    /// Removes a topic, its partitions and its configs.
    RemoveTopic { topic_id: Uuid },
    /// Sets (`Some`) or deletes (`None`) one config key.
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// Producer ids below `next_block_start` have been handed out (Kafka's ProducerIdsRecord).
    ProducerIds { next_block_start: i64 },
    /// A broker (re)registered (Kafka's RegisterBrokerRecord). It starts fenced: it leads
    /// nothing until the controller unfences it, once it has caught up with the metadata log.
    /// `broker_epoch` is new on every registration, so that a heartbeat from an older incarnation
    /// of the same broker id is refused.
    RegisterBroker {
        broker_id: i32,
        broker_epoch: i64,
        incarnation_id: Uuid,
        host: String,
        port: i32,
        #[serde(default)]
        rack: Option<String>,
        /// The feature levels the broker can serve (KIP-584); empty in records written
        /// before feature versions existed.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        supported_features: BTreeMap<String, VersionRange>,
        /// Every listener's advertised endpoint, by name (Kafka's `BrokerEndpointCollection`);
        /// empty in records written before named listeners, whose one endpoint is
        /// `host`/`port`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        listeners: Vec<crate::image::BrokerEndpoint>,
    },
    /// The broker stopped heartbeating or is shutting down: it leads nothing and leaves ISRs.
    FenceBroker { broker_id: i32, broker_epoch: i64 },
    /// The broker caught up with the metadata log and may lead again.
    UnfenceBroker { broker_id: i32, broker_epoch: i64 },
    /// The cluster's id, written once by the first node of a quorum (a single node keeps its
    /// id in `meta.properties` only).
    ClusterId { cluster_id: String },
    /// Finalizes a feature at a level (Kafka's FeatureLevelRecord); level 0 removes it.
    FeatureLevel { name: String, level: i16 },
    /// Sets one user's credential for one mechanism (Kafka's UserScramCredentialRecord):
    /// the salt, iterations and derived keys, never the password.
    UserScramCredential {
        name: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    /// Removes one user's credential for one mechanism (RemoveUserScramCredentialRecord).
    RemoveUserScramCredential {
        name: String,
        mechanism: ScramMechanism,
    },
    /// An ACL (Kafka's AccessControlEntryRecord), new under `id`.
    AccessControlEntry { id: Uuid, acl: AclBinding },
    /// Deletes the ACL `id` (Kafka's RemoveAccessControlEntryRecord).
    RemoveAccessControlEntry { id: Uuid },
    /// Sets one quota of a client quota entity, or removes it when `value` is `None` (Kafka's
    /// ClientQuotaRecord with `remove`).
    ClientQuota {
        entity: QuotaEntity,
        key: String,
        value: Option<f64>,
    },
    /// Creates a tenant, or replaces the one with its id (Strata's own: Kafka has no tenants).
    Tenant { tenant: Tenant },
    /// Deletes the tenant `id`; its resources and users are gone in the same batch.
    RemoveTenant { id: String },
    /// Makes `user` a member of a tenant, or of none (`None`).
    TenantUser {
        user: String,
        member: Option<TenantMember>,
    },
}
