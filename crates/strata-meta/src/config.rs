//! Kafka configuration definitions: topic configs, the broker properties they default from, and
//! their validation.
//!
//! A topic config's effective value is resolved Kafka's way, most specific first: the topic's own
//! override, then a dynamic broker config, then the static broker config (`server.properties`
//! and `--override`), then the built-in default. [`ConfigDef::broker_synonyms`] lists the broker
//! keys in the order Kafka's DescribeConfigs reports them.

use std::collections::BTreeMap;

/// The type of a config value, as Kafka's `ConfigDef.Type` (DescribeConfigs v3+ reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    /// The numeric code DescribeConfigs uses (`ConfigType` in DescribeConfigsResponse).
    pub fn describe_code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }
}

/// Extra rules beyond the type.
#[derive(Debug, Clone, Copy)]
pub enum Validator {
    None,
    AtLeast(i64),
    Between(i64, i64),
    /// One of the listed values.
    OneOf(&'static [&'static str]),
    /// One of the listed values, in any case (Kafka's `CaseInsensitiveValidString`, used for
    /// enum-valued settings such as `group.consumer.migration.policy`). The names are listed
    /// in upper case in the error, as Kafka lists them.
    OneOfIgnoreCase(&'static [&'static str]),
    /// A comma-separated list whose items are each one of the listed values.
    ListOf(&'static [&'static str]),
    DoubleBetween(f64, f64),
    /// A class name Strata implements (it loads no plugins): one of the listed names, or
    /// empty for Kafka's `null`.
    KnownClass(&'static [&'static str]),
}

/// One topic-level config key.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub default: &'static str,
    pub validator: Validator,
    /// Broker keys that supply this config's default, most preferred first
    /// (e.g. `log.retention.ms`, then `log.retention.minutes`, then `log.retention.hours`).
    pub broker_synonyms: &'static [&'static str],
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    config_type: ConfigType,
    default: &'static str,
    validator: Validator,
    broker_synonyms: &'static [&'static str],
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        config_type,
        default,
        validator,
        broker_synonyms,
        doc,
    }
}

use ConfigType::{Boolean, Class, Double, Int, List, Long, Password, Short};
use Validator::{AtLeast, Between, DoubleBetween, KnownClass, ListOf, OneOf, OneOfIgnoreCase};

/// `replica.selector.class` of KIP-392: consumers with a `client.rack` are sent to a replica
/// in their rack.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";
/// `authorizer.class.name` of Kafka's KRaft authorizer, the one Strata has: ACLs are metadata
/// records (see [`crate::authorizer`]).
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// `replica.selector.class` that keeps every consumer on the leader (Kafka's behaviour when the
/// config is not set).
pub const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";

const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];
const CLEANUP_POLICIES: &[&str] = &["compact", "delete"];

/// Every topic config Strata accepts, in Kafka's names and defaults.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        List,
        "delete",
        ListOf(CLEANUP_POLICIES),
        &["log.cleanup.policy"],
        "delete or compact old segments",
    ),
    def(
        "compression.type",
        ConfigType::String,
        "producer",
        OneOf(COMPRESSION_TYPES),
        &["compression.type"],
        "final compression; Strata stores batches as the producer sent them",
    ),
    def(
        "delete.retention.ms",
        Long,
        "86400000",
        AtLeast(0),
        &["log.cleaner.delete.retention.ms"],
        "how long tombstones are kept in compacted topics",
    ),
    def(
        "file.delete.delay.ms",
        Long,
        "60000",
        AtLeast(0),
        &["log.segment.delete.delay.ms"],
        "delay before deleting a file from disk",
    ),
    def(
        "flush.messages",
        Long,
        "9223372036854775807",
        AtLeast(1),
        &["log.flush.interval.messages"],
        "fsync after this many records",
    ),
    def(
        "flush.ms",
        Long,
        "9223372036854775807",
        AtLeast(0),
        &["log.flush.interval.ms"],
        "fsync after this much time",
    ),
    def(
        "index.interval.bytes",
        Int,
        "4096",
        AtLeast(0),
        &["log.index.interval.bytes"],
        "bytes of log between offset-index entries",
    ),
    def(
        "local.retention.bytes",
        Long,
        "-2",
        AtLeast(-2),
        &["log.local.retention.bytes"],
        "local (hot tail) retention by size; -2 = retention.bytes",
    ),
    def(
        "local.retention.ms",
        Long,
        "-2",
        AtLeast(-2),
        &["log.local.retention.ms"],
        "local (hot tail) retention by time; -2 = retention.ms",
    ),
    def(
        "max.compaction.lag.ms",
        Long,
        "9223372036854775807",
        AtLeast(1),
        &["log.cleaner.max.compaction.lag.ms"],
        "maximum time a record stays uncompacted",
    ),
    def(
        "max.message.bytes",
        Int,
        "1048588",
        AtLeast(0),
        &["message.max.bytes"],
        "largest record batch size allowed",
    ),
    def(
        "message.timestamp.after.max.ms",
        Long,
        "3600000",
        AtLeast(0),
        &["log.message.timestamp.after.max.ms"],
        "how far in the future a CreateTime timestamp may be",
    ),
    def(
        "message.timestamp.before.max.ms",
        Long,
        "9223372036854775807",
        AtLeast(0),
        &["log.message.timestamp.before.max.ms"],
        "how far in the past a CreateTime timestamp may be",
    ),
    def(
        "message.timestamp.type",
        ConfigType::String,
        "CreateTime",
        OneOf(TIMESTAMP_TYPES),
        &["log.message.timestamp.type"],
        "CreateTime or LogAppendTime",
    ),
    def(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        DoubleBetween(0.0, 1.0),
        &["log.cleaner.min.cleanable.ratio"],
        "dirty ratio that triggers compaction",
    ),
    def(
        "min.compaction.lag.ms",
        Long,
        "0",
        AtLeast(0),
        &["log.cleaner.min.compaction.lag.ms"],
        "minimum time a record stays uncompacted",
    ),
    def(
        "min.insync.replicas",
        Int,
        "1",
        AtLeast(1),
        &["min.insync.replicas"],
        "replicas that must acknowledge an acks=all write",
    ),
    def(
        "preallocate",
        Boolean,
        "false",
        Validator::None,
        &["log.preallocate"],
        "preallocate segment files",
    ),
    def(
        "remote.storage.enable",
        Boolean,
        "false",
        Validator::None,
        // Not a Kafka broker key: Kafka has no broker default for this topic config. Strata
        // sets it when `strata serve --object-store` is given, so every new topic is tiered.
        &["log.remote.storage.enable"],
        "tier closed segments to object storage (never for compacted topics)",
    ),
    def(
        "retention.bytes",
        Long,
        "-1",
        Validator::None,
        &["log.retention.bytes"],
        "maximum partition size before old segments are deleted; -1 = unlimited",
    ),
    def(
        "retention.ms",
        Long,
        "604800000",
        AtLeast(-1),
        &[
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        "maximum age before old segments are deleted; -1 = unlimited",
    ),
    def(
        "segment.bytes",
        Int,
        "1073741824",
        AtLeast(14),
        &["log.segment.bytes"],
        "segment file size",
    ),
    def(
        "segment.index.bytes",
        Int,
        "10485760",
        AtLeast(4),
        &["log.index.size.max.bytes"],
        "maximum offset-index size",
    ),
    def(
        "segment.jitter.ms",
        Long,
        "0",
        AtLeast(0),
        &["log.roll.jitter.ms", "log.roll.jitter.hours"],
        "random jitter subtracted from segment.ms",
    ),
    def(
        "segment.ms",
        Long,
        "604800000",
        AtLeast(1),
        &["log.roll.ms", "log.roll.hours"],
        "time after which a segment is rolled",
    ),
    def(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Validator::None,
        &["unclean.leader.election.enable"],
        "allow out-of-sync replicas to become leader",
    ),
];

/// Broker-only properties Strata reads (topic-config synonyms are in [`TOPIC_CONFIGS`]).
pub const BROKER_CONFIGS: &[ConfigDef] = &[
    def(
        "auto.create.topics.enable",
        Boolean,
        "true",
        Validator::None,
        &[],
        "create unknown topics on metadata requests and produce",
    ),
    def(
        "num.partitions",
        Int,
        "1",
        AtLeast(1),
        &[],
        "default partition count of new topics",
    ),
    def(
        "default.replication.factor",
        Short,
        "1",
        AtLeast(1),
        &[],
        "default replication factor of new topics",
    ),
    def(
        "delete.topic.enable",
        Boolean,
        "true",
        Validator::None,
        &[],
        "allow DeleteTopics",
    ),
    def(
        "socket.request.max.bytes",
        Int,
        "104857600",
        AtLeast(1),
        &[],
        "largest request frame accepted",
    ),
    def(
        "log.retention.check.interval.ms",
        Long,
        "300000",
        AtLeast(1),
        &[],
        "how often retention runs",
    ),
    def(
        "remote.log.manager.task.interval.ms",
        Long,
        "1000",
        AtLeast(10),
        &[],
        "how often tiered partitions upload rolled segments and apply retention (Kafka: 30000)",
    ),
    def(
        "remote.log.manager.thread.pool.size",
        Int,
        "10",
        AtLeast(1),
        &[],
        "partitions uploading to the tier at once",
    ),
    def(
        "remote.fetch.max.wait.ms",
        Int,
        "500",
        AtLeast(1),
        &[],
        "longest a fetch waits for the tier before answering without that partition's data",
    ),
    def(
        "remote.list.offsets.request.timeout.ms",
        Long,
        "30000",
        AtLeast(1),
        &[],
        "longest ListOffsets waits for a lookup in the tier (KIP-1075); then REQUEST_TIMED_OUT",
    ),
    def(
        "remote.log.reader.cache.bytes",
        Long,
        "268435456",
        AtLeast(0),
        &[],
        "Strata: memory for cached tier reads (segment chunks and offset indexes)",
    ),
    def(
        "remote.log.reader.chunk.bytes",
        Int,
        "4194304",
        Between(65536, 67108864),
        &[],
        "Strata: unit of tier reads, caching and read-ahead",
    ),
    def(
        "log.local.untiered.max.bytes",
        Long,
        "-1",
        AtLeast(-1),
        &[],
        "Strata: bytes of tiered partitions not yet in the tier at which their producers get a retriable KAFKA_STORAGE_ERROR until uploads catch up (-1 = no limit)",
    ),
    def(
        "log.flush.scheduler.interval.ms",
        Long,
        "9223372036854775807",
        AtLeast(0),
        &[],
        "how often flush.ms is checked",
    ),
    def(
        "max.connections",
        Int,
        "2147483647",
        AtLeast(0),
        &[],
        "maximum client connections",
    ),
    def(
        "quota.window.num",
        Int,
        "11",
        AtLeast(1),
        &[],
        "samples kept in memory for client quotas",
    ),
    def(
        "quota.window.size.seconds",
        Int,
        "1",
        AtLeast(1),
        &[],
        "time span of each client quota sample",
    ),
    def(
        "queued.max.requests",
        Int,
        "500",
        AtLeast(1),
        &[],
        "in-flight requests per connection",
    ),
    def("node.id", Int, "1", AtLeast(0), &[], "this node's id"),
    def(
        "replica.high.watermark.checkpoint.interval.ms",
        Long,
        "5000",
        AtLeast(1),
        &[],
        "how often a replicated partition's high watermark is written to disk",
    ),
    def(
        "replica.lag.time.max.ms",
        Long,
        "30000",
        AtLeast(1),
        &[],
        "a follower not caught up for this long leaves the ISR",
    ),
    def(
        "replica.fetch.wait.max.ms",
        Int,
        "500",
        AtLeast(0),
        &[],
        "longest a follower's fetch waits at the leader for new records",
    ),
    def(
        "replica.fetch.max.bytes",
        Int,
        "1048576",
        AtLeast(1),
        &[],
        "bytes a follower fetches per partition per request",
    ),
    def(
        "max.incremental.fetch.session.cache.slots",
        Int,
        "1000",
        AtLeast(0),
        &[],
        "incremental fetch sessions (KIP-227) the broker keeps at most; 0 = none",
    ),
    def(
        "min.incremental.fetch.session.eviction.ms",
        Long,
        "120000",
        AtLeast(0),
        &[],
        "Strata (Kafka fixes it at 120000): how long a fetch session is safe from eviction after its creation, and after its last use",
    ),
    def(
        "max.incremental.fetch.session.partitions",
        Int,
        "100000",
        AtLeast(0),
        &[],
        "Strata: partitions one fetch session may hold; a fetch of more is served without a session",
    ),
    def(
        "max.incremental.fetch.session.cache.partitions",
        Long,
        "1000000",
        AtLeast(0),
        &[],
        "Strata: partitions all fetch sessions together may hold (about 110 bytes each)",
    ),
    def(
        "incremental.fetch.session.expiry.ms",
        Long,
        "600000",
        AtLeast(1),
        &[],
        "Strata: a fetch session unused for this long is dropped (Kafka keeps it until its slot is wanted)",
    ),
    def(
        "replica.selector.class",
        Class,
        "",
        KnownClass(&[RACK_AWARE_REPLICA_SELECTOR, LEADER_SELECTOR]),
        &[],
        "where consumers read (KIP-392): unset or LeaderSelector, the leader; RackAwareReplicaSelector, a replica in the consumer's client.rack",
    ),
    def(
        "authorizer.class.name",
        Class,
        "",
        KnownClass(&[STANDARD_AUTHORIZER]),
        &[],
        "unset: every request is allowed (no ACLs, the ACL APIs answer SECURITY_DISABLED); StandardAuthorizer: requests are authorized with the cluster's ACLs",
    ),
    def(
        "super.users",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "principals the authorizer allows everything, separated by ';' (e.g. User:admin;User:ops)",
    ),
    def(
        "allow.everyone.if.no.acl.found",
        Boolean,
        "false",
        Validator::None,
        &[],
        "whether the authorizer allows an action on a resource no ACL applies to",
    ),
    def(
        "authorizer.audit.log.file",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "file the authorization decisions are appended to as JSON lines (Strata's; empty: none)",
    ),
    def(
        "authorizer.audit.log.allowed",
        Boolean,
        "false",
        Validator::None,
        &[],
        "whether the audit log records allowed actions too, not only denials (Strata's)",
    ),
    def(
        "broker.session.timeout.ms",
        Int,
        "9000",
        AtLeast(1),
        &[],
        "a broker without a heartbeat for this long is fenced",
    ),
    def(
        "broker.heartbeat.interval.ms",
        Int,
        "2000",
        AtLeast(1),
        &[],
        "how often a broker heartbeats to the active controller",
    ),
    def(
        "auto.leader.rebalance.enable",
        Boolean,
        "true",
        Validator::None,
        &[],
        "the active controller moves leadership back to preferred replicas",
    ),
    def(
        "leader.imbalance.check.interval.seconds",
        Long,
        "300",
        AtLeast(1),
        &[],
        "how often the active controller checks leader balance",
    ),
    def(
        "leader.imbalance.per.broker.percentage",
        Int,
        "10",
        Validator::None,
        &[],
        "share of a broker's preferred partitions led elsewhere above which leadership is moved back",
    ),
    def("broker.id", Int, "1", AtLeast(0), &[], "alias of node.id"),
    def(
        "log.dirs",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "ignored: use --data-dir",
    ),
    def(
        "log.dir",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "ignored: use --data-dir",
    ),
    def(
        "listeners",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "ignored: use --listen",
    ),
    def(
        "advertised.listeners",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "ignored: use --advertised-listener",
    ),
    def(
        "log.retention.minutes",
        Int,
        "",
        AtLeast(-1),
        &[],
        "retention in minutes (log.retention.ms wins)",
    ),
    def(
        "log.retention.hours",
        Int,
        "168",
        AtLeast(-1),
        &[],
        "retention in hours",
    ),
    def(
        "log.roll.hours",
        Int,
        "168",
        AtLeast(1),
        &[],
        "segment roll time in hours",
    ),
    def(
        "log.roll.jitter.hours",
        Int,
        "0",
        AtLeast(0),
        &[],
        "segment roll jitter in hours",
    ),
    def(
        "transactional.id.expiration.ms",
        Int,
        "604800000",
        AtLeast(1),
        &[],
        "transactional id expiry",
    ),
    def(
        "producer.id.expiration.ms",
        Int,
        "86400000",
        AtLeast(1),
        &[],
        "idle producer state expiry",
    ),
    def(
        "offsets.topic.num.partitions",
        Int,
        "50",
        AtLeast(1),
        &[],
        "partitions of __consumer_offsets",
    ),
    def(
        "offsets.topic.replication.factor",
        Short,
        "1",
        AtLeast(1),
        &[],
        "replication factor of __consumer_offsets",
    ),
    def(
        "offsets.topic.segment.bytes",
        Int,
        "104857600",
        AtLeast(1),
        &[],
        "segment size of __consumer_offsets",
    ),
    def(
        "offset.metadata.max.bytes",
        Int,
        "4096",
        AtLeast(0),
        &[],
        "largest metadata string of a committed offset",
    ),
    def(
        "group.min.session.timeout.ms",
        Int,
        "6000",
        AtLeast(0),
        &[],
        "smallest session timeout a group member may ask for",
    ),
    def(
        "group.max.session.timeout.ms",
        Int,
        "1800000",
        AtLeast(0),
        &[],
        "largest session timeout a group member may ask for",
    ),
    def(
        "group.initial.rebalance.delay.ms",
        Int,
        "3000",
        AtLeast(0),
        &[],
        "how long a new group waits for more members before its first rebalance",
    ),
    def(
        "group.max.size",
        Int,
        "2147483647",
        AtLeast(1),
        &[],
        "largest number of members in a group",
    ),
    def(
        "group.consumer.session.timeout.ms",
        Int,
        "45000",
        AtLeast(1),
        &[],
        "session timeout of consumer-protocol (KIP-848) group members",
    ),
    def(
        "group.consumer.heartbeat.interval.ms",
        Int,
        "5000",
        AtLeast(1),
        &[],
        "heartbeat interval given to consumer-protocol group members",
    ),
    def(
        "offsets.retention.minutes",
        Int,
        "10080",
        AtLeast(1),
        &[],
        "how long committed offsets of an empty group are kept",
    ),
    def(
        "offsets.retention.check.interval.ms",
        Long,
        "600000",
        AtLeast(1),
        &[],
        "how often expired offsets are removed",
    ),
    def(
        "transaction.max.timeout.ms",
        Int,
        "900000",
        AtLeast(1),
        &[],
        "largest transaction timeout a producer may ask for",
    ),
    def(
        "transaction.partition.verification.enable",
        Boolean,
        "true",
        Validator::None,
        &[],
        "partition leaders check with the transaction coordinator that a transactional write belongs to an ongoing transaction (KIP-890)",
    ),
    def(
        "transaction.state.log.num.partitions",
        Int,
        "50",
        AtLeast(1),
        &[],
        "partitions of __transaction_state",
    ),
    def(
        "transaction.state.log.replication.factor",
        Short,
        "1",
        AtLeast(1),
        &[],
        "replication factor of __transaction_state",
    ),
    def(
        "transaction.state.log.segment.bytes",
        Int,
        "104857600",
        AtLeast(1),
        &[],
        "segment size of __transaction_state",
    ),
    def(
        "log.cleaner.backoff.ms",
        Long,
        "15000",
        AtLeast(0),
        &[],
        "sleep of the log cleaner when no log needs cleaning",
    ),
    def(
        "group.consumer.max.size",
        Int,
        "2147483647",
        AtLeast(1),
        &[],
        "largest number of members in a consumer-protocol group",
    ),
    def(
        "group.consumer.migration.policy",
        ConfigType::String,
        "bidirectional",
        // Kafka's order in its error message.
        OneOfIgnoreCase(&["disabled", "downgrade", "upgrade", "bidirectional"]),
        &[],
        "online conversion of groups with members between the classic and the consumer protocol",
    ),
    // Listeners (issue 16). Read once at start-up; `--listen` is the shorthand for one
    // PLAINTEXT listener when `listeners` is not set.
    def(
        "listeners",
        List,
        "PLAINTEXT://:9092",
        Validator::None,
        &[],
        "listeners, NAME://host:port, comma-separated; a listener's name maps to its security protocol",
    ),
    def(
        "advertised.listeners",
        List,
        "",
        Validator::None,
        &[],
        "the addresses clients are told per listener (default: the listeners' own)",
    ),
    def(
        "listener.security.protocol.map",
        List,
        "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT",
        Validator::None,
        &[],
        "listener name to security protocol, NAME:PROTOCOL, comma-separated",
    ),
    def(
        "inter.broker.listener.name",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "the listener other brokers connect to (default: the first listener)",
    ),
    // TLS (KIP-651 PEM stores). Also per listener as `listener.name.<name>.ssl.*`.
    def(
        "ssl.keystore.type",
        ConfigType::String,
        "JKS",
        Validator::None,
        &[],
        "format of the key store: only PEM is supported",
    ),
    def(
        "ssl.keystore.location",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "PEM file holding the private key and its certificate chain",
    ),
    def(
        "ssl.keystore.key",
        Password,
        "",
        Validator::None,
        &[],
        "the private key in PEM, in place of ssl.keystore.location",
    ),
    def(
        "ssl.keystore.certificate.chain",
        Password,
        "",
        Validator::None,
        &[],
        "the certificate chain in PEM, with ssl.keystore.key",
    ),
    def(
        "ssl.key.password",
        Password,
        "",
        Validator::None,
        &[],
        "password of an encrypted private key: not supported (use an unencrypted PEM key)",
    ),
    def(
        "ssl.truststore.type",
        ConfigType::String,
        "JKS",
        Validator::None,
        &[],
        "format of the trust store: only PEM is supported",
    ),
    def(
        "ssl.truststore.location",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "PEM file of the CA certificates client certificates are checked against",
    ),
    def(
        "ssl.truststore.certificates",
        Password,
        "",
        Validator::None,
        &[],
        "the trusted CA certificates in PEM, in place of ssl.truststore.location",
    ),
    def(
        "ssl.client.auth",
        ConfigType::String,
        "none",
        OneOf(&["none", "requested", "required"]),
        &[],
        "whether TLS clients must present a certificate",
    ),
    def(
        "ssl.enabled.protocols",
        List,
        "TLSv1.2,TLSv1.3",
        ListOf(&["TLSv1.2", "TLSv1.3"]),
        &[],
        "TLS versions accepted",
    ),
    def(
        "ssl.cipher.suites",
        List,
        "",
        Validator::None,
        &[],
        "cipher suites offered, by their IANA names (empty: every suite the TLS library deems safe)",
    ),
    def(
        "ssl.endpoint.identification.algorithm",
        ConfigType::String,
        "https",
        OneOf(&["https", ""]),
        &[],
        "https: this broker, connecting to another broker or controller over TLS, checks that \
         the peer's certificate names the host it dialled; empty: it checks only the chain",
    ),
    def(
        "controller.listener.names",
        List,
        "CONTROLLER",
        Validator::None,
        &[],
        "name of the controller listener (--controller-listen), whose security protocol \
         listener.security.protocol.map gives (PLAINTEXT or SSL, always with client \
         certificates) and whose TLS settings are listener.name.<name>.ssl.*",
    ),
    def(
        "ssl.principal.mapping.rules",
        ConfigType::String,
        "DEFAULT",
        Validator::None,
        &[],
        "rules mapping a client certificate's subject DN to the principal name (KIP-371)",
    ),
    // SASL (also per listener as `listener.name.<name>.sasl.*`).
    def(
        "sasl.enabled.mechanisms",
        List,
        "GSSAPI",
        Validator::None,
        &[],
        "SASL mechanisms served on SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 \
         (Kafka's default, GSSAPI, is not served)",
    ),
    def(
        "sasl.oauthbearer.jwks.endpoint.url",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "where OAUTHBEARER token signing keys are read (a JWKS, file:// or https://)",
    ),
    def(
        "sasl.oauthbearer.jwks.endpoint.refresh.ms",
        Long,
        "3600000",
        AtLeast(1000),
        &[],
        "how often the JWKS is read again",
    ),
    def(
        "sasl.oauthbearer.expected.audience",
        List,
        "",
        Validator::None,
        &[],
        "audiences an OAUTHBEARER token must name one of (empty: not checked)",
    ),
    def(
        "sasl.oauthbearer.expected.issuer",
        ConfigType::String,
        "",
        Validator::None,
        &[],
        "the issuer an OAUTHBEARER token must name (empty: not checked)",
    ),
    def(
        "sasl.oauthbearer.sub.claim.name",
        ConfigType::String,
        "sub",
        Validator::None,
        &[],
        "the token claim that names the principal",
    ),
    def(
        "sasl.oauthbearer.clock.skew.seconds",
        Int,
        "30",
        AtLeast(0),
        &[],
        "slack allowed between the broker's clock and the token's times",
    ),
    def(
        "sasl.jaas.config",
        Password,
        "",
        Validator::None,
        &[],
        "the JAAS login of this broker's own SASL client (PLAIN or SCRAM's LoginModule with \
         username and password options) for the inter-broker listener; as a server, SCRAM and \
         PLAIN check the SCRAM credentials of the metadata log, OAUTHBEARER the JWKS",
    ),
    def(
        "sasl.mechanism.inter.broker.protocol",
        ConfigType::String,
        "GSSAPI",
        Validator::None,
        &[],
        "SASL mechanism brokers use with each other on a SASL inter-broker listener: PLAIN, \
         SCRAM-SHA-256 or SCRAM-SHA-512",
    ),
    def(
        "sasl.plain.allow.plaintext",
        Boolean,
        "false",
        Validator::None,
        &[],
        "whether PLAIN may be enabled on a SASL_PLAINTEXT listener, where the password \
         crosses the network in the clear (Strata's; Kafka allows it silently)",
    ),
    def(
        "sasl.server.max.receive.size",
        Int,
        "524288",
        AtLeast(1),
        &[],
        "largest request accepted before a SASL client has authenticated",
    ),
    def(
        "connections.max.reauth.ms",
        Long,
        "0",
        AtLeast(0),
        &[],
        "longest a SASL session lasts before the client must re-authenticate (KIP-368); 0: \
         sessions do not expire",
    ),
    def(
        "connection.failed.authentication.delay.ms",
        Int,
        "100",
        AtLeast(0),
        &[],
        "delay before answering and closing a failed authentication (KIP-306)",
    ),
];

/// Keys that may also be set per listener as `listener.name.<name>.<key>` (Kafka's
/// listener-prefixed configs); the prefixed value wins over the plain one on that listener.
pub fn is_per_listener_config(name: &str) -> bool {
    name.starts_with("ssl.") || name.starts_with("sasl.")
}

/// Splits `listener.name.<name>.<key>` into the listener name (upper-cased, as listener names
/// are compared) and the key, when the key may be set per listener. Kafka's per-mechanism
/// `listener.name.<name>.<mechanism>.sasl.jaas.config` reads as that listener's
/// `sasl.jaas.config`.
pub fn split_listener_prefix(name: &str) -> Option<(String, &str)> {
    const JAAS: &str = "sasl.jaas.config";
    const MECHANISMS: &[&str] = &[
        "gssapi",
        "plain",
        "scram-sha-256",
        "scram-sha-512",
        "oauthbearer",
    ];
    let rest = name.strip_prefix("listener.name.")?;
    let (listener, key) = rest.split_once('.')?;
    let key = match key.strip_suffix(JAAS).and_then(|m| m.strip_suffix('.')) {
        Some(mechanism) if MECHANISMS.contains(&mechanism) => &key[key.len() - JAAS.len()..],
        _ => key,
    };
    (!listener.is_empty() && is_per_listener_config(key))
        .then(|| (listener.to_ascii_uppercase(), key))
}

/// Broker-only properties that AlterConfigs / IncrementalAlterConfigs may change at run time
/// on the broker resource (per broker, or the cluster-wide default), as Kafka's
/// `DynamicBrokerConfig` allows for them; the others are read-only until a restart.
/// `transaction.partition.verification.enable` is one of Kafka's
/// `DynamicProducerStateManagerConfigs`: the partition leaders read it on every transactional
/// write.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &["transaction.partition.verification.enable"];

/// Whether a broker-only property can be changed at run time (see [`DYNAMIC_BROKER_CONFIGS`]).
pub fn is_dynamic_broker_config(name: &str) -> bool {
    DYNAMIC_BROKER_CONFIGS.contains(&name)
}

/// A broker-only property of [`BROKER_CONFIGS`] together with the Rust type it is read as, so
/// that the broker names properties by constant ([`props`]) and a misspelt name does not
/// compile (a name looked up at run time would silently read as `T::default()`). The test
/// `every_typed_broker_property_is_defined_with_a_default_of_its_type` holds each constant to
/// the table: the name is there, its config type fits `T`, its default parses as `T`.
#[derive(Debug)]
pub struct BrokerProperty<T> {
    name: &'static str,
    value_type: std::marker::PhantomData<fn() -> T>,
}

// Not derived: a derive would require `T: Clone`, which the key does not need.
impl<T> Clone for BrokerProperty<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for BrokerProperty<T> {}

impl<T: BrokerValue> BrokerProperty<T> {
    /// Only for the constants in [`props`].
    const fn new(name: &'static str) -> Self {
        BrokerProperty {
            name,
            value_type: std::marker::PhantomData,
        }
    }

    /// The property's name in `server.properties`, as Kafka spells it.
    pub const fn name(self) -> &'static str {
        self.name
    }
}

/// A Rust type a broker property's value is read as, and the config types whose every valid
/// value it holds (an `Int` may be read as `i64`, a `Long` never as `i32`).
pub trait BrokerValue: std::str::FromStr + Default {
    fn holds(config_type: ConfigType) -> bool;
}

impl BrokerValue for bool {
    fn holds(config_type: ConfigType) -> bool {
        config_type == Boolean
    }
}

impl BrokerValue for i16 {
    fn holds(config_type: ConfigType) -> bool {
        config_type == Short
    }
}

impl BrokerValue for i32 {
    fn holds(config_type: ConfigType) -> bool {
        matches!(config_type, Short | Int)
    }
}

impl BrokerValue for i64 {
    fn holds(config_type: ConfigType) -> bool {
        matches!(config_type, Short | Int | Long)
    }
}

impl BrokerValue for String {
    fn holds(config_type: ConfigType) -> bool {
        matches!(config_type, ConfigType::String | List | Class | Password)
    }
}

/// Declares the typed keys of [`props`] and, for the test, the list of all of them.
macro_rules! broker_properties {
    ($($(#[$doc:meta])* $key:ident: $type:ty = $name:literal;)*) => {
        $($(#[$doc])* pub const $key: BrokerProperty<$type> = BrokerProperty::new($name);)*

        /// Every key above, with the check of its type against the table.
        #[cfg(test)]
        pub(super) const ALL: &[(&str, fn(&super::ConfigDef) -> Result<(), String>)] =
            &[$(($name, super::check_property_type::<$type>)),*];
    };
}

/// The broker-only properties the broker reads, one typed key each (see [`BrokerProperty`]).
pub mod props {
    use super::BrokerProperty;

    broker_properties! {
        AUTO_CREATE_TOPICS_ENABLE: bool = "auto.create.topics.enable";
        NUM_PARTITIONS: i32 = "num.partitions";
        DEFAULT_REPLICATION_FACTOR: i16 = "default.replication.factor";
        DELETE_TOPIC_ENABLE: bool = "delete.topic.enable";
        SOCKET_REQUEST_MAX_BYTES: i64 = "socket.request.max.bytes";
        MAX_CONNECTIONS: i64 = "max.connections";
        QUOTA_WINDOW_NUM: i32 = "quota.window.num";
        QUOTA_WINDOW_SIZE_SECONDS: i32 = "quota.window.size.seconds";
        LOG_RETENTION_CHECK_INTERVAL_MS: i64 = "log.retention.check.interval.ms";
        LOG_FLUSH_SCHEDULER_INTERVAL_MS: i64 = "log.flush.scheduler.interval.ms";
        REMOTE_LOG_MANAGER_TASK_INTERVAL_MS: i64 = "remote.log.manager.task.interval.ms";
        REMOTE_LOG_MANAGER_THREAD_POOL_SIZE: i32 = "remote.log.manager.thread.pool.size";
        REMOTE_FETCH_MAX_WAIT_MS: i64 = "remote.fetch.max.wait.ms";
        REMOTE_LIST_OFFSETS_REQUEST_TIMEOUT_MS: i64 = "remote.list.offsets.request.timeout.ms";
        REMOTE_LOG_READER_CACHE_BYTES: i64 = "remote.log.reader.cache.bytes";
        REMOTE_LOG_READER_CHUNK_BYTES: i64 = "remote.log.reader.chunk.bytes";
        LOG_LOCAL_UNTIERED_MAX_BYTES: i64 = "log.local.untiered.max.bytes";
        REPLICA_HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS: i64 =
            "replica.high.watermark.checkpoint.interval.ms";
        REPLICA_LAG_TIME_MAX_MS: i64 = "replica.lag.time.max.ms";
        REPLICA_FETCH_WAIT_MAX_MS: i32 = "replica.fetch.wait.max.ms";
        REPLICA_FETCH_MAX_BYTES: i32 = "replica.fetch.max.bytes";
        REPLICA_SELECTOR_CLASS: String = "replica.selector.class";
        AUTHORIZER_CLASS_NAME: String = "authorizer.class.name";
        SUPER_USERS: String = "super.users";
        ALLOW_EVERYONE_IF_NO_ACL_FOUND: bool = "allow.everyone.if.no.acl.found";
        AUTHORIZER_AUDIT_LOG_FILE: String = "authorizer.audit.log.file";
        AUTHORIZER_AUDIT_LOG_ALLOWED: bool = "authorizer.audit.log.allowed";
        MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS: i64 =
            "max.incremental.fetch.session.cache.slots";
        MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS: i64 =
            "min.incremental.fetch.session.eviction.ms";
        MAX_INCREMENTAL_FETCH_SESSION_PARTITIONS: i64 = "max.incremental.fetch.session.partitions";
        MAX_INCREMENTAL_FETCH_SESSION_CACHE_PARTITIONS: i64 =
            "max.incremental.fetch.session.cache.partitions";
        INCREMENTAL_FETCH_SESSION_EXPIRY_MS: i64 = "incremental.fetch.session.expiry.ms";
        BROKER_SESSION_TIMEOUT_MS: i64 = "broker.session.timeout.ms";
        BROKER_HEARTBEAT_INTERVAL_MS: i64 = "broker.heartbeat.interval.ms";
        AUTO_LEADER_REBALANCE_ENABLE: bool = "auto.leader.rebalance.enable";
        LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS: i64 = "leader.imbalance.check.interval.seconds";
        LEADER_IMBALANCE_PER_BROKER_PERCENTAGE: i32 = "leader.imbalance.per.broker.percentage";
        OFFSETS_TOPIC_NUM_PARTITIONS: i64 = "offsets.topic.num.partitions";
        OFFSETS_TOPIC_REPLICATION_FACTOR: i16 = "offsets.topic.replication.factor";
        OFFSETS_TOPIC_SEGMENT_BYTES: i64 = "offsets.topic.segment.bytes";
        OFFSET_METADATA_MAX_BYTES: i64 = "offset.metadata.max.bytes";
        OFFSETS_RETENTION_MINUTES: i64 = "offsets.retention.minutes";
        OFFSETS_RETENTION_CHECK_INTERVAL_MS: i64 = "offsets.retention.check.interval.ms";
        GROUP_MIN_SESSION_TIMEOUT_MS: i64 = "group.min.session.timeout.ms";
        GROUP_MAX_SESSION_TIMEOUT_MS: i64 = "group.max.session.timeout.ms";
        GROUP_INITIAL_REBALANCE_DELAY_MS: i64 = "group.initial.rebalance.delay.ms";
        GROUP_MAX_SIZE: i64 = "group.max.size";
        GROUP_CONSUMER_SESSION_TIMEOUT_MS: i64 = "group.consumer.session.timeout.ms";
        GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS: i64 = "group.consumer.heartbeat.interval.ms";
        GROUP_CONSUMER_MAX_SIZE: i64 = "group.consumer.max.size";
        GROUP_CONSUMER_MIGRATION_POLICY: String = "group.consumer.migration.policy";
        LISTENERS: String = "listeners";
        ADVERTISED_LISTENERS: String = "advertised.listeners";
        LISTENER_SECURITY_PROTOCOL_MAP: String = "listener.security.protocol.map";
        INTER_BROKER_LISTENER_NAME: String = "inter.broker.listener.name";
        SSL_KEYSTORE_TYPE: String = "ssl.keystore.type";
        SSL_KEYSTORE_LOCATION: String = "ssl.keystore.location";
        SSL_KEYSTORE_KEY: String = "ssl.keystore.key";
        SSL_KEYSTORE_CERTIFICATE_CHAIN: String = "ssl.keystore.certificate.chain";
        SSL_KEY_PASSWORD: String = "ssl.key.password";
        SSL_TRUSTSTORE_TYPE: String = "ssl.truststore.type";
        SSL_TRUSTSTORE_LOCATION: String = "ssl.truststore.location";
        SSL_TRUSTSTORE_CERTIFICATES: String = "ssl.truststore.certificates";
        SSL_CLIENT_AUTH: String = "ssl.client.auth";
        SSL_ENABLED_PROTOCOLS: String = "ssl.enabled.protocols";
        SSL_PRINCIPAL_MAPPING_RULES: String = "ssl.principal.mapping.rules";
        SSL_CIPHER_SUITES: String = "ssl.cipher.suites";
        SSL_ENDPOINT_IDENTIFICATION_ALGORITHM: String = "ssl.endpoint.identification.algorithm";
        CONTROLLER_LISTENER_NAMES: String = "controller.listener.names";
        SASL_JAAS_CONFIG: String = "sasl.jaas.config";
        SASL_MECHANISM_INTER_BROKER_PROTOCOL: String = "sasl.mechanism.inter.broker.protocol";
        SASL_ENABLED_MECHANISMS: String = "sasl.enabled.mechanisms";
        SASL_PLAIN_ALLOW_PLAINTEXT: bool = "sasl.plain.allow.plaintext";
        SASL_OAUTHBEARER_JWKS_ENDPOINT_URL: String = "sasl.oauthbearer.jwks.endpoint.url";
        SASL_OAUTHBEARER_JWKS_ENDPOINT_REFRESH_MS: i64 =
            "sasl.oauthbearer.jwks.endpoint.refresh.ms";
        SASL_OAUTHBEARER_EXPECTED_AUDIENCE: String = "sasl.oauthbearer.expected.audience";
        SASL_OAUTHBEARER_EXPECTED_ISSUER: String = "sasl.oauthbearer.expected.issuer";
        SASL_OAUTHBEARER_SUB_CLAIM_NAME: String = "sasl.oauthbearer.sub.claim.name";
        SASL_OAUTHBEARER_CLOCK_SKEW_SECONDS: i64 = "sasl.oauthbearer.clock.skew.seconds";
        SASL_SERVER_MAX_RECEIVE_SIZE: i64 = "sasl.server.max.receive.size";
        CONNECTIONS_MAX_REAUTH_MS: i64 = "connections.max.reauth.ms";
        CONNECTION_FAILED_AUTHENTICATION_DELAY_MS: i64 =
            "connection.failed.authentication.delay.ms";
        TRANSACTION_MAX_TIMEOUT_MS: i64 = "transaction.max.timeout.ms";
        /// Dynamic (see [`super::DYNAMIC_BROKER_CONFIGS`]).
        TRANSACTION_PARTITION_VERIFICATION_ENABLE: bool =
            "transaction.partition.verification.enable";
        TRANSACTION_STATE_LOG_NUM_PARTITIONS: i64 = "transaction.state.log.num.partitions";
        TRANSACTION_STATE_LOG_REPLICATION_FACTOR: i16 = "transaction.state.log.replication.factor";
        TRANSACTION_STATE_LOG_SEGMENT_BYTES: i64 = "transaction.state.log.segment.bytes";
    }
}

/// The test's check of one typed key against its definition: the config type fits `T`, and
/// the default parses as `T` (as [`BrokerProperties::broker_value`] parses it).
#[cfg(test)]
fn check_property_type<T: BrokerValue>(def: &ConfigDef) -> Result<(), String> {
    let type_name = std::any::type_name::<T>();
    if !T::holds(def.config_type) {
        return Err(format!(
            "{} is a {:?} property, read as {type_name}",
            def.name, def.config_type
        ));
    }
    if def.default.trim().parse::<T>().is_err() {
        return Err(format!(
            "{}'s default {:?} does not parse as {type_name}",
            def.name, def.default
        ));
    }
    Ok(())
}

/// Looks up a topic config by name.
pub fn topic_config(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Looks up a broker property by name: a broker-only key or a topic config's broker synonym.
/// Returns the definition that governs its value (for a synonym, the topic config's).
pub fn broker_config(name: &str) -> Option<BrokerKey> {
    let name = split_listener_prefix(name).map_or(name, |(_, key)| key);
    if let Some(d) = BROKER_CONFIGS.iter().find(|d| d.name == name) {
        return Some(BrokerKey::Broker(d));
    }
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_synonyms.contains(&name))
        .map(BrokerKey::TopicSynonym)
}

/// Rules between topic configs, as Kafka's `LogConfig.validate` checks them: remote storage is
/// refused for compacted topics, and the local (hot tail) retention cannot exceed the
/// retention of the whole log. `configs` are a topic's explicit settings; unset keys take
/// their defaults.
pub fn check_topic_config_set(
    configs: &std::collections::BTreeMap<String, String>,
) -> Result<(), InvalidConfig> {
    let value = |name: &str| {
        configs
            .get(name)
            .map(String::as_str)
            .or_else(|| topic_config(name).map(|d| d.default))
            .unwrap_or_default()
    };
    let remote = value("remote.storage.enable")
        .trim()
        .eq_ignore_ascii_case("true");
    if remote
        && value("cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "compact")
    {
        return Err(InvalidConfig(
            "Remote log storage is unsupported for the compacted topics".into(),
        ));
    }
    for (local, total) in [
        ("local.retention.ms", "retention.ms"),
        ("local.retention.bytes", "retention.bytes"),
    ] {
        let (Ok(l), Ok(t)) = (value(local).parse::<i64>(), value(total).parse::<i64>()) else {
            continue;
        };
        if l != -2 && t != -1 && (l == -1 || l > t) {
            return Err(InvalidConfig(format!(
                "Invalid value {l} for configuration {local}: Value must not be -1 or more than {total} property value: {t}"
            )));
        }
    }
    Ok(())
}

/// What a broker property name refers to.
#[derive(Debug, Clone, Copy)]
pub enum BrokerKey {
    Broker(&'static ConfigDef),
    TopicSynonym(&'static ConfigDef),
}

impl BrokerKey {
    pub fn def(&self) -> &'static ConfigDef {
        match self {
            BrokerKey::Broker(d) | BrokerKey::TopicSynonym(d) => d,
        }
    }
}

/// A config value that failed validation; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

impl ConfigDef {
    /// Checks `value` against the type and validator. Units for the broker's `*.minutes` and
    /// `*.hours` synonyms are the caller's concern ([`broker_value_for_topic`]).
    pub fn validate(&self, value: &str) -> Result<(), InvalidConfig> {
        let bad = |why: &str| {
            InvalidConfig(format!(
                "Invalid value {value} for configuration {}: {why}",
                self.name
            ))
        };
        let value = value.trim();
        match self.config_type {
            Boolean => {
                if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                    return Err(bad("Expected value to be either true or false"));
                }
            }
            Int | Short | Long => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| bad("Not a number of type INT/LONG"))?;
                let (lo, hi) = match self.config_type {
                    Int => (i32::MIN as i64, i32::MAX as i64),
                    Short => (i16::MIN as i64, i16::MAX as i64),
                    _ => (i64::MIN, i64::MAX),
                };
                if n < lo || n > hi {
                    return Err(bad("Value out of range for its type"));
                }
                match self.validator {
                    AtLeast(min) if n < min => {
                        return Err(bad(&format!("Value must be at least {min}")))
                    }
                    Between(min, max) if n < min || n > max => {
                        return Err(bad(&format!(
                            "Value must be no less than {min} and no more than {max}"
                        )))
                    }
                    _ => {}
                }
            }
            Double => {
                let x: f64 = value
                    .parse()
                    .map_err(|_| bad("Not a number of type DOUBLE"))?;
                if let DoubleBetween(min, max) = self.validator {
                    if !(min..=max).contains(&x) {
                        return Err(bad(&format!(
                            "Value must be no less than {min} and no more than {max}"
                        )));
                    }
                }
            }
            ConfigType::String | Class | Password => match self.validator {
                OneOf(allowed) if !allowed.contains(&value) => {
                    return Err(bad(&format!(
                        "String must be one of: {}",
                        allowed.join(", ")
                    )));
                }
                OneOfIgnoreCase(allowed)
                    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) =>
                {
                    let upper: Vec<String> =
                        allowed.iter().map(|a| a.to_ascii_uppercase()).collect();
                    return Err(bad(&format!(
                        "String must be one of (case insensitive): {}",
                        upper.join(", ")
                    )));
                }
                KnownClass(known) if !value.is_empty() && !known.contains(&value) => {
                    return Err(bad(&format!(
                        "Class {value} cannot be found; Strata implements only {} (or leave it unset)",
                        known.join(" and ")
                    )));
                }
                _ => {}
            },
            List => {
                if let ListOf(allowed) = self.validator {
                    let items: Vec<&str> = value.split(',').map(str::trim).collect();
                    if items.iter().any(|i| !allowed.contains(i)) {
                        return Err(bad(&format!(
                            "Invalid value, must be a list of: {}",
                            allowed.join(", ")
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Converts a broker synonym's value into the unit of the topic config it feeds
/// (`log.retention.hours=1` means `retention.ms=3600000`).
pub fn broker_value_for_topic(synonym: &str, value: &str) -> Option<String> {
    let factor_ms: i64 = if synonym.ends_with(".hours") {
        3_600_000
    } else if synonym.ends_with(".minutes") {
        60_000
    } else {
        return Some(value.trim().to_string());
    };
    let n: i64 = value.trim().parse().ok()?;
    Some(if n < 0 {
        n.to_string()
    } else {
        n.saturating_mul(factor_ms).to_string()
    })
}

/// Static broker properties: `server.properties` plus `--override`s, validated at start-up.
#[derive(Debug, Clone, Default)]
pub struct BrokerProperties {
    values: BTreeMap<String, String>,
}

impl BrokerProperties {
    /// Parses a Java-properties style text (`key=value` or `key: value`, `#`/`!` comments).
    /// Line continuations and escapes are not supported; a line that has no separator is an error.
    pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, InvalidConfig> {
        let mut out = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some(split) = line.find(['=', ':']) else {
                return Err(InvalidConfig(format!(
                    "line {}: expected key=value, got {line:?}",
                    number + 1
                )));
            };
            out.push((
                line[..split].trim().to_string(),
                line[split + 1..].trim().to_string(),
            ));
        }
        Ok(out)
    }

    /// Sets one property after validating its name and value. Unknown names are refused so a
    /// typo does not silently fall back to a default.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), InvalidConfig> {
        let Some(key) = broker_config(name) else {
            return Err(InvalidConfig(format!("Unknown broker property {name}")));
        };
        if let BrokerKey::TopicSynonym(d) = key {
            let converted = broker_value_for_topic(name, value).ok_or_else(|| {
                InvalidConfig(format!("Invalid value {value} for configuration {name}"))
            })?;
            d.validate(&converted)?;
        } else {
            key.def().validate(value)?;
        }
        self.values
            .insert(name.to_string(), value.trim().to_string());
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A broker-only property's value (explicit or default) parsed as `T`.
    pub fn broker_value<T: BrokerValue>(&self, key: BrokerProperty<T>) -> Option<T> {
        let def = BROKER_CONFIGS.iter().find(|d| d.name == key.name())?;
        self.get(key.name())
            .unwrap_or(def.default)
            .trim()
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_jaas_settings_are_accepted_per_listener_and_mechanism() {
        let mut props = BrokerProperties::default();
        let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        props
            .set(
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
                scram,
            )
            .expect("Kafka's per-mechanism form");
        props
            .set("sasl.jaas.config", scram)
            .expect("the plain form");
        props
            .set("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-256")
            .expect("accepted");
        assert_eq!(
            split_listener_prefix("listener.name.sasl_ssl.plain.sasl.jaas.config"),
            Some(("SASL_SSL".to_string(), "sasl.jaas.config"))
        );
        assert!(props
            .set("listener.name.sasl_ssl.nope.sasl.jaas.config", scram)
            .is_err());
        let def = broker_config("sasl.jaas.config").expect("defined").def();
        assert_eq!(
            def.config_type,
            ConfigType::Password,
            "sensitive: never described"
        );
    }

    #[test]
    fn validates_types_and_ranges() {
        let retention = topic_config("retention.ms").unwrap();
        assert!(retention.validate("-1").is_ok());
        assert!(retention.validate("-2").is_err());
        assert!(retention.validate("abc").is_err());
        let ts = topic_config("message.timestamp.type").unwrap();
        assert!(ts.validate("LogAppendTime").is_ok());
        assert!(ts.validate("Whenever").is_err());
        let policy = topic_config("cleanup.policy").unwrap();
        assert!(policy.validate("compact,delete").is_ok());
        assert!(policy.validate("compact,nope").is_err());
        assert!(topic_config("segment.bytes")
            .unwrap()
            .validate("3000000000")
            .is_err());
        let selector = broker_config("replica.selector.class").unwrap().def();
        assert!(selector.validate("").is_ok(), "unset, as Kafka's null");
        assert!(selector.validate(RACK_AWARE_REPLICA_SELECTOR).is_ok());
        assert!(selector.validate(LEADER_SELECTOR).is_ok());
        let err = selector
            .validate("com.example.MySelector")
            .expect_err("an unknown class");
        assert!(
            err.0.contains("com.example.MySelector") && err.0.contains("RackAwareReplicaSelector"),
            "{err}"
        );
    }

    #[test]
    fn every_typed_broker_property_is_defined_with_a_default_of_its_type() {
        assert!(!props::ALL.is_empty());
        for (name, check) in props::ALL {
            let def = BROKER_CONFIGS
                .iter()
                .find(|d| d.name == *name)
                .unwrap_or_else(|| panic!("{name} is not in BROKER_CONFIGS"));
            check(def).unwrap_or_else(|e| panic!("{e}"));
        }
        for name in DYNAMIC_BROKER_CONFIGS {
            assert!(
                props::ALL.iter().any(|(key, _)| key == name),
                "dynamic property {name} has no typed key"
            );
        }
        // The check itself refuses what it must.
        let def = |config_type, default| ConfigDef {
            name: "x",
            config_type,
            default,
            validator: Validator::None,
            broker_synonyms: &[],
            doc: "",
        };
        assert!(
            check_property_type::<i32>(&def(Long, "1")).is_err(),
            "too narrow"
        );
        assert!(
            check_property_type::<i64>(&def(Int, "")).is_err(),
            "no default"
        );
        assert!(check_property_type::<bool>(&def(Boolean, "yes")).is_err());
        assert!(check_property_type::<String>(&def(Class, "")).is_ok());
        assert!(check_property_type::<i64>(&def(Int, "7")).is_ok());
    }

    #[test]
    fn every_default_is_valid() {
        for d in TOPIC_CONFIGS.iter().chain(BROKER_CONFIGS) {
            if !d.default.is_empty() {
                d.validate(d.default)
                    .unwrap_or_else(|e| panic!("{}: {e}", d.name));
            }
        }
    }

    #[test]
    fn broker_properties_parse_and_validate() {
        let parsed =
            BrokerProperties::parse_properties("# c\nnum.partitions=3\nlog.retention.hours : 2\n")
                .unwrap();
        let mut props = BrokerProperties::default();
        for (k, v) in parsed {
            props.set(&k, &v).unwrap();
        }
        assert_eq!(props.broker_value(props::NUM_PARTITIONS), Some(3));
        assert_eq!(
            broker_value_for_topic("log.retention.hours", "2").as_deref(),
            Some("7200000")
        );
        assert!(props.set("no.such.key", "1").is_err());
        // Enum-valued settings take Kafka's names in any case.
        for policy in ["downgrade", "DownGrade", "BIDIRECTIONAL", " upgrade "] {
            props
                .set("group.consumer.migration.policy", policy)
                .unwrap_or_else(|e| panic!("{policy}: {e}"));
        }
        assert_eq!(
            props
                .set("group.consumer.migration.policy", "foobar")
                .unwrap_err()
                .0,
            "Invalid value foobar for configuration group.consumer.migration.policy: String must be one of (case insensitive): DISABLED, DOWNGRADE, UPGRADE, BIDIRECTIONAL"
        );
        assert!(props.set("log.retention.ms", "x").is_err());
        assert!(BrokerProperties::parse_properties("just words").is_err());
    }
}
