//! The tenant admin API, `/v1/tenants`: tenants and their users as metadata records, through
//! the controller ([`strata_meta::controller::TenantControl`]). Once an authorizer is on, every
//! route needs a super user (the admin API's gate, [`super::AdminAccess`]).
//!
//! Bodies are JSON; a refusal is a JSON `{"error": "..."}` with a 4xx status a person can act
//! on: 400 for bad input, 404 for an unknown tenant or user, 409 for a name taken or a tenant
//! that still holds topics; 503 when the metadata quorum cannot take the change.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use strata_meta::controller::TenantChange;
use strata_meta::scram::{random_bytes, ScramMechanism, MIN_ITERATIONS};
use strata_meta::tenant::{Tenant, TenantLimits};
use strata_meta::{ControllerError, MetadataImage, MetadataRecord};

use crate::broker::Broker;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/tenants", get(list).post(create))
        .route("/v1/tenants/{name}", get(show).patch(alter).delete(remove))
        .route("/v1/tenants/{name}/users", post(add_user))
        .route("/v1/tenants/{name}/users/{user}", delete(remove_user))
}

/// A refusal: its status and the message of its JSON body.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        let status = match e {
            ControllerError::ResourceNotFound(_) => StatusCode::NOT_FOUND,
            ControllerError::DuplicateResource(_) | ControllerError::PolicyViolation(_) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("Invalid request body: {e}"),
        )
    })
}

/// Commits the records `build` makes from the latest image, on a blocking thread (a commit
/// waits for fsync or the quorum).
async fn commit<T: Send + 'static>(
    broker: &Arc<Broker>,
    build: impl Fn(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ControllerError> + Send + 'static,
) -> Result<T, ApiError> {
    let b = broker.clone();
    let committed = crate::task::blocking(move || {
        b.commit(|image| match build(image) {
            Ok((records, value)) => (records, Ok(value)),
            Err(e) => (Vec::new(), Err(e)),
        })
    })
    .await;
    match committed {
        Ok(outcome) => Ok(outcome?),
        Err(e) => {
            tracing::warn!(error = %e, "admin API: metadata change not committed");
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The metadata change could not be committed: {e}"),
            ))
        }
    }
}

fn describe(tenant: &Tenant) -> serde_json::Value {
    json!({
        "id": tenant.id,
        "name": tenant.name,
        "quotas": tenant.quotas,
        "limits": tenant.limits,
    })
}

async fn list(State(broker): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let image = broker.image();
    Json(json!(image.tenants().map(describe).collect::<Vec<_>>()))
}

/// One tenant with what it uses: its topics, partitions and users in the cluster, and the
/// bytes of its partitions on this broker's disk.
async fn show(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let image = broker.image();
    let tenant = image
        .tenant_by_name(&name)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("Tenant {name} does not exist"),
            )
        })?
        .clone();
    let topics: Vec<_> = image.topics().filter(|t| tenant.owns(&t.name)).collect();
    let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
    let users: Vec<_> = image
        .tenant_members(&tenant.id)
        .map(|(user, m)| json!({ "name": user, "admin": m.admin }))
        .collect();
    let owned: Vec<_> = broker
        .replicas
        .all()
        .into_iter()
        .filter(|p| tenant.owns(&p.topic))
        .collect();
    let local_bytes = crate::task::blocking(move || {
        owned
            .iter()
            .map(|p| p.log().snapshot().size_bytes)
            .sum::<u64>()
    })
    .await;
    let mut out = describe(&tenant);
    out["usage"] = json!({
        "topics": topics.len(),
        "partitions": partitions,
        "users": users.len(),
        "local_storage_bytes": local_bytes,
    });
    out["users"] = json!(users);
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    #[serde(default)]
    quotas: BTreeMap<String, f64>,
    #[serde(default)]
    limits: TenantLimits,
}

async fn create(State(broker): State<Arc<Broker>>, bytes: Bytes) -> Result<Response, ApiError> {
    let request: CreateTenant = body(&bytes)?;
    // A fresh id each time: never one a deleted tenant had.
    let id = format!("lc-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (name, record_id) = (request.name.clone(), id.clone());
    let b = broker.clone();
    commit(&broker, move |image| {
        let records = b.meta.controller().create_tenant(
            image,
            &record_id,
            &request.name,
            &request.quotas,
            &request.limits,
        )?;
        Ok((records, ()))
    })
    .await?;
    tracing::info!(tenant = %name, %id, "tenant created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/tenants/{name}"))],
        Json(json!({ "id": id, "name": name })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlterTenant {
    #[serde(default)]
    quotas: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    limits: Option<TenantLimits>,
}

/// PATCH: the quotas given are set (`null` removes one), the others kept; `limits`, when
/// given, replace the tenant's limits.
async fn alter(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: AlterTenant = body(&bytes)?;
    let change = TenantChange {
        quotas: request.quotas,
        limits: request.limits,
    };
    let b = broker.clone();
    let target = name.clone();
    commit(&broker, move |image| {
        let records = b.meta.controller().alter_tenant(image, &target, &change)?;
        Ok((records, ()))
    })
    .await?;
    let image = broker.image();
    let tenant = image.tenant_by_name(&name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("Tenant {name} does not exist"),
        )
    })?;
    Ok(Json(describe(tenant)))
}

/// The `force` parameter of a DELETE's query string: `force=true` or `force=false`.
fn force_parameter(uri: &Uri) -> Result<bool, ApiError> {
    let mut force = false;
    for pair in uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        force = match pair.split_once('=') {
            Some(("force", "true")) => true,
            Some(("force", "false")) => false,
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Unknown query parameter {pair:?}; the one parameter is force=true|false"
                    ),
                ))
            }
        };
    }
    Ok(force)
}

/// DELETE: refused (409) while the tenant holds topics, unless `?force=true`, which deletes
/// them, its users and the tenant in one metadata batch.
async fn remove(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let force = force_parameter(&uri)?;
    let b = broker.clone();
    let target = name.clone();
    commit(&broker, move |image| {
        let records = b.meta.controller().delete_tenant(image, &target, force)?;
        Ok((records, ()))
    })
    .await?;
    tracing::info!(tenant = %name, force, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A new user of a tenant. Never logged or echoed: it carries a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: String,
    password: String,
    #[serde(default = "default_mechanism")]
    mechanism: String,
    #[serde(default)]
    admin: bool,
}

fn default_mechanism() -> String {
    ScramMechanism::ScramSha256.mechanism_name().to_string()
}

async fn add_user(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request: AddUser = body(&bytes)?;
    let mechanism = ScramMechanism::from_mechanism_name(&request.mechanism).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "Unknown mechanism {:?}; use SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN clients log in with either)",
                request.mechanism
            ),
        )
    })?;
    if request.name.is_empty() || request.password.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "A user needs a name and a password".into(),
        ));
    }
    let salt = random_bytes(32);
    let password = request.password;
    let salted_password = crate::task::blocking({
        let salt = salt.clone();
        move || mechanism.salted_password(password.as_bytes(), &salt, MIN_ITERATIONS)
    })
    .await;
    let credential = strata_meta::controller::ScramUpsertion {
        name: request.name.clone(),
        mechanism: mechanism.type_code(),
        iterations: MIN_ITERATIONS,
        salt,
        salted_password,
    };
    let (b, tenant, admin) = (broker.clone(), name.clone(), request.admin);
    commit(&broker, move |image| {
        let records = b
            .meta
            .controller()
            .add_tenant_user(image, &tenant, admin, &credential)?;
        Ok((records, ()))
    })
    .await?;
    tracing::info!(tenant = %name, user = %request.name, admin, "tenant user created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": request.name, "tenant": name, "admin": admin })),
    )
        .into_response())
}

async fn remove_user(
    State(broker): State<Arc<Broker>>,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (b, tenant, target) = (broker.clone(), name.clone(), user.clone());
    commit(&broker, move |image| {
        let records = b
            .meta
            .controller()
            .remove_tenant_user(image, &tenant, &target)?;
        Ok((records, ()))
    })
    .await?;
    tracing::info!(tenant = %name, %user, "tenant user deleted");
    Ok(StatusCode::NO_CONTENT)
}
