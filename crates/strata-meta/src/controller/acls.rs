//! ACLs (Kafka's `AclControlManager`): CreateAcls and DeleteAcls as
//! `AccessControlEntry` / `RemoveAccessControlEntry` records, validated with Kafka's rules.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::ControllerError;
use crate::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
    CLUSTER_NAME,
};
use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// ACL changes as records.
#[derive(Debug, Default)]
pub struct AclControl;

impl AclControl {
    /// Kafka's `AclControlManager.validateNewAcl` and the broker's `validateAclBinding`: what
    /// a binding to store must be (see [`AclBinding`]'s invariant).
    pub fn validate_new_acl(binding: &AclBinding) -> Result<(), ControllerError> {
        let invalid = |m: String| Err(ControllerError::InvalidRequest(m));
        if matches!(
            binding.resource_type,
            ResourceType::Unknown | ResourceType::Any
        ) {
            return invalid(format!("Invalid resourceType {:?}", binding.resource_type));
        }
        if !matches!(
            binding.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return invalid(format!("Invalid patternType {:?}", binding.pattern_type));
        }
        if matches!(binding.operation, AclOperation::Unknown | AclOperation::Any) {
            return invalid(format!("Invalid operation {:?}", binding.operation));
        }
        if !matches!(
            binding.permission,
            AclPermissionType::Allow | AclPermissionType::Deny
        ) {
            return invalid(format!("Invalid permissionType {:?}", binding.permission));
        }
        if binding.resource_name.is_empty() {
            return invalid("Resource name should not be empty".into());
        }
        // A tenant's logical cluster has its own CLUSTER resource, under its prefix.
        if binding.resource_type == ResourceType::Cluster
            && binding.resource_name != CLUSTER_NAME
            && !crate::tenant::is_tenant_cluster_resource(&binding.resource_name)
        {
            return invalid(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if !binding.principal.contains(':') {
            return invalid(format!(
                "Could not parse principal from `{}` (no colon is present separating the principal type from the principal name)",
                binding.principal
            ));
        }
        Ok(())
    }

    /// Records creating `bindings`, one result per binding in order. An invalid binding is
    /// refused alone; one equal to a stored ACL (or to an earlier one of the same request)
    /// succeeds without a record, as Kafka's `createAcls` does.
    pub fn create_acls(
        &self,
        image: &MetadataImage,
        bindings: &[AclBinding],
    ) -> (Vec<Result<(), ControllerError>>, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let mut added = BTreeSet::new();
        let results = bindings
            .iter()
            .map(|binding| {
                Self::validate_new_acl(binding)?;
                if image.acls().find(binding).is_none() && added.insert(binding.clone()) {
                    records.push(MetadataRecord::AccessControlEntry {
                        id: new_id(image, &records),
                        acl: binding.clone(),
                    });
                }
                Ok(())
            })
            .collect();
        (results, records)
    }

    /// Records deleting every ACL each filter matches, one result per filter: the bindings it
    /// matched, or why the filter was refused. An ACL matched by several filters is in each
    /// of their results and removed once.
    pub fn delete_acls(
        &self,
        image: &MetadataImage,
        filters: &[AclBindingFilter],
    ) -> (
        Vec<Result<Vec<AclBinding>, ControllerError>>,
        Vec<MetadataRecord>,
    ) {
        let mut removed = BTreeSet::new();
        let results = filters
            .iter()
            .map(|filter| {
                if filter.is_unknown() {
                    return Err(ControllerError::InvalidRequest(
                        "Unknown patternFilter or entryFilter.".into(),
                    ));
                }
                Ok(image
                    .acls()
                    .iter()
                    .filter(|(_, acl)| filter.matches(acl))
                    .map(|(id, acl)| {
                        removed.insert(*id);
                        acl.clone()
                    })
                    .collect())
            })
            .collect();
        let records = removed
            .into_iter()
            .map(|id| MetadataRecord::RemoveAccessControlEntry { id })
            .collect();
        (results, records)
    }
}

/// A fresh ACL id: not nil, not stored, not given to another record of this batch.
fn new_id(image: &MetadataImage, batch: &[MetadataRecord]) -> Uuid {
    loop {
        let id = Uuid::new_v4();
        let taken = batch.iter().any(
            |r| matches!(r, MetadataRecord::AccessControlEntry { id: other, .. } if *other == id),
        );
        if !id.is_nil() && image.acls().get(&id).is_none() && !taken {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::WILDCARD;
    use crate::controller::Controller;

    fn binding(name: &str, principal: &str, permission: AclPermissionType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: WILDCARD.into(),
            operation: AclOperation::Read,
            permission,
        }
    }

    #[test]
    fn invalid_bindings_are_refused_with_kafka_messages() {
        let good = binding("t", "User:a", AclPermissionType::Allow);
        assert!(AclControl::validate_new_acl(&good).is_ok());
        let cases: Vec<(AclBinding, &str)> = vec![
            (
                AclBinding {
                    resource_type: ResourceType::Any,
                    ..good.clone()
                },
                "Invalid resourceType",
            ),
            (
                AclBinding {
                    resource_type: ResourceType::Unknown,
                    ..good.clone()
                },
                "Invalid resourceType",
            ),
            (
                AclBinding {
                    pattern_type: PatternType::Match,
                    ..good.clone()
                },
                "Invalid patternType",
            ),
            (
                AclBinding {
                    pattern_type: PatternType::Any,
                    ..good.clone()
                },
                "Invalid patternType",
            ),
            (
                AclBinding {
                    operation: AclOperation::Any,
                    ..good.clone()
                },
                "Invalid operation",
            ),
            (
                AclBinding {
                    operation: AclOperation::Unknown,
                    ..good.clone()
                },
                "Invalid operation",
            ),
            (
                AclBinding {
                    permission: AclPermissionType::Any,
                    ..good.clone()
                },
                "Invalid permissionType",
            ),
            (binding("", "User:a", AclPermissionType::Allow), "empty"),
            (binding("t", "alice", AclPermissionType::Allow), "no colon"),
            (
                AclBinding {
                    resource_type: ResourceType::Cluster,
                    resource_name: "other".into(),
                    ..good.clone()
                },
                "kafka-cluster",
            ),
        ];
        for (bad, message) in cases {
            match AclControl::validate_new_acl(&bad) {
                Err(ControllerError::InvalidRequest(m)) => {
                    assert!(m.contains(message), "{m} should say {message}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn create_is_idempotent_and_delete_removes_what_filters_match() {
        let controller = Controller::new(1);
        let image = MetadataImage::default();
        let allow = binding("t", "User:a", AclPermissionType::Allow);
        let deny = binding("u", "User:b", AclPermissionType::Deny);
        let bad = binding("", "User:a", AclPermissionType::Allow);
        let (results, records) =
            controller.create_acls(&image, &[allow.clone(), deny.clone(), allow.clone(), bad]);
        assert!(results[0].is_ok() && results[1].is_ok() && results[2].is_ok());
        assert!(matches!(
            results[3],
            Err(ControllerError::InvalidRequest(_))
        ));
        assert_eq!(records.len(), 2, "the duplicate is written once");
        let image = image.apply(&records);
        assert_eq!(image.acls().len(), 2);
        let (results, records) = controller.create_acls(&image, std::slice::from_ref(&allow));
        assert!(results[0].is_ok());
        assert!(records.is_empty(), "an existing ACL is not written again");

        let by_principal = AclBindingFilter {
            principal: Some("User:a".into()),
            ..AclBindingFilter::any()
        };
        let unknown = AclBindingFilter {
            pattern_type: PatternType::Unknown,
            ..AclBindingFilter::any()
        };
        let (results, records) =
            controller.delete_acls(&image, &[by_principal, AclBindingFilter::any(), unknown]);
        assert_eq!(results[0].as_ref().unwrap(), &vec![allow.clone()]);
        assert_eq!(results[1].as_ref().unwrap().len(), 2);
        assert!(matches!(
            results[2],
            Err(ControllerError::InvalidRequest(_))
        ));
        assert_eq!(records.len(), 2, "each matched ACL is removed once");
        let image = image.apply(&records);
        assert!(image.acls().is_empty());
        // The ACLs survive the image's snapshot form.
        let (_, records) = controller.create_acls(&image, &[allow, deny]);
        let image = image.apply(&records);
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.acls(), image.acls());
    }
}
