//! Tenants as records (Strata's own manager; Kafka has no tenants): creation, changes,
//! deletion and membership, validated here. Deleting a tenant with its topics and users, or
//! adding a user with its credential, needs other managers' records too: the facade composes
//! them ([`super::Controller::delete_tenant`], [`super::Controller::add_tenant_user`]).

use std::collections::BTreeMap;

use super::ControllerError;
use crate::image::MetadataImage;
use crate::records::MetadataRecord;
use crate::tenant::{
    valid_tenant_id, Tenant, TenantLimits, TenantMember, MAX_TENANT_NAME_LEN, TENANT_QUOTA_KEYS,
};

/// A change of a tenant: quotas given are set (`None`: removed), others kept; limits, when
/// given, replace the tenant's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantChange {
    pub quotas: BTreeMap<String, Option<f64>>,
    pub limits: Option<TenantLimits>,
}

/// What deleting a tenant removes: the tenant, and the topics and users it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantDeletion {
    pub tenant: Tenant,
    pub topics: Vec<uuid::Uuid>,
    pub users: Vec<String>,
}

#[derive(Debug, Default)]
pub struct TenantControl;

impl TenantControl {
    /// A new tenant `name` under the id `id` (chosen by the caller, never reused).
    pub fn create(
        &self,
        image: &MetadataImage,
        id: &str,
        name: &str,
        quotas: &BTreeMap<String, f64>,
        limits: &TenantLimits,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        check_name(name)?;
        if !valid_tenant_id(id) {
            return Err(ControllerError::InvalidRequest(format!(
                "Invalid tenant id {id}"
            )));
        }
        if image.tenant_by_name(name).is_some() {
            return Err(ControllerError::DuplicateResource(format!(
                "Tenant {name} already exists"
            )));
        }
        if image.tenant(id).is_some() {
            return Err(ControllerError::DuplicateResource(format!(
                "Tenant id {id} is taken"
            )));
        }
        for (key, value) in quotas {
            check_quota(key, Some(*value))?;
        }
        Ok(vec![MetadataRecord::Tenant {
            tenant: Tenant {
                id: id.to_string(),
                name: name.to_string(),
                quotas: quotas.clone(),
                limits: limits.clone(),
            },
        }])
    }

    /// Changes tenant `name`; nothing when the change changes nothing.
    pub fn alter(
        &self,
        image: &MetadataImage,
        name: &str,
        change: &TenantChange,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let mut tenant = find(image, name)?.clone();
        for (key, value) in &change.quotas {
            check_quota(key, *value)?;
            match value {
                Some(v) => tenant.quotas.insert(key.clone(), *v),
                None => tenant.quotas.remove(key),
            };
        }
        if let Some(limits) = &change.limits {
            tenant.limits = limits.clone();
        }
        if image.tenant(&tenant.id) == Some(&tenant) {
            return Ok(Vec::new());
        }
        Ok(vec![MetadataRecord::Tenant { tenant }])
    }

    /// What deleting tenant `name` removes. Refused (POLICY_VIOLATION) while it holds topics,
    /// unless `force`.
    pub fn plan_deletion(
        &self,
        image: &MetadataImage,
        name: &str,
        force: bool,
    ) -> Result<TenantDeletion, ControllerError> {
        let tenant = find(image, name)?.clone();
        let topics: Vec<uuid::Uuid> = image
            .topics()
            .filter(|t| tenant.owns(&t.name))
            .map(|t| t.topic_id)
            .collect();
        if !topics.is_empty() && !force {
            return Err(ControllerError::PolicyViolation(format!(
                "Tenant {name} holds {} topics; delete them first, or delete the tenant with force",
                topics.len()
            )));
        }
        let users = image
            .tenant_members(&tenant.id)
            .map(|(user, _)| user.clone())
            .collect();
        Ok(TenantDeletion {
            tenant,
            topics,
            users,
        })
    }

    /// The record that removes a tenant planned for deletion (after its topics and users).
    pub fn remove(&self, deletion: &TenantDeletion) -> MetadataRecord {
        MetadataRecord::RemoveTenant {
            id: deletion.tenant.id.clone(),
        }
    }

    /// The record making `user` a member of tenant `name`. A user belongs to at most one
    /// tenant, and a tenant's users are its own: a user that exists already (a credential, or a
    /// membership) is refused.
    pub fn add_user(
        &self,
        image: &MetadataImage,
        name: &str,
        user: &str,
        admin: bool,
    ) -> Result<MetadataRecord, ControllerError> {
        let tenant = find(image, name)?;
        if let Some(member) = image.tenant_member(user) {
            let whose = if member.tenant_id == tenant.id {
                "this tenant"
            } else {
                "another tenant"
            };
            return Err(ControllerError::DuplicateResource(format!(
                "User {user} already belongs to {whose}"
            )));
        }
        if image.scram_users().any(|(u, _)| u == user) {
            return Err(ControllerError::DuplicateResource(format!(
                "User {user} exists outside the tenant"
            )));
        }
        Ok(MetadataRecord::TenantUser {
            user: user.to_string(),
            member: Some(TenantMember {
                tenant_id: tenant.id.clone(),
                admin,
            }),
        })
    }

    /// The record ending `user`'s membership of tenant `name`.
    pub fn remove_user(
        &self,
        image: &MetadataImage,
        name: &str,
        user: &str,
    ) -> Result<MetadataRecord, ControllerError> {
        let tenant = find(image, name)?;
        match image.tenant_member(user) {
            Some(m) if m.tenant_id == tenant.id => Ok(MetadataRecord::TenantUser {
                user: user.to_string(),
                member: None,
            }),
            _ => Err(ControllerError::ResourceNotFound(format!(
                "Tenant {name} has no user {user}"
            ))),
        }
    }
}

/// The limits a tenant's topics are held to, at the controller, so that every way a topic is
/// created or grown (CreateTopics, auto-creation, CreatePartitions, AlterConfigs) meets them
/// on the image the change is built from. A topic outside every tenant is not limited.
impl TenantControl {
    /// Refuses (POLICY_VIOLATION) `new_topics` topics with `new_partitions` partitions more
    /// for the tenant owning `topic`, if that takes it over its `topics` or `partitions` limit.
    pub fn check_growth(
        &self,
        image: &MetadataImage,
        topic: &str,
        new_topics: u64,
        new_partitions: u64,
    ) -> Result<(), ControllerError> {
        let Some(tenant) = owner(image, topic) else {
            return Ok(());
        };
        let (topics, partitions) = image
            .topics()
            .filter(|t| tenant.owns(&t.name))
            .fold((0u64, 0u64), |(n, p), t| {
                (n + 1, p + t.partitions.len() as u64)
            });
        let over = |what: &str, limit: Option<u64>, held: u64, added: u64| match limit {
            Some(limit) if added > 0 && held + added > limit => {
                Err(ControllerError::PolicyViolation(format!(
                    "Tenant {} may hold at most {limit} {what}: it holds {held} and this \
                     request adds {added}.",
                    tenant.name
                )))
            }
            _ => Ok(()),
        };
        over("topics", tenant.limits.topics, topics, new_topics)?;
        over(
            "partitions",
            tenant.limits.partitions,
            partitions,
            new_partitions,
        )
    }

    /// Refuses (POLICY_VIOLATION) topic configs `topic`'s tenant may not set: `retention.ms`
    /// above its `max_retention_ms` (or infinite, -1), `max.message.bytes` above its
    /// `max_message_bytes`. Configs not set take the cluster's defaults.
    pub fn check_topic_configs<'a>(
        &self,
        image: &MetadataImage,
        topic: &str,
        configs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ControllerError> {
        let Some(tenant) = owner(image, topic) else {
            return Ok(());
        };
        for (name, value) in configs {
            let limit = match name {
                "retention.ms" => tenant.limits.max_retention_ms,
                "max.message.bytes" => tenant.limits.max_message_bytes,
                _ => None,
            };
            let Some(limit) = limit else { continue };
            // Values were validated as numbers; a negative retention is infinite.
            let value = value.trim().parse::<i64>().unwrap_or(i64::MAX);
            if value < 0 || value as u64 > limit {
                return Err(ControllerError::PolicyViolation(format!(
                    "Tenant {} may set {name} to at most {limit}, not {value}.",
                    tenant.name
                )));
            }
        }
        Ok(())
    }
}

/// The tenant whose name space `internal_name` is in.
fn owner<'i>(image: &'i MetadataImage, internal_name: &str) -> Option<&'i Tenant> {
    image.tenant(crate::tenant::tenant_id_of(internal_name)?)
}

fn find<'i>(image: &'i MetadataImage, name: &str) -> Result<&'i Tenant, ControllerError> {
    image
        .tenant_by_name(name)
        .ok_or_else(|| ControllerError::ResourceNotFound(format!("Tenant {name} does not exist")))
}

/// Tenant names: 1 to [`MAX_TENANT_NAME_LEN`] letters, digits, `.`, `_` or `-`, as topic names.
fn check_name(name: &str) -> Result<(), ControllerError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TENANT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ControllerError::InvalidRequest(format!(
            "Invalid tenant name {name:?}: 1 to {MAX_TENANT_NAME_LEN} ASCII letters, digits, '.', '_' or '-'"
        )))
    }
}

/// A tenant quota: one of [`TENANT_QUOTA_KEYS`], above 0 (whole bytes for byte rates).
fn check_quota(key: &str, value: Option<f64>) -> Result<(), ControllerError> {
    if !TENANT_QUOTA_KEYS.contains(&key) {
        return Err(ControllerError::InvalidRequest(format!(
            "Unknown tenant quota {key}; the quotas are {}",
            TENANT_QUOTA_KEYS.join(", ")
        )));
    }
    let Some(value) = value else {
        return Ok(());
    };
    if !value.is_finite() || value <= 0.0 {
        return Err(ControllerError::InvalidRequest(format!(
            "Quota {key} must be greater than 0"
        )));
    }
    if key.ends_with("_byte_rate") && value.fract() != 0.0 {
        return Err(ControllerError::InvalidRequest(format!(
            "Quota {key} must be a whole number of bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TenantLimits {
        TenantLimits {
            partitions: Some(100),
            ..TenantLimits::default()
        }
    }

    fn created(image: &MetadataImage, id: &str, name: &str) -> MetadataImage {
        let quotas = BTreeMap::from([("producer_byte_rate".to_string(), 2e6)]);
        let records = TenantControl
            .create(image, id, name, &quotas, &limits())
            .expect("created");
        image.apply(&records)
    }

    /// `image` with a topic of `partitions` partitions.
    fn with_topic(image: &MetadataImage, name: &str, partitions: i32) -> MetadataImage {
        let topic_id = uuid::Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: name.into(),
            topic_id,
        }];
        records.extend((0..partitions).map(|partition| MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            partition_epoch: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
        }));
        image.apply(&records)
    }

    #[test]
    fn a_tenants_topics_are_held_to_its_limits() {
        let limits = TenantLimits {
            topics: Some(2),
            partitions: Some(5),
            max_retention_ms: Some(86_400_000),
            max_message_bytes: Some(1_000_000),
            ..TenantLimits::default()
        };
        let records = TenantControl
            .create(
                &MetadataImage::default(),
                "lc-aaaa1",
                "acme",
                &BTreeMap::new(),
                &limits,
            )
            .expect("created");
        let image = with_topic(&MetadataImage::default().apply(&records), "lc-aaaa1_a", 3);
        let image = with_topic(&image, "other", 50);
        let c = TenantControl;
        let refused = |r: Result<(), ControllerError>| matches!(r, Err(ControllerError::PolicyViolation(m)) if m.contains("acme"));
        assert_eq!(c.check_growth(&image, "lc-aaaa1_b", 1, 2), Ok(()));
        assert!(
            refused(c.check_growth(&image, "lc-aaaa1_b", 1, 3)),
            "6 partitions"
        );
        assert!(
            refused(c.check_growth(&image, "lc-aaaa1_a", 0, 3)),
            "grown to 6"
        );
        let two = with_topic(&image, "lc-aaaa1_b", 1);
        assert!(
            refused(c.check_growth(&two, "lc-aaaa1_c", 1, 1)),
            "a third topic"
        );
        assert_eq!(
            c.check_growth(&two, "other2", 1, 1000),
            Ok(()),
            "not a tenant's"
        );
        assert_eq!(
            c.check_growth(&two, "lc-bbbb2_x", 1, 1000),
            Ok(()),
            "no such tenant"
        );

        let set = |name: &'static str, value: &'static str| {
            c.check_topic_configs(&image, "lc-aaaa1_a", [(name, value)])
        };
        assert_eq!(set("retention.ms", "3600000"), Ok(()));
        assert!(refused(set("retention.ms", "-1")), "infinite");
        assert!(refused(set("retention.ms", "86400001")));
        assert!(refused(set("max.message.bytes", "2000000")));
        assert_eq!(set("cleanup.policy", "compact"), Ok(()));
        assert_eq!(
            c.check_topic_configs(&image, "other", [("retention.ms", "-1")]),
            Ok(())
        );
    }

    #[test]
    fn tenants_are_created_once_with_valid_names_ids_and_quotas() {
        let image = created(&MetadataImage::default(), "lc-aaaa1", "acme");
        let tenant = image.tenant_by_name("acme").expect("acme");
        assert_eq!(tenant.id, "lc-aaaa1");
        assert_eq!(tenant.limits.partitions, Some(100));
        let none = BTreeMap::new();
        let c = TenantControl;
        assert!(matches!(
            c.create(&image, "lc-bbbb2", "acme", &none, &limits()),
            Err(ControllerError::DuplicateResource(_))
        ));
        assert!(matches!(
            c.create(&image, "lc-aaaa1", "other", &none, &limits()),
            Err(ControllerError::DuplicateResource(_))
        ));
        for (id, name) in [("lc-cccc3", "a b"), ("lc-cccc3", ""), ("x", "ok")] {
            assert!(matches!(
                c.create(&image, id, name, &none, &limits()),
                Err(ControllerError::InvalidRequest(_))
            ));
        }
        for (key, value) in [
            ("producer_byte_rate", 0.0),
            ("producer_byte_rate", 1.5),
            ("connection_creation_rate", 5.0),
            ("request_percentage", f64::NAN),
        ] {
            let quotas = BTreeMap::from([(key.to_string(), value)]);
            assert!(
                matches!(
                    c.create(&image, "lc-cccc3", "ok", &quotas, &limits()),
                    Err(ControllerError::InvalidRequest(_))
                ),
                "{key}={value}"
            );
        }
    }

    #[test]
    fn changes_set_and_remove_quotas_and_replace_limits() {
        let image = created(&MetadataImage::default(), "lc-aaaa1", "acme");
        let change = TenantChange {
            quotas: BTreeMap::from([
                ("producer_byte_rate".to_string(), None),
                ("consumer_byte_rate".to_string(), Some(4e6)),
            ]),
            limits: Some(TenantLimits::default()),
        };
        let records = TenantControl
            .alter(&image, "acme", &change)
            .expect("alters");
        let image = image.apply(&records);
        let tenant = image.tenant_by_name("acme").unwrap();
        assert_eq!(
            tenant.quotas,
            BTreeMap::from([("consumer_byte_rate".to_string(), 4e6)])
        );
        assert_eq!(tenant.limits, TenantLimits::default());
        assert_eq!(TenantControl.alter(&image, "acme", &change), Ok(Vec::new()));
        assert!(matches!(
            TenantControl.alter(&image, "nobody", &change),
            Err(ControllerError::ResourceNotFound(_))
        ));
    }

    #[test]
    fn users_belong_to_one_tenant_and_deletion_is_refused_while_topics_remain() {
        let image = created(&MetadataImage::default(), "lc-aaaa1", "acme");
        let image = created(&image, "lc-bbbb2", "globex");
        let c = TenantControl;
        let join = c.add_user(&image, "acme", "alice", true).expect("joins");
        let image = image.apply(&[join]);
        // Tenants and memberships are in the quorum's snapshot.
        let json = serde_json::to_string(&image).expect("serialises");
        let restored: MetadataImage = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(restored, image);
        assert_eq!(
            image.tenant_member("alice").map(|m| m.tenant_id.as_str()),
            Some("lc-aaaa1")
        );
        assert!(matches!(
            c.add_user(&image, "globex", "alice", false),
            Err(ControllerError::DuplicateResource(_))
        ));
        assert!(matches!(
            c.remove_user(&image, "globex", "alice"),
            Err(ControllerError::ResourceNotFound(_))
        ));
        let topic_id = uuid::Uuid::new_v4();
        let image = image.apply(&[MetadataRecord::Topic {
            name: "lc-aaaa1_orders".into(),
            topic_id,
        }]);
        assert!(matches!(
            c.plan_deletion(&image, "acme", false),
            Err(ControllerError::PolicyViolation(_))
        ));
        let plan = c.plan_deletion(&image, "acme", true).expect("forced");
        assert_eq!(plan.topics, vec![topic_id]);
        assert_eq!(plan.users, vec!["alice".to_string()]);
        let image = image.apply(&[c.remove(&plan)]);
        assert!(image.tenant_by_name("acme").is_none());
        assert!(image.tenant_member("alice").is_none());
        assert!(c.plan_deletion(&image, "globex", false).is_ok());
    }
}
