//! The controller: validates metadata changes against the image and turns them into records,
//! with Kafka's rules and error cases.
//!
//! Sans-IO: every method reads an image and returns records;
//! [`MetadataStore::commit_with`](crate::MetadataStore::commit_with) runs it under the commit
//! lock and makes the records durable.
//!
//! As Kafka's `QuorumController` does, the [`Controller`] hands each request to the manager of
//! the records it changes:
//! - [`BrokerControl`] (`brokers.rs`, Kafka's `ClusterControlManager`): broker registration,
//!   fencing and unfencing; rack-aware placement of new replicas over the unfenced brokers.
//! - [`TopicControl`] (`topics.rs`, the topic half of `ReplicationControlManager`):
//!   CreateTopics, DeleteTopics, CreatePartitions.
//! - [`PartitionControl`] (`partitions.rs`, the partition half of `ReplicationControlManager`):
//!   leader elections, AlterPartition (ISR changes), reassignments, over the pure functions of
//!   [`crate::partition_change`].
//! - [`ConfigControl`] (`configs.rs`, `ConfigurationControlManager`): topic and broker configs.
//! - [`ProducerIdControl`] (`producer_ids.rs`, `ProducerIdControlManager`): producer-id blocks.
//! - [`ScramControl`] (`scram.rs`, `ScramControlManager`): SCRAM credentials.
//! - [`AclControl`] (`acls.rs`, `AclControlManager`): CreateAcls and DeleteAcls.
//! - [`ClientQuotaControl`] (`client_quotas.rs`, `ClientQuotaControlManager`): client quotas.
//! - [`TenantControl`] (`tenants.rs`, Strata's own): tenants and their users' membership.
//!
//! Finalized feature levels are [`crate::features`] (`FeatureControlManager`).
//!
//! Every manager has the same shape: methods that take the image and a request and return the
//! answer and the records, after validating the request with Kafka's errors. A manager emits
//! only records of its own kind and reads the image, never another manager's state; when one
//! request changes two kinds (a fenced broker loses its leaderships), the facade asks both and
//! commits their records in one batch. A new kind of record (ACLs, SCRAM credentials, quotas,
//! tenants) gets a manager of this shape and a facade method per request.

mod acls;
mod brokers;
mod client_quotas;
mod configs;
mod partitions;
mod producer_ids;
mod scram;
mod tenants;
#[cfg(test)]
mod test_support;
mod topics;

use uuid::Uuid;

use crate::acl::{AclBinding, AclBindingFilter};
use crate::image::MetadataImage;
use crate::partition_change::PartitionRegistration;
use crate::records::{ConfigResource, MetadataRecord};

pub use acls::AclControl;
pub use brokers::{BrokerControl, BrokerRegistrationRequest};
pub use client_quotas::{ClientQuotaControl, NameMatch, QuotaAlteration, QuotaResults};
pub use configs::{ConfigControl, ConfigOp};
pub use partitions::{
    AlterPartitionFailure, ElectionError, ElectionType, OngoingReassignment, PartitionControl,
    ReassignmentTarget, TopicElection, UncleanElection, MAX_ELECTIONS_PER_BALANCE,
    NO_UNCLEAN_ELECTION,
};
pub use producer_ids::ProducerIdControl;
pub use scram::{ScramControl, ScramDeletion, ScramResults, ScramUpsertion};
pub use tenants::{TenantChange, TenantControl, TenantDeletion};
pub use topics::{
    validate_topic_name, CreateTopicSpec, CreatedTopic, TopicControl, MAX_TOPIC_NAME_LEN,
};

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
    /// NO_REASSIGNMENT_IN_PROGRESS (85).
    #[error("{0}")]
    NoReassignmentInProgress(String),
    /// UNSUPPORTED_SASL_MECHANISM (33).
    #[error("{0}")]
    UnsupportedSaslMechanism(String),
    /// RESOURCE_NOT_FOUND (91).
    #[error("{0}")]
    ResourceNotFound(String),
    /// DUPLICATE_RESOURCE (92).
    #[error("{0}")]
    DuplicateResource(String),
    /// UNACCEPTABLE_CREDENTIAL (93).
    #[error("{0}")]
    UnacceptableCredential(String),
    /// UNSUPPORTED_VERSION (35): what Kafka answers for a quota entity type it does not know.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// POLICY_VIOLATION (44): a tenant's rule or limit refuses the change.
    #[error("{0}")]
    PolicyViolation(String),
}

/// What the server calls: one method per request, each handed to the manager that owns the
/// records it changes (see the module documentation).
#[derive(Debug)]
pub struct Controller {
    brokers: BrokerControl,
    topics: TopicControl,
    partitions: PartitionControl,
    configs: ConfigControl,
    producer_ids: ProducerIdControl,
    scram: ScramControl,
    acls: AclControl,
    client_quotas: ClientQuotaControl,
    tenants: TenantControl,
}

impl Controller {
    pub fn new(node_id: i32) -> Self {
        Self {
            brokers: BrokerControl,
            topics: TopicControl,
            partitions: PartitionControl,
            configs: ConfigControl::new(node_id),
            producer_ids: ProducerIdControl,
            scram: ScramControl,
            acls: AclControl,
            client_quotas: ClientQuotaControl,
            tenants: TenantControl,
        }
    }

    /// Records registering a broker. A new registration (a restarted process) gets a new
    /// epoch and starts fenced, which also takes away the leadership and ISR memberships of
    /// the broker's previous incarnation; a retry from the same process changes nothing.
    /// Returns the broker epoch.
    pub fn register_broker(
        &self,
        image: &MetadataImage,
        request: &BrokerRegistrationRequest,
        unclean: UncleanElection,
    ) -> (i64, Vec<MetadataRecord>) {
        let (broker_epoch, registration) = self.brokers.register(image, request);
        let records = with_partition_changes(registration, || {
            self.partitions
                .handle_broker_fenced(image, request.broker_id, unclean)
        });
        (broker_epoch, records)
    }

    /// Records fencing a broker (its session expired, or it is shutting down): partitions it
    /// led get new leaders from their ISRs, and it leaves the ISRs it was in. Nothing when the
    /// broker is already fenced or `broker_epoch` is not its current registration.
    pub fn fence_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        unclean: UncleanElection,
    ) -> Vec<MetadataRecord> {
        let fence = self.brokers.fence(image, broker_id, broker_epoch);
        with_partition_changes(fence, || {
            self.partitions
                .handle_broker_fenced(image, broker_id, unclean)
        })
    }

    /// Records unfencing a broker that caught up with the metadata log: partitions without a
    /// leader that it can lead get it back. Nothing when it is not fenced in `broker_epoch`.
    pub fn unfence_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        unclean: UncleanElection,
    ) -> Vec<MetadataRecord> {
        let unfence = self.brokers.unfence(image, broker_id, broker_epoch);
        with_partition_changes(unfence, || {
            self.partitions
                .handle_broker_unfenced(image, broker_id, unclean)
        })
    }

    /// See [`PartitionControl::alter_partition`].
    #[allow(clippy::too_many_arguments)]
    pub fn alter_partition(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> Result<(PartitionRegistration, Vec<MetadataRecord>), AlterPartitionFailure> {
        self.partitions.alter_partition(
            image,
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
        )
    }

    /// See [`PartitionControl::elect_leaders`].
    pub fn elect_leaders(
        &self,
        image: &MetadataImage,
        election: ElectionType,
        targets: Option<&[(String, Vec<i32>)]>,
    ) -> (Vec<TopicElection>, Vec<MetadataRecord>) {
        self.partitions.elect_leaders(image, election, targets)
    }

    /// See [`PartitionControl::balance_leaders`].
    pub fn balance_leaders(
        &self,
        image: &MetadataImage,
        imbalance_percentage: i32,
    ) -> Vec<MetadataRecord> {
        self.partitions.balance_leaders(image, imbalance_percentage)
    }

    /// See [`PartitionControl::alter_partition_reassignments`].
    pub fn alter_partition_reassignments(
        &self,
        image: &MetadataImage,
        targets: &[(String, Vec<ReassignmentTarget>)],
        allow_replication_factor_change: bool,
        unclean: UncleanElection,
    ) -> (Vec<Vec<Result<(), ControllerError>>>, Vec<MetadataRecord>) {
        self.partitions.alter_partition_reassignments(
            image,
            targets,
            allow_replication_factor_change,
            unclean,
        )
    }

    /// See [`PartitionControl::list_partition_reassignments`].
    pub fn list_partition_reassignments(
        &self,
        image: &MetadataImage,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, Vec<OngoingReassignment>)> {
        self.partitions.list_partition_reassignments(image, topics)
    }

    /// See [`TopicControl::create_topic`].
    pub fn create_topic(
        &self,
        image: &MetadataImage,
        spec: &CreateTopicSpec,
        defaults: (i32, i16),
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), ControllerError> {
        let (created, records) = self.topics.create_topic(image, spec, defaults)?;
        self.tenants
            .check_growth(image, &spec.name, 1, created.num_partitions as u64)?;
        let set = spec
            .configs
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)));
        self.tenants.check_topic_configs(image, &spec.name, set)?;
        Ok((created, records))
    }

    /// See [`TopicControl::delete_topic`].
    pub fn delete_topic(
        &self,
        image: &MetadataImage,
        topic_id: Uuid,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        self.topics.delete_topic(image, topic_id)
    }

    /// See [`TopicControl::create_partitions`].
    pub fn create_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let records = self
            .topics
            .create_partitions(image, name, count, assignments)?;
        let current = image.topic(name).map_or(0, |t| t.partitions.len() as i32);
        self.tenants
            .check_growth(image, name, 0, (count - current).max(0) as u64)?;
        Ok(records)
    }

    /// See [`ConfigControl::alter_configs`].
    pub fn alter_configs(
        &self,
        image: &MetadataImage,
        resource: &ConfigResource,
        ops: &[ConfigOp],
        replace_all: bool,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let records = self
            .configs
            .alter_configs(image, resource, ops, replace_all)?;
        if let ConfigResource::Topic(topic) = resource {
            let set = ops.iter().filter_map(|op| match op {
                ConfigOp::Set(name, value) => Some((name.as_str(), value.as_str())),
                _ => None,
            });
            self.tenants.check_topic_configs(image, topic, set)?;
        }
        Ok(records)
    }

    /// See [`ProducerIdControl::allocate_producer_ids`].
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        block_size: i64,
    ) -> (i64, Vec<MetadataRecord>) {
        self.producer_ids.allocate_producer_ids(image, block_size)
    }

    /// See [`AclControl::create_acls`].
    pub fn create_acls(
        &self,
        image: &MetadataImage,
        bindings: &[AclBinding],
    ) -> (Vec<Result<(), ControllerError>>, Vec<MetadataRecord>) {
        self.acls.create_acls(image, bindings)
    }

    /// See [`AclControl::delete_acls`].
    pub fn delete_acls(
        &self,
        image: &MetadataImage,
        filters: &[AclBindingFilter],
    ) -> (
        Vec<Result<Vec<AclBinding>, ControllerError>>,
        Vec<MetadataRecord>,
    ) {
        self.acls.delete_acls(image, filters)
    }
}

impl Controller {
    /// See [`ScramControl::alter_credentials`].
    pub fn alter_user_scram_credentials(
        &self,
        image: &MetadataImage,
        deletions: &[ScramDeletion],
        upsertions: &[ScramUpsertion],
    ) -> (ScramResults, Vec<MetadataRecord>) {
        self.scram.alter_credentials(image, deletions, upsertions)
    }

    /// See [`ClientQuotaControl::alter`].
    pub fn alter_client_quotas(
        &self,
        image: &MetadataImage,
        alterations: &[QuotaAlteration],
    ) -> (QuotaResults, Vec<MetadataRecord>) {
        self.client_quotas.alter(image, alterations)
    }

    /// See [`ClientQuotaControl::describe`].
    pub fn describe_client_quotas<'i>(
        &self,
        image: &'i MetadataImage,
        filter: &[(String, NameMatch)],
        strict: bool,
    ) -> Result<
        Vec<(
            &'i crate::client_quota::QuotaEntity,
            &'i crate::client_quota::Quotas,
        )>,
        ControllerError,
    > {
        self.client_quotas.describe(image, filter, strict)
    }

    /// See [`TenantControl::create`].
    pub fn create_tenant(
        &self,
        image: &MetadataImage,
        id: &str,
        name: &str,
        quotas: &std::collections::BTreeMap<String, f64>,
        limits: &crate::tenant::TenantLimits,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        self.tenants.create(image, id, name, quotas, limits)
    }

    /// See [`TenantControl::alter`].
    pub fn alter_tenant(
        &self,
        image: &MetadataImage,
        name: &str,
        change: &TenantChange,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        self.tenants.alter(image, name, change)
    }

    /// Deletes tenant `name` in one batch, so that a crash leaves it whole or gone: its topics
    /// (TopicControl's records), its users' credentials (ScramControl's), then the tenant and
    /// with it the memberships. Refused while it holds topics unless `force`.
    pub fn delete_tenant(
        &self,
        image: &MetadataImage,
        name: &str,
        force: bool,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let plan = self.tenants.plan_deletion(image, name, force)?;
        let mut records = Vec::new();
        for topic_id in &plan.topics {
            records.extend(self.topics.delete_topic(image, *topic_id)?);
        }
        for user in &plan.users {
            records.extend(self.scram.remove_all(image, user));
        }
        records.push(self.tenants.remove(&plan));
        Ok(records)
    }

    /// Creates a user of tenant `name` with its SCRAM credential, in one batch.
    pub fn add_tenant_user(
        &self,
        image: &MetadataImage,
        name: &str,
        admin: bool,
        credential: &ScramUpsertion,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let membership = self
            .tenants
            .add_user(image, name, &credential.name, admin)?;
        let (results, mut records) =
            self.scram
                .alter_credentials(image, &[], std::slice::from_ref(credential));
        if let Some((_, Err(e))) = results.into_iter().next() {
            return Err(e);
        }
        records.push(membership);
        Ok(records)
    }

    /// Deletes user `user` of tenant `name`: its membership and its credentials.
    pub fn remove_tenant_user(
        &self,
        image: &MetadataImage,
        name: &str,
        user: &str,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let membership = self.tenants.remove_user(image, name, user)?;
        let mut records = self.scram.remove_all(image, user);
        records.push(membership);
        Ok(records)
    }

    /// See [`ScramControl::bootstrap_credential`].
    pub fn bootstrap_scram_credential(
        &self,
        image: &MetadataImage,
        bootstrap: &crate::scram::ScramBootstrap,
    ) -> Result<Option<MetadataRecord>, ControllerError> {
        self.scram.bootstrap_credential(image, bootstrap)
    }
}

/// A broker's change followed by the partition changes it causes, in one batch; nothing at
/// all when the broker's change is nothing (a retried registration, a stale epoch).
fn with_partition_changes(
    broker_change: Option<MetadataRecord>,
    partition_changes: impl FnOnce() -> Vec<MetadataRecord>,
) -> Vec<MetadataRecord> {
    let Some(broker_change) = broker_change else {
        return Vec::new();
    };
    let mut records = vec![broker_change];
    records.extend(partition_changes());
    records
}
