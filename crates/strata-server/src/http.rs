//! The admin HTTP server: `/health` for load balancers and supervisors, `/metrics` for
//! Prometheus. Every route is behind `authenticate`, the admin API's one authentication point.
//!
//! With `listener.security.protocol.map` mapping `ADMIN` to SSL the server speaks TLS with
//! `listener.name.admin.ssl.*` ([`crate::tls::admin_tls`]); with `ssl.client.auth=required`
//! there every caller presents a certificate, whose mapped subject is its principal.

use std::collections::BTreeMap;
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
use crate::tenant_metrics::TenantStorage;

mod tenants;

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
        credentials: Some(broker.store.clone()),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/partitions", get(partitions))
        .merge(tenants::routes())
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
    /// The SASL credential store HTTP Basic passwords are checked against (`None`: Basic
    /// authentication refused, in tests of the rules alone).
    credentials: Option<Arc<crate::metadata_source::MetadataSource>>,
}

impl AdminAccess {
    /// Reading (GET, HEAD) the broker's state is open to whoever the listener lets in. A
    /// request that changes state, and any request of the tenant API (`/v1/`: tenants' users
    /// and limits are the operators' business), needs, once an authorizer is on, a super
    /// user: 401 for an anonymous caller, 403 for another, as Kafka refuses cluster changes to
    /// principals without ALTER.
    fn admit(
        &self,
        method: &Method,
        path: &str,
        principal: &KafkaPrincipal,
    ) -> Result<(), StatusCode> {
        let Some(super_users) = &self.super_users else {
            return Ok(());
        };
        let reads_state = method == Method::GET || method == Method::HEAD;
        if reads_state && !path.starts_with("/v1/") {
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

/// The one point where the admin API authenticates a caller, before any route: with an HTTP
/// Basic `Authorization` header, the user whose SASL credential (SCRAM, as SASL/PLAIN checks
/// it) the password matches; else its client certificate's mapped subject on a TLS server;
/// else `User:ANONYMOUS`. Then [`AdminAccess::admit`]. The principal is passed to the routes as
/// a request extension.
async fn authenticate(
    State(access): State<Arc<AdminAccess>>,
    mut request: Request,
    next: Next,
) -> Response {
    let unauthorized = |why: String| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"strata-admin\"")],
            format!("{why}\n"),
        )
            .into_response()
    };
    let basic = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| basic_credentials(value.as_bytes()));
    let certificate = request
        .extensions()
        .get::<ConnectInfo<PeerIdentity>>()
        .and_then(|peer| peer.0.certificate.clone());
    let principal = match (basic, &access.tls) {
        (Some(Err(why)), _) => return unauthorized(why.to_string()),
        (Some(Ok((user, password))), _) => {
            let Some(store) = access.credentials.clone() else {
                return unauthorized("HTTP Basic authentication is not available".into());
            };
            let name = user.clone();
            let matches = crate::task::blocking(move || {
                crate::sasl::password_matches(&store.image(), &name, &password)
            })
            .await;
            if !matches {
                return unauthorized("Authentication failed: invalid user name or password".into());
            }
            KafkaPrincipal {
                principal_type: KafkaPrincipal::USER_TYPE.to_string(),
                name: user,
            }
        }
        (None, Some(tls)) => match tls.principal(certificate.as_ref()) {
            Ok(principal) => principal,
            Err(why) => return unauthorized(why.to_string()),
        },
        (None, None) => KafkaPrincipal::anonymous(),
    };
    if let Err(status) = access.admit(request.method(), request.uri().path(), &principal) {
        let why = format!("{principal} may not do this through the admin API; a super user may");
        return match status {
            StatusCode::UNAUTHORIZED => unauthorized(why),
            _ => (status, format!("{why}\n")).into_response(),
        };
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The user name and password of an HTTP Basic `Authorization` header (RFC 7617), or why it
/// is not one.
fn basic_credentials(value: &[u8]) -> Result<(String, String), &'static str> {
    use base64::Engine as _;
    let value = std::str::from_utf8(value).map_err(|_| "Authorization header: not text")?;
    let (scheme, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or("Authorization header: expected `Basic <credentials>`")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("Authorization header: only the Basic scheme is accepted");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "Authorization header: credentials are not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "Authorization header: not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("Authorization header: expected `user:password`")?;
    if user.is_empty() {
        return Err("Authorization header: empty user name");
    }
    Ok((user.to_string(), password.to_string()))
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
    let image = broker.image();
    let mut tenants: BTreeMap<String, TenantStorage> = image
        .tenants()
        .map(|t| (t.id.clone(), TenantStorage::default()))
        .collect();
    for p in broker.replicas.all() {
        let log = p.log();
        let (lag_bytes, lag_segments) = log.upload_lag();
        let size = log.snapshot().size_bytes;
        gauges.partitions += 1;
        gauges.log_bytes += size;
        if let Some(tenant) =
            strata_meta::tenant::tenant_id_of(&p.topic).and_then(|id| tenants.get_mut(id))
        {
            tenant.partitions += 1;
            tenant.local_bytes += size;
        }
        gauges.upload_lag_bytes += lag_bytes;
        gauges.upload_lag_segments += lag_segments as u64;
    }
    let mut text = broker.metrics.render(&gauges);
    broker.quotas.render_metrics(&mut text);
    broker.tenants.render(&tenants, &mut text);
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
            credentials: None,
        };
        assert_eq!(
            open.admit(&Method::POST, "/v1/tenants", &KafkaPrincipal::anonymous()),
            Ok(())
        );
        let secured = AdminAccess {
            tls: None,
            super_users: Some(["User:admin".to_string()].into()),
            credentials: None,
        };
        for reading in [Method::GET, Method::HEAD] {
            assert_eq!(
                secured.admit(&reading, "/metrics", &KafkaPrincipal::anonymous()),
                Ok(())
            );
        }
        for changing in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
            assert_eq!(secured.admit(&changing, "/cluster", &user("admin")), Ok(()));
            assert_eq!(
                secured.admit(&changing, "/cluster", &user("alice")),
                Err(StatusCode::FORBIDDEN)
            );
            assert_eq!(
                secured.admit(&changing, "/cluster", &KafkaPrincipal::anonymous()),
                Err(StatusCode::UNAUTHORIZED)
            );
        }
    }

    #[test]
    fn basic_credentials_are_read_as_rfc_7617_writes_them() {
        // "alice:pa:ss" — the password may hold colons, the user name may not.
        assert_eq!(
            basic_credentials(b"Basic YWxpY2U6cGE6c3M="),
            Ok(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials(b"basic  YWxpY2U6cGE6c3M= "),
            Ok(("alice".into(), "pa:ss".into()))
        );
        for bad in [
            &b"Bearer abc"[..],
            b"Basic",
            b"Basic !!!",
            b"Basic YWxpY2U=",     // no colon
            b"Basic OnNlY3JldA==", // ":secret", no user
            b"\xff",
        ] {
            assert!(basic_credentials(bad).is_err(), "{bad:?}");
        }
    }

    /// An HTTP answer as the tenant test reads it.
    struct Answer {
        status: reqwest::StatusCode,
        challenged: bool,
        json: serde_json::Value,
    }

    /// Sends `request` with `body` as JSON; the answer's body read as JSON (null if not).
    async fn call(request: reqwest::RequestBuilder, body: Option<&serde_json::Value>) -> Answer {
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(body.to_string()),
            None => request,
        };
        let response = request.send().await.expect("answered");
        let status = response.status();
        let challenged = response.headers().contains_key("www-authenticate");
        let bytes = response.bytes().await.expect("body");
        Answer {
            status,
            challenged,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The tenant API end to end over HTTP: Basic authentication against the SCRAM store
    /// (401 without or with a wrong password, 403 for a user who is not a super user), JSON
    /// refusals, a tenant created, listed, described, changed, given a user who can log in, and
    /// deleted with its topics only when forced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenants_are_managed_by_super_users_through_the_admin_api() {
        use strata_meta::scram::ScramBootstrap;
        let test = crate::test_fixture::TestBroker::open(&[
            (
                "authorizer.class.name",
                strata_meta::config::STANDARD_AUTHORIZER,
            ),
            ("super.users", "User:admin"),
        ])
        .await;
        let users = [
            "SCRAM-SHA-256=[name=admin,password=admin-secret]",
            "SCRAM-SHA-512=[name=alice,password=alice-secret]",
        ]
        .map(|u| ScramBootstrap::parse(u).expect("bootstrap"));
        let b = test.broker.clone();
        crate::task::blocking(move || b.bootstrap_scram_credentials(&users))
            .await
            .expect("credentials");
        let listener = bind(&test.broker.config).await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(test.broker.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        let as_admin = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some("admin-secret"));
        let create = serde_json::json!({
            "name": "acme",
            "quotas": {"producer_byte_rate": 2000000, "request_percentage": 50},
            "limits": {"partitions": 100}
        });

        let anonymous = call(http.post(url("/v1/tenants")), Some(&create)).await;
        assert_eq!(anonymous.status, reqwest::StatusCode::UNAUTHORIZED);
        assert!(anonymous.challenged);
        let wrong = call(
            http.post(url("/v1/tenants"))
                .basic_auth("admin", Some("guess")),
            Some(&create),
        )
        .await;
        assert_eq!(wrong.status, reqwest::StatusCode::UNAUTHORIZED);
        let alice = call(
            http.get(url("/v1/tenants"))
                .basic_auth("alice", Some("alice-secret")),
            None,
        )
        .await;
        assert_eq!(alice.status, reqwest::StatusCode::FORBIDDEN);
        let metrics = call(http.get(url("/metrics")), None).await;
        assert_eq!(
            metrics.status,
            reqwest::StatusCode::OK,
            "reading stays open"
        );

        let created = call(as_admin(http.post(url("/v1/tenants"))), Some(&create)).await;
        assert_eq!(created.status, reqwest::StatusCode::CREATED);
        let created = created.json;
        let id = created["id"].as_str().expect("an id").to_string();
        assert!(strata_meta::tenant::valid_tenant_id(&id), "{id}");
        for (bad, status) in [
            (create.clone(), reqwest::StatusCode::CONFLICT),
            (
                serde_json::json!({"name": "x", "limits": {"partitons": 1}}),
                reqwest::StatusCode::BAD_REQUEST,
            ),
            (
                serde_json::json!({"name": "y", "quotas": {"io_rate": 1}}),
                reqwest::StatusCode::BAD_REQUEST,
            ),
        ] {
            let refused = call(as_admin(http.post(url("/v1/tenants"))), Some(&bad)).await;
            assert_eq!(refused.status, status, "{bad}");
            let error = refused.json;
            assert!(
                !error["error"].as_str().unwrap_or_default().is_empty(),
                "{error}"
            );
        }

        let listed = call(as_admin(http.get(url("/v1/tenants"))), None)
            .await
            .json;
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
        let missing = call(as_admin(http.get(url("/v1/tenants/nobody"))), None).await;
        assert_eq!(missing.status, reqwest::StatusCode::NOT_FOUND);
        let change = serde_json::json!({"quotas": {"request_percentage": null, "consumer_byte_rate": 4000000}});
        let patched = call(as_admin(http.patch(url("/v1/tenants/acme"))), Some(&change))
            .await
            .json;
        assert_eq!(
            patched["quotas"],
            serde_json::json!({"consumer_byte_rate": 4000000.0, "producer_byte_rate": 2000000.0})
        );

        let user = serde_json::json!({"name": "bob", "password": "bob-secret", "admin": true});
        let added = call(
            as_admin(http.post(url("/v1/tenants/acme/users"))),
            Some(&user),
        )
        .await;
        assert_eq!(added.status, reqwest::StatusCode::CREATED);
        let again = call(
            as_admin(http.post(url("/v1/tenants/acme/users"))),
            Some(&user),
        )
        .await;
        assert_eq!(again.status, reqwest::StatusCode::CONFLICT);
        let operator = serde_json::json!({"name": "alice", "password": "x"});
        let taken = call(
            as_admin(http.post(url("/v1/tenants/acme/users"))),
            Some(&operator),
        )
        .await;
        assert_eq!(
            taken.status,
            reqwest::StatusCode::CONFLICT,
            "an operator is not a tenant's"
        );
        assert!(crate::sasl::password_matches(
            &*test.broker.image(),
            "bob",
            "bob-secret"
        ));

        test.create_topic(&format!("{id}_orders"), 2);
        let described = call(as_admin(http.get(url("/v1/tenants/acme"))), None)
            .await
            .json;
        assert_eq!(described["usage"]["topics"], 1, "{described}");
        assert_eq!(described["usage"]["partitions"], 2, "{described}");
        let refused = call(as_admin(http.delete(url("/v1/tenants/acme"))), None).await;
        assert_eq!(refused.status, reqwest::StatusCode::CONFLICT);
        let deleted = call(
            as_admin(http.delete(url("/v1/tenants/acme?force=true"))),
            None,
        )
        .await;
        assert_eq!(deleted.status, reqwest::StatusCode::NO_CONTENT);
        let image = test.broker.image();
        assert!(image.tenants().next().is_none());
        assert!(
            image.topic(&format!("{id}_orders")).is_none(),
            "its topics go with it"
        );
        assert!(image.tenant_member("bob").is_none());
        assert!(
            !crate::sasl::password_matches(&*image, "bob", "bob-secret"),
            "and its users"
        );

        let _ = stop.send(());
        server.await.expect("server task").expect("served");
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
