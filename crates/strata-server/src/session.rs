//! What a handler knows about who is asking: the connection's [`Session`] and, per request, the
//! [`RequestContext`] (Kafka's `RequestContext`: header, principal, listener, client address,
//! client software).
//!
//! The connection floor owns the session and fills it in; handlers only read it. This module
//! depends on nothing else in the crate but the audit log (a leaf too), so both floors can use
//! it without an import circle.
//!
//! On PLAINTEXT and SSL listeners a session is authenticated from the start (`User:ANONYMOUS`,
//! or the client certificate's principal); on SASL listeners the connection's authenticator
//! moves [`Session::authentication`] through Kafka's states and sets the principal. Tenancy and
//! quotas hang their per-connection state here as well.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use strata_meta::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use strata_meta::authorizer::{self, Action, AuthorizerSettings, Decision};
use strata_meta::tenant;

use crate::audit_log::{AuditLog, AuditRecord};
use strata_meta::MetadataImage;

/// Kafka's `KafkaPrincipal`: a type and a name, written `User:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

impl KafkaPrincipal {
    pub const USER_TYPE: &'static str = "User";

    /// Kafka's `KafkaPrincipal.ANONYMOUS`: the principal of every client on a PLAINTEXT
    /// listener.
    pub fn anonymous() -> Self {
        Self {
            principal_type: Self::USER_TYPE.to_string(),
            name: "ANONYMOUS".to_string(),
        }
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// Kafka's `SecurityProtocol` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether clients of this protocol authenticate with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// The protocol named as Kafka names it, in any case.
    pub fn parse(name: &str) -> Option<Self> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

/// Where a session stands in authentication. Only an [`Authentication::Complete`] session may
/// send requests other than those that authenticate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// Authenticated as [`Session::principal`]; on a PLAINTEXT or SSL listener from the first
    /// byte, as Kafka's `PlaintextChannelBuilder` and `SslChannelBuilder` treat every
    /// connection.
    Complete,
    /// A SASL listener's connection before SaslHandshake (Kafka's
    /// `HANDSHAKE_OR_VERSIONS_REQUEST`): only ApiVersions and SaslHandshake may come.
    AwaitingHandshake,
    /// SaslHandshake chose a mechanism (Kafka's `AUTHENTICATE`, also while re-authenticating):
    /// only the exchange's tokens may come until it ends.
    Authenticating,
}

/// The client library that opened the connection, as it names itself in ApiVersions v3+
/// (KIP-511).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSoftware {
    pub name: String,
    pub version: String,
}

/// One client connection's state, owned by the connection and lent to each request.
///
/// Invariant: `principal` is meaningful only while `authentication` is
/// [`Authentication::Complete`].
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: SocketAddr,
    /// Kafka's listener name (upper case); the `--listen` shorthand's listener is named after
    /// its protocol, PLAINTEXT. Metadata answers with the brokers' endpoints on this listener.
    pub listener: Arc<str>,
    pub security_protocol: SecurityProtocol,
    pub authentication: Authentication,
    pub principal: KafkaPrincipal,
    /// When a SASL session ends unless the client re-authenticates (KIP-368,
    /// `connections.max.reauth.ms`); `None`: never.
    pub expires: Option<Instant>,
    /// Unknown until the client sends ApiVersions v3 or later; kept for the life of the
    /// connection as Kafka's `ChannelMetadataRegistry` does.
    pub client_software: Option<ClientSoftware>,
}

impl Session {
    /// A session on a PLAINTEXT listener: authenticated, anonymous.
    pub fn plaintext(peer: SocketAddr) -> Self {
        let security_protocol = SecurityProtocol::Plaintext;
        Self::on_listener(peer, security_protocol.name().into(), security_protocol)
    }

    /// A session on listener `listener`. On PLAINTEXT and SSL it is authenticated as
    /// `User:ANONYMOUS`, as Kafka's channels are before a client certificate says otherwise
    /// (TLS sets [`Session::principal`] from it after the handshake); on SASL listeners it
    /// awaits SaslHandshake.
    pub fn on_listener(
        peer: SocketAddr,
        listener: Arc<str>,
        security_protocol: SecurityProtocol,
    ) -> Self {
        Self {
            peer,
            listener,
            security_protocol,
            authentication: if security_protocol.is_sasl() {
                Authentication::AwaitingHandshake
            } else {
                Authentication::Complete
            },
            expires: None,
            principal: KafkaPrincipal::anonymous(),
            client_software: None,
        }
    }

    /// Records the client software an ApiVersions v3+ request names, when Kafka's rules
    /// accept the names (an invalid request is answered INVALID_REQUEST and changes nothing).
    pub fn note_api_versions(&mut self, request: &ApiVersionsRequest, version: i16) {
        if version >= 3
            && valid_client_field(&request.client_software_name)
            && valid_client_field(&request.client_software_version)
        {
            self.client_software = Some(ClientSoftware {
                name: request.client_software_name.to_string(),
                version: request.client_software_version.to_string(),
            });
        }
    }

    /// The one gate between decoding a request and handling it: may this session send a
    /// request of `api_key` at `now`? Authentication decides it: before a SASL exchange
    /// completes only ApiVersions may reach a handler (the exchange's own requests are the
    /// authenticator's), and a session past its expiry may send nothing but a new handshake;
    /// Kafka closes a connection that sends anything else. Quotas will hold requests back
    /// here too. Authorization is per resource, so handlers ask for it while they walk the
    /// request's topics and groups.
    pub fn admit(&self, api_key: ApiKey, now: Instant) -> Result<(), Refusal> {
        match self.authentication {
            Authentication::Complete => match self.expires {
                Some(expires) if now >= expires => Err(Refusal::SessionExpired {
                    api_key,
                    principal: self.principal.clone(),
                }),
                _ => Ok(()),
            },
            Authentication::AwaitingHandshake if api_key == ApiKey::ApiVersions => Ok(()),
            Authentication::AwaitingHandshake | Authentication::Authenticating => {
                Err(Refusal::NotAuthenticated(api_key))
            }
        }
    }

    /// Kafka's `clientAddress` as group members report it (`/127.0.0.1`).
    pub fn client_host(&self) -> String {
        format!("/{}", self.peer.ip())
    }

    /// The client's address as ACLs name hosts: Java's `InetAddress.getHostAddress()`, which
    /// Kafka's authorizer compares with an ACL's host (`127.0.0.1`; IPv6 in eight uncompressed
    /// groups, `0:0:0:0:0:0:0:1`; an IPv4-mapped IPv6 address as its IPv4 form).
    pub fn acl_host(&self) -> String {
        match self.peer.ip().to_canonical() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => ip
                .segments()
                .iter()
                .map(|s| format!("{s:x}"))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }
}

/// The authorizer a request is checked against (Kafka's `StandardAuthorizer`): its settings
/// and the image whose ACLs were current when the request arrived. A [`RequestContext`]
/// without one allows everything, as Kafka without `authorizer.class.name` does.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub settings: Arc<AuthorizerSettings>,
    pub image: Arc<MetadataImage>,
    /// Where decisions are recorded (`authorizer.audit.log.file`), if anywhere.
    pub audit: Option<Arc<AuditLog>>,
}

/// What handlers ask the authorizer about: Kafka's `AclOperation`, the one definition.
pub use strata_meta::acl::AclOperation as Operation;

/// The tenant (logical cluster) of a request's principal. Its names were mapped into the
/// tenant's name space before the handler saw them, so every resource the handler asks about
/// is either the tenant's or one the client cannot reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    pub tenant_id: String,
    /// The principal is the tenant's admin: it may do everything within the tenant.
    pub admin: bool,
    /// The request is of an API (or names a resource) a tenant may not use, such as the
    /// physical cluster's brokers, quorum or quotas: every authorization of it is denied, so
    /// the handler refuses it with its own authorization error (fail closed).
    pub denied: bool,
}

impl TenantScope {
    /// What the tenant's internal names start with.
    pub fn prefix(&self) -> String {
        tenant::prefix_of(&self.tenant_id)
    }

    /// The tenant's CLUSTER resource, which stands for `kafka-cluster` in its requests.
    pub fn cluster_resource(&self) -> String {
        tenant::cluster_resource_of(&self.tenant_id)
    }

    /// The tenant's part of an authorization decision on the internal resource `name`: denied
    /// outside the tenant or for a denied request, allowed for its admin (except the brokers'
    /// own CLUSTER_ACTION), and otherwise (`None`) for the ACLs to decide.
    fn decide(&self, operation: AclOperation, name: &str) -> Option<bool> {
        let owned = tenant::owned_by(&self.tenant_id, name);
        if self.denied || !owned || operation == AclOperation::ClusterAction {
            Some(false)
        } else if self.admin {
            Some(true)
        } else {
            None
        }
    }
}

/// Why [`Session::admit`] refused a request; the connection is closed, as Kafka closes one
/// that sends requests before authenticating.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unexpected {0:?} request during SASL authentication")]
    NotAuthenticated(ApiKey),
    #[error(
        "{api_key:?} request after the SASL session of {principal} expired \
         (connections.max.reauth.ms) without re-authentication"
    )]
    SessionExpired {
        api_key: ApiKey,
        principal: KafkaPrincipal,
    },
}

/// Kafka's `AclEntry.supportedOperations`: what each resource type's authorized operations
/// (KIP-430) are chosen from.
fn supported_operations(resource_type: ResourceType) -> &'static [AclOperation] {
    use AclOperation::*;
    match resource_type {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Describe, Delete],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
        ResourceType::TransactionalId => &[Describe, Write],
        ResourceType::DelegationToken => &[Describe],
        ResourceType::User => &[CreateTokens, DescribeTokens],
        _ => &[],
    }
}

/// Kafka's rule for the client software name and version of ApiVersions v3+ (KIP-511):
/// not empty, only `[a-zA-Z0-9.-]`, starting and ending with a letter or digit.
pub(crate) fn valid_client_field(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Everything a handler gets besides the request body: the header, the session it came on,
/// and when it arrived (fully read from the socket).
#[derive(Debug)]
pub struct RequestContext<'a> {
    pub header: RequestHeader,
    pub session: &'a Session,
    pub arrived: Instant,
    /// `None` when no authorizer is configured: every action is allowed.
    pub authorizer: Option<Authorizer>,
    /// Bytes of the request frame, length prefix included: what a Produce quota charges.
    pub frame_bytes: usize,
    /// The tenant the principal belongs to, set by the request seam (`handlers::handle`), which
    /// has already mapped the request's names into the tenant's name space.
    pub tenant: Option<TenantScope>,
    /// How long the client is throttled for this request by a quota (KIP-219), in
    /// milliseconds: set by the handler that charged it, read by the connection, which holds
    /// the client back that long.
    throttle_ms: AtomicU32,
}

impl<'a> RequestContext<'a> {
    pub fn new(header: RequestHeader, session: &'a Session, arrived: Instant) -> Self {
        Self {
            header,
            session,
            arrived,
            authorizer: None,
            frame_bytes: 0,
            tenant: None,
            throttle_ms: AtomicU32::new(0),
        }
    }

    /// The context of a request frame of `frame_bytes` bytes.
    pub fn with_frame_bytes(mut self, frame_bytes: usize) -> Self {
        self.frame_bytes = frame_bytes;
        self
    }

    /// Throttles the client for `throttle` after this request; the longest of several wins,
    /// as Kafka takes the largest of a request's quota violations.
    pub fn throttle(&self, throttle: std::time::Duration) {
        let ms = throttle.as_millis().min(i32::MAX as u128) as u32;
        self.throttle_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long the client is throttled for this request (zero: not at all).
    pub fn throttle_time(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.throttle_ms.load(Ordering::Relaxed) as u64)
    }

    /// The context checked against `authorizer` (none: every action allowed).
    pub fn with_authorizer(mut self, authorizer: Option<Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// May this request's principal do `operation` on the resource `(resource_type, name)`?
    /// Always with no authorizer. A denial is logged (principal, client address, operation,
    /// resource), as Kafka's authorizer logger does, and recorded in the audit log, which also
    /// records allowed actions when configured so.
    pub fn authorize(
        &self,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.decide(operation, resource_type, name, true)
    }

    /// [`RequestContext::authorize`] for a question rather than an action: whether to list a
    /// resource, or which of two rights the principal has. Neither logged nor audited, as Kafka
    /// asks such questions with `logIfDenied` off.
    pub fn permits(
        &self,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.decide(operation, resource_type, name, false)
    }

    /// [`RequestContext::authorize`], unlogged and unrecorded when `record` is false: for
    /// questions that are not a request's action (`authorized_operations`), as Kafka asks
    /// them with `logIfAllowed` and `logIfDenied` off.
    fn decide(
        &self,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
        record: bool,
    ) -> bool {
        let tenant_cluster;
        let name = match &self.tenant {
            Some(tenant) => {
                let name = if resource_type == ResourceType::Cluster && name == CLUSTER_NAME {
                    tenant_cluster = tenant.cluster_resource();
                    &tenant_cluster
                } else {
                    name
                };
                match tenant.decide(operation, name) {
                    Some(allowed) => return allowed,
                    None => name,
                }
            }
            None => name,
        };
        let Some(authorizer) = &self.authorizer else {
            return true;
        };
        let principal = self.session.principal.to_string();
        let host = self.session.acl_host();
        let decision = authorizer::authorize(
            authorizer.image.acls(),
            &authorizer.settings,
            &Action {
                principal: &principal,
                host: &host,
                operation,
                resource_type,
                name,
            },
        );
        let allowed = decision.is_allowed();
        if !record {
            return allowed;
        }
        if !allowed {
            tracing::info!(%principal, %host, ?operation, ?resource_type, resource = name, ?decision, "authorization denied");
        }
        if let Some(audit) = authorizer
            .audit
            .as_ref()
            .filter(|a| !allowed || a.record_allowed)
        {
            let (Decision::Allowed(reason) | Decision::Denied(reason)) = decision;
            audit.record(AuditRecord {
                time_ms: crate::task::now_ms(),
                principal,
                client: host,
                listener: self.session.listener.to_string(),
                api: ApiKey::try_from(self.header.request_api_key)
                    .map(|k| format!("{k:?}"))
                    .unwrap_or_else(|_| self.header.request_api_key.to_string()),
                operation: format!("{operation:?}"),
                resource_type: format!("{resource_type:?}"),
                resource: name.to_string(),
                result: if allowed { "ALLOWED" } else { "DENIED" },
                reason: format!("{reason:?}"),
            });
        }
        allowed
    }

    /// Kafka's `authorizedOperations` (KIP-430): the operations of `resource_type` the
    /// principal may do on `name`, as a bit field of operation codes; every operation the
    /// resource type supports when no authorizer is on.
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        supported_operations(resource_type)
            .iter()
            .filter(|op| self.decide(**op, resource_type, name, false))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    /// May this request's principal do `operation` on some resource of `resource_type`
    /// (Kafka's `authorizeByResourceType`, KIP-679)? Always with no authorizer.
    pub fn authorize_any(&self, operation: AclOperation, resource_type: ResourceType) -> bool {
        if let Some(tenant) = &self.tenant {
            if tenant.denied {
                return false;
            }
            if tenant.admin && operation != AclOperation::ClusterAction {
                return true;
            }
        }
        let Some(authorizer) = &self.authorizer else {
            return true;
        };
        authorizer::authorize_by_resource_type(
            authorizer.image.acls(),
            &authorizer.settings,
            &self.session.principal.to_string(),
            &self.session.acl_host(),
            operation,
            resource_type,
        )
    }

    /// Whether the cluster's authorizer is on (`authorizer.class.name` set).
    pub fn has_authorizer(&self) -> bool {
        self.authorizer.is_some()
    }

    /// The version of the request, which is the version the response must be built for.
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// May this request's principal do `operation` on `topic`? A denial is
    /// TOPIC_AUTHORIZATION_FAILED; with no authorizer configured every operation is allowed,
    /// as in Kafka.
    pub fn authorize_topic(&self, operation: Operation, topic: &str) -> Result<(), ResponseError> {
        if self.authorize(operation, ResourceType::Topic, topic) {
            Ok(())
        } else {
            Err(ResponseError::TopicAuthorizationFailed)
        }
    }

    /// May this request's principal do `operation` on the consumer group `group`? A denial is
    /// GROUP_AUTHORIZATION_FAILED.
    pub fn authorize_group(&self, operation: Operation, group: &str) -> Result<(), ResponseError> {
        if self.authorize(operation, ResourceType::Group, group) {
            Ok(())
        } else {
            Err(ResponseError::GroupAuthorizationFailed)
        }
    }

    /// May this request's principal do `operation` on the transactional id `id`? A denial is
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
    pub fn authorize_transactional_id(
        &self,
        operation: Operation,
        id: &str,
    ) -> Result<(), ResponseError> {
        if self.authorize(operation, ResourceType::TransactionalId, id) {
            Ok(())
        } else {
            Err(ResponseError::TransactionalIdAuthorizationFailed)
        }
    }

    /// May this request's principal do `operation` on the cluster (`kafka-cluster`)? A denial
    /// is CLUSTER_AUTHORIZATION_FAILED.
    pub fn authorize_cluster(&self, operation: Operation) -> Result<(), ResponseError> {
        if self.authorize(operation, ResourceType::Cluster, CLUSTER_NAME) {
            Ok(())
        } else {
            Err(ResponseError::ClusterAuthorizationFailed)
        }
    }

    /// The header's client id; Kafka treats a null one as empty.
    pub fn client_id(&self) -> &str {
        self.header.client_id.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_sessions_are_anonymous_and_authenticated() {
        let session = Session::plaintext("127.0.0.1:4000".parse().unwrap());
        assert_eq!(session.principal.to_string(), "User:ANONYMOUS");
        assert_eq!(session.authentication, Authentication::Complete);
        assert_eq!(&*session.listener, "PLAINTEXT");
        assert_eq!(session.client_host(), "/127.0.0.1");
        assert!(session.admit(ApiKey::Produce, Instant::now()).is_ok());
    }

    #[test]
    fn sasl_sessions_admit_only_api_versions_until_authenticated_and_expire() {
        let now = Instant::now();
        let mut session = Session::on_listener(
            "127.0.0.1:4000".parse().unwrap(),
            "SASL_SSL".into(),
            SecurityProtocol::SaslSsl,
        );
        assert_eq!(session.authentication, Authentication::AwaitingHandshake);
        assert!(session.admit(ApiKey::ApiVersions, now).is_ok());
        assert!(session.admit(ApiKey::Metadata, now).is_err());
        session.authentication = Authentication::Authenticating;
        assert!(session.admit(ApiKey::ApiVersions, now).is_err());
        session.authentication = Authentication::Complete;
        session.expires = Some(now + std::time::Duration::from_secs(1));
        assert!(session.admit(ApiKey::Metadata, now).is_ok());
        let later = now + std::time::Duration::from_secs(2);
        assert!(matches!(
            session.admit(ApiKey::Metadata, later),
            Err(Refusal::SessionExpired { .. })
        ));
    }

    #[test]
    fn client_software_is_kept_only_when_valid() {
        let mut session = Session::plaintext("127.0.0.1:4000".parse().unwrap());
        let request = |name: &str, version: &str| {
            ApiVersionsRequest::default()
                .with_client_software_name(name.to_string().into())
                .with_client_software_version(version.to_string().into())
        };
        session.note_api_versions(&request("librdkafka", "2.0.2"), 2);
        assert_eq!(session.client_software, None, "v2 carries no software");
        session.note_api_versions(&request("apache-kafka-java", "4.1.1"), 3);
        let kept = Some(ClientSoftware {
            name: "apache-kafka-java".into(),
            version: "4.1.1".into(),
        });
        assert_eq!(session.client_software, kept);
        session.note_api_versions(&request("bad name", "1"), 4);
        assert_eq!(
            session.client_software, kept,
            "an invalid request changes nothing"
        );
        assert!(!valid_client_field("-x"));
        assert!(!valid_client_field(""));
        assert!(valid_client_field("a.b-c9"));
    }

    #[test]
    fn context_reads_the_header() {
        let session = Session::plaintext("[::1]:4000".parse().unwrap());
        let header = RequestHeader::default()
            .with_request_api_version(7)
            .with_client_id(Some("app".into()));
        let ctx = RequestContext::new(header, &session, Instant::now());
        assert_eq!(ctx.version(), 7);
        assert_eq!(ctx.client_id(), "app");
        let anonymous = RequestContext::new(RequestHeader::default(), &session, Instant::now());
        assert_eq!(anonymous.client_id(), "");
        assert_eq!(session.client_host(), "/::1");
    }

    #[test]
    fn acl_hosts_are_written_as_java_writes_addresses() {
        let host = |peer: &str| Session::plaintext(peer.parse().unwrap()).acl_host();
        assert_eq!(host("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host("[::1]:1"), "0:0:0:0:0:0:0:1");
        assert_eq!(host("[fe80::a:1]:1"), "fe80:0:0:0:0:0:a:1");
        assert_eq!(host("[::ffff:10.0.0.1]:1"), "10.0.0.1");
    }

    #[test]
    fn without_an_authorizer_everything_is_allowed() {
        let session = Session::plaintext("127.0.0.1:4000".parse().unwrap());
        let ctx = RequestContext::new(RequestHeader::default(), &session, Instant::now());
        assert!(!ctx.has_authorizer());
        assert!(ctx.authorize_topic(Operation::Delete, "t").is_ok());
        assert!(ctx.authorize_cluster(Operation::Alter).is_ok());
        let ctx = ctx.with_authorizer(Some(Authorizer {
            settings: Arc::new(AuthorizerSettings::default()),
            image: Arc::new(MetadataImage::default()),
            audit: None,
        }));
        assert_eq!(
            ctx.authorize_topic(Operation::Describe, "t"),
            Err(ResponseError::TopicAuthorizationFailed)
        );
        assert_eq!(
            ctx.authorize_cluster(Operation::Alter),
            Err(ResponseError::ClusterAuthorizationFailed)
        );
    }
}
