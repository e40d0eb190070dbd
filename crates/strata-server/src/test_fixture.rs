//! A broker's parts without a socket, for the tests of the services and the replica manager:
//! a single node's file metadata log, a replica manager over real logs on real files, and the
//! metadata changes that bring them in line, all under a temp dir. Built the way
//! [`crate::lifecycle`] builds them, minus the listeners and background tasks, so that a test
//! drives a service the way a handler does and then reads what reached the disk.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_meta::config::BrokerProperties;
use strata_meta::{
    ConfigResource, CreateTopicSpec, FileMetadataLog, MetadataImage, MetadataRecord, MetadataStore,
};

use crate::broker::Broker;
use crate::broker_client::BrokerPool;
use crate::config::ServerConfig;
use crate::group_service::GroupService;
use crate::internal_topics::{self, Replayed};
use crate::metadata_changes::MetadataChanges;
use crate::metadata_source::MetadataSource;
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;
use crate::txn_service::TxnService;

/// This node's id.
pub const NODE: i32 = 1;
/// Another broker the image may name as a partition's leader or replica (never started).
pub const OTHER: i32 = 2;

/// A single node's configuration over `data_dir`: small internal topics (two partitions
/// each), no initial rebalance delay (a group's join completes at once), then `extra`.
pub fn config(data_dir: &Path, extra: &[(&str, &str)]) -> ServerConfig {
    let mut props = BrokerProperties::default();
    for (name, value) in [
        ("offsets.topic.num.partitions", "2"),
        ("transaction.state.log.num.partitions", "2"),
        ("group.initial.rebalance.delay.ms", "0"),
    ]
    .iter()
    .chain(extra)
    {
        props.set(name, value).expect("known property");
    }
    ServerConfig {
        node_id: NODE,
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertised_host: "localhost".into(),
        advertised_port: 9092,
        listeners: vec![crate::config::ListenerConfig {
            name: "PLAINTEXT".into(),
            security_protocol: crate::session::SecurityProtocol::Plaintext,
            bind: "127.0.0.1:0".parse().expect("addr"),
            advertised_host: "localhost".into(),
            advertised_port: 9092,
        }],
        inter_broker_listener: "PLAINTEXT".into(),
        data_dir: data_dir.to_path_buf(),
        http: "127.0.0.1:0".parse().expect("addr"),
        props,
        object_store: None,
        object_store_options: Vec::new(),
        rack: None,
        quorum: None,
    }
}

/// A whole single-node [`Broker`] opened as start-up opens it, over a temp dir, without
/// listeners or background tasks: what handlers are driven against in-process.
pub struct TestBroker {
    pub broker: Arc<Broker>,
    /// Dropped after `broker`, so the directory outlives the logs open in it.
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    /// Opens the broker on a blocking thread (start-up blocks on the runtime it finds).
    pub async fn open(extra: &[(&str, &str)]) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), extra);
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, None))
            .await
            .expect("open task")
            .expect("broker opens");
        TestBroker { broker, dir }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.broker.image()
    }

    /// See [`Node::create_topic`].
    pub fn create_topic(&self, name: &str, partitions: i32) {
        create_topic(&self.broker.meta, name, partitions)
    }

    /// See [`Node::register_other`].
    pub fn register_other(&self) {
        register_other(&self.broker.meta)
    }

    /// See [`Node::move_partition`].
    pub fn move_partition(&self, topic: &str, partition: i32, replicas: Vec<i32>, leader: i32) {
        move_partition(&self.broker.meta, topic, partition, replicas, leader)
    }
}

/// One node's parts over a temp dir (removed when dropped).
pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: Arc<ServerConfig>,
    pub replicas: Arc<ReplicaManager>,
    pub meta: Arc<MetadataChanges>,
    pub metrics: Arc<Metrics>,
}

impl Node {
    /// A registered single node with small internal topics (two partitions each) and no
    /// initial rebalance delay, so that a group's join completes at once.
    pub fn start() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(config(dir.path(), &[]));
        std::fs::create_dir_all(dir.path().join("meta")).expect("meta dir");
        let log = FileMetadataLog::open(&dir.path().join("meta").join("metadata.log"))
            .expect("metadata log");
        let store = Arc::new(MetadataSource::Local(
            MetadataStore::open(Box::new(log)).expect("metadata store"),
        ));
        let replicas = Arc::new(ReplicaManager::new(dir.path(), true).expect("replica manager"));
        let meta = Arc::new(MetadataChanges::new(
            store,
            replicas.clone(),
            config.clone(),
        ));
        crate::broker_lifecycle::register_single_node(&meta, &config).expect("register");
        Node {
            dir,
            config,
            replicas,
            meta,
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.meta.image()
    }

    /// A group service over these parts, as start-up builds it.
    pub fn groups(&self) -> Arc<GroupService> {
        Arc::new(GroupService::new(
            self.config.clone(),
            self.replicas.clone(),
            self.meta.clone(),
            self.metrics.clone(),
        ))
    }

    /// A transaction service over these parts and `groups`, as start-up builds it.
    pub fn txns(&self, groups: Arc<GroupService>) -> Arc<TxnService> {
        Arc::new(TxnService::new(
            self.config.clone(),
            self.replicas.clone(),
            self.meta.clone(),
            self.metrics.clone(),
            Arc::new(BrokerPool::new(
                "strata-test",
                crate::broker_client::BrokerConnector::plaintext(),
            )),
            groups,
        ))
    }

    /// Commits `records` as they are and brings the hosted logs in line (what a metadata
    /// image from the controller does on a broker).
    pub fn commit(&self, records: Vec<MetadataRecord>) {
        commit(&self.meta, records)
    }

    /// Creates a topic of `partitions` partitions, each with this node as its only replica,
    /// through the controller.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        create_topic(&self.meta, name, partitions)
    }

    /// Registers [`OTHER`] as a live broker, so that the image may name it.
    pub fn register_other(&self) {
        register_other(&self.meta)
    }

    /// Reassigns one partition as the controller would: new replicas and leader, its leader
    /// and partition epochs bumped; the ISR is every replica.
    pub fn move_partition(&self, topic: &str, partition: i32, replicas: Vec<i32>, leader: i32) {
        move_partition(&self.meta, topic, partition, replicas, leader)
    }

    /// Sets a topic config (e.g. a `max.message.bytes` so small that the log refuses every
    /// append: a log that refuses the write, on real files).
    pub fn set_topic_config(&self, topic: &str, name: &str, value: Option<&str>) {
        set_topic_config(&self.meta, topic, name, value)
    }

    /// Every data record (key, value) in a partition's log, from its start, as a coordinator
    /// reads it back at load.
    pub fn records(&self, topic: &str, partition: i32) -> Vec<(Bytes, Option<Bytes>)> {
        let mut out = Vec::new();
        internal_topics::replay(&self.replicas, topic, partition, |r| {
            if let Replayed::Data { key, value, .. } = r {
                out.push((key, value));
            }
        })
        .expect("replay");
        out
    }

    /// The log end offset of a hosted partition.
    pub fn log_end(&self, topic: &str, partition: i32) -> i64 {
        self.replicas
            .partition(topic, partition)
            .expect("hosted")
            .log()
            .log_end_offset()
    }
}

/// Commits `records` as they are and brings the hosted logs in line (what a metadata
/// image from the controller does on a broker).
pub fn commit(meta: &MetadataChanges, records: Vec<MetadataRecord>) {
    meta.commit(|_| (records.clone(), ()))
        .expect("metadata commit");
}

/// Creates a topic of `partitions` partitions, each with this node as its only replica,
/// through the controller.
pub fn create_topic(meta: &MetadataChanges, name: &str, partitions: i32) {
    let spec = CreateTopicSpec {
        name: name.to_string(),
        num_partitions: -1,
        replication_factor: -1,
        assignments: (0..partitions).map(|p| (p, vec![NODE])).collect(),
        configs: Vec::new(),
    };
    meta.commit(|image| {
        let (_, records) = meta
            .controller()
            .create_topic(image, &spec, (partitions, 1))
            .expect("create topic");
        (records, ())
    })
    .expect("metadata commit");
}

/// Registers [`OTHER`] as a live broker, so that the image may name it.
pub fn register_other(meta: &MetadataChanges) {
    commit(
        meta,
        vec![
            MetadataRecord::RegisterBroker {
                broker_id: OTHER,
                broker_epoch: 1_000,
                incarnation_id: uuid::Uuid::new_v4(),
                host: "localhost".into(),
                port: 9093,
                rack: None,
                supported_features: Default::default(),
                listeners: Vec::new(),
            },
            MetadataRecord::UnfenceBroker {
                broker_id: OTHER,
                broker_epoch: 1_000,
            },
        ],
    );
}

/// Reassigns one partition as the controller would: new replicas and leader, its leader
/// and partition epochs bumped; the ISR is every replica.
pub fn move_partition(
    meta: &MetadataChanges,
    topic: &str,
    partition: i32,
    replicas: Vec<i32>,
    leader: i32,
) {
    let image = meta.image();
    let t = image.topic(topic).expect("topic");
    let current = &t.partitions[partition as usize];
    commit(
        meta,
        vec![MetadataRecord::Partition {
            topic_id: t.topic_id,
            partition,
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: current.leader_epoch + 1,
            partition_epoch: current.partition_epoch + 1,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }],
    );
}

/// Sets a topic config (e.g. a `max.message.bytes` so small that the log refuses every
/// append: a log that refuses the write, on real files).
pub fn set_topic_config(meta: &MetadataChanges, topic: &str, name: &str, value: Option<&str>) {
    commit(
        meta,
        vec![MetadataRecord::Config {
            resource: ConfigResource::Topic(topic.to_string()),
            name: name.to_string(),
            value: value.map(str::to_string),
        }],
    );
}

/// A throw-away CA with a server certificate it signed for one name and a client certificate
/// for `CN=operator`, all PEM.
pub struct TestPki {
    pub ca: String,
    /// The server's private key and certificate, as in `ssl.keystore.location`.
    pub server: String,
    pub client_chain: String,
    pub client_key: String,
}

impl TestPki {
    pub fn new(server_name: &str) -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().expect("key");
        let server = rcgen::CertificateParams::new(vec![server_name.to_string()])
            .expect("params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let client_key = rcgen::KeyPair::generate().expect("key");
        let mut client_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "operator");
        let client = client_params
            .signed_by(&client_key, &issuer)
            .expect("client certificate");
        TestPki {
            ca: ca.pem(),
            server: server_key.serialize_pem() + &server.pem(),
            client_chain: client.pem(),
            client_key: client_key.serialize_pem(),
        }
    }
}
