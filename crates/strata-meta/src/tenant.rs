//! Tenants: logical clusters on one physical cluster (Kora's multi-tenancy; Kafka has none).
//!
//! A tenant is a metadata record: an id (its logical cluster id), a unique name, cluster-wide
//! quotas under Kafka's client-quota keys, and limits. Users belong to at most one tenant; a
//! user outside every tenant (an operator, a super user) sees the physical cluster. A tenant's
//! resources live under internal names that start with [`Tenant::prefix`]. The rules that
//! validate changes are the controller's ([`crate::controller::TenantControl`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The quota keys a tenant may have: Kafka's client-quota names, applied to the whole tenant.
pub const TENANT_QUOTA_KEYS: &[&str] = &[
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
];

/// Longest tenant name.
pub const MAX_TENANT_NAME_LEN: usize = 64;

/// What a tenant may hold and set; an absent limit does not limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<u64>,
    /// Bytes on local disk and in the tier together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Largest `retention.ms` its topics may set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retention_ms: Option<u64>,
    /// Largest `max.message.bytes` its topics may set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u64>,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The logical cluster id: what the tenant's clients see as the cluster id, and the start
    /// of its resources' internal names. Never reused for another tenant.
    pub id: String,
    pub name: String,
    /// Cluster-wide quotas, keys from [`TENANT_QUOTA_KEYS`].
    pub quotas: BTreeMap<String, f64>,
    pub limits: TenantLimits,
}

impl Tenant {
    /// What every internal name of this tenant's resources starts with.
    pub fn prefix(&self) -> String {
        prefix_of(&self.id)
    }

    /// The internal name of the tenant's CLUSTER resource, on which its ACLs grant cluster
    /// operations (ALTER makes a tenant admin): the tenant's view of `kafka-cluster`.
    pub fn cluster_resource(&self) -> String {
        cluster_resource_of(&self.id)
    }

    /// Whether `internal_name` is one of this tenant's resources.
    pub fn owns(&self, internal_name: &str) -> bool {
        owned_by(&self.id, internal_name)
    }
}

/// The prefix of tenant `id`'s internal names: `<id>_`.
pub fn prefix_of(id: &str) -> String {
    format!("{id}_")
}

/// Tenant `id`'s CLUSTER resource: `<id>_kafka-cluster`.
pub fn cluster_resource_of(id: &str) -> String {
    format!("{}{}", prefix_of(id), crate::acl::CLUSTER_NAME)
}

/// Whether `internal_name` is in tenant `id`'s name space.
pub fn owned_by(id: &str, internal_name: &str) -> bool {
    internal_name
        .strip_prefix(id)
        .is_some_and(|rest| rest.starts_with('_'))
}

/// The id of the tenant whose name space `internal_name` would be in (what precedes its first
/// `_`), if it has one; whether that tenant exists is the image's to say.
pub fn tenant_id_of(internal_name: &str) -> Option<&str> {
    internal_name.split_once('_').map(|(id, _)| id)
}

/// A user's membership of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantMember {
    pub tenant_id: String,
    /// May do everything within the tenant (its own users and ACLs included).
    pub admin: bool,
}

/// Whether `id` is a well-formed tenant id: `lc-` and lower-case letters and digits, short
/// enough to leave room for the names it prefixes.
pub fn valid_tenant_id(id: &str) -> bool {
    id.strip_prefix("lc-").is_some_and(|rest| {
        (4..=16).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// Whether `name` is some tenant's CLUSTER resource ([`Tenant::cluster_resource`]).
pub fn is_tenant_cluster_resource(name: &str) -> bool {
    name.strip_suffix(crate::acl::CLUSTER_NAME)
        .and_then(|id| id.strip_suffix('_'))
        .is_some_and(valid_tenant_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_owns_the_names_under_its_prefix_only() {
        let t = Tenant {
            id: "lc-abc123".into(),
            name: "acme".into(),
            quotas: BTreeMap::new(),
            limits: TenantLimits::default(),
        };
        assert_eq!(t.prefix(), "lc-abc123_");
        assert!(t.owns("lc-abc123_orders"));
        assert!(!t.owns("lc-abc1234_orders"));
        assert!(!t.owns("orders"));
        assert!(valid_tenant_id("lc-abc123"));
        assert!(!valid_tenant_id("lc-ABC123"));
        assert!(!valid_tenant_id("abc123"));
        assert!(!valid_tenant_id("lc-ab"));
        assert_eq!(t.cluster_resource(), "lc-abc123_kafka-cluster");
        assert!(is_tenant_cluster_resource(&t.cluster_resource()));
        assert!(!is_tenant_cluster_resource("kafka-cluster"));
        assert!(!is_tenant_cluster_resource("orders_kafka-cluster"));
    }

    #[test]
    fn limits_refuse_unknown_fields() {
        let ok: TenantLimits = serde_json::from_str(r#"{"partitions": 100}"#).unwrap();
        assert_eq!(ok.partitions, Some(100));
        assert!(serde_json::from_str::<TenantLimits>(r#"{"partitons": 100}"#).is_err());
    }
}
