//! The admin HTTP server: `/health` for load balancers and supervisors, `/metrics` for
//! Prometheus. Every route is behind `authenticate`, the admin API's one authentication point.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;
use crate::metrics::Gauges;
use crate::session::KafkaPrincipal;

pub async fn serve(
    broker: Arc<Broker>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/partitions", get(partitions))
        .layer(middleware::from_fn(authenticate))
        .with_state(broker);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The one point where the admin API authenticates a caller, before any route. Until security
/// is configured the admin API is open, as Kafka's plaintext listeners are, and every caller
/// is `User:ANONYMOUS`; HTTP Basic authentication against the SASL credential store will answer
/// 401 here. The principal is passed to the routes as a request extension.
async fn authenticate(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(KafkaPrincipal::anonymous());
    next.run(request).await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn health(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    if broker.is_serving() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

/// This node's view of the cluster: the active controller and the registered brokers.
async fn cluster(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let image = broker.image();
    let quorum = broker.store.quorum();
    let controller_id = match quorum {
        Some(q) => q.leader_id(),
        None => Some(broker.config.node_id),
    };
    let brokers: Vec<serde_json::Value> = image
        .brokers()
        .map(|b| {
            serde_json::json!({
                "id": b.broker_id,
                "epoch": b.broker_epoch,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "fenced": b.fenced,
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "node_id": broker.config.node_id,
        "cluster_id": broker.cluster_id,
        "controller_id": controller_id,
        "is_active_controller": quorum.is_none_or(|q| q.is_leader()),
        "metadata_offset": image.offset,
        "brokers": brokers,
        "quorum": quorum.map(|q| q.status()),
    }))
}

/// The partitions hosted here, with their replication state: what a replica verifier needs.
async fn partitions(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let b = broker.clone();
    let list = tokio::task::spawn_blocking(move || {
        let image = b.image();
        let mut hosted = b.replicas.all();
        hosted.sort_by(|x, y| (&x.topic, x.index).cmp(&(&y.topic, y.index)));
        hosted
            .into_iter()
            .map(|p| {
                let assigned = image
                    .topic(&p.topic)
                    .and_then(|t| t.partitions.get(p.index as usize).cloned());
                let log = p.log();
                serde_json::json!({
                    "topic": p.topic,
                    "partition": p.index,
                    "leader": assigned.as_ref().map_or(-1, |a| a.leader),
                    "leader_epoch": p.leader_epoch(),
                    "is_leader": p.is_leader(),
                    "replicas": assigned.as_ref().map(|a| a.replicas.clone()).unwrap_or_default(),
                    "isr": assigned.as_ref().map(|a| a.isr.clone()).unwrap_or_default(),
                    "log_start_offset": log.log_start_offset(),
                    "log_end_offset": log.log_end_offset(),
                    "high_watermark": log.high_watermark(),
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    axum::Json(list)
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let mut gauges = Gauges {
        tier_cache: broker.remote.cache_stats(),
        fetch_sessions: broker.fetch_sessions().stats(),
        audit_records_written: broker.audit.as_ref().map_or(0, |a| a.written()),
        audit_records_dropped: broker.audit.as_ref().map_or(0, |a| a.dropped()),
        ..Gauges::default()
    };
    for p in broker.replicas.all() {
        let log = p.log();
        let (lag_bytes, lag_segments) = log.upload_lag();
        gauges.partitions += 1;
        gauges.log_bytes += log.snapshot().size_bytes;
        gauges.upload_lag_bytes += lag_bytes;
        gauges.upload_lag_segments += lag_segments as u64;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        broker.metrics.render(&gauges),
    )
}
