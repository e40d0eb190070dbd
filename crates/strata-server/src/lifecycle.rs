//! Start-up, run and shutdown of a broker (the top floor): builds the [`Broker`] and its
//! parts, serves the listeners and background tasks until shut down.
//!
//! Start-up: read or create `meta.properties` (cluster id, node id), note and remove the
//! clean-shutdown marker, replay the metadata log, open the partition logs the image assigns
//! here. Shutdown (SIGTERM/SIGINT): stop accepting, let connections finish the requests they
//! are serving, close every log cleanly, then write the clean-shutdown marker so the next start
//! skips recovery.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_meta::config::{props, BrokerProperty};
use strata_meta::{FileMetadataLog, MetadataRecord, MetadataStore};
use strata_quorum::Quorum;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, ProducerIdBlock};
use crate::config::ServerConfig;
use crate::connection;
use crate::controller_service::ControllerService;
use crate::fetch_session::{FetchSessionCache, FetchSessionConfig};
use crate::group_service::GroupService;
use crate::metadata_changes::MetadataChanges;
use crate::metadata_source::MetadataSource;
use crate::metrics::Metrics;
use crate::remote_log::RemoteLogManager;
use crate::replica_manager::{now_ms, ReplicaManager};
use crate::txn_service::TxnService;

/// Name of the marker written after a clean shutdown (Kafka's `.kafka_cleanshutdown`).
pub const CLEAN_SHUTDOWN_MARKER: &str = ".strata_cleanshutdown";
const META_PROPERTIES: &str = "meta.properties";
/// How often logs that failed to open are tried again.
const OFFLINE_RETRY_INTERVAL_MS: i64 = 5_000;
/// How long start-up waits for the tier to tell empty tiered partitions where they start.
const TIER_STARTUP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    MetaProperties(String),
    /// This software cannot serve a feature level the metadata log has finalized.
    #[error("feature versions: {0}")]
    Features(String),
    #[error("metadata log: {0}")]
    Metadata(#[from] strata_meta::MetaError),
    #[error("tiered storage: {0}")]
    Tier(#[from] strata_tier::TierError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// An SSL listener's key store, trust store or protocols cannot be served.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsConfigError),
    /// The inter-broker listener's client side (TLS stores, SASL login) cannot be set up.
    #[error(transparent)]
    InterBroker(#[from] crate::broker_client::ConnectorError),
    #[error(transparent)]
    AdminHttp(#[from] crate::http::AdminBindError),
    #[error(transparent)]
    AuditLog(#[from] crate::audit_log::AuditLogError),
    /// A listener's settings cannot be served (a SASL mechanism, say).
    #[error("{0}")]
    Listener(#[from] crate::config::ListenerError),
}

impl Broker {
    /// Opens the data directory and every hosted log. Blocking. In a cluster, `quorum` is the
    /// started metadata quorum (its image already replayed) and `controller_service` the
    /// controller RPCs it serves.
    pub fn open(
        config: ServerConfig,
        quorum: Option<(Arc<Quorum>, Option<Arc<ControllerService>>)>,
    ) -> Result<Arc<Broker>, StartError> {
        let data_dir = config.data_dir.clone();
        let dir_err = |source| StartError::DataDir {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir.join("meta")).map_err(dir_err)?;
        let mut cluster_id = read_or_create_meta_properties(&data_dir, config.node_id)?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean_shutdown = marker.exists();
        if clean_shutdown {
            std::fs::remove_file(&marker).map_err(dir_err)?;
            strata_durable::sync_dir(&data_dir).map_err(dir_err)?;
        }
        tracing::info!(
            data_dir = %data_dir.display(),
            clean_shutdown,
            cluster_id = %cluster_id,
            node_id = config.node_id,
            "opening broker"
        );
        let (store, controller_service) = match quorum {
            Some((quorum, service)) => {
                cluster_id = agree_on_cluster_id(&quorum, &data_dir, config.node_id, &cluster_id)?;
                (MetadataSource::Quorum(quorum), service)
            }
            None => {
                let log = FileMetadataLog::open(&data_dir.join("meta").join("metadata.log"))?;
                (
                    MetadataSource::Local(MetadataStore::open(Box::new(log))?),
                    None,
                )
            }
        };
        let replicas = Arc::new(ReplicaManager::new(&data_dir, clean_shutdown).map_err(dir_err)?);
        let config = Arc::new(config);
        let store = Arc::new(store);
        let meta = Arc::new(MetadataChanges::new(
            store.clone(),
            replicas.clone(),
            config.clone(),
        ));
        let metrics = Arc::new(Metrics::default());
        let remote = Arc::new(RemoteLogManager::open(
            &config,
            &cluster_id,
            replicas.clone(),
            store.clone(),
            metrics.clone(),
        )?);
        let fetch_sessions = FetchSessionCache::new(
            fetch_session_config(&config),
            uuid::Uuid::new_v4().as_u128() as u64,
        );
        let connector = crate::broker_client::BrokerConnector::for_inter_broker_listener(&config)?;
        let peers = Arc::new(crate::broker_client::BrokerPool::new(
            "strata-broker",
            connector.clone(),
        ));
        let groups = Arc::new(GroupService::new(
            config.clone(),
            replicas.clone(),
            meta.clone(),
            metrics.clone(),
        ));
        let isr = Arc::new(crate::replication::AlterPartitionManager::new(
            store.quorum().cloned(),
            replicas.clone(),
            config.node_id,
        ));
        let audit_file = config.broker_value(props::AUTHORIZER_AUDIT_LOG_FILE);
        let audit = match audit_file.trim() {
            "" => None,
            path => Some(Arc::new(crate::audit_log::AuditLog::open(
                std::path::Path::new(path),
                config.broker_value(props::AUTHORIZER_AUDIT_LOG_ALLOWED),
            )?)),
        };
        let broker = Arc::new(Broker {
            meta: meta.clone(),
            controller_service,
            groups: groups.clone(),
            txns: Arc::new(TxnService::new(
                config.clone(),
                replicas.clone(),
                meta.clone(),
                metrics.clone(),
                peers.clone(),
                groups.clone(),
            )),
            rack_aware_reads: config.broker_value(props::REPLICA_SELECTOR_CLASS)
                == strata_meta::config::RACK_AWARE_REPLICA_SELECTOR,
            config: config.clone(),
            cluster_id,
            store: store.clone(),
            replicas: replicas.clone(),
            remote: remote.clone(),
            metrics: metrics.clone(),
            producer_ids: Mutex::new(ProducerIdBlock::default()),
            serving: AtomicBool::new(true),
            isr,
            fetchers: crate::replica_fetcher::ReplicaFetchers::new(
                crate::replica_fetcher::FetcherParts {
                    connector,
                    config: config.clone(),
                    metadata: store.clone(),
                    replicas: replicas.clone(),
                    remote: remote.clone(),
                    metrics: metrics.clone(),
                },
            ),
            fetch_sessions: Mutex::new(fetch_sessions),
            peers: peers.clone(),
            audit,
            tenants: Arc::default(),
            quotas: Arc::new(crate::client_quota_manager::ClientQuotaManager::new(
                crate::client_quota_manager::QuotaWindow {
                    samples: config.broker_value(props::QUOTA_WINDOW_NUM).max(1) as u32,
                    sample: std::time::Duration::from_secs(
                        config.broker_value(props::QUOTA_WINDOW_SIZE_SECONDS).max(1) as u64,
                    ),
                },
            )),
            authorizer: (config.broker_value(props::AUTHORIZER_CLASS_NAME)
                == strata_meta::config::STANDARD_AUTHORIZER)
                .then(|| {
                    Arc::new(strata_meta::authorizer::AuthorizerSettings {
                        super_users: strata_meta::authorizer::AuthorizerSettings::parse_super_users(
                            &config.broker_value(props::SUPER_USERS),
                        ),
                        allow_if_no_acl_found: config
                            .broker_value(props::ALLOW_EVERYONE_IF_NO_ACL_FOUND),
                    })
                }),
        });
        let started = std::time::Instant::now();
        let failures = broker
            .replicas
            .reconcile(&broker.store.image(), &broker.config);
        broker.replicas.set_aside_stray_dirs();
        if broker.store.quorum().is_none() {
            crate::broker_lifecycle::register_single_node(&broker.meta, &broker.config).map_err(
                |e| match e {
                    crate::broker_lifecycle::RegistrationError::Features(why) => {
                        StartError::Features(why)
                    }
                    crate::broker_lifecycle::RegistrationError::Metadata(e) => e.into(),
                },
            )?;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.block_on(broker.remote.load_empty_partitions(TIER_STARTUP_WAIT));
        }
        tracing::info!(
            partitions = broker.replicas.all().len(),
            failed = failures.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition logs opened"
        );
        // The groups and transactions of the internal partitions led here (a partition that
        // cannot be read is tried again on its next request or tick).
        broker.groups.sync_leadership();
        broker.txns.sync_leadership();
        Ok(broker)
    }

    /// Serves until `shutdown` resolves, then shuts down cleanly.
    pub async fn run(
        self: Arc<Self>,
        listeners: Vec<crate::connection::BoundListener>,
        http_listener: crate::http::AdminListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // One accept loop per listener; max.connections counts them all together.
        for listener in listeners {
            tasks.spawn(connection::accept_loop(
                self.clone(),
                listener,
                stop_rx.clone(),
            ));
        }
        let mut http_stop = stop_rx.clone();
        let http_broker = self.clone();
        tasks.spawn(async move {
            let stop = async move { crate::task::stopped(&mut http_stop).await };
            if let Err(e) = crate::http::serve(http_broker, http_listener, stop).await {
                tracing::error!(error = %e, "admin HTTP server failed");
            }
        });
        tasks.spawn(background_tasks(self.clone(), stop_rx.clone()));
        {
            let (config, replicas, metrics) = (
                self.config.clone(),
                self.replicas.clone(),
                self.metrics.clone(),
            );
            let stop = stop_rx.clone();
            tasks.spawn(
                async move { crate::log_cleaner::run(&config, replicas, metrics, stop).await },
            );
        }
        {
            let (rlm, config, stop) = (self.remote.clone(), self.config.clone(), stop_rx.clone());
            tasks.spawn(async move { crate::remote_log::run(rlm, &config, stop).await });
        }
        tasks.spawn(crate::txn_service::tick_loop(
            self.txns.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(crate::group_service::tick_loop(
            self.groups.clone(),
            stop_rx.clone(),
        ));
        if let Some(quorum) = self.store.quorum() {
            let b = self.clone();
            let image = self.image();
            tokio::task::spawn_blocking(move || b.reconcile(&image)).await?;
            tasks.spawn(crate::broker_lifecycle::run_broker_lifecycle(
                self.config.clone(),
                self.isr.clone(),
                self.quotas.clone(),
                quorum.clone(),
                stop_rx.clone(),
            ));
            tasks.spawn(follow_images(self.clone(), quorum.clone(), stop_rx.clone()));
            tasks.spawn(self.isr.clone().run_isr_checks(
                self.config.broker_value(props::REPLICA_LAG_TIME_MAX_MS),
                stop_rx.clone(),
            ));
        }
        if let Some(service) = &self.controller_service {
            tasks.spawn(service.clone().run_controller_duties(stop_rx.clone()));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        self.serving.store(false, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        // Connections finish their in-flight requests; bound the wait so a stuck client
        // cannot hold the shutdown forever.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within 10 s; closing anyway");
            tasks.abort_all();
        }
        self.fetchers.stop_all().await;
        let broker = self.clone();
        tokio::task::spawn_blocking(move || broker.close()).await??;
        Ok(())
    }

    /// Closes every log and writes the clean-shutdown marker if all closed cleanly.
    fn close(&self) -> anyhow::Result<()> {
        let failures = self.replicas.close_all();
        for (tp, e) in &failures {
            tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "log did not close cleanly");
        }
        if failures.is_empty() {
            strata_durable::replace(&self.config.data_dir, CLEAN_SHUTDOWN_MARKER, b"")?;
            tracing::info!("clean shutdown complete");
        } else {
            tracing::warn!("shutdown left logs to recover at next start");
        }
        Ok(())
    }
}

/// The fetch session cache's limits from the broker properties.
fn fetch_session_config(config: &ServerConfig) -> FetchSessionConfig {
    let int = |key: BrokerProperty<i64>| config.broker_value(key).max(0);
    FetchSessionConfig {
        max_sessions: int(props::MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS) as usize,
        eviction_ms: int(props::MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS),
        max_session_partitions: int(props::MAX_INCREMENTAL_FETCH_SESSION_PARTITIONS) as usize,
        max_cached_partitions: int(props::MAX_INCREMENTAL_FETCH_SESSION_CACHE_PARTITIONS) as usize,
        expiry_ms: int(props::INCREMENTAL_FETCH_SESSION_EXPIRY_MS),
    }
}

/// Brings the hosted logs in line with every image the quorum applies (changes made through
/// other nodes), coalescing images that arrive while a reconcile runs.
async fn follow_images(broker: Arc<Broker>, quorum: Arc<Quorum>, mut stop: watch::Receiver<bool>) {
    let mut images = quorum.subscribe();
    loop {
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            _ = crate::task::stopped(&mut stop) => return,
        }
        let image = images.borrow_and_update().clone();
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.reconcile(&image)).await;
    }
}

/// The cluster id of a node in a cluster is the quorum's: the first node to start proposes
/// its own (from `meta.properties`), and a data directory of another cluster is refused. The
/// first node also finalizes the feature levels: the latest ones for a new cluster, or, for a
/// quorum log written before feature versions existed, the levels that software served.
fn agree_on_cluster_id(
    quorum: &Arc<Quorum>,
    data_dir: &Path,
    node_id: i32,
    local: &str,
) -> Result<String, StartError> {
    let source = MetadataSource::Quorum(quorum.clone());
    let (agreed, _) = source.commit_with(|image| {
        let mut records = Vec::new();
        let agreed = match image.cluster_id() {
            Some(id) => id.to_string(),
            None => {
                records.push(MetadataRecord::ClusterId {
                    cluster_id: local.to_string(),
                });
                local.to_string()
            }
        };
        if image.feature_level(strata_meta::features::METADATA_VERSION) == 0 {
            records.extend(strata_meta::features::bootstrap_records(
                image.cluster_id().is_none(),
            ));
        }
        (records, agreed)
    })?;
    if agreed != local {
        let props = data_dir.join(META_PROPERTIES);
        let fresh = std::fs::read_dir(data_dir.join("logs"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if !fresh {
            return Err(StartError::MetaProperties(format!(
                "{} belongs to cluster {local}, but the quorum is cluster {agreed}",
                props.display()
            )));
        }
        // A new node's directory got a random id before it learned the quorum's: adopt it.
        write_meta_properties(data_dir, &agreed, node_id)?;
    }
    Ok(agreed)
}

/// Retention, time-based flush, high watermark checkpoints and the local-disk limit, on
/// blocking threads, at the configured intervals (at least once a second).
async fn background_tasks(broker: Arc<Broker>, stop: watch::Receiver<bool>) {
    let retention_ms: i64 = broker
        .config
        .broker_value(props::LOG_RETENTION_CHECK_INTERVAL_MS);
    let flush_ms: i64 = broker
        .config
        .broker_value(props::LOG_FLUSH_SCHEDULER_INTERVAL_MS);
    // The flush scheduler defaults to "never" in Kafka; check flush.ms at least once a second
    // so that a topic's flush.ms is honoured even then.
    let tick_ms = retention_ms.min(flush_ms).clamp(10, 1000) as u64;
    let mut ticker = crate::task::Ticker::new(Duration::from_millis(tick_ms), stop);
    let checkpoint_ms: i64 = broker
        .config
        .broker_value(props::REPLICA_HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS);
    let mut last_retention = now_ms();
    let mut last_offline_retry = now_ms();
    let mut last_checkpoint = now_ms();
    loop {
        if !ticker.tick().await {
            return;
        }
        let now = now_ms();
        let run_retention = now - last_retention >= retention_ms;
        if run_retention {
            last_retention = now;
        }
        let run_checkpoint = now - last_checkpoint >= checkpoint_ms;
        if run_checkpoint {
            last_checkpoint = now;
        }
        let run_offline_retry = now - last_offline_retry >= OFFLINE_RETRY_INTERVAL_MS;
        if run_offline_retry {
            last_offline_retry = now;
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if run_offline_retry && b.replicas.has_offline() {
                // Retry logs that failed to open (the disk may have been freed since).
                b.replicas.reconcile(&b.image(), &b.config);
            }
            let mut untiered_bytes = 0;
            for partition in b.replicas.all() {
                let mut log = partition.log();
                if log.config().remote_storage_enable {
                    untiered_bytes += log.local_only_bytes();
                }
                if let Err(e) = log.maybe_flush(now) {
                    b.metrics.storage_errors.add(1);
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "flush failed");
                }
                if run_checkpoint {
                    if let Err(e) = log.checkpoint_high_watermark() {
                        b.metrics.storage_errors.add(1);
                        tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "high watermark checkpoint failed");
                    }
                }
                if run_retention {
                    match log.apply_retention(now) {
                        Ok(0) => {}
                        Ok(n) => {
                            b.metrics.retention_segments_deleted.add(n as u64);
                            tracing::info!(topic = %partition.topic, partition = partition.index, segments = n, log_start_offset = log.log_start_offset(), "retention deleted segments");
                        }
                        Err(e) => {
                            b.metrics.storage_errors.add(1);
                            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed");
                        }
                    }
                }
            }
            b.remote.update_disk_usage(untiered_bytes);
        })
        .await;
    }
}

/// Reads `meta.properties` (cluster id, node id), creating it on first start. A node id that
/// differs from the configured one means the directory belongs to another node: refuse.
fn read_or_create_meta_properties(data_dir: &Path, node_id: i32) -> Result<String, StartError> {
    let path = data_dir.join(META_PROPERTIES);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = strata_meta::config::BrokerProperties::parse_properties(&text)
                .map_err(|e| StartError::MetaProperties(format!("{}: {e}", path.display())))?;
            let get = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let cluster_id = get("cluster.id").ok_or_else(|| {
                StartError::MetaProperties(format!("{} has no cluster.id", path.display()))
            })?;
            if let Some(found) = get("node.id") {
                if found != node_id.to_string() {
                    return Err(StartError::MetaProperties(format!(
                        "{} belongs to node {found}, but this broker is node {node_id}",
                        path.display()
                    )));
                }
            }
            Ok(cluster_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = new_cluster_id();
            write_meta_properties(data_dir, &cluster_id, node_id)?;
            Ok(cluster_id)
        }
        Err(source) => Err(StartError::DataDir {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_meta_properties(
    data_dir: &Path,
    cluster_id: &str,
    node_id: i32,
) -> Result<(), StartError> {
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    strata_durable::replace(data_dir, META_PROPERTIES, text.as_bytes()).map_err(|source| {
        StartError::DataDir {
            path: data_dir.join(META_PROPERTIES).display().to_string(),
            source,
        }
    })
}

/// A Kafka-style cluster id: a random UUID in URL-safe base64 without padding (22 chars).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| {
            let shift = 128i32 - 6 * (i + 1);
            let v = if shift >= 0 {
                bits >> shift
            } else {
                bits << -shift
            };
            ALPHABET[(v & 63) as usize] as char
        })
        .collect()
}
