//! The broker's parts, as its handlers see them (the dependencies of Kafka's `KafkaApis`): the
//! metadata, the replica manager, the coordinators' services, the tier, replication, metrics.
//! Handlers take it; services below never do (each holds the parts it uses). Building it at
//! start-up and running its tasks is [`crate::lifecycle`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strata_durable::LockExt;
use strata_meta::{MetadataImage, MetadataRecord};

use crate::config::ServerConfig;
use crate::controller_service::ControllerService;
use crate::fetch_session::FetchSessionCache;
use crate::group_service::GroupService;
use crate::metadata_changes::MetadataChanges;
use crate::metadata_source::MetadataSource;
use crate::metrics::Metrics;
use crate::remote_log::RemoteLogManager;
use crate::replica_manager::ReplicaManager;
use crate::txn_service::TxnService;

/// Producer ids are reserved from the metadata log in blocks, as Kafka's controller does.
const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

pub struct Broker {
    pub config: Arc<ServerConfig>,
    pub cluster_id: String,
    pub store: Arc<MetadataSource>,
    /// Metadata changes: the controller's validation, the commit, and the hosted logs brought
    /// in line.
    pub meta: Arc<MetadataChanges>,
    /// The active-controller duties (broker sessions), on nodes that can be elected.
    pub controller_service: Option<Arc<ControllerService>>,
    pub replicas: Arc<ReplicaManager>,
    pub remote: Arc<RemoteLogManager>,
    pub metrics: Arc<Metrics>,
    pub groups: Arc<GroupService>,
    pub txns: Arc<TxnService>,
    pub(crate) producer_ids: Mutex<ProducerIdBlock>,
    pub(crate) serving: AtomicBool,
    /// ISR changes to the controller (AlterPartition), with this process's broker epoch.
    pub isr: Arc<crate::replication::AlterPartitionManager>,
    /// Fetchers that copy the partitions this broker follows from their leaders.
    pub fetchers: crate::replica_fetcher::ReplicaFetchers,
    /// `replica.selector.class` is Kafka's rack-aware selector (KIP-392): a static setting,
    /// read once here rather than on every fetch.
    pub rack_aware_reads: bool,
    /// Incremental fetch sessions (KIP-227) of consumers and followers. The lock is held only
    /// for a request's session bookkeeping, never across a read of the logs.
    pub(crate) fetch_sessions: Mutex<FetchSessionCache>,
    /// Connections to other brokers for transaction markers and transactional write checks.
    pub peers: Arc<crate::broker_client::BrokerPool>,
    /// The StandardAuthorizer's settings when `authorizer.class.name` names it; `None`: no
    /// authorizer, every request allowed and the ACL APIs answer SECURITY_DISABLED.
    pub authorizer: Option<Arc<strata_meta::authorizer::AuthorizerSettings>>,
    /// Where authorization decisions are recorded (`authorizer.audit.log.file`).
    pub audit: Option<Arc<crate::audit_log::AuditLog>>,
    /// The rates of clients with a byte-rate quota, and the throttling they earn.
    pub quotas: Arc<crate::client_quota_manager::ClientQuotaManager>,
    /// What each tenant does here, and its open connections.
    pub tenants: Arc<crate::tenant_metrics::TenantMetrics>,
}

/// The unhanded-out part of the current producer-id block.
#[derive(Default)]
pub(crate) struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl Broker {
    /// Brings the hosted logs, their leadership and the follower fetchers in line with
    /// `image`. Blocking.
    pub fn reconcile(self: &Arc<Self>, image: &MetadataImage) {
        self.replicas.reconcile(image, &self.config);
        self.fetchers.update(image);
        self.groups.sync_leadership();
        self.txns.sync_leadership();
    }

    /// The fetch session cache, locked.
    pub fn fetch_sessions(&self) -> std::sync::MutexGuard<'_, FetchSessionCache> {
        self.fetch_sessions.locked()
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.store.image()
    }

    /// The authorizer a request arriving now is checked against: the settings and the
    /// current image's ACLs; `None` without an authorizer.
    pub fn request_authorizer(&self) -> Option<crate::session::Authorizer> {
        self.authorizer
            .as_ref()
            .map(|settings| crate::session::Authorizer {
                settings: settings.clone(),
                image: self.image(),
                audit: self.audit.clone(),
            })
    }

    /// Runs a controller operation under the metadata commit lock (in a cluster: builds it
    /// again from a newer image as often as another change gets in first), then brings the
    /// hosted logs in line with the new image. Blocks the calling thread on fsync and file creation,
    /// so async callers wrap it in `block_in_place`.
    pub fn commit<T>(
        &self,
        build: impl FnMut(&MetadataImage) -> (Vec<MetadataRecord>, T),
    ) -> Result<T, strata_meta::MetaError> {
        self.meta.commit(build)
    }

    /// Creates the `--add-scram` credentials whose user has none for that mechanism yet, in
    /// one metadata batch, and returns the (user, mechanism) pairs created. Run at every
    /// start: an existing credential (perhaps changed since with AlterUserScramCredentials)
    /// is left alone. Blocking.
    pub fn bootstrap_scram_credentials(
        &self,
        bootstraps: &[strata_meta::scram::ScramBootstrap],
    ) -> Result<Vec<(String, strata_meta::scram::ScramMechanism)>, BootstrapScramError> {
        let outcome = self.commit(|image| {
            let mut working = image.clone();
            let mut records = Vec::new();
            let mut created = Vec::new();
            for b in bootstraps {
                match self
                    .meta
                    .controller()
                    .bootstrap_scram_credential(&working, b)
                {
                    Ok(Some(record)) => {
                        working = working.apply(std::slice::from_ref(&record));
                        records.push(record);
                        created.push((b.name.clone(), b.mechanism));
                    }
                    Ok(None) => {}
                    Err(e) => return (Vec::new(), Err(e)),
                }
            }
            (records, Ok(created))
        })?;
        Ok(outcome?)
    }

    /// Hands out a producer id, reserving a new block in the metadata log when the current
    /// one is used up. Ids are never reused, across restarts too.
    pub fn next_producer_id(&self) -> Result<i64, strata_meta::MetaError> {
        let mut block = self.producer_ids.locked();
        if block.next >= block.end {
            let start = self.commit(|image| {
                let (start, records) = self
                    .meta
                    .controller()
                    .allocate_producer_ids(image, PRODUCER_ID_BLOCK_SIZE);
                (records, start)
            })?;
            *block = ProducerIdBlock {
                next: start,
                end: start + PRODUCER_ID_BLOCK_SIZE,
            };
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }
}

/// Why the `--add-scram` credentials could not be created at start-up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapScramError {
    #[error("--add-scram: {0}")]
    Refused(#[from] strata_meta::ControllerError),
    #[error("--add-scram: {0}")]
    Metadata(#[from] strata_meta::MetaError),
}
