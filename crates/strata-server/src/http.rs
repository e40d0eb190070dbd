//! The admin HTTP server: `/health` for load balancers and supervisors, `/metrics` for
//! Prometheus. Every route is behind `authenticate`, the admin API's one authentication point.
//!
//! With `listener.security.protocol.map` mapping `ADMIN` to SSL the server speaks TLS with
//! `listener.name.admin.ssl.*` ([`crate::tls::admin_tls`]); with `ssl.client.auth=required`
//! there every caller presents a certificate, whose mapped subject is its principal.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use strata_quorum::{serve_identified, PeerIdentity, TlsPeerListener};

use crate::broker::Broker;
use crate::metrics::Gauges;
use crate::session::KafkaPrincipal;

/// The admin HTTP server's socket, and its TLS when it has one.
pub struct AdminListener {
    socket: tokio::net::TcpListener,
    tls: Option<crate::tls::AdminTls>,
}

impl AdminListener {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }
}

pub async fn serve(
    broker: Arc<Broker>,
    listener: AdminListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let AdminListener { socket, tls } = listener;
    let server = tls.as_ref().map(|tls| tls.server.clone());
    let access = Arc::new(AdminAccess {
        tls,
        super_users: broker.authorizer.as_ref().map(|a| a.super_users.clone()),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/partitions", get(partitions))
        .layer(middleware::from_fn_with_state(access, authenticate))
        .with_state(broker);
    let Some(server) = server else {
        return serve_identified(socket, app, shutdown).await;
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (socket, acceptor) = TlsPeerListener::spawn(socket, server, stop_rx)?;
    let served = serve_identified(socket, app, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    acceptor.abort();
    served
}

/// Who may do what on the admin API.
struct AdminAccess {
    tls: Option<crate::tls::AdminTls>,
    /// `super.users` when an authorizer is on.
    super_users: Option<std::collections::BTreeSet<String>>,
}

impl AdminAccess {
    /// Reading (GET, HEAD) is open to whoever the listener lets in. A request that changes
    /// state needs, once an authorizer is on, a super user: 401 for an anonymous caller, 403
    /// for another, as Kafka refuses cluster changes to principals without ALTER.
    fn admit(&self, method: &Method, principal: &KafkaPrincipal) -> Result<(), StatusCode> {
        let Some(super_users) = &self.super_users else {
            return Ok(());
        };
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if super_users.contains(&principal.to_string()) {
            Ok(())
        } else if *principal == KafkaPrincipal::anonymous() {
            Err(StatusCode::UNAUTHORIZED)
        } else {
            Err(StatusCode::FORBIDDEN)
        }
    }
}

/// The one point where the admin API authenticates a caller, before any route: its principal
/// is its client certificate's mapped subject on a TLS server, `User:ANONYMOUS` otherwise
/// (HTTP Basic authentication against the SASL credential store will be a second way); then
/// [`AdminAccess::admit`]. The principal is passed to the routes as a request extension.
async fn authenticate(
    State(access): State<Arc<AdminAccess>>,
    mut request: Request,
    next: Next,
) -> Response {
    let certificate = request
        .extensions()
        .get::<ConnectInfo<PeerIdentity>>()
        .and_then(|peer| peer.0.certificate.clone());
    let principal = match &access.tls {
        Some(tls) => match tls.principal(certificate.as_ref()) {
            Ok(principal) => principal,
            Err(why) => return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response(),
        },
        None => KafkaPrincipal::anonymous(),
    };
    if let Err(status) = access.admit(request.method(), &principal) {
        let why = format!("{principal} may not change the cluster through the admin API\n");
        return (status, why).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Why the admin HTTP server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminBindError {
    #[error("admin HTTP: cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin HTTP: TLS: {0}")]
    Tls(#[from] crate::tls::HttpTlsError),
}

/// Binds `--http` and builds its TLS, so a busy port or a bad key store stops start-up.
pub async fn bind(config: &crate::config::ServerConfig) -> Result<AdminListener, AdminBindError> {
    let tls = crate::tls::admin_tls(config)?;
    let socket = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| AdminBindError::Bind {
            addr: config.http,
            source,
        })?;
    Ok(AdminListener { socket, tls })
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
    let mut text = broker.metrics.render(&gauges);
    broker.quotas.render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_need_a_super_user_once_an_authorizer_is_on() {
        let user = |name: &str| KafkaPrincipal {
            principal_type: KafkaPrincipal::USER_TYPE.into(),
            name: name.into(),
        };
        let open = AdminAccess {
            tls: None,
            super_users: None,
        };
        assert_eq!(
            open.admit(&Method::POST, &KafkaPrincipal::anonymous()),
            Ok(())
        );
        let secured = AdminAccess {
            tls: None,
            super_users: Some(["User:admin".to_string()].into()),
        };
        for reading in [Method::GET, Method::HEAD] {
            assert_eq!(
                secured.admit(&reading, &KafkaPrincipal::anonymous()),
                Ok(())
            );
        }
        for changing in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
            assert_eq!(secured.admit(&changing, &user("admin")), Ok(()));
            assert_eq!(
                secured.admit(&changing, &user("alice")),
                Err(StatusCode::FORBIDDEN)
            );
            assert_eq!(
                secured.admit(&changing, &KafkaPrincipal::anonymous()),
                Err(StatusCode::UNAUTHORIZED)
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_mutual_tls_only_callers_with_a_certificate_are_served() {
        let crate::test_fixture::TestPki {
            ca,
            server,
            client_chain,
            client_key,
        } = crate::test_fixture::TestPki::new("127.0.0.1");
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_path, server_path) = (dir.path().join("ca.pem"), dir.path().join("server.pem"));
        std::fs::write(&ca_path, &ca).expect("write");
        std::fs::write(&server_path, &server).expect("write");
        let test = crate::test_fixture::TestBroker::open(&[
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,ADMIN:SSL",
            ),
            ("listener.name.admin.ssl.keystore.type", "PEM"),
            (
                "listener.name.admin.ssl.keystore.location",
                server_path.to_str().expect("UTF-8"),
            ),
            ("listener.name.admin.ssl.truststore.type", "PEM"),
            (
                "listener.name.admin.ssl.truststore.location",
                ca_path.to_str().expect("UTF-8"),
            ),
            ("listener.name.admin.ssl.client.auth", "required"),
        ])
        .await;
        let listener = bind(&test.broker.config).await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(test.broker.clone(), listener, async move {
            let _ = stopped.await;
        }));

        let ca = reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA");
        let client = |identity: Option<reqwest::Identity>| {
            let builder = reqwest::Client::builder()
                .tls_certs_only([ca.clone()])
                .timeout(std::time::Duration::from_secs(5));
            match identity {
                Some(identity) => builder.identity(identity),
                None => builder,
            }
            .build()
            .expect("client")
        };
        let operator =
            reqwest::Identity::from_pem((client_key + &client_chain).as_bytes()).expect("identity");
        let health = format!("https://127.0.0.1:{port}/health");
        let answer = client(Some(operator)).get(&health).send().await;
        assert_eq!(answer.expect("served").status(), reqwest::StatusCode::OK);
        assert!(client(None).get(&health).send().await.is_err());
        let plain = format!("http://127.0.0.1:{port}/health");
        assert!(client(None).get(&plain).send().await.is_err());

        let _ = stop.send(());
        server.await.expect("server task").expect("served");
    }
}
