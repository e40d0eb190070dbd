//! The active controller's duties (Kafka's `QuorumController` as it serves brokers): it keeps
//! each broker's session from its heartbeats, fences a broker whose heartbeats stop for
//! `broker.session.timeout.ms` (its partitions get new leaders from their ISRs), and unfences
//! a registered broker once its metadata has caught up with its registration, so that it
//! never leads from a stale image. Sessions live in the active controller's memory only, as
//! in Kafka: a new active controller gives every broker a full session before fencing it.
//!
//! It also moves leadership back to preferred replicas every
//! `leader.imbalance.check.interval.seconds` (Kafka's `auto.leader.rebalance.enable`), so
//! that a broker that restarted leads its share of partitions again once it is back in sync.
//! The broker's side of registration is [`crate::broker_lifecycle`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use strata_durable::LockExt;
use strata_meta::config::props;
use strata_meta::controller::{BrokerRegistrationRequest, MAX_ELECTIONS_PER_BALANCE};
use strata_meta::{Controller, MetaError, MetadataImage};
use strata_quorum::Quorum;
use tokio::sync::watch;

use crate::client_quota_manager::demand_shares;
use crate::config::ServerConfig;
use crate::controller_rpc::{
    AlterPartitionRequest, AlterPartitionResponse, HeartbeatRequest, HeartbeatResponse,
    RegisterResponse, TenantShare, TenantUsage, ALTER_PARTITION_PATH, HEARTBEAT_PATH,
    REGISTER_PATH,
};
use crate::metadata_source::commit_to_quorum;

/// How often the active controller looks for expired sessions.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The active controller's side. Every node that can be elected runs it; only the quorum
/// leader acts, the others answer 503 so that callers go to the leader.
pub struct ControllerService {
    quorum: OnceLock<Arc<Quorum>>,
    controller: Controller,
    session_timeout: Duration,
    /// Resolves `unclean.leader.election.enable` per topic.
    config: ServerConfig,
    /// Broker id -> (epoch, last heartbeat), as seen by this node while it leads.
    sessions: Mutex<HashMap<i32, (i64, Instant)>>,
    /// Broker id -> its last report of tenant usage, and when it came.
    tenant_usage: Mutex<HashMap<i32, (Instant, Vec<TenantUsage>)>>,
    balance: LeaderBalance,
}

/// Automatic preferred-leader balancing, from Kafka's broker configs of the same names.
struct LeaderBalance {
    /// `auto.leader.rebalance.enable`.
    enabled: bool,
    /// `leader.imbalance.check.interval.seconds`.
    interval: Duration,
    /// `leader.imbalance.per.broker.percentage`.
    imbalance_percentage: i32,
}

type RpcError = (StatusCode, String);

/// What a periodic duty of the active controller does on one tick.
enum Duty {
    /// The node is stopping.
    Stop,
    /// This node does not lead the quorum: nothing to do.
    Idle,
    /// This node has just become the active controller (it did not lead at the last tick).
    NewlyLeading(Arc<Quorum>),
    /// This node has led since at least the last tick.
    Leading(Arc<Quorum>),
}

/// The ticks of one duty of the active controller, telling a new term from a going one.
struct DutyTicker {
    ticker: crate::task::Ticker,
    was_leading: bool,
}

impl DutyTicker {
    fn new(interval: Duration, stop: watch::Receiver<bool>) -> Self {
        DutyTicker {
            ticker: crate::task::Ticker::new(interval, stop),
            was_leading: false,
        }
    }

    async fn tick(&mut self, service: &ControllerService) -> Duty {
        if !self.ticker.tick().await {
            return Duty::Stop;
        }
        let Ok(quorum) = service.leading() else {
            self.was_leading = false;
            return Duty::Idle;
        };
        let quorum = quorum.clone();
        if std::mem::replace(&mut self.was_leading, true) {
            Duty::Leading(quorum)
        } else {
            Duty::NewlyLeading(quorum)
        }
    }
}

impl ControllerService {
    pub fn new(config: &ServerConfig) -> Arc<Self> {
        Arc::new(ControllerService {
            quorum: OnceLock::new(),
            controller: Controller::new(config.node_id),
            session_timeout: Duration::from_millis(
                config.broker_value(props::BROKER_SESSION_TIMEOUT_MS).max(1) as u64,
            ),
            config: config.clone(),
            sessions: Mutex::new(HashMap::new()),
            tenant_usage: Mutex::new(HashMap::new()),
            balance: LeaderBalance {
                enabled: config.broker_value(props::AUTO_LEADER_REBALANCE_ENABLE),
                interval: Duration::from_secs(
                    config
                        .broker_value(props::LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS)
                        .max(1) as u64,
                ),
                imbalance_percentage: config
                    .broker_value(props::LEADER_IMBALANCE_PER_BROKER_PERCENTAGE),
            },
        })
    }

    /// The RPC routes, served on the controller listener by the quorum.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route(REGISTER_PATH, post(register))
            .route(HEARTBEAT_PATH, post(heartbeat))
            .route(ALTER_PARTITION_PATH, post(alter_partition))
            .with_state(self.clone())
    }

    /// Connects the service to the quorum once it has started (the routes exist before it).
    pub fn attach(&self, quorum: Arc<Quorum>) {
        let _ = self.quorum.set(quorum);
    }

    /// The quorum, when this node leads it.
    fn leading(&self) -> Result<&Arc<Quorum>, RpcError> {
        match self.quorum.get() {
            Some(q) if q.is_leader() => Ok(q),
            _ => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "not the active controller".into(),
            )),
        }
    }

    /// Records `broker_id`'s tenant usage and answers its share of every tenant quota: the
    /// split of [`demand_shares`] over the live (unfenced) brokers, by what each reported
    /// within a session timeout. With one live broker, or none with a quota, nothing: each
    /// broker then holds a tenant to its whole quota.
    fn tenant_shares(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        usage: Vec<TenantUsage>,
    ) -> Vec<TenantShare> {
        let now = Instant::now();
        let mut reports = self.tenant_usage.locked();
        reports.insert(broker_id, (now, usage));
        let live: Vec<i32> = image
            .brokers()
            .filter(|b| !b.fenced)
            .map(|b| b.broker_id)
            .collect();
        reports.retain(|id, (at, _)| {
            live.contains(id) && now.saturating_duration_since(*at) < self.session_timeout
        });
        if live.len() < 2 || !live.contains(&broker_id) {
            return Vec::new();
        }
        let mut shares = Vec::new();
        for tenant in image.tenants() {
            for quota in tenant.quotas.keys() {
                let demands: Vec<(i32, f64, bool)> = live
                    .iter()
                    .map(|id| {
                        let report = reports.get(id).and_then(|(_, usage)| {
                            usage
                                .iter()
                                .find(|u| u.tenant_id == tenant.id && &u.quota == quota)
                        });
                        (
                            *id,
                            report.map_or(0.0, |u| u.rate),
                            report.is_some_and(|u| u.saturated),
                        )
                    })
                    .collect();
                if let Some((_, fraction)) = demand_shares(&demands)
                    .into_iter()
                    .find(|(id, _)| *id == broker_id)
                {
                    shares.push(TenantShare {
                        tenant_id: tenant.id.clone(),
                        quota: quota.clone(),
                        fraction,
                    });
                }
            }
        }
        shares
    }

    fn touch(&self, broker_id: i32, broker_epoch: i64) {
        self.sessions
            .locked()
            .insert(broker_id, (broker_epoch, Instant::now()));
    }

    /// The active controller's periodic duties, until `stop`: broker sessions and leader
    /// balance. Every controller runs them; they act only while this node leads the quorum.
    pub async fn run_controller_duties(self: Arc<Self>, stop: watch::Receiver<bool>) {
        tokio::join!(
            self.clone().check_sessions(stop.clone()),
            self.run_leader_balance(stop)
        );
    }

    /// Fences every unfenced broker whose session expired. Runs while this node leads; a
    /// node that just became leader first gives every broker a fresh session.
    async fn check_sessions(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut ticker = DutyTicker::new(SESSION_CHECK_INTERVAL, stop);
        loop {
            let quorum = match ticker.tick(&self).await {
                Duty::Stop => return,
                Duty::Idle => continue,
                Duty::NewlyLeading(quorum) => {
                    let now = Instant::now();
                    let mut sessions = self.sessions.locked();
                    sessions.clear();
                    for b in quorum.image().brokers() {
                        sessions.insert(b.broker_id, (b.broker_epoch, now));
                    }
                    tracing::info!(brokers = sessions.len(), "became the active controller");
                    continue;
                }
                Duty::Leading(quorum) => quorum,
            };
            let image = quorum.image();
            for (broker_id, broker_epoch) in self.expired(&image) {
                tracing::warn!(
                    broker_id,
                    broker_epoch,
                    timeout_ms = self.session_timeout.as_millis() as u64,
                    "broker session expired; fencing it"
                );
                let fenced = commit_to_quorum(&quorum, |image| {
                    let unclean = self.config.unclean_leader_election(image);
                    let records =
                        self.controller
                            .fence_broker(image, broker_id, broker_epoch, &unclean);
                    (records, ())
                })
                .await;
                if let Err(e) = fenced {
                    tracing::error!(broker_id, error = %e, "cannot fence broker");
                }
            }
        }
    }

    /// Moves leadership back to preferred replicas every `leader.imbalance.check.interval.seconds`
    /// while this node leads ([`Controller::balance_leaders`]). A node that just became the
    /// active controller waits one full interval first, as Kafka's controller does, so that
    /// brokers have re-registered and caught up before leadership moves.
    async fn run_leader_balance(self: Arc<Self>, stop: watch::Receiver<bool>) {
        if !self.balance.enabled {
            return;
        }
        let mut ticker = DutyTicker::new(self.balance.interval, stop);
        loop {
            let quorum = match ticker.tick(&self).await {
                Duty::Stop => return,
                Duty::Idle | Duty::NewlyLeading(_) => continue,
                Duty::Leading(quorum) => quorum,
            };
            // A full round leaves more to do: go on at once rather than an interval later.
            loop {
                let balanced = commit_to_quorum(&quorum, |image| {
                    let records = self
                        .controller
                        .balance_leaders(image, self.balance.imbalance_percentage);
                    let elections = records.len();
                    (records, elections)
                })
                .await;
                match balanced {
                    Ok((0, _)) => break,
                    Ok((elections, _)) => {
                        tracing::info!(elections, "moved leadership back to preferred replicas");
                        if elections < MAX_ELECTIONS_PER_BALANCE {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot balance partition leadership");
                        break;
                    }
                }
            }
        }
    }

    /// Unfenced brokers without a heartbeat in their current epoch for the session timeout.
    fn expired(&self, image: &MetadataImage) -> Vec<(i32, i64)> {
        let now = Instant::now();
        let mut sessions = self.sessions.locked();
        image
            .brokers()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let session = sessions.entry(b.broker_id).or_insert((b.broker_epoch, now));
                if session.0 != b.broker_epoch {
                    // Registered again since: the new epoch's session starts now.
                    *session = (b.broker_epoch, now);
                }
                now.duration_since(session.1) > self.session_timeout
            })
            .map(|b| (b.broker_id, b.broker_epoch))
            .collect()
    }
}

async fn register(
    State(service): State<Arc<ControllerService>>,
    Json(request): Json<BrokerRegistrationRequest>,
) -> Result<Json<RegisterResponse>, RpcError> {
    let quorum = service.leading()?.clone();
    let (registered, _) = commit_to_quorum(&quorum, |image| {
        // A broker that cannot serve a finalized feature level may not join (Kafka answers
        // UNSUPPORTED_VERSION to its registration).
        if let Err(why) = strata_meta::features::check_registration(
            image,
            request.broker_id,
            &request.supported_features,
        ) {
            return (Vec::new(), Err(why));
        }
        let unclean = service.config.unclean_leader_election(image);
        let (epoch, records) = service
            .controller
            .register_broker(image, &request, &unclean);
        (records, Ok(epoch))
    })
    .await
    .map_err(unavailable)?;
    let broker_epoch = registered.map_err(|why| {
        tracing::warn!(broker_id = request.broker_id, reason = %why, "broker registration refused");
        (StatusCode::CONFLICT, why)
    })?;
    service.touch(request.broker_id, broker_epoch);
    tracing::info!(
        broker_id = request.broker_id,
        broker_epoch,
        host = %request.host,
        port = request.port,
        rack = ?request.rack,
        "broker registered"
    );
    Ok(Json(RegisterResponse { broker_epoch }))
}

async fn heartbeat(
    State(service): State<Arc<ControllerService>>,
    Json(request): Json<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, RpcError> {
    let quorum = service.leading()?.clone();
    let image = quorum.image();
    let Some(registered) = image
        .broker(request.broker_id)
        .filter(|b| b.broker_epoch == request.broker_epoch)
    else {
        return Ok(Json(HeartbeatResponse {
            fenced: true,
            register_again: true,
            tenant_shares: Vec::new(),
        }));
    };
    service.touch(request.broker_id, request.broker_epoch);
    let (id, epoch) = (request.broker_id, request.broker_epoch);
    let fenced = if request.want_shutdown {
        if !registered.fenced {
            tracing::info!(broker_id = id, "controlled shutdown: fencing broker");
            commit_to_quorum(&quorum, |image| {
                let unclean = service.config.unclean_leader_election(image);
                (
                    service.controller.fence_broker(image, id, epoch, &unclean),
                    (),
                )
            })
            .await
            .map_err(unavailable)?;
        }
        true
    } else if registered.fenced && request.metadata_offset >= epoch as u64 {
        // The broker's image holds its own registration: it has caught up.
        commit_to_quorum(&quorum, |image| {
            let unclean = service.config.unclean_leader_election(image);
            (
                service
                    .controller
                    .unfence_broker(image, id, epoch, &unclean),
                (),
            )
        })
        .await
        .map_err(unavailable)?;
        tracing::info!(broker_id = id, broker_epoch = epoch, "broker unfenced");
        false
    } else {
        registered.fenced
    };
    let tenant_shares = service.tenant_shares(&image, id, request.tenant_usage);
    Ok(Json(HeartbeatResponse {
        fenced,
        register_again: false,
        tenant_shares,
    }))
}

async fn alter_partition(
    State(service): State<Arc<ControllerService>>,
    Json(request): Json<AlterPartitionRequest>,
) -> Result<Json<AlterPartitionResponse>, RpcError> {
    let quorum = service.leading()?.clone();
    let (outcome, _) = commit_to_quorum(&quorum, |image| {
        match service.controller.alter_partition(
            image,
            request.broker_id,
            request.broker_epoch,
            request.topic_id,
            request.partition,
            request.leader_epoch,
            request.partition_epoch,
            &request.new_isr,
        ) {
            Ok((next, records)) => (records, Ok(next)),
            Err(e) => (Vec::new(), Err(e)),
        }
    })
    .await
    .map_err(unavailable)?;
    Ok(Json(match outcome {
        Ok(next) => {
            tracing::info!(topic_id = %request.topic_id, partition = request.partition, isr = ?next.isr, partition_epoch = next.partition_epoch, "ISR changed");
            AlterPartitionResponse {
                error_code: 0,
                isr: next.isr,
                partition_epoch: next.partition_epoch,
            }
        }
        Err(e) => AlterPartitionResponse {
            error_code: e.kafka_error_code(),
            isr: Vec::new(),
            partition_epoch: -1,
        },
    }))
}

fn unavailable(e: MetaError) -> RpcError {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}
