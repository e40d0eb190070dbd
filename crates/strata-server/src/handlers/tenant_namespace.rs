//! A tenant's name space at the API edge (Kora's logical clusters): every name a tenant's
//! client sends — topic, group id, transactional id, ACL resource — is mapped to the internal
//! name `<tenant-id>_<name>` before the handler sees the request, and mapped back in the
//! answer. Below this seam nothing knows about tenants: handlers, coordinators and logs see
//! ordinary names, and two tenants' `orders` are two topics.
//!
//! Listings need no second filter: the seam puts a [`TenantScope`] on the request context,
//! under which every authorization of a name outside the tenant is denied, so handlers leave
//! other tenants' resources out of Metadata, ListGroups, ListTransactions and the like as they
//! leave out what a principal may not describe. The answer is still filtered here, as a second
//! wall: a name outside the tenant is never sent to it.
//!
//! An API this module does not map is refused (fail closed): the request's scope is `denied`,
//! every authorization fails, and the handler answers with its authorization error. That
//! covers the physical cluster's own APIs — brokers' configs and log dirs, the quorum, client
//! quotas, reassignments, features, replication — and any API added later. SCRAM credentials
//! are the tenant's own users' only.
//! Topic ids of another tenant's topics are replaced by the nil id, which names no topic.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{GroupId, RequestKind, ResponseKind, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use strata_meta::MetadataImage;
use uuid::Uuid;

use crate::session::{KafkaPrincipal, TenantScope};

/// Config resource types a tenant may name (Kafka's `ConfigResource.Type`): its topics and
/// groups. Brokers, broker loggers and client metrics are the physical cluster's.
const CONFIG_TOPIC: i8 = 2;
const CONFIG_GROUP: i8 = 32;

/// ACL resource types (Kafka's `ResourceType` codes) a tenant's ACLs may be on, and the
/// pattern types of its bindings.
const ACL_ANY: i8 = 1;
const ACL_TOPIC: i8 = 2;
const ACL_TRANSACTIONAL_ID: i8 = 5;
const PATTERN_LITERAL: i8 = 3;
const PATTERN_PREFIXED: i8 = 4;

/// FindCoordinator key types a tenant may ask for: groups (0) and transactions (1).
const COORDINATOR_TRANSACTION: i8 = 1;

/// The tenant `principal` belongs to, if any: users outside every tenant (operators, super
/// users) see the physical cluster.
pub(crate) fn scope_of(image: &MetadataImage, principal: &KafkaPrincipal) -> Option<TenantScope> {
    if principal.principal_type != KafkaPrincipal::USER_TYPE {
        return None;
    }
    image.tenant_member(&principal.name).map(|m| TenantScope {
        tenant_id: m.tenant_id.clone(),
        admin: m.admin,
        denied: false,
    })
}

/// Config resources a tenant may name: its topics and groups.
fn config_type_allowed(resource_type: i8) -> bool {
    matches!(resource_type, CONFIG_TOPIC | CONFIG_GROUP)
}

/// ACL resource types a tenant may use: topics, groups, its cluster, transactional ids; and
/// in a filter, any of them.
fn acl_type_allowed(resource_type: i8, filter: bool) -> bool {
    (ACL_TOPIC..=ACL_TRANSACTIONAL_ID).contains(&resource_type)
        || (filter && resource_type == ACL_ANY)
}

/// `regex` without its `^` anchors: those outside a character class and not escaped.
fn without_start_anchors(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len());
    let (mut escaped, mut class) = (false, false);
    for c in regex.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => class = true,
            ']' => class = false,
            '^' if !class => continue,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A name carried by a message field: the protocol's typed names and plain strings.
trait Named {
    fn text(&mut self) -> &mut StrBytes;
}

macro_rules! named {
    ($($t:ty)*) => {$(
        impl Named for $t {
            fn text(&mut self) -> &mut StrBytes {
                &mut self.0
            }
        }
    )*};
}
named!(TopicName GroupId TransactionalId);

impl Named for StrBytes {
    fn text(&mut self) -> &mut StrBytes {
        self
    }
}

/// One tenant's name mapping, for one request and its answer.
pub(crate) struct Namespace<'a> {
    tenant_id: &'a str,
    prefix: String,
    image: &'a MetadataImage,
}

impl<'a> Namespace<'a> {
    pub(crate) fn new(scope: &'a TenantScope, image: &'a MetadataImage) -> Self {
        Self {
            tenant_id: &scope.tenant_id,
            prefix: scope.prefix(),
            image,
        }
    }

    /// A client's name to its internal name.
    fn inward<N: Named>(&self, name: &mut N) {
        let text = name.text();
        *text = StrBytes::from_string(format!("{}{}", self.prefix, text));
    }

    /// An internal name back to the client's; false for a name outside the tenant, which must
    /// not reach the client. An empty name (an answer keyed by topic id) has nothing to map.
    #[must_use]
    fn outward<N: Named>(&self, name: &mut N) -> bool {
        let text = name.text();
        if text.is_empty() {
            return true;
        }
        match text.strip_prefix(self.prefix.as_str()) {
            Some(rest) => {
                *text = StrBytes::from_string(rest.to_string());
                true
            }
            None => false,
        }
    }

    fn outward_opt<N: Named>(&self, name: &mut Option<N>) -> bool {
        name.as_mut().is_none_or(|n| self.outward(n))
    }

    /// Whether `id` names another tenant's topic (or one of the physical cluster's).
    fn foreign_topic_id(&self, id: &Uuid) -> bool {
        self.image
            .topic_by_id(id)
            .is_some_and(|t| !strata_meta::tenant::owned_by(self.tenant_id, &t.name))
    }

    /// A topic id of another tenant's topic becomes the nil id, which names no topic.
    fn topic_id_inward(&self, id: &mut Uuid) {
        if self.foreign_topic_id(id) {
            *id = Uuid::nil();
        }
    }

    /// A client's topic regex (matched whole, as Kafka's) to one that matches only the
    /// tenant's internal names. Empty stays empty: it means no regex.
    ///
    /// The client's `^` anchors are dropped: the regex is matched whole, so one at the start
    /// of an alternative (librdkafka sends `^orders.*`) says nothing, and one after the prefix
    /// would never match. Describing the group shows the regex without them.
    fn regex_inward(&self, regex: &mut StrBytes) {
        if !regex.is_empty() {
            *regex = StrBytes::from_string(format!(
                "{}(?:{})",
                regex::escape(&self.prefix),
                without_start_anchors(regex)
            ));
        }
    }

    fn regex_outward(&self, regex: &mut StrBytes) {
        let wrapped = format!("{}(?:", regex::escape(&self.prefix));
        if let Some(inner) = regex
            .strip_prefix(wrapped.as_str())
            .and_then(|r| r.strip_suffix(')'))
        {
            *regex = StrBytes::from_string(inner.to_string());
        }
    }

    /// An ACL resource name (or filter name) to the tenant's: `kafka-cluster` becomes the
    /// tenant's CLUSTER resource like any other name, and the literal wildcard `*`, which
    /// would reach every tenant, becomes a PREFIXED binding on the tenant's prefix.
    fn acl_name_inward(&self, name: &mut StrBytes, pattern_type: &mut i8) {
        if name.as_str() == "*" && *pattern_type == PATTERN_LITERAL {
            *pattern_type = PATTERN_PREFIXED;
            *name = StrBytes::from_string(self.prefix.clone());
        } else {
            self.inward(name);
        }
    }

    #[must_use]
    fn acl_name_outward(&self, name: &mut StrBytes, pattern_type: &mut i8) -> bool {
        if *pattern_type == PATTERN_PREFIXED && name.as_str() == self.prefix {
            *pattern_type = PATTERN_LITERAL;
            *name = StrBytes::from_static_str("*");
            return true;
        }
        self.outward(name)
    }

    /// An ACL's principal must be one of the tenant's users, or `User:*` (which only reaches
    /// the tenant's resources, since its names are the tenant's).
    fn principal_allowed(&self, principal: &str) -> bool {
        match principal.strip_prefix("User:") {
            Some("*") => true,
            Some(user) => self.is_member(user),
            None => false,
        }
    }

    /// Whether `user` is one of the tenant's users (user names are not mapped: a user belongs
    /// to one tenant, and logs in under its own name).
    fn is_member(&self, user: &str) -> bool {
        self.image
            .tenant_member(user)
            .is_some_and(|m| m.tenant_id == self.tenant_id)
    }

    /// Whether what a request names is the tenant's kind of resource (not a broker's config,
    /// not a replica's fetch, not an ACL for another tenant's user or one that reaches beyond
    /// the tenant). Whether its API is one a tenant may use at all is
    /// [`Namespace::map_request`]'s answer.
    pub(crate) fn permitted(&self, body: &RequestKind) -> bool {
        match body {
            RequestKind::Fetch(r) => r.replica_id.0 < 0 && r.replica_state.replica_id.0 < 0,
            RequestKind::ListOffsets(r) => r.replica_id.0 < 0,
            RequestKind::OffsetForLeaderEpoch(r) => r.replica_id.0 < 0,
            RequestKind::DescribeConfigs(r) => r
                .resources
                .iter()
                .all(|c| config_type_allowed(c.resource_type)),
            RequestKind::AlterConfigs(r) => r
                .resources
                .iter()
                .all(|c| config_type_allowed(c.resource_type)),
            RequestKind::IncrementalAlterConfigs(r) => r
                .resources
                .iter()
                .all(|c| config_type_allowed(c.resource_type)),
            RequestKind::FindCoordinator(r) => r.key_type <= COORDINATOR_TRANSACTION,
            // A tenant's admin manages its own users' credentials; creating a user is the
            // admin API's, which makes it the tenant's.
            RequestKind::AlterUserScramCredentials(r) => {
                r.deletions.iter().all(|d| self.is_member(&d.name))
                    && r.upsertions.iter().all(|u| self.is_member(&u.name))
            }
            RequestKind::CreateAcls(r) => r.creations.iter().all(|c| {
                acl_type_allowed(c.resource_type, false) && self.principal_allowed(&c.principal)
            }),
            RequestKind::DescribeAcls(r) => acl_type_allowed(r.resource_type_filter, true),
            // Only filters that name their resources exactly: a filter without a name, or one
            // that MATCHes, would reach bindings outside the tenant (`*`, `kafka-cluster`).
            RequestKind::DeleteAcls(r) => r.filters.iter().all(|f| {
                f.resource_name_filter.is_some()
                    && matches!(f.pattern_type_filter, PATTERN_LITERAL | PATTERN_PREFIXED)
                    && acl_type_allowed(f.resource_type_filter, true)
            }),
            _ => true,
        }
    }

    /// Maps the request's names into the tenant's name space, for a request
    /// [`Namespace::permitted`]. False, with the request untouched, for an API it does not
    /// map: the APIs a tenant's clients use are the arms below; everything else is the
    /// physical cluster's (features, leader election, reassignments, transaction markers, the
    /// quorum, client quotas, log dirs, config resource listing), and an API added later is
    /// refused until it gets an arm here.
    #[must_use]
    pub(crate) fn map_request(&self, body: &mut RequestKind) -> bool {
        match body {
            RequestKind::ApiVersions(_)
            | RequestKind::SaslHandshake(_)
            | RequestKind::SaslAuthenticate(_)
            | RequestKind::DescribeCluster(_)
            | RequestKind::ListGroups(_) => {}
            RequestKind::Metadata(r) => {
                for t in r.topics.iter_mut().flatten() {
                    if let Some(name) = &mut t.name {
                        self.inward(name);
                    }
                    self.topic_id_inward(&mut t.topic_id);
                }
            }
            RequestKind::Produce(r) => {
                if let Some(id) = &mut r.transactional_id {
                    self.inward(id);
                }
                for t in &mut r.topic_data {
                    self.inward(&mut t.name);
                    self.topic_id_inward(&mut t.topic_id);
                }
            }
            RequestKind::Fetch(r) => {
                for t in &mut r.topics {
                    self.inward(&mut t.topic);
                    self.topic_id_inward(&mut t.topic_id);
                }
                for t in &mut r.forgotten_topics_data {
                    self.inward(&mut t.topic);
                    self.topic_id_inward(&mut t.topic_id);
                }
            }
            RequestKind::ListOffsets(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name));
            }
            RequestKind::OffsetForLeaderEpoch(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.topic));
            }
            RequestKind::CreateTopics(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name))
            }
            RequestKind::DeleteTopics(r) => {
                r.topic_names.iter_mut().for_each(|n| self.inward(n));
                for t in &mut r.topics {
                    if let Some(name) = &mut t.name {
                        self.inward(name);
                    }
                    self.topic_id_inward(&mut t.topic_id);
                }
            }
            RequestKind::CreatePartitions(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name))
            }
            RequestKind::DeleteRecords(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name))
            }
            RequestKind::FindCoordinator(r) => {
                self.inward(&mut r.key);
                r.coordinator_keys.iter_mut().for_each(|k| self.inward(k));
            }
            RequestKind::JoinGroup(r) => self.inward(&mut r.group_id),
            RequestKind::SyncGroup(r) => self.inward(&mut r.group_id),
            RequestKind::Heartbeat(r) => self.inward(&mut r.group_id),
            RequestKind::LeaveGroup(r) => self.inward(&mut r.group_id),
            RequestKind::OffsetCommit(r) => {
                self.inward(&mut r.group_id);
                for t in &mut r.topics {
                    self.inward(&mut t.name);
                    self.topic_id_inward(&mut t.topic_id);
                }
            }
            RequestKind::OffsetFetch(r) => {
                self.inward(&mut r.group_id);
                for t in r.topics.iter_mut().flatten() {
                    self.inward(&mut t.name);
                }
                for g in &mut r.groups {
                    self.inward(&mut g.group_id);
                    for t in g.topics.iter_mut().flatten() {
                        self.inward(&mut t.name);
                        self.topic_id_inward(&mut t.topic_id);
                    }
                }
            }
            RequestKind::DescribeGroups(r) => r.groups.iter_mut().for_each(|g| self.inward(g)),
            RequestKind::DeleteGroups(r) => r.groups_names.iter_mut().for_each(|g| self.inward(g)),
            RequestKind::OffsetDelete(r) => {
                self.inward(&mut r.group_id);
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name));
            }
            RequestKind::ConsumerGroupHeartbeat(r) => {
                self.inward(&mut r.group_id);
                r.subscribed_topic_names
                    .iter_mut()
                    .flatten()
                    .for_each(|t| self.inward(t));
                if let Some(regex) = &mut r.subscribed_topic_regex {
                    self.regex_inward(regex);
                }
                for t in r.topic_partitions.iter_mut().flatten() {
                    self.topic_id_inward(&mut t.topic_id);
                }
            }
            RequestKind::ConsumerGroupDescribe(r) => {
                r.group_ids.iter_mut().for_each(|g| self.inward(g))
            }
            RequestKind::InitProducerId(r) => {
                if let Some(id) = &mut r.transactional_id {
                    self.inward(id);
                }
            }
            RequestKind::AddPartitionsToTxn(r) => {
                self.inward(&mut r.v3_and_below_transactional_id);
                r.v3_and_below_topics
                    .iter_mut()
                    .for_each(|t| self.inward(&mut t.name));
                for txn in &mut r.transactions {
                    self.inward(&mut txn.transactional_id);
                    txn.topics.iter_mut().for_each(|t| self.inward(&mut t.name));
                }
            }
            RequestKind::AddOffsetsToTxn(r) => {
                self.inward(&mut r.transactional_id);
                self.inward(&mut r.group_id);
            }
            RequestKind::EndTxn(r) => self.inward(&mut r.transactional_id),
            RequestKind::TxnOffsetCommit(r) => {
                self.inward(&mut r.transactional_id);
                self.inward(&mut r.group_id);
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name));
            }
            RequestKind::DescribeTransactions(r) => {
                r.transactional_ids.iter_mut().for_each(|t| self.inward(t))
            }
            RequestKind::ListTransactions(r) => {
                if let Some(pattern) = &mut r.transactional_id_pattern {
                    self.regex_inward(pattern);
                }
            }
            RequestKind::DescribeProducers(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name))
            }
            RequestKind::DescribeTopicPartitions(r) => {
                r.topics.iter_mut().for_each(|t| self.inward(&mut t.name));
                if let Some(cursor) = &mut r.cursor {
                    self.inward(&mut cursor.topic_name);
                }
            }
            RequestKind::DescribeConfigs(r) => r
                .resources
                .iter_mut()
                .for_each(|c| self.inward(&mut c.resource_name)),
            RequestKind::AlterConfigs(r) => r
                .resources
                .iter_mut()
                .for_each(|c| self.inward(&mut c.resource_name)),
            RequestKind::IncrementalAlterConfigs(r) => r
                .resources
                .iter_mut()
                .for_each(|c| self.inward(&mut c.resource_name)),
            RequestKind::CreateAcls(r) => {
                for c in &mut r.creations {
                    self.acl_name_inward(&mut c.resource_name, &mut c.resource_pattern_type);
                }
            }
            RequestKind::DescribeAcls(r) => {
                if let Some(name) = &mut r.resource_name_filter {
                    self.acl_name_inward(name, &mut r.pattern_type_filter);
                }
            }
            // Listing every user's credentials lists the tenant's users'.
            RequestKind::DescribeUserScramCredentials(r)
                if r.users.as_ref().is_none_or(|u| u.is_empty()) =>
            {
                let members = self.image.tenant_members(self.tenant_id);
                r.users = Some(
                    members
                        .map(|(user, _)| {
                            UserName::default().with_name(StrBytes::from_string(user.clone()))
                        })
                        .collect(),
                );
            }
            // Named users: the answer says which are not the tenant's.
            RequestKind::DescribeUserScramCredentials(_)
            | RequestKind::AlterUserScramCredentials(_) => {}
            RequestKind::DeleteAcls(r) => {
                for f in &mut r.filters {
                    if let Some(name) = &mut f.resource_name_filter {
                        self.acl_name_inward(name, &mut f.pattern_type_filter);
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// Maps the answer's internal names back to the client's, dropping anything outside the
    /// tenant, and gives the tenant's id as the cluster id.
    pub(crate) fn map_response(&self, body: &mut ResponseKind) {
        match body {
            ResponseKind::Metadata(r) => {
                r.cluster_id = Some(StrBytes::from_string(self.tenant_id.to_string()));
                r.topics.retain_mut(|t| self.outward_opt(&mut t.name));
            }
            ResponseKind::DescribeCluster(r) => {
                r.cluster_id = StrBytes::from_string(self.tenant_id.to_string());
            }
            ResponseKind::Produce(r) => r.responses.retain_mut(|t| self.outward(&mut t.name)),
            // By topic id from v13: a fetch session is found by its id alone, so an answer
            // is checked by id too.
            ResponseKind::Fetch(r) => r
                .responses
                .retain_mut(|t| self.outward(&mut t.topic) && !self.foreign_topic_id(&t.topic_id)),
            ResponseKind::ListOffsets(r) => r.topics.retain_mut(|t| self.outward(&mut t.name)),
            ResponseKind::OffsetForLeaderEpoch(r) => {
                r.topics.retain_mut(|t| self.outward(&mut t.topic))
            }
            ResponseKind::CreateTopics(r) => r.topics.retain_mut(|t| self.outward(&mut t.name)),
            ResponseKind::DeleteTopics(r) => {
                r.responses.retain_mut(|t| self.outward_opt(&mut t.name))
            }
            ResponseKind::CreatePartitions(r) => {
                r.results.retain_mut(|t| self.outward(&mut t.name))
            }
            ResponseKind::DeleteRecords(r) => r.topics.retain_mut(|t| self.outward(&mut t.name)),
            ResponseKind::DescribeConfigs(r) => {
                r.results.retain_mut(|c| self.outward(&mut c.resource_name))
            }
            ResponseKind::AlterConfigs(r) => r
                .responses
                .retain_mut(|c| self.outward(&mut c.resource_name)),
            ResponseKind::IncrementalAlterConfigs(r) => r
                .responses
                .retain_mut(|c| self.outward(&mut c.resource_name)),
            ResponseKind::FindCoordinator(r) => {
                r.coordinators.retain_mut(|c| self.outward(&mut c.key))
            }
            ResponseKind::OffsetCommit(r) => r.topics.retain_mut(|t| self.outward(&mut t.name)),
            ResponseKind::OffsetFetch(r) => {
                r.topics.retain_mut(|t| self.outward(&mut t.name));
                r.groups.retain_mut(|g| {
                    g.topics.retain_mut(|t| self.outward(&mut t.name));
                    self.outward(&mut g.group_id)
                });
            }
            ResponseKind::ListGroups(r) => r.groups.retain_mut(|g| self.outward(&mut g.group_id)),
            ResponseKind::DescribeGroups(r) => {
                r.groups.retain_mut(|g| self.outward(&mut g.group_id))
            }
            ResponseKind::DeleteGroups(r) => {
                r.results.retain_mut(|g| self.outward(&mut g.group_id))
            }
            ResponseKind::OffsetDelete(r) => r.topics.retain_mut(|t| self.outward(&mut t.name)),
            ResponseKind::ConsumerGroupDescribe(r) => r.groups.retain_mut(|g| {
                for m in &mut g.members {
                    m.subscribed_topic_names.retain_mut(|t| self.outward(t));
                    if let Some(regex) = &mut m.subscribed_topic_regex {
                        self.regex_outward(regex);
                    }
                    for assignment in [&mut m.assignment, &mut m.target_assignment] {
                        assignment
                            .topic_partitions
                            .retain_mut(|t| self.outward(&mut t.topic_name));
                    }
                }
                self.outward(&mut g.group_id)
            }),
            ResponseKind::AddPartitionsToTxn(r) => {
                r.results_by_topic_v3_and_below
                    .retain_mut(|t| self.outward(&mut t.name));
                r.results_by_transaction.retain_mut(|txn| {
                    txn.topic_results.retain_mut(|t| self.outward(&mut t.name));
                    self.outward(&mut txn.transactional_id)
                });
            }
            ResponseKind::TxnOffsetCommit(r) => r.topics.retain_mut(|t| self.outward(&mut t.name)),
            ResponseKind::DescribeTransactions(r) => r.transaction_states.retain_mut(|s| {
                s.topics.retain_mut(|t| self.outward(&mut t.topic));
                self.outward(&mut s.transactional_id)
            }),
            ResponseKind::ListTransactions(r) => r
                .transaction_states
                .retain_mut(|s| self.outward(&mut s.transactional_id)),
            ResponseKind::DescribeProducers(r) => {
                r.topics.retain_mut(|t| self.outward(&mut t.name))
            }
            ResponseKind::DescribeTopicPartitions(r) => {
                r.topics.retain_mut(|t| self.outward_opt(&mut t.name));
                if let Some(cursor) = &mut r.next_cursor {
                    if !self.outward(&mut cursor.topic_name) {
                        r.next_cursor = None;
                    }
                }
            }
            ResponseKind::DescribeAcls(r) => r
                .resources
                .retain_mut(|a| self.acl_name_outward(&mut a.resource_name, &mut a.pattern_type)),
            // Another tenant's user, or one outside every tenant, does not exist for this one.
            ResponseKind::DescribeUserScramCredentials(r) => {
                for result in r.results.iter_mut().filter(|u| !self.is_member(&u.user)) {
                    result.error_code = ResponseError::ResourceNotFound.code();
                    result.error_message = Some(StrBytes::from_string(format!(
                        "{}{}",
                        super::scram::DESCRIBE_USER_THAT_DOES_NOT_EXIST,
                        result.user
                    )));
                    result.credential_infos.clear();
                }
            }
            ResponseKind::DeleteAcls(r) => {
                for f in &mut r.filter_results {
                    f.matching_acls.retain_mut(|a| {
                        self.acl_name_outward(&mut a.resource_name, &mut a.pattern_type)
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::describe_acls_response::DescribeAclsResource;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::{
        CreateAclsRequest, DeleteAclsRequest, DescribeAclsResponse, DescribeConfigsRequest,
        DescribeQuorumRequest, FetchRequest, MetadataRequest, MetadataResponse,
    };
    use strata_meta::tenant::{Tenant, TenantLimits, TenantMember};
    use strata_meta::MetadataRecord;

    use super::*;

    const ACME: &str = "lc-acme1";
    const GLOBEX: &str = "lc-globex1";

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// Two tenants, each with a topic `orders`, and a user each.
    fn image() -> (MetadataImage, Uuid) {
        let globex_orders = Uuid::new_v4();
        let mut records = vec![
            MetadataRecord::Topic {
                name: format!("{ACME}_orders"),
                topic_id: Uuid::new_v4(),
            },
            MetadataRecord::Topic {
                name: format!("{GLOBEX}_orders"),
                topic_id: globex_orders,
            },
        ];
        for (id, user) in [(ACME, "alice"), (GLOBEX, "gus")] {
            records.push(MetadataRecord::Tenant {
                tenant: Tenant {
                    id: id.into(),
                    name: id.into(),
                    quotas: Default::default(),
                    limits: TenantLimits::default(),
                },
            });
            records.push(MetadataRecord::TenantUser {
                user: user.into(),
                member: Some(TenantMember {
                    tenant_id: id.into(),
                    admin: true,
                }),
            });
        }
        (MetadataImage::default().apply(&records), globex_orders)
    }

    fn acme() -> TenantScope {
        TenantScope {
            tenant_id: ACME.into(),
            admin: true,
            denied: false,
        }
    }

    #[test]
    fn only_tenant_users_have_a_scope() {
        let (image, _) = image();
        let user = |name: &str| KafkaPrincipal {
            principal_type: KafkaPrincipal::USER_TYPE.into(),
            name: name.into(),
        };
        assert_eq!(scope_of(&image, &user("alice")), Some(acme()));
        assert_eq!(scope_of(&image, &user("admin")), None);
        assert_eq!(scope_of(&image, &KafkaPrincipal::anonymous()), None);
    }

    #[test]
    fn names_go_in_prefixed_and_come_back_without_other_tenants() {
        let (image, globex_orders) = image();
        let scope = acme();
        let ns = Namespace::new(&scope, &image);
        let mut request =
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s("orders")))),
                MetadataRequestTopic::default().with_topic_id(globex_orders),
            ])));
        assert!(ns.permitted(&request));
        assert!(ns.map_request(&mut request));
        let RequestKind::Metadata(r) = &request else {
            unreachable!()
        };
        let topics = r.topics.as_ref().expect("topics");
        assert_eq!(
            topics[0].name.as_deref().map(|n| n.as_str()),
            Some("lc-acme1_orders")
        );
        assert_eq!(
            topics[1].topic_id,
            Uuid::nil(),
            "another tenant's id names nothing"
        );

        let topic =
            |name: &str| MetadataResponseTopic::default().with_name(Some(TopicName(s(name))));
        let mut response = ResponseKind::Metadata(MetadataResponse::default().with_topics(vec![
            topic("lc-acme1_orders"),
            topic("lc-globex1_orders"),
            topic("__consumer_offsets"),
        ]));
        ns.map_response(&mut response);
        let ResponseKind::Metadata(r) = &response else {
            unreachable!()
        };
        let names: Vec<_> = r
            .topics
            .iter()
            .filter_map(|t| t.name.as_deref())
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, ["orders"]);
        assert_eq!(r.cluster_id.as_deref(), Some(ACME));
    }

    #[test]
    fn the_physical_clusters_apis_and_resources_are_not_permitted() {
        let (image, _) = image();
        let scope = acme();
        let ns = Namespace::new(&scope, &image);
        let config = |t: i8| {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default().with_resource_type(t).with_resource_name(s("1")),
            ]))
        };
        assert!(ns.permitted(&config(CONFIG_TOPIC)));
        assert!(!ns.permitted(&config(4)), "a broker's configs");
        let mut quorum = RequestKind::DescribeQuorum(DescribeQuorumRequest::default());
        assert!(
            !(ns.permitted(&quorum) && ns.map_request(&mut quorum)),
            "an API the module does not map"
        );
        let replica =
            FetchRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(1));
        assert!(!ns.permitted(&RequestKind::Fetch(replica)));
        assert!(ns.permitted(&RequestKind::Fetch(
            FetchRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1))
        )));
    }

    #[test]
    fn acls_stay_within_the_tenant() {
        let (image, _) = image();
        let scope = acme();
        let ns = Namespace::new(&scope, &image);
        let creation = |name: &str, principal: &str| {
            AclCreation::default()
                .with_resource_type(ACL_TOPIC)
                .with_resource_name(s(name))
                .with_resource_pattern_type(PATTERN_LITERAL)
                .with_principal(s(principal))
        };
        let create = |c: AclCreation| {
            RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(vec![c]))
        };
        assert!(
            !ns.permitted(&create(creation("orders", "User:gus"))),
            "another tenant's user"
        );
        let mut wildcard = create(creation("*", "User:*"));
        assert!(ns.permitted(&wildcard));
        assert!(ns.map_request(&mut wildcard));
        let RequestKind::CreateAcls(r) = &wildcard else {
            unreachable!()
        };
        assert_eq!(
            (
                r.creations[0].resource_name.as_str(),
                r.creations[0].resource_pattern_type
            ),
            ("lc-acme1_", PATTERN_PREFIXED),
            "the literal wildcard reaches the tenant's names only"
        );

        let delete = |name: Option<&str>, pattern: i8| {
            RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(
                vec![DeleteAclsFilter::default()
                .with_resource_type_filter(ACL_ANY)
                .with_resource_name_filter(name.map(s))
                .with_pattern_type_filter(pattern)],
            ))
        };
        assert!(
            !ns.permitted(&delete(None, PATTERN_LITERAL)),
            "every binding's name"
        );
        assert!(
            !ns.permitted(&delete(Some("orders"), 2)),
            "MATCH reaches `*`"
        );
        assert!(ns.permitted(&delete(Some("orders"), PATTERN_LITERAL)));

        let resource = |name: &str, pattern: i8| {
            DescribeAclsResource::default()
                .with_resource_type(ACL_TOPIC)
                .with_resource_name(s(name))
                .with_pattern_type(pattern)
        };
        let mut described =
            ResponseKind::DescribeAcls(DescribeAclsResponse::default().with_resources(vec![
                resource("lc-acme1_orders", PATTERN_LITERAL),
                resource("lc-acme1_", PATTERN_PREFIXED),
                resource("lc-globex1_orders", PATTERN_LITERAL),
                resource("*", PATTERN_LITERAL),
            ]));
        ns.map_response(&mut described);
        let ResponseKind::DescribeAcls(r) = &described else {
            unreachable!()
        };
        let seen: Vec<_> = r
            .resources
            .iter()
            .map(|a| (a.resource_name.as_str(), a.pattern_type))
            .collect();
        assert_eq!(seen, [("orders", PATTERN_LITERAL), ("*", PATTERN_LITERAL)]);
    }

    #[test]
    fn start_anchors_go_and_classes_and_escapes_stay() {
        assert_eq!(without_start_anchors("^orders.*"), "orders.*");
        assert_eq!(without_start_anchors("^a|^b$"), "a|b$");
        assert_eq!(without_start_anchors("[^x]\\^y"), "[^x]\\^y");
    }
}
