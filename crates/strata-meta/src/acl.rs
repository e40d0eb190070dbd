//! ACLs as Kafka models them (`org.apache.kafka.common.acl` and `.resource`): a binding of a
//! resource pattern to an access-control entry, the filters of DescribeAcls and DeleteAcls,
//! and the set of ACLs the image holds, indexed for the authorizer.
//!
//! The enums carry Kafka's wire codes, so a request's `i8` maps to them and back unchanged;
//! a code this software does not know is `Unknown`, as Kafka's `fromCode` gives it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only name a CLUSTER resource has (Kafka's `Resource.CLUSTER_NAME`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The resource name and host that match every name and host (Kafka's `WILDCARD_RESOURCE`,
/// `AclEntry.WILDCARD_HOST`).
pub const WILDCARD: &str = "*";
/// The principal an ACL names to match every principal, of any type (Kafka's
/// `WILDCARD_KAFKA_PRINCIPAL`).
pub const WILDCARD_PRINCIPAL: &str = "User:*";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Kafka's `fromCode`: a code this software does not know is `Unknown`.
            pub fn from_code(code: i8) -> Self {
                match code {
                    $($code => $name::$variant,)+
                    _ => $name::Unknown,
                }
            }

            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code),+
                }
            }
        }
    };
}

wire_enum!(
    /// Kafka's `ResourceType`.
    ResourceType {
        Unknown = 0,
        Any = 1,
        Topic = 2,
        Group = 3,
        Cluster = 4,
        TransactionalId = 5,
        DelegationToken = 6,
        User = 7,
    }
);

wire_enum!(
    /// Kafka's `PatternType`: LITERAL and PREFIXED are stored; ANY and MATCH only filter.
    PatternType {
        Unknown = 0,
        Any = 1,
        Match = 2,
        Literal = 3,
        Prefixed = 4,
    }
);

wire_enum!(
    /// Kafka's `AclOperation`.
    AclOperation {
        Unknown = 0,
        Any = 1,
        All = 2,
        Read = 3,
        Write = 4,
        Create = 5,
        Delete = 6,
        Alter = 7,
        Describe = 8,
        ClusterAction = 9,
        DescribeConfigs = 10,
        AlterConfigs = 11,
        IdempotentWrite = 12,
        CreateTokens = 13,
        DescribeTokens = 14,
    }
);

wire_enum!(
    /// Kafka's `AclPermissionType`.
    AclPermissionType {
        Unknown = 0,
        Any = 1,
        Deny = 2,
        Allow = 3,
    }
);

/// One ACL (Kafka's `AclBinding`, the body of an `AccessControlEntryRecord`): a principal
/// from a host may (ALLOW) or may not (DENY) do an operation on the resources a pattern
/// names.
///
/// Invariant for a stored binding (checked by the controller before it writes one):
/// resource type neither UNKNOWN nor ANY, pattern LITERAL or PREFIXED, operation neither
/// UNKNOWN nor ANY, permission ALLOW or DENY, non-empty name, principal of the form
/// `Type:name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

/// A DescribeAcls / DeleteAcls filter (Kafka's `AclBindingFilter`): `None` strings and ANY
/// enums match everything; MATCH as pattern type matches the stored patterns that would
/// apply to the named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// The filter that matches every ACL.
    pub fn any() -> Self {
        Self {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }

    /// Kafka's `AclBindingFilter.isUnknown`: a filter naming a code this software does not
    /// know matches nothing it could mean, so requests refuse it.
    pub fn is_unknown(&self) -> bool {
        self.resource_type == ResourceType::Unknown
            || self.pattern_type == PatternType::Unknown
            || self.operation == AclOperation::Unknown
            || self.permission == AclPermissionType::Unknown
    }

    /// Kafka's `AclBindingFilter.matches` (its `ResourcePatternFilter.matches` and
    /// `AccessControlEntryFilter.matches`): entry fields compare exactly, without wildcard
    /// meaning, and the pattern as `PatternType::Match` explains.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        self.matches_pattern(acl)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == AclOperation::Any || self.operation == acl.operation)
            && (self.permission == AclPermissionType::Any || self.permission == acl.permission)
    }

    fn matches_pattern(&self, acl: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != acl.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != acl.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == acl.pattern_type {
            return *name == acl.resource_name;
        }
        match acl.pattern_type {
            PatternType::Literal => *name == acl.resource_name || acl.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&acl.resource_name),
            _ => false,
        }
    }
}

/// The ACLs of the image, by id, with the index the authorizer searches: the ids of the
/// ACLs of each (resource type, pattern type, name).
///
/// Invariant: `index` holds exactly the ids of `by_id`, each under its own binding's key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AclSet {
    by_id: BTreeMap<Uuid, AclBinding>,
    index: BTreeMap<(ResourceType, PatternType, String), BTreeSet<Uuid>>,
}

impl AclSet {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &Uuid) -> Option<&AclBinding> {
        self.by_id.get(id)
    }

    /// Every ACL with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &AclBinding)> {
        self.by_id.iter()
    }

    /// The id of an ACL equal to `binding`, if one is stored.
    pub fn find(&self, binding: &AclBinding) -> Option<Uuid> {
        self.index
            .get(&key(binding))?
            .iter()
            .find(|id| self.by_id.get(id) == Some(binding))
            .copied()
    }

    /// Adds (or replaces) the ACL `id`.
    pub fn insert(&mut self, id: Uuid, binding: AclBinding) {
        self.remove(&id);
        self.index.entry(key(&binding)).or_default().insert(id);
        self.by_id.insert(id, binding);
    }

    /// Removes the ACL `id`, returning it.
    pub fn remove(&mut self, id: &Uuid) -> Option<AclBinding> {
        let binding = self.by_id.remove(id)?;
        let k = key(&binding);
        if let Some(ids) = self.index.get_mut(&k) {
            ids.remove(id);
            if ids.is_empty() {
                self.index.remove(&k);
            }
        }
        Some(binding)
    }

    /// The ACLs that apply to the resource `(resource_type, name)`: LITERAL ones of that name
    /// or of `*`, and PREFIXED ones whose name starts `name` (Kafka's
    /// `StandardAuthorizerData` searches the same three places).
    pub fn applying_to<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = [name, WILDCARD]
            .into_iter()
            .enumerate()
            // `*` is searched once, even for a resource named `*`.
            .filter(move |(i, n)| *i == 0 || *n != name)
            .map(move |(_, n)| (resource_type, PatternType::Literal, n.to_string()));
        let prefixes = name
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .map(move |end| {
                (
                    resource_type,
                    PatternType::Prefixed,
                    name[..end].to_string(),
                )
            });
        literal
            .chain(prefixes)
            .filter_map(|k| self.index.get(&k))
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }
}

fn key(binding: &AclBinding) -> (ResourceType, PatternType, String) {
    (
        binding.resource_type,
        binding.pattern_type,
        binding.resource_name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        operation: AclOperation,
        permission: AclPermissionType,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: WILDCARD.into(),
            operation,
            permission,
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_are_unknown() {
        for code in 0..=7 {
            assert_eq!(ResourceType::from_code(code).code(), code);
        }
        for code in 0..=14 {
            assert_eq!(AclOperation::from_code(code).code(), code);
        }
        assert_eq!(ResourceType::from_code(42), ResourceType::Unknown);
        assert_eq!(PatternType::from_code(-1), PatternType::Unknown);
        assert_eq!(AclPermissionType::from_code(3), AclPermissionType::Allow);
        assert_eq!(PatternType::from_code(4), PatternType::Prefixed);
    }

    #[test]
    fn filters_match_as_kafka_resource_pattern_filter() {
        use AclOperation::Read;
        use AclPermissionType::{Allow, Deny};
        use PatternType::*;
        let literal = acl(ResourceType::Topic, "foo", Literal, "User:a", Read, Allow);
        let wildcard = acl(ResourceType::Topic, "*", Literal, "User:a", Read, Allow);
        let prefixed = acl(ResourceType::Topic, "fo", Prefixed, "User:a", Read, Allow);
        let filter = |pattern_type, name: Option<&str>| AclBindingFilter {
            resource_type: ResourceType::Topic,
            resource_name: name.map(String::from),
            pattern_type,
            ..AclBindingFilter::any()
        };
        // MATCH: everything that applies to the named resource.
        let m = filter(Match, Some("foo"));
        assert!(m.matches(&literal) && m.matches(&wildcard) && m.matches(&prefixed));
        assert!(!filter(Match, Some("bar")).matches(&prefixed));
        // ANY and an exact pattern type: the name compares exactly.
        assert!(filter(Any, Some("foo")).matches(&literal));
        assert!(!filter(Any, Some("foo")).matches(&wildcard));
        assert!(!filter(Any, Some("foo")).matches(&prefixed));
        assert!(filter(Prefixed, Some("fo")).matches(&prefixed));
        assert!(!filter(Literal, Some("fo")).matches(&prefixed));
        assert!(!filter(Literal, Some("foo")).matches(&wildcard));
        // No name: every name of the pattern type.
        assert!(filter(Prefixed, None).matches(&prefixed));
        assert!(!filter(Prefixed, None).matches(&literal));
        // Entry fields compare exactly: `User:*` in a filter is not a wildcard.
        let entry = AclBindingFilter {
            principal: Some("User:*".into()),
            ..AclBindingFilter::any()
        };
        assert!(!entry.matches(&literal));
        let other_type = AclBindingFilter {
            resource_type: ResourceType::Group,
            ..AclBindingFilter::any()
        };
        assert!(!other_type.matches(&literal));
        assert!(AclBindingFilter::any().matches(&literal));
        let deny = AclBindingFilter {
            permission: Deny,
            ..AclBindingFilter::any()
        };
        assert!(!deny.matches(&literal));
        assert!(AclBindingFilter {
            operation: AclOperation::Unknown,
            ..AclBindingFilter::any()
        }
        .is_unknown());
    }

    #[test]
    fn the_set_finds_literal_wildcard_and_prefixed_acls() {
        use AclOperation::{Read, Write};
        use AclPermissionType::{Allow, Deny};
        use PatternType::{Literal, Prefixed};
        let mut set = AclSet::default();
        let bindings = [
            acl(
                ResourceType::Topic,
                "foobar",
                Literal,
                "User:a",
                Read,
                Allow,
            ),
            acl(ResourceType::Topic, "*", Literal, "User:a", Write, Allow),
            acl(ResourceType::Topic, "foo", Prefixed, "User:a", Read, Deny),
            acl(
                ResourceType::Topic,
                "foobarbaz",
                Prefixed,
                "User:a",
                Read,
                Deny,
            ),
            acl(
                ResourceType::Group,
                "foobar",
                Literal,
                "User:a",
                Read,
                Allow,
            ),
        ];
        let ids: Vec<Uuid> = bindings
            .iter()
            .map(|b| {
                let id = Uuid::new_v4();
                set.insert(id, b.clone());
                id
            })
            .collect();
        let found: BTreeSet<&AclBinding> = set.applying_to(ResourceType::Topic, "foobar").collect();
        assert_eq!(
            found,
            [&bindings[0], &bindings[1], &bindings[2]]
                .into_iter()
                .collect()
        );
        assert_eq!(set.applying_to(ResourceType::Topic, "*").count(), 1);
        assert_eq!(set.find(&bindings[2]), Some(ids[2]));
        assert_eq!(set.remove(&ids[2]), Some(bindings[2].clone()));
        assert_eq!(set.find(&bindings[2]), None);
        assert_eq!(set.applying_to(ResourceType::Topic, "foobar").count(), 2);
        assert_eq!(set.len(), 4);
        // Multi-byte names are cut at character boundaries only.
        set.insert(
            Uuid::new_v4(),
            acl(ResourceType::Topic, "é", Prefixed, "User:a", Read, Allow),
        );
        assert_eq!(set.applying_to(ResourceType::Topic, "éa").count(), 2);
    }
}
