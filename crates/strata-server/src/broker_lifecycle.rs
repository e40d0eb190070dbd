//! The broker's side of KRaft's broker lifecycle (Kafka's `BrokerLifecycleManager`): a broker
//! registers with the active controller and heartbeats to it, registers again when asked, and
//! asks to be fenced when it stops (controlled shutdown). A single node without a quorum
//! registers itself in its own metadata log at start-up ([`register_single_node`]), so that
//! the image always lists the brokers that serve.

use std::sync::Arc;
use std::time::Duration;

use strata_meta::config::props;
use strata_meta::controller::BrokerRegistrationRequest;
use strata_meta::NO_UNCLEAN_ELECTION;
use strata_quorum::Quorum;
use tokio::sync::watch;
use uuid::Uuid;

use crate::client_quota_manager::{ClientQuotaManager, QuotaKind};
use crate::config::ServerConfig;
use crate::controller_rpc::{
    HeartbeatRequest, HeartbeatResponse, RegisterResponse, TenantUsage, HEARTBEAT_PATH,
    REGISTER_PATH,
};
use crate::metadata_changes::MetadataChanges;
use crate::replication::AlterPartitionManager;

/// Why a single node could not register itself.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// This software cannot serve a feature level the metadata log has finalized.
    #[error("{0}")]
    Features(String),
    #[error("{0}")]
    Metadata(#[from] strata_meta::MetaError),
}

/// How long a stopping broker waits for the controller to fence it.
const SHUTDOWN_HEARTBEAT_WAIT: Duration = Duration::from_secs(3);

/// What this broker registers as.
fn registration_request(config: &ServerConfig, incarnation_id: Uuid) -> BrokerRegistrationRequest {
    BrokerRegistrationRequest {
        broker_id: config.node_id,
        incarnation_id,
        host: config.advertised_host.clone(),
        port: config.advertised_port,
        rack: config.rack.clone(),
        supported_features: strata_meta::features::supported(),
        listeners: config
            .listeners
            .iter()
            .map(|l| strata_meta::image::BrokerEndpoint {
                name: l.name.clone(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
                security_protocol: l.security_protocol.name().to_string(),
            })
            .collect(),
    }
}

/// A single node registers itself (and is unfenced at once: it is the whole cluster) when
/// its image does not already list it as it is now. The partitions it leads keep it as
/// leader, with leader epochs bumped as for any re-registration. A new metadata log first
/// finalizes the feature levels ([`strata_meta::features::bootstrap_records`]); a node that
/// cannot serve the levels its log has finalized refuses to start. Blocking.
pub fn register_single_node(
    meta: &MetadataChanges,
    config: &ServerConfig,
) -> Result<(), RegistrationError> {
    let request = registration_request(config, Uuid::new_v4());
    let refused = meta.commit(|image| {
        let mut records = Vec::new();
        let bootstrapped;
        let image = if image.feature_level(strata_meta::features::METADATA_VERSION) == 0 {
            records = strata_meta::features::bootstrap_records(image.offset == 0);
            bootstrapped = image.apply(&records);
            &bootstrapped
        } else {
            image
        };
        if let Err(why) = strata_meta::features::check_registration(
            image,
            request.broker_id,
            &request.supported_features,
        ) {
            return (Vec::new(), Some(why));
        }
        let current = image.broker(request.broker_id);
        let unchanged = current.is_some_and(|b| {
            !b.fenced
                && b.host == request.host
                && b.port == request.port
                && b.rack == request.rack
                && b.supported_features == request.supported_features
                && b.listeners == request.listeners
        });
        if unchanged {
            return (records, None);
        }
        // A single node leads every partition it has: there is no one else to elect.
        let (broker_epoch, registration) =
            meta.controller()
                .register_broker(image, &request, NO_UNCLEAN_ELECTION);
        let registered = image.apply(&registration);
        records.extend(registration);
        records.extend(meta.controller().unfence_broker(
            &registered,
            request.broker_id,
            broker_epoch,
            NO_UNCLEAN_ELECTION,
        ));
        (records, None)
    })?;
    match refused {
        Some(why) => Err(RegistrationError::Features(why)),
        None => Ok(()),
    }
}

/// The broker's side in a cluster: register, then heartbeat every
/// `broker.heartbeat.interval.ms` until stopped, registering again when the controller asks;
/// on stop, ask to be fenced (controlled shutdown) so that clients move on at once.
pub async fn run_broker_lifecycle(
    config: Arc<ServerConfig>,
    isr: Arc<AlterPartitionManager>,
    quotas: Arc<ClientQuotaManager>,
    quorum: Arc<Quorum>,
    stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(
        config
            .broker_value(props::BROKER_HEARTBEAT_INTERVAL_MS)
            .max(10) as u64,
    );
    let request = registration_request(&config, Uuid::new_v4());
    let mut epoch: Option<i64> = None;
    let mut ticker = crate::task::Ticker::new(interval, stop);
    loop {
        if !ticker.tick().await {
            break;
        }
        let Some(broker_epoch) = epoch else {
            match quorum
                .call_leader::<_, RegisterResponse>(REGISTER_PATH, &request)
                .await
            {
                Ok(r) => {
                    tracing::info!(
                        broker_epoch = r.broker_epoch,
                        "registered with the controller"
                    );
                    epoch = Some(r.broker_epoch);
                    isr.set_broker_epoch(r.broker_epoch);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register with the controller; retrying")
                }
            }
            continue;
        };
        let image = quorum.image();
        let beat = HeartbeatRequest {
            broker_id: request.broker_id,
            broker_epoch,
            metadata_offset: image.offset,
            want_shutdown: false,
            tenant_usage: quotas
                .tenant_usage(&image, std::time::Instant::now())
                .into_iter()
                .map(|u| TenantUsage {
                    tenant_id: u.tenant_id,
                    quota: u.kind.key().to_string(),
                    rate: u.rate,
                    saturated: u.saturated,
                })
                .collect(),
        };
        match quorum
            .call_leader::<_, HeartbeatResponse>(HEARTBEAT_PATH, &beat)
            .await
        {
            Ok(r) if r.register_again => {
                tracing::warn!(
                    broker_epoch,
                    "the controller asks this broker to register again"
                );
                epoch = None;
            }
            Ok(r) => quotas.set_tenant_shares(r.tenant_shares.into_iter().filter_map(|s| {
                let kind = QuotaKind::of_tenant_key(&s.quota)?;
                Some((s.tenant_id, kind, s.fraction))
            })),
            Err(e) => tracing::warn!(error = %e, "heartbeat to the controller failed"),
        }
    }
    // Without a known leader (the whole cluster stopping, say) nobody would answer.
    if let (Some(broker_epoch), Some(_)) = (epoch, quorum.leader_id()) {
        let beat = HeartbeatRequest {
            broker_id: request.broker_id,
            broker_epoch,
            metadata_offset: quorum.image().offset,
            want_shutdown: true,
            tenant_usage: Vec::new(),
        };
        let call = quorum.call_leader::<_, HeartbeatResponse>(HEARTBEAT_PATH, &beat);
        match tokio::time::timeout(SHUTDOWN_HEARTBEAT_WAIT, call).await {
            Ok(Ok(_)) => tracing::info!("fenced for controlled shutdown"),
            _ => tracing::warn!("controlled shutdown not acknowledged; the session will expire"),
        }
    }
}
