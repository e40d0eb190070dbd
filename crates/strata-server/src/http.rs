//! The admin HTTP server: `/health` for load balancers and supervisors, `/metrics` for
//! Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;
use crate::metrics::Gauges;

pub async fn serve(
    broker: Arc<Broker>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(broker);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let mut gauges = Gauges {
        tier_cache: broker.remote.cache_stats(),
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
