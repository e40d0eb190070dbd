//! Broker configuration and the resolution of effective topic configs.
//!
//! Static settings come from flags, `server.properties` and `--override`; dynamic ones from
//! config records in the metadata image. [`ServerConfig::resolve_topic_config`] walks Kafka's
//! precedence (topic override, dynamic per-broker, dynamic cluster default, static broker,
//! built-in default) and returns every level that is set, which is also what DescribeConfigs
//! reports as synonyms.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::session::SecurityProtocol;

use strata_log::{LogConfig, TimestampType};
use strata_meta::config::{
    broker_value_for_topic, props, BrokerProperties, BrokerProperty, BrokerValue, ConfigDef,
    TOPIC_CONFIGS,
};
use strata_meta::{ConfigResource, MetadataImage};

/// Kafka's DescribeConfigs `ConfigSource` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// One level at which a config is set: the key as named at that level, its value, its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLevel {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    /// The inter-broker listener's bind address (see [`ServerConfig::listeners`]).
    pub listen: SocketAddr,
    /// Host and port of the inter-broker listener, which other brokers connect to: the
    /// registration's `host`/`port`.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Every Kafka listener, in the order configured; one accept loop each. The
    /// inter-broker one is also `listen` / `advertised_*` above.
    pub listeners: Vec<ListenerConfig>,
    /// `inter.broker.listener.name`.
    pub inter_broker_listener: String,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub props: BrokerProperties,
    /// `--object-store`: the tier's URL; `None` = a folder under the data directory.
    pub object_store: Option<String>,
    /// `--object-store-option KEY=VALUE`: store settings (endpoint, region, credentials),
    /// over the ones in the environment.
    pub object_store_options: Vec<(String, String)>,
    /// `--broker-rack`: where replicas are spread across (Kafka's `broker.rack`).
    pub rack: Option<String>,
    /// `--controller-quorum-voters` and friends: `None` is a single node with its own file
    /// metadata log.
    pub quorum: Option<QuorumSettings>,
}

/// How this node takes part in a cluster's metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSettings {
    /// Node id -> "host:port" of every voter's controller listener.
    pub voters: std::collections::BTreeMap<i32, String>,
    /// Where this node's controller listener binds (Raft and broker-to-controller RPCs).
    pub controller_listen: SocketAddr,
    /// The address others reach this node's controller listener at.
    pub controller_advertised: String,
    /// `--process-roles`: whether this node serves Kafka clients and hosts partitions.
    pub broker: bool,
    /// `--process-roles`: whether this node votes and may become the active controller.
    pub controller: bool,
}

impl ServerConfig {
    /// A broker-only property's value: the static setting, else its default. Keys are the
    /// typed constants of [`strata_meta::config::props`], so a misspelt name does not compile;
    /// values were validated at start-up, so the `T::default()` fallback is not reached.
    pub fn broker_value<T: BrokerValue>(&self, key: BrokerProperty<T>) -> T {
        self.props.broker_value(key).unwrap_or_default()
    }

    /// A broker-only property that can change at run time
    /// ([`strata_meta::config::DYNAMIC_BROKER_CONFIGS`]): this broker's dynamic value, else the
    /// cluster-wide dynamic default, else the static setting or the built-in default (Kafka's
    /// precedence). Values are compared without case, as Kafka's booleans are.
    pub fn dynamic_broker_value<T: BrokerValue>(
        &self,
        image: &MetadataImage,
        key: BrokerProperty<T>,
    ) -> T {
        let name = key.name();
        debug_assert!(strata_meta::config::is_dynamic_broker_config(name));
        for resource in [
            ConfigResource::Broker(Some(self.node_id)),
            ConfigResource::Broker(None),
        ] {
            if let Some(v) = image.config(&resource, name) {
                if let Ok(value) = v.trim().to_ascii_lowercase().parse() {
                    return value;
                }
            }
        }
        self.props
            .get(name)
            .and_then(|v| v.trim().to_ascii_lowercase().parse().ok())
            .unwrap_or_else(|| self.broker_value(key))
    }

    /// `transaction.partition.verification.enable` as it is now (dynamic, KIP-890): whether
    /// partition leaders check transactional writes of protocol v1 clients with the
    /// coordinator.
    pub fn transaction_verification_enabled(&self, image: &MetadataImage) -> bool {
        self.dynamic_broker_value(image, props::TRANSACTION_PARTITION_VERIFICATION_ENABLE)
    }

    /// `unclean.leader.election.enable` per topic as the controller applies it, for the
    /// controller's elections ([`strata_meta::UncleanElection`]): the topic's override, else
    /// this broker's dynamic or static setting, else false (Kafka's precedence).
    pub fn unclean_leader_election<'a>(
        &'a self,
        image: &'a MetadataImage,
    ) -> impl Fn(&str) -> bool + 'a {
        move |topic| {
            strata_meta::config::topic_config("unclean.leader.election.enable").is_some_and(|def| {
                self.topic_config_value(image, topic, def)
                    .trim()
                    .eq_ignore_ascii_case("true")
            })
        }
    }

    /// All levels at which topic config `def` is set for `topic`, most specific first; the first
    /// is the effective value. Always ends with the built-in default.
    pub fn resolve_topic_config(
        &self,
        image: &MetadataImage,
        topic: &str,
        def: &ConfigDef,
    ) -> Vec<ConfigLevel> {
        let mut levels = Vec::new();
        if let Some(v) = image.config(&ConfigResource::Topic(topic.to_string()), def.name) {
            levels.push(ConfigLevel {
                name: def.name.to_string(),
                value: v.to_string(),
                source: ConfigSource::TopicConfig,
            });
        }
        self.resolve_broker_levels(image, def, &mut levels);
        levels
    }

    /// The broker-side levels of a topic config (its synonyms), then the default.
    fn resolve_broker_levels(
        &self,
        image: &MetadataImage,
        def: &ConfigDef,
        levels: &mut Vec<ConfigLevel>,
    ) {
        let dynamic = [
            (
                ConfigResource::Broker(Some(self.node_id)),
                ConfigSource::DynamicBrokerConfig,
            ),
            (
                ConfigResource::Broker(None),
                ConfigSource::DynamicDefaultBrokerConfig,
            ),
        ];
        for (resource, source) in dynamic {
            for synonym in def.broker_synonyms {
                if let Some(v) = image.config(&resource, synonym) {
                    levels.push(level(synonym, v, source));
                }
            }
        }
        for synonym in def.broker_synonyms {
            if let Some(v) = self.props.get(synonym) {
                levels.push(level(synonym, v, ConfigSource::StaticBrokerConfig));
            }
        }
        levels.push(ConfigLevel {
            name: def.name.to_string(),
            value: def.default.to_string(),
            source: ConfigSource::DefaultConfig,
        });
    }

    /// Levels of a broker property (a broker-only key or a topic config's synonym).
    pub fn resolve_broker_config(
        &self,
        image: &MetadataImage,
        name: &str,
        default: &str,
    ) -> Vec<ConfigLevel> {
        let mut levels = Vec::new();
        for (resource, source) in [
            (
                ConfigResource::Broker(Some(self.node_id)),
                ConfigSource::DynamicBrokerConfig,
            ),
            (
                ConfigResource::Broker(None),
                ConfigSource::DynamicDefaultBrokerConfig,
            ),
        ] {
            if let Some(v) = image.config(&resource, name) {
                levels.push(level(name, v, source));
            }
        }
        if let Some(v) = self.props.get(name) {
            levels.push(level(name, v, ConfigSource::StaticBrokerConfig));
        }
        levels.push(level(name, default, ConfigSource::DefaultConfig));
        levels
    }

    /// The effective value of a topic config, converted to the topic config's unit.
    pub fn topic_config_value(
        &self,
        image: &MetadataImage,
        topic: &str,
        def: &ConfigDef,
    ) -> String {
        let levels = self.resolve_topic_config(image, topic, def);
        let top = &levels[0];
        broker_value_for_topic(&top.name, &top.value).unwrap_or_else(|| def.default.to_string())
    }

    /// The log settings of `topic`.
    pub fn log_config(&self, image: &MetadataImage, topic: &str) -> LogConfig {
        let mut config = LogConfig::default();
        for def in TOPIC_CONFIGS {
            let value = self.topic_config_value(image, topic, def);
            let long = || value.parse::<i64>().ok();
            match def.name {
                "segment.bytes" => set(&mut config.segment_bytes, long().map(|v| v as u64)),
                "segment.ms" => set(&mut config.segment_ms, long()),
                "segment.index.bytes" => {
                    set(&mut config.segment_index_bytes, long().map(|v| v as u64))
                }
                "index.interval.bytes" => {
                    set(&mut config.index_interval_bytes, long().map(|v| v as u64))
                }
                "retention.ms" => set(&mut config.retention_ms, long()),
                "retention.bytes" => set(&mut config.retention_bytes, long()),
                "flush.messages" => set(&mut config.flush_messages, long().map(|v| v as u64)),
                "flush.ms" => set(&mut config.flush_ms, long()),
                "max.message.bytes" => set(&mut config.max_message_bytes, long().map(|v| v as u32)),
                "message.timestamp.before.max.ms" => {
                    set(&mut config.timestamp_before_max_ms, long())
                }
                "message.timestamp.after.max.ms" => set(&mut config.timestamp_after_max_ms, long()),
                "file.delete.delay.ms" => set(&mut config.file_delete_delay_ms, long()),
                "delete.retention.ms" => set(&mut config.delete_retention_ms, long()),
                "min.cleanable.dirty.ratio" => {
                    set(&mut config.min_cleanable_dirty_ratio, value.parse().ok())
                }
                "min.compaction.lag.ms" => set(&mut config.min_compaction_lag_ms, long()),
                "max.compaction.lag.ms" => set(&mut config.max_compaction_lag_ms, long()),
                "local.retention.ms" => set(&mut config.local_retention_ms, long()),
                "local.retention.bytes" => set(&mut config.local_retention_bytes, long()),
                "remote.storage.enable" => {
                    config.remote_storage_enable = value.trim().eq_ignore_ascii_case("true")
                }
                "message.timestamp.type" => {
                    config.timestamp_type = if value == "LogAppendTime" {
                        TimestampType::LogAppendTime
                    } else {
                        TimestampType::CreateTime
                    }
                }
                _ => {}
            }
        }
        // Time and size retention belong to the `delete` policy; a compact-only topic keeps
        // its records until compaction removes superseded ones.
        let policy = self.topic_config_value(image, topic, cleanup_policy_def());
        config.compact = policy.split(',').any(|p| p.trim() == "compact");
        // Kafka refuses remote storage for compacted topics; a broker-wide default must not
        // turn it on for them (the internal topics among them).
        config.remote_storage_enable &= !config.compact;
        if !policy.split(',').any(|p| p.trim() == "delete") {
            config.retention_ms = -1;
            config.retention_bytes = -1;
        }
        config
    }
}

fn cleanup_policy_def() -> &'static ConfigDef {
    strata_meta::config::topic_config("cleanup.policy").expect("cleanup.policy is defined")
}

fn level(name: &str, value: &str, source: ConfigSource) -> ConfigLevel {
    ConfigLevel {
        name: name.to_string(),
        value: value.to_string(),
        source,
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// One Kafka listener (Kafka's `EndPoint` of `listeners` joined with its advertised address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Upper case, as Kafka compares listener names.
    pub name: String,
    pub security_protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// Host and port clients of this listener are told (`advertised.listeners`, else the bind
    /// address).
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// A listener setting that cannot be served; start-up stops with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListenerError(pub String);

/// The listeners as `server.properties` and the flags give them. `listeners` (with
/// `listener.security.protocol.map`, `advertised.listeners`, `inter.broker.listener.name`) is
/// Kafka's form; without it `listen` (`--listen`, one PLAINTEXT listener, advertised as
/// `advertised`, `--advertised-listener`) is the shorthand, and the default is
/// `127.0.0.1:9092`. Returns the listeners and the inter-broker listener's name.
///
/// A SASL listener's mechanisms are checked when it is bound
/// ([`crate::sasl::listener_mechanisms`]); the inter-broker login when the broker opens
/// ([`crate::broker_client::BrokerConnector`]).
pub fn listeners_from(
    props: &BrokerProperties,
    listen: Option<SocketAddr>,
    advertised: Option<&str>,
) -> Result<(Vec<ListenerConfig>, String), ListenerError> {
    let err = |m: String| ListenerError(m);
    let Some(text) = props.get(props::LISTENERS.name()) else {
        let bind = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let (host, port) = match advertised {
            Some(a) => split_host_port(a).ok_or_else(|| {
                err(format!(
                    "--advertised-listener expects HOST:PORT, got {a:?}"
                ))
            })?,
            None => (bind.ip().to_string(), bind.port()),
        };
        for key in [
            props::ADVERTISED_LISTENERS.name(),
            props::INTER_BROKER_LISTENER_NAME.name(),
        ] {
            if props.get(key).is_some() {
                return Err(err(format!("{key} needs listeners")));
            }
        }
        let protocol = SecurityProtocol::Plaintext;
        let listener = ListenerConfig {
            name: protocol.name().to_string(),
            security_protocol: protocol,
            bind,
            advertised_host: host,
            advertised_port: port.into(),
        };
        return Ok((vec![listener], protocol.name().to_string()));
    };
    if listen.is_some() || advertised.is_some() {
        return Err(err(
            "--listen and --advertised-listener are the one-listener shorthand: with listeners \
             set, use advertised.listeners"
                .into(),
        ));
    }
    let protocols = security_protocol_map(props)?;
    let parse_list = |key: &str, text: &str| -> Result<Vec<(String, String, u16)>, ListenerError> {
        let mut out: Vec<(String, String, u16)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, address) = entry
                .split_once("://")
                .ok_or_else(|| err(format!("{key}: expected NAME://HOST:PORT, got {entry:?}")))?;
            let (host, port) = split_host_port(address)
                .ok_or_else(|| err(format!("{key}: expected NAME://HOST:PORT, got {entry:?}")))?;
            let name = name.trim().to_ascii_uppercase();
            if out.iter().any(|(n, _, _)| *n == name) {
                return Err(err(format!("{key}: listener {name} is named twice")));
            }
            if out
                .iter()
                .any(|(_, h, p)| *p == port && *h == host && port != 0)
            {
                return Err(err(format!("{key}: two listeners on {host}:{port}")));
            }
            out.push((name, host, port));
        }
        Ok(out)
    };
    let bound = parse_list(props::LISTENERS.name(), text)?;
    if bound.is_empty() {
        return Err(err("listeners is empty".into()));
    }
    let advertised_text = props
        .broker_value(props::ADVERTISED_LISTENERS)
        .unwrap_or_default();
    let advertised = parse_list(props::ADVERTISED_LISTENERS.name(), &advertised_text)?;
    for (name, _, _) in &advertised {
        if !bound.iter().any(|(n, _, _)| n == name) {
            return Err(err(format!(
                "advertised.listeners names {name}, which is not in listeners"
            )));
        }
    }
    let mut listeners = Vec::new();
    for (name, host, port) in bound {
        let protocol = *protocols.get(&name).ok_or_else(|| {
            err(format!(
                "no security protocol for listener {name}: add it to listener.security.protocol.map"
            ))
        })?;
        let bind_host = if host.is_empty() { "0.0.0.0" } else { &host };
        let bind = std::net::ToSocketAddrs::to_socket_addrs(&(bind_host, port))
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| err(format!("listener {name}: cannot resolve {bind_host:?}")))?;
        let (advertised_host, advertised_port) = advertised
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, h, p)| (h.clone(), *p))
            .unwrap_or_else(|| (bind.ip().to_string(), bind.port()));
        listeners.push(ListenerConfig {
            name,
            security_protocol: protocol,
            bind,
            advertised_host,
            advertised_port: advertised_port.into(),
        });
    }
    let inter = props
        .broker_value(props::INTER_BROKER_LISTENER_NAME)
        .unwrap_or_default();
    let inter = if inter.trim().is_empty() {
        // Kafka's default comes from security.inter.broker.protocol=PLAINTEXT: the listener
        // named PLAINTEXT; without one, the first listener.
        listeners
            .iter()
            .find(|l| l.name == "PLAINTEXT")
            .unwrap_or(&listeners[0])
            .name
            .clone()
    } else {
        inter.trim().to_ascii_uppercase()
    };
    if !listeners.iter().any(|l| l.name == inter) {
        return Err(err(format!(
            "inter.broker.listener.name {inter} is not in listeners"
        )));
    };
    Ok((listeners, inter))
}

/// `listener.security.protocol.map`: listener name (upper-cased) to security protocol.
fn security_protocol_map(
    props: &BrokerProperties,
) -> Result<std::collections::BTreeMap<String, SecurityProtocol>, ListenerError> {
    let err = |m: String| ListenerError(m);
    let map_text = props
        .broker_value(props::LISTENER_SECURITY_PROTOCOL_MAP)
        .unwrap_or_default();
    let mut protocols = std::collections::BTreeMap::new();
    for entry in map_text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry.split_once(':').ok_or_else(|| {
            err(format!(
                "listener.security.protocol.map: expected NAME:PROTOCOL, got {entry:?}"
            ))
        })?;
        let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(|| {
            err(format!(
                "listener.security.protocol.map: unknown security protocol {protocol:?} \
                 (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
            ))
        })?;
        protocols.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(protocols)
}

/// The controller listener (`--controller-listen`): its name, the first of
/// `controller.listener.names`, and its security protocol ([`http_listener_protocol`]; SSL
/// there is always mutual TLS).
pub fn controller_listener(
    props: &BrokerProperties,
) -> Result<(String, SecurityProtocol), ListenerError> {
    let names = props
        .broker_value(props::CONTROLLER_LISTENER_NAMES)
        .unwrap_or_default();
    let name = names
        .split(',')
        .map(str::trim)
        .find(|n| !n.is_empty())
        .unwrap_or("CONTROLLER")
        .to_ascii_uppercase();
    let protocol = http_listener_protocol(props, &name)?;
    Ok((name, protocol))
}

/// The name by which `listener.security.protocol.map` and `listener.name.admin.ssl.*` set the
/// admin HTTP server's (`--http`) security.
pub const ADMIN_LISTENER: &str = "ADMIN";

/// The security protocol of an HTTP listener outside `listeners` (the controller listener,
/// the admin HTTP server) from `listener.security.protocol.map`: PLAINTEXT when the map does
/// not name it, or SSL; they authenticate peers by certificate, so SASL is refused.
pub fn http_listener_protocol(
    props: &BrokerProperties,
    name: &str,
) -> Result<SecurityProtocol, ListenerError> {
    let protocol = security_protocol_map(props)?
        .get(name)
        .copied()
        .unwrap_or(SecurityProtocol::Plaintext);
    if protocol.is_sasl() {
        return Err(ListenerError(format!(
            "listener {name} uses {}: it serves HTTP and authenticates peers by their \
             certificates; map it to SSL (or PLAINTEXT)",
            protocol.name()
        )));
    }
    Ok(protocol)
}

/// `host:port`, `[v6]:port` or `:port` (every interface); the host without brackets.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((host.trim_matches(['[', ']']).to_string(), port))
}

impl ServerConfig {
    /// The listener this session came in on.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// A per-listener setting (`ssl.*`, `sasl.*`): `listener.name.<listener>.<key>` if set,
    /// else the plain key, else its default (Kafka's precedence for listener-prefixed configs).
    /// Values were validated when the properties were read.
    pub fn listener_value<T: strata_meta::config::BrokerValue>(
        &self,
        listener: &str,
        key: BrokerProperty<T>,
    ) -> T {
        self.props
            .iter()
            .find(|(name, _)| {
                strata_meta::config::split_listener_prefix(name)
                    .is_some_and(|(l, k)| l == listener && k == key.name())
            })
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or_else(|| self.broker_value(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BrokerProperties {
        let mut props = BrokerProperties::default();
        for (k, v) in pairs {
            props.set(k, v).expect("valid property");
        }
        props
    }

    #[test]
    fn the_shorthand_is_one_plaintext_listener() {
        let (listeners, inter) = listeners_from(&props(&[]), None, None).unwrap();
        assert_eq!(inter, "PLAINTEXT");
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].bind.to_string(), "127.0.0.1:9092");
        assert_eq!(listeners[0].advertised_host, "127.0.0.1");
        let (listeners, _) = listeners_from(
            &props(&[]),
            Some("0.0.0.0:9000".parse().unwrap()),
            Some("broker.example:19000"),
        )
        .unwrap();
        assert_eq!(
            (
                listeners[0].advertised_host.as_str(),
                listeners[0].advertised_port
            ),
            ("broker.example", 19000)
        );
    }

    #[test]
    fn named_listeners_with_map_and_advertised() {
        let p = props(&[
            ("listeners", "internal://127.0.0.1:9092,SSL://[::1]:9093"),
            (
                "listener.security.protocol.map",
                "INTERNAL:PLAINTEXT,SSL:SSL",
            ),
            ("advertised.listeners", "SSL://kafka.example:443"),
            ("inter.broker.listener.name", "internal"),
        ]);
        let (listeners, inter) = listeners_from(&p, None, None).unwrap();
        assert_eq!(inter, "INTERNAL");
        assert_eq!(listeners[0].name, "INTERNAL");
        assert_eq!(listeners[0].security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(listeners[0].advertised_host, "127.0.0.1");
        assert_eq!(listeners[1].security_protocol, SecurityProtocol::Ssl);
        assert_eq!(listeners[1].bind.to_string(), "[::1]:9093");
        assert_eq!(
            (
                listeners[1].advertised_host.as_str(),
                listeners[1].advertised_port
            ),
            ("kafka.example", 443)
        );
    }

    #[test]
    fn bad_listener_configs_are_refused_with_their_reason() {
        let refused = |pairs: &[(&str, &str)]| {
            listeners_from(&props(pairs), None, None)
                .unwrap_err()
                .to_string()
        };
        // Brokers talk to each other over TLS and SASL too.
        for only in ["SASL_SSL://:9093", "SSL://:1"] {
            let (_, inter) = listeners_from(&props(&[("listeners", only)]), None, None).unwrap();
            assert_eq!(inter, only.split_once(':').unwrap().0);
        }
        assert!(refused(&[("listeners", "X://:9093")]).contains("listener.security.protocol.map"));
        assert!(refused(&[("listeners", "PLAINTEXT:9092")]).contains("NAME://HOST:PORT"));
        assert!(refused(&[("listeners", "PLAINTEXT://:1,PLAINTEXT://:2")]).contains("twice"));
        assert!(refused(&[
            ("listeners", "PLAINTEXT://:1"),
            ("advertised.listeners", "SSL://h:2")
        ])
        .contains("not in listeners"));
        assert!(refused(&[("advertised.listeners", "PLAINTEXT://h:1")]).contains("needs listeners"));
        let both = listeners_from(
            &props(&[("listeners", "PLAINTEXT://:1")]),
            Some("127.0.0.1:1".parse().unwrap()),
            None,
        );
        assert!(both.unwrap_err().to_string().contains("shorthand"));
    }

    #[test]
    fn a_listener_prefixed_setting_wins_on_its_listener() {
        let mut config = crate::test_fixture::config(std::path::Path::new("/nonexistent"), &[]);
        config.props = props(&[
            ("ssl.client.auth", "requested"),
            ("listener.name.ssl.ssl.client.auth", "required"),
        ]);
        assert_eq!(
            config.listener_value("SSL", props::SSL_CLIENT_AUTH),
            "required"
        );
        assert_eq!(
            config.listener_value("OTHER", props::SSL_CLIENT_AUTH),
            "requested"
        );
        assert_eq!(
            config.listener_value("SSL", props::SSL_ENABLED_PROTOCOLS),
            "TLSv1.2,TLSv1.3"
        );
    }
}
