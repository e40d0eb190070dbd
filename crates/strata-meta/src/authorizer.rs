//! The authorization decision of Kafka's `StandardAuthorizer` (`StandardAuthorizerData`), as a
//! pure function of the image's ACLs and the authorizer's settings.
//!
//! For an action (operation on a resource) by a principal from a host:
//! 1. a principal in `super.users` is allowed everything;
//! 2. the ACLs that apply to the resource are its LITERAL ones, the LITERAL `*` ones and the
//!    PREFIXED ones whose name starts the resource's name;
//! 3. of those, an ACL matches when its principal is the principal or `User:*`, its host the
//!    client's address or `*`, and its operation the action's or ALL — except that an ALLOW
//!    of READ, WRITE, DELETE or ALTER also allows DESCRIBE, and an ALLOW of ALTER_CONFIGS
//!    also allows DESCRIBE_CONFIGS (a DENY implies nothing);
//! 4. a matching DENY wins; else a matching ALLOW allows; else, when no ACL at all applies
//!    to the resource, `allow.everyone.if.no.acl.found` decides; else the action is denied.

use std::collections::BTreeSet;

use crate::acl::{
    AclBinding, AclOperation, AclPermissionType, AclSet, PatternType, ResourceType, WILDCARD,
    WILDCARD_PRINCIPAL,
};

/// The settings of the StandardAuthorizer (Kafka's `super.users`,
/// `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    /// Principals allowed everything, as `Type:name` strings.
    pub super_users: BTreeSet<String>,
    /// The answer for a resource no ACL applies to (default false, as Kafka's).
    pub allow_if_no_acl_found: bool,
}

impl AuthorizerSettings {
    /// Parses Kafka's `super.users` (principals separated by `;`, blanks ignored).
    pub fn parse_super_users(value: &str) -> BTreeSet<String> {
        value
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// What is asked: `operation` on the resource `(resource_type, name)` by `principal`
/// (`Type:name`) from `host` (the client's IP address, without Java's leading `/`).
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: AclOperation,
    pub resource_type: ResourceType,
    pub name: &'a str,
}

/// The decision and why, for logs and an audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(Reason),
    Denied(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SuperUser,
    /// A matching ACL decided.
    Acl,
    /// No ACL applies to the resource: `allow.everyone.if.no.acl.found` decided.
    NoAclFound,
    /// ACLs apply to the resource but none matches this principal, host and operation.
    NoMatchingAcl,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

/// Kafka's `StandardAuthorizerData.authorize` over `acls` (see the module documentation).
pub fn authorize(acls: &AclSet, settings: &AuthorizerSettings, action: &Action<'_>) -> Decision {
    if settings.super_users.contains(action.principal) {
        return Decision::Allowed(Reason::SuperUser);
    }
    let mut any_applies = false;
    let mut allowed = false;
    for acl in acls.applying_to(action.resource_type, action.name) {
        any_applies = true;
        match matches(acl, action) {
            Some(AclPermissionType::Deny) => return Decision::Denied(Reason::Acl),
            Some(_) => allowed = true,
            None => {}
        }
    }
    if allowed {
        Decision::Allowed(Reason::Acl)
    } else if !any_applies && settings.allow_if_no_acl_found {
        Decision::Allowed(Reason::NoAclFound)
    } else if !any_applies {
        Decision::Denied(Reason::NoAclFound)
    } else {
        Decision::Denied(Reason::NoMatchingAcl)
    }
}

/// Kafka's `Authorizer.authorizeByResourceType` (KIP-679): may `principal` from `host` do
/// `operation` on some resource of `resource_type`? Used where Kafka asks for WRITE on any
/// topic (an idempotent producer's InitProducerId). True for a super user (and, with no ACL on
/// a resource, as `allow.everyone.if.no.acl.found` says), for an ALLOW on the `*` resource, and
/// for an ALLOW on a literal or prefixed name that no DENY on the same literal name or on a
/// prefix of it covers; a DENY on the `*` resource denies. Operations match exactly or through
/// ALL, without implication, as in Kafka.
pub fn authorize_by_resource_type(
    acls: &AclSet,
    settings: &AuthorizerSettings,
    principal: &str,
    host: &str,
    operation: AclOperation,
    resource_type: ResourceType,
) -> bool {
    let probe = Action {
        principal,
        host,
        operation,
        resource_type,
        name: "hardcode",
    };
    if authorize(acls, settings, &probe).is_allowed() {
        return true;
    }
    let mut denied_literals = BTreeSet::new();
    let mut denied_prefixes = BTreeSet::new();
    let mut allowed = Vec::new();
    // A DENY on `*` wins over an ALLOW on `*` whichever comes first, so the ALLOW only counts
    // once every ACL has been seen.
    let mut wildcard_allowed = false;
    for (_, acl) in acls.iter() {
        if acl.resource_type != resource_type
            || (acl.host != WILDCARD && acl.host != host)
            || (acl.principal != principal && acl.principal != WILDCARD_PRINCIPAL)
            || (acl.operation != operation && acl.operation != AclOperation::All)
        {
            continue;
        }
        let name = acl.resource_name.as_str();
        match (acl.permission, acl.pattern_type) {
            (AclPermissionType::Deny, PatternType::Literal) if name == WILDCARD => return false,
            (AclPermissionType::Deny, PatternType::Literal) => {
                denied_literals.insert(name);
            }
            (AclPermissionType::Deny, PatternType::Prefixed) => {
                denied_prefixes.insert(name);
            }
            (AclPermissionType::Allow, PatternType::Literal) if name == WILDCARD => {
                wildcard_allowed = true;
            }
            (AclPermissionType::Allow, pattern) => allowed.push((pattern, name)),
            _ => {}
        }
    }
    wildcard_allowed
        || allowed.iter().any(|(pattern, name)| {
            let literal_denied = *pattern == PatternType::Literal && denied_literals.contains(name);
            let prefix_denied = (1..=name.len())
                .filter(|end| name.is_char_boundary(*end))
                .any(|end| denied_prefixes.contains(&name[..end]));
            !literal_denied && !prefix_denied
        })
}

/// Kafka's `StandardAuthorizerData.findResult`: the permission of `acl` if it matches the
/// action's principal, host and operation, `None` if it says nothing about the action.
fn matches(acl: &AclBinding, action: &Action<'_>) -> Option<AclPermissionType> {
    if acl.principal != action.principal && acl.principal != WILDCARD_PRINCIPAL {
        return None;
    }
    if acl.host != WILDCARD && acl.host != action.host {
        return None;
    }
    if acl.operation != AclOperation::All {
        let operation_matches = if acl.permission == AclPermissionType::Allow {
            match action.operation {
                AclOperation::Describe => matches!(
                    acl.operation,
                    AclOperation::Describe
                        | AclOperation::Read
                        | AclOperation::Write
                        | AclOperation::Delete
                        | AclOperation::Alter
                ),
                AclOperation::DescribeConfigs => matches!(
                    acl.operation,
                    AclOperation::DescribeConfigs | AclOperation::AlterConfigs
                ),
                op => op == acl.operation,
            }
        } else {
            action.operation == acl.operation
        };
        if !operation_matches {
            return None;
        }
    }
    Some(acl.permission)
}

#[cfg(test)]
mod tests {
    //! Cases after Kafka's `StandardAuthorizerTest` and `StandardAuthorizerData` rules.
    use uuid::Uuid;

    use super::*;
    use crate::acl::PatternType;
    use AclOperation::*;
    use AclPermissionType::*;
    use PatternType::{Literal, Prefixed};
    use ResourceType::{Cluster, Group, Topic};

    struct Fixture {
        acls: AclSet,
        settings: AuthorizerSettings,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                acls: AclSet::default(),
                settings: AuthorizerSettings::default(),
            }
        }

        #[allow(clippy::too_many_arguments)]
        fn add(
            &mut self,
            resource_type: ResourceType,
            name: &str,
            pattern_type: PatternType,
            principal: &str,
            host: &str,
            operation: AclOperation,
            permission: AclPermissionType,
        ) -> &mut Self {
            self.acls.insert(
                Uuid::new_v4(),
                AclBinding {
                    resource_type,
                    resource_name: name.into(),
                    pattern_type,
                    principal: principal.into(),
                    host: host.into(),
                    operation,
                    permission,
                },
            );
            self
        }

        fn decide(
            &self,
            principal: &str,
            host: &str,
            operation: AclOperation,
            resource_type: ResourceType,
            name: &str,
        ) -> Decision {
            authorize(
                &self.acls,
                &self.settings,
                &Action {
                    principal,
                    host,
                    operation,
                    resource_type,
                    name,
                },
            )
        }

        fn allows(&self, principal: &str, operation: AclOperation, topic: &str) -> bool {
            self.decide(principal, "127.0.0.1", operation, Topic, topic)
                .is_allowed()
        }
    }

    #[test]
    fn no_acls_deny_unless_allow_everyone_if_no_acl_found() {
        let mut f = Fixture::new();
        assert_eq!(
            f.decide("User:alice", "1.2.3.4", Read, Topic, "t"),
            Decision::Denied(Reason::NoAclFound)
        );
        f.settings.allow_if_no_acl_found = true;
        assert_eq!(
            f.decide("User:alice", "1.2.3.4", Read, Topic, "t"),
            Decision::Allowed(Reason::NoAclFound)
        );
        // An ACL on the resource for somebody else turns the default off for that resource
        // (testAllowEveryoneIfNoAclFound... in Kafka's AclAuthorizerTest).
        f.add(Topic, "t", Literal, "User:bob", "*", Read, Allow);
        assert_eq!(
            f.decide("User:alice", "1.2.3.4", Read, Topic, "t"),
            Decision::Denied(Reason::NoMatchingAcl)
        );
        assert!(f.allows("User:alice", Read, "other"));
        // A prefixed or wildcard ACL applies to the resource too.
        f.add(Topic, "ot", Prefixed, "User:bob", "*", Read, Allow);
        assert!(!f.allows("User:alice", Read, "other"));
    }

    #[test]
    fn super_users_are_allowed_everything_even_over_a_deny() {
        let mut f = Fixture::new();
        f.settings.super_users = AuthorizerSettings::parse_super_users(" User:admin ;User:root;");
        assert_eq!(f.settings.super_users.len(), 2);
        f.add(Topic, "*", Literal, "User:*", "*", All, Deny);
        assert_eq!(
            f.decide("User:admin", "10.0.0.1", Delete, Topic, "t"),
            Decision::Allowed(Reason::SuperUser)
        );
        assert!(f
            .decide(
                "User:root",
                "10.0.0.1",
                ClusterAction,
                Cluster,
                "kafka-cluster"
            )
            .is_allowed());
        assert!(!f.allows("User:alice", Read, "t"));
        assert!(
            !f.allows("Group:admin", Read, "t"),
            "the type is part of the name"
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let mut f = Fixture::new();
        f.add(Topic, "t", Literal, "User:alice", "*", Read, Allow)
            .add(Topic, "t", Literal, "User:alice", "*", Read, Deny);
        assert_eq!(
            f.decide("User:alice", "1.1.1.1", Read, Topic, "t"),
            Decision::Denied(Reason::Acl)
        );
        // A DENY from a prefix or the wildcard wins over a LITERAL ALLOW as well.
        let mut f = Fixture::new();
        f.add(Topic, "foobar", Literal, "User:alice", "*", Write, Allow)
            .add(Topic, "foo", Prefixed, "User:*", "*", Write, Deny);
        assert!(!f.allows("User:alice", Write, "foobar"));
        let mut f = Fixture::new();
        f.add(Topic, "foobar", Literal, "User:alice", "*", All, Allow)
            .add(Topic, "*", Literal, "User:alice", "*", Write, Deny);
        assert!(!f.allows("User:alice", Write, "foobar"));
        assert!(f.allows("User:alice", Read, "foobar"));
    }

    #[test]
    fn principal_and_host_wildcards() {
        let mut f = Fixture::new();
        f.add(Topic, "t", Literal, "User:*", "*", Read, Allow).add(
            Topic,
            "u",
            Literal,
            "User:alice",
            "10.0.0.1",
            Write,
            Allow,
        );
        assert!(f.allows("User:anyone", Read, "t"));
        assert!(f
            .decide("User:ANONYMOUS", "::1", Read, Topic, "t")
            .is_allowed());
        // Kafka's wildcard principal is `User:*` and it matches principals of every type.
        assert!(f.allows("Group:x", Read, "t"));
        assert!(f
            .decide("User:alice", "10.0.0.1", Write, Topic, "u")
            .is_allowed());
        assert!(!f
            .decide("User:alice", "10.0.0.2", Write, Topic, "u")
            .is_allowed());
        assert!(!f
            .decide("User:bob", "10.0.0.1", Write, Topic, "u")
            .is_allowed());
    }

    #[test]
    fn literal_prefixed_and_wildcard_resources() {
        let mut f = Fixture::new();
        f.add(Topic, "foo", Prefixed, "User:alice", "*", Read, Allow)
            .add(Topic, "*", Literal, "User:bob", "*", Read, Allow)
            .add(Topic, "exact", Literal, "User:carol", "*", Read, Allow)
            .add(Group, "foo", Prefixed, "User:alice", "*", Read, Allow);
        assert!(f.allows("User:alice", Read, "foo"));
        assert!(f.allows("User:alice", Read, "foobar"));
        assert!(!f.allows("User:alice", Read, "fo"));
        assert!(!f.allows("User:alice", Read, "barfoo"));
        assert!(f.allows("User:bob", Read, "anything"));
        assert!(f.allows("User:carol", Read, "exact"));
        assert!(!f.allows("User:carol", Read, "exact2"));
        assert!(!f.allows("User:carol", Read, "exac"));
        // A literal ACL named `*` is the wildcard; a prefixed one named `*` is not.
        let mut f = Fixture::new();
        f.add(Topic, "*", Prefixed, "User:alice", "*", Read, Allow);
        assert!(!f.allows("User:alice", Read, "t"));
        assert!(f.allows("User:alice", Read, "*t"));
        // Resource types are separate.
        let mut f = Fixture::new();
        f.add(Group, "g", Literal, "User:alice", "*", Read, Allow);
        assert!(!f.allows("User:alice", Read, "g"));
        assert!(f.decide("User:alice", "h", Read, Group, "g").is_allowed());
    }

    #[test]
    fn allows_imply_describe_and_describe_configs_but_denies_imply_nothing() {
        for op in [Read, Write, Delete, Alter, Describe] {
            let mut f = Fixture::new();
            f.add(Topic, "t", Literal, "User:a", "*", op, Allow);
            assert!(f.allows("User:a", Describe, "t"), "{op:?} implies DESCRIBE");
            assert!(!f.allows("User:a", DescribeConfigs, "t"));
        }
        for op in [
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ] {
            let mut f = Fixture::new();
            f.add(Topic, "t", Literal, "User:a", "*", op, Allow);
            assert!(
                !f.allows("User:a", Describe, "t"),
                "{op:?} implies no DESCRIBE"
            );
        }
        let mut f = Fixture::new();
        f.add(Topic, "t", Literal, "User:a", "*", AlterConfigs, Allow);
        assert!(f.allows("User:a", DescribeConfigs, "t"));
        assert!(f.allows("User:a", AlterConfigs, "t"));
        assert!(!f.allows("User:a", Alter, "t"));
        // READ does not imply WRITE, nor DESCRIBE imply READ.
        let mut f = Fixture::new();
        f.add(Topic, "t", Literal, "User:a", "*", Describe, Allow);
        assert!(!f.allows("User:a", Read, "t"));
        // A DENY of READ denies READ only, not DESCRIBE (the ALLOW of ALL still gives it).
        let mut f = Fixture::new();
        f.add(Topic, "t", Literal, "User:a", "*", All, Allow)
            .add(Topic, "t", Literal, "User:a", "*", Read, Deny);
        assert!(!f.allows("User:a", Read, "t"));
        assert!(f.allows("User:a", Describe, "t"));
        assert!(f.allows("User:a", Write, "t"));
        // A DENY of DESCRIBE does not deny READ; a DENY of ALL denies everything.
        let mut f = Fixture::new();
        f.add(Topic, "t", Literal, "User:a", "*", Read, Allow)
            .add(Topic, "t", Literal, "User:a", "*", Describe, Deny);
        assert!(f.allows("User:a", Read, "t"));
        assert!(!f.allows("User:a", Describe, "t"));
        f.add(Topic, "t", Literal, "User:*", "*", All, Deny);
        assert!(!f.allows("User:a", Read, "t"));
    }

    #[test]
    fn by_resource_type_finds_an_allow_not_covered_by_a_deny() {
        let any_write = |f: &Fixture, principal: &str| {
            authorize_by_resource_type(&f.acls, &f.settings, principal, "10.0.0.1", Write, Topic)
        };
        let mut f = Fixture::new();
        assert!(!any_write(&f, "User:alice"), "no ACL: denied by default");
        f.add(Topic, "orders", Literal, "User:alice", "*", Write, Allow);
        assert!(any_write(&f, "User:alice"));
        assert!(!any_write(&f, "User:bob"));
        // A DENY on the same literal, or on a prefix of it, covers the ALLOW.
        f.add(Topic, "ord", Prefixed, "User:alice", "*", Write, Deny);
        assert!(!any_write(&f, "User:alice"));
        f.add(Topic, "pay", Prefixed, "User:alice", "*", All, Allow);
        assert!(any_write(&f, "User:alice"), "ALL counts as WRITE");
        // A DENY on `*` denies everything; an ALLOW on `*` allows.
        let mut g = Fixture::new();
        g.add(Topic, "*", Literal, "User:*", "*", Write, Allow);
        assert!(any_write(&g, "User:carol"));
        g.add(Topic, "*", Literal, "User:carol", "*", Write, Deny);
        assert!(!any_write(&g, "User:carol"));
        // Operations are not implied: READ on a topic is not WRITE on any.
        let mut h = Fixture::new();
        h.add(Topic, "orders", Literal, "User:dan", "*", Read, Allow);
        assert!(!any_write(&h, "User:dan"));
        h.settings.super_users.insert("User:dan".into());
        assert!(any_write(&h, "User:dan"), "super users may");
    }
}
